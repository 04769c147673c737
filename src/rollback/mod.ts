/**
 * Rollback: snapshots of the protected trees in a content-addressed store, plans that compare
 * the live trees with a snapshot, restores that put them back (verified, with a quarantine for
 * what they remove), undo, and the store's disk management.
 *
 * ```ts
 * const store = openStore(dataDir(Deno.env.toObject()));
 * const snap = await snapshot(store, { roots, exclude, maxBytes, session });
 * // ... the agent runs; the sensors collect changed paths ...
 * const result = await rollback(store, { session, paths: changed });
 * const back = await undo(store, { session });
 * ```
 * @module
 */
export { formatBytes, type OversizedTree, SnapshotTooLargeError } from "./errors.ts";
export type {
  DirEntry,
  Entry,
  EntryType,
  FileEntry,
  Manifest,
  OtherEntry,
  SnapshotInfo,
  SnapshotStats,
  SymlinkEntry,
  Tree,
  TreeInfo,
} from "./manifest.ts";
export { ManifestAuthError, openStore, Store } from "./store.ts";
export { resolveRoots, snapshot, type SnapshotOptions } from "./snapshot.ts";
export {
  type ActionKind,
  type Difference,
  type Plan,
  plan,
  type PlanAction,
  type PlanOptions,
} from "./plan.ts";
export type { LiveEntry } from "./_walk.ts";
export {
  type ChangeOp,
  type PathResult,
  restore,
  type RestoreHooks,
  type RestoreOptions,
  type RestoreResult,
} from "./restore.ts";
export { rollback, type RollbackOptions, type RollbackResult } from "./rollback.ts";
export {
  listRollbacks,
  type RollbackRecord,
  undo,
  type UndoOptions,
  type UndoPathResult,
  type UndoResult,
} from "./undo.ts";
export {
  listSnapshots,
  type ListSnapshotsOptions,
  prune,
  type PruneOptions,
  type PruneResult,
  showSnapshot,
} from "./snapshots.ts";
