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
  now?: () => number;
}

/**
 * Resolves the host names a policy mentions to IP sets, and re-resolves each on its TTL, so
 * that host allow and deny lists work on the addresses the network sensor sees. Failures are
 * counted; an unresolvable name simply matches no address.
 */
export class HostResolver {
  readonly #options: HostResolverOptions;
  readonly #byIp = new Map<string, Resolved>();
  readonly #nextRefresh = new Map<string, number>();
  #failures = 0;
  #timer: ReturnType<typeof setTimeout> | undefined;

  /** Sets up the resolver; nothing is looked up until `refresh()` or `start()`. */
  constructor(options: HostResolverOptions) {
    this.#options = options;
  }

  /** How many lookups failed so far. */
  get failures(): number {
    return this.#failures;
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

  /** Resolves every name whose TTL has run out. */
  async refresh(): Promise<void> {
    const now = (this.#options.now ?? Date.now)();
    const resolve = this.#options.resolve ?? defaultResolve;
    await Promise.all(this.#options.names.map(async (name) => {
      if ((this.#nextRefresh.get(name) ?? 0) > now) return;
      try {
        const answers = await resolve(name);
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
      } catch {
        this.#failures++;
        this.#nextRefresh.set(name, now + (this.#options.retrySeconds ?? 30) * 1000);
      }
    }));
  }

  /** Refreshes now and then every few seconds (each name on its own TTL) until aborted. */
  async start(signal: AbortSignal): Promise<void> {
    if (this.#options.names.length === 0) return;
    await this.refresh();
    const tick = () => {
      if (signal.aborted) return;
      this.refresh().finally(() => {
        if (!signal.aborted) this.#timer = setTimeout(tick, 5000);
      });
    };
    this.#timer = setTimeout(tick, 5000);
    signal.addEventListener("abort", () => clearTimeout(this.#timer), { once: true });
  }
}

async function defaultResolve(name: string): Promise<{ address: string; ttl: number }[]> {
  const dns = await import("node:dns");
  const out: { address: string; ttl: number }[] = [];
  const v4 = await dns.promises.resolve4(name, { ttl: true }).catch(() => []);
  const v6 = await dns.promises.resolve6(name, { ttl: true }).catch(() => []);
  out.push(...v4, ...v6);
  if (out.length === 0) {
    // /etc/hosts and other NSS sources: getaddrinfo gives no TTL.
    const all = await dns.promises.lookup(name, { all: true });
    for (const a of all) out.push({ address: a.address, ttl: 0 });
  }
  return out;
}
