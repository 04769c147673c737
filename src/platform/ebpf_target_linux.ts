/**
 * Reads from /proc what the eBPF tier needs to name the target of a control record (a signal,
 * trace or memory write the tree aimed at another process) while the record is fresh: the
 * target's thread group and name, the pid a pidfd holds, the members of a process group. The
 * parsers are pure functions over the text, tested on captured samples.
 *
 * @module
 */

import { listPids, readStat } from "./proc_linux.ts";

/** Who a process (or thread) is, from /proc/PID/status. */
export interface ProcessIdentity {
  /** The thread's pid (its tid), in the host's numbering. */
  pid: number;
  /** Its thread group (the process), in the host's numbering. */
  tgid: number;
  /** Its name (`comm`), at most 15 bytes. */
  name: string;
}

/**
 * Parses the `Name:`, `Tgid:` and `Pid:` lines of /proc/PID/status. Throws a SyntaxError when
 * one is missing.
 */
export function parseStatusIdentity(text: string): ProcessIdentity {
  const line = (key: string): string => {
    const at = text.startsWith(`${key}:`) ? 0 : text.indexOf(`\n${key}:`);
    if (at < 0) throw new SyntaxError(`No "${key}" line in /proc status`);
    const start = text.indexOf(":", at) + 1;
    const end = text.indexOf("\n", start);
    return text.slice(start, end < 0 ? undefined : end);
  };
  // The name is tab-separated from its key and may itself hold spaces (never a newline).
  const name = line("Name").replace(/^\t/, "");
  const tgid = Number(line("Tgid").trim());
  const pid = Number(line("Pid").trim());
  if (!Number.isInteger(tgid) || !Number.isInteger(pid)) {
    throw new SyntaxError("Malformed Tgid or Pid line in /proc status");
  }
  return { pid, tgid, name };
}

/**
 * The pid a pidfd holds, from the `Pid:` line of its /proc/PID/fdinfo/FD: the host's number
 * when read from the host's namespace, -1 when the process has exited, 0 when it is outside the
 * reader's namespace. Null when the descriptor is no pidfd (no such line).
 */
export function parsePidfdInfo(text: string): number | null {
  const match = /(?:^|\n)Pid:\s*(-?\d+)/.exec(text);
  return match === null ? null : Number(match[1]);
}

/** A control's target as /proc shows it now, or null when it is gone. */
export interface TargetInfo {
  /** The thread group (process) the pid belongs to. */
  tgid: number;
  /** The process's name (its main thread's `comm`). */
  comm: string;
  /** The process group. */
  pgrp: number;
  /** The parent process (a zombie's parent is the one that has not reaped it yet). */
  ppid: number;
}

/** Reads a process or thread's group, name and process group; null when it is gone. */
export function readTarget(pid: number): TargetInfo | null {
  let identity: ProcessIdentity;
  try {
    identity = parseStatusIdentity(Deno.readTextFileSync(`/proc/${pid}/status`));
  } catch {
    return null;
  }
  const stat = readStat(identity.tgid);
  return {
    tgid: identity.tgid,
    comm: stat?.comm ?? identity.name,
    pgrp: stat?.pgrp ?? 0,
    ppid: stat?.ppid ?? 0,
  };
}

/**
 * The host pid the pidfd `fd` of process `pid` holds, or null when it cannot be read (the
 * process or the descriptor is gone, or the descriptor is no pidfd, or the target has exited).
 */
export function readPidfdTarget(pid: number, fd: number): number | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`);
  } catch {
    return null;
  }
  const target = parsePidfdInfo(text);
  return target === null || target <= 0 ? null : target;
}

/** The live processes of a process group, found by a scan of /proc. */
export function listProcessGroup(pgid: number): number[] {
  const members: number[] = [];
  for (const pid of listPids()) {
    const stat = readStat(pid);
    if (stat !== null && stat.pgrp === pgid && stat.state !== "Z") members.push(pid);
  }
  return members;
}
