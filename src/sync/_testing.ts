/**
 * What the uploader's tests and benchmark share: the real collector (`createCollectorApp`) on
 * loopback with a fault-injecting layer in front of its batch route, a TCP proxy that cuts
 * connections, and journals with queued events. Not a fake collector: every batch that gets
 * through is validated and stored by the real one, which counts duplicates itself.
 *
 * @module
 */

import { join } from "node:path";
import { createCollectorApp, type HostRecord, listHosts, openKeyStore } from "../collector/mod.ts";
import { type AgentEvent, createUlid } from "../events/mod.ts";
import { type Journal, JOURNAL_FILE, type NewSession, openJournal } from "../journal/mod.ts";

/** A batch request as the fault layer sees it. */
export interface BatchCall {
  /** 1 for the first `POST /v1/sync/batches`, and so on. */
  n: number;
  /** The decompressed body, parsed. */
  body: {
    events: AgentEvent[];
    sessions: { id: string; state: string }[];
    dropped: number;
    host: { id: string; name: string };
  };
  /** Its size in bytes, uncompressed. */
  jsonBytes: number;
  /** When it arrived, by the collector's clock. */
  at: number;
}

/**
 * What the fault layer does with a batch request: answer it itself without storing it
 * (`status`), pass it to the collector and answer late (`slow`: the batch is stored), or pass it
 * on and hold the answer until a promise settles (`hold`).
 */
export type Fault =
  | {
    kind: "status";
    status: number;
    headers?: Record<string, string>;
    error?: string;
    field?: string;
  }
  | { kind: "slow"; delayMs: number }
  | { kind: "hold"; until: Promise<unknown> };

/** Chooses a fault for a batch request, or null to pass it to the collector as it is. */
export type FaultPlan = (call: BatchCall) => Fault | null;

/** Options for {@link startCollector}. */
export interface CollectorOptions {
  /** The port; default any free one. A stopped collector restarts on its port. */
  port?: number;
  faults?: FaultPlan;
  /** The collector's batch limits. */
  limits?: { maxEvents?: number; maxBodyBytes?: number; maxJsonBytes?: number };
  /** The clock the fault layer stamps calls with; default `Date.now`. */
  now?: () => number;
}

/** A real collector on loopback, with its journal and one upload key. */
export interface TestCollector {
  readonly dir: string;
  readonly journal: Journal;
  /** The upload key's secret and id. */
  readonly key: string;
  readonly keyId: string;
  /** `http://127.0.0.1:PORT`. */
  readonly url: string;
  readonly port: number;
  /** Every batch request that reached the fault layer, in order. */
  readonly calls: BatchCall[];
  /** Requests being handled now. */
  inFlight(): number;
  /** Batches stored whose answer a `slow` or `hold` fault is holding back now. */
  held(): number;
  /** The ids of every event stored, sorted. */
  storedIds(): string[];
  /** The hosts' records (events, duplicates, dropped). */
  hosts(): HostRecord[];
  /** Stops listening (the data stays); {@link start} listens again on the same port. */
  stop(): Promise<void>;
  start(): void;
  /** Stops and deletes everything. */
  dispose(): Promise<void>;
}

/** Finds a free loopback port (nothing listens on it when this returns). */
export function freePort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}

/** A batch body as text, gunzipped when it says it is gzipped. */
async function bodyText(raw: Uint8Array<ArrayBuffer>, encoding: string | null): Promise<string> {
  const bytes = encoding === "gzip"
    ? await new Response(new Blob([raw]).stream().pipeThrough(new DecompressionStream("gzip")))
      .bytes()
    : raw;
  return new TextDecoder().decode(bytes);
}

/** Starts a real collector in a temporary directory, on loopback, with a fault layer. */
export function startCollector(options: CollectorOptions = {}): TestCollector {
  const dir = Deno.makeTempDirSync({ prefix: "sentry-sync-collector-" });
  const journal = openJournal(join(dir, JOURNAL_FILE), { hostname: "collector" });
  const keys = openKeyStore(dir);
  const { key, info } = keys.add("test-host");
  const app = createCollectorApp({
    journal,
    keys,
    ...(options.limits === undefined ? {} : { limits: options.limits }),
  });
  const now = options.now ?? Date.now;
  const calls: BatchCall[] = [];
  const plan = options.faults ?? (() => null);
  let inFlight = 0;
  let held = 0;
  let port = options.port ?? 0;
  let server: Deno.HttpServer | null = null;

  async function handle(request: Request): Promise<Response> {
    const url = new URL(request.url);
    if (request.method !== "POST" || url.pathname !== "/v1/sync/batches") {
      return await app.fetch(request);
    }
    inFlight++;
    try {
      // Read the body once, to show it to the plan and to replay it to the collector.
      const raw = new Uint8Array(await request.arrayBuffer());
      const text = await bodyText(raw, request.headers.get("content-encoding"));
      let body: BatchCall["body"];
      try {
        body = JSON.parse(text);
      } catch {
        body = { events: [], sessions: [], dropped: 0, host: { id: "", name: "" } };
      }
      const call: BatchCall = {
        n: calls.length + 1,
        body,
        jsonBytes: new TextEncoder().encode(text).length,
        at: now(),
      };
      calls.push(call);
      const fault = plan(call);
      if (fault?.kind === "status") {
        return Response.json(
          {
            error: fault.error ?? `Injected ${fault.status}`,
            ...(fault.field === undefined ? {} : { field: fault.field }),
          },
          { status: fault.status, ...(fault.headers ? { headers: fault.headers } : {}) },
        );
      }
      const replay = new Request(request.url, {
        method: "POST",
        headers: request.headers,
        body: raw,
      });
      const response = await app.fetch(replay);
      if (fault?.kind !== "slow" && fault?.kind !== "hold") return response;
      held++;
      try {
        if (fault.kind === "slow") await new Promise((r) => setTimeout(r, fault.delayMs));
        else await fault.until.catch(() => {});
      } finally {
        held--;
      }
      return response;
    } finally {
      inFlight--;
    }
  }

  function start(): void {
    if (server !== null) return;
    server = Deno.serve({
      hostname: "127.0.0.1",
      port,
      onListen: () => {},
      // A client that hangs up mid-request is one of the faults under test: not worth a line.
      onError: () => new Response("Internal error", { status: 500 }),
    }, handle);
    port = (server.addr as Deno.NetAddr).port;
  }

  async function stop(): Promise<void> {
    const s = server;
    server = null;
    if (s !== null) await s.shutdown();
  }

  start();
  return {
    dir,
    journal,
    key,
    keyId: info.id,
    get url() {
      return `http://127.0.0.1:${port}`;
    },
    get port() {
      return port;
    },
    calls,
    inFlight: () => inFlight,
    held: () => held,
    storedIds: () => journal.queryEvents({ limit: 100_000_000 }).map((e) => e.id).sort(),
    hosts: () => listHosts(journal),
    stop,
    start,
    async dispose() {
      await stop();
      app.close();
      if (!journal.closed) journal.close();
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** What {@link startProxy} does to connection number `n` (1-based). */
export interface ProxyRule {
  /** Close both ends once this many request bytes have gone upstream: a batch cut in half. */
  cutAfterRequestBytes?: number;
  /** Pass the request on, then close both ends instead of answering: stored, never confirmed. */
  dropResponse?: boolean;
}

/** A TCP proxy on loopback. */
export interface TestProxy {
  readonly port: number;
  readonly url: string;
  /** Connections accepted so far. */
  connections(): number;
  close(): Promise<void>;
}

async function writeAll(conn: Deno.Conn, bytes: Uint8Array): Promise<void> {
  let off = 0;
  while (off < bytes.length) off += await conn.write(bytes.subarray(off));
}

/**
 * Starts a TCP proxy on loopback to `upstreamPort` that cuts connections as `plan` says: the
 * faults that HTTP cannot express (a connection reset in the middle of a batch).
 */
export function startProxy(
  upstreamPort: number,
  plan: (n: number) => ProxyRule | null,
): TestProxy {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  const open = new Set<Deno.Conn>();
  const tasks = new Set<Promise<void>>();
  let count = 0;

  function close(conn: Deno.Conn): void {
    if (!open.delete(conn)) return;
    try {
      conn.close();
    } catch {
      // Closed already.
    }
  }

  async function pipe(
    from: Deno.Conn,
    to: Deno.Conn,
    limit: number,
    onData: (() => boolean) | null,
  ): Promise<void> {
    const buf = new Uint8Array(64 * 1024);
    let sent = 0;
    try {
      while (true) {
        const n = await from.read(buf);
        if (n === null) return;
        if (onData !== null && !onData()) return;
        if (sent + n >= limit) {
          await writeAll(to, buf.subarray(0, Math.max(0, limit - sent)));
          return;
        }
        await writeAll(to, buf.subarray(0, n));
        sent += n;
      }
    } catch {
      // The other side went away.
    }
  }

  async function serve(client: Deno.Conn, n: number): Promise<void> {
    open.add(client);
    const rule = plan(n);
    let upstream: Deno.Conn;
    try {
      upstream = await Deno.connect({ hostname: "127.0.0.1", port: upstreamPort });
    } catch {
      close(client);
      return;
    }
    open.add(upstream);
    const up = pipe(client, upstream, rule?.cutAfterRequestBytes ?? Infinity, null);
    const down = pipe(upstream, client, Infinity, rule?.dropResponse ? () => false : null);
    await Promise.race([up, down]);
    close(client);
    close(upstream);
    await Promise.allSettled([up, down]);
  }

  const accepting = (async () => {
    try {
      for await (const conn of listener) {
        const task = serve(conn, ++count);
        tasks.add(task);
        task.finally(() => tasks.delete(task));
      }
    } catch {
      // The listener was closed.
    }
  })();

  return {
    port,
    url: `http://127.0.0.1:${port}`,
    connections: () => count,
    async close() {
      try {
        listener.close();
      } catch {
        // Closed already.
      }
      for (const conn of [...open]) close(conn);
      await accepting;
      await Promise.allSettled([...tasks]);
    },
  };
}

const EVENT_IDS = createUlid();

/** A session for the test journals. */
export function testSession(id: string): NewSession {
  return {
    id,
    agent: "agent",
    command: ["python3", "agent.py"],
    pid: 4321,
    kind: "run",
    policy: "coding-agent",
    mode: "alert",
    workspace: "/w",
  };
}

/** A valid event of `session`; `pad` adds that many characters of detail. */
export function testEvent(session: string, i: number, pad = 0): AgentEvent {
  return {
    id: EVENT_IDS(),
    ts: new Date().toISOString(),
    session,
    agent: "agent",
    pid: 4321,
    ppid: 4320,
    exe: "/usr/bin/python3",
    cmdline: ["python3", "agent.py"],
    kind: i % 3 === 0 ? "file.write" : "file.read",
    target: `/w/src/file_${i}.py`,
    detail: pad > 0 ? { i, pad: "x".repeat(pad) } : { i },
    sensor: "fd",
    verdict: "allow",
    risk: i % 40,
    factors: [{ id: "kind", points: i % 40, reason: "a file in the workspace" }],
    rule: "files.read.allow",
    response: "none",
  };
}

/** A journal in a temporary directory, with the outbox on. */
export interface TestJournal {
  dir: string;
  path: string;
  journal: Journal;
  /** Appends `count` events to `session` (created if needed), flushes, returns their ids. */
  write(session: string, count: number, pad?: number): string[];
  /** Every journaled event id, sorted. */
  ids(): string[];
  dispose(): void;
}

/** Opens a journal with the outbox on, in a temporary directory. */
export function openTestJournal(): TestJournal {
  const dir = Deno.makeTempDirSync({ prefix: "sentry-sync-host-" });
  const path = join(dir, JOURNAL_FILE);
  const journal = openJournal(path, { outbox: true, hostname: "host-a", batchMs: 10 });
  const sessions = new Set<string>();
  let i = 0;
  return {
    dir,
    path,
    journal,
    write(session, count, pad = 0) {
      if (!sessions.has(session)) {
        journal.createSession(testSession(session));
        sessions.add(session);
      }
      const ids: string[] = [];
      for (let k = 0; k < count; k++) {
        const event = testEvent(session, i++, pad);
        journal.append(event);
        ids.push(event.id);
      }
      journal.flush();
      return ids;
    },
    ids: () => journal.queryEvents({ limit: 100_000_000 }).map((e) => e.id).sort(),
    dispose() {
      if (!journal.closed) journal.close();
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** A clock that only moves when something sleeps on it, for back-off schedules. */
export interface FakeClock {
  now: () => number;
  sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Every sleep asked for, in ms. */
  slept: number[];
}

/** A {@link FakeClock} starting at `start`; each sleep advances it and yields to the loop. */
export function fakeClock(start = Date.UTC(2026, 10, 24, 12, 0, 0)): FakeClock {
  let t = start;
  const slept: number[] = [];
  return {
    now: () => t,
    sleep: async (ms: number) => {
      slept.push(ms);
      t += ms;
      await new Promise((r) => setTimeout(r, 0));
    },
    slept,
  };
}
