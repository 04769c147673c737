/**
 * The OTLP/HTTP JSON logs exporter: events become log records of an `ExportLogsServiceRequest`,
 * encoded with OTLP's JSON mapping of protobuf (lowerCamelCase keys, 64-bit integers as
 * decimal strings, enums as integers, no trace or span ids since events belong to no trace).
 *
 * @module
 */

import type { OtlpConfig } from "../config/mod.ts";
import type { AgentEvent, Response } from "../events/mod.ts";
import { postJson } from "./_http.ts";
import { Lane } from "./_lane.ts";
import { summarize } from "./summary.ts";
import { meetsThreshold } from "./threshold.ts";

/** An OTLP `AnyValue`: exactly one of its fields is set; none set means null. */
export type AnyValue =
  | { stringValue: string }
  | { boolValue: boolean }
  | { intValue: string }
  | { doubleValue: number }
  | { arrayValue: { values: AnyValue[] } }
  | { kvlistValue: { values: KeyValue[] } }
  | Record<string, never>;

/** An OTLP attribute. */
export interface KeyValue {
  key: string;
  value: AnyValue;
}

/** One OTLP log record, as Sentry fills it. */
export interface LogRecord {
  /** When the action was seen, in nanoseconds since the epoch, as a decimal string. */
  timeUnixNano: string;
  observedTimeUnixNano: string;
  severityNumber: number;
  severityText: string;
  body: { stringValue: string };
  attributes: KeyValue[];
}

/** The request body POSTed to the collector's `/v1/logs`. */
export interface ExportLogsServiceRequest {
  resourceLogs: {
    resource: { attributes: KeyValue[] };
    scopeLogs: {
      scope: { name: string; version: string };
      logRecords: LogRecord[];
    }[];
  }[];
}

/** Who is exporting: becomes the resource and the scope. */
export interface OtlpResource {
  serviceName: string;
  host: string;
  version: string;
  /** The host's id (`host.id`), when known: the collector sets it from the uploader. */
  hostId?: string;
  /** Extra resource attributes, such as `deployment.environment`. */
  attributes?: Readonly<Record<string, string>>;
}

/** OTLP severity numbers: INFO, WARN and ERROR are 9, 13 and 17. */
export const SEVERITY = { INFO: 9, WARN: 13, ERROR: 17 } as const;

/**
 * Maps an event's decision to an OTLP severity: an allowed action with no response is INFO;
 * an alert, or a denied action only recorded (monitor mode), is WARN; block, pause, rollback
 * and kill are ERROR.
 */
export function severityOf(event: AgentEvent): { number: number; text: string } {
  switch (event.response) {
    case "none":
      return event.verdict === "deny"
        ? { number: SEVERITY.WARN, text: "WARN" }
        : { number: SEVERITY.INFO, text: "INFO" };
    case "alert":
      return { number: SEVERITY.WARN, text: "WARN" };
    default:
      return { number: SEVERITY.ERROR, text: "ERROR" };
  }
}

/**
 * Encodes a value as an OTLP `AnyValue`: integers as `intValue` strings, other numbers as
 * `doubleValue` (non-finite ones as strings, which JSON cannot hold), arrays and objects as
 * `arrayValue` and `kvlistValue`, null as the empty value.
 */
export function toAnyValue(value: unknown): AnyValue {
  switch (typeof value) {
    case "string":
      return { stringValue: value };
    case "boolean":
      return { boolValue: value };
    case "bigint":
      return { intValue: value.toString() };
    case "number":
      if (Number.isSafeInteger(value)) return { intValue: String(value) };
      return Number.isFinite(value) ? { doubleValue: value } : { stringValue: String(value) };
    case "object":
      if (value === null) return {};
      if (Array.isArray(value)) return { arrayValue: { values: value.map(toAnyValue) } };
      return {
        kvlistValue: {
          values: Object.entries(value as Record<string, unknown>).map(([k, v]) => ({
            key: k,
            value: toAnyValue(v),
          })),
        },
      };
    default:
      return {};
  }
}

function attr(key: string, value: unknown): KeyValue {
  return { key, value: toAnyValue(value) };
}

/** Whole milliseconds since the epoch as OTLP's nanosecond decimal string. */
function nanos(ms: number): string {
  return ms === 0 ? "0" : `${Math.trunc(ms)}000000`;
}

/**
 * Encodes one event as a log record. Attributes follow OpenTelemetry's semantic conventions
 * where one exists (`process.*`), and live under `sentry.` otherwise.
 */
export function toLogRecord(event: AgentEvent): LogRecord {
  const severity = severityOf(event);
  const time = nanos(Date.parse(event.ts));
  const attributes = [
    attr("sentry.event.id", event.id),
    attr("sentry.event.kind", event.kind),
    attr("sentry.event.target", event.target),
    attr("sentry.event.verdict", event.verdict),
    attr("sentry.event.risk", event.risk),
    attr("sentry.event.rule", event.rule),
    attr("sentry.event.response", event.response),
    attr("sentry.event.sensor", event.sensor),
    attr("sentry.event.factors", event.factors),
    attr("sentry.session.id", event.session),
    attr("sentry.agent.name", event.agent),
  ];
  if (Object.keys(event.detail).length > 0) {
    attributes.push(attr("sentry.event.detail", event.detail));
  }
  if (event.pid !== null) attributes.push(attr("process.pid", event.pid));
  if (event.ppid !== null) attributes.push(attr("process.parent_pid", event.ppid));
  if (event.exe !== null) attributes.push(attr("process.executable.path", event.exe));
  if (event.cmdline.length > 0) attributes.push(attr("process.command_args", event.cmdline));
  return {
    timeUnixNano: time,
    // Sentry is the collection system: it observed the action when it recorded it.
    observedTimeUnixNano: time,
    severityNumber: severity.number,
    severityText: severity.text,
    body: { stringValue: summarize(event) },
    attributes,
  };
}

/** Builds the request for a batch: one resource, one `sentry` scope, a record per event. */
export function toExportLogsRequest(
  events: readonly AgentEvent[],
  resource: OtlpResource,
): ExportLogsServiceRequest {
  return { resourceLogs: [resourceLogsOf(events, resource)] };
}

function resourceLogsOf(
  events: readonly AgentEvent[],
  resource: OtlpResource,
): ExportLogsServiceRequest["resourceLogs"][number] {
  const attributes = [
    attr("service.name", resource.serviceName),
    attr("service.version", resource.version),
    attr("host.name", resource.host),
    ...(resource.hostId === undefined ? [] : [attr("host.id", resource.hostId)]),
    ...Object.entries(resource.attributes ?? {}).map(([k, v]) => attr(k, v)),
  ];
  return {
    resource: { attributes },
    scopeLogs: [{
      scope: { name: "sentry", version: resource.version },
      logRecords: events.map(toLogRecord),
    }],
  };
}

/**
 * Where the collector received an event from. Its exported record names the origin host as the
 * resource's `host.name` and `host.id`, not the collector's own.
 */
export interface EventOrigin {
  /** The host id the uploader sent (a ULID). */
  hostId: string;
  /** The host's name as it reported it. */
  hostName: string;
}

/**
 * Builds the request for a batch whose events come from several hosts: one `resourceLogs`
 * entry per origin, in the order each origin first appears. Events with no origin (`null`)
 * belong to `resource` itself.
 */
export function toExportLogsRequestByOrigin(
  items: readonly { event: AgentEvent; origin: EventOrigin | null }[],
  resource: OtlpResource,
): ExportLogsServiceRequest {
  const groups = new Map<string, { origin: EventOrigin | null; events: AgentEvent[] }>();
  for (const { event, origin } of items) {
    const key = origin === null ? "" : `${origin.hostId}\u0000${origin.hostName}`;
    let group = groups.get(key);
    if (group === undefined) {
      group = { origin, events: [] };
      groups.set(key, group);
    }
    group.events.push(event);
  }
  return {
    resourceLogs: [...groups.values()].map(({ origin, events }) =>
      resourceLogsOf(
        events,
        origin === null ? resource : { ...resource, host: origin.hostName, hostId: origin.hostId },
      )
    ),
  };
}

/** Which events the OTLP exporter takes: every filter given must pass; none given takes all. */
export interface OtlpFilter {
  min_risk?: number | undefined;
  min_response?: Response | undefined;
  /** Kinds (`file.read`) or families (`file.*`). */
  kinds?: readonly string[] | undefined;
  verdicts?: readonly AgentEvent["verdict"][] | undefined;
  responses?: readonly Response[] | undefined;
}

/** Tells whether an event passes the exporter's filters. Pure and cheap. */
export function passesOtlpFilter(event: AgentEvent, filter: OtlpFilter): boolean {
  if (!meetsThreshold(event, filter)) return false;
  if (filter.verdicts !== undefined && !filter.verdicts.includes(event.verdict)) return false;
  if (filter.responses !== undefined && !filter.responses.includes(event.response)) return false;
  if (filter.kinds !== undefined) {
    return filter.kinds.some((k) =>
      k.endsWith(".*") ? event.kind.startsWith(k.slice(0, -1)) : k === event.kind
    );
  }
  return true;
}

/**
 * The statuses OTLP/HTTP says to retry: 429, 502, 503 and 504. The specification ("Retryable
 * Response Codes") adds: "All other 4xx or 5xx response status codes MUST NOT be retried", so a
 * 500 or a 400 fails the batch at once. Network errors and timeouts carry no status and are
 * retried by {@link postJson}.
 */
export function isOtlpRetryable(status: number): boolean {
  return status === 429 || status === 502 || status === 503 || status === 504;
}

/** What an {@link OtlpLane} needs besides its configuration. */
export interface OtlpLaneOptions {
  host: string;
  version: string;
  random: () => number;
  client: Deno.HttpClient;
  warn: (message: string) => void;
}

/**
 * The OTLP exporter's lane: batches of up to `batch_size` events, sent when full or after
 * `flush_interval_ms`. A partial success counts its rejected records and is not retried.
 */
export class OtlpLane extends Lane {
  readonly #config: OtlpConfig;
  readonly #options: OtlpLaneOptions;
  readonly #resource: OtlpResource;

  /** Builds the lane; `start()` starts exporting. */
  constructor(config: OtlpConfig, options: OtlpLaneOptions) {
    super({
      name: "otlp",
      kind: "otlp",
      queueSize: config.queue_size,
      batchSize: config.batch_size,
      flushMs: config.flush_interval_ms,
      warn: options.warn,
    });
    this.#config = config;
    this.#options = options;
    this.#resource = {
      serviceName: config.service_name,
      host: options.host,
      version: options.version,
      attributes: config.resource_attributes,
    };
  }

  /** Origins of queued events the collector received, by object: released with the event. */
  readonly #origins = new WeakMap<AgentEvent, EventOrigin>();

  protected override accepts(event: AgentEvent): boolean {
    return passesOtlpFilter(event, this.#config);
  }

  /** Queues an event received from another host (the collector), exported under that host. */
  offerFrom(event: AgentEvent, origin: EventOrigin): void {
    this.#origins.set(event, origin);
    this.offer(event);
  }

  protected override async send(batch: AgentEvent[]): Promise<void> {
    const items = batch.map((event) => ({ event, origin: this.#origins.get(event) ?? null }));
    const body = JSON.stringify(toExportLogsRequestByOrigin(items, this.#resource));
    const result = await postJson(body, {
      url: this.#config.endpoint,
      headers: this.#config.headers,
      timeoutMs: this.#config.timeout_ms,
      maxRetries: this.#config.max_retries,
      backoffMs: this.#config.retry_backoff_ms,
      retryable: isOtlpRetryable,
      signal: this.abort.signal,
      random: this.#options.random,
      client: this.#options.client,
      onRetry: () => this.counters.retries++,
    });
    if (!result.ok) {
      this.counters.failed += batch.length;
      this.warnOnce("failed", `output "${this.name}": export failed: ${result.error}`);
      return;
    }
    const partial = partialSuccess(result.body);
    const rejected = Math.min(batch.length, partial.rejected);
    this.counters.rejected += rejected;
    this.counters.sent += batch.length - rejected;
    if (rejected > 0 || partial.message !== "") {
      this.warnOnce(
        "partial",
        `output "${this.name}": the collector rejected ${rejected} of ${batch.length} records${
          partial.message === "" ? "" : `: ${partial.message}`
        }`,
      );
    }
  }
}

/** Reads `partialSuccess` from an `ExportLogsServiceResponse`; an empty body is full success. */
export function partialSuccess(body: string): { rejected: number; message: string } {
  if (body.trim() === "") return { rejected: 0, message: "" };
  try {
    const parsed = JSON.parse(body) as {
      partialSuccess?: { rejectedLogRecords?: string | number; errorMessage?: string };
    };
    const rejected = Number(parsed.partialSuccess?.rejectedLogRecords ?? 0);
    return {
      rejected: Number.isFinite(rejected) && rejected > 0 ? Math.floor(rejected) : 0,
      message: String(parsed.partialSuccess?.errorMessage ?? "").slice(0, 200),
    };
  } catch {
    return { rejected: 0, message: "" };
  }
}
