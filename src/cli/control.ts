import type { Command } from "commander";
import { killSession, pauseSession, resumeSession, runWatchdog } from "../session/mod.ts";
import { ExitCode, UsageError } from "./errors.ts";
import { findSession, openForReading } from "./journal_access.ts";
import { eprintln, println } from "./output.ts";

/** Parses `--grace`: a whole number of milliseconds, 0 or more; anything else is a usage error. */
export function parseGrace(text: string): number {
  if (!/^\d+$/.test(text) || Number(text) > 3_600_000) {
    throw new UsageError(
      `Invalid --grace "${text}": give a whole number of milliseconds from 0 to 3600000`,
    );
  }
  return Number(text);
}

/** Adds `sentry pause`, `sentry resume`, `sentry kill` and the hidden watchdog. */
export function registerControlCommands(program: Command): void {
  program.command("pause").description(
    "pause a session's agent (its cgroup freezer, else SIGSTOP); sentry resume goes on",
  )
    .argument("<session>", "a session id, a unique prefix, or last")
    .action(async (ref: string) => {
      const { journal, dataDir } = openForReading();
      try {
        const session = findSession(journal, ref);
        const r = await pauseSession(session, { journal, dataDir, by: "sentry pause" });
        if (r.done.length === 0 && r.failed.length === 0) {
          throw new ExitCode(
            1,
            `Session ${session.id} has no live process to pause (state ${session.state}): ` +
              "none that its pids file proves by start time",
          );
        }
        println(
          `paused ${r.done.length} process(es) of session ${session.id}` +
            (r.mechanism === undefined ? "" : ` (${r.mechanism})`) +
            `; resume with: sentry resume ${session.id}`,
        );
        for (const f of r.failed) eprintln(`sentry: pid ${f.pid} was not paused: ${f.reason}`);
        if (r.failed.length > 0) throw new ExitCode(1);
      } finally {
        journal.close();
      }
    });

  program.command("resume").description("resume a paused session's agent")
    .argument("<session>", "a session id, a unique prefix, or last")
    .action(async (ref: string) => {
      const { journal, dataDir } = openForReading();
      try {
        const session = findSession(journal, ref);
        const r = await resumeSession(session, { journal, dataDir });
        if (r.done.length === 0 && r.failed.length === 0) {
          throw new ExitCode(
            1,
            `Session ${session.id} has no live process to resume (state ${session.state}): ` +
              "none that its pids file proves by start time",
          );
        }
        println(`resumed ${r.done.length} process(es) of session ${session.id}`);
        for (const f of r.failed) eprintln(`sentry: pid ${f.pid} was not resumed: ${f.reason}`);
        if (r.failed.length > 0) throw new ExitCode(1);
      } finally {
        journal.close();
      }
    });

  program.command("kill").description("terminate a session's agent: SIGTERM, then SIGKILL")
    .argument("<session>", "a session id, a unique prefix, or last")
    .option("--grace <ms>", "time between SIGTERM and SIGKILL", "3000")
    .action(async (ref: string, opts: { grace: string }) => {
      const graceMs = parseGrace(opts.grace);
      const { journal, dataDir } = openForReading();
      try {
        const session = findSession(journal, ref);
        const r = await killSession(session, {
          journal,
          dataDir,
          graceMs,
        });
        if (r.done.length === 0 && r.failed.length === 0) {
          throw new ExitCode(
            1,
            `Session ${session.id} has no live process to kill (state ${session.state}): ` +
              "none that its pids file proves by start time, so nothing was signalled",
          );
        }
        println(
          `killed ${r.done.length} process(es) of session ${session.id}` +
            ((r.forced?.length ?? 0) > 0 ? ` (${r.forced?.length} needed SIGKILL)` : ""),
        );
        for (const f of r.failed) eprintln(`sentry: pid ${f.pid} was not killed: ${f.reason}`);
        if (r.failed.length > 0) throw new ExitCode(1);
      } finally {
        journal.close();
      }
    });

  program.command("__watchdog", { hidden: true })
    .requiredOption("--session <id>")
    .requiredOption("--pids-file <path>")
    .requiredOption("--on-exit <action>")
    .requiredOption("--journal <path>")
    .action(
      async (opts: { session: string; pidsFile: string; onExit: string; journal: string }) => {
        // Ctrl-C in the terminal reaches the whole foreground group: the watchdog must outlive it.
        Deno.addSignalListener("SIGINT", () => {});
        await runWatchdog({
          session: opts.session,
          pidsFile: opts.pidsFile,
          onExit: opts.onExit === "kill" ? "kill" : "resume",
          journal: opts.journal,
          input: Deno.stdin.readable,
        });
      },
    );
}
