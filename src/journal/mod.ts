/**
 * The journal: Sentry's SQLite database (through `node:sqlite`) of sessions, events, responses
 * and sensor counters. It is the only part of Sentry that writes to the database; everything
 * else reads through its queries.
 *
 * @module
 */
export {
  Journal,
  JOURNAL_FILE,
  type JournalOptions,
  type JournalWrite,
  openJournal,
  type ReconcileOptions,
  SessionRefError,
} from "./journal.ts";
export {
  JournalVersionError,
  migrate,
  type MigrateOptions,
  type Migration,
  MIGRATIONS,
  SCHEMA_VERSION,
} from "./migrations.ts";
export {
  type EventFilter,
  type JournalMetrics,
  type KindCount,
  type ListSessionsOptions,
  type NewResponse,
  type NewSession,
  RESPONSE_ACTIONS,
  RESPONSE_OUTCOMES,
  type ResponseAction,
  type ResponseOutcome,
  type ResponseRecord,
  type SearchPage,
  type SensorStatsRecord,
  SESSION_KINDS,
  SESSION_STATES,
  type SessionHost,
  type SessionKind,
  SessionPatch,
  SessionRecord,
  type SessionState,
  type SessionSummary,
} from "./records.ts";
export {
  type NewPolicyReload,
  type PolicyReloadOutcome,
  type PolicyReloadRecord,
} from "./policy_reloads.ts";
export { searchWords } from "./_sql.ts";
export {
  DROPPED_KEY,
  type IngestBatch,
  IngestError,
  type IngestResult,
  LEASE_KEY,
  type OutboxItem,
  type OutboxStats,
  type SyncSession,
} from "./sync_records.ts";
