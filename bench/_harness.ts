/**
 * What the benchmarks that run `sentry run` on real processes share: starting Sentry from source
 * with its own data directory, reading back the events it journaled, reading CPU time and process
 * state from /proc, percentiles, flags and tables. Private to bench/.
 * @module
 */
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";
import type { AgentEvent } from "../src/events/mod.ts";
import { JOURNAL_FILE, openJournal } from "../src/journal/mod.ts";
import type { SensorStats } from "../src/sensors/mod.ts";

/** The repository root (the folder holding main.ts and deno.json). */
export const ROOT: string = join(dirname(fileURLToPath(import.meta.url)), "..");

/** The argv that runs the Sentry CLI from source with `args`. */
export function sentryCommand(args: readonly string[]): string[] {
  return [
    Deno.execPath(),
    "run",
    "-A",
    "--config",
    join(ROOT, "deno.json"),
    join(ROOT, "main.ts"),
    ...args,
  ];
}

/**
 * The real python3 executable. `python3` on PATH may be a shim (pyenv) that runs bash first,
 * which would add processes and file opens of its own to every measured agent.
 */
export async function realPython(): Promise<string> {
  const out = await new Deno.Command("python3", {
    args: ["-c", "import sys; print(sys.executable)"],
    stdout: "piped",
    stderr: "inherit",
  }).output();
  const path = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || path === "") throw new Error("Cannot find python3: it is required");
  return path;
}

/** A running `sentry run`, with its stderr collected (Sentry prints its notices there). */
export interface RunningSentry {
  child: Deno.ChildProcess;
  /** Everything Sentry printed on stderr, once it has exited. */
  stderr: Promise<string>;
}

/** Options for {@link startSentry}. */
export interface StartSentryOptions {
  /** Sentry's data directory (SENTRY_HOME). */
  home: string;
  /** Extra environment for Sentry and the agent. */
  env?: Record<string, string>;
  cwd?: string;
}

/** Starts `sentry <args>` from source with an isolated data directory. */
export function startSentry(args: readonly string[], options: StartSentryOptions): RunningSentry {
  const [cmd, ...rest] = sentryCommand(args);
  const child = new Deno.Command(cmd as string, {
    args: rest,
    env: { ...options.env, SENTRY_HOME: options.home },
    ...(options.cwd === undefined ? {} : { cwd: options.cwd }),
    stdin: "null",
    stdout: "null",
    stderr: "piped",
  }).spawn();
  const stderr = new Response(child.stderr).text();
  return { child, stderr };
}

/** Runs a Sentry command to completion and returns its stdout; throws on a non-zero exit. */
export async function sentryOutput(
  args: readonly string[],
  options: StartSentryOptions,
): Promise<string> {
  const [cmd, ...rest] = sentryCommand(args);
  const out = await new Deno.Command(cmd as string, {
    args: rest,
    env: { ...options.env, SENTRY_HOME: options.home },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).output();
  const decoder = new TextDecoder();
  if (!out.success) {
    throw new Error(
      `"sentry ${args.join(" ")}" exited with ${out.code}: ${decoder.decode(out.stderr)}`,
    );
  }
  return decoder.decode(out.stdout);
}

/** The events of the last session, through `sentry events --session last --json`. */
export async function lastSessionEvents(home: string): Promise<AgentEvent[]> {
  const text = await sentryOutput(
    ["events", "--session", "last", "--json", "--limit", "10000000"],
    { home },
  );
  return text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l) as AgentEvent);
}

/** The last session's id, wall time and sensor counters, read from its journal. */
export function lastSessionStats(
  home: string,
): { id: string; startedAt: string; endedAt: string | null; sensors: SensorStats[] } {
  const journal = openJournal(join(home, JOURNAL_FILE));
  try {
    const session = journal.getSession("last");
    return {
      id: session.id,
      startedAt: session.startedAt,
      endedAt: session.endedAt,
      sensors: journal.sensorStats(session.id).map((r) => r.stats),
    };
  } finally {
    journal.close();
  }
}

function statFields(pid: number): string[] | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(`/proc/${pid}/stat`);
  } catch {
    return null;
  }
  // Fields after the command name, which may hold spaces: [0] is the state (field 3).
  return text.slice(text.lastIndexOf(")") + 2).split(" ");
}

/** A process's CPU time so far, utime + stime, in clock ticks; null when it is gone. */
export function cpuTicks(pid: number): number | null {
  const f = statFields(pid);
  if (f === null) return null;
  return Number(f[11]) + Number(f[12]);
}

/**
 * A process's CPU time so far, in nanoseconds: the sum of its live threads' run time from
 * /proc/PID/task/TID/schedstat. Exact, where the tick counts of /proc/PID/stat are sampled, but
 * it forgets threads that have exited. Null when the process is gone.
 */
export function cpuNanos(pid: number): number | null {
  let total = 0;
  try {
    for (const task of Deno.readDirSync(`/proc/${pid}/task`)) {
      try {
        total += Number(
          Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/schedstat`).split(" ")[0],
        );
      } catch {
        // The thread exited.
      }
    }
  } catch {
    return null;
  }
  return total;
}

/** A process's state letter (R, S, T, Z...), or null when it is gone. */
export function procState(pid: number): string | null {
  return statFields(pid)?.[0] ?? null;
}

/** The pids of a process's direct children. */
export function childPids(pid: number): number[] {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/task/${pid}/children`).trim().split(/\s+/)
      .filter((s) => s !== "").map(Number);
  } catch {
    return [];
  }
}

/** A process's argv, or [] when it is gone. */
export function cmdline(pid: number): string[] {
  try {
    return Deno.readTextFileSync(`/proc/${pid}/cmdline`).split("\0").filter((s) => s !== "");
  } catch {
    return [];
  }
}

/** The 1-minute load average, from /proc/loadavg. */
export function loadAverage(): number {
  return Number(Deno.readTextFileSync("/proc/loadavg").split(" ")[0]);
}

/** The machine's CPU counters from /proc/stat: all time and stolen time, in ticks. */
export function cpuCounters(): { total: number; steal: number } {
  const fields = Deno.readTextFileSync("/proc/stat").split("\n")[0]?.trim().split(/\s+/).slice(1)
    .map(Number) ?? [];
  // user nice system idle iowait irq softirq steal guest guest_nice; guest time is in user.
  return { total: fields.slice(0, 8).reduce((a, b) => a + b, 0), steal: fields[7] ?? 0 };
}

/** The machine's state when a run starts, for {@link machineLine}. */
export interface MachineMark {
  load: number;
  cpu: { total: number; steal: number };
}

/** Notes the load and CPU counters now. */
export function markMachine(): MachineMark {
  return { load: loadAverage(), cpu: cpuCounters() };
}

/**
 * A line to print under a table: the machine's cores, its load before and after the run, and
 * the CPU time the hypervisor stole from it during the run. Other processes and stolen time
 * skew every figure here (stolen time even counts as the measured processes' own CPU time).
 */
export function machineLine(before: MachineMark): string {
  const now = cpuCounters();
  const total = now.total - before.cpu.total;
  const steal = total > 0 ? ((now.steal - before.cpu.steal) / total) * 100 : 0;
  return `machine: ${navigator.hardwareConcurrency} cores, load average ${
    before.load.toFixed(2)
  } before the run and ${loadAverage().toFixed(2)} after (it includes the benchmark itself), ` +
    `${steal.toFixed(1)}% of CPU time stolen by the host during the run`;
}

/** Clock ticks per second (USER_HZ); 100 on every Linux Sentry supports. */
export const CLOCK_TICKS = 100;

/** The `p`-th percentile (0-100) of numbers, by the nearest-rank method; NaN when empty. */
export function percentile(values: readonly number[], p: number): number {
  if (values.length === 0) return NaN;
  const sorted = [...values].sort((a, b) => a - b);
  const rank = Math.max(1, Math.ceil((p / 100) * sorted.length));
  return sorted[Math.min(rank, sorted.length) - 1] as number;
}

/** The arithmetic mean; NaN when empty. */
export function mean(values: readonly number[]): number {
  return values.reduce((a, b) => a + b, 0) / values.length;
}

/** Resolves after `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((resolve) => setTimeout(resolve, ms));
}

/** Polls `check` every `everyMs` until it returns a value other than undefined, or times out. */
export async function waitFor<T>(
  what: string,
  check: () => T | undefined,
  options: { timeoutMs: number; everyMs?: number },
): Promise<T> {
  const deadline = Date.now() + options.timeoutMs;
  while (true) {
    const value = check();
    if (value !== undefined) return value;
    if (Date.now() > deadline) throw new Error(`Timed out after ${options.timeoutMs} ms: ${what}`);
    await delay(options.everyMs ?? 2);
  }
}

/** A deterministic pseudo-random generator in [0, 1), so every run does the same plan. */
export function rng(seed: number): () => number {
  let s = seed >>> 0;
  return () => {
    s = (s * 1664525 + 1013904223) >>> 0;
    return s / 2 ** 32;
  };
}

/** Formats rows as a table: the first column left-aligned, the others right-aligned. */
export function table(rows: readonly (readonly string[])[]): string {
  const widths: number[] = [];
  for (const row of rows) {
    row.forEach((cell, i) => widths[i] = Math.max(widths[i] ?? 0, cell.length));
  }
  return rows.map((row) =>
    row.map((cell, i) => i === 0 ? cell.padEnd(widths[i] ?? 0) : cell.padStart(widths[i] ?? 0))
      .join("  ").trimEnd()
  ).join("\n");
}

/** The flags every Sentry benchmark takes: `--quick`, and numbers as `--name N` or `--name=N`. */
export function parseBenchArgs(
  args: readonly string[],
): { quick: boolean; numbers: Record<string, number[]> } {
  const numbers: Record<string, number[]> = {};
  let quick = false;
  for (let i = 0; i < args.length; i++) {
    const arg = args[i] as string;
    if (arg === "--quick") {
      quick = true;
      continue;
    }
    const m = /^--([a-z-]+)(?:=(.*))?$/.exec(arg);
    if (m === null) throw new TypeError(`Unknown argument "${arg}"`);
    const name = m[1] as string;
    const text = m[2] ?? args[++i];
    if (text === undefined) throw new TypeError(`Missing value for "--${name}"`);
    const values = text.split(",").map(Number);
    if (values.some((v) => !Number.isFinite(v) || v <= 0)) {
      throw new TypeError(`Invalid value "${text}" for "--${name}": give positive numbers`);
    }
    numbers[name] = values;
  }
  return { quick, numbers };
}
