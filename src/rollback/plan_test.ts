import assert from "node:assert/strict";
import { openStore, plan, rollback, snapshot } from "./mod.ts";
import { aheadClock, assertSameTree, digestTree, makeTree, sandbox, sh } from "./_testing.ts";

const SESSION = "S1";

Deno.test("rollback({ dryRun }) lists restore, recreate and remove, and changes nothing", async () => {
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
    sh(
      s.ws,
      "echo changed > README.md && rm -rf src/deep && mkdir newdir && touch newdir/x new.txt",
    );
    const damaged = digestTree(s.ws);
    const result = await rollback(store, { session: SESSION, dryRun: true });
    assert.equal(result.restore, null);
    assertSameTree(digestTree(s.ws), damaged);
    const kinds = Object.fromEntries(result.plan.actions.map((a) => [a.rel, a.kind]));
    assert.equal(kinds["README.md"], "restore");
    assert.equal(kinds["src/deep/a/b/c/leaf.txt"], "recreate");
    assert.equal(kinds["src/deep"], "recreate");
    assert.equal(kinds["newdir"], "remove");
    assert.equal(kinds["newdir/x"], undefined, "a removed directory takes its content with it");
    assert.equal(kinds["new.txt"], "remove");
    // The parent directories changed too (mtimes), and are put back.
    assert.equal(kinds[""], "restore");
    assert.equal(kinds["src"], "restore");
    assert.equal(result.plan.scope, "full");
    assert.equal(Deno.readDirSync(`${s.home}/store/quarantine`).next().done, true);
  } finally {
    s.cleanup();
  }
});

Deno.test("plan() with changed paths compares only those paths, their parents and children", async () => {
  const s = sandbox();
  try {
    makeTree(s.ws);
    const store = openStore(s.home);
    const info = await snapshot(store, { roots: [s.ws], maxBytes: 1 << 30, now: aheadClock() });
    sh(s.ws, "echo agent > src/main.py && echo user > README.md && rm -rf src/util");
    const hinted = plan(store, {
      snapshot: info.id,
      paths: [`${s.ws}/src/main.py`, `${s.ws}/src/util`, "/elsewhere/file"],
    });
    assert.equal(hinted.scope, "paths");
    const rels = hinted.actions.map((a) => `${a.kind} ${a.rel}`);
    assert.ok(rels.includes("restore src/main.py"));
    assert.ok(rels.includes("recreate src/util/helpers.py"));
    assert.ok(!rels.some((r) => r.endsWith("README.md")), "README.md was not reported changed");
    assert.ok(hinted.checked < 20, `checked ${hinted.checked} paths`);
    const full = plan(store, { snapshot: info.id });
    assert.ok(full.actions.some((a) => a.rel === "README.md"));
    assert.ok(full.checked > 60);
  } finally {
    s.cleanup();
  }
});

Deno.test("rollback({ filter }) restores only paths matching --path globs", async () => {
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
    sh(s.ws, "rm -rf src/util && echo changed > README.md");
    const result = await rollback(store, { session: SESSION, filter: ["src/util"] });
    assert.equal(result.ok, true);
    assert.deepEqual(
      result.plan.actions.map((a) => a.rel),
      ["src/util", "src/util/data.bin", "src/util/helpers.py"],
    );
    assert.equal(Deno.readTextFileSync(`${s.ws}/README.md`), "changed\n");
    assert.equal(digestTree(s.ws)["src/util/helpers.py"], before["src/util/helpers.py"]);
    // An absolute glob works too.
    const rest = await rollback(store, { session: SESSION, filter: [`${s.ws}/*.md`] });
    assert.deepEqual(rest.plan.actions.map((a) => a.rel), ["README.md"]);
  } finally {
    s.cleanup();
  }
});

Deno.test("plan() hashes a racily clean file instead of trusting its stat fields", async () => {
  const s = sandbox();
  try {
    Deno.writeTextFileSync(`${s.ws}/a.txt`, "aaaa");
    const store = openStore(s.home);
    // The real clock: the file was written within the last second.
    const info = await snapshot(store, { roots: [s.ws], maxBytes: 1 << 30 });
    assert.equal(info.stats.racyFiles, 1);
    const { mtime } = Deno.lstatSync(`${s.ws}/a.txt`);
    // Same size, same mtime, same inode, and (to the second) the same ctime.
    const f = Deno.openSync(`${s.ws}/a.txt`, { write: true });
    f.writeSync(new TextEncoder().encode("bbbb"));
    f.close();
    Deno.utimeSync(`${s.ws}/a.txt`, mtime as Date, mtime as Date);
    const planned = plan(store, { snapshot: info.id });
    assert.deepEqual(planned.actions.map((a) => [a.rel, a.differences]), [["a.txt", ["content"]]]);
  } finally {
    s.cleanup();
  }
});

Deno.test("plan() translates changed paths reported under a symlinked spelling of the root", async () => {
  const s = sandbox();
  try {
    Deno.writeTextFileSync(`${s.ws}/a.txt`, "a");
    Deno.symlinkSync(s.ws, `${s.dir}/alias`);
    const store = openStore(s.home);
    const info = await snapshot(store, {
      roots: [`${s.dir}/alias`],
      maxBytes: 1 << 30,
      now: aheadClock(),
    });
    assert.deepEqual(info.trees.map((t) => t.root), [s.ws]);
    Deno.writeTextFileSync(`${s.ws}/a.txt`, "changed");
    const planned = plan(store, { snapshot: info.id, paths: [`${s.dir}/alias/a.txt`] });
    assert.deepEqual(planned.actions.map((a) => a.path), [`${s.ws}/a.txt`]);
  } finally {
    s.cleanup();
  }
});
