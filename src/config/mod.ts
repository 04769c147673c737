/**
 * Sentry's configuration file (`config.yaml`): where it is, its strict schema, and a loader
 * whose errors name the file, line, column and field, like the policy loader's.
 *
 * @module
 */
export { ConfigError, type ConfigErrorOptions } from "./errors.ts";
export { redactUrl } from "./redact.ts";
export {
  CONFIG_FILE,
  CONFIG_VARIABLE,
  configPath,
  DEFAULT_WEBHOOK_MIN_RESPONSE,
  expandVariables,
  fieldLine,
  loadConfig,
  type LoadConfigOptions,
  type LoadedConfig,
  parseConfig,
  type ParseConfigOptions,
} from "./loader.ts";
export {
  AuditConfig,
  AuditTargetConfig,
  MAX_SYNC_BATCH_EVENTS,
  OtlpConfig,
  OutputsConfig,
  SentryConfig,
  SyncConfig,
  WebhookConfig,
  webhooksOf,
} from "./schema.ts";
