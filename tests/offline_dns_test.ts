/**
 * An air-gapped host: `sentry run` in a network namespace whose only DNS server (127.0.0.1:53)
 * takes every query and never answers. Neither the agent's start nor Sentry's exit may wait on
 * the lookups of the policy's host names, and the report names those it could not resolve.
 * Needs root (a network and mount namespace); skipped otherwise.
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { PYTHON, type Sandbox, withSandbox } from "./_helpers.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const CONFIG = fileURLToPath(new URL("../deno.json", import.meta.url));

/** A DNS server that reads every query (UDP and TCP) and never answers. */
const BLACKHOLE = `
import socket, sys
u = socket.socket(socket.AF_INET, socket.SOCK_DGRAM)
u.bind(("127.0.0.1", 53))
t = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
t.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
t.bind(("127.0.0.1", 53))
t.listen(16)
open(sys.argv[1], "w").write("ready\\n")
while True:
    u.recv(4096)
`;

const canUnshare = Deno.uid() === 0 &&
  (await new Deno.Command("unshare", { args: ["--net", "--mount", "true"], stderr: "null" })
    .output().then((o) => o.success, () => false));

interface Timed {
  /** From Sentry's spawn to the agent's first instruction, in ms. */
  startMs: number;
  /** From the agent's last instruction to Sentry's exit, in ms. */
  exitMs: number;
  code: number;
  stderr: string;
}

/**
 * Runs `sentry run` under `policy` in a fresh network namespace whose resolv.conf names the
 * silent server, with an agent that writes its start and end times.
 */
async function timedRun(sb: Sandbox, policy: string, tag: string): Promise<Timed> {
  const marks = sb.path(`${tag}.marks`);
  const ready = sb.path(`${tag}.ready`);
  await sb.write("resolv.conf", "nameserver 127.0.0.1\noptions timeout:5 attempts:2\n");
  await sb.write("blackhole.py", BLACKHOLE);
  const agent = `import time; open(${JSON.stringify(marks)}, "a").write(str(time.time()) + "\\n")`;
  const script = [
    "set -e",
    "ip link set lo up",
    `mount --bind ${sb.path("resolv.conf")} /etc/resolv.conf`,
    `${PYTHON} ${sb.path("blackhole.py")} ${ready} &`,
    `while [ ! -s ${ready} ]; do sleep 0.02; done`,
    `python3 -c 'import time; print(time.time())' > ${sb.path(`${tag}.t0`)}`,
    `${Deno.execPath()} run -A --config ${CONFIG} ${MAIN} run --no-api --sensor poll ` +
    `--policy ${policy} -- ${PYTHON} -c '${agent}; ${agent}'`,
    "code=$?",
    `python3 -c 'import time; print(time.time())' > ${sb.path(`${tag}.t1`)}`,
    "kill $! 2>/dev/null || true",
    "exit $code",
  ].join("\n");
  const running = sb.spawnRaw("unshare", ["--net", "--mount", "sh", "-c", script]);
  const code = await running.exit(60_000);
  const read = async (name: string) => Number((await Deno.readTextFile(sb.path(name))).trim());
  const [t0, t1] = [await read(`${tag}.t0`), await read(`${tag}.t1`)];
  const lines = (await Deno.readTextFile(marks)).trim().split("\n").map(Number);
  return {
    startMs: ((lines[0] ?? NaN) - t0) * 1000,
    exitMs: (t1 - (lines.at(-1) ?? NaN)) * 1000,
    code,
    stderr: running.stderr,
  };
}

Deno.test({
  name: "sentry run neither starts nor exits later when the DNS server never answers",
  ignore: !canUnshare,
  sanitizeResources: false,
  fn: () =>
    withSandbox(async (sb) => {
      const named = await sb.write(
        "named.yaml",
        "extends: default\nnetwork:\n  allow: [api.example.org, pypi.org]\n",
      );
      const plain = await sb.write("plain.yaml", "extends: default\n");
      // The baseline in the same run: the same namespace and agent, a policy without host names
      // (the default template names one, metadata.google.internal, so extends: default alone
      // still has a name; the difference is one name against three).
      const base = await timedRun(sb, plain, "base");
      const dns = await timedRun(sb, named, "dns");
      assert.equal(base.code, 0, base.stderr);
      assert.equal(dns.code, 0, dns.stderr);
      // A silent server with timeout:5 attempts:2 holds one lookup 10 s or more.
      assert.ok(
        dns.startMs < base.startMs + 1500,
        `start took ${dns.startMs.toFixed(0)} ms against ${base.startMs.toFixed(0)} ms`,
      );
      assert.ok(dns.exitMs < 2500, `exit took ${dns.exitMs.toFixed(0)} ms\n${dns.stderr}`);
      // deno-lint-ignore no-console
      console.log(
        `start ${dns.startMs.toFixed(0)} ms (baseline ${base.startMs.toFixed(0)} ms), ` +
          `exit ${dns.exitMs.toFixed(0)} ms (baseline ${base.exitMs.toFixed(0)} ms)`,
      );
      const report = await sb.report("last");
      const spots = report.sensors.flatMap((s) => s.blindSpots);
      const unresolved = spots.find((b) => b.id === "unresolved_hosts");
      assert.ok(unresolved, JSON.stringify(spots));
      assert.match(unresolved.reason, /api\.example\.org/);
      assert.match(unresolved.reason, /pypi\.org/);
      const text = await sb.ok(["report", "last"]);
      assert.match(text, /could not be resolved.*api\.example\.org/);
    }),
});
