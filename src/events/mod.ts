/**
 * The event schema: the spine of the system. Every other folder speaks {@link AgentEvent}.
 * @module
 */
export { AgentEvent, Decision, Observation, RiskFactor } from "./agent_event.ts";
export {
  FILE_KINDS,
  isFileKind,
  isNetKind,
  type Kind,
  KINDS,
  type Response,
  responseRank,
  RESPONSES,
} from "./kinds.ts";
export { createUlid, type UlidSources, ulidTime } from "./ulid.ts";
