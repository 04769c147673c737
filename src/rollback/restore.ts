/**
 * Carrying out a plan: putting the protected trees back as the snapshot recorded them, then
 * verifying every path.
 *
 * The order is fixed. First, whatever is in the way (created paths, and paths whose type
 * changed, such as a directory replaced by a symlink) is moved into the session's quarantine.
 * Then missing directories are created, then files and symlinks are written, each through a
 * temporary file in its own directory (content, mode and mtime set before a `rename` over the
 * path, so the path always holds either the old or the new version). Directories get their
 * modes and mtimes last, deepest first, since writing inside a directory changes its mtime.
 * Finally every path is checked again: type, mode, mtime, symlink target, and each restored
 * file's SHA-256.
 *
 * Nothing is ever written through a symlink, nor outside the root: each root is held open, and
 * every path is resolved by `openat2` beneath it with `RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS`
 * (see src/platform/beneath_linux.ts); every change is then made relative to the directory fd so opened. A
 * directory swapped for a symlink at any moment makes the paths below it fail, by name; they are
 * never followed, and the rest goes on. Metadata is restored by writing a fresh copy and renaming
 * it over the path, never by `chmod` through the existing inode, which may be a hard link to a
 * file outside the tree.
 *
 * A process that holds a restored file open keeps its descriptor on the old inode (now in the
 * quarantine, linked there before the rename): its later writes go to that inode, never to the
 * restored path, and `undo` puts that inode back with everything written to it.
 *
 * @module
 */
import { dirname } from "node:path";
import { createUlid } from "../events/mod.ts";
import type { Entry, EntryType } from "./manifest.ts";
import type { ActionKind, Difference, Plan, PlanAction } from "./plan.ts";
import type { Store } from "./store.ts";
import {
  type At,
  Beneath,
  closeFd,
  createAt,
  linkOut,
  mkdirAt,
  O,
  procPath,
  removeTreeAt,
  renameOut,
  renameWithin,
  setMeta,
  symlinkAt,
  unlinkAt,
} from "../platform/beneath_linux.ts";
import { hashFile } from "./_hash.ts";
import { copyTree, Quarantine } from "./_quarantine.ts";
import { isCode, type LiveEntry, lstatEntry, reasonOf } from "./_walk.ts";

/** The changes a restore makes, as reported to {@link RestoreHooks.beforeChange}. */
export type ChangeOp = "move" | "mkdir" | "write" | "symlink" | "meta";

/** Test hooks: inject failures and tampering. */
export interface RestoreHooks {
  /** Called before each change to a tree; a throw fails that path with the error's message. */
  beforeChange?: (op: ChangeOp, path: string) => void;
  /** Called after all changes and before verification. */
  beforeVerify?: () => void;
}

/** Options for {@link restore}. */
export interface RestoreOptions {
  /** The plan to carry out, from {@link plan}. */
  plan: Plan;
  /** The session whose quarantine receives what the rollback moves away. */
  session: string;
  /** The rollback's id; a fresh ULID by default. */
  id?: string;
  /** The clock; `Date.now` by default. */
  now?: () => number;
  hooks?: RestoreHooks;
}

/** The outcome for one path. */
export interface PathResult {
  path: string;
  action: ActionKind;
  /** The snapshot's type for `restore` and `recreate`; the live type for `remove`. */
  type: EntryType;
  differences: Difference[];
  outcome: "ok" | "failed";
  /** Why it failed. */
  reason?: string;
}

/** What a restore did. */
export interface RestoreResult {
  /** True only when every path was restored and verified. */
  ok: boolean;
  /** The rollback's id: `undo` takes it back. */
  id: string;
  session: string;
  snapshot: string;
  /** In plan order; then any directory whose mtime could not be put back. */
  results: PathResult[];
  counts: { restored: number; recreated: number; removed: number; failed: number };
  /** The quarantine folder of this rollback; null when the plan had nothing to do. */
  quarantine: string | null;
  durationMs: number;
}

/**
 * Carries out a plan, then verifies every path. Holds the store lock (shared). A path that
 * fails does not stop the others; the result says which failed and why, and `ok` is false.
 * Before anything is overwritten or removed, its current version goes to the quarantine, so
 * {@link undo} can reverse the rollback.
 */
export async function restore(store: Store, options: RestoreOptions): Promise<RestoreResult> {
  return await store.withLock(false, () => restoreLocked(store, options));
}

interface State {
  store: Store;
  q: Quarantine;
  hooks: RestoreHooks;
  now: () => number;
  failed: Map<PlanAction, string>;
  trees: Map<string, Tree>;
  /** Directories whose entries this rollback changed. */
  touched: Set<string>;
  /** Directories this rollback created. */
  created: Set<string>;
}

function restoreLocked(store: Store, options: RestoreOptions): RestoreResult {
  const t0 = performance.now();
  const now = options.now ?? Date.now;
  const id = options.id ?? createUlid({ now })();
  const actions = options.plan.actions;
  if (actions.length === 0) {
    // Nothing to do, and nothing for undo to find: no quarantine folder.
    return {
      ok: true,
      id,
      session: options.session,
      snapshot: options.plan.snapshot.id,
      results: [],
      counts: { restored: 0, recreated: 0, removed: 0, failed: 0 },
      quarantine: null,
      durationMs: performance.now() - t0,
    };
  }
  const q = new Quarantine(`${store.quarantineDir(options.session)}/${id}`);
  q.writeOrigin(options.plan.snapshot.id);
  const st: State = {
    store,
    q,
    hooks: options.hooks ?? {},
    now,
    failed: new Map(),
    trees: new Map(),
    touched: new Set(),
    created: new Set(),
  };
  const extra: PathResult[] = [];
  try {
    // Each root is held open through its parent, every component a real directory.
    for (const root of new Set(actions.map((a) => a.root))) {
      try {
        st.trees.set(root, new Tree(new Beneath(root)));
      } catch (e) {
        for (const a of actions) if (a.root === root) st.failed.set(a, reasonOf(e));
      }
    }
    // 1. Move away what is in the way: created paths, and paths of the wrong type.
    for (const a of actions) {
      if (a.kind !== "remove" && !a.differences.includes("type")) continue;
      attempt(st, a, () => moveAway(st, a));
    }
    // 2. Create missing directories, parents first (actions are sorted by path).
    for (const a of actions) {
      if (a.entry?.type !== "dir" || !(a.kind === "recreate" || a.differences.includes("type"))) {
        continue;
      }
      attempt(st, a, () => {
        const tree = treeOf(st, a);
        const at = tree.at(a.rel);
        try {
          st.hooks.beforeChange?.("mkdir", a.path);
          q.record({ op: "mkdir", path: a.path });
          mkdirAt(at, 0o700);
        } finally {
          at.close();
        }
        if (a.rel === "") tree.fs.resetRoot();
        st.created.add(a.path);
        st.touched.add(dirname(a.path));
      });
    }
    // 3. Files and symlinks.
    for (const a of actions) {
      const entry = a.entry;
      if (entry === null || (entry.type !== "file" && entry.type !== "symlink")) continue;
      attempt(st, a, () => writeEntry(st, a, entry));
    }
    // 4. Directory modes and mtimes, deepest first.
    extra.push(...fixDirectories(st, actions));
  } finally {
    q.close();
  }
  st.hooks.beforeVerify?.();
  // 5. Verify, through the same fds: a path that cannot be reached beneath its root fails.
  const results: PathResult[] = actions.map((a) => {
    const base = { path: a.path, action: a.kind, type: a.type, differences: a.differences };
    const reason = st.failed.get(a) ?? verify(st, a);
    return reason === undefined
      ? { ...base, outcome: "ok" as const }
      : { ...base, outcome: "failed" as const, reason };
  });
  for (const tree of st.trees.values()) tree.fs.close();
  results.push(...extra.filter((r) => r.outcome === "failed"));
  const counts = { restored: 0, recreated: 0, removed: 0, failed: 0 };
  for (const r of results) {
    if (r.outcome === "failed") counts.failed++;
    else if (r.action === "restore") counts.restored++;
    else if (r.action === "recreate") counts.recreated++;
    else counts.removed++;
  }
  const result: RestoreResult = {
    ok: counts.failed === 0,
    id,
    session: options.session,
    snapshot: options.plan.snapshot.id,
    results,
    counts,
    quarantine: q.dir,
    durationMs: performance.now() - t0,
  };
  Deno.writeTextFileSync(
    `${q.dir}/rollback.json`,
    JSON.stringify({
      id,
      session: options.session,
      snapshot: result.snapshot,
      createdAt: new Date(now()).toISOString(),
      ok: result.ok,
      counts,
    }),
    { mode: 0o600 },
  );
  return result;
}

/** Runs one change for an action, unless it or a directory it needs already failed. */
function attempt(st: State, a: PlanAction, fn: () => void): void {
  if (st.failed.has(a)) return;
  const blocked = blockedBy(st, a);
  if (blocked !== undefined) {
    st.failed.set(a, `its directory "${blocked}" could not be restored`);
    return;
  }
  try {
    fn();
  } catch (e) {
    st.failed.set(a, reasonOf(e));
  }
}

/** The failed action on a directory above `a`, if any. */
function blockedBy(st: State, a: PlanAction): string | undefined {
  for (const [other] of st.failed) {
    if (other.root === a.root && other !== a && a.path.startsWith(other.path + "/")) {
      if (other.kind !== "remove") return other.path;
    }
  }
  return undefined;
}

function treeOf(st: State, a: PlanAction): Tree {
  return st.trees.get(a.root) as Tree;
}

/** What is at a name in an open directory, by `lstat` (never followed); null when missing. */
function liveAt(at: At, rel: string): LiveEntry | null {
  return lstatEntry(procPath(at.fd, at.name), rel);
}

function moveAway(st: State, a: PlanAction): void {
  const tree = treeOf(st, a);
  const at = tree.at(a.rel);
  try {
    // Already gone (moved with a directory above it, or deleted since the plan).
    if (liveAt(at, a.rel) === null) return;
    st.hooks.beforeChange?.("move", a.path);
    const item = st.q.nextItem();
    st.q.record({ op: "moved", path: a.path, item });
    const dst = `${st.q.dir}/${item}`;
    try {
      renameOut(at, dst);
    } catch (e) {
      if (!isCode(e, "EXDEV")) throw e;
      // Another filesystem: copy (reading beneath the pinned directory), then remove fd by fd.
      copyTree(procPath(at.fd, at.name), dst);
      removeTreeAt(at.fd, at.name, a.path);
    }
  } finally {
    at.close();
  }
  if (a.rel === "") tree.fs.resetRoot();
  else st.touched.add(dirname(a.path));
}

function writeEntry(st: State, a: PlanAction, entry: Entry): void {
  const metaOnly = a.kind === "restore" && entry.type === "file" &&
    !a.differences.includes("content") && !a.differences.includes("type");
  const at = treeOf(st, a).at(a.rel);
  const tmp = `.sentry-restore-${randomHex()}`;
  let made = false;
  try {
    // Always a fresh inode, even when only the mode or mtime differ: the live one may be a hard
    // link to a file outside the tree, and must not be changed.
    if (entry.type === "file") {
      st.hooks.beforeChange?.(metaOnly ? "meta" : "write", a.path);
      const fd = createAt(at, tmp, 0o600);
      made = true;
      try {
        const out = Deno.openSync(procPath(fd), { write: true });
        let written: number;
        try {
          written = st.store.copyBlobTo(entry.hash, out);
        } finally {
          out.close();
        }
        if (written !== entry.size) {
          throw new Error(`the stored copy has ${written} bytes, not ${entry.size}`);
        }
        setMeta(fd, { mode: entry.mode, atimeMs: st.now(), mtimeMs: entry.mtimeMs }, a.path);
      } finally {
        closeFd(fd);
      }
    } else if (entry.type === "symlink") {
      st.hooks.beforeChange?.("symlink", a.path);
      symlinkAt(entry.target, at, tmp);
      made = true;
    }
    const current = liveAt(at, a.rel);
    if (current?.type === "dir") throw new Error("a directory is in the way");
    if (metaOnly && current?.type !== "file") throw new Error("the file changed since the plan");
    if (current !== null) {
      const item = st.q.nextItem();
      st.q.record({ op: "replaced", path: a.path, item });
      keep(st, at, item);
    } else {
      st.q.record({ op: "created", path: a.path });
    }
    // renameat(2) replaces the name itself: it never follows a symlink at the destination.
    renameWithin(at, tmp, at.name);
    made = false;
    if (a.rel !== "") st.touched.add(dirname(a.path));
  } catch (e) {
    if (made) {
      try {
        unlinkAt(at.fd, tmp, false, a.path);
      } catch {
        // Best effort: the temporary name is ours alone.
      }
    }
    throw e;
  } finally {
    at.close();
  }
}

/**
 * Keeps the live version of a name as a quarantine item: a hard link to the same inode (a
 * process writing to it keeps writing there), or a copy read beneath the pinned directory when
 * the quarantine is on another filesystem.
 */
function keep(st: State, at: At, item: string): void {
  const dst = `${st.q.dir}/${item}`;
  try {
    linkOut(at, dst);
  } catch (e) {
    if (isCode(e, "EEXIST")) throw e;
    copyTree(procPath(at.fd, at.name), dst);
  }
}

/**
 * Sets directory modes and mtimes, deepest first: the snapshot's for directories in the plan,
 * the pre-rollback ones for directories the rollback only wrote into. Returns a result for each
 * directory outside the plan that could not be put back.
 */
function fixDirectories(st: State, actions: readonly PlanAction[]): PathResult[] {
  const targets = new Map<string, { mode: number; mtimeMs: number; action?: PlanAction }>();
  for (const tree of st.trees.values()) for (const dir of tree.loosened) st.touched.add(dir);
  const treeFor = (dir: string) => [...st.trees.values()].find((t) => t.contains(dir));
  for (const dir of st.touched) {
    const before = treeFor(dir)?.before.get(dir);
    if (before !== undefined) targets.set(dir, { ...before });
  }
  for (const a of actions) {
    if (a.entry?.type !== "dir" || a.kind === "remove" || st.failed.has(a)) continue;
    targets.set(a.path, { mode: a.entry.mode, mtimeMs: a.entry.mtimeMs, action: a });
  }
  const order = [...targets.keys()].sort((x, y) => depth(y) - depth(x) || (x < y ? -1 : 1));
  const out: PathResult[] = [];
  for (const dir of order) {
    const target = targets.get(dir) as { mode: number; mtimeMs: number; action?: PlanAction };
    const a = target.action;
    try {
      if (a !== undefined && blockedBy(st, a) !== undefined) continue;
      const tree = treeFor(dir);
      if (tree === undefined) throw new Error("the directory is not in a protected tree");
      if (!st.created.has(dir)) {
        // Record the pre-rollback state so that undo can put it back.
        const before = tree.before.get(dir) ??
          (a?.live?.type === "dir" ? { mode: a.live.mode, mtimeMs: a.live.mtimeMs } : undefined);
        if (before !== undefined) {
          st.q.record({
            op: "meta",
            path: dir,
            mode: before.mode,
            mtimeMs: before.mtimeMs,
            dir: true,
          });
        }
      }
      st.hooks.beforeChange?.("meta", dir);
      tree.setDirMeta(tree.rel(dir), {
        mode: target.mode,
        atimeMs: st.now(),
        mtimeMs: target.mtimeMs,
      });
    } catch (e) {
      if (a !== undefined) st.failed.set(a, reasonOf(e));
      else {
        out.push({
          path: dir,
          action: "restore",
          type: "dir",
          differences: ["mtime"],
          outcome: "failed",
          reason: reasonOf(e),
        });
      }
    }
  }
  return out;
}

function depth(path: string): number {
  let n = 0;
  for (let i = path.indexOf("/"); i >= 0; i = path.indexOf("/", i + 1)) n++;
  return n;
}

/**
 * Checks a path against the snapshot after the restore: type, mode, mtime, size and SHA-256
 * (files), target (symlinks). Returns every mismatch, joined, or undefined when it matches.
 */
function verify(st: State, a: PlanAction): string | undefined {
  let live: LiveEntry | null;
  let at: At | undefined;
  try {
    at = treeOf(st, a).at(a.rel);
    live = liveAt(at, a.rel);
  } catch (e) {
    at?.close();
    // The directory above is gone: so is the path (what a removal wants).
    if (a.kind === "remove" && (isCode(e, "ENOENT") || isCode(e, "ENOTDIR"))) return undefined;
    return `cannot check it: ${reasonOf(e)}`;
  }
  try {
    return compareLive(a, live, at);
  } finally {
    at.close();
  }
}

function compareLive(a: PlanAction, live: LiveEntry | null, at: At): string | undefined {
  if (a.kind === "remove") return live === null ? undefined : "it is still there";
  const entry = a.entry as Entry;
  if (live === null) return "it is missing after the restore";
  if (live.type !== entry.type) return `it is a ${live.type}, not a ${entry.type}`;
  const problems: string[] = [];
  if (entry.type === "dir" || entry.type === "file") {
    if (live.mode !== entry.mode) {
      problems.push(`its mode is ${octal(live.mode)}, not ${octal(entry.mode)}`);
    }
    if (live.mtimeMs !== entry.mtimeMs) {
      problems.push(`its mtime is ${iso(live.mtimeMs)}, not ${iso(entry.mtimeMs)}`);
    }
  }
  if (entry.type === "file") {
    if (live.size !== entry.size) problems.push(`it has ${live.size} bytes, not ${entry.size}`);
    else {
      try {
        if (hashFile(procPath(at.fd, at.name)).hash !== entry.hash) {
          problems.push("its content differs from the snapshot");
        }
      } catch (e) {
        problems.push(`cannot read it back: ${reasonOf(e)}`);
      }
    }
  }
  if (entry.type === "symlink" && live.target !== entry.target) {
    problems.push(`it points to "${live.target}", not "${entry.target}"`);
  }
  return problems.length === 0 ? undefined : problems.join("; ");
}

function octal(mode: number): string {
  return "0" + mode.toString(8).padStart(3, "0");
}

function iso(ms: number): string {
  return new Date(ms).toISOString();
}

let root: boolean | undefined;

/** Whether this process runs as root (which writes into read-only directories anyway). */
function isRoot(): boolean {
  try {
    root ??= Deno.uid() === 0;
  } catch {
    root = false;
  }
  return root;
}

function randomHex(): string {
  return [...crypto.getRandomValues(new Uint8Array(8))]
    .map((b) => b.toString(16).padStart(2, "0")).join("");
}

/**
 * One protected root during a restore: its {@link Beneath} handle, and each directory's mode and
 * mtime as first seen (before the rollback changed anything in it), to be put back last.
 */
class Tree {
  readonly fs: Beneath;
  readonly before = new Map<string, { mode: number; mtimeMs: number }>();
  /** Directories whose mode was opened for writing, to be put back. */
  readonly loosened = new Set<string>();

  constructor(fs: Beneath) {
    this.fs = fs;
  }

  /** Tells whether a path is in this tree. */
  contains(path: string): boolean {
    return path === this.fs.root || path.startsWith(this.fs.root + "/");
  }

  /** The root-relative form of a path in this tree. */
  rel(path: string): string {
    return path === this.fs.root ? "" : path.slice(this.fs.root.length + 1);
  }

  /**
   * Opens the directory holding a path beneath the root (refusing symlinks in every component),
   * remembering its mode and mtime when first seen.
   */
  at(rel: string): At {
    const at = this.fs.at(rel);
    if (rel === "") return at;
    try {
      const dir = dirname(this.fs.abs(rel));
      if (!this.before.has(dir)) {
        const info = Deno.statSync(procPath(at.fd));
        const mode = (info.mode ?? 0) & 0o7777;
        this.before.set(dir, { mode, mtimeMs: info.mtime?.getTime() ?? 0 });
        // Without root, a read-only directory cannot be written into: open it to its owner for
        // the restore; the last step puts its mode back. (Through the pinned fd, never a path.)
        if ((mode & 0o300) !== 0o300 && !isRoot()) {
          Deno.chmodSync(procPath(at.fd), mode | 0o300);
          this.loosened.add(dir);
        }
      }
      return at;
    } catch (e) {
      at.close();
      throw e;
    }
  }

  /**
   * Sets a directory's mode and times through an fd opened beneath the root (a directory cannot
   * be a hard link, so its inode is the tree's own). One its owner cannot read is opened O_PATH
   * and changed through that fd's /proc link, which names the same inode.
   */
  setDirMeta(rel: string, meta: { mode: number; atimeMs: number; mtimeMs: number }): void {
    const path = this.fs.abs(rel);
    let fd: number;
    try {
      fd = this.fs.open(rel, O.RDONLY | O.DIRECTORY);
    } catch (e) {
      if (!isCode(e, "EACCES")) throw e;
      fd = this.fs.open(rel, O.PATH | O.DIRECTORY);
      try {
        Deno.chmodSync(procPath(fd), meta.mode);
        Deno.utimeSync(procPath(fd), new Date(meta.atimeMs), new Date(meta.mtimeMs));
      } finally {
        closeFd(fd);
      }
      return;
    }
    try {
      setMeta(fd, meta, path);
    } finally {
      closeFd(fd);
    }
  }
}
