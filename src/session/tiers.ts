import {
  EbpfTracer,
  listChildren,
  probeFanotify,
  readCmdline,
  readExe,
  readStat,
  seccompAvailability,
} from "../platform/mod.ts";
import {
  EbpfSensor,
  FanotifySensor,
  type ProcessInfo,
  ProcessTable,
  type ProcSensor,
  SeccompLaunchError,
  SeccompSensor,
  SeccompSupervisor,
  type Sensor,
} from "../sensors/mod.ts";
import type { ResolvedPolicy } from "../policy/mod.ts";
import { hostPlanFs, landlockAbi } from "../platform/landlock_linux.ts";
import type { LandlockPlan } from "../platform/landlock_plan.ts";
import { type LandlockNotice, landlockNotices, landlockPlanFor } from "./landlock_policy.ts";

/** The sensing tiers, most exact first. */
export const TIERS = ["ebpf", "seccomp", "fanotify", "poll"] as const;

/** One sensing tier. */
export type Tier = typeof TIERS[number];

/** What `--sensor` asks for: one tier, or the most exact the host allows. */
export type TierRequest = Tier | "auto";

/** What each tier sees, in words, for `sentry doctor`, the session header and the README. */
export const TIER_SUMMARY: Readonly<Record<Tier, string>> = {
  ebpf:
    "kernel tracepoints, tree filtered in the kernel: every open, delete, rename, link, connect, exec and exit, with pid and result, and every signal, ptrace or process memory access aimed outside the tree",
  seccomp:
    "seccomp user notification (no root, run only): every chosen syscall of the tree, stopped until the supervisor answers",
  fanotify:
    "fanotify and the proc connector (root): exact exec, fork and exit, file events with pids; connections polled",
  poll: "polling /proc and inotify: sees what lasts longer than one interval",
};

/** Which kinds of action a kernel tier reports itself (the poll sensors cover the rest). */
export interface TierCoverage {
  files: boolean;
  network: boolean;
  /** Execs (and forks, to attribute children). */
  processes: boolean;
  /** Exits with their status. */
  exits: boolean;
}

/** What a session needs to build a tier's sensors. */
export interface TierContext {
  table: ProcessTable;
  databasePorts: ReadonlySet<number>;
  tree: ProcSensor;
  /** Sentry's own processes, never part of the tree. */
  excluded: readonly number[];
  /** Sentry's own files, never reported. */
  ignorePaths: readonly string[];
  /** The session's policy, for a tier that decides before a call runs (seccomp). */
  policy: { resolved: ResolvedPolicy; workspace: string; home: string; guarded?: string[] };
}

/** A kernel sensing tier that is loaded and ready: its sensors, and the kernel resources it owns. */
export interface KernelTier {
  readonly tier: Exclude<Tier, "poll">;
  readonly covers: TierCoverage;
  /** Builds the tier's sensors for a session. */
  sensors(context: TierContext): Sensor[];
  /**
   * Tracks the agent's tree from its root. For `attach`, the existing descendants are tracked
   * top down, each before its children are listed, so that no child escapes between the two.
   */
  track(rootPid: number, options: { existing: boolean }): void;
  /**
   * Resolves once the tier sees the whole tree (its sensors started and seeded): `run` lets the
   * agent go only then.
   */
  ready(): Promise<void>;
  /**
   * How `run` starts the agent under this tier, when it needs its own launcher (seccomp
   * installs its filter in a launcher that then execs the agent in the same pid).
   */
  readonly launcher?: TierLauncher;
  /**
   * What the tier has to say at start (the seccomp tier: what Landlock walls off, and the deny
   * rules it cannot enforce); the caller prints them.
   */
  readonly notices?: readonly LandlockNotice[];
  /** Releases every kernel resource; safe to call twice. */
  close(): void | Promise<void>;
}

/** A tier's own launcher: `run` spawns `args(command)` instead of the stopping shell. */
export interface TierLauncher {
  /** The argv of the launcher for a command. */
  args(command: readonly string[]): string[];
  /**
   * Resolves once the launcher waits for `go()` with the tier in place (it has not run a single
   * instruction of the agent). Throws a {@link TierLaunchError} when the command cannot start.
   */
  attached(exited: Promise<unknown>): Promise<void>;
  /** Lets the agent run. */
  go(): void;
}

/** The launcher could not start the agent: the command is missing (127) or not executable (126). */
export class TierLaunchError extends Error {
  /** The shell's exit code for the failure. */
  readonly code: number;

  /** Builds the error with its exit code. */
  constructor(message: string, code: number) {
    super(message);
    this.name = "TierLaunchError";
    this.code = code;
  }
}

/** What a tier may need to know when it opens, before the agent starts. */
export interface TierOpenOptions {
  /**
   * The session's policy: the seccomp tier maps its deny lists onto Landlock (mode `block`)
   * in the launcher, which runs before the tier's sensors get the policy.
   */
  policy?:
    | { resolved: ResolvedPolicy; workspace: string; home: string; guarded?: string[] }
    | undefined;
  /** The environment Sentry's own directories are found from; default this process's. */
  env?: Readonly<Record<string, string>> | undefined;
}

/** Opens a tier, or throws why it cannot run here. */
export type TierOpener = (options?: TierOpenOptions) => KernelTier | Promise<KernelTier>;

/** Why a tier was not used, for the notice at start and `sentry doctor`. */
export interface TierSkip {
  tier: Tier;
  reason: string;
}

/** The tiers `auto` tries for a command, in order. */
export function tierOrder(kind: "run" | "attach"): Tier[] {
  return kind === "run" ? [...TIERS] : ["ebpf", "fanotify", "poll"];
}

/** Reads what the process table needs of a live process from /proc. */
export function inspectProcess(pid: number): ProcessInfo | null {
  const stat = readStat(pid);
  if (stat === null) return null;
  return {
    ppid: stat.ppid,
    exe: readExe(pid)?.path ?? null,
    cmdline: readCmdline(pid) ?? [],
  };
}

/** Tracks `root` and every descendant it has now, parents before children. */
export function trackTree(root: number, track: (pid: number) => void): number {
  let count = 0;
  const queue = [root];
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    track(pid);
    count++;
    // Listed after the parent is tracked: a child forked from now on is tracked by the kernel.
    queue.push(...(listChildren(pid) ?? []));
  }
  return count;
}

/** The eBPF tier: the program is loaded and attached when this returns. */
export function openEbpfTier(): KernelTier {
  const tracer = EbpfTracer.open();
  let tree: ProcSensor | null = null;
  return {
    tier: "ebpf",
    covers: { files: true, network: true, processes: true, exits: true },
    sensors(context) {
      tree = context.tree;
      return [
        new EbpfSensor({
          tracer,
          table: context.table,
          databasePorts: context.databasePorts,
          // A new process joins the poll tree (pause and kill act on it) at the next scan.
          onFork: () => tree?.wake(),
        }),
      ];
    },
    track(rootPid, options) {
      if (options.existing) trackTree(rootPid, (pid) => tracer.track(pid));
      else tracer.track(rootPid);
    },
    ready: () => Promise.resolve(),
    close() {
      tracer.close();
    },
  };
}

/** Options for {@link openSeccompTier}. */
export interface SeccompTierOptions extends TierOpenOptions {
  /** Apply Landlock in the launcher when the kernel has it; default true (false: benchmarks). */
  landlock?: boolean;
}

/**
 * The seccomp tier (no root needed, `run` only): a launcher installs a seccomp user-notification
 * filter and hands its listener to the supervisor, whose worker observes every chosen syscall of
 * the tree while the caller waits. If Sentry dies, the tree's filtered syscalls fail with ENOSYS:
 * it fails closed.
 *
 * Where the kernel has Landlock, the launcher first restricts itself (and so the agent) to a
 * plan made from Sentry's own directories and, in mode `block`, the policy's deny lists (see
 * src/session/landlock_policy.ts); `notices` says what it walls off and what it cannot. The plan
 * is made again for each launch, so that it sees the directories as they are then.
 */
export async function openSeccompTier(options: SeccompTierOptions = {}): Promise<KernelTier> {
  const available = seccompAvailability();
  if (!available.ok) throw new Error(available.reason);
  const support = options.landlock === false ? { abi: 0, reason: "switched off" } : landlockAbi();
  const env = options.env ?? Deno.env.toObject();
  const plan = (): LandlockPlan | null =>
    support.abi < 1 ? null : landlockPlanFor({
      policy: options.policy,
      env,
      cwd: Deno.cwd(),
      abi: support.abi,
      host: hostPlanFs(),
    });
  const first = plan();
  const notices = options.landlock === false
    ? []
    : landlockNotices({ plan: first, reason: support.reason, policy: options.policy });
  const supervisor = await SeccompSupervisor.create();
  /** The plan the launcher was given: the worker must not open for the agent what it denies. */
  let launched: LandlockPlan | null = null;
  let sensor: SeccompSensor | null = null;
  let closed = false;
  return {
    tier: "seccomp",
    // No syscall marks an exit: the poll tree reports exits, with the root's status.
    covers: { files: true, network: true, processes: true, exits: false },
    sensors(context) {
      sensor = supervisor.createSensor({
        table: context.table,
        databasePorts: context.databasePorts,
        // Decided in the worker while the caller waits: block mode, when the policy blocks.
        policy: context.policy,
        landlock: launched,
      });
      return [sensor];
    },
    // The filter is inherited from the launcher by every descendant: nothing to track.
    track() {},
    ready: () => sensor?.ready() ?? Promise.resolve(),
    notices,
    launcher: {
      args(command) {
        try {
          launched = plan();
        } catch {
          // The directories changed under the planner: the plan made at open still walls them.
          launched = first;
        }
        return supervisor.launcherArgs(command, launched === null ? {} : { landlock: launched });
      },
      async attached(exited) {
        try {
          await supervisor.awaitListener({ exited });
        } catch (error) {
          if (error instanceof SeccompLaunchError) {
            throw new TierLaunchError(error.message, error.code);
          }
          throw error;
        }
      },
      go: () => supervisor.go(),
    },
    async close() {
      if (closed) return;
      closed = true;
      await supervisor.close();
    },
  };
}

/**
 * The fanotify + proc connector tier (root, no eBPF). Its sensor opens the fanotify group and
 * the proc connector when the session starts and seeds the tree from the root; this checks
 * first that the host allows both, so that `auto` can fall back.
 */
export function openFanotifyTier(): KernelTier {
  if (Deno.uid() !== 0) {
    throw new Error("it needs root (fanotify marks on filesystems and the proc connector)");
  }
  const probe = probeFanotify();
  if (!probe.permission) {
    throw new Error(`fanotify is not available: ${probe.permissionError ?? "unknown reason"}`);
  }
  let sensor: FanotifySensor | null = null;
  return {
    tier: "fanotify",
    // Connections stay with the poll tier's network sensor: fanotify does not see them.
    covers: { files: true, network: false, processes: true, exits: true },
    sensors(context) {
      sensor = new FanotifySensor({
        rootPid: context.tree.rootPid,
        table: context.table,
        excluded: [...context.excluded],
        ignorePaths: context.ignorePaths,
        onFork: () => context.tree.wake(),
      });
      return [sensor];
    },
    // The sensor seeds the tree itself from the root, top down.
    track() {},
    ready: () => sensor?.ready ?? Promise.resolve(),
    // The sensor releases the group and the socket when the session stops it.
    close() {},
  };
}

/** Why a tier cannot run, thrown when `--sensor` names one the host does not allow. */
export class TierError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "TierError";
  }
}

/**
 * Opens the tier `--sensor` asks for, or with `auto` the most exact one the host allows,
 * trying each in order and keeping why the others could not run. A tier asked for by name that
 * cannot run throws a {@link TierError} naming the reason; `poll` always works.
 */
export async function openTier(
  request: TierRequest,
  options: {
    kind: "run" | "attach";
    openers?: Partial<Record<Tier, TierOpener>>;
  } & TierOpenOptions,
): Promise<{ tier: KernelTier | null; name: Tier; skipped: TierSkip[] }> {
  const openers: Partial<Record<Tier, TierOpener>> = {
    ebpf: openEbpfTier,
    seccomp: openSeccompTier,
    fanotify: openFanotifyTier,
    ...options.openers,
  };
  const order = request === "auto" ? tierOrder(options.kind) : [request];
  const skipped: TierSkip[] = [];
  for (const name of order) {
    if (name === "poll") return { tier: null, name, skipped };
    if (!tierOrder(options.kind).includes(name)) {
      skipped.push({ tier: name, reason: `it works only for sentry run, not ${options.kind}` });
      continue;
    }
    const open = openers[name];
    if (open === undefined) {
      skipped.push({ tier: name, reason: "this build has no such tier" });
      continue;
    }
    try {
      const tier = await open({ policy: options.policy, env: options.env });
      return { tier, name, skipped };
    } catch (error) {
      skipped.push({ tier: name, reason: (error as Error).message });
    }
  }
  const last = skipped.at(-1);
  throw new TierError(
    `Cannot use --sensor ${request}: ${last?.reason ?? "not available here"}`,
  );
}

/** Whether a tier can run on this host, for `sentry doctor`. */
export interface TierProbe {
  tier: Tier;
  /** The commands it serves. */
  serves: ("run" | "attach")[];
  ok: boolean;
  /** What it sees when it can run, or why it cannot. */
  detail: string;
}

/**
 * Checks each tier on this host the way `run` and `attach` would open it: the eBPF program is
 * really loaded and attached, then released at once.
 */
export async function probeTiers(
  openers: Partial<Record<Tier, TierOpener>> = {},
): Promise<TierProbe[]> {
  const all: Record<Exclude<Tier, "poll">, TierOpener> = {
    ebpf: openers.ebpf ?? openEbpfTier,
    seccomp: openers.seccomp ?? openSeccompTier,
    fanotify: openers.fanotify ?? openFanotifyTier,
  };
  const probes: TierProbe[] = [];
  for (const tier of TIERS) {
    const serves: ("run" | "attach")[] = tier === "seccomp" ? ["run"] : ["run", "attach"];
    if (tier === "poll") {
      probes.push({ tier, serves, ok: true, detail: TIER_SUMMARY.poll });
      continue;
    }
    try {
      const opened = await all[tier]();
      await opened.close();
      probes.push({ tier, serves, ok: true, detail: TIER_SUMMARY[tier] });
    } catch (error) {
      probes.push({ tier, serves, ok: false, detail: (error as Error).message });
    }
  }
  return probes;
}
