/**
 * A session's own cgroup, for a pause that holds. Signals race with a process that forks in a
 * loop (a child forked after the tree was listed is never stopped, and can SIGCONT the rest); a
 * cgroup freezer stops every process of a cgroup at once, children forked meanwhile included,
 * and a frozen process cannot run until the cgroup is thawed, whatever signal it gets.
 *
 * - cgroup v2: `cgroup.freeze` (1 or 0) asks, `cgroup.events` says `frozen 1` once every process
 *   is stopped in the freezer trap (Linux 5.2). `cgroup.kill` kills the whole cgroup (5.14).
 * - cgroup v1 (fallback, when no v2 mount is usable): the freezer hierarchy's `freezer.state`
 *   (`FROZEN`, `FREEZING`, `THAWED`).
 *
 * The mount is found in /proc/self/mountinfo. Creating a cgroup and moving processes into it
 * needs root (or a delegated subtree); {@link SessionCgroup.create} says why it cannot.
 *
 * The parsers are pure functions over text, tested on captured samples.
 *
 * @module
 */

/** The cgroup version of a hierarchy. */
export type CgroupVersion = 1 | 2;

/** A mounted cgroup hierarchy that has a freezer: v2, or v1 with the freezer controller. */
export interface CgroupMount {
  version: CgroupVersion;
  /** Where it is mounted, such as `/sys/fs/cgroup/unified`. */
  mountPoint: string;
  /** The cgroup the mount shows (`/` unless a namespace or a bind mount shows a subtree). */
  root: string;
}

/** Undoes mountinfo's octal escapes (`\040` for a space). */
function unescape(field: string): string {
  return field.replace(
    /\\([0-7]{3})/g,
    (_, octal: string) => String.fromCharCode(parseInt(octal, 8)),
  );
}

/**
 * Finds the cgroup hierarchies with a freezer in /proc/self/mountinfo: every cgroup2 mount,
 * then every v1 mount whose super options include `freezer`, each in mount order.
 */
export function findCgroupMounts(mountinfo: string): CgroupMount[] {
  const v2: CgroupMount[] = [];
  const v1: CgroupMount[] = [];
  for (const line of mountinfo.split("\n")) {
    const fields = line.split(" ");
    const dash = fields.indexOf("-", 6);
    if (dash < 0 || fields.length < dash + 4) continue;
    const fsType = fields[dash + 1];
    const root = unescape(fields[3] ?? "/");
    const mountPoint = unescape(fields[4] ?? "");
    if (fsType === "cgroup2") v2.push({ version: 2, mountPoint, root });
    if (fsType === "cgroup" && (fields[dash + 3] ?? "").split(",").includes("freezer")) {
      v1.push({ version: 1, mountPoint, root });
    }
  }
  return [...v2, ...v1];
}

/** What `cgroup.events` says. */
export interface CgroupEvents {
  /** Whether any live process is in the cgroup or below. */
  populated: boolean;
  /** Whether the cgroup is frozen: every process in it stopped in the freezer trap. */
  frozen: boolean;
}

/** Parses a v2 `cgroup.events` file (`populated 1\nfrozen 0\n`). */
export function parseCgroupEvents(text: string): CgroupEvents {
  const values = new Map<string, string>();
  for (const line of text.split("\n")) {
    const [key, value] = line.trim().split(/\s+/);
    if (key !== undefined && value !== undefined) values.set(key, value);
  }
  return { populated: values.get("populated") === "1", frozen: values.get("frozen") === "1" };
}

/** One line of /proc/PID/cgroup: `id:controllers:path`. */
export interface ProcCgroupEntry {
  /** The hierarchy id; 0 for the v2 hierarchy. */
  id: number;
  /** The v1 controllers of the hierarchy (`freezer`, `name=systemd`); empty for v2. */
  controllers: string[];
  /** The cgroup, relative to the hierarchy's root as the reader's cgroup namespace sees it. */
  path: string;
}

/** Parses /proc/PID/cgroup. Lines that do not parse are left out. */
export function parseProcCgroup(text: string): ProcCgroupEntry[] {
  const entries: ProcCgroupEntry[] = [];
  for (const line of text.split("\n")) {
    const first = line.indexOf(":");
    const second = line.indexOf(":", first + 1);
    if (first < 0 || second < 0) continue;
    const id = Number(line.slice(0, first));
    if (!Number.isInteger(id)) continue;
    const controllers = line.slice(first + 1, second).split(",").filter((c) => c !== "");
    entries.push({ id, controllers, path: line.slice(second + 1) });
  }
  return entries;
}

/**
 * The directory of a process's cgroup in a mounted hierarchy, from its /proc/PID/cgroup
 * entries, or null when the process is not in that hierarchy or the mount does not show it.
 */
export function cgroupDirectory(
  entries: readonly ProcCgroupEntry[],
  mount: CgroupMount,
): string | null {
  const entry = mount.version === 2
    ? entries.find((e) => e.id === 0 && e.controllers.length === 0)
    : entries.find((e) => e.controllers.includes("freezer"));
  if (entry === undefined || !entry.path.startsWith("/")) return null;
  let path = entry.path;
  if (mount.root !== "/") {
    if (path !== mount.root && !path.startsWith(`${mount.root}/`)) return null;
    path = path.slice(mount.root.length) || "/";
  }
  const base = mount.mountPoint.replace(/\/+$/, "");
  return path === "/" ? base : `${base}${path}`;
}

/** Where a cgroup is, as a pids file records it for the processes that act from outside. */
export interface CgroupSpec {
  version: CgroupVersion;
  /** The cgroup's directory. */
  path: string;
  /** The cgroup the first process came from, where leftovers go back to; null if unknown. */
  origin: string | null;
}

/** Why a session cgroup cannot be made or used here. */
export class CgroupError extends Error {
  /** Builds the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "CgroupError";
  }
}

function sleep(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

function errorText(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/**
 * A handle on an existing cgroup directory with a freezer: move processes in, freeze, thaw,
 * list, kill. It holds no file descriptor; {@link SessionCgroup} owns the directory itself.
 */
export class Cgroup {
  /** The cgroup version. */
  readonly version: CgroupVersion;
  /** The cgroup's directory. */
  readonly path: string;
  #origin: string | null;

  /** Wraps the cgroup a spec names (nothing is read or written). */
  constructor(spec: CgroupSpec) {
    this.version = spec.version;
    this.path = spec.path;
    this.#origin = spec.origin;
  }

  /** Where the first process moved in came from. */
  get origin(): string | null {
    return this.#origin;
  }

  /** What a pids file records, for controls from other processes and the watchdog. */
  spec(): CgroupSpec {
    return { version: this.version, path: this.path, origin: this.#origin };
  }

  /**
   * Moves a process (all its threads) into the cgroup; its children are born inside from then
   * on. Records the cgroup it came from, the first time, as the origin.
   *
   * @throws {CgroupError} when the kernel refuses (the process is gone, or no permission).
   */
  add(pid: number): void {
    if (this.#origin === null) this.#origin = this.#dirOf(pid);
    try {
      Deno.writeTextFileSync(`${this.path}/cgroup.procs`, `${pid}\n`);
    } catch (error) {
      throw new CgroupError(
        `Cannot move pid ${pid} into cgroup "${this.path}": ${errorText(error)}`,
        {
          cause: error,
        },
      );
    }
  }

  /** The pids (thread group ids) in the cgroup now; empty when it is gone. */
  pids(): number[] {
    let text: string;
    try {
      text = Deno.readTextFileSync(`${this.path}/cgroup.procs`);
    } catch {
      return [];
    }
    const pids = new Set<number>();
    for (const word of text.split("\n")) if (/^\d+$/.test(word)) pids.add(Number(word));
    return [...pids];
  }

  /** Whether any live process is in the cgroup. */
  populated(): boolean {
    if (this.version === 1) return this.pids().length > 0;
    try {
      return parseCgroupEvents(Deno.readTextFileSync(`${this.path}/cgroup.events`)).populated;
    } catch {
      return false;
    }
  }

  /** Whether a freeze was asked for and not undone (the cgroup may still be freezing). */
  freezeRequested(): boolean {
    try {
      if (this.version === 2) {
        return Deno.readTextFileSync(`${this.path}/cgroup.freeze`).trim() === "1";
      }
      return Deno.readTextFileSync(`${this.path}/freezer.state`).trim() !== "THAWED";
    } catch {
      return false;
    }
  }

  /** Whether every process of the cgroup is frozen now. */
  frozen(): boolean {
    try {
      if (this.version === 2) {
        return parseCgroupEvents(Deno.readTextFileSync(`${this.path}/cgroup.events`)).frozen;
      }
      return Deno.readTextFileSync(`${this.path}/freezer.state`).trim() === "FROZEN";
    } catch {
      return false;
    }
  }

  /**
   * Asks the kernel to freeze the cgroup, and waits until every process is frozen. Returns
   * false when that took longer than `timeoutMs` (a process in uninterruptible sleep freezes
   * only when it wakes; the freeze stays asked for).
   *
   * @throws {CgroupError} when the freeze cannot be asked for.
   */
  async freeze(options: { timeoutMs?: number } = {}): Promise<boolean> {
    this.#write(
      this.version === 2 ? "cgroup.freeze" : "freezer.state",
      this.version === 2 ? "1" : "FROZEN",
    );
    const deadline = performance.now() + (options.timeoutMs ?? 1000);
    for (let spins = 0;; spins++) {
      if (this.frozen()) return true;
      if (performance.now() >= deadline) return false;
      // The first checks spin: a quiet cgroup freezes in well under a millisecond.
      if (spins >= 20) await sleep(1);
    }
  }

  /**
   * Thaws the cgroup, synchronously (for exit paths). Returns false when it could not be
   * written (the cgroup is gone, which leaves nothing frozen either).
   */
  thaw(): boolean {
    try {
      this.#write(
        this.version === 2 ? "cgroup.freeze" : "freezer.state",
        this.version === 2 ? "0" : "THAWED",
      );
      return true;
    } catch {
      return false;
    }
  }

  /**
   * SIGKILLs every process in the cgroup at once, synchronously: `cgroup.kill` on v2 (Linux
   * 5.14); elsewhere the cgroup is frozen, every pid in it is killed (none can fork while
   * frozen), then it is thawed so that the kills take effect. Returns the pids killed, when
   * known.
   */
  killAll(): number[] {
    const pids = this.pids();
    if (this.version === 2) {
      try {
        Deno.writeTextFileSync(`${this.path}/cgroup.kill`, "1");
        return pids;
      } catch {
        // Before Linux 5.14: below.
      }
    }
    try {
      this.#write(
        this.version === 2 ? "cgroup.freeze" : "freezer.state",
        this.version === 2 ? "1" : "FROZEN",
      );
    } catch {
      // Killing goes on without the freeze.
    }
    const killed: number[] = [];
    for (const pid of this.pids()) {
      try {
        // Membership names the process: a pid listed in the frozen cgroup is the session's, and
        // a frozen process cannot exit (and free its pid) by itself.
        Deno.kill(pid, "SIGKILL");
        killed.push(pid);
      } catch {
        // Gone.
      }
    }
    this.thaw();
    return killed;
  }

  #write(file: string, value: string): void {
    try {
      Deno.writeTextFileSync(`${this.path}/${file}`, value);
    } catch (error) {
      throw new CgroupError(
        `Cannot write "${value}" to "${this.path}/${file}": ${errorText(error)}`,
        {
          cause: error,
        },
      );
    }
  }

  #dirOf(pid: number): string | null {
    let text: string;
    try {
      text = Deno.readTextFileSync(`/proc/${pid}/cgroup`);
    } catch {
      return null;
    }
    const mount = mountOf(this);
    return mount === null ? null : cgroupDirectory(parseProcCgroup(text), mount);
  }
}

/** The mount a cgroup lives on, found by path. */
function mountOf(cgroup: Cgroup): CgroupMount | null {
  let mountinfo: string;
  try {
    mountinfo = Deno.readTextFileSync("/proc/self/mountinfo");
  } catch {
    return null;
  }
  const mounts = findCgroupMounts(mountinfo).filter((m) =>
    m.version === cgroup.version && cgroup.path.startsWith(`${m.mountPoint.replace(/\/+$/, "")}/`)
  );
  // The longest mount point wins: a mount below another shows the cgroup, the outer one not.
  mounts.sort((a, b) => b.mountPoint.length - a.mountPoint.length);
  return mounts[0] ?? null;
}

/** Options for {@link SessionCgroup.create}. */
export interface SessionCgroupOptions {
  /** The session id: the cgroup's name. */
  session: string;
  /** The parent directory's name under the mount; default `sentry`. */
  parent?: string;
  /** /proc/self/mountinfo's text (tests); default: read it. */
  mountinfo?: string;
  /** Versions to try, in order; default `[2, 1]` (v1 only when no v2 mount is usable). */
  versions?: readonly CgroupVersion[];
}

/** What {@link SessionCgroup.close} did. */
export interface CgroupCloseResult {
  /** Whether the cgroup directory is gone. */
  removed: boolean;
  /** Processes still inside that were moved back to the origin (never killed). */
  movedOut: number[];
  /** Processes that could not be moved out: the directory stays, and this says so. */
  left: number[];
}

/**
 * A session's own cgroup: `<mount>/sentry/<session>`, created at start, removed at the end.
 * Only Sentry's process owns it; the watchdog takes it over with {@link SessionCgroup.adopt} if
 * Sentry dies.
 */
export class SessionCgroup extends Cgroup {
  #closed = false;

  /**
   * Creates the session's cgroup on the first usable hierarchy: a cgroup2 mount with a freezer
   * (`cgroup.freeze`), else the v1 freezer hierarchy.
   *
   * @throws {CgroupError} naming why no hierarchy could be used (no mount, not root...).
   */
  static create(options: SessionCgroupOptions): SessionCgroup {
    if (!/^[A-Za-z0-9_.-]+$/.test(options.session)) {
      throw new RangeError(`Invalid session id for a cgroup name: "${options.session}"`);
    }
    let mountinfo = options.mountinfo;
    if (mountinfo === undefined) {
      try {
        mountinfo = Deno.readTextFileSync("/proc/self/mountinfo");
      } catch (error) {
        throw new CgroupError(`Cannot read /proc/self/mountinfo: ${errorText(error)}`, {
          cause: error,
        });
      }
    }
    const versions = options.versions ?? [2, 1];
    const mounts = findCgroupMounts(mountinfo).filter((m) => versions.includes(m.version))
      .sort((a, b) => versions.indexOf(a.version) - versions.indexOf(b.version));
    if (mounts.length === 0) {
      throw new CgroupError("No cgroup2 mount and no cgroup v1 freezer is mounted");
    }
    const problems: string[] = [];
    for (const mount of mounts) {
      const parent = `${mount.mountPoint.replace(/\/+$/, "")}/${options.parent ?? "sentry"}`;
      const path = `${parent}/${options.session}`;
      try {
        Deno.mkdirSync(path, { recursive: true });
      } catch (error) {
        problems.push(`${mount.mountPoint}: ${errorText(error)}`);
        continue;
      }
      const control = mount.version === 2 ? "cgroup.freeze" : "freezer.state";
      try {
        Deno.statSync(`${path}/${control}`);
      } catch {
        problems.push(`${mount.mountPoint}: no ${control} (the kernel has no freezer here)`);
        removeQuietly(path);
        continue;
      }
      return new SessionCgroup({ version: mount.version, path, origin: null });
    }
    throw new CgroupError(`Cannot create a cgroup for the session: ${problems.join("; ")}`);
  }

  /** Takes over a session cgroup that another process created (the watchdog's rescue). */
  static adopt(spec: CgroupSpec): SessionCgroup {
    return new SessionCgroup(spec);
  }

  /**
   * Finds a session's cgroup by its name on every hierarchy with a freezer: for the watchdog,
   * should the pids file that names it be gone. What is left in it goes back to the hierarchy's
   * root cgroup when closed, since where it came from is unknown.
   */
  static find(options: Omit<SessionCgroupOptions, "versions">): SessionCgroup[] {
    let mountinfo = options.mountinfo;
    try {
      mountinfo ??= Deno.readTextFileSync("/proc/self/mountinfo");
    } catch {
      return [];
    }
    const found: SessionCgroup[] = [];
    for (const mount of findCgroupMounts(mountinfo)) {
      const base = mount.mountPoint.replace(/\/+$/, "");
      const path = `${base}/${options.parent ?? "sentry"}/${options.session}`;
      try {
        if (!Deno.statSync(path).isDirectory) continue;
      } catch {
        continue;
      }
      found.push(new SessionCgroup({ version: mount.version, path, origin: base }));
    }
    return found;
  }

  /**
   * Removes session cgroups that were left empty: those of a Sentry killed together with its
   * watchdog (which would otherwise remove them). Only a cgroup with no process in it and older
   * than `olderThanMs` goes, so that a session starting now (created, not yet populated) keeps
   * its own. Returns the directories removed.
   */
  static sweep(
    options: { parent?: string; mountinfo?: string; olderThanMs?: number } = {},
  ): string[] {
    let mountinfo = options.mountinfo;
    try {
      mountinfo ??= Deno.readTextFileSync("/proc/self/mountinfo");
    } catch {
      return [];
    }
    const removed: string[] = [];
    const before = Date.now() - (options.olderThanMs ?? 60_000);
    for (const mount of findCgroupMounts(mountinfo)) {
      const parent = `${mount.mountPoint.replace(/\/+$/, "")}/${options.parent ?? "sentry"}`;
      let entries: Deno.DirEntry[];
      try {
        entries = [...Deno.readDirSync(parent)];
      } catch {
        continue;
      }
      for (const entry of entries) {
        if (!entry.isDirectory) continue;
        const path = `${parent}/${entry.name}`;
        const cgroup = new Cgroup({ version: mount.version, path, origin: null });
        try {
          const mtime = Deno.statSync(path).mtime?.getTime() ?? Date.now();
          if (mtime > before || cgroup.populated() || cgroup.pids().length > 0) continue;
          Deno.removeSync(path);
          removed.push(path);
        } catch {
          // Populated meanwhile, or gone.
        }
      }
    }
    return removed;
  }

  /**
   * Moves a running tree in, top-down: each process before its children are listed, so a child
   * forked meanwhile is born inside; then lists again until a round moves nothing. `children`
   * lists a process's children (null when it is gone). Returns the pids moved.
   */
  adoptTree(
    root: number,
    children: (pid: number) => number[] | null,
    options: { maxRounds?: number } = {},
  ): number[] {
    const moved = new Set<number>();
    for (let round = 0; round < (options.maxRounds ?? 10); round++) {
      const inside = new Set(this.pids());
      let changed = false;
      const queue = [root];
      const seen = new Set<number>();
      while (queue.length > 0) {
        const pid = queue.shift() as number;
        if (seen.has(pid)) continue;
        seen.add(pid);
        if (!inside.has(pid)) {
          try {
            this.add(pid);
            moved.add(pid);
            changed = true;
          } catch {
            // Gone meanwhile: its children, if any, are listed from their new parent.
            continue;
          }
        }
        queue.push(...(children(pid) ?? []));
      }
      if (!changed) break;
    }
    return [...moved];
  }

  /**
   * Ends the session's cgroup without killing anything: thaws it, moves any process still
   * inside back to the origin, and removes the directory (retrying briefly while exiting
   * processes leave it). If processes remain, the directory stays and the result says which.
   */
  async close(options: { retryMs?: number } = {}): Promise<CgroupCloseResult> {
    const result: CgroupCloseResult = { removed: false, movedOut: [], left: [] };
    if (this.#closed) return { ...result, removed: true };
    this.thaw();
    const deadline = performance.now() + (options.retryMs ?? 1000);
    for (;;) {
      const pids = this.pids();
      if (pids.length > 0 && this.origin !== null) {
        for (const pid of pids) {
          try {
            Deno.writeTextFileSync(`${this.origin}/cgroup.procs`, `${pid}\n`);
            if (!result.movedOut.includes(pid)) result.movedOut.push(pid);
          } catch {
            // Exited meanwhile, or refused: counted below if still there.
          }
        }
      }
      try {
        Deno.removeSync(this.path);
        result.removed = true;
        break;
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) {
          result.removed = true;
          break;
        }
      }
      if (performance.now() >= deadline) break;
      await sleep(10);
    }
    if (result.removed) {
      this.#closed = true;
      // The shared parent goes when the last session's cgroup did; another session may hold it.
      removeQuietly(this.path.slice(0, this.path.lastIndexOf("/")));
    } else {
      result.left = this.pids();
    }
    return result;
  }
}

function removeQuietly(path: string): void {
  try {
    Deno.removeSync(path);
  } catch {
    // Not empty (another session's), or gone.
  }
}
