/**
 * Live event sources for `/v1/events/stream` and `/metrics`: a hub that the watching session
 * publishes to (same process), and a journal poller that sees the events of every Sentry
 * process sharing the journal (`sentry serve`).
 *
 * @module
 */

import type { AgentEvent } from "../events/mod.ts";
import type { Journal } from "../journal/mod.ts";

/** Something that hands out live events, in roughly id order, to its subscribers. */
export interface LiveSource {
  /** Registers a listener and returns the function that removes it. */
  subscribe(listener: (event: AgentEvent) => void): () => void;
}

/** A {@link LiveSource} that the owner feeds by hand. */
export interface LiveHub extends LiveSource {
  /** Hands an event to every subscriber. A throwing listener does not stop the others. */
  publish(event: AgentEvent): void;
}

/**
 * Creates a hub for the in-process session: call `publish` right after `journal.append`. Events
 * reach the stream before the journal's batch is written, so a client resuming with
 * `Last-Event-ID` may get an event again after a reconnect (ids let it skip duplicates).
 */
export function createLiveHub(): LiveHub {
  const listeners = new Set<(event: AgentEvent) => void>();
  return {
    publish(event) {
      for (const listener of listeners) {
        try {
          listener(event);
        } catch {
          // One broken subscriber must not starve the rest.
        }
      }
    },
    subscribe(listener) {
      listeners.add(listener);
      return () => listeners.delete(listener);
    },
  };
}

/** Options for {@link journalPoller}. */
export interface JournalPollerOptions {
  /** Time between polls; default 200 ms. */
  intervalMs?: number;
}

/** A {@link LiveSource} polling the journal; `close()` stops its timer. */
export interface JournalPoller extends LiveSource {
  /** Polls once now (tests call it instead of waiting for the timer). */
  poll(): void;
  /** Stops polling for good. */
  close(): void;
}

const CROCKFORD = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";

/** The smallest ULID of a millisecond: the cursor for "events from this time on". */
export function ulidFloor(ms: number): string {
  let t = Math.max(0, Math.floor(ms));
  let time = "";
  for (let i = 0; i < 10; i++) {
    time = CROCKFORD[t % 32] + time;
    t = Math.floor(t / 32);
  }
  return `${time}${"0".repeat(16)}`;
}

/**
 * Polls the journal for new events every `intervalMs` while it has subscribers, from the last
 * stored event at the first subscription. It follows the journal's rows, not the event ids: every
 * event stored after that reaches the subscribers once, whatever its id says of its time (a
 * batch written late by a slower process, a host's backlog on a collector), within about one
 * interval plus the writer's batch delay.
 */
export function journalPoller(journal: Journal, options: JournalPollerOptions = {}): JournalPoller {
  const intervalMs = options.intervalMs ?? 200;
  const hub = createLiveHub();
  let subscribers = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  let closed = false;
  /** The last row published; null until the start row is read. */
  let cursor: number | null = null;

  function start(): void {
    cursor = null;
    locate();
    timer = setInterval(poll, intervalMs);
  }

  /** Reads where the subscribers start: after the last event stored now. */
  function locate(): void {
    try {
      cursor = journal.lastEventRow();
    } catch {
      // A locked or closing database: the next poll tries again.
    }
  }

  function poll(): void {
    if (closed || journal.closed) return;
    if (cursor === null) return locate();
    for (;;) {
      let page: { row: number; event: AgentEvent }[];
      try {
        page = journal.eventsAfterRow(cursor, 1000);
      } catch {
        return; // A locked or closing database: try again on the next tick.
      }
      for (const { row, event } of page) {
        cursor = row;
        hub.publish(event);
      }
      if (page.length < 1000) return;
    }
  }

  return {
    subscribe(listener) {
      if (closed) return () => {};
      const unsubscribe = hub.subscribe(listener);
      if (subscribers++ === 0) start();
      let done = false;
      return () => {
        if (done) return;
        done = true;
        unsubscribe();
        if (--subscribers === 0 && timer !== undefined) {
          clearInterval(timer);
          timer = undefined;
        }
      };
    },
    poll,
    close() {
      closed = true;
      if (timer !== undefined) clearInterval(timer);
      timer = undefined;
    },
  };
}
