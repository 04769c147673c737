/**
 * The journal's SQL and the mapping of rows to records. Private to the journal folder.
 *
 * @module
 */

import type { SQLOutputValue } from "node:sqlite";
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
  ];
}

/** Inserts one event; a second insert of the same id is ignored, so retrying a batch is safe. */
export const INSERT_EVENT = `INSERT OR IGNORE INTO events
  (id, session, ts, kind, pid, target, verdict, risk, rule, response, sensor, event)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)`;

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

/** Sessions with their counts; append a WHERE, ORDER BY or LIMIT. */
export const SELECT_SUMMARY = `SELECT s.*,
  (SELECT count(*) FROM events e WHERE e.session = s.id) AS n_events,
  (SELECT count(*) FROM events e WHERE e.session = s.id AND e.verdict = 'deny') AS n_denied,
  (SELECT coalesce(max(e.risk), 0) FROM events e WHERE e.session = s.id) AS max_risk,
  (SELECT count(*) FROM responses r WHERE r.session = s.id) AS n_responses
  FROM sessions s`;

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
