import type { Command } from "commander";
import { type Kind, KINDS } from "../events/mod.ts";
import type { EventFilter, ResponseRecord } from "../journal/mod.ts";
import { oneLine, responsesByEvent, takenCell, targetCell } from "./cells.ts";
import { UsageError } from "./errors.ts";
import { findSession, openForReading } from "./journal_access.ts";
import { paint, printJson, printTable } from "./output.ts";
import { journalExists, parseLimit, shortTime } from "./sessions.ts";
import { parseWindow } from "./time_window.ts";

/** Adds `sentry events`. */
export function registerEventsCommand(program: Command): void {
  program.command("events").description("list journaled events, oldest first")
    .option("-s, --session <id|last>", "one session (default: all)")
    .option("-k, --kind <kind>", `one kind, or a glob such as file.* (${KINDS.join(", ")})`)
    .option("--min-risk <n>", "risk at least n")
    .option("--verdict <verdict>", "allow or deny")
    .option("--since <time>", "events at or after a time: ISO (2026-12-06T14:30) or ago (2h, 1d)")
    .option("--until <time>", "events before a time: ISO or ago, as --since")
    .option("--limit <n>", "at most n events (the latest ones)", "1000")
    .option("--json", "print one AgentEvent per line")
    .action(
      (
        opts: {
          session?: string;
          kind?: string;
          minRisk?: string;
          verdict?: string;
          since?: string;
          until?: string;
          limit: string;
          json?: boolean;
        },
      ) => {
        const filter: EventFilter = { order: "desc", ...parseWindow(opts) };
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
        filter.limit = parseLimit(opts.limit);
        // A fresh host has no events: an empty list, not an error (a session is still asked for).
        if (!journalExists() && opts.session === undefined) return;
        const { journal } = openForReading();
        try {
          if (opts.session !== undefined) filter.session = findSession(journal, opts.session).id;
          const events = journal.queryEvents(filter).reverse();
          if (opts.json) {
            for (const e of events) printJson(e);
            return;
          }
          // The responses really taken, from the journal's responses of the sessions shown.
          const records: ResponseRecord[] = [];
          for (
            const id of new Set(events.filter((e) => e.response !== "none").map((e) => e.session))
          ) {
            records.push(...journal.responses(id));
          }
          const taken = responsesByEvent(records);
          const rows = [[
            "TIME",
            "SESSION",
            "PID",
            "KIND",
            "VERDICT",
            "RISK",
            "RESPONSE",
            "TAKEN",
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
              // Shadow mode: what the policy asks for, which the mode kept from being taken.
              e.would === undefined ? e.response : `${e.response} (would: ${e.would})`,
              takenCell(taken.get(e.id) ?? []),
              oneLine(e.rule),
              targetCell(e),
            ]);
          }
          printTable(rows);
        } finally {
          journal.close();
        }
      },
    );
}
