/**
 * The fanotify guard's Worker: it owns the permission group and answers every event on its own
 * thread, so that nothing on Deno's main thread (a slow journal, a long GC, an `await`) ever
 * keeps an opener waiting, and so that the main thread's own opens of marked files (the journal
 * beneath Sentry's home) are answered by someone else than the thread that made them.
 *
 * For each event: read the opener's thread status from /proc (its process and parent), decide
 * whether it belongs to the session (the shared pid bitmap; else the session's cgroup; else an
 * ancestor in the bitmap), and for the session's processes read the path of the event's fd, the
 * open's flags from /proc/TID/syscall, the program and command line, then call the pure
 * {@link decideGuard}, answer, and only then queue the event for the main thread. Nothing on this
 * path awaits, and nothing here opens a file outside /proc.
 *
 * It imports platform files directly, not `platform/mod.ts`, to keep its start-up short.
 *
 * @module
 */

import {
  DirectoryWatch,
  PermissionGroup,
  pollReadable,
  ProcFiles,
} from "../platform/fanotify_perm_linux.ts";
import {
  decodePermissionEvents,
  FAN_PERM,
  inCgroup,
  openIntent,
  parseSyscallFile,
  parseThreadStatus,
  type ThreadIdentity,
} from "../platform/fanotify_perm_record.ts";
import { decodeFanotifyEvents, FAN } from "../platform/fanotify_record.ts";
import { errnoName } from "../platform/kernel_abi.ts";
import { compilePolicy, type ResolvedPolicy } from "../policy/mod.ts";
import {
  decideGuard,
  type GuardCaller,
  type GuardRequest,
  type GuardTarget,
  isLoader,
  SessionPids,
} from "./fanotify_guard_plan.ts";
import type { SensorEvent } from "./sensor.ts";

/** A buffer nothing ever notifies: `Atomics.wait` on it is a short sleep. */
const PAUSE = new Int32Array(new SharedArrayBuffer(4));

/** Slots of the shared counters (a Float64Array), written by the worker, read by the guard. */
export const GUARD_COUNTER = {
  /** Permission events read. */
  events: 0,
  /** Answers the kernel took. */
  answered: 1,
  allowed: 2,
  denied: 3,
  /** Events of processes outside the session: allowed without a decision. */
  outside: 4,
  /** Events of the session's processes decided with the policy. */
  decided: 5,
  /** Processes found in the session by their cgroup or an ancestor, before the tracker said so. */
  adopted: 6,
  /** Openers gone before their status could be read (allowed: nothing waits any more). */
  openerGone: 7,
  /** Opens whose flags could not be read: decided as a read and as a write. */
  flagsUnknown: 8,
  /** Opens made by execve for the file it runs (decided by the exec event). */
  execOpens: 9,
  /** Execs of a dynamic loader (opened by execve for the program it loads). */
  loaders: 10,
  /** Answers the kernel refused (the event was gone). */
  answerFailed: 11,
  /** Decisions that threw: answered deny for the session, allow for others. */
  decisionErrors: 12,
  /** Answers that took longer than `lateMs` after the read. */
  late: 13,
  /** Queue overflows of either group. */
  overflows: 14,
  dirsMarked: 15,
  filesMarked: 16,
  /** Directories beneath a target that were not marked: past the bound. */
  dirsUnmarked: 17,
  /** Marks the kernel refused. */
  markFailed: 18,
  /** Directories marked after start, as they appeared. */
  newDirs: 19,
  /** Directories that could not be watched for new subdirectories. */
  watchFailed: 20,
  /** Targets whose path did not exist (yet): watched for it to appear. */
  pending: 21,
  /** Reads of the group. */
  polls: 22,
  /** Paths of event fds that could not be read. */
  unresolved: 23,
  /** Decision time in µs (read to answer) of the session's events: p50, p99, max. */
  p50us: 24,
  p99us: 25,
  maxUs: 26,
  /** Events handed to the main thread. */
  queued: 27,
} as const;

/** How many counter slots there are. */
export const GUARD_COUNTER_SLOTS = 28;

/** The start message. */
export interface GuardWorkerStart {
  policy: {
    resolved: ResolvedPolicy;
    workspace: string;
    home: string;
    guarded: string[];
  };
  targets: GuardTarget[];
  /** The {@link SessionPids} bitmap. */
  session: SharedArrayBuffer;
  /** Float64Array of {@link GUARD_COUNTER_SLOTS}. */
  counters: SharedArrayBuffer;
  /** An eventfd the main thread makes readable to stop the loop (it owns and closes it). */
  wakeFd: number;
  /** The session's cgroup as /proc/PID/cgroup shows it, or null. */
  cgroup: string | null;
  /** Processes never in the session (Sentry, its watchdog); an ancestry walk stops at them. */
  excluded: number[];
  maxDirs: number;
  accessPerm: boolean;
  audit: boolean;
  lateMs: number;
  arch: string;
  /** Files exempt from the guard: Sentry's SQLite files (see `PermissionGroup.ignore`). */
  unheld: string[];
}

/** One decided event, as the worker hands it over. */
export interface GuardRecord {
  /** Wall-clock ms of the read (performance.timeOrigin + now: no Date on this thread). */
  ms: number;
  event: SensorEvent;
}

/** Messages to the main thread. */
export type GuardWorkerMessage =
  | { type: "ready"; failures: { path: string; errno: string }[]; watching: boolean }
  | { type: "events"; records: GuardRecord[] }
  | { type: "done" }
  | { type: "error"; message: string };

const DELETED = " (deleted)";
const ANCESTRY_LIMIT = 64;
const SAMPLES = 4096;

/** Marks the targets and keeps them marked as directories appear. */
class Marks {
  readonly #perm: PermissionGroup;
  readonly #watch: DirectoryWatch | null;
  readonly #counters: Float64Array;
  readonly #maxDirs: number;
  readonly #service: () => void;
  /** Watch key → directory path. */
  readonly #dirs = new Map<string, string>();
  readonly #marked = new Set<string>();
  readonly #pending: GuardTarget[] = [];
  readonly #targets: readonly GuardTarget[];
  readonly failures: { path: string; errno: string }[] = [];

  constructor(init: {
    perm: PermissionGroup;
    watch: DirectoryWatch | null;
    counters: Float64Array;
    maxDirs: number;
    targets: readonly GuardTarget[];
    service: () => void;
  }) {
    this.#perm = init.perm;
    this.#watch = init.watch;
    this.#counters = init.counters;
    this.#maxDirs = init.maxDirs;
    this.#targets = init.targets;
    this.#service = init.service;
  }

  placeAll(): void {
    for (const target of this.#targets) this.#place(target);
  }

  /** A directory entry was made or moved into a watched directory. */
  created(dir: string, name: string, directory: boolean): void {
    const child = dir === "/" ? `/${name}` : `${dir}/${name}`;
    // A target that did not exist, or one of its missing ancestors, appeared (or a marked file
    // was replaced by a new inode under its name).
    const pending = this.#pending.filter((t) => t.path === child || t.path.startsWith(`${child}/`));
    for (const t of pending) {
      this.#pending.splice(this.#pending.indexOf(t), 1);
      this.#place(t);
    }
    for (const t of this.#targets) {
      if (t.path === child && !directory) this.#place(t);
    }
    if (!directory) return;
    const owner = this.#targets.find((t) =>
      t.recursive && child.startsWith(t.path === "/" ? "/" : `${t.path}/`)
    );
    if (owner !== undefined && !this.#marked.has(child)) {
      this.#counters[GUARD_COUNTER.newDirs]!++;
      this.#walk(child, true);
    }
  }

  /** The directory a watch key names. */
  dirOf(key: string): string | undefined {
    return this.#dirs.get(key);
  }

  #place(target: GuardTarget): void {
    let real: string;
    let info: Deno.FileInfo;
    try {
      real = Deno.realPathSync(target.path);
      info = Deno.statSync(real);
    } catch {
      this.#waitFor(target);
      return;
    }
    if (info.isFile || !info.isDirectory) {
      const errno = this.#perm.mark({ path: real, directory: false });
      if (errno !== 0) this.#failed(real, errno);
      else this.#counters[GUARD_COUNTER.filesMarked]!++;
      // Its directory is watched, so that a new file saved over it is marked too.
      const at = real.lastIndexOf("/");
      this.#watchOnly(at <= 0 ? "/" : real.slice(0, at));
      return;
    }
    this.#walk(real, target.recursive);
  }

  /** Watches the nearest existing ancestor of a missing target, for the path to appear. */
  #waitFor(target: GuardTarget): void {
    if (!this.#pending.includes(target)) {
      this.#pending.push(target);
      this.#counters[GUARD_COUNTER.pending]!++;
    }
    let dir = target.path;
    for (;;) {
      const at = dir.lastIndexOf("/");
      dir = at <= 0 ? "/" : dir.slice(0, at);
      try {
        if (Deno.statSync(dir).isDirectory) break;
      } catch {
        // Not there either: go up.
      }
      if (dir === "/") break;
    }
    if (dir !== "/") this.#watchOnly(dir);
  }

  #watchOnly(dir: string): void {
    if (this.#watch === null) return;
    const watched = this.#watch.watch(dir);
    if ("key" in watched) this.#dirs.set(watched.key, dir);
    else this.#counters[GUARD_COUNTER.watchFailed]!++;
  }

  /** Marks `root` and, when recursive, every directory beneath it, up to the bound. */
  #walk(root: string, recursive: boolean): void {
    const queue = [root];
    let since = 0;
    while (queue.length > 0) {
      const dir = queue.shift()!;
      if (this.#marked.has(dir)) continue;
      if (this.#marked.size >= this.#maxDirs) {
        this.#counters[GUARD_COUNTER.dirsUnmarked]! += 1 + queue.length;
        return;
      }
      const errno = this.#perm.mark({ path: dir, directory: true });
      if (errno !== 0) {
        this.#failed(dir, errno);
        continue;
      }
      this.#marked.add(dir);
      this.#counters[GUARD_COUNTER.dirsMarked]!++;
      // Watched before it is listed: a subdirectory made from now on is reported.
      if (recursive) this.#watchOnly(dir);
      if (recursive) {
        try {
          for (const entry of Deno.readDirSync(dir)) {
            if (entry.isDirectory && !entry.isSymlink) {
              queue.push(dir === "/" ? `/${entry.name}` : `${dir}/${entry.name}`);
            }
          }
        } catch {
          // Removed or unreadable meanwhile: its marks stand as they are.
        }
      }
      // Answer what the marks made so far hold, so that a long walk keeps no opener waiting.
      if (++since >= 64) {
        since = 0;
        this.#service();
      }
    }
  }

  #failed(path: string, errno: number): void {
    this.#counters[GUARD_COUNTER.markFailed]!++;
    if (this.failures.length < 32) this.failures.push({ path, errno: errnoName(errno) });
  }
}

function run(start: GuardWorkerStart, post: (message: GuardWorkerMessage) => void): void {
  const counters = new Float64Array(start.counters);
  const session = new SessionPids(start.session);
  const excluded = new Set(start.excluded);
  const policy = compilePolicy(start.policy.resolved, {
    workspace: start.policy.workspace,
    home: start.policy.home,
    // The same environment the main thread compiled with: this process's own.
    env: Deno.env.toObject(),
    guarded: start.policy.guarded,
  });
  const proc = new ProcFiles();
  let perm: PermissionGroup | null = null;
  let watch: DirectoryWatch | null = null;
  let records: GuardRecord[] = [];
  const samples = new Float64Array(SAMPLES);
  let sampled = 0;
  let computedAt = 0;
  const origin = performance.timeOrigin;

  // Kinds a rule decides on with the acting process: only then are its program and command line
  // read before the answer; otherwise after it, for the journal.
  const processKinds = new Set(
    [...policy.rulesByKind].filter(([, rules]) =>
      rules.some((r) =>
        r.match.processes !== null || r.exceptions.some((e) => e.processes !== null)
      )
    ).map(([kind]) => kind),
  );
  const openNeedsProcess = ["file.read", "file.write", "file.create"].some((k) =>
    processKinds.has(k as never)
  );

  const identity = (tid: number): ThreadIdentity | null => {
    const text = proc.read(`/proc/${tid}/status`);
    return text === null ? null : parseThreadStatus(text);
  };

  /** Whether the opener belongs to the session; adds it to the bitmap when found otherwise. */
  const member = (tid: number, who: ThreadIdentity): boolean => {
    if (excluded.has(who.tgid)) return false;
    if (session.has(who.tgid)) return true;
    if (start.cgroup !== null) {
      const text = proc.read(`/proc/${tid}/cgroup`);
      if (text !== null && inCgroup(text, start.cgroup)) {
        session.add(who.tgid);
        counters[GUARD_COUNTER.adopted]!++;
        return true;
      }
    }
    // Forked before the tracker on the main thread saw it: an ancestor is in the session.
    let ppid = who.ppid;
    for (let depth = 0; depth < ANCESTRY_LIMIT && ppid > 1; depth++) {
      if (excluded.has(ppid)) return false;
      if (session.has(ppid)) {
        session.add(who.tgid);
        counters[GUARD_COUNTER.adopted]!++;
        return true;
      }
      const up = identity(ppid);
      if (up === null) return false;
      ppid = up.ppid;
    }
    return false;
  };

  /** Reads the caller's program, command line and (when unknown) parent into `caller`. */
  const fill = (caller: GuardCaller): void => {
    const cmdline = proc.read(`/proc/${caller.pid}/cmdline`);
    caller.exe = proc.readLink(`/proc/${caller.pid}/exe`);
    caller.cmdline = cmdline === null ? [] : cmdline.split("\0");
    if (caller.cmdline.at(-1) === "") caller.cmdline.pop();
    if (caller.ppid === null) caller.ppid = identity(caller.pid)?.ppid ?? null;
  };

  const requestOf = (mask: number, tid: number, pid: number): GuardRequest | "exec-open" => {
    if ((mask & FAN_PERM.OPEN_EXEC_PERM) !== 0) return { op: "exec", syscall: "execve" };
    if ((mask & FAN_PERM.OPEN_PERM) === 0) return { op: "read" };
    // The opener waits in its syscall, so the file shows its arguments; a read can still fail
    // for a moment (the task is between states): try again briefly before deciding blind.
    let call = null;
    for (let attempt = 0; attempt < 3 && call === null; attempt++) {
      if (attempt > 0) Atomics.wait(PAUSE, 0, 0, 1);
      const text = proc.read(`/proc/${tid}/syscall`);
      call = text === null ? null : parseSyscallFile(text);
    }
    const intent = openIntent(call, start.arch);
    switch (intent.kind) {
      case "flags":
        return { op: "open", flags: intent.flags, syscall: intent.syscall };
      case "openat2": {
        const flags = proc.readU64(pid, intent.how);
        if (flags === null) counters[GUARD_COUNTER.flagsUnknown]!++;
        return {
          op: "open",
          flags: flags === null ? null : Number(BigInt.asUintN(32, flags)),
          syscall: "openat2",
        };
      }
      case "exec":
        return "exec-open";
      case "unknown":
        counters[GUARD_COUNTER.flagsUnknown]!++;
        return { op: "open", flags: null, syscall: intent.syscall };
    }
  };

  /** Decides and answers one event. Every event is answered, whatever happens here. */
  const answer = (group: PermissionGroup, mask: number, fd: number, tid: number): void => {
    const started = performance.now();
    let allow = true;
    let inSession = false;
    let later: { caller: GuardCaller; event: SensorEvent } | null = null;
    counters[GUARD_COUNTER.events]!++;
    try {
      // A main thread of a known process needs no /proc read: tids and pids share one space.
      const known = !excluded.has(tid) && session.has(tid);
      const who = known ? { tgid: tid, ppid: -1 } : identity(tid);
      if (who === null) {
        counters[GUARD_COUNTER.openerGone]!++;
        return;
      }
      inSession = known || member(tid, who);
      if (!inSession) {
        counters[GUARD_COUNTER.outside]!++;
        return;
      }
      let path = group.pathOf(fd);
      if (path === null) {
        counters[GUARD_COUNTER.unresolved]!++;
        path = `[fd of pid ${who.tgid}]`;
      } else if (path.endsWith(DELETED)) {
        path = path.slice(0, -DELETED.length);
      }
      const request = requestOf(mask, tid, who.tgid);
      if (request === "exec-open") {
        counters[GUARD_COUNTER.execOpens]!++;
        return;
      }
      if (request.op === "exec" && isLoader(path)) {
        counters[GUARD_COUNTER.loaders]!++;
        return;
      }
      const caller: GuardCaller = {
        pid: who.tgid,
        tid,
        ppid: who.ppid > 0 ? who.ppid : null,
        exe: null,
        cmdline: [],
      };
      // An exec is decided on the file it runs; an open on its caller only when a rule asks.
      const needed = request.op !== "exec" && openNeedsProcess;
      if (needed) fill(caller);
      const decision = decideGuard(request, { path, caller, policy });
      allow = !decision.blocked;
      counters[GUARD_COUNTER.decided]!++;
      records.push({ ms: origin + started, event: decision.event });
      if (!needed) later = { caller, event: decision.event };
    } catch {
      counters[GUARD_COUNTER.decisionErrors]!++;
      // Closed for the session's processes, open for everyone else.
      allow = !inSession;
    } finally {
      const ok = group.respond(fd, allow);
      const took = performance.now() - started;
      counters[GUARD_COUNTER.answered]!++;
      counters[allow ? GUARD_COUNTER.allowed : GUARD_COUNTER.denied]!++;
      if (!ok) counters[GUARD_COUNTER.answerFailed]!++;
      if (took > start.lateMs) counters[GUARD_COUNTER.late]!++;
      if (inSession) {
        samples[sampled++ % SAMPLES] = took * 1000;
        if (took * 1000 > counters[GUARD_COUNTER.maxUs]!) {
          counters[GUARD_COUNTER.maxUs] = took * 1000;
        }
      }
    }
    // After the answer: who acted, for the journal (an exec's event names the new program).
    if (later !== null) {
      try {
        fill(later.caller);
        const { event, caller } = later;
        event.ppid = caller.ppid;
        if (event.kind !== "proc.exec") {
          event.exe = caller.exe;
          event.cmdline = caller.cmdline;
        }
      } catch {
        // Gone: the event keeps what the decision had.
      }
    }
  };

  const percentiles = () => {
    const n = Math.min(sampled, SAMPLES);
    if (n === 0 || computedAt === sampled) return;
    computedAt = sampled;
    const sorted = samples.slice(0, n).sort();
    counters[GUARD_COUNTER.p50us] = sorted[Math.floor(n * 0.5)] ?? 0;
    counters[GUARD_COUNTER.p99us] = sorted[Math.min(n - 1, Math.floor(n * 0.99))] ?? 0;
  };

  const flush = () => {
    if (records.length === 0) return;
    counters[GUARD_COUNTER.queued]! += records.length;
    post({ type: "events", records });
    records = [];
  };

  /** Answers everything queued now. */
  const drainPerm = () => {
    const group = perm;
    if (group === null) return;
    for (let bytes = group.read(); bytes !== null; bytes = group.read()) {
      counters[GUARD_COUNTER.polls]!++;
      const batch = decodePermissionEvents(bytes);
      counters[GUARD_COUNTER.overflows]! += batch.overflows;
      for (const event of batch.events) answer(group, event.mask, event.fd, event.tid);
      if (batch.malformed) {
        // The rest cannot be answered one by one: closing the group allows them all.
        throw new Error("a permission event the decoder does not trust: the group was closed");
      }
    }
    // Sorting the samples costs more than a decision: not after every read.
    if (computedAt === 0 || sampled - computedAt >= 256) percentiles();
    flush();
  };

  let marks: Marks | null = null;
  const drainWatch = () => {
    if (watch === null || marks === null) return;
    for (let bytes = watch.read(); bytes !== null; bytes = watch.read()) {
      const batch = decodeFanotifyEvents(bytes);
      if (batch.overflows > 0) {
        counters[GUARD_COUNTER.overflows]! += batch.overflows;
        marks.placeAll();
      }
      for (const event of batch.events) {
        if (event.entry === null || event.entry.name === null) continue;
        const dir = marks.dirOf(event.entry.dir.key);
        if (dir === undefined) continue;
        marks.created(dir, event.entry.name, (event.mask & FAN.ONDIR) !== 0);
      }
    }
  };

  try {
    perm = PermissionGroup.open({ accessPerm: start.accessPerm, audit: start.audit });
    try {
      watch = DirectoryWatch.open();
    } catch {
      watch = null;
    }
    marks = new Marks({
      perm,
      watch,
      counters,
      maxDirs: start.maxDirs,
      targets: start.targets,
      service: drainPerm,
    });
    marks.placeAll();
    for (const path of start.unheld) {
      const errno = perm.ignore(path);
      // A file that is not there (ENOENT) has no inode to exempt; Sentry itself makes it.
      if (errno !== 0 && errno !== 2) {
        marks.failures.push({ path, errno: `ignore mark: errno ${errno}` });
      }
    }
    post({ type: "ready", failures: marks.failures, watching: watch !== null });
    const fds = watch === null ? [perm.fd, start.wakeFd] : [perm.fd, start.wakeFd, watch.fd];
    for (;;) {
      const ready = pollReadable(fds, -1);
      if (ready[1]) break;
      if (ready[0]) drainPerm();
      if (ready[2]) {
        drainWatch();
        drainPerm();
      }
    }
    drainPerm();
    percentiles();
    // Closed first: any open still waiting is allowed by the kernel.
    perm.close();
    post({ type: "done" });
  } catch (error) {
    perm?.close();
    flush();
    percentiles();
    post({ type: "error", message: error instanceof Error ? error.message : String(error) });
  } finally {
    perm?.close();
    watch?.close();
    proc.close();
  }
}

if ("WorkerGlobalScope" in globalThis) {
  const scope = globalThis as unknown as {
    postMessage(message: unknown): void;
    onmessage: ((event: MessageEvent) => void) | null;
  };
  scope.onmessage = (event: MessageEvent<GuardWorkerStart>) => {
    scope.onmessage = null;
    run(event.data, (m) => scope.postMessage(m));
  };
}
