/** What a {@link TokenBucket} allows. */
export interface TokenBucketOptions {
  /** Tokens added per minute. */
  perMinute: number;
  /** The most tokens held at once: how many messages may go out in a burst. */
  burst: number;
  /** The clock, in milliseconds; defaults to `performance.now`. */
  now?: () => number;
}

/**
 * A token bucket: it starts full with `burst` tokens and refills continuously at `perMinute`.
 * Each message takes one token; with none left, the message is over the limit.
 */
export class TokenBucket {
  readonly #rate: number;
  readonly #burst: number;
  readonly #now: () => number;
  #tokens: number;
  #at: number;

  /** Builds a full bucket. */
  constructor(options: TokenBucketOptions) {
    this.#rate = options.perMinute / 60_000;
    this.#burst = options.burst;
    this.#now = options.now ?? (() => performance.now());
    this.#tokens = options.burst;
    this.#at = this.#now();
  }

  #refill(): void {
    const now = this.#now();
    this.#tokens = Math.min(this.#burst, this.#tokens + (now - this.#at) * this.#rate);
    this.#at = now;
  }

  /** Takes a token if one is there, and tells whether it did. */
  take(): boolean {
    this.#refill();
    if (this.#tokens < 1) return false;
    this.#tokens -= 1;
    return true;
  }

  /** Milliseconds until a token is there (0 when one is there now). */
  msUntilToken(): number {
    this.#refill();
    return this.#tokens >= 1 ? 0 : Math.ceil((1 - this.#tokens) / this.#rate);
  }
}
