/**
 * The collector as a Hono app: the sync protocol's routes (docs/sync-protocol.md), authorised by
 * the collector's API keys, and optionally the local API and dashboard over the collector's
 * journal, which then shows every host's sessions. {@link createCollectorApp} never listens:
 * `sentry server` passes it to `Deno.serve`, and tests call `app.request()`.
 *
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import {
  bearerAuth,
  createApp,
  hostGuard,
  HttpError,
  limitBody,
  type LiveSource,
  type SentryApp,
  type SessionControls,
  SMALL_BODY_LIMIT,
  UnavailableError,
} from "../api/mod.ts";
import type { IngestResult, Journal, SessionRecord } from "../journal/mod.ts";
import { IngestError } from "../journal/mod.ts";
import type { AgentEvent } from "../events/mod.ts";
import { VERSION } from "../version.ts";
import {
  BATCH_PROTOCOL,
  BatchError,
  type BatchLimits,
  DEFAULT_LIMITS,
  gunzipLimited,
  parseBatch,
  parseJson,
  readLimited,
} from "./batch.ts";
import type { KeyInfo, KeyStore } from "./keys.ts";
import { listJournalHosts, openSqliteStore, type SqliteStore } from "./sqlite_store.ts";
import type { CollectorStore, HostSummary } from "./store.ts";
import { hostMetricLines } from "./store_api.ts";

/** The `server` field of the hello answer. */
export const SERVER_NAME = "sentry-collector";

/** What the collector's dashboard and API need besides the journal. */
export interface CollectorApiDeps {
  /** The collector's data directory. */
  dataDir: string;
  /** The bearer token of the API and dashboard (not an upload key). */
  token: string;
  /** The `Host` values the API and dashboard accept; the sync routes accept any. */
  allowedHosts: readonly string[];
  /**
   * Live events for the stream: a `journalPoller` over the collector's journal, or a
   * `storePoller` over a PostgreSQL store.
   */
  live: LiveSource;
  /** Keep-alive interval of the event stream; default 15 s. */
  heartbeatMs?: number;
  /** The command that serves this collector, which the dashboard names when it stops. */
  servedBy?: { by: string; serve: string };
}

/** What {@link createCollectorApp} is built from. */
export interface CollectorDeps {
  /**
   * Where keys, hosts, sessions and events are kept: SQLite or PostgreSQL. Without it, the
   * SQLite store over `journal` and `keys`.
   */
  store?: CollectorStore;
  /** The collector's own journal, where batches are stored (when no `store` is given). */
  journal?: Journal;
  /** The upload keys (when no `store` is given). */
  keys?: KeyStore;
  /** The wall clock; defaults to `Date.now`. */
  now?: () => number;
  /** Batch limits; each defaults to {@link DEFAULT_LIMITS}. */
  limits?: Partial<BatchLimits>;
  /**
   * Batches read and stored at once; more get `503` with `Retry-After`, which bounds memory
   * (each may hold up to `maxJsonBytes`). Default 16.
   */
  maxConcurrent?: number;
  /** When given, the local API and dashboard are served too, over the collector's journal. */
  api?: CollectorApiDeps;
  /**
   * Hears unexpected errors (a bug, an unreadable key store). Clients get a bare 500 without
   * the detail, which may name server paths; the operator gets it here.
   */
  onError?: (error: unknown) => void;
  /**
   * Hears what the operator should know of but the client is only told in part: a key refused
   * for a host bound to another key, a host moved to a rotated key. One line, no secret.
   */
  onNotice?: (message: string) => void;
  /**
   * Hears each stored batch, after its transaction, with the events it held: the hand-off to
   * the OTLP exporter of `sentry server`. A batch made only of events stored before (a host
   * resending after a lost answer) is not passed on. Must not throw or wait.
   */
  onIngested?: (batch: IngestedBatch) => void;
}

/** A stored batch, as {@link CollectorDeps.onIngested} hears it. */
export interface IngestedBatch {
  /** The uploading host's id, upper case. */
  hostId: string;
  /** The host's name as it reported it. */
  hostName: string;
  /** The batch's events, in order. */
  events: readonly AgentEvent[];
  /** How many were new, and how many were already stored. */
  accepted: number;
  duplicates: number;
}

/** The app, and `close()` to stop the API's background subscription. */
export type CollectorApp = Hono & {
  /** Stops the API's live counters; call at teardown. */
  close(): void;
};

/** How long a busy collector asks clients to wait, in seconds. */
const RETRY_AFTER_S = 1;

/**
 * Builds the collector. `GET /v1/sync/hello` and `POST /v1/sync/batches` need an upload key
 * (`Authorization: Bearer sk_...`); with `api`, every other route is the local API (and
 * dashboard) over the collector's journal, behind its own token and `Host` check, plus
 * `GET /v1/hosts`. Session controls are refused: the collector cannot signal a remote host's
 * processes. A host id is bound to the key of its first accepted batch: another key presenting
 * it gets 403 (see {@link bindHost}). Every body is bounded: 413 past `limits.maxBodyBytes` for
 * a batch, past 64 KiB on every other route.
 */
export function createCollectorApp(deps: CollectorDeps): CollectorApp {
  const store = deps.store ?? sqliteStoreOf(deps);
  const now = deps.now ?? Date.now;
  const limits: BatchLimits = { ...DEFAULT_LIMITS, ...deps.limits };
  const maxConcurrent = deps.maxConcurrent ?? 16;
  let inFlight = 0;
  const app = new Hono();

  // Every body is bounded before any route runs; a batch is bounded by its own route as it
  // streams in, after the key and the concurrency checks (limits.maxBodyBytes).
  app.use(
    "*",
    limitBody({
      maxBytes: SMALL_BODY_LIMIT,
      skip: (c) => c.req.method === "POST" && c.req.path === "/v1/sync/batches",
    }),
  );

  app.onError((error, c) => {
    if (error instanceof HttpError) {
      return c.json(
        { error: error.message, ...(error.field === undefined ? {} : { field: error.field }) },
        error.status,
      );
    }
    deps.onError?.(error);
    if (error instanceof UnavailableError) {
      // The host keeps its batch and comes back after Retry-After.
      c.header("Retry-After", String(error.retryAfterS));
      return c.json({ error: `${error.message}: try again shortly` }, 503);
    }
    return c.json({ error: "Internal error: see the collector's log" }, 500);
  });

  /** The key of the request, or a 401 response. */
  async function authorise(c: Context): Promise<KeyInfo | Response> {
    const header = c.req.header("authorization") ?? "";
    const match = /^Bearer\s+([\x21-\x7e]{1,512})\s*$/i.exec(header);
    const key = match === null ? null : await store.verifyKey(match[1] ?? "");
    if (key !== null) return key;
    c.header("WWW-Authenticate", 'Bearer realm="sentry-collector"');
    return c.json({
      error: match === null
        ? "Missing API key: send Authorization: Bearer <key>"
        : "Invalid API key: unknown or revoked",
      field: "authorization",
    }, 401);
  }

  app.get("/v1/sync/hello", async (c) => {
    const key = await authorise(c);
    if (key instanceof Response) return key;
    return c.json({
      protocol: BATCH_PROTOCOL,
      server: SERVER_NAME,
      version: VERSION,
      key: { id: key.id, name: key.name },
      time: new Date(now()).toISOString(),
      limits: {
        max_events: limits.maxEvents,
        max_body_bytes: limits.maxBodyBytes,
        max_json_bytes: limits.maxJsonBytes,
      },
    });
  });

  app.post("/v1/sync/batches", async (c) => {
    const key = await authorise(c);
    if (key instanceof Response) return key;
    if (inFlight >= maxConcurrent) {
      await c.req.raw.body?.cancel().catch(() => {});
      c.header("Retry-After", String(RETRY_AFTER_S));
      return c.json({ error: `Busy: ${inFlight} batches are being stored` }, 503);
    }
    inFlight++;
    try {
      const result = await receive(c, key);
      return c.json(result);
    } catch (error) {
      if (error instanceof BatchError) {
        await c.req.raw.body?.cancel().catch(() => {});
        return c.json({ error: error.message, field: error.field }, error.status);
      }
      if (error instanceof IngestError) {
        return c.json({ error: error.message, field: error.field }, 400);
      }
      if (isDatabaseError(error)) {
        c.header("Retry-After", String(RETRY_AFTER_S));
        return c.json({ error: `Cannot store the batch now: ${(error as Error).message}` }, 503);
      }
      throw error;
    } finally {
      inFlight--;
    }
  });

  /** Reads, checks and stores one batch. */
  async function receive(c: Context, key: KeyInfo): Promise<IngestResult> {
    const protocol = c.req.header("sentry-protocol");
    if (protocol !== undefined && protocol.trim() !== String(BATCH_PROTOCOL)) {
      throw new BatchError(
        400,
        `Invalid Sentry-Protocol "${protocol}": this collector speaks sync protocol ${BATCH_PROTOCOL}`,
        "protocol",
      );
    }
    const type = c.req.header("content-type") ?? "";
    if (!/^application\/json\s*(;|$)/i.test(type)) {
      throw new BatchError(
        415,
        `Unsupported Content-Type "${type}": send application/json`,
        "content-type",
      );
    }
    const encoding = (c.req.header("content-encoding") ?? "identity").trim().toLowerCase();
    if (encoding !== "gzip" && encoding !== "x-gzip" && encoding !== "identity") {
      throw new BatchError(
        415,
        `Unsupported Content-Encoding "${encoding}": send gzip or identity`,
        "content-encoding",
      );
    }
    const declared = Number(c.req.header("content-length") ?? NaN);
    if (Number.isFinite(declared) && declared > limits.maxBodyBytes) {
      throw new BatchError(
        413,
        `Body too large: ${declared} bytes declared, at most ${limits.maxBodyBytes} bytes as received`,
        "body",
      );
    }
    const raw = await readLimited(c.req.raw.body, limits.maxBodyBytes);
    const json = encoding === "identity" ? raw : await gunzipLimited(raw, limits.maxJsonBytes);
    const batch = parseBatch(parseJson(json), limits);
    const hostId = batch.host.id.toUpperCase();
    const stored = await store.accept({
      key,
      hostId,
      hostName: batch.host.name,
      sessions: batch.sessions,
      events: batch.events,
      dropped: batch.dropped,
      at: new Date(now()).toISOString(),
    });
    if (stored.outcome === "refused") {
      const holder = (await store.listKeys()).find((k) => k.id === stored.boundTo);
      deps.onNotice?.(
        `refused a batch for host "${hostId}" from key ${key.id} ("${key.name}"): the host is ` +
          `bound to key ${stored.boundTo}${holder === undefined ? "" : ` ("${holder.name}")`}`,
      );
      throw new BatchError(
        403,
        `Forbidden host.id "${batch.host.id}": the host is bound to another key; a host uploads ` +
          "with the key it registered with, or the next key of that name once it is revoked",
        "host.id",
      );
    }
    const { binding, result } = stored;
    if (binding.outcome === "rebound") {
      deps.onNotice?.(
        `host "${hostId}" moved from key ${binding.previous} (revoked, or gone from the key ` +
          `store) to key ${key.id} ("${key.name}")`,
      );
    }
    if (result.accepted > 0) {
      deps.onIngested?.({
        hostId,
        hostName: batch.host.name,
        events: batch.events,
        accepted: result.accepted,
        duplicates: result.duplicates,
      });
    }
    return result;
  }

  app.all("/v1/sync/hello", (c) => methodNotAllowed(c, "GET"));
  app.all("/v1/sync/batches", (c) => methodNotAllowed(c, "POST"));
  app.all(
    "/v1/sync/*",
    (c) => c.json({ error: `No route for ${c.req.method} ${c.req.path}` }, 404),
  );

  let api: SentryApp | null = null;
  if (deps.api !== undefined) {
    const a = deps.api;
    const options = {
      dataDir: a.dataDir,
      token: a.token,
      allowedHosts: a.allowedHosts,
      live: a.live,
      controls: remoteControls(),
      metrics: async () => hostMetricLines(await store.listHosts()),
      ...(a.heartbeatMs === undefined ? {} : { heartbeatMs: a.heartbeatMs }),
      ...(a.servedBy === undefined ? {} : { servedBy: a.servedBy }),
    };
    // The same routes on either store: over the SQLite store's journal, which also explains
    // events and has its write figures; over another store, through its asynchronous queries.
    api = createApp(
      isSqliteStore(store) ? { journal: store.journal, ...options } : { reader: store, ...options },
    );
    const guard = hostGuard(a.allowedHosts);
    const auth = bearerAuth(a.token);
    app.get("/v1/hosts", guard, auth, async (c) => c.json({ hosts: await store.listHosts() }));
    app.all("/v1/hosts", guard, auth, (c) => methodNotAllowed(c, "GET"));
    const inner = api;
    app.all("*", (c) => inner.fetch(c.req.raw));
  } else {
    app.notFound((c) => c.json({ error: `No route for ${c.req.method} ${c.req.path}` }, 404));
  }

  return Object.assign(app, { close: () => api?.close() });
}

/**
 * The hosts that uploaded to this collector, the most recently seen first, with their session
 * counts.
 */
export function listHosts(journal: Journal): HostSummary[] {
  return listJournalHosts(journal);
}

/** The SQLite store of `deps.journal` and `deps.keys`, when no store is given. */
function sqliteStoreOf(deps: CollectorDeps): SqliteStore {
  if (deps.journal === undefined || deps.keys === undefined) {
    throw new TypeError("Cannot build the collector: give a store, or a journal and keys");
  }
  return openSqliteStore({ journal: deps.journal, keys: deps.keys });
}

function isSqliteStore(store: CollectorStore): store is SqliteStore {
  return store.kind === "sqlite" && "journal" in store;
}

/**
 * Session controls for the collector: it holds other hosts' sessions and cannot signal their
 * processes or restore their files, so every control answers 409.
 */
export function remoteControls(): SessionControls {
  const refuse = (session: SessionRecord): Promise<never> =>
    Promise.reject(
      new HttpError(
        409,
        `Cannot control session "${session.id}" on host "${session.host}": sessions on remote ` +
          "hosts cannot be controlled from the collector; use sentry on that host",
        { field: "id" },
      ),
    );
  return { pause: refuse, resume: refuse, kill: refuse, rollback: refuse };
}

function methodNotAllowed(c: Context, allow: string): Response {
  c.header("Allow", allow);
  return c.json(
    { error: `Method ${c.req.method} not allowed: use ${allow}`, field: "method" },
    405,
  );
}

/**
 * An error of the database itself, as opposed to a bug: worth a retry. SQLite: busy, full
 * disk. PostgreSQL: a lost or refused connection, a deadlock or serialization failure (class
 * 40), too many connections or no space (53), a shutdown (57).
 */
function isDatabaseError(error: unknown): boolean {
  if (!(error instanceof Error)) return false;
  const code = (error as { code?: unknown }).code;
  if (code === "ERR_SQLITE_ERROR") return true;
  if (typeof code !== "string") return false;
  if (/^(CONNECTION_|CONNECT_TIMEOUT|ECONN|EPIPE|ETIMEDOUT)/.test(code)) return true;
  return error.name === "PostgresError" && /^(08|40|53|57)/.test(code);
}
