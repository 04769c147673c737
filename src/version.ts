import config from "../deno.json" with { type: "json" };

/** Sentry's version, from deno.json, so that the binary and the source agree. */
export const VERSION: string = config.version;
