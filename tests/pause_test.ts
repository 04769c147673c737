/**
 * End-to-end tests of a pause that holds: the session's cgroup frozen (root) against a process
 * that forks every 0.3 ms and SIGCONTs the tree, signals that stop whole process groups, a
 * SIGCONT from outside held and journaled, the pause timeout, the watchdog's thaw, and controls
 * that never signal a reused pid. No cgroup is left behind by any of them.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { openJournal } from "../src/journal/mod.ts";
import { parseCgroupEvents, readStat, SessionCgroup } from "../src/platform/mod.ts";
import { parsePidsFile, type PidsFile } from "../src/session/mod.ts";
import { delay, PYTHON, pyWrite, type Sandbox, states, waitFor, withSandbox } from "./_helpers.ts";

const why = Deno.uid() === 0 ? null : "the cgroup freezer needs root";
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the cgroup pause tests: ${why}`);
}

/**
 * An agent that starts the fork-hopping helper: a process that forks a child every 0.3 ms,
 * each child SIGCONTing the whole process group and its parent before it exits at once (what
 * beat a pause by signals). The agent writes both pids, then reads the fake key (denied: pause).
 */
function hopperAgent(sb: Sandbox): Promise<string> {
  return sb.write(
    "agent.py",
    `
import os, signal, sys, time
pgid = os.getpgid(0)
hopper = os.fork()
if hopper == 0:
    while True:
        if os.fork() == 0:
            try:
                os.killpg(pgid, signal.SIGCONT)
                os.kill(os.getppid(), signal.SIGCONT)
            except OSError:
                pass
            os._exit(0)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.0003)
${pyWrite(sb.path("pids"), 'f"{os.getpid()} {hopper}"')}
time.sleep(0.4)
open(${JSON.stringify(sb.sshKey)}).read()
time.sleep(60)
`,
  );
}

/** The pids file of the sandbox's last session. */
async function pidsFile(sb: Sandbox): Promise<{ id: string; file: PidsFile }> {
  const [session] = await sb.sessions();
  assert.ok(session !== undefined);
  const text = await Deno.readTextFile(join(sb.data, "run", `${session.id}.pids`));
  return { id: session.id, file: parsePidsFile(text) };
}

function cgroupEvents(path: string) {
  return parseCgroupEvents(Deno.readTextFileSync(join(path, "cgroup.events")));
}

function procs(path: string): number[] {
  return Deno.readTextFileSync(join(path, "cgroup.procs")).split("\n").filter((l) => l !== "")
    .map(Number).sort((a, b) => a - b);
}

/** CPU ticks of processes: unchanged while nothing of theirs runs. */
function ticks(pids: readonly number[]): number[] {
  return pids.map((p) => {
    const s = readStat(p);
    return s === null ? -1 : s.utime + s.stime;
  });
}

/** The cgroups of this sandbox's sessions that still exist. */
async function leftoverCgroups(sb: Sandbox): Promise<SessionCgroup[]> {
  let ids: string[] = [];
  try {
    ids = (await sb.sessions()).map((s) => s.id);
  } catch {
    // No journal: no session.
  }
  return ids.flatMap((session) => SessionCgroup.find({ session }));
}

/** Runs a test body, then asserts no cgroup of the sandbox is left, and removes any that is. */
async function leavingNoCgroup(sb: Sandbox, body: () => Promise<void>): Promise<void> {
  let failed = false;
  try {
    await body();
  } catch (error) {
    failed = true;
    throw error;
  } finally {
    // Sentry removes its cgroup as it ends; give an exiting Sentry a moment.
    let left = await leftoverCgroups(sb);
    const deadline = Date.now() + 5000;
    while (left.length > 0 && Date.now() < deadline) {
      await delay(50);
      left = await leftoverCgroups(sb);
    }
    for (const cgroup of left) {
      cgroup.killAll();
      await cgroup.close({ retryMs: 2000 });
    }
    if (!failed) assert.deepEqual(left.map((c) => c.path), [], "a cgroup was left behind");
  }
}

Deno.test({
  name:
    "as root, a pause freezes the agent's cgroup: the fork-every-0.3-ms helper stays frozen, a SIGCONT from outside changes nothing, and `sentry resume` thaws it",
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      await leavingNoCgroup(sb, async () => {
        const run = sb.spawn(["run", "--freezer", "cgroup", "--", PYTHON, await hopperAgent(sb)]);
        const [root, hopper] = (await sb.readWhenWritten("pids")).split(" ").map(Number);
        assert.ok(root !== undefined && hopper !== undefined);
        await run.waitForStderr(/paused the agent \(\d+ processes stopped\) in its frozen cgroup/);
        const { file } = await pidsFile(sb);
        const path = file.cgroup?.path;
        assert.ok(path !== undefined, "the pids file names the cgroup");
        assert.equal(cgroupEvents(path).frozen, true);
        const frozen = procs(path);
        assert.ok(frozen.includes(root) && frozen.includes(hopper), `${frozen}`);
        // Stopped and frozen: every process shows T, none forks, none uses CPU.
        assert.ok(frozen.every((p) => readStat(p)?.state === "T"), states(frozen));
        const cpu = ticks(frozen);
        await delay(300);
        assert.deepEqual(procs(path), frozen);
        assert.deepEqual(ticks(frozen), cpu);

        // A SIGCONT from outside wakes the processes only into the freezer.
        for (const pid of frozen) Deno.kill(pid, "SIGCONT");
        await delay(300);
        assert.deepEqual(procs(path), frozen, "nothing forked");
        // Waking to take the SIGCONT into the freezer may be charged one clock tick; running
        // for 300 ms would be charged about 30.
        const after = ticks(frozen);
        assert.ok(
          after.every((t, i) => t - (cpu[i] ?? 0) <= 1),
          `nothing ran: ${cpu.join(",")} -> ${after.join(",")}`,
        );
        assert.equal(cgroupEvents(path).frozen, true);
        // The session saw it, stopped the tree again, and journaled it; its state tells the truth.
        const hold = await waitFor(
          async () =>
            (await sb.report()).responses.find((r) =>
              r.action === "pause" && r.detail.by === "hold"
            ),
          { what: "the hold in the journal", detail: () => run.stderr },
        );
        assert.equal(hold.detail.mechanism, "cgroup");
        assert.equal((await sb.sessions())[0]?.state, "paused");
        const pause = (await sb.report()).responses.find((r) => r.action === "pause");
        assert.equal(pause?.detail.mechanism, "cgroup");

        const resumed = await sb.sentry(["resume", "last"]);
        assert.equal(resumed.code, 0, resumed.stderr);
        await waitFor(() => !cgroupEvents(path).frozen && procs(path).join() !== frozen.join(), {
          what: "the helper to fork again once thawed",
          detail: () => `${procs(path)} ${run.stderr}`,
        });
        assert.equal((await sb.sessions())[0]?.state, "running");
        await run.waitForStderr("resumed from outside");

        const killed = await sb.sentry(["kill", "last", "--grace", "500"]);
        assert.equal(killed.code, 0, killed.stderr);
        assert.notEqual(await run.exit(), 0);
        assert.equal(readStat(hopper), null);
      });
    });
  },
});

Deno.test("without a cgroup (--freezer signals), a pause stops the fork-every-0.3-ms helper's whole process group, and holds against a SIGCONT from outside", async () => {
  await withSandbox(async (sb) => {
    await leavingNoCgroup(sb, async () => {
      const run = sb.spawn(["run", "--freezer", "signals", "--", PYTHON, await hopperAgent(sb)]);
      const [root, hopper] = (await sb.readWhenWritten("pids")).split(" ").map(Number);
      assert.ok(root !== undefined && hopper !== undefined);
      await run.waitForStderr(/paused the agent \(\d+ process(es)? stopped\) with signals/);
      const group = () => groupMembers(root);
      const stopped = group();
      assert.ok(stopped.includes(hopper), `${stopped}`);
      assert.ok(stopped.every((p) => readStat(p)?.state === "T"), states(stopped));
      await delay(300);
      assert.deepEqual(group(), stopped, "nothing forked");

      for (const pid of stopped) {
        try {
          Deno.kill(pid, "SIGCONT");
        } catch {
          // Exited meanwhile: the hold is still tested on the others.
        }
      }
      // The next scans find members running: the tree is stopped again and that is journaled.
      const hold = await waitFor(
        async () =>
          (await sb.report()).responses.find((r) => r.action === "pause" && r.detail.by === "hold"),
        { what: "the hold in the journal", detail: () => run.stderr },
      );
      assert.equal(hold.detail.mechanism, "signals");
      await waitFor(() => group().every((p) => readStat(p)?.state === "T"), {
        what: "the group stopped again",
        detail: () => states(group()),
      });
      assert.equal((await sb.sessions())[0]?.state, "paused");
      const killed = await sb.sentry(["kill", "last", "--grace", "500"]);
      assert.equal(killed.code, 0, killed.stderr);
      await run.exit();
    });
  });
});

/** The live, non-zombie processes of a process group, sorted. */
function groupMembers(pgrp: number): number[] {
  const out: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const stat = readStat(Number(entry.name));
    if (stat !== null && stat.pgrp === pgrp && stat.state !== "Z") out.push(stat.pid);
  }
  return out.sort((a, b) => a - b);
}

/** An agent that reads the fake key at once (a pause), then would sleep a long time. */
function pausedAgent(sb: Sandbox): Promise<string> {
  return sb.write(
    "agent.py",
    `
import time
open(${JSON.stringify(sb.sshKey)}).read()
time.sleep(1)
`,
  );
}

Deno.test("--pause-timeout 500ms --on-pause-timeout kill: an unattended paused agent is killed, and the journal says why", async () => {
  await withSandbox(async (sb) => {
    await leavingNoCgroup(sb, async () => {
      const run = sb.spawn([
        "run",
        "--pause-timeout",
        "500ms",
        "--on-pause-timeout",
        "kill",
        "--kill-grace",
        "500",
        "--",
        PYTHON,
        await pausedAgent(sb),
      ]);
      await run.waitForStderr(/paused the agent .* \(or it is killed in 500 ms\)/);
      assert.notEqual(await run.exit(), 0, run.stderr);
      assert.match(run.stderr, /stayed paused for 500 ms with nobody resuming it: killing it/);
      const [session] = await sb.sessions();
      assert.equal(session?.state, "killed");
      const responses = (await sb.report()).responses;
      const pause = responses.find((r) => r.action === "pause");
      const kill = responses.find((r) => r.action === "kill");
      assert.ok(pause !== undefined && kill !== undefined, JSON.stringify(responses));
      assert.equal(kill.detail.by, "pause timeout");
      assert.equal(kill.detail.timeoutMs, 500);
      assert.ok(Date.parse(kill.ts) - Date.parse(pause.ts) >= 490, `${pause.ts} -> ${kill.ts}`);
    });
  });
});

Deno.test("a policy's pause.timeout with on_timeout: resume resumes an unattended agent, journaled", async () => {
  await withSandbox(async (sb) => {
    await leavingNoCgroup(sb, async () => {
      const policy = await sb.write(
        "policy.yaml",
        "extends: coding-agent\npause:\n  timeout: 400ms\n  on_timeout: resume\n",
      );
      const run = sb.spawn(["run", "--policy", policy, "--", PYTHON, await pausedAgent(sb)]);
      assert.equal(await run.exit(), 0, run.stderr);
      const resume = (await sb.report()).responses.find((r) => r.action === "resume");
      assert.equal(resume?.detail.by, "pause timeout", run.stderr);
      assert.equal((await sb.sessions())[0]?.state, "ended");
    });
  });
});

Deno.test({
  name:
    "when Sentry is SIGKILLed while the tree is frozen, the watchdog thaws the cgroup, removes it, and `sentry kill` still finds the tree by its pids file",
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      await leavingNoCgroup(sb, async () => {
        const run = sb.spawn(["run", "--freezer", "cgroup", "--", PYTHON, await hopperAgent(sb)]);
        const [root, hopper] = (await sb.readWhenWritten("pids")).split(" ").map(Number);
        assert.ok(root !== undefined && hopper !== undefined);
        await run.waitForStderr("in its frozen cgroup");
        const { id, file } = await pidsFile(sb);
        const path = file.cgroup?.path as string;
        run.kill("SIGKILL");
        await run.exit();
        await waitFor(() => {
          try {
            Deno.statSync(path);
            return false;
          } catch {
            return true;
          }
        }, { what: "the watchdog to remove the cgroup", timeoutMs: 5000 });
        // Thawed and resumed: the helper forks again, outside any frozen cgroup.
        const cpu = ticks([hopper]);
        await waitFor(() => ticks([hopper])[0] !== cpu[0] && readStat(hopper)?.state !== "T", {
          what: "the helper to run again",
          detail: () => states([root, hopper]),
        });
        const resume = await waitFor(
          async () => (await sb.report()).responses.find((r) => r.action === "resume"),
          { what: "the watchdog's resume in the journal" },
        );
        assert.equal(resume.detail.by, "watchdog");
        assert.equal(resume.detail.cgroupRemoved, true);
        assert.equal((await sb.sessions())[0]?.state, "crashed");
        // The pids file stays as the identity record: the crashed session's tree can be killed.
        const killed = await sb.sentry(["kill", id, "--grace", "500"]);
        assert.equal(killed.code, 0, killed.stderr);
        await waitFor(() => readStat(root) === null && readStat(hopper) === null, {
          what: "the tree to be gone",
          detail: () => states([root, hopper]),
        });
      });
    });
  },
});

Deno.test({
  name:
    "`sentry attach` as root moves the running tree into the session's cgroup, freezes it on a denied read, and on detach puts it back where it was, running",
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      await leavingNoCgroup(sb, async () => {
        const go = sb.path("go");
        const agent = await sb.write(
          "agent.py",
          `
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
${pyWrite(sb.path("child.pid"), "child.pid")}
while not os.path.exists(${JSON.stringify(go)}):
    time.sleep(0.02)
open(${JSON.stringify(sb.sshKey)}).read()
time.sleep(0.3)
${pyWrite(sb.path("after"), '"read"')}
while True:
    time.sleep(0.05)
`,
        );
        const root = sb.spawnRaw(PYTHON, [agent]).pid;
        const child = Number(await sb.readWhenWritten("child.pid"));
        const where = (pid: number) => Deno.readTextFileSync(`/proc/${pid}/cgroup`);
        const before = [where(root), where(child)];
        const attach = sb.spawn([
          "attach",
          String(root),
          "--freezer",
          "cgroup",
          "--workspace",
          sb.workspace,
        ]);
        await attach.waitForStderr(`attached to pid ${root}`);
        const { file } = await pidsFile(sb);
        const path = file.cgroup?.path as string;
        assert.deepEqual(procs(path), [root, child].sort((a, b) => a - b));
        await Deno.writeTextFile(go, "");
        await attach.waitForStderr("in its frozen cgroup");
        assert.equal(cgroupEvents(path).frozen, true);

        attach.kill("SIGINT");
        assert.equal(await attach.exit(), 0, attach.stderr);
        assert.deepEqual([where(root), where(child)], before, "back where they were");
        // Running on: it gets past the read it was frozen at.
        assert.equal(await sb.readWhenWritten("after"), "read");
        assert.ok(readStat(child)?.state !== "T", states([root, child]));
        assert.equal((await sb.sessions())[0]?.state, "detached");
      });
    });
  },
});

Deno.test("`sentry kill` and `sentry resume` of an ended session whose pid was reused touch nothing", async () => {
  await withSandbox(async (sb) => {
    await leavingNoCgroup(sb, () => reusedPidIsNotTouched(sb));
  });
});

/** Ends a session, gives its pid to an unrelated process, and controls it: nothing happens. */
async function reusedPidIsNotTouched(sb: Sandbox): Promise<void> {
  const done = await sb.sentry(["run", "--", "sh", "-c", "exit 0"]);
  assert.equal(done.code, 0, done.stderr);
  const [session] = await sb.sessions();
  assert.ok(session !== undefined);
  // An unrelated process now has the session's pid: journal and pids file say so, with the
  // start time the session's process had, which is not this one's.
  const other = new Deno.Command("sleep", { args: ["30"] }).spawn();
  try {
    const start = readStat(other.pid)?.starttime ?? 0;
    const journal = openJournal(join(sb.data, "journal.db"));
    try {
      journal.updateSession(session.id, { pid: other.pid });
    } finally {
      journal.close();
    }
    await Deno.writeTextFile(
      join(sb.data, "run", `${session.id}.pids`),
      `${other.pid} ${start - 7}\n`,
    );
    const killed = await sb.sentry(["kill", session.id, "--grace", "100"]);
    assert.equal(killed.code, 1);
    assert.match(killed.stderr, /no live process to kill .* nothing was signalled/);
    const resumed = await sb.sentry(["resume", session.id]);
    assert.equal(resumed.code, 1);
    await delay(200);
    assert.equal(readStat(other.pid)?.state, "S", "the unrelated process was not touched");
    const report = await sb.report(session.id);
    assert.deepEqual(report.responses.filter((r) => r.action !== "alert"), []);
    assert.equal((await sb.sessions())[0]?.state, "ended");
  } finally {
    other.kill("SIGKILL");
    await other.status;
  }
}
