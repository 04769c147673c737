import { type OutputsConfig, webhooksOf } from "../config/mod.ts";
import type { AgentEvent } from "../events/mod.ts";
import { VERSION } from "../version.ts";
import type { Lane, OutputStats } from "./_lane.ts";
import { type EventOrigin, OtlpLane } from "./otlp.ts";
import { WebhookLane } from "./webhook.ts";

/** What the outputs take from their surroundings; each has a default for production. */
export interface OutputDeps {
  /** This host's name in messages and the OTLP resource; defaults to `Deno.hostname()`. */
  host?: string;
  /** Sentry's version; defaults to the build's. */
  version?: string;
  /** The rate limit's clock, in milliseconds; defaults to `performance.now`. */
  now?: () => number;
  /** Back-off jitter, in [0, 1); defaults to `Math.random`. */
  random?: () => number;
  /**
   * Told once per output and kind of problem (queue full, delivery failed, rate limited,
   * rejected records), so that the operator hears of it without a flood.
   */
  onWarning?: (message: string) => void;
}

/** How {@link Outputs.close} ends. */
export interface CloseOptions {
  /** How long queued events may take to go out before the rest is dropped; default 5000. */
  timeoutMs?: number;
}

/** The outputs of one Sentry process: webhooks for alerts, OTLP for every event. */
export interface Outputs {
  /** False when no output is configured: `publish()` then does nothing. */
  readonly active: boolean;
  /**
   * Hands a decided event to every output whose threshold it meets. Cheap and never waits:
   * the event is queued, and a full queue drops it (counted).
   */
  publish(event: AgentEvent): void;
  /**
   * Hands an event the collector received from another host to the OTLP exporter, which
   * exports it under that host's `host.name` and `host.id`. Webhooks do not take it: alerts
   * are the business of the host that raised them.
   */
  publishFrom(event: AgentEvent, origin: EventOrigin): void;
  /** Delivers what is queued within the deadline, then stops. Idempotent; never throws. */
  close(options?: CloseOptions): Promise<void>;
  /** Each output's counters. */
  stats(): OutputStats[];
}

function hostname(): string {
  try {
    return Deno.hostname();
  } catch {
    return "unknown";
  }
}

/**
 * Starts the outputs a configuration names: each webhook and the OTLP exporter get their own
 * bounded queue and worker, so a slow or dead endpoint never slows the sensors, the journal or
 * the other outputs.
 */
export function createOutputs(config: OutputsConfig, deps: OutputDeps = {}): Outputs {
  const host = deps.host ?? hostname();
  const version = deps.version ?? VERSION;
  const random = deps.random ?? Math.random;
  const now = deps.now ?? (() => performance.now());
  const warn = deps.onWarning ?? (() => {});
  const hooks = webhooksOf(config);
  const lanes: Lane[] = [];
  let otlp: OtlpLane | null = null;
  const client = hooks.length > 0 || config.otlp !== undefined ? Deno.createHttpClient({}) : null;
  if (client !== null) {
    const single = !Array.isArray(config.webhook);
    hooks.forEach((hook, i) => {
      const name = hook.name ?? (single ? "webhook" : `webhook[${i}]`);
      lanes.push(new WebhookLane(hook, { name, host, version, now, random, client, warn }));
    });
    if (config.otlp !== undefined) {
      otlp = new OtlpLane(config.otlp, { host, version, random, client, warn });
      lanes.push(otlp);
    }
  }
  for (const lane of lanes) lane.start();
  let closing: Promise<void> | null = null;
  return {
    active: lanes.length > 0,
    publish(event) {
      for (const lane of lanes) lane.offer(event);
    },
    publishFrom(event, origin) {
      otlp?.offerFrom(event, origin);
    },
    close(options = {}) {
      closing ??= (async () => {
        const deadline = options.timeoutMs ?? 5_000;
        await Promise.all(lanes.map((lane) => lane.close(deadline)));
        client?.close();
      })();
      return closing;
    },
    stats() {
      return lanes.map((lane) => lane.stats());
    },
  };
}
