/**
 * The time window an audit covers, and the watermark that makes audits follow each other
 * without gaps or overlaps: each audit over the default window starts where the last one ended.
 *
 * @module
 */

/** The journal `sync_state` key of the end of the last audit's window (an ISO time). */
export const WATERMARK_KEY = "audit.watermark";

/** The journal `sync_state` key of the last audit's outcome (JSON, {@link LastAudit}). */
export const LAST_AUDIT_KEY = "audit.last";

/**
 * How far behind the clock a default window ends, in ms. A running session writes its events
 * in batches (50 ms apart) and sensors stamp an event a little before it is written: an event
 * of the last second may not be in the journal yet, so it waits for the next audit.
 */
export const SETTLE_MS = 1000;

/** Where an audit's window came from. */
export type WindowSource = "watermark" | "first" | "flags";

/** The window an audit covers: events with `ts` from `since` (null: the beginning) to before `until`. */
export interface AuditWindow {
  since: string | null;
  until: string;
  source: WindowSource;
  /** Whether the audit moves the watermark to `until` when it completes. */
  advances: boolean;
}

/** What {@link resolveWindow} takes. */
export interface WindowInput {
  /** `--since`, parsed to an ISO time, or undefined. */
  since?: string | undefined;
  /** `--until`, parsed to an ISO time, or undefined. */
  until?: string | undefined;
  /** The watermark stored in the journal, or undefined before the first audit. */
  watermark?: string | undefined;
  /** The clock, in ms since the epoch. */
  now: number;
  /**
   * A default window ends no earlier than this (ms since the epoch): the end of the audit's own
   * watches, whose sessions are fully written when they end.
   */
  notBefore?: number | undefined;
}

/**
 * Chooses the window: the flags when given (the watermark then stays where it is, so an ad hoc
 * look at the past does not make the scheduled audit skip anything), else from the watermark
 * (or the beginning of the journal on the first audit) to {@link SETTLE_MS} before now, or
 * `notBefore` when that is later.
 *
 * @throws {RangeError} when `until` is not later than `since`.
 */
export function resolveWindow(input: WindowInput): AuditWindow {
  const flags = input.since !== undefined || input.until !== undefined;
  const settled = new Date(Math.max(input.now - SETTLE_MS, input.notBefore ?? 0))
    .toISOString();
  const since = flags ? input.since ?? null : input.watermark ?? null;
  let until = input.until ?? settled;
  // A watermark ahead of the clock (the clock was set back): cover nothing rather than the past.
  if (!flags && since !== null && until < since) until = since;
  if (flags && since !== null && until <= since) {
    throw new RangeError(`The window is empty: --until "${until}" is not later than "${since}"`);
  }
  return {
    since,
    until,
    source: flags ? "flags" : input.watermark === undefined ? "first" : "watermark",
    advances: !flags,
  };
}

/** The last audit, as the journal keeps it for `sentry schedule status`. */
export interface LastAudit {
  /** When the audit finished (ISO time). */
  at: string;
  since: string | null;
  until: string;
  /** `clean`, `findings` or `failed`. */
  result: string;
  exitCode: number;
  /** Findings that met the fail-on threshold. */
  failing: number;
  findings: number;
}

/** Reads a {@link LastAudit} stored as JSON; null when absent or unreadable. */
export function parseLastAudit(text: string | undefined): LastAudit | null {
  if (text === undefined) return null;
  try {
    const value = JSON.parse(text) as Partial<LastAudit>;
    if (typeof value.at !== "string" || typeof value.result !== "string") return null;
    return value as LastAudit;
  } catch {
    return null;
  }
}
