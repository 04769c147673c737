/**
 * The local status API as a Hono app. {@link createApp} builds it from injected parts and never
 * listens: `sentry run`, `attach` and `serve` pass it to `Deno.serve`, and tests call
 * `app.request()`. The same routes serve the collector's API over its store (SQLite or
 * PostgreSQL): they read through an {@link ApiReader}, over the journal or the store.
 *
 * @module
 */

import { Hono } from "hono";
import type { Context } from "hono";
import type { EventFilter, Journal, SessionSummary } from "../journal/mod.ts";
import { SessionRefError } from "../journal/mod.ts";
import { isTemplateName, loadPolicy, readTemplate, TEMPLATES } from "../policy/mod.ts";
import { VERSION } from "../version.ts";
import { bearerAuth, hostGuard } from "./auth.ts";
import { limitBody, SMALL_BODY_LIMIT } from "./body_limit.ts";
import {
  defaultControls,
  PolicyReloadBody,
  reloadRequestOf,
  reloadResultBody,
  type SessionControls,
} from "./control.ts";
import { dashboardRoutes } from "./dashboard.ts";
import { explainRoutes } from "./explain.ts";
import { HttpError, parseInput, UnavailableError } from "./errors.ts";
import type { LiveSource } from "./live.ts";
import { countEvents, renderMetrics, type SessionSensor } from "./metrics.ts";
import { openApiDocument } from "./openapi.ts";
import { type ApiReader, journalReader } from "./reader.ts";
import {
  type ControlResult,
  EventsQuery,
  LocalHostList,
  RollbackBody,
  type SensorStatus,
  SessionsQuery,
  StreamQuery,
} from "./schemas.ts";
import { streamEvents } from "./stream.ts";
import type { z } from "zod";

/** What {@link createApp} is built from besides where it reads. */
export interface AppOptions {
  /** The data directory: the rollback store and the sessions' pids files live there. */
  dataDir: string;
  /** The bearer token every route but `/health` requires. */
  token: string;
  /** A monotonic clock in ms, for the uptime; defaults to `performance.now`. */
  clock?: () => number;
  /** The `Host` values accepted; see `allowedHostsFor`. */
  allowedHosts: readonly string[];
  /** Live events for the stream and the event counters. */
  live: LiveSource;
  /** The control actions; over a journal, defaults to {@link defaultControls}. */
  controls?: SessionControls;
  /** This process's sensors, for `/health`; none by default (as for `sentry serve`). */
  sensors?: () => z.infer<typeof SensorStatus>[];
  /** Keep-alive interval of the event stream; default 15 s. */
  heartbeatMs?: number;
  /** The largest request body on any route; default {@link SMALL_BODY_LIMIT} (64 KiB). */
  maxBodyBytes?: number;
  /**
   * Set when this API stops with a session (`run`, `attach`): its event streams open with an
   * `event: server` message naming the session and `serve`, the command that serves the journal
   * here afterwards, and `close()` ends them with `event: closing` and the session as it ended
   * (see {@link StreamServer}), so that the dashboard can say what happened and what to run.
   */
  endsWith?: { session: string; serve: string };
  /**
   * Set for an API that serves on its own (`sentry serve`, `sentry server`): the command that
   * serves it, which `close()` names in an `event: closing` message (`{ "by": ..., "serve": ... }`),
   * so that the dashboard says the server stopped, and what to run, instead of reconnecting in
   * silence. Ignored with {@link endsWith}.
   */
  servedBy?: { by: string; serve: string };
  /** More Prometheus lines for `/metrics`, written last (the collector's hosts). */
  metrics?: () => Promise<readonly string[]>;
}

/** The API over the local journal, which it reads and, through the controls, writes. */
export interface AppDeps extends AppOptions {
  journal: Journal;
}

/**
 * The API over another reader (the collector's store): the controls are the caller's, and the
 * routes the reader cannot answer are absent (see {@link ApiReader}).
 */
export interface ReaderAppDeps extends AppOptions {
  reader: ApiReader;
  controls: SessionControls;
}

/** The app, and `close()` to stop its background subscription. */
export type SentryApp = Hono & {
  /** Stops counting live events and ends open event streams; call at teardown. */
  close(): void;
};

const GET_ROUTES = [
  "/health",
  "/v1/hosts",
  "/v1/sessions",
  "/v1/sessions/:id",
  "/v1/sessions/:id/events",
  "/v1/events/:id/explain",
  "/v1/events/stream",
  "/v1/policies",
  "/v1/policies/:name",
  "/metrics",
  "/v1/openapi.json",
];

const CONTROL_ACTIONS = ["pause", "resume", "kill"] as const;

/** The events of a session one text search request walks at most (see `Journal.searchEvents`). */
export const SEARCH_WALK = 5_000;

/**
 * Builds the API, over a journal or another {@link ApiReader}. Every route but `/health` needs
 * the bearer token; every route checks the `Host` header; every request body is bounded (413
 * past `maxBodyBytes`); no CORS headers are sent; errors are JSON `{ error, field? }`.
 */
export function createApp(deps: AppDeps | ReaderAppDeps): SentryApp {
  const { live, dataDir } = deps;
  const { reader, controls } = "journal" in deps
    ? {
      reader: journalReader(deps.journal),
      controls: deps.controls ?? defaultControls({ journal: deps.journal, dataDir }),
    }
    : deps;
  const clock = deps.clock ?? (() => performance.now());
  const started = clock();
  const events = countEvents(live);
  /** Aborted by `close()`: open event streams end, so a graceful shutdown can finish. */
  const closing = new AbortController();
  const endsWith = deps.endsWith;
  /** The `closing` message, made once at `close()` for every open stream. */
  let farewell: Promise<string> | undefined;
  const app = new Hono();

  app.onError((error, c) => {
    if (error instanceof HttpError) {
      return c.json(
        { error: error.message, ...(error.field === undefined ? {} : { field: error.field }) },
        error.status,
      );
    }
    if (error instanceof SessionRefError) {
      return error.candidates.length > 1
        ? c.json({ error: error.message, field: "id" }, 400)
        : c.json({ error: error.message, field: "id" }, 404);
    }
    if (error instanceof UnavailableError) {
      c.header("Retry-After", String(error.retryAfterS));
      return c.json({ error: `${error.message}: try again shortly` }, 503);
    }
    return c.json({ error: `Internal error: ${(error as Error)?.message ?? String(error)}` }, 500);
  });
  app.notFound((c) => c.json({ error: `No route for ${c.req.method} ${c.req.path}` }, 404));

  // Before anything else: no route, not even a refusal, reads more than the limit.
  app.use("*", limitBody({ maxBytes: deps.maxBodyBytes ?? SMALL_BODY_LIMIT }));
  app.use("*", hostGuard(deps.allowedHosts));
  // The dashboard's page and assets hold no data: served after the Host check, before the token.
  app.route("/", dashboardRoutes());
  const auth = bearerAuth(deps.token);
  app.use("*", async (c, next) => {
    if (c.req.path === "/health") return await next();
    return await auth(c, next);
  });

  app.get("/health", (c) =>
    c.json({
      status: "ok" as const,
      version: VERSION,
      uptimeMs: Math.round(clock() - started),
      sensors: deps.sensors?.() ?? [],
    }));

  app.get("/v1/sessions", async (c) => {
    const { limit, host } = parseInput(SessionsQuery, c.req.query(), "query");
    return c.json({
      sessions: await reader.listSessions({
        limit: limit ?? 50,
        ...(host === undefined ? {} : { host }),
      }),
    });
  });

  const sessionHosts = reader.sessionHosts?.bind(reader);
  if (sessionHosts !== undefined) {
    app.get("/v1/hosts", async (c) => {
      const body: z.infer<typeof LocalHostList> = {
        collector: false,
        hosts: (await sessionHosts()).map((h) => ({
          name: h.host,
          sessions: h.sessions,
          live: h.live,
          last_started: h.lastStarted,
        })),
      };
      return c.json(body);
    });
  }

  app.get("/v1/sessions/:id", async (c) => {
    const session = await reader.getSession(c.req.param("id"));
    return c.json({
      session,
      responses: await reader.responses(session.id),
      sensors: (await reader.sensorStats(session.id)).map((s) => s.stats),
    });
  });

  app.get("/v1/sessions/:id/events", async (c) => {
    const query = parseInput(EventsQuery, queryOf(c), "query");
    const session = await reader.getSession(c.req.param("id"));
    const limit = query.limit ?? 100;
    const filter: EventFilter & { session: string } = {
      session: session.id,
      ...(query.kind === undefined ? {} : { kind: query.kind }),
      ...(query.verdict === undefined ? {} : { verdict: query.verdict }),
      ...(query.min_risk === undefined ? {} : { minRisk: query.min_risk }),
      ...(query.since === undefined ? {} : { since: query.since }),
      ...(query.until === undefined ? {} : { until: query.until }),
      ...(query.attributed === undefined ? {} : { attributed: query.attributed }),
      ...(query.cursor === undefined ? {} : { after: query.cursor.toUpperCase() }),
      order: query.order ?? "asc",
    };
    if (query.q !== undefined && query.q.trim() !== "") {
      // A text search reads each event it walks: one bounded step per request.
      const step = await reader.searchEvents({ ...filter, text: query.q, limit }, SEARCH_WALK);
      return c.json({ events: step.events, next_cursor: step.next });
    }
    const page = await reader.queryEvents({ ...filter, limit: limit + 1 });
    const more = page.length > limit;
    const items = more ? page.slice(0, limit) : page;
    return c.json({ events: items, next_cursor: more ? items.at(-1)?.id ?? null : null });
  });

  app.get("/v1/events/stream", async (c) => {
    const query = parseInput(StreamQuery, c.req.query(), "query");
    const session = query.session === undefined
      ? undefined
      : (await reader.getSession(query.session)).id;
    const lastEventId = c.req.header("last-event-id")?.trim();
    if (lastEventId !== undefined && lastEventId !== "" && !/^[0-9A-Z]{26}$/i.test(lastEventId)) {
      throw new HttpError(400, "Invalid Last-Event-ID: must be an event id (ULID)", {
        field: "Last-Event-ID",
      });
    }
    return streamEvents(c, {
      reader,
      live,
      ...(endsWith === undefined ? {} : {
        hello: `event: server\ndata: ${JSON.stringify(endsWith)}\n\n`,
      }),
      ...(endsWith === undefined && deps.servedBy === undefined ? {} : {
        farewell: () => farewell,
      }),
      ...(session === undefined ? {} : { session }),
      ...(lastEventId ? { lastEventId: lastEventId.toUpperCase() } : {}),
      ...(deps.heartbeatMs === undefined ? {} : { heartbeatMs: deps.heartbeatMs }),
      closing: closing.signal,
    });
  });

  for (const action of CONTROL_ACTIONS) {
    app.post(`/v1/sessions/:id/${action}`, async (c) => {
      const session = await reader.getSession(c.req.param("id"));
      const result: ControlResult = await controls[action](session);
      return c.json(result);
    });
  }

  app.post("/v1/sessions/:id/rollback", async (c) => {
    const body = parseInput(RollbackBody, await readJson(c), "body");
    const session: SessionSummary = await reader.getSession(c.req.param("id"));
    return c.json(
      await controls.rollback(session, {
        dryRun: body.dry_run ?? false,
        ...(body.paths === undefined ? {} : { paths: body.paths }),
      }),
    );
  });

  app.post("/v1/sessions/:id/policy/reload", async (c) => {
    const body = parseInput(PolicyReloadBody, await readJson(c), "body");
    const session: SessionSummary = await reader.getSession(c.req.param("id"));
    if (controls.reload === undefined) {
      throw new HttpError(409, "This API cannot reload a session's policy");
    }
    const request = reloadRequestOf(body, { dataDir, session: session.id });
    return c.json(reloadResultBody(await controls.reload(session, request)));
  });

  const { getEvent, policyReloads } = reader;
  const explains = getEvent !== undefined && policyReloads !== undefined;
  if (explains) {
    app.route(
      "/",
      explainRoutes({
        reader: {
          getEvent: getEvent.bind(reader),
          getSession: reader.getSession.bind(reader),
          policyReloads: policyReloads.bind(reader),
        },
        dataDir,
      }),
    );
  }

  app.get("/v1/policies", (c) => c.json({ policies: TEMPLATES.map((name) => ({ name })) }));

  app.get("/v1/policies/:name", async (c) => {
    const name = c.req.param("name");
    // Templates only: a path here would let the API read any file Sentry can.
    if (!isTemplateName(name)) throw new HttpError(404, `No policy template "${name}"`);
    const [yaml, resolved] = await Promise.all([readTemplate(name), loadPolicy(name)]);
    return c.json({ name, yaml, resolved });
  });

  app.get("/metrics", async (c) => {
    const running = (await reader.listSessions({ limit: 200 }))
      .filter((s) => s.state === "running" || s.state === "paused");
    const sensors: SessionSensor[] = [];
    for (const s of running) {
      for (const record of await reader.sensorStats(s.id)) {
        sensors.push({ session: s.id, stats: record.stats });
      }
    }
    const writes = reader.writeMetrics?.();
    const text = renderMetrics({
      events,
      sensors,
      live: running.map((s) => ({ session: s.id, tier: s.tier })),
      uptimeMs: clock() - started,
      ...(writes === undefined ? {} : { writes }),
      ...(deps.metrics === undefined ? {} : { extra: await deps.metrics() }),
    });
    return c.text(text, 200, { "Content-Type": "text/plain; version=0.0.4; charset=utf-8" });
  });

  const openapi = openApiDocument();
  app.get("/v1/openapi.json", (c) => c.json(openapi));

  // Anything else on a known path is the wrong method: 405, with the one that works.
  for (const path of GET_ROUTES) {
    if (path === "/v1/hosts" && sessionHosts === undefined) continue;
    if (path === "/v1/events/:id/explain" && !explains) continue;
    app.all(path, (c) => methodNotAllowed(c, "GET"));
  }
  for (const action of [...CONTROL_ACTIONS, "rollback"]) {
    app.all(`/v1/sessions/:id/${action}`, (c) => methodNotAllowed(c, "POST"));
  }

  return Object.assign(app, {
    close: () => {
      if (endsWith === undefined && deps.servedBy !== undefined) {
        farewell ??= Promise.resolve(
          `event: closing\ndata: ${JSON.stringify(deps.servedBy)}\n\n`,
        );
      }
      if (endsWith !== undefined && farewell === undefined) {
        // Read now, before the caller closes the journal (the journal's reader reads at once).
        farewell = reader.getSession(endsWith.session).then(
          (ended): SessionSummary | undefined => ended,
          // Gone or unreadable: the page still learns that this API stopped, and what to run.
          () => undefined,
        ).then((ended) => {
          const data = { ...endsWith, ...(ended === undefined ? {} : { ended }) };
          return `event: closing\ndata: ${JSON.stringify(data)}\n\n`;
        });
      }
      closing.abort();
      events.close();
    },
  });
}

/** The query string; a repeated `kind` counts as a comma-separated list, any other key as its last value. */
function queryOf(c: Context): Record<string, string> {
  const out: Record<string, string> = {};
  for (const [key, values] of Object.entries(c.req.queries())) {
    out[key] = key === "kind" ? values.join(",") : values.at(-1) ?? "";
  }
  return out;
}

function methodNotAllowed(c: Context, allow: string): Response {
  c.header("Allow", allow);
  return c.json(
    { error: `Method ${c.req.method} not allowed: use ${allow}`, field: "method" },
    405,
  );
}

/** Reads a JSON body; an empty body is `{}`. */
async function readJson(c: Context): Promise<unknown> {
  const text = await c.req.text();
  if (text.trim() === "") return {};
  const type = c.req.header("content-type") ?? "";
  if (!/^application\/json\b/i.test(type)) {
    throw new HttpError(400, "Invalid body: send application/json", { field: "content-type" });
  }
  try {
    return JSON.parse(text);
  } catch {
    throw new HttpError(400, "Invalid body: not JSON", { field: "body" });
  }
}
