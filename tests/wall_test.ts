/**
 * The agent's wall under `sentry run` with the tiers that have no launcher of their own (eBPF,
 * fanotify, poll): Landlock scoping keeps the agent from signalling, stopping or tracing Sentry
 * and its watchdog; as root, Sentry's directories are hidden in the agent's mount namespace and
 * the capabilities that would switch Sentry off are gone. And a Sentry killed while it starts
 * never lets the agent run unwatched.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { landlockAbi } from "../src/platform/landlock_linux.ts";
import { probeTiers } from "../src/session/tiers.ts";
import { delay, isGone, type Sandbox, waitFor, withSandbox } from "./_helpers.ts";

const PYTHON = "/usr/bin/python3";
const support = landlockAbi();
const root = Deno.uid() === 0;
const probes = await probeTiers();
const usable = new Set(probes.filter((p) => p.ok).map((p) => p.tier));
const why = support.abi < 6
  ? `Landlock ABI ${support.abi} has no signal scoping (needs 6): ${support.reason ?? ""}`
  : null;
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the wall tests: ${why}`);
}

/** Python that attempts each thing and prints `{name: ["ok", value] | ["err", errno]}`. */
const AGENT = `
import ctypes, json, os, signal, sys
libc = ctypes.CDLL(None, use_errno=True)
home = sys.argv[1]
out = {}
def attempt(name, fn):
    try:
        out[name] = ["ok", fn()]
    except OSError as e:
        out[name] = ["err", e.errno]
def call(fn, *a):
    if fn(*a) != 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return 0
def read(path):
    with open(path, "rb") as f:
        return len(f.read())
def append(path):
    with open(path, "ab") as f:
        return f.write(b"pwned")
journal, token = os.path.join(home, "journal.db"), os.path.join(home, "api-token")
attempt("journal_read", lambda: read(journal))
attempt("journal_write", lambda: append(journal))
attempt("token_read", lambda: read(token))
attempt("home_list", lambda: os.listdir(home))
attempt("umount_home", lambda: call(libc.umount2, home.encode(), 2))
attempt("mknod_disk", lambda: os.mknod(os.path.join(os.getcwd(), "disk"), 0o600 | 0o60000, os.makedev(8, 0)))
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
attempt("watchdog_stdin", lambda: append(f"/proc/{watchdog}/fd/0"))
attempt("sentry_root", lambda: read(f"/proc/{sentry}/root{token}"))
attempt("ptrace_sentry", lambda: call(libc.ptrace, 16, sentry, None, None))
attempt("kill_own_child", lambda: (lambda p: (os.kill(p, signal.SIGKILL), os.waitpid(p, 0))[1][1])(os.fork() or os.execv("/bin/sleep", ["sleep", "30"])))
caps = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapBnd:")][0]
out["cap_sys_admin"] = bool(int(caps, 16) >> 21 & 1)
out["cap_bpf"] = bool(int(caps, 16) >> 39 & 1)
eff = [l.split()[1] for l in open("/proc/self/status") if l.startswith("CapEff:")][0]
out["cap_dac_read_search"] = bool(int(eff, 16) >> 2 & 1)
# A file reached by its handle, past every path check: name_to_handle_at, open_by_handle_at.
handle = ctypes.create_string_buffer(8 + 128)
ctypes.c_uint.from_buffer(handle, 0).value = 128
mount_id = ctypes.c_int()
def by_handle():
    call(lambda: libc.syscall(303, -100, sys.argv[0].encode(), handle, ctypes.byref(mount_id), 0))
    fd = libc.syscall(304, os.open(sys.argv[0], os.O_RDONLY), handle, os.O_RDONLY)
    if fd < 0:
        e = ctypes.get_errno()
        raise OSError(e, os.strerror(e))
    return 0
attempt("open_by_handle", by_handle)
print(json.dumps(out))
`;

async function runAgent(sb: Sandbox, tier: string, mode: string) {
  await Deno.mkdir(sb.data, { recursive: true, mode: 0o700 });
  await Deno.writeTextFile(join(sb.data, "api-token"), "secret-token\n", { mode: 0o600 });
  const agent = await sb.write("agent.py", AGENT);
  const run = await sb.sentry([
    "run",
    "--sensor",
    tier,
    "--no-api",
    "--no-rollback",
    "--policy",
    "coding-agent",
    "--mode",
    mode,
    "--",
    PYTHON,
    agent,
    sb.data,
  ], { timeoutMs: 60_000 });
  assert.equal(run.code, 0, run.stderr);
  const out = JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "{}") as Record<
    string,
    [string, unknown]
  >;
  return { run, out };
}

const EPERM = ["err", 1];
const ENOENT = ["err", 2];
const EACCES = ["err", 13];
const EROFS = ["err", 30];

Deno.test({
  name:
    "under the seccomp tier too, a root agent runs without the capabilities that switch Sentry off, and reaches no file by its handle",
  ignore: why !== null || !usable.has("seccomp") || !root,
  async fn() {
    await withSandbox(async (sb) => {
      const { out } = await runAgent(sb, "seccomp", "monitor");
      assert.equal(out.cap_sys_admin, false, "no CAP_SYS_ADMIN");
      assert.equal(out.cap_bpf, false, "nor CAP_BPF");
      assert.equal(out.cap_dac_read_search, false, "nor CAP_DAC_READ_SEARCH");
      assert.deepEqual(out.open_by_handle, EPERM, "no file reached by its handle");
      assert.deepEqual(out.kill_own_child, ["ok", 9], "its own tree stays in reach");
    });
  },
});

for (const tier of ["ebpf", "fanotify", "poll"] as const) {
  Deno.test({
    name:
      `the wall under the ${tier} tier: the agent cannot stop, kill or trace Sentry or its watchdog, nor read or write the journal and the token, nor unmount the mask`,
    ignore: why !== null || !usable.has(tier) || !root,
    async fn() {
      await withSandbox(async (sb) => {
        const { run, out } = await runAgent(sb, tier, "monitor");
        assert.match(run.stderr, /the agent cannot signal or trace processes outside its own tree/);
        assert.match(run.stderr, /are hidden from the agent \(an empty tmpfs/);
        // Hidden: the directory the agent sees is an empty tmpfs it cannot even list.
        for (const name of ["journal_read", "journal_write", "token_read"]) {
          assert.ok(
            [ENOENT, EACCES, EROFS].map((e) => JSON.stringify(e)).includes(
              JSON.stringify(out[name]),
            ),
            `${name}: ${JSON.stringify(out[name])}`,
          );
        }
        assert.ok(
          JSON.stringify(out.home_list) === JSON.stringify(["ok", []]) ||
            JSON.stringify(out.home_list) === JSON.stringify(EACCES),
          `home_list: ${JSON.stringify(out.home_list)}`,
        );
        assert.deepEqual(out.umount_home, EPERM, "the mask cannot be taken down");
        assert.deepEqual(out.mknod_disk, EACCES, "no block device node to read the disk through");
        assert.equal(out.watchdog_found, true);
        for (const name of ["stop_sentry", "kill_sentry", "kill_watchdog", "ptrace_sentry"]) {
          assert.deepEqual(out[name], EPERM, `${name}: outside the agent's domain`);
        }
        assert.deepEqual(out.watchdog_stdin, EACCES, "no write into the watchdog's pipe");
        assert.deepEqual(out.sentry_root, EACCES, "no way round the mask through /proc/PID/root");
        assert.deepEqual(out.kill_own_child, ["ok", 9], "its own tree stays in reach");
        assert.equal(out.cap_sys_admin, false, "a root agent runs without CAP_SYS_ADMIN");
        assert.equal(out.cap_bpf, false, "nor CAP_BPF");
        assert.equal(out.cap_dac_read_search, false, "nor CAP_DAC_READ_SEARCH");
        assert.deepEqual(out.open_by_handle, EPERM, "no file reached by its handle");
        // The journal is whole and Sentry ended cleanly: the agent reached nothing of it.
        assert.equal(await Deno.readTextFile(join(sb.data, "api-token")), "secret-token\n");
        const events = await sb.events();
        const guarded = events.filter((e) => e.rule === "guard.sentry_home");
        // Only the eBPF tier sees opens that fail (the fanotify tier sees files that opened;
        // the poll tier sees neither): the README's tier table says so.
        if (tier === "ebpf") {
          assert.ok(guarded.length > 0, "the attempts on Sentry's files are journaled as denied");
          assert.ok(
            guarded.some((e) => e.response === "block" && typeof e.detail.blocked === "string"),
            `the mask's refusals are journaled as blocks: ${JSON.stringify(guarded)}`,
          );
        }
      });
    },
  });
}

for (const tier of ["auto", "seccomp"] as const) {
  Deno.test({
    name:
      `SIGKILL of Sentry at any moment of start-up (${tier} tier) never lets the agent run unwatched: it runs after Sentry let it go, or not at all`,
    ignore: why !== null || (tier === "seccomp" && !usable.has("seccomp")),
    async fn() {
      await withSandbox(async (sb) => {
        const marker = sb.path("ran");
        const trials = 8;
        let ranUnwatched = 0;
        let ran = 0;
        for (let i = 0; i < trials; i++) {
          await Deno.remove(marker).catch(() => {});
          const run = sb.spawn([
            "run",
            "--sensor",
            tier,
            "--no-api",
            "--no-rollback",
            "--on-exit",
            "resume",
            "--",
            "/bin/sh",
            "-c",
            `echo "$$" >> ${marker}; sleep 2`,
          ]);
          // From the first moments (policy load) to well after the agent was let go.
          await delay(150 + i * 250);
          run.kill("SIGKILL");
          await run.exit(20_000);
          // The watchdog acts within a moment of Sentry's death.
          await delay(1500);
          let pids: number[] = [];
          try {
            pids = (await Deno.readTextFile(marker)).trim().split("\n").map(Number);
          } catch {
            // It never ran.
          }
          if (pids.length === 0) continue;
          ran++;
          // It ran: only after Sentry let it go, with the session open and its sensors ready
          // (what Sentry journaled in its last batch window may be lost with it: issue 12).
          const sessions = await sb.sessions();
          const session = sessions.find((s) => s.command.join(" ").includes(marker));
          if (session === undefined || /before the agent was let go/.test(session.note ?? "")) {
            ranUnwatched++;
            // deno-lint-ignore no-console
            console.log(`trial ${i}: ran ${pids}, session ${JSON.stringify(session)}`);
          }
          for (const pid of pids) {
            await waitFor(() => isGone(pid), { what: `agent ${pid} gone`, timeoutMs: 10_000 });
          }
        }
        // deno-lint-ignore no-console
        console.log(
          `start-up SIGKILL (${tier}): ${ran}/${trials} runs let the agent start, ${ranUnwatched} unwatched`,
        );
        assert.equal(ranUnwatched, 0, `${ranUnwatched} of ${trials} let the agent run unwatched`);
      });
    },
  });
}
