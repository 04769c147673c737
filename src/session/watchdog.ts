import { dirname } from "node:path";
import { openJournal } from "../journal/mod.ts";
import { identify, readCmdline, readStat, SessionCgroup } from "../platform/mod.ts";
import type { ProcessRef } from "../platform/mod.ts";
import { linuxControl } from "./linux_control.ts";
import { readEndRecord } from "./end_record.ts";
import { readPidsFile, writePidsFile } from "./pids_file.ts";
import { killAgent, resumeAgent } from "./tree_actions.ts";

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
 * even with SIGKILL), it resumes the tree it finds in the pids file (each process checked by
 * its start time, and everything in the session's cgroup), thawing the cgroup, or kills it, so
 * the agent is never left stopped or frozen; it then moves what is left in the cgroup back where
 * it came from and removes the cgroup, and marks the session crashed in the journal. After a
 * resume the pids file stays (without the cgroup): it is what proves, later, which processes
 * `sentry kill` may signal.
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
  const file = readPidsFile(options.pidsFile) ?? { processes: [], cgroup: null, starting: true };
  // A session that never let its agent go must not let it run now, unwatched: kill it.
  const onExit = file.starting === true ? "kill" : options.onExit;
  if (file.processes.length === 0) file.processes.push(...findLaunchers(options.session));
  // Named in the pids file, or else found by the session's name: never left behind.
  const cgroup = file.cgroup === null
    ? SessionCgroup.find({ session: options.session })[0] ?? null
    : SessionCgroup.adopt(file.cgroup);
  // The start time proves each pid still names the same process.
  const live = () => file.processes.filter((p) => identify(p) === "same");
  const tree = { control: linuxControl(), cgroup, list: live };
  const result = onExit === "kill"
    ? await killAgent(tree, { graceMs: 2000 })
    : await resumeAgent(tree);
  const closed = cgroup === null ? null : await cgroup.close();
  if (onExit === "kill") {
    try {
      Deno.removeSync(options.pidsFile);
    } catch {
      // Gone already.
    }
  } else {
    writePidsFile(options.pidsFile, { processes: live(), cgroup: null });
  }
  try {
    const journal = openJournal(options.journal);
    try {
      const session = journal.getSession(options.session);
      // Sentry ended the session but could not journal it (a full disk): its recorded end is
      // the truth, and the next command journals it.
      const recorded = readEndRecord(dirname(options.journal), options.session);
      if ((session.state === "running" || session.state === "paused") && recorded === null) {
        journal.updateSession(options.session, {
          state: "crashed",
          endedAt: new Date().toISOString(),
          note:
            `Sentry exited without cleaning up${
              file.starting === true ? " before the agent was let go" : ""
            }; the watchdog ${onExit === "kill" ? "killed" : "resumed"} ` +
            `${result.done.length} process(es)`,
        });
      }
      journal.recordResponse({
        session: options.session,
        action: onExit === "kill" ? "kill" : "resume",
        outcome: result.failed.length === 0 ? "ok" : "partial",
        detail: {
          by: "watchdog",
          pids: result.done,
          failed: result.failed,
          ...(closed === null || cgroup === null ? {} : {
            cgroup: cgroup.path,
            cgroupRemoved: closed.removed,
            ...(closed.left.length > 0 ? { cgroupLeft: closed.left } : {}),
          }),
        },
      });
    } finally {
      journal.close();
    }
  } catch {
    // The journal may be gone; the processes were handled, which is what matters.
  }
  return 0;
}

/**
 * The launchers of a session that died before it wrote its pids file: processes whose argv
 * holds `__launch ... --session ID` (Sentry's wall launcher), with their start times.
 */
function findLaunchers(session: string): ProcessRef[] {
  const found: ProcessRef[] = [];
  let entries: Iterable<Deno.DirEntry>;
  try {
    entries = Deno.readDirSync("/proc");
  } catch {
    return found;
  }
  for (const entry of entries) {
    const pid = Number(entry.name);
    if (!Number.isInteger(pid) || pid <= 0 || pid === Deno.pid) continue;
    const argv = readCmdline(pid);
    if (argv === null || !argv.includes("__launch")) continue;
    const at = argv.indexOf("--session");
    if (at < 0 || argv[at + 1] !== session) continue;
    const stat = readStat(pid);
    if (stat !== null) found.push({ pid, start: stat.starttime });
  }
  return found;
}
