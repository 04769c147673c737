/**
 * What bench/tiers_bench.ts needs beyond bench/_harness.ts: running a workload unmonitored,
 * under strace or under `sentry run --sensor <tier>` with a data directory of its own per run,
 * reading the journaled events back with SQL (a flood session holds 200,000 events: parsing them
 * all through `sentry events --json` would take longer than the run), and reading the CPU time
 * and memory of Sentry and every helper process it starts from /proc. Private to bench/.
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { JOURNAL_FILE } from "../src/journal/mod.ts";
import type { SensorStats } from "../src/sensors/mod.ts";
import {
  childPids,
  cmdline,
  cpuNanos,
  cpuTicks,
  delay,
  sentryOutput,
  startSentry,
} from "./_harness.ts";

/** The sensing tiers, most exact first (as `sentry run --sensor` names them). */
export const BENCH_TIERS = ["ebpf", "seccomp", "fanotify", "poll"] as const;

/** One sensing tier. */
export type BenchTier = typeof BENCH_TIERS[number];

/** How a workload runs: alone, under strace (the full-recall reference), or under a tier. */
export type RunMode = "unmonitored" | "strace" | BenchTier;

/** The syscalls strace traces: the same actions the kernel tiers record. */
export const STRACE_SYSCALLS =
  "open,openat,openat2,creat,unlink,unlinkat,rename,renameat,renameat2,connect,execve";

/** What every run of the benchmark shares: its temporary directory and the agent's workspace. */
export interface BenchContext {
  /** The benchmark's temporary directory; everything it makes lives under it. */
  dir: string;
  /** The agent's workspace (`--workspace`, and the agent's cwd). */
  ws: string;
  /** The real python3 executable (not a pyenv shim). */
  python: string;
  /** A policy that only monitors (`extends: default`, `mode: monitor`): nothing is paused. */
  policy: string;
  /** Every process the benchmark started and has not yet seen exit. */
  children: Set<Deno.ChildProcess>;
}

let homes = 0;

/** A new, empty Sentry data directory under the benchmark's directory. */
export function newHome(ctx: BenchContext): string {
  const home = join(ctx.dir, `home_${++homes}`);
  Deno.mkdirSync(home);
  return home;
}

/** Removes a data directory once its figures are read (a flood journal is hundreds of MB). */
export function dropHome(home: string): void {
  try {
    Deno.removeSync(home, { recursive: true });
  } catch {
    // Already gone.
  }
}

/** The peak memory of Sentry and its helpers during a run, from /proc/PID/status. */
export interface MemoryPeak {
  /** The largest sum of VmRSS over Sentry and its helpers seen by the sampler, in MB. */
  rssSumMb: number;
  /** Each process's VmHWM (its own peak) at the last sample, in MB, by role. */
  hwmMb: Record<string, number>;
}

/** What a run under one mode measured. */
export interface ModeRun {
  /** The exit code of what the benchmark started (Sentry, strace or the workload). */
  code: number;
  /** Wall time from spawn to exit, in seconds. */
  wallSeconds: number;
  /** When it exited, in milliseconds since the epoch. */
  exitedAt: number;
  /** Sentry's data directory, or null for runs without Sentry (the caller drops it). */
  home: string | null;
  /** What Sentry printed on stderr ("" without Sentry). */
  stderr: string;
  /** Sentry's memory, when sampled. */
  memory: MemoryPeak | null;
}

/** Options for {@link runMode}. */
export interface RunModeOptions {
  mode: RunMode;
  /** The workload's argv. */
  argv: readonly string[];
  /** Sample Sentry's memory every 100 ms while it runs. */
  sampleMemory?: boolean;
  /** Called with Sentry's pid once it is spawned (monitored runs only). */
  onSpawn?: (sentryPid: number) => void;
  /** Kill the run after this long, in milliseconds; default 300,000. */
  timeoutMs?: number;
}

/** The argv of `sentry run` under a tier, for the benchmark's policy and workspace. */
export function sentryRunArgs(
  ctx: BenchContext,
  tier: BenchTier,
  argv: readonly string[],
): string[] {
  return [
    "run",
    "--sensor",
    tier,
    "--no-api",
    "--no-rollback",
    "--policy",
    ctx.policy,
    "--workspace",
    ctx.ws,
    "--",
    ...argv,
  ];
}

/** Spawns a plain process (no Sentry), tracked for cleanup, with output discarded. */
export function spawnTracked(
  ctx: BenchContext,
  argv: readonly string[],
): Deno.ChildProcess {
  const [cmd, ...args] = argv;
  const child = new Deno.Command(cmd as string, {
    args,
    cwd: ctx.ws,
    stdin: "null",
    stdout: "null",
    stderr: "piped",
    env: { DENO_NO_UPDATE_CHECK: "1" },
  }).spawn();
  ctx.children.add(child);
  void child.status.then(() => ctx.children.delete(child));
  return child;
}

/** Runs a workload once in a mode and waits for it to end (killing it after the timeout). */
export async function runMode(ctx: BenchContext, options: RunModeOptions): Promise<ModeRun> {
  const started = performance.now();
  let child: Deno.ChildProcess;
  let home: string | null = null;
  let stderr: Promise<string>;
  if (options.mode === "unmonitored" || options.mode === "strace") {
    const argv = options.mode === "strace"
      ? [
        "strace",
        "-f",
        "--seccomp-bpf",
        "-e",
        `trace=${STRACE_SYSCALLS}`,
        "-o",
        "/dev/null",
        "--",
        ...options.argv,
      ]
      : [...options.argv];
    child = spawnTracked(ctx, argv);
    stderr = new Response(child.stderr).text();
  } else {
    home = newHome(ctx);
    const run = startSentry(sentryRunArgs(ctx, options.mode, options.argv), {
      home,
      cwd: ctx.ws,
      env: { DENO_NO_UPDATE_CHECK: "1" },
    });
    child = run.child;
    ctx.children.add(child);
    void child.status.then(() => ctx.children.delete(child));
    stderr = run.stderr;
    options.onSpawn?.(child.pid);
  }
  const sampler = options.sampleMemory === true && home !== null
    ? new MemorySampler(child.pid)
    : null;
  const timer = setTimeout(() => {
    try {
      child.kill("SIGKILL");
    } catch {
      // It has exited.
    }
  }, options.timeoutMs ?? 300_000);
  try {
    const status = await child.status;
    const exitedAt = Date.now();
    return {
      code: status.code,
      wallSeconds: (performance.now() - started) / 1000,
      exitedAt,
      home,
      stderr: await stderr,
      memory: sampler?.stop() ?? null,
    };
  } finally {
    clearTimeout(timer);
    sampler?.stop();
  }
}

/** Throws with Sentry's stderr when a run failed. */
export function expectSuccess(run: ModeRun, what: string): void {
  if (run.code !== 0) {
    throw new Error(`${what} exited with ${run.code}: ${run.stderr.trim().slice(-2000)}`);
  }
}

/** Ends every process the benchmark started that is still running: SIGTERM, then SIGKILL. */
export async function killAll(ctx: BenchContext): Promise<void> {
  const live = [...ctx.children];
  for (const child of live) {
    try {
      child.kill("SIGTERM");
    } catch {
      // It has exited.
    }
  }
  const grace = delay(3000).then(() => {
    for (const child of live) {
      try {
        child.kill("SIGKILL");
      } catch {
        // It has exited.
      }
    }
  });
  await Promise.race([Promise.all(live.map((c) => c.status.catch(() => {}))), grace]);
  await Promise.all(live.map((c) => c.status.catch(() => {})));
}

// --- Sentry's processes ----------------------------------------------------------------------

function exeOf(pid: number): string | null {
  try {
    return Deno.readLinkSync(`/proc/${pid}/exe`);
  } catch {
    return null;
  }
}

/**
 * Sentry's own processes: the `sentry run` process and every process below it that is not part
 * of the agent's tree: the watchdog (a shell waiting on a pipe, which execs Sentry's full
 * `__watchdog` only if Sentry dies), a seccomp launcher until it execs the agent, any other Deno
 * process. Each comes with a role name for the tables.
 */
export function sentryProcesses(sentryPid: number): { pid: number; role: string }[] {
  const deno = exeOf(Deno.pid) ?? Deno.execPath();
  const found = [{ pid: sentryPid, role: "sentry" }];
  const queue = childPids(sentryPid);
  while (queue.length > 0) {
    const pid = queue.shift() as number;
    const exe = exeOf(pid);
    const hidden = cmdline(pid).find((a) => a.startsWith("__"));
    if (hidden === undefined && exe !== deno) continue;
    const program = exe === deno ? "deno" : (exe?.split("/").at(-1) ?? "?");
    found.push({
      pid,
      role: `${hidden === undefined ? "helper" : hidden.replace(/^__/, "")} (${program})`,
    });
    queue.push(...childPids(pid));
  }
  return found;
}

/** A process's memory from /proc/PID/status, in MB; null when it is gone. */
export function memoryOf(pid: number): { rssMb: number; hwmMb: number } | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/status`);
  } catch {
    return null;
  }
  const kb = (name: string) =>
    Number(new RegExp(`^${name}:\\s+(\\d+) kB`, "m").exec(text)?.[1] ?? 0);
  return { rssMb: kb("VmRSS") / 1024, hwmMb: kb("VmHWM") / 1024 };
}

/** Samples the memory of Sentry and its helpers every 100 ms until stopped. */
class MemorySampler {
  readonly #sentryPid: number;
  readonly #timer: ReturnType<typeof setInterval>;
  #rssSumMb = 0;
  readonly #hwm: Record<string, number> = {};
  #result: MemoryPeak | null = null;

  constructor(sentryPid: number) {
    this.#sentryPid = sentryPid;
    this.#timer = setInterval(() => this.#sample(), 100);
  }

  #sample(): void {
    let sum = 0;
    for (const p of sentryProcesses(this.#sentryPid)) {
      const m = memoryOf(p.pid);
      if (m === null) continue;
      sum += m.rssMb;
      this.#hwm[p.role] = Math.max(this.#hwm[p.role] ?? 0, m.hwmMb);
    }
    this.#rssSumMb = Math.max(this.#rssSumMb, sum);
  }

  stop(): MemoryPeak {
    if (this.#result === null) {
      clearInterval(this.#timer);
      this.#result = { rssSumMb: this.#rssSumMb, hwmMb: { ...this.#hwm } };
    }
    return this.#result;
  }
}

/** One process's CPU counters at one moment. */
export interface CpuMark {
  pid: number;
  role: string;
  /** utime + stime, in clock ticks (includes exited threads). */
  ticks: number;
  /** The live threads' run time from schedstat, in nanoseconds. */
  nanos: number;
  at: number;
}

/** Reads the CPU counters of Sentry and its helpers now. */
export function markCpu(sentryPid: number): CpuMark[] {
  const at = performance.now();
  return sentryProcesses(sentryPid).map((p) => ({
    ...p,
    ticks: cpuTicks(p.pid) ?? NaN,
    nanos: cpuNanos(p.pid) ?? NaN,
    at,
  }));
}

// --- The journal --------------------------------------------------------------------------------

/** One journaled event, as far as the benchmark matches it. */
export interface JournaledEvent {
  kind: string;
  pid: number | null;
  target: string;
  sensor: string;
}

/**
 * The last session of a data directory: its id and its sensors' counters. Read with SQL, like
 * the events: the bench process must not open the journal through src/journal, whose migrations
 * may be older than the `sentry run` it just started from source (a checkout being edited).
 */
export function sessionStats(home: string): { id: string; sensors: SensorStats[] } {
  return withJournal(home, (db) => {
    const row = db.prepare("SELECT id FROM sessions ORDER BY started_at DESC, id DESC LIMIT 1")
      .get();
    if (row === undefined) throw new Error(`No session in "${home}"`);
    const id = String(row.id);
    const sensors = db.prepare("SELECT stats FROM sensor_stats WHERE session = ? ORDER BY sensor")
      .all(id).map((r) => JSON.parse(String(r.stats)) as SensorStats);
    return { id, sensors };
  });
}

function withJournal<T>(home: string, body: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(join(home, JOURNAL_FILE), { readOnly: true });
  try {
    return body(db);
  } finally {
    db.close();
  }
}

/** The events of a session whose target starts with `prefix` (every event when it is ""). */
export function journaledEvents(
  home: string,
  filter: { session: string; prefix?: string },
): JournaledEvent[] {
  const prefix = filter.prefix ?? "";
  return withJournal(home, (db) =>
    db.prepare(
      "SELECT kind, pid, target, sensor FROM events WHERE session = ? AND substr(target, 1, ?) = ?",
    ).all(filter.session, prefix.length, prefix).map((r) => ({
      kind: String(r.kind),
      pid: r.pid === null ? null : Number(r.pid),
      target: String(r.target),
      sensor: String(r.sensor),
    })));
}

/** Counts a session's events of one kind under a path prefix: all of them, and by one pid. */
export function countJournaled(
  home: string,
  filter: { session: string; kind: string; prefix: string; pid: number },
): { all: number; byPid: number } {
  return withJournal(home, (db) => {
    const row = db.prepare(
      "SELECT count(*) AS n, sum(pid = ?) AS p FROM events WHERE session = ? AND kind = ? AND substr(target, 1, ?) = ?",
    ).get(filter.pid, filter.session, filter.kind, filter.prefix.length, filter.prefix);
    return { all: Number(row?.n ?? 0), byPid: Number(row?.p ?? 0) };
  });
}

/** One sensor's counters in `sentry report --json`. */
export interface ReportedSensor {
  sensor: string;
  emitted: number;
  dropped: number;
  deduplicated: number;
  blindSpots: { id: string; count: number }[];
}

/** The sensors' counters of the last session, as `sentry report --json` gives them. */
export async function reportSensors(home: string): Promise<ReportedSensor[]> {
  const text = await sentryOutput(["report", "--json", "last"], { home });
  return (JSON.parse(text) as { sensors: ReportedSensor[] }).sensors;
}

/** How many events a session journaled in all. */
export function eventCount(home: string, session: string): number {
  return withJournal(home, (db) =>
    Number(
      db.prepare("SELECT count(*) AS n FROM events WHERE session = ?").get(session)?.n ?? 0,
    ));
}

/** Sums a numeric counter over every sensor. */
export function sumOf(
  sensors: readonly { dropped: number; deduplicated: number }[],
  key: "dropped" | "deduplicated",
): number {
  return sensors.reduce((a, s) => a + s[key], 0);
}

/** Blind spots with a count, as `sensor.id N` joined, or "none". */
export function blindText(
  sensors: readonly { sensor: string; blindSpots: readonly { id: string; count: number }[] }[],
): string {
  const parts = sensors.flatMap((s) => s.blindSpots.map((b) => `${s.sensor}.${b.id} ${b.count}`));
  return parts.length === 0 ? "none" : parts.join(", ");
}

/** The type of the filesystem holding a path (the longest mount point above it), or "unknown". */
export function fsTypeOf(path: string): string {
  let best = { point: "", type: "unknown" };
  for (const line of Deno.readTextFileSync("/proc/self/mountinfo").split("\n")) {
    // id parent major:minor root mountpoint options... - fstype source superoptions
    const fields = line.split(" ");
    const point = (fields[4] ?? "").replace(/\\040/g, " ");
    const type = fields[fields.indexOf("-") + 1] ?? "unknown";
    const under = point === "/" || path === point || path.startsWith(`${point}/`);
    if (under && point.length >= best.point.length) best = { point, type };
  }
  return best.type;
}

/** Whether a tier can run here: a `sentry run --sensor <tier> -- /bin/true`, or why not. */
export async function probeTier(
  ctx: BenchContext,
  tier: BenchTier,
): Promise<{ ok: true } | { ok: false; reason: string }> {
  const run = await runMode(ctx, { mode: tier, argv: ["/bin/true"], timeoutMs: 60_000 });
  if (run.home !== null) dropHome(run.home);
  if (run.code === 0) return { ok: true };
  const line = run.stderr.trim().split("\n").filter((l) => l.trim() !== "").at(-1) ?? "";
  return { ok: false, reason: line === "" ? `exit ${run.code}` : line };
}

/** A set of TCP listeners on 127.0.0.1, each on its own port, that accept and close. */
export class Listeners {
  readonly ports: number[] = [];
  readonly #listeners: Deno.TcpListener[] = [];

  /** Opens `count` listeners. */
  constructor(count: number) {
    for (let i = 0; i < count; i++) {
      const l = Deno.listen({ hostname: "127.0.0.1", port: 0 });
      this.#listeners.push(l);
      this.ports.push((l.addr as Deno.NetAddr).port);
      void this.#accept(l);
    }
  }

  async #accept(listener: Deno.TcpListener): Promise<void> {
    try {
      for await (const conn of listener) {
        // Hold it until the agent closes its end, then close ours.
        conn.readable.pipeTo(new WritableStream()).catch(() => {}).finally(() => {
          try {
            conn.close();
          } catch {
            // Closed already.
          }
        });
      }
    } catch {
      // Closed.
    }
  }

  /** Closes every listener. */
  close(): void {
    for (const l of this.#listeners) {
      try {
        l.close();
      } catch {
        // Closed already.
      }
    }
  }
}
