/**
 * How events read in tables and alert lines: one line per cell whatever the agent's command
 * line holds, what a resource event measured, and which response was really taken.
 * @module
 */
import type { AgentEvent } from "../events/mod.ts";
import type { ResponseRecord } from "../journal/mod.ts";

/**
 * A value on one line: newlines, tabs, escape sequences and other control characters are shown
 * as escapes (`\n`, `\t`, `\x1b`), so a multi-line command line or a terminal escape cannot
 * break a table or repaint the terminal. A backslash is kept as it is.
 */
export function oneLine(text: string): string {
  // deno-lint-ignore no-control-regex
  return text.replace(/[\x00-\x1f\x7f-\x9f\u2028\u2029]/g, (ch) => {
    if (ch === "\n") return "\\n";
    if (ch === "\r") return "\\r";
    if (ch === "\t") return "\\t";
    const code = ch.charCodeAt(0);
    return code > 0xff
      ? `\\u${code.toString(16).padStart(4, "0")}`
      : `\\x${code.toString(16).padStart(2, "0")}`;
  });
}

/**
 * What a CPU spike or memory excursion measured: `: 99.2% CPU (peak 100%) for 3.9 s` (percent
 * of one core) or `: 2600 MB (peak 3500 MB) for 2.5 s`, with `, ongoing` when it was journaled
 * before its end, and the limit it broke when it carries one. Empty for other events.
 */
export function measuredText(detail: Record<string, unknown>): string {
  const n = (key: string) => typeof detail[key] === "number" ? detail[key] as number : null;
  const cpu = n("percent") !== null;
  const [value, peak, seconds] = [
    n("percent") ?? n("mb"),
    n("peak_percent") ?? n("peak_mb"),
    n("duration_seconds"),
  ];
  if (value === null) return "";
  const unit = cpu ? "% CPU" : " MB";
  const peakUnit = cpu ? "%" : " MB";
  const limit = cpu
    ? (n("limit_percent") === null
      ? ""
      : `, limit ${n("limit_percent")}%${
        n("limit_seconds") === null ? "" : ` for ${n("limit_seconds")} s`
      }`)
    : (n("limit_mb") === null ? "" : `, limit ${n("limit_mb")} MB`);
  return `: ${value}${unit}${peak === null ? "" : ` (peak ${peak}${peakUnit})`}${
    seconds === null ? "" : ` for ${seconds} s`
  }${detail.ongoing === true ? ", ongoing" : ""}${limit}`;
}

/** An event's target for a table: on one line, with what a resource event measured. */
export function targetCell(event: AgentEvent): string {
  const measured = event.kind.startsWith("resource.") ? measuredText(event.detail) : "";
  return oneLine(event.target + measured);
}

/** The responses journaled for each event, by event id. */
export function responsesByEvent(
  records: readonly ResponseRecord[],
): Map<string, ResponseRecord[]> {
  const out = new Map<string, ResponseRecord[]>();
  for (const r of records) {
    if (r.eventId === null) continue;
    let list = out.get(r.eventId);
    if (list === undefined) out.set(r.eventId, list = []);
    list.push(r);
  }
  return out;
}

/**
 * The response Sentry really took for an event, for the TAKEN column: the actions journaled for
 * it (`pause`, `block`, `kill`), each with its outcome when it did not succeed and what it fell
 * back to (`pause (instead of block)`); `-` when nothing was done (in shadow mode, `--mode
 * monitor`, the RESPONSE column says what the policy would have done). An event whose response
 * was skipped (the agent was paused or being killed already) shows `-`, which is what happened.
 */
export function takenCell(records: readonly ResponseRecord[]): string {
  const parts = records.map((r) => {
    const notes: string[] = [];
    if (r.outcome !== "ok") notes.push(r.outcome);
    if (typeof r.detail.fallback === "string" && r.detail.fallback !== r.action) {
      notes.push(`instead of ${r.action}`);
      return `${r.detail.fallback} (${notes.join(", ")})`;
    }
    return notes.length > 0 ? `${r.action} (${notes.join(", ")})` : r.action;
  });
  return parts.length > 0 ? parts.join(", ") : "-";
}
