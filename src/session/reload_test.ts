import assert from "node:assert/strict";
import { join } from "node:path";
import { compilePolicy, loadPolicy, type ResolvedPolicy } from "../policy/mod.ts";
import {
  checkReload,
  type LivePolicy,
  policyHash,
  reloadRequestPath,
  takeReloadRequest,
  widenings,
  writeReloadRequest,
} from "./reload.ts";

const HOME = "/home/u";
const WORKSPACE = "/work/ws";

/** Loads a policy from YAML text (extending the built-in templates) and compiles it. */
async function live(text: string): Promise<LivePolicy & { resolved: ResolvedPolicy }> {
  const resolved = await loadPolicy("/mem/p.yaml", {
    readFile: () => Promise.resolve(text),
    cwd: "/mem",
  });
  resolved.workspace = WORKSPACE;
  const compiled = compilePolicy(resolved, { home: HOME, workspace: WORKSPACE, env: {} });
  return { resolved, namedHosts: compiled.namedHosts, modeCap: compiled.modeCap };
}

const BASE = "name: p\nextends: default\nmode: pause\n";

Deno.test("checkReload() applies a narrowing reload and states nothing when no gate holds", async () => {
  const start = await live(BASE);
  const next = await live(`${BASE}files:\n  read:\n    deny: ["/work/ws/a.txt"]\n`);
  const check = checkReload(next, { gates: [], start });
  assert.equal(check.refusal, null);
  assert.deepEqual(check.fixed, []);
});

Deno.test("checkReload() refuses a reload that widens what a kernel gate holds, naming it", async () => {
  const start = await live(`${BASE}files:\n  read:\n    deny: ["/work/ws/a.txt"]\n`);
  const next = await live(BASE);
  const check = checkReload(next, { gates: ["the Landlock wall"], start });
  assert.ok(check.refusal !== null);
  assert.match(check.refusal, /^the Landlock wall of this session holds the start policy/);
  assert.match(check.refusal, /can only narrow, never widen/);
  assert.match(check.refusal, /files\.read\.deny "\/work\/ws\/a\.txt" removed/);
  // Without a gate the same reload applies: only the engine decides.
  assert.equal(checkReload(next, { gates: [], start }).refusal, null);
});

Deno.test("checkReload() lets a gated session narrow, and says the gate keeps the start policy", async () => {
  const start = await live(BASE);
  const next = await live(`${BASE}files:\n  read:\n    deny: ["/work/ws/a.txt"]\n`);
  const check = checkReload(next, {
    gates: ["the seccomp supervisor", "the connect guard"],
    start,
  });
  assert.equal(check.refusal, null);
  assert.equal(check.fixed.length, 1);
  assert.match(
    check.fixed[0] ?? "",
    /^the seccomp supervisor and the connect guard keep refusing in the kernel what the start policy denies/,
  );
});

Deno.test("checkReload() refuses to switch on a monitor that was off at start", async () => {
  const start = await live(`${BASE}monitors:\n  network: false\n`);
  const next = await live(BASE);
  const check = checkReload(next, { gates: [], start });
  assert.match(check.refusal ?? "", /^monitors\.network was off when the session started/);
  // Switching one off is applied (the engine allows what its sensors report).
  const off = checkReload(start, { gates: [], start: next });
  assert.equal(off.refusal, null);
  assert.match(off.fixed.join("\n"), /monitors\.network off/);
});

Deno.test("checkReload() states what only takes effect at start: limits, rollback, pause, new host names", async () => {
  const start = await live(BASE);
  const next = await live(
    `${BASE}limits:\n  memory_mb: 10\npause:\n  timeout: 5m\nnetwork:\n  deny: ["evil.example"]\n` +
      `rollback:\n  after: kill\non_sentry_exit: kill\n`,
  );
  const check = checkReload(next, { gates: [], start });
  assert.equal(check.refusal, null);
  const text = check.fixed.join("\n");
  assert.match(text, /limits: the resource sensor keeps reporting above the start policy's/);
  assert.match(text, /pause\.timeout and pause\.on_timeout stay as started/);
  assert.match(
    text,
    /host names new in the policy are not resolved in this session \("evil\.example"\)/,
  );
  assert.match(text, /rollback: the snapshot taken at start/);
  assert.match(text, /on_sentry_exit stays "resume"/);
});

Deno.test("checkReload() says a session started in mode monitor has no gate to block the new denials", async () => {
  const start = await live("name: p\nextends: default\nmode: monitor\n");
  const next = await live(BASE);
  const check = checkReload(next, { gates: [], start });
  assert.equal(check.refusal, null);
  assert.match(
    check.fixed[0] ?? "",
    /no kernel gate blocks in this session \(it started in mode "monitor"\)/,
  );
});

Deno.test("widenings() lists removed denies, added allows, opened defaults, dropped rules, raised thresholds and a lowered mode", async () => {
  const start = await live(
    `name: p\nextends: none\nmode: block\nthresholds:\n  pause: 60\n` +
      `files:\n  read:\n    default: deny\n    allow: ["/a/**"]\n    deny: ["/a/secret"]\n` +
      `rules:\n  - id: no_curl\n    description: Detect curl\n    match:\n      kind: proc.exec\n      process: curl\n    risk: 50\n`,
  );
  const next = await live(
    `name: p\nextends: none\nmode: alert\nthresholds:\n  pause: 70\n` +
      `files:\n  read:\n    default: allow\n    allow: ["/a/**", "/b/**"]\n`,
  );
  assert.deepEqual(widenings(start, next), [
    'mode "block" lowered to "alert"',
    'files.read.deny "/a/secret" removed',
    'files.read.allow "/b/**" added',
    'files.read.default opened from "deny" to "allow"',
    'rule "no_curl" removed or disabled',
    "thresholds.pause raised from 60 to 70",
  ]);
  assert.deepEqual(widenings(start, start), []);
});

Deno.test("policyHash() is the same for the same policy whatever its key order, and differs on a change", async () => {
  const a = await live(BASE);
  const reordered = JSON.parse(JSON.stringify(a.resolved)) as Record<string, unknown>;
  const shuffled = Object.fromEntries(
    Object.entries(reordered).reverse(),
  ) as unknown as ResolvedPolicy;
  assert.equal(policyHash(a.resolved), policyHash(shuffled));
  assert.match(policyHash(a.resolved), /^[0-9a-f]{64}$/);
  const b = await live(`${BASE}files:\n  read:\n    deny: ["/x"]\n`);
  assert.notEqual(policyHash(a.resolved), policyHash(b.resolved));
});

Deno.test("a reload request is written 0600, taken once, and a malformed one counts as none", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sentry-reload-" });
  try {
    await Deno.mkdir(join(dir, "run"));
    const path = reloadRequestPath(dir, "S1");
    assert.equal(path, join(dir, "run", "S1.reload"));
    assert.equal(takeReloadRequest(path), null);
    writeReloadRequest(path, { file: "/p.yaml", by: "sentry policy reload", nonce: "n1" });
    assert.equal((await Deno.stat(path)).mode! & 0o777, 0o600);
    assert.deepEqual(takeReloadRequest(path), {
      file: "/p.yaml",
      by: "sentry policy reload",
      nonce: "n1",
    });
    assert.equal(takeReloadRequest(path), null, "taken once");
    await Deno.writeTextFile(path, "{not json");
    assert.equal(takeReloadRequest(path), null);
    await assert.rejects(Deno.stat(path), Deno.errors.NotFound);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
});
