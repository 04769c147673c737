/**
 * The client side of `GET /v1/sync/hello` (docs/sync-protocol.md): checks an API key against
 * an endpoint and measures the round trip and the clock skew. `sentry login`, `sentry doctor`
 * and the uploader use it.
 *
 * @module
 */

import { z } from "zod";

/** The protocol version this Sentry speaks. */
export const PROTOCOL_VERSION = 1;

/** The body of a `hello` answer. */
export const HelloBody = z.object({
  protocol: z.number().int(),
  server: z.string(),
  version: z.string(),
  key: z.object({ id: z.string(), name: z.string() }),
  time: z.iso.datetime({ offset: true }),
}).loose();

/** A checked key, and what the round trip showed. */
export interface HelloResult {
  body: z.infer<typeof HelloBody>;
  /** The round trip, in ms. */
  latencyMs: number;
  /** The endpoint's clock minus ours (at the midpoint of the round trip), in ms. */
  skewMs: number;
}

/** Why a sync request failed: `kind` says what the caller should do about it. */
export class SyncRequestError extends Error {
  /** `auth`: the key was refused; `network`: no answer; `http`: another status; `protocol`: a bad answer. */
  readonly kind: "auth" | "network" | "http" | "protocol";
  /** The HTTP status, when there was one. */
  readonly status: number | null;

  /** Builds the error. */
  constructor(
    message: string,
    options: { kind: SyncRequestError["kind"]; status?: number; cause?: unknown },
  ) {
    super(message, { cause: options.cause });
    this.name = "SyncRequestError";
    this.kind = options.kind;
    this.status = options.status ?? null;
  }
}

/** Options for {@link hello}. */
export interface HelloOptions {
  apiKey: string;
  /** Give up after this long; default 5000 ms. */
  timeoutMs?: number;
  /** The wall clock; defaults to `Date.now`. */
  now?: () => number;
}

/**
 * Calls `GET <endpoint>/v1/sync/hello` with the key.
 *
 * @throws {SyncRequestError} when the endpoint cannot be reached, refuses the key, or answers
 *   something that is not a hello.
 */
export async function hello(endpoint: string, options: HelloOptions): Promise<HelloResult> {
  const now = options.now ?? Date.now;
  const url = `${endpoint}/v1/sync/hello`;
  const started = now();
  const t0 = performance.now();
  let response: Response;
  try {
    response = await fetch(url, {
      headers: { authorization: `Bearer ${options.apiKey}`, "sentry-protocol": "1" },
      signal: AbortSignal.timeout(options.timeoutMs ?? 5000),
    });
  } catch (cause) {
    const reason = cause instanceof DOMException && cause.name === "TimeoutError"
      ? `no answer within ${options.timeoutMs ?? 5000} ms`
      : (cause as Error).message;
    throw new SyncRequestError(`Cannot reach endpoint "${endpoint}": ${reason}`, {
      kind: "network",
      cause,
    });
  }
  const latencyMs = performance.now() - t0;
  const text = await response.text().catch(() => "");
  if (response.status === 401 || response.status === 403) {
    throw new SyncRequestError(
      `Endpoint "${endpoint}" refused the API key: ${errorText(text) ?? response.statusText}`,
      { kind: "auth", status: response.status },
    );
  }
  if (!response.ok) {
    throw new SyncRequestError(
      `Endpoint "${endpoint}" answered ${response.status}: ${
        errorText(text) ?? response.statusText
      }`,
      { kind: "http", status: response.status },
    );
  }
  let parsed;
  try {
    parsed = HelloBody.safeParse(JSON.parse(text));
  } catch {
    parsed = null;
  }
  if (parsed === null || !parsed.success) {
    throw new SyncRequestError(
      `Endpoint "${endpoint}" does not speak the Sentry sync protocol: its hello is not valid`,
      { kind: "protocol", status: response.status },
    );
  }
  if (parsed.data.protocol !== PROTOCOL_VERSION) {
    throw new SyncRequestError(
      `Endpoint "${endpoint}" speaks sync protocol ${parsed.data.protocol}, not ${PROTOCOL_VERSION}`,
      { kind: "protocol", status: response.status },
    );
  }
  const midpoint = started + latencyMs / 2;
  return { body: parsed.data, latencyMs, skewMs: Date.parse(parsed.data.time) - midpoint };
}

/** The `error` field of a JSON error body, if there is one. */
function errorText(text: string): string | null {
  try {
    const body = JSON.parse(text) as { error?: unknown };
    return typeof body.error === "string" ? body.error : null;
  } catch {
    return text.trim() === "" ? null : text.trim().slice(0, 200);
  }
}
