import type { Command } from "commander";
import { type Kind, KINDS } from "../events/mod.ts";
import type { EventFilter } from "../journal/mod.ts";
import { UsageError } from "./errors.ts";
import { findSession, openForReading } from "./journal_access.ts";
import { paint, printJson, printTable } from "./output.ts";
import { shortTime } from "./sessions.ts";

/** Adds `sentry events`. */
export function registerEventsCommand(program: Command): void {
  program.command("events").description("list journaled events, oldest first")
    .option("-s, --session <id|last>", "one session (default: all)")
    .option("-k, --kind <kind>", `one kind, or a glob such as file.* (${KINDS.join(", ")})`)
    .option("--min-risk <n>", "risk at least n")
    .option("--verdict <verdict>", "allow or deny")
    .option("--limit <n>", "at most n events (the latest ones)", "1000")
    .option("--json", "print one AgentEvent per line")
    .action(
      (
        opts: {
          session?: string;
          kind?: string;
          minRisk?: string;
          verdict?: string;
          limit: string;
          json?: boolean;
        },
      ) => {
        const filter: EventFilter = { order: "desc" };
        if (opts.kind !== undefined) {
          const re = new RegExp(`^${opts.kind.replace(/[.]/g, "\\.").replace(/\*/g, ".*")}$`);
          const kinds = KINDS.filter((k) => re.test(k));
          if (kinds.length === 0) {
            throw new UsageError(`Unknown kind "${opts.kind}": kinds are ${KINDS.join(", ")}`);
          }
          filter.kind = kinds as Kind[];
        }
        if (opts.minRisk !== undefined) {
          const n = Number(opts.minRisk);
          if (!Number.isInteger(n) || n < 0 || n > 100) {
            throw new UsageError(`Invalid --min-risk "${opts.minRisk}": give 0 to 100`);
          }
          filter.minRisk = n;
        }
        if (opts.verdict !== undefined) {
          if (opts.verdict !== "allow" && opts.verdict !== "deny") {
            throw new UsageError(`Invalid --verdict "${opts.verdict}": give allow or deny`);
          }
          filter.verdict = opts.verdict;
        }
        const limit = Number(opts.limit);
        if (!Number.isInteger(limit) || limit < 1) {
          throw new UsageError(`Invalid --limit "${opts.limit}": give a positive number`);
        }
        filter.limit = limit;
        const { journal } = openForReading();
        try {
          if (opts.session !== undefined) filter.session = findSession(journal, opts.session).id;
          const events = journal.queryEvents(filter).reverse();
          if (opts.json) {
            for (const e of events) printJson(e);
            return;
          }
          const rows = [[
            "TIME",
            "SESSION",
            "PID",
            "KIND",
            "VERDICT",
            "RISK",
            "RESPONSE",
            "RULE",
            "TARGET",
          ]];
          for (const e of events) {
            rows.push([
              shortTime(e.ts),
              e.session.slice(-8),
              String(e.pid ?? "?"),
              e.kind,
              e.verdict === "deny" ? paint("deny", "red") : "allow",
              String(e.risk),
              e.response,
              e.rule,
              e.target,
            ]);
          }
          printTable(rows);
        } finally {
          journal.close();
        }
      },
    );
}
