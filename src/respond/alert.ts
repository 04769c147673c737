import type { AgentEvent } from "../events/mod.ts";

/** How an alert line is styled: a colour function (identity when colour is off). */
export type Painter = (text: string, color: "red" | "yellow" | "cyan" | "dim" | "bold") => string;

/**
 * Formats the one-line alert for a decided event: verdict, risk, kind, target, the acting
 * process, the rule and the response, so that an operator can act on it without the journal.
 */
export function formatAlert(event: AgentEvent, paint: Painter = (t) => t): string {
  const level = event.risk >= 60 ? "red" : event.risk >= 30 ? "yellow" : "cyan";
  const who = event.pid === null
    ? "unattributed"
    : `pid ${event.pid}${event.exe ? ` (${event.exe.slice(event.exe.lastIndexOf("/") + 1)})` : ""}`;
  const verdict = event.verdict === "deny" ? "DENY" : "ALERT";
  return [
    paint(`sentry: ${verdict}`, level),
    paint(`risk ${event.risk}`, "bold"),
    event.kind,
    JSON.stringify(event.target),
    `by ${who}`,
    paint(`rule ${event.rule}`, "dim"),
    `-> ${event.response}`,
  ].join(" ");
}
