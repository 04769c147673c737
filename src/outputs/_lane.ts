/**
 * One output's lane: a bounded queue that `offer()` fills without ever waiting, and one worker
 * that drains it in batches. Everything that does not reach the far end is counted.
 *
 * @module
 */

import type { AgentEvent } from "../events/mod.ts";

/** One output's counters: what went out and what did not, so no blind spot is silent. */
export interface OutputStats {
  /** The output's name, such as `webhook`, `webhook[1]`, a configured name, or `otlp`. */
  name: string;
  kind: "webhook" | "otlp";
  /** Events at or above the threshold that were queued. */
  queued: number;
  /** Events the far end accepted. */
  sent: number;
  /** Events whose delivery failed: retries ran out, a status not worth retrying, or shutdown. */
  failed: number;
  /** Events lost without an attempt: a full queue, or still queued at the close deadline. */
  dropped: number;
  /** Events over the rate limit: not sent on their own, but counted in the next message. */
  rateLimited: number;
  /** Extra attempts made after a failure. */
  retries: number;
  /** Events the far end reported as rejected in a partial success (OTLP). */
  rejected: number;
  /** Events waiting in the queue now. */
  pending: number;
}

/** What every lane shares. */
export interface LaneOptions {
  name: string;
  kind: "webhook" | "otlp";
  queueSize: number;
  /** The most events handed to {@link Lane.send} at once. */
  batchSize: number;
  /** How long a partial batch waits for more events. */
  flushMs: number;
  /** Reports a problem once per kind of problem, for the operator. */
  warn: (message: string) => void;
}

/**
 * A bounded FIFO of events. It grows as needed up to its capacity (a preallocated array of a
 * million holes would be slow to write), and compacts once half of it has been taken.
 */
class BoundedQueue {
  readonly #capacity: number;
  #items: AgentEvent[] = [];
  #head = 0;

  constructor(capacity: number) {
    this.#capacity = capacity;
  }

  get length(): number {
    return this.#items.length - this.#head;
  }

  push(event: AgentEvent): boolean {
    if (this.length >= this.#capacity) return false;
    this.#items.push(event);
    return true;
  }

  take(n: number): AgentEvent[] {
    const end = Math.min(this.#items.length, this.#head + n);
    const out = this.#items.slice(this.#head, end);
    this.#head = end;
    if (this.#head === this.#items.length) {
      this.#items = [];
      this.#head = 0;
    } else if (this.#head > 1024 && this.#head * 2 > this.#items.length) {
      this.#items = this.#items.slice(this.#head);
      this.#head = 0;
    }
    return out;
  }
}

/**
 * A queued output. Subclasses say which events they take (`accepts`, `admit`) and how a batch
 * is delivered (`send`); the lane owns the queue, the worker, the counters and shutdown.
 */
export abstract class Lane {
  readonly name: string;
  readonly kind: "webhook" | "otlp";
  /** The counters; subclasses add to `sent`, `failed`, `retries` and `rejected`. */
  protected readonly counters: OutputStats;
  /** Aborts the request in flight and every wait once the close deadline passes. */
  protected readonly abort: AbortController = new AbortController();
  readonly #queue: BoundedQueue;
  readonly #batchSize: number;
  readonly #flushMs: number;
  readonly #warn: (message: string) => void;
  readonly #warned = new Set<string>();
  #firstAt: number | null = null;
  #wake: (() => void) | null = null;
  #closing = false;
  #worker: Promise<void> | null = null;

  /** Builds an idle lane; {@link Lane.start} starts its worker. */
  constructor(options: LaneOptions) {
    this.name = options.name;
    this.kind = options.kind;
    this.#queue = new BoundedQueue(options.queueSize);
    this.#batchSize = options.batchSize;
    this.#flushMs = options.flushMs;
    this.#warn = options.warn;
    this.counters = {
      name: options.name,
      kind: options.kind,
      queued: 0,
      sent: 0,
      failed: 0,
      dropped: 0,
      rateLimited: 0,
      retries: 0,
      rejected: 0,
      pending: 0,
    };
  }

  /** Whether the event is at or above this output's threshold. */
  protected abstract accepts(event: AgentEvent): boolean;

  /** Delivers a batch and counts the outcome. Must not throw. */
  protected abstract send(batch: AgentEvent[]): Promise<void>;

  /** A last chance to refuse an accepted event (the rate limit); true lets it in. */
  protected admit(_event: AgentEvent): boolean {
    return true;
  }

  /**
   * In how many milliseconds the worker should call {@link Lane.idle} although the queue is
   * empty (0 for now), or null for never.
   */
  protected idleIn(_closing: boolean): number | null {
    return null;
  }

  /** Work to do while the queue is empty (a summary of suppressed alerts). Must not throw. */
  protected idle(_closing: boolean): Promise<void> {
    return Promise.resolve();
  }

  /** Reports a problem the first time it happens for this output and kind of problem. */
  protected warnOnce(kind: string, message: string): void {
    if (this.#warned.has(kind)) return;
    this.#warned.add(kind);
    this.#warn(message);
  }

  /** Queues an event if the output takes it. Never waits, never throws. */
  offer(event: AgentEvent): void {
    if (!this.accepts(event)) return;
    if (this.#closing) {
      this.counters.dropped++;
      return;
    }
    if (!this.admit(event)) {
      // The worker may owe a summary of what was refused: let it recompute when.
      this.#wake?.();
      return;
    }
    if (!this.#queue.push(event)) {
      this.counters.dropped++;
      this.warnOnce(
        "overflow",
        `output "${this.name}": queue full, dropping events (the far end takes them slower than they come)`,
      );
      return;
    }
    this.counters.queued++;
    this.#firstAt ??= performance.now();
    this.#wake?.();
  }

  /** Starts the worker. */
  start(): void {
    this.#worker ??= this.#run();
  }

  /**
   * Stops taking events, delivers what is queued, and returns by the deadline: then the request
   * in flight is aborted and what is still queued is counted as dropped.
   */
  async close(deadlineMs: number): Promise<void> {
    this.#closing = true;
    this.#wake?.();
    const worker = this.#worker ?? Promise.resolve();
    let timer: ReturnType<typeof setTimeout> | undefined;
    const expired = new Promise<"expired">((resolve) => {
      timer = setTimeout(() => resolve("expired"), Math.max(0, deadlineMs));
    });
    const outcome = await Promise.race([worker.then(() => "done" as const), expired]);
    clearTimeout(timer);
    if (outcome === "expired") {
      this.abort.abort();
      this.#wake?.();
      await worker;
    }
    const left = this.#queue.take(Number.MAX_SAFE_INTEGER).length;
    this.counters.dropped += left;
    if (left > 0) {
      this.warnOnce("closed", `output "${this.name}": ${left} events not delivered by shutdown`);
    }
  }

  /** A copy of the counters. */
  stats(): OutputStats {
    return { ...this.counters, pending: this.#queue.length };
  }

  async #run(): Promise<void> {
    while (!this.abort.signal.aborted) {
      const queued = this.#queue.length;
      const now = performance.now();
      if (queued > 0) {
        const due = this.#closing || queued >= this.#batchSize ||
          now >= (this.#firstAt ?? now) + this.#flushMs;
        if (due) {
          const batch = this.#queue.take(this.#batchSize);
          // What is left has waited already: it goes out with the next batch, without delay.
          if (this.#queue.length === 0) this.#firstAt = null;
          await this.#guard(() => this.send(batch), batch.length);
          continue;
        }
        await this.#sleep((this.#firstAt ?? now) + this.#flushMs - now);
        continue;
      }
      const idleIn = this.idleIn(this.#closing);
      if (idleIn !== null && idleIn <= 0) {
        await this.#guard(() => this.idle(this.#closing), 0);
        continue;
      }
      if (this.#closing) return;
      await this.#sleep(idleIn ?? Infinity);
    }
  }

  /**
   * Runs a step of the worker. A bug in a step (an event that cannot be encoded) fails its
   * events, never the worker, whose rejection nothing would catch.
   */
  async #guard(step: () => Promise<void>, events: number): Promise<void> {
    try {
      await step();
    } catch (error) {
      this.counters.failed += events;
      const reason = error instanceof Error ? error.message : String(error);
      this.warnOnce("error", `output "${this.name}": cannot deliver: ${reason}`);
    }
  }

  /** Waits until woken by an event or by close, or for `ms`. */
  #sleep(ms: number): Promise<void> {
    return new Promise((resolve) => {
      let timer: ReturnType<typeof setTimeout> | undefined;
      this.#wake = () => {
        this.#wake = null;
        clearTimeout(timer);
        resolve();
      };
      if (Number.isFinite(ms)) timer = setTimeout(() => this.#wake?.(), Math.max(0, ms));
    });
  }
}
