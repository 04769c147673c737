import type { Command } from "commander";
import {
  formatBytes,
  listSnapshots,
  openStore,
  prune,
  type RestoreResult,
  rollback,
  showSnapshot,
  type Store,
  undo,
} from "../rollback/mod.ts";
import type { Journal, SessionRecord } from "../journal/mod.ts";
import { checkGlobSyntax } from "../policy/mod.ts";
import { journalRestore, pauseSession } from "../session/mod.ts";
import { ExitCode, UsageError } from "./errors.ts";
import { findSession, openForReading } from "./journal_access.ts";
import { paint, printJson, println, printTable } from "./output.ts";
import { shortTime } from "./sessions.ts";

function parseDuration(text: string): number {
  const m = /^(\d+)\s*(s|m|h|d|w)?$/.exec(text.trim());
  if (!m) {
    throw new UsageError(
      `Invalid --older-than "${text}": give a number with s, m, h, d or w, such as 7d`,
    );
  }
  const units: Record<string, number> = {
    s: 1_000,
    m: 60_000,
    h: 3_600_000,
    d: 86_400_000,
    w: 604_800_000,
  };
  const unit = units[m[2] ?? "d"] ?? 86_400_000;
  return Number(m[1]) * unit;
}

function notFound(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound;
}

/** Adds `sentry rollback` and `sentry snapshots`. */
export function registerRollbackCommands(program: Command): void {
  program.command("rollback").description("restore a session's protected files to their snapshot")
    .argument("<session>", "a session id, a unique prefix, or last")
    .option("--dry-run", "list what would change (restore, recreate, remove) and change nothing")
    .option(
      "--path <glob>",
      "only paths matching a glob (repeatable)",
      (v: string, p: string[] = []) => [...p, v],
    )
    .option("--undo", "undo the session's last rollback")
    .option("--json", "print JSON lines")
    .action(
      async (
        ref: string,
        opts: { dryRun?: boolean; path?: string[]; undo?: boolean; json?: boolean },
      ) => {
        for (const glob of opts.path ?? []) {
          try {
            checkGlobSyntax(glob);
          } catch (error) {
            throw new UsageError(`Invalid --path: ${(error as Error).message}`);
          }
        }
        const { journal, dataDir } = openForReading();
        try {
          const session = findSession(journal, ref);
          const store = openStore(dataDir);
          if (opts.undo || !opts.dryRun) {
            await stopLiveTree(session, { journal, dataDir, json: opts.json === true });
          }
          if (opts.undo) {
            let result;
            try {
              result = await undo(store, { session: session.id });
            } catch (error) {
              if (notFound(error)) {
                throw new ExitCode(
                  1,
                  `Nothing to undo for session ${session.id}: no rollback left to undo`,
                );
              }
              throw error;
            }
            for (const r of result.results) {
              if (opts.json) printJson({ record: "undo", ...r });
              else {println(
                  `${
                    r.outcome === "ok" ? paint("undone", "green") : paint("FAILED", "red")
                  }  ${r.op}  ${r.path}${r.reason ? `: ${r.reason}` : ""}`,
                );}
            }
            journal.recordResponse({
              session: session.id,
              action: "rollback",
              outcome: result.ok ? "ok" : "partial",
              detail: {
                undo: result.id,
                paths: result.results.length,
                by: "sentry rollback --undo",
              },
            });
            journal.flush();
            if (!opts.json) {
              println(
                `${
                  result.ok ? "undid" : "could not fully undo"
                } rollback ${result.id}: ${result.results.length} paths`,
              );
            }
            if (!result.ok) {
              throw new ExitCode(1, "some paths could not be put back (listed above)");
            }
            return;
          }
          let result;
          try {
            result = await rollback(store, {
              session: session.id,
              ...(opts.path === undefined ? {} : { filter: opts.path }),
              dryRun: opts.dryRun === true,
            });
          } catch (error) {
            if (notFound(error)) {
              throw new ExitCode(
                1,
                `Session ${session.id} has no snapshot: rollback needs the snapshot taken at its start`,
              );
            }
            throw error;
          }
          if (result.dryRun) {
            for (const a of result.plan.actions) {
              if (opts.json) {
                printJson({
                  type: "plan",
                  action: a.kind,
                  path: a.path,
                  kind: a.type,
                  differences: a.differences,
                });
              } else println(`${a.kind.padEnd(8)}  ${a.path}  (${a.differences.join(", ")})`);
            }
            if (!opts.json) {
              println(
                `dry run: ${result.plan.actions.length} change(s) against snapshot ${result.plan.snapshot.id}; nothing was changed`,
              );
            }
            return;
          }
          const restore = result.restore as RestoreResult;
          journalRestore(journal, restore, "sentry rollback");
          for (const r of restore.results) {
            if (opts.json) printJson({ record: "restore", ...r });
            else {
              const mark = r.outcome === "ok" ? paint("ok", "green") : paint("FAILED", "red");
              println(
                `${mark}  ${r.action.padEnd(8)}  ${r.path}${r.reason ? `: ${r.reason}` : ""}`,
              );
            }
          }
          const c = restore.counts;
          const summary =
            `${
              restore.ok ? "rolled back" : "rollback INCOMPLETE"
            }: ${c.restored} restored, ${c.recreated} recreated, ` +
            `${c.removed} removed (quarantined), ${c.failed} failed, in ${
              Math.round(restore.durationMs)
            } ms` +
            (restore.quarantine ? `; undo with: sentry rollback --undo ${session.id}` : "");
          if (opts.json) {
            printJson({ record: "summary", ok: restore.ok, ...c, rollback: restore.id });
          } else println(summary);
          if (!restore.ok) {
            throw new ExitCode(
              1,
              `${c.failed} path(s) could not be restored (listed above)`,
            );
          }
        } finally {
          journal.close();
        }
      },
    );

  const snapshots = program.command("snapshots").description(
    "list, show and prune rollback snapshots",
  );
  snapshots.command("list").description("list snapshots, oldest first")
    .option("--session <id>", "one session's snapshots")
    .option("--json", "print JSON lines")
    .action((opts: { session?: string; json?: boolean }) => {
      const store = storeOnly();
      const list = listSnapshots(
        store,
        opts.session === undefined ? {} : { session: opts.session },
      );
      if (opts.json) {
        for (const s of list) printJson(s);
        return;
      }
      const rows = [["SNAPSHOT", "SESSION", "CREATED", "TREES", "FILES", "BYTES", "NEW IN STORE"]];
      for (const s of list) {
        rows.push([
          s.id,
          s.session ?? "-",
          shortTime(s.createdAt),
          String(s.trees.length),
          String(s.trees.reduce((n, t) => n + t.files, 0)),
          formatBytes(s.trees.reduce((n, t) => n + t.bytes, 0)),
          formatBytes(s.stats.storeBytes),
        ]);
      }
      printTable(rows);
    });
  snapshots.command("show").description("show a snapshot's trees and entries")
    .argument("<snapshot>", "a snapshot id or unique prefix")
    .option("--json", "print the manifest as JSON")
    .action((ref: string, opts: { json?: boolean }) => {
      const store = storeOnly();
      let manifest;
      try {
        manifest = showSnapshot(store, ref);
      } catch (error) {
        if (notFound(error) || error instanceof RangeError) {
          throw new UsageError((error as Error).message);
        }
        throw error;
      }
      if (opts.json) {
        printJson(manifest);
        return;
      }
      println(
        `snapshot ${manifest.id} of session ${manifest.session}, taken ${
          shortTime(manifest.createdAt)
        }`,
      );
      println(`  excludes: ${manifest.exclude.join(", ") || "none"}`);
      printTable([
        ["  ROOT", "FILES", "DIRS", "SYMLINKS", "BYTES"],
        ...manifest.trees.map((t) => [
          `  ${t.root}${t.absent ? " (absent)" : ""}`,
          String(t.files),
          String(t.dirs),
          String(t.symlinks),
          formatBytes(t.bytes),
        ]),
      ]);
    });
  snapshots.command("prune").description("delete old snapshots and the blobs nothing else uses")
    .requiredOption("--older-than <age>", "such as 7d, 12h or 30m")
    .option("--json", "print the result as JSON")
    .action(async (opts: { olderThan: string; json?: boolean }) => {
      const olderThanMs = parseDuration(opts.olderThan);
      const { journal, dataDir } = openForReading();
      try {
        const live = journal.listSessions({ limit: 10_000 }).filter((s) =>
          s.state === "running" || s.state === "paused"
        )
          .map((s) => s.id);
        const result = await prune(openStore(dataDir), { olderThanMs, keepSessions: live });
        if (opts.json) printJson(result);
        else {
          println(
            `pruned ${result.snapshots} snapshot(s) and ${result.rollbacks} rollback record(s); ` +
              `${result.blobs} blob(s) removed, ${formatBytes(result.bytesFreed)} freed` +
              (live.length > 0 ? ` (kept ${live.length} live session(s))` : ""),
          );
        }
      } finally {
        journal.close();
      }
    });
}

/**
 * Stops a live session's tree before its files are changed (the same pause `sentry run`'s API
 * uses: the cgroup freezer, or SIGSTOP verified in /proc), and says so. The tree stays stopped.
 * A session that is not live has nothing to stop.
 */
async function stopLiveTree(
  session: SessionRecord,
  deps: { journal: Journal; dataDir: string; json: boolean },
): Promise<void> {
  if (session.state !== "running" && session.state !== "paused") return;
  const r = await pauseSession(session, {
    journal: deps.journal,
    dataDir: deps.dataDir,
    by: "sentry rollback",
  });
  if (r.failed.length > 0) {
    throw new ExitCode(
      1,
      `Cannot roll back session ${session.id}: ${r.failed.length} of its processes could not be stopped (${
        r.failed.map((f) => `${f.pid}: ${f.reason}`).join("; ")
      })`,
    );
  }
  if (deps.json) {
    printJson({ record: "stop", session: session.id, stopped: r.done });
  } else if (r.done.length > 0) {
    println(
      `stopped ${r.done.length} process(es) of session ${session.id} before the rollback; ` +
        `they stay stopped (resume: sentry resume ${session.id})`,
    );
  } else println(`session ${session.id} has no live process: nothing to stop`);
}

function storeOnly(): Store {
  const { journal, dataDir } = openForReading();
  journal.close();
  return openStore(dataDir);
}
