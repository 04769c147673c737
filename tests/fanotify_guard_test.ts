/**
 * The fanotify guard with real processes (root only): a process of the session gets EPERM and
 * 0 bytes for a denied key, cannot truncate or write a protected file, cannot exec a denied
 * binary, and wins nothing with a thread that flips the path it opens; a process outside the
 * session reads the same key; after the guard stops, opens work again and no group is left. A
 * permission group whose owner dies lets every waiting open through (fails open).
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { PermissionGroup } from "../src/platform/fanotify_perm_linux.ts";
import { compilePolicy, parsePolicy } from "../src/policy/mod.ts";
import { resolveLayers } from "../src/policy/resolve.ts";
import {
  type FanotifyGuard,
  hostSessionPids,
  startFanotifyGuard,
} from "../src/sensors/fanotify_guard.ts";
import type { SensorEvent } from "../src/sensors/sensor.ts";
import { delay, PYTHON } from "./_helpers.ts";

const SECRET = `FAKE-PRIVATE-KEY-${crypto.randomUUID()}`;

function unavailable(): string | null {
  if (Deno.build.os !== "linux") return `needs Linux, not ${Deno.build.os}`;
  if (Deno.uid() !== 0) return "needs root (fanotify permission events need CAP_SYS_ADMIN)";
  try {
    PermissionGroup.open().close();
    return null;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

const why = unavailable();
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the fanotify guard tests: ${why}`);
}

/** The acts a test process performs, after it reads "go" on stdin. */
const SCRIPT = String.raw`
import ctypes, errno, json, os, subprocess, sys, threading, time
sys.stdin.readline()
cmd, args = sys.argv[1], sys.argv[2:]
def err(e):
    return {"ok": False, "errno": errno.errorcode.get(e.errno, str(e.errno)), "bytes": 0}
out = {}
if cmd == "read":
    try:
        fd = os.open(args[0], os.O_RDONLY)
        data = os.read(fd, 65536)
        os.close(fd)
        out = {"ok": True, "bytes": len(data), "data": data.decode(errors="replace")}
    except OSError as e:
        out = err(e)
elif cmd == "write":
    try:
        fd = os.open(args[0], os.O_WRONLY | os.O_TRUNC)
        os.write(fd, b"OVERWRITTEN")
        os.close(fd)
        out = {"ok": True}
    except OSError as e:
        out = err(e)
elif cmd == "append":
    try:
        with open(args[0], "a") as f:
            f.write("APPENDED")
        out = {"ok": True}
    except OSError as e:
        out = err(e)
elif cmd == "exec":
    try:
        out = {"ok": True, "code": subprocess.run([args[0]]).returncode}
    except OSError as e:
        out = err(e)
elif cmd == "race":
    allowed, denied, n, secret = args[0].encode(), args[1].encode(), int(args[2]), args[3].encode()
    libc = ctypes.CDLL(None, use_errno=True)
    path = ctypes.create_string_buffer(allowed, len(allowed) + 1)
    data = ctypes.create_string_buffer(65536)
    stop = False
    flips = 0
    def flip():
        global flips
        while not stop:
            ctypes.memmove(path, denied, len(denied))
            ctypes.memmove(path, allowed, len(allowed))
            flips += 1
    t = threading.Thread(target=flip)
    t.start()
    opened = eperm = other = leaks = leaked = 0
    for i in range(n):
        fd = libc.open(path, 0)
        if fd < 0:
            if ctypes.get_errno() == errno.EPERM:
                eperm += 1
            else:
                other += 1
            continue
        k = libc.read(fd, data, 65536)
        libc.close(fd)
        opened += 1
        if k > 0 and secret in data.raw[:k]:
            leaks += 1
            leaked += k
    stop = True
    t.join()
    out = {"opened": opened, "eperm": eperm, "other": other, "leaks": leaks, "leakedBytes": leaked, "flips": flips}
elif cmd == "bench":
    n = int(args[1])
    times = []
    for i in range(n):
        t0 = time.perf_counter_ns()
        fd = os.open(args[0], os.O_RDONLY)
        os.close(fd)
        times.append(time.perf_counter_ns() - t0)
    times.sort()
    out = {"p50": times[n // 2] / 1000, "p99": times[min(n - 1, n * 99 // 100)] / 1000}
print(json.dumps(out))
`;

interface Act {
  ok?: boolean;
  errno?: string;
  bytes?: number;
  data?: string;
  code?: number;
  [key: string]: unknown;
}

/** Runs one act in a new python3, in the session (its pid added before it acts) or not. */
async function act(
  script: string,
  args: string[],
  options: { session: { add(pid: number): boolean } | null; timeoutMs?: number },
): Promise<Act> {
  const child = new Deno.Command(PYTHON, {
    args: [script, ...args],
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Gone already.
    }
  }, options.timeoutMs ?? 60_000);
  try {
    options.session?.add(child.pid);
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode("go\n"));
    await writer.close();
    const out = await child.output();
    const text = new TextDecoder().decode(out.stdout).trim();
    if (text === "") {
      throw new Error(`python3 ${args[0]} failed: ${new TextDecoder().decode(out.stderr)}`);
    }
    return JSON.parse(text) as Act;
  } finally {
    clearTimeout(timer);
  }
}

/** The fanotify groups this process holds (fd numbers), from /proc/self/fd. */
function fanotifyFds(): number[] {
  const fds: number[] = [];
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${entry.name}`) === "anon_inode:[fanotify]") {
        fds.push(Number(entry.name));
      }
    } catch {
      // Closed while listed.
    }
  }
  return fds;
}

/** Inode marks listed in a group's fdinfo (`fanotify ino:... mask:...` lines). */
function marksOf(fd: number): number {
  try {
    return Deno.readTextFileSync(`/proc/self/fdinfo/${fd}`).split("\n")
      .filter((l) => l.startsWith("fanotify ino:")).length;
  } catch {
    return 0;
  }
}

function policyFor(protectedDir: string, home: string) {
  const yaml = [
    "mode: block",
    "files:",
    `  read: { deny: [${JSON.stringify(`${protectedDir}/id_*`)}, ${
      JSON.stringify(`${protectedDir}/sub/**`)
    }] }`,
    `  write: { deny: [${JSON.stringify(`${protectedDir}/**`)}] }`,
    "processes:",
    `  deny: [${JSON.stringify(`${protectedDir}/bin/true`)}]`,
  ].join("\n");
  return compilePolicy(resolveLayers([{ source: "test", policy: parsePolicy(yaml, "t.yaml") }]), {
    home,
    workspace: "/nonexistent-workspace",
    env: {},
  });
}

Deno.test({
  name: "the fanotify guard holds a session's reads, writes and execs of protected files, and " +
    "lets everyone else through",
  ignore: why !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn(t) {
    const root = await Deno.makeTempDir({ prefix: "sentry-fanotify-guard-" });
    const home = join(root, "home");
    const dir = join(root, "protected");
    const key = join(dir, "id_key");
    const okKey = join(dir, "ok_key");
    const pub = join(dir, "public.txt");
    const deep = join(dir, "sub", "deep", "secret");
    const bin = join(dir, "bin", "true");
    const plain = join(root, "outside", "plain.txt");
    const script = join(root, "act.py");
    const controller = new AbortController();
    const events: SensorEvent[] = [];
    let guard: FanotifyGuard | null = null;
    const before = new Set(fanotifyFds());
    try {
      await Deno.mkdir(home);
      await Deno.mkdir(join(dir, "sub", "deep"), { recursive: true });
      await Deno.mkdir(join(dir, "bin"));
      await Deno.mkdir(join(root, "outside"));
      await Deno.writeTextFile(key, SECRET);
      await Deno.writeTextFile(okKey, "public-half-xxxxxxxxxxxxxxxxxxxxxxxxxxxxxxx");
      await Deno.writeTextFile(pub, "public\n");
      await Deno.writeTextFile(deep, SECRET);
      await Deno.writeTextFile(plain, "plain\n");
      await Deno.copyFile("/bin/true", bin);
      await Deno.chmod(bin, 0o755);
      await Deno.writeTextFile(script, SCRIPT);
      const session = hostSessionPids();
      const inSession = { session };

      // Baseline latency before any mark exists.
      const base = await act(script, ["bench", pub, "2000"], { session: null });

      guard = await startFanotifyGuard({
        policy: policyFor(dir, home),
        home,
        session,
        emit: (e) => events.push(e),
        signal: controller.signal,
      });
      const groups = fanotifyFds().filter((fd) => !before.has(fd));
      assert.equal(groups.length, 2, "a permission group and a directory watch");
      assert.ok(groups.some((fd) => marksOf(fd) >= 4), "the protected directories are marked");
      assert.deepEqual(guard.plan.targets.map((x) => x.path), [dir]);

      await t.step("a denied read gets EPERM and 0 bytes", async () => {
        const r = await act(script, ["read", key], inSession);
        assert.deepEqual([r.ok, r.errno, r.bytes], [false, "EPERM", 0]);
        const deeper = await act(script, ["read", deep], inSession);
        assert.deepEqual([deeper.ok, deeper.errno], [false, "EPERM"], "subdirectories are marked");
        const allowed = await act(script, ["read", pub], inSession);
        assert.deepEqual([allowed.ok, allowed.data], [true, "public\n"]);
        const e = events.find((x) => x.kind === "file.read" && x.target === key);
        assert.equal(e?.detail.blocked, "EPERM");
        assert.equal(e?.sensor, "fanotify_guard");
      });

      await t.step("a denied write or truncate leaves the content unchanged", async () => {
        const w = await act(script, ["write", pub], inSession);
        assert.deepEqual([w.ok, w.errno], [false, "EPERM"]);
        const a = await act(script, ["append", pub], inSession);
        assert.deepEqual([a.ok, a.errno], [false, "EPERM"]);
        assert.equal(await Deno.readTextFile(pub), "public\n");
        const e = events.find((x) => x.kind === "file.write" && x.target === pub);
        assert.equal(e?.detail.blocked, "EPERM");
      });

      await t.step("a process outside the session reads the key", async () => {
        const r = await act(script, ["read", key], { session: null });
        assert.deepEqual([r.ok, r.data], [true, SECRET]);
        // The main thread's own opens of marked files are answered by the Worker.
        assert.equal(await Deno.readTextFile(key), SECRET);
      });

      await t.step(
        "an exec of a denied binary fails; its child was found by its ancestry",
        async () => {
          const r = await act(script, ["exec", bin], inSession);
          assert.deepEqual([r.ok, r.errno], [false, "EPERM"]);
          const fine = await act(script, ["exec", "/bin/true"], inSession);
          assert.deepEqual([fine.ok, fine.code], [true, 0]);
          const e = events.find((x) => x.kind === "proc.exec" && x.target === bin);
          assert.equal(e?.detail.blocked, "EPERM");
          assert.ok(guard!.counters().adopted >= 1, "the forked child joined the session");
        },
      );

      await t.step("a directory made during the session is marked", async () => {
        const fresh = join(dir, "sub", "new");
        await Deno.mkdir(fresh);
        await Deno.writeTextFile(join(fresh, "f"), SECRET);
        const deadline = Date.now() + 5_000;
        while (guard!.counters().newDirs < 1 && Date.now() < deadline) await delay(20);
        assert.equal(guard!.counters().newDirs, 1);
        const r = await act(script, ["read", join(fresh, "f")], inSession);
        assert.deepEqual([r.ok, r.errno, r.bytes], [false, "EPERM", 0]);
      });

      await t.step("a thread flipping the path 10,000 times reads 0 bytes of the key", async () => {
        const r = await act(script, ["race", okKey, key, "10000", SECRET], {
          ...inSession,
          timeoutMs: 120_000,
        });
        // deno-lint-ignore no-console
        console.log(
          `race: ${r.opened} opens of the allowed file, ${r.eperm} EPERM, ${r.other} other ` +
            `errors, ${r.leaks} leaks (${r.leakedBytes} bytes), ${r.flips} flips`,
        );
        assert.equal(r.leaks, 0);
        assert.equal(r.leakedBytes, 0);
        assert.ok((r.eperm as number) > 0 && (r.opened as number) > 0, "the race went both ways");
      });

      await t.step("added latency per decided open (p50/p99)", async () => {
        const decided = await act(script, ["bench", pub, "2000"], inSession);
        const outside = await act(script, ["bench", pub, "2000"], { session: null });
        const unmarked = await act(script, ["bench", plain, "2000"], inSession);
        const row = (name: string, r: Act) =>
          `${name.padEnd(44)} ${String((r.p50 as number).toFixed(1)).padStart(8)} ${
            String((r.p99 as number).toFixed(1)).padStart(8)
          }`;
        const c = guard!.counters();
        // deno-lint-ignore no-console
        console.log(
          [
            `${"open+close (µs)".padEnd(44)} ${"p50".padStart(8)} ${"p99".padStart(8)}`,
            row("no guard (baseline)", base),
            row("unmarked file, session process", unmarked),
            row("marked file, process outside the session", outside),
            row("marked file, session process (decided)", decided),
            `added per decided open: p50 ${
              ((decided.p50 as number) - (base.p50 as number)).toFixed(1)
            } µs, p99 ${((decided.p99 as number) - (base.p99 as number)).toFixed(1)} µs; ` +
            `worker decision time p50 ${c.p50us.toFixed(1)} µs, p99 ${c.p99us.toFixed(1)} µs`,
          ].join("\n"),
        );
      });

      const c = guard.counters();
      assert.equal(c.answered, c.events, "every event was answered");
      assert.equal(c.decisionErrors, 0);
      assert.ok(c.denied >= 5);
      const stats = guard.stats();
      assert.ok(stats.blindSpots.some((b) => b.id === "deletes_renames"));
      assert.ok(
        guard.notices.some((n) => /deletes, renames and links cannot be stopped/.test(n.message)),
      );
    } finally {
      controller.abort();
      await guard?.done;
    }
    try {
      await t.step("after the guard stops, opens work again and no group is left", async () => {
        const r = await act(script, ["read", key], { session: hostSessionPids() });
        assert.deepEqual([r.ok, r.data], [true, SECRET]);
        const left = fanotifyFds().filter((fd) => !before.has(fd));
        assert.deepEqual(left, [], "the groups are closed, with every mark");
      });
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

Deno.test({
  name: "a permission group whose owner dies lets every waiting open through (fails open)",
  ignore: why !== null,
  sanitizeOps: false,
  sanitizeResources: false,
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "sentry-fanotify-open-" });
    const file = join(root, "f");
    await Deno.writeTextFile(file, SECRET);
    const module = new URL("../src/platform/fanotify_perm_linux.ts", import.meta.url).href;
    // An owner that marks the directory and never answers.
    const owner = new Deno.Command(Deno.execPath(), {
      args: [
        "eval",
        `import { PermissionGroup } from ${JSON.stringify(module)};
         const g = PermissionGroup.open();
         if (g.mark({ path: ${JSON.stringify(root)}, directory: true }) !== 0) Deno.exit(3);
         console.log("marked");
         setInterval(() => {}, 1000);`,
      ],
      stdout: "piped",
      stderr: "inherit",
      env: { DENO_NO_UPDATE_CHECK: "1" },
    }).spawn();
    let reader: Deno.ChildProcess | null = null;
    try {
      const lines = owner.stdout.pipeThrough(new TextDecoderStream()).getReader();
      const first = await lines.read();
      assert.equal(first.value?.trim(), "marked");
      reader = new Deno.Command("cat", { args: [file], stdout: "piped" }).spawn();
      const output = reader.output();
      const waited = await Promise.race([output.then(() => "done"), delay(500).then(() => "held")]);
      assert.equal(waited, "held", "the open waits for an answer");
      owner.kill("SIGKILL");
      const result = await Promise.race([output, delay(5_000).then(() => null)]);
      assert.ok(result !== null, "the open went through once the owner died");
      assert.equal(new TextDecoder().decode(result.stdout), SECRET);
      lines.releaseLock();
    } finally {
      try {
        owner.kill("SIGKILL");
      } catch {
        // Dead already.
      }
      await owner.status;
      try {
        reader?.kill("SIGKILL");
      } catch {
        // Done already.
      }
      await Deno.remove(root, { recursive: true });
    }
  },
});
