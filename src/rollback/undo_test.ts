import assert from "node:assert/strict";
import { listRollbacks, openStore, rollback, snapshot, undo } from "./mod.ts";
import { aheadClock, assertSameTree, digestTree, makeTree, sandbox, sh } from "./_testing.ts";

const SESSION = "S1";

Deno.test("undo() puts the tree back as the rollback found it", async () => {
  const s = sandbox();
  try {
    makeTree(s.ws);
    const store = openStore(s.home);
    await snapshot(store, {
      roots: [s.ws],
      maxBytes: 1 << 30,
      session: SESSION,
      now: aheadClock(),
    });
    const before = digestTree(s.ws);
    sh(
      s.ws,
      [
        "echo agent > README.md",
        "rm -rf src/util",
        "mkdir -p out/deep && echo built > out/deep/artifact.txt && echo new > new.txt",
        "chmod 700 bin/run.sh",
        "mv src/main.py src/main_renamed.py",
        "rm -rf assets && ln -s /etc assets",
        "touch -d '2002-02-02' docs",
      ].join("\n"),
    );
    const damaged = digestTree(s.ws);
    const rolled = await rollback(store, { session: SESSION });
    assert.equal(rolled.ok, true, JSON.stringify(rolled.restore?.results.filter((r) => r.reason)));
    assertSameTree(digestTree(s.ws), before);

    const undone = await undo(store, { session: SESSION });
    assert.equal(undone.ok, true, JSON.stringify(undone.results.filter((r) => r.reason)));
    assert.equal(undone.id, rolled.restore?.id);
    assertSameTree(digestTree(s.ws), damaged);
    assert.deepEqual(listRollbacks(store, SESSION).map((r) => r.undone), [true]);
    await assert.rejects(() => undo(store, { session: SESSION }), Deno.errors.NotFound);

    // And the rollback can be done again.
    const again = await rollback(store, { session: SESSION });
    assert.equal(again.ok, true);
    assertSameTree(digestTree(s.ws), before);
  } finally {
    s.cleanup();
  }
});

Deno.test("undo() of a session without rollbacks throws NotFound", async () => {
  const s = sandbox();
  try {
    const store = openStore(s.home);
    await assert.rejects(() => undo(store, { session: "none" }), {
      name: "NotFound",
      message: 'No rollback to undo for session "none"',
    });
  } finally {
    s.cleanup();
  }
});

Deno.test("a rollback with nothing to do leaves no quarantine, so undo takes back the one before", async () => {
  const s = sandbox();
  try {
    makeTree(s.ws);
    const store = openStore(s.home);
    await snapshot(store, {
      roots: [s.ws],
      maxBytes: 1 << 30,
      session: SESSION,
      now: aheadClock(),
    });
    sh(s.ws, "echo agent > README.md");
    const damaged = digestTree(s.ws);
    const first = await rollback(store, { session: SESSION });
    const second = await rollback(store, { session: SESSION });
    assert.equal(second.ok, true);
    assert.equal(second.restore?.quarantine, null);
    assert.deepEqual(second.restore?.results, []);
    const undone = await undo(store, { session: SESSION });
    assert.equal(undone.id, first.restore?.id);
    assertSameTree(digestTree(s.ws), damaged);
  } finally {
    s.cleanup();
  }
});
