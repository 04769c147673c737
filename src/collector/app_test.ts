import assert from "node:assert/strict";
import { HelloBody } from "../sync/mod.ts";
import {
  API_TOKEN,
  batchRequest,
  type Collector,
  gzip,
  makeBatch,
  makeEvent,
  makeSession,
  openCollector,
  type TestBackend,
  ulid,
} from "./_testing.ts";
import { postgresSkip, startPostgres } from "./_pg_testing.ts";
import type { CollectorDeps } from "./app.ts";

/** The cases, each run against SQLite and against PostgreSQL (see the end of the file). */
const cases: [string, () => Promise<void>][] = [];

function test(name: string, fn: () => Promise<void>): void {
  cases.push([name, fn]);
}

/** The store the current case runs against. */
let backend: TestBackend = { name: "sqlite" };

async function withCollector(
  body: (c: Collector, key: string) => Promise<void>,
  options: Partial<CollectorDeps> = {},
): Promise<void> {
  const c = await openCollector(options, backend);
  try {
    await body(c, (await c.store.addKey("laptop")).key);
  } finally {
    await c.close();
  }
}

async function post(c: Collector, body: unknown, options: Parameters<typeof batchRequest>[1]) {
  const response = await c.app.request("/v1/sync/batches", await batchRequest(body, options));
  return { status: response.status, body: await response.json(), headers: response.headers };
}

async function counts(c: Collector): Promise<{ sessions: number; events: number }> {
  return {
    sessions: (await c.store.listSessions({ limit: 100_000 })).length,
    events: (await c.store.queryEvents({ limit: 1_000_000 })).length,
  };
}

/** The host that sends every batch unless a test says otherwise: sessions belong to their host. */
const HOST = ulid();

function validBatch(n: number, options: { session?: string; host?: string } = {}) {
  const session = options.session ?? ulid();
  return makeBatch({
    hostId: options.host ?? HOST,
    sessions: [makeSession(session)],
    events: Array.from({ length: n }, (_, i) => makeEvent(session, i)),
  });
}

test("hello answers a valid key with its id and name, the protocol and the time", async () => {
  await withCollector(async (c, key) => {
    const before = Date.now();
    const response = await c.app.request("/v1/sync/hello", {
      headers: { authorization: `Bearer ${key}` },
    });
    assert.equal(response.status, 200);
    const body = HelloBody.parse(await response.json());
    assert.equal(body.protocol, 1);
    assert.equal(body.server, "sentry-collector");
    assert.equal(body.key.name, "laptop");
    assert.equal(body.key.id, (await c.store.listKeys())[0]?.id);
    assert.ok(Date.parse(body.time) >= before - 1 && Date.parse(body.time) <= Date.now() + 1);
  });
});

test("a missing, unknown or revoked key gets 401 and stores nothing", async () => {
  await withCollector(async (c, key) => {
    const batch = validBatch(3);
    const missing = await post(c, batch, {});
    assert.equal(missing.status, 401);
    assert.equal(missing.body.field, "authorization");
    assert.match(missing.headers.get("www-authenticate") ?? "", /^Bearer/);
    const wrong = await post(c, batch, { key: key.slice(0, -1) + (key.endsWith("a") ? "b" : "a") });
    assert.equal(wrong.status, 401);
    const hello = await c.app.request("/v1/sync/hello", {
      headers: { authorization: "Bearer sk_nottherightkeyatall0000000000" },
    });
    assert.equal(hello.status, 401);
    await hello.body?.cancel();
    assert.deepEqual(await counts(c), { sessions: 0, events: 0 });

    // Revoked through another store on the same file, as `sentry server keys revoke` does.
    assert.equal((await post(c, batch, { key })).status, 200);
    await (await c.second()).revokeKey("laptop");
    const revoked = await post(c, validBatch(2), { key });
    assert.equal(revoked.status, 401);
    assert.match(revoked.body.error, /revoked/);
    assert.deepEqual(await counts(c), { sessions: 1, events: 3 });
  });
});

test("a body that is not JSON, or in an unknown encoding, gets 415", async () => {
  await withCollector(async (c, key) => {
    const text = await post(c, validBatch(1), { key, contentType: "text/plain" });
    assert.equal(text.status, 415);
    assert.equal(text.body.field, "content-type");
    const br = await post(c, validBatch(1), { key, encoding: "br" });
    assert.equal(br.status, 415);
    assert.equal(br.body.field, "content-encoding");
    const identity = await post(c, validBatch(2), { key, encoding: "identity" });
    assert.equal(identity.status, 200, JSON.stringify(identity.body));
    assert.equal(identity.body.accepted, 2);
  });
});

test("a batch of more than 500 events gets 413 naming events, and nothing is stored", async () => {
  await withCollector(async (c, key) => {
    const big = await post(c, validBatch(501), { key });
    assert.equal(big.status, 413);
    assert.equal(big.body.field, "events");
    assert.deepEqual(await counts(c), { sessions: 0, events: 0 });
    const full = await post(c, validBatch(500), { key });
    assert.equal(full.status, 200);
    assert.equal(full.body.accepted, 500);
  });
});

test("a body over 1 MiB as received gets 413, whatever it declares", async () => {
  await withCollector(async (c, key) => {
    const batch = validBatch(2);
    // Padding in an unknown field: valid JSON, too big on the wire.
    const padded = { ...batch, padding: "x".repeat(1024 * 1024) };
    const identity = await post(c, padded, { key, encoding: "identity" });
    assert.equal(identity.status, 413);
    assert.equal(identity.body.field, "body");
    // A streamed body has no Content-Length: the limit holds while reading.
    const chunk = new Uint8Array(64 * 1024).fill(0x20);
    let sent = 0;
    const stream = new ReadableStream<Uint8Array>({
      pull(controller) {
        if (sent > 4 * 1024 * 1024) controller.close();
        else {
          sent += chunk.length;
          controller.enqueue(chunk);
        }
      },
    });
    const response = await c.app.request("/v1/sync/batches", {
      method: "POST",
      headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
      body: stream,
    });
    assert.equal(response.status, 413);
    assert.ok(sent <= 1024 * 1024 + 2 * chunk.length, `read ${sent} bytes before refusing`);
    assert.deepEqual(await counts(c), { sessions: 0, events: 0 });
  });
});

test("a gzip bomb gets 413 after at most the decompressed limit, and nothing is stored", async () => {
  await withCollector(async (c, key) => {
    // 256 MiB of spaces inside a JSON string compress to about 250 KiB.
    const zeros = new Uint8Array(1024 * 1024).fill(0x20);
    const source = new ReadableStream<Uint8Array<ArrayBuffer>>({
      start(controller) {
        controller.enqueue(new TextEncoder().encode('{"protocol":1,"padding":"'));
        for (let i = 0; i < 256; i++) controller.enqueue(zeros);
        controller.enqueue(new TextEncoder().encode('"}'));
        controller.close();
      },
    });
    const bomb = await new Response(source.pipeThrough(new CompressionStream("gzip"))).bytes();
    assert.ok(bomb.length < 1024 * 1024, `the bomb is ${bomb.length} bytes`);
    const rss = Deno.memoryUsage().rss;
    const response = await c.app.request("/v1/sync/batches", {
      method: "POST",
      headers: {
        authorization: `Bearer ${key}`,
        "content-type": "application/json",
        "content-encoding": "gzip",
      },
      body: bomb,
    });
    assert.equal(response.status, 413);
    assert.equal((await response.json()).field, "body");
    const grown = Deno.memoryUsage().rss - rss;
    assert.ok(grown < 128 * 1024 * 1024, `memory grew by ${grown} bytes`);
    assert.deepEqual(await counts(c), { sessions: 0, events: 0 });
  });
});

test("a malformed batch gets 400 naming the exact field, and nothing is stored", async () => {
  await withCollector(async (c, key) => {
    const cases: [string, (b: Record<string, unknown>) => unknown, string][] = [
      ["a bad kind", (b) => setEvent(b, 3, { kind: "file.teleport" }), "events[3].kind"],
      ["an id that is not a ULID", (b) => setEvent(b, 0, { id: "nope" }), "events[0].id"],
      ["a risk over 100", (b) => setEvent(b, 2, { risk: 101 }), "events[2].risk"],
      ["a factor without reason", (b) => {
        const events = b["events"] as Record<string, unknown>[];
        events[1] = { ...events[1], factors: [{ id: "x", points: 1 }] };
        return b;
      }, "events[1].factors[0].reason"],
      ["an unknown state", (b) => {
        (b["sessions"] as Record<string, unknown>[])[0]!["state"] = "sleeping";
        return b;
      }, "sessions[0].state"],
      ["protocol 2", (b) => ({ ...b, protocol: 2 }), "protocol"],
      ["no host id", (b) => ({ ...b, host: { name: "x" } }), "host.id"],
      ["a negative dropped count", (b) => ({ ...b, dropped: -1 }), "dropped"],
      ["events as an object", (b) => ({ ...b, events: {} }), "events"],
      ["an array body", () => [], "body"],
      // Values SQLite would keep and PostgreSQL would refuse with a 500: a 400 on both.
      ...([
        ["agent", "cl\u0000aude"],
        ["workspace", "/w\u0000"],
        ["note", "\u0000"],
        ["pid", 3_000_000_000],
        ["sentryPid", 2 ** 31],
        ["exitCode", -(2 ** 31) - 1],
      ] as const).map(([key, value]): [string, (b: Record<string, unknown>) => unknown, string] => [
        `a session's ${key} that PostgreSQL cannot keep`,
        (b) => {
          (b["sessions"] as Record<string, unknown>[])[0]![key] = value;
          return b;
        },
        `sessions[0].${key}`,
      ]),
      ["a NUL in a session's command", (b) => {
        (b["sessions"] as Record<string, unknown>[])[0]!["command"] = ["claude", "-p\u0000"];
        return b;
      }, "sessions[0].command[1]"],
      [
        "a NUL in an event's session id",
        (b) => setEvent(b, 2, { session: "S\u0000" }),
        "events[2].session",
      ],
      ["an event of an unknown session", (b) => {
        (b["events"] as Record<string, unknown>[])[4]!["session"] = "01JNOSUCHSESSION0000000000";
        return b;
      }, "events[4].session"],
    ];
    for (const [what, corrupt, field] of cases) {
      const batch = corrupt(validBatch(5));
      const response = await post(c, batch, { key });
      assert.equal(response.status, 400, `${what}: ${JSON.stringify(response.body)}`);
      assert.equal(response.body.field, field, `${what}: ${response.body.error}`);
      assert.equal(typeof response.body.error, "string");
      assert.deepEqual(await counts(c), { sessions: 0, events: 0 }, what);
    }
    const notJson = await post(c, "{protocol: 1", { key });
    assert.equal(notJson.status, 400);
    assert.equal(notJson.body.field, "body");
    const badGzip = await c.app.request("/v1/sync/batches", {
      method: "POST",
      headers: {
        authorization: `Bearer ${key}`,
        "content-type": "application/json",
        "content-encoding": "gzip",
      },
      body: (await gzip(JSON.stringify(validBatch(3)))).slice(0, 40),
    });
    assert.equal(badGzip.status, 400);
    assert.equal((await badGzip.json()).field, "body");
    const header = await c.app.request("/v1/sync/batches", {
      ...(await batchRequest(validBatch(1), { key })),
      headers: {
        authorization: `Bearer ${key}`,
        "content-type": "application/json",
        "content-encoding": "gzip",
        "sentry-protocol": "2",
      },
    });
    assert.equal(header.status, 400);
    assert.equal((await header.json()).field, "protocol");
    assert.deepEqual(await counts(c), { sessions: 0, events: 0 });
  });
});

function setEvent(b: Record<string, unknown>, i: number, patch: Record<string, unknown>) {
  const events = b["events"] as Record<string, unknown>[];
  events[i] = { ...events[i], ...patch };
  return b;
}

test("a retried batch is counted as duplicates and stored once", async () => {
  await withCollector(async (c, key) => {
    const batch = validBatch(20);
    const first = await post(c, batch, { key });
    assert.deepEqual(first.body, { accepted: 20, duplicates: 0, sessions: 1 });
    const again = await post(c, batch, { key });
    assert.deepEqual(again.body, { accepted: 0, duplicates: 20, sessions: 1 });
    // Half old, half new, in a new batch.
    const session = (batch["sessions"] as { id: string }[])[0]!.id;
    const mixed = {
      ...batch,
      batch: ulid(),
      events: [
        ...(batch["events"] as unknown[]).slice(10),
        ...Array.from({ length: 5 }, (_, i) => makeEvent(session, 100 + i)),
      ],
    };
    const third = await post(c, mixed, { key });
    assert.deepEqual(third.body, { accepted: 5, duplicates: 10, sessions: 1 });
    assert.deepEqual(await counts(c), { sessions: 1, events: 25 });
  });
});

test("a session's state only moves forward", async () => {
  await withCollector(async (c, key) => {
    const id = ulid();
    const host = ulid();
    const ended = {
      ...makeSession(id),
      state: "ended",
      endedAt: "2026-11-24T18:05:00.000Z",
      exitCode: 0,
    };
    const send = (session: unknown) =>
      post(c, makeBatch({ hostId: host, sessions: [session as never], events: [] }), { key });
    assert.equal((await send(makeSession(id))).status, 200);
    assert.equal((await c.store.getSession(id)).state, "running");
    assert.equal((await send(ended)).status, 200);
    // A late retry of an older batch says running again: the end stays.
    const late = await send(makeSession(id));
    assert.equal(late.status, 200);
    const stored = await c.store.getSession(id);
    assert.equal(stored.state, "ended");
    assert.equal(stored.endedAt, "2026-11-24T18:05:00.000Z");
    assert.equal(stored.exitCode, 0);
  });
});

test("another host's session is refused with 400 and nothing of the batch is stored", async () => {
  await withCollector(async (c, key) => {
    const other = (await c.store.addKey("intruder")).key;
    const session = ulid();
    assert.equal((await post(c, validBatch(4, { session }), { key })).status, 200);
    const before = await counts(c);
    const hijack = validBatch(4, { session, host: ulid() });
    // A fresh session first, so that a partial write would show.
    const fresh = ulid();
    hijack["sessions"] = [makeSession(fresh), ...(hijack["sessions"] as unknown[])];
    hijack["events"] = [makeEvent(fresh, 0), ...(hijack["events"] as unknown[])];
    const refused = await post(c, hijack, { key: other });
    assert.equal(refused.status, 400);
    assert.equal(refused.body.field, "sessions[1].id");
    // Events alone, naming the stored session.
    const sneaky = makeBatch({ hostId: ulid(), sessions: [], events: [makeEvent(session, 9)] });
    const refused2 = await post(c, sneaky, { key: other });
    assert.equal(refused2.status, 400);
    assert.equal(refused2.body.field, "events[0].session");
    assert.deepEqual(await counts(c), before);
    await assert.rejects(c.store.getSession(fresh));
    // None of the refused batches bound its host id to the intruder's key.
    const hostOf = (batch: Record<string, unknown>) => (batch["host"] as { id: string }).id;
    assert.equal(await c.store.hostBinding(hostOf(hijack)), undefined);
    assert.equal(await c.store.hostBinding(hostOf(sneaky)), undefined);
    assert.equal(await c.store.hostBinding(HOST), (await c.store.listKeys())[0]?.id);
    // The owning host may rotate its key (revoke it, add one of the same name): its sessions
    // follow it to the new key. Another key, even a valid one, is refused.
    assert.equal((await post(c, validBatch(2, { session }), { key: other })).status, 403);
    await c.store.revokeKey("laptop");
    const next = (await c.store.addKey("laptop")).key;
    const rotated = await post(c, validBatch(2, { session }), { key: next });
    assert.equal(rotated.status, 200);
  });
});

test("a second key presenting a bound host id gets 403 naming host.id, stores nothing and is logged", async () => {
  const notices: string[] = [];
  await withCollector(async (c, key) => {
    const other = await c.store.addKey("intruder");
    const session = ulid();
    assert.equal((await post(c, validBatch(3, { session }), { key })).status, 200);
    const before = await counts(c);
    // Events into the host's session, then the session ended: both under the intruder's key.
    const inject = validBatch(2, { session });
    const ended = inject["sessions"] as Record<string, unknown>[];
    ended[0] = { ...ended[0], state: "ended", endedAt: "2026-11-24T18:09:00.000Z", exitCode: 0 };
    const refused = await post(c, inject, { key: other.key });
    assert.equal(refused.status, 403);
    assert.equal(refused.body.field, "host.id");
    assert.match(
      refused.body.error,
      /^Forbidden host\.id "[0-9A-Z]{26}": the host is bound to another key/,
    );
    assert.deepEqual(await counts(c), before);
    assert.equal((await c.store.getSession(session)).state, "running");
    assert.equal((await c.store.getSession(session)).endedAt, null);
    const hosts = await c.store.listHosts();
    assert.ok(hosts.every((h) => h.key_id !== other.info.id), "no host record for the intruder");
    assert.equal(notices.length, 1);
    assert.match(
      notices[0]!,
      new RegExp(`host "${HOST}" from key ${other.info.id} \\("intruder"\\)`),
    );
    assert.ok(!notices[0]!.includes(other.key) && !notices[0]!.includes(key), "no secret logged");
    // The owner is untouched and carries on.
    assert.equal((await post(c, validBatch(1, { session }), { key })).status, 200);
  }, { onNotice: (m) => notices.push(m) });
});

test("a host id is bound by its first accepted batch, not by a refused one", async () => {
  await withCollector(async (c, key) => {
    const other = (await c.store.addKey("intruder")).key;
    const host = ulid();
    const orphan = makeBatch({ hostId: host, sessions: [], events: [makeEvent(ulid(), 0)] });
    assert.equal((await post(c, orphan, { key: other })).status, 400);
    assert.equal(await c.store.hostBinding(host), undefined);
    assert.equal((await post(c, validBatch(1, { host }), { key })).status, 200);
    assert.equal((await post(c, validBatch(1, { host }), { key: other })).status, 403);
  });
});

test("a host recorded before bindings existed stays with the key of its oldest record", async () => {
  await withCollector(async (c, key) => {
    const first = (await c.store.listKeys())[0]!;
    const other = await c.store.addKey("later");
    const host = ulid();
    for (
      const [k, at] of [[first, "2026-01-01T00:00:00.000Z"], [
        other.info,
        "2026-02-01T00:00:00.000Z",
      ]] as const
    ) {
      await c.store.recordHostVisit({
        hostId: host,
        name: "old",
        keyId: k.id,
        keyName: k.name,
        at,
        accepted: 1,
        duplicates: 0,
        dropped: 0,
      });
    }
    assert.equal((await post(c, validBatch(1, { host }), { key: other.key })).status, 403);
    assert.equal(await c.store.hostBinding(host), first.id);
    assert.equal((await post(c, validBatch(1, { host }), { key })).status, 200);
  });
});

test("a binding moves to a key of the same name once its key is revoked, and is noted", async () => {
  const notices: string[] = [];
  await withCollector(async (c, key) => {
    const session = ulid();
    assert.equal((await post(c, validBatch(1, { session }), { key })).status, 200);
    const old = (await c.store.listKeys())[0]!;
    const spare = (await c.store.addKey("spare")).key;
    await c.store.revokeKey("laptop");
    // A revoked key frees its hosts for its own name only.
    assert.equal((await post(c, validBatch(1, { session }), { key: spare })).status, 403);
    const next = await c.store.addKey("laptop");
    assert.equal((await post(c, validBatch(1, { session }), { key: next.key })).status, 200);
    assert.equal(await c.store.hostBinding(HOST), next.info.id);
    assert.ok(notices.some((m) => m.includes(`moved from key ${old.id}`)), notices.join("\n"));
  }, { onNotice: (m) => notices.push(m) });
});

test("each host is recorded with its key, last batch time and dropped count", async () => {
  await withCollector(async (c, key) => {
    const hostA = ulid();
    const hostB = ulid();
    const a1 = validBatch(3, { host: hostA });
    a1["host"] = { id: hostA, name: "alpha" };
    a1["dropped"] = 7;
    assert.equal((await post(c, a1, { key })).status, 200);
    const a2 = validBatch(2, { host: hostA });
    a2["host"] = { id: hostA, name: "alpha" };
    a2["dropped"] = 5; // an older total, from a retry: the count does not go down
    assert.equal((await post(c, a2, { key })).status, 200);
    const b = validBatch(1, { host: hostB });
    b["host"] = { id: hostB, name: "beta" };
    (b["sessions"] as { host: string }[])[0]!.host = "beta";
    assert.equal((await post(c, b, { key })).status, 200);

    const anonymous = await c.app.request("/v1/hosts");
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
    const response = await c.app.request("/v1/hosts", {
      headers: { authorization: `Bearer ${API_TOKEN}` },
    });
    assert.equal(response.status, 200);
    const { hosts } = await response.json();
    assert.equal(hosts.length, 2);
    const alpha = hosts.find((h: { name: string }) => h.name === "alpha");
    assert.equal(alpha.host_id, hostA);
    assert.equal(alpha.key_name, "laptop");
    assert.equal(alpha.dropped, 7);
    assert.equal(alpha.batches, 2);
    assert.equal(alpha.events, 5);
    assert.equal(alpha.sessions, 2);
    assert.equal(hosts.find((h: { name: string }) => h.name === "beta").sessions, 1);

    // The API's host filter, by name or by host id.
    const get = async (query: string) => {
      const r = await c.app.request(`/v1/sessions${query}`, {
        headers: { authorization: `Bearer ${API_TOKEN}` },
      });
      assert.equal(r.status, 200);
      return (await r.json()).sessions as { host: string }[];
    };
    assert.equal((await get("")).length, 3);
    assert.deepEqual((await get("?host=beta")).map((s) => s.host), ["beta"]);
    assert.equal((await get(`?host=${hostA}`)).length, 2);
    assert.equal((await get("?host=nowhere")).length, 0);
  });
});

test("the collector's API refuses to control sessions of remote hosts with 409", async () => {
  await withCollector(async (c, key) => {
    const session = ulid();
    assert.equal((await post(c, validBatch(1, { session }), { key })).status, 200);
    for (const action of ["pause", "resume", "kill", "rollback"]) {
      const r = await c.app.request(`/v1/sessions/${session}/${action}`, {
        method: "POST",
        headers: { authorization: `Bearer ${API_TOKEN}` },
      });
      assert.equal(r.status, 409, action);
      assert.match((await r.json()).error, /cannot be controlled from the collector/);
    }
    // The upload key is not the API's token, and the other way round.
    const withKey = await c.app.request("/v1/sessions", {
      headers: { authorization: `Bearer ${key}` },
    });
    assert.equal(withKey.status, 401);
    await withKey.body?.cancel();
    const withToken = await c.app.request("/v1/sync/hello", {
      headers: { authorization: `Bearer ${API_TOKEN}` },
    });
    assert.equal(withToken.status, 401);
    await withToken.body?.cancel();
  });
});

test("past maxConcurrent batches in flight, a batch gets 503 with Retry-After", async () => {
  await withCollector(async (c, key) => {
    let release: () => void = () => {};
    const held = new Promise<void>((r) => release = r);
    const body = await gzip(JSON.stringify(validBatch(2)));
    const slow = new ReadableStream<Uint8Array>({
      async start(controller) {
        controller.enqueue(body.slice(0, 10));
        await held;
        controller.enqueue(body.slice(10));
        controller.close();
      },
    });
    const first = c.app.request("/v1/sync/batches", {
      method: "POST",
      headers: {
        authorization: `Bearer ${key}`,
        "content-type": "application/json",
        "content-encoding": "gzip",
      },
      body: slow,
    });
    await new Promise((r) => setTimeout(r, 20));
    const busy = await post(c, validBatch(1), { key });
    assert.equal(busy.status, 503);
    assert.equal(busy.headers.get("retry-after"), "1");
    release();
    assert.equal((await first).status, 200);
    assert.equal((await post(c, validBatch(1), { key })).status, 200);
  }, { maxConcurrent: 1 });
});

test("an unreadable key store is a bare 500 for the client and the detail for the operator", async () => {
  const heard: unknown[] = [];
  await withCollector(async (c, key) => {
    await c.breakKeys();
    const response = await post(c, validBatch(1), { key });
    assert.equal(response.status, 500);
    assert.ok(!JSON.stringify(response.body).includes(c.dir), "no server path in the answer");
    assert.equal(heard.length, 1);
    assert.match(String(heard[0]), /Cannot read key store/);
    assert.deepEqual(await counts(c), { sessions: 0, events: 0 });
  }, { onError: (e) => heard.push(e) });
});

test("a session's events are searched on the server and filtered to the agent's own", async () => {
  await withCollector(async (c, key) => {
    const session = ulid();
    const events = Array.from({ length: 30 }, (_, i) => makeEvent(session, i));
    // Unattributed (inotify) events, and words to find in a target, a command line and detail.
    for (const i of [3, 4, 5]) events[i] = { ...events[i]!, pid: null };
    events[7] = { ...events[7]!, target: "/w/Secrets/Token.TXT" };
    events[8] = { ...events[8]!, cmdline: ["curl", "--data", 'say "hi"'] };
    events[9] = { ...events[9]!, detail: { note: "Ünïcode Token" } };
    const sent = await post(
      c,
      makeBatch({ hostId: HOST, sessions: [makeSession(session)], events }),
      {
        key,
      },
    );
    assert.equal(sent.status, 200, JSON.stringify(sent.body));
    const get = async (query: string) => {
      const r = await c.app.request(`/v1/sessions/${session}/events?${query}`, {
        headers: { authorization: `Bearer ${API_TOKEN}` },
      });
      assert.equal(r.status, 200);
      return (await r.json()) as { events: { id: string }[]; next_cursor: string | null };
    };
    const ids = (page: { events: { id: string }[] }) => page.events.map((e) => e.id);
    assert.deepEqual(
      ids(await get("attributed=false&limit=100")),
      [3, 4, 5].map((i) => events[i]!.id),
    );
    assert.equal((await get("attributed=true&limit=100")).events.length, 27);
    // Every word, ASCII case ignored, in the searched fields; quotes as typed; field names never.
    assert.deepEqual(ids(await get("q=token&limit=100")), [7, 9].map((i) => events[i]!.id));
    assert.deepEqual(ids(await get("q=secrets%20TXT&limit=100")), [events[7]!.id]);
    assert.deepEqual(ids(await get(`q=${encodeURIComponent('"hi"')}&limit=100`)), [events[8]!.id]);
    // Case is ignored in ASCII only: "Ü" is not "ü".
    assert.deepEqual(ids(await get("q=%C3%9Cn%C3%AFCODE&limit=100")), [events[9]!.id]);
    assert.deepEqual(ids(await get("q=%C3%BCn%C3%AFcode&limit=100")), []);
    assert.deepEqual(ids(await get("q=sensor&limit=100")), [], "a field name is not a match");
    assert.equal((await get("q=token&limit=100")).next_cursor, null, "the whole session searched");
  });
});

for (const [name, fn] of cases) {
  Deno.test(`[sqlite] ${name}`, async () => {
    backend = { name: "sqlite" };
    await fn();
  });
}

Deno.test({
  name: "[postgres] the collector's API and dashboard suite",
  ignore: postgresSkip() !== null,
  async fn(t) {
    const pg = await startPostgres();
    try {
      backend = { name: "postgres", pg };
      for (const [name, fn] of cases) await t.step(name, fn);
    } finally {
      backend = { name: "sqlite" };
      await pg.close();
    }
  },
});
