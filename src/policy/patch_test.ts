import assert from "node:assert/strict";
import { compilePolicy } from "./compile.ts";
import { PolicyError } from "./errors.ts";
import { evaluate } from "./evaluate.ts";
import { parsePolicy } from "./loader.ts";
import {
  applyPatch,
  type InlinePatch,
  MONITOR_FLAGS,
  type MonitorFlag,
  splitList,
} from "./patch.ts";
import { resolveLayers } from "./resolve.ts";
import type { ResolvedPolicy } from "./schema.ts";

const CTX = { home: "/home/agent", workspace: "/work/project", env: {} };

function resolveYaml(yaml: string): ResolvedPolicy {
  return resolveLayers([{ source: "test", policy: parsePolicy(yaml, "test.yaml") }]);
}

const BASE = resolveYaml(`
files:
  read: { deny: [~/.ssh/**] }
  write: { allow: ['\${WORKSPACE}/**'] }
network: { allow: [api.github.com:443] }
`);

/** Asserts that applying the patch throws a `PolicyError` naming the flag and the value. */
function rejects(patch: InlinePatch, flag: string, value: string): void {
  assert.throws(() => applyPatch(BASE, patch), (error: unknown) => {
    assert.ok(error instanceof PolicyError, `expected a PolicyError, got ${error}`);
    assert.equal(error.field, flag);
    assert.ok(
      error.message.startsWith(`Invalid ${flag} "${value}": `),
      `"${error.message}" names ${flag} and "${value}"`,
    );
    assert.ok(!error.message.endsWith("."));
    return true;
  });
}

Deno.test("`applyPatch()` with an empty patch returns an equal but separate policy", () => {
  const out = applyPatch(BASE, {});
  assert.deepEqual(out, BASE);
  assert.notEqual(out, BASE);
  assert.notEqual(out.files.read.allow, BASE.files.read.allow);
});

Deno.test("`applyPatch()` --allow adds the glob to the read and write allow lists", () => {
  const out = applyPatch(BASE, { allow: ["/data/**", "~/notes/**"] });
  assert.deepEqual(out.files.read.allow, ["/data/**", "~/notes/**"]);
  assert.deepEqual(out.files.write.allow, ["${WORKSPACE}/**", "/data/**", "~/notes/**"]);
  assert.deepEqual(out.files.delete.allow, []);
});

Deno.test("`applyPatch()` --allow on an open section keeps it open", () => {
  assert.equal(BASE.files.read.default, "allow");
  const out = applyPatch(BASE, { allow: ["/data/**"] });
  assert.equal(out.files.read.default, "allow");
  assert.equal(out.files.write.default, "deny");
  const compiled = compilePolicy(out, CTX);
  const d = evaluate({ kind: "file.read", target: "/usr/share/dict/words" }, compiled);
  assert.equal(d.verdict, "allow");
  assert.equal(d.rule, "files.read.default");
});

Deno.test("`applyPatch()` --allow cannot override a deny", () => {
  const out = applyPatch(BASE, { allow: ["~/.ssh/**"] });
  const compiled = compilePolicy(out, CTX);
  const d = evaluate({ kind: "file.read", target: "/home/agent/.ssh/id_rsa" }, compiled);
  assert.equal(d.verdict, "deny");
  assert.equal(d.rule, "files.read.deny");
});

Deno.test("`applyPatch()` --allow admits a write the section's default denied", () => {
  const compiled = compilePolicy(applyPatch(BASE, { allow: ["/tmp/**"] }), CTX);
  const d = evaluate({ kind: "file.write", target: "/tmp/out.txt" }, compiled);
  assert.equal(d.verdict, "allow");
  assert.equal(d.rule, "files.write.allow");
});

Deno.test("`applyPatch()` --block adds the glob to the read, write and delete deny lists", () => {
  const out = applyPatch(BASE, { block: ["${WORKSPACE}/secrets/**"] });
  assert.deepEqual(out.files.read.deny, ["~/.ssh/**", "${WORKSPACE}/secrets/**"]);
  assert.deepEqual(out.files.write.deny, ["${WORKSPACE}/secrets/**"]);
  assert.deepEqual(out.files.delete.deny, ["${WORKSPACE}/secrets/**"]);
  const compiled = compilePolicy(out, CTX);
  for (const kind of ["file.read", "file.write", "file.delete"] as const) {
    const d = evaluate({ kind, target: "/work/project/secrets/a" }, compiled);
    assert.equal(d.verdict, "deny", kind);
    assert.match(d.rule, /\.deny$/);
  }
});

Deno.test("`applyPatch()` --allow-hosts and --block-hosts add network entries; block beats allow", () => {
  const out = applyPatch(BASE, {
    allowHosts: ["*.npmjs.org", "10.0.0.0/8"],
    blockHosts: ["10.0.0.13", ":25"],
  });
  assert.deepEqual(out.network.allow, ["api.github.com:443", "*.npmjs.org", "10.0.0.0/8"]);
  assert.deepEqual(out.network.deny, ["10.0.0.13", ":25"]);
  assert.equal(out.network.default, "deny");
  const compiled = compilePolicy(out, CTX);
  const connect = (target: string) => evaluate({ kind: "net.connect", target }, compiled);
  assert.equal(connect("10.0.0.12:443").verdict, "allow");
  assert.equal(connect("10.0.0.13:443").rule, "network.deny");
  assert.equal(connect("10.0.0.12:25").rule, "network.deny");
});

Deno.test("`applyPatch()` --allow-hosts on an open network section keeps it open", () => {
  const open = resolveYaml("");
  const out = applyPatch(open, { allowHosts: ["api.github.com"] });
  assert.equal(out.network.default, "allow");
});

Deno.test("`applyPatch()` --max-risk N pauses above N and keeps the thresholds in order", () => {
  for (const n of [0, 1, 10, 29, 30, 45, 59, 60, 84, 85, 99, 100]) {
    const t = applyPatch(BASE, { maxRisk: n }).thresholds;
    assert.equal(t.pause, n + 1, `pause for ${n}`);
    assert.ok(t.alert <= t.pause, `alert <= pause for ${n}`);
    assert.ok(t.pause <= t.rollback, `pause <= rollback for ${n}`);
    assert.ok(t.rollback <= t.kill, `rollback <= kill for ${n}`);
  }
  assert.deepEqual(applyPatch(BASE, { maxRisk: 45 }).thresholds, {
    alert: 30,
    pause: 46,
    rollback: 85,
    kill: 101,
  });
  assert.deepEqual(applyPatch(BASE, { maxRisk: 10 }).thresholds, {
    alert: 11,
    pause: 11,
    rollback: 85,
    kill: 101,
  });
  assert.deepEqual(applyPatch(BASE, { maxRisk: 90 }).thresholds, {
    alert: 30,
    pause: 91,
    rollback: 91,
    kill: 101,
  });
});

Deno.test("`applyPatch()` --max-risk raises kill when rollback passes it", () => {
  const policy = resolveYaml("thresholds: { alert: 10, pause: 20, rollback: 30, kill: 40 }");
  assert.deepEqual(applyPatch(policy, { maxRisk: 50 }).thresholds, {
    alert: 10,
    pause: 51,
    rollback: 51,
    kill: 51,
  });
});

Deno.test("`applyPatch()` --max-risk decides when a denied action pauses", () => {
  const policy = resolveYaml(`
mode: kill
rules: [{ id: r, description: Detect exits, risk: 50, match: { kind: proc.exit } }]
`);
  const response = (maxRisk: number) =>
    evaluate(
      { kind: "proc.exit", target: "x" },
      compilePolicy(applyPatch(policy, { maxRisk }), CTX),
    ).response;
  assert.equal(response(50), "alert");
  assert.equal(response(49), "pause");
});

Deno.test("`applyPatch()` --mode sets the mode", () => {
  assert.equal(applyPatch(BASE, { mode: "monitor" }).mode, "monitor");
  assert.equal(applyPatch(BASE, { mode: "kill" }).mode, "kill");
});

Deno.test("`applyPatch()` --no-* switches off the matching monitor only", () => {
  for (const [flag, monitor] of Object.entries(MONITOR_FLAGS)) {
    const out = applyPatch(BASE, { off: [flag as MonitorFlag] });
    for (const [name, on] of Object.entries(out.monitors)) {
      assert.equal(on, name !== monitor, `--no-${flag}: ${name}`);
    }
  }
  const compiled = compilePolicy(applyPatch(BASE, { off: ["fs"] }), CTX);
  const d = evaluate({ kind: "file.read", target: "/home/agent/.ssh/id_rsa" }, compiled);
  assert.equal(d.verdict, "allow");
  assert.equal(d.rule, "monitors.files");
});

Deno.test("`applyPatch()` rejects a bad path glob, naming the flag and the value", () => {
  rejects({ allow: ["src/**"] }, "--allow", "src/**");
  rejects({ allow: ["/a/{b"] }, "--allow", "/a/{b");
  rejects({ block: ["*.pem"] }, "--block", "*.pem");
  rejects({ block: ["/a/[b"] }, "--block", "/a/[b");
});

Deno.test("`applyPatch()` rejects a bad network entry, naming the flag and the value", () => {
  rejects({ allowHosts: ["10.0.0.0/33"] }, "--allow-hosts", "10.0.0.0/33");
  rejects({ allowHosts: ["exa mple.com"] }, "--allow-hosts", "exa mple.com");
  rejects({ blockHosts: [":0"] }, "--block-hosts", ":0");
  rejects({ blockHosts: ["localhost:9-3"] }, "--block-hosts", "localhost:9-3");
});

Deno.test("`applyPatch()` rejects a --max-risk that is not a whole number from 0 to 100", () => {
  for (const n of [-1, 101, 1.5, Number.NaN, Infinity]) {
    rejects({ maxRisk: n }, "--max-risk", String(n));
  }
});

Deno.test("`applyPatch()` does not mutate the policy it is given, even when it fails", () => {
  const snapshot = structuredClone(BASE);
  applyPatch(BASE, {
    allow: ["/data/**"],
    block: ["/secret/**"],
    allowHosts: ["a.com"],
    blockHosts: ["b.com"],
    maxRisk: 10,
    mode: "kill",
    off: ["fs", "net", "proc", "cpu", "mem", "db"],
  });
  assert.throws(() => applyPatch(BASE, { allow: ["/ok/**"], block: ["bad"] }), PolicyError);
  assert.deepEqual(BASE, snapshot);
});

Deno.test("`splitList()` splits comma-separated values, trims them and drops empties", () => {
  assert.deepEqual(splitList(["a.com,b.com", " c.com , ,d.com ", ""]), [
    "a.com",
    "b.com",
    "c.com",
    "d.com",
  ]);
  assert.deepEqual(splitList([]), []);
  assert.deepEqual(splitList([",,"]), []);
});
