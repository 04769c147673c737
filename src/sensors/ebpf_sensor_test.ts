/**
 * The eBPF sensor's classification of control records (signals, traces, memory writes aimed at
 * other processes), on records captured from the kernel, with /proc and the kernel's tracked
 * set faked: the tree's own targets are left out, outside ones become `proc.control` events.
 * @module
 */
import assert from "node:assert/strict";
import { EbpfSensor, type KernelTracer } from "./ebpf_sensor.ts";
import { ProcessTable } from "./kernel_action.ts";
import type { SensorEvent } from "./sensor.ts";
import { CONTROL } from "../platform/_ebpf_control_fixtures.ts";

const AGENT = 12394;
const DECOY = 12393;

function hex(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(text.slice(i * 2, i * 2 + 2), 16);
  return bytes;
}

interface FakeProc {
  tgid?: number;
  comm: string;
  pgrp?: number;
  ppid?: number;
}

/** A tracer whose ring buffer holds `records`, with a faked /proc and tracked set. */
function fakeTracer(options: {
  records: Uint8Array[];
  tracked: number[];
  procs: Record<number, FakeProc>;
  pidfds?: Record<string, number>;
}): KernelTracer {
  let queue = [...options.records];
  return {
    track() {},
    drain(onRecord) {
      const n = queue.length;
      for (const r of queue) onRecord(r);
      queue = [];
      return n;
    },
    wait: () => Promise.resolve(false),
    counters: () => ({
      drops: 0,
      untracked: 0,
      compat: 0,
      ioUring: 0,
      emitted: options.records.length,
      threadsLost: 0,
    }),
    bootOffsetNs: 0n,
    isTracked: (pid) => options.tracked.includes(pid),
    describe(pid) {
      const p = options.procs[pid];
      if (p === undefined) return null;
      return { tgid: p.tgid ?? pid, comm: p.comm, pgrp: p.pgrp ?? pid, ppid: p.ppid ?? 1 };
    },
    pidfdTarget: (pid, fd) => options.pidfds?.[`${pid}:${fd}`] ?? null,
    groupMembers: (pgid) =>
      Object.entries(options.procs)
        .filter(([pid, p]) => (p.pgrp ?? Number(pid)) === pgid && p.tgid === undefined)
        .map(([pid]) => Number(pid)),
  };
}

function sense(tracer: KernelTracer): { events: SensorEvent[]; sensor: EbpfSensor } {
  const table = new ProcessTable(() => ({ ppid: 12387, exe: "/usr/bin/python3", cmdline: [] }));
  const sensor = new EbpfSensor({ tracer, table, databasePorts: new Set() });
  const events: SensorEvent[] = [];
  const controller = new AbortController();
  controller.abort();
  // An aborted start only drains: every record is decoded once.
  void sensor.start((e) => events.push(e), controller.signal);
  return { events, sensor };
}

const PROCS: Record<number, FakeProc> = {
  [AGENT]: { comm: "python3", pgrp: 12385, ppid: 12387 },
  [DECOY]: { comm: "sleep", pgrp: 12380, ppid: 12380 },
  12387: { comm: "sentry", pgrp: 12385, ppid: 1 },
};

Deno.test("EbpfSensor journals a SIGSTOP, a ptrace and a memory write aimed outside the tree", async () => {
  const { events } = sense(fakeTracer({
    records: [hex(CONTROL.SIGSTOP), hex(CONTROL.ATTACH), hex(CONTROL.VM_WRITEV)],
    tracked: [AGENT],
    procs: PROCS,
  }));
  await Promise.resolve();
  assert.equal(events.length, 3);
  const [stop, attach, vm] = events;
  assert.equal(stop?.kind, "proc.control");
  assert.equal(stop?.target, `pid ${DECOY} (sleep)`);
  assert.equal(stop?.pid, AGENT);
  assert.deepEqual(stop?.detail, {
    syscall: "kill",
    signal: "SIGSTOP",
    target_pid: DECOY,
    result: "ok",
  });
  assert.deepEqual(attach?.detail, {
    syscall: "ptrace",
    request: "PTRACE_ATTACH",
    target_pid: DECOY,
    result: "ok",
  });
  assert.deepEqual(vm?.detail, {
    syscall: "process_vm_writev",
    target_pid: DECOY,
    result: "failed",
    errno: "EFAULT",
  });
});

Deno.test("EbpfSensor marks a refusal with EPERM as blocked, and a signal 0 as a probe", async () => {
  const refused = hex(CONTROL.SIGSTOP);
  new DataView(refused.buffer).setBigInt64(32, -1n, true); // -EPERM
  const { events } = sense(fakeTracer({
    records: [refused, hex(CONTROL.PROBE)],
    tracked: [AGENT],
    procs: PROCS,
  }));
  await Promise.resolve();
  assert.deepEqual(events[0]?.detail, {
    syscall: "kill",
    signal: "SIGSTOP",
    target_pid: DECOY,
    result: "failed",
    errno: "EPERM",
    blocked: "EPERM",
  });
  assert.equal(events[1]?.detail.probe, true);
  assert.equal(events[1]?.detail.signal, "0");
});

Deno.test("EbpfSensor journals a repeated probe of one target once", async () => {
  const { events, sensor } = sense(fakeTracer({
    records: [hex(CONTROL.PROBE), hex(CONTROL.PROBE), hex(CONTROL.PROBE), hex(CONTROL.SIGSTOP)],
    tracked: [AGENT],
    procs: PROCS,
  }));
  await Promise.resolve();
  assert.deepEqual(events.map((e) => e.detail.signal), ["0", "SIGSTOP"]);
  assert.equal(sensor.stats().deduplicated, 2);
});

Deno.test("EbpfSensor leaves out signals within the tree: itself, its threads, a zombie child", async () => {
  const { events } = sense(fakeTracer({
    // SIGSTOP to the decoy, but here the decoy is the agent's child that has exited: a zombie
    // the kernel no longer tracks, whose parent is the agent.
    records: [
      hex(CONTROL.SELF),
      hex(CONTROL.TGKILL_SELF),
      hex(CONTROL.TKILL_THREAD),
      hex(CONTROL.SIGSTOP),
    ],
    tracked: [AGENT],
    procs: { ...PROCS, [DECOY]: { comm: "sleep", ppid: AGENT } },
  }));
  await Promise.resolve();
  assert.deepEqual(events, []);
});

Deno.test("EbpfSensor leaves out a target that does not exist (ESRCH), and kill(0) of its own group", async () => {
  const { events } = sense(fakeTracer({
    records: [hex(CONTROL.NO_SUCH_PID), hex(CONTROL.NO_SUCH_GROUP), hex(CONTROL.OWN_GROUP)],
    tracked: [AGENT, 12385],
    // Its group 12385 holds only the agent.
    procs: { [AGENT]: { comm: "python3", pgrp: 12385 } },
  }));
  await Promise.resolve();
  assert.deepEqual(events, []);
});

Deno.test("EbpfSensor journals kill(0) when the group holds processes outside the tree", async () => {
  const { events } = sense(fakeTracer({
    records: [hex(CONTROL.OWN_GROUP)],
    tracked: [AGENT],
    procs: PROCS, // Sentry (12387) shares the agent's group 12385
  }));
  await Promise.resolve();
  assert.equal(events.length, 1);
  assert.equal(events[0]?.target, "process group 12385 (sentry)");
  assert.deepEqual(events[0]?.detail, {
    syscall: "kill",
    signal: "0",
    target_pid: 0,
    scope: "group",
    group: 12385,
    outside_pids: [12387],
    probe: true,
    result: "ok",
  });
});

Deno.test("EbpfSensor journals kill(-1) as aimed at every process", async () => {
  const { events } = sense(fakeTracer({
    records: [hex(CONTROL.ALL)],
    tracked: [AGENT],
    procs: PROCS,
  }));
  await Promise.resolve();
  assert.equal(events[0]?.target, "every process");
  assert.equal(events[0]?.detail.target_pid, -1);
  assert.equal(events[0]?.detail.scope, "all");
});

Deno.test("EbpfSensor names a pidfd's target, from the kernel or else from the pidfd's fdinfo", async () => {
  const unresolved = hex(CONTROL.PIDFD);
  const v = new DataView(unresolved.buffer);
  v.setUint16(2, 0, true); // no F_TARGET: as if the kernel could not read the pidfd
  v.setUint32(56 + 16, 0, true);
  v.setUint32(56 + 20, 0, true);
  v.setBigUint64(56 + 8, 15n, true); // SIGTERM: not a second probe of the same target
  const { events } = sense(fakeTracer({
    records: [hex(CONTROL.PROC_DIR_FD), unresolved],
    tracked: [AGENT],
    procs: PROCS,
    pidfds: { [`${AGENT}:3`]: DECOY },
  }));
  await Promise.resolve();
  assert.equal(events.length, 2);
  for (const e of events) {
    assert.equal(e.target, `pid ${DECOY} (sleep)`);
    assert.equal(e.detail.syscall, "pidfd_send_signal");
    assert.equal(e.detail.target_pid, DECOY);
  }
  assert.equal(events[0]?.detail.pidfd, 4);
  assert.equal(events[1]?.detail.pidfd, 3);
  assert.equal(events[1]?.detail.signal, "SIGTERM");
});

Deno.test("EbpfSensor counts what it cannot classify or decode as blind spots", async () => {
  const unresolved = hex(CONTROL.PIDFD);
  new DataView(unresolved.buffer).setUint16(2, 0, true);
  const malformed = hex(CONTROL.SIGSTOP).subarray(0, 56 + 24);
  new DataView(malformed.buffer, malformed.byteOffset).setUint16(48, 24, true);
  const { events, sensor } = sense(fakeTracer({
    records: [hex(CONTROL.NAMESPACED), unresolved, malformed],
    tracked: [AGENT],
    procs: PROCS,
  }));
  await Promise.resolve();
  assert.deepEqual(events, []);
  const spots = Object.fromEntries(sensor.stats().blindSpots.map((s) => [s.id, s.count]));
  assert.deepEqual(spots, { namespaced_control: 1, unresolved_pidfd: 1, undecodable: 1 });
});

Deno.test("EbpfSensor names an outside process that is gone by its pid alone", async () => {
  const { events } = sense(fakeTracer({
    records: [hex(CONTROL.SIGSTOP)],
    tracked: [AGENT],
    procs: {},
  }));
  await Promise.resolve();
  assert.equal(events[0]?.target, `pid ${DECOY}`);
});

/** A record as `sentry.bpf.c` writes it: a header, then its fields. */
function record(
  h: {
    type: number;
    flags?: number;
    nr: number;
    tid?: number;
    ts: bigint;
    ret: number;
    aux32?: number;
  },
  fields: Uint8Array[],
): Uint8Array {
  const size = fields.reduce((n, f) => n + f.length, 56);
  const bytes = new Uint8Array(size);
  const v = new DataView(bytes.buffer);
  v.setUint16(0, h.type, true);
  v.setUint16(2, h.flags ?? 0, true);
  v.setUint32(4, h.nr, true);
  v.setUint32(8, AGENT, true);
  v.setUint32(12, h.tid ?? AGENT, true);
  v.setUint32(16, 12387, true);
  v.setUint32(20, h.aux32 ?? 0, true);
  v.setBigUint64(24, h.ts, true);
  v.setBigInt64(32, BigInt(h.ret), true);
  let off = 56;
  fields.forEach((f, i) => {
    v.setUint16(48 + i * 2, f.length, true);
    bytes.set(f, off);
    off += f.length;
  });
  return bytes;
}

/** A sockaddr_in of 127.0.0.1:port. */
function inet(port: number): Uint8Array {
  return new Uint8Array([2, 0, port >> 8, port & 0xff, 127, 0, 0, 1, 0, 0, 0, 0, 0, 0, 0, 0]);
}

Deno.test("EbpfSensor journals a sendmmsg once per distinct address of each call", async () => {
  const EV_SENDTO = 8;
  const msg = (ts: bigint, index: number, port: number, tid = AGENT) =>
    record({ type: EV_SENDTO, nr: 307, tid, ts, ret: 4, aux32: index }, [inet(port)]);
  const { events, sensor } = sense(fakeTracer({
    records: [
      msg(100n, 0, 5000),
      msg(100n, 1, 5001),
      // Another thread's call, at the same time, interleaved: its own addresses.
      msg(100n, 0, 5000, AGENT + 1),
      msg(100n, 2, 5000),
      msg(100n, 3, 5001),
      // The next call of the same thread sends to the same address again.
      msg(200n, 0, 5000),
      msg(200n, 1, 5000),
    ],
    tracked: [AGENT],
    procs: PROCS,
  }));
  await Promise.resolve();
  assert.deepEqual(
    events.map((e) => [e.kind, e.target, e.detail.syscall, e.detail.via, e.detail.result]),
    [
      ["net.connect", "127.0.0.1:5000", "sendmmsg", "sendto", "ok"],
      ["net.connect", "127.0.0.1:5001", "sendmmsg", "sendto", "ok"],
      ["net.connect", "127.0.0.1:5000", "sendmmsg", "sendto", "ok"], // the other thread's
      ["net.connect", "127.0.0.1:5000", "sendmmsg", "sendto", "ok"], // the next call
    ],
  );
  assert.equal(sensor.stats().deduplicated, 3);
});

Deno.test("EbpfSensor marks a 32-bit call's event with its ABI, and a 64-bit one without", async () => {
  const EV_CONNECT = 7;
  const F_COMPAT = 1 << 11;
  const { events } = sense(fakeTracer({
    records: [
      record({ type: EV_CONNECT, flags: F_COMPAT, nr: 42, ts: 1n, ret: -111 }, [inet(6000)]),
      record({ type: EV_CONNECT, nr: 42, ts: 2n, ret: 0 }, [inet(6001)]),
    ],
    tracked: [AGENT],
    procs: PROCS,
  }));
  await Promise.resolve();
  assert.deepEqual(events.map((e) => [e.target, e.detail]), [
    ["127.0.0.1:6000", {
      syscall: "connect",
      family: "inet",
      result: "failed",
      errno: "ECONNREFUSED",
      abi: "i386",
    }],
    ["127.0.0.1:6001", { syscall: "connect", family: "inet", result: "ok" }],
  ]);
});
