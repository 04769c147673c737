/**
 * `sentry policy reload SESSION|last [FILE]`: applies a new policy to a live session, for the
 * events that follow. The file is checked here first (a bad one exits 2 with its file, line and
 * field, and nothing is sent); the session's Sentry then loads it with the session's own flags,
 * refuses what a live session cannot change, and journals the change with the old and new
 * policy hashes.
 *
 * @module
 */

import type { Command } from "commander";
import { resolve } from "node:path";
import { isTemplateName, loadPolicy } from "../policy/mod.ts";
import { ReloadError, type ReloadResult, reloadSession } from "../session/mod.ts";
import { ExitCode, UsageError } from "./errors.ts";
import { findSession, openForReading } from "./journal_access.ts";
import { eprintln, paint, printJson, println } from "./output.ts";

/** Adds `sentry policy reload` to the `policy` command. */
export function registerPolicyReload(policy: Command): void {
  policy.command("reload").description(
    "apply a new policy to a live session's next events (or read its own again)",
  )
    .argument("<session>", "a session id, a unique prefix, or last")
    .argument("[file]", "a policy file or template name (default: the session's own, read again)")
    .option("--json", "print the result as JSON")
    .option("--timeout <ms>", "how long to wait for the session's Sentry to answer", "15000")
    .action(
      async (ref: string, file: string | undefined, opts: { json?: boolean; timeout: string }) => {
        const path = file === undefined ? null : isTemplateName(file) ? file : resolve(file);
        // Checked here first: a bad policy exits 2 with its place, and the session is not asked.
        if (path !== null) await loadPolicy(path);
        if (!/^\d+$/.test(opts.timeout) || Number(opts.timeout) < 100) {
          throw new UsageError(
            `Invalid --timeout "${opts.timeout}": give a whole number of milliseconds, at least 100`,
          );
        }
        const timeoutMs = Number(opts.timeout);
        const { journal, dataDir } = openForReading();
        let result: ReloadResult;
        try {
          const session = findSession(journal, ref);
          try {
            result = await reloadSession(session, {
              dataDir,
              file: path,
              by: "sentry policy reload",
              timeoutMs,
            });
          } catch (error) {
            if (error instanceof ReloadError) throw new ExitCode(1, error.message);
            throw error;
          }
        } finally {
          journal.close();
        }
        if (opts.json) printJson(result);
        if (result.outcome === "refused") {
          throw new ExitCode(
            1,
            `Policy reload of session ${result.session} refused: ${
              result.reason ?? "no reason given"
            }`,
          );
        }
        if (opts.json) return;
        println(
          `${paint("ok", "green")}  session ${result.session} now decides with ${result.policy} ` +
            `(sha256 ${short(result.oldHash)} -> ${short(result.newHash)})`,
        );
        for (const line of result.fixed) eprintln(`sentry: as started: ${line}`);
      },
    );
}

function short(hash: string | null): string {
  return hash === null ? "none" : hash.slice(0, 12);
}
