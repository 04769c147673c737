import type { Command } from "commander";
import YAML from "yaml";
import { z } from "zod";
import { KINDS, type Response, RESPONSES } from "../events/mod.ts";
import {
  type Action,
  evaluate,
  loadPolicy,
  parsePolicy,
  PolicyError,
  PolicyFile,
  readTemplate,
  TEMPLATES,
} from "../policy/mod.ts";
import { ExitCode, UsageError } from "./errors.ts";
import { eprintln, paint, printJson, println, printTable } from "./output.ts";
import { addPolicyFlags, loadPolicyFromFlags, type PolicyFlags } from "./policy_options.ts";
import {
  type BacktestFlags,
  type LearnFlags,
  policyBacktest,
  policyLearn,
} from "./policy_replay.ts";
import { registerPolicyReload } from "./policy_reload.ts";

/** Adds `sentry policy list|show|create|validate|schema|test|learn`. */
export function registerPolicyCommands(program: Command): void {
  const policy = program.command("policy").description(
    "list, show, create, validate and test policies",
  );

  registerPolicyReload(policy);

  policy.command("list").description("list the built-in templates")
    .option("--json", "print JSON lines")
    .action(async (opts: { json?: boolean }) => {
      const rows: string[][] = [["TEMPLATE", "VERSION", "REQUIRES", "MODE", "DESCRIPTION"]];
      for (const name of TEMPLATES) {
        const p = await loadPolicy(name);
        // The template's own file says its version and the Sentry it needs (not inherited).
        const own = parsePolicy(await readTemplate(name), name);
        const version = own.version ?? null;
        const requires = own.required_sentry_version ?? null;
        if (opts.json) {
          printJson({
            name,
            version,
            required_sentry_version: requires,
            mode: p.mode,
            description: p.description,
          });
        } else {
          rows.push([
            name,
            version ?? "-",
            requires === null ? "-" : `sentry >= ${requires}`,
            p.mode,
            p.description.split("\n")[0] ?? "",
          ]);
        }
      }
      if (!opts.json) printTable(rows);
    });

  policy.command("show").description(
    "print a fully resolved policy (extends merged, defaults filled)",
  )
    .argument("<name|file>", "a template name or a policy file")
    .option("--json", "print JSON instead of YAML")
    .action(async (ref: string, opts: { json?: boolean }) => {
      const p = await loadPolicy(ref);
      if (opts.json) printJson(p);
      else println(YAML.stringify(p, { lineWidth: 0 }).trimEnd());
    });

  policy.command("create").description("write a starter policy that extends a template")
    .requiredOption("-t, --template <name>", `one of ${TEMPLATES.join(", ")}`)
    .option("--agent <name>", "the agent's name, used as the policy name")
    .option("-o, --output <file>", "write to a file instead of stdout")
    .option("-f, --force", "overwrite the output file if it exists")
    .action(
      async (opts: { template: string; agent?: string; output?: string; force?: boolean }) => {
        if (!(TEMPLATES as readonly string[]).includes(opts.template)) {
          throw new UsageError(
            `Unknown template "${opts.template}": choose one of ${TEMPLATES.join(", ")}`,
          );
        }
        const text = await starterPolicy(opts.template, opts.agent ?? `my-${opts.template}`);
        if (opts.output === undefined) {
          println(text.trimEnd());
          return;
        }
        try {
          await Deno.writeTextFile(opts.output, text, { createNew: !opts.force });
        } catch (error) {
          if (error instanceof Deno.errors.AlreadyExists) {
            throw new UsageError(`Cannot write "${opts.output}": the file exists`, {
              hint: "add --force to overwrite it",
            });
          }
          throw error;
        }
        eprintln(
          `wrote ${opts.output} (extends ${opts.template}); check it with: sentry policy validate ${opts.output}`,
        );
      },
    );

  policy.command("validate").description("check a policy file: YAML, keys, globs, CIDRs, rules")
    .argument("<file>", "a policy file or template name")
    .option("-w, --workspace <dir>", "the workspace to expand ${WORKSPACE} with")
    .action(async (file: string, opts: { workspace?: string }) => {
      const flags: PolicyFlags = { policy: file };
      if (opts.workspace !== undefined) flags.workspace = opts.workspace;
      let resolved;
      try {
        ({ resolved } = await loadPolicyFromFlags(flags));
      } catch (error) {
        // Every problem, one a line, rather than the first and a count.
        if (!(error instanceof PolicyError) || error.problems.length < 2) throw error;
        for (const p of error.problems) eprintln(`${paint("sentry:", "red")} ${p.message}`);
        throw new ExitCode(2, `${error.problems.length} problems in "${file}"`);
      }
      const counts = [
        `${resolved.rules.length} rules`,
        `mode ${resolved.mode}`,
        `extends ${resolved.sources.slice(0, -1).join(" > ") || "nothing"}`,
      ];
      println(
        `${paint("ok", "green")}  ${file}: policy "${resolved.name}" is valid (${
          counts.join(", ")
        })`,
      );
    });

  policy.command("schema").description("print the policy JSON Schema")
    .action(() => {
      println(
        JSON.stringify(
          z.toJSONSchema(PolicyFile, { io: "input", unrepresentable: "any" }),
          null,
          2,
        ),
      );
    });

  addPolicyFlags(
    policy.command("test").description(
      "replay actions against a policy: a JSON Lines file, or journaled events (a backtest)",
    )
      .argument("<policy>", "a template name or a policy file")
      .argument("[events]", "a JSON Lines file of actions, or - for stdin")
      .option("--session <id|last>", "backtest: replay this session's journaled events")
      .option("--since <time>", "backtest: replay every event since a time (ISO, or ago: 2h, 7d)")
      .option(
        "--fail-on <changes>",
        "backtest: exit 1 on denied, allowed, response or any change (each =N: at least N)",
      )
      .option("--json", "print JSON lines (a backtest prints one summary object)"),
    { policyOption: false },
  ).action(
    async (policyRef: string, eventsPath: string | undefined, opts: BacktestFlags) => {
      const backtest = opts.session !== undefined || opts.since !== undefined;
      if (backtest && eventsPath !== undefined) {
        throw new UsageError(`Give an events file or --session/--since, not both`);
      }
      if (backtest) return await policyBacktest(policyRef, opts);
      if (eventsPath === undefined) {
        throw new UsageError("Missing what to replay: an events file, --session or --since", {
          hint: "sentry policy test strict --session last",
        });
      }
      if (opts.failOn !== undefined) {
        throw new UsageError("--fail-on goes with --session or --since");
      }
      await policyTest(policyRef, eventsPath, opts);
    },
  );

  policy.command("learn").description(
    "write a policy that extends a template and allows what journaled sessions did",
  )
    .argument("<session...>", "session ids, unique prefixes, or last")
    .option(
      "-t, --template <name|file>",
      "what the policy extends (default: the session's template, else default)",
    )
    .option("-o, --output <file>", "write to a file instead of stdout")
    .option("-f, --force", "overwrite the output file if it exists")
    .option("--name <name>", "the policy's name (default: learned-TEMPLATE)")
    .option("--collapse <n>", "a directory with more than n distinct entries becomes a glob", "5")
    .option("--hosts <n>", "n or more subdomains of a domain become *.domain", "3")
    .option("--args <n>", "arguments are pinned when at most n distinct ones were seen", "3")
    .action(async (sessions: string[], opts: LearnFlags) => {
      await policyLearn(sessions, opts);
    });
}

async function starterPolicy(template: string, agent: string): Promise<string> {
  const base = YAML.parse(await readTemplate(template)) as { description?: string };
  return `# Sentry policy for ${agent}. Reference: the README's "Policy reference".
# Everything not said here comes from the "${template}" template (see: sentry policy show ${template}).
# Lists add to the template's; nothing here can remove one of its denies.
name: ${JSON.stringify(agent)}
description: ${JSON.stringify(`${agent}, based on ${template}: ${base.description ?? ""}`.trim())}
extends: ${template}

# mode: pause            # monitor | alert | pause | rollback | kill: caps the response
# thresholds: { alert: 30, pause: 60, rollback: 85 }

# files:
#   read:
#     deny: ["\${WORKSPACE}/secrets/**"]
#   write:
#     allow: ["\${WORKSPACE}/**"]

# network:
#   allow: ["api.example.com:443"]
#   deny: ["10.0.0.0/8"]

# rules:
#   - id: detect_customer_export
#     description: Detect writes of customer exports outside the reports folder
#     match: { kind: file.write, target: "**/*export*.csv" }
#     exceptions: [{ target: "\${WORKSPACE}/reports/**" }]
#     risk: 50
#     response: pause
`;
}

/** One line of a `policy test` input. */
const ReplayLine = z.strictObject({
  kind: z.enum(KINDS),
  target: z.string(),
  exe: z.string().nullable().optional(),
  cmdline: z.union([z.string(), z.array(z.string())]).optional(),
  detail: z.record(z.string(), z.unknown()).optional(),
  pid: z.number().optional(),
  /** An expected verdict (`deny`), or expected fields. Mismatches fail the test. */
  expect: z.union([
    z.enum(["allow", "deny"]),
    z.strictObject({
      verdict: z.enum(["allow", "deny"]).optional(),
      rule: z.string().optional(),
      response: z.enum(RESPONSES).optional(),
      min_risk: z.number().optional(),
      max_risk: z.number().optional(),
    }),
  ]).optional(),
}).loose();

async function readLines(path: string): Promise<string> {
  if (path === "-") return await new Response(Deno.stdin.readable).text();
  try {
    return await Deno.readTextFile(path);
  } catch (error) {
    const reason = error instanceof Deno.errors.NotFound
      ? "no such file"
      : (error as Error).message;
    throw new UsageError(`Cannot read events "${path}": ${reason}`);
  }
}

async function policyTest(
  policyRef: string,
  eventsPath: string,
  opts: PolicyFlags & { json?: boolean },
): Promise<void> {
  const { compiled, resolved, workspace, home } = await loadPolicyFromFlags({
    ...opts,
    policy: policyRef,
  });
  const expand = (text: string) => expandTargetVariables(text, { workspace, home });
  const text = await readLines(eventsPath);
  const lines = text.split("\n");
  const verdicts = { allow: 0, deny: 0 };
  const responses = new Map<Response, number>();
  let invalid = 0;
  let expectations = 0;
  let failures = 0;
  const rows: string[][] = [];
  lines.forEach((raw, index) => {
    const lineNo = index + 1;
    if (raw.trim() === "" || raw.trimStart().startsWith("#")) return;
    let json: unknown;
    try {
      json = JSON.parse(raw);
    } catch (error) {
      invalid++;
      eprintln(`${eventsPath}:${lineNo}: invalid JSON: ${(error as Error).message}`);
      return;
    }
    const parsed = ReplayLine.safeParse(json);
    if (!parsed.success) {
      invalid++;
      const issue = parsed.error.issues[0];
      const field = issue?.path.join(".") || "(line)";
      eprintln(`${eventsPath}:${lineNo}: field "${field}": ${issue?.message ?? "invalid"}`);
      return;
    }
    const line = parsed.data;
    const cmdline = typeof line.cmdline === "string"
      ? line.cmdline.split(/\s+/).filter(Boolean)
      : line.cmdline ?? [];
    const detail = { ...line.detail };
    if (typeof detail.from === "string") detail.from = expand(detail.from);
    const action: Action = {
      kind: line.kind,
      target: expand(line.target),
      exe: line.exe ?? cmdline[0] ?? null,
      cmdline,
      detail,
    };
    const d = evaluate(action, compiled);
    verdicts[d.verdict]++;
    responses.set(d.response, (responses.get(d.response) ?? 0) + 1);
    let ok: boolean | null = null;
    let why = "";
    if (line.expect !== undefined) {
      expectations++;
      const e = typeof line.expect === "string" ? { verdict: line.expect } : line.expect;
      const problems: string[] = [];
      if (e.verdict !== undefined && e.verdict !== d.verdict) {
        problems.push(`verdict ${d.verdict}, expected ${e.verdict}`);
      }
      if (e.rule !== undefined && e.rule !== d.rule) {
        problems.push(`rule ${d.rule}, expected ${e.rule}`);
      }
      if (e.response !== undefined && e.response !== d.response) {
        problems.push(`response ${d.response}, expected ${e.response}`);
      }
      if (e.min_risk !== undefined && d.risk < e.min_risk) {
        problems.push(`risk ${d.risk} < ${e.min_risk}`);
      }
      if (e.max_risk !== undefined && d.risk > e.max_risk) {
        problems.push(`risk ${d.risk} > ${e.max_risk}`);
      }
      ok = problems.length === 0;
      why = problems.join("; ");
      if (!ok) failures++;
    }
    if (opts.json) {
      printJson({
        type: "result",
        line: lineNo,
        kind: action.kind,
        target: action.target,
        verdict: d.verdict,
        risk: d.risk,
        rule: d.rule,
        response: d.response,
        factors: d.factors,
        ...(ok === null ? {} : { expected: ok, mismatch: why || undefined }),
      });
    } else {
      const verdict = d.verdict === "deny" ? paint("deny ", "red") : paint("allow", "green");
      const mark = ok === null ? "" : ok ? paint("✓", "green") : paint(`✗ ${why}`, "red");
      rows.push([
        String(lineNo),
        verdict,
        String(d.risk),
        d.response,
        d.rule,
        action.kind,
        action.target,
        mark,
      ]);
    }
  });
  const total = verdicts.allow + verdicts.deny;
  const summary = {
    type: "summary",
    policy: resolved.name,
    events: total,
    allowed: verdicts.allow,
    denied: verdicts.deny,
    responses: Object.fromEntries(RESPONSES.map((r) => [r, responses.get(r) ?? 0])),
    invalid,
    expectations: { checked: expectations, failed: failures },
  };
  if (opts.json) printJson(summary);
  else {
    if (rows.length > 0) {
      printTable([["LINE", "VERDICT", "RISK", "RESPONSE", "RULE", "KIND", "TARGET", ""], ...rows]);
    }
    const resp = RESPONSES.filter((r) => r !== "none" && (responses.get(r) ?? 0) > 0)
      .map((r) => `${r} ${responses.get(r)}`).join(", ") || "none";
    println();
    println(
      `${total} actions under "${resolved.name}": ${verdicts.allow} allowed, ${verdicts.deny} denied; responses: ${resp}` +
        (expectations > 0
          ? `; expectations: ${expectations - failures} passed, ${failures} failed`
          : "") +
        (invalid > 0 ? `; ${invalid} invalid lines skipped` : ""),
    );
  }
  if (invalid > 0) {
    throw new ExitCode(2, `${invalid} invalid line(s) in "${eventsPath}" (listed above)`);
  }
  if (failures > 0) throw new ExitCode(1, `${failures} expectation(s) failed`);
}

/**
 * Expands `${WORKSPACE}`, `${HOME}` and a leading `~/` in a replayed target, so that recorded
 * actions can be shared between machines.
 */
export function expandTargetVariables(
  text: string,
  vars: { workspace: string; home: string },
): string {
  const out = text.replaceAll("${WORKSPACE}", vars.workspace).replaceAll("${HOME}", vars.home);
  return out.startsWith("~/") ? vars.home + out.slice(1) : out;
}
