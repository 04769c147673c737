import assert from "node:assert/strict";
import { decodeInotify, encodeInotify, IN, type InotifyRecord } from "./inotify_record.ts";

Deno.test("decodeInotify() reads names, cookies and padding as the kernel lays them out", () => {
  const records: InotifyRecord[] = [
    { wd: 1, mask: IN.CREATE, cookie: 0, name: "a.txt" },
    { wd: 1, mask: IN.CREATE | IN.ISDIR, cookie: 0, name: "exactly_fifteen" },
    { wd: 2, mask: IN.MOVED_FROM, cookie: 77, name: "ünï ✓" },
    { wd: 3, mask: IN.MOVED_TO, cookie: 77, name: "b" },
    { wd: -1, mask: IN.Q_OVERFLOW, cookie: 0, name: "" },
    { wd: 4, mask: IN.IGNORED, cookie: 0, name: "" },
  ];
  const bytes = encodeInotify(records);
  // "exactly_fifteen" plus its NUL is 16 bytes: one block, no more.
  assert.equal(bytes.length, (16 + 16) + (16 + 16) + (16 + 16) + (16 + 16) + 16 + 16);
  assert.deepEqual(decodeInotify(bytes, bytes.length), records);
});

Deno.test("decodeInotify() stops at a truncated record and honours the length read", () => {
  const bytes = encodeInotify([
    { wd: 1, mask: IN.DELETE, cookie: 0, name: "x" },
    { wd: 1, mask: IN.DELETE, cookie: 0, name: "y" },
  ]);
  assert.deepEqual(decodeInotify(bytes, bytes.length - 1).map((r) => r.name), ["x"]);
  assert.deepEqual(decodeInotify(bytes, 10), []);
  const padded = new Uint8Array(bytes.length + 64);
  padded.set(bytes);
  assert.deepEqual(decodeInotify(padded, bytes.length).map((r) => r.name), ["x", "y"]);
});
