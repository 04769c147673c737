import assert from "node:assert/strict";
import { NetSensor } from "./net_sensor.ts";
import type { ProcPlatform, SocketView } from "./platform.ts";
import type { ProcSensor } from "./proc_sensor.ts";
import type { SensorEvent } from "./sensor.ts";

/** A tree of one member holding `sockets`, whose scans the test runs by hand. */
function fakeTree(sockets: number[]) {
  const hooks: ((now: number) => void)[] = [];
  const tree = {
    rootPid: 4242,
    members: new Map([[4242, {
      pid: 4242,
      ppid: 1,
      exe: "/usr/bin/python3",
      cmdline: ["py"],
      sockets,
    }]]),
    onScan: (hook: (now: number) => void) => hooks.push(hook),
    markBusy: () => {},
  };
  return { tree: tree as unknown as ProcSensor, scan: () => hooks.forEach((h) => h(Date.now())) };
}

/** A platform whose TCP connect counter and socket table the test sets. */
function fakePlatform(state: { opens: number; sockets: SocketView[] }): ProcPlatform {
  return {
    tcpActiveOpens: () => state.opens,
    readSockets: () => state.sockets,
  } as unknown as ProcPlatform;
}

function blind(sensor: NetSensor, id: string): number {
  return sensor.stats().blindSpots.find((b) => b.id === id)?.count ?? 0;
}

Deno.test("a TCP connect made and closed before the first poll is counted, from the baseline taken at start", () => {
  const state = { opens: 100, sockets: [] as SocketView[] };
  const { tree, scan } = fakeTree([]);
  const sensor = new NetSensor({ tree, platform: fakePlatform(state), databasePorts: new Set() });
  const abort = new AbortController();
  void sensor.start(() => {}, abort.signal);
  state.opens = 101; // the agent connects and closes at once, before any scan
  scan();
  assert.equal(blind(sensor, "short_lived_connections"), 1);
  state.opens = 103;
  scan();
  assert.equal(blind(sensor, "short_lived_connections"), 3);
  abort.abort();
});

Deno.test("a UDP socket without a peer is journaled as a listen and counted: its datagrams' destinations are unseen", () => {
  const udp: SocketView = {
    proto: "udp",
    localIp: "0.0.0.0",
    localPort: 40001,
    remoteIp: "0.0.0.0",
    remotePort: 0,
    state: "CLOSE",
    inode: 77,
  };
  const state = { opens: 5, sockets: [udp] };
  const { tree, scan } = fakeTree([77]);
  const sensor = new NetSensor({ tree, platform: fakePlatform(state), databasePorts: new Set() });
  const abort = new AbortController();
  const events: SensorEvent[] = [];
  void sensor.start((e) => events.push(e), abort.signal);
  scan();
  scan();
  assert.deepEqual(events.map((e) => [e.kind, e.target]), [["net.listen", "0.0.0.0:40001"]]);
  assert.equal(blind(sensor, "udp_unconnected_sockets"), 1, "counted once per socket");
  abort.abort();
});
