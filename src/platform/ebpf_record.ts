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
 * | 4      | u32  | syscall number (x86_64; a 32-bit call's counterpart, `F.COMPAT`) |
 * | 8      | u32  | pid (thread group id, host namespace)                            |
 * | 12     | u32  | tid                                                              |
 * | 16     | u32  | ppid                                                             |
 * | 20     | u32  | aux32: an open's mode, an exec's old pid, a sendmmsg's message   |
 * | 24     | u64  | time, CLOCK_BOOTTIME nanoseconds                                 |
 * | 32     | s64  | the syscall's return value (-errno on failure)                   |
 * | 40     | u64  | aux: open flags, renameat2/linkat flags, an exit's wait status   |
 * | 48     | u16×4| lengths of fields 0 to 3                                         |
 *
 * A control record (`EV.CONTROL`: a signal, trace, memory access or fd taken, aimed at another
 * process) has one field of {@link CONTROL_SIZE} bytes, the target as the kernel resolved it at
 * sys_enter (`struct ctl`):
 *
 * | offset | size | field                                                            |
 * | ------ | ---- | ---------------------------------------------------------------- |
 * | 0      | s64  | the target as passed: a pid with its sign (kill), or a pidfd     |
 * | 8      | u64  | the signal, or the ptrace request                                |
 * | 16     | u32  | the target's host pid (a tid for a thread), with `F.TARGET`      |
 * | 20     | u32  | its thread group, when the kernel knows it (else 0)              |
 * | 24     | u32  | the caller's process group (host), which `kill(0, …)` aims at    |
 * | 28     | u32  | the caller's pid namespace level: above 0, the pid is its own    |
 *
 * A sendmmsg (x86_64 307) writes one sendto record per message sent that names an address,
 * each with the bytes it sent as its result and its index in aux32; the records of one call
 * share its time.
 *
 * Its header's aux32 holds tgkill's and rt_tgsigqueueinfo's tid and pidfd_getfd's fd; aux holds
 * pidfd_send_signal's flags.
 *
 * @module
 */

import { signalName } from "./kernel_abi.ts";

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
  CONTROL: 13,
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
  /** A control's target belongs to the tracked tree (a tracked process or one of its threads). */
  INSIDE: 1 << 9,
  /** A control's target pid is the kernel's resolution, in the host's numbering. */
  TARGET: 1 << 10,
  /** A 32-bit (int 0x80) call, recorded under its x86_64 counterpart's number. */
  COMPAT: 1 << 11,
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
  THREADS_LOST: 6,
} as const;

/** How many slots the `counters` map has. */
export const COUNTER_SLOTS = 7;

/** The size of a control record's one field (`struct ctl`). */
export const CONTROL_SIZE = 32;

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
  62: "kill",
  82: "rename",
  84: "rmdir",
  85: "creat",
  86: "link",
  87: "unlink",
  88: "symlink",
  101: "ptrace",
  129: "rt_sigqueueinfo",
  200: "tkill",
  234: "tgkill",
  257: "openat",
  263: "unlinkat",
  264: "renameat",
  265: "linkat",
  266: "symlinkat",
  297: "rt_tgsigqueueinfo",
  307: "sendmmsg",
  310: "process_vm_readv",
  311: "process_vm_writev",
  316: "renameat2",
  322: "execveat",
  424: "pidfd_send_signal",
  437: "openat2",
  438: "pidfd_getfd",
};

/** x86_64 numbers of the control syscalls: the ones that act on another process. */
const NR = {
  KILL: 62,
  PTRACE: 101,
  RT_SIGQUEUEINFO: 129,
  TKILL: 200,
  TGKILL: 234,
  RT_TGSIGQUEUEINFO: 297,
  PROCESS_VM_READV: 310,
  PROCESS_VM_WRITEV: 311,
  PIDFD_SEND_SIGNAL: 424,
  PIDFD_GETFD: 438,
} as const;

const CONTROL_NRS: ReadonlySet<number> = new Set(Object.values(NR));

/** ptrace requests by number (x86_64, `<linux/ptrace.h>` and `<asm/ptrace-abi.h>`). */
const PTRACE_REQUESTS: Readonly<Record<number, string>> = {
  0: "PTRACE_TRACEME",
  1: "PTRACE_PEEKTEXT",
  2: "PTRACE_PEEKDATA",
  3: "PTRACE_PEEKUSR",
  4: "PTRACE_POKETEXT",
  5: "PTRACE_POKEDATA",
  6: "PTRACE_POKEUSR",
  7: "PTRACE_CONT",
  8: "PTRACE_KILL",
  9: "PTRACE_SINGLESTEP",
  12: "PTRACE_GETREGS",
  13: "PTRACE_SETREGS",
  14: "PTRACE_GETFPREGS",
  15: "PTRACE_SETFPREGS",
  16: "PTRACE_ATTACH",
  17: "PTRACE_DETACH",
  18: "PTRACE_GETFPXREGS",
  19: "PTRACE_SETFPXREGS",
  24: "PTRACE_SYSCALL",
  25: "PTRACE_GET_THREAD_AREA",
  26: "PTRACE_SET_THREAD_AREA",
  30: "PTRACE_ARCH_PRCTL",
  31: "PTRACE_SYSEMU",
  32: "PTRACE_SYSEMU_SINGLESTEP",
  33: "PTRACE_SINGLEBLOCK",
  0x4200: "PTRACE_SETOPTIONS",
  0x4201: "PTRACE_GETEVENTMSG",
  0x4202: "PTRACE_GETSIGINFO",
  0x4203: "PTRACE_SETSIGINFO",
  0x4204: "PTRACE_GETREGSET",
  0x4205: "PTRACE_SETREGSET",
  0x4206: "PTRACE_SEIZE",
  0x4207: "PTRACE_INTERRUPT",
  0x4208: "PTRACE_LISTEN",
  0x4209: "PTRACE_PEEKSIGINFO",
  0x420a: "PTRACE_GETSIGMASK",
  0x420b: "PTRACE_SETSIGMASK",
  0x420c: "PTRACE_SECCOMP_GET_FILTER",
  0x420d: "PTRACE_SECCOMP_GET_METADATA",
  0x420e: "PTRACE_GET_SYSCALL_INFO",
  0x420f: "PTRACE_GET_RSEQ_CONFIGURATION",
  0x4210: "PTRACE_SET_SYSCALL_USER_DISPATCH_CONFIG",
  0x4211: "PTRACE_GET_SYSCALL_USER_DISPATCH_CONFIG",
};

/** The name of a ptrace request (`16` → `PTRACE_ATTACH`), or `ptrace request N`. */
export function ptraceRequestName(request: number): string {
  return PTRACE_REQUESTS[request] ?? `ptrace request ${request}`;
}

/** The name of a signal, with 0 (no signal: an existence probe) as `0`. */
function signalOf(signal: number): string {
  return signal === 0 ? "0" : signalName(signal);
}

/** pidfd_send_signal's flag that aims at the target's whole process group (6.9+). */
const PIDFD_SIGNAL_PROCESS_GROUP = 1 << 2;

/**
 * What a control record says: who was aimed at, as the caller named it and as the kernel
 * resolved it, and with what.
 */
export interface ControlRecord {
  /** The syscall's name. */
  syscall: string;
  /**
   * What it aims at: one process (or one of its threads), a process group, or every process
   * the caller may signal (`kill(-1, …)`).
   */
  scope: "process" | "group" | "all";
  /** The target as passed: a pid with its sign (kill: 0 or -pgid is a group, -1 is all). */
  arg: number;
  /** The pidfd the target was named by (pidfd_send_signal, pidfd_getfd). */
  pidfd?: number;
  /** The signal's name (`SIGSTOP`; `0` for an existence probe), for the signalling calls. */
  signal?: string;
  /** The signal's number, for the signalling calls. */
  signo?: number;
  /** The ptrace request's name (`PTRACE_ATTACH`). */
  request?: string;
  /** The ptrace request's number. */
  requestNo?: number;
  /** The target's host pid as the kernel resolved it (a tid for a thread), or null. */
  targetPid: number | null;
  /**
   * Its thread group, when the kernel knows it (it found the target in the tree, or read it
   * through the pidfd), or null.
   */
  targetTgid: number | null;
  /** The thread named beside a thread group (tgkill, rt_tgsigqueueinfo). */
  tid?: number;
  /** The fd asked for (pidfd_getfd). */
  fd?: number;
  /** The process group aimed at (host numbering), or null when not known in the kernel. */
  group: number | null;
  /** The kernel found the target in the tracked tree at sys_enter. */
  inside: boolean;
  /** The caller lives in a child pid namespace: `arg` is that namespace's number. */
  namespaced: boolean;
  /** The syscall's return value (-errno on failure). */
  result: number;
}

/**
 * Decodes a control record's target field. Throws a {@link RecordError} when the record is not
 * a well-formed control record: another type, a syscall that is not a control one, a target
 * field of the wrong size, other fields, or flags that contradict each other.
 */
export function decodeControl(record: EbpfRecord): ControlRecord {
  if (record.type !== EV.CONTROL) {
    throw new RecordError(`Record of type ${record.type} is not a control record`);
  }
  if (!CONTROL_NRS.has(record.nr)) {
    throw new RecordError(`Control record of syscall ${record.nr}, which acts on no process`);
  }
  const field = record.fields[0] ?? new Uint8Array();
  if (field.length !== CONTROL_SIZE) {
    throw new RecordError(
      `Control record's target field of ${field.length} bytes, expected ${CONTROL_SIZE}`,
    );
  }
  const extra = record.fields.slice(1).findIndex((f) => f.length > 0);
  if (extra >= 0) {
    throw new RecordError(`Control record with an unexpected field ${extra + 1}`);
  }
  const v = new DataView(field.buffer, field.byteOffset, field.byteLength);
  const arg = Number(v.getBigInt64(0, true));
  const op = v.getBigUint64(8, true);
  const targetPid = v.getUint32(16, true);
  const targetTgid = v.getUint32(20, true);
  const callerPgid = v.getUint32(24, true);
  const level = v.getUint32(28, true);
  const resolved = (record.flags & F.TARGET) !== 0;
  const inside = (record.flags & F.INSIDE) !== 0;
  if (resolved && targetPid === 0) {
    throw new RecordError("Control record resolved to pid 0");
  }
  if (inside && (!resolved || targetTgid === 0)) {
    throw new RecordError("Control record inside the tree without a resolved target");
  }
  const syscall = SYSCALL_NAMES[record.nr] ?? `syscall ${record.nr}`;
  const namespaced = level > 0;
  const base = {
    syscall,
    arg,
    targetPid: resolved ? targetPid : null,
    targetTgid: resolved && targetTgid !== 0 ? targetTgid : null,
    group: null,
    inside,
    namespaced,
    result: record.ret,
  };
  // The kernel keeps an int signal in a u64 register: its low 32 bits, signed.
  const signo = Number(BigInt.asIntN(32, op));
  const signal = { signo, signal: signalOf(signo) };
  switch (record.nr) {
    case NR.KILL: {
      if (arg > 0) return { ...base, scope: "process", ...signal };
      if (arg === -1) return { ...base, scope: "all", ...signal };
      // kill(0) is the caller's own group; kill(-pgid) is numbered in the caller's namespace.
      const group = arg === 0 ? callerPgid : namespaced ? null : -arg;
      return { ...base, scope: "group", group, ...signal };
    }
    case NR.TGKILL:
    case NR.RT_TGSIGQUEUEINFO:
      return { ...base, scope: "process", tid: record.aux32, ...signal };
    case NR.TKILL:
    case NR.RT_SIGQUEUEINFO:
      return { ...base, scope: "process", ...signal };
    case NR.PIDFD_SEND_SIGNAL: {
      const group = (Number(record.aux & 0xffffffffn) & PIDFD_SIGNAL_PROCESS_GROUP) !== 0;
      return { ...base, scope: group ? "group" : "process", pidfd: arg, ...signal };
    }
    case NR.PIDFD_GETFD:
      return { ...base, scope: "process", pidfd: arg, fd: record.aux32 };
    case NR.PTRACE: {
      const requestNo = Number(BigInt.asIntN(64, op));
      return { ...base, scope: "process", request: ptraceRequestName(requestNo), requestNo };
    }
    default: // process_vm_readv, process_vm_writev
      return { ...base, scope: "process" };
  }
}

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
  | { op: "exit"; status: number }
  | ({ op: "control" } & ControlRecord);

/**
 * What a record says happened, with its paths made whole: a resolved path when the kernel had
 * one, else the base directory joined to the name as given. Returns null for an unknown type;
 * throws a {@link RecordError} for a malformed control record.
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
    case EV.CONTROL:
      return { op: "control", ...decodeControl(record) };
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
