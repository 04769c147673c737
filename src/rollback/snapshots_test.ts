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

Deno.test("a manifest edited after Sentry wrote it, or without its MAC, is refused before anything is touched; a hash must be a SHA-256", async () => {
  const s = sandbox();
  try {
    Deno.writeTextFileSync(`${s.ws}/a.txt`, "original");
    const store = openStore(s.home);
    await snapshot(store, { roots: [s.ws], maxBytes: 1 << 30, session: "S", id: "01MAC" });
    assert.equal(store.readManifest("01MAC").id, "01MAC", "a manifest as written reads back");
    const path = store.manifestPath("01MAC");
    const mac = path.replace(/\.json$/, ".mac");
    assert.equal(Deno.statSync(mac).mode! & 0o777, 0o600);
    const key = Deno.readFileSync(`${store.dir}/manifest.key`);
    assert.equal(key.length, 32);
    assert.equal(Deno.statSync(`${store.dir}/manifest.key`).mode! & 0o777, 0o600);
    const text = Deno.readTextFileSync(path);
    const evil = text.replace(/"[0-9a-f]{64}"/, '"../../../../etc/passwd"');
    assert.notEqual(evil, text);
    Deno.writeTextFileSync(path, evil);
    Deno.writeTextFileSync(`${s.ws}/a.txt`, "changed");
    assert.throws(() => store.readManifest("01MAC"), {
      name: "ManifestAuthError",
      message: /does not match its MAC/,
    });
    await assert.rejects(() => rollback(store, { session: "S", snapshot: "01MAC" }), /MAC/);
    assert.equal(Deno.readTextFileSync(`${s.ws}/a.txt`), "changed", "nothing was restored");
    // A forged MAC needs the key, which no agent can read; with it, the hash itself is checked.
    const { createHmac } = await import("node:crypto");
    Deno.writeTextFileSync(mac, createHmac("sha256", key).update(evil).digest("hex") + "\n");
    assert.throws(() => store.readManifest("01MAC"), /hash that is not a SHA-256/);
    Deno.removeSync(mac);
    assert.throws(() => store.readManifest("01MAC"), { message: /has no MAC/ });
  } finally {
    s.cleanup();
  }
});

Deno.test("a tree over rollback.max_files stops the walk at the cap and is refused whole, naming the cap", async () => {
  const s = sandbox();
  try {
    for (let i = 0; i < 50; i++) Deno.writeTextFileSync(`${s.ws}/f${i}.txt`, "");
    const store = openStore(s.home);
    await assert.rejects(
      () => snapshot(store, { roots: [s.ws], maxBytes: 1 << 30, maxFiles: 10, session: "N" }),
      /holds more than 10 entries, over the cap of 10 \(rollback\.max_files\)/,
    );
    assert.deepEqual(listSnapshots(store), []);
    const ok = await snapshot(store, {
      roots: [s.ws],
      maxBytes: 1 << 30,
      maxFiles: 51,
      session: "N",
    });
    assert.equal(ok.trees[0]?.files, 50);
  } finally {
    s.cleanup();
  }
});
