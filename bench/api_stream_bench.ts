// deno-lint-ignore-file no-console
/**
 * SSE fan-out of `GET /v1/events/stream` over real loopback HTTP.
 *
 * 50 clients (a separate process, `_sse_clients.ts`: `fetch` streams, SSE parsed by hand,
 * reopened with Last-Event-ID if the server ends a stream) follow the stream while a burst of
 * events arrives at 2,000 events/s for 5 s, in the two ways Sentry serves it:
 * - `hub`, as `sentry run` does: the session appends each event to its journal and publishes it
 *   to a LiveHub in the process that serves the API;
 * - `poller`, as `sentry serve` does: another process (`_journal_writer.ts`, standing for a
 *   `sentry run`) appends to the shared journal, and the API's journalPoller reads it (every
 *   200 ms, after the writer's 50 ms batches).
 * Per client: losses (goal: none), duplicates and reopened streams; over all deliveries: delay
 * from the append to the client's read, p50, p99 and max. Baseline in the same run: the same
 * burst to a single client.
 *
 * Run: deno run -A bench/api_stream_bench.ts [--quick] [--clients N] [--rate N] [--seconds N]
 * @module
 */
import { join } from "node:path";
import {
  allowedHostsFor,
  createApp,
  createLiveHub,
  journalPoller,
  type LiveSource,
} from "../src/api/mod.ts";
import { createUlid, ulidTime } from "../src/events/mod.ts";
import { openJournal } from "../src/journal/mod.ts";
import { eventMaker } from "./_event_journal.ts";
import {
  CLOCK_TICKS,
  cpuTicks,
  delay,
  machineLine,
  markMachine,
  parseBenchArgs,
  percentile,
  ROOT,
  table,
} from "./_harness.ts";
import { runWriter } from "./_journal_writer.ts";
import type { ClientResult, ClientsConfig, ClientsOutput } from "./_sse_clients.ts";

/** Options for {@link runApiStreamBench}. */
export interface ApiStreamBenchOptions {
  /** Concurrent clients; default 50. */
  clients?: number;
  /** Events per second in the burst; default 2,000. */
  rate?: number;
  /** Length of the burst in seconds; default 5 (2 with `quick`). */
  seconds?: number;
  quick?: boolean;
}

/** One run's figures. */
export interface StreamRun {
  variant: "hub" | "poller";
  clients: number;
  published: number;
  /** Events missing, summed over clients. */
  lost: number;
  clientsWithLoss: number;
  duplicates: number;
  reconnects: number;
  /** Body chunks the clients read, per event received. */
  readsPerEvent: number;
  errors: string[];
  /** CPU time of the serving process and of the clients' process during the run, in ms. */
  serverCpuMs: number;
  clientsCpuMs: number;
  /** Delay from append to arrival over all deliveries, in ms. */
  p50: number;
  p99: number;
  max: number;
}

const TOKEN = "bench-token-0123456789abcdef";
const SESSION = "01JBENCHSTREAM000000000000";

/** Starts the clients' process and resolves once every client has its response. */
async function startClients(config: ClientsConfig): Promise<{
  stop: () => Promise<ClientsOutput>;
  done: Promise<ClientsOutput>;
}> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "-q",
      "--config",
      join(ROOT, "deno.json"),
      join(ROOT, "bench", "_sse_clients.ts"),
      JSON.stringify(config),
    ],
    stdin: "piped",
    stdout: "piped",
    stderr: "inherit",
  }).spawn();
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let text = "";
  const deadline = setTimeout(() => child.kill("SIGKILL"), 30_000);
  while (!text.includes("ready\n")) {
    const { value, done } = await reader.read();
    if (done) throw new Error(`The SSE clients exited before they were ready: ${text}`);
    text += value;
  }
  clearTimeout(deadline);
  text = text.slice(text.indexOf("ready\n") + 6);
  const writer = child.stdin.getWriter();
  const done = (async () => {
    for (;;) {
      const { value, done } = await reader.read();
      if (done) break;
      text += value;
    }
    const status = await child.status;
    await writer.close().catch(() => {});
    if (!status.success) throw new Error(`The SSE clients exited with ${status.code}`);
    return JSON.parse(text) as ClientsOutput;
  })();
  const stop = async () => {
    await writer.write(new TextEncoder().encode("stop\n")).catch(() => {});
    const timer = setTimeout(() => child.kill("SIGKILL"), 20_000);
    try {
      return await done;
    } finally {
      clearTimeout(timer);
    }
  };
  return { stop, done };
}

/** Waits for `done` up to `ms`, then stops the clients. */
async function collect(
  clients: { stop: () => Promise<ClientsOutput>; done: Promise<ClientsOutput> },
  ms: number,
): Promise<ClientsOutput> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<undefined>((resolve) => {
    timer = setTimeout(() => resolve(undefined), ms);
  });
  const finished = await Promise.race([clients.done, timeout]);
  clearTimeout(timer);
  return finished ?? await clients.stop();
}

/** One burst to `count` clients; returns the figures. */
async function runOnce(
  variant: "hub" | "poller",
  count: number,
  options: { rate: number; seconds: number },
): Promise<StreamRun> {
  const dir = Deno.makeTempDirSync({ prefix: "sentry_api_stream_bench_" });
  const path = join(dir, "journal.db");
  const journal = openJournal(path);
  const hub = createLiveHub();
  const poller = variant === "poller" ? journalPoller(journal) : undefined;
  const live: LiveSource = poller ?? hub;
  const ac = new AbortController();
  const ready: { app?: ReturnType<typeof createApp> } = {};
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    (req) => ready.app?.fetch(req) ?? new Response(null, { status: 503 }),
  );
  ready.app = createApp({
    journal,
    dataDir: dir,
    token: TOKEN,
    allowedHosts: allowedHostsFor("127.0.0.1", server.addr.port),
    live,
  });
  const total = Math.round(options.rate * options.seconds);
  try {
    const clients = await startClients({
      url: `http://127.0.0.1:${server.addr.port}/v1/events/stream`,
      token: TOKEN,
      clients: count,
      // The poller's writer may append a few more than `total`: clients wait for the stop.
      expected: variant === "hub" ? total : Number.MAX_SAFE_INTEGER,
    });
    // The stream subscribes once its response has started; give every one time to.
    await delay(300);
    const cpuBefore = cpuTicks(Deno.pid) ?? 0;
    const sentAt = new Map<string, number>();
    let published: string[];
    if (variant === "hub") {
      journal.createSession({
        id: SESSION,
        agent: "bench",
        command: ["bench"],
        pid: Deno.pid,
        kind: "run",
        policy: "default",
        mode: "monitor",
        workspace: "/work/project",
      });
      const ulid = createUlid();
      const make = eventMaker(7);
      const start = performance.now();
      published = [];
      while (published.length < total) {
        const due = Math.min(
          total,
          Math.floor(((performance.now() - start) * options.rate) / 1000),
        );
        while (published.length < due) {
          const event = make({ id: ulid(), ms: Date.now(), session: SESSION, i: published.length });
          // As the session does: journal first, then the live feed.
          journal.append(event);
          sentAt.set(event.id, performance.timeOrigin + performance.now());
          hub.publish(event);
          published.push(event.id);
        }
        await delay(1);
      }
    } else {
      const run = await runWriter({
        path,
        session: SESSION,
        rate: options.rate,
        durationMs: options.seconds * 1000,
        batchMs: 50,
      }, { timeoutMs: options.seconds * 1000 + 20_000 });
      if (!run.done) throw new Error(`The journal writer did not finish: ${run.stderr}`);
      published = run.printed;
      // The writer's ids are minted from its clock at the append: ms precision.
      for (const id of published) sentAt.set(id, ulidTime(id));
    }
    const output = await collect(clients, variant === "hub" ? 10_000 : 3_000);
    const serverCpuMs = (((cpuTicks(Deno.pid) ?? 0) - cpuBefore) * 1000) / CLOCK_TICKS;
    return {
      ...analyse(published, sentAt, output.clients),
      variant,
      serverCpuMs,
      clientsCpuMs: output.cpuMs,
    };
  } finally {
    ac.abort();
    await server.finished;
    ready.app?.close();
    poller?.close();
    journal.close();
    Deno.removeSync(dir, { recursive: true });
  }
}

function analyse(
  published: readonly string[],
  sentAt: ReadonlyMap<string, number>,
  results: readonly ClientResult[],
): Omit<StreamRun, "variant" | "serverCpuMs" | "clientsCpuMs"> {
  const delays: number[] = [];
  let lost = 0;
  let clientsWithLoss = 0;
  let duplicates = 0;
  let reconnects = 0;
  let reads = 0;
  let received = 0;
  const errors: string[] = [];
  for (const r of results) {
    const seen = new Set<string>();
    r.ids.forEach((id, i) => {
      if (seen.has(id)) {
        duplicates++;
        return;
      }
      seen.add(id);
      const sent = sentAt.get(id);
      if (sent !== undefined) delays.push((r.times[i] as number) - sent);
    });
    const missing = published.filter((id) => !seen.has(id)).length;
    lost += missing;
    if (missing > 0) clientsWithLoss++;
    reconnects += r.reconnects;
    reads += r.reads;
    received += r.ids.length;
    errors.push(...r.errors);
  }
  return {
    clients: results.length,
    published: published.length,
    lost,
    clientsWithLoss,
    duplicates,
    reconnects,
    readsPerEvent: received === 0 ? 0 : reads / received,
    errors,
    p50: percentile(delays, 50),
    p99: percentile(delays, 99),
    max: delays.reduce((a, b) => Math.max(a, b), -Infinity),
  };
}

/** Runs the benchmark, prints its table and returns the figures. */
export async function runApiStreamBench(options: ApiStreamBenchOptions = {}): Promise<StreamRun[]> {
  const clients = options.clients ?? 50;
  const rate = options.rate ?? 2000;
  const seconds = options.seconds ?? (options.quick ? 2 : 5);
  const mark = markMachine();
  const runs: StreamRun[] = [];
  for (const variant of ["hub", "poller"] as const) {
    for (const count of [...new Set([1, 10, clients])]) {
      runs.push(await runOnce(variant, count, { rate, seconds }));
    }
  }
  console.log(
    `SSE fan-out over loopback: a burst of ${rate.toLocaleString("en-US")} events/s for ` +
      `${seconds} s; hub = published in the serving process (sentry run), poller = written by ` +
      "another process and polled from the journal (sentry serve)",
  );
  const ms = (x: number) => Number.isFinite(x) ? (x < 10 ? x.toFixed(2) : x.toFixed(1)) : "-";
  console.log(table([
    [
      "variant",
      "clients",
      "events",
      "lost",
      "clients with loss",
      "duplicates",
      "reopened",
      "reads/event",
      "delay p50 ms",
      "p99 ms",
      "max ms",
      "server CPU s",
      "clients CPU s",
    ],
    ...runs.map((r) => [
      `${r.variant}${r.clients === 1 ? " (baseline)" : ""}`,
      String(r.clients),
      r.published.toLocaleString("en-US"),
      String(r.lost),
      String(r.clientsWithLoss),
      String(r.duplicates),
      String(r.reconnects),
      r.readsPerEvent.toFixed(2),
      ms(r.p50),
      ms(r.p99),
      ms(r.max),
      (r.serverCpuMs / 1000).toFixed(2),
      (r.clientsCpuMs / 1000).toFixed(2),
    ]),
  ]));
  const lost = runs.reduce((a, r) => a + r.lost, 0);
  console.log(
    `losses: ${lost === 0 ? "none (goal met)" : `${lost} (goal NOT met)`}. The poller's delays ` +
      "are measured from the id's ms (up to 1 ms more than the truth) and include the writer's " +
      "50 ms batch and the 200 ms poll interval",
  );
  const errors = runs.flatMap((r) => r.errors);
  if (errors.length > 0) console.log(`client errors: ${[...new Set(errors)].join("; ")}`);
  console.log(machineLine(mark));
  return runs;
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  await runApiStreamBench({
    quick,
    ...(numbers["clients"] ? { clients: numbers["clients"][0] as number } : {}),
    ...(numbers["rate"] ? { rate: numbers["rate"][0] as number } : {}),
    ...(numbers["seconds"] ? { seconds: numbers["seconds"][0] as number } : {}),
  });
}
