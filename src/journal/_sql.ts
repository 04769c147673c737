/**
 * The journal's SQL and the mapping of rows to records. Private to the journal folder.
 *
 * @module
 */

import type { SQLInputValue, SQLOutputValue } from "node:sqlite";
import type { AgentEvent, Kind } from "../events/mod.ts";
import type {
  KindCount,
  ResponseAction,
  ResponseOutcome,
  ResponseRecord,
  SensorStatsRecord,
  SessionKind,
  SessionRecord,
  SessionState,
  SessionSummary,
} from "./records.ts";
import type { SensorStats } from "../sensors/mod.ts";
import { countAttributedEventsSql } from "./migrations.ts";

/** A row as node:sqlite returns it. */
export type Row = Record<string, SQLOutputValue>;

/** Connection settings, run on every open, before migrations. */
export function pragmas(busyTimeoutMs: number): string[] {
  return [
    // First, so that switching to WAL waits for another process that holds a lock.
    `PRAGMA busy_timeout = ${Math.trunc(busyTimeoutMs)}`,
    "PRAGMA journal_mode = WAL",
    // In WAL mode, NORMAL is durable against a process crash; only an OS crash or power loss
    // can lose the last commits.
    "PRAGMA synchronous = NORMAL",
    "PRAGMA foreign_keys = ON",
    // A statement that fires triggers keeps a statement journal: the count triggers of
    // migration 3 cost about 10 µs per inserted event with it on disk, 3 µs in memory. Since
    // migration 4 only deletes and updates of events fire them.
    "PRAGMA temp_store = MEMORY",
  ];
}

/** Inserts one event; a second insert of the same id is ignored, so retrying a batch is safe. */
export const INSERT_EVENT = `INSERT OR IGNORE INTO events
  (id, session, ts, kind, pid, target, verdict, risk, rule, response, sensor, event)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

/** The parameters of {@link INSERT_EVENT} for an event, in order. */
export function eventRow(e: AgentEvent): SQLInputValue[] {
  return [
    e.id,
    e.session,
    e.ts,
    e.kind,
    e.pid,
    e.target,
    e.verdict,
    e.risk,
    e.rule,
    e.response,
    e.sensor,
    JSON.stringify(e),
  ];
}

/** How a session's counts take in more events: counts add up, extremes widen. */
const MERGE_COUNTS = `ON CONFLICT (session) DO UPDATE SET events = events + excluded.events,
    denied = denied + excluded.denied, max_risk = max(max_risk, excluded.max_risk),
    min_skew = min(min_skew, excluded.min_skew), max_skew = max(max_skew, excluded.max_skew)`;

/**
 * Adds a batch's events of one session to its counts: session, events, denied, max risk and
 * the smallest and largest skew (see `_counts.ts`). SQLite's two-argument min() and max() are
 * NULL when either side is, so a skew once unknown stays unknown, as the trigger kept it.
 */
export const UPSERT_COUNTS = `INSERT INTO session_counts
  (session, events, denied, max_risk, min_skew, max_skew) VALUES (?, ?, ?, ?, ?, ?)
  ${MERGE_COUNTS}`;

/**
 * The events rowid through which `session_counts` counts events (`mark`, migration 4) and the
 * largest rowid (`top`): a `top` above `mark` means a writer that does not count inserted rows.
 */
export const COUNTS_STATE = `SELECT (SELECT coalesce(max(rowid), 0) FROM events) AS top,
  (SELECT through FROM session_counts_mark) AS mark`;

/** Counts the events after a rowid (the mark) into `session_counts`. */
export const COUNT_EVENTS_AFTER = `INSERT INTO session_counts
  (session, events, denied, max_risk, min_skew, max_skew)
  ${countAttributedEventsSql("rowid > ?")}
  ${MERGE_COUNTS}`;

/** Moves the mark to the largest rowid, once every event is counted. */
export const MOVE_COUNTS_MARK =
  "UPDATE session_counts_mark SET through = (SELECT coalesce(max(rowid), 0) FROM events)";

/** Queues an event for upload, in the transaction that writes it. */
export const INSERT_OUTBOX = "INSERT INTO outbox (event_id) VALUES (?)";

/** Inserts one response. */
export const INSERT_RESPONSE = `INSERT INTO responses
  (session, event_id, ts, action, outcome, detail) VALUES (?, ?, ?, ?, ?, ?)`;

/** Inserts one session. */
export const INSERT_SESSION = `INSERT INTO sessions
  (id, agent, command, pid, kind, policy, mode, workspace, host, sentry_pid, started_at,
   ended_at, state, exit_code, note)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

/**
 * Sets a session's sensing tier (migration 5). A statement of its own, so that a session without
 * one can still be written to a journal of an older schema (the migration tests do).
 */
export const UPDATE_SESSION_TIER = "UPDATE sessions SET tier = ? WHERE id = ?";

/** Creates or replaces a sensor's counters in a session. */
export const UPSERT_SENSOR_STATS = `INSERT INTO sensor_stats (session, sensor, stats, updated_at)
  VALUES (?, ?, ?, ?)
  ON CONFLICT (session, sensor) DO UPDATE
  SET stats = excluded.stats, updated_at = excluded.updated_at`;

/** The columns of a patchable session field, by record key. */
export const SESSION_COLUMNS = {
  pid: "pid",
  command: "command",
  policy: "policy",
  mode: "mode",
  endedAt: "ended_at",
  state: "state",
  exitCode: "exit_code",
  note: "note",
} as const;

/**
 * Sessions with their counts; append a WHERE, ORDER BY or LIMIT. Event counts come from
 * `session_counts`, which the writers keep (migration 4): counting a big session's events here
 * took 25 to 80 ms per call for a session of 800,000 events.
 */
export const SELECT_SUMMARY = `SELECT s.*,
  coalesce(c.events, 0) AS n_events,
  coalesce(c.denied, 0) AS n_denied,
  coalesce(c.max_risk, 0) AS max_risk,
  (SELECT count(*) FROM responses r WHERE r.session = s.id) AS n_responses
  FROM sessions s LEFT JOIN session_counts c ON c.session = s.id`;

/** Most recently started first; ids break ties (ULIDs also sort by time). */
export const SESSION_ORDER = "ORDER BY s.started_at DESC, s.id DESC";

/** Live sessions owned by a host's Sentry processes. */
export const SELECT_LIVE = `SELECT id, sentry_pid FROM sessions
  WHERE state IN ('running', 'paused') AND host = ? AND origin_key IS NULL`;

/**
 * Marks a live session crashed. The end time is that of its last event, the best evidence of
 * when its Sentry died; null when it has none.
 */
export const MARK_CRASHED = `UPDATE sessions SET state = 'crashed', rev = rev + 1,
  ended_at = coalesce(ended_at,
    (SELECT e.ts FROM events e WHERE e.session = sessions.id ORDER BY e.id DESC LIMIT 1))
  WHERE id = ? AND state IN ('running', 'paused')`;

// --- Event queries ------------------------------------------------------------------------------
//
// A query of one session walks one of four indexes, named with INDEXED BY so that the choice
// never rests on SQLite's guesses (it sorted 700,000 rows for "risk >= 10"):
// - events_session_kind (session, kind, id) or _verdict (session, verdict, id) for one kind or
//   a verdict alone: the matches in id order, one table read per event of the page;
// - events_session_id (session, id, ts, kind, verdict, risk): in id order, every filter checked
//   in the index (35 ns a row); cost grows with the rows walked until the page is full;
// - events_session_kind, _verdict or _risk (session, risk, id) for filters together: the
//   matches of that filter in the id range, each read from the table (up to 1.6 µs), then
//   sorted; taken when a bounded count finds fewer than DRIVER_CAP of them (the fewest wins).
// The worst case is a walk of the whole session when filters that are each common rarely meet:
// about 30 ms at 800,000 events.
// A time filter also bounds the id range, through the session's skew between ts and id time:
// ids are ULIDs minted from the clock that stamps ts, though not at the same instant (the watch
// sensor reports when a change happened), so the range is exact only with the recorded skew.

/** Below this many matches, sorting a filter's matches beats walking every event in id order. */
export const DRIVER_CAP = 4096;

/** The scan index: in id order, with every filtered column. */
export const SCAN_INDEX = "events_session_id";

/** One end of an id range. */
export interface IdBound {
  id: string;
  /** Whether the bound itself is in the range (`>=`, `<=`) or not (`>`, `<`). */
  inclusive: boolean;
}

/** An event query's filters, resolved: the kinds as a list and the cursor as id bounds. */
export interface EventConditions {
  session?: string | undefined;
  kinds?: readonly Kind[] | undefined;
  minRisk?: number | undefined;
  verdict?: string | undefined;
  since?: string | undefined;
  until?: string | undefined;
  /** `pid IS NOT NULL` (true) or `pid IS NULL` (false). */
  attributed?: boolean | undefined;
  /** Words that must each appear in the event's {@link SEARCH_TEXT}: see {@link searchWords}. */
  words?: readonly string[] | undefined;
  /** The smallest ids allowed. */
  from?: IdBound | undefined;
  /** The largest ids allowed. */
  to?: IdBound | undefined;
}

/** The WHERE clause (without the keyword, "1" when empty) and parameters of the conditions. */
export function eventWhere(c: EventConditions): { sql: string; params: SQLInputValue[] } {
  const where: string[] = [];
  const params: SQLInputValue[] = [];
  const add = (sql: string, ...values: SQLInputValue[]): void => {
    where.push(sql);
    params.push(...values);
  };
  if (c.session !== undefined) add("session = ?", c.session);
  if (c.kinds !== undefined) add(`kind IN (${c.kinds.map(() => "?").join(", ")})`, ...c.kinds);
  if (c.minRisk !== undefined) add("risk >= ?", c.minRisk);
  if (c.verdict !== undefined) add("verdict = ?", c.verdict);
  if (c.since !== undefined) add("ts >= ?", c.since);
  if (c.until !== undefined) add("ts < ?", c.until);
  if (c.attributed !== undefined) add(c.attributed ? "pid IS NOT NULL" : "pid IS NULL");
  for (const word of c.words ?? []) {
    // The whole event's JSON first (one parse-free scan): a word absent from it is absent from
    // every searched field, and most events are dismissed here.
    add(`instr(lower(event), ?) > 0 AND instr(${SEARCH_TEXT}, ?) > 0`, word, word);
  }
  if (c.from !== undefined) add(c.from.inclusive ? "id >= ?" : "id > ?", c.from.id);
  if (c.to !== undefined) add(c.to.inclusive ? "id <= ?" : "id < ?", c.to.id);
  return { sql: where.length === 0 ? "1" : where.join(" AND "), params };
}

/**
 * The text a search looks in: an event's kind, target, rule, verdict, response, pid, executable,
 * command line and detail as one JSON array (one parse of `event`; strings keep their escapes, so
 * a JSON-escaped word matches), lowered (ASCII only, as SQLite's `lower()`). The dashboard's
 * `matchesSearch()` builds the same text for live events.
 */
export const SEARCH_TEXT = `lower(json_extract(event, '$.kind', '$.target', '$.rule', '$.verdict',
  '$.response', '$.pid', '$.exe', '$.cmdline', '$.detail'))`;

/**
 * The words of a search, as {@link SEARCH_TEXT} holds them: split on white space, JSON-escaped
 * (without the quotes) and lowered (ASCII only). Duplicates are dropped.
 */
export function searchWords(text: string): string[] {
  const words = text.split(/\s+/).filter((w) => w !== "").map((w) =>
    JSON.stringify(w).slice(1, -1).replace(/[A-Z]/g, (c) => c.toLowerCase())
  );
  return [...new Set(words)];
}

/**
 * The id of the `n`th event of a session past a cursor, walking its ids in `desc` or ascending
 * order through the scan index (parameters: session, [cursor,] n - 1); no row when fewer remain.
 */
export function nthEventId(options: { desc: boolean; cursor: boolean }): string {
  const cursor = options.cursor ? (options.desc ? " AND id < ?" : " AND id > ?") : "";
  return `SELECT id FROM events INDEXED BY ${SCAN_INDEX} WHERE session = ?${cursor}
    ORDER BY id ${options.desc ? "DESC" : "ASC"} LIMIT 1 OFFSET ?`;
}

/** The events matching `where`, by id, walking `index` (any when undefined). */
export function selectEvents(
  where: string,
  options: { index?: string | undefined; desc: boolean },
): string {
  const indexed = options.index === undefined ? "" : ` INDEXED BY ${options.index}`;
  return `SELECT event FROM events${indexed} WHERE ${where} ORDER BY id ${
    options.desc ? "DESC" : "ASC"
  } LIMIT ?`;
}

/** How many rows of `index` match `where`, counting no further than {@link DRIVER_CAP}. */
export function countUpToCap(index: string, where: string): string {
  return `SELECT count(*) AS n FROM
    (SELECT 1 FROM events INDEXED BY ${index} WHERE ${where} LIMIT ${DRIVER_CAP})`;
}

/**
 * The smallest and largest skew (ts time minus id time, in ms) of a session's events, kept in
 * `session_counts`; NULL when an event is not canonical or the session has none.
 */
export const SELECT_SKEW = "SELECT min_skew, max_skew FROM session_counts WHERE session = ?";

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** The smallest id minted at `ms`; undefined outside the 48-bit ULID time range. */
export function idFloor(ms: number): string | undefined {
  if (!Number.isSafeInteger(ms) || ms < 0 || ms >= 2 ** 48) return undefined;
  let t = ms;
  let time = "";
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[t % 32] + time;
    t = Math.floor(t / 32);
  }
  return `${time}${"0".repeat(16)}`;
}

const TIME_PREFIXES: readonly { length: number; pattern: RegExp; rest: string; ms: number }[] = [
  { length: 23, pattern: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d\.\d{3}/, rest: "Z", ms: 1 },
  { length: 19, pattern: /^\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d/, rest: ".000Z", ms: 1000 },
  { length: 16, pattern: /^\d{4}-\d\d-\d\dT\d\d:\d\d/, rest: ":00.000Z", ms: 60_000 },
];

/**
 * What a string bound on `ts` says about the time of canonical timestamps: `ts >= text` implies
 * a time at or after `start`, and `ts < text` a time before `start + granule`. They come from
 * the longest date-time prefix of `text` (to the ms, second or minute), since a canonical
 * timestamp that compares above a string also compares at or above its prefix. Undefined when
 * `text` starts with no valid date and time.
 */
export function timeBound(text: string): { start: number; granule: number } | undefined {
  for (const prefix of TIME_PREFIXES) {
    if (!prefix.pattern.test(text)) continue;
    const canonical = text.slice(0, prefix.length) + prefix.rest;
    const start = Date.parse(canonical);
    // Date.parse accepts some impossible dates (2026-02-30): refuse what does not round-trip.
    if (Number.isNaN(start) || new Date(start).toISOString() !== canonical) return undefined;
    return { start, granule: prefix.ms };
  }
  return undefined;
}

/** The tighter of two lower bounds. */
export function maxBound(a: IdBound | undefined, b: IdBound | undefined): IdBound | undefined {
  if (a === undefined || b === undefined) return a ?? b;
  if (a.id !== b.id) return a.id > b.id ? a : b;
  return a.inclusive ? b : a;
}

/** The tighter of two upper bounds. */
export function minBound(a: IdBound | undefined, b: IdBound | undefined): IdBound | undefined {
  if (a === undefined || b === undefined) return a ?? b;
  if (a.id !== b.id) return a.id < b.id ? a : b;
  return a.inclusive ? b : a;
}

/**
 * The id range that holds every event of a session with `since <= ts < until`, given the
 * session's smallest and largest skew (ts time minus id time, all events canonical): an
 * event's id time is its ts time minus its skew. Empty when a bound cannot be derived.
 */
export function timeIdRange(
  times: { since?: string | undefined; until?: string | undefined },
  skew: { min: number; max: number },
): { from?: IdBound; to?: IdBound } {
  const out: { from?: IdBound; to?: IdBound } = {};
  const since = times.since === undefined ? undefined : timeBound(times.since);
  const from = since === undefined ? undefined : idFloor(since.start - skew.max);
  if (from !== undefined) out.from = { id: from, inclusive: true };
  const until = times.until === undefined ? undefined : timeBound(times.until);
  const to = until === undefined ? undefined : idFloor(until.start + until.granule - skew.min);
  if (to !== undefined) out.to = { id: to, inclusive: false };
  return out;
}

/** Escapes `%`, `_` and `\` for a `LIKE ... ESCAPE '\'` pattern. */
export function likePrefix(prefix: string): string {
  return prefix.replace(/[\\%_]/g, (c) => `\\${c}`) + "%";
}

function text(row: Row, column: string): string {
  const value = row[column];
  if (typeof value !== "string") throw new TypeError(`Column "${column}" is not text`);
  return value;
}

function textOrNull(row: Row, column: string): string | null {
  const value = row[column];
  return value === null || value === undefined ? null : String(value);
}

function int(row: Row, column: string): number {
  const value = row[column];
  if (typeof value === "number") return value;
  if (typeof value === "bigint") return Number(value);
  if (value === null || value === undefined) return 0;
  throw new TypeError(`Column "${column}" is not an integer`);
}

function intOrNull(row: Row, column: string): number | null {
  const value = row[column];
  return value === null || value === undefined ? null : int(row, column);
}

/** Maps a `sessions` row to a record. */
export function toSession(row: Row): SessionRecord {
  return {
    id: text(row, "id"),
    agent: text(row, "agent"),
    command: JSON.parse(text(row, "command")) as string[],
    pid: intOrNull(row, "pid"),
    kind: text(row, "kind") as SessionKind,
    policy: text(row, "policy"),
    mode: text(row, "mode"),
    workspace: text(row, "workspace"),
    tier: textOrNull(row, "tier") as SessionRecord["tier"],
    host: text(row, "host"),
    sentryPid: int(row, "sentry_pid"),
    startedAt: text(row, "started_at"),
    endedAt: textOrNull(row, "ended_at"),
    state: text(row, "state") as SessionState,
    exitCode: intOrNull(row, "exit_code"),
    note: textOrNull(row, "note"),
  };
}

/** Maps a {@link SELECT_SUMMARY} row to a summary. */
export function toSummary(row: Row): SessionSummary {
  return {
    ...toSession(row),
    events: int(row, "n_events"),
    denied: int(row, "n_denied"),
    maxRisk: int(row, "max_risk"),
    responses: int(row, "n_responses"),
  };
}

/** Maps a row's `event` column back to the event it stored, field for field. */
export function toEvent(row: Row): AgentEvent {
  return JSON.parse(text(row, "event")) as AgentEvent;
}

/** Maps a `responses` row to a record. */
export function toResponse(row: Row): ResponseRecord {
  return {
    id: int(row, "id"),
    session: text(row, "session"),
    eventId: textOrNull(row, "event_id"),
    ts: text(row, "ts"),
    action: text(row, "action") as ResponseAction,
    outcome: text(row, "outcome") as ResponseOutcome,
    detail: JSON.parse(text(row, "detail")) as Record<string, unknown>,
  };
}

/** Maps a `sensor_stats` row to a record. */
export function toSensorStats(row: Row): SensorStatsRecord {
  return {
    session: text(row, "session"),
    sensor: text(row, "sensor"),
    stats: JSON.parse(text(row, "stats")) as SensorStats,
    updatedAt: text(row, "updated_at"),
  };
}

/** Maps a kind-count row. */
export function toKindCount(row: Row): KindCount {
  return { kind: text(row, "kind") as Kind, count: int(row, "n"), denied: int(row, "denied") };
}
