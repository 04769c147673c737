/**
 * A fanotify notification group through FFI on the C library: file events of every process on
 * the host, each with its pid, identified by file handles (`FAN_REPORT_DFID_NAME |
 * FAN_REPORT_FID`, and `FAN_REPORT_TARGET_FID` where the kernel has it), with one
 * `FAN_MARK_FILESYSTEM` mark per filesystem.
 *
 * Reading never blocks Deno's event loop: {@link FanotifyGroup.wait} polls on the FFI thread pool,
 * then {@link FanotifyGroup.read} drains synchronously (the group is `FAN_NONBLOCK`). Paths are
 * resolved only when asked ({@link FanotifyGroup.resolveDir}), so a caller that filters by pid
 * first pays nothing for the host's events: `open_by_handle_at(mount fd, handle, O_PATH)` then
 * readlink of `/proc/self/fd/N`, cached by directory handle.
 *
 * The kernel queue holds `fs.fanotify.max_queued_events` events (16,384 by default); past that it
 * drops events and queues one `FAN_Q_OVERFLOW` that says nothing of how many.
 * `FAN_UNLIMITED_QUEUE` is not used: its memory would be bounded by nothing.
 *
 * Needs CAP_SYS_ADMIN (filesystem marks) and CAP_DAC_READ_SEARCH (open_by_handle_at).
 *
 * @module
 */

import { errnoOf, openLibc } from "./_libc.ts";
import { WakeablePoll } from "./_wakeable_poll.ts";
import { errnoName } from "./kernel_abi.ts";
import {
  FAN,
  type FileId,
  fileId,
  parseMountInfo,
  planFilesystemMarks,
} from "./fanotify_record.ts";

const SYMBOLS = {
  fanotify_init: { parameters: ["u32", "u32"], result: "i32" },
  fanotify_mark: { parameters: ["i32", "u32", "u64", "i32", "buffer"], result: "i32" },
  read: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  open: { parameters: ["buffer", "i32"], result: "i32" },
  open_by_handle_at: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  name_to_handle_at: { parameters: ["i32", "buffer", "buffer", "buffer", "i32"], result: "i32" },
  readlink: { parameters: ["buffer", "buffer", "usize"], result: "isize" },
  fstatfs: { parameters: ["i32", "buffer"], result: "i32" },
  statfs: { parameters: ["buffer", "buffer"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

const FAN_CLOEXEC = 0x1;
const FAN_NONBLOCK = 0x2;
const FAN_CLASS_NOTIF = 0x0;
const FAN_REPORT_FID = 0x200;
const FAN_REPORT_DIR_FID = 0x400;
const FAN_REPORT_NAME = 0x800;
const FAN_REPORT_TARGET_FID = 0x1000;
const FAN_MARK_ADD = 0x1;
const FAN_MARK_FILESYSTEM = 0x100;
const O_RDONLY = 0;
const O_LARGEFILE = 0o100000;
const O_CLOEXEC = 0o2000000;
const O_DIRECTORY = 0o200000;
const O_PATH = 0o10000000;
const AT_FDCWD = -100;
const AT_HANDLE_FID = 0x200;
const AT_SYMLINK_FOLLOW = 0x400;
const MAX_HANDLE_SZ = 128;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const EAGAIN = 11;
const EINTR = 4;
const EINVAL = 22;
/** `f_fsid` in `struct statfs` on 64-bit Linux (x86_64 and arm64 alike). */
const STATFS_FSID_OFFSET = 56;
const STATFS_BYTES = 120;
const DELETED = " (deleted)";

/**
 * The events Sentry asks for when the kernel has FAN_RENAME (5.17+). `FAN_ONDIR` is needed for
 * mkdir, rmdir and directory moves, and it also brings every open and read of a directory on
 * the host: a mark's mask cannot ask for directory entry events on directories without them
 * (an ignore mask with `FAN_ONDIR` ignores files as well), so readers drop them by mask.
 */
export const DEFAULT_EVENTS = FAN.OPEN | FAN.ACCESS | FAN.MODIFY | FAN.CLOSE_WRITE |
  FAN.OPEN_EXEC | FAN.CREATE | FAN.DELETE | FAN.RENAME | FAN.ONDIR;

/** A failed call to the kernel, with its errno. */
export class FanotifyError extends Error {
  /** The call that failed, such as `fanotify_init`. */
  readonly call: string;
  /** The errno it set (0 when FFI itself was unavailable). */
  readonly errno: number;

  /** Builds the error; the message names the call and the errno. */
  constructor(call: string, errno: number, options?: ErrorOptions) {
    super(
      errno === 0
        ? `Cannot use fanotify: ${call}`
        : `Cannot use fanotify: ${call} failed: ${errnoName(errno)}`,
      options,
    );
    this.name = "FanotifyError";
    this.call = call;
    this.errno = errno;
  }
}

/** A filesystem the group watches. */
export interface MarkedFilesystem {
  mountPoint: string;
  mountPoints: string[];
  fsType: string;
  source: string;
  /** The fsid events carry for it (16 hex digits). */
  fsid: string;
}

/** A filesystem the group does not watch, and why. */
export interface UnmarkedFilesystem {
  mountPoint: string;
  fsType: string;
  /** An errno name from the failed mark (EOPNOTSUPP: no file handles), or why it was not tried. */
  reason: string;
}

/** What the kernel accepted, found by trying. */
export interface FanotifyFeatures {
  /** `FAN_REPORT_TARGET_FID` (5.17+): create, delete and move events also name the child. */
  targetFid: boolean;
  /** `FAN_RENAME` (5.17+): one event with both names; else `FAN_MOVED_FROM`/`FAN_MOVED_TO`. */
  rename: boolean;
}

/** How {@link FanotifyGroup.open} sets the group up. */
export interface FanotifyGroupOptions {
  /**
   * The event mask of every mark. Default {@link DEFAULT_EVENTS} (with `FAN_MOVED_FROM |
   * FAN_MOVED_TO` instead of `FAN_RENAME` on kernels before 5.17).
   */
  events?: number;
  /** The mount table to plan marks from; default the text of /proc/self/mountinfo. */
  mountInfo?: string;
  /** Only these mount points' filesystems (for tests); default every filesystem in the table. */
  only?: readonly string[];
  /** The read buffer, in bytes. Default 256 KiB. */
  bufferBytes?: number;
  /** Directory paths kept in the handle cache before it is cleared. Default 8,192. */
  cacheSize?: number;
}

/**
 * One fanotify notification group with a mark on every filesystem it could mark. It owns the
 * group fd, one directory fd per marked filesystem (to resolve handles against), and an eventfd;
 * `close()` releases them all (after waking and awaiting a pending wait).
 */
export class FanotifyGroup {
  /** The group's fd. */
  readonly fd: number;
  /** What the kernel accepted (found by trying). */
  readonly features: FanotifyFeatures;
  /** The filesystems with a mark. */
  readonly marked: readonly MarkedFilesystem[];
  /** The filesystems without one, and why: the tier's named blind spot. */
  readonly unmarked: readonly UnmarkedFilesystem[];
  /** The event mask of the marks. */
  readonly events: number;
  readonly #lib: Libc;
  readonly #wakeFd: number;
  /** fsid → O_PATH fd of the mount that resolves its handles. */
  readonly #mounts: Map<string, number>;
  readonly #buffer: Uint8Array;
  readonly #poll: WakeablePoll;
  readonly #cache = new Map<string, string>();
  readonly #cacheSize: number;
  readonly #link = new Uint8Array(4096);
  #closed = false;
  #resolved = 0;
  #cacheHits = 0;

  private constructor(init: {
    lib: Libc;
    fd: number;
    wakeFd: number;
    mounts: Map<string, number>;
    features: FanotifyFeatures;
    marked: MarkedFilesystem[];
    unmarked: UnmarkedFilesystem[];
    events: number;
    bufferBytes: number;
    cacheSize: number;
  }) {
    this.#lib = init.lib;
    this.fd = init.fd;
    this.#wakeFd = init.wakeFd;
    this.#mounts = init.mounts;
    this.features = init.features;
    this.marked = init.marked;
    this.unmarked = init.unmarked;
    this.events = init.events;
    this.#buffer = new Uint8Array(init.bufferBytes);
    this.#cacheSize = init.cacheSize;
    this.#poll = new WakeablePoll({ fd: init.fd, wakeFd: init.wakeFd });
  }

  /**
   * Makes the group and marks every filesystem of the mount table it can. Throws
   * {@link FanotifyError} when the group cannot be made (EPERM without CAP_SYS_ADMIN, EINVAL on
   * a kernel without `FAN_REPORT_DFID_NAME`, 5.9) or no filesystem could be marked, having
   * released everything it opened.
   */
  static open(options: FanotifyGroupOptions = {}): FanotifyGroup {
    const lib = libcFor();
    const owned: number[] = [];
    try {
      const base = FAN_CLASS_NOTIF | FAN_CLOEXEC | FAN_NONBLOCK | FAN_REPORT_FID |
        FAN_REPORT_DIR_FID | FAN_REPORT_NAME;
      const eventFlags = O_RDONLY | O_LARGEFILE | O_CLOEXEC;
      let targetFid = true;
      let fd = lib.symbols.fanotify_init(base | FAN_REPORT_TARGET_FID, eventFlags);
      if (fd < 0 && errnoOf(lib) === EINVAL) {
        targetFid = false;
        fd = lib.symbols.fanotify_init(base, eventFlags);
      }
      if (fd < 0) throw new FanotifyError("fanotify_init(FAN_REPORT_DFID_NAME)", errnoOf(lib));
      owned.push(fd);
      const wakeFd = lib.symbols.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (wakeFd < 0) throw new FanotifyError("eventfd", errnoOf(lib));
      owned.push(wakeFd);

      const plan = planFilesystemMarks(
        parseMountInfo(options.mountInfo ?? Deno.readTextFileSync("/proc/self/mountinfo")),
      );
      const only = options.only === undefined ? null : new Set(options.only);
      let events = options.events ?? DEFAULT_EVENTS;
      const features: FanotifyFeatures = { targetFid, rename: false };
      const marked: MarkedFilesystem[] = [];
      const unmarked: UnmarkedFilesystem[] = plan.skipped.map((s) => ({
        ...s,
        reason: "never marked: opening its mount point has side effects",
      }));
      const mounts = new Map<string, number>();
      let tried = false;
      for (const target of plan.targets) {
        if (only !== null && !target.mountPoints.some((m) => only.has(m))) continue;
        const path = cString(target.mountPoint);
        const skip = (reason: string) =>
          unmarked.push({ mountPoint: target.mountPoint, fsType: target.fsType, reason });
        // Not O_PATH: open_by_handle_at refuses an O_PATH mount fd (EBADF).
        const mountFd = lib.symbols.open(path, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
        if (mountFd < 0) {
          skip(`open: ${errnoName(errnoOf(lib))}`);
          continue;
        }
        const fsid = fsidOf(lib, mountFd);
        if (fsid === null || mounts.has(fsid)) {
          lib.symbols.close(mountFd);
          skip(
            fsid === null
              ? `fstatfs: ${errnoName(errnoOf(lib))}`
              : "covered by another mark (shadowed by a mount on the same path, or the same fsid)",
          );
          continue;
        }
        const mark = (flags: number, mask: number) =>
          lib.symbols.fanotify_mark(
            fd,
            FAN_MARK_ADD | FAN_MARK_FILESYSTEM | flags,
            BigInt(mask),
            AT_FDCWD,
            path,
          ) === 0;
        let ok = mark(0, events);
        if (!ok && !tried && (events & FAN.RENAME) !== 0 && errnoOf(lib) === EINVAL) {
          // Before 5.17: the pair of move events instead of FAN_RENAME.
          events = (events & ~FAN.RENAME) | FAN.MOVED_FROM | FAN.MOVED_TO;
          ok = mark(0, events);
        }
        if (!ok) {
          skip(errnoName(errnoOf(lib)));
          lib.symbols.close(mountFd);
          continue;
        }
        if (!tried) {
          features.rename = (events & FAN.RENAME) !== 0;
          tried = true;
        }
        mounts.set(fsid, mountFd);
        owned.push(mountFd);
        marked.push({
          mountPoint: target.mountPoint,
          mountPoints: target.mountPoints,
          fsType: target.fsType,
          source: target.source,
          fsid,
        });
      }
      if (marked.length === 0) {
        const why = unmarked.map((u) => `${u.mountPoint} (${u.reason})`).join(", ");
        throw new FanotifyError(`no filesystem could be marked: ${why || "none listed"}`, 0);
      }
      return new FanotifyGroup({
        lib,
        fd,
        wakeFd,
        mounts,
        features,
        marked,
        unmarked,
        events,
        bufferBytes: options.bufferBytes ?? 256 * 1024,
        cacheSize: options.cacheSize ?? 8192,
      });
    } catch (error) {
      for (const fd of owned.reverse()) lib.symbols.close(fd);
      lib.close();
      throw error;
    }
  }

  /** Directory paths resolved through the kernel, and answered from the cache. */
  get resolutions(): { resolved: number; cached: number } {
    return { resolved: this.#resolved, cached: this.#cacheHits };
  }

  /**
   * Waits until the group has events, the timeout passes, or `close()` is called. The poll runs
   * on the FFI thread pool, so the event loop keeps running. Concurrent callers share one poll.
   */
  wait(timeoutMs = -1): Promise<"readable" | "timeout" | "closed"> {
    return this.#poll.wait(timeoutMs);
  }

  /**
   * Reads whole events without waiting. Returns a view of the bytes read (valid until the next
   * call), or null when the queue is empty. Throws {@link FanotifyError} on any other error.
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
      throw new FanotifyError("read", e);
    }
  }

  /**
   * The path of a directory from its handle, or null when it cannot be opened (it was removed:
   * ESTALE; or its filesystem has no mount fd here). Cached by handle; {@link invalidate} after
   * a directory moves.
   */
  resolveDir(id: FileId): string | null {
    const cached = this.#cache.get(id.key);
    if (cached !== undefined) {
      this.#cacheHits++;
      return cached;
    }
    const path = this.resolve(id);
    if (path === null) return null;
    if (this.#cache.size >= this.#cacheSize) this.#cache.clear();
    this.#cache.set(id.key, path);
    return path;
  }

  /** The path of any object from its handle, uncached; null when it cannot be opened. */
  resolve(id: FileId): string | null {
    const mountFd = this.#mounts.get(id.fsid);
    if (mountFd === undefined || this.#closed) return null;
    const lib = this.#lib;
    const fd = lib.symbols.open_by_handle_at(mountFd, id.handle, O_PATH | O_CLOEXEC);
    if (fd < 0) return null;
    try {
      this.#resolved++;
      const n = Number(
        lib.symbols.readlink(cString(`/proc/self/fd/${fd}`), this.#link, BigInt(this.#link.length)),
      );
      if (n <= 0) return null;
      const path = new TextDecoder().decode(this.#link.subarray(0, n));
      // A directory removed while still in the inode cache: the path it had.
      return path.endsWith(DELETED) ? path.slice(0, -DELETED.length) : path;
    } finally {
      lib.symbols.close(fd);
    }
  }

  /** Forgets every cached directory path (a directory was moved or removed). */
  invalidate(): void {
    this.#cache.clear();
  }

  /**
   * The id events would carry for the file at `path` (following symlinks, as `/proc/PID/fd/N`
   * links are followed), or null when it is on no marked filesystem or has no handle. Used to
   * recognise files a process inherited, such as a redirected stdout.
   */
  idOf(path: string): FileId | null {
    const lib = this.#lib;
    const handle = new Uint8Array(8 + MAX_HANDLE_SZ);
    new DataView(handle.buffer).setUint32(0, MAX_HANDLE_SZ, true);
    const mountId = new Int32Array(1);
    const name = cString(path);
    // AT_HANDLE_FID (6.5+) asks for the same encoding fanotify reports; older kernels give the
    // open_by_handle_at kind, equal on the common filesystems.
    let ok = lib.symbols.name_to_handle_at(
      AT_FDCWD,
      name,
      handle,
      new Uint8Array(mountId.buffer),
      AT_HANDLE_FID | AT_SYMLINK_FOLLOW,
    ) === 0;
    if (!ok && errnoOf(lib) === EINVAL) {
      ok = lib.symbols.name_to_handle_at(
        AT_FDCWD,
        name,
        handle,
        new Uint8Array(mountId.buffer),
        AT_SYMLINK_FOLLOW,
      ) === 0;
    }
    if (!ok) return null;
    const stat = new Uint8Array(STATFS_BYTES);
    if (lib.symbols.statfs(name, stat) !== 0) return null;
    const fsid = stat.subarray(STATFS_FSID_OFFSET, STATFS_FSID_OFFSET + 8);
    const id = fileId(fsid, handle);
    return this.#mounts.has(id.fsid) ? id : null;
  }

  /**
   * Releases the group (which removes every mark), the mount fds and the eventfd. A pending wait
   * is woken first and awaited, so its poll never sees a closed descriptor. Safe to call twice.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const lib = this.#lib;
    await this.#poll.close();
    lib.symbols.close(this.fd);
    for (const mountFd of this.#mounts.values()) lib.symbols.close(mountFd);
    this.#mounts.clear();
    lib.symbols.close(this.#wakeFd);
    lib.close();
  }
}

/** The fsid of the filesystem an fd is on, as 16 hex digits, or null. */
function fsidOf(lib: Libc, fd: number): string | null {
  const stat = new Uint8Array(STATFS_BYTES);
  if (lib.symbols.fstatfs(fd, stat) !== 0) return null;
  let out = "";
  for (let i = STATFS_FSID_OFFSET; i < STATFS_FSID_OFFSET + 8; i++) {
    out += (stat[i] ?? 0).toString(16).padStart(2, "0");
  }
  return out;
}

const encoder = new TextEncoder();

function cString(text: string): Uint8Array {
  const bytes = new Uint8Array(encoder.encode(text).length + 1);
  encoder.encodeInto(text, bytes);
  return bytes;
}

function libcFor(): Libc {
  if (Deno.build.os !== "linux") throw new FanotifyError(`needs Linux, not "${Deno.build.os}"`, 0);
  const opened = openLibc(SYMBOLS);
  if (typeof opened === "string") throw new FanotifyError(opened, 0);
  return opened;
}
