/**
 * The API's two gates: the `Host` header (against DNS rebinding) and the bearer token.
 *
 * @module
 */

import { createHash, timingSafeEqual } from "node:crypto";
import type { MiddlewareHandler } from "hono";

/**
 * The `Host` values a server listening on `hostname:port` accepts: its own address, and
 * localhost, 127.0.0.1 and [::1] on the same port. A browser led to the server through a DNS
 * rebinding sends the attacker's name instead, and is refused.
 */
export function allowedHostsFor(hostname: string, port: number): string[] {
  const own = hostname.includes(":") && !hostname.startsWith("[") ? `[${hostname}]` : hostname;
  return [...new Set([own, "localhost", "127.0.0.1", "[::1]"].map((h) => `${h}:${port}`))];
}

/**
 * Compares two strings in constant time. Both are hashed first, so that neither the comparison
 * nor an early length check reveals how long the token is or how much of it matched.
 */
export function tokenMatches(given: string, expected: string): boolean {
  const a = createHash("sha256").update(given).digest();
  const b = createHash("sha256").update(expected).digest();
  return timingSafeEqual(a, b);
}

/** Refuses, with 421, a request whose `Host` is not one of `allowed` (case-insensitive). */
export function hostGuard(allowed: readonly string[]): MiddlewareHandler {
  const hosts = new Set(allowed.map((h) => h.toLowerCase()));
  return async (c, next) => {
    // Deno.serve builds the URL from the Host header; app.request() in tests has no header.
    const host = (c.req.header("host") ?? new URL(c.req.url).host).toLowerCase();
    if (!hosts.has(host)) {
      return c.json({ error: `Host "${host}" is not allowed`, field: "host" }, 421);
    }
    await next();
  };
}

/** Requires `Authorization: Bearer <token>`, answering 401 otherwise. */
export function bearerAuth(token: string): MiddlewareHandler {
  if (token === "") throw new TypeError("Invalid API token: it is empty");
  return async (c, next) => {
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+(\S+)\s*$/i.exec(header);
    if (match === null || !tokenMatches(match[1] ?? "", token)) {
      c.header("WWW-Authenticate", 'Bearer realm="sentry"');
      return c.json({ error: "Missing or invalid bearer token", field: "authorization" }, 401);
    }
    await next();
  };
}
