import type { Observation } from "../events/mod.ts";

/**
 * What a sensor hands the engine: an observation without the fields the session fills in
 * (id, timestamp, session and agent). `ts` may be given when the sensor knows when the action
 * happened better than "now".
 */
export type SensorEvent = Omit<Observation, "id" | "ts" | "session" | "agent"> & { ts?: string };

/** Something a sensor could not see, counted, so that no blind spot is silent. */
export interface BlindSpot {
  /** A stable id, such as `short_lived_fd` or `unattributed`. */
  id: string;
  /** What could not be seen, in words. */
  reason: string;
  count: number;
}

/** A sensor's counters, reported in `sentry report`, the journal and `/metrics`. */
export interface SensorStats {
  sensor: string;
  /** Events handed to the engine. */
  emitted: number;
  /** Events lost (a full queue, an overflowed kernel buffer). */
  dropped: number;
  /** Repeats of the same pid, kind and target within the window, folded into one event. */
  deduplicated: number;
  /** How far behind the sensor ran at its last poll, in milliseconds. */
  lagMs: number;
  /** How many polls or reads it made. */
  polls: number;
  blindSpots: BlindSpot[];
}

/**
 * One sensor. It starts watching on `start()`, emits events through `emit`, and stops when the
 * signal aborts. A new backend (ptrace, fanotify, netlink) implements this and joins without
 * any change to the engine.
 */
export interface Sensor {
  readonly name: string;
  /** Runs until `signal` aborts; resolves once the sensor has stopped and flushed. */
  start(emit: (event: SensorEvent) => void, signal: AbortSignal): Promise<void>;
  /** The sensor's counters so far. */
  stats(): SensorStats;
}

/** Counters for one sensor, with helpers to count blind spots by id. */
export class StatsCounter {
  readonly #stats: SensorStats;
  readonly #spots = new Map<string, BlindSpot>();

  /** Starts empty counters for a sensor. */
  constructor(sensor: string) {
    this.#stats = {
      sensor,
      emitted: 0,
      dropped: 0,
      deduplicated: 0,
      lagMs: 0,
      polls: 0,
      blindSpots: [],
    };
  }

  /** The mutable counters. */
  get counters(): SensorStats {
    return this.#stats;
  }

  /** Counts one occurrence (or `n`) of a blind spot. */
  blind(id: string, reason: string, n = 1): void {
    let spot = this.#spots.get(id);
    if (spot === undefined) {
      spot = { id, reason, count: 0 };
      this.#spots.set(id, spot);
    }
    spot.count += n;
  }

  /** A snapshot of the counters. */
  snapshot(): SensorStats {
    return { ...this.#stats, blindSpots: [...this.#spots.values()].map((s) => ({ ...s })) };
  }
}
