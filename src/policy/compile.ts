import { type Kind, KINDS, responseRank } from "../events/mod.ts";
import { PolicyError } from "./errors.ts";
import picomatch from "picomatch";
import { GlobSet } from "./glob_set.ts";
import {
  type ExpandContext,
  expandGlob,
  namedHosts,
  type NetworkEntry,
  parseNetworkEntry,
  pathGlobToRegExp,
  wildcardToRegExp,
} from "./patterns.ts";
import { compileSensitivity, type Sensitivity } from "./risk.ts";
import type {
  Mode,
  ProcessEntry,
  ResolvedAccess,
  ResolvedPolicy,
  Rule,
  RuleMatch,
} from "./schema.ts";

/**
 * What a policy compiles against: the user's home, the workspace and the environment, and the
 * directories of Sentry's own that no agent may touch (its data and configuration: the journal,
 * the token, the snapshots, the pids files).
 */
export type CompileContext = ExpandContext & { guarded?: readonly string[] };

/** One file section, compiled: each list is a {@link GlobSet} labelled with the globs as written. */
export interface CompiledAccess {
  section: string;
  default: "allow" | "deny";
  allow: GlobSet;
  deny: GlobSet;
}

/** A compiled process entry. */
export interface CompiledProcess {
  text: string;
  name: RegExp | null;
  path: RegExp | null;
  args: RegExp | null;
}

/** A compiled rule match (the rule's own, or one exception). */
export interface CompiledMatch {
  kinds: ReadonlySet<Kind> | null;
  /** Target matchers for path kinds (expanded path globs) and for the others (wildcards). */
  pathTargets: GlobSet | null;
  otherTargets: RegExp[] | null;
  processes: CompiledProcess[] | null;
  /** Literal host names in the targets, for the resolver. */
  hosts: string[];
}

/** A compiled custom rule. */
export interface CompiledRule {
  rule: Rule;
  match: CompiledMatch;
  exceptions: CompiledMatch[];
}

/** A policy compiled once, then used for every event: globs are regexes, entries parsed. */
export interface CompiledPolicy {
  policy: ResolvedPolicy;
  workspace: string;
  /** The workspace with a trailing slash, for a prefix test. */
  workspacePrefix: string;
  /** The highest response rank the mode allows. */
  modeCap: number;
  thresholds: ResolvedPolicy["thresholds"];
  monitors: ResolvedPolicy["monitors"];
  limits: ResolvedPolicy["limits"];
  files: { read: CompiledAccess; write: CompiledAccess; delete: CompiledAccess };
  network: {
    default: "allow" | "deny";
    allow: NetworkEntry[];
    deny: NetworkEntry[];
    listen: boolean;
  };
  processes: { default: "allow" | "deny"; allow: CompiledProcess[]; deny: CompiledProcess[] };
  database: { ports: ReadonlySet<number>; allow: NetworkEntry[] };
  /** The enabled rules that can match each kind, in policy order. */
  rulesByKind: ReadonlyMap<Kind, CompiledRule[]>;
  sensitivity: Sensitivity;
  /**
   * Sentry's own directories, absolute and without a trailing slash: every file action of the
   * agent beneath one is denied (`guard.sentry_home`), whatever the policy says.
   */
  guarded: readonly string[];
  /** Host names the policy mentions: the network sensor resolves them to addresses. */
  namedHosts: string[];
  /** The expanded path globs of the rules' targets: the watch sensor covers their directories. */
  ruleFileGlobs: string[];
}

const MODE_CAP: Record<Mode, number> = {
  monitor: responseRank("none"),
  alert: responseRank("alert"),
  block: responseRank("block"),
  pause: responseRank("pause"),
  rollback: responseRank("rollback"),
  kill: responseRank("kill"),
};

/**
 * Compiles a resolved policy for evaluation: expands and compiles globs, parses network
 * entries and indexes rules by kind. Pure: everything it reads comes in through `context`.
 * Throws a {@link PolicyError} naming the field and value when something does not compile.
 */
export function compilePolicy(policy: ResolvedPolicy, context: CompileContext): CompiledPolicy {
  const workspace = context.workspace.replace(/\/+$/, "") || "/";
  const ctx: CompileContext = { ...context, workspace };
  const at = <T>(field: string, fn: () => T): T => {
    try {
      return fn();
    } catch (error) {
      if (error instanceof PolicyError) throw error;
      const reason = error instanceof Error ? error.message : String(error);
      throw new PolicyError(`Cannot compile policy "${policy.name}": ${field}: ${reason}`, {
        file: policy.name,
        field,
        cause: error,
      });
    }
  };
  const globSet = (field: string, globs: string[]) =>
    new GlobSet(globs.map((g, i) => at(`${field}[${i}]`, () => expandGlob(g, ctx))), globs);
  const access = (section: string, a: ResolvedAccess): CompiledAccess => ({
    section,
    default: a.default,
    allow: globSet(`${section}.allow`, a.allow),
    deny: globSet(`${section}.deny`, a.deny),
  });
  const entries = (field: string, list: string[]) =>
    list.map((e, i) => at(`${field}[${i}]`, () => parseNetworkEntry(e)));
  const processes = (field: string, list: ProcessEntry[]) =>
    list.map((e, i) => at(`${field}[${i}]`, () => compileProcess(e, ctx)));

  // Indexed in the full list, so that an error names the rule's real place.
  const rules: CompiledRule[] = [];
  policy.rules.forEach((rule, i) => {
    if (!rule.enabled) return;
    rules.push(at(`rules[${i}] (${rule.id})`, () => ({
      rule,
      match: compileMatch(rule.match, ctx),
      exceptions: rule.exceptions.map((m) => compileMatch(m, ctx)),
    })));
  });
  const rulesByKind = new Map<Kind, CompiledRule[]>();
  for (const kind of KINDS) {
    rulesByKind.set(kind, rules.filter((r) => r.match.kinds === null || r.match.kinds.has(kind)));
  }

  const network = {
    default: policy.network.default,
    allow: entries("network.allow", policy.network.allow),
    deny: entries("network.deny", policy.network.deny),
    listen: policy.network.listen,
  };
  const databaseAllow = entries("database.allow", policy.database.allow);
  const hosts = new Set(namedHosts([...network.allow, ...network.deny, ...databaseAllow]));
  for (const r of rules) for (const h of r.match.hosts) hosts.add(h);
  return {
    policy,
    workspace,
    workspacePrefix: workspace === "/" ? "/" : workspace + "/",
    modeCap: MODE_CAP[policy.mode],
    thresholds: policy.thresholds,
    monitors: policy.monitors,
    limits: policy.limits,
    files: {
      read: access("files.read", policy.files.read),
      write: access("files.write", policy.files.write),
      delete: access("files.delete", policy.files.delete),
    },
    network,
    processes: {
      default: policy.processes.default,
      allow: processes("processes.allow", policy.processes.allow),
      deny: processes("processes.deny", policy.processes.deny),
    },
    database: {
      ports: new Set(policy.database.ports),
      allow: databaseAllow,
    },
    rulesByKind,
    sensitivity: compileSensitivity(context.home),
    guarded: (context.guarded ?? []).map((d) => d.replace(/\/+$/, "") || "/"),
    namedHosts: [...hosts],
    ruleFileGlobs: rules.flatMap((r) => [...(r.match.pathTargets?.globs ?? [])]),
  };
}

/**
 * Compiles one process entry; throws a `RangeError` quoting a bad regex or glob. A `name` is a
 * glob on the base name (braces work: `{bash,sh}`); a `path` is a path glob, expanded like file
 * globs (`~`, `${WORKSPACE}`, `${HOME}`, environment variables).
 */
export function compileProcess(entry: ProcessEntry, context?: CompileContext): CompiledProcess {
  const e = typeof entry === "string"
    ? (entry.includes("/") ? { path: entry } : { name: entry })
    : entry;
  const text = typeof entry === "string" ? entry : JSON.stringify(entry);
  let args: RegExp | null = null;
  if (e.args !== undefined) {
    try {
      args = new RegExp(e.args);
    } catch (error) {
      throw new RangeError(`Bad regular expression "${e.args}" in process entry`, { cause: error });
    }
  }
  const glob = (g: string) => {
    if (context !== undefined) return pathGlobToRegExp(expandGlob(g, context));
    if (!/^(?:\/|~|\$|\*\*)/.test(g)) {
      throw new RangeError(
        `Bad process path glob "${g}": use an absolute path, or start with ~ or \${WORKSPACE}`,
      );
    }
    return pathGlobToRegExp(g);
  };
  const name = (n: string) => {
    if (n.includes("/")) {
      throw new RangeError(`Bad process name "${n}": a name has no "/"; use path for paths`);
    }
    return picomatch.makeRe(n, { dot: true });
  };
  return {
    text,
    name: e.name === undefined ? null : name(e.name),
    path: e.path === undefined ? null : glob(e.path),
    args,
  };
}

/** Compiles a rule's match or exception. */
export function compileMatch(match: RuleMatch, context: CompileContext): CompiledMatch {
  let kinds: Set<Kind> | null = null;
  if (match.kind !== undefined) {
    kinds = new Set();
    for (const pattern of toList(match.kind)) {
      const re = wildcardToRegExp(pattern);
      const hits = KINDS.filter((k) => re.test(k));
      if (hits.length === 0) {
        throw new RangeError(`Unknown kind "${pattern}": kinds are ${KINDS.join(", ")}`);
      }
      for (const k of hits) kinds.add(k);
    }
  }
  let pathTargets: GlobSet | null = null;
  let otherTargets: RegExp[] | null = null;
  const hosts: string[] = [];
  if (match.target !== undefined) {
    const targets = toList(match.target);
    const needsPaths = kinds === null || [...kinds].some((k) => k.startsWith("file."));
    const needsOthers = kinds === null || [...kinds].some((k) => !k.startsWith("file."));
    const paths = needsPaths ? targets.filter((t) => !needsOthers || looksLikePath(t)) : [];
    pathTargets = new GlobSet(paths.map((t) => expandGlob(t, context)), paths);
    otherTargets = needsOthers ? targets.map(wildcardToRegExp) : [];
    // A literal host in a network target (`evil.example:*`) is resolved like a network entry.
    for (const t of targets) {
      const host = /^([a-z0-9][a-z0-9.-]*\.[a-z]{2,})(?::.*)?$/i.exec(t)?.[1];
      if (host !== undefined) hosts.push(host.toLowerCase());
    }
  }
  const processes = match.process === undefined
    ? null
    : toList(match.process).map((e) => compileProcess(e, context));
  return { kinds, pathTargets, otherTargets, processes, hosts };
}

function looksLikePath(t: string): boolean {
  return t.startsWith("/") || t.startsWith("~") || t.startsWith("$") || t.startsWith("**");
}

function toList<T>(value: T | T[]): T[] {
  return Array.isArray(value) ? value : [value];
}
