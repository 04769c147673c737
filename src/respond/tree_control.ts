import type { ProcessRef } from "../platform/mod.ts";

/** How pausing, resuming or killing the tree went. */
export interface ControlResult {
  /** Pids the signal reached and whose new state was verified in /proc (or that were gone). */
  done: number[];
  /** Pids that could not be signalled or verified, with the reason. */
  failed: { pid: number; reason: string }[];
}

/** What every control of the tree may be told besides the processes. */
export interface TreeSignalOptions {
  /**
   * Sessions that are the agent's own (`sentry run` starts it in one): their process groups are
   * signalled as wholes, so a process forked between the listing and the signal is reached too.
   */
  sessions?: readonly number[];
}

/** Options of {@link TreeControl.kill}. */
export interface TreeKillOptions extends TreeSignalOptions {
  /** The time between SIGTERM and SIGKILL, in milliseconds. */
  graceMs: number;
  /** Runs once SIGTERM and SIGCONT are pending everywhere, before the grace period. */
  afterTerm?: () => void;
}

/**
 * Pauses, resumes and kills a set of processes, each named by its {@link ProcessRef} (pid and
 * start time), so that a pid reused by another process is never signalled. The Linux
 * implementation signals and then checks each process's state in /proc; tests may substitute
 * their own.
 */
export interface TreeControl {
  /** SIGSTOP every process, then verify each is stopped. */
  stop(refs: readonly ProcessRef[], options?: TreeSignalOptions): Promise<ControlResult>;
  /** SIGCONT every process, then verify none is stopped. */
  resume(refs: readonly ProcessRef[], options?: TreeSignalOptions): Promise<ControlResult>;
  /**
   * Sends one signal to every process without waiting or verifying: for exit paths that cannot
   * wait, and to leave a signal pending in a frozen tree. Returns the pids reached.
   */
  send(refs: readonly ProcessRef[], signal: "SIGSTOP" | "SIGCONT" | "SIGKILL"): number[];
  /** SIGTERM every process, then SIGKILL what is left after the grace period. */
  kill(
    refs: readonly ProcessRef[],
    options: TreeKillOptions,
  ): Promise<ControlResult & { forced: number[] }>;
}
