import { join } from "node:path";
import type { Journal, SessionRecord } from "../journal/mod.ts";
import { Cgroup, identify, listPids, type ProcessRef, readStat } from "../platform/mod.ts";
import type { ControlResult } from "../respond/mod.ts";
import { linuxControl } from "./linux_control.ts";
import { readPidsFile } from "./pids_file.ts";
import {
  type AgentTree,
  killAgent,
  pauseAgent,
  type PauseMechanism,
  resumeAgent,
} from "./tree_actions.ts";

/** A session's tree as another process finds it: only what its identity record proves. */
export interface SessionTree extends AgentTree {
  /** Whether there is anything to act on: a live process, or a populated cgroup. */
  readonly empty: boolean;
}

/**
 * The live processes of a session's tree, as another Sentry process sees them. The pids file
 * the watching Sentry keeps is the identity record: each pid in it counts only while it still
 * has the start time recorded there (so a reused pid is never signalled), and the descendants
 * found in /proc now of the processes it proves are added (each by its own start time), as is
 * everything in the session's cgroup. Without a pids file nothing is proven, and the tree is
 * empty: a pid from the journal alone may name another process by now.
 */
export function sessionTree(session: SessionRecord, dataDir: string): SessionTree {
  const file = readPidsFile(join(dataDir, "run", `${session.id}.pids`));
  let refs: ProcessRef[] = [];
  const collect = () => {
    const proven = (file?.processes ?? []).filter((p) =>
      identify(p) === "same" && readStat(p.pid)?.state !== "Z"
    );
    refs = withDescendants(proven);
  };
  collect();
  let cgroup: Cgroup | null = null;
  if (file?.cgroup !== null && file?.cgroup !== undefined) {
    try {
      Deno.statSync(file.cgroup.path);
      cgroup = new Cgroup(file.cgroup);
    } catch {
      // Removed already: the session ended, or its watchdog cleaned up.
    }
  }
  return {
    control: linuxControl(),
    cgroup,
    list: () => refs,
    rescan: collect,
    // `run` starts the agent in a session of its own, whose id is the root's pid.
    sessions: session.kind === "run" && session.pid !== null ? [session.pid] : [],
    get empty() {
      return refs.length === 0 && (cgroup === null || !cgroup.populated());
    },
  };
}

/** The processes and every descendant of theirs in /proc now, each with its start time. */
function withDescendants(roots: readonly ProcessRef[]): ProcessRef[] {
  if (roots.length === 0) return [];
  const children = new Map<number, ProcessRef[]>();
  for (const pid of listPids()) {
    const stat = readStat(pid);
    if (stat === null || stat.state === "Z" || pid === Deno.pid) continue;
    let list = children.get(stat.ppid);
    if (list === undefined) children.set(stat.ppid, list = []);
    list.push({ pid, start: stat.starttime });
  }
  const out = new Map<number, ProcessRef>();
  const queue = [...roots];
  while (queue.length > 0) {
    const ref = queue.shift() as ProcessRef;
    if (out.has(ref.pid)) continue;
    out.set(ref.pid, ref);
    queue.push(...(children.get(ref.pid) ?? []));
  }
  out.delete(Deno.pid);
  return [...out.values()];
}

/** What `sentry resume`, `sentry kill` and the API's pause did. */
export interface ControlReport {
  done: number[];
  failed: { pid: number; reason: string }[];
  forced?: number[];
  /** The cgroup freezer, or signals. */
  mechanism?: PauseMechanism;
}

/**
 * Resumes a session's tree from outside its Sentry, and journals it (with `by`, who asked).
 * The journal says `running` before any signal goes, so that the session's own Sentry, which
 * holds a pause against a SIGCONT from outside, knows this one was asked for.
 */
export async function resumeSession(
  session: SessionRecord,
  deps: { journal: Journal; dataDir: string; by?: string },
): Promise<ControlReport> {
  const tree = sessionTree(session, deps.dataDir);
  if (tree.empty) return { done: [], failed: [] };
  if (session.state === "paused") {
    deps.journal.updateSession(session.id, { state: "running" });
    deps.journal.flush();
  }
  const result = await resumeAgent(tree);
  deps.journal.recordResponse({
    session: session.id,
    action: "resume",
    outcome: result.failed.length === 0 ? "ok" : "partial",
    detail: {
      resumed: result.done,
      failed: result.failed,
      by: deps.by ?? "sentry resume",
      mechanism: result.mechanism,
    },
  });
  deps.journal.flush();
  return result;
}

/**
 * Pauses a session's tree from outside its Sentry (the API of another process), with its cgroup
 * when it has one, and journals it; the session's own Sentry takes the pause as its own.
 */
export async function pauseSession(
  session: SessionRecord,
  deps: { journal: Journal; dataDir: string; by: string },
): Promise<ControlReport> {
  const tree = sessionTree(session, deps.dataDir);
  if (tree.empty) return { done: [], failed: [] };
  const result = await pauseAgent(tree);
  deps.journal.recordResponse({
    session: session.id,
    action: "pause",
    outcome: result.failed.length === 0 ? "ok" : "partial",
    detail: {
      paused: result.done,
      failed: result.failed,
      by: deps.by,
      mechanism: result.fallback === undefined ? result.mechanism : "signals",
    },
  });
  if (session.state === "running" && result.done.length > 0) {
    deps.journal.updateSession(session.id, { state: "paused" });
  }
  deps.journal.flush();
  return { done: result.done, failed: result.failed, mechanism: result.mechanism };
}

/**
 * Kills a session's tree from outside its Sentry, and journals it (with `by`, who asked).
 * Nothing that the session's identity record does not prove is signalled.
 */
export async function killSession(
  session: SessionRecord,
  deps: { journal: Journal; dataDir: string; graceMs: number; by?: string },
): Promise<ControlReport> {
  const tree = sessionTree(session, deps.dataDir);
  if (tree.empty) return { done: [], failed: [], forced: [] };
  // Before the signals: the session's Sentry sees its tree continued, and must know why.
  deps.journal.updateSession(session.id, { state: "killed" });
  deps.journal.flush();
  const result: ControlResult & { forced: number[] } = await killAgent(tree, {
    graceMs: deps.graceMs,
  });
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
  deps.journal.flush();
  return result;
}
