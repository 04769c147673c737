/**
 * The seccomp tier's Worker. It has two roles, chosen by the first message:
 *
 * - `supervise` (in Sentry): owns the listener fd and runs the receive loop. For each
 *   notification it reads the arguments out of the blocked caller (process_vm_readv; relative
 *   paths through /proc/TID/cwd or /proc/TID/fd/N), reads the caller's pid, ppid, exe and
 *   command line from /proc (exact even for a process that lives 1 ms: it is blocked while this
 *   runs), checks that the notification is still valid, calls the pure {@link decide} hook,
 *   answers, and only then queues the decoded actions, which go to the main thread in batches.
 *   Nothing on this path awaits: a blocking ioctl or a slow journal on the main thread cannot
 *   delay an answer, and the main thread cannot delay one either. The loop blocks in the
 *   receive ioctl itself (with SYNC_WAKE_UP the kernel switches from the caller straight to this
 *   thread); the main thread interrupts it with a signal (`wakeThread`) to stop it, or to fetch
 *   records that waited longer than a batch interval because the agent went quiet.
 *   Besides the policy's decisions it enforces Sentry's own guard in every mode: signals,
 *   ptrace and cross-process memory calls aimed outside the agent's tree fail with EPERM
 *   (seccomp_guard.ts), and opens beneath Sentry's directories are made by the supervisor and
 *   refused. In block mode an allowed connect is made by the supervisor on the caller's own
 *   socket (seccomp_connect.ts); a blocking one is answered when it finishes, while the loop
 *   polls the listener and the waiting sockets together, so no other caller waits on it.
 * - `handover` (in the launcher): sends the listener fd to the supervisor over the control
 *   socket (SCM_RIGHTS) and waits for "go". It runs here because the launcher's main thread is
 *   already under the filter, and its own `sendmsg` would wait for a supervisor that does not
 *   have the listener yet. This thread was started before the filter, so it is not filtered.
 *
 * It imports platform files directly, not `platform/mod.ts`, to keep its start-up short.
 *
 * @module
 */

import {
  FileOpener,
  gettid,
  MemoryReader,
  NOTIF_SIZE,
  O_NONBLOCK,
  pollListenerAndSockets,
  ProcReader,
  readSome,
  SeccompListener,
  sendWithFd,
  SocketOps,
} from "../platform/seccomp_linux.ts";
import {
  AT_FDCWD,
  type ControlCall,
  decodeControl,
  decodeNotif,
  encodeResponse,
  readSyscall,
  SECCOMP_NOTIF_RESP_SIZE,
  type SeccompNotif,
  type SyscallAction,
  syscallName,
  type SyscallRead,
  type TargetReader,
} from "../platform/seccomp_notif.ts";
import type { KernelAction } from "./kernel_action.ts";
import { responseRank } from "../events/kinds.ts";
import { procSelf } from "../platform/ebpf_record.ts";
import { landlockAllowsOpen, type LandlockPlan, SCOPE } from "../platform/landlock_plan.ts";
import { type CompiledPolicy, compilePolicy, type ResolvedPolicy } from "../policy/mod.ts";
import {
  blocks,
  callerEvent,
  callerProcPath,
  decideActions,
  EACCES,
  execTarget,
  OPEN,
  parseStatusIdentity,
  splitPath,
} from "./seccomp_block.ts";
import {
  classifyControl,
  controlDetail,
  parseTaskInfo,
  type TaskInfo,
  type TaskView,
  type TreeIdentity,
} from "./seccomp_guard.ts";
import { connectPlan, connectStep, timeoutResult, unixSockaddrAt } from "./seccomp_connect.ts";

/** What the caller of a syscall is, read from /proc while it was blocked. */
export interface CallerInfo {
  /** Thread-group id (the process). */
  pid: number;
  /** The calling thread. */
  tid: number;
  ppid: number | null;
  exe: string | null;
  cmdline: string[];
}

/** What {@link decide} is given: one notification, decoded. */
export interface SeccompDecisionInput {
  syscall: string;
  caller: CallerInfo;
  /** The actions the call asks for (empty for a send without an address). */
  actions: readonly KernelAction[];
  /** Why the arguments could not be read, if they could not (`memory`, `directory`). */
  failure: "memory" | "directory" | null;
}

/** An answer to the kernel: let the call run, or fail it with an errno. */
export type SeccompVerdict = { kind: "continue" } | { kind: "errno"; errno: number };

const CONTINUE: SeccompVerdict = { kind: "continue" };

/**
 * The decision hook of the receive loop: pure, synchronous, no I/O, called once per
 * notification before the answer. For now it lets every call run (the sensing tier).
 * TODO(#11): plug the compiled policy in here; a denial must then hold against a thread that
 * rewrites the argument after this read (decide on what the supervisor opened itself, ADDFD).
 */
export function decide(input: SeccompDecisionInput): SeccompVerdict {
  void input;
  return CONTINUE;
}

/** One answered notification, as the worker hands it to the main thread. */
export interface SeccompRecord {
  /** Wall-clock time of the notification, in ms since the epoch. */
  ms: number;
  /** Index of the caller in its batch's `callers` (sent once per batch, not per record). */
  caller: number;
  actions: KernelAction[];
  /** The errno the call was failed with; absent when it was let through. */
  denied?: number;
  /**
   * A signal, trace or memory call aimed outside the agent's tree, which Sentry's guard failed
   * (`denied` holds the errno): a `proc.control` event.
   */
  control?: { target: string; detail: Record<string, unknown> };
}

/** The worker's exact counters. */
export interface SeccompWorkerStats {
  /** Notifications received. */
  notifications: number;
  /** Notifications answered. */
  answered: number;
  /** Answered with an errno. */
  denied: number;
  /** Records handed to the main thread, and in how many batches. */
  records: number;
  batches: number;
  /** Blind spots by id: what could not be read or attributed, counted exactly. */
  blind: Record<string, number>;
}

/** Start message of the `supervise` role. */
export interface SuperviseStart {
  role: "supervise";
  /** The listener fd; the worker owns it from now on and closes it when it stops. */
  listenerFd: number;
  /**
   * Int32Array view: [0] is set to 1 by the main thread to stop the loop; [1] is the number of
   * records waiting in the worker (the main thread wakes it when they wait too long); [2] is 1
   * while the worker waits for connects it makes for callers (the main thread then wakes it at
   * each batch interval, so that a receive that found nothing cannot hold them up).
   */
  control: SharedArrayBuffer;
  /** Turn on SYNC_WAKE_UP (default true). */
  syncWakeUp: boolean;
  /** Hand a batch over when it holds this many records... */
  batchMax: number;
  /** ...or when its first record is this old (ms). */
  batchMs: number;
  /**
   * The policy to enforce (block mode), or null to observe only. Compiled in the worker: the
   * decision is taken here, while the caller waits, never across a thread hop.
   */
  policy: { resolved: ResolvedPolicy; workspace: string; home: string; guarded?: string[] } | null;
  /** The agent's Landlock plan: an open it denies is refused, never made on the agent's behalf. */
  landlock?: LandlockPlan | null;
  /**
   * The agent's root process (the launcher's pid): the guard tells the tree from the rest by
   * it. Absent or null: signals and traces are let through unjudged (counted as a blind spot).
   */
  root?: number | null;
}

/** Messages of the `supervise` role to the main thread. */
export type SuperviseMessage =
  | { type: "ready"; syncWakeUp: boolean; tid: number }
  | { type: "batch"; records: SeccompRecord[]; callers: CallerInfo[]; stats: SeccompWorkerStats }
  | { type: "done"; reason: "stopped" | "hangup"; stats: SeccompWorkerStats }
  | { type: "error"; message: string; stats: SeccompWorkerStats };

/** Start message of the `handover` role. */
export interface HandoverStart {
  role: "handover";
  /** The connected control socket. */
  socketFd: number;
  /** Int32Array view: [0] the state ({@link HANDOVER}); [1] the listener fd to send. */
  control: SharedArrayBuffer;
}

/** Messages of the `handover` role: loaded, then done (the main thread waits on `control`). */
export type HandoverMessage = { type: "ready" } | { type: "failed"; message: string };

/** Handover states in `control[0]`. */
export const HANDOVER = { WAITING: 0, GO: 1, FAILED: 2, SEND: 3 } as const;

// ---------------------------------------------------------------------------------------------
// Reading the caller through /proc and its memory

const PAGE = 4096;

/** Reads the blocked caller's arguments for {@link readSyscall}. */
class Target implements TargetReader {
  tid = 0;
  readonly #memory = new MemoryReader();
  readonly #proc: ProcReader;
  readonly #buffer = new Uint8Array(PAGE * 2);
  readonly #decoder = new TextDecoder();

  constructor(proc: ProcReader) {
    this.#proc = proc;
  }

  string(address: bigint, max: number): string | null {
    if (address === 0n) return null;
    let total = 0;
    while (total <= max) {
      const room = Math.min(PAGE - Number((address + BigInt(total)) & 4095n), max + 1 - total);
      const chunk = this.#buffer.subarray(total, total + room);
      const n = this.#memory.read(this.tid, address + BigInt(total), chunk);
      if (n <= 0) return null;
      const nul = chunk.subarray(0, n).indexOf(0);
      if (nul >= 0) return this.#decoder.decode(this.#buffer.subarray(0, total + nul));
      total += n;
      if (n < room) return null;
    }
    // Longer than the limit: the kernel fails the call with ENAMETOOLONG.
    return null;
  }

  bytes(address: bigint, length: number): Uint8Array | null {
    if (address === 0n) return null;
    const out = new Uint8Array(Math.min(length, PAGE));
    const n = this.#memory.read(this.tid, address, out);
    if (n <= 0) return null;
    return out.subarray(0, n);
  }

  directory(dirfd: number): string | null {
    const link = dirfd === AT_FDCWD ? `/proc/${this.tid}/cwd` : `/proc/${this.tid}/fd/${dirfd}`;
    return this.#proc.readLink(link);
  }
}

interface CacheEntry {
  /**
   * An open file of /proc/TID/ (loginuid, or comm without audit): reading it fails once this
   * very thread is gone, so a reused tid is never mistaken for the old thread. A cheap read.
   */
  fd: number;
  info: CallerInfo;
  /** The process ran execve since exe and cmdline were read. */
  stale: boolean;
}

const CACHE_SWEEP_AT = 2048;

/**
 * pid, ppid, exe and command line of callers, by thread id, read from /proc the first time a
 * thread calls, and re-read after its process ran execve. The ppid is the parent at first sight,
 * as the process table keeps it (a re-parented orphan keeps its original parent).
 */
class CallerCache {
  readonly #entries = new Map<number, CacheEntry>();
  readonly #proc: ProcReader;
  readonly #decoder = new TextDecoder();
  #aliveFile = "loginuid";

  constructor(proc: ProcReader) {
    this.#proc = proc;
  }

  /** The caller `tid`, or null when /proc has nothing on it. */
  lookup(tid: number): CallerInfo | null {
    const known = this.#entries.get(tid);
    if (known !== undefined) {
      if (this.#proc.alive(known.fd)) {
        if (known.stale) {
          // A new object: batches hold the old one for the records made before the exec.
          known.info = { ...known.info };
          this.#readProgram(known.info);
          known.stale = false;
        }
        return known.info;
      }
      this.#proc.close(known.fd);
      this.#entries.delete(tid);
    }
    if (this.#entries.size >= CACHE_SWEEP_AT) this.#sweep();
    let fd = this.#proc.open(`/proc/${tid}/${this.#aliveFile}`);
    if (fd === -2 && this.#aliveFile !== "comm") {
      this.#aliveFile = "comm";
      fd = this.#proc.open(`/proc/${tid}/comm`);
    }
    if (fd < 0) return null;
    const stat = this.#proc.readBytes(`/proc/${tid}/stat`);
    const status = this.#proc.readBytes(`/proc/${tid}/status`);
    if (stat === null || status === null) {
      this.#proc.close(fd);
      return null;
    }
    const tgid = /\nTgid:\s*(\d+)/.exec(this.#decoder.decode(status))?.[1];
    const info: CallerInfo = {
      pid: tgid === undefined ? tid : Number(tgid),
      tid,
      ppid: parsePpid(this.#decoder.decode(stat)),
      exe: null,
      cmdline: [],
    };
    this.#readProgram(info);
    this.#entries.set(tid, { fd, info, stale: false });
    return info;
  }

  /**
   * Whether process `pid` is one the supervisor has answered for, and still the same process
   * (the kept /proc file still reads): it made a watched call, so it runs under the filter.
   */
  known(pid: number): boolean {
    const entry = this.#entries.get(pid);
    return entry !== undefined && entry.info.pid === pid && this.#proc.alive(entry.fd);
  }

  /** Marks every thread of a process as running a new program (after its execve). */
  execed(pid: number): void {
    for (const entry of this.#entries.values()) if (entry.info.pid === pid) entry.stale = true;
  }

  /** Closes every kept fd. */
  close(): void {
    for (const entry of this.#entries.values()) this.#proc.close(entry.fd);
    this.#entries.clear();
  }

  #readProgram(info: CallerInfo): void {
    info.exe = this.#proc.readLink(`/proc/${info.tid}/exe`);
    const raw = this.#proc.readBytes(`/proc/${info.tid}/cmdline`);
    info.cmdline = raw === null || raw.length === 0
      ? []
      : this.#decoder.decode(raw[raw.length - 1] === 0 ? raw.subarray(0, -1) : raw).split("\0");
  }

  #sweep(): void {
    for (const [tid, entry] of this.#entries) {
      if (this.#proc.alive(entry.fd)) continue;
      this.#proc.close(entry.fd);
      this.#entries.delete(tid);
    }
  }
}

/** The ppid (4th field) of a /proc/PID/stat line; the command name may hold spaces and ')'. */
export function parsePpid(stat: string): number | null {
  const close = stat.lastIndexOf(")");
  if (close < 0) return null;
  const fields = stat.slice(close + 2).split(" ", 2);
  const ppid = Number(fields[1]);
  return Number.isInteger(ppid) ? ppid : null;
}

// ---------------------------------------------------------------------------------------------
// The receive loop

/** Blind spot ids and what they mean; exported for the sensor's reasons. */
export const SECCOMP_BLIND_SPOTS: Readonly<Record<string, string>> = {
  unreadable_memory:
    "syscalls whose arguments could not be read from the caller's memory (bad address or no permission); they ran unrecorded",
  unresolvable_directory:
    "syscalls with a relative path whose directory could not be read from /proc; they ran unrecorded",
  caller_gone:
    "notifications whose caller died or was interrupted before it could be read or answered; the syscall did not run",
  undecodable: "notifications Sentry failed to decode (a bug); the syscall ran unrecorded",
  unattributed:
    "syscalls whose caller could not be read from /proc; recorded with the thread id as pid and no exe",
  unemulated_open:
    "opens the supervisor could not make itself (another uid, root or mount namespace, a FIFO, device or socket): decided on their path and let through, so a racing thread could swap it",
  unemulated_connect:
    "connects in block mode the supervisor could not make itself (a unix socket of another uid, root or mount namespace, a relative path too long for sun_path, an abstract socket under Landlock's scope, a socket it could not take): decided on the copied address and let through, so a racing thread could swap it",
  unguarded_control:
    "signals, traces or memory accesses aimed at another process that the guard could not judge (the agent's root was not known): let through; Landlock's scope, where the kernel has it, still confines signals and ptrace to the tree",
};

function emptyStats(): SeccompWorkerStats {
  return { notifications: 0, answered: 0, denied: 0, records: 0, batches: 0, blind: {} };
}

function blind(stats: SeccompWorkerStats, id: string): void {
  stats.blind[id] = (stats.blind[id] ?? 0) + 1;
}

/** Whether a file exists as the caller sees it (through its root, for other mount namespaces). */
function existsFor(proc: ProcReader, tid: number, path: string): boolean {
  const result = proc.exists(`/proc/${tid}/root${path}`);
  // Only ENOENT and ENOTDIR say it is not there; EACCES and others say nothing.
  return result !== -2 && result !== -20;
}

/** The syscalls whose opens the supervisor makes itself in block mode (not openat2). */
const emulated = new Set(["open", "openat", "creat"]);

/** The mode argument of an open, by syscall: what O_CREAT gives a new file before the umask. */
function modeOf(n: SeccompNotif, syscall: string): number {
  const arg = syscall === "open" ? n.args[2] : syscall === "creat" ? n.args[1] : n.args[3];
  return Number((arg ?? 0o666n) & 0o7777n);
}

function supervise(start: SuperviseStart, post: (message: SuperviseMessage) => void): void {
  const stats = emptyStats();
  const compiled = start.policy === null ? null : compilePolicy(start.policy.resolved, {
    workspace: start.policy.workspace,
    home: start.policy.home,
    // The same environment the main thread compiled with: this process's own.
    env: Deno.env.toObject(),
    ...(start.policy.guarded === undefined ? {} : { guarded: start.policy.guarded }),
  });
  // Only a policy that can block needs a decision here (mode block, pause, rollback or kill);
  // in mode monitor or alert every call runs, and the supervisor only observes.
  const policy = compiled !== null && compiled.modeCap >= responseRank("block") ? compiled : null;
  // Sentry's guard holds in every mode: opens beneath Sentry's own directories are made by the
  // supervisor (decided on what it holds) and refused, in mode monitor too; other file actions
  // there are refused on their copied paths.
  const guard = compiled !== null && compiled.guarded.length > 0 ? compiled : null;
  const decider = policy ?? guard;
  const opener = new FileOpener();
  const me = opener.identity();
  const ownMountNs = new ProcReader().readLink("/proc/self/ns/mnt");
  const control = new Int32Array(start.control);
  const listener = new SeccompListener(start.listenerFd);
  const proc = new ProcReader();
  const target = new Target(proc);
  const callers = new CallerCache(proc);
  const sockets = new SocketOps();
  const view: TaskView = {
    task: (id) => readTask(proc, id),
    group: (pgid) => processGroup(proc, pgid),
  };
  const rootInfo = start.root === undefined || start.root === null ? null : view.task(start.root);
  const tree: TreeIdentity | null = rootInfo === null ? null : {
    root: { pid: rootInfo.tgid, start: rootInfo.start },
    filters: rootInfo.filters,
    sentry: Deno.pid,
    known: (pid) => callers.known(pid),
  };
  /** Connects the supervisor makes for callers whose socket blocks, until they finish. */
  let waiting: PendingConnect[] = [];
  let sweptAt = performance.now();
  const notif = new Uint8Array(NOTIF_SIZE);
  const response = new Uint8Array(SECCOMP_NOTIF_RESP_SIZE);
  let pending: SeccompRecord[] = [];
  let pendingCallers: CallerInfo[] = [];
  const callerIndex = new Map<CallerInfo, number>();
  let firstAt = 0;
  let reason: "stopped" | "hangup" = "stopped";

  const flush = () => {
    if (pending.length === 0) return;
    stats.batches++;
    stats.records += pending.length;
    post({
      type: "batch",
      records: pending,
      callers: pendingCallers,
      stats: structuredClone(stats),
    });
    pending = [];
    pendingCallers = [];
    callerIndex.clear();
    Atomics.store(control, 1, 0);
  };

  const handle = (n: SeccompNotif) => {
    stats.notifications++;
    const syscall = syscallName(n.nr);
    let caller = callers.lookup(n.pid);
    if (caller === null) {
      if (!listener.isValid(n.id)) {
        blind(stats, "caller_gone");
        return;
      }
      blind(stats, "unattributed");
      caller = { pid: n.pid, tid: n.pid, ppid: null, exe: null, cmdline: [] };
    }
    const aimed = decodeControl(n);
    if (aimed !== null) {
      guardControl(n, aimed, caller);
      return;
    }
    target.tid = n.pid;
    let read: SyscallRead;
    let actions: KernelAction[] = [];
    try {
      read = readSyscall(n, target);
      // execveat's dirfd: an exec through it is looked up through the caller's descriptor.
      const dirfd = syscall === "execveat" ? Number(BigInt.asIntN(32, n.args[0] ?? 0n)) : null;
      actions = read.actions.map((action) => toKernelAction(action, caller, { proc, dirfd }));
    } catch {
      // A decoder bug must not stop the loop (every filtered call would then fail): count it.
      read = { actions: [], failure: null };
      blind(stats, "undecodable");
    }
    // Everything read above is trusted only if the caller was still blocked in this very
    // notification: a dead caller could have let its tid be reused. No separate ID_VALID check
    // is needed for that: a caller blocked in the notification cannot die or be reused, and the
    // answer below succeeds only if the notification was still valid, so a record is kept (and
    // a decision takes effect) only for a caller that waited throughout.
    if (read.failure !== null) {
      blind(stats, read.failure === "memory" ? "unreadable_memory" : "unresolvable_directory");
    }
    let verdict = decide({ syscall, caller, actions, failure: read.failure });
    if (policy !== null && verdict.kind === "continue" && syscall === "connect") {
      // Decided on the copied address; when allowed, connected by the supervisor itself with
      // that very address, so a thread that rewrites it afterwards changes nothing.
      if (read.failure === "memory") verdict = { kind: "errno", errno: EFAULT };
      else if (read.failure === null) {
        const errno = decideActions(actions, { caller, policy });
        if (errno !== null) verdict = { kind: "errno", errno };
        else if (emulateConnect(n, { caller, actions })) return;
      }
    } else if (decider !== null && verdict.kind === "continue" && actions.length > 0) {
      const open = actions.length === 1 && actions[0]?.op === "open" && emulated.has(syscall)
        ? actions[0]
        : null;
      if (open !== null && open.op === "open") {
        // The supervisor opens the file itself and hands it over: decided on what it holds.
        const done = emulateOpen(n, { action: open, caller, policy: decider });
        if (done === null) {
          const errno = decideActions(actions, { caller, policy: decider });
          if (errno !== null) verdict = { kind: "errno", errno };
        } else {
          actions = [done.action];
          if (done.blocked) stats.denied++;
          if (done.answered) {
            stats.answered++;
            keep(caller, actions, done.blocked ? EACCES : undefined);
            return;
          }
          if (done.blocked) verdict = { kind: "errno", errno: EACCES };
        }
      } else {
        const errno = decideActions(actions, { caller, policy: decider });
        if (errno !== null) verdict = { kind: "errno", errno };
        else if (policy !== null && deniedMiss(actions, { caller, policy })) {
          // An exec of a file found missing, which the policy denies: failed here with the
          // kernel's own ENOENT rather than let through, so that a file that appears between
          // the look-up and the exec never runs unjudged.
          verdict = { kind: "errno", errno: ENOENT };
        }
      }
    }
    const answer = verdict.kind === "continue"
      ? { kind: "continue" as const }
      : { kind: "errno" as const, errno: verdict.errno };
    if (verdict.kind === "errno") {
      // The call never runs: journal it as failed with the errno Sentry gave it.
      actions = actions.map((a) =>
        "result" in a ? { ...a, result: -verdict.errno } : a
      ) as KernelAction[];
    }
    if (!listener.respond(encodeResponse({ id: n.id, answer }, response))) {
      blind(stats, "caller_gone");
      return;
    }
    stats.answered++;
    if (verdict.kind === "errno") stats.denied++;
    if (syscall === "execve" || syscall === "execveat") callers.execed(caller.pid);
    keep(caller, actions, verdict.kind === "errno" ? verdict.errno : undefined);
  };

  /** Queues the decoded actions of an answered call for the main thread. */
  const keep = (
    caller: CallerInfo,
    actions: KernelAction[],
    denied: number | undefined,
    aimed?: SeccompRecord["control"],
  ) => {
    if (actions.length === 0 && aimed === undefined) return;
    if (pending.length === 0) firstAt = performance.now();
    let index = callerIndex.get(caller);
    if (index === undefined) {
      index = pendingCallers.push(caller) - 1;
      callerIndex.set(caller, index);
    }
    const record: SeccompRecord = { ms: Date.now(), caller: index, actions };
    if (denied !== undefined) record.denied = denied;
    if (aimed !== undefined) record.control = aimed;
    pending.push(record);
    Atomics.store(control, 1, pending.length);
  };

  /**
   * Opens a file for the caller and answers with it (ADDFD), deciding on the file the
   * supervisor holds. Returns what happened (`answered` false: the call must still be answered,
   * with "continue" or the errno in `blocked`), or null when the open cannot be emulated (the
   * caller has another identity or root, or the file is special): then it is decided on its
   * arguments and let through with "continue".
   */
  const emulateOpen = (
    n: SeccompNotif,
    o: {
      action: Extract<KernelAction, { op: "open" }>;
      caller: CallerInfo;
      policy: CompiledPolicy;
    },
  ): { action: KernelAction; answered: boolean; blocked: boolean } | null => {
    const { action, caller } = o;
    const flags = action.flags;
    if ((flags & OPEN.O_TMPFILE) === OPEN.O_TMPFILE) return unemulated();
    const status = proc.readBytes(`/proc/${caller.tid}/status`);
    const who = status === null ? null : parseStatusIdentity(new TextDecoder().decode(status));
    // The supervisor's opens are checked with its own credentials: only for a caller with the
    // same ones, in the same root (a chroot or another mount namespace sees other files).
    if (
      who === null || who.fsuid !== me.uid || who.fsgid !== me.gid ||
      proc.readLink(`/proc/${caller.tid}/root`) !== "/" ||
      proc.readLink(`/proc/${caller.tid}/ns/mnt`) !== ownMountNs
    ) return unemulated();
    const path = callerProcPath(action.path, caller);
    const decideOn = (real: string, created: boolean | undefined, directory = false) => {
      // Opened with Sentry's own rights: never open what the agent's Landlock domain denies it.
      const creates = created === true;
      if (
        start.landlock != null &&
        !landlockAllowsOpen(start.landlock, { path: real, flags, directory, creates })
      ) return true;
      const event = callerEvent({
        ...action,
        path: real,
        ...(created === undefined ? {} : { created }),
      }, caller);
      return event !== null && blocks(event, o.policy);
    };
    const answer = (real: string, fd: number, created: boolean | undefined) => {
      let result = listener.addFd(n.id, { srcfd: fd, cloexec: (flags & OPEN.O_CLOEXEC) !== 0 });
      opener.close(fd);
      // The open returns the installed descriptor.
      if (
        result >= 0 &&
        !listener.respond(
          encodeResponse({ id: n.id, answer: { kind: "value", value: result } }, response),
        )
      ) result = -2;
      const done: KernelAction = {
        ...action,
        path: real,
        result: result >= 0 ? result : -EACCES,
        ...(created === undefined ? {} : { created }),
      };
      if (result < 0) blind(stats, "caller_gone");
      return { action: done, answered: result >= 0, blocked: false };
    };
    const fail = (errno: number) => {
      // The kernel's own outcome for the same path (ENOENT, ENOTDIR...): answer it as is.
      if (
        !listener.respond(encodeResponse({ id: n.id, answer: { kind: "errno", errno } }, response))
      ) {
        blind(stats, "caller_gone");
      }
      return { action: { ...action, result: -errno }, answered: true, blocked: false };
    };
    const refuse = (real: string) => ({
      action: { ...action, path: real, result: -EACCES },
      answered: false,
      blocked: true,
    });
    const plain = flags & ~(OPEN.O_CREAT | OPEN.O_EXCL | OPEN.O_NOFOLLOW | OPEN.O_CLOEXEC);
    for (let attempt = 0; attempt < 3; attempt++) {
      const held = opener.openPath(path, {
        nofollow: (flags & (OPEN.O_NOFOLLOW | OPEN.O_EXCL)) !== 0,
        directory: (flags & OPEN.O_DIRECTORY) !== 0,
      });
      if (held >= 0) {
        // The caller's own /proc entries keep the name every policy writes: /proc/self.
        const real = procSelf(opener.pathOf(held) ?? path, caller.pid, caller.tid);
        if ((flags & (OPEN.O_CREAT | OPEN.O_EXCL)) === (OPEN.O_CREAT | OPEN.O_EXCL)) {
          opener.close(held);
          return fail(17); // EEXIST
        }
        const type = opener.typeOf(held);
        if (real.startsWith(`/proc/${Deno.pid}/`) || (type !== "file" && type !== "directory")) {
          // A FIFO, a device or a socket would block or act on the supervisor's side; a path
          // that reached the supervisor's own /proc through a link names the wrong process.
          opener.close(held);
          return decided(o, real);
        }
        const created = (flags & OPEN.O_CREAT) !== 0 ? false : undefined;
        if (decideOn(real, created, type === "directory")) {
          opener.close(held);
          return refuse(real);
        }
        const fd = opener.reopen(held, plain);
        opener.close(held);
        return fd < 0 ? fail(-fd) : answer(real, fd, created);
      }
      if (held !== -2 || (flags & OPEN.O_CREAT) === 0) return fail(-held);
      // Not there, and O_CREAT: decide on the real directory and the new name, then create it
      // exclusively in the directory the supervisor holds.
      const { dir, name } = splitPath(path);
      const dirfd = opener.openPath(dir, { nofollow: false, directory: true });
      if (dirfd < 0) return fail(-dirfd);
      const realDir = opener.pathOf(dirfd) ?? dir;
      const real = realDir === "/" ? `/${name}` : `${realDir}/${name}`;
      if (decideOn(real, true)) {
        opener.close(dirfd);
        return refuse(real);
      }
      const mode = (modeOf(n, action.syscall) & ~who.umask) & 0o7777;
      const fd = opener.create(dirfd, { name, flags: plain, mode });
      opener.close(dirfd);
      if (fd >= 0) return answer(real, fd, true);
      // Created meanwhile by someone else (or a dangling symlink): look again.
      if (fd !== -17) return fail(-fd);
    }
    return unemulated();
  };

  /**
   * An open of a special file (FIFO, device, socket): decided on the real path the supervisor
   * saw, then let through with "continue" (counted: a racing thread could swap it meanwhile).
   */
  const decided = (
    o: {
      action: Extract<KernelAction, { op: "open" }>;
      caller: CallerInfo;
      policy: CompiledPolicy;
    },
    real: string,
  ) => {
    blind(stats, "unemulated_open");
    const action: KernelAction = { ...o.action, path: real };
    const event = callerEvent(action, o.caller);
    return { action, answered: false, blocked: event !== null && blocks(event, o.policy) };
  };
  /** An open the supervisor cannot make for this caller: decided on its arguments instead. */
  const unemulated = (): null => {
    blind(stats, "unemulated_open");
    return null;
  };

  /**
   * Sentry's guard, in every mode: a signal, trace or memory call aimed outside the agent's
   * tree fails with EPERM and becomes a `proc.control` record; one aimed inside runs. Decided on
   * the registers alone (and /proc), so no racing thread can change the target after the check.
   */
  const guardControl = (n: SeccompNotif, call: ControlCall, caller: CallerInfo) => {
    let outside: { pid: number | null; target: string } | null = null;
    if (tree === null) {
      if (call.signal !== 0) blind(stats, "unguarded_control");
    } else {
      const self = readTask(proc, caller.tid);
      const verdict = classifyControl(call, {
        view,
        tree,
        self: { pid: caller.pid, ppid: self?.ppid ?? caller.ppid, pgrp: self?.pgrp ?? null },
        pidfdTarget: call.target.kind === "pidfd"
          ? pidfdPid(proc, caller.tid, call.target.fd)
          : null,
      });
      if (!verdict.inside) outside = verdict;
    }
    const answer = outside === null
      ? { kind: "continue" as const }
      : { kind: "errno" as const, errno: EPERM };
    if (!listener.respond(encodeResponse({ id: n.id, answer }, response))) {
      blind(stats, "caller_gone");
      return;
    }
    stats.answered++;
    if (outside === null) return;
    stats.denied++;
    keep(caller, [], EPERM, {
      target: outside.target,
      detail: controlDetail(call, { targetPid: outside.pid, blocked: "EPERM" }),
    });
  };

  /**
   * Whether the supervisor's own path lookups see what the caller's would: the same fsuid and
   * fsgid, the same root and mount namespace. Null when not (or when /proc cannot say).
   */
  const sameView = (caller: CallerInfo) => {
    const status = proc.readBytes(`/proc/${caller.tid}/status`);
    const who = status === null ? null : parseStatusIdentity(new TextDecoder().decode(status));
    if (
      who === null || who.fsuid !== me.uid || who.fsgid !== me.gid ||
      proc.readLink(`/proc/${caller.tid}/root`) !== "/" ||
      proc.readLink(`/proc/${caller.tid}/ns/mnt`) !== ownMountNs
    ) return null;
    return who;
  };

  /** Answers a connect the supervisor made (or refused) with its result, and records it. */
  const answerConnect = (
    id: bigint,
    o: { caller: CallerInfo; actions: readonly KernelAction[]; result: number },
  ) => {
    const answer = o.result >= 0
      ? { kind: "value" as const, value: 0 }
      : { kind: "errno" as const, errno: -o.result };
    if (!listener.respond(encodeResponse({ id, answer }, response))) {
      blind(stats, "caller_gone");
      return;
    }
    stats.answered++;
    const done = o.actions.map((a) => ("result" in a ? { ...a, result: o.result } : a));
    keep(o.caller, done as KernelAction[], undefined);
  };

  /**
   * Makes an allowed connect in the supervisor, on the caller's own socket (pidfd_getfd), with
   * the address the supervisor copied and decided on. A socket that does not block gets the
   * kernel's answer at once (EINPROGRESS included); for one that blocks, the connect runs
   * non-blocking and the caller is answered when it finishes, while other notifications are
   * answered meanwhile. Returns false when it cannot be made here: then the call is let through
   * as decided (counted).
   */
  const emulateConnect = (
    n: SeccompNotif,
    o: { caller: CallerInfo; actions: readonly KernelAction[] },
  ): boolean => {
    const { caller, actions } = o;
    const first = actions[0];
    const copied = first !== undefined && first.op === "connect" ? first.addr : new Uint8Array(0);
    const plan = connectPlan({
      addr: copied,
      addrlen: Number(BigInt.asIntN(32, n.args[2] ?? 0n)),
      nullAddress: (n.args[1] ?? 0n) === 0n,
    });
    const give = (result: number) => {
      answerConnect(n.id, { caller, actions, result });
      return true;
    };
    const cannot = () => {
      blind(stats, "unemulated_connect");
      return false;
    };
    if (plan.kind === "error") return give(-plan.errno);
    const unix = plan.kind === "unix-relative" || plan.family !== "other";
    if (
      plan.kind === "direct" && plan.family === "unix-abstract" &&
      ((start.landlock?.scoped ?? 0) & SCOPE.ABSTRACT_UNIX_SOCKET) !== 0
    ) {
      // Landlock keeps the agent from abstract sockets outside its domain; the supervisor is
      // in no domain, so a connect it made would step over that wall.
      return cannot();
    }
    if (
      (plan.kind === "unix-relative" || plan.family === "unix-path") && sameView(caller) === null
    ) {
      // A path is looked up with the supervisor's rights and mounts: only for the same ones.
      return cannot();
    }
    const fd = sockets.take({
      pid: caller.pid,
      tid: caller.tid,
      fd: Number(BigInt.asIntN(32, n.args[0] ?? 0n)),
    });
    if (fd === -EBADF) return give(-EBADF);
    if (fd < 0) return cannot();
    if (!sockets.isSocket(fd)) {
      sockets.close(fd);
      return give(-ENOTSOCK);
    }
    let addr = plan.kind === "unix-relative" ? null : plan.addr;
    let dirfd = -1;
    if (plan.kind === "unix-relative") {
      dirfd = opener.openPath(`/proc/${caller.tid}/cwd`, { nofollow: false, directory: true });
      addr = dirfd < 0 ? null : unixSockaddrAt(`/proc/self/fd/${dirfd}`, plan.path);
      if (addr === null) {
        opener.close(dirfd);
        sockets.close(fd);
        return cannot();
      }
    }
    const flags = sockets.flags(fd);
    if (flags < 0 || addr === null) {
      opener.close(dirfd);
      sockets.close(fd);
      return flags < 0 ? give(flags) : cannot();
    }
    const blocking = (flags & O_NONBLOCK) === 0;
    // O_NONBLOCK belongs to the open file description, which the caller shares: it is set for
    // the connect call only, and put back before anything else runs on this thread.
    if (blocking) sockets.setFlags(fd, flags | O_NONBLOCK);
    const result = sockets.connect(fd, addr);
    if (blocking) sockets.setFlags(fd, flags);
    const step = blocking ? connectStep(result, { unix, again: false }) : null;
    if (step === null || step.kind === "answer") {
      opener.close(dirfd);
      sockets.close(fd);
      return give(step === null ? result : step.result);
    }
    const timeout = sockets.sendTimeoutMs(fd);
    const now = performance.now();
    waiting.push({
      id: n.id,
      fd,
      dirfd,
      addr,
      unix,
      flags,
      deadline: timeout > 0 ? now + timeout : null,
      retryAt: step.kind === "retry" ? now + CONNECT_RETRY_MS : null,
      caller,
      actions,
    });
    return true;
  };

  /** Settles waiting connects: finished (`ready`), due for a retry, timed out or abandoned. */
  const progressConnects = (ready: readonly boolean[]) => {
    const now = performance.now();
    const sweep = now - sweptAt >= CONNECT_SWEEP_MS;
    if (sweep) sweptAt = now;
    const still: PendingConnect[] = [];
    for (const [i, p] of waiting.entries()) {
      let result: number | null = null;
      if (ready[i] === true || (p.retryAt !== null && now >= p.retryAt)) {
        sockets.setFlags(p.fd, p.flags | O_NONBLOCK);
        const step = connectStep(sockets.connect(p.fd, p.addr), { unix: p.unix, again: true });
        sockets.setFlags(p.fd, p.flags);
        if (step.kind === "answer") result = step.result;
        else p.retryAt = step.kind === "retry" ? now + CONNECT_RETRY_MS : null;
      }
      if (result === null && p.deadline !== null && now >= p.deadline) {
        result = timeoutResult({ unix: p.unix });
      }
      if (result === null && sweep && !listener.isValid(p.id)) {
        // The caller was interrupted (a signal) or killed: the kernel dropped the notification;
        // a restarted connect comes as a new one and finds the connection under way.
        blind(stats, "caller_gone");
        closePending(p);
        continue;
      }
      if (result === null) {
        still.push(p);
        continue;
      }
      closePending(p);
      answerConnect(p.id, { caller: p.caller, actions: p.actions, result });
    }
    waiting = still;
  };

  const closePending = (p: PendingConnect) => {
    sockets.close(p.fd);
    opener.close(p.dirfd);
  };

  /** How long the loop may wait before a waiting connect needs it (ms). */
  const connectWaitMs = () => {
    const now = performance.now();
    let next = sweptAt + CONNECT_SWEEP_MS;
    for (const p of waiting) {
      if (p.retryAt !== null) next = Math.min(next, p.retryAt);
      if (p.deadline !== null) next = Math.min(next, p.deadline);
    }
    return Math.max(0, Math.min(next - now, start.batchMs));
  };

  try {
    const sync = start.syncWakeUp ? listener.setSyncWakeUp() : false;
    post({ type: "ready", syncWakeUp: sync, tid: gettid() });
    // Block in the receive itself, not in poll(): with SYNC_WAKE_UP the kernel then hands the
    // CPU straight from the caller to this thread. The main thread wakes it with a signal to
    // stop, or to hand over records that have waited too long (EINTR: "interrupted").
    while (Atomics.load(control, 0) === 0) {
      if (waiting.length > 0) {
        // Connects under way: wait on the listener and their sockets together.
        Atomics.store(control, 2, 1);
        const polled = pollListenerAndSockets(listener.fd, {
          sockets: waiting.map((p) => p.fd),
          timeoutMs: connectWaitMs(),
        });
        progressConnects(polled.ready);
        if (polled.listener === "hangup") {
          reason = "hangup";
          break;
        }
        if (polled.listener !== "readable") {
          if (
            pending.length > 0 &&
            (pending.length >= start.batchMax || performance.now() - firstAt >= start.batchMs)
          ) flush();
          continue;
        }
      } else Atomics.store(control, 2, 0);
      const got = listener.receive(notif);
      if (got === "ok") handle(decodeNotif(notif));
      else if (got === "gone") {
        // ENOENT: no process uses the filter any more, or a caller died while queued.
        if (listener.wait(0) === "hangup") {
          reason = "hangup";
          break;
        }
        blind(stats, "caller_gone");
      } else if (pending.length > 0) flush();
      if (
        pending.length > 0 &&
        (pending.length >= start.batchMax || performance.now() - firstAt >= start.batchMs)
      ) flush();
    }
    for (const p of waiting) closePending(p);
    waiting = [];
    flush();
    post({ type: "done", reason, stats: structuredClone(stats) });
  } catch (error) {
    flush();
    const message = error instanceof Error ? error.message : String(error);
    post({ type: "error", message, stats: structuredClone(stats) });
  } finally {
    // Closing the listener makes the kernel fail every filtered syscall of a tree that is still
    // running with ENOSYS: the gate fails closed.
    listener.close();
    callers.close();
  }
}

const O_CREAT = 0o100;
const EPERM = 1;
const ENOENT = 2;
const EBADF = 9;
const EFAULT = 14;
const ENOTSOCK = 88;
/** How often a unix connect whose listener's backlog is full is tried again (ms). */
const CONNECT_RETRY_MS = 5;
/** How often waiting connects are checked for callers that stopped waiting (ms). */
const CONNECT_SWEEP_MS = 500;

/** A connect the supervisor makes for a caller whose socket blocks, until it finishes. */
interface PendingConnect {
  /** The notification to answer. */
  id: bigint;
  /** The caller's socket, taken with pidfd_getfd. */
  fd: number;
  /** The caller's cwd (O_PATH) for a relative unix path, else -1. */
  dirfd: number;
  addr: Uint8Array;
  unix: boolean;
  /** The socket's file status flags as the caller had them. */
  flags: number;
  /** When SO_SNDTIMEO runs out (performance.now() ms), or null. */
  deadline: number | null;
  /** When to try a unix connect again (its listener's backlog was full), or null. */
  retryAt: number | null;
  caller: CallerInfo;
  actions: readonly KernelAction[];
}

/** What /proc says of a task, with its process group; null when it is gone. */
function readTask(proc: ProcReader, id: number): (TaskInfo & { pgrp: number }) | null {
  if (!Number.isInteger(id) || id <= 0) return null;
  const status = proc.readBytes(`/proc/${id}/status`);
  const stat = proc.readBytes(`/proc/${id}/stat`);
  if (status === null || stat === null) return null;
  const decoder = new TextDecoder();
  return parseTaskInfo(decoder.decode(status), decoder.decode(stat));
}

/** The processes of a process group, listed from /proc now. */
function processGroup(proc: ProcReader, pgid: number): number[] {
  const out: number[] = [];
  let entries: Iterable<Deno.DirEntry>;
  try {
    entries = Deno.readDirSync("/proc");
  } catch {
    return out;
  }
  for (const entry of entries) {
    if (!/^\d+$/.test(entry.name)) continue;
    const task = readTask(proc, Number(entry.name));
    if (task !== null && task.pgrp === pgid) out.push(task.tgid);
  }
  return out;
}

/** Whether an exec found missing (`result` -2) would be blocked if the file were there. */
function deniedMiss(
  actions: readonly KernelAction[],
  options: { caller: CallerInfo; policy: CompiledPolicy },
): boolean {
  const misses = actions.flatMap((a) =>
    a.op === "exec" && a.result === -2 ? [{ ...a, result: null }] : []
  );
  return misses.length > 0 && decideActions(misses, options) !== null;
}

/** The pid a pidfd of a thread names (`Pid:` in its fdinfo), or null (not a pidfd, or gone). */
function pidfdPid(proc: ProcReader, tid: number, fd: number): number | null {
  if (fd < 0) return null;
  const info = proc.readBytes(`/proc/${tid}/fdinfo/${fd}`);
  if (info === null) return null;
  const pid = /^Pid:\s*(-?\d+)/m.exec(new TextDecoder().decode(info))?.[1];
  return pid === undefined || Number(pid) <= 0 ? null : Number(pid);
}

function toKernelAction(
  action: SyscallAction,
  caller: CallerInfo,
  at: { proc: ProcReader; dirfd: number | null },
): KernelAction {
  const { proc } = at;
  const base = { pid: caller.pid, tid: caller.tid, result: null };
  if (action.op === "exec") {
    // An exec through a descriptor (fexecve of a memfd or of a deleted file, /proc/self/fd/N)
    // runs the file the descriptor holds: decided and journaled on it, looked up through it.
    const target = execTarget(action.path, {
      pid: caller.pid,
      tid: caller.tid,
      dirfd: at.dirfd,
      readLink: (path) => proc.readLink(path),
    });
    // A PATH search tries each directory: a file that is not there fails with ENOENT, and the
    // caller is still blocked, so say so (the sensor folds these misses as the eBPF tier does).
    const result = proc.exists(target.probe);
    // Only ENOENT and ENOTDIR say it is not there; EACCES and others say nothing.
    const missing = result === -2 || result === -20;
    return {
      ...action,
      ...base,
      path: target.path,
      ...(caller.ppid === null ? {} : { ppid: caller.ppid }),
      result: missing ? -2 : null,
    };
  }
  if (action.op === "open" && (action.flags & O_CREAT) !== 0) {
    // Whether this open creates the file: it does if the file is not there while the caller
    // waits (another process could create it in between; the outcome itself stays unknown).
    return { ...action, ...base, created: !existsFor(proc, caller.tid, action.path) };
  }
  return { ...action, ...base } as KernelAction;
}

// ---------------------------------------------------------------------------------------------
// The launcher's handover

function handover(start: HandoverStart, post: (message: HandoverMessage) => void): void {
  const control = new Int32Array(start.control);
  const finish = (state: number, message?: string) => {
    if (message !== undefined) post({ type: "failed", message });
    Atomics.store(control, 0, state);
    Atomics.notify(control, 0);
  };
  try {
    // Wait until the main thread has installed the filter and put the listener in control[1].
    post({ type: "ready" });
    while (Atomics.load(control, 0) !== HANDOVER.SEND) {
      Atomics.wait(control, 0, Atomics.load(control, 0), 1000);
    }
    const fd = Atomics.load(control, 1);
    sendWithFd(start.socketFd, { data: new TextEncoder().encode(`ok ${Deno.pid}\n`), fd });
    // The supervisor holds the listener now; wait for "go".
    const buffer = new Uint8Array(64);
    let text = "";
    for (;;) {
      const n = readSome(start.socketFd, buffer);
      if (n === 0) {
        finish(HANDOVER.FAILED, "Sentry's supervisor closed the control socket before go");
        return;
      }
      text += new TextDecoder().decode(buffer.subarray(0, n));
      if (text.includes("\n")) break;
    }
    if (text.trim() !== "go") {
      finish(HANDOVER.FAILED, `Unexpected answer from Sentry's supervisor: "${text.trim()}"`);
      return;
    }
    finish(HANDOVER.GO);
  } catch (error) {
    finish(HANDOVER.FAILED, error instanceof Error ? error.message : String(error));
  }
}

if ("WorkerGlobalScope" in globalThis) {
  const scope = globalThis as unknown as {
    postMessage(message: unknown): void;
    onmessage: ((event: MessageEvent) => void) | null;
    close(): void;
  };
  scope.onmessage = (event: MessageEvent<SuperviseStart | HandoverStart>) => {
    scope.onmessage = null;
    const start = event.data;
    if (start.role === "supervise") supervise(start, (m) => scope.postMessage(m));
    else handover(start, (m) => scope.postMessage(m));
  };
}
