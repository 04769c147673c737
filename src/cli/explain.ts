import type { Command } from "commander";
import {
  type EventExplanation,
  explainJournaledEvent,
  type SourceLocation,
} from "../policy/mod.ts";
import { policyHash } from "../session/mod.ts";
import { UsageError } from "./errors.ts";
import { openForReading } from "./journal_access.ts";
import { eprintln, paint, printJson, println, printTable } from "./output.ts";
import { currentEnvironment, sentryDirs } from "./policy_options.ts";

/** Adds `sentry explain EVENT_ID`. */
export function registerExplainCommand(program: Command): void {
  program.command("explain").description(
    "show why a journaled event got its verdict: every rule that matched, with file and line",
  )
    .argument("<event-id>", "the event's id (as `sentry events` prints it)")
    .option("-p, --policy <name|file>", "explain against this policy instead of the session's")
    .option("--json", "print the explanation as JSON")
    .action(async (id: string, opts: { policy?: string; json?: boolean }) => {
      if (!/^[0-9A-HJKMNP-TV-Z]{26}$/i.test(id)) {
        throw new UsageError(`Invalid event id "${id}": an event id is a 26-character ULID`, {
          hint: "list events with their ids: sentry events --json",
        });
      }
      const { journal } = openForReading();
      let result: EventExplanation;
      try {
        const event = journal.getEvent(id);
        if (event === undefined) {
          throw new UsageError(`No event "${id}" in the journal`, {
            hint: "list events with: sentry events --json",
          });
        }
        const session = journal.getSession(event.session);
        const env = currentEnvironment();
        result = await explainJournaledEvent(event, {
          session,
          ...(opts.policy === undefined ? {} : { policy: opts.policy }),
          allowFiles: true,
          home: env.home,
          env: env.env,
          guarded: sentryDirs(env),
          cwd: env.cwd,
          reloads: journal.policyReloads(session.id),
          hashOf: policyHash,
        });
      } finally {
        journal.close();
      }
      if (opts.json) printJson(result);
      else printExplanation(result);
      for (const w of result.warnings) eprintln(`${paint("warning:", "yellow")} ${w}`);
    });
}

function where(source: SourceLocation | null): string {
  return source === null ? "(implicit)" : `${source.file}:${source.line}`;
}

function printExplanation(result: EventExplanation): void {
  const { event, explanation: x, policy } = result;
  const d = x.decision;
  println(`${paint("event", "bold")}     ${event.id}  ${event.ts}  session ${event.session}`);
  println(`${paint("action", "bold")}    ${event.kind} ${event.target}`);
  if (event.exe !== null) {
    println(`${paint("process", "bold")}   ${event.exe} (pid ${event.pid ?? "?"})`);
  }
  println(`${paint("policy", "bold")}    ${policy.name} (${policy.files.join(" > ")})`);
  const verdict = d.verdict === "deny" ? paint("deny", "red") : paint("allow", "green");
  println(
    `${paint("decision", "bold")}  ${verdict} by ${d.rule}, risk ${d.risk}, response ${d.response}`,
  );
  println();
  println(paint("Matched, in precedence order:", "bold"));
  const rows: string[][] = [["", "ENTRY", "EFFECT", "RISK", "SOURCE"]];
  for (const m of x.matches) {
    const name = m.section === "rules" ? `rule ${m.entry}` : `${m.section} ${m.entry}`;
    const exempt = (m.exceptions?.length ?? 0) > 0
      ? ` (exempted by exception ${m.exceptions?.map((i) => `#${i + 1}`).join(", ")})`
      : "";
    rows.push([
      m.winner ? paint("→", "bold") : "",
      name + exempt,
      m.effect,
      m.risk === undefined ? "" : String(m.risk),
      where(m.source),
    ]);
  }
  printTable(rows);
  println();
  println(`${paint("Why", "bold")}: ${x.why}.`);
  println(`${paint("Response", "bold")}: ${x.responseWhy}.`);
  if (x.exceptions.length > 0) {
    println();
    println(paint("Exceptions that applied:", "bold"));
    for (const e of x.exceptions) {
      println(
        `  rule ${e.rule}, exception #${e.index + 1} ${JSON.stringify(e.match)}  ${
          where(e.source)
        }`,
      );
    }
  }
  println();
  println(paint(`Risk factors (sum ${d.risk}):`, "bold"));
  printTable(x.factors.map((f) => [`  ${f.points >= 0 ? "+" : ""}${f.points}`, f.id, f.reason]));
}
