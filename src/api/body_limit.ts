/**
 * A bound on every request body: the body is read as it arrives and refused with 413 as soon as
 * it passes its route's limit, whatever it declares, so neither a large `Content-Length` nor an
 * endless chunked body can make a server hold more than the limit in memory. Hono's own
 * `bodyLimit` trusts a declared length and leaves a body the route never reads unchecked; this
 * reads every body (at most the limit) before the route runs, so every route answers 413 alike.
 *
 * @module
 */

import type { Context, MiddlewareHandler } from "hono";

/** The limit of the API's routes, and of the collector's routes other than batches: 64 KiB. */
export const SMALL_BODY_LIMIT = 64 * 1024;

/** What {@link limitBody} is given. */
export interface LimitBodyOptions {
  /** The largest body accepted, in bytes. */
  maxBytes: number;
  /**
   * Requests whose route reads and bounds its body itself, as it streams (the collector's
   * batches): passed on untouched.
   */
  skip?: (c: Context) => boolean;
}

/**
 * Middleware that reads the request body, at most `maxBytes` of it, before the route runs, and
 * answers `413 {"error", "field": "body", "limit"}` as soon as it passes the limit (a declared
 * `Content-Length` over the limit is refused before anything is read). The route then sees the
 * body as read, so it never reads more than the limit either.
 */
export function limitBody(options: LimitBodyOptions): MiddlewareHandler {
  const { maxBytes } = options;
  return async function limitBody(c, next) {
    const raw = c.req.raw;
    if (options.skip?.(c) === true) return await next();
    const declared = declaredLength(raw.headers);
    if (declared !== null && declared > maxBytes) {
      await raw.body?.cancel().catch(() => {});
      return tooLarge(c, maxBytes, `${declared} bytes declared`);
    }
    if (raw.body === null) {
      // The server hides a GET or HEAD body from the route (it is discarded as it arrives, never
      // held); a chunked one has no size to check, so it is refused rather than waited for.
      if (raw.headers.has("transfer-encoding")) {
        return tooLarge(c, maxBytes, "a chunked body on a request that takes none");
      }
      return await next();
    }
    const bytes = await readAtMost(raw.body, maxBytes);
    if (bytes === null) return tooLarge(c, maxBytes, `more than ${maxBytes} bytes sent`);
    const bodiless = raw.method === "GET" || raw.method === "HEAD";
    c.req.raw = new Request(raw.url, {
      method: raw.method,
      headers: raw.headers,
      body: bodiless ? null : bytes,
      signal: raw.signal,
    });
    return await next();
  };
}

/**
 * Reads a stream to its end, or null as soon as it passes `maxBytes` (the rest is cancelled,
 * never read).
 */
export async function readAtMost(
  body: ReadableStream<Uint8Array>,
  maxBytes: number,
): Promise<Uint8Array<ArrayBuffer> | null> {
  const reader = body.getReader();
  const chunks: Uint8Array[] = [];
  let size = 0;
  try {
    while (true) {
      const { done, value } = await reader.read();
      if (done) break;
      size += value.byteLength;
      if (size > maxBytes) {
        await reader.cancel().catch(() => {});
        return null;
      }
      chunks.push(value);
    }
  } finally {
    reader.releaseLock();
  }
  const out = new Uint8Array(size);
  let offset = 0;
  for (const chunk of chunks) {
    out.set(chunk, offset);
    offset += chunk.byteLength;
  }
  return out;
}

/** The `Content-Length` as a number, or null when absent or not a number. */
function declaredLength(headers: Headers): number | null {
  const value = headers.get("content-length");
  if (value === null || !/^\s*\d+\s*$/.test(value)) return null;
  return Number(value);
}

function tooLarge(c: Context, maxBytes: number, seen: string): Response {
  // The client may still be sending: the connection is not worth keeping.
  c.header("Connection", "close");
  return c.json({
    error: `Body too large: ${seen}, at most ${maxBytes} bytes (${kib(maxBytes)}) on this route`,
    field: "body",
    limit: maxBytes,
  }, 413);
}

function kib(bytes: number): string {
  return bytes % (1024 * 1024) === 0
    ? `${bytes / (1024 * 1024)} MiB`
    : bytes % 1024 === 0
    ? `${bytes / 1024} KiB`
    : `${bytes} B`;
}
