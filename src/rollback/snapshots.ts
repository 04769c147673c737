/**
 * Managing the store's disk use: `sentry snapshots list|show|prune`.
 * @module
 */
import { createUlid, ulidTime } from "../events/mod.ts";
import type { Manifest, SnapshotInfo } from "./manifest.ts";
import type { Store } from "./store.ts";
import { PackWriter } from "./_pack.ts";

/** Options for {@link listSnapshots}. */
export interface ListSnapshotsOptions {
  /** Only this session's snapshots. */
  session?: string;
}

/**
 * The snapshots in the store, oldest first, read from each manifest's header line only. A
 * session's first snapshot is the one its rollback restores.
 */
export function listSnapshots(store: Store, options: ListSnapshotsOptions = {}): SnapshotInfo[] {
  const out: SnapshotInfo[] = [];
  for (const id of store.listSnapshotIds()) {
    let info: SnapshotInfo;
    try {
      info = store.readInfo(id);
    } catch {
      // Deleted meanwhile, or damaged: not listed.
      continue;
    }
    if (options.session === undefined || info.session === options.session) out.push(info);
  }
  return out;
}

/**
 * A whole snapshot, by id or by a unique prefix of it.
 * @throws {Deno.errors.NotFound} when no snapshot matches.
 * @throws {RangeError} when the prefix matches several.
 */
export function showSnapshot(store: Store, id: string): Manifest {
  const ids = store.listSnapshotIds();
  if (ids.includes(id)) return store.readManifest(id);
  const matches = ids.filter((s) => s.startsWith(id));
  if (matches.length === 0) throw new Deno.errors.NotFound(`Unknown snapshot "${id}"`);
  if (matches.length > 1) {
    throw new RangeError(`Ambiguous snapshot "${id}": it starts ${matches.length} snapshot ids`);
  }
  return store.readManifest(matches[0] as string);
}

/** Options for {@link prune}. */
export interface PruneOptions {
  /** Snapshots and rollbacks older than this many milliseconds are deleted. */
  olderThanMs: number;
  /** The clock; `Date.now` by default. */
  now?: () => number;
  /** Sessions whose snapshots and quarantines are kept whatever their age (running ones). */
  keepSessions?: Iterable<string>;
}

/** What {@link prune} deleted. */
export interface PruneResult {
  /** Snapshot ids deleted. */
  snapshots: string[];
  /** Rollbacks whose quarantine was deleted, as `session/id`: they can no longer be undone. */
  rollbacks: string[];
  /** Loose blobs deleted. */
  blobs: number;
  /** Packs deleted whole. */
  packsDeleted: number;
  /** Packs rewritten without their dead blobs. */
  packsRewritten: number;
  /** Bytes given back to the filesystem. */
  bytesFreed: number;
}

/**
 * Deletes snapshots and quarantines older than `olderThanMs`, then every blob no remaining
 * snapshot refers to: loose blobs are deleted, packs are deleted or rewritten without their
 * dead blobs. Also deletes temporary files left by a crash. Holds the store lock exclusively,
 * so it waits for running snapshots and rollbacks, and they wait for it.
 */
export async function prune(store: Store, options: PruneOptions): Promise<PruneResult> {
  return await store.withLock(true, async () => {
    const now = options.now ?? Date.now;
    const cutoff = now() - options.olderThanMs;
    const keep = new Set(options.keepSessions ?? []);
    const result: PruneResult = {
      snapshots: [],
      rollbacks: [],
      blobs: 0,
      packsDeleted: 0,
      packsRewritten: 0,
      bytesFreed: 0,
    };
    const free = (path: string) => {
      result.bytesFreed += diskBytes(path);
      Deno.removeSync(path, { recursive: true });
    };

    // Snapshots.
    const remaining: string[] = [];
    for (const info of listSnapshots(store)) {
      const old = Date.parse(info.createdAt) < cutoff;
      if (old && (info.session === null || !keep.has(info.session))) {
        free(store.manifestPath(info.id));
        const mac = store.manifestPath(info.id).replace(/\.json$/, ".mac");
        if (exists(mac)) free(mac);
        result.snapshots.push(info.id);
      } else remaining.push(info.id);
    }
    const alive = new Set(remaining);
    for (const head of store.listHeads()) if (!alive.has(head.id)) Deno.removeSync(head.file);

    // Quarantines.
    const qroot = `${store.dir}/quarantine`;
    for (const session of readNames(qroot)) {
      if (keep.has(session)) continue;
      const dir = `${qroot}/${session}`;
      for (const id of readNames(dir)) {
        const time = ulidTime(id);
        if (Number.isFinite(time) && time < cutoff) {
          free(`${dir}/${id}`);
          result.rollbacks.push(`${session}/${id}`);
        }
      }
      if (readNames(dir).length === 0) Deno.removeSync(dir);
    }

    // Temporary files: no snapshot or rollback is running while the lock is held.
    for (const name of readNames(`${store.dir}/tmp`)) free(`${store.dir}/tmp/${name}`);

    // Blobs no remaining snapshot refers to.
    const referenced = new Set<string>();
    for (const id of remaining) {
      for (const tree of store.readManifest(id).content) {
        for (const e of tree.entries) if (e.type === "file") referenced.add(e.hash);
      }
    }
    for (const hash of store.listLoose()) {
      if (!referenced.has(hash)) {
        free(store.looseBlobPath(hash));
        result.blobs++;
      }
    }
    const packs = store.listPacks();
    const complete = new Set(packs);
    for (const name of readNames(`${store.dir}/packs`)) {
      // A pack without its index was never completed.
      if (name.endsWith(".pack") && !complete.has(name.slice(0, -5))) {
        free(`${store.dir}/packs/${name}`);
      }
    }
    const writer = new PackWriter(store, createUlid({ now })());
    const rewritten: string[] = [];
    try {
      for (const pack of packs) {
        const entries = store.readPackIndex(pack);
        const live = entries.filter(([hash]) => referenced.has(hash));
        if (live.length === entries.length) continue;
        if (live.length > 0) {
          await copyLive(store, pack, live, writer);
          rewritten.push(pack);
          result.packsRewritten++;
        } else {
          result.packsDeleted++;
        }
        result.blobs += entries.length - live.length;
      }
      await writer.finish();
    } catch (e) {
      await writer.abort();
      throw e;
    }
    // The new packs are complete: the old ones can go.
    for (const pack of packs) {
      const entries = store.readPackIndex(pack);
      if (entries.every(([hash]) => referenced.has(hash))) continue;
      free(`${store.dir}/packs/${pack}.idx`);
      free(store.packPath(pack));
    }
    for (const pack of writer.packs) {
      result.bytesFreed -= diskBytes(store.packPath(pack)) +
        diskBytes(`${store.dir}/packs/${pack}.idx`);
    }
    store.forgetIndex();
    return result;
  });
}

async function copyLive(
  store: Store,
  pack: string,
  live: readonly [string, number, number][],
  writer: PackWriter,
): Promise<void> {
  const file = Deno.openSync(store.packPath(pack), { read: true });
  try {
    for (const [hash, offset, size] of live) {
      if (writer.written.has(hash)) continue;
      if (!writer.room(size)) await writer.flush();
      if (writer.full) await writer.rollover();
      const buf = writer.reserve(size);
      file.seekSync(offset, Deno.SeekMode.Start);
      let got = 0;
      while (got < size) {
        const n = file.readSync(buf.subarray(got));
        if (n === null || n === 0) break;
        got += n;
      }
      if (got !== size) throw new Error(`Pack "${pack}" is truncated at blob "${hash}"`);
      writer.commit(hash, size);
    }
  } finally {
    file.close();
  }
}

function readNames(dir: string): string[] {
  try {
    return [...Deno.readDirSync(dir)].map((e) => e.name);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
}

/** The bytes a file or tree takes (file sizes, not blocks). */
function diskBytes(path: string): number {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(path);
  } catch {
    return 0;
  }
  if (!info.isDirectory) return info.size;
  let total = 0;
  for (const e of Deno.readDirSync(path)) total += diskBytes(`${path}/${e.name}`);
  return total;
}

function exists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch {
    return false;
  }
}
