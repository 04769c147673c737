/**
 * End-to-end tests of the `run` lifecycle: the agent's exit code, signals forwarded to the
 * agent, and the watchdog that resumes the agent when Sentry itself is killed.
 * @module
 */
import assert from "node:assert/strict";
import {
  isStopped,
  PYTHON,
  pyWrite,
  type Sandbox,
  states,
  waitFor,
  withSandbox,
} from "./_helpers.ts";

Deno.test("`sentry run` exits with the agent's exit code and records it", async () => {
  await withSandbox(async (sb) => {
    const run = await sb.sentry(["run", "--", "sh", "-c", "exit 7"]);
    assert.equal(run.code, 7, run.stderr);
    const [session] = await sb.sessions();
    assert.equal(session?.exitCode, 7);
    const exit = (await sb.events()).find((e) => e.kind === "proc.exit" && e.pid === session?.pid);
    assert.deepEqual(exit?.detail, { code: 7, signal: null });
  });
});

Deno.test("`sentry run` keeps the exit code of an agent that exits just before a fast scan", async () => {
  await withSandbox(async (sb) => {
    // At a 5 ms interval a scan often sees the exited root as a zombie before Deno reaps it;
    // the scan must leave it to Deno, whose status gives the exit code. Runs overlap, four at a
    // time, so that the machine is busy and the race is likely.
    for (let round = 0; round < 3; round++) {
      const runs = await Promise.all(
        [0, 1, 2, 3].map(() =>
          sb.sentry(["run", "--interval", "5", "--", "sh", "-c", "sleep 0.05; exit 7"])
        ),
      );
      for (const run of runs) assert.equal(run.code, 7, run.stderr);
    }
    const exits = (await sb.sessions()).map((s) => s.exitCode);
    assert.deepEqual(exits, Array(12).fill(7));
  });
});

/** An agent that exits 42 on SIGTERM and 43 on SIGINT, and says when it is ready. */
function trappingAgent(sb: Sandbox): Promise<string> {
  return sb.write(
    "agent.py",
    `
import signal, sys, time
signal.signal(signal.SIGTERM, lambda *a: sys.exit(42))
signal.signal(signal.SIGINT, lambda *a: sys.exit(43))
print("ready", flush=True)
time.sleep(30)
`,
  );
}

for (const [signal, code] of [["SIGTERM", 42], ["SIGINT", 43]] as const) {
  Deno.test(`${signal} to \`sentry run\` reaches the agent, and Sentry exits with its code`, async () => {
    await withSandbox(async (sb) => {
      const run = sb.spawn(["run", "--", PYTHON, await trappingAgent(sb)]);
      await run.waitForStdout("ready");
      run.kill(signal);
      assert.equal(await run.exit(), code, run.stderr);
      const [session] = await sb.sessions();
      assert.equal(session?.state, "ended");
      assert.equal(session?.exitCode, code);
    });
  });
}

Deno.test("when Sentry is killed with SIGKILL, its watchdog resumes the paused tree and marks the session crashed", async () => {
  await withSandbox(async (sb) => {
    const agent = await sb.write(
      "agent.py",
      `
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
${pyWrite(sb.path("pids"), 'f"{os.getpid()} {child.pid}"')}
time.sleep(0.4)
f = open(${JSON.stringify(sb.sshKey)}); time.sleep(1.0); f.close()
child.wait()
`,
    );
    const run = sb.spawn(["run", "--", PYTHON, agent]);
    const pids = (await sb.readWhenWritten("pids")).split(" ").map(Number);
    await waitFor(() => pids.every(isStopped), {
      what: "the tree to be paused",
      detail: () => `${states(pids)}\n${run.stderr}`,
    });
    await run.waitForStderr("paused the agent");

    run.kill("SIGKILL");
    assert.equal(await run.exit(), 137);
    const killedAt = Date.now();
    await waitFor(() => pids.every((p) => !isStopped(p)), {
      what: "the watchdog to resume the tree",
      timeoutMs: 3000,
      detail: () => states(pids),
    });
    assert.ok(Date.now() - killedAt <= 3000);
    // The agent runs on, unstopped.
    assert.ok(pids.every((p) => !isStopped(p)), states(pids));

    const resume = await waitFor(
      async () => (await sb.report()).responses.find((r) => r.action === "resume"),
      {
        what: "the watchdog's resume in the journal",
      },
    );
    assert.equal(resume.detail.by, "watchdog");
    assert.deepEqual([...(resume.detail.pids as number[])].sort(), [...pids].sort());
    const [session] = await sb.sessions();
    assert.equal(session?.state, "crashed");
  });
});
