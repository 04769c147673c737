/**
 * Landlock under the seccomp tier: the hard wall the launcher puts up before it execs the agent.
 * What the seccomp check cannot see through (a path through `/proc/self/root` or a symlink
 * chain, a thread rewriting the path after the check) still meets the kernel's own refusal, and
 * Sentry's files and processes are out of the agent's reach, as root and as uid 65534.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { landlockAbi } from "../src/platform/landlock_linux.ts";
import { seccompAvailability } from "../src/platform/mod.ts";
import { SeccompSupervisor } from "../src/sensors/mod.ts";
import { cpuExclusive, withSandbox } from "./_helpers.ts";
import { NOBODY_SKIP, nobodyHome, sentryAsNobody } from "./_nobody.ts";

/** The system python3: its startup reads nothing under the sandbox's home. */
const PYTHON = "/usr/bin/python3";
const ROOT = new URL("../", import.meta.url).pathname;

const seccomp = seccompAvailability();
const support = landlockAbi();
const why = !seccomp.ok
  ? seccomp.reason
  : support.abi < 1
  ? `Landlock is not available: ${support.reason}`
  : support.abi < 6
  ? `Landlock ABI ${support.abi} has no signal scoping (needs 6)`
  : null;
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the Landlock tests: ${why}`);
}

/**
 * TODO(#11): the seccomp worker opens files for the agent (ADDFD) with Sentry's own rights, so
 * a plain `open()` of Sentry's files gets through until the worker refuses what the agent's
 * Landlock plan denies (`landlockAllowsOpen`). Set to true with that change.
 */
const WORKER_HONOURS_PLAN = true;

/**
 * Python that attempts each thing and prints `{name: ["ok", value] | ["err", errno]}`. Opens go
 * through `openat2` (which the supervisor decides on its arguments and lets through), so that
 * what refuses them is the kernel's Landlock domain, not the supervisor.
 */
const AGENT = `
import ctypes, json, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
libc.syscall.restype = ctypes.c_long
args = json.loads(sys.argv[1])
out = {}
def attempt(name, fn):
    try:
        out[name] = ["ok", fn()]
    except OSError as e:
        out[name] = ["err", e.errno]
def openat2(path, flags):
    # openat2 refuses a mode without O_CREAT.
    how = (ctypes.c_uint64 * 3)(flags, 0o600 if flags & os.O_CREAT else 0, 0)
    fd = libc.syscall(437, -100, path.encode(), ctypes.byref(how), 24)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return fd
def read2(path):
    fd = openat2(path, os.O_RDONLY)
    try:
        return len(os.read(fd, 4096))
    finally:
        os.close(fd)
def write2(path):
    fd = openat2(path, os.O_WRONLY | os.O_APPEND)
    try:
        return os.write(fd, b"pwned")
    finally:
        os.close(fd)
def plain(path):
    with open(path, "rb") as f:
        return len(f.read())
def call(fn, *a):
    if fn(*a) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return 0
key, home, ws = args["key"], args["sentryHome"], args["ws"]
journal, token = os.path.join(home, "journal.db"), os.path.join(home, "api-token")
os.symlink(key, os.path.join(ws, "l2"))
os.symlink(os.path.join(ws, "l2"), os.path.join(ws, "l1"))
attempt("key_proc_root", lambda: read2("/proc/self/root" + key))
attempt("key_symlinks", lambda: read2(os.path.join(ws, "l1")))
attempt("key_plain_symlinks", lambda: plain(os.path.join(ws, "l1")))
attempt("journal_read", lambda: read2(journal))
attempt("journal_write", lambda: write2(journal))
attempt("journal_truncate", lambda: os.truncate(journal, 0))
attempt("journal_unlink", lambda: os.unlink(journal))
attempt("journal_rename", lambda: os.rename(journal, os.path.join(ws, "j.db")))
attempt("journal_link", lambda: os.link(journal, os.path.join(ws, "j2.db")))
attempt("token_read", lambda: read2(token))
attempt("home_list", lambda: os.close(openat2(home, os.O_RDONLY | os.O_DIRECTORY)))
attempt("home_create", lambda: os.close(openat2(os.path.join(home, "x"), os.O_WRONLY | os.O_CREAT)))
attempt("journal_plain", lambda: plain(journal))
attempt("token_plain", lambda: plain(token))
sentry = os.getppid()
watchdog = None
for pid in filter(str.isdigit, os.listdir("/proc")):
    try:
        stat = open(f"/proc/{pid}/stat").read()
        cmd = open(f"/proc/{pid}/cmdline", "rb").read()
    except OSError:
        continue
    if int(stat.rsplit(")", 1)[1].split()[1]) == sentry and b"sentry-watchdog" in cmd:
        watchdog = int(pid)
out["watchdog_found"] = watchdog is not None
attempt("stop_sentry", lambda: os.kill(sentry, signal.SIGSTOP))
attempt("kill_sentry", lambda: os.kill(sentry, signal.SIGKILL))
attempt("kill_watchdog", lambda: os.kill(watchdog, signal.SIGKILL))
attempt("watchdog_stdin", lambda: write2(f"/proc/{watchdog}/fd/0"))
attempt("sentry_environ", lambda: read2(f"/proc/{sentry}/environ"))
attempt("ptrace_sentry", lambda: call(libc.ptrace, 16, sentry, None, None))
attempt("kill_own_child", lambda: (lambda p: (os.kill(p, signal.SIGKILL), os.waitpid(p, 0))[1][1])(os.fork() or os.execv("/bin/sleep", ["sleep", "30"])))
print(json.dumps(out))
`;

/** The outcomes every run must show: the wall holds, and nothing outside the tree is reached. */
function assertWalled(out: Record<string, [string, unknown]>, options: { plain: boolean }) {
  const EACCES = ["err", 13];
  const EPERM = ["err", 1];
  for (const name of ["key_proc_root", "key_symlinks", "key_plain_symlinks"]) {
    assert.deepEqual(out[name], EACCES, `${name}: no byte of the key is read`);
  }
  for (
    const name of [
      "journal_read",
      "journal_write",
      "journal_truncate",
      "journal_unlink",
      "token_read",
      "home_list",
      "home_create",
    ]
  ) assert.deepEqual(out[name], EACCES, name);
  // A rename or link out of a directory the agent cannot remove from: EACCES, or EXDEV when the
  // kernel checks REFER first.
  for (const name of ["journal_rename", "journal_link"]) {
    assert.ok(
      JSON.stringify(out[name]) === '["err",13]' || JSON.stringify(out[name]) === '["err",18]',
      `${name}: ${JSON.stringify(out[name])}`,
    );
  }
  if (options.plain) {
    assert.deepEqual(out.journal_plain, EACCES);
    assert.deepEqual(out.token_plain, EACCES);
  }
  assert.equal(out.watchdog_found, true);
  for (const name of ["stop_sentry", "kill_sentry", "kill_watchdog", "ptrace_sentry"]) {
    assert.deepEqual(out[name], EPERM, `${name}: outside the agent's domain`);
  }
  assert.deepEqual(out.watchdog_stdin, EACCES, "no write into the watchdog's pipe");
  assert.deepEqual(out.sentry_environ, EACCES, "no look into Sentry's environment");
  assert.deepEqual(out.kill_own_child, ["ok", 9], "its own tree stays in reach");
}

async function sandboxAgent(sb: { write(name: string, text: string): Promise<string> }) {
  return await sb.write("agent.py", AGENT);
}

Deno.test({
  name:
    "Landlock under block mode: the key stays unreadable through /proc/self/root and symlinks, and Sentry's journal, token and processes are out of reach",
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      await Deno.mkdir(sb.data, { recursive: true, mode: 0o700 });
      await Deno.writeTextFile(join(sb.data, "api-token"), "secret-token\n", { mode: 0o600 });
      const agent = await sandboxAgent(sb);
      const run = await sb.sentry([
        "run",
        "--sensor",
        "seccomp",
        "--no-api",
        "--no-rollback",
        "--policy",
        "coding-agent",
        "--mode",
        "block",
        "--",
        PYTHON,
        agent,
        JSON.stringify({ key: sb.sshKey, sentryHome: sb.data, ws: sb.workspace }),
      ], { timeoutMs: 60_000 });
      assert.equal(run.code, 0, run.stderr);
      assert.match(
        run.stderr,
        /Landlock \(ABI \d+, \d+ rules\) walls off Sentry's own files and the policy's deny lists(; [^;]+)*; the agent cannot signal/,
      );
      assert.match(
        run.stderr,
        /Landlock cannot enforce \d+ deny rules?; .*files\.read\.deny "\/proc\/\*\/environ" \(it is under \/proc/,
      );
      const out = JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "{}");
      assertWalled(out, { plain: WORKER_HONOURS_PLAN });
      // Sentry lived on and journaled the session to its end.
      assert.equal(await Deno.readTextFile(join(sb.data, "api-token")), "secret-token\n");
      const sessions = await sb.sessions();
      assert.equal(sessions[0]?.tier, "seccomp");
      assert.notEqual(sessions[0]?.endedAt, null, JSON.stringify(sessions[0]));
      assert.equal(sessions[0]?.exitCode, 0);
      const events = await sb.events();
      assert.ok(
        events.some((e) =>
          e.kind === "file.read" && e.target === sb.sshKey && e.verdict === "deny"
        ),
        "the refused read of the key is journaled",
      );
    });
  },
});

Deno.test({
  name:
    "Landlock in the other modes walls off Sentry's processes (no signal, no ptrace) but no path, so the agent keeps every file right",
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      await Deno.mkdir(sb.data, { recursive: true, mode: 0o700 });
      await Deno.writeTextFile(join(sb.data, "api-token"), "secret-token\n", { mode: 0o600 });
      const agent = await sb.write(
        "agent.py",
        `
import json, os, signal
out = {}
def attempt(name, fn):
    try:
        out[name] = ["ok", fn()]
    except OSError as e:
        out[name] = ["err", e.errno]
home = ${JSON.stringify(sb.data)}
attempt("kill_sentry", lambda: os.kill(os.getppid(), signal.SIGKILL))
attempt("write_ws", lambda: open("fine.txt", "w").write("yes"))
print(json.dumps(out))
`,
      );
      const run = await sb.sentry([
        "run",
        "--sensor",
        "seccomp",
        "--no-api",
        "--no-rollback",
        "--policy",
        "coding-agent",
        "--mode",
        "alert",
        "--",
        PYTHON,
        agent,
      ], { timeoutMs: 60_000 });
      assert.equal(run.code, 0, run.stderr);
      assert.match(run.stderr, /Landlock \(ABI \d+, \d+ rules\) is on .*mode block only\)/);
      assert.doesNotMatch(run.stderr, /Landlock cannot enforce/);
      const out = JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "{}");
      // Outside mode block no path is walled off (nothing is lost to the ancestors' rule); the
      // token's own mode (0600, Sentry's user) is what guards it there.
      assert.deepEqual(out.kill_sentry, ["err", 1]);
      assert.deepEqual(out.write_ws, ["ok", 3]);
    });
  },
});

/**
 * A thread flips the path between a decoy in the workspace and a protected file while the main
 * thread unlinks or renames it: the supervisor checks one, the kernel may run the other.
 */
const RACE = `
import ctypes, json, os, sys, threading
libc = ctypes.CDLL(None, use_errno=True)
secret, decoy, moved, tries = sys.argv[1], sys.argv[2], sys.argv[3], int(sys.argv[4])
a = decoy.encode() + b"\\0"
b = secret.encode() + b"\\0"
assert len(a) == len(b), (len(a), len(b))
buf = ctypes.create_string_buffer(a, len(a))
stop = False
def flip():
    while not stop:
        ctypes.memmove(buf, b, len(b))
        ctypes.memmove(buf, a, len(a))
t = threading.Thread(target=flip, daemon=True)
t.start()
leaks = done = refused = 0
for i in range(tries):
    if not os.path.exists(decoy):
        open(decoy, "w").close()
    r = libc.unlink(buf) if i % 2 == 0 else libc.rename(buf, moved.encode())
    if r == 0:
        done += 1
    else:
        refused += 1
    if not os.path.exists(secret):
        leaks += 1
        if os.path.exists(moved):
            os.rename(moved, secret)
        else:
            open(secret, "w").write("protected\\n")
    elif os.path.exists(moved):
        os.unlink(moved)
stop = True
t.join()
print(json.dumps({"leaks": leaks, "done": done, "refused": refused}))
`;

Deno.test({
  name:
    "Landlock holds a denied unlink and rename against a thread that rewrites the path after the check: 0 leaks in 10,000 tries",
  ignore: why !== null,
  async fn() {
    await cpuExclusive(async () => {
      await withSandbox(async (sb) => {
        const protectedDir = sb.path("prot");
        await Deno.mkdir(protectedDir);
        const secret = join(protectedDir, "secret.txt");
        // Same length as the secret's path, so that a flip is one memmove.
        const decoy = join(sb.workspace, "d".repeat(secret.length - sb.workspace.length - 1));
        assert.equal(decoy.length, secret.length);
        const moved = join(sb.workspace, "moved.txt");
        await Deno.writeTextFile(secret, "protected\n");
        const race = await sb.write("race.py", RACE);
        const policy = (name: string, lines: string[]) =>
          sb.write(
            `${name}.yaml`,
            [`name: ${name}`, "extends: coding-agent", "mode: block", ...lines].join("\n"),
          );
        const glob = JSON.stringify(protectedDir + "/**");
        // The same protection as a deny list (mapped to Landlock) and as a rule (the supervisor's
        // check alone): the rule shows what the race wins without the wall.
        const walled = await policy("walled", ["files:", `  delete: { deny: [${glob}] }`]);
        const checked = await policy("checked", [
          "rules:",
          "  - id: protect_dir",
          "    description: Detect deletes in the protected directory",
          `    match: { kind: file.delete, target: ${glob} }`,
          "    risk: 90",
          "    response: block",
        ]);
        const runWith = async (file: string) => {
          const run = await sb.sentry([
            "run",
            "--sensor",
            "seccomp",
            "--no-api",
            "--no-rollback",
            "--policy",
            file,
            "--",
            PYTHON,
            race,
            secret,
            decoy,
            moved,
            "10000",
          ], { timeoutMs: 180_000 });
          assert.equal(run.code, 0, run.stderr);
          return JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "{}");
        };
        const baseline = await runWith(checked);
        await Deno.writeTextFile(secret, "protected\n");
        const result = await runWith(walled);
        // deno-lint-ignore no-console
        console.log(
          `unlink/rename race, 10,000 tries: ${baseline.leaks} leaks with the check alone, ${result.leaks} with Landlock (${result.done} decoys done, ${result.refused} refused)`,
        );
        assert.equal(result.leaks, 0, JSON.stringify(result));
        // The race was really run: both paths were seen at the moment of the check.
        assert.ok(result.done > 0 && result.refused > 0, JSON.stringify(result));
        assert.equal(await Deno.readTextFile(secret), "protected\n");
      });
    });
  },
});

Deno.test({
  name:
    "a Landlock plan the kernel refuses stops the launch with one line, and the agent never runs",
  ignore: why !== null,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sentry-landlock-" });
    try {
      const marker = join(dir, "ran");
      const self = [
        Deno.execPath(),
        "run",
        "-A",
        "--cached-only",
        "--config",
        join(ROOT, "deno.json"),
        join(ROOT, "main.ts"),
      ];
      const supervisor = await SeccompSupervisor.create({ self });
      let child: Deno.ChildProcess | null = null;
      let failure: unknown = null;
      try {
        // A plan made for a Landlock newer than this kernel's: the launcher cannot apply it.
        const landlock = {
          abi: support.abi + 1,
          handledFs: 4,
          scoped: 0,
          rules: [{ path: "/", access: 4 }],
          denied: { read: [], write: [], delete: [] },
          unenforceable: [],
        };
        const [cmd, ...args] = supervisor.launcherArgs(["/usr/bin/touch", marker], { landlock });
        child = new Deno.Command(cmd as string, {
          args,
          stdin: "null",
          stdout: "null",
          stderr: "piped",
        }).spawn();
        await supervisor.awaitListener({ exited: child.status, timeoutMs: 30_000 }).catch((e) =>
          failure = e
        );
      } finally {
        await supervisor.close();
      }
      const out = await child.output();
      assert.equal(out.code, 1);
      assert.match(
        String((failure as Error | null)?.message),
        /^Sentry's seccomp launcher failed: Cannot apply Landlock: the plan is for ABI \d+, the kernel has ABI \d+$/,
      );
      const lines = new TextDecoder().decode(out.stderr).trim().split("\n");
      assert.equal(lines.length, 1, lines.join("\n"));
      assert.equal(await Deno.stat(marker).then(() => true, () => false), false, "never ran");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

// As uid 65534

const whyNobody = why ?? NOBODY_SKIP;

Deno.test({
  name:
    "Landlock as uid 65534: the key, Sentry's journal and token, and Sentry's processes are out of the agent's reach",
  ignore: whyNobody !== null,
  async fn() {
    const home = await nobodyHome("sentry-nobody-", async ({ dir, data }) => {
      await Deno.mkdir(join(dir, ".ssh"), { mode: 0o700 });
      await Deno.mkdir(data, { mode: 0o700 });
      await Deno.writeTextFile(
        join(dir, ".ssh", "id_rsa"),
        "-----BEGIN OPENSSH PRIVATE KEY-----\n",
      );
      await Deno.writeTextFile(join(data, "api-token"), "secret-token\n");
      await Deno.writeTextFile(join(dir, "agent.py"), AGENT);
    });
    const { dir, ws, data } = home;
    try {
      const key = join(dir, ".ssh", "id_rsa");
      const out = await sentryAsNobody(home, [
        "run",
        "--sensor",
        "seccomp",
        "--no-api",
        "--no-rollback",
        "--policy",
        "coding-agent",
        "--mode",
        "block",
        "--",
        PYTHON,
        join(dir, "agent.py"),
        JSON.stringify({ key, sentryHome: data, ws }),
      ]);
      assert.equal(out.code, 0, out.stderr);
      const result = JSON.parse(out.stdout.trim().split("\n").at(-1)!);
      assertWalled(result, { plain: WORKER_HONOURS_PLAN });
      assert.equal(await Deno.readTextFile(join(data, "api-token")), "secret-token\n");
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
