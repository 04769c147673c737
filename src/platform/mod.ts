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
  identify,
  pidfdsAvailable,
  ProcessHandle,
  type ProcessRef,
  refOf,
  type SendFailure,
} from "./pidfd_linux.ts";
export {
  Cgroup,
  type CgroupCloseResult,
  cgroupDirectory,
  CgroupError,
  type CgroupEvents,
  type CgroupMount,
  type CgroupSpec,
  type CgroupVersion,
  findCgroupMounts,
  parseCgroupEvents,
  parseProcCgroup,
  type ProcCgroupEntry,
  SessionCgroup,
  type SessionCgroupOptions,
} from "./cgroup_linux.ts";
export {
  type GroupOptions,
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
export {
  describePtraceScope,
  type DirectoryProbe,
  type FanotifyProbe,
  hidesOtherUsers,
  type InotifyLimits,
  type LandlockProbe,
  parseProcMount,
  parseStraceVersion,
  parseSysctlInt,
  probeDirectory,
  probeFanotify,
  probeInotify,
  probeLandlock,
  probeProc,
  probeStrace,
  type ProcAccess,
  type ProcMount,
  type ProcPathAccess,
  readInotifyLimits,
  readPtraceScope,
  type StraceProbe,
} from "./probes_linux.ts";
export { loadOrCreateToken, TOKEN_FILE } from "./token.ts";
export {
  decodeSockaddr,
  EINPROGRESS,
  errnoName,
  formatIpv6,
  isPathOnly,
  type OpenAccess,
  openAccess,
  signalName,
  type Sockaddr,
} from "./kernel_abi.ts";
export {
  COUNTER,
  COUNTER_SLOTS,
  decodeRecord,
  type EbpfAction,
  type EbpfRecord,
  EV,
  F,
  HEADER_SIZE,
  procSelf,
  recordAction,
  RecordError,
  splitArgv,
  sumPerCpu,
  SYSCALL_NAMES,
} from "./ebpf_record.ts";
export {
  BPF_OBJECT_URL,
  DEFAULT_RING_BYTES,
  type EbpfCounters,
  EbpfError,
  EbpfTracer,
  type EbpfTracerOptions,
  openLibbpf,
} from "./ebpf_linux.ts";
export {
  DEFAULT_EVENTS as FANOTIFY_DEFAULT_EVENTS,
  FanotifyError,
  type FanotifyFeatures,
  FanotifyGroup,
  type FanotifyGroupOptions,
  type MarkedFilesystem,
  type UnmarkedFilesystem,
} from "./fanotify_linux.ts";
export {
  decodeFanotifyEvents,
  describeMask,
  FAN,
  type FanotifyEvent,
  type FileId,
  type MountEntry,
  parseMountInfo,
  planFilesystemMarks,
} from "./fanotify_record.ts";
export {
  PROC_EVENTS_ALL,
  PROC_EVENTS_TREE,
  ProcConnector,
  ProcConnectorError,
  type ProcConnectorOptions,
} from "./proc_connector_linux.ts";
export {
  decodeProcConnector,
  PROC_EVENT,
  type ProcConnectorRecord,
  SequenceGaps,
} from "./proc_connector_record.ts";
export { seccompAvailability } from "./seccomp_linux.ts";
export { InotifyError, InotifyGroup } from "./inotify_linux.ts";
export { decodeInotify, encodeInotify, IN, type InotifyRecord } from "./inotify_record.ts";
