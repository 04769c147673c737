// deno-lint-ignore-file no-console
/**
 * The dashboard's text search (`q` of `GET /v1/sessions/:id/events`) at a million events.
 *
 * A journal of 1,000,000 events (20 sessions, one holding 80%; see _event_journal.ts) is written
 * through the journal's batched writer. Then, on the big session, newest first, 200 per page:
 * one search request through `app.request()` (one bounded step: it walks at most `SEARCH_WALK`
 * events) for a rare word, a common one, a word that matches every event's JSON but no searched
 * field (the worst case: each event is read twice), and two words together; and the whole search
 * of the session, following `next_cursor` step by step, as the dashboard does. Baselines in the
 * same run: the newest page without a search (the route as the dashboard called it before), and
 * the same search as one unbounded `queryEvents()` (what a single request would block on without
 * the steps). The step's p99 is what an API serving a live session can stall for; the goal is
 * under 100 ms.
 *
 * Run: deno run -A bench/api_search_bench.ts [--quick] [--events N] [--runs N]
 * @module
 */
import { join } from "node:path";
import { createApp, createLiveHub, type SentryApp } from "../src/api/mod.ts";
import { SEARCH_WALK } from "../src/api/app.ts";
import { type Journal, openJournal } from "../src/journal/mod.ts";
import { buildEventJournal } from "./_event_journal.ts";
import { machineLine, markMachine, parseBenchArgs, percentile, table } from "./_harness.ts";

/** Options for {@link runApiSearchBench}. */
export interface ApiSearchBenchOptions {
  /** Events in the journal; default 1,000,000 (200,000 with `quick`). */
  events?: number;
  /** Timed requests per case; default 50 (15 with `quick`). */
  runs?: number;
  quick?: boolean;
}

/** One search's figures, in milliseconds. */
export interface SearchCase {
  name: string;
  /** Matches on the first step's page. */
  page: number;
  stepP50: number;
  stepP99: number;
  /** Steps and time of the whole session's search, by cursor. */
  steps: number;
  wholeMs: number;
  /** The same search in one `queryEvents()` call, unbounded. */
  unboundedMs: number;
}

/** What {@link runApiSearchBench} measured. */
export interface ApiSearchBenchResult {
  events: number;
  /** p50 of the newest page without a search: the baseline. */
  plainP50: number;
  cases: SearchCase[];
  worstStepP99: number;
}

const TOKEN = "bench-token-0123456789abcdef";
const HOST = "127.0.0.1:7070";
const PAGE = 200;

const SEARCHES: { name: string; q: string }[] = [
  { name: "rare (a secret's path, 0.4%)", q: "id_ed25519" },
  { name: "common (pytest, 4%)", q: "pytest" },
  { name: "in every event's JSON, no field (worst)", q: "factors" },
  { name: "two words (mod_7 .json)", q: "mod_7/ .json" },
  { name: "absent", q: "no-such-word-anywhere" },
];

async function get(
  app: SentryApp,
  path: string,
): Promise<{ events: unknown[]; next_cursor: string | null }> {
  const res = await app.request(`http://${HOST}${path}`, {
    headers: { host: HOST, authorization: `Bearer ${TOKEN}` },
  });
  if (res.status !== 200) throw new Error(`GET ${path}: ${res.status} ${await res.text()}`);
  return await res.json();
}

async function time(fn: () => Promise<unknown> | unknown, runs: number): Promise<number[]> {
  for (let i = 0; i < 2; i++) await fn();
  const out: number[] = [];
  for (let i = 0; i < runs; i++) {
    const start = performance.now();
    await fn();
    out.push(performance.now() - start);
  }
  return out;
}

const ms = (x: number) => x < 10 ? x.toFixed(2) : x.toFixed(1);

/** Runs the benchmark, prints its table and returns the figures. */
export async function runApiSearchBench(
  options: ApiSearchBenchOptions = {},
): Promise<ApiSearchBenchResult> {
  const quick = options.quick ?? false;
  const total = options.events ?? (quick ? 200_000 : 1_000_000);
  const runs = options.runs ?? (quick ? 15 : 50);
  const dir = Deno.makeTempDirSync({ prefix: "sentry_api_search_bench_" });
  let journal: Journal | undefined;
  let app: SentryApp | undefined;
  try {
    const built = buildEventJournal(join(dir, "journal.db"), { events: total });
    const big = built.big;
    console.log(
      `journal: ${total.toLocaleString("en-US")} events, the big session ${
        big.events.toLocaleString("en-US")
      }; each search request walks at most ${SEARCH_WALK.toLocaleString("en-US")} events`,
    );
    journal = openJournal(built.path);
    app = createApp({
      journal,
      dataDir: dir,
      token: TOKEN,
      allowedHosts: [HOST],
      live: createLiveHub(),
    });
    const mark = markMachine();
    const base = `/v1/sessions/${big.id}/events?order=desc&limit=${PAGE}`;
    const a = app;
    const plain = await time(() => get(a, base), runs);
    const cases: SearchCase[] = [];
    for (const s of SEARCHES) {
      const path = `${base}&q=${encodeURIComponent(s.q)}`;
      const first = await get(a, path);
      const step = await time(() => get(a, path), runs);
      // The whole session, as the dashboard walks it: step after step until no cursor.
      const start = performance.now();
      let cursor: string | null = null;
      let steps = 0;
      do {
        const page: { next_cursor: string | null } = await get(
          a,
          cursor === null ? path : `${path}&cursor=${cursor}`,
        );
        cursor = page.next_cursor;
        steps++;
      } while (cursor !== null);
      const wholeMs = performance.now() - start;
      const j = journal;
      const unbounded = await time(
        () => j.queryEvents({ session: big.id, text: s.q, order: "desc", limit: PAGE }),
        Math.min(runs, 5),
      );
      cases.push({
        name: s.name,
        page: first.events.length,
        stepP50: percentile(step, 50),
        stepP99: percentile(step, 99),
        steps,
        wholeMs,
        unboundedMs: percentile(unbounded, 50),
      });
    }
    const plainP50 = percentile(plain, 50);
    const worstStepP99 = Math.max(...cases.map((c) => c.stepP99));
    console.log(
      `\nGET ${PAGE} events, newest first, with q, through app.request(), ${runs} runs per case ` +
        `(ms); baseline: the same page without q, p50 ${ms(plainP50)} ms`,
    );
    console.log(table([
      [
        "search",
        "page",
        "step p50",
        "step p99",
        "p50 / baseline",
        "steps (whole session)",
        "whole session",
        "one unbounded query",
      ],
      ...cases.map((c) => [
        c.name,
        String(c.page),
        ms(c.stepP50),
        ms(c.stepP99),
        `${(c.stepP50 / plainP50).toFixed(1)}x`,
        String(c.steps),
        ms(c.wholeMs),
        ms(c.unboundedMs),
      ]),
    ]));
    console.log(
      `worst step p99 ${ms(worstStepP99)} ms (goal: under 100 ms, what an API serving a live ` +
        `session can stall for): ${worstStepP99 < 100 ? "met" : "NOT met"}. "one unbounded ` +
        `query": queryEvents() with the text and no step, which a request would block on; a ` +
        `search that fills its page early stops early either way`,
    );
    console.log(machineLine(mark));
    return { events: total, plainP50, cases, worstStepP99 };
  } finally {
    app?.close();
    journal?.close();
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  await runApiSearchBench({
    quick,
    ...(numbers["events"] ? { events: numbers["events"][0] as number } : {}),
    ...(numbers["runs"] ? { runs: numbers["runs"][0] as number } : {}),
  });
}
