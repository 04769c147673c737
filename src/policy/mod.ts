/**
 * The policy language and the engine: load YAML (with line and column errors), resolve
 * `extends`, apply inline flags, compile once, and evaluate events purely.
 * @module
 */
export {
  Backtest,
  type BacktestResult,
  type Change,
  type ChangeExample,
  type ChangeGroup,
  CHANGES,
  crossedFailOn,
  type FailOn,
  parseFailOn,
} from "./backtest.ts";
export { type CompileContext, type CompiledPolicy, compilePolicy } from "./compile.ts";
export { formatFieldPath, PolicyError } from "./errors.ts";
export {
  type AppliedException,
  type EventExplanation,
  explainAction,
  type ExplainedEntry,
  type ExplainEventOptions,
  explainJournaledEvent,
  type ExplainOptions,
  type ExplainSession,
  type Explanation,
  type JournaledReload,
  type SourceLocation,
} from "./explain.ts";
export { DURATION_PATTERN, parseDuration } from "./duration.ts";
export { compareVersions, sentryTooOld, VERSION_PATTERN } from "./versions.ts";
export { type Action, evaluate, explainMatches, type MatchedEntry } from "./evaluate.ts";
export {
  collapseHosts,
  type CollapseOptions,
  collapsePaths,
  LEARN_ROOTS,
  type LearnedProcess,
  type LearnerOptions,
  type LearnSession,
  type PathRoot,
  PolicyLearner,
  processEntry,
  registrableDomain,
  type RenderOptions,
  type SeenEndpoint,
  writePath,
} from "./learn.ts";
export {
  isTemplateName,
  type LoadOptions,
  loadPolicy,
  loadPolicyLayers,
  offsetOf,
  parsePolicy,
  readFailure,
  readTemplate,
  type SourcedLayer,
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
export { checkGlobSyntax, expandGlob, namedHosts, parseNetworkEntry } from "./patterns.ts";
export { POINTS } from "./risk.ts";
export {
  DEFAULT_DB_PORTS,
  type Mode,
  MODES,
  PolicyFile,
  type ResolvedPolicy,
  type Rule,
} from "./schema.ts";
