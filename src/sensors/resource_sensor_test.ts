import assert from "node:assert/strict";
import type { ProcPlatform, ProcStatView } from "./platform.ts";
import { ProcSensor } from "./proc_sensor.ts";
import {
  CPU_SPIKE_PERCENT,
  CPU_SPIKE_SECONDS,
  END_AFTER_MS,
  MEMORY_THRESHOLD_MB,
  ResourceSensor,
  type ResourceSensorOptions,
} from "./resource_sensor.ts";
import type { SensorEvent } from "./sensor.ts";

const ROOT = 4000;
const HZ = 100;
const MB = 1024 * 1024;
/** The scan interval of these tests, in ms. */
const STEP = 50;

/** A /proc of a few processes whose CPU ticks and memory the test drives. */
class FakeProc implements ProcPlatform {
  readonly procs = new Map<number, ProcStatView>();

  add(pid: number, ppid: number, rssMb = 10): void {
    this.procs.set(pid, {
      pid,
      comm: "python3",
      state: "R",
      ppid,
      pgrp: ROOT,
      session: ROOT,
      cpuTicks: 0,
      startTicks: pid,
      rssBytes: rssMb * MB,
    });
  }

  /** Runs a process at `percent` of a core for `ms`. */
  burn(pid: number, percent: number, ms: number): void {
    const s = this.procs.get(pid);
    if (s !== undefined) s.cpuTicks += (percent / 100) * (ms / 1000) * HZ;
  }

  rss(pid: number, mb: number): void {
    const s = this.procs.get(pid);
    if (s !== undefined) s.rssBytes = mb * MB;
  }

  listPids(): number[] {
    return [...this.procs.keys()];
  }
  readStat(pid: number): ProcStatView | null {
    const s = this.procs.get(pid);
    // Ticks in /proc are whole numbers.
    return s === undefined ? null : { ...s, cpuTicks: Math.floor(s.cpuTicks) };
  }
  readCmdline(pid: number): string[] | null {
    return this.procs.has(pid) ? ["python3", "agent.py"] : null;
  }
  readExe(pid: number): string | null {
    return this.procs.has(pid) ? "/usr/bin/python3" : null;
  }
  readCwd(): string | null {
    return "/work";
  }
  listFds(): { ok: false; reason: "gone" } {
    return { ok: false, reason: "gone" };
  }
  readFdFlags(): null {
    return null;
  }
  readSockets(): [] {
    return [];
  }
  lastPid(): number | null {
    return null;
  }
  tcpActiveOpens(): number | null {
    return null;
  }
  clockTicks(): number {
    return HZ;
  }
  reap(): null {
    return null;
  }
}

/** A tree on a fake /proc with an injected clock, and a resource sensor on it. */
class Rig {
  readonly proc = new FakeProc();
  readonly events: SensorEvent[] = [];
  readonly tree: ProcSensor;
  readonly sensor: ResourceSensor;
  readonly #abort = new AbortController();
  readonly #running: Promise<void>;
  /** The clock, in ms since the epoch. */
  now = Date.parse("2025-01-01T00:00:00Z");

  constructor(limits: Partial<ResourceSensorOptions>) {
    this.proc.add(ROOT, 1);
    this.tree = new ProcSensor({
      rootPid: ROOT,
      intervalMs: STEP,
      platform: this.proc,
      now: () => this.now,
    });
    this.sensor = new ResourceSensor({
      tree: this.tree,
      platform: this.proc,
      cpuPercent: 800,
      cpuSeconds: 300,
      memoryMb: 8192,
      ...limits,
    });
    this.#running = this.sensor.start((e) => this.events.push(e), this.#abort.signal);
    this.tree.scan();
  }

  /** Runs the tree for `ms`, scanning every STEP, with `pids` each at `percent` of a core. */
  run(ms: number, percent: number, pids: readonly number[] = [ROOT]): void {
    for (let t = 0; t < ms; t += STEP) {
      for (const pid of pids) this.proc.burn(pid, percent, STEP);
      this.now += STEP;
      this.tree.scan();
    }
  }

  /** Stops the sensor, as the session does. */
  async stop(): Promise<void> {
    this.#abort.abort();
    await this.#running;
  }

  ofKind(kind: string): SensorEvent[] {
    return this.events.filter((e) => e.kind === kind);
  }
}

/** A number field of an event's detail. */
function num(e: SensorEvent | undefined, key: string): number {
  const v = e?.detail[key];
  assert.equal(typeof v, "number", `detail.${key} of ${JSON.stringify(e?.detail)}`);
  return v as number;
}

Deno.test("the fixed thresholds are the seed's: 90 % of a core for 1 s, 2048 MB", () => {
  assert.equal(CPU_SPIKE_PERCENT, 90);
  assert.equal(CPU_SPIKE_SECONDS, 1);
  assert.equal(MEMORY_THRESHOLD_MB, 2048);
  assert.equal(END_AFTER_MS, 2000);
});

Deno.test("`ResourceSensor` journals a 4 s spike of one core once, at its end, under an 800 % limit", async () => {
  const rig = new Rig({ cpuPercent: 800, cpuSeconds: 300 });
  rig.run(2000, 2);
  const busyFrom = rig.now;
  rig.run(4000, 100);
  const busyTo = rig.now;
  assert.deepEqual(rig.ofKind("resource.cpu"), [], "nothing while the spike goes on");
  rig.run(1900, 2);
  assert.deepEqual(rig.ofKind("resource.cpu"), [], "not before the end delay");
  rig.run(1000, 2);
  const cpu = rig.ofKind("resource.cpu");
  assert.equal(cpu.length, 1, JSON.stringify(cpu));
  const [e] = cpu;
  assert.equal(e?.target, "tree");
  assert.equal(e?.pid, ROOT);
  assert.equal(e?.exe, "/usr/bin/python3");
  assert.equal(e?.detail.ongoing, false);
  assert.equal(e?.detail.threshold_percent, 90);
  assert.ok(num(e, "percent") >= 99 && num(e, "percent") <= 100.5, JSON.stringify(e?.detail));
  assert.equal(num(e, "peak_percent"), 100);
  // The 1 s window lags the load; the edges are dated back through it.
  const duration = num(e, "duration_seconds");
  assert.ok(duration >= 3.9 && duration <= 4.1, `duration ${duration}`);
  const started = Date.parse(String(e?.detail.started));
  assert.ok(Math.abs(started - busyFrom) <= 60, `started ${e?.detail.started}`);
  assert.ok(Math.abs(started + duration * 1000 - busyTo) <= 110);
  assert.equal(e?.detail.limit_percent, undefined, "the policy's limit played no part");
  await rig.stop();
  assert.equal(rig.ofKind("resource.cpu").length, 1, "not again at the stop");
  assert.equal(rig.sensor.stats().emitted, 1);
});

Deno.test("`ResourceSensor` journals a spike still under way when it stops, and none shorter than 1 s", async () => {
  const rig = new Rig({});
  rig.run(1000, 0);
  // Half a second flat out: the 1 s window never passes 90 %.
  rig.run(500, 100);
  rig.run(2000, 0);
  assert.deepEqual(rig.ofKind("resource.cpu"), []);
  rig.run(2500, 100);
  await rig.stop();
  const cpu = rig.ofKind("resource.cpu");
  assert.equal(cpu.length, 1, JSON.stringify(cpu));
  assert.equal(cpu[0]?.detail.ongoing, false);
  const duration = num(cpu[0], "duration_seconds");
  assert.ok(duration >= 2.4 && duration <= 2.6, `duration ${duration}`);
});

Deno.test("`ResourceSensor` keeps a spike whole across a dip shorter than the end delay, and measures it on a noisy clock", () => {
  const rig = new Rig({});
  // A scheduler's jitter: scans 30 to 70 ms apart, the load at 92 to 100 %.
  let seed = 7;
  const random = () => (seed = (seed * 48271) % 2147483647) / 2147483647;
  const noisy = (ms: number, level: number) => {
    for (let t = 0; t < ms;) {
      const step = 30 + Math.floor(random() * 40);
      rig.proc.burn(ROOT, level === 0 ? 0 : level - random() * 8, step);
      rig.now += step;
      t += step;
      rig.tree.scan();
    }
  };
  noisy(1500, 0);
  const from = rig.now;
  noisy(2000, 100);
  noisy(800, 0);
  noisy(2000, 100);
  const to = rig.now;
  noisy(2500, 0);
  const cpu = rig.ofKind("resource.cpu");
  assert.equal(cpu.length, 1, JSON.stringify(cpu));
  const duration = num(cpu[0], "duration_seconds");
  assert.ok(Math.abs(duration * 1000 - (to - from)) <= 200, `duration ${duration}`);
  // 4 s of load at about 96 % over 4.8 s.
  const percent = num(cpu[0], "percent");
  assert.ok(percent > 76 && percent < 84, `percent ${percent}`);
  assert.ok(num(cpu[0], "peak_percent") > 90);
});

Deno.test("`ResourceSensor` journals two spikes apart by more than the end delay as two events", () => {
  const rig = new Rig({});
  rig.run(1000, 0);
  rig.run(2000, 100);
  rig.run(1500, 0);
  rig.run(2000, 150, [ROOT]);
  rig.run(3500, 0);
  const cpu = rig.ofKind("resource.cpu");
  assert.equal(cpu.length, 2, JSON.stringify(cpu));
  assert.ok(Math.abs(num(cpu[0], "percent") - 100) <= 1, JSON.stringify(cpu[0]?.detail));
  assert.ok(Math.abs(num(cpu[1], "percent") - 150) <= 2, JSON.stringify(cpu[1]?.detail));
  assert.ok(Math.abs(num(cpu[1], "duration_seconds") - 2) <= 0.1);
});

Deno.test("`ResourceSensor` journals a spike early, marked ongoing, once it passes the policy's limit for its time", async () => {
  const rig = new Rig({ cpuPercent: 150, cpuSeconds: 2 });
  rig.proc.add(ROOT + 1, ROOT);
  rig.run(1000, 0);
  const spikeFrom = rig.now;
  // One core: a spike, under the limit.
  rig.run(2000, 100, [ROOT]);
  assert.deepEqual(rig.ofKind("resource.cpu"), []);
  // Two cores: over the limit.
  const overFrom = rig.now;
  rig.run(1500, 100, [ROOT, ROOT + 1]);
  assert.deepEqual(rig.ofKind("resource.cpu"), [], "not yet over the limit for 2 s");
  rig.run(1000, 100, [ROOT, ROOT + 1]);
  const early = rig.ofKind("resource.cpu");
  assert.equal(early.length, 1, JSON.stringify(early));
  const [e] = early;
  assert.equal(e?.detail.ongoing, true);
  assert.equal(e?.detail.limit_percent, 150);
  assert.equal(e?.detail.limit_seconds, 2);
  assert.ok(Math.abs(num(e, "percent") - 200) <= 2, JSON.stringify(e?.detail));
  assert.ok(num(e, "duration_seconds") >= 2);
  const started = Date.parse(String(e?.detail.started));
  assert.ok(Math.abs(started - overFrom) <= 60, "the stretch over the limit");
  assert.ok(Math.abs(Date.parse(String(e?.detail.spike_started)) - spikeFrom) <= 60);
  assert.ok(num(e, "spike_seconds") > num(e, "duration_seconds"), "the spike began before");
  assert.ok(rig.now - overFrom < 3000, "journaled as soon as the limit's time was reached");
  // The same spike goes on and ends: not journaled again.
  rig.run(3000, 100, [ROOT, ROOT + 1]);
  rig.run(2000, 0);
  await rig.stop();
  assert.equal(rig.ofKind("resource.cpu").length, 1, JSON.stringify(rig.ofKind("resource.cpu")));
});

Deno.test("`ResourceSensor` lowers a threshold to a policy limit below it, so that the limit can fire", () => {
  const rig = new Rig({ cpuPercent: 50, cpuSeconds: 1 });
  rig.run(1000, 0);
  rig.run(3000, 70);
  const cpu = rig.ofKind("resource.cpu");
  assert.equal(cpu.length, 1, JSON.stringify(cpu));
  assert.equal(cpu[0]?.detail.ongoing, true);
  assert.equal(cpu[0]?.detail.threshold_percent, 50);
  assert.ok(num(cpu[0], "percent") > 50 && num(cpu[0], "percent") < 75);
});

Deno.test("`ResourceSensor` watches no CPU and no memory when their monitors are off", async () => {
  const rig = new Rig({ cpuPercent: null, memoryMb: null });
  rig.proc.rss(ROOT, 3000);
  rig.run(3000, 100);
  await rig.stop();
  assert.deepEqual(rig.events, []);
  assert.ok(rig.sensor.stats().peakCpuPercent > 90, "still measured for the stats");
});

Deno.test("`ResourceSensor` journals a memory excursion above 2 GB once, at its end, under an 8 GB limit", async () => {
  const rig = new Rig({ memoryMb: 8192 });
  rig.run(500, 0);
  rig.proc.rss(ROOT, 2500);
  rig.run(1000, 0);
  // A dip shorter than the end delay belongs to the excursion.
  rig.proc.rss(ROOT, 1000);
  rig.run(500, 0);
  rig.proc.rss(ROOT, 3500);
  rig.run(1000, 0);
  assert.deepEqual(rig.ofKind("resource.memory"), [], "nothing while it goes on");
  rig.proc.rss(ROOT, 100);
  rig.run(1900, 0);
  assert.deepEqual(rig.ofKind("resource.memory"), [], "not before the end delay");
  rig.run(200, 0);
  const memory = rig.ofKind("resource.memory");
  assert.equal(memory.length, 1, JSON.stringify(memory));
  const [e] = memory;
  assert.equal(e?.detail.ongoing, false);
  assert.equal(e?.detail.peak_mb, 3500);
  assert.equal(e?.detail.threshold_mb, 2048);
  // (2500 MB for 1 s, 1000 for 0.5 s, 3500 for 1 s) / 2.5 s: the dip counts, the fall does not.
  assert.ok(Math.abs(num(e, "mb") - 2600) <= 40, JSON.stringify(e?.detail));
  assert.ok(Math.abs(num(e, "duration_seconds") - 2.5) <= 0.1, JSON.stringify(e?.detail));
  // A second excursion, still under way at the stop.
  rig.proc.rss(ROOT, 2100);
  rig.run(200, 0);
  await rig.stop();
  const after = rig.ofKind("resource.memory");
  assert.equal(after.length, 2, JSON.stringify(after));
  assert.equal(after[1]?.detail.mb, 2100);
  assert.deepEqual(rig.ofKind("resource.cpu"), []);
});

Deno.test("`ResourceSensor` journals memory at once, marked ongoing, when it passes the policy's limit", async () => {
  const rig = new Rig({ memoryMb: 3000 });
  rig.proc.add(ROOT + 1, ROOT, 1000);
  rig.run(500, 0);
  rig.proc.rss(ROOT, 1500);
  rig.run(500, 0);
  assert.deepEqual(rig.ofKind("resource.memory"), []);
  rig.proc.rss(ROOT + 1, 1600);
  rig.run(STEP, 0);
  const memory = rig.ofKind("resource.memory");
  assert.equal(memory.length, 1, JSON.stringify(memory));
  assert.equal(memory[0]?.detail.ongoing, true);
  assert.equal(memory[0]?.detail.mb, 3100);
  assert.equal(memory[0]?.detail.limit_mb, 3000);
  assert.equal(memory[0]?.detail.processes, 2);
  rig.proc.rss(ROOT + 1, 4000);
  rig.run(1000, 0);
  rig.proc.rss(ROOT + 1, 10);
  rig.run(2000, 0);
  await rig.stop();
  assert.equal(rig.ofKind("resource.memory").length, 1, "once per excursion");
});

Deno.test("`ResourceSensor` counts each exit of a process whose last CPU it could not see", () => {
  const rig = new Rig({});
  rig.proc.add(ROOT + 1, ROOT);
  rig.proc.add(ROOT + 2, ROOT);
  rig.run(200, 50, [ROOT + 1, ROOT + 2]);
  rig.proc.procs.delete(ROOT + 1);
  rig.proc.procs.delete(ROOT + 2);
  rig.run(200, 0);
  const spots = rig.sensor.stats().blindSpots;
  assert.deepEqual(spots.map((s) => [s.id, s.count]), [["cpu_after_last_scan", 2]]);
});
