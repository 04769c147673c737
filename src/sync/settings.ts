/**
 * Where sync settings come from, in one place for `sentry sync`, `sentry run` and `sentry
 * doctor`: the API key from the environment or `sentry login`, the endpoint, and the config
 * file's `sync` section (passed in, so this folder does not read the config file itself).
 *
 * @module
 */

import {
  type Credentials,
  DEFAULT_ENDPOINT,
  ENDPOINT_VARIABLE,
  loadCredentials,
  normalizeEndpoint,
} from "./credentials.ts";
import { MAX_BATCH_EVENTS } from "./batch.ts";
import { DEFAULT_OUTBOX_MAX_EVENTS } from "./sync_status.ts";

/** The config file's `sync` section, as far as sync reads it (every field optional). */
export interface SyncSection {
  enabled?: boolean;
  endpoint?: string | undefined;
  outbox_max_events?: number;
  batch_events?: number;
}

/** What the uploader runs with. */
export interface SyncSettings {
  /** False when the config says `sync.enabled: false`. */
  enabled: boolean;
  /** The key and where it came from, or null when there is none (sync is then off). */
  credentials: Credentials | null;
  /** The collector's base URL. */
  endpoint: string;
  /** Where the endpoint came from: `SENTRY_ENDPOINT`, `config`, `credentials` or `default`. */
  endpointSource: "env" | "config" | "credentials" | "default";
  outboxMaxEvents: number;
  batchEvents: number;
}

/** Options for {@link resolveSyncSettings}. */
export interface ResolveSyncOptions {
  env: Readonly<Record<string, string | undefined>>;
  /** The configuration directory, where `sentry login` keeps `credentials.json`. */
  configDir: string;
  /** The config file's `sync` section, when there is one. */
  section?: SyncSection;
}

/**
 * Resolves the sync settings. The endpoint is `SENTRY_ENDPOINT`, else the config's
 * `sync.endpoint`, else the one stored by `sentry login`, else the default.
 *
 * @throws {Error} when the credentials file is unreadable or malformed (see `loadCredentials`).
 * @throws {TypeError} when an endpoint is not a valid URL.
 */
export function resolveSyncSettings(options: ResolveSyncOptions): SyncSettings {
  const section = options.section ?? {};
  const credentials = loadCredentials({ env: options.env, configDir: options.configDir });
  const fromEnv = options.env[ENDPOINT_VARIABLE];
  let endpoint: string;
  let endpointSource: SyncSettings["endpointSource"];
  if (fromEnv !== undefined && fromEnv !== "") {
    endpoint = normalizeEndpoint(fromEnv);
    endpointSource = "env";
  } else if (section.endpoint !== undefined) {
    endpoint = normalizeEndpoint(section.endpoint);
    endpointSource = "config";
  } else {
    // No key means no credentials file either: then the default applies.
    endpoint = credentials?.endpoint ?? DEFAULT_ENDPOINT;
    endpointSource = endpoint === DEFAULT_ENDPOINT ? "default" : "credentials";
  }
  return {
    enabled: section.enabled ?? true,
    credentials: credentials === null ? null : { ...credentials, endpoint },
    endpoint,
    endpointSource,
    outboxMaxEvents: section.outbox_max_events ?? DEFAULT_OUTBOX_MAX_EVENTS,
    batchEvents: Math.min(MAX_BATCH_EVENTS, section.batch_events ?? MAX_BATCH_EVENTS),
  };
}
