/**
 * The collector's PostgreSQL store (`sentry server --store postgres://...`). Several collector
 * processes may share the database: keys, host bindings, host records, sessions and events
 * live in it, and every batch is one transaction that binds its host (a row lock), upserts its
 * sessions, inserts its events with one multi-row statement (`ON CONFLICT DO NOTHING`, so a
 * retried batch counts duplicates, exactly as the SQLite journal does) and adds to the host's
 * record. Events are partitioned by day (see `pg_migrations.ts`); partitions are made ahead
 * and on demand, and retention drops them whole.
 *
 * Hosts choose their events' ids, and so their days (any day back to 1970). Day partitions are
 * therefore made only inside a window: from `day_from` (today minus `windowDays`, or the last
 * retention's cut if later; it only moves forward) to `daysAhead` days ahead. An older event,
 * an offline host's backlog or an old bundle, lands in the DEFAULT partition and is kept; its
 * CHECK constraint `at < day_from` proves to PostgreSQL that a new day partition (always of
 * `day_from` or later) holds none of its rows, so making one never scans it. The count of
 * partitions is bounded by the window plus the days retention keeps, whatever hosts send.
 *
 * The client is `postgres` (porsager's postgres.js): pure JavaScript with no dependencies, so it
 * runs under Deno and inside `deno compile`d binaries with nothing native to ship.
 *
 * @module
 */

import postgres from "postgres";
import type { AgentEvent } from "../events/mod.ts";
import {
  type EventFilter,
  type IngestBatch,
  IngestError,
  type IngestResult,
  type ListSessionsOptions,
  type SearchPage,
  searchWords,
  type SessionRecord,
  SessionRefError,
  type SessionSummary,
} from "../journal/mod.ts";
import { createUlid } from "../events/mod.ts";
import { ulidFloor } from "../api/mod.ts";
import type { HostBinding, HostRecord, HostVisit } from "./hosts.ts";
import { checkKeyName, keyDigest, KeyError, type KeyInfo, newKeySecret } from "./keys.ts";
import { PG_MIGRATIONS } from "./pg_migrations.ts";
import {
  type AcceptBatch,
  type AcceptResult,
  type CollectorStore,
  type HostSummary,
  redactUrl,
  type RetainResult,
  StoreUnavailableError,
  visitOf,
} from "./store.ts";

/** Options for {@link openPostgresStore}. */
export interface PostgresStoreOptions {
  /** Connections in this process's pool; default 10. */
  maxConnections?: number;
  /** The wall clock; defaults to `Date.now`. */
  now?: () => number;
  /** Fills an array with random bytes (key secrets); defaults to `crypto.getRandomValues`. */
  random?: (bytes: Uint8Array) => void;
  /** Day partitions made ahead of today; default 2. */
  daysAhead?: number;
  /**
   * Days back from today that get day partitions; an older event lands in the default
   * partition (and is kept). Default 400.
   */
  windowDays?: number;
  /** Day partitions dropped per transaction by `retain()`; default 32. */
  retainChunk?: number;
  /**
   * How long `openPostgresStore` waits for the server's first answer, ms; default 15,000. A
   * server that is not PostgreSQL, or a blackholed address, fails it then. Migrations, after
   * it, have no deadline.
   */
  openTimeoutMs?: number;
}

/** The PostgreSQL store, with its maintenance. */
export interface PostgresStore extends CollectorStore {
  readonly kind: "postgres";
  /** Makes today's and the next days' partitions; `sentry server` calls it hourly. */
  prepare(): Promise<void>;
  /** The day partitions, oldest first, as `YYYY-MM-DD` (the default partition is not listed). */
  partitions(): Promise<string[]>;
  /**
   * The first day (`YYYY-MM-DD`) that gets a day partition: older events land in the default
   * partition. Null before any (a database migrated but never prepared).
   */
  windowStart(): Promise<string | null>;
  /** The schema version recorded in the database. */
  schemaVersion(): Promise<number>;
  /** Runs one SQL statement as is and returns its rows: maintenance, tests and benchmarks. */
  execute(text: string): Promise<Record<string, unknown>[]>;
}

const DAY_MS = 86_400_000;
/** The last ms of year 9999: bounds past it are clamped (ISO text and PostgreSQL agree up to it). */
const MAX_TIME = 253_402_300_799_999;
/** An event id minted further ahead than this is refused: it would make far-future partitions. */
const MAX_FUTURE_MS = DAY_MS;
const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
/** The advisory lock of migrations and partition changes (any constant shared by all). */
const DDL_LOCK = 7_461_823_001;
/**
 * SQLSTATE of "no partition of relation found for row", and of a row refused by the default
 * partition's CHECK (a day of the window whose partition another process dropped meanwhile).
 */
const NO_PARTITION = "23514";
/** Day partitions made per transaction: each locks about eight relations. */
const CREATE_CHUNK = 32;

type Sql = postgres.Sql;
type Tx = postgres.TransactionSql;
type Row = Record<string, unknown>;

/**
 * Connects to a PostgreSQL database, applies the migrations it lacks, and makes the day
 * partitions around today.
 *
 * @throws {Error} when the database cannot be reached or migrated; the message names the URL
 *   without its password.
 */
export async function openPostgresStore(
  url: string,
  options: PostgresStoreOptions = {},
): Promise<PostgresStore> {
  const location = redactUrl(url);
  const now = options.now ?? Date.now;
  const random = options.random ?? ((b: Uint8Array) => crypto.getRandomValues(b));
  const ulid = createUlid({ now, random });
  const daysAhead = options.daysAhead ?? 2;
  const windowDays = options.windowDays ?? 400;
  const retainChunk = options.retainChunk ?? 32;
  const openTimeoutMs = options.openTimeoutMs ?? 15_000;
  for (
    const [name, value, min] of [
      ["daysAhead", daysAhead, 0],
      ["windowDays", windowDays, 0],
      ["retainChunk", retainChunk, 1],
    ] as const
  ) {
    if (!Number.isInteger(value) || value < min) {
      throw new RangeError(`Invalid ${name} ${value}: must be a whole number, ${min} or more`);
    }
  }
  const sql = postgres(url, {
    max: options.maxConnections ?? 10,
    onnotice: () => {},
    connect_timeout: Math.max(1, Math.min(10, Math.ceil(openTimeoutMs / 1000))),
    idle_timeout: 60,
    prepare: true,
    // A generic plan cannot see that `risk >= 90` is rare or which day a session lives in, and
    // walks the whole session in id order: plan each query with its values (a fraction of a ms).
    connection: { application_name: "sentry-collector", plan_cache_mode: "force_custom_plan" },
  });
  /** Days (UTC ms at midnight) whose partition this process knows exists. */
  const known = new Set<number>();
  /** The first day that gets a day partition, as this process last read it (it only grows). */
  let windowFrom = -Infinity;

  async function loadPartitions(): Promise<void> {
    known.clear();
    for (const day of await listPartitionDays(sql)) known.add(day);
    windowFrom = await readWindow(sql);
  }

  /**
   * Makes the day partitions of `days` that lie in the window, a chunk per transaction under
   * the DDL lock; days before the window need none (their events land in the default
   * partition).
   */
  async function ensurePartitions(days: Iterable<number>): Promise<void> {
    const missing = [...new Set(days)].filter((d) => d >= windowFrom && !known.has(d))
      .sort((a, b) => a - b);
    for (let i = 0; i < missing.length; i += CREATE_CHUNK) {
      const chunk = missing.slice(i, i + CREATE_CHUNK);
      const made = await sql.begin(async (tx) => {
        await tx`SELECT pg_advisory_xact_lock(${DDL_LOCK})`;
        // Read under the lock: another process may have moved the window meanwhile.
        windowFrom = Math.max(windowFrom, await readWindow(tx));
        const made: number[] = [];
        for (const day of chunk) {
          if (day < windowFrom) continue;
          const name = partitionName(day);
          const from = new Date(day).toISOString();
          const to = new Date(day + DAY_MS).toISOString();
          await tx.unsafe(
            `CREATE TABLE IF NOT EXISTS ${name} PARTITION OF events
             FOR VALUES FROM ('${from}') TO ('${to}')`,
          );
          made.push(day);
        }
        return made;
      });
      for (const day of made) known.add(day);
    }
  }

  /**
   * Moves the window's first day forward to `day` (never back): from then on, events before it
   * without a day partition land in the default partition, whose CHECK moves with it. The
   * default partition is scanned once to validate the new CHECK (it holds only old events).
   */
  async function advanceWindow(day: number): Promise<void> {
    if (day <= windowFrom) return;
    await sql.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(${DDL_LOCK})`;
      const current = await readWindow(tx);
      if (day <= current) {
        windowFrom = current;
        return;
      }
      const from = new Date(day).toISOString();
      await tx.unsafe(`ALTER TABLE events_default DROP CONSTRAINT events_default_below,
        ADD CONSTRAINT events_default_below CHECK (at < '${from}')`);
      await tx`UPDATE events_window SET day_from = ${from}`;
    });
    windowFrom = Math.max(windowFrom, day);
  }

  async function prepare(): Promise<void> {
    const today = dayOf(now());
    await advanceWindow(today - windowDays * DAY_MS);
    await ensurePartitions(Array.from({ length: daysAhead + 1 }, (_, i) => today + i * DAY_MS));
  }

  // One deadline until PostgreSQL first answers: a server that is not PostgreSQL (or answers
  // nothing) would otherwise keep the client reconnecting for ever. Migrations run after it,
  // without one: a migration of a big table may rightly take minutes.
  let timer: ReturnType<typeof setTimeout> | undefined;
  const reached = sql`SELECT 1`.execute();
  reached.catch(() => {}); // Settled below, or abandoned at the deadline.
  try {
    await Promise.race([
      reached,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new OpenTimeout()), openTimeoutMs);
      }),
    ]);
    clearTimeout(timer);
    await migrate(sql);
    await loadPartitions();
    await prepare();
  } catch (error) {
    await sql.end({ timeout: 0 }).catch(() => {});
    const why = error instanceof OpenTimeout
      ? `no PostgreSQL server answered within ${formatSeconds(openTimeoutMs)}`
      : (error as Error).message;
    throw new Error(`Cannot open store "${location}": ${why}`, { cause: error });
  } finally {
    clearTimeout(timer);
  }

  async function keyRows(where: postgres.PendingQuery<Row[]> | null): Promise<KeyInfo[]> {
    const rows = where ?? sql`SELECT id, name, created_at, revoked_at FROM collector_keys
      ORDER BY created_at, id`;
    return (await rows).map(toKey);
  }

  /**
   * Runs `body` in one transaction after making the day partitions of `events`' ids. Refuses an
   * id minted more than a day ahead (it would make far-future partitions).
   */
  async function withPartitions<T>(
    events: readonly AgentEvent[],
    body: (tx: Tx, at: number[]) => Promise<T>,
  ): Promise<T> {
    const now0 = now();
    const at: number[] = [];
    for (const [i, e] of events.entries()) {
      const t = ulidTime(e.id);
      if (t > now0 + MAX_FUTURE_MS) {
        throw new IngestError(
          `Event "${e.id}" has an id minted more than a day ahead of the collector's clock`,
          `events[${i}].id`,
        );
      }
      at.push(t);
    }
    await ensurePartitions(at.map(dayOf));
    try {
      return await sql.begin((tx) => body(tx, at)) as T;
    } catch (error) {
      if ((error as { code?: string }).code !== NO_PARTITION) throw error;
      // Another process dropped a partition this one thought was there: look again, retry.
      await loadPartitions();
      await ensurePartitions(at.map(dayOf));
      return await sql.begin((tx) => body(tx, at)) as T;
    }
  }

  function accept(batch: AcceptBatch): Promise<AcceptResult> {
    return withPartitions(batch.events, async (tx, at): Promise<AcceptResult> => {
      const { hostId, key } = batch;
      const binding = await bindIn(tx, hostId, key);
      if (binding.outcome === "refused") return binding;
      const result = await ingestIn(tx, {
        key: key.id,
        hostId,
        sessions: batch.sessions,
        events: batch.events,
      }, at);
      await visitIn(tx, visitOf(batch, result));
      return { outcome: "stored", binding, result };
    });
  }

  /** Upserts a batch's sessions and inserts its events (at `at`, their ids' times) once by id. */
  async function ingestIn(tx: Tx, batch: IngestBatch, at: number[]): Promise<IngestResult> {
    const { hostId } = batch;
    const keyId = batch.key;
    const owners = new Map<string, string>();
    for (const [i, s] of batch.sessions.entries()) {
      const [row] = await tx`
        INSERT INTO sessions (id, agent, command, pid, kind, policy, mode, workspace, host,
          sentry_pid, started_at, ended_at, state, exit_code, note, origin_key, origin_host, tier)
        VALUES (${s.id}, ${s.agent}, ${JSON.stringify(s.command)}, ${s.pid}, ${s.kind},
          ${s.policy}, ${s.mode}, ${s.workspace}, ${s.host}, ${s.sentryPid}, ${s.startedAt},
          ${s.endedAt}, ${s.state}, ${s.exitCode}, ${s.note}, ${keyId}, ${hostId}, ${s.tier})
        ON CONFLICT (id) DO UPDATE SET
          state = CASE WHEN sessions.state IN ('running', 'paused') THEN excluded.state
                       ELSE sessions.state END,
          ended_at = coalesce(excluded.ended_at, sessions.ended_at),
          exit_code = coalesce(excluded.exit_code, sessions.exit_code),
          note = coalesce(excluded.note, sessions.note),
          pid = coalesce(excluded.pid, sessions.pid),
          origin_key = excluded.origin_key,
          rev = sessions.rev + 1
        WHERE sessions.origin_host = excluded.origin_host
        RETURNING id`;
      if (row === undefined) {
        throw new IngestError(`Session "${s.id}" belongs to another host`, `sessions[${i}].id`);
      }
      owners.set(s.id, hostId);
    }

    const others = [...new Set(batch.events.map((e) => e.session))].filter((id) => !owners.has(id));
    if (others.length > 0) {
      const rows = await tx`SELECT id, origin_host FROM sessions WHERE id = ANY(${others})`;
      for (const r of rows) owners.set(String(r["id"]), String(r["origin_host"]));
    }
    for (const [i, e] of batch.events.entries()) {
      const owner = owners.get(e.session);
      if (owner === undefined) {
        throw new IngestError(
          `Event "${e.id}" names session "${e.session}", which is not in the batch or stored`,
          `events[${i}].session`,
        );
      }
      if (owner !== hostId) {
        throw new IngestError(
          `Session "${e.session}" belongs to another host`,
          `events[${i}].session`,
        );
      }
    }

    let accepted = 0;
    if (batch.events.length > 0) {
      const ev = batch.events;
      const inserted = await tx`
        INSERT INTO events (id, at, session, ts, kind, verdict, risk, pid, event)
        SELECT * FROM unnest(
          ${ev.map((e) => e.id)}::text[],
          ${at.map((t) => new Date(t).toISOString())}::timestamptz[],
          ${ev.map((e) => e.session)}::text[],
          ${ev.map((e) => e.ts)}::text[],
          ${ev.map((e) => e.kind)}::text[],
          ${ev.map((e) => e.verdict)}::text[],
          ${ev.map((e) => e.risk)}::smallint[],
          ${ev.map((e) => e.pid)}::bigint[],
          ${ev.map((e) => JSON.stringify(e))}::text[])
        ON CONFLICT DO NOTHING
        RETURNING session, at, ts, verdict, risk`;
      accepted = inserted.length;
      const counts = new Map<string, DayCount>();
      for (const r of inserted) {
        const at = (r["at"] as Date).getTime();
        const day = new Date(dayOf(at)).toISOString().slice(0, 10);
        const k = `${String(r["session"])}\u0000${day}`;
        const ts = String(r["ts"]);
        const skew = CANONICAL_TS.test(ts) ? Date.parse(ts) - at : null;
        const c = counts.get(k) ??
          { events: 0, denied: 0, maxRisk: 0, minSkew: skew, maxSkew: skew };
        c.events++;
        if (r["verdict"] === "deny") c.denied++;
        c.maxRisk = Math.max(c.maxRisk, Number(r["risk"]));
        c.minSkew = skew === null || c.minSkew === null ? null : Math.min(c.minSkew, skew);
        c.maxSkew = skew === null || c.maxSkew === null ? null : Math.max(c.maxSkew, skew);
        counts.set(k, c);
      }
      if (counts.size > 0) {
        const keys = [...counts.keys()].sort();
        const vals = keys.map((k) => counts.get(k)!);
        await tx`
          INSERT INTO session_day_counts
            (session, day, events, denied, max_risk, min_skew, max_skew)
          SELECT * FROM unnest(${keys.map((k) => k.split("\u0000")[0]!)}::text[],
            ${keys.map((k) => k.split("\u0000")[1]!)}::date[],
            ${vals.map((v) => v.events)}::bigint[], ${vals.map((v) => v.denied)}::bigint[],
            ${vals.map((v) => v.maxRisk)}::int[], ${vals.map((v) => v.minSkew)}::bigint[],
            ${vals.map((v) => v.maxSkew)}::bigint[])
          ON CONFLICT (session, day) DO UPDATE SET
            events = session_day_counts.events + excluded.events,
            denied = session_day_counts.denied + excluded.denied,
            max_risk = greatest(session_day_counts.max_risk, excluded.max_risk),
            -- least() and greatest() skip NULLs: an unknown skew must stay unknown.
            min_skew = CASE WHEN session_day_counts.min_skew IS NULL OR excluded.min_skew IS NULL
              THEN NULL ELSE least(session_day_counts.min_skew, excluded.min_skew) END,
            max_skew = CASE WHEN session_day_counts.max_skew IS NULL OR excluded.max_skew IS NULL
              THEN NULL ELSE greatest(session_day_counts.max_skew, excluded.max_skew) END`;
      }
    }
    return {
      accepted,
      duplicates: batch.events.length - accepted,
      sessions: batch.sessions.length,
    };
  }

  /**
   * Binds the host to the key inside the batch's transaction: the binding row stays locked
   * until it commits, so concurrent batches of one host, in any process, decide one at a time,
   * and a batch that fails leaves no binding behind.
   */
  async function bindIn(
    tx: Tx,
    hostId: string,
    key: { id: string; name: string },
  ): Promise<HostBinding> {
    let [row] = await tx`SELECT key_id FROM collector_host_bindings WHERE host_id = ${hostId}
      FOR UPDATE`;
    if (row === undefined) {
      const [oldest] = await tx`SELECT key_id FROM collector_hosts WHERE host_id = ${hostId}
        ORDER BY first_seen, key_id LIMIT 1`;
      const registrar = oldest === undefined ? key.id : String(oldest["key_id"]);
      const [made] = await tx`INSERT INTO collector_host_bindings (host_id, key_id)
        VALUES (${hostId}, ${registrar}) ON CONFLICT (host_id) DO NOTHING RETURNING key_id`;
      if (made !== undefined && registrar === key.id) return { outcome: "claimed" };
      [row] = await tx`SELECT key_id FROM collector_host_bindings WHERE host_id = ${hostId}
        FOR UPDATE`;
    }
    const bound = String(row?.["key_id"]);
    if (bound === key.id) return { outcome: "bound" };
    const [holder] = await tx`SELECT name, revoked_at FROM collector_keys WHERE id = ${bound}`;
    const movable = holder === undefined ||
      (holder["revoked_at"] !== null && holder["name"] === key.name);
    if (!movable) return { outcome: "refused", boundTo: bound };
    await tx`UPDATE collector_host_bindings SET key_id = ${key.id} WHERE host_id = ${hostId}`;
    return { outcome: "rebound", previous: bound };
  }

  async function visitIn(tx: Tx | Sql, visit: HostVisit): Promise<HostRecord> {
    const [row] = await tx`
      INSERT INTO collector_hosts (key_id, host_id, name, key_name, first_seen, last_seen,
        batches, events, duplicates, dropped)
      VALUES (${visit.keyId}, ${visit.hostId}, ${visit.name}, ${visit.keyName}, ${visit.at},
        ${visit.at}, 1, ${visit.accepted}, ${visit.duplicates}, ${visit.dropped})
      ON CONFLICT (key_id, host_id) DO UPDATE SET
        name = excluded.name, key_name = excluded.key_name, last_seen = excluded.last_seen,
        batches = collector_hosts.batches + 1,
        events = collector_hosts.events + excluded.events,
        duplicates = collector_hosts.duplicates + excluded.duplicates,
        dropped = greatest(collector_hosts.dropped, excluded.dropped)
      RETURNING *`;
    return toHost(row!);
  }

  const summary = sql`s.*, coalesce(c.events, 0)::bigint AS n_events,
    coalesce(c.denied, 0)::bigint AS n_denied, coalesce(c.max_risk, 0) AS max_risk
    FROM sessions s LEFT JOIN LATERAL (SELECT sum(events) AS events, sum(denied) AS denied,
      max(max_risk) AS max_risk FROM session_day_counts d WHERE d.session = s.id) c ON true`;

  async function getSession(ref: string): Promise<SessionSummary> {
    if (ref === "last") {
      const [row] = await sql`SELECT ${summary} ORDER BY s.started_at DESC, s.id DESC LIMIT 1`;
      if (row === undefined) {
        throw new SessionRefError(ref, `No session matches "last": store "${location}" is empty`);
      }
      return toSummary(row);
    }
    const [exact] = await sql`SELECT ${summary} WHERE s.id = ${ref}`;
    if (exact !== undefined) return toSummary(exact);
    const pattern = `${ref.replace(/[\\%_]/g, (c) => `\\${c}`)}%`;
    const rows = ref === "" ? [] : await sql`SELECT id, count(*) OVER () AS n FROM sessions
      WHERE id ILIKE ${pattern} ORDER BY started_at DESC, id DESC LIMIT 10`;
    const count = Number(rows[0]?.["n"] ?? 0);
    if (count === 0) {
      throw new SessionRefError(ref, `No session matches "${ref}" in store "${location}"`);
    }
    const ids = rows.map((r) => String(r["id"]));
    if (count > 1) {
      const listed = ids.map((id) => `"${id}"`).join(", ");
      const more = count > ids.length ? ` and ${count - ids.length} more` : "";
      throw new SessionRefError(
        ref,
        `Session prefix "${ref}" is ambiguous: it matches ${listed}${more}`,
        ids,
      );
    }
    const [row] = await sql`SELECT ${summary} WHERE s.id = ${ids[0] ?? ""}`;
    if (row === undefined) throw new SessionRefError(ref, `No session matches "${ref}"`);
    return toSummary(row);
  }

  async function queryEvents(
    filter: EventFilter = {},
    edge?: { id: string },
  ): Promise<AgentEvent[]> {
    const limit = filter.limit ?? 1000;
    if (!Number.isInteger(limit) || limit < 0) {
      throw new RangeError(`Invalid limit ${limit}: must be a whole number, 0 or more`);
    }
    const kinds = typeof filter.kind === "string" ? [filter.kind] : filter.kind;
    if ((kinds !== undefined && kinds.length === 0) || limit === 0) return [];
    const desc = filter.order === "desc";
    const where: postgres.PendingQuery<Row[]>[] = [];
    if (filter.session !== undefined) where.push(sql`session = ${filter.session}`);
    if (kinds !== undefined) {
      where.push(kinds.length === 1 ? sql`kind = ${kinds[0]!}` : sql`kind = ANY(${kinds})`);
    }
    if (filter.minRisk !== undefined) where.push(sql`risk >= ${filter.minRisk}`);
    if (filter.verdict !== undefined) where.push(sql`verdict = ${filter.verdict}`);
    if (filter.since !== undefined) where.push(sql`ts >= ${filter.since}`);
    if (filter.until !== undefined) where.push(sql`ts < ${filter.until}`);
    if (filter.attributed !== undefined) {
      // `pid IS NOT NULL` is the predicate of events_session_attributed, word for word.
      where.push(filter.attributed ? sql`pid IS NOT NULL` : sql`pid IS NULL`);
    }
    for (const word of filter.text === undefined ? [] : searchWords(filter.text)) {
      // As the SQLite journal: the whole JSON first, then the searched fields (their JSON text,
      // escapes kept), lowered in ASCII only: lower() under the "C" collation folds A-Z alone,
      // whatever the database's locale (and is some 40 times faster than translate()).
      where.push(sql`strpos(lower(event COLLATE "C"), ${word}) > 0 AND strpos(
        lower(json_build_array(event::json->'kind', event::json->'target',
          event::json->'rule', event::json->'verdict', event::json->'response',
          event::json->'pid', event::json->'exe', event::json->'cmdline',
          event::json->'detail')::text COLLATE "C"), ${word}) > 0`);
    }
    if (edge !== undefined) {
      where.push(filter.order === "desc" ? sql`id >= ${edge.id}` : sql`id <= ${edge.id}`);
    }
    if (filter.session !== undefined) {
      // A session's days bound the partitions read; a time range also bounds its ids: an
      // event's ts is its id's time plus a skew the session's counts keep. The ts conditions
      // stay.
      const bounds = await sessionBounds(filter.session, filter.since, filter.until);
      if (bounds === null) return [];
      where.push(sql`at >= ${bounds.days.from} AND at < ${bounds.days.to}`);
      // Ids only: a narrow `at` range too would lead the planner to read the range by time and
      // sort it (240 ms at 10M events) rather than walk (session, id) from the first id (0.1 ms).
      if (bounds.from !== undefined) where.push(sql`id >= ${bounds.from}`);
      if (bounds.to !== undefined) where.push(sql`id < ${bounds.to}`);
    }
    if (filter.after !== undefined && filter.session !== undefined) {
      // The session's days already bound the partitions (see above).
      where.push(desc ? sql`id < ${filter.after}` : sql`id > ${filter.after}`);
    } else if (filter.after !== undefined) {
      // `at` is the id's time: bounding it lets the planner skip whole partitions.
      const t = new Date(Math.min(ulidTime(filter.after), MAX_TIME)).toISOString();
      if (desc) where.push(sql`id < ${filter.after} AND at <= ${t}`);
      else where.push(sql`id > ${filter.after} AND at >= ${t}`);
    }
    const clause = where.length === 0
      ? sql``
      : sql`WHERE ${where.reduce((a, b) => sql`${a} AND ${b}`)}`;
    const rows = await sql`SELECT event FROM events ${clause}
      ORDER BY id ${desc ? sql`DESC` : sql`ASC`} LIMIT ${limit}`;
    return rows.map((r) => JSON.parse(String(r["event"])) as AgentEvent);
  }

  /** One bounded step of a text search: see {@link CollectorStore.searchEvents}. */
  async function searchEvents(
    filter: EventFilter & { session: string },
    maxWalk: number,
  ): Promise<SearchPage> {
    if (!Number.isInteger(maxWalk) || maxWalk < 1) {
      throw new RangeError(`Invalid maxWalk ${maxWalk}: must be a whole number, 1 or more`);
    }
    const limit = filter.limit ?? 1000;
    const desc = filter.order === "desc";
    const bounds = await sessionBounds(filter.session, undefined, undefined);
    if (bounds === null) return { events: [], next: null };
    const after = filter.after === undefined
      ? sql``
      : desc
      ? sql`AND id < ${filter.after}`
      : sql`AND id > ${filter.after}`;
    const [row] = await sql`SELECT id FROM events WHERE session = ${filter.session}
      AND at >= ${bounds.days.from} AND at < ${bounds.days.to} ${after}
      ORDER BY id ${desc ? sql`DESC` : sql`ASC`} LIMIT 1 OFFSET ${maxWalk - 1}`;
    const edge = row === undefined ? undefined : String(row["id"]);
    const events = await queryEvents(filter, edge === undefined ? undefined : { id: edge });
    const full = limit > 0 && events.length === limit;
    return { events, next: full ? events.at(-1)?.id ?? null : edge ?? null };
  }

  /**
   * A session's event days (the partitions to read) and the id range its `since`/`until`
   * implies (none when a skew is unknown); null when the session has no events.
   */
  async function sessionBounds(
    session: string,
    since: string | undefined,
    until: string | undefined,
  ): Promise<
    {
      days: { from: string; to: string };
      from?: string;
      to?: string;
    } | null
  > {
    const [row] = await sql`SELECT min(day)::text AS first, max(day)::text AS last,
      min(min_skew) AS lo, max(max_skew) AS hi,
      bool_and(min_skew IS NOT NULL AND max_skew IS NOT NULL) AS known
      FROM session_day_counts WHERE session = ${session}`;
    if (row === undefined || row["first"] === null) return null;
    const first = Date.parse(`${String(row["first"])}T00:00:00.000Z`);
    const last = Date.parse(`${String(row["last"])}T00:00:00.000Z`);
    const days = {
      from: new Date(first).toISOString(),
      to: new Date(last + DAY_MS).toISOString(),
    };
    const canonical = (t: string | undefined) => t === undefined || CANONICAL_TS.test(t);
    if (row["known"] !== true || !canonical(since) || !canonical(until)) return { days };
    const lo = Number(row["lo"]);
    const hi = Number(row["hi"]);
    const bound = (ms: number) => ulidFloor(Math.min(Math.max(ms, 0), MAX_TIME));
    return {
      days,
      ...(since === undefined ? {} : { from: bound(Date.parse(since) - hi) }),
      ...(until === undefined ? {} : { to: bound(Date.parse(until) - lo) }),
    };
  }

  /**
   * Drops the day partitions before `before`'s day, `retainChunk` per transaction with their
   * days' counts (a crash between two leaves each day either whole or gone), then deletes the
   * default partition's rows before that day, their counts, and the final sessions left
   * without events. The window first moves to the cut, so no partition of a day being dropped
   * is made meanwhile: a late event of such a day lands in the default partition, and the next
   * retention deletes it.
   */
  async function retain(before: Date): Promise<RetainResult> {
    const cut = dayOf(before.getTime());
    const cutIso = new Date(cut).toISOString();
    const cutDay = cutIso.slice(0, 10);
    await advanceWindow(cut);
    const old = (await listPartitionDays(sql)).filter((day) => day + DAY_MS <= cut);
    let partitions = 0;
    for (let i = 0; i < old.length; i += retainChunk) {
      const chunk = old.slice(i, i + retainChunk);
      await sql.begin(async (tx) => {
        await tx`SELECT pg_advisory_xact_lock(${DDL_LOCK})`;
        for (const day of chunk) {
          await tx.unsafe(`DROP TABLE IF EXISTS ${partitionName(day)}`);
          known.delete(day);
        }
        const days = chunk.map((d) => new Date(d).toISOString().slice(0, 10));
        await tx`DELETE FROM session_day_counts WHERE day = ANY(${days}::date[])`;
      });
      partitions += chunk.length;
    }
    let sessions = 0;
    await sql.begin(async (tx) => {
      await tx`DELETE FROM events_default WHERE at < ${cutIso}`;
      await tx`DELETE FROM session_day_counts WHERE day < ${cutDay}`;
      const gone = await tx`DELETE FROM sessions s
        WHERE s.state NOT IN ('running', 'paused') AND s.started_at < ${before.toISOString()}
          AND NOT EXISTS (SELECT 1 FROM session_day_counts d WHERE d.session = s.id)
        RETURNING id`;
      sessions = gone.length;
    });
    await loadPartitions();
    return { partitions, sessions };
  }

  return guarded({
    kind: "postgres",
    location,
    async addKey(name) {
      checkKeyName(name);
      const key = newKeySecret(random);
      const info: KeyInfo = {
        id: `k_${ulid()}`,
        name,
        created_at: new Date(now()).toISOString(),
        revoked_at: null,
      };
      try {
        await sql`INSERT INTO collector_keys (id, name, created_at, revoked_at, sha256)
          VALUES (${info.id}, ${name}, ${info.created_at}, NULL, ${keyDigest(key)})`;
      } catch (error) {
        if ((error as { code?: string }).code === "23505") {
          throw new KeyError(`Invalid key name "${name}": an active key has it`, "name");
        }
        throw error;
      }
      return { key, info };
    },
    listKeys: () => keyRows(null),
    async revokeKey(ref) {
      return await sql.begin(async (tx) => {
        const rows = await tx`SELECT id, name, created_at, revoked_at FROM collector_keys
          WHERE id = ${ref} OR name = ${ref} ORDER BY created_at, id FOR UPDATE`;
        const keys = rows.map(toKey);
        const match = keys.find((k) => k.id === ref) ??
          keys.find((k) => k.name === ref && k.revoked_at === null) ??
          keys.findLast((k) => k.name === ref);
        if (match === undefined) {
          throw new KeyError(`No key "${ref}": give a key id or name from the list`, "key");
        }
        if (match.revoked_at !== null) return match;
        const revokedAt = new Date(now()).toISOString();
        await tx`UPDATE collector_keys SET revoked_at = ${revokedAt} WHERE id = ${match.id}`;
        return { ...match, revoked_at: revokedAt };
      });
    },
    async verifyKey(secret) {
      // The lookup is by the secret's SHA-256: its timing says nothing usable about a secret.
      let rows;
      try {
        rows = await sql`SELECT id, name, created_at, revoked_at FROM collector_keys
          WHERE sha256 = ${keyDigest(secret)}`;
      } catch (cause) {
        if (isUnavailable(cause)) throw cause; // Made a StoreUnavailableError by guarded().
        throw new Error(`Cannot read key store "${location}": ${(cause as Error).message}`, {
          cause,
        });
      }
      const key = rows[0] === undefined ? null : toKey(rows[0]);
      return key === null || key.revoked_at !== null ? null : key;
    },
    accept,
    ingest: (batch) => withPartitions(batch.events, (tx, at) => ingestIn(tx, batch, at)),
    bindHost: (claim) => sql.begin((tx) => bindIn(tx, claim.hostId, claim.key)),
    async unbindHost({ hostId, keyId, binding }) {
      // As on SQLite: only a binding just made, and only while it is still this key's.
      if (binding.outcome === "claimed") {
        await sql`DELETE FROM collector_host_bindings
          WHERE host_id = ${hostId} AND key_id = ${keyId}`;
      } else if (binding.outcome === "rebound") {
        await sql`UPDATE collector_host_bindings SET key_id = ${binding.previous}
          WHERE host_id = ${hostId} AND key_id = ${keyId}`;
      }
    },
    recordHostVisit: (visit) => visitIn(sql, visit),
    async hostBinding(hostId) {
      const [row] = await sql`SELECT key_id FROM collector_host_bindings
        WHERE host_id = ${hostId}`;
      return row === undefined ? undefined : String(row["key_id"]);
    },
    async listHosts() {
      const rows = await sql`SELECT h.*, (SELECT count(*) FROM sessions s
          WHERE s.origin_host = h.host_id AND s.origin_key = h.key_id) AS n_sessions
        FROM collector_hosts h ORDER BY h.last_seen DESC`;
      return rows.map((r): HostSummary => ({ ...toHost(r), sessions: Number(r["n_sessions"]) }));
    },
    async listSessions(options: ListSessionsOptions = {}) {
      const limit = options.limit ?? 50;
      if (!Number.isInteger(limit) || limit < 0) {
        throw new RangeError(`Invalid limit ${limit}: must be a whole number, 0 or more`);
      }
      const host = options.host;
      const rows = host === undefined
        ? await sql`SELECT ${summary} ORDER BY s.started_at DESC, s.id DESC LIMIT ${limit}`
        : await sql`SELECT ${summary} WHERE s.host = ${host} OR s.origin_host = ${host.toUpperCase()}
            ORDER BY s.started_at DESC, s.id DESC LIMIT ${limit}`;
      return rows.map(toSummary);
    },
    getSession,
    queryEvents: (filter) => queryEvents(filter),
    searchEvents,
    async getEvent(id) {
      // The id's time names its partition: one index probe in one day.
      const at = new Date(Math.min(ulidTime(id), MAX_TIME)).toISOString();
      const [row] =
        await sql`SELECT event FROM events WHERE at = ${at} AND id = ${id.toUpperCase()}`;
      return row === undefined ? undefined : JSON.parse(String(row["event"])) as AgentEvent;
    },
    // Hosts upload neither their policy reloads nor their responses.
    policyReloads: () => Promise.resolve([]),
    responses: () => Promise.resolve([]),
    sensorStats: () => Promise.resolve([]),
    retain,
    prepare,
    partitions: async () =>
      (await listPartitionDays(sql)).map((d) => new Date(d).toISOString().slice(0, 10)),
    async windowStart() {
      const day = await readWindow(sql);
      return Number.isFinite(day) ? new Date(day).toISOString().slice(0, 10) : null;
    },
    execute: async (text) => [...await sql.unsafe(text)],
    async schemaVersion() {
      const [row] = await sql`SELECT max(version) AS v FROM sentry_schema`;
      return Number(row?.["v"] ?? 0);
    },
    async close() {
      await sql.end({ timeout: 5 });
    },
  });
}

/**
 * SQLSTATEs of a database that cannot be reached or is going away: class 08 (connection
 * exception), 53300 (too many connections) and 57P01 to 57P04 (shutting down, crashed,
 * starting up, database dropped).
 */
const UNAVAILABLE_STATE = /^(08...|53300|57P0[1-4])$/;
/** Node-style socket errors and postgres.js's own codes for a connection that failed or ended. */
const UNAVAILABLE_CODES = new Set([
  "ECONNREFUSED",
  "ECONNRESET",
  "ECONNABORTED",
  "ETIMEDOUT",
  "EPIPE",
  "EHOSTUNREACH",
  "ENETUNREACH",
  "ENOTCONN",
  "CONNECTION_CLOSED",
  "CONNECTION_ENDED",
  "CONNECTION_DESTROYED",
  "CONNECT_TIMEOUT",
]);
/** Deno's own names of the same socket errors. */
const UNAVAILABLE_NAMES = new Set([
  "ConnectionRefused",
  "ConnectionReset",
  "ConnectionAborted",
  "TimedOut",
  "BrokenPipe",
  "NotConnected",
]);

/** Whether `error` says the database cannot be reached now, rather than what was asked failed. */
export function isUnavailable(error: unknown): boolean {
  if (typeof error !== "object" || error === null) return false;
  const { code, name } = error as { code?: unknown; name?: unknown };
  return (typeof code === "string" &&
    (UNAVAILABLE_CODES.has(code) || UNAVAILABLE_STATE.test(code))) ||
    (typeof name === "string" && UNAVAILABLE_NAMES.has(name));
}

/**
 * The store with each method's connection-class failures turned into a
 * {@link StoreUnavailableError} (the API answers it 503), others passed on as they are.
 */
function guarded(store: PostgresStore): PostgresStore {
  const out: Record<string, unknown> = {};
  for (const [name, value] of Object.entries(store)) {
    out[name] = typeof value !== "function" || name === "close"
      ? value
      : async (...args: unknown[]) => {
        try {
          return await (value as (...a: unknown[]) => Promise<unknown>)(...args);
        } catch (error) {
          if (error instanceof StoreUnavailableError || !isUnavailable(error)) throw error;
          throw new StoreUnavailableError({ cause: error });
        }
      };
  }
  return out as unknown as PostgresStore;
}

/** Applies the migrations the database lacks, each in its own transaction, under a lock. */
async function migrate(sql: Sql): Promise<void> {
  await sql`CREATE TABLE IF NOT EXISTS sentry_schema (
    version integer PRIMARY KEY, name text NOT NULL,
    applied_at timestamptz NOT NULL DEFAULT now())`.catch((error) => {
    // Two processes creating it at once: one wins, the other sees it.
    if ((error as { code?: string }).code !== "23505") throw error;
  });
  for (const m of PG_MIGRATIONS) {
    await sql.begin(async (tx) => {
      await tx`SELECT pg_advisory_xact_lock(${DDL_LOCK})`;
      const [done] = await tx`SELECT 1 FROM sentry_schema WHERE version = ${m.version}`;
      if (done !== undefined) return;
      await tx.unsafe(m.sql);
      await tx`INSERT INTO sentry_schema (version, name) VALUES (${m.version}, ${m.name})`;
    });
  }
  const [row] = await sql`SELECT max(version) AS v FROM sentry_schema`;
  const version = Number(row?.["v"] ?? 0);
  const latest = PG_MIGRATIONS.at(-1)?.version ?? 0;
  if (version > latest) {
    throw new Error(
      `the database's schema is version ${version}, newer than this Sentry's ${latest}: upgrade Sentry`,
    );
  }
}

/** The days (UTC ms at midnight) of the events table's partitions, oldest first. */
async function listPartitionDays(sql: Sql | Tx): Promise<number[]> {
  const rows = await sql`SELECT c.relname FROM pg_inherits i
    JOIN pg_class c ON c.oid = i.inhrelid JOIN pg_class p ON p.oid = i.inhparent
    WHERE p.relname = 'events' AND p.relnamespace = current_schema()::regnamespace`;
  const days: number[] = [];
  for (const r of rows) {
    const m = /^events_p(\d{4})(\d{2})(\d{2})$/.exec(String(r["relname"]));
    if (m !== null) days.push(Date.UTC(Number(m[1]), Number(m[2]) - 1, Number(m[3])));
  }
  return days.sort((a, b) => a - b);
}

/** The window's first day (UTC ms at midnight), or -Infinity before any. */
async function readWindow(sql: Sql | Tx): Promise<number> {
  const [row] = await sql`SELECT CASE WHEN isfinite(day_from)
    THEN (extract(epoch FROM day_from) * 1000)::bigint END AS ms FROM events_window`;
  return row === undefined || row["ms"] === null ? -Infinity : Number(row["ms"]);
}

/** The deadline of {@link openPostgresStore} passed. */
class OpenTimeout extends Error {
  constructor() {
    super("timed out");
    this.name = "OpenTimeout";
  }
}

/** `15 s`, `0.5 s`. */
function formatSeconds(ms: number): string {
  return `${Number((ms / 1000).toFixed(1))} s`;
}

/** A day partition's table name: `events_pYYYYMMDD`. */
function partitionName(day: number): string {
  return `events_p${new Date(day).toISOString().slice(0, 10).replaceAll("-", "")}`;
}

/** Midnight UTC of a time, in ms. */
function dayOf(ms: number): number {
  return Math.floor(ms / DAY_MS) * DAY_MS;
}

/** A `ts` as Sentry writes it: ISO 8601, UTC, with milliseconds; its text sorts as its time. */
const CANONICAL_TS = /^\d{4}-\d{2}-\d{2}T\d{2}:\d{2}:\d{2}\.\d{3}Z$/;

/** A session's counts of one day, as a batch adds them. */
interface DayCount {
  events: number;
  denied: number;
  maxRisk: number;
  minSkew: number | null;
  maxSkew: number | null;
}

/** The time in a ULID's first ten characters, in ms (either case). */
export function ulidTime(id: string): number {
  let t = 0;
  for (const ch of id.slice(0, 10).toUpperCase()) t = t * 32 + Math.max(0, CROCKFORD.indexOf(ch));
  return t;
}

function toKey(r: Row): KeyInfo {
  return {
    id: String(r["id"]),
    name: String(r["name"]),
    created_at: String(r["created_at"]),
    revoked_at: r["revoked_at"] === null ? null : String(r["revoked_at"]),
  };
}

function toHost(r: Row): HostRecord {
  return {
    host_id: String(r["host_id"]),
    name: String(r["name"]),
    key_id: String(r["key_id"]),
    key_name: String(r["key_name"]),
    first_seen: String(r["first_seen"]),
    last_seen: String(r["last_seen"]),
    batches: Number(r["batches"]),
    events: Number(r["events"]),
    duplicates: Number(r["duplicates"]),
    dropped: Number(r["dropped"]),
  };
}

function toSummary(r: Row): SessionSummary {
  const nullable = (k: string): number | null => r[k] === null ? null : Number(r[k]);
  const session: SessionRecord = {
    id: String(r["id"]),
    agent: String(r["agent"]),
    command: JSON.parse(String(r["command"])) as string[],
    pid: nullable("pid"),
    kind: String(r["kind"]) as SessionRecord["kind"],
    policy: String(r["policy"]),
    mode: String(r["mode"]),
    workspace: String(r["workspace"]),
    tier: (r["tier"] ?? null) as SessionRecord["tier"],
    host: String(r["host"]),
    sentryPid: Number(r["sentry_pid"]),
    startedAt: String(r["started_at"]),
    endedAt: r["ended_at"] === null ? null : String(r["ended_at"]),
    state: String(r["state"]) as SessionRecord["state"],
    exitCode: nullable("exit_code"),
    note: r["note"] === null ? null : String(r["note"]),
  };
  return {
    ...session,
    events: Number(r["n_events"]),
    denied: Number(r["n_denied"]),
    maxRisk: Number(r["max_risk"]),
    responses: 0,
  };
}
