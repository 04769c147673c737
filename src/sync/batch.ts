/**
 * The body of `POST /v1/sync/batches` (docs/sync-protocol.md), built from the outbox's stored
 * JSON without parsing and re-serializing the events: the journal already holds each event as
 * the exact JSON to send.
 *
 * @module
 */

import type { SessionRecord } from "../journal/mod.ts";
import { PROTOCOL_VERSION } from "./hello.ts";

/** The most events a batch may carry (protocol version 1). */
export const MAX_BATCH_EVENTS = 500;

/** The most uncompressed JSON a batch may be, in bytes (protocol version 1): 1 MiB. */
export const MAX_BATCH_BYTES = 1024 * 1024;

/** The host a batch comes from. */
export interface SyncHost {
  /** A ULID made once per data directory (`loadOrCreateHostId`). */
  id: string;
  /** The host name. */
  name: string;
}

/** What {@link encodeBatch} puts in a body. */
export interface BatchParts {
  /** A ULID per attempt, for the collector's logs. */
  batch: string;
  host: SyncHost;
  /** ISO 8601, UTC. */
  sentAt: string;
  sessions: readonly SessionRecord[];
  /** Each event's JSON exactly as the journal stored it. */
  events: readonly string[];
  /** Events the outbox dropped at its cap, in total. */
  dropped: number;
}

/** The body's JSON text, the events spliced in as they are. */
export function encodeBatch(parts: BatchParts): string {
  const head = JSON.stringify({
    protocol: PROTOCOL_VERSION,
    batch: parts.batch,
    host: parts.host,
    sent_at: parts.sentAt,
    sessions: parts.sessions,
  });
  // `head` ends with "}"; reopen it to append the events and the count.
  return `${head.slice(0, -1)},"events":[${parts.events.join(",")}],"dropped":${parts.dropped}}`;
}

/** The fixed part of a body (everything but sessions and events), with room to spare. */
export const BATCH_ENVELOPE_BYTES = 512;

/** The length of a string in UTF-8 bytes, without encoding it. */
export function utf8Length(text: string): number {
  let bytes = 0;
  for (let i = 0; i < text.length; i++) {
    const c = text.charCodeAt(i);
    if (c < 0x80) bytes += 1;
    else if (c < 0x800) bytes += 2;
    else if (c >= 0xd800 && c <= 0xdbff && i + 1 < text.length) {
      const next = text.charCodeAt(i + 1);
      if (next >= 0xdc00 && next <= 0xdfff) {
        bytes += 4;
        i++;
      } else bytes += 3;
    } else bytes += 3;
  }
  return bytes;
}

/** Gzips bytes with the platform's `CompressionStream`. */
export async function gzip(data: Uint8Array<ArrayBuffer>): Promise<Uint8Array<ArrayBuffer>> {
  const stream = new Blob([data]).stream().pipeThrough(new CompressionStream("gzip"));
  return await new Response(stream).bytes();
}
