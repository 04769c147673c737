/**
 * What `run` and `attach` start beside a session: the local API, the alert outputs and (when
 * sync is configured) the uploader. Each is a `Service` that `supervise` starts after the
 * session is journaled, before the sensors and the agent, and closes after the sensors stopped.
 *
 * @module
 */

import { PortInUseError, startInstanceApi } from "../api/mod.ts";
import type { SentryConfig } from "../config/mod.ts";
import { createOutputs } from "../outputs/mod.ts";
import { loadOrCreateToken } from "../platform/mod.ts";
import {
  createUploader,
  lastAttemptSucceeded,
  loadOrCreateHostId,
  type SyncSettings,
} from "../sync/mod.ts";
import { type Notice, type Service, type ServiceContext, SuperviseError } from "../session/mod.ts";

/** What {@link sessionServices} starts. */
export interface SessionServicesOptions {
  /** The API's port, `"auto"`, or null for `--no-api`. */
  apiPort: number | "auto" | null;
  killGraceMs: number;
  config: SentryConfig;
  /** Sync's settings; the uploader runs when they hold a key and sync is enabled. */
  sync: SyncSettings;
  onNotice: (notice: Notice) => void;
}

/** Whether these settings turn sync on: a key, and `sync.enabled` not false. */
export function syncOn(sync: SyncSettings): boolean {
  return sync.enabled && sync.credentials !== null;
}

/** Builds the `services` hook of `superviseRun` and `superviseAttach`. */
export function sessionServices(
  options: SessionServicesOptions,
): (context: ServiceContext) => Promise<Service[]> {
  return async (context) => {
    const services: Service[] = [];
    try {
      const api = startApi(context, options);
      if (api !== null) services.push(api);
      const outputs = startOutputs(context, options);
      if (outputs !== null) services.push(outputs);
      const uploader = startUploader(context, options);
      if (uploader !== null) services.push(uploader);
    } catch (error) {
      for (const s of services.reverse()) await s.close();
      throw error;
    }
    return services;
  };
}

function startApi(context: ServiceContext, options: SessionServicesOptions): Service | null {
  if (options.apiPort === null) return null;
  const { session, journal, dataDir } = context;
  let api;
  try {
    api = startInstanceApi({
      journal,
      dataDir,
      session,
      token: loadOrCreateToken(dataDir),
      port: options.apiPort,
      killGraceMs: options.killGraceMs,
    });
  } catch (error) {
    if (error instanceof PortInUseError) {
      throw new SuperviseError(
        `${error.message}: choose another with --api-port, use --api-port auto, or --no-api`,
      );
    }
    throw error;
  }
  options.onNotice({
    type: "info",
    message: `API and dashboard at ${api.url} (token: sentry token)`,
  });
  return api;
}

/**
 * The alert outputs of the config file, fed with every decided event. At the end, what they
 * could not deliver is saved with the session's sensor counters as blind spots, so a report
 * shows alerts that never left the host.
 */
function startOutputs(context: ServiceContext, options: SessionServicesOptions): Service | null {
  const outputs = createOutputs(options.config.outputs, {
    onWarning: (message) => options.onNotice({ type: "warn", message }),
  });
  if (!outputs.active) return null;
  const { session, journal } = context;
  const unsubscribe = session.onEvent((event) => outputs.publish(event));
  return {
    async close() {
      unsubscribe();
      await outputs.close({ timeoutMs: 5000 });
      const stats = outputs.stats().map((s) => ({
        sensor: `output.${s.name}`,
        emitted: s.sent,
        dropped: s.dropped + s.failed,
        deduplicated: 0,
        lagMs: 0,
        polls: s.queued,
        blindSpots: [
          { id: "output_failed", reason: "events whose delivery failed", count: s.failed },
          {
            id: "output_dropped",
            reason: "events dropped: queue full or shutdown",
            count: s.dropped,
          },
          {
            id: "output_rejected",
            reason: "records the receiver rejected (OTLP partial success)",
            count: s.rejected,
          },
          {
            id: "output_rate_limited",
            reason: "alerts folded into a later message by the rate limit",
            count: s.rateLimited,
          },
        ].filter((b) => b.count > 0),
      }));
      journal.putSensorStats(session.config.id, stats);
      const lost = stats.reduce((n, s) => n + s.dropped, 0);
      if (lost > 0) {
        options.onNotice({
          type: "warn",
          message:
            `${lost} event(s) could not be delivered to the configured outputs (see sentry report)`,
        });
      }
    },
  };
}

/**
 * The uploader, draining the outbox to the collector in the background while the session runs
 * (sharing the upload with other Sentry processes through the journal's lease). At the end it
 * gets two seconds to send the session's last events when the collector was answering; what is
 * left waits in the outbox for the next Sentry or `sentry sync now`.
 */
function startUploader(context: ServiceContext, options: SessionServicesOptions): Service | null {
  const { sync } = options;
  if (!syncOn(sync) || sync.credentials === null) return null;
  const { journal, dataDir } = context;
  const uploader = createUploader(journal, {
    endpoint: sync.endpoint,
    apiKey: sync.credentials.apiKey,
    host: { id: loadOrCreateHostId(dataDir), name: Deno.hostname() },
    batchEvents: sync.batchEvents,
    outboxMaxEvents: sync.outboxMaxEvents,
    onNotice: (n) => options.onNotice({ type: "warn", message: `sync: ${n.message}` }),
  });
  const running = uploader.start();
  options.onNotice({ type: "info", message: `syncing events to ${sync.endpoint}` });
  return {
    async close() {
      journal.flush();
      // The session's last events and its end go out now: up to 2 s while uploads succeed, and
      // a short try after a failure (an error recorded once, even a run ago, must not keep
      // every later session's end from the collector; a collector still down costs 0.5 s).
      await uploader.drainNow({ timeoutMs: lastAttemptSucceeded(uploader.status()) ? 2000 : 500 });
      await uploader.close();
      await running;
    },
  };
}
