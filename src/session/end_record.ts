/**
 * A session's end, kept beside the journal when the journal cannot take it (a full disk). The
 * file `run/<session>.end` is made at start with its whole size already allocated, so writing the
 * end later overwrites blocks the file owns and needs no free space. The next command that opens
 * the journal (`sessions`, `status`, `serve`...) journals the recorded end, instead of calling a
 * session whose Sentry exited cleanly `crashed`, and removes the file.
 *
 * @module
 */
import { join } from "node:path";
import { type ReconcileOptions, SessionPatch } from "../journal/mod.ts";

/** The reserved size: an end (state, time, exit code, a note) is far smaller. */
const SIZE = 2048;

/** The end record's path for a session. */
export function endRecordPath(dataDir: string, session: string): string {
  return join(dataDir, "run", `${session}.end`);
}

/**
 * Makes the session's end record, allocated and empty (spaces). Returns false when it cannot be
 * made (then an end the journal refuses is lost, as before).
 */
export function reserveEndRecord(dataDir: string, session: string): boolean {
  try {
    Deno.mkdirSync(join(dataDir, "run"), { recursive: true, mode: 0o700 });
    Deno.writeFileSync(endRecordPath(dataDir, session), new Uint8Array(SIZE).fill(0x20), {
      mode: 0o600,
    });
    return true;
  } catch {
    return false;
  }
}

/**
 * Writes the end into the reserved record, in place. Returns false when there is no record or
 * the write failed.
 */
export function writeEndRecord(dataDir: string, session: string, end: SessionPatch): boolean {
  const bytes = new TextEncoder().encode(JSON.stringify(SessionPatch.parse(end)));
  if (bytes.length > SIZE) return false;
  let file: Deno.FsFile | undefined;
  try {
    // Not truncated: the bytes overwrite the reserved ones, and the padding stays spaces.
    file = Deno.openSync(endRecordPath(dataDir, session), { write: true });
    const padded = new Uint8Array(SIZE).fill(0x20);
    padded.set(bytes);
    let at = 0;
    while (at < SIZE) at += file.writeSync(padded.subarray(at));
    file.syncDataSync();
    return true;
  } catch {
    return false;
  } finally {
    file?.close();
  }
}

/** The end a record holds, or null when it holds none (still blank, missing or damaged). */
export function readEndRecord(dataDir: string, session: string): SessionPatch | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(endRecordPath(dataDir, session)).trim();
  } catch {
    return null;
  }
  if (text === "") return null;
  try {
    const patch = SessionPatch.safeParse(JSON.parse(text));
    return patch.success ? patch.data : null;
  } catch {
    return null;
  }
}

/** Removes a session's end record; one already gone is not an error. */
export function dropEndRecord(dataDir: string, session: string): void {
  try {
    Deno.removeSync(endRecordPath(dataDir, session));
  } catch {
    // Gone already.
  }
}

/**
 * What `Journal.reconcile` needs to journal the recorded ends of a data directory's dead
 * sessions (instead of calling them crashed), and to remove each record once journaled.
 */
export function endRecords(dataDir: string): ReconcileOptions {
  return {
    recorded: (session) => readEndRecord(dataDir, session),
    settled: (session) => dropEndRecord(dataDir, session),
  };
}
