/**
 * The API's wire shapes, as zod schemas: they validate requests, type responses and generate
 * the OpenAPI document, so the three never drift apart.
 *
 * @module
 */

import { z } from "zod";
import { AgentEvent, KINDS } from "../events/mod.ts";
import { RESPONSE_ACTIONS, RESPONSE_OUTCOMES, SessionRecord } from "../journal/mod.ts";

/** Every error body: a message, and the offending field when one input was at fault. */
export const ErrorBody = z.object({
  error: z.string(),
  field: z.string().optional(),
});

/** An error body. */
export type ErrorBody = z.infer<typeof ErrorBody>;

/** A sensor's counters, as `/health` and the session detail show them. */
export const SensorStatus = z.object({
  sensor: z.string(),
  emitted: z.number(),
  dropped: z.number(),
  deduplicated: z.number(),
  lagMs: z.number(),
  polls: z.number(),
  blindSpots: z.array(z.object({ id: z.string(), reason: z.string(), count: z.number() })),
});

/** `GET /health`. */
export const Health = z.object({
  status: z.literal("ok"),
  version: z.string(),
  uptimeMs: z.number(),
  sensors: z.array(SensorStatus),
});

/** A session with its counts. */
export const SessionSummary = SessionRecord.extend({
  events: z.number().int(),
  denied: z.number().int(),
  maxRisk: z.number().int(),
  responses: z.number().int(),
});

/** `GET /v1/sessions`. */
export const SessionList = z.object({ sessions: z.array(SessionSummary) });

/** A recorded response. */
export const ResponseRecord = z.object({
  id: z.number().int(),
  session: z.string(),
  eventId: z.string().nullable(),
  ts: z.string(),
  action: z.enum(RESPONSE_ACTIONS),
  outcome: z.enum(RESPONSE_OUTCOMES),
  detail: z.record(z.string(), z.unknown()),
});

/** `GET /v1/sessions/:id`: the session, its responses and its sensors' latest counters. */
export const SessionDetail = z.object({
  session: SessionSummary,
  responses: z.array(ResponseRecord),
  sensors: z.array(SensorStatus),
});

const ULID = z.string().regex(
  /^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$/,
  "must be an event id (ULID)",
);
const Integer = z.string().regex(/^\d+$/, "must be a non-negative integer").transform(Number);

/** The filters and page of `GET /v1/sessions/:id/events`, as query strings. */
export const EventsQuery = z.object({
  kind: z.string().transform((text, ctx) => {
    const kinds = text.split(",").map((k) => k.trim()).filter((k) => k !== "");
    for (const k of kinds) {
      if (!(KINDS as readonly string[]).includes(k)) {
        ctx.addIssue({ code: "custom", message: `unknown kind "${k}"` });
        return z.NEVER;
      }
    }
    return kinds as (typeof KINDS[number])[];
  }).optional().describe(`One kind or several, comma-separated: ${KINDS.join(", ")}`),
  verdict: z.enum(["allow", "deny"]).optional(),
  min_risk: Integer.pipe(z.number().max(100)).optional().describe("Risk at least this (0-100)"),
  since: z.iso.datetime().optional().describe("Events at or after this ISO 8601 time"),
  until: z.iso.datetime().optional().describe("Events before this ISO 8601 time"),
  order: z.enum(["asc", "desc"]).optional().describe("asc (oldest first, default) or desc"),
  limit: Integer.pipe(z.number().min(1).max(1000)).optional().describe("Page size, 1-1000"),
  cursor: ULID.optional().describe("The next_cursor of the previous page"),
  attributed: z.enum(["true", "false"]).transform((v) => v === "true").optional().describe(
    "true: only events of the agent's processes; false: only unattributed ones (pid null)",
  ),
  q: z.string().max(200).optional().describe(
    "Free text: every word must appear (ASCII case-insensitively) in the event's kind, target, " +
      "rule, verdict, response, pid, executable, command line or detail. Each request walks at " +
      "most 5,000 events of the session, so a page may hold fewer matches than `limit` (even " +
      "none) and still have a `next_cursor`: follow it to search further",
  ),
}).strict();

/** The page and filter of `GET /v1/sessions`, as query strings. */
export const SessionsQuery = EventsQuery.pick({ limit: true }).extend({
  host: z.string().min(1).max(255).optional().describe(
    "Only sessions of this host: its name, or on a collector its host id",
  ),
}).strict();

/** `GET /v1/sessions/:id/events`. */
export const EventPage = z.object({
  events: z.array(AgentEvent),
  /** Pass as `cursor` for the next page; null on the last page. */
  next_cursor: z.string().nullable(),
});

/** A host named by the local journal's sessions. */
export const LocalHost = z.object({
  /** The host name: what `GET /v1/sessions?host=` takes. */
  name: z.string(),
  sessions: z.number().int(),
  /** Its sessions still running or paused. */
  live: z.number().int(),
  /** When its newest session started. */
  last_started: z.string(),
});

/**
 * `GET /v1/hosts` of the local API: the hosts its journal's sessions name. `collector: false`
 * tells it from a collector's list (hosts that upload, by id and key).
 */
export const LocalHostList = z.object({
  collector: z.literal(false),
  hosts: z.array(LocalHost),
});

/**
 * The first message of the event stream of an API that stops with its session (`sentry run`,
 * `sentry attach`), `event: server`: which session that is, and the command that serves the
 * journal at the same address once it stopped. Sent again as `event: closing`, with the
 * session as the journal last has it, when that API stops.
 */
export const StreamServer = z.object({
  session: z.string(),
  /** Such as `sentry serve --port 7979`, with `SENTRY_HOME=...` when the data is elsewhere. */
  serve: z.string(),
  /** On `closing` only: the session as it ended. */
  ended: SessionSummary.optional(),
});

/** The filters of `GET /v1/events/stream`. */
export const StreamQuery = z.object({
  session: z.string().min(1).optional().describe("Only this session's events"),
}).strict();

/** `POST /v1/sessions/:id/rollback`'s body; an empty body means a full rollback. */
export const RollbackBody = z.object({
  dry_run: z.boolean().optional(),
  paths: z.array(z.string().min(1)).max(1000).optional().describe(
    "Only paths matching these globs",
  ),
}).strict();

/** The body of a rollback request. */
export type RollbackBody = z.infer<typeof RollbackBody>;

/** What a pause, resume or kill did to the session's processes. */
export const ControlResult = z.object({
  session: z.string(),
  action: z.enum(["pause", "resume", "kill"]),
  ok: z.boolean(),
  done: z.array(z.number().int()),
  failed: z.array(z.object({ pid: z.number().int(), reason: z.string() })),
  forced: z.array(z.number().int()).optional(),
});

/** What a pause, resume or kill did. */
export type ControlResult = z.infer<typeof ControlResult>;

/** What a rollback did, or would do for a dry run. */
export const RollbackResultBody = z.object({
  session: z.string(),
  dry_run: z.boolean(),
  ok: z.boolean(),
  snapshot: z.string(),
  actions: z.array(z.object({
    kind: z.enum(["restore", "recreate", "remove"]),
    path: z.string(),
    differences: z.array(z.string()),
  })),
  rollback: z.string().nullable(),
  counts: z.object({
    restored: z.number(),
    recreated: z.number(),
    removed: z.number(),
    failed: z.number(),
  }).nullable(),
  /** The session's processes stopped before the rollback (they stay stopped); absent on a dry run. */
  stopped: z.array(z.number()).optional(),
});

/** What a rollback did. */
export type RollbackResultBody = z.infer<typeof RollbackResultBody>;

/** `GET /v1/policies`. */
export const PolicyList = z.object({ policies: z.array(z.object({ name: z.string() })) });

/** `GET /v1/policies/:name`: the template's YAML and the policy it resolves to. */
export const PolicyDetail = z.object({
  name: z.string(),
  yaml: z.string(),
  resolved: z.record(z.string(), z.unknown()),
});
