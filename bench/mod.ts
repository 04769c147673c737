// deno-lint-ignore-file no-console
/**
 * Runs every benchmark and prints its figures. Each compares against a baseline in the same run.
 * @module
 */
import { runEvaluateBench } from "./evaluate_bench.ts";
import { runJournalBench } from "./journal_bench.ts";

if (import.meta.main) {
  await runEvaluateBench();
  console.log();
  await runJournalBench();
}
