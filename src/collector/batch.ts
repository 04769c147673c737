/**
 * A sync batch as it arrives at the collector (docs/sync-protocol.md): its schema, and the
 * reading of its body within size limits, so that neither a large body nor a gzip bomb can make
 * the collector hold more than its limits in memory.
 *
 * @module
 */

import { z } from "zod";
import { AgentEvent } from "../events/mod.ts";
import { SessionRecord } from "../journal/mod.ts";

/** The limits of one batch; the protocol's defaults are {@link DEFAULT_LIMITS}. */
export interface BatchLimits {
  /** Events per batch. */
  maxEvents: number;
  /** Bytes of body as received (compressed or not). */
  maxBodyBytes: number;
  /** Bytes of JSON after decompression. */
  maxJsonBytes: number;
  /** Sessions per batch. */
  maxSessions: number;
}

/** 500 events, 1 MiB received, 8 MiB decompressed, 1000 sessions. */
export const DEFAULT_LIMITS: Readonly<BatchLimits> = Object.freeze({
  maxEvents: 500,
  maxBodyBytes: 1024 * 1024,
  maxJsonBytes: 8 * 1024 * 1024,
  maxSessions: 1000,
});

/** The protocol version in the body's `protocol` field. */
export const BATCH_PROTOCOL = 1;

/** A ULID, as hosts make them for host and batch ids (either case). */
const Ulid = z.string().regex(/^[0-9A-HJKMNP-TV-Za-hjkmnp-tv-z]{26}$/, "must be a ULID");

/** The range of PostgreSQL's `integer`, where both stores keep pids and exit codes. */
const INT32 = { min: -(2 ** 31), max: 2 ** 31 - 1 };

/**
 * What both stores can keep, beyond the journal's own schema: no NUL in a text field that a
 * store keeps as text (PostgreSQL's text refuses it, where SQLite took it), and pids and exit
 * codes within 32 bits. A value past these is refused with a 400 naming it, on either store,
 * rather than stored by one and failed with a 500 (which a host retries forever) by the other.
 */
function storable(value: Record<string, unknown>, ctx: z.RefinementCtx): void {
  for (const [key, v] of Object.entries(value)) {
    const texts = typeof v === "string"
      ? [[key, v] as const]
      : Array.isArray(v)
      ? v.flatMap((item, i) => typeof item === "string" ? [[`${key}.${i}`, item] as const] : [])
      : [];
    for (const [at, text] of texts) {
      if (text.includes("\u0000")) {
        ctx.addIssue({
          code: "custom",
          message: "must not contain a NUL character",
          path: at.split(".").map((p) => /^\d+$/.test(p) ? Number(p) : p),
        });
      }
    }
    if (typeof v === "number" && Number.isInteger(v) && (v < INT32.min || v > INT32.max)) {
      ctx.addIssue({
        code: "custom",
        message: `must be from ${INT32.min} to ${INT32.max}`,
        path: [key],
      });
    }
  }
}

/** An uploaded session: the journal's record, within what both stores can keep. */
const UploadedSession = SessionRecord.superRefine(storable);

/** An uploaded event: the journal's schema, with a session id both stores can keep. */
const UploadedEvent = AgentEvent.superRefine((event, ctx) =>
  storable({ session: event.session }, ctx)
);

/**
 * The body of `POST /v1/sync/batches`, before the limits on counts (checked first, to answer
 * 413 rather than 400). Unknown fields are ignored, as the protocol's versioning asks.
 */
export const BatchBody = z.object({
  protocol: z.literal(BATCH_PROTOCOL),
  batch: z.string().min(1).max(128),
  host: z.object({ id: Ulid, name: z.string().max(255) }).loose(),
  sent_at: z.iso.datetime({ offset: true }),
  sessions: z.array(UploadedSession),
  events: z.array(UploadedEvent),
  dropped: z.number().int().nonnegative().max(Number.MAX_SAFE_INTEGER),
}).loose();

/** A valid batch. */
export type BatchBody = z.infer<typeof BatchBody>;

/** Why a body was refused: an HTTP status, a message and the field at fault. */
export class BatchError extends Error {
  /** 400 malformed, 403 a host bound to another key, 413 too large, 415 unsupported type. */
  readonly status: 400 | 403 | 413 | 415;
  /** The field at fault, such as `events[3].kind`, `body` or `content-encoding`. */
  readonly field: string;

  /** Builds the error. */
  constructor(status: BatchError["status"], message: string, field: string) {
    super(message);
    this.name = "BatchError";
    this.status = status;
    this.field = field;
  }
}

/** Formats a zod path the way the protocol names fields: `events[3].detail.path`. */
export function fieldPath(path: readonly PropertyKey[]): string {
  let out = "";
  for (const part of path) {
    if (typeof part === "number") out += `[${part}]`;
    else out += out === "" ? String(part) : `.${String(part)}`;
  }
  return out === "" ? "body" : out;
}

/**
 * Validates a parsed body: the protocol version first, then the counts (413), then every field
 * (400 naming the first bad one).
 *
 * @throws {BatchError} when the batch is not acceptable.
 */
export function parseBatch(value: unknown, limits: BatchLimits = DEFAULT_LIMITS): BatchBody {
  if (typeof value !== "object" || value === null || Array.isArray(value)) {
    throw new BatchError(400, "Invalid body: must be a JSON object", "body");
  }
  const body = value as Record<string, unknown>;
  if (body["protocol"] !== BATCH_PROTOCOL) {
    throw new BatchError(
      400,
      `Invalid protocol ${
        JSON.stringify(body["protocol"]) ?? "(missing)"
      }: this collector speaks sync protocol ${BATCH_PROTOCOL}`,
      "protocol",
    );
  }
  const events = body["events"];
  if (Array.isArray(events) && events.length > limits.maxEvents) {
    throw new BatchError(
      413,
      `Too many events: ${events.length} in one batch, at most ${limits.maxEvents}`,
      "events",
    );
  }
  const sessions = body["sessions"];
  if (Array.isArray(sessions) && sessions.length > limits.maxSessions) {
    throw new BatchError(
      413,
      `Too many sessions: ${sessions.length} in one batch, at most ${limits.maxSessions}`,
      "sessions",
    );
  }
  const result = BatchBody.safeParse(value);
  if (result.success) return result.data;
  const issue = result.error.issues[0];
  const field = fieldPath(issue?.path ?? []);
  throw new BatchError(400, `Invalid ${field}: ${issue?.message ?? "invalid"}`, field);
}

/**
 * Reads a body stream, refusing it with 413 as soon as it passes `maxBytes`, without reading
 * the rest.
 *
 * @throws {BatchError} when the body is larger than `maxBytes`.
 */
export async function readLimited(
  body: ReadableStream<Uint8Array<ArrayBuffer>> | null,
  maxBytes: number,
): Promise<Uint8Array<ArrayBuffer>> {
  if (body === null) return new Uint8Array(0);
  const reader = body.getReader();
  try {
    return await readCapped(reader, maxBytes, "as received");
  } catch (error) {
    await reader.cancel().catch(() => {});
    throw error;
  } finally {
    reader.releaseLock();
  }
}

/** Reads a stream to its end, refusing it with 413 once it passes `maxBytes` (`when`: at which stage). */
async function readCapped(
  reader: ReadableStreamDefaultReader<Uint8Array<ArrayBuffer>>,
  maxBytes: number,
  when: string,
): Promise<Uint8Array<ArrayBuffer>> {
  const chunks: Uint8Array<ArrayBuffer>[] = [];
  let size = 0;
  while (true) {
    const { done, value } = await reader.read();
    if (done) break;
    size += value.byteLength;
    if (size > maxBytes) {
      throw new BatchError(413, `Body too large: more than ${maxBytes} bytes ${when}`, "body");
    }
    chunks.push(value);
  }
  return concat(chunks, size);
}

/**
 * The input slice fed to the decompressor at a time. Deflate expands at most about 1032 times,
 * so one slice yields at most about 4 MiB, whatever the input: the limit is checked after each.
 */
const GUNZIP_SLICE = 4096;

/**
 * Decompresses gzip data, refusing it with 413 as soon as the output passes `maxBytes` (a gzip
 * bomb stops there) and with 400 when it is not valid gzip.
 *
 * @throws {BatchError} when the output is too large or the data is not gzip.
 */
export async function gunzipLimited(
  data: Uint8Array<ArrayBuffer>,
  maxBytes: number,
): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new DecompressionStream("gzip");
  const writer = stream.writable.getWriter();
  const reader = stream.readable.getReader();
  let failure: unknown = null;
  let output: Uint8Array<ArrayBuffer> | null = null;
  const feeding = (async () => {
    for (let i = 0; i < data.length; i += GUNZIP_SLICE) {
      await writer.write(data.subarray(i, i + GUNZIP_SLICE));
    }
    await writer.close();
  })().catch((error) => {
    failure ??= error;
  });
  try {
    output = await readCapped(reader, maxBytes, "after decompression");
  } catch (error) {
    if (error instanceof BatchError) {
      await reader.cancel().catch(() => {});
      await writer.abort().catch(() => {});
      await feeding;
      throw error;
    }
    failure ??= error;
  }
  await feeding;
  if (failure !== null || output === null) {
    throw new BatchError(400, "Invalid body: not valid gzip data", "body");
  }
  return output;
}

function concat(
  chunks: readonly Uint8Array<ArrayBuffer>[],
  size: number,
): Uint8Array<ArrayBuffer> {
  if (chunks.length === 1 && chunks[0] !== undefined) return chunks[0];
  const out = new Uint8Array(size);
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.byteLength;
  }
  return out;
}

/**
 * Decodes a body as UTF-8 JSON.
 *
 * @throws {BatchError} (400, `body`) when it is not UTF-8 or not JSON.
 */
export function parseJson(bytes: Uint8Array): unknown {
  let text: string;
  try {
    text = new TextDecoder("utf-8", { fatal: true }).decode(bytes);
  } catch {
    throw new BatchError(400, "Invalid body: not UTF-8 text", "body");
  }
  try {
    return JSON.parse(text);
  } catch (cause) {
    throw new BatchError(400, `Invalid body: not JSON (${(cause as Error).message})`, "body");
  }
}
