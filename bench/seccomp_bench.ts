// deno-lint-ignore-file no-console
/**
 * The agent's slowdown under the seccomp tier, against an unmonitored run of the same workload,
 * interleaved in the same run:
 * - storm: a python3 loop of N open+close of one file (100,000 by default), timed by python
 *   itself from the first to the last open, so start-up is not counted;
 * - imports: python3 -c "import json,email,http.client", run M times in a row by a python3
 *   driver (fork, exec, imports), timed by the driver.
 *
 * The seccomp runs go through the real launcher (`sentry __seccomp_launch`) and the supervisor
 * with its receive loop in a Worker (SYNC_WAKE_UP on); events are counted, not journaled (the
 * session's journal is not part of this figure). The launch itself (Sentry's second copy
 * starting and handing its listener over) is printed apart.
 *
 * Goals from issue 10: storm at most 6×, typical agent work at most 1.5×.
 *
 * Run: deno run -A bench/seccomp_bench.ts [--quick] [--opens N] [--imports M] [--reps R]
 * @module
 */
import { join } from "node:path";
import { ProcessTable } from "../src/sensors/kernel_action.ts";
import type { SensorEvent } from "../src/sensors/sensor.ts";
import { type SeccompCounters, SeccompSupervisor } from "../src/sensors/seccomp_sensor.ts";
import { seccompAvailability } from "../src/platform/seccomp_linux.ts";
import {
  machineLine,
  markMachine,
  parseBenchArgs,
  percentile,
  realPython,
  ROOT,
  table,
} from "./_harness.ts";

/** Options for {@link runSeccompBench}. */
export interface SeccompBenchOptions {
  /** open+close pairs in the storm (default 100,000; quick: 20,000). */
  opens?: number;
  /** python3 runs in the imports workload (default 30; quick: 8). */
  imports?: number;
  /** Repetitions of each workload in each mode (default 3; quick: 1). */
  reps?: number;
  quick?: boolean;
}

interface RunResult {
  /** The workload's own timing, in seconds. */
  seconds: number;
  /** Spawn to "go" (seccomp only), in ms. */
  launchMs: number;
  counters: SeccompCounters | null;
  events: number;
}

const STORM = `
import os, sys, time
n = int(sys.argv[1]); path = sys.argv[2]
t = time.perf_counter()
for _ in range(n):
    os.close(os.open(path, os.O_RDONLY))
print(time.perf_counter() - t)
`;

const RECALL = `
import os, socket, sys, time
n, work, port = int(sys.argv[1]), sys.argv[2], int(sys.argv[3])
for i in range(n):
    p = os.path.join(work, "f%d" % i)
    fd = os.open(p, os.O_WRONLY | os.O_CREAT, 0o644); time.sleep(0.001); os.close(fd)
    fd = os.open(p, os.O_RDONLY); time.sleep(0.001); os.close(fd)
    os.rename(p, p + ".r"); os.unlink(p + ".r")
for i in range(n // 10):
    socket.create_connection(("127.0.0.1", port)).close()
    os.spawnv(os.P_WAIT, "/bin/true", ["true", "recall-%d" % i])
print(0)
`;

/**
 * Recall at 1 ms: n files each created and held open 1 ms, read for 1 ms, renamed, deleted;
 * n/10 connects and n/10 execs. Returns [kind, expected, recorded] rows.
 */
async function runRecall(python: string, dir: string, n: number): Promise<string[][]> {
  const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const accepting = (async () => {
    for await (const conn of listener) conn.close();
  })();
  const seen = { create: 0, read: 0, rename: 0, delete: 0, connect: 0, exec: 0 };
  const work = join(dir, "recall");
  await Deno.mkdir(work);
  try {
    const result = await runSeccomp(
      [python, "-c", RECALL, String(n), work, String(listener.addr.port)],
      (event) => {
        const inWork = event.target.startsWith(`${work}/f`);
        if (event.kind === "file.create" && inWork) seen.create++;
        else if (event.kind === "file.read" && inWork) seen.read++;
        else if (event.kind === "file.rename" && inWork) seen.rename++;
        else if (event.kind === "file.delete" && inWork) seen.delete++;
        else if (
          event.kind === "net.connect" && event.target === `127.0.0.1:${listener.addr.port}`
        ) {
          seen.connect++;
        } else if (event.kind === "proc.exec" && event.target.startsWith("true recall-")) {
          seen.exec++;
        }
      },
    );
    const blind = Object.values(result.counters?.blind ?? {}).reduce((a, b) => a + b, 0);
    const row = (kind: keyof typeof seen, expected: number) => [
      kind,
      String(expected),
      String(seen[kind]),
      `${((seen[kind] / expected) * 100).toFixed(1)}%`,
    ];
    return [
      row("create", n),
      row("read", n),
      row("rename", n),
      row("delete", n),
      row("connect", n / 10),
      row("exec", n / 10),
      ["blind spots", "0", String(blind), ""],
    ];
  } finally {
    listener.close();
    await accepting.catch(() => {});
  }
}

const IMPORTS = `
import subprocess, sys, time
n = int(sys.argv[1])
t = time.perf_counter()
for _ in range(n):
    subprocess.run([sys.executable, "-c", "import json,email,http.client"], check=True)
print(time.perf_counter() - t)
`;

async function runPlain(argv: readonly string[]): Promise<RunResult> {
  const [cmd, ...args] = argv;
  const out = await new Deno.Command(cmd as string, { args, stdout: "piped", stderr: "inherit" })
    .output();
  if (!out.success) throw new Error(`The workload failed: ${argv.join(" ")}`);
  return {
    seconds: Number(new TextDecoder().decode(out.stdout).trim()),
    launchMs: 0,
    counters: null,
    events: 0,
  };
}

const SELF = [
  Deno.execPath(),
  "run",
  "-A",
  "--config",
  join(ROOT, "deno.json"),
  join(ROOT, "main.ts"),
];

async function runSeccomp(
  argv: readonly string[],
  onEvent: (event: SensorEvent) => void = () => {},
): Promise<RunResult> {
  const supervisor = await SeccompSupervisor.create({ self: SELF });
  const stop = new AbortController();
  let events = 0;
  try {
    const started = performance.now();
    const [cmd, ...args] = supervisor.launcherArgs(argv);
    const child = new Deno.Command(cmd as string, {
      args,
      stdin: "null",
      stdout: "piped",
      stderr: "inherit",
      env: { DENO_NO_UPDATE_CHECK: "1" },
    }).spawn();
    const stdout = new Response(child.stdout).text();
    await supervisor.awaitListener({ exited: child.status });
    const sensor = supervisor.createSensor({
      table: new ProcessTable(() => null),
      databasePorts: new Set(),
    });
    const running = sensor.start((event) => {
      events++;
      onEvent(event);
    }, stop.signal);
    try {
      await sensor.ready();
      supervisor.go();
      const launchMs = performance.now() - started;
      const status = await child.status;
      if (!status.success) throw new Error(`The workload failed under seccomp: ${argv.join(" ")}`);
      const seconds = Number((await stdout).trim());
      stop.abort();
      await running;
      return { seconds, launchMs, counters: sensor.counters(), events };
    } finally {
      stop.abort();
      await running;
    }
  } finally {
    await supervisor.close();
  }
}

function median(values: readonly number[]): number {
  return percentile(values, 50);
}

/** Runs both workloads in both modes, interleaved, and prints a table. */
export async function runSeccompBench(options: SeccompBenchOptions = {}): Promise<void> {
  const available = seccompAvailability();
  if (!available.ok) {
    console.log(`seccomp tier unavailable: ${available.reason}`);
    return;
  }
  const quick = options.quick ?? false;
  const opens = options.opens ?? (quick ? 20_000 : 100_000);
  const imports = options.imports ?? (quick ? 8 : 30);
  const reps = options.reps ?? (quick ? 1 : 3);
  const python = await realPython();
  const dir = await Deno.makeTempDir({ prefix: "sentry_seccomp_bench_" });
  const mark = markMachine();
  try {
    const file = join(dir, "f");
    await Deno.writeTextFile(file, "x");
    const workloads = [
      {
        name: `storm: ${opens.toLocaleString("en")} open+close`,
        argv: [python, "-c", STORM, String(opens), file],
        per: opens,
      },
      {
        name: `imports: python3 json,email,http.client ×${imports}`,
        argv: [python, "-c", IMPORTS, String(imports)],
        per: imports,
      },
    ];
    const rows = [[
      "workload",
      "unmonitored",
      "seccomp",
      "ratio",
      "pairs",
      "per op",
      "launch",
      "notifications",
      "batches",
      "blind",
    ]];
    for (const workload of workloads) {
      const plain: number[] = [];
      const under: RunResult[] = [];
      for (let rep = 0; rep < reps; rep++) {
        plain.push((await runPlain(workload.argv)).seconds);
        under.push(await runSeccomp(workload.argv));
      }
      const p = median(plain);
      const s = median(under.map((r) => r.seconds));
      // Each seccomp run against the unmonitored run just before it.
      const ratios = under.map((r, i) => r.seconds / (plain[i] ?? NaN));
      const last = under[under.length - 1];
      const blind = Object.values(last?.counters?.blind ?? {}).reduce((a, b) => a + b, 0);
      const perOp = (x: number) =>
        workload.per === opens
          ? `${((x / workload.per) * 1e6).toFixed(1)} µs`
          : `${((x / workload.per) * 1e3).toFixed(0)} ms`;
      rows.push([
        workload.name,
        `${p.toFixed(3)} s`,
        `${s.toFixed(3)} s`,
        `${(s / p).toFixed(2)}×`,
        `${Math.min(...ratios).toFixed(2)}–${Math.max(...ratios).toFixed(2)}×`,
        `${perOp(p)} → ${perOp(s)}`,
        `${median(under.map((r) => r.launchMs)).toFixed(0)} ms`,
        String(last?.counters?.notifications ?? 0),
        String(last?.counters?.batches ?? 0),
        String(blind),
      ]);
    }
    console.log(table(rows));
    console.log(
      `medians of ${reps} run(s) each, interleaved ("pairs": each seccomp run against the unmonitored run before it); ` +
        'SYNC_WAKE_UP on; "launch" is spawn of the launcher to "go" ' +
        "(not in the workload's time); notifications, batches and blind spots are the last seccomp run's",
    );
    const recall = quick ? 100 : 500;
    console.log("");
    console.log(
      table([
        ["recall at 1 ms (seccomp)", "expected", "recorded", "recall"],
        ...await runRecall(python, dir, recall),
      ]),
    );
    console.log(machineLine(mark));
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  await runSeccompBench({
    quick,
    ...(numbers.opens?.[0] === undefined ? {} : { opens: numbers.opens[0] }),
    ...(numbers.imports?.[0] === undefined ? {} : { imports: numbers.imports[0] }),
    ...(numbers.reps?.[0] === undefined ? {} : { reps: numbers.reps[0] }),
  });
}
