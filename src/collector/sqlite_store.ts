/**
 * The collector's default store: its SQLite journal and its `keys.json`, behind
 * {@link CollectorStore}. The journal (src/journal/) keeps what every Sentry keeps: sessions,
 * events and their counts, and the queries over them. What only a collector does is here, on
 * the same file through the journal's write seam (`Journal.write`): the ingest of a host's
 * batch (sessions upserted under their owner, events inserted once by id), which host uploaded
 * each session, and the host records and bindings, kept as named values in `sync_state`.
 *
 * Each call runs synchronously inside its promise, so one process never interleaves two
 * batches; processes sharing the file agree through SQLite's write transactions.
 *
 * @module
 */

import { journalReader } from "../api/mod.ts";
import { type IngestBatch, IngestError, type IngestResult, type Journal } from "../journal/mod.ts";
import {
  bindHost,
  HOST_STATE_PREFIX,
  hostBindingKey,
  parseHost,
  recordHostVisit,
  type StateSlots,
  unbindHost,
} from "./hosts.ts";
import type { KeyStore } from "./keys.ts";
import { type AcceptResult, type CollectorStore, type HostSummary, visitOf } from "./store.ts";

/** What {@link openSqliteStore} wraps. */
export interface SqliteStoreOptions {
  /** The collector's journal. */
  journal: Journal;
  /** The collector's key store (`keys.json` in its data directory). */
  keys: KeyStore;
}

/** The SQLite store, and the journal it wraps (for the local API over it). */
export interface SqliteStore extends CollectorStore {
  readonly kind: "sqlite";
  /** The journal the store writes. */
  readonly journal: Journal;
  /** The key store. */
  readonly keys: KeyStore;
}

/** Wraps a collector's journal and key store. `close()` closes the journal. */
export function openSqliteStore(options: SqliteStoreOptions): SqliteStore {
  const { journal, keys } = options;
  const slots = journalSlots(journal);
  const reads = journalReader(journal);
  // Promise.resolve().then(...) turns a throw into a rejection, as a network store's would be.
  const run = <T>(body: () => T): Promise<T> => Promise.resolve().then(body);
  return {
    kind: "sqlite",
    location: journal.path,
    journal,
    keys,
    addKey: (name) => run(() => keys.add(name)),
    listKeys: () => run(() => keys.list()),
    revokeKey: (ref) => run(() => keys.revoke(ref)),
    verifyKey: (secret) => run(() => keys.verify(secret)),
    accept: (batch) =>
      run((): AcceptResult => {
        // Synchronous from here to the end: no other batch of this process interleaves.
        const { hostId, key } = batch;
        const binding = bindHost(slots, { hostId, key, keys: keys.list() });
        if (binding.outcome === "refused") return binding;
        let result;
        try {
          result = ingestBatch(journal, {
            key: key.id,
            hostId,
            sessions: batch.sessions,
            events: batch.events,
          });
        } catch (error) {
          unbindHost(slots, { hostId, keyId: key.id, binding });
          throw error;
        }
        recordHostVisit(slots, visitOf(batch, result));
        return { outcome: "stored", binding, result };
      }),
    ingest: (batch) => run(() => ingestBatch(journal, batch)),
    bindHost: (claim) => run(() => bindHost(slots, { ...claim, keys: keys.list() })),
    unbindHost: (undo) => run(() => unbindHost(slots, undo)),
    recordHostVisit: (visit) => run(() => recordHostVisit(slots, visit)),
    hostBinding: (hostId) => run(() => slots.get(hostBindingKey(hostId))),
    listHosts: () => run(() => listJournalHosts(journal)),
    listSessions: reads.listSessions,
    getSession: reads.getSession,
    queryEvents: reads.queryEvents,
    searchEvents: reads.searchEvents,
    responses: reads.responses,
    sensorStats: reads.sensorStats,
    getEvent: reads.getEvent,
    policyReloads: reads.policyReloads,
    retain: () =>
      Promise.reject(
        new RangeError(
          "Cannot apply a retention to the SQLite store: --retain needs --store postgres://...",
        ),
      ),
    close: () => run(() => journal.closed ? undefined : journal.close()),
  };
}

/**
 * Stores or updates a session received from a host. A final state is never moved back to a live
 * one, and a session belongs to the host (id) that first sent it, whatever key it used (so keys
 * can be rotated): another host's update is ignored (the caller then finds the owner differs and
 * rejects the batch). The key of the latest update is kept.
 */
const UPSERT_INGESTED_SESSION = `INSERT INTO sessions
  (id, agent, command, pid, kind, policy, mode, workspace, host, sentry_pid, started_at,
   ended_at, state, exit_code, note, origin_key, origin_host, tier)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT (id) DO UPDATE SET
    state = CASE WHEN sessions.state IN ('running', 'paused') THEN excluded.state
                 ELSE sessions.state END,
    ended_at = coalesce(excluded.ended_at, sessions.ended_at),
    exit_code = coalesce(excluded.exit_code, sessions.exit_code),
    note = coalesce(excluded.note, sessions.note),
    pid = coalesce(excluded.pid, sessions.pid),
    origin_key = excluded.origin_key,
    rev = sessions.rev + 1
  WHERE sessions.origin_host IS excluded.origin_host`;

/** Which host uploaded a session (null for a session of the journal's own host). */
const SELECT_SESSION_ORIGIN = "SELECT origin_host FROM sessions WHERE id = ?";

/** How many sessions each key and host uploaded. */
const SELECT_ORIGINS = `SELECT origin_key, origin_host, count(*) AS n FROM sessions
  WHERE origin_key IS NOT NULL GROUP BY origin_key, origin_host`;

const GET_STATE = "SELECT value FROM sync_state WHERE key = ?";
const PUT_STATE = `INSERT INTO sync_state (key, value) VALUES (?, ?)
  ON CONFLICT (key) DO UPDATE SET value = excluded.value`;
const DELETE_STATE = "DELETE FROM sync_state WHERE key = ?";
const LIST_STATES = "SELECT key, value FROM sync_state WHERE key >= ? AND key < ? ORDER BY key";

/**
 * Stores a batch received from a host in a collector's journal, in one transaction: sessions
 * are upserted (a final state stays final) and events are inserted once by id, so a retried
 * batch counts its events as duplicates. A session belongs to the host that first sent it,
 * under any key. Validate the batch first; this checks only ownership and references.
 *
 * @throws {IngestError} when a session belongs to another host or an event names a session
 *   that is neither in the batch nor stored; nothing of the batch is stored then.
 */
export function ingestBatch(journal: Journal, batch: IngestBatch): IngestResult {
  return journal.write((tx) => {
    const result = { accepted: 0, duplicates: 0, sessions: 0 };
    const upsert = tx.statement(UPSERT_INGESTED_SESSION);
    const origin = tx.statement(SELECT_SESSION_ORIGIN);
    for (const [i, s] of batch.sessions.entries()) {
      upsert.run(
        s.id,
        s.agent,
        JSON.stringify(s.command),
        s.pid,
        s.kind,
        s.policy,
        s.mode,
        s.workspace,
        s.host,
        s.sentryPid,
        s.startedAt,
        s.endedAt,
        s.state,
        s.exitCode,
        s.note,
        batch.key,
        batch.hostId,
        s.tier,
      );
      const owner = origin.get(s.id)?.["origin_host"] ?? null;
      if (owner !== batch.hostId) {
        throw new IngestError(`Session "${s.id}" belongs to another host`, `sessions[${i}].id`);
      }
      result.sessions++;
    }
    const known = new Set(batch.sessions.map((s) => s.id));
    for (const [i, e] of batch.events.entries()) {
      if (!known.has(e.session)) {
        const owner = origin.get(e.session);
        if (owner === undefined) {
          throw new IngestError(
            `Event "${e.id}" names session "${e.session}", which is not in the batch or stored`,
            `events[${i}].session`,
          );
        }
        if ((owner["origin_host"] ?? null) !== batch.hostId) {
          throw new IngestError(
            `Session "${e.session}" belongs to another host`,
            `events[${i}].session`,
          );
        }
        known.add(e.session);
      }
      if (tx.insertEvent(e)) result.accepted++;
      else result.duplicates++;
    }
    return result;
  });
}

/**
 * The named values of a collector's journal (its `sync_state` table), where host records and
 * bindings live; `swap` is one write transaction, so processes sharing the file agree.
 */
export function journalSlots(journal: Journal): StateSlots {
  const get = (key: string): string | undefined => {
    const row = journal.statement(GET_STATE).get(key);
    return row === undefined ? undefined : String(row["value"]);
  };
  return {
    get,
    set: (key, value) => journal.statement(PUT_STATE).run(key, value),
    swap: (key, expected, value) =>
      journal.write((tx) => {
        const row = tx.statement(GET_STATE).get(key);
        const found = row === undefined ? undefined : String(row["value"]);
        if (found !== expected) return found;
        if (value === undefined) tx.statement(DELETE_STATE).run(key);
        else tx.statement(PUT_STATE).run(key, value);
        return found;
      }),
    list: (prefix) =>
      journal.statement(LIST_STATES).all(prefix, `${prefix}\uffff`)
        .map((row) => [String(row["key"]), String(row["value"])]),
  };
}

/**
 * The hosts that uploaded to a collector's journal, the most recently seen first, with their
 * session counts.
 */
export function listJournalHosts(journal: Journal): HostSummary[] {
  const counts = new Map<string, number>();
  for (const row of journal.statement(SELECT_ORIGINS).all()) {
    counts.set(`${String(row["origin_key"])}:${String(row["origin_host"])}`, Number(row["n"]));
  }
  const hosts: HostSummary[] = [];
  for (const [, value] of journalSlots(journal).list(HOST_STATE_PREFIX)) {
    const host = parseHost(value);
    if (host === null) continue;
    hosts.push({ ...host, sessions: counts.get(`${host.key_id}:${host.host_id}`) ?? 0 });
  }
  return hosts.sort((a, b) => b.last_seen.localeCompare(a.last_seen));
}
