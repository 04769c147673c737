/**
 * Sync wired into `sentry run`, end to end: with a key, every event of a real agent reaches a
 * real collector exactly once, with the session's final state; without one, nothing is queued.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { PYTHON, withSandbox } from "./_helpers.ts";
import { withCollector } from "./_loopback_collector.ts";

const AGENT = `
import os, time
for i in range(20):
    with open(f"f{i}.txt", "w") as f:
        f.write(str(i))
    time.sleep(0.02)
time.sleep(0.3)
`;

Deno.test("`sentry run` with a key uploads every journaled event once, and the session's end", async () => {
  await withCollector(async (c) => {
    await withSandbox(async (sb) => {
      const agent = await sb.write("agent.py", AGENT);
      const env = { SENTRY_API_KEY: c.key, SENTRY_ENDPOINT: c.endpoint };
      const run = await sb.sentry(["run", "--no-api", "--", PYTHON, agent], { env });
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stderr, new RegExp(`syncing events to ${c.endpoint}`));
      const local = await sb.events();
      assert.ok(local.length >= 20, `only ${local.length} events`);
      const [session] = await sb.sessions();
      // The last batch goes out at exit: the collector has everything when run returns.
      const remote = c.journal.queryEvents({ session: session!.id, limit: 10_000 });
      assert.deepEqual(remote.map((e) => e.id).sort(), local.map((e) => e.id).sort());
      assert.deepEqual(remote, local.toSorted((a, b) => a.id < b.id ? -1 : 1));
      const stored = c.journal.getSession(session!.id);
      assert.equal(stored.state, "ended");
      assert.equal(stored.exitCode, 0);
      const status = JSON.parse((await sb.sentry(["sync", "status", "--json"], { env })).stdout);
      assert.equal(status.pending, 0, JSON.stringify(status));
    });
  });
});

Deno.test("`sentry run` without a key queues nothing for upload", async () => {
  await withSandbox(async (sb) => {
    const agent = await sb.write("agent.py", AGENT);
    const run = await sb.sentry(["run", "--no-api", "--", PYTHON, agent]);
    assert.equal(run.code, 0, run.stderr);
    assert.doesNotMatch(run.stderr, /syncing/);
    const db = new DatabaseSync(join(sb.data, "journal.db"), { readOnly: true });
    try {
      assert.equal(db.prepare("SELECT count(*) AS n FROM outbox").get()?.["n"], 0);
      assert.ok(Number(db.prepare("SELECT count(*) AS n FROM events").get()?.["n"]) >= 20);
    } finally {
      db.close();
    }
  });
});

Deno.test("`sentry run` after a failed upload still sends its last events and its end at exit", async () => {
  await withCollector(async (c) => {
    await withSandbox(async (sb) => {
      const agent = await sb.write("agent.py", AGENT);
      // A first run while the collector cannot be reached: the uploader records the failure.
      const down = { SENTRY_API_KEY: c.key, SENTRY_ENDPOINT: "http://127.0.0.1:9" };
      const first = await sb.sentry(["run", "--no-api", "--", PYTHON, agent], { env: down });
      assert.equal(first.code, 0, first.stderr);
      const failed = JSON.parse(
        (await sb.sentry(["sync", "status", "--json"], { env: down }))
          .stdout,
      );
      assert.ok(failed.pending > 0 && failed.lastError !== null, JSON.stringify(failed));
      // The collector is back: a short run sends both sessions, whole, before it returns.
      const env = { SENTRY_API_KEY: c.key, SENTRY_ENDPOINT: c.endpoint };
      const second = await sb.sentry(["run", "--no-api", "--", PYTHON, agent], { env });
      assert.equal(second.code, 0, second.stderr);
      const sessions = await sb.sessions();
      assert.equal(sessions.length, 2);
      for (const session of sessions) {
        const stored = c.journal.getSession(session.id);
        assert.equal(stored.state, "ended", session.id);
        const remote = c.journal.queryEvents({ session: session.id, limit: 10_000 });
        const mine = await sb.events(session.id);
        assert.ok(mine.length >= 20, `${session.id}: ${mine.length} events`);
        assert.deepEqual(remote.map((e) => e.id).sort(), mine.map((e) => e.id).sort());
      }
      const status = JSON.parse((await sb.sentry(["sync", "status", "--json"], { env })).stdout);
      assert.equal(status.pending, 0, JSON.stringify(status));
    });
  });
});
