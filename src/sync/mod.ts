/**
 * Sync: the API key and endpoint, the host's identity, the `hello` check and (soon) the
 * uploader that drains the journal's outbox to a collector (docs/sync-protocol.md).
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
