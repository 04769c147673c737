/**
 * The uploader: drains the journal's outbox to a collector, in order, batch by batch, over the
 * sync protocol (docs/sync-protocol.md).
 *
 * - A batch holds at most 500 events or 1 MiB of JSON, built from the stored JSON strings, with
 *   the sessions its events name, other changed sessions, the host and the dropped count. It is
 *   gzipped and POSTed with the bearer key. Only a `200` deletes its outbox rows, so an event is
 *   sent at least once; the collector stores it once (the event id is the idempotency key).
 * - Failures follow the protocol's table: `401` stops (the fix is `sentry login`), `413` halves
 *   the batch, `429` and `503` wait for `Retry-After`, `400`, other `5xx`, network errors and
 *   timeouts back off exponentially with full jitter (1 s to 5 min). Nothing is dropped on a
 *   failure, except one event that the collector refuses as too large on its own (`413` for a
 *   batch of one), which is counted as dropped and reported.
 * - Several Sentry processes share one journal; the one holding the journal's lease uploads and
 *   trims, the others stand by and take over when it stops or dies.
 * - The outbox is capped (default 1,000,000 events): past the cap the oldest are dropped, the
 *   count grows and is uploaded, and a notice says so once per crossing.
 * - One batch is in flight at a time, and every journal call is a short synchronous query, so
 *   memory is bounded and the sensors and the journal's writes are never held up for long.
 * - All state (queue, lease, dropped count, last outcome) lives in the journal: a restarted or
 *   crashed Sentry resumes where the outbox stands.
 *
 * @module
 */

import { createUlid } from "../events/mod.ts";
import { DROPPED_KEY, type Journal, type SessionRecord } from "../journal/mod.ts";
import { isAlive as processIsAlive } from "../platform/mod.ts";
import { BACKOFF_BASE_MS, BACKOFF_MAX_MS, backoffDelay, parseRetryAfter } from "./backoff.ts";
import {
  BATCH_ENVELOPE_BYTES,
  encodeBatch,
  gzip,
  MAX_BATCH_BYTES,
  MAX_BATCH_EVENTS,
  type SyncHost,
  utf8Length,
} from "./batch.ts";
import { PROTOCOL_VERSION } from "./hello.ts";
import {
  DEFAULT_OUTBOX_MAX_EVENTS,
  DROPPED_SYNCED_KEY,
  readLease,
  readRecordedStatus,
  readSyncStatus,
  type RecordedStatus,
  type SyncFailure,
  type SyncStatus,
  type UploaderState,
  writeRecordedStatus,
} from "./sync_status.ts";

/** A request that gets no complete answer within this long is abandoned and retried: 30 s. */
export const DEFAULT_REQUEST_TIMEOUT_MS = 30_000;

/** How often an idle uploader looks at the outbox: 100 ms (a look costs well under 1 ms). */
export const DEFAULT_POLL_MS = 100;

/** How long the lease lasts without renewal: 60 s. A crashed holder on this host is seen at once. */
export const DEFAULT_LEASE_TTL_MS = 60_000;

/** How often the holder enforces the outbox cap: 10 s (a trim scans the queue). */
export const DEFAULT_TRIM_EVERY_MS = 10_000;

/** At most this many sessions that changed but no event of the batch names ride along. */
const OTHER_SESSIONS = 20;

/** Outbox rows read per query while a batch is built. */
const PAGE = 100;

/** A recorded status is written at most this often unless something important changed. */
const RECORD_EVERY_MS = 1000;

/** Something the operator must hear about, at once and once: print it. */
export interface SyncNotice {
  level: "warn" | "error";
  /**
   * `outbox_full`: the cap was crossed and the oldest events are being dropped;
   * `unauthorized`: the collector refused the key and the uploader stopped;
   * `event_refused`: the collector refused one event (too large, or invalid to it), which was
   *   dropped from the outbox and counted.
   */
  code: "outbox_full" | "unauthorized" | "event_refused";
  message: string;
}

/** Options for {@link createUploader}. */
export interface UploaderOptions {
  /** The collector's base URL, normalized (see `normalizeEndpoint`). */
  endpoint: string;
  apiKey: string;
  host: SyncHost;
  /** At most this many events per batch, 1 to 500; default 500. */
  batchEvents?: number;
  /** At most this many bytes of uncompressed JSON per batch, up to 1 MiB; default 1 MiB. */
  batchBytes?: number;
  /** The outbox cap, in events; default 1,000,000. */
  outboxMaxEvents?: number;
  /** Abandon a request (and retry it) after this long; default 30 s. */
  requestTimeoutMs?: number;
  /** Look at an idle outbox this often, and linger this long after a partial batch; 100 ms. */
  pollMs?: number;
  /** The back-off's first and largest ceilings; default 1 s and 5 min. */
  backoffBaseMs?: number;
  backoffMaxMs?: number;
  /** The lease's length; default 60 s. */
  leaseTtlMs?: number;
  /** Enforce the cap this often; default 10 s. */
  trimEveryMs?: number;
  /** The lease owner; default `host:pid:nonce`. Give the journal and the uploader one clock. */
  owner?: string;
  /** The host name in lease owners; defaults to the OS's. */
  hostname?: string;
  /** The wall clock, ms since the epoch; defaults to `Date.now`. */
  now?: () => number;
  /** A uniform number in [0, 1) for the jitter; defaults to `Math.random`. */
  random?: () => number;
  /** Waits `ms`, or less when `signal` aborts; never rejects. Defaults to a timer. */
  sleep?: (ms: number, signal: AbortSignal) => Promise<void>;
  /** Whether a pid on this host is alive, to take over a dead holder's lease at once. */
  isAlive?: (pid: number) => boolean;
  /** Called for what the operator must hear (the CLI prints it). */
  onNotice?: (notice: SyncNotice) => void;
}

/** What the uploader is doing, with the journal's view of the outbox. */
export interface UploaderStatus extends SyncStatus {
  state: UploaderState;
  /** Whether this uploader holds the lease. */
  holdsLease: boolean;
  endpoint: string;
  outboxMaxEvents: number;
  lastSuccessAt: string | null;
  lastError: SyncFailure | null;
  nextAttemptAt: string | null;
  /** Whether the outbox is past its cap since the last notice. */
  overCap: boolean;
}

/**
 * Whether the uploader's last attempt succeeded: no failure recorded, or a success since the
 * last one (the recorded error stays for `sentry sync status` after the uploads recover).
 */
export function lastAttemptSucceeded(
  status: Pick<UploaderStatus, "lastError" | "lastSuccessAt">,
): boolean {
  if (status.lastError === null) return true;
  return status.lastSuccessAt !== null && status.lastSuccessAt >= status.lastError.at;
}

/** Options for {@link Uploader.drainNow}. */
export interface DrainOptions {
  /** Give up after this long; default 60 s. */
  timeoutMs?: number;
  signal?: AbortSignal;
}

/** What {@link Uploader.drainNow} did. */
export interface DrainResult {
  /** Whether the outbox is empty and the collector has every session state and the count. */
  ok: boolean;
  /** Events the collector stored, duplicates it absorbed, and batches sent. */
  accepted: number;
  duplicates: number;
  batches: number;
  /** Events still in the outbox. */
  pending: number;
  /** Why it did not finish, or null. */
  reason: string | null;
}

/** An outbox uploader. Get one with {@link createUploader}. */
export interface Uploader {
  /**
   * Uploads in the background until `signal` aborts, {@link close} is called, or the collector
   * refuses the key. Resolves then; never rejects. Calling it again returns the same promise.
   */
  start(signal?: AbortSignal): Promise<void>;
  /**
   * Uploads until the outbox is empty (0 events, sessions and dropped count synced), retrying
   * transient failures, for at most `timeoutMs`. For `sentry sync now` and shutdown.
   */
  drainNow(options?: DrainOptions): Promise<DrainResult>;
  /** The state, with the outbox counted (a query as long as the outbox; call it on demand). */
  status(): UploaderStatus;
  /** Stops, waits for the batch in flight, and releases the lease. The journal stays open. */
  close(): Promise<void>;
}

type Step =
  | { kind: "idle" }
  | { kind: "sent"; accepted: number; duplicates: number; full: boolean }
  | { kind: "retry"; delayMs: number; failure: SyncFailure }
  | { kind: "standby"; holder: string | null }
  | { kind: "auth"; failure: SyncFailure }
  | { kind: "stopped" };

/** A batch being built: its events' JSON, sessions, and the outbox rows it covers. */
interface Draft {
  events: string[];
  eventIds: string[];
  /** The last outbox seq covered (events and rows whose event is gone), or 0. */
  lastSeq: number;
  sessions: { record: SessionRecord; rev: number }[];
  dropped: number;
  droppedSynced: number;
  /** Whether the batch stopped at a limit (more rows are waiting). */
  full: boolean;
  /** The events' JSON, in bytes. */
  bytes: number;
}

function check(name: string, value: number, min: number, max = Infinity): number {
  if (!Number.isFinite(value) || value < min || value > max) {
    const range = max === Infinity ? `at least ${min}` : `from ${min} to ${max}`;
    throw new RangeError(`Invalid ${name} ${value}: must be ${range}`);
  }
  return value;
}

function defaultSleep(ms: number, signal: AbortSignal): Promise<void> {
  return new Promise((resolve) => {
    if (signal.aborted) return resolve();
    const done = () => {
      clearTimeout(timer);
      signal.removeEventListener("abort", done);
      resolve();
    };
    const timer = setTimeout(done, ms);
    signal.addEventListener("abort", done, { once: true });
  });
}

function errorMessage(error: unknown): string {
  if (!(error instanceof Error)) return String(error);
  // fetch says only "fetch failed"; the reason (refused, reset) is in its cause.
  const cause = error.cause instanceof Error ? error.cause.message : null;
  const text = cause !== null && cause !== "" ? cause : error.message;
  // Drop the repeated URL: "error sending request for url (http://...): client error...".
  return text.replace(/^error sending request for url \([^)]*\): /, "");
}

/** The `error` and `field` of a collector's JSON error body. */
function errorDetail(text: string): string {
  try {
    const body = JSON.parse(text) as { error?: unknown; field?: unknown };
    const error = typeof body.error === "string" ? body.error : null;
    const field = typeof body.field === "string" ? ` (field "${body.field}")` : "";
    if (error !== null) return `${error}${field}`;
  } catch {
    // Not JSON: show the start of it.
  }
  const trimmed = text.trim().slice(0, 200);
  return trimmed === "" ? "no detail" : trimmed;
}

/** The id of the event a 400's `field` names (`events[3].kind`), or null. */
function refusedEvent(text: string, draft: Draft): string | null {
  try {
    const field = (JSON.parse(text) as { field?: unknown }).field;
    const match = typeof field === "string" ? /^events\[(\d+)\]/.exec(field) : null;
    return match === null ? null : draft.eventIds[Number(match[1])] ?? null;
  } catch {
    return null;
  }
}

const encoder = new TextEncoder();

class OutboxUploader implements Uploader {
  readonly #journal: Journal;
  readonly #endpoint: string;
  readonly #apiKey: string;
  readonly #host: SyncHost;
  readonly #maxEvents: number;
  readonly #timeoutMs: number;
  readonly #pollMs: number;
  readonly #backoff: { baseMs: number; maxMs: number; random: () => number };
  readonly #leaseTtl: number;
  readonly #trimEvery: number;
  readonly #owner: string;
  readonly #hostname: string;
  readonly #now: () => number;
  readonly #sleep: (ms: number, signal: AbortSignal) => Promise<void>;
  readonly #isAlive: (pid: number) => boolean;
  readonly #onNotice: (notice: SyncNotice) => void;
  readonly #ulid: () => string;
  readonly #closer = new AbortController();
  readonly #configured: { events: number; bytes: number };
  /** Limits in force: the configured ones, halved by each 413. */
  #limitEvents: number;
  #limitBytes: number;
  #running: Promise<void> | null = null;
  /** Serializes steps: one batch in flight. */
  #chain: Promise<unknown> = Promise.resolve();
  #state: UploaderState = "idle";
  #leaseUntil = 0;
  #failures = 0;
  #lastTrim = -Infinity;
  #overCap = false;
  #uploadedSinceDrop = false;
  #authNoticed = false;
  #record: RecordedStatus;
  #recordedAt = -Infinity;

  constructor(journal: Journal, options: UploaderOptions) {
    this.#journal = journal;
    this.#endpoint = options.endpoint.replace(/\/+$/, "");
    this.#apiKey = options.apiKey;
    this.#host = options.host;
    this.#limitEvents = check("batchEvents", options.batchEvents ?? MAX_BATCH_EVENTS, 1, 500);
    this.#limitBytes = check(
      "batchBytes",
      options.batchBytes ?? MAX_BATCH_BYTES,
      1,
      MAX_BATCH_BYTES,
    );
    this.#configured = { events: this.#limitEvents, bytes: this.#limitBytes };
    this.#maxEvents = check(
      "outboxMaxEvents",
      options.outboxMaxEvents ?? DEFAULT_OUTBOX_MAX_EVENTS,
      1,
    );
    this.#timeoutMs = check(
      "requestTimeoutMs",
      options.requestTimeoutMs ?? DEFAULT_REQUEST_TIMEOUT_MS,
      1,
    );
    this.#pollMs = check("pollMs", options.pollMs ?? DEFAULT_POLL_MS, 1);
    this.#backoff = {
      baseMs: check("backoffBaseMs", options.backoffBaseMs ?? BACKOFF_BASE_MS, 0),
      maxMs: check("backoffMaxMs", options.backoffMaxMs ?? BACKOFF_MAX_MS, 0),
      random: options.random ?? Math.random,
    };
    this.#leaseTtl = check("leaseTtlMs", options.leaseTtlMs ?? DEFAULT_LEASE_TTL_MS, 10);
    this.#trimEvery = check("trimEveryMs", options.trimEveryMs ?? DEFAULT_TRIM_EVERY_MS, 0);
    this.#now = options.now ?? Date.now;
    this.#hostname = options.hostname ?? Deno.hostname();
    this.#ulid = createUlid({ now: this.#now });
    this.#owner = options.owner ?? `${this.#hostname}:${Deno.pid}:${this.#ulid().slice(-8)}`;
    this.#sleep = options.sleep ?? defaultSleep;
    this.#isAlive = options.isAlive ?? processIsAlive;
    this.#onNotice = options.onNotice ?? (() => {});
    const previous = readRecordedStatus(journal);
    this.#record = {
      state: "idle",
      owner: this.#owner,
      endpoint: this.#endpoint,
      outboxMaxEvents: this.#maxEvents,
      lastSuccessAt: previous?.lastSuccessAt ?? null,
      lastError: previous?.lastError ?? null,
      nextAttemptAt: null,
      accepted: previous?.accepted ?? 0,
      duplicates: previous?.duplicates ?? 0,
      updatedAt: this.#iso(),
    };
  }

  start(signal?: AbortSignal): Promise<void> {
    if (this.#running !== null) return this.#running;
    const stop = signal === undefined
      ? this.#closer.signal
      : AbortSignal.any([this.#closer.signal, signal]);
    this.#running = this.#loop(stop);
    return this.#running;
  }

  async drainNow(options: DrainOptions = {}): Promise<DrainResult> {
    const timeoutMs = check("timeoutMs", options.timeoutMs ?? 60_000, 0);
    const stop = options.signal === undefined
      ? this.#closer.signal
      : AbortSignal.any([this.#closer.signal, options.signal]);
    const deadline = this.#now() + timeoutMs;
    const result: DrainResult = {
      ok: false,
      accepted: 0,
      duplicates: 0,
      batches: 0,
      pending: 0,
      reason: null,
    };
    const finish = (ok: boolean, reason: string | null): DrainResult => {
      result.ok = ok;
      result.reason = reason;
      result.pending = this.#journal.closed ? 0 : this.#journal.outboxStats().pending;
      return result;
    };
    let reason: string | null = null;
    while (true) {
      if (stop.aborted) return finish(false, "interrupted");
      const step = await this.#locked(() => this.#step(stop));
      let waitMs = 0;
      switch (step.kind) {
        case "sent":
          result.accepted += step.accepted;
          result.duplicates += step.duplicates;
          result.batches++;
          reason = null;
          continue;
        case "idle":
          this.#setState("idle");
          return finish(true, null);
        case "auth":
          return finish(false, step.failure.message);
        case "stopped":
          return finish(false, "interrupted");
        case "retry":
          reason = step.failure.message;
          waitMs = step.delayMs;
          break;
        case "standby": {
          // Another process uploads; done when it has emptied the outbox.
          if (this.#journal.outboxPeek(1).length === 0) return finish(true, null);
          const pid = step.holder === null ? null : readLease(this.#journal, this.#now())?.pid;
          reason = `another Sentry process${
            pid === null || pid === undefined ? "" : ` (pid ${pid})`
          } holds the upload lease and has not emptied the outbox`;
          waitMs = this.#pollMs;
          break;
        }
      }
      const left = deadline - this.#now();
      if (left <= 0 || waitMs >= left) {
        return finish(false, `not finished within ${timeoutMs} ms: ${reason ?? "no detail"}`);
      }
      await this.#wait(waitMs, stop);
    }
  }

  status(): UploaderStatus {
    const now = this.#now();
    return {
      ...readSyncStatus(this.#journal, now),
      state: this.#state,
      holdsLease: this.#leaseUntil > now,
      endpoint: this.#endpoint,
      outboxMaxEvents: this.#maxEvents,
      lastSuccessAt: this.#record.lastSuccessAt,
      lastError: this.#record.lastError,
      nextAttemptAt: this.#record.nextAttemptAt,
      overCap: this.#overCap,
    };
  }

  async close(): Promise<void> {
    this.#closer.abort();
    await this.#running;
    await this.#chain.catch(() => {});
    if (this.#journal.closed) return;
    if (this.#leaseUntil > 0) {
      this.#setState("stopped", true);
      this.#journal.releaseLease(this.#owner);
      this.#leaseUntil = 0;
    }
    this.#state = "stopped";
  }

  // --- The loop ------------------------------------------------------------------------------

  async #loop(stop: AbortSignal): Promise<void> {
    while (!stop.aborted) {
      let step: Step;
      try {
        step = await this.#locked(() => this.#step(stop));
      } catch (error) {
        // A journal error (busy beyond its timeout, a full disk): back off like any failure.
        if (this.#journal.closed) break;
        step = this.#failed(null, `Sync failed: ${errorMessage(error)}`);
      }
      if (step.kind === "auth" || step.kind === "stopped") break;
      let waitMs: number;
      switch (step.kind) {
        case "sent":
          if (step.full) continue;
          waitMs = this.#pollMs;
          break;
        case "idle":
          this.#setState("idle");
          waitMs = this.#pollMs;
          break;
        case "retry":
          waitMs = step.delayMs;
          break;
        case "standby":
          waitMs = Math.min(2000, this.#leaseTtl / 4);
          break;
      }
      await this.#wait(waitMs, stop);
    }
    if (!this.#journal.closed && this.#leaseUntil > 0 && this.#state === "unauthorized") {
      // Another process may hold a newer key; let it try.
      this.#journal.releaseLease(this.#owner);
      this.#leaseUntil = 0;
    }
  }

  /** Waits, renewing the lease and enforcing the cap meanwhile if this uploader holds it. */
  async #wait(ms: number, stop: AbortSignal): Promise<void> {
    if (ms <= 0) return;
    const end = this.#now() + ms;
    const chunk = Math.max(1, Math.min(this.#leaseTtl / 3, this.#trimEvery || Infinity));
    while (!stop.aborted) {
      const left = end - this.#now();
      if (left <= 0) return;
      await this.#sleep(Math.min(left, chunk), stop);
      if (stop.aborted || this.#journal.closed) return;
      if (this.#leaseUntil > 0 && end - this.#now() > 0) {
        try {
          if (this.#holdLease()) this.#maybeTrim(false);
        } catch {
          // The journal is busy; the next step retries.
        }
      }
    }
  }

  #locked<T>(body: () => Promise<T>): Promise<T> {
    const run = this.#chain.then(body, body);
    this.#chain = run.catch(() => {});
    return run;
  }

  // --- One attempt ---------------------------------------------------------------------------

  async #step(stop: AbortSignal): Promise<Step> {
    if (stop.aborted || this.#journal.closed) return { kind: "stopped" };
    if (this.#state === "unauthorized") {
      return { kind: "auth", failure: this.#record.lastError ?? this.#failure(401, "refused") };
    }
    if (!this.#holdLease()) {
      this.#setState("standby");
      return { kind: "standby", holder: readLease(this.#journal, this.#now())?.owner ?? null };
    }
    this.#maybeTrim(false);
    const draft = this.#draft();
    if (draft.events.length === 0 && draft.sessions.length === 0) {
      if (draft.dropped === draft.droppedSynced) {
        // Rows whose events are gone (their session was deleted) are simply acknowledged.
        if (draft.lastSeq > 0) this.#journal.outboxAck(draft.lastSeq);
        return draft.full ? { kind: "sent", accepted: 0, duplicates: 0, full: true } : {
          kind: "idle",
        };
      }
    }
    return await this.#send(draft, stop);
  }

  /** Reads the next batch from the outbox, within the limits in force. */
  #draft(): Draft {
    const journal = this.#journal;
    const budget = Math.max(1, this.#limitBytes - BATCH_ENVELOPE_BYTES);
    const events: string[] = [];
    const eventIds: string[] = [];
    const named = new Set<string>();
    let bytes = 0;
    let lastSeq = 0;
    let full = false;
    fill: while (events.length < this.#limitEvents) {
      const want = Math.min(PAGE, this.#limitEvents - events.length);
      const page = journal.outboxPeek(want, lastSeq);
      for (const item of page) {
        if (item.json === null || item.session === null) {
          lastSeq = item.seq;
          continue;
        }
        const size = utf8Length(item.json) + 1;
        // The first event always goes, even alone beyond the budget: the collector decides.
        if (events.length > 0 && bytes + size > budget) {
          full = true;
          break fill;
        }
        events.push(item.json);
        eventIds.push(item.eventId);
        named.add(item.session);
        bytes += size;
        lastSeq = item.seq;
      }
      if (page.length < want) break;
      if (events.length >= this.#limitEvents) full = true;
    }
    const sessions = [];
    for (const s of journal.sessionsToSync(named, OTHER_SESSIONS)) {
      const size = utf8Length(JSON.stringify(s.record)) + 1;
      // Named sessions must go (the collector needs them); others only while they fit.
      if (!named.has(s.record.id) && bytes + size > budget) continue;
      sessions.push(s);
      bytes += size;
    }
    return {
      events,
      eventIds,
      lastSeq,
      sessions,
      dropped: Number(journal.syncState(DROPPED_KEY) ?? 0),
      droppedSynced: Number(journal.syncState(DROPPED_SYNCED_KEY) ?? 0),
      full,
      bytes,
    };
  }

  async #send(draft: Draft, stop: AbortSignal): Promise<Step> {
    const body = encodeBatch({
      batch: this.#ulid(),
      host: this.#host,
      sentAt: this.#iso(),
      sessions: draft.sessions.map((s) => s.record),
      events: draft.events,
      dropped: draft.dropped,
    });
    const compressed = await gzip(encoder.encode(body));
    this.#setState("uploading");
    const timeout = new AbortController();
    const timer = setTimeout(() => timeout.abort(), this.#timeoutMs);
    const signal = AbortSignal.any([stop, timeout.signal]);
    let response: Response;
    let text: string;
    try {
      response = await fetch(`${this.#endpoint}/v1/sync/batches`, {
        method: "POST",
        headers: {
          authorization: `Bearer ${this.#apiKey}`,
          "content-type": "application/json",
          "content-encoding": "gzip",
          "sentry-protocol": String(PROTOCOL_VERSION),
        },
        body: compressed,
        signal,
      });
      text = await response.text();
    } catch (error) {
      if (stop.aborted) return { kind: "stopped" };
      const why = timeout.signal.aborted
        ? `no answer within ${this.#timeoutMs} ms`
        : errorMessage(error);
      return this.#failed(null, `Cannot reach the collector at "${this.#endpoint}": ${why}`);
    } finally {
      clearTimeout(timer);
    }
    if (this.#journal.closed) return { kind: "stopped" };
    const status = response.status;
    if (status === 200) return this.#succeeded(draft, text);
    const detail = errorDetail(text);
    if (status === 401 || status === 403) {
      const failure = this.#failure(
        status,
        `The collector at "${this.#endpoint}" refused the API key (${status}): ${detail}; ` +
          'sync stopped: run "sentry login --api-key KEY"',
      );
      this.#record.lastError = failure;
      this.#record.nextAttemptAt = null;
      this.#setState("unauthorized", true);
      if (!this.#authNoticed) {
        this.#authNoticed = true;
        this.#onNotice({
          level: "error",
          code: "unauthorized",
          message: failure.message,
        });
      }
      return { kind: "auth", failure };
    }
    if (status === 413) return this.#tooLarge(draft, detail);
    if (status === 429 || status === 503) {
      const wait = parseRetryAfter(response.headers.get("retry-after"), this.#now());
      const message = `The collector at "${this.#endpoint}" is busy (${status}): ${detail}`;
      if (wait !== null) return this.#retryAt(wait, this.#failure(status, message));
      return this.#failed(status, message);
    }
    if (status === 400) {
      const refused = refusedEvent(text, draft);
      if (refused !== null) return this.#refused(refused, detail);
      return this.#failed(
        status,
        `The collector at "${this.#endpoint}" refused a batch as malformed (400): ${detail}; ` +
          "its events stay in the outbox",
      );
    }
    return this.#failed(
      status,
      `The collector at "${this.#endpoint}" answered ${status}: ${detail}`,
    );
  }

  #succeeded(draft: Draft, text: string): Step {
    let accepted = 0;
    let duplicates = 0;
    try {
      const body = JSON.parse(text) as { accepted?: unknown; duplicates?: unknown };
      if (typeof body.accepted === "number") accepted = body.accepted;
      if (typeof body.duplicates === "number") duplicates = body.duplicates;
    } catch {
      // A 200 means stored, whatever its body says.
    }
    const journal = this.#journal;
    if (draft.lastSeq > 0) journal.outboxAck(draft.lastSeq);
    if (draft.sessions.length > 0) {
      journal.markSessionsSynced(draft.sessions.map((s) => ({ id: s.record.id, rev: s.rev })));
    }
    if (draft.dropped !== draft.droppedSynced) {
      journal.setSyncState(DROPPED_SYNCED_KEY, String(draft.dropped));
    }
    this.#failures = 0;
    if (draft.events.length > 0) this.#uploadedSinceDrop = true;
    const record = this.#record;
    record.accepted += accepted;
    record.duplicates += duplicates;
    record.lastSuccessAt = this.#iso();
    record.nextAttemptAt = null;
    this.#setState(draft.full ? "uploading" : "idle");
    return { kind: "sent", accepted, duplicates, full: draft.full };
  }

  /** A 413: halve the batch; a single event refused is dropped, counted and reported. */
  #tooLarge(draft: Draft, detail: string): Step {
    const message = `The collector at "${this.#endpoint}" refused a batch of ` +
      `${draft.events.length} events as too large (413): ${detail}`;
    if (draft.events.length > 1) {
      this.#limitEvents = Math.max(1, Math.floor(draft.events.length / 2));
      const budget = Math.min(this.#limitBytes - BATCH_ENVELOPE_BYTES, draft.bytes);
      this.#limitBytes = BATCH_ENVELOPE_BYTES + Math.max(1, Math.floor(budget / 2));
      const failure = this.#failure(413, `${message}; halving the batch`);
      this.#record.lastError = failure;
      this.#record.nextAttemptAt = null;
      this.#setState("uploading", true);
      return { kind: "retry", delayMs: 0, failure };
    }
    if (draft.events.length === 0) return this.#failed(413, message);
    const id = draft.eventIds[0] ?? "?";
    const journal = this.#journal;
    const dropped = Number(journal.syncState(DROPPED_KEY) ?? 0) + 1;
    journal.setSyncState(DROPPED_KEY, String(dropped));
    journal.outboxAck(draft.lastSeq);
    // The batches were cut down for this event's sake: the next ones may be whole again.
    this.#limitEvents = this.#configured.events;
    this.#limitBytes = this.#configured.bytes;
    const failure = this.#failure(
      413,
      `The collector at "${this.#endpoint}" refused event "${id}" on its own as too large ` +
        `(413): ${detail}; it was dropped and counted (${dropped} dropped in all)`,
    );
    this.#record.lastError = failure;
    this.#setState("uploading", true);
    this.#onNotice({ level: "warn", code: "event_refused", message: failure.message });
    return { kind: "retry", delayMs: 0, failure };
  }

  /**
   * A 400 naming one event (`events[i]...`): the collector will never take it (a newer kind
   * than it knows, say), and it must not hold back every later event. It leaves the outbox,
   * stays in this journal, and counts as dropped (the count reaches the collector); the rest of
   * the batch is sent again at once.
   */
  #refused(id: string, detail: string): Step {
    const journal = this.#journal;
    journal.outboxDiscard(id);
    const dropped = Number(journal.syncState(DROPPED_KEY) ?? 0);
    const failure = this.#failure(
      400,
      `The collector at "${this.#endpoint}" refused event "${id}" (400): ${detail}; it stays in ` +
        `the local journal but will not be uploaded, and counts as dropped (${dropped} in all)`,
    );
    this.#record.lastError = failure;
    this.#setState("uploading", true);
    this.#onNotice({ level: "warn", code: "event_refused", message: failure.message });
    return { kind: "retry", delayMs: 0, failure };
  }

  /** A transient failure: back off exponentially with full jitter. */
  #failed(status: number | null, message: string): Step {
    this.#failures++;
    const delayMs = backoffDelay(this.#failures, this.#backoff);
    return this.#retryAt(delayMs, this.#failure(status, message));
  }

  #retryAt(delayMs: number, failure: SyncFailure): Step {
    this.#record.lastError = failure;
    this.#record.nextAttemptAt = new Date(this.#now() + delayMs).toISOString();
    this.#setState("backoff", true);
    return { kind: "retry", delayMs, failure };
  }

  #failure(status: number | null, message: string): SyncFailure {
    return { at: this.#iso(), message, status };
  }

  // --- Lease, cap, status --------------------------------------------------------------------

  /** Takes or renews the lease when half of it is used; takes a dead local holder's at once. */
  #holdLease(): boolean {
    const now = this.#now();
    if (this.#leaseUntil - now > this.#leaseTtl / 2) return true;
    const journal = this.#journal;
    let held = journal.acquireLease(this.#owner, this.#leaseTtl);
    if (!held) {
      const lease = readLease(journal, now);
      if (
        lease !== null && lease.host === this.#hostname && lease.pid !== null &&
        !this.#isAlive(lease.pid)
      ) {
        journal.releaseLease(lease.owner);
        held = journal.acquireLease(this.#owner, this.#leaseTtl);
      }
    }
    this.#leaseUntil = held ? now + this.#leaseTtl : 0;
    return held;
  }

  /** Enforces the cap every `trimEveryMs`; says so once each time the outbox crosses it. */
  #maybeTrim(force: boolean): void {
    const now = this.#now();
    if (!force && now - this.#lastTrim < this.#trimEvery) return;
    this.#lastTrim = now;
    const dropped = this.#journal.outboxTrim(this.#maxEvents);
    if (dropped === 0) {
      // Below the cap again thanks to uploads: the next crossing is news again.
      if (this.#overCap && this.#uploadedSinceDrop) this.#overCap = false;
      return;
    }
    this.#uploadedSinceDrop = false;
    if (this.#overCap) return;
    this.#overCap = true;
    const total = Number(this.#journal.syncState(DROPPED_KEY) ?? 0);
    const since = this.#record.lastSuccessAt === null
      ? "no batch has reached it yet"
      : `its last batch arrived at ${this.#record.lastSuccessAt}`;
    this.#onNotice({
      level: "warn",
      code: "outbox_full",
      message: `Sync outbox is full at its cap of ${this.#maxEvents} events: dropped the ` +
        `${dropped} oldest and keeps the newest (${total} dropped in all, reported to the ` +
        `collector); the collector at "${this.#endpoint}" is not keeping up (${since}): ` +
        `see "sentry sync status"`,
    });
  }

  /** Sets the state and records it in the journal (at once when `important`, else throttled). */
  #setState(state: UploaderState, important = false): void {
    const changed = state !== this.#state;
    this.#state = state;
    if (this.#leaseUntil <= 0 && state !== "stopped") return; // only the holder records
    const now = this.#now();
    if (!changed && !important && now - this.#recordedAt < RECORD_EVERY_MS) return;
    if (this.#journal.closed) return;
    this.#record.state = state;
    this.#record.updatedAt = this.#iso();
    this.#recordedAt = now;
    writeRecordedStatus(this.#journal, this.#record);
  }

  #iso(): string {
    return new Date(this.#now()).toISOString();
  }
}

/**
 * Creates an uploader of `journal`'s outbox (open it with `outbox: true` so that events are
 * queued). It does nothing until {@link Uploader.start} or {@link Uploader.drainNow}.
 *
 * @throws {RangeError} when an option is out of range.
 */
export function createUploader(journal: Journal, options: UploaderOptions): Uploader {
  return new OutboxUploader(journal, options);
}
