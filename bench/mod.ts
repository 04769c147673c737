// deno-lint-ignore-file no-console
/**
 * Runs every benchmark and prints its figures. Each compares against a baseline in the same run.
 * `deno task bench` runs them all in full (about 12 minutes); `deno task bench --quick` runs the
 * short versions (about 3 minutes). Each file also runs alone: `deno run -A bench/<name>.ts`.
 * @module
 */
import { runApiLoadBench } from "./api_load_bench.ts";
import { runApiQueryBench } from "./api_query_bench.ts";
import { runApiStreamBench } from "./api_stream_bench.ts";
import { runCollectorBench } from "./collector_bench.ts";
import { runEvaluateBench } from "./evaluate_bench.ts";
import { runJournalBench } from "./journal_bench.ts";
import { runLatencyBench } from "./latency_bench.ts";
import { runOverheadBench } from "./overhead_bench.ts";
import { runRecallBench } from "./recall_bench.ts";
import { runRollbackBench } from "./rollback_bench.ts";
import { runSyncBench } from "./sync_bench.ts";
import { runTiersBench } from "./tiers_bench.ts";
import { runNoiseBench } from "./noise_bench.ts";
import { runPauseBench } from "./pause_bench.ts";

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const section = (title: string) => console.log(`\n=== ${title} ===`);
  section("policy evaluation");
  await runEvaluateBench(quick ? { ms: 700 } : {});
  section("journal: crash loss and write throughput");
  await runJournalBench();
  section("sensors: recall by action duration");
  await runRecallBench({ quick });
  section("sensors: latency from a denied action to a stopped agent");
  await runLatencyBench({ quick });
  section("overhead: Sentry's CPU and the agent's slowdown");
  await runOverheadBench({ quick });
  section("sensing tiers: recall, slowdown, Sentry's cost, events/s, drain at exit (issue 10)");
  await runTiersBench({ quick });
  section("sensing noise: interpreters' ordinary reads under every template (issue 10)");
  await runNoiseBench({ quick });
  section("pause: from a denied action to the whole tree frozen, cgroup and signals (issue 11)");
  await runPauseBench({ quick });
  section("rollback: snapshot and restore against cp -a");
  await runRollbackBench({ quick });
  section("sync: outbox to collector throughput, and lag at 1,000 events/s");
  await runSyncBench({ quick });
  section("collector: ingest rate with 10 concurrent hosts");
  await runCollectorBench({ quick });
  section("local API: event queries at 1,000,000 events (200,000 with --quick)");
  await runApiQueryBench({ quick });
  section("local API: SSE fan-out to 50 clients at 2,000 events/s");
  await runApiStreamBench({ quick });
  section("local API: load with autocannon");
  await runApiLoadBench({ quick });
}
