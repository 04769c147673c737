import { Command, CommanderError } from "commander";
import { ConfigError } from "../config/mod.ts";
import { PolicyError } from "../policy/mod.ts";
import { VERSION } from "../version.ts";
import { ExitCode, UsageError } from "./errors.ts";
import { eprint, eprintln, paint, print } from "./output.ts";
import { registerAccountCommands } from "./account.ts";
import { registerAuditCommand } from "./audit.ts";
import { registerBundleCommands } from "./bundle.ts";
import { registerConfigCommands } from "./config.ts";
import { registerControlCommands } from "./control.ts";
import { registerDoctorCommand } from "./doctor.ts";
import { registerEventsCommand } from "./events.ts";
import { registerLauncherCommand } from "./launcher.ts";
import { registerWallLauncherCommand } from "./wall_launcher.ts";
import { registerPolicyCommands } from "./policy.ts";
import { registerExplainCommand } from "./explain.ts";
import { registerReportCommand } from "./report.ts";
import { registerRollbackCommands } from "./rollback.ts";
import { registerRunCommands } from "./run.ts";
import { registerScheduleCommands } from "./schedule.ts";
import { registerServeCommands } from "./serve.ts";
import { registerServerCommands } from "./server.ts";
import { registerSessionsCommand } from "./sessions.ts";
import { registerStatusCommand } from "./status.ts";
import { registerSyncCommands } from "./sync.ts";

/**
 * Builds the `sentry` command tree. Commander never exits the process or prints errors itself:
 * `runCli()` handles every error in one place.
 */
export function buildProgram(): Command {
  const program = new Command("sentry")
    .description(
      "Sentry: a runtime guard for AI agents. It watches what an agent does and enforces a policy.",
    )
    .version(VERSION, "-V, --version", "print the version")
    .helpOption("-h, --help", "show help")
    .showSuggestionAfterError(true)
    .exitOverride()
    .configureOutput({
      writeOut: print,
      writeErr: eprint,
      outputError: () => {},
    });
  program.enablePositionalOptions();
  registerRunCommands(program);
  registerSessionsCommand(program);
  registerStatusCommand(program);
  registerEventsCommand(program);
  registerReportCommand(program);
  registerControlCommands(program);
  registerRollbackCommands(program);
  registerServeCommands(program);
  registerServerCommands(program);
  registerBundleCommands(program);
  registerPolicyCommands(program);
  registerExplainCommand(program);
  registerConfigCommands(program);
  registerAccountCommands(program);
  registerDoctorCommand(program);
  registerSyncCommands(program);
  registerAuditCommand(program);
  registerScheduleCommands(program);
  registerLauncherCommand(program);
  registerWallLauncherCommand(program);
  for (const cmd of program.commands) configureTree(cmd);
  return program;
}

function configureTree(cmd: Command): void {
  cmd.exitOverride().configureOutput({
    writeOut: print,
    writeErr: eprint,
    outputError: () => {},
  }).showSuggestionAfterError(true);
  for (const sub of cmd.commands) configureTree(sub);
}

/**
 * Runs the CLI and returns the exit code: 0 on success, 2 for usage and validation errors
 * (bad flags, bad policies), 1 for runtime errors. Prints one line per error, never a stack
 * trace unless `SENTRY_DEBUG=1`.
 */
export async function runCli(args: readonly string[]): Promise<number> {
  const program = buildProgram();
  try {
    await program.parseAsync([...args], { from: "user" });
    return 0;
  } catch (error) {
    return reportError(error);
  }
}

/** Prints an error on one line and returns its exit code. */
export function reportError(error: unknown): number {
  // The reader went away (`sentry events | head`): stop quietly, as Unix tools do.
  if (error instanceof Deno.errors.BrokenPipe) return 141;
  const debug = Deno.env.get("SENTRY_DEBUG") === "1";
  if (debug && error instanceof Error && !(error instanceof ExitCode)) {
    eprintln(error.stack ?? String(error));
  }
  if (error instanceof ExitCode) {
    if (error.message !== "") eprintln(`sentry: ${error.message}`);
    return error.code;
  }
  if (error instanceof CommanderError) {
    if (
      error.code === "commander.helpDisplayed" || error.code === "commander.version" ||
      error.code === "commander.help"
    ) {
      return error.code === "commander.help" ? 2 : 0;
    }
    const message = error.message.replace(/^error: /, "").split("\n")[0];
    eprintln(`${paint("sentry:", "red")} ${message}`);
    eprintln(`hint: run "sentry --help" for usage`);
    return 2;
  }
  if (error instanceof PolicyError || error instanceof ConfigError) {
    eprintln(`${paint("sentry:", "red")} ${error.message}`);
    return 2;
  }
  if (error instanceof UsageError) {
    eprintln(`${paint("sentry:", "red")} ${error.message}`);
    if (error.hint !== undefined) eprintln(`hint: ${error.hint}`);
    return 2;
  }
  const message = error instanceof Error ? error.message : String(error);
  eprintln(`${paint("sentry:", "red")} ${message.split("\n")[0]}`);
  if (!debug) eprintln("hint: set SENTRY_DEBUG=1 for details");
  return 1;
}
