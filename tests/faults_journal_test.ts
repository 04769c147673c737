/**
 * The journal under faults (issue 12): a journal whose disk fills mid-run (a small tmpfs as
 * SENTRY_HOME) never kills Sentry. Sentry says so on stderr, applies the policy's
 * `on_journal_error`, keeps the agent's exit code, and what it journaled before stays readable.
 * @module
 */
import assert from "node:assert/strict";
import { PYTHON, withSandbox } from "./_helpers.ts";

const why = Deno.build.os !== "linux"
  ? "needs Linux"
  : Deno.uid() !== 0
  ? "needs root to mount a small tmpfs"
  : null;
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the journal fault tests: ${why}`);
}

async function sh(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) {
    throw new Error(`${cmd} ${args.join(" ")}: ${new TextDecoder().decode(out.stderr)}`);
  }
}

/** An agent that makes thousands of distinct file events, then exits 7. */
const AGENT = `
import os, sys
ws = sys.argv[1]
for i in range(6000):
    with open(os.path.join(ws, f"f{i}-" + "x" * 180), "w") as f:
        f.write("x")
sys.exit(7)
`;

for (const choice of ["continue", "pause"] as const) {
  Deno.test({
    name:
      `a journal whose disk fills mid-run never kills Sentry (on_journal_error: ${choice}): it says so, keeps the agent's exit code, and the journal stays readable`,
    ignore: why !== null,
    async fn() {
      await withSandbox(async (sb) => {
        await Deno.mkdir(sb.data, { recursive: true });
        await sh("mount", ["-t", "tmpfs", "-o", "size=640k", "sentry-journal", sb.data]);
        try {
          const agent = await sb.write("agent.py", AGENT);
          const policy = await sb.write(
            "policy.yaml",
            `name: full\nextends: default\nmode: monitor\non_journal_error: ${choice}\n`,
          );
          const run = await sb.sentry([
            "run",
            "--sensor",
            "ebpf",
            "--no-api",
            "--no-rollback",
            "--policy",
            policy,
            "--pause-timeout",
            "2s",
            "--on-pause-timeout",
            "resume",
            "--",
            PYTHON,
            agent,
            sb.workspace,
          ], { timeoutMs: 90_000 });
          assert.equal(run.code, 7, `the agent's exit code: ${run.stderr.slice(-2000)}`);
          assert.match(run.stderr, /the journal cannot be written/);
          assert.match(
            run.stderr,
            choice === "pause"
              ? /pausing the agent \(on_journal_error: pause\)/
              : /the agent goes on/,
          );
          assert.doesNotMatch(run.stderr, /Uncaught|^error: |^\s+at /m, "no crash, no stack trace");
          // What was journaled before the disk filled is still readable.
          const list = await sb.sentry(["sessions", "--json"]);
          assert.equal(list.code, 0, list.stderr);
          assert.ok(list.stdout.includes('"id"'), list.stdout.slice(0, 500));
          const events = await sb.sentry(["events", "--limit", "5"]);
          assert.equal(events.code, 0, events.stderr);
          // The end tells the truth: once the disk has room again, the session shows the clean
          // end Sentry recorded (not running, not crashed), with the agent's exit code.
          await sh("mount", ["-o", "remount,size=8m", sb.data]);
          const sessions = await sb.sessions();
          const session = sessions[0];
          assert.equal(session?.state, "ended", JSON.stringify(session));
          assert.equal(session?.exitCode, 7);
          if (/the session's end could not be journaled/.test(run.stderr)) {
            assert.match(run.stderr, /the end is kept in /);
            assert.match(session?.note ?? "", /journaled late/);
          }
          const left = [...Deno.readDirSync(`${sb.data}/run`)].filter((e) =>
            e.name.endsWith(".end")
          );
          assert.deepEqual(left, [], "the end record is removed once journaled");
        } finally {
          await sh("umount", ["-l", sb.data]);
        }
      });
    },
  });
}
