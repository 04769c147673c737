// deno-lint-ignore-file no-console
/**
 * Sync: how fast the uploader drains the outbox to a real collector, and how long an event
 * takes to become visible at the collector while an agent produces 1,000 events per second.
 * The collector is a real `sentry server` (a separate process, from source) on loopback.
 *
 * 1. Throughput: N events are journaled with the outbox on, then `drainNow()` uploads them.
 *    Baselines in the same run, on the same events: the journaling rate itself (append + flush,
 *    outbox on and off), and `ingestBatch` of the same batches in process (the collector's
 *    storage alone: no HTTP, gzip or validation). The uploader's event-loop stalls during the
 *    drain are measured too (a 5 ms timer's lateness): they bound how long it could hold up the
 *    sensors in the same process.
 * 2. Lag: events are journaled at 1,000/s for a bounded time while the uploader runs; the time
 *    from each `append()` to the moment the event can be read from the collector's journal.
 *    Baseline: the same measurement on the local journal (its batch window alone).
 *
 * Run: deno run -A bench/sync_bench.ts [--quick] [--events N] [--seconds S]
 * @module
 */
import { join } from "node:path";
import { ingestBatch, openKeyStore } from "../src/collector/mod.ts";
import { type AgentEvent, createUlid } from "../src/events/mod.ts";
import { type Journal, JOURNAL_FILE, openJournal } from "../src/journal/mod.ts";
import { createUploader, DEFAULT_POLL_MS, type UploaderOptions } from "../src/sync/mod.ts";
import { testEvent, testSession } from "../src/sync/_testing.ts";
import {
  delay,
  machineLine,
  markMachine,
  parseBenchArgs,
  percentile,
  sentryCommand,
  table,
} from "./_harness.ts";

/** Options for {@link runSyncBench}. */
export interface SyncBenchOptions {
  /** Events in the throughput run; default 100,000 (20,000 with `quick`). */
  events?: number;
  /** Length of each lag run, in seconds; default 10 (4 with `quick`). */
  seconds?: number;
  /** The agent's rate in the lag runs; default 1,000 events/s. */
  rate?: number;
  quick?: boolean;
}

/** One lag run's figures, in ms. */
export interface LagFigures {
  name: string;
  events: number;
  p50: number;
  p99: number;
  max: number;
}

/** What {@link runSyncBench} measured. */
export interface SyncBenchResult {
  /** Events per second. */
  journalOutbox: number;
  journalPlain: number;
  ingest: number;
  upload: number;
  uploadBatches: number;
  /** The uploader process's event-loop stalls during the drain, and idle for as long, in ms. */
  stallP99: number;
  stallMax: number;
  idleStallP99: number;
  idleStallMax: number;
  lag: LagFigures[];
}

const HOST = { id: createUlid()(), name: "bench-host" };

/** A running `sentry server` with one upload key. */
interface Server {
  url: string;
  key: string;
  dir: string;
  child: Deno.ChildProcess;
  stop(): Promise<void>;
}

/** Starts `sentry server` from source on a free loopback port, with a key. */
async function startServer(dir: string): Promise<Server> {
  const key = openKeyStore(dir).add("bench").key;
  const [cmd, ...args] = sentryCommand(["server", "--port", "0", "--data", dir]);
  const child = new Deno.Command(cmd as string, {
    args,
    env: { SENTRY_HOME: join(dir, "home"), NO_COLOR: "1" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const { done, value } = await reader.read();
    if (done) break;
    text += value;
    const m = /listening at (http:\/\/\S+)/.exec(text);
    if (m !== null) {
      // Keep draining stderr so the server never blocks on a full pipe.
      (async () => {
        while (!(await reader.read()).done) { /* drain */ }
      })().catch(() => {});
      return {
        url: m[1] as string,
        key,
        dir,
        child,
        async stop() {
          child.kill("SIGTERM");
          await child.status;
        },
      };
    }
  }
  child.kill("SIGKILL");
  await child.status;
  throw new Error(`sentry server did not start:\n${text}`);
}

function hostJournal(path: string, outbox: boolean, session: string): Journal {
  const journal = openJournal(path, { outbox, hostname: "bench-host" });
  journal.createSession(testSession(session));
  return journal;
}

function makeEvents(count: number, session: string): AgentEvent[] {
  return Array.from({ length: count }, (_, i) => testEvent(session, i));
}

/** Appends and flushes the events; events per second. */
function journalRate(path: string, events: AgentEvent[], outbox: boolean): number {
  const journal = hostJournal(path, outbox, events[0]?.session ?? "S");
  const t0 = performance.now();
  for (const e of events) journal.append(e);
  journal.flush();
  const rate = events.length / ((performance.now() - t0) / 1000);
  journal.close();
  return rate;
}

/** `ingestBatch` of the events in batches of 500, in process; events per second. */
function ingestRate(path: string, events: AgentEvent[]): number {
  const journal = openJournal(path, { hostname: "collector" });
  const record = {
    ...testSession(events[0]?.session ?? "S"),
    host: "bench-host",
    sentryPid: 1,
    tier: null,
    startedAt: new Date().toISOString(),
    endedAt: null,
    state: "running" as const,
    exitCode: null,
    note: null,
  };
  const t0 = performance.now();
  for (let i = 0; i < events.length; i += 500) {
    ingestBatch(journal, {
      key: "k_bench",
      hostId: HOST.id,
      sessions: [record],
      events: events.slice(i, i + 500),
    });
  }
  const rate = events.length / ((performance.now() - t0) / 1000);
  journal.close();
  return rate;
}

/** Measures a 5 ms timer's lateness until stopped: the event loop's stalls. */
function stallMeter(): { stop(): number[] } {
  const late: number[] = [];
  let last = performance.now();
  const timer = setInterval(() => {
    const now = performance.now();
    late.push(Math.max(0, now - last - 5));
    last = now;
  }, 5);
  return {
    stop() {
      clearInterval(timer);
      return late;
    },
  };
}

async function throughputRun(
  dir: string,
  server: Server,
  count: number,
): Promise<{ rate: number; batches: number; stalls: number[]; idle: number[] }> {
  const session = createUlid()();
  const journal = hostJournal(join(dir, "upload.db"), true, session);
  for (const e of makeEvents(count, session)) journal.append(e);
  journal.flush();
  const uploader = createUploader(journal, {
    endpoint: server.url,
    apiKey: server.key,
    host: HOST,
  });
  const meter = stallMeter();
  const t0 = performance.now();
  const result = await uploader.drainNow({ timeoutMs: 600_000 });
  const seconds = (performance.now() - t0) / 1000;
  const stalls = meter.stop();
  await uploader.close();
  journal.close();
  if (!result.ok || result.accepted !== count) {
    throw new Error(`Upload did not finish: ${result.reason} (${result.accepted} of ${count})`);
  }
  // Baseline: the same process, idle for as long (other processes of the machine stall it too).
  const idleMeter = stallMeter();
  await delay(seconds * 1000);
  const idle = idleMeter.stop();
  return { rate: count / seconds, batches: result.batches, stalls, idle };
}

/**
 * Journals events at `rate` for `seconds` (the uploader running when `upload` is given) and
 * returns each event's lag from its append to the moment it could be read from `watch`.
 */
async function lagRun(options: {
  name: string;
  journal: Journal;
  session: string;
  rate: number;
  seconds: number;
  watch: () => Journal;
  upload?: UploaderOptions;
}): Promise<LagFigures> {
  const { journal, rate } = options;
  const appended = new Map<string, number>();
  const lags: number[] = [];
  const uploader = options.upload === undefined ? null : createUploader(journal, options.upload);
  const running = uploader?.start();
  const watched = options.watch();
  let last: string | undefined;
  let polling = true;
  const poller = (async () => {
    while (polling || lags.length < appended.size) {
      const seen = watched.queryEvents({
        ...(last === undefined ? {} : { after: last }),
        limit: 100_000,
      });
      const now = performance.now();
      for (const e of seen) {
        const t = appended.get(e.id);
        if (t !== undefined) lags.push(now - t);
        last = e.id;
      }
      await delay(2);
    }
  })();
  const t0 = performance.now();
  let written = 0;
  const total = Math.round(rate * options.seconds);
  let i = 0;
  while (written < total) {
    const due = Math.min(total, Math.floor(((performance.now() - t0) / 1000) * rate));
    while (written < due) {
      const event = testEvent(options.session, i++);
      appended.set(event.id, performance.now());
      journal.append(event);
      written++;
    }
    await delay(5);
  }
  const deadline = Date.now() + 60_000;
  while (lags.length < appended.size && Date.now() < deadline) await delay(20);
  polling = false;
  if (lags.length < appended.size) {
    throw new Error(`${options.name}: ${appended.size - lags.length} events never became visible`);
  }
  await poller;
  await uploader?.close();
  await running;
  if (watched !== journal) watched.close();
  return {
    name: options.name,
    events: lags.length,
    p50: percentile(lags, 50),
    p99: percentile(lags, 99),
    max: Math.max(...lags),
  };
}

/** Runs the benchmark, prints its tables and returns the figures. */
export async function runSyncBench(options: SyncBenchOptions = {}): Promise<SyncBenchResult> {
  const quick = options.quick ?? false;
  const count = options.events ?? (quick ? 20_000 : 100_000);
  const seconds = options.seconds ?? (quick ? 4 : 10);
  const rate = options.rate ?? 1000;
  const dir = Deno.makeTempDirSync({ prefix: "sentry_sync_bench_" });
  const server = await startServer(join(dir, "collector"));
  const machine = markMachine();
  try {
    const events = makeEvents(count, createUlid()());
    const journalOutbox = journalRate(join(dir, "outbox.db"), events, true);
    const journalPlain = journalRate(join(dir, "plain.db"), events, false);
    const ingest = ingestRate(join(dir, "ingest.db"), events);
    const upload = await throughputRun(dir, server, count);

    const lag: LagFigures[] = [];
    const collectorDb = join(server.dir, JOURNAL_FILE);
    {
      const session = createUlid()();
      const journal = hostJournal(join(dir, "lag_local.db"), true, session);
      lag.push(
        await lagRun({
          name: "local journal (baseline)",
          journal,
          session,
          rate,
          seconds,
          watch: () => journal,
        }),
      );
      journal.close();
    }
    for (const pollMs of [DEFAULT_POLL_MS, 25]) {
      const session = createUlid()();
      const journal = hostJournal(join(dir, `lag_${pollMs}.db`), true, session);
      lag.push(
        await lagRun({
          name: `collector, pollMs ${pollMs}${pollMs === DEFAULT_POLL_MS ? " (default)" : ""}`,
          journal,
          session,
          rate,
          seconds,
          watch: () => openJournal(collectorDb, { hostname: "bench-reader" }),
          upload: { endpoint: server.url, apiKey: server.key, host: HOST, pollMs },
        }),
      );
      journal.close();
    }

    const n = (x: number) => Math.round(x).toLocaleString("en-US");
    console.log(`sync throughput: ${n(count)} events, outbox to a sentry server on loopback`);
    console.log(table([
      ["case", "events/s"],
      ["journal append + flush, outbox off", n(journalPlain)],
      ["journal append + flush, outbox on (baseline)", n(journalOutbox)],
      ["collector storage alone: ingestBatch, 500/batch, in process", n(ingest)],
      [`uploader: outbox -> HTTP -> collector (${upload.batches} batches)`, n(upload.rate)],
    ]));
    const ms = (x: number) => x.toFixed(1);
    console.log(`\nevent-loop stalls of the uploading process (a 5 ms timer's lateness)`);
    console.log(table([
      ["while", "p99 ms", "max ms"],
      ["idle, as long (baseline)", ms(percentile(upload.idle, 99)), ms(Math.max(...upload.idle))],
      ["draining", ms(percentile(upload.stalls, 99)), ms(Math.max(...upload.stalls))],
    ]));
    console.log(
      `\nsync lag: ${n(rate)} events/s for ${seconds} s, from append() to readable at the target`,
    );
    console.log(table([
      ["target", "events", "p50 ms", "p99 ms", "max ms"],
      ...lag.map((l) => [l.name, n(l.events), n(l.p50), n(l.p99), n(l.max)]),
    ]));
    console.log(machineLine(machine));
    return {
      journalOutbox,
      journalPlain,
      ingest,
      upload: upload.rate,
      uploadBatches: upload.batches,
      stallP99: percentile(upload.stalls, 99),
      stallMax: Math.max(...upload.stalls),
      idleStallP99: percentile(upload.idle, 99),
      idleStallMax: Math.max(...upload.idle),
      lag,
    };
  } finally {
    await server.stop();
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  const options: SyncBenchOptions = { quick };
  if (numbers["events"]?.[0] !== undefined) options.events = numbers["events"][0];
  if (numbers["seconds"]?.[0] !== undefined) options.seconds = numbers["seconds"][0];
  if (numbers["rate"]?.[0] !== undefined) options.rate = numbers["rate"][0];
  await runSyncBench(options);
}
