/**
 * End-to-end tests of the CPU monitor as the seed describes it: a spike above 90 % of a core for
 * at least 1 s is journaled once, with its measured percent and duration, whatever the policy's
 * limits; the limits decide only its verdict.
 * @module
 */
import assert from "node:assert/strict";
import { cpuExclusive, ofKind, PYTHON, withSandbox } from "./_helpers.ts";

/**
 * Python that holds the CPU flat out for `seconds`, then exits: one loop in the agent and one in
 * each of `forks` children. Several loops keep the tree above 90 % of a core when other tests
 * load this 2-core machine (one loop beside a busy neighbour measured 80 %).
 */
function busy(seconds: number, forks = 3): string {
  return [
    "import os, time",
    `end = time.monotonic() + ${seconds}`,
    "children = []",
    `for _ in range(${forks}):`,
    "    pid = os.fork()",
    "    if pid == 0:",
    "        children = None",
    "        break",
    "    children.append(pid)",
    "while time.monotonic() < end:",
    "    pass",
    "if children is None:",
    "    os._exit(0)",
    "for pid in children:",
    "    os.waitpid(pid, 0)",
  ].join("\n");
}

Deno.test("`sentry run` journals a 4 s spike once under coding-agent, and allows it", async () => {
  await cpuExclusive(() =>
    withSandbox(async (sb) => {
      // The suite runs in parallel on 2 cores: a run whose busy loops other tests starved below
      // 90 % is a disturbed measurement, not a result. Up to 3 runs; the last one must hold.
      let events: Awaited<ReturnType<typeof sb.events>> = [];
      for (let attempt = 1; attempt <= 3; attempt++) {
        const run = await sb.sentry(
          ["run", "--policy", "coding-agent", "--", PYTHON, "-c", busy(4)],
          { timeoutMs: 30_000 },
        );
        assert.equal(run.code, 0, run.stderr);
        events = await sb.events();
        const spikes = ofKind(events, "resource.cpu");
        const seconds = spikes[0]?.detail.duration_seconds as number | undefined;
        if (spikes.length === 1 && seconds !== undefined && seconds >= 3 && seconds <= 5) break;
      }
      const [session] = await sb.sessions();
      const cpu = ofKind(events, "resource.cpu");
      assert.equal(cpu.length, 1, JSON.stringify(cpu));
      const [e] = cpu;
      const detail = e?.detail ?? {};
      assert.equal(e?.target, "tree");
      assert.equal(e?.pid, session?.pid);
      assert.equal(e?.exe, Deno.realPathSync(PYTHON));
      assert.equal(detail.processes, 4);
      // coding-agent allows 800 % for 300 s: an observation, not a violation.
      assert.equal(e?.verdict, "allow", JSON.stringify(e));
      assert.equal(e?.rule, "limits.cpu_percent");
      assert.equal(e?.response, "none");
      assert.equal(detail.ongoing, false);
      assert.equal(detail.threshold_percent, 90);
      const percent = detail.percent as number;
      const duration = detail.duration_seconds as number;
      assert.ok(percent > 90 && percent <= 210, `percent ${percent}: ${JSON.stringify(detail)}`);
      assert.ok(duration >= 3 && duration <= 5, `duration ${duration}: ${JSON.stringify(detail)}`);
      // The spike started within the session, and at most 1 s after the agent did.
      const started = Date.parse(String(detail.started));
      const exec = ofKind(events, "proc.exec")[0];
      assert.ok(exec !== undefined, "the agent's exec is recorded");
      assert.ok(started >= Date.parse(session?.startedAt ?? "") - 1000, String(detail.started));
      assert.ok(started - Date.parse(exec.ts) <= 1000, `${detail.started} vs exec ${exec.ts}`);
      assert.deepEqual(ofKind(events, "resource.memory"), [], "python stays far below 2 GB");
      // The report counts it as allowed and shows what was measured in the timeline.
      const report = await sb.report();
      assert.deepEqual(
        report.counts.find((c) => c.kind === "resource.cpu"),
        { kind: "resource.cpu", count: 1, denied: 0 },
      );
      assert.ok(
        report.timeline.some((l) =>
          /^resource\.cpu tree: [\d.]+% CPU \(peak [\d.]+%\) for [\d.]+ s/.test(l.text)
        ),
        JSON.stringify(report.timeline),
      );
    })
  );
});

Deno.test("`sentry run` journals a spike early, once, when it passes the policy's CPU limit for its time", async () => {
  await cpuExclusive(() =>
    withSandbox(async (sb) => {
      const policy = await sb.write(
        "policy.yaml",
        "name: e2e-cpu\nextends: coding-agent\nmode: monitor\nlimits:\n  cpu_percent: 90\n  cpu_seconds: 2\n",
      );
      // As above: a load starved by the parallel suite may dip below 90 % for 2 s and split into
      // two spikes, or dip just as the 2 s are reached (the spike then ends there, and is
      // journaled as ended, not ongoing), or reach them only at the end: disturbed measurements.
      // Up to 3 runs; the last must hold.
      let events: Awaited<ReturnType<typeof sb.events>> = [];
      for (let attempt = 1; attempt <= 3; attempt++) {
        // Eight loops: on 2 cores beside the suite's other tests, the tree keeps above 90 %.
        const run = await sb.sentry(["run", "--policy", policy, "--", PYTHON, "-c", busy(8, 7)], {
          timeoutMs: 30_000,
        });
        assert.equal(run.code, 0, run.stderr);
        events = await sb.events();
        const spikes = ofKind(events, "resource.cpu");
        const end = Date.parse(ofKind(events, "proc.exit").at(-1)?.ts ?? "");
        const early = end - Date.parse(spikes[0]?.ts ?? "") >= 1000;
        if (spikes.length === 1 && spikes[0]?.detail.ongoing === true && early) break;
      }
      const cpu = ofKind(events, "resource.cpu");
      assert.equal(cpu.length, 1, JSON.stringify(cpu));
      const [e] = cpu;
      const detail = e?.detail ?? {};
      assert.equal(e?.verdict, "deny", JSON.stringify(e));
      assert.equal(e?.rule, "limits.cpu_percent");
      assert.equal(detail.ongoing, true);
      assert.equal(detail.limit_percent, 90);
      assert.ok((detail.percent as number) > 90, JSON.stringify(detail));
      const duration = detail.duration_seconds as number;
      assert.ok(duration >= 2 && duration < 3.5, `journaled once 2 s were reached: ${duration}`);
      // Journaled while the agent still ran, seconds before its end (8 s of load).
      const exit = ofKind(events, "proc.exit").at(-1);
      assert.ok(exit !== undefined, "the agent's exit is recorded");
      assert.ok(
        Date.parse(exit.ts) - Date.parse(e?.ts ?? "") >= 1000,
        `${e?.ts} vs exit ${exit.ts}`,
      );
    })
  );
});
