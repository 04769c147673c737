/**
 * Sentry's guard on the seccomp tier, with real processes: the agent cannot signal, stop, trace
 * or write the memory of Sentry or of any process outside its tree, nor read Sentry's token, in
 * mode monitor; in mode block an allowed connect is made by the supervisor on the agent's own
 * socket (blocking, non-blocking and unix sockets behave as the kernel makes them), a denied one
 * holds against a thread that rewrites the address, and a denied command holds against a thread
 * that rewrites the execve path.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { seccompAvailability } from "../src/platform/mod.ts";
import { landlockAbi } from "../src/platform/landlock_linux.ts";
import { cpuExclusive, Listener, withSandbox } from "./_helpers.ts";
import { NOBODY_SKIP, type NobodyHome, nobodyHome, sentryAsNobody } from "./_nobody.ts";

/** The system python3: its startup reads nothing under the sandbox's home. */
const PYTHON = "/usr/bin/python3";

const available = seccompAvailability();
const why = !available.ok ? available.reason : null;
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the seccomp guard tests: ${why}`);
}

/** A TCP listener that accepts and closes at once, counting: a decoy for thousands of connects. */
class Decoy {
  readonly listener: Deno.TcpListener;
  readonly port: number;
  accepted = 0;
  readonly #loop: Promise<void>;

  constructor(hostname = "127.0.0.1") {
    const listener = Deno.listen({ hostname, port: 0 });
    this.listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#loop = (async () => {
      try {
        for await (const conn of listener) {
          this.accepted++;
          conn.close();
        }
      } catch {
        // Closed.
      }
    })();
  }

  async close(): Promise<void> {
    try {
      this.listener.close();
    } catch {
      // Closed already.
    }
    await this.#loop;
  }
}

function lastJson(stdout: string): Record<string, unknown> {
  return JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}");
}

Deno.test({
  name:
    "the guard fails kill, SIGSTOP, tgkill, ptrace and process_vm_writev of Sentry and of a process outside the tree with EPERM in mode monitor, journals each as a blocked proc.control, and keeps Sentry's token unread",
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      const sibling = new Deno.Command("sleep", { args: ["60"], stdin: "null" }).spawn();
      try {
        await Deno.mkdir(sb.data, { recursive: true });
        const token = await sb.write(join(sb.data, "api-token"), "secret-token\n");
        const agent = await sb.write(
          "guard.py",
          `
import ctypes, json, os, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
sibling = int(sys.argv[1])
sentry = os.getppid()
def attempt(nr, *args):
    # Each attempt from a process of its own, so that the journal does not fold them together.
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        res = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
        os.write(w, str(0 if res >= 0 else ctypes.get_errno()).encode())
        os._exit(0)
    os.close(w)
    out = int(os.read(r, 16) or b"-1")
    os.close(r)
    os.waitpid(pid, 0)
    return out
buf = ctypes.create_string_buffer(b"x" * 8)
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
local = iovec(ctypes.addressof(buf), 8)
remote = iovec(0x400000, 8)
out = {}
for name, target in (("sentry", sentry), ("sibling", sibling)):
    out[name] = {
        "sigstop": attempt(62, target, 19),
        "sigkill": attempt(62, target, 9),
        "tgkill": attempt(234, target, target, 15),
        "ptrace": attempt(101, 16, target, 0, 0),
        "vm_writev": attempt(311, target, ctypes.addressof(local), 1, ctypes.addressof(remote), 1, 0),
    }
out["kill_all"] = attempt(62, -1, 18)
child = os.fork()
if child == 0:
    time.sleep(30)
    os._exit(0)
out["own_child"] = attempt(62, child, 9)
os.waitpid(child, 0)
try:
    out["token"] = ["ok", open(${JSON.stringify(token)}).read()]
except OSError as e:
    out["token"] = ["err", e.errno]
try:
    open(os.path.join(${JSON.stringify(sb.data)}, "journal.db"), "ab").write(b"x")
    out["journal"] = ["ok"]
except OSError as e:
    out["journal"] = ["err", e.errno]
out["sentry_pid"] = sentry
print(json.dumps(out))
`,
        );
        const started = performance.now();
        const run = await sb.sentry([
          "run",
          "--sensor",
          "seccomp",
          "--no-api",
          "--no-rollback",
          "--policy",
          "coding-agent",
          "--mode",
          "monitor",
          "--",
          PYTHON,
          agent,
          String(sibling.pid),
        ]);
        const ms = performance.now() - started;
        assert.equal(run.code, 0, run.stderr);
        const out = lastJson(run.stdout) as Record<
          string,
          Record<string, number> | number | unknown[]
        >;
        for (const target of ["sentry", "sibling"]) {
          assert.deepEqual(out[target], {
            sigstop: 1,
            sigkill: 1,
            tgkill: 1,
            ptrace: 1,
            vm_writev: 1,
          }, `every call aimed at the ${target} fails with EPERM`);
        }
        assert.equal(out.kill_all, 1, "kill(-1) fails with EPERM");
        assert.equal(out.own_child, 0, "a signal inside the tree goes through");
        assert.deepEqual(out.token, ["err", 13], "no byte of the token is read");
        assert.deepEqual(out.journal, ["err", 13], "the journal is not written");
        // The sibling was neither stopped nor killed.
        const state = (await Deno.readTextFile(`/proc/${sibling.pid}/stat`)).split(") ")[1]?.[0];
        assert.equal(state, "S", "the sibling still sleeps");
        const events = await sb.events();
        const controls = events.filter((e) => e.kind === "proc.control");
        for (const e of controls) {
          assert.equal(e.verdict, "deny");
          assert.equal(e.rule, "guard.process");
          assert.equal(e.response, "block", "a guard block is journaled as such in mode monitor");
          assert.equal(e.detail.blocked, "EPERM");
        }
        const seen = (pid: number) =>
          new Set(
            controls.filter((e) => e.detail.target_pid === pid).map((e) =>
              `${e.detail.syscall}:${e.detail.signal ?? e.detail.request ?? ""}`
            ),
          );
        const sentryPid = out.sentry_pid as number;
        for (const pid of [sentryPid, sibling.pid]) {
          assert.deepEqual([...seen(pid)].sort(), [
            "kill:SIGKILL",
            "kill:SIGSTOP",
            "process_vm_writev:",
            "ptrace:PTRACE_ATTACH",
            "tgkill:SIGTERM",
          ], `each attempt on pid ${pid} is journaled`);
        }
        const sentryEvent = controls.find((e) => e.detail.target_pid === sentryPid);
        assert.match(sentryEvent?.target ?? "", new RegExp(`^pid ${sentryPid} \\(.+\\)$`));
        assert.ok(controls.some((e) => e.target === "every process (-1)"));
        const read = events.find((e) => e.kind === "file.read" && e.target === token);
        assert.ok(read, "the attempt on the token is journaled");
        assert.equal(read.rule, "guard.sentry_home");
        assert.equal(read.response, "block");
        assert.equal(read.detail.blocked, "EACCES");
        // deno-lint-ignore no-console
        console.log(`guard run: ${controls.length} proc.control events, ${ms.toFixed(0)} ms`);
      } finally {
        try {
          sibling.kill("SIGKILL");
        } catch {
          // Gone already.
        }
        await sibling.status;
      }
    });
  },
});

Deno.test({
  name:
    "block mode connects an allowed address on the agent's own socket: blocking, non-blocking, refused, EISCONN, a relative unix path, and a blocked unix connect that does not stall other calls",
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      const allowed = new Listener();
      const unixDir = sb.path("sockets");
      await Deno.mkdir(unixDir);
      const unixListener = Deno.listen({ transport: "unix", path: join(unixDir, "s") });
      const unixLoop = (async () => {
        try {
          for await (const conn of unixListener) conn.close();
        } catch {
          // Closed.
        }
      })();
      // A port nothing listens on: take one, then free it.
      const free = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      const closedPort = (free.addr as Deno.NetAddr).port;
      free.close();
      try {
        const agent = await sb.write(
          "connect.py",
          `
import errno, json, os, select, socket, threading, time
out = {}
def blocking(port):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        return ["ok"]
    except OSError as e:
        return ["err", errno.errorcode[e.errno]]
    finally:
        s.close()
out["blocking"] = blocking(${allowed.port})
out["refused"] = blocking(${closedPort})
s = socket.socket()
s.setblocking(False)
r = s.connect_ex(("127.0.0.1", ${allowed.port}))
out["nonblocking"] = errno.errorcode.get(r, r)
select.select([], [s], [], 5)
out["nonblocking_done"] = s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR)
# As the kernel does: the first connect after completion says 0, the next EISCONN.
out["again"] = errno.errorcode.get(s.connect_ex(("127.0.0.1", ${allowed.port})), 0)
out["again2"] = errno.errorcode.get(s.connect_ex(("127.0.0.1", ${allowed.port})), 0)
s.close()
s = socket.socket()
s.setblocking(False)
s.connect_ex(("127.0.0.1", ${closedPort}))
select.select([], [s], [], 5)
out["nonblocking_refused"] = errno.errorcode.get(s.getsockopt(socket.SOL_SOCKET, socket.SO_ERROR), 0)
s.close()
os.chdir(${JSON.stringify(unixDir)})
u = socket.socket(socket.AF_UNIX)
try:
    u.connect("s")
    out["unix_relative"] = ["ok"]
except OSError as e:
    out["unix_relative"] = ["err", errno.errorcode[e.errno]]
u.close()
# A unix listener that accepts nothing: its backlog fills, and a blocking connect waits.
srv = socket.socket(socket.AF_UNIX)
srv.bind("full")
srv.listen(0)
fillers = []
for _ in range(4):
    f = socket.socket(socket.AF_UNIX)
    f.setblocking(False)
    try:
        f.connect("full")
    except OSError:
        pass
    fillers.append(f)
done = {}
def waiter():
    w = socket.socket(socket.AF_UNIX)
    t0 = time.monotonic()
    try:
        w.connect("full")
        done["result"] = "ok"
    except OSError as e:
        done["result"] = errno.errorcode[e.errno]
    done["waited"] = time.monotonic() - t0
    w.close()
t = threading.Thread(target=waiter)
t.start()
time.sleep(0.3)
# Meanwhile the supervisor answers everything else.
t0 = time.monotonic()
for _ in range(50):
    open(${JSON.stringify(join(sb.workspace, "x"))}, "w").close()
out["opens_while_waiting_s"] = time.monotonic() - t0
out["still_waiting"] = "result" not in done
for _ in range(8):
    try:
        srv.setblocking(False)
        srv.accept()[0].close()
    except OSError:
        pass
    time.sleep(0.05)
t.join(10)
out["waiter"] = done
print(json.dumps(out))
`,
        );
        const policy = await sb.write(
          "policy.yaml",
          [
            "name: connect-e2e",
            "extends: coding-agent",
            "mode: block",
            `network: { allow: ["127.0.0.1:${allowed.port}", "127.0.0.1:${closedPort}"] }`,
          ].join("\n"),
        );
        const run = await sb.sentry([
          "run",
          "--sensor",
          "seccomp",
          "--no-api",
          "--no-rollback",
          "--policy",
          policy,
          "--",
          PYTHON,
          agent,
        ]);
        assert.equal(run.code, 0, run.stderr);
        const out = lastJson(run.stdout);
        assert.deepEqual(out.blocking, ["ok"]);
        assert.deepEqual(out.refused, ["err", "ECONNREFUSED"]);
        assert.equal(out.nonblocking, "EINPROGRESS", "a non-blocking socket sees EINPROGRESS");
        assert.equal(out.nonblocking_done, 0);
        assert.equal(out.again, 0);
        assert.equal(out.again2, "EISCONN");
        assert.equal(out.nonblocking_refused, "ECONNREFUSED");
        assert.deepEqual(
          out.unix_relative,
          ["ok"],
          "a relative unix path resolves in the agent's cwd",
        );
        assert.equal(out.still_waiting, true, JSON.stringify(out));
        assert.ok((out.opens_while_waiting_s as number) < 2, JSON.stringify(out));
        assert.equal((out.waiter as Record<string, unknown>).result, "ok", JSON.stringify(out));
        assert.equal(
          allowed.accepted,
          2,
          "the blocking and the non-blocking connect reached the listener",
        );
        const events = await sb.events();
        const connects = events.filter((e) => e.kind === "net.connect");
        assert.ok(
          connects.some((e) =>
            e.target === `127.0.0.1:${allowed.port}` && e.detail.result === "ok"
          ),
          "the supervisor's connect is journaled with its real result",
        );
        assert.ok(
          connects.some((e) =>
            e.target === `127.0.0.1:${closedPort}` && e.detail.errno === "ECONNREFUSED"
          ),
        );
      } finally {
        await allowed.close();
        unixListener.close();
        await unixLoop;
      }
    });
  },
});

Deno.test({
  name:
    "block mode holds a denied connect against a thread that rewrites the sockaddr: 0 connections accepted on a denied port and a denied address in 10,000 tries each",
  ignore: why !== null,
  async fn() {
    await cpuExclusive(async () => {
      await withSandbox(async (sb) => {
        const decoy = new Decoy();
        const deniedPort = new Listener();
        const deniedAddress = new Decoy("127.0.0.2");
        try {
          const agent = await sb.write(
            "race.py",
            `
import ctypes, errno, json, socket, struct, threading
libc = ctypes.CDLL(None, use_errno=True)
def sockaddr(ip, port):
    return struct.pack("<H", socket.AF_INET) + struct.pack(">H", port) + socket.inet_aton(ip) + b"\\0" * 8
decoy = sockaddr("127.0.0.1", ${decoy.port})
out = {}
for name, denied in (("port", sockaddr("127.0.0.1", ${deniedPort.port})), ("address", sockaddr("127.0.0.2", ${deniedAddress.port}))):
    buf = ctypes.create_string_buffer(decoy, 16)
    stop = False
    def flip():
        while not stop:
            ctypes.memmove(buf, denied, 16)
            ctypes.memmove(buf, decoy, 16)
    t = threading.Thread(target=flip, daemon=True)
    t.start()
    connected = refused = 0
    for i in range(10000):
        # Mostly non-blocking (the kernel answers EINPROGRESS and the handshake goes on), every
        # tenth blocking (the supervisor waits for the handshake): both paths race.
        fd = libc.socket(socket.AF_INET, socket.SOCK_STREAM | (0 if i % 10 == 0 else socket.SOCK_NONBLOCK), 0)
        if libc.connect(fd, buf, 16) == 0 or ctypes.get_errno() == errno.EINPROGRESS:
            connected += 1
        else:
            assert ctypes.get_errno() == errno.EPERM, ctypes.get_errno()
            refused += 1
        libc.close(fd)
    stop = True
    t.join()
    out[name] = {"connected": connected, "refused": refused}
print(json.dumps(out))
`,
          );
          const policy = await sb.write(
            "policy.yaml",
            [
              "name: connect-race",
              "extends: coding-agent",
              "mode: block",
              `network: { allow: ["127.0.0.1:${decoy.port}"], deny: ["127.0.0.1:${deniedPort.port}", "127.0.0.2"] }`,
            ].join("\n"),
          );
          const started = performance.now();
          const run = await sb.sentry([
            "run",
            "--sensor",
            "seccomp",
            "--no-api",
            "--no-rollback",
            "--policy",
            policy,
            "--",
            PYTHON,
            agent,
          ], { timeoutMs: 120_000 });
          const ms = performance.now() - started;
          assert.equal(run.code, 0, run.stderr);
          const out = lastJson(run.stdout) as Record<
            string,
            { connected: number; refused: number }
          >;
          await new Promise((r) => setTimeout(r, 200));
          assert.equal(
            deniedPort.accepted,
            0,
            `the denied port accepted nothing: ${JSON.stringify(out)}`,
          );
          assert.equal(deniedAddress.accepted, 0, "the denied address accepted nothing");
          for (const name of ["port", "address"]) {
            // The race was really run: both addresses were seen at the moment of the check.
            assert.ok(out[name]!.connected > 0 && out[name]!.refused > 0, JSON.stringify(out));
          }
          // Every connect that went out went to the decoy (a non-blocking one may still be in its
          // handshake when the socket is closed: at most that many are missing).
          assert.ok(decoy.accepted <= out.port!.connected + out.address!.connected);
          // deno-lint-ignore no-console
          console.log(
            `connect race: ${JSON.stringify(out)}, decoy accepted ${decoy.accepted}, ${
              ms.toFixed(0)
            } ms`,
          );
        } finally {
          await decoy.close();
          await deniedPort.close();
          await deniedAddress.close();
        }
      });
    });
  },
});

const landlock = landlockAbi();
/** Spawns of the exec race: each is a whole process start under the supervisor. */
const EXEC_TRIES = 300;

Deno.test({
  name:
    "block mode holds a denied command against a thread that rewrites the execve path: 0 leaks in 300 spawns (Landlock takes EXECUTE from the binary; a spawn costs ~30 ms under the flipping thread, so not 10,000)",
  ignore: why !== null || landlock.abi < 1,
  async fn() {
    await cpuExclusive(async () => {
      await withSandbox(async (sb) => {
        const agent = await sb.write(
          "exec_race.py",
          `
import ctypes, json, os, sys, threading
TRIES = int(sys.argv[1])
libc = ctypes.CDLL(None, use_errno=True)
a = b"/usr/bin/tr\\0"
b = b"/usr/bin/id\\0"
assert len(a) == len(b)
buf = ctypes.create_string_buffer(a, len(a))
argv = (ctypes.c_char_p * 3)(b"prog", b"-u", None)
envp = (ctypes.c_char_p * 1)(None)
fa = ctypes.create_string_buffer(256)
libc.posix_spawn_file_actions_init(fa)
libc.posix_spawn_file_actions_addopen(fa, 1, b"/dev/null", os.O_WRONLY, 0)
libc.posix_spawn_file_actions_addopen(fa, 2, b"/dev/null", os.O_WRONLY, 0)
stop = False
def flip():
    while not stop:
        ctypes.memmove(buf, b, len(b))
        ctypes.memmove(buf, a, len(a))
t = threading.Thread(target=flip, daemon=True)
t.start()
leaks = other = refused = 0
pid = ctypes.c_int()
for _ in range(TRIES):
    r = libc.posix_spawn(ctypes.byref(pid), buf, fa, None, argv, envp)
    if r != 0:
        refused += 1
        continue
    _, status = os.waitpid(pid.value, 0)
    # id -u exits 0; tr -u fails on its unknown option.
    if os.waitstatus_to_exitcode(status) == 0:
        leaks += 1
    else:
        other += 1
stop = True
t.join()
print(json.dumps({"leaks": leaks, "ran_allowed": other, "refused": refused}))
`,
        );
        const policy = await sb.write(
          "policy.yaml",
          ["name: exec-race", "extends: coding-agent", "mode: block", "processes: { deny: [id] }"]
            .join("\n"),
        );
        const started = performance.now();
        const run = await sb.sentry([
          "run",
          "--sensor",
          "seccomp",
          "--no-api",
          "--no-rollback",
          "--policy",
          policy,
          "--",
          PYTHON,
          agent,
          String(EXEC_TRIES),
        ], { timeoutMs: 120_000 });
        const ms = performance.now() - started;
        assert.equal(run.code, 0, run.stderr);
        const out = lastJson(run.stdout) as Record<string, number>;
        assert.equal(out.leaks, 0, JSON.stringify(out));
        assert.ok(out.ran_allowed! > 0 && out.refused! > 0, JSON.stringify(out));
        // deno-lint-ignore no-console
        console.log(`exec race: ${JSON.stringify(out)}, ${ms.toFixed(0)} ms`);
      });
    });
  },
});

// As uid 65534: the guard and the supervisor's connects need no privilege.

const whyNobody = why ?? NOBODY_SKIP;

Deno.test({
  name:
    "as uid 65534 in mode block: signals and ptrace of Sentry fail with EPERM, the token stays unread, an allowed connect works and a denied one reaches nothing",
  ignore: whyNobody !== null,
  async fn() {
    const allowed = new Listener();
    const denied = new Listener();
    /** What the agent needs in its home, written as root before it is handed over. */
    async function prepare({ dir, data }: NobodyHome): Promise<void> {
      await Deno.mkdir(data, { mode: 0o700 });
      await Deno.writeTextFile(join(data, "api-token"), "secret-token\n");
      await Deno.writeTextFile(
        join(dir, "policy.yaml"),
        [
          "name: nobody-guard",
          "extends: coding-agent",
          "mode: block",
          `network: { allow: ["127.0.0.1:${allowed.port}"], deny: ["127.0.0.1:${denied.port}"] }`,
        ].join("\n"),
      );
      await Deno.writeTextFile(
        join(dir, "agent.py"),
        `
import ctypes, json, os, socket, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
def sys_(nr, *args):
    r = libc.syscall(ctypes.c_long(nr), *[ctypes.c_long(a) for a in args])
    return 0 if r >= 0 else ctypes.get_errno()
sentry = os.getppid()
out = {"uid": os.getuid(), "sigstop": sys_(62, sentry, 19)}
pid = os.fork()
if pid == 0:
    os._exit(sys_(101, 16, sentry, 0, 0))
out["ptrace"] = os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1])
try:
    out["token"] = ["ok", open(${JSON.stringify(join(data, "api-token"))}).read()]
except OSError as e:
    out["token"] = ["err", e.errno]
def connect(port):
    s = socket.socket()
    try:
        s.connect(("127.0.0.1", port))
        return "ok"
    except OSError as e:
        return e.errno
    finally:
        s.close()
out["allowed"] = connect(${allowed.port})
out["denied"] = connect(${denied.port})
print(json.dumps(out))
`,
      );
    }
    let home: NobodyHome | null = null;
    try {
      home = await nobodyHome("sentry-guard-nobody-", (h) => prepare(h));
      const { dir } = home;
      const out = await sentryAsNobody(home, [
        "run",
        "--sensor",
        "seccomp",
        "--no-api",
        "--no-rollback",
        "--policy",
        join(dir, "policy.yaml"),
        "--",
        PYTHON,
        join(dir, "agent.py"),
      ]);
      const stderr = out.stderr;
      assert.equal(out.code, 0, stderr);
      const result = lastJson(out.stdout);
      assert.equal(result.uid, 65534);
      assert.equal(result.sigstop, 1, "EPERM");
      assert.equal(result.ptrace, 1, "EPERM");
      assert.deepEqual(result.token, ["err", 13]);
      assert.equal(result.allowed, "ok", stderr);
      assert.equal(result.denied, 1, "EPERM");
      await new Promise((r) => setTimeout(r, 100));
      assert.equal(allowed.accepted, 1);
      assert.equal(denied.accepted, 0);
      assert.match(stderr, /proc\.control "pid \d+ \(.+\)".*guard\.process -> block/);
    } finally {
      await allowed.close();
      await denied.close();
      if (home !== null) await Deno.remove(home.dir, { recursive: true });
    }
  },
});
