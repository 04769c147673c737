import assert from "node:assert/strict";
import {
  decodePermissionEvents,
  encodePermissionEvent,
  encodeResponse,
  FAN_PERM,
  inCgroup,
  openIntent,
  parseSyscallFile,
  parseThreadStatus,
  writesWith,
} from "./fanotify_perm_record.ts";

/** /proc/TID/syscall of a python3 blocked in openat(O_RDWR|O_TRUNC|O_CLOEXEC), captured here. */
const OPENAT_RDWR_TRUNC =
  "257 0xffffff9c 0x7fa09b51d5d0 0x80202 0x0 0x0 0x0 0x7fffc0a3a9c0 0x7fa09bb16011\n";

Deno.test("decodePermissionEvents() reads mask, fd and tid of each event and counts overflows", () => {
  const a = encodePermissionEvent({ mask: FAN_PERM.OPEN_PERM, fd: 22, tid: 9696 });
  const b = encodePermissionEvent({ mask: FAN_PERM.OPEN_EXEC_PERM, fd: 23, tid: 9700 });
  const overflow = encodePermissionEvent({ mask: FAN_PERM.Q_OVERFLOW, fd: -1, tid: 0 });
  const bytes = new Uint8Array([...a, ...overflow, ...b]);
  const batch = decodePermissionEvents(bytes);
  assert.deepEqual(batch.events, [
    { mask: FAN_PERM.OPEN_PERM, fd: 22, tid: 9696 },
    { mask: FAN_PERM.OPEN_EXEC_PERM, fd: 23, tid: 9700 },
  ]);
  assert.equal(batch.overflows, 1);
  assert.equal(batch.malformed, false);
});

Deno.test("decodePermissionEvents() stops at a bad version or a truncated event and says so", () => {
  const good = encodePermissionEvent({ mask: FAN_PERM.OPEN_PERM, fd: 5, tid: 1 });
  const bad = encodePermissionEvent({ mask: FAN_PERM.OPEN_PERM, fd: 6, tid: 1 });
  bad[4] = 2;
  const batch = decodePermissionEvents(new Uint8Array([...good, ...bad]));
  assert.equal(batch.events.length, 1);
  assert.equal(batch.malformed, true);
  assert.equal(decodePermissionEvents(good.subarray(0, 20)).malformed, true);
});

Deno.test("encodeResponse() writes struct fanotify_response with allow, deny and audit", () => {
  const view = (b: Uint8Array) => new DataView(b.buffer, b.byteOffset, 8);
  assert.equal(view(encodeResponse(7, true)).getInt32(0, true), 7);
  assert.equal(view(encodeResponse(7, true)).getUint32(4, true), FAN_PERM.ALLOW);
  assert.equal(view(encodeResponse(7, false)).getUint32(4, true), FAN_PERM.DENY);
  assert.equal(
    view(encodeResponse(7, false, { audit: true })).getUint32(4, true),
    FAN_PERM.DENY | FAN_PERM.AUDIT,
  );
});

Deno.test("openIntent() reads the opener's flags from a captured /proc/TID/syscall", () => {
  const intent = openIntent(parseSyscallFile(OPENAT_RDWR_TRUNC), "x86_64");
  assert.deepEqual(intent, { kind: "flags", flags: 0x80202, syscall: "openat" });
  assert.equal(intent.kind === "flags" && writesWith(intent.flags), true);
  const readOnly = openIntent(
    parseSyscallFile("257 0xffffff9c 0x1000 0x80000 0x0 0x0 0x0 0x1 0x2"),
  );
  assert.equal(readOnly.kind === "flags" && writesWith(readOnly.flags), false);
  // open(path, O_WRONLY), creat(path, mode), openat2 (flags in memory), execve.
  assert.deepEqual(openIntent(parseSyscallFile("2 0x1000 0x1 0x0 0x0 0x0 0x0 0x1 0x2")), {
    kind: "flags",
    flags: 1,
    syscall: "open",
  });
  const creat = openIntent(parseSyscallFile("85 0x1000 0x1a4 0x0 0x0 0x0 0x0 0x1 0x2"));
  assert.equal(creat.kind === "flags" && writesWith(creat.flags), true);
  assert.deepEqual(
    openIntent(parseSyscallFile("437 0xffffff9c 0x1000 0x7ffd00 0x18 0x0 0x0 0x1 0x2")),
    {
      kind: "openat2",
      how: 0x7ffd00n,
      syscall: "openat2",
    },
  );
  assert.equal(openIntent(parseSyscallFile("59 0x1 0x2 0x3 0x0 0x0 0x0 0x1 0x2")).kind, "exec");
  assert.equal(
    openIntent(parseSyscallFile("221 0x1 0x2 0x3 0x0 0x0 0x0 0x1 0x2"), "aarch64").kind,
    "exec",
  );
});

Deno.test("openIntent() is unknown for a running thread, another syscall or another architecture", () => {
  assert.equal(parseSyscallFile("running\n"), null);
  assert.equal(parseSyscallFile("-1 0x7ffd 0x4011\n"), null);
  assert.deepEqual(openIntent(null), { kind: "unknown", syscall: "unknown" });
  assert.equal(
    openIntent(parseSyscallFile("0 0x3 0x1000 0x10 0x0 0x0 0x0 0x1 0x2")).kind,
    "unknown",
  );
  assert.equal(openIntent(parseSyscallFile(OPENAT_RDWR_TRUNC), "mips").kind, "unknown");
});

Deno.test("writesWith() counts O_WRONLY, O_RDWR and O_TRUNC as writes", () => {
  assert.equal(writesWith(0), false);
  assert.equal(writesWith(0o2000000), false);
  assert.equal(writesWith(1), true);
  assert.equal(writesWith(2), true);
  assert.equal(writesWith(0o1000), true);
});

Deno.test("parseThreadStatus() reads a thread's process and parent", () => {
  const status = "Name:\tpython3\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t9690\nNgid:\t0\n" +
    "Pid:\t9696\nPPid:\t9600\nTracerPid:\t0\n";
  assert.deepEqual(parseThreadStatus(status), { tgid: 9690, ppid: 9600 });
  assert.equal(parseThreadStatus("Name:\tx\n"), null);
});

Deno.test("inCgroup() matches the session's cgroup and those beneath it, v1 and v2", () => {
  assert.equal(inCgroup("0::/sentry/abc\n", "/sentry/abc"), true);
  assert.equal(inCgroup("0::/sentry/abc/child\n", "/sentry/abc/"), true);
  assert.equal(inCgroup("0::/sentry/abcd\n", "/sentry/abc"), false);
  assert.equal(inCgroup("7:freezer:/sentry/abc\n1:name=systemd:/user\n", "/sentry/abc"), true);
  assert.equal(inCgroup("0::/\n", ""), false);
});
