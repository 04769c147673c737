import { z } from "zod";
import { KINDS, RESPONSES } from "../events/mod.ts";

/** The largest batch the sync protocol accepts (docs/sync-protocol.md). */
export const MAX_SYNC_BATCH_EVENTS = 500;

/** A kind (`file.read`) or a family of kinds (`file.*`) that names at least one known kind. */
function isKindPattern(value: string): boolean {
  if (value.endsWith(".*")) return KINDS.some((k) => k.startsWith(value.slice(0, -1)));
  return (KINDS as readonly string[]).includes(value);
}

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
  /**
   * Only these kinds (`file.read`), or families (`file.*`); absent exports every kind. Checked
   * against the known kinds when the file is loaded, so a typo is an error, not a silent filter.
   */
  kinds: z.array(
    z.string().refine(
      isKindPattern,
      'must be a known kind or family, such as "file.read" or "file.*"',
    ),
  ).min(1).optional(),
  /** Only these verdicts; absent exports both. */
  verdicts: z.array(z.enum(["allow", "deny"])).min(1).optional(),
  /** Only these responses (`none`, `alert`, ...); absent exports every response. */
  responses: z.array(z.enum(RESPONSES)).min(1).optional(),
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

/** A duration as flags take it: `500ms`, `30s`, `10m`, `1h`, or a combination. */
const DurationText = z.string().regex(
  /^(?:\d+(?:\.\d+)?(?:ms|s|m|h))+$/,
  "must be a duration such as 30s, 10m or 1h",
);

/**
 * One agent that runs outside Sentry, for `sentry audit` to find and watch. A process matches
 * when every selector given matches; at least one selector is required.
 */
export const AuditTargetConfig = z.strictObject({
  /** The target's name in the audit's output. */
  name: z.string().min(1).max(100),
  /** A glob on the process name (`/proc/PID/comm`, or the base name of argv[0]). */
  process: z.string().min(1).optional(),
  /** A glob on the command line, its arguments joined by spaces. */
  cmdline: z.string().min(1).optional(),
  /** The process's real user: a name from /etc/passwd or a numeric uid. */
  user: z.union([z.string().min(1), z.number().int().min(0)]).optional(),
  /** A glob on the process's cgroup path (v2, or any v1 hierarchy). */
  cgroup: z.string().min(1).optional(),
  /** The policy to watch it under: a template name or a policy file. */
  policy: z.string().min(1).default("default"),
  /** Caps the response while watched; absent: the policy's mode. */
  mode: z.enum(["monitor", "alert", "block", "pause", "kill"]).optional(),
  /** How long to watch each match. */
  window: DurationText.default("10s"),
  /** Whether a target with no running match is a finding. */
  required: z.boolean().default(true),
  /** Matches watched at most, the oldest first. */
  max_matches: z.number().int().min(1).max(100).default(5),
}).refine(
  (t) =>
    t.process !== undefined || t.cmdline !== undefined || t.user !== undefined ||
    t.cgroup !== undefined,
  "give at least one of process, cmdline, user or cgroup",
);

/** One audit target, with defaults filled. */
export type AuditTargetConfig = z.infer<typeof AuditTargetConfig>;

/** `audit`: what `sentry audit` checks, and when it fails. */
export const AuditConfig = z.strictObject({
  /** The default `--fail-on`: a risk from 0 to 100, `deny` or `response`. */
  fail_on: z.union([z.number().int().min(0).max(100), z.enum(["deny", "response"])]).default(
    "deny",
  ),
  /** The default `--timeout`: the whole audit's time limit. */
  timeout: DurationText.default("5m"),
  /** Allowed events at or above this risk are findings too (denied ones always are). */
  min_risk: z.number().int().min(0).max(100).default(70),
  /** Agents running outside Sentry to find and watch. */
  targets: z.array(AuditTargetConfig).default([]),
  /** The host checks. */
  host: z.strictObject({
    /** Whether to run them at all. */
    enabled: z.boolean().default(true),
    /** Events waiting in the sync outbox above which the backlog is a finding. */
    max_sync_backlog: z.number().int().min(0).default(100_000),
    /** Bytes in the snapshot store above which its size is a finding. */
    max_store_bytes: z.number().int().min(0).default(10 * 1024 ** 3),
  }).prefault({}),
});

/** The `audit` section, with defaults filled. */
export type AuditConfig = z.infer<typeof AuditConfig>;

/** `server`: the collector's store, as `sentry server --store` and `--retain` give it. */
export const ServerConfig = z.strictObject({
  /** `sqlite` (the default: the data directory's journal) or a `postgres://` URL. */
  store: z.string().regex(
    /^(sqlite|postgres(ql)?:\/\/.+)$/i,
    'must be "sqlite" or a postgres:// URL',
  )
    .optional(),
  /** Keep events this long on PostgreSQL, such as `30d`; older day partitions are dropped. */
  retain: z.string().regex(/^[1-9][0-9]{0,4}[hdw]$/, "must be hours, days or weeks, such as 30d")
    .optional(),
});

/** The `server` section. */
export type ServerConfig = z.infer<typeof ServerConfig>;

/**
 * Sentry's configuration file, `config.yaml`. Every key is optional and unknown keys are
 * errors, so that a typo never silently turns a feature off.
 */
export const SentryConfig = z.strictObject({
  sync: SyncConfig.prefault({}),
  outputs: OutputsConfig.prefault({}),
  audit: AuditConfig.prefault({}),
  server: ServerConfig.prefault({}),
});

/** The configuration, with defaults filled. */
export type SentryConfig = z.infer<typeof SentryConfig>;

/** Every webhook of a configuration, whether it was written as one mapping or a list. */
export function webhooksOf(outputs: OutputsConfig): WebhookConfig[] {
  const webhook = outputs.webhook;
  if (webhook === undefined) return [];
  return Array.isArray(webhook) ? webhook : [webhook];
}
