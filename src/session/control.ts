import { join } from "node:path";
import type { Journal, SessionRecord } from "../journal/mod.ts";
import { listPids, readStat } from "../platform/mod.ts";
import { linuxControl } from "./linux_control.ts";

/**
 * The live processes of a session's tree, as another Sentry process sees them: the pids the
 * watching Sentry keeps in its pids file (checked by start time, so a reused pid is never
 * signalled), plus every descendant of the root found in /proc now.
 */
export function sessionTree(session: SessionRecord, dataDir: string): number[] {
  const pids = new Set<number>();
  try {
    const text = Deno.readTextFileSync(join(dataDir, "run", `${session.id}.pids`));
    for (const line of text.split("\n")) {
      const [pid, start] = line.trim().split(" ").map(Number);
      if (pid === undefined || start === undefined || !Number.isInteger(pid)) continue;
      const stat = readStat(pid);
      if (stat !== null && stat.starttime === start && stat.state !== "Z") pids.add(pid);
    }
  } catch {
    // No pids file: the session's Sentry is gone, or never wrote one. /proc still tells.
  }
  if (session.pid !== null) {
    const children = new Map<number, number[]>();
    for (const pid of listPids()) {
      const stat = readStat(pid);
      if (stat === null || stat.state === "Z") continue;
      let list = children.get(stat.ppid);
      if (list === undefined) children.set(stat.ppid, list = []);
      list.push(pid);
    }
    const root = readStat(session.pid);
    if (root !== null && root.state !== "Z" && (pids.size === 0 || pids.has(session.pid))) {
      const queue = [session.pid];
      while (queue.length > 0) {
        const pid = queue.shift() as number;
        pids.add(pid);
        queue.push(...(children.get(pid) ?? []));
      }
    }
  }
  pids.delete(Deno.pid);
  return [...pids];
}

/** What `sentry resume` or `sentry kill` did. */
export interface ControlReport {
  done: number[];
  failed: { pid: number; reason: string }[];
  forced?: number[];
}

/** Resumes a session's tree from outside its Sentry, and journals it (with `by`, who asked). */
export async function resumeSession(
  session: SessionRecord,
  deps: { journal: Journal; dataDir: string; by?: string },
): Promise<ControlReport> {
  const pids = sessionTree(session, deps.dataDir);
  const result = await linuxControl().resume(pids);
  deps.journal.recordResponse({
    session: session.id,
    action: "resume",
    outcome: result.failed.length === 0 ? "ok" : "partial",
    detail: { resumed: result.done, failed: result.failed, by: deps.by ?? "sentry resume" },
  });
  if (session.state === "paused") deps.journal.updateSession(session.id, { state: "running" });
  deps.journal.flush();
  return result;
}

/** Kills a session's tree from outside its Sentry, and journals it (with `by`, who asked). */
export async function killSession(
  session: SessionRecord,
  deps: { journal: Journal; dataDir: string; graceMs: number; by?: string },
): Promise<ControlReport> {
  const pids = sessionTree(session, deps.dataDir);
  const result = await linuxControl().kill(pids, deps.graceMs);
  deps.journal.recordResponse({
    session: session.id,
    action: "kill",
    outcome: result.failed.length === 0 ? "ok" : "partial",
    detail: {
      killed: result.done,
      forced: result.forced,
      failed: result.failed,
      by: deps.by ?? "sentry kill",
    },
  });
  deps.journal.updateSession(session.id, { state: "killed" });
  deps.journal.flush();
  return result;
}
