/**
 * The collector's API and dashboard over a {@link CollectorStore} whose queries are
 * asynchronous (PostgreSQL): the routes of the local API that a collector serves, answering as
 * `createApp` does over the SQLite journal, and a live source that polls the store.
 *
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import {
  bearerAuth,
  createLiveHub,
  dashboardRoutes,
  EventsQuery,
  hostGuard,
  HttpError,
  limitBody,
  type LiveSource,
  openApiDocument,
  parseInput,
  SEARCH_WALK,
  type SentryApp,
  type SessionControls,
  SessionsQuery,
  SMALL_BODY_LIMIT,
  StreamQuery,
  ulidFloor,
} from "../api/mod.ts";
import type { AgentEvent } from "../events/mod.ts";
import { SessionRefError } from "../journal/mod.ts";
import { isTemplateName, loadPolicy, readTemplate, TEMPLATES } from "../policy/mod.ts";
import { VERSION } from "../version.ts";
import type { CollectorStore } from "./store.ts";

/** What {@link createStoreApi} needs besides the store. */
export interface StoreApiOptions {
  token: string;
  allowedHosts: readonly string[];
  live: LiveSource;
  controls: SessionControls;
  heartbeatMs?: number;
  /** A monotonic clock in ms, for the uptime; defaults to `performance.now`. */
  clock?: () => number;
}

const REPLAY_PAGE = 500;

/** Builds the collector's API over an asynchronous store; never listens. */
export function createStoreApi(store: CollectorStore, options: StoreApiOptions): SentryApp {
  const clock = options.clock ?? (() => performance.now());
  const started = clock();
  const closing = new AbortController();
  const app = new Hono();

  app.onError((error, c) => {
    if (error instanceof HttpError) {
      return c.json(
        { error: error.message, ...(error.field === undefined ? {} : { field: error.field }) },
        error.status,
      );
    }
    if (error instanceof SessionRefError) {
      return c.json({ error: error.message, field: "id" }, error.candidates.length > 1 ? 400 : 404);
    }
    return c.json({ error: `Internal error: ${(error as Error)?.message ?? String(error)}` }, 500);
  });
  app.notFound((c) => c.json({ error: `No route for ${c.req.method} ${c.req.path}` }, 404));
  app.use("*", limitBody({ maxBytes: SMALL_BODY_LIMIT }));
  app.use("*", hostGuard(options.allowedHosts));
  app.route("/", dashboardRoutes());
  const auth = bearerAuth(options.token);
  app.use("*", async (c, next) => {
    if (c.req.path === "/health") return await next();
    return await auth(c, next);
  });

  app.get("/health", (c) =>
    c.json({
      status: "ok" as const,
      version: VERSION,
      uptimeMs: Math.round(clock() - started),
      sensors: [],
    }));

  app.get("/v1/sessions", async (c) => {
    const { limit, host } = parseInput(SessionsQuery, c.req.query(), "query");
    return c.json({
      sessions: await store.listSessions({
        limit: limit ?? 50,
        ...(host === undefined ? {} : { host }),
      }),
    });
  });

  app.get("/v1/sessions/:id", async (c) => {
    const session = await store.getSession(c.req.param("id"));
    return c.json({
      session,
      responses: await store.responses(session.id),
      sensors: (await store.sensorStats(session.id)).map((s) => s.stats),
    });
  });

  app.get("/v1/sessions/:id/events", async (c) => {
    const query = parseInput(EventsQuery, queryOf(c), "query");
    const session = await store.getSession(c.req.param("id"));
    const limit = query.limit ?? 100;
    const filter = {
      session: session.id,
      ...(query.kind === undefined ? {} : { kind: query.kind }),
      ...(query.verdict === undefined ? {} : { verdict: query.verdict }),
      ...(query.min_risk === undefined ? {} : { minRisk: query.min_risk }),
      ...(query.since === undefined ? {} : { since: query.since }),
      ...(query.until === undefined ? {} : { until: query.until }),
      ...(query.attributed === undefined ? {} : { attributed: query.attributed }),
      ...(query.cursor === undefined ? {} : { after: query.cursor.toUpperCase() }),
      order: query.order ?? "asc",
    } as const;
    if (query.q !== undefined && query.q.trim() !== "") {
      // A text search reads each event it walks: one bounded step per request, as on SQLite.
      const step = await store.searchEvents({ ...filter, text: query.q, limit }, SEARCH_WALK);
      return c.json({ events: step.events, next_cursor: step.next });
    }
    const page = await store.queryEvents({ ...filter, limit: limit + 1 });
    const more = page.length > limit;
    const items = more ? page.slice(0, limit) : page;
    return c.json({ events: items, next_cursor: more ? items.at(-1)?.id ?? null : null });
  });

  app.get("/v1/events/stream", async (c) => {
    const query = parseInput(StreamQuery, c.req.query(), "query");
    const session = query.session === undefined
      ? undefined
      : (await store.getSession(query.session)).id;
    const lastEventId = c.req.header("last-event-id")?.trim();
    if (lastEventId !== undefined && lastEventId !== "" && !/^[0-9A-Z]{26}$/i.test(lastEventId)) {
      throw new HttpError(400, "Invalid Last-Event-ID: must be an event id (ULID)", {
        field: "Last-Event-ID",
      });
    }
    return stream(c, {
      ...(session === undefined ? {} : { session }),
      ...(lastEventId ? { lastEventId: lastEventId.toUpperCase() } : {}),
    });
  });

  for (const action of ["pause", "resume", "kill"] as const) {
    app.post(`/v1/sessions/:id/${action}`, async (c) => {
      const session = await store.getSession(c.req.param("id"));
      return c.json(await options.controls[action](session));
    });
  }
  app.post("/v1/sessions/:id/rollback", async (c) => {
    const session = await store.getSession(c.req.param("id"));
    return c.json(await options.controls.rollback(session, { dryRun: true }));
  });

  app.get("/v1/policies", (c) => c.json({ policies: TEMPLATES.map((name) => ({ name })) }));
  app.get("/v1/policies/:name", async (c) => {
    const name = c.req.param("name");
    if (!isTemplateName(name)) throw new HttpError(404, `No policy template "${name}"`);
    const [yaml, resolved] = await Promise.all([readTemplate(name), loadPolicy(name)]);
    return c.json({ name, yaml, resolved });
  });

  app.get("/metrics", async (c) => {
    const hosts = await store.listHosts();
    const lines = [
      "# HELP sentry_uptime_seconds Seconds since this API started.",
      "# TYPE sentry_uptime_seconds gauge",
      `sentry_uptime_seconds ${(clock() - started) / 1000}`,
      "# HELP sentry_collector_host_events_total Events stored from each host and key.",
      "# TYPE sentry_collector_host_events_total counter",
      ...hosts.map((h) =>
        `sentry_collector_host_events_total{host_id="${h.host_id}",key_id="${h.key_id}"} ${h.events}`
      ),
      "# HELP sentry_collector_host_dropped_total Events each host's outbox dropped, as reported.",
      "# TYPE sentry_collector_host_dropped_total counter",
      ...hosts.map((h) =>
        `sentry_collector_host_dropped_total{host_id="${h.host_id}",key_id="${h.key_id}"} ${h.dropped}`
      ),
    ];
    return c.text(`${lines.join("\n")}\n`, 200, {
      "Content-Type": "text/plain; version=0.0.4; charset=utf-8",
    });
  });

  const openapi = openApiDocument();
  app.get("/v1/openapi.json", (c) => c.json(openapi));

  /** Server-sent events: a replay from the store after `Last-Event-ID`, then the live ones. */
  function stream(c: Context, o: { session?: string; lastEventId?: string }): Response {
    const heartbeatMs = options.heartbeatMs ?? 15_000;
    return streamSSE(c, async (sse) => {
      const queue: AgentEvent[] = [];
      let wake: (() => void) | undefined;
      const notify = (): void => {
        const w = wake;
        wake = undefined;
        w?.();
      };
      const unsubscribe = options.live.subscribe((event) => {
        if (o.session !== undefined && event.session !== o.session) return;
        if (queue.length < 10_000) queue.push(event);
        notify();
      });
      sse.onAbort(notify);
      closing.signal.addEventListener("abort", notify);
      const frame = (e: AgentEvent) => `id: ${e.id}\nevent: event\ndata: ${JSON.stringify(e)}\n\n`;
      try {
        let replayed: string | undefined;
        if (o.lastEventId !== undefined) {
          let after = o.lastEventId;
          for (;;) {
            const page = await store.queryEvents({
              after,
              order: "asc",
              limit: REPLAY_PAGE,
              ...(o.session === undefined ? {} : { session: o.session }),
            });
            if (sse.aborted) return;
            if (page.length > 0) await sse.write(page.map(frame).join(""));
            const last = page.at(-1);
            if (last !== undefined) after = replayed = last.id;
            if (page.length < REPLAY_PAGE) break;
          }
        }
        while (!sse.aborted && !closing.signal.aborted) {
          if (queue.length > 0) {
            const text = queue.splice(0, REPLAY_PAGE)
              .filter((e) => replayed === undefined || e.id > replayed).map(frame).join("");
            if (text !== "") await sse.write(text);
            continue;
          }
          let timer: ReturnType<typeof setTimeout> | undefined;
          const woken = await new Promise<boolean>((resolve) => {
            wake = () => resolve(true);
            timer = setTimeout(() => resolve(false), heartbeatMs);
          });
          clearTimeout(timer);
          if (!woken && !sse.aborted) await sse.write(": keep-alive\n\n");
        }
      } finally {
        unsubscribe();
        closing.signal.removeEventListener("abort", notify);
      }
    });
  }

  return Object.assign(app, { close: () => closing.abort() });
}

/** Options for {@link storePoller}. */
export interface StorePollerOptions {
  /** Time between polls; default 500 ms. */
  intervalMs?: number;
  /** How far back each poll looks again, in ms (late commits of other processes); default 2000. */
  lookbackMs?: number;
  /** The wall clock; defaults to `Date.now`. */
  now?: () => number;
}

/**
 * A live source polling the store for new events while it has subscribers, so the stream shows
 * the events every collector process sharing the database stored. `close()` stops it.
 */
export function storePoller(
  store: CollectorStore,
  options: StorePollerOptions = {},
): LiveSource & { close(): void } {
  const intervalMs = options.intervalMs ?? 500;
  const lookbackMs = options.lookbackMs ?? 2000;
  const now = options.now ?? Date.now;
  const hub = createLiveHub();
  const seen = new Map<string, number>();
  let subscribers = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  let primed = false;

  async function scan(): Promise<void> {
    const floor = now() - lookbackMs;
    let after = ulidFloor(floor);
    for (;;) {
      const page = await store.queryEvents({ after, order: "asc", limit: 1000 });
      for (const event of page) {
        if (seen.has(event.id)) continue;
        seen.set(event.id, now());
        if (primed) hub.publish(event);
      }
      const last = page.at(-1);
      if (page.length < 1000 || last === undefined) break;
      after = last.id;
    }
    primed = true;
    for (const [id, at] of seen) if (at < floor - lookbackMs) seen.delete(id);
  }

  function loop(): void {
    if (closed || subscribers === 0) {
      timer = undefined;
      return;
    }
    scan().catch(() => {}).finally(() => {
      if (!closed && subscribers > 0) timer = setTimeout(loop, intervalMs);
      else timer = undefined;
    });
  }

  return {
    subscribe(listener) {
      const off = hub.subscribe(listener);
      subscribers++;
      if (timer === undefined && !closed) loop();
      return () => {
        off();
        subscribers--;
      };
    },
    close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}

/** The query string; a repeated `kind` counts as a comma-separated list. */
function queryOf(c: Context): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, values] of Object.entries(c.req.queries())) {
    out[key] = key === "kind" ? values.join(",") : values.at(-1) ?? "";
  }
  return out;
}
