/**
 * The audit lock: one audit at a time per data directory. The lock is a file created
 * atomically (written aside, then hard-linked into place, which fails when it exists) holding the owner's pid, its start time and the host; a lock whose owner is gone (or
 * whose pid now belongs to another process) is stale and taken over.
 *
 * @module
 */

import { isAlive, readStat } from "../platform/mod.ts";

/** The lock file's name, in the data directory's `run/` folder. */
export const AUDIT_LOCK_FILE = "audit.lock";

/** Another audit holds the lock. */
export class AuditLockedError extends Error {
  /** The pid of the audit that holds it. */
  readonly pid: number;

  /** Builds the error for the lock at `path` held by `pid`. */
  constructor(path: string, pid: number) {
    super(`Another audit is running (pid ${pid}, lock "${path}")`);
    this.name = "AuditLockedError";
    this.pid = pid;
  }
}

/** A held lock; `release()` removes it, once. */
export interface AuditLock {
  readonly path: string;
  release(): void;
}

/** Who a lock file names, and how to tell whether they still run. */
interface Owner {
  pid: number;
  start: number | null;
  host: string;
}

function parseOwner(text: string): Owner | null {
  const [pid, start, host] = text.trim().split(" ");
  if (pid === undefined || !/^\d+$/.test(pid)) return null;
  return {
    pid: Number(pid),
    start: start === undefined || !/^\d+$/.test(start) ? null : Number(start),
    host: host ?? "",
  };
}

function startTime(pid: number): number | null {
  return readStat(pid)?.starttime ?? null;
}

/** Options for {@link acquireAuditLock}; each defaults to this process and host. */
export interface LockOptions {
  pid?: number;
  host?: string;
  /** Whether a pid runs with the given start time; defaults to /proc. */
  isRunning?: (pid: number, start: number | null) => boolean;
}

function running(pid: number, start: number | null): boolean {
  if (!isAlive(pid)) return false;
  // The pid was reused by another process since the lock was written: that one is not an audit.
  return start === null || startTime(pid) === start;
}

/**
 * Takes the lock at `path` or throws {@link AuditLockedError}. A stale lock (its owner is gone,
 * or it cannot be read) is removed and the lock taken; of two audits racing for a stale lock,
 * the link lets one win.
 */
export function acquireAuditLock(path: string, options: LockOptions = {}): AuditLock {
  const pid = options.pid ?? Deno.pid;
  const host = options.host ?? Deno.hostname();
  const isRunning = options.isRunning ?? running;
  const content = `${pid} ${startTime(pid) ?? ""} ${host}\n`;
  for (let attempt = 0; attempt < 3; attempt++) {
    // Written aside, then linked into place: the lock never exists without its owner's line.
    const temp = `${path}.${pid}.tmp`;
    Deno.writeTextFileSync(temp, content, { mode: 0o600 });
    let linked = false;
    try {
      Deno.linkSync(temp, path);
      linked = true;
    } catch (error) {
      if (!(error instanceof Deno.errors.AlreadyExists)) throw error;
    } finally {
      Deno.removeSync(temp);
    }
    if (linked) {
      let released = false;
      return {
        path,
        release() {
          if (released) return;
          released = true;
          try {
            const now = parseOwner(Deno.readTextFileSync(path));
            if (now?.pid === pid) Deno.removeSync(path);
          } catch {
            // Gone already.
          }
        },
      };
    }
    let owner: Owner | null = null;
    try {
      owner = parseOwner(Deno.readTextFileSync(path));
    } catch {
      continue; // Removed meanwhile: try again.
    }
    // A lock from another host (a shared home directory) cannot be judged: it holds.
    if (owner !== null && (owner.host !== host || isRunning(owner.pid, owner.start))) {
      throw new AuditLockedError(path, owner.pid);
    }
    try {
      Deno.removeSync(path);
    } catch {
      // Another audit removed it first.
    }
  }
  throw new Error(`Cannot take the audit lock "${path}": it keeps changing`);
}
