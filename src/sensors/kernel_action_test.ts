import assert from "node:assert/strict";
import {
  type KernelEventContext,
  type ProcessInfo,
  ProcessTable,
  toSensorEvent,
} from "./kernel_action.ts";

function context(procs: Record<number, ProcessInfo> = {}): KernelEventContext & {
  inspected: number[];
} {
  const inspected: number[] = [];
  const table = new ProcessTable((pid) => {
    inspected.push(pid);
    return procs[pid] ?? null;
  });
  return { sensor: "test", table, databasePorts: new Set([5432]), inspected };
}

const INET = (port: number) => new Uint8Array([2, 0, port >> 8, port & 0xff, 127, 0, 0, 1]);

Deno.test("toSensorEvent() journals an open as read, write or create, with its outcome", () => {
  const ctx = context({ 7: { ppid: 1, exe: "/usr/bin/python3", cmdline: ["python3"] } });
  const base = { pid: 7, syscall: "openat" } as const;
  const read = toSensorEvent(
    { ...base, op: "open", path: "/etc//x/../hosts", flags: 0, result: 3 },
    ctx,
  );
  assert.equal(read?.kind, "file.read");
  assert.equal(read?.target, "/etc/hosts");
  assert.equal(read?.exe, "/usr/bin/python3");
  assert.deepEqual(read?.detail, { syscall: "openat", flags: 0, result: "ok" });
  const create = toSensorEvent(
    { ...base, op: "open", path: "/w/a", flags: 0o101, created: true, result: 4 },
    ctx,
  );
  assert.equal(create?.kind, "file.create");
  const write = toSensorEvent(
    { ...base, op: "open", path: "/w/a", flags: 0o101, created: false, result: 4 },
    ctx,
  );
  assert.equal(write?.kind, "file.write");
  const failed = toSensorEvent({
    ...base,
    op: "open",
    path: "/root/.ssh/id_rsa",
    flags: 0,
    result: -13,
  }, ctx);
  assert.equal(failed?.detail.result, "failed");
  assert.equal(failed?.detail.errno, "EACCES");
  const unknown = toSensorEvent({ ...base, op: "open", path: "/x", flags: 0, result: null }, ctx);
  assert.equal(unknown?.detail.result, "unknown");
});

Deno.test("toSensorEvent() journals connects by family, database ports as db.connect", () => {
  const ctx = context();
  const web = toSensorEvent({
    pid: 9,
    op: "connect",
    addr: INET(443),
    result: 0,
    syscall: "connect",
  }, ctx);
  assert.equal(web?.kind, "net.connect");
  assert.equal(web?.target, "127.0.0.1:443");
  const db = toSensorEvent(
    { pid: 9, op: "connect", addr: INET(5432), result: -115, syscall: "connect" },
    ctx,
  );
  assert.equal(db?.kind, "db.connect");
  assert.equal(db?.detail.result, "pending");
  const sendto = toSensorEvent({
    pid: 9,
    op: "sendto",
    addr: INET(53),
    result: 30,
    syscall: "sendto",
  }, ctx);
  assert.equal(sendto?.detail.via, "sendto");
  const unspec = toSensorEvent(
    { pid: 9, op: "connect", addr: new Uint8Array([0, 0]), result: 0, syscall: "connect" },
    ctx,
  );
  assert.equal(unspec, null);
});

Deno.test("ProcessTable attributes a child's actions after fork and exec, and forgets at exit", () => {
  const ctx = context({ 10: { ppid: 1, exe: "/bin/bash", cmdline: ["bash", "-c", "x"] } });
  assert.equal(toSensorEvent({ pid: 11, op: "fork", ppid: 10 }, ctx), null);
  const forked = toSensorEvent({
    pid: 11,
    op: "unlink",
    path: "/w/f",
    result: 0,
    syscall: "unlink",
  }, ctx);
  assert.equal(forked?.exe, "/bin/bash");
  assert.equal(forked?.ppid, 10);
  const exec = toSensorEvent({
    pid: 11,
    op: "exec",
    path: "/usr/bin/cat",
    exe: "/usr/bin/cat",
    argv: ["cat", "/k"],
    result: 0,
    syscall: "execve",
  }, ctx);
  assert.equal(exec?.kind, "proc.exec");
  assert.equal(exec?.target, "cat /k");
  assert.deepEqual(exec?.cmdline, ["cat", "/k"]);
  const read = toSensorEvent({
    pid: 11,
    op: "open",
    path: "/k",
    flags: 0,
    result: 3,
    syscall: "openat",
  }, ctx);
  assert.equal(read?.exe, "/usr/bin/cat");
  const exit = toSensorEvent({ pid: 11, op: "exit", status: 2 << 8 }, ctx);
  assert.deepEqual(exit?.detail, { code: 2, signal: null });
  assert.equal(exit?.target, "cat /k");
  const killed = toSensorEvent({ pid: 10, op: "exit", status: 9 }, ctx);
  assert.deepEqual(killed?.detail, { code: null, signal: "SIGKILL" });
  // Only the root, which the table never saw start, was read from /proc.
  assert.deepEqual(ctx.inspected, [10]);
});

Deno.test("toSensorEvent() keeps a failed exec's program without changing the process", () => {
  const ctx = context({ 5: { ppid: 1, exe: "/bin/sh", cmdline: ["sh"] } });
  const failed = toSensorEvent(
    { pid: 5, op: "exec", path: "/opt/x", argv: [], result: -13, syscall: "execve" },
    ctx,
  );
  assert.equal(failed?.detail.result, "failed");
  assert.equal(failed?.exe, "/opt/x");
  assert.equal(ctx.table.get(5)?.exe, "/bin/sh");
});

Deno.test("toSensorEvent() journals renames, links and symlinks with their sources", () => {
  const ctx = context();
  const rename = toSensorEvent(
    { pid: 3, op: "rename", from: "/w/a", to: "/w/b", result: 0, syscall: "renameat2" },
    ctx,
  );
  assert.equal(rename?.kind, "file.rename");
  assert.equal(rename?.detail.from, "/w/a");
  const link = toSensorEvent(
    { pid: 3, op: "link", from: "/home/u/.ssh/id_rsa", to: "/w/k", result: 0, syscall: "linkat" },
    ctx,
  );
  assert.equal(link?.kind, "file.create");
  assert.equal(link?.detail.linkOf, "/home/u/.ssh/id_rsa");
  const symlink = toSensorEvent(
    { pid: 3, op: "symlink", from: "../x", to: "/w/l", result: 0, syscall: "symlink" },
    ctx,
  );
  assert.equal(symlink?.detail.symlinkTo, "../x");
  const tid = toSensorEvent({
    pid: 3,
    tid: 4,
    op: "unlink",
    path: "/w/b",
    result: 0,
    syscall: "unlink",
  }, ctx);
  assert.equal(tid?.detail.tid, 4);
});

Deno.test("toSensorEvent() journals a control aimed outside as proc.control, blocked on EPERM", () => {
  const ctx = context({ 20: { ppid: 19, exe: "/usr/bin/python3", cmdline: ["python3", "a.py"] } });
  const stop = toSensorEvent({
    pid: 20,
    op: "control",
    syscall: "kill",
    target: { scope: "process", pid: 19, comm: "sentry" },
    arg: 19,
    signal: "SIGSTOP",
    result: -1,
  }, ctx);
  assert.equal(stop?.kind, "proc.control");
  assert.equal(stop?.target, "pid 19 (sentry)");
  assert.equal(stop?.exe, "/usr/bin/python3");
  assert.deepEqual(stop?.detail, {
    syscall: "kill",
    signal: "SIGSTOP",
    target_pid: 19,
    result: "failed",
    errno: "EPERM",
    blocked: "EPERM",
  });
  const attach = toSensorEvent({
    pid: 20,
    tid: 21,
    op: "control",
    syscall: "ptrace",
    target: { scope: "process", pid: 30, tid: 31, comm: null },
    arg: 31,
    request: "PTRACE_SEIZE",
    result: 0,
  }, ctx);
  assert.equal(attach?.target, "pid 30");
  assert.deepEqual(attach?.detail, {
    syscall: "ptrace",
    request: "PTRACE_SEIZE",
    target_pid: 30,
    target_tid: 31,
    result: "ok",
    tid: 21,
  });
});

Deno.test("toSensorEvent() names group and every-process controls, pidfds and probes", () => {
  const ctx = context();
  const group = toSensorEvent({
    pid: 20,
    op: "control",
    syscall: "kill",
    target: {
      scope: "group",
      pgid: 7,
      outside: [{ pid: 7, comm: "bash" }, { pid: 8, comm: "bash" }, { pid: 9, comm: null }],
    },
    arg: -7,
    signal: "SIGTERM",
    result: 0,
  }, ctx);
  assert.equal(group?.target, "process group 7 (bash, 9)");
  assert.equal(group?.detail.target_pid, -7);
  assert.deepEqual(group?.detail.outside_pids, [7, 8, 9]);
  const all = toSensorEvent({
    pid: 20,
    op: "control",
    syscall: "kill",
    target: { scope: "all" },
    arg: -1,
    signal: "SIGKILL",
    result: 0,
  }, ctx);
  assert.equal(all?.target, "every process");
  assert.equal(all?.detail.target_pid, -1);
  const probe = toSensorEvent({
    pid: 20,
    op: "control",
    syscall: "pidfd_send_signal",
    target: { scope: "process", pid: 5, comm: "sentry" },
    pidfd: 3,
    signal: "0",
    result: 0,
  }, ctx);
  assert.deepEqual(probe?.detail, {
    syscall: "pidfd_send_signal",
    signal: "0",
    target_pid: 5,
    pidfd: 3,
    probe: true,
    result: "ok",
  });
});
