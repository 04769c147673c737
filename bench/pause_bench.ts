// deno-lint-ignore-file no-console
/**
 * Pause: time from a denied action to the whole tree frozen, p50 and p95, with the cgroup
 * freezer (`--freezer cgroup`, root) and with signals (`--freezer signals`), against a quiet tree
 * (the agent and a sleeping child) and against the fork-hopping helper (a process that forks a
 * child every 0.3 ms, each child SIGCONTing the whole process group and its parent before it
 * exits at once). The two mechanisms are the baselines of each other, in the same run.
 *
 * A python3 agent runs under `sentry run` with the default policy (mode pause). In each trial
 * it writes `time.time()` just before it reads `~/.ssh/id_rsa_<trial>` (denied: pause). Sentry
 * journals, with the pause, when the whole tree was confirmed frozen (`frozenAtMs`: the cgroup's
 * `frozen 1`, or with signals a full rescan that found no member running) and how long that took
 * from its decision (`freezeMs`). 200 ms later the bench checks that the pause held: no process
 * of the agent's process group runs or was born. Then `sentry resume` lets the agent go on to
 * the next trial.
 *
 * Run: deno run -A bench/pause_bench.ts [--quick] [--trials N]
 * @module
 */
import { join } from "node:path";
import { JOURNAL_FILE, openJournal } from "../src/journal/mod.ts";
import { SessionCgroup } from "../src/platform/mod.ts";
import {
  delay,
  machineLine,
  markMachine,
  parseBenchArgs,
  percentile,
  realPython,
  sentryOutput,
  startSentry,
  table,
  waitFor,
} from "./_harness.ts";

/** Options for {@link runPauseBench}. */
export interface PauseBenchOptions {
  /** Trials per configuration; default 20 (quick: 8). */
  trials?: number;
  quick?: boolean;
}

/** One configuration's figures. */
export interface PauseBenchRow {
  freezer: "cgroup" | "signals";
  tree: "quiet" | "fork-hopper";
  /** Why the configuration could not run, or null. */
  skipped: string | null;
  trials: number;
  /** Trials whose tree was confirmed frozen. */
  frozen: number;
  /** Trials whose tree was still wholly stopped 200 ms later, nothing born meanwhile. */
  held: number;
  /** From the denied action to the whole tree frozen, in ms. */
  actionToFrozenMs: number[];
  /** From Sentry's decision to the whole tree frozen, in ms. */
  decisionToFrozenMs: number[];
}

const AGENT = `
import os, signal, sys, time
work, keys, trials, hop = sys.argv[1], sys.argv[2], int(sys.argv[3]), sys.argv[4] == "1"
pgid = os.getpgid(0)
helper = os.fork()
if helper == 0:
    if not hop:
        time.sleep(3600)
        os._exit(0)
    while True:
        if os.fork() == 0:
            try:
                os.killpg(pgid, signal.SIGCONT)
                os.kill(os.getppid(), signal.SIGCONT)
            except OSError:
                pass
            os._exit(0)
        try:
            while os.waitpid(-1, os.WNOHANG)[0] > 0:
                pass
        except ChildProcessError:
            pass
        time.sleep(0.0003)
open(os.path.join(work, "ready"), "w").write(f"{os.getpid()}\\n")
for i in range(trials):
    go = os.path.join(work, f"go_{i}")
    while not os.path.exists(go):
        time.sleep(0.001)
    t = time.time()
    open(os.path.join(work, f"t_{i}"), "w").write(repr(t))
    try:
        open(os.path.join(keys, f"id_rsa_{i}")).read()
    except OSError:
        pass
# Alive until the bench has seen the last pause: an agent that exits right after its action
# could be gone before any pause lands (a pause comes after the action, not before).
while not os.path.exists(os.path.join(work, f"go_{trials}")):
    time.sleep(0.001)
os.kill(helper, signal.SIGKILL)
`;

/** The live processes of a process group, with their states. */
function group(pgrp: number): Map<number, string> {
  const out = new Map<number, string>();
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      const text = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      const fields = text.slice(text.lastIndexOf(")") + 2).split(" ");
      if (Number(fields[2]) === pgrp && fields[0] !== "Z") out.set(Number(entry.name), fields[0]!);
    } catch {
      // Gone.
    }
  }
  return out;
}

async function runConfig(
  python: string,
  freezer: "cgroup" | "signals",
  tree: "quiet" | "fork-hopper",
  trials: number,
): Promise<PauseBenchRow> {
  const row: PauseBenchRow = {
    freezer,
    tree,
    skipped: null,
    trials,
    frozen: 0,
    held: 0,
    actionToFrozenMs: [],
    decisionToFrozenMs: [],
  };
  if (freezer === "cgroup" && Deno.uid() !== 0) {
    row.skipped = "the cgroup freezer needs root";
    return row;
  }
  const dir = await Deno.makeTempDir({ prefix: "sentry-pause-bench-" });
  const home = join(dir, "home");
  const keys = join(home, ".ssh");
  const work = join(dir, "ws");
  const data = join(dir, "sentry");
  await Deno.mkdir(keys, { recursive: true });
  await Deno.mkdir(work);
  for (let i = 0; i < trials; i++) await Deno.writeTextFile(join(keys, `id_rsa_${i}`), "fake\n");
  const agent = join(dir, "agent.py");
  await Deno.writeTextFile(agent, AGENT);
  const env = { HOME: home, PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin" };
  const sentry = startSentry(
    [
      "run",
      "--freezer",
      freezer,
      "--no-api",
      "--no-rollback",
      "--",
      python,
      agent,
      work,
      keys,
      String(trials),
      tree === "fork-hopper" ? "1" : "0",
    ],
    { home: data, env, cwd: work },
  );
  let session: string | null = null;
  try {
    const root = await waitFor("the agent to start", () => {
      try {
        return Number(Deno.readTextFileSync(join(work, "ready")).trim()) || undefined;
      } catch {
        return undefined;
      }
    }, { timeoutMs: 30_000, everyMs: 10 });
    const journal = openJournal(join(data, JOURNAL_FILE));
    try {
      const id = journal.getSession("last").id;
      session = id;
      const pauses = () =>
        journal.responses(id).filter((r) => r.action === "pause" && r.detail.by !== "hold");
      for (let i = 0; i < trials; i++) {
        await Deno.writeTextFile(join(work, `go_${i}`), "");
        const pause = await waitFor(`pause ${i}`, () => pauses()[i], {
          timeoutMs: 15_000,
          everyMs: 5,
        });
        const t = Number(await Deno.readTextFile(join(work, `t_${i}`))) * 1000;
        const frozenAt = pause.detail.frozenAtMs;
        if (typeof frozenAt === "number") {
          row.frozen++;
          row.actionToFrozenMs.push(frozenAt - t);
          if (typeof pause.detail.freezeMs === "number") {
            row.decisionToFrozenMs.push(pause.detail.freezeMs);
          }
        }
        const before = group(root);
        await delay(200);
        const after = group(root);
        const same = [...after.keys()].every((p) => before.has(p));
        if (same && [...after.values()].every((s) => s === "T" || s === "t")) row.held++;
        await sentryOutput(["resume", id], { home: data, env });
      }
      await Deno.writeTextFile(join(work, `go_${trials}`), "");
    } finally {
      journal.close();
    }
    await sentry.child.status;
  } finally {
    try {
      // Sentry ends the agent and removes its cgroup on SIGTERM.
      sentry.child.kill("SIGTERM");
    } catch {
      // Exited.
    }
    await sentry.child.status;
    // Should anything be left (a failed run), nothing outlives the bench.
    for (const cgroup of session === null ? [] : SessionCgroup.find({ session })) {
      cgroup.killAll();
      await cgroup.close({ retryMs: 2000 });
    }
    await Deno.remove(dir, { recursive: true }).catch(() => {});
  }
  return row;
}

/** Runs the four configurations and prints the table. */
export async function runPauseBench(options: PauseBenchOptions = {}): Promise<PauseBenchRow[]> {
  const trials = options.trials ?? (options.quick === true ? 8 : 20);
  const python = await realPython();
  const mark = markMachine();
  const rows: PauseBenchRow[] = [];
  for (const tree of ["quiet", "fork-hopper"] as const) {
    for (const freezer of ["cgroup", "signals"] as const) {
      rows.push(await runConfig(python, freezer, tree, trials));
    }
  }
  const ms = (v: number) => Number.isNaN(v) ? "-" : v.toFixed(2);
  console.log(table([
    [
      "tree / freezer",
      "trials",
      "frozen",
      "held 200 ms",
      "action->frozen p50",
      "p95",
      "decision->frozen p50",
      "p95",
    ],
    ...rows.map((r) =>
      r.skipped !== null ? [`${r.tree} / ${r.freezer}`, `skipped: ${r.skipped}`] : [
        `${r.tree} / ${r.freezer}`,
        String(r.trials),
        String(r.frozen),
        String(r.held),
        ms(percentile(r.actionToFrozenMs, 50)),
        ms(percentile(r.actionToFrozenMs, 95)),
        ms(percentile(r.decisionToFrozenMs, 50)),
        ms(percentile(r.decisionToFrozenMs, 95)),
      ]
    ),
  ]));
  console.log(
    "ms; action->frozen: from the agent's clock before the denied read to Sentry's confirmation " +
      "that the whole tree is frozen (includes detection by the sensing tier); decision->frozen: " +
      "from the pause decision to that confirmation.",
  );
  console.log(machineLine(mark));
  return rows;
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  const trials = numbers.trials?.[0];
  await runPauseBench({ quick, ...(trials === undefined ? {} : { trials }) });
}
