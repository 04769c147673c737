import assert from "node:assert/strict";
import { openStore, rollback, snapshot, type Store } from "./mod.ts";
import {
  aheadClock,
  assertSameTree,
  digestTree,
  etcState,
  makeTree,
  py,
  type Sandbox,
  sandbox,
  sh,
} from "./_testing.ts";

const SESSION = "S1";

/** A sandbox with the sample tree, snapshotted; `fn` damages and checks it. */
async function withProtectedTree(
  fn: (s: Sandbox, store: Store, before: Record<string, string>) => Promise<void>,
): Promise<void> {
  const s = sandbox();
  try {
    makeTree(s.ws);
    const store = openStore(s.home);
    const before = digestTree(s.ws);
    await snapshot(store, {
      roots: [s.ws],
      maxBytes: 1 << 30,
      session: SESSION,
      now: aheadClock(),
    });
    assertSameTree(digestTree(s.ws), before);
    await fn(s, store, before);
  } finally {
    s.cleanup();
  }
}

Deno.test("rollback() recreates a subtree removed with rm -rf", async () => {
  await withProtectedTree(async (s, store, before) => {
    sh(s.ws, "rm -rf src/util src/deep nested_empty");
    const result = await rollback(store, { session: SESSION });
    assert.equal(result.ok, true, JSON.stringify(result.restore?.results.filter((r) => r.reason)));
    assert.ok((result.restore?.counts.recreated ?? 0) >= 9);
    assertSameTree(digestTree(s.ws), before);
  });
});

Deno.test("rollback() restores overwritten, truncated and chmod-ed text and binary files", async () => {
  await withProtectedTree(async (s, store, before) => {
    sh(
      s.ws,
      [
        "printf 'garbage' > README.md",
        "head -c 5000 /dev/urandom > assets/logo.png",
        // Same size, in place: only the hash can tell.
        "dd if=/dev/urandom of=assets/big.bin bs=1024 count=10 conv=notrunc 2>/dev/null",
        ": > src/main.py",
        "truncate -s 10 src/util/helpers.py",
        "chmod 777 bin/run.sh",
        "chmod 000 secrets/key.pem",
        "chmod 700 private",
        "chmod u+w docs/readonly.txt && echo more >> docs/readonly.txt",
        "touch -d '2001-01-01' src/mod1/file1.txt",
      ].join("\n"),
    );
    const result = await rollback(store, { session: SESSION });
    assert.equal(result.ok, true, JSON.stringify(result.restore?.results.filter((r) => r.reason)));
    const byPath = new Map(result.plan.actions.map((a) => [a.rel, a.differences]));
    assert.deepEqual(byPath.get("assets/big.bin"), ["content", "mtime"]);
    assert.deepEqual(byPath.get("bin/run.sh"), ["mode"]);
    assert.deepEqual(byPath.get("src/mod1/file1.txt"), ["mtime"]);
    assertSameTree(digestTree(s.ws), before);
  });
});

Deno.test("rollback() replaces symlinks planted over files, without touching /etc/passwd", async () => {
  await withProtectedTree(async (s, store, before) => {
    const etc = etcState();
    sh(
      s.ws,
      [
        "rm README.md && ln -s /etc/passwd README.md",
        "ln -sf /etc/passwd src/main.py",
        "ln -sfn /etc/passwd src/readme_link",
        "rm logo_abs && echo 'now a file' > logo_abs",
      ].join("\n"),
    );
    const result = await rollback(store, { session: SESSION });
    assert.equal(result.ok, true, JSON.stringify(result.restore?.results.filter((r) => r.reason)));
    assertSameTree(digestTree(s.ws), before);
    assert.equal(etcState(), etc);
  });
});

Deno.test("rollback() replaces a directory swapped for a symlink, never writing through it", async () => {
  await withProtectedTree(async (s, store, before) => {
    // A directory outside the tree stands in for /etc, so any write into it is seen exactly.
    const outside = `${s.dir}/outside`;
    Deno.mkdirSync(outside);
    Deno.writeTextFileSync(`${outside}/main.py`, "not yours\n");
    const outsideBefore = digestTree(outside);
    sh(s.ws, `rm -rf src && ln -s ${outside} src && rm -rf assets && ln -s ../outside assets`);
    // Both with and without the sensors' changed paths.
    const hinted = await rollback(store, { session: SESSION, paths: [`${s.ws}/src`] });
    assert.equal(hinted.ok, true, JSON.stringify(hinted.restore?.results.filter((r) => r.reason)));
    assert.equal(Deno.lstatSync(`${s.ws}/assets`).isSymlink, true);
    const full = await rollback(store, { session: SESSION });
    assert.equal(full.ok, true, JSON.stringify(full.restore?.results.filter((r) => r.reason)));
    assertSameTree(digestTree(s.ws), before);
    assertSameTree(digestTree(outside), outsideBefore);
  });
});

Deno.test("rollback() of a directory replaced by a symlink to /etc leaves /etc unchanged", async () => {
  await withProtectedTree(async (s, store, before) => {
    const etc = etcState();
    sh(s.ws, "rm -rf src && ln -s /etc src");
    const result = await rollback(store, { session: SESSION });
    assert.equal(result.ok, true, JSON.stringify(result.restore?.results.filter((r) => r.reason)));
    assertSameTree(digestTree(s.ws), before);
    assert.equal(etcState(), etc);
    // The planted symlink is in the quarantine, as a symlink.
    const moved = result.restore?.quarantine as string;
    const items = [...Deno.readDirSync(`${moved}/items`)].map((e) => `${moved}/items/${e.name}`);
    assert.ok(items.some((p) => Deno.lstatSync(p).isSymlink && Deno.readLinkSync(p) === "/etc"));
  });
});

const RENAME_STORM = `
import os, random
random.seed(7)
def files():
    out = []
    for dp, dn, fn in os.walk('.'):
        for f in fn:
            p = os.path.join(dp, f)
            if not os.path.islink(p):
                out.append(p)
    return sorted(out)
os.makedirs('moved', exist_ok=True)
os.rename('src/deep', 'deep_moved')
os.rename('src/mod2', 'moved/mod2')
os.rename('empty_dir', 'moved/empty_dir')
n = 3
while n < 200:
    fs = files()
    if random.random() < 0.5:
        a, b = random.sample(fs, 2)
        os.rename(a, a + '.swap'); os.rename(b, a); os.rename(a + '.swap', b)
        n += 3
    else:
        os.rename(random.choice(fs), 'moved/m%d' % n)
        n += 1
print(n)
`;

Deno.test("rollback() undoes a storm of 200 renames", async () => {
  await withProtectedTree(async (s, store, before) => {
    py(s.ws, RENAME_STORM);
    const result = await rollback(store, { session: SESSION });
    assert.equal(result.ok, true, JSON.stringify(result.restore?.results.filter((r) => r.reason)));
    assertSameTree(digestTree(s.ws), before);
  });
});

Deno.test("rollback() moves 1,000 new files into the quarantine", async () => {
  await withProtectedTree(async (s, store, before) => {
    py(
      s.ws,
      `
import os
os.makedirs('generated/a/b', exist_ok=True)
for i in range(500):
    open('generated/a/b/g%d.txt' % i, 'w').write('x' * i)
for i in range(500):
    open('src/mod%d/new%d.txt' % (i % 4, i), 'w').write(str(i))
`,
    );
    const result = await rollback(store, { session: SESSION });
    assert.equal(result.ok, true, JSON.stringify(result.restore?.results.filter((r) => r.reason)));
    // The new directory goes as one action; the files in existing directories one by one.
    const generated = result.plan.actions.find((a) => a.rel === "generated");
    assert.equal(generated?.kind, "remove");
    assert.equal(generated?.contains, 502);
    assert.equal(result.restore?.counts.removed, 501);
    assertSameTree(digestTree(s.ws), before);
    const items = [...Deno.readDirSync(`${result.restore?.quarantine}/items`)];
    assert.equal(items.length, 501);
  });
});

Deno.test("rollback() restores a file a process holds open and keeps writing to", async () => {
  await withProtectedTree(async (s, store, before) => {
    const writer = new Deno.Command("python3", {
      args: [
        "-c",
        `
import sys, time
f = open('src/main.py', 'r+b')
f.write(b'AGENT WAS HERE'); f.flush()
print('ready', flush=True)
while True:
    f.write(b'x' * 64); f.flush(); time.sleep(0.001)
`,
      ],
      cwd: s.ws,
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    try {
      const reader = writer.stdout.getReader();
      const { value } = await reader.read();
      assert.match(new TextDecoder().decode(value), /ready/);
      reader.releaseLock();
      const result = await rollback(store, { session: SESSION });
      assert.equal(
        result.ok,
        true,
        JSON.stringify(result.restore?.results.filter((r) => r.reason)),
      );
      // The writer is still writing, to its own inode, which is now in the quarantine.
      await new Promise((r) => setTimeout(r, 50));
      assertSameTree(digestTree(s.ws), before);
      const fdName = [...Deno.readDirSync(`/proc/${writer.pid}/fd`)].map((e) => e.name)
        .find((n) => Deno.readLinkSync(`/proc/${writer.pid}/fd/${n}`).includes("main.py"));
      assert.ok(fdName !== undefined);
      const fd = Deno.statSync(`/proc/${writer.pid}/fd/${fdName}`);
      assert.notEqual(fd.ino, Deno.lstatSync(`${s.ws}/src/main.py`).ino);
      assert.ok(fd.size > Deno.lstatSync(`${s.ws}/src/main.py`).size);
    } finally {
      writer.kill("SIGKILL");
      await writer.status;
      await writer.stdout.cancel().catch(() => {});
    }
  });
});

Deno.test("restore() verification catches a file tampered with after it was written", async () => {
  await withProtectedTree(async (s, store) => {
    sh(s.ws, "echo damaged > README.md && echo damaged > src/main.py && echo x > bin/run.sh");
    const readme = `${s.ws}/README.md`;
    const result = await rollback(store, {
      session: SESSION,
      hooks: {
        beforeVerify: () => {
          // Same size, same mtime as restored: only the hash can tell.
          const mtime = Deno.lstatSync(readme).mtime as Date;
          Deno.writeTextFileSync(readme, "# Project\n\nSome TEXT.\n");
          Deno.utimeSync(readme, mtime, mtime);
          Deno.writeTextFileSync(`${s.ws}/bin/run.sh`, "#!/bin/sh\n");
        },
      },
    });
    assert.equal(result.ok, false);
    assert.equal(result.restore?.counts.failed, 2);
    const failed = result.restore?.results.filter((r) => r.outcome === "failed") ?? [];
    assert.deepEqual(failed.map((r) => r.path), [readme, `${s.ws}/bin/run.sh`]);
    assert.equal(failed[0]?.reason, "its content differs from the snapshot");
    assert.match(
      failed[1]?.reason ?? "",
      /^its mtime is \S+, not 2024-\S+; it has 10 bytes, not 19$/,
    );
    assert.equal(result.restore?.results.find((r) => r.path.endsWith("main.py"))?.outcome, "ok");
  });
});

Deno.test("restore() reports a failed directory and every path below it, and is not ok", async () => {
  await withProtectedTree(async (s, store) => {
    sh(s.ws, "rm -rf src/util README.md");
    const result = await rollback(store, {
      session: SESSION,
      hooks: {
        beforeChange: (op, path) => {
          if (op === "mkdir" && path.endsWith("/src/util")) throw new Error("disk on fire");
        },
      },
    });
    assert.equal(result.ok, false);
    const failed = result.restore?.results.filter((r) => r.outcome === "failed")
      .map((r) => [r.path.slice(s.ws.length + 1), r.reason]);
    assert.deepEqual(failed, [
      ["src/util", "disk on fire"],
      ["src/util/data.bin", `its directory "${s.ws}/src/util" could not be restored`],
      ["src/util/helpers.py", `its directory "${s.ws}/src/util" could not be restored`],
    ]);
    // The rest was restored.
    assert.equal(Deno.readTextFileSync(`${s.ws}/README.md`), "# Project\n\nSome text.\n");
  });
});

Deno.test("rollback() works across filesystems (workspace on tmpfs, store elsewhere)", async () => {
  let shm: string;
  try {
    shm = Deno.makeTempDirSync({ dir: "/dev/shm", prefix: "sentry_rollback_" });
  } catch {
    return; // No /dev/shm here.
  }
  const s = sandbox();
  try {
    const ws = `${shm}/ws`;
    Deno.mkdirSync(ws);
    makeTree(ws);
    const store = openStore(s.home);
    await snapshot(store, { roots: [ws], maxBytes: 1 << 30, session: SESSION, now: aheadClock() });
    const before = digestTree(ws);
    sh(ws, "echo x > README.md && rm -rf src/util && mkdir gen && echo y > gen/a");
    const damaged = digestTree(ws);
    const result = await rollback(store, { session: SESSION });
    assert.equal(result.ok, true, JSON.stringify(result.restore?.results.filter((r) => r.reason)));
    assertSameTree(digestTree(ws), before);
    const { undo } = await import("./mod.ts");
    const back = await undo(store, { session: SESSION });
    assert.equal(back.ok, true, JSON.stringify(back.results.filter((r) => r.reason)));
    assertSameTree(digestTree(ws), damaged);
  } finally {
    s.cleanup();
    Deno.removeSync(shm, { recursive: true });
  }
});

Deno.test("rollback() works from another process after the snapshotting one is killed with SIGKILL", async () => {
  const s = sandbox();
  try {
    makeTree(s.ws);
    const before = digestTree(s.ws);
    const mod = new URL("./mod.ts", import.meta.url).href;
    const config = new URL("../../deno.json", import.meta.url).pathname;
    const child = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        "--config",
        config,
        `import { openStore, snapshot } from "${mod}";
         const store = openStore(${JSON.stringify(s.home)});
         await snapshot(store, { roots: [${
          JSON.stringify(s.ws)
        }], maxBytes: 2 ** 30, session: "K" });
         console.log("ready");
         await new Promise(() => setInterval(() => {}, 1000));`,
      ],
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    const reader = child.stdout.getReader();
    const { value } = await reader.read();
    assert.match(new TextDecoder().decode(value), /ready/);
    reader.releaseLock();
    child.kill("SIGKILL");
    await child.status;
    await child.stdout.cancel();
    sh(s.ws, "rm -rf src && echo lost > README.md && touch new.txt");
    const result = await rollback(openStore(s.home), { session: "K" });
    assert.equal(result.ok, true, JSON.stringify(result.restore?.results.filter((r) => r.reason)));
    assertSameTree(digestTree(s.ws), before);
  } finally {
    s.cleanup();
  }
});
