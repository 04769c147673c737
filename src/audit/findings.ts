/**
 * What an audit finds in the journal: the violations and responses of a window, across
 * sessions, and which of them meet the `--fail-on` threshold.
 *
 * @module
 */

import type { AgentEvent } from "../events/mod.ts";
import type { Journal, ResponseRecord } from "../journal/mod.ts";
import { summarize } from "../outputs/mod.ts";

/** When an audit fails: at a risk (0 to 100), on any denial, or on any enforcing response. */
export type FailOn = number | "deny" | "response";

/** The responses that stop or undo something, as opposed to `alert` and bookkeeping. */
export const ENFORCING = ["block", "pause", "rollback", "kill"] as const;

/**
 * Parses `--fail-on`: a whole number from 0 to 100, `deny` or `response`.
 *
 * @throws {RangeError} for anything else.
 */
export function parseFailOn(text: string): FailOn {
  const value = text.trim();
  if (value === "deny" || value === "response") return value;
  if (/^\d{1,3}$/.test(value) && Number(value) <= 100) return Number(value);
  throw new RangeError(
    `Invalid --fail-on "${text}": give a risk from 0 to 100, "deny" or "response"`,
  );
}

/** What kind of thing a finding is. */
export type FindingType = "event" | "response" | "target" | "host";

/**
 * One thing the audit found. `failing` says whether it meets the fail-on threshold (and so
 * makes the audit exit 1).
 */
export interface Finding {
  type: FindingType;
  failing: boolean;
  /** The event's risk (for a response, its event's), or null. */
  risk: number | null;
  /** One line for people. */
  summary: string;
  session: string | null;
  ts: string | null;
  /** The event, for `event` findings. */
  event?: AgentEvent;
  /** The response, for `response` findings. */
  response?: ResponseRecord;
  /** The target's name, for `target` findings. */
  target?: string;
  /** The check's id, for `host` findings. */
  check?: string;
}

/** Whether an event meets the fail-on threshold. */
export function eventFails(event: AgentEvent, failOn: FailOn): boolean {
  if (typeof failOn === "number") return event.risk >= failOn;
  if (failOn === "deny") return event.verdict === "deny";
  return (ENFORCING as readonly string[]).includes(event.response);
}

/**
 * Whether a recorded response meets the fail-on threshold: only enforcing ones can, and at a
 * risk threshold only when the event that triggered it reached that risk.
 */
export function responseFails(
  response: ResponseRecord,
  failOn: FailOn,
  risk: number | null,
): boolean {
  if (!(ENFORCING as readonly string[]).includes(response.action)) return false;
  if (typeof failOn === "number") return risk !== null && risk >= failOn;
  return true;
}

/** What {@link collectFindings} takes. */
export interface CollectOptions {
  since: string | null;
  until: string;
  failOn: FailOn;
  /** Allowed events at or above this risk are findings too. */
  minRisk: number;
  /** At most this many findings of each type are listed (all are counted). */
  limit: number;
}

/** The findings of a window, with their totals. */
export interface CollectedFindings {
  findings: Finding[];
  /** Findings in the window, listed or not. */
  total: number;
  /** Failing findings in the window, listed or not. */
  failing: number;
  /** Whether some findings were left out of the list. */
  truncated: boolean;
  /** The sessions the findings belong to, by id. */
  sessions: string[];
}

const PAGE = 1000;

/**
 * Reads the window's findings from the journal: every denied event, every allowed event at or
 * above `minRisk`, and every response taken, across all sessions, in time order. Each is marked
 * failing or not. Pages through the journal, so a large window costs time, not memory.
 */
export function collectFindings(journal: Journal, options: CollectOptions): CollectedFindings {
  const window = {
    ...(options.since === null ? {} : { since: options.since }),
    until: options.until,
  };
  const seen = new Set<string>();
  const events: Finding[] = [];
  const risks = new Map<string, number>();
  const sessions = new Set<string>();
  let total = 0;
  let failing = 0;
  const take = (event: AgentEvent) => {
    if (seen.has(event.id)) return;
    seen.add(event.id);
    risks.set(event.id, event.risk);
    sessions.add(event.session);
    const fails = eventFails(event, options.failOn);
    total++;
    if (fails) failing++;
    if (events.length < options.limit) {
      events.push({
        type: "event",
        failing: fails,
        risk: event.risk,
        summary: summarize(event),
        session: event.session,
        ts: event.ts,
        event,
      });
    }
  };
  for (const filter of [{ verdict: "deny" as const }, { minRisk: options.minRisk }]) {
    let after: string | undefined;
    while (true) {
      const page = journal.queryEvents({
        ...window,
        ...filter,
        limit: PAGE,
        ...(after === undefined ? {} : { after }),
      });
      for (const event of page) take(event);
      if (page.length < PAGE) break;
      after = page.at(-1)?.id;
    }
  }
  events.sort((a, b) => (a.event?.id ?? "").localeCompare(b.event?.id ?? ""));
  const responses: Finding[] = [];
  for (const response of journal.responsesBetween({ ...window, limit: 100_000 })) {
    if (response.action === "resume" || response.action === "detach") continue;
    const risk = response.eventId === null ? null : risks.get(response.eventId) ?? null;
    const fails = responseFails(response, options.failOn, risk);
    sessions.add(response.session);
    total++;
    if (fails) failing++;
    if (responses.length < options.limit) {
      responses.push({
        type: "response",
        failing: fails,
        risk,
        summary: `${response.action} ${response.outcome}${
          response.eventId === null ? " (by hand)" : ` after event ${response.eventId}`
        }`,
        session: response.session,
        ts: response.ts,
        response,
      });
    }
  }
  const findings = [...events, ...responses];
  return {
    findings,
    total,
    failing,
    truncated: findings.length < total,
    sessions: [...sessions].sort(),
  };
}
