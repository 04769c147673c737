import type { Journal } from "../journal/mod.ts";
import { expandGlob, type ResolvedPolicy } from "../policy/mod.ts";
import {
  formatBytes,
  openStore,
  type RestoreResult,
  snapshot,
  SnapshotTooLargeError,
  type Store,
} from "../rollback/mod.ts";
import type { Notice } from "./session.ts";

/** A session's rollback protection: the store and the snapshot taken at its start. */
export interface Protection {
  store: Store;
  snapshot: string;
  roots: string[];
}

/** What {@link protect} needs. */
export interface ProtectOptions {
  dataDir: string;
  session: string;
  policy: { resolved: ResolvedPolicy; workspace: string; home: string };
  env: Record<string, string>;
  onNotice: (notice: Notice) => void;
}

/**
 * Snapshots the protected trees (the workspace and the policy's `rollback.paths`) before the
 * agent runs. A tree over `rollback.max_bytes` is never snapshotted partly: rollback is switched
 * off for the session and Sentry says so loudly. Returns null when there is no protection.
 */
export async function protect(options: ProtectOptions): Promise<Protection | null> {
  const { resolved, workspace, home } = options.policy;
  const roots = [workspace];
  try {
    for (const p of resolved.rollback.paths) {
      roots.push(expandGlob(p, { home, workspace, env: options.env }));
    }
  } catch (error) {
    options.onNotice({
      type: "warn",
      message: `ROLLBACK IS OFF for this session: a rollback.paths entry cannot be expanded: ${
        (error as Error).message
      }`,
    });
    return null;
  }
  const store = openStore(options.dataDir);
  try {
    const info = await snapshot(store, {
      roots,
      exclude: resolved.rollback.exclude,
      maxBytes: resolved.rollback.max_bytes,
      maxFiles: resolved.rollback.max_files,
      session: options.session,
    });
    const files = info.trees.reduce((n, t) => n + t.files, 0);
    const bytes = info.trees.reduce((n, t) => n + t.bytes, 0);
    options.onNotice({
      type: "info",
      message:
        `protected ${files} files (${formatBytes(bytes)}) in ${
          Math.round(info.stats.totalMs)
        } ms ` +
        `for rollback (snapshot ${info.id})`,
    });
    return { store, snapshot: info.id, roots };
  } catch (error) {
    const reason = error instanceof SnapshotTooLargeError
      ? `${error.message}; raise rollback.max_bytes or add rollback.exclude globs`
      : `the snapshot failed: ${(error as Error).message}`;
    options.onNotice({ type: "warn", message: `ROLLBACK IS OFF for this session: ${reason}` });
    return null;
  }
}

/** Journals every path a rollback touched (one response row each) and the overall outcome. */
export function journalRestore(journal: Journal, result: RestoreResult, by: string): void {
  for (const r of result.results) {
    journal.recordResponse({
      session: result.session,
      action: "rollback",
      outcome: r.outcome,
      detail: {
        path: r.path,
        op: r.action,
        type: r.type,
        ...(r.reason === undefined ? {} : { reason: r.reason }),
        by,
      },
    });
  }
  const touched = result.counts.restored + result.counts.recreated + result.counts.removed;
  journal.recordResponse({
    session: result.session,
    action: "rollback",
    outcome: result.ok ? "ok" : touched > 0 ? "partial" : "failed",
    detail: {
      rollback: result.id,
      snapshot: result.snapshot,
      ...result.counts,
      quarantine: result.quarantine,
      by,
    },
  });
  journal.flush();
}
