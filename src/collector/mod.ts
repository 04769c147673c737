/**
 * The self-hostable collector, `sentry server`: it receives the sync protocol's batches
 * (docs/sync-protocol.md) from many hosts, each with its own API key, stores them in its own
 * journal, and serves the dashboard and API across hosts.
 *
 * ```ts
 * const journal = openJournal(join(dir, JOURNAL_FILE));
 * const keys = openKeyStore(dir);
 * const { key } = keys.add("laptop");
 * const app = createCollectorApp({ journal, keys });
 * Deno.serve({ hostname: "127.0.0.1", port: 0 }, app.fetch);
 * ```
 * @module
 */
export {
  type CollectorApiDeps,
  type CollectorApp,
  type CollectorDeps,
  createCollectorApp,
  type IngestedBatch,
  listHosts,
  remoteControls,
  SERVER_NAME,
} from "./app.ts";
export {
  BATCH_PROTOCOL,
  BatchBody,
  BatchError,
  type BatchLimits,
  DEFAULT_LIMITS,
  fieldPath,
  gunzipLimited,
  parseBatch,
} from "./batch.ts";
export {
  bindHost,
  HOST_BINDING_PREFIX,
  HOST_STATE_PREFIX,
  type HostBinding,
  hostBindingKey,
  type HostClaim,
  type HostRecord,
  hostStateKey,
  type HostVisit,
  parseHost,
  recordHostVisit,
  type StateSlots,
  unbindHost,
} from "./hosts.ts";
export {
  KEY_PREFIX,
  KeyError,
  type KeyInfo,
  KEYS_FILE,
  type KeyStore,
  type KeyStoreOptions,
  type NewKey,
  openKeyStore,
} from "./keys.ts";
export {
  type AcceptBatch,
  type AcceptResult,
  type CollectorStore,
  type HostSummary,
  isPostgresUrl,
  parseRetention,
  redactUrl,
  type RetainResult,
  StoreUnavailableError,
} from "./store.ts";
export {
  ingestBatch,
  journalSlots,
  listJournalHosts,
  openSqliteStore,
  type SqliteStore,
  type SqliteStoreOptions,
} from "./sqlite_store.ts";
export { openPostgresStore, type PostgresStore, type PostgresStoreOptions } from "./pg_store.ts";
export { storePoller, type StorePollerOptions } from "./store_api.ts";
