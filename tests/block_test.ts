/**
 * Block mode on the seccomp tier: a denied read, write, delete, connect or exec fails before it
 * takes effect, and a thread racing to rewrite the path after the check wins nothing.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { seccompAvailability } from "../src/platform/mod.ts";
import { cpuExclusive, Listener, withSandbox } from "./_helpers.ts";

/** The system python3: its startup reads nothing under the sandbox's home. */
const PYTHON = "/usr/bin/python3";

const available = seccompAvailability();
const why = !available.ok ? available.reason : null;
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the block mode tests: ${why}`);
}

Deno.test({
  name:
    "block mode fails a denied read, write, delete, connect and exec with EACCES/EPERM before it runs",
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      const listener = new Listener();
      try {
        const protectedDir = join(sb.home, "protected");
        await Deno.mkdir(protectedDir);
        const keep = join(protectedDir, "keep.txt");
        await Deno.writeTextFile(keep, "original\n");
        const policy = await sb.write(
          "policy.yaml",
          [
            "name: block-e2e",
            "extends: coding-agent",
            "mode: block",
            "files:",
            `  write: { deny: [${JSON.stringify(protectedDir + "/**")}] }`,
            `  delete: { deny: [${JSON.stringify(protectedDir + "/**")}] }`,
            `network: { deny: ["127.0.0.1:${listener.port}"] }`,
            "processes: { deny: [id] }",
          ].join("\n"),
        );
        const agent = await sb.write(
          "agent.py",
          `
import json, os, socket, subprocess
out = {}
def attempt(name, fn):
    try:
        out[name] = ["ok", fn()]
    except OSError as e:
        out[name] = ["err", e.errno]
attempt("read", lambda: len(open(${JSON.stringify(sb.sshKey)}, "rb").read()))
attempt("write", lambda: open(${JSON.stringify(keep)}, "w").write("pwned"))
attempt("delete", lambda: os.unlink(${JSON.stringify(keep)}))
attempt("connect", lambda: socket.create_connection(("127.0.0.1", ${listener.port})).close())
attempt("exec", lambda: subprocess.run(["id"], capture_output=True).stdout.decode())
attempt("allowed", lambda: open(os.path.join(os.getcwd(), "fine.txt"), "w").write("yes"))
print(json.dumps(out))
`,
        );
        const run = await sb.sentry([
          "run",
          "--sensor",
          "seccomp",
          "--no-api",
          "--policy",
          policy,
          "--",
          PYTHON,
          agent,
        ]);
        assert.equal(run.code, 0, run.stderr);
        const out = JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "{}");
        assert.deepEqual(out.read, ["err", 13], "no byte of the key is read");
        assert.deepEqual(out.write, ["err", 13]);
        assert.deepEqual(out.delete, ["err", 13]);
        assert.deepEqual(out.connect, ["err", 1], "EPERM: the connect never left");
        assert.deepEqual(out.exec, ["err", 13]);
        assert.deepEqual(out.allowed, ["ok", 3]);
        assert.equal(await Deno.readTextFile(keep), "original\n", "the protected file is intact");
        await new Promise((r) => setTimeout(r, 100));
        assert.equal(listener.accepted, 0, "the listener accepted nothing");
        const events = await sb.events();
        const blocked = events.filter((e) => e.response === "block");
        const byKind = new Map<string, (typeof blocked)[number]>(blocked.map((e) => [e.kind, e]));
        for (const kind of ["file.read", "file.write", "file.delete", "net.connect", "proc.exec"]) {
          const e = byKind.get(kind);
          assert.ok(e, `a blocked ${kind}: ${JSON.stringify(blocked.map((b) => b.kind))}`);
          assert.equal(e.verdict, "deny");
          assert.equal(e.detail.result, "failed");
        }
        assert.equal(byKind.get("net.connect")?.detail.blocked, "EPERM");
        assert.equal(byKind.get("file.read")?.detail.blocked, "EACCES");
        const report = JSON.parse(await sb.ok(["report", "last", "--json"]));
        const actions = report.responses.map((r: { action: string }) => r.action);
        assert.ok(actions.filter((a: string) => a === "block").length >= 5, actions.join(","));
        assert.ok(!actions.includes("pause"), "a block does not pause by default");
      } finally {
        await listener.close();
      }
    });
  },
});

Deno.test({
  name:
    "block mode holds against a thread that rewrites the path after the check: 0 leaks in 10,000 tries",
  ignore: why !== null,
  async fn() {
    await cpuExclusive(async () => {
      await withSandbox(async (sb) => {
        const allowed = join(sb.workspace, "public.txt");
        await Deno.writeTextFile(allowed, "public\n");
        // Same length, so that a flip is one memmove the racing thread can land at any time.
        const secret = sb.sshKey;
        const decoy = join(
          sb.workspace,
          "x".repeat(Math.max(1, secret.length - sb.workspace.length - 1)),
        );
        await Deno.writeTextFile(decoy, "public\n");
        const agent = await sb.write(
          "race.py",
          `
import ctypes, json, os, threading
libc = ctypes.CDLL(None, use_errno=True)
a = ${JSON.stringify(decoy)}.encode() + b"\\0"
b = ${JSON.stringify(secret)}.encode() + b"\\0"
assert len(a) == len(b), (len(a), len(b))
buf = ctypes.create_string_buffer(a, len(a))
stop = False
def flip():
    while not stop:
        ctypes.memmove(buf, b, len(b))
        ctypes.memmove(buf, a, len(a))
t = threading.Thread(target=flip, daemon=True)
t.start()
leaks = opened = refused = 0
data = ctypes.create_string_buffer(64)
for _ in range(10000):
    fd = libc.open(buf, os.O_RDONLY)
    if fd < 0:
        refused += 1
        continue
    opened += 1
    n = libc.read(fd, data, 64)
    if data.raw[:n].startswith(b"-----BEGIN"):
        leaks += 1
    libc.close(fd)
stop = True
print(json.dumps({"leaks": leaks, "opened": opened, "refused": refused}))
`,
        );
        const run = await sb.sentry([
          "run",
          "--sensor",
          "seccomp",
          "--no-api",
          "--no-rollback",
          "--policy",
          "coding-agent",
          "--mode",
          "block",
          "--",
          PYTHON,
          agent,
        ], { timeoutMs: 120_000 });
        assert.equal(run.code, 0, run.stderr);
        const result = JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "{}");
        assert.equal(result.leaks, 0, JSON.stringify(result));
        // The race was really run: both paths were seen at the moment of the check.
        assert.ok(result.opened > 0 && result.refused > 0, JSON.stringify(result));
      });
    });
  },
});
