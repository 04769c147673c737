/**
 * Process control calls that Deno has no API for, made through FFI on the C library: becoming a
 * child subreaper, reaping adopted orphans, and handing a terminal to a process group.
 *
 * Why a subreaper: an agent's tree can double-fork, and the orphan would be re-parented to init,
 * out of Sentry's sight. When Sentry is a child subreaper (prctl PR_SET_CHILD_SUBREAPER), orphans
 * of its descendants are re-parented to Sentry instead, so the tree stays whole; Sentry must then
 * reap them when they exit ({@link reapIfZombie}), or they linger as zombies.
 *
 * The library is opened lazily, once. When FFI cannot be used (no `--allow-ffi`, not Linux, no
 * libc), every call returns `false` or `null` and {@link ffiAvailable} says why. After a failed
 * call, {@link lastFfiError} gives the errno.
 *
 * @module
 */

const SYMBOLS = {
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  // The same function, for PR_GET_* calls whose second argument is an int pointer.
  prctl_out: { name: "prctl", parameters: ["i32", "buffer", "u64", "u64", "u64"], result: "i32" },
  waitpid: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  tcsetpgrp: { parameters: ["i32", "i32"], result: "i32" },
  getpgid: { parameters: ["i32"], result: "i32" },
  signal: { parameters: ["i32", "pointer"], result: "pointer" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

const PR_SET_CHILD_SUBREAPER = 36;
const PR_GET_CHILD_SUBREAPER = 37;
const WNOHANG = 1;
const SIGTTOU = 22;
const SIG_IGN = 1n;
const SIG_ERR = 0xffffffffffffffffn;

/** Names of the errno values these calls can return, for messages. */
const ERRNO_NAMES: Readonly<Record<number, string>> = {
  1: "EPERM",
  3: "ESRCH",
  5: "EIO",
  9: "EBADF",
  10: "ECHILD",
  14: "EFAULT",
  22: "EINVAL",
  25: "ENOTTY",
};

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

let libc: Libc | null | undefined;
let unavailable = "";
let lastError: FfiError | null = null;

function open(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (Deno.build.os !== "linux") {
    unavailable = `Process control through libc needs Linux, not "${Deno.build.os}"`;
    return null;
  }
  const problems: string[] = [];
  // glibc names its library libc.so.6; musl (Alpine) answers to libc.so.
  for (const name of ["libc.so.6", "libc.so"]) {
    try {
      libc = Deno.dlopen(name, SYMBOLS);
      return libc;
    } catch (error: unknown) {
      problems.push(`${name}: ${error instanceof Error ? error.message : String(error)}`);
      // Without --allow-ffi every attempt fails the same way.
      if (error instanceof Deno.errors.NotCapable) break;
    }
  }
  unavailable = `Cannot open the C library: ${problems.join("; ")}`;
  return null;
}

/** Records errno after a libc call returned -1, and returns the failure value. */
function fail<T>(lib: Libc, call: string, value: T): T {
  const pointer = lib.symbols.__errno_location();
  const errno = pointer === null ? 0 : new Deno.UnsafePointerView(pointer).getInt32();
  const name = ERRNO_NAMES[errno] ?? `errno ${errno}`;
  lastError = { call, errno, message: `${call} failed: ${name}` };
  return value;
}

/** Whether FFI on libc works here, and if not, why. */
export type FfiAvailability = { ok: true } | { ok: false; reason: string };

/** Opens libc if needed and reports whether the calls in this module can work. */
export function ffiAvailable(): FfiAvailability {
  return open() === null ? { ok: false, reason: unavailable } : { ok: true };
}

/** The most recent failed libc call in this module. */
export interface FfiError {
  /** The call, e.g. "waitpid(1234)". */
  call: string;
  /** The errno it set. */
  errno: number;
  /** A message naming the call and the errno, e.g. `waitpid(1234) failed: ECHILD`. */
  message: string;
}

/** The most recent libc call of this module that failed, or `null` if none has. For logs. */
export function lastFfiError(): FfiError | null {
  return lastError;
}

/**
 * Makes this process a child subreaper (or stops being one with `false`): orphans among its
 * descendants are then re-parented to it rather than to init. Returns whether the call worked;
 * `false` also when FFI is unavailable. Children forked by this process start without the
 * setting; it survives exec and lasts until the process exits or turns it off.
 */
export function setChildSubreaper(enable = true): boolean {
  const lib = open();
  if (lib === null) return false;
  const ok = lib.symbols.prctl(PR_SET_CHILD_SUBREAPER, enable ? 1n : 0n, 0n, 0n, 0n) === 0;
  return ok || fail(lib, `prctl(PR_SET_CHILD_SUBREAPER, ${enable ? 1 : 0})`, false);
}

/** Whether this process is a child subreaper; `null` when FFI is unavailable or the call fails. */
export function isChildSubreaper(): boolean | null {
  const lib = open();
  if (lib === null) return null;
  const value = new Int32Array(1);
  if (lib.symbols.prctl_out(PR_GET_CHILD_SUBREAPER, value, 0n, 0n, 0n) !== 0) {
    return fail(lib, "prctl(PR_GET_CHILD_SUBREAPER)", null);
  }
  return value[0] !== 0;
}

/** How a process ended, decoded from a wait status. */
export interface WaitResult {
  /** Exit code when the process exited, else `null`. */
  code: number | null;
  /** Number of the signal that killed it, else `null`. */
  signal: number | null;
}

/**
 * Decodes a wait(2) status word as the WIFEXITED, WEXITSTATUS, WIFSIGNALED and WTERMSIG macros
 * do. A stopped or continued status gives both fields `null`.
 */
export function decodeWaitStatus(status: number): WaitResult {
  const low = status & 0x7f;
  if (low === 0) return { code: (status >> 8) & 0xff, signal: null };
  // 0x7f marks a stopped (or, as 0xffff, continued) child.
  if (low !== 0x7f) return { code: null, signal: low };
  return { code: null, signal: null };
}

/**
 * Reaps a child that has exited: `waitpid(pid, &status, WNOHANG)`. Returns how it ended, or
 * `null` when it is still running, is not a child of this process (see {@link lastFfiError}), or
 * FFI is unavailable.
 *
 * Use it only for orphans adopted as a subreaper. Never call it on a process started with
 * `Deno.Command`: Deno waits for those itself, and reaping one here steals its exit status.
 */
export function reapIfZombie(pid: number): WaitResult | null {
  if (!Number.isInteger(pid) || pid < 1) {
    // waitpid(0) or waitpid(-1) would reap any child, including Deno's own.
    throw new RangeError(`Cannot reap pid "${pid}": expected a positive integer`);
  }
  const lib = open();
  if (lib === null) return null;
  const status = new Int32Array(1);
  const result = lib.symbols.waitpid(pid, status, WNOHANG);
  if (result === -1) return fail(lib, `waitpid(${pid})`, null);
  if (result === 0) return null;
  return decodeWaitStatus(status[0] ?? 0);
}

/**
 * Makes a process group the foreground group of a terminal (tcsetpgrp), as a shell does before
 * it runs a job, so that the job can read the terminal and gets its Ctrl-C. SIGTTOU is ignored
 * around the call and then restored: a process that calls tcsetpgrp from the background (say, to
 * take the terminal back after the agent had it) would otherwise be stopped by SIGTTOU.
 * Returns whether it worked; see {@link lastFfiError} for why not (ENOTTY, EPERM).
 */
export function setForegroundProcessGroup(fd: number, pgid: number): boolean {
  const lib = open();
  if (lib === null) return false;
  const previous = lib.symbols.signal(SIGTTOU, Deno.UnsafePointer.create(SIG_IGN));
  let ok: boolean;
  try {
    ok = lib.symbols.tcsetpgrp(fd, pgid) === 0;
    if (!ok) fail(lib, `tcsetpgrp(${fd}, ${pgid})`, false);
  } finally {
    // signal() returns SIG_ERR (-1) on failure, and then there is nothing to restore.
    if (Deno.UnsafePointer.value(previous) !== SIG_ERR) lib.symbols.signal(SIGTTOU, previous);
  }
  return ok;
}

/**
 * Returns the process group of a process (getpgid; 0 means this process), or `null` when it does
 * not exist or FFI is unavailable.
 */
export function getProcessGroup(pid: number): number | null {
  const lib = open();
  if (lib === null) return null;
  const pgid = lib.symbols.getpgid(pid);
  return pgid === -1 ? fail(lib, `getpgid(${pid})`, null) : pgid;
}
