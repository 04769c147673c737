import type { Command } from "commander";
import { printJson, printTable } from "./output.ts";
import { openForReading } from "./journal_access.ts";

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
      const { journal } = openForReading();
      try {
        const sessions = journal.listSessions({ limit: Math.max(1, Number(opts.limit) || 50) });
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
          const command = s.command.join(" ");
          rows.push([
            s.id,
            s.agent,
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
