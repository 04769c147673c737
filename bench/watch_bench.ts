// deno-lint-ignore-file no-console
/**
 * The poll tier's file watcher under a flood: a python3 agent makes N files in N/10,000 new
 * directories as fast as it can, under `sentry run --sensor poll`. The baseline is the agent's
 * own count: every create it made should be journaled, and what is not must be counted. Prints
 * the creates journaled, missing (neither journaled nor counted), found by a new directory's scan,
 * recovered after an overflow, the overflow windows, and the wall time against the same agent
 * alone.
 *
 * `deno run -A bench/watch_bench.ts [--quick]`, or `deno task bench watch`.
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { JOURNAL_FILE } from "../src/journal/mod.ts";
import { machineLine, markMachine, realPython, startSentry, table } from "./_harness.ts";

const AGENT = `
import os, sys
n = int(sys.argv[1])
for i in range(n):
    if i % 10000 == 0: os.makedirs("d/%d" % (i // 10000), exist_ok=True)
    open("d/%d/f_%d" % (i // 10000, i), "w").close()
`;

/** What one flood measured. */
export interface WatchFlood {
  files: number;
  journaled: number;
  missing: number;
  newDirectoryScan: number;
  recovered: number;
  overflows: number;
  sentrySeconds: number;
  aloneSeconds: number;
}

/** Runs one flood of `files` creates under the poll tier, and the same agent alone. */
export async function watchFlood(files: number): Promise<WatchFlood> {
  const python = await realPython();
  const dir = Deno.makeTempDirSync({ prefix: "sentry-watch-bench-" });
  try {
    const agent = join(dir, "agent.py");
    Deno.writeTextFileSync(agent, AGENT);
    const policy = join(dir, "policy.yaml");
    Deno.writeTextFileSync(policy, "extends: default\nmode: monitor\n");
    const alone = join(dir, "alone");
    Deno.mkdirSync(alone);
    let t = performance.now();
    const out = await new Deno.Command(python, { args: [agent, String(files)], cwd: alone })
      .output();
    if (!out.success) throw new Error("the agent failed alone");
    const aloneSeconds = (performance.now() - t) / 1000;
    const ws = join(dir, "ws");
    Deno.mkdirSync(ws);
    const home = join(dir, "home");
    t = performance.now();
    const sentry = startSentry([
      "run",
      "--sensor",
      "poll",
      "--no-api",
      "--no-rollback",
      "--policy",
      policy,
      "--workspace",
      ws,
      "--",
      python,
      agent,
      String(files),
    ], { home, cwd: ws });
    const status = await sentry.child.status;
    const stderr = await sentry.stderr;
    if (!status.success) throw new Error(`sentry run failed: ${stderr.slice(-500)}`);
    const sentrySeconds = (performance.now() - t) / 1000;
    const db = new DatabaseSync(join(home, JOURNAL_FILE), { readOnly: true });
    try {
      const seen = new Set<string>();
      for (const row of db.prepare("SELECT target FROM events WHERE kind = 'file.create'").all()) {
        seen.add(String(row["target"]));
      }
      let journaled = 0;
      for (let i = 0; i < files; i++) {
        if (seen.has(join(ws, "d", String(Math.floor(i / 10000)), `f_${i}`))) journaled++;
      }
      const spots = new Map<string, number>();
      for (const row of db.prepare("SELECT stats FROM sensor_stats").all()) {
        const stats = JSON.parse(String(row["stats"])) as {
          blindSpots: { id: string; count: number }[];
        };
        for (const b of stats.blindSpots) spots.set(b.id, (spots.get(b.id) ?? 0) + b.count);
      }
      return {
        files,
        journaled,
        missing: files - journaled,
        newDirectoryScan: spots.get("created_before_watch") ?? 0,
        recovered: spots.get("overflow_recovered") ?? 0,
        overflows: spots.get("inotify_overflow") ?? 0,
        sentrySeconds,
        aloneSeconds,
      };
    } finally {
      db.close();
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

/** Runs the benchmark and prints its table. */
export async function runWatchBench(options: { quick?: boolean } = {}): Promise<WatchFlood[]> {
  const mark = markMachine();
  const sizes = options.quick === true ? [60_000] : [60_000, 300_000];
  const runs: WatchFlood[] = [];
  for (const n of sizes) runs.push(await watchFlood(n));
  console.log(
    "poll tier under a file flood (new directories of 10,000 files each); baseline: the " +
      "agent's own count of creates, and its time alone",
  );
  const rows = [[
    "files",
    "journaled",
    "missing",
    "found by new-dir scan",
    "recovered after overflow",
    "overflows",
    "time s (alone)",
  ]];
  for (const r of runs) {
    rows.push([
      String(r.files),
      `${r.journaled} (${(r.journaled / r.files * 100).toFixed(2)} %)`,
      String(r.missing),
      String(r.newDirectoryScan),
      String(r.recovered),
      String(r.overflows),
      `${r.sentrySeconds.toFixed(1)} (${r.aloneSeconds.toFixed(1)})`,
    ]);
  }
  console.log(table(rows));
  console.log(machineLine(mark));
  return runs;
}

if (import.meta.main) await runWatchBench({ quick: Deno.args.includes("--quick") });
