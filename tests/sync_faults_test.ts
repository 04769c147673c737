/**
 * The uploader against the real collector while faults are injected: the collector down at
 * start, 500s, 429 with Retry-After, slow answers past the client's timeout, connections cut in
 * the middle of a batch, and the uploading process killed with SIGKILL during an upload. In
 * every case the collector must end with exactly the journaled events, none lost and none
 * stored twice, and its duplicate counter must account for every event sent again. Also: the
 * outbox cap, and `sentry sync now|status` from the CLI. Loopback only; each test is bounded.
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { createUlid } from "../src/events/mod.ts";
import { JOURNAL_FILE, openJournal } from "../src/journal/mod.ts";
import { createUploader, type UploaderOptions } from "../src/sync/mod.ts";
import {
  type CollectorOptions,
  freePort,
  openTestJournal,
  startCollector,
  startProxy,
  type TestCollector,
  testEvent,
  type TestJournal,
  testSession,
} from "../src/sync/_testing.ts";
import { delay, Sandbox, waitFor } from "./_helpers.ts";

const HOST = { id: createUlid()(), name: "host-a" };
const FIXTURE = fileURLToPath(new URL("./fixtures/sync_uploader.ts", import.meta.url));
const CONFIG = fileURLToPath(new URL("../deno.json", import.meta.url));

/** Fast retries, so that each test takes seconds. */
const QUICK: Partial<UploaderOptions> = {
  pollMs: 20,
  backoffBaseMs: 50,
  backoffMaxMs: 400,
  requestTimeoutMs: 5000,
};

/** Journals `count` events in ticks of `perTick` every `everyMs`, as a watched agent would. */
async function journalSteadily(
  host: TestJournal,
  options: { count: number; perTick: number; everyMs: number },
): Promise<void> {
  for (let done = 0; done < options.count; done += options.perTick) {
    host.write("S1", Math.min(options.perTick, options.count - done));
    await delay(options.everyMs);
  }
}

/** Waits until the collector holds as many events as the journal and the outbox is empty. */
async function settle(host: TestJournal, collector: TestCollector): Promise<void> {
  await waitFor(
    () =>
      host.journal.outboxPeek(1).length === 0 &&
      collector.storedIds().length >= host.ids().length,
    {
      what: "the collector to hold every journaled event",
      timeoutMs: 20_000,
      detail: () =>
        `journal ${host.ids().length}, collector ${collector.storedIds().length}, outbox ${host.journal.outboxStats().pending}`,
    },
  );
}

/**
 * The count: exactly the journaled ids at the collector, each once, and every event the
 * collector was sent either stored once or counted as a duplicate.
 */
function assertExactlyOnce(host: TestJournal | string[], collector: TestCollector): number {
  const journaled = Array.isArray(host) ? [...host].sort() : host.ids();
  const stored = collector.storedIds();
  assert.equal(new Set(stored).size, stored.length, "an event stored twice");
  assert.deepEqual(stored, journaled, "the collector's events differ from the journal's");
  const [record] = collector.hosts();
  assert.ok(record !== undefined, "the collector knows the host");
  assert.equal(record.events, journaled.length, "accepted events");
  const sent = collector.calls.reduce((n, c) => n + c.body.events.length, 0);
  return sent - journaled.length; // events sent more than once, by this count
}

async function withWorld(
  body: (host: TestJournal, collector: TestCollector) => Promise<void>,
  options: CollectorOptions = {},
): Promise<void> {
  const host = openTestJournal();
  const collector = startCollector(options);
  try {
    await body(host, collector);
  } finally {
    await collector.dispose();
    host.dispose();
  }
}

function uploaderOptions(endpoint: string, collector: TestCollector): UploaderOptions {
  return { endpoint, apiKey: collector.key, host: HOST, ...QUICK };
}

Deno.test("sync: the collector is down at start, then comes up: every event arrives once", async () => {
  const port = freePort();
  await withWorld(async (host, collector) => {
    await collector.stop(); // it listens on `port` only later
    const uploader = createUploader(host.journal, uploaderOptions(collector.url, collector));
    const running = uploader.start();
    const writing = journalSteadily(host, { count: 3000, perTick: 50, everyMs: 20 });
    // Under load an attempt may still be under way at any fixed moment: wait for the back-off.
    let down = uploader.status();
    for (let i = 0; i < 100 && down.state !== "backoff"; i++) {
      await delay(50);
      down = uploader.status();
    }
    assert.equal(down.state, "backoff");
    assert.match(down.lastError?.message ?? "", /Cannot reach the collector.*refused/i);
    collector.start();
    await writing;
    await settle(host, collector);
    await uploader.close();
    await running;
    assert.equal(assertExactlyOnce(host, collector), 0);
    assert.equal(collector.hosts()[0]?.duplicates, 0);
  }, { port });
});

Deno.test("sync: 500s are retried until they pass: every event arrives once", async () => {
  await withWorld(async (host, collector) => {
    const uploader = createUploader(host.journal, uploaderOptions(collector.url, collector));
    const running = uploader.start();
    await journalSteadily(host, { count: 2000, perTick: 100, everyMs: 10 });
    await settle(host, collector);
    await uploader.close();
    await running;
    const failed = collector.calls.filter((c) => c.n % 2 === 1 && c.n <= 11);
    const refused = failed.reduce((n, c) => n + c.body.events.length, 0);
    // Refused batches stored nothing, so what was sent again are exactly their events.
    assert.equal(assertExactlyOnce(host, collector), refused);
    assert.equal(collector.hosts()[0]?.duplicates, 0);
    assert.ok(failed.length >= 3, `${failed.length} refused batches`);
  }, { faults: (c) => c.n % 2 === 1 && c.n <= 11 ? { kind: "status", status: 500 } : null });
});

Deno.test("sync: 429 with Retry-After is honoured: every event arrives once", async () => {
  await withWorld(async (host, collector) => {
    const uploader = createUploader(host.journal, uploaderOptions(collector.url, collector));
    const running = uploader.start();
    await journalSteadily(host, { count: 800, perTick: 100, everyMs: 10 });
    await settle(host, collector);
    await uploader.close();
    await running;
    const [first, second] = collector.calls;
    assert.ok(second!.at - first!.at >= 1000, `retried after ${second!.at - first!.at} ms`);
    assertExactlyOnce(host, collector);
    assert.equal(collector.hosts()[0]?.duplicates, 0);
  }, {
    faults: (c) =>
      c.n === 1 || c.n === 3
        ? { kind: "status", status: 429, headers: { "retry-after": "1" } }
        : null,
  });
});

Deno.test("sync: answers slower than the client's timeout: batches stored twice are counted once", async () => {
  await withWorld(async (host, collector) => {
    const uploader = createUploader(host.journal, {
      ...uploaderOptions(collector.url, collector),
      requestTimeoutMs: 300,
    });
    const running = uploader.start();
    await journalSteadily(host, { count: 2000, perTick: 100, everyMs: 10 });
    await settle(host, collector);
    await uploader.close();
    await running;
    // Calls 2 and 5 were stored, but answered after the client gave up: it sent them again.
    // (A loaded machine may make another answer late too: the counts must still agree.)
    const slow = [collector.calls[1]!, collector.calls[4]!];
    const expected = slow.reduce((n, c) => n + c.body.events.length, 0);
    assert.ok(expected > 0);
    const resent = assertExactlyOnce(host, collector);
    assert.equal(collector.hosts()[0]?.duplicates, resent);
    assert.ok(resent >= expected, `${resent} events sent again, expected at least ${expected}`);
  }, { faults: (c) => c.n === 2 || c.n === 5 ? { kind: "slow", delayMs: 700 } : null });
});

Deno.test("sync: connections cut in the middle of a batch and before the answer: every event once", async () => {
  await withWorld(async (host, collector) => {
    // Connection 1 is cut after 3 kB of the first request (the batch never arrives whole);
    // connection 2 delivers its batch but is closed before the answer comes back.
    const proxy = startProxy(
      collector.port,
      (n) => n === 1 ? { cutAfterRequestBytes: 3000 } : n === 2 ? { dropResponse: true } : null,
    );
    try {
      host.write("S1", 1500);
      const uploader = createUploader(host.journal, uploaderOptions(proxy.url, collector));
      const result = await uploader.drainNow({ timeoutMs: 20_000 });
      await uploader.close();
      assert.equal(result.ok, true, result.reason ?? "");
      assert.ok(proxy.connections() >= 3, `${proxy.connections()} connections`);
      // The cut batch never reached the collector's handler whole: the first call it saw is the
      // one whose answer was dropped, and its events came again in the next.
      const dropped = collector.calls[0]!.body.events.length;
      assert.equal(dropped, 500);
      assert.equal(collector.hosts()[0]?.duplicates, dropped);
      assert.equal(assertExactlyOnce(host, collector), dropped);
    } finally {
      await proxy.close();
    }
  });
});

Deno.test("sync: Sentry killed with SIGKILL during an upload, then restarted: every event once", async () => {
  const sandbox = await Sandbox.create();
  let release: () => void = () => {};
  const gate = new Promise<void>((r) => release = r);
  // Once 400 events are stored, every batch is stored and its answer held until the kill.
  let storedSoFar = 0;
  const collector: TestCollector = startCollector({
    faults: () => {
      storedSoFar = collector.storedIds().length;
      return storedSoFar >= 400 ? { kind: "hold", until: gate } : null;
    },
  });
  try {
    const path = join(sandbox.data, JOURNAL_FILE);
    await Deno.mkdir(sandbox.data, { recursive: true });
    const args = ["run", "-A", "--config", CONFIG, FIXTURE, path, collector.url, collector.key];
    const first = sandbox.spawnRaw(Deno.execPath(), [...args, "3000", "1000"]);
    // Kill it while the collector holds a stored batch it has not confirmed.
    await waitFor(() => collector.held() > 0, {
      what: "a stored, unconfirmed batch",
      timeoutMs: 20_000,
      detail: () => first.stderr,
    });
    await delay(200); // meanwhile more events are journaled, not yet in any batch
    first.kill("SIGKILL");
    assert.equal(await first.exit(), 137);
    release();
    const storedAtKill = collector.storedIds().length;

    // Restarted, it journals nothing new: it resumes the outbox where the crash left it.
    const second = sandbox.spawnRaw(Deno.execPath(), [...args, "0", "0"]);
    await second.waitForStdout("drained", 30_000);
    second.kill("SIGTERM");
    assert.equal(await second.exit(), 0, second.stderr);

    const journal = openJournal(path);
    const journaled = journal.queryEvents({ limit: 1_000_000 }).map((e) => e.id);
    assert.equal(journal.outboxStats().pending, 0);
    journal.close();
    assert.ok(journaled.length < 3000, "the kill came before the end");
    assert.ok(journaled.length > storedAtKill, "some events were only in the outbox at the kill");
    const resent = assertExactlyOnce(journaled, collector);
    // The held batch was stored but never confirmed: the restarted process sent it again.
    assert.ok(resent > 0, "nothing was sent twice: the kill came between uploads");
    assert.equal(collector.hosts()[0]?.duplicates, resent);
  } finally {
    release();
    await collector.dispose();
    await sandbox.dispose();
  }
});

Deno.test("sync: past the outbox cap, sentry sync now warns, keeps the newest and reports the dropped count", async () => {
  const sandbox = await Sandbox.create();
  const port = freePort();
  const collector = startCollector({ port });
  await collector.stop();
  try {
    await Deno.mkdir(sandbox.data, { recursive: true });
    await sandbox.write("sentry/config.yaml", "sync:\n  outbox_max_events: 1000\n");
    const journal = openJournal(join(sandbox.data, JOURNAL_FILE), { outbox: true });
    journal.createSession(testSession("S1"));
    const ids: string[] = [];
    for (let i = 0; i < 1300; i++) {
      const event = testEvent("S1", i);
      ids.push(event.id);
      journal.append(event);
    }
    journal.close();
    const env = { SENTRY_API_KEY: collector.key, SENTRY_ENDPOINT: collector.url };

    const offline = await sandbox.sentry(["sync", "now", "--timeout", "1"], { env });
    assert.equal(offline.code, 1, offline.stderr);
    assert.match(
      offline.stderr,
      /warning: Sync outbox is full at its cap of 1000 events: dropped the 300 oldest/,
    );
    assert.match(offline.stderr, /Sync did not finish: .*Cannot reach the collector/);
    assert.equal(offline.stderr.match(/outbox is full/g)?.length, 1, "said once");

    const status = JSON.parse((await sandbox.sentry(["sync", "status", "--json"], { env })).stdout);
    assert.deepEqual(
      [status.pending, status.dropped, status.dropped_synced, status.outbox_max_events],
      [1000, 300, 0, 1000],
    );
    assert.match(status.last_error.message, /Cannot reach the collector/);
    assert.equal(status.key_source, "env:SENTRY_API_KEY");
    assert.ok(!JSON.stringify(status).includes(collector.key), "the key is never printed");

    collector.start();
    const online = await sandbox.sentry(["sync", "now"], { env });
    assert.equal(online.code, 0, online.stderr);
    assert.match(online.stdout, /synced 1000 events in 2 batches .*the outbox is empty/);
    assert.deepEqual(collector.storedIds(), ids.slice(300).sort());
    assert.ok(collector.calls.every((c) => c.body.dropped === 300));
    assert.equal(collector.hosts()[0]?.dropped, 300);
    const after = JSON.parse((await sandbox.sentry(["sync", "status", "--json"], { env })).stdout);
    assert.deepEqual([after.pending, after.dropped_synced, after.accepted], [0, 300, 1000]);
  } finally {
    await collector.dispose();
    await sandbox.dispose();
  }
});

Deno.test("sync: sentry sync now without an API key exits 2 with the fix", async () => {
  const sandbox = await Sandbox.create();
  try {
    const out = await sandbox.sentry(["sync", "now"]);
    assert.equal(out.code, 2);
    assert.equal(
      out.stderr,
      'sentry: No API key: sync needs one\nhint: run "sentry login --api-key KEY" (or set SENTRY_API_KEY)\n',
    );
    const status = await sandbox.sentry(["sync", "status"]);
    assert.equal(status.code, 0);
    assert.match(status.stdout, /api key\s+none: run "sentry login --api-key KEY"/);
    assert.match(status.stdout, /outbox\s+empty/);
  } finally {
    await sandbox.dispose();
  }
});
