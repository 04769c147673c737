/**
 * The collector's default store: its SQLite journal (sessions, events, host records and
 * bindings in `sync_state`) and its `keys.json`, behind {@link CollectorStore}. Each call runs
 * synchronously inside its promise, so one process never interleaves two batches; processes
 * sharing the file agree through SQLite's write transactions.
 *
 * @module
 */

import type { Journal } from "../journal/mod.ts";
import { HOST_STATE_PREFIX, hostBindingKey, parseHost, recordHostVisit } from "./hosts.ts";
import { bindHost, unbindHost } from "./hosts.ts";
import type { KeyStore } from "./keys.ts";
import type { AcceptResult, CollectorStore, HostSummary } from "./store.ts";

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
        const all = keys.list();
        const { hostId, key } = batch;
        const binding = bindHost(journal, { hostId, key, keys: all });
        if (binding.outcome === "refused") return binding;
        let result;
        try {
          result = journal.ingest({
            key: key.id,
            hostId,
            sessions: batch.sessions,
            events: batch.events,
          });
        } catch (error) {
          unbindHost(journal, { hostId, keyId: key.id, binding });
          throw error;
        }
        recordHostVisit(journal, {
          hostId,
          name: batch.hostName,
          keyId: key.id,
          keyName: key.name,
          at: batch.at,
          accepted: result.accepted,
          duplicates: result.duplicates,
          dropped: batch.dropped,
        });
        return { outcome: "stored", binding, result };
      }),
    recordHostVisit: (visit) => run(() => recordHostVisit(journal, visit)),
    hostBinding: (hostId) => run(() => journal.syncState(hostBindingKey(hostId))),
    listHosts: () => run(() => listJournalHosts(journal)),
    listSessions: (options) => run(() => journal.listSessions(options)),
    getSession: (ref) => run(() => journal.getSession(ref)),
    queryEvents: (filter) => run(() => journal.queryEvents(filter)),
    searchEvents: (filter, maxWalk) => run(() => journal.searchEvents(filter, maxWalk)),
    responses: (session) => run(() => journal.responses(session)),
    sensorStats: (session) => run(() => journal.sensorStats(session)),
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
 * The hosts that uploaded to a collector's journal, the most recently seen first, with their
 * session counts.
 */
export function listJournalHosts(journal: Journal): HostSummary[] {
  const counts = new Map<string, number>();
  for (const o of journal.sessionOrigins()) counts.set(`${o.key}:${o.hostId}`, o.sessions);
  const hosts: HostSummary[] = [];
  for (const [, value] of journal.syncStates(HOST_STATE_PREFIX)) {
    const host = parseHost(value);
    if (host === null) continue;
    hosts.push({ ...host, sessions: counts.get(`${host.key_id}:${host.host_id}`) ?? 0 });
  }
  return hosts.sort((a, b) => b.last_seen.localeCompare(a.last_seen));
}
