import assert from "node:assert/strict";
import { parseGrace } from "./control.ts";
import { UsageError } from "./errors.ts";
import { isListenAddress } from "./serve.ts";
import { parseLimit } from "./sessions.ts";

Deno.test("isListenAddress() takes IP literals and localhost, never a host name", () => {
  for (
    const ok of [
      "127.0.0.1",
      "0.0.0.0",
      "10.1.2.3",
      "::1",
      "::",
      "fe80::1",
      "::ffff:127.0.0.1",
      "localhost",
    ]
  ) {
    assert.equal(isListenAddress(ok), true, ok);
  }
  for (
    const bad of [
      "notanaddress",
      "300.1.1.1",
      "1.2.3",
      "01.2.3.4",
      "example.com",
      "",
      "[::1]",
      "1:2:3",
    ]
  ) {
    assert.equal(isListenAddress(bad), false, bad);
  }
});

Deno.test("parseGrace() takes whole milliseconds from 0 to an hour", () => {
  assert.equal(parseGrace("0"), 0);
  assert.equal(parseGrace("3000"), 3000);
  for (const bad of ["-5", "1.5", "", "3s", "3600001", "1e3"]) {
    assert.throws(() => parseGrace(bad), UsageError, bad);
  }
});

Deno.test("parseLimit() takes a whole number of at least 1", () => {
  assert.equal(parseLimit("1"), 1);
  assert.equal(parseLimit("50"), 50);
  for (const bad of ["-1", "0", "1.5", "ten", "", "99999999999999999999"]) {
    assert.throws(() => parseLimit(bad), UsageError, bad);
  }
});
