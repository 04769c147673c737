/**
 * Sentry's guard on the seccomp tier: whether a signal, ptrace or cross-process memory call of
 * the agent aims inside its own tree, and the journal's words for one that does not. Pure: the
 * worker injects what /proc says about each task ({@link TaskView}), so that the decision is
 * tested on made-up process tables.
 *
 * Who is in the tree: every process under the session's seccomp filter, which the launcher
 * installed and every descendant inherits (no process can shed a filter). /proc shows how many
 * filters a task has, not which, so a task is inside only when
 * - it has at least as many filters as the agent's root had when the session started (fewer:
 *   it cannot be under this filter; Sentry and its watchdog have none), and
 * - its parent chain reaches the root (the very process: same start time), a process the
 *   supervisor has already answered for (it made a watched call, so it is under the filter), or
 *   Sentry itself through a child that carries the filter (an orphan of the tree, which Sentry
 *   adopts as the session's subreaper).
 * Anything else is outside, including a process that ran away from the tree before it made a
 * single watched call and was adopted by another subreaper or by init: a false "outside" fails
 * a signal with EPERM and journals it, it never lets a signal reach Sentry.
 *
 * A process group counts as outside when any member is; `kill(-1)` always does.
 *
 * @module
 */

import type { ControlCall } from "../platform/seccomp_notif.ts";
import { signalName } from "../platform/kernel_abi.ts";

/** What /proc says of one task (a process, or a thread by its id). */
export interface TaskInfo {
  /** Its thread group (process) id. */
  tgid: number;
  /** The parent process. */
  ppid: number;
  /** How many seccomp filters it runs under (`Seccomp_filters:` in /proc/PID/status). */
  filters: number;
  /** Its start time (clock ticks after boot): with the pid, one process for the boot. */
  start: number;
  /** Its command name (`comm`). */
  comm: string;
}

/** Reads what the guard needs from the live system; injected for tests. */
export interface TaskView {
  /** What /proc says of a task, or null when there is none (it exited). */
  task(id: number): TaskInfo | null;
  /** The processes (thread group ids) of a process group, as listed now. */
  group(pgid: number): number[];
}

/** The session's tree, as the guard knows it. */
export interface TreeIdentity {
  /** The agent's root process (the launcher's pid) and its start time. */
  root: { pid: number; start: number };
  /** How many seccomp filters the root ran under once the launcher installed Sentry's. */
  filters: number;
  /** Sentry's own pid (the supervisor). */
  sentry: number;
  /** Whether a process is one the supervisor has already answered for (alive, same process). */
  known(pid: number): boolean;
}

/** Where a call aims, classified. */
export type TargetClass =
  /** At the agent's own tree (or at nothing that exists): the kernel decides as usual. */
  | { inside: true }
  /** Outside the tree: the call fails with EPERM and is journaled. */
  | { inside: false; pid: number | null; target: string };

const MAX_DEPTH = 512;

/** Whether one process (by thread group id) is in the session's tree. */
export function inTree(pid: number, options: { view: TaskView; tree: TreeIdentity }): boolean {
  const { view, tree } = options;
  if (pid === tree.sentry) return false;
  let info = view.task(pid);
  if (info === null) return false;
  if (info.filters < tree.filters) return false;
  let at = info.tgid;
  for (let depth = 0; depth < MAX_DEPTH; depth++) {
    if (at === tree.root.pid) return info.start === tree.root.start;
    if (tree.known(at)) return true;
    // A child of Sentry under the filter: the root (checked above) or an orphan Sentry adopted.
    if (info.ppid === tree.sentry) return info.filters >= tree.filters;
    if (info.ppid <= 0 || info.ppid === at) return false;
    const parent = view.task(info.ppid);
    if (parent === null) return false;
    at = parent.tgid;
    info = parent;
  }
  return false;
}

/**
 * Classifies what a decoded call aims at. `pidfdTarget` is the pid a pidfd argument names
 * (the worker reads it from the caller's fdinfo), `self` the caller's own process and process
 * group. Signal 0 only checks that a process exists: it delivers nothing and is never refused.
 */
export function classifyControl(
  call: ControlCall,
  options: {
    view: TaskView;
    tree: TreeIdentity;
    self: { pid: number; ppid: number | null; pgrp: number | null };
    pidfdTarget?: number | null;
  },
): TargetClass {
  const { view } = options;
  if (call.signal === 0) return { inside: true };
  const one = (id: number | null | undefined): TargetClass => {
    if (id === null || id === undefined || id <= 0) return { inside: true };
    const info = view.task(id);
    // Nothing there: the kernel fails the call with ESRCH itself.
    if (info === null) return { inside: true };
    if (inTree(info.tgid, options)) return { inside: true };
    return { inside: false, pid: info.tgid, target: describe(info.tgid, info.comm) };
  };
  const { target } = call;
  switch (target.kind) {
    case "task":
      return one(target.id);
    case "pidfd":
      return one(options.pidfdTarget);
    case "parent":
      return one(options.self.ppid);
    case "all":
      return { inside: false, pid: null, target: "every process (-1)" };
    case "own_group":
    case "group": {
      const pgid = target.kind === "group" ? target.pgid : options.self.pgrp;
      if (pgid === null || pgid <= 0) return { inside: true };
      for (const member of view.group(pgid)) {
        if (member === options.self.pid) continue;
        const info = view.task(member);
        if (info === null || inTree(info.tgid, options)) continue;
        return {
          inside: false,
          pid: info.tgid,
          target: `process group ${pgid} with ${describe(info.tgid, info.comm)}`,
        };
      }
      return { inside: true };
    }
  }
}

/** `pid 1234 (sentry)`: how the journal names a target process. */
export function describe(pid: number, comm: string | null): string {
  return comm === null || comm === "" ? `pid ${pid}` : `pid ${pid} (${comm})`;
}

/** The detail of a refused call's `proc.control` event. */
export function controlDetail(
  call: ControlCall,
  options: { targetPid: number | null; blocked: string },
): Record<string, unknown> {
  return {
    syscall: call.syscall,
    ...(call.signal === undefined ? {} : { signal: signalName(call.signal) }),
    ...(call.request === undefined ? {} : { request: call.request }),
    target_pid: options.targetPid,
    blocked: options.blocked,
  };
}

/**
 * Parses `/proc/PID/status` and the start time and process group of `/proc/PID/stat` into a
 * {@link TaskInfo}, or null when a field is missing. Pure.
 */
export function parseTaskInfo(status: string, stat: string): (TaskInfo & { pgrp: number }) | null {
  const field = (name: string) => {
    const at = status.indexOf(`\n${name}:`);
    const start = at < 0 ? (status.startsWith(`${name}:`) ? 0 : -1) : at + 1;
    if (start < 0) return null;
    const end = status.indexOf("\n", start);
    return status.slice(start + name.length + 1, end < 0 ? undefined : end).trim();
  };
  const tgid = Number(field("Tgid"));
  const ppid = Number(field("PPid"));
  // No Seccomp_filters line (a kernel without seccomp): no filter.
  const filters = Number(field("Seccomp_filters") ?? "0");
  const comm = field("Name") ?? "";
  const close = stat.lastIndexOf(")");
  if (close < 0) return null;
  // After the comm: state ppid pgrp session tty tpgid flags minflt cminflt majflt cmajflt utime
  // stime cutime cstime priority nice num_threads itrealvalue starttime.
  const rest = stat.slice(close + 2).split(" ");
  const pgrp = Number(rest[2]);
  const start = Number(rest[19]);
  if (![tgid, ppid, filters, pgrp, start].every(Number.isInteger) || tgid <= 0) return null;
  return { tgid, ppid, filters, start, comm, pgrp };
}
