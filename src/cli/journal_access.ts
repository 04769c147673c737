import { join } from "node:path";
import { type Journal, JOURNAL_FILE, openJournal, type SessionSummary } from "../journal/mod.ts";
import { dataDir, isAlive } from "../platform/mod.ts";
import { endRecords } from "../session/mod.ts";
import { UsageError } from "./errors.ts";
import { eprintln, paint } from "./output.ts";

/** The journal of this user's data directory, and the directory. */
export interface OpenedJournal {
  journal: Journal;
  dataDir: string;
}

/**
 * Opens the journal for reading commands. Live sessions whose Sentry has died are marked
 * crashed first, so that `sessions` never shows a dead session as running.
 */
export function openForReading(): OpenedJournal {
  const dir = dataDir(Deno.env.toObject());
  const path = join(dir, JOURNAL_FILE);
  try {
    Deno.statSync(path);
  } catch {
    throw new UsageError(`No journal at "${path}": no session has run yet`, {
      hint: "start one with: sentry run -- <command>  (SENTRY_HOME chooses the data directory)",
    });
  }
  const journal = openJournal(path);
  reconcileJournal(journal, dir);
  return { journal, dataDir: dir };
}

/**
 * Brings the journal's live sessions up to date before a command reads them: a session whose
 * Sentry died is marked crashed, and an end Sentry could only keep in `run/<id>.end` is
 * journaled. Those are writes: when the journal cannot take them (its disk is full, or
 * read-only), what it holds is still read, as it is, after a one-line warning on stderr.
 */
export function reconcileJournal(journal: Journal, dir: string): void {
  try {
    journal.reconcile(isAlive, endRecords(dir));
  } catch (error) {
    eprintln(paint(
      `sentry: warning: the journal cannot be written (${
        (error as Error).message
      }): sessions are shown as last journaled; a session whose Sentry died, or whose end is kept in ${
        join(dir, "run")
      }, is brought up to date once it can be`,
      "yellow",
    ));
  }
}

/** Finds a session by id, unique prefix or `last`; a bad reference is a usage error. */
export function findSession(journal: Journal, ref: string): SessionSummary {
  try {
    return journal.getSession(ref);
  } catch (error) {
    throw new UsageError((error as Error).message, { hint: "list sessions with: sentry sessions" });
  }
}
