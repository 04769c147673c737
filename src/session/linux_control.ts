import { killTree, resumeTree, signalAll, stopTree } from "../platform/mod.ts";
import type { TreeControl } from "../respond/mod.ts";

/** Pauses, resumes and kills processes on Linux, verifying each in /proc. */
export function linuxControl(): TreeControl {
  return {
    async stop(pids) {
      const r = await stopTree(pids, { timeoutMs: 1000 });
      return {
        done: [...r.stopped, ...r.gone],
        failed: r.failed.map((f) => ({ pid: f.pid, reason: f.message })),
      };
    },
    async resume(pids) {
      const r = await resumeTree(pids, { timeoutMs: 1000 });
      return {
        done: [...r.resumed, ...r.gone],
        failed: r.failed.map((f) => ({ pid: f.pid, reason: f.message })),
      };
    },
    resumeNow(pids) {
      signalAll(pids.filter((p) => p > 1), "SIGCONT");
    },
    async kill(pids, graceMs) {
      const r = await killTree(pids, { graceMs });
      return {
        done: [...r.terminated, ...r.killed, ...r.gone],
        forced: r.killed,
        failed: r.failed.map((f) => ({ pid: f.pid, reason: f.message })),
      };
    },
  };
}
