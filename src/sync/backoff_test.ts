import assert from "node:assert/strict";
import { backoffDelay, parseRetryAfter, RETRY_AFTER_MAX_MS } from "./backoff.ts";

Deno.test("backoffDelay() doubles its ceiling from 1 s up to 5 min, drawing below it", () => {
  const ceilings = [1, 2, 3, 4, 9, 10, 50].map((n) => backoffDelay(n, { random: () => 0.999999 }));
  assert.deepEqual(ceilings, [999, 1999, 3999, 7999, 255_999, 299_999, 299_999]);
  assert.deepEqual([1, 5, 40].map((n) => backoffDelay(n, { random: () => 0 })), [0, 0, 0]);
  assert.equal(backoffDelay(3, { random: () => 0.5, baseMs: 100, maxMs: 250 }), 125);
});

Deno.test("backoffDelay() with Math.random spreads retries over the whole window", () => {
  const draws = Array.from({ length: 2000 }, () => backoffDelay(4));
  assert.ok(draws.every((d) => d >= 0 && d < 8000));
  assert.ok(Math.min(...draws) < 1000 && Math.max(...draws) > 7000);
});

Deno.test("parseRetryAfter() reads seconds and HTTP dates, and clamps them", () => {
  const now = Date.UTC(2026, 10, 24, 12, 0, 0);
  assert.equal(parseRetryAfter("120", now), 120_000);
  assert.equal(parseRetryAfter(" 0 ", now), 0);
  assert.equal(parseRetryAfter(new Date(now + 45_000).toUTCString(), now), 45_000);
  assert.equal(parseRetryAfter(new Date(now - 45_000).toUTCString(), now), 0);
  assert.equal(parseRetryAfter("999999", now), RETRY_AFTER_MAX_MS);
  assert.equal(parseRetryAfter(null, now), null);
  assert.equal(parseRetryAfter("", now), null);
  assert.equal(parseRetryAfter("soon", now), null);
  assert.equal(parseRetryAfter("-5", now), null);
});
