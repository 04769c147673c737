import assert from "node:assert/strict";
import { decodeControl } from "../platform/seccomp_notif.ts";
import { SYSCALL_NR } from "../platform/seccomp_filter.ts";
import {
  classifyControl,
  controlDetail,
  inTree,
  parseTaskInfo,
  type TaskInfo,
  type TaskView,
  type TreeIdentity,
} from "./seccomp_guard.ts";

/**
 * A made-up process table: Sentry (100, no filter) runs the watchdog (101, no filter) and the
 * agent's root (200, 1 filter); the root forked 201, whose orphan 300 Sentry adopted; 400 is an
 * unrelated program with filters of its own under init; 500 ran away to init after a call.
 */
const TASKS: Record<number, TaskInfo & { pgrp: number }> = {
  1: { tgid: 1, ppid: 0, filters: 0, start: 1, comm: "init", pgrp: 1 },
  100: { tgid: 100, ppid: 1, filters: 0, start: 10, comm: "sentry", pgrp: 100 },
  101: { tgid: 101, ppid: 100, filters: 0, start: 11, comm: "sentry", pgrp: 100 },
  200: { tgid: 200, ppid: 100, filters: 1, start: 20, comm: "python3", pgrp: 200 },
  201: { tgid: 201, ppid: 200, filters: 1, start: 21, comm: "sh", pgrp: 200 },
  202: { tgid: 201, ppid: 200, filters: 1, start: 21, comm: "sh", pgrp: 200 },
  300: { tgid: 300, ppid: 100, filters: 1, start: 30, comm: "daemon", pgrp: 300 },
  400: { tgid: 400, ppid: 1, filters: 3, start: 40, comm: "chrome", pgrp: 400 },
  500: { tgid: 500, ppid: 1, filters: 1, start: 50, comm: "runaway", pgrp: 200 },
  600: { tgid: 600, ppid: 1, filters: 1, start: 60, comm: "stranger", pgrp: 600 },
};

const view: TaskView = {
  task: (id) => TASKS[id] ?? null,
  group: (
    pgid,
  ) => [...new Set(Object.values(TASKS).filter((t) => t.pgrp === pgid).map((t) => t.tgid))],
};

const tree: TreeIdentity = {
  root: { pid: 200, start: 20 },
  filters: 1,
  sentry: 100,
  known: (pid) => pid === 500,
};

const self = { pid: 201, ppid: 200, pgrp: 200 };

function call(name: string, args: bigint[]) {
  const decoded = decodeControl({
    id: 1n,
    pid: 201,
    flags: 0,
    nr: SYSCALL_NR[name] ?? -1,
    arch: 0xc000003e,
    ip: 0n,
    args,
  });
  assert.ok(decoded, name);
  return decoded;
}

Deno.test("inTree() tells the agent's tree from Sentry, its watchdog and other programs", () => {
  const inside = (pid: number) => inTree(pid, { view, tree });
  assert.equal(inside(200), true, "the root");
  assert.equal(inside(201), true, "a child of the root");
  assert.equal(inside(300), true, "an orphan Sentry adopted, under the filter");
  assert.equal(inside(500), true, "a runaway the supervisor has answered for");
  assert.equal(inside(100), false, "Sentry");
  assert.equal(inside(101), false, "the watchdog: no filter");
  assert.equal(inside(400), false, "filters of its own, but not the tree's");
  assert.equal(inside(600), false, "a filtered process never seen, under init");
  assert.equal(inside(999), false, "gone");
  // A reused root pid (another start time) is not the root.
  assert.equal(inTree(201, { view, tree: { ...tree, root: { pid: 200, start: 99 } } }), false);
});

Deno.test("classifyControl() refuses signals, traces and memory calls aimed outside the tree", () => {
  const classify = (c: ReturnType<typeof call>, pidfdTarget: number | null = null) =>
    classifyControl(c, { view, tree, self, pidfdTarget });
  assert.deepEqual(classify(call("kill", [100n, 19n])), {
    inside: false,
    pid: 100,
    target: "pid 100 (sentry)",
  });
  assert.deepEqual(classify(call("kill", [201n, 9n])), { inside: true });
  assert.deepEqual(
    classify(call("kill", [100n, 0n])),
    { inside: true },
    "signal 0 delivers nothing",
  );
  assert.equal(classify(call("kill", [BigInt.asUintN(64, -1n), 18n])).inside, false);
  assert.deepEqual(classify(call("kill", [BigInt.asUintN(64, -1n), 18n])), {
    inside: false,
    pid: null,
    target: "every process (-1)",
  });
  // A group with an outside member (500 is known, so inside; 200's group has only the tree).
  assert.deepEqual(classify(call("kill", [BigInt.asUintN(64, -200n), 15n])), { inside: true });
  assert.deepEqual(classify(call("kill", [BigInt.asUintN(64, -100n), 15n])), {
    inside: false,
    pid: 100,
    target: "process group 100 with pid 100 (sentry)",
  });
  assert.deepEqual(classify(call("kill", [0n, 15n])), { inside: true }, "own group: the tree");
  assert.equal(classify(call("tgkill", [101n, 101n, 9n])).inside, false);
  assert.equal(classify(call("tkill", [202n, 9n])).inside, true, "a thread of the tree");
  assert.equal(classify(call("ptrace", [16n, 100n, 0n, 0n])).inside, false);
  assert.equal(classify(call("process_vm_writev", [400n, 0n, 1n, 0n, 1n, 0n])).inside, false);
  assert.equal(classify(call("pidfd_send_signal", [5n, 9n, 0n, 0n]), 100).inside, false);
  assert.equal(classify(call("pidfd_getfd", [5n, 3n, 0n]), 201).inside, true);
  // PTRACE_TRACEME makes the parent the tracer: the root's parent is Sentry.
  assert.equal(
    classifyControl(call("ptrace", [0n, 0n, 0n, 0n]), {
      view,
      tree,
      self: { pid: 200, ppid: 100, pgrp: 200 },
    }).inside,
    false,
  );
});

Deno.test("decodeControl() reads targets, signals and ptrace requests from registers only", () => {
  assert.deepEqual(call("kill", [BigInt.asUintN(64, -42n), 19n]), {
    syscall: "kill",
    target: { kind: "group", pgid: 42 },
    signal: 19,
  });
  // The upper half of a pid_t register is not the kernel's: ignored as the kernel does.
  assert.deepEqual(call("kill", [(1n << 40n) | 7n, 9n]).target, { kind: "task", id: 7 });
  assert.deepEqual(call("rt_tgsigqueueinfo", [7n, 8n, 10n, 0n]), {
    syscall: "rt_tgsigqueueinfo",
    target: { kind: "task", id: 8 },
    signal: 10,
  });
  assert.equal(call("ptrace", [0x4206n, 5n, 0n, 0n]).request, "PTRACE_SEIZE");
  assert.deepEqual(call("ptrace", [0n, 0n, 0n, 0n]).target, { kind: "parent" });
  assert.equal(
    decodeControl({ id: 1n, pid: 1, flags: 0, nr: 2, arch: 0, ip: 0n, args: [] }),
    null,
    "open is not a control call",
  );
});

Deno.test("controlDetail() names the syscall, the signal or request, the target and the errno", () => {
  assert.deepEqual(controlDetail(call("kill", [100n, 19n]), { targetPid: 100, blocked: "EPERM" }), {
    syscall: "kill",
    signal: "SIGSTOP",
    target_pid: 100,
    blocked: "EPERM",
  });
  assert.deepEqual(
    controlDetail(call("ptrace", [16n, 100n, 0n, 0n]), { targetPid: 100, blocked: "EPERM" }),
    { syscall: "ptrace", request: "PTRACE_ATTACH", target_pid: 100, blocked: "EPERM" },
  );
});

Deno.test("parseTaskInfo() reads a captured /proc status and stat", () => {
  const status = "Name:\tsleep\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t4242\nNgid:\t0\n" +
    "Pid:\t4243\nPPid:\t4000\nTracerPid:\t0\nSeccomp:\t2\nSeccomp_filters:\t2\n";
  const stat = "4243 (a) b) c) S 4000 4100 4000 0 -1 4194560 100 0 0 0 1 2 0 0 20 0 1 0 " +
    "987654 1000 200 18446744073709551615";
  assert.deepEqual(parseTaskInfo(status, stat), {
    tgid: 4242,
    ppid: 4000,
    filters: 2,
    start: 987654,
    comm: "sleep",
    pgrp: 4100,
  });
  assert.equal(parseTaskInfo("Name:\tx\n", stat), null);
  // No Seccomp_filters line: a kernel without seccomp, so no filter.
  assert.equal(parseTaskInfo("Name:\tx\nTgid:\t1\nPPid:\t0\n", stat)?.filters, 0);
});
