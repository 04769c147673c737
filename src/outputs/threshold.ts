import { type AgentEvent, type Response, responseRank } from "../events/mod.ts";

/** Which events an output takes. Every threshold given must be met; none given takes all. */
export interface Threshold {
  /** The least risk, 0 to 100. */
  min_risk?: number | undefined;
  /** The least response, in the order of `RESPONSES` (none < alert < block < pause ...). */
  min_response?: Response | undefined;
}

/** Tells whether an event is at or above an output's threshold. Cheap: no allocation. */
export function meetsThreshold(event: AgentEvent, threshold: Threshold): boolean {
  if (threshold.min_risk !== undefined && event.risk < threshold.min_risk) return false;
  if (
    threshold.min_response !== undefined &&
    responseRank(event.response) < responseRank(threshold.min_response)
  ) {
    return false;
  }
  return true;
}
