/**
 * The journal: the one writer to Sentry's SQLite database.
 *
 * Sessions are written at once. Events and responses are buffered and written in batched
 * transactions, when the buffer reaches `batchMax` or `batchMs` after the action of the oldest
 * buffered event (its `ts`, so the time it spent in a sensor counts), so that a sensor's `append`
 * is a push and never waits on the database. A crash therefore loses at most what is buffered:
 * fewer than `batchMax` items, and the actions of one `batchMs` window (or, for a sensor slower
 * than that, the events still inside it).
 *
 * Several Sentry processes may share one journal (one `sentry run` per agent, plus readers such
 * as `sentry events`): the database runs in WAL mode, writers take the lock with
 * `BEGIN IMMEDIATE` and wait up to `busyTimeoutMs` for it.
 *
 * @module
 */

import type { z } from "zod";
import { DatabaseSync, type SQLInputValue, type StatementSync } from "node:sqlite";
import type { AgentEvent, Kind } from "../events/mod.ts";
import type { SensorStats } from "../sensors/mod.ts";
import { JournalVersionError, migrate, type Migration } from "./migrations.ts";
import {
  INSERT_POLICY_RELOAD,
  type NewPolicyReload,
  type PolicyReloadRecord,
  SELECT_POLICY_RELOADS,
  toPolicyReload,
} from "./policy_reloads.ts";
import { CountBatch } from "./_counts.ts";
import {
  COUNT_EVENTS_AFTER,
  COUNTS_STATE,
  countUpToCap,
  DRIVER_CAP,
  type EventConditions,
  eventRow,
  eventWhere,
  type IdBound,
  INSERT_EVENT,
  INSERT_OUTBOX,
  INSERT_RESPONSE,
  INSERT_SESSION,
  likePrefix,
  MARK_CRASHED,
  maxBound,
  minBound,
  MOVE_COUNTS_MARK,
  nthEventId,
  pragmas,
  SCAN_INDEX,
  searchWords,
  SELECT_LIVE,
  SELECT_SKEW,
  SELECT_SUMMARY,
  selectEvents,
  SESSION_COLUMNS,
  SESSION_ORDER,
  timeIdRange,
  toEvent,
  toKindCount,
  toResponse,
  toSensorStats,
  toSession,
  toSummary,
  UPDATE_SESSION_TIER,
  UPSERT_COUNTS,
  UPSERT_SENSOR_STATS,
} from "./_sql.ts";
import {
  DELETE_OUTBOX_THROUGH,
  GET_SYNC_STATE,
  MARK_SESSION_SYNCED,
  OUTBOX_CUT,
  OUTBOX_STATS,
  PUT_SYNC_STATE,
  SELECT_OUTBOX,
  SELECT_UNSYNCED_SESSIONS,
} from "./_sync_sql.ts";
import {
  DROPPED_KEY,
  LEASE_KEY,
  type OutboxItem,
  type OutboxStats,
  type SyncSession,
} from "./sync_records.ts";
import {
  type EventFilter,
  type JournalMetrics,
  type KindCount,
  type ListSessionsOptions,
  type NewResponse,
  type NewSession,
  type ResponseRecord,
  type SearchPage,
  type SensorStatsRecord,
  type SessionHost,
  SessionPatch,
  SessionRecord,
  type SessionSummary,
} from "./records.ts";

/**
 * What {@link Journal.write} gives its body: prepared statements on the journal's database, and
 * the event insert that keeps `session_counts` in step.
 */
export interface JournalWrite {
  /** A prepared statement on the journal's database, cached for the journal's lifetime. */
  statement(sql: string): StatementSync;
  /** Inserts an event once by id: true when it was new (and is counted), false for a duplicate. */
  insertEvent(event: AgentEvent): boolean;
}

/** The journal's file name inside the data directory. */
export const JOURNAL_FILE = "journal.db";

/** Options for {@link openJournal}. */
export interface JournalOptions {
  /** Write a batch once this many events and responses are buffered; default 256. */
  batchMax?: number;
  /**
   * Write a batch at most this long after the oldest buffered item's action (an event's `ts`;
   * a response's arrival), so sensing latency counts against it; default 50 ms.
   */
  batchMs?: number;
  /** How long a writer waits for another process's lock; default 5000 ms. */
  busyTimeoutMs?: number;
  /**
   * Refuse (and count as dropped) appends beyond this many buffered items, which only happens
   * while the database keeps failing; default 100,000.
   */
  maxPending?: number;
  /** The wall clock, in milliseconds since the epoch; defaults to `Date.now`. */
  now?: () => number;
  /** A monotonic clock in milliseconds for batch latency; defaults to `performance.now`. */
  clock?: () => number;
  /** This host's name, stored with new sessions and used by `reconcile`; defaults to the OS's. */
  hostname?: string;
  /** This process's id, stored with new sessions; defaults to `Deno.pid`. */
  pid?: number;
  /** The schema; defaults to the real migrations. Tests pass their own. */
  migrations?: readonly Migration[];
  /**
   * Queue every written event in the sync outbox, in the event's own transaction; default
   * false. Sentry turns it on when sync is configured (see `src/sync/`).
   */
  outbox?: boolean;
}

/** Options for {@link Journal.reconcile}. */
export interface ReconcileOptions {
  /**
   * The end a dead session's Sentry recorded outside the journal (when the journal could not
   * take it), or null: a recorded end is journaled instead of `crashed`.
   */
  recorded?: (session: string) => SessionPatch | null;
  /** Called, after the commit, for each dead session given its end (recorded or `crashed`). */
  settled?: (session: string) => void;
}

/** A session reference that matches no session, or more than one. */
export class SessionRefError extends Error {
  /** What was asked for: an id, an id prefix or `last`. */
  readonly ref: string;
  /** The sessions a prefix matched, when it matched several (at most 10). */
  readonly candidates: readonly string[];

  /** Builds the error; `candidates` is empty when nothing matched. */
  constructor(ref: string, message: string, candidates: readonly string[] = []) {
    super(message);
    this.name = "SessionRefError";
    this.ref = ref;
    this.candidates = candidates;
  }
}

/** Errors of a single row, which the batch drops, as opposed to errors of the database. */
function isRowError(error: unknown): boolean {
  if (!(error instanceof Error)) return true;
  const sqlite = error as Error & { code?: unknown; errcode?: unknown };
  if (sqlite.code === "ERR_SQLITE_ERROR" && typeof sqlite.errcode === "number") {
    const primary = sqlite.errcode & 0xff;
    return primary === 19 /* CONSTRAINT */ || primary === 20 /* MISMATCH */;
  }
  // A value JSON or SQLite cannot take (a BigInt, a cycle).
  return error instanceof TypeError || sqlite.code === "ERR_INVALID_ARG_TYPE";
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** Validates with a schema, throwing a one-line `TypeError` that names the first bad field. */
function parseOrThrow<T>(schema: z.ZodType<T>, what: string, value: unknown): T {
  const result = schema.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = issue?.path.length ? `${issue.path.join(".")}: ` : "";
  throw new TypeError(`${what}: ${field}${issue?.message ?? "invalid"}`, { cause: result.error });
}

function checkCount(name: string, value: number, min: number): number {
  if (!Number.isInteger(value) || value < min) {
    throw new RangeError(`Invalid ${name} ${value}: must be an integer of at least ${min}`);
  }
  return value;
}

/** The latency ring's size: percentiles describe about the last 512 batches. */
const LATENCY_WINDOW = 512;

function percentile(sorted: Float64Array, p: number): number {
  if (sorted.length === 0) return 0;
  const index = Math.min(sorted.length - 1, Math.ceil(p * sorted.length) - 1);
  return sorted[Math.max(0, index)] ?? 0;
}

/**
 * Sentry's journal. Get one with {@link openJournal}. All methods are synchronous; the only
 * asynchronous part is the timer that writes buffered items.
 */
export class Journal {
  /** The database file. */
  readonly path: string;
  readonly #db: DatabaseSync;
  readonly #statements = new Map<string, StatementSync>();
  readonly #batchMax: number;
  readonly #batchMs: number;
  readonly #maxPending: number;
  readonly #now: () => number;
  readonly #clock: () => number;
  readonly #hostname: string;
  readonly #pid: number;
  readonly #outbox: boolean;
  /**
   * Whether this code keeps `session_counts` (schema 4 on); false only for a journal held at
   * an older schema by `migrations`, whose triggers (3) count or which has no counts (1, 2).
   */
  readonly #counting: boolean;
  #events: AgentEvent[] = [];
  #responses: NewResponse[] = [];
  #timer: ReturnType<typeof setTimeout> | undefined;
  /** When the armed timer fires, on the monotonic clock. */
  #due = 0;
  /** When the last batch was written, on the monotonic clock. */
  #lastWrite = Number.NEGATIVE_INFINITY;
  #closed = false;
  /** Set after a failed write so that appends stop retrying until the timer does. */
  #failing = false;
  readonly #latencies = new Float64Array(LATENCY_WINDOW);
  #metrics = {
    batches: 0,
    eventsWritten: 0,
    responsesWritten: 0,
    rejected: 0,
    dropped: 0,
    writeErrors: 0,
    lastError: null as string | null,
    lastBatchMs: 0,
  };

  /** Opens (creating and migrating as needed) the journal at `path`. Prefer {@link openJournal}. */
  constructor(path: string, options: JournalOptions = {}) {
    this.path = path;
    this.#batchMax = checkCount("batchMax", options.batchMax ?? 256, 1);
    this.#batchMs = checkCount("batchMs", options.batchMs ?? 50, 0);
    this.#maxPending = checkCount("maxPending", options.maxPending ?? 100_000, this.#batchMax);
    const busyTimeoutMs = checkCount("busyTimeoutMs", options.busyTimeoutMs ?? 5000, 0);
    this.#now = options.now ?? Date.now;
    this.#clock = options.clock ?? (() => performance.now());
    this.#hostname = options.hostname ?? Deno.hostname();
    this.#pid = options.pid ?? Deno.pid;
    this.#outbox = options.outbox ?? false;
    if (path !== ":memory:") createPrivateFile(path);
    // Several processes opening a new journal at once race to switch it to WAL and migrate it.
    // SQLite answers a lock upgrade that could deadlock with SQLITE_BUSY at once, without its
    // busy handler: the whole open is tried again, within the busy timeout.
    const deadline = performance.now() + busyTimeoutMs;
    let db: DatabaseSync;
    for (let attempt = 0;; attempt++) {
      try {
        db = new DatabaseSync(path);
      } catch (cause) {
        throw new Error(`Cannot open journal "${path}": ${message(cause)}`, { cause });
      }
      try {
        for (const pragma of pragmas(busyTimeoutMs)) db.exec(pragma);
        migrate(db, {
          path,
          ...(options.migrations === undefined ? {} : { migrations: options.migrations }),
        });
        break;
      } catch (cause) {
        db.close();
        if (cause instanceof JournalVersionError) throw cause;
        if (isBusy(cause) && performance.now() < deadline) {
          sleepSync(Math.min(10 * 2 ** attempt, 200));
          continue;
        }
        throw new Error(`Cannot open journal "${path}": ${message(cause)}`, { cause });
      }
    }
    this.#db = db;
    this.#counting = db.prepare(
      "SELECT 1 FROM sqlite_schema WHERE type = 'table' AND name = 'session_counts_mark'",
    ).get() !== undefined;
  }

  /** Whether {@link close} has been called. */
  get closed(): boolean {
    return this.#closed;
  }

  // --- Sessions: written at once -------------------------------------------------------------

  /**
   * Creates a session, filling `startedAt`, `host`, `sentryPid` and `state` (`running`) when
   * they are left out, and returns the stored record.
   *
   * @throws {TypeError} when the record is invalid.
   * @throws {Error} when a session with its id exists.
   */
  createSession(session: NewSession): SessionRecord {
    this.#assertOpen();
    const record = parseOrThrow(SessionRecord, `Invalid session "${session.id}"`, {
      startedAt: this.#iso(),
      host: this.#hostname,
      sentryPid: this.#pid,
      endedAt: null,
      state: "running",
      exitCode: null,
      note: null,
      ...session,
    });
    try {
      this.#stmt(INSERT_SESSION).run(
        record.id,
        record.agent,
        JSON.stringify(record.command),
        record.pid,
        record.kind,
        record.policy,
        record.mode,
        record.workspace,
        record.host,
        record.sentryPid,
        record.startedAt,
        record.endedAt,
        record.state,
        record.exitCode,
        record.note,
      );
      if (record.tier !== null) this.#stmt(UPDATE_SESSION_TIER).run(record.tier, record.id);
    } catch (cause) {
      throw new Error(`Cannot create session "${record.id}": ${message(cause)}`, { cause });
    }
    return record;
  }

  /**
   * Changes a session's mutable fields (state, end, exit code, note, pid, command, policy,
   * mode) at once.
   *
   * @throws {TypeError} when the patch is invalid.
   * @throws {SessionRefError} when no session has the id.
   */
  updateSession(id: string, patch: SessionPatch): void {
    this.#assertOpen();
    const valid = parseOrThrow(SessionPatch, `Invalid change to session "${id}"`, patch);
    const sets: string[] = [];
    const params: SQLInputValue[] = [];
    for (const [key, column] of Object.entries(SESSION_COLUMNS)) {
      const value = valid[key as keyof SessionPatch];
      if (value === undefined) continue;
      sets.push(`${column} = ?`);
      params.push(key === "command" ? JSON.stringify(value) : value as SQLInputValue);
    }
    // Every change bumps rev, so that the uploader knows to send the session again.
    sets.push("rev = rev + 1");
    const sql = `UPDATE sessions SET ${sets.join(", ")} WHERE id = ?`;
    const result = this.#stmt(sql).run(...params, id);
    if (Number(result.changes) === 0) {
      throw new SessionRefError(id, `No session "${id}" in journal "${this.path}"`);
    }
  }

  // --- Events and responses: buffered --------------------------------------------------------

  /**
   * Buffers an event for the next batch. O(1) except on every `batchMax`-th call, which writes
   * the batch. The event is serialized when written, so it must not be mutated after this call.
   * Never throws for a database error (those are counted in {@link metrics}).
   *
   * @throws {Error} when the journal is closed.
   */
  append(event: AgentEvent): void {
    this.#assertOpen();
    if (this.#pending() >= this.#maxPending) {
      this.#metrics.dropped++;
      return;
    }
    this.#events.push(event);
    // The window runs from the action, not from its arrival: time the event spent in a sensor
    // (its batching, a worker's message, attribution) counts against the batch window, so that
    // a crash loses at most `batchMs` of actions whatever the tier.
    const age = this.#now() - Date.parse(event.ts);
    this.#afterPush(Number.isFinite(age) ? Math.max(0, age) : 0);
  }

  /** Buffers a response for the next batch, like {@link append}. */
  recordResponse(response: NewResponse): void {
    this.#assertOpen();
    if (this.#pending() >= this.#maxPending) {
      this.#metrics.dropped++;
      return;
    }
    this.#responses.push(response.ts === undefined ? { ...response, ts: this.#iso() } : response);
    this.#afterPush();
  }

  /**
   * Writes everything buffered, in one transaction, now.
   *
   * @throws {Error} when the batch cannot be committed; the batch stays buffered.
   */
  flush(): void {
    this.#assertOpen();
    this.#write(true);
  }

  /**
   * Records a policy reload of a live session (applied or refused), at once: it must be on disk
   * before whoever asked for it is told.
   */
  recordPolicyReload(reload: NewPolicyReload): PolicyReloadRecord {
    this.#assertOpen();
    const ts = reload.ts ?? this.#iso();
    const detail = JSON.stringify(reload.detail ?? {});
    const result = this.#stmt(INSERT_POLICY_RELOAD).run(
      reload.session,
      ts,
      reload.outcome,
      reload.policy,
      reload.oldHash,
      reload.newHash,
      detail,
    );
    return {
      id: Number(result.lastInsertRowid),
      session: reload.session,
      ts,
      outcome: reload.outcome,
      policy: reload.policy,
      oldHash: reload.oldHash,
      newHash: reload.newHash,
      detail: reload.detail ?? {},
    };
  }

  /** A session's policy reloads, oldest first; with `after`, only those after that id. */
  policyReloads(session: string, after = 0): PolicyReloadRecord[] {
    this.#assertOpen();
    return this.#stmt(SELECT_POLICY_RELOADS).all(session, after).map(toPolicyReload);
  }

  /** Replaces the counters each sensor reported for a session, at once. */
  putSensorStats(session: string, stats: readonly SensorStats[]): void {
    this.#assertOpen();
    const updatedAt = this.#iso();
    this.#transaction(() => {
      for (const s of stats) {
        this.#stmt(UPSERT_SENSOR_STATS).run(session, s.sensor, JSON.stringify(s), updatedAt);
      }
    });
  }

  /**
   * Marks live (`running` or `paused`) sessions of this host whose Sentry process is gone as
   * `crashed`, with the time of their last event as their end, and returns their ids. A reused
   * pid makes a dead Sentry look alive; `isAlive` may check more than the pid to rule that out.
   */
  reconcile(isAlive: (pid: number) => boolean, options: ReconcileOptions = {}): string[] {
    this.#assertOpen();
    const live = this.#stmt(SELECT_LIVE).all(this.#hostname);
    const crashed: string[] = [];
    const settled: string[] = [];
    this.#transaction(() => {
      for (const row of live) {
        const id = String(row["id"]);
        if (isAlive(Number(row["sentry_pid"]))) continue;
        const end = options.recorded?.(id) ?? null;
        if (end !== null) {
          this.updateSession(id, end);
          settled.push(id);
        } else if (Number(this.#stmt(MARK_CRASHED).run(id).changes) > 0) {
          crashed.push(id);
          settled.push(id);
        }
      }
    });
    for (const id of settled) options.settled?.(id);
    return crashed;
  }

  /**
   * Writes what is buffered, stops the timer and closes the database. Calling it again does
   * nothing.
   *
   * @throws {Error} when the last batch cannot be written; the database is closed anyway.
   */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    try {
      this.#write(true);
    } finally {
      this.#clearTimer();
      this.#statements.clear();
      this.#db.close();
    }
  }

  // --- Queries: they read what has been written, not the buffer ------------------------------

  /** The most recently started sessions first, with their counts. */
  listSessions(options: ListSessionsOptions = {}): SessionSummary[] {
    this.#assertOpen();
    this.#catchUpCounts();
    const limit = checkCount("limit", options.limit ?? 50, 0);
    if (options.host !== undefined) {
      return this.#stmt(
        `${SELECT_SUMMARY} WHERE s.host = ? OR s.origin_host = ? ${SESSION_ORDER} LIMIT ?`,
      ).all(options.host, options.host.toUpperCase(), limit).map(toSummary);
    }
    return this.#stmt(`${SELECT_SUMMARY} ${SESSION_ORDER} LIMIT ?`).all(limit).map(toSummary);
  }

  /**
   * The host names of the sessions, with each one's count of sessions and of live ones, the
   * host of the most recently started session first. One pass over the sessions table.
   */
  sessionHosts(): SessionHost[] {
    this.#assertOpen();
    return this.#stmt(
      `SELECT host, count(*) AS n, coalesce(sum(state IN ('running', 'paused')), 0) AS live,
        max(started_at) AS last FROM sessions GROUP BY host ORDER BY last DESC, host`,
    ).all().map((row) => ({
      host: String(row["host"]),
      sessions: Number(row["n"]),
      live: Number(row["live"]),
      lastStarted: String(row["last"]),
    }));
  }

  /**
   * Finds one session by full id, by a unique id prefix (case-insensitive), or `"last"` for the
   * most recently started.
   *
   * @throws {SessionRefError} when nothing matches or a prefix matches several sessions.
   */
  getSession(ref: string): SessionSummary {
    this.#assertOpen();
    this.#catchUpCounts();
    if (ref === "last") {
      const row = this.#stmt(`${SELECT_SUMMARY} ${SESSION_ORDER} LIMIT 1`).get();
      if (row === undefined) {
        throw new SessionRefError(
          ref,
          `No session matches "last": journal "${this.path}" is empty`,
        );
      }
      return toSummary(row);
    }
    const exact = this.#stmt(`${SELECT_SUMMARY} WHERE s.id = ?`).get(ref);
    if (exact !== undefined) return toSummary(exact);
    const where = "WHERE id LIKE ? ESCAPE '\\'";
    const pattern = likePrefix(ref);
    const count = ref === "" ? 0 : Number(
      this.#stmt(`SELECT count(*) AS n FROM sessions ${where}`).get(pattern)?.["n"] ?? 0,
    );
    if (count === 0) {
      throw new SessionRefError(ref, `No session matches "${ref}" in journal "${this.path}"`);
    }
    const ids = this.#stmt(
      `SELECT id FROM sessions ${where} ORDER BY started_at DESC, id DESC LIMIT 10`,
    ).all(pattern).map((row) => String(row["id"]));
    if (count > 1) {
      const listed = ids.map((id) => `"${id}"`).join(", ");
      const more = count > ids.length ? ` and ${count - ids.length} more` : "";
      throw new SessionRefError(
        ref,
        `Session prefix "${ref}" is ambiguous: it matches ${listed}${more}`,
        ids,
      );
    }
    const row = this.#stmt(`${SELECT_SUMMARY} WHERE s.id = ?`).get(ids[0] ?? "");
    if (row === undefined) throw new SessionRefError(ref, `No session matches "${ref}"`);
    return toSummary(row);
  }

  /**
   * Events matching a filter, by id (time) ascending or, with `order: "desc"`, descending. Page
   * with `after`: pass the last id of one page to get the next. With a session, a page takes a
   * few ms at a million events whatever the filters: the query walks the index that reads the
   * fewest rows, and a time range also bounds the ids (see the notes in `_sql.ts`). The
   * `attributed` and `text` filters are checked on each event walked, without an index.
   */
  queryEvents(filter: EventFilter = {}): AgentEvent[] {
    return this.#queryEvents(filter, undefined);
  }

  /**
   * One bounded step of a query of one session: the events matching `filter` among the next
   * `maxWalk` events of the session past `filter.after` (in the filter's order), and the cursor
   * to continue from. A text search reads every event it walks, so a step costs at most
   * `maxWalk` of them, however rare the matches: an API serving a live session never blocks its
   * event loop for long, and a client walks a big session in steps.
   */
  searchEvents(filter: EventFilter & { session: string }, maxWalk: number): SearchPage {
    this.#assertOpen();
    const walk = checkCount("maxWalk", maxWalk, 1);
    const limit = checkCount("limit", filter.limit ?? 1000, 0);
    const desc = filter.order === "desc";
    const params: SQLInputValue[] = [filter.session];
    if (filter.after !== undefined) params.push(filter.after);
    const edgeRow = this.#stmt(nthEventId({ desc, cursor: filter.after !== undefined }))
      .get(...params, walk - 1);
    const edge = edgeRow === undefined ? undefined : String(edgeRow["id"]);
    const events = this.#queryEvents(
      filter,
      edge === undefined ? undefined : { id: edge, inclusive: true },
    );
    const full = limit > 0 && events.length === limit;
    return { events, next: full ? events.at(-1)?.id ?? null : edge ?? null };
  }

  /** {@link queryEvents}, with the ids bounded at `edge` (inclusive) on the far side of the walk. */
  #queryEvents(filter: EventFilter, edge: IdBound | undefined): AgentEvent[] {
    this.#assertOpen();
    const limit = checkCount("limit", filter.limit ?? 1000, 0);
    const desc = filter.order === "desc";
    const kinds: readonly Kind[] | undefined = typeof filter.kind === "string"
      ? [filter.kind]
      : filter.kind;
    if (kinds !== undefined && kinds.length === 0) return [];
    const cursor: IdBound | undefined = filter.after === undefined
      ? undefined
      : { id: filter.after, inclusive: false };
    const conditions: EventConditions = {
      session: filter.session,
      kinds,
      minRisk: filter.minRisk,
      verdict: filter.verdict,
      since: filter.since,
      until: filter.until,
      attributed: filter.attributed,
      words: filter.text === undefined ? undefined : searchWords(filter.text),
      from: desc ? edge : cursor,
      to: desc ? cursor : edge,
    };
    let index: string | undefined;
    if (filter.session !== undefined) {
      if (filter.since !== undefined || filter.until !== undefined) {
        // The ts conditions stay: the id range only narrows what is walked.
        const skew = this.#skew(filter.session);
        const range = skew === undefined ? {} : timeIdRange(filter, skew);
        conditions.from = maxBound(conditions.from, range.from);
        conditions.to = minBound(conditions.to, range.to);
      }
      index = this.#eventIndex(conditions);
    }
    const where = eventWhere(conditions);
    return this.#stmt(selectEvents(where.sql, { index, desc })).all(...where.params, limit)
      .map(toEvent);
  }

  /** One event by its id (case-insensitive), or undefined: for `sentry explain`. */
  getEvent(id: string): AgentEvent | undefined {
    this.#assertOpen();
    const row = this.#stmt(selectEvents("id = ?", { desc: false })).get(id.toUpperCase(), 1);
    return row === undefined ? undefined : toEvent(row);
  }

  /**
   * The events stored after row `row`, in the order they were stored, at most `limit`, each with
   * its row: a live reader's cursor. Rows only grow (events are never deleted, and writers take
   * turns), so a reader that follows them sees every event once, however old its id: a batch
   * written late, or a host's backlog on a collector. `lastEventRow()` gives the starting point.
   */
  eventsAfterRow(row: number, limit: number): { row: number; event: AgentEvent }[] {
    this.#assertOpen();
    return this.#stmt("SELECT rowid AS r, event FROM events WHERE rowid > ? ORDER BY rowid LIMIT ?")
      .all(row, checkCount("limit", limit, 0))
      .map((r) => ({ row: Number(r["r"]), event: toEvent(r) }));
  }

  /** The row of the last event stored, 0 when there is none (see {@link eventsAfterRow}). */
  lastEventRow(): number {
    this.#assertOpen();
    return Number(this.#stmt("SELECT max(rowid) AS r FROM events").get()?.["r"] ?? 0);
  }

  /**
   * A session's smallest and largest skew between `ts` time and id time, in ms, as
   * `session_counts` keeps them; undefined when unknown (no events, one that is not canonical,
   * or events not yet counted).
   */
  #skew(session: string): { min: number; max: number } | undefined {
    if (!this.#catchUpCounts()) return undefined;
    const row = this.#stmt(SELECT_SKEW).get(session);
    const min = row?.["min_skew"];
    const max = row?.["max_skew"];
    if (typeof min !== "number" || typeof max !== "number") return undefined;
    return { min, max };
  }

  /**
   * The index a session's query walks: for a verdict or a single kind alone, its own index (it
   * holds the matches in id order); else the kind, verdict or risk index when a bounded count
   * finds fewer than `DRIVER_CAP` matches of its filter (the fewest wins); else the scan index.
   */
  #eventIndex(c: EventConditions): string {
    const filters = Number(c.kinds !== undefined) + Number(c.verdict !== undefined) +
      Number(c.minRisk !== undefined);
    if (filters === 1 && c.verdict !== undefined) return "events_session_verdict";
    if (filters === 1 && c.kinds?.length === 1) return "events_session_kind";
    const range = { from: c.from, to: c.to };
    if (filters === 0) return SCAN_INDEX;
    const candidates: [string, EventConditions][] = [];
    if (c.minRisk !== undefined) {
      candidates.push(["events_session_risk", {
        session: c.session,
        minRisk: c.minRisk,
        ...range,
      }]);
    }
    if (c.verdict !== undefined) {
      candidates.push(["events_session_verdict", {
        session: c.session,
        verdict: c.verdict,
        ...range,
      }]);
    }
    if (c.kinds !== undefined) {
      candidates.push(["events_session_kind", { session: c.session, kinds: c.kinds, ...range }]);
    }
    let best = SCAN_INDEX;
    let fewest = DRIVER_CAP;
    for (const [index, conditions] of candidates) {
      const where = eventWhere(conditions);
      const n = Number(
        this.#stmt(countUpToCap(index, where.sql)).get(...where.params)?.["n"] ?? DRIVER_CAP,
      );
      if (n < fewest) {
        best = index;
        fewest = n;
      }
    }
    return best;
  }

  /** How many events of each kind a session has, the most frequent first. */
  countsByKind(session: string): KindCount[] {
    this.#assertOpen();
    return this.#stmt(
      `SELECT kind, count(*) AS n, sum(verdict = 'deny') AS denied FROM events
       WHERE session = ? GROUP BY kind ORDER BY n DESC, kind`,
    ).all(session).map(toKindCount);
  }

  /** The responses taken in a session, in the order they were written. */
  responses(session: string): ResponseRecord[] {
    this.#assertOpen();
    return this.#stmt("SELECT * FROM responses WHERE session = ? ORDER BY id").all(session)
      .map(toResponse);
  }

  /**
   * The responses of every session whose `ts` is in a window (from `since`, before `until`;
   * either open when absent), in the order they were written, at most `limit` (default 1000).
   * For `sentry audit`, which looks across sessions; responses are few, so no index is kept.
   */
  responsesBetween(window: { since?: string; until?: string; limit?: number }): ResponseRecord[] {
    this.#assertOpen();
    return this.#stmt(
      "SELECT * FROM responses WHERE ts >= ? AND ts < ? ORDER BY id LIMIT ?",
    ).all(
      window.since ?? "",
      window.until ?? "\uffff",
      checkCount("limit", window.limit ?? 1000, 0),
    ).map(toResponse);
  }

  /** Each sensor's latest counters in a session, by sensor name. */
  sensorStats(session: string): SensorStatsRecord[] {
    this.#assertOpen();
    return this.#stmt("SELECT * FROM sensor_stats WHERE session = ? ORDER BY sensor").all(session)
      .map(toSensorStats);
  }

  /** A session's `n` riskiest events, the riskiest first and the earliest first among equals. */
  topRisks(session: string, n: number): AgentEvent[] {
    this.#assertOpen();
    return this.#stmt(
      "SELECT event FROM events WHERE session = ? ORDER BY risk DESC, id ASC LIMIT ?",
    ).all(session, checkCount("n", n, 0)).map(toEvent);
  }

  // --- Sync: the outbox this host uploads, and what a collector ingests ----------------------

  /**
   * The oldest queued events after `afterSeq` (0 for the start), at most `limit`, with each
   * event's JSON as stored. An item whose event is gone (its session was deleted) has
   * `json: null`: acknowledge it like the rest.
   */
  outboxPeek(limit: number, afterSeq = 0): OutboxItem[] {
    this.#assertOpen();
    return this.#stmt(SELECT_OUTBOX).all(afterSeq, checkCount("limit", limit, 0)).map((row) => ({
      seq: Number(row["seq"]),
      eventId: String(row["event_id"]),
      session: row["session"] === null ? null : String(row["session"]),
      json: row["event"] === null ? null : String(row["event"]),
    }));
  }

  /** Removes queued events up to and including `seq` (they reached the collector). */
  outboxAck(seq: number): number {
    this.#assertOpen();
    return Number(this.#stmt(DELETE_OUTBOX_THROUGH).run(seq).changes);
  }

  /**
   * Takes one event out of the outbox without uploading it (the collector refused it on its
   * own), and counts it as dropped. The event stays in this journal. Returns whether it was
   * queued.
   */
  outboxDiscard(eventId: string): boolean {
    this.#assertOpen();
    let removed = false;
    this.#transaction(() => {
      removed =
        Number(this.#stmt("DELETE FROM outbox WHERE event_id = ?").run(eventId).changes) > 0;
      if (!removed) return;
      const total = Number(this.#syncStateIn(DROPPED_KEY) ?? 0) + 1;
      this.#stmt(PUT_SYNC_STATE).run(DROPPED_KEY, String(total));
    });
    return removed;
  }

  /** How many events wait in the outbox, the oldest one's time, and how many were dropped. */
  outboxStats(): OutboxStats {
    this.#assertOpen();
    const row = this.#stmt(OUTBOX_STATS).get() ?? {};
    return {
      pending: Number(row["n"] ?? 0),
      oldestTs: row["oldest"] === null || row["oldest"] === undefined
        ? null
        : String(row["oldest"]),
      dropped: Number(this.syncState(DROPPED_KEY) ?? 0),
    };
  }

  /**
   * Keeps at most `maxEvents` queued events, dropping the oldest, and adds what it dropped to the
   * journal's dropped count (which is uploaded too). Returns how many it dropped now.
   */
  outboxTrim(maxEvents: number): number {
    this.#assertOpen();
    const keep = checkCount("maxEvents", maxEvents, 0);
    let dropped = 0;
    this.#transaction(() => {
      const cut = this.#stmt(OUTBOX_CUT).get(keep);
      if (cut === undefined) return;
      dropped = Number(this.#stmt(DELETE_OUTBOX_THROUGH).run(Number(cut["seq"])).changes);
      const total = Number(this.#syncStateIn(DROPPED_KEY) ?? 0) + dropped;
      this.#stmt(PUT_SYNC_STATE).run(DROPPED_KEY, String(total));
    });
    return dropped;
  }

  /** A named sync value (the uploader's cursor, lease, last outcome), or undefined. */
  syncState(key: string): string | undefined {
    this.#assertOpen();
    return this.#syncStateIn(key);
  }

  /** Sets a named sync value. */
  setSyncState(key: string, value: string): void {
    this.#assertOpen();
    this.#stmt(PUT_SYNC_STATE).run(key, value);
  }

  /**
   * Takes or renews the uploader's lease for `owner` until `ttlMs` from now, unless another
   * owner holds an unexpired one. Several `sentry` processes share a journal; the lease lets
   * one of them upload at a time. Returns whether `owner` holds the lease.
   */
  acquireLease(owner: string, ttlMs: number): boolean {
    this.#assertOpen();
    let held = false;
    this.#transaction(() => {
      const now = this.#now();
      const current = this.#syncStateIn(LEASE_KEY);
      if (current !== undefined) {
        const [holder, until] = [
          current.slice(0, current.lastIndexOf(" ")),
          current.slice(current.lastIndexOf(" ") + 1),
        ];
        if (holder !== owner && Number(until) > now) return;
      }
      this.#stmt(PUT_SYNC_STATE).run(LEASE_KEY, `${owner} ${now + ttlMs}`);
      held = true;
    });
    return held;
  }

  /** Gives the lease up if `owner` holds it. */
  releaseLease(owner: string): void {
    this.#assertOpen();
    this.#transaction(() => {
      const current = this.#syncStateIn(LEASE_KEY);
      if (current !== undefined && current.slice(0, current.lastIndexOf(" ")) === owner) {
        this.#stmt("DELETE FROM sync_state WHERE key = ?").run(LEASE_KEY);
      }
    });
  }

  /**
   * The sessions to upload with a batch: those named in `ids` (the batch's events need them),
   * then up to `limit` others changed since they were last uploaded. Each comes with its
   * revision, for {@link markSessionsSynced}.
   */
  sessionsToSync(ids: Iterable<string>, limit: number): SyncSession[] {
    this.#assertOpen();
    const out = new Map<string, SyncSession>();
    const one = this.#stmt("SELECT * FROM sessions WHERE id = ?");
    for (const id of ids) {
      if (out.has(id)) continue;
      const row = one.get(id);
      if (row !== undefined) out.set(id, { record: toSession(row), rev: Number(row["rev"]) });
    }
    for (const row of this.#stmt(SELECT_UNSYNCED_SESSIONS).all(checkCount("limit", limit, 0))) {
      const id = String(row["id"]);
      if (!out.has(id)) out.set(id, { record: toSession(row), rev: Number(row["rev"]) });
    }
    return [...out.values()];
  }

  /** Records that these session revisions reached the collector. */
  markSessionsSynced(sessions: readonly { id: string; rev: number }[]): void {
    this.#assertOpen();
    this.#transaction(() => {
      const mark = this.#stmt(MARK_SESSION_SYNCED);
      for (const s of sessions) mark.run(s.rev, s.id);
    });
  }

  // --- The seam for a store that shares the file: the collector's SQLite store ---------------

  /**
   * Runs `body` in one write transaction (`BEGIN IMMEDIATE`, waiting up to the busy timeout):
   * everything it does is stored, or nothing, when it throws. Events it inserts through
   * {@link JournalWrite.insertEvent} are counted in `session_counts` in the same transaction, as
   * the journal's own writes are. For the collector's SQLite store
   * (src/collector/sqlite_store.ts), which keeps its ingest and host records in this file.
   */
  write<T>(body: (tx: JournalWrite) => T): T {
    this.#assertOpen();
    let result: T | undefined;
    this.#transaction(() => {
      const moveMark = this.#counting && this.#countUncounted();
      const counts = new CountBatch();
      const insert = this.#stmt(INSERT_EVENT);
      result = body({
        statement: (sql) => this.#stmt(sql),
        insertEvent: (event) => {
          if (Number(insert.run(...eventRow(event)).changes) === 0) return false;
          counts.add(event);
          return true;
        },
      });
      if (this.#counting) this.#saveCounts(counts, moveMark);
    });
    return result as T;
  }

  /**
   * A prepared statement on the journal's database, cached for its lifetime, for reads outside
   * a transaction by a store that shares the file (see {@link write}).
   */
  statement(sql: string): StatementSync {
    this.#assertOpen();
    return this.#stmt(sql);
  }

  /** Write counters and batch latencies, for `/metrics`. Works after close too. */
  metrics(): JournalMetrics {
    const n = Math.min(this.#metrics.batches, LATENCY_WINDOW);
    const sorted = this.#latencies.slice(0, n).sort();
    return {
      ...this.#metrics,
      pending: this.#pending(),
      p50BatchMs: percentile(sorted, 0.5),
      p99BatchMs: percentile(sorted, 0.99),
      maxBatchMs: sorted.at(-1) ?? 0,
    };
  }

  /**
   * Runs SQLite's `PRAGMA integrity_check` (reporting at most `maxProblems` findings) and reads
   * the schema version, for `sentry doctor`. An empty `problems` means the database is sound.
   */
  integrityCheck(maxProblems = 10): { problems: string[]; schemaVersion: number } {
    this.#assertOpen();
    const limit = checkCount("maxProblems", maxProblems, 1);
    const rows = this.#db.prepare(`PRAGMA integrity_check(${limit})`).all();
    const problems = rows.map((row) => String(Object.values(row)[0])).filter((r) => r !== "ok");
    const version = this.#db.prepare("PRAGMA user_version").get();
    return { problems, schemaVersion: Number(version?.user_version ?? 0) };
  }

  // --- Internals -----------------------------------------------------------------------------

  #assertOpen(): void {
    if (this.#closed) throw new Error(`Journal "${this.path}" is closed`);
  }

  #iso(): string {
    return new Date(this.#now()).toISOString();
  }

  #pending(): number {
    return this.#events.length + this.#responses.length;
  }

  #stmt(sql: string): StatementSync {
    let statement = this.#statements.get(sql);
    if (statement === undefined) {
      statement = this.#db.prepare(sql);
      this.#statements.set(sql, statement);
    }
    return statement;
  }

  #syncStateIn(key: string): string | undefined {
    const row = this.#stmt(GET_SYNC_STATE).get(key);
    return row === undefined ? undefined : String(row["value"]);
  }

  #transaction(body: () => void): void {
    this.#db.exec("BEGIN IMMEDIATE");
    try {
      body();
      this.#db.exec("COMMIT");
    } catch (error) {
      try {
        if (this.#db.isTransaction) this.#db.exec("ROLLBACK");
      } catch {
        // The original error says more than a failed rollback.
      }
      throw error;
    }
  }

  /**
   * Counts, inside a write transaction, the events past the mark of `session_counts`: rows a
   * writer that does not count inserted (a Sentry from before migration 4 still running on
   * this journal). Returns whether the mark must move.
   */
  #countUncounted(): boolean {
    const state = this.#stmt(COUNTS_STATE).get();
    const top = Number(state?.["top"] ?? 0);
    const mark = Number(state?.["mark"] ?? 0);
    if (top > mark) this.#stmt(COUNT_EVENTS_AFTER).run(mark);
    // Below the mark only after a delete of the newest events: nothing to count.
    return top !== mark;
  }

  /** Writes a batch's counts, one upsert per session, and moves the mark past its events. */
  #saveCounts(counts: CountBatch, moveMark: boolean): void {
    const upsert = this.#stmt(UPSERT_COUNTS);
    const rows = counts.rows();
    for (const row of rows) upsert.run(...row);
    if (rows.length > 0 || moveMark) this.#stmt(MOVE_COUNTS_MARK).run();
  }

  /**
   * Before a read of counts: counts the events a writer left uncounted, which only happens
   * while a Sentry from before migration 4 writes to this journal. Returns whether the counts
   * are complete; when the catch-up fails (the lock stays busy) they stay behind until the
   * next write, and a time filter does without its id range.
   */
  #catchUpCounts(): boolean {
    if (!this.#counting) return true;
    const state = this.#stmt(COUNTS_STATE).get();
    if (Number(state?.["top"] ?? 0) <= Number(state?.["mark"] ?? 0)) return true;
    try {
      this.#transaction(() => {
        if (this.#countUncounted()) this.#stmt(MOVE_COUNTS_MARK).run();
      });
      return true;
    } catch {
      return false;
    }
  }

  /** After a push of an item `ageMs` old: writes now, or makes sure a write is due in time. */
  #afterPush(ageMs = 0): void {
    if (this.#pending() >= this.#batchMax && !this.#failing) {
      this.#write(false);
      return;
    }
    if (this.#failing) {
      if (this.#timer === undefined) this.#arm(this.#batchMs);
      return;
    }
    // Never sooner than a fifth of the window after the last write: under a backlog every event
    // is already old, and writing at each turn would cost the batching the backlog needs.
    const due = Math.max(
      this.#clock() + Math.max(0, this.#batchMs - ageMs),
      this.#lastWrite + this.#batchMs / 5,
    );
    if (this.#timer === undefined || due < this.#due) this.#arm(Math.max(0, due - this.#clock()));
  }

  /** Schedules a write of the buffer; the timer keeps the process alive until it fires. */
  #arm(ms: number): void {
    this.#clearTimer();
    this.#due = this.#clock() + ms;
    this.#timer = setTimeout(() => {
      this.#timer = undefined;
      if (!this.#closed) this.#write(false);
    }, ms);
  }

  #clearTimer(): void {
    if (this.#timer !== undefined) {
      clearTimeout(this.#timer);
      this.#timer = undefined;
    }
  }

  /**
   * Writes the buffer in one transaction. A row the database refuses is dropped and counted; a
   * failure of the transaction keeps the whole buffer for a retry by the timer.
   */
  #write(throwOnError: boolean): void {
    this.#clearTimer();
    const events = this.#events;
    const responses = this.#responses;
    if (events.length === 0 && responses.length === 0) return;
    const start = this.#clock();
    let eventsWritten = 0;
    let responsesWritten = 0;
    let rejected = 0;
    const reject = (error: unknown): void => {
      if (!isRowError(error)) throw error;
      rejected++;
      this.#metrics.lastError = message(error);
    };
    try {
      this.#transaction(() => {
        // Counted here, in the events' transaction: one upsert per session, not per event.
        const counting = this.#counting && events.length > 0;
        const moveMark = counting && this.#countUncounted();
        const counts = new CountBatch();
        const insertEvent = this.#stmt(INSERT_EVENT);
        const insertOutbox = this.#outbox ? this.#stmt(INSERT_OUTBOX) : undefined;
        for (const e of events) {
          try {
            const result = insertEvent.run(...eventRow(e));
            // Same transaction as the event: an event is journaled, queued and counted, or
            // none of these. An ignored duplicate changes nothing.
            if (Number(result.changes) > 0) {
              counts.add(e);
              eventsWritten++;
              insertOutbox?.run(e.id);
            }
          } catch (error) {
            reject(error);
          }
        }
        if (counting) this.#saveCounts(counts, moveMark);
        const insertResponse = this.#stmt(INSERT_RESPONSE);
        for (const r of responses) {
          try {
            insertResponse.run(
              r.session,
              r.eventId ?? null,
              r.ts ?? this.#iso(),
              r.action,
              r.outcome,
              JSON.stringify(r.detail ?? {}),
            );
            responsesWritten++;
          } catch (error) {
            reject(error);
          }
        }
      });
    } catch (cause) {
      this.#failing = true;
      this.#metrics.writeErrors++;
      this.#metrics.lastError = message(cause);
      if (!this.#closed) this.#arm(Math.max(this.#batchMs, 10));
      if (!throwOnError) return;
      throw new Error(
        `Cannot write ${events.length + responses.length} buffered items to journal ` +
          `"${this.path}": ${message(cause)}`,
        { cause },
      );
    }
    // Only now: a failed transaction leaves the buffer in place for the retry.
    this.#events = [];
    this.#responses = [];
    this.#failing = false;
    const elapsed = this.#clock() - start;
    this.#lastWrite = start + elapsed;
    const m = this.#metrics;
    this.#latencies[m.batches % LATENCY_WINDOW] = elapsed;
    m.batches++;
    m.eventsWritten += eventsWritten;
    m.responsesWritten += responsesWritten;
    m.rejected += rejected;
    m.lastBatchMs = elapsed;
  }
}

/**
 * Creates the database file readable and writable by its owner only (0600) before SQLite opens
 * it; SQLite gives its -wal and -shm files the same mode. An existing file is narrowed too.
 */
function createPrivateFile(path: string): void {
  try {
    Deno.openSync(path, { create: true, write: true, mode: 0o600 }).close();
    if (Deno.build.os !== "windows" && ((Deno.statSync(path).mode ?? 0) & 0o077) !== 0) {
      Deno.chmodSync(path, 0o600);
    }
  } catch (cause) {
    throw new Error(`Cannot open journal "${path}": ${message(cause)}`, { cause });
  }
}

/**
 * Opens the journal at `path` (usually `join(dataDir(env), JOURNAL_FILE)`), creating it with
 * mode 0600 and migrating its schema as needed. Use `":memory:"` for a throwaway journal.
 *
 * @throws {JournalVersionError} when the journal was written by a newer Sentry.
 * @throws {Error} when the file cannot be opened or is not a journal.
 */
export function openJournal(path: string, options: JournalOptions = {}): Journal {
  return new Journal(path, options);
}

/** Whether an error is SQLite's SQLITE_BUSY (or one of its extended codes). */
function isBusy(error: unknown): boolean {
  const code = (error as { errcode?: unknown }).errcode;
  if (typeof code === "number") return (code & 0xff) === 5;
  return /database is locked/.test(message(error));
}

/** Blocks the thread for `ms` (the journal's constructor is synchronous). */
function sleepSync(ms: number): void {
  Atomics.wait(new Int32Array(new SharedArrayBuffer(4)), 0, 0, ms);
}
