import assert from "node:assert/strict";
import { Decision, KINDS } from "../events/mod.ts";
import { type CompiledPolicy, compilePolicy } from "./compile.ts";
import { type Action, evaluate } from "./evaluate.ts";
import { loadPolicy, parsePolicy } from "./loader.ts";
import { resolveLayers } from "./resolve.ts";
import { POINTS } from "./risk.ts";
import type { PolicyFile } from "./schema.ts";

const CTX = { home: "/home/agent", workspace: "/work/project", env: {} };

/** Compiles a policy written as YAML (a single layer, no `extends`). */
function compileYaml(yaml: string): CompiledPolicy {
  return compileFile(parsePolicy(yaml, "test.yaml"));
}

/** Compiles a policy given as a parsed policy file. */
function compileFile(policy: PolicyFile): CompiledPolicy {
  return compilePolicy(resolveLayers([{ source: "test", policy }]), CTX);
}

/**
 * Evaluates and checks the invariants every decision must keep: it fits the `Decision`
 * schema, and its factors add up exactly to its risk.
 */
function decide(policy: CompiledPolicy, action: Action): Decision {
  const d = evaluate(action, policy);
  Decision.parse(d);
  const sum = d.factors.reduce((s, f) => s + f.points, 0);
  assert.equal(sum, d.risk, `factors ${JSON.stringify(d.factors)} add up to the risk`);
  assert.ok(d.risk >= 0 && d.risk <= 100);
  return d;
}

/** The ids of a decision's factors, in order. */
function ids(d: Decision): string[] {
  return d.factors.map((f) => f.id);
}

/** The points of one factor, or undefined when absent. */
function points(d: Decision, id: string): number | undefined {
  return d.factors.find((f) => f.id === id)?.points;
}

const read = (target: string): Action => ({ kind: "file.read", target });
const write = (target: string): Action => ({ kind: "file.write", target });
const del = (target: string): Action => ({ kind: "file.delete", target });
const rename = (from: string, to: string): Action => ({
  kind: "file.rename",
  target: to,
  detail: { from },
});
const exec = (...argv: string[]): Action => ({
  kind: "proc.exec",
  target: argv.join(" "),
  exe: argv[0]?.startsWith("/") ? argv[0] : `/usr/bin/${argv[0]}`,
  cmdline: argv,
});
const connect = (target: string, hosts?: string[]): Action => ({
  kind: "net.connect",
  target,
  ...(hosts === undefined ? {} : { detail: { hosts } }),
});
const OPEN = compileYaml("");

// --- precedence ---------------------------------------------------------------------------

Deno.test("`evaluate()` allows anything when the action's monitor is off", () => {
  const policy = compileYaml(`
monitors: { files: false, network: false, processes: false, cpu: false, memory: false, database: false }
files: { read: { deny: [~/.ssh/**] } }
network: { default: deny, listen: false }
processes: { deny: [sudo] }
limits: { cpu_percent: 10, memory_mb: 10 }
rules:
  - { id: any, description: Detect anything, risk: 90, match: {} }
`);
  const cases: [Action, string][] = [
    [read("/home/agent/.ssh/id_rsa"), "monitors.files"],
    [rename("/home/agent/.ssh/id_rsa", "/tmp/k"), "monitors.files"],
    [exec("sudo", "ls"), "monitors.processes"],
    [{ kind: "proc.exit", target: "sudo" }, "monitors.processes"],
    [connect("1.2.3.4:80"), "monitors.network"],
    [{ kind: "net.listen", target: "0.0.0.0:80" }, "monitors.network"],
    [{ kind: "db.connect", target: "10.0.0.1:5432" }, "monitors.database"],
    [{ kind: "resource.cpu", target: "tree", detail: { percent: 500 } }, "monitors.cpu"],
    [{ kind: "resource.memory", target: "tree", detail: { mb: 5000 } }, "monitors.memory"],
  ];
  for (const [action, rule] of cases) {
    const d = decide(policy, action);
    assert.equal(d.verdict, "allow", action.kind);
    assert.equal(d.rule, rule);
    // Only the kind counts: the path, peer and command are not looked at.
    assert.deepEqual(ids(d), ["kind"], action.kind);
    assert.equal(d.risk, POINTS.kind[action.kind]);
  }
});

Deno.test("`evaluate()` lets a custom rule deny what the section's allow list allows", () => {
  const policy = compileYaml(`
files: { read: { allow: ['\${WORKSPACE}/**'] } }
rules:
  - id: env_read
    description: Detect reads of .env files
    match: { kind: file.read, target: '**/.env' }
    risk: 40
`);
  const d = decide(policy, read("/work/project/.env"));
  assert.equal(d.verdict, "deny");
  assert.equal(d.rule, "env_read");
  assert.deepEqual(ids(d), ["kind", "credential_path", "rule:env_read"]);
  assert.equal(d.risk, 5 + 35 + 40);
  assert.equal(decide(policy, read("/work/project/main.ts")).rule, "files.read.allow");
});

Deno.test("`evaluate()` names the rule when a rule and the deny list both match, and counts both", () => {
  const policy = compileYaml(`
files: { write: { deny: [/etc/**] } }
rules:
  - { id: etc_write, description: Detect writes to /etc, risk: 25, match: { target: /etc/** } }
`);
  const d = decide(policy, write("/etc/hosts"));
  assert.equal(d.verdict, "deny");
  assert.equal(d.rule, "etc_write");
  assert.equal(points(d, "violation"), POINTS.denied_by_list);
  assert.equal(points(d, "rule:etc_write"), 25);
});

Deno.test("`evaluate()` denies a read of ~/.ssh under a deny glob, even when an allow glob matches", () => {
  const policy = compileYaml("files: { read: { allow: [~/**], deny: [~/.ssh/**] } }");
  const d = decide(policy, read("/home/agent/.ssh/id_rsa"));
  assert.equal(d.verdict, "deny");
  assert.equal(d.rule, "files.read.deny");
  assert.equal(points(d, "violation"), 40);
  assert.match(
    d.factors.find((f) => f.id === "violation")?.reason ?? "",
    /"\/home\/agent\/\.ssh\/id_rsa" matches files\.read\.deny "~\/\.ssh\/\*\*"/,
  );
  assert.equal(decide(policy, read("/home/agent/notes.txt")).rule, "files.read.allow");
});

Deno.test("`evaluate()` allows what the allow list names and denies the rest by default", () => {
  const policy = compileYaml("files: { write: { allow: ['${WORKSPACE}/**', /tmp/**] } }");
  const inside = decide(policy, write("/work/project/src/a.ts"));
  assert.equal(inside.verdict, "allow");
  assert.equal(inside.rule, "files.write.allow");
  const tmp = decide(policy, write("/tmp/scratch"));
  assert.equal(tmp.verdict, "allow");
  const out = decide(policy, write("/home/agent/notes.txt"));
  assert.equal(out.verdict, "deny");
  assert.equal(out.rule, "files.write.default");
  assert.equal(points(out, "violation"), POINTS.denied_by_default);
  // file.create is checked against files.write too.
  const created = decide(policy, { kind: "file.create", target: "/home/agent/x" });
  assert.equal(created.rule, "files.write.default");
});

Deno.test("`evaluate()` allows by default in an open section", () => {
  const d = decide(OPEN, read("/usr/share/dict/words"));
  assert.equal(d.verdict, "allow");
  assert.equal(d.rule, "files.read.default");
  assert.equal(d.response, "none");
  assert.deepEqual(ids(d), ["kind"]);
});

Deno.test("`evaluate()` checks file.delete against files.delete only", () => {
  const policy = compileYaml(`
files:
  write: { deny: ['\${WORKSPACE}/keep/**'] }
  delete: { deny: ['\${WORKSPACE}/.git/**'] }
`);
  assert.equal(decide(policy, del("/work/project/.git/HEAD")).rule, "files.delete.deny");
  assert.equal(decide(policy, del("/work/project/keep/x")).verdict, "allow");
});

// --- rename -------------------------------------------------------------------------------

Deno.test("`evaluate()` checks a rename's destination against files.write", () => {
  const policy = compileYaml("files: { write: { deny: [/etc/**] } }");
  const d = decide(policy, rename("/work/project/hosts", "/etc/hosts"));
  assert.equal(d.verdict, "deny");
  assert.equal(d.rule, "files.write.deny");
});

Deno.test("`evaluate()` checks a rename's source against files.delete", () => {
  const policy = compileYaml("files: { delete: { deny: ['${WORKSPACE}/.git/**'] } }");
  const d = decide(policy, rename("/work/project/.git/config", "/work/project/config.bak"));
  assert.equal(d.verdict, "deny");
  assert.equal(d.rule, "files.delete.deny");
});

Deno.test("`evaluate()` does not check a rename's source against files.write or its destination against files.delete", () => {
  const policy = compileYaml(`
files:
  write: { deny: [/src/**] }
  delete: { deny: [/dst/**] }
`);
  const d = decide(policy, rename("/src/a", "/dst/a"));
  assert.equal(d.verdict, "allow");
  assert.equal(d.rule, "files.write.default");
});

Deno.test("`evaluate()` reports the destination's deny when both ends of a rename are denied", () => {
  const policy = compileYaml(`
files:
  write: { deny: [/etc/**] }
  delete: { deny: ['\${WORKSPACE}/**'] }
`);
  const d = decide(policy, rename("/work/project/x", "/etc/x"));
  assert.equal(d.rule, "files.write.deny");
  assert.equal(ids(d).filter((id) => id === "violation").length, 1);
});

Deno.test("`evaluate()` treats a rename without a source as a write to the destination", () => {
  const policy = compileYaml("files: { delete: { deny: [/**] } }");
  const d = decide(policy, { kind: "file.rename", target: "/work/project/b" });
  assert.equal(d.verdict, "allow");
  assert.equal(d.rule, "files.write.default");
});

Deno.test("`evaluate()` matches a rule's target on a rename's source as well as its destination", () => {
  const policy = compileYaml(`
rules:
  - { id: key_move, description: Detect moving key files, risk: 50, match: { kind: file.rename, target: '**/*.pem' } }
`);
  const fromKey = decide(policy, rename("/work/project/server.pem", "/work/project/x.txt"));
  assert.equal(fromKey.rule, "key_move");
  const toKey = decide(policy, rename("/work/project/x.txt", "/work/project/server.pem"));
  assert.equal(toKey.rule, "key_move");
  const neither = decide(policy, rename("/work/project/a.txt", "/work/project/b.txt"));
  assert.equal(neither.verdict, "allow");
});

// --- processes ----------------------------------------------------------------------------

Deno.test("`evaluate()` matches a process entry by executable name", () => {
  const policy = compileYaml("processes: { deny: [sudo, 'python3*'] }");
  assert.equal(decide(policy, exec("sudo", "ls")).rule, "processes.deny");
  assert.equal(decide(policy, exec("/opt/py/bin/python3.12", "x.py")).rule, "processes.deny");
  assert.equal(decide(policy, exec("sudoedit")).verdict, "allow");
  assert.equal(decide(policy, exec("python")).verdict, "allow");
});

Deno.test("`evaluate()` takes the executable from argv[0] when exe is unknown", () => {
  const policy = compileYaml("processes: { deny: [curl] }");
  const d = decide(policy, {
    kind: "proc.exec",
    target: "curl x",
    exe: null,
    cmdline: ["/usr/bin/curl", "x"],
  });
  assert.equal(d.rule, "processes.deny");
});

Deno.test("`evaluate()` matches a process entry by path glob", () => {
  const policy = compileYaml("processes: { deny: [/tmp/**] }");
  assert.equal(decide(policy, exec("/tmp/x/evil")).verdict, "deny");
  assert.equal(decide(policy, exec("/usr/bin/tmp")).verdict, "allow");
});

Deno.test("`evaluate()` matches a process entry's args regex against the arguments after argv[0]", () => {
  const policy = compileYaml(`processes: { deny: [{ args: '(^| )--privileged( |$)' }] }`);
  assert.equal(decide(policy, exec("docker", "run", "--privileged", "x")).verdict, "deny");
  assert.equal(decide(policy, exec("docker", "run", "x")).verdict, "allow");
  // argv[0] is not part of the arguments.
  assert.equal(decide(policy, exec("/opt/--privileged")).verdict, "allow");
});

Deno.test("`evaluate()` needs every field of a process entry object to match", () => {
  const policy = compileYaml(`
processes:
  deny:
    - { name: git, path: /usr/bin/*, args: 'push.*--force' }
`);
  assert.equal(decide(policy, exec("/usr/bin/git", "push", "--force")).verdict, "deny");
  assert.equal(decide(policy, exec("/usr/bin/git", "push")).verdict, "allow");
  assert.equal(decide(policy, exec("/usr/bin/hg", "push", "--force")).verdict, "allow");
  assert.equal(decide(policy, exec("/opt/git/bin/git", "push", "--force")).verdict, "allow");
  const d = decide(policy, exec("/usr/bin/git", "push", "--force"));
  assert.match(d.factors.find((f) => f.id === "violation")?.reason ?? "", /"name":"git"/);
});

Deno.test("`evaluate()` denies a process outside a non-empty allow list, and always allows proc.exit", () => {
  const policy = compileYaml("processes: { allow: [git, 'python3*', /usr/local/bin/**] }");
  assert.equal(decide(policy, exec("git", "status")).rule, "processes.allow");
  assert.equal(decide(policy, exec("python3.12")).rule, "processes.allow");
  assert.equal(decide(policy, exec("/usr/local/bin/tool")).rule, "processes.allow");
  const node = decide(policy, exec("node", "x.js"));
  assert.equal(node.verdict, "deny");
  assert.equal(node.rule, "processes.default");
  assert.equal(points(node, "violation"), POINTS.denied_by_default);
  const exit = decide(policy, { kind: "proc.exit", target: "node" });
  assert.equal(exit.verdict, "allow");
  assert.equal(exit.rule, "processes");
  assert.equal(exit.risk, 0);
});

// --- custom rules -------------------------------------------------------------------------

Deno.test("`evaluate()` matches a rule with kind glob `file.*` on every file kind and nothing else", () => {
  const policy = compileYaml(`
rules:
  - { id: pem, description: Detect key files, risk: 50, match: { kind: 'file.*', target: '**/*.pem' } }
`);
  for (const kind of ["file.read", "file.write", "file.create", "file.delete"] as const) {
    assert.equal(decide(policy, { kind, target: "/work/project/a.pem" }).rule, "pem", kind);
  }
  assert.equal(decide(policy, rename("/x", "/work/project/a.pem")).rule, "pem");
  assert.equal(decide(policy, exec("cat", "/work/project/a.pem")).verdict, "allow");
  assert.equal(policy.rulesByKind.get("proc.exec")?.length, 0);
  assert.equal(policy.rulesByKind.get("file.delete")?.length, 1);
});

Deno.test("`evaluate()` lets a rule exception exempt an action", () => {
  const policy = compileYaml(`
rules:
  - id: export_write
    description: Detect writes of customer exports
    match: { kind: [file.write, file.create], target: '**/*export*.csv' }
    exceptions: [{ target: '\${WORKSPACE}/reports/**' }, { process: { name: backup } }]
    risk: 50
    response: pause
`);
  assert.equal(decide(policy, write("/work/project/tmp/export.csv")).rule, "export_write");
  const exempt = decide(policy, write("/work/project/reports/export.csv"));
  assert.equal(exempt.verdict, "allow");
  assert.ok(!ids(exempt).includes("rule:export_write"));
  const byProcess = decide(policy, {
    ...write("/work/project/tmp/export.csv"),
    exe: "/usr/bin/backup",
  });
  assert.equal(byProcess.verdict, "allow");
});

Deno.test("`evaluate()` ignores a disabled rule", () => {
  const policy = compileYaml(`
rules:
  - { id: off, description: Detect anything, risk: 90, match: {}, enabled: false }
`);
  assert.equal(decide(policy, read("/x")).verdict, "allow");
});

Deno.test("`evaluate()` names the highest-risk rule and takes the most drastic explicit response", () => {
  const policy = compileYaml(`
mode: kill
rules:
  - { id: low_pause, description: Detect a, risk: 20, response: pause, match: { kind: file.read } }
  - { id: high_auto, description: Detect b, risk: 40, match: { kind: file.read } }
  - { id: mid_alert, description: Detect c, risk: 30, response: alert, match: { kind: file.read } }
  - { id: other_kind, description: Detect d, risk: 99, response: kill, match: { kind: file.write } }
`);
  const d = decide(policy, read("/work/project/x"));
  assert.equal(d.verdict, "deny");
  assert.equal(d.rule, "high_auto");
  assert.equal(d.response, "pause");
  assert.deepEqual(ids(d), ["kind", "rule:low_pause", "rule:high_auto", "rule:mid_alert"]);
  assert.equal(d.risk, 5 + 20 + 40 + 30);
});

Deno.test("`evaluate()` names the first of several rules with the same risk", () => {
  const policy = compileYaml(`
rules:
  - { id: first, description: Detect a, risk: 40, match: { kind: file.read } }
  - { id: second, description: Detect b, risk: 40, match: { kind: file.read } }
`);
  assert.equal(decide(policy, read("/x")).rule, "first");
});

Deno.test("`evaluate()` matches rule targets as wildcards for non-file kinds", () => {
  const policy = compileYaml(`
rules:
  - { id: pastebin, description: Detect paste sites, risk: 50, match: { kind: net.connect, target: '*pastebin*' } }
  - { id: force_push, description: Detect force pushes, risk: 45, match: { process: { name: git, args: 'push.*(--force|-f\\b)' } } }
  - { id: curl_any, description: Detect curl, risk: 10, match: { target: 'curl *' } }
`);
  assert.equal(decide(policy, connect("pastebin.com:443")).rule, "pastebin");
  assert.equal(decide(policy, connect("example.com:443")).verdict, "allow");
  assert.equal(decide(policy, exec("git", "push", "-f", "origin")).rule, "force_push");
  assert.equal(decide(policy, exec("git", "pull")).verdict, "allow");
  assert.equal(decide(policy, exec("curl", "https://x")).rule, "curl_any");
  // A non-path target does not apply to file kinds.
  assert.equal(decide(policy, read("/tmp/curl x")).verdict, "allow");
});

Deno.test("`evaluate()` expands ~ and ${WORKSPACE} in rule targets", () => {
  const policy = compileYaml(`
rules:
  - { id: dot, description: Detect dotfile writes, risk: 30, match: { kind: file.write, target: '~/.*' } }
  - { id: ci, description: Detect CI changes, risk: 35, match: { kind: file.write, target: '\${WORKSPACE}/.github/**' } }
`);
  assert.equal(decide(policy, write("/home/agent/.gitconfig")).rule, "dot");
  assert.equal(decide(policy, write("/work/project/.github/workflows/ci.yml")).rule, "ci");
  assert.equal(decide(policy, write("/work/project/.gitconfig")).verdict, "allow");
});

// --- network, database, listen ------------------------------------------------------------

Deno.test("`evaluate()` decides net.connect by deny list, allow list, then default", () => {
  const policy = compileYaml(`
network:
  allow: [api.github.com:443, '*.npmjs.org', 10.0.0.0/8]
  deny: [10.0.0.13]
`);
  assert.equal(decide(policy, connect("10.0.0.13:443")).rule, "network.deny");
  assert.equal(decide(policy, connect("10.0.0.12:443")).rule, "network.allow");
  assert.equal(
    decide(policy, connect("104.16.0.1:443", ["registry.npmjs.org"])).rule,
    "network.allow",
  );
  assert.equal(
    decide(policy, connect("140.82.112.6:443", ["api.github.com"])).rule,
    "network.allow",
  );
  assert.equal(
    decide(policy, connect("140.82.112.6:22", ["api.github.com"])).rule,
    "network.default",
  );
  const other = decide(policy, connect("93.184.216.34:443"));
  assert.equal(other.verdict, "deny");
  assert.equal(points(other, "violation"), POINTS.denied_by_default);
});

Deno.test("`evaluate()` allows db.connect only to database.allow entries", () => {
  const policy = compileYaml(`
network: { allow: ['*'], deny: [10.9.0.0/16] }
database: { allow: [localhost:5432, 10.0.0.0/8:5432] }
`);
  const db = (target: string): Action => ({ kind: "db.connect", target });
  assert.equal(decide(policy, db("127.0.0.1:5432")).rule, "database.allow");
  assert.equal(decide(policy, db("127.0.0.1:5432")).verdict, "allow");
  assert.equal(decide(policy, db("10.1.2.3:5432")).verdict, "allow");
  // network.deny beats database.allow.
  const denied = decide(policy, db("10.9.1.1:5432"));
  assert.equal(denied.verdict, "deny");
  assert.equal(denied.rule, "network.deny");
  // network.allow does not admit a database.
  const other = decide(policy, db("10.1.2.3:3306"));
  assert.equal(other.verdict, "deny");
  assert.equal(other.rule, "database.allow");
  assert.equal(points(other, "violation"), POINTS.denied_by_default);
});

Deno.test("`evaluate()` denies every db.connect when database.allow is empty", () => {
  const d = decide(OPEN, { kind: "db.connect", target: "127.0.0.1:5432" });
  assert.equal(d.verdict, "deny");
  assert.equal(d.rule, "database.allow");
  assert.equal(d.risk, 20 + 30);
});

Deno.test("`evaluate()` denies net.listen when listen is false and allows it otherwise", () => {
  const closed = compileYaml("network: { listen: false, allow: ['*'] }");
  const d = decide(closed, { kind: "net.listen", target: "127.0.0.1:8080" });
  assert.equal(d.verdict, "deny");
  assert.equal(d.rule, "network.listen");
  assert.equal(points(d, "violation"), POINTS.denied_by_list);
  const open = decide(OPEN, { kind: "net.listen", target: "127.0.0.1:8080" });
  assert.equal(open.verdict, "allow");
  assert.equal(open.rule, "network.listen");
});

// --- resources ----------------------------------------------------------------------------

Deno.test("`evaluate()` denies CPU above the limit and allows it at or under the limit", () => {
  const policy = compileYaml("limits: { cpu_percent: 90 }");
  const cpu = (percent: unknown): Action => ({
    kind: "resource.cpu",
    target: "tree",
    detail: { percent },
  });
  const over = decide(policy, cpu(150));
  assert.equal(over.verdict, "deny");
  assert.equal(over.rule, "limits.cpu_percent");
  assert.equal(points(over, "violation"), POINTS.limit_exceeded);
  assert.equal(over.risk, 20 + 30);
  assert.equal(decide(policy, cpu(90)).verdict, "allow");
  assert.equal(decide(policy, cpu(12.5)).verdict, "allow");
  // A missing or non-numeric reading is no evidence of a violation.
  assert.equal(decide(policy, cpu("150")).verdict, "allow");
  assert.equal(decide(policy, cpu(Infinity)).verdict, "allow");
  assert.equal(decide(policy, { kind: "resource.cpu", target: "tree" }).verdict, "allow");
});

Deno.test("`evaluate()` denies a CPU spike only above `cpu_percent` for at least `cpu_seconds`", () => {
  const policy = compileYaml("limits: { cpu_percent: 90, cpu_seconds: 10 }");
  const spike = (percent: number, duration_seconds: number): Action => ({
    kind: "resource.cpu",
    target: "tree",
    detail: { percent, duration_seconds },
  });
  const long = decide(policy, spike(99.5, 12.3));
  assert.equal(long.verdict, "deny");
  assert.equal(long.rule, "limits.cpu_percent");
  assert.equal(points(long, "violation"), POINTS.limit_exceeded);
  assert.match(
    long.factors.at(-1)?.reason ?? "",
    /CPU at 99.5% for 12.3 s is above the limit of 90% for 10 s/,
  );
  assert.equal(decide(policy, spike(99.5, 10)).verdict, "deny");
  // Too short: journaled as an observation, allowed, and the rule says why.
  const short = decide(policy, spike(99.5, 9.9));
  assert.equal(short.verdict, "allow");
  assert.equal(short.rule, "limits.cpu_seconds");
  assert.equal(short.response, "none");
  // Long enough but not above the limit.
  const low = decide(policy, spike(90, 60));
  assert.equal(low.verdict, "allow");
  assert.equal(low.rule, "limits.cpu_percent");
  // A non-numeric duration is no duration: judged on the percent alone.
  const odd = decide(policy, {
    kind: "resource.cpu",
    target: "tree",
    detail: { percent: 99.5, duration_seconds: "long" },
  });
  assert.equal(odd.verdict, "deny");
});

Deno.test("`evaluate()` allows the seed's 4 s spike of one core under coding-agent and denies it under a 90 % for 3 s limit", async () => {
  const coding = compilePolicy(await loadPolicy("coding-agent"), CTX);
  assert.deepEqual(coding.limits, { cpu_percent: 800, cpu_seconds: 300, memory_mb: 8192 });
  const tight = compileYaml("limits: { cpu_percent: 90, cpu_seconds: 3 }");
  const spike: Action = {
    kind: "resource.cpu",
    target: "tree",
    detail: { percent: 98.7, peak_percent: 100, duration_seconds: 3.8, ongoing: false },
  };
  const allowed = decide(coding, spike);
  assert.equal(allowed.verdict, "allow");
  assert.equal(allowed.rule, "limits.cpu_percent");
  assert.equal(decide(tight, spike).verdict, "deny");
  // The built-in defaults (90 % for 10 s) allow it too: it is too short.
  assert.equal(decide(OPEN, spike).rule, "limits.cpu_seconds");
});

Deno.test("`evaluate()` denies memory above the limit and allows it under the limit", () => {
  const policy = compileYaml("limits: { memory_mb: 2048 }");
  const mem = (mb: number): Action => ({ kind: "resource.memory", target: "tree", detail: { mb } });
  const over = decide(policy, mem(3000));
  assert.equal(over.verdict, "deny");
  assert.equal(over.rule, "limits.memory_mb");
  assert.match(over.factors.at(-1)?.reason ?? "", /3000 MB is above the limit of 2048 MB/);
  const under = decide(policy, mem(2000));
  assert.equal(under.verdict, "allow");
  assert.equal(under.rule, "limits.memory_mb");
});

Deno.test("`evaluate()` judges a memory excursion on its `mb` reading, not on its duration", () => {
  const policy = compileYaml("limits: { memory_mb: 8192 }");
  const excursion = (mb: number): Action => ({
    kind: "resource.memory",
    target: "tree",
    detail: { mb, peak_mb: mb + 100, duration_seconds: 0.2, ongoing: false },
  });
  assert.equal(decide(policy, excursion(3000)).verdict, "allow");
  const over = decide(policy, excursion(9000));
  assert.equal(over.verdict, "deny");
  assert.match(over.factors.at(-1)?.reason ?? "", /9000 MB is above the limit of 8192 MB/);
});

// --- risk and response --------------------------------------------------------------------

Deno.test("`evaluate()` keeps factors summing exactly to the risk for every kind and verdict", () => {
  const policies = [
    OPEN,
    compileYaml(`
thresholds: { alert: 70 }
files: { read: { allow: [/ok/**] }, write: { deny: ['**'] }, delete: { allow: [/ok/**] } }
network: { allow: [ok.com], listen: false }
processes: { allow: [ok] }
limits: { cpu_percent: 1, memory_mb: 1 }
rules:
  - { id: big, description: Detect big, risk: 100, match: { target: ['**/.env', 'x*'] } }
`),
  ];
  const targets = [
    "/home/agent/.ssh/id_rsa",
    "/work/project/.env",
    "/etc/profile.d/patients.sh",
    "/ok/x",
    "x.com:80",
    "169.254.169.254:80",
    "0.0.0.0:80",
    "[::]:80",
    "10.0.0.1:5432",
  ];
  for (const policy of policies) {
    for (const kind of KINDS) {
      for (const target of targets) {
        decide(policy, {
          kind,
          target,
          exe: "/usr/bin/sudo",
          cmdline: ["sudo", "rm", "-rf", "/"],
          detail: { from: "/home/agent/.aws/credentials", percent: 99, mb: 9999 },
        });
      }
    }
  }
});

Deno.test("`evaluate()` raises a denied action to the alert threshold with a deny_floor factor", () => {
  const policy = compileYaml(`
thresholds: { alert: 50 }
files: { read: { deny: ['\${WORKSPACE}/secret'] } }
`);
  const d = decide(policy, read("/work/project/secret"));
  assert.equal(d.verdict, "deny");
  assert.deepEqual(ids(d), ["kind", "violation", "deny_floor"]);
  assert.equal(points(d, "deny_floor"), 50 - 5 - 40);
  assert.equal(d.risk, 50);
  assert.equal(d.response, "alert");
});

Deno.test("`evaluate()` adds no deny_floor when a denied action already reaches the alert threshold", () => {
  const policy = compileYaml("files: { read: { deny: ['${WORKSPACE}/secret'] } }");
  const d = decide(policy, read("/work/project/secret"));
  assert.deepEqual(ids(d), ["kind", "violation"]);
  assert.equal(d.risk, 45);
});

Deno.test("`evaluate()` never raises an allowed action to the alert threshold", () => {
  const d = decide(OPEN, read("/work/project/a"));
  assert.equal(d.risk, 5);
  assert.ok(!ids(d).includes("deny_floor"));
});

Deno.test("`evaluate()` caps the risk at 100 with a negative cap factor", () => {
  const policy = compileYaml(`
files: { read: { deny: [~/.ssh/**] } }
rules:
  - { id: ssh, description: Detect SSH reads, risk: 90, match: { target: ~/.ssh/** } }
`);
  const d = decide(policy, read("/home/agent/.ssh/id_rsa"));
  assert.equal(d.risk, 100);
  assert.equal(ids(d).at(-1), "cap");
  assert.equal(points(d, "cap"), 100 - (5 + 35 + 40 + 90));
});

Deno.test("`evaluate()` chooses the response from the thresholds", () => {
  const policy = compileYaml(`
mode: kill
thresholds: { alert: 30, pause: 60, rollback: 85, kill: 95 }
rules:
  - { id: r, description: Detect exits, risk: 0, match: { kind: proc.exit } }
`);
  const at = (risk: number) => {
    const p = { ...policy, rulesByKind: new Map(policy.rulesByKind) };
    const compiled = p.rulesByKind.get("proc.exit")?.[0];
    assert.ok(compiled);
    p.rulesByKind.set("proc.exit", [{ ...compiled, rule: { ...compiled.rule, risk } }]);
    const d = decide(p, { kind: "proc.exit", target: "x" });
    assert.equal(d.risk, Math.max(risk, 30));
    return d.response;
  };
  assert.equal(at(0), "alert");
  assert.equal(at(29), "alert");
  assert.equal(at(30), "alert");
  assert.equal(at(59), "alert");
  assert.equal(at(60), "pause");
  assert.equal(at(84), "pause");
  assert.equal(at(85), "rollback");
  assert.equal(at(94), "rollback");
  assert.equal(at(95), "kill");
  assert.equal(at(100), "kill");
});

Deno.test("`evaluate()` gives no response to an allowed action under the alert threshold", () => {
  const d = decide(OPEN, write("/work/project/a.ts"));
  assert.equal(d.risk, 10);
  assert.equal(d.response, "none");
});

Deno.test("`evaluate()` caps the response by the mode", () => {
  const rule = "rules: [{ id: r, description: Detect x, risk: 90, match: { kind: file.read } }]";
  const response = (mode: string) =>
    decide(compileYaml(`mode: ${mode}\nthresholds: { kill: 95 }\n${rule}`), read("/x")).response;
  assert.equal(response("monitor"), "none");
  assert.equal(response("alert"), "alert");
  assert.equal(response("pause"), "pause");
  assert.equal(response("rollback"), "rollback");
  assert.equal(response("kill"), "kill");
});

Deno.test("`evaluate()` caps a rule's explicit response by the mode too", () => {
  const policy = compileYaml(`
mode: alert
rules: [{ id: r, description: Detect x, risk: 10, response: kill, match: { kind: file.read } }]
`);
  assert.equal(decide(policy, read("/x")).response, "alert");
  const monitor = compileYaml(`
mode: monitor
rules: [{ id: r, description: Detect x, risk: 10, response: alert, match: { kind: file.read } }]
`);
  assert.equal(decide(monitor, read("/x")).response, "none");
});

Deno.test("`evaluate()` never gives an allowed action more than an alert", () => {
  const policy = compileYaml("mode: kill\nthresholds: { pause: 40, rollback: 50, kill: 60 }");
  // 10 (write) + 30 (shell start-up) + 30 (PHI) + 10 (outside the workspace) = 80.
  const d = decide(policy, write("/etc/profile.d/patients.sh"));
  assert.equal(d.verdict, "allow");
  assert.equal(d.risk, 80);
  assert.equal(d.response, "alert");
});

Deno.test("`evaluate()` kills at the kill threshold when the mode allows it", () => {
  const yaml = (mode: string) => `
mode: ${mode}
thresholds: { kill: 90 }
files: { read: { deny: [~/.ssh/**] } }
rules: [{ id: ssh, description: Detect SSH, risk: 10, match: { target: ~/.ssh/** } }]
`;
  const d = decide(compileYaml(yaml("kill")), read("/home/agent/.ssh/id_rsa"));
  assert.equal(d.risk, 5 + 35 + 40 + 10);
  assert.equal(d.response, "kill");
  assert.equal(
    decide(compileYaml(yaml("pause")), read("/home/agent/.ssh/id_rsa")).response,
    "pause",
  );
});

Deno.test("`evaluate()` uses a rule's explicit response whatever the risk", () => {
  const policy = compileYaml(`
mode: kill
rules:
  - { id: quiet, description: Detect quiet, risk: 100, response: none, match: { kind: file.read } }
  - { id: block, description: Detect block, risk: 1, response: block, match: { kind: file.write } }
  - { id: kill, description: Detect kill, risk: 1, response: kill, match: { kind: file.delete } }
`);
  const quiet = decide(policy, read("/x"));
  assert.equal(quiet.verdict, "deny");
  assert.equal(quiet.response, "none");
  assert.equal(decide(policy, write("/work/project/x")).response, "block");
  assert.equal(decide(policy, del("/work/project/x")).response, "kill");
});

// --- sensitivity --------------------------------------------------------------------------

Deno.test("`evaluate()` scores credential paths on reads and writes", () => {
  for (
    const path of [
      "/home/agent/.ssh/id_rsa",
      "/home/agent/.aws/credentials",
      "/work/project/.env",
      "/work/project/.env.local",
      "/work/project/certs/server.key",
      "/etc/shadow",
    ]
  ) {
    assert.equal(points(decide(OPEN, read(path)), "credential_path"), 35, path);
  }
  assert.equal(points(decide(OPEN, read("/work/project/env.ts")), "credential_path"), undefined);
  assert.equal(points(decide(OPEN, write("/work/project/.env")), "credential_path"), 35);
});

Deno.test("`evaluate()` scores shell start-up files only for modifications", () => {
  assert.equal(points(decide(OPEN, write("/home/agent/.bashrc")), "shell_startup"), 30);
  assert.equal(points(decide(OPEN, del("/home/agent/.zshrc")), "shell_startup"), 30);
  assert.equal(points(decide(OPEN, read("/home/agent/.bashrc")), "shell_startup"), undefined);
  // A start-up file under /etc counts once, as start-up, not also as a system path.
  const etc = decide(OPEN, write("/etc/profile.d/x.sh"));
  assert.equal(points(etc, "shell_startup"), 30);
  assert.equal(points(etc, "system_path"), undefined);
});

Deno.test("`evaluate()` scores system paths only for modifications", () => {
  assert.equal(points(decide(OPEN, write("/usr/bin/python3")), "system_path"), 20);
  assert.equal(points(decide(OPEN, del("/etc/hosts")), "system_path"), 20);
  assert.equal(points(decide(OPEN, read("/etc/hosts")), "system_path"), undefined);
  assert.equal(points(decide(OPEN, write("/usrx/a")), "system_path"), undefined);
});

Deno.test("`evaluate()` scores paths that look like health data", () => {
  for (
    const path of [
      "/work/project/data/patients.csv",
      "/data/ehr/x",
      "/work/project/scan.dcm",
      "/x/lab_results.json",
    ]
  ) {
    assert.equal(points(decide(OPEN, read(path)), "phi_path"), 30, path);
  }
  for (const path of ["/work/project/src/philosophy.md", "/work/project/emrald/x"]) {
    assert.equal(points(decide(OPEN, read(path)), "phi_path"), undefined, path);
  }
});

Deno.test("`evaluate()` scores changes outside the workspace, but not reads", () => {
  assert.equal(points(decide(OPEN, write("/tmp/x")), "outside_workspace"), 10);
  assert.equal(points(decide(OPEN, write("/work/projectx/y")), "outside_workspace"), 10);
  assert.equal(points(decide(OPEN, write("/work/project/y")), "outside_workspace"), undefined);
  assert.equal(points(decide(OPEN, write("/work/project")), "outside_workspace"), undefined);
  assert.equal(points(decide(OPEN, read("/tmp/x")), "outside_workspace"), undefined);
  assert.equal(points(decide(OPEN, rename("/work/project/a", "/tmp/a")), "outside_workspace"), 10);
});

Deno.test("`evaluate()` scores the cloud metadata address, not as a private network", () => {
  for (
    const target of ["169.254.169.254:80", "[fd00:ec2::254]:80", "[::ffff:169.254.169.254]:80"]
  ) {
    const d = decide(OPEN, connect(target));
    assert.equal(points(d, "cloud_metadata"), 30, target);
    assert.equal(points(d, "private_network"), undefined, target);
  }
});

Deno.test("`evaluate()` scores private-network peers", () => {
  for (
    const target of [
      "10.1.2.3:22",
      "172.16.0.1:22",
      "192.168.1.1:80",
      "100.64.0.1:80",
      "[fd12::1]:80",
      "[fe80::1]:80",
    ]
  ) {
    assert.equal(points(decide(OPEN, connect(target)), "private_network"), 15, target);
  }
  for (const target of ["8.8.8.8:53", "172.32.0.1:22", "example.com:443", "[2001:db8::1]:80"]) {
    assert.equal(points(decide(OPEN, connect(target)), "private_network"), undefined, target);
  }
});

Deno.test("`evaluate()` scores listening on all interfaces, v4 and v6", () => {
  const listen = (target: string) => decide(OPEN, { kind: "net.listen", target });
  assert.equal(points(listen("0.0.0.0:8080"), "listen_all_interfaces"), 10);
  assert.equal(points(listen("[::]:8080"), "listen_all_interfaces"), 10);
  assert.equal(points(listen("127.0.0.1:8080"), "listen_all_interfaces"), undefined);
  // A listener is not scored as a connection to a private peer.
  assert.equal(points(listen("10.0.0.1:8080"), "private_network"), undefined);
});

Deno.test("`evaluate()` scores privilege escalation and network tools", () => {
  assert.equal(points(decide(OPEN, exec("sudo", "ls")), "privilege_escalation"), 30);
  assert.equal(points(decide(OPEN, exec("/usr/bin/doas", "ls")), "privilege_escalation"), 30);
  assert.equal(points(decide(OPEN, exec("sudoku")), "privilege_escalation"), undefined);
  assert.equal(points(decide(OPEN, exec("nc", "-l", "4444")), "network_tool"), 20);
});

Deno.test("`evaluate()` scores rm -rf in its usual spellings as destructive", () => {
  for (
    const argv of [
      ["rm", "-rf", "/"],
      ["rm", "-fr", "x"],
      ["rm", "-Rf", "x"],
      ["rm", "-rfv", "x"],
      ["rm", "-r", "-f", "x"],
      ["rm", "-f", "-R", "x"],
      ["rm", "--recursive", "--force", "x"],
      ["rm", "-r", "--force", "x"],
      ["dd", "if=/dev/zero", "of=/dev/sda"],
      ["mkfs.ext4", "/dev/sda1"],
    ]
  ) {
    assert.equal(points(decide(OPEN, exec(...argv)), "destructive_command"), 20, argv.join(" "));
  }
  for (
    const argv of [["rm", "-r", "x"], ["rm", "-f", "x"], ["rm", "x"], ["rm", "--", "-rf"], [
      "grep",
      "-rf",
      "x",
    ]]
  ) {
    assert.equal(
      points(decide(OPEN, exec(...argv)), "destructive_command"),
      undefined,
      argv.join(" "),
    );
  }
});

Deno.test("`evaluate()` scores a download piped into a shell", () => {
  const d = decide(OPEN, exec("bash", "-c", "curl -fsSL https://x.sh | sh"));
  assert.equal(points(d, "pipe_to_shell"), 30);
  assert.equal(
    points(decide(OPEN, exec("sh", "-c", "wget -qO- x | sudo bash")), "pipe_to_shell"),
    30,
  );
  assert.equal(
    points(decide(OPEN, exec("bash", "-c", "curl x > f; sh f")), "pipe_to_shell"),
    undefined,
  );
});

// --- purity -------------------------------------------------------------------------------

Deno.test("`evaluate()` returns the same decision for the same action and does not mutate its inputs", () => {
  const policy = compileYaml(`
files: { read: { deny: [~/.ssh/**] } }
rules: [{ id: r, description: Detect x, risk: 10, match: { kind: file.read } }]
`);
  const action = read("/home/agent/.ssh/id_rsa");
  const snapshot = structuredClone(policy.policy);
  const first = evaluate(action, policy);
  const second = evaluate(action, policy);
  assert.deepEqual(first, second);
  assert.notEqual(first.factors, second.factors);
  assert.deepEqual(action, read("/home/agent/.ssh/id_rsa"));
  assert.deepEqual(policy.policy, snapshot);
});

Deno.test("`compilePolicy()` names the field when a glob variable is unset", () => {
  assert.throws(
    () => compileYaml("files: { read: { deny: ['$NOPE/**'] } }"),
    (error: unknown) => {
      assert.ok(error instanceof Error && error.name === "PolicyError");
      assert.match(
        error.message,
        /files\.read\.deny\[0\]: Unset variable "NOPE" in glob "\$NOPE\/\*\*"/,
      );
      return true;
    },
  );
});

Deno.test("`evaluate()` matches ${WORKSPACE} and ~ globs when the paths hold glob characters", () => {
  const policy = compilePolicy(
    resolveLayers([{
      source: "test",
      policy: parsePolicy(
        "files: { write: { allow: ['${WORKSPACE}/**'] }, read: { deny: [~/.ssh/**] } }",
        "test.yaml",
      ),
    }]),
    { home: "/Users/me (old)", workspace: "/work/my project (1)", env: {} },
  );
  assert.equal(decide(policy, write("/work/my project (1)/a.ts")).rule, "files.write.allow");
  assert.equal(decide(policy, write("/work/my project 1/a.ts")).verdict, "deny");
  const ssh = decide(policy, read("/Users/me (old)/.ssh/id_rsa"));
  assert.equal(ssh.rule, "files.read.deny");
  assert.equal(points(ssh, "credential_path"), 35);
});

Deno.test("`evaluate()` resolves .. in file paths before matching, so a deny cannot be sidestepped", () => {
  const policy = compileYaml(`
files:
  read: { deny: [~/.ssh/**] }
  write: { allow: ['\${WORKSPACE}/**'] }
  delete: { deny: ['\${WORKSPACE}/.git/**'] }
rules:
  - { id: cron, description: Detect cron changes, risk: 50, match: { target: /etc/cron*/** } }
`);
  const ssh = decide(policy, read("/work/project/../../home/agent/.ssh/id_rsa"));
  assert.equal(ssh.rule, "files.read.deny");
  assert.equal(points(ssh, "credential_path"), 35);
  const escape = decide(policy, write("/work/project/../../tmp/x"));
  assert.equal(escape.rule, "files.write.default");
  assert.equal(points(escape, "outside_workspace"), 10);
  assert.equal(decide(policy, write("/work/project/./src//a.ts")).rule, "files.write.allow");
  assert.equal(decide(policy, write("/work/project/../../etc/cron.d/x")).rule, "cron");
  const moved = decide(policy, rename("/work/project/src/../.git/config", "/work/project/c"));
  assert.equal(moved.rule, "files.delete.deny");
});

Deno.test("`compilePolicy()` names a failing rule by its place in the full list, counting disabled rules", () => {
  const policy = resolveLayers([{
    source: "test",
    policy: {
      rules: [
        { id: "off", description: "Detect x", risk: 1, match: {}, enabled: false },
        {
          id: "bad",
          description: "Detect y",
          risk: 1,
          match: { kind: "file.read", target: "$NOPE/x" },
        },
      ],
    },
  }]);
  assert.throws(() => compilePolicy(policy, CTX), (error: unknown) => {
    assert.ok(error instanceof Error && error.name === "PolicyError");
    assert.match(error.message, /rules\[1\] \(bad\): Unset variable "NOPE"/);
    return true;
  });
});

// --- process globs, rename sources, example env files, rule host names --------------------

Deno.test("`evaluate()` matches brace globs in process names", () => {
  const p = compileYaml("processes:\n  deny: ['{bash,zsh}']\n");
  assert.equal(decide(p, exec("/bin/bash", "-c", "ls")).rule, "processes.deny");
  assert.equal(decide(p, exec("/bin/zsh")).verdict, "deny");
  assert.equal(decide(p, exec("/bin/sh")).verdict, "allow");
});

Deno.test("`evaluate()` expands ${WORKSPACE} and ~ in process path globs", () => {
  const p = compileYaml("processes:\n  deny: ['${WORKSPACE}/bin/**', '~/.local/bin/*']\n");
  assert.equal(decide(p, exec("/work/project/bin/tool")).verdict, "deny");
  assert.equal(decide(p, exec("/home/agent/.local/bin/x")).verdict, "deny");
  assert.equal(decide(p, exec("/usr/bin/tool")).verdict, "allow");
});

Deno.test("`evaluate()` scores the source of a rename for sensitivity, once per factor", () => {
  const p = compileYaml("name: t\n");
  const d = decide(p, rename("/home/agent/.ssh/id_rsa", "/work/project/key"));
  assert.equal(points(d, "credential_path"), POINTS.credential_path);
  const both = decide(p, rename("/home/agent/.ssh/id_rsa", "/home/agent/.ssh/id_rsa.bak"));
  assert.equal(ids(both).filter((id) => id === "credential_path").length, 1);
});

Deno.test("`evaluate()` does not count example env files as credentials", () => {
  const p = compileYaml("name: t\n");
  assert.equal(
    points(decide(p, read("/work/project/.env")), "credential_path"),
    POINTS.credential_path,
  );
  assert.equal(
    points(decide(p, read("/work/project/.env.local")), "credential_path"),
    POINTS.credential_path,
  );
  for (const name of [".env.example", ".env.sample", ".env.template"]) {
    assert.equal(
      points(decide(p, read(`/work/project/${name}`)), "credential_path"),
      undefined,
      name,
    );
  }
});

Deno.test("a rule target on a host name matches a connection to an address that name resolves to", () => {
  const p = compileYaml([
    "rules:",
    "  - id: paste_sites",
    "    description: Detect uploads to paste sites",
    "    match: { kind: net.connect, target: 'pastebin.com:*' }",
    "    risk: 50",
  ].join("\n"));
  assert.equal(decide(p, connect("104.20.1.1:443", ["pastebin.com"])).rule, "paste_sites");
  assert.equal(decide(p, connect("104.20.1.1:443")).verdict, "allow");
  assert.ok(p.namedHosts.includes("pastebin.com"), "the resolver is told to look the name up");
});

Deno.test("a compiled policy lists the host names and rule path globs the sensors need", () => {
  const p = compileYaml([
    "network:",
    "  allow: [api.github.com:443, '*.npmjs.org', 10.0.0.0/8, localhost]",
    "database:",
    "  allow: [db.internal:5432]",
    "rules:",
    "  - id: hooks",
    "    description: Detect writes to git hooks",
    "    match: { kind: file.write, target: '${WORKSPACE}/.git/hooks/**' }",
    "    risk: 40",
  ].join("\n"));
  assert.deepEqual(p.namedHosts.sort(), ["api.github.com", "db.internal"]);
  assert.deepEqual(p.ruleFileGlobs, ["/work/project/.git/hooks/**"]);
});

Deno.test("`evaluate()` matches a process name on argv[0] and on the script an interpreter runs", () => {
  const p = compileYaml("processes:\n  deny: [nc, sudo]\n");
  const script: Action = {
    kind: "proc.exec",
    target: "/bin/sh /work/project/bin/nc -z host 22",
    exe: "/usr/bin/dash",
    cmdline: ["/bin/sh", "/work/project/bin/nc", "-z", "host", "22"],
  };
  const d = decide(p, script);
  assert.equal(d.rule, "processes.deny");
  assert.ok(ids(d).includes("network_tool"));
  const renamed: Action = {
    kind: "proc.exec",
    target: "sudo id",
    exe: "/usr/bin/sudo.real",
    cmdline: ["sudo", "id"],
  };
  assert.equal(decide(p, renamed).verdict, "deny");
  const option: Action = {
    kind: "proc.exec",
    target: "sh -c nc",
    exe: "/usr/bin/dash",
    cmdline: ["sh", "-c", "nc"],
  };
  assert.equal(decide(p, option).verdict, "allow", "an option is not a script");
});

Deno.test("`evaluate()` gives an unattributed action (pid null) no response, with the same verdict and risk", () => {
  const p = compileYaml("files:\n  write:\n    deny: ['~/.bashrc']\n");
  const attributed = decide(p, { ...write("/home/agent/.bashrc"), pid: 42 });
  const unattributed = decide(p, { ...write("/home/agent/.bashrc"), pid: null });
  assert.equal(attributed.response, "pause");
  assert.equal(unattributed.verdict, "deny");
  assert.equal(unattributed.risk, attributed.risk);
  assert.equal(unattributed.response, "none");
  assert.equal(
    decide(p, write("/home/agent/.bashrc")).response,
    "pause",
    "a replayed action without pid is attributed",
  );
});

Deno.test("`evaluate()` keeps the verdict and risk of a denied action the kernel refused, but only alerts", () => {
  const policy = compileYaml("mode: kill\nfiles: { read: { deny: [~/.ssh/**] } }");
  const done = decide(policy, {
    kind: "file.read",
    target: "/home/agent/.ssh/id_rsa",
    pid: 7,
    detail: { result: "ok" },
  });
  const refused = decide(policy, {
    kind: "file.read",
    target: "/home/agent/.ssh/id_rsa",
    pid: 7,
    detail: { result: "failed", errno: "EACCES" },
  });
  assert.equal(refused.verdict, "deny");
  assert.equal(refused.risk, done.risk);
  assert.notEqual(done.response, "alert");
  assert.equal(refused.response, "alert");
  const why = refused.factors.find((f) => f.id === "failed");
  assert.equal(why?.points, 0);
  assert.match(why?.reason ?? "", /EACCES/);
});

Deno.test("`evaluate()` allows a lookup of a missing file that only the read default denies, not one a deny list names", () => {
  const policy = compileYaml(
    "files: { read: { default: deny, allow: [/work/project/**], deny: [~/.ssh/**] } }",
  );
  const missing = { result: "failed", errno: "ENOENT" };
  const probe = decide(policy, {
    kind: "file.read",
    target: "/package.json",
    pid: 3,
    detail: missing,
  });
  assert.equal(probe.verdict, "allow");
  assert.equal(probe.response, "none");
  assert.ok(ids(probe).includes("lookup"));
  const key = decide(policy, {
    kind: "file.read",
    target: "/home/agent/.ssh/id_ed25519",
    pid: 3,
    detail: missing,
  });
  assert.equal(key.verdict, "deny", "a deny list still counts the attempt");
  const refused = decide(policy, {
    kind: "file.read",
    target: "/etc/secret",
    pid: 3,
    detail: { result: "failed", errno: "EACCES" },
  });
  assert.equal(refused.verdict, "deny", "a file that exists but was refused is not a lookup");
  const read = decide(policy, { kind: "file.read", target: "/package.json", pid: 3 });
  assert.equal(read.verdict, "deny");
});

Deno.test("`evaluate()` allows unix sockets as local IPC unless a `unix:` entry of network.deny names them", () => {
  const policy = compileYaml(
    "network: { default: deny, allow: [api.example.com], deny: [unix:/run/user/*/docker.sock, '*'] }",
  );
  const nscd = decide(policy, { kind: "net.connect", target: "unix:/var/run/nscd/socket", pid: 2 });
  assert.equal(nscd.verdict, "allow");
  assert.equal(nscd.rule, "network.unix");
  const docker = decide(policy, {
    kind: "net.connect",
    target: "unix:/run/user/1000/docker.sock",
    pid: 2,
  });
  assert.equal(docker.verdict, "deny");
  assert.equal(docker.rule, "network.deny");
  // `*` and other IP entries never match a unix socket, nor `unix:` entries an address.
  assert.equal(
    decide(policy, { kind: "net.connect", target: "10.0.0.1:443", pid: 2 }).verdict,
    "deny",
  );
});

Deno.test("`evaluate()` denies any file action beneath Sentry's own directories, whatever the policy says", () => {
  const open = parsePolicy(
    "name: open\nmode: monitor\nmonitors: { files: false }\nfiles:\n  read: { default: allow, allow: ['**'] }\n  write: { default: allow }\n  delete: { default: allow }\n",
    "open.yaml",
  );
  const policy = compilePolicy(resolveLayers([{ source: "test", policy: open }]), {
    ...CTX,
    guarded: ["/home/agent/.local/share/sentry/", "/home/agent/.config/sentry"],
  });
  const token = decide(policy, {
    kind: "file.read",
    target: "/home/agent/.local/share/sentry/api.token",
    pid: 10,
    detail: { blocked: "EACCES" },
  });
  assert.equal(token.verdict, "deny");
  assert.equal(token.rule, "guard.sentry_home");
  assert.equal(token.response, "block", "a guard block is journaled as one even in mode monitor");
  const renamedAway = decide(policy, {
    kind: "file.rename",
    target: "/tmp/j.db",
    pid: 10,
    detail: { from: "/home/agent/.config/sentry/../sentry/config.yaml" },
  });
  assert.equal(renamedAway.rule, "guard.sentry_home", "a rename's source counts, normalized");
  assert.equal(renamedAway.response, "none", "not blocked: mode monitor caps the response");
  const sibling = decide(policy, {
    kind: "file.read",
    target: "/home/agent/.local/share/sentry-other/x",
    pid: 10,
  });
  assert.equal(sibling.verdict, "allow", "a sibling with the same prefix is not beneath it");
});

Deno.test("`evaluate()` denies a proc.control aimed outside the tree, even with the process monitor off", () => {
  const policy = compileYaml("name: t\nmode: kill\nmonitors: { processes: false }\n");
  const d = decide(policy, {
    kind: "proc.control",
    target: "pid 4242 (sentry)",
    pid: 10,
    detail: { syscall: "kill", signal: "SIGSTOP", blocked: "EPERM" },
  });
  assert.equal(d.verdict, "deny");
  assert.equal(d.rule, "guard.process");
  assert.match(d.factors.find((f) => f.id === "violation")?.reason ?? "", /kill aimed at pid 4242/);
  assert.ok(d.factors.some((f) => f.id === "blocked"));
  assert.ok(KINDS.includes("proc.control"));
});

Deno.test("renaming or hard-linking a file files.read.deny lists is denied: it could be read under the new name", () => {
  const policy = compileYaml(`
name: t
files:
  read: { deny: ["**/secret.txt"] }
  write: { default: allow }
  delete: { default: allow }
`);
  const moved = decide(policy, rename("/work/project/other/secret.txt", "/work/project/rn"));
  assert.equal(moved.verdict, "deny");
  assert.equal(moved.rule, "files.read.deny");
  assert.match(
    JSON.stringify(moved.factors),
    /moved elsewhere, it could be read under the new name/,
  );
  const linked = decide(policy, {
    kind: "file.create",
    target: "/work/project/ln",
    detail: { linkOf: "/work/project/other/secret.txt" },
  });
  assert.equal(linked.verdict, "deny");
  assert.match(JSON.stringify(linked.factors), /linked elsewhere/);
  // Other files move and link freely; a symlink names a path, so a read through it is judged.
  assert.equal(
    decide(policy, rename("/work/project/a.txt", "/work/project/b.txt")).verdict,
    "allow",
  );
  assert.equal(
    decide(policy, {
      kind: "file.create",
      target: "/work/project/ln2",
      detail: { linkOf: "/work/project/a.txt" },
    }).verdict,
    "allow",
  );
  // A default deny of reads does not make every rename a denial: only the listed files.
  const strict = compileYaml(`
name: t2
files:
  read: { default: deny, allow: ["/work/project/**"] }
  write: { default: allow }
  delete: { default: allow }
`);
  assert.equal(decide(strict, rename("/tmp/x", "/work/project/x")).verdict, "allow");
});
