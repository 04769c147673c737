import assert from "node:assert/strict";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import { seccompAvailability } from "../platform/seccomp_linux.ts";
import { ProcessTable } from "./kernel_action.ts";
import type { SensorEvent } from "./sensor.ts";
import { type SeccompCounters, SeccompLaunchError, SeccompSupervisor } from "./seccomp_sensor.ts";

// End-to-end tests of the seccomp tier through its own API: the real launcher
// (`main.ts __seccomp_launch`), the supervisor and the Worker, with real processes. This file is
// also the helper that the unprivileged test runs as uid 65534 (see the bottom).

const ROOT = fileURLToPath(new URL("../../", import.meta.url));
const SELF = [
  Deno.execPath(),
  "run",
  "-A",
  "--no-lock",
  "--cached-only",
  "--config",
  join(ROOT, "deno.json"),
  join(ROOT, "main.ts"),
];
/** A real python3 that any user can run (pyenv shims live under /root and run bash first). */
const PYTHON = "/usr/bin/python3";
const TEST_TIMEOUT_MS = 60_000;

const available = seccompAvailability();
const hasPython = (() => {
  try {
    return Deno.statSync(PYTHON).isFile;
  } catch {
    return false;
  }
})();
const ignore = !available.ok || !hasPython;
/** Why the tests are skipped, shown in their names. */
const skipped = !available.ok ? available.reason : !hasPython ? `${PYTHON} is missing` : "";

/** A test name that says why it is skipped, when it is. */
function named(name: string, reason = skipped): string {
  return reason === "" ? name : `${name} (skipped: ${reason})`;
}

interface AgentRun {
  /** The launcher's pid, which becomes the agent's. */
  pid: number;
  events: SensorEvent[];
  status: Deno.CommandStatus;
  stdout: string;
  stderr: string;
  counters: SeccompCounters;
}

interface RunOptions {
  cwd?: string;
  /** Called on every event, as it arrives. */
  onEvent?: (event: SensorEvent, stop: AbortController) => void;
  /** Stop the sensor when this resolves (default: when the agent exits). */
  stopWhen?: (status: Promise<Deno.CommandStatus>) => Promise<unknown>;
}

/** Runs a command under the seccomp tier until it exits; every resource is released after. */
async function runUnderSeccomp(command: string[], options: RunOptions = {}): Promise<AgentRun> {
  const supervisor = await SeccompSupervisor.create({ self: SELF });
  const stop = new AbortController();
  const events: SensorEvent[] = [];
  let child: Deno.ChildProcess | null = null;
  try {
    const [cmd, ...args] = supervisor.launcherArgs(command);
    child = new Deno.Command(cmd as string, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
      env: { DENO_NO_UPDATE_CHECK: "1" },
      ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    }).spawn();
    const stdout = new Response(child.stdout).text();
    const stderr = new Response(child.stderr).text();
    const { pid } = await supervisor.awaitListener({ exited: child.status });
    assert.equal(pid, child.pid, "the launcher hands over from its own pid");
    assert.throws(
      () => Deno.statSync(dirname(supervisor.socketPath)),
      Deno.errors.NotFound,
      "the control directory is gone once the launcher handed over: a SIGKILL leaves no litter",
    );
    const sensor = supervisor.createSensor({
      table: new ProcessTable(() => null),
      databasePorts: new Set([5432]),
    });
    const running = sensor.start((event) => {
      events.push(event);
      options.onEvent?.(event, stop);
    }, stop.signal);
    try {
      await sensor.ready();
      supervisor.go();
      await (options.stopWhen?.(child.status) ?? child.status);
      stop.abort();
      await running;
      const status = await child.status;
      return {
        pid,
        events,
        status,
        stdout: await stdout,
        stderr: await stderr,
        counters: sensor.counters(),
      };
    } finally {
      stop.abort();
      await running;
    }
  } finally {
    if (child !== null) {
      try {
        child.kill("SIGKILL");
      } catch {
        // Already exited.
      }
      await child.status;
    }
    await supervisor.close();
  }
}

const AGENT = `
import json, os, socket, sys, threading, time
work, port, report = sys.argv[1], int(sys.argv[2]), sys.argv[3]
os.chdir(work)
t = threading.Thread(target=lambda: open(os.path.join(work, "by_thread"), "w").close())
t.start(); t.join()
fd = os.open(os.path.join(work, "read_me"), os.O_RDONLY); time.sleep(0.001); os.close(fd)
d = os.open(work, os.O_RDONLY | os.O_DIRECTORY)
fd = os.open("created", os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o644, dir_fd=d); os.close(fd)
os.close(d)
os.rename("created", "renamed")
os.unlink(os.path.join(work, "renamed"))
s = socket.create_connection(("127.0.0.1", port)); s.close()
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.sendto(b"x", ("127.0.0.1", 9)); u.sendmsg([b"y"], [], 0, ("127.0.0.1", 9)); u.close()
r, w = os.pipe()
mid = os.fork()
if mid == 0:
    if os.fork() == 0:
        os.setsid()
        os.close(r)
        with open(report + ".g", "w") as f: f.write(str(os.getpid()))
        os.set_inheritable(w, True)
        os.execv("/bin/true", ["true", "from-grandchild"])
    os._exit(0)
os.close(w)
os.waitpid(mid, 0)
os.read(r, 1)
with open(report, "w") as f: json.dump({"pid": os.getpid(), "ppid": os.getppid(), "mid": mid}, f)
`;

interface AgentReport {
  pid: number;
  ppid: number;
  mid: number;
  grandchild: number;
}

/** Runs AGENT under `sh -c` in `work` against a loopback listener; returns what was recorded. */
async function runAgent(
  work: string,
): Promise<{ run: AgentRun; report: AgentReport; accepted: number; port: number }> {
  await Deno.writeTextFile(join(work, "read_me"), "secret");
  await Deno.writeTextFile(join(work, "agent.py"), AGENT);
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  let accepted = 0;
  const accepting = (async () => {
    for await (const conn of listener) {
      accepted++;
      conn.close();
    }
  })();
  try {
    const report = join(work, "report.json");
    const run = await runUnderSeccomp([
      "/bin/sh",
      "-c",
      '"$0" "$@"; true',
      PYTHON,
      join(work, "agent.py"),
      work,
      String(listener.addr.port),
      report,
    ], { cwd: work });
    assert.equal(run.status.code, 0, `the agent failed: ${run.stderr}`);
    const parsed = JSON.parse(await Deno.readTextFile(report));
    const grandchild = Number(await Deno.readTextFile(`${report}.g`));
    return { run, report: { ...parsed, grandchild }, accepted, port: listener.addr.port };
  } finally {
    listener.close();
    await accepting.catch(() => {});
  }
}

/** Asserts that every action of AGENT was recorded once, with the right pid and exe. */
function assertAgentRecorded(
  work: string,
  run: AgentRun,
  report: AgentReport,
  port: number,
): void {
  const python = Deno.realPathSync(PYTHON);
  const only = (kind: string, target: string) => {
    const found = run.events.filter((e) => e.kind === kind && e.target === target);
    assert.equal(found.length, 1, `${kind} ${target}: ${found.length} events`);
    return found[0] as SensorEvent;
  };
  const byAgent = (event: SensorEvent) => {
    assert.equal(event.pid, report.pid, `${event.kind} ${event.target} pid`);
    assert.equal(event.exe, python, `${event.kind} ${event.target} exe`);
  };
  // The launcher's own execve is the first thing recorded: sh, in the launcher's pid.
  const sh = run.events.find((e) => e.kind === "proc.exec" && e.detail.path === "/bin/sh");
  assert.equal(sh?.pid, run.pid);
  const py = run.events.find((e) => e.kind === "proc.exec" && e.pid === report.pid);
  assert.equal(py?.detail.path, PYTHON);
  assert.equal(py?.ppid, run.pid, "python's parent is the sh wrapper");
  byAgent(only("file.read", join(work, "read_me")));
  // A thread's action belongs to its process; the thread id is kept beside it.
  const threaded = only("file.create", join(work, "by_thread"));
  byAgent(threaded);
  assert.ok(typeof threaded.detail.tid === "number" && threaded.detail.tid !== report.pid);
  byAgent(only("file.create", join(work, "created")));
  const rename = only("file.rename", join(work, "renamed"));
  byAgent(rename);
  assert.equal(rename.detail.from, join(work, "created"));
  byAgent(only("file.delete", join(work, "renamed")));
  byAgent(only("net.connect", `127.0.0.1:${port}`));
  const udp = run.events.filter((e) => e.kind === "net.connect" && e.target === "127.0.0.1:9");
  assert.deepEqual(udp.map((e) => e.detail.syscall).sort(), ["sendmsg", "sendto"]);
  udp.forEach(byAgent);
  // The grandchild, after a double fork and setsid, is still seen, with its own pid.
  assert.notEqual(report.grandchild, report.pid);
  assert.notEqual(report.grandchild, report.mid);
  const written = only("file.create", `${join(work, "report.json")}.g`);
  assert.equal(written.pid, report.grandchild);
  assert.equal(written.exe, python);
  const exec = run.events.filter((e) => e.kind === "proc.exec" && e.pid === report.grandchild);
  assert.equal(exec.length, 1);
  assert.equal(exec[0]?.detail.path, "/bin/true");
  assert.deepEqual(exec[0]?.cmdline, ["true", "from-grandchild"]);
  // Nothing from outside the tree, nothing lost, no blind spot.
  const tree = new Set([run.pid, report.pid, report.mid, report.grandchild]);
  for (const event of run.events) {
    assert.ok(tree.has(event.pid ?? -1), `pid ${event.pid} is not in the tree`);
  }
  assert.equal(run.counters.answered, run.counters.notifications);
  assert.deepEqual(run.counters.blind, {});
  assert.equal(
    run.counters.ended,
    "hangup",
    "the loop ends when the last process of the tree exits",
  );
}

Deno.test({
  name: named(
    "the seccomp tier records every action of a python agent under sh -c, through a double fork and setsid",
  ),
  ignore,
  fn: async () => {
    const work = await Deno.makeTempDir({ prefix: "sentry_seccomp_" });
    const fds = await warmFds();
    try {
      const { run, report, accepted, port } = await withTimeout(runAgent(work), TEST_TIMEOUT_MS);
      assert.deepEqual(await settledFds(fds), fds, "no fd (listener, socket, /proc) is left open");
      assert.equal(accepted, 1, "the listener accepted the agent's connection");
      assertAgentRecorded(work, run, report, port);
      assert.ok(run.counters.syncWakeUp, "SYNC_WAKE_UP is on (Linux 6.6+)");
    } finally {
      await Deno.remove(work, { recursive: true });
    }
  },
});

Deno.test({
  name: named(
    "the seccomp tier runs the agent in the launcher's pid, with SIGPIPE and signals 32 and 33 at their default",
  ),
  ignore,
  fn: async () => {
    const run = await withTimeout(
      runUnderSeccomp(["/bin/sh", "-c", 'echo "$$"; grep -E "^Sig(Ign|Blk)" /proc/self/status']),
      TEST_TIMEOUT_MS,
    );
    const [pid] = run.stdout.trim().split("\n");
    assert.equal(Number(pid), run.pid);
    const field = (name: string) =>
      BigInt(`0x${new RegExp(`^${name}:\\s*([0-9a-f]+)$`, "m").exec(run.stdout)?.[1]}`);
    const mask = field("SigIgn");
    for (const signal of [13n, 32n, 33n]) {
      assert.equal((mask >> (signal - 1n)) & 1n, 0n, `signal ${signal} is ignored`);
    }
    assert.equal(field("SigBlk"), 0n, "no signal is blocked");
  },
});

Deno.test({
  name: named(
    "the seccomp launcher fails clearly: 127 for a missing command, 126 for a non-executable one",
  ),
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sentry_seccomp_" });
    try {
      await Deno.writeTextFile(join(dir, "plain.txt"), "not a program");
      for (
        const [command, code, message] of [
          ["no-such-command-xyz", 127, 'Command not found: "no-such-command-xyz"'],
          [join(dir, "plain.txt"), 126, "is not an executable file"],
        ] as const
      ) {
        const supervisor = await SeccompSupervisor.create({ self: SELF });
        try {
          const [cmd, ...args] = supervisor.launcherArgs([command]);
          const child = new Deno.Command(cmd as string, { args, stdin: "null", stderr: "piped" })
            .spawn();
          const error = await supervisor.awaitListener({ exited: child.status }).catch((e) => e);
          assert.ok(error instanceof SeccompLaunchError, String(error));
          assert.equal(error.code, code);
          assert.ok(error.message.includes(message), error.message);
          const out = await child.output();
          assert.equal(out.code, code);
          assert.equal(
            new TextDecoder().decode(out.stderr),
            "",
            "the launcher itself prints nothing",
          );
        } finally {
          await supervisor.close();
        }
      }
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: named("the seccomp launcher never runs the agent when the supervisor goes away before go"),
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sentry_seccomp_" });
    try {
      const marker = join(dir, "ran");
      const supervisor = await SeccompSupervisor.create({ self: SELF });
      let child: Deno.ChildProcess | null = null;
      try {
        const [cmd, ...args] = supervisor.launcherArgs(["/usr/bin/touch", marker]);
        child = new Deno.Command(cmd as string, { args, stdin: "null", stderr: "piped" }).spawn();
        await supervisor.awaitListener({ exited: child.status });
      } finally {
        await supervisor.close();
      }
      const out = await withTimeout(child.output(), TEST_TIMEOUT_MS);
      assert.equal(out.code, 1);
      assert.match(new TextDecoder().decode(out.stderr), /closed the control socket before go/);
      assert.equal(await Deno.stat(marker).then(() => true, () => false), false);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: named("the seccomp sensor hands over the records of an agent that went quiet within 0.5 s"),
  ignore,
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sentry_seccomp_" });
    try {
      const file = join(dir, "quiet");
      await Deno.writeTextFile(file, "x");
      let seenAt = 0;
      let openedAt = 0;
      await withTimeout(
        runUnderSeccomp([
          PYTHON,
          "-c",
          `import time; open(${JSON.stringify(file)}).close(); time.sleep(1.5)`,
        ], {
          onEvent: (event) => {
            if (event.target === file) {
              seenAt = Date.now();
              openedAt = Date.parse(event.ts ?? "");
            }
          },
        }),
        TEST_TIMEOUT_MS,
      );
      assert.ok(seenAt > 0, "the open was recorded");
      assert.ok(seenAt - openedAt < 500, `the record waited ${seenAt - openedAt} ms in the worker`);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: named(
    "stopping the seccomp sensor while the agent runs fails closed: its next open gets ENOSYS",
  ),
  ignore,
  fn: async () => {
    const agent = `
import errno, sys, time
while True:
    try:
        open("/etc/hostname").close()
    except OSError as e:
        print(errno.errorcode.get(e.errno)); sys.exit(0)
    time.sleep(0.005)
`;
    let stoppedAt = 0;
    const fds = await warmFds();
    const run = await withTimeout(
      runUnderSeccomp([PYTHON, "-c", agent], {
        onEvent: (event, stop) => {
          if (event.target === "/etc/hostname" && !stop.signal.aborted) {
            stoppedAt = Date.now();
            stop.abort();
          }
        },
        // The sensor stops on the first open; the agent must then exit by itself.
        stopWhen: async (status) => {
          while (stoppedAt === 0) await new Promise((r) => setTimeout(r, 10));
          return status;
        },
      }),
      TEST_TIMEOUT_MS,
    );
    assert.equal(run.stdout.trim(), "ENOSYS");
    assert.equal(run.counters.ended, "stopped");
    assert.deepEqual(await settledFds(fds), fds, "the stopped loop closed its fds");
  },
});

Deno.test({
  name: named(
    "the seccomp tier works for an unprivileged user (uid 65534, no capabilities)",
    skipped || (Deno.uid() !== 0 ? "needs root to switch to uid 65534" : "") ||
      (hasSetpriv() ? "" : "needs setpriv"),
  ),
  ignore: ignore || Deno.uid() !== 0 || !hasSetpriv(),
  fn: async () => {
    // Sentry and the agent both run as nobody; Deno's cache is copied where nobody can read it.
    const dir = await Deno.makeTempDir({ prefix: "sentry_seccomp_nobody_" });
    try {
      const work = join(dir, "work");
      const denoDir = join(dir, "deno");
      await Deno.mkdir(work);
      await copyDenoDir(denoDir);
      await command("chown", ["-R", "65534:65534", dir]);
      await Deno.chmod(dir, 0o755);
      const out = await new Deno.Command("setpriv", {
        args: [
          "--reuid=65534",
          "--regid=65534",
          "--clear-groups",
          "--",
          Deno.execPath(),
          "run",
          "-A",
          "--no-lock",
          "--cached-only",
          "--config",
          join(ROOT, "deno.json"),
          fileURLToPath(import.meta.url),
          work,
        ],
        env: { DENO_DIR: denoDir, HOME: dir, DENO_NO_UPDATE_CHECK: "1", SECCOMP_TEST_HELPER: "1" },
        stdin: "null",
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(TEST_TIMEOUT_MS),
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.ok(out.success, `the helper failed: ${stderr}`);
      const result = JSON.parse(new TextDecoder().decode(out.stdout)) as HelperResult;
      assert.equal(result.uid, 65534);
      assert.equal(result.capEff, "0000000000000000", "the supervisor has no capability");
      assertAgentRecorded(work, result.run, result.report, result.port);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

Deno.test({
  name: named(
    "the seccomp tier attributes a process that moved into new pid and network namespaces",
    skipped || (Deno.uid() !== 0 ? "needs root for unshare" : "") ||
      (hasUnshare() ? "" : "needs unshare"),
  ),
  ignore: ignore || Deno.uid() !== 0 || !hasUnshare(),
  fn: async () => {
    const dir = await Deno.makeTempDir({ prefix: "sentry_seccomp_" });
    try {
      const file = join(dir, "in_namespace");
      const script = `import os; open(${JSON.stringify(file)}, "w").write(str(os.getpid()))`;
      const run = await withTimeout(
        runUnderSeccomp([
          "unshare",
          "--user",
          "--map-root-user",
          "--pid",
          "--net",
          "--fork",
          PYTHON,
          "-c",
          script,
        ]),
        TEST_TIMEOUT_MS,
      );
      assert.equal(run.status.code, 0, run.stderr);
      assert.equal(await Deno.readTextFile(file), "1", "python is pid 1 in its namespace");
      const event = run.events.find((e) => e.kind === "file.create" && e.target === file);
      assert.ok(event !== undefined, "the open inside the namespaces was recorded");
      // The pid is Sentry's view of it, and it is the python that runs there.
      assert.notEqual(event.pid, 1);
      assert.equal(event.exe, Deno.realPathSync(PYTHON));
      const exec = run.events.find((e) => e.kind === "proc.exec" && e.pid === event.pid);
      assert.equal(exec?.detail.path, PYTHON);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});

/** What the unprivileged helper prints. */
interface HelperResult {
  uid: number;
  capEff: string;
  run: AgentRun;
  report: AgentReport;
  port: number;
}

/**
 * What this process's fds point to, sorted: FFI-opened fds (the listener, the control socket,
 * /proc files) are invisible to Deno's resource sanitizer. Deno's own event loop fds (eventfd,
 * eventpoll), which a terminated worker's runtime releases lazily, are left out, as is the
 * directory being listed.
 */
function openFds(): string[] {
  const targets: string[] = [];
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      const target = Deno.readLinkSync(`/proc/self/fd/${entry.name}`);
      // Only what the seccomp tier opens: `deno test --parallel` runs every test file in this
      // same process, so other files' sockets and files come and go meanwhile.
      if (/seccomp|^\/proc\/\d/.test(target)) targets.push(target);
    } catch {
      // The listing's own fd, closed by now.
    }
  }
  return targets.sort();
}

/** The open fds once a terminated worker's runtime has had time to close its own. */
async function settledFds(expected: string[]): Promise<string[]> {
  let now = openFds();
  for (let i = 0; i < 50 && now.join() !== expected.join(); i++) {
    await new Promise((r) => setTimeout(r, 20));
    now = openFds();
  }
  return now;
}

/** Spawns one child first: Deno opens a SIGCHLD socket pair for good at its first child. */
async function warmFds(): Promise<string[]> {
  await new Deno.Command("true", { stdout: "null", stderr: "null" }).output();
  return openFds();
}

function hasUnshare(): boolean {
  try {
    return Deno.statSync("/usr/bin/unshare").isFile;
  } catch {
    return false;
  }
}

function hasSetpriv(): boolean {
  try {
    return Deno.statSync("/usr/bin/setpriv").isFile;
  } catch {
    return false;
  }
}

async function command(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(`${cmd} failed: ${new TextDecoder().decode(out.stderr)}`);
}

async function copyDenoDir(to: string): Promise<void> {
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "null",
  }).output();
  const from = JSON.parse(new TextDecoder().decode(info.stdout)).denoDir as string;
  await command("cp", ["-a", from, to]);
}

async function withTimeout<T>(promise: Promise<T>, ms: number): Promise<T> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    return await Promise.race([
      promise,
      new Promise<never>((_, reject) => {
        timer = setTimeout(() => reject(new Error(`Timed out after ${ms} ms`)), ms);
      }),
    ]);
  } finally {
    clearTimeout(timer);
  }
}

// The unprivileged test runs this file as a script (`deno run`, where Deno.test does nothing).
if (import.meta.main && Deno.env.get("SECCOMP_TEST_HELPER") === "1") {
  const work = Deno.args[0] ?? "";
  const { run, report, port } = await runAgent(work);
  const status = await Deno.readTextFile("/proc/self/status");
  const capEff = /^CapEff:\s*([0-9a-f]+)$/m.exec(status)?.[1] ?? "";
  const result: HelperResult = { uid: Deno.uid() ?? -1, capEff, run, report, port };
  // Uint8Array and bigint fields do not survive JSON; none of the asserted ones are such.
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(result)));
}
