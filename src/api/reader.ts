/**
 * What the API's routes read: {@link ApiReader}, the queries of a journal made asynchronous, so
 * that one set of routes serves the local journal (through {@link journalReader}) and the
 * collector's store, whose queries go to PostgreSQL. The collector's `CollectorStore` has the
 * same methods, and is an `ApiReader` as it is.
 *
 * @module
 */

import type { AgentEvent } from "../events/mod.ts";
import type {
  EventFilter,
  Journal,
  JournalMetrics,
  ListSessionsOptions,
  PolicyReloadRecord,
  ResponseRecord,
  SearchPage,
  SensorStatsRecord,
  SessionHost,
  SessionSummary,
} from "../journal/mod.ts";

/**
 * The reads of the API's routes. The first six every store answers; the optional ones only
 * the local journal does, and a route that needs one is absent without it (`GET /v1/hosts`,
 * `GET /v1/events/:id/explain`) or leaves out what it would have said (the journal's write
 * figures in `/metrics`).
 */
export interface ApiReader {
  /** The most recently started sessions first, with their counts. */
  listSessions(options?: ListSessionsOptions): Promise<SessionSummary[]>;
  /**
   * One session by id, unique id prefix, or `"last"`.
   *
   * @throws {SessionRefError} when nothing matches or a prefix is ambiguous.
   */
  getSession(ref: string): Promise<SessionSummary>;
  /** Events matching a filter, by id, as `Journal.queryEvents` pages them. */
  queryEvents(filter?: EventFilter): Promise<AgentEvent[]>;
  /** One bounded step of a text search in a session, as `Journal.searchEvents`. */
  searchEvents(filter: EventFilter & { session: string }, maxWalk: number): Promise<SearchPage>;
  /** A session's responses. */
  responses(session: string): Promise<ResponseRecord[]>;
  /** A session's sensor counters. */
  sensorStats(session: string): Promise<SensorStatsRecord[]>;
  /** The hosts of the stored sessions, for the local API's `GET /v1/hosts`. */
  sessionHosts?(): Promise<SessionHost[]>;
  /** One event by id, for `GET /v1/events/:id/explain` (with {@link policyReloads}). */
  getEvent?(id: string): Promise<AgentEvent | undefined>;
  /** A session's policy reloads, for `GET /v1/events/:id/explain`. */
  policyReloads?(session: string): Promise<PolicyReloadRecord[]>;
  /**
   * Writes the events buffered in this process, so that a stream's replay sees them; may
   * throw (the buffer is kept and retried).
   */
  flush?(): void;
  /** This process's journal write figures, for `/metrics`. */
  writeMetrics?(): JournalMetrics;
}

/**
 * The reader over a journal. Each query runs when it is called, not on a later tick, so a read
 * started just before the journal closes still answers; its error comes as a rejection.
 */
export function journalReader(journal: Journal): Required<ApiReader> {
  return {
    listSessions: (options) => now(() => journal.listSessions(options)),
    getSession: (ref) => now(() => journal.getSession(ref)),
    queryEvents: (filter) => now(() => journal.queryEvents(filter)),
    searchEvents: (filter, maxWalk) => now(() => journal.searchEvents(filter, maxWalk)),
    responses: (session) => now(() => journal.responses(session)),
    sensorStats: (session) => now(() => journal.sensorStats(session)),
    sessionHosts: () => now(() => journal.sessionHosts()),
    getEvent: (id) => now(() => journal.getEvent(id)),
    policyReloads: (session) => now(() => journal.policyReloads(session)),
    flush: () => {
      if (!journal.closed) journal.flush();
    },
    writeMetrics: () => journal.metrics(),
  };
}

/** Runs a synchronous query now; its result or error as a promise. */
function now<T>(query: () => T): Promise<T> {
  try {
    return Promise.resolve(query());
  } catch (error) {
    return Promise.reject(error);
  }
}
