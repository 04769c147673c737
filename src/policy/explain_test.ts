import assert from "node:assert/strict";
import { compilePolicy } from "./compile.ts";
import { evaluate } from "./evaluate.ts";
import type { AgentEvent } from "../events/mod.ts";
import { explainAction, explainJournaledEvent } from "./explain.ts";
import { loadPolicyLayers } from "./loader.ts";
import { resolveLayers } from "./resolve.ts";
import type { ResolvedPolicy } from "./schema.ts";

const CTX = { home: "/home/agent", workspace: "/work/project", env: {} };

const POLICY = `name: exports
extends: coding-agent
files:
  write:
    allow:
      - /srv/reports/**
rules:
  - id: customer_export
    description: Detect writes of customer exports outside the reports folder
    match: { kind: file.write, target: "**/*export*.csv" }
    exceptions:
      - target: "/srv/reports/**"
      - process: { name: python3, args: "--dry-run" }
    risk: 50
    response: pause
  - id: csv_write
    description: Detect writes of CSV files
    match: { kind: file.write, target: "**/*.csv" }
    risk: 20
`;

async function load() {
  const layers = await loadPolicyLayers("/virtual/exports.yaml", {
    readFile: (p) => p === "/virtual/exports.yaml" ? Promise.resolve(POLICY) : Deno.readTextFile(p),
  });
  return { layers, compiled: compilePolicy(resolveLayers(layers), CTX) };
}

const write = (target: string, args: string[] = ["agent.py"]) => ({
  kind: "file.write" as const,
  target,
  exe: "/usr/bin/python3",
  cmdline: ["python3", ...args],
  detail: {},
});

Deno.test("explainAction() on a rule-with-exception decision names the exception, its line and the winner", async () => {
  const { layers, compiled } = await load();
  const x = explainAction(write("/srv/reports/export_2026.csv"), { compiled, layers });
  assert.equal(x.decision.rule, "csv_write");
  assert.deepEqual(x.decision, evaluate(write("/srv/reports/export_2026.csv"), compiled));
  // Precedence: the rule that applies, then the exempted one, then the section's entries.
  assert.deepEqual(x.matches.map((m) => [m.section, m.entry, m.winner]), [
    ["rules", "csv_write", true],
    ["rules", "customer_export", false],
    ["files.write.allow", "/srv/reports/**", false],
  ]);
  assert.deepEqual(x.matches.map((m) => m.source), [
    { file: "/virtual/exports.yaml", line: 16 },
    { file: "/virtual/exports.yaml", line: 8 },
    { file: "/virtual/exports.yaml", line: 6 },
  ]);
  assert.deepEqual(x.exceptions, [{
    rule: "customer_export",
    index: 0,
    match: { target: "/srv/reports/**" },
    source: { file: "/virtual/exports.yaml", line: 12 },
  }]);
  assert.match(x.why, /custom rules come before the section lists/);
  assert.match(x.why, /"customer_export" matched but an exception exempts it/);
  assert.equal(x.winner?.entry, "csv_write");
  assert.deepEqual(x.factors, x.decision.factors);
});

Deno.test("explainAction() ranks applying rules by risk and says why the highest won", async () => {
  const { layers, compiled } = await load();
  const x = explainAction(write("/work/project/export.csv"), { compiled, layers });
  assert.equal(x.decision.rule, "customer_export");
  assert.deepEqual(x.matches.filter((m) => m.section === "rules").map((m) => m.entry), [
    "customer_export",
    "csv_write",
  ]);
  assert.match(x.why, /of the 2 rules that apply, "customer_export" adds the most risk \(50\)/);
  assert.match(x.responseWhy, /rule "customer_export" asks for pause/);
  assert.deepEqual(x.exceptions, []);
  // An exception on the process exempts the same write made with --dry-run.
  const dry = explainAction(write("/work/project/export.csv", ["agent.py", "--dry-run"]), {
    compiled,
    layers,
  });
  assert.equal(dry.decision.rule, "csv_write");
  assert.deepEqual(dry.exceptions.map((e) => [e.rule, e.index, e.source?.line]), [[
    "customer_export",
    1,
    13,
  ]]);
});

Deno.test("explainAction() traces inherited entries to the template's file, aliases included", async () => {
  const { layers, compiled } = await load();
  const x = explainAction(
    { kind: "file.delete", target: "/home/agent/.bashrc", exe: "/bin/rm", cmdline: ["rm"] },
    { compiled, layers },
  );
  assert.equal(x.decision.rule, "files.delete.deny");
  const winner = x.winner;
  assert.equal(winner?.entry, "~/.bashrc");
  assert.equal(winner?.source?.file, "policies/default.yaml");
  const text = await Deno.readTextFile(new URL("../../policies/default.yaml", import.meta.url));
  assert.match(text.split("\n")[(winner?.source?.line ?? 0) - 1] ?? "", /- ~\/\.bashrc$/);
  assert.match(x.why, /a deny entry beats every allow entry/);
  const open = explainAction(write("/work/project/a.txt"), { compiled, layers });
  assert.equal(open.winner?.section, "files.write.allow");
  assert.equal(open.winner?.source?.file, "policies/coding-agent.yaml");
});

Deno.test("explainJournaledEvent() explains an event after a reload against the policy it applied, and warns when that file changed", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sentry-explain-" });
  try {
    const file = `${dir}/p.yaml`;
    await Deno.writeTextFile(file, POLICY);
    const hashOf = (p: ResolvedPolicy) => JSON.stringify(p.rules.map((r) => [r.id, r.risk]));
    const applied = hashOf(resolveLayers(await loadPolicyLayers(file)));
    const reloads = [
      {
        ts: "2026-12-01T10:00:00.000Z",
        outcome: "refused" as const,
        policy: "strict",
        newHash: null,
      },
      {
        ts: "2026-12-01T11:00:00.000Z",
        outcome: "applied" as const,
        policy: file,
        newHash: applied,
      },
    ];
    const action = write("/work/project/export.csv");
    const decided = evaluate(action, (await load()).compiled);
    const event = (ts: string): AgentEvent => ({
      ...action,
      id: "01J00000000000000000000001",
      ts,
      session: "S",
      agent: "a",
      pid: 1,
      ppid: 0,
      sensor: "ebpf",
      ...decided,
    });
    const options = {
      session: { id: "S", policy: "my-team-policy", workspace: CTX.workspace },
      allowFiles: true,
      home: CTX.home,
      env: {},
      guarded: [],
      cwd: dir,
      reloads,
      hashOf,
    };
    const after = await explainJournaledEvent(event("2026-12-01T12:00:00.000Z"), options);
    assert.equal(after.policy.ref, file);
    assert.equal(after.explanation.winner?.entry, "customer_export");
    assert.equal(after.explanation.winner?.source?.file, file);
    assert.deepEqual(after.warnings, []);
    // Before the reload the session ran a policy the journal keeps only by name.
    await assert.rejects(
      explainJournaledEvent(event("2026-12-01T10:30:00.000Z"), options),
      /session "S" ran policy "my-team-policy", which is not a built-in template nor a file/,
    );
    await Deno.writeTextFile(file, POLICY.replace("risk: 50", "risk: 55"));
    const changed = await explainJournaledEvent(event("2026-12-01T12:00:00.000Z"), options);
    assert.equal(changed.warnings.length, 2);
    assert.match(
      changed.warnings[0] ?? "",
      /is not what the reload of 2026-12-01T11:00:00\.000Z applied/,
    );
    assert.match(
      changed.warnings[1] ?? "",
      /decides differently now than when the event was journaled/,
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("explainJournaledEvent() caps the response with the mode the session ran in", async () => {
  // A read of the SSH key under default is denied and paused; with --mode monitor it was
  // journaled with response none, and the explanation must say why.
  const action = {
    kind: "file.read" as const,
    target: "/home/agent/.ssh/id_rsa",
    exe: "/usr/bin/python3",
    cmdline: ["python3", "agent.py"],
    detail: {},
  };
  const event: AgentEvent = {
    ...action,
    id: "01J00000000000000000000002",
    ts: "2026-12-01T12:00:00.000Z",
    session: "S",
    agent: "a",
    pid: 1,
    ppid: 0,
    sensor: "ebpf",
    verdict: "deny",
    risk: 80,
    factors: [],
    rule: "files.read.deny",
    response: "none",
  };
  const options = {
    allowFiles: false,
    home: CTX.home,
    env: {},
    guarded: [],
    cwd: "/",
  };
  const monitored = await explainJournaledEvent(event, {
    ...options,
    session: { id: "S", policy: "default", workspace: CTX.workspace, mode: "monitor" },
  });
  assert.equal(monitored.explanation.decision.verdict, "deny");
  assert.equal(monitored.explanation.decision.response, "none");
  assert.match(monitored.explanation.responseWhy, /mode monitor caps it/);
  const asStarted = await explainJournaledEvent(event, {
    ...options,
    session: { id: "S", policy: "default", workspace: CTX.workspace },
  });
  assert.equal(asStarted.explanation.decision.response, "pause");
});
