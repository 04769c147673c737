import assert from "node:assert/strict";
import { listSnapshots, openStore, prune, rollback, showSnapshot, snapshot } from "./mod.ts";
import { aheadClock, assertSameTree, bytes, digestTree, sandbox, sh } from "./_testing.ts";

Deno.test("listSnapshots() filters by session; showSnapshot() takes a unique prefix", async () => {
  const s = sandbox();
  try {
    Deno.writeTextFileSync(`${s.ws}/a.txt`, "a");
    const store = openStore(s.home);
    const a = await snapshot(store, {
      roots: [s.ws],
      maxBytes: 1 << 30,
      session: "A",
      id: "01AAA",
    });
    await snapshot(store, { roots: [s.ws], maxBytes: 1 << 30, session: "B", id: "01BBB" });
    assert.deepEqual(listSnapshots(store).map((i) => i.id), ["01AAA", "01BBB"]);
    assert.deepEqual(listSnapshots(store, { session: "B" }).map((i) => i.id), ["01BBB"]);
    assert.equal(showSnapshot(store, "01A").id, a.id);
    assert.throws(() => showSnapshot(store, "01"), { name: "RangeError" });
    assert.throws(() => showSnapshot(store, "02"), Deno.errors.NotFound);
  } finally {
    s.cleanup();
  }
});

Deno.test("prune() deletes old snapshots, then the blobs only they used, and frees their bytes", async () => {
  const s = sandbox();
  try {
    const store = openStore(s.home);
    const day = 24 * 3600 * 1000;
    const t0 = Date.now();
    Deno.writeTextFileSync(`${s.ws}/keep.txt`, "kept in both");
    Deno.writeTextFileSync(`${s.ws}/old.txt`, "only in the old snapshot");
    Deno.writeFileSync(`${s.ws}/old.bin`, bytes(2_000_000, 5));
    await snapshot(store, {
      roots: [s.ws],
      maxBytes: 1 << 30,
      session: "OLD",
      now: () => t0 - 10 * day,
    });
    sh(s.ws, "rm old.bin && echo new > old.txt");
    await snapshot(store, {
      roots: [s.ws],
      maxBytes: 1 << 30,
      session: "NEW",
      now: aheadClock(),
    });
    // An old rollback leaves a quarantine, which goes too.
    sh(s.ws, "touch stray.txt");
    const oldRollback = await rollback(store, {
      session: "OLD",
      filter: ["stray.txt"],
      now: () => t0 - 10 * day,
    });
    assert.deepEqual(oldRollback.plan.actions.map((a) => `${a.kind} ${a.rel}`), [
      "remove stray.txt",
    ]);
    assert.equal(oldRollback.ok, true);
    const kept = await snapshot(store, {
      roots: [s.ws],
      maxBytes: 1 << 30,
      session: "RUNNING",
      now: () => t0 - 9 * day,
    });
    const before = digestTree(s.ws);

    const result = await prune(store, {
      olderThanMs: 7 * day,
      keepSessions: ["RUNNING"],
      now: () => t0,
    });
    assert.equal(result.snapshots.length, 1);
    assert.deepEqual(result.rollbacks, [`OLD/${oldRollback.restore?.id}`]);
    assert.deepEqual([...Deno.readDirSync(`${s.home}/store/quarantine`)], []);
    assert.equal(result.blobs, 2, "old.bin (loose) and the old old.txt (packed)");
    assert.equal(result.packsRewritten, 1);
    assert.ok(result.bytesFreed > 2_000_000, `${result.bytesFreed} bytes freed`);
    assert.deepEqual(listSnapshots(store).map((i) => i.session).sort(), ["NEW", "RUNNING"]);
    assert.deepEqual([...Deno.readDirSync(`${s.home}/store/tmp`)], []);

    // What remains still restores.
    sh(s.ws, "rm keep.txt old.txt");
    const back = await rollback(store, { session: "RUNNING", snapshot: kept.id });
    assert.equal(back.ok, true, JSON.stringify(back.restore?.results.filter((r) => r.reason)));
    assertSameTree(digestTree(s.ws), before);

    // Pruning again with nothing old frees nothing.
    const again = await prune(store, {
      olderThanMs: 7 * day,
      keepSessions: ["RUNNING"],
      now: () => t0,
    });
    assert.deepEqual({ ...again, rollbacks: [] }, {
      snapshots: [],
      rollbacks: [],
      blobs: 0,
      packsDeleted: 0,
      packsRewritten: 0,
      bytesFreed: 0,
    });
  } finally {
    s.cleanup();
  }
});
