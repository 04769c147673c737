import { z } from "zod";
import { KINDS, RESPONSES } from "../events/mod.ts";
import { DURATION_PATTERN } from "./duration.ts";
import { VERSION_PATTERN } from "./versions.ts";

/** The modes, from least to most drastic: each caps the response Sentry may take. */
export const MODES = ["monitor", "alert", "block", "pause", "rollback", "kill"] as const;

/** A policy mode. */
export type Mode = typeof MODES[number];

/** Whether a section allows or denies what none of its lists name. */
const SectionDefault = z.enum(["allow", "deny"]);

/** A list of globs, or of network entries. */
const Patterns = z.array(z.string().min(1));

/** Allow and deny globs for one kind of file access. */
const FileAccess = z.strictObject({
  /** What is neither allowed nor denied: `deny` when `allow` is non-empty, else `allow`. */
  default: SectionDefault.optional(),
  allow: Patterns.default([]),
  deny: Patterns.default([]),
});

/**
 * One process entry. A string is a shorthand: with a `/` it is a glob on the executable path,
 * otherwise a glob on the executable name.
 */
export const ProcessEntry = z.union([
  z.string().min(1),
  z.strictObject({
    /** Glob on the executable's base name, such as `python3*`. */
    name: z.string().min(1).optional(),
    /** Glob on the executable's absolute path, such as `/usr/bin/**`. */
    path: z.string().min(1).optional(),
    /** A regular expression searched in the arguments after argv[0], joined by spaces. */
    args: z.string().min(1).optional(),
  }).refine((e) => e.name !== undefined || e.path !== undefined || e.args !== undefined, {
    message: "needs at least one of name, path or args",
  }),
]);

/** One process entry. */
export type ProcessEntry = z.infer<typeof ProcessEntry>;

/** What a custom rule or one of its exceptions matches: every given field must match. */
const RuleMatch = z.strictObject({
  /** Kinds, or kind globs such as `file.*`. */
  kind: z.union([z.string(), z.array(z.string())]).optional(),
  /** Globs on the target: path globs for file kinds, wildcards for the others. */
  target: z.union([z.string(), z.array(z.string())]).optional(),
  /** Process entries; the rule matches when any of them matches the acting process. */
  process: z.union([ProcessEntry, z.array(ProcessEntry)]).optional(),
});

/** What a rule or exception matches. */
export type RuleMatch = z.infer<typeof RuleMatch>;

/** A custom detection rule, in the manner of Falco: a match makes the action a violation. */
export const Rule = z.strictObject({
  id: z.string().regex(/^[a-z][a-z0-9_]*$/, "must be lowercase_with_underscores"),
  description: z.string().regex(/^Detect\b/, 'must start with "Detect"'),
  match: RuleMatch,
  /** Risk points this rule adds when it matches. */
  risk: z.number().int().min(0).max(100),
  /** The response when it matches; when absent, the thresholds choose. */
  response: z.enum(RESPONSES).optional(),
  /** Matches that exempt an action from the rule. */
  exceptions: z.array(RuleMatch).default([]),
  enabled: z.boolean().default(true),
});

/** A custom rule. */
export type Rule = z.infer<typeof Rule>;

/** The default database ports: PostgreSQL, MySQL, MongoDB, Redis, SQL Server, CouchDB, Cassandra, Elasticsearch, Oracle, CockroachDB. */
export const DEFAULT_DB_PORTS = [5432, 3306, 27017, 6379, 1433, 5984, 9042, 9200, 1521, 26257];

/**
 * A policy as written in YAML. Every key is optional so that a policy can extend another and
 * say only what differs; unknown keys are errors.
 */
export const PolicyFile = z.strictObject({
  name: z.string().min(1).optional(),
  description: z.string().optional(),
  /** The policy's own version, such as `1.2.0` (`policy list` shows it). */
  version: z.string().regex(VERSION_PATTERN, "expected a version such as 1.2.0").optional(),
  /** The oldest Sentry that can load this policy; a newer one than this Sentry is refused. */
  required_sentry_version: z.string().regex(
    VERSION_PATTERN,
    "expected a version such as 0.1.0",
  ).optional(),
  /** A template name (`coding-agent`) or a file path, relative to this file. */
  extends: z.string().min(1).optional(),
  /** The agent's working tree; `run --workspace` overrides it. Default: the current directory. */
  workspace: z.string().min(1).optional(),
  mode: z.enum(MODES).optional(),
  /** What a block does besides failing the action: by default nothing (agents handle EACCES). */
  block: z.strictObject({ pause: z.boolean().optional() }).optional(),
  /** What becomes of a pause nobody attends to (`--pause-timeout` overrides it). */
  pause: z.strictObject({
    /** How long a pause may last with nobody resuming it, such as `10m`; default: no limit. */
    timeout: z.string().regex(
      DURATION_PATTERN,
      "expected a duration such as 500ms, 30s, 10m or 1h",
    ).optional(),
    /** What a pause that times out ends in: `kill` (default) or `resume`. */
    on_timeout: z.enum(["resume", "kill"]).optional(),
  }).optional(),
  /**
   * What the watchdog does with the agent if Sentry itself dies: `resume` (default: a paused
   * agent goes on, unwatched) or `kill`. `run --on-exit` overrides it. A session that dies before
   * it let the agent go is always killed.
   */
  on_sentry_exit: z.enum(["resume", "kill"]).optional(),
  /**
   * What Sentry does when its journal cannot be written (a full disk): `pause` (default) stops
   * the agent until someone comes; `continue` lets it go on and counts what is lost.
   */
  on_journal_error: z.enum(["pause", "continue"]).optional(),
  thresholds: z.strictObject({
    alert: z.number().int().min(0).max(100).optional(),
    pause: z.number().int().min(0).max(100).optional(),
    rollback: z.number().int().min(0).max(101).optional(),
    /** Off (101) unless set. */
    kill: z.number().int().min(0).max(101).optional(),
  }).optional(),
  monitors: z.strictObject({
    files: z.boolean().optional(),
    network: z.boolean().optional(),
    processes: z.boolean().optional(),
    cpu: z.boolean().optional(),
    memory: z.boolean().optional(),
    database: z.boolean().optional(),
  }).optional(),
  limits: z.strictObject({
    /** Tree CPU, in percent of one core, above which `resource.cpu` is a violation. */
    cpu_percent: z.number().positive().optional(),
    /** How long CPU must stay above the limit before it is reported. */
    cpu_seconds: z.number().positive().optional(),
    /** Tree resident memory, in MB, above which `resource.memory` is a violation. */
    memory_mb: z.number().positive().optional(),
  }).optional(),
  files: z.strictObject({
    read: FileAccess.optional(),
    write: FileAccess.optional(),
    delete: FileAccess.optional(),
  }).optional(),
  network: z.strictObject({
    default: SectionDefault.optional(),
    allow: Patterns.optional(),
    deny: Patterns.optional(),
    /** Whether the agent may listen on ports. */
    listen: z.boolean().optional(),
  }).optional(),
  processes: z.strictObject({
    default: SectionDefault.optional(),
    allow: z.array(ProcessEntry).optional(),
    deny: z.array(ProcessEntry).optional(),
  }).optional(),
  database: z.strictObject({
    /** Ports whose connections are `db.connect`. */
    ports: z.array(z.number().int().min(1).max(65535)).optional(),
    /** Database endpoints the agent may use, as network entries. Others are denied. */
    allow: Patterns.optional(),
  }).optional(),
  rules: z.array(Rule).optional(),
  /** Protected paths for rollback (issue #4). */
  rollback: z.strictObject({
    paths: Patterns.optional(),
    exclude: Patterns.optional(),
    max_bytes: z.number().int().positive().optional(),
    /** The most files and directories one protected tree may hold; default 200,000. */
    max_files: z.number().int().positive().optional(),
    /** What an automatic rollback leaves: the agent paused (default), or killed. */
    after: z.enum(["pause", "kill"]).optional(),
  }).optional(),
});

/** A policy as written. */
export type PolicyFile = z.input<typeof PolicyFile>;

/** Allow and deny lists of one section, with the default made explicit. */
export interface ResolvedAccess<T = string> {
  default: "allow" | "deny";
  allow: T[];
  deny: T[];
}

/**
 * A fully resolved policy: `extends` merged, every default filled in, every section's default
 * explicit. This is what `policy show` prints and what `compilePolicy()` takes.
 */
export interface ResolvedPolicy {
  name: string;
  description: string;
  /** The chain of policies merged, base first, such as `["default", "coding-agent"]`. */
  sources: string[];
  workspace: string;
  mode: Mode;
  /** Whether a blocked action also pauses the agent. */
  block: { pause: boolean };
  /** How long a pause may last unattended (a duration, or null: no limit), and what then. */
  pause: { timeout: string | null; on_timeout: "resume" | "kill" };
  /** What the watchdog does with the agent if Sentry dies. */
  on_sentry_exit: "resume" | "kill";
  /** What Sentry does when its journal cannot be written. */
  on_journal_error: "pause" | "continue";
  thresholds: { alert: number; pause: number; rollback: number; kill: number };
  monitors: {
    files: boolean;
    network: boolean;
    processes: boolean;
    cpu: boolean;
    memory: boolean;
    database: boolean;
  };
  limits: { cpu_percent: number; cpu_seconds: number; memory_mb: number };
  files: { read: ResolvedAccess; write: ResolvedAccess; delete: ResolvedAccess };
  network: ResolvedAccess & { listen: boolean };
  processes: ResolvedAccess<ProcessEntry>;
  database: { ports: number[]; allow: string[] };
  rules: Rule[];
  rollback: {
    paths: string[];
    exclude: string[];
    max_bytes: number;
    max_files: number;
    after: "pause" | "kill";
  };
}

/** The kinds a rule may name, for validation messages. */
export const RULE_KINDS: readonly string[] = KINDS;
