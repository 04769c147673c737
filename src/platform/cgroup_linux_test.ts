import assert from "node:assert/strict";
import {
  cgroupDirectory,
  findCgroupMounts,
  parseCgroupEvents,
  parseProcCgroup,
  SessionCgroup,
} from "./cgroup_linux.ts";
import { readStat } from "./proc_linux.ts";

/** /proc/self/mountinfo on the development VM (hybrid: v1 controllers, v2 at .../unified). */
const HYBRID = `22 27 0:21 / /proc rw,relatime - proc proc rw
31 23 0:28 / /sys/fs/cgroup rw,relatime - tmpfs tmpfs rw,mode=755
32 31 0:29 / /sys/fs/cgroup/cpu rw,relatime - cgroup cgroup rw,cpu
37 31 0:34 / /sys/fs/cgroup/freezer rw,relatime - cgroup cgroup rw,freezer
40 31 0:37 / /sys/fs/cgroup/systemd rw,relatime - cgroup cgroup rw,name=systemd
41 31 0:38 / /sys/fs/cgroup/unified rw,relatime - cgroup2 cgroup2 rw
`;

/** A container: pure v2 at /sys/fs/cgroup, showing a subtree of the host's hierarchy. */
const CONTAINER =
  `1205 1194 0:31 /docker/3f1e /sys/fs/cgroup ro,nosuid,nodev,noexec,relatime master:10 - cgroup2 cgroup rw,nsdelegate
1188 1187 0:52 / /proc rw,nosuid,nodev,noexec,relatime - proc proc rw
`;

/** /proc/PID/cgroup of a process on the VM. */
const PROC_CGROUP = `9:name=systemd:/
6:freezer:/sentry/01ABC
4:memory:/process_api/5acd90fceab0b9aec74f9a9b09a79b54
0::/sentry/01ABC
`;

Deno.test("findCgroupMounts() lists v2 mounts first, then the v1 freezer, from mountinfo", () => {
  assert.deepEqual(findCgroupMounts(HYBRID), [
    { version: 2, mountPoint: "/sys/fs/cgroup/unified", root: "/" },
    { version: 1, mountPoint: "/sys/fs/cgroup/freezer", root: "/" },
  ]);
  assert.deepEqual(findCgroupMounts(CONTAINER), [
    { version: 2, mountPoint: "/sys/fs/cgroup", root: "/docker/3f1e" },
  ]);
  assert.deepEqual(findCgroupMounts("22 27 0:21 / /proc rw - proc proc rw\ngarbage\n"), []);
});

Deno.test("parseCgroupEvents() reads populated and frozen", () => {
  assert.deepEqual(parseCgroupEvents("populated 1\nfrozen 0\n"), {
    populated: true,
    frozen: false,
  });
  assert.deepEqual(parseCgroupEvents("populated 0\nfrozen 1\n"), {
    populated: false,
    frozen: true,
  });
  assert.deepEqual(parseCgroupEvents(""), { populated: false, frozen: false });
});

Deno.test("parseProcCgroup() and cgroupDirectory() map a process's cgroup to its directory", () => {
  const entries = parseProcCgroup(PROC_CGROUP);
  assert.deepEqual(entries[1], { id: 6, controllers: ["freezer"], path: "/sentry/01ABC" });
  assert.deepEqual(entries[3], { id: 0, controllers: [], path: "/sentry/01ABC" });
  const [v2, v1] = findCgroupMounts(HYBRID);
  assert.equal(cgroupDirectory(entries, v2!), "/sys/fs/cgroup/unified/sentry/01ABC");
  assert.equal(cgroupDirectory(entries, v1!), "/sys/fs/cgroup/freezer/sentry/01ABC");
  // Under a mount that shows a subtree, paths are relative to its root; others are not shown.
  const [inside] = findCgroupMounts(CONTAINER);
  assert.equal(
    cgroupDirectory(parseProcCgroup("0::/docker/3f1e/app\n"), inside!),
    "/sys/fs/cgroup/app",
  );
  assert.equal(cgroupDirectory(parseProcCgroup("0::/other\n"), inside!), null);
  assert.equal(cgroupDirectory(parseProcCgroup("0::/\n"), v2!), "/sys/fs/cgroup/unified");
});

/** Why the tests that create cgroups cannot run here, or null. */
const why = Deno.uid() === 0 ? null : "creating cgroups needs root";
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the session cgroup tests: ${why}`);
}

/** A process that forks every 0.3 ms; each child SIGCONTs its parent and exits. */
const HOPPER = [
  "import os, signal, time",
  "while True:",
  "    if os.fork() == 0:",
  "        try: os.kill(os.getppid(), signal.SIGCONT)",
  "        except OSError: pass",
  "        os._exit(0)",
  "    try:",
  "        while os.waitpid(-1, os.WNOHANG)[0] > 0: pass",
  "    except ChildProcessError: pass",
  "    time.sleep(0.0003)",
].join("\n");

for (const version of [2, 1] as const) {
  Deno.test({
    name:
      `a session cgroup (v${version}) freezes a process forking every 0.3 ms, holds, thaws, and leaves nothing`,
    ignore: why !== null,
    async fn() {
      const session = `test-${version}-${crypto.randomUUID().slice(0, 8)}`;
      let cgroup: SessionCgroup;
      try {
        cgroup = SessionCgroup.create({ session, parent: "sentry-test", versions: [version] });
      } catch (error) {
        // A host without this hierarchy: say so rather than pass quietly.
        // deno-lint-ignore no-console
        console.warn(`skipped: ${(error as Error).message}`);
        return;
      }
      const child = new Deno.Command("python3", { args: ["-c", HOPPER] }).spawn();
      try {
        cgroup.add(child.pid);
        assert.ok(cgroup.origin !== null);
        await new Promise((r) => setTimeout(r, 200));
        assert.ok(await cgroup.freeze({ timeoutMs: 2000 }));
        const frozen = cgroup.pids().sort();
        const ticks = readStat(child.pid)?.utime;
        // Nothing runs: no new child appears, the CPU time does not move, SIGCONT does nothing.
        Deno.kill(child.pid, "SIGCONT");
        await new Promise((r) => setTimeout(r, 200));
        assert.deepEqual(cgroup.pids().sort(), frozen);
        assert.equal(readStat(child.pid)?.utime, ticks);
        assert.ok(cgroup.frozen());
        assert.ok(cgroup.thaw());
        assert.ok(!cgroup.frozen());
        const deadline = Date.now() + 5000;
        while (readStat(child.pid)?.utime === ticks && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 10));
        }
        assert.notEqual(readStat(child.pid)?.utime, ticks, "the hopper runs again");
        cgroup.killAll();
        assert.equal((await child.status).signal, "SIGKILL");
      } finally {
        try {
          child.kill("SIGKILL");
        } catch {
          // Gone.
        }
        await child.status;
        const closed = await cgroup.close();
        assert.deepEqual(closed.left, []);
        assert.ok(closed.removed);
      }
      assert.throws(() => Deno.statSync(cgroup.path), Deno.errors.NotFound);
    },
  });
}

Deno.test({
  name: "closing a session cgroup moves a live process back to its origin, never kills it",
  ignore: why !== null,
  async fn() {
    const session = `test-close-${crypto.randomUUID().slice(0, 8)}`;
    const cgroup = SessionCgroup.create({ session, parent: "sentry-test" });
    const child = new Deno.Command("sleep", { args: ["30"] }).spawn();
    try {
      const before = Deno.readTextFileSync(`/proc/${child.pid}/cgroup`);
      cgroup.add(child.pid);
      assert.deepEqual(cgroup.pids(), [child.pid]);
      await cgroup.freeze();
      // The watchdog's way in, when the pids file is gone: found by the session's name.
      const [found] = SessionCgroup.find({ session, parent: "sentry-test" });
      assert.equal(found?.path, cgroup.path);
      const closed = await cgroup.close();
      assert.deepEqual(closed, { removed: true, movedOut: [child.pid], left: [] });
      assert.deepEqual(SessionCgroup.find({ session, parent: "sentry-test" }), []);
      assert.equal(Deno.readTextFileSync(`/proc/${child.pid}/cgroup`), before);
      // Alive and thawed: back to its sleep (after a moment running, as it wakes up).
      const deadline = Date.now() + 2000;
      while (readStat(child.pid)?.state !== "S" && Date.now() < deadline) {
        await new Promise((r) => setTimeout(r, 5));
      }
      assert.equal(readStat(child.pid)?.state, "S");
    } finally {
      child.kill("SIGKILL");
      await child.status;
      await cgroup.close();
    }
  },
});

Deno.test({
  name: "sweep() removes an empty session cgroup once it is old enough, never a populated one",
  ignore: why !== null,
  async fn() {
    const parent = `sentry-sweep-${crypto.randomUUID().slice(0, 8)}`;
    const empty = SessionCgroup.create({ session: "empty", parent });
    const busy = SessionCgroup.create({ session: "busy", parent });
    const child = new Deno.Command("sleep", { args: ["30"] }).spawn();
    try {
      busy.add(child.pid);
      // Too young: a session that is starting keeps its cgroup.
      assert.deepEqual(SessionCgroup.sweep({ parent }), []);
      assert.deepEqual(SessionCgroup.sweep({ parent, olderThanMs: 0 }), [empty.path]);
      assert.throws(() => Deno.statSync(empty.path), Deno.errors.NotFound);
      Deno.statSync(busy.path);
    } finally {
      child.kill("SIGKILL");
      await child.status;
      await busy.close();
      await empty.close();
    }
  },
});
