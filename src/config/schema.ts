import { z } from "zod";
import { RESPONSES } from "../events/mod.ts";

/** The largest batch the sync protocol accepts (docs/sync-protocol.md). */
export const MAX_SYNC_BATCH_EVENTS = 500;

/** Integer milliseconds within a range. */
function millis(min: number, max: number, fallback: number) {
  return z.number().int().min(min).max(max).default(fallback);
}

/**
 * HTTP headers sent with every request, such as `Authorization`. Values may reference
 * environment variables as `${NAME}`, expanded when the file is loaded.
 */
const Headers = z.record(
  z.string().regex(/^[!#$%&'*+.^_`|~0-9A-Za-z-]+$/, "must be a valid HTTP header name"),
  z.string(),
).default({});

/** `sync`: the uploader that drains the journal's outbox to a collector. */
export const SyncConfig = z.strictObject({
  /** Whether the uploader runs at all. */
  enabled: z.boolean().default(true),
  /** The collector's base URL; when absent, `sentry login` or `SENTRY_ENDPOINT` decide. */
  endpoint: z.string().min(1).optional(),
  /** The outbox's cap: past it, the oldest events are dropped (and counted). */
  outbox_max_events: z.number().int().min(1_000).max(1_000_000_000).default(1_000_000),
  /** Events per upload batch, at most the protocol's 500. */
  batch_events: z.number().int().min(1).max(MAX_SYNC_BATCH_EVENTS).default(500),
});

/** The `sync` section, with defaults filled. */
export type SyncConfig = z.infer<typeof SyncConfig>;

/** Which events an output takes: every given threshold must be met. */
const Threshold = {
  /** Events with at least this risk (0 to 100). */
  min_risk: z.number().int().min(0).max(100).optional(),
  /** Events whose response is at least this one: none < alert < block < pause < rollback < kill. */
  min_response: z.enum(RESPONSES).optional(),
};

/** The webhook's token bucket: `burst` messages at once, refilled at `per_minute`. */
const RateLimit = z.strictObject({
  per_minute: z.number().int().min(1).max(60_000).default(30),
  burst: z.number().int().min(1).max(10_000).default(10),
});

/** One webhook: a JSON POST per alert at or above its threshold. */
export const WebhookConfig = z.strictObject({
  /** A label for stats and warnings; defaults to `webhook` or `webhook[N]`. */
  name: z.string().min(1).max(100).optional(),
  /** Where to POST; may reference `${VARIABLES}` (Slack URLs hold a secret). */
  url: z.string().min(1),
  /** `json`: Sentry's own envelope. `slack`: a Slack-compatible `{ text, blocks }` message. */
  format: z.enum(["json", "slack"]).default("json"),
  ...Threshold,
  headers: Headers,
  /** One attempt's time limit. */
  timeout_ms: millis(100, 600_000, 5_000),
  /** Attempts after the first, on network errors, timeouts, 5xx and 429. */
  max_retries: z.number().int().min(0).max(20).default(3),
  /** The first back-off; it doubles on each retry (with jitter), up to 30 s. */
  retry_backoff_ms: millis(1, 60_000, 500),
  rate_limit: RateLimit.prefault({}),
  /** Alerts waiting to be sent; past it, alerts are dropped and counted. */
  queue_size: z.number().int().min(1).max(100_000).default(1_000),
});

/** One webhook, with defaults filled. */
export type WebhookConfig = z.infer<typeof WebhookConfig>;

/** The OTLP/HTTP JSON logs exporter, for an OpenTelemetry Collector. */
export const OtlpConfig = z.strictObject({
  /** The logs URL, such as `http://127.0.0.1:4318/v1/logs`; a bare host gets `/v1/logs`. */
  endpoint: z.string().min(1),
  headers: Headers,
  /** Events with at least this risk; 0 exports every event. */
  min_risk: z.number().int().min(0).max(100).default(0),
  min_response: Threshold.min_response,
  /** `service.name` of the exported resource. */
  service_name: z.string().min(1).default("sentry"),
  /** More resource attributes, such as `deployment.environment`. */
  resource_attributes: z.record(z.string().min(1), z.string()).default({}),
  /** Log records per request. */
  batch_size: z.number().int().min(1).max(10_000).default(512),
  /** How long a partial batch waits for more events. */
  flush_interval_ms: millis(1, 60_000, 1_000),
  timeout_ms: millis(100, 600_000, 10_000),
  /** Attempts after the first, on network errors, timeouts, 429, 502, 503 and 504. */
  max_retries: z.number().int().min(0).max(20).default(5),
  retry_backoff_ms: millis(1, 60_000, 500),
  queue_size: z.number().int().min(1).max(1_000_000).default(10_000),
});

/** The OTLP exporter, with defaults filled. */
export type OtlpConfig = z.infer<typeof OtlpConfig>;

/** `outputs`: where alerts and events go besides the journal. */
export const OutputsConfig = z.strictObject({
  /** One webhook, or a list of them. */
  webhook: z.union([WebhookConfig, z.array(WebhookConfig)]).optional(),
  otlp: OtlpConfig.optional(),
});

/** The `outputs` section, with defaults filled. */
export type OutputsConfig = z.infer<typeof OutputsConfig>;

/**
 * Sentry's configuration file, `config.yaml`. Every key is optional and unknown keys are
 * errors, so that a typo never silently turns a feature off.
 */
export const SentryConfig = z.strictObject({
  sync: SyncConfig.prefault({}),
  outputs: OutputsConfig.prefault({}),
});

/** The configuration, with defaults filled. */
export type SentryConfig = z.infer<typeof SentryConfig>;

/** Every webhook of a configuration, whether it was written as one mapping or a list. */
export function webhooksOf(outputs: OutputsConfig): WebhookConfig[] {
  const webhook = outputs.webhook;
  if (webhook === undefined) return [];
  return Array.isArray(webhook) ? webhook : [webhook];
}
