/**
 * The store interface itself, on both stores: what an import uses without `accept` (bind a
 * host, ingest in several transactions, undo a binding whose batch was not stored), seen from a
 * second process of the same store.
 * @module
 */
import assert from "node:assert/strict";
import { IngestError } from "../journal/mod.ts";
import { makeEvent, makeSession, openCollector, storeSuite, ulid } from "./_testing.ts";

/** Each case runs against SQLite, and against PostgreSQL. */
const test = storeSuite("the store interface");

test("bindHost claims, confirms, refuses and moves to a rotated key, across processes", async (backend) => {
  const c = await openCollector({}, backend);
  try {
    const a = await c.store.addKey("fleet-a");
    const b = await c.store.addKey("fleet-b");
    const host = ulid();
    const other = await c.second();
    assert.deepEqual(await c.store.bindHost({ hostId: host, key: a.info }), {
      outcome: "claimed",
    });
    assert.deepEqual(await other.bindHost({ hostId: host, key: a.info }), { outcome: "bound" });
    assert.deepEqual(await other.bindHost({ hostId: host, key: b.info }), {
      outcome: "refused",
      boundTo: a.info.id,
    });
    assert.equal(await other.hostBinding(host), a.info.id);
    // fleet-a is rotated: revoked, and a new key of the same name takes the host over.
    await c.store.revokeKey(a.info.id);
    const rotated = await c.store.addKey("fleet-a");
    assert.deepEqual(await other.bindHost({ hostId: host, key: rotated.info }), {
      outcome: "rebound",
      previous: a.info.id,
    });
    assert.equal(await c.store.hostBinding(host), rotated.info.id);
  } finally {
    await c.close();
  }
});

test("ingest stores once by id without binding or recording the host, and unbindHost undoes only a fresh binding", async (backend) => {
  const c = await openCollector({}, backend);
  try {
    const key = await c.store.addKey("fleet-a");
    const host = ulid();
    const session = ulid();
    const events = Array.from({ length: 20 }, (_, i) => makeEvent(session, i));
    const batch = { key: key.info.id, hostId: host, sessions: [makeSession(session)], events };
    assert.deepEqual(await c.store.ingest(batch), { accepted: 20, duplicates: 0, sessions: 1 });
    assert.deepEqual(await (await c.second()).ingest({ ...batch, sessions: [] }), {
      accepted: 0,
      duplicates: 20,
      sessions: 0,
    });
    assert.equal((await c.store.getSession(session)).events, 20);
    assert.equal(await c.store.hostBinding(host), undefined, "ingest binds nothing");
    assert.deepEqual(await c.store.listHosts(), [], "nor records a visit");

    // Another host's events for that session: refused whole, nothing stored.
    const intruder = ulid();
    await assert.rejects(
      () =>
        c.store.ingest({
          key: key.info.id,
          hostId: intruder,
          sessions: [],
          events: [makeEvent(session, 99)],
        }),
      (e: unknown) => e instanceof IngestError && e.field === "events[0].session",
    );
    assert.equal((await c.store.getSession(session)).events, 20);

    // A binding made for a batch that then failed is undone; one that was there stays.
    const claimed = await c.store.bindHost({ hostId: intruder, key: key.info });
    assert.equal(claimed.outcome, "claimed");
    await c.store.unbindHost({ hostId: intruder, keyId: key.info.id, binding: claimed });
    assert.equal(await c.store.hostBinding(intruder), undefined);
    await c.store.bindHost({ hostId: host, key: key.info });
    const bound = await c.store.bindHost({ hostId: host, key: key.info });
    await c.store.unbindHost({ hostId: host, keyId: key.info.id, binding: bound });
    assert.equal(await c.store.hostBinding(host), key.info.id);
  } finally {
    await c.close();
  }
});
