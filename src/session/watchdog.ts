import { openJournal } from "../journal/mod.ts";
import { readStat } from "../platform/mod.ts";
import { linuxControl } from "./linux_control.ts";

/** What the watchdog guards. */
export interface WatchdogOptions {
  session: string;
  pidsFile: string;
  onExit: "resume" | "kill";
  journal: string;
  /** The watching Sentry's end of the pipe: EOF without "ok" means it died. */
  input: ReadableStream<Uint8Array>;
}

/**
 * The watchdog: a small process `run` and `attach` start before the agent. It reads its stdin,
 * which only the watching Sentry holds. If that ends without Sentry's "ok" (Sentry was killed,
 * even with SIGKILL), it resumes the tree it finds in the pids file, or kills it, so the agent
 * is never left stopped; then it marks the session crashed in the journal.
 */
export async function runWatchdog(options: WatchdogOptions): Promise<number> {
  let text = "";
  const decoder = new TextDecoder();
  try {
    for await (const chunk of options.input) text += decoder.decode(chunk, { stream: true });
  } catch {
    // A broken pipe is the same as EOF: Sentry is gone.
  }
  if (text.includes("ok\n")) return 0;
  const pids: number[] = [];
  try {
    for (const line of Deno.readTextFileSync(options.pidsFile).split("\n")) {
      const [pid, start] = line.trim().split(" ").map(Number);
      if (pid === undefined || start === undefined || !Number.isInteger(pid)) continue;
      const stat = readStat(pid);
      // The start time proves the pid still names the same process.
      if (stat !== null && stat.starttime === start) pids.push(pid);
    }
  } catch {
    // No pids file yet: the agent had not started.
  }
  const control = linuxControl();
  const result = options.onExit === "kill"
    ? await control.kill(pids, 2000)
    : await control.resume(pids);
  try {
    Deno.removeSync(options.pidsFile);
  } catch {
    // Gone already.
  }
  try {
    const journal = openJournal(options.journal);
    try {
      const session = journal.getSession(options.session);
      if (session.state === "running" || session.state === "paused") {
        journal.updateSession(options.session, {
          state: "crashed",
          endedAt: new Date().toISOString(),
          note:
            `Sentry exited without cleaning up; the watchdog ${
              options.onExit === "kill" ? "killed" : "resumed"
            } ` +
            `${result.done.length} process(es)`,
        });
      }
      journal.recordResponse({
        session: options.session,
        action: options.onExit === "kill" ? "kill" : "resume",
        outcome: result.failed.length === 0 ? "ok" : "partial",
        detail: { by: "watchdog", pids: result.done, failed: result.failed },
      });
    } finally {
      journal.close();
    }
  } catch {
    // The journal may be gone; the processes were handled, which is what matters.
  }
  return 0;
}
