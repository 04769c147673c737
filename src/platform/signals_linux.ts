/**
 * Pausing, resuming and killing a set of processes (an agent's tree) with signals, and checking
 * in /proc that each signal took effect.
 *
 * The caller lists the tree (see `listChildren` in proc_linux.ts) and passes the pids, parents
 * first: stopping a parent before its children keeps it from forking more children or reacting
 * to theirs. A process forked after the list was taken is not covered; list again after a stop and
 * stop the newcomers. Pids are not checked against recycling: a caller that holds a pid for long
 * should compare `ProcStat.starttime` before signalling it.
 *
 * @module
 */

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
 * Sends one signal to each pid and reports which got it. Refuses pid 1 and Sentry's own pid (as
 * "denied") so that a bug in tree listing cannot pause the machine or Sentry itself.
 *
 * @throws {RangeError} for a pid below 1 or not an integer: `kill(0)` and `kill(-1)` would signal
 * a whole process group or every process.
 */
export function signalAll(pids: readonly number[], signal: Deno.Signal): SignalAllResult {
  const result: SignalAllResult = { signalled: [], failed: [] };
  for (const pid of pids) {
    if (!Number.isInteger(pid) || pid < 1) {
      throw new RangeError(`Cannot signal pid "${pid}": expected a positive integer`);
    }
    if (pid === 1 || pid === Deno.pid) {
      const message = `Refusing to send ${signal} to pid ${pid}: it is ${
        pid === 1 ? "init" : "Sentry itself"
      }`;
      result.failed.push({ pid, reason: "denied", message });
      continue;
    }
    try {
      Deno.kill(pid, signal);
      result.signalled.push(pid);
    } catch (error: unknown) {
      const message = error instanceof Error ? error.message : String(error);
      result.failed.push({ pid, reason: failureReason(error), message });
    }
  }
  return result;
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
function settled(pid: number, want: "stopped" | "running"): "done" | "gone" | "pending" {
  const states = threadStates(pid);
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
export interface StopOptions {
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
  pids: readonly number[],
  signal: "SIGSTOP" | "SIGCONT",
  timeoutMs: number,
): Promise<TreeSignalResult> {
  const want = signal === "SIGSTOP" ? "stopped" : "running";
  const sent = signalAll(pids, signal);
  const result: TreeSignalResult = { done: [], gone: [], failed: [] };
  for (const failure of sent.failed) {
    if (failure.reason === "gone") result.gone.push(failure.pid);
    else result.failed.push(failure);
  }
  let pending = sent.signalled;
  const deadline = Date.now() + timeoutMs;
  for (;;) {
    const next: number[] = [];
    for (const pid of pending) {
      const state = settled(pid, want);
      if (state === "done") result.done.push(pid);
      else if (state === "gone") result.gone.push(pid);
      else next.push(pid);
    }
    pending = next;
    if (pending.length === 0 || Date.now() >= deadline) break;
    await sleep(POLL_MS);
    // Send again: a process may have been continued (or stopped) by someone else meanwhile.
    for (const failure of signalAll(pending, signal).failed) {
      if (failure.reason !== "gone") {
        result.failed.push(failure);
        pending = pending.filter((pid) => pid !== failure.pid);
      }
    }
  }
  // Report in the caller's order, not the order processes happened to settle in.
  const order = new Map(pids.map((pid, index) => [pid, index]));
  const byOrder = (a: number, b: number) => (order.get(a) ?? 0) - (order.get(b) ?? 0);
  result.done.sort(byOrder);
  result.gone.sort(byOrder);
  for (const pid of pending) {
    const states = threadStates(pid)?.join("") ?? "";
    result.failed.push({
      pid,
      reason: "timeout",
      message: `Process ${pid} was not ${want} after ${timeoutMs} ms: thread states "${states}"`,
    });
  }
  return result;
}

/**
 * Pauses processes: sends SIGSTOP to each, then polls /proc until every thread of each is in
 * state 'T' (or 't' when traced) or the process is gone, resending SIGSTOP to those not yet
 * stopped (someone may have sent SIGCONT). A thread in uninterruptible sleep ('D') stops only
 * when it wakes, so a stop can time out.
 */
export async function stopTree(
  pids: readonly number[],
  options: StopOptions = {},
): Promise<StopResult> {
  const result = await signalAndVerify(pids, "SIGSTOP", options.timeoutMs ?? 1000);
  return { stopped: result.done, gone: result.gone, failed: result.failed };
}

/**
 * Resumes processes paused by {@link stopTree}: sends SIGCONT to each, then polls /proc until no
 * thread of each is in state 'T' or 't'. A process in a tracing stop ('t') stays stopped until its
 * tracer lets it go, and is reported as failed.
 */
export async function resumeTree(
  pids: readonly number[],
  options: StopOptions = {},
): Promise<ResumeResult> {
  const result = await signalAndVerify(pids, "SIGCONT", options.timeoutMs ?? 1000);
  return { resumed: result.done, gone: result.gone, failed: result.failed };
}

/** Options for {@link killTree}. */
export interface KillOptions {
  /** How long processes get to exit after SIGTERM before SIGKILL, in ms; default 2000. */
  graceMs?: number;
  /** How long to wait for processes to vanish after SIGKILL, in ms; default 1000. */
  killWaitMs?: number;
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

async function waitGone(pids: readonly number[], timeoutMs: number): Promise<number[]> {
  const deadline = Date.now() + timeoutMs;
  let alive = pids.filter(isAlive);
  while (alive.length > 0 && Date.now() < deadline) {
    await sleep(POLL_MS * 2);
    alive = alive.filter(isAlive);
  }
  return alive;
}

/**
 * Ends processes: SIGTERM to each, then SIGCONT, since a stopped process cannot act on SIGTERM.
 * SIGCONT goes second on purpose: the SIGTERM is then already pending and is delivered the moment
 * the process runs, so a paused agent gets no time to run its own code first. Waits up to
 * `graceMs` for them to exit (a zombie counts as dead), then sends SIGKILL to the rest and waits
 * `killWaitMs` more.
 */
export async function killTree(
  pids: readonly number[],
  options: KillOptions = {},
): Promise<KillResult> {
  const result: KillResult = { terminated: [], killed: [], gone: [], failed: [] };
  const sent = signalAll(pids, "SIGTERM");
  for (const failure of sent.failed) {
    if (failure.reason === "gone") result.gone.push(failure.pid);
    else result.failed.push(failure);
  }
  signalAll(sent.signalled, "SIGCONT");
  const survivors = await waitGone(sent.signalled, options.graceMs ?? 2000);
  result.terminated = sent.signalled.filter((pid) => !survivors.includes(pid));
  if (survivors.length === 0) return result;

  const killed = signalAll(survivors, "SIGKILL");
  for (const failure of killed.failed) {
    // Exited between the last poll and SIGKILL: SIGTERM did its job after all.
    if (failure.reason === "gone") result.terminated.push(failure.pid);
    else result.failed.push(failure);
  }
  const stuck = await waitGone(killed.signalled, options.killWaitMs ?? 1000);
  result.killed = killed.signalled.filter((pid) => !stuck.includes(pid));
  for (const pid of stuck) {
    result.failed.push({
      pid,
      reason: "timeout",
      message: `Process ${pid} outlived SIGKILL for ${options.killWaitMs ?? 1000} ms: state "${
        processState(pid) ?? "?"
      }"`,
    });
  }
  return result;
}
