/**
 * Alert outputs: webhooks (JSON or Slack) and an OTLP/HTTP JSON logs exporter. Each output has
 * a bounded queue and its own worker, so publishing never blocks the sensors or the journal,
 * and every event that does not arrive is counted.
 *
 * @module
 */
export type { OutputStats } from "./_lane.ts";
export { type CloseOptions, createOutputs, type OutputDeps, type Outputs } from "./outputs.ts";
export {
  type AnyValue,
  type EventOrigin,
  type ExportLogsServiceRequest,
  isOtlpRetryable,
  type KeyValue,
  type LogRecord,
  type OtlpFilter,
  type OtlpResource,
  partialSuccess,
  passesOtlpFilter,
  SEVERITY,
  severityOf,
  toAnyValue,
  toExportLogsRequest,
  toExportLogsRequestByOrigin,
  toLogRecord,
} from "./otlp.ts";
export { summarize } from "./summary.ts";
export { meetsThreshold, type Threshold } from "./threshold.ts";
export { TokenBucket, type TokenBucketOptions } from "./token_bucket.ts";
export {
  jsonMessage,
  type MessageContext,
  type SlackBlock,
  type SlackMessage,
  slackMessage,
  type SlackText,
  type WebhookJsonMessage,
} from "./webhook.ts";
