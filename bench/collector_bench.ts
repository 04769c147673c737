// deno-lint-ignore-file no-console
/**
 * The collector's ingest rate with 10 concurrent hosts: 10 clients, each with its own key and
 * host id, post gzip batches of 500 events over loopback to a real `sentry server` (a separate
 * process, started from source), as fast as it answers. Reported: events per second, batch
 * latency p50 and p99 as the clients see it, and the server's CPU per 1,000 events.
 *
 * Baselines in the same run, on the same batches:
 * - `ingestBatch` alone: the SQLite transaction, no HTTP, no decompression, no validation;
 * - the whole app in process (`app.request()`: gunzip, JSON, zod, ingest), one batch at a time,
 *   no socket;
 * - one host over HTTP.
 *
 * Run: deno run -A bench/collector_bench.ts [--quick] [--batches N]   (N per host; default 30)
 * @module
 */
import { join } from "node:path";
import { createCollectorApp, ingestBatch, openKeyStore } from "../src/collector/mod.ts";
import { type AgentEvent, createUlid } from "../src/events/mod.ts";
import { JOURNAL_FILE, openJournal, type SessionRecord } from "../src/journal/mod.ts";
import { cpuNanos, parseBenchArgs, percentile, rng, sentryCommand, table } from "./_harness.ts";

/** Options for {@link runCollectorBench}. */
export interface CollectorBenchOptions {
  /** Concurrent hosts; default 10. */
  hosts?: number;
  /** Batches each host posts; default 30 (8 with `quick`). */
  batches?: number;
  /** Events per batch; default 500 (the protocol's maximum). */
  eventsPerBatch?: number;
  quick?: boolean;
}

/** One measured case. */
export interface IngestCase {
  name: string;
  events: number;
  seconds: number;
  eventsPerSecond: number;
  /** Per batch, in ms. */
  p50Ms: number;
  p99Ms: number;
  /** The server's CPU per 1,000 events, in ms (HTTP cases only). */
  cpuMsPer1000: number | null;
}

/** What {@link runCollectorBench} measured. */
export interface CollectorBenchResult {
  cases: IngestCase[];
}

const KINDS = ["file.read", "file.write", "proc.exec", "net.connect"] as const;

interface HostPlan {
  hostId: string;
  name: string;
  /** The batches as JSON bodies, and gzipped. */
  json: string[];
  gzipped: Uint8Array<ArrayBuffer>[];
  /** The batches as values, for the ingest baseline. */
  parsed: { sessions: SessionRecord[]; events: AgentEvent[] }[];
}

function session(id: string, host: string): SessionRecord {
  return {
    id,
    agent: "claude",
    command: ["claude", "--dangerously-skip-permissions"],
    pid: 4321,
    kind: "run",
    policy: "coding-agent",
    mode: "alert",
    workspace: "/home/dev/project",
    host,
    sentryPid: 4320,
    startedAt: "2026-11-24T18:00:00.000Z",
    endedAt: null,
    state: "running",
    exitCode: null,
    note: null,
    tier: null,
  };
}

function randomHex(random: () => number): string {
  let out = "";
  for (let i = 0; i < 8; i++) out += Math.floor(random() * 2 ** 32).toString(16).padStart(8, "0");
  return out;
}

function event(
  ulid: () => string,
  random: () => number,
  sessionId: string,
  i: number,
): AgentEvent {
  const kind = KINDS[i % KINDS.length] ?? "file.read";
  return {
    id: ulid(),
    ts: new Date(Date.UTC(2026, 10, 24, 18, 0, 0) + i).toISOString(),
    session: sessionId,
    agent: "claude",
    pid: 4321 + (i % 7),
    ppid: 4321,
    exe: "/usr/bin/python3",
    cmdline: ["python3", "tools/run_tests.py", "--fast"],
    kind,
    target: kind === "net.connect" ? "10.0.0.7:5432" : `/home/dev/project/src/module_${i % 300}.ts`,
    // A content hash, as file events carry: real batches do not compress 30 to 1.
    detail: { bytes: i * 13, flags: "O_WRONLY|O_CREAT", sha256: randomHex(random) },
    sensor: kind === "net.connect" ? "net" : "fd",
    verdict: i % 40 === 0 ? "deny" : "allow",
    risk: (i * 7) % 60,
    factors: [{ id: "kind", points: (i * 7) % 60, reason: "a file action in the workspace" }],
    rule: "files.write.allow",
    response: i % 40 === 0 ? "alert" : "none",
  };
}

async function gzip(text: string): Promise<Uint8Array<ArrayBuffer>> {
  return await new Response(
    new Blob([text]).stream().pipeThrough(new CompressionStream("gzip")),
  ).bytes();
}

async function plan(hosts: number, batches: number, perBatch: number): Promise<HostPlan[]> {
  const ulid = createUlid();
  const random = rng(7);
  const out: HostPlan[] = [];
  for (let h = 0; h < hosts; h++) {
    const hostId = ulid();
    const name = `build-${h}`;
    const sessionId = ulid();
    const p: HostPlan = { hostId, name, json: [], gzipped: [], parsed: [] };
    for (let b = 0; b < batches; b++) {
      const events = Array.from(
        { length: perBatch },
        (_, i) => event(ulid, random, sessionId, b * perBatch + i),
      );
      const sessions = [session(sessionId, name)];
      const json = JSON.stringify({
        protocol: 1,
        batch: ulid(),
        host: { id: hostId, name },
        sent_at: new Date().toISOString(),
        sessions,
        events,
        dropped: 0,
      });
      p.json.push(json);
      p.gzipped.push(await gzip(json));
      p.parsed.push({ sessions, events });
    }
    out.push(p);
  }
  return out;
}

function summarize(
  name: string,
  events: number,
  ms: number,
  latencies: number[],
  cpuMsPer1000: number | null = null,
): IngestCase {
  return {
    name,
    events,
    seconds: ms / 1000,
    eventsPerSecond: events / (ms / 1000),
    p50Ms: percentile(latencies, 50),
    p99Ms: percentile(latencies, 99),
    cpuMsPer1000,
  };
}

/** Baseline: `ingestBatch` of the parsed batches into the journal, one after another. */
function ingestOnly(dir: string, plans: HostPlan[]): IngestCase {
  const journal = openJournal(join(dir, JOURNAL_FILE), { hostname: "collector" });
  try {
    const latencies: number[] = [];
    let events = 0;
    const t0 = performance.now();
    for (const [h, p] of plans.entries()) {
      for (const batch of p.parsed) {
        const t = performance.now();
        events += ingestBatch(journal, { key: `k_host${h}`, hostId: p.hostId, ...batch }).accepted;
        latencies.push(performance.now() - t);
      }
    }
    return summarize(
      "ingestBatch only (no HTTP, no validation)",
      events,
      performance.now() - t0,
      latencies,
    );
  } finally {
    journal.close();
  }
}

/** Baseline: the app in process, one batch at a time, no socket. */
async function inProcess(dir: string, plans: HostPlan[]): Promise<IngestCase> {
  const journal = openJournal(join(dir, JOURNAL_FILE), { hostname: "collector" });
  const keys = openKeyStore(dir);
  const app = createCollectorApp({ journal, keys });
  try {
    const hostKeys = plans.map((p) => keys.add(p.name).key);
    const latencies: number[] = [];
    let events = 0;
    const t0 = performance.now();
    for (const [h, p] of plans.entries()) {
      for (const body of p.gzipped) {
        const t = performance.now();
        const response = await app.request("/v1/sync/batches", {
          method: "POST",
          headers: headers(hostKeys[h] ?? ""),
          body,
        });
        const result = await response.json();
        if (response.status !== 200) throw new Error(`Batch refused: ${JSON.stringify(result)}`);
        events += result.accepted;
        latencies.push(performance.now() - t);
      }
    }
    return summarize(
      "app.request() in process (gunzip, JSON, zod, ingest)",
      events,
      performance.now() - t0,
      latencies,
    );
  } finally {
    app.close();
    journal.close();
  }
}

function headers(key: string): Record<string, string> {
  return {
    authorization: `Bearer ${key}`,
    "content-type": "application/json",
    "content-encoding": "gzip",
    "sentry-protocol": "1",
  };
}

/** Starts `sentry server` from source on a free loopback port; resolves with its URL. */
async function startServer(dir: string): Promise<{ url: string; child: Deno.ChildProcess }> {
  const [cmd, ...args] = sentryCommand(["server", "--port", "0", "--data", dir]);
  const child = new Deno.Command(cmd as string, {
    args,
    env: { SENTRY_HOME: join(dir, "home"), NO_COLOR: "1" },
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let text = "";
  const reader = child.stderr.pipeThrough(new TextDecoderStream()).getReader();
  const deadline = Date.now() + 30_000;
  while (Date.now() < deadline) {
    const { done, value } = await reader.read();
    if (done) break;
    text += value;
    const m = /listening at (http:\/\/[^\s]+)/.exec(text);
    if (m !== null) {
      // Keep draining stderr so the server never blocks on a full pipe.
      (async () => {
        while (!(await reader.read()).done) { /* drain */ }
      })().catch(() => {});
      return { url: m[1] as string, child };
    }
  }
  child.kill("SIGKILL");
  throw new Error(`sentry server did not start:\n${text}`);
}

/** `hosts` clients posting their batches at once to a real `sentry server`. */
async function overHttp(dir: string, plans: HostPlan[], name: string): Promise<IngestCase> {
  const keys = openKeyStore(dir);
  const hostKeys = plans.map((p) => keys.add(p.name).key);
  const { url, child } = await startServer(dir);
  try {
    const latencies: number[] = [];
    let events = 0;
    const cpu0 = cpuNanos(child.pid) ?? 0;
    const t0 = performance.now();
    await Promise.all(plans.map(async (p, h) => {
      for (const body of p.gzipped) {
        while (true) {
          const t = performance.now();
          const response = await fetch(`${url}/v1/sync/batches`, {
            method: "POST",
            headers: headers(hostKeys[h] ?? ""),
            body,
          });
          const result = await response.json();
          if (response.status === 503) continue; // busy: the real client waits Retry-After
          if (response.status !== 200) throw new Error(`Batch refused: ${JSON.stringify(result)}`);
          latencies.push(performance.now() - t);
          events += result.accepted;
          break;
        }
      }
    }));
    const ms = performance.now() - t0;
    const cpuMs = ((cpuNanos(child.pid) ?? cpu0) - cpu0) / 1e6;
    return summarize(name, events, ms, latencies, cpuMs / (events / 1000));
  } finally {
    child.kill("SIGTERM");
    await child.status;
  }
}

/** Runs the benchmark and prints its table. */
export async function runCollectorBench(
  options: CollectorBenchOptions = {},
): Promise<CollectorBenchResult> {
  const hosts = options.hosts ?? 10;
  const batches = options.batches ?? (options.quick ? 8 : 30);
  const perBatch = options.eventsPerBatch ?? 500;
  const plans = await plan(hosts, batches, perBatch);
  const root = Deno.makeTempDirSync({ prefix: "sentry_collector_bench_" });
  const sub = (name: string) => {
    const d = join(root, name);
    Deno.mkdirSync(d, { mode: 0o700 });
    return d;
  };
  try {
    const single = [{ ...plans[0] as HostPlan }];
    const cases = [
      ingestOnly(sub("ingest"), plans),
      await inProcess(sub("app"), plans),
      await overHttp(sub("one"), single, "HTTP, 1 host (sequential batches)"),
      await overHttp(sub("many"), plans, `HTTP, ${hosts} hosts at once`),
    ];
    const gz = plans.flatMap((p) => p.gzipped.map((g) => g.length));
    const raw = plans.flatMap((p) => p.json.map((j) => j.length));
    console.log(
      `collector ingest: ${hosts} hosts x ${batches} batches x ${perBatch} events; ` +
        `batch ${Math.round(percentile(raw, 50) / 1024)} KiB JSON, ` +
        `${Math.round(percentile(gz, 50) / 1024)} KiB gzip`,
    );
    const fmt = (x: number) => Math.round(x).toLocaleString("en-US");
    console.log(table([
      ["case", "events", "events/s", "batch p50 ms", "batch p99 ms", "server CPU ms/1k events"],
      ...cases.map((c) => [
        c.name,
        fmt(c.events),
        fmt(c.eventsPerSecond),
        c.p50Ms.toFixed(1),
        c.p99Ms.toFixed(1),
        c.cpuMsPer1000 === null ? "-" : c.cpuMsPer1000.toFixed(1),
      ]),
    ]));
    const expected = hosts * batches * perBatch;
    const many = cases[3] as IngestCase;
    console.log(
      `stored ${fmt(many.events)} of ${fmt(expected)} events from ${hosts} hosts ` +
        `(${many.events === expected ? "all, none twice" : "MISMATCH"})`,
    );
    return { cases };
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  await runCollectorBench({
    quick,
    ...(numbers["batches"]?.[0] === undefined ? {} : { batches: numbers["batches"][0] }),
    ...(numbers["hosts"]?.[0] === undefined ? {} : { hosts: numbers["hosts"][0] }),
  });
}
