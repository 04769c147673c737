/**
 * End-to-end tests of `sentry audit` as a scheduler runs it: no terminal, an environment of
 * HOME and SENTRY_HOME only (plus DENO_DIR, which `deno run` needs to find its cache; the
 * compiled binary does not), real agents violating the policy, and the exit codes, the
 * watermark, the lock, the time limit, the report, the export and the targets.
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import type { AuditReport } from "../src/audit/mod.ts";
import { withCollector } from "./_loopback_collector.ts";
import {
  isGone,
  isStopped,
  PYTHON,
  pyWrite,
  type Sandbox,
  waitFor,
  withSandbox,
} from "./_helpers.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const CONFIG = fileURLToPath(new URL("../deno.json", import.meta.url));

interface AuditRun {
  code: number;
  stdout: string;
  stderr: string;
}

/**
 * Starts `sentry audit ARGS` as cron would: stdin from /dev/null, stdout and stderr to pipes
 * (no terminal), and a cleared environment holding HOME, SENTRY_HOME and DENO_DIR only.
 */
function startAudit(sb: Sandbox, args: string[], timeoutMs = 60_000): Promise<AuditRun> {
  const command = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", CONFIG, MAIN, "audit", ...args],
    cwd: sb.root,
    clearEnv: true,
    env: {
      HOME: sb.env["HOME"] ?? "",
      SENTRY_HOME: sb.env["SENTRY_HOME"] ?? "",
      DENO_DIR: sb.env["DENO_DIR"] ?? "",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  });
  return command.output().then((out) => ({
    code: out.code,
    stdout: new TextDecoder().decode(out.stdout),
    stderr: new TextDecoder().decode(out.stderr),
  }));
}

/** Runs an audit with `--json` and returns its exit code and report. */
async function auditJson(
  sb: Sandbox,
  args: string[] = [],
): Promise<AuditRun & { report: AuditReport }> {
  const run = await startAudit(sb, ["--json", "--no-host", ...args]);
  let report: AuditReport;
  try {
    report = JSON.parse(run.stdout);
  } catch {
    throw new Error(`audit printed no JSON (exit ${run.code}):\n${run.stdout}\n${run.stderr}`);
  }
  return { ...run, report };
}

/** Runs a python agent under `sentry run` that reads the sandbox's SSH key (denied by policy). */
async function violate(sb: Sandbox): Promise<void> {
  const agent = await sb.write("agent.py", `open(${JSON.stringify(sb.sshKey)}).read()\n`);
  const run = await sb.sentry([
    "run",
    "--no-api",
    "--mode",
    "alert",
    "--workspace",
    sb.workspace,
    "--",
    PYTHON,
    agent,
  ]);
  assert.equal(run.code, 0, run.stderr);
  assert.match(run.stderr, /DENY .*file\.read/);
}

Deno.test("`sentry audit` run as cron would: exit 0 on a clean window, 1 on a violating one, and the watermark advances", async () => {
  await withSandbox(async (sb) => {
    // A fresh host: no journal yet. The first audit covers everything there is: nothing.
    const first = await startAudit(sb, []);
    assert.equal(first.code, 0, first.stderr);
    assert.match(first.stdout, /^sentry audit: CLEAN \(exit 0\); window the beginning to /);
    assert.ok(!(first.stdout + first.stderr).includes("\x1b["), "no colour without a terminal");

    await violate(sb);
    // The journal's last events are a second old before the default window takes them.
    await new Promise((r) => setTimeout(r, 1100));
    const second = await auditJson(sb);
    assert.equal(second.code, 1, second.stderr);
    const r2 = second.report;
    assert.equal(r2.schema, 1);
    assert.equal(r2.result, "findings");
    assert.equal(r2.exitCode, 1);
    assert.equal(r2.window.source, "watermark");
    assert.equal(r2.window.advanced, true);
    const denied = r2.findings.find((f) => f.type === "event" && f.event?.target === sb.sshKey);
    assert.ok(denied, JSON.stringify(r2.findings));
    assert.equal(denied.failing, true);
    assert.equal(denied.event?.verdict, "deny");
    assert.equal(r2.counts.sessions, 1);
    assert.equal(r2.sessions[0]?.agent, "python3");
    assert.ok(r2.counts.failing >= 1);

    // The watermark moved to the end of that window: the next audit covers only what is new.
    const third = await auditJson(sb);
    assert.equal(third.code, 0, third.stderr);
    assert.equal(third.report.window.since, r2.window.until);
    assert.equal(third.report.counts.findings, 0);

    // A new violation is found by the next audit, and only it.
    await violate(sb);
    await new Promise((r) => setTimeout(r, 1100));
    const fourth = await auditJson(sb);
    assert.equal(fourth.code, 1);
    assert.equal(fourth.report.window.since, third.report.window.until);
    const events = fourth.report.findings.filter((f) => f.type === "event");
    assert.equal(events.length, 1);
    assert.ok((events[0]?.ts ?? "") >= (fourth.report.window.since ?? ""));

    // `schedule status` shows the last audit's time and result.
    const status = await sb.ok([
      "schedule",
      "status",
      "--json",
      "--crontab-file",
      sb.path("none"),
      "--dir",
      sb.path("none.d"),
    ]);
    const last = JSON.parse(status).lastAudit;
    assert.equal(last.result, "findings");
    assert.equal(last.exitCode, 1);
    assert.equal(last.until, fourth.report.window.until);
  });
});

Deno.test("`sentry audit --since/--until` looks at the past without moving the watermark, and --fail-on sets the threshold", async () => {
  await withSandbox(async (sb) => {
    await violate(sb);
    await new Promise((r) => setTimeout(r, 1100));
    const base = await auditJson(sb);
    assert.equal(base.code, 1);
    const mark = base.report.window.until;

    // The read is risk 80 under the default policy, with an alert (not an enforcing response).
    const cases: [string, number][] = [["deny", 1], ["response", 0], ["80", 1], ["81", 0], [
      "0",
      1,
    ]];
    for (const [failOn, code] of cases) {
      const run = await auditJson(sb, ["--since", "1h", "--fail-on", failOn]);
      assert.equal(run.code, code, `--fail-on ${failOn}: ${run.stderr}`);
      assert.equal(run.report.window.source, "flags");
      assert.equal(run.report.window.advanced, false);
      assert.equal(run.report.failOn, /^\d+$/.test(failOn) ? Number(failOn) : failOn);
    }
    // A window that ends before the violation has none.
    const before = await auditJson(sb, ["--since", "2h", "--until", "1h"]);
    assert.equal(before.code, 0);
    // The watermark did not move: the next default audit starts where the first one ended.
    const next = await auditJson(sb);
    assert.equal(next.report.window.since, mark);
  });
});

Deno.test("`sentry audit --report` writes the report atomically with mode 0600, and --export writes a bundle that `sentry import` verifies", async () => {
  await withSandbox(async (sb) => {
    await violate(sb);
    await new Promise((r) => setTimeout(r, 1100));
    const exportDir = sb.path("export");
    await Deno.mkdir(exportDir);
    const reportPath = sb.path("report.json");
    const run = await startAudit(sb, ["--no-host", "--report", reportPath, "--export", exportDir]);
    assert.equal(run.code, 1, run.stderr);
    const info = await Deno.stat(reportPath);
    assert.equal((info.mode ?? 0) & 0o777, 0o600);
    const report: AuditReport = JSON.parse(await Deno.readTextFile(reportPath));
    assert.equal(report.schema, 1);
    assert.equal(report.outputs.report, null, "the report names itself only once written");
    assert.ok(report.outputs.export !== null);
    const files = [...Deno.readDirSync(exportDir)].map((e) => e.name);
    assert.equal(files.length, 1, `no temporary file is left: ${files}`);
    assert.match(files[0] ?? "", /^sentry-audit-\d{8}T\d{6}\.\d{3}Z\.jsonl\.gz$/);
    const bundle = join(exportDir, files[0] ?? "");
    assert.equal(report.outputs.export?.path, bundle);
    assert.equal(((await Deno.stat(bundle)).mode ?? 0) & 0o777, 0o600);
    assert.match(
      run.stdout,
      new RegExp(`export: ${bundle.replaceAll(".", "\\.")} \\(\\d+ events, 1 sessions`),
    );

    const verified = await sb.sentry([
      "import",
      bundle,
      "--dry-run",
      "--data",
      sb.path("collector"),
    ]);
    assert.equal(verified.code, 0, verified.stderr);
    assert.match(
      verified.stdout + verified.stderr,
      new RegExp(`${report.outputs.export?.events} event`),
    );

    // A tampered bundle is refused: the export is evidence, not just a copy.
    const text = await new Response(
      (await Deno.open(bundle)).readable.pipeThrough(new DecompressionStream("gzip")),
    ).text();
    assert.ok(text.includes("id_rsa"));
    const edited = new Blob([text.replace("id_rsa", "id_rsb")]).stream()
      .pipeThrough(new CompressionStream("gzip"));
    await Deno.writeFile(sb.path("tampered.jsonl.gz"), edited);
    const tampered = await sb.sentry([
      "import",
      sb.path("tampered.jsonl.gz"),
      "--dry-run",
      "--data",
      sb.path("collector"),
    ]);
    assert.equal(tampered.code, 2, tampered.stderr);
  });
});

Deno.test("a second `sentry audit` while one runs is refused with exit 3, and a stale lock is taken over", async () => {
  await withSandbox(async (sb) => {
    // A target watched for 4 s keeps the first audit busy.
    const agent = sb.spawnRaw(PYTHON, ["-c", "import time; time.sleep(60)", "lock-holder-agent"]);
    await Deno.mkdir(sb.data, { recursive: true });
    await sb.write(
      "sentry/config.yaml",
      "audit:\n  targets:\n    - name: holder\n      cmdline: '*lock-holder-agent*'\n      mode: monitor\n      window: 4s\n",
    );
    const lock = join(sb.data, "run", "audit.lock");
    const first = startAudit(sb, ["--no-host", "--json"]);
    await waitFor(() => {
      try {
        return Deno.readTextFileSync(lock).includes(" ");
      } catch {
        return false;
      }
    }, { what: "the first audit's lock" });
    const second = await startAudit(sb, ["--no-host", "--no-targets"]);
    assert.equal(second.code, 3, second.stderr);
    assert.match(
      second.stderr,
      /^sentry: audit failed: Another audit is running \(pid \d+, lock "/m,
    );
    assert.match(second.stdout, /^sentry audit: FAILED \(exit 3\)/);
    const done = await first;
    assert.equal(done.code, 0, done.stderr);
    const report: AuditReport = JSON.parse(done.stdout);
    assert.equal(report.targets[0]?.found, true);
    assert.equal(report.targets[0]?.matches[0]?.pid, agent.pid);
    assert.ok(!isGone(agent.pid) && !isStopped(agent.pid), "the watched agent keeps running");
    assert.throws(() => Deno.statSync(lock), Deno.errors.NotFound);

    // A lock left by a killed audit (its pid is gone) does not block the next one.
    await Deno.writeTextFile(lock, `999999999 1 ${Deno.hostname()}\n`);
    const after = await startAudit(sb, ["--no-host", "--no-targets"]);
    assert.equal(after.code, 0, after.stderr);
  });
});

Deno.test("`sentry audit` watches a target that runs outside Sentry, reports its violation, and finds a missing one", async () => {
  await withSandbox(async (sb) => {
    const agent = await sb.write(
      "outside.py",
      `
import os, sys, time
${pyWrite(sb.path("agent.pid"), "os.getpid()")}
while True:
    time.sleep(0.3)
    try:
        open(${JSON.stringify(sb.sshKey)}).read()
    except OSError:
        pass
`,
    );
    // The agent runs with the sandbox's HOME, as the audit does: ~/.ssh is the fake key's.
    const outside = sb.spawnRaw(PYTHON, [agent, "outside-agent"]);
    await sb.readWhenWritten("agent.pid");
    await Deno.mkdir(sb.data, { recursive: true });
    await sb.write(
      "sentry/config.yaml",
      `audit:
  targets:
    - name: outside
      cmdline: "*outside-agent*"
      user: ${Deno.uid()}
      policy: default
      mode: alert
      window: 3s
    - name: ghost
      process: "no-such-agent-*"
`,
    );
    const run = await auditJson(sb);
    assert.equal(run.code, 1, run.stderr);
    const r = run.report;
    const outsideReport = r.targets.find((t) => t.name === "outside");
    assert.equal(outsideReport?.found, true);
    const match = outsideReport?.matches[0];
    assert.equal(match?.pid, outside.pid);
    assert.equal(match?.error, null);
    assert.ok((match?.denied ?? 0) >= 1, JSON.stringify(match));
    const session = match?.session ?? "";
    // The watched session's denials are findings of this window.
    assert.ok(
      r.findings.some((f) =>
        f.type === "event" && f.session === session && f.event?.target === sb.sshKey
      ),
    );
    const ghost = r.findings.find((f) => f.type === "target" && f.target === "ghost");
    assert.equal(ghost?.failing, true);
    assert.match(ghost?.summary ?? "", /"ghost" is not running/);
    // Detached, not stopped: the agent keeps going.
    assert.ok(!isGone(outside.pid) && !isStopped(outside.pid));
    const sessions = await sb.sessions();
    assert.equal(sessions.find((s) => s.id === session)?.state, "detached");

    // The next audit does not count the watched session again.
    const next = await auditJson(sb, ["--no-targets"]);
    assert.equal(next.report.findings.filter((f) => f.session === session).length, 0);
  });
});

Deno.test("`sentry audit --timeout` bounds the audit: exit 3, the watch detached, the watermark kept", async () => {
  await withSandbox(async (sb) => {
    const agent = sb.spawnRaw(PYTHON, ["-c", "import time; time.sleep(60)", "slow-target-agent"]);
    await Deno.mkdir(sb.data, { recursive: true });
    await sb.write(
      "sentry/config.yaml",
      "audit:\n  targets:\n    - name: slow\n      cmdline: '*slow-target-agent*'\n      mode: monitor\n      window: 60s\n",
    );
    const started = Date.now();
    const run = await startAudit(sb, ["--no-host", "--timeout", "4s", "--json"]);
    const took = Date.now() - started;
    assert.equal(run.code, 3, run.stderr);
    assert.ok(took < 30_000, `took ${took} ms`);
    assert.match(run.stderr, /audit failed: The audit timed out after 4s/);
    const report: AuditReport = JSON.parse(run.stdout);
    assert.equal(report.result, "failed");
    assert.equal(report.window.advanced, false);
    assert.ok(!isGone(agent.pid) && !isStopped(agent.pid), "the agent is left running");
    await waitFor(async () => (await sb.sessions()).every((s) => s.state !== "running"), {
      what: "the watch to end",
    });
    // Nothing moved the watermark: the next audit is the first one still.
    const next = await auditJson(sb, ["--no-targets"]);
    assert.equal(next.report.window.source, "first");
  });
});

Deno.test("`sentry audit` rejects bad flags and a bad audit section with exit 2 and one line", async () => {
  await withSandbox(async (sb) => {
    const bad: [string[], RegExp][] = [
      [["--fail-on", "high"], /Invalid --fail-on "high": give a risk from 0 to 100/],
      [["--fail-on", "101"], /Invalid --fail-on "101"/],
      [["--timeout", "soon"], /Invalid --timeout "soon"/],
      [["--since", "yesterday"], /Invalid --since "yesterday"/],
      [["--since", "1h", "--until", "2h"], /Invalid --until "2h": it must be later than --since/],
      [["--export", sb.path("missing")], /Invalid --export ".*missing": no such directory/],
      [["--report", sb.path("no/such/dir/r.json")], /Invalid --report/],
      [["--max-findings", "0"], /Invalid --max-findings "0"/],
    ];
    for (const [args, message] of bad) {
      const run = await startAudit(sb, args);
      assert.equal(run.code, 2, `${args.join(" ")}: ${run.stderr}`);
      assert.match(run.stderr.split("\n")[0] ?? "", message);
      assert.doesNotMatch(run.stderr, /\n\s+at /, "no stack trace");
    }
    await Deno.mkdir(sb.data, { recursive: true });
    await sb.write(
      "sentry/config.yaml",
      "audit:\n  targets:\n    - name: nothing\n      policy: default\n",
    );
    const noSelector = await startAudit(sb, []);
    assert.equal(noSelector.code, 2, noSelector.stderr);
    assert.match(
      noSelector.stderr,
      /config\.yaml.*give at least one of process, cmdline, user or cgroup/,
    );
    await sb.write("sentry/config.yaml", "audit:\n  fail_on: sometimes\n");
    const badFailOn = await startAudit(sb, []);
    assert.equal(badFailOn.code, 2, badFailOn.stderr);
    assert.match(badFailOn.stderr, /config\.yaml:2:\d+: field "audit\.fail_on"/);
  });
});

Deno.test("`sentry audit` uploads the outbox to the configured collector and sends its findings to the webhook", async () => {
  await withSandbox(async (sb) => {
    await withCollector(async (c) => {
      const bodies: { event: { target: string; verdict: string } | null }[] = [];
      const hook = Deno.serve(
        { hostname: "127.0.0.1", port: 0, onListen: () => {} },
        async (req) => {
          bodies.push(await req.json());
          return new Response("{}");
        },
      );
      try {
        const login = await sb.sentry(["login", "--api-key", c.key, "--endpoint", c.endpoint]);
        assert.equal(login.code, 0, login.stderr);
        // The run cannot reach the collector (its endpoint is overridden with a closed port):
        // its events wait in the outbox.
        const agent = await sb.write("agent.py", `open(${JSON.stringify(sb.sshKey)}).read()\n`);
        const run = await sb.sentry(
          ["run", "--no-api", "--mode", "alert", "--workspace", sb.workspace, "--", PYTHON, agent],
          { env: { SENTRY_ENDPOINT: "http://127.0.0.1:1" } },
        );
        assert.equal(run.code, 0, run.stderr);
        await sb.write(
          "sentry/config.yaml",
          `outputs:\n  webhook:\n    url: http://127.0.0.1:${hook.addr.port}/hook\n    min_risk: 50\n`,
        );
        await new Promise((r) => setTimeout(r, 1100));
        const audit = await auditJson(sb);
        assert.equal(audit.code, 1, audit.stderr);
        const sync = audit.report.outputs.sync;
        assert.equal(sync?.ok, true, JSON.stringify(sync));
        assert.ok((sync?.accepted ?? 0) >= 1, JSON.stringify(sync));
        assert.equal(sync?.pending, 0);
        const uploaded = c.journal.queryEvents({ verdict: "deny" });
        assert.ok(uploaded.some((e) => e.target === sb.sshKey), "the denial reached the collector");
        assert.equal(audit.report.outputs.alerts?.sent, 1, JSON.stringify(audit.report.outputs));
        assert.equal(bodies.length, 1);
        assert.equal(bodies[0]?.event?.target, sb.sshKey);
        assert.equal(bodies[0]?.event?.verdict, "deny");
      } finally {
        await hook.shutdown();
      }
    });
  });
});

Deno.test("`sentry audit` exits 3 when the journal cannot be read, and says why", async () => {
  await withSandbox(async (sb) => {
    await Deno.mkdir(sb.data, { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(
      join(sb.data, "journal.db"),
      "this is not a database, not at all\n".repeat(100),
    );
    const run = await startAudit(sb, ["--no-host"]);
    assert.equal(run.code, 3, run.stderr);
    assert.match(run.stdout, /^sentry audit: FAILED \(exit 3\)/);
    assert.match(run.stderr, /^sentry: audit failed: .*not a database/m);
    assert.doesNotMatch(run.stderr, /\n\s+at /);
    assert.throws(() => Deno.statSync(join(sb.data, "run", "audit.lock")), Deno.errors.NotFound);
  });
});
