import assert from "node:assert/strict";
import { createUlid } from "../events/mod.ts";
import { postgresSkip, startPostgres, type TestPostgres } from "./_pg_testing.ts";
import { API_TOKEN, batchRequest, makeBatch, makeEvent, makeSession, ulid } from "./_testing.ts";
import { createCollectorApp } from "./app.ts";
import { openPostgresStore, type PostgresStore } from "./pg_store.ts";
import { PG_MIGRATIONS } from "./pg_migrations.ts";
import { storePoller } from "./store_api.ts";

const DAY = 86_400_000;
const ignore = postgresSkip() !== null;

/** Runs `body` with a fresh database of a throwaway cluster, removed afterwards. */
async function withDatabase(body: (url: string, pg: TestPostgres) => Promise<void>) {
  const pg = await startPostgres();
  try {
    await body(pg.url, pg);
  } finally {
    await pg.close();
  }
}

/** An event of `session` whose id was minted at `at` (ms). */
function eventAt(session: string, at: number, i: number) {
  return { ...makeEvent(session, i), id: createUlid({ now: () => at })() };
}

async function post(
  app: { request: (path: string, init: RequestInit) => Response | Promise<Response> },
  body: unknown,
  key: string,
) {
  const r = await app.request("/v1/sync/batches", await batchRequest(body, { key }));
  return { status: r.status, body: await r.json() };
}

Deno.test({
  name:
    "PostgreSQL: migrations are versioned in the database and applied once, even by two processes at once",
  ignore,
  async fn() {
    await withDatabase(async (url) => {
      const [a, b] = await Promise.all([openPostgresStore(url), openPostgresStore(url)]);
      try {
        const latest = PG_MIGRATIONS.at(-1)!.version;
        assert.equal(await a.schemaVersion(), latest);
        const rows = await a.execute("SELECT version FROM sentry_schema ORDER BY version");
        assert.deepEqual(
          rows.map((r) => Number(r["version"])),
          PG_MIGRATIONS.map((m) => m.version),
        );
        // A newer schema than this build knows is refused, naming the versions.
        await a.execute(
          `INSERT INTO sentry_schema (version, name) VALUES (${latest + 1}, 'future')`,
        );
        await assert.rejects(
          openPostgresStore(url),
          /schema is version \d+, newer than this Sentry's/,
        );
      } finally {
        await a.close();
        await b.close();
      }
    });
  },
});

Deno.test({
  name: "PostgreSQL: events land in day partitions, made on demand, and retention drops whole days",
  ignore,
  async fn() {
    await withDatabase(async (url) => {
      const now = Date.UTC(2026, 11, 6, 12, 0, 0);
      const store = await openPostgresStore(url, { now: () => now, daysAhead: 1 });
      try {
        assert.deepEqual(await store.partitions(), ["2026-12-06", "2026-12-07"]);
        const app = createCollectorApp({ store, now: () => now });
        const key = (await store.addKey("laptop")).key;
        const host = ulid();
        const old = ulid();
        const recent = ulid();
        const events = [
          ...Array.from({ length: 30 }, (_, i) => eventAt(old, now - 40 * DAY + i, i)),
          ...Array.from({ length: 20 }, (_, i) => eventAt(recent, now - 2 * DAY + i, i)),
          ...Array.from({ length: 10 }, (_, i) => eventAt(recent, now + i, 100 + i)),
        ];
        const ended = {
          ...makeSession(old),
          startedAt: new Date(now - 40 * DAY).toISOString(),
          state: "ended" as const,
          endedAt: new Date(now - 40 * DAY + 60_000).toISOString(),
          exitCode: 0,
        };
        const batch = makeBatch({ hostId: host, sessions: [ended, makeSession(recent)], events });
        assert.deepEqual((await post(app, batch, key)).body, {
          accepted: 60,
          duplicates: 0,
          sessions: 2,
        });
        assert.deepEqual(await store.partitions(), [
          "2026-10-27",
          "2026-12-04",
          "2026-12-06",
          "2026-12-07",
        ]);
        // The retry is counted as duplicates, across partitions.
        assert.deepEqual((await post(app, batch, key)).body, {
          accepted: 0,
          duplicates: 60,
          sessions: 2,
        });
        const rows = await store.execute(
          "SELECT tableoid::regclass::text AS part, count(*)::int AS n FROM events GROUP BY 1 ORDER BY 1",
        );
        assert.deepEqual(rows.map((r) => [r["part"], r["n"]]), [
          ["events_p20261027", 30],
          ["events_p20261204", 20],
          ["events_p20261206", 10],
        ]);
        assert.equal((await store.getSession(old)).events, 30);

        const gone = await store.retain(new Date(now - 30 * DAY));
        assert.deepEqual(gone, { partitions: 1, sessions: 1 });
        assert.deepEqual(await store.partitions(), ["2026-12-04", "2026-12-06", "2026-12-07"]);
        assert.equal((await store.queryEvents({ limit: 1000 })).length, 30);
        await assert.rejects(store.getSession(old), /No session matches/);
        assert.equal((await store.getSession(recent)).events, 30);

        // A resent event of a day that was kept is still a duplicate after the retention.
        const late = await post(
          app,
          makeBatch({ hostId: host, sessions: [makeSession(recent)], events: [events[40]!] }),
          key,
        );
        assert.equal(late.body.duplicates, 1);
        // An id minted days ahead of the collector's clock would make far-future partitions.
        const future = await post(
          app,
          makeBatch({
            hostId: host,
            sessions: [makeSession(recent)],
            events: [eventAt(recent, now + 3 * DAY, 1)],
          }),
          key,
        );
        assert.equal(future.status, 400);
        assert.equal(future.body.field, "events[0].id");
        app.close();
      } finally {
        await store.close();
      }
    });
  },
});

Deno.test({
  name: "PostgreSQL: two collector processes share keys, revocations, host bindings and ingest",
  ignore,
  async fn() {
    await withDatabase(async (url) => {
      const stores: PostgresStore[] = [];
      try {
        stores.push(await openPostgresStore(url, { maxConnections: 4 }));
        stores.push(await openPostgresStore(url, { maxConnections: 4 }));
        const [one, two] = stores.map((store) => createCollectorApp({ store })) as [
          ReturnType<typeof createCollectorApp>,
          ReturnType<typeof createCollectorApp>,
        ];
        const laptop = (await stores[0]!.addKey("laptop")).key;
        const intruder = (await stores[1]!.addKey("intruder")).key;

        // The same host, each key through its own process at once: one key gets the host.
        for (let round = 0; round < 5; round++) {
          const host = ulid();
          const a = ulid();
          const b = ulid();
          const [x, y] = await Promise.all([
            post(
              one,
              makeBatch({ hostId: host, sessions: [makeSession(a)], events: [makeEvent(a, 1)] }),
              laptop,
            ),
            post(
              two,
              makeBatch({ hostId: host, sessions: [makeSession(b)], events: [makeEvent(b, 1)] }),
              intruder,
            ),
          ]);
          assert.deepEqual([x.status, y.status].sort(), [200, 403], JSON.stringify([x, y]));
          const winner = x.status === 200 ? "laptop" : "intruder";
          const bound = await stores[1]!.hostBinding(host);
          const keys = await stores[0]!.listKeys();
          assert.equal(keys.find((k) => k.id === bound)?.name, winner);
          const loser = x.status === 200 ? b : a;
          await assert.rejects(stores[0]!.getSession(loser), /No session matches/);
        }

        // One batch sent to both at once (a retry through the load balancer): stored once.
        const host = ulid();
        const s = ulid();
        const batch = makeBatch({
          hostId: host,
          sessions: [makeSession(s)],
          events: Array.from({ length: 200 }, (_, i) => makeEvent(s, i)),
        });
        const both = await Promise.all([post(one, batch, laptop), post(two, batch, laptop)]);
        assert.deepEqual(both.map((r) => r.status), [200, 200]);
        assert.equal(both[0].body.accepted + both[1].body.accepted, 200);
        assert.equal(both[0].body.duplicates + both[1].body.duplicates, 200);
        assert.equal((await stores[1]!.getSession(s)).events, 200);
        const hosts = await stores[1]!.listHosts();
        const record = hosts.find((h) => h.host_id === host)!;
        assert.equal(record.batches, 2);
        assert.equal(record.events, 200);

        // A key revoked through one process is refused by the other at its next request.
        await stores[0]!.revokeKey("laptop");
        const hello = await two.request("/v1/sync/hello", {
          headers: { authorization: `Bearer ${laptop}` },
        });
        assert.equal(hello.status, 401);
        await hello.body?.cancel();
        one.close();
        two.close();
      } finally {
        for (const store of stores) await store.close();
      }
    });
  },
});

Deno.test({
  name:
    "PostgreSQL: the API pages a session's events by filter, and the stream shows another process's events",
  ignore,
  async fn() {
    await withDatabase(async (url) => {
      const writer = await openPostgresStore(url, { maxConnections: 2 });
      const reader = await openPostgresStore(url, { maxConnections: 2 });
      const live = storePoller(reader, { intervalMs: 50 });
      const ingest = createCollectorApp({ store: writer });
      const api = createCollectorApp({
        store: reader,
        api: { dataDir: "/nonexistent", token: API_TOKEN, allowedHosts: ["localhost"], live },
      });
      const auth = { authorization: `Bearer ${API_TOKEN}` };
      try {
        const key = (await writer.addKey("laptop")).key;
        const host = ulid();
        const s = ulid();
        const events = Array.from({ length: 120 }, (_, i) => makeEvent(s, i));
        await post(ingest, makeBatch({ hostId: host, sessions: [makeSession(s)], events }), key);
        const page = async (query: string) => {
          const r = await api.request(`/v1/sessions/${s.slice(0, 20)}/events?${query}`, {
            headers: auth,
          });
          assert.equal(r.status, 200);
          return await r.json() as {
            events: { id: string; kind: string; risk: number }[];
            next_cursor: string | null;
          };
        };
        const first = await page("limit=50");
        assert.equal(first.events.length, 50);
        assert.equal(first.events[0]?.id, events[0]?.id);
        const second = await page(`limit=50&cursor=${first.next_cursor}`);
        assert.equal(second.events[0]?.id, events[50]?.id);
        const writes = await page("kind=file.write&limit=500");
        assert.equal(writes.events.length, 60);
        const risky = await page("min_risk=45&order=desc&limit=500");
        assert.deepEqual(
          risky.events.map((e) => e.id),
          events.filter((e) => e.risk >= 45).map((e) => e.id).reverse(),
        );
        // A time range on ts: the ids were minted now, the ts are of 2026-11-24 (a large skew
        // the id bounds must allow for), and ts bounds are inclusive-exclusive.
        const range = await page(
          `since=${events[30]!.ts}&until=${events[90]!.ts}&limit=500`,
        );
        assert.deepEqual(range.events.map((e) => e.id), events.slice(30, 90).map((e) => e.id));
        const late = await page(`since=${events[100]!.ts}&order=desc&limit=500`);
        assert.deepEqual(
          late.events.map((e) => e.id),
          events.slice(100).map((e) => e.id).reverse(),
        );
        const session = await (await api.request(`/v1/sessions/${s}`, { headers: auth })).json();
        assert.equal(session.session.events, 120);
        assert.equal(session.session.maxRisk, 49);
        const missing = await api.request("/v1/sessions/01NOSUCH", { headers: auth });
        assert.equal(missing.status, 404);
        await missing.body?.cancel();
        const dashboard = await api.request("/", {});
        assert.equal(dashboard.status, 200);
        assert.match(await dashboard.text(), /<html/i);

        // The live stream: an event stored by the other process reaches this one's client.
        const controller = new AbortController();
        const stream = await api.request("/v1/events/stream", {
          headers: auth,
          signal: controller.signal,
        });
        assert.equal(stream.status, 200);
        const reader2 = stream.body!.pipeThrough(new TextDecoderStream()).getReader();
        await new Promise((r) => setTimeout(r, 300));
        const fresh = makeEvent(s, 999);
        await post(
          ingest,
          makeBatch({ hostId: host, sessions: [makeSession(s)], events: [fresh] }),
          key,
        );
        let text = "";
        const deadline = Date.now() + 5000;
        while (!text.includes(fresh.id) && Date.now() < deadline) {
          const { value, done } = await reader2.read();
          if (done) break;
          text += value;
        }
        assert.ok(text.includes(`id: ${fresh.id}`), text.slice(0, 500));
        controller.abort();
        await reader2.cancel().catch(() => {});
      } finally {
        live.close();
        api.close();
        ingest.close();
        await writer.close();
        await reader.close();
      }
    });
  },
});
