import type { ProcPlatform } from "./platform.ts";
import { followScans, type Member, type ProcSensor } from "./proc_sensor.ts";
import { type Sensor, type SensorEvent, type SensorStats, StatsCounter } from "./sensor.ts";

/** Paths whose opens are not file actions: terminals, devices, /proc and /sys. */
const IGNORED_PREFIXES = ["/dev/", "/proc/", "/sys/"];

/** The fd sensor's settings. */
export interface FdSensorOptions {
  tree: ProcSensor;
  platform: ProcPlatform;
  /** Paths (prefixes) that are Sentry's own files, never reported. */
  ignore?: string[];
  /**
   * Whether to report file descriptors (default true). A kernel tier that sees every open sets
   * it false: the sensor then only collects the sockets the network sensor joins.
   */
  files?: boolean;
}

/** What the fd sensor knows of one open descriptor. */
interface OpenFd {
  target: string;
  since: number;
}

/**
 * Watches the open file descriptors of every process in the tree, after each process scan.
 * A new descriptor on a path is a `file.read` or a `file.write`, told apart by its open flags
 * in /proc/PID/fdinfo. This sees reads, which inotify cannot. Socket inodes are left on the
 * member for the network sensor. Opens shorter than one polling interval are not seen.
 */
export class FdSensor implements Sensor {
  readonly name = "fd";
  readonly #options: FdSensorOptions;
  readonly #counter = new StatsCounter("fd");
  readonly #open = new Map<number, Map<number, OpenFd>>();
  /** Recently open paths per pid, for attributing inotify events: path -> pid -> last seen. */
  readonly #recent = new Map<string, Map<number, number>>();
  readonly #pollHooks: ((now: number) => void)[] = [];
  #emit: ((event: SensorEvent) => void) | null = null;

  /** Sets up the sensor; it reads nothing until the tree scans. */
  constructor(options: FdSensorOptions) {
    this.#options = options;
  }

  /** Hooks into the tree's scans until the signal aborts. */
  start(emit: (event: SensorEvent) => void, signal: AbortSignal): Promise<void> {
    this.#emit = emit;
    return followScans(this.#options.tree, signal, (now) => this.poll(now));
  }

  /** The sensor's counters. */
  stats(): SensorStats {
    return this.#counter.snapshot();
  }

  /**
   * The processes that had a path open at or after `sinceMs`: the evidence for attributing an
   * inotify event to a pid. Empty when no member had it open.
   */
  holders(path: string, sinceMs: number): number[] {
    const byPid = this.#recent.get(path);
    if (byPid === undefined) return [];
    return [...byPid].filter(([, seen]) => seen >= sinceMs).map(([pid]) => pid);
  }

  /**
   * Calls `hook` after each poll with the time the poll's scan began: every descriptor open at
   * that time has been seen, so evidence for an action before it is complete.
   */
  onPoll(hook: (now: number) => void): void {
    this.#pollHooks.push(hook);
  }

  /** Reads the descriptors of every member once. */
  poll(now: number): void {
    const { tree, platform } = this.#options;
    const c = this.#counter.counters;
    c.polls++;
    for (const pid of this.#open.keys()) if (!tree.members.has(pid)) this.#open.delete(pid);
    for (const member of tree.members.values()) {
      const probe = platform.listFds(member.pid);
      if (!probe.ok) {
        if (probe.reason === "denied") {
          this.#counter.blind("fd_denied", "processes whose descriptors Sentry may not read");
        }
        continue;
      }
      let known = this.#open.get(member.pid);
      if (known === undefined) this.#open.set(member.pid, known = new Map());
      const sockets = new Set<number>();
      const current = new Set<number>();
      for (const { fd, target } of probe.value) {
        current.add(fd);
        if (target.startsWith("socket:[")) {
          sockets.add(Number(target.slice(8, -1)));
          continue;
        }
        if (!target.startsWith("/") || this.#options.files === false) continue;
        const before = known.get(fd);
        if (before !== undefined && before.target === target) {
          this.#touch(target, member.pid, now);
          continue;
        }
        known.set(fd, { target, since: now });
        this.#touch(target, member.pid, now);
        if (this.#ignored(target)) continue;
        this.#report(member, fd, target);
        tree.markBusy(now);
      }
      for (const fd of known.keys()) if (!current.has(fd)) known.delete(fd);
      member.sockets = sockets;
    }
    this.#expire(now);
    for (const hook of this.#pollHooks) hook(now);
  }

  #ignored(path: string): boolean {
    if (IGNORED_PREFIXES.some((p) => path.startsWith(p)) && !path.startsWith("/dev/shm/")) {
      return true;
    }
    return (this.#options.ignore ?? []).some((p) =>
      path === p || path.startsWith(p.endsWith("/") ? p : p + "/")
    );
  }

  #report(member: Member, fd: number, rawTarget: string): void {
    const flags = this.#options.platform.readFdFlags(member.pid, fd);
    if (flags === null) {
      this.#counter.blind(
        "fd_closed_early",
        "descriptors closed before their open flags could be read",
      );
      return;
    }
    const deleted = rawTarget.endsWith(" (deleted)");
    const target = deleted ? rawTarget.slice(0, -10) : rawTarget;
    this.#counter.counters.emitted++;
    this.#emit?.({
      pid: member.pid,
      ppid: member.ppid,
      exe: member.exe,
      cmdline: member.cmdline,
      kind: flags.access === "read" ? "file.read" : "file.write",
      target,
      detail: {
        fd,
        access: flags.access,
        ...(flags.append ? { append: true } : {}),
        ...(deleted ? { deleted: true } : {}),
      },
      sensor: this.name,
    });
  }

  #touch(path: string, pid: number, now: number): void {
    let byPid = this.#recent.get(path);
    if (byPid === undefined) this.#recent.set(path, byPid = new Map());
    byPid.set(pid, now);
  }

  #expire(now: number): void {
    // Keep ten seconds of evidence for attribution, bounded in size.
    if (this.#recent.size < 4096) return;
    for (const [path, byPid] of this.#recent) {
      for (const [pid, seen] of byPid) if (now - seen > 10_000) byPid.delete(pid);
      if (byPid.size === 0) this.#recent.delete(path);
    }
  }
}
