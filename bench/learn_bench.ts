// deno-lint-ignore-file no-console
/**
 * `sentry policy learn` over a session of 1,000,000 events: time and memory.
 *
 * A journal of one session (the API benchmarks' mix of kinds and targets, see
 * _event_journal.ts) is written first. Then, in the same process, three passes over it, each
 * reading the session page by page as `policy learn` does:
 * - read: the journal query and JSON parse alone (the floor of any pass over the journal);
 * - read + evaluate(): the same plus the template's decision on each event;
 * - learn: what `policy learn` does, `PolicyLearner.add()` for each event (the template's
 *   decision, then the paths, hosts and programs it keeps), then `render()`.
 * Each is timed (the best of two runs), with events/s and the ratio to the read pass; memory is
 * the resident set after each pass and its peak so far (the learn pass's rise over the others is
 * what the learner holds).
 *
 * Run: deno run -A bench/learn_bench.ts [--quick] [--events N]
 * @module
 */
import { join } from "node:path";
import { openJournal } from "../src/journal/mod.ts";
import { compilePolicy, evaluate, loadPolicy, PolicyLearner } from "../src/policy/mod.ts";
import { buildEventJournal } from "./_event_journal.ts";
import { machineLine, markMachine, parseBenchArgs, table } from "./_harness.ts";
import { forEachEvent, residentMb } from "./_replay_journal.ts";

/** Options for {@link runLearnBench}. */
export interface LearnBenchOptions {
  /** Events in the session; default 1,000,000 (200,000 with `quick`). */
  events?: number;
  quick?: boolean;
}

/** One pass's figures. */
export interface LearnPass {
  name: string;
  ms: number;
  eventsPerSecond: number;
  rssMb: number;
  peakMb: number;
}

/** What {@link runLearnBench} measured. */
export interface LearnBenchResult {
  events: number;
  passes: LearnPass[];
  /** Lines of the learned policy. */
  policyLines: number;
}

const HOME = "/home/dev";
const WORKSPACE = "/work/project";

/** Builds the journal, runs the three passes and prints the table. */
export async function runLearnBench(options: LearnBenchOptions = {}): Promise<LearnBenchResult> {
  const total = options.events ?? (options.quick ? 200_000 : 1_000_000);
  const dir = Deno.makeTempDirSync({ prefix: "sentry_learn_bench_" });
  try {
    const built = buildEventJournal(join(dir, "journal.db"), { events: total, sessions: 1 });
    console.log(
      `journal: ${total} events in one session, built in ${(built.buildMs / 1000).toFixed(1)} s`,
    );
    const template = compilePolicy(await loadPolicy("coding-agent"), {
      home: HOME,
      workspace: WORKSPACE,
      env: {},
    });
    const journal = openJournal(built.path);
    const machine = markMachine();
    const passes: LearnPass[] = [];
    // Best of two runs of each pass: the first also warms the page cache and the JIT.
    const pass = (name: string, body: () => number) => {
      let best = Infinity;
      let n = 0;
      for (let run = 0; run < 2; run++) {
        const t0 = performance.now();
        n = body();
        best = Math.min(best, performance.now() - t0);
      }
      const mem = residentMb();
      passes.push({
        name,
        ms: best,
        eventsPerSecond: (n / best) * 1000,
        rssMb: mem.rss,
        peakMb: mem.peak,
      });
    };
    let policyLines = 0;
    try {
      pass("read", () => forEachEvent(journal, built.big.id, () => {}));
      let denied = 0;
      pass("read + evaluate()", () => {
        denied = 0;
        return forEachEvent(journal, built.big.id, (e) => {
          if (evaluate(e, template).verdict === "deny") denied++;
        });
      });
      pass("learn (add + render)", () => {
        const learner = new PolicyLearner({ home: HOME });
        const session = { id: built.big.id, agent: "claude-code", workspace: WORKSPACE, template };
        const n = forEachEvent(journal, built.big.id, (e) => learner.add(e, session));
        policyLines =
          learner.render({ name: "learned", extends: "coding-agent" }).split("\n").length;
        return n;
      });
      console.log(`template denials in the mix: ${denied}`);
    } finally {
      journal.close();
    }
    const read = passes[0] as LearnPass;
    console.log(table([
      ["pass", "time s", "events/s", "vs read", "RSS MB", "peak RSS MB"],
      ...passes.map((p) => [
        p.name,
        (p.ms / 1000).toFixed(2),
        Math.round(p.eventsPerSecond).toLocaleString("en-US"),
        `${(p.ms / read.ms).toFixed(2)}x`,
        p.rssMb.toFixed(0),
        p.peakMb.toFixed(0),
      ]),
    ]));
    console.log(`learned policy: ${policyLines} lines`);
    console.log(machineLine(machine));
    return { events: total, passes, policyLines };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  await runLearnBench({
    quick,
    ...(numbers.events ? { events: numbers.events[0] as number } : {}),
  });
}
