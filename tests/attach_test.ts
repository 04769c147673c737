/**
 * End-to-end test of `sentry attach`: watching a process Sentry did not start, pausing it, and
 * detaching on SIGINT without leaving it stopped.
 * @module
 */
import assert from "node:assert/strict";
import { isGone, isStopped, PYTHON, pyWrite, states, waitFor, withSandbox } from "./_helpers.ts";

Deno.test("`sentry attach` pauses a running tree on a denied read, and SIGINT detaches leaving it resumed", async () => {
  await withSandbox(async (sb) => {
    const go = sb.path("go");
    const agent = await sb.write(
      "agent.py",
      `
import os, subprocess, sys, time
child = subprocess.Popen([sys.executable, "-c", "import time; time.sleep(60)"])
${pyWrite(sb.path("child.pid"), "child.pid")}
while not os.path.exists(${JSON.stringify(go)}):
    time.sleep(0.05)
f = open(${JSON.stringify(sb.sshKey)}); time.sleep(1.0); f.close()
${pyWrite(sb.path("after"), '"read"')}
while True:
    time.sleep(0.1)
`,
    );
    const agentProc = sb.spawnRaw(PYTHON, [agent]);
    const root = agentProc.pid;
    const child = Number(await sb.readWhenWritten("child.pid"));
    const pids = [root, child];

    const attach = sb.spawn(["attach", String(root), "--workspace", sb.workspace]);
    await attach.waitForStderr(`attached to pid ${root}`);
    await Deno.writeTextFile(go, "");
    await waitFor(() => pids.every(isStopped), {
      what: "the attached tree to be paused",
      detail: () => `${states(pids)}\n${attach.stderr}`,
    });
    assert.equal((await sb.sessions())[0]?.state, "paused");

    attach.kill("SIGINT");
    assert.equal(await attach.exit(), 0, attach.stderr);
    assert.match(attach.stderr, /detached from pid/);
    // Left running and resumed: not stopped, not gone, and making progress.
    assert.ok(pids.every((p) => !isStopped(p) && !isGone(p)), states(pids));
    assert.equal(await sb.readWhenWritten("after"), "read");
    assert.ok(!isGone(root));

    const [session] = await sb.sessions();
    assert.equal(session?.kind, "attach");
    assert.equal(session?.pid, root);
    assert.equal(session?.state, "detached");
    const events = await sb.events();
    const rootExec = events.find((e) => e.kind === "proc.exec" && e.pid === root);
    assert.equal(rootExec?.detail.existing, true);
    const read = events.find((e) => e.kind === "file.read" && e.target === sb.sshKey);
    assert.equal(read?.pid, root);
    assert.equal(read?.response, "pause");
    const actions = (await sb.report()).responses.map((r) => `${r.action}:${r.outcome}`);
    assert.deepEqual(actions, ["pause:ok", "resume:ok", "detach:ok"]);
  });
});
