/**
 * The errors rollback throws on purpose, so callers can turn them into loud, specific messages.
 * @module
 */

/** One protected tree that is larger than the size cap. */
export interface OversizedTree {
  /** The tree's root, as an absolute path. */
  root: string;
  /** The bytes of its regular files, excluded paths left out. */
  bytes: number;
  /** Its regular files. */
  files: number;
}

/**
 * A protected tree holds more than `rollback.max_bytes`. The snapshot is refused as a whole,
 * before anything is written to the store: Sentry never takes a partial snapshot silently.
 * Callers print the message (it names every oversized tree) and decide whether to go on
 * without rollback.
 */
export class SnapshotTooLargeError extends RangeError {
  /** Every tree over the cap. */
  readonly trees: readonly OversizedTree[];
  /** The cap, in bytes. */
  readonly maxBytes: number;

  /** Builds the error from the oversized trees and the cap. */
  constructor(trees: readonly OversizedTree[], maxBytes: number) {
    const list = trees.map((t) =>
      `"${t.root}" holds ${formatBytes(t.bytes)} in ${t.files.toLocaleString("en-US")} files`
    ).join("; ");
    super(
      `Cannot snapshot for rollback: ${list}, over the cap of ${
        formatBytes(maxBytes)
      } (rollback.max_bytes); raise the cap or add paths to rollback.exclude`,
    );
    this.name = "SnapshotTooLargeError";
    this.trees = trees;
    this.maxBytes = maxBytes;
  }
}

/** Formats a byte count for people: `512 B`, `1.5 KiB`, `2.0 GiB`. */
export function formatBytes(bytes: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = bytes;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${bytes} B` : `${value.toFixed(1)} ${units[unit]}`;
}
