/**
 * A real collector (`createCollectorApp` over its own journal and key store) served over HTTP on
 * 127.0.0.1 from the test process, for the `login` and `doctor` end-to-end tests: the CLI runs
 * in a subprocess and talks to it over a real socket.
 * @module
 */
import { join } from "node:path";
import { createCollectorApp, type KeyStore, openKeyStore } from "../src/collector/mod.ts";
import { type Journal, JOURNAL_FILE, openJournal } from "../src/journal/mod.ts";

/** A running loopback collector. */
export interface LoopbackCollector {
  /** The endpoint, such as `http://127.0.0.1:40123`. */
  endpoint: string;
  keys: KeyStore;
  /** A valid key named `laptop`. */
  key: string;
  /** The collector's own journal, where uploads land. */
  journal: Journal;
  /** Stops the server and deletes the collector's files. */
  close(): Promise<void>;
}

/** Options for {@link startCollector}. */
export interface StartCollectorOptions {
  /** Added to the collector's clock, to make a host look skewed. */
  clockOffsetMs?: number;
}

/** Starts a collector on a free loopback port, with one key. */
export function startCollector(options: StartCollectorOptions = {}): LoopbackCollector {
  const dir = Deno.makeTempDirSync({ prefix: "sentry-collector-e2e-" });
  const journal = openJournal(join(dir, JOURNAL_FILE), { hostname: "collector" });
  const keys = openKeyStore(dir);
  const key = keys.add("laptop").key;
  const offset = options.clockOffsetMs ?? 0;
  const app = createCollectorApp({ journal, keys, now: () => Date.now() + offset });
  const server = Deno.serve({ hostname: "127.0.0.1", port: 0, onListen: () => {} }, app.fetch);
  return {
    endpoint: `http://127.0.0.1:${server.addr.port}`,
    keys,
    key,
    journal,
    async close() {
      await server.shutdown();
      app.close();
      journal.close();
      Deno.removeSync(dir, { recursive: true });
    },
  };
}

/** Runs `fn` with a collector, and always stops it. */
export async function withCollector(
  fn: (c: LoopbackCollector) => Promise<void>,
  options: StartCollectorOptions = {},
): Promise<void> {
  const c = startCollector(options);
  try {
    await fn(c);
  } finally {
    await c.close();
  }
}

/** A loopback port with nothing listening on it (it was free a moment ago). */
export function closedPort(): number {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (listener.addr as Deno.NetAddr).port;
  listener.close();
  return port;
}
