/**
 * A batch's per-session counts, added up in memory so that the journal writes each session's
 * counts once per batch (migration 4) instead of once per event. Private to the journal folder.
 *
 * @module
 */

import type { SQLInputValue } from "node:sqlite";
import type { AgentEvent } from "../events/mod.ts";

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** The separators of a canonical `ts` (`YYYY-MM-DDTHH:MM:SS.sssZ`), by position. */
const SEPARATORS: readonly [number, string][] = [
  [4, "-"],
  [7, "-"],
  [10, "T"],
  [13, ":"],
  [16, ":"],
  [19, "."],
  [23, "Z"],
];

/** The last instant SQLite's date functions take: 9999-12-31T23:59:59.999Z. */
const LAST_MS = 253_402_300_799_999;

/** A ULID's time part: 48 bits in uppercase Crockford base32. */
const ID_TIME = /^[0-7][0-9A-HJKMNP-TV-Z]{9}/;

/** The id's part after its time must not sort below this (it rules out a truncated id). */
const RANDOM_FLOOR = "0".repeat(16);

/** Days since 1970-01-01 of a proleptic Gregorian date; a day past the month's end rolls on. */
function epochDay(y: number, m: number, d: number): number {
  // Howard Hinnant's days_from_civil, with March as the first month of the year.
  const year = m <= 2 ? y - 1 : y;
  const era = Math.floor(year / 400);
  const yoe = year - era * 400;
  const doy = Math.floor((153 * (m > 2 ? m - 3 : m + 9) + 2) / 5) + d - 1;
  const doe = yoe * 365 + Math.floor(yoe / 4) - Math.floor(yoe / 100) + doy;
  return era * 146_097 + doe - 719_468;
}

function daysInMonth(y: number, m: number): number {
  if (m !== 2) return m === 4 || m === 6 || m === 9 || m === 11 ? 30 : 31;
  return y % 4 === 0 && (y % 100 !== 0 || y % 400 === 0) ? 29 : 28;
}

/**
 * The time in ms of a `ts` that SQLite's `strftime('%Y-%m-%dT%H:%M:%fZ', ts)` gives back
 * unchanged, else null. That is SQLite's rule, not `toISOString()`'s (`counts_test.ts` checks
 * it against the SQLite that Deno bundles): SQLite takes days 1 to 31 of any month, hours 0 to
 * 24, minutes and seconds 0 to 59, up to 9999-12-31T23:59:59.999Z, and writes the time back as
 * spelled; it writes the date back as spelled too, unless the day is above 28: then it writes
 * the date of the instant. So `2026-01-01T24:30:00.000Z` is canonical (the instant 2026-01-02
 * 00:30), while `2026-02-30T00:00:00.000Z` and `2026-01-31T24:00:00.000Z` are not.
 */
function canonicalMs(ts: string): number | null {
  if (ts.length !== 24) return null;
  for (const [at, c] of SEPARATORS) if (ts[at] !== c) return null;
  const y = digits(ts, 0, 4);
  const mo = digits(ts, 5, 2);
  const d = digits(ts, 8, 2);
  const h = digits(ts, 11, 2);
  const mi = digits(ts, 14, 2);
  const s = digits(ts, 17, 2);
  const ms = digits(ts, 20, 3);
  if (y < 0 || ms < 0 || s < 0 || s > 59 || mi < 0 || mi > 59 || h < 0 || h > 24) return null;
  if (mo < 1 || mo > 12 || d < 1 || d > 31) return null;
  if (d > 28 && (h === 24 || d > daysInMonth(y, mo))) return null;
  const time = epochDay(y, mo, d) * 86_400_000 + ((h * 60 + mi) * 60 + s) * 1000 + ms;
  return time > LAST_MS ? null : time;
}

/** The number the ASCII digits `ts[at, at + n)` spell, or -1 when one is not a digit. */
function digits(ts: string, at: number, n: number): number {
  let value = 0;
  for (let i = at; i < at + n; i++) {
    const digit = ts.charCodeAt(i) - 48;
    if (digit < 0 || digit > 9) return -1;
    value = value * 10 + digit;
  }
  return value;
}

/**
 * An event's skew in ms, its `ts` time minus the time in its id, or null when either is not
 * canonical: `skewSql()` of migration 3, in JavaScript, equal to it for every value (the tests
 * compare the two). For `ts`, see {@link canonicalMs}. The id is canonical when its first ten
 * characters are a 48-bit time in uppercase Crockford base32 and the rest compares at or above
 * sixteen "0" (as SQLite compares text; against "0"s JavaScript's order is the same).
 */
export function eventSkew(ts: unknown, id: unknown): number | null {
  if (typeof ts !== "string" || typeof id !== "string") return null;
  const time = canonicalMs(ts);
  if (time === null || !ID_TIME.test(id) || id.slice(10) < RANDOM_FLOOR) return null;
  let idMs = 0;
  for (let i = 0; i < 10; i++) idMs = idMs * 32 + CROCKFORD.indexOf(id[i] as string);
  return time - idMs;
}

/** One session's share of a batch. */
interface Tally {
  events: number;
  denied: number;
  maxRisk: number;
  /** Null once an event's skew is null, as SQLite's min() and max() of a NULL are. */
  minSkew: number | null;
  maxSkew: number | null;
}

/**
 * The counts of the events a batch inserted, by session. Add only the events the database took
 * (an `INSERT OR IGNORE` that changed a row), then write {@link CountBatch.rows} with
 * `UPSERT_COUNTS` in the batch's transaction.
 */
export class CountBatch {
  readonly #sessions = new Map<string, Tally>();

  /**
   * Counts one inserted event. An unattributed event (`pid: null`: no evidence ties it to the
   * agent) counts as an event, but never as a denial nor toward the session's risk.
   */
  add(event: AgentEvent): void {
    const skew = eventSkew(event.ts, event.id);
    const attributed = event.pid !== null;
    const denied = attributed && event.verdict === "deny" ? 1 : 0;
    const risk = attributed ? event.risk : 0;
    const tally = this.#sessions.get(event.session);
    if (tally === undefined) {
      this.#sessions.set(event.session, {
        events: 1,
        denied,
        maxRisk: risk,
        minSkew: skew,
        maxSkew: skew,
      });
      return;
    }
    tally.events++;
    tally.denied += denied;
    if (risk > tally.maxRisk) tally.maxRisk = risk;
    if (skew === null || tally.minSkew === null || tally.maxSkew === null) {
      tally.minSkew = null;
      tally.maxSkew = null;
    } else if (skew < tally.minSkew) {
      tally.minSkew = skew;
    } else if (skew > tally.maxSkew) {
      tally.maxSkew = skew;
    }
  }

  /** The parameters of `UPSERT_COUNTS`, one row per session. */
  rows(): SQLInputValue[][] {
    return [...this.#sessions].map((
      [session, t],
    ) => [session, t.events, t.denied, t.maxRisk, t.minSkew, t.maxSkew]);
  }
}
