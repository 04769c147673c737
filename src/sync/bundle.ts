/**
 * Offline bundles: how an air-gapped host's journal reaches a collector on a USB stick.
 * `sentry export` writes one, `sentry import` checks and stores one (docs/sync-protocol.md,
 * "Offline bundles").
 *
 * A bundle is gzip-compressed JSON Lines: a header, the sessions, the events in id order and a
 * trailer. Every line after the header carries `prev`, the hash chain up to the line before it,
 * and the trailer carries the chain's final `head` and the counts. So any edit, insertion,
 * deletion, reordering or truncation is detected, and the reader can say at which line. The
 * chain is tamper-evident, not proof of origin: anyone can recompute it. With a shared key
 * (`signKey`), the trailer also carries an HMAC-SHA256 of the head, which only holders of the
 * key can make.
 *
 * Both directions stream: {@link exportBundle} pages through the journal, and
 * {@link readBundle} holds one line at a time (plus the set of session ids).
 *
 * @module
 */

import { Buffer } from "node:buffer";
import { createHash, createHmac, timingSafeEqual } from "node:crypto";
import { z } from "zod";
import { AgentEvent } from "../events/mod.ts";
import {
  type EventFilter,
  type IngestBatch,
  type IngestResult,
  type Journal,
  SessionRecord,
} from "../journal/mod.ts";
import { VERSION } from "../version.ts";
import { LineTooLongError, splitLines } from "./_lines.ts";

/** The header's `format`. */
export const BUNDLE_FORMAT = "sentry-bundle";

/** The format version this Sentry writes and reads. */
export const BUNDLE_VERSION = 1;

/** The header's `mac` when the bundle is signed: HMAC-SHA256 of the chain's head. */
export const BUNDLE_MAC = "hmac-sha256";

/** The longest line a reader accepts, so that memory stays bounded whatever the file. */
export const MAX_LINE_BYTES = 16 * 1024 * 1024;

/** The shortest signing key accepted, in bytes (256 bits). */
export const MIN_SIGN_KEY_BYTES = 32;

/** Events per ingest transaction on import, as in a sync batch. */
export const IMPORT_BATCH = 500;

const Ulid = z.string().regex(/^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$/, "must be a ULID");
const Hex = z.string().regex(/^[0-9a-f]{64}$/, "must be 64 lowercase hex digits");

/** Line 1 of a bundle. Unknown fields are ignored, as within any format version. */
export const BundleHeader = z.object({
  type: z.literal("header"),
  format: z.literal(BUNDLE_FORMAT),
  version: z.literal(BUNDLE_VERSION),
  /** When the bundle was written, ISO 8601. */
  created_at: z.iso.datetime({ offset: true }),
  /** The exporting host: its sync id (`host-id`) and its hostname. */
  host: z.object({ id: Ulid, name: z.string().max(255) }).loose(),
  /** The version of the Sentry that wrote it. */
  sentry: z.string(),
  /** What was asked for: ISO times and a session id, null when not given. */
  filter: z.object({
    since: z.string().nullable(),
    until: z.string().nullable(),
    session: z.string().nullable(),
  }).loose(),
  /** {@link BUNDLE_MAC} when the trailer carries a signature, else null (or absent). */
  mac: z.literal(BUNDLE_MAC).nullable().optional(),
}).loose();

/** Line 1 of a bundle. */
export type BundleHeader = z.infer<typeof BundleHeader>;

/** The last line of a bundle. */
export const BundleTrailer = z.object({
  type: z.literal("trailer"),
  events: z.number().int().nonnegative(),
  sessions: z.number().int().nonnegative(),
  /** The hash chain after the last line before the trailer, in hex. */
  head: Hex,
  /** HMAC-SHA256(key, head as 32 bytes), in hex, when the bundle is signed. */
  mac: Hex.nullable().optional(),
}).loose();

/** The last line of a bundle. */
export type BundleTrailer = z.infer<typeof BundleTrailer>;

const SessionLine = z.object({ type: z.literal("session"), prev: Hex, session: SessionRecord });
const EventLine = z.object({ type: z.literal("event"), prev: Hex, event: AgentEvent });

/**
 * What went wrong with a bundle, for callers that react differently: not gzip or corrupt gzip
 * data; a malformed or misplaced line; a newer format version; a broken hash chain; trailer
 * counts that do not match; a file cut short; a missing or wrong signature; or (when storing) a
 * file that no longer matches what was verified.
 */
export type BundleProblem =
  | "gzip"
  | "format"
  | "version"
  | "chain"
  | "count"
  | "truncated"
  | "signature"
  | "changed";

/** A bundle that cannot be accepted: which line, what kind of problem, and a detail. */
export class BundleError extends Error {
  /** The 1-based line at fault, or the last line read for problems of the whole file. */
  readonly line: number;
  /** The kind of problem. */
  readonly problem: BundleProblem;
  /** The message without its prefix, to put after a caller's own (`...: <detail>`). */
  readonly detail: string;

  /** Builds the error. */
  constructor(problem: BundleProblem, line: number, detail: string) {
    super(`${problem === "version" ? "Unsupported" : "Invalid"} bundle: ${detail}`);
    this.name = "BundleError";
    this.problem = problem;
    this.line = line;
    this.detail = detail;
  }
}

/** Whether and how a bundle's signature was checked. */
export type SignatureStatus = "verified" | "unchecked" | "none";

/** One verified line of a bundle, as {@link readBundle} yields it. */
export type BundleItem =
  | { type: "header"; line: number; header: BundleHeader; head: string }
  | { type: "session"; line: number; session: SessionRecord; head: string }
  | { type: "event"; line: number; event: AgentEvent; head: string }
  | { type: "trailer"; line: number; trailer: BundleTrailer; signature: SignatureStatus };

/** Options for {@link readBundle} and {@link verifyBundle}. */
export interface ReadBundleOptions {
  /**
   * The shared signing key. When given, the bundle must be signed with it. When not, a
   * signature is not checked (the status says `unchecked`).
   */
  signKey?: Uint8Array;
}

/** SHA-256 of the parts in a row. One `update` of a joined buffer: each call costs ~10 µs. */
function sha256(...parts: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const data = parts.length === 1 ? parts[0] : Buffer.concat(parts);
  return new Uint8Array(createHash("sha256").update(data ?? new Uint8Array(0)).digest());
}

function toHex(bytes: Uint8Array): string {
  return Buffer.from(bytes.buffer, bytes.byteOffset, bytes.byteLength).toString("hex");
}

function mac(key: Uint8Array, head: Uint8Array): string {
  return createHmac("sha256", key).update(head).digest("hex");
}

const encoder = new TextEncoder();

/**
 * Turns records into bundle lines and keeps the hash chain: the header, then any sessions and
 * events, then the trailer. {@link exportBundle} uses it; tests use it to make bundles of any
 * content with a valid chain. Each method returns the line's bytes with its `\n`.
 */
export class BundleEncoder {
  readonly #signKey: Uint8Array | undefined;
  #head: Uint8Array<ArrayBuffer> | null = null;
  #sessions = 0;
  #events = 0;

  /** An encoder that signs the trailer when `signKey` is given. */
  constructor(options: { signKey?: Uint8Array | undefined } = {}) {
    this.#signKey = options.signKey;
  }

  /** The chain so far, in hex (empty before the header). */
  get head(): string {
    return this.#head === null ? "" : toHex(this.#head);
  }

  /** Sessions and events encoded so far. */
  get counts(): { sessions: number; events: number } {
    return { sessions: this.#sessions, events: this.#events };
  }

  /** Line 1: starts the chain. */
  header(
    fields: Omit<BundleHeader, "type" | "format" | "version" | "mac">,
  ): Uint8Array<ArrayBuffer> {
    const line = JSON.stringify({
      type: "header",
      format: BUNDLE_FORMAT,
      version: BUNDLE_VERSION,
      ...fields,
      mac: this.#signKey === undefined ? null : BUNDLE_MAC,
    });
    const bytes = encoder.encode(line);
    this.#head = sha256(bytes);
    return withNewline(bytes);
  }

  /** A session line. */
  session(session: SessionRecord): Uint8Array<ArrayBuffer> {
    this.#sessions++;
    return this.#chain({ type: "session", prev: this.#prevHex(), session });
  }

  /** An event line; events must come in increasing id order. */
  event(event: AgentEvent): Uint8Array<ArrayBuffer> {
    this.#events++;
    return this.#chain({ type: "event", prev: this.#prevHex(), event });
  }

  /** The trailer: the counts, the head and, with a key, the signature. */
  trailer(): Uint8Array<ArrayBuffer> {
    const head = this.#requireHead();
    const trailer: BundleTrailer = {
      type: "trailer",
      events: this.#events,
      sessions: this.#sessions,
      head: toHex(head),
    };
    if (this.#signKey !== undefined) trailer.mac = mac(this.#signKey, head);
    return withNewline(encoder.encode(JSON.stringify(trailer)));
  }

  #prevHex(): string {
    return toHex(this.#requireHead());
  }

  #requireHead(): Uint8Array<ArrayBuffer> {
    if (this.#head === null) throw new TypeError("Cannot encode a bundle line before the header");
    return this.#head;
  }

  #chain(value: unknown): Uint8Array<ArrayBuffer> {
    const bytes = encoder.encode(JSON.stringify(value));
    this.#head = sha256(this.#requireHead(), bytes);
    return withNewline(bytes);
  }
}

function withNewline(bytes: Uint8Array): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  out[bytes.length] = 0x0a;
  return out;
}

/** Formats a zod path as `event.detail.path` or `session.command[2]`. */
function fieldPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? String(part) : `.${String(part)}`;
  }
  return out;
}

function invalid(line: number, error: z.ZodError): BundleError {
  const issue = error.issues[0];
  const field = fieldPath(issue?.path ?? []);
  return new BundleError(
    "format",
    line,
    `line ${line} has an invalid ${field === "" ? "value" : `"${field}"`}: ${
      issue?.message ?? "invalid"
    }`,
  );
}

const decoder = new TextDecoder("utf-8", { fatal: true });

function parseObject(line: number, bytes: Uint8Array): Record<string, unknown> {
  let value: unknown;
  try {
    value = JSON.parse(decoder.decode(bytes));
  } catch {
    throw new BundleError("format", line, `line ${line} is not JSON`);
  }
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new BundleError("format", line, `line ${line} is not a JSON object`);
  }
  return value as Record<string, unknown>;
}

function checkHeader(value: Record<string, unknown>): BundleHeader {
  if (value["type"] !== "header" || value["format"] !== BUNDLE_FORMAT) {
    throw new BundleError(
      "format",
      1,
      `line 1 is not a Sentry bundle header (it needs "format": "${BUNDLE_FORMAT}")`,
    );
  }
  const version = value["version"];
  if (typeof version === "number" && Number.isInteger(version) && version > BUNDLE_VERSION) {
    throw new BundleError(
      "version",
      1,
      `it is format version ${version}, written by a newer Sentry; this Sentry (${VERSION}) ` +
        `reads version ${BUNDLE_VERSION}`,
    );
  }
  const parsed = BundleHeader.safeParse(value);
  if (!parsed.success) throw invalid(1, parsed.error);
  return parsed.data;
}

function chainBreak(line: number, what = ""): BundleError {
  return new BundleError(
    "chain",
    line,
    `the hash chain breaks at line ${line}${what}: line ${line - 1} or line ${line} was ` +
      "changed, or lines were added, removed or moved there",
  );
}

/**
 * Reads a gzip-compressed bundle and yields its lines as they are verified: the header, each
 * session, each event and, last, the trailer (after the head, the counts and any signature are
 * checked). A caller that acts on items before the trailer must be ready to undo or accept
 * them: {@link importBundle} verifies the whole bundle first, then reads it again.
 *
 * @throws {BundleError} at the first line that is malformed, out of place or breaks the chain,
 *   and when the gzip data is corrupt, the file is truncated, or the signature is wrong.
 */
export async function* readBundle(
  input: ReadableStream<Uint8Array<ArrayBuffer>>,
  options: ReadBundleOptions = {},
): AsyncGenerator<BundleItem> {
  let head: Uint8Array | null = null;
  let header: BundleHeader | null = null;
  let stage: "sessions" | "events" | "done" = "sessions";
  const sessionIds = new Set<string>();
  let events = 0;
  let lastEvent = "";
  let lastLine = 0;
  try {
    const lines = splitLines(input.pipeThrough(new DecompressionStream("gzip")), MAX_LINE_BYTES);
    for await (const { number: n, bytes, terminated } of lines) {
      lastLine = n;
      if (!terminated) {
        throw new BundleError("truncated", n, `line ${n} is cut off: the bundle is truncated`);
      }
      if (stage === "done") throw new BundleError("format", n, `line ${n} follows the trailer`);
      const value = parseObject(n, bytes);
      if (head === null || header === null) {
        header = checkHeader(value);
        head = sha256(bytes);
        yield { type: "header", line: n, header, head: toHex(head) };
        continue;
      }
      const type = value["type"];
      if (type === "trailer") {
        const parsed = BundleTrailer.safeParse(value);
        if (!parsed.success) throw invalid(n, parsed.error);
        const trailer = parsed.data;
        if (trailer.head !== toHex(head)) throw chainBreak(n, " (the trailer)");
        if (trailer.events !== events || trailer.sessions !== sessionIds.size) {
          throw new BundleError(
            "count",
            n,
            `the trailer (line ${n}) counts ${trailer.events} events and ${trailer.sessions} ` +
              `sessions, but the bundle holds ${events} and ${sessionIds.size}`,
          );
        }
        const signature = checkSignature(n, header, trailer, head, options.signKey);
        stage = "done";
        yield { type: "trailer", line: n, trailer, signature };
        continue;
      }
      if (type !== "session" && type !== "event") {
        throw new BundleError(
          "format",
          n,
          `line ${n} has an unknown type ${JSON.stringify(type) ?? "(none)"}`,
        );
      }
      if (value["prev"] !== toHex(head)) throw chainBreak(n);
      head = sha256(head, bytes);
      if (type === "session") {
        if (stage !== "sessions") {
          throw new BundleError("format", n, `line ${n} is a session after the events`);
        }
        const parsed = SessionLine.safeParse(value);
        if (!parsed.success) throw invalid(n, parsed.error);
        const session = parsed.data.session;
        if (sessionIds.has(session.id)) {
          throw new BundleError("format", n, `line ${n} repeats session "${session.id}"`);
        }
        sessionIds.add(session.id);
        yield { type: "session", line: n, session, head: toHex(head) };
        continue;
      }
      stage = "events";
      const parsed = EventLine.safeParse(value);
      if (!parsed.success) throw invalid(n, parsed.error);
      const event = parsed.data.event;
      if (event.id <= lastEvent) {
        throw new BundleError(
          "format",
          n,
          `line ${n} holds event "${event.id}" out of id order (after "${lastEvent}")`,
        );
      }
      if (!sessionIds.has(event.session)) {
        throw new BundleError(
          "format",
          n,
          `line ${n} holds event "${event.id}" of session "${event.session}", which the ` +
            "bundle does not hold",
        );
      }
      lastEvent = event.id;
      events++;
      yield { type: "event", line: n, event, head: toHex(head) };
    }
  } catch (error) {
    if (error instanceof BundleError) throw error;
    if (error instanceof LineTooLongError) {
      throw new BundleError("format", error.line, error.message.replace(/^Line/, "line"));
    }
    // The decompressor's errors: a bad header, a bad checksum, or data cut off.
    const detail = lastLine === 0
      ? "it is not gzip data, or its gzip data is corrupt"
      : `its gzip data is corrupt or truncated after line ${lastLine}`;
    throw new BundleError("gzip", lastLine + 1, detail);
  }
  if (stage !== "done") {
    throw new BundleError(
      "truncated",
      lastLine,
      lastLine === 0
        ? "it is empty"
        : `it ends at line ${lastLine} without its trailer: the bundle is truncated`,
    );
  }
}

function checkSignature(
  line: number,
  header: BundleHeader,
  trailer: BundleTrailer,
  head: Uint8Array,
  key: Uint8Array | undefined,
): SignatureStatus {
  const announced = header.mac === BUNDLE_MAC;
  const signature = trailer.mac ?? null;
  if (announced && signature === null) {
    throw new BundleError(
      "signature",
      line,
      `the trailer (line ${line}) lacks the signature the header announces`,
    );
  }
  if (!announced && signature !== null) {
    throw new BundleError(
      "signature",
      line,
      `the trailer (line ${line}) has a signature the header does not announce`,
    );
  }
  if (key === undefined) return signature === null ? "none" : "unchecked";
  if (signature === null) {
    throw new BundleError("signature", line, "it is not signed, but a signing key was given");
  }
  const expected = Buffer.from(mac(key, head), "hex");
  if (!timingSafeEqual(expected, Buffer.from(signature, "hex"))) {
    throw new BundleError(
      "signature",
      line,
      "its signature does not match the signing key: another key signed it, or it was changed",
    );
  }
  return "verified";
}

/** What a verified bundle holds. */
export interface BundleSummary {
  header: BundleHeader;
  sessions: number;
  events: number;
  /** The chain's head, in hex. */
  head: string;
  signature: SignatureStatus;
  /** The first and last event's `ts`, or null without events. */
  firstTs: string | null;
  lastTs: string | null;
}

/** Options for {@link verifyBundle}. */
export interface VerifyBundleOptions extends ReadBundleOptions {
  /** Events per transaction when the bundle is stored; default {@link IMPORT_BATCH}. */
  batchSize?: number;
}

/** A bundle verified end to end: what it holds, and what {@link storeBundle} needs. */
export interface VerifiedBundle {
  summary: BundleSummary;
  /** Its sessions: memory grows with the sessions, never with the events. */
  sessions: readonly SessionRecord[];
  /** The chain's head after every `batchSize`-th event and after the last event. */
  checkpoints: readonly string[];
  batchSize: number;
}

/**
 * Verifies a whole bundle without storing anything, holding one line at a time.
 *
 * @throws {BundleError} when the bundle is not acceptable.
 */
export async function verifyBundle(
  input: ReadableStream<Uint8Array<ArrayBuffer>>,
  options: VerifyBundleOptions = {},
): Promise<VerifiedBundle> {
  const batchSize = options.batchSize ?? IMPORT_BATCH;
  let header: BundleHeader | null = null;
  let signature: SignatureStatus = "none";
  let head = "";
  let events = 0;
  let firstTs: string | null = null;
  let lastTs: string | null = null;
  const sessions: SessionRecord[] = [];
  const checkpoints: string[] = [];
  const read = options.signKey === undefined ? {} : { signKey: options.signKey };
  for await (const item of readBundle(input, read)) {
    switch (item.type) {
      case "header":
        header = item.header;
        head = item.head;
        break;
      case "session":
        sessions.push(item.session);
        head = item.head;
        break;
      case "event":
        events++;
        firstTs ??= item.event.ts;
        lastTs = item.event.ts;
        head = item.head;
        if (events % batchSize === 0) checkpoints.push(head);
        break;
      case "trailer":
        signature = item.signature;
        break;
    }
  }
  if (events % batchSize !== 0) checkpoints.push(head);
  if (header === null) throw new TypeError("A verified bundle has a header");
  return {
    summary: { header, sessions: sessions.length, events, head, signature, firstTs, lastTs },
    sessions,
    checkpoints,
    batchSize,
  };
}

/** Options for {@link exportBundle}. */
export interface ExportBundleOptions {
  /** Where the gzip bytes go; it is closed at the end. */
  output: WritableStream<Uint8Array>;
  /** This host: its sync id and name. */
  host: { id: string; name: string };
  /** Events with `ts` at or after this ISO time (UTC, with milliseconds). */
  since?: string;
  /** Events with `ts` before this ISO time. */
  until?: string;
  /** Only this session (a full id). */
  session?: string;
  /** Signs the bundle with this shared key (at least {@link MIN_SIGN_KEY_BYTES}). */
  signKey?: Uint8Array;
  /** The wall clock for `created_at`; defaults to `Date.now`. */
  now?: () => number;
  /** Events read from the journal at a time; default 1000. */
  pageSize?: number;
}

/** What {@link exportBundle} wrote. */
export interface ExportResult {
  sessions: number;
  events: number;
  /** The chain's head, in hex. */
  head: string;
  signed: boolean;
  /** Compressed bytes written. */
  bytes: number;
}

/** The events matching `filter`, in id order, read a page at a time. */
function* journalEvents(
  journal: Journal,
  filter: EventFilter,
  pageSize: number,
): Generator<AgentEvent> {
  let after: string | undefined;
  while (true) {
    const page = journal.queryEvents({
      ...filter,
      ...(after === undefined ? {} : { after }),
      limit: pageSize,
    });
    yield* page;
    const last = page.at(-1);
    if (page.length < pageSize || last === undefined) return;
    after = last.id;
  }
}

/** Lines are gathered into chunks of this size before compression, which is per call. */
const CHUNK_BYTES = 64 * 1024;

/**
 * Writes the journal's events matching the filter, and the sessions they belong to (at their
 * current state), as a bundle. It pages through the journal twice, so memory holds one page and
 * the set of session ids, never the events: the first pass finds the sessions (they come
 * first in the bundle) and the last event id, the second writes the events up to that id, so
 * events journaled meanwhile are left for the next export.
 *
 * @throws {RangeError} when the signing key is too short.
 * @throws {Error} when the output cannot be written; the output is aborted then.
 */
export async function exportBundle(
  journal: Journal,
  options: ExportBundleOptions,
): Promise<ExportResult> {
  if (options.signKey !== undefined && options.signKey.length < MIN_SIGN_KEY_BYTES) {
    throw new RangeError(
      `Signing key too short: ${options.signKey.length} bytes, at least ${MIN_SIGN_KEY_BYTES}`,
    );
  }
  const pageSize = options.pageSize ?? 1000;
  const now = options.now ?? Date.now;
  const filter: EventFilter = {
    ...(options.since === undefined ? {} : { since: options.since }),
    ...(options.until === undefined ? {} : { until: options.until }),
    ...(options.session === undefined ? {} : { session: options.session }),
  };

  // Pass 1: the sessions and the last event id.
  const sessionIds = new Set<string>();
  if (options.session !== undefined) sessionIds.add(options.session);
  let last = "";
  for (const event of journalEvents(journal, filter, pageSize)) {
    sessionIds.add(event.session);
    last = event.id;
  }

  const encoder = new BundleEncoder({ signKey: options.signKey });
  const gzip = new CompressionStream("gzip");
  let bytes = 0;
  const counter = new TransformStream<Uint8Array, Uint8Array>({
    transform(chunk, controller) {
      bytes += chunk.length;
      controller.enqueue(chunk);
    },
  });
  const piping = gzip.readable.pipeThrough(counter).pipeTo(options.output);
  const writer = gzip.writable.getWriter();
  let chunk: Uint8Array[] = [];
  let chunkSize = 0;
  const flush = async (): Promise<void> => {
    if (chunkSize === 0) return;
    const joined = new Uint8Array(chunkSize);
    let offset = 0;
    for (const part of chunk) {
      joined.set(part, offset);
      offset += part.length;
    }
    chunk = [];
    chunkSize = 0;
    await writer.ready;
    await writer.write(joined);
  };
  const push = async (line: Uint8Array): Promise<void> => {
    chunk.push(line);
    chunkSize += line.length;
    if (chunkSize >= CHUNK_BYTES) await flush();
  };

  try {
    await push(encoder.header({
      created_at: new Date(now()).toISOString(),
      host: options.host,
      sentry: VERSION,
      filter: {
        since: options.since ?? null,
        until: options.until ?? null,
        session: options.session ?? null,
      },
    }));
    for (const id of [...sessionIds].sort()) {
      await push(encoder.session(SessionRecord.parse(journal.getSession(id))));
    }
    // Pass 2: the events, up to the last id of pass 1.
    for (const event of journalEvents(journal, filter, pageSize)) {
      if (event.id > last) break;
      // A session that began after pass 1 (its events came late): left for the next export.
      if (sessionIds.has(event.session)) await push(encoder.event(event));
    }
    await push(encoder.trailer());
    await flush();
    await writer.close();
    await piping;
  } catch (error) {
    await writer.abort(error).catch(() => {});
    await piping.catch(() => {});
    throw error;
  }
  return { ...encoder.counts, head: encoder.head, signed: options.signKey !== undefined, bytes };
}

/**
 * Where a bundle is stored: a collector's store (`CollectorStore` has this method). Each call is
 * one transaction, all or nothing.
 */
export interface BundleSink {
  /** Stores sessions and events under `batch.key`, events once by id. */
  ingest(batch: IngestBatch): Promise<IngestResult>;
}

/** Options for {@link storeBundle}. */
export interface StoreBundleOptions {
  /** The result of {@link verifyBundle} on the same bytes. */
  bundle: VerifiedBundle;
  /** Opens the bundle's (gzip) bytes again, to store them. */
  open: () => Promise<ReadableStream<Uint8Array<ArrayBuffer>>>;
  /**
   * The owner to file the sessions under (a collector key id). Defaults to
   * {@link bundleKey} of the bundle's host.
   */
  key?: string;
}

/** What {@link storeBundle} and {@link importBundle} stored. */
export interface ImportResult extends IngestResult {
  /** The bundle, as verified. */
  bundle: BundleSummary;
  /** The owner the sessions were filed under. */
  key: string;
}

/** The owner of sessions imported from a host's bundles: `bundle:<host id>`. */
export function bundleKey(hostId: string): string {
  return `bundle:${hostId.toUpperCase()}`;
}

/**
 * Stores a verified bundle in a collector's store: the sessions in one transaction, then
 * the events in transactions of the verified `batchSize`, read again from `open()`. Before each
 * transaction the re-read chain must equal the verified one at that point, so a file changed
 * since it was verified stores nothing that was not verified. Events are stored once by id:
 * storing a bundle again counts its events as duplicates.
 *
 * @throws {BundleError} with problem `changed` when the file no longer matches what was
 *   verified (the batches before the change are stored), or any problem of the re-read.
 * @throws {IngestError} when a session belongs to another owner (nothing is stored).
 */
export async function storeBundle(
  sink: BundleSink,
  options: StoreBundleOptions,
): Promise<ImportResult> {
  const { bundle } = options;
  const hostId = bundle.summary.header.host.id.toUpperCase();
  const key = options.key ?? bundleKey(hostId);
  const result: ImportResult = {
    accepted: 0,
    duplicates: 0,
    sessions: 0,
    bundle: bundle.summary,
    key,
  };
  result.sessions =
    (await sink.ingest({ key, hostId, sessions: bundle.sessions, events: [] })).sessions;
  if (bundle.summary.events === 0) return result;

  let batch: AgentEvent[] = [];
  let checkpoint = 0;
  const store = async (line: number, head: string): Promise<void> => {
    if (head !== bundle.checkpoints[checkpoint]) {
      throw new BundleError(
        "changed",
        line,
        `the file changed while it was imported (the chain differs at line ${line}); ` +
          `${result.accepted + result.duplicates} events were stored before`,
      );
    }
    checkpoint++;
    const stored = await sink.ingest({ key, hostId, sessions: [], events: batch });
    result.accepted += stored.accepted;
    result.duplicates += stored.duplicates;
    batch = [];
  };
  let lastLine = 0;
  let lastHead = "";
  // The signature was checked on the first read; the chain ties this read to that one.
  for await (const item of readBundle(await options.open())) {
    if (item.type !== "event") continue;
    batch.push(item.event);
    lastLine = item.line;
    lastHead = item.head;
    if (batch.length === bundle.batchSize) await store(item.line, item.head);
  }
  if (batch.length > 0) await store(lastLine, lastHead);
  return result;
}

/** Options for {@link importBundle}. */
export interface ImportBundleOptions extends Omit<StoreBundleOptions, "bundle"> {
  /** The shared signing key the bundle must be signed with. */
  signKey?: Uint8Array;
  /** Events per ingest transaction; default {@link IMPORT_BATCH}. */
  batchSize?: number;
}

/**
 * Verifies a bundle from `open()`, then stores it ({@link verifyBundle}, then
 * {@link storeBundle}). Nothing is stored unless the whole bundle verifies.
 *
 * @throws {BundleError} when the bundle is not acceptable (nothing is stored), or changed
 *   between the two reads (problem `changed`).
 * @throws {IngestError} when a session belongs to another owner (nothing is stored).
 */
export async function importBundle(
  sink: BundleSink,
  options: ImportBundleOptions,
): Promise<ImportResult> {
  const bundle = await verifyBundle(await options.open(), {
    ...(options.signKey === undefined ? {} : { signKey: options.signKey }),
    ...(options.batchSize === undefined ? {} : { batchSize: options.batchSize }),
  });
  return await storeBundle(sink, {
    bundle,
    open: options.open,
    ...(options.key === undefined ? {} : { key: options.key }),
  });
}
