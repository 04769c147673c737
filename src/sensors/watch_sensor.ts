import type { Kind } from "../events/mod.ts";
import { IN, InotifyGroup, type InotifyRecord } from "../platform/mod.ts";
import type { FdSensor } from "./fd_sensor.ts";
import type { ProcSensor } from "./proc_sensor.ts";
import { type Sensor, type SensorEvent, type SensorStats, StatsCounter } from "./sensor.ts";

/** One directory to watch. */
export interface WatchRoot {
  path: string;
  recursive: boolean;
}

/** The watch sensor's settings. */
export interface WatchSensorOptions {
  roots: WatchRoot[];
  tree: ProcSensor;
  fd: FdSensor;
  /** Paths (prefixes) that are Sentry's own files, never reported. */
  ignore?: string[];
  /** How far back fd evidence counts for attribution, in milliseconds. */
  evidenceMs: number;
  /**
   * The longest an event waits before it is attributed, in milliseconds. It is attributed as
   * soon as the fd sensor completes a poll that began after it (every descriptor open at the
   * event has then been seen); this bound only matters when the polls stall.
   */
  settleMs?: number;
}

/**
 * How far back the record of reported paths reaches (by time and by count): a rescan after an
 * overflow reports only what this record does not hold, so it must cover the window, which in
 * a flood starts seconds before the overflow is read (the watcher's thread lags behind).
 */
const REPORTED_MEMORY_MS = 30_000;
const REPORTED_MAX = 300_000;
/** How long a scan's record keeps a later create event for the same path a repeat. */
const SCANNED_MEMORY_MS = 2000;
/** How long a rescan waits after the last overflow, and the longest it waits after the first. */
const RESCAN_QUIET_MS = 100;
const RESCAN_MAX_WAIT_MS = 1000;
/** Entries a rescan reads between two yields to the event loop. */
const RESCAN_SLICE = 2000;
/** The longest the rescan at stop may take. */
const FINAL_RESCAN_MS = 10_000;

/** One change, as the sensor reads it from inotify's records. */
export interface WatchChange {
  kind: "create" | "modify" | "delete" | "rename" | "moved_in" | "moved_out" | "overflow";
  /** The path (the new one for a rename); "" for an overflow. */
  path: string;
  /** A rename's old path. */
  from?: string;
  /** Whether the entry is a directory. */
  dir?: boolean;
}

/** The events every watched directory reports. */
const WATCH_MASK = IN.CREATE | IN.MODIFY | IN.ATTRIB | IN.DELETE | IN.MOVED_FROM | IN.MOVED_TO |
  IN.ONLYDIR | IN.DONT_FOLLOW | IN.EXCL_UNLINK;

/**
 * Watches the workspace and the directories the policy's deny rules name with inotify (its own
 * instance, through FFI), for creates, modifications, deletes and renames, which polling can
 * miss. A directory made in a recursive root is watched as soon as its creation is read, and
 * scanned, so what was made in it before is not missed; a queue overflow (the kernel's
 * `IN_Q_OVERFLOW`) is followed by a rescan of the roots.
 * inotify does not say which process acted: an event is attributed to a pid only when exactly
 * one process of the tree had that path open recently (evidence from the fd sensor).
 * Otherwise it is recorded with `pid: null` and `detail.unattributed`, and counted.
 */
export class WatchSensor implements Sensor {
  readonly name = "watch";
  readonly #options: WatchSensorOptions;
  readonly #counter = new StatsCounter("watch");
  readonly #settling: { kind: Kind; path: string; detail: Record<string, unknown>; at: number }[] =
    [];
  /** When the last complete fd poll began: events before it have all their evidence. */
  #polledAt = Number.NEGATIVE_INFINITY;
  /** Every path reported in the last {@link REPORTED_MEMORY_MS}, and since an overflow. */
  readonly #reported = new Map<string, number>();
  /** Paths a scan reported lately, whose own create event may still come. */
  readonly #scanned = new Map<string, number>();
  /** Stops scans: only at the bound of a stop, never with the session's signal. */
  #scanSignal: AbortSignal = new AbortController().signal;
  /** Scans of new directories in flight. */
  readonly #scans = new Set<Promise<void>>();
  /** The path of the last event read, whose ctime dates the start of an overflow. */
  #lastPath: string | null = null;
  /** The start of the window a rescan must cover (null: no overflow pending). */
  #overflowSince: number | null = null;
  #firstOverflow = 0;
  #lastOverflow = 0;
  #rescanning = false;
  /** The watched directories, by watch descriptor. */
  readonly #dirs = new Map<number, { path: string; recursive: boolean }>();
  #group: InotifyGroup | null = null;
  #emit: ((event: SensorEvent) => void) | null = null;

  /** Sets up the sensor. */
  constructor(options: WatchSensorOptions) {
    this.#options = options;
  }

  /** The sensor's counters. */
  stats(): SensorStats {
    return this.#counter.snapshot();
  }

  /**
   * Watches until the signal aborts: a watch on every directory of the roots (below the
   * recursive ones), read on the FFI thread pool.
   */
  async start(emit: (event: SensorEvent) => void, signal: AbortSignal): Promise<void> {
    this.#emit = emit;
    let group: InotifyGroup;
    try {
      group = InotifyGroup.open();
    } catch (error) {
      this.#counter.blind(
        "watch_failed",
        `directories that could not be watched: ${
          this.#options.roots.map((r) => r.path).join(", ")
        } (${(error as Error).message})`,
        this.#options.roots.length,
      );
      return;
    }
    this.#group = group;
    // Scans (of new directories, after overflows) outlive the session's signal: at stop they
    // finish, bounded by FINAL_RESCAN_MS, since what they would report happened before it.
    const hardStop = new AbortController();
    this.#scanSignal = hardStop.signal;
    // Attribute as soon as the evidence is in, not after a fixed wait: the journal's crash
    // window counts from the event's time, so every millisecond held here is exposed.
    this.#options.fd.onPoll((polledAt) => {
      if (signal.aborted) return;
      this.#polledAt = Math.max(this.#polledAt, polledAt);
      this.#flushSettled(Date.now(), false);
    });
    const flush = setInterval(() => {
      const now = Date.now();
      this.#flushSettled(now, false);
      this.#forget(now);
      if (this.#rescanDue(now)) void this.#rescan(signal);
    }, 50);
    try {
      for (const root of this.#options.roots) {
        await this.#watchTree(root.path, root.recursive, signal);
      }
      while (!signal.aborted) {
        // A bounded wait, so that a stop is seen within 100 ms and the queue is then drained.
        const ready = await group.wait(100);
        if (ready === "closed") break;
        if (ready !== "readable") continue;
        const now = Date.now();
        for (const change of this.#changes(group.read())) this.handle(change, now);
      }
    } finally {
      clearInterval(flush);
      // What the kernel queued before the stop is the session's too.
      try {
        for (const change of this.#changes(group.read())) this.handle(change, Date.now());
      } catch {
        // The group failed: the overflow-free part was read.
      }
      const deadline = setTimeout(() => hardStop.abort(), FINAL_RESCAN_MS);
      while (this.#scans.size > 0) await Promise.all([...this.#scans]);
      await group.close();
      this.#group = null;
      await this.#finalRescan();
      clearTimeout(deadline);
      if (hardStop.signal.aborted) {
        this.#counter.blind(
          "scan_cut",
          `directory scans cut short at stop (${FINAL_RESCAN_MS} ms): entries made in new ` +
            "directories may be missing",
        );
      }
      this.#flushSettled(Date.now(), true);
      this.#emit = null;
    }
  }

  /** Watches a directory; counts it when it cannot be (the inotify watch limit, most often). */
  #watchDir(path: string, recursive: boolean): void {
    const group = this.#group;
    if (group === null) return;
    const wd = group.add(path, WATCH_MASK);
    if (wd < 0) {
      // ENOENT/ENOTDIR: gone already, or not a directory: nothing to watch.
      if (wd === -2 || wd === -20) return;
      this.#counter.blind(
        "unwatched_directories",
        `directories that could not be watched (errno ${-wd}; ENOSPC is the ` +
          "fs.inotify.max_user_watches limit): changes in them are not seen",
      );
      return;
    }
    this.#dirs.set(wd, { path, recursive });
  }

  /** Watches a directory and, when recursive, every directory below it. */
  async #watchTree(root: string, recursive: boolean, signal: AbortSignal): Promise<void> {
    this.#watchDir(root, recursive);
    if (!recursive) return;
    await this.#walk(root, true, signal, (path, info) => {
      if (info.isDirectory) this.#watchDir(path, true);
    });
  }

  /**
   * Turns records into changes: paths from the watch map, the two halves of a rename paired by
   * their cookie (a half left alone moved in from, or out to, an unwatched place), and the
   * watch map kept true as directories come, go and move.
   */
  #changes(records: readonly InotifyRecord[]): WatchChange[] {
    const out: WatchChange[] = [];
    const from = new Map<number, { path: string; dir: boolean; index: number }>();
    for (const r of records) {
      if ((r.mask & IN.Q_OVERFLOW) !== 0) {
        out.push({ kind: "overflow", path: "" });
        continue;
      }
      if ((r.mask & IN.IGNORED) !== 0) {
        this.#dirs.delete(r.wd);
        continue;
      }
      const dir = this.#dirs.get(r.wd);
      if (dir === undefined || r.name === "") continue;
      const path = dir.path.endsWith("/") ? dir.path + r.name : `${dir.path}/${r.name}`;
      const isDir = (r.mask & IN.ISDIR) !== 0;
      if ((r.mask & IN.CREATE) !== 0) {
        if (isDir && dir.recursive) this.#watchDir(path, true);
        out.push({ kind: "create", path, dir: isDir });
      } else if ((r.mask & (IN.MODIFY | IN.ATTRIB)) !== 0) {
        if (!isDir) out.push({ kind: "modify", path });
      } else if ((r.mask & IN.DELETE) !== 0) {
        out.push({ kind: "delete", path, dir: isDir });
      } else if ((r.mask & IN.MOVED_FROM) !== 0) {
        from.set(r.cookie, { path, dir: isDir, index: out.length });
        out.push({ kind: "moved_out", path, dir: isDir });
      } else if ((r.mask & IN.MOVED_TO) !== 0) {
        const pair = from.get(r.cookie);
        if (pair !== undefined) {
          from.delete(r.cookie);
          out[pair.index] = { kind: "rename", path, from: pair.path, dir: isDir };
          if (isDir) this.#moveWatches(pair.path, path, dir.recursive);
        } else {
          out.push({ kind: "moved_in", path, dir: isDir });
          if (isDir && dir.recursive) void this.#watchTree(path, true, this.#scanSignal);
        }
      }
    }
    // Directories moved out of the watched tree: their watches would report stale paths.
    for (const left of from.values()) if (left.dir) this.#unwatchBelow(left.path);
    return out;
  }

  /** After a directory rename inside the watched tree: its watches follow it to `to`. */
  #moveWatches(from: string, to: string, recursive: boolean): void {
    let moved = false;
    for (const entry of this.#dirs.values()) {
      if (entry.path === from || entry.path.startsWith(from + "/")) {
        entry.path = to + entry.path.slice(from.length);
        moved = true;
      }
    }
    // It had no watch yet (renamed before its creation was read, so the watch could not be
    // added): watch it now and report what was made in it meanwhile.
    if (!moved && recursive) {
      this.#track(this.#scanNewDirectory(to, this.#scanSignal));
    }
  }

  #unwatchBelow(path: string): void {
    for (const [wd, entry] of this.#dirs) {
      if (entry.path === path || entry.path.startsWith(path + "/")) {
        this.#group?.remove(wd);
        this.#dirs.delete(wd);
      }
    }
  }

  /** Drops the oldest reported paths beyond the memory (both maps are in report order). */
  #forget(now: number): void {
    const horizon = now - REPORTED_MEMORY_MS;
    for (const [path, at] of this.#reported) {
      if (at >= horizon && this.#reported.size <= REPORTED_MAX) break;
      this.#reported.delete(path);
    }
    for (const [path, at] of this.#scanned) {
      if (at >= now - SCANNED_MEMORY_MS) break;
      this.#scanned.delete(path);
    }
  }

  #rescanDue(now: number): boolean {
    if (this.#overflowSince === null || this.#rescanning) return false;
    return now - this.#lastOverflow >= RESCAN_QUIET_MS ||
      now - this.#firstOverflow >= RESCAN_MAX_WAIT_MS;
  }

  /**
   * Recovers what an overflow lost: walks the roots, watches the directories whose creation was
   * lost, and reports every entry changed (ctime) since the
   * window began that no event reported, as a `file.create` (born in the window) or a
   * `file.write`, with `detail.recovered`. Deletes in the window leave nothing to find: the
   * overflow itself is the blind spot that names them.
   */
  async #rescan(signal: AbortSignal): Promise<void> {
    const since = this.#overflowSince;
    if (since === null) return;
    this.#rescanning = true;
    this.#overflowSince = null;
    try {
      for (const root of this.#options.roots) {
        await this.#walk(root.path, root.recursive, signal, (path, info) => {
          // A directory whose creation the overflow lost gets its watch now.
          if (info.isDirectory && root.recursive) this.#watchDir(path, true);
          const changed = changeTime(info) ?? 0;
          if (changed < since || this.#reported.has(path)) return;
          const born = info.birthtime?.getTime();
          const kind: Kind = born !== undefined && born >= since ? "file.create" : "file.write";
          this.#counter.blind(
            "overflow_recovered",
            "file changes lost in an inotify overflow and found by a rescan: journaled late, " +
              "without the process or the exact time",
          );
          this.#found(kind, path, { recovered: "inotify_overflow" });
        });
      }
      if (signal.aborted) {
        // Cut short (Sentry is stopping): the final rescan covers the window again.
        this.#overflowSince = Math.min(this.#overflowSince ?? since, since);
      }
    } finally {
      this.#rescanning = false;
    }
  }

  /**
   * At stop: an overflow whose rescan has not run (or was cut short) gets one now, bounded in
   * time; what it could not finish is named.
   */
  async #finalRescan(): Promise<void> {
    const deadline = Date.now() + 1000;
    while (this.#rescanning && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    if (this.#overflowSince === null) return;
    const bound = AbortSignal.timeout(FINAL_RESCAN_MS);
    await this.#rescan(bound);
    if (bound.aborted) {
      this.#counter.blind(
        "overflow_rescan_cut",
        `rescans after an inotify overflow cut short at stop (${FINAL_RESCAN_MS} ms): ` +
          "changes in that window may be missing",
      );
    }
  }

  /**
   * Reports what a new directory already holds. A recursive watch is added to a directory only
   * once its creation is read, so whatever the agent made in it before then sends no event:
   * `mkdir d && touch d/f` is otherwise a file nobody saw.
   */
  async #scanNewDirectory(dir: string, signal: AbortSignal): Promise<void> {
    this.#watchDir(dir, true);
    await this.#walk(dir, true, signal, (path, info) => {
      if (info.isDirectory) this.#watchDir(path, true);
      if (this.#reported.has(path)) return;
      this.#counter.blind(
        "created_before_watch",
        "entries made in a new directory before its watch was added: found by a scan, " +
          "without the process or the exact time",
      );
      this.#found("file.create", path, { found: "new_directory" });
    });
  }

  #track(scan: Promise<void>): void {
    this.#scans.add(scan);
    void scan.finally(() => this.#scans.delete(scan));
  }

  /** Reports an entry a scan found; an inotify event for it that follows is a repeat. */
  #found(kind: Kind, path: string, detail: Record<string, unknown>): void {
    this.#scanned.delete(path);
    this.#scanned.set(path, Date.now());
    this.#send(kind, path, detail, Date.now());
  }

  /** Walks a directory (and below, when recursive), yielding to the event loop as it goes. */
  async #walk(
    dir: string,
    recursive: boolean,
    signal: AbortSignal,
    visit: (path: string, info: Deno.FileInfo) => void,
  ): Promise<void> {
    let read = 0;
    const walk = async (at: string): Promise<void> => {
      let entries: Deno.DirEntry[];
      try {
        entries = [...Deno.readDirSync(at)];
      } catch {
        return;
      }
      for (const entry of entries) {
        if (signal.aborted) return;
        const path = at.endsWith("/") ? at + entry.name : `${at}/${entry.name}`;
        if (this.#ignored(path)) continue;
        if (++read % RESCAN_SLICE === 0) await new Promise((resolve) => setTimeout(resolve, 0));
        let info: Deno.FileInfo;
        try {
          info = Deno.lstatSync(path);
        } catch {
          continue;
        }
        visit(path, info);
        if (recursive && info.isDirectory) await walk(path);
      }
    };
    await walk(dir);
  }

  /** Handles one change (public so tests can feed recorded changes). */
  handle(change: WatchChange, now: number): void {
    this.#counter.counters.polls++;
    if (change.kind === "overflow") {
      // The kernel's queue overflowed: events were lost. A rescan finds (and reports) the
      // files they were about; the deletes among them leave no trace.
      if (this.#overflowSince === null) {
        // The lost events came after the last one read, which happened (its ctime) maybe
        // seconds before it was read: the window starts there, or 2 s back, whichever is older.
        const last = this.#lastPath === null ? null : changedAt(this.#lastPath);
        this.#overflowSince = Math.min(now - 2000, (last ?? now) - 500);
        this.#firstOverflow = now;
      }
      this.#lastOverflow = now;
      this.#counter.blind(
        "inotify_overflow",
        "inotify queue overflows: the files they touched are rescanned, but deletes and " +
          "renames away inside them are not seen",
      );
      return;
    }
    const p = change.path;
    if (this.#ignored(p) && (change.from === undefined || this.#ignored(change.from))) return;
    this.#lastPath = p;
    switch (change.kind) {
      case "create":
        if (this.#scanned.has(p)) {
          // A scan of its new directory reported it already.
          this.#scanned.delete(p);
          this.#counter.counters.deduplicated++;
          return;
        }
        this.#send("file.create", p, {}, now);
        if (change.dir === true && this.#underRecursiveRoot(p)) {
          this.#track(this.#scanNewDirectory(p, this.#scanSignal));
        }
        return;
      case "modify":
        this.#send("file.write", p, {}, now);
        return;
      case "delete":
        this.#send("file.delete", p, {}, now);
        return;
      case "rename":
        this.#send("file.rename", p, { from: change.from ?? null }, now);
        return;
      case "moved_in":
        this.#send("file.rename", p, { from: null, moved: "in" }, now);
        return;
      case "moved_out":
        this.#send("file.delete", p, { moved: "out" }, now);
        return;
    }
  }

  #underRecursiveRoot(path: string): boolean {
    return this.#options.roots.some((r) =>
      r.recursive && path.startsWith(r.path.endsWith("/") ? r.path : r.path + "/")
    );
  }

  #ignored(path: string): boolean {
    return (this.#options.ignore ?? []).some((p) =>
      path === p || path.startsWith(p.endsWith("/") ? p : p + "/")
    );
  }

  #send(kind: Kind, path: string, detail: Record<string, unknown>, at: number): void {
    this.#reported.delete(path);
    this.#reported.set(path, at);
    this.#settling.push({ kind, path, detail, at });
  }

  #flushSettled(now: number, all: boolean): void {
    const settleMs = this.#options.settleMs ?? 150;
    while (this.#settling.length > 0) {
      const e = this.#settling[0] as {
        kind: Kind;
        path: string;
        detail: Record<string, unknown>;
        at: number;
      };
      if (!all && now - e.at < settleMs && e.at >= this.#polledAt) break;
      this.#settling.shift();
      this.#attribute(e.kind, e.path, e.detail, e.at);
    }
  }

  #attribute(kind: Kind, path: string, detail: Record<string, unknown>, at: number): void {
    // Evidence: a process of the tree had the path (or a rename's source) open around the event.
    const since = at - this.#options.evidenceMs;
    const holders = [
      ...new Set([
        ...this.#options.fd.holders(path, since),
        ...(typeof detail.from === "string" ? this.#options.fd.holders(detail.from, since) : []),
      ]),
    ];
    const pid = holders.length === 1 ? (holders[0] as number) : null;
    const member = pid === null ? undefined : this.#options.tree.members.get(pid);
    if (pid === null) {
      this.#counter.blind(
        "unattributed",
        "file events no process of the tree could be tied to (recorded with pid null)",
      );
    }
    this.#counter.counters.emitted++;
    this.#emit?.({
      ts: new Date(at).toISOString(),
      pid,
      ppid: member?.ppid ?? null,
      exe: member?.exe ?? null,
      cmdline: member?.cmdline ?? [],
      kind,
      target: path,
      detail: {
        ...detail,
        ...(pid === null
          ? { unattributed: true, ...(holders.length > 1 ? { candidates: holders } : {}) }
          : {}),
      },
      sensor: this.name,
    });
  }
}

/** When a path last changed (its ctime), in milliseconds; null when it is gone. */
function changedAt(path: string): number | null {
  try {
    return changeTime(Deno.lstatSync(path));
  } catch {
    return null;
  }
}

/** When an entry last changed: its ctime (a create, write, rename or chmod), else its mtime. */
function changeTime(info: Deno.FileInfo): number | null {
  return (info.ctime ?? info.mtime)?.getTime() ?? null;
}
