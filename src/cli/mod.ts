/**
 * The command-line interface: one file per command, `output.ts` for all printing.
 * @module
 */
export { buildProgram, reportError, runCli } from "./program.ts";
export { ExitCode, UsageError } from "./errors.ts";
export { DEFAULT_INTERVAL_MS } from "./run.ts";
