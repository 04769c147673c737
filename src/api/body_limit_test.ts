import assert from "node:assert/strict";
import { Hono } from "hono";
import { limitBody } from "./body_limit.ts";

/** A body of `total` bytes made as it is read, counting what was pulled. */
function lazyBody(total: number, chunk = 16 * 1024) {
  const state = { pulled: 0 };
  const stream = new ReadableStream<Uint8Array>({
    pull(controller) {
      if (state.pulled >= total) return controller.close();
      const size = Math.min(chunk, total - state.pulled);
      state.pulled += size;
      controller.enqueue(new Uint8Array(size).fill(120));
    },
  });
  return { stream, state };
}

function echoApp(maxBytes: number): Hono {
  const app = new Hono();
  app.use("*", limitBody({ maxBytes, skip: (c) => c.req.path === "/own" }));
  app.post("/echo", async (c) => c.json({ length: (await c.req.arrayBuffer()).byteLength }));
  app.get("/get", (c) => c.json({ ok: true }));
  app.post("/own", (c) => c.json({ skipped: c.req.raw.body !== null }));
  return app;
}

Deno.test("limitBody() refuses a declared length over the limit with 413 naming it, unread", async () => {
  const app = echoApp(1024);
  const { stream, state } = lazyBody(10 * 1024 * 1024);
  const response = await app.request("/echo", {
    method: "POST",
    headers: { "content-length": String(10 * 1024 * 1024) },
    body: stream,
  });
  assert.equal(response.status, 413);
  const body = await response.json();
  assert.equal(body.field, "body");
  assert.equal(body.limit, 1024);
  assert.match(
    body.error,
    /^Body too large: 10485760 bytes declared, at most 1024 bytes \(1 KiB\)/,
  );
  assert.ok(state.pulled <= 64 * 1024, `pulled ${state.pulled}`);
});

Deno.test("limitBody() stops reading a chunked body at the limit", async () => {
  const app = echoApp(64 * 1024);
  const { stream, state } = lazyBody(300 * 1024 * 1024);
  const response = await app.request("/echo", { method: "POST", body: stream });
  assert.equal(response.status, 413);
  assert.match(
    (await response.json()).error,
    /more than 65536 bytes sent, at most 65536 bytes \(64 KiB\)/,
  );
  assert.ok(state.pulled <= 64 * 1024 + 2 * 16 * 1024, `pulled ${state.pulled}`);
});

Deno.test("limitBody() passes a body within the limit on intact, and leaves skipped routes alone", async () => {
  const app = echoApp(64 * 1024);
  const exact = await app.request("/echo", { method: "POST", body: lazyBody(64 * 1024).stream });
  assert.deepEqual(await exact.json(), { length: 64 * 1024 });
  const empty = await app.request("/echo", { method: "POST", body: "" });
  assert.deepEqual(await empty.json(), { length: 0 });
  const own = await app.request("/own", { method: "POST", body: lazyBody(1024 * 1024).stream });
  assert.deepEqual(await own.json(), { skipped: true });
  const get = await app.request("/get");
  assert.deepEqual(await get.json(), { ok: true });
});
