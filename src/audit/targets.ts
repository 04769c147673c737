/**
 * Audit targets: agents that run outside Sentry, found by name, command line, user or cgroup.
 * The audit watches each match for a bounded window through `sentry attach` (the same path as a
 * person attaching by hand), then detaches, leaving the agent running, and reports what it saw.
 *
 * @module
 */

import type { AuditTargetConfig } from "../config/mod.ts";
import {
  listPids,
  parseProcCgroup,
  readCmdline,
  readCwd,
  readStat,
  readStatusUids,
} from "../platform/mod.ts";

/** What the matcher knows of one process. */
export interface ProcessInfo {
  pid: number;
  ppid: number;
  /** `/proc/PID/comm`: the name, at most 15 characters. */
  comm: string;
  argv: string[];
  uid: number | null;
  /** Its cgroup paths, one per hierarchy. */
  cgroups: string[];
  /** Start time in clock ticks after boot, to list the oldest first. */
  start: number;
}

/**
 * Turns a glob into an anchored regular expression: `*` is any text (slashes included), `?`
 * one character, and everything else stands for itself.
 */
export function globToRegExp(glob: string): RegExp {
  let source = "";
  for (const ch of glob) {
    if (ch === "*") source += "[\\s\\S]*";
    else if (ch === "?") source += "[\\s\\S]";
    else source += ch.replace(/[.+^${}()|[\]\\]/g, "\\$&");
  }
  return new RegExp(`^${source}$`);
}

/**
 * Parses /etc/passwd into user names by uid and uids by name.
 */
export function parsePasswd(text: string): Map<string, number> {
  const users = new Map<string, number>();
  for (const line of text.split("\n")) {
    const [name, , uid] = line.split(":");
    if (name !== undefined && name !== "" && uid !== undefined && /^\d+$/.test(uid)) {
      users.set(name, Number(uid));
    }
  }
  return users;
}

/** A target's selectors, compiled. */
export interface TargetMatcher {
  matches(process: ProcessInfo): boolean;
}

/**
 * Compiles a target's selectors. A user given by name is looked up in `users`; an unknown name
 * matches nothing.
 */
export function compileTarget(
  target: AuditTargetConfig,
  users: ReadonlyMap<string, number>,
): TargetMatcher {
  const name = target.process === undefined ? null : globToRegExp(target.process);
  const cmdline = target.cmdline === undefined ? null : globToRegExp(target.cmdline);
  const cgroup = target.cgroup === undefined ? null : globToRegExp(target.cgroup);
  const uid = target.user === undefined
    ? undefined
    : typeof target.user === "number"
    ? target.user
    : /^\d+$/.test(target.user)
    ? Number(target.user)
    : users.get(target.user) ?? -1;
  return {
    matches(p) {
      if (p.argv.length === 0) return false; // A kernel thread or a zombie.
      if (
        name !== null && !name.test(p.comm) &&
        !name.test((p.argv[0] ?? "").split("/").at(-1) ?? "")
      ) return false;
      if (cmdline !== null && !cmdline.test(p.argv.join(" "))) return false;
      if (uid !== undefined && p.uid !== uid) return false;
      if (cgroup !== null && !p.cgroups.some((c) => cgroup.test(c))) return false;
      return true;
    },
  };
}

/** Reads every visible process, skipping those that vanish while read and `exclude`. */
export function readProcesses(exclude: ReadonlySet<number>): ProcessInfo[] {
  const out: ProcessInfo[] = [];
  for (const pid of listPids()) {
    if (exclude.has(pid)) continue;
    const stat = readStat(pid);
    const argv = readCmdline(pid);
    if (stat === null || argv === null) continue;
    let cgroups: string[] = [];
    try {
      cgroups = parseProcCgroup(Deno.readTextFileSync(`/proc/${pid}/cgroup`)).map((e) => e.path);
    } catch {
      // Gone meanwhile, or no cgroups here.
    }
    out.push({
      pid,
      ppid: stat.ppid,
      comm: stat.comm,
      argv,
      uid: readStatusUids(pid)?.uid ?? null,
      cgroups,
      start: stat.starttime,
    });
  }
  return out;
}

/** The processes a target matches, the oldest first, at most its `max_matches`. */
export function findMatches(
  target: AuditTargetConfig,
  processes: readonly ProcessInfo[],
  users: ReadonlyMap<string, number>,
): ProcessInfo[] {
  const matcher = compileTarget(target, users);
  const found = processes.filter((p) => matcher.matches(p));
  // A match whose parent matches too is part of that tree: watching the root covers it.
  const pids = new Set(found.map((p) => p.pid));
  const roots = found.filter((p) => !pids.has(p.ppid));
  return roots.sort((a, b) => a.start - b.start || a.pid - b.pid).slice(0, target.max_matches);
}

/** What watching one match saw. */
export interface WatchResult {
  pid: number;
  command: string[];
  /** The attach session, or null when attaching failed. */
  session: string | null;
  /** Why the watch failed, or null. */
  error: string | null;
}

/** What {@link watchProcess} takes. */
export interface WatchOptions {
  /** The argv prefix that runs Sentry (see `selfCommand`). */
  sentry: readonly string[];
  target: AuditTargetConfig;
  /** How long to watch, in ms. */
  windowMs: number;
  env: Record<string, string>;
  /** Aborting detaches at once. */
  signal: AbortSignal;
}

const ATTACHED = /attached to pid \d+ .* as session (\S+) /;

/**
 * Attaches to `process` with `sentry attach` under the target's policy, watches for the window,
 * then detaches (SIGTERM, as Ctrl-C does), leaving the agent running. Returns the session.
 */
export async function watchProcess(
  process: ProcessInfo,
  options: WatchOptions,
): Promise<WatchResult> {
  const { target } = options;
  const [program, ...prefix] = options.sentry;
  if (program === undefined) throw new TypeError("No command to run Sentry with");
  const args = [
    ...prefix,
    "attach",
    String(process.pid),
    "--policy",
    target.policy,
    "--name",
    target.name,
    "--no-api",
    "--no-rollback",
    "--json",
    "--workspace",
    readCwd(process.pid) ?? "/",
    ...(target.mode === undefined ? [] : ["--mode", target.mode]),
  ];
  const child = new Deno.Command(program, {
    args,
    env: options.env,
    clearEnv: true,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  let stderr = "";
  let session: string | null = null;
  let onAttached: () => void = () => {};
  const attached = new Promise<void>((resolve) => onAttached = resolve);
  const reading = (async () => {
    for await (const text of child.stderr.pipeThrough(new TextDecoderStream())) {
      stderr += text;
      const match = ATTACHED.exec(stderr);
      if (session === null && match !== null) {
        session = match[1] ?? null;
        onAttached();
      }
    }
  })();
  const stop = () => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Exited already.
    }
  };
  options.signal.addEventListener("abort", stop);
  let exited = false;
  const status = child.status.then((s) => {
    exited = true;
    onAttached();
    return s;
  });
  try {
    await attached;
    if (!exited && !options.signal.aborted) {
      await new Promise<void>((resolve) => {
        const timer = setTimeout(resolve, options.windowMs);
        options.signal.addEventListener("abort", () => {
          clearTimeout(timer);
          resolve();
        });
        status.then(() => {
          clearTimeout(timer);
          resolve();
        });
      });
    }
    stop();
    const killer = setTimeout(() => {
      try {
        child.kill("SIGKILL");
      } catch {
        // Exited already.
      }
    }, 10_000);
    const result = await status;
    clearTimeout(killer);
    await reading.catch(() => {});
    const lastLine = stderr.trim().split("\n").map((l) => messageOf(l)).filter((l) => l !== "")
      .at(-1);
    const failed = session === null || (result.code !== 0 && result.signal === null);
    return {
      pid: process.pid,
      command: process.argv,
      session,
      error: failed
        ? `sentry attach exited ${result.code}${lastLine === undefined ? "" : `: ${lastLine}`}`
        : null,
    };
  } finally {
    options.signal.removeEventListener("abort", stop);
  }
}

/** The message of a JSON notice line, or the line itself. */
function messageOf(line: string): string {
  try {
    const value = JSON.parse(line) as { message?: unknown };
    return typeof value.message === "string" ? value.message : "";
  } catch {
    return line.replace(/^sentry: /, "").trim();
  }
}
