/**
 * Undoing a rollback (`sentry rollback --undo SESSION`): putting back what the last rollback of
 * a session moved into quarantine or overwrote, so the trees are as the rollback found them.
 * @module
 */
import {
  type At,
  Beneath,
  closeFd,
  copyIn,
  lstatAt,
  mkdirAt,
  O,
  procPath,
  removeTreeAt,
  renameIn,
  renameOut,
  renameWithin,
  setMeta,
  unlinkAt,
} from "../platform/beneath_linux.ts";
import type { Store } from "./store.ts";
import { copyTree, readJournal, type UndoRecord } from "./_quarantine.ts";
import { isCode, reasonOf } from "./_walk.ts";

/** Options for {@link undo}. */
export interface UndoOptions {
  session: string;
  /** The rollback to undo; by default the session's last one not undone yet. */
  id?: string;
  /** The clock; `Date.now` by default. */
  now?: () => number;
}

/** The outcome of undoing one change. */
export interface UndoPathResult {
  path: string;
  /** The change undone. */
  op: UndoRecord["op"];
  outcome: "ok" | "failed";
  reason?: string;
}

/** What an undo did. */
export interface UndoResult {
  ok: boolean;
  /** The rollback undone. */
  id: string;
  session: string;
  results: UndoPathResult[];
}

/** A rollback of a session, as listed in its quarantine. */
export interface RollbackRecord {
  id: string;
  session: string;
  snapshot: string;
  createdAt: string;
  ok: boolean;
  undone: boolean;
}

/** The rollbacks of a session, oldest first. */
export function listRollbacks(store: Store, session: string): RollbackRecord[] {
  const dir = store.quarantineDir(session);
  const out: RollbackRecord[] = [];
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].filter((e) => e.isDirectory).map((e) => e.name).sort();
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return [];
    throw e;
  }
  for (const id of names) {
    let summary: Partial<RollbackRecord> = {};
    try {
      summary = JSON.parse(Deno.readTextFileSync(`${dir}/${id}/rollback.json`));
    } catch {
      // A rollback interrupted by a crash has no summary; its journal still counts.
    }
    out.push({
      id,
      session,
      snapshot: summary.snapshot ?? "",
      createdAt: summary.createdAt ?? "",
      ok: summary.ok ?? false,
      undone: lexists(`${dir}/${id}/undone.json`),
    });
  }
  return out;
}

/**
 * Reverses a session's last rollback (or the one named): quarantined paths go back, overwritten
 * files get their pre-rollback inode back (with anything a process wrote to it since),
 * recreated paths are moved aside into the quarantine (never deleted), and directories get their
 * pre-rollback modes and mtimes. Holds the store lock (shared).
 *
 * @throws {Deno.errors.NotFound} when the session has no rollback left to undo.
 */
export async function undo(store: Store, options: UndoOptions): Promise<UndoResult> {
  return await store.withLock(false, () => {
    const now = options.now ?? Date.now;
    const all = listRollbacks(store, options.session);
    const target = options.id !== undefined
      ? all.find((r) => r.id === options.id)
      : all.filter((r) => !r.undone).at(-1);
    if (target === undefined) {
      throw new Deno.errors.NotFound(
        options.id !== undefined
          ? `Unknown rollback "${options.id}" of session "${options.session}"`
          : `No rollback to undo for session "${options.session}"`,
      );
    }
    if (target.undone) {
      throw new Deno.errors.AlreadyExists(`Rollback "${target.id}" was already undone`);
    }
    const dir = `${store.quarantineDir(options.session)}/${target.id}`;
    const records = readJournal(dir);
    const results: UndoPathResult[] = [];
    // Every change is made beneath a protected root of the rollback's snapshot, through a
    // directory fd opened with openat2 (RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS): a symlink
    // swapped in anywhere, even mid-undo, makes the change fail, never land elsewhere.
    const trees = new Map<string, Beneath>();
    const roots = rootsOf(store, dir, target);
    let aside = 0;
    const run = (record: UndoRecord, fn: (tree: Beneath, rel: string) => void) => {
      try {
        const root = roots.filter((r) => record.path === r || record.path.startsWith(`${r}/`))
          .sort((x, y) => y.length - x.length)[0];
        if (root === undefined) {
          throw new Error("it is outside every protected root of the rollback's snapshot");
        }
        let tree = trees.get(root);
        if (tree === undefined) trees.set(root, tree = new Beneath(root));
        fn(tree, record.path === root ? "" : record.path.slice(root.length + 1));
        results.push({ path: record.path, op: record.op, outcome: "ok" });
      } catch (e) {
        results.push({ path: record.path, op: record.op, outcome: "failed", reason: reasonOf(e) });
      }
    };
    // Always called inside `within`, which forgets the root's fd when the root itself moved.
    const moveAside = (at: At) => {
      Deno.mkdirSync(`${dir}/undone`, { recursive: true, mode: 0o700 });
      const dst = `${dir}/undone/${aside++}`;
      try {
        renameOut(at, dst);
      } catch (e) {
        if (!isCode(e, "EXDEV")) throw e;
        copyTree(procPath(at.fd, at.name), dst);
        removeTreeAt(at.fd, at.name, at.path);
      }
    };
    const within = (tree: Beneath, rel: string, fn: (at: At) => void) => {
      const at = tree.at(rel);
      try {
        fn(at);
      } finally {
        at.close();
      }
      if (rel === "") tree.resetRoot();
    };
    try {
      // Changes in reverse order; directory times last, deepest first, since everything else
      // changes them.
      const dirMeta: Extract<UndoRecord, { op: "meta" }>[] = [];
      for (const record of [...records].reverse()) {
        switch (record.op) {
          case "created":
            run(record, (tree, rel) =>
              within(tree, rel, (at) => {
                if (lstatAt(at) !== null) moveAside(at);
              }));
            break;
          case "mkdir":
            run(record, (tree, rel) =>
              within(tree, rel, (at) => {
                if (lstatAt(at) === null) return;
                try {
                  unlinkAt(at.fd, at.name, true, at.path);
                } catch (e) {
                  // Something was written into it since: keep it, aside.
                  if (!isCode(e, "ENOTEMPTY")) throw e;
                  moveAside(at);
                }
              }));
            break;
          case "replaced":
          case "moved":
            run(record, (tree, rel) => {
              const item = `${dir}/${record.item}`;
              // The journal announces each change before making it: after a crash, the item
              // may not exist, and then there is nothing to put back.
              if (!lexists(item)) return;
              makeParents(tree, rel);
              within(tree, rel, (at) => {
                if (lstatAt(at) !== null) {
                  // A file that replaced the original (or reappeared where it was moved from).
                  moveAside(at);
                }
                try {
                  renameIn(item, at);
                } catch (e) {
                  if (!isCode(e, "EXDEV")) throw e;
                  copyIn(item, at);
                  Deno.removeSync(item, { recursive: true });
                }
              });
            });
            break;
          case "meta":
            if (record.dir) dirMeta.push(record);
            else {
              run(record, (tree, rel) => setFileMeta(tree, rel, record, now));
            }
            break;
        }
      }
      dirMeta.sort((a, b) => b.path.length - a.path.length);
      for (const record of dirMeta) {
        run(record, (tree, rel) => {
          const fd = tree.open(rel, O.RDONLY | O.DIRECTORY);
          try {
            setMeta(
              fd,
              { mode: record.mode, atimeMs: now(), mtimeMs: record.mtimeMs },
              record.path,
            );
          } finally {
            closeFd(fd);
          }
        });
      }
    } finally {
      for (const tree of trees.values()) tree.close();
    }
    Deno.writeTextFileSync(
      `${dir}/undone.json`,
      JSON.stringify({ undoneAt: new Date(now()).toISOString() }),
      { mode: 0o600 },
    );
    return {
      ok: results.every((r) => r.outcome === "ok"),
      id: target.id,
      session: options.session,
      results,
    };
  });
}

/**
 * Puts a file's mode and mtime back. Through a fresh inode when the file has other links: a hard
 * link to a file outside the tree (`~/.ssh/id_rsa`) must not get its mode changed.
 */
function setFileMeta(
  tree: Beneath,
  rel: string,
  record: { path: string; mode: number; mtimeMs: number },
  now: () => number,
): void {
  const meta = { mode: record.mode, atimeMs: now(), mtimeMs: record.mtimeMs };
  const fd = tree.open(rel, O.RDONLY | O.NOFOLLOW);
  try {
    const info = Deno.statSync(procPath(fd));
    if (!info.isFile) throw new Error("it is no longer a regular file");
    if ((info.nlink ?? 1) <= 1) {
      setMeta(fd, meta, record.path);
      return;
    }
    if (rel === "") throw new Error("the root is a file with other links: refusing to change it");
    const at = tree.at(rel);
    const tmp = `.sentry-undo-${crypto.randomUUID()}`;
    try {
      copyIn(procPath(fd), { ...at, name: tmp });
      const parent = rel.includes("/") ? rel.slice(0, rel.lastIndexOf("/")) : "";
      const copy = tree.open(parent === "" ? tmp : `${parent}/${tmp}`, O.RDONLY | O.NOFOLLOW);
      try {
        setMeta(copy, meta, record.path);
      } finally {
        closeFd(copy);
      }
      renameWithin(at, tmp, at.name);
    } catch (e) {
      try {
        unlinkAt(at.fd, tmp, false, record.path);
      } catch {
        // Not made, or already renamed.
      }
      throw e;
    } finally {
      at.close();
    }
  } finally {
    closeFd(fd);
  }
}

/** Creates the missing directories above a root-relative path, each beneath the one above. */
function makeParents(tree: Beneath, rel: string): void {
  const parts = rel.split("/").slice(0, -1);
  for (let i = 1; i <= parts.length; i++) {
    const sub = parts.slice(0, i).join("/");
    try {
      closeFd(tree.open(sub, O.PATH | O.DIRECTORY));
    } catch (e) {
      if (!isCode(e, "ENOENT")) throw e;
      const at = tree.at(sub);
      try {
        mkdirAt(at, 0o700);
      } finally {
        at.close();
      }
    }
  }
}

/**
 * The protected roots of the rollback's snapshot, from its authenticated manifest (a quarantine
 * never names its own roots: they could be edited to point anywhere).
 */
function rootsOf(store: Store, dir: string, target: RollbackRecord): string[] {
  let snapshot = target.snapshot;
  if (snapshot === "") {
    try {
      snapshot = String(JSON.parse(Deno.readTextFileSync(`${dir}/origin.json`)).snapshot ?? "");
    } catch {
      snapshot = "";
    }
  }
  if (snapshot === "") {
    throw new Error(
      `Cannot undo rollback "${target.id}": it does not say which snapshot it restored, so its ` +
        "protected roots are unknown",
    );
  }
  return store.readManifest(snapshot).content.map((t) => t.root);
}

function lexists(path: string): boolean {
  try {
    Deno.lstatSync(path);
    return true;
  } catch (e) {
    if (e instanceof Deno.errors.NotFound || isCode(e, "ENOTDIR")) return false;
    throw e;
  }
}
