/**
 * The dashboard: a static page at `/` and its assets at `/assets/:name`, all read from
 * `src/api/assets/` (embedded in the compiled binary by `--include`). The page and its assets
 * carry no data, so they need no token; the page asks for the token and calls the API with it.
 * The Host check still applies, since the app mounts these routes after it.
 *
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import { HttpError } from "./errors.ts";

/** The files of the dashboard, by name, with their content types. Nothing else is served. */
export const DASHBOARD_ASSETS: Readonly<Record<string, string>> = {
  "index.html": "text/html; charset=utf-8",
  "app.js": "text/javascript; charset=utf-8",
  "sse.js": "text/javascript; charset=utf-8",
  "view.js": "text/javascript; charset=utf-8",
  "style.css": "text/css; charset=utf-8",
  "icon.svg": "image/svg+xml",
};

/**
 * The page may load and call only its own origin: no inline script or style, no frames, no
 * form posts. A page that holds a token able to pause and roll back agents gets nothing less.
 */
export const DASHBOARD_CSP = [
  "default-src 'self'",
  "script-src 'self'",
  "style-src 'self'",
  "img-src 'self'",
  "connect-src 'self'",
  "font-src 'self'",
  "object-src 'none'",
  "base-uri 'none'",
  "form-action 'none'",
  "frame-ancestors 'none'",
].join("; ");

const SECURITY_HEADERS: Readonly<Record<string, string>> = {
  "Content-Security-Policy": DASHBOARD_CSP,
  "X-Content-Type-Options": "nosniff",
  "X-Frame-Options": "DENY",
  "Referrer-Policy": "no-referrer",
  "Cross-Origin-Opener-Policy": "same-origin",
  "Cross-Origin-Resource-Policy": "same-origin",
  // Small files that change with the binary: revalidate rather than serve a stale page.
  "Cache-Control": "no-cache",
};

/** Each asset's text, read once on first request (from the binary when compiled). */
const cache = new Map<string, Promise<string>>();

function readAsset(name: string): Promise<string> {
  let text = cache.get(name);
  if (text === undefined) {
    text = Deno.readTextFile(new URL(`./assets/${name}`, import.meta.url));
    // A failed read is not kept, so that the next request tries again.
    text.catch(() => cache.delete(name));
    cache.set(name, text);
  }
  return text;
}

async function serveAsset(c: Context, name: string): Promise<Response> {
  const type = Object.hasOwn(DASHBOARD_ASSETS, name) ? DASHBOARD_ASSETS[name] : undefined;
  if (type === undefined) throw new HttpError(404, `No dashboard asset "${name}"`);
  const text = await readAsset(name);
  return c.body(text, 200, { ...SECURITY_HEADERS, "Content-Type": type });
}

function methodNotAllowed(c: Context): Response {
  return c.json({ error: `Method ${c.req.method} not allowed: use GET`, field: "method" }, 405, {
    Allow: "GET",
  });
}

/**
 * The dashboard's routes, to mount on the API app after its Host check and before its token
 * check: `GET /` (the page) and `GET /assets/:name` (its scripts, style and icon).
 */
export function dashboardRoutes(): Hono {
  const app = new Hono();
  app.get("/", (c) => serveAsset(c, "index.html"));
  app.get("/assets/:name", (c) => serveAsset(c, c.req.param("name")));
  app.all("/", methodNotAllowed);
  app.all("/assets/:name", methodNotAllowed);
  return app;
}
