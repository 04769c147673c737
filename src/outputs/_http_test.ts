import assert from "node:assert/strict";
import { backoffDelay, parseRetryAfter } from "./_http.ts";

Deno.test("parseRetryAfter() reads delay-seconds and HTTP dates", () => {
  assert.equal(parseRetryAfter("3"), 3_000);
  assert.equal(parseRetryAfter(null), null);
  assert.equal(parseRetryAfter("soon"), null);
  const now = Date.parse("2025-01-01T00:00:00Z");
  assert.equal(parseRetryAfter("Wed, 01 Jan 2025 00:00:10 GMT", now), 10_000);
  assert.equal(parseRetryAfter("Tue, 31 Dec 2024 23:00:00 GMT", now), 0);
});

Deno.test("backoffDelay() doubles per retry, jitters the upper half, and caps at 30 s", () => {
  const low = { baseMs: 500, random: () => 0 };
  const high = { baseMs: 500, random: () => 0.999999 };
  assert.deepEqual([0, 1, 2].map((r) => backoffDelay(r, low)), [250, 500, 1_000]);
  assert.deepEqual([0, 1, 2].map((r) => backoffDelay(r, high)), [500, 1_000, 2_000]);
  assert.equal(backoffDelay(20, high), 30_000);
});
