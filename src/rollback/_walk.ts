/**
 * Walking a protected tree without following symlinks, and the exclusion test both snapshots
 * and plans apply. Private to src/rollback.
 * @module
 */
import picomatch from "picomatch";

/** What a walk saw at one path, from `lstat`. */
export interface LiveEntry {
  /** Relative to the root; `""` for the root. */
  path: string;
  type: "file" | "dir" | "symlink" | "other";
  /** `mode & 0o7777`. */
  mode: number;
  mtimeMs: number;
  ctimeMs: number;
  size: number;
  ino: number;
  /** For symlinks. */
  target?: string;
  /** For `other`: what it is, or why it could not be read. */
  reason?: string;
}

/** Tells whether a path is excluded, given its absolute and root-relative forms. */
export type Excluder = (abs: string, rel: string) => boolean;

/**
 * Builds the exclusion test. `globs` are picomatch globs, dotfiles included: an absolute glob
 * (`/work/p/tmp/**`) matches the absolute path, any other (`**\/node_modules/**`, `*.log`) the
 * path relative to its root, so a root that happens to live under a `build/` directory is not
 * excluded whole. `ignore` lists directories left out entirely (Sentry's own data). The root
 * itself is never excluded.
 */
export function createExcluder(globs: readonly string[], ignore: readonly string[]): Excluder {
  // `**/name/**` (the common case: node_modules, .venv, dist) is a segment test, not a regex.
  const segments: string[] = [];
  const relative: string[] = [];
  const absolute: string[] = [];
  for (const glob of globs) {
    const m = /^\*\*\/([^*?[\]{}()!+@|\\]+)\/\*\*$/.exec(glob);
    if (m !== null) segments.push(`/${m[1]}/`);
    else if (glob.startsWith("/")) absolute.push(glob);
    else relative.push(glob);
  }
  const matchRel = relative.length > 0 ? picomatch(relative, { dot: true }) : undefined;
  const matchAbs = absolute.length > 0 ? picomatch(absolute, { dot: true }) : undefined;
  return (abs, rel) => {
    if (rel === "") return false;
    for (const dir of ignore) {
      if (abs === dir || abs.startsWith(dir + "/")) return true;
    }
    if (segments.length > 0) {
      const wrapped = "/" + rel + "/";
      for (const s of segments) if (wrapped.includes(s)) return true;
    }
    return (matchRel !== undefined && matchRel(rel)) || (matchAbs !== undefined && matchAbs(abs));
  };
}

/** Joins a root and a relative path (`""` is the root). */
export function joinRel(root: string, rel: string): string {
  if (rel === "") return root;
  return root === "/" ? "/" + rel : root + "/" + rel;
}

/** The parent of a relative path; `""` for top-level entries. */
export function parentRel(rel: string): string {
  const i = rel.lastIndexOf("/");
  return i < 0 ? "" : rel.slice(0, i);
}

const S_IFMT = 0o170000;

/** Reads one path's `lstat` into a {@link LiveEntry}; null when it does not exist. */
export function lstatEntry(abs: string, rel: string): LiveEntry | null {
  let info: Deno.FileInfo;
  try {
    info = Deno.lstatSync(abs);
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || isCode(e, "ENOTDIR")) return null;
    throw e;
  }
  return fromInfo(info, abs, rel);
}

/** Converts a `FileInfo` from `lstat` or `fstat`. */
export function fromInfo(info: Deno.FileInfo, abs: string, rel: string): LiveEntry {
  const mode = info.mode ?? 0;
  const entry: LiveEntry = {
    path: rel,
    type: info.isFile ? "file" : info.isDirectory ? "dir" : info.isSymlink ? "symlink" : "other",
    mode: mode & 0o7777,
    mtimeMs: info.mtime?.getTime() ?? 0,
    ctimeMs: info.ctime?.getTime() ?? 0,
    size: info.size,
    ino: info.ino ?? 0,
  };
  if (entry.type === "symlink") {
    try {
      entry.target = Deno.readLinkSync(abs);
    } catch (e) {
      // Swapped for something else between the lstat and this read (EINVAL), or gone: what it
      // is now is unknown, so nothing there may be touched.
      if (!isCode(e, "EINVAL") && !(e instanceof Deno.errors.NotFound)) throw e;
      entry.type = "other";
      entry.reason = "changed while read";
      return entry;
    }
  }
  if (entry.type === "other") entry.reason = describeSpecial(mode & S_IFMT);
  return entry;
}

function describeSpecial(format: number): string {
  switch (format) {
    case 0o010000:
      return "fifo";
    case 0o020000:
      return "character device";
    case 0o060000:
      return "block device";
    case 0o140000:
      return "socket";
    default:
      return "special file";
  }
}

/** Options for {@link walkTree}. */
export interface WalkOptions {
  excluded: Excluder;
  /** Where to start below the root (default: the root itself). Must be a real directory. */
  from?: string;
  /**
   * The most entries to list: past it the walk stops at once (memory and time stay bounded)
   * and throws {@link TooManyEntriesError}.
   */
  maxEntries?: number;
}

/** A tree with more entries than {@link WalkOptions.maxEntries}: the walk stopped there. */
export class TooManyEntriesError extends RangeError {
  /** Builds the error for the tree's root and the cap. */
  constructor(readonly root: string, readonly maxEntries: number) {
    super(`"${root}" holds more than ${maxEntries.toLocaleString("en-US")} entries`);
    this.name = "TooManyEntriesError";
  }
}

/**
 * Lists a tree from its root: every file, directory and symlink, by `lstat`, never following a
 * symlink and never descending into an excluded directory. A directory that cannot be read is
 * reported as `other` (its content is unknown, so nothing below it may be touched). Returns
 * null when the root does not exist. The result is unsorted.
 */
export function walkTree(root: string, options: WalkOptions): LiveEntry[] | null {
  const out: LiveEntry[] = [];
  const start = options.from ?? "";
  const first = lstatEntry(joinRel(root, start), start);
  if (first === null) return null;
  out.push(first);
  if (first.type !== "dir") return out;
  const stack: LiveEntry[] = [first];
  while (stack.length > 0) {
    const dir = stack.pop() as LiveEntry;
    const dirAbs = joinRel(root, dir.path);
    let names: Deno.DirEntry[];
    try {
      names = [...Deno.readDirSync(dirAbs)];
    } catch (e) {
      if (e instanceof Deno.errors.NotFound) continue;
      dir.type = "other";
      dir.reason = `unreadable: ${e instanceof Error ? e.message : String(e)}`;
      continue;
    }
    for (const { name } of names) {
      const rel = dir.path === "" ? name : dir.path + "/" + name;
      const abs = dirAbs === "/" ? "/" + name : dirAbs + "/" + name;
      if (options.excluded(abs, rel)) continue;
      const entry = lstatEntry(abs, rel);
      if (entry === null) continue;
      out.push(entry);
      if (options.maxEntries !== undefined && out.length > options.maxEntries) {
        throw new TooManyEntriesError(root, options.maxEntries);
      }
      if (entry.type === "dir") stack.push(entry);
    }
  }
  return out;
}

/** Tells whether an error is an OS error with this `code` (such as `EXDEV`). */
export function isCode(error: unknown, code: string): boolean {
  return typeof error === "object" && error !== null &&
    (error as { code?: unknown }).code === code;
}

/** An error's message, for results and reasons. */
export function reasonOf(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
