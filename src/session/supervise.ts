import { basename, join } from "node:path";
import { createUlid, responseRank } from "../events/mod.ts";
import { type Journal, JOURNAL_FILE, openJournal, type SessionPatch } from "../journal/mod.ts";
import {
  CgroupError,
  dataDir as dataDirOf,
  ensureDataDir,
  isAlive,
  listChildren,
  readCmdline,
  readStat,
  selfCommand,
  SessionCgroup,
  setChildSubreaper,
} from "../platform/mod.ts";
import { linuxControl } from "./linux_control.ts";
import { writePidsFile } from "./pids_file.ts";
import { killAgent } from "./tree_actions.ts";
import { linuxPlatform } from "./linux_platform.ts";
import { launcherArgs, resolveCommand, waitStopped } from "./launch.ts";
import { protect } from "./protect.ts";
import {
  landlockDenies,
  landlockRefusal,
  maskRefusal,
  planWall,
  wallLauncherArgs,
  type WallPlan,
} from "./wall.ts";
import { startGuards } from "./guards.ts";
import {
  reloadRequestPath,
  reloadResultPath,
  takeReloadRequest,
  writeReloadResult,
} from "./reload.ts";
import { type Notice, Session, type SessionConfig } from "./session.ts";
import { dropEndRecord, endRecordPath, reserveEndRecord, writeEndRecord } from "./end_record.ts";
import {
  type KernelTier,
  openTier,
  type Tier,
  TIER_SUMMARY,
  TierError,
  TierLaunchError,
  type TierOpener,
  type TierRequest,
} from "./tiers.ts";

/** The policy a supervised session runs under (see the CLI's policy flags). */
export type SupervisedPolicy = SessionConfig["policy"];

/** What `run` and `attach` share. */
export interface SuperviseOptions {
  policy: SupervisedPolicy;
  /**
   * `run`, tiers without a launcher of their own: put up the agent's wall (Landlock scoping,
   * and as root Sentry's directories hidden and dangerous capabilities dropped); default true.
   * False only for benchmarks that measure the bare tier.
   */
  wall?: boolean;
  /** The agent's name; defaults to the command's base name. */
  agent?: string;
  intervalMs: number;
  onExit: "resume" | "kill";
  killGraceMs: number;
  onNotice: (notice: Notice) => void;
  env: Record<string, string>;
  /** The journal to use; opened in the data directory when absent. */
  journal?: Journal;
  /** Snapshot the protected trees at start so that rollback can restore them; default true. */
  rollback?: boolean;
  /** Queue every journaled event in the sync outbox (sync is configured); default false. */
  outbox?: boolean;
  /** The sensing tier (`--sensor`); default `auto`, the most exact the host allows. */
  sensor?: TierRequest;
  /** Opens a tier by name instead of the built-in openers (tests). */
  tierOpeners?: Partial<Record<Tier, TierOpener>>;
  /**
   * How a pause stops the tree (`--freezer`): `cgroup` puts the tree in a cgroup of its own and
   * freezes it (root; exit 2 when the host cannot), `signals` uses SIGSTOP, `auto` (default) the
   * cgroup when it can be made and signals otherwise.
   */
  freezer?: FreezerRequest;
  /** How long a pause may last with nobody resuming it, in ms; null or absent: no limit. */
  pauseTimeoutMs?: number | null;
  /** What a pause that times out ends in; default kill. */
  onPauseTimeout?: "resume" | "kill";
  /**
   * Loads a policy for a live reload (SIGHUP, `sentry policy reload`, the API): the file given,
   * or with null the session's own policy read again, patched and compiled as at start. Absent:
   * a reload is refused.
   */
  loadPolicy?: (file: string | null) => Promise<SupervisedPolicy>;
  /** The policy as asked for (`--policy`), journaled with each reload. */
  policySource?: string;
  /**
   * Starts what serves the session (the local API, alert outputs, the uploader) once it is
   * journaled and before its sensors and the agent start; the returned services are closed,
   * in reverse order, after the sensors stopped. A throw aborts the start (the agent never runs).
   */
  services?: (context: ServiceContext) => Promise<Service[]>;
}

/** What {@link SuperviseOptions.services} gets. */
export interface ServiceContext {
  session: Session;
  journal: Journal;
  dataDir: string;
}

/** Something started for a session, stopped at its end. */
export interface Service {
  close(): Promise<void>;
}

/** Closes services in reverse order; a failing close does not stop the others. */
async function closeAll(services: readonly Service[]): Promise<void> {
  for (const service of [...services].reverse()) {
    try {
      await service.close();
    } catch {
      // Teardown goes on: the agent's release matters more than a service's error.
    }
  }
}

/** How a pause may stop the tree: see {@link SuperviseOptions.freezer}. */
export type FreezerRequest = "auto" | "cgroup" | "signals";

/** The values `--freezer` takes. */
export const FREEZERS: readonly FreezerRequest[] = ["auto", "cgroup", "signals"];

/**
 * Creates the session's cgroup when the freezer request allows it, and says which mechanism a
 * pause will use. A cgroup asked for by name that the host cannot make is a usage error.
 */
function openCgroup(id: string, options: SuperviseOptions): SessionCgroup | null {
  const request = options.freezer ?? "auto";
  if (request === "signals") {
    options.onNotice({ type: "info", message: "pause uses signals (--freezer signals)" });
    return null;
  }
  try {
    // Cgroups a killed Sentry and its killed watchdog left empty go first.
    SessionCgroup.sweep();
    const cgroup = SessionCgroup.create({ session: id });
    options.onNotice({
      type: "info",
      message: `pause freezes the session's cgroup ${cgroup.path} (cgroup v${cgroup.version})`,
    });
    return cgroup;
  } catch (error) {
    if (!(error instanceof CgroupError)) throw error;
    if (request === "cgroup") throw new SuperviseError(`--freezer cgroup: ${error.message}`);
    options.onNotice({
      type: "info",
      message: `pause uses signals (SIGSTOP, with rescans): ${error.message}`,
    });
    return null;
  }
}

/** Closes the session's cgroup at the end, and says so if processes kept it from going. */
async function closeCgroup(
  cgroup: SessionCgroup | null,
  options: SuperviseOptions,
): Promise<void> {
  if (cgroup === null) return;
  try {
    const closed = await cgroup.close();
    if (!closed.removed) {
      options.onNotice({
        type: "warn",
        message: `the cgroup ${cgroup.path} could not be removed: process(es) ${
          closed.left.join(", ")
        } are still in it`,
      });
    }
  } catch (error) {
    options.onNotice({
      type: "warn",
      message: `the cgroup ${cgroup.path} could not be removed: ${(error as Error).message}`,
    });
  }
}

/** Why `run` or `attach` cannot start: bad input, reported with exit code 2 (or 126/127). */
export class SuperviseError extends Error {
  /** The exit code for this failure. */
  readonly code: number;

  /** Builds the error with its exit code. */
  constructor(message: string, code = 2) {
    super(message);
    this.name = "SuperviseError";
    this.code = code;
  }
}

const SIGNALS: Record<string, number> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGILL: 4,
  SIGTRAP: 5,
  SIGABRT: 6,
  SIGBUS: 7,
  SIGFPE: 8,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGSEGV: 11,
  SIGUSR2: 12,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};

/** The shell's exit code for a process status: the code, or 128 plus the signal number. */
export function exitCodeOf(status: { code: number; signal: Deno.Signal | null }): number {
  if (status.signal !== null) return 128 + (SIGNALS[status.signal] ?? 0);
  return status.code;
}

function checkWorkspace(workspace: string): void {
  let info: Deno.FileInfo;
  try {
    info = Deno.statSync(workspace);
  } catch {
    throw new SuperviseError(`Workspace "${workspace}" does not exist`);
  }
  if (!info.isDirectory) throw new SuperviseError(`Workspace "${workspace}" is not a directory`);
}

interface Opened {
  journal: Journal;
  dataDir: string;
  ownJournal: boolean;
}

function openData(options: SuperviseOptions): Opened {
  const dataDir = ensureDataDir(dataDirOf(options.env));
  Deno.mkdirSync(join(dataDir, "run"), { recursive: true, mode: 0o700 });
  if (options.journal !== undefined) {
    return { journal: options.journal, dataDir, ownJournal: false };
  }
  const journal = openJournal(join(dataDir, JOURNAL_FILE), { outbox: options.outbox === true });
  return { journal, dataDir, ownJournal: true };
}

/** What differs between the sessions `run` and `attach` open. */
interface OpenSession {
  id: string;
  agent: string;
  kind: "run" | "attach";
  command: string[];
  rootPid: number;
  rootIsLauncher: boolean;
  adopters: number[];
  watchdogPid: number;
  onExit: "resume" | "kill";
  pidsFile: string;
  opened: Opened;
  kernel: KernelTier | null;
  cgroup: SessionCgroup | null;
}

/**
 * Journals a new session, snapshots the protected trees (unless rollback is off), and builds
 * the session: the steps `run` and `attach` share.
 */
async function openSession(spec: OpenSession, options: SuperviseOptions): Promise<Session> {
  const { policy } = options;
  const { journal, dataDir } = spec.opened;
  journal.createSession({
    id: spec.id,
    agent: spec.agent,
    command: spec.command,
    pid: spec.rootPid,
    kind: spec.kind,
    policy: policy.resolved.name,
    mode: policy.resolved.mode,
    workspace: policy.workspace,
    tier: spec.kernel?.tier ?? "poll",
  });
  const protection = options.rollback === false ? null : await protect({
    dataDir,
    session: spec.id,
    policy,
    env: options.env,
    onNotice: options.onNotice,
  });
  const session = new Session({
    id: spec.id,
    agent: spec.agent,
    kind: spec.kind,
    protection,
    afterRollback: policy.resolved.rollback.after,
    rootPid: spec.rootPid,
    policy,
    intervalMs: options.intervalMs,
    rootIsLauncher: spec.rootIsLauncher,
    adopters: spec.adopters,
    excluded: [Deno.pid, spec.watchdogPid],
    ignorePaths: [dataDir],
    onExit: spec.onExit,
    killGraceMs: options.killGraceMs,
    pidsFile: spec.pidsFile,
    onNotice: options.onNotice,
    kernel: spec.kernel,
    cgroup: spec.cgroup,
    // `run` starts the agent in a session of its own (setsid), whose id is the root's pid.
    agentSessions: spec.kind === "run" ? [spec.rootPid] : [],
    pauseTimeoutMs: options.pauseTimeoutMs ?? null,
    onPauseTimeout: options.onPauseTimeout ?? "kill",
    ...(options.loadPolicy === undefined ? {} : { loadPolicy: options.loadPolicy }),
    ...(options.policySource === undefined ? {} : { policySource: options.policySource }),
  }, { journal, platform: linuxPlatform(), control: linuxControl() });
  if (session.tier === "seccomp" && policy.compiled.modeCap >= responseRank("block")) {
    // The supervisor decides on the start policy, compiled in its own worker.
    session.holdInKernel("the seccomp supervisor");
  }
  session.tree.onScan(() => session.noticeExternalResume());
  return session;
}

/**
 * Opens the sensing tier before anything starts: a tier asked for by name that the host does
 * not allow is a usage error (exit 2), and `auto` says which tiers it passed over and why.
 */
async function startTier(
  kind: "run" | "attach",
  options: SuperviseOptions,
): Promise<{ kernel: KernelTier | null; name: Tier }> {
  let opened;
  try {
    opened = await openTier(options.sensor ?? "auto", {
      kind,
      policy: options.policy,
      env: options.env,
      ...(options.tierOpeners === undefined ? {} : { openers: options.tierOpeners }),
    });
  } catch (error) {
    if (error instanceof TierError) throw new SuperviseError(error.message);
    throw error;
  }
  for (const skip of opened.skipped) {
    options.onNotice({
      type: "info",
      message: `sensor tier ${skip.tier} is not available: ${skip.reason}`,
    });
  }
  options.onNotice({
    type: opened.name === "poll" ? "warn" : "info",
    message: `sensing with the ${opened.name} tier: ${TIER_SUMMARY[opened.name]}`,
  });
  for (const notice of opened.tier?.notices ?? []) options.onNotice(notice);
  const unenforceable = blockNotice(options.policy.resolved, opened.name);
  if (unenforceable !== null) {
    const gated = unenforceable.includes("through kernel gates");
    options.onNotice({ type: gated ? "info" : "warn", message: unenforceable });
  }
  return { kernel: opened.tier, name: opened.name };
}

/**
 * What the policy asks to block that this tier cannot, said once at start with the rules it
 * concerns, or null. Only the seccomp tier blocks; elsewhere a block falls back to a pause.
 */
export function blockNotice(
  policy: SupervisedPolicy["resolved"],
  tier: Tier,
  root = Deno.uid() === 0,
): string | null {
  if (tier === "seccomp") return null;
  const rules = policy.rules.filter((r) => r.response === "block").map((r) => r.id);
  if (policy.mode !== "block" && rules.length === 0) return null;
  const what = [
    ...(policy.mode === "block" ? ["mode block"] : []),
    ...(rules.length > 0 ? [`rule(s) ${rules.join(", ")}`] : []),
  ].join(" and ");
  if (root && Deno.build.os === "linux") {
    return `the ${tier} tier blocks ${what} through kernel gates: opens, creates and execs of the deny lists' paths (fanotify), connects (a cgroup program), and under run the deny lists' paths by Landlock; what no gate covers pauses the agent instead (each such rule is named below)`;
  }
  return `the ${tier} tier cannot block an action before it happens: ${what} will pause the agent instead (the seccomp tier blocks: sentry run --sensor seccomp)`;
}

/** Starts the watchdog that resumes (or kills) the tree if this Sentry process dies. */
function startWatchdog(
  args: { session: string; pidsFile: string; onExit: string; journal: string },
) {
  // Two stages, so that a watchdog costs about 1 MB while Sentry lives: a shell waits for the
  // final "ok" on its stdin, and only if the pipe ends without it (Sentry died) does it exec
  // Sentry's full watchdog, which finds the pipe at its end and rescues the tree.
  const child = new Deno.Command("/bin/sh", {
    args: [
      "-c",
      'IFS= read -r line; [ "$line" = ok ] && exit 0; exec "$@"',
      "sentry-watchdog",
      ...selfCommand(),
      "__watchdog",
      "--session",
      args.session,
      "--pids-file",
      args.pidsFile,
      "--on-exit",
      args.onExit,
      "--journal",
      args.journal,
    ],
    stdin: "piped",
    stdout: "null",
    stderr: "inherit",
  }).spawn();
  const writer = child.stdin.getWriter();
  return {
    pid: child.pid,
    /** Tells the watchdog that Sentry ended cleanly, then lets it exit. */
    async release() {
      try {
        await writer.write(new TextEncoder().encode("ok\n"));
        await writer.close();
      } catch {
        // It is gone already.
      }
      await child.status;
    },
  };
}

/**
 * `sentry run`: starts the agent stopped in its own process group, takes the first look at the
 * tree, resumes it, watches until the root exits, and returns the agent's exit code. SIGINT and
 * SIGTERM are forwarded to the agent. Teardown runs in reverse order on every path, and the tree
 * is never left stopped.
 */
export async function superviseRun(command: string[], options: SuperviseOptions): Promise<number> {
  const { policy } = options;
  checkWorkspace(policy.workspace);
  const [program] = command;
  if (program === undefined) {
    throw new SuperviseError(
      "No command given: write it after --, as in: sentry run -- python3 agent.py",
    );
  }
  try {
    resolveCommand(program, {
      cwd: Deno.cwd(),
      ...(options.env.PATH === undefined ? {} : { PATH: options.env.PATH }),
    });
  } catch (error) {
    const code = (error as { code?: number }).code;
    throw new SuperviseError((error as Error).message, code ?? 127);
  }
  const { kernel } = await startTier("run", options);
  let opened: Opened;
  try {
    opened = openData(options);
  } catch (error) {
    await kernel?.close();
    throw error;
  }
  const { journal, dataDir, ownJournal } = opened;
  const id = createUlid()();
  const pidsFile = join(dataDir, "run", `${id}.pids`);
  // Room for the session's end, taken now, while there is some (see end_record.ts).
  reserveEndRecord(dataDir, id);
  const subreaper = setChildSubreaper();
  const watchdog = startWatchdog({
    session: id,
    pidsFile,
    onExit: options.onExit,
    journal: join(dataDir, JOURNAL_FILE),
  });
  let cgroup: SessionCgroup | null;
  try {
    cgroup = openCgroup(id, options);
  } catch (error) {
    await watchdog.release();
    await kernel?.close();
    if (ownJournal) journal.close();
    throw error;
  }
  // A tier with its own launcher (seccomp) installs itself there; otherwise Sentry's wall
  // launcher puts up the agent's wall and stops itself (a shell does the stop off Linux).
  const tierLauncher = kernel?.launcher;
  let wall: { argv: string[]; cleanup: () => void } | null = null;
  let wallPlan: WallPlan | null = null;
  if (tierLauncher === undefined && Deno.build.os === "linux" && options.wall !== false) {
    try {
      wallPlan = planAgentWall(policy, options, kernel?.tier ?? "poll");
      wall = wallLauncherArgs(command, { plan: wallPlan, session: id });
    } catch (error) {
      await watchdog.release();
      await closeCgroup(cgroup, options);
      await kernel?.close();
      if (ownJournal) journal.close();
      throw error;
    }
  }
  const [launcher, ...launcherRest] = tierLauncher?.args(command) ?? wall?.argv ??
    launcherArgs(command);
  const child = new Deno.Command(launcher as string, {
    args: launcherRest,
    stdin: "inherit",
    stdout: "inherit",
    stderr: "inherit",
    detached: true,
  }).spawn();
  const rootPid = child.pid;
  let status: Deno.CommandStatus | null = null;
  const exited = child.status.then((s) => status = s);
  // The watchdog must know the launcher from the start: if Sentry dies before the agent runs,
  // the launcher must not stay stopped.
  const launcherStat = readStat(rootPid);
  const launcherRef = launcherStat === null
    ? []
    : [{ pid: rootPid, start: launcherStat.starttime }];
  // On failure, the session rewrites it at its first scan.
  writePidsFile(pidsFile, {
    processes: launcherRef,
    cgroup: cgroup?.spec() ?? null,
    starting: true,
  });
  let session: Session;
  let services: Service[] = [];
  try {
    let stoppedOk: boolean;
    if (tierLauncher !== undefined) {
      try {
        await tierLauncher.attached(exited);
      } catch (error) {
        if (error instanceof TierLaunchError) throw new SuperviseError(error.message, error.code);
        throw error;
      }
      stoppedOk = true;
    } else {
      stoppedOk = await waitStopped(rootPid, wall === null ? 5000 : 30_000);
      wall?.cleanup();
      if (wall !== null && !stoppedOk) {
        // The wall launcher said why on stderr; the agent never ran.
        const s = await Promise.race([exited, delay(2000).then(() => null)]);
        throw new SuperviseError(
          "the agent's wall could not be put up, so it did not run (see above)",
          s?.code === 126 || s?.code === 127 ? s.code : 1,
        );
      }
    }
    // The launcher is tracked while it is stopped: the kernel sees the agent's exec and all after.
    if (stoppedOk) kernel?.track(rootPid, { existing: false });
    if (cgroup !== null) {
      // Moved in while stopped, so that every process of the agent is born inside.
      try {
        if (stoppedOk) cgroup.add(rootPid);
        else cgroup.adoptTree(rootPid, (pid) => listChildren(pid));
        writePidsFile(pidsFile, { processes: launcherRef, cgroup: cgroup.spec(), starting: true });
      } catch (error) {
        if (options.freezer === "cgroup") {
          throw new SuperviseError(`--freezer cgroup: ${(error as Error).message}`);
        }
        options.onNotice({
          type: "warn",
          message: `${(error as Error).message}: pause uses signals instead`,
        });
        await closeCgroup(cgroup, options);
        cgroup = null;
      }
    }
    const agent = options.agent ?? basename(program);
    // The launcher is stopped: the snapshot sees the tree before the agent's first instruction.
    session = await openSession({
      id,
      agent,
      kind: "run",
      command,
      rootPid,
      rootIsLauncher: true,
      adopters: subreaper ? [Deno.pid] : [],
      watchdogPid: watchdog.pid,
      onExit: options.onExit,
      pidsFile,
      opened: { journal, dataDir, ownJournal },
      kernel,
      cgroup,
    }, options);
    options.onNotice({
      type: "info",
      message:
        `watching "${
          command.join(" ")
        }" as session ${id} (agent ${agent}, policy ${policy.resolved.name}, ` +
        `mode ${policy.resolved.mode}, workspace ${policy.workspace}, sensor ${session.tier})`,
    });
    if (!subreaper) {
      options.onNotice({
        type: "warn",
        message:
          "could not become a child subreaper: processes that escape by double fork are tracked only if seen before their parent exits",
      });
    }
    const landlock = wallPlan?.landlock ?? null;
    if (wallPlan !== null) {
      // The wall's refusals are journaled as blocks: the mask over Sentry's directories, then
      // Landlock.
      const masked = maskRefusal(wallPlan.mask);
      const walled = landlock === null ? () => null : landlockRefusal(landlock);
      session.explainRefusals(
        (event) => masked(event) ?? walled(event),
        landlock === null ? undefined : landlockDenies(landlock),
      );
      // In mode block the wall holds the policy's denies (files, commands, ports), not only
      // Sentry's own directories.
      if (landlock !== null && policy.resolved.mode === "block") {
        session.holdInKernel("the Landlock wall");
      }
    }
    // The kernel gates (root) hold before the agent runs a single instruction.
    await startGuards({
      session,
      policy,
      kind: "run",
      tier: session.tier,
      excluded: [watchdog.pid],
      env: options.env,
      cgroup,
      journal: journal.path,
      onNotice: options.onNotice,
    });
    services = await options.services?.({ session, journal, dataDir }) ?? [];
    session.start();
    // The tier sees the whole tree before the agent runs a single instruction.
    await kernel?.ready();
    // The launcher is stopped and the first scan has run: let the agent go.
    if (tierLauncher !== undefined) tierLauncher.go();
    // Sentry's own child, not reaped: its pid cannot name another process.
    else if (stoppedOk && status === null) Deno.kill(rootPid, "SIGCONT");
    // From here a watchdog applies --on-exit; before, it kills the tree (never unwatched).
    session.markStarted();
  } catch (error) {
    // Setup failed before the agent ran a single instruction: end the launcher, not the agent.
    // It is Sentry's own child, not reaped yet: its pid cannot name another process.
    try {
      if (status === null) Deno.kill(rootPid, "SIGKILL");
    } catch {
      // Gone already.
    }
    await exited;
    await closeAll(services);
    await closeCgroup(cgroup, options);
    await watchdog.release();
    await kernel?.close();
    if (ownJournal) journal.close();
    throw error;
  }

  const forward = (signal: Deno.Signal) => () => {
    if (session.paused) session.releaseNow();
    // The group's number stays reserved while the root is unreaped or any member is in it;
    // after that it could name another group.
    const groupLives = status === null ||
      [...session.tree.members.values()].some((m) => m.stat.pgrp === rootPid);
    if (!groupLives) return;
    try {
      // The agent runs in its own process group: signal the group, as a terminal would.
      Deno.kill(-rootPid, signal);
    } catch {
      try {
        if (status === null) Deno.kill(rootPid, signal);
      } catch {
        // Gone.
      }
    }
  };
  const onInt = forward("SIGINT");
  const onTerm = forward("SIGTERM");
  Deno.addSignalListener("SIGINT", onInt);
  Deno.addSignalListener("SIGTERM", onTerm);
  const stopReloads = listenForReloads(session, dataDir);
  const emergency = () => session.releaseNow();
  const events = ["unload", "error", "unhandledrejection"] as const;
  // Whatever ends this process, the tree is released first (the watchdog covers SIGKILL).
  for (const e of events) globalThis.addEventListener(e, emergency);
  try {
    await exited;
    const final = status as unknown as Deno.CommandStatus;
    session.tree.setRootExit({
      code: final.signal === null ? final.code : null,
      signal: final.signal,
    });
    session.tree.scan();
    await endLeftovers(session, cgroup, options);
    await session.stop();
    const code = exitCodeOf(final);
    endSession({
      journal,
      dataDir,
      id,
      end: {
        state: session.killed ? "killed" : "ended",
        endedAt: new Date().toISOString(),
        exitCode: code,
      },
      onNotice: options.onNotice,
    });
    const counts = session.counts;
    options.onNotice({
      type: "info",
      message:
        `agent exited with code ${code}: ${counts.events} events, ${counts.denied} denied; report: sentry report ${id}`,
    });
    return code;
  } finally {
    Deno.removeSignalListener("SIGINT", onInt);
    Deno.removeSignalListener("SIGTERM", onTerm);
    stopReloads();
    for (const e of events) globalThis.removeEventListener(e, emergency);
    session.releaseNow();
    await closeAll(services);
    await closeCgroup(cgroup, options);
    await watchdog.release();
    await kernel?.close();
    if (ownJournal) closeJournal(journal, options);
  }
}

/** Closes the journal; a last batch the disk refuses is said, not thrown past the agent's code. */
function closeJournal(journal: Journal, options: SuperviseOptions): void {
  try {
    journal.close();
  } catch (error) {
    options.onNotice({
      type: "warn",
      message: `the journal's last batch could not be written: ${(error as Error).message}`,
    });
  }
}

/** Waits a moment for processes left after the root exited, then terminates them. */
async function endLeftovers(
  session: Session,
  cgroup: SessionCgroup | null,
  options: SuperviseOptions,
): Promise<void> {
  const deadline = Date.now() + 1000;
  // Leftovers paused before the root exited are resumed once, so that they can exit on their own.
  if (session.paused) session.releaseNow();
  while (session.tree.members.size > 0 && Date.now() < deadline) {
    await new Promise((r) => setTimeout(r, 50));
    session.tree.scan();
    // A leftover did something the policy pauses for: keep it stopped and terminate it now,
    // rather than resume it into the action it was stopped for.
    if (session.paused) break;
  }
  if (session.tree.members.size === 0 && (cgroup === null || !cgroup.populated())) return;
  const members = [...session.tree.members.values()];
  const pids = [...new Set([...members.map((m) => m.pid), ...cgroup?.pids() ?? []])];
  options.onNotice({
    type: "warn",
    message: `the agent left ${pids.length} process(es) running after it exited (${
      pids.join(", ")
    }): terminating them`,
  });
  await killAgent({
    control: linuxControl(),
    cgroup,
    list: () => members.map((m) => ({ pid: m.pid, start: m.startTicks })),
    sessions: [session.tree.rootPid],
  }, { graceMs: options.killGraceMs });
  session.tree.scan();
}

/**
 * `sentry attach PID`: watches a running process and all its descendants. Ctrl-C detaches and
 * leaves the agent running (resumed if Sentry had paused it). Returns 0 when the agent exits or
 * Sentry detaches.
 */
export async function superviseAttach(pid: number, options: SuperviseOptions): Promise<number> {
  const { policy } = options;
  checkWorkspace(policy.workspace);
  if (pid === Deno.pid) throw new SuperviseError("Cannot attach to Sentry itself");
  const stat = readStat(pid);
  if (stat === null || !isAlive(pid)) {
    throw new SuperviseError(`Cannot attach to pid ${pid}: no such process`);
  }
  const probe = linuxPlatform().listFds(pid);
  if (!probe.ok && probe.reason === "denied") {
    throw new SuperviseError(
      `Cannot attach to pid ${pid}: not permitted to inspect it (run Sentry as the same user as the agent, or as root)`,
    );
  }
  const command = readCmdline(pid) ?? [];
  const { kernel } = await startTier("attach", options);
  let opened: Opened;
  try {
    opened = openData(options);
    // Tracked before the first scan: from here on no child of the tree runs unseen.
    kernel?.track(pid, { existing: true });
  } catch (error) {
    await kernel?.close();
    throw error;
  }
  const { journal, dataDir, ownJournal } = opened;
  const id = createUlid()();
  const pidsFile = join(dataDir, "run", `${id}.pids`);
  reserveEndRecord(dataDir, id);
  const watchdog = startWatchdog({
    session: id,
    pidsFile,
    onExit: "resume",
    journal: join(dataDir, JOURNAL_FILE),
  });
  let cgroup: SessionCgroup | null;
  try {
    cgroup = openCgroup(id, options);
    if (cgroup !== null) {
      // Top-down, each process before its children are listed: a child forked meanwhile is
      // born inside. The processes go back where they were when Sentry detaches.
      try {
        cgroup.adoptTree(pid, (p) => listChildren(p));
        if (!cgroup.pids().includes(pid)) throw new CgroupError(`pid ${pid} could not be moved`);
        writePidsFile(pidsFile, {
          processes: [{ pid, start: stat.starttime }],
          cgroup: cgroup.spec(),
        });
      } catch (error) {
        if (options.freezer === "cgroup") {
          throw new SuperviseError(`--freezer cgroup: ${(error as Error).message}`);
        }
        options.onNotice({
          type: "warn",
          message: `${(error as Error).message}: pause uses signals instead`,
        });
        await closeCgroup(cgroup, options);
        cgroup = null;
      }
    }
  } catch (error) {
    await watchdog.release();
    await kernel?.close();
    if (ownJournal) journal.close();
    throw error;
  }
  const agent = options.agent ?? basename(command[0] ?? stat.comm);
  let session: Session;
  try {
    session = await openSession({
      id,
      agent,
      kind: "attach",
      command,
      rootPid: pid,
      rootIsLauncher: false,
      adopters: [],
      watchdogPid: watchdog.pid,
      onExit: "resume",
      pidsFile,
      opened: { journal, dataDir, ownJournal },
      kernel,
      cgroup,
    }, options);
  } catch (error) {
    await closeCgroup(cgroup, options);
    await watchdog.release();
    await kernel?.close();
    if (ownJournal) journal.close();
    throw error;
  }
  let services: Service[];
  try {
    await startGuards({
      session,
      policy,
      kind: "attach",
      tier: session.tier,
      excluded: [watchdog.pid],
      env: options.env,
      cgroup,
      journal: journal.path,
      onNotice: options.onNotice,
    });
    services = await options.services?.({ session, journal, dataDir }) ?? [];
  } catch (error) {
    await closeCgroup(cgroup, options);
    await watchdog.release();
    await kernel?.close();
    if (ownJournal) journal.close();
    throw error;
  }
  // Said once everything holds (the gates too), so that Ctrl-C from here detaches cleanly.
  options.onNotice({
    type: "info",
    message:
      `attached to pid ${pid} ("${
        command.join(" ")
      }") as session ${id} (policy ${policy.resolved.name}, ` +
      `mode ${policy.resolved.mode}, sensor ${session.tier}); Ctrl-C detaches and leaves the agent running`,
  });
  let detach: () => void = () => {};
  const detached = new Promise<"detached">((resolve) => detach = () => resolve("detached"));
  const rootGone = new Promise<"ended">((resolve) => {
    session.tree.onScan(() => {
      if (!session.tree.members.has(pid)) resolve("ended");
    });
  });
  Deno.addSignalListener("SIGINT", detach);
  Deno.addSignalListener("SIGTERM", detach);
  const stopReloads = listenForReloads(session, dataDir);
  const emergency = () => session.releaseNow();
  const events = ["unload", "error", "unhandledrejection"] as const;
  // Whatever ends this process, the tree is released first (the watchdog covers SIGKILL).
  for (const e of events) globalThis.addEventListener(e, emergency);
  session.start();
  try {
    await kernel?.ready();
    const how = await Promise.race([detached, rootGone]);
    await session.release();
    await session.stop();
    const state = how === "detached" ? "detached" : session.killed ? "killed" : "ended";
    if (how === "detached") {
      journal.recordResponse({ session: id, action: "detach", outcome: "ok" });
    }
    endSession({
      journal,
      dataDir,
      id,
      end: { state, endedAt: new Date().toISOString() },
      onNotice: options.onNotice,
    });
    options.onNotice({
      type: "info",
      message: how === "detached"
        ? `detached from pid ${pid}; the agent keeps running. Report: sentry report ${id}`
        : `pid ${pid} exited; report: sentry report ${id}`,
    });
    return 0;
  } finally {
    Deno.removeSignalListener("SIGINT", detach);
    Deno.removeSignalListener("SIGTERM", detach);
    stopReloads();
    for (const e of events) globalThis.removeEventListener(e, emergency);
    session.releaseNow();
    await closeAll(services);
    await closeCgroup(cgroup, options);
    await watchdog.release();
    await kernel?.close();
    if (ownJournal) journal.close();
  }
}

/**
 * SIGHUP reloads the session's policy: the one `sentry policy reload` left in the session's
 * request file (`run/<session>.reload`), or the session's own policy read again. Returns the
 * function that stops listening and removes a request left unread.
 */
function listenForReloads(session: Session, dataDir: string): () => void {
  const path = reloadRequestPath(dataDir, session.config.id);
  const onHup = () => {
    const request = takeReloadRequest(path);
    const nonce = request === null || request.nonce === "" ? null : request.nonce;
    void session.reload({
      file: request?.file ?? null,
      by: request?.by ?? "SIGHUP",
      ...(nonce === null ? {} : { nonce }),
    }).then((result) => {
      // The requester waits for this answer (see reloadSession()).
      if (nonce !== null) {
        writeReloadResult(reloadResultPath(dataDir, session.config.id, nonce), result);
      }
    }).catch(() => {
      // The requester times out and says so.
    });
  };
  Deno.addSignalListener("SIGHUP", onHup);
  return () => {
    Deno.removeSignalListener("SIGHUP", onHup);
    try {
      Deno.removeSync(path);
    } catch {
      // None left.
    }
  };
}

function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/**
 * Plans the wall of a tier without a launcher of its own (see src/session/wall.ts) and says
 * what it does. Sentry's directories are made (0700) first, so that they can be hidden; they are
 * not hidden when the workspace or the current directory lies beneath one (the agent would keep
 * a way in through its working directory), and Sentry says so.
 */
function planAgentWall(
  policy: SupervisedPolicy,
  options: SuperviseOptions,
  tier: string,
): WallPlan {
  const guarded = [...policy.compiled.guarded];
  const cwd = Deno.cwd();
  const inside = (path: string) =>
    guarded.find((d) => path === d || path.startsWith(d.endsWith("/") ? d : `${d}/`));
  const overlap = inside(policy.workspace) ?? inside(cwd);
  if (overlap !== undefined) {
    options.onNotice({
      type: "warn",
      message:
        `the workspace or the current directory lies beneath ${overlap}, Sentry's own directory: it cannot be hidden from the agent`,
    });
  }
  if (overlap === undefined && Deno.uid() === 0) {
    for (const dir of guarded) Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
  }
  const { plan, notices } = planWall({
    policy: { ...policy, guarded: overlap === undefined ? guarded : [] },
    env: options.env,
    cwd,
    tier,
  });
  for (const notice of notices) options.onNotice(notice);
  return plan;
}

/** What {@link endSession} needs. */
interface EndSessionOptions {
  journal: Journal;
  dataDir: string;
  id: string;
  /** The end; a state of `killed` in the journal (a kill from another process) wins. */
  end: SessionPatch;
  onNotice: (notice: Notice) => void;
}

/**
 * Journals a session's end. When the journal refuses it (a full disk), the end goes to the
 * record reserved at start, and the next command that opens the journal journals it: the
 * session never shows `running`, and is not called `crashed` for a clean exit. Either way the
 * events and responses that could not be stored are counted on stderr.
 */
function endSession(options: EndSessionOptions): void {
  const { journal, dataDir, id } = options;
  let end = options.end;
  try {
    if (end.state === "ended" && journal.getSession(id).state === "killed") {
      end = { ...end, state: "killed" };
    }
    journal.updateSession(id, end);
    dropEndRecord(dataDir, id);
  } catch (error) {
    const lost = journal.metrics().pending;
    const note = `the end was journaled late: the journal could not be written at the end ` +
      `(${(error as Error).message}); ${lost} event(s) and response(s) were not stored`;
    const kept = writeEndRecord(dataDir, id, { ...end, note });
    options.onNotice({
      type: "warn",
      message: `the session's end could not be journaled (${
        (error as Error).message
      }); ${lost} event(s) and response(s) were not stored; ${
        kept
          ? `the end is kept in ${endRecordPath(dataDir, id)} and journaled by the next ` +
            "command that can write the journal"
          : "the session will show as crashed"
      }`,
    });
    return;
  }
  try {
    journal.flush();
  } catch (error) {
    options.onNotice({
      type: "warn",
      message: `the session's last events could not be journaled (${
        (error as Error).message
      }); ${journal.metrics().pending} event(s) and response(s) were not stored`,
    });
  }
}
