/**
 * Planning a rollback: comparing the live trees with a snapshot, without changing anything.
 * `sentry rollback --dry-run` prints a plan; {@link restore} carries one out.
 * @module
 */
import { normalize } from "node:path";
import picomatch from "picomatch";
import { type Entry, type EntryType, type SnapshotInfo, subtreeRange } from "./manifest.ts";
import type { Store } from "./store.ts";
import { hashFile } from "./_hash.ts";
import {
  createExcluder,
  type Excluder,
  joinRel,
  type LiveEntry,
  lstatEntry,
  parentRel,
  walkTree,
} from "./_walk.ts";

/**
 * What a rollback does to one path:
 * - `restore`: the path exists but differs (content, mode, mtime, symlink target, or type);
 * - `recreate`: the path was deleted (or renamed away), and is written back;
 * - `remove`: the path was created since the snapshot (or renamed to here), and is moved into
 *   the session's quarantine, from which `undo` can put it back.
 */
export type ActionKind = "restore" | "recreate" | "remove";

/** How a live path differs from the snapshot. */
export type Difference =
  | "content"
  | "mode"
  | "mtime"
  | "target"
  | "type"
  | "missing"
  | "created";

/** One step of a plan. */
export interface PlanAction {
  kind: ActionKind;
  /** Absolute path. */
  path: string;
  /** The tree's root. */
  root: string;
  /** Relative to the root (`""` is the root itself). */
  rel: string;
  /** The snapshot's type for `restore` and `recreate`; the live type for `remove`. */
  type: EntryType;
  differences: Difference[];
  /** What the snapshot recorded; null for `remove`. */
  entry: Entry | null;
  /** What is there now; null for `recreate`. */
  live: LiveEntry | null;
  /** For `remove` of a directory: the paths inside it, which go with it. */
  contains?: number;
}

/** A rollback's plan. */
export interface Plan {
  snapshot: SnapshotInfo;
  /** `full`: every protected path was compared; `paths`: only the hinted ones. */
  scope: "full" | "paths";
  /** Sorted by root, then path. */
  actions: PlanAction[];
  /** Paths compared. */
  checked: number;
  /** Live files hashed because their stat fields differed from the snapshot's. */
  hashed: number;
  durationMs: number;
}

/** Options for {@link plan}. */
export interface PlanOptions {
  /** The snapshot's id. */
  snapshot: string;
  /**
   * The paths the sensors saw change (absolute: targets of `file.write`, `file.create`,
   * `file.delete`, and both sides of `file.rename`). Only these, their ancestors and
   * everything below them are compared, so the rollback touches only what the agent changed.
   * When absent, every protected path is compared.
   */
  paths?: Iterable<string>;
  /**
   * `--path` globs: only actions on matching paths (or below matching directories) are kept,
   * plus the directories they need. Absolute globs match absolute paths; others match paths
   * relative to the tree's root.
   */
  filter?: readonly string[];
}

/**
 * Compares the live trees with a snapshot and lists what a rollback would do. Reads the live
 * trees (and hashes the files whose stat fields moved), never changes them.
 *
 * @throws {Deno.errors.NotFound} when the snapshot does not exist.
 */
export function plan(store: Store, options: PlanOptions): Plan {
  const t0 = performance.now();
  const manifest = store.readManifest(options.snapshot);
  const { content: _content, ...snapshot } = manifest;
  const excluded = createExcluder(manifest.exclude, manifest.ignore);
  const hints = options.paths === undefined ? undefined : [
    ...new Set(
      [...options.paths].map((p) =>
        unalias(normalize(p).replace(/(.)\/+$/, "$1"), manifest.aliases ?? [])
      ),
    ),
  ];
  const actions: PlanAction[] = [];
  const counters = { checked: 0, hashed: 0 };
  for (const tree of manifest.content) {
    const view = hints === undefined
      ? fullView(tree.root, tree.entries, excluded)
      : hintedView(tree.root, tree.entries, hints, excluded);
    if (view === undefined) continue;
    compare(tree.root, view, actions, counters);
  }
  const kept = options.filter === undefined || options.filter.length === 0
    ? actions
    : applyFilter(actions, options.filter);
  return {
    snapshot,
    scope: hints === undefined ? "full" : "paths",
    actions: kept,
    checked: counters.checked,
    hashed: counters.hashed,
    durationMs: performance.now() - t0,
  };
}

/**
 * Rewrites a path given under a root's symlinked spelling (`/tmp/ws/x` when the root was given
 * as `/tmp/ws` and recorded as `/private/tmp/ws`) to the recorded one. The longest match wins.
 */
function unalias(path: string, aliases: readonly [string, string][]): string {
  let best: [string, string] | undefined;
  for (const pair of aliases) {
    const [given] = pair;
    if (
      (path === given || path.startsWith(given + "/")) && given.length > (best?.[0].length ?? -1)
    ) {
      best = pair;
    }
  }
  return best === undefined ? path : best[1] + path.slice(best[0].length);
}

/** The part of one tree a plan compares. */
interface View {
  /** Snapshot entries to compare, sorted by path. */
  snapshot: Entry[];
  /** Every snapshot entry, by path. */
  byPath: Map<string, Entry>;
  /** Live entries seen, sorted by path. */
  live: LiveEntry[];
  /** The live state of a path, reached through real directories only; null when missing. */
  liveOf: (rel: string) => LiveEntry | null;
}

function fullView(root: string, entries: Entry[], excluded: Excluder): View {
  const live = walkTree(root, { excluded }) ?? [];
  live.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const liveMap = new Map(live.map((e) => [e.path, e]));
  return {
    snapshot: entries,
    byPath: new Map(entries.map((e) => [e.path, e])),
    live,
    liveOf: (rel) => liveMap.get(rel) ?? null,
  };
}

function hintedView(
  root: string,
  entries: Entry[],
  hints: readonly string[],
  excluded: Excluder,
): View | undefined {
  const rels = new Set<string>();
  for (const hint of hints) {
    if (hint !== root && !hint.startsWith(root === "/" ? "/" : root + "/")) continue;
    const rel = hint === root ? "" : hint.slice(root === "/" ? 1 : root.length + 1);
    if (excluded(hint, rel)) continue;
    rels.add(rel);
  }
  if (rels.size === 0) return undefined;
  const byPath = new Map(entries.map((e) => [e.path, e]));
  // Live states, reached from the root through real directories only: lstat on a path whose
  // ancestor became a symlink would describe what the link points to.
  const memo = new Map<string, LiveEntry | null>();
  const liveOf = (rel: string): LiveEntry | null => {
    const known = memo.get(rel);
    if (known !== undefined) return known;
    let state: LiveEntry | null;
    if (rel === "") state = lstatEntry(root, "");
    else {
      const parent = liveOf(parentRel(rel));
      state = parent?.type === "dir" ? lstatEntry(joinRel(root, rel), rel) : null;
    }
    memo.set(rel, state);
    return state;
  };
  const wanted = new Set<string>();
  const live = new Map<string, LiveEntry>();
  for (const rel of rels) {
    for (let p = rel;; p = parentRel(p)) {
      wanted.add(p);
      if (p === "") break;
    }
    const [lo, hi] = subtreeRange(entries, rel);
    for (let i = lo; i < hi; i++) wanted.add((entries[i] as Entry).path);
    const here = liveOf(rel);
    if (here?.type === "dir") {
      for (const e of walkTree(root, { excluded, from: rel }) ?? []) {
        memo.set(e.path, e);
        live.set(e.path, e);
      }
    }
  }
  for (const rel of wanted) {
    const state = liveOf(rel);
    if (state !== null) live.set(rel, state);
  }
  const snapshot = [...wanted].map((rel) => byPath.get(rel)).filter((e) => e !== undefined);
  snapshot.sort((a, b) => (a.path < b.path ? -1 : a.path > b.path ? 1 : 0));
  const liveList = [...live.values()].sort((a, b) =>
    a.path < b.path ? -1 : a.path > b.path ? 1 : 0
  );
  return { snapshot, byPath, live: liveList, liveOf };
}

/** Tells whether a path is strictly below any path of the set. */
function below(rel: string, set: ReadonlySet<string>): boolean {
  if (set.size === 0 || rel === "") return false;
  if (set.has("")) return true;
  for (let i = rel.indexOf("/"); i >= 0; i = rel.indexOf("/", i + 1)) {
    if (set.has(rel.slice(0, i))) return true;
  }
  return false;
}

/** The value of the nearest strict ancestor of a path in the map, if any. */
function ancestorIn<T>(rel: string, map: ReadonlyMap<string, T>): T | undefined {
  for (let p = rel; p !== "";) {
    p = parentRel(p);
    const hit = map.get(p);
    if (hit !== undefined) return hit;
  }
  return undefined;
}

function compare(
  root: string,
  view: View,
  actions: PlanAction[],
  counters: { checked: number; hashed: number },
): void {
  const ignored = new Set<string>();
  /** Live paths that will be moved away: nothing below them is compared or removed. */
  const away = new Set<string>();
  /** Snapshot paths with no usable live counterpart: everything below is recreated. */
  const gone = new Set<string>();
  const push = (kind: ActionKind, entry: Entry, live: LiveEntry | null, diffs: Difference[]) => {
    actions.push({
      kind,
      path: joinRel(root, entry.path),
      root,
      rel: entry.path,
      type: entry.type,
      differences: diffs,
      entry,
      live,
    });
  };
  for (const entry of view.snapshot) {
    if (below(entry.path, ignored)) continue;
    counters.checked++;
    if (entry.type === "other") {
      ignored.add(entry.path);
      continue;
    }
    const live = below(entry.path, gone) ? null : view.liveOf(entry.path);
    if (live === null) {
      push("recreate", entry, null, ["missing"]);
      gone.add(entry.path);
      continue;
    }
    if (live.type !== entry.type) {
      push("restore", entry, live, ["type"]);
      away.add(entry.path);
      gone.add(entry.path);
      continue;
    }
    const diffs: Difference[] = [];
    if (entry.type === "file") {
      const same = !entry.racy && entry.size === live.size && entry.mtimeMs === live.mtimeMs &&
        entry.ctimeMs === live.ctimeMs && entry.ino === live.ino;
      if (!same) {
        if (entry.size !== live.size) diffs.push("content");
        else {
          counters.hashed++;
          let hash = "";
          try {
            hash = hashFile(joinRel(root, entry.path)).hash;
          } catch {
            // Unreadable now: rewriting it is the only way to be sure.
          }
          if (hash !== entry.hash) diffs.push("content");
        }
      }
      if (live.mode !== entry.mode) diffs.push("mode");
      if (live.mtimeMs !== entry.mtimeMs) diffs.push("mtime");
    } else if (entry.type === "dir") {
      if (live.mode !== entry.mode) diffs.push("mode");
      if (live.mtimeMs !== entry.mtimeMs) diffs.push("mtime");
    } else if (entry.type === "symlink") {
      if (live.target !== entry.target) diffs.push("target");
    }
    if (diffs.length > 0) push("restore", entry, live, diffs);
  }
  /** Live directories being removed whole, by path: what is below them goes with them. */
  const removed = new Map<string, PlanAction>();
  for (const live of view.live) {
    if (view.byPath.has(live.path)) continue;
    if (below(live.path, away) || below(live.path, ignored)) continue;
    const container = removed.size === 0 ? undefined : ancestorIn(live.path, removed);
    if (container !== undefined) {
      container.contains = (container.contains ?? 0) + 1;
      continue;
    }
    counters.checked++;
    const action: PlanAction = {
      kind: "remove",
      path: joinRel(root, live.path),
      root,
      rel: live.path,
      type: live.type,
      differences: ["created"],
      entry: null,
      live,
    };
    if (live.type === "dir") {
      action.contains = 0;
      removed.set(live.path, action);
    }
    actions.push(action);
  }
  actions.sort((a, b) =>
    a.root !== b.root ? (a.root < b.root ? -1 : 1) : a.rel < b.rel ? -1 : a.rel > b.rel ? 1 : 0
  );
}

/** Keeps the actions at or below paths matching the globs, and the directories they need. */
function applyFilter(actions: PlanAction[], globs: readonly string[]): PlanAction[] {
  const abs = globs.filter((g) => g.startsWith("/"));
  const rel = globs.filter((g) => !g.startsWith("/"));
  const matchAbs = abs.length > 0 ? picomatch(abs, { dot: true }) : () => false;
  const matchRel = rel.length > 0 ? picomatch(rel, { dot: true }) : () => false;
  // A path matches when it, or a directory above it (within its root), matches.
  const matches = (a: PlanAction) => {
    for (let p = a.rel;; p = parentRel(p)) {
      if (matchAbs(joinRel(a.root, p)) || (p !== "" && matchRel(p))) return true;
      if (p === "") return false;
    }
  };
  const byKey = new Map(actions.map((a) => [`${a.root}\0${a.rel}`, a]));
  const keep = new Set(actions.filter(matches));
  // A recreated file needs its recreated (or retyped) parent directories.
  for (const a of [...keep]) {
    for (let p = a.rel; p !== "";) {
      p = parentRel(p);
      const parent = byKey.get(`${a.root}\0${p}`);
      if (
        parent !== undefined && (parent.kind === "recreate" || parent.differences.includes("type"))
      ) {
        keep.add(parent);
      }
      if (p === "") break;
    }
  }
  return actions.filter((a) => keep.has(a));
}
