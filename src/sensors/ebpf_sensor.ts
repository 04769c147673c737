import {
  decodeRecord,
  type EbpfCounters,
  EV,
  F,
  recordAction,
  RecordError,
  SYSCALL_NAMES,
} from "../platform/mod.ts";
import {
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
}

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
 * Loss is exact: the kernel counts every record it could not write (`dropped`). Blind spots are
 * counted with the kernel's own evidence: 32-bit syscalls, io_uring instances, forks that could
 * not be tracked, paths cut at their limits.
 */
export class EbpfSensor implements Sensor {
  readonly name = "ebpf";
  readonly #options: EbpfSensorOptions;
  readonly #counter = new StatsCounter("ebpf");
  readonly #context: KernelEventContext;
  #emit: ((event: SensorEvent) => void) | null = null;
  #records = 0;

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
      "32-bit (int 0x80) syscalls by the tree, which the kernel program does not decode",
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
    return stats;
  }

  #record(bytes: Uint8Array): void {
    this.#records++;
    let record;
    try {
      record = decodeRecord(bytes);
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
    const base = recordAction(record);
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
      default:
        action = { ...common, ...base, syscall } as KernelAction;
    }
    const event = toSensorEvent(action, this.#context);
    if (event === null) return;
    if (base.op === "open" && base.requested !== event.target && base.requested !== "") {
      event.detail.requested = base.requested;
    }
    this.#counter.counters.emitted++;
    this.#emit?.(event);
  }
}
