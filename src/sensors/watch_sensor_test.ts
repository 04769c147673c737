/**
 * The poll tier's file watcher on real directories: real inotify, real files made by a python3
 * process. Attribution needs the tree and fd sensors; here they are stand-ins with no members
 * (every event is then unattributed), since what is tested is what the watcher sees.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { FdSensor } from "./fd_sensor.ts";
import type { ProcSensor } from "./proc_sensor.ts";
import type { SensorEvent } from "./sensor.ts";
import { WatchSensor } from "./watch_sensor.ts";

interface Harness {
  sensor: WatchSensor;
  events: SensorEvent[];
  stop: () => Promise<void>;
}

async function watch(dir: string, recursive = true): Promise<Harness> {
  const fd = { holders: () => [], onPoll: () => {} } as unknown as FdSensor;
  const tree = { members: new Map() } as unknown as ProcSensor;
  const sensor = new WatchSensor({
    roots: [{ path: dir, recursive }],
    tree,
    fd,
    evidenceMs: 1000,
    settleMs: 20,
  });
  const events: SensorEvent[] = [];
  const controller = new AbortController();
  const running = sensor.start((e) => events.push(e), controller.signal);
  // The watches are in place once the first walk is done; a short wait covers it.
  await new Promise((resolve) => setTimeout(resolve, 100));
  return {
    sensor,
    events,
    stop: async () => {
      controller.abort();
      await running;
    },
  };
}

async function python(code: string, cwd: string): Promise<void> {
  const out = await new Deno.Command("python3", { args: ["-c", code], cwd, stderr: "piped" })
    .output();
  if (!out.success) throw new Error(new TextDecoder().decode(out.stderr));
}

async function settled(done: () => boolean): Promise<void> {
  const deadline = Date.now() + 10_000;
  while (!done() && Date.now() < deadline) await new Promise((r) => setTimeout(r, 20));
}

async function withDir(fn: (dir: string) => Promise<void>): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sentry-watch-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
}

Deno.test("every file made in new directories is seen, even before their watches exist", async () => {
  await withDir(async (dir) => {
    const h = await watch(dir);
    try {
      // 20 directories of 1,000 files, each made right after its directory: the race that
      // recursive inotify loses without a scan of each new directory.
      await python(
        "import os\nfor d in range(20):\n  os.mkdir('d%d' % d)\n  for i in range(1000):\n" +
          "    open('d%d/f%d' % (d, i), 'w').close()",
        dir,
      );
      const want = 20 * 1000;
      const files = () =>
        new Set(
          h.events.filter((e) => e.kind === "file.create" && /\/f\d+$/.test(e.target)).map((e) =>
            e.target
          ),
        );
      await settled(() => files().size >= want);
      await h.stop();
      assert.equal(files().size, want);
      const stats = h.sensor.stats();
      assert.equal(stats.dropped, 0);
      // Each file was reported once: by its event or by a scan, never both.
      const creates = h.events.filter((e) => e.kind === "file.create" && /\/f\d+$/.test(e.target));
      assert.equal(creates.length, want);
    } finally {
      await h.stop();
    }
  });
});

Deno.test("renames are paired by cookie; moves in and out of the tree are told apart", async () => {
  await withDir(async (dir) => {
    const ws = join(dir, "ws");
    const outside = join(dir, "outside");
    await Deno.mkdir(ws);
    await Deno.mkdir(outside);
    await Deno.writeTextFile(join(ws, "a"), "x");
    await Deno.writeTextFile(join(outside, "in"), "x");
    const h = await watch(ws);
    try {
      await python(
        "import os\nos.rename('a', 'b')\nos.rename('b', '../outside/b')\n" +
          "os.rename('../outside/in', 'in')\nos.mkdir('sub')\nos.rename('sub', 'sub2')\n" +
          "open('sub2/f', 'w').close()\nos.remove('in')",
        ws,
      );
      await settled(
        () => h.events.some((e) => e.kind === "file.delete" && e.target.endsWith("/in")),
      );
      await h.stop();
      const seen = h.events.map((e) => [e.kind, e.target.slice(ws.length), e.detail]);
      assert.deepEqual(seen.find(([k, t]) => k === "file.rename" && t === "/b"), [
        "file.rename",
        "/b",
        { from: join(ws, "a"), unattributed: true },
      ]);
      assert.ok(
        seen.some(([k, t, d]) =>
          k === "file.delete" && t === "/b" && (d as { moved?: string }).moved === "out"
        ),
        JSON.stringify(seen),
      );
      assert.ok(
        seen.some(([k, t, d]) =>
          k === "file.rename" && t === "/in" && (d as { moved?: string }).moved === "in"
        ),
      );
      // The renamed directory's watch follows it: a file made in it has the new path.
      assert.ok(
        seen.some(([k, t]) => k === "file.create" && t === "/sub2/f"),
        JSON.stringify(seen),
      );
    } finally {
      await h.stop();
    }
  });
});

Deno.test("after a queue overflow, a rescan reports what the lost events were about", async () => {
  await withDir(async (dir) => {
    // Files changed just before the watch: no event will ever say so, as if the queue had
    // dropped their events. An overflow record makes the sensor rescan and find them.
    await python(
      "import os\nos.mkdir('n')\nfor i in range(50): open('n/lost%d' % i, 'w').close()",
      dir,
    );
    const h = await watch(dir);
    try {
      await Deno.writeTextFile(join(dir, "seen"), "x");
      await settled(() => h.events.some((e) => e.target.endsWith("/seen")));
      h.sensor.handle({ kind: "overflow", path: "" }, Date.now());
      await settled(() => h.events.filter((e) => e.target.includes("/lost")).length >= 50);
      await h.stop();
      const lost = h.events.filter((e) => e.target.includes("/lost"));
      assert.equal(lost.length, 50);
      for (const e of lost) {
        assert.equal(e.kind, "file.create");
        assert.equal(e.detail.recovered, "inotify_overflow");
      }
      // What the watcher had reported is not reported again.
      const seen = h.events.filter((e) => e.target.endsWith("/seen"));
      assert.ok(seen.length > 0 && seen.every((e) => e.detail.recovered === undefined));
      const spots = Object.fromEntries(h.sensor.stats().blindSpots.map((b) => [b.id, b.count]));
      assert.equal(spots["inotify_overflow"], 1);
      assert.equal(spots["overflow_recovered"], 51, JSON.stringify(spots)); // 50 files + "n"
    } finally {
      await h.stop();
    }
  });
});
