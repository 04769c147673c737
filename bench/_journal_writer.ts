/**
 * A steady journal writer, run as a child process by the journal's crash bench and test.
 *
 * It appends events at a fixed rate to a journal and, after each append, prints the event's id
 * on stdout, so that a parent that SIGKILLs it knows exactly which events were handed to the
 * journal and can count how many never reached the database.
 *
 * Usage: deno run -A bench/_journal_writer.ts '<WriterConfig as JSON>'
 * With `durationMs`, it stops by itself, closes the journal and prints `done`.
 *
 * @module
 */
import { type AgentEvent, createUlid } from "../src/events/mod.ts";
import { openJournal } from "../src/journal/mod.ts";

/** What the writer is told, as JSON in its first argument. */
export interface WriterConfig {
  /** The journal file. */
  path: string;
  /** The session to create and write to. */
  session: string;
  /** Events per second. */
  rate: number;
  batchMs?: number;
  batchMax?: number;
  /** Stop after this long and close cleanly; without it, run until killed. */
  durationMs?: number;
}

/** The interval at which the writer catches up with its rate. */
const TICK_MS = 2;

function writeAll(bytes: Uint8Array): void {
  let offset = 0;
  while (offset < bytes.length) offset += Deno.stdout.writeSync(bytes.subarray(offset));
}

function main(): void {
  const config = JSON.parse(Deno.args[0] ?? "{}") as WriterConfig;
  const journal = openJournal(config.path, {
    ...(config.batchMs === undefined ? {} : { batchMs: config.batchMs }),
    ...(config.batchMax === undefined ? {} : { batchMax: config.batchMax }),
  });
  journal.createSession({
    id: config.session,
    agent: "bench-writer",
    command: ["bench-writer"],
    pid: Deno.pid,
    kind: "run",
    policy: "default",
    mode: "monitor",
    workspace: "/work/project",
  });
  const ulid = createUlid();
  const encoder = new TextEncoder();
  const start = performance.now();
  let appended = 0;
  const tick = (): void => {
    const elapsed = performance.now() - start;
    const due = Math.floor((elapsed * config.rate) / 1000);
    const ids: string[] = [];
    for (; appended < due; appended++) {
      const event: AgentEvent = {
        id: ulid(),
        ts: new Date().toISOString(),
        session: config.session,
        agent: "bench-writer",
        pid: Deno.pid,
        ppid: 1,
        exe: "/usr/bin/python3",
        cmdline: ["python3", "agent.py"],
        kind: "file.read",
        target: `/work/project/src/file_${appended % 1000}.py`,
        detail: { bytes: appended },
        sensor: "bench",
        verdict: "allow",
        risk: 5,
        factors: [{ id: "kind", points: 5, reason: "file read" }],
        rule: "files.read.allow",
        response: "none",
      };
      journal.append(event);
      ids.push(event.id);
    }
    if (ids.length > 0) writeAll(encoder.encode(ids.join("\n") + "\n"));
    if (config.durationMs !== undefined && elapsed >= config.durationMs) {
      journal.close();
      writeAll(encoder.encode("done\n"));
      return;
    }
    setTimeout(tick, TICK_MS);
  };
  tick();
}

if (import.meta.main) main();

/** Options for {@link runWriter}. */
export interface RunWriterOptions {
  /** SIGKILL the writer this long after it printed its first id; without it, let it finish. */
  killAfterMs?: number;
  /** SIGKILL the writer after this long whatever happens, to bound tests; default 20 s. */
  timeoutMs?: number;
}

/** What a writer run printed and how it ended. */
export interface WriterRun {
  /** The ids the writer appended, in order. */
  printed: string[];
  /** Whether it finished by itself and closed the journal. */
  done: boolean;
  status: Deno.CommandStatus;
  stderr: string;
}

const ID = /^[0-9A-HJKMNP-TV-Z]{26}$/;

/** Runs this script as a child process and collects what it printed. */
export async function runWriter(
  config: WriterConfig,
  options: RunWriterOptions = {},
): Promise<WriterRun> {
  const child = new Deno.Command(Deno.execPath(), {
    args: [
      "run",
      "-A",
      "-q",
      "--config",
      new URL("../deno.json", import.meta.url).pathname,
      new URL(import.meta.url).pathname,
      JSON.stringify(config),
    ],
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const kill = (): void => {
    try {
      child.kill("SIGKILL");
    } catch {
      // Already gone.
    }
  };
  const stderr = new Response(child.stderr).text();
  const timeout = setTimeout(kill, options.timeoutMs ?? 20_000);
  let killTimer: ReturnType<typeof setTimeout> | undefined;
  const printed: string[] = [];
  let done = false;
  let rest = "";
  const decoder = new TextDecoder();
  try {
    for await (const chunk of child.stdout) {
      const lines = (rest + decoder.decode(chunk, { stream: true })).split("\n");
      rest = lines.pop() ?? "";
      for (const line of lines) {
        if (ID.test(line)) printed.push(line);
        else if (line === "done") done = true;
      }
      if (killTimer === undefined && options.killAfterMs !== undefined && printed.length > 0) {
        killTimer = setTimeout(kill, options.killAfterMs);
      }
    }
  } finally {
    clearTimeout(timeout);
    clearTimeout(killTimer);
  }
  // A line cut short by the kill was never fully printed; it does not count.
  return { printed, done, status: await child.status, stderr: await stderr };
}
