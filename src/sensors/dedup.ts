import type { SensorEvent } from "./sensor.ts";

/**
 * Folds repeats: the same pid, kind and target within a window is one event. Returns whether
 * an event is new; repeats are counted per sensor. Memory is bounded: keys older than the
 * window are swept as time passes.
 */
export class Dedup {
  readonly #windowMs: number;
  readonly #seen = new Map<string, number>();
  readonly #folded = new Map<string, number>();
  #lastSweep = 0;

  /** Sets the window, in milliseconds. */
  constructor(windowMs: number) {
    this.#windowMs = windowMs;
  }

  /** True when the event is not a repeat within the window; a repeat is counted. */
  admit(event: SensorEvent, now: number): boolean {
    // Each attempt on a process outside the tree is its own event (the sensors fold repeated
    // probes themselves): a SIGSTOP right after a signal-0 probe must not disappear into it.
    if (event.kind === "proc.exit" || event.kind === "proc.exec" || event.kind === "proc.control") {
      return true;
    }
    const key = `${event.pid}\u0000${event.kind}\u0000${event.target}`;
    const last = this.#seen.get(key);
    if (now - this.#lastSweep > this.#windowMs) this.#sweep(now);
    if (last !== undefined && now - last < this.#windowMs) {
      this.#folded.set(event.sensor, (this.#folded.get(event.sensor) ?? 0) + 1);
      return false;
    }
    this.#seen.set(key, now);
    return true;
  }

  /** Repeats folded so far, per sensor. */
  folded(sensor: string): number {
    return this.#folded.get(sensor) ?? 0;
  }

  #sweep(now: number): void {
    this.#lastSweep = now;
    for (const [key, at] of this.#seen) if (now - at >= this.#windowMs) this.#seen.delete(key);
  }
}
