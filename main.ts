/**
 * The `sentry` command: a runtime guard for AI agents.
 * @module
 */
import { reportError, runCli } from "./src/cli/mod.ts";

if (import.meta.main) {
  let code: number;
  try {
    code = await runCli(Deno.args);
  } catch (error) {
    code = reportError(error);
  }
  Deno.exit(code);
}
