import type { ProcPlatform } from "./platform.ts";
import { followScans, type ProcSensor } from "./proc_sensor.ts";
import { type Sensor, type SensorEvent, type SensorStats, StatsCounter } from "./sensor.ts";

/** The resource sensor's settings. */
export interface ResourceSensorOptions {
  tree: ProcSensor;
  platform: ProcPlatform;
  /** Tree CPU, in percent of one core, above which CPU is reported. Null: not watched. */
  cpuPercent: number | null;
  /** How long CPU must stay above the limit before it is reported, in seconds. */
  cpuSeconds: number;
  /** Tree resident memory, in MB, above which memory is reported. Null: not watched. */
  memoryMb: number | null;
  /** The sliding window over which CPU is averaged, in milliseconds. */
  windowMs?: number;
}

/**
 * Measures the whole tree's CPU (percent of one core, over a sliding window) and resident
 * memory after each scan. Reports `resource.cpu` when CPU stays above the limit for the
 * sustained time, and `resource.memory` when memory crosses its limit; each is reported again
 * only after it has fallen back below. CPU of processes that exit between scans is lost, and
 * counted as a blind spot.
 */
export class ResourceSensor implements Sensor {
  readonly name = "resource";
  readonly #options: ResourceSensorOptions;
  readonly #counter = new StatsCounter("resource");
  readonly #lastTicks = new Map<number, number>();
  readonly #samples: { t: number; ticks: number }[] = [];
  #total = 0;
  #aboveSince: number | null = null;
  #cpuReported = false;
  #memReported = false;
  #peakPercent = 0;
  #peakMb = 0;
  #emit: ((event: SensorEvent) => void) | null = null;

  /** Sets up the sensor. */
  constructor(options: ResourceSensorOptions) {
    this.#options = options;
  }

  /** Hooks into the tree's scans until the signal aborts. */
  start(emit: (event: SensorEvent) => void, signal: AbortSignal): Promise<void> {
    this.#emit = emit;
    return followScans(this.#options.tree, signal, (now) => this.poll(now));
  }

  /** The sensor's counters, with the peaks seen. */
  stats(): SensorStats & { peakCpuPercent: number; peakMemoryMb: number } {
    return {
      ...this.#counter.snapshot(),
      peakCpuPercent: this.#peakPercent,
      peakMemoryMb: this.#peakMb,
    };
  }

  /** The CPU percent over the window and the memory in MB, as of the last poll. */
  current(): { cpuPercent: number; memoryMb: number } {
    return { cpuPercent: this.#percent(), memoryMb: this.#memoryMb() };
  }

  /** Samples the tree once. */
  poll(now: number): void {
    const { tree } = this.#options;
    this.#counter.counters.polls++;
    for (const pid of this.#lastTicks.keys()) {
      if (!tree.members.has(pid)) this.#lastTicks.delete(pid);
    }
    for (const m of tree.members.values()) {
      const ticks = m.stat.cpuTicks;
      const before = this.#lastTicks.get(m.pid);
      // A process first seen brings the CPU it used before the scan saw it.
      const delta = before === undefined ? ticks : ticks - before;
      if (delta > 0) this.#total += delta;
      this.#lastTicks.set(m.pid, ticks);
    }
    const windowMs = this.#options.windowMs ?? 1000;
    this.#samples.push({ t: now, ticks: this.#total });
    while (this.#samples.length > 2 && now - (this.#samples[1]?.t ?? now) >= windowMs) {
      this.#samples.shift();
    }
    const percent = this.#percent();
    const mb = this.#memoryMb();
    this.#peakPercent = Math.max(this.#peakPercent, percent);
    this.#peakMb = Math.max(this.#peakMb, mb);
    this.#checkCpu(percent, now);
    this.#checkMemory(mb);
  }

  #percent(): number {
    const first = this.#samples[0];
    const last = this.#samples[this.#samples.length - 1];
    if (first === undefined || last === undefined || last.t - first.t < 200) return 0;
    const seconds = (last.ticks - first.ticks) / this.#options.platform.clockTicks();
    return Math.round((seconds / ((last.t - first.t) / 1000)) * 1000) / 10;
  }

  #memoryMb(): number {
    let bytes = 0;
    for (const m of this.#options.tree.members.values()) bytes += m.stat.rssBytes;
    return Math.round(bytes / 1024 / 1024);
  }

  #checkCpu(percent: number, now: number): void {
    const limit = this.#options.cpuPercent;
    if (limit === null) return;
    if (percent <= limit) {
      this.#aboveSince = null;
      this.#cpuReported = false;
      return;
    }
    this.#aboveSince ??= now;
    const sustained = (now - this.#aboveSince) / 1000;
    if (!this.#cpuReported && sustained >= this.#options.cpuSeconds) {
      this.#cpuReported = true;
      this.#send("resource.cpu", {
        percent,
        limit_percent: limit,
        sustained_seconds: Math.round(sustained * 10) / 10,
        processes: this.#options.tree.members.size,
      });
    }
  }

  #checkMemory(mb: number): void {
    const limit = this.#options.memoryMb;
    if (limit === null) return;
    if (mb <= limit) {
      this.#memReported = false;
      return;
    }
    if (!this.#memReported) {
      this.#memReported = true;
      this.#send("resource.memory", {
        mb,
        limit_mb: limit,
        processes: this.#options.tree.members.size,
      });
    }
  }

  #send(kind: "resource.cpu" | "resource.memory", detail: Record<string, unknown>): void {
    const { tree } = this.#options;
    const root = tree.members.get(tree.rootPid);
    this.#counter.counters.emitted++;
    this.#emit?.({
      pid: tree.rootPid,
      ppid: root?.ppid ?? null,
      exe: root?.exe ?? null,
      cmdline: root?.cmdline ?? [],
      kind,
      target: "tree",
      detail,
      sensor: this.name,
    });
  }
}
