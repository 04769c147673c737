/**
 * What the collector knows about each uploading host, kept in its journal's `sync_state` under
 * `host:<key id>:<host id>`: when it was first and last seen, its name, how many batches and
 * events it sent, and how many events its outbox dropped (the count it reports in each batch).
 *
 * @module
 */

import type { Journal } from "../journal/mod.ts";

/** The `sync_state` key prefix of host records. */
export const HOST_STATE_PREFIX = "host:";

/** One host, as the collector saw it. */
export interface HostRecord {
  /** The host id (a ULID the host made once). */
  host_id: string;
  /** The host's name (its hostname) in its latest batch. */
  name: string;
  /** The key it uploads with. */
  key_id: string;
  key_name: string;
  first_seen: string;
  last_seen: string;
  /** Accepted batches. */
  batches: number;
  /** Events stored from it. */
  events: number;
  /** Events it sent again (retries), not stored twice. */
  duplicates: number;
  /** Events its outbox dropped at its cap, in total, as it last reported. */
  dropped: number;
}

/** What one accepted batch adds to a host's record. */
export interface HostVisit {
  hostId: string;
  name: string;
  keyId: string;
  keyName: string;
  /** ISO time of the batch's arrival. */
  at: string;
  accepted: number;
  duplicates: number;
  dropped: number;
}

/** The `sync_state` key of a host's record. */
export function hostStateKey(keyId: string, hostId: string): string {
  return `${HOST_STATE_PREFIX}${keyId}:${hostId}`;
}

/**
 * Adds an accepted batch to its host's record. The dropped count only grows: a retried older
 * batch carries an older, smaller total.
 */
export function recordHostVisit(journal: Journal, visit: HostVisit): HostRecord {
  const key = hostStateKey(visit.keyId, visit.hostId);
  const previous = parseHost(journal.syncState(key));
  const record: HostRecord = {
    host_id: visit.hostId,
    name: visit.name,
    key_id: visit.keyId,
    key_name: visit.keyName,
    first_seen: previous?.first_seen ?? visit.at,
    last_seen: visit.at,
    batches: (previous?.batches ?? 0) + 1,
    events: (previous?.events ?? 0) + visit.accepted,
    duplicates: (previous?.duplicates ?? 0) + visit.duplicates,
    dropped: Math.max(previous?.dropped ?? 0, visit.dropped),
  };
  journal.setSyncState(key, JSON.stringify(record));
  return record;
}

/** Parses a stored host record; null when absent or unreadable. */
export function parseHost(value: string | undefined): HostRecord | null {
  if (value === undefined) return null;
  try {
    const data = JSON.parse(value) as HostRecord;
    return typeof data === "object" && data !== null && typeof data.host_id === "string"
      ? data
      : null;
  } catch {
    return null;
  }
}
