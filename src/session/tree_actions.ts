/**
 * Pausing, resuming and killing an agent's whole tree, with its cgroup when it has one and with
 * signals otherwise. The session, the controls that act from another process (`sentry resume`,
 * `sentry kill`, the API) and the watchdog all go through these, so the tree is handled alike
 * whoever acts.
 *
 * **With a cgroup (root)**, a pause freezes the cgroup: the kernel stops every process in it at
 * once, children forked meanwhile included, and nothing in it runs until it is thawed, whatever
 * signal it gets. Once frozen (the moment the tree stops), each process is given a pending
 * SIGSTOP and the cgroup is thawed: every process takes its SIGSTOP before it returns to user
 * space, so none runs a single instruction, and the tree shows as stopped (`T`) in /proc, as
 * with signals. The cgroup is then frozen again, so that a SIGCONT from outside (or from a
 * process the agent left outside the tree) cannot resume it. A resume sends SIGCONT while the
 * cgroup is still frozen, then thaws it: the whole tree starts again at once.
 *
 * **With signals (no root)**, a pause sends SIGSTOP to the process groups of the agent's own
 * sessions first (atomic for a group, and no fork races it), then to every process, and rescans
 * the tree until a full rescan finds no member running.
 *
 * @module
 */

import { type Cgroup, type ProcessRef, refOf } from "../platform/mod.ts";
import type { ControlResult, TreeControl } from "../respond/mod.ts";

/** How a pause was made. */
export type PauseMechanism = "cgroup" | "signals";

/** The tree to act on, and how. */
export interface AgentTree {
  control: TreeControl;
  /** The session's cgroup, or null to use signals only. */
  cgroup: Cgroup | null;
  /** The tree's processes now. */
  list(): ProcessRef[];
  /** Looks at the tree again (new processes join); default: nothing to do. */
  rescan?(): void;
  /** Sessions that are the agent's own, whose process groups may be signalled whole. */
  sessions?: readonly number[];
}

/** What a pause did. */
export interface PauseOutcome extends ControlResult {
  mechanism: PauseMechanism;
  /**
   * When the whole tree was confirmed frozen (the cgroup) or stopped (signals), in epoch
   * milliseconds with a fraction; null when that could not be confirmed.
   */
  frozenAt: number | null;
  /** Why the cgroup could not be used, when the pause fell back to signals. */
  fallback?: string;
}

/** The time now in epoch milliseconds, with sub-millisecond precision. */
export function epochMs(): number {
  return performance.timeOrigin + performance.now();
}

/** The refs in `a` and `b`, each pid once (`a` first). */
function union(a: readonly ProcessRef[], b: readonly ProcessRef[]): ProcessRef[] {
  const seen = new Set<number>();
  const out: ProcessRef[] = [];
  for (const ref of [...a, ...b]) {
    if (seen.has(ref.pid)) continue;
    seen.add(ref.pid);
    out.push(ref);
  }
  return out;
}

/** The processes of the cgroup now, by identity. */
function cgroupRefs(cgroup: Cgroup | null): ProcessRef[] {
  if (cgroup === null) return [];
  return cgroup.pids().map(refOf).filter((r) => r !== null);
}

/** Every process of the tree: the cgroup's (membership names them) and the listed ones. */
export function treeRefs(tree: AgentTree): ProcessRef[] {
  return union(cgroupRefs(tree.cgroup), tree.list());
}

/** The state letter of a ref's process, or null when it is gone or its pid was reused. */
function stateOf(ref: ProcessRef): string | null {
  try {
    const text = Deno.readTextFileSync(`/proc/${ref.pid}/stat`);
    const close = text.lastIndexOf(")");
    const fields = text.slice(close + 2).split(" ");
    // Field 22 (starttime) is the 20th after the state.
    if (Number(fields[19]) !== ref.start) return null;
    return fields[0] ?? null;
  } catch {
    return null;
  }
}

function stoppedOrGone(ref: ProcessRef): boolean {
  const state = stateOf(ref);
  return state === null || state === "T" || state === "t" || state === "Z" || state === "X";
}

function signalOptions(tree: AgentTree): { sessions?: readonly number[] } {
  return tree.sessions === undefined ? {} : { sessions: tree.sessions };
}

/**
 * Pauses the whole tree: with its cgroup when it has one (atomic), else with signals (see the
 * module's description). Verified in /proc either way.
 */
export async function pauseAgent(tree: AgentTree): Promise<PauseOutcome> {
  if (tree.cgroup !== null) {
    try {
      return await pauseInCgroup(tree, tree.cgroup);
    } catch (error) {
      const outcome = await pauseWithSignals(tree);
      return { ...outcome, fallback: (error as Error).message };
    }
  }
  return await pauseWithSignals(tree);
}

async function pauseInCgroup(tree: AgentTree, cgroup: Cgroup): Promise<PauseOutcome> {
  const frozen = await cgroup.freeze({ timeoutMs: 1000 });
  const frozenAt = frozen ? epochMs() : null;
  // Nothing in the cgroup can fork now: this list is complete and stays so.
  const refs = treeRefs(tree);
  tree.control.send(refs, "SIGSTOP");
  cgroup.thaw();
  // Each process takes its pending SIGSTOP before it runs an instruction.
  const stopped = await tree.control.stop(refs, signalOptions(tree));
  // Frozen again: a SIGCONT from outside now wakes a process only into the freezer.
  await cgroup.freeze({ timeoutMs: 1000 });
  return { ...stopped, mechanism: "cgroup", frozenAt };
}

async function pauseWithSignals(tree: AgentTree): Promise<PauseOutcome> {
  const done = new Set<number>();
  const failed = new Map<number, string>();
  const deadline = performance.now() + 2000;
  let frozenAt: number | null = null;
  for (let round = 0; round < 20; round++) {
    const refs = tree.list().filter((r) => !done.has(r.pid) || !stoppedOrGone(r));
    if (refs.length > 0) {
      const result = await tree.control.stop(refs, signalOptions(tree));
      for (const pid of result.done) {
        done.add(pid);
        failed.delete(pid);
      }
      for (const f of result.failed) failed.set(f.pid, f.reason);
    }
    // A full rescan: processes forked meanwhile join, and one continued meanwhile shows.
    tree.rescan?.();
    const running = tree.list().filter((r) => !stoppedOrGone(r));
    if (running.length === 0) {
      frozenAt = epochMs();
      break;
    }
    for (const r of running) done.delete(r.pid);
    if (performance.now() >= deadline) {
      for (const r of running) {
        if (!failed.has(r.pid)) failed.set(r.pid, `Process ${r.pid} kept running: not stopped`);
      }
      break;
    }
  }
  return {
    done: [...done].filter((pid) => !failed.has(pid)),
    failed: [...failed].map(([pid, reason]) => ({ pid, reason })),
    mechanism: "signals",
    frozenAt,
  };
}

/**
 * Resumes the whole tree: SIGCONT everywhere (while the cgroup is still frozen, so that no
 * process runs before the others), then thaws the cgroup. Verified in /proc.
 */
export async function resumeAgent(
  tree: AgentTree,
): Promise<ControlResult & { mechanism: PauseMechanism }> {
  const refs = treeRefs(tree);
  const result = await tree.control.resume(refs, signalOptions(tree));
  if (tree.cgroup === null) return { ...result, mechanism: "signals" };
  const thawed = tree.cgroup.thaw();
  const failed = [...result.failed];
  if (!thawed && tree.cgroup.frozen()) {
    failed.push({ pid: 0, reason: `Cannot thaw cgroup "${tree.cgroup.path}"` });
  }
  return { done: result.done, failed, mechanism: "cgroup" };
}

/**
 * Ends the whole tree: SIGTERM and SIGCONT on every process (the cgroup thawed once both are
 * pending), SIGKILL after the grace period, and then, with a cgroup, SIGKILL to anything still
 * in it (a process forked during the grace period).
 */
export async function killAgent(
  tree: AgentTree,
  options: { graceMs: number },
): Promise<ControlResult & { forced: number[] }> {
  const refs = treeRefs(tree);
  const cgroup = tree.cgroup;
  const result = await tree.control.kill(refs, {
    graceMs: options.graceMs,
    ...signalOptions(tree),
    ...(cgroup === null ? {} : { afterTerm: () => cgroup.thaw() }),
  });
  if (cgroup === null || !cgroup.populated()) return result;
  const late = cgroup.killAll();
  const deadline = performance.now() + 1000;
  while (cgroup.populated() && performance.now() < deadline) {
    await new Promise((r) => setTimeout(r, 10));
  }
  const known = new Set(result.done);
  return {
    ...result,
    done: [...result.done, ...late.filter((p) => !known.has(p))],
    forced: [...result.forced, ...late.filter((p) => !known.has(p))],
  };
}

/**
 * The synchronous release for exit paths that cannot wait: SIGCONT (or SIGKILL) to every
 * process, then the cgroup thawed, so the tree is never left stopped or frozen.
 */
export function releaseAgentNow(tree: AgentTree, how: "resume" | "kill"): void {
  const refs = treeRefs(tree);
  if (how === "kill") {
    tree.control.send(refs, "SIGKILL");
    tree.cgroup?.killAll();
  } else {
    tree.control.send(refs, "SIGCONT");
  }
  tree.cgroup?.thaw();
}
