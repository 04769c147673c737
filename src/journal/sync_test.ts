import assert from "node:assert/strict";
import { join } from "node:path";
import { type AgentEvent, createUlid } from "../events/mod.ts";
import {
  IngestError,
  type Journal,
  type JournalOptions,
  type NewSession,
  openJournal,
  type SessionRecord,
} from "./mod.ts";
import { ingestBatch } from "../collector/mod.ts";

const T0 = Date.UTC(2026, 10, 24, 12, 0, 0);

async function withJournal(
  body: (journal: Journal) => void | Promise<void>,
  extra: JournalOptions = {},
): Promise<void> {
  const dir = Deno.makeTempDirSync({ prefix: "sentry_sync_journal_" });
  const journal = openJournal(join(dir, "journal.db"), {
    now: () => T0,
    hostname: "h1",
    pid: 4242,
    batchMs: 60_000,
    ...extra,
  });
  try {
    await body(journal);
  } finally {
    if (!journal.closed) journal.close();
    Deno.removeSync(dir, { recursive: true });
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
    mode: "alert",
    workspace: "/w",
  };
}

const ulid = createUlid({ now: () => T0 });

function event(sessionId: string, i: number): AgentEvent {
  return {
    id: ulid(),
    ts: new Date(T0 + i).toISOString(),
    session: sessionId,
    agent: "claude",
    pid: 1000,
    ppid: 1,
    exe: "/usr/bin/python3",
    cmdline: ["python3"],
    kind: "file.write",
    target: `/w/f${i}`,
    detail: {},
    sensor: "fd",
    verdict: "allow",
    risk: 5,
    factors: [],
    rule: "files.write.allow",
    response: "none",
  };
}

function record(journal: Journal, id: string): SessionRecord {
  const { events: _e, denied: _d, maxRisk: _m, responses: _r, ...rest } = journal.getSession(id);
  return rest;
}

Deno.test("the outbox queues nothing unless it is turned on", async () => {
  await withJournal((journal) => {
    journal.createSession(session("S1"));
    journal.append(event("S1", 0));
    journal.flush();
    assert.equal(journal.outboxStats().pending, 0);
  });
});

Deno.test("each written event gets one outbox row, in order, and a re-append adds none", async () => {
  await withJournal((journal) => {
    journal.createSession(session("S1"));
    const events = [0, 1, 2].map((i) => event("S1", i));
    for (const e of events) journal.append(e);
    journal.append(events[0]!); // a duplicate id is ignored by the events table: no second row
    journal.append(event("NO_SUCH_SESSION", 9)); // refused by the foreign key: no row either
    journal.flush();
    const items = journal.outboxPeek(10);
    assert.deepEqual(items.map((i) => i.eventId), events.map((e) => e.id));
    assert.deepEqual(JSON.parse(items[1]!.json!), events[1]);
    assert.equal(journal.outboxStats().pending, 3);
    assert.equal(journal.outboxStats().oldestTs, events[0]!.ts);
    assert.deepEqual(journal.outboxPeek(10, items[0]!.seq).map((i) => i.eventId), [
      events[1]!.id,
      events[2]!.id,
    ]);
    assert.equal(journal.outboxAck(items[1]!.seq), 2);
    assert.deepEqual(journal.outboxPeek(10).map((i) => i.eventId), [events[2]!.id]);
  }, { outbox: true });
});

Deno.test("outboxTrim() drops the oldest beyond the cap and counts them", async () => {
  await withJournal((journal) => {
    journal.createSession(session("S1"));
    const events = Array.from({ length: 10 }, (_, i) => event("S1", i));
    for (const e of events) journal.append(e);
    journal.flush();
    assert.equal(journal.outboxTrim(20), 0);
    assert.equal(journal.outboxTrim(4), 6);
    assert.deepEqual(
      journal.outboxPeek(10).map((i) => i.eventId),
      events.slice(6).map((e) => e.id),
    );
    assert.equal(journal.outboxTrim(1), 3);
    assert.deepEqual(journal.outboxStats(), {
      pending: 1,
      oldestTs: events[9]!.ts,
      dropped: 9,
    });
  }, { outbox: true });
});

Deno.test("the upload lease is held by one owner until it expires or is released", async () => {
  let now = T0;
  await withJournal((journal) => {
    assert.equal(journal.acquireLease("a", 1000), true);
    assert.equal(journal.acquireLease("b", 1000), false);
    assert.equal(journal.acquireLease("a", 1000), true, "the holder renews");
    now += 1001;
    assert.equal(journal.acquireLease("b", 1000), true, "an expired lease is taken over");
    assert.equal(journal.acquireLease("a", 1000), false);
    journal.releaseLease("a"); // not the holder: no effect
    assert.equal(journal.acquireLease("a", 1000), false);
    journal.releaseLease("b");
    assert.equal(journal.acquireLease("a", 1000), true);
  }, { now: () => now });
});

Deno.test("sessionsToSync() returns changed sessions until their revision is marked synced", async () => {
  await withJournal((journal) => {
    journal.createSession(session("S1"));
    journal.createSession(session("S2"));
    let due = journal.sessionsToSync([], 10);
    assert.deepEqual(due.map((s) => [s.record.id, s.rev]).sort(), [["S1", 1], ["S2", 1]]);
    journal.markSessionsSynced(due.map((s) => ({ id: s.record.id, rev: s.rev })));
    assert.deepEqual(journal.sessionsToSync([], 10), []);
    assert.deepEqual(journal.sessionsToSync(["S2"], 10).map((s) => s.record.id), ["S2"]);
    journal.updateSession("S1", { state: "ended", exitCode: 0 });
    due = journal.sessionsToSync([], 10);
    assert.deepEqual(due.map((s) => [s.record.id, s.rev, s.record.state]), [["S1", 2, "ended"]]);
    // An older revision reported late does not hide the newer change.
    journal.markSessionsSynced([{ id: "S1", rev: 1 }]);
    assert.equal(journal.sessionsToSync([], 10).length, 1);
  });
});

Deno.test("ingestBatch() stores a batch once, counts duplicates and keeps final states final", async () => {
  await withJournal(async (source) => {
    source.createSession(session("S1"));
    const events = [0, 1, 2].map((i) => event("S1", i));
    await withJournal((collector) => {
      const s1 = record(source, "S1");
      const first = ingestBatch(collector, { key: "k1", hostId: "H", sessions: [s1], events });
      assert.deepEqual(first, { accepted: 3, duplicates: 0, sessions: 1 });
      const again = ingestBatch(collector, { key: "k1", hostId: "H", sessions: [s1], events });
      assert.deepEqual(again, { accepted: 0, duplicates: 3, sessions: 1 });
      assert.equal(collector.queryEvents({ session: "S1" }).length, 3);
      assert.deepEqual(collector.queryEvents({ session: "S1" }), events);
      const ended = {
        ...s1,
        state: "ended" as const,
        endedAt: new Date(T0).toISOString(),
        exitCode: 3,
      };
      ingestBatch(collector, { key: "k1", hostId: "H", sessions: [ended], events: [] });
      ingestBatch(collector, { key: "k1", hostId: "H", sessions: [s1], events: [] }); // stale, late
      const stored = collector.getSession("S1");
      assert.equal(stored.state, "ended");
      assert.equal(stored.exitCode, 3);
      // Events of a stored session need not carry the session again.
      const more = event("S1", 3);
      assert.deepEqual(
        ingestBatch(collector, { key: "k1", hostId: "H", sessions: [], events: [more] }),
        {
          accepted: 1,
          duplicates: 0,
          sessions: 0,
        },
      );
    });
  });
});

Deno.test("ingestBatch() rejects a whole batch that touches another host's session or an unknown one, and follows key rotation", async () => {
  await withJournal(async (source) => {
    source.createSession(session("S1"));
    source.createSession(session("S2"));
    await withJournal((collector) => {
      ingestBatch(collector, {
        key: "k1",
        hostId: "H",
        sessions: [record(source, "S1")],
        events: [],
      });
      const fresh = event("S2", 0);
      assert.throws(
        () =>
          ingestBatch(collector, {
            key: "k2",
            hostId: "H2",
            sessions: [record(source, "S2"), record(source, "S1")],
            events: [fresh],
          }),
        (e: unknown) => e instanceof IngestError && e.field === "sessions[1].id",
      );
      assert.throws(
        () =>
          ingestBatch(collector, {
            key: "k2",
            hostId: "H2",
            sessions: [],
            events: [event("S1", 1)],
          }),
        (e: unknown) => e instanceof IngestError && e.field === "events[0].session",
      );
      assert.throws(
        () =>
          ingestBatch(collector, {
            key: "k1",
            hostId: "H",
            sessions: [],
            events: [event("S1", 2), event("NOPE", 3)],
          }),
        (e: unknown) => e instanceof IngestError && e.field === "events[1].session",
      );
      // The owning host may rotate its key: its sessions follow it.
      assert.deepEqual(
        ingestBatch(collector, { key: "k9", hostId: "H", sessions: [], events: [event("S1", 5)] }),
        { accepted: 1, duplicates: 0, sessions: 0 },
      );
      ingestBatch(collector, { key: "k9", hostId: "H", sessions: [], events: [] });
      assert.equal(collector.queryEvents({}).length, 1);
      // Nothing of the rejected batches was stored.
      assert.equal(collector.queryEvents({}).length, 1);
      assert.throws(() => collector.getSession("S2"));
      assert.equal(collector.getSession("S1").state, "running");
    });
  });
});

Deno.test("reconcile() leaves sessions received from other hosts alone", async () => {
  await withJournal(async (source) => {
    source.createSession(session("S1"));
    // The collector runs on a host with the same name, and the sender's pid is not alive here.
    await withJournal((collector) => {
      ingestBatch(collector, {
        key: "k1",
        hostId: "H",
        sessions: [record(source, "S1")],
        events: [],
      });
      assert.deepEqual(collector.reconcile(() => false), []);
      assert.equal(collector.getSession("S1").state, "running");
    });
  });
});
