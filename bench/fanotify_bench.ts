// deno-lint-ignore-file no-console
/**
 * The fanotify + proc connector tier on real processes, with the sensor in this process (no
 * journal, no policy: what the sensor itself delivers):
 *
 * 1. **Recall at 1 ms** by kind: a python3 agent does N actions of each kind, 1 ms apart, and
 *    prints how many it really did; recall is what the sensor recorded against that count. Run
 *    on a quiet host, with `find /` running alongside, and with a host open storm alongside
 *    (two processes outside the tree opening and reading files as fast as they can), each with
 *    the events/s the reader went through, the share that were the host's, the reader's CPU, the
 *    proc connector's exact loss and the fanotify overflow episodes.
 * 2. **Slowdown** of 100k open+close (python `os.open`/`os.close` of one file): unmonitored,
 *    then in the tree under the sensor, then outside the tree while the sensor runs (the marks
 *    are on whole filesystems, so every process on the host pays the kernel's share). Medians
 *    of alternating runs, as ratios to the unmonitored run.
 *
 * Needs root. Run: deno run -A bench/fanotify_bench.ts [--quick] [--n N] [--storm-ms MS]
 * @module
 */
import { join } from "node:path";
import { readCmdline, readExe, readStat } from "../src/platform/mod.ts";
import { FanotifySensor } from "../src/sensors/fanotify_sensor.ts";
import { ProcessTable } from "../src/sensors/kernel_action.ts";
import type { SensorEvent, SensorStats } from "../src/sensors/sensor.ts";
import {
  cpuNanos,
  delay,
  machineLine,
  markMachine,
  parseBenchArgs,
  realPython,
  table,
} from "./_harness.ts";

/** The kinds the recall agent does, in the order of its rounds. */
const KINDS = [
  "read",
  "read (same file)",
  "create",
  "write",
  "rename",
  "delete",
  "mkdir",
  "rmdir",
  "exec",
  "exit",
] as const;

type RecallKind = typeof KINDS[number];

// One round does each file action once, 1 ms apart, on its own names (identical events of one
// file merge in the kernel queue: "read (same file)" shows what that costs), then every
// `exec_every` rounds runs /bin/true (a fork, an exec and an exit).
const RECALL_AGENT = `
import os, sys, time, json, subprocess
d, n, every = sys.argv[1], int(sys.argv[2]), int(sys.argv[3])
sys.stdin.readline()
done = {k: 0 for k in ["read", "read (same file)", "create", "write", "rename", "delete", "mkdir", "rmdir", "exec", "exit"]}
def pause(): time.sleep(0.001)
same = os.path.join(d, "same")
for i in range(n):
    with open(os.path.join(d, f"r{i}")) as f: f.read()
    done["read"] += 1; pause()
    with open(same) as f: f.read()
    done["read (same file)"] += 1; pause()
    with open(os.path.join(d, f"c{i}"), "w") as f: f.write("c")
    done["create"] += 1; pause()
    with open(os.path.join(d, f"w{i}"), "a") as f: f.write("w")
    done["write"] += 1; pause()
    os.rename(os.path.join(d, f"c{i}"), os.path.join(d, f"m{i}"))
    done["rename"] += 1; pause()
    os.unlink(os.path.join(d, f"m{i}"))
    done["delete"] += 1; pause()
    os.mkdir(os.path.join(d, f"s{i}"))
    done["mkdir"] += 1; pause()
    os.rmdir(os.path.join(d, f"s{i}"))
    done["rmdir"] += 1; pause()
    if i % every == 0:
        subprocess.run(["/bin/true"])
        done["exec"] += 1; done["exit"] += 1
print(json.dumps({"pid": os.getpid(), "done": done}), flush=True)
`;

// Opens and reads its own files as fast as it can until killed: host load outside the tree.
const STORM = `
import os, sys
d = sys.argv[1]
os.makedirs(d, exist_ok=True)
names = [os.path.join(d, f"h{i}") for i in range(500)]
for p in names:
    with open(p, "w") as f: f.write("h")
while True:
    for p in names:
        fd = os.open(p, os.O_RDONLY); os.read(fd, 1); os.close(fd)
`;

const OPEN_CLOSE = `
import os, sys, time
p, n = sys.argv[1], int(sys.argv[2])
sys.stdin.readline()
t = time.perf_counter()
for _ in range(n): os.close(os.open(p, os.O_RDONLY))
print(time.perf_counter() - t, flush=True)
`;

function procTable(): ProcessTable {
  return new ProcessTable((pid) => {
    const exe = readExe(pid);
    if (exe === null) return null;
    return { ppid: readStat(pid)?.ppid ?? null, exe: exe.path, cmdline: readCmdline(pid) ?? [] };
  });
}

/** A sensor watching `rootPid` until stopped, with what it emitted. */
interface Watch {
  sensor: FanotifySensor;
  events: SensorEvent[];
  stop: () => Promise<SensorStats>;
}

async function watch(rootPid: number): Promise<Watch> {
  const sensor = new FanotifySensor({ rootPid, table: procTable() });
  const events: SensorEvent[] = [];
  const abort = new AbortController();
  const running = sensor.start((e) => events.push(e), abort.signal);
  await sensor.ready;
  return {
    sensor,
    events,
    stop: async () => {
      abort.abort();
      await running;
      return sensor.stats();
    },
  };
}

async function go(child: Deno.ChildProcess): Promise<void> {
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode("go\n"));
  await writer.close();
}

type Load = "quiet" | "find /" | "open storm";

interface RecallResult {
  load: Load;
  done: Record<RecallKind, number>;
  seen: Record<RecallKind, number>;
  execArgv: number;
  seconds: number;
  fileEvents: number;
  hostEvents: number;
  readerCpu: number;
  stats: SensorStats;
}

/** Starts the host load for a run; returns how to stop it. */
function startLoad(load: Load, python: string, dir: string): () => Promise<void> {
  const children: Deno.ChildProcess[] = [];
  let stopped = false;
  let finding: Promise<void> = Promise.resolve();
  if (load === "find /") {
    // Over and over, so it lasts the whole run; each find is this process's own child.
    finding = (async () => {
      while (!stopped) {
        const find = new Deno.Command("find", {
          args: ["/", "-path", "/proc", "-prune", "-o", "-print"],
          stdout: "null",
          stderr: "null",
        }).spawn();
        children.push(find);
        await find.status;
        children.splice(children.indexOf(find), 1);
      }
    })();
  } else if (load === "open storm") {
    for (let i = 0; i < 2; i++) {
      children.push(
        new Deno.Command(python, { args: ["-c", STORM, join(dir, `storm${i}`)], stdout: "null" })
          .spawn(),
      );
    }
  }
  return async () => {
    stopped = true;
    for (const child of [...children]) {
      try {
        child.kill("SIGKILL");
      } catch { /* gone */ }
      await child.status;
    }
    await finding;
  };
}

async function recall(python: string, n: number, load: Load): Promise<RecallResult> {
  const dir = await Deno.makeTempDir({ prefix: "sentry-fanotify-bench-" });
  try {
    for (let i = 0; i < n; i++) {
      await Deno.writeTextFile(join(dir, `r${i}`), "r");
      await Deno.writeTextFile(join(dir, `w${i}`), "w");
    }
    await Deno.writeTextFile(join(dir, "same"), "s");
    const stopLoad = startLoad(load, python, join(dir, "host"));
    let agent: Deno.ChildProcess | null = null;
    let watching: Watch | null = null;
    let stopped = false;
    let output: Deno.CommandOutput;
    let seconds: number;
    let readerCpu: number;
    let stats: SensorStats;
    try {
      await delay(500);
      agent = new Deno.Command(python, {
        args: ["-c", RECALL_AGENT, join(dir), String(n), "5"],
        stdin: "piped",
        stdout: "piped",
      }).spawn();
      watching = await watch(agent.pid);
      const cpu0 = cpuNanos(Deno.pid) ?? 0;
      const t0 = performance.now();
      await go(agent);
      output = await agent.output();
      await delay(200);
      seconds = (performance.now() - t0) / 1000;
      readerCpu = ((cpuNanos(Deno.pid) ?? 0) - cpu0) / 1e9 / seconds;
      stats = await watching.stop();
      stopped = true;
    } finally {
      if (watching !== null && !stopped) await watching.stop();
      if (agent !== null) {
        try {
          agent.kill("SIGKILL");
        } catch { /* it has exited */ }
        await agent.status;
      }
      await stopLoad();
    }
    const w = watching;
    const { fileEvents, hostEvents } = w.sensor.figures;
    const result = JSON.parse(new TextDecoder().decode(output.stdout)) as {
      pid: number;
      done: Record<RecallKind, number>;
    };
    const mine = w.events.filter((e) => e.target.startsWith(`${dir}/`) && e.pid === result.pid);
    const name = (e: SensorEvent) => e.target.slice(dir.length + 1);
    const count = (kind: string, pattern: RegExp, extra?: (e: SensorEvent) => boolean) =>
      mine.filter((e) => e.kind === kind && pattern.test(name(e)) && (extra?.(e) ?? true)).length;
    const execs = w.events.filter((e) =>
      e.kind === "proc.exec" && e.ppid === result.pid && String(e.detail.path).endsWith("/true")
    );
    const execPids = new Set(execs.map((e) => e.pid));
    const seen: Record<RecallKind, number> = {
      "read": count("file.read", /^r\d+$/),
      "read (same file)": count("file.read", /^same$/),
      "create": count("file.create", /^c\d+$/),
      "write": count("file.write", /^w\d+$/),
      "rename": count("file.rename", /^m\d+$/),
      "delete": count("file.delete", /^m\d+$/),
      "mkdir": count("file.create", /^s\d+$/),
      "rmdir": count("file.delete", /^s\d+$/, (e) => e.detail.directory === true),
      "exec": execs.length,
      "exit": w.events.filter((e) => e.kind === "proc.exit" && execPids.has(e.pid)).length,
    };
    return {
      load,
      done: result.done,
      seen,
      execArgv: execs.filter((e) => e.cmdline.length > 0).length,
      seconds,
      fileEvents,
      hostEvents,
      readerCpu,
      stats,
    };
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

/** Seconds for 100k open+close, as the python loop measured itself. */
async function openClose(
  python: string,
  file: string,
  n: number,
  mode: "unmonitored" | "in the tree" | "outside the tree",
): Promise<number> {
  const child = new Deno.Command(python, {
    args: ["-c", OPEN_CLOSE, file, String(n)],
    stdin: "piped",
    stdout: "piped",
  }).spawn();
  let w: Watch | null = null;
  // Outside the tree: the sensor watches another process (a sleeping child of this one).
  let other: Deno.ChildProcess | null = null;
  try {
    if (mode === "in the tree") w = await watch(child.pid);
    if (mode === "outside the tree") {
      other = new Deno.Command("sleep", { args: ["60"] }).spawn();
      w = await watch(other.pid);
    }
    await go(child);
    const out = await child.output();
    return Number(new TextDecoder().decode(out.stdout).trim());
  } finally {
    await w?.stop();
    for (const process of [child, other]) {
      if (process === null) continue;
      try {
        process.kill("SIGKILL");
      } catch { /* it has exited */ }
      await process.status;
    }
  }
}

function median(values: number[]): number {
  const sorted = [...values].sort((a, b) => a - b);
  return sorted[Math.floor(sorted.length / 2)] ?? 0;
}

function percent(seen: number, done: number): string {
  return done === 0 ? "-" : `${((seen / done) * 100).toFixed(1)}%`;
}

/** Options for {@link runFanotifyBench}. */
export interface FanotifyBenchOptions {
  quick?: boolean;
  /** Rounds of the recall agent (each does every file kind once). Default 1000 (quick: 200). */
  n?: number;
  /** Loads to measure recall under. Default all three (quick: quiet and find /). */
  loads?: Load[];
}

/** Runs the benchmark and prints its tables. */
export async function runFanotifyBench(options: FanotifyBenchOptions = {}): Promise<void> {
  if (Deno.uid() !== 0) {
    console.log("skipped: the fanotify tier needs root");
    return;
  }
  const python = await realPython();
  const n = options.n ?? (options.quick ? 200 : 1000);
  const loads = options.loads ??
    (options.quick ? ["quiet", "find /"] : ["quiet", "find /", "open storm"]);
  const machine = markMachine();
  const results: RecallResult[] = [];
  for (const load of loads) results.push(await recall(python, n, load));

  console.log(`Recall at 1 ms (${n} rounds; exec = /bin/true every 5 rounds):`);
  console.log(table([
    ["kind", ...results.map((r) => r.load)],
    ...KINDS.map((kind) => [
      kind,
      ...results.map((r) =>
        `${r.seen[kind]}/${r.done[kind]} ${percent(r.seen[kind], r.done[kind])}`
      ),
    ]),
    ["exec with argv", ...results.map((r) => `${r.execArgv}/${r.done.exec}`)],
  ]));
  console.log();
  console.log(table([
    ["reader", ...results.map((r) => r.load)],
    [
      "fanotify events/s read",
      ...results.map((r) => Math.round(r.fileEvents / r.seconds).toString()),
    ],
    ["  of which the host's", ...results.map((r) => percent(r.hostEvents, r.fileEvents))],
    ["reader CPU (this process)", ...results.map((r) => `${(r.readerCpu * 100).toFixed(1)}%`)],
    ["proc connector lost (exact)", ...results.map((r) => String(r.stats.dropped))],
    [
      "fanotify overflows (episodes)",
      ...results.map((r) =>
        String(r.stats.blindSpots.find((s) => s.id === "fanotify_overflow")?.count ?? 0)
      ),
    ],
    [
      "merged events (tree)",
      ...results.map((r) =>
        String(r.stats.blindSpots.find((s) => s.id === "merged_events")?.count ?? 0)
      ),
    ],
  ]));

  const ops = 100_000;
  const reps = options.quick ? 3 : 5;
  const dir = await Deno.makeTempDir({ prefix: "sentry-fanotify-bench-" });
  const file = join(dir, "f");
  await Deno.writeTextFile(file, "x");
  const times: Record<string, number[]> = {
    "unmonitored": [],
    "in the tree": [],
    "outside the tree": [],
  };
  try {
    for (let i = 0; i < reps; i++) {
      for (const mode of ["unmonitored", "in the tree", "outside the tree"] as const) {
        times[mode]!.push(await openClose(python, file, ops, mode));
      }
    }
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const base = median(times["unmonitored"]!);
  console.log();
  console.log(`Slowdown of ${ops.toLocaleString("en")} open+close (python, median of ${reps}):`);
  console.log(table([
    ["run", "seconds", "µs per open+close", "ratio"],
    ...Object.entries(times).map(([mode, list]) => {
      const m = median(list);
      return [mode, m.toFixed(3), ((m / ops) * 1e6).toFixed(2), `${(m / base).toFixed(2)}x`];
    }),
  ]));
  console.log();
  console.log(machineLine(machine));
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  await runFanotifyBench({ quick, ...(numbers.n?.[0] === undefined ? {} : { n: numbers.n[0] }) });
}
