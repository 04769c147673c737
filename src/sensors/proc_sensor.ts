import type { ProcPlatform, ProcStatView } from "./platform.ts";
import { type Sensor, type SensorEvent, type SensorStats, StatsCounter } from "./sensor.ts";

/** One process of the agent's tree. */
export interface Member {
  pid: number;
  ppid: number;
  startTicks: number;
  exe: string | null;
  cmdline: string[];
  cwd: string | null;
  /** The latest stat, refreshed every scan (CPU and memory read it). */
  stat: ProcStatView;
  /** Socket inodes the fd sensor found open in this process. */
  sockets: Set<number>;
  /** A new program seen with an empty command line (mid-exec), waiting one scan for it. */
  pendingExe?: string;
}

/** Called after every scan, in registration order, with the time of the scan. */
export type ScanHook = (nowMs: number) => void;

/** How the tree is polled. */
export interface ProcSensorOptions {
  /** The agent's root process. */
  rootPid: number;
  /**
   * Processes whose new children join the tree. Sentry itself, when it is a child subreaper,
   * adopts the orphans of the tree: they come back to it as children.
   */
  adopters?: number[];
  /** Processes never to include (Sentry's own helpers). */
  excluded?: number[];
  /** The polling interval in milliseconds while the tree is quiet. */
  intervalMs: number;
  /** The faster interval used while the tree is busy (new processes, files or sockets). */
  busyIntervalMs?: number;
  platform: ProcPlatform;
  /** Clock, injectable for tests. */
  now?: () => number;
  /** Marks the processes already running at the first scan with `detail.existing` (attach). */
  reportExisting?: boolean;
  /**
   * The root is a launcher, Sentry's own child, that will exec the agent: report the root only
   * once it has, and leave its reaping to the caller, which passes its status to `setRootExit()`.
   */
  rootIsLauncher?: boolean;
  /**
   * Whether to report exec and exit events and the blind spots of polling (default true). A
   * kernel sensing tier sees every process exactly: the tree then only keeps the members that
   * pause, resume, kill and the resource monitor act on, and reports only the processes already
   * running when it attached (`existing`), which no kernel tier saw start.
   */
  report?: boolean;
  /**
   * Whether to report exits even when `report` is false (default false): a tier that sees
   * execs but not exits (seccomp) leaves them to the tree, which knows the root's status.
   */
  reportExits?: boolean;
}

/**
 * Follows the agent's process tree by scanning /proc. A process joins the tree when its parent
 * is a member (or an adopter) at the moment it is first seen, and stays a member until it exits,
 * even if it is re-parented or starts its own session. Emits `proc.exec` for each new process or
 * program (an `exec` in place), and `proc.exit` when a member is gone, with its status where it
 * can be known. Other sensors hang off its scans through {@link ProcSensor.onScan}.
 */
export class ProcSensor implements Sensor {
  readonly name = "proc";
  readonly members = new Map<number, Member>();
  #rootExeced = false;
  readonly #options: ProcSensorOptions;
  readonly #known = new Map<number, number>();
  readonly #hooks: ScanHook[] = [];
  readonly #counter = new StatsCounter("proc");
  readonly #adopters: Set<number>;
  readonly #excluded: Set<number>;
  #emit: ((event: SensorEvent) => void) | null = null;
  #lastPid: number | null = null;
  #busyUntil = 0;
  #first = true;
  #rootExit: { code: number | null; signal: string | null } | null = null;
  #wake: (() => void) | null = null;
  #version = 0;

  /** Sets up the sensor; nothing is read until `start()` or `scan()`. */
  constructor(options: ProcSensorOptions) {
    this.#options = options;
    this.#adopters = new Set(options.adopters ?? []);
    this.#excluded = new Set(options.excluded ?? []);
  }

  /** The root pid of the tree. */
  get rootPid(): number {
    return this.#options.rootPid;
  }

  /** Increases whenever a process joins or leaves the tree. */
  get version(): number {
    return this.#version;
  }

  /** The pids of the tree now. */
  pids(): number[] {
    return [...this.members.keys()];
  }

  /** Registers a hook that runs after every scan. */
  onScan(hook: ScanHook): void {
    this.#hooks.push(hook);
  }

  /** Adds a pid that must never join the tree (a helper Sentry spawned after start). */
  exclude(pid: number): void {
    this.#excluded.add(pid);
    this.members.delete(pid);
  }

  /** Marks the tree busy, so that polling runs at the busy interval for a second. */
  markBusy(nowMs: number): void {
    this.#busyUntil = nowMs + 1000;
  }

  /** Tells the sensor how the root process ended, for its `proc.exit` event. */
  setRootExit(status: { code: number | null; signal: string | null }): void {
    this.#rootExit = status;
  }

  /** Runs a scan now, outside the timer (the session calls it before acting on the tree). */
  wake(): void {
    this.#wake?.();
  }

  /** Polls until the signal aborts. */
  async start(emit: (event: SensorEvent) => void, signal: AbortSignal): Promise<void> {
    this.#emit = emit;
    const now = this.#options.now ?? Date.now;
    while (!signal.aborted) {
      const started = now();
      this.scan();
      const busy = started < this.#busyUntil;
      const interval = busy
        ? (this.#options.busyIntervalMs ?? this.#options.intervalMs)
        : this.#options.intervalMs;
      const elapsed = now() - started;
      await sleep(Math.max(0, interval - elapsed), signal, (wake) => this.#wake = wake);
      this.#counter.counters.lagMs = Math.max(0, now() - started - interval);
    }
    // One last scan so that exits just before the stop are reported.
    this.scan();
  }

  /** The sensor's counters. */
  stats(): SensorStats {
    return this.#counter.snapshot();
  }

  /**
   * Whether a member is still Sentry's launcher (the root before it execs the agent): its
   * memory and CPU are Sentry's, not the agent's.
   */
  isLauncher(member: { pid: number }): boolean {
    return member.pid === this.rootPid && this.#options.rootIsLauncher === true &&
      !this.#rootExeced;
  }

  /** Scans /proc once: finds new members and exits, refreshes stats, then runs the hooks. */
  scan(): void {
    const { platform } = this.#options;
    const now = (this.#options.now ?? Date.now)();
    const c = this.#counter.counters;
    c.polls++;
    const pids = platform.listPids();
    const present = new Set(pids);
    // Exits (and pids reused by a new process) first, so a reused pid is seen as new below.
    for (const member of [...this.members.values()]) {
      const stat = present.has(member.pid) ? platform.readStat(member.pid) : null;
      if (
        stat === null || stat.startTicks !== member.startTicks || stat.state === "Z" ||
        stat.state === "X"
      ) {
        // A launcher root is Sentry's own child: Deno reaps it and hands its status to
        // setRootExit(). Reaping it here would steal that status (Deno then fails with ECHILD),
        // so the root stays a member until its status is known.
        if (
          member.pid === this.rootPid && this.#options.rootIsLauncher === true &&
          this.#rootExit === null
        ) continue;
        this.#exit(member, stat);
        continue;
      }
      member.stat = stat;
      member.ppid = stat.ppid;
      const exe = platform.readExe(member.pid);
      // In the middle of an exec the new program is set before its arguments: an empty command
      // line is read again at the next scan; if it is still empty (a program that blanked its
      // argv), the exec is reported with it then.
      const cmdline = exe !== null && exe !== member.exe ? platform.readCmdline(member.pid) : null;
      const midExec = cmdline !== null && cmdline.length === 0 && member.pendingExe !== exe;
      if (exe !== null && exe !== member.exe && midExec) member.pendingExe = exe;
      if (exe !== null && exe !== member.exe && !midExec) {
        // The process replaced its program (exec): a new command in the same pid.
        delete member.pendingExe;
        member.exe = exe;
        member.cmdline = cmdline ?? member.cmdline;
        member.cwd = platform.readCwd(member.pid) ?? member.cwd;
        if (member.pid === this.rootPid) this.#rootExeced = true;
        this.#reportExec(member, { replaced: true });
        this.markBusy(now);
      }
    }
    for (const pid of this.#known.keys()) if (!present.has(pid)) this.#known.delete(pid);

    const fresh: ProcStatView[] = [];
    for (const pid of pids) {
      if (this.#known.has(pid)) continue;
      const stat = platform.readStat(pid);
      if (stat === null) continue;
      this.#known.set(pid, stat.startTicks);
      fresh.push(stat);
    }
    if (this.#first) this.#firstScan(fresh);
    else this.#join(fresh, now);
    this.#countUnseen(fresh.length);
    this.#first = false;
    for (const hook of this.#hooks) hook(now);
  }

  #firstScan(all: ProcStatView[]): void {
    // Build the whole tree below the root from the parent links, including processes that
    // were started before Sentry looked.
    const children = new Map<number, ProcStatView[]>();
    for (const s of all) {
      let list = children.get(s.ppid);
      if (list === undefined) children.set(s.ppid, list = []);
      list.push(s);
    }
    const root = all.find((s) => s.pid === this.rootPid);
    if (root === undefined) return;
    const queue = [root];
    while (queue.length > 0) {
      const s = queue.shift() as ProcStatView;
      if (this.#excluded.has(s.pid) || s.state === "Z") continue;
      this.#add(s, { existing: true });
      queue.push(...(children.get(s.pid) ?? []));
    }
  }

  #join(fresh: ProcStatView[], now: number): void {
    // Parents start before their children: join in start order so a new child of a new child
    // is caught in the same scan.
    fresh.sort((a, b) => a.startTicks - b.startTicks || a.pid - b.pid);
    for (const s of fresh) {
      if (this.#excluded.has(s.pid)) continue;
      if (this.members.has(s.ppid) || (this.#adopters.has(s.ppid) && s.pid !== this.rootPid)) {
        if (s.state === "Z") {
          // Started and ended between two scans: too late to see what it ran.
          if (this.#options.report !== false) {
            this.#counter.blind(
              "exited_before_seen",
              "processes of the tree that exited before a scan could read them",
            );
          }
          continue;
        }
        this.#add(s, { existing: false });
        this.markBusy(now);
      }
    }
  }

  #add(stat: ProcStatView, how: { existing: boolean }): void {
    const { platform } = this.#options;
    const member: Member = {
      pid: stat.pid,
      ppid: stat.ppid,
      startTicks: stat.startTicks,
      exe: platform.readExe(stat.pid),
      cmdline: platform.readCmdline(stat.pid) ?? [],
      cwd: platform.readCwd(stat.pid),
      stat,
      sockets: new Set(),
    };
    if (member.exe === null) {
      this.#counter.blind(
        "exe_unreadable",
        "processes whose executable could not be read (exited, or not permitted)",
      );
    }
    this.members.set(stat.pid, member);
    this.#version++;
    // A launcher that stops itself until Sentry is ready, then execs the agent, is reported
    // when it becomes the agent, not as itself.
    if (stat.pid === this.rootPid && this.#options.rootIsLauncher === true) return;
    this.#reportExec(member, { existing: how.existing && this.#options.reportExisting === true });
  }

  #reportExec(member: Member, how: { existing?: boolean; replaced?: boolean }): void {
    this.#send({
      pid: member.pid,
      ppid: member.ppid,
      exe: member.exe,
      cmdline: member.cmdline,
      kind: "proc.exec",
      target: commandOf(member),
      detail: {
        cwd: member.cwd,
        comm: member.stat.comm,
        pgrp: member.stat.pgrp,
        sid: member.stat.session,
        ...(how.existing ? { existing: true } : {}),
        ...(how.replaced ? { replaced: true } : {}),
      },
      sensor: this.name,
    });
  }

  #exit(member: Member, stat: ProcStatView | null): void {
    this.members.delete(member.pid);
    this.#version++;
    let status: { code: number | null; signal: number | string | null } | null = null;
    if (member.pid === this.rootPid && this.#rootExit !== null) status = this.#rootExit;
    else if (stat !== null && stat.state === "Z") {
      // A zombie we adopted (orphans come back to a subreaper): reap it for its status.
      status = this.#options.platform.reap(member.pid);
    }
    this.#send({
      pid: member.pid,
      ppid: member.ppid,
      exe: member.exe,
      cmdline: member.cmdline,
      kind: "proc.exit",
      target: commandOf(member),
      detail: status === null
        ? { status: "unknown", why: "its parent collected the exit status" }
        : { code: status.code, signal: status.signal },
      sensor: this.name,
    });
  }

  #countUnseen(seen: number): void {
    if (this.#options.report === false) return;
    // The host's pid counter tells how many processes started since the last scan; those not
    // seen lived less than one interval. Host-wide, so an upper bound for the agent's tree.
    const last = this.#options.platform.lastPid();
    if (last !== null && this.#lastPid !== null && last > this.#lastPid) {
      const unseen = last - this.#lastPid - seen;
      if (unseen > 0) {
        this.#counter.blind(
          "short_lived_processes",
          "processes on the host that started and exited between two scans (an upper bound for the agent)",
          unseen,
        );
      }
    }
    if (last !== null) this.#lastPid = last;
  }

  #send(event: SensorEvent): void {
    // A kernel tier cannot see processes that started before it: the tree reports those.
    if (
      this.#options.report === false && event.detail.existing !== true &&
      !(event.kind === "proc.exit" && this.#options.reportExits === true)
    ) return;
    this.#counter.counters.emitted++;
    this.#emit?.(event);
  }
}

/** A process's command line as an event target: its argv, else its executable, else its name. */
function commandOf(member: Member): string {
  return member.cmdline.length > 0 ? member.cmdline.join(" ") : (member.exe ?? member.stat.comm);
}

/**
 * Runs `poll` after every scan of the tree until the signal aborts, and resolves then. The
 * sensors that work on the tree's snapshot (fd, net, resource) start this way.
 */
export function followScans(tree: ProcSensor, signal: AbortSignal, poll: ScanHook): Promise<void> {
  let live = !signal.aborted;
  tree.onScan((now) => {
    if (live) poll(now);
  });
  return new Promise((resolve) => {
    if (!live) return resolve();
    signal.addEventListener("abort", () => {
      live = false;
      resolve();
    }, { once: true });
  });
}

/** Sleeps for `ms`, or until the signal aborts, or until the returned wake function is called. */
export function sleep(
  ms: number,
  signal: AbortSignal,
  onWake?: (wake: () => void) => void,
): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
    onWake?.(done);
  });
}
