/**
 * End-to-end tests of the policy lifecycle (issue 14) on a real python3 agent under `sentry run`:
 * learn a policy from its session and replay the session against it, backtest strict against
 * it, and explain its decisions.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { AgentEvent } from "../src/events/mod.ts";
import { PYTHON, type Sandbox, withSandbox } from "./_helpers.ts";

/**
 * A small coding agent: writes and reads eight files of one directory (past the collapse
 * threshold), one file elsewhere, runs git twice with the same arguments, reads a `.env` (a
 * rule) and a `.env.example` (the rule's exception), and tries the SSH key (a deny list).
 */
const AGENT = `
import os, subprocess
os.makedirs("src", exist_ok=True)
for i in range(8):
    open(f"src/m{i}.py", "w").write("x = 1\\n")
for i in range(8):
    open(f"src/m{i}.py").read()
open("notes.txt", "w").write("done\\n")
open(".env", "w").write("TOKEN=x\\n")
open(".env.example", "w").write("TOKEN=\\n")
open(".env").read()
open(".env.example").read()
for _ in range(2):
    subprocess.run(["git", "--version"], check=True, stdout=subprocess.DEVNULL)
try:
    open(os.path.expanduser("~/.ssh/id_rsa")).read()
except OSError:
    pass
`;

/** Runs the agent under coding-agent, alerting only (nothing pauses it), and returns its events. */
async function runAgent(sb: Sandbox): Promise<AgentEvent[]> {
  const agent = await sb.write(join(sb.workspace, "agent.py"), AGENT);
  const run = await sb.sentry(
    ["run", "--policy", "coding-agent", "--mode", "alert", "--no-api", "--", PYTHON, agent],
    { timeoutMs: 60_000 },
  );
  assert.equal(run.code, 0, run.stderr);
  return await sb.events();
}

function find(events: readonly AgentEvent[], kind: string, suffix: string): AgentEvent {
  const e = events.find((x) => x.kind === kind && x.target.endsWith(suffix));
  assert.ok(e !== undefined, `a ${kind} of ...${suffix} among ${events.length} events`);
  return e;
}

Deno.test("`policy learn` from a python3 session writes a valid policy; replaying the session gives no new denials and the template's denies survive", async () => {
  await withSandbox(async (sb) => {
    const events = await runAgent(sb);
    const key = find(events, "file.read", "/.ssh/id_rsa");
    assert.equal(key.verdict, "deny");
    const learned = sb.path("learned.yaml");
    const out = await sb.sentry(["policy", "learn", "last", "-o", learned]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stderr, /wrote .*learned\.yaml: learned from 1 session\(s\)/);
    const text = await Deno.readTextFile(learned);
    assert.match(text, /^extends: "coding-agent"$/m);
    assert.match(text, /^ {6}- "\$\{WORKSPACE\}\/src\/\*"$/m, "eight siblings became one glob");
    assert.match(text, /^ {6}- "\$\{WORKSPACE\}\/notes\.txt"$/m);
    assert.match(text, /\{ name: "git", args: "\^\(\?:--version\)\$" \} # 2 run\(s\)/);
    assert.match(text, /^# files\.read\.deny "~\/\.ssh\/\*\*": 1 action\(s\)/m);
    assert.match(text, /^# rules "read_dotenv": 1 action\(s\)/m);
    // Deterministic: learning again writes the same text.
    const again = await sb.sentry(["policy", "learn", "last"]);
    assert.equal(again.stdout, text);

    const valid = await sb.sentry(["policy", "validate", learned]);
    assert.equal(valid.code, 0, valid.stderr);

    const replay = await sb.sentry(
      ["policy", "test", learned, "--session", "last", "--json", "--fail-on", "denied"],
    );
    assert.equal(replay.code, 0, replay.stdout + replay.stderr);
    const result = JSON.parse(replay.stdout);
    assert.equal(result.events, events.length);
    assert.equal(result.counts.newly_denied, 0);
    assert.equal(result.counts.newly_allowed, 0, "the template's denies survive");

    // The SSH key read is still denied, by the template's own entry, under the learned policy.
    const why = await sb.sentry(["explain", key.id, "--policy", learned, "--json"]);
    assert.equal(why.code, 0, why.stderr);
    const x = JSON.parse(why.stdout).explanation;
    assert.equal(x.decision.verdict, "deny");
    assert.equal(x.winner.section, "files.read.deny");
    assert.equal(x.winner.source.file, "policies/default.yaml");
    // And what the session never did is denied by the learned policy's default.
    const other = await sb.write(
      "other.jsonl",
      JSON.stringify({ kind: "file.read", target: "/srv/elsewhere.txt", exe: PYTHON }) + "\n",
    );
    const probe = await sb.sentry(["policy", "test", learned, other, "--json"]);
    assert.equal(JSON.parse(probe.stdout.split("\n")[0] ?? "").rule, "files.read.default");
  });
});

Deno.test("a backtest of strict against a coding-agent session lists the new denials and fails on --fail-on", async () => {
  await withSandbox(async (sb) => {
    const events = await runAgent(sb);
    const json = await sb.sentry(["policy", "test", "strict", "--session", "last", "--json"]);
    assert.equal(json.code, 0, json.stderr);
    const result = JSON.parse(json.stdout);
    assert.equal(result.events, events.length);
    assert.ok(result.counts.newly_denied > 0);
    const rules = result.groups.newly_denied.map((g: { rule: string }) => g.rule);
    // strict runs only a few programs: git is outside its processes.allow.
    assert.ok(rules.includes("processes.default"), rules.join(", "));
    const git = result.groups.newly_denied.find((g: { rule: string }) =>
      g.rule === "processes.default"
    );
    assert.ok(git.examples.some((e: { target: string }) => e.target.includes("git")));
    for (const e of git.examples) {
      assert.equal(e.before.verdict, "allow");
      assert.equal(e.after.verdict, "deny");
    }
    const text = await sb.sentry([
      "policy",
      "test",
      "strict",
      "--session",
      "last",
      "--fail-on",
      "denied",
    ]);
    assert.equal(text.code, 1);
    assert.match(text.stdout, /newly denied \(\d+\):/);
    assert.match(text.stdout, /processes\.default: \d+/);
    assert.match(text.stderr, /--fail-on crossed: \d+ newly denied \(at least 1\)/);
    // The same policy as the session's changes nothing.
    const same = await sb.sentry(
      [
        "policy",
        "test",
        "coding-agent",
        "--mode",
        "alert",
        "--session",
        "last",
        "--fail-on",
        "any",
      ],
    );
    assert.equal(same.code, 0, same.stdout + same.stderr);
    // Usage errors are one line, exit 2.
    const both = await sb.sentry(["policy", "test", "strict", "x.jsonl", "--session", "last"]);
    assert.equal(both.code, 2);
    const bad = await sb.sentry([
      "policy",
      "test",
      "strict",
      "--session",
      "last",
      "--fail-on",
      "x",
    ]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /Invalid --fail-on "x"/);
  });
});

Deno.test("`sentry explain` shows a rule-with-exception decision: the exempted rule, the exception's line and the winner", async () => {
  await withSandbox(async (sb) => {
    const events = await runAgent(sb);
    const example = find(events, "file.read", "/.env.example");
    const out = await sb.sentry(["explain", example.id]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(
      out.stdout,
      /policy +coding-agent \(policies\/default\.yaml > policies\/coding-agent\.yaml\)/,
    );
    assert.match(
      out.stdout,
      /rule read_dotenv \(exempted by exception #1\) +deny +50 +policies\/default\.yaml:\d+/,
    );
    assert.match(out.stdout, /→ +files\.read\.default allow +allow/);
    assert.match(out.stdout, /Why: .*"read_dotenv" matched but an exception exempts it/);
    assert.match(
      out.stdout,
      /Exceptions that applied:\n +rule read_dotenv, exception #1 .*\.env\.example.*policies\/default\.yaml:\d+/,
    );
    assert.match(out.stdout, /Risk factors \(sum \d+\):/);
    assert.equal(out.stderr, "", "the policy decides now as it did then: no warning");

    const dotenv = find(events, "file.read", "/.env");
    const json = JSON.parse(await sb.ok(["explain", dotenv.id, "--json"]));
    assert.equal(json.explanation.winner.entry, "read_dotenv");
    assert.equal(json.explanation.decision.rule, dotenv.rule);

    const missing = await sb.sentry(["explain", "01JZZZZZZZZZZZZZZZZZZZZZZZ"]);
    assert.equal(missing.code, 2);
    assert.match(missing.stderr, /No event "01JZZZZZZZZZZZZZZZZZZZZZZZ" in the journal/);
  });
});
