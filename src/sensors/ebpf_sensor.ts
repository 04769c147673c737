import {
  decodeRecord,
  type EbpfAction,
  type EbpfCounters,
  EV,
  F,
  recordAction,
  RecordError,
  SYSCALL_NAMES,
} from "../platform/mod.ts";
import {
  type ControlTarget,
  type KernelAction,
  type KernelEventContext,
  type ProcessTable,
  toSensorEvent,
} from "./kernel_action.ts";
import { type Sensor, type SensorEvent, type SensorStats, StatsCounter } from "./sensor.ts";

/** What the eBPF sensor needs of the loaded program (`EbpfTracer` in src/platform). */
export interface KernelTracer {
  /** Tracks a process and, through the kernel's fork hook, every child it forks. */
  track(pid: number): void;
  /** Hands every waiting record to `onRecord`, synchronously; returns how many. */
  drain(onRecord: (bytes: Uint8Array) => void): number;
  /** Waits for records on another thread, up to `timeoutMs`. */
  wait(timeoutMs: number): Promise<boolean>;
  /** The program's per-CPU counters, summed. */
  counters(): EbpfCounters;
  /** CLOCK_BOOTTIME to wall clock, in nanoseconds. */
  readonly bootOffsetNs: bigint;
  /** Whether the kernel tracks a process (it is the tree's, and alive). */
  isTracked(pid: number): boolean;
  /** A control's target as /proc shows it now, or null when it is gone. */
  describe(pid: number): { tgid: number; comm: string; pgrp: number; ppid: number } | null;
  /** The host pid a process's pidfd holds (its fdinfo), or null. */
  pidfdTarget(pid: number, fd: number): number | null;
  /** The live members of a process group. */
  groupMembers(pgid: number): number[];
}

/** The decoded form of a control record. */
type ControlRecordAction = Extract<EbpfAction, { op: "control" }>;

const ESRCH = 3;
const EBADF = 9;
/** At most this many (caller, target) pairs are remembered to journal a probe once. */
const PROBES_KEPT = 4096;
/** How long a process group's members, read from /proc, are taken as current. */
const GROUP_SCAN_MS = 50;
/** x86_64 sendmmsg: its records, one per message, are journaled once per distinct address. */
const NR_SENDMMSG = 307;
/** At most this many threads' last sendmmsg calls are remembered to journal each address once. */
const MMSG_CALLS_KEPT = 1024;

/** The eBPF sensor's settings. */
export interface EbpfSensorOptions {
  tracer: KernelTracer;
  table: ProcessTable;
  /** Ports that make a connection a `db.connect`. */
  databasePorts: ReadonlySet<number>;
  /** Called with every new process of the tree (the poll tree rescans to take it in at once). */
  onFork?: (pid: number, ppid: number) => void;
  /** How long one wait for records lasts, in milliseconds; default 50. */
  waitMs?: number;
}

/**
 * The eBPF tier's sensor. The kernel filters the tree (tracked tgids, inherited at fork) and
 * records every open, delete, rename, link, connect, exec and exit with its pid and result; this
 * sensor decodes the ring buffer into events. It waits for records on a pool thread and decodes
 * on the main thread, in batches, and drains the buffer to the last record when it stops.
 *
 * Signals, traces, memory accesses and fds taken (kill, tkill, tgkill, rt_sigqueueinfo,
 * rt_tgsigqueueinfo, pidfd_send_signal, pidfd_getfd, ptrace, process_vm_readv/writev) are
 * classified: aimed within the tree, they are the agent's own business and not journaled;
 * aimed outside (Sentry, its watchdog, any other program, a group holding one, every process),
 * they are `proc.control` events, with the kernel's answer (`blocked: "EPERM"` when refused).
 *
 * A sendmmsg is journaled once per distinct address it sent to, as the seccomp tier does: the
 * kernel writes one record per message. A 32-bit (int 0x80) file, connect or sendto call is
 * journaled as its x86_64 counterpart with `detail.abi` "i386".
 *
 * Loss is exact: the kernel counts every record it could not write (`dropped`). Blind spots are
 * counted with the kernel's own evidence: 32-bit syscalls (every one, decoded or not), io_uring
 * instances, forks that could not be tracked, paths cut at their limits.
 */
export class EbpfSensor implements Sensor {
  readonly name = "ebpf";
  readonly #options: EbpfSensorOptions;
  readonly #counter = new StatsCounter("ebpf");
  readonly #context: KernelEventContext;
  #emit: ((event: SensorEvent) => void) | null = null;
  #records = 0;
  /** Existence probes (signal 0) journaled already, by caller, target and outcome. */
  readonly #probes = new Set<string>();
  /** Process groups' members by pgid, with when they were read. */
  readonly #groups = new Map<number, { at: number; members: number[] }>();
  /** Each thread's last sendmmsg call (its records share its time) and the addresses it sent to. */
  readonly #mmsg = new Map<number, { bootNs: bigint; seen: Set<string> }>();

  /** Sets up the sensor; the program is already loaded and tracks the tree. */
  constructor(options: EbpfSensorOptions) {
    this.#options = options;
    this.#context = {
      sensor: this.name,
      table: options.table,
      databasePorts: options.databasePorts,
    };
  }

  /** Reads records until the signal aborts, then drains what is left. */
  async start(emit: (event: SensorEvent) => void, signal: AbortSignal): Promise<void> {
    this.#emit = emit;
    const waitMs = this.#options.waitMs ?? 50;
    while (!signal.aborted) {
      await this.#options.tracer.wait(waitMs);
      this.drain();
    }
    // The last actions of the tree are in the buffer already: read to the end.
    while (this.drain() > 0);
  }

  /** Decodes every waiting record now; returns how many there were. */
  drain(): number {
    const n = this.#options.tracer.drain((bytes) => this.#record(bytes));
    this.#counter.counters.polls++;
    return n;
  }

  /** Records decoded so far. */
  get records(): number {
    return this.#records;
  }

  /** The sensor's counters, with the kernel's drop count and blind spots. */
  stats(): SensorStats {
    const k = this.#options.tracer.counters();
    const stats = this.#counter.snapshot();
    stats.dropped = k.drops;
    const spot = (id: string, reason: string, count: number) => {
      if (count > 0) stats.blindSpots.push({ id, reason, count });
    };
    spot(
      "compat_syscalls",
      "32-bit (int 0x80) syscalls by the tree, every one: their file, connect and sendto calls are journaled, the others (signals, traces, sendmsg) are not decoded",
      k.compat,
    );
    spot(
      "io_uring",
      "io_uring instances set up by the tree: file and network I/O submitted through them bypasses the syscall hooks",
      k.ioUring,
    );
    spot(
      "untracked_forks",
      "processes forked by the tree that the kernel could not track (its table was full)",
      k.untracked,
    );
    spot(
      "untracked_threads",
      "threads of the tree the kernel could not note (its table was full): a signal or trace aimed at one is classified from /proc",
      k.threadsLost,
    );
    return stats;
  }

  /**
   * The live members of a process group, from a scan of /proc at most every
   * {@link GROUP_SCAN_MS} per group: a flood of signals to one foreign group costs one scan per
   * window, not one per signal.
   */
  #groupMembers(pgid: number): number[] {
    const now = performance.now();
    const cached = this.#groups.get(pgid);
    if (cached !== undefined && now - cached.at < GROUP_SCAN_MS) return cached.members;
    const members = this.#options.tracer.groupMembers(pgid);
    if (this.#groups.size > 256) this.#groups.clear();
    this.#groups.set(pgid, { at: now, members });
    return members;
  }

  /**
   * Classifies a control record's target. A target of the tree (the kernel found it in its
   * tables at sys_enter, or /proc names a tracked process now) is the agent's own business:
   * null, nothing is journaled. So is a target that does not exist (ESRCH, and /proc has no
   * such process). What lies outside, or cannot be told inside, is returned to be journaled;
   * what cannot be classified at all (a pid numbered in a child pid namespace, a pidfd that
   * cannot be read) is counted as a blind spot.
   */
  #control(
    c: ControlRecordAction,
    caller: number,
  ): Omit<Extract<KernelAction, { op: "control" }>, "pid" | "tid" | "ts"> | null {
    const t = this.#options.tracer;
    // PTRACE_TRACEME names no target: it asks the caller's parent to trace it.
    if (c.request === "PTRACE_TRACEME") return null;
    if (c.inside) return null;
    // A process is the tree's while the kernel tracks it; a child that has exited (a zombie, no
    // longer tracked) until its parent reaps it, which a kill may race with.
    const inTree = (pid: number, info = t.describe(pid)) =>
      t.isTracked(pid) || (info !== null && info.ppid > 0 && t.isTracked(info.ppid));
    let target: ControlTarget;
    if (c.scope === "all") {
      target = { scope: "all" };
    } else {
      let pid = c.targetPid;
      if (pid === null && c.pidfd !== undefined) {
        // The kernel could not read the pidfd's struct pid: its fdinfo says, while it is open.
        if (c.result === -EBADF) return null;
        pid = t.pidfdTarget(caller, c.pidfd);
        if (pid === null) {
          this.#counter.blind(
            "unresolved_pidfd",
            "signals sent through a pidfd whose target could not be read: not journaled",
          );
          return null;
        }
      }
      if (c.scope === "group") {
        const pgid = c.group ?? (pid === null ? null : t.describe(pid)?.pgrp ?? null);
        if (pgid === null) return this.#namespaced();
        // A group whose leader is the tree's is the tree's: only a process's own children can be
        // moved into a group of its session, and `run` starts the agent in a session of its own.
        // (Judged member by member, a fork that just hopped away looks adopted by Sentry.)
        // Decided before any /proc scan: an agent that signals its own group thousands of times
        // a second (`killpg`) cost a full scan of /proc each, and starved the session.
        if (t.isTracked(pgid)) return null;
        const members = this.#groupMembers(pgid);
        const outside = members.filter((m) => !inTree(m));
        if (members.length > 0 && outside.length === 0) return null;
        // An empty group: it had no members (ESRCH), or they are gone.
        if (members.length === 0 && c.result === -ESRCH) return null;
        if (members.length === 0) {
          // Gone before /proc could be read: who got the signal cannot be told now.
          this.#counter.blind(
            "group_gone",
            "signals to a process group whose members were gone before they could be read",
          );
          return null;
        }
        target = {
          scope: "group",
          pgid,
          outside: outside.map((m) => ({ pid: m, comm: t.describe(m)?.comm ?? null })),
        };
      } else {
        if (pid === null) {
          if (c.namespaced) return this.#namespaced();
          // A pid of 0 or less names no process here (ptrace, tkill and the like fail).
          return null;
        }
        const info = t.describe(pid);
        const tgid = c.targetTgid ?? info?.tgid ?? pid;
        if (inTree(tgid, info)) return null;
        if (info === null && c.result === -ESRCH) return null;
        const tid = pid !== tgid ? pid : c.tid !== undefined && c.tid !== tgid ? c.tid : undefined;
        target = {
          scope: "process",
          pid: tgid,
          ...(tid === undefined ? {} : { tid }),
          comm: info?.comm ?? null,
        };
      }
    }
    if (c.signal === "0") {
      // A probe changes nothing: journal it once per caller, target and outcome.
      const key = `${caller}>${JSON.stringify(target)}:${c.result >= 0 ? "ok" : c.result}`;
      if (this.#probes.has(key)) {
        this.#counter.counters.deduplicated++;
        return null;
      }
      if (this.#probes.size >= PROBES_KEPT) this.#probes.clear();
      this.#probes.add(key);
    }
    return {
      op: "control",
      syscall: c.syscall,
      target,
      ...(c.pidfd === undefined ? { arg: c.arg } : { pidfd: c.pidfd }),
      ...(c.signal === undefined ? {} : { signal: c.signal }),
      ...(c.request === undefined ? {} : { request: c.request }),
      ...(c.fd === undefined ? {} : { fd: c.fd }),
      result: c.result,
    };
  }

  #namespaced(): null {
    this.#counter.blind(
      "namespaced_control",
      "signals and traces sent from a child pid namespace by pid number: the number is that namespace's, and the target is not classified",
    );
    return null;
  }

  /** Whether a sendmmsg record repeats an address its call sent to already. */
  #repeatedMessage(record: { tid: number; bootNs: bigint }, addr: Uint8Array): boolean {
    let call = this.#mmsg.get(record.tid);
    if (call === undefined || call.bootNs !== record.bootNs) {
      if (this.#mmsg.size >= MMSG_CALLS_KEPT) this.#mmsg.clear();
      call = { bootNs: record.bootNs, seen: new Set() };
      this.#mmsg.set(record.tid, call);
    }
    const key = addr.join(",");
    if (call.seen.has(key)) return true;
    call.seen.add(key);
    return false;
  }

  #record(bytes: Uint8Array): void {
    this.#records++;
    let record;
    let base;
    try {
      record = decodeRecord(bytes);
      base = recordAction(record);
    } catch (error) {
      if (!(error instanceof RecordError)) throw error;
      this.#counter.blind("undecodable", "kernel records that could not be decoded");
      return;
    }
    if ((record.flags & F.DEEP) !== 0) {
      this.#counter.blind(
        "path_too_deep",
        "paths deeper than the kernel walk's limit, journaled without their first components",
      );
    }
    if ((record.flags & 0xf) !== 0) {
      this.#counter.blind(
        "field_truncated",
        "paths or command lines cut at the kernel program's limit (4096 bytes)",
      );
    }
    if (base === null) {
      this.#counter.blind("unknown_record", "kernel records of an unknown type");
      return;
    }
    // A failed exec with ENOENT or ENOTDIR is a miss of a PATH search (the shell and execvp try
    // each directory): no program ran, and the successful exec that follows is recorded.
    if (record.type === EV.EXEC_FAILED && (record.ret === -2 || record.ret === -20)) {
      this.#counter.counters.deduplicated++;
      return;
    }
    if (
      record.nr === NR_SENDMMSG && base.op === "sendto" && this.#repeatedMessage(record, base.addr)
    ) {
      this.#counter.counters.deduplicated++;
      return;
    }
    const ts = new Date(Number((record.bootNs + this.#options.tracer.bootOffsetNs) / 1_000_000n))
      .toISOString();
    const syscall = SYSCALL_NAMES[record.nr] ?? `syscall ${record.nr}`;
    const common = { pid: record.pid, tid: record.tid, ts };
    let action: KernelAction;
    switch (base.op) {
      case "fork":
        action = { ...common, op: "fork", ppid: base.ppid };
        this.#options.onFork?.(record.pid, base.ppid);
        break;
      case "exit":
        action = { ...common, op: "exit", status: base.status };
        break;
      case "exec":
        action = {
          ...common,
          op: "exec",
          ppid: record.ppid,
          path: base.path.startsWith("/") || base.exe === undefined ? base.path : base.exe,
          ...(base.exe === undefined ? {} : { exe: base.exe }),
          argv: base.argv,
          result: base.result,
          syscall: record.type === EV.EXEC ? "execve" : syscall,
        };
        break;
      case "control": {
        const control = this.#control(base, record.pid);
        if (control === null) return;
        action = { ...common, ...control };
        break;
      }
      default:
        action = { ...common, ...base, syscall } as KernelAction;
    }
    const event = toSensorEvent(action, this.#context);
    if (event === null) return;
    if (base.op === "open" && base.requested !== event.target && base.requested !== "") {
      event.detail.requested = base.requested;
    }
    if ((record.flags & F.COMPAT) !== 0) event.detail.abi = "i386";
    this.#counter.counters.emitted++;
    this.#emit?.(event);
  }
}
