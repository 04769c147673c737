/**
 * Scheduled audits: the entries that make cron, systemd or launchd run `sentry audit`. The
 * generators here are pure functions of the command, its environment and the schedule, so that
 * their output can be checked as text; installing them is in `schedule_install.ts`.
 *
 * @module
 */

/** The schedulers Sentry writes entries for. */
export const SCHEDULERS = ["cron", "systemd", "launchd"] as const;

/** One scheduler. */
export type Scheduler = typeof SCHEDULERS[number];

/** When the audit runs: every so many ms, or once a day at a time (local). */
export type When = { every: number } | { at: { hour: number; minute: number } };

/** The name of the systemd units and the crontab block. */
export const UNIT_NAME = "sentry-audit";

/** The launchd label (and the plist's base name). */
export const LAUNCHD_LABEL = "dev.sentry-guard.audit";

/** The crontab block's first line: install replaces the block, remove deletes it. */
export const CRON_BEGIN = '# BEGIN sentry audit (written by "sentry schedule"; do not edit)';
/** The crontab block's last line. */
export const CRON_END = "# END sentry audit";

const DURATION = /^(\d+)(s|m|h|d)$/;
const UNIT_S: Readonly<Record<string, number>> = { s: 1, m: 60, h: 3600, d: 86_400 };

/**
 * Parses `--every`: a whole number of seconds, minutes, hours or days (`15m`, `1h`, `1d`), at
 * least one minute and at most a week.
 *
 * @throws {RangeError} for anything else.
 */
export function parseEvery(text: string): number {
  const match = DURATION.exec(text.trim());
  const seconds = match === null ? NaN : Number(match[1]) * (UNIT_S[match[2] ?? ""] ?? NaN);
  if (!Number.isFinite(seconds) || seconds < 60 || seconds > 7 * 86_400) {
    throw new RangeError(
      `Invalid --every "${text}": give a duration from 1m to 7d, such as 15m, 1h or 1d`,
    );
  }
  return seconds * 1000;
}

/**
 * Parses `--at`: a time of day as `HH:MM` (24-hour, local time).
 *
 * @throws {RangeError} for anything else.
 */
export function parseAt(text: string): { hour: number; minute: number } {
  const match = /^(\d{1,2}):(\d\d)$/.exec(text.trim());
  const hour = Number(match?.[1]);
  const minute = Number(match?.[2]);
  if (match === null || hour > 23 || minute > 59) {
    throw new RangeError(`Invalid --at "${text}": give a time of day such as 02:30 (24-hour)`);
  }
  return { hour, minute };
}

/** Describes a schedule for people: `every 15m`, `daily at 02:30`. */
export function describeWhen(when: When): string {
  if ("at" in when) {
    return `daily at ${String(when.at.hour).padStart(2, "0")}:${
      String(when.at.minute).padStart(2, "0")
    }`;
  }
  const s = when.every / 1000;
  if (s % 86_400 === 0) return `every ${s / 86_400}d`;
  if (s % 3600 === 0) return `every ${s / 3600}h`;
  if (s % 60 === 0) return `every ${s / 60}m`;
  return `every ${s}s`;
}

/**
 * The five time fields of a crontab line. Cron counts from the top of the hour and of the day,
 * so `--every` must divide an hour into whole minutes (1m, 5m, 15m, 30m...), a day into whole
 * hours (1h, 2h, 6h, 12h...), or be 1d.
 *
 * @throws {RangeError} for an interval cron cannot keep.
 */
export function cronFields(when: When): string {
  if ("at" in when) return `${when.at.minute} ${when.at.hour} * * *`;
  const minutes = when.every / 60_000;
  if (Number.isInteger(minutes) && minutes < 60 && 60 % minutes === 0) {
    return minutes === 1 ? "* * * * *" : `*/${minutes} * * * *`;
  }
  const hours = when.every / 3_600_000;
  if (Number.isInteger(hours) && hours < 24 && 24 % hours === 0) {
    return hours === 1 ? "0 * * * *" : `0 */${hours} * * *`;
  }
  if (when.every === 86_400_000) return "0 0 * * *";
  throw new RangeError(
    `Cannot keep "${describeWhen(when)}" with cron: give a divisor of an hour (5m, 15m, 30m), ` +
      "of a day (1h, 2h, 6h, 12h), 1d, or --at HH:MM",
  );
}

/** Quotes a word for /bin/sh: as it is when it is plain, else in single quotes. */
export function shellQuote(word: string): string {
  if (/^[A-Za-z0-9_@%+=:,./-]+$/.test(word)) return word;
  return `'${word.replaceAll("'", `'\\''`)}'`;
}

/** What every generator takes. */
export interface EntrySpec {
  /** The full argv of the audit: Sentry's absolute path (and deno's arguments) then `audit`. */
  command: readonly string[];
  /** The variables the audit needs (HOME, SENTRY_HOME...), in the order written. */
  env: Readonly<Record<string, string>>;
  when: When;
  /** Where cron and launchd append the audit's output. */
  logFile: string;
}

/**
 * The crontab block: the markers around one line that sets the environment and runs the audit,
 * its output appended to the log (so that cron mails nothing). `%` is escaped, as cron reads an
 * unescaped one as the end of the command.
 */
export function cronBlock(spec: EntrySpec): string {
  const env = Object.entries(spec.env).map(([k, v]) => `${k}=${shellQuote(v)}`);
  const command = [...env, ...spec.command.map(shellQuote)].join(" ") +
    ` >>${shellQuote(spec.logFile)} 2>&1`;
  return [
    CRON_BEGIN,
    `${cronFields(spec.when)} ${command.replaceAll("%", "\\%")}`,
    CRON_END,
  ].join("\n") + "\n";
}

/**
 * Puts `block` in a crontab in place of Sentry's block (or at the end when there is none), and
 * returns the new crontab. With `block` null, removes Sentry's block. Other lines are kept as
 * they are.
 */
export function replaceCronBlock(crontab: string, block: string | null): string {
  const lines = crontab.split("\n");
  if (lines.at(-1) === "") lines.pop();
  const out: string[] = [];
  let inside = false;
  let placed = false;
  for (const line of lines) {
    if (line === CRON_BEGIN) {
      inside = true;
      continue;
    }
    if (inside) {
      if (line === CRON_END) {
        inside = false;
        if (block !== null && !placed) out.push(block.trimEnd());
        placed = true;
      }
      continue;
    }
    out.push(line);
  }
  if (block !== null && !placed) out.push(block.trimEnd());
  return out.length === 0 ? "" : out.join("\n") + "\n";
}

/** Sentry's block of a crontab (without its markers), or null when there is none. */
export function findCronBlock(crontab: string): string | null {
  const start = crontab.indexOf(CRON_BEGIN + "\n");
  if (start < 0) return null;
  const body = crontab.slice(start + CRON_BEGIN.length + 1);
  const end = body.indexOf(CRON_END);
  return end < 0 ? null : body.slice(0, end).trimEnd();
}

/**
 * Quotes a word for a systemd unit: in double quotes with `\` and `"` escaped, and `%` doubled
 * so that systemd expands no specifier. In `ExecStart=` (`exec: true`), `$` is doubled too, as
 * systemd expands `$NAME` there.
 */
export function systemdQuote(word: string, options: { exec: boolean }): string {
  let escaped = word.replaceAll("\\", "\\\\").replaceAll('"', '\\"').replaceAll("%", "%%");
  if (options.exec) escaped = escaped.replaceAll("$", "$$$$");
  return /^[A-Za-z0-9_@+=:,./-]+$/.test(word) ? escaped : `"${escaped}"`;
}

/** The systemd `.service` and `.timer` pair, by file name. */
export function systemdUnits(
  spec: EntrySpec,
  options: { system: boolean },
): Record<string, string> {
  const env = Object.entries(spec.env).map(([k, v]) =>
    `Environment=${systemdQuote(`${k}=${v}`, { exec: false })}`
  );
  const service = [
    "[Unit]",
    "Description=Sentry audit: check what AI agents did since the last audit",
    ...(options.system ? ["After=network-online.target", "Wants=network-online.target"] : []),
    "",
    "[Service]",
    "Type=oneshot",
    ...env,
    `ExecStart=${spec.command.map((w) => systemdQuote(w, { exec: true })).join(" ")}`,
    // Exit 1 means findings: the run worked, and the unit should not be marked failed for it.
    "SuccessExitStatus=1",
    "Nice=10",
    "",
  ].join("\n");
  const timing = "at" in spec.when
    ? [
      `OnCalendar=*-*-* ${String(spec.when.at.hour).padStart(2, "0")}:${
        String(spec.when.at.minute).padStart(2, "0")
      }:00`,
      "Persistent=true",
    ]
    : [
      `OnBootSec=${Math.round(spec.when.every / 1000)}s`,
      `OnUnitActiveSec=${Math.round(spec.when.every / 1000)}s`,
    ];
  const timer = [
    "[Unit]",
    `Description=Run the Sentry audit ${describeWhen(spec.when)}`,
    "",
    "[Timer]",
    ...timing,
    "AccuracySec=1min",
    `Unit=${UNIT_NAME}.service`,
    "",
    "[Install]",
    "WantedBy=timers.target",
    "",
  ].join("\n");
  return { [`${UNIT_NAME}.service`]: service, [`${UNIT_NAME}.timer`]: timer };
}

function xml(text: string): string {
  return text.replaceAll("&", "&amp;").replaceAll("<", "&lt;").replaceAll(">", "&gt;")
    .replaceAll('"', "&quot;");
}

/** The launchd property list (a LaunchAgent, or a LaunchDaemon with `system`). */
export function launchdPlist(spec: EntrySpec, options: { system: boolean }): string {
  const string = (s: string) => `<string>${xml(s)}</string>`;
  const timing = "at" in spec.when
    ? [
      "  <key>StartCalendarInterval</key>",
      "  <dict>",
      "    <key>Hour</key>",
      `    <integer>${spec.when.at.hour}</integer>`,
      "    <key>Minute</key>",
      `    <integer>${spec.when.at.minute}</integer>`,
      "  </dict>",
    ]
    : ["  <key>StartInterval</key>", `  <integer>${Math.round(spec.when.every / 1000)}</integer>`];
  return [
    '<?xml version="1.0" encoding="UTF-8"?>',
    '<!DOCTYPE plist PUBLIC "-//Apple//DTD PLIST 1.0//EN" "http://www.apple.com/DTDs/PropertyList-1.0.dtd">',
    '<plist version="1.0">',
    "<dict>",
    "  <key>Label</key>",
    `  ${string(LAUNCHD_LABEL)}`,
    "  <key>ProgramArguments</key>",
    "  <array>",
    ...spec.command.map((arg) => `    ${string(arg)}`),
    "  </array>",
    "  <key>EnvironmentVariables</key>",
    "  <dict>",
    ...Object.entries(spec.env).flatMap((
      [k, v],
    ) => [`    <key>${xml(k)}</key>`, `    ${string(v)}`]),
    "  </dict>",
    ...timing,
    "  <key>RunAtLoad</key>",
    "  <false/>",
    "  <key>ProcessType</key>",
    "  <string>Background</string>",
    ...(options.system ? [] : ["  <key>LowPriorityIO</key>", "  <true/>"]),
    "  <key>StandardOutPath</key>",
    `  ${string(spec.logFile)}`,
    "  <key>StandardErrorPath</key>",
    `  ${string(spec.logFile)}`,
    "</dict>",
    "</plist>",
    "",
  ].join("\n");
}

/** The variables a scheduled audit carries over from the installing shell, when set. */
export const CARRIED_VARIABLES = [
  "HOME",
  "SENTRY_HOME",
  "XDG_DATA_HOME",
  "XDG_CONFIG_HOME",
  "SENTRY_ENDPOINT",
  "PATH",
] as const;

/**
 * The environment a scheduled audit needs: the variables that locate Sentry's data, config and
 * key (schedulers start jobs with almost none), and under `deno run` the module cache, so that
 * deno finds its dependencies without the network. The API key is never written: it stays in
 * the credentials file (`sentry login`).
 */
export function scheduleEnv(
  env: Readonly<Record<string, string | undefined>>,
  options: { compiled: boolean; denoDir?: string | undefined },
): Record<string, string> {
  const out: Record<string, string> = {};
  for (const name of CARRIED_VARIABLES) {
    const value = env[name];
    if (value !== undefined && value !== "") out[name] = value;
  }
  if (!options.compiled && options.denoDir !== undefined) out["DENO_DIR"] = options.denoDir;
  return out;
}
