/**
 * End-to-end tests of Sentry's responses on a real process tree: pause and resume, kill, and
 * the rollback and block responses that fall back to a pause. States are checked in /proc.
 * @module
 */
import assert from "node:assert/strict";
import {
  isGone,
  isStopped,
  PYTHON,
  pyWrite,
  type Sandbox,
  states,
  waitFor,
  withSandbox,
} from "./_helpers.ts";

/**
 * Writes an agent that starts a child, writes both pids, reads `secret` for 1 s, then waits
 * for the child and exits with `code`.
 */
function treeAgent(sb: Sandbox, secret: string, options: { code: number; childSeconds: number }) {
  return sb.write(
    "agent.py",
    `
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(${options.childSeconds})"])
${pyWrite(sb.path("pids"), 'f"{os.getpid()} {child.pid}"')}
time.sleep(0.4)
f = open(${JSON.stringify(secret)}); time.sleep(1.0); f.close()
child.wait()
sys.exit(${options.code})
`,
  );
}

async function treePids(sb: Sandbox): Promise<number[]> {
  return (await sb.readWhenWritten("pids")).split(" ").map(Number);
}

function waitAllStopped(sb: Sandbox, pids: number[]): Promise<true> {
  return waitFor(() => pids.every(isStopped), {
    what: "the whole tree to be stopped",
    detail: () => `${states(pids)}\n${sb.stderr()}`,
  });
}

function waitNoneStopped(sb: Sandbox, pids: number[]): Promise<true> {
  return waitFor(() => pids.every((p) => !isStopped(p)), {
    what: "no process of the tree to be stopped",
    detail: () => `${states(pids)}\n${sb.stderr()}`,
  });
}

Deno.test("a denied read pauses the whole tree until `sentry resume`, and the report shows it", async () => {
  await withSandbox(async (sb) => {
    const agent = await treeAgent(sb, sb.sshKey, { code: 5, childSeconds: 2.5 });
    const run = sb.spawn(["run", "--", PYTHON, agent]);
    const pids = await treePids(sb);
    await waitAllStopped(sb, pids);
    await run.waitForStderr(/paused the agent \(2 processes stopped\)/);
    // The pause holds.
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(pids.every(isStopped), states(pids));
    assert.equal(run.code, null, "Sentry waits while the agent is paused");
    assert.equal((await sb.sessions())[0]?.state, "paused");

    const resumed = await sb.sentry(["resume", "last"]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.match(resumed.stdout, /resumed 2 process\(es\)/);
    await waitNoneStopped(sb, pids);
    assert.equal(await run.exit(), 5, run.stderr);

    const [session] = await sb.sessions();
    assert.equal(session?.state, "ended");
    assert.equal(session?.exitCode, 5);
    const reads = (await sb.events()).filter((e) =>
      e.kind === "file.read" && e.target === sb.sshKey
    );
    assert.equal(reads.length, 1);
    assert.equal(reads[0]?.pid, pids[0]);
    assert.equal(reads[0]?.verdict, "deny");
    assert.equal(reads[0]?.rule, "files.read.deny");
    assert.equal(reads[0]?.response, "pause");

    const report = await sb.report();
    const pause = report.responses.find((r) => r.action === "pause");
    assert.equal(pause?.outcome, "ok");
    assert.deepEqual([...(pause?.detail.stopped as number[])].sort(), [...pids].sort());
    assert.ok(
      report.responses.some((r) => r.action === "resume" && r.detail.by === "sentry resume"),
    );

    const human = await sb.sentry(["report", "last"]);
    assert.equal(human.code, 0, human.stderr);
    assert.match(human.stdout, /Violations \(1\)/);
    assert.ok(human.stdout.includes(sb.sshKey), human.stdout);
    assert.match(human.stdout, /files\.read\.deny/);
    assert.match(human.stdout, /What the sensors could not see/);
  });
});

Deno.test("a rule with `response: kill` terminates the whole tree and marks the session killed", async () => {
  await withSandbox(async (sb) => {
    const secret = await sb.write(`${sb.workspace}/secret.txt`, "s3cret\n");
    const policy = await sb.write(
      "policy.yaml",
      `
name: e2e-kill
mode: kill
rules:
  - id: detect_secret_read
    description: Detect reads of the test's secret file
    match: { kind: file.read, target: "**/secret.txt" }
    risk: 50
    response: kill
`,
    );
    const agent = await treeAgent(sb, secret, { code: 0, childSeconds: 30 });
    const run = sb.spawn(["run", "--policy", policy, "--", PYTHON, agent]);
    const pids = await treePids(sb);
    await waitFor(() => pids.every(isGone), {
      what: "the whole tree to be gone",
      detail: () => `${states(pids)}\n${run.stderr}`,
    });
    // The root died of Sentry's SIGTERM.
    assert.equal(await run.exit(), 143, run.stderr);
    assert.match(run.stderr, /killed the agent \(2 processes/);

    const [session] = await sb.sessions();
    assert.equal(session?.state, "killed");
    const read = (await sb.events()).find((e) => e.kind === "file.read" && e.target === secret);
    assert.equal(read?.rule, "detect_secret_read");
    assert.equal(read?.response, "kill");
    const kill = (await sb.report()).responses.find((r) => r.action === "kill");
    assert.equal(kill?.outcome, "ok");
  });
});

/** Runs an agent whose secret read gets `response`, which must fall back to a pause. */
async function fallsBackToPause(
  response: "rollback" | "block",
  warning: RegExp,
  flags: string[] = [],
): Promise<void> {
  await withSandbox(async (sb) => {
    const secret = await sb.write(`${sb.workspace}/secret.txt`, "s3cret\n");
    const policy = await sb.write(
      "policy.yaml",
      `
name: e2e-${response}
mode: ${response === "rollback" ? "rollback" : "pause"}
rules:
  - id: detect_secret_read
    description: Detect reads of the test's secret file
    match: { kind: file.read, target: "**/secret.txt" }
    risk: 50
    response: ${response}
`,
    );
    const agent = await treeAgent(sb, secret, { code: 0, childSeconds: 2 });
    const run = sb.spawn(["run", "--policy", policy, ...flags, "--", PYTHON, agent]);
    const pids = await treePids(sb);
    await waitAllStopped(sb, pids);
    await run.waitForStderr(/paused the agent \(2 processes stopped\)/);
    if (!warning.test(run.stderr)) {
      // Seen once in CI, not reproduced under load here: name what paused the agent instead.
      const taken = (await sb.report()).responses.map((r) =>
        `${r.action}:${JSON.stringify(r.detail)}`
      );
      assert.fail(`no fallback warning; responses: ${taken.join(" | ")}; stderr: ${run.stderr}`);
    }

    const resumed = await sb.sentry(["resume", "last"]);
    assert.equal(resumed.code, 0, resumed.stderr);
    await waitNoneStopped(sb, pids);
    assert.equal(await run.exit(), 0, run.stderr);

    const read = (await sb.events()).find((e) => e.kind === "file.read" && e.target === secret);
    assert.equal(read?.response, response);
    const taken = (await sb.report()).responses.find((r) => r.action === response);
    assert.equal(taken?.outcome, "ok");
    assert.equal(taken?.detail.fallback, "pause");
    assert.equal((taken?.detail.stopped as number[]).length, 2);
  });
}

Deno.test("a `rollback` response pauses the agent, restores what it changed, and leaves it paused", async () => {
  await withSandbox(async (sb) => {
    const secret = await sb.write(`${sb.workspace}/secret.txt`, "s3cret\n");
    const notes = await sb.write(`${sb.workspace}/notes.txt`, "original notes\n", 0o640);
    const doomed = await sb.write(`${sb.workspace}/doomed.txt`, "keep me\n");
    const policy = await sb.write(
      "policy.yaml",
      `
name: e2e-rollback
mode: rollback
rules:
  - id: detect_secret_read
    description: Detect reads of the test's secret file
    match: { kind: file.read, target: "**/secret.txt" }
    risk: 50
    response: rollback
`,
    );
    const agent = await sb.write(
      "agent.py",
      [
        "import os, time",
        `open(${JSON.stringify(notes)}, "w").write("DAMAGED")`,
        `os.chmod(${JSON.stringify(notes)}, 0o777)`,
        `os.remove(${JSON.stringify(doomed)})`,
        `open(${JSON.stringify(sb.workspace + "/created.txt")}, "w").write("new")`,
        "time.sleep(0.5)",
        `f = open(${JSON.stringify(secret)}); time.sleep(1.5); f.close()`,
        `print(open(${JSON.stringify(notes)}).read(), flush=True)`,
      ].join("\n"),
    );
    const run = sb.spawn(["run", "--policy", policy, "--", PYTHON, agent]);
    await run.waitForStderr(/rolled back .* the agent stays paused/);
    // Reverse and pause: the files are back while the agent is still stopped.
    assert.equal(await Deno.readTextFile(notes), "original notes\n");
    assert.equal((await Deno.stat(notes)).mode! & 0o777, 0o640);
    assert.equal(await Deno.readTextFile(doomed), "keep me\n");
    await assert.rejects(() => Deno.stat(`${sb.workspace}/created.txt`), Deno.errors.NotFound);
    const [session] = await sb.sessions();
    assert.equal(session?.state, "paused");

    const resumed = await sb.sentry(["resume", "last"]);
    assert.equal(resumed.code, 0, resumed.stderr);
    assert.equal(await run.exit(), 0, run.stderr);
    const report = await sb.report();
    const rows = report.responses.filter((r) => r.action === "rollback");
    assert.ok(
      rows.some((r) => r.detail.path === notes && r.outcome === "ok"),
      JSON.stringify(rows),
    );
    assert.ok(rows.some((r) => r.detail.path === doomed && r.detail.op === "recreate"));
    assert.ok(rows.every((r) => r.outcome === "ok"));

    // The rollback can itself be undone.
    const undone = await sb.sentry(["rollback", "--undo", "last"]);
    assert.equal(undone.code, 0, undone.stderr);
    assert.equal(await Deno.readTextFile(`${sb.workspace}/created.txt`), "new");
  });
});

Deno.test("with --no-rollback, a `rollback` response pauses the tree and says no file was restored", async () => {
  await fallsBackToPause(
    "rollback",
    /rollback is off for this session.*pausing the agent instead/,
    ["--no-rollback"],
  );
});

Deno.test("a `block` response pauses the tree and says it cannot block", async () => {
  await fallsBackToPause(
    "block",
    /cannot block this file\.read before it happens: pausing the agent instead/,
  );
});
