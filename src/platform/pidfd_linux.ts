/**
 * Signalling a process by identity rather than by number. A pid names a process only while it
 * lives: once it has exited and been reaped, the kernel may hand the same number to an unrelated
 * process. Every control Sentry has (pause, resume, kill, the watchdog's rescue) therefore holds
 * a {@link ProcessRef}, the pid together with the start time /proc gave it, and signals through a
 * {@link ProcessHandle}:
 *
 * - the handle opens a pidfd (`pidfd_open`, Linux 5.3) and only then compares the start time in
 *   /proc/PID/stat with the ref's. A match proves the pidfd names the very process of the ref
 *   (it existed before the pidfd was opened and still exists now), and every later signal goes
 *   through the pidfd (`pidfd_send_signal`), which can never reach another process, however long
 *   the handle is held (a kill's grace period, say);
 * - without pidfds (no FFI permission, an old kernel) the handle compares the start time right
 *   before each `kill(2)`, which leaves a window of microseconds instead of seconds.
 *
 * @module
 */

import { type FailureReason, failureReason, type ProcStat, readStat } from "./proc_linux.ts";

/** A process as Sentry recorded it: its pid and its start time (clock ticks after boot). */
export interface ProcessRef {
  pid: number;
  /** `starttime` from /proc/PID/stat: with the pid, it names one process for the boot. */
  start: number;
}

/** Why a signal did not reach a process. */
export interface SendFailure {
  /** gone: it exited, or its pid now names another process; denied: no permission. */
  reason: FailureReason;
  message: string;
}

const SYMBOLS = {
  syscall: { parameters: ["i64", "i64", "i64", "i64", "i64"], result: "i64" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

// The same numbers on every architecture: both calls came after the syscall tables were unified.
const SYS_PIDFD_SEND_SIGNAL = 424n;
const SYS_PIDFD_OPEN = 434n;
const ESRCH = 3;
const EPERM = 1;
const EACCES = 13;

/** Linux signal numbers (the generic table, also x86-64's) of the signals Sentry sends. */
const SIGNAL_NUMBERS: Readonly<Partial<Record<Deno.Signal, number>>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGKILL: 9,
  SIGUSR1: 10,
  SIGUSR2: 12,
  SIGTERM: 15,
  SIGCONT: 18,
  SIGSTOP: 19,
  SIGTSTP: 20,
};

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;
let libc: Libc | null | undefined;

function open(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (Deno.build.os !== "linux") return null;
  for (const name of ["libc.so.6", "libc.so"]) {
    try {
      libc = Deno.dlopen(name, SYMBOLS);
      break;
    } catch (error: unknown) {
      if (error instanceof Deno.errors.NotCapable) break;
    }
  }
  if (libc !== null) {
    // Probe once: ENOSYS (before Linux 5.3) or a seccomp filter turns pidfds off for good.
    const fd = Number(libc.symbols.syscall(SYS_PIDFD_OPEN, BigInt(Deno.pid), 0n, 0n, 0n));
    if (fd < 0) {
      libc.close();
      libc = null;
    } else {
      libc.symbols.close(fd);
    }
  }
  return libc;
}

function errno(lib: Libc): number {
  const pointer = lib.symbols.__errno_location();
  return pointer === null ? 0 : new Deno.UnsafePointerView(pointer).getInt32();
}

function reasonOf(code: number): FailureReason {
  if (code === ESRCH) return "gone";
  if (code === EPERM || code === EACCES) return "denied";
  return "error";
}

/** Whether signals go through pidfds here (else through `kill(2)` after a start-time check). */
export function pidfdsAvailable(): boolean {
  return open() !== null;
}

/**
 * Whether a ref still names a live process: "same" (the pid has the recorded start time),
 * "gone" (no such pid), or "other" (the pid was reused by another process).
 */
export function identify(ref: ProcessRef): "same" | "gone" | "other" {
  const stat = readStat(ref.pid);
  if (stat === null) return "gone";
  return stat.starttime === ref.start ? "same" : "other";
}

/** The ref of a live process, read from /proc now, or null when it is gone. */
export function refOf(pid: number): ProcessRef | null {
  const stat = readStat(pid);
  return stat === null ? null : { pid, start: stat.starttime };
}

/**
 * One process, held by identity: signals sent through it reach that process or nothing. Owns a
 * pidfd when pidfds are available; {@link close} releases it.
 */
export class ProcessHandle {
  /** The process's ref. */
  readonly ref: ProcessRef;
  /** Its /proc stat when the handle was opened (process group, session, state). */
  readonly stat: ProcStat;
  #fd: number | null;

  private constructor(ref: ProcessRef, stat: ProcStat, fd: number | null) {
    this.ref = ref;
    this.stat = stat;
    this.#fd = fd;
  }

  /**
   * Opens a handle on the process a ref names, or says why it cannot: "gone" when it has exited
   * (or its pid names another process now), "denied" when it may not be signalled at all.
   */
  static open(ref: ProcessRef): ProcessHandle | SendFailure {
    if (!Number.isInteger(ref.pid) || ref.pid < 1) {
      throw new RangeError(`Cannot open pid "${ref.pid}": expected a positive integer`);
    }
    const lib = open();
    let fd: number | null = null;
    if (lib !== null) {
      fd = Number(lib.symbols.syscall(SYS_PIDFD_OPEN, BigInt(ref.pid), 0n, 0n, 0n));
      if (fd < 0) {
        const code = errno(lib);
        return { reason: reasonOf(code), message: `pidfd_open(${ref.pid}) failed: errno ${code}` };
      }
    }
    // After the pidfd is open: a match now proves the pidfd names the recorded process.
    const stat = readStat(ref.pid);
    if (stat === null || stat.starttime !== ref.start) {
      if (fd !== null) lib?.symbols.close(fd);
      return {
        reason: "gone",
        message: stat === null
          ? `Process ${ref.pid} is gone`
          : `Pid ${ref.pid} now names another process (start time differs): not signalled`,
      };
    }
    return new ProcessHandle(ref, stat, fd);
  }

  /** Sends a signal to the process; null when it was sent, else why not. */
  signal(signal: Deno.Signal): SendFailure | null {
    const lib = this.#fd === null ? null : open();
    const number = SIGNAL_NUMBERS[signal];
    if (lib !== null && this.#fd !== null && number !== undefined) {
      const r = Number(
        lib.symbols.syscall(SYS_PIDFD_SEND_SIGNAL, BigInt(this.#fd), BigInt(number), 0n, 0n),
      );
      if (r === 0) return null;
      const code = errno(lib);
      return {
        reason: reasonOf(code),
        message: `pidfd_send_signal(${this.ref.pid}, ${signal}) failed: errno ${code}`,
      };
    }
    if (identify(this.ref) !== "same") {
      return { reason: "gone", message: `Process ${this.ref.pid} is gone or its pid was reused` };
    }
    try {
      Deno.kill(this.ref.pid, signal);
      return null;
    } catch (error: unknown) {
      return {
        reason: failureReason(error),
        message: error instanceof Error ? error.message : String(error),
      };
    }
  }

  /** Closes the pidfd. Calling it again does nothing. */
  close(): void {
    if (this.#fd === null) return;
    open()?.symbols.close(this.#fd);
    this.#fd = null;
  }
}
