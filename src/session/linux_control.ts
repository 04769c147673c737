import { killTree, resumeTree, signalAll, stopTree } from "../platform/mod.ts";
import type { TreeControl } from "../respond/mod.ts";

/**
 * Pauses, resumes and kills processes on Linux, each by identity (a pidfd opened after its
 * start time was checked), verifying each in /proc. Process groups of the agent's own sessions
 * are signalled as wholes too, which no fork can race.
 */
export function linuxControl(): TreeControl {
  return {
    async stop(refs, options = {}) {
      const r = await stopTree(refs, { timeoutMs: 1000, groups: true, ...sessions(options) });
      return {
        done: [...r.stopped, ...r.gone],
        failed: r.failed.map((f) => ({ pid: f.pid, reason: f.message })),
      };
    },
    async resume(refs, options = {}) {
      const r = await resumeTree(refs, { timeoutMs: 1000, groups: true, ...sessions(options) });
      return {
        done: [...r.resumed, ...r.gone],
        failed: r.failed.map((f) => ({ pid: f.pid, reason: f.message })),
      };
    },
    send(refs, signal) {
      return signalAll(refs.filter((r) => r.pid > 1 && r.pid !== Deno.pid), signal).signalled;
    },
    async kill(refs, options) {
      const r = await killTree(refs, {
        graceMs: options.graceMs,
        groups: true,
        ...sessions(options),
        ...(options.afterTerm === undefined ? {} : { afterTerm: options.afterTerm }),
      });
      return {
        done: [...r.terminated, ...r.killed, ...r.gone],
        forced: r.killed,
        failed: r.failed.map((f) => ({ pid: f.pid, reason: f.message })),
      };
    },
  };
}

function sessions(options: { sessions?: readonly number[] }): { sessions?: readonly number[] } {
  return options.sessions === undefined ? {} : { sessions: options.sessions };
}
