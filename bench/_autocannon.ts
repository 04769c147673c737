/**
 * The load generator of the load benchmark, in its own process so that it does not share the
 * server's event loop: one bounded `autocannon` run against a loopback URL.
 *
 * Usage: deno run -A bench/_autocannon.ts '<LoadConfig as JSON>'
 * Prints one line of JSON: a {@link LoadResult}.
 *
 * @module
 */
import autocannon from "autocannon";

/** What the run is told, as JSON in the first argument. */
export interface LoadConfig {
  url: string;
  headers?: Record<string, string>;
  connections: number;
  /** Seconds. */
  duration: number;
}

/** What the run measured. */
export interface LoadResult {
  /** Requests per second, mean over the run's seconds. */
  rps: number;
  total: number;
  /** Latency in ms. */
  latency: { mean: number; p50: number; p99: number; max: number };
  non2xx: number;
  errors: number;
  timeouts: number;
  /** Response bytes per second. */
  bytesPerSecond: number;
}

async function main(): Promise<void> {
  const config = JSON.parse(Deno.args[0] ?? "{}") as LoadConfig;
  const result = await autocannon({
    url: config.url,
    connections: config.connections,
    duration: config.duration,
    ...(config.headers === undefined ? {} : { headers: config.headers }),
  });
  const out: LoadResult = {
    rps: result.requests.average,
    total: result.requests.total,
    latency: {
      mean: result.latency.average,
      p50: result.latency.p50,
      p99: result.latency.p99,
      max: result.latency.max,
    },
    non2xx: result.non2xx,
    errors: result.errors,
    timeouts: result.timeouts,
    bytesPerSecond: result.throughput.average,
  };
  Deno.stdout.writeSync(new TextEncoder().encode(JSON.stringify(out) + "\n"));
}

if (import.meta.main) await main();
