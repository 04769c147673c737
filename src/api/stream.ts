/**
 * `GET /v1/events/stream`: Server-Sent Events of AgentEvents. A client that reconnects with
 * `Last-Event-ID` first gets, from the journal or the collector's store, every event after that
 * id, then the live ones.
 *
 * @module
 */

import type { Context } from "hono";
import { streamSSE } from "hono/streaming";
import type { AgentEvent } from "../events/mod.ts";
import type { LiveSource } from "./live.ts";
import type { ApiReader } from "./reader.ts";

/** Options for {@link streamEvents}. */
export interface StreamOptions {
  /** Where a replay after `Last-Event-ID` reads: the journal, or the collector's store. */
  reader: Pick<ApiReader, "queryEvents" | "flush">;
  live: LiveSource;
  /** Only this session's events; all when absent. */
  session?: string;
  /** Resume after this event id (the `Last-Event-ID` header). */
  lastEventId?: string;
  /** Time between keep-alive comments; default 15 s. */
  heartbeatMs?: number;
  /** Ends the stream when aborted: the server is shutting down. */
  closing?: AbortSignal;
  /** A frame written first, before any event (the `server` message of `createApp`). */
  hello?: string;
  /** The last frame, written when `closing` ends the stream; none when it gives undefined. */
  farewell?: () => Promise<string | undefined> | undefined;
  /**
   * Live events queued for a slow client before the stream is closed; default 10,000. The client
   * reconnects with `Last-Event-ID` and catches up from the journal, so nothing is lost.
   */
  maxQueue?: number;
}

const REPLAY_PAGE = 500;

/** The most queued events written at once. */
const WRITE_MAX = 500;

/** Each event's SSE frame, made once however many clients stream it. */
const frames = new WeakMap<AgentEvent, string>();

/** The SSE frame of an event: its id, the type `event`, and its JSON on one data line. */
function frame(event: AgentEvent): string {
  let text = frames.get(event);
  if (text === undefined) {
    // JSON.stringify escapes newlines, so the data is one line.
    text = `id: ${event.id}\nevent: event\ndata: ${JSON.stringify(event)}\n\n`;
    frames.set(event, text);
  }
  return text;
}

/** Answers a request with the event stream. */
export function streamEvents(c: Context, options: StreamOptions): Response {
  const { reader, live, session } = options;
  const heartbeatMs = options.heartbeatMs ?? 15_000;
  const maxQueue = options.maxQueue ?? 10_000;
  return streamSSE(c, async (stream) => {
    const queue: AgentEvent[] = [];
    let overflow = false;
    let wake: (() => void) | undefined;
    const notify = (): void => {
      const w = wake;
      wake = undefined;
      w?.();
    };
    // Subscribe before replaying, so no event falls between the journal and the live feed.
    const unsubscribe = live.subscribe((event) => {
      if (session !== undefined && event.session !== session) return;
      if (queue.length >= maxQueue) overflow = true;
      else queue.push(event);
      notify();
    });
    stream.onAbort(() => {
      unsubscribe();
      notify();
    });
    // The server is closing: end the stream, so that a graceful shutdown does not wait for it.
    const closing = options.closing;
    const onClosing = (): void => notify();
    closing?.addEventListener("abort", onClosing);
    try {
      if (options.hello !== undefined) await stream.write(options.hello);
      /** The newest id replayed: live events up to it were already sent. */
      let replayed: string | undefined;
      if (options.lastEventId !== undefined) {
        // The session's own events are published before their batch is written: write it now,
        // so the replay sees everything the client may have missed.
        try {
          reader.flush?.();
        } catch {
          // The journal keeps the batch and retries; the replay reads what is there.
        }
        let after = options.lastEventId;
        for (;;) {
          const page = await reader.queryEvents({
            after,
            order: "asc",
            limit: REPLAY_PAGE,
            ...(session === undefined ? {} : { session }),
          });
          if (stream.aborted) return;
          if (page.length > 0) await stream.write(page.map(frame).join(""));
          const last = page.at(-1);
          if (last !== undefined) after = replayed = last.id;
          if (page.length < REPLAY_PAGE) break;
        }
      }
      while (!stream.aborted && !overflow && closing?.aborted !== true) {
        if (queue.length > 0) {
          // Everything queued goes out in one write: with many clients, one read per event
          // each would cost more than the events themselves (bench/api_stream_bench.ts).
          let text = "";
          for (const event of queue.splice(0, WRITE_MAX)) {
            if (replayed !== undefined && event.id <= replayed) continue;
            text += frame(event);
          }
          if (text !== "") await stream.write(text);
          continue;
        }
        let timer: ReturnType<typeof setTimeout> | undefined;
        const woken = await new Promise<boolean>((resolve) => {
          wake = () => resolve(true);
          timer = setTimeout(() => resolve(false), heartbeatMs);
        });
        clearTimeout(timer);
        wake = undefined;
        if (!woken && !stream.aborted) await stream.write(": keep-alive\n\n");
      }
      if (closing?.aborted === true && !stream.aborted && !overflow) {
        // Events queued before the close still go out, then the reason of the end.
        let text = "";
        for (const event of queue.splice(0)) {
          if (replayed === undefined || event.id > replayed) text += frame(event);
        }
        text += await options.farewell?.() ?? "";
        if (text !== "") await stream.write(text);
      }
    } finally {
      unsubscribe();
      closing?.removeEventListener("abort", onClosing);
    }
  }, async (error, stream) => {
    // The stream's own failures (a client gone mid-write) end it quietly.
    if (!stream.aborted) {
      await stream.writeSSE({ event: "error", data: JSON.stringify({ error: error.message }) })
        .catch(() => {});
    }
  });
}
