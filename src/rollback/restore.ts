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
 * Nothing is ever written through a symlink: before writing below a directory, every directory
 * from the tree's root down to it is checked with `lstat` to be a real directory, and files are
 * hashed with O_NOFOLLOW.
 *
 * A process that holds a restored file open keeps its descriptor on the old inode (now in the
 * quarantine, linked there before the rename): its later writes go to that inode, never to the
 * restored path, and `undo` puts that inode back with everything written to it.
 *
 * @module
 */
import { dirname } from "node:path";
import { createUlid } from "../events/mod.ts";
import type { Entry, EntryType, FileEntry } from "./manifest.ts";
import type { ActionKind, Difference, Plan, PlanAction } from "./plan.ts";
import type { Store } from "./store.ts";
import { hashFile } from "./_hash.ts";
import { Quarantine } from "./_quarantine.ts";
import { lstatEntry, reasonOf } from "./_walk.ts";

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
  guards: Map<string, Guard>;
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
  const st: State = {
    store,
    q,
    hooks: options.hooks ?? {},
    now,
    failed: new Map(),
    guards: new Map(),
    touched: new Set(),
    created: new Set(),
  };
  const extra: PathResult[] = [];
  try {
    // The directories above each root are not protected, but must not have become symlinks.
    for (const root of new Set(actions.map((a) => a.root))) {
      st.guards.set(root, new Guard(root));
      const parent = dirname(root);
      let reason: string | undefined;
      try {
        const real = Deno.realPathSync(parent);
        if (real !== parent) reason = `"${parent}" now resolves to "${real}"`;
      } catch (e) {
        reason = `"${parent}" cannot be resolved: ${reasonOf(e)}`;
      }
      if (reason !== undefined) {
        for (const a of actions) if (a.root === root) st.failed.set(a, reason);
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
        guardOf(st, a).checkParentOf(a.path);
        st.hooks.beforeChange?.("mkdir", a.path);
        q.record({ op: "mkdir", path: a.path });
        Deno.mkdirSync(a.path, { mode: 0o700 });
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
  // 5. Verify.
  const results: PathResult[] = actions.map((a) => {
    const base = { path: a.path, action: a.kind, type: a.type, differences: a.differences };
    const reason = st.failed.get(a) ?? verify(a);
    return reason === undefined
      ? { ...base, outcome: "ok" as const }
      : { ...base, outcome: "failed" as const, reason };
  });
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

function guardOf(st: State, a: PlanAction): Guard {
  return st.guards.get(a.root) as Guard;
}

function moveAway(st: State, a: PlanAction): void {
  const guard = guardOf(st, a);
  guard.checkParentOf(a.path);
  const live = lstatEntry(a.path, a.rel);
  // Already gone (moved with a directory above it, or deleted since the plan).
  if (live === null) return;
  st.hooks.beforeChange?.("move", a.path);
  const item = st.q.nextItem();
  st.q.record({ op: "moved", path: a.path, item });
  st.q.moveIn(a.path, item);
  guard.forget(a.path);
  if (a.path !== a.root) st.touched.add(dirname(a.path));
}

function writeEntry(st: State, a: PlanAction, entry: Entry): void {
  const guard = guardOf(st, a);
  guard.checkParentOf(a.path);
  const metaOnly = a.kind === "restore" && entry.type === "file" &&
    !a.differences.includes("content") && !a.differences.includes("type");
  if (metaOnly) {
    const live = lstatEntry(a.path, a.rel);
    if (live === null || live.type !== "file") throw new Error("the file changed since the plan");
    st.hooks.beforeChange?.("meta", a.path);
    st.q.record({ op: "meta", path: a.path, mode: live.mode, mtimeMs: live.mtimeMs, dir: false });
    Deno.chmodSync(a.path, (entry as FileEntry).mode);
    Deno.utimeSync(a.path, new Date(st.now()), new Date((entry as FileEntry).mtimeMs));
    return;
  }
  const dir = dirname(a.path);
  const tmp = `${dir}/.sentry-restore-${randomHex()}`;
  try {
    if (entry.type === "file") {
      st.hooks.beforeChange?.("write", a.path);
      const out = Deno.openSync(tmp, { write: true, createNew: true, mode: 0o600 });
      let written: number;
      try {
        written = st.store.copyBlobTo(entry.hash, out);
      } finally {
        out.close();
      }
      if (written !== entry.size) {
        throw new Error(`the stored copy has ${written} bytes, not ${entry.size}`);
      }
      Deno.chmodSync(tmp, entry.mode);
      Deno.utimeSync(tmp, new Date(st.now()), new Date(entry.mtimeMs));
    } else if (entry.type === "symlink") {
      st.hooks.beforeChange?.("symlink", a.path);
      Deno.symlinkSync(entry.target, tmp);
    }
    const current = lstatEntry(a.path, a.rel);
    if (current?.type === "dir") throw new Error("a directory is in the way");
    if (current !== null) {
      const item = st.q.nextItem();
      st.q.record({ op: "replaced", path: a.path, item });
      st.q.keep(a.path, item);
    } else {
      st.q.record({ op: "created", path: a.path });
    }
    // rename(2) replaces the name itself: it never follows a symlink at the destination.
    Deno.renameSync(tmp, a.path);
    if (a.path !== a.root) st.touched.add(dir);
  } catch (e) {
    try {
      Deno.removeSync(tmp);
    } catch {
      // Never created, or already renamed.
    }
    throw e;
  }
}

/**
 * Sets directory modes and mtimes, deepest first: the snapshot's for directories in the plan,
 * the pre-rollback ones for directories the rollback only wrote into. Returns a result for each
 * directory outside the plan that could not be put back.
 */
function fixDirectories(st: State, actions: readonly PlanAction[]): PathResult[] {
  const targets = new Map<string, { mode: number; mtimeMs: number; action?: PlanAction }>();
  for (const guard of st.guards.values()) for (const dir of guard.loosened) st.touched.add(dir);
  for (const dir of st.touched) {
    const guard = [...st.guards.values()].find((g) => g.contains(dir));
    const before = guard?.before.get(dir);
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
      if (!st.created.has(dir)) {
        // Record the pre-rollback state so that undo can put it back.
        const guard = [...st.guards.values()].find((g) => g.contains(dir));
        const before = guard?.before.get(dir) ??
          (a?.live?.type === "dir" ? { mode: a.live.mode, mtimeMs: a.live.mtimeMs } : undefined);
        const live = lstatEntry(dir, "");
        if (live === null || live.type !== "dir") throw new Error("the directory is gone");
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
      Deno.chmodSync(dir, target.mode);
      Deno.utimeSync(dir, new Date(st.now()), new Date(target.mtimeMs));
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
function verify(a: PlanAction): string | undefined {
  let live;
  try {
    live = lstatEntry(a.path, a.rel);
  } catch (e) {
    return `cannot check it: ${reasonOf(e)}`;
  }
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
        if (hashFile(a.path).hash !== entry.hash) {
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
 * Checks, before each write, that every directory from the tree's root down to the parent of
 * the path is a real directory, so nothing is written through a symlink. Remembers each
 * directory's mode and mtime as first seen (before the rollback changed anything in it).
 */
class Guard {
  readonly root: string;
  readonly before = new Map<string, { mode: number; mtimeMs: number }>();
  /** Directories whose mode was opened for writing, to be put back. */
  readonly loosened = new Set<string>();
  #verified = new Set<string>();

  constructor(root: string) {
    this.root = root;
  }

  /** Tells whether a path is in this tree. */
  contains(path: string): boolean {
    return path === this.root || path.startsWith(this.root === "/" ? "/" : this.root + "/");
  }

  /** Throws unless the path's parent (within the tree) and all directories above it are real. */
  checkParentOf(path: string): void {
    if (path === this.root) return;
    this.#checkDir(dirname(path));
  }

  /** Forgets what was verified at or below a path that was moved away. */
  forget(path: string): void {
    for (const dir of this.#verified) {
      if (dir === path || dir.startsWith(path + "/")) this.#verified.delete(dir);
    }
  }

  #checkDir(dir: string): void {
    if (this.#verified.has(dir)) return;
    if (dir !== this.root) this.#checkDir(dirname(dir));
    const live = lstatEntry(dir, "");
    if (live === null) throw new Error(`its directory "${dir}" is missing`);
    if (live.type === "symlink") {
      throw new Error(`refusing to write through "${dir}": it is a symlink`);
    }
    if (live.type !== "dir") throw new Error(`"${dir}" is not a directory`);
    if (!this.before.has(dir)) this.before.set(dir, { mode: live.mode, mtimeMs: live.mtimeMs });
    // Without root, a read-only directory cannot be written into: open it to its owner for the
    // restore; the last step puts its mode back.
    if ((live.mode & 0o300) !== 0o300 && !isRoot()) {
      Deno.chmodSync(dir, live.mode | 0o300);
      this.loosened.add(dir);
    }
    this.#verified.add(dir);
  }
}
