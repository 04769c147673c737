/**
 * The sync API key and endpoint: from the environment (`SENTRY_API_KEY`, or the seed product's
 * `VAULTAK_API_KEY`) or from `credentials.json` in the configuration directory, which
 * `sentry login` writes with mode 0600.
 *
 * @module
 */

import { join } from "node:path";
import { z } from "zod";

/** The credentials file's name inside the configuration directory. */
export const CREDENTIALS_FILE = "credentials.json";

/** The endpoint used when none is given: the seed product's cloud. */
export const DEFAULT_ENDPOINT = "https://app.vaultak.com";

/** The environment variables that hold an API key, the first set one winning. */
export const API_KEY_VARIABLES = ["SENTRY_API_KEY", "VAULTAK_API_KEY"] as const;

/** The environment variable that overrides the endpoint. */
export const ENDPOINT_VARIABLE = "SENTRY_ENDPOINT";

/** An API key and the endpoint it is for, and where they came from. */
export interface Credentials {
  apiKey: string;
  /** A normalized base URL, without a trailing slash. */
  endpoint: string;
  /** `env` when the key came from an environment variable (named in `variable`). */
  source: "env" | "file";
  /** The variable that held the key, for `source: "env"`. */
  variable?: string;
  /** The credentials file, for `source: "file"` (or the file that gave the endpoint). */
  path?: string;
}

const StoredCredentials = z.object({
  api_key: z.string(),
  endpoint: z.string(),
  saved_at: z.string().optional(),
}).strict();

/**
 * Checks an API key's shape: 20 to 200 printable ASCII characters, no spaces. Returns the
 * reason it is invalid, or null when it is fine.
 */
export function apiKeyProblem(key: string): string | null {
  if (key.length < 20) return "it is shorter than 20 characters";
  if (key.length > 200) return "it is longer than 200 characters";
  if (!/^[\x21-\x7e]+$/.test(key)) return "it holds a space or a non-printable character";
  return null;
}

/**
 * Normalizes an endpoint: an `http` or `https` URL with no query, fragment or credentials,
 * without its trailing slash.
 *
 * @throws {TypeError} naming the value and what is wrong with it.
 */
export function normalizeEndpoint(value: string): string {
  let url: URL;
  try {
    url = new URL(value);
  } catch {
    throw new TypeError(`Invalid endpoint "${value}": not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(`Invalid endpoint "${value}": use http or https`);
  }
  if (url.username !== "" || url.password !== "") {
    throw new TypeError(`Invalid endpoint "${value}": put no credentials in the URL`);
  }
  if (url.search !== "" || url.hash !== "") {
    throw new TypeError(`Invalid endpoint "${value}": remove the query or fragment`);
  }
  return url.href.replace(/\/+$/, "");
}

/** What {@link loadCredentials} reads. */
export interface LoadCredentialsOptions {
  /** The environment, as `Deno.env.toObject()` gives it. */
  env: Readonly<Record<string, string | undefined>>;
  /** The configuration directory (see `configDir`). */
  configDir: string;
}

/**
 * Finds the API key: an environment variable first, then the credentials file. The endpoint is
 * `SENTRY_ENDPOINT`, else the file's, else {@link DEFAULT_ENDPOINT}. Returns null when there is
 * no key.
 *
 * @throws {Error} when the credentials file exists but cannot be read or is malformed, naming
 *   the file and field.
 */
export function loadCredentials(options: LoadCredentialsOptions): Credentials | null {
  const { env } = options;
  const path = join(options.configDir, CREDENTIALS_FILE);
  const stored = readStored(path);
  const endpointFromEnv = env[ENDPOINT_VARIABLE];
  const endpoint = normalizeEndpoint(
    endpointFromEnv !== undefined && endpointFromEnv !== ""
      ? endpointFromEnv
      : stored?.endpoint ?? DEFAULT_ENDPOINT,
  );
  for (const variable of API_KEY_VARIABLES) {
    const key = env[variable]?.trim();
    if (key !== undefined && key !== "") {
      return { apiKey: key, endpoint, source: "env", variable };
    }
  }
  if (stored === null) return null;
  return { apiKey: stored.api_key, endpoint, source: "file", path };
}

function readStored(path: string): z.infer<typeof StoredCredentials> | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw new Error(`Cannot read credentials "${path}": ${(error as Error).message}`, {
      cause: error,
    });
  }
  let data: unknown;
  try {
    data = JSON.parse(text);
  } catch (cause) {
    throw new Error(`Cannot read credentials "${path}": not JSON; run "sentry login" again`, {
      cause,
    });
  }
  const parsed = StoredCredentials.safeParse(data);
  if (!parsed.success) {
    const issue = parsed.error.issues[0];
    const field = issue?.path.join(".") || "(root)";
    throw new Error(
      `Cannot read credentials "${path}": field "${field}": ${issue?.message ?? "invalid"}; ` +
        `run "sentry login" again`,
    );
  }
  return parsed.data;
}

/** What {@link saveCredentials} stores. */
export interface SaveCredentialsOptions {
  apiKey: string;
  endpoint: string;
  /** The time to record; defaults to now. */
  now?: Date;
}

/**
 * Writes the credentials file with mode 0600, atomically (a temporary file renamed over it),
 * creating the directory (0700) if needed. Returns the file's path.
 */
export function saveCredentials(configDir: string, options: SaveCredentialsOptions): string {
  Deno.mkdirSync(configDir, { recursive: true, mode: 0o700 });
  const path = join(configDir, CREDENTIALS_FILE);
  const temp = `${path}.${Deno.pid}.tmp`;
  const body = {
    api_key: options.apiKey,
    endpoint: normalizeEndpoint(options.endpoint),
    saved_at: (options.now ?? new Date()).toISOString(),
  };
  try {
    Deno.writeTextFileSync(temp, `${JSON.stringify(body, null, 2)}\n`, { mode: 0o600 });
    Deno.chmodSync(temp, 0o600); // the umask cannot widen it, but an old temp file might
    Deno.renameSync(temp, path);
  } catch (cause) {
    try {
      Deno.removeSync(temp);
    } catch {
      // Nothing to clean up.
    }
    throw new Error(`Cannot write credentials "${path}": ${(cause as Error).message}`, { cause });
  }
  return path;
}

/** Deletes the credentials file; returns whether there was one. */
export function removeCredentials(configDir: string): boolean {
  try {
    Deno.removeSync(join(configDir, CREDENTIALS_FILE));
    return true;
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return false;
    throw error;
  }
}
