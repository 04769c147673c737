/**
 * End-to-end tests of descendants that leave the agent's tree by double fork or `setsid`: they
 * come back to Sentry as a subreaper, their actions are recorded under their own pid, and a
 * pause stops them with the rest of the tree.
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

/** Python that waits for its parent to exit, writes its pid and ppid, then reads the key for 1 s. */
function escapee(sb: Sandbox): string {
  return `
import os, time
time.sleep(0.5)
${pyWrite(sb.path("escapee"), 'f"{os.getpid()} {os.getppid()} {os.getsid(0)}"')}
f = open(${JSON.stringify(sb.sshKey)}); time.sleep(1.0); f.close()
time.sleep(3)
`;
}

/** Starts `command` under Sentry and checks the escaped grandchild is recorded and paused. */
async function escapedGrandchildIsCaught(sb: Sandbox, command: string[]): Promise<void> {
  const run = sb.spawn(["run", "--", ...command]);
  const [pid, ppid, sid] = (await sb.readWhenWritten("escapee")).split(" ").map(Number);
  assert.ok(pid !== undefined && ppid !== undefined && sid !== undefined);
  // Its parent is gone: it was re-parented to Sentry, the subreaper, in a session of its own.
  assert.equal(ppid, run.pid, "re-parented to Sentry");
  assert.equal(sid, pid, "a session of its own");
  const session = await waitFor(async () => (await sb.sessions())[0], { what: "the session" });
  const root = session.pid as number;
  const tree = [root, pid];
  await waitFor(() => tree.every(isStopped), {
    what: "the tree, escaped grandchild included, to be paused",
    detail: () => `${states(tree)}\n${run.stderr}`,
  });
  await run.waitForStderr("paused the agent");
  const read = (await sb.events()).find((e) => e.kind === "file.read" && e.target === sb.sshKey);
  assert.equal(read?.pid, pid, "the read is the grandchild's");
  assert.equal(read?.verdict, "deny");
  assert.equal(read?.response, "pause");
  const pause = (await sb.report()).responses.find((r) => r.action === "pause");
  assert.ok((pause?.detail.stopped as number[]).includes(pid), JSON.stringify(pause?.detail));

  // `sentry kill` reaches the escaped grandchild too.
  const killed = await sb.sentry(["kill", "last", "--grace", "1000"]);
  assert.equal(killed.code, 0, killed.stderr);
  await waitFor(() => tree.every(isGone), {
    what: "the tree to be gone",
    detail: () => states(tree),
  });
  await run.exit();
}

Deno.test("a grandchild that escapes by double fork and setsid is recorded and paused", async () => {
  await withSandbox(async (sb) => {
    const grandchild = await sb.write("escapee.py", escapee(sb));
    const agent = await sb.write(
      "agent.py",
      `
import os, sys, time
pid = os.fork()
if pid == 0:
    if os.fork() == 0:
        os.setsid()
        os.execv(sys.executable, [sys.executable, ${JSON.stringify(grandchild)}])
    os._exit(0)
os.waitpid(pid, 0)
time.sleep(5)
`,
    );
    await escapedGrandchildIsCaught(sb, [PYTHON, agent]);
  });
});

Deno.test("a grandchild started by `(setsid ... &)` in a shell is recorded and paused", async () => {
  await withSandbox(async (sb) => {
    const grandchild = await sb.write("escapee.py", escapee(sb));
    await escapedGrandchildIsCaught(sb, [
      "sh",
      "-c",
      `(setsid ${PYTHON} ${grandchild} &) ; sleep 5`,
    ]);
  });
});

Deno.test("a leftover that does a denied action after the root exited is stopped, then terminated", async () => {
  await withSandbox(async (sb) => {
    const after = sb.path("after");
    const grandchild = await sb.write(
      "escapee.py",
      `
import os, time
time.sleep(0.5)
${pyWrite(sb.path("escapee"), "os.getpid()")}
f = open(${JSON.stringify(sb.sshKey)}); time.sleep(0.5); f.close()
${pyWrite(after, '"after"')}
time.sleep(3)
`,
    );
    const run = await sb.sentry([
      "run",
      "--",
      "sh",
      "-c",
      `(setsid ${PYTHON} ${grandchild} &) ; sleep 0.2`,
    ]);
    assert.equal(run.code, 0, run.stderr);
    const pid = Number(await sb.readWhenWritten("escapee"));
    assert.ok(isGone(pid), "terminated with the session");
    assert.match(run.stderr, /left 1 process\(es\) running after it exited/);
    const read = (await sb.events()).find((e) => e.kind === "file.read" && e.target === sb.sshKey);
    assert.equal(read?.pid, pid);
    assert.equal(read?.response, "pause");
    // The pause held: the leftover never got past its denied read.
    let written = true;
    try {
      await Deno.stat(after);
    } catch {
      written = false;
    }
    assert.equal(written, false, "the leftover ran on after its denied read");
  });
});
