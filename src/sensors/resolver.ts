/** One resolved address of a name, with when it expires. */
interface Resolved {
  names: Set<string>;
  expires: number;
}

/** How the resolver looks names up; injectable so tests need no DNS. */
export interface ResolveFn {
  (name: string): Promise<{ address: string; ttl: number }[]>;
}

/** The resolver's settings. */
export interface HostResolverOptions {
  /** The host names the policy mentions. */
  names: readonly string[];
  resolve?: ResolveFn;
  /** The TTL, in seconds, when the lookup gives none (getaddrinfo, /etc/hosts). */
  defaultTtl?: number;
  /** How long to wait before retrying a failed name, in seconds. */
  retrySeconds?: number;
  /**
   * The longest one name's lookup may take, in milliseconds (default 3000): on a host whose DNS
   * server cannot be reached, the name counts as unresolved after this long.
   */
  lookupTimeoutMs?: number;
  now?: () => number;
}

/** The longest one name's lookup may take when none is given. */
export const LOOKUP_TIMEOUT_MS = 3000;

/**
 * Resolves the host names a policy mentions to IP sets, and re-resolves each on its TTL, so
 * that host allow and deny lists work on the addresses the network sensor sees. Failures are
 * counted; an unresolvable name simply matches no address. Lookups run in the background, each
 * bounded by `lookupTimeoutMs`: neither the start nor the end of a session waits on DNS (an
 * air-gapped host's resolver may never answer).
 */
export class HostResolver {
  readonly #options: HostResolverOptions;
  readonly #byIp = new Map<string, Resolved>();
  readonly #nextRefresh = new Map<string, number>();
  #failures = 0;
  /** Names whose latest lookup failed or timed out. */
  readonly #unresolved = new Set<string>();
  /** Names looked up at least once, with an answer or a failure. */
  readonly #tried = new Set<string>();
  #refreshing: Promise<void> | null = null;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** Sets up the resolver; nothing is looked up until `refresh()` or `start()`. */
  constructor(options: HostResolverOptions) {
    this.#options = options;
  }

  /** How many lookups failed so far. */
  get failures(): number {
    return this.#failures;
  }

  /** The policy names whose latest lookup failed or timed out, sorted. */
  unresolved(): string[] {
    return [...this.#unresolved].sort();
  }

  /** The policy names not looked up yet (a lookup still runs, or none started), sorted. */
  pending(): string[] {
    return this.#options.names.filter((n) => !this.#tried.has(n)).sort();
  }

  /** The policy names that resolve to an address, now. */
  namesFor(ip: string): string[] {
    const entry = this.#byIp.get(ip);
    const now = (this.#options.now ?? Date.now)();
    // An expired entry still answers until the refresh replaces it: a stale answer beats none.
    if (entry === undefined || entry.expires <= now - 60_000) return [];
    return [...entry.names];
  }

  /** Every policy name with the addresses it resolves to now (names not resolved yet: absent). */
  addresses(): Map<string, string[]> {
    const out = new Map<string, string[]>();
    const now = (this.#options.now ?? Date.now)();
    for (const [ip, entry] of this.#byIp) {
      if (entry.expires <= now - 60_000) continue;
      for (const name of entry.names) out.set(name, [...(out.get(name) ?? []), ip]);
    }
    return out;
  }

  /**
   * Resolves every name whose TTL has run out, each bounded by `lookupTimeoutMs`: a name whose
   * lookup takes longer counts as failed (its lookup is abandoned, and retried later). Resolves
   * when every name has an answer or a failure; `signal` ends the wait at once.
   */
  refresh(signal?: AbortSignal): Promise<void> {
    // One refresh at a time: a tick that comes while lookups still run joins them.
    this.#refreshing ??= this.#refreshOnce(signal).finally(() => this.#refreshing = null);
    return this.#refreshing;
  }

  async #refreshOnce(signal?: AbortSignal): Promise<void> {
    const now = (this.#options.now ?? Date.now)();
    const resolve = this.#options.resolve ?? defaultResolve;
    const timeoutMs = this.#options.lookupTimeoutMs ?? LOOKUP_TIMEOUT_MS;
    await Promise.all(this.#options.names.map(async (name) => {
      if ((this.#nextRefresh.get(name) ?? 0) > now) return;
      let answers: { address: string; ttl: number }[];
      try {
        answers = await bounded(resolve(name), { ms: timeoutMs, name, signal });
      } catch {
        if (signal?.aborted === true) return;
        this.#failures++;
        this.#unresolved.add(name);
        this.#tried.add(name);
        this.#nextRefresh.set(name, now + (this.#options.retrySeconds ?? 30) * 1000);
        return;
      }
      this.#tried.add(name);
      this.#unresolved.delete(name);
      let ttl = Infinity;
      for (const { address, ttl: t } of answers) {
        const seconds = t > 0 ? t : (this.#options.defaultTtl ?? 60);
        ttl = Math.min(ttl, seconds);
        let entry = this.#byIp.get(address);
        if (entry === undefined) {
          this.#byIp.set(address, entry = { names: new Set(), expires: 0 });
        }
        entry.names.add(name);
        entry.expires = Math.max(entry.expires, now + seconds * 1000);
      }
      this.#nextRefresh.set(name, now + (Number.isFinite(ttl) ? ttl : 60) * 1000);
    }));
  }

  /**
   * Starts looking names up in the background, now and then every few seconds (each name on
   * its own TTL), until aborted. Returns at once: nothing waits on the first answers, and the
   * abort abandons lookups still running.
   */
  start(signal: AbortSignal): Promise<void> {
    if (this.#options.names.length === 0 || signal.aborted) return Promise.resolve();
    const tick = () => {
      if (signal.aborted) return;
      this.refresh(signal).catch(() => {}).finally(() => {
        if (!signal.aborted) this.#timer = setTimeout(tick, 5000);
      });
    };
    tick();
    signal.addEventListener("abort", () => clearTimeout(this.#timer), { once: true });
    return Promise.resolve();
  }
}

/** How {@link bounded} bounds a lookup. */
interface BoundOptions {
  ms: number;
  name: string;
  signal: AbortSignal | undefined;
}

/** Waits for a lookup, but no longer than `ms` and not past an abort. */
function bounded<T>(lookup: Promise<T>, { ms, name, signal }: BoundOptions): Promise<T> {
  return new Promise<T>((resolve, reject) => {
    const done = () => {
      clearTimeout(timer);
      signal?.removeEventListener("abort", onAbort);
    };
    const onAbort = () => {
      done();
      reject(new Error(`The lookup of "${name}" was abandoned`));
    };
    const timer = setTimeout(() => {
      done();
      reject(new Error(`The lookup of "${name}" took more than ${ms} ms`));
    }, ms);
    signal?.addEventListener("abort", onAbort, { once: true });
    lookup.then((v) => {
      done();
      resolve(v);
    }, (e) => {
      done();
      reject(e);
    });
  });
}

async function defaultResolve(name: string): Promise<{ address: string; ttl: number }[]> {
  const dns = await import("node:dns");
  const out: { address: string; ttl: number }[] = [];
  // Both families at once: on a host whose DNS server is silent, each waits out its timeout.
  const [v4, v6] = await Promise.all([
    dns.promises.resolve4(name, { ttl: true }).catch(() => []),
    dns.promises.resolve6(name, { ttl: true }).catch(() => []),
  ]);
  out.push(...v4, ...v6);
  if (out.length === 0) {
    // /etc/hosts and other NSS sources: getaddrinfo gives no TTL.
    const all = await dns.promises.lookup(name, { all: true });
    for (const a of all) out.push({ address: a.address, ttl: 0 });
  }
  return out;
}
