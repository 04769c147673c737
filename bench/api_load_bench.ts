// deno-lint-ignore-file no-console
/**
 * Load on the local API: `autocannon` (npm, run with Deno in its own process) against the app
 * served by `Deno.serve` on loopback, 10 connections for a few seconds per endpoint:
 * `GET /health` and `GET /v1/sessions/:id/events` (100 per page, with the token) on the big
 * session of a 1,000,000-event journal (_event_journal.ts), unfiltered and filtered. Baseline
 * in the same run: a bare `Deno.serve` hello-world handler, the most this machine serves.
 *
 * Run: deno run -A bench/api_load_bench.ts [--quick] [--events N] [--seconds N] [--connections N]
 * @module
 */
import { join } from "node:path";
import { allowedHostsFor, createApp, createLiveHub, type SentryApp } from "../src/api/mod.ts";
import { type Journal, openJournal } from "../src/journal/mod.ts";
import type { LoadConfig, LoadResult } from "./_autocannon.ts";
import { buildEventJournal } from "./_event_journal.ts";
import {
  CLOCK_TICKS,
  cpuTicks,
  machineLine,
  markMachine,
  parseBenchArgs,
  ROOT,
  table,
} from "./_harness.ts";

/** Options for {@link runApiLoadBench}. */
export interface ApiLoadBenchOptions {
  /** Events in the journal; default 1,000,000 (100,000 with `quick`). */
  events?: number;
  /** Seconds per endpoint; default 5 (2 with `quick`). */
  seconds?: number;
  /** Concurrent connections; default 10. */
  connections?: number;
  quick?: boolean;
}

/** One endpoint's figures. */
export interface LoadCase extends LoadResult {
  name: string;
  /** The server process's CPU during the run, in percent of one core. */
  serverCpu: number;
}

const TOKEN = "bench-token-0123456789abcdef";

/** Runs autocannon in its own process and returns what it measured. */
async function autocannon(config: LoadConfig): Promise<LoadResult> {
  const out = await new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "-q",
      "--config",
      join(ROOT, "deno.json"),
      join(ROOT, "bench", "_autocannon.ts"),
      JSON.stringify(config),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const text = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || text === "") {
    throw new Error(`autocannon failed: ${new TextDecoder().decode(out.stderr)}`);
  }
  return JSON.parse(text) as LoadResult;
}

/** Serves `handler` on a loopback port until the returned `close` is called. */
function serve(
  handler: (req: Request) => Response | Promise<Response>,
): { port: number; close: () => Promise<void> } {
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    handler,
  );
  return {
    port: server.addr.port,
    close: async () => {
      ac.abort();
      await server.finished;
    },
  };
}

/** Runs the benchmark, prints its table and returns the figures. */
export async function runApiLoadBench(options: ApiLoadBenchOptions = {}): Promise<LoadCase[]> {
  const quick = options.quick ?? false;
  const events = options.events ?? (quick ? 100_000 : 1_000_000);
  const seconds = options.seconds ?? (quick ? 2 : 5);
  const connections = options.connections ?? 10;
  const dir = Deno.makeTempDirSync({ prefix: "sentry_api_load_bench_" });
  let app: SentryApp | undefined;
  let journal: Journal | undefined;
  const ready: { app?: SentryApp } = {};
  const server = serve((req) => ready.app?.fetch(req) ?? new Response(null, { status: 503 }));
  const bare = serve(() => new Response("hello"));
  try {
    const built = buildEventJournal(join(dir, "journal.db"), { events });
    journal = openJournal(built.path);
    app = createApp({
      journal,
      dataDir: dir,
      token: TOKEN,
      allowedHosts: allowedHostsFor("127.0.0.1", server.port),
      live: createLiveHub(),
    });
    ready.app = app;
    const base = `http://127.0.0.1:${server.port}`;
    const auth = { authorization: `Bearer ${TOKEN}` };
    const { firstMs, lastMs, id } = built.big;
    const since = new Date(firstMs + (lastMs - firstMs) * 0.5).toISOString();
    const cases: [string, LoadConfig][] = [
      ["baseline: bare Deno.serve hello world", {
        url: `http://127.0.0.1:${bare.port}/`,
        connections,
        duration: seconds,
      }],
      ["GET /health", { url: `${base}/health`, connections, duration: seconds }],
      [
        "GET events, 100 per page",
        {
          url: `${base}/v1/sessions/${id}/events?limit=100`,
          headers: auth,
          connections,
          duration: seconds,
        },
      ],
      [
        "GET events, 100 per page, verdict=deny&since",
        {
          url: `${base}/v1/sessions/${id}/events?limit=100&verdict=deny&since=${since}`,
          headers: auth,
          connections,
          duration: seconds,
        },
      ],
      ["GET /v1/sessions", {
        url: `${base}/v1/sessions`,
        headers: auth,
        connections,
        duration: seconds,
      }],
    ];
    const mark = markMachine();
    const results: LoadCase[] = [];
    for (const [name, config] of cases) {
      const before = cpuTicks(Deno.pid) ?? 0;
      const start = performance.now();
      const result = await autocannon(config);
      const wall = performance.now() - start;
      const cpu = (((cpuTicks(Deno.pid) ?? 0) - before) * 1000) / CLOCK_TICKS;
      results.push({ name, ...result, serverCpu: (cpu / wall) * 100 });
    }
    console.log(
      `load with autocannon 9.0.0 (npm, under Deno, in its own process): ${connections} ` +
        `connections, ${seconds} s per endpoint, loopback; events from the big session ` +
        `(${built.big.events.toLocaleString("en-US")} events) of a ${
          events.toLocaleString("en-US")
        }-event journal`,
    );
    const bareRps = results[0]?.rps ?? NaN;
    console.log(table([
      [
        "endpoint",
        "req/s",
        "vs bare",
        "MB/s",
        "latency mean ms",
        "p50",
        "p99",
        "max",
        "non-2xx",
        "errors",
        "server CPU",
      ],
      ...results.map((r) => [
        r.name,
        Math.round(r.rps).toLocaleString("en-US"),
        `${((r.rps / bareRps) * 100).toFixed(0)}%`,
        (r.bytesPerSecond / 1e6).toFixed(1),
        r.latency.mean.toFixed(2),
        String(r.latency.p50),
        String(r.latency.p99),
        String(r.latency.max),
        String(r.non2xx),
        String(r.errors + r.timeouts),
        `${r.serverCpu.toFixed(0)}%`,
      ]),
    ]));
    console.log(
      "(autocannon records latencies in whole ms, hence the 0s; server CPU is the serving " +
        "process's, in percent of one core; the load generator runs on the same 2 cores)",
    );
    console.log(machineLine(mark));
    return results;
  } finally {
    app?.close();
    journal?.close();
    await server.close();
    await bare.close();
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  await runApiLoadBench({
    quick,
    ...(numbers["events"] ? { events: numbers["events"][0] as number } : {}),
    ...(numbers["seconds"] ? { seconds: numbers["seconds"][0] as number } : {}),
    ...(numbers["connections"] ? { connections: numbers["connections"][0] as number } : {}),
  });
}
