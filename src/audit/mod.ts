/**
 * Scheduled audits: the window since the last audit (a watermark in the journal), its
 * findings and when they fail the audit, agents running outside Sentry (targets), the host
 * checks, the report's stable schema, the lock that keeps audits from overlapping, and the
 * cron, systemd and launchd entries that run `sentry audit`.
 *
 * @module
 */
export { type AtomicWriteOptions, openAtomic, writeFileAtomic } from "./atomic.ts";
export {
  type CollectedFindings,
  collectFindings,
  type CollectOptions,
  ENFORCING,
  eventFails,
  type FailOn,
  type Finding,
  type FindingType,
  parseFailOn,
  responseFails,
} from "./findings.ts";
export { backlogCheck, directoryBytes, storeCheck } from "./host.ts";
export {
  acquireAuditLock,
  AUDIT_LOCK_FILE,
  type AuditLock,
  AuditLockedError,
  type LockOptions,
} from "./lock.ts";
export {
  AUDIT_EXIT,
  AUDIT_SCHEMA,
  type AuditReport,
  type HostCheck,
  type SessionReport,
  summaryLines,
  type TargetReport,
} from "./report.ts";
export {
  CARRIED_VARIABLES,
  CRON_BEGIN,
  CRON_END,
  cronBlock,
  cronFields,
  describeWhen,
  type EntrySpec,
  findCronBlock,
  LAUNCHD_LABEL,
  launchdPlist,
  parseAt,
  parseEvery,
  replaceCronBlock,
  scheduleEnv,
  type Scheduler,
  SCHEDULERS,
  shellQuote,
  systemdQuote,
  systemdUnits,
  UNIT_NAME,
  type When,
} from "./schedule.ts";
export {
  type ChangeResult,
  entryDir,
  entryFiles,
  findEntry,
  type InstalledEntry,
  installEntry,
  type Placement,
  removeEntry,
} from "./schedule_install.ts";
export {
  compileTarget,
  findMatches,
  globToRegExp,
  parsePasswd,
  type ProcessInfo,
  readProcesses,
  type TargetMatcher,
  type WatchOptions,
  watchProcess,
  type WatchResult,
} from "./targets.ts";
export {
  type AuditWindow,
  LAST_AUDIT_KEY,
  type LastAudit,
  parseLastAudit,
  resolveWindow,
  SETTLE_MS,
  WATERMARK_KEY,
  type WindowInput,
  type WindowSource,
} from "./window.ts";
