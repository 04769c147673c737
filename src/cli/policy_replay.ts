/**
 * `sentry policy learn` and the backtest of `sentry policy test --session|--since`: both read
 * journaled events of past sessions and judge them under a policy other than the one that
 * decided them.
 * @module
 */
import { resolve } from "node:path";
import type { AgentEvent } from "../events/mod.ts";
import type { Journal, SessionSummary } from "../journal/mod.ts";
import {
  Backtest,
  type BacktestResult,
  CHANGES,
  crossedFailOn,
  evaluate,
  type FailOn,
  isTemplateName,
  loadPolicy,
  parseFailOn,
  PolicyLearner,
} from "../policy/mod.ts";
import { ExitCode, UsageError } from "./errors.ts";
import { findSession, openForReading } from "./journal_access.ts";
import { eprintln, paint, printJson, println, printTable } from "./output.ts";
import {
  currentEnvironment,
  type LoadedPolicy,
  loadPolicyFromFlags,
  type PolicyFlags,
} from "./policy_options.ts";
import { parseTimeArg } from "./time_window.ts";

/** Events read from the journal per query. */
const PAGE = 5000;

/** Reads a session's events, oldest first, a page at a time. */
function* sessionEvents(journal: Journal, session: string): Generator<AgentEvent> {
  let after: string | undefined;
  while (true) {
    const page = journal.queryEvents({
      session,
      limit: PAGE,
      ...(after === undefined ? {} : { after }),
    });
    yield* page;
    if (page.length < PAGE) return;
    after = page[page.length - 1]?.id;
  }
}

/** Reads every session's events at or after `since`, oldest first. */
function* eventsSince(journal: Journal, since: string): Generator<AgentEvent> {
  let after: string | undefined;
  while (true) {
    const page = journal.queryEvents({
      since,
      limit: PAGE,
      ...(after === undefined ? {} : { after }),
    });
    yield* page;
    if (page.length < PAGE) return;
    after = page[page.length - 1]?.id;
  }
}

/** Compiles a policy once per workspace: sessions of one journal may have different ones. */
class PerWorkspace {
  readonly #flags: PolicyFlags;
  readonly #cache = new Map<string, Promise<LoadedPolicy>>();

  constructor(flags: PolicyFlags) {
    this.#flags = flags;
  }

  get(workspace: string): Promise<LoadedPolicy> {
    const ws = this.#flags.workspace ?? workspace;
    let loaded = this.#cache.get(ws);
    if (loaded === undefined) {
      loaded = loadPolicyFromFlags({ ...this.#flags, workspace: ws });
      this.#cache.set(ws, loaded);
    }
    return loaded;
  }
}

/** The options of `sentry policy learn`. */
export interface LearnFlags {
  template?: string;
  output?: string;
  force?: boolean;
  name?: string;
  collapse?: string;
  hosts?: string;
  args?: string;
}

function positiveInt(flag: string, text: string | undefined, fallback: number): number {
  if (text === undefined) return fallback;
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1) {
    throw new UsageError(`Invalid ${flag} "${text}": give a whole number, at least 1`);
  }
  return n;
}

/**
 * `sentry policy learn SESSION...`: writes a policy that extends a template and allows what the
 * sessions did, checks that it validates, and writes it to `--output` or stdout.
 */
export async function policyLearn(refs: readonly string[], flags: LearnFlags): Promise<void> {
  const collapse = positiveInt("--collapse", flags.collapse, 5);
  const hosts = positiveInt("--hosts", flags.hosts, 3);
  const args = positiveInt("--args", flags.args, 3);
  const { journal } = openForReading();
  try {
    const sessions: SessionSummary[] = [];
    for (const ref of refs) {
      const s = findSession(journal, ref);
      if (!sessions.some((x) => x.id === s.id)) sessions.push(s);
    }
    const first = sessions[0] as SessionSummary;
    const template = flags.template ??
      (isTemplateName(first.policy) ? first.policy : "default");
    const env = currentEnvironment();
    const extendsRef = isTemplateName(template) ? template : resolve(env.cwd, template);
    const compiled = new PerWorkspace({ policy: extendsRef });
    const learner = new PolicyLearner({ home: env.home, collapse, hosts, args });
    for (const s of sessions) {
      const { compiled: template } = await compiled.get(s.workspace);
      const session = { id: s.id, agent: s.agent, workspace: s.workspace, template };
      for (const event of sessionEvents(journal, s.id)) learner.add(event, session);
    }
    const name = flags.name ?? `learned-${isTemplateName(template) ? template : "policy"}`;
    const text = learner.render({ name, extends: extendsRef });
    // The promise of the command: what it writes validates. A failure here is Sentry's bug.
    const probe = resolve(env.cwd, "learned-policy.yaml");
    await loadPolicy(probe, {
      cwd: env.cwd,
      readFile: (p) => p === probe ? Promise.resolve(text) : Deno.readTextFile(p),
    });
    if (flags.output === undefined) {
      println(text.trimEnd());
    } else {
      try {
        await Deno.writeTextFile(flags.output, text, { createNew: !flags.force });
      } catch (error) {
        if (error instanceof Deno.errors.AlreadyExists) {
          throw new UsageError(`Cannot write "${flags.output}": the file exists`, {
            hint: "add --force to overwrite it",
          });
        }
        throw error;
      }
      eprintln(
        `wrote ${flags.output}: learned from ${sessions.length} session(s), ${learner.events} events, extends ${extendsRef}; check it with: sentry policy validate ${flags.output}`,
      );
    }
  } finally {
    journal.close();
  }
}

/** The options of the backtest form of `sentry policy test`. */
export interface BacktestFlags extends PolicyFlags {
  session?: string;
  since?: string;
  failOn?: string;
  json?: boolean;
}

/**
 * `sentry policy test POLICY --session ID|last|--since T`: replays journaled events against a
 * policy and prints the verdict changes; exits 1 when one crosses `--fail-on`.
 */
export async function policyBacktest(policyRef: string, flags: BacktestFlags): Promise<void> {
  let failOn: FailOn[] = [];
  if (flags.failOn !== undefined) {
    try {
      failOn = parseFailOn(flags.failOn);
    } catch (error) {
      throw new UsageError((error as Error).message, {
        hint: "--fail-on denied fails on any new denial; --fail-on denied=10,response=50",
      });
    }
  }
  if (flags.session !== undefined && flags.since !== undefined) {
    throw new UsageError("Give --session or --since, not both");
  }
  const since = flags.since === undefined
    ? undefined
    : parseTimeArg(flags.since, { flag: "--since" });
  const { journal } = openForReading();
  let result: BacktestResult;
  let scope: string;
  const { session: _s, since: _t, failOn: _f, json: _j, ...policyFlags } = flags;
  const policies = new PerWorkspace({ ...policyFlags, policy: policyRef });
  let name = policyRef;
  try {
    const backtest = new Backtest();
    const workspaces = new Map<string, string>();
    const workspaceOf = (id: string) => {
      let ws = workspaces.get(id);
      if (ws === undefined) workspaces.set(id, ws = journal.getSession(id).workspace);
      return ws;
    };
    let events: Iterable<AgentEvent>;
    if (flags.session !== undefined) {
      const s = findSession(journal, flags.session);
      scope = `session ${s.id} (${s.agent}, policy ${s.policy})`;
      events = sessionEvents(journal, s.id);
    } else {
      scope = `the events since ${since}`;
      events = eventsSince(journal, since as string);
    }
    for (const event of events) {
      const { compiled, resolved } = await policies.get(workspaceOf(event.session));
      name = resolved.name;
      backtest.add(event, evaluate(event, compiled));
    }
    result = backtest.result();
  } finally {
    journal.close();
  }
  const crossed = crossedFailOn(result, failOn);
  if (flags.json) {
    printJson({ type: "backtest", policy: name, scope, ...result, failed: crossed });
  } else {
    printBacktest(result, { name, scope });
  }
  if (crossed.length > 0) {
    throw new ExitCode(1, `--fail-on crossed: ${crossed.join(", ")}`);
  }
}

const TITLES = {
  newly_denied: "newly denied",
  newly_allowed: "newly allowed",
  changed_response: "changed response",
} as const;

function printBacktest(result: BacktestResult, about: { name: string; scope: string }): void {
  println(`Backtest of policy "${about.name}" over ${about.scope}: ${result.events} events`);
  printTable([
    ["CHANGE", "EVENTS"],
    ...CHANGES.map((c) => [TITLES[c], String(result.counts[c])]),
    ["unchanged", String(result.unchanged)],
  ]);
  for (const change of CHANGES) {
    const groups = result.groups[change];
    if (groups.length === 0) continue;
    println();
    println(
      paint(
        `${TITLES[change]} (${result.counts[change]}):`,
        change === "newly_denied" ? "red" : "bold",
      ),
    );
    for (const g of groups) {
      println(`  ${g.rule}${g.responses === undefined ? "" : ` (${g.responses})`}: ${g.count}`);
      for (const e of g.examples) {
        println(
          `    ${e.id}  ${e.kind} ${e.target}  was ${e.before.verdict}/${e.before.response} by ${e.before.rule}, now ${e.after.verdict}/${e.after.response} by ${e.after.rule}`,
        );
      }
    }
  }
}
