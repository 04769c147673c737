import type { Command } from "commander";
import { join } from "node:path";
import { JOURNAL_FILE } from "../journal/mod.ts";
import { dataDir } from "../platform/mod.ts";
import { oneLine } from "./cells.ts";
import { UsageError } from "./errors.ts";
import { eprintln, printJson, printTable } from "./output.ts";
import { openForReading } from "./journal_access.ts";

/** Whether this user's data directory has a journal yet (no session has run before it does). */
export function journalExists(): boolean {
  try {
    Deno.statSync(join(dataDir(Deno.env.toObject()), JOURNAL_FILE));
    return true;
  } catch {
    return false;
  }
}

/** Parses `--limit`: a whole number, at least 1; anything else is a usage error. */
export function parseLimit(text: string): number {
  const n = Number(text);
  if (!/^\d+$/.test(text) || n < 1 || !Number.isSafeInteger(n)) {
    throw new UsageError(`Invalid --limit "${text}": give a whole number, at least 1`);
  }
  return n;
}

/** Formats an ISO timestamp for a table: local date and time to the second. */
export function shortTime(iso: string | null): string {
  if (iso === null) return "-";
  const d = new Date(iso);
  const pad = (n: number) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${
    pad(d.getMinutes())
  }:${pad(d.getSeconds())}`;
}

/** Adds `sentry sessions`. */
export function registerSessionsCommand(program: Command): void {
  program.command("sessions").description("list watched sessions, newest first")
    .option("--json", "print one JSON object per line")
    .option("--limit <n>", "at most this many sessions", "50")
    .action((opts: { json?: boolean; limit: string }) => {
      const limit = parseLimit(opts.limit);
      if (!journalExists()) {
        // A fresh host: nothing has run, which is not an error.
        if (!opts.json) eprintln("no sessions yet; start one with: sentry run -- <command>");
        return;
      }
      const { journal } = openForReading();
      try {
        const sessions = journal.listSessions({ limit });
        if (opts.json) {
          for (const s of sessions) printJson(s);
          return;
        }
        const rows = [[
          "ID",
          "AGENT",
          "COMMAND",
          "PID",
          "STARTED",
          "ENDED",
          "STATE",
          "SENSOR",
          "EVENTS",
          "DENIED",
          "MAX RISK",
        ]];
        for (const s of sessions) {
          const command = oneLine(s.command.join(" "));
          rows.push([
            s.id,
            oneLine(s.agent),
            command.length > 40 ? command.slice(0, 39) + "…" : command,
            String(s.pid ?? "-"),
            shortTime(s.startedAt),
            shortTime(s.endedAt),
            s.state + (s.exitCode === null ? "" : ` (${s.exitCode})`),
            s.tier ?? "-",
            String(s.events),
            String(s.denied),
            String(s.maxRisk),
          ]);
        }
        printTable(rows);
      } finally {
        journal.close();
      }
    });
}
