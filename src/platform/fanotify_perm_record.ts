/**
 * Pure decoding for the fanotify permission group (`FAN_CLASS_CONTENT`, fd mode,
 * `FAN_REPORT_TID`): its event records, its responses, and the two /proc files the guard reads
 * about a blocked opener (`/proc/TID/syscall` for the open's flags, `/proc/TID/status` for its
 * process and parent). No I/O: tested on captured samples.
 *
 * Why /proc/TID/syscall: the fd a permission event carries is a new open the kernel made for the
 * listener with the group's own `event_f_flags`, so its fdinfo `flags:` say nothing of how the
 * opener opened the file. The opener's thread is blocked inside its syscall while the event
 * waits for an answer, so /proc/TID/syscall shows that call's number and arguments (and the
 * thread, not the process, is needed: hence `FAN_REPORT_TID`).
 *
 * @module
 */

/** Permission event bits and response values (include/uapi/linux/fanotify.h). */
export const FAN_PERM = {
  OPEN_PERM: 0x10000,
  ACCESS_PERM: 0x20000,
  OPEN_EXEC_PERM: 0x40000,
  Q_OVERFLOW: 0x4000,
  /** Mark flag: events on the direct children of a marked directory. */
  EVENT_ON_CHILD: 0x08000000,
  ALLOW: 0x01,
  DENY: 0x02,
  /** Response flag: the decision is also written to the audit log (needs `FAN_ENABLE_AUDIT`). */
  AUDIT: 0x10,
} as const;

/** Size of `struct fanotify_event_metadata`. */
const METADATA_BYTES = 24;
/** FANOTIFY_METADATA_VERSION. */
const METADATA_VERSION = 3;
/** Size of `struct fanotify_response` (`fd` i32, `response` u32). */
export const FAN_RESPONSE_BYTES = 8;

/** One permission event: the opener's thread and the fd the kernel opened for the listener. */
export interface PermissionEvent {
  mask: number;
  /** The event's fd: answered with it, then closed by the reader. -1 (FAN_NOFD) on overflow. */
  fd: number;
  /** The opener's thread id (`FAN_REPORT_TID`), or its tgid without that flag. */
  tid: number;
}

/** What {@link decodePermissionEvents} found. */
export interface PermissionBatch {
  events: PermissionEvent[];
  /** Queue overflows (never expected: the group is made with `FAN_UNLIMITED_QUEUE`). */
  overflows: number;
  /**
   * Bytes this decoder does not trust (a bad version or length). Decoding stops there: the
   * events after it cannot be answered one by one, so the reader must close the group (the
   * kernel then allows every pending open).
   */
  malformed: boolean;
}

/** Decodes one read(2) from a permission group. Never throws on kernel input. */
export function decodePermissionEvents(bytes: Uint8Array): PermissionBatch {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const batch: PermissionBatch = { events: [], overflows: 0, malformed: false };
  let offset = 0;
  while (offset < bytes.byteLength) {
    if (offset + METADATA_BYTES > bytes.byteLength) {
      batch.malformed = true;
      break;
    }
    const length = view.getUint32(offset, true);
    const version = view.getUint8(offset + 4);
    const metadataLength = view.getUint16(offset + 6, true);
    if (
      version !== METADATA_VERSION || length < METADATA_BYTES ||
      metadataLength < METADATA_BYTES || offset + length > bytes.byteLength
    ) {
      batch.malformed = true;
      break;
    }
    const mask = view.getUint32(offset + 8, true);
    const fd = view.getInt32(offset + 16, true);
    const tid = view.getInt32(offset + 20, true);
    if ((mask & FAN_PERM.Q_OVERFLOW) !== 0) batch.overflows++;
    else batch.events.push({ mask, fd, tid });
    offset += length;
  }
  return batch;
}

/** Encodes one event's metadata (for tests and captured samples). */
export function encodePermissionEvent(event: PermissionEvent): Uint8Array {
  const bytes = new Uint8Array(METADATA_BYTES);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, METADATA_BYTES, true);
  view.setUint8(4, METADATA_VERSION);
  view.setUint16(6, METADATA_BYTES, true);
  view.setUint32(8, event.mask, true);
  view.setInt32(16, event.fd, true);
  view.setInt32(20, event.tid, true);
  return bytes;
}

/** Writes `struct fanotify_response` for `fd` into `into` (8 bytes) and returns it. */
export function encodeResponse(
  fd: number,
  allow: boolean,
  options: { audit?: boolean; into?: Uint8Array } = {},
): Uint8Array {
  const bytes = options.into ?? new Uint8Array(FAN_RESPONSE_BYTES);
  const view = new DataView(bytes.buffer, bytes.byteOffset, FAN_RESPONSE_BYTES);
  view.setInt32(0, fd, true);
  view.setUint32(
    4,
    (allow ? FAN_PERM.ALLOW : FAN_PERM.DENY) | (options.audit ? FAN_PERM.AUDIT : 0),
    true,
  );
  return bytes;
}

// --- /proc/TID/syscall --------------------------------------------------------------------------

/** The syscall a thread is blocked in, from /proc/TID/syscall. */
export interface BlockedSyscall {
  nr: number;
  /** The six arguments. */
  args: bigint[];
}

/**
 * Parses /proc/TID/syscall: `nr arg1 ... arg6 sp pc` in hex. Null when the thread is running,
 * not in a syscall (`-1 sp pc`), or the text does not parse.
 */
export function parseSyscallFile(text: string): BlockedSyscall | null {
  const fields = text.trim().split(/\s+/);
  if (fields.length < 7) return null;
  const nr = Number(fields[0]);
  if (!Number.isInteger(nr) || nr < 0) return null;
  const args: bigint[] = [];
  for (const field of fields.slice(1, 7)) {
    if (!/^0x[0-9a-f]+$/i.test(field)) return null;
    args.push(BigInt(field));
  }
  return { nr, args };
}

/** Syscall numbers the guard recognises, per architecture. */
interface SyscallTable {
  open: number | null;
  creat: number | null;
  openat: number;
  openat2: number;
  openByHandleAt: number;
  execve: number;
  execveat: number;
  uselib: number | null;
}

const SYSCALLS: Record<string, SyscallTable> = {
  x86_64: {
    open: 2,
    creat: 85,
    openat: 257,
    openat2: 437,
    openByHandleAt: 304,
    execve: 59,
    execveat: 322,
    uselib: 134,
  },
  aarch64: {
    open: null,
    creat: null,
    openat: 56,
    openat2: 437,
    openByHandleAt: 265,
    execve: 221,
    execveat: 281,
    uselib: null,
  },
};

const O_WRONLY = 0o1;
const O_CREAT = 0o100;
const O_TRUNC = 0o1000;

/**
 * What the blocked call says about the open:
 * - `flags`: an open whose flags are in its arguments (open, openat, creat, open_by_handle_at);
 * - `openat2`: flags are the first u64 of `struct open_how` at `how` in the opener's memory;
 * - `exec`: the open is execve's (or uselib's) own;
 * - `unknown`: the call is not one of these (an io_uring worker, a kernel-internal open), or
 *   /proc had nothing: the caller decides conservatively.
 */
export type OpenIntent =
  | { kind: "flags"; flags: number; syscall: string }
  | { kind: "openat2"; how: bigint; syscall: "openat2" }
  | { kind: "exec"; syscall: string }
  | { kind: "unknown"; syscall: string };

/** Reads the open's intent from the blocked syscall (null: /proc had nothing). */
export function openIntent(call: BlockedSyscall | null, arch: string = "x86_64"): OpenIntent {
  if (call === null) return { kind: "unknown", syscall: "unknown" };
  const table = SYSCALLS[arch];
  if (table === undefined) return { kind: "unknown", syscall: `syscall ${call.nr}` };
  const arg = (i: number) => Number(BigInt.asUintN(32, call.args[i] ?? 0n));
  switch (call.nr) {
    case table.open:
      return { kind: "flags", flags: arg(1), syscall: "open" };
    case table.openat:
      return { kind: "flags", flags: arg(2), syscall: "openat" };
    case table.creat:
      return { kind: "flags", flags: O_CREAT | O_WRONLY | O_TRUNC, syscall: "creat" };
    case table.openByHandleAt:
      return { kind: "flags", flags: arg(2), syscall: "open_by_handle_at" };
    case table.openat2:
      return { kind: "openat2", how: call.args[2] ?? 0n, syscall: "openat2" };
    case table.execve:
      return { kind: "exec", syscall: "execve" };
    case table.execveat:
      return { kind: "exec", syscall: "execveat" };
    case table.uselib:
      return { kind: "exec", syscall: "uselib" };
    default:
      return { kind: "unknown", syscall: `syscall ${call.nr}` };
  }
}

/** Whether open flags ask for write access: O_WRONLY or O_RDWR, or O_TRUNC. */
export function writesWith(flags: number): boolean {
  return (flags & 3) !== 0 || (flags & O_TRUNC) !== 0;
}

// --- /proc/TID/status ---------------------------------------------------------------------------

/** The thread's process (`Tgid`) and that process's parent (`PPid`). */
export interface ThreadIdentity {
  tgid: number;
  ppid: number;
}

/** Reads `Tgid:` and `PPid:` from /proc/TID/status; null when either is missing. */
export function parseThreadStatus(text: string): ThreadIdentity | null {
  const tgid = /^Tgid:\s*(\d+)/m.exec(text)?.[1];
  const ppid = /^PPid:\s*(\d+)/m.exec(text)?.[1];
  if (tgid === undefined || ppid === undefined) return null;
  return { tgid: Number(tgid), ppid: Number(ppid) };
}

/**
 * Whether a line of /proc/PID/cgroup puts the process in `cgroup` or beneath it. `cgroup` is
 * the path as /proc/PID/cgroup shows it (relative to the hierarchy's root), such as
 * `/sentry/01J...`; both v2 (`0::/path`) and v1 lines (`N:controllers:/path`) count.
 */
export function inCgroup(text: string, cgroup: string): boolean {
  const base = cgroup.replace(/\/+$/, "");
  if (base === "") return false;
  for (const line of text.split("\n")) {
    const second = line.indexOf(":", line.indexOf(":") + 1);
    if (second < 0) continue;
    const path = line.slice(second + 1);
    if (path === base || path.startsWith(`${base}/`)) return true;
  }
  return false;
}
