/**
 * The journal's schema, as numbered migrations. The database's `PRAGMA user_version` is the
 * number of the last migration applied. Never edit a migration that has shipped: add one.
 *
 * @module
 */

import type { DatabaseSync } from "node:sqlite";

/** One schema step. */
export interface Migration {
  /** 1 for the first migration, then consecutive. */
  version: number;
  /** What it does, for error messages and reviewers. */
  name: string;
  /** The statements, run in one transaction. */
  sql: string;
}

/**
 * The SQL of an event's clock skew, in ms: the time of its `ts` minus the time in its ULID id,
 * or NULL when either is not canonical (`ts` exactly as `toISOString()` writes it, a real date;
 * the id's time part in uppercase Crockford base32, with no character below "0" after it). For
 * canonical values string order is time order, so a session's smallest and largest skew turn
 * a time range into an exact id range. `row` prefixes the columns (`NEW.` in a trigger). Part
 * of migration 3: once that ships, never change it.
 */
function skewSql(row: string): string {
  const digit = (i: number, weight: string) =>
    `(instr('0123456789ABCDEFGHJKMNPQRSTVWXYZ', substr(${row}id, ${i}, 1)) - 1)${weight}`;
  const symbol = "[0-9A-HJKMNP-TV-Z]";
  return `(CASE WHEN strftime('%Y-%m-%dT%H:%M:%fZ', ${row}ts) = ${row}ts
    AND substr(${row}id, 1, 10) GLOB '[0-7]${symbol.repeat(9)}'
    AND substr(${row}id, 11) >= '0000000000000000'
    THEN CAST(round((julianday(${row}ts) - 2440587.5) * 86400000) AS INTEGER)
      - ${digit(1, " * 35184372088832")} - ${digit(2, " * 1099511627776")}
      - ${digit(3, " * 34359738368")} - ${digit(4, " * 1073741824")}
      - ${digit(5, " * 33554432")} - ${digit(6, " * 1048576")} - ${digit(7, " * 32768")}
      - ${digit(8, " * 1024")} - ${digit(9, " * 32")} - ${digit(10, "")}
    END)`;
}

/** Counts one more event of NEW's session: the body of the insert and update triggers. */
const COUNT_NEW =
  `INSERT INTO session_counts (session, events, denied, max_risk, min_skew, max_skew)
          SELECT NEW.session, 1, NEW.verdict = 'deny', NEW.risk, skew, skew
          FROM (SELECT ${skewSql("NEW.")} AS skew) WHERE true
          ON CONFLICT (session) DO UPDATE SET events = events + 1,
            denied = denied + excluded.denied, max_risk = max(max_risk, excluded.max_risk),
            min_skew = min(min_skew, excluded.min_skew), max_skew = max(max_skew, excluded.max_skew)`;

/**
 * A `SELECT` of `session_counts` rows (session, events, denied, max_risk, min_skew, max_skew)
 * for the events `where` selects, by session; a session's skews are NULL when one of its events'
 * skew is NULL, as the trigger of migration 3 leaves them. Part of migration 4, which
 * recounts every journal with it, and used by the journal to count events that a writer left
 * uncounted: once migration 4 ships, never change it.
 */
export function countEventsSql(where: string): string {
  return `SELECT session, count(*), sum(verdict = 'deny'), max(risk),
      CASE WHEN count(skew) = count(*) THEN min(skew) END,
      CASE WHEN count(skew) = count(*) THEN max(skew) END
    FROM (SELECT session, verdict, risk, ${skewSql("")} AS skew FROM events WHERE ${where})
    GROUP BY session`;
}

/**
 * Like {@link countEventsSql}, but an unattributed event (`pid IS NULL`: a file event no
 * evidence ties to the agent) counts as an event, never as a denial nor toward the session's
 * risk: the counts of migration 6, which the journal's writers keep (see `_counts.ts`). Once
 * migration 6 ships, never change it.
 */
export function countAttributedEventsSql(where: string): string {
  return `SELECT session, count(*), coalesce(sum(verdict = 'deny' AND pid IS NOT NULL), 0),
      coalesce(max(CASE WHEN pid IS NOT NULL THEN risk END), 0),
      CASE WHEN count(skew) = count(*) THEN min(skew) END,
      CASE WHEN count(skew) = count(*) THEN max(skew) END
    FROM (SELECT session, verdict, risk, pid, ${skewSql("")} AS skew FROM events WHERE ${where})
    GROUP BY session`;
}

/** Counts NEW as {@link countAttributedEventsSql} does: the body of migration 6's update trigger. */
const COUNT_NEW_ATTRIBUTED =
  `INSERT INTO session_counts (session, events, denied, max_risk, min_skew, max_skew)
          SELECT NEW.session, 1, NEW.verdict = 'deny' AND NEW.pid IS NOT NULL,
            CASE WHEN NEW.pid IS NULL THEN 0 ELSE NEW.risk END, skew, skew
          FROM (SELECT ${skewSql("NEW.")} AS skew) WHERE true
          ON CONFLICT (session) DO UPDATE SET events = events + 1,
            denied = denied + excluded.denied, max_risk = max(max_risk, excluded.max_risk),
            min_skew = min(min_skew, excluded.min_skew), max_skew = max(max_skew, excluded.max_skew)`;

/** Every migration, in order. The last one's version is the schema this code reads and writes. */
export const MIGRATIONS: readonly Migration[] = [
  {
    version: 1,
    name: "sessions, events, responses and sensor stats",
    sql: `
      CREATE TABLE sessions (
        id          TEXT PRIMARY KEY,
        agent       TEXT NOT NULL,
        command     TEXT NOT NULL,            -- JSON array of strings
        pid         INTEGER,                  -- the agent's root process
        kind        TEXT NOT NULL CHECK (kind IN ('run', 'attach')),
        policy      TEXT NOT NULL,
        mode        TEXT NOT NULL,
        workspace   TEXT NOT NULL,
        host        TEXT NOT NULL,
        sentry_pid  INTEGER NOT NULL,
        started_at  TEXT NOT NULL,
        ended_at    TEXT,
        state       TEXT NOT NULL CHECK (
          state IN ('running', 'paused', 'ended', 'killed', 'detached', 'crashed')
        ),
        exit_code   INTEGER,
        note        TEXT
      );
      CREATE INDEX sessions_started ON sessions (started_at);
      CREATE INDEX sessions_state ON sessions (state);

      CREATE TABLE events (
        id        TEXT PRIMARY KEY,           -- the event's ULID
        session   TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        ts        TEXT NOT NULL,
        kind      TEXT NOT NULL,
        pid       INTEGER,
        target    TEXT NOT NULL,
        verdict   TEXT NOT NULL,
        risk      INTEGER NOT NULL,
        rule      TEXT NOT NULL,
        response  TEXT NOT NULL,
        sensor    TEXT NOT NULL,
        event     TEXT NOT NULL               -- the whole AgentEvent as JSON
      );
      CREATE INDEX events_session_id ON events (session, id);
      CREATE INDEX events_session_kind ON events (session, kind, id);
      CREATE INDEX events_session_risk ON events (session, risk);
      CREATE INDEX events_session_verdict ON events (session, verdict, id);

      CREATE TABLE responses (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        session   TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        event_id  TEXT,                       -- no foreign key: a response outlives a lost event
        ts        TEXT NOT NULL,
        action    TEXT NOT NULL CHECK (
          action IN ('alert', 'pause', 'resume', 'kill', 'rollback', 'block', 'detach')
        ),
        outcome   TEXT NOT NULL CHECK (outcome IN ('ok', 'failed', 'partial')),
        detail    TEXT NOT NULL               -- JSON object
      );
      CREATE INDEX responses_session ON responses (session, id);

      CREATE TABLE sensor_stats (
        session     TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        sensor      TEXT NOT NULL,
        stats       TEXT NOT NULL,            -- SensorStats as JSON
        updated_at  TEXT NOT NULL,
        PRIMARY KEY (session, sensor)
      ) WITHOUT ROWID;
    `,
  },
  {
    version: 2,
    name: "sync outbox, sync state and per-key sessions for the collector",
    sql: `
      -- One row per event still to upload, written in the event's own transaction.
      CREATE TABLE outbox (
        seq       INTEGER PRIMARY KEY AUTOINCREMENT,
        event_id  TEXT NOT NULL
      );
      -- Small named values: dropped counts, the uploader's lease and its last outcome.
      CREATE TABLE sync_state (
        key    TEXT PRIMARY KEY,
        value  TEXT NOT NULL
      ) WITHOUT ROWID;
      -- Which API key and host id uploaded a session (collector journals only; NULL locally).
      ALTER TABLE sessions ADD COLUMN origin_key TEXT;
      ALTER TABLE sessions ADD COLUMN origin_host TEXT;
      -- Every change to a session bumps rev; the uploader sends sessions whose rev it has not sent.
      ALTER TABLE sessions ADD COLUMN rev INTEGER NOT NULL DEFAULT 1;
      ALTER TABLE sessions ADD COLUMN synced_rev INTEGER NOT NULL DEFAULT 0;
      CREATE INDEX sessions_host ON sessions (host, started_at);
    `,
  },
  {
    version: 3,
    name: "indexes for event queries at a million events, and session counts kept by triggers",
    sql: `
      -- Filters on kind, verdict, risk and time are checked in this index, in id order, without
      -- reading the table rows (the JSON) of events that do not match. It replaces (session, id).
      DROP INDEX events_session_id;
      CREATE INDEX events_session_id ON events (session, id, ts, kind, verdict, risk);
      -- With the id, a risk filter's matches are cut to an id range and sorted in the index.
      DROP INDEX events_session_risk;
      CREATE INDEX events_session_risk ON events (session, risk, id);

      -- A session's counts, kept by triggers, so that a summary does not count a million rows;
      -- and the range of its events' skews (see skewSql), NULL once one is not canonical, which
      -- turns since/until into an id range. A delete leaves the skews wider than need be: safe.
      CREATE TABLE session_counts (
        session   TEXT PRIMARY KEY REFERENCES sessions (id) ON DELETE CASCADE,
        events    INTEGER NOT NULL,
        denied    INTEGER NOT NULL,
        max_risk  INTEGER NOT NULL,
        min_skew  INTEGER,
        max_skew  INTEGER
      ) WITHOUT ROWID;
      INSERT INTO session_counts (session, events, denied, max_risk, min_skew, max_skew)
        SELECT session, count(*), sum(verdict = 'deny'), max(risk),
          CASE WHEN count(skew) = count(*) THEN min(skew) END,
          CASE WHEN count(skew) = count(*) THEN max(skew) END
        FROM (SELECT session, verdict, risk, ${skewSql("")} AS skew FROM events)
        GROUP BY session;
      CREATE TRIGGER events_count_insert AFTER INSERT ON events BEGIN
        ${COUNT_NEW};
      END;
      CREATE TRIGGER events_count_delete AFTER DELETE ON events BEGIN
        UPDATE session_counts SET events = events - 1, denied = denied - (OLD.verdict = 'deny'),
          max_risk = (SELECT coalesce(max(risk), 0) FROM events WHERE session = OLD.session)
          WHERE session = OLD.session;
      END;
      CREATE TRIGGER events_count_update AFTER UPDATE OF id, session, ts, verdict, risk ON events
      BEGIN
        UPDATE session_counts SET events = events - 1, denied = denied - (OLD.verdict = 'deny'),
          max_risk = (SELECT coalesce(max(risk), 0) FROM events WHERE session = OLD.session)
          WHERE session = OLD.session;
        ${COUNT_NEW};
      END;
    `,
  },
  {
    version: 4,
    name: "session counts added up by the writers, one upsert per session and batch",
    sql: `
      -- The insert trigger counted each event in its own statement (and made every insert keep a
      -- statement journal): batched writes fell from about 77,000 to 45,000 events/s. The
      -- journal now adds up a batch's inserted events per session and upserts each session's
      -- counts once, in the batch's transaction. The delete and update triggers stay: they
      -- never fire on an insert, and keep the counts right if events are ever changed.
      DROP TRIGGER events_count_insert;

      -- The largest events rowid whose event session_counts includes. A writer counts its own
      -- events and moves the mark past them in the same transaction; rows beyond the mark were
      -- inserted by a writer that does not count (a Sentry from before this migration that is
      -- still running, a hand-written INSERT), and the next writer or reader counts them.
      CREATE TABLE session_counts_mark (
        id       INTEGER PRIMARY KEY CHECK (id = 1),
        through  INTEGER NOT NULL
      );

      -- The counts are exact here: migration 3 computed them and its triggers kept them. No
      -- recount, so the upgrade holds the write lock for milliseconds, not seconds at 1M events.
      INSERT INTO session_counts_mark (id, through)
        SELECT 1, coalesce(max(rowid), 0) FROM events;
    `,
  },
  {
    version: 5,
    name: "the sensing tier of each session",
    sql: `
      ALTER TABLE sessions ADD COLUMN tier TEXT;
    `,
  },
  {
    version: 6,
    name: "unattributed events count neither as denials nor toward a session's risk",
    sql: `
      -- A file event no evidence ties to the agent (pid NULL: another program may have made it)
      -- is journaled and judged, but must not make the session look worse than the agent did.
      DROP TRIGGER events_count_delete;
      DROP TRIGGER events_count_update;
      CREATE TRIGGER events_count_delete AFTER DELETE ON events BEGIN
        UPDATE session_counts SET events = events - 1,
          denied = denied - (OLD.verdict = 'deny' AND OLD.pid IS NOT NULL),
          max_risk = (SELECT coalesce(max(risk), 0) FROM events
            WHERE session = OLD.session AND pid IS NOT NULL)
          WHERE session = OLD.session;
      END;
      CREATE TRIGGER events_count_update AFTER UPDATE OF id, session, ts, verdict, risk, pid
        ON events
      BEGIN
        UPDATE session_counts SET events = events - 1,
          denied = denied - (OLD.verdict = 'deny' AND OLD.pid IS NOT NULL),
          max_risk = (SELECT coalesce(max(risk), 0) FROM events
            WHERE session = OLD.session AND pid IS NOT NULL)
          WHERE session = OLD.session;
        ${COUNT_NEW_ATTRIBUTED};
      END;
      -- Recount with the new rule: only sessions with unattributed events change.
      DELETE FROM session_counts WHERE session IN (SELECT DISTINCT session FROM events
        WHERE pid IS NULL);
      INSERT INTO session_counts (session, events, denied, max_risk, min_skew, max_skew)
        ${
      countAttributedEventsSql(
        "session IN (SELECT DISTINCT session FROM events WHERE pid IS NULL) AND rowid <= (SELECT through FROM session_counts_mark)",
      )
    };
    `,
  },
  {
    version: 7,
    name: "policy reloads: a live session's policy changes, with the old and new policy hashes",
    sql: `
      CREATE TABLE policy_reloads (
        id        INTEGER PRIMARY KEY AUTOINCREMENT,
        session   TEXT NOT NULL REFERENCES sessions (id) ON DELETE CASCADE,
        ts        TEXT NOT NULL,
        outcome   TEXT NOT NULL CHECK (outcome IN ('applied', 'refused')),
        policy    TEXT NOT NULL,              -- the policy asked for: a template name or a file
        old_hash  TEXT NOT NULL,              -- sha256 of the resolved policy in force before
        new_hash  TEXT,                       -- of the one asked for; NULL when it did not load
        detail    TEXT NOT NULL               -- JSON: who asked, the reason, what stays as started
      );
      CREATE INDEX policy_reloads_session ON policy_reloads (session, id);
    `,
  },
];

/** The schema version this code reads and writes. */
export const SCHEMA_VERSION: number = MIGRATIONS.at(-1)?.version ?? 0;

/** A journal written by a newer Sentry than this one, which this code must not touch. */
export class JournalVersionError extends Error {
  /** The journal's file. */
  readonly path: string;
  /** The journal's schema version. */
  readonly version: number;
  /** The newest version this code knows. */
  readonly supported: number;

  /** Builds the error for a journal at `path` with schema `version`. */
  constructor(path: string, version: number, supported: number = SCHEMA_VERSION) {
    super(
      `Cannot open journal "${path}": its schema version ${version} is newer than the ` +
        `version ${supported} this Sentry knows; upgrade Sentry`,
    );
    this.name = "JournalVersionError";
    this.path = path;
    this.version = version;
    this.supported = supported;
  }
}

/** Options for {@link migrate}. */
export interface MigrateOptions {
  /** The journal's file, for error messages. */
  path: string;
  /** The migrations to apply; defaults to {@link MIGRATIONS}. Tests pass their own. */
  migrations?: readonly Migration[];
}

function userVersion(db: DatabaseSync): number {
  const row = db.prepare("PRAGMA user_version").get();
  return Number(row?.["user_version"] ?? 0);
}

/**
 * Brings a database up to the newest schema and returns the versions it applied. Each
 * migration runs in its own `BEGIN IMMEDIATE` transaction that re-reads `user_version` first,
 * so two processes opening a new journal at once apply each step exactly once.
 *
 * @throws {JournalVersionError} when the database is newer than the code.
 */
export function migrate(db: DatabaseSync, options: MigrateOptions): number[] {
  const migrations = options.migrations ?? MIGRATIONS;
  const latest = migrations.at(-1)?.version ?? 0;
  const applied: number[] = [];
  const current = userVersion(db);
  if (current > latest) throw new JournalVersionError(options.path, current, latest);
  for (const migration of migrations) {
    if (migration.version <= current) continue;
    db.exec("BEGIN IMMEDIATE");
    try {
      const now = userVersion(db);
      if (now > latest) throw new JournalVersionError(options.path, now, latest);
      if (now < migration.version) {
        db.exec(migration.sql);
        // PRAGMA takes no bound parameters; the version is an integer from this file.
        db.exec(`PRAGMA user_version = ${Math.trunc(migration.version)}`);
        applied.push(migration.version);
      }
      db.exec("COMMIT");
    } catch (error) {
      db.exec("ROLLBACK");
      throw error;
    }
  }
  return applied;
}
