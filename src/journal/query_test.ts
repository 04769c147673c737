/**
 * The event queries at scale: whichever index a query walks and whatever id range a time filter
 * implies, it returns what a plain filter of every event returns.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { type AgentEvent, createUlid, type Kind } from "../events/mod.ts";
import { type EventFilter, type Journal, MIGRATIONS, type NewSession, openJournal } from "./mod.ts";
import { DRIVER_CAP, eventWhere, SCAN_INDEX, selectEvents, timeBound } from "./_sql.ts";

const T0 = Date.UTC(2026, 0, 2, 3, 4, 5);
const SESSION = "01JQUERYSESSION00000000000";
const OTHER = "01JQUERYOTHER0000000000000";

function session(id: string): NewSession {
  return {
    id,
    agent: "claude",
    command: ["claude"],
    pid: 1000,
    kind: "run",
    policy: "coding-agent",
    mode: "monitor",
    workspace: "/work/project",
  };
}

/** A seeded generator in [0, 1). */
function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

const KINDS: Kind[] = ["file.read", "file.write", "proc.exec", "net.connect", "net.listen"];

interface Fixture {
  journal: Journal;
  path: string;
  events: AgentEvent[];
}

/**
 * A journal of `count` events over two sessions, ids minted from a clock 0-2 ms apart per event
 * and `ts` off the id time by `skewMs(i)`; file.read and allow are common, net.listen, deny and
 * high risks rare (fewer than DRIVER_CAP), so queries take every index.
 */
function fixture(
  dir: string,
  count: number,
  skewMs: (i: number, random: () => number) => number,
): Fixture {
  const path = join(dir, "journal.db");
  const journal = openJournal(path, { batchMax: 1000, batchMs: 60_000, hostname: "test" });
  journal.createSession(session(SESSION));
  journal.createSession(session(OTHER));
  const random = rng(42);
  let ms = T0;
  const ulid = createUlid({ now: () => ms, random: (b) => b.fill(3) });
  const events: AgentEvent[] = [];
  for (let i = 0; i < count; i++) {
    ms += Math.floor(random() * 3);
    const r = random();
    const kind: Kind = r < 0.6 ? "file.read" : r < 0.99 ? KINDS[1 + (i % 3)] as Kind : "net.listen";
    const risk = random() < 0.02 ? 80 + Math.floor(random() * 21) : Math.floor(random() * 60);
    const event: AgentEvent = {
      id: ulid(),
      ts: new Date(ms + skewMs(i, random)).toISOString(),
      session: random() < 0.9 ? SESSION : OTHER,
      agent: "claude",
      pid: 100,
      ppid: 1,
      exe: "/bin/sh",
      cmdline: ["sh"],
      kind,
      target: `/work/file${i}`,
      detail: {},
      sensor: "fd",
      verdict: risk >= 95 || random() < 0.01 ? "deny" : "allow",
      risk,
      factors: [],
      rule: "r",
      response: "none",
    };
    events.push(event);
    journal.append(event);
  }
  journal.flush();
  return { journal, path, events };
}

/** What a query must return: a plain filter of every event, sorted by id, cut at the limit. */
function expected(events: readonly AgentEvent[], f: EventFilter): string[] {
  const kinds = f.kind === undefined ? undefined : typeof f.kind === "string" ? [f.kind] : f.kind;
  const desc = f.order === "desc";
  return events.filter((e) =>
    (f.session === undefined || e.session === f.session) &&
    (kinds === undefined || kinds.includes(e.kind)) &&
    (f.minRisk === undefined || e.risk >= f.minRisk) &&
    (f.verdict === undefined || e.verdict === f.verdict) &&
    (f.since === undefined || e.ts >= f.since) &&
    (f.until === undefined || e.ts < f.until) &&
    (f.after === undefined || (desc ? e.id < f.after : e.id > f.after))
  ).map((e) => e.id).sort((a, b) => desc ? (a < b ? 1 : -1) : (a < b ? -1 : 1))
    .slice(0, f.limit ?? 1000);
}

/** A time as a filter bound, in one of the forms the API accepts. */
function timeText(ms: number, form: number): string {
  const iso = new Date(ms).toISOString();
  if (form === 0) return iso; // to the ms
  if (form === 1) return `${iso.slice(0, 19)}Z`; // to the second
  if (form === 2) return `${iso.slice(0, 22)}Z`; // to the 10 ms
  return `${iso.slice(0, 23)}456Z`; // to the µs
}

/** Random filters over the fixture's span, every one checked against {@link expected}. */
function checkRandomQueries(f: Fixture, runs: number, seed: number): void {
  const random = rng(seed);
  const times = f.events.map((e) => Date.parse(e.ts));
  const first = Math.min(...times);
  const last = Math.max(...times);
  const at = () => first - 2000 + random() * (last - first + 4000);
  for (let run = 0; run < runs; run++) {
    const filter: EventFilter = { session: random() < 0.9 ? SESSION : OTHER };
    if (random() < 0.3) filter.kind = random() < 0.5 ? "net.listen" : ["file.read", "net.listen"];
    if (random() < 0.3) filter.minRisk = [1, 50, 90, 99, 101][Math.floor(random() * 5)] as number;
    if (random() < 0.3) filter.verdict = random() < 0.5 ? "deny" : "allow";
    if (random() < 0.5) filter.since = timeText(at(), Math.floor(random() * 4));
    if (random() < 0.5) filter.until = timeText(at(), Math.floor(random() * 4));
    if (random() < 0.5) filter.order = "desc";
    if (random() < 0.3) {
      filter.after = (f.events[Math.floor(random() * f.events.length)] as AgentEvent).id;
    }
    filter.limit = [1, 7, 101, 5000][Math.floor(random() * 4)] as number;
    const got = f.journal.queryEvents(filter).map((e) => e.id);
    assert.deepEqual(got, expected(f.events, filter), `filter ${JSON.stringify(filter)}`);
  }
}

async function withFixture(
  count: number,
  skewMs: (i: number, random: () => number) => number,
  body: (f: Fixture) => void,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sentry_query_" });
  let f: Fixture | undefined;
  try {
    f = fixture(dir, count, skewMs);
    body(f);
  } finally {
    f?.journal.close();
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("queryEvents() with any filters returns what a plain filter of every event returns", async () => {
  // Enough events that the common filters match more than DRIVER_CAP and the rare ones fewer.
  const count = Math.ceil(DRIVER_CAP * 2.5);
  await withFixture(count, (_i, random) => Math.floor(random() * 3), (f) => {
    assert.ok(f.events.filter((e) => e.kind === "file.read").length > DRIVER_CAP);
    assert.ok(f.events.filter((e) => e.verdict === "deny").length < DRIVER_CAP);
    checkRandomQueries(f, 400, 1);
  });
});

Deno.test("queryEvents() time filters stay exact when ts strays minutes from the id's time", async () => {
  // ts up to 5 minutes before or after the id's time, as a sensor may report an earlier time.
  await withFixture(3000, (_i, random) => Math.floor((random() - 0.5) * 600_000), (f) => {
    checkRandomQueries(f, 300, 2);
  });
});

Deno.test("queryEvents() time filters stay exact with a timestamp or id that is not canonical", async () => {
  await withFixture(2000, () => 0, (f) => {
    // A ts without milliseconds sorts after the same second with them: no id range may hold.
    const odd = { ...f.events[1000] as AgentEvent, id: "01ZZZZZZZZZZZZZZZZZZZZZZZZ" };
    odd.ts = `${odd.ts.slice(0, 19)}Z`;
    const lower = { ...f.events[500] as AgentEvent, id: "01jqlowercase0000000000000" };
    f.journal.append(odd);
    f.journal.append(lower);
    f.journal.flush();
    f.events.push(odd, lower);
    const db = new DatabaseSync(f.path, { readOnly: true });
    try {
      const row = db.prepare("SELECT min_skew FROM session_counts WHERE session = ?").get(SESSION);
      assert.equal(row?.["min_skew"], null);
    } finally {
      db.close();
    }
    const since = odd.ts.replace("Z", ".500Z");
    assert.ok(f.journal.queryEvents({ session: SESSION, since }).some((e) => e.id === odd.id));
    checkRandomQueries(f, 200, 3);
  });
});

Deno.test("session counts follow appends and ignore a re-appended event", async () => {
  await withFixture(3000, () => 0, (f) => {
    for (const id of [SESSION, OTHER]) {
      const mine = f.events.filter((e) => e.session === id);
      const summary = f.journal.getSession(id);
      assert.equal(summary.events, mine.length);
      assert.equal(summary.denied, mine.filter((e) => e.verdict === "deny").length);
      assert.equal(summary.maxRisk, Math.max(...mine.map((e) => e.risk)));
    }
    f.journal.append(f.events[0] as AgentEvent);
    f.journal.flush();
    const listed = f.journal.listSessions().find((s) => s.id === SESSION);
    assert.equal(listed?.events, f.events.filter((e) => e.session === SESSION).length);
  });
});

Deno.test("migration 3 counts the events a journal already holds", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sentry_query_" });
  try {
    const path = join(dir, "journal.db");
    const old = openJournal(path, { migrations: MIGRATIONS.slice(0, 2), hostname: "test" });
    old.createSession(session(SESSION));
    old.createSession(session(OTHER));
    const ulid = createUlid({ now: () => T0 });
    for (let i = 0; i < 50; i++) {
      old.append({
        id: ulid(),
        ts: new Date(T0 + (i === 7 ? 90_000 : 0)).toISOString(),
        session: SESSION,
        agent: "claude",
        pid: 1,
        ppid: 0,
        exe: null,
        cmdline: [],
        kind: "file.read",
        target: "/x",
        detail: {},
        sensor: "fd",
        verdict: i % 5 === 0 ? "deny" : "allow",
        risk: i,
        factors: [],
        rule: "r",
        response: "none",
      });
    }
    old.close();
    const journal = openJournal(path, { hostname: "test" });
    try {
      const summary = journal.getSession(SESSION);
      assert.deepEqual([summary.events, summary.denied, summary.maxRisk], [50, 10, 49]);
      assert.equal(journal.getSession(OTHER).events, 0);
      // The backfilled skew range keeps the odd event (ts 90 s after its id) in its time range.
      const late = new Date(T0 + 90_000).toISOString();
      assert.deepEqual(journal.queryEvents({ session: SESSION, since: late }).map((e) => e.risk), [
        7,
      ]);
    } finally {
      journal.close();
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("the scan index checks every filter without reading the events table", async () => {
  await withFixture(10, () => 0, (f) => {
    const where = eventWhere({
      session: SESSION,
      kinds: ["file.read", "net.listen"],
      minRisk: 50,
      verdict: "deny",
      since: "2026-01-01T00:00:00.000Z",
      until: "2026-02-01T00:00:00.000Z",
      from: { id: "01J00000000000000000000000", inclusive: true },
      to: { id: "01K00000000000000000000000", inclusive: false },
    });
    const sql = selectEvents(where.sql, { index: SCAN_INDEX, desc: false })
      .replace("SELECT event", "SELECT id");
    const db = new DatabaseSync(f.path, { readOnly: true });
    try {
      const plan = db.prepare(`EXPLAIN QUERY PLAN ${sql}`).all(...where.params, 10)
        .map((r) => String(r["detail"])).join("; ");
      assert.match(plan, /USING COVERING INDEX events_session_id/);
      assert.doesNotMatch(plan, /TEMP B-TREE/);
    } finally {
      db.close();
    }
  });
});

Deno.test("timeBound() reads the longest date-time prefix and refuses impossible dates", () => {
  const ms = Date.UTC(2026, 0, 2, 3, 4, 5, 678);
  assert.deepEqual(timeBound("2026-01-02T03:04:05.678Z"), { start: ms, granule: 1 });
  assert.deepEqual(timeBound("2026-01-02T03:04:05.6789Z"), { start: ms, granule: 1 });
  assert.deepEqual(timeBound("2026-01-02T03:04:05Z"), { start: ms - 678, granule: 1000 });
  assert.deepEqual(timeBound("2026-01-02T03:04Z"), { start: ms - 5678, granule: 60_000 });
  assert.equal(timeBound("2026-02-30T00:00:00.000Z"), undefined);
  assert.equal(timeBound("yesterday"), undefined);
});
