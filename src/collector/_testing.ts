/**
 * Fixtures for the collector's tests and benchmark: a temporary collector (journal, keys, app),
 * and batches of valid sessions and events.
 *
 * @module
 */

import { join } from "node:path";
import { type AgentEvent, createUlid } from "../events/mod.ts";
import { JOURNAL_FILE, openJournal, type SessionRecord } from "../journal/mod.ts";
import { createLiveHub, type LiveSource } from "../api/mod.ts";
import { type CollectorApp, type CollectorDeps, createCollectorApp } from "./app.ts";
import { openKeyStore } from "./keys.ts";
import { postgresSkip, startPostgres, type TestPostgres } from "./_pg_testing.ts";
import { openPostgresStore } from "./pg_store.ts";
import { openSqliteStore } from "./sqlite_store.ts";
import type { CollectorStore } from "./store.ts";
import { storePoller } from "./store_api.ts";

/** The collector API's bearer token in tests. */
export const API_TOKEN = "collector-test-token-0123456789";

/** Which store a test collector keeps its data in. */
export type TestBackend = { name: "sqlite" } | { name: "postgres"; pg: TestPostgres };

/** The body of a case that runs on both stores, for the backend it is given. */
export type StoreCase = (backend: TestBackend) => Promise<void>;

/**
 * Starts a suite that runs on both stores, and returns its `test(name, fn)`: each case is a
 * `[sqlite] NAME` test, and all of them are the steps of one `[postgres] SUITE` test on a
 * throwaway cluster (ignored where PostgreSQL's binaries are absent; `postgresSkip` says why).
 */
export function storeSuite(suite: string): (name: string, fn: StoreCase) => void {
  const cases: [string, StoreCase][] = [];
  Deno.test({
    name: `[postgres] ${suite}`,
    ignore: postgresSkip() !== null,
    async fn(t) {
      const pg = await startPostgres();
      try {
        for (const [name, fn] of cases) await t.step(name, () => fn({ name: "postgres", pg }));
      } finally {
        await pg.close();
      }
    },
  });
  return (name, fn) => {
    cases.push([name, fn]);
    Deno.test(`[sqlite] ${name}`, () => fn({ name: "sqlite" }));
  };
}

/** A temporary collector. */
export interface Collector {
  dir: string;
  store: CollectorStore;
  app: CollectorApp;
  /** Another store on the same data, as a second `sentry server` process opens it. */
  second(): Promise<CollectorStore>;
  /** Makes the key store unreadable (a corrupt `keys.json`, a dropped keys table). */
  breakKeys(): Promise<void>;
  close(): Promise<void>;
}

let databases = 0;

/**
 * Opens a collector in a temporary directory, with the API mounted (token {@link API_TOKEN}),
 * over SQLite or a fresh database of a test PostgreSQL cluster.
 */
export async function openCollector(
  options: Partial<CollectorDeps> = {},
  backend: TestBackend = { name: "sqlite" },
): Promise<Collector> {
  const dir = Deno.makeTempDirSync({ prefix: "sentry-collector-" });
  const others: CollectorStore[] = [];
  let store: CollectorStore;
  let second: () => Promise<CollectorStore>;
  let breakKeys: () => Promise<void>;
  let live: LiveSource & { close?(): void };
  if (backend.name === "sqlite") {
    const journal = openJournal(join(dir, JOURNAL_FILE), { hostname: "collector" });
    store = openSqliteStore({ journal, keys: openKeyStore(dir) });
    second = () =>
      Promise.resolve(openSqliteStore({
        journal: openJournal(join(dir, JOURNAL_FILE), { hostname: "collector" }),
        keys: openKeyStore(dir),
      }));
    breakKeys = () =>
      Promise.resolve(Deno.writeTextFileSync(join(dir, "keys.json"), "{broken", { mode: 0o600 }));
    live = createLiveHub();
  } else {
    const url = await backend.pg.createDatabase(`collector_${++databases}`);
    store = await openPostgresStore(url, { maxConnections: 4 });
    second = () => openPostgresStore(url, { maxConnections: 2 });
    breakKeys = async () => {
      const admin = await openPostgresStore(url, { maxConnections: 1 });
      try {
        await admin.execute("ALTER TABLE collector_keys RENAME TO collector_keys_gone");
      } finally {
        await admin.close();
      }
    };
    live = storePoller(store, { intervalMs: 50 });
  }
  const app = createCollectorApp({
    store,
    api: { dataDir: dir, token: API_TOKEN, allowedHosts: ["localhost"], live },
    ...options,
  });
  return {
    dir,
    store,
    app,
    async second() {
      const other = await second();
      others.push(other);
      return other;
    },
    breakKeys,
    async close() {
      app.close();
      live.close?.();
      for (const s of [store, ...others]) await s.close().catch(() => {});
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

const ids = createUlid();

/** A fresh ULID. */
export function ulid(): string {
  return ids();
}

/** A valid session record of host `host`. */
export function makeSession(id: string, host = "build-7"): SessionRecord {
  return {
    id,
    agent: "claude",
    command: ["claude", "--yes"],
    pid: 4321,
    kind: "run",
    policy: "coding-agent",
    mode: "alert",
    workspace: "/w",
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

/** A valid event of `session`, the `i`-th. */
export function makeEvent(session: string, i: number): AgentEvent {
  return {
    id: ulid(),
    ts: new Date(Date.UTC(2026, 10, 24, 18, 0, 0) + i).toISOString(),
    session,
    agent: "claude",
    pid: 4321,
    ppid: 4320,
    exe: "/usr/bin/python3",
    cmdline: ["python3", "agent.py"],
    kind: i % 2 === 0 ? "file.write" : "file.read",
    target: `/w/src/file${i}.ts`,
    detail: { bytes: i },
    sensor: "fd",
    verdict: "allow",
    risk: i % 50,
    factors: [{ id: "kind", points: i % 50, reason: "a write in the workspace" }],
    rule: "files.write.allow",
    response: "none",
  };
}

/** A batch body (before compression), per docs/sync-protocol.md. */
export interface BatchInit {
  hostId: string;
  hostName?: string;
  sessions: SessionRecord[];
  events: AgentEvent[];
  dropped?: number;
}

/** Builds a batch body. */
export function makeBatch(init: BatchInit): Record<string, unknown> {
  return {
    protocol: 1,
    batch: ulid(),
    host: { id: init.hostId, name: init.hostName ?? "build-7" },
    sent_at: new Date().toISOString(),
    sessions: init.sessions,
    events: init.events,
    dropped: init.dropped ?? 0,
  };
}

/** Gzips bytes or text. */
export async function gzip(
  data: string | Uint8Array<ArrayBuffer>,
): Promise<Uint8Array<ArrayBuffer>> {
  const bytes = typeof data === "string" ? new TextEncoder().encode(data) : data;
  return await new Response(
    new Blob([bytes]).stream().pipeThrough(new CompressionStream("gzip")),
  ).bytes();
}

/** Options for {@link batchRequest}. */
export interface BatchRequestOptions {
  /** The upload key; none sends no Authorization header. */
  key?: string;
  /** `gzip` (default) or `identity`, or any other value to send as is. */
  encoding?: string;
  contentType?: string;
}

/** A `POST /v1/sync/batches` request init for a body (a value is sent as JSON). */
export async function batchRequest(
  body: unknown,
  options: BatchRequestOptions = {},
): Promise<RequestInit> {
  const encoding = options.encoding ?? "gzip";
  const raw: Uint8Array<ArrayBuffer> = body instanceof Uint8Array
    ? new Uint8Array(body)
    : new TextEncoder().encode(typeof body === "string" ? body : JSON.stringify(body));
  const payload = encoding === "gzip" ? await gzip(raw) : raw;
  const headers: Record<string, string> = {
    "content-type": options.contentType ?? "application/json",
    "sentry-protocol": "1",
  };
  if (encoding !== "identity") headers["content-encoding"] = encoding;
  if (options.key !== undefined) headers["authorization"] = `Bearer ${options.key}`;
  return { method: "POST", headers, body: payload };
}
