/**
 * The sensors: each watches one side of the agent and emits {@link SensorEvent}s, counting what
 * it could not see. They know nothing about policies.
 * @module
 */
export { Dedup } from "./dedup.ts";
export { FdSensor, type FdSensorOptions } from "./fd_sensor.ts";
export { NetSensor, type NetSensorOptions } from "./net_sensor.ts";
export type {
  FdFlagsView,
  FdView,
  Probe,
  ProcPlatform,
  ProcStatView,
  SocketView,
} from "./platform.ts";
export { type Member, ProcSensor, type ProcSensorOptions, sleep } from "./proc_sensor.ts";
export { ResourceSensor, type ResourceSensorOptions } from "./resource_sensor.ts";
export { HostResolver, type HostResolverOptions } from "./resolver.ts";
export {
  type BlindSpot,
  type Sensor,
  type SensorEvent,
  type SensorStats,
  StatsCounter,
} from "./sensor.ts";
export { type WatchRoot, WatchSensor, type WatchSensorOptions } from "./watch_sensor.ts";
export {
  type InspectProcess,
  type KernelAction,
  type KernelEventContext,
  type ProcessInfo,
  ProcessTable,
  toSensorEvent,
} from "./kernel_action.ts";
export { EbpfSensor, type EbpfSensorOptions, type KernelTracer } from "./ebpf_sensor.ts";
export {
  FanotifySensor,
  type FanotifySensorOptions,
  FileActions,
  programOf,
  TreeTracker,
} from "./fanotify_sensor.ts";
export {
  LAUNCH_COMMAND,
  type SeccompCounters,
  SeccompLaunchError,
  SeccompSensor,
  type SeccompSensorOptions,
  SeccompSupervisor,
} from "./seccomp_sensor.ts";
