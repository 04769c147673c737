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
  /**
   * How far back each poll looks again, in ms; default 1000. Ids are ULIDs minted by several
   * processes, and the journal writes in batches, so an event can land after a later-minted one
   * was already seen. Re-reading a short window (and skipping ids already sent) catches it.
   */
  lookbackMs?: number;
  /** The wall clock; defaults to `Date.now`. */
  now?: () => number;
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
 * Polls the journal for new events every `intervalMs` while it has subscribers, starting from
 * the journal's newest event at the first subscription. Events written by any process sharing
 * the journal reach the subscribers within about one interval plus the writer's batch delay.
 */
export function journalPoller(journal: Journal, options: JournalPollerOptions = {}): JournalPoller {
  const intervalMs = options.intervalMs ?? 200;
  const lookbackMs = options.lookbackMs ?? 1000;
  const now = options.now ?? Date.now;
  const hub = createLiveHub();
  let subscribers = 0;
  let timer: ReturnType<typeof setInterval> | undefined;
  let closed = false;
  /** Ids sent within the look-back window, with their mint times. */
  const seen = new Map<string, number>();
  let newest = 0;

  function idTime(id: string): number {
    let t = 0;
    for (const ch of id.slice(0, 10).toUpperCase()) t = t * 32 + CROCKFORD.indexOf(ch);
    return t;
  }

  function start(): void {
    const last = journal.queryEvents({ order: "desc", limit: 1 })[0];
    newest = last === undefined ? now() : idTime(last.id);
    // Mark the look-back window as sent: subscribers want what comes next, not the past.
    scan(true);
    timer = setInterval(poll, intervalMs);
  }

  function poll(): void {
    scan(false);
  }

  function scan(silent: boolean): void {
    if (closed || journal.closed) return;
    const floor = Math.max(0, Math.min(newest, now()) - lookbackMs);
    let after = ulidFloor(floor);
    const page = 1000;
    for (;;) {
      let events: AgentEvent[];
      try {
        events = journal.queryEvents({ after, order: "asc", limit: page });
      } catch {
        return; // A locked or closing database: try again on the next tick.
      }
      for (const event of events) {
        if (seen.has(event.id)) continue;
        const t = idTime(event.id);
        seen.set(event.id, t);
        if (t > newest) newest = t;
        if (!silent) hub.publish(event);
      }
      const last = events.at(-1);
      if (events.length < page || last === undefined) break;
      after = last.id;
    }
    const cut = Math.min(newest, now()) - lookbackMs;
    for (const [id, t] of seen) if (t < cut) seen.delete(id);
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
