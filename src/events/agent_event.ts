import { z } from "zod";
import { KINDS, RESPONSES } from "./kinds.ts";

/** One addend of a risk score: the scores of all factors of a decision add up to its risk. */
export const RiskFactor = z.object({
  /** A stable id for the factor, such as `kind`, `credential_path` or `violation`. */
  id: z.string().min(1),
  /** Points this factor adds (negative only for the cap at 100). */
  points: z.number().int(),
  /** Why the factor applies, in words a reviewer can check. */
  reason: z.string(),
});

/** One addend of a risk score. */
export type RiskFactor = z.infer<typeof RiskFactor>;

/** The part of an event the policy engine fills: what was decided and why. */
export const Decision = z.object({
  verdict: z.enum(["allow", "deny"]),
  risk: z.number().int().min(0).max(100),
  factors: z.array(RiskFactor),
  /** The rule id, or the policy section (such as `files.read.deny`), that decided. */
  rule: z.string().min(1),
  response: z.enum(RESPONSES),
});

/** What the policy engine decided about one action. */
export type Decision = z.infer<typeof Decision>;

/**
 * The one event schema of the system. Sensors emit it (without the decision), the engine
 * decides on it, the journal stores it, the API serves it and sync uploads it.
 */
export const AgentEvent = z.object({
  /** Unique and sortable by time: a 26-character ULID. */
  id: z.string().regex(/^[0-9A-HJKMNP-TV-Z]{26}$/, "must be a ULID"),
  /** ISO 8601 with milliseconds, in UTC. */
  ts: z.iso.datetime({ precision: 3 }),
  session: z.string().min(1),
  agent: z.string().min(1),
  /** The acting process, or null when the evidence does not name one (unattributed). */
  pid: z.number().int().positive().nullable(),
  ppid: z.number().int().nonnegative().nullable(),
  exe: z.string().nullable(),
  cmdline: z.array(z.string()),
  kind: z.enum(KINDS),
  /** An absolute path, a `host:port`, or a command line, by kind. */
  target: z.string(),
  detail: z.record(z.string(), z.unknown()),
  /** The sensor that saw the action, such as `proc`, `fd`, `watch` or `net`. */
  sensor: z.string().min(1),
  ...Decision.shape,
  /**
   * Shadow mode (`--mode monitor`): the response the policy asks for, which the mode kept
   * Sentry from taking. Absent when the event got what the policy asks for.
   */
  would: z.enum(RESPONSES).optional(),
});

/** A decided event, as the journal stores it. */
export type AgentEvent = z.infer<typeof AgentEvent>;

/** An event as a sensor emits it, before the engine decides. Derived from {@link AgentEvent}. */
export const Observation = AgentEvent.omit({
  verdict: true,
  risk: true,
  factors: true,
  rule: true,
  response: true,
  would: true,
});

/** An event before its decision. */
export type Observation = z.infer<typeof Observation>;
