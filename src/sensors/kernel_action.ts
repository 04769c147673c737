import { normalize } from "node:path";
import type { Kind } from "../events/mod.ts";
import {
  decodeSockaddr,
  decodeWaitStatus,
  EINPROGRESS,
  errnoName,
  isPathOnly,
  openAccess,
  signalName,
} from "../platform/mod.ts";
import type { SensorEvent } from "./sensor.ts";

/** What every kernel action carries besides its operation. */
interface ActionBase {
  /** The acting process (thread group id, as the host's pid namespace numbers it). */
  pid: number;
  /** The acting thread, when the tier knows it. */
  tid?: number;
  /** When it happened, ISO 8601 with milliseconds, when the tier knows better than "now". */
  ts?: string;
}

/**
 * One syscall-level action as a kernel tier saw it: the common language of the eBPF, seccomp
 * and fanotify tiers. Paths are absolute: each tier resolves relative paths against the right
 * directory itself. `result` is the syscall's return value (>= 0) or -errno; null when the tier
 * cannot know the outcome (a seccomp notification answered "continue" is decided before the
 * kernel runs the call).
 */
export type KernelAction =
  | ActionBase & {
    op: "open";
    path: string;
    flags: number;
    /** Whether the open created the file, when the tier knows (eBPF reads FMODE_CREATED). */
    created?: boolean;
    result: number | null;
    syscall: string;
  }
  | ActionBase & { op: "unlink" | "rmdir"; path: string; result: number | null; syscall: string }
  | ActionBase & {
    op: "rename" | "link" | "symlink";
    /** The source: the old name, the link's target, or a symlink's content. */
    from: string;
    to: string;
    result: number | null;
    syscall: string;
  }
  | ActionBase & {
    op: "connect" | "sendto";
    /** The raw `struct sockaddr` bytes, as long as the process said. */
    addr: Uint8Array;
    result: number | null;
    syscall: string;
  }
  | ActionBase & {
    op: "exec";
    ppid?: number;
    /** The file executed, as the process named it (made absolute). */
    path: string;
    /** The program that really runs (an interpreter for a script), when the tier knows it. */
    exe?: string;
    argv: string[];
    result: number | null;
    syscall: string;
  }
  | ActionBase & { op: "fork"; ppid: number }
  | ActionBase & { op: "exit"; status: number }
  | ActionBase & {
    op: "control";
    syscall: string;
    /** Whom it aimed at, outside the tree (the tier classified it). */
    target: ControlTarget;
    /**
     * The pid as the caller passed it: for kill, 0 or -pgid aims at a process group and -1 at
     * every process. Absent when the caller named its target by pidfd.
     */
    arg?: number;
    /** The pidfd the target was named by. */
    pidfd?: number;
    /** The signal's name (`0` for an existence probe), for the signalling calls. */
    signal?: string;
    /** The ptrace request's name. */
    request?: string;
    /** The fd taken (pidfd_getfd). */
    fd?: number;
    result: number | null;
  };

/** The target of a control action that lies outside the agent's tree. */
export type ControlTarget =
  | {
    scope: "process";
    /** The process (thread group), host numbering. */
    pid: number;
    /** The thread aimed at, when it is not the process's main thread. */
    tid?: number;
    /** Its name, or null when it was gone before it could be read. */
    comm: string | null;
  }
  | {
    scope: "group";
    /** The process group, host numbering. */
    pgid: number;
    /** Its members outside the tree, with their names (empty: none could be read). */
    outside: { pid: number; comm: string | null }[];
  }
  | { scope: "all" };

/** What the table knows of one process. */
export interface ProcessInfo {
  ppid: number | null;
  exe: string | null;
  cmdline: string[];
}

/** How the table learns about a process it did not see start (one read of /proc). */
export type InspectProcess = (pid: number) => ProcessInfo | null;

/**
 * Keeps pid → ppid, exe and command line from fork, exec and exit actions, so that every event
 * names its process exactly, even one that has exited by the time the event is decoded. A pid
 * the table never saw start is inspected once (attach, or a tier that sees no forks).
 */
export class ProcessTable {
  readonly #procs = new Map<number, ProcessInfo>();
  readonly #inspect: InspectProcess;

  /** Starts empty; `inspect` reads a process the table has not seen start. */
  constructor(inspect: InspectProcess) {
    this.#inspect = inspect;
  }

  /** A child inherits its parent's program and command line. */
  fork(child: number, parent: number): void {
    const p = this.get(parent);
    this.#procs.set(child, { ppid: parent, exe: p?.exe ?? null, cmdline: p?.cmdline ?? [] });
  }

  /** A process now runs a new program. */
  exec(pid: number, exe: string, argv: string[], ppid?: number): void {
    const known = this.#procs.get(pid);
    this.#procs.set(pid, { ppid: ppid ?? known?.ppid ?? null, exe, cmdline: argv });
  }

  /** Forgets an exited process. */
  exit(pid: number): void {
    this.#procs.delete(pid);
  }

  /** Records what is known of a process (from /proc while it is alive, or from the tier). */
  set(pid: number, info: ProcessInfo): void {
    this.#procs.set(pid, info);
  }

  /** What is known of a process, inspecting it once if the table never saw it start. */
  get(pid: number): ProcessInfo | undefined {
    let info = this.#procs.get(pid);
    if (info === undefined) {
      info = this.#inspect(pid) ?? undefined;
      if (info !== undefined) this.#procs.set(pid, info);
    }
    return info;
  }

  /** How many processes the table holds. */
  get size(): number {
    return this.#procs.size;
  }
}

/** What {@link toSensorEvent} needs besides the action. */
export interface KernelEventContext {
  /** The sensor name journaled with the event (`ebpf`, `seccomp`, `fanotify`). */
  sensor: string;
  table: ProcessTable;
  /** Ports that make a connection a `db.connect`. */
  databasePorts: ReadonlySet<number>;
}

const EPERM = 1;

/** The outcome fields of an event's detail, from a syscall's return value. */
function outcome(result: number | null): Record<string, unknown> {
  if (result === null) return { result: "unknown" };
  if (result >= 0) return { result: "ok" };
  if (-result === EINPROGRESS) return { result: "pending", errno: "EINPROGRESS" };
  return { result: "failed", errno: errnoName(-result) };
}

/**
 * Turns a kernel action into the event the engine decides on, and keeps the process table up to
 * date (fork, exec and exit). Returns null for an action that is not an event of its own (a
 * fork) or that names nothing Sentry judges (a connect to a netlink or AF_UNSPEC address).
 *
 * The kinds: an open is a read, write or create from its flags; unlink and rmdir are deletes;
 * a rename's target is the new name and `detail.from` the old; link and symlink create their
 * new name. Connects and sendtos with an address are `net.connect`, or `db.connect` on a
 * database port. A control (a signal, trace, memory access or fd taken) that the tier found
 * aimed outside the tree is `proc.control`. A failed syscall is journaled as failed
 * (`detail.result`, `detail.errno`), never as done.
 */
export function toSensorEvent(
  action: KernelAction,
  context: KernelEventContext,
): SensorEvent | null {
  const { table } = context;
  switch (action.op) {
    case "fork":
      table.fork(action.pid, action.ppid);
      return null;
    case "exec": {
      const path = normalizePath(action.path);
      const failed = action.result !== null && action.result < 0;
      if (!failed) table.exec(action.pid, action.exe ?? path, action.argv, action.ppid);
      const info = table.get(action.pid);
      return event(action, context, {
        kind: "proc.exec",
        target: action.argv.length > 0 ? action.argv.join(" ") : path,
        detail: {
          syscall: action.syscall,
          path,
          ...(action.exe !== undefined && action.exe !== path ? { interpreter: action.exe } : {}),
          ...outcome(action.result),
        },
      }, failed ? { ppid: info?.ppid ?? null, exe: path, cmdline: action.argv } : info);
    }
    case "exit": {
      const info = table.get(action.pid);
      table.exit(action.pid);
      const { code, signal } = decodeWaitStatus(action.status);
      return event(action, context, {
        kind: "proc.exit",
        target: info !== undefined && info.cmdline.length > 0
          ? info.cmdline.join(" ")
          : (info?.exe ?? String(action.pid)),
        detail: { code, signal: signal === null ? null : signalName(signal) },
      }, info);
    }
    case "open": {
      const access = openAccess(action.flags, action.created);
      const kind: Kind = access === "read"
        ? "file.read"
        : access === "write"
        ? "file.write"
        : "file.create";
      return event(action, context, {
        kind,
        target: normalizePath(action.path),
        detail: {
          syscall: action.syscall,
          flags: action.flags,
          ...(isPathOnly(action.flags) ? { pathOnly: true } : {}),
          ...outcome(action.result),
        },
      });
    }
    case "unlink":
    case "rmdir":
      return event(action, context, {
        kind: "file.delete",
        target: normalizePath(action.path),
        detail: {
          syscall: action.syscall,
          ...(action.op === "rmdir" ? { directory: true } : {}),
          ...outcome(action.result),
        },
      });
    case "rename":
      return event(action, context, {
        kind: "file.rename",
        target: normalizePath(action.to),
        detail: {
          syscall: action.syscall,
          from: normalizePath(action.from),
          ...outcome(action.result),
        },
      });
    case "link":
    case "symlink":
      return event(action, context, {
        kind: "file.create",
        target: normalizePath(action.to),
        detail: {
          syscall: action.syscall,
          // A symlink's content is any string; a hard link's source is a path.
          [action.op === "link" ? "linkOf" : "symlinkTo"]: action.op === "link"
            ? normalizePath(action.from)
            : action.from,
          ...outcome(action.result),
        },
      });
    case "control":
      return event(action, context, controlBody(action));
    case "connect":
    case "sendto": {
      const addr = decodeSockaddr(action.addr);
      if (addr === null) return null;
      const db = addr.family !== "unix" && context.databasePorts.has(addr.port);
      return event(action, context, {
        kind: db ? "db.connect" : "net.connect",
        target: addr.target,
        detail: {
          syscall: action.syscall,
          family: addr.family,
          ...(action.op === "sendto" ? { via: "sendto" } : {}),
          ...outcome(action.result),
        },
      });
    }
  }
}

/**
 * A control action's event: `proc.control`, aimed at `pid 1234 (sentry)`, `process group 1234
 * (sleep, sentry)` or `every process`. `detail.target_pid` is the pid as passed (0 or negative
 * for a group, -1 for all), else the target's host pid. A refusal with EPERM is
 * `blocked: "EPERM"`: under `run`, Sentry's Landlock scope is what refuses it. Signal 0 tests
 * whether the target exists and changes nothing: it is marked `probe`.
 */
function controlBody(
  action: Extract<KernelAction, { op: "control" }>,
): { kind: Kind; target: string; detail: Record<string, unknown> } {
  const t = action.target;
  const named = (pid: number, comm: string | null) =>
    comm === null ? `pid ${pid}` : `pid ${pid} (${comm})`;
  let target: string;
  let scope: Record<string, unknown> = {};
  let targetPid: number;
  switch (t.scope) {
    case "process":
      target = named(t.pid, t.comm);
      targetPid = t.pid;
      if (t.tid !== undefined && t.tid !== t.pid) scope = { target_tid: t.tid };
      break;
    case "group": {
      const names = [...new Set(t.outside.map((o) => o.comm ?? String(o.pid)))];
      target = `process group ${t.pgid}${names.length > 0 ? ` (${names.join(", ")})` : ""}`;
      targetPid = action.arg ?? -t.pgid;
      scope = { scope: "group", group: t.pgid, outside_pids: t.outside.map((o) => o.pid) };
      break;
    }
    case "all":
      target = "every process";
      targetPid = -1;
      scope = { scope: "all" };
      break;
  }
  const refused = action.result !== null && action.result === -EPERM;
  return {
    kind: "proc.control",
    target,
    detail: {
      syscall: action.syscall,
      ...(action.signal === undefined ? {} : { signal: action.signal }),
      ...(action.request === undefined ? {} : { request: action.request }),
      target_pid: targetPid,
      ...scope,
      ...(action.pidfd === undefined ? {} : { pidfd: action.pidfd }),
      ...(action.fd === undefined ? {} : { fd: action.fd }),
      ...(action.signal === "0" ? { probe: true } : {}),
      ...outcome(action.result),
      ...(refused ? { blocked: "EPERM" } : {}),
    },
  };
}

/** Resolves `.`, `..` and repeated slashes lexically, so no path slips past a glob by its spelling. */
function normalizePath(path: string): string {
  return path.startsWith("/") ? normalize(path) : path;
}

function event(
  action: KernelAction,
  context: KernelEventContext,
  body: { kind: Kind; target: string; detail: Record<string, unknown> },
  known?: ProcessInfo | undefined,
): SensorEvent {
  const info = known ?? context.table.get(action.pid);
  return {
    pid: action.pid,
    ppid: info?.ppid ?? null,
    exe: info?.exe ?? null,
    cmdline: info?.cmdline ?? [],
    kind: body.kind,
    target: body.target,
    detail: action.tid !== undefined && action.tid !== action.pid
      ? { ...body.detail, tid: action.tid }
      : body.detail,
    sensor: context.sensor,
    ...(action.ts === undefined ? {} : { ts: action.ts }),
  };
}
