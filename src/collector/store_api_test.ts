import assert from "node:assert/strict";
import {
  API_TOKEN,
  batchRequest,
  type Collector,
  makeBatch,
  makeEvent,
  makeSession,
  openCollector,
  storeSuite,
  type TestBackend,
  ulid,
} from "./_testing.ts";
import { hostMetricLines } from "./store_api.ts";
import { postgresSkip, startPostgres } from "./_pg_testing.ts";

/** Each case runs against SQLite, and against PostgreSQL. */
const test = storeSuite("the collector API's routes over the store");

const AUTH = { authorization: `Bearer ${API_TOKEN}` };

/** A collector with one key and one stored session of `n` events from host `host`. */
async function withSession(
  backend: TestBackend,
  n: number,
  body: (c: Collector, s: { id: string; host: string; key: string; events: string[] }) => Promise<
    void
  >,
): Promise<void> {
  const c = await openCollector({}, backend);
  try {
    const key = await c.store.addKey("laptop");
    const host = ulid();
    const id = ulid();
    const events = Array.from({ length: n }, (_, i) => makeEvent(id, i));
    const sent = await c.app.request(
      "/v1/sync/batches",
      await batchRequest(
        makeBatch({ hostId: host, sessions: [makeSession(id)], events, dropped: 3 }),
        { key: key.key },
      ),
    );
    assert.equal(sent.status, 200, await sent.text());
    await body(c, { id, host, key: key.info.id, events: events.map((e) => e.id) });
  } finally {
    await c.close();
  }
}

test("/metrics gives the API's families and each host's stored and dropped events", async (b) => {
  await withSession(b, 7, async (c, s) => {
    const r = await c.app.request("/metrics", { headers: AUTH });
    assert.equal(r.status, 200);
    assert.equal(r.headers.get("content-type"), "text/plain; version=0.0.4; charset=utf-8");
    const text = await r.text();
    assert.match(text, /^sentry_uptime_seconds [0-9.e-]+$/m);
    assert.match(
      text,
      new RegExp(`^sentry_session_tier\\{session="${s.id}",tier="unknown"\\} 1$`, "m"),
    );
    assert.ok(
      text.includes(
        `sentry_collector_host_events_total{host_id="${s.host}",key_id="${s.key}"} 7\n`,
      ),
      text,
    );
    assert.ok(
      text.includes(
        `sentry_collector_host_dropped_total{host_id="${s.host}",key_id="${s.key}"} 3\n`,
      ),
      text,
    );
    // The journal's write figures are this process's SQLite journal's: none on PostgreSQL.
    assert.equal(text.includes("sentry_journal_write_seconds_count"), b.name === "sqlite");
    const anonymous = await c.app.request("/metrics");
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
  });
});

test("the event stream replays the stored events after Last-Event-ID, by session", async (b) => {
  await withSession(b, 8, async (c, s) => {
    const controller = new AbortController();
    const r = await c.app.request(`/v1/events/stream?session=${s.id.slice(0, 20)}`, {
      headers: { ...AUTH, "last-event-id": s.events[2]!.toLowerCase() },
      signal: controller.signal,
    });
    assert.equal(r.status, 200);
    const reader = r.body!.pipeThrough(new TextDecoderStream()).getReader();
    let text = "";
    const deadline = Date.now() + 5000;
    try {
      while (!text.includes(`id: ${s.events[7]}\n`) && Date.now() < deadline) {
        const { value, done } = await reader.read();
        if (done) break;
        text += value;
      }
    } finally {
      controller.abort();
      await reader.cancel().catch(() => {});
    }
    const ids = [...text.matchAll(/^id: (\S+)$/gm)].map((m) => m[1]);
    assert.deepEqual(ids, s.events.slice(3));
    // The stream of the collector names no session of its own (that is `sentry run`'s).
    assert.ok(!text.includes("event: server"), text.slice(0, 300));
  });
});

test("a stream with a Last-Event-ID that is no event id gets 400 naming the header", async (b) => {
  await withSession(b, 1, async (c) => {
    const r = await c.app.request("/v1/events/stream", {
      headers: { ...AUTH, "last-event-id": "not-an-id" },
    });
    assert.equal(r.status, 400);
    assert.deepEqual(await r.json(), {
      error: "Invalid Last-Event-ID: must be an event id (ULID)",
      field: "Last-Event-ID",
    });
  });
});

test("a policy reload of a remote session is refused with 409, and of none with 404", async (b) => {
  await withSession(b, 1, async (c, s) => {
    const reload = await c.app.request(`/v1/sessions/${s.id}/policy/reload`, {
      method: "POST",
      headers: AUTH,
    });
    assert.equal(reload.status, 409);
    assert.deepEqual(await reload.json(), { error: "This API cannot reload a session's policy" });
    const missing = await c.app.request(`/v1/sessions/${ulid()}/policy/reload`, {
      method: "POST",
      headers: AUTH,
    });
    assert.equal(missing.status, 404);
    assert.equal((await missing.json()).field, "id");
    const rollback = await c.app.request(`/v1/sessions/${s.id}/rollback`, {
      method: "POST",
      headers: { ...AUTH, "content-type": "application/json" },
      body: JSON.stringify({ dry_run: true }),
    });
    assert.equal(rollback.status, 409);
    assert.match((await rollback.json()).error, /cannot be controlled from the collector/);
  });
});

test("an event of a template's session is explained the same way on both stores", async (b) => {
  await withSession(b, 2, async (c, s) => {
    const r = await c.app.request(`/v1/events/${s.events[1]}/explain`, { headers: AUTH });
    assert.equal(r.status, 200, await r.clone().text());
    const body = await r.json();
    assert.equal(body.event.id, s.events[1]);
    assert.equal(body.policy.name, "coding-agent");
    const missing = ulid();
    const none = await c.app.request(`/v1/events/${missing}/explain`, { headers: AUTH });
    assert.equal(none.status, 404);
    assert.deepEqual(await none.json(), { error: `No event "${missing}"`, field: "id" });
  });
});

Deno.test("hostMetricLines() gives one sample per host and key in each family", () => {
  const host = {
    host_id: "01HOST",
    name: "a",
    key_id: "01KEY",
    key_name: "k",
    first_seen: "2026-11-24T18:00:00.000Z",
    last_seen: "2026-11-24T18:00:00.000Z",
    batches: 1,
    events: 5,
    duplicates: 0,
    dropped: 2,
    sessions: 1,
  };
  const lines = hostMetricLines([host, { ...host, key_id: "01OTHER", events: 1, dropped: 0 }]);
  assert.deepEqual(lines.filter((l) => !l.startsWith("#")), [
    'sentry_collector_host_events_total{host_id="01HOST",key_id="01KEY"} 5',
    'sentry_collector_host_events_total{host_id="01HOST",key_id="01OTHER"} 1',
    'sentry_collector_host_dropped_total{host_id="01HOST",key_id="01KEY"} 2',
    'sentry_collector_host_dropped_total{host_id="01HOST",key_id="01OTHER"} 0',
  ]);
  assert.deepEqual(hostMetricLines([]).length, 4, "HELP and TYPE of both families");
});

Deno.test({
  name:
    "[postgres] with the database down, the API and the upload route answer 503 with Retry-After, and no internals",
  ignore: postgresSkip() !== null,
  async fn() {
    const pg = await startPostgres();
    try {
      const c = await openCollector({}, { name: "postgres", pg });
      try {
        const key = (await c.store.addKey("laptop")).key;
        const host = ulid();
        const session = ulid();
        const body = makeBatch({
          hostId: host,
          sessions: [makeSession(session)],
          events: [0, 1, 2].map((i) => makeEvent(session, i)),
        });
        const stored = await c.app.request("/v1/sync/batches", await batchRequest(body, { key }));
        assert.equal(stored.status, 200, await stored.text());
        const port = new URL(pg.url).port;
        await pg.stop();
        const answers = [
          await c.app.request("/v1/sessions", { headers: AUTH }),
          await c.app.request(`/v1/sessions/${session}/events`, { headers: AUTH }),
          await c.app.request("/v1/sync/batches", await batchRequest(body, { key })),
        ];
        for (const r of answers) {
          const text = await r.text();
          assert.equal(r.status, 503, text);
          assert.equal(r.headers.get("retry-after"), "5");
          assert.deepEqual(JSON.parse(text), {
            error: "The collector's store is unavailable: try again shortly",
          });
          assert.ok(!text.includes(port), text);
        }
      } finally {
        await c.close();
      }
    } finally {
      await pg.close();
    }
  },
});
