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

Deno.test("undo() never writes through a symlink swapped in for a workspace directory", async () => {
  const s = sandbox();
  try {
    makeTree(s.ws);
    const outside = `${s.dir}/outside`;
    Deno.mkdirSync(outside);
    const store = openStore(s.home);
    await snapshot(store, {
      roots: [s.ws],
      maxBytes: 1 << 30,
      session: SESSION,
      now: aheadClock(),
    });
    // The agent rewrites a file in src/ and deletes src/util; the rollback puts both back.
    sh(s.ws, "echo agent > src/main.py\nrm -rf src/util");
    const rolled = await rollback(store, { session: SESSION });
    assert.equal(rolled.ok, true);
    // Then src/ is swapped for a symlink to a directory outside the workspace: undo wants to
    // put the agent's src/main.py back, and remove the restored src/util.
    sh(s.ws, `mv src src.real\nln -s ${outside} src`);
    const undone = await undo(store, { session: SESSION });
    assert.equal(undone.ok, false, "the changes below the symlink fail");
    for (const r of undone.results.filter((r) => r.path.startsWith(`${s.ws}/src/`))) {
      assert.equal(r.outcome, "failed", JSON.stringify(r));
      assert.match(r.reason ?? "", /symlink|refusing/);
    }
    assert.deepEqual([...Deno.readDirSync(outside)], [], "nothing was written outside the root");
  } finally {
    s.cleanup();
  }
});

Deno.test("undo() puts a file's mode back on a fresh inode, never on a hard link's target", async () => {
  const s = sandbox();
  try {
    makeTree(s.ws);
    const key = `${s.dir}/id_rsa`;
    Deno.writeTextFileSync(key, "secret", { mode: 0o600 });
    Deno.chmodSync(key, 0o600);
    const store = openStore(s.home);
    await snapshot(store, {
      roots: [s.ws],
      maxBytes: 1 << 30,
      session: SESSION,
      now: aheadClock(),
    });
    sh(s.ws, "chmod 755 README.md");
    const rolled = await rollback(store, { session: SESSION });
    assert.equal(rolled.ok, true);
    // The rollback set README.md back to 0644; undo must set 0755 again. Meanwhile the agent
    // made README.md a hard link to the key.
    sh(s.ws, `rm README.md\nln ${key} README.md`);
    const undone = await undo(store, { session: SESSION });
    assert.equal(Deno.statSync(key).mode! & 0o777, 0o600, "the key's mode is untouched");
    assert.equal(Deno.readTextFileSync(key), "secret");
    const readme = undone.results.find((r) => r.path === `${s.ws}/README.md`);
    assert.equal(readme?.outcome, "ok", JSON.stringify(undone.results));
    assert.equal(Deno.statSync(`${s.ws}/README.md`).mode! & 0o777, 0o755);
    assert.equal(Deno.statSync(`${s.ws}/README.md`).nlink, 1, "a fresh inode");
  } finally {
    s.cleanup();
  }
});
