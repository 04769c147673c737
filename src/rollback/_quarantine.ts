/**
 * A rollback's quarantine: where the paths it removes and the versions it overwrites go, with
 * the undo journal that says how to put them back. Private to src/rollback.
 *
 * ```
 * quarantine/<session>/<rollback>/
 *   rollback.json   the rollback's summary
 *   undo.jsonl      one record per change, written before the change is made
 *   items/<n>       what was moved away or overwritten (the same inode when on one filesystem)
 *   undone.json     written by undo; undone/<n> holds what undo itself moved away
 * ```
 * @module
 */
import { dirname } from "node:path";
import { isCode } from "./_walk.ts";

/** One change a rollback made, as undo needs to know it. */
export type UndoRecord =
  /** The live path (a created file or directory, or one of the wrong type) was moved to `item`. */
  | { op: "moved"; path: string; item: string }
  /** The live file or symlink was kept as `item` (a hard link), then replaced. */
  | { op: "replaced"; path: string; item: string }
  /** The path did not exist; the rollback created it. */
  | { op: "created"; path: string }
  /** The rollback created this directory. */
  | { op: "mkdir"; path: string }
  /** The path's mode and mtime before the rollback changed them. */
  | { op: "meta"; path: string; mode: number; mtimeMs: number; dir: boolean };

/** A quarantine folder being filled by a rollback. */
export class Quarantine {
  /** The folder. */
  readonly dir: string;
  #journal: Deno.FsFile;
  #next = 0;
  #encoder = new TextEncoder();

  /** Creates the folder (mode 0700) and its journal. */
  constructor(dir: string) {
    this.dir = dir;
    Deno.mkdirSync(`${dir}/items`, { recursive: true, mode: 0o700 });
    this.#journal = Deno.openSync(`${dir}/undo.jsonl`, {
      write: true,
      append: true,
      createNew: true,
      mode: 0o600,
    });
  }

  /**
   * Records, before any change, which snapshot the rollback restores: undo takes the protected
   * roots from its (authenticated) manifest, and writes beneath them only.
   */
  writeOrigin(snapshot: string): void {
    Deno.writeTextFileSync(`${this.dir}/origin.json`, JSON.stringify({ snapshot }), {
      mode: 0o600,
      createNew: true,
    });
  }

  /** A fresh item name, relative to the folder. */
  nextItem(): string {
    return `items/${this.#next++}`;
  }

  /** Appends a record to the journal. Written before the change it describes. */
  record(record: UndoRecord): void {
    const line = this.#encoder.encode(JSON.stringify(record) + "\n");
    let done = 0;
    while (done < line.length) done += this.#journal.writeSync(line.subarray(done));
  }

  /** Moves a path (and everything below it) into the quarantine as `item`. */
  moveIn(path: string, item: string): void {
    moveTree(path, `${this.dir}/${item}`);
  }

  /**
   * Keeps the current version of a file or symlink as `item`, without moving it: a hard link
   * (the same inode, so a process still writing to it keeps writing there), or a copy when the
   * quarantine is on another filesystem.
   */
  keep(path: string, item: string): void {
    const dst = `${this.dir}/${item}`;
    try {
      Deno.linkSync(path, dst);
    } catch (e) {
      if (e instanceof Deno.errors.AlreadyExists) throw e;
      copyTree(path, dst);
    }
  }

  /** Closes the journal. */
  close(): void {
    this.#journal.close();
  }
}

/** Reads a quarantine's journal; a torn last line (a crash mid-write) is ignored. */
export function readJournal(dir: string): UndoRecord[] {
  const out: UndoRecord[] = [];
  for (const line of Deno.readTextFileSync(`${dir}/undo.jsonl`).split("\n")) {
    if (line === "") continue;
    try {
      out.push(JSON.parse(line) as UndoRecord);
    } catch {
      // Torn by a crash: the change it announced may not have happened either.
    }
  }
  return out;
}

/** Renames `src` to `dst`, copying and deleting across filesystems. */
export function moveTree(src: string, dst: string): void {
  try {
    Deno.renameSync(src, dst);
  } catch (e) {
    if (!isCode(e, "EXDEV")) throw e;
    copyTree(src, dst);
    Deno.removeSync(src, { recursive: true });
  }
}

/**
 * Copies a file, symlink or directory tree, keeping modes, mtimes and symlink targets (never
 * following a symlink). Other file types are skipped.
 */
export function copyTree(src: string, dst: string): void {
  const info = Deno.lstatSync(src);
  if (info.isSymlink) {
    Deno.symlinkSync(Deno.readLinkSync(src), dst);
    return;
  }
  if (info.isFile) {
    Deno.copyFileSync(src, dst);
  } else if (info.isDirectory) {
    Deno.mkdirSync(dst, { mode: 0o700 });
    for (const e of Deno.readDirSync(src)) copyTree(`${src}/${e.name}`, `${dst}/${e.name}`);
  } else {
    return;
  }
  Deno.chmodSync(dst, (info.mode ?? 0o600) & 0o7777);
  if (info.mtime !== null) Deno.utimeSync(dst, info.atime ?? info.mtime, info.mtime);
}

/** Creates the parent directories of a path (mode 0700) when missing. */
export function ensureParent(path: string): void {
  Deno.mkdirSync(dirname(path), { recursive: true, mode: 0o700 });
}
