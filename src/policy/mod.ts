/**
 * The policy language and the engine: load YAML (with line and column errors), resolve
 * `extends`, apply inline flags, compile once, and evaluate events purely.
 * @module
 */
export { type CompileContext, type CompiledPolicy, compilePolicy } from "./compile.ts";
export { formatFieldPath, PolicyError } from "./errors.ts";
export { DURATION_PATTERN, parseDuration } from "./duration.ts";
export { type Action, evaluate } from "./evaluate.ts";
export {
  isTemplateName,
  type LoadOptions,
  loadPolicy,
  offsetOf,
  parsePolicy,
  readFailure,
  readTemplate,
  TEMPLATES,
  valueAt,
} from "./loader.ts";
export {
  applyPatch,
  type InlinePatch,
  MONITOR_FLAGS,
  type MonitorFlag,
  splitList,
} from "./patch.ts";
export { expandGlob, namedHosts, parseNetworkEntry } from "./patterns.ts";
export { POINTS } from "./risk.ts";
export {
  DEFAULT_DB_PORTS,
  type Mode,
  MODES,
  PolicyFile,
  type ResolvedPolicy,
  type Rule,
} from "./schema.ts";
