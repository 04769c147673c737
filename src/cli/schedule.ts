/**
 * `sentry schedule install|remove|status`: makes cron, systemd or launchd run `sentry audit`.
 * The entries name the running binary by its absolute path (under `deno run`: deno, its flags
 * and main.ts) and carry the environment the audit needs; `--dry-run` prints them. Install and
 * remove are idempotent. `--crontab-file` (or `SENTRY_CRONTAB_FILE`) and `--dir` (or
 * `SENTRY_SCHEDULE_DIR`) write elsewhere and run no scheduler tool, for tests and packaging.
 *
 * @module
 */

import { type Command, Option } from "commander";
import { join } from "node:path";
import {
  cronBlock,
  describeWhen,
  entryFiles,
  type EntrySpec,
  findEntry,
  type InstalledEntry,
  installEntry,
  LAST_AUDIT_KEY,
  parseAt,
  parseEvery,
  parseFailOn,
  parseLastAudit,
  type Placement,
  removeEntry,
  scheduleEnv,
  type Scheduler,
  type When,
} from "../audit/mod.ts";
import { JOURNAL_FILE, openJournal } from "../journal/mod.ts";
import { dataDir, ensureDataDir, type Env, isCompiled, selfCommand } from "../platform/mod.ts";
import { readSignKey } from "./bundle.ts";
import { UsageError } from "./errors.ts";
import { eprintln, printJson, println } from "./output.ts";

/** The variable that sends crontab reads and writes to a file instead of `crontab`. */
export const CRONTAB_FILE_VARIABLE = "SENTRY_CRONTAB_FILE";
/** The variable that puts systemd units and launchd plists in a directory of its own. */
export const SCHEDULE_DIR_VARIABLE = "SENTRY_SCHEDULE_DIR";

interface WhereFlags {
  cron?: boolean;
  systemd?: boolean;
  launchd?: boolean;
  system?: boolean;
  crontabFile?: string;
  dir?: string;
}

interface InstallFlags extends WhereFlags {
  every?: string;
  at?: string;
  dryRun?: boolean;
  failOn?: string;
  export?: string;
  signKeyFile?: string;
}

function schedulerOf(flags: WhereFlags): Scheduler {
  const chosen = (["cron", "systemd", "launchd"] as const).filter((s) => flags[s] === true);
  if (chosen.length !== 1) {
    throw new UsageError(
      chosen.length === 0
        ? "Choose a scheduler: --cron, --systemd or --launchd"
        : `Choose one scheduler, not ${chosen.map((s) => `--${s}`).join(" and ")}`,
    );
  }
  return chosen[0] as Scheduler;
}

function nonEmpty(value: string | undefined): string | undefined {
  return value === undefined || value === "" ? undefined : value;
}

function placement(flags: WhereFlags, scheduler: Scheduler, env: Env): Placement {
  const system = flags.system === true;
  if (system && scheduler === "cron") {
    throw new UsageError("--system applies to --systemd and --launchd", {
      hint: "for cron, install as the user the audit runs as (root's crontab: run it as root)",
    });
  }
  const home = nonEmpty(env["HOME"]);
  if (home === undefined) throw new UsageError("HOME is not set: the entries need it");
  const crontabFile = nonEmpty(flags.crontabFile) ?? nonEmpty(env[CRONTAB_FILE_VARIABLE]);
  const dir = nonEmpty(flags.dir) ?? nonEmpty(env[SCHEDULE_DIR_VARIABLE]);
  return {
    scheduler,
    system,
    home,
    xdgConfigHome: nonEmpty(env["XDG_CONFIG_HOME"]),
    ...(scheduler === "cron" ? { crontabFile } : { dir }),
  };
}

/** Deno's module cache, which a scheduled `deno run` must find: DENO_DIR or deno's default. */
function denoDir(env: Env): string | undefined {
  const set = nonEmpty(env["DENO_DIR"]);
  if (set !== undefined) return set;
  const home = nonEmpty(env["HOME"]);
  const cache = Deno.build.os === "darwin"
    ? home === undefined ? undefined : join(home, "Library", "Caches")
    : nonEmpty(env["XDG_CACHE_HOME"]) ?? (home === undefined ? undefined : join(home, ".cache"));
  if (cache === undefined) return undefined;
  try {
    return Deno.statSync(join(cache, "deno")).isDirectory ? join(cache, "deno") : undefined;
  } catch {
    return undefined;
  }
}

function entrySpec(flags: InstallFlags, env: Env): EntrySpec {
  if (flags.every !== undefined && flags.at !== undefined) {
    throw new UsageError("Give --every or --at, not both");
  }
  let when: When;
  try {
    when = flags.at !== undefined
      ? { at: parseAt(flags.at) }
      : { every: parseEvery(flags.every ?? "1h") };
  } catch (error) {
    throw new UsageError((error as Error).message);
  }
  const audit = ["audit"];
  if (flags.failOn !== undefined) {
    try {
      parseFailOn(flags.failOn);
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
    audit.push("--fail-on", flags.failOn);
  }
  if (flags.export !== undefined) {
    if (!flags.export.startsWith("/")) {
      throw new UsageError(`Invalid --export "${flags.export}": give an absolute directory`);
    }
    audit.push("--export", flags.export);
  }
  if (flags.signKeyFile !== undefined) {
    if (flags.export === undefined) throw new UsageError("--sign-key-file needs --export DIR");
    if (!flags.signKeyFile.startsWith("/")) {
      throw new UsageError(
        `Invalid --sign-key-file "${flags.signKeyFile}": give an absolute path`,
      );
    }
    readSignKey(flags.signKeyFile);
    audit.push("--sign-key-file", flags.signKeyFile);
  }
  const compiled = isCompiled();
  return {
    command: [...selfCommand(), ...audit],
    env: scheduleEnv(env, { compiled, denoDir: compiled ? undefined : denoDir(env) }),
    when,
    logFile: join(dataDir(env), "audit.log"),
  };
}

/** Refuses to touch a scheduler that this OS does not have, unless writing to an override. */
function checkHost(place: Placement): void {
  const override = place.scheduler === "cron" ? place.crontabFile : place.dir;
  if (override !== undefined) return;
  if (place.scheduler === "launchd" && Deno.build.os !== "darwin") {
    throw new UsageError(`launchd is macOS only; this is ${Deno.build.os}`, {
      hint: "use --cron or --systemd, or --dry-run to see the plist",
    });
  }
  if (place.scheduler === "systemd" && Deno.build.os !== "linux") {
    throw new UsageError(`systemd is Linux only; this is ${Deno.build.os}`, {
      hint: "use --launchd or --cron, or --dry-run to see the units",
    });
  }
}

function dryRun(spec: EntrySpec, place: Placement): void {
  if (place.scheduler === "cron") {
    println(`# ${place.crontabFile ?? "crontab"} (${describeWhen(spec.when)})`);
    println(cronBlock(spec).trimEnd());
    return;
  }
  const files = Object.entries(entryFiles(spec, place));
  files.forEach(([path, text], i) => {
    if (i > 0) println();
    println(`# ${path}`);
    println(text.trimEnd());
  });
}

function addWhere(cmd: Command): Command {
  return cmd
    .option("--cron", "the user's crontab")
    .option("--systemd", "a systemd .service and .timer (user units; --system for system units)")
    .option("--launchd", "a launchd plist (a LaunchAgent; --system for a LaunchDaemon)")
    .option("--system", "systemd system units or a LaunchDaemon instead of the user's")
    .option(
      "--crontab-file <file>",
      `read and write this file instead of the crontab (or ${CRONTAB_FILE_VARIABLE})`,
    )
    .option(
      "--dir <dir>",
      `write units or plists here, running no scheduler tool (or ${SCHEDULE_DIR_VARIABLE})`,
    );
}

function describeChange(verb: string, changed: boolean, paths: string[], ran: string[]): void {
  const where = paths.join(", ");
  println(
    changed
      ? `${verb}: ${where}`
      : `already ${verb === "installed" ? "installed" : "absent"}: ${where || "nothing to do"}`,
  );
  for (const r of ran) println(`ran: ${r}`);
}

interface Status {
  entries: InstalledEntry[];
  last: ReturnType<typeof parseLastAudit>;
  journal: string;
}

async function readStatus(flags: WhereFlags, env: Env): Promise<Status> {
  const entries: InstalledEntry[] = [];
  const places: Placement[] = [placement({ ...flags, system: false }, "cron", env)];
  for (const scheduler of ["systemd", "launchd"] as const) {
    for (const system of [false, true]) {
      const place = placement({ ...flags, system }, scheduler, env);
      // One override directory holds only one kind: list it once.
      if (system && place.dir !== undefined) continue;
      places.push(place);
    }
  }
  for (const place of places) {
    const found = await findEntry(place);
    if (found !== null) entries.push(found);
  }
  const path = join(dataDir(env), JOURNAL_FILE);
  let last = null;
  try {
    Deno.statSync(path);
    const journal = openJournal(path);
    try {
      last = parseLastAudit(journal.syncState(LAST_AUDIT_KEY));
    } finally {
      journal.close();
    }
  } catch {
    // No journal yet: no audit has run.
  }
  return { entries, last, journal: path };
}

/** Adds `sentry schedule install`, `remove` and `status`. */
export function registerScheduleCommands(program: Command): void {
  const schedule = program.command("schedule").description(
    "run sentry audit from cron, systemd or launchd: install, remove, status",
  );

  addWhere(
    schedule.command("install").description(
      "write the entry that runs sentry audit (idempotent); --dry-run prints it",
    ),
  )
    .option("--every <duration>", "run every 5m, 15m, 1h, 6h, 1d... (default 1h)")
    .option("--at <time>", "run once a day at HH:MM (local time)")
    .option("--fail-on <threshold>", "pass --fail-on to the audit (a risk 0-100, deny, response)")
    .option("--export <dir>", "pass --export DIR to the audit: a bundle per run (air-gapped hosts)")
    .option("--sign-key-file <file>", "pass --sign-key-file FILE to the audit: sign the bundles")
    .option("--dry-run", "print the entries instead of installing them")
    .action(async (flags: InstallFlags) => {
      const env = Deno.env.toObject();
      const scheduler = schedulerOf(flags);
      const place = placement(flags, scheduler, env);
      const spec = entrySpec(flags, env);
      if (scheduler === "cron") {
        try {
          // Checked here so that the error is a usage error naming the flag.
          cronBlock(spec);
        } catch (error) {
          throw new UsageError((error as Error).message);
        }
      }
      if (flags.dryRun) {
        dryRun(spec, place);
        return;
      }
      checkHost(place);
      if (env["SENTRY_API_KEY"] !== undefined) {
        eprintln(
          "sentry: warning: SENTRY_API_KEY is not written into the schedule; " +
            'run "sentry login" so that the scheduled audit finds the key',
        );
      }
      // The log goes in the data directory: it must exist before the first run appends to it.
      ensureDataDir(dataDir(env));
      const result = await installEntry(spec, place);
      describeChange("installed", result.changed, result.paths, result.ran);
      println(`runs: ${spec.command.join(" ")} (${describeWhen(spec.when)})`);
    });

  addWhere(
    schedule.command("remove").description("remove the entry that runs sentry audit (idempotent)"),
  ).action(async (flags: WhereFlags) => {
    const env = Deno.env.toObject();
    const place = placement(flags, schedulerOf(flags), env);
    checkHost(place);
    const result = await removeEntry(place);
    describeChange("removed", result.changed, result.paths, result.ran);
  });

  schedule.command("status")
    .description("show the installed entries, and the last audit's time and result")
    .addOption(
      new Option("--crontab-file <file>", `read this file instead of the crontab`),
    )
    .option("--dir <dir>", "look for units and plists here")
    .option("--json", 'print { "entries": [...], "lastAudit": {...} | null }')
    .action(async (flags: WhereFlags & { json?: boolean }) => {
      const env = Deno.env.toObject();
      const status = await readStatus(flags, env);
      if (flags.json) {
        printJson({ entries: status.entries, lastAudit: status.last });
        return;
      }
      if (status.entries.length === 0) println("installed: nothing (sentry schedule install)");
      for (const e of status.entries) {
        println(`installed: ${e.scheduler}${e.system ? " (system)" : ""} ${e.paths.join(", ")}`);
        for (const line of e.detail.split("\n")) println(`  ${line}`);
      }
      const last = status.last;
      println(
        last === null
          ? "last audit: none yet"
          : `last audit: ${last.at}: ${last.result} (exit ${last.exitCode}), ${last.failing} failing of ${last.findings} finding(s), window to ${last.until}`,
      );
    });
}
