import assert from "node:assert/strict";
import { compilePolicy, parsePolicy } from "../policy/mod.ts";
import { resolveLayers } from "../policy/resolve.ts";
import {
  decideGuard,
  type GuardGlob,
  guardGlobs,
  isLoader,
  literalPrefix,
  planGuardMarks,
  SessionPids,
} from "./fanotify_guard_plan.ts";

const HOME = "/home/u";
const CONTEXT = { home: HOME, workspace: "/w", env: {} };
const CALLER = { pid: 40, tid: 41, ppid: 1, exe: "/usr/bin/python3", cmdline: ["python3"] };

function policy(yaml: string, guarded: string[] = []) {
  const file = parsePolicy(yaml, "test.yaml");
  return compilePolicy(resolveLayers([{ source: "test", policy: file }]), {
    ...CONTEXT,
    guarded,
  });
}

function glob(text: string, label = text): GuardGlob {
  return { glob: text, label, access: ["read"] };
}

Deno.test("literalPrefix() is the path before the first wildcard, recursive unless one segment follows", () => {
  assert.deepEqual(literalPrefix("/home/u/.ssh/**"), { path: "/home/u/.ssh", recursive: true });
  assert.deepEqual(literalPrefix("/home/u/.ssh/id_*"), { path: "/home/u/.ssh", recursive: false });
  assert.deepEqual(literalPrefix("/etc/{a,b}/key"), { path: "/etc", recursive: true });
  assert.deepEqual(literalPrefix("/home/u/.netrc"), { path: "/home/u/.netrc", recursive: true });
  assert.deepEqual(literalPrefix("/w/my project \\(1\\)/**"), {
    path: "/w/my project (1)",
    recursive: true,
  });
  assert.equal(literalPrefix("**/.env")?.path, "");
});

Deno.test("planGuardMarks() marks literal prefixes and folds those beneath a recursive one", () => {
  const plan = planGuardMarks([
    glob("/home/u/.ssh/**", 'files.read.deny "~/.ssh/**"'),
    glob("/home/u/.ssh/keys/*.pem", "rules.pem"),
    glob("/home/u/.aws/credentials"),
    glob("/srv/secrets/*.key"),
    glob("/srv/secrets/*.pem"),
  ], { home: HOME });
  assert.deepEqual(plan.targets, [
    { path: "/home/u/.aws/credentials", recursive: true, labels: ["/home/u/.aws/credentials"] },
    {
      path: "/home/u/.ssh",
      recursive: true,
      labels: ['files.read.deny "~/.ssh/**"', "rules.pem"],
    },
    {
      path: "/srv/secrets",
      recursive: false,
      labels: ["/srv/secrets/*.key", "/srv/secrets/*.pem"],
    },
  ]);
  assert.deepEqual(plan.unenforceable, []);
  assert.deepEqual(plan.notices, []);
});

Deno.test("planGuardMarks() names each glob it cannot mark: no prefix, /, the home, /proc", () => {
  const plan = planGuardMarks([
    glob("**/.env", 'files.read.deny "**/.env"'),
    glob("/*/secret", 'files.read.deny "/*/secret"'),
    glob("/home/u/**/*.pem", 'files.read.deny "~/**/*.pem"'),
    glob("/proc/*/environ", "rules.environ"),
    glob("/home/u/.ssh/**"),
  ], { home: HOME });
  assert.deepEqual(plan.targets.map((t) => t.path), ["/home/u/.ssh"]);
  assert.deepEqual(plan.unenforceable.map((u) => u.label), [
    'files.read.deny "**/.env"',
    'files.read.deny "/*/secret"',
    'files.read.deny "~/**/*.pem"',
    "rules.environ",
  ]);
  assert.equal(plan.notices.length, 4);
  assert.ok(plan.notices.every((n) => n.type === "warn"));
  assert.match(plan.notices[0]!.message, /^files\.read\.deny "\*\*\/\.env" cannot be enforced/);
  assert.match(plan.notices[2]!.message, /home directory/);
});

Deno.test("guardGlobs() takes deny lists, file and exec rules, processes.deny paths and Sentry's own directories", () => {
  const p = policy(
    `mode: block
files:
  read: { deny: ["~/.ssh/**"] }
  write: { deny: ["/etc/**"] }
  delete: { deny: ["/w/keep/**"] }
processes:
  deny: ["/opt/tools/nc", { name: "curl" }]
rules:
  - id: no_pem
    description: Detect reading pem files
    risk: 80
    match: { kind: file.read, target: "/srv/*.pem" }
  - id: no_delete
    description: Detect deletes of the archive
    risk: 80
    match: { kind: file.delete, target: "/archive/**" }
`,
    ["/home/u/.sentry"],
  );
  const { globs, notices } = guardGlobs(p, CONTEXT);
  assert.deepEqual(globs.map((g) => [g.glob, g.label, g.access]), [
    ["/home/u/.ssh/**", 'files.read.deny "~/.ssh/**"', ["read"]],
    ["/etc/**", 'files.write.deny "/etc/**"', ["write"]],
    ["/srv/*.pem", "rules.no_pem", ["read"]],
    ["/opt/tools/nc", 'processes.deny "/opt/tools/nc"', ["exec"]],
    ["/home/u/.sentry", "guard.sentry_home", ["read", "write", "exec"]],
  ]);
  const text = notices.map((n) => n.message).join("\n");
  assert.match(text, /files\.delete: fanotify has no permission event for deletes or renames/);
  assert.match(text, /rules\.no_delete: deletes and renames cannot be stopped/);
  assert.match(text, /processes\.deny "\{"name":"curl"\}": an exec by name has no path/);
});

Deno.test("guardGlobs() says a default-deny section cannot be held", () => {
  const p = policy("mode: block\nfiles: { read: { default: deny, allow: [/w/**] } }");
  const { notices } = guardGlobs(p, CONTEXT);
  assert.ok(notices.some((n) => /files\.read\.default: deny cannot be held/.test(n.message)));
});

Deno.test("decideGuard() blocks a read of a denied key with EPERM and lets other reads through", () => {
  const p = policy("mode: block\nfiles: { read: { deny: [~/.ssh/id_*] } }");
  const denied = decideGuard({ op: "open", flags: 0o2000000, syscall: "openat" }, {
    path: "/home/u/.ssh/id_rsa",
    caller: CALLER,
    policy: p,
  });
  assert.equal(denied.blocked, true);
  assert.equal(denied.event.kind, "file.read");
  assert.equal(denied.event.sensor, "fanotify_guard");
  assert.equal(denied.event.detail.blocked, "EPERM");
  assert.equal(denied.event.detail.result, "failed");
  assert.equal(denied.event.detail.tid, 41);
  const fine = decideGuard({ op: "open", flags: 0, syscall: "openat" }, {
    path: "/home/u/.ssh/known_hosts",
    caller: CALLER,
    policy: p,
  });
  assert.equal(fine.blocked, false);
  assert.equal(fine.event.detail.blocked, undefined);
});

Deno.test("decideGuard() makes an open with O_WRONLY, O_RDWR or O_TRUNC a write", () => {
  const p = policy("mode: block\nfiles: { write: { deny: [/etc/**] } }");
  const at = (flags: number) =>
    decideGuard({ op: "open", flags, syscall: "openat" }, {
      path: "/etc/hosts",
      caller: CALLER,
      policy: p,
    });
  assert.equal(at(0).event.kind, "file.read");
  assert.equal(at(0).blocked, false);
  for (const flags of [1, 2, 0o1000]) {
    assert.equal(at(flags).event.kind, "file.write");
    assert.equal(at(flags).blocked, true);
  }
});

Deno.test("decideGuard() decides an open with unknown flags as a read and as a write", () => {
  const p = policy("mode: block\nfiles: { write: { deny: [/etc/**] } }");
  const d = decideGuard({ op: "open", flags: null, syscall: "syscall 426" }, {
    path: "/etc/hosts",
    caller: CALLER,
    policy: p,
  });
  assert.equal(d.blocked, true);
  assert.equal(d.event.kind, "file.write");
  assert.equal(d.event.detail.flagsUnknown, true);
});

Deno.test("decideGuard() blocks an exec of a denied path as proc.exec", () => {
  const p = policy("mode: block\nprocesses: { deny: [/opt/tools/nc] }");
  const d = decideGuard({ op: "exec", syscall: "execve" }, {
    path: "/opt/tools/nc",
    caller: CALLER,
    policy: p,
  });
  assert.equal(d.event.kind, "proc.exec");
  assert.equal(d.blocked, true);
  assert.equal(d.rule, "processes.deny");
});

Deno.test("decideGuard() lets a denial below block through, but Sentry's guard holds in every mode", () => {
  const alert = policy("mode: alert\nfiles: { read: { deny: [~/.ssh/**] } }");
  const read = { op: "open", flags: 0, syscall: "openat" } as const;
  assert.equal(
    decideGuard(read, { path: "/home/u/.ssh/id_rsa", caller: CALLER, policy: alert }).blocked,
    false,
  );
  const monitor = policy("mode: monitor", ["/home/u/.sentry"]);
  const d = decideGuard(read, { path: "/home/u/.sentry/token", caller: CALLER, policy: monitor });
  assert.equal(d.blocked, true);
  assert.equal(d.rule, "guard.sentry_home");
});

Deno.test("SessionPids is shared between views of one buffer and bounded by pid_max", () => {
  const pids = new SessionPids(32768);
  const view = new SessionPids(pids.buffer);
  assert.equal(pids.add(4242), true);
  assert.equal(view.has(4242), true);
  view.delete(4242);
  assert.equal(pids.has(4242), false);
  assert.equal(pids.add(32768), false);
  assert.equal(pids.has(0), false);
  assert.equal(pids.pidMax, 32768);
});

Deno.test("isLoader() recognises dynamic loaders", () => {
  assert.equal(isLoader("/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2"), true);
  assert.equal(isLoader("/lib/ld-musl-x86_64.so.1"), true);
  assert.equal(isLoader("/usr/bin/ld"), false);
});
