import assert from "node:assert/strict";
import type { AgentEvent, Kind } from "../events/mod.ts";
import { compilePolicy } from "./compile.ts";
import { evaluate } from "./evaluate.ts";
import {
  collapseHosts,
  collapsePaths,
  PolicyLearner,
  processEntry,
  registrableDomain,
  writePath,
} from "./learn.ts";
import { loadPolicy, parsePolicy } from "./loader.ts";

const HOME = "/home/agent";
const WS = "/work/project";

Deno.test("collapsePaths() keeps a directory's paths exact up to the threshold", () => {
  const paths = [1, 2, 3, 4, 5].map((i) => `\${WORKSPACE}/src/f${i}.ts`);
  assert.deepEqual(collapsePaths(paths, { threshold: 5 }), paths.sort());
});

Deno.test("collapsePaths() collapses a directory past the threshold: * for files, ** with subdirectories", () => {
  const files = [1, 2, 3, 4, 5, 6].map((i) => `\${WORKSPACE}/src/f${i}.ts`);
  assert.deepEqual(collapsePaths(files, { threshold: 5 }), ["${WORKSPACE}/src/*"]);
  const mixed = [...files.slice(0, 5), "${WORKSPACE}/src/lib/deep.ts"];
  assert.deepEqual(collapsePaths(mixed, { threshold: 5 }), ["${WORKSPACE}/src/**"]);
  // Siblings are counted per directory: six files spread over two directories stay exact.
  const spread = [1, 2, 3].flatMap((i) => [`/opt/a/x/${i}`, `/opt/a/y/${i}`]);
  assert.equal(collapsePaths(spread, { threshold: 5 }).length, 6);
});

Deno.test("collapsePaths() never collapses /, a top-level directory or the home itself", () => {
  const top = ["usr", "etc", "opt", "srv", "var", "mnt", "boot"].map((d) => `/${d}/x`);
  assert.deepEqual(collapsePaths(top, { threshold: 2 }), top.sort());
  const usr = [1, 2, 3, 4].map((i) => `/usr/d${i}`);
  assert.deepEqual(collapsePaths(usr, { threshold: 2 }), usr.sort());
  const lib = [1, 2, 3, 4].map((i) => `/usr/lib/d${i}/x.so`);
  assert.deepEqual(collapsePaths(lib, { threshold: 2 }), ["/usr/lib/**"]);
  const home = [1, 2, 3, 4].map((i) => `~/.d${i}`);
  assert.deepEqual(collapsePaths(home, { threshold: 2 }), home.sort());
  const cache = [1, 2, 3, 4].map((i) => `~/.cache/d${i}`);
  assert.deepEqual(collapsePaths(cache, { threshold: 2 }), ["~/.cache/*"]);
  // Scratch directories collapse at their root: their children are throw-away names.
  const tmp = [1, 2, 3, 4].map((i) => `/tmp/tmp${i}/f`);
  assert.deepEqual(collapsePaths(tmp, { threshold: 2 }), ["/tmp/**"]);
});

Deno.test("collapsePaths() escapes glob characters and a $ that would start a variable", () => {
  const out = collapsePaths(["/srv/app/a (1)[x].txt", "/srv/app/$HOME.txt"], { threshold: 5 });
  assert.deepEqual(out, ["/srv/app/?HOME.txt", "/srv/app/a \\(1\\)\\[x\\].txt"]);
});

Deno.test("collapsePaths() keeps a directory that was itself read, besides its collapsed glob", () => {
  const out = collapsePaths(["${WORKSPACE}", "${WORKSPACE}/a", "${WORKSPACE}/b"], { threshold: 1 });
  assert.deepEqual(out, ["${WORKSPACE}", "${WORKSPACE}/*"]);
});

Deno.test("writePath() writes the workspace as ${WORKSPACE}, the home as ~, the rest absolute", () => {
  assert.equal(writePath(`${WS}/src/a.ts`, WS, HOME), "${WORKSPACE}/src/a.ts");
  assert.equal(writePath(`${HOME}/.cache/x`, WS, HOME), "~/.cache/x");
  assert.equal(writePath(`${HOME}/proj/a`, `${HOME}/proj`, HOME), "${WORKSPACE}/a");
  assert.equal(writePath("/usr/lib/x", WS, HOME), "/usr/lib/x");
  assert.equal(writePath(`${WS}x/a`, WS, HOME), `${WS}x/a`);
  assert.equal(writePath("relative", WS, HOME), null);
});

Deno.test("collapseHosts() writes *.domain once enough subdomains were seen on a port", () => {
  const eps = ["api.github.com", "codeload.github.com", "objects.github.com"].map((host) => ({
    host,
    port: 443,
  }));
  assert.deepEqual(collapseHosts([...eps, { host: "github.com", port: 443 }], 3), [
    "*.github.com:443",
    "github.com:443",
  ]);
  assert.deepEqual(collapseHosts(eps.slice(0, 2), 3), [
    "api.github.com:443",
    "codeload.github.com:443",
  ]);
  // A different port is a different endpoint; addresses stay exact; IPv6 gets brackets.
  assert.deepEqual(
    collapseHosts([...eps, { host: "api.github.com", port: 22 }, { host: "10.0.0.1", port: 5432 }, {
      host: "::1",
      port: 8080,
    }], 3),
    ["*.github.com:443", "10.0.0.1:5432", "[::1]:8080", "api.github.com:22"],
  );
});

Deno.test("registrableDomain() takes two labels, three under a co.uk-style suffix", () => {
  assert.equal(registrableDomain("a.b.example.com"), "example.com");
  assert.equal(registrableDomain("www.bbc.co.uk"), "bbc.co.uk");
  assert.equal(registrableDomain("example.com"), "example.com");
});

Deno.test("processEntry() pins stable arguments and leaves varying ones free", () => {
  const args = (...a: string[]) => new Map(a.map((x) => [x, 1]));
  assert.deepEqual(processEntry("git", args("status", "diff --stat"), 3), {
    name: "git",
    args: "^(?:diff --stat|status)$",
  });
  assert.deepEqual(processEntry("git", args("log -1", "log -2", "log -3", "show x"), 3), {
    name: "git",
    args: "^(?:log|show)(?: |$)",
  });
  assert.equal(processEntry("cat", args("a", "b", "c", "d"), 3), "cat");
  assert.equal(processEntry("python3", new Map(), 3), "python3");
  // Regex characters in arguments are escaped; glob characters in names too.
  const e = processEntry("c++", args("-o a.out x.c"), 3);
  assert.deepEqual(e, { name: "c\\+\\+", args: "^(?:-o a\\.out x\\.c)$" });
  assert.ok(new RegExp((e as { args: string }).args).test("-o a.out x.c"));
});

let seq = 0;

function event(kind: Kind, target: string, extra: Partial<AgentEvent> = {}): AgentEvent {
  seq++;
  return {
    id: `01J0000000000000000000${String(seq).padStart(4, "0")}`,
    ts: "2026-12-01T00:00:00.000Z",
    session: "S1",
    agent: "python3",
    pid: 100,
    ppid: 1,
    exe: "/usr/bin/python3",
    cmdline: ["python3", "agent.py"],
    kind,
    target,
    detail: {},
    sensor: "ebpf",
    verdict: "allow",
    risk: 0,
    factors: [],
    rule: "files.read.default",
    response: "none",
    ...extra,
  };
}

/** A coding agent's session: reads, writes, programs, hosts, a database, and a few denials. */
function sessionEvents(): AgentEvent[] {
  const out: AgentEvent[] = [];
  for (let i = 0; i < 12; i++) out.push(event("file.read", `${WS}/src/m${i}.py`));
  for (let i = 0; i < 3; i++) out.push(event("file.write", `${WS}/out/r${i}.json`));
  out.push(event("file.read", `${HOME}/.ssh/id_rsa`));
  out.push(event("file.read", `${WS}/.env`));
  out.push(event("file.read", `${WS}/.env.example`));
  out.push(event("file.write", "/etc/motd"));
  out.push(event("file.write", "/srv/report.txt"));
  out.push(event("file.rename", `${WS}/b.txt`, { detail: { from: `${WS}/a.txt` } }));
  out.push(
    event("file.read", `${WS}/missing.py`, { detail: { result: "failed", errno: "ENOENT" } }),
  );
  for (const args of [["status"], ["diff"], ["status"]]) {
    out.push(event("proc.exec", `git ${args.join(" ")}`, {
      exe: "/usr/bin/git",
      cmdline: ["git", ...args],
    }));
  }
  out.push(event("proc.exec", "ssh host", { exe: "/usr/bin/ssh", cmdline: ["ssh", "host"] }));
  for (const host of ["api.github.com", "codeload.github.com", "objects.github.com"]) {
    out.push(event("net.connect", "140.82.112.3:443", { detail: { hosts: [host] } }));
  }
  out.push(event("net.connect", "203.0.113.7:443"));
  out.push(event("net.connect", "169.254.169.254:80"));
  out.push(event("db.connect", "127.0.0.1:5432"));
  out.push(event("proc.exit", "git", { exe: "/usr/bin/git", cmdline: ["git"] }));
  return out;
}

Deno.test("PolicyLearner writes a valid policy that allows what the session did and keeps the template's denials", async () => {
  const template = compilePolicy(await loadPolicy("coding-agent"), {
    home: HOME,
    workspace: WS,
    env: {},
  });
  const learner = new PolicyLearner({ home: HOME });
  const events = sessionEvents();
  const session = { id: "S1", agent: "python3", workspace: WS, template };
  for (const e of events) learner.add(e, session);
  const text = learner.render({ name: "learned", extends: "coding-agent" });
  // Deterministic: the same events in another order give the same text.
  const again = new PolicyLearner({ home: HOME });
  for (const e of [...events].reverse()) again.add(e, session);
  assert.equal(again.render({ name: "learned", extends: "coding-agent" }), text);

  parsePolicy(text, "learned.yaml");
  const learned = compilePolicy(
    await loadPolicy("/virtual/learned.yaml", {
      readFile: (p) => p === "/virtual/learned.yaml" ? Promise.resolve(text) : Deno.readTextFile(p),
    }),
    { home: HOME, workspace: WS, env: {} },
  );
  // Replaying the session: denied exactly where the template denies.
  for (const e of events) {
    assert.equal(
      evaluate(e, learned).verdict,
      evaluate(e, template).verdict,
      `${e.kind} ${e.target}: ${JSON.stringify(evaluate(e, learned))}`,
    );
  }
  const denied = events.filter((e) => evaluate(e, template).verdict === "deny").map((e) =>
    e.target
  );
  assert.deepEqual(
    denied.sort(),
    [
      "/etc/motd",
      "/srv/report.txt",
      "169.254.169.254:80",
      "203.0.113.7:443",
      `${HOME}/.ssh/id_rsa`,
      `${WS}/.env`,
      "ssh host",
    ].sort(),
  );
  assert.match(text, /"\$\{WORKSPACE\}\/src\/\*"/);
  assert.match(text, /"\*\.github\.com:443"/);
  assert.match(text, /\{ name: "git", args: "\^\(\?:diff\|status\)\$" \}/);
  assert.match(text, /"127\.0\.0\.1:5432"/);
  assert.doesNotMatch(text, /missing\.py/, "a failed lookup needs no allow entry");
  // Denials are comments with counts, never entries.
  assert.match(text, /^# files\.read\.deny "~\/\.ssh\/\*\*": 1 action\(s\)/m);
  assert.match(text, /^# rules "read_dotenv": 1 action\(s\)/m);
  assert.match(text, /^# processes\.deny "ssh": 1 action\(s\)/m);
  assert.match(text, /^# network\.default: 1 action\(s\)/m);
  assert.match(text, /^# {3}- "203\.0\.113\.7:443"/m);
  assert.match(text, /^# files\.write\.default: 1 action\(s\)/m);
  assert.match(text, /^# {3}- "\/srv\/report\.txt"/m);
  assert.doesNotMatch(text.split("# ---- Denied")[0] ?? "", /id_rsa|\/etc\/motd|report|\.env"|ssh/);

  // The commented-out rule override, uncommented, exempts the .env read and nothing else.
  const block = text.split("\n").filter((l) => /^#( |$)/.test(l));
  const start = block.findIndex((l) => l === "# rules:");
  assert.ok(start >= 0, "a commented-out rule override");
  const override: string[] = [];
  for (const l of block.slice(start)) {
    if (l === "#") break;
    override.push(l.replace(/^# ?/, ""));
  }
  const withOverride = text + override.join("\n") + "\n";
  const exempted = compilePolicy(
    await loadPolicy("/virtual/o.yaml", {
      readFile: (p) =>
        p === "/virtual/o.yaml" ? Promise.resolve(withOverride) : Deno.readTextFile(p),
    }),
    { home: HOME, workspace: WS, env: {} },
  );
  // Exempt from the rule, the read meets the learned read section (default deny): a person
  // who wants it allowed adds it there too.
  assert.equal(evaluate(event("file.read", `${WS}/.env`), exempted).rule, "files.read.default");
  assert.equal(evaluate(event("file.read", `${WS}/sub/.env`), exempted).rule, "read_dotenv");
});

Deno.test("PolicyLearner makes each learned section default deny: what the session never did is denied", async () => {
  const template = compilePolicy(await loadPolicy("coding-agent"), {
    home: HOME,
    workspace: WS,
    env: {},
  });
  const learner = new PolicyLearner({ home: HOME });
  for (const e of sessionEvents()) {
    learner.add(e, { id: "S1", agent: "python3", workspace: WS, template });
  }
  const text = learner.render({ name: "learned", extends: "coding-agent" });
  const learned = compilePolicy(
    await loadPolicy("/virtual/learned.yaml", {
      readFile: (p) => p === "/virtual/learned.yaml" ? Promise.resolve(text) : Deno.readTextFile(p),
    }),
    { home: HOME, workspace: WS, env: {} },
  );
  const other = (kind: Kind, target: string, extra: Partial<AgentEvent> = {}) =>
    evaluate(event(kind, target, extra), learned);
  assert.equal(other("file.read", "/srv/data/x").verdict, "deny");
  assert.equal(other("file.read", `${WS}/docs/x.md`).verdict, "deny");
  assert.equal(other("file.read", `${WS}/src/new.py`).verdict, "allow");
  assert.equal(other("net.connect", "198.51.100.1:443").verdict, "deny");
  const curl = other("proc.exec", "curl x", { exe: "/usr/bin/curl", cmdline: ["curl", "x"] });
  assert.equal(curl.verdict, "deny");
  const push = other("proc.exec", "git push", { exe: "/usr/bin/git", cmdline: ["git", "push"] });
  assert.equal(push.verdict, "deny");
  // The template's own allow lists still hold.
  assert.equal(other("file.write", "/tmp/scratch.txt").verdict, "allow");
});
