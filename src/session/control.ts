import { join } from "node:path";
import type { Journal, SessionRecord } from "../journal/mod.ts";
import {
  bootTimeMs,
  Cgroup,
  clockTicks,
  identify,
  listPids,
  type ProcessRef,
  readStat,
} from "../platform/mod.ts";
import type { ControlResult } from "../respond/mod.ts";
import { linuxControl } from "./linux_control.ts";
import { readPidsFile } from "./pids_file.ts";
import { reloadRequestPath, reloadResultPath, writeReloadRequest } from "./reload.ts";
import type { ReloadResult } from "./session.ts";
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

/** What {@link reloadSession} needs. */
export interface ReloadSessionOptions {
  dataDir: string;
  /** The policy file (absolute) or template to load, or null: the session's own, read again. */
  file: string | null;
  /** Who asks, for the journal. */
  by: string;
  /** How long to wait for the session's Sentry to answer; default 15 s. */
  timeoutMs?: number;
}

/** A reload that could not be asked for: the session is not live here, or did not answer. */
export class ReloadError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "ReloadError";
  }
}

/**
 * Asks a live session's Sentry, from another process, to reload its policy: leaves the request
 * beside its pids file, sends SIGHUP to that Sentry (only once its identity is proven: on this
 * host, started before the session, the session's pids file in place), and waits for its
 * answer, which it leaves beside the request (it journals the reload too). Throws a {@link ReloadError} when the session is not live on this host or
 * does not answer in time.
 */
export async function reloadSession(
  session: SessionRecord,
  options: ReloadSessionOptions,
): Promise<ReloadResult> {
  const why = `Cannot reload the policy of session "${session.id}"`;
  if (session.state !== "running" && session.state !== "paused") {
    throw new ReloadError(`${why}: it is not live (state ${session.state})`);
  }
  if (session.host !== Deno.hostname()) {
    throw new ReloadError(`${why}: it runs on host "${session.host}", not on this one`);
  }
  const pids = readPidsFile(join(options.dataDir, "run", `${session.id}.pids`));
  if (pids === null) {
    throw new ReloadError(`${why}: its Sentry keeps no pids file (it has ended)`);
  }
  // Until the agent is let go, Sentry does not listen for SIGHUP yet (which would end it).
  if (pids.starting) throw new ReloadError(`${why}: it is still starting; try again`);
  const stat = readStat(session.sentryPid);
  const startedMs = stat === null ? null : bootTimeMs() + stat.starttime * 1000 / clockTicks();
  // A Sentry started after its session is another process that reuses the pid. The boot time
  // has whole seconds: allow that much.
  if (stat === null || startedMs === null || startedMs > Date.parse(session.startedAt) + 1500) {
    throw new ReloadError(`${why}: its Sentry (pid ${session.sentryPid}) is gone`);
  }
  const nonce = crypto.randomUUID();
  const path = reloadRequestPath(options.dataDir, session.id);
  const answer = reloadResultPath(options.dataDir, session.id, nonce);
  writeReloadRequest(path, { file: options.file, by: options.by, nonce });
  Deno.kill(session.sentryPid, "SIGHUP");
  const deadline = Date.now() + (options.timeoutMs ?? 15_000);
  while (Date.now() < deadline) {
    let text: string | null = null;
    try {
      text = Deno.readTextFileSync(answer);
      Deno.removeSync(answer);
    } catch {
      // Not yet.
    }
    if (text !== null) return JSON.parse(text) as ReloadResult;
    await new Promise((r) => setTimeout(r, 50));
  }
  try {
    Deno.removeSync(path);
  } catch {
    // Taken, or never written.
  }
  throw new ReloadError(
    `${why}: its Sentry (pid ${session.sentryPid}) did not answer within ${
      Math.round((options.timeoutMs ?? 15_000) / 1000)
    } s`,
  );
}
