import assert from "node:assert/strict";
import { compilePolicy, parsePolicy } from "../policy/mod.ts";
import { resolveLayers } from "../policy/resolve.ts";
import {
  callerProcPath,
  decideActions,
  EACCES,
  EPERM,
  parseStatusIdentity,
  splitPath,
} from "./seccomp_block.ts";

const CALLER = { pid: 40, tid: 41, ppid: 1, exe: "/usr/bin/python3", cmdline: ["python3"] };

function policy(yaml: string) {
  const file = parsePolicy(yaml, "test.yaml");
  return compilePolicy(resolveLayers([{ source: "test", policy: file }]), {
    home: "/home/u",
    workspace: "/w",
    env: {},
  });
}

Deno.test("decideActions() blocks a denied action in mode block, with EACCES for files and EPERM for the network", () => {
  const p = policy(
    "mode: block\nfiles: { read: { deny: [~/.ssh/**] } }\nnetwork: { deny: [10.0.0.0/8] }",
  );
  const read = {
    pid: 40,
    op: "open",
    path: "/home/u/.ssh/id_rsa",
    flags: 0,
    result: null,
    syscall: "openat",
  } as const;
  assert.equal(decideActions([read], { caller: CALLER, policy: p }), EACCES);
  const addr = new Uint8Array([2, 0, 0, 80, 10, 1, 2, 3]);
  const connect = { pid: 40, op: "connect", addr, result: null, syscall: "connect" } as const;
  assert.equal(decideActions([connect], { caller: CALLER, policy: p }), EPERM);
  const fine = { ...read, path: "/w/notes.txt" };
  assert.equal(decideActions([fine], { caller: CALLER, policy: p }), null);
});

Deno.test("decideActions() lets a denial through when its response is below block (mode alert)", () => {
  const p = policy("mode: alert\nfiles: { read: { deny: [~/.ssh/**] } }");
  const read = {
    pid: 40,
    op: "open",
    path: "/home/u/.ssh/id_rsa",
    flags: 0,
    result: null,
    syscall: "openat",
  } as const;
  assert.equal(decideActions([read], { caller: CALLER, policy: p }), null);
});

Deno.test("callerProcPath() points /proc/self and /proc/thread-self at the caller", () => {
  assert.equal(callerProcPath("/proc/self/status", CALLER), "/proc/40/status");
  assert.equal(callerProcPath("/proc/self", CALLER), "/proc/40");
  assert.equal(callerProcPath("/proc/thread-self/comm", CALLER), "/proc/40/task/41/comm");
  assert.equal(callerProcPath("/proc/selfish", CALLER), "/proc/selfish");
  assert.equal(callerProcPath("/etc/passwd", CALLER), "/etc/passwd");
});

Deno.test("splitPath() splits a directory and its last name", () => {
  assert.deepEqual(splitPath("/w/a/b.txt"), { dir: "/w/a", name: "b.txt" });
  assert.deepEqual(splitPath("/b.txt"), { dir: "/", name: "b.txt" });
});

Deno.test("parseStatusIdentity() reads the filesystem uid and gid and the umask", () => {
  const status = "Name:\tpython3\nUmask:\t0027\nState:\tR\nUid:\t1000\t1000\t1000\t1001\n" +
    "Gid:\t100\t100\t100\t101\n";
  assert.deepEqual(parseStatusIdentity(status), { fsuid: 1001, fsgid: 101, umask: 0o027 });
  assert.equal(parseStatusIdentity("Name:\tx\n"), null);
});
