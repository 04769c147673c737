/**
 * A watched agent, end to end: launch or attach, sensors, decisions, responses, journal, and
 * the controls and watchdog that act on a session from outside.
 * @module
 */
export {
  type ControlReport,
  killSession,
  pauseSession,
  ReloadError,
  reloadSession,
  type ReloadSessionOptions,
  resumeSession,
  type SessionTree,
  sessionTree,
} from "./control.ts";
export {
  formatPidsFile,
  parsePidsFile,
  type PidsFile,
  readPidsFile,
  writePidsFile,
} from "./pids_file.ts";
export {
  type AgentTree,
  epochMs,
  killAgent,
  pauseAgent,
  type PauseMechanism,
  type PauseOutcome,
  releaseAgentNow,
  resumeAgent,
  treeRefs,
} from "./tree_actions.ts";
export { launcherArgs, LaunchError, resolveCommand } from "./launch.ts";
export { linuxControl } from "./linux_control.ts";
export { journalRestore, protect, type Protection, type ProtectOptions } from "./protect.ts";
export { linuxPlatform } from "./linux_platform.ts";
export {
  checkReload,
  type LivePolicy,
  policyHash,
  type ReloadCheck,
  type ReloadCheckOptions,
  type ReloadRequest,
  reloadRequestPath,
  reloadResultPath,
  takeReloadRequest,
  widenings,
  writeReloadRequest,
  writeReloadResult,
} from "./reload.ts";
export {
  DEDUP_WINDOW_MS,
  type ManualRollback,
  type Notice,
  type ReloadResult,
  Session,
  type SessionConfig,
  type SessionDeps,
} from "./session.ts";
export {
  exitCodeOf,
  type FreezerRequest,
  FREEZERS,
  type Service,
  type ServiceContext,
  superviseAttach,
  SuperviseError,
  type SuperviseOptions,
  superviseRun,
} from "./supervise.ts";
export { runWatchdog, type WatchdogOptions } from "./watchdog.ts";
export { type WatchRootOptions, watchRoots } from "./watch_roots.ts";
export {
  inspectProcess,
  type KernelTier,
  openEbpfTier,
  openFanotifyTier,
  openSeccompTier,
  openTier,
  probeTiers,
  type Tier,
  TIER_SUMMARY,
  type TierContext,
  type TierCoverage,
  TierError,
  type TierLauncher,
  TierLaunchError,
  type TierOpener,
  tierOrder,
  type TierProbe,
  type TierRequest,
  TIERS,
  type TierSkip,
  trackTree,
} from "./tiers.ts";
export {
  dropEndRecord,
  endRecordPath,
  endRecords,
  readEndRecord,
  reserveEndRecord,
  writeEndRecord,
} from "./end_record.ts";
