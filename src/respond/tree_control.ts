/** How pausing, resuming or killing the tree went. */
export interface ControlResult {
  /** Pids the signal reached and whose new state was verified in /proc (or that were gone). */
  done: number[];
  /** Pids that could not be signalled or verified, with the reason. */
  failed: { pid: number; reason: string }[];
}

/**
 * Pauses, resumes and kills a set of processes. The Linux implementation signals and then
 * checks each process's state in /proc; tests may substitute their own.
 */
export interface TreeControl {
  /** SIGSTOP every pid, then verify each is stopped. */
  stop(pids: readonly number[]): Promise<ControlResult>;
  /** SIGCONT every pid, then verify none is stopped. */
  resume(pids: readonly number[]): Promise<ControlResult>;
  /** SIGCONT every pid without waiting: for exit paths that cannot wait. */
  resumeNow(pids: readonly number[]): void;
  /** SIGTERM every pid, then SIGKILL what is left after the grace period. */
  kill(pids: readonly number[], graceMs: number): Promise<ControlResult & { forced: number[] }>;
}
