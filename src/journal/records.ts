/**
 * What the journal stores besides events: sessions, responses and sensor counters, and the
 * shapes of its queries.
 *
 * @module
 */

import { z } from "zod";
import type { AgentEvent, Kind } from "../events/mod.ts";
import type { SensorStats } from "../sensors/mod.ts";

/** How Sentry came to watch an agent: it started it (`run`) or joined it (`attach`). */
export const SESSION_KINDS = ["run", "attach"] as const;

/** How Sentry came to watch an agent. */
export type SessionKind = typeof SESSION_KINDS[number];

/**
 * A session's lifecycle. `running` and `paused` are live; the others are final. `crashed` is set
 * by {@link Journal.reconcile} when the Sentry process that owned a live session is gone.
 */
export const SESSION_STATES = [
  "running",
  "paused",
  "ended",
  "killed",
  "detached",
  "crashed",
] as const;

/** A session's lifecycle state. */
export type SessionState = typeof SESSION_STATES[number];

const Timestamp = z.iso.datetime({ precision: 3 });

/** One watched agent run, as the `sessions` table stores it. */
export const SessionRecord = z.object({
  /** Unique; a ULID in practice, so ids sort by start time and prefixes are meaningful. */
  id: z.string().min(1),
  agent: z.string().min(1),
  /** The agent's argv (empty when attached to a running process whose argv is unknown). */
  command: z.array(z.string()),
  /** The agent's root process, or null before it is known. */
  pid: z.number().int().positive().nullable(),
  kind: z.enum(SESSION_KINDS),
  /** The policy's name, such as `coding-agent` or a file path. */
  policy: z.string().min(1),
  /** The policy mode, such as `monitor` or `kill`. */
  mode: z.string().min(1),
  workspace: z.string(),
  /**
   * The sensing tier that watched the session (`ebpf`, `seccomp`, `fanotify` or `poll`), or null
   * for a session journaled before tiers existed.
   */
  tier: z.enum(["ebpf", "seccomp", "fanotify", "poll"]).nullable().default(null),
  /** The host name, so that {@link Journal.reconcile} only judges this host's processes. */
  host: z.string(),
  /** The `sentry` process watching the session. */
  sentryPid: z.number().int().positive(),
  /** ISO 8601 with milliseconds, in UTC. */
  startedAt: Timestamp,
  endedAt: Timestamp.nullable(),
  state: z.enum(SESSION_STATES),
  exitCode: z.number().int().nullable(),
  note: z.string().nullable(),
});

/** One watched agent run. */
export type SessionRecord = z.infer<typeof SessionRecord>;

/**
 * A session to create: a {@link SessionRecord} where the journal fills what is left out
 * (`startedAt` from its clock, `host` and `sentryPid` from its options, `state` = `running`,
 * and null for the rest).
 */
export type NewSession =
  & Omit<
    SessionRecord,
    "startedAt" | "host" | "sentryPid" | "endedAt" | "state" | "exitCode" | "note" | "tier"
  >
  & Partial<
    Pick<
      SessionRecord,
      "startedAt" | "host" | "sentryPid" | "endedAt" | "state" | "exitCode" | "note" | "tier"
    >
  >;

/** The fields of a session that change while it runs. */
export const SessionPatch = SessionRecord.pick({
  pid: true,
  command: true,
  policy: true,
  mode: true,
  endedAt: true,
  state: true,
  exitCode: true,
  note: true,
}).partial().strict();

/** A change to a session; fields left out keep their value. */
export type SessionPatch = z.infer<typeof SessionPatch>;

/** A session with what happened in it, as `sentry sessions` lists it. */
export interface SessionSummary extends SessionRecord {
  /** Events journaled. */
  events: number;
  /** Events with verdict `deny`. */
  denied: number;
  /** The highest risk of any event, 0 when there are none. */
  maxRisk: number;
  /** Responses taken (whatever their outcome). */
  responses: number;
}

/** The responses a responder can take, and record. */
export const RESPONSE_ACTIONS = [
  "alert",
  "pause",
  "resume",
  "kill",
  "rollback",
  "block",
  "detach",
] as const;

/** One response action. */
export type ResponseAction = typeof RESPONSE_ACTIONS[number];

/** How a response went: `partial` when, say, a rollback restored some files but not all. */
export const RESPONSE_OUTCOMES = ["ok", "failed", "partial"] as const;

/** How a response went. */
export type ResponseOutcome = typeof RESPONSE_OUTCOMES[number];

/** A response to record with {@link Journal.recordResponse}. */
export interface NewResponse {
  session: string;
  /** The event that triggered it, if one did (a manual `sentry pause` has none). */
  eventId?: string | null;
  /** Defaults to the journal's clock at the time of the call. */
  ts?: string;
  action: ResponseAction;
  outcome: ResponseOutcome;
  /** Free-form detail, such as the pids signalled or the files restored. */
  detail?: Record<string, unknown>;
}

/** A recorded response. */
export interface ResponseRecord {
  /** Increasing in the order responses were written. */
  id: number;
  session: string;
  eventId: string | null;
  ts: string;
  action: ResponseAction;
  outcome: ResponseOutcome;
  detail: Record<string, unknown>;
}

/** A sensor's latest counters in a session. */
export interface SensorStatsRecord {
  session: string;
  sensor: string;
  stats: SensorStats;
  updatedAt: string;
}

/** Options for {@link Journal.listSessions}. */
export interface ListSessionsOptions {
  /** At most this many sessions, most recently started first; default 50. */
  limit?: number;
  /** Only sessions of this host: its name, or on a collector its host id. */
  host?: string;
}

/**
 * Which events {@link Journal.queryEvents} returns. Every field narrows the result; ids are
 * ULIDs, so id order is time order.
 */
export interface EventFilter {
  session?: string;
  /** One kind or any of several. */
  kind?: Kind | readonly Kind[];
  /** Risk at least this. */
  minRisk?: number;
  verdict?: "allow" | "deny";
  /** `ts` at or after this ISO timestamp. */
  since?: string;
  /** `ts` before this ISO timestamp (exclusive). */
  until?: string;
  /**
   * Only events tied to one of the agent's processes (`pid` set: true), or only unattributed
   * ones (false). Read from each event, not from an index.
   */
  attributed?: boolean;
  /**
   * Free text: every word (split on white space) must appear, ASCII case-insensitively, in the
   * event's kind, target, rule, verdict, response, pid, executable, command line or detail, as
   * JSON text (so `"` and `\` match as typed). Read from each event walked: bound a search with
   * {@link Journal.searchEvents}.
   */
  text?: string;
  /**
   * A cursor: only events after this id in the chosen order (greater ids for `asc`, smaller for
   * `desc`). Pass the last id of a page to get the next.
   */
  after?: string;
  /** `asc` (oldest first, the default) or `desc` (newest first: "the latest N"). */
  order?: "asc" | "desc";
  /** At most this many events; default 1000. */
  limit?: number;
}

/** A host named by the journal's sessions, as {@link Journal.sessionHosts} lists it. */
export interface SessionHost {
  /** The host's name, as the sessions record it (what `listSessions({ host })` takes). */
  host: string;
  sessions: number;
  /** Its sessions still running or paused. */
  live: number;
  /** When its newest session started (ISO). */
  lastStarted: string;
}

/** One bounded step of {@link Journal.searchEvents}. */
export interface SearchPage {
  /** The matches found in the walked window, in the filter's order. */
  events: AgentEvent[];
  /** The cursor (`after`) to continue from; null once the session's end was reached. */
  next: string | null;
}

/** How many events of one kind a session has. */
export interface KindCount {
  kind: Kind;
  count: number;
  denied: number;
}

/** The journal's write counters, for `/metrics`. */
export interface JournalMetrics {
  /** Batched transactions committed. */
  batches: number;
  /** Events written (not counting duplicates of an id already stored). */
  eventsWritten: number;
  responsesWritten: number;
  /** Rows the database refused (an event for an unknown session), dropped and counted. */
  rejected: number;
  /** Appends refused because the buffer was full (the database was failing for a while). */
  dropped: number;
  /** Batches that failed to commit and were kept for the next try. */
  writeErrors: number;
  /** The last write error's message, or null. */
  lastError: string | null;
  /** Events and responses buffered, not yet written. */
  pending: number;
  /** Latency of the last batch transaction, in milliseconds (0 before the first). */
  lastBatchMs: number;
  /** Latency percentiles over the recent batches, in milliseconds. */
  p50BatchMs: number;
  p99BatchMs: number;
  maxBatchMs: number;
}
