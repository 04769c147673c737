import type { AgentEvent } from "../events/mod.ts";

/** The longest target kept in one-line summaries; command lines can be very long. */
const MAX_TARGET = 300;

/** Shortens text to `max` characters, marking the cut with an ellipsis. */
export function truncate(text: string, max: number): string {
  return text.length <= max ? text : `${text.slice(0, max - 1)}…`;
}

/** The acting process in words: `pid 4242 (cat)`, or `unattributed`. */
export function describeProcess(event: AgentEvent): string {
  if (event.pid === null) return "unattributed";
  const exe = event.exe === null ? "" : event.exe.slice(event.exe.lastIndexOf("/") + 1);
  return exe === "" ? `pid ${event.pid}` : `pid ${event.pid} (${exe})`;
}

/**
 * A one-line summary of a decided event, without colour: verdict, kind, target, risk, rule,
 * response and process. Used as the OTLP log body and the Slack fallback text.
 */
export function summarize(event: AgentEvent): string {
  return [
    event.verdict === "deny" ? "DENY" : "ALLOW",
    event.kind,
    JSON.stringify(truncate(event.target, MAX_TARGET)),
    `risk ${event.risk}`,
    `rule ${event.rule}`,
    `-> ${event.response}`,
    `by ${describeProcess(event)}`,
  ].join(" ");
}
