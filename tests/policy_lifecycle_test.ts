/**
 * End-to-end tests of the policy lifecycle in a live session (issue #14): shadow mode journals
 * the response a denied action would have got and takes none (the agent keeps running, under
 * every tier that can block), a live reload changes the verdicts of what follows (CLI, SIGHUP
 * and API, under run and attach), an invalid reload changes nothing, a reload that would widen a
 * kernel gate is refused, and a policy for a newer Sentry is refused.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { JOURNAL_FILE, openJournal, type PolicyReloadRecord } from "../src/journal/mod.ts";
import { parsePidsFile } from "../src/session/mod.ts";
import { VERSION } from "../src/version.ts";
import type { AgentEvent } from "../src/events/mod.ts";
import {
  delay,
  procState,
  PYTHON,
  pyWrite,
  type Running,
  type Sandbox,
  waitFor,
  withSandbox,
} from "./_helpers.ts";

const ROOT = Deno.uid() === 0;

/** The tiers whose gates could block a denied read: each must leave it alone in mode monitor. */
const SHADOW_TIERS = ROOT ? ["seccomp", "fanotify", "ebpf"] : ["seccomp"];

/** The policy reloads journaled for a session, read straight from the journal. */
function reloads(sb: Sandbox, session: string): PolicyReloadRecord[] {
  const journal = openJournal(join(sb.data, JOURNAL_FILE));
  try {
    return journal.policyReloads(session);
  } finally {
    journal.close();
  }
}

/** The last session's id and its Sentry's pid, once it is live. */
async function liveSession(sb: Sandbox): Promise<{ id: string; sentryPid: number }> {
  const [s] = await sb.sessions();
  assert.ok(s !== undefined, "no session");
  return { id: s.id, sentryPid: s.sentryPid };
}

for (const tier of SHADOW_TIERS) {
  Deno.test({
    name:
      `shadow mode (${tier} tier): a denied read of ~/.ssh is journaled with would: pause, nothing blocks or pauses it, and the agent keeps running`,
    sanitizeResources: false,
    sanitizeOps: false,
    async fn() {
      await withSandbox(async (sb) => {
        const agent = await sb.write(
          "agent.py",
          `
import os, time
data = open(${JSON.stringify(sb.sshKey)}).read()
${pyWrite(sb.path("read"), "len(data)")}
n = 0
while not os.path.exists(${JSON.stringify(sb.path("stop"))}):
    n += 1
    ${pyWrite(sb.path("ticks.tmp"), "n")}
    os.replace(${JSON.stringify(sb.path("ticks.tmp"))}, ${JSON.stringify(sb.path("ticks"))})
    time.sleep(0.02)
`,
        );
        const run = sb.spawn([
          "run",
          "--mode",
          "monitor",
          "--sensor",
          tier,
          "--no-api",
          "--",
          PYTHON,
          agent,
        ]);
        // The read went through: the agent got the whole key (no gate refused it).
        const key = await Deno.readTextFile(sb.sshKey);
        assert.equal(await sb.readWhenWritten("read"), String(key.length));
        const denied = await waitFor(async () => {
          const events = await sb.events();
          return events.find((e) => e.kind === "file.read" && e.target === sb.sshKey);
        }, { what: "the denied read to be journaled", detail: () => run.stderr });
        assert.equal(denied.verdict, "deny");
        assert.equal(denied.rule, "files.read.deny");
        assert.equal(denied.response, "none");
        assert.equal(denied.would, "pause");
        assert.equal(denied.detail.blocked, undefined, "nothing blocked it");
        // The agent runs on: its counter moves, and no process of it is stopped.
        const { id } = await liveSession(sb);
        const tree = parsePidsFile(await Deno.readTextFile(join(sb.data, "run", `${id}.pids`)))
          .processes.map((p) => p.pid);
        assert.ok(tree.length > 0, "the pids file names the agent");
        const before = Number(await sb.readWhenWritten("ticks"));
        await delay(600);
        const after = Number(await sb.readWhenWritten("ticks"));
        assert.ok(after > before + 5, `the agent kept running (${before} -> ${after})`);
        for (const pid of tree) {
          const state = procState(pid);
          assert.ok(state !== "T" && state !== "t", `pid ${pid} is not stopped (${state})`);
        }
        await sb.write("stop", "");
        assert.equal(await run.exit(), 0, run.stderr);
        assert.doesNotMatch(run.stderr, /paused the agent|resume with/);
        // The report, the events table and the journal show the would-be response, and no
        // response was taken.
        const report = await sb.report();
        assert.deepEqual(report.would, { pause: 1 });
        assert.deepEqual(report.responses.filter((r) => r.action !== "alert"), []);
        const text = await sb.ok(["report", "last"]);
        assert.match(
          text,
          /shadow mode: the policy would have answered 1 with pause; none was taken/,
        );
        assert.match(text, /files\.read\.deny -> none \(would: pause\)/);
        const table = await sb.ok(["events", "--session", "last", "--verdict", "deny"]);
        assert.match(table, /none \(would: pause\)/);
      });
    },
  });
}

/**
 * An agent that reads `target` in a fresh child process (a new pid each time, so that no read
 * is folded into an earlier one) whenever `dir/goN` appears, and says `dir/doneN` with the
 * child's pid.
 */
function stepAgent(
  sb: Sandbox,
  target: string,
  steps: number,
  dir: string = sb.root,
): Promise<string> {
  return sb.write(
    "agent.py",
    `
import os, sys, time
def read(n):
    pid = os.fork()
    if pid == 0:
        try:
            open(${JSON.stringify(target)}).read()
        except OSError:
            pass
        os._exit(0)
    os.waitpid(pid, 0)
    open(${JSON.stringify(join(dir, "done"))} + str(n), "w").write(str(pid) + "\\n")
for n in range(1, ${steps + 1}):
    while not os.path.exists(${JSON.stringify(join(dir, "go"))} + str(n)):
        time.sleep(0.02)
    read(n)
`,
  );
}

/** Lets the agent take step `n` and returns the journaled read of that step's child. */
async function step(
  sb: Sandbox,
  run: Running,
  n: number,
  target: string,
  dir: string = sb.root,
): Promise<AgentEvent> {
  await sb.write(join(dir, `go${n}`), "");
  const pid = Number(await sb.readWhenWritten(join(dir, `done${n}`)));
  return await waitFor(async () => {
    const events = await sb.events();
    return events.find((e) => e.kind === "file.read" && e.target === target && e.pid === pid);
  }, { what: `the read of step ${n} (pid ${pid}) to be journaled`, detail: () => run.stderr });
}

const ALLOW_ALL = (name: string) => `name: ${name}\nextends: default\nmode: alert\n`;
const DENY_A = (target: string) =>
  `name: deny-a\nextends: default\nmode: alert\nfiles:\n  read:\n    deny: [${
    JSON.stringify(target)
  }]\n`;

Deno.test({
  name:
    "sentry policy reload during a run: an invalid policy changes nothing (exit 2), a valid one denies the next read of the file, and the API reloads too; each change is journaled with both hashes",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withSandbox(async (sb) => {
      const target = join(sb.workspace, "a.txt");
      await Deno.writeTextFile(target, "hello\n");
      const start = await sb.write("start.yaml", ALLOW_ALL("start"));
      const deny = await sb.write("deny.yaml", DENY_A(target));
      const bad = await sb.write("bad.yaml", "name: bad\nfiles:\n  read:\n    dney: [x]\n");
      const agent = await stepAgent(sb, target, 4);
      const run = sb.spawn(["run", "-p", start, "--api-port", "0", "--", PYTHON, agent]);
      await run.waitForStderr(/watching ".*" as session/, 30_000);
      const first = await step(sb, run, 1, target);
      assert.equal(first.verdict, "allow");
      const { id } = await liveSession(sb);

      // Invalid: refused before the session is asked, with its place; nothing changes.
      const refused = await sb.sentry(["policy", "reload", "last", bad]);
      assert.equal(refused.code, 2, refused.stderr);
      assert.match(refused.stderr, /bad\.yaml:4:5: unknown key "files\.read\.dney"/);
      assert.deepEqual(reloads(sb, id), []);
      const second = await step(sb, run, 2, target);
      assert.equal(second.verdict, "allow", "the invalid reload changed nothing");

      // Valid: the next read of the file is denied.
      const applied = await sb.sentry(["policy", "reload", "last", deny, "--json"]);
      assert.equal(applied.code, 0, applied.stderr);
      const result = JSON.parse(applied.stdout);
      assert.equal(result.outcome, "applied");
      assert.equal(result.policy, deny);
      const third = await step(sb, run, 3, target);
      assert.equal(third.verdict, "deny");
      assert.equal(third.rule, "files.read.deny");
      assert.equal(third.response, "alert");

      // The API: back to the start policy (the session's own, read again: an empty body).
      const token = (await sb.sentry(["token"])).stdout.trim();
      const registry = JSON.parse(
        await Deno.readTextFile(join(sb.data, "run", `${id}.api`)),
      ) as { url: string };
      const response = await fetch(`${registry.url}/v1/sessions/${id}/policy/reload`, {
        method: "POST",
        headers: { authorization: `Bearer ${token}`, "content-type": "application/json" },
        body: "{}",
      });
      assert.equal(response.status, 200);
      const api = await response.json();
      assert.equal(api.outcome, "applied");
      assert.equal(api.by, "api");
      assert.equal(api.old_hash, result.newHash);
      const fourth = await step(sb, run, 4, target);
      assert.equal(fourth.verdict, "allow", "the API's reload applies to what follows");
      assert.equal(await run.exit(), 0, run.stderr);

      const journaled = reloads(sb, id);
      assert.deepEqual(journaled.map((r) => [r.outcome, r.detail.by]), [
        ["applied", "sentry policy reload"],
        ["applied", "api"],
      ]);
      const [toDeny, back] = journaled;
      assert.ok(toDeny !== undefined && back !== undefined);
      assert.match(toDeny.oldHash, /^[0-9a-f]{64}$/);
      assert.equal(toDeny.newHash, result.newHash);
      assert.notEqual(toDeny.oldHash, toDeny.newHash);
      assert.equal(back.oldHash, toDeny.newHash);
      assert.equal(back.newHash, toDeny.oldHash, "the start policy hashes the same read again");
      const [session] = await sb.sessions();
      assert.equal(session?.policy, "start");
      const report = await sb.ok(["report", "last"]);
      assert.match(
        report,
        /policy reload: .*deny\.yaml applied \(sha256 [0-9a-f]{12} -> [0-9a-f]{12}, by sentry policy reload\)/,
      );
    });
  },
});

Deno.test({
  name:
    "SIGHUP to sentry run reads its policy file again: an edit that denies the file applies to the next read, and an invalid edit is refused, journaled, and the policy in force stays",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withSandbox(async (sb) => {
      const target = join(sb.workspace, "a.txt");
      await Deno.writeTextFile(target, "hello\n");
      const policy = await sb.write("policy.yaml", ALLOW_ALL("edited"));
      const agent = await stepAgent(sb, target, 3);
      const run = sb.spawn(["run", "-p", policy, "--no-api", "--", PYTHON, agent]);
      await run.waitForStderr(/watching ".*" as session/, 30_000);
      assert.equal((await step(sb, run, 1, target)).verdict, "allow");
      const { id, sentryPid } = await liveSession(sb);

      await Deno.writeTextFile(policy, DENY_A(target));
      Deno.kill(sentryPid, "SIGHUP");
      const applied = await waitFor(() => reloads(sb, id)[0], {
        what: "the SIGHUP reload to be journaled",
        detail: () => run.stderr,
      });
      assert.equal(applied.outcome, "applied");
      assert.equal(applied.detail.by, "SIGHUP");
      assert.equal(applied.policy, policy);
      assert.equal((await step(sb, run, 2, target)).verdict, "deny");

      await Deno.writeTextFile(policy, "name: broken\nmode: sometimes\n");
      Deno.kill(sentryPid, "SIGHUP");
      const refused = await waitFor(() => reloads(sb, id)[1], {
        what: "the invalid SIGHUP reload to be journaled",
        detail: () => run.stderr,
      });
      assert.equal(refused.outcome, "refused");
      assert.equal(refused.newHash, null);
      assert.equal(refused.oldHash, applied.newHash);
      assert.match(String(refused.detail.reason), /policy\.yaml:2:7: field "mode"/);
      await run.waitForStderr(/policy reload refused \(SIGHUP\): .*; the policy in force stays/);
      // Sentry still runs, and the policy in force is the last good one.
      assert.equal(run.code, null);
      assert.equal((await step(sb, run, 3, target)).verdict, "deny");
      assert.equal(await run.exit(), 0, run.stderr);
    });
  },
});

Deno.test({
  name:
    "SIGHUP to sentry attach reloads its policy file: the next read of a newly denied file is denied",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withSandbox(async (sb) => {
      const target = join(sb.workspace, "a.txt");
      await Deno.writeTextFile(target, "hello\n");
      const policy = await sb.write("policy.yaml", ALLOW_ALL("attached"));
      const agentFile = await stepAgent(sb, target, 2);
      const agent = sb.spawnRaw(PYTHON, [agentFile]);
      const run = sb.spawn(["attach", String(agent.pid), "-p", policy, "--no-api"]);
      await run.waitForStderr(/attached to pid .* as session (\w+)/, 30_000);
      const id = /as session (\w+)/.exec(run.stderr)?.[1] ?? "";
      // Only stderr and the agent's files while attached: with the fanotify guard up, another
      // process's reads of the journal can miss the session's later writes (reported with #14).
      await sb.write("go1", "");
      const first = Number(await sb.readWhenWritten("done1"));
      await delay(300);
      await Deno.writeTextFile(policy, DENY_A(target));
      run.kill("SIGHUP");
      await run.waitForStderr(/policy reloaded \(SIGHUP\): deny-a/);
      await sb.write("go2", "");
      const second = Number(await sb.readWhenWritten("done2"));
      await run.waitForStderr(denyLine(target, second));
      assert.equal(await agent.exit(), 0);
      assert.equal(await run.exit(), 0, run.stderr);
      const events = (await sb.events(id)).filter((e) => e.target === target);
      assert.equal(events.find((e) => e.pid === first)?.verdict, "allow");
      assert.equal(events.find((e) => e.pid === second)?.verdict, "deny");
      assert.deepEqual(reloads(sb, id).map((r) => [r.outcome, r.detail.by]), [[
        "applied",
        "SIGHUP",
      ]]);
    });
  },
});

/** The alert line `sentry run` prints for a denied read of `target` by `pid`. */
function denyLine(target: string, pid: number): RegExp {
  return new RegExp(`DENY .*file\\.read "${target.replaceAll(".", "\\.")}" by pid ${pid}`);
}

Deno.test({
  name:
    "a reload that would widen a kernel gate is refused, naming what holds the start policy, and the deny stays",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withSandbox(async (sb) => {
      const target = join(sb.workspace, "a.txt");
      await Deno.writeTextFile(target, "hello\n");
      const blocking = await sb.write(
        "block.yaml",
        DENY_A(target).replace("mode: alert", "mode: block"),
      );
      const open = await sb.write("open.yaml", ALLOW_ALL("open").replace("alert", "block"));
      // Mode block walls the agent in: its step files live in its workspace.
      const agent = await stepAgent(sb, target, 2, sb.workspace);
      const run = sb.spawn(["run", "-p", blocking, "--no-api", "--", PYTHON, agent]);
      await run.waitForStderr(/watching ".*" as session/, 30_000);
      // Stderr and the agent's files only while the session runs (see the attach test).
      await sb.write(join(sb.workspace, "go1"), "");
      const first = Number(await sb.readWhenWritten(join(sb.workspace, "done1")));
      await run.waitForStderr(denyLine(target, first));
      const out = await sb.sentry(["policy", "reload", "last", open]);
      assert.equal(out.code, 1, out.stderr);
      assert.match(
        out.stderr,
        /Policy reload of session \w+ refused: the .* of this session holds? the start policy in the kernel and can only narrow, never widen, in a live session .*files\.read\.deny ".*a\.txt" removed; start a new session to widen it/,
      );
      await sb.write(join(sb.workspace, "go2"), "");
      const second = Number(await sb.readWhenWritten(join(sb.workspace, "done2")));
      await run.waitForStderr(denyLine(target, second));
      assert.equal(await run.exit(), 0, run.stderr);
      const { id } = await liveSession(sb);
      const [refused, more] = reloads(sb, id);
      assert.equal(refused?.outcome, "refused");
      assert.notEqual(refused?.newHash, null, "it loaded, and was refused for what it asks");
      assert.equal(more, undefined);
      const events = (await sb.events(id)).filter((e) => e.target === target);
      for (const pid of [first, second]) {
        const e = events.find((e) => e.pid === pid);
        assert.equal(e?.verdict, "deny", `pid ${pid}: the policy in force stays`);
        assert.equal(e?.response, "block");
      }
    });
  },
});

Deno.test({
  name:
    "a policy that requires a newer Sentry is refused with both versions, file and line (exit 2), by run, validate and reload",
  sanitizeResources: false,
  sanitizeOps: false,
  async fn() {
    await withSandbox(async (sb) => {
      const future = await sb.write(
        "future.yaml",
        "name: future\nversion: 3.0.0\nrequired_sentry_version: 99.1.0\nfiles:\n  shiny_new_section: {}\n",
      );
      const expected = new RegExp(
        `future\\.yaml:3:26: field "required_sentry_version": this policy requires Sentry 99\\.1\\.0 or newer, and this is Sentry ${
          VERSION.replaceAll(".", "\\.")
        }`,
      );
      for (
        const args of [
          ["policy", "validate", future],
          ["run", "-p", future, "--no-api", "--", PYTHON, "-c", "pass"],
          ["policy", "reload", "last", future],
        ]
      ) {
        const out = await sb.sentry(args);
        assert.equal(out.code, 2, `${args.join(" ")}: ${out.stderr}`);
        assert.match(out.stderr, expected, args.join(" "));
        assert.doesNotMatch(out.stderr, /shiny_new_section| {4}at /, "no unknown key, no stack");
      }
      // No agent ran under it.
      assert.deepEqual(await sb.sessions().catch(() => []), []);
      const list = await sb.ok(["policy", "list", "--json"]);
      const rows = list.trim().split("\n").map((l) => JSON.parse(l));
      assert.equal(rows.length, 7);
      for (const row of rows) {
        assert.match(row.version, /^\d+\.\d+\.\d+$/);
        assert.equal(row.required_sentry_version, "0.1.0");
      }
    });
  },
});
