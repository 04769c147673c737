import { type Decision, type Kind, type Response, responseRank, RESPONSES } from "../events/mod.ts";
import type { CompiledAccess, CompiledMatch, CompiledPolicy, CompiledProcess } from "./compile.ts";
import {
  type Endpoint,
  type NetworkEntry,
  networkEntryMatches,
  normalizePath,
  parseEndpoint,
} from "./patterns.ts";
import { GlobSet, type PathKey, pathKey } from "./glob_set.ts";
import type { ResolvedAccess } from "./schema.ts";
import { commandFactors, endpointFactors, type FactorDraft, pathFactors, POINTS } from "./risk.ts";

/** The part of an event the engine reads. Any `Observation` or `AgentEvent` fits. */
export interface Action {
  kind: Kind;
  target: string;
  exe?: string | null;
  cmdline?: readonly string[];
  detail?: Readonly<Record<string, unknown>>;
  /**
   * The acting process. `null` means a sensor saw the action but no evidence named a process of
   * the agent (an inotify event, say): such an action is judged, but gets at most an alert.
   */
  pid?: number | null;
}

/** Which policy entry decided, before the decision is assembled. */
interface Verdict {
  deny: boolean;
  rule: string;
  /** The violation factor, for a deny. */
  violation: FactorDraft | null;
  /** The most drastic response a matching custom rule asks for. */
  ruleResponse: Response | null;
}

const ALLOW_RANK = responseRank("alert");
const BLOCK_RANK = responseRank("block");

/**
 * Decides on one action under a compiled policy. Pure: no I/O, no clock, no globals. Returns
 * the verdict, the risk (factors that add up to it), the rule or section that decided, and the
 * response (from the thresholds, or a matching rule, capped by the mode). Precedence: a monitor
 * switched off allows; then custom rules; then the section's deny list; then its allow list;
 * then the section's default. A denied action scores at least the alert threshold. An allowed
 * one, or one that failed in the kernel (`detail.result: "failed"`: it did nothing), never gets
 * more than an alert; one with `pid: null` (no evidence names the acting process) gets none.
 */
export function evaluate(input: Action, policy: CompiledPolicy): Decision {
  const action = input.kind.startsWith("file.") ? normalizeFileAction(input) : input;
  const factors: FactorDraft[] = [{
    id: "kind",
    points: POINTS.kind[action.kind],
    reason: `a ${action.kind} action`,
  }];
  const process = processOf(action);
  let verdict: Verdict;
  const monitor = monitorOf(action.kind);
  const guard = guardVerdict(action, policy);
  if (guard !== null) {
    verdict = guard;
  } else if (!policy.monitors[monitor]) {
    verdict = { deny: false, rule: `monitors.${monitor}`, violation: null, ruleResponse: null };
  } else {
    verdict = sectionVerdict(action, policy, process, factors);
    const ruled = ruleVerdict(action, policy, process, factors);
    if (ruled !== null) {
      if (verdict.violation !== null) factors.push(verdict.violation);
      verdict = ruled;
    }
  }
  const blocked = typeof action.detail?.blocked === "string";
  const failed = action.detail?.result === "failed" && !blocked;
  if (blocked && verdict.deny) {
    factors.push({
      id: "blocked",
      points: 0,
      reason: `Sentry failed the call with ${
        String(action.detail?.blocked)
      } before it ran: nothing happened`,
    });
  }
  if (failed && verdict.deny && isLookup(action, verdict)) {
    // A runtime probing for a file that is not there (a library search path, a package.json up
    // the tree) read nothing: outside every deny list, it is no violation.
    verdict = { deny: false, rule: verdict.rule, violation: null, ruleResponse: null };
    factors.push({
      id: "lookup",
      points: 0,
      reason: `a lookup of a name that does not exist (${
        String(action.detail?.errno)
      }), outside every deny list: nothing was read`,
    });
  }
  if (verdict.violation !== null) factors.push(verdict.violation);
  if (failed && verdict.deny) {
    const errno = action.detail?.errno;
    factors.push({
      id: "failed",
      points: 0,
      reason: `the kernel refused the action${
        typeof errno === "string" ? ` (${errno})` : ""
      }: nothing happened, so it gets at most an alert`,
    });
  }
  return decide(verdict, factors, {
    policy,
    unattributed: action.pid === null,
    failed,
    blocked: blocked && verdict.deny,
    guard: guard !== null,
  });
}

/**
 * Sentry's own guard, which no policy can loosen: a file action beneath Sentry's data or
 * configuration (`guard.sentry_home`), or a signal, trace or memory write aimed at a process
 * outside the agent's tree (`proc.control`, `guard.process`), is denied. Null when it does not
 * apply.
 */
function guardVerdict(action: Action, policy: CompiledPolicy): Verdict | null {
  if (action.kind === "proc.control") {
    const how = typeof action.detail?.syscall === "string" ? action.detail.syscall : "control";
    return denied(
      "guard.process",
      `${how} aimed at ${action.target}, a process outside the agent's own tree (Sentry, its ` +
        "watchdog or another program): the agent may not signal, trace or write to it",
    );
  }
  if (!action.kind.startsWith("file.") || policy.guarded.length === 0) return null;
  const from = action.detail?.from;
  for (const path of typeof from === "string" ? [action.target, from] : [action.target]) {
    const dir = policy.guarded.find((d) => path === d || path.startsWith(d === "/" ? d : d + "/"));
    if (dir !== undefined) {
      return denied(
        "guard.sentry_home",
        `${path} is beneath ${dir}, Sentry's own data (the journal, the token, the snapshots): ` +
          "out of the agent's reach whatever the policy says",
      );
    }
  }
  return null;
}

/**
 * Whether a refused read only looked up a name that does not exist, and was denied by the read
 * section's default alone (not by a deny list or a rule, which still count an attempt).
 */
function isLookup(action: Action, verdict: Verdict): boolean {
  const errno = action.detail?.errno;
  return action.kind === "file.read" && (errno === "ENOENT" || errno === "ENOTDIR") &&
    verdict.rule === "files.read.default";
}

/** The action with its paths (target, and a rename's source) free of `.`, `..` and `//`. */
function normalizeFileAction(action: Action): Action {
  const target = normalizePath(action.target);
  const from = action.detail?.from;
  const source = typeof from === "string" ? normalizePath(from) : from;
  if (target === action.target && source === from) return action;
  return {
    ...action,
    target,
    ...(source === from ? {} : { detail: { ...action.detail, from: source } }),
  };
}

function decide(
  verdict: Verdict,
  drafts: FactorDraft[],
  how: {
    policy: CompiledPolicy;
    unattributed: boolean;
    failed: boolean;
    blocked: boolean;
    guard: boolean;
  },
): Decision {
  const { policy } = how;
  const { thresholds } = policy;
  let sum = 0;
  for (const f of drafts) sum += f.points;
  if (verdict.deny && sum < thresholds.alert) {
    drafts.push({
      id: "deny_floor",
      points: thresholds.alert - sum,
      reason: `a denied action scores at least the alert threshold (${thresholds.alert})`,
    });
    sum = thresholds.alert;
  }
  if (sum > 100) {
    drafts.push({ id: "cap", points: 100 - sum, reason: "the score is capped at 100" });
    sum = 100;
  }
  let response: Response;
  if (verdict.ruleResponse !== null) response = verdict.ruleResponse;
  else if (sum >= thresholds.kill) response = "kill";
  else if (sum >= thresholds.rollback) response = "rollback";
  else if (sum >= thresholds.pause) response = "pause";
  else if (sum >= thresholds.alert) response = "alert";
  else response = "none";
  let rank = responseRank(response);
  // In mode `block`, every denial is blocked (where the sensing tier can block).
  if (verdict.deny && rank < BLOCK_RANK && policy.modeCap === BLOCK_RANK) rank = BLOCK_RANK;
  // An action Sentry blocked before it ran got (at least) a block.
  if (how.blocked && rank < BLOCK_RANK) rank = BLOCK_RANK;
  // No evidence ties an unattributed action to the agent (another program may have done it): it
  // is journaled and judged, but alerts no one and stops nothing.
  if (how.unattributed) rank = 0;
  // An allowed action never stops the agent; nor does one no evidence ties to the agent, nor
  // one the kernel refused (it did nothing).
  if ((!verdict.deny || how.unattributed || how.failed) && rank > ALLOW_RANK) rank = ALLOW_RANK;
  if (rank > policy.modeCap) rank = policy.modeCap;
  // Sentry's guard holds in every mode, monitor included: what it stopped is journaled as such.
  if (how.guard && how.blocked && rank < BLOCK_RANK) rank = BLOCK_RANK;
  return {
    verdict: verdict.deny ? "deny" : "allow",
    risk: sum,
    factors: drafts,
    rule: verdict.rule,
    response: RESPONSES[rank] as Response,
  };
}

function monitorOf(kind: Kind): keyof CompiledPolicy["monitors"] {
  switch (kind) {
    case "proc.exec":
    case "proc.exit":
    case "proc.control":
      return "processes";
    case "net.connect":
    case "net.listen":
      return "network";
    case "db.connect":
      return "database";
    case "resource.cpu":
      return "cpu";
    case "resource.memory":
      return "memory";
    default:
      return "files";
  }
}

/**
 * The acting process as the matchers see it. Built lazily: most events are file actions that no
 * process entry looks at, and joining the arguments costs more than the rest of a decision.
 */
class ProcessView {
  readonly #action: Action;
  #path: string | null = null;
  #name: string | null = null;
  #args: string | null = null;
  #names: readonly string[] | null = null;

  constructor(action: Action) {
    this.#action = action;
  }

  get path(): string {
    return this.#path ??= this.#action.exe ?? this.#action.cmdline?.[0] ?? "";
  }

  get name(): string {
    if (this.#name === null) {
      const path = this.path;
      this.#name = path.slice(path.lastIndexOf("/") + 1);
    }
    return this.#name;
  }

  get args(): string {
    return this.#args ??= (this.#action.cmdline ?? []).slice(1).join(" ");
  }

  /**
   * Every name the program goes by: the executable's, argv[0]'s, and for an interpreter running
   * a script (`sh ./nc`, `python3 tool.py`), the script's. A name-based deny must not be dodged
   * by renaming argv[0] or by wrapping a tool in a script.
   */
  get names(): readonly string[] {
    if (this.#names === null) {
      const names = [this.name];
      const argv = this.#action.cmdline ?? [];
      const add = (p: string | undefined) => {
        if (p === undefined || p === "") return;
        const n = p.slice(p.lastIndexOf("/") + 1);
        if (n !== "" && !names.includes(n)) names.push(n);
      };
      add(argv[0]);
      const script = argv[1];
      if (INTERPRETER.test(this.name) && script !== undefined && !script.startsWith("-")) {
        add(script);
      }
      this.#names = names;
    }
    return this.#names;
  }
}

/** Interpreters whose first argument is the program that really runs. */
const INTERPRETER =
  /^(?:sh|bash|dash|zsh|ksh|mksh|fish|python[0-9.]*|perl[0-9.]*|ruby[0-9.]*|node|nodejs|php[0-9.]*)$/;

function processOf(action: Action): ProcessView {
  return new ProcessView(action);
}

const ALLOWED = (rule: string): Verdict => ({
  deny: false,
  rule,
  violation: null,
  ruleResponse: null,
});

function denied(rule: string, reason: string, points: number = POINTS.denied_by_list): Verdict {
  return { deny: true, rule, violation: { id: "violation", points, reason }, ruleResponse: null };
}

function sectionVerdict(
  action: Action,
  policy: CompiledPolicy,
  process: ProcessView,
  factors: FactorDraft[],
): Verdict {
  switch (action.kind) {
    case "file.read":
      return fileVerdict(action.target, policy.files.read, { action, policy, factors });
    case "file.write":
      return fileVerdict(action.target, policy.files.write, { action, policy, factors });
    case "file.create": {
      const to = fileVerdict(action.target, policy.files.write, { action, policy, factors });
      // A hard link to a file the policy denies reading is a second name to read it by.
      const of = typeof action.detail?.linkOf === "string" ? action.detail.linkOf : null;
      return to.deny || of === null ? to : readDenied(of, "link", policy) ?? to;
    }
    case "file.delete":
      return fileVerdict(action.target, policy.files.delete, { action, policy, factors });
    case "file.rename": {
      const from = typeof action.detail?.from === "string" ? action.detail.from : null;
      const to = fileVerdict(action.target, policy.files.write, { action, policy, factors });
      if (from === null) return to;
      // The source's sensitivity counts too (moving ~/.ssh/id_rsa away is reading it), once per factor.
      const extra: FactorDraft[] = [];
      const src = fileVerdict(from, policy.files.delete, { action, policy, factors: extra });
      for (const f of extra) if (!factors.some((g) => g.id === f.id)) factors.push(f);
      return to.deny ? to : src.deny ? src : readDenied(from, "rename", policy) ?? to;
    }
    case "proc.exec":
      commandFactors(process.names, process.args, factors);
      return processVerdict(process, policy);
    case "proc.exit":
      return ALLOWED("processes");
    case "proc.control":
      // Decided by the guard before the sections: unreachable.
      return ALLOWED("processes");
    case "net.connect":
    case "net.listen":
    case "db.connect":
      return networkVerdict(action, policy, factors);
    case "resource.cpu":
      return cpuVerdict(action, policy);
    case "resource.memory": {
      const mb = numberDetail(action, "mb");
      const limit = policy.limits.memory_mb;
      return mb !== null && mb > limit
        ? denied(
          "limits.memory_mb",
          `memory at ${mb} MB is above the limit of ${limit} MB`,
          POINTS.limit_exceeded,
        )
        : ALLOWED("limits.memory_mb");
    }
  }
}

/**
 * A CPU spike is denied when its percent is above `limits.cpu_percent` and it lasted at least
 * `limits.cpu_seconds`. A reading without a duration (a `policy test` line) is judged on its
 * percent alone.
 */
function cpuVerdict(action: Action, policy: CompiledPolicy): Verdict {
  const percent = numberDetail(action, "percent");
  const duration = numberDetail(action, "duration_seconds");
  const { cpu_percent: limit, cpu_seconds: seconds } = policy.limits;
  if (percent === null || percent <= limit) return ALLOWED("limits.cpu_percent");
  if (duration !== null && duration < seconds) return ALLOWED("limits.cpu_seconds");
  return denied(
    "limits.cpu_percent",
    duration === null
      ? `CPU at ${percent}% is above the limit of ${limit}%`
      : `CPU at ${percent}% for ${duration} s is above the limit of ${limit}% for ${seconds} s`,
    POINTS.limit_exceeded,
  );
}

function numberDetail(action: Action, key: string): number | null {
  const v = action.detail?.[key];
  return typeof v === "number" && Number.isFinite(v) ? v : null;
}

interface FileContext {
  action: Action;
  policy: CompiledPolicy;
  /** Where to add the path's sensitivity factors, or null to skip them. */
  factors: FactorDraft[] | null;
}

/**
 * A rename or hard link of a file that `files.read.deny` lists (explicitly: not a default): the
 * file would be readable under the new name, which no read deny names. Null when not listed.
 */
function readDenied(path: string, op: "rename" | "link", policy: CompiledPolicy): Verdict | null {
  const access = policy.files.read;
  if (access.deny.size === 0) return null;
  const hit = access.deny.firstKey(pathKey(path));
  if (hit === undefined) return null;
  return denied(
    `${access.section}.deny`,
    `"${path}" matches ${access.section}.deny "${hit}": ${
      op === "rename" ? "moved" : "linked"
    } elsewhere, it could be read under the new name`,
  );
}

function fileVerdict(path: string, access: CompiledAccess, ctx: FileContext): Verdict {
  const { policy } = ctx;
  const key = pathKey(path);
  if (ctx.factors !== null) {
    const insideWorkspace = path === policy.workspace || path.startsWith(policy.workspacePrefix);
    pathFactors(
      key,
      { kind: ctx.action.kind, sensitivity: policy.sensitivity, insideWorkspace },
      ctx.factors,
    );
  }
  if (access.deny.size > 0) {
    const hit = access.deny.firstKey(key);
    if (hit !== undefined) {
      return denied(`${access.section}.deny`, `"${path}" matches ${access.section}.deny "${hit}"`);
    }
  }
  if (access.allow.size > 0 && access.allow.testKey(key)) {
    return ALLOWED(`${access.section}.allow`);
  }
  if (access.default === "deny") {
    return denied(
      `${access.section}.default`,
      `"${path}" is not in ${access.section}.allow (default deny)`,
      POINTS.denied_by_default,
    );
  }
  return ALLOWED(`${access.section}.default`);
}

function processMatches(entry: CompiledProcess, p: ProcessView): boolean {
  if (entry.name !== null) {
    const re = entry.name;
    if (!re.test(p.name) && !p.names.some((n) => re.test(n))) return false;
  }
  if (entry.path !== null && !entry.path.test(p.path)) return false;
  if (entry.args !== null && !entry.args.test(p.args)) return false;
  return true;
}

function processVerdict(p: ProcessView, policy: CompiledPolicy): Verdict {
  const { processes } = policy;
  const hit = processes.deny.find((e) => processMatches(e, p));
  if (hit !== undefined) {
    return denied("processes.deny", `"${p.name}" matches processes.deny ${quote(hit.text)}`);
  }
  if (processes.allow.some((e) => processMatches(e, p))) return ALLOWED("processes.allow");
  if (processes.default === "deny") {
    return denied(
      "processes.default",
      `"${p.name}" is not in processes.allow (default deny)`,
      POINTS.denied_by_default,
    );
  }
  return ALLOWED("processes.default");
}

function quote(text: string): string {
  return text.startsWith("{") ? text : `"${text}"`;
}

function endpointOf(action: Action): Endpoint {
  const hosts = action.detail?.hosts;
  const names = Array.isArray(hosts) ? hosts.filter((h): h is string => typeof h === "string") : [];
  return parseEndpoint(action.target, names);
}

function firstMatch(entries: readonly NetworkEntry[], ep: Endpoint): NetworkEntry | undefined {
  return entries.find((e) => networkEntryMatches(e, ep));
}

function networkVerdict(action: Action, policy: CompiledPolicy, factors: FactorDraft[]): Verdict {
  const ep = endpointOf(action);
  const listen = action.kind === "net.listen";
  endpointFactors(ep.ip, { listen }, factors);
  const { network } = policy;
  if (listen) {
    return network.listen ? ALLOWED("network.listen") : denied(
      "network.listen",
      `listening on "${action.target}" is not allowed (network.listen: false)`,
    );
  }
  const deny = firstMatch(network.deny, ep);
  if (deny !== undefined) {
    return denied("network.deny", `"${action.target}" matches network.deny "${deny.text}"`);
  }
  if (ep.unix !== null) {
    // A unix socket is local IPC (name services, the journal, a desktop bus), not the network:
    // allowed unless a `unix:` entry of network.deny names it.
    return ALLOWED(firstMatch(network.allow, ep) !== undefined ? "network.allow" : "network.unix");
  }
  if (action.kind === "db.connect") {
    if (firstMatch(policy.database.allow, ep) !== undefined) return ALLOWED("database.allow");
    return denied(
      "database.allow",
      `database "${action.target}" is not in database.allow`,
      POINTS.denied_by_default,
    );
  }
  if (firstMatch(network.allow, ep) !== undefined) return ALLOWED("network.allow");
  if (network.default === "deny") {
    return denied(
      "network.default",
      `"${action.target}" is not in network.allow (default deny)`,
      POINTS.denied_by_default,
    );
  }
  return ALLOWED("network.default");
}

/** What rule matching reads of an action, split once per event. */
interface MatchContext {
  action: Action;
  process: ProcessView;
  /** The target split for path globs (file kinds only). */
  key: PathKey | null;
  /** A rename's source, split. */
  fromKey: PathKey | null;
}

function matchHits(m: CompiledMatch, ctx: MatchContext): boolean {
  const { action } = ctx;
  if (m.kinds !== null && !m.kinds.has(action.kind)) return false;
  if (ctx.key !== null) {
    if (
      m.pathTargets !== null && !m.pathTargets.testKey(ctx.key) &&
      (ctx.fromKey === null || !m.pathTargets.testKey(ctx.fromKey))
    ) {
      return false;
    }
  } else if (m.otherTargets !== null && !otherTargetHits(m.otherTargets, action)) {
    return false;
  }
  if (m.processes !== null && !m.processes.some((e) => processMatches(e, ctx.process))) {
    return false;
  }
  return true;
}

/**
 * Tries a rule's wildcard targets on the target and, for network actions, on the host names the
 * address resolves to (`evil.example:443` as well as `203.0.113.9:443`).
 */
function otherTargetHits(targets: readonly RegExp[], action: Action): boolean {
  if (targets.some((re) => re.test(action.target))) return true;
  const hosts = action.detail?.hosts;
  if (!Array.isArray(hosts) || hosts.length === 0) return false;
  const colon = action.target.lastIndexOf(":");
  const port = colon >= 0 ? action.target.slice(colon) : "";
  return hosts.some((h) => typeof h === "string" && targets.some((re) => re.test(h + port)));
}

function matchContext(action: Action, process: ProcessView): MatchContext {
  if (!action.kind.startsWith("file.")) return { action, process, key: null, fromKey: null };
  const from = action.kind === "file.rename" && typeof action.detail?.from === "string"
    ? action.detail.from
    : null;
  return {
    action,
    process,
    key: pathKey(action.target),
    fromKey: from === null ? null : pathKey(from),
  };
}

function ruleVerdict(
  action: Action,
  policy: CompiledPolicy,
  p: ProcessView,
  factors: FactorDraft[],
): Verdict | null {
  const rules = policy.rulesByKind.get(action.kind);
  if (rules === undefined || rules.length === 0) return null;
  let best: Verdict | null = null;
  let bestRisk = -1;
  let response: Response | null = null;
  let ctx: MatchContext | undefined;
  for (const r of rules) {
    ctx ??= matchContext(action, p);
    if (!matchHits(r.match, ctx)) continue;
    if (r.exceptions.some((e) => matchHits(e, ctx as MatchContext))) continue;
    const { rule } = r;
    factors.push({ id: `rule:${rule.id}`, points: rule.risk, reason: rule.description });
    if (rule.risk > bestRisk) {
      bestRisk = rule.risk;
      best = { deny: true, rule: rule.id, violation: null, ruleResponse: null };
    }
    if (
      rule.response !== undefined &&
      (response === null || responseRank(rule.response) > responseRank(response))
    ) {
      response = rule.response;
    }
  }
  if (best !== null) best.ruleResponse = response;
  return best;
}

/**
 * One policy entry that matched an action, as {@link explainMatches} lists it: a custom rule, an
 * entry of a deny or allow list, a section's default, or one of the engine's own checks.
 */
export interface MatchedEntry {
  /**
   * Where the entry lives: `rules`, `files.read.deny`, `network.allow`, `processes.default`,
   * `database.allow`, `limits.memory_mb`, `monitors.files`, `guard.sentry_home`...
   */
  section: string;
  /** The rule id or the entry as written; for a section's default, its value. */
  entry: string;
  /** The entry's place in its resolved list (`policy.rules`, `files.read.deny`...), or null. */
  index: number | null;
  effect: "allow" | "deny";
  /** For a rule: its risk points, and the response it names, if any. */
  risk?: number;
  response?: Response;
  /** For a rule: the indices of its exceptions that matched (non-empty: the rule was exempted). */
  exceptions?: number[];
}

/**
 * Every policy entry that matches an action, in precedence order: Sentry's guard, a monitor
 * switched off, the custom rules (those that apply by risk, highest first, then those an
 * exception exempted), then each section's deny entries, allow entries and, when no entry
 * matched, its default. Pure, like {@link evaluate}, and much slower: it tries every entry
 * instead of stopping at the first, which is what `sentry explain` needs and the hot path must
 * not pay for. {@link evaluate} stays the one that decides.
 */
export function explainMatches(input: Action, policy: CompiledPolicy): MatchedEntry[] {
  const action = input.kind.startsWith("file.") ? normalizeFileAction(input) : input;
  const out: MatchedEntry[] = [];
  const process = processOf(action);
  const guard = guardVerdict(action, policy);
  if (guard !== null) out.push(plain(guard.rule, "sentry", guard.deny ? "deny" : "allow"));
  const monitor = monitorOf(action.kind);
  if (!policy.monitors[monitor]) out.push(plain(`monitors.${monitor}`, "false", "allow"));
  const rules = policy.rulesByKind.get(action.kind) ?? [];
  const applied: MatchedEntry[] = [];
  const exempted: MatchedEntry[] = [];
  const ctx = matchContext(action, process);
  for (const r of rules) {
    if (!matchHits(r.match, ctx)) continue;
    const exceptions: number[] = [];
    r.exceptions.forEach((e, i) => {
      if (matchHits(e, ctx)) exceptions.push(i);
    });
    const entry: MatchedEntry = {
      section: "rules",
      entry: r.rule.id,
      index: policy.policy.rules.indexOf(r.rule),
      effect: "deny",
      risk: r.rule.risk,
      ...(r.rule.response === undefined ? {} : { response: r.rule.response }),
      exceptions,
    };
    (exceptions.length > 0 ? exempted : applied).push(entry);
  }
  // Stable: among rules of equal risk, the first in policy order wins, as in evaluate().
  applied.sort((a, b) => (b.risk ?? 0) - (a.risk ?? 0));
  out.push(...applied, ...exempted);
  out.push(...sectionMatches(action, policy, process));
  return out;
}

function plain(section: string, entry: string, effect: "allow" | "deny"): MatchedEntry {
  return { section, entry, index: null, effect };
}

function accessMatches(
  path: string,
  access: CompiledAccess,
  labels: ResolvedAccess,
): MatchedEntry[] {
  const out: MatchedEntry[] = [];
  for (const list of ["deny", "allow"] as const) {
    const set = access[list];
    const one = singleGlobs(set);
    set.globs.forEach((glob, i) => {
      if (one[i]?.test(path)) {
        out.push({
          section: `${access.section}.${list}`,
          entry: labels[list][i] ?? glob,
          index: i,
          effect: list,
        });
      }
    });
  }
  if (out.length === 0) {
    out.push(plain(`${access.section}.default`, access.default, access.default));
  }
  return out;
}

/** The `deny` entries of `access` that match `path`: a rename's or hard link's source. */
function readDenyMatches(
  path: string,
  access: CompiledAccess,
  labels: ResolvedAccess,
): MatchedEntry[] {
  return accessMatches(path, access, labels).filter((m) => m.section === `${access.section}.deny`);
}

/** Each glob of a set on its own, compiled once per set: explaining tries them all. */
const SINGLE_GLOBS = new WeakMap<GlobSet, GlobSet[]>();

function singleGlobs(set: GlobSet): GlobSet[] {
  let one = SINGLE_GLOBS.get(set);
  if (one === undefined) {
    one = set.globs.map((g) => new GlobSet([g]));
    SINGLE_GLOBS.set(set, one);
  }
  return one;
}

function processListMatches(p: ProcessView, policy: CompiledPolicy): MatchedEntry[] {
  const out: MatchedEntry[] = [];
  for (const list of ["deny", "allow"] as const) {
    policy.processes[list].forEach((e, i) => {
      if (processMatches(e, p)) {
        out.push({ section: `processes.${list}`, entry: e.text, index: i, effect: list });
      }
    });
  }
  if (out.length === 0) {
    out.push(plain("processes.default", policy.processes.default, policy.processes.default));
  }
  return out;
}

function networkMatches(action: Action, policy: CompiledPolicy): MatchedEntry[] {
  const { network } = policy;
  if (action.kind === "net.listen") {
    return [plain("network.listen", String(network.listen), network.listen ? "allow" : "deny")];
  }
  const ep = endpointOf(action);
  const out: MatchedEntry[] = [];
  const list = (section: string, entries: readonly NetworkEntry[], effect: "allow" | "deny") =>
    entries.forEach((e, i) => {
      if (networkEntryMatches(e, ep)) out.push({ section, entry: e.text, index: i, effect });
    });
  list("network.deny", network.deny, "deny");
  if (ep.unix !== null) {
    list("network.allow", network.allow, "allow");
    if (out.length === 0) out.push(plain("network.unix", "allow", "allow"));
    return out;
  }
  if (action.kind === "db.connect") {
    list("database.allow", policy.database.allow, "allow");
    if (out.length === 0) out.push(plain("database.allow", "[]", "deny"));
    return out;
  }
  list("network.allow", network.allow, "allow");
  if (out.length === 0) out.push(plain("network.default", network.default, network.default));
  return out;
}

function sectionMatches(action: Action, policy: CompiledPolicy, p: ProcessView): MatchedEntry[] {
  const { files } = policy;
  const labels = policy.policy.files;
  switch (action.kind) {
    case "file.read":
      return accessMatches(action.target, files.read, labels.read);
    case "file.write":
      return accessMatches(action.target, files.write, labels.write);
    case "file.create": {
      const of = action.detail?.linkOf;
      return [
        ...accessMatches(action.target, files.write, labels.write),
        ...(typeof of === "string" ? readDenyMatches(of, files.read, labels.read) : []),
      ];
    }
    case "file.delete":
      return accessMatches(action.target, files.delete, labels.delete);
    case "file.rename": {
      const from = action.detail?.from;
      return [
        ...accessMatches(action.target, files.write, labels.write),
        ...(typeof from === "string" ? accessMatches(from, files.delete, labels.delete) : []),
        ...(typeof from === "string" ? readDenyMatches(from, files.read, labels.read) : []),
      ];
    }
    case "proc.exec":
      return processListMatches(p, policy);
    case "proc.exit":
    case "proc.control":
      return [plain("processes", "exit", "allow")];
    case "net.connect":
    case "net.listen":
    case "db.connect":
      return networkMatches(action, policy);
    case "resource.cpu": {
      const v = cpuVerdict(action, policy);
      return [plain(v.rule, String(policy.limits.cpu_percent), v.deny ? "deny" : "allow")];
    }
    case "resource.memory": {
      const mb = numberDetail(action, "mb");
      const over = mb !== null && mb > policy.limits.memory_mb;
      return [plain("limits.memory_mb", String(policy.limits.memory_mb), over ? "deny" : "allow")];
    }
  }
}
