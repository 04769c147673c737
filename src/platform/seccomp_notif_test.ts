import assert from "node:assert/strict";
import {
  AT_FDCWD,
  decodeNotif,
  encodeResponse,
  readSyscall,
  resolvePath,
  type SeccompNotif,
  syscallName,
  syscallSpec,
  type TargetReader,
} from "./seccomp_notif.ts";

// Notifications captured on Linux 6.18 x86_64 from python3 (pid 18882) running, in /tmp/sc:
// open("/tmp/sc/cap_a", O_RDONLY|O_CREAT), open("cap_b", O_WRONLY|O_CREAT|O_TRUNC, dir_fd=3),
// rename("cap_b", "cap_c"), unlink("cap_c"), symlink("target_x", "cap_l"), connect and UDP
// sendto/sendmsg to 127.0.0.1:9, execv("/bin/true", ["true", "arg1"]). Beside each, the
// target's memory at its pointer arguments as captured with process_vm_readv.
const SAMPLES = {
  openat:
    "2fe8e2afbfebf440c249000000000000010100003e0000c011e03704a57f00009cffffff00000000505e2004a57f00004000080000000000a40100000000000000000000000000000000000000000000",
  openatDirfd:
    "31e8e2afbfebf440c249000000000000010100003e0000c08fe13704a57f00000300000000000000505e2004a57f00004102080000000000a40100000000000000000000000000000000000000000000",
  rename:
    "32e8e2afbfebf440c249000000000000520000003e0000c087ea2d04a57f0000505e2004a57f0000b0702004a57f0000000000000000000028d52904a57f000000000000000000000000000000000000",
  unlink:
    "33e8e2afbfebf440c249000000000000570000003e0000c017fb3704a57f0000b0702004a57f000000000000000000000000000000000000683e2904a57f000000000000000000000000000000000000",
  symlink:
    "34e8e2afbfebf440c249000000000000580000003e0000c057fa3704a57f0000b0702004a57f0000505e2004a57f00000000000000000000400f2904a57f000000000000000000000000000000000000",
  connect:
    "36e8e2afbfebf440c2490000000000002a0000003e0000c0c0073904a57f0000040000000000000090ee0c51fc7f0000100000000000000008da2904a57f000000000000000000000000000000000000",
  sendto:
    "37e8e2afbfebf440c2490000000000002c0000003e0000c0b30c3904a57f0000050000000000000070f1a500000000000100000000000000000000000000000030ee0c51fc7f00001000000000000000",
  sendmsg:
    "38e8e2afbfebf440c2490000000000002e0000003e0000c0100c3904a57f00000500000000000000d0ed0c51fc7f00000000000000000000e8ae2904a57f000000000000000000000000000000000000",
  execve:
    "39e8e2afbfebf440c2490000000000003b0000003e0000c0d7aa3504a57f0000505e2004a57f0000b0b71404a57f000038f50c51fc7f0000a0962904a57f0000c09c9500000000000000000000000000",
};

/** The target's memory as captured, by address (a block per pointer argument). */
function captured(
  at: "openat" | "openatDirfd" | "rename" | "symlink" | "execve",
): Map<bigint, string> {
  const path = {
    openat: "2f746d702f73632f6361705f6100",
    openatDirfd: "6361705f620063006361705f6100",
    rename: "6361705f620063006361705f6100",
    symlink: "6361705f6c0063006361705f6100",
    execve: "2f62696e2f7472756500705f6100",
  }[at];
  return new Map([
    [0x7fa504205e50n, path],
    [0x7fa5042070b0n, at === "symlink" ? "7461726765745f7800" : "6361705f6300"],
    // execve's argv table: two pointers and the NULL.
    [0x7fa50414b7b0n, "80421b04a57f000090421b04a57f00000000000000000000"],
    // The strings it points to (python's execv(["true", "arg1"])).
    [0x7fa5041b4280n, "7472756500"],
    [0x7fa5041b4290n, "6172673100"],
    // connect's and sendto's sockaddr_in 127.0.0.1:9.
    [0x7ffc510cee90n, "020000097f0000010000000000000000"],
    [0x7ffc510cee30n, "020000097f0000010000000000000000"],
    // sendmsg's msghdr: msg_name 0x7ffc510cee10, msg_namelen 16, then the iovec.
    [0x7ffc510cedd0n, "10ee0c51fc7f0000100000000000000080421b04a57f0000010000000000000000"],
    // msg_name (not captured; the same address python passed to sendto).
    [0x7ffc510cee10n, "020000097f0000010000000000000000"],
  ]);
}

function hex(text: string): Uint8Array {
  return new Uint8Array(text.match(/../g)?.map((b) => parseInt(b, 16)) ?? []);
}

/** A reader over a map of memory blocks; directories by dirfd. */
function fakeReader(
  blocks: Map<bigint, string>,
  dirs: Record<number, string> = { [AT_FDCWD]: "/tmp/sc", 3: "/tmp/sc" },
): TargetReader {
  const find = (address: bigint): Uint8Array | null => {
    for (const [start, text] of blocks) {
      const bytes = hex(text);
      if (address >= start && address < start + BigInt(bytes.length)) {
        return bytes.subarray(Number(address - start));
      }
    }
    return null;
  };
  return {
    string(address, max) {
      const bytes = find(address);
      if (bytes === null) return null;
      const end = bytes.indexOf(0);
      if (end < 0 || end > max) return null;
      return new TextDecoder().decode(bytes.subarray(0, end));
    },
    bytes(address, length) {
      const bytes = find(address);
      return bytes === null ? null : bytes.subarray(0, length);
    },
    directory(dirfd) {
      return dirs[dirfd] ?? null;
    },
  };
}

Deno.test("decodeNotif() reads a captured struct seccomp_notif", () => {
  const n = decodeNotif(hex(SAMPLES.openat));
  assert.equal(n.id, 0x40f4ebbfafe2e82fn);
  assert.equal(n.pid, 18882);
  assert.equal(n.flags, 0);
  assert.equal(n.nr, 257);
  assert.equal(n.arch, 0xc000003e);
  assert.equal(n.ip, 0x7fa50437e011n);
  assert.deepEqual(n.args, [0xffffff9cn, 0x7fa504205e50n, 0x80040n, 0o644n, 0n, 0n]);
  assert.throws(() => decodeNotif(new Uint8Array(79)), RangeError);
});

Deno.test("encodeResponse() builds struct seccomp_notif_resp for continue, errno and value", () => {
  const id = 0x40f4ebbfafe2e82fn;
  const cont = new DataView(encodeResponse({ id, answer: { kind: "continue" } }).buffer);
  assert.equal(cont.byteLength, 24);
  assert.equal(cont.getBigUint64(0, true), id);
  assert.equal(cont.getBigInt64(8, true), 0n);
  assert.equal(cont.getInt32(16, true), 0);
  assert.equal(cont.getUint32(20, true), 1, "SECCOMP_USER_NOTIF_FLAG_CONTINUE");
  const denied = new DataView(encodeResponse({ id, answer: { kind: "errno", errno: 13 } }).buffer);
  assert.equal(denied.getInt32(16, true), -13);
  assert.equal(denied.getUint32(20, true), 0);
  const value = new DataView(encodeResponse({ id, answer: { kind: "value", value: 7 } }).buffer);
  assert.equal(value.getBigInt64(8, true), 7n);
  assert.equal(value.getInt32(16, true), 0);
  assert.throws(() => encodeResponse({ id, answer: { kind: "errno", errno: 0 } }), RangeError);
  // Writes into a given buffer, for the hot path.
  const into = new Uint8Array(24).fill(0xff);
  assert.equal(encodeResponse({ id, answer: { kind: "continue" } }, into), into);
  assert.equal(new DataView(into.buffer).getInt32(16, true), 0);
});

Deno.test("syscallSpec() names each watched syscall and the role of its arguments", () => {
  assert.deepEqual(syscallSpec(257)?.args, ["dirfd", "path", "open_flags", "other"]);
  assert.equal(syscallSpec(257)?.name, "openat");
  assert.deepEqual(syscallSpec(42)?.args, ["fd", "sockaddr", "socklen"]);
  assert.deepEqual(syscallSpec(59)?.args, ["path", "argv", "other"]);
  assert.equal(syscallSpec(0), undefined);
  assert.equal(syscallName(316), "renameat2");
  assert.equal(syscallName(0), "syscall_0");
});

Deno.test("readSyscall() decodes captured opens, absolute and relative to a dirfd", () => {
  const abs = readSyscall(decodeNotif(hex(SAMPLES.openat)), fakeReader(captured("openat")));
  assert.deepEqual(abs, {
    actions: [{ op: "open", path: "/tmp/sc/cap_a", flags: 0x80040, syscall: "openat" }],
    failure: null,
  });
  const rel = readSyscall(
    decodeNotif(hex(SAMPLES.openatDirfd)),
    fakeReader(captured("openatDirfd"), { 3: "/srv/data" }),
  );
  assert.deepEqual(rel.actions, [
    { op: "open", path: "/srv/data/cap_b", flags: 0x80241, syscall: "openat" },
  ]);
});

Deno.test("readSyscall() decodes captured rename, unlink and symlink against the cwd", () => {
  const rename = readSyscall(decodeNotif(hex(SAMPLES.rename)), fakeReader(captured("rename")));
  assert.deepEqual(rename.actions, [
    { op: "rename", from: "/tmp/sc/cap_b", to: "/tmp/sc/cap_c", syscall: "rename" },
  ]);
  const unlink = readSyscall(decodeNotif(hex(SAMPLES.unlink)), fakeReader(captured("rename")));
  assert.deepEqual(unlink.actions, [{ op: "unlink", path: "/tmp/sc/cap_c", syscall: "unlink" }]);
  const symlink = readSyscall(decodeNotif(hex(SAMPLES.symlink)), fakeReader(captured("symlink")));
  assert.deepEqual(symlink.actions, [
    { op: "symlink", from: "target_x", to: "/tmp/sc/cap_l", syscall: "symlink" },
  ]);
});

Deno.test("readSyscall() decodes captured connect, sendto and sendmsg addresses", () => {
  const sockaddr = hex("020000097f0000010000000000000000");
  const memory = captured("openat");
  const connect = readSyscall(decodeNotif(hex(SAMPLES.connect)), fakeReader(memory));
  assert.deepEqual(connect.actions, [{ op: "connect", addr: sockaddr, syscall: "connect" }]);
  const sendto = readSyscall(decodeNotif(hex(SAMPLES.sendto)), fakeReader(memory));
  assert.deepEqual(sendto.actions, [{ op: "sendto", addr: sockaddr, syscall: "sendto" }]);
  const sendmsg = readSyscall(decodeNotif(hex(SAMPLES.sendmsg)), fakeReader(memory));
  assert.deepEqual(sendmsg.actions, [{ op: "sendto", addr: sockaddr, syscall: "sendmsg" }]);
  // A sendmsg without msg_name (a connected socket) asks for nothing.
  const unnamed = new Map(memory).set(0x7ffc510cedd0n, "0".repeat(32));
  assert.deepEqual(readSyscall(decodeNotif(hex(SAMPLES.sendmsg)), fakeReader(unnamed)), {
    actions: [],
    failure: null,
  });
});

Deno.test("readSyscall() decodes a captured execve with its argv", () => {
  const exec = readSyscall(decodeNotif(hex(SAMPLES.execve)), fakeReader(captured("execve")));
  assert.deepEqual(exec.actions, [
    { op: "exec", path: "/bin/true", argv: ["true", "arg1"], syscall: "execve" },
  ]);
});

/** Builds a notification for calls that were not captured. */
function notif(nr: number, args: bigint[]): SeccompNotif {
  return { id: 1n, pid: 100, flags: 0, nr, arch: 0xc000003e, ip: 0n, args };
}

Deno.test("readSyscall() handles openat2, unlinkat(AT_REMOVEDIR), execveat and sendmmsg", () => {
  const memory = new Map<bigint, string>([
    [0x1000n, "2f612f2e2e2f622f2f6300"], // "/a/../b//c"
    [0x2000n, "4102000000000000" + "0".repeat(32)], // struct open_how { flags 0x241 }
    [0x3000n, "00"], // ""
    [0x4000n, "0050000000000000" + "0".repeat(32)], // argv: one pointer to 0x5000, NULL
    [0x5000n, "7800"], // "x"
    // Two mmsghdr (64 bytes each): the first names 0x7000, the second none.
    [0x6000n, "0070000000000000" + "10000000" + "0".repeat(104) + "0".repeat(128)],
    [0x7000n, "0a00005000000000000000000000000000000000000000010000000000"],
  ]);
  const reader = fakeReader(memory, { [AT_FDCWD]: "/w", 7: "/usr/bin/env" });
  assert.deepEqual(readSyscall(notif(437, [7n, 0x1000n, 0x2000n, 24n, 0n, 0n]), reader).actions, [
    { op: "open", path: "/b/c", flags: 0x241, syscall: "openat2" },
  ]);
  assert.deepEqual(
    readSyscall(notif(263, [BigInt(AT_FDCWD) & 0xffffffffn, 0x5000n, 0x200n, 0n, 0n, 0n]), reader)
      .actions,
    [{ op: "rmdir", path: "/w/x", syscall: "unlinkat" }],
  );
  // execveat(fd 7, "", argv, envp, AT_EMPTY_PATH) runs the file fd 7 names.
  assert.deepEqual(
    readSyscall(notif(322, [7n, 0x3000n, 0x4000n, 0n, 0x1000n, 0n]), reader).actions,
    [{ op: "exec", path: "/usr/bin/env", argv: ["x"], syscall: "execveat" }],
  );
  const mmsg = readSyscall(notif(307, [3n, 0x6000n, 2n, 0n, 0n, 0n]), reader);
  assert.equal(mmsg.actions.length, 1);
  assert.equal(mmsg.actions[0]?.op, "sendto");
});

Deno.test("readSyscall() reports what it could not read instead of guessing", () => {
  const n = decodeNotif(hex(SAMPLES.openat));
  assert.deepEqual(readSyscall(n, fakeReader(new Map())), { actions: [], failure: "memory" });
  const rel = decodeNotif(hex(SAMPLES.openatDirfd));
  assert.deepEqual(readSyscall(rel, fakeReader(captured("openatDirfd"), {})), {
    actions: [],
    failure: "directory",
  });
  // A syscall the tier does not watch asks for nothing.
  assert.deepEqual(readSyscall(notif(0, []), fakeReader(new Map())), {
    actions: [],
    failure: null,
  });
});

Deno.test("resolvePath() joins and normalizes lexically", () => {
  assert.equal(resolvePath("/tmp/sc", "cap_b"), "/tmp/sc/cap_b");
  assert.equal(resolvePath("/tmp/sc", "../x/./y"), "/tmp/x/y");
  assert.equal(resolvePath("/ignored", "/a//b/"), "/a/b");
  assert.equal(resolvePath("/", ".."), "/");
  assert.equal(resolvePath("/a", "/b/../c"), "/c");
  assert.equal(resolvePath("/a", "/usr/lib/x.so"), "/usr/lib/x.so");
});
