import assert from "node:assert/strict";
import { createUlid } from "../events/mod.ts";
import { DROPPED_KEY, LEASE_KEY } from "../journal/mod.ts";
import {
  type CollectorOptions,
  fakeClock,
  freePort,
  openTestJournal,
  startCollector,
  type TestCollector,
  type TestJournal,
} from "./_testing.ts";
import { MAX_BATCH_BYTES } from "./batch.ts";
import {
  createUploader,
  lastAttemptSucceeded,
  type SyncNotice,
  type UploaderOptions,
} from "./uploader.ts";

const HOST = { id: createUlid()(), name: "host-a" };

interface Setup {
  host: TestJournal;
  collector: TestCollector;
  options: UploaderOptions;
}

async function withSetup(
  body: (setup: Setup) => Promise<void>,
  collectorOptions: CollectorOptions = {},
): Promise<void> {
  const host = openTestJournal();
  const collector = startCollector(collectorOptions);
  try {
    await body({
      host,
      collector,
      options: { endpoint: collector.url, apiKey: collector.key, host: HOST },
    });
  } finally {
    await collector.dispose();
    host.dispose();
  }
}

Deno.test("drainNow() sends the outbox in order, 500 events at most per batch, and empties it", async () => {
  await withSetup(async ({ host, collector, options }) => {
    const ids = [...host.write("S1", 700), ...host.write("S2", 534)];
    const uploader = createUploader(host.journal, options);
    const result = await uploader.drainNow({ timeoutMs: 20_000 });
    await uploader.close();
    assert.deepEqual(
      { ok: result.ok, accepted: result.accepted, duplicates: result.duplicates },
      { ok: true, accepted: 1234, duplicates: 0 },
    );
    assert.deepEqual(collector.calls.map((c) => c.body.events.length), [500, 500, 234]);
    // In outbox order, and every session the events name rides with them.
    assert.deepEqual(collector.calls.flatMap((c) => c.body.events.map((e) => e.id)), ids);
    assert.deepEqual(collector.calls[1]!.body.sessions.map((s) => s.id).sort(), ["S1", "S2"]);
    assert.deepEqual(collector.storedIds(), [...ids].sort());
    assert.equal(host.journal.outboxStats().pending, 0);
    assert.equal(result.pending, 0);
    assert.equal(collector.hosts()[0]?.host_id, HOST.id);
  });
});

Deno.test("a batch stays within 1 MiB of JSON, from the stored JSON", async () => {
  await withSetup(async ({ host, collector, options }) => {
    const ids = host.write("S1", 40, 100_000); // about 4 MB of events
    const uploader = createUploader(host.journal, options);
    const result = await uploader.drainNow({ timeoutMs: 20_000 });
    await uploader.close();
    assert.equal(result.ok, true);
    assert.ok(collector.calls.length >= 4, `only ${collector.calls.length} batches`);
    for (const call of collector.calls) {
      assert.ok(call.jsonBytes <= MAX_BATCH_BYTES, `a batch of ${call.jsonBytes} bytes`);
    }
    assert.deepEqual(collector.storedIds(), [...ids].sort());
  });
});

Deno.test("a session that changes after its events were sent goes again in an empty batch", async () => {
  await withSetup(async ({ host, collector, options }) => {
    host.write("S1", 3);
    const uploader = createUploader(host.journal, options);
    assert.equal((await uploader.drainNow()).ok, true);
    assert.equal((await uploader.drainNow()).batches, 0, "nothing left to send");
    host.journal.updateSession("S1", {
      state: "ended",
      endedAt: new Date().toISOString(),
      exitCode: 0,
    });
    const result = await uploader.drainNow();
    await uploader.close();
    assert.equal(result.batches, 1);
    const last = collector.calls.at(-1)!;
    assert.deepEqual(last.body.events, []);
    assert.deepEqual(last.body.sessions.map((s) => [s.id, s.state]), [["S1", "ended"]]);
    assert.equal(collector.journal.getSession("S1").state, "ended");
  });
});

Deno.test("401 stops the uploader, keeps the rows and tells the operator to log in", async () => {
  await withSetup(async ({ host, collector, options }) => {
    host.write("S1", 10);
    const notices: SyncNotice[] = [];
    const uploader = createUploader(host.journal, {
      ...options,
      apiKey: "sk_not_a_key_of_this_collector_000000",
      onNotice: (n) => notices.push(n),
    });
    await uploader.start(); // returns by itself: a refused key stops it
    const status = uploader.status();
    const drained = await uploader.drainNow();
    await uploader.close();
    assert.equal(status.state, "unauthorized");
    assert.equal(status.lastError?.status, 401);
    assert.equal(status.pending, 10);
    assert.equal(drained.ok, false);
    assert.match(drained.reason ?? "", /refused the API key \(401\)/);
    assert.equal(notices.length, 1);
    assert.equal(notices[0]?.code, "unauthorized");
    assert.match(notices[0]!.message, /sentry login --api-key KEY/);
    assert.equal(collector.calls.length, 1, "no retry with a refused key");
    assert.deepEqual(collector.storedIds(), []);
  });
});

Deno.test("413 halves the batch until the collector takes it", async () => {
  await withSetup(async ({ host, collector, options }) => {
    const ids = host.write("S1", 300);
    const uploader = createUploader(host.journal, options);
    const result = await uploader.drainNow({ timeoutMs: 20_000 });
    await uploader.close();
    assert.equal(result.ok, true);
    // The collector takes at most 100 events: 300 is refused, then about 150, then 75 goes.
    const sizes = collector.calls.map((c) => c.body.events.length);
    assert.equal(sizes[0], 300);
    assert.ok(sizes[1]! >= 140 && sizes[1]! <= 150, `then ${sizes[1]}`);
    assert.ok(sizes[2]! >= 70 && sizes[2]! <= 75, `then ${sizes[2]}`);
    assert.ok(sizes.slice(2).every((n) => n <= 75));
    assert.deepEqual(collector.storedIds(), [...ids].sort());
  }, { limits: { maxEvents: 100 } });
});

Deno.test("an event the collector refuses on its own as too large is dropped, counted and reported", async () => {
  await withSetup(async ({ host, collector, options }) => {
    const before = host.write("S1", 5);
    const [big] = host.write("S1", 1, 200_000);
    const after = host.write("S1", 5);
    const notices: SyncNotice[] = [];
    const uploader = createUploader(host.journal, { ...options, onNotice: (n) => notices.push(n) });
    const result = await uploader.drainNow({ timeoutMs: 20_000 });
    await uploader.close();
    assert.equal(result.ok, true);
    assert.deepEqual(collector.storedIds(), [...before, ...after].sort());
    assert.ok(!collector.storedIds().includes(big!));
    assert.equal(host.journal.syncState(DROPPED_KEY), "1");
    assert.equal(collector.hosts()[0]?.dropped, 1);
    assert.deepEqual(notices.map((n) => n.code), ["event_refused"]);
    assert.match(notices[0]!.message, new RegExp(big!));
    // Once it is gone, batches are whole again: the 5 events after it go in one.
    assert.deepEqual(collector.calls.at(-1)?.body.events.map((e) => e.id), after);
  }, { limits: { maxJsonBytes: 100_000 } });
});

Deno.test("429 and 503 wait for Retry-After, in seconds or as an HTTP date", async () => {
  const clock = fakeClock();
  await withSetup(async ({ host, collector, options }) => {
    const ids = host.write("S1", 20);
    const uploader = createUploader(host.journal, { ...options, ...clock, trimEveryMs: 60_000 });
    const result = await uploader.drainNow({ timeoutMs: 600_000 });
    await uploader.close();
    assert.equal(result.ok, true);
    const at = collector.calls.map((c) => c.at);
    assert.equal(at.length, 3);
    assert.equal(at[1]! - at[0]!, 7000);
    assert.equal(at[2]! - at[1]!, 30_000);
    assert.deepEqual(collector.storedIds(), [...ids].sort());
  }, {
    now: clock.now,
    faults: (call) => {
      if (call.n === 1) return { kind: "status", status: 429, headers: { "retry-after": "7" } };
      if (call.n === 2) {
        const date = new Date(clock.now() + 30_000).toUTCString();
        return { kind: "status", status: 503, headers: { "retry-after": date } };
      }
      return null;
    },
  });
});

Deno.test("500s and unreachable collectors back off exponentially with full jitter; success resets it", async () => {
  const clock = fakeClock();
  const port = freePort(); // nothing listens there yet
  await withSetup(async ({ host, collector, options }) => {
    const ids = host.write("S1", 5);
    const down = createUploader(host.journal, {
      ...options,
      ...clock,
      endpoint: `http://127.0.0.1:${port}`,
      random: () => 0.5,
      trimEveryMs: 3_600_000,
      leaseTtlMs: 3_600_000,
    });
    const failed = await down.drainNow({ timeoutMs: 100_000 });
    await down.close();
    assert.equal(failed.ok, false);
    assert.match(failed.reason ?? "", /Cannot reach the collector/);
    // Half of 1, 2, 4, 8, 16, 32, 64 s: the next (64 s) would pass the deadline.
    assert.deepEqual(clock.slept.slice(0, 7), [500, 1000, 2000, 4000, 8000, 16_000, 32_000]);

    clock.slept.length = 0;
    const uploader = createUploader(host.journal, {
      ...options,
      ...clock,
      random: () => 0.5,
      backoffMaxMs: 4000,
      trimEveryMs: 3_600_000,
    });
    const result = await uploader.drainNow({ timeoutMs: 600_000 });
    const more = host.write("S1", 1);
    const again = await uploader.drainNow({ timeoutMs: 600_000 });
    await uploader.close();
    assert.equal(result.ok && again.ok, true);
    // Four 500s: 0.5, 1, 2 s, then the 4 s ceiling; a success; then one 500 starts over.
    assert.deepEqual(clock.slept, [500, 1000, 2000, 2000, 500]);
    assert.deepEqual(collector.storedIds(), [...ids, ...more].sort());
  }, {
    faults: (call) => call.n <= 4 || call.n === 6 ? { kind: "status", status: 500 } : null,
  });
});

Deno.test("a 400 naming one event sets it aside (kept locally, counted as dropped) and sends the rest", async () => {
  const clock = fakeClock();
  await withSetup(async ({ host, collector, options }) => {
    host.write("S1", 2);
    // An event the collector does not accept (a kind newer than it knows, say).
    const bogus = createUlid()();
    host.journal.append({
      ...JSON.parse(JSON.stringify(host.journal.queryEvents()[0])),
      id: bogus,
      kind: "bogus.kind",
    });
    host.journal.flush();
    host.write("S1", 2);
    const notices: SyncNotice[] = [];
    const uploader = createUploader(host.journal, {
      ...options,
      ...clock,
      random: () => 1,
      onNotice: (n) => notices.push(n),
    });
    const result = await uploader.drainNow({ timeoutMs: 10_000 });
    const status = uploader.status();
    await uploader.close();
    assert.equal(result.ok, true);
    assert.equal(status.pending, 0);
    const local = host.journal.queryEvents().map((e) => e.id);
    assert.ok(local.includes(bogus), "the refused event stays in the local journal");
    assert.deepEqual(collector.storedIds().sort(), local.filter((id) => id !== bogus).sort());
    assert.equal(host.journal.syncState(DROPPED_KEY), "1");
    assert.equal(notices.filter((n) => n.code === "event_refused").length, 1);
    assert.match(notices[0]!.message, /refused event .*field "events\[2\]\.kind"/);
  });
});

Deno.test("a 400 that names no event keeps the rows, backs off and records the field", async () => {
  const clock = fakeClock();
  await withSetup(async ({ host, collector, options }) => {
    host.write("S1", 2);
    const uploader = createUploader(host.journal, { ...options, ...clock, random: () => 1 });
    const result = await uploader.drainNow({ timeoutMs: 10_000 });
    const status = uploader.status();
    await uploader.close();
    assert.equal(result.ok, false);
    assert.equal(status.pending, 2);
    assert.equal(status.lastError?.status, 400);
    assert.match(status.lastError!.message, /field "protocol"/);
    assert.ok(collector.calls.length >= 3, "it kept trying");
    assert.deepEqual(collector.storedIds(), []);
  }, {
    faults: () => ({ kind: "status", status: 400, error: "Unsupported", field: "protocol" }),
  });
});

Deno.test("only the lease holder uploads; another takes over when it closes, or at once when it died", async () => {
  await withSetup(async ({ host, collector, options }) => {
    host.write("S1", 50);
    const a = createUploader(host.journal, { ...options, owner: "host-a:1:a", pollMs: 20 });
    const b = createUploader(host.journal, { ...options, owner: "host-a:1:b", pollMs: 20 });
    assert.equal((await a.drainNow()).ok, true);
    host.write("S1", 10);
    const standby = await b.drainNow({ timeoutMs: 200 });
    assert.equal(standby.ok, false);
    assert.match(standby.reason ?? "", /another Sentry process \(pid 1\) holds the upload lease/);
    assert.equal(b.status().state, "standby");
    assert.equal(b.status().lease?.owner, "host-a:1:a");
    await a.close(); // releases the lease
    assert.equal((await b.drainNow()).ok, true);
    await b.close();

    // A holder that died (its pid is gone) does not make the others wait for its lease.
    host.journal.setSyncState(LEASE_KEY, `host-a:999999:dead ${Date.now() + 3_600_000}`);
    const ids = host.write("S1", 5);
    const c = createUploader(host.journal, {
      ...options,
      hostname: "host-a",
      isAlive: () => false,
    });
    assert.equal((await c.drainNow({ timeoutMs: 5000 })).ok, true);
    await c.close();
    assert.ok(ids.every((id) => collector.storedIds().includes(id)));
    assert.equal(collector.storedIds().length, 65);
  });
});

Deno.test("the cap drops the oldest, warns once per crossing, and the dropped count reaches the collector", async () => {
  const clock = fakeClock();
  const port = freePort();
  await withSetup(async ({ host, collector, options }) => {
    const notices: SyncNotice[] = [];
    const offline = createUploader(host.journal, {
      ...options,
      ...clock,
      endpoint: `http://127.0.0.1:${port}`,
      outboxMaxEvents: 100,
      trimEveryMs: 0,
      onNotice: (n) => notices.push(n),
    });
    host.write("S1", 150);
    await offline.drainNow({ timeoutMs: 1000 });
    const first = host.write("S1", 30);
    await offline.drainNow({ timeoutMs: 1000 });
    const status = offline.status();
    await offline.close();
    assert.deepEqual(notices.map((n) => n.code), ["outbox_full"]);
    assert.match(notices[0]!.message, /cap of 100 events: dropped the 50 oldest/);
    assert.deepEqual([status.pending, status.dropped, status.overCap], [100, 80, true]);

    const online = createUploader(host.journal, { ...options, outboxMaxEvents: 100 });
    assert.equal((await online.drainNow()).ok, true);
    await online.close();
    const kept = host.ids().slice(-100);
    assert.deepEqual(collector.storedIds(), kept);
    assert.ok(first.every((id) => kept.includes(id)), "the newest are kept");
    assert.equal(collector.hosts()[0]?.dropped, 80);
  });
});

Deno.test("status() shows the outbox, the last success and error, the next attempt and the lease", async () => {
  const clock = fakeClock();
  await withSetup(async ({ host, options }) => {
    host.write("S1", 4);
    const uploader = createUploader(host.journal, {
      ...options,
      ...clock,
      owner: "host-a:77:x",
      random: () => 0.5,
    });
    const empty = uploader.status();
    assert.equal(empty.pending, 4);
    assert.equal(empty.lastSuccessAt, null);
    await uploader.drainNow({ timeoutMs: 1 }); // one 500, then out of time
    const failing = uploader.status();
    assert.equal(failing.state, "backoff");
    assert.equal(failing.lastError?.status, 500);
    assert.equal(failing.nextAttemptAt, new Date(clock.now() + 500).toISOString());
    assert.equal(failing.lease?.pid, 77);
    assert.equal(failing.holdsLease, true);
    assert.ok(failing.oldestAgeMs !== null);
    await uploader.drainNow();
    const ok = uploader.status();
    await uploader.close();
    assert.equal(ok.pending, 0);
    assert.equal(ok.lastSuccessAt, new Date(clock.now()).toISOString());
    assert.equal(ok.nextAttemptAt, null);
    assert.equal(ok.recorded?.accepted, 4);
    // After close: the lease is released and the journal says the uploader stopped.
    assert.equal(host.journal.syncState(LEASE_KEY), undefined);
    assert.equal(JSON.parse(host.journal.syncState("uploader")!).state, "stopped");
  }, { faults: (call) => call.n === 1 ? { kind: "status", status: 500 } : null });
});

Deno.test("start() uploads what is journaled while it runs, until it is closed", async () => {
  await withSetup(async ({ host, collector, options }) => {
    const uploader = createUploader(host.journal, { ...options, pollMs: 10 });
    const running = uploader.start();
    const ids: string[] = [];
    for (let i = 0; i < 10; i++) {
      ids.push(...host.write("S1", 25));
      await new Promise((r) => setTimeout(r, 15));
    }
    const deadline = Date.now() + 10_000;
    const done = () =>
      collector.storedIds().length === ids.length && host.journal.outboxPeek(1).length === 0;
    while (!done() && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 20));
    }
    await uploader.close();
    await running;
    assert.deepEqual(collector.storedIds(), [...ids].sort());
    assert.equal(host.journal.outboxStats().pending, 0);
  });
});

Deno.test("lastAttemptSucceeded() is true with no failure, or a success since the last one", () => {
  const failure = { at: "2026-12-06T10:00:00.000Z", message: "refused", status: null };
  assert.equal(lastAttemptSucceeded({ lastError: null, lastSuccessAt: null }), true);
  assert.equal(lastAttemptSucceeded({ lastError: failure, lastSuccessAt: null }), false);
  const before = "2026-12-06T09:59:59.999Z";
  assert.equal(lastAttemptSucceeded({ lastError: failure, lastSuccessAt: before }), false);
  const after = "2026-12-06T10:00:00.001Z";
  assert.equal(lastAttemptSucceeded({ lastError: failure, lastSuccessAt: after }), true);
});
