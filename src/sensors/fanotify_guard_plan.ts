/**
 * The pure half of the fanotify guard (src/sensors/fanotify_guard.ts): which inodes to mark for
 * a policy, what a permission event means as an action, and whether that action is blocked. No
 * I/O, no clock: the Worker that answers the kernel calls these while the opener waits.
 *
 * Marks: each deny glob of `files.read`, `files.write`, the rules that can match a read, write,
 * create or exec, `processes.deny` entries with a path, and Sentry's own directories
 * (`guarded`) is marked at its literal prefix, the part before the first wildcard (`~/.ssh` for
 * `~/.ssh/**`). A prefix of `/` or the home directory alone would put every open of the host or
 * of the home under the guard: such a glob is reported as unenforceable here, by name, as are
 * globs under /proc, /sys and /dev (pseudo-filesystems; the guard reads /proc itself while an
 * opener waits, so marking it could deadlock the guard).
 *
 * @module
 */

import picomatch from "picomatch";
import { type Kind, responseRank } from "../events/mod.ts";
import { type CompiledPolicy, evaluate, expandGlob } from "../policy/mod.ts";
import type { ExpandContext } from "../policy/patterns.ts";
import { type KernelAction, ProcessTable, toSensorEvent } from "./kernel_action.ts";
import type { SensorEvent } from "./sensor.ts";

/** A notice for the lead's output: something the guard cannot enforce, or how it enforces. */
export interface GuardNotice {
  type: "warn" | "info";
  message: string;
}

/** What a glob asks the guard to hold: reads (opens), writes (opens for writing), or execs. */
export type GuardAccess = "read" | "write" | "exec";

/** One path glob of the policy, expanded, with where it came from. */
export interface GuardGlob {
  /** The expanded, absolute glob. */
  glob: string;
  /** Where it came from, for notices: `files.read.deny "~/.ssh/**"`, `rules.no_keys`. */
  label: string;
  access: readonly GuardAccess[];
}

/** A directory or file to mark. */
export interface GuardTarget {
  /** The literal prefix: an absolute path, no wildcard. */
  path: string;
  /**
   * Mark every directory beneath it too (walked at start, and new ones as they appear). False:
   * the directory and its direct children only (a glob such as `~/.ssh/id_*`).
   */
  recursive: boolean;
  /** The globs it serves. */
  labels: string[];
}

/** A glob that cannot be marked, and why. */
export interface UnenforceableGlob {
  label: string;
  glob: string;
  reason: string;
}

/** What {@link planGuardMarks} decided. */
export interface GuardPlan {
  targets: GuardTarget[];
  unenforceable: UnenforceableGlob[];
  notices: GuardNotice[];
}

/** Paths never marked: pseudo-filesystems (and /proc is what the guard reads itself). */
export const NEVER_MARKED_PREFIXES: readonly string[] = ["/proc", "/sys", "/dev"];

const FILE_KINDS: Readonly<Record<string, GuardAccess>> = {
  "file.read": "read",
  "file.write": "write",
  "file.create": "write",
  "proc.exec": "exec",
};

/**
 * The path globs of a compiled policy that fanotify can hold, with notices for the parts it
 * cannot: deletes and renames (no permission event exists for them), default-deny sections (an
 * allow-list would need a host-wide mark), and `processes.deny` entries by name only (no path to
 * mark). `context` expands `processes.deny` paths as the policy compiler did.
 */
export function guardGlobs(
  policy: CompiledPolicy,
  context: ExpandContext,
): { globs: GuardGlob[]; notices: GuardNotice[] } {
  const globs: GuardGlob[] = [];
  const notices: GuardNotice[] = [];
  const resolved = policy.policy;
  const section = (name: "read" | "write", access: GuardAccess) => {
    const compiled = policy.files[name];
    compiled.deny.globs.forEach((glob, i) => {
      const raw = resolved.files[name].deny[i] ?? glob;
      globs.push({ glob, label: `files.${name}.deny "${raw}"`, access: [access] });
    });
    if (compiled.default === "deny") {
      notices.push({
        type: "warn",
        message: `files.${name}.default: deny cannot be held by fanotify (an allow-list would ` +
          `need a mark on the whole host): only files.${name}.deny and rules are held`,
      });
    }
  };
  section("read", "read");
  section("write", "write");
  if (policy.files.delete.deny.size > 0 || policy.files.delete.default === "deny") {
    notices.push({
      type: "warn",
      message: "files.delete: fanotify has no permission event for deletes or renames: they " +
        "cannot be stopped by this guard, only seen",
    });
  }
  const seen = new Set<string>();
  for (const rules of policy.rulesByKind.values()) {
    for (const compiled of rules) {
      const { rule, match } = compiled;
      if (seen.has(rule.id) || match.pathTargets === null) continue;
      seen.add(rule.id);
      const kinds: readonly Kind[] = match.kinds === null ? [] : [...match.kinds];
      const access = new Set<GuardAccess>();
      for (const kind of kinds) {
        const a = FILE_KINDS[kind];
        if (a !== undefined) access.add(a);
      }
      if (match.kinds === null) {
        for (const a of ["read", "write", "exec"] as const) access.add(a);
      }
      if (access.size === 0) {
        if (kinds.some((k) => k === "file.delete" || k === "file.rename")) {
          notices.push({
            type: "warn",
            message: `rules.${rule.id}: deletes and renames cannot be stopped by fanotify ` +
              "permission events, only seen",
          });
        }
        continue;
      }
      for (const glob of match.pathTargets.globs) {
        globs.push({ glob, label: `rules.${rule.id}`, access: [...access] });
      }
    }
  }
  for (const entry of resolved.processes.deny) {
    const path = typeof entry === "string" ? (entry.includes("/") ? entry : null) : entry.path;
    const text = typeof entry === "string" ? entry : JSON.stringify(entry);
    if (path === undefined || path === null) {
      notices.push({
        type: "warn",
        message: `processes.deny "${text}": an exec by name has no path to mark: fanotify ` +
          "cannot stop it (only execs of files beneath a marked path are held)",
      });
      continue;
    }
    let glob: string;
    try {
      glob = expandGlob(path, context);
    } catch {
      continue;
    }
    globs.push({ glob, label: `processes.deny "${text}"`, access: ["exec"] });
  }
  if (policy.processes.default === "deny") {
    notices.push({
      type: "warn",
      message: "processes.default: deny cannot be held by fanotify (it would need a mark on " +
        "every program of the host): only processes.deny paths are held",
    });
  }
  for (const dir of policy.guarded) {
    globs.push({ glob: dir, label: "guard.sentry_home", access: ["read", "write", "exec"] });
  }
  return { globs, notices };
}

/** How {@link planGuardMarks} plans. */
export interface PlanOptions {
  /** The home directory: a glob whose literal prefix is the home itself is unenforceable. */
  home: string;
}

/**
 * Plans the marks for a list of globs: each glob's literal prefix, recursive unless the rest of
 * the glob is a single path segment; prefixes beneath a recursive one are folded into it. Globs
 * whose prefix is `/`, the home directory, relative (`**∕.env`), or on a pseudo-filesystem are
 * listed as unenforceable, each with a warn notice naming it.
 */
export function planGuardMarks(globs: readonly GuardGlob[], options: PlanOptions): GuardPlan {
  const home = trimSlash(options.home);
  const byPath = new Map<string, GuardTarget>();
  const unenforceable: UnenforceableGlob[] = [];
  const notices: GuardNotice[] = [];
  for (const g of globs) {
    const prefix = literalPrefix(g.glob);
    const refuse = (reason: string) => {
      unenforceable.push({ label: g.label, glob: g.glob, reason });
      notices.push({
        type: "warn",
        message: `${g.label} cannot be enforced by fanotify: ${reason}`,
      });
    };
    if (prefix === null || prefix.path === "" || !prefix.path.startsWith("/")) {
      refuse("it has no literal directory to mark (it may match anywhere)");
      continue;
    }
    const path = trimSlash(prefix.path);
    if (path === "/") {
      refuse("its only literal prefix is / (a mark there would hold every open of the host)");
      continue;
    }
    if (path === home) {
      refuse(`its only literal prefix is the home directory ${home}`);
      continue;
    }
    if (NEVER_MARKED_PREFIXES.some((p) => path === p || path.startsWith(`${p}/`))) {
      refuse(`${path} is on a pseudo-filesystem, which the guard never marks`);
      continue;
    }
    const known = byPath.get(path);
    if (known === undefined) {
      byPath.set(path, { path, recursive: prefix.recursive, labels: [g.label] });
    } else {
      known.recursive ||= prefix.recursive;
      if (!known.labels.includes(g.label)) known.labels.push(g.label);
    }
  }
  // Fold targets beneath a recursive one into it.
  const sorted = [...byPath.values()].sort((a, b) => a.path.localeCompare(b.path));
  const targets: GuardTarget[] = [];
  for (const t of sorted) {
    const parent = targets.find((p) =>
      p.recursive && (t.path === p.path || t.path.startsWith(p.path === "/" ? "/" : `${p.path}/`))
    );
    if (parent === undefined) {
      targets.push(t);
      continue;
    }
    for (const label of t.labels) if (!parent.labels.includes(label)) parent.labels.push(label);
  }
  return { targets, unenforceable, notices };
}

/**
 * The literal prefix of a glob and whether what follows it needs a recursive mark: null when
 * the glob does not parse. A glob without wildcards is its own prefix, marked recursively (a
 * directory named literally is held with everything in it; a file is held by itself).
 */
export function literalPrefix(glob: string): { path: string; recursive: boolean } | null {
  let scan: { base: string; glob: string; isGlob: boolean };
  try {
    scan = picomatch.scan(glob, { unescape: true });
  } catch {
    return null;
  }
  if (!scan.isGlob) return { path: scan.base, recursive: true };
  const rest = scan.glob;
  return { path: scan.base, recursive: rest.includes("/") || rest.includes("**") };
}

function trimSlash(path: string): string {
  return path.replace(/\/+$/, "") || "/";
}

// --- Membership -----------------------------------------------------------------------------

/**
 * The session's processes (thread group ids) as a bitmap in shared memory: the session's tree
 * tracker adds and removes pids on the main thread, and the guard's Worker reads it (and adds
 * the descendants it finds) while an opener waits, without a message between them. A function
 * cannot be shared with a Worker, so this is what stands for an `inSession(pid)` predicate.
 */
export class SessionPids {
  /** The shared bitmap: another thread wraps it with `new SessionPids(buffer)`. */
  readonly buffer: SharedArrayBuffer;
  readonly #words: Int32Array;

  /**
   * A bitmap for pids below `pidMax` (`/proc/sys/kernel/pid_max`; 4,194,304 at most), or a view
   * of a bitmap another thread made (its `buffer`).
   */
  constructor(pidMax: number | SharedArrayBuffer) {
    this.buffer = typeof pidMax === "number"
      ? new SharedArrayBuffer(Math.ceil(Math.max(1, pidMax) / 32) * 4)
      : pidMax;
    this.#words = new Int32Array(this.buffer);
  }

  /** The largest pid the bitmap holds, plus one. */
  get pidMax(): number {
    return this.#words.length * 32;
  }

  /** Adds a process. Returns false when its pid is beyond the bitmap. */
  add(pid: number): boolean {
    if (!this.#fits(pid)) return false;
    Atomics.or(this.#words, pid >>> 5, 1 << (pid & 31));
    return true;
  }

  /** Removes a process (it exited). */
  delete(pid: number): void {
    if (this.#fits(pid)) Atomics.and(this.#words, pid >>> 5, ~(1 << (pid & 31)));
  }

  /** Whether a process is in the session. */
  has(pid: number): boolean {
    if (!this.#fits(pid)) return false;
    return (Atomics.load(this.#words, pid >>> 5) & (1 << (pid & 31))) !== 0;
  }

  #fits(pid: number): boolean {
    return Number.isInteger(pid) && pid > 0 && pid < this.#words.length * 32;
  }
}

// --- Deciding ---------------------------------------------------------------------------------

/** The opener, as the guard read it from /proc while it waited. */
export interface GuardCaller {
  pid: number;
  tid: number;
  ppid: number | null;
  exe: string | null;
  cmdline: string[];
}

/**
 * What one permission event asks, in the guard's terms:
 * - `open` with the opener's flags (read from its blocked syscall);
 * - `open` with `flags: null` when they could not be read: decided as a read and as a write;
 * - `read` for `FAN_ACCESS_PERM` (a read through a descriptor);
 * - `exec` for `FAN_OPEN_EXEC_PERM`.
 */
export type GuardRequest =
  | { op: "open"; flags: number | null; syscall: string }
  | { op: "read" }
  | { op: "exec"; syscall: string };

/** The answer to one event, and the event to journal. */
export interface GuardDecision {
  blocked: boolean;
  event: SensorEvent;
  /** The rule or section that decided. */
  rule: string;
}

/** The sensor name on the guard's events. */
export const GUARD_SENSOR = "fanotify_guard";
/** The errno a denied open gets from the kernel for `FAN_DENY`. */
export const GUARD_ERRNO = "EPERM";

const O_WRONLY = 1;
const BLOCK_RANK = responseRank("block");

/**
 * Decides one request on `path` by `caller` with the pure `evaluate()`: blocked when the verdict
 * is deny and the response is at least `block`, or when Sentry's own guard (`guard.*`) denied
 * it, which holds in every mode. The event comes back with `detail.blocked: "EPERM"` (and
 * `result: "failed"`) when blocked. Pure.
 */
export function decideGuard(
  request: GuardRequest,
  options: { path: string; caller: GuardCaller; policy: CompiledPolicy },
): GuardDecision {
  const { path, caller, policy } = options;
  const candidates: KernelAction[] = [];
  const base = { pid: caller.pid, ...(caller.tid !== caller.pid ? { tid: caller.tid } : {}) };
  switch (request.op) {
    case "exec":
      candidates.push({
        op: "exec",
        ...base,
        path,
        argv: [],
        result: null,
        syscall: request.syscall,
        ...(caller.ppid === null ? {} : { ppid: caller.ppid }),
      });
      break;
    case "read":
      candidates.push({ op: "open", ...base, path, flags: 0, result: null, syscall: "read" });
      break;
    case "open":
      if (request.flags !== null) {
        candidates.push({
          op: "open",
          ...base,
          path,
          flags: request.flags,
          result: null,
          syscall: request.syscall,
        });
      } else {
        // Flags unknown: held if either a read or a write would be.
        for (const flags of [0, O_WRONLY]) {
          candidates.push({ op: "open", ...base, path, flags, result: null, syscall: "unknown" });
        }
      }
      break;
  }
  const table = new ProcessTable(() => ({
    ppid: caller.ppid,
    exe: caller.exe,
    cmdline: caller.cmdline,
  }));
  const context = { sensor: GUARD_SENSOR, table, databasePorts: new Set<number>() };
  let first: GuardDecision | null = null;
  for (const action of candidates) {
    const event = toSensorEvent(action, context);
    if (event === null) continue;
    if (request.op === "open" && request.flags === null) event.detail.flagsUnknown = true;
    const decision = evaluate({ ...event, pid: event.pid ?? null }, policy);
    const blocked = decision.verdict === "deny" &&
      (responseRank(decision.response) >= BLOCK_RANK || decision.rule.startsWith("guard."));
    const result: GuardDecision = { blocked, event, rule: decision.rule };
    first ??= result;
    if (blocked) {
      event.detail.result = "failed";
      event.detail.errno = GUARD_ERRNO;
      event.detail.blocked = GUARD_ERRNO;
      return result;
    }
  }
  if (first === null) throw new RangeError(`Cannot build an event for "${path}"`);
  return first;
}

/** Whether an executed file is a dynamic loader (opened by execve for the program it loads). */
export function isLoader(path: string): boolean {
  const base = path.slice(path.lastIndexOf("/") + 1);
  return /^ld-linux|^ld-musl|^ld\.so|^ld64\.so/.test(base);
}
