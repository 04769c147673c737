/**
 * End-to-end tests of bad input: each mistake gets its exit code and one clear line on stderr
 * (and at most a hint), never a stack trace, and starts no agent.
 * @module
 */
import assert from "node:assert/strict";
import { hasStackTrace, type Output, withSandbox } from "./_helpers.ts";

/** Asserts the shape of an error: one `sentry:` line, then at most one `hint:` line. */
function assertOneLineError(out: Output, code: number, message: RegExp): void {
  assert.equal(out.code, code, out.stderr);
  assert.equal(out.stdout, "");
  assert.ok(!hasStackTrace(out.stderr), out.stderr);
  const lines = out.stderr.trimEnd().split("\n");
  assert.match(lines[0] ?? "", /^sentry: /, out.stderr);
  assert.match(lines[0] ?? "", message);
  assert.ok(lines.length <= 2, out.stderr);
  if (lines.length === 2) assert.match(lines[1] ?? "", /^hint: /, out.stderr);
}

Deno.test("`sentry run` of a command that does not exist exits 127 with one line", async () => {
  await withSandbox(async (sb) => {
    const out = await sb.sentry(["run", "--", "no-such-command-e2e"]);
    assertOneLineError(out, 127, /Command not found: "no-such-command-e2e"/);
    assert.equal(out.stderr.trimEnd().split("\n").length, 1);
  });
});

Deno.test("`sentry run` of a file that is not executable exits 126 with one line", async () => {
  await withSandbox(async (sb) => {
    await sb.write(`${sb.workspace}/agent.sh`, "#!/bin/sh\necho hi\n", 0o644);
    const out = await sb.sentry(["run", "--", "./agent.sh"]);
    assertOneLineError(
      out,
      126,
      /Cannot run "\.\/agent\.sh": ".*agent\.sh" is not an executable file/,
    );
    assert.equal(out.stderr.trimEnd().split("\n").length, 1);
  });
});

Deno.test("`sentry attach` to a pid that does not exist exits 2 and says so", async () => {
  await withSandbox(async (sb) => {
    // Above the kernel's pid limit, so no process can have it.
    const pidMax = Number((await Deno.readTextFile("/proc/sys/kernel/pid_max")).trim());
    const out = await sb.sentry(["attach", String(pidMax + 1)]);
    assertOneLineError(out, 2, new RegExp(`Cannot attach to pid ${pidMax + 1}: no such process`));
    const bad = await sb.sentry(["attach", "abc"]);
    assertOneLineError(bad, 2, /Invalid pid "abc"/);
  });
});

Deno.test("`sentry run` with an unknown policy, a missing workspace or a bad interval exits 2", async () => {
  await withSandbox(async (sb) => {
    const policy = await sb.sentry(["run", "--policy", "no-such-policy", "--", "true"]);
    assertOneLineError(policy, 2, /Unknown policy template "no-such-policy"/);
    for (const template of ["default", "coding-agent", "strict"]) {
      assert.ok(policy.stderr.includes(template), `lists ${template}: ${policy.stderr}`);
    }
    const missing = `${sb.root}/no-such-dir`;
    const workspace = await sb.sentry(["run", "--workspace", missing, "--", "true"]);
    assertOneLineError(workspace, 2, new RegExp(`Workspace "${missing}" does not exist`));
    const interval = await sb.sentry(["run", "--interval", "abc", "--", "true"]);
    assertOneLineError(interval, 2, /Invalid --interval "abc"/);
    // None of them started a session.
    const sessions = await sb.sentry(["sessions", "--json"]);
    assert.equal(sessions.stdout, "");
  });
});

Deno.test("`sentry report` of an unknown session exits 2", async () => {
  await withSandbox(async (sb) => {
    const run = await sb.sentry(["run", "--", "true"]);
    assert.equal(run.code, 0, run.stderr);
    const out = await sb.sentry(["report", "nosuchsession"]);
    assertOneLineError(out, 2, /No session matches "nosuchsession"/);
  });
});
