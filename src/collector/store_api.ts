/**
 * What the collector adds to the API's routes (`createApp`) over its store: its hosts' lines
 * in `/metrics`, and a live source that polls the store, so that the event stream shows what
 * every `sentry server` process sharing a PostgreSQL database stored.
 *
 * @module
 */

import { createLiveHub, type LiveSource, ulidFloor } from "../api/mod.ts";
import type { CollectorStore, HostSummary } from "./store.ts";

/**
 * The collector's own `/metrics` lines, after the API's: each host's stored and dropped events,
 * by host id and key.
 */
export function hostMetricLines(hosts: readonly HostSummary[]): string[] {
  return [
    "# HELP sentry_collector_host_events_total Events stored from each host and key.",
    "# TYPE sentry_collector_host_events_total counter",
    ...hosts.map((h) =>
      `sentry_collector_host_events_total{host_id="${h.host_id}",key_id="${h.key_id}"} ${h.events}`
    ),
    "# HELP sentry_collector_host_dropped_total Events each host's outbox dropped, as reported.",
    "# TYPE sentry_collector_host_dropped_total counter",
    ...hosts.map((h) =>
      `sentry_collector_host_dropped_total{host_id="${h.host_id}",key_id="${h.key_id}"} ${h.dropped}`
    ),
  ];
}

/** Options for {@link storePoller}. */
export interface StorePollerOptions {
  /** Time between polls; default 500 ms. */
  intervalMs?: number;
  /** How far back each poll looks again, in ms (late commits of other processes); default 2000. */
  lookbackMs?: number;
  /** The wall clock; defaults to `Date.now`. */
  now?: () => number;
}

/**
 * A live source polling the store for new events while it has subscribers, so the stream shows
 * the events every collector process sharing the database stored. `close()` stops it.
 */
export function storePoller(
  store: CollectorStore,
  options: StorePollerOptions = {},
): LiveSource & { close(): void } {
  const intervalMs = options.intervalMs ?? 500;
  const lookbackMs = options.lookbackMs ?? 2000;
  const now = options.now ?? Date.now;
  const hub = createLiveHub();
  const seen = new Map<string, number>();
  let subscribers = 0;
  let timer: ReturnType<typeof setTimeout> | undefined;
  let closed = false;
  let primed = false;

  async function scan(): Promise<void> {
    const floor = now() - lookbackMs;
    let after = ulidFloor(floor);
    for (;;) {
      const page = await store.queryEvents({ after, order: "asc", limit: 1000 });
      for (const event of page) {
        if (seen.has(event.id)) continue;
        seen.set(event.id, now());
        if (primed) hub.publish(event);
      }
      const last = page.at(-1);
      if (page.length < 1000 || last === undefined) break;
      after = last.id;
    }
    primed = true;
    for (const [id, at] of seen) if (at < floor - lookbackMs) seen.delete(id);
  }

  function loop(): void {
    if (closed || subscribers === 0) {
      timer = undefined;
      return;
    }
    scan().catch(() => {}).finally(() => {
      if (!closed && subscribers > 0) timer = setTimeout(loop, intervalMs);
      else timer = undefined;
    });
  }

  return {
    subscribe(listener) {
      const off = hub.subscribe(listener);
      subscribers++;
      if (timer === undefined && !closed) loop();
      return () => {
        off();
        subscribers--;
      };
    },
    close() {
      closed = true;
      if (timer !== undefined) clearTimeout(timer);
    },
  };
}
