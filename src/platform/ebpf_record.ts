/**
 * The records of Sentry's eBPF program (`bpf/sentry.bpf.c`) and their decoder: a pure function
 * over the bytes of one ring-buffer record, tested on captured samples.
 *
 * A record is a 56-byte header, then up to four variable fields, back to back, whose lengths
 * the header gives:
 *
 * | offset | size | field                                                            |
 * | ------ | ---- | ---------------------------------------------------------------- |
 * | 0      | u16  | type (`EV_*`)                                                    |
 * | 2      | u16  | flags (`F_*`)                                                    |
 * | 4      | u32  | syscall number (x86_64)                                          |
 * | 8      | u32  | pid (thread group id, host namespace)                            |
 * | 12     | u32  | tid                                                              |
 * | 16     | u32  | ppid                                                             |
 * | 20     | u32  | aux32: the mode of an open, the old pid of an exec               |
 * | 24     | u64  | time, CLOCK_BOOTTIME nanoseconds                                 |
 * | 32     | s64  | the syscall's return value (-errno on failure)                   |
 * | 40     | u64  | aux: open flags, renameat2/linkat flags, an exit's wait status   |
 * | 48     | u16×4| lengths of fields 0 to 3                                         |
 *
 * @module
 */

/** Record types, as in `sentry.bpf.c`. */
export const EV = {
  OPEN: 1,
  UNLINK: 2,
  RMDIR: 3,
  RENAME: 4,
  LINK: 5,
  SYMLINK: 6,
  CONNECT: 7,
  SENDTO: 8,
  EXEC: 9,
  EXEC_FAILED: 10,
  FORK: 11,
  EXIT: 12,
} as const;

/** Header flags, as in `sentry.bpf.c`. */
export const F = {
  /** Field i was cut at its limit: bit i for fields 0 to 3. */
  TRUNC0: 1 << 0,
  /** Field 0 (field 1 for an exec) is the full path of the opened or executed file. */
  RESOLVED: 1 << 4,
  /** Field 0 is the base directory of a relative name in field 1. */
  DIR: 1 << 5,
  /** Field 2 is the base directory of a relative name in field 3. */
  DIR2: 1 << 6,
  /** A path walk stopped at its depth limit: the path lacks its first components. */
  DEEP: 1 << 7,
  /** The open created the file (the kernel's FMODE_CREATED). */
  CREATED: 1 << 8,
} as const;

/** The size of a record's header in bytes. */
export const HEADER_SIZE = 56;

/** The slots of the program's per-CPU `counters` map. */
export const COUNTER = {
  DROPS: 0,
  UNTRACKED: 1,
  COMPAT: 2,
  IO_URING: 3,
  EMITTED: 4,
  PENDING_LOST: 5,
} as const;

/** How many slots the `counters` map has. */
export const COUNTER_SLOTS = 6;

/** One decoded record, before it becomes a kernel action. */
export interface EbpfRecord {
  type: number;
  flags: number;
  nr: number;
  pid: number;
  tid: number;
  ppid: number;
  aux32: number;
  /** CLOCK_BOOTTIME, nanoseconds. */
  bootNs: bigint;
  ret: number;
  aux: bigint;
  fields: Uint8Array[];
}

/** Why a record could not be decoded. */
export class RecordError extends RangeError {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "RecordError";
  }
}

/**
 * Decodes one ring-buffer record. The fields are views into `bytes`: copy them if the buffer is
 * reused. Throws a {@link RecordError} when the record is shorter than its header says.
 */
export function decodeRecord(bytes: Uint8Array): EbpfRecord {
  if (bytes.length < HEADER_SIZE) {
    throw new RecordError(`Record of ${bytes.length} bytes is shorter than its header`);
  }
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const fields: Uint8Array[] = [];
  let off = HEADER_SIZE;
  for (let i = 0; i < 4; i++) {
    const len = v.getUint16(48 + i * 2, true);
    if (off + len > bytes.length) {
      throw new RecordError(
        `Record field ${i} of ${len} bytes runs past the record's ${bytes.length} bytes`,
      );
    }
    fields.push(bytes.subarray(off, off + len));
    off += len;
  }
  return {
    type: v.getUint16(0, true),
    flags: v.getUint16(2, true),
    nr: v.getUint32(4, true),
    pid: v.getUint32(8, true),
    tid: v.getUint32(12, true),
    ppid: v.getUint32(16, true),
    aux32: v.getUint32(20, true),
    bootNs: v.getBigUint64(24, true),
    ret: Number(v.getBigInt64(32, true)),
    aux: v.getBigUint64(40, true),
    fields,
  };
}

/** x86_64 syscall names of the numbers the program records. */
export const SYSCALL_NAMES: Readonly<Record<number, string>> = {
  2: "open",
  42: "connect",
  44: "sendto",
  46: "sendmsg",
  59: "execve",
  82: "rename",
  84: "rmdir",
  85: "creat",
  86: "link",
  87: "unlink",
  88: "symlink",
  257: "openat",
  263: "unlinkat",
  264: "renameat",
  265: "linkat",
  266: "symlinkat",
  316: "renameat2",
  322: "execveat",
  437: "openat2",
};

const decoder = new TextDecoder();

function text(bytes: Uint8Array | undefined): string {
  return bytes === undefined ? "" : decoder.decode(bytes);
}

/** Joins a base directory and a name as given: an absolute name stands alone. */
function joinDir(dir: string, name: string): string {
  if (name.startsWith("/") || dir === "") return name;
  return dir.endsWith("/") ? dir + name : `${dir}/${name}`;
}

/** The path a record's field pair names: dir + name, or the name alone when it is absolute. */
function pathOf(record: EbpfRecord, dirField: number, nameField: number, dirFlag: number): string {
  const name = text(record.fields[nameField]);
  if ((record.flags & dirFlag) === 0) return name;
  return joinDir(text(record.fields[dirField]), name);
}

/**
 * Rewrites `/proc/<pid>/...` to `/proc/self/...` when `<pid>` is the acting process, and
 * `/proc/<pid>/task/<tid>/...` to `/proc/thread-self/...` for its own thread. The kernel
 * reports the resolved path (`/proc/self` is a symlink), and policies name a process's view of
 * itself as `/proc/self`, as every program spells it.
 */
export function procSelf(path: string, pid: number, tid: number): string {
  if (!path.startsWith("/proc/")) return path;
  const own = `/proc/${pid}`;
  if (path !== own && !path.startsWith(`${own}/`)) return path;
  const rest = path.slice(own.length);
  const task = `/task/${tid}`;
  if (rest === task || rest.startsWith(`${task}/`)) {
    return `/proc/thread-self${rest.slice(task.length)}`;
  }
  return `/proc/self${rest}`;
}

/** Splits the NUL-separated argument area of a process into its arguments. */
export function splitArgv(bytes: Uint8Array): string[] {
  if (bytes.length === 0) return [];
  const args = decoder.decode(bytes).split("\0");
  if (args.at(-1) === "") args.pop();
  return args;
}

/** A decoded record in the kernel tiers' common form; see `KernelAction` in src/sensors. */
export type EbpfAction =
  | {
    op: "open";
    path: string;
    requested: string;
    flags: number;
    /** Known for a successful open: whether it created the file. */
    created?: boolean;
    result: number;
  }
  | { op: "unlink" | "rmdir"; path: string; result: number }
  | { op: "rename" | "link" | "symlink"; from: string; to: string; result: number }
  | { op: "connect" | "sendto"; addr: Uint8Array; result: number }
  | { op: "exec"; path: string; exe?: string; argv: string[]; result: number }
  | { op: "fork"; ppid: number }
  | { op: "exit"; status: number };

/**
 * What a record says happened, with its paths made whole: a resolved path when the kernel had
 * one, else the base directory joined to the name as given. Returns null for an unknown type.
 */
export function recordAction(record: EbpfRecord): EbpfAction | null {
  const { pid, tid } = record;
  const self = (p: string) => procSelf(p, pid, tid);
  switch (record.type) {
    case EV.OPEN: {
      const requested = text(record.fields[1]);
      const path = (record.flags & F.RESOLVED) !== 0
        ? text(record.fields[0])
        : pathOf(record, 0, 1, F.DIR);
      return {
        op: "open",
        path: self(path),
        requested,
        flags: Number(record.aux & 0xffffffffn),
        ...(record.ret >= 0 ? { created: (record.flags & F.CREATED) !== 0 } : {}),
        result: record.ret,
      };
    }
    case EV.UNLINK:
    case EV.RMDIR:
      return {
        op: record.type === EV.RMDIR ? "rmdir" : "unlink",
        path: self(pathOf(record, 0, 1, F.DIR)),
        result: record.ret,
      };
    case EV.RENAME:
    case EV.LINK:
    case EV.SYMLINK: {
      const op = record.type === EV.RENAME
        ? "rename"
        : record.type === EV.LINK
        ? "link"
        : "symlink";
      return {
        op,
        from: op === "symlink" ? text(record.fields[1]) : self(pathOf(record, 0, 1, F.DIR)),
        to: self(pathOf(record, 2, 3, F.DIR2)),
        result: record.ret,
      };
    }
    case EV.CONNECT:
    case EV.SENDTO:
      return {
        op: record.type === EV.CONNECT ? "connect" : "sendto",
        addr: record.fields[0] ?? new Uint8Array(),
        result: record.ret,
      };
    case EV.EXEC: {
      const exe = (record.flags & F.RESOLVED) !== 0 ? text(record.fields[1]) : undefined;
      return {
        op: "exec",
        path: text(record.fields[0]),
        ...(exe === undefined ? {} : { exe }),
        argv: splitArgv(record.fields[2] ?? new Uint8Array()),
        result: 0,
      };
    }
    case EV.EXEC_FAILED: {
      const path = pathOf(record, 0, 1, F.DIR);
      return { op: "exec", path, argv: [], result: record.ret };
    }
    case EV.FORK:
      return { op: "fork", ppid: record.ppid };
    case EV.EXIT:
      return { op: "exit", status: Number(record.aux & 0xffffffffn) };
  }
  return null;
}

/** Sums a per-CPU counter's values (one little-endian u64 per possible CPU). */
export function sumPerCpu(bytes: Uint8Array): number {
  const v = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let total = 0n;
  for (let off = 0; off + 8 <= bytes.length; off += 8) total += v.getBigUint64(off, true);
  return Number(total);
}
