import assert from "node:assert/strict";
import { createUlid } from "../events/mod.ts";
import { postgresSkip, startPostgres, type TestPostgres } from "./_pg_testing.ts";
import { API_TOKEN, batchRequest, makeBatch, makeEvent, makeSession, ulid } from "./_testing.ts";
import { createCollectorApp } from "./app.ts";
import { isUnavailable, openPostgresStore, type PostgresStore, ulidTime } from "./pg_store.ts";
import { StoreUnavailableError } from "./store.ts";
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

Deno.test({
  name:
    "PostgreSQL: a batch over 300 distinct old days makes few partitions, keeps every event once, and retention removes the old ones, the default partition's too",
  ignore,
  async fn() {
    await withDatabase(async (url) => {
      const now = Date.UTC(2026, 11, 6, 12, 0, 0);
      const today = Math.floor(now / DAY) * DAY;
      const store = await openPostgresStore(url, { now: () => now, daysAhead: 1 });
      try {
        assert.equal(await store.windowStart(), "2025-11-01"); // 400 days back
        const app = createCollectorApp({ store, now: () => now });
        const key = (await store.addKey("laptop")).key;
        const host = ulid();
        const s = ulid();
        // 250 days from 1970 to 401 days ago, and 50 of the last 100 days: 300 days.
        const oldDays = Array.from(
          { length: 250 },
          (_, i) => Math.floor((i * (today - 401 * DAY)) / 249 / DAY) * DAY,
        );
        const recentDays = Array.from({ length: 50 }, (_, i) => today - (2 * i + 1) * DAY);
        const days = [...oldDays, ...recentDays];
        assert.equal(new Set(days).size, 300);
        const events = days.map((d, i) => ({
          ...eventAt(s, d + 3_600_000 + i, i),
          pid: i % 3 === 0 ? null : 4321,
        }));
        const batch = makeBatch({ hostId: host, sessions: [makeSession(s)], events });
        assert.deepEqual((await post(app, batch, key)).body, {
          accepted: 300,
          duplicates: 0,
          sessions: 1,
        });
        // Day partitions: the 50 recent days, today and tomorrow; the rest in the default.
        const parts = await store.partitions();
        assert.equal(parts.length, 52);
        assert.ok(parts.every((p) => p >= "2025-11-01"), parts.join());
        const where = await store.execute(
          `SELECT tableoid::regclass::text = 'events_default' AS dflt, count(*)::int AS n
           FROM events GROUP BY 1 ORDER BY 1`,
        );
        assert.deepEqual(where.map((r) => [r["dflt"], r["n"]]), [[false, 50], [true, 250]]);
        // A retry counts duplicates, the default partition's too.
        assert.deepEqual((await post(app, batch, key)).body, {
          accepted: 0,
          duplicates: 300,
          sessions: 1,
        });
        const back = await store.queryEvents({ session: s, limit: 1000 });
        assert.deepEqual(back.map((e) => e.id), events.map((e) => e.id).sort());
        assert.equal((await store.getSession(s)).events, 300);
        const attributed = await store.queryEvents({ session: s, attributed: true, limit: 1000 });
        assert.equal(attributed.length, 200);
        assert.equal(await store.getEvent(events[0]!.id).then((e) => e?.id), events[0]!.id);
        assert.equal(
          (await store.queryEvents({ session: s, after: events[100]!.id, limit: 1000 })).length,
          199,
        );

        // A partition of the window is made without scanning the default partition: its
        // CHECK proves it holds no row of the new day.
        const { default: postgres } = await import("postgres");
        const notices: string[] = [];
        const raw = postgres(url, { max: 1, onnotice: (n) => notices.push(String(n.message)) });
        try {
          await raw`SET client_min_messages = debug1`;
          await raw.unsafe(`CREATE TABLE events_p20251105 PARTITION OF events
            FOR VALUES FROM ('2025-11-05T00:00:00Z') TO ('2025-11-06T00:00:00Z')`);
          assert.ok(
            notices.some((n) => /events_default.*implied by existing constraints/.test(n)),
            notices.join("\n"),
          );
        } finally {
          await raw.end();
        }

        // Retention at 30 days: the old day partitions and the default's rows go, their
        // counts with them; the last 30 days stay.
        const cut = now - 30 * DAY;
        const gone = await store.retain(new Date(cut));
        const kept = events.filter((e) => ulidTime(e.id) >= today - 30 * DAY);
        assert.equal(kept.length, 15);
        assert.equal(gone.partitions, 51 - 15); // 35 old recent days and 2025-11-05
        assert.deepEqual(
          (await store.queryEvents({ limit: 1000 })).map((e) => e.id),
          kept.map((e) => e.id).sort(),
        );
        assert.equal((await store.getSession(s)).events, 15);
        const [rest] = await store.execute(`SELECT
          (SELECT count(*)::int FROM events_default) AS dflt,
          (SELECT count(*)::int FROM session_day_counts WHERE day < '2026-11-06') AS counts`);
        assert.deepEqual(rest, { dflt: 0, counts: 0 });
        assert.equal(await store.windowStart(), "2026-11-06");
        // A late event of a dropped day lands in the default partition, no partition is made,
        // and the next retention deletes it.
        const late = { ...eventAt(s, today - 40 * DAY, 7), pid: 1 };
        const lateBatch = makeBatch({ hostId: host, sessions: [makeSession(s)], events: [late] });
        assert.equal((await post(app, lateBatch, key)).body.accepted, 1);
        assert.equal((await store.partitions()).length, 17);
        assert.equal((await store.getSession(s)).events, 16);
        await store.retain(new Date(cut));
        assert.equal((await store.getSession(s)).events, 15);
        assert.equal(await store.getEvent(late.id), undefined);
        app.close();
      } finally {
        await store.close();
      }
    });
  },
});

Deno.test({
  name:
    "PostgreSQL: retention drops more partitions than one transaction can lock, a chunk per transaction",
  ignore,
  async fn() {
    // 16 locks per transaction: a few hundred in the shared table, and a day partition's drop
    // takes about eight (its table, indexes and TOAST).
    const pg = await startPostgres({
      settings: { max_locks_per_transaction: "16", max_connections: "10" },
    });
    try {
      const now = Date.UTC(2026, 11, 6, 12, 0, 0);
      const today = Math.floor(now / DAY) * DAY;
      const store = await openPostgresStore(pg.url, {
        now: () => now,
        daysAhead: 0,
        maxConnections: 2,
      });
      try {
        const days = Array.from({ length: 300 }, (_, i) => today - (i + 1) * DAY);
        for (const d of days) {
          const name = `events_p${new Date(d).toISOString().slice(0, 10).replaceAll("-", "")}`;
          await store.execute(`CREATE TABLE ${name} PARTITION OF events FOR VALUES
            FROM ('${new Date(d).toISOString()}') TO ('${new Date(d + DAY).toISOString()}')`);
        }
        assert.equal((await store.partitions()).length, 301);
        // Dropping them all in one transaction (as retain() did) runs out of locks.
        const names = days.map((d) =>
          `events_p${new Date(d).toISOString().slice(0, 10).replaceAll("-", "")}`
        );
        const { default: postgres } = await import("postgres");
        const raw = postgres(pg.url, { max: 1, onnotice: () => {} });
        try {
          await assert.rejects(
            raw.begin((tx) => tx.unsafe(`DROP TABLE ${names.join(", ")}`)),
            /out of shared memory|max_locks_per_transaction/,
          );
        } finally {
          await raw.end();
        }
        const gone = await store.retain(new Date(today));
        assert.equal(gone.partitions, 300);
        assert.deepEqual(await store.partitions(), [new Date(today).toISOString().slice(0, 10)]);
      } finally {
        await store.close();
      }
    } finally {
      await pg.close();
    }
  },
});

Deno.test({
  name:
    "PostgreSQL: openPostgresStore gives up at its deadline on a server that is not PostgreSQL or is silent, naming the URL without its password",
  ignore,
  async fn() {
    // A loopback listener that answers garbage and closes (a web server on the wrong port), then
    // one that accepts and never answers (as a blackholed address does, after connecting).
    for (const mode of ["garbage", "silent"] as const) {
      const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const port = (listener.addr as Deno.NetAddr).port;
      let connections = 0;
      const open: Deno.Conn[] = [];
      const garbage = new TextEncoder().encode("HTTP/1.0 400 Bad Request\r\n\r\nno\n");
      const serving = (async () => {
        for await (const conn of listener) {
          connections++;
          if (mode === "silent") {
            open.push(conn);
            continue;
          }
          await conn.write(garbage).catch(() => 0);
          conn.close();
        }
      })().catch(() => {});
      try {
        const t = performance.now();
        const error = await openPostgresStore(`postgres://u:s3cret@127.0.0.1:${port}/db`, {
          openTimeoutMs: 1500,
        }).then(() => null, (e: Error) => e);
        const took = performance.now() - t;
        assert.ok(error instanceof Error, mode);
        assert.equal(
          error.message,
          `Cannot open store "postgres://u:***@127.0.0.1:${port}/db": no PostgreSQL server ` +
            "answered within 1.5 s",
        );
        assert.ok(!error.message.includes("s3cret"));
        assert.ok(took >= 1400 && took < 5000, `${mode}: took ${took} ms`);
        assert.ok(connections > 0, mode);
        // Every attempt ended: no more connections come.
        await new Promise((r) => setTimeout(r, 200));
        const settled = connections;
        await new Promise((r) => setTimeout(r, 700));
        assert.equal(connections, settled, mode);
      } finally {
        listener.close();
        for (const conn of open) conn.close();
        await serving;
      }
    }
  },
});

Deno.test({
  name:
    "PostgreSQL: a store whose database went down fails with StoreUnavailableError, the driver's error as cause",
  ignore,
  async fn() {
    const pg = await startPostgres();
    try {
      const store = await openPostgresStore(pg.url, { maxConnections: 2 });
      try {
        const key = (await store.addKey("laptop")).key;
        assert.notEqual(await store.verifyKey(key), null);
        await pg.stop();
        for (
          const call of [
            () => store.listSessions({}),
            () => store.verifyKey(key),
            () => store.queryEvents({ limit: 5 }),
          ]
        ) {
          const error = await call().then(() => null, (e: unknown) => e);
          assert.ok(error instanceof StoreUnavailableError, String(error));
          assert.equal(error.message, "The collector's store is unavailable");
          assert.ok(isUnavailable(error.cause), String(error.cause));
        }
      } finally {
        await store.close();
      }
    } finally {
      await pg.close();
    }
  },
});

Deno.test("`isUnavailable()` tells a database that cannot be reached from a failed request", () => {
  const coded = (code: string) => Object.assign(new Error("x"), { code });
  for (
    const code of [
      "ECONNREFUSED",
      "ECONNRESET",
      "ETIMEDOUT",
      "CONNECTION_CLOSED",
      "CONNECT_TIMEOUT",
      "08006",
      "08001",
      "53300",
      "57P01",
      "57P03",
    ]
  ) assert.equal(isUnavailable(coded(code)), true, code);
  for (const code of ["23505", "23514", "42P01", "57014", "22003"]) {
    assert.equal(isUnavailable(coded(code)), false, code);
  }
  assert.equal(isUnavailable(new Error("boom")), false);
  assert.equal(isUnavailable(new Deno.errors.ConnectionRefused("refused")), true);
  assert.equal(isUnavailable(null), false);
});

Deno.test({
  name:
    "PostgreSQL: the attributed filter reads events.pid, filled for events stored before its migration",
  ignore,
  async fn() {
    await withDatabase(async (url) => {
      let store = await openPostgresStore(url);
      try {
        const host = ulid();
        const s = ulid();
        const events = Array.from({ length: 400 }, (_, i) => ({
          ...makeEvent(s, i),
          pid: i >= 395 ? 4321 + i : null,
        }));
        await store.ingest({ key: "k_test", hostId: host, sessions: [makeSession(s)], events });
        // As a database at schema 2 was: no pid column, its events already stored.
        await store.execute(`DROP INDEX events_session_attributed;
          ALTER TABLE events DROP COLUMN pid; DELETE FROM sentry_schema WHERE version = 3`);
        await store.close();
        store = await openPostgresStore(url);
        assert.equal(await store.schemaVersion(), 3);
        const yes = await store.queryEvents({ session: s, attributed: true, limit: 100 });
        assert.deepEqual(yes.map((e) => e.id), events.slice(395).map((e) => e.id));
        const no = await store.queryEvents({ session: s, attributed: false, limit: 1000 });
        assert.equal(no.length, 395);
        const [row] = await store.execute(
          `SELECT count(pid)::int AS n, sum(pid)::int AS total FROM events`,
        );
        assert.deepEqual(row, {
          n: 5,
          total: [395, 396, 397, 398, 399].reduce((a, i) => a + 4321 + i, 0),
        });
        // The partial index answers it: its predicate is the query's, word for word.
        await store.execute("ANALYZE events");
        const [plan] = await store.execute(`EXPLAIN (FORMAT JSON) SELECT event FROM events
          WHERE session = '${s}' AND pid IS NOT NULL ORDER BY id LIMIT 101`);
        const text = JSON.stringify(plan);
        const index = /"Index Name":"([^"]+)"/.exec(text)?.[1] ?? "";
        const [def] = await store.execute(
          `SELECT indexdef FROM pg_indexes WHERE indexname = '${index}'`,
        );
        assert.match(String(def?.["indexdef"]), /\(session, id\) WHERE \(pid IS NOT NULL\)/, text);
      } finally {
        await store.close();
      }
    });
  },
});

Deno.test({
  name:
    "PostgreSQL: a text search ignores case in ASCII only, in a database whose locale folds more",
  ignore,
  async fn() {
    await withDatabase(async (_, pg) => {
      const store = await openPostgresStore(await pg.createDatabase("utf8", { locale: "C.UTF-8" }));
      try {
        const s = ulid();
        const events = [
          { ...makeEvent(s, 0), target: "/w/ÜBER/Notes.md" },
          { ...makeEvent(s, 1), target: "/w/über/notes.md" },
        ];
        await store.ingest({ key: "k_test", hostId: ulid(), sessions: [makeSession(s)], events });
        const search = async (text: string) =>
          (await store.searchEvents({ session: s, text, limit: 10 }, 100)).events.map((e) =>
            e.target
          );
        assert.deepEqual(await search("NOTES"), ["/w/ÜBER/Notes.md", "/w/über/notes.md"]);
        assert.deepEqual(await search("über"), ["/w/über/notes.md"]);
        assert.deepEqual(await search("ÜBER"), ["/w/ÜBER/Notes.md"]);
      } finally {
        await store.close();
      }
    });
  },
});
