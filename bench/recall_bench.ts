// deno-lint-ignore-file no-console
/**
 * Recall by action duration: the share of an agent's actions that Sentry records, for actions
 * that last 1 ms, 10 ms, 100 ms and 1 s. Sentry polls /proc, so an action shorter than one
 * polling interval is seen only when a scan happens to fall inside it; the goal is 100% at or
 * above two polling intervals.
 *
 * A scripted python3 agent runs under `sentry run` (mode monitor, so nothing is paused) and does
 * N actions of each kind and duration, in a shuffled order with random gaps of 0.2 to 1.2
 * intervals between them, each on a unique target so it can be found in
 * `sentry events --session last --json`:
 *
 * - file.read: opens a unique existing file in the workspace for reading, holds it, closes it;
 * - file.write: opens a unique new file in the workspace for writing, holds it, closes it
 *   (only the fd sensor's `file.write` counts: inotify sees the create whatever its duration);
 * - proc.exec: runs /usr/bin/sleep for the duration, with a unique argv[0];
 * - net.connect: connects to a listener the bench runs, holds the connection;
 * - db.connect: the same on a port the test policy lists in `database.ports`.
 *
 * Each connection goes to its own loopback address (127.0.1.x, 127.0.2.x) on a shared random
 * port, so the targets differ and Sentry's 2 s repeat folding does not merge them. The baseline
 * in the same run is the figure polling alone predicts, min(1, d / T), for the poll period T
 * measured from the session's own counters.
 *
 * Run: deno run -A bench/recall_bench.ts [--quick] [--interval MS] [--n N] [--n-long N]
 *      [--durations 1,10,100,1000] [--gap MS]
 * Quiet-tree check: deno run -A bench/recall_bench.ts --durations 100 --n 20 --gap 1100
 * @module
 */
import { join } from "node:path";
import { DEFAULT_INTERVAL_MS } from "../src/cli/mod.ts";
import {
  lastSessionEvents,
  lastSessionStats,
  machineLine,
  markMachine,
  parseBenchArgs,
  realPython,
  rng,
  startSentry,
  table,
} from "./_harness.ts";

/** The kinds of action the agent does. */
export const RECALL_KINDS = [
  "file.read",
  "file.write",
  "proc.exec",
  "net.connect",
  "db.connect",
] as const;

/** One kind of action. */
export type RecallKind = typeof RECALL_KINDS[number];

/** Options for {@link runRecallBench}. */
export interface RecallBenchOptions {
  /** Sentry's polling interval, in milliseconds; default `DEFAULT_INTERVAL_MS`. */
  intervalMs?: number;
  /** Actions per kind for each duration under one second; default 50 (quick: 8). */
  n?: number;
  /** Actions per kind lasting one second or more; default 10 (quick: 2), to bound the time. */
  nLong?: number;
  /** The action durations, in milliseconds; default 1, 10, 100, 1000. */
  durationsMs?: number[];
  /** Smaller counts, to finish in under 30 seconds. */
  quick?: boolean;
  /**
   * The shortest gap between two actions, in milliseconds; default 0.2 intervals. A random part
   * of up to one interval is added. Gaps above one second let the tree fall back to the slower
   * quiet polling between actions (Sentry polls at half the interval for a second after it sees
   * anything new), which is the harder case.
   */
  gapMs?: number;
  /** Seed for the order and the gaps; default 1. */
  seed?: number;
}

/** The recall of one kind at one duration. */
export interface RecallCell {
  kind: RecallKind;
  durationMs: number;
  actions: number;
  recorded: number;
  /** The mean time the agent actually held the action, in milliseconds. */
  heldMs: number;
}

/** What {@link runRecallBench} measured. */
export interface RecallBenchResult {
  intervalMs: number;
  /** The mean time between scans over the session, from the proc sensor's poll count. */
  pollPeriodMs: number;
  cells: RecallCell[];
  /** Whether every kind reached 100% at every duration of at least two intervals. */
  goalMet: boolean;
  blindSpots: Record<string, number>;
  wallSeconds: number;
}

interface PlannedAction {
  i: number;
  kind: RecallKind;
  dur: number;
  gap: number;
  path?: string;
  argv0?: string;
  host?: string;
  port?: number;
}

const SLEEP = "/usr/bin/sleep";

const AGENT = `
import json, socket, subprocess, sys, time
plan = json.load(open(sys.argv[1]))
held = {}
for a in plan:
    time.sleep(a["gap"])
    k, d = a["kind"], a["dur"]
    t0 = time.perf_counter()
    if k == "file.read":
        f = open(a["path"], "rb"); time.sleep(d); f.close()
    elif k == "file.write":
        f = open(a["path"], "wb"); time.sleep(d); f.close()
    elif k == "proc.exec":
        subprocess.Popen([a["argv0"], repr(d)], executable="${SLEEP}").wait()
    else:
        s = socket.create_connection((a["host"], a["port"])); time.sleep(d); s.close()
    held[a["i"]] = time.perf_counter() - t0
json.dump(held, open(sys.argv[2], "w"))
`;

/** A set of listeners on consecutive loopback addresses sharing one random port. */
class ListenerPool {
  readonly port: number;
  readonly hosts: string[];
  readonly #listeners: Deno.TcpListener[] = [];
  readonly #conns: Deno.TcpConn[] = [];

  constructor(subnet: number, count: number) {
    for (let attempt = 0; attempt < 20; attempt++) {
      const first = Deno.listen({ hostname: `127.0.${subnet}.1`, port: 0 });
      const port = (first.addr as Deno.NetAddr).port;
      const listeners = [first];
      try {
        for (let k = 2; k <= count; k++) {
          listeners.push(Deno.listen({ hostname: ListenerPool.host(subnet, k), port }));
        }
      } catch {
        for (const l of listeners) l.close();
        continue;
      }
      this.port = port;
      this.hosts = Array.from({ length: count }, (_, k) => ListenerPool.host(subnet, k + 1));
      this.#listeners = listeners;
      for (const l of listeners) void this.#accept(l);
      return;
    }
    throw new Error(`Cannot bind ${count} loopback listeners on one port in 127.0.${subnet}.0/24`);
  }

  static host(subnet: number, k: number): string {
    // 127.0.S.1 .. 127.0.S.254, then 127.0.S+100.x for larger pools.
    return `127.0.${subnet + 100 * Math.floor((k - 1) / 254)}.${((k - 1) % 254) + 1}`;
  }

  async #accept(listener: Deno.TcpListener): Promise<void> {
    try {
      for await (const conn of listener) {
        this.#conns.push(conn);
        // Hold the connection until the agent closes it.
        conn.readable.pipeTo(new WritableStream()).catch(() => {});
      }
    } catch {
      // Closed.
    }
  }

  close(): void {
    for (const l of this.#listeners) {
      try {
        l.close();
      } catch {
        // Closed already.
      }
    }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch {
        // The agent closed it.
      }
    }
  }
}

function formatDuration(ms: number): string {
  return ms >= 1000 ? `${ms / 1000} s` : `${ms} ms`;
}

/** Runs the benchmark, prints its table and returns the figures. */
export async function runRecallBench(options: RecallBenchOptions = {}): Promise<RecallBenchResult> {
  const quick = options.quick ?? false;
  const intervalMs = options.intervalMs ?? DEFAULT_INTERVAL_MS;
  const n = options.n ?? (quick ? 8 : 50);
  const nLong = options.nLong ?? (quick ? 2 : 10);
  const durations = options.durationsMs ?? [1, 10, 100, 1000];
  const random = rng(options.seed ?? 1);
  const before = markMachine();
  const python = await realPython();

  const dir = Deno.makeTempDirSync({ prefix: "sentry_recall_bench_" });
  const ws = join(dir, "ws");
  Deno.mkdirSync(join(ws, "r"), { recursive: true });
  Deno.mkdirSync(join(ws, "w"));

  const perKind = durations.reduce((sum, d) => sum + (d >= 1000 ? nLong : n), 0);
  const net = new ListenerPool(1, perKind);
  const db = new ListenerPool(2, perKind);
  try {
    const plan: PlannedAction[] = [];
    for (const kind of RECALL_KINDS) {
      let slot = 0;
      for (const d of durations) {
        for (let j = 0; j < (d >= 1000 ? nLong : n); j++, slot++) {
          const i = plan.length;
          const action: PlannedAction = { i, kind, dur: d / 1000, gap: 0 };
          if (kind === "file.read") {
            action.path = join(ws, "r", `read_${i}.txt`);
            Deno.writeTextFileSync(action.path, `file ${i}\n`);
          } else if (kind === "file.write") {
            action.path = join(ws, "w", `write_${i}.txt`);
          } else if (kind === "proc.exec") {
            action.argv0 = `bench-exec-${i}`;
          } else {
            const pool = kind === "net.connect" ? net : db;
            action.host = pool.hosts[slot] as string;
            action.port = pool.port;
          }
          plan.push(action);
        }
      }
    }
    // Shuffle (Fisher-Yates), so every kind and duration meets the same mix of busy and quiet
    // polling; random gaps put each action at a random phase of the scan cycle.
    for (let k = plan.length - 1; k > 0; k--) {
      const r = Math.floor(random() * (k + 1));
      [plan[k], plan[r]] = [plan[r] as PlannedAction, plan[k] as PlannedAction];
    }
    const gapMs = options.gapMs ?? 0.2 * intervalMs;
    for (const a of plan) a.gap = (gapMs + random() * intervalMs) / 1000;

    const planFile = join(dir, "plan.json");
    const heldFile = join(dir, "held.json");
    const agentFile = join(dir, "agent.py");
    Deno.writeTextFileSync(planFile, JSON.stringify(plan));
    Deno.writeTextFileSync(agentFile, AGENT);
    Deno.writeTextFileSync(
      join(dir, "policy.yaml"),
      `extends: default\nmode: monitor\ndatabase: { ports: [${db.port}] }\n`,
    );
    const home = join(dir, "home");
    const started = performance.now();
    const sentry = startSentry([
      "run",
      "--policy",
      join(dir, "policy.yaml"),
      "--workspace",
      ws,
      "--interval",
      String(intervalMs),
      "--",
      python,
      agentFile,
      planFile,
      heldFile,
    ], { home, cwd: ws });
    const status = await sentry.child.status;
    const stderr = await sentry.stderr;
    const wallSeconds = (performance.now() - started) / 1000;
    if (!status.success) throw new Error(`sentry run exited with ${status.code}: ${stderr}`);
    const held = JSON.parse(Deno.readTextFileSync(heldFile)) as Record<string, number>;

    const events = await lastSessionEvents(home);
    const seen = new Set<number>();
    const byKey = new Map<string, number>();
    for (const a of plan) {
      const key = a.kind === "proc.exec"
        ? `proc.exec\0${a.argv0}`
        : a.kind === "file.read" || a.kind === "file.write"
        ? `${a.kind}\0${a.path}`
        : `${a.kind}\0${a.host}:${a.port}`;
      byKey.set(key, a.i);
    }
    let createsSeen = 0;
    for (const e of events) {
      let key: string;
      if (e.kind === "proc.exec") key = `proc.exec\0${e.cmdline[0] ?? ""}`;
      else if (e.kind === "file.read" || e.kind === "file.write") {
        // Only the polling fd sensor counts: inotify reports the write of a new file whatever
        // its duration.
        if (e.sensor !== "fd") continue;
        key = `${e.kind}\0${e.target}`;
      } else if (e.kind === "file.create") {
        if (e.target.startsWith(join(ws, "w") + "/")) createsSeen++;
        continue;
      } else key = `${e.kind}\0${e.target}`;
      const i = byKey.get(key);
      if (i !== undefined) seen.add(i);
    }

    const stats = lastSessionStats(home);
    const proc = stats.sensors.find((s) => s.sensor === "proc");
    const sessionMs = stats.endedAt === null
      ? wallSeconds * 1000
      : Date.parse(stats.endedAt) - Date.parse(stats.startedAt);
    const pollPeriodMs = proc === undefined || proc.polls === 0 ? NaN : sessionMs / proc.polls;
    const blindSpots: Record<string, number> = {};
    for (const s of stats.sensors) {
      for (const b of s.blindSpots) blindSpots[`${s.sensor}.${b.id}`] = b.count;
    }

    const cells: RecallCell[] = [];
    for (const kind of RECALL_KINDS) {
      for (const d of durations) {
        const actions = plan.filter((a) => a.kind === kind && a.dur === d / 1000);
        const heldMs = actions.reduce((sum, a) => sum + (held[String(a.i)] ?? 0), 0) /
          actions.length * 1000;
        cells.push({
          kind,
          durationMs: d,
          actions: actions.length,
          recorded: actions.filter((a) => seen.has(a.i)).length,
          heldMs,
        });
      }
    }
    const goalMet = cells.every((c) => c.durationMs < 2 * intervalMs || c.recorded === c.actions);

    const pct = (a: number, b: number) => `${Math.round((a / b) * 100)}%`;
    console.log(
      `recall by action duration: sentry run --interval ${intervalMs} (busy interval ${
        Math.max(5, Math.round(intervalMs / 2))
      } ms), ${n} actions per kind and duration${
        durations.some((d) => d >= 1000) ? `, ${nLong} for 1 s and longer (bounds the time)` : ""
      }, gaps ${Math.round(gapMs)}-${Math.round(gapMs + intervalMs)} ms`,
    );
    const header = ["kind", ...durations.map(formatDuration)];
    const rows: string[][] = [header];
    for (const kind of RECALL_KINDS) {
      rows.push([
        kind,
        ...cells.filter((c) => c.kind === kind).map((c) =>
          `${c.recorded}/${c.actions} ${pct(c.recorded, c.actions).padStart(4)}`
        ),
      ]);
    }
    const all = durations.map((d) => cells.filter((c) => c.durationMs === d));
    rows.push([
      "all kinds",
      ...all.map((cs) => {
        const r = cs.reduce((s, c) => s + c.recorded, 0);
        const a = cs.reduce((s, c) => s + c.actions, 0);
        return `${r}/${a} ${pct(r, a).padStart(4)}`;
      }),
    ]);
    rows.push([
      `baseline: polling, min(1, d/T)`,
      ...durations.map((d) => `${Math.round(Math.min(1, d / pollPeriodMs) * 100)}%`),
    ]);
    rows.push([
      "mean held (ms)",
      ...all.map((cs) => (cs.reduce((s, c) => s + c.heldMs, 0) / cs.length).toFixed(1)),
    ]);
    console.log(table(rows));
    console.log(
      `measured poll period T: ${pollPeriodMs.toFixed(1)} ms over ${
        (sessionMs / 1000).toFixed(1)
      } s (${proc?.polls ?? 0} scans); inotify saw the create of ${createsSeen}/${
        plan.filter((a) => a.kind === "file.write").length
      } new files (not counted above)`,
    );
    const spots = Object.entries(blindSpots).map(([k, v]) => `${k} ${v}`).join(", ");
    console.log(`blind spots counted by Sentry: ${spots === "" ? "none" : spots}`);
    console.log(
      `goal: 100% at and above two intervals (${2 * intervalMs} ms): ${
        goalMet ? "met" : "NOT met"
      }; wall time ${wallSeconds.toFixed(1)} s`,
    );
    console.log(machineLine(before));
    return { intervalMs, pollPeriodMs, cells, goalMet, blindSpots, wallSeconds };
  } finally {
    net.close();
    db.close();
    Deno.removeSync(dir, { recursive: true });
  }
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  await runRecallBench({
    quick,
    ...(numbers.interval === undefined ? {} : { intervalMs: numbers.interval[0] as number }),
    ...(numbers.n === undefined ? {} : { n: numbers.n[0] as number }),
    ...(numbers["n-long"] === undefined ? {} : { nLong: numbers["n-long"][0] as number }),
    ...(numbers.durations === undefined ? {} : { durationsMs: numbers.durations }),
    ...(numbers.gap === undefined ? {} : { gapMs: numbers.gap[0] as number }),
  });
}
