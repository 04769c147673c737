import assert from "node:assert/strict";
import { compilePolicy, parsePolicy } from "../policy/mod.ts";
import { resolveLayers } from "../policy/resolve.ts";
import {
  callerProcPath,
  decideActions,
  EACCES,
  EPERM,
  execTarget,
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

/** execTarget()'s options for CALLER, with the links the caller's /proc would show. */
function links(dirfd: number | null, table: Record<string, string>) {
  return { pid: 40, tid: 41, dirfd, readLink: (path: string) => table[path] ?? null };
}

Deno.test("execTarget() looks up an fexecve of a memfd or a deleted file through the caller's descriptor", () => {
  const memfd = "/memfd:innocent (deleted)";
  assert.deepEqual(execTarget(memfd, links(3, { "/proc/41/fd/3": memfd })), {
    path: memfd,
    probe: "/proc/41/fd/3",
  });
  const gone = "/w/tool (deleted)";
  assert.deepEqual(execTarget(gone, links(5, { "/proc/41/fd/5": gone })), {
    path: gone,
    probe: "/proc/41/fd/5",
  });
  // A relative path on a dirfd, even one whose directory was renamed or deleted.
  const dir = "/w/d (deleted)";
  assert.deepEqual(execTarget(`${dir}/prog`, links(4, { "/proc/41/fd/4": dir })), {
    path: `${dir}/prog`,
    probe: "/proc/41/fd/4/prog",
  });
});

Deno.test("execTarget() looks an absolute path up beneath the caller's root, dirfd or not", () => {
  const table = { "/proc/41/fd/4": "/w" };
  assert.deepEqual(execTarget("/usr/bin/id", links(4, table)), {
    path: "/usr/bin/id",
    probe: "/proc/41/root/usr/bin/id",
  });
  // A sibling whose name starts with the directory's is no child of it.
  assert.equal(execTarget("/w2/x", links(4, table)).probe, "/proc/41/root/w2/x");
  assert.equal(execTarget("/usr/bin/id", links(null, {})).probe, "/proc/41/root/usr/bin/id");
  // A dirfd whose link names no path (the decoder fails such a call before): by the path.
  assert.equal(
    execTarget("/x", links(4, { "/proc/41/fd/4": "anon_inode:[x]" })).probe,
    "/proc/41/root/x",
  );
});

Deno.test("execTarget() names the file behind /proc/self/fd/N, /dev/fd/N and /proc/self/exe, in the caller's /proc", () => {
  const table = {
    "/proc/41/root/proc/40/fd/7": "/memfd:x (deleted)",
    "/proc/41/root/proc/40/task/41/fd/8": "/usr/bin/nc",
    "/proc/41/root/proc/40/exe": "/usr/bin/python3.11",
  };
  assert.deepEqual(execTarget("/proc/self/fd/7", links(null, table)), {
    path: "/memfd:x (deleted)",
    probe: "/proc/41/root/proc/40/fd/7",
  });
  assert.deepEqual(execTarget("/dev/fd/7", links(null, table)), {
    path: "/memfd:x (deleted)",
    probe: "/proc/41/root/proc/40/fd/7",
  });
  assert.equal(execTarget("/proc/thread-self/fd/8", links(null, table)).path, "/usr/bin/nc");
  assert.equal(execTarget("/proc/self/exe", links(null, table)).path, "/usr/bin/python3.11");
  // A closed descriptor: the path as named, looked up where the kernel would (ENOENT).
  assert.deepEqual(execTarget("/proc/self/fd/9", links(null, table)), {
    path: "/proc/self/fd/9",
    probe: "/proc/41/root/proc/40/fd/9",
  });
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
