/**
 * Block mode as root with the eBPF tier, which cannot block by itself: under `run` the agent's
 * Landlock wall and the fanotify guard refuse what the deny lists name; under `attach` (no wall
 * can be put on a running process) the fanotify guard does, and keeps Sentry's own files out of
 * reach in every mode. Each refusal is journaled as a block with the errno the agent got.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { probeTiers } from "../src/session/tiers.ts";
import { cpuExclusive, Listener, type Sandbox, waitFor, withSandbox } from "./_helpers.ts";

const PYTHON = "/usr/bin/python3";
const usable = new Set((await probeTiers()).filter((p) => p.ok).map((p) => p.tier));
const why = Deno.uid() !== 0
  ? "not root"
  : !usable.has("ebpf")
  ? "the eBPF tier cannot run here"
  : null;
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the root block tests: ${why}`);
}

/** Attempts each action and prints `{name: ["ok", bytes] | ["err", errno]}` when `go` exists. */
const AGENT = `
import json, os, sys, time
key, go, token = sys.argv[1], sys.argv[2], sys.argv[3]
while not os.path.exists(go):
    time.sleep(0.02)
out = {}
def attempt(name, fn):
    try:
        out[name] = ["ok", fn()]
    except OSError as e:
        out[name] = ["err", e.errno]
def read(p):
    with open(p, "rb") as f:
        return len(f.read())
def write(p):
    with open(p, "ab") as f:
        return f.write(b"pwned")
attempt("read_key", lambda: read(key))
attempt("write_key", lambda: write(key))
attempt("read_token", lambda: read(token))
attempt("delete_key", lambda: os.unlink(key))
print(json.dumps(out), flush=True)
`;

async function blocks(sb: Sandbox, session: string) {
  const events = await sb.events(session);
  return events.filter((e) => e.response === "block" && typeof e.detail.blocked === "string");
}

Deno.test({
  name:
    "run as root, eBPF tier, mode block: the wall refuses a read, a write and a delete of the key, and each is journaled as a block",
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      const agent = await sb.write("agent.py", AGENT);
      const go = sb.path("go");
      await Deno.writeTextFile(go, "");
      const run = await sb.sentry([
        "run",
        "--sensor",
        "ebpf",
        "--no-api",
        "--no-rollback",
        "--policy",
        "coding-agent",
        "--mode",
        "block",
        "--",
        PYTHON,
        agent,
        sb.sshKey,
        go,
        join(sb.data, "api-token"),
      ], { timeoutMs: 60_000 });
      assert.equal(run.code, 0, run.stderr);
      const out = JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "{}");
      assert.deepEqual(out.read_key, ["err", 13], "Landlock: EACCES, no byte read");
      assert.deepEqual(out.write_key, ["err", 13]);
      assert.deepEqual(out.delete_key, ["err", 13]);
      assert.equal(
        await Deno.readTextFile(sb.sshKey),
        "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n",
        "the key is whole",
      );
      const [session] = await sb.sessions();
      const blocked = await blocks(sb, session?.id ?? "last");
      const on = (kind: string) => blocked.find((e) => e.kind === kind && e.target === sb.sshKey);
      assert.equal(on("file.read")?.detail.blocked, "EACCES", JSON.stringify(blocked));
      assert.ok(on("file.delete"), "the delete is journaled as a block");
    });
  },
});

Deno.test({
  name:
    "attach as root, eBPF tier: the fanotify guard refuses a read of the key (mode block) and of Sentry's token (every mode) with EPERM, journaled as blocks",
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      await Deno.mkdir(sb.data, { recursive: true, mode: 0o700 });
      const token = join(sb.data, "api-token");
      await Deno.writeTextFile(token, "secret-token\n", { mode: 0o600 });
      for (const mode of ["block", "monitor"]) {
        // A delete cannot be refused under attach (no wall, no permission event): the key may
        // be gone after a round.
        await Deno.writeTextFile(sb.sshKey, "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n");
        const go = sb.path(`go-${mode}`);
        const agent = await sb.write(`agent-${mode}.py`, AGENT);
        const target = sb.spawnRaw(PYTHON, [agent, sb.sshKey, go, token]);
        const attach = sb.spawn([
          "attach",
          String(target.pid),
          "--no-api",
          "--no-rollback",
          "--policy",
          "coding-agent",
          "--mode",
          mode,
          // The delete cannot be refused under attach: its block falls back to a pause, which
          // must not outlive the test.
          "--pause-timeout",
          "1s",
          "--on-pause-timeout",
          "resume",
        ]);
        try {
          // The guard holds once its marks are placed, which it says.
          await attach.waitForStderr(/fanotify guard: .*marked/, 30_000);
          await Deno.writeTextFile(go, "");
          await target.exit(30_000);
          await waitFor(() => /agent exited|session ended|ended/.test(attach.stderr) || null, {
            what: "the attach to end",
            timeoutMs: 15_000,
          }).catch(() => attach.kill("SIGINT"));
          await attach.exit(20_000);
        } finally {
          await target.dispose();
          await attach.dispose();
        }
        const out = JSON.parse(target.stdout.trim().split("\n").at(-1) ?? "{}");
        assert.deepEqual(out.read_token, ["err", 1], `${mode}: the token stays unread`);
        if (mode === "block") {
          assert.deepEqual(out.read_key, ["err", 1], "EPERM from the guard, no byte read");
          assert.deepEqual(out.write_key, ["err", 1], "the key is not opened for writing");
        } else {
          assert.deepEqual(out.read_key[0], "ok", "mode monitor blocks no policy denial");
        }
        const sessions = await sb.sessions();
        const session = sessions.find((s) => s.pid === target.pid);
        const blocked = await blocks(sb, session?.id ?? "last");
        assert.ok(
          blocked.some((e) => e.target === token && e.rule === "guard.sentry_home"),
          `${mode}: ${JSON.stringify(blocked)}`,
        );
        if (mode === "block") {
          assert.ok(blocked.some((e) => e.target === sb.sshKey && e.kind === "file.read"));
        }
      }
      assert.equal(await Deno.readTextFile(token), "secret-token\n");
    });
  },
});

/** A forked task flips a shared sockaddr (or path) between an allowed and a denied target. */
const RACER = `
import ctypes, json, mmap, os, socket, struct, sys, time
allowed, denied, key, decoy = int(sys.argv[1]), int(sys.argv[2]), sys.argv[3], sys.argv[4]
libc = ctypes.CDLL(None, use_errno=True)
libc.connect.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
libc.open.argtypes = [ctypes.c_void_p, ctypes.c_int]
width = max(len(key), len(decoy)) + 1
def addr(port):
    return struct.pack("=H", socket.AF_INET) + struct.pack("!H", port) + socket.inet_aton("127.0.0.1") + b"\\0" * 8
def cpath(p):
    return p.encode().ljust(width, b"\\0")
shared = mmap.mmap(-1, 4096)
stop = ctypes.c_uint32.from_buffer(shared, 2048)
live = ctypes.addressof(ctypes.c_char.from_buffer(shared, 0))
def race(a, b, attempt, n):
    shared[0:len(a)] = a
    stop.value = 0
    cpus = sorted(os.sched_getaffinity(0))
    child = os.fork()
    if child == 0:
        # On a CPU of its own, so that it flips while the call runs, not between time slices.
        if len(cpus) > 1:
            os.sched_setaffinity(0, cpus[1:])
        while not stop.value:
            shared[0:len(b)] = b
            shared[0:len(a)] = a
        os._exit(0)
    if len(cpus) > 1:
        os.sched_setaffinity(0, cpus[:1])
    time.sleep(0.05)
    try:
        return [attempt() for _ in range(n)]
    finally:
        stop.value = 1
        os.waitpid(child, 0)
        os.sched_setaffinity(0, cpus)
def connect():
    s = socket.socket()
    try:
        return "ok" if libc.connect(s.fileno(), live, 16) == 0 else "refused"
    finally:
        s.close()
def read():
    fd = libc.open(live, os.O_RDONLY)
    if fd < 0:
        return "refused"
    try:
        return "key" if os.fstat(fd).st_ino == os.stat(key).st_ino else "decoy"
    finally:
        os.close(fd)
c = race(addr(allowed), addr(denied), connect, 2000)
r = race(cpath(decoy), cpath(key), read, 2000)
print(json.dumps({"connect_refused": c.count("refused"), "read_key": r.count("key"), "read_refused": r.count("refused")}), flush=True)
`;

Deno.test({
  name:
    "run as root, eBPF tier, mode block, a task racing the address and the path: the connect guard and the wall let nothing denied through in 2,000 tries each, and nothing is paused",
  ignore: why !== null,
  async fn() {
    await cpuExclusive(async () => {
      await withSandbox(async (sb) => {
        const allowed = new Listener();
        const denied = new Listener();
        try {
          const decoy = await sb.write(join(sb.workspace, "decoy"), "decoy\n");
          const policy = await sb.write(
            "policy.yaml",
            `name: race\nextends: default\nmode: block\nnetwork:\n  deny: ["127.0.0.1:${denied.port}"]\n`,
          );
          const agent = await sb.write("racer.py", RACER);
          const run = await sb.sentry([
            "run",
            "--sensor",
            "ebpf",
            "--no-api",
            "--no-rollback",
            "--policy",
            policy,
            "--pause-timeout",
            "3s",
            "--on-pause-timeout",
            "resume",
            "--",
            PYTHON,
            agent,
            String(allowed.port),
            String(denied.port),
            sb.sshKey,
            decoy,
          ], { timeoutMs: 120_000 });
          assert.equal(run.code, 0, run.stderr);
          const out = JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "{}");
          assert.equal(denied.accepted, 0, "the denied listener accepted nothing");
          assert.equal(out.read_key, 0, "the key was never opened");
          assert.ok(out.connect_refused > 0 && out.read_refused > 0, JSON.stringify(out));
          const report = await sb.report();
          // A connect the tier misread (the address a racing task rewrote after the kernel's copy)
          // is journaled as raced, not paused for as a block that failed.
          assert.deepEqual(report.responses.filter((r) => r.action === "pause"), []);
        } finally {
          await allowed.close();
          await denied.close();
        }
      });
    });
  },
});
