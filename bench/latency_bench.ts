// deno-lint-ignore-file no-console
/**
 * Latency from a denied action to the agent being stopped: p50 and p95 over many trials. The
 * goal is at most two polling intervals.
 *
 * A python3 agent runs under `sentry run` with the default policy (mode pause) and a fake HOME.
 * In each trial it writes `time.time()` to a shared memory map just before it opens
 * `~/.ssh/id_rsa_<trial>` (denied: risk 80, response pause), keeps the file open and writes
 * `time.time()` to the map every millisecond. Once the bench sees the agent stopped (state T in
 * /proc), the last timestamp in the map is when it stopped: latency = last - open, to within
 * the ~1.1 ms between writes. The bench then acknowledges the trial in the map and runs
 * `sentry resume last`; the agent closes the file and waits 1.1 s plus a random fraction of an
 * interval before the next trial, so that every trial starts from a quiet tree (the slower,
 * non-busy polling: the worst case) at a random phase of the scan cycle. Each trial opens its own
 * file, so Sentry's 2 s repeat folding does not apply.
 *
 * The split into detection (the event's timestamp, to the millisecond) and stopping is printed
 * too. The baseline in the same run is what polling alone predicts for a scan every T ms: a
 * detection delay spread evenly over [0, T], so p50 T/2 and p95 0.95 T, plus the time to act.
 *
 * Run: deno run -A bench/latency_bench.ts [--quick] [--interval MS] [--trials N]
 * @module
 */
import { join } from "node:path";
import { DEFAULT_INTERVAL_MS } from "../src/cli/mod.ts";
import {
  lastSessionEvents,
  machineLine,
  markMachine,
  parseBenchArgs,
  percentile,
  procState,
  realPython,
  sentryOutput,
  startSentry,
  table,
  waitFor,
} from "./_harness.ts";

/** Options for {@link runLatencyBench}. */
export interface LatencyBenchOptions {
  /** Sentry's polling interval, in milliseconds; default `DEFAULT_INTERVAL_MS`. */
  intervalMs?: number;
  /** Trials; default 30 (quick: 10). */
  trials?: number;
  /** Fewer trials, to finish in under 30 seconds. */
  quick?: boolean;
}

/** One trial's figures, in milliseconds. */
export interface LatencyTrial {
  trial: number;
  /** From the open to the last timestamp written before the stop. */
  totalMs: number;
  /** From the open to the event's timestamp (millisecond resolution); null if not found. */
  detectMs: number | null;
}

/** What {@link runLatencyBench} measured. */
export interface LatencyBenchResult {
  intervalMs: number;
  trials: LatencyTrial[];
  /** Trials in which the agent was not stopped within the timeout. */
  missed: number;
  p50Ms: number;
  p95Ms: number;
  goalMet: boolean;
}

/** Slots of the shared map, as doubles. */
const TRIAL = 0;
const OPENED = 1;
const LAST = 2;
const ACK = 3;
const PID = 4;

const AGENT = `
import mmap, os, random, struct, sys, time
shm, home, trials, interval = sys.argv[1], sys.argv[2], int(sys.argv[3]), float(sys.argv[4])
fd = os.open(shm, os.O_RDWR)
mm = mmap.mmap(fd, 64)
os.close(fd)
def put(k, v): struct.pack_into("d", mm, 8 * k, v)
def get(k): return struct.unpack_from("d", mm, 8 * k)[0]
random.seed(7)
put(${PID}, os.getpid())
for i in range(1, trials + 1):
    time.sleep(1.1 + random.random() * interval)
    put(${TRIAL}, i)
    t = time.time()
    put(${LAST}, t)
    put(${OPENED}, t)
    f = open(home + "/.ssh/id_rsa_" + str(i), "rb")
    while get(${ACK}) < i:
        put(${LAST}, time.time())
        time.sleep(0.001)
    f.close()
`;

function readSlots(path: string): Float64Array {
  const bytes = Deno.readFileSync(path);
  return new Float64Array(bytes.buffer, bytes.byteOffset, 8);
}

function writeSlot(path: string, slot: number, value: number): void {
  const file = Deno.openSync(path, { write: true });
  try {
    file.seekSync(slot * 8, Deno.SeekMode.Start);
    file.writeSync(new Uint8Array(new Float64Array([value]).buffer));
  } finally {
    file.close();
  }
}

/** Runs the benchmark, prints its table and returns the figures. */
export async function runLatencyBench(
  options: LatencyBenchOptions = {},
): Promise<LatencyBenchResult> {
  const quick = options.quick ?? false;
  const intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
  const trials = options.trials ?? (quick ? 10 : 30);
  const before = markMachine();
  const python = await realPython();
  const dir = Deno.makeTempDirSync({ prefix: "sentry_latency_bench_" });
  const fakeHome = join(dir, "home");
  const ws = join(dir, "ws");
  const sentryHome = join(dir, "sentry");
  const shm = join(dir, "shm.bin");
  Deno.mkdirSync(join(fakeHome, ".ssh"), { recursive: true });
  Deno.mkdirSync(ws);
  for (let i = 1; i <= trials; i++) {
    Deno.writeTextFileSync(join(fakeHome, ".ssh", `id_rsa_${i}`), "not a key\n");
  }
  Deno.writeFileSync(shm, new Uint8Array(64));
  Deno.writeTextFileSync(join(dir, "agent.py"), AGENT);
  const env = { HOME: fakeHome };
  const sentry = startSentry([
    "run",
    "--workspace",
    ws,
    "--interval",
    String(intervalMs),
    "--",
    python,
    join(dir, "agent.py"),
    shm,
    fakeHome,
    String(trials),
    String(intervalMs / 1000),
  ], { home: sentryHome, env, cwd: ws });
  let agentPid = 0;
  try {
    agentPid = await waitFor("the agent to start", () => {
      const pid = readSlots(shm)[PID] ?? 0;
      return pid > 0 ? pid : undefined;
    }, { timeoutMs: 15_000, everyMs: 10 });
    const measured: { trial: number; totalMs: number; openedAt: number }[] = [];
    let missed = 0;
    for (let i = 1; i <= trials; i++) {
      await waitFor(`trial ${i} to start`, () => readSlots(shm)[TRIAL] === i ? true : undefined, {
        timeoutMs: 10_000,
        everyMs: 1,
      });
      let stopped = true;
      try {
        await waitFor(`the agent to stop in trial ${i}`, () => {
          const state = procState(agentPid);
          if (state === null) throw new Error(`The agent exited during trial ${i}`);
          return state === "T" || state === "t" ? true : undefined;
        }, { timeoutMs: 3000, everyMs: 1 });
      } catch (error) {
        if (!(error as Error).message.startsWith("Timed out")) throw error;
        stopped = false;
        missed++;
      }
      const slots = readSlots(shm);
      const openedAt = slots[OPENED] as number;
      if (stopped) {
        measured.push({ trial: i, totalMs: ((slots[LAST] as number) - openedAt) * 1000, openedAt });
      }
      writeSlot(shm, ACK, i);
      if (stopped) await sentryOutput(["resume", "last"], { home: sentryHome, env });
    }
    const status = await sentry.child.status;
    const stderr = await sentry.stderr;
    if (!status.success) throw new Error(`sentry run exited with ${status.code}: ${stderr}`);

    const events = await lastSessionEvents(sentryHome);
    const detectedAt = new Map<string, number>();
    for (const e of events) {
      if (e.kind === "file.read" && e.verdict === "deny") {
        detectedAt.set(e.target, Date.parse(e.ts));
      }
    }
    const results: LatencyTrial[] = measured.map((m) => {
      const at = detectedAt.get(join(fakeHome, ".ssh", `id_rsa_${m.trial}`));
      return {
        trial: m.trial,
        totalMs: m.totalMs,
        detectMs: at === undefined ? null : at - m.openedAt * 1000,
      };
    });
    const totals = results.map((r) => r.totalMs);
    const detects = results.flatMap((r) => r.detectMs === null ? [] : [r.detectMs]);
    const stops = results.flatMap((r) => r.detectMs === null ? [] : [r.totalMs - r.detectMs]);
    const p50Ms = percentile(totals, 50);
    const p95Ms = percentile(totals, 95);
    const goalMet = missed === 0 && p95Ms <= 2 * intervalMs;

    const f = (x: number) => Number.isNaN(x) ? "-" : x.toFixed(1);
    console.log(
      `latency from a denied read (~/.ssh/id_rsa_N) to the agent stopped: sentry run --interval ${intervalMs}, ` +
        `default policy (pause), ${results.length} of ${trials} trials stopped, quiet tree`,
    );
    console.log(table([
      ["ms", "p50", "p95", "max", "min"],
      [
        "open -> stopped (measured)",
        ...[50, 95, 100].map((p) => f(percentile(totals, p))),
        f(
          Math.min(...totals),
        ),
      ],
      [
        "  open -> event (detect)",
        ...[50, 95, 100].map((p) => f(percentile(detects, p))),
        f(
          Math.min(...detects),
        ),
      ],
      [
        "  event -> stopped (act)",
        ...[50, 95, 100].map((p) => f(percentile(stops, p))),
        f(
          Math.min(...stops),
        ),
      ],
      [
        "baseline: polling, uniform [0, T]",
        f(intervalMs / 2),
        f(0.95 * intervalMs),
        f(intervalMs),
        "0.0",
      ],
    ]));
    console.log(
      `goal: p95 at most two intervals (${2 * intervalMs} ms), no trial missed: ${
        goalMet ? "met" : "NOT met"
      } (p50 ${f(p50Ms)} ms, p95 ${f(p95Ms)} ms, missed ${missed}); timestamps every ~1.1 ms`,
    );
    console.log(machineLine(before));
    return { intervalMs, trials: results, missed, p50Ms, p95Ms, goalMet };
  } finally {
    if (agentPid > 0 && procState(agentPid) !== null) {
      try {
        Deno.kill(agentPid, "SIGKILL");
      } catch {
        // Gone.
      }
    }
    try {
      sentry.child.kill("SIGTERM");
    } catch {
      // Exited already.
    }
    await sentry.child.status;
    await sentry.stderr;
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  await runLatencyBench({
    quick,
    ...(numbers.interval === undefined ? {} : { intervalMs: numbers.interval[0] as number }),
    ...(numbers.trials === undefined ? {} : { trials: numbers.trials[0] as number }),
  });
}
