/**
 * The local status API: a Hono app (built by {@link createApp}, served by the CLI), its live
 * event sources and its security gates.
 *
 * ```ts
 * const journal = openJournal(join(dir, JOURNAL_FILE));
 * const live = journalPoller(journal);
 * const app = createApp({
 *   journal, dataDir: dir, token: loadOrCreateToken(dir), live,
 *   allowedHosts: allowedHostsFor("127.0.0.1", 7070),
 * });
 * Deno.serve({ hostname: "127.0.0.1", port: 7070 }, app.fetch);
 * ```
 * @module
 */
export {
  type AppDeps,
  type AppOptions,
  createApp,
  type ReaderAppDeps,
  SEARCH_WALK,
  type SentryApp,
} from "./app.ts";
export { type ApiReader, journalReader } from "./reader.ts";
export { limitBody, type LimitBodyOptions, readAtMost, SMALL_BODY_LIMIT } from "./body_limit.ts";
export { allowedHostsFor, bearerAuth, hostGuard, tokenMatches } from "./auth.ts";
export {
  defaultControls,
  type DefaultControlsOptions,
  type RollbackRequest,
  type SessionControls,
} from "./control.ts";
export { HttpError, parseInput, UnavailableError } from "./errors.ts";
export { dashboardRoutes } from "./dashboard.ts";
export {
  createLiveHub,
  type JournalPoller,
  journalPoller,
  type JournalPollerOptions,
  type LiveHub,
  type LiveSource,
  ulidFloor,
} from "./live.ts";
export {
  type ApiRegistration,
  AUTO_PORT_SPAN,
  autoPorts,
  DEFAULT_API_PORT,
  type InstanceApi,
  type InstanceApiOptions,
  listen,
  type Listener,
  type ListenOptions,
  mergeLive,
  PortInUseError,
  readApiRegistry,
  startInstanceApi,
  stopServing,
} from "./instance.ts";
export { openApiDocument } from "./openapi.ts";
export * from "./schemas.ts";
