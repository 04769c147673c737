/**
 * The responders: alert lines, and pausing, resuming and killing the agent's tree.
 * @module
 */
export { formatAlert, type Painter } from "./alert.ts";
export type {
  ControlResult,
  TreeControl,
  TreeKillOptions,
  TreeSignalOptions,
} from "./tree_control.ts";
