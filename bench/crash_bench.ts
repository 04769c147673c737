// deno-lint-ignore-file no-console
/**
 * The crash-loss window of a whole `sentry run`, from the agent's action to the journal's row.
 * A python3 agent creates one file every `intervalMs` in its workspace and logs, outside it, the
 * wall-clock time of each create. Sentry (one tier per run) is SIGKILLed once the agent is well
 * under way. Every create logged before the kill that has no row in the journal was lost by the
 * crash; the window is the kill time minus the time of the oldest lost create. The baseline, in
 * the same run, is the journal's own batch window (`batchMs`, 50 ms): the pipeline before it
 * (sensor batching, the worker's messages, the engine) should add little to it.
 *
 * `deno run -A bench/crash_bench.ts [--quick]`, or `deno task bench crash`.
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { JOURNAL_FILE } from "../src/journal/mod.ts";
import { delay, machineLine, markMachine, realPython, startSentry, table } from "./_harness.ts";

/** Options for {@link runCrashBench}. */
export interface CrashBenchOptions {
  /** Kills per tier; default 5. */
  runs?: number;
  /** The agent's pause between two creates, in milliseconds; default 10 (100 actions/s). */
  intervalMs?: number;
  /** The tiers to run; default every tier this host allows. */
  tiers?: readonly string[];
}

/** One kill's figures. */
export interface CrashKill {
  tier: string;
  /** Creates the agent logged before the kill. */
  before: number;
  /** Of those, how many have no row in the journal. */
  lost: number;
  /** The kill time minus the time of the oldest lost create, in milliseconds (0: none lost). */
  windowMs: number;
}

const AGENT = `
import os, sys, time
log = os.open(sys.argv[1], os.O_WRONLY | os.O_CREAT | os.O_APPEND, 0o644)
os.write(log, b"pid %d\\n" % os.getpid())
interval = float(sys.argv[2]) / 1000
n = 0
end = time.time() + 30
while time.time() < end:
    n += 1
    with open("f_%d" % n, "w") as f:
        f.write("x")
    os.write(log, b"%d %.6f\\n" % (n, time.time()))
    time.sleep(interval)
`;

function creates(log: string): { pid: number | null; times: Map<number, number> } {
  let text = "";
  try {
    text = Deno.readTextFileSync(log);
  } catch {
    return { pid: null, times: new Map() };
  }
  let pid: number | null = null;
  const times = new Map<number, number>();
  for (const line of text.split("\n")) {
    const [a, b] = line.split(" ");
    if (a === "pid") pid = Number(b);
    else if (a !== undefined && b !== undefined) times.set(Number(a), Number(b) * 1000);
  }
  return { pid, times };
}

function journaledCreates(home: string): Set<number> {
  const db = new DatabaseSync(join(home, JOURNAL_FILE), { readOnly: true });
  try {
    const out = new Set<number>();
    const rows = db.prepare("SELECT target FROM events").all() as { target: string }[];
    for (const row of rows) {
      const match = /\/f_(\d+)$/.exec(row.target);
      if (match !== null) out.add(Number(match[1]));
    }
    return out;
  } finally {
    db.close();
  }
}

/** Options for {@link crashKill}. */
export interface CrashKillOptions {
  /** The directory to work in; the run's files are removed from it afterwards. */
  dir: string;
  /** The agent's pause between two creates, in milliseconds. */
  intervalMs: number;
}

/**
 * Runs one agent under `sentry run --sensor TIER`, SIGKILLs Sentry mid-run, and measures what
 * the journal lost. Leaves no process behind (the watchdog kills the agent; so does this).
 */
export async function crashKill(tier: string, options: CrashKillOptions): Promise<CrashKill> {
  const python = await realPython();
  const home = Deno.makeTempDirSync({ dir: options.dir, prefix: `${tier}_` });
  const ws = join(home, "ws");
  Deno.mkdirSync(ws, { recursive: true });
  const agent = join(home, "agent.py");
  const log = join(home, "agent.log");
  const policy = join(home, "policy.yaml");
  Deno.writeTextFileSync(agent, AGENT);
  Deno.writeTextFileSync(policy, "extends: default\nmode: monitor\n");
  const sentry = startSentry([
    "run",
    "--sensor",
    tier,
    "--no-api",
    "--no-rollback",
    "--on-exit",
    "kill",
    "--policy",
    policy,
    "--workspace",
    ws,
    "--",
    python,
    agent,
    log,
    String(options.intervalMs),
  ], { home: join(home, "sentry"), cwd: ws });
  let agentPid: number | null = null;
  try {
    // Let the agent run well past start-up (about 1.5 s of creates), then kill at a random
    // moment within one more interval so the kill does not fall on a batch boundary each time.
    const deadline = Date.now() + 60_000;
    while (Date.now() < deadline) {
      const seen = creates(log);
      agentPid = seen.pid;
      if (seen.times.size >= Math.ceil(1500 / options.intervalMs)) break;
      await delay(20);
    }
    await delay(Math.random() * 60);
    const killedAt = Date.now();
    sentry.child.kill("SIGKILL");
    await sentry.child.status;
    await sentry.stderr;
    const { times } = creates(log);
    const journaled = journaledCreates(join(home, "sentry"));
    const before = [...times].filter(([, t]) => t < killedAt);
    const lost = before.filter(([n]) => !journaled.has(n));
    const oldest = lost.length === 0 ? killedAt : Math.min(...lost.map(([, t]) => t));
    return { tier, before: before.length, lost: lost.length, windowMs: killedAt - oldest };
  } finally {
    try {
      sentry.child.kill("SIGKILL");
    } catch {
      // Gone already.
    }
    if (agentPid !== null) {
      try {
        Deno.kill(agentPid, "SIGKILL");
      } catch {
        // Gone already (the watchdog kills it).
      }
    }
    await delay(200);
    Deno.removeSync(home, { recursive: true });
  }
}

function usableTiers(): string[] {
  const root = Deno.uid() === 0;
  return root ? ["ebpf", "fanotify", "seccomp", "poll"] : ["seccomp", "poll"];
}

/** Runs the benchmark and prints a table per tier; returns every kill's figures. */
export async function runCrashBench(options: CrashBenchOptions = {}): Promise<CrashKill[]> {
  const opts: Required<CrashBenchOptions> = {
    runs: options.runs ?? 5,
    intervalMs: options.intervalMs ?? 10,
    tiers: options.tiers ?? usableTiers(),
  };
  const mark = markMachine();
  const dir = Deno.makeTempDirSync({ prefix: "sentry-crash-bench-" });
  const kills: CrashKill[] = [];
  try {
    for (const tier of opts.tiers) {
      for (let i = 0; i < opts.runs; i++) {
        kills.push(await crashKill(tier, { dir, intervalMs: opts.intervalMs }));
      }
    }
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
  console.log(
    `crash loss of a whole "sentry run": the agent creates a file every ${opts.intervalMs} ms; ` +
      `Sentry is SIGKILLed; baseline: the journal's batch window, 50 ms`,
  );
  const rows: string[][] = [["tier", "kills", "lost (each)", "window ms (each)", "worst/batch"]];
  for (const tier of opts.tiers) {
    const mine = kills.filter((k) => k.tier === tier);
    const worst = Math.max(...mine.map((k) => k.windowMs));
    rows.push([
      tier,
      String(mine.length),
      mine.map((k) => `${k.lost}/${k.before}`).join(" "),
      mine.map((k) => k.windowMs.toFixed(0)).join(" "),
      `${(worst / 50).toFixed(2)}x`,
    ]);
  }
  console.log(table(rows));
  console.log(machineLine(mark));
  return kills;
}

if (import.meta.main) {
  const quick = Deno.args.includes("--quick");
  const tiers = Deno.args.filter((a) => !a.startsWith("--"));
  await runCrashBench({
    ...(quick ? { runs: 2 } : {}),
    ...(tiers.length > 0 ? { tiers } : {}),
  });
}
