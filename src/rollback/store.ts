/**
 * The content-addressed store under `<dataDir>/store/`, shared by every session:
 *
 * ```
 * store/
 *   lock                      flock: shared for snapshot, plan, restore and undo; exclusive for prune
 *   blobs/<aa>/<sha256>       loose blobs (files over 1 MiB), read-only (0400)
 *   packs/<id>.pack, .idx     small blobs appended to pack files, with their index (hash → offset)
 *   snapshots/<id>.json       manifests (see manifest.ts)
 *   heads/<key>               the last snapshot of each root: the metadata cache of the next one
 *   quarantine/<session>/<rollback>/   what a rollback moved away, and its undo journal
 *   tmp/                      files being written; renamed into place when complete
 * ```
 *
 * Small blobs are packed because creating an inode is the dominant cost of copying many small
 * files (cp -a pays it for every file); bench/rollback_bench.ts measures it. Every file is
 * written under `tmp/` and renamed into place, so a reader never sees a partial blob, pack or
 * manifest, and a crash leaves only temporary files that `prune` removes.
 *
 * @module
 */
import { Buffer } from "node:buffer";
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { ensureDataDir } from "../platform/mod.ts";
import { decodeInfo, decodeManifest, encodeManifest, type Manifest } from "./manifest.ts";
import type { SnapshotInfo } from "./manifest.ts";
import { isCode } from "./_walk.ts";

/** Where a blob lives. */
export type BlobLocation =
  | { kind: "loose"; path: string }
  | { kind: "pack"; pack: string; offset: number; size: number };

/** One pack index entry: hash, offset and size. */
export type PackIndexEntry = [string, number, number];

const PACK_INDEX_VERSION = 1;

/**
 * Opens (creating if needed) the store under `<dataDir>/store`, with mode 0700 directories.
 * Cheap: nothing is read until it is needed.
 */
export function openStore(dataDir: string): Store {
  return new Store(dataDir);
}

/** The content-addressed store. Use {@link openStore}. */
export class Store {
  /** Sentry's data directory; snapshots never record it. */
  readonly dataDir: string;
  /** `<dataDir>/store`. */
  readonly dir: string;
  #index: Map<string, { pack: string; offset: number; size: number }> | undefined;
  #loose: Set<string> | undefined;
  #madeDirs = new Set<string>();
  #lockDepth = 0;
  #lockExclusive = false;
  #seq = 0;

  /** Creates the store's folders. Use {@link openStore}. */
  #macKey: Uint8Array | undefined;
  constructor(dataDir: string) {
    this.dataDir = dataDir.replace(/\/+$/, "") || "/";
    this.dir = `${this.dataDir}/store`;
    ensureDataDir(this.dataDir);
    for (const sub of ["", "blobs", "packs", "snapshots", "heads", "quarantine", "tmp"]) {
      Deno.mkdirSync(`${this.dir}/${sub}`, { recursive: true, mode: 0o700 });
    }
  }

  /**
   * Runs `fn` holding the store lock: shared (snapshots, plans, restores and undos run side by
   * side) or exclusive (prune, which deletes). Re-entrant within one store object for shared
   * use; asking for exclusive while holding shared is a programming error.
   */
  async withLock<T>(exclusive: boolean, fn: () => T | Promise<T>): Promise<T> {
    if (this.#lockDepth > 0) {
      if (exclusive && !this.#lockExclusive) {
        throw new TypeError("Cannot take the store lock exclusively while holding it shared");
      }
      this.#lockDepth++;
      try {
        return await fn();
      } finally {
        this.#lockDepth--;
      }
    }
    const file = await Deno.open(`${this.dir}/lock`, { read: true, write: true, create: true });
    try {
      await file.lock(exclusive);
    } catch (e) {
      file.close();
      throw e;
    }
    this.#lockDepth = 1;
    this.#lockExclusive = exclusive;
    // Another process may have pruned (or added packs) since this object last looked.
    this.forgetIndex();
    try {
      return await fn();
    } finally {
      this.#lockDepth = 0;
      // Closing the descriptor releases the flock.
      file.close();
    }
  }

  /** A fresh path under `tmp/`, unique within this process and across processes. */
  tmpPath(label: string): string {
    const rand = crypto.getRandomValues(new Uint8Array(6));
    const hex = [...rand].map((b) => b.toString(16).padStart(2, "0")).join("");
    return `${this.dir}/tmp/${label}-${Deno.pid}-${this.#seq++}-${hex}`;
  }

  /** The path of a loose blob (which may not exist). */
  looseBlobPath(hash: string): string {
    return `${this.dir}/blobs/${hash.slice(0, 2)}/${hash}`;
  }

  /** The path of a pack file. */
  packPath(pack: string): string {
    return `${this.dir}/packs/${pack}.pack`;
  }

  /** Where a blob is, or undefined when the store does not hold it. */
  locate(hash: string): BlobLocation | undefined {
    const loose = this.looseBlobPath(hash);
    if (exists(loose)) return { kind: "loose", path: loose };
    const packed = this.#packIndex().get(hash);
    return packed === undefined ? undefined : { kind: "pack", ...packed };
  }

  /**
   * Tells whether the store holds a blob. Answers from memory: the pack indexes and the list
   * of loose blobs are read once, on first use, and kept up to date by this object's writes.
   */
  hasBlob(hash: string): boolean {
    return this.#packIndex().has(hash) || this.#looseSet().has(hash);
  }

  /**
   * Writes a blob's content into an open file, from its current position.
   * @throws {Deno.errors.NotFound} when the store does not hold the blob.
   */
  copyBlobTo(hash: string, out: Deno.FsFile): number {
    const where = this.locate(hash);
    if (where === undefined) {
      throw new Deno.errors.NotFound(`Missing blob "${hash}" in the store "${this.dir}"`);
    }
    const path = where.kind === "loose" ? where.path : this.packPath(where.pack);
    const file = Deno.openSync(path, { read: true });
    try {
      let remaining = Infinity;
      if (where.kind === "pack") {
        file.seekSync(where.offset, Deno.SeekMode.Start);
        remaining = where.size;
      }
      const buf = new Uint8Array(Math.min(1 << 20, remaining === Infinity ? 1 << 20 : remaining));
      let total = 0;
      while (remaining > 0) {
        const n = file.readSync(buf.length <= remaining ? buf : buf.subarray(0, remaining));
        if (n === null || n === 0) break;
        writeAll(out, buf.subarray(0, n));
        total += n;
        remaining -= n;
      }
      return total;
    } finally {
      file.close();
    }
  }

  /** A blob's content (for tests and small reads). */
  readBlob(hash: string): Uint8Array {
    const path = this.tmpPath("read");
    const file = Deno.openSync(path, { read: true, write: true, createNew: true, mode: 0o600 });
    try {
      this.copyBlobTo(hash, file);
    } finally {
      file.close();
    }
    try {
      return Deno.readFileSync(path);
    } finally {
      Deno.removeSync(path);
    }
  }

  /**
   * Moves a complete temporary file into place as loose blob `hash`, read-only. Returns false
   * (and deletes the temporary file) when the store already held it.
   */
  adoptLoose(tmp: string, hash: string): boolean {
    const path = this.looseBlobPath(hash);
    if (exists(path)) {
      Deno.removeSync(tmp);
      return false;
    }
    this.#ensureDir(path.slice(0, path.lastIndexOf("/")));
    Deno.chmodSync(tmp, 0o400);
    Deno.renameSync(tmp, path);
    this.#loose?.add(hash);
    return true;
  }

  /** Records a finished pack in the in-memory index (the `.idx` file is already written). */
  notePack(pack: string, entries: readonly PackIndexEntry[]): void {
    if (this.#index === undefined) return;
    for (const [hash, offset, size] of entries) this.#index.set(hash, { pack, offset, size });
  }

  /** Writes a pack's index file; the pack counts as complete from then on. Returns its size. */
  writePackIndex(pack: string, entries: readonly PackIndexEntry[]): number {
    const text = JSON.stringify({ v: PACK_INDEX_VERSION, blobs: entries });
    return this.#writeAtomic(`${this.dir}/packs/${pack}.idx`, text, 0o400);
  }

  /** Reads a pack's index. */
  readPackIndex(pack: string): PackIndexEntry[] {
    const raw = JSON.parse(Deno.readTextFileSync(`${this.dir}/packs/${pack}.idx`)) as {
      v: number;
      blobs: PackIndexEntry[];
    };
    if (raw.v !== PACK_INDEX_VERSION) {
      throw new SyntaxError(`Cannot read pack index "${pack}": unknown version "${raw.v}"`);
    }
    return raw.blobs;
  }

  /** The ids of complete packs (those with an index). */
  listPacks(): string[] {
    const out: string[] = [];
    for (const e of Deno.readDirSync(`${this.dir}/packs`)) {
      if (e.name.endsWith(".idx")) out.push(e.name.slice(0, -4));
    }
    return out.sort();
  }

  /** Forgets the in-memory indexes, so they are read again when next needed. */
  forgetIndex(): void {
    this.#index = undefined;
    this.#loose = undefined;
  }

  /** Every loose blob's hash. */
  listLoose(): string[] {
    const out: string[] = [];
    for (const dir of Deno.readDirSync(`${this.dir}/blobs`)) {
      if (!dir.isDirectory) continue;
      for (const e of Deno.readDirSync(`${this.dir}/blobs/${dir.name}`)) out.push(e.name);
    }
    return out;
  }

  /**
   * Writes a manifest atomically, then its MAC (`<id>.mac`: HMAC-SHA256 of the manifest's bytes
   * under the store's key); returns the manifest's size in bytes.
   */
  writeManifest(manifest: Manifest): number {
    const text = encodeManifest(manifest);
    const size = this.#writeAtomic(this.manifestPath(manifest.id), text, 0o600);
    this.#writeAtomic(this.#macPath(manifest.id), `${this.#mac(text)}\n`, 0o600);
    return size;
  }

  /**
   * The store's manifest key (`manifest.key`, 32 random bytes, 0600), made on first use. It sits in
   * Sentry's data directory, which no agent can read or write under `run`: an agent that edits a
   * manifest cannot make its MAC.
   */
  #key(): Uint8Array {
    if (this.#macKey !== undefined) return this.#macKey;
    const path = `${this.dir}/manifest.key`;
    try {
      this.#macKey = Deno.readFileSync(path);
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      const tmp = this.tmpPath("key");
      Deno.writeFileSync(tmp, crypto.getRandomValues(new Uint8Array(32)), { mode: 0o600 });
      try {
        // Linked into place whole: two processes making it at once agree on one key.
        Deno.linkSync(tmp, path);
      } catch (raced) {
        if (!(raced instanceof Deno.errors.AlreadyExists)) throw raced;
      } finally {
        Deno.removeSync(tmp);
      }
      this.#macKey = Deno.readFileSync(path);
    }
    if (this.#macKey.length < 32) {
      throw new ManifestAuthError(`The store's key "${path}" is damaged (too short)`);
    }
    return this.#macKey;
  }

  #mac(text: string): string {
    return createHmac("sha256", this.#key()).update(text).digest("hex");
  }

  #macPath(id: string): string {
    return `${this.dir}/snapshots/${id}.mac`;
  }

  /** Throws {@link ManifestAuthError} unless `text` is the manifest `id` as this store wrote it. */
  #verify(id: string, text: string): void {
    let stored: string;
    try {
      stored = Deno.readTextFileSync(this.#macPath(id)).trim();
    } catch (e) {
      if (!(e instanceof Deno.errors.NotFound)) throw e;
      throw new ManifestAuthError(
        `Snapshot "${id}" has no MAC: its manifest cannot be trusted, so nothing is restored from it`,
      );
    }
    const expected = Buffer.from(this.#mac(text), "hex");
    const given = /^[0-9a-f]{64}$/.test(stored) ? Buffer.from(stored, "hex") : Buffer.alloc(0);
    if (given.length !== expected.length || !timingSafeEqual(given, expected)) {
      throw new ManifestAuthError(
        `Snapshot "${id}": its manifest does not match its MAC (it was edited since Sentry wrote it), so nothing is restored from it`,
      );
    }
  }

  /** The path of a snapshot's manifest. */
  manifestPath(id: string): string {
    return `${this.dir}/snapshots/${id}.json`;
  }

  /**
   * Reads a whole manifest.
   * @throws {Deno.errors.NotFound} when there is no such snapshot.
   */
  readManifest(id: string): Manifest {
    let text: string;
    try {
      text = Deno.readTextFileSync(this.manifestPath(id));
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) {
        throw new Deno.errors.NotFound(`Unknown snapshot "${id}"`, { cause: e });
      }
      throw e;
    }
    this.#verify(id, text);
    return decodeManifest(text, id);
  }

  /** Reads only a manifest's header line. */
  readInfo(id: string): SnapshotInfo {
    return decodeInfo(readFirstLine(this.manifestPath(id)), id);
  }

  /** Snapshot ids, oldest first. */
  listSnapshotIds(): string[] {
    const out: string[] = [];
    for (const e of Deno.readDirSync(`${this.dir}/snapshots`)) {
      if (e.isFile && e.name.endsWith(".json")) out.push(e.name.slice(0, -5));
    }
    return out.sort();
  }

  /** The last snapshot that recorded `root`, if any: the next snapshot's metadata cache. */
  head(root: string): string | undefined {
    try {
      const raw = JSON.parse(Deno.readTextFileSync(this.#headPath(root))) as {
        root: string;
        id: string;
      };
      return raw.root === root ? raw.id : undefined;
    } catch (e) {
      if (e instanceof Deno.errors.NotFound || e instanceof SyntaxError) return undefined;
      throw e;
    }
  }

  /** Records `id` as the last snapshot of `root`. */
  setHead(root: string, id: string): void {
    this.#writeAtomic(this.#headPath(root), JSON.stringify({ root, id }), 0o600);
  }

  /** Every head: root → snapshot id. */
  listHeads(): { file: string; root: string; id: string }[] {
    const out: { file: string; root: string; id: string }[] = [];
    for (const e of Deno.readDirSync(`${this.dir}/heads`)) {
      const file = `${this.dir}/heads/${e.name}`;
      try {
        const raw = JSON.parse(Deno.readTextFileSync(file)) as { root: string; id: string };
        out.push({ file, root: raw.root, id: raw.id });
      } catch {
        out.push({ file, root: "", id: "" });
      }
    }
    return out;
  }

  /** The quarantine folder of one session (not created). */
  quarantineDir(session: string): string {
    if (session === "" || session.includes("/") || session === "." || session === "..") {
      throw new TypeError(`Invalid session id "${session}"`);
    }
    return `${this.dir}/quarantine/${session}`;
  }

  #headPath(root: string): string {
    const key = createHash("sha256").update(root).digest("hex").slice(0, 32);
    return `${this.dir}/heads/${key}`;
  }

  #looseSet(): Set<string> {
    this.#loose ??= new Set(this.listLoose());
    return this.#loose;
  }

  #packIndex(): Map<string, { pack: string; offset: number; size: number }> {
    if (this.#index !== undefined) return this.#index;
    const index = new Map<string, { pack: string; offset: number; size: number }>();
    for (const pack of this.listPacks()) {
      for (const [hash, offset, size] of this.readPackIndex(pack)) {
        index.set(hash, { pack, offset, size });
      }
    }
    this.#index = index;
    return index;
  }

  #ensureDir(dir: string): void {
    if (this.#madeDirs.has(dir)) return;
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    this.#madeDirs.add(dir);
  }

  #writeAtomic(path: string, text: string, mode: number): number {
    const tmp = this.tmpPath("write");
    const data = new TextEncoder().encode(text);
    Deno.writeFileSync(tmp, data, { mode });
    Deno.chmodSync(tmp, mode);
    Deno.renameSync(tmp, path);
    return data.length;
  }
}

/** Writes a whole buffer to an open file. */
export function writeAll(file: Deno.FsFile, data: Uint8Array): void {
  let done = 0;
  while (done < data.length) done += file.writeSync(data.subarray(done));
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || isCode(e, "ENOTDIR")) return false;
    throw e;
  }
}

function readFirstLine(path: string): string {
  let file: Deno.FsFile;
  try {
    file = Deno.openSync(path, { read: true });
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) {
      throw new Deno.errors.NotFound(`Unknown snapshot "${path}"`, { cause: e });
    }
    throw e;
  }
  try {
    const chunks: Uint8Array[] = [];
    const buf = new Uint8Array(16 * 1024);
    while (true) {
      const n = file.readSync(buf);
      if (n === null || n === 0) break;
      const chunk = buf.slice(0, n);
      const nl = chunk.indexOf(10);
      if (nl >= 0) {
        chunks.push(chunk.subarray(0, nl));
        break;
      }
      chunks.push(chunk);
    }
    const all = new Uint8Array(chunks.reduce((a, c) => a + c.length, 0));
    let o = 0;
    for (const c of chunks) {
      all.set(c, o);
      o += c.length;
    }
    return new TextDecoder().decode(all);
  } finally {
    file.close();
  }
}

/** A manifest that does not carry the store's MAC: edited, or written by something else. */
export class ManifestAuthError extends Error {
  /** Builds the error. */
  constructor(message: string) {
    super(message);
    this.name = "ManifestAuthError";
  }
}
