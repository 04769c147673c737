/**
 * When the uploader tries again: exponential back-off with full jitter after a transient
 * failure, and the collector's `Retry-After` on 429 and 503 (docs/sync-protocol.md). Pure
 * functions of their inputs, so the schedule can be tested without waiting.
 *
 * @module
 */

/** The first back-off's ceiling: 1 s. */
export const BACKOFF_BASE_MS = 1000;

/** The back-off's ceiling: 5 min. */
export const BACKOFF_MAX_MS = 5 * 60_000;

/** The longest `Retry-After` honoured: a collector asking for more gets this (1 h). */
export const RETRY_AFTER_MAX_MS = 60 * 60_000;

/** Options for {@link backoffDelay}. */
export interface BackoffOptions {
  /** The first failure's ceiling; default {@link BACKOFF_BASE_MS}. */
  baseMs?: number;
  /** The ceiling never exceeded; default {@link BACKOFF_MAX_MS}. */
  maxMs?: number;
  /** A uniform number in [0, 1); defaults to `Math.random`. */
  random?: () => number;
}

/**
 * The wait before the next try after `failures` consecutive failures (1 for the first): a
 * uniform draw from [0, min(max, base × 2^(failures − 1))), "full jitter". Full jitter spreads
 * the retries of many hosts that failed together (a collector restart) over the whole window,
 * so they do not come back in a herd.
 */
export function backoffDelay(failures: number, options: BackoffOptions = {}): number {
  const base = options.baseMs ?? BACKOFF_BASE_MS;
  const max = options.maxMs ?? BACKOFF_MAX_MS;
  const random = options.random ?? Math.random;
  // 2^n overflows to Infinity long after it passes any sane max; min() takes care of it.
  const ceiling = Math.min(max, base * 2 ** Math.max(0, failures - 1));
  return Math.floor(random() * ceiling);
}

/**
 * Reads a `Retry-After` header: delay seconds (`"120"`) or an HTTP date, relative to `nowMs`.
 * Returns the wait in ms, clamped to [0, {@link RETRY_AFTER_MAX_MS}], or null when the header
 * is missing or unreadable (the caller then backs off as for any transient failure).
 */
export function parseRetryAfter(value: string | null, nowMs: number): number | null {
  if (value === null) return null;
  const text = value.trim();
  if (text === "") return null;
  let ms: number;
  if (/^\d+$/.test(text)) {
    ms = Number(text) * 1000;
  } else {
    // An HTTP date names its day and month; `Date.parse` alone would take "-5" as a year.
    if (!/[a-z]{3}/i.test(text)) return null;
    const at = Date.parse(text);
    if (Number.isNaN(at)) return null;
    ms = at - nowMs;
  }
  return Math.min(RETRY_AFTER_MAX_MS, Math.max(0, ms));
}
