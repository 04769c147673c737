// deno-lint-ignore-file no-console
/**
 * The collector on PostgreSQL against SQLite, in one run, on a throwaway PostgreSQL cluster
 * (Debian's binaries; skipped with a message where they are absent):
 *
 * 1. Ingest with 10 concurrent hosts: each host posts gzip batches of 500 events to the
 *    collector app in process (gunzip, JSON, zod, store), all hosts at once; events per second
 *    and batch latency p50 and p99, SQLite store against PostgreSQL store, same batches.
 * 2. Dashboard queries: a page of 100 events of the biggest session by filter case, p50 and p99,
 *    on PostgreSQL at N events (10,000,000; 1,000,000 with --quick) against the SQLite journal at
 *    1,000,000 (200,000 with --quick). The big session has the same size in both (80% of the
 *    SQLite events), so the figure shows what the PostgreSQL table's size costs a query. Its
 *    events are unattributed (pid null) but for the last 50, in both stores: the dashboard's
 *    "This agent only" (`attributed=true`) at its worst. The text search (`q`) is one bounded
 *    step of `searchEvents`, as the API takes it.
 * 3. Retention: dropping a day partition of M events (1,000,000; 200,000 with --quick) against
 *    a `DELETE` of the same number of rows from another day, in time and in disk space freed.
 *
 * Run: deno run -A bench/collector_pg_bench.ts [--quick] [--pg-events N] [--sqlite-events N]
 *   [--day-events N] [--batches N]
 * @module
 */
import { join } from "node:path";
import {
  type CollectorStore,
  createCollectorApp,
  openKeyStore,
  openPostgresStore,
  openSqliteStore,
  type PostgresStore,
} from "../src/collector/mod.ts";
import { postgresSkip, startPostgres, type TestPostgres } from "../src/collector/_pg_testing.ts";
import { type AgentEvent, createUlid, type Kind } from "../src/events/mod.ts";
import {
  type EventFilter,
  JOURNAL_FILE,
  openJournal,
  type SessionRecord,
} from "../src/journal/mod.ts";
import { buildEventJournal, eventMaker } from "./_event_journal.ts";
import { parseBenchArgs, percentile, rng, table } from "./_harness.ts";
import { DatabaseSync } from "node:sqlite";
import { SEARCH_WALK } from "../src/api/mod.ts";

/** Options for {@link runCollectorPgBench}. */
export interface CollectorPgBenchOptions {
  quick?: boolean;
  /** Events in the PostgreSQL store for the query case. */
  pgEvents?: number;
  /** Events in the SQLite journal for the query case. */
  sqliteEvents?: number;
  /** Events in the day partition that retention drops. */
  dayEvents?: number;
  /** Batches each of the 10 hosts posts. */
  batches?: number;
}

const DAY = 86_400_000;
const HOSTS = 10;
const BATCH = 500;
const PAGE = 100;
/** The big session's events that are attributed (pid set): its last ones. */
const ATTRIBUTED = 50;

const fmt = (x: number) =>
  x < 10 ? x.toFixed(2) : x < 1000 ? x.toFixed(1) : Math.round(x).toLocaleString("en");

function mib(bytes: number): string {
  return `${(bytes / 1024 / 1024).toFixed(1)} MiB`;
}

/** Runs the benchmark and prints its tables. */
export async function runCollectorPgBench(options: CollectorPgBenchOptions = {}): Promise<void> {
  const skip = postgresSkip();
  if (skip !== null) {
    console.log(`skipped: ${skip}`);
    return;
  }
  const quick = options.quick ?? false;
  const pgEvents = options.pgEvents ?? (quick ? 1_000_000 : 10_000_000);
  const sqliteEvents = options.sqliteEvents ?? (quick ? 200_000 : 1_000_000);
  const dayEvents = options.dayEvents ?? (quick ? 200_000 : 1_000_000);
  const batches = options.batches ?? (quick ? 6 : 30);
  const pg = await startPostgres();
  const dir = Deno.makeTempDirSync({ prefix: "sentry-pg-bench-" });
  try {
    await ingestCase(pg, dir, batches);
    await queryCase(pg, dir, { pgEvents, sqliteEvents });
    await retentionCase(pg, dayEvents);
  } finally {
    await pg.close();
    Deno.removeSync(dir, { recursive: true });
  }
}

// --- 1. Ingest ------------------------------------------------------------------------------

interface HostPlan {
  hostId: string;
  key: string;
  bodies: Uint8Array<ArrayBuffer>[];
}

async function gzip(text: string): Promise<Uint8Array<ArrayBuffer>> {
  return await new Response(
    new Blob([new TextEncoder().encode(text)]).stream().pipeThrough(new CompressionStream("gzip")),
  ).bytes();
}

function session(id: string, host: string): SessionRecord {
  return {
    id,
    agent: "claude-code",
    command: ["claude"],
    pid: 4000,
    kind: "run",
    policy: "coding-agent",
    mode: "alert",
    workspace: "/work/project",
    host,
    sentryPid: 3999,
    startedAt: new Date().toISOString(),
    endedAt: null,
    state: "running",
    exitCode: null,
    note: null,
    tier: "ebpf",
  };
}

async function planHosts(batches: number): Promise<Omit<HostPlan, "key">[]> {
  const make = eventMaker(11);
  const ulid = createUlid();
  const plans: Omit<HostPlan, "key">[] = [];
  for (let h = 0; h < HOSTS; h++) {
    const hostId = ulid();
    const sid = ulid();
    const bodies: Uint8Array<ArrayBuffer>[] = [];
    let i = 0;
    for (let b = 0; b < batches; b++) {
      const events: AgentEvent[] = [];
      for (let k = 0; k < BATCH; k++, i++) {
        events.push(make({ id: ulid(), ms: Date.now(), session: sid, i }));
      }
      bodies.push(
        await gzip(JSON.stringify({
          protocol: 1,
          batch: ulid(),
          host: { id: hostId, name: `host-${h}` },
          sent_at: new Date().toISOString(),
          sessions: [session(sid, `host-${h}`)],
          events,
          dropped: 0,
        })),
      );
    }
    plans.push({ hostId, bodies });
  }
  return plans;
}

async function ingestWith(store: CollectorStore, plans: Omit<HostPlan, "key">[]) {
  const app = createCollectorApp({ store, maxConcurrent: 64 });
  const keys: string[] = [];
  for (let h = 0; h < plans.length; h++) keys.push((await store.addKey(`host-${h}`)).key);
  const latencies: number[] = [];
  const start = performance.now();
  await Promise.all(plans.map(async (plan, h) => {
    for (const body of plan.bodies) {
      const t = performance.now();
      const r = await app.request("/v1/sync/batches", {
        method: "POST",
        headers: {
          authorization: `Bearer ${keys[h]}`,
          "content-type": "application/json",
          "content-encoding": "gzip",
        },
        body,
      });
      const answer = await r.json();
      if (r.status !== 200 || answer.accepted !== BATCH) {
        throw new Error(`batch refused: ${r.status} ${JSON.stringify(answer)}`);
      }
      latencies.push(performance.now() - t);
    }
  }));
  const seconds = (performance.now() - start) / 1000;
  app.close();
  const events = plans.length * plans[0]!.bodies.length * BATCH;
  latencies.sort((a, b) => a - b);
  return {
    events,
    rate: events / seconds,
    p50: percentile(latencies, 50),
    p99: percentile(latencies, 99),
  };
}

async function ingestCase(pg: TestPostgres, dir: string, batches: number): Promise<void> {
  const plans = await planHosts(batches);
  const sqliteDir = join(dir, "ingest-sqlite");
  Deno.mkdirSync(sqliteDir);
  const sqlite = openSqliteStore({
    journal: openJournal(join(sqliteDir, JOURNAL_FILE), { hostname: "collector" }),
    keys: openKeyStore(sqliteDir),
  });
  const a = await ingestWith(sqlite, plans);
  await sqlite.close();
  const postgres = await openPostgresStore(await pg.createDatabase("ingest"));
  const b = await ingestWith(postgres, plans);
  await postgres.close();
  console.log(
    `\ningest: ${HOSTS} hosts at once, ${batches} gzip batches of ${BATCH} events each ` +
      `(${a.events.toLocaleString("en")} events), collector app in process`,
  );
  console.log(table([
    ["store", "events/s", "batch p50 ms", "batch p99 ms", "events/s vs SQLite"],
    ["SQLite (baseline)", fmt(a.rate), fmt(a.p50), fmt(a.p99), "1.00x"],
    ["PostgreSQL", fmt(b.rate), fmt(b.p50), fmt(b.p99), `${(b.rate / a.rate).toFixed(2)}x`],
  ]));
}

// --- 2. Dashboard queries -------------------------------------------------------------------

/** Streams `events` rows into the events table with COPY; makes the partitions first. */
async function copyEvents(
  store: PostgresStore,
  url: string,
  rows: () => Iterable<{ event: AgentEvent; at: number }>,
  days: Iterable<number>,
): Promise<void> {
  for (const day of new Set(days)) {
    const name = `events_p${new Date(day).toISOString().slice(0, 10).replaceAll("-", "")}`;
    await store.execute(
      `CREATE TABLE IF NOT EXISTS ${name} PARTITION OF events FOR VALUES FROM ` +
        `('${new Date(day).toISOString()}') TO ('${new Date(day + DAY).toISOString()}')`,
    );
  }
  const { default: postgres } = await import("postgres");
  const sql = postgres(url, { onnotice: () => {}, max: 1 });
  try {
    const w = await sql`COPY events (id, at, session, ts, kind, verdict, risk, pid, event)
      FROM STDIN`.writable();
    let chunk = "";
    for (const { event: e, at } of rows()) {
      const json = JSON.stringify(e).replaceAll("\\", "\\\\");
      chunk += `${e.id}\t${
        new Date(at).toISOString()
      }\t${e.session}\t${e.ts}\t${e.kind}\t${e.verdict}\t${e.risk}\t${e.pid ?? "\\N"}\t${json}\n`;
      if (chunk.length > 1 << 20) {
        if (!w.write(chunk)) await new Promise((r) => w.once("drain", r));
        chunk = "";
      }
    }
    if (chunk !== "") w.write(chunk);
    await new Promise<void>((resolve, reject) => w.end((e?: Error) => e ? reject(e) : resolve()));
    await sql`ANALYZE events`;
  } finally {
    await sql.end();
  }
}

interface QueryCase {
  name: string;
  filter: EventFilter;
  /** One bounded step of a text search (`searchEvents`), as the API runs `q`. */
  search?: boolean;
}

function queryCases(
  big: { id: string; firstMs: number; lastMs: number },
  ids: string[],
): QueryCase[] {
  const at = (f: number) => new Date(big.firstMs + (big.lastMs - big.firstMs) * f).toISOString();
  const cursor = (f: number) => ids[Math.floor(ids.length * f)]!;
  const list: QueryCase[] = [
    { name: "no filter", filter: {} },
    { name: "no filter, newest first", filter: { order: "desc" } },
    { name: "kind=file.write", filter: { kind: "file.write" } },
    { name: "kind=net.listen (0.3%)", filter: { kind: "net.listen" } },
    {
      name: "kind=proc.exec,net.connect",
      filter: { kind: ["proc.exec", "net.connect"] as Kind[] },
    },
    { name: "verdict=deny", filter: { verdict: "deny" } },
    { name: "min_risk=30", filter: { minRisk: 30 } },
    { name: "min_risk=90", filter: { minRisk: 90 } },
    { name: "since (last 10%)", filter: { since: at(0.9) } },
    { name: "since..until (10% at 40%)", filter: { since: at(0.4), until: at(0.5) } },
    { name: "cursor at 50%", filter: { after: cursor(0.5) } },
    { name: "cursor at 90%, kind=file.write", filter: { after: cursor(0.9), kind: "file.write" } },
    {
      name: "verdict=deny&min_risk=80",
      filter: { verdict: "deny", minRisk: 80 },
    },
    { name: `attributed=true (the last ${ATTRIBUTED})`, filter: { attributed: true } },
    { name: "attributed=false", filter: { attributed: false } },
    {
      name: `q=ssh (one step, ${SEARCH_WALK.toLocaleString("en")} walked)`,
      filter: { text: "ssh" },
      search: true,
    },
  ];
  return list.map((c) => ({
    ...c,
    filter: { ...c.filter, session: big.id, limit: PAGE + 1 },
  }));
}

async function timeQueries(
  run: (c: QueryCase) => Promise<unknown> | unknown,
  cases: QueryCase[],
  runs: number,
): Promise<{ p50: number; p99: number }[]> {
  const out: { p50: number; p99: number }[] = [];
  for (const c of cases) {
    for (let i = 0; i < 3; i++) await run(c);
    const times: number[] = [];
    for (let i = 0; i < runs; i++) {
      const t = performance.now();
      await run(c);
      times.push(performance.now() - t);
    }
    times.sort((a, b) => a - b);
    out.push({ p50: percentile(times, 50), p99: percentile(times, 99) });
  }
  return out;
}

async function queryCase(
  pg: TestPostgres,
  dir: string,
  counts: { pgEvents: number; sqliteEvents: number },
): Promise<void> {
  // SQLite: the API benchmark's journal (80% of the events in one session).
  const built = buildEventJournal(join(dir, "query.db"), { events: counts.sqliteEvents });
  const bigSize = built.big.events;
  // The big session's events are unattributed but for the last ATTRIBUTED (as in PostgreSQL).
  const db = new DatabaseSync(built.path);
  try {
    const [edge] = db.prepare(
      "SELECT id FROM events WHERE session = ? ORDER BY id DESC LIMIT 1 OFFSET ?",
    ).all(built.big.id, ATTRIBUTED - 1) as { id: string }[];
    db.prepare(
      "UPDATE events SET pid = NULL, event = json_set(event, '$.pid', json('null')) " +
        "WHERE session = ? AND id < ?",
    ).run(built.big.id, edge!.id);
  } finally {
    db.close();
  }
  const journal = openJournal(built.path);

  // PostgreSQL: the same big session, and the rest of the events in 400 other sessions over
  // 30 days (a fleet's month).
  const url = await pg.createDatabase("query");
  const store = await openPostgresStore(url);
  const make = eventMaker(5);
  const random = rng(9);
  const start = Date.parse("2026-03-02T08:00:00.000Z");
  const bigId = createUlid({ now: () => start })();
  const mint = (ms: number) =>
    createUlid({
      now: () => ms,
      random: (b) => b.forEach((_, i) => b[i] = Math.floor(random() * 256)),
    })();
  const others = Array.from({ length: 400 }, (_, i) => ({
    id: createUlid({ now: () => start + (i % 30) * DAY })(),
    day: start + (i % 30) * DAY,
  }));
  const bigIds: string[] = [];
  let bigLast = start;
  const t0 = performance.now();
  await copyEvents(store, url, function* () {
    let t = start;
    for (let i = 0; i < bigSize; i++) {
      t += 15 * (0.2 + random() * 1.6);
      const ms = Math.floor(t);
      const id = mint(ms);
      bigIds.push(id);
      bigLast = ms;
      const event = make({ id, ms, session: bigId, i });
      yield { event: i < bigSize - ATTRIBUTED ? { ...event, pid: null } : event, at: ms };
    }
    const rest = counts.pgEvents - bigSize;
    for (let i = 0; i < rest; i++) {
      const s = others[i % others.length]!;
      const ms = s.day + Math.floor((i / rest) * DAY * 0.9) % DAY;
      yield { event: make({ id: mint(ms), ms, session: s.id, i }), at: ms };
    }
  }, [
    ...Array.from({ length: 32 }, (_, d) => Math.floor(start / DAY) * DAY + d * DAY),
  ]);
  // Sessions and their counts, as ingest keeps them.
  const allSessions = [{ id: bigId, day: start }, ...others];
  for (const s of allSessions) {
    await store.execute(
      `INSERT INTO sessions (id, agent, command, pid, kind, policy, mode, workspace, host,
         sentry_pid, started_at, state, origin_key, origin_host)
       VALUES ('${s.id}', 'claude-code', '["claude"]', 4000, 'run', 'coding-agent', 'alert',
         '/w', 'bench', 1, '${new Date(s.day).toISOString()}', 'ended', 'k_bench', 'HOST')`,
    );
  }
  await store.execute(`INSERT INTO session_day_counts
    SELECT session, at::date, count(*), count(*) FILTER (WHERE verdict = 'deny'), max(risk),
      min(skew), max(skew)
    FROM (SELECT session, at, verdict, risk, (extract(epoch FROM ts::timestamptz) * 1000
      - extract(epoch FROM at) * 1000)::bigint AS skew FROM events) e GROUP BY 1, 2`);
  await store.execute("ANALYZE");
  const loadS = (performance.now() - t0) / 1000;
  const [size] = await store.execute("SELECT pg_database_size(current_database()) AS n");
  const bigBounds = { id: bigId, firstMs: start, lastMs: bigLast };

  const pgCases = queryCases(bigBounds, bigIds);
  const sqliteIds = journal.queryEvents({ session: built.big.id, limit: bigSize }).map((e) => e.id);
  const sqliteCases = queryCases(built.big, sqliteIds);
  const runs = 60;
  const a = await timeQueries(
    (c) =>
      c.search
        ? journal.searchEvents({ ...c.filter, session: built.big.id }, SEARCH_WALK)
        : journal.queryEvents(c.filter),
    sqliteCases,
    runs,
  );
  const b = await timeQueries(
    (c) =>
      c.search
        ? store.searchEvents({ ...c.filter, session: bigId }, SEARCH_WALK)
        : store.queryEvents(c.filter),
    pgCases,
    runs,
  );
  // The attributed filter as it was before migration 3: the pid read from each event's JSON.
  const from = new Date(Math.floor(start / DAY) * DAY).toISOString();
  const to = new Date(Math.floor(bigLast / DAY) * DAY + DAY).toISOString();
  const jsonPid = await timeQueries(
    () =>
      store.execute(`SELECT event FROM events WHERE session = '${bigId}'
        AND (event::json->>'pid') IS NOT NULL AND at >= '${from}' AND at < '${to}'
        ORDER BY id LIMIT ${PAGE + 1}`),
    [pgCases[0]!],
    Math.min(runs, 10),
  );
  // The dashboard's session list and one session's summary.
  const listA = await timeQueries(
    () => journal.listSessions({ limit: 50 }),
    [sqliteCases[0]!],
    runs,
  );
  const listB = await timeQueries(() => store.listSessions({ limit: 50 }), [pgCases[0]!], runs);
  const getA = await timeQueries(() => journal.getSession(built.big.id), [sqliteCases[0]!], runs);
  const getB = await timeQueries(() => store.getSession(bigId), [pgCases[0]!], runs);
  journal.close();
  await store.close();

  console.log(
    `\ndashboard queries: a page of ${PAGE} of a ${bigSize.toLocaleString("en")}-event session, ` +
      `${runs} runs each; SQLite journal at ${counts.sqliteEvents.toLocaleString("en")} events ` +
      `(${mib(built.bytes)}), PostgreSQL at ${counts.pgEvents.toLocaleString("en")} events ` +
      `over 32 day partitions (${mib(Number(size?.["n"]))}, loaded in ${loadS.toFixed(0)} s)`,
  );
  const rows = [["case", "SQLite p50", "SQLite p99", "PG p50", "PG p99", "PG/SQLite p99"]];
  const push = (name: string, x: { p50: number; p99: number }, y: { p50: number; p99: number }) =>
    rows.push([
      name,
      fmt(x.p50),
      fmt(x.p99),
      fmt(y.p50),
      fmt(y.p99),
      `${(y.p99 / x.p99).toFixed(2)}x`,
    ]);
  pgCases.forEach((c, i) => push(c.name, a[i]!, b[i]!));
  const attributedAt = pgCases.findIndex((c) => c.filter.attributed === true);
  push("  the same by the JSON's pid (before)", a[attributedAt]!, jsonPid[0]!);
  push("list 50 sessions", listA[0]!, listB[0]!);
  push("one session's summary", getA[0]!, getB[0]!);
  console.log(table(rows));
  const worst = Math.max(...b.map((x) => x.p99), listB[0]!.p99, getB[0]!.p99);
  console.log(`worst PostgreSQL p99: ${fmt(worst)} ms (goal: under 50 ms)`);
}

// --- 3. Retention ---------------------------------------------------------------------------

async function retentionCase(pg: TestPostgres, dayEvents: number): Promise<void> {
  const url = await pg.createDatabase("retention");
  const store = await openPostgresStore(url);
  try {
    const make = eventMaker(3);
    const day1 = Date.UTC(2026, 0, 10);
    const day2 = day1 + DAY;
    const ulid1 = createUlid({ now: () => day1 + 1000 });
    const ulid2 = createUlid({ now: () => day2 + 1000 });
    const s = createUlid()();
    await copyEvents(store, url, function* () {
      for (let i = 0; i < dayEvents; i++) {
        yield { event: make({ id: ulid1(), ms: day1 + 1000, session: s, i }), at: day1 + 1000 };
        yield { event: make({ id: ulid2(), ms: day2 + 1000, session: s, i }), at: day2 + 1000 };
      }
    }, [day1, day2]);
    await store.execute("CHECKPOINT");
    const dbSize = async () =>
      Number((await store.execute("SELECT pg_database_size(current_database()) AS n"))[0]?.["n"]);
    const partSize = Number(
      (await store.execute("SELECT pg_total_relation_size('events_p20260110') AS n"))[0]?.["n"],
    );

    // DELETE of day 2's rows (the way without partitions), then VACUUM as autovacuum would.
    let before = await dbSize();
    let t = performance.now();
    await store.execute(
      `DELETE FROM events WHERE at >= '${new Date(day2).toISOString()}' AND at < '${
        new Date(day2 + DAY).toISOString()
      }'`,
    );
    const deleteMs = performance.now() - t;
    await store.execute("CHECKPOINT");
    const afterDelete = await dbSize();
    t = performance.now();
    await store.execute("VACUUM events");
    const vacuumMs = performance.now() - t;
    const afterVacuum = await dbSize();
    const deleteFreed = before - afterDelete;
    const vacuumFreed = before - afterVacuum;

    // Dropping day 1's partition, as --retain does.
    before = await dbSize();
    t = performance.now();
    const gone = await store.retain(new Date(day1 + DAY));
    const dropMs = performance.now() - t;
    const afterDrop = await dbSize();
    if (gone.partitions < 1) throw new Error("retention dropped no partition");

    console.log(
      `\nretention: one day of ${dayEvents.toLocaleString("en")} events ` +
        `(${mib(partSize)} with its indexes)`,
    );
    console.log(table([
      ["way", "time ms", "disk freed", "vs DROP"],
      [
        "DELETE the day's rows (baseline)",
        fmt(deleteMs),
        mib(deleteFreed),
        `${(deleteMs / dropMs).toFixed(1)}x the time`,
      ],
      ["  then VACUUM", fmt(vacuumMs), mib(vacuumFreed), ""],
      ["drop the day partition (--retain)", fmt(dropMs), mib(before - afterDrop), "1.0x"],
    ]));
  } finally {
    await store.close();
  }
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  await runCollectorPgBench({
    quick,
    ...(numbers["pg-events"] ? { pgEvents: numbers["pg-events"][0]! } : {}),
    ...(numbers["sqlite-events"] ? { sqliteEvents: numbers["sqlite-events"][0]! } : {}),
    ...(numbers["day-events"] ? { dayEvents: numbers["day-events"][0]! } : {}),
    ...(numbers["batches"] ? { batches: numbers["batches"][0]! } : {}),
  });
}
