/**
 * The kernel calls of the seccomp sensing tier, through FFI on the C library: installing a
 * user-notification filter (launcher side), passing its listener over a unix socket, answering
 * notifications, reading the target's memory with `process_vm_readv`, and the `execve` that
 * turns the launcher into the agent.
 *
 * Everything here is synchronous and may block: call the blocking parts (notification receive,
 * the launcher's socket dialogue) from a Worker, never from Deno's main thread, whose event loop
 * would freeze. {@link waitReadable} is the one call made for the main thread: it polls on
 * Deno's thread pool.
 *
 * The library is opened lazily, once per isolate (each Worker opens its own). x86_64 only: the
 * struct layouts and syscall numbers below are that ABI's.
 *
 * @module
 */

import { errnoOf, openLibc } from "./_libc.ts";
import { errnoName } from "./kernel_abi.ts";

const SYMBOLS = {
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  // syscall(2) for calls glibc has no wrapper for (seccomp, rt_sigaction, gettid).
  syscall: { parameters: ["i64", "u64", "u64", "u64", "u64"], result: "i64" },
  syscall_buf: { name: "syscall", parameters: ["i64", "u64", "u64", "buffer"], result: "i64" },
  syscall_sig: {
    name: "syscall",
    parameters: ["i64", "u64", "buffer", "buffer", "u64"],
    result: "i64",
  },
  ioctl_buf: { name: "ioctl", parameters: ["i32", "u32", "buffer"], result: "i32" },
  ioctl_val: { name: "ioctl", parameters: ["i32", "u32", "u64"], result: "i32" },
  process_vm_readv: {
    parameters: ["i32", "buffer", "u64", "buffer", "u64", "u64"],
    result: "i64",
  },
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  listen: { parameters: ["i32", "i32"], result: "i32" },
  connect: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  accept4: { parameters: ["i32", "pointer", "pointer", "i32"], result: "i32" },
  sendmsg: { parameters: ["i32", "buffer", "i32"], result: "i64" },
  recvmsg: { parameters: ["i32", "buffer", "i32"], result: "i64" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  fcntl: { parameters: ["i32", "i32", "i64"], result: "i32" },
  read: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  write: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  pread: { parameters: ["i32", "buffer", "u64", "i64"], result: "i64" },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  openat: { parameters: ["i32", "buffer", "i32", "u32"], result: "i32" },
  fstat: { parameters: ["i32", "buffer"], result: "i32" },
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  geteuid: { parameters: [], result: "u32" },
  getegid: { parameters: [], result: "u32" },
  readlink: { parameters: ["buffer", "buffer", "u64"], result: "i64" },
  close: { parameters: ["i32"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  poll_async: {
    name: "poll",
    parameters: ["buffer", "u64", "i32"],
    result: "i32",
    nonblocking: true,
  },
  execve: { parameters: ["buffer", "buffer", "buffer"], result: "i32" },
  sigaction: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  dlsym: { parameters: ["pointer", "buffer"], result: "pointer" },
  getpid: { parameters: [], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

const SYS_RT_SIGACTION = 13n;
const SYS_RT_SIGPROCMASK = 14n;
const SYS_GETTID = 186n;
const SYS_TGKILL = 234n;
const SYS_SECCOMP = 317n;
const PR_SET_NO_NEW_PRIVS = 38;
const SECCOMP_SET_MODE_FILTER = 1;
const SECCOMP_FILTER_FLAG_NEW_LISTENER = 8;
const AF_UNIX = 1;
const SOCK_STREAM = 1;
const SOCK_CLOEXEC = 0o2000000;
const SOL_SOCKET = 1;
const SCM_RIGHTS = 1;
const SO_PEERCRED = 17;
const MSG_NOSIGNAL = 0x4000;
const MSG_CMSG_CLOEXEC = 0x40000000;
const O_RDONLY_CLOEXEC = 0o2000000;
const O_PATH_CLOEXEC = 0o10000000 | 0o2000000;
const POLLIN = 0x1;
const POLLERR = 0x8;
const POLLHUP = 0x10;
const POLLNVAL = 0x20;
const EINTR = 4;
const ENOENT = 2;
const O_CLOEXEC = 0o2000000;

/** The seccomp notification ioctls (x86_64 encodings). */
export const SECCOMP_IOCTL = {
  NOTIF_RECV: 0xc0502100,
  NOTIF_SEND: 0xc0182101,
  NOTIF_ID_VALID: 0x40082102,
  NOTIF_ADDFD: 0x40182103,
  NOTIF_SET_FLAGS: 0x40082104,
} as const;

/** `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP`: wake the supervisor's thread on the target's CPU. */
const SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP = 1n;

let libc: Libc | null | undefined;
let unavailable = "";

function open(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") {
    unavailable =
      `The seccomp tier needs Linux on x86_64, not ${Deno.build.os} on ${Deno.build.arch}`;
    return null;
  }
  const opened = openLibc(SYMBOLS);
  if (typeof opened === "string") {
    unavailable = opened;
    return null;
  }
  libc = opened;
  return libc;
}

function lib(): Libc {
  const handle = open();
  if (handle === null) throw new Deno.errors.NotSupported(unavailable);
  return handle;
}

const errno = errnoOf;

/** A failed system call: which call, and the errno it set. */
export class SyscallError extends Error {
  /** The call, as in `seccomp(SET_MODE_FILTER)`. */
  readonly call: string;
  /** The errno. */
  readonly errno: number;

  /** Builds the error; the message names the call and the errno. */
  constructor(call: string, errnoValue: number, options?: ErrorOptions) {
    super(`${call} failed: ${errnoName(errnoValue)}`, options);
    this.name = "SyscallError";
    this.call = call;
    this.errno = errnoValue;
  }
}

function check(handle: Libc, call: string, result: number | bigint): number {
  const value = Number(result);
  if (value === -1) throw new SyscallError(call, errno(handle));
  return value;
}

/**
 * Whether this host can run the seccomp tier: libc through FFI on x86_64 Linux, and a kernel that
 * offers the `user_notif` seccomp action. If not, `reason` says why in one sentence.
 */
export function seccompAvailability(): { ok: true } | { ok: false; reason: string } {
  if (open() === null) return { ok: false, reason: unavailable };
  try {
    const actions = Deno.readTextFileSync("/proc/sys/kernel/seccomp/actions_avail");
    if (!actions.split(/\s+/).includes("user_notif")) {
      return { ok: false, reason: "The kernel offers no seccomp user notification" };
    }
  } catch {
    return { ok: false, reason: "The kernel has no seccomp filter support" };
  }
  return { ok: true };
}

const encoder = new TextEncoder();
const decoder = new TextDecoder();

function cString(text: string): Uint8Array<ArrayBuffer> {
  const bytes = new Uint8Array(encoder.encode(text).length + 1);
  encoder.encodeInto(text, bytes);
  return bytes;
}

/**
 * Holds buffers whose addresses were written into structs until after the call that reads them:
 * a buffer referenced only through a raw address could otherwise be collected during the call's
 * set-up.
 */
const retained: unknown[] = [];
function keepAlive(...objects: unknown[]): void {
  retained.push(objects);
  retained.length = 0;
}

function address(buffer: Uint8Array | BigUint64Array): bigint {
  return BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(buffer as Uint8Array<ArrayBuffer>)));
}

// ---------------------------------------------------------------------------------------------
// Launcher side

/** Sets `no_new_privs` on the calling thread (needed before an unprivileged filter). */
export function setNoNewPrivs(): void {
  const handle = lib();
  check(
    handle,
    "prctl(PR_SET_NO_NEW_PRIVS)",
    handle.symbols.prctl(PR_SET_NO_NEW_PRIVS, 1n, 0n, 0n, 0n),
  );
}

/**
 * Installs a seccomp filter on the calling thread with `SECCOMP_FILTER_FLAG_NEW_LISTENER` and
 * returns the listener's fd (O_CLOEXEC). Only the calling thread is filtered (no TSYNC): the
 * launcher calls it from the main thread, which then runs `execve`, and the agent inherits it.
 *
 * @throws {SyscallError} EACCES without `no_new_privs`, EBUSY if a listener already exists.
 */
export function installListenerFilter(program: Uint8Array): number {
  const handle = lib();
  if (program.length === 0 || program.length % 8 !== 0) {
    throw new RangeError(`A BPF program is a non-empty multiple of 8 bytes, got ${program.length}`);
  }
  const filter = new Uint8Array(program);
  // struct sock_fprog { unsigned short len; struct sock_filter *filter; }
  const fprog = new Uint8Array(16);
  const view = new DataView(fprog.buffer);
  view.setUint16(0, program.length / 8, true);
  view.setBigUint64(8, address(filter), true);
  const fd = check(
    handle,
    "seccomp(SET_MODE_FILTER, NEW_LISTENER)",
    handle.symbols.syscall_buf(
      SYS_SECCOMP,
      BigInt(SECCOMP_SET_MODE_FILTER),
      BigInt(SECCOMP_FILTER_FLAG_NEW_LISTENER),
      fprog,
    ),
  );
  keepAlive(filter);
  return fd;
}

/**
 * The signals Deno's runtime leaves ignored in its own process: SIGPIPE, and the two real-time
 * signals glibc reserves (32, 33). An ignored signal stays ignored across `execve`, so the agent
 * would inherit them; {@link resetSignals} puts them back to their default.
 */
export const DENO_IGNORED_SIGNALS: readonly number[] = [13, 32, 33];

/**
 * Puts each given signal that is ignored back to its default action, and unblocks every signal
 * of the calling thread, so that a program started by `execve` sees the dispositions a shell
 * would give it. Uses the raw `rt_sigaction` syscall: glibc refuses to touch signals 32 and 33.
 */
export function resetSignals(signals: readonly number[] = DENO_IGNORED_SIGNALS): void {
  const handle = lib();
  // struct kernel_sigaction { handler; flags; restorer; mask } = 32 bytes; zero means SIG_DFL.
  const current = new BigUint64Array(4);
  const dfl = new BigUint64Array(4);
  for (const signal of signals) {
    check(
      handle,
      `rt_sigaction(${signal})`,
      handle.symbols.syscall_sig(
        SYS_RT_SIGACTION,
        BigInt(signal),
        null,
        new Uint8Array(current.buffer),
        8n,
      ),
    );
    if (current[0] !== 1n) continue; // Only SIG_IGN survives execve; handlers reset themselves.
    check(
      handle,
      `rt_sigaction(${signal}, SIG_DFL)`,
      handle.symbols.syscall_sig(
        SYS_RT_SIGACTION,
        BigInt(signal),
        new Uint8Array(dfl.buffer),
        null,
        8n,
      ),
    );
  }
  const empty = new Uint8Array(8);
  const SIG_SETMASK = 2n;
  check(
    handle,
    "rt_sigprocmask(SIG_SETMASK)",
    handle.symbols.syscall_sig(SYS_RT_SIGPROCMASK, SIG_SETMASK, empty, null, 8n),
  );
}

/** Options for {@link execve}. */
export interface ExecveOptions {
  /** The program's path (absolute, or relative to the current directory). */
  path: string;
  /** argv, including argv[0]. */
  argv: readonly string[];
  /** The environment, as `NAME=value` entries. */
  env: readonly string[];
}

/**
 * Replaces the calling process by a program, in the same pid, as execve(2) does. Returns only on
 * failure, with the error (ENOENT, EACCES, ENOEXEC...). Every other thread of the process ends
 * when it succeeds.
 */
export function execve(options: ExecveOptions): SyscallError {
  const handle = lib();
  const keep: Uint8Array[] = [];
  const table = (items: readonly string[]): BigUint64Array => {
    const pointers = new BigUint64Array(items.length + 1);
    items.forEach((item, i) => {
      const bytes = cString(item);
      keep.push(bytes);
      pointers[i] = address(bytes);
    });
    return pointers;
  };
  const argv = table(options.argv);
  const envp = table(options.env);
  const path = cString(options.path);
  handle.symbols.execve(path, new Uint8Array(argv.buffer), new Uint8Array(envp.buffer));
  const error = new SyscallError(`execve("${options.path}")`, errno(handle));
  keepAlive(keep, argv, envp);
  return error;
}

/** The calling thread's kernel thread id. */
export function gettid(): number {
  return Number(lib().symbols.syscall(SYS_GETTID, 0n, 0n, 0n, 0n));
}

/**
 * The signal that wakes a thread blocked in a notification receive: a real-time signal no one
 * else in Sentry uses.
 */
export const WAKE_SIGNAL = 63;

let wakeInstalled = false;

/**
 * Installs a do-nothing handler for {@link WAKE_SIGNAL}, without SA_RESTART, so that a
 * {@link wakeThread} makes a blocking `ioctl(SECCOMP_IOCTL_NOTIF_RECV)` return EINTR instead of
 * being restarted. The handler is libc's `getpid`: it touches no state and is async-signal-safe.
 * Process-wide and idempotent.
 */
export function installWakeSignal(): void {
  if (wakeInstalled) return;
  const handle = lib();
  const handler = handle.symbols.dlsym(null, cString("getpid"));
  if (handler === null) throw new SyscallError("dlsym(getpid)", 0);
  // glibc's struct sigaction: handler, sa_mask (128 bytes), sa_flags, sa_restorer (152 bytes);
  // glibc adds SA_RESTORER and its restorer itself. sa_flags 0: no SA_RESTART.
  const action = new Uint8Array(152);
  new DataView(action.buffer).setBigUint64(0, BigInt(Deno.UnsafePointer.value(handler)), true);
  check(handle, `sigaction(${WAKE_SIGNAL})`, handle.symbols.sigaction(WAKE_SIGNAL, action, null));
  wakeInstalled = true;
}

/** Sends {@link WAKE_SIGNAL} to one thread of this process; false if it is gone. */
export function wakeThread(tid: number): boolean {
  const handle = lib();
  const pid = BigInt(handle.symbols.getpid());
  return Number(handle.symbols.syscall(SYS_TGKILL, pid, BigInt(tid), BigInt(WAKE_SIGNAL), 0n)) ===
    0;
}

// ---------------------------------------------------------------------------------------------
// Unix sockets with SCM_RIGHTS

function sockaddrUn(path: string): Uint8Array<ArrayBuffer> {
  const bytes = encoder.encode(path);
  if (bytes.length >= 108) {
    throw new RangeError(`Socket path "${path}" is too long: ${bytes.length} bytes, at most 107`);
  }
  const addr = new Uint8Array(110);
  new DataView(addr.buffer).setUint16(0, AF_UNIX, true);
  addr.set(bytes, 2);
  return addr;
}

/** Creates a listening unix stream socket bound to `path`; returns its fd (O_CLOEXEC). */
export function unixListen(path: string): number {
  const handle = lib();
  const fd = check(
    handle,
    "socket(AF_UNIX)",
    handle.symbols.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0),
  );
  try {
    const addr = sockaddrUn(path);
    check(handle, `bind("${path}")`, handle.symbols.bind(fd, addr, addr.length));
    check(handle, "listen", handle.symbols.listen(fd, 4));
  } catch (error) {
    handle.symbols.close(fd);
    throw error;
  }
  return fd;
}

/** Connects a unix stream socket to `path` (blocking); returns its fd (O_CLOEXEC). */
export function unixConnect(path: string): number {
  const handle = lib();
  const fd = check(
    handle,
    "socket(AF_UNIX)",
    handle.symbols.socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0),
  );
  try {
    const addr = sockaddrUn(path);
    check(handle, `connect("${path}")`, handle.symbols.connect(fd, addr, addr.length));
  } catch (error) {
    handle.symbols.close(fd);
    throw error;
  }
  return fd;
}

/** Accepts one connection on a listening socket (blocks unless it is readable); returns its fd. */
export function accept(fd: number): number {
  const handle = lib();
  return check(handle, "accept4", handle.symbols.accept4(fd, null, null, SOCK_CLOEXEC));
}

/** The pid and ids of the process at the other end of a connected unix socket. */
export function peerCredentials(fd: number): { pid: number; uid: number; gid: number } {
  const handle = lib();
  const cred = new Int32Array(3);
  const length = new Uint32Array([12]);
  check(
    handle,
    "getsockopt(SO_PEERCRED)",
    handle.symbols.getsockopt(
      fd,
      SOL_SOCKET,
      SO_PEERCRED,
      new Uint8Array(cred.buffer),
      new Uint8Array(length.buffer),
    ),
  );
  return { pid: cred[0] ?? 0, uid: cred[1] ?? 0, gid: cred[2] ?? 0 };
}

/** What {@link sendWithFd} sends: bytes, and one file descriptor beside them. */
export interface FdMessage {
  data: Uint8Array;
  fd: number;
}

/** Sends bytes and one file descriptor (SCM_RIGHTS) on a connected unix socket. */
export function sendWithFd(socket: number, message: FdMessage): void {
  const { data, fd } = message;
  const handle = lib();
  const payload = new Uint8Array(data);
  const iov = new BigUint64Array([address(payload), BigInt(payload.length)]);
  // CMSG_SPACE(sizeof(int)) = 24: cmsg_len (u64) = CMSG_LEN(4) = 20, level, type, the fd.
  const control = new Uint8Array(24);
  const cview = new DataView(control.buffer);
  cview.setBigUint64(0, 20n, true);
  cview.setInt32(8, SOL_SOCKET, true);
  cview.setInt32(12, SCM_RIGHTS, true);
  cview.setInt32(16, fd, true);
  const msg = new Uint8Array(56);
  const mview = new DataView(msg.buffer);
  mview.setBigUint64(16, address(new Uint8Array(iov.buffer)), true);
  mview.setBigUint64(24, 1n, true);
  mview.setBigUint64(32, address(control), true);
  mview.setBigUint64(40, BigInt(control.length), true);
  const sent = check(
    handle,
    "sendmsg(SCM_RIGHTS)",
    handle.symbols.sendmsg(socket, msg, MSG_NOSIGNAL),
  );
  keepAlive(payload, iov, control);
  if (sent !== payload.length) throw new SyscallError("sendmsg(SCM_RIGHTS) short write", 5);
}

/**
 * Receives data and at most one file descriptor (SCM_RIGHTS, made O_CLOEXEC) from a unix socket.
 * Blocks unless the socket is readable. `data` is empty at end of stream.
 */
export function receiveWithFd(
  socket: number,
  maxBytes = 4096,
): { data: Uint8Array; fd: number | null } {
  const handle = lib();
  const payload = new Uint8Array(maxBytes);
  const iov = new BigUint64Array([address(payload), BigInt(payload.length)]);
  const control = new Uint8Array(64);
  const msg = new Uint8Array(56);
  const mview = new DataView(msg.buffer);
  mview.setBigUint64(16, address(new Uint8Array(iov.buffer)), true);
  mview.setBigUint64(24, 1n, true);
  mview.setBigUint64(32, address(control), true);
  mview.setBigUint64(40, BigInt(control.length), true);
  const got = check(handle, "recvmsg", handle.symbols.recvmsg(socket, msg, MSG_CMSG_CLOEXEC));
  keepAlive(iov);
  const controlLength = Number(mview.getBigUint64(40, true));
  const cview = new DataView(control.buffer);
  let fd: number | null = null;
  for (let at = 0; at + 16 <= controlLength;) {
    const length = Number(cview.getBigUint64(at, true));
    if (length < 16) break;
    if (
      cview.getInt32(at + 8, true) === SOL_SOCKET && cview.getInt32(at + 12, true) === SCM_RIGHTS
    ) {
      for (let i = at + 16; i + 4 <= at + length; i += 4) {
        const received = cview.getInt32(i, true);
        // One fd is expected; close any extra so none leaks.
        if (fd === null) fd = received;
        else handle.symbols.close(received);
      }
    }
    at += (length + 7) & ~7;
  }
  return { data: payload.subarray(0, got), fd };
}

/** Writes all of `data` to an fd (blocking). */
export function writeAll(fd: number, data: Uint8Array): void {
  const handle = lib();
  const bytes = new Uint8Array(data);
  for (let at = 0; at < bytes.length;) {
    const wrote = Number(handle.symbols.write(fd, bytes.subarray(at), BigInt(bytes.length - at)));
    if (wrote === -1) {
      const e = errno(handle);
      if (e === EINTR) continue;
      throw new SyscallError("write", e);
    }
    at += wrote;
  }
}

/** Reads at most `into.length` bytes from an fd (blocking); 0 means end of file. */
export function readSome(fd: number, into: Uint8Array): number {
  const handle = lib();
  for (;;) {
    const got = Number(handle.symbols.read(fd, into, BigInt(into.length)));
    if (got !== -1) return got;
    const e = errno(handle);
    if (e !== EINTR) throw new SyscallError("read", e);
  }
}

/** Closes an fd; errors are ignored (there is nothing to do about them). */
export function closeFd(fd: number): void {
  if (fd >= 0) lib().symbols.close(fd);
}

/** What {@link waitReadable} and {@link SeccompListener.wait} saw. */
export type PollState = "readable" | "timeout" | "hangup";

function pollState(revents: number): PollState {
  if ((revents & POLLIN) !== 0) return "readable";
  if ((revents & (POLLHUP | POLLERR | POLLNVAL)) !== 0) return "hangup";
  return "timeout";
}

/**
 * Waits until an fd is readable, hung up, or `timeoutMs` passes, for Deno's main thread: the
 * poll runs on Deno's thread pool and the event loop goes on meanwhile.
 */
export async function waitReadable(fd: number, timeoutMs: number): Promise<PollState> {
  const handle = lib();
  const pfd = new Uint8Array(8);
  const view = new DataView(pfd.buffer);
  view.setInt32(0, fd, true);
  view.setInt16(4, POLLIN, true);
  const n = await handle.symbols.poll_async(pfd, 1n, timeoutMs);
  // errno belongs to the pool thread: a failure (EINTR at most) reads as a timeout.
  return n <= 0 ? "timeout" : pollState(view.getInt16(6, true));
}

// ---------------------------------------------------------------------------------------------
// The notification listener

/** Size of `struct seccomp_notif`. */
export const NOTIF_SIZE = 80;
/** What {@link SeccompListener.receive} got. */
export type ReceiveResult = "ok" | "gone" | "interrupted";

/**
 * Owns a seccomp user-notification listener fd: receives notifications and sends answers. Use it
 * from one thread; `close()` releases the fd (after which the kernel fails every filtered
 * syscall of the tree with ENOSYS: the gate fails closed).
 */
export class SeccompListener {
  #fd: number;
  readonly #lib: Libc;
  readonly #id = new BigUint64Array(1);
  readonly #addfd = new Uint8Array(24);
  readonly #idBytes: Uint8Array<ArrayBuffer>;
  readonly #pfd = new Uint8Array(8);
  readonly #pview: DataView;

  /** Takes ownership of a listener fd. */
  constructor(fd: number) {
    this.#fd = fd;
    this.#lib = lib();
    this.#idBytes = new Uint8Array(this.#id.buffer);
    this.#pview = new DataView(this.#pfd.buffer);
    this.#pview.setInt32(0, fd, true);
    this.#pview.setInt16(4, POLLIN, true);
  }

  /** The fd, or -1 once closed. */
  get fd(): number {
    return this.#fd;
  }

  /**
   * Turns on `SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP` (Linux 6.6+): the kernel wakes the receiving
   * thread on the target's CPU, which cuts the round trip several-fold. Returns whether it took.
   */
  setSyncWakeUp(): boolean {
    return this.#lib.symbols.ioctl_val(
      this.#fd,
      SECCOMP_IOCTL.NOTIF_SET_FLAGS,
      SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP,
    ) === 0;
  }

  /**
   * Waits until a notification is pending (`readable`), every process under the filter has
   * exited (`hangup`), or `timeoutMs` passes.
   */
  wait(timeoutMs: number): PollState {
    this.#pview.setInt16(6, 0, true);
    const n = this.#lib.symbols.poll(this.#pfd, 1n, timeoutMs);
    if (n <= 0) return "timeout";
    return pollState(this.#pview.getInt16(6, true));
  }

  /**
   * Receives one notification into `into` (80 bytes, zeroed here first as the kernel requires).
   * `gone` means the target died before it was read (ENOENT); `interrupted` a signal (EINTR).
   *
   * @throws {SyscallError} for any other failure.
   */
  receive(into: Uint8Array): ReceiveResult {
    into.fill(0, 0, NOTIF_SIZE);
    if (this.#lib.symbols.ioctl_buf(this.#fd, SECCOMP_IOCTL.NOTIF_RECV, into) === 0) return "ok";
    const e = errno(this.#lib);
    if (e === ENOENT) return "gone";
    if (e === EINTR) return "interrupted";
    throw new SyscallError("ioctl(SECCOMP_IOCTL_NOTIF_RECV)", e);
  }

  /** Whether notification `id` is still pending (its target is still blocked in the syscall). */
  isValid(id: bigint): boolean {
    this.#id[0] = id;
    for (;;) {
      if (
        this.#lib.symbols.ioctl_buf(this.#fd, SECCOMP_IOCTL.NOTIF_ID_VALID, this.#idBytes) === 0
      ) {
        return true;
      }
      // The kernel takes its lock interruptibly: a wake-up signal is no answer.
      if (errno(this.#lib) !== EINTR) return false;
    }
  }

  /**
   * Sends an answer (`struct seccomp_notif_resp`, 24 bytes). Returns false when the target is
   * gone (ENOENT): it was killed while it waited, and nobody needs the answer.
   *
   * @throws {SyscallError} for any other failure (EINPROGRESS: answered twice).
   */
  respond(response: Uint8Array): boolean {
    for (;;) {
      if (this.#lib.symbols.ioctl_buf(this.#fd, SECCOMP_IOCTL.NOTIF_SEND, response) === 0) {
        return true;
      }
      const e = errno(this.#lib);
      if (e === ENOENT) return false;
      // The kernel takes its lock interruptibly: a wake-up signal sent nothing; send again.
      if (e === EINTR) continue;
      throw new SyscallError("ioctl(SECCOMP_IOCTL_NOTIF_SEND)", e);
    }
  }

  /**
   * Installs `srcfd` (a file the supervisor opened) in the target of notification `id`
   * (`SECCOMP_IOCTL_NOTIF_ADDFD`), and returns its number there, or `-errno` (ENOENT: the target
   * is gone). The caller then answers with that number as the syscall's result. No `FLAG_SEND`:
   * an ADDFD interrupted by a signal (EINTR) installed nothing and is safe to retry, whereas an
   * interrupted `FLAG_SEND` may already have answered, and its retry fails.
   */
  addFd(id: bigint, options: { srcfd: number; cloexec: boolean }): number {
    this.#addfd.fill(0);
    const view = new DataView(this.#addfd.buffer);
    view.setBigUint64(0, id, true);
    view.setUint32(8, 0, true);
    view.setUint32(12, options.srcfd, true);
    view.setUint32(16, 0, true);
    view.setUint32(20, options.cloexec ? O_CLOEXEC : 0, true);
    for (;;) {
      const n = this.#lib.symbols.ioctl_buf(this.#fd, SECCOMP_IOCTL.NOTIF_ADDFD, this.#addfd);
      if (n >= 0) return n;
      const e = errno(this.#lib);
      if (e !== EINTR) return -e;
    }
  }

  /** Closes the listener fd. Idempotent. */
  close(): void {
    if (this.#fd < 0) return;
    this.#lib.symbols.close(this.#fd);
    this.#fd = -1;
  }
}

// ---------------------------------------------------------------------------------------------
// Reading the target: memory and /proc

/**
 * Copies memory of process `pid` at `remote` into `into` with `process_vm_readv`, one remote
 * iovec per page so that a string ending just before an unmapped page is still read. Returns
 * the number of bytes read (possibly short), or `-errno` when nothing could be read (EFAULT:
 * bad address; ESRCH: the process is gone; EPERM: not allowed to read it).
 */
export class MemoryReader {
  readonly #lib: Libc;
  readonly #local = new BigUint64Array(2);
  readonly #remote = new BigUint64Array(4);
  readonly #localBytes: Uint8Array<ArrayBuffer>;
  readonly #remoteBytes: Uint8Array<ArrayBuffer>;

  /** Prepares the reusable iovec buffers. */
  constructor() {
    this.#lib = lib();
    this.#localBytes = new Uint8Array(this.#local.buffer);
    this.#remoteBytes = new Uint8Array(this.#remote.buffer);
  }

  /** Reads up to `into.length` bytes (at most two pages) of `pid` at `remote`. */
  read(pid: number, remote: bigint, into: Uint8Array): number {
    const length = into.length;
    this.#local[0] = address(into);
    this.#local[1] = BigInt(length);
    const first = Math.min(length, 4096 - Number(remote & 4095n));
    this.#remote[0] = remote;
    this.#remote[1] = BigInt(first);
    let count = 1n;
    if (first < length) {
      this.#remote[2] = remote + BigInt(first);
      this.#remote[3] = BigInt(length - first);
      count = 2n;
    }
    const got = Number(
      this.#lib.symbols.process_vm_readv(pid, this.#localBytes, 1n, this.#remoteBytes, count, 0n),
    );
    return got === -1 ? -errno(this.#lib) : got;
  }
}

/**
 * Small, allocation-light reads of /proc files and links from a Worker, through libc (no Deno
 * ops, no exceptions on the hot path).
 */
export class ProcReader {
  readonly #lib: Libc;
  readonly #buffer = new Uint8Array(8192);
  readonly #small = new Uint8Array(16);

  /** Opens libc for this isolate. */
  constructor() {
    this.#lib = lib();
  }

  /** The target of a symbolic link such as `/proc/PID/cwd`, or `null` when it cannot be read. */
  readLink(path: string): string | null {
    const n = Number(
      this.#lib.symbols.readlink(cString(path), this.#buffer, BigInt(this.#buffer.length)),
    );
    if (n < 0 || n >= this.#buffer.length) return null;
    return decoder.decode(this.#buffer.subarray(0, n));
  }

  /** Opens a file read-only (O_CLOEXEC); returns the fd or `-errno`. */
  open(path: string): number {
    const fd = this.#lib.symbols.open(cString(path), O_RDONLY_CLOEXEC, 0);
    return fd === -1 ? -errno(this.#lib) : fd;
  }

  /**
   * Whether a path exists: 0 if it does, else `-errno` (ENOENT, ENOTDIR, EACCES...). Opens it
   * with O_PATH, which never blocks on a FIFO nor reads a byte.
   */
  exists(path: string): number {
    const fd = this.#lib.symbols.open(cString(path), O_PATH_CLOEXEC, 0);
    if (fd === -1) return -errno(this.#lib);
    this.#lib.symbols.close(fd);
    return 0;
  }

  /**
   * Whether an open /proc/PID/... file still belongs to a live process: its read fails (ESRCH)
   * once that very process or thread is gone, even if its number was reused since.
   */
  alive(fd: number): boolean {
    return Number(this.#lib.symbols.pread(fd, this.#small, 16n, 0n)) >= 0;
  }

  /** Reads an open /proc file from offset 0 (pread); `null` when the read fails (ESRCH: exited). */
  preadText(fd: number): string | null {
    const n = Number(this.#lib.symbols.pread(fd, this.#buffer, BigInt(this.#buffer.length), 0n));
    if (n < 0) return null;
    return decoder.decode(this.#buffer.subarray(0, n));
  }

  /** Reads a whole small file's bytes (up to 8 KiB); `null` when it cannot be read. */
  readBytes(path: string): Uint8Array | null {
    const fd = this.open(path);
    if (fd < 0) return null;
    try {
      const n = Number(this.#lib.symbols.pread(fd, this.#buffer, BigInt(this.#buffer.length), 0n));
      return n < 0 ? null : this.#buffer.slice(0, n);
    } finally {
      this.#lib.symbols.close(fd);
    }
  }

  /** Closes an fd from {@link open}. */
  close(fd: number): void {
    if (fd >= 0) this.#lib.symbols.close(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// The supervisor's own opens (block mode)

const O_PATH = 0o10000000;
const O_NOFOLLOW = 0o400000;
const O_DIRECTORY = 0o200000;
const S_IFMT = 0o170000;

/** What kind of file an O_PATH descriptor names. */
export type FileType = "file" | "directory" | "fifo" | "socket" | "char" | "block" | "link";

const FILE_TYPES: Record<number, FileType> = {
  0o100000: "file",
  0o040000: "directory",
  0o010000: "fifo",
  0o140000: "socket",
  0o020000: "char",
  0o060000: "block",
  0o120000: "link",
};

/**
 * The opens the supervisor makes itself on a caller's behalf, so that a decision is taken on
 * the file that will be handed over, never on a path the caller could rewrite after the check:
 * first an O_PATH open (no byte read, no truncation, no FIFO wait), then, once allowed, a
 * re-open of that very inode through `/proc/self/fd/N` with the caller's flags.
 */
export class FileOpener {
  readonly #lib: Libc;
  readonly #stat = new Uint8Array(144);
  readonly #link = new Uint8Array(4096);

  /** Opens libc for this isolate. */
  constructor() {
    this.#lib = lib();
  }

  /** The supervisor's effective user and group ids (what its opens are checked against). */
  identity(): { uid: number; gid: number } {
    return { uid: this.#lib.symbols.geteuid(), gid: this.#lib.symbols.getegid() };
  }

  /**
   * Opens `path` with O_PATH (the last component not followed when `nofollow`): the fd, or
   * `-errno` (the errno the caller's own open would have met resolving the same path).
   */
  openPath(path: string, options: { nofollow: boolean; directory: boolean }): number {
    const flags = O_PATH | O_CLOEXEC | (options.nofollow ? O_NOFOLLOW : 0) |
      (options.directory ? O_DIRECTORY : 0);
    const fd = this.#lib.symbols.open(cString(path), flags, 0);
    return fd === -1 ? -errno(this.#lib) : fd;
  }

  /** The path the kernel gives a descriptor (`/proc/self/fd/N`), or null. */
  pathOf(fd: number): string | null {
    const n = Number(
      this.#lib.symbols.readlink(cString(`/proc/self/fd/${fd}`), this.#link, 4096n),
    );
    if (n < 0 || n >= 4096) return null;
    return decoder.decode(this.#link.subarray(0, n));
  }

  /** The type of the file a descriptor names, or null when fstat fails. */
  typeOf(fd: number): FileType | null {
    if (this.#lib.symbols.fstat(fd, this.#stat) !== 0) return null;
    const mode = new DataView(this.#stat.buffer).getUint32(24, true);
    return FILE_TYPES[mode & S_IFMT] ?? null;
  }

  /** Re-opens the inode an O_PATH descriptor names, with `flags` (O_CLOEXEC added): fd or `-errno`. */
  reopen(fd: number, flags: number): number {
    const out = this.#lib.symbols.open(cString(`/proc/self/fd/${fd}`), flags | O_CLOEXEC, 0);
    return out === -1 ? -errno(this.#lib) : out;
  }

  /** Creates `name` in a directory fd, exclusively, with `mode` then exactly `mode`: fd or `-errno`. */
  create(dirfd: number, options: { name: string; flags: number; mode: number }): number {
    const O_CREAT_EXCL = 0o100 | 0o200;
    const fd = this.#lib.symbols.openat(
      dirfd,
      cString(options.name),
      options.flags | O_CREAT_EXCL | O_CLOEXEC,
      options.mode,
    );
    if (fd === -1) return -errno(this.#lib);
    // The supervisor's umask applied, not the caller's: set the mode the caller would have got.
    this.#lib.symbols.fchmod(fd, options.mode);
    return fd;
  }

  /** Closes a descriptor. */
  close(fd: number): void {
    if (fd >= 0) this.#lib.symbols.close(fd);
  }
}

// ---------------------------------------------------------------------------------------------
// The supervisor's own connects on the caller's socket (block mode)

const SYS_PIDFD_OPEN = 434n;
const SYS_PIDFD_GETFD = 438n;
/** `PIDFD_THREAD` (= O_EXCL, Linux 6.9): a pidfd on one thread, whose own fd table it reaches. */
const PIDFD_THREAD = 0o200n;
const F_GETFL = 3;
const F_SETFL = 4;
/** `O_NONBLOCK`: a file status flag, shared by every descriptor of one open file description. */
export const O_NONBLOCK = 0o4000;
const SO_SNDTIMEO_OLD = 21;
const S_IFSOCK = 0o140000;
const POLLOUT = 0x4;

/**
 * What the supervisor does on a caller's socket to connect it itself: take the caller's very
 * socket (`pidfd_getfd`: the same open file description, not a copy of it), read and set its
 * flags, connect it, and wait for the connect to finish. Every method returns `-errno` on
 * failure instead of throwing: the errno is the caller's answer.
 */
export class SocketOps {
  readonly #lib: Libc;
  readonly #stat = new Uint8Array(144);
  readonly #timeval = new BigInt64Array(2);
  readonly #length = new Uint32Array(1);

  /** Opens libc for this isolate. */
  constructor() {
    this.#lib = lib();
  }

  /**
   * A descriptor, in this process, of the open file that fd `fd` of thread `tid` (of process
   * `pid`) names: `pidfd_open` (per thread where the kernel can, else per process) then
   * `pidfd_getfd`. Returns the fd or `-errno` (EBADF: no such fd; ESRCH: gone; EPERM: not
   * allowed to take it).
   */
  take(options: { pid: number; tid: number; fd: number }): number {
    const s = this.#lib.symbols;
    let pidfd = Number(s.syscall(SYS_PIDFD_OPEN, BigInt(options.tid), PIDFD_THREAD, 0n, 0n));
    if (pidfd < 0) pidfd = Number(s.syscall(SYS_PIDFD_OPEN, BigInt(options.pid), 0n, 0n, 0n));
    if (pidfd < 0) return -errno(this.#lib);
    const fd = Number(s.syscall(SYS_PIDFD_GETFD, BigInt(pidfd), BigInt(options.fd), 0n, 0n));
    const code = fd < 0 ? errno(this.#lib) : 0;
    s.close(pidfd);
    return fd < 0 ? -code : fd;
  }

  /** Whether a descriptor is a socket (false when fstat fails). */
  isSocket(fd: number): boolean {
    if (this.#lib.symbols.fstat(fd, this.#stat) !== 0) return false;
    return (new DataView(this.#stat.buffer).getUint32(24, true) & 0o170000) === S_IFSOCK;
  }

  /** The file status flags (`F_GETFL`), or `-errno`. */
  flags(fd: number): number {
    const flags = this.#lib.symbols.fcntl(fd, F_GETFL, 0n);
    return flags === -1 ? -errno(this.#lib) : flags;
  }

  /** Sets the file status flags (`F_SETFL`): 0 or `-errno`. */
  setFlags(fd: number, flags: number): number {
    return this.#lib.symbols.fcntl(fd, F_SETFL, BigInt(flags)) === -1 ? -errno(this.#lib) : 0;
  }

  /** connect(2) with a `struct sockaddr`: 0 or `-errno` (EINTR is retried). */
  connect(fd: number, addr: Uint8Array): number {
    const bytes = new Uint8Array(addr);
    for (;;) {
      if (this.#lib.symbols.connect(fd, bytes, bytes.length) === 0) return 0;
      const e = errno(this.#lib);
      if (e !== EINTR) return -e;
    }
  }

  /**
   * The socket's send timeout (`SO_SNDTIMEO`) in ms, which also bounds a blocking connect:
   * 0 when none is set.
   */
  sendTimeoutMs(fd: number): number {
    this.#timeval.fill(0n);
    this.#length[0] = 16;
    const r = this.#lib.symbols.getsockopt(
      fd,
      SOL_SOCKET,
      SO_SNDTIMEO_OLD,
      new Uint8Array(this.#timeval.buffer),
      new Uint8Array(this.#length.buffer),
    );
    if (r !== 0) return 0;
    const [sec = 0n, usec = 0n] = this.#timeval;
    return Number(sec) * 1000 + Math.ceil(Number(usec) / 1000);
  }

  /** Closes a descriptor. */
  close(fd: number): void {
    if (fd >= 0) this.#lib.symbols.close(fd);
  }
}

/**
 * Waits (poll(2), on the calling thread) until the listener is readable or hung up, one of the
 * `sockets` is writable or in error, or `timeoutMs` passes (-1: no limit). Returns the
 * listener's state and, per socket, whether it is ready. A signal ends the wait early (nothing
 * ready).
 */
export function pollListenerAndSockets(
  listenerFd: number,
  options: { sockets: readonly number[]; timeoutMs: number },
): { listener: PollState; ready: boolean[] } {
  const handle = lib();
  const count = 1 + options.sockets.length;
  const pfd = new Uint8Array(8 * count);
  const view = new DataView(pfd.buffer);
  view.setInt32(0, listenerFd, true);
  view.setInt16(4, POLLIN, true);
  options.sockets.forEach((fd, i) => {
    view.setInt32(8 * (i + 1), fd, true);
    view.setInt16(8 * (i + 1) + 4, POLLOUT, true);
  });
  const n = handle.symbols.poll(pfd, BigInt(count), Math.max(-1, Math.floor(options.timeoutMs)));
  if (n <= 0) return { listener: "timeout", ready: options.sockets.map(() => false) };
  return {
    listener: pollState(view.getInt16(6, true)),
    ready: options.sockets.map((_, i) => view.getInt16(8 * (i + 1) + 6, true) !== 0),
  };
}
