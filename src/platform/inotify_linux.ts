/**
 * inotify(7) through FFI, for the poll tier's file watcher. `Deno.watchFs` was used before:
 * under a flood its queue to JavaScript dropped events without a word (a 300,000-file flood
 * lost 40 % and reported one overflow), and the rename halves it reports carry no cookie. Here
 * the kernel's own queue is read, so a loss is always an `IN_Q_OVERFLOW` record, and the two
 * halves of a rename share a cookie.
 *
 * @module
 */
import { errnoOf, openLibc } from "./_libc.ts";
import { errnoName } from "./kernel_abi.ts";
import { WakeablePoll } from "./_wakeable_poll.ts";
import { decodeInotify, type InotifyRecord } from "./inotify_record.ts";

const SYMBOLS = {
  inotify_init1: { parameters: ["i32"], result: "i32" },
  inotify_add_watch: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  inotify_rm_watch: { parameters: ["i32", "i32"], result: "i32" },
  read: { parameters: ["i32", "buffer", "u64"], result: "i64" },
  close: { parameters: ["i32"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

const IN_NONBLOCK = 0o4000;
const IN_CLOEXEC = 0o2000000;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const EAGAIN = 11;
const EINTR = 4;

/** A failed inotify call, with its errno. */
export class InotifyError extends Error {
  /** The errno the call failed with. */
  readonly errno: number;

  /** Names the call and the errno. */
  constructor(call: string, errno: number) {
    super(`Cannot ${call}: ${errnoName(errno)}`);
    this.name = "InotifyError";
    this.errno = errno;
  }
}

/** One inotify instance, its watches, and an eventfd that wakes a pending wait at close. */
export class InotifyGroup {
  readonly #lib: Libc;
  readonly #fd: number;
  readonly #wakeFd: number;
  readonly #poll: WakeablePoll;
  readonly #buffer: Uint8Array;
  #closed = false;

  private constructor(lib: Libc, fd: number, wakeFd: number, bufferBytes: number) {
    this.#lib = lib;
    this.#fd = fd;
    this.#wakeFd = wakeFd;
    this.#poll = new WakeablePoll({ fd, wakeFd });
    this.#buffer = new Uint8Array(bufferBytes);
  }

  /** Makes an instance; throws {@link InotifyError} (or a one-line Error without FFI). */
  static open(options: { bufferBytes?: number } = {}): InotifyGroup {
    const lib = openLibc(SYMBOLS);
    if (typeof lib === "string") throw new Error(lib);
    const fd = lib.symbols.inotify_init1(IN_NONBLOCK | IN_CLOEXEC);
    if (fd < 0) {
      const errno = errnoOf(lib);
      lib.close();
      throw new InotifyError("inotify_init1", errno);
    }
    const wakeFd = lib.symbols.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
    if (wakeFd < 0) {
      const errno = errnoOf(lib);
      lib.symbols.close(fd);
      lib.close();
      throw new InotifyError("eventfd", errno);
    }
    return new InotifyGroup(lib, fd, wakeFd, options.bufferBytes ?? 256 * 1024);
  }

  /**
   * Watches `path` for the events of `mask`; returns the watch descriptor (the same one again
   * for a path already watched), or the errno it failed with as a negative number.
   */
  add(path: string, mask: number): number {
    if (this.#closed) return -9;
    const wd = this.#lib.symbols.inotify_add_watch(
      this.#fd,
      new TextEncoder().encode(path + "\0"),
      mask >>> 0,
    );
    return wd >= 0 ? wd : -errnoOf(this.#lib);
  }

  /** Stops a watch; a watch already gone (its directory deleted) is not an error. */
  remove(wd: number): void {
    if (!this.#closed) this.#lib.symbols.inotify_rm_watch(this.#fd, wd);
  }

  /** Waits on a pool thread until records are ready, the timeout passes or `close()` runs. */
  wait(timeoutMs = -1): Promise<"readable" | "timeout" | "closed"> {
    return this.#poll.wait(timeoutMs);
  }

  /** Reads every record queued now (none when the queue is empty). */
  read(): InotifyRecord[] {
    const out: InotifyRecord[] = [];
    while (!this.#closed) {
      const n = Number(this.#lib.symbols.read(this.#fd, this.#buffer, BigInt(this.#buffer.length)));
      if (n < 0) {
        const errno = errnoOf(this.#lib);
        if (errno === EINTR) continue;
        if (errno === EAGAIN) break;
        throw new InotifyError("read the inotify queue", errno);
      }
      if (n === 0) break;
      for (const record of decodeInotify(this.#buffer, n)) out.push(record);
      if (n < this.#buffer.length / 2) break;
    }
    return out;
  }

  /** Wakes a pending wait, then closes the instance (which drops every watch). */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    await this.#poll.close();
    this.#lib.symbols.close(this.#fd);
    this.#lib.symbols.close(this.#wakeFd);
    this.#lib.close();
  }
}
