/**
 * The fanotify guard: block mode as root, for `run` and `attach`. The kernel holds each open,
 * exec (and optionally read) of a protected inode until Sentry answers; the answer is the pure
 * `evaluate()` of the same policy as the rest of the pipeline, so a denied read of a key returns
 * EPERM before a byte is read, and a denied open for writing fails before the file is truncated.
 *
 * What is marked: the literal prefix of each deny glob (files.read, files.write, rules that can
 * match reads, writes, creates or execs, processes.deny paths) and Sentry's own directories,
 * recursively (walked at start up to a bound, 10,000 directories by default; directories made
 * or moved in later are marked as they appear, through a second, notification group). Nothing
 * else on the host is marked, so other opens cost nothing. See {@link planGuardMarks}.
 *
 * Who is held: the session's processes only ({@link SessionPids}, shared with the Worker; also a
 * process whose ancestor is in it, or that is in the session's cgroup). Every other process's
 * event is allowed at once, without a decision and without an event.
 *
 * What it cannot do (said in its notices and stats):
 * - **Deletes and renames** (and link, truncate by path, chmod, mkdir): fanotify has no
 *   permission event for them. They can be seen, not stopped.
 * - **Creates**: the kernel asks after the file exists, so a denied `open(O_CREAT)` of a new name
 *   fails with EPERM but leaves an empty file behind; nothing is written into it.
 * - A hard link to a protected file made in an unmarked directory, and a bind mount of a
 *   protected directory, are decided on the path they are opened by.
 * - An exec is decided on the executed file (its path and name), never on its arguments: the
 *   kernel asks before execve copies them.
 * - Writes through a descriptor opened before the guard started (`attach`) are not held; with
 *   `accessPerm`, reads through one are.
 *
 * Threads and failure: every event is answered on the guard's own Worker (see
 * fanotify_guard_worker.ts), never on the main thread. A decision that throws is answered deny
 * for the session's processes (closed) and allow for others. If Sentry dies, the kernel closes
 * the group, drops every mark and allows every waiting open: **the gate fails open**. The agent
 * gets EPERM for a denied open (the only errno `FAN_DENY` gives outside pre-content groups).
 *
 * @module
 */

import { FanotifyPermError, WakeFd } from "../platform/fanotify_perm_linux.ts";
import type { CompiledPolicy } from "../policy/mod.ts";
import {
  guardGlobs,
  type GuardNotice,
  type GuardPlan,
  planGuardMarks,
  SessionPids,
} from "./fanotify_guard_plan.ts";
import {
  GUARD_COUNTER,
  GUARD_COUNTER_SLOTS,
  type GuardWorkerMessage,
  type GuardWorkerStart,
} from "./fanotify_guard_worker.ts";
import type { SensorEvent, SensorStats } from "./sensor.ts";

export {
  type GuardNotice,
  type GuardPlan,
  type GuardTarget,
  planGuardMarks,
  SessionPids,
} from "./fanotify_guard_plan.ts";

/** How {@link startFanotifyGuard} sets the guard up. */
export interface FanotifyGuardOptions {
  /** The session's compiled policy: its deny lists, rules and `guarded` directories. */
  policy: CompiledPolicy;
  /** The home directory the policy was compiled with (the Worker compiles it again). */
  home: string;
  /**
   * The session's processes. The session's tree tracker adds each process before it can run
   * where it can (a fork is reported before the child runs) and removes it when it exits.
   */
  session: SessionPids;
  /** Receives the decided events (blocked ones with `detail.blocked: "EPERM"`), after the answer. */
  emit: (event: SensorEvent) => void;
  /** Stops the guard: the group is closed, every mark goes, waiting opens are allowed. */
  signal: AbortSignal;
  /** The session's cgroup as /proc/PID/cgroup shows it (`/sentry/ID`): members are in the session. */
  cgroup?: string | null;
  /** Processes never in the session, and where an ancestry walk stops (Sentry's helpers). */
  excluded?: readonly number[];
  /** Directories marked at most (walk and new ones together). Default 10,000. */
  maxDirs?: number;
  /** Also hold reads through descriptors (`FAN_ACCESS_PERM`), for `attach`. Default false. */
  accessPerm?: boolean;
  /** Ask the kernel to audit each answer (`FAN_AUDIT`). Default false. */
  audit?: boolean;
  /** An answer slower than this (ms from read to answer) counts as late. Default 50. */
  lateMs?: number;
  /** The environment the policy was compiled with (for processes.deny paths). Default Deno.env. */
  env?: Readonly<Record<string, string>>;
  /** The Worker module (a compiled binary may need its own). */
  workerUrl?: URL;
  /** Mark Sentry's own directories only (`policy.guarded`), not the policy's deny lists. */
  sentryOnly?: boolean;
  /**
   * Files the guard must never hold: Sentry's own SQLite files (the journal and its -wal and
   * -shm). A permission event's fd is opened in Sentry's process, and closing it would drop
   * SQLite's POSIX locks there: other processes then delete the WAL under the live journal.
   */
  unheld?: readonly string[];
}

/** The guard's exact counters (see `GUARD_COUNTER` in fanotify_guard_worker.ts). */
export type GuardCounters = Record<keyof typeof GUARD_COUNTER, number>;

/** A running guard. */
export interface FanotifyGuard {
  /** What it marked, and the globs it could not. */
  readonly plan: GuardPlan;
  /** What the lead should print: what cannot be enforced here, and how it is enforced. */
  readonly notices: GuardNotice[];
  /** Its counters as sensor stats: answered, denied, late answers, and what it could not see. */
  stats(): SensorStats;
  /** Its raw counters. */
  counters(): GuardCounters;
  /** Resolves once the guard has stopped: group closed, Worker gone, last events emitted. */
  readonly done: Promise<void>;
}

/** A session pid set sized for this host (`/proc/sys/kernel/pid_max`). */
export function hostSessionPids(): SessionPids {
  let max = 4_194_304;
  try {
    max = Number(Deno.readTextFileSync("/proc/sys/kernel/pid_max").trim()) || max;
  } catch {
    // Not Linux, or no /proc: the largest pid_max Linux allows.
  }
  return new SessionPids(max);
}

/**
 * Plans the marks for the policy, starts the Worker that places them and answers the kernel,
 * and resolves once every mark is placed. Throws {@link FanotifyPermError} when the kernel
 * refuses the permission group (not root, or no permission events in this kernel): the lead
 * then falls back to the next response and says so. With nothing to mark it starts no Worker
 * and says so in its notices.
 */
export async function startFanotifyGuard(options: FanotifyGuardOptions): Promise<FanotifyGuard> {
  const { policy, home } = options;
  const all = guardGlobs(policy, {
    home,
    workspace: policy.workspace,
    env: options.env ?? Deno.env.toObject(),
  });
  // Sentry's own directories only: what `attach` guards in modes that block nothing.
  const globs = options.sentryOnly === true
    ? { globs: all.globs.filter((g) => g.label === "guard.sentry_home"), notices: [] }
    : all;
  const plan = planGuardMarks(globs.globs, { home });
  const notices: GuardNotice[] = [...globs.notices, ...plan.notices];
  notices.push({
    type: "info",
    message: "fanotify guard: deletes, renames and links cannot be stopped by fanotify " +
      "permission events (only opens, execs and reads are held), and a denied create leaves " +
      "an empty file",
  });
  const counterBuffer = new SharedArrayBuffer(GUARD_COUNTER_SLOTS * 8);
  const counters = new Float64Array(counterBuffer);
  const maxDirs = options.maxDirs ?? 10_000;
  let emitted = 0;
  let watching = true;
  let failure: string | null = null;
  const stats = (): SensorStats => guardStats({ counters, emitted, watching, failure, maxDirs });
  const read = (): GuardCounters =>
    Object.fromEntries(
      Object.entries(GUARD_COUNTER).map(([name, slot]) => [name, counters[slot] ?? 0]),
    ) as GuardCounters;
  if (plan.targets.length === 0) {
    notices.push({ type: "info", message: "fanotify guard: the policy names nothing to mark" });
    return { plan, notices, stats, counters: read, done: Promise.resolve() };
  }

  const wake = new WakeFd();
  const worker = new Worker(
    options.workerUrl ?? new URL("./fanotify_guard_worker.ts", import.meta.url),
    { type: "module" },
  );
  const ready = Promise.withResolvers<void>();
  const ended = Promise.withResolvers<void>();
  worker.onmessage = (event: MessageEvent<GuardWorkerMessage>) => {
    const message = event.data;
    switch (message.type) {
      case "ready":
        watching = message.watching;
        for (const f of message.failures) {
          notices.push({
            type: "warn",
            message:
              `fanotify guard: cannot mark "${f.path}": ${f.errno}: opens there are not held`,
          });
        }
        ready.resolve();
        return;
      case "events":
        for (const record of message.records) {
          record.event.ts = new Date(record.ms).toISOString();
          emitted++;
          options.emit(record.event);
        }
        return;
      case "done":
        ended.resolve();
        return;
      case "error":
        failure = message.message;
        ready.reject(new FanotifyPermError(message.message, 0));
        ended.resolve();
        return;
    }
  };
  worker.onerror = (event: ErrorEvent) => {
    event.preventDefault();
    failure = event.message;
    ready.reject(new FanotifyPermError(`the guard's worker failed: ${event.message}`, 0));
    ended.resolve();
  };
  const start: GuardWorkerStart = {
    policy: {
      resolved: policy.policy,
      workspace: policy.workspace,
      home,
      guarded: [...policy.guarded],
    },
    targets: plan.targets,
    session: options.session.buffer,
    counters: counterBuffer,
    wakeFd: wake.fd,
    cgroup: options.cgroup ?? null,
    excluded: [Deno.pid, ...(options.excluded ?? [])],
    maxDirs,
    accessPerm: options.accessPerm ?? false,
    audit: options.audit ?? false,
    lateMs: options.lateMs ?? 50,
    arch: Deno.build.arch,
    unheld: [...(options.unheld ?? [])],
  };
  worker.postMessage(start);

  const stop = async () => {
    wake.wake();
    // The loop ends at its next poll; a worker that never answers is given up after 5 s (the
    // thread is then terminated, which closes nothing: the group fd is closed at exit).
    const timer = Promise.withResolvers<void>();
    const id = setTimeout(timer.resolve, 5_000);
    await Promise.race([ended.promise, timer.promise]);
    clearTimeout(id);
    worker.terminate();
    wake.close();
  };
  try {
    await ready.promise;
  } catch (error) {
    await stop();
    throw error;
  }
  const c = read();
  if (c.dirsUnmarked > 0) {
    notices.push({
      type: "warn",
      message: `fanotify guard: ${c.dirsUnmarked} directories beneath the protected paths were ` +
        `not marked (bound of ${maxDirs}): opens in them are not held`,
    });
  }
  if (!watching) {
    notices.push({
      type: "warn",
      message: "fanotify guard: directories made after start cannot be watched here " +
        "(no FAN_REPORT_DFID_NAME): opens in them are not held",
    });
  }
  notices.push({
    type: "info",
    message: `fanotify guard: ${c.dirsMarked} directories and ${c.filesMarked} files marked ` +
      `for ${plan.targets.length} paths; a denied open fails with EPERM; if Sentry dies, ` +
      "the kernel allows every open (fails open)",
  });
  const done = (async () => {
    await new Promise<void>((resolve) => {
      if (options.signal.aborted) resolve();
      else options.signal.addEventListener("abort", () => resolve(), { once: true });
    });
    await stop();
  })();
  return { plan, notices, stats, counters: read, done };
}

const BLIND_SPOTS: readonly [keyof typeof GUARD_COUNTER, string, string][] = [
  [
    "dirsUnmarked",
    "dirs_unmarked",
    "directories beneath protected paths left unmarked past the bound: opens there are not held",
  ],
  ["markFailed", "mark_failed", "marks the kernel refused: opens there are not held"],
  [
    "watchFailed",
    "watch_failed",
    "directories not watched for new subdirectories: a subdirectory made there later is not held",
  ],
  [
    "flagsUnknown",
    "flags_unknown",
    "opens whose flags could not be read (not an open syscall, or /proc refused): decided as " +
    "a read and as a write",
  ],
  ["openerGone", "opener_gone", "events whose opener was gone before it could be read"],
  [
    "decisionErrors",
    "decision_errors",
    "decisions that failed: answered deny for the session, allow for others",
  ],
  ["late", "late_answers", "answers slower than the late threshold (an opener waited)"],
  ["overflows", "queue_overflow", "queue overflows (the marks were placed again)"],
  ["unresolved", "unresolved_paths", "event fds whose path could not be read"],
];

function guardStats(state: {
  counters: Float64Array;
  emitted: number;
  watching: boolean;
  failure: string | null;
  maxDirs: number;
}): SensorStats {
  const at = (name: keyof typeof GUARD_COUNTER) => state.counters[GUARD_COUNTER[name]] ?? 0;
  const stats: SensorStats = {
    sensor: "fanotify_guard",
    emitted: state.emitted,
    dropped: 0,
    deduplicated: 0,
    lagMs: Math.round(at("p99us") / 1000),
    polls: at("polls"),
    blindSpots: [],
  };
  stats.blindSpots.push({
    id: "deletes_renames",
    reason: "deletes, renames, links and truncates by path: fanotify permission events cannot " +
      "stop them",
    count: 0,
  });
  for (const [name, id, reason] of BLIND_SPOTS) {
    const count = at(name);
    if (count > 0) stats.blindSpots.push({ id, reason, count });
  }
  if (state.failure !== null) {
    stats.blindSpots.push({
      id: "guard_failed",
      reason: `the guard stopped: ${state.failure}; every open is allowed from then on`,
      count: 1,
    });
  }
  return stats;
}
