/**
 * Installing, removing and finding the scheduled-audit entries: the user's crontab (through
 * `crontab -l` and `crontab -`), systemd units (then `systemctl daemon-reload` and the timer
 * enabled), and launchd plists (then `launchctl bootstrap`). Every step is idempotent. An
 * override (a crontab file, a unit or plist directory) writes files only and runs no tool,
 * for tests and for packaging.
 *
 * @module
 */

import { join } from "node:path";
import {
  cronBlock,
  type EntrySpec,
  findCronBlock,
  LAUNCHD_LABEL,
  launchdPlist,
  replaceCronBlock,
  type Scheduler,
  systemdUnits,
  UNIT_NAME,
} from "./schedule.ts";
import { writeFileAtomic } from "./atomic.ts";

/** Where a scheduler's entries go. */
export interface Placement {
  scheduler: Scheduler;
  /** systemd and launchd: the system's (`/etc/systemd/system`, `/Library/LaunchDaemons`). */
  system: boolean;
  /** A crontab file instead of the user's crontab (cron only). */
  crontabFile?: string | undefined;
  /** A directory instead of the scheduler's own (systemd and launchd). */
  dir?: string | undefined;
  /** The home directory, for the per-user locations. */
  home: string;
  /** `XDG_CONFIG_HOME`, for the systemd user directory. */
  xdgConfigHome?: string | undefined;
}

/** Whether a placement writes to an override, so that no scheduler tool is run. */
function overridden(place: Placement): boolean {
  return place.scheduler === "cron" ? place.crontabFile !== undefined : place.dir !== undefined;
}

/** The directory systemd units or launchd plists go in. */
export function entryDir(place: Placement): string {
  if (place.dir !== undefined) return place.dir;
  if (place.scheduler === "systemd") {
    if (place.system) return "/etc/systemd/system";
    const base = place.xdgConfigHome !== undefined && place.xdgConfigHome.startsWith("/")
      ? place.xdgConfigHome
      : join(place.home, ".config");
    return join(base, "systemd", "user");
  }
  return place.system ? "/Library/LaunchDaemons" : join(place.home, "Library", "LaunchAgents");
}

/** The files an entry consists of, by path, with their content. */
export function entryFiles(spec: EntrySpec, place: Placement): Record<string, string> {
  const dir = entryDir(place);
  if (place.scheduler === "systemd") {
    const units = systemdUnits(spec, { system: place.system });
    return Object.fromEntries(Object.entries(units).map(([name, text]) => [join(dir, name), text]));
  }
  return { [join(dir, `${LAUNCHD_LABEL}.plist`)]: launchdPlist(spec, { system: place.system }) };
}

/** Runs a tool to completion; throws with its stderr when it fails. */
async function tool(program: string, args: string[], stdin?: string): Promise<string> {
  let child: Deno.ChildProcess;
  try {
    child = new Deno.Command(program, {
      args,
      stdin: stdin === undefined ? "null" : "piped",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
  } catch (error) {
    throw new Error(`Cannot run "${program}": ${(error as Error).message}`, { cause: error });
  }
  if (stdin !== undefined) {
    const writer = child.stdin.getWriter();
    await writer.write(new TextEncoder().encode(stdin));
    await writer.close();
  }
  const out = await child.output();
  if (!out.success) {
    const why = new TextDecoder().decode(out.stderr).trim().split("\n")[0] ?? "";
    throw new Error(`"${[program, ...args].join(" ")}" failed (exit ${out.code}): ${why}`);
  }
  return new TextDecoder().decode(out.stdout);
}

/** Reads the crontab: the override file, or `crontab -l` (empty when the user has none). */
async function readCrontab(place: Placement): Promise<string> {
  if (place.crontabFile !== undefined) {
    try {
      return await Deno.readTextFile(place.crontabFile);
    } catch (error) {
      if (error instanceof Deno.errors.NotFound) return "";
      throw error;
    }
  }
  const child = new Deno.Command("crontab", { args: ["-l"], stdout: "piped", stderr: "piped" });
  let out: Deno.CommandOutput;
  try {
    out = await child.output();
  } catch (error) {
    throw new Error(`Cannot run "crontab": ${(error as Error).message}`, { cause: error });
  }
  if (out.success) return new TextDecoder().decode(out.stdout);
  const why = new TextDecoder().decode(out.stderr);
  if (/no crontab/i.test(why)) return "";
  throw new Error(`"crontab -l" failed (exit ${out.code}): ${why.trim().split("\n")[0]}`);
}

async function writeCrontab(place: Placement, text: string): Promise<void> {
  if (place.crontabFile !== undefined) {
    await writeFileAtomic(place.crontabFile, text, { mode: 0o600 });
    return;
  }
  await tool("crontab", ["-"], text);
}

function readOrNull(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

/** What an install or a remove did. */
export interface ChangeResult {
  /** False when everything already was as asked. */
  changed: boolean;
  /** The files written or removed, or the crontab. */
  paths: string[];
  /** The scheduler tools run, as command lines. */
  ran: string[];
}

function systemctl(place: Placement): string[] {
  return place.system ? ["systemctl"] : ["systemctl", "--user"];
}

/**
 * Installs the entry: the crontab block in place of an older one, or the files (mode 0644,
 * written atomically), then enables them with the scheduler's tool unless overridden. Nothing
 * is written when the entry is already installed as asked.
 */
export async function installEntry(spec: EntrySpec, place: Placement): Promise<ChangeResult> {
  const ran: string[] = [];
  if (place.scheduler === "cron") {
    const before = await readCrontab(place);
    const after = replaceCronBlock(before, cronBlock(spec));
    const where = place.crontabFile ?? "crontab";
    if (after === before) return { changed: false, paths: [where], ran };
    await writeCrontab(place, after);
    if (place.crontabFile === undefined) ran.push("crontab -");
    return { changed: true, paths: [where], ran };
  }
  const files = entryFiles(spec, place);
  let changed = false;
  for (const [path, text] of Object.entries(files)) {
    if (readOrNull(path) === text) continue;
    await Deno.mkdir(entryDir(place), { recursive: true });
    await writeFileAtomic(path, text, { mode: 0o644 });
    changed = true;
  }
  if (!overridden(place)) {
    if (place.scheduler === "systemd") {
      const [program, ...base] = systemctl(place);
      for (
        const args of [[...base, "daemon-reload"], [
          ...base,
          "enable",
          "--now",
          `${UNIT_NAME}.timer`,
        ]]
      ) {
        await tool(program ?? "systemctl", args);
        ran.push([program, ...args].join(" "));
      }
    } else if (changed) {
      const plist = Object.keys(files)[0] ?? "";
      const domain = place.system ? "system" : `gui/${Deno.uid()}`;
      // bootout fails when the job was not loaded: that is fine.
      await tool("launchctl", ["bootout", `${domain}/${LAUNCHD_LABEL}`]).catch(() => {});
      await tool("launchctl", ["bootstrap", domain, plist]);
      ran.push(`launchctl bootstrap ${domain} ${plist}`);
    }
  }
  return { changed, paths: Object.keys(files), ran };
}

/** Removes the entry (the crontab block, or the files after disabling them). Idempotent. */
export async function removeEntry(place: Placement): Promise<ChangeResult> {
  const ran: string[] = [];
  if (place.scheduler === "cron") {
    const before = await readCrontab(place);
    const after = replaceCronBlock(before, null);
    const where = place.crontabFile ?? "crontab";
    if (after === before) return { changed: false, paths: [where], ran };
    await writeCrontab(place, after);
    if (place.crontabFile === undefined) ran.push("crontab -");
    return { changed: true, paths: [where], ran };
  }
  const dir = entryDir(place);
  const paths = place.scheduler === "systemd"
    ? [join(dir, `${UNIT_NAME}.timer`), join(dir, `${UNIT_NAME}.service`)]
    : [join(dir, `${LAUNCHD_LABEL}.plist`)];
  const present = paths.filter((p) => readOrNull(p) !== null);
  if (present.length > 0 && !overridden(place)) {
    if (place.scheduler === "systemd") {
      const [program, ...base] = systemctl(place);
      await tool(program ?? "systemctl", [...base, "disable", "--now", `${UNIT_NAME}.timer`])
        .catch(() => {});
      ran.push([program, ...base, "disable", "--now", `${UNIT_NAME}.timer`].join(" "));
    } else {
      const domain = place.system ? "system" : `gui/${Deno.uid()}`;
      await tool("launchctl", ["bootout", `${domain}/${LAUNCHD_LABEL}`]).catch(() => {});
      ran.push(`launchctl bootout ${domain}/${LAUNCHD_LABEL}`);
    }
  }
  for (const path of present) await Deno.remove(path);
  if (present.length > 0 && !overridden(place) && place.scheduler === "systemd") {
    const [program, ...base] = systemctl(place);
    await tool(program ?? "systemctl", [...base, "daemon-reload"]).catch(() => {});
  }
  return { changed: present.length > 0, paths: present, ran };
}

/** What is installed for one scheduler. */
export interface InstalledEntry {
  scheduler: Scheduler;
  system: boolean;
  /** Where it was found: the files, or the crontab. */
  paths: string[];
  /** The crontab line, the `ExecStart=` line and timer, or the plist's program, for people. */
  detail: string;
}

/** Finds an installed entry; null when there is none. Reads only. */
export async function findEntry(place: Placement): Promise<InstalledEntry | null> {
  if (place.scheduler === "cron") {
    let crontab: string;
    try {
      crontab = await readCrontab(place);
    } catch {
      return null; // No cron on this host.
    }
    const block = findCronBlock(crontab);
    if (block === null) return null;
    return {
      scheduler: "cron",
      system: false,
      paths: [place.crontabFile ?? "crontab"],
      detail: block,
    };
  }
  const dir = entryDir(place);
  if (place.scheduler === "systemd") {
    const service = readOrNull(join(dir, `${UNIT_NAME}.service`));
    const timer = readOrNull(join(dir, `${UNIT_NAME}.timer`));
    if (service === null && timer === null) return null;
    const line = (text: string | null, key: RegExp) =>
      text?.split("\n").filter((l) => key.test(l)).join("; ") ?? "missing";
    return {
      scheduler: "systemd",
      system: place.system,
      paths: [join(dir, `${UNIT_NAME}.service`), join(dir, `${UNIT_NAME}.timer`)],
      detail: `${line(timer, /^On[A-Z]/)}; ${line(service, /^ExecStart=/)}`,
    };
  }
  const path = join(dir, `${LAUNCHD_LABEL}.plist`);
  const plist = readOrNull(path);
  if (plist === null) return null;
  const interval = /<key>StartInterval<\/key>\s*<integer>(\d+)<\/integer>/.exec(plist);
  const hour = /<key>Hour<\/key>\s*<integer>(\d+)<\/integer>/.exec(plist);
  const minute = /<key>Minute<\/key>\s*<integer>(\d+)<\/integer>/.exec(plist);
  return {
    scheduler: "launchd",
    system: place.system,
    paths: [path],
    detail: interval !== null
      ? `StartInterval ${interval[1]}s`
      : `StartCalendarInterval ${hour?.[1] ?? "?"}:${(minute?.[1] ?? "?").padStart(2, "0")}`,
  };
}
