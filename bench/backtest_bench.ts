// deno-lint-ignore-file no-console
/**
 * A backtest (`sentry policy test POLICY --session ID`) over 1,000,000 journaled events:
 * events per second against plain `evaluate()` in the same run.
 *
 * A journal of one session (the API benchmarks' mix, see _event_journal.ts) is written first.
 * Then, in the same process, each pass reading the session page by page as the backtest does:
 * - read: the journal query and JSON parse alone;
 * - read + evaluate(): plain `evaluate()` under strict on each event (the baseline);
 * - backtest: `evaluate()` and `Backtest.add()`, which compares with the journaled decision
 *   and keeps counts and examples per change, then `result()`.
 * And the same two without the journal, over one page held in memory, repeated to the same
 * count: the engine's rate, and what the comparison adds to it.
 *
 * Run: deno run -A bench/backtest_bench.ts [--quick] [--events N]
 * @module
 */
import { join } from "node:path";
import type { AgentEvent } from "../src/events/mod.ts";
import { openJournal } from "../src/journal/mod.ts";
import { Backtest, compilePolicy, evaluate, loadPolicy } from "../src/policy/mod.ts";
import { buildEventJournal } from "./_event_journal.ts";
import { machineLine, markMachine, parseBenchArgs, table } from "./_harness.ts";
import { forEachEvent, PAGE } from "./_replay_journal.ts";

/** Options for {@link runBacktestBench}. */
export interface BacktestBenchOptions {
  /** Events in the session; default 1,000,000 (200,000 with `quick`). */
  events?: number;
  quick?: boolean;
}

/** One pass's figures. */
export interface BacktestPass {
  name: string;
  events: number;
  ms: number;
  eventsPerSecond: number;
}

/** What {@link runBacktestBench} measured. */
export interface BacktestBenchResult {
  events: number;
  passes: BacktestPass[];
  /** The backtest's rate over plain evaluate()'s, both from the journal. */
  ratio: number;
  newlyDenied: number;
}

/** Builds the journal, runs the passes and prints the table. */
export async function runBacktestBench(
  options: BacktestBenchOptions = {},
): Promise<BacktestBenchResult> {
  const total = options.events ?? (options.quick ? 200_000 : 1_000_000);
  const dir = Deno.makeTempDirSync({ prefix: "sentry_backtest_bench_" });
  try {
    const built = buildEventJournal(join(dir, "journal.db"), { events: total, sessions: 1 });
    console.log(
      `journal: ${total} events in one session, built in ${(built.buildMs / 1000).toFixed(1)} s`,
    );
    const strict = compilePolicy(await loadPolicy("strict"), {
      home: "/home/dev",
      workspace: "/work/project",
      env: {},
    });
    const journal = openJournal(built.path);
    const machine = markMachine();
    const passes: BacktestPass[] = [];
    // Best of two runs of each pass: the first also warms the page cache and the JIT.
    const pass = (name: string, body: () => number) => {
      let best = Infinity;
      let events = 0;
      for (let run = 0; run < 2; run++) {
        const t0 = performance.now();
        events = body();
        best = Math.min(best, performance.now() - t0);
      }
      passes.push({ name, events, ms: best, eventsPerSecond: (events / best) * 1000 });
    };
    let newlyDenied = 0;
    let sink = 0;
    let sample: AgentEvent[] = [];
    try {
      sample = journal.queryEvents({ session: built.big.id, limit: PAGE });
      pass("journal: read", () => forEachEvent(journal, built.big.id, () => {}));
      pass("journal: read + evaluate()", () =>
        forEachEvent(journal, built.big.id, (e) => {
          sink += evaluate(e, strict).risk;
        }));
      pass("journal: backtest", () => {
        const bt = new Backtest();
        const n = forEachEvent(journal, built.big.id, (e) => bt.add(e, evaluate(e, strict)));
        newlyDenied = bt.result().counts.newly_denied;
        return n;
      });
    } finally {
      journal.close();
    }
    const rounds = Math.ceil(total / sample.length);
    pass("memory: evaluate()", () => {
      for (let r = 0; r < rounds; r++) for (const e of sample) sink += evaluate(e, strict).risk;
      return rounds * sample.length;
    });
    pass("memory: evaluate() + Backtest.add()", () => {
      const bt = new Backtest();
      for (let r = 0; r < rounds; r++) for (const e of sample) bt.add(e, evaluate(e, strict));
      sink += bt.result().events;
      return rounds * sample.length;
    });
    const byName = (n: string) => passes.find((p) => p.name === n) as BacktestPass;
    const base = byName("journal: read + evaluate()");
    const memBase = byName("memory: evaluate()");
    console.log(table([
      ["pass", "events", "time s", "events/s", "vs evaluate()"],
      ...passes.map((p) => [
        p.name,
        p.events.toLocaleString("en-US"),
        (p.ms / 1000).toFixed(2),
        Math.round(p.eventsPerSecond).toLocaleString("en-US"),
        p.name.startsWith("journal: read") && p.name !== "journal: read + evaluate()"
          ? "-"
          : `${
            (p.eventsPerSecond / (p.name.startsWith("memory") ? memBase : base).eventsPerSecond)
              .toFixed(2)
          }x`,
      ]),
    ]));
    const ratio = byName("journal: backtest").eventsPerSecond / base.eventsPerSecond;
    console.log(
      `backtest of strict: ${newlyDenied.toLocaleString("en-US")} newly denied; backtest rate ${
        ratio.toFixed(2)
      }x that of plain evaluate() over the journal (checksum ${sink % 997})`,
    );
    console.log(machineLine(machine));
    return { events: total, passes, ratio, newlyDenied };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  await runBacktestBench({
    quick,
    ...(numbers.events ? { events: numbers.events[0] as number } : {}),
  });
}
