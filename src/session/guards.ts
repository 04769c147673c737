/**
 * The kernel gates a session starts as root beside its sensing tier, so that block mode holds
 * where the tier itself cannot block (eBPF and fanotify tiers, and every `attach`):
 *
 * - the fanotify guard (src/sensors/fanotify_guard.ts): permission events on the protected
 *   inodes only; a denied open, create or exec of a session process fails with EPERM before a
 *   byte moves. Deletes and renames it can only see.
 *
 * Each gate is wrapped as a {@link Sensor}, so that its counters reach the report and the
 * journal like any sensor's; it is in place (its marks placed, its programs attached) before
 * the agent is let go, and it stops with the session. A gate the host refuses is named at
 * start, with what falls back.
 *
 * @module
 */

import { responseRank } from "../events/mod.ts";
import type { SensorEvent, SensorStats } from "../sensors/mod.ts";
import type { Sensor } from "../sensors/sensor.ts";
import {
  type FanotifyGuard,
  hostSessionPids,
  startFanotifyGuard,
} from "../sensors/fanotify_guard.ts";
import type { SessionCgroup } from "../platform/mod.ts";
import { type ConnectGuard, startConnectGuard } from "../sensors/connect_guard.ts";
import type { Notice, Session } from "./session.ts";
import type { SupervisedPolicy } from "./supervise.ts";

/** What {@link startGuards} needs. */
export interface GuardOptions {
  session: Session;
  policy: SupervisedPolicy;
  kind: "run" | "attach";
  /** The sensing tier: the seccomp tier blocks in its own supervisor. */
  tier: string;
  /** Processes of Sentry's that are never the agent's (the watchdog). */
  excluded: readonly number[];
  env: Readonly<Record<string, string>>;
  /** The session's cgroup: the connect guard needs it to be cgroup v2. */
  cgroup: SessionCgroup | null;
  /** The journal's path: the fanotify guard never holds its files (see its `unheld`). */
  journal: string;
  onNotice: (notice: Notice) => void;
}

/**
 * Starts the gates that apply (root, Linux, not the seccomp tier; under `run` only when the
 * policy can block, since the agent's mount namespace already hides Sentry's files; under
 * `attach` always, for Sentry's own files) and adds each to the session's sensors. Call after
 * the session is open and before it starts; the gates hold before this resolves.
 */
export async function startGuards(options: GuardOptions): Promise<void> {
  const { session, policy } = options;
  if (Deno.build.os !== "linux" || Deno.uid() !== 0 || options.tier === "seccomp") return;
  const blocking = asksToBlock(policy);
  if (blocking) await startConnectGate(options);
  // Under run the agent's mount namespace hides Sentry's files; under attach only this guard
  // keeps them, in every mode.
  if (options.kind === "run" && !blocking) return;
  const pids = hostSessionPids();
  const known = new Set<number>();
  const sync = () => {
    for (const pid of session.tree.members.keys()) {
      if (!known.has(pid)) {
        known.add(pid);
        pids.add(pid);
      }
    }
    for (const pid of known) {
      if (!session.tree.members.has(pid)) {
        known.delete(pid);
        pids.delete(pid);
      }
    }
  };
  if (session.tree.rootPid !== null) pids.add(session.tree.rootPid);
  session.tree.onScan(sync);
  const abort = new AbortController();
  let guard: FanotifyGuard;
  try {
    guard = await startFanotifyGuard({
      policy: policy.compiled,
      home: policy.home,
      session: pids,
      emit: (event: SensorEvent) => session.handle(event),
      signal: abort.signal,
      excluded: options.excluded,
      accessPerm: options.kind === "attach",
      env: options.env,
      sentryOnly: !blocking,
      unheld: [options.journal, `${options.journal}-wal`, `${options.journal}-shm`],
    });
  } catch (error) {
    options.onNotice({
      type: "warn",
      message: `the fanotify guard cannot run here (${
        (error as Error).message
      }): denied opens are not blocked; the policy's next response (pause) applies instead`,
    });
    return;
  }
  sayAll("the fanotify guard", guard.notices, options.onNotice);
  session.gate();
  if (blocking) session.holdInKernel("the fanotify guard");
  session.sensors.push(gateSensor("fanotify_guard", guard, abort));
}

function gateSensor(
  name: string,
  gate: { stats(): SensorStats; done: Promise<void> },
  abort: AbortController,
): Sensor {
  return {
    name,
    async start(_emit, signal) {
      if (!signal.aborted) {
        await new Promise<void>((resolve) =>
          signal.addEventListener("abort", () => resolve(), { once: true })
        );
      }
      abort.abort();
      await gate.done;
    },
    stats: () => gate.stats(),
  };
}

/** How often the connect guard takes the resolver's newest answers. */
const DNS_SYNC_MS = 5000;

/**
 * The cgroup connect guard: `connect4`/`connect6` (and UDP `sendmsg`) programs on the session's
 * cgroup v2 directory, when the policy can block a connect. Host names enter its tables as they
 * resolve (nothing waits on DNS).
 */
async function startConnectGate(options: GuardOptions): Promise<void> {
  const { session, policy } = options;
  if (!policy.compiled.monitors.network) return;
  const spec = options.cgroup?.spec() ?? null;
  if (options.cgroup === null || spec === null || spec.version !== 2) {
    options.onNotice({
      type: "warn",
      message:
        "connects are not blocked: the connect guard needs the session's own cgroup v2 (see --freezer); a denied connect pauses the agent instead",
    });
    return;
  }
  const abort = new AbortController();
  let guard: ConnectGuard;
  try {
    guard = await startConnectGuard({
      cgroupDir: options.cgroup.path,
      policy: policy.compiled,
      resolved: session.hostAddresses(),
      emit: (event: SensorEvent) => session.handle(event),
      signal: abort.signal,
      ...(session.table === null ? {} : { table: session.table }),
    });
  } catch (error) {
    options.onNotice({
      type: "warn",
      message: `the connect guard cannot run here (${
        (error as Error).message
      }): a denied connect pauses the agent instead`,
    });
    return;
  }
  sayAll("the connect guard", guard.notices, options.onNotice);
  session.gate(["net.connect", "db.connect"]);
  session.holdInKernel("the connect guard");
  let last = "";
  const timer = setInterval(() => {
    const resolved = session.hostAddresses();
    const key = JSON.stringify([...resolved].sort());
    if (key === last) return;
    last = key;
    try {
      guard.update({ resolved });
    } catch {
      // Stopped meanwhile.
    }
  }, DNS_SYNC_MS);
  abort.signal.addEventListener("abort", () => clearInterval(timer), { once: true });
  session.sensors.push(gateSensor("connect_guard", guard, abort));
}

/**
 * Whether the policy asks for blocks: mode `block`, or a rule whose response is `block`. In the
 * other modes a denial is paused, killed or rolled back after the fact, as by the tier alone.
 */
export function asksToBlock(policy: SupervisedPolicy): boolean {
  return policy.resolved.mode === "block" ||
    (policy.compiled.modeCap >= responseRank("block") &&
      policy.resolved.rules.some((r) => r.response === "block"));
}

/**
 * Says a gate's notices: the informational ones as they are, and every rule it cannot hold in
 * one warning that names them all (each falls back to the policy's next response).
 */
function sayAll(
  gate: string,
  notices: readonly { type: "info" | "warn"; message: string }[],
  onNotice: (notice: Notice) => void,
): void {
  const warnings: string[] = [];
  for (const notice of notices) {
    if (notice.type === "info") onNotice(notice);
    else warnings.push(notice.message);
  }
  if (warnings.length === 0) return;
  onNotice({
    type: "warn",
    message: `${gate} cannot hold ${warnings.length} rule(s); each falls back to a pause: ${
      warnings.join("; ")
    }`,
  });
}
