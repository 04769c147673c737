/**
 * The platform layer: every OS call Sentry makes (processes, /proc, sockets, signals, FFI).
 * Other folders import from here only.
 *
 * @module
 */

export {
  isCompiled,
  mainModulePath,
  selfCommand,
  type SelfCommandOptions,
} from "./self_command.ts";
export { configDir, dataDir, type DirOptions, ensureDataDir, type Env } from "./data_dir.ts";
export {
  parseLoadavgLastPid,
  parseSnmpActiveOpens,
  readLastPid,
  readTcpActiveOpens,
} from "./counters_linux.ts";
export {
  type AccessMode,
  accessMode,
  bootTimeMs,
  clockTicks,
  describeFlags,
  type ExeInfo,
  type FailureReason,
  type FdEntry,
  type Fdinfo,
  formatEndpoint,
  hasFlag,
  hasProcChildren,
  listChildren,
  type ListChildrenOptions,
  listFds,
  listPids,
  type NetProto,
  type NetSocket,
  OPEN_FLAGS,
  type OpenFlagName,
  pageSize,
  parseAuxv,
  parseBootTime,
  parseFdinfo,
  parseNetFile,
  parseStat,
  parseStatusUids,
  processStartMs,
  type ProcessStartOptions,
  type ProcResult,
  type ProcStat,
  readCmdline,
  readCwd,
  readExe,
  readFdinfo,
  readFdTarget,
  readNetNamespace,
  readNetSockets,
  readStat,
  readStatusUids,
  socketInode,
  type SocketState,
  type StatusUids,
} from "./proc_linux.ts";
export {
  isAlive,
  type KillOptions,
  type KillResult,
  killTree,
  processState,
  type ResumeResult,
  resumeTree,
  signalAll,
  type SignalAllResult,
  type SignalFailure,
  type StopOptions,
  type StopResult,
  stopTree,
} from "./signals_linux.ts";
export {
  decodeWaitStatus,
  type FfiAvailability,
  ffiAvailable,
  type FfiError,
  getProcessGroup,
  isChildSubreaper,
  lastFfiError,
  reapIfZombie,
  setChildSubreaper,
  setForegroundProcessGroup,
  type WaitResult,
} from "./prctl_linux.ts";
export { loadOrCreateToken, TOKEN_FILE } from "./token.ts";
