import type { ProcPlatform } from "./platform.ts";
import { followScans, type ProcSensor } from "./proc_sensor.ts";
import { type Sensor, type SensorEvent, type SensorStats, StatsCounter } from "./sensor.ts";

/** Tree CPU, in percent of one core, above which a CPU spike begins (the seed's 90 %). */
export const CPU_SPIKE_PERCENT = 90;
/** How long a CPU spike must last to be journaled, in seconds. */
export const CPU_SPIKE_SECONDS = 1;
/** Tree resident memory, in MB, above which a memory excursion begins (the seed's 2 GB). */
export const MEMORY_THRESHOLD_MB = 2048;
/**
 * How long readings must stay at or below their threshold before a spike or excursion ends, in
 * milliseconds: the 1 s CPU window plus 1 s, so that a pause in the load shorter than about a
 * second (a busy neighbour, a build step waiting on disk) does not split one spike in two.
 */
export const END_AFTER_MS = 2000;

/** The resource sensor's settings. */
export interface ResourceSensorOptions {
  tree: ProcSensor;
  platform: ProcPlatform;
  /**
   * The policy's `limits.cpu_percent`, or null when the CPU monitor is off (nothing is watched).
   * It decides nothing here except when a spike is journaled early: see {@link ResourceSensor}.
   */
  cpuPercent: number | null;
  /** The policy's `limits.cpu_seconds`. */
  cpuSeconds: number;
  /** The policy's `limits.memory_mb`, or null when the memory monitor is off (nothing is watched). */
  memoryMb: number | null;
  /** The sliding window over which CPU is averaged, in milliseconds (1000). */
  windowMs?: number;
  /** Overrides {@link CPU_SPIKE_PERCENT} (tests). */
  spikePercent?: number;
  /** Overrides {@link CPU_SPIKE_SECONDS} (tests). */
  spikeSeconds?: number;
  /** Overrides {@link MEMORY_THRESHOLD_MB} (tests). */
  memoryThresholdMb?: number;
  /** Overrides {@link END_AFTER_MS} (tests). */
  endAfterMs?: number;
}

/** The tree's cumulative CPU ticks at one scan. */
interface Sample {
  t: number;
  ticks: number;
}

/** One CPU reading: the tree's mean percent over the window `[t - span, t]`. */
interface CpuReading {
  t: number;
  percent: number;
  span: number;
  /** The samples of its window, kept to date the start of a stretch that begins with it. */
  window: readonly Sample[];
}

/** A stretch of CPU readings above a level (the spike threshold, or the policy's limit). */
interface CpuStretch {
  first: CpuReading;
  /** The tree's CPU over the window before the first reading's: the level the load rose from. */
  before: number;
  last: CpuReading;
  peak: number;
  /** The highest reading within a window of the first: the level the load rose to. */
  risePeak: number;
  /** The lowest reading in it (every one is above its level). */
  lowest: number;
}

/** A CPU spike, with the dip that may end it. */
interface Spike extends CpuStretch {
  /** When the readings fell to the threshold or below, if they have since the last above. */
  belowSince: number | null;
  /** Journaled already (early, on crossing the policy's limit): not journaled again at its end. */
  reported: boolean;
  /** The most processes the tree had during it. */
  processes: number;
}

/** A memory excursion above the threshold, with its time-weighted mean. */
interface Excursion {
  start: number;
  last: number;
  sum: number;
  weight: number;
  peak: number;
  belowSince: number | null;
  /** The readings of the dip since `belowSince`: part of the mean only if it rises again. */
  dipSum: number;
  dipWeight: number;
  reported: boolean;
  processes: number;
}

/** The figures of a CPU stretch, as journaled. */
interface StretchFigures {
  start: number;
  end: number;
  percent: number;
}

/**
 * Measures the whole tree's CPU (percent of one core, over a sliding window) and resident memory
 * after each scan, and journals what the seed asks for, whatever the policy's limits:
 * - `resource.cpu` once per spike: CPU above 90 % of a core ({@link CPU_SPIKE_PERCENT}) for at
 *   least 1 s ({@link CPU_SPIKE_SECONDS}), with its mean and peak percent, its duration and its
 *   start, when it ends (CPU at or below 90 % for {@link END_AFTER_MS}, or the sensor stops).
 * - `resource.memory` once per excursion above 2048 MB ({@link MEMORY_THRESHOLD_MB}), with its
 *   time-weighted mean and its peak in MB, when it ends likewise.
 *
 * CPU is read as a mean over a sliding 1 s window, which lags the load. A spike's edges are
 * dated by reading its first and last windows above the threshold as a step between the level
 * of the window outside it and the highest reading within a window inside it (from idle to
 * 100 %, a window at 95 % holds 0.95 s of load), and its mean is the tree's CPU ticks between
 * those edges over the time between them.
 *
 * The policy's limits only bring an event forward, so that a response is not delayed: a spike
 * that stays above `limits.cpu_percent` for `limits.cpu_seconds` is journaled at that moment,
 * marked `ongoing`, with the mean, start and duration of that stretch above the limit; memory
 * above `limits.memory_mb` likewise, with the reading that crossed it. Such a spike is not
 * journaled again at its end. A limit below a fixed threshold lowers the threshold to it, so
 * that no limit is out of sight. The verdict is the policy engine's alone.
 *
 * CPU that a process used between the last scan and its exit is lost: each such exit is counted
 * as the `cpu_after_last_scan` blind spot.
 */
export class ResourceSensor implements Sensor {
  readonly name = "resource";
  readonly #options: ResourceSensorOptions;
  readonly #counter = new StatsCounter("resource");
  readonly #lastTicks = new Map<number, number>();
  /** Recent samples: a window, plus the end delay and a window more to date a spike's end. */
  readonly #history: Sample[] = [];
  /** The readings over the same time. */
  readonly #readings: { t: number; percent: number }[] = [];
  readonly #windowMs: number;
  readonly #spikePercent: number;
  readonly #spikeMs: number;
  readonly #memoryThreshold: number;
  readonly #endAfterMs: number;
  #total = 0;
  #lastPoll: number | null = null;
  #cpu: Spike | null = null;
  /** The current unbroken stretch of the spike above the policy's CPU limit. */
  #overLimit: CpuStretch | null = null;
  #memory: Excursion | null = null;
  #peakPercent = 0;
  #peakMb = 0;
  #emit: ((event: SensorEvent) => void) | null = null;
  /** The root as last seen: an event journaled at the stop names it even after it exited. */
  #root: { ppid: number | null; exe: string | null; cmdline: string[] } = {
    ppid: null,
    exe: null,
    cmdline: [],
  };

  /** Sets up the sensor. */
  constructor(options: ResourceSensorOptions) {
    this.#options = options;
    const lower = (fixed: number, limit: number | null) =>
      limit === null ? fixed : Math.min(fixed, limit);
    this.#windowMs = options.windowMs ?? 1000;
    this.#spikePercent = lower(options.spikePercent ?? CPU_SPIKE_PERCENT, options.cpuPercent);
    this.#spikeMs = lower(options.spikeSeconds ?? CPU_SPIKE_SECONDS, options.cpuSeconds) * 1000;
    this.#memoryThreshold = lower(
      options.memoryThresholdMb ?? MEMORY_THRESHOLD_MB,
      options.memoryMb,
    );
    this.#endAfterMs = options.endAfterMs ?? END_AFTER_MS;
  }

  /**
   * Hooks into the tree's scans until the signal aborts, then journals the spike or excursion
   * still under way.
   */
  async start(emit: (event: SensorEvent) => void, signal: AbortSignal): Promise<void> {
    this.#emit = emit;
    await followScans(this.#options.tree, signal, (now) => this.poll(now));
    this.#finish();
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
    const last = this.#history.at(-1);
    return {
      cpuPercent: last === undefined ? 0 : this.#reading(last.t).percent,
      memoryMb: this.#memoryMb(),
    };
  }

  /** Samples the tree once, at `now` (the scan's time, in ms). */
  poll(now: number): void {
    const { tree } = this.#options;
    this.#counter.counters.polls++;
    for (const pid of this.#lastTicks.keys()) {
      if (!tree.members.has(pid)) {
        this.#lastTicks.delete(pid);
        this.#counter.blind(
          "cpu_after_last_scan",
          "processes of the tree that exited: the CPU each used after the last scan is not counted (up to one interval each)",
        );
      }
    }
    for (const m of tree.members.values()) {
      const ticks = m.stat.cpuTicks;
      const before = this.#lastTicks.get(m.pid);
      // A process first seen brings the CPU it used before the scan saw it.
      const delta = before === undefined ? ticks : ticks - before;
      // Sentry's launcher (the root before its exec) is not the agent's CPU.
      if (delta > 0 && !tree.isLauncher(m)) this.#total += delta;
      this.#lastTicks.set(m.pid, ticks);
    }
    this.#history.push({ t: now, ticks: this.#total });
    const keepMs = 2 * this.#windowMs + this.#endAfterMs;
    while (this.#history.length > 2 && now - (this.#history[1]?.t ?? now) >= keepMs) {
      this.#history.shift();
    }
    while (this.#readings.length > 0 && now - (this.#readings[0]?.t ?? now) >= keepMs) {
      this.#readings.shift();
    }
    const root = tree.members.get(tree.rootPid);
    if (root !== undefined) this.#root = { ppid: root.ppid, exe: root.exe, cmdline: root.cmdline };
    const weight = this.#lastPoll === null ? 0 : Math.max(0, now - this.#lastPoll);
    this.#lastPoll = now;
    const reading = this.#reading(now);
    this.#readings.push({ t: now, percent: reading.percent });
    const mb = this.#memoryMb();
    this.#peakPercent = Math.max(this.#peakPercent, reading.percent);
    this.#peakMb = Math.max(this.#peakMb, mb);
    if (this.#options.cpuPercent !== null) this.#checkCpu(reading);
    if (this.#options.memoryMb !== null) this.#checkMemory(mb, { now, weight });
  }

  /** Journals the spike and the excursion still under way (the sensor stops). */
  #finish(): void {
    if (this.#cpu !== null) this.#endCpu(this.#cpu, this.#history.at(-1)?.t ?? 0);
    if (this.#memory !== null) this.#endMemory(this.#memory);
    this.#cpu = null;
    this.#overLimit = null;
    this.#memory = null;
  }

  /** The CPU reading at `now`: the mean over the last window (0 until 200 ms of samples). */
  #reading(now: number): CpuReading {
    const h = this.#history;
    let i = h.length - 1;
    while (i > 0 && (h[i]?.t ?? 0) > now - this.#windowMs) i--;
    const first = h[i];
    const last = h[h.length - 1];
    const window = h.slice(i);
    if (first === undefined || last === undefined || last.t - first.t < 200) {
      return { t: now, percent: 0, span: 0, window };
    }
    const span = last.t - first.t;
    const percent = round1(this.#percentOver(last.ticks - first.ticks, span));
    return { t: now, percent, span, window };
  }

  #percentOver(ticks: number, ms: number): number {
    return ms <= 0 ? 0 : ((ticks / this.#options.platform.clockTicks()) / (ms / 1000)) * 100;
  }

  #memoryMb(): number {
    let bytes = 0;
    for (const m of this.#options.tree.members.values()) {
      if (!this.#options.tree.isLauncher(m)) bytes += m.stat.rssBytes;
    }
    return Math.round(bytes / 1024 / 1024);
  }

  #checkCpu(reading: CpuReading): void {
    const limit = this.#options.cpuPercent ?? Infinity;
    const processes = this.#options.tree.members.size;
    let spike = this.#cpu;
    if (reading.percent > this.#spikePercent) {
      if (spike === null) {
        spike = this.#cpu = {
          ...this.#newStretch(reading),
          belowSince: null,
          reported: false,
          processes,
        };
      } else {
        extend(spike, reading);
        spike.belowSince = null;
        spike.processes = Math.max(spike.processes, processes);
      }
    } else if (spike !== null) {
      spike.belowSince ??= reading.t;
      if (reading.t - spike.belowSince >= this.#endAfterMs) {
        this.#endCpu(spike, reading.t);
        this.#cpu = spike = null;
      }
    }
    if (spike === null || reading.percent <= limit) {
      this.#overLimit = null;
      return;
    }
    if (this.#overLimit === null) this.#overLimit = this.#newStretch(reading);
    else extend(this.#overLimit, reading);
    const over = this.#overLimit;
    const start = startOf(over);
    const { cpuSeconds } = this.#options;
    if (spike.reported || reading.t - start < cpuSeconds * 1000) return;
    // Over the policy's limit for its time: journal now, so that the response is not delayed.
    // Both are still going on: they end now.
    spike.reported = true;
    const figures = this.#figures(over, { start, end: reading.t });
    const whole = this.#figures(spike, { start: startOf(spike), end: reading.t });
    this.#send("resource.cpu", {
      // Every reading of the stretch was above the limit, for the limit's time: rounding must
      // not bring the figures journaled under it.
      percent: round1(Math.max(figures.percent, over.lowest)),
      peak_percent: spike.peak,
      duration_seconds: Math.max(seconds(figures.end - figures.start), cpuSeconds),
      started: new Date(figures.start).toISOString(),
      ongoing: true,
      limit_percent: limit,
      limit_seconds: cpuSeconds,
      spike_started: new Date(whole.start).toISOString(),
      spike_seconds: seconds(whole.end - whole.start),
      threshold_percent: this.#spikePercent,
      processes: spike.processes,
    });
  }

  #endCpu(spike: Spike, now: number): void {
    if (spike.reported) return;
    const figures = this.#figures(spike, { start: startOf(spike), end: this.#endOf(spike, now) });
    if (figures.end - figures.start < this.#spikeMs) return;
    this.#send("resource.cpu", {
      percent: round1(figures.percent),
      peak_percent: spike.peak,
      duration_seconds: seconds(figures.end - figures.start),
      started: new Date(figures.start).toISOString(),
      ongoing: false,
      threshold_percent: this.#spikePercent,
      processes: spike.processes,
    });
  }

  #newStretch(reading: CpuReading): CpuStretch {
    const start = reading.t - reading.span;
    return {
      first: reading,
      before: this.#meanBetween(start - this.#windowMs, start),
      last: reading,
      peak: reading.percent,
      risePeak: reading.percent,
      lowest: reading.percent,
    };
  }

  /**
   * When the load ended: the last window above the level, read as a step down from the highest
   * reading of the window before it to the level of the window after it (0 when the sensor
   * stops before there is one).
   */
  #endOf(s: CpuStretch, now: number): number {
    const { last } = s;
    const after = this.#meanBetween(last.t, Math.min(now, last.t + this.#windowMs));
    let level = last.percent;
    for (const r of this.#readings) {
      if (r.t >= last.t - this.#windowMs && r.t <= last.t) level = Math.max(level, r.percent);
    }
    return last.t - last.span + last.span * stepFraction(last.percent, { from: after, to: level });
  }

  /** The tree's mean CPU between two times of the recent history (0 over less than 200 ms). */
  #meanBetween(from: number, to: number): number {
    const first = this.#history[0];
    if (first === undefined) return 0;
    const a = Math.max(from, first.t);
    if (to - a < 200) return 0;
    return this.#percentOver(ticksAt(this.#history, to) - ticksAt(this.#history, a), to - a);
  }

  /** The mean CPU between two edges of a stretch, from the tree's ticks. */
  #figures(stretch: CpuStretch, edges: { start: number; end: number }): StretchFigures {
    const start = edges.start;
    const end = Math.max(start, edges.end);
    // The start lies in the first reading's window; the end in the recent history.
    const from = ticksAt(stretch.first.window, start);
    const to = ticksAt(this.#history, end);
    const percent = end > start ? this.#percentOver(to - from, end - start) : stretch.peak;
    return { start, end, percent };
  }

  #checkMemory(mb: number, at: { now: number; weight: number }): void {
    const limit = this.#options.memoryMb ?? Infinity;
    const processes = this.#options.tree.members.size;
    let excursion = this.#memory;
    if (mb > this.#memoryThreshold) {
      if (excursion === null) {
        excursion = this.#memory = {
          start: at.now,
          last: at.now,
          sum: mb * at.weight,
          weight: at.weight,
          peak: mb,
          belowSince: null,
          dipSum: 0,
          dipWeight: 0,
          reported: false,
          processes,
        };
      } else {
        // It rose again within the end delay: the dip is part of the excursion.
        excursion.last = at.now;
        excursion.sum += excursion.dipSum + mb * at.weight;
        excursion.weight += excursion.dipWeight + at.weight;
        excursion.peak = Math.max(excursion.peak, mb);
        excursion.belowSince = null;
        excursion.dipSum = 0;
        excursion.dipWeight = 0;
        excursion.processes = Math.max(excursion.processes, processes);
      }
    } else if (excursion !== null) {
      excursion.belowSince ??= at.now;
      if (at.now - excursion.belowSince >= this.#endAfterMs) {
        this.#endMemory(excursion);
        this.#memory = excursion = null;
      } else {
        excursion.dipSum += mb * at.weight;
        excursion.dipWeight += at.weight;
      }
    }
    if (excursion === null || excursion.reported || mb <= limit) return;
    excursion.reported = true;
    this.#send("resource.memory", {
      mb,
      peak_mb: excursion.peak,
      duration_seconds: seconds(excursion.last - excursion.start),
      started: new Date(excursion.start).toISOString(),
      ongoing: true,
      limit_mb: limit,
      threshold_mb: this.#memoryThreshold,
      processes: excursion.processes,
    });
  }

  #endMemory(excursion: Excursion): void {
    if (excursion.reported) return;
    this.#send("resource.memory", {
      mb: Math.round(excursion.weight > 0 ? excursion.sum / excursion.weight : excursion.peak),
      peak_mb: excursion.peak,
      duration_seconds: seconds(excursion.last - excursion.start),
      started: new Date(excursion.start).toISOString(),
      ongoing: false,
      threshold_mb: this.#memoryThreshold,
      processes: excursion.processes,
    });
  }

  #send(kind: "resource.cpu" | "resource.memory", detail: Record<string, unknown>): void {
    const { tree } = this.#options;
    this.#counter.counters.emitted++;
    this.#emit?.({
      pid: tree.rootPid,
      ...this.#root,
      kind,
      target: "tree",
      detail,
      sensor: this.name,
    });
  }
}

function extend(stretch: CpuStretch, reading: CpuReading): void {
  // Only the first reading's window is needed later.
  stretch.last = { ...reading, window: [] };
  stretch.peak = Math.max(stretch.peak, reading.percent);
  if (reading.t - stretch.first.t <= stretch.first.span) {
    stretch.risePeak = Math.max(stretch.risePeak, reading.percent);
  }
  stretch.lowest = Math.min(stretch.lowest, reading.percent);
}

/**
 * When the load began: the first window above the level, read as a step up from the level of
 * the window before it to the highest reading of the window after it.
 */
function startOf(s: CpuStretch): number {
  const { first } = s;
  return first.t - first.span * stepFraction(first.percent, { from: s.before, to: s.risePeak });
}

/**
 * The part of a window that a step from one level to another filled, given the window's mean
 * (from idle to 100 %, a mean of 95 % is 0.95 of the window). Clamped to [0, 1].
 */
function stepFraction(mean: number, step: { from: number; to: number }): number {
  const rise = step.to - step.from;
  if (rise <= 0) return 1;
  return Math.min(1, Math.max(0, (mean - step.from) / rise));
}

/** The cumulative ticks at time `t`, interpolated between samples (clamped to their range). */
function ticksAt(samples: readonly Sample[], t: number): number {
  const first = samples[0];
  if (first === undefined) return 0;
  if (t <= first.t) return first.ticks;
  for (let i = 1; i < samples.length; i++) {
    const b = samples[i] as Sample;
    if (t <= b.t) {
      const a = samples[i - 1] as Sample;
      return b.t === a.t ? b.ticks : a.ticks + (b.ticks - a.ticks) * ((t - a.t) / (b.t - a.t));
    }
  }
  return (samples[samples.length - 1] as Sample).ticks;
}

function round1(n: number): number {
  return Math.round(n * 10) / 10;
}

function seconds(ms: number): number {
  return Math.round(ms / 100) / 10;
}
