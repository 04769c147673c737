/**
 * Snapshot manifests: what a snapshot recorded of each protected tree, and how it is stored.
 *
 * A manifest file is JSON lines: the first line is the {@link SnapshotInfo} (so listing
 * snapshots reads one line per file), then one line per tree with its entries as compact
 * tuples. Paths inside a tree are relative to its root (`""` is the root itself), sorted by
 * UTF-16 code units, so every subtree is one contiguous run of entries.
 *
 * @module
 */

/** The kinds of entry a snapshot records. `other` is anything it cannot capture. */
export type EntryType = "file" | "dir" | "symlink" | "other";

/** A regular file: its content (by hash), mode and mtime, and the stat fields of the cache. */
export interface FileEntry {
  /** Relative to the tree's root; `""` for a root that is itself a file. */
  path: string;
  type: "file";
  /** Permission bits, `mode & 0o7777`. */
  mode: number;
  /** Milliseconds since the epoch (Deno's stat and utime stop at milliseconds). */
  mtimeMs: number;
  size: number;
  /** SHA-256 of the content, lowercase hex: the blob's name in the store. */
  hash: string;
  /** Inode number, for the metadata cache and quick comparisons. */
  ino: number;
  /** Status-change time; Deno reports it to the second. */
  ctimeMs: number;
  /**
   * The file changed so close to the snapshot that a later change could keep the same size,
   * mtime and ctime: it is never trusted without hashing (as git treats "racily clean" files).
   */
  racy: boolean;
}

/** A directory, recorded even when empty. */
export interface DirEntry {
  path: string;
  type: "dir";
  mode: number;
  mtimeMs: number;
}

/** A symbolic link: its target as written, never followed. */
export interface SymlinkEntry {
  path: string;
  type: "symlink";
  target: string;
  /** Recorded for information; a restored link gets the time of the restore. */
  mtimeMs: number;
}

/**
 * Something the snapshot could not capture (a socket, a FIFO, a device, an unreadable file or
 * directory). Plans leave it and everything below it alone, so a rollback never removes it.
 */
export interface OtherEntry {
  path: string;
  type: "other";
  /** Why it was not captured, such as `fifo` or `unreadable: permission denied`. */
  reason: string;
}

/** One recorded path. */
export type Entry = FileEntry | DirEntry | SymlinkEntry | OtherEntry;

/** One protected tree in a snapshot. */
export interface Tree {
  /** The root's real absolute path (symlinks in it resolved when the snapshot was taken). */
  root: string;
  /** The root did not exist: a rollback removes whatever appears there. */
  absent: boolean;
  /** Sorted by path; the root itself first, as `""`. */
  entries: Entry[];
}

/** Counts for one tree. */
export interface TreeInfo {
  root: string;
  absent: boolean;
  files: number;
  dirs: number;
  symlinks: number;
  other: number;
  /** Bytes of regular files. */
  bytes: number;
}

/** What a snapshot did, for reports and benchmarks. */
export interface SnapshotStats {
  files: number;
  dirs: number;
  symlinks: number;
  /** Entries recorded as `other` (not captured). */
  other: number;
  /** Bytes of regular files. */
  bytes: number;
  /** Files whose hash came from the metadata cache: not read at all. */
  reusedFiles: number;
  /** Files read and hashed. */
  hashedFiles: number;
  hashedBytes: number;
  /** Blobs added to the store (packed or loose), after deduplication. */
  newBlobs: number;
  newBlobBytes: number;
  /** Bytes the snapshot added to the store: new blobs, packs' indexes and the manifest. */
  storeBytes: number;
  /** Files marked racy (see {@link FileEntry.racy}). */
  racyFiles: number;
  /** Time spent walking and stat-ing the trees. */
  scanMs: number;
  /** Time spent reading, hashing and copying content. */
  contentMs: number;
  totalMs: number;
}

/** A snapshot's header: everything but the entries. */
export interface SnapshotInfo {
  /** A ULID: snapshots sort by time. */
  id: string;
  /** The Sentry session that took it, if any. */
  session: string | null;
  /** ISO 8601. */
  createdAt: string;
  /** When it began, in milliseconds since the epoch; racy entries are judged against it. */
  startedAtMs: number;
  /** The exclusion globs it applied; plans apply the same. */
  exclude: string[];
  /** Paths never recorded (Sentry's own data directory); plans ignore them too. */
  ignore: string[];
  /**
   * Roots as given, when symlinks made them differ from the real paths recorded, as
   * `[given, real]`: plans translate changed paths reported under the given spelling.
   */
  aliases: [string, string][];
  trees: TreeInfo[];
  stats: SnapshotStats;
}

/** A full snapshot: header and entries. */
export interface Manifest extends SnapshotInfo {
  /** Named `content` so that it does not clash with the header's `trees` counts. */
  content: Tree[];
}

const MANIFEST_VERSION = 1;

type FileTuple = [string, "f", number, number, number, string, number, number, 0 | 1];
type DirTuple = [string, "d", number, number];
type LinkTuple = [string, "l", string, number];
type OtherTuple = [string, "o", string];
type EntryTuple = FileTuple | DirTuple | LinkTuple | OtherTuple;

function toTuple(e: Entry): EntryTuple {
  switch (e.type) {
    case "file":
      return [e.path, "f", e.mode, e.mtimeMs, e.size, e.hash, e.ino, e.ctimeMs, e.racy ? 1 : 0];
    case "dir":
      return [e.path, "d", e.mode, e.mtimeMs];
    case "symlink":
      return [e.path, "l", e.target, e.mtimeMs];
    case "other":
      return [e.path, "o", e.reason];
  }
}

function fromTuple(t: EntryTuple): Entry {
  switch (t[1]) {
    case "f":
      // A hash names a blob by its path in the store: anything but 64 hex digits could name a
      // file outside it.
      if (typeof t[5] !== "string" || !/^[0-9a-f]{64}$/.test(t[5])) {
        throw new SyntaxError(`the entry "${String(t[0])}" has a hash that is not a SHA-256`);
      }
      return {
        path: t[0],
        type: "file",
        mode: t[2],
        mtimeMs: t[3],
        size: t[4],
        hash: t[5],
        ino: t[6],
        ctimeMs: t[7],
        racy: t[8] === 1,
      };
    case "d":
      return { path: t[0], type: "dir", mode: t[2], mtimeMs: t[3] };
    case "l":
      return { path: t[0], type: "symlink", target: t[2], mtimeMs: t[3] };
    case "o":
      return { path: t[0], type: "other", reason: t[2] };
  }
}

/** Serializes a manifest to its file format. */
export function encodeManifest(manifest: Manifest): string {
  const { content, ...info } = manifest;
  const lines = [JSON.stringify({ v: MANIFEST_VERSION, ...info })];
  for (const tree of content) {
    lines.push(JSON.stringify({
      root: tree.root,
      absent: tree.absent,
      entries: tree.entries.map(toTuple),
    }));
  }
  return lines.join("\n") + "\n";
}

/**
 * Parses a manifest file.
 * @throws {SyntaxError} when the text is not a manifest of a known version.
 */
export function decodeManifest(text: string, name: string): Manifest {
  const lines = text.split("\n").filter((l) => l !== "");
  const info = decodeInfo(lines[0] ?? "", name);
  const content: Tree[] = [];
  for (const line of lines.slice(1)) {
    const raw = JSON.parse(line) as { root: string; absent: boolean; entries: EntryTuple[] };
    try {
      content.push({ root: raw.root, absent: raw.absent, entries: raw.entries.map(fromTuple) });
    } catch (cause) {
      throw new SyntaxError(
        `Cannot read snapshot "${name}": ${(cause as Error).message}`,
        { cause },
      );
    }
  }
  return { ...info, content };
}

/**
 * Parses a manifest's first line.
 * @throws {SyntaxError} when it is not a manifest header of a known version.
 */
export function decodeInfo(line: string, name: string): SnapshotInfo {
  let raw: unknown;
  try {
    raw = JSON.parse(line);
  } catch (cause) {
    throw new SyntaxError(`Cannot read snapshot "${name}": the manifest is damaged`, { cause });
  }
  const header = raw as { v?: number } & SnapshotInfo;
  if (header.v !== MANIFEST_VERSION) {
    throw new SyntaxError(`Cannot read snapshot "${name}": unknown manifest version "${header.v}"`);
  }
  const { v: _v, ...info } = header;
  return info;
}

/** Counts a tree's entries by type. */
export function treeInfo(tree: Tree): TreeInfo {
  const info: TreeInfo = {
    root: tree.root,
    absent: tree.absent,
    files: 0,
    dirs: 0,
    symlinks: 0,
    other: 0,
    bytes: 0,
  };
  for (const e of tree.entries) {
    if (e.type === "file") {
      info.files++;
      info.bytes += e.size;
    } else if (e.type === "dir") info.dirs++;
    else if (e.type === "symlink") info.symlinks++;
    else info.other++;
  }
  return info;
}

/** Compares paths by UTF-16 code units, the order of a tree's entries. */
export function comparePaths(a: string, b: string): number {
  return a < b ? -1 : a > b ? 1 : 0;
}

/**
 * The index range of the entries strictly below `path` (a subtree) in a sorted entry list.
 * `""` (the root) covers everything after the root entry.
 */
export function subtreeRange(entries: readonly Entry[], path: string): [number, number] {
  const prefix = path === "" ? "" : path + "/";
  let lo = 0;
  let hi = entries.length;
  while (lo < hi) {
    const mid = (lo + hi) >>> 1;
    if ((entries[mid] as Entry).path < prefix) lo = mid + 1;
    else hi = mid;
  }
  let end = lo;
  while (end < entries.length && (entries[end] as Entry).path.startsWith(prefix)) end++;
  // The root entry ("") is not below itself.
  if (path === "" && lo < end && (entries[lo] as Entry).path === "") lo++;
  return [lo, end];
}
