/**
 * Sync: the API key and endpoint, the host's identity, the `hello` check, and the uploader
 * that drains the journal's outbox to a collector (docs/sync-protocol.md).
 *
 * @module
 */
export {
  API_KEY_VARIABLES,
  apiKeyProblem,
  type Credentials,
  CREDENTIALS_FILE,
  DEFAULT_ENDPOINT,
  ENDPOINT_VARIABLE,
  loadCredentials,
  type LoadCredentialsOptions,
  normalizeEndpoint,
  removeCredentials,
  saveCredentials,
  type SaveCredentialsOptions,
} from "./credentials.ts";
export {
  hello,
  HelloBody,
  type HelloOptions,
  type HelloResult,
  PROTOCOL_VERSION,
  SyncRequestError,
} from "./hello.ts";
export { HOST_ID_FILE, loadOrCreateHostId } from "./host_id.ts";
export {
  BACKOFF_BASE_MS,
  BACKOFF_MAX_MS,
  backoffDelay,
  type BackoffOptions,
  parseRetryAfter,
  RETRY_AFTER_MAX_MS,
} from "./backoff.ts";
export { MAX_BATCH_BYTES, MAX_BATCH_EVENTS, type SyncHost } from "./batch.ts";
export {
  createUploader,
  DEFAULT_LEASE_TTL_MS,
  DEFAULT_POLL_MS,
  DEFAULT_REQUEST_TIMEOUT_MS,
  DEFAULT_TRIM_EVERY_MS,
  type DrainOptions,
  type DrainResult,
  lastAttemptSucceeded,
  type SyncNotice,
  type Uploader,
  type UploaderOptions,
  type UploaderStatus,
} from "./uploader.ts";
export {
  DEFAULT_OUTBOX_MAX_EVENTS,
  type LeaseInfo,
  readSyncStatus,
  type RecordedStatus,
  type SyncFailure,
  type SyncStatus,
  type UploaderState,
} from "./sync_status.ts";
export {
  type ResolveSyncOptions,
  resolveSyncSettings,
  type SyncSection,
  type SyncSettings,
} from "./settings.ts";
export {
  BUNDLE_FORMAT,
  BUNDLE_MAC,
  BUNDLE_VERSION,
  BundleEncoder,
  BundleError,
  BundleHeader,
  type BundleItem,
  bundleKey,
  type BundleProblem,
  type BundleSink,
  type BundleSummary,
  BundleTrailer,
  exportBundle,
  type ExportBundleOptions,
  type ExportResult,
  IMPORT_BATCH,
  importBundle,
  type ImportBundleOptions,
  type ImportResult,
  MAX_LINE_BYTES,
  MIN_SIGN_KEY_BYTES,
  readBundle,
  type ReadBundleOptions,
  type SignatureStatus,
  storeBundle,
  type StoreBundleOptions,
  type VerifiedBundle,
  verifyBundle,
  type VerifyBundleOptions,
} from "./bundle.ts";
