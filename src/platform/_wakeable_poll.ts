/**
 * Waiting for a descriptor on the FFI thread pool, with an eventfd beside it so that `close()`
 * can wake the waiting thread: the poll never sees a descriptor closed under it. Shared by the
 * fanotify group and the proc connector. Private to src/platform.
 *
 * @module
 */

const SYMBOLS = {
  poll: { parameters: ["buffer", "u64", "i32"], result: "i32", nonblocking: true },
  write: { parameters: ["i32", "buffer", "u64"], result: "i64" },
} as const;

const POLLIN = 0x1;

/** What a wait ended with. */
export type WaitResult = "readable" | "timeout" | "closed";

/** A poll of one descriptor and a wake-up eventfd; it owns neither. */
export class WakeablePoll {
  readonly #lib = Deno.dlopen("libc.so.6", SYMBOLS);
  readonly #fds = new Uint8Array(16);
  readonly #wakeFd: number;
  #pending: Promise<WaitResult> | null = null;
  #closed = false;

  /** Polls `fd` for input, and `wakeFd` (an eventfd) for the wake-up. */
  constructor(fds: { fd: number; wakeFd: number }) {
    this.#wakeFd = fds.wakeFd;
    const view = new DataView(this.#fds.buffer);
    view.setInt32(0, fds.fd, true);
    view.setInt16(4, POLLIN, true);
    view.setInt32(8, fds.wakeFd, true);
    view.setInt16(12, POLLIN, true);
  }

  /**
   * Waits on a pool thread until the descriptor is readable (or reports an error, which a read
   * then returns), `timeoutMs` passes (-1: forever), or `close()` is called. One wait at a time:
   * a second call while one is pending returns the same promise.
   */
  wait(timeoutMs = -1): Promise<WaitResult> {
    if (this.#closed) return Promise.resolve("closed");
    if (this.#pending !== null) return this.#pending;
    const pending = this.#lib.symbols.poll(this.#fds, 2n, Math.trunc(timeoutMs)).then(
      (ready): WaitResult => {
        this.#pending = null;
        if (this.#closed) return "closed";
        if (ready <= 0) return "timeout";
        // revents of the watched descriptor (offset 6): POLLIN, or POLLERR after an overrun.
        return new DataView(this.#fds.buffer).getInt16(6, true) !== 0 ? "readable" : "timeout";
      },
    );
    this.#pending = pending;
    return pending;
  }

  /** Wakes a pending wait and waits for it to return; the descriptors may be closed after. */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const one = new BigUint64Array([1n]);
    this.#lib.symbols.write(this.#wakeFd, new Uint8Array(one.buffer), 8n);
    if (this.#pending !== null) await this.#pending.catch(() => "closed");
    this.#lib.close();
  }
}
