/**
 * One call for the automatic rollback response and `sentry rollback`: find the session's
 * snapshot, plan, and restore (or only plan, for `--dry-run`).
 * @module
 */
import { type Plan, plan } from "./plan.ts";
import { restore, type RestoreHooks, type RestoreResult } from "./restore.ts";
import { listSnapshots } from "./snapshots.ts";
import type { Store } from "./store.ts";

/** Options for {@link rollback}. */
export interface RollbackOptions {
  /** The session whose changes are rolled back; its quarantine receives what is removed. */
  session: string;
  /** The snapshot to restore; by default the session's first. */
  snapshot?: string;
  /** The paths the sensors saw change; every protected path is compared when absent. */
  paths?: Iterable<string>;
  /** `--path` globs. */
  filter?: readonly string[];
  /** Only plan. */
  dryRun?: boolean;
  /** The rollback's id; a fresh ULID by default. */
  id?: string;
  /** The clock; `Date.now` by default. */
  now?: () => number;
  hooks?: RestoreHooks;
}

/** What {@link rollback} did. */
export interface RollbackResult {
  /** For a dry run, true; otherwise true only when every path was restored and verified. */
  ok: boolean;
  dryRun: boolean;
  plan: Plan;
  /** Null for a dry run. */
  restore: RestoreResult | null;
}

/**
 * Rolls a session's protected trees back to its snapshot. Works whether or not the session is
 * still running, and after Sentry crashed: everything it needs is in the store.
 *
 * @throws {Deno.errors.NotFound} when the session has no snapshot (or the one named is gone).
 */
export async function rollback(store: Store, options: RollbackOptions): Promise<RollbackResult> {
  const snapshot = options.snapshot ?? listSnapshots(store, { session: options.session })[0]?.id;
  if (snapshot === undefined) {
    throw new Deno.errors.NotFound(`No snapshot for session "${options.session}"`);
  }
  const planned = plan(store, {
    snapshot,
    ...(options.paths === undefined ? {} : { paths: options.paths }),
    ...(options.filter === undefined ? {} : { filter: options.filter }),
  });
  if (options.dryRun === true) return { ok: true, dryRun: true, plan: planned, restore: null };
  const restored = await restore(store, {
    plan: planned,
    session: options.session,
    ...(options.id === undefined ? {} : { id: options.id }),
    ...(options.now === undefined ? {} : { now: options.now }),
    ...(options.hooks === undefined ? {} : { hooks: options.hooks }),
  });
  return { ok: restored.ok, dryRun: false, plan: planned, restore: restored };
}
