/**
 * Session counts kept by the journal's writers (migration 4): after any mix of writes they equal
 * a recount of the events table with the SQL of migration 3's trigger and backfill.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { type AgentEvent, createUlid } from "../events/mod.ts";
import {
  IngestError,
  type Journal,
  type JournalOptions,
  MIGRATIONS,
  type NewSession,
  openJournal,
  type SessionRecord,
} from "./mod.ts";
import { ingestBatch } from "../collector/mod.ts";
import { countAttributedEventsSql, countEventsSql } from "./migrations.ts";
import { eventSkew } from "./_counts.ts";

const T0 = Date.UTC(2026, 2, 4, 5, 6, 7, 890);
const OPTIONS: JournalOptions = { hostname: "test", pid: 4242, batchMs: 60_000 };

async function withDir(body: (dir: string) => void | Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sentry_counts_" });
  try {
    await body(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

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

/** A collector's copy of a session, as a host uploads it. */
function record(id: string): SessionRecord {
  return {
    ...session(id),
    pid: 1000,
    host: "laptop",
    sentryPid: 77,
    startedAt: new Date(T0).toISOString(),
    endedAt: null,
    state: "running",
    exitCode: null,
    note: null,
    tier: null,
  };
}

/** Events with ids minted at T0 + i ms and `ts` off the id time by `i % 7 - 3` ms. */
function eventMaker(): (session: string, fields?: Partial<AgentEvent>) => AgentEvent {
  let i = 0;
  let ms = T0;
  const ulid = createUlid({ now: () => ms, random: (b) => b.fill(9) });
  return (sessionId, fields = {}) => {
    i++;
    ms = T0 + i;
    return {
      id: ulid(),
      ts: new Date(ms + (i % 7) - 3).toISOString(),
      session: sessionId,
      agent: "claude",
      pid: 100,
      ppid: 1,
      exe: "/bin/sh",
      cmdline: ["sh"],
      kind: "file.read",
      target: `/work/file${i}`,
      detail: {},
      sensor: "fd",
      verdict: i % 4 === 0 ? "deny" : "allow",
      risk: (i * 37) % 101,
      factors: [],
      rule: "r",
      response: "none",
      ...fields,
    };
  };
}

type CountRow = (string | number | null)[];

/**
 * The stored `session_counts` rows and a recount of every event with the SQL of migration 6
 * (`countAttributedEventsSql`), both by session.
 */
function storedAndRecounted(path: string): { stored: CountRow[]; recounted: CountRow[] } {
  const db = new DatabaseSync(path, { readOnly: true });
  try {
    const rows = (sql: string) =>
      db.prepare(sql).all().map((row) => Object.values(row) as CountRow)
        .sort((a, b) => String(a[0]) < String(b[0]) ? -1 : 1);
    return {
      stored: rows(
        "SELECT session, events, denied, max_risk, min_skew, max_skew FROM session_counts",
      ),
      recounted: rows(countAttributedEventsSql("true")),
    };
  } finally {
    db.close();
  }
}

function assertExact(path: string): CountRow[] {
  const { stored, recounted } = storedAndRecounted(path);
  assert.deepEqual(stored, recounted);
  return stored;
}

/** What a session's summary must say of `events`, the distinct events stored for it. */
function expectedSummary(events: readonly AgentEvent[]): [number, number, number] {
  // Unattributed events (pid null) count as events, never as denials nor toward the risk.
  const attributed = events.filter((e) => e.pid !== null);
  return [
    events.length,
    attributed.filter((e) => e.verdict === "deny").length,
    Math.max(0, ...attributed.map((e) => e.risk)),
  ];
}

function summary(journal: Journal, id: string): [number, number, number] {
  const s = journal.getSession(id);
  return [s.events, s.denied, s.maxRisk];
}

Deno.test("session counts stay exact across duplicate appends and rejected rows", async () => {
  await withDir((dir) => {
    const path = join(dir, "journal.db");
    const journal = openJournal(path, { ...OPTIONS, batchMax: 10 });
    try {
      journal.createSession(session("A"));
      journal.createSession(session("B"));
      const make = eventMaker();
      const stored: AgentEvent[] = [];
      for (let i = 0; i < 95; i++) {
        const event = make(i % 3 === 0 ? "B" : "A");
        journal.append(event);
        stored.push(event);
        // The same event again, in the same batch or the next one: ignored.
        if (i % 5 === 0) journal.append(event);
        if (i % 11 === 0) journal.append(stored[Math.floor(i / 2)] as AgentEvent);
        // Rows the database refuses: an unknown session, and a value JSON cannot take.
        if (i % 13 === 0) journal.append(make("NO_SUCH_SESSION"));
        if (i % 17 === 0) journal.append(make("A", { detail: { n: 1n } }));
        // A row that INSERT OR IGNORE skips without an error: a NaN risk binds as NULL.
        if (i % 19 === 0) journal.append(make("B", { risk: Number.NaN }));
      }
      journal.flush();
      // A whole batch of duplicates, and one that ends with a duplicate of the riskiest event.
      for (const event of stored.slice(0, 10)) journal.append(event);
      journal.flush();
      const riskiest = stored.reduce((a, b) => (b.risk > a.risk ? b : a));
      const last = make("B", { risk: 0 });
      journal.append(last);
      journal.append(riskiest);
      journal.append(last);
      journal.flush();
      stored.push(last);

      const metrics = journal.metrics();
      assert.equal(metrics.eventsWritten, stored.length);
      // i % 13 === 0 eight times, i % 17 === 0 six times.
      assert.equal(metrics.rejected, 8 + 6);
      for (const id of ["A", "B"]) {
        assert.deepEqual(
          summary(journal, id),
          expectedSummary(stored.filter((e) => e.session === id)),
        );
      }
      const rows = assertExact(path);
      assert.equal(rows.length, 2);
      // Every skew is known: the ids and timestamps are canonical.
      assert.ok(rows.every((row) => typeof row[4] === "number" && typeof row[5] === "number"));
    } finally {
      journal.close();
    }
  });
});

/** Timestamps SQLite's strftime() may or may not give back, each with a canonical id. */
const ODD_TS = [
  "2026-03-04T05:06:07.890Z",
  "2026-03-04T05:06:07Z",
  "2026-03-04T05:06:07.8900Z",
  "2026-03-04T05:06:07.890z",
  "2026-03-04T05:06:07.890+00:00",
  "2026-03-04 05:06:07.890Z",
  " 2026-03-04T05:06:07.890Z",
  "2026-03-04T05:06:07.890Z\n",
  "2026-02-29T00:00:00.000Z",
  "2024-02-29T00:00:00.000Z",
  "2026-02-30T00:00:00.000Z",
  "2026-04-31T00:00:00.000Z",
  "2026-00-10T00:00:00.000Z",
  "2026-13-10T00:00:00.000Z",
  "2026-01-00T00:00:00.000Z",
  "2026-01-01T24:00:00.000Z",
  "2026-01-01T23:60:00.000Z",
  "2026-12-31T23:59:60.000Z",
  "2026-12-31T23:59:59.999Z",
  "0000-01-01T00:00:00.000Z",
  "1969-12-31T23:59:59.999Z",
  "9999-12-31T23:59:59.999Z",
  "+002026-03-04T05:06:07.890Z",
  "2460000.5",
  "",
  "２０２６-03-04T05:06:07.890Z",
];

/** Ids around the ULID rules, each with a canonical `ts`. */
const ODD_IDS = [
  "01JQ0000000000000000000000",
  "7ZZZZZZZZZ0000000000000000",
  "8000000000000000000000000",
  "01jq0000000000000000000000",
  "01JQ00000I0000000000000000",
  "01JQ00000U0000000000000000",
  "01JQ000000",
  "01JQ0000001",
  "01JQ000000000000000000000",
  "01JQ000000000000000000000/",
  "01JQ0000000000000000000000000",
  "01JQ000000zzzzzzzzzzzzzzzz",
  "01JQ000000~",
  "01JQ000000\u0000",
  "01JQ00000\u00e90000000000000000",
  "01JQ000000\u00e9",
  "00000000000000000000000000",
];

/** Mutations of a canonical value: one character replaced by a neighbour or a digit. */
function mutations(value: string, count: number, seed: number): string[] {
  const chars = "0123456789:-.TZzI/+ ";
  let s = seed;
  const next = () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s;
  };
  return Array.from({ length: count }, () => {
    const at = next() % value.length;
    const c = chars[next() % chars.length] as string;
    return value.slice(0, at) + c + value.slice(at + 1);
  });
}

/**
 * Timestamps on every day 0 to 32 of months 0 to 13, at hours 0, 23, 24 and 25, in years SQLite
 * or the Gregorian calendar treat apart.
 */
function calendarGrid(): string[] {
  const pad = (n: number, width = 2) => String(n).padStart(width, "0");
  const out: string[] = [];
  for (const y of [0, 4, 100, 1900, 1970, 2000, 2024, 2026, 9999]) {
    for (let m = 0; m <= 13; m++) {
      for (let d = 0; d <= 32; d++) {
        for (const h of [0, 23, 24, 25]) {
          for (const time of ["00:00.000", "59:59.999", "60:00.000", "00:60.000"]) {
            out.push(`${pad(y, 4)}-${pad(m)}-${pad(d)}T${pad(h)}:${time}Z`);
          }
        }
      }
    }
  }
  return out;
}

Deno.test("eventSkew() equals migration 3's SQL for odd timestamps and ids", () => {
  // Every value in a bare table, its skew by the SQL (one session per value) and by eventSkew.
  const canonicalTs = new Date(T0).toISOString();
  const ulid = createUlid({ now: () => T0 - 5000 });
  const canonicalId = ulid();
  const pairs: [string, string][] = [
    ...[...ODD_TS, ...calendarGrid(), ...mutations(canonicalTs, 2000, 1)]
      .map((ts): [string, string] => [ts, canonicalId]),
    ...[...ODD_IDS, ...mutations(canonicalId, 2000, 2)]
      .map((id): [string, string] => [canonicalTs, id]),
  ];
  for (let ms = 0; ms < 1000; ms++) pairs.push([new Date(T0 + ms * 997).toISOString(), ulid()]);
  const db = new DatabaseSync(":memory:");
  try {
    db.exec("CREATE TABLE events (session INTEGER, id TEXT, ts TEXT, verdict TEXT, risk INTEGER)");
    const insert = db.prepare("INSERT INTO events VALUES (?, ?, ?, 'allow', 0)");
    db.exec("BEGIN");
    for (const [i, [ts, id]] of pairs.entries()) insert.run(i, id, ts);
    db.exec("COMMIT");
    const rows = db.prepare(countEventsSql("true")).all().map((row) => Object.values(row));
    assert.equal(rows.length, pairs.length);
    let known = 0;
    for (const [session, , , , skew] of rows) {
      const [ts, id] = pairs[Number(session)] as [string, string];
      assert.equal(eventSkew(ts, id), skew, `ts ${JSON.stringify(ts)}, id ${JSON.stringify(id)}`);
      if (skew !== null) known++;
    }
    // Both outcomes are common: the comparison covers canonical and non-canonical values.
    assert.ok(known > 5000 && pairs.length - known > 5000, `${known} of ${pairs.length} known`);
  } finally {
    db.close();
  }
  const id = createUlid({ now: () => T0 })();
  assert.equal(eventSkew(new Date(T0 - 1500).toISOString(), id), -1500);
  assert.equal(eventSkew("2026-01-01T24:30:00.000Z", "00000000000000000000000000"), 1767313800000);
  assert.equal(
    eventSkew("0000-01-01T00:00:00.000Z", "00000000000000000000000000"),
    -62167219200000,
  );
  assert.equal(eventSkew("2026-03-04T05:06:07Z", id), null);
});

Deno.test("the journal stores the skews of odd timestamps and ids as migration 3's SQL", async () => {
  await withDir((dir) => {
    const path = join(dir, "journal.db");
    const journal = openJournal(path, { ...OPTIONS, batchMax: 100_000 });
    try {
      const make = eventMaker();
      const ulid = createUlid({ now: () => T0 - 5000 });
      const canonicalTs = new Date(T0).toISOString();
      const pairs: [string, string][] = [
        ...ODD_TS.map((ts): [string, string] => [ts, ulid()]),
        ...ODD_IDS.map((id): [string, string] => [canonicalTs, id]),
      ];
      // One session per event, so that each session's skew range is its event's skew.
      for (const [i, [ts, id]] of pairs.entries()) {
        journal.createSession(session(`S${i}`));
        journal.append(make(`S${i}`, { id, ts }));
      }
      journal.flush();
      assert.equal(journal.metrics().eventsWritten, pairs.length);
      const rows = assertExact(path);
      assert.equal(rows.length, pairs.length);
      const known = rows.filter((row) => row[4] !== null).length;
      assert.ok(known > 5 && rows.length - known > 5, `${known} of ${rows.length} known`);
    } finally {
      journal.close();
    }
  });
});

Deno.test("a session's skew range turns unknown with one odd event and stays unknown", async () => {
  await withDir((dir) => {
    const path = join(dir, "journal.db");
    const journal = openJournal(path, { ...OPTIONS, batchMax: 1000 });
    try {
      journal.createSession(session("A"));
      const make = eventMaker();
      for (let i = 0; i < 5; i++) journal.append(make("A"));
      journal.flush();
      assert.ok(typeof assertExact(path)[0]?.[4] === "number");
      // In the middle of a batch: the batch's range is unknown, so the session's is.
      journal.append(make("A"));
      journal.append(make("A", { ts: "2026-03-04T05:06:07Z" }));
      journal.append(make("A"));
      journal.flush();
      for (let i = 0; i < 5; i++) journal.append(make("A"));
      journal.flush();
      const [row] = assertExact(path);
      assert.deepEqual(row?.slice(4), [null, null]);
    } finally {
      journal.close();
    }
  });
});

Deno.test("ingestBatch() counts each accepted event once, not duplicates or refused batches", async () => {
  await withDir((dir) => {
    const path = join(dir, "collector.db");
    const collector = openJournal(path, OPTIONS);
    try {
      const make = eventMaker();
      const first = Array.from({ length: 40 }, (_, i) => make(i % 2 === 0 ? "A" : "B"));
      const batch = { key: "k1", hostId: "H", sessions: [record("A"), record("B")] };
      assert.equal(ingestBatch(collector, { ...batch, events: first }).accepted, 40);
      // A retried batch, then one that repeats half of it and adds more.
      assert.equal(ingestBatch(collector, { ...batch, events: first }).duplicates, 40);
      const more = Array.from({ length: 10 }, () => make("B", { verdict: "deny", risk: 100 }));
      const mixed = ingestBatch(collector, {
        ...batch,
        events: [...first.slice(20), ...more, more[0]!],
      });
      assert.deepEqual([mixed.accepted, mixed.duplicates], [10, 21]);
      // A batch refused as a whole counts nothing, though its first events were inserted.
      assert.throws(
        () =>
          ingestBatch(collector, {
            key: "k1",
            hostId: "H",
            sessions: [],
            events: [make("A"), make("A"), make("UNKNOWN")],
          }),
        IngestError,
      );
      const all = [...first, ...more];
      for (const id of ["A", "B"]) {
        assert.deepEqual(
          summary(collector, id),
          expectedSummary(all.filter((e) => e.session === id)),
        );
      }
      assertExact(path);
    } finally {
      collector.close();
    }
  });
});

Deno.test("migration 4 keeps the counts of a journal at schema 3 and drops only the insert trigger", async () => {
  await withDir((dir) => {
    const path = join(dir, "journal.db");
    const make = eventMaker();
    const old = openJournal(path, { ...OPTIONS, migrations: MIGRATIONS.slice(0, 3) });
    const events: AgentEvent[] = [];
    try {
      old.createSession(session("A"));
      old.createSession(session("B"));
      old.createSession(session("EMPTY"));
      for (let i = 0; i < 60; i++) events.push(make(i % 4 === 0 ? "B" : "A"));
      events.push(make("B", { ts: "2026-03-04T05:06:07Z" }));
      for (const e of events) old.append(e);
      old.append(events[0] as AgentEvent);
      old.flush();
    } finally {
      old.close();
    }
    const journal = openJournal(path, OPTIONS);
    try {
      for (const id of ["A", "B", "EMPTY"]) {
        assert.deepEqual(
          summary(journal, id),
          expectedSummary(events.filter((e) => e.session === id)),
        );
      }
      const rows = assertExact(path);
      assert.deepEqual(rows.map((row) => row[0]), ["A", "B"]);
      assert.equal(rows[1]?.[4], null);
      const check = new DatabaseSync(path, { readOnly: true });
      try {
        const triggers = check.prepare("SELECT name FROM sqlite_schema WHERE type = 'trigger'")
          .all().map((row) => String(row["name"])).sort();
        assert.deepEqual(triggers, ["events_count_delete", "events_count_update"]);
        const mark = check.prepare(
          "SELECT through, (SELECT max(rowid) FROM events) AS top FROM session_counts_mark",
        ).get();
        assert.deepEqual({ ...mark }, { through: events.length, top: events.length });
      } finally {
        check.close();
      }
      // Writes after the upgrade add to the counts the triggers kept.
      const later = Array.from({ length: 30 }, () => make("A", { risk: 3 }));
      for (const e of later) journal.append(e);
      journal.flush();
      events.push(...later);
      assert.deepEqual(
        summary(journal, "A"),
        expectedSummary(events.filter((e) => e.session === "A")),
      );
      assertExact(path);
    } finally {
      journal.close();
    }
  });
});

Deno.test("events that a Sentry from before migration 4 writes after the upgrade are counted", async () => {
  await withDir((dir) => {
    const path = join(dir, "journal.db");
    const make = eventMaker();
    // An older Sentry holds the journal at schema 3 and keeps writing after a newer one
    // migrated it: its inserts no longer fire a trigger and it does not count them.
    const old = openJournal(path, { ...OPTIONS, migrations: MIGRATIONS.slice(0, 3) });
    const fresh = openJournal(path, OPTIONS);
    try {
      old.createSession(session("OLD"));
      fresh.createSession(session("NEW"));
      const events: AgentEvent[] = [];
      const write = (journal: Journal, id: string, n: number, fields: Partial<AgentEvent> = {}) => {
        for (let i = 0; i < n; i++) {
          const event = make(id, fields);
          journal.append(event);
          events.push(event);
        }
        journal.flush();
      };
      write(old, "OLD", 25);
      // A reader catches up before it reads counts...
      assert.deepEqual(summary(fresh, "OLD"), expectedSummary(events));
      assertExact(path);
      // A time filter finds the old writer's event whose ts is 10 minutes after its id: the
      // reader counts it, and its skew, before it turns the filter into an id range.
      write(old, "OLD", 1, { ts: new Date(T0 + 600_000).toISOString() });
      const late = fresh.queryEvents({
        session: "OLD",
        since: new Date(T0 + 599_000).toISOString(),
      });
      assert.deepEqual(late.map((e) => e.id), [events[25]?.id]);
      // A writer counts them too, in its own batch's transaction.
      write(old, "OLD", 7, { verdict: "deny", risk: 100 });
      write(fresh, "NEW", 9);
      assertExact(path);
      for (const id of ["OLD", "NEW"]) {
        assert.deepEqual(
          fresh.listSessions().filter((s) => s.id === id).map((
            s,
          ) => [s.events, s.denied, s.maxRisk])[0],
          expectedSummary(events.filter((e) => e.session === id)),
        );
      }
    } finally {
      old.close();
      fresh.close();
    }
  });
});

Deno.test("deleting an event or a session keeps the counts exact", async () => {
  await withDir((dir) => {
    const path = join(dir, "journal.db");
    const journal = openJournal(path, OPTIONS);
    try {
      journal.createSession(session("A"));
      journal.createSession(session("B"));
      const make = eventMaker();
      const events = Array.from({ length: 30 }, (_, i) => make(i < 20 ? "A" : "B"));
      for (const e of events) journal.append(e);
      journal.flush();
      const riskiest = events.slice(0, 20).reduce((a, b) => (b.risk > a.risk ? b : a));
      const db = new DatabaseSync(path);
      try {
        db.exec("PRAGMA foreign_keys = ON");
        db.prepare("DELETE FROM events WHERE id = ?").run(riskiest.id);
        db.prepare("DELETE FROM sessions WHERE id = ?").run("B");
      } finally {
        db.close();
      }
      const left = events.slice(0, 20).filter((e) => e !== riskiest);
      assert.deepEqual(summary(journal, "A"), expectedSummary(left));
      const { stored } = storedAndRecounted(path);
      assert.deepEqual(stored.map((row) => row.slice(0, 4)), [["A", ...expectedSummary(left)]]);
      // New events after the deletes are counted; the skew range may stay wider than needed.
      const more = [make("A"), make("A")];
      for (const e of more) journal.append(e);
      journal.flush();
      assert.deepEqual(summary(journal, "A"), expectedSummary([...left, ...more]));
    } finally {
      journal.close();
    }
  });
});

Deno.test("migration 6 recounts a session's unattributed denials out of its denials and risk, and writers keep to it", async () => {
  await withDir((dir) => {
    const path = join(dir, "journal.db");
    const make = eventMaker();
    const events: AgentEvent[] = [];
    // A journal at schema 5 counted every denied event, attributed or not.
    const old = openJournal(path, { ...OPTIONS, migrations: MIGRATIONS.slice(0, 5) });
    try {
      old.createSession(session("POLL"));
      for (let i = 0; i < 12; i++) {
        const event = make("POLL", i % 3 === 0 ? { pid: null, verdict: "deny", risk: 95 } : {});
        old.append(event);
        events.push(event);
      }
      old.flush();
    } finally {
      old.close();
    }
    const fresh = openJournal(path, OPTIONS);
    try {
      assert.deepEqual(summary(fresh, "POLL"), expectedSummary(events));
      assert.ok(expectedSummary(events)[2] < 95, "the unattributed risk 95 is not the session's");
      const more = make("POLL", { pid: null, verdict: "deny", risk: 99 });
      fresh.append(more);
      fresh.flush();
      events.push(more);
      assert.deepEqual(summary(fresh, "POLL"), expectedSummary(events));
    } finally {
      fresh.close();
    }
    assertExact(path);
  });
});
