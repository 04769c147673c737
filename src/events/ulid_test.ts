import assert from "node:assert/strict";
import { createUlid, ulidTime } from "./ulid.ts";

const ULID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** A clock that returns the given times in turn, then repeats the last one. */
function clock(...times: number[]): () => number {
  let i = 0;
  return () => times[Math.min(i++, times.length - 1)] as number;
}

/** A random source that fills every byte with the same value. */
function fill(byte: number): (bytes: Uint8Array) => void {
  return (bytes) => bytes.fill(byte);
}

Deno.test("`createUlid()` returns 26 Crockford base32 characters", () => {
  const next = createUlid();
  for (let i = 0; i < 100; i++) {
    const id = next();
    assert.equal(id.length, 26);
    assert.match(id, ULID);
  }
});

Deno.test("`createUlid()` never uses the letters Crockford leaves out (I, L, O, U)", () => {
  const next = createUlid({ now: () => 2 ** 48 - 1, random: fill(0xff) });
  const id = next();
  assert.equal(id, "7ZZZZZZZZZZZZZZZZZZZZZZZZZ");
  assert.doesNotMatch(id, /[ILOU]/);
});

Deno.test("`createUlid()` encodes the time in the first 10 characters, most significant first", () => {
  const next = createUlid({ now: () => 0, random: fill(0) });
  assert.equal(next(), "00000000000000000000000000");
  const at1 = createUlid({ now: () => 1, random: fill(0) });
  assert.equal(at1().slice(0, 10), "0000000001");
  const at32 = createUlid({ now: () => 32, random: fill(0) });
  assert.equal(at32().slice(0, 10), "0000000010");
});

Deno.test("`createUlid()` encodes 80 bits of entropy in the last 16 characters", () => {
  const bytes = Uint8Array.from([0x01, 0x23, 0x45, 0x67, 0x89, 0xab, 0xcd, 0xef, 0xf0, 0x0f]);
  const next = createUlid({ now: () => 0, random: (b) => b.set(bytes) });
  const tail = next().slice(10);
  // Decode the 16 base32 digits back to 80 bits and compare with the bytes.
  const alphabet = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  let n = 0n;
  for (const ch of tail) n = n * 32n + BigInt(alphabet.indexOf(ch));
  let expected = 0n;
  for (const b of bytes) expected = (expected << 8n) | BigInt(b);
  assert.equal(n, expected);
});

Deno.test("`createUlid()` ids sort by time across milliseconds", () => {
  const times = [1_700_000_000_000, 1_700_000_000_001, 1_700_000_000_500, 1_700_000_100_000];
  // Random bytes that fall as time rises, so only the time part can order them.
  let byte = 0xff;
  const next = createUlid({ now: clock(...times), random: (b) => b.fill(byte--) });
  const ids = times.map(() => next());
  assert.deepEqual([...ids].sort(), ids);
  assert.equal(new Set(ids).size, ids.length);
});

Deno.test("`createUlid()` is strictly increasing within one millisecond", () => {
  const next = createUlid({ now: () => 1_700_000_000_000, random: fill(0x10) });
  const ids = Array.from({ length: 1000 }, () => next());
  for (let i = 1; i < ids.length; i++) {
    assert.ok((ids[i - 1] as string) < (ids[i] as string), `${ids[i - 1]} < ${ids[i]}`);
  }
  // Within the millisecond the random part is drawn once and then incremented.
  assert.equal(ids[0]?.slice(0, 10), ids[999]?.slice(0, 10));
});

Deno.test("`createUlid()` carries the increment across entropy bytes", () => {
  const bytes = Uint8Array.from([0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff]);
  const next = createUlid({ now: () => 5, random: (b) => b.set(bytes) });
  const a = next();
  const b = next();
  assert.ok(a < b);
  assert.equal(a.slice(0, 10), b.slice(0, 10));
});

Deno.test("`createUlid()` stays strictly increasing when the clock steps back", () => {
  const next = createUlid({
    now: clock(2_000, 1_000, 500, 2_000, 2_001),
    random: fill(0x80),
  });
  const ids = Array.from({ length: 5 }, () => next());
  for (let i = 1; i < ids.length; i++) {
    assert.ok((ids[i - 1] as string) < (ids[i] as string), `${ids[i - 1]} < ${ids[i]}`);
  }
  // While the clock is behind, ids keep the last time seen rather than going back.
  assert.deepEqual(ids.map(ulidTime), [2_000, 2_000, 2_000, 2_000, 2_001]);
});

Deno.test("`createUlid()` throws a `RangeError` when the entropy overflows within a millisecond", () => {
  const next = createUlid({ now: () => 7, random: fill(0xff) });
  next();
  assert.throws(() => next(), RangeError);
});

Deno.test("`createUlid()` draws fresh random bytes when the millisecond changes", () => {
  let calls = 0;
  const next = createUlid({ now: clock(1, 1, 2, 2, 3), random: (b) => (calls++, b.fill(1)) });
  for (let i = 0; i < 5; i++) next();
  assert.equal(calls, 3);
});

Deno.test("`createUlid()` floors a fractional clock to whole milliseconds", () => {
  const next = createUlid({ now: () => 1_700_000_000_123.75, random: fill(0) });
  const id = next();
  assert.match(id, ULID);
  assert.equal(ulidTime(id), 1_700_000_000_123);
});

Deno.test("`createUlid()` without sources uses the system clock and crypto randomness", () => {
  const before = Date.now();
  const next = createUlid();
  const a = next();
  const b = next();
  const after = Date.now();
  assert.notEqual(a, b);
  assert.ok(ulidTime(a) >= before && ulidTime(a) <= after);
});

Deno.test("`ulidTime()` round-trips the time a ULID encodes", () => {
  for (const t of [0, 1, 31, 32, 1_700_000_000_000, 1_700_000_000_001, 2 ** 48 - 1]) {
    const next = createUlid({ now: () => t, random: fill(0x5a) });
    assert.equal(ulidTime(next()), t);
  }
});

Deno.test("`ulidTime()` reads only the first 10 characters", () => {
  assert.equal(ulidTime("0000000001ZZZZZZZZZZZZZZZZ"), 1);
  assert.equal(ulidTime("0000000010"), 32);
});
