/**
 * The shapes of the journal's sync side: the outbox a host uploads from, and the batches a
 * collector ingests.
 *
 * @module
 */

import type { AgentEvent } from "../events/mod.ts";
import type { SessionRecord } from "./records.ts";

/** The `sync_state` key of the count of events the outbox dropped at its cap. */
export const DROPPED_KEY = "dropped";

/** The `sync_state` key of the uploader's lease: `"<owner> <expiry ms>"`. */
export const LEASE_KEY = "lease";

/** One queued event. */
export interface OutboxItem {
  /** Its place in the queue; acknowledge through it. */
  seq: number;
  eventId: string;
  /** The event's session, or null when the event is gone. */
  session: string | null;
  /** The event as stored (JSON of an `AgentEvent`), or null when the event is gone. */
  json: string | null;
}

/** The outbox at a glance. */
export interface OutboxStats {
  /** Events waiting to be uploaded. */
  pending: number;
  /** The oldest waiting event's timestamp, or null when the outbox is empty. */
  oldestTs: string | null;
  /** Events dropped at the cap, ever, on this journal. */
  dropped: number;
}

/** A session to upload, with the revision it is at. */
export interface SyncSession {
  record: SessionRecord;
  rev: number;
}

/** A validated batch for a collector store's ingest (`CollectorStore.ingest`). */
export interface IngestBatch {
  /** The id of the API key that sent it (recorded with the sessions). */
  key: string;
  /** The sending host's id: sessions belong to the host that first sent them. */
  hostId: string;
  sessions: readonly SessionRecord[];
  events: readonly AgentEvent[];
}

/** What a collector store's ingest (`CollectorStore.ingest`) stored. */
export interface IngestResult {
  /** Events stored now. */
  accepted: number;
  /** Events that were already stored (a retried batch). */
  duplicates: number;
  /** Sessions created or updated. */
  sessions: number;
}

/** A batch that refers to what it may not touch; `field` names the offending item. */
export class IngestError extends Error {
  /** The batch field at fault, such as `events[3].session`. */
  readonly field: string;

  /** Builds the error. */
  constructor(message: string, field: string) {
    super(message);
    this.name = "IngestError";
    this.field = field;
  }
}
