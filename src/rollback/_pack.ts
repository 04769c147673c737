/**
 * Appends small blobs to pack files. Files are read straight into one of two buffers; while one
 * fills on the main thread, the other is written out on a background thread, so that the cost
 * of growing the page cache is not paid by the thread reading and hashing. Private to
 * src/rollback.
 * @module
 */
import type { PackIndexEntry, Store } from "./store.ts";

/** Each of the two write buffers. */
const BUFFER_BYTES = 4 << 20;
/** A pack is closed once it holds this much, so that pruning rewrites little at a time. */
const PACK_MAX_BYTES = 64 << 20;

/** Writes the small blobs of one snapshot (or one prune) into one or more packs. */
export class PackWriter {
  /** The largest blob a pack takes. */
  static readonly maxBlob = BUFFER_BYTES;

  #store: Store;
  #prefix: string;
  #seq = 0;
  #file: Deno.FsFile | undefined;
  #id = "";
  #tmp = "";
  #offset = 0;
  #entries: PackIndexEntry[] = [];
  #buffers = [new Uint8Array(BUFFER_BYTES), new Uint8Array(BUFFER_BYTES)];
  #current = 0;
  #fill = 0;
  #reserved = 0;
  #pending: Promise<void> | undefined;
  /** Hashes written by this writer, for deduplication within the snapshot. */
  readonly written = new Set<string>();
  /** Blob bytes written. */
  bytes = 0;
  /** Index bytes written. */
  indexBytes = 0;
  /** Packs completed. */
  readonly packs: string[] = [];

  /** Packs are named `<prefix>-<n>`. */
  constructor(store: Store, prefix: string) {
    this.#store = store;
    this.#prefix = prefix;
  }

  /** Tells whether `size` bytes can be reserved without a {@link flush} first. */
  room(size: number): boolean {
    return this.#fill + size <= BUFFER_BYTES;
  }

  /** True when the open pack is big enough to be closed with {@link rollover}. */
  get full(): boolean {
    return this.#offset >= PACK_MAX_BYTES;
  }

  /**
   * A view of `size` free bytes to read a file into. Call {@link commit} to keep what was read,
   * or reserve again to drop it.
   * @throws {RangeError} without {@link room} for it.
   */
  reserve(size: number): Uint8Array {
    if (!this.room(size)) throw new RangeError(`No room for ${size} bytes: flush first`);
    this.#reserved = size;
    const buf = this.#buffers[this.#current] as Uint8Array;
    return buf.subarray(this.#fill, this.#fill + size);
  }

  /** Keeps the first `length` bytes of the last reservation as blob `hash`. */
  commit(hash: string, length: number): void {
    if (length > this.#reserved) throw new RangeError("Commit beyond the reservation");
    if (this.#file === undefined) this.#open();
    this.#entries.push([hash, this.#offset, length]);
    this.written.add(hash);
    this.#offset += length;
    this.#fill += length;
    this.bytes += length;
    this.#reserved = 0;
  }

  /** Starts writing the current buffer in the background, once the previous write is done. */
  async flush(): Promise<void> {
    await this.#pending;
    this.#pending = undefined;
    if (this.#fill === 0) return;
    const data = (this.#buffers[this.#current] as Uint8Array).subarray(0, this.#fill);
    this.#pending = writeAllAsync(this.#file as Deno.FsFile, data);
    this.#current = 1 - this.#current;
    this.#fill = 0;
  }

  /** Completes the open pack (written, renamed into place, indexed); the next opens anew. */
  async rollover(): Promise<void> {
    await this.flush();
    await this.#pending;
    this.#pending = undefined;
    if (this.#file === undefined) return;
    this.#file.close();
    this.#file = undefined;
    Deno.renameSync(this.#tmp, this.#store.packPath(this.#id));
    this.indexBytes += this.#store.writePackIndex(this.#id, this.#entries);
    this.#store.notePack(this.#id, this.#entries);
    this.packs.push(this.#id);
  }

  /** Completes the open pack, if any. */
  async finish(): Promise<void> {
    await this.rollover();
  }

  /** Closes and deletes an unfinished pack (after an error). */
  async abort(): Promise<void> {
    await this.#pending?.catch(() => {});
    this.#pending = undefined;
    if (this.#file === undefined) return;
    this.#file.close();
    this.#file = undefined;
    try {
      Deno.removeSync(this.#tmp);
    } catch {
      // Already gone.
    }
  }

  #open(): void {
    this.#id = `${this.#prefix}-${this.#seq++}`;
    this.#tmp = this.#store.tmpPath("pack");
    this.#file = Deno.openSync(this.#tmp, { write: true, createNew: true, mode: 0o400 });
    this.#offset = 0;
    this.#entries = [];
  }
}

async function writeAllAsync(file: Deno.FsFile, data: Uint8Array): Promise<void> {
  let done = 0;
  while (done < data.length) done += await file.write(data.subarray(done));
}
