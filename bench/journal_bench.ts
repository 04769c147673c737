// deno-lint-ignore-file no-console
/**
 * Journal durability and throughput.
 *
 * 1. Crash loss: a child process appends events at a steady rate and prints each id after the
 *    append; it is SIGKILLed mid-run, and the printed ids missing from the database are the
 *    events a crash lost. The implied loss window is lost / rate. Expected: at most one
 *    `batchMs` window (50 ms, 100 events at 2,000/s), never more than `batchMax` events.
 * 2. Throughput: 100,000 events appended and flushed in batches of 256 (the default), against a
 *    baseline in the same run of the same inserts with one transaction per event (`batchMax: 1`),
 *    and the cost of the append alone (nothing written until the end).
 *
 * Run: deno run -A bench/journal_bench.ts   (or: deno task bench)
 * @module
 */
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { type AgentEvent, createUlid } from "../src/events/mod.ts";
import { type Journal, openJournal } from "../src/journal/mod.ts";
import { runWriter } from "./_journal_writer.ts";

/** Options for {@link runJournalBench}. */
export interface JournalBenchOptions {
  /** Crash runs; default 4. */
  runs?: number;
  /** How long each writer runs before the SIGKILL, in milliseconds; default 2000. */
  killAfterMs?: number;
  /** The writer's rate, in events per second; default 2000. */
  rate?: number;
  /** Events in the throughput runs; default 100,000. */
  events?: number;
}

/** One crash run's figures. */
export interface CrashRun {
  appended: number;
  persisted: number;
  lost: number;
  /** `lost / rate`, in milliseconds. */
  lossWindowMs: number;
  integrity: string;
}

/** What {@link runJournalBench} measured. */
export interface JournalBenchResult {
  crashes: CrashRun[];
  /** Events per second, batched (append + flush). */
  batched: number;
  /** Events per second, one transaction per event. */
  perEvent: number;
  /** Nanoseconds per `append()` when nothing is written. */
  appendNs: number;
  /** Batch latency percentiles of the batched run, in milliseconds. */
  p50BatchMs: number;
  p99BatchMs: number;
}

const BATCH_MS = 50;
const BATCH_MAX = 256;

function makeEvents(count: number, session: string): AgentEvent[] {
  const ulid = createUlid();
  const ts = new Date().toISOString();
  return Array.from({ length: count }, (_, i) => ({
    id: ulid(),
    ts,
    session,
    agent: "bench",
    pid: 1000 + (i % 50),
    ppid: 1000,
    exe: "/usr/bin/python3",
    cmdline: ["python3", "agent.py"],
    kind: i % 10 === 0 ? "net.connect" : "file.read",
    target: i % 10 === 0 ? "api.example.com:443" : `/work/project/src/file_${i % 1000}.py`,
    detail: { bytes: i },
    sensor: "fd",
    verdict: i % 50 === 0 ? "deny" : "allow",
    risk: i % 100,
    factors: [{ id: "kind", points: 5, reason: "file read" }],
    rule: "files.read.allow",
    response: "none",
  }));
}

function crashRun(dir: string, i: number, options: Required<JournalBenchOptions>): Promise<
  CrashRun
> {
  const path = join(dir, `crash_${i}.db`);
  return runWriter(
    {
      path,
      session: `01JBENCHCRASH${String(i).padStart(13, "0")}`,
      rate: options.rate,
      batchMs: BATCH_MS,
      batchMax: BATCH_MAX,
    },
    { killAfterMs: options.killAfterMs },
  ).then((run) => {
    if (run.status.signal !== "SIGKILL") {
      throw new Error(`The journal writer exited with ${run.status.code}: ${run.stderr}`);
    }
    const db = new DatabaseSync(path, { readOnly: true });
    try {
      const integrity = String(db.prepare("PRAGMA integrity_check").get()?.["integrity_check"]);
      const stored = new Set(db.prepare("SELECT id FROM events").all().map((r) => r["id"]));
      const lost = run.printed.filter((id) => !stored.has(id)).length;
      return {
        appended: run.printed.length,
        persisted: run.printed.length - lost,
        lost,
        lossWindowMs: (lost / options.rate) * 1000,
        integrity,
      };
    } finally {
      db.close();
    }
  });
}

/** Opens a journal for the throughput runs, with the events' session and no timer writes. */
function openSession(path: string, events: AgentEvent[], batchMax: number): Journal {
  const journal = openJournal(path, { batchMax, batchMs: 60_000, maxPending: events.length + 1 });
  journal.createSession({
    id: events[0]?.session ?? "bench",
    agent: "bench",
    command: [],
    pid: null,
    kind: "run",
    policy: "default",
    mode: "monitor",
    workspace: "/work/project",
  });
  return journal;
}

/** Appends and flushes `events` into a fresh journal; returns events/s and batch latencies. */
function throughput(
  path: string,
  events: AgentEvent[],
  batchMax: number,
): { rate: number; p50: number; p99: number } {
  const journal = openSession(path, events, batchMax);
  try {
    const start = performance.now();
    for (const event of events) journal.append(event);
    journal.flush();
    const elapsed = performance.now() - start;
    const metrics = journal.metrics();
    if (metrics.eventsWritten !== events.length) {
      throw new Error(`Wrote ${metrics.eventsWritten} of ${events.length} events`);
    }
    return {
      rate: (events.length / elapsed) * 1000,
      p50: metrics.p50BatchMs,
      p99: metrics.p99BatchMs,
    };
  } finally {
    journal.close();
  }
}

/** Measures the cost of `append()` alone: a buffer large enough that nothing is written. */
function appendCost(path: string, events: AgentEvent[]): number {
  const journal = openSession(path, events, events.length + 1);
  try {
    const start = performance.now();
    for (const event of events) journal.append(event);
    const elapsed = performance.now() - start;
    journal.flush();
    return (elapsed * 1e6) / events.length;
  } finally {
    journal.close();
  }
}

/** Runs the benchmark, prints its tables and returns the figures. */
export async function runJournalBench(
  options: JournalBenchOptions = {},
): Promise<JournalBenchResult> {
  const opts: Required<JournalBenchOptions> = {
    runs: options.runs ?? 4,
    killAfterMs: options.killAfterMs ?? 2000,
    rate: options.rate ?? 2000,
    events: options.events ?? 100_000,
  };
  const dir = Deno.makeTempDirSync({ prefix: "sentry_journal_bench_" });
  try {
    const crashes: CrashRun[] = [];
    for (let i = 0; i < opts.runs; i++) crashes.push(await crashRun(dir, i, opts));

    const events = makeEvents(opts.events, "01JBENCHTHROUGHPUT00000000");
    const batched = throughput(join(dir, "batched.db"), events, BATCH_MAX);
    const perEvent = throughput(join(dir, "per_event.db"), events, 1);
    const appendNs = appendCost(join(dir, "append.db"), events);

    const n = (x: number, width = 10) => Math.round(x).toLocaleString("en-US").padStart(width);
    console.log(
      `journal crash loss: writer at ${opts.rate} events/s, batchMs ${BATCH_MS}, ` +
        `batchMax ${BATCH_MAX}, SIGKILL after ${opts.killAfterMs} ms`,
    );
    console.log(
      `${"run".padEnd(6)}${"appended".padStart(10)}${"persisted".padStart(11)}${
        "lost".padStart(7)
      }${"window ms".padStart(11)}  integrity`,
    );
    for (const [i, c] of crashes.entries()) {
      console.log(
        `${String(i + 1).padEnd(6)}${n(c.appended)}${n(c.persisted, 11)}${n(c.lost, 7)}${
          c.lossWindowMs.toFixed(1).padStart(11)
        }  ${c.integrity}`,
      );
    }
    const worst = Math.max(...crashes.map((c) => c.lossWindowMs));
    const mean = crashes.reduce((sum, c) => sum + c.lossWindowMs, 0) / crashes.length;
    console.log(
      `loss window: mean ${mean.toFixed(1)} ms, worst ${worst.toFixed(1)} ms ` +
        `(bound: one batch window, ${BATCH_MS} ms, + 10 ms timer slack): ${
          worst <= BATCH_MS + 10 ? "met" : "NOT met"
        }`,
    );
    console.log();
    console.log(`journal write throughput, ${n(opts.events, 0)} events, WAL, synchronous=NORMAL`);
    console.log(`${"case".padEnd(44)}${"events/s".padStart(12)}   ratio`);
    console.log(
      `${`batched (batchMax ${BATCH_MAX}), append + flush`.padEnd(44)}${n(batched.rate, 12)}${
        (batched.rate / perEvent.rate).toFixed(1).padStart(8)
      }`,
    );
    console.log(
      `${"baseline: one transaction per event".padEnd(44)}${n(perEvent.rate, 12)}${
        "1.0".padStart(8)
      }`,
    );
    console.log(
      `batch latency p50 ${batched.p50.toFixed(2)} ms, p99 ${batched.p99.toFixed(2)} ms; ` +
        `append() alone ${appendNs.toFixed(0)} ns/event`,
    );
    return {
      crashes,
      batched: batched.rate,
      perEvent: perEvent.rate,
      appendNs,
      p50BatchMs: batched.p50,
      p99BatchMs: batched.p99,
    };
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) await runJournalBench();
