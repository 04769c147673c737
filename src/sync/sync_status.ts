/**
 * The uploader's state as the journal keeps it, so that `sentry sync status` in another process
 * (or after a crash) sees the last success, the last error and the next attempt. Everything
 * lives in the journal's `sync_state` table; nothing is kept in memory alone.
 *
 * @module
 */

import { type Journal, LEASE_KEY } from "../journal/mod.ts";

/** The `sync_state` key of the uploader's last recorded status (JSON). */
export const STATUS_KEY = "uploader";

/** The `sync_state` key of the dropped count the collector last acknowledged. */
export const DROPPED_SYNCED_KEY = "dropped_synced";

/** The default outbox cap, in events: past it the oldest are dropped (and counted). */
export const DEFAULT_OUTBOX_MAX_EVENTS = 1_000_000;

/**
 * What the uploader is doing: `idle` (the outbox is empty), `uploading`, `backoff` (waiting
 * after a failure), `standby` (another process holds the lease and uploads), `unauthorized`
 * (the collector refused the key; it stopped), `stopped` (closed).
 */
export type UploaderState =
  | "idle"
  | "uploading"
  | "backoff"
  | "standby"
  | "unauthorized"
  | "stopped";

/** A failed attempt. */
export interface SyncFailure {
  /** ISO 8601. */
  at: string;
  message: string;
  /** The HTTP status, or null for a network error or a timeout. */
  status: number | null;
}

/** What the uploader records after each attempt. */
export interface RecordedStatus {
  state: UploaderState;
  /** The lease owner that wrote it (`host:pid:nonce`). */
  owner: string;
  endpoint: string;
  outboxMaxEvents: number;
  lastSuccessAt: string | null;
  lastError: SyncFailure | null;
  /** When the next try is due, while backing off. */
  nextAttemptAt: string | null;
  /** Events the collector stored, and the duplicates it absorbed, over this journal's life. */
  accepted: number;
  duplicates: number;
  /** ISO 8601. */
  updatedAt: string;
}

/** Who holds the upload lease. */
export interface LeaseInfo {
  owner: string;
  /** The owner's host and pid, when the owner string has Sentry's shape. */
  host: string | null;
  pid: number | null;
  /** ISO 8601. */
  until: string;
  /** Whether the lease has not expired yet. */
  valid: boolean;
}

/** The sync side of a journal at a glance, for `sentry sync status`. */
export interface SyncStatus {
  /** Events waiting in the outbox. */
  pending: number;
  /** The oldest waiting event's timestamp, and its age in ms. */
  oldestTs: string | null;
  oldestAgeMs: number | null;
  /** Events dropped at the cap, in total, and how many of those the collector was told of. */
  dropped: number;
  droppedSynced: number;
  /** The lease, or null when no uploader holds one. */
  lease: LeaseInfo | null;
  /** The uploader's last recorded status, or null when none ever ran on this journal. */
  recorded: RecordedStatus | null;
}

/** Splits a lease owner `host:pid:nonce` into its host and pid. */
export function parseOwner(owner: string): { host: string | null; pid: number | null } {
  const m = /^(.*):(\d+):[^:]*$/.exec(owner);
  if (m === null) return { host: null, pid: null };
  return { host: m[1] ?? null, pid: Number(m[2]) };
}

/** The lease as stored, or null when there is none. */
export function readLease(journal: Journal, nowMs: number): LeaseInfo | null {
  const value = journal.syncState(LEASE_KEY);
  if (value === undefined) return null;
  const cut = value.lastIndexOf(" ");
  const owner = value.slice(0, cut);
  const until = Number(value.slice(cut + 1));
  return {
    owner,
    ...parseOwner(owner),
    until: new Date(Number.isFinite(until) ? until : 0).toISOString(),
    valid: until > nowMs,
  };
}

/** The uploader's last recorded status, or null when there is none or it cannot be read. */
export function readRecordedStatus(journal: Journal): RecordedStatus | null {
  const text = journal.syncState(STATUS_KEY);
  if (text === undefined) return null;
  try {
    return JSON.parse(text) as RecordedStatus;
  } catch {
    return null;
  }
}

/** Records the uploader's status. */
export function writeRecordedStatus(journal: Journal, status: RecordedStatus): void {
  journal.setSyncState(STATUS_KEY, JSON.stringify(status));
}

/**
 * Reads the sync status of a journal. It counts the outbox, which takes time in proportion to
 * its size (about 0.1 s at a million events), so call it on demand, not in a loop.
 */
export function readSyncStatus(journal: Journal, nowMs: number): SyncStatus {
  const stats = journal.outboxStats();
  const oldest = stats.oldestTs === null ? NaN : Date.parse(stats.oldestTs);
  return {
    pending: stats.pending,
    oldestTs: stats.oldestTs,
    oldestAgeMs: Number.isNaN(oldest) ? null : Math.max(0, nowMs - oldest),
    dropped: stats.dropped,
    droppedSynced: Number(journal.syncState(DROPPED_SYNCED_KEY) ?? 0),
    lease: readLease(journal, nowMs),
    recorded: readRecordedStatus(journal),
  };
}
