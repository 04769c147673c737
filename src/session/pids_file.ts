/**
 * The pids file, `$SENTRY_HOME/run/<session>.pids`: what a session's Sentry tells the processes
 * that act on its tree from outside (`sentry resume`, `sentry kill`, the API of another process,
 * and the watchdog if Sentry dies). One line per process of the tree, `PID START` (the start
 * time from /proc/PID/stat, which proves a pid still names the same process), and, when the
 * tree lives in a cgroup of its own, a line `cgroup {json}` with its {@link CgroupSpec}.
 *
 * While the session is still starting (the agent has not been let go), a line `starting` says so:
 * a watchdog that finds it kills the tree whatever `--on-exit` says, since the agent would
 * otherwise run with nothing watching it from its first instruction.
 *
 * Readers written before the cgroup and starting lines skip them: they do not start with a
 * number.
 *
 * @module
 */

import type { CgroupSpec, ProcessRef } from "../platform/mod.ts";

/** What a pids file records. */
export interface PidsFile {
  /** The tree's processes, each with its start time. */
  processes: ProcessRef[];
  /** The session's cgroup, or null when it has none (signals only). */
  cgroup: CgroupSpec | null;
  /** True while the session has not let the agent go yet; absent means false. */
  starting?: boolean;
}

/** Parses a pids file; lines that do not parse are left out. */
export function parsePidsFile(text: string): PidsFile {
  const file: PidsFile = { processes: [], cgroup: null };
  for (const raw of text.split("\n")) {
    const line = raw.trim();
    if (line === "starting") {
      file.starting = true;
      continue;
    }
    if (line.startsWith("cgroup ")) {
      file.cgroup = parseCgroupLine(line.slice("cgroup ".length)) ?? file.cgroup;
      continue;
    }
    const match = /^(\d+) (\d+)$/.exec(line);
    if (match === null) continue;
    const pid = Number(match[1]);
    if (pid > 0) file.processes.push({ pid, start: Number(match[2]) });
  }
  return file;
}

function parseCgroupLine(json: string): CgroupSpec | null {
  let value: unknown;
  try {
    value = JSON.parse(json);
  } catch {
    return null;
  }
  if (typeof value !== "object" || value === null) return null;
  const { version, path, origin } = value as Record<string, unknown>;
  if ((version !== 1 && version !== 2) || typeof path !== "string" || !path.startsWith("/")) {
    return null;
  }
  return {
    version,
    path,
    origin: typeof origin === "string" && origin.startsWith("/") ? origin : null,
  };
}

/** Formats a pids file: the processes, then the cgroup line. */
export function formatPidsFile(file: PidsFile): string {
  const lines = file.processes.map((p) => `${p.pid} ${p.start}`);
  if (file.cgroup !== null) lines.push(`cgroup ${JSON.stringify(file.cgroup)}`);
  if (file.starting === true) lines.push("starting");
  return lines.join("\n") + "\n";
}

/** Reads a pids file, or null when there is none. */
export function readPidsFile(path: string): PidsFile | null {
  try {
    return parsePidsFile(Deno.readTextFileSync(path));
  } catch {
    return null;
  }
}

/**
 * Writes a pids file atomically (a temporary file renamed over it), mode 0600. Returns false
 * when it could not be written.
 */
export function writePidsFile(path: string, file: PidsFile): boolean {
  const tmp = `${path}.tmp`;
  try {
    Deno.writeTextFileSync(tmp, formatPidsFile(file), { mode: 0o600 });
    Deno.renameSync(tmp, path);
    return true;
  } catch {
    return false;
  }
}
