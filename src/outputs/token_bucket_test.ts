import assert from "node:assert/strict";
import { TokenBucket } from "./token_bucket.ts";

Deno.test("TokenBucket allows a burst, then refills at its rate per minute", () => {
  let now = 0;
  const bucket = new TokenBucket({ perMinute: 60, burst: 3, now: () => now });
  assert.deepEqual([bucket.take(), bucket.take(), bucket.take(), bucket.take()], [
    true,
    true,
    true,
    false,
  ]);
  assert.equal(bucket.msUntilToken(), 1_000);
  now = 999;
  assert.equal(bucket.take(), false);
  now = 1_000;
  assert.equal(bucket.take(), true);
  // A long quiet spell refills no more than the burst.
  now = 600_000;
  const taken = Array.from({ length: 5 }, () => bucket.take()).filter(Boolean).length;
  assert.equal(taken, 3);
});
