/**
 * A fanotify permission group through FFI on the C library: the kernel holds an open (or an
 * exec, or a read) of a marked inode until Sentry answers allow or deny. Marks go on the
 * protected inodes only, never on a mount or a filesystem: an open anywhere else on the host
 * costs nothing.
 *
 * - {@link PermissionGroup}: `FAN_CLASS_CONTENT | FAN_REPORT_TID | FAN_UNLIMITED_QUEUE |
 *   FAN_UNLIMITED_MARKS`, fd mode (permission groups cannot report file ids). Inode marks with
 *   `FAN_OPEN_PERM | FAN_OPEN_EXEC_PERM` (optionally `FAN_ACCESS_PERM`), and
 *   `FAN_EVENT_ON_CHILD` on directories. The queue is unlimited on purpose: a permission event
 *   dropped on overflow would be allowed by the kernel, and each queued event holds a blocked
 *   thread, so the queue is bounded by the host's threads anyway.
 * - {@link DirectoryWatch}: a notification group (`FAN_REPORT_DFID_NAME`) with `FAN_CREATE |
 *   FAN_MOVED_TO | FAN_ONDIR` on the same directories, so that a directory made or moved in later
 *   gets its marks too.
 * - {@link ProcFiles}: allocation-light reads of /proc files and of the opener's memory
 *   (`process_vm_readv`, for openat2's `struct open_how`).
 * - {@link WakeFd}: an eventfd to wake a thread blocked in {@link pollReadable}.
 *
 * Everything here is synchronous and meant for a Worker's thread, which may block: see
 * src/sensors/fanotify_guard_worker.ts. The thread that answers must never open a marked file
 * itself (it would wait for its own answer): it reads /proc only, which is never marked.
 *
 * **Fails open.** When the group's fd is closed (by {@link PermissionGroup.close}, or by the
 * kernel when Sentry dies, even by SIGKILL), the kernel removes the marks and allows every open
 * still waiting for an answer. An answer never comes late to a dead Sentry.
 *
 * A denied open fails with EPERM (the kernel's answer to `FAN_DENY`; other errnos need a
 * pre-content group, 6.14+).
 *
 * @module
 */

import { errnoOf, openLibc } from "./_libc.ts";
import { errnoName } from "./kernel_abi.ts";
import { FAN, fileId } from "./fanotify_record.ts";
import { encodeResponse, FAN_PERM, FAN_RESPONSE_BYTES } from "./fanotify_perm_record.ts";

const SYMBOLS = {
  fanotify_init: { parameters: ["u32", "u32"], result: "i32" },
  fanotify_mark: { parameters: ["i32", "u32", "u64", "i32", "buffer"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32" },
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  name_to_handle_at: { parameters: ["i32", "buffer", "buffer", "buffer", "i32"], result: "i32" },
  statfs: { parameters: ["buffer", "buffer"], result: "i32" },
  process_vm_readv: {
    parameters: ["i32", "buffer", "u64", "buffer", "u64", "u64"],
    result: "isize",
  },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

const FAN_CLOEXEC = 0x1;
const FAN_NONBLOCK = 0x2;
const FAN_CLASS_NOTIF = 0x0;
const FAN_CLASS_CONTENT = 0x4;
const FAN_UNLIMITED_QUEUE = 0x10;
const FAN_UNLIMITED_MARKS = 0x20;
const FAN_ENABLE_AUDIT = 0x40;
const FAN_REPORT_TID = 0x100;
const FAN_REPORT_DIR_FID = 0x400;
const FAN_REPORT_NAME = 0x800;
const FAN_MARK_ADD = 0x1;
const FAN_MARK_DONT_FOLLOW = 0x4;
const FAN_MARK_ONLYDIR = 0x8;
const FAN_MARK_IGNORED_MASK = 0x20;
const FAN_MARK_IGNORED_SURV_MODIFY = 0x40;
const O_RDONLY = 0;
const O_NONBLOCK = 0o4000;
const O_LARGEFILE = 0o100000;
const O_CLOEXEC = 0o2000000;
const AT_FDCWD = -100;
const AT_HANDLE_FID = 0x200;
const MAX_HANDLE_SZ = 128;
const EFD_CLOEXEC = 0o2000000;
const EAGAIN = 11;
const EINTR = 4;
const EINVAL = 22;
const POLLIN = 0x1;
const STATFS_FSID_OFFSET = 56;
const STATFS_BYTES = 120;

/** A failed call to the kernel, with its errno. */
export class FanotifyPermError extends Error {
  /** The call that failed, such as `fanotify_init`. */
  readonly call: string;
  /** The errno it set (0 when FFI itself was unavailable). */
  readonly errno: number;

  /** Builds the error; the message names the call and the errno. */
  constructor(call: string, errno: number, options?: ErrorOptions) {
    super(
      errno === 0
        ? `Cannot use fanotify permission events: ${call}`
        : `Cannot use fanotify permission events: ${call} failed: ${errnoName(errno)}`,
      options,
    );
    this.name = "FanotifyPermError";
    this.call = call;
    this.errno = errno;
  }
}

/** How {@link PermissionGroup.open} sets the group up. */
export interface PermissionGroupOptions {
  /**
   * Also hold every read(2) of a marked file (`FAN_ACCESS_PERM`): it catches reads through a
   * descriptor opened before the guard started (`attach`). Default false.
   */
  accessPerm?: boolean;
  /** Make the group with `FAN_ENABLE_AUDIT`, so answers can ask for an audit record. */
  audit?: boolean;
  /** The read buffer, in bytes. Default 64 KiB (2,730 events). */
  bufferBytes?: number;
}

/** Where a mark goes. */
export interface MarkTarget {
  path: string;
  /** A directory: its direct children's events too (`FAN_EVENT_ON_CHILD`, `FAN_MARK_ONLYDIR`). */
  directory: boolean;
  /** Follow a symlink at `path` (default false: `FAN_MARK_DONT_FOLLOW`). */
  follow?: boolean;
}

/**
 * One permission group. It owns the group fd; `close()` releases it, which removes every mark
 * and allows every open still waiting. Use it from one thread.
 */
export class PermissionGroup {
  /** The group's fd. */
  readonly fd: number;
  /** The event mask of every mark. */
  readonly mask: number;
  /** Whether answers may carry `FAN_AUDIT`. */
  readonly audit: boolean;
  readonly #lib: Libc;
  readonly #buffer: Uint8Array;
  readonly #response = new Uint8Array(FAN_RESPONSE_BYTES);
  readonly #link = new Uint8Array(4096);
  #closed = false;

  private constructor(lib: Libc, fd: number, mask: number, options: PermissionGroupOptions) {
    this.#lib = lib;
    this.fd = fd;
    this.mask = mask;
    this.audit = options.audit === true;
    this.#buffer = new Uint8Array(options.bufferBytes ?? 64 * 1024);
  }

  /**
   * Makes the group. Throws {@link FanotifyPermError}: EPERM without CAP_SYS_ADMIN, EINVAL on a
   * kernel without permission events (CONFIG_FANOTIFY_ACCESS_PERMISSIONS) or without
   * `FAN_REPORT_TID` (4.20).
   */
  static open(options: PermissionGroupOptions = {}): PermissionGroup {
    const lib = libcFor();
    const flags = FAN_CLASS_CONTENT | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_QUEUE |
      FAN_UNLIMITED_MARKS | FAN_REPORT_TID | (options.audit ? FAN_ENABLE_AUDIT : 0);
    // O_NONBLOCK: the event fd of a FIFO must not block the reader until a writer comes.
    const fd = lib.symbols.fanotify_init(flags, O_RDONLY | O_LARGEFILE | O_CLOEXEC | O_NONBLOCK);
    if (fd < 0) {
      const errno = errnoOf(lib);
      lib.close();
      throw new FanotifyPermError("fanotify_init(FAN_CLASS_CONTENT)", errno);
    }
    const mask = FAN_PERM.OPEN_PERM | FAN_PERM.OPEN_EXEC_PERM |
      (options.accessPerm ? FAN_PERM.ACCESS_PERM : 0);
    return new PermissionGroup(lib, fd, mask, options);
  }

  /** Adds an inode mark. Returns 0, or the errno (ENOENT, ENOTDIR, EXDEV...). */
  mark(target: MarkTarget): number {
    if (this.#closed) return EINVAL;
    const flags = FAN_MARK_ADD | (target.follow ? 0 : FAN_MARK_DONT_FOLLOW) |
      (target.directory ? FAN_MARK_ONLYDIR : 0);
    const mask = this.mask | (target.directory ? FAN_PERM.EVENT_ON_CHILD : 0);
    const ok = this.#lib.symbols.fanotify_mark(
      this.fd,
      flags,
      BigInt(mask),
      AT_FDCWD,
      cString(target.path),
    ) === 0;
    return ok ? 0 : errnoOf(this.#lib) || EINVAL;
  }

  /**
   * Exempts one file (not following a symlink) from the group's events, whatever mark would
   * report them (an ignore mask on its inode, kept across modifications). Returns 0 or the errno.
   * For files Sentry itself holds POSIX locks on (SQLite's): a permission event's fd for them
   * would be opened in Sentry's process, and its close drops every such lock the process holds.
   */
  ignore(path: string): number {
    if (this.#closed) return EINVAL;
    const ok = this.#lib.symbols.fanotify_mark(
      this.fd,
      FAN_MARK_ADD | FAN_MARK_IGNORED_MASK | FAN_MARK_IGNORED_SURV_MODIFY | FAN_MARK_DONT_FOLLOW,
      BigInt(this.mask),
      AT_FDCWD,
      cString(path),
    ) === 0;
    return ok ? 0 : errnoOf(this.#lib) || EINVAL;
  }

  /**
   * Reads whole events without waiting. Returns a view of the bytes (valid until the next call),
   * or null when the queue is empty. Throws {@link FanotifyPermError} on any other error.
   */
  read(): Uint8Array | null {
    if (this.#closed) return null;
    for (;;) {
      const n = Number(this.#lib.symbols.read(this.fd, this.#buffer, BigInt(this.#buffer.length)));
      if (n > 0) return this.#buffer.subarray(0, n);
      if (n === 0) return null;
      const e = errnoOf(this.#lib);
      if (e === EAGAIN) return null;
      if (e === EINTR) continue;
      throw new FanotifyPermError("read", e);
    }
  }

  /**
   * Answers one event and closes its fd. Returns false when the kernel refused the answer (the
   * opener is gone: ENOENT), which needs nothing more.
   */
  respond(fd: number, allow: boolean): boolean {
    if (fd < 0) return false;
    const bytes = encodeResponse(fd, allow, { audit: this.audit, into: this.#response });
    const n = Number(this.#lib.symbols.write(this.fd, bytes, BigInt(FAN_RESPONSE_BYTES)));
    this.#lib.symbols.close(fd);
    return n === FAN_RESPONSE_BYTES;
  }

  /** The path of an event's fd (as this process's mount namespace sees it), or null. */
  pathOf(fd: number): string | null {
    const n = Number(
      this.#lib.symbols.readlink(
        cString(`/proc/self/fd/${fd}`),
        this.#link,
        BigInt(this.#link.length),
      ),
    );
    if (n <= 0) return null;
    return new TextDecoder().decode(this.#link.subarray(0, n));
  }

  /** Releases the group: every mark goes, and every waiting open is allowed. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#lib.symbols.close(this.fd);
    this.#lib.close();
  }
}

/**
 * A notification group reporting directory entries made or moved into watched directories
 * (`FAN_CREATE | FAN_MOVED_TO | FAN_ONDIR`, `FAN_REPORT_DFID_NAME`), so that new directories
 * beneath a protected one can be marked. Events name the directory by file handle: {@link watch}
 * returns the key events will carry for it.
 */
export class DirectoryWatch {
  /** The group's fd. */
  readonly fd: number;
  readonly #lib: Libc;
  readonly #buffer = new Uint8Array(64 * 1024);
  #closed = false;

  private constructor(lib: Libc, fd: number) {
    this.#lib = lib;
    this.fd = fd;
  }

  /** Makes the group. Throws {@link FanotifyPermError} (EINVAL before 5.9). */
  static open(): DirectoryWatch {
    const lib = libcFor();
    const fd = lib.symbols.fanotify_init(
      FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_UNLIMITED_MARKS | FAN_REPORT_DIR_FID |
        FAN_REPORT_NAME,
      O_RDONLY | O_LARGEFILE | O_CLOEXEC,
    );
    if (fd < 0) {
      const errno = errnoOf(lib);
      lib.close();
      throw new FanotifyPermError("fanotify_init(FAN_REPORT_DFID_NAME)", errno);
    }
    return new DirectoryWatch(lib, fd);
  }

  /**
   * Watches a directory (not following a symlink). Returns the key of its file id, as events
   * report it, or an errno (EXDEV or EOPNOTSUPP: a filesystem without file handles).
   */
  watch(path: string): { key: string } | { errno: number } {
    if (this.#closed) return { errno: EINVAL };
    const name = cString(path);
    const ok = this.#lib.symbols.fanotify_mark(
      this.fd,
      FAN_MARK_ADD | FAN_MARK_DONT_FOLLOW | FAN_MARK_ONLYDIR,
      BigInt(FAN.CREATE | FAN.MOVED_TO | FAN.ONDIR),
      AT_FDCWD,
      name,
    ) === 0;
    if (!ok) return { errno: errnoOf(this.#lib) || EINVAL };
    const key = this.#keyOf(name);
    return key === null ? { errno: errnoOf(this.#lib) || EINVAL } : { key };
  }

  /** Reads whole events without waiting; null when the queue is empty. */
  read(): Uint8Array | null {
    if (this.#closed) return null;
    for (;;) {
      const n = Number(this.#lib.symbols.read(this.fd, this.#buffer, BigInt(this.#buffer.length)));
      if (n > 0) return this.#buffer.subarray(0, n);
      if (n === 0) return null;
      const e = errnoOf(this.#lib);
      if (e === EAGAIN) return null;
      if (e === EINTR) continue;
      throw new FanotifyPermError("read", e);
    }
  }

  /** Releases the group and its marks. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#lib.symbols.close(this.fd);
    this.#lib.close();
  }

  #keyOf(name: Uint8Array): string | null {
    const lib = this.#lib;
    const handle = new Uint8Array(8 + MAX_HANDLE_SZ);
    new DataView(handle.buffer).setUint32(0, MAX_HANDLE_SZ, true);
    const mountId = new Uint8Array(4);
    // AT_HANDLE_FID (6.5+) asks for the encoding fanotify reports.
    let ok = lib.symbols.name_to_handle_at(AT_FDCWD, name, handle, mountId, AT_HANDLE_FID) === 0;
    if (!ok && errnoOf(lib) === EINVAL) {
      ok = lib.symbols.name_to_handle_at(AT_FDCWD, name, handle, mountId, 0) === 0;
    }
    if (!ok) return null;
    const stat = new Uint8Array(STATFS_BYTES);
    if (lib.symbols.statfs(name, stat) !== 0) return null;
    return fileId(stat.subarray(STATFS_FSID_OFFSET, STATFS_FSID_OFFSET + 8), handle).key;
  }
}

/**
 * Blocks the calling thread until one of `fds` is readable or `timeoutMs` passes (-1: forever).
 * Returns, per fd, whether it is readable. Meant for a Worker: it blocks its whole thread.
 */
export function pollReadable(fds: readonly number[], timeoutMs: number): boolean[] {
  const lib = pollLib();
  const buffer = new Uint8Array(8 * fds.length);
  const view = new DataView(buffer.buffer);
  fds.forEach((fd, i) => {
    view.setInt32(i * 8, fd, true);
    view.setInt16(i * 8 + 4, POLLIN, true);
  });
  const n = lib.symbols.poll(buffer, BigInt(fds.length), Math.trunc(timeoutMs));
  if (n <= 0) return fds.map(() => false);
  return fds.map((_, i) => view.getInt16(i * 8 + 6, true) !== 0);
}

let sharedPollLib: Libc | null = null;

function pollLib(): Libc {
  return sharedPollLib ??= libcFor();
}

/**
 * Reads of /proc files and links, and of a process's memory, with reused buffers and no Deno
 * file APIs (nothing here can open a marked file: /proc is never marked).
 */
export class ProcFiles {
  readonly #lib: Libc;
  readonly #buffer = new Uint8Array(8192);
  readonly #decoder = new TextDecoder();
  readonly #local = new BigUint64Array(2);
  readonly #remote = new BigUint64Array(2);
  readonly #word = new BigUint64Array(1);
  readonly #path = new Uint8Array(4096);

  /** Opens libc for this thread. */
  constructor() {
    this.#lib = libcFor();
  }

  /** The text of a /proc file (its first 8 KiB), or null when it cannot be read. */
  read(path: string): string | null {
    const lib = this.#lib;
    const fd = lib.symbols.open(this.#cPath(path), O_RDONLY | O_CLOEXEC);
    if (fd < 0) return null;
    try {
      let total = 0;
      while (total < this.#buffer.length) {
        const n = Number(
          lib.symbols.read(fd, this.#buffer.subarray(total), BigInt(this.#buffer.length - total)),
        );
        if (n < 0 && errnoOf(lib) === EINTR) continue;
        if (n < 0) {
          return total === 0 ? null : this.#decoder.decode(this.#buffer.subarray(0, total));
        }
        if (n === 0) break;
        total += n;
      }
      return this.#decoder.decode(this.#buffer.subarray(0, total));
    } finally {
      lib.symbols.close(fd);
    }
  }

  /** The target of a link such as /proc/PID/exe, or null. */
  readLink(path: string): string | null {
    const n = Number(
      this.#lib.symbols.readlink(this.#cPath(path), this.#buffer, BigInt(this.#buffer.length)),
    );
    return n <= 0 ? null : this.#decoder.decode(this.#buffer.subarray(0, n));
  }

  /** `path` NUL-terminated in a reused buffer (paths of /proc are short). */
  #cPath(path: string): Uint8Array {
    const { written } = encoder.encodeInto(path, this.#path.subarray(0, this.#path.length - 1));
    this.#path[written] = 0;
    return this.#path;
  }

  /** A u64 at `address` in process `pid`'s memory (`process_vm_readv`), or null. */
  readU64(pid: number, address: bigint): bigint | null {
    if (address === 0n) return null;
    const lib = this.#lib;
    this.#word[0] = 0n;
    this.#local[0] = BigInt(Deno.UnsafePointer.value(Deno.UnsafePointer.of(this.#word)));
    this.#local[1] = 8n;
    this.#remote[0] = address;
    this.#remote[1] = 8n;
    const n = Number(
      lib.symbols.process_vm_readv(
        pid,
        new Uint8Array(this.#local.buffer),
        1n,
        new Uint8Array(this.#remote.buffer),
        1n,
        0n,
      ),
    );
    return n === 8 ? this.#word[0] ?? null : null;
  }

  /** Releases the library handle. */
  close(): void {
    this.#lib.close();
  }
}

/** An eventfd that wakes a thread blocked in {@link pollReadable}. Owned by its creator. */
export class WakeFd {
  /** The eventfd. */
  readonly fd: number;
  readonly #lib: Libc;
  #closed = false;

  /** Makes the eventfd. Throws {@link FanotifyPermError} when it cannot. */
  constructor() {
    this.#lib = libcFor();
    this.fd = this.#lib.symbols.eventfd(0, EFD_CLOEXEC);
    if (this.fd < 0) {
      const errno = errnoOf(this.#lib);
      this.#lib.close();
      throw new FanotifyPermError("eventfd", errno);
    }
  }

  /** Makes the eventfd readable (it stays readable: the waiter is expected to stop). */
  wake(): void {
    if (this.#closed) return;
    const one = new BigUint64Array([1n]);
    this.#lib.symbols.write(this.fd, new Uint8Array(one.buffer), 8n);
  }

  /** Closes the eventfd. Only once the waiting thread has stopped. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    this.#lib.symbols.close(this.fd);
    this.#lib.close();
  }
}

const encoder = new TextEncoder();

function cString(text: string): Uint8Array {
  const bytes = new Uint8Array(encoder.encode(text).length + 1);
  encoder.encodeInto(text, bytes);
  return bytes;
}

function libcFor(): Libc {
  if (Deno.build.os !== "linux") {
    throw new FanotifyPermError(`needs Linux, not "${Deno.build.os}"`, 0);
  }
  const opened = openLibc(SYMBOLS);
  if (typeof opened === "string") throw new FanotifyPermError(opened, 0);
  return opened;
}
