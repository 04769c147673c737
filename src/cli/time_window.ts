/**
 * `--since` and `--until`, as `events` and `report` take them: an ISO date or time, or a
 * duration back from now (`2h`, `30m`, `1d`, `1h30m`).
 * @module
 */
import { UsageError } from "./errors.ts";

const UNIT_MS: Readonly<Record<string, number>> = {
  ms: 1,
  s: 1000,
  m: 60_000,
  h: 3_600_000,
  d: 86_400_000,
  w: 604_800_000,
};

/** A duration back from now: `2h`, `30m`, `1d`, `1h30m`, `500ms`. */
const AGO = /^(?:\d+(?:\.\d+)?(?:ms|s|m|h|d|w))+$/;

/** An ISO 8601 date, or date and time (with `T` or a space, any offset). */
const ISO = /^\d{4}-\d{2}-\d{2}(?:[T ]\d{2}:\d{2}(?::\d{2}(?:\.\d+)?)?(?:Z|[+-]\d{2}:?\d{2})?)?$/i;

/** How {@link parseTimeArg} reads its text. */
export interface TimeArgOptions {
  /** The flag, for the error message: `--since`. */
  flag: string;
  /** Now, in epoch milliseconds (injected for tests). */
  now?: number;
}

/**
 * Reads a `--since`/`--until` value as an ISO timestamp (UTC, as the journal stores them). A
 * date or time without an offset is local time, as people type it; a duration is that long
 * before now.
 *
 * @throws {UsageError} when the text is neither.
 */
export function parseTimeArg(text: string, options: TimeArgOptions): string {
  const now = options.now ?? Date.now();
  const trimmed = text.trim();
  if (AGO.test(trimmed)) {
    let ms = 0;
    for (const part of trimmed.matchAll(/(\d+(?:\.\d+)?)(ms|s|m|h|d|w)/g)) {
      ms += Number(part[1]) * (UNIT_MS[part[2] as string] ?? 0);
    }
    return new Date(now - Math.round(ms)).toISOString();
  }
  if (ISO.test(trimmed)) {
    // A bare date is midnight local time (Date.parse would take it as UTC).
    const local = /^\d{4}-\d{2}-\d{2}$/.test(trimmed) ? `${trimmed}T00:00` : trimmed;
    const ms = Date.parse(local.replace(" ", "T"));
    if (!Number.isNaN(ms)) return new Date(ms).toISOString();
  }
  throw new UsageError(
    `Invalid ${options.flag} "${text}": give an ISO time (2026-12-06, 2026-12-06T14:30) or a duration back from now (2h, 30m, 1d)`,
  );
}

/** A time window: either end may be open. */
export interface TimeWindow {
  since?: string;
  until?: string;
}

/** Reads `--since` and `--until` together; an empty window is a usage error. */
export function parseWindow(
  flags: { since?: string; until?: string },
  now: number = Date.now(),
): TimeWindow {
  const window: TimeWindow = {};
  if (flags.since !== undefined) {
    window.since = parseTimeArg(flags.since, { flag: "--since", now });
  }
  if (flags.until !== undefined) {
    window.until = parseTimeArg(flags.until, { flag: "--until", now });
  }
  if (window.since !== undefined && window.until !== undefined && window.since >= window.until) {
    throw new UsageError(
      `Invalid window: --since "${flags.since}" is not before --until "${flags.until}"`,
    );
  }
  return window;
}

/** Whether an ISO timestamp falls in a window (since inclusive, until exclusive). */
export function inWindow(ts: string, window: TimeWindow): boolean {
  return (window.since === undefined || ts >= window.since) &&
    (window.until === undefined || ts < window.until);
}
