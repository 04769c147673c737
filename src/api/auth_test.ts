import assert from "node:assert/strict";
import { allowedHostsFor, tokenMatches } from "./auth.ts";

Deno.test("tokenMatches() accepts only the exact token, whatever the lengths", () => {
  assert.equal(tokenMatches("abc", "abc"), true);
  assert.equal(tokenMatches("abd", "abc"), false);
  assert.equal(tokenMatches("ab", "abc"), false);
  assert.equal(tokenMatches("abcd", "abc"), false);
  assert.equal(tokenMatches("", "abc"), false);
});

Deno.test("allowedHostsFor() lists the listening address and the loopback names", () => {
  assert.deepEqual(allowedHostsFor("127.0.0.1", 7070), [
    "127.0.0.1:7070",
    "localhost:7070",
    "[::1]:7070",
  ]);
  assert.deepEqual(allowedHostsFor("::1", 80)[0], "[::1]:80");
  assert.deepEqual(allowedHostsFor("10.0.0.5", 9)[0], "10.0.0.5:9");
});
