import type { AgentEvent, Decision, Response } from "../events/mod.ts";

/** The kinds of verdict change a backtest reports. */
export const CHANGES = ["newly_denied", "newly_allowed", "changed_response"] as const;

/** A kind of verdict change. */
export type Change = typeof CHANGES[number];

/** One event whose decision changed, as an example. */
export interface ChangeExample {
  id: string;
  session: string;
  kind: string;
  target: string;
  before: { verdict: "allow" | "deny"; rule: string; response: Response };
  after: { verdict: "allow" | "deny"; rule: string; response: Response };
}

/** Changes of one kind grouped by the rule that decided under the new policy (or the old one). */
export interface ChangeGroup {
  /** The new policy's rule for a new denial or response, the old one's for a new allow. */
  rule: string;
  /** For a changed response: `pause -> kill`. */
  responses?: string;
  count: number;
  examples: ChangeExample[];
}

/** What a backtest found. */
export interface BacktestResult {
  events: number;
  unchanged: number;
  counts: Record<Change, number>;
  /** Per change, its groups, the largest first. */
  groups: Record<Change, ChangeGroup[]>;
}

/** How many examples each group keeps. */
const EXAMPLES = 3;

/**
 * Compares journaled decisions with the decisions of another policy, event by event, and
 * keeps counts and a few examples per change: newly denied (allowed then, denied now), newly
 * allowed, and a changed response on an unchanged verdict. Memory grows with the groups, not
 * the events.
 */
export class Backtest {
  readonly #groups = new Map<string, ChangeGroup & { change: Change }>();
  readonly #counts: Record<Change, number> = {
    newly_denied: 0,
    newly_allowed: 0,
    changed_response: 0,
  };
  #events = 0;

  /** Compares one journaled event with the new decision on it. */
  add(event: AgentEvent, now: Decision): void {
    this.#events++;
    let change: Change;
    let key: string;
    let rule: string;
    let responses: string | undefined;
    if (event.verdict === "allow" && now.verdict === "deny") {
      change = "newly_denied";
      rule = now.rule;
      key = `${change}\0${rule}`;
    } else if (event.verdict === "deny" && now.verdict === "allow") {
      change = "newly_allowed";
      rule = event.rule;
      key = `${change}\0${rule}`;
    } else if (event.response !== now.response) {
      change = "changed_response";
      rule = now.rule;
      responses = `${event.response} -> ${now.response}`;
      key = `${change}\0${rule}\0${responses}`;
    } else {
      return;
    }
    this.#counts[change]++;
    let group = this.#groups.get(key);
    if (group === undefined) {
      group = {
        change,
        rule,
        count: 0,
        examples: [],
        ...(responses === undefined ? {} : { responses }),
      };
      this.#groups.set(key, group);
    }
    group.count++;
    if (group.examples.length < EXAMPLES) {
      group.examples.push({
        id: event.id,
        session: event.session,
        kind: event.kind,
        target: event.target,
        before: { verdict: event.verdict, rule: event.rule, response: event.response },
        after: { verdict: now.verdict, rule: now.rule, response: now.response },
      });
    }
  }

  /** The counts and groups so far. */
  result(): BacktestResult {
    const groups: Record<Change, ChangeGroup[]> = {
      newly_denied: [],
      newly_allowed: [],
      changed_response: [],
    };
    for (const { change, ...group } of this.#groups.values()) groups[change].push(group);
    for (const c of CHANGES) {
      groups[c].sort((a, b) =>
        b.count - a.count || a.rule.localeCompare(b.rule) ||
        (a.responses ?? "").localeCompare(b.responses ?? "")
      );
    }
    const changed = this.#counts.newly_denied + this.#counts.newly_allowed +
      this.#counts.changed_response;
    return {
      events: this.#events,
      unchanged: this.#events - changed,
      counts: { ...this.#counts },
      groups,
    };
  }
}

/** One `--fail-on` condition: a change (or `any`) and the count at which it fails. */
export interface FailOn {
  change: Change | "any";
  /** Fails when the count reaches this; at least 1. */
  atLeast: number;
}

const FAIL_NAMES: Record<string, Change | "any"> = {
  denied: "newly_denied",
  allowed: "newly_allowed",
  response: "changed_response",
  any: "any",
};

/**
 * Parses `--fail-on`: a comma-separated list of `denied`, `allowed`, `response` or `any`, each
 * with an optional `=N` (fail when at least N such changes; default 1). Throws a `RangeError`
 * quoting the bad part.
 */
export function parseFailOn(text: string): FailOn[] {
  return text.split(",").map((part) => part.trim()).filter((p) => p !== "").map((part) => {
    const m = /^([a-z]+)(?:=(\d+))?$/.exec(part);
    const change = m === null ? undefined : FAIL_NAMES[m[1] as string];
    if (m === null || change === undefined) {
      throw new RangeError(
        `Invalid --fail-on "${part}": use denied, allowed, response or any, each with an optional =N`,
      );
    }
    const atLeast = m[2] === undefined ? 1 : Number(m[2]);
    if (atLeast < 1) throw new RangeError(`Invalid --fail-on "${part}": N must be at least 1`);
    return { change, atLeast };
  });
}

/** The `--fail-on` conditions a result crosses, as phrases (`3 newly denied >= 1`). */
export function crossedFailOn(result: BacktestResult, conditions: readonly FailOn[]): string[] {
  const out: string[] = [];
  for (const c of conditions) {
    const n = c.change === "any"
      ? result.counts.newly_denied + result.counts.newly_allowed + result.counts.changed_response
      : result.counts[c.change];
    if (n >= c.atLeast) {
      out.push(
        `${n} ${
          c.change === "any" ? "changes" : c.change.replace("_", " ")
        } (at least ${c.atLeast})`,
      );
    }
  }
  return out;
}
