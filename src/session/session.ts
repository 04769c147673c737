import {
  type AgentEvent,
  createUlid,
  type Kind,
  type Response,
  responseRank,
} from "../events/mod.ts";
import type { Journal, ResponseAction, ResponseOutcome } from "../journal/mod.ts";
import { type CompiledPolicy, evaluate, type ResolvedPolicy } from "../policy/mod.ts";
import type { ControlResult, TreeControl } from "../respond/mod.ts";
import {
  Dedup,
  FdSensor,
  HostResolver,
  type InspectProcess,
  NetSensor,
  ProcessTable,
  type ProcPlatform,
  ProcSensor,
  ResourceSensor,
  type Sensor,
  type SensorEvent,
  type SensorStats,
  WatchSensor,
} from "../sensors/mod.ts";
import { rollback, type RollbackResult } from "../rollback/mod.ts";
import type { Cgroup, ProcessRef } from "../platform/mod.ts";
import { writePidsFile } from "./pids_file.ts";
import { journalRestore, type Protection } from "./protect.ts";
import {
  type AgentTree,
  epochMs,
  killAgent,
  pauseAgent,
  type PauseMechanism,
  releaseAgentNow,
  resumeAgent,
} from "./tree_actions.ts";
import { inspectProcess, type KernelTier, type Tier } from "./tiers.ts";
import { watchRoots } from "./watch_roots.ts";
import { checkReload, type LivePolicy, policyHash } from "./reload.ts";

/** Something the operator should see: the CLI prints these (an alert, a pause, a warning). */
export type Notice =
  | { type: "event"; event: AgentEvent }
  | {
    type: "response";
    action: ResponseAction;
    outcome: ResponseOutcome;
    message: string;
    event?: AgentEvent;
  }
  | { type: "warn" | "info"; message: string };

/** A rollback asked for by an operator (through the API) rather than by the policy. */
export interface ManualRollback {
  /** Globs: only matching paths are restored. */
  filter?: readonly string[];
  /** Who asked, for the journal. */
  by: string;
}

/** What a session watches and how. */
export interface SessionConfig {
  id: string;
  agent: string;
  kind: "run" | "attach";
  rootPid: number;
  policy: { resolved: ResolvedPolicy; compiled: CompiledPolicy; workspace: string; home: string };
  /** The polling interval while the tree is quiet, in milliseconds. */
  intervalMs: number;
  /** The root is a launcher that execs the agent once Sentry is ready. */
  rootIsLauncher: boolean;
  /** Processes whose new children join the tree (Sentry itself, as a subreaper). */
  adopters: number[];
  /** Processes never to include (Sentry's helpers). */
  excluded: number[];
  /** Paths never reported (Sentry's own data). */
  ignorePaths: string[];
  /** What to do with a stopped tree when Sentry exits. */
  onExit: "resume" | "kill";
  /** The grace period between SIGTERM and SIGKILL, in milliseconds. */
  killGraceMs: number;
  /**
   * The session's own cgroup (root): pause freezes it. Null or absent: pause uses signals. The
   * session uses it; whoever created it closes it.
   */
  cgroup?: Cgroup | null;
  /**
   * Sessions (`setsid`) that are the agent's own: `run` starts the agent in one, whose process
   * groups signals may reach as wholes. Empty for `attach`.
   */
  agentSessions?: number[];
  /** How long a pause may last unattended, in milliseconds; null or absent: no limit. */
  pauseTimeoutMs?: number | null;
  /** What a pause that times out ends in; default kill. */
  onPauseTimeout?: "resume" | "kill";
  /** Where to keep the tree's pids for the watchdog, or null. */
  pidsFile: string | null;
  /**
   * Loads a policy for a live reload ({@link Session.reload}): the file or template given, or
   * with null the session's own policy read again, patched and compiled as at start. Absent:
   * the session cannot reload.
   */
  loadPolicy?: (file: string | null) => Promise<SessionConfig["policy"]>;
  /** The policy as asked for at start (`--policy`: a template name or a file), for the journal. */
  policySource?: string;
  /** The rollback protection taken at start, or null when rollback is off for the session. */
  protection: Protection | null;
  /** What an automatic rollback leaves: the agent paused, or killed (`rollback.after`). */
  afterRollback: "pause" | "kill";
  /**
   * The kernel sensing tier, loaded and tracking the tree, or null for the poll tier. The
   * session builds the tier's sensors and leaves to the poll sensors only what it does not see.
   */
  kernel?: KernelTier | null;
  onNotice: (notice: Notice) => void;
}

/** What a session uses from outside. */
export interface SessionDeps {
  journal: Journal;
  platform: ProcPlatform;
  control: TreeControl;
  /** Reads a process the kernel tier's table did not see start; default: /proc. */
  inspect?: InspectProcess;
  now?: () => number;
  ulid?: () => string;
}

/** The poll tree's interval under a kernel tier that reports processes itself. */
export const KERNEL_TREE_INTERVAL_MS = 250;

/** How often the poll tree scans: the session's interval, or slower under a kernel tier. */
function treeIntervalMs(config: SessionConfig): number {
  return config.kernel?.covers.processes === true
    ? Math.max(config.intervalMs, KERNEL_TREE_INTERVAL_MS)
    : config.intervalMs;
}

/** How long repeats of the same pid, kind and target are folded, in milliseconds. */
export const DEDUP_WINDOW_MS = 2000;

/**
 * One watched agent: starts the sensors, decides on each event with the policy, responds, and
 * journals everything. Responses act on the whole tree, verified in /proc. The session never
 * leaves the tree stopped when it ends: see {@link Session.release}.
 */
export class Session {
  readonly config: SessionConfig;
  readonly tree: ProcSensor;
  readonly sensors: Sensor[];
  /** The sensing tier in use. */
  readonly tier: Tier;
  /** The kernel tiers' table of the tree's processes (pid, parent, program, command line). */
  readonly table: ProcessTable | null = null;
  readonly #deps: SessionDeps;
  readonly #abort = new AbortController();
  readonly #dedup = new Dedup(DEDUP_WINDOW_MS);
  readonly #ulid: () => string;
  readonly #resolver: HostResolver;
  #running: Promise<unknown> | null = null;
  #paused = false;
  /** How the current pause was made. */
  #mechanism: PauseMechanism = "signals";
  #pauseTimer: ReturnType<typeof setTimeout> | undefined;
  /** A resume of Sentry's own is under way: the tree running is expected. */
  #resuming = false;
  /** Re-stopping processes continued from outside is under way. */
  #holding = false;
  #lastHoldRecord = -Infinity;
  #heldSinceRecord = 0;
  #lastStateCheck = -Infinity;
  /** Members the last pause could not stop (no permission): holding them again would not help. */
  #unstoppable = new Set<number>();
  #acting = false;
  #killed = false;
  #pidsVersion = -1;
  #gated = false;
  /** Set once the journal refused a write (reported once; see `#journalFault`). */
  #journalFailing = false;
  /** Kinds a kernel gate refuses on the kernel's own copy of the argument (connects). */
  readonly #gatedKinds = new Set<string>();
  #explain: ((event: SensorEvent) => string | null) | null = null;
  #walled: ((event: SensorEvent) => boolean) | null = null;
  /** Refusals held for a gate's event, with their timers. */
  readonly #held = new Map<SensorEvent, ReturnType<typeof setTimeout>>();
  /** Whether the agent has been let go (an attached agent always was). */
  #started: boolean;
  #statsTimer: ReturnType<typeof setInterval> | undefined;
  #counts = { events: 0, denied: 0 };
  /** Paths the agent changed (targets of writes, creates, deletes and renames): what a rollback checks. */
  readonly #changed = new Set<string>();
  /** Until when unattributed inotify events are Sentry's own restore writes, not the agent's. */
  #ownWritesUntil = 0;
  #ownWrites = 0;
  /** A kill started by a response, awaited by {@link stop}. */
  #killing: Promise<unknown> | null = null;
  readonly #listeners = new Set<(event: AgentEvent) => void>();
  /** The policy in force: the start policy until a reload replaces it. */
  #policy: SessionConfig["policy"];
  /** Mode monitor: the policy with the mode's cap lifted, for the would-be responses. */
  #shadow: CompiledPolicy | null;
  /** The kernel gates that hold the start policy (see {@link holdInKernel}). */
  readonly #gates: string[] = [];
  /** A reload under way: reloads run one at a time. */
  #reloading: Promise<unknown> = Promise.resolve();

  /** Builds the sensors; nothing runs until `start()`. */
  constructor(config: SessionConfig, deps: SessionDeps) {
    this.config = config;
    this.#deps = deps;
    this.#started = config.kind !== "run";
    this.#ulid = deps.ulid ?? createUlid(deps.now === undefined ? {} : { now: deps.now });
    this.#policy = config.policy;
    this.#shadow = shadowOf(config.policy.compiled);
    const { compiled } = config.policy;
    const monitors = compiled.monitors;
    this.tree = new ProcSensor({
      rootPid: config.rootPid,
      adopters: config.adopters,
      excluded: config.excluded,
      // Under a kernel tier the tree only keeps members (the kernel reports every process, and
      // wakes the tree at each fork): a slower scan keeps an idle agent's cost low.
      intervalMs: treeIntervalMs(config),
      busyIntervalMs: Math.max(5, Math.round(treeIntervalMs(config) / 2)),
      platform: deps.platform,
      reportExisting: config.kind === "attach",
      rootIsLauncher: config.rootIsLauncher,
      report: !(config.kernel?.covers.processes ?? false),
      reportExits: !(config.kernel?.covers.exits ?? false),
      ...(deps.now === undefined ? {} : { now: deps.now }),
    });
    this.#resolver = new HostResolver({ names: compiled.namedHosts });
    const covers = config.kernel?.covers ??
      { files: false, network: false, processes: false, exits: false };
    const fd = new FdSensor({
      tree: this.tree,
      platform: deps.platform,
      ignore: config.ignorePaths,
      files: !covers.files,
    });
    this.sensors = [this.tree];
    this.tier = config.kernel?.tier ?? "poll";
    if (config.kernel !== undefined && config.kernel !== null) {
      this.table = new ProcessTable(deps.inspect ?? inspectProcess);
      this.sensors.push(...config.kernel.sensors({
        table: this.table,
        databasePorts: monitors.database ? compiled.database.ports : new Set(),
        tree: this.tree,
        excluded: config.excluded,
        ignorePaths: config.ignorePaths,
        policy: {
          resolved: config.policy.resolved,
          workspace: config.policy.workspace,
          home: config.policy.home,
          guarded: [...compiled.guarded],
        },
      }));
    }
    // The fd sensor runs even when the files monitor is off: the network sensor needs its sockets.
    if (!covers.files || !covers.network) this.sensors.push(fd);
    if (!covers.network && (monitors.network || monitors.database)) {
      this.sensors.push(
        new NetSensor({
          tree: this.tree,
          platform: deps.platform,
          databasePorts: monitors.database ? compiled.database.ports : new Set(),
          resolver: this.#resolver,
        }),
      );
    }
    if (monitors.cpu || monitors.memory) {
      this.sensors.push(
        new ResourceSensor({
          tree: this.tree,
          platform: deps.platform,
          cpuPercent: monitors.cpu ? compiled.limits.cpu_percent : null,
          cpuSeconds: compiled.limits.cpu_seconds,
          memoryMb: monitors.memory ? compiled.limits.memory_mb : null,
        }),
      );
    }
    if (monitors.files && !covers.files) {
      this.sensors.push(
        new WatchSensor({
          roots: watchRoots(compiled, { ignore: config.ignorePaths }),
          tree: this.tree,
          fd,
          ignore: config.ignorePaths,
          evidenceMs: config.intervalMs * 4 + 500,
          settleMs: config.intervalMs * 2 + 50,
        }),
      );
    }
    if (config.pidsFile !== null) this.tree.onScan(() => this.#writePids());
  }

  /**
   * Calls `listener` with every event right after it is journaled (the live API and the alert
   * outputs use this). Listeners must be quick and must not block. Returns the unsubscriber.
   */
  onEvent(listener: (event: AgentEvent) => void): () => void {
    this.#listeners.add(listener);
    return () => this.#listeners.delete(listener);
  }

  /** Whether the tree is paused by this session. */
  get paused(): boolean {
    return this.#paused;
  }

  /** Events journaled and denied so far. */
  get counts(): { events: number; denied: number } {
    return { ...this.#counts };
  }

  /** Starts every sensor. The first scan of the tree has run when this resolves. */
  start(): void {
    const signal = this.#abort.signal;
    const emit = (e: SensorEvent) => this.handle(e);
    // Sensors that hang off the tree register their hooks before its first scan.
    const others = this.sensors.filter((s) => s !== this.tree).map((s) => s.start(emit, signal));
    this.#running = Promise.all([
      ...others,
      this.tree.start(emit, signal),
      this.#resolver.start(signal),
    ]);
    this.#statsTimer = setInterval(() => this.#saveStats(), 2000);
  }

  /** Decides on one sensor event, journals it and responds. Returns the decided event. */
  handle(raw: SensorEvent): AgentEvent | null {
    const now = (this.#deps.now ?? Date.now)();
    if (raw.sensor === "watch" && raw.pid === null && now < this.#ownWritesUntil) {
      // The tree is stopped while a rollback restores: these changes are Sentry's own.
      this.#ownWrites++;
      return null;
    }
    if (raw.kind !== "file.read" && raw.kind.startsWith("file.")) {
      this.#changed.add(raw.target);
      if (typeof raw.detail.from === "string") this.#changed.add(raw.detail.from);
    }
    if (
      this.#explain !== null && raw.detail.result === "failed" &&
      typeof raw.detail.blocked !== "string"
    ) {
      // Sentry's own wall (Landlock) refused it: a block, with the errno the agent got.
      const errno = this.#explain(raw);
      if (errno !== null) raw.detail = { ...raw.detail, blocked: errno };
    }
    if (this.#gated && isRefusal(raw) && !this.#held.has(raw)) {
      // A kernel gate (src/session/guards.ts) refused this call and says so with its own event,
      // which may reach here a moment after the tier saw the call fail: hold the failure
      // briefly, so that the gate's event (with the block) is the one journaled and this one is
      // folded into it, not the reverse.
      raw.ts ??= new Date(now).toISOString();
      const timer = setTimeout(() => {
        this.#held.delete(raw);
        this.handle(raw);
      }, REFUSAL_HOLD_MS);
      this.#held.set(raw, timer);
      return null;
    }
    this.#held.delete(raw);
    if (!this.#dedup.admit(raw, now)) return null;
    const { ts, ...rest } = raw;
    const observation = {
      id: this.#ulid(),
      ts: ts ?? new Date(now).toISOString(),
      session: this.config.id,
      agent: this.config.agent,
      ...rest,
    };
    const policy = this.#policy.compiled;
    const decision = evaluate(observation, policy);
    if (
      decision.response === "block" && observation.detail.result === "ok" &&
      typeof observation.detail.blocked !== "string"
    ) {
      // A gate refuses every such call on the kernel's own copy of the argument (the connect
      // guard's address; Landlock's inode); a tier that saw it succeed read an argument a racing
      // thread rewrote after that copy, and the call went elsewhere. Journaled as such, and not
      // as a block that failed (which pauses).
      const gate = this.#gatedKinds.has(observation.kind) &&
          !observation.target.startsWith("unix:")
        ? "the connect guard holds the kernel's copy of the address"
        : this.#walled?.(observation) === true
        ? "Landlock checks the file the kernel reaches"
        : null;
      if (gate !== null) {
        observation.detail = { ...observation.detail, raced: true };
        decision.factors.push({
          id: "raced",
          points: 0,
          reason:
            `${gate} and would have refused this: the tier read the argument after a racing thread rewrote it, so the call went elsewhere`,
        });
        decision.response = "alert";
      }
    }
    const event: AgentEvent = { ...observation, ...decision };
    if (
      this.#shadow !== null &&
      (decision.verdict === "deny" || decision.risk >= policy.thresholds.alert)
    ) {
      // Shadow mode: what the policy asks for, journaled and acted on by no one.
      const would = evaluate(observation, this.#shadow).response;
      if (responseRank(would) > responseRank(decision.response)) event.would = would;
    }
    this.#deps.journal.append(event);
    for (const listener of this.#listeners) {
      try {
        listener(event);
      } catch {
        // A listener (the live API, an alert output) must not stop the pipeline.
      }
    }
    this.#counts.events++;
    if (event.verdict === "deny") this.#counts.denied++;
    if (event.response !== "none") {
      this.config.onNotice({ type: "event", event });
      this.#respond(event.response, event);
    }
    return event;
  }

  #respond(response: Response, event: AgentEvent): void {
    if (response === "alert") {
      this.#record("alert", "ok", { rule: event.rule, risk: event.risk }, event);
      return;
    }
    if (response === "block" && typeof event.detail.blocked === "string") {
      // The tier failed the call before it ran: journal the block with the errno the agent got.
      this.#record("block", "ok", { errno: event.detail.blocked, rule: event.rule }, event);
      if (this.#policy.resolved.block.pause && !this.#acting && !this.#killed) {
        void this.pause(event, "pause");
      }
      return;
    }
    if (this.#acting || this.#killed) return;
    if (response === "block") {
      this.config.onNotice({
        type: "warn",
        message:
          `the ${this.tier} tier cannot block this ${event.kind} before it happens: pausing the agent instead`,
      });
      void this.pause(event, "block");
    } else if (response === "pause") {
      void this.pause(event, "pause");
    } else if (response === "rollback") {
      if (this.config.protection === null) {
        this.config.onNotice({
          type: "warn",
          message:
            "rollback is off for this session (no snapshot): pausing the agent instead, no file was restored",
        });
        void this.pause(event, "rollback");
      } else {
        void this.rollback(event);
      }
    } else if (response === "kill") {
      this.#killing = this.kill(event);
    }
  }

  /**
   * Stops every process of the tree and verifies it in /proc: by freezing the session's cgroup
   * when it has one (atomic: no process forked meanwhile escapes), else with signals, rescanning
   * until no member runs (see tree_actions.ts). Journals which mechanism did it, and arms the
   * pause timeout.
   */
  async pause(
    event: AgentEvent | null,
    why: "pause" | "block" | "rollback" | "manual",
  ): Promise<ControlResult> {
    // Resumed from outside since the last scan? A violation now must not be lost to that.
    if (this.#paused) this.#reconcile(true);
    if (this.#paused) return { done: this.tree.pids(), failed: [] };
    this.#acting = true;
    try {
      const started = performance.now();
      const startedAt = epochMs();
      const outcome = await pauseAgent(this.#agentTree());
      this.#paused = true;
      this.#mechanism = outcome.fallback === undefined ? outcome.mechanism : "signals";
      this.#unstoppable = new Set(outcome.failed.map((f) => f.pid));
      this.#armPauseTimeout();
      const stopped = outcome.done;
      const failed = outcome.failed;
      const result: ResponseOutcome = failed.length === 0
        ? "ok"
        : stopped.length > 0
        ? "partial"
        : "failed";
      const action: ResponseAction = why === "rollback"
        ? "rollback"
        : why === "block"
        ? "block"
        : "pause";
      this.#record(action, result, {
        stopped,
        failed,
        mechanism: this.#mechanism,
        frozenAtMs: outcome.frozenAt,
        // From the decision to the whole tree frozen (stopped, with signals).
        freezeMs: outcome.frozenAt === null
          ? null
          : Math.round((outcome.frozenAt - startedAt) * 1000) / 1000,
        tookMs: Math.round((performance.now() - started) * 1000) / 1000,
        ...(outcome.fallback === undefined ? {} : { cgroupFailed: outcome.fallback }),
        ...(why === "rollback" ? { fallback: "pause", restored: 0 } : {}),
        ...(why === "block" ? { fallback: "pause" } : {}),
      }, event);
      this.#persist(() => this.#deps.journal.updateSession(this.config.id, { state: "paused" }));
      if (outcome.fallback !== undefined) {
        this.config.onNotice({
          type: "warn",
          message: `the cgroup freezer failed (${outcome.fallback}): paused with signals instead`,
        });
      }
      this.config.onNotice({
        type: "response",
        action,
        outcome: result,
        message:
          `paused the agent (${stopped.length} process${stopped.length === 1 ? "" : "es"} stopped` +
          (failed.length > 0 ? `, ${failed.length} could not be stopped` : "") +
          `) ${this.#mechanism === "cgroup" ? "in its frozen cgroup" : "with signals"}` +
          `; resume with: sentry resume ${this.config.id}` + this.#timeoutHint(),
        ...(event === null ? {} : { event }),
      });
      return { done: stopped, failed };
    } finally {
      this.#acting = false;
    }
  }

  /** The tree as the responders act on it: its members by identity, and its cgroup. */
  #agentTree(): AgentTree {
    return {
      control: this.#deps.control,
      cgroup: this.config.cgroup ?? null,
      list: () => this.#refs(),
      rescan: () => this.tree.scan(),
      sessions: this.config.agentSessions ?? [],
    };
  }

  /** The tree's members, each with its start time. */
  #refs(): ProcessRef[] {
    return [...this.tree.members.values()].map((m) => ({ pid: m.pid, start: m.startTicks }));
  }

  #timeoutHint(): string {
    const ms = this.config.pauseTimeoutMs;
    if (ms === undefined || ms === null) return "";
    return ` (or it is ${this.config.onPauseTimeout === "resume" ? "resumed" : "killed"} in ${
      formatMs(ms)
    })`;
  }

  /** Starts the pause timeout: an unattended pause ends in a resume or a kill. */
  #armPauseTimeout(): void {
    clearTimeout(this.#pauseTimer);
    const ms = this.config.pauseTimeoutMs;
    if (ms === undefined || ms === null) return;
    this.#pauseTimer = setTimeout(() => void this.#pauseTimedOut(ms), ms);
  }

  async #pauseTimedOut(ms: number): Promise<void> {
    if (!this.#paused || this.#killed) return;
    if (this.#acting || this.#holding) {
      // A rollback is restoring files: let it finish first.
      this.#pauseTimer = setTimeout(() => void this.#pauseTimedOut(ms), 100);
      return;
    }
    const how = this.config.onPauseTimeout ?? "kill";
    this.config.onNotice({
      type: "warn",
      message: `the agent stayed paused for ${formatMs(ms)} with nobody resuming it: ${
        how === "kill" ? "killing" : "resuming"
      } it (pause timeout)`,
    });
    const by = "pause timeout";
    if (how === "kill") await this.kill(null, { by, timeoutMs: ms });
    else await this.resume(by, { timeoutMs: ms });
  }

  /**
   * Reverse and pause: stops the tree, restores every protected path the agent changed to the
   * snapshot taken at start (verified), journals each path with its outcome, and leaves the
   * agent paused, or kills it when the policy's `rollback.after` says so.
   */
  async rollback(
    event: AgentEvent | null,
    request?: ManualRollback,
  ): Promise<RollbackResult | null> {
    const protection = this.config.protection;
    if (protection === null || this.#acting || this.#killed) return null;
    if (!this.#paused) await this.pause(event, request === undefined ? "pause" : "manual");
    this.#acting = true;
    this.#ownWritesUntil = Infinity;
    try {
      // Automatic: only what the sensors saw change. Manual: every protected path is compared.
      const result = await rollback(protection.store, {
        session: this.config.id,
        snapshot: protection.snapshot,
        ...(request === undefined ? { paths: this.#changed } : {}),
        ...(request?.filter === undefined ? {} : { filter: request.filter }),
      });
      const restore = result.restore;
      if (restore === null) return result;
      journalRestore(this.#deps.journal, restore, request?.by ?? "automatic rollback");
      const c = restore.counts;
      this.config.onNotice({
        type: "response",
        action: "rollback",
        outcome: restore.ok ? "ok" : "partial",
        message:
          `${
            restore.ok ? "rolled back" : "rollback INCOMPLETE:"
          } ${c.restored} restored, ${c.recreated} recreated, ` +
          `${c.removed} removed to quarantine, ${c.failed} failed; the agent stays paused` +
          ` (resume: sentry resume ${this.config.id}; undo: sentry rollback --undo ${this.config.id})`,
        ...(event === null ? {} : { event }),
      });
      for (const r of restore.results) {
        if (r.outcome === "failed") {
          this.config.onNotice({
            type: "warn",
            message: `could not restore "${r.path}": ${r.reason ?? "unknown reason"}`,
          });
        }
      }
      if (request?.filter === undefined) this.#changed.clear();
      return result;
    } catch (error) {
      this.#record("rollback", "failed", { reason: (error as Error).message }, event);
      this.config.onNotice({
        type: "warn",
        message: `rollback FAILED: ${(error as Error).message}; the agent stays paused`,
      });
      if (request !== undefined) throw error;
      return null;
    } finally {
      // Keep ignoring unattributed events until inotify has delivered the restore's own writes.
      this.#ownWritesUntil = (this.#deps.now ?? Date.now)() + this.config.intervalMs * 4 + 500;
      this.#acting = false;
      if (this.config.afterRollback === "kill") await this.kill(event);
    }
  }

  /**
   * Resumes the tree (SIGCONT, then the cgroup thawed) and verifies no process is left
   * stopped. `by` says who asked, for the journal.
   */
  async resume(by: string, extra: Record<string, unknown> = {}): Promise<ControlResult> {
    clearTimeout(this.#pauseTimer);
    this.#resuming = true;
    try {
      const result = await resumeAgent(this.#agentTree());
      this.#paused = false;
      const outcome: ResponseOutcome = result.failed.length === 0 ? "ok" : "partial";
      this.#record("resume", outcome, {
        resumed: result.done,
        failed: result.failed,
        by,
        mechanism: result.mechanism,
        ...extra,
      }, null);
      if (!this.#killed) {
        this.#persist(() => this.#deps.journal.updateSession(this.config.id, { state: "running" }));
      }
      this.config.onNotice({
        type: "response",
        action: "resume",
        outcome,
        message: `resumed the agent (${result.done.length} processes, ${by})`,
      });
      return { done: result.done, failed: result.failed };
    } finally {
      this.#resuming = false;
    }
  }

  /**
   * Keeps the session's state true to the tree; runs after every scan of the tree.
   *
   * While paused, a member found running, or the cgroup found thawed, was resumed from outside
   * this process. When the journal says the session runs again, someone resumed it through
   * Sentry (`sentry resume`, another process's API, which journal it first): the session takes
   * it as resumed. Otherwise a plain SIGCONT from outside did it (the agent's own, or a
   * person's): the pause holds, the tree is stopped again, and the attempt is journaled.
   *
   * While not paused, a stopped root (or a frozen cgroup) with the journal saying `paused` is a
   * pause from another process's API: the session takes it as its own (and its timeout runs).
   */
  noticeExternalResume(): void {
    this.#reconcile(false);
  }

  /**
   * {@link noticeExternalResume}, on the states of the last scan, or (`fresh`) on the states in
   * /proc now, without a scan (whose hooks could emit events, and so respond, re-entrantly).
   */
  #reconcile(fresh: boolean): void {
    if (this.#acting || this.#killed || this.#resuming || this.#holding) return;
    const cgroup = this.config.cgroup ?? null;
    if (this.#paused) {
      const thawed = this.#mechanism === "cgroup" && cgroup !== null && !cgroup.freezeRequested();
      const stateOf = (m: { pid: number; startTicks: number; stat: { state: string } }) => {
        if (!fresh) return m.stat.state;
        const now = this.#deps.platform.readStat(m.pid);
        return now === null || now.startTicks !== m.startTicks ? "X" : now.state;
      };
      const running = [...this.tree.members.values()].filter((m) =>
        !isStopped(stateOf(m)) && !this.#unstoppable.has(m.pid)
      );
      if (!thawed && running.length === 0) return;
      const state = this.#journalState();
      if (state === "killed") {
        this.#paused = false;
        clearTimeout(this.#pauseTimer);
        this.config.onNotice({ type: "info", message: "the agent was killed from outside" });
        return;
      }
      if (state !== "paused") {
        this.#paused = false;
        clearTimeout(this.#pauseTimer);
        // Finish what the resumer started, should it have stopped halfway: never leave it frozen.
        if (cgroup?.freezeRequested() === true) releaseAgentNow(this.#agentTree(), "resume");
        this.config.onNotice({
          type: "info",
          message: "the agent was resumed from outside (sentry resume, or the API)",
        });
        return;
      }
      void this.#hold(running.map((m) => m.pid), thawed);
      return;
    }
    const root = this.tree.members.get(this.tree.rootPid);
    const stopped = (root !== undefined && isStopped(root.stat.state)) ||
      cgroup?.freezeRequested() === true;
    if (!stopped) return;
    const now = performance.now();
    // The launcher is stopped until the agent starts, and a process may stop itself: look up
    // the journal at most once a second.
    if (now - this.#lastStateCheck < 1000) return;
    this.#lastStateCheck = now;
    if (this.#journalState() !== "paused") return;
    this.#paused = true;
    this.#mechanism = cgroup?.freezeRequested() === true ? "cgroup" : "signals";
    this.#armPauseTimeout();
    this.config.onNotice({
      type: "info",
      message: "the agent was paused from outside (the API of another Sentry process)",
    });
  }

  /** The session's state in the journal, as another process may have changed it. */
  #journalState(): string | null {
    try {
      return this.#deps.journal.getSession(this.config.id).state;
    } catch {
      return null;
    }
  }

  /** Stops again processes continued from outside while paused, and journals it (folded). */
  async #hold(continued: number[], thawed: boolean): Promise<void> {
    this.#holding = true;
    try {
      const outcome = await pauseAgent(this.#agentTree());
      this.#unstoppable = new Set(outcome.failed.map((f) => f.pid));
      this.#heldSinceRecord++;
      const now = performance.now();
      // An agent that keeps sending SIGCONT would fill the journal: one record a second.
      if (now - this.#lastHoldRecord < 1000) return;
      this.#lastHoldRecord = now;
      this.#record("pause", outcome.failed.length === 0 ? "ok" : "partial", {
        by: "hold",
        reason: thawed
          ? "the cgroup was thawed from outside Sentry while paused"
          : "processes were continued from outside Sentry while paused",
        continued,
        times: this.#heldSinceRecord,
        stopped: outcome.done,
        failed: outcome.failed,
        mechanism: outcome.mechanism,
      }, null);
      this.#heldSinceRecord = 0;
      this.config.onNotice({
        type: "warn",
        message:
          `pid(s) ${
            continued.join(", ")
          } were continued from outside Sentry while paused: stopped again ` +
          `(resume with: sentry resume ${this.config.id})`,
      });
    } finally {
      this.#holding = false;
    }
  }

  /** Terminates the tree: SIGTERM, then SIGKILL after the grace period. */
  async kill(
    event: AgentEvent | null,
    extra: Record<string, unknown> = {},
  ): Promise<ControlResult & { forced: number[] }> {
    if (this.#killed) return { done: [], failed: [], forced: [] };
    this.#killed = true;
    clearTimeout(this.#pauseTimer);
    this.tree.scan();
    const result = await killAgent(this.#agentTree(), { graceMs: this.config.killGraceMs });
    this.#paused = false;
    const outcome: ResponseOutcome = result.failed.length === 0 ? "ok" : "partial";
    this.#record("kill", outcome, {
      killed: result.done,
      forced: result.forced,
      failed: result.failed,
      ...extra,
    }, event);
    this.#persist(() => this.#deps.journal.updateSession(this.config.id, { state: "killed" }));
    this.config.onNotice({
      type: "response",
      action: "kill",
      outcome,
      message: `killed the agent (${result.done.length} processes` +
        (result.forced.length > 0 ? `, ${result.forced.length} needed SIGKILL` : "") + ")",
      ...(event === null ? {} : { event }),
    });
    return result;
  }

  /** Whether this session killed the tree. */
  get killed(): boolean {
    return this.#killed;
  }

  /**
   * Leaves no process stopped: resumes the tree, or kills it when the session says so. Safe to
   * call from any exit path, more than once.
   */
  async release(): Promise<void> {
    if (!this.#paused) return;
    if (this.config.onExit === "kill") await this.kill(null);
    else await this.resume("on exit");
  }

  /**
   * The same as {@link release}, synchronously, for exit paths that cannot wait: SIGCONT (or
   * SIGKILL) to every member, and the cgroup thawed. Never leaves the tree frozen.
   */
  releaseNow(): void {
    clearTimeout(this.#pauseTimer);
    if (!this.#paused) {
      // Frozen by something this session did not take for a pause: thaw it all the same.
      if (this.config.cgroup?.freezeRequested() === true) {
        releaseAgentNow(this.#agentTree(), "resume");
      }
      return;
    }
    releaseAgentNow(this.#agentTree(), this.config.onExit);
    this.#paused = false;
  }

  /** Stops the sensors, saves their counters and flushes the journal. */
  /** The policy's host names with the addresses they resolve to now. */
  hostAddresses(): Map<string, string[]> {
    return this.#resolver.addresses();
  }

  /**
   * Says that a kernel gate blocks for this session and journals its own events for what it
   * refused: the tier's events of calls that failed with EPERM or EACCES are then held a moment
   * (see {@link handle}).
   */
  gate(kinds: readonly Kind[] = []): void {
    this.#gated = true;
    for (const kind of kinds) this.#gatedKinds.add(kind);
  }

  /** The policy in force: the start policy, or the last one a reload applied. */
  get policy(): SessionConfig["policy"] {
    return this.#policy;
  }

  /**
   * Says that a kernel gate (`the Landlock wall`, `the seccomp supervisor`, `the fanotify
   * guard`, `the connect guard`) refuses calls on the start policy: a reload may then not widen
   * it (see {@link reload}).
   */
  holdInKernel(gate: string): void {
    if (!this.#gates.includes(gate)) this.#gates.push(gate);
  }

  /**
   * Replaces the policy for the events that follow, and journals the change with the old and
   * new policy hashes. `file` is the policy file or template to load, or null to read the
   * session's own policy again (SIGHUP). A policy that does not load or compile, or that needs
   * what a live session cannot change (see src/session/reload.ts), is refused, journaled as
   * such, and the old policy stays. Reloads run one at a time. Never throws for a bad policy.
   */
  reload(request: { file: string | null; by: string; nonce?: string }): Promise<ReloadResult> {
    const run = this.#reloading.then(() => this.#reload(request));
    this.#reloading = run.catch(() => {});
    return run;
  }

  async #reload(
    request: { file: string | null; by: string; nonce?: string },
  ): Promise<ReloadResult> {
    const before = this.#policy;
    const oldHash = policyHash(before.resolved);
    const asked = request.file ?? this.config.policySource ?? before.resolved.name;
    const base = { session: this.config.id, policy: asked, oldHash, by: request.by };
    const refuse = (reason: string, newHash: string | null): ReloadResult => {
      this.#persist(() =>
        this.#deps.journal.recordPolicyReload({
          session: this.config.id,
          outcome: "refused",
          policy: asked,
          oldHash,
          newHash,
          detail: { by: request.by, reason, ...nonceOf(request) },
        })
      );
      this.config.onNotice({
        type: "warn",
        message: `policy reload refused (${request.by}): ${reason}; the policy in force stays`,
      });
      return { ...base, outcome: "refused", newHash, reason, fixed: [] };
    };
    if (this.config.loadPolicy === undefined) {
      return refuse("this session cannot load a policy", null);
    }
    let next: SessionConfig["policy"];
    try {
      next = await this.config.loadPolicy(request.file);
    } catch (error) {
      return refuse(error instanceof Error ? error.message : String(error), null);
    }
    const newHash = policyHash(next.resolved);
    const check = checkReload(livePolicy(next), {
      gates: this.#gates,
      start: livePolicy(this.config.policy),
    });
    if (check.refusal !== null) return refuse(check.refusal, newHash);
    this.#policy = next;
    this.#shadow = shadowOf(next.compiled);
    this.#persist(() => {
      this.#deps.journal.recordPolicyReload({
        session: this.config.id,
        outcome: "applied",
        policy: asked,
        oldHash,
        newHash,
        detail: {
          by: request.by,
          name: next.resolved.name,
          mode: next.resolved.mode,
          fixed: check.fixed,
          ...nonceOf(request),
        },
      });
      this.#deps.journal.updateSession(this.config.id, {
        policy: next.resolved.name,
        mode: next.resolved.mode,
      });
    });
    this.config.onNotice({
      type: "info",
      message:
        `policy reloaded (${request.by}): ${next.resolved.name}, mode ${next.resolved.mode}` +
        ` (sha256 ${oldHash.slice(0, 12)} -> ${newHash.slice(0, 12)}) decides what follows` +
        (check.fixed.length > 0 ? `; as started: ${check.fixed.join("; ")}` : ""),
    });
    return { ...base, outcome: "applied", newHash, reason: null, fixed: check.fixed };
  }

  /**
   * Tells which refusals the agent's wall made (its Landlock plan): `explain` returns the errno
   * when the wall is why a call failed, else null. Those are journaled as blocks.
   */
  explainRefusals(
    explain: (event: SensorEvent) => string | null,
    walled?: (event: SensorEvent) => boolean,
  ): void {
    this.#explain = explain;
    this.#walled = walled ?? null;
  }

  async stop(): Promise<void> {
    clearInterval(this.#statsTimer);
    for (const [raw, timer] of this.#held) {
      clearTimeout(timer);
      this.handle(raw);
    }
    clearTimeout(this.#pauseTimer);
    // A kill the policy started finishes (and is journaled and said) before the session ends.
    await this.#killing?.catch(() => {});
    // So does a reload under way (journaled before the journal closes).
    await this.#reloading;
    this.#abort.abort();
    await this.#running;
    this.#saveStats(true);
    this.#persist(() => this.#deps.journal.flush());
    if (this.config.pidsFile !== null) {
      try {
        Deno.removeSync(this.config.pidsFile);
      } catch {
        // Never written, or already gone.
      }
    }
  }

  /** Every sensor's counters, with repeats folded by the session added in. */
  stats(): SensorStats[] {
    return this.sensors.map((s) => {
      const stats = s.stats();
      return { ...stats, deduplicated: stats.deduplicated + this.#dedup.folded(s.name) };
    });
  }

  #saveStats(final = false): void {
    const stats = this.stats();
    if (this.#ownWrites > 0) {
      stats.find((s) => s.sensor === "watch")?.blindSpots.push({
        id: "rollback_own_writes",
        reason:
          "file events from Sentry's own restores while the agent was stopped (not journaled)",
        count: this.#ownWrites,
      });
    }
    // At the end, a name whose lookup never answered is as unresolved as one that failed.
    const unresolved = [
      ...new Set([...this.#resolver.unresolved(), ...(final ? this.#resolver.pending() : [])]),
    ].sort();
    if (unresolved.length > 0) {
      (stats.find((s) => s.sensor === "net") ?? stats[0])?.blindSpots.push({
        id: "unresolved_hosts",
        reason: `policy host names that could not be resolved, so they match no address: ${
          unresolved.join(", ")
        }`,
        count: unresolved.length,
      });
    }
    this.#persist(() => this.#deps.journal.putSensorStats(this.config.id, stats));
    // A batch the journal could not write stays buffered and is retried; say so once.
    const { writeErrors, lastError } = this.#deps.journal.metrics();
    if (writeErrors > 0 && !this.#journalFailing) {
      this.#journalFault(new Error(lastError ?? "a batch could not be written"));
    }
  }

  /**
   * Runs a direct journal write. A write the disk refuses (full, read-only) never stops Sentry:
   * it is reported once, and the session applies the policy's `on_journal_error`.
   */
  #persist(write: () => void): void {
    try {
      write();
    } catch (error) {
      this.#journalFault(error);
    }
  }

  /**
   * The journal cannot be written: says so on stderr, once, and applies the policy's choice:
   * `pause` (default) stops the agent until someone comes, since it would otherwise act with
   * nothing journaled; `continue` lets it go on, and what cannot be stored is counted as dropped
   * (`sentry report`, `/metrics`). What is journaled already stays readable.
   */
  #journalFault(error: unknown): void {
    if (this.#journalFailing) return;
    this.#journalFailing = true;
    const choice = this.#policy.resolved.on_journal_error;
    this.config.onNotice({
      type: "warn",
      message: `the journal cannot be written (${
        error instanceof Error ? error.message : String(error)
      }): ${
        choice === "pause"
          ? "pausing the agent (on_journal_error: pause); free space, then sentry resume"
          : "the agent goes on (on_journal_error: continue); what cannot be stored is counted as dropped"
      }`,
    });
    if (choice === "pause" && !this.#paused && !this.#killed && !this.#abort.signal.aborted) {
      void this.pause(null, "manual").catch(() => {});
    }
  }

  #record(
    action: ResponseAction,
    outcome: ResponseOutcome,
    detail: Record<string, unknown>,
    event: AgentEvent | null,
  ): void {
    this.#deps.journal.recordResponse({
      session: this.config.id,
      eventId: event?.id ?? null,
      action,
      outcome,
      detail,
    });
  }

  #writePids(): void {
    if (this.tree.version === this.#pidsVersion || this.config.pidsFile === null) return;
    this.#pidsVersion = this.tree.version;
    // On failure the watchdog works from an older list; the next change writes again.
    writePidsFile(this.config.pidsFile, {
      processes: this.#refs(),
      cgroup: this.config.cgroup?.spec() ?? null,
      starting: !this.#started,
    });
  }

  /**
   * Marks the session started: the agent has been let go. Until then the pids file says
   * `starting`, and a watchdog that finds it (Sentry died during start-up) kills the tree.
   */
  markStarted(): void {
    if (this.#started) return;
    this.#started = true;
    this.#pidsVersion = -1;
    this.#writePids();
  }
}

/** What {@link Session.reload} did. */
export interface ReloadResult {
  session: string;
  outcome: "applied" | "refused";
  /** The policy asked for: a file, a template, or the session's own. */
  policy: string;
  /** Who asked. */
  by: string;
  /** The sha256 of the resolved policy in force before. */
  oldHash: string;
  /** Of the policy asked for, or null when it did not load. */
  newHash: string | null;
  /** Why it was refused, or null. */
  reason: string | null;
  /** What stays as the session started although the new policy says otherwise. */
  fixed: string[];
}

function nonceOf(request: { nonce?: string }): { nonce?: string } {
  return request.nonce === undefined ? {} : { nonce: request.nonce };
}

function livePolicy(policy: SessionConfig["policy"]): LivePolicy {
  return {
    resolved: policy.resolved,
    namedHosts: policy.compiled.namedHosts,
    modeCap: policy.compiled.modeCap,
  };
}

/**
 * For mode monitor, the policy with the mode's cap lifted: what its thresholds and rules ask
 * for (shadow mode journals it as `would`). Null in every other mode.
 */
function shadowOf(compiled: CompiledPolicy): CompiledPolicy | null {
  if (compiled.policy.mode !== "monitor") return null;
  return { ...compiled, modeCap: responseRank("kill") };
}

/**
 * Whether a /proc state letter is a process that runs no code of its own: stopped, ended, or in
 * uninterruptible sleep (where a pending SIGSTOP or a freeze takes effect as it wakes; cgroup v1
 * shows frozen processes so).
 */
function isStopped(state: string): boolean {
  return state === "T" || state === "t" || state === "Z" || state === "X" || state === "D";
}

/** A duration for messages: `500 ms`, `30 s`, `10 min`. */
function formatMs(ms: number): string {
  if (ms < 1000) return `${ms} ms`;
  if (ms < 120_000) return `${Math.round(ms / 100) / 10} s`;
  return `${Math.round(ms / 6000) / 10} min`;
}

/** How long a tier's event of a refused call waits for a gate's own event of it. */
const REFUSAL_HOLD_MS = 50;

/** A file action or exec the kernel refused with EPERM or EACCES, as a tier saw it. */
function isRefusal(event: SensorEvent): boolean {
  return (event.kind.startsWith("file.") || event.kind === "proc.exec" ||
    event.kind === "net.connect") &&
    event.detail.result === "failed" && typeof event.detail.blocked !== "string" &&
    (event.detail.errno === "EPERM" || event.detail.errno === "EACCES");
}
