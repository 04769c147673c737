/**
 * `sentry run` as a real non-root user (uid 65534, no capabilities): eBPF is refused, Sentry
 * says so, and the seccomp tier sees every action of the agent all the same.
 * @module
 */
import assert from "node:assert/strict";
import { landlockAbi } from "../src/platform/landlock_linux.ts";
import { join } from "node:path";
import type { AgentEvent } from "../src/events/mod.ts";
import { seccompAvailability } from "../src/platform/mod.ts";
import { Listener } from "./_helpers.ts";
import { NOBODY_SKIP, type NobodyHome, nobodyHome, sentryAsNobody } from "./_nobody.ts";

/** The system python3: a user-installed one (pyenv under /root) is out of reach of uid 65534. */
const PYTHON = "/usr/bin/python3";

const available = seccompAvailability();
const why = NOBODY_SKIP ?? (!available.ok ? available.reason : null);
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the unprivileged run tests: ${why}`);
}

/** A home for uid 65534 with a fake SSH key, which every built-in policy denies reading. */
function keyedHome(): Promise<NobodyHome> {
  return nobodyHome("sentry-nobody-", async (home) => {
    await Deno.mkdir(join(home.dir, ".ssh"), { mode: 0o700 });
    await Deno.writeTextFile(
      join(home.dir, ".ssh", "id_rsa"),
      "-----BEGIN OPENSSH PRIVATE KEY-----\n",
    );
  });
}

Deno.test({
  name:
    "`sentry run` as a non-root user falls back from ebpf to seccomp, says why, and sees a 5 ms read-and-send",
  ignore: why !== null,
  async fn() {
    const home = await keyedHome();
    const listener = new Listener();
    try {
      const key = join(home.dir, ".ssh", "id_rsa");
      const agent = [
        "import socket",
        `data = open(${JSON.stringify(key)}).read()`,
        `s = socket.create_connection(("127.0.0.1", ${listener.port}))`,
        "s.sendall(data.encode()); s.close()",
      ].join("\n");
      const out = await sentryAsNobody(home, [
        "run",
        "--no-api",
        "--no-rollback",
        "--policy",
        "coding-agent",
        // Recording is under test, not pausing: the agent must run to its end.
        "--mode",
        "alert",
        "--",
        PYTHON,
        "-c",
        agent,
      ]);
      assert.match(out.stderr, /sensor tier ebpf is not available: .*needs root/);
      assert.match(out.stderr, /sensing with the seccomp tier/);
      assert.match(out.stderr, /DENY risk \d+ file\.read ".*\/\.ssh\/id_rsa"/);
      const events = await sentryAsNobody(home, ["events", "--session", "last", "--json"]);
      const list = events.stdout.split("\n").filter((l) => l.trim() !== "").map((l) =>
        JSON.parse(l) as AgentEvent
      );
      const read = list.find((e) => e.kind === "file.read" && e.target === key);
      const connect = list.find((e) =>
        e.kind === "net.connect" && e.target === `127.0.0.1:${listener.port}`
      );
      assert.equal(read?.sensor, "seccomp");
      assert.equal(read?.verdict, "deny");
      assert.equal(connect?.pid, read?.pid);
      const sessions = await sentryAsNobody(home, ["sessions", "--json"]);
      assert.equal(JSON.parse(sessions.stdout.split("\n")[0] ?? "{}").tier, "seccomp");
    } finally {
      await listener.close();
      await Deno.remove(home.dir, { recursive: true });
    }
  },
});

Deno.test({
  name: "`sentry run --sensor ebpf` as a non-root user exits 2 with one line naming the reason",
  ignore: why !== null,
  async fn() {
    const home = await keyedHome();
    try {
      const out = await sentryAsNobody(home, ["run", "--sensor", "ebpf", "--", "/bin/true"]);
      assert.equal(out.code, 2, out.stderr);
      const lines = out.stderr.split("\n").filter((l) => l.startsWith("sentry:"));
      assert.equal(lines.length, 1, out.stderr);
      assert.match(lines[0] ?? "", /Cannot use --sensor ebpf: .*needs root/);
    } finally {
      await Deno.remove(home.dir, { recursive: true });
    }
  },
});

Deno.test({
  name:
    "as a non-root user under the poll tier, the wall still holds: a denied TCP port is refused by Landlock (the listener accepts nothing), and Sentry cannot be stopped",
  ignore: why !== null || landlockAbi().abi < 6,
  async fn() {
    const home = await keyedHome();
    const denied = new Listener();
    try {
      const policy = join(home.dir, "policy.yaml");
      await Deno.writeTextFile(
        policy,
        `name: ports\nextends: default\nmode: block\nnetwork:\n  deny: [":${denied.port}"]\n`,
      );
      await Deno.chmod(policy, 0o644);
      const agent = [
        "import json, os, signal, socket",
        "out = {}",
        "try:",
        `    socket.create_connection(("127.0.0.1", ${denied.port}), timeout=5); out["connect"] = "ok"`,
        "except OSError as e:",
        "    out['connect'] = e.errno",
        "try:",
        "    os.kill(os.getppid(), signal.SIGSTOP); out['stop'] = 'ok'",
        "except OSError as e:",
        "    out['stop'] = e.errno",
        "print(json.dumps(out))",
      ].join("\n");
      const run = await sentryAsNobody(home, [
        "run",
        "--sensor",
        "poll",
        "--no-api",
        "--no-rollback",
        "--policy",
        policy,
        "--",
        PYTHON,
        "-c",
        agent,
      ]);
      assert.equal(run.code, 0, run.stderr);
      assert.match(
        run.stderr,
        /\d+ TCP ports the policy denies on every address cannot be connected/,
      );
      const out = JSON.parse(run.stdout.trim().split("\n").at(-1) ?? "{}");
      assert.deepEqual(out, { connect: 13, stop: 1 }, "EACCES from Landlock, EPERM from its scope");
      assert.equal(denied.accepted, 0);
    } finally {
      await denied.close();
      await Deno.remove(home.dir, { recursive: true });
    }
  },
});
