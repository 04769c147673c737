/**
 * Pure decoding of the proc connector's netlink datagrams (NETLINK_CONNECTOR, CN_IDX_PROC) into
 * fork, exec and exit records, and exact loss accounting from the per-CPU sequence numbers the
 * kernel stamps on every event.
 *
 * A datagram is one or more netlink messages: `nlmsghdr` (16 bytes), then `cn_msg` (20 bytes:
 * `cb_id {idx, val}`, `seq`, `ack`, `len`, `flags`), then `struct proc_event` at offset 36:
 * `what` (u32), `cpu` (u32), `timestamp_ns` (u64, CLOCK_MONOTONIC), then the event's data at
 * offset 16 of the event. The kernel sets `cn_msg.seq` from a per-CPU counter incremented for
 * every event it sends on that CPU (`send_msg()` in kernel/connector/cn_proc.c), so a jump in the
 * sequence of one CPU is exactly the number of events this socket never received.
 *
 * Everything here is native-endian, as the kernel writes it (little-endian on x86_64 and arm64).
 *
 * @module
 */

/** Size of `struct nlmsghdr`. */
export const NLMSG_HEADER_BYTES = 16;
/** Size of `struct cn_msg` (without its data). */
export const CN_MSG_BYTES = 20;
/** Where `struct proc_event` starts in a proc connector message. */
export const PROC_EVENT_OFFSET = NLMSG_HEADER_BYTES + CN_MSG_BYTES;

/** `nlmsg_type` of an error or acknowledgement from the netlink core. */
const NLMSG_ERROR = 2;
/** `cb_id` of the proc connector: CN_IDX_PROC, CN_VAL_PROC. */
const CN_IDX_PROC = 1;
const CN_VAL_PROC = 1;

/** `proc_event.what` values (include/uapi/linux/cn_proc.h). */
export const PROC_EVENT = {
  NONE: 0x0,
  FORK: 0x1,
  EXEC: 0x2,
  UID: 0x4,
  GID: 0x40,
  SID: 0x80,
  PTRACE: 0x100,
  COMM: 0x200,
  NONZERO_EXIT: 0x20000000,
  COREDUMP: 0x40000000,
  EXIT: 0x80000000,
} as const;

/** Fields every proc event carries. */
interface EventBase {
  /** The CPU the event was sent from; its sequence numbers are counted per CPU. */
  cpu: number;
  /** `cn_msg.seq`: the CPU's event counter, incremented for every event sent on that CPU. */
  seq: number;
  /** When the kernel sent it, in nanoseconds of CLOCK_MONOTONIC. */
  timestampNs: bigint;
}

/** A new task. `childPid !== childTgid` means a new thread, not a new process. */
export interface ForkRecord extends EventBase {
  type: "fork";
  /** The parent task's tid and tgid (`real_parent`: for a new thread, the process's parent). */
  parentPid: number;
  parentTgid: number;
  childPid: number;
  childTgid: number;
}

/** A successful execve in `pid` (after exec, the thread that exec'd has `pid === tgid`). */
export interface ExecRecord extends EventBase {
  type: "exec";
  pid: number;
  tgid: number;
}

/** A task ended. The process is gone when `pid === tgid` (its leader's exit). */
export interface ExitRecord extends EventBase {
  type: "exit";
  pid: number;
  tgid: number;
  /** `task->exit_code`: the raw wait(2) status (exit code << 8, or the killing signal). */
  status: number;
  /** The signal sent to the parent at exit (SIGCHLD, or -1 for a thread). */
  exitSignal: number;
  parentPid: number;
  parentTgid: number;
}

/**
 * Any other proc event (uid, gid, sid, ptrace, comm, coredump). It carries nothing Sentry uses,
 * but it consumes a sequence number, so it still counts for loss accounting.
 */
export interface OtherEventRecord extends EventBase {
  type: "other";
  /** `proc_event.what`. */
  what: number;
  /** `event_data`'s first two u32 (pid and tgid for every one of these kinds). */
  pid: number;
  tgid: number;
}

/**
 * The kernel's answer to a listen or ignore request (`what` PROC_EVENT_NONE), broadcast to every
 * listener. It goes through the same per-CPU counter as the events, so it takes part in the
 * sequence accounting.
 */
export interface AckRecord extends EventBase {
  type: "ack";
  /** 0 when the request worked, else a positive errno. */
  error: number;
}

/** A netlink error message (`NLMSG_ERROR`): not an event, and outside the sequence. */
export interface NetlinkErrorRecord {
  type: "error";
  /** A positive errno, or 0 for a plain acknowledgement. */
  error: number;
}

/** One decoded proc connector message. */
export type ProcConnectorRecord =
  | ForkRecord
  | ExecRecord
  | ExitRecord
  | OtherEventRecord
  | AckRecord
  | NetlinkErrorRecord;

/** What {@link decodeProcConnector} found in one datagram. */
export interface ProcConnectorBatch {
  records: ProcConnectorRecord[];
  /** Messages that were too short or not from the proc connector, skipped. */
  malformed: number;
}

/**
 * Decodes one datagram received from a proc connector socket into records, in order. Messages
 * that are truncated or belong to another connector are counted in `malformed` and skipped; the
 * decoder never throws on kernel input.
 */
export function decodeProcConnector(bytes: Uint8Array): ProcConnectorBatch {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const records: ProcConnectorRecord[] = [];
  let malformed = 0;
  let offset = 0;
  while (offset + NLMSG_HEADER_BYTES <= bytes.byteLength) {
    const length = view.getUint32(offset, true);
    const type = view.getUint16(offset + 4, true);
    if (length < NLMSG_HEADER_BYTES || offset + length > bytes.byteLength) {
      malformed++;
      break;
    }
    if (type === NLMSG_ERROR) {
      // struct nlmsgerr: int error (negative errno), then the request's header.
      const error = length >= NLMSG_HEADER_BYTES + 4 ? view.getInt32(offset + 16, true) : 0;
      records.push({ type: "error", error: -error });
    } else {
      const record = decodeMessage(view, offset, length);
      if (record === null) malformed++;
      else records.push(record);
    }
    // NLMSG_ALIGN: messages are padded to 4 bytes.
    offset += (length + 3) & ~3;
  }
  return { records, malformed };
}

function decodeMessage(view: DataView, start: number, length: number): ProcConnectorRecord | null {
  const cn = start + NLMSG_HEADER_BYTES;
  const event = start + PROC_EVENT_OFFSET;
  // proc_event: what, cpu, timestamp_ns, then event_data (at least 8 bytes for every kind).
  if (length < PROC_EVENT_OFFSET + 24) return null;
  if (view.getUint32(cn, true) !== CN_IDX_PROC || view.getUint32(cn + 4, true) !== CN_VAL_PROC) {
    return null;
  }
  const seq = view.getUint32(cn + 8, true);
  const dataLength = view.getUint16(cn + 16, true);
  if (PROC_EVENT_OFFSET + dataLength > length) return null;
  const what = view.getUint32(event, true);
  const cpu = view.getUint32(event + 4, true);
  const timestampNs = view.getBigUint64(event + 8, true);
  const data = event + 16;
  const u32 = (index: number): number => view.getUint32(data + index * 4, true);
  const i32 = (index: number): number => view.getInt32(data + index * 4, true);
  const has = (words: number): boolean => 16 + words * 4 <= dataLength;
  switch (what) {
    case PROC_EVENT.NONE:
      return { type: "ack", cpu, seq, timestampNs, error: u32(0) };
    case PROC_EVENT.FORK:
      if (!has(4)) return null;
      return {
        type: "fork",
        cpu,
        seq,
        timestampNs,
        parentPid: u32(0),
        parentTgid: u32(1),
        childPid: u32(2),
        childTgid: u32(3),
      };
    case PROC_EVENT.EXEC:
      return { type: "exec", cpu, seq, timestampNs, pid: u32(0), tgid: u32(1) };
    case PROC_EVENT.EXIT:
      if (!has(4)) return null;
      return {
        type: "exit",
        cpu,
        seq,
        timestampNs,
        pid: u32(0),
        tgid: u32(1),
        status: u32(2),
        exitSignal: i32(3),
        // parent_pid and parent_tgid were added in Linux 4.18; older kernels send 16 bytes.
        parentPid: has(6) ? u32(4) : 0,
        parentTgid: has(6) ? u32(5) : 0,
      };
    default:
      return { type: "other", cpu, seq, timestampNs, what, pid: u32(0), tgid: u32(1) };
  }
}

/**
 * Counts events lost by the socket from gaps in the per-CPU sequence numbers. Feed it every
 * record that has a `seq` (events and acks; not netlink errors) in the order received: within one CPU the kernel sends in sequence
 * order, so `seq - last - 1` events were lost whenever the sequence jumps. The first event of
 * each CPU only sets its baseline. The counter is 32-bit and wraps; a step backwards (or a jump
 * of more than 2^31) is not counted as loss but as `reordered`, which should stay 0.
 *
 * A loss is known only when the next event of its CPU arrives: events lost at the very end of
 * a reading stay uncounted until the host sends another event on that CPU (which any busy host
 * does within milliseconds). Events the kernel dropped for a listener's 6.6+ filter also leave
 * gaps, which is why Sentry listens to every kind.
 */
export class SequenceGaps {
  readonly #last = new Map<number, number>();
  #lost = 0;
  #reordered = 0;
  #seen = 0;

  /** Records one event's sequence number and returns how many events were lost just before it. */
  observe(record: { cpu: number; seq: number }): number {
    this.#seen++;
    const last = this.#last.get(record.cpu);
    if (last === undefined) {
      this.#last.set(record.cpu, record.seq);
      return 0;
    }
    const step = (record.seq - last) >>> 0;
    if (step === 0 || step > 0x80000000) {
      this.#reordered++;
      return 0;
    }
    this.#last.set(record.cpu, record.seq);
    const lost = step - 1;
    this.#lost += lost;
    return lost;
  }

  /** Events lost so far, summed over every CPU. */
  get lost(): number {
    return this.#lost;
  }

  /** Events that arrived out of sequence order (duplicates or steps backwards). */
  get reordered(): number {
    return this.#reordered;
  }

  /** Events observed. */
  get seen(): number {
    return this.#seen;
  }

  /** The CPUs seen so far. */
  get cpus(): number {
    return this.#last.size;
  }
}
