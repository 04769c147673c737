/**
 * The PostgreSQL store's schema, as numbered migrations recorded in the database itself
 * (`sentry_schema`), applied in order at open under an advisory lock, so several `sentry
 * server` processes starting at once apply each exactly once.
 *
 * Events are range-partitioned by day on `at`, the time of their id (a ULID): an id always
 * falls in the same partition, so the primary key `(at, id)` keeps an event once, as the
 * SQLite journal's `INSERT OR IGNORE` does, and retention drops whole partitions. Day
 * partitions are made only inside a window of days (from `events_window.day_from` to a few
 * days ahead); an older event lands in the DEFAULT partition, whose CHECK constraint
 * `at < day_from` lets PostgreSQL make a day partition without scanning it (see `pg_store.ts`).
 *
 * @module
 */

/** One migration: its number, what it does, and its SQL (run in one transaction). */
export interface PgMigration {
  version: number;
  name: string;
  sql: string;
}

/** The migrations, oldest first. Append only: never edit one that has shipped. */
export const PG_MIGRATIONS: readonly PgMigration[] = [
  {
    version: 1,
    name: "collector tables, day-partitioned events",
    sql: `
CREATE TABLE collector_keys (
  id text PRIMARY KEY,
  name text NOT NULL,
  created_at text NOT NULL,
  revoked_at text,
  sha256 text NOT NULL UNIQUE
);
CREATE UNIQUE INDEX collector_keys_active_name ON collector_keys (name) WHERE revoked_at IS NULL;

CREATE TABLE collector_hosts (
  key_id text NOT NULL,
  host_id text NOT NULL,
  name text NOT NULL,
  key_name text NOT NULL,
  first_seen text NOT NULL,
  last_seen text NOT NULL,
  batches bigint NOT NULL,
  events bigint NOT NULL,
  duplicates bigint NOT NULL,
  dropped bigint NOT NULL,
  PRIMARY KEY (key_id, host_id)
);
CREATE INDEX collector_hosts_host ON collector_hosts (host_id, first_seen);

CREATE TABLE collector_host_bindings (
  host_id text PRIMARY KEY,
  key_id text NOT NULL
);

CREATE TABLE sessions (
  id text PRIMARY KEY,
  agent text NOT NULL,
  command text NOT NULL,
  pid integer,
  kind text NOT NULL,
  policy text NOT NULL,
  mode text NOT NULL,
  workspace text NOT NULL,
  host text NOT NULL,
  sentry_pid integer NOT NULL,
  started_at text NOT NULL,
  ended_at text,
  state text NOT NULL,
  exit_code integer,
  note text,
  origin_key text NOT NULL,
  origin_host text NOT NULL,
  tier text,
  rev integer NOT NULL DEFAULT 0
);
CREATE INDEX sessions_started ON sessions (started_at DESC, id DESC);
CREATE INDEX sessions_host ON sessions (host);
CREATE INDEX sessions_origin ON sessions (origin_host, origin_key);

-- Per session and day, so that dropping a day's partition drops its counts with it.
CREATE TABLE session_day_counts (
  session text NOT NULL,
  day date NOT NULL,
  events bigint NOT NULL,
  denied bigint NOT NULL,
  max_risk integer NOT NULL,
  -- The smallest and largest skew (ts time minus id time, ms); NULL once a ts is not canonical.
  min_skew bigint,
  max_skew bigint,
  PRIMARY KEY (session, day)
);
CREATE INDEX session_day_counts_day ON session_day_counts (day);

CREATE TABLE events (
  id text NOT NULL,
  at timestamptz NOT NULL,
  session text NOT NULL,
  ts text NOT NULL,
  kind text NOT NULL,
  verdict text NOT NULL,
  risk smallint NOT NULL,
  event text NOT NULL,
  -- (at, id), not (id, at): an index in id order over every session would tempt the planner to
  -- walk a day in id order filtering one session, where (session, id) finds it at once.
  PRIMARY KEY (at, id)
) PARTITION BY RANGE (at);
CREATE INDEX events_session_id ON events (session, id);
CREATE INDEX events_session_kind ON events (session, kind, id);
CREATE INDEX events_session_verdict ON events (session, verdict, id);
-- A high min_risk matches few events: found here, then sorted, rather than walked in id order.
CREATE INDEX events_session_risk ON events (session, risk, id);
`,
  },
  {
    version: 2,
    name: "a default partition for events older than the window of day partitions",
    sql: `
-- Hosts choose their events' ids, and so their days: an unbounded number of day partitions
-- would make every unbounded query and every retention slow, or fail for lack of locks. Day
-- partitions exist from day_from on; an older event without a partition of its day lands here.
CREATE TABLE events_default PARTITION OF events DEFAULT;
-- Proves to PostgreSQL that a new day partition (always of day_from or later) holds none of
-- these rows, so making one never scans this table. The store moves it with day_from.
ALTER TABLE events_default ADD CONSTRAINT events_default_below CHECK (at < '-infinity');
CREATE TABLE events_window (
  one boolean PRIMARY KEY DEFAULT true CHECK (one),
  day_from timestamptz NOT NULL
);
INSERT INTO events_window (day_from) VALUES ('-infinity');
`,
  },
  {
    version: 3,
    name: "events.pid, for the attributed filter without parsing JSON",
    sql: `
-- The event's pid, as in the SQLite journal: "attributed" is pid IS NOT NULL, read from a
-- column rather than by parsing every event's JSON.
ALTER TABLE events ADD COLUMN pid bigint;
UPDATE events SET pid = (event::json->>'pid')::bigint WHERE (event::json->>'pid') IS NOT NULL;
-- The dashboard's "This agent only": a session's attributed events in id order, found at once
-- even when a few of them follow many unattributed ones. (attributed=false reads the column.)
CREATE INDEX events_session_attributed ON events (session, id) WHERE pid IS NOT NULL;
`,
  },
];
