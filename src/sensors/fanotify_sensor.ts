import {
  decodeFanotifyEvents,
  decodeProcConnector,
  FAN,
  type FanotifyEvent,
  FanotifyGroup,
  type FanotifyGroupOptions,
  type FileId,
  listChildren,
  OPEN_FLAGS,
  ProcConnector,
  type ProcConnectorOptions,
  type ProcConnectorRecord,
  readCmdline,
  readExe,
  SequenceGaps,
} from "../platform/mod.ts";
import {
  type KernelAction,
  type KernelEventContext,
  type ProcessTable,
  toSensorEvent,
} from "./kernel_action.ts";
import { type Sensor, type SensorEvent, type SensorStats, StatsCounter } from "./sensor.ts";

const O_WRONLY = 1;
const O_CREAT = 0o100;

/** Event bits that change directory entries (they matter for directories too). */
const DIRENT_EVENTS = FAN.CREATE | FAN.DELETE | FAN.RENAME | FAN.MOVED_FROM | FAN.MOVED_TO;
/** Event bits that this tier turns into actions. */
const ACTION_EVENTS = FAN.OPEN | FAN.ACCESS | FAN.MODIFY | FAN.CLOSE_WRITE | DIRENT_EVENTS;

// --- The tree -----------------------------------------------------------------------------------

/** How {@link TreeTracker} is set up. */
export interface TreeTrackerOptions {
  /** Processes never tracked, even when a tracked process forks them (Sentry and its helpers). */
  excluded?: Iterable<number>;
}

/**
 * The tree's thread group ids, kept exactly from proc connector records: a process forked by a
 * tracked process is tracked before it can run (the kernel sends the fork event before the child
 * is woken), whatever session or parent it later has. No I/O.
 *
 * An exited process stays in the set while it is retiring: its last file events may still be in
 * the fanotify queue when its exit is read. {@link TreeTracker.endPump} drops it once a complete
 * fanotify read has begun after its exit was seen, since every file event of a process is queued
 * before its exit event is sent.
 */
export class TreeTracker {
  readonly #tracked = new Set<number>();
  readonly #excluded: Set<number>;
  readonly #retiring = new Map<number, number>();
  #pump = 0;

  /** Starts with an empty tree. */
  constructor(options: TreeTrackerOptions = {}) {
    this.#excluded = new Set(options.excluded ?? []);
  }

  /** Tracks a process (unless excluded). Returns whether it is new to the tree. */
  add(pid: number): boolean {
    if (this.#excluded.has(pid) || this.#tracked.has(pid)) return false;
    this.#tracked.add(pid);
    this.#retiring.delete(pid);
    return true;
  }

  /** Whether file events of `pid` belong to the tree (a live member, or one retiring). */
  has(pid: number): boolean {
    return this.#tracked.has(pid);
  }

  /** The tracked processes, retiring ones included. */
  get pids(): ReadonlySet<number> {
    return this.#tracked;
  }

  /** How many processes are tracked. */
  get size(): number {
    return this.#tracked.size;
  }

  /**
   * Applies one record and returns the action it means for the tree, or null when it is not
   * about the tree (another process, a thread, or a kind Sentry does not use). Exec actions come
   * back with an empty path and argv: the caller reads them from /proc.
   */
  apply(record: ProcConnectorRecord): KernelAction | null {
    switch (record.type) {
      case "fork":
        // A new thread (pid !== tgid) is not a new process.
        if (record.childPid !== record.childTgid || !this.#tracked.has(record.parentTgid)) {
          return null;
        }
        if (!this.add(record.childTgid)) return null;
        return { op: "fork", pid: record.childTgid, ppid: record.parentTgid };
      case "exec":
        if (!this.#tracked.has(record.tgid)) return null;
        // A thread other than the leader exec'd: the leader's exit came first, and the process
        // lives on under its pid.
        this.#retiring.delete(record.tgid);
        return { op: "exec", pid: record.tgid, path: "", argv: [], result: 0, syscall: "execve" };
      case "exit":
        // A thread's exit is not the process's; the leader's is (its status is the group's).
        if (record.pid !== record.tgid || !this.#tracked.has(record.tgid)) return null;
        if (this.#retiring.has(record.tgid)) return null;
        this.#retiring.set(record.tgid, this.#pump);
        return { op: "exit", pid: record.tgid, status: record.status };
      default:
        return null;
    }
  }

  /**
   * Ends one read cycle. When the cycle's fanotify read reached an empty queue (`drained`),
   * processes whose exit was seen in an earlier cycle leave the set: their file events were all
   * read. Returns the pids that left.
   */
  endPump(drained: boolean): number[] {
    const gone: number[] = [];
    if (drained) {
      for (const [pid, pump] of this.#retiring) {
        if (pump < this.#pump) {
          this.#retiring.delete(pid);
          this.#tracked.delete(pid);
          gone.push(pid);
        }
      }
    }
    this.#pump++;
    return gone;
  }
}

// --- File events to actions ---------------------------------------------------------------------

/** How {@link FileActions} maps events. */
export interface FileActionsOptions {
  /** A directory's path from its handle (the group's cached resolver); null when it is gone. */
  resolveDir: (dir: FileId) => string | null;
  /** Report opens and reads of directories (listings) as reads. Default false. */
  directoryReads?: boolean;
  /**
   * Keys of files whose writes are not the tree's own actions: the descriptors the root
   * inherited (a redirected stdout or stderr).
   */
  inheritedOutputs?: ReadonlySet<string>;
}

/** What {@link FileActions} counted. */
export interface FileActionCounters {
  /** Writes folded into the first of their open episode (one `write` per episode). */
  foldedWrites: number;
  /** Reads folded: an access after the open that was already reported. */
  foldedReads: number;
  /** Events whose directory could not be resolved (removed before it was read). */
  unresolved: number;
  /** Events that carried several actions at once: the kernel merged them. */
  merged: number;
  /** Writes to inherited outputs, left out. */
  inheritedWrites: number;
  /** Moves whose other half never came (kernels without FAN_RENAME). */
  unpairedMoves: number;
}

interface Episode {
  read: boolean;
  write: boolean;
}

/**
 * Turns decoded fanotify events of the tree into kernel actions: open → read (access → read
 * when the open was not seen, e.g. an inherited descriptor), modify / close-write → one write per
 * open episode (none after the file's own create: its first writes are the create's), create →
 * create, delete → unlink or rmdir, rename (or a moved-from / moved-to
 * pair) → rename. No I/O besides the injected resolver.
 *
 * fanotify does not give an open's flags: an open for writing is also reported as a read, except
 * when the same event created the file. The kernel merges identical events of one process on one
 * file while they wait in its queue: a merged event's actions are reported once each, in a fixed
 * order (create, read, write, rename, delete), whatever their real order and count.
 */
export class FileActions {
  readonly #options: FileActionsOptions;
  readonly #episodes = new Map<string, Episode>();
  readonly #moves = new Map<number, { key: string; from: string }>();
  /** What was folded, merged, left out or unresolved so far. */
  readonly counters: FileActionCounters = {
    foldedWrites: 0,
    foldedReads: 0,
    unresolved: 0,
    merged: 0,
    inheritedWrites: 0,
    unpairedMoves: 0,
  };

  /** Sets up the mapper. */
  constructor(options: FileActionsOptions) {
    this.#options = options;
  }

  /** Whether an event with this mask is worth decoding (before its pid is even looked at). */
  wanted(mask: number): boolean {
    if ((mask & ACTION_EVENTS) === 0) return (mask & FAN.OPEN_EXEC) !== 0;
    if ((mask & FAN.ONDIR) !== 0 && (mask & DIRENT_EVENTS) === 0) {
      return this.#options.directoryReads === true;
    }
    return true;
  }

  /** The actions one event of the tree means, in order. */
  map(event: FanotifyEvent): KernelAction[] {
    const { pid } = event;
    // The open of an executed file (and of its loader) is the exec, which the proc connector
    // reports: it is not a read.
    const mask = (event.mask & FAN.OPEN_EXEC) !== 0 ? event.mask & ~FAN.OPEN : event.mask;
    const actions: KernelAction[] = [];
    const bits = mask & ACTION_EVENTS;
    if ((bits & (bits - 1)) !== 0) this.counters.merged++;
    const directory = (mask & FAN.ONDIR) !== 0;
    if ((mask & FAN.RENAME) !== 0) {
      const from = this.#entryPath(event.from);
      const to = this.#entryPath(event.to);
      if (from !== null && to !== null) {
        actions.push({ op: "rename", pid, from, to, result: 0, syscall: "FAN_RENAME" });
      }
    }
    if ((bits & ~FAN.RENAME) === 0) return actions;
    const path = event.entry === null ? null : this.#entryPath({
      dir: event.entry.dir,
      name: event.entry.name ?? ".",
    });
    if (path === null) return actions;
    const key = `${pid}:${event.object?.key ?? path}`;
    const dirFlag = directory ? OPEN_FLAGS.O_DIRECTORY : 0;
    if ((mask & FAN.CREATE) !== 0) {
      actions.push({
        op: "open",
        pid,
        path,
        flags: O_CREAT | (directory ? dirFlag : O_WRONLY),
        created: true,
        result: 0,
        syscall: "FAN_CREATE",
      });
      // The writes that fill a new file belong to its create.
      if (!directory) this.#episode(key).write = true;
    }
    if ((mask & (FAN.OPEN | FAN.ACCESS)) !== 0) {
      const episode = this.#episode(key);
      // An open in the same event as the create is the create's own open.
      const created = (mask & FAN.CREATE) !== 0;
      if ((mask & FAN.OPEN) !== 0 && !created) {
        actions.push({ op: "open", pid, path, flags: dirFlag, result: 0, syscall: "FAN_OPEN" });
      } else if ((mask & FAN.ACCESS) !== 0 && !episode.read && !created) {
        actions.push({ op: "open", pid, path, flags: dirFlag, result: 0, syscall: "FAN_ACCESS" });
      } else if ((mask & FAN.ACCESS) !== 0) {
        this.counters.foldedReads++;
      }
      episode.read = true;
    }
    if ((mask & (FAN.MODIFY | FAN.CLOSE_WRITE)) !== 0) {
      const inherited = event.object !== null &&
        this.#options.inheritedOutputs?.has(event.object.key) === true;
      const episode = this.#episode(key);
      if (inherited) {
        this.counters.inheritedWrites++;
      } else if (!episode.write) {
        actions.push({
          op: "open",
          pid,
          path,
          flags: O_WRONLY,
          result: 0,
          syscall: (mask & FAN.MODIFY) !== 0 ? "FAN_MODIFY" : "FAN_CLOSE_WRITE",
        });
      } else {
        this.counters.foldedWrites++;
      }
      episode.write = true;
      // The writable descriptor is closed: the next write is a new episode.
      if ((mask & FAN.CLOSE_WRITE) !== 0) this.#episodes.delete(key);
    }
    if ((mask & FAN.MOVED_FROM) !== 0) {
      this.#moves.set(pid, { key: event.object?.key ?? "", from: path });
    }
    if ((mask & FAN.MOVED_TO) !== 0) {
      const from = this.#moves.get(pid);
      if (from !== undefined && from.key === (event.object?.key ?? "")) {
        this.#moves.delete(pid);
        actions.push({
          op: "rename",
          pid,
          from: from.from,
          to: path,
          result: 0,
          syscall: "FAN_MOVED_TO",
        });
      } else {
        // Moved in with no source seen: the name appeared.
        this.counters.unpairedMoves++;
        actions.push({
          op: "open",
          pid,
          path,
          flags: O_CREAT | (directory ? dirFlag : O_WRONLY),
          created: true,
          result: 0,
          syscall: "FAN_MOVED_TO",
        });
      }
    }
    if ((mask & FAN.DELETE) !== 0) {
      actions.push({
        op: directory ? "rmdir" : "unlink",
        pid,
        path,
        result: 0,
        syscall: "FAN_DELETE",
      });
      this.#episodes.delete(key);
    }
    return actions;
  }

  /** Forgets a process's open episodes and pending moves (it exited). */
  forget(pid: number): void {
    const prefix = `${pid}:`;
    for (const key of this.#episodes.keys()) if (key.startsWith(prefix)) this.#episodes.delete(key);
    if (this.#moves.delete(pid)) this.counters.unpairedMoves++;
  }

  /** Open episodes kept (bounded: cleared past 65,536). */
  get episodes(): number {
    return this.#episodes.size;
  }

  #episode(key: string): Episode {
    let episode = this.#episodes.get(key);
    if (episode === undefined) {
      if (this.#episodes.size >= 65536) this.#episodes.clear();
      episode = { read: false, write: false };
      this.#episodes.set(key, episode);
    }
    return episode;
  }

  #entryPath(entry: { dir: FileId; name: string } | null): string | null {
    if (entry === null) return null;
    const dir = this.#options.resolveDir(entry.dir);
    if (dir === null) {
      this.counters.unresolved++;
      return null;
    }
    if (entry.name === "." || entry.name === "") return dir;
    return dir === "/" ? `/${entry.name}` : `${dir}/${entry.name}`;
  }
}

/** The first executed file of a list of `FAN_OPEN_EXEC` paths that is not the dynamic loader. */
export function programOf(paths: readonly string[]): string | null {
  for (const path of paths) {
    const base = path.slice(path.lastIndexOf("/") + 1);
    if (!/^ld-linux|^ld-musl|^ld\.so|^ld64\.so/.test(base)) return path;
  }
  return null;
}

// --- The sensor ---------------------------------------------------------------------------------

/** The fanotify sensor's settings. */
export interface FanotifySensorOptions {
  /** The agent's root process: it and every descendant are tracked. */
  rootPid: number;
  /** Attribution: pid → ppid, exe and command line; shared with the rest of the session. */
  table: ProcessTable;
  /** Processes never tracked (Sentry's helpers). Sentry's own pid always is. */
  excluded?: number[];
  /** Ports that make a connection a `db.connect` (this tier sees no connects). Default none. */
  databasePorts?: ReadonlySet<number>;
  /** Report directory listings (opens of directories) as reads. Default false. */
  directoryReads?: boolean;
  /**
   * Leave out writes to the files the root has open as descriptors 1 and 2 when the sensor
   * starts (a redirected stdout or stderr: Sentry's or the shell's, not the agent's). Default
   * true.
   */
  ignoreInheritedOutput?: boolean;
  /** Paths (and everything below them) never reported, such as Sentry's own data. */
  ignorePaths?: readonly string[];
  /** Called with every new process of the tree, before its events. */
  onFork?: (pid: number, ppid: number) => void;
  /** Settings of the fanotify group (marks, buffer). */
  fanotify?: FanotifyGroupOptions;
  /** Settings of the proc connector socket. */
  procConnector?: ProcConnectorOptions;
  /** Bytes of fanotify events read at most per cycle before yielding to the event loop. Default 4 MiB. */
  readBudgetBytes?: number;
  /**
   * How long file events may gather before a cycle reads them, in milliseconds. Default 2:
   * identical events of one process on one file merge meanwhile (the session folds such repeats
   * anyway), and the reader's cost per host event drops several times. 0 reads at once.
   */
  batchMs?: number;
}

/**
 * The fanotify + proc connector tier (root, no eBPF). The proc connector gives every fork, exec
 * and exit on the host exactly, with per-CPU sequence numbers that count any loss; the tree's
 * thread group ids are kept from it (forks of tracked processes are tracked before the child
 * runs). A fanotify group with a mark on every filesystem gives file events of every process on
 * the host with their pid; events of processes outside the tree are dropped by pid before any
 * path is resolved, so the host's activity costs a table lookup per event.
 *
 * One read cycle: read the fanotify queue, then drain the proc connector (so the fork of any
 * process whose file events were just read is known), apply forks and execs, map the tree's file
 * events, then exits. Reads never block the event loop: both descriptors are polled on the FFI
 * thread pool, then drained synchronously.
 *
 * What this tier cannot see (reported as blind spots): failed opens and failed actions of any
 * kind (fanotify reports only what happened), connects (the poll tier's network sensor keeps
 * them), filesystems that cannot be marked (procfs, sysfs, devpts), the size of a fanotify queue
 * overflow, and the true number and order of events the kernel merged.
 */
export class FanotifySensor implements Sensor {
  /** The sensor's name in events and stats. */
  readonly name = "fanotify";
  readonly #options: FanotifySensorOptions;
  readonly #counter = new StatsCounter("fanotify");
  readonly #context: KernelEventContext;
  readonly #tree: TreeTracker;
  readonly #gaps = new SequenceGaps();
  readonly #readyPromise: Promise<void>;
  #resolveReady!: () => void;
  #rejectReady!: (error: unknown) => void;
  #group: FanotifyGroup | null = null;
  #connector: ProcConnector | null = null;
  #files: FileActions | null = null;
  #emit: ((event: SensorEvent) => void) | null = null;
  /** Execs and exits of the cycle's second drain, applied at the start of the next. */
  #carried: ProcConnectorRecord[] = [];
  #lostSinceWalk = false;
  readonly #execHints = new Map<number, string[]>();
  /** Programs read from /proc as soon as an exec was received, by pid. */
  readonly #snapshots = new Map<number, { path: string; argv: string[] } | null>();
  readonly #ignorePaths: readonly string[];
  #overflows = 0;
  #fileEvents = 0;
  #hostEvents = 0;
  #procRecords = 0;
  #execUnresolved = 0;
  #argvUnread = 0;
  #rewalks = 0;

  /** Sets up the sensor; nothing is opened until `start()`. */
  constructor(options: FanotifySensorOptions) {
    this.#options = options;
    this.#tree = new TreeTracker({ excluded: [Deno.pid, ...(options.excluded ?? [])] });
    this.#context = {
      sensor: this.name,
      table: options.table,
      databasePorts: options.databasePorts ?? new Set(),
    };
    this.#ignorePaths = (options.ignorePaths ?? []).map((p) => p.replace(/\/+$/, ""));
    this.#readyPromise = new Promise((resolve, reject) => {
      this.#resolveReady = resolve;
      this.#rejectReady = reject;
    });
    // A caller that never awaits `ready` must not see an unhandled rejection.
    this.#readyPromise.catch(() => {});
  }

  /**
   * Resolves once both kernel sources are open and the tree is seeded: from then on no process
   * of the tree can act unseen (a `run` launcher should wait for this before it execs the agent).
   * Rejects with the reason when the tier cannot start (not root, no proc connector, no mark).
   */
  get ready(): Promise<void> {
    return this.#readyPromise;
  }

  /** The tracked processes (live, and exited ones whose last events may still be queued). */
  get tracked(): ReadonlySet<number> {
    return this.#tree.pids;
  }

  /** The fanotify group, once started: its marks, what it could not mark, and its features. */
  get group(): FanotifyGroup | null {
    return this.#group;
  }

  /** Raw figures for benchmarks: events read, and how many were the host's. */
  get figures(): { fileEvents: number; hostEvents: number; procRecords: number } {
    return {
      fileEvents: this.#fileEvents,
      hostEvents: this.#hostEvents,
      procRecords: this.#procRecords,
    };
  }

  /**
   * Opens the fanotify group and the proc connector, then seeds the tree from /proc (a fork
   * during the walk is queued on the socket already), and reads until `signal` aborts. On abort it reads
   * both queues to the end before it releases them, so the tree's last actions are not lost.
   */
  async start(emit: (event: SensorEvent) => void, signal: AbortSignal): Promise<void> {
    this.#emit = emit;
    try {
      // The group first: an exec between the two opens is then named by FAN_OPEN_EXEC. No
      // fork is missed either way, since the tree is seeded from /proc after both.
      this.#group = FanotifyGroup.open(this.#options.fanotify);
      this.#connector = ProcConnector.open(this.#options.procConnector);
    } catch (error) {
      await this.#release();
      this.#rejectReady(error);
      throw error;
    }
    try {
      const group = this.#group;
      this.#files = new FileActions({
        resolveDir: (dir) => this.#resolveDir(group, dir),
        ...(this.#options.directoryReads === undefined
          ? {}
          : { directoryReads: this.#options.directoryReads }),
        inheritedOutputs: this.#options.ignoreInheritedOutput === false
          ? new Set()
          : inheritedOutputs(group, this.#options.rootPid),
      });
      this.#seed();
      this.#resolveReady();
      const aborted = new Promise<void>((resolve) => {
        if (signal.aborted) resolve();
        signal.addEventListener("abort", () => resolve(), { once: true });
      });
      const connector = this.#connector;
      const batchMs = this.#options.batchMs ?? 2;
      let more = false;
      while (!signal.aborted) {
        if (!more) {
          const woke = await Promise.race([
            connector.wait(1000).then(() => "proc" as const),
            group.wait(1000).then(() => "files" as const),
            aborted.then(() => "abort" as const),
          ]);
          // File events alone: let them gather for a moment, so one cycle reads many (a cycle
          // costs about as much as a hundred skipped host events). A fork, exec or exit ends
          // the wait at once: an exec's argv must be read before the program ends.
          if (woke === "files" && batchMs > 0) {
            await Promise.race([sleep(batchMs), connector.wait(batchMs + 10), aborted]);
          }
        } else {
          // A cycle stopped at its read budget: let the event loop breathe, then go on.
          await sleep(0);
        }
        if (signal.aborted) break;
        more = this.#cycle();
      }
      // Drain to the end: everything the tree did before the abort is queued already.
      for (let i = 0; i < 64 && this.#cycle(); i++);
      // Twice: the last cycle's execs and exits are carried into the next.
      this.#cycle();
      this.#cycle();
    } finally {
      await this.#release();
    }
  }

  /** The sensor's counters, with the exact proc connector loss and the blind spots. */
  stats(): SensorStats {
    const stats = this.#counter.snapshot();
    const files = this.#files?.counters;
    stats.dropped = this.#gaps.lost;
    stats.deduplicated = (files?.foldedWrites ?? 0) + (files?.foldedReads ?? 0);
    const spot = (id: string, reason: string, count: number, always = false) => {
      if (count > 0 || always) stats.blindSpots.push({ id, reason, count });
    };
    spot(
      "proc_connector_loss",
      "fork, exec and exit events of the host lost by the proc connector socket, counted exactly " +
        "from its per-CPU sequence gaps (most may be other processes'); the tree was re-walked " +
        `from /proc after each gap (${this.#rewalks} times) to find children whose fork was lost`,
      this.#gaps.lost,
    );
    spot(
      "fanotify_overflow",
      "times the fanotify queue overflowed (fs.fanotify.max_queued_events): the kernel dropped " +
        "file events of the host, and how many, and whose, is unknown",
      this.#overflows,
    );
    const unmarked = this.#group?.unmarked ?? [];
    spot(
      "unmarked_filesystems",
      `filesystems without a fanotify mark, whose file actions are not seen: ${
        unmarked.map((u) => `${u.mountPoint} (${u.fsType}: ${u.reason})`).join(", ") || "none"
      }`,
      unmarked.length,
    );
    spot(
      "merged_events",
      "events that carried several actions because the kernel merged them in its queue (same " +
        "process, same file): repeats inside one are reported once, in a fixed order",
      files?.merged ?? 0,
    );
    spot(
      "unresolved_paths",
      "file events of the tree whose directory was removed before its path could be resolved",
      files?.unresolved ?? 0,
    );
    spot(
      "exec_unresolved",
      "execs of the tree whose program could not be read (the process was gone, and fanotify " +
        "named no executed file)",
      this.#execUnresolved,
    );
    spot(
      "exec_argv_unread",
      "execs of the tree recorded without their argv: the process had exited or exec'd again " +
        "before /proc/PID/cmdline could be read (the proc connector does not carry argv)",
      this.#argvUnread,
    );
    spot(
      "failed_actions",
      "failed opens, deletes, renames and execs, among them what the wall's Landlock refused: " +
        "fanotify reports only actions that happened, so these are neither seen nor counted (0 " +
        "here means unknown)",
      0,
      true,
    );
    spot(
      "connects",
      "network connects: not seen by this tier (0 here means unknown); the poll tier's network " +
        "sensor keeps them",
      0,
      true,
    );
    return stats;
  }

  /**
   * One read cycle. Returns true when it stopped at its read budget with events left.
   *
   * 1. Drain the proc connector. Every exec among these records was queued after its
   *    `FAN_OPEN_EXEC`, so the fanotify read below holds the files it executed.
   * 2. Read the fanotify queue.
   * 3. Drain the proc connector again: the fork of any process whose file events were just read
   *    is among them, since a fork is sent before the child runs. Forks are applied as they are
   *    received, in both drains; this drain's execs and exits wait for the next cycle, where
   *    step 1 ends them.
   * 4. Keep the tree's file events (by pid, before anything else is decoded), then emit the
   *    execs, the file actions, and the exits, in that order.
   */
  #cycle(): boolean {
    const group = this.#group;
    const connector = this.#connector;
    const files = this.#files;
    if (group === null || connector === null || files === null) return false;
    const started = performance.now();
    this.#counter.counters.polls++;
    const first = [...this.#carried, ...this.#receiveAll(connector)];
    this.#carried = [];
    const execs: (KernelAction & { op: "exec" })[] = [];
    const exits: KernelAction[] = [];
    for (const record of first) {
      const action = this.#tree.apply(record);
      if (action === null) continue;
      if (action.op === "exec") {
        // The leader's exit that a non-leader thread's exec brings is not the process's.
        const index = exits.findIndex((exit) => exit.pid === action.pid);
        if (index >= 0) exits.splice(index, 1);
        execs.push(action);
      } else {
        exits.push(action);
      }
    }
    const chunks: Uint8Array[] = [];
    const budget = this.#options.readBudgetBytes ?? 4 * 1024 * 1024;
    let bytes = 0;
    let drained = false;
    while (bytes < budget) {
      const chunk = group.read();
      if (chunk === null) {
        drained = true;
        break;
      }
      chunks.push(chunk.slice());
      bytes += chunk.length;
    }
    this.#carried = this.#receiveAll(connector);
    if (this.#lostSinceWalk) {
      this.#lostSinceWalk = false;
      this.#rewalk();
    }
    const tree = this.#tree;
    const keep = (pid: number, mask: number): boolean => {
      // Any directory moved on the host may change cached directory paths.
      if ((mask & FAN.ONDIR) !== 0 && (mask & (FAN.RENAME | FAN.MOVED_FROM | FAN.MOVED_TO)) !== 0) {
        group.invalidate();
      }
      if (!tree.has(pid)) {
        this.#hostEvents++;
        return false;
      }
      return files.wanted(mask);
    };
    const events: FanotifyEvent[] = [];
    for (const chunk of chunks) {
      const batch = decodeFanotifyEvents(chunk, { keep });
      this.#fileEvents += batch.events.length + batch.skipped;
      this.#overflows += batch.overflows;
      // A lost directory move would leave stale paths in the cache.
      if (batch.overflows > 0) group.invalidate();
      for (const event of batch.events) {
        if ((event.mask & FAN.OPEN_EXEC) !== 0) this.#hint(event);
        events.push(event);
      }
    }
    this.#execs(execs);
    for (const event of events) {
      for (const action of files.map(event)) {
        if (!this.#ignored(action)) this.#handle(action);
      }
    }
    // Exits last: the process's file events above came before them.
    for (const exit of exits) {
      this.#handle(exit);
      files.forget(exit.pid);
    }
    for (const pid of tree.endPump(drained)) {
      this.#execHints.delete(pid);
      this.#snapshots.delete(pid);
    }
    this.#counter.counters.lagMs = Math.round(performance.now() - started);
    return !drained;
  }

  /**
   * Every record waiting on the socket, with its sequence number accounted for. Forks are
   * applied (and emitted) at once, so the tree is whole before any file event is filtered; the
   * other records are returned for the cycle to order.
   */
  #receiveAll(connector: ProcConnector): ProcConnectorRecord[] {
    const records: ProcConnectorRecord[] = [];
    for (let datagram = connector.receive(); datagram !== null; datagram = connector.receive()) {
      for (const record of decodeProcConnector(datagram).records) {
        if (record.type === "error") continue;
        this.#procRecords++;
        if (this.#gaps.observe(record) > 0) this.#lostSinceWalk = true;
        if (record.type === "fork") {
          const action = this.#tree.apply(record);
          if (action?.op === "fork") this.#fork(action.pid, action.ppid);
          continue;
        }
        // A short-lived program may be gone in a millisecond: read it the moment its exec is
        // known, before anything else of the cycle.
        if (record.type === "exec" && this.#tree.has(record.tgid)) {
          this.#snapshots.set(record.tgid, readProgram(record.tgid));
        }
        records.push(record);
      }
    }
    return records;
  }

  #fork(pid: number, ppid: number): void {
    this.#options.onFork?.(pid, ppid);
    this.#handle({ op: "fork", pid, ppid });
  }

  /**
   * Fills and emits execs, in order. The last exec of a process in the cycle reads its program
   * and argv from /proc (it still runs it, unless it exited). An earlier one, or one whose
   * process is gone, takes the next file fanotify saw it execute (`FAN_OPEN_EXEC`, skipping the
   * dynamic loader), without argv: the process ran something else before it could be read.
   */
  #execs(execs: (KernelAction & { op: "exec" })[]): void {
    const last = new Map<number, number>();
    execs.forEach((exec, i) => last.set(exec.pid, i));
    execs.forEach((exec, i) => {
      const hints = this.#execHints.get(exec.pid) ?? [];
      const index = hints.findIndex((path) => programOf([path]) !== null);
      const hinted = index < 0 ? null : hints[index] ?? null;
      if (index >= 0) hints.splice(0, index + 1);
      if (last.get(exec.pid) === i) {
        this.#execHints.delete(exec.pid);
        if (this.#readExec(exec)) {
          this.#handle(exec);
          return;
        }
      }
      if (hinted === null) this.#execUnresolved++;
      this.#argvUnread++;
      exec.path = hinted ?? `[pid ${exec.pid}]`;
      exec.argv = [];
      this.#handle(exec);
    });
  }

  #handle(action: KernelAction): void {
    const event = toSensorEvent(action, this.#context);
    if (event === null) return;
    this.#counter.counters.emitted++;
    this.#emit?.(event);
  }

  #ignored(action: KernelAction): boolean {
    if (this.#ignorePaths.length === 0) return false;
    const paths = action.op === "rename"
      ? [action.from, action.to]
      : "path" in action
      ? [action.path]
      : [];
    return paths.every((path) =>
      this.#ignorePaths.some((root) => path === root || path.startsWith(`${root}/`))
    );
  }

  #resolveDir(group: FanotifyGroup, dir: FileId): string | null {
    return group.resolveDir(dir);
  }

  /** Fills an exec's program and argv from /proc; false when the process is gone. */
  #readExec(action: KernelAction & { op: "exec" }): boolean {
    const snapshot = this.#snapshots.get(action.pid);
    this.#snapshots.delete(action.pid);
    const program = snapshot ?? readProgram(action.pid);
    if (program === null) return false;
    action.path = program.path;
    action.argv = program.argv;
    return true;
  }

  /** Keeps the files fanotify saw a process execute, in order, for {@link #execs}. */
  #hint(event: FanotifyEvent): void {
    const group = this.#group;
    if (group === null || event.entry === null) return;
    const dir = group.resolveDir(event.entry.dir);
    if (dir === null || event.entry.name === null) return;
    const path = dir === "/" ? `/${event.entry.name}` : `${dir}/${event.entry.name}`;
    const list = this.#execHints.get(event.pid) ?? [];
    list.push(path);
    this.#execHints.set(event.pid, list);
  }

  /** Tracks the root and its descendants: each pid is added before its children are listed. */
  #seed(): void {
    const stack = [this.#options.rootPid];
    while (stack.length > 0) {
      const pid = stack.pop()!;
      if (!this.#tree.add(pid) && !this.#tree.has(pid)) continue;
      this.#options.table.get(pid);
      for (const child of listChildren(pid) ?? []) {
        if (!this.#tree.has(child)) stack.push(child);
      }
    }
  }

  /** After a proc connector loss: finds children of tracked processes whose fork was lost. */
  #rewalk(): void {
    this.#rewalks++;
    const stack = [...this.#tree.pids];
    while (stack.length > 0) {
      const pid = stack.pop()!;
      for (const child of listChildren(pid) ?? []) {
        if (this.#tree.add(child)) {
          this.#options.table.get(child);
          stack.push(child);
        }
      }
    }
  }

  async #release(): Promise<void> {
    const connector = this.#connector;
    const group = this.#group;
    this.#connector = null;
    try {
      await connector?.close();
    } finally {
      // The group object stays readable (`marked`, `unmarked`) for stats; its fds are closed.
      await group?.close();
    }
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** A process's program and argv from /proc, or null when it is gone (or a zombie). */
function readProgram(pid: number): { path: string; argv: string[] } | null {
  const argv = readCmdline(pid);
  const exe = readExe(pid);
  if (exe === null || argv === null || argv.length === 0) return null;
  return { path: exe.path, argv };
}

/** The ids of the files the root has open as stdout and stderr (regular files only). */
function inheritedOutputs(group: FanotifyGroup, rootPid: number): Set<string> {
  const keys = new Set<string>();
  for (const fd of [1, 2]) {
    const id = group.idOf(`/proc/${rootPid}/fd/${fd}`);
    if (id !== null) keys.add(id.key);
  }
  return keys;
}
