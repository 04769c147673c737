import YAML, { isAlias, isMap, isPair, isScalar, isSeq, LineCounter, type Node } from "yaml";
import type { AgentEvent, Decision, RiskFactor } from "../events/mod.ts";
import { type CompiledPolicy, compilePolicy } from "./compile.ts";
import { PolicyError } from "./errors.ts";
import { type Action, evaluate, explainMatches, type MatchedEntry } from "./evaluate.ts";
import { isTemplateName, loadPolicyLayers, type SourcedLayer } from "./loader.ts";
import { resolveLayers } from "./resolve.ts";
import { MODES, type ResolvedPolicy, type RuleMatch } from "./schema.ts";

/** Where a policy entry is written: a file (or `policies/NAME.yaml` for a template) and a line. */
export interface SourceLocation {
  file: string;
  line: number;
}

/** A matched entry with where it is written and whether it decided. */
export interface ExplainedEntry extends MatchedEntry {
  /** Where the entry is written, or null for the engine's own checks and built-in defaults. */
  source: SourceLocation | null;
  /** Whether this entry decided the verdict. */
  winner: boolean;
}

/** An exception of a rule that matched, exempting the action from the rule. */
export interface AppliedException {
  rule: string;
  /** Its place in the rule's `exceptions`. */
  index: number;
  match: RuleMatch;
  source: SourceLocation | null;
}

/** Why an action got its decision: what `sentry explain` prints and the API serves. */
export interface Explanation {
  /** The decision under the policy now (what {@link evaluate} returns). */
  decision: Decision;
  /** Every entry that matched, in precedence order. */
  matches: ExplainedEntry[];
  /** The entry that decided, or null when none is recognised (a policy newer than the event). */
  winner: ExplainedEntry | null;
  /** Why the winner won, in a sentence. */
  why: string;
  /** How the response was reached, in a sentence. */
  responseWhy: string;
  /** The risk factors, which add up to the risk. */
  factors: RiskFactor[];
  /** The exceptions that exempted the action from a rule. */
  exceptions: AppliedException[];
}

/** What {@link explainAction} explains against. */
export interface ExplainOptions {
  compiled: CompiledPolicy;
  /** The policy's layers as read, for the file and line of each entry; empty: no lines. */
  layers: readonly SourcedLayer[];
}

/**
 * Explains the decision on one action: every entry that matched in precedence order, the one
 * that decided and why, the risk factors, the exceptions that applied, and the file and line
 * of each. Pure: the layers carry the texts.
 */
export function explainAction(action: Action, options: ExplainOptions): Explanation {
  const { compiled } = options;
  const decision = evaluate(action, compiled);
  const sources = new SourceIndex(options.layers);
  const resolved = compiled.policy;
  const matches: ExplainedEntry[] = explainMatches(action, compiled).map((m) => ({
    ...m,
    source: sources.locate(m, resolved),
    winner: false,
  }));
  const winner =
    matches.find((m) =>
      m.section === "rules"
        ? m.entry === decision.rule && (m.exceptions?.length ?? 0) === 0
        : m.section === decision.rule
    ) ?? null;
  if (winner !== null) winner.winner = true;
  const exceptions: AppliedException[] = [];
  for (const m of matches) {
    if (m.section !== "rules" || m.index === null) continue;
    const rule = resolved.rules[m.index];
    for (const i of m.exceptions ?? []) {
      const match = rule?.exceptions[i];
      if (rule === undefined || match === undefined) continue;
      exceptions.push({
        rule: rule.id,
        index: i,
        match,
        source: sources.exception(rule.id, i),
      });
    }
  }
  return {
    decision,
    matches,
    winner,
    why: whyWinner(winner, matches, decision),
    responseWhy: whyResponse(decision, compiled),
    factors: decision.factors,
    exceptions,
  };
}

/** The one-sentence reason the winner won over the other matches. */
function whyWinner(
  winner: ExplainedEntry | null,
  matches: readonly ExplainedEntry[],
  decision: Decision,
): string {
  if (winner === null) {
    return `no matching entry names "${decision.rule}": the policy may differ from the one that decided`;
  }
  const q = (s: string) => `"${s}"`;
  const applied = matches.filter((m) => m.section === "rules" && m.exceptions?.length === 0);
  const exempted = matches.filter((m) => m.section === "rules" && (m.exceptions?.length ?? 0) > 0);
  const exemptNote = exempted.length > 0
    ? `; ${exempted.map((m) => q(m.entry)).join(", ")} matched but ${
      exempted.length === 1 ? "an exception exempts it" : "exceptions exempt them"
    }`
    : "";
  const lists = matches.filter((m) => m.section !== "rules" && m !== winner);
  let why: string;
  if (winner.section.startsWith("guard.")) {
    why = "Sentry's own guard comes before every policy entry, and no policy can loosen it";
  } else if (winner.section.startsWith("monitors.")) {
    why = `the ${winner.section.slice(9)} monitor is off, so nothing of its sections applies`;
  } else if (winner.section === "rules") {
    const others = lists.filter((m) => !m.section.startsWith("guard."));
    why = `custom rules come before the section lists (${
      others.map((m) => `${m.section} ${q(m.entry)}`).join(", ") || "none matched"
    }); ${
      applied.length > 1
        ? `of the ${applied.length} rules that apply, ${q(winner.entry)} adds the most risk (${
          winner.risk ?? 0
        })`
        : `${q(winner.entry)} is the only rule that applies`
    }`;
  } else if (winner.section.endsWith(".deny")) {
    const allows = lists.filter((m) => m.section.endsWith(".allow"));
    why = `no custom rule applies, and a deny entry beats every allow entry${
      allows.length > 0 ? ` (${allows.map((m) => `${m.section} ${q(m.entry)}`).join(", ")})` : ""
    }`;
  } else if (winner.section.endsWith(".allow")) {
    why = `no custom rule applies, no deny entry matches, and ${winner.section} ${
      q(winner.entry)
    } does`;
  } else if (winner.section.endsWith(".default")) {
    why =
      `no custom rule applies and no entry of the section matches, so its default (${winner.entry}) decides`;
  } else if (winner.section === "network.unix") {
    why = "a unix socket is local IPC: allowed unless a unix: entry of network.deny names it";
  } else if (winner.section === "database.allow") {
    why = "no custom rule applies, and database.allow names no matching endpoint";
  } else if (winner.section.startsWith("limits.")) {
    why = `the reading is judged against ${winner.section} (${winner.entry})`;
  } else {
    why = `${winner.section} decides`;
  }
  const reversed = winner.effect === "deny" && decision.verdict === "allow"
    ? `; but ${decision.factors.find((f) => f.id === "lookup")?.reason ?? "the engine allowed it"}`
    : "";
  return why + exemptNote + reversed;
}

/** How the response was reached: a rule's own response, or the thresholds, then the caps. */
function whyResponse(decision: Decision, compiled: CompiledPolicy): string {
  const { thresholds, policy } = compiled;
  const rule = policy.rules.find((r) => r.id === decision.rule);
  const base = rule?.response !== undefined
    ? `rule "${rule.id}" asks for ${rule.response}`
    : `risk ${decision.risk} against the thresholds (alert ${thresholds.alert}, pause ${thresholds.pause}, rollback ${thresholds.rollback}, kill ${thresholds.kill})`;
  return `${base}; mode ${policy.mode} caps it; response: ${decision.response}`;
}

/** Finds where each entry of a policy is written, across its layers. */
class SourceIndex {
  /** List entries: the first layer that lists them (lists append and keep the first). */
  readonly #entries = new Map<string, SourceLocation>();
  /** Rules and scalars: the last layer that sets them (a child overrides). */
  readonly #scalars = new Map<string, SourceLocation>();
  readonly #exceptions = new Map<string, SourceLocation>();

  constructor(layers: readonly SourcedLayer[]) {
    for (const layer of layers) this.#add(layer);
  }

  /** Where a matched entry is written, or null. */
  locate(m: MatchedEntry, resolved: CompiledPolicy["policy"]): SourceLocation | null {
    if (m.section === "rules") return this.#scalars.get(`rules\0${m.entry}`) ?? null;
    if (m.index !== null) {
      const value = listValue(resolved, m.section, m.index);
      if (value !== undefined) {
        return this.#entries.get(`${m.section}\0${canonical(value)}`) ?? null;
      }
    }
    const key = m.section === "network.unix" || m.section === "processes"
      ? null
      : m.section === "database.allow"
      ? "database.allow"
      : m.section === "limits.cpu_seconds"
      ? "limits.cpu_seconds"
      : m.section;
    return key === null ? null : this.#scalars.get(key) ?? null;
  }

  /** Where exception `index` of rule `id` is written. */
  exception(id: string, index: number): SourceLocation | null {
    return this.#exceptions.get(`${id}\0${index}`) ?? null;
  }

  #add(layer: SourcedLayer): void {
    const file = layer.path ?? `policies/${layer.source}.yaml`;
    const counter = new LineCounter();
    const doc = YAML.parseDocument(layer.text, { lineCounter: counter });
    const at = (node: Node | null | undefined): SourceLocation | null => {
      const offset = node?.range?.[0];
      return offset === undefined ? null : { file, line: counter.linePos(offset).line };
    };
    const get = (path: readonly (string | number)[]): { node: Node | null; key: Node | null } => {
      let node: unknown = doc.contents;
      let key: Node | null = null;
      for (const part of path) {
        if (isAlias(node)) node = node.resolve(doc);
        if (isMap(node) && typeof part === "string") {
          const pair = node.items.find((p) => isPair(p) && isScalar(p.key) && p.key.value === part);
          if (pair === undefined) return { node: null, key: null };
          key = pair.key as Node;
          node = pair.value;
        } else if (isSeq(node) && typeof part === "number") {
          node = node.items[part];
          key = null;
        } else {
          return { node: null, key: null };
        }
      }
      if (isAlias(node)) node = node.resolve(doc);
      return { node: (node ?? null) as Node | null, key };
    };
    const setScalar = (name: string, path: readonly string[]) => {
      const { key } = get(path);
      const loc = at(key);
      if (loc !== null) this.#scalars.set(name, loc);
    };
    const list = (name: string, path: readonly string[]) => {
      const { node } = get(path);
      if (!isSeq(node)) return;
      node.items.forEach((item, i) => {
        const value = valueAt(layer.policy, path, i);
        const loc = at(item as Node);
        const key = `${name}\0${canonical(value)}`;
        if (loc !== null && value !== undefined && !this.#entries.has(key)) {
          this.#entries.set(key, loc);
        }
      });
    };
    for (const op of ["read", "write", "delete"] as const) {
      setScalar(`files.${op}.default`, ["files", op, "default"]);
      for (const l of ["allow", "deny"] as const) list(`files.${op}.${l}`, ["files", op, l]);
    }
    for (const l of ["allow", "deny"] as const) {
      list(`network.${l}`, ["network", l]);
      list(`processes.${l}`, ["processes", l]);
    }
    list("database.allow", ["database", "allow"]);
    setScalar("database.allow", ["database", "allow"]);
    setScalar("network.default", ["network", "default"]);
    setScalar("network.listen", ["network", "listen"]);
    setScalar("processes.default", ["processes", "default"]);
    for (const k of ["cpu_percent", "cpu_seconds", "memory_mb"]) {
      setScalar(`limits.${k}`, ["limits", k]);
    }
    for (const k of ["files", "network", "processes", "cpu", "memory", "database"]) {
      setScalar(`monitors.${k}`, ["monitors", k]);
    }
    (layer.policy.rules ?? []).forEach((rule, i) => {
      const loc = at(get(["rules", i]).node);
      if (loc !== null) this.#scalars.set(`rules\0${rule.id}`, loc);
      (rule.exceptions ?? []).forEach((_e, j) => {
        const e = at(get(["rules", i, "exceptions", j]).node);
        if (e !== null) this.#exceptions.set(`${rule.id}\0${j}`, e);
      });
    });
  }
}

/** The value at `path[i]` in a parsed layer. */
function valueAt(policy: unknown, path: readonly string[], i: number): unknown {
  let cur: unknown = policy;
  for (const key of path) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[key];
  }
  return Array.isArray(cur) ? cur[i] : undefined;
}

/** The value at `index` of a resolved list named by its section (`files.read.deny`). */
function listValue(
  resolved: CompiledPolicy["policy"],
  section: string,
  index: number,
): unknown {
  const parts = section.split(".");
  let cur: unknown = resolved;
  for (const p of parts) {
    if (cur === null || typeof cur !== "object") return undefined;
    cur = (cur as Record<string, unknown>)[p];
  }
  return Array.isArray(cur) ? cur[index] : undefined;
}

/** A stable text for an entry: strings as they are, objects with sorted keys. */
function canonical(value: unknown): string {
  if (typeof value === "string") return value;
  if (value === null || typeof value !== "object") return JSON.stringify(value);
  const obj = value as Record<string, unknown>;
  return JSON.stringify(Object.fromEntries(Object.keys(obj).sort().map((k) => [k, obj[k]])));
}

/** The session an event belongs to, as far as explaining it goes. */
export interface ExplainSession {
  id: string;
  /** What the journal records of the session's policy: its name, a template or a file ref. */
  policy: string;
  workspace: string;
  /** The mode the session ran in, when recorded (`--mode` overrides the policy's). */
  mode?: string;
}

/** Where {@link explainJournaledEvent} finds the policy and what it compiles against. */
export interface ExplainEventOptions {
  session: ExplainSession;
  /** A policy to explain against instead of the session's (a template name or a file). */
  policy?: string;
  /** Whether a session policy that names a file may be read (not from the API). */
  allowFiles: boolean;
  home: string;
  env: Readonly<Record<string, string>>;
  /** Sentry's own directories, which the guard keeps from the agent. */
  guarded: readonly string[];
  /** The directory relative policy files resolve from. */
  cwd: string;
  /**
   * The session's journaled policy reloads, oldest first: an event after an applied reload is
   * explained against the policy that reload applied, and its hash is checked.
   */
  reloads?: readonly JournaledReload[];
  /** The hash a reload journals of a resolved policy (sha256 of its canonical JSON). */
  hashOf?: (policy: ResolvedPolicy) => string;
}

/** What {@link explainJournaledEvent} reads of a journaled policy reload. */
export interface JournaledReload {
  ts: string;
  outcome: "applied" | "refused";
  /** The policy applied: a template name or an absolute file. */
  policy: string;
  /** The hash of the resolved policy applied, or null. */
  newHash: string | null;
}

/** An explained journaled event, with the policy used and what to warn about. */
export interface EventExplanation {
  event: AgentEvent;
  /** The policy explained against, as given or recorded, and the files of its layers. */
  policy: { ref: string; name: string; files: string[] };
  explanation: Explanation;
  /** Why the explanation may not be what decided the event back then. */
  warnings: string[];
}

/**
 * Explains a journaled event under its session's policy (or `options.policy`): loads the
 * policy's layers for the file and line of each entry, compiles it for the session's workspace,
 * and compares the decision now with the journaled one, warning when they differ (the policy
 * changed since, or it is not the one that decided). Throws a {@link PolicyError} when the
 * policy cannot be found or loaded.
 */
export async function explainJournaledEvent(
  event: AgentEvent,
  options: ExplainEventOptions,
): Promise<EventExplanation> {
  const warnings: string[] = [];
  // After an applied reload, the event was decided by the policy that reload applied.
  const reload = (options.reloads ?? []).filter((r) => r.outcome === "applied" && r.ts <= event.ts)
    .at(-1);
  const recorded = reload?.policy ?? options.session.policy;
  let ref = options.policy;
  if (ref === undefined) {
    const looksLikeFile = recorded.includes("/") || /\.ya?ml$/i.test(recorded);
    if (isTemplateName(recorded) || (looksLikeFile && options.allowFiles)) {
      ref = recorded;
    } else {
      throw new PolicyError(
        `Cannot explain event "${event.id}": session "${options.session.id}" ran policy "${recorded}"${
          reload === undefined ? "" : ` (reloaded at ${reload.ts})`
        }, which is not a built-in template${
          options.allowFiles ? " nor a file" : ""
        }; the journal keeps only its name`,
        { file: recorded },
      );
    }
  } else if (ref !== recorded) {
    warnings.push(`explaining against "${ref}"; the session ran policy "${recorded}"`);
  }
  const layers = await loadPolicyLayers(ref, { cwd: options.cwd });
  const resolved = resolveLayers(layers);
  resolved.workspace = options.session.workspace;
  // The mode the session ran in (`--mode` patches the policy at start): it caps the response.
  const mode = MODES.find((m) => m === options.session.mode);
  if (options.policy === undefined && reload === undefined && mode !== undefined) {
    resolved.mode = mode;
  }
  const compiled = compilePolicy(resolved, {
    home: options.home,
    workspace: options.session.workspace,
    env: options.env,
    guarded: options.guarded,
  });
  if (
    options.policy === undefined && reload?.newHash != null && options.hashOf !== undefined &&
    options.hashOf(resolved) !== reload.newHash
  ) {
    warnings.push(
      `policy "${ref}" is not what the reload of ${reload.ts} applied (sha256 ${
        options.hashOf(resolved).slice(0, 12)
      } now, ${
        reload.newHash.slice(0, 12)
      } then): the file changed since, or the session ran with inline flags`,
    );
  }
  const explanation = explainAction(event, { compiled, layers });
  const now = explanation.decision;
  if (
    now.verdict !== event.verdict || now.rule !== event.rule || now.response !== event.response ||
    now.risk !== event.risk
  ) {
    warnings.push(
      `the policy decides differently now than when the event was journaled (then: ${event.verdict} by ${event.rule}, risk ${event.risk}, ${event.response}; now: ${now.verdict} by ${now.rule}, risk ${now.risk}, ${now.response}): it changed since, the session ran with flags that patched it, or it is not the one that decided`,
    );
  }
  return {
    event,
    policy: {
      ref,
      name: resolved.name,
      files: layers.map((l) => l.path ?? `policies/${l.source}.yaml`),
    },
    explanation,
    warnings,
  };
}
