/**
 * The audit's host checks beyond `sentry doctor`'s: the size of the snapshot store and the
 * sync backlog, each against the limit the `audit.host` section sets.
 *
 * @module
 */

import { join } from "node:path";
import type { HostCheck } from "./report.ts";

/**
 * The bytes under a directory (regular files, not following links), or null when it does not
 * exist. Stops counting after `maxEntries` entries, so that a huge store costs bounded time;
 * `complete` says whether it got through.
 */
export function directoryBytes(
  dir: string,
  maxEntries = 1_000_000,
): { bytes: number; complete: boolean } | null {
  try {
    Deno.statSync(dir);
  } catch {
    return null;
  }
  let bytes = 0;
  let entries = 0;
  const stack = [dir];
  while (stack.length > 0) {
    const current = stack.pop() as string;
    let listing: Iterable<Deno.DirEntry>;
    try {
      listing = Deno.readDirSync(current);
    } catch {
      continue; // Removed meanwhile, or not readable: counted as empty.
    }
    for (const entry of listing) {
      if (++entries > maxEntries) return { bytes, complete: false };
      const path = join(current, entry.name);
      if (entry.isDirectory) stack.push(path);
      else if (entry.isFile) {
        try {
          bytes += Deno.lstatSync(path).size;
        } catch {
          // Gone meanwhile.
        }
      }
    }
  }
  return { bytes, complete: true };
}

/** Formats a byte count for people: `512 B`, `1.5 MiB`. */
function bytesText(n: number): string {
  const units = ["B", "KiB", "MiB", "GiB", "TiB"];
  let value = n;
  let unit = 0;
  while (value >= 1024 && unit < units.length - 1) {
    value /= 1024;
    unit++;
  }
  return unit === 0 ? `${n} B` : `${value.toFixed(1)} ${units[unit]}`;
}

/** The snapshot store's check: a failure above `maxBytes`. */
export function storeCheck(
  dataDir: string,
  maxBytes: number,
): { check: HostCheck; bytes: number | null } {
  const dir = join(dataDir, "store");
  const size = directoryBytes(dir);
  if (size === null) {
    return {
      check: {
        id: "store",
        title: "snapshot store",
        status: "skip",
        detail: `no store at "${dir}" yet`,
      },
      bytes: null,
    };
  }
  const over = size.bytes > maxBytes;
  return {
    check: {
      id: "store",
      title: "snapshot store",
      status: over ? "fail" : "ok",
      detail: `${size.complete ? "" : "at least "}${bytesText(size.bytes)} in "${dir}"` +
        (over
          ? `, above the limit of ${bytesText(maxBytes)} (prune with: sentry snapshots prune)`
          : ""),
    },
    bytes: size.bytes,
  };
}

/** The sync backlog's check: a failure above `maxEvents` waiting. */
export function backlogCheck(
  outbox: { pending: number; oldestTs: string | null; dropped: number },
  options: { maxEvents: number; syncOn: boolean },
): HostCheck {
  if (!options.syncOn && outbox.pending === 0) {
    return {
      id: "sync_backlog",
      title: "sync backlog",
      status: "skip",
      detail: "sync is not configured",
    };
  }
  const over = outbox.pending > options.maxEvents;
  return {
    id: "sync_backlog",
    title: "sync backlog",
    status: over ? "fail" : outbox.dropped > 0 ? "warn" : "ok",
    detail: `${outbox.pending} event(s) waiting` +
      (outbox.oldestTs === null ? "" : ` since ${outbox.oldestTs}`) +
      (outbox.dropped > 0 ? `, ${outbox.dropped} dropped at the outbox's cap` : "") +
      (over ? `, above the limit of ${options.maxEvents}` : ""),
  };
}
