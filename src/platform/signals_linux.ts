/**
 * Pausing, resuming and killing a set of processes (an agent's tree) with signals, and checking
 * in /proc that each signal took effect.
 *
 * Every function takes {@link ProcessRef}s (pid and start time), never bare pids, and signals
 * through a {@link ProcessHandle}: a pid that was reused by another process since it was listed
 * is never signalled (it counts as gone), even across a kill's grace period.
 *
 * The caller lists the tree (see `listChildren` in proc_linux.ts) and passes the processes,
 * parents first: stopping a parent before its children keeps it from forking more children or
 * reacting to theirs. A process forked after the list was taken is not covered, unless
 * `groups` is set and it stayed in its parent's process group (see {@link GroupOptions}); list
 * again after a stop and stop the newcomers.
 *
 * @module
 */

import { ProcessHandle, type ProcessRef } from "./pidfd_linux.ts";
import { type FailureReason, failureReason, readStat } from "./proc_linux.ts";

/** A pid a signal did not work on, and why. */
export interface SignalFailure {
  /** The process id. */
  pid: number;
  /**
   * gone: it had exited (only {@link signalAll} reports this; the tree helpers count it as done);
   * denied: no permission, or Sentry refused (pid 1, itself); timeout: the signal was sent but
   * the process did not reach the expected state in time; error: anything else.
   */
  reason: FailureReason | "timeout";
  /** Detail for logs. */
  message: string;
}

/** The result of {@link signalAll}. */
export interface SignalAllResult {
  /** Pids the kernel accepted the signal for. */
  signalled: number[];
  /** Pids it could not be sent to. */
  failed: SignalFailure[];
}

/**
 * Handles opened for one operation, and the refs that could not be opened. Refuses pid 1 and
 * Sentry's own pid (as "denied") so that a bug in tree listing cannot pause the machine or
 * Sentry itself.
 */
class HandleSet {
  readonly handles: ProcessHandle[] = [];
  readonly failed: SignalFailure[] = [];

  constructor(refs: readonly ProcessRef[], signal: Deno.Signal) {
    for (const ref of refs) {
      const { pid } = ref;
      if (!Number.isInteger(pid) || pid < 1) {
        this.close();
        throw new RangeError(`Cannot signal pid "${pid}": expected a positive integer`);
      }
      if (pid === 1 || pid === Deno.pid) {
        const message = `Refusing to send ${signal} to pid ${pid}: it is ${
          pid === 1 ? "init" : "Sentry itself"
        }`;
        this.failed.push({ pid, reason: "denied", message });
        continue;
      }
      const handle = ProcessHandle.open(ref);
      if (handle instanceof ProcessHandle) this.handles.push(handle);
      else this.failed.push({ pid, ...handle });
    }
  }

  /** Sends a signal through every handle in `handles`; returns the pids reached and failures. */
  send(handles: readonly ProcessHandle[], signal: Deno.Signal): SignalAllResult {
    const result: SignalAllResult = { signalled: [], failed: [] };
    for (const handle of handles) {
      const failure = handle.signal(signal);
      if (failure === null) result.signalled.push(handle.ref.pid);
      else result.failed.push({ pid: handle.ref.pid, ...failure });
    }
    return result;
  }

  /** The handle of a pid. */
  get(pid: number): ProcessHandle | undefined {
    return this.handles.find((h) => h.ref.pid === pid);
  }

  close(): void {
    for (const handle of this.handles) handle.close();
  }
}

/**
 * Sends one signal to each process and reports which got it. A pid that is gone, or that names
 * another process than its ref (reused), is reported as "gone" and not signalled. Refuses pid 1
 * and Sentry's own pid (as "denied").
 *
 * @throws {RangeError} for a pid below 1 or not an integer: `kill(0)` and `kill(-1)` would signal
 * a whole process group or every process.
 */
export function signalAll(refs: readonly ProcessRef[], signal: Deno.Signal): SignalAllResult {
  const set = new HandleSet(refs, signal);
  try {
    const sent = set.send(set.handles, signal);
    return { signalled: sent.signalled, failed: [...set.failed, ...sent.failed] };
  } finally {
    set.close();
  }
}

/** Options that let a tree operation signal whole process groups. */
export interface GroupOptions {
  /**
   * Also signal every process group whose session is led by one of the processes (an agent that
   * `sentry run` started leads its own session): the kernel signals a group at once, and a fork
   * racing with a group signal gives the child the signal too, so no process of the group can
   * slip between the list and the signal. Groups of sessions led from outside the list (a
   * terminal's) are never signalled: they may hold processes that are not the agent's.
   */
  groups?: boolean;
  /**
   * Sessions known to be the agent's even when their leader is not among the processes: `sentry
   * run` starts the agent in a session of its own, whose id (the root's pid) stays reserved for
   * as long as any process is in it.
   */
  sessions?: readonly number[];
}

/** The process groups that {@link GroupOptions.groups} may signal for these handles. */
function ownGroups(handles: readonly ProcessHandle[], options: GroupOptions): number[] {
  if (options.groups !== true) return [];
  const leaders = new Set([
    ...handles.filter((h) => h.stat.session === h.ref.pid).map((h) => h.ref.pid),
    ...options.sessions ?? [],
  ]);
  const own = readStat(Deno.pid);
  const groups = new Set<number>();
  for (const h of handles) {
    const { pgrp, session } = h.stat;
    if (!leaders.has(session) || pgrp <= 1) continue;
    if (own !== null && (pgrp === own.pgrp || session === own.session)) continue;
    groups.add(pgrp);
  }
  return [...groups];
}

/**
 * Signals process groups, each only while one of `members` still names a live process in it:
 * a group exists as long as one member does, so its number cannot have been reused.
 */
function signalGroups(
  groups: readonly number[],
  members: readonly ProcessHandle[],
  signal: Deno.Signal,
): void {
  for (const pgrp of groups) {
    const alive = members.some((h) => {
      if (h.stat.pgrp !== pgrp) return false;
      const now = readStat(h.ref.pid);
      return now !== null && now.starttime === h.ref.start && now.pgrp === pgrp &&
        now.state !== "Z";
    });
    if (!alive) continue;
    try {
      Deno.kill(-pgrp, signal);
    } catch {
      // The group emptied meanwhile.
    }
  }
}

/**
 * Returns the state letter of a process from /proc/PID/stat (R, S, D, Z, T, t, X, I), or `null`
 * when it is gone. This is the main thread's state; see {@link isAlive} for the whole process.
 */
export function processState(pid: number): string | null {
  return readStat(pid)?.state ?? null;
}

/** The states of every thread of a process, or `null` when it is gone. */
function threadStates(pid: number): string[] | null {
  let tids: string[];
  try {
    tids = [...Deno.readDirSync(`/proc/${pid}/task`)].map((entry) => entry.name);
  } catch (error: unknown) {
    if (failureReason(error) === "error") throw error;
    return null;
  }
  const states: string[] = [];
  for (const tid of tids) {
    try {
      const text = Deno.readTextFileSync(`/proc/${pid}/task/${tid}/stat`);
      const state = text.slice(text.lastIndexOf(")") + 2, text.lastIndexOf(")") + 3);
      states.push(state);
    } catch (error: unknown) {
      // A thread exited between the listing and the read.
      if (failureReason(error) === "error") throw error;
    }
  }
  return states;
}

const isDeadState = (state: string): boolean => state === "Z" || state === "X";
const isStoppedState = (state: string): boolean => state === "T" || state === "t";

/**
 * Whether a process exists and is not a zombie. A zombie main thread whose other threads still
 * run (the leader called pthread_exit) counts as alive.
 */
export function isAlive(pid: number): boolean {
  const state = processState(pid);
  if (state === null) return false;
  if (!isDeadState(state)) return true;
  return (threadStates(pid) ?? []).some((s) => !isDeadState(s));
}

/** Where a process stands after a stop or resume: all threads in the wanted state, gone, or not yet. */
function settled(ref: ProcessRef, want: "stopped" | "running"): "done" | "gone" | "pending" {
  if (readStat(ref.pid)?.starttime !== ref.start) return "gone";
  const states = threadStates(ref.pid);
  if (states === null) return "gone";
  const live = states.filter((s) => !isDeadState(s));
  if (live.length === 0) return "gone";
  const ok = want === "stopped" ? live.every(isStoppedState) : !live.some(isStoppedState);
  return ok ? "done" : "pending";
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

const POLL_MS = 5;

/** Options for {@link stopTree} and {@link resumeTree}. */
export interface StopOptions extends GroupOptions {
  /** How long to wait for every process to reach the state, in ms; default 1000. */
  timeoutMs?: number;
}

/** What {@link signalAndVerify} found; the public results rename `done`. */
interface TreeSignalResult {
  /** Pids verified in /proc: every thread stopped (for a stop) or none stopped (for a resume). */
  done: number[];
  /** Pids that had exited or become zombies; nothing left to do. */
  gone: number[];
  /** Pids that could not be signalled or did not reach the state in time. */
  failed: SignalFailure[];
}

/** The result of {@link stopTree}; each list keeps the order of the pids passed in. */
export interface StopResult {
  /** Pids whose every thread is verified stopped ('T', or 't' under a tracer). */
  stopped: number[];
  /** Pids that had exited or become zombies. */
  gone: number[];
  /** Pids that could not be signalled or did not stop in time (a thread stuck in 'D', say). */
  failed: SignalFailure[];
}

/** The result of {@link resumeTree}; each list keeps the order of the pids passed in. */
export interface ResumeResult {
  /** Pids verified to have no thread left in 'T' or 't'. */
  resumed: number[];
  /** Pids that had exited or become zombies. */
  gone: number[];
  /** Pids that could not be signalled or stayed stopped (a 't' tracing stop ignores SIGCONT). */
  failed: SignalFailure[];
}

async function signalAndVerify(
  refs: readonly ProcessRef[],
  signal: "SIGSTOP" | "SIGCONT",
  options: StopOptions,
): Promise<TreeSignalResult> {
  const want = signal === "SIGSTOP" ? "stopped" : "running";
  const timeoutMs = options.timeoutMs ?? 1000;
  const set = new HandleSet(refs, signal);
  const result: TreeSignalResult = { done: [], gone: [], failed: [] };
  try {
    for (const failure of set.failed) {
      if (failure.reason === "gone") result.gone.push(failure.pid);
      else result.failed.push(failure);
    }
    const groups = ownGroups(set.handles, options);
    // The groups first: they reach every member at once, including ones forked meanwhile.
    signalGroups(groups, set.handles, signal);
    const sent = set.send(set.handles, signal);
    for (const failure of sent.failed) {
      if (failure.reason === "gone") result.gone.push(failure.pid);
      else result.failed.push(failure);
    }
    let pending = set.handles.filter((h) => sent.signalled.includes(h.ref.pid));
    const deadline = Date.now() + timeoutMs;
    for (;;) {
      const next: ProcessHandle[] = [];
      for (const handle of pending) {
        const state = settled(handle.ref, want);
        if (state === "done") result.done.push(handle.ref.pid);
        else if (state === "gone") result.gone.push(handle.ref.pid);
        else next.push(handle);
      }
      pending = next;
      if (pending.length === 0 || Date.now() >= deadline) break;
      await sleep(POLL_MS);
      // Send again: a process may have been continued (or stopped) by someone else meanwhile.
      signalGroups(groups, pending, signal);
      for (const failure of set.send(pending, signal).failed) {
        if (failure.reason !== "gone") {
          result.failed.push(failure);
          pending = pending.filter((h) => h.ref.pid !== failure.pid);
        }
      }
    }
    // Report in the caller's order, not the order processes happened to settle in.
    const order = new Map(refs.map((ref, index) => [ref.pid, index]));
    const byOrder = (a: number, b: number) => (order.get(a) ?? 0) - (order.get(b) ?? 0);
    result.done.sort(byOrder);
    result.gone.sort(byOrder);
    for (const { ref: { pid } } of pending) {
      const states = threadStates(pid)?.join("") ?? "";
      result.failed.push({
        pid,
        reason: "timeout",
        message: `Process ${pid} was not ${want} after ${timeoutMs} ms: thread states "${states}"`,
      });
    }
    return result;
  } finally {
    set.close();
  }
}

/**
 * Pauses processes: sends SIGSTOP to each, then polls /proc until every thread of each is in
 * state 'T' (or 't' when traced) or the process is gone, resending SIGSTOP to those not yet
 * stopped (someone may have sent SIGCONT). A thread in uninterruptible sleep ('D') stops only
 * when it wakes, so a stop can time out.
 */
export async function stopTree(
  refs: readonly ProcessRef[],
  options: StopOptions = {},
): Promise<StopResult> {
  const result = await signalAndVerify(refs, "SIGSTOP", options);
  return { stopped: result.done, gone: result.gone, failed: result.failed };
}

/**
 * Resumes processes paused by {@link stopTree}: sends SIGCONT to each, then polls /proc until no
 * thread of each is in state 'T' or 't'. A process in a tracing stop ('t') stays stopped until its
 * tracer lets it go, and is reported as failed.
 */
export async function resumeTree(
  refs: readonly ProcessRef[],
  options: StopOptions = {},
): Promise<ResumeResult> {
  const result = await signalAndVerify(refs, "SIGCONT", options);
  return { resumed: result.done, gone: result.gone, failed: result.failed };
}

/** Options for {@link killTree}. */
export interface KillOptions extends GroupOptions {
  /** How long processes get to exit after SIGTERM before SIGKILL, in ms; default 2000. */
  graceMs?: number;
  /** How long to wait for processes to vanish after SIGKILL, in ms; default 1000. */
  killWaitMs?: number;
  /**
   * Runs once SIGTERM and SIGCONT are pending on every process, before the grace period (a
   * frozen cgroup is thawed here, so that the tree wakes up to SIGTERM and nothing else).
   */
  afterTerm?: () => void;
}

/** The result of {@link killTree}. */
export interface KillResult {
  /** Pids that exited within the grace period after SIGTERM. */
  terminated: number[];
  /** Pids that needed SIGKILL and then died. */
  killed: number[];
  /** Pids already gone before SIGTERM. */
  gone: number[];
  /** Pids that could not be signalled, or outlived SIGKILL's wait (stuck in 'D', say). */
  failed: SignalFailure[];
}

/** Whether the process a handle holds has ended (exited, reaped, or a zombie). */
function ended(handle: ProcessHandle): boolean {
  if (readStat(handle.ref.pid)?.starttime !== handle.ref.start) return true;
  return !isAlive(handle.ref.pid);
}

async function waitGone(
  handles: readonly ProcessHandle[],
  timeoutMs: number,
): Promise<ProcessHandle[]> {
  const deadline = Date.now() + timeoutMs;
  let alive = handles.filter((h) => !ended(h));
  while (alive.length > 0 && Date.now() < deadline) {
    await sleep(POLL_MS * 2);
    alive = alive.filter((h) => !ended(h));
  }
  return alive;
}

/**
 * Ends processes: SIGTERM to each, then SIGCONT, since a stopped process cannot act on SIGTERM.
 * SIGCONT goes second on purpose: the SIGTERM is then already pending and is delivered the moment
 * the process runs, so a paused agent gets no time to run its own code first. Waits up to
 * `graceMs` for them to exit (a zombie counts as dead), then sends SIGKILL to the rest and waits
 * `killWaitMs` more. The processes are held by pidfd throughout: a pid reused during the grace
 * period is never killed.
 */
export async function killTree(
  refs: readonly ProcessRef[],
  options: KillOptions = {},
): Promise<KillResult> {
  const result: KillResult = { terminated: [], killed: [], gone: [], failed: [] };
  const set = new HandleSet(refs, "SIGTERM");
  try {
    for (const failure of set.failed) {
      if (failure.reason === "gone") result.gone.push(failure.pid);
      else result.failed.push(failure);
    }
    const groups = ownGroups(set.handles, options);
    signalGroups(groups, set.handles, "SIGTERM");
    const sent = set.send(set.handles, "SIGTERM");
    for (const failure of sent.failed) {
      if (failure.reason === "gone") result.gone.push(failure.pid);
      else result.failed.push(failure);
    }
    const signalled = set.handles.filter((h) => sent.signalled.includes(h.ref.pid));
    signalGroups(groups, signalled, "SIGCONT");
    set.send(signalled, "SIGCONT");
    options.afterTerm?.();
    const survivors = await waitGone(signalled, options.graceMs ?? 2000);
    result.terminated = signalled.filter((h) => !survivors.includes(h)).map((h) => h.ref.pid);
    if (survivors.length === 0) return result;

    signalGroups(groups, survivors, "SIGKILL");
    const killed = set.send(survivors, "SIGKILL");
    for (const failure of killed.failed) {
      // Exited between the last poll and SIGKILL: SIGTERM did its job after all.
      if (failure.reason === "gone") result.terminated.push(failure.pid);
      else result.failed.push(failure);
    }
    const hit = survivors.filter((h) => killed.signalled.includes(h.ref.pid));
    const stuck = await waitGone(hit, options.killWaitMs ?? 1000);
    result.killed = hit.filter((h) => !stuck.includes(h)).map((h) => h.ref.pid);
    for (const { ref: { pid } } of stuck) {
      result.failed.push({
        pid,
        reason: "timeout",
        message: `Process ${pid} outlived SIGKILL for ${options.killWaitMs ?? 1000} ms: state "${
          processState(pid) ?? "?"
        }"`,
      });
    }
    return result;
  } finally {
    set.close();
  }
}
