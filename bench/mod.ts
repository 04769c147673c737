// deno-lint-ignore-file no-console
/**
 * Runs the benchmarks and prints their figures. Each compares against a baseline in the same run.
 * `deno task bench` runs them all in full (about 14 minutes); `deno task bench --quick` runs the
 * short versions (about 4 minutes). Names pick some: `deno task bench block` runs only
 * bench/block_bench.ts, `deno task bench --quick pause block` two quick ones. Each file also
 * runs alone: `deno run -A bench/<name>_bench.ts`.
 * @module
 */
import { runApiLoadBench } from "./api_load_bench.ts";
import { runApiQueryBench } from "./api_query_bench.ts";
import { runApiSearchBench } from "./api_search_bench.ts";
import { runApiStreamBench } from "./api_stream_bench.ts";
import { runBacktestBench } from "./backtest_bench.ts";
import { runBlockBench } from "./block_bench.ts";
import { runCollectorBench } from "./collector_bench.ts";
import { runCollectorPgBench } from "./collector_pg_bench.ts";
import { runCrashBench } from "./crash_bench.ts";
import { runWatchBench } from "./watch_bench.ts";
import { runEvaluateBench } from "./evaluate_bench.ts";
import { runJournalBench } from "./journal_bench.ts";
import { runLearnBench } from "./learn_bench.ts";
import { runLatencyBench } from "./latency_bench.ts";
import { runOtlpBench } from "./otlp_bench.ts";
import { runOverheadBench } from "./overhead_bench.ts";
import { runRecallBench } from "./recall_bench.ts";
import { runRollbackBench } from "./rollback_bench.ts";
import { runSyncBench } from "./sync_bench.ts";
import { runTiersBench } from "./tiers_bench.ts";
import { runNoiseBench } from "./noise_bench.ts";
import { runPauseBench } from "./pause_bench.ts";

/** One benchmark: its name (its file's, without `_bench.ts`), its title and how to run it. */
interface Bench {
  name: string;
  title: string;
  run: (quick: boolean) => Promise<unknown>;
}

/** Every benchmark, in the order `deno task bench` runs them. */
const BENCHES: readonly Bench[] = [
  {
    name: "evaluate",
    title: "policy evaluation",
    run: (quick) => runEvaluateBench(quick ? { ms: 700 } : {}),
  },
  {
    name: "learn",
    title: "policy learn over a 1,000,000-event session: time and memory (issue 14)",
    run: (quick) => runLearnBench({ quick }),
  },
  {
    name: "backtest",
    title: "backtest over 1,000,000 events: events/s against plain evaluate() (issue 14)",
    run: (quick) => runBacktestBench({ quick }),
  },
  {
    name: "journal",
    title: "journal: crash loss and write throughput",
    run: () => runJournalBench(),
  },
  {
    name: "recall",
    title: "sensors: recall by action duration",
    run: (quick) => runRecallBench({ quick }),
  },
  {
    name: "latency",
    title: "sensors: latency from a denied action to a stopped agent",
    run: (quick) => runLatencyBench({ quick }),
  },
  {
    name: "overhead",
    title: "overhead: Sentry's CPU and the agent's slowdown",
    run: (quick) => runOverheadBench({ quick }),
  },
  {
    name: "tiers",
    title: "sensing tiers: recall, slowdown, Sentry's cost, events/s, drain at exit (issue 10)",
    run: (quick) => runTiersBench({ quick }),
  },
  {
    name: "noise",
    title: "sensing noise: interpreters' ordinary reads under every template (issue 10)",
    run: (quick) => runNoiseBench({ quick }),
  },
  {
    name: "pause",
    title: "pause: from a denied action to the whole tree frozen, cgroup and signals (issue 11)",
    run: (quick) => runPauseBench({ quick }),
  },
  {
    name: "block",
    title: "block mode: damage, decision latency and slowdown, seccomp and eBPF tiers (issue 11)",
    run: (quick) => runBlockBench({ quick }),
  },
  {
    name: "watch",
    title: "poll tier under a file flood: creates journaled against the agent's own count",
    run: (quick) => runWatchBench({ quick }),
  },
  {
    name: "crash",
    title: "crash loss of a whole sentry run, per tier, against the journal's batch window",
    run: (quick) => runCrashBench(quick ? { runs: 2 } : {}),
  },
  {
    name: "rollback",
    title: "rollback: snapshot and restore against cp -a",
    run: (quick) => runRollbackBench({ quick }),
  },
  {
    name: "sync",
    title: "sync: outbox to collector throughput, and lag at 1,000 events/s",
    run: (quick) => runSyncBench({ quick }),
  },
  {
    name: "collector",
    title: "collector: ingest rate with 10 concurrent hosts",
    run: (quick) => runCollectorBench({ quick }),
  },
  {
    name: "otlp",
    title: "OTLP export of every event: throughput and lag from journal to receiver (issue 15)",
    run: (quick) => runOtlpBench({ quick }),
  },
  {
    name: "collector_pg",
    title:
      "collector on PostgreSQL vs SQLite: ingest, dashboard queries at 10M events, retention (issue 15)",
    run: (quick) => runCollectorPgBench({ quick }),
  },
  {
    name: "api_query",
    title: "local API: event queries at 1,000,000 events (200,000 with --quick)",
    run: (quick) => runApiQueryBench({ quick }),
  },
  {
    name: "api_search",
    title: "local API: the dashboard's text search, step by step, at 1,000,000 events",
    run: (quick) => runApiSearchBench({ quick }),
  },
  {
    name: "api_stream",
    title: "local API: SSE fan-out to 50 clients at 2,000 events/s",
    run: (quick) => runApiStreamBench({ quick }),
  },
  {
    name: "api_load",
    title: "local API: load with autocannon",
    run: (quick) => runApiLoadBench({ quick }),
  },
];

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const names = Deno.args.filter((a) => a !== "--quick");
  const unknown = names.filter((n) => !BENCHES.some((b) => b.name === n));
  if (unknown.length > 0) {
    console.error(
      `Unknown benchmark "${unknown[0]}": pick from ${BENCHES.map((b) => b.name).join(", ")}`,
    );
    Deno.exit(2);
  }
  for (const bench of BENCHES) {
    if (names.length > 0 && !names.includes(bench.name)) continue;
    console.log(`\n=== ${bench.title} ===`);
    await bench.run(quick);
  }
}
