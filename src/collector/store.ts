/**
 * The collector's storage, behind one asynchronous interface: {@link CollectorStore}. Two
 * implementations: SQLite (the default, `openSqliteStore`: the collector's journal and its
 * `keys.json`) and PostgreSQL (`openPostgresStore`, chosen with `sentry server --store
 * postgres://...`), where several `sentry server` processes share one database.
 *
 * @module
 */

import { redactUrl as redactSecrets } from "../config/mod.ts";
import { type ApiReader, UnavailableError } from "../api/mod.ts";
import type { AgentEvent } from "../events/mod.ts";
import type {
  IngestBatch,
  IngestResult,
  PolicyReloadRecord,
  SessionRecord,
} from "../journal/mod.ts";
import type { HostBinding, HostRecord, HostVisit } from "./hosts.ts";
import type { KeyInfo, NewKey } from "./keys.ts";

/** A host as `GET /v1/hosts` lists it. */
export interface HostSummary extends HostRecord {
  /** Sessions stored from this host under this key. */
  sessions: number;
}

/** One validated batch, with the key that sent it, as {@link CollectorStore.accept} takes it. */
export interface AcceptBatch {
  /** The key of the request. */
  key: KeyInfo;
  /** The host id, upper case. */
  hostId: string;
  /** The host's name in this batch. */
  hostName: string;
  sessions: readonly SessionRecord[];
  events: readonly AgentEvent[];
  /** The host's dropped count as it reports it. */
  dropped: number;
  /** ISO time of the batch's arrival. */
  at: string;
}

/**
 * What {@link CollectorStore.accept} did: stored the batch (with how the host's binding went:
 * `bound`, `claimed` or `rebound`), or refused it because the host is bound to another key.
 */
export type AcceptResult =
  | { outcome: "refused"; boundTo: string }
  | {
    outcome: "stored";
    binding: Exclude<HostBinding, { outcome: "refused" }>;
    result: IngestResult;
  };

/** What an accepted batch adds to its host's record. */
export function visitOf(batch: AcceptBatch, result: IngestResult): HostVisit {
  return {
    hostId: batch.hostId,
    name: batch.hostName,
    keyId: batch.key.id,
    keyName: batch.key.name,
    at: batch.at,
    accepted: result.accepted,
    duplicates: result.duplicates,
    dropped: batch.dropped,
  };
}

/** What {@link CollectorStore.retain} removed. */
export interface RetainResult {
  /** Day partitions dropped (PostgreSQL). */
  partitions: number;
  /** Sessions removed: final, started before the cut-off, with no event left. */
  sessions: number;
}

/**
 * The collector's storage: upload keys, host bindings and records, ingest, and the queries of
 * its API and dashboard (those of {@link ApiReader}, which the API's routes read through).
 * Every method is asynchronous, as a network database is. On a collector, `responses` and
 * `sensorStats` are empty: hosts do not upload them.
 */
export interface CollectorStore extends ApiReader {
  /** One event by id (for the explain route), or undefined. */
  getEvent(id: string): Promise<AgentEvent | undefined>;
  /** A session's policy reloads: hosts do not upload them, so empty on a collector. */
  policyReloads(session: string): Promise<PolicyReloadRecord[]>;

  /** `sqlite` or `postgres`. */
  readonly kind: "sqlite" | "postgres";
  /** Where it is, for logs: a file path, or a URL without its password. */
  readonly location: string;

  /**
   * Makes an upload key named `name`; the secret is shown once.
   *
   * @throws {KeyError} when the name is invalid or an active key has it.
   */
  addKey(name: string): Promise<NewKey>;
  /** Every key, active and revoked, oldest first. */
  listKeys(): Promise<KeyInfo[]>;
  /**
   * Revokes a key by id or by the name of an active key.
   *
   * @throws {KeyError} when no key matches.
   */
  revokeKey(ref: string): Promise<KeyInfo>;
  /** The active key whose secret this is, or null. */
  verifyKey(secret: string): Promise<KeyInfo | null>;

  /**
   * Stores a validated batch: binds the host id to the key (see `bindHost`), upserts the
   * sessions, inserts the events once by id, and adds the batch to the host's record, all or
   * nothing.
   *
   * @throws {IngestError} when a session belongs to another host or an event names an unknown
   *   session; nothing is stored and the host is not bound.
   */
  accept(batch: AcceptBatch): Promise<AcceptResult>;
  /**
   * Stores sessions and events under `batch.key` in one transaction, as `accept` does, but
   * neither binds the host nor adds to its record: for an import, which binds the host first
   * ({@link bindHost}) and stores a bundle in several batches.
   *
   * @throws {IngestError} as `accept`; nothing of the batch is stored then.
   */
  ingest(batch: IngestBatch): Promise<IngestResult>;
  /**
   * Binds a host id to the key that presents it, or checks that it is bound to it: the rules of
   * `bindHost` in hosts.ts, on this store. `refused` names the key the host is bound to.
   */
  bindHost(claim: { hostId: string; key: { id: string; name: string } }): Promise<HostBinding>;
  /** Undoes a binding {@link bindHost} just made, when what it was made for was not stored. */
  unbindHost(undo: { hostId: string; keyId: string; binding: HostBinding }): Promise<void>;
  /** Adds a batch to a host's record (`accept` does it; tests and imports call it alone). */
  recordHostVisit(visit: HostVisit): Promise<HostRecord>;
  /** The key id a host id is bound to, or undefined. */
  hostBinding(hostId: string): Promise<string | undefined>;
  /** The hosts that uploaded, the most recently seen first, with their session counts. */
  listHosts(): Promise<HostSummary[]>;

  /**
   * Removes events older than `before` (whole day partitions on PostgreSQL) and the final
   * sessions left without events.
   *
   * @throws {RangeError} on a store that cannot (SQLite).
   */
  retain(before: Date): Promise<RetainResult>;
  /** Closes the store (connections, files). */
  close(): Promise<void>;
}

/**
 * The store cannot be reached (its database is down, restarting, or refusing connections):
 * a failure of the moment, not of the request, so the API answers it 503 without internals.
 * `cause` holds the driver's error.
 */
export class StoreUnavailableError extends UnavailableError {
  /** Wraps `cause`, a connection-class failure of the store's database. */
  constructor(options: { cause: unknown }) {
    super("The collector's store is unavailable", options);
    this.name = "StoreUnavailableError";
  }
}

/** `postgres://` or `postgresql://`: a PostgreSQL store. */
export function isPostgresUrl(value: string): boolean {
  return /^postgres(ql)?:\/\//i.test(value);
}

/** A store's URL without its password (nor a `password=` parameter), for logs. */
export function redactUrl(url: string): string {
  return redactSecrets(url) ?? "postgres://(unparsable)";
}

/**
 * Parses a retention such as `30d`, `12h` or `2w` into milliseconds.
 *
 * @throws {RangeError} when it is not a positive whole number of hours, days or weeks.
 */
export function parseRetention(text: string): number {
  const match = /^([1-9][0-9]{0,4})([hdw])$/.exec(text.trim());
  if (match === null) {
    throw new RangeError(
      `Invalid retention "${text}": use a whole number of hours, days or weeks, such as "30d"`,
    );
  }
  const unit = { h: 3_600_000, d: 86_400_000, w: 7 * 86_400_000 }[match[2] as "h" | "d" | "w"];
  return Number(match[1]) * unit;
}
