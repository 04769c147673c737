// deno-lint-ignore-file no-console
/**
 * OTLP export of every event: throughput and lag from the journal to a receiver.
 *
 * 1. Throughput: N events go through the host's pipeline (journal `append()`, then
 *    `outputs.publish()`), timed until the journal has written them and, with export on, until
 *    a loopback receiver (its own Worker thread) has them all. Baselines in the same run: the
 *    journal alone, and the pipeline with no output configured (`publish()` does nothing).
 * 2. Lag: events at a steady rate; for each, the time from its `append()` to its arrival at the
 *    receiver, p50 and p99, at the default `flush_interval_ms` (1000) and at 100. Baseline in the
 *    same run: the loopback round trip of one full batch (512 records) POSTed directly.
 *
 * Every record the receiver counts is one event; none may be dropped (the queue holds them all).
 *
 * Run: deno run -A bench/otlp_bench.ts [--quick]   (or: deno task bench otlp)
 * @module
 */
import { join } from "node:path";
import { parseConfig } from "../src/config/mod.ts";
import { type AgentEvent, createUlid } from "../src/events/mod.ts";
import { type Journal, openJournal } from "../src/journal/mod.ts";
import { createOutputs, type Outputs, toExportLogsRequest } from "../src/outputs/mod.ts";
import { percentile, table } from "./_harness.ts";

/** Options for {@link runOtlpBench}. */
export interface OtlpBenchOptions {
  quick?: boolean;
}

/** What {@link runOtlpBench} measured. */
export interface OtlpBenchResult {
  /** Events per second through the journal alone, with no output, and with OTLP export. */
  journalOnly: number;
  noOutput: number;
  exported: number;
  /** Lag from append to receipt, in ms, per flush interval. */
  lag: { flushMs: number; p50: number; p99: number; events: number }[];
  /** One 512-record batch POSTed straight to the receiver, in ms. */
  roundTrip: { p50: number; p99: number };
}

interface Report {
  records: number;
  requests: number;
  arrivals: [string, number][];
  problems: string[];
}

/** The receiver Worker, and a way to ask it for its counts. */
class Receiver {
  readonly #worker: Worker;
  readonly #waiting: ((data: Record<string, unknown>) => void)[] = [];
  port = 0;

  constructor() {
    this.#worker = new Worker(new URL("./_otlp_receiver.ts", import.meta.url), { type: "module" });
    this.#worker.onmessage = (m: MessageEvent<Record<string, unknown>>) =>
      this.#waiting.shift()?.(m.data);
  }

  #ask(type: string): Promise<Record<string, unknown>> {
    return new Promise((resolve) => {
      this.#waiting.push(resolve);
      this.#worker.postMessage({ type });
    });
  }

  async start(): Promise<void> {
    this.port = (await this.#ask("start"))["port"] as number;
  }

  reset(): void {
    this.#worker.postMessage({ type: "reset" });
  }

  async report(): Promise<Report> {
    return (await this.#ask("report")) as unknown as Report;
  }

  async stop(): Promise<void> {
    await this.#ask("stop");
    this.#worker.terminate();
  }
}

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
    response: i % 50 === 0 ? "alert" : "none",
  }));
}

function openSession(path: string, session: string, maxPending: number): Journal {
  const journal = openJournal(path, { maxPending });
  journal.createSession({
    id: session,
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

function exporter(port: number, flushMs: number, queue: number): Outputs {
  const config = parseConfig(
    `outputs:\n  otlp:\n    endpoint: http://127.0.0.1:${port}\n    flush_interval_ms: ${flushMs}\n    queue_size: ${queue}\n`,
    { file: "bench.yaml" },
  ).outputs;
  return createOutputs(config, { host: "bench", version: "0.0.0" });
}

/** The host pipeline: append then publish, yielding every `chunk` events as the sensors do. */
async function pipeline(journal: Journal, outputs: Outputs, events: AgentEvent[]): Promise<void> {
  const chunk = 500;
  for (let i = 0; i < events.length; i += chunk) {
    for (const event of events.slice(i, i + chunk)) {
      journal.append(event);
      outputs.publish(event);
    }
    await new Promise((r) => setTimeout(r, 0));
  }
  journal.flush();
}

async function until(check: () => Promise<boolean>, ms: number, what: string): Promise<void> {
  const deadline = performance.now() + ms;
  while (!(await check())) {
    if (performance.now() > deadline) throw new Error(`Timed out waiting for ${what}`);
    await new Promise((r) => setTimeout(r, 5));
  }
}

function epochNow(): number {
  return performance.timeOrigin + performance.now();
}

/** Runs the benchmark, prints its tables and returns the figures. */
export async function runOtlpBench(options: OtlpBenchOptions = {}): Promise<OtlpBenchResult> {
  const n = options.quick ? 20_000 : 100_000;
  const rate = 2_000;
  const lagSeconds = options.quick ? 2 : 5;
  const dir = Deno.makeTempDirSync({ prefix: "sentry_otlp_bench_" });
  const receiver = new Receiver();
  await receiver.start();
  try {
    // 1. Throughput.
    const rates: Record<string, number> = {};
    for (const mode of ["journal only", "no output", "OTLP export"] as const) {
      const session = `01JBENCHOTLP${String(Object.keys(rates).length).padStart(14, "0")}`;
      const events = makeEvents(n, session);
      const journal = openSession(join(dir, `${Object.keys(rates).length}.db`), session, n + 1);
      const outputs = mode === "OTLP export"
        ? exporter(receiver.port, 1_000, n)
        : createOutputs({});
      receiver.reset();
      const start = performance.now();
      if (mode === "journal only") {
        for (const event of events) journal.append(event);
        journal.flush();
      } else {
        await pipeline(journal, outputs, events);
      }
      if (mode === "OTLP export") {
        await until(async () => (await receiver.report()).records >= n, 120_000, "every record");
      }
      const elapsed = performance.now() - start;
      await outputs.close();
      journal.close();
      const stats = outputs.stats()[0];
      if (stats !== undefined && (stats.sent !== n || stats.dropped + stats.failed > 0)) {
        throw new Error(`Exported ${stats.sent} of ${n} (${JSON.stringify(stats)})`);
      }
      rates[mode] = (n / elapsed) * 1000;
    }
    const problems = (await receiver.report()).problems;
    if (problems.length > 0) throw new Error(`Invalid OTLP payload: ${problems[0]}`);

    // 2. Lag at a steady rate, per flush interval.
    const lag: OtlpBenchResult["lag"] = [];
    for (const flushMs of [1_000, 100]) {
      const session = `01JBENCHOTLPLAG${String(flushMs).padStart(11, "0")}`;
      const events = makeEvents(rate * lagSeconds, session);
      const journal = openSession(join(dir, `lag_${flushMs}.db`), session, events.length + 1);
      const outputs = exporter(receiver.port, flushMs, events.length);
      receiver.reset();
      const appended = new Map<string, number>();
      const start = performance.now();
      let sent = 0;
      while (sent < events.length) {
        const due = Math.min(
          events.length,
          Math.floor(((performance.now() - start) / 1000) * rate),
        );
        for (; sent < due; sent++) {
          const event = events[sent] as AgentEvent;
          journal.append(event);
          appended.set(event.id, epochNow());
          outputs.publish(event);
        }
        await new Promise((r) => setTimeout(r, 2));
      }
      await until(
        async () => (await receiver.report()).records >= events.length,
        30_000,
        "every lag record",
      );
      const report = await receiver.report();
      await outputs.close();
      journal.close();
      const lags = report.arrivals.map(([id, at]) => at - (appended.get(id) ?? at));
      lag.push({
        flushMs,
        p50: percentile(lags, 50),
        p99: percentile(lags, 99),
        events: lags.length,
      });
    }

    // Baseline of the lag: one full batch POSTed straight to the receiver.
    const batch = JSON.stringify(
      toExportLogsRequest(makeEvents(512, "01JBENCHOTLPRTT00000000000"), {
        serviceName: "sentry",
        host: "bench",
        version: "0.0.0",
      }),
    );
    const trips: number[] = [];
    for (let i = 0; i < (options.quick ? 20 : 50); i++) {
      const t = performance.now();
      const response = await fetch(`http://127.0.0.1:${receiver.port}/v1/logs`, {
        method: "POST",
        headers: { "content-type": "application/json" },
        body: batch,
      });
      await response.body?.cancel();
      trips.push(performance.now() - t);
    }
    const roundTrip = { p50: percentile(trips, 50), p99: percentile(trips, 99) };

    const journalOnly = rates["journal only"] ?? 0;
    const noOutput = rates["no output"] ?? 0;
    const exported = rates["OTLP export"] ?? 0;
    const f = (x: number) => Math.round(x).toLocaleString("en-US");
    const r = (x: number) => `${(x / journalOnly).toFixed(2)}x`;
    console.log(`OTLP export throughput: ${f(n)} events, batch_size 512, loopback receiver`);
    console.log(table([
      ["pipeline", "events/s", "vs journal only"],
      ["journal only (baseline)", f(journalOnly), "1.00x"],
      ["journal + publish, no output", f(noOutput), r(noOutput)],
      ["journal + OTLP export to receiver", f(exported), r(exported)],
    ]));
    console.log(`\nLag from journal append to receipt, ${f(rate)} events/s for ${lagSeconds} s`);
    console.log(table([
      ["case", "events", "p50 ms", "p99 ms"],
      ...lag.map((l) => [
        `flush_interval_ms ${l.flushMs}`,
        f(l.events),
        l.p50.toFixed(1),
        l.p99.toFixed(1),
      ]),
      [
        "baseline: one 512-record POST round trip",
        String(trips.length),
        roundTrip.p50.toFixed(1),
        roundTrip.p99.toFixed(1),
      ],
    ]));
    return { journalOnly, noOutput, exported, lag, roundTrip };
  } finally {
    await receiver.stop();
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) {
  await runOtlpBench({ quick: Deno.args.includes("--quick") });
}
