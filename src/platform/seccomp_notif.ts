/**
 * Pure decoders of seccomp user notifications (x86_64): `struct seccomp_notif` bytes to a record,
 * the syscalls the tier watches with the role of each argument, the reading of those arguments
 * into actions through an injected {@link TargetReader}, and the bytes of the answer. No I/O:
 * the worker that owns the listener supplies the reader (process_vm_readv and /proc).
 *
 * @module
 */

import { SYSCALL_NR } from "./seccomp_filter.ts";

/** Size of `struct seccomp_notif`: id, pid, flags, then `struct seccomp_data` (64 bytes). */
export const SECCOMP_NOTIF_SIZE = 80;
/** Size of `struct seccomp_notif_resp`: id, val, error, flags. */
export const SECCOMP_NOTIF_RESP_SIZE = 24;
/** `SECCOMP_USER_NOTIF_FLAG_CONTINUE`: let the syscall run as if there were no filter. */
export const SECCOMP_USER_NOTIF_FLAG_CONTINUE = 1;
/** `AT_FDCWD`: a dirfd meaning "the current directory". */
export const AT_FDCWD = -100;

const AT_REMOVEDIR = 0x200;
const AT_EMPTY_PATH = 0x1000;
/** O_CREAT | O_WRONLY | O_TRUNC: what creat(2) opens with. */
const CREAT_FLAGS = 0o1101;
/** Sizes that bound what is copied out of the target. */
const PATH_MAX = 4096;
const SOCKADDR_MAX = 128;
const ARGV_MAX = 4096;
const MMSG_MAX = 1024;

/** One decoded `struct seccomp_notif`. `pid` is the calling thread's id in Sentry's namespace. */
export interface SeccompNotif {
  /** The cookie to answer with. */
  id: bigint;
  /** The thread id (a tid, not the thread-group id) of the caller. */
  pid: number;
  flags: number;
  /** The syscall number. */
  nr: number;
  /** `AUDIT_ARCH_*` of the call. */
  arch: number;
  /** The caller's instruction pointer. */
  ip: bigint;
  /** The six raw syscall arguments. */
  args: readonly bigint[];
}

/**
 * Decodes `struct seccomp_notif` (80 bytes, little-endian).
 *
 * @throws {RangeError} when fewer than 80 bytes are given.
 */
export function decodeNotif(bytes: Uint8Array): SeccompNotif {
  if (bytes.length < SECCOMP_NOTIF_SIZE) {
    throw new RangeError(`A seccomp notification is 80 bytes, got ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, SECCOMP_NOTIF_SIZE);
  const args: bigint[] = [];
  for (let i = 0; i < 6; i++) args.push(view.getBigUint64(32 + 8 * i, true));
  return {
    id: view.getBigUint64(0, true),
    pid: view.getUint32(8, true),
    flags: view.getUint32(12, true),
    nr: view.getInt32(16, true),
    arch: view.getUint32(20, true),
    ip: view.getBigUint64(24, true),
    args,
  };
}

/** An answer to a notification. */
export type NotifAnswer =
  | { kind: "continue" }
  | { kind: "errno"; errno: number }
  | { kind: "value"; value: number };

/** Options for {@link encodeResponse}. */
export interface NotifResponse {
  /** The notification's id. */
  id: bigint;
  answer: NotifAnswer;
}

/**
 * Builds `struct seccomp_notif_resp`: `continue` sets FLAG_CONTINUE; `errno` fails the syscall
 * with that (positive) errno; `value` makes it return the value without running. Writes into
 * `into` when given (24 bytes, reused on the hot path), else into a new array.
 *
 * @throws {RangeError} for an errno that is not a positive integer.
 */
export function encodeResponse(response: NotifResponse, into?: Uint8Array): Uint8Array {
  const bytes = into ?? new Uint8Array(SECCOMP_NOTIF_RESP_SIZE);
  const view = new DataView(bytes.buffer, bytes.byteOffset, SECCOMP_NOTIF_RESP_SIZE);
  view.setBigUint64(0, response.id, true);
  const { answer } = response;
  let value = 0n;
  let error = 0;
  let flags = 0;
  if (answer.kind === "continue") flags = SECCOMP_USER_NOTIF_FLAG_CONTINUE;
  else if (answer.kind === "value") value = BigInt(answer.value);
  else {
    if (!Number.isInteger(answer.errno) || answer.errno <= 0) {
      throw new RangeError(`An errno answer needs a positive errno, got "${answer.errno}"`);
    }
    error = -answer.errno;
  }
  view.setBigInt64(8, value, true);
  view.setInt32(16, error, true);
  view.setUint32(20, flags, true);
  return bytes;
}

/** What a syscall argument is, for reading it out of the target. */
export type ArgRole =
  | "path"
  | "dirfd"
  | "open_flags"
  | "open_how"
  | "at_flags"
  | "symlink_target"
  | "fd"
  | "sockaddr"
  | "socklen"
  | "msghdr"
  | "mmsghdr"
  | "count"
  | "argv"
  | "other";

/** A watched syscall: its name and the role of each argument in order. */
export interface SyscallSpec {
  nr: number;
  name: string;
  args: readonly ArgRole[];
}

const SPEC_ARGS: Readonly<Record<string, readonly ArgRole[]>> = {
  open: ["path", "open_flags", "other"],
  creat: ["path", "other"],
  openat: ["dirfd", "path", "open_flags", "other"],
  openat2: ["dirfd", "path", "open_how", "other"],
  unlink: ["path"],
  unlinkat: ["dirfd", "path", "at_flags"],
  rmdir: ["path"],
  rename: ["path", "path"],
  renameat: ["dirfd", "path", "dirfd", "path"],
  renameat2: ["dirfd", "path", "dirfd", "path", "other"],
  link: ["path", "path"],
  linkat: ["dirfd", "path", "dirfd", "path", "at_flags"],
  symlink: ["symlink_target", "path"],
  symlinkat: ["symlink_target", "dirfd", "path"],
  connect: ["fd", "sockaddr", "socklen"],
  sendto: ["fd", "other", "other", "other", "sockaddr", "socklen"],
  sendmsg: ["fd", "msghdr", "other"],
  sendmmsg: ["fd", "mmsghdr", "count", "other"],
  execve: ["path", "argv", "other"],
  execveat: ["dirfd", "path", "argv", "other", "at_flags"],
};

/** The watched syscalls by number, with the role of each argument. */
export const SYSCALL_SPECS: ReadonlyMap<number, SyscallSpec> = new Map(
  Object.entries(SPEC_ARGS).map(([name, args]) => {
    const nr = SYSCALL_NR[name] ?? -1;
    return [nr, { nr, name, args }];
  }),
);

/** The spec of a watched syscall, or `undefined` for one this tier does not decode. */
export function syscallSpec(nr: number): SyscallSpec | undefined {
  return SYSCALL_SPECS.get(nr);
}

/** The name of a syscall number this tier knows, else `syscall_<nr>`. */
export function syscallName(nr: number): string {
  return NAMES.get(nr) ?? `syscall_${nr}`;
}

const NAMES: ReadonlyMap<number, string> = new Map(
  Object.entries(SYSCALL_NR).map(([name, nr]) => [nr, name]),
);

/**
 * Reads the target of a notification while it is blocked. Each method returns `null` when the
 * value cannot be read (a bad address, a dead process, no permission); the caller counts that.
 */
export interface TargetReader {
  /** A NUL-terminated string at `address`, at most `max` bytes without the NUL. */
  string(address: bigint, max: number): string | null;
  /**
   * Up to `length` bytes at `address`: fewer when the mapping ends before (never zero), `null`
   * when none can be read.
   */
  bytes(address: bigint, length: number): Uint8Array | null;
  /**
   * The absolute path a dirfd names for the calling thread: its current directory for
   * {@link AT_FDCWD} (from /proc/TID/cwd), else the fd's target (/proc/TID/fd/N).
   */
  directory(dirfd: number): string | null;
}

/** What a watched syscall asks for, decoded from its arguments. Paths are absolute. */
export type SyscallAction =
  | { op: "open"; path: string; flags: number; syscall: string }
  | { op: "unlink" | "rmdir"; path: string; syscall: string }
  | { op: "rename" | "link" | "symlink"; from: string; to: string; syscall: string }
  | { op: "connect" | "sendto"; addr: Uint8Array; syscall: string }
  | { op: "exec"; path: string; argv: string[]; syscall: string };

/** The result of {@link readSyscall}. */
export interface SyscallRead {
  /**
   * The actions the call asks for: usually one; none for a send without an address; one per
   * distinct address for `sendmmsg`.
   */
  actions: SyscallAction[];
  /**
   * Why an argument could not be read, if one could not: `memory` (the target's memory) or
   * `directory` (its cwd or a dirfd through /proc). The actions are then empty.
   */
  failure: "memory" | "directory" | null;
}

/** A syscall this tier does not decode (the filter never sends one). */
const NOTHING: SyscallRead = { actions: [], failure: null };

class Unreadable extends Error {
  constructor(readonly what: "memory" | "directory") {
    super(what);
  }
}

const NEEDS_NORMALIZING = /\/\/|\/\.\.?(\/|$)|.\/$/;

/**
 * Joins a path to a base directory and normalizes it lexically (`.`, `..`, repeated slashes),
 * as the kernel walks it when no symbolic link is involved. An absolute `path` ignores `base`.
 */
export function resolvePath(base: string, path: string): string {
  // Most paths are absolute and clean already: no `//`, `/.`, `/..` or trailing slash.
  if (path.startsWith("/") && !NEEDS_NORMALIZING.test(path)) return path;
  const parts: string[] = [];
  const input = path.startsWith("/") ? path : `${base}/${path}`;
  for (const part of input.split("/")) {
    if (part === "" || part === ".") continue;
    if (part === "..") parts.pop();
    else parts.push(part);
  }
  return `/${parts.join("/")}`;
}

/** An fd argument as the kernel reads it: the low 32 bits, signed. */
function fdArg(value: bigint): number {
  return Number(BigInt.asIntN(32, value));
}

/**
 * Decodes what a watched syscall asks for, reading its string and struct arguments through
 * `reader`. Relative paths are resolved against the dirfd or the cwd of the calling thread; a
 * symbolic link's content (`from`) is kept as written. Pure apart from `reader`.
 */
export function readSyscall(notif: SeccompNotif, reader: TargetReader): SyscallRead {
  const spec = SYSCALL_SPECS.get(notif.nr);
  if (spec === undefined) return NOTHING;
  try {
    return { actions: decodeArgs(spec, notif.args, reader), failure: null };
  } catch (error) {
    if (error instanceof Unreadable) return { actions: [], failure: error.what };
    throw error;
  }
}

function decodeArgs(
  spec: SyscallSpec,
  args: readonly bigint[],
  reader: TargetReader,
): SyscallAction[] {
  const arg = (i: number): bigint => args[i] ?? 0n;
  const syscall = spec.name;
  const text = (address: bigint): string => {
    const value = reader.string(address, PATH_MAX - 1);
    if (value === null) throw new Unreadable("memory");
    return value;
  };
  const bytes = (address: bigint, length: number): Uint8Array => {
    const value = reader.bytes(address, length);
    if (value === null) throw new Unreadable("memory");
    return value;
  };
  /** Exactly `length` bytes, or the argument is unreadable. */
  const exact = (address: bigint, length: number): Uint8Array => {
    const value = bytes(address, length);
    if (value.length < length) throw new Unreadable("memory");
    return value;
  };
  /**
   * Resolves path argument `p` against dirfd argument `d` (the cwd when `d` is -1). With
   * AT_EMPTY_PATH in `flags`, an empty path names the dirfd itself.
   */
  const at = (d: number, p: number, flags = 0): string => {
    const path = text(arg(p));
    if (path.startsWith("/")) return resolvePath("/", path);
    const dirfd = d < 0 ? AT_FDCWD : fdArg(arg(d));
    const base = reader.directory(dirfd);
    if (base === null || !base.startsWith("/")) throw new Unreadable("directory");
    if (path === "" && (flags & AT_EMPTY_PATH) !== 0) return base;
    // An empty path without AT_EMPTY_PATH fails with ENOENT; it names the directory here.
    return resolvePath(base, path);
  };
  switch (spec.name) {
    case "open":
      return [{ op: "open", path: at(-1, 0), flags: Number(arg(1) & 0xffffffffn), syscall }];
    case "creat":
      return [{ op: "open", path: at(-1, 0), flags: CREAT_FLAGS, syscall }];
    case "openat":
      return [{ op: "open", path: at(0, 1), flags: Number(arg(2) & 0xffffffffn), syscall }];
    case "openat2": {
      const how = exact(arg(2), 8);
      const flags = Number(
        new DataView(how.buffer, how.byteOffset, 8).getBigUint64(0, true) & 0xffffffffn,
      );
      return [{ op: "open", path: at(0, 1), flags, syscall }];
    }
    case "unlink":
      return [{ op: "unlink", path: at(-1, 0), syscall }];
    case "rmdir":
      return [{ op: "rmdir", path: at(-1, 0), syscall }];
    case "unlinkat": {
      const op = (Number(arg(2)) & AT_REMOVEDIR) !== 0 ? "rmdir" : "unlink";
      return [{ op, path: at(0, 1), syscall }];
    }
    case "rename":
    case "link":
      return [{ op: spec.name, from: at(-1, 0), to: at(-1, 1), syscall }];
    case "renameat":
    case "renameat2":
      return [{ op: "rename", from: at(0, 1), to: at(2, 3), syscall }];
    case "linkat":
      return [{ op: "link", from: at(0, 1, Number(arg(4))), to: at(2, 3), syscall }];
    case "symlink":
    case "symlinkat": {
      // The link's content is any string, kept as written; the new name is resolved.
      const to = spec.name === "symlink" ? at(-1, 1) : at(1, 2);
      return [{ op: "symlink", from: text(arg(0)), to, syscall }];
    }
    case "connect":
      return sockaddrAction("connect", syscall, arg(1), Number(arg(2) & 0xffffffffn), bytes);
    case "sendto":
      return sockaddrAction("sendto", syscall, arg(4), Number(arg(5) & 0xffffffffn), bytes);
    case "sendmsg": {
      return msgNameAction(exact(arg(1), 16), syscall, bytes);
    }
    case "sendmmsg": {
      // struct mmsghdr { struct msghdr msg_hdr (56); unsigned msg_len; } = 64 bytes each.
      const count = Math.min(Number(arg(2) & 0xffffffffn), MMSG_MAX);
      const seen = new Set<string>();
      const actions: SyscallAction[] = [];
      for (let i = 0; i < count; i++) {
        const header = exact(arg(1) + BigInt(64 * i), 16);
        for (const action of msgNameAction(header, syscall, bytes)) {
          if (action.op !== "sendto") continue;
          const key = action.addr.join(",");
          if (seen.has(key)) continue;
          seen.add(key);
          actions.push(action);
        }
      }
      return actions;
    }
    case "execve":
      return [{ op: "exec", path: at(-1, 0), argv: readArgv(arg(1), text, bytes), syscall }];
    case "execveat":
      return [{
        op: "exec",
        path: at(0, 1, Number(arg(4))),
        argv: readArgv(arg(2), text, bytes),
        syscall,
      }];
    default:
      return [];
  }
}

function sockaddrAction(
  op: "connect" | "sendto",
  syscall: string,
  address: bigint,
  length: number,
  bytes: (address: bigint, length: number) => Uint8Array,
): SyscallAction[] {
  // A NULL or empty address fails (connect) or sends on a connected socket (sendto).
  if (address === 0n || length <= 0) return [];
  return [{ op, addr: bytes(address, Math.min(length, SOCKADDR_MAX)), syscall }];
}

function msgNameAction(
  header: Uint8Array,
  syscall: string,
  bytes: (address: bigint, length: number) => Uint8Array,
): SyscallAction[] {
  // struct msghdr starts with void *msg_name, socklen_t msg_namelen.
  const view = new DataView(header.buffer, header.byteOffset, 16);
  return sockaddrAction(
    "sendto",
    syscall,
    view.getBigUint64(0, true),
    view.getUint32(8, true),
    bytes,
  );
}

function readArgv(
  address: bigint,
  text: (address: bigint) => string,
  bytes: (address: bigint, length: number) => Uint8Array,
): string[] {
  const argv: string[] = [];
  // argv may be NULL (Linux then runs the program with an empty argv).
  if (address === 0n) return argv;
  // Read the pointer table in chunks; a short read (the table ends near the end of a mapping)
  // is fine as long as the NULL that ends it is in what was read.
  let at = address;
  while (argv.length < ARGV_MAX) {
    const table = bytes(at, 256);
    const view = new DataView(table.buffer, table.byteOffset, table.byteLength);
    const pointers = Math.floor(table.byteLength / 8);
    if (pointers === 0) throw new Unreadable("memory");
    for (let i = 0; i < pointers && argv.length < ARGV_MAX; i++) {
      const pointer = view.getBigUint64(8 * i, true);
      if (pointer === 0n) return argv;
      argv.push(text(pointer));
    }
    at += BigInt(8 * pointers);
  }
  return argv;
}

// ---------------------------------------------------------------------------------------------
// Calls that act on another process (Sentry's guard)

/** What a signal, ptrace or cross-process call aims at, from its register arguments. */
export type ControlTarget =
  /** One task by number (a process or a thread: the kernel takes either). */
  | { kind: "task"; id: number }
  /** Every process of a process group (`kill(-pgid)`). */
  | { kind: "group"; pgid: number }
  /** The caller's own process group (`kill(0)`). */
  | { kind: "own_group" }
  /** Every process the caller may signal (`kill(-1)`). */
  | { kind: "all" }
  /** The process a pidfd of the caller names. */
  | { kind: "pidfd"; fd: number }
  /** The caller's parent (`ptrace(PTRACE_TRACEME)` makes it the tracer). */
  | { kind: "parent" };

/** A decoded call of {@link decodeControl}. */
export interface ControlCall {
  syscall: string;
  target: ControlTarget;
  /** The signal number, for the signal calls (0 only checks that the target exists). */
  signal?: number;
  /** The ptrace request's name (`PTRACE_ATTACH`), for ptrace. */
  request?: string;
}

/** ptrace requests by number (x86_64), for the journal. */
const PTRACE_REQUESTS: Readonly<Record<number, string>> = {
  0: "PTRACE_TRACEME",
  1: "PTRACE_PEEKTEXT",
  2: "PTRACE_PEEKDATA",
  3: "PTRACE_PEEKUSER",
  4: "PTRACE_POKETEXT",
  5: "PTRACE_POKEDATA",
  6: "PTRACE_POKEUSER",
  7: "PTRACE_CONT",
  8: "PTRACE_KILL",
  9: "PTRACE_SINGLESTEP",
  12: "PTRACE_GETREGS",
  13: "PTRACE_SETREGS",
  14: "PTRACE_GETFPREGS",
  15: "PTRACE_SETFPREGS",
  16: "PTRACE_ATTACH",
  17: "PTRACE_DETACH",
  24: "PTRACE_SYSCALL",
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
};

/** The name of a ptrace request, or `PTRACE_<n>` for one not in the table. */
export function ptraceRequestName(request: number): string {
  return PTRACE_REQUESTS[request] ?? `PTRACE_${request}`;
}

/** A pid_t or int argument: the low 32 bits, signed. */
function intArg(value: bigint | undefined): number {
  return Number(BigInt.asIntN(32, value ?? 0n));
}

/**
 * Decodes a call that acts on another process (kill, tkill, tgkill, rt_sigqueueinfo,
 * rt_tgsigqueueinfo, pidfd_send_signal, ptrace, process_vm_readv/writev, pidfd_getfd) from its
 * registers alone: nothing is read from the caller's memory, so nothing a racing thread writes
 * can change what the supervisor decides on. Null for any other syscall. Pure.
 */
export function decodeControl(notif: SeccompNotif): ControlCall | null {
  const name = syscallName(notif.nr);
  const a = (i: number) => intArg(notif.args[i]);
  const task = (id: number): ControlTarget => ({ kind: "task", id });
  switch (name) {
    case "kill": {
      const pid = a(0);
      const target: ControlTarget = pid > 0
        ? task(pid)
        : pid === 0
        ? { kind: "own_group" }
        : pid === -1
        ? { kind: "all" }
        : { kind: "group", pgid: pid === -2147483648 ? 0 : -pid };
      return { syscall: name, target, signal: a(1) };
    }
    case "tkill":
      return { syscall: name, target: task(a(0)), signal: a(1) };
    case "tgkill":
      // The thread is what receives the signal; the kernel checks it belongs to the group.
      return { syscall: name, target: task(a(1)), signal: a(2) };
    case "rt_sigqueueinfo":
      return { syscall: name, target: task(a(0)), signal: a(1) };
    case "rt_tgsigqueueinfo":
      return { syscall: name, target: task(a(1)), signal: a(2) };
    case "pidfd_send_signal":
      return { syscall: name, target: { kind: "pidfd", fd: a(0) }, signal: a(1) };
    case "ptrace": {
      const request = Number(BigInt.asIntN(64, notif.args[0] ?? 0n));
      return {
        syscall: name,
        target: request === 0 ? { kind: "parent" } : task(a(1)),
        request: ptraceRequestName(request),
      };
    }
    case "process_vm_readv":
    case "process_vm_writev":
      return { syscall: name, target: task(a(0)) };
    case "pidfd_getfd":
      return { syscall: name, target: { kind: "pidfd", fd: a(0) } };
    default:
      return null;
  }
}
