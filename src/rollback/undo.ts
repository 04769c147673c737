/**
 * Undoing a rollback (`sentry rollback --undo SESSION`): putting back what the last rollback of
 * a session moved into quarantine or overwrote, so the trees are as the rollback found them.
 * @module
 */
import { dirname } from "node:path";
import type { Store } from "./store.ts";
import { ensureParent, moveTree, readJournal, type UndoRecord } from "./_quarantine.ts";
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
    let aside = 0;
    const moveAside = (path: string) => {
      Deno.mkdirSync(`${dir}/undone`, { recursive: true, mode: 0o700 });
      moveTree(path, `${dir}/undone/${aside++}`);
    };
    const run = (record: UndoRecord, fn: () => void) => {
      try {
        checkParent(record.path);
        fn();
        results.push({ path: record.path, op: record.op, outcome: "ok" });
      } catch (e) {
        results.push({ path: record.path, op: record.op, outcome: "failed", reason: reasonOf(e) });
      }
    };
    // Changes in reverse order; directory times last, deepest first, since everything else
    // changes them.
    const dirMeta: Extract<UndoRecord, { op: "meta" }>[] = [];
    for (const record of [...records].reverse()) {
      switch (record.op) {
        case "created":
          run(record, () => {
            if (lexists(record.path)) moveAside(record.path);
          });
          break;
        case "mkdir":
          run(record, () => {
            if (!lexists(record.path)) return;
            try {
              Deno.removeSync(record.path);
            } catch (e) {
              // Something was written into it since: keep it, aside.
              if (!isCode(e, "ENOTEMPTY")) throw e;
              moveAside(record.path);
            }
          });
          break;
        case "replaced":
        case "moved":
          run(record, () => {
            const item = `${dir}/${record.item}`;
            // The journal announces each change before making it: after a crash, the item
            // may not exist, and then there is nothing to put back.
            if (!lexists(item)) return;
            if (record.op === "moved" && lexists(record.path)) moveAside(record.path);
            ensureParent(record.path);
            moveTree(item, record.path);
          });
          break;
        case "meta":
          if (record.dir) dirMeta.push(record);
          else run(record, () => setMeta(record.path, record.mode, record.mtimeMs, now));
          break;
      }
    }
    dirMeta.sort((a, b) => b.path.length - a.path.length);
    for (const record of dirMeta) {
      run(record, () => setMeta(record.path, record.mode, record.mtimeMs, now));
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

function setMeta(path: string, mode: number, mtimeMs: number, now: () => number): void {
  const info = Deno.lstatSync(path);
  if (info.isSymlink) throw new Error(`refusing to change "${path}": it is a symlink`);
  Deno.chmodSync(path, mode);
  Deno.utimeSync(path, new Date(now()), new Date(mtimeMs));
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

/**
 * Throws unless the directory holding `path` is reached through real directories only: undo
 * never writes through a symlink either.
 */
function checkParent(path: string): void {
  // The nearest existing directory above: missing ones are created below it.
  let parent = dirname(path);
  while (parent !== "/" && !lexists(parent)) parent = dirname(parent);
  const real = Deno.realPathSync(parent);
  if (real !== parent) {
    throw new Error(`refusing to write through "${parent}": it resolves to "${real}"`);
  }
}
