/**
 * Taking a snapshot of the protected trees into the store.
 *
 * Two phases. The scan walks every tree with `lstat` (no content read) and checks the size cap,
 * so an oversized tree fails before anything is written. The content phase then reads only the
 * files the metadata cache cannot vouch for: a file whose size, mtime, ctime and inode match
 * the root's previous snapshot keeps its hash unread. Small files are read straight into a pack
 * buffer, hashed and appended; large ones are copied by the kernel (`copy_file_range`) on
 * background threads while the main thread works through the small ones, then hashed from the
 * copy, so a blob's name always matches its bytes.
 *
 * @module
 */
import { closeSync, constants, openSync, readSync } from "node:fs";
import { dirname, normalize } from "node:path";
import { createUlid } from "../events/mod.ts";
import { formatBytes, SnapshotTooLargeError } from "./errors.ts";
import {
  comparePaths,
  type Entry,
  type FileEntry,
  type Manifest,
  type SnapshotInfo,
  type SnapshotStats,
  type Tree,
  treeInfo,
} from "./manifest.ts";
import { hashBytes, hashFile } from "./_hash.ts";
import { PackWriter } from "./_pack.ts";
import { type FreeSpace, freeSpace } from "../platform/statvfs_linux.ts";
import type { Store } from "./store.ts";
import {
  createExcluder,
  isCode,
  joinRel,
  type LiveEntry,
  lstatEntry,
  reasonOf,
  TooManyEntriesError,
  walkTree,
} from "./_walk.ts";

/** Options for {@link snapshot}. */
export interface SnapshotOptions {
  /**
   * The protected trees: absolute paths of directories (or single files). Symlinks in them are
   * resolved; a root inside another root is covered by the outer one; a missing root is
   * recorded as absent, so a rollback removes what the agent creates there.
   */
  roots: readonly string[];
  /**
   * picomatch globs (dotfiles included) matched against each path, absolute and relative to its
   * root: the policy's `rollback.exclude`. An excluded directory is not descended into.
   */
  exclude?: readonly string[];
  /** The cap on each tree's bytes of regular files: the policy's `rollback.max_bytes`. */
  maxBytes: number;
  /** The most files and directories a tree may hold (`rollback.max_files`); default 200,000. */
  maxFiles?: number;
  /** Reads the store filesystem's free space (tests); default `statvfs`. */
  freeSpace?: (path: string) => FreeSpace | null;
  /** The session taking the snapshot, recorded in the manifest. */
  session?: string | null;
  /** The snapshot id; a fresh ULID by default. */
  id?: string;
  /** The clock; `Date.now` by default. */
  now?: () => number;
  /** Reuse hashes from each root's previous snapshot when stat fields match; default true. */
  reuse?: boolean;
  /** Files up to this size are packed, larger ones copied as loose blobs; default 1 MiB. */
  packThreshold?: number;
  /** Large files copied at once on background threads; default 2. */
  copyLanes?: number;
}

/** ctime is reported to the second; this covers the coarse clock's lag behind the real one. */
const RACY_SLACK_MS = 50;
const DEFAULT_PACK_THRESHOLD = 1 << 20;
const DEFAULT_COPY_LANES = 2;
/** Yield to the event loop (letting background copies be collected) after this many bytes. */
const YIELD_EVERY_BYTES = 4 << 20;
const YIELD_EVERY_FILES = 512;
const ATTEMPTS = 3;
const READ_NOFOLLOW = constants.O_RDONLY | constants.O_NOFOLLOW;

/**
 * Records the protected trees in the store and returns the snapshot's header, with its stats.
 * Holds the store lock (shared) while it runs. Takes about as long as `cp -a` of the trees the
 * first time, and one `lstat` per path when nothing changed since the root's last snapshot.
 *
 * Files that change while being read (under `attach`, the agent runs) are read again, up to
 * three times, then recorded as `other`, which rollbacks leave alone.
 *
 * @throws {SnapshotTooLargeError} when a tree holds more than `maxBytes`; nothing is written.
 * @throws {TypeError} when a root is not an absolute path.
 */
export async function snapshot(store: Store, options: SnapshotOptions): Promise<SnapshotInfo> {
  const now = options.now ?? Date.now;
  const t0 = performance.now();
  const startedAtMs = now();
  const id = options.id ?? createUlid({ now })();
  const roots = resolveRoots(options.roots);
  const aliases: [string, string][] = [];
  for (const given of options.roots) {
    const clean = normalize(given).replace(/(.)\/+$/, "$1");
    const real = realPath(clean);
    if (real !== clean) aliases.push([clean, real]);
  }
  const exclude = [...(options.exclude ?? [])];
  const ignore = ignoredDirs(store.dataDir);
  const excluded = createExcluder(exclude, ignore);
  const threshold = Math.min(options.packThreshold ?? DEFAULT_PACK_THRESHOLD, PackWriter.maxBlob);

  return await store.withLock(false, async () => {
    // Phase 1: scan, and refuse oversized trees before writing anything.
    const maxFiles = options.maxFiles ?? DEFAULT_MAX_FILES;
    const scans = roots.map((root) => {
      let live: ReturnType<typeof walkTree>;
      try {
        live = walkTree(root, { excluded, maxEntries: maxFiles });
      } catch (error) {
        if (!(error instanceof TooManyEntriesError)) throw error;
        throw new RangeError(
          `Cannot snapshot for rollback: ${error.message}, over the cap of ${
            maxFiles.toLocaleString("en-US")
          } (rollback.max_files); raise the cap or add paths to rollback.exclude`,
          { cause: error },
        );
      }
      live?.sort((a, b) => comparePaths(a.path, b.path));
      let bytes = 0;
      let files = 0;
      for (const e of live ?? []) {
        if (e.type === "file") {
          bytes += e.size;
          files++;
        }
      }
      return { root, live, bytes, files };
    });
    const over = scans.filter((s) => s.bytes > options.maxBytes);
    if (over.length > 0) {
      throw new SnapshotTooLargeError(
        over.map((s) => ({ root: s.root, bytes: s.bytes, files: s.files })),
        options.maxBytes,
      );
    }
    const scanMs = performance.now() - t0;

    // Phase 2: content.
    const t1 = performance.now();
    const stats: SnapshotStats = {
      files: 0,
      dirs: 0,
      symlinks: 0,
      other: 0,
      bytes: 0,
      reusedFiles: 0,
      hashedFiles: 0,
      hashedBytes: 0,
      newBlobs: 0,
      newBlobBytes: 0,
      storeBytes: 0,
      racyFiles: 0,
      scanMs,
      contentMs: 0,
      totalMs: 0,
    };
    const pack = new PackWriter(store, id);
    const trees: Tree[] = [];
    const small: Pending[] = [];
    const large: Pending[] = [];
    for (const scan of scans) {
      const cache = options.reuse === false ? undefined : loadCache(store, scan.root);
      const entries: Entry[] = [];
      for (const live of scan.live ?? []) {
        if (live.type !== "file") {
          entries.push(toEntry(live));
          continue;
        }
        const entry: FileEntry = {
          path: live.path,
          type: "file",
          mode: live.mode,
          mtimeMs: live.mtimeMs,
          size: live.size,
          hash: "",
          ino: live.ino,
          ctimeMs: live.ctimeMs,
          racy: false,
        };
        const cached = cache?.get(live.path);
        if (cached !== undefined && !cached.racy && sameStat(cached, live)) {
          entry.hash = cached.hash;
          stats.reusedFiles++;
        } else {
          const job = { abs: joinRel(scan.root, live.path), entry, index: entries.length, entries };
          (live.size <= threshold ? small : large).push(job);
        }
        entries.push(entry);
      }
      trees.push({ root: scan.root, absent: scan.live === null, entries });
    }
    // Before a byte is copied: the store must have room for what is not there yet (at most the
    // files that must be read again), and an inode per file, with some headroom.
    const needed = [...small, ...large].reduce((n, job) => n + job.entry.size, 0);
    const free = (options.freeSpace ?? freeSpace)(store.dir);
    if (
      free !== null &&
      (free.bytes < needed + FREE_HEADROOM_BYTES || free.inodes < large.length + 1024)
    ) {
      throw new RangeError(
        `Cannot snapshot for rollback: it may need ${formatBytes(needed)} (and ${
          large.length.toLocaleString("en-US")
        } inodes) on the store's filesystem (${store.dir}), which has ${
          formatBytes(free.bytes)
        } and ${
          free.inodes.toLocaleString("en-US")
        } inodes free; free some space or set SENTRY_HOME on another disk`,
      );
    }

    const lanes: Promise<void>[] = [];
    const yielder = new Yielder();
    try {
      // Large files: kernel copies on background threads, started first.
      const queue = [...large];
      // Each lane copies one file after another on a background thread; the main thread hashes
      // each copy when it is done (between small files), then the lane copies the next.
      const lane = async () => {
        for (let job = queue.shift(); job !== undefined; job = queue.shift()) {
          const tmp = await copyLarge(store, job);
          if (tmp !== undefined) storeLarge(store, job, tmp, stats);
        }
      };
      const lanesWanted = Math.min(options.copyLanes ?? DEFAULT_COPY_LANES, queue.length);
      // A lane's failure is kept and rethrown below, not left as an unhandled rejection while
      // the small files are still being read.
      let laneError: { error: unknown } | undefined;
      for (let i = 0; i < lanesWanted; i++) {
        lanes.push(
          lane().catch((error) => {
            laneError ??= { error };
            queue.length = 0;
          }),
        );
      }
      // Small files: read into the pack buffer on this thread meanwhile.
      let sinceYield = 0;
      let filesSinceYield = 0;
      for (const job of small) {
        while (readSmall(store, pack, job, stats) === "flush") await pack.flush();
        if (pack.full) await pack.rollover();
        sinceYield += job.entry.size;
        if (++filesSinceYield >= YIELD_EVERY_FILES || sinceYield >= YIELD_EVERY_BYTES) {
          sinceYield = 0;
          filesSinceYield = 0;
          if (lanes.length > 0) await yielder.yield();
        }
      }
      await Promise.all(lanes);
      if (laneError !== undefined) throw laneError.error;
      await pack.finish();
    } catch (e) {
      await pack.abort();
      await Promise.allSettled(lanes);
      throw e;
    } finally {
      yielder.close();
    }

    for (const tree of trees) {
      for (const e of tree.entries) {
        if (e.type === "file") {
          stats.files++;
          stats.bytes += e.size;
          e.racy = e.ctimeMs + 1000 + RACY_SLACK_MS > startedAtMs;
          if (e.racy) stats.racyFiles++;
        } else if (e.type === "dir") stats.dirs++;
        else if (e.type === "symlink") stats.symlinks++;
        else stats.other++;
      }
    }
    stats.newBlobs += pack.written.size;
    stats.newBlobBytes += pack.bytes;
    stats.contentMs = performance.now() - t1;
    const manifest: Manifest = {
      id,
      session: options.session ?? null,
      createdAt: new Date(startedAtMs).toISOString(),
      startedAtMs,
      exclude,
      ignore,
      aliases,
      trees: trees.map(treeInfo),
      stats,
      content: trees,
    };
    stats.totalMs = performance.now() - t0;
    const manifestBytes = store.writeManifest(manifest);
    stats.storeBytes = stats.newBlobBytes + pack.indexBytes + manifestBytes;
    for (const tree of trees) store.setHead(tree.root, id);
    const { content: _content, ...info } = manifest;
    return info;
  });
}

/** A file whose content is still to be read. */
interface Pending {
  abs: string;
  entry: FileEntry;
  /** Its position in `entries`, to replace it with `other` if it will not hold still. */
  index: number;
  entries: Entry[];
}

function sameStat(a: FileEntry, b: LiveEntry): boolean {
  return a.size === b.size && a.mtimeMs === b.mtimeMs && a.ctimeMs === b.ctimeMs &&
    a.ino === b.ino && a.mode === b.mode;
}

function toEntry(live: LiveEntry): Entry {
  switch (live.type) {
    case "dir":
      return { path: live.path, type: "dir", mode: live.mode, mtimeMs: live.mtimeMs };
    case "symlink":
      return {
        path: live.path,
        type: "symlink",
        target: live.target ?? "",
        mtimeMs: live.mtimeMs,
      };
    default:
      return { path: live.path, type: "other", reason: live.reason ?? "special file" };
  }
}

/** Space kept free beyond what a snapshot may write, so that the journal can still grow. */
const FREE_HEADROOM_BYTES = 16 << 20;

/** The default cap on the entries of one protected tree (`rollback.max_files`). */
export const DEFAULT_MAX_FILES = 200_000;

/** Errors of the store's side of a copy: the disk or quota is full, or the store is read-only. */
const STORE_FULL = ["ENOSPC", "EDQUOT", "EROFS", "EFBIG"];

function markOther(job: Pending, reason: string): void {
  job.entries[job.index] = { path: job.entry.path, type: "other", reason };
}

/**
 * Reads a small file into the pack buffer, hashes it, and keeps it unless the store has it.
 * The file is opened with O_NOFOLLOW, so a path swapped for a symlink since the scan is never
 * read through (its target could be anything, such as /etc/shadow).
 */
function readSmall(
  store: Store,
  pack: PackWriter,
  job: Pending,
  stats: SnapshotStats,
): "done" | "flush" {
  const e = job.entry;
  const other = (reason: string) => {
    markOther(job, reason);
    return "done" as const;
  };
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    // One byte more than the scanned size, to notice a file that grew.
    if (!pack.room(e.size + 1)) return "flush";
    let fd: number;
    try {
      fd = openSync(job.abs, READ_NOFOLLOW);
    } catch (err) {
      if (isCode(err, "ENOENT")) return other("deleted while read");
      if (isCode(err, "ELOOP")) return other("changed while the snapshot read it");
      return other(`unreadable: ${reasonOf(err)}`);
    }
    try {
      const buf = pack.reserve(e.size + 1);
      let got = 0;
      while (got < buf.length) {
        const n = readSync(fd, buf, got, buf.length - got, null);
        if (n === 0) break;
        got += n;
      }
      if (got !== e.size) {
        const now = lstatEntry(job.abs, e.path);
        if (now === null) return other("deleted while read");
        if (now.type !== "file") return other("changed while the snapshot read it");
        Object.assign(e, { size: now.size, mtimeMs: now.mtimeMs, ctimeMs: now.ctimeMs });
        Object.assign(e, { ino: now.ino, mode: now.mode });
        continue;
      }
      const hash = hashBytes(buf.subarray(0, got));
      e.hash = hash;
      stats.hashedFiles++;
      stats.hashedBytes += got;
      if (!pack.written.has(hash) && !store.hasBlob(hash)) pack.commit(hash, got);
      return "done";
    } catch (err) {
      return other(`unreadable: ${reasonOf(err)}`);
    } finally {
      closeSync(fd);
    }
  }
  return other("changed while the snapshot read it");
}

/**
 * Copies a large file into a temporary file by the kernel (`copy_file_range`, on a background
 * thread) and checks that the source held still meanwhile. Returns the copy, or undefined when
 * the file was recorded as `other` instead.
 */
async function copyLarge(store: Store, job: Pending): Promise<string | undefined> {
  const e = job.entry;
  for (let attempt = 0; attempt < ATTEMPTS; attempt++) {
    const tmp = store.tmpPath("blob");
    try {
      await Deno.copyFile(job.abs, tmp);
      const after = lstatEntry(job.abs, e.path);
      if (after === null) {
        Deno.removeSync(tmp);
        markOther(job, "deleted while read");
        return undefined;
      }
      if (after.type !== "file") {
        Deno.removeSync(tmp);
        markOther(job, "changed while the snapshot read it");
        return undefined;
      }
      if (
        after.ino === e.ino && after.size === e.size && after.mtimeMs === e.mtimeMs &&
        after.ctimeMs === e.ctimeMs
      ) return tmp;
      Object.assign(e, {
        ino: after.ino,
        size: after.size,
        mode: after.mode,
        mtimeMs: after.mtimeMs,
        ctimeMs: after.ctimeMs,
      });
      Deno.removeSync(tmp);
    } catch (err) {
      try {
        Deno.removeSync(tmp);
      } catch {
        // Never created.
      }
      if (STORE_FULL.some((code) => isCode(err, code))) {
        // The store could not take the copy: the file is not protected, and the snapshot must
        // not say it is. It fails whole, and the session runs without rollback, loudly.
        throw new Error(
          `the store could not hold a copy of "${job.abs}" (${
            reasonOf(err)
          }): nothing of this snapshot is kept`,
          { cause: err },
        );
      }
      markOther(
        job,
        err instanceof Deno.errors.NotFound ? "deleted while read" : `unreadable: ${reasonOf(err)}`,
      );
      return undefined;
    }
  }
  markOther(job, "changed while the snapshot read it");
  return undefined;
}

/**
 * Hashes a large file's copy (on this thread: node:crypto with SHA-NI is twice as fast as
 * WebCrypto, and streams through one reused buffer) and moves it into place as a loose blob.
 */
function storeLarge(store: Store, job: Pending, tmp: string, stats: SnapshotStats): void {
  try {
    const { hash, size } = hashFile(tmp);
    if (size !== job.entry.size) {
      Deno.removeSync(tmp);
      markOther(job, "changed while the snapshot read it");
      return;
    }
    job.entry.hash = hash;
    stats.hashedFiles++;
    stats.hashedBytes += size;
    if (store.adoptLoose(tmp, hash)) {
      stats.newBlobs++;
      stats.newBlobBytes += size;
    }
  } catch (err) {
    try {
      Deno.removeSync(tmp);
    } catch {
      // Already moved or removed.
    }
    throw err;
  }
}

/** The hashes of the files in the root's previous snapshot, by path. */
function loadCache(store: Store, root: string): Map<string, FileEntry> | undefined {
  const id = store.head(root);
  if (id === undefined) return undefined;
  let tree: Tree | undefined;
  try {
    tree = store.readManifest(id).content.find((t) => t.root === root);
  } catch {
    // Pruned or damaged: take the snapshot without a cache.
    return undefined;
  }
  if (tree === undefined) return undefined;
  const out = new Map<string, FileEntry>();
  for (const e of tree.entries) if (e.type === "file") out.set(e.path, e);
  return out;
}

/**
 * Normalizes roots: absolute, `.`/`..` and trailing slashes removed, symlinks resolved (a
 * missing path through its nearest existing parent), duplicates and nested roots dropped.
 */
export function resolveRoots(roots: readonly string[]): string[] {
  const out = new Set<string>();
  for (const root of roots) {
    if (!root.startsWith("/")) {
      throw new TypeError(`Cannot protect "${root}" for rollback: the path must be absolute`);
    }
    out.add(realPath(normalize(root).replace(/(.)\/+$/, "$1")));
  }
  const sorted = [...out].sort();
  return sorted.filter((r) => !sorted.some((o) => o !== r && (o === "/" || r.startsWith(o + "/"))));
}

function realPath(path: string): string {
  try {
    return Deno.realPathSync(path);
  } catch (e) {
    if (!(e instanceof Deno.errors.NotFound) || path === "/") throw e;
    const parent = dirname(path);
    const base = path.slice(parent.length + (parent === "/" ? 0 : 1));
    const real = realPath(parent);
    return real === "/" ? "/" + base : real + "/" + base;
  }
}

/** Sentry's data directory, as given and resolved: never snapshotted. */
function ignoredDirs(dataDir: string): string[] {
  const out = new Set([dataDir]);
  try {
    out.add(Deno.realPathSync(dataDir));
  } catch {
    // Not created yet.
  }
  return [...out];
}

/**
 * Lets the event loop run (so finished background copies are collected and the next ones
 * started) without the 1-4 ms a `setTimeout(0)` costs.
 */
class Yielder {
  #channel = new MessageChannel();
  #resolve: (() => void) | undefined;

  constructor() {
    this.#channel.port1.onmessage = () => this.#resolve?.();
  }

  yield(): Promise<void> {
    return new Promise((resolve) => {
      this.#resolve = resolve;
      this.#channel.port2.postMessage(0);
    });
  }

  close(): void {
    this.#channel.port1.close();
    this.#channel.port2.close();
  }
}
