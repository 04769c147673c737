import type { Kind } from "../events/mod.ts";
import type { ProcPlatform, SocketView } from "./platform.ts";
import { followScans, type ProcSensor } from "./proc_sensor.ts";
import type { HostResolver } from "./resolver.ts";
import { type Sensor, type SensorEvent, type SensorStats, StatsCounter } from "./sensor.ts";

/** The network sensor's settings. */
export interface NetSensorOptions {
  tree: ProcSensor;
  platform: ProcPlatform;
  /** Remote ports whose connections are `db.connect`. */
  databasePorts: ReadonlySet<number>;
  /** Names the policy mentions, resolved to addresses so host rules work on addresses. */
  resolver?: HostResolver;
}

function endpoint(ip: string, port: number): string {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

const UNSPECIFIED = new Set(["0.0.0.0", "::"]);

/**
 * Joins the sockets the tree holds (from the fd sensor) with /proc/net/{tcp,tcp6,udp,udp6} of
 * the tree's network namespace. A socket with a remote peer is a `net.connect`, or a
 * `db.connect` on a database port; a listening socket is a `net.listen`. Each socket is
 * reported once. Connections accepted from outside are counted, not reported as connects.
 */
export class NetSensor implements Sensor {
  readonly name = "net";
  readonly #options: NetSensorOptions;
  readonly #counter = new StatsCounter("net");
  readonly #reported = new Set<number>();
  #emit: ((event: SensorEvent) => void) | null = null;
  #lastActiveOpens: number | null = null;
  #connectsSinceOpens = 0;

  /** Sets up the sensor. */
  constructor(options: NetSensorOptions) {
    this.#options = options;
  }

  /** Hooks into the tree's scans (after the fd sensor) until the signal aborts. */
  start(emit: (event: SensorEvent) => void, signal: AbortSignal): Promise<void> {
    this.#emit = emit;
    // The baseline of the connects counter, before the agent is let go: a connect made and
    // closed before the first poll is counted too.
    try {
      this.#lastActiveOpens = this.#options.platform.tcpActiveOpens(this.#options.tree.rootPid);
    } catch {
      // The first poll takes it.
    }
    return followScans(this.#options.tree, signal, () => this.poll());
  }

  /** The sensor's counters. */
  stats(): SensorStats {
    return this.#counter.snapshot();
  }

  /** Joins the tree's socket inodes to the socket tables once. */
  poll(): void {
    const { tree, platform } = this.#options;
    const owners = new Map<number, number>();
    for (const m of tree.members.values()) for (const inode of m.sockets) owners.set(inode, m.pid);
    let fresh = 0;
    for (const inode of owners.keys()) if (!this.#reported.has(inode)) fresh++;
    if (fresh === 0) {
      this.#countUnseenConnects();
      return;
    }
    this.#counter.counters.polls++;
    const sockets = platform.readSockets(tree.rootPid);
    const listening = new Set<string>();
    for (const s of sockets) {
      if (s.state === "LISTEN") listening.add(`${s.proto.replace("6", "")}:${s.localPort}`);
    }
    for (const s of sockets) {
      const pid = owners.get(s.inode);
      if (pid === undefined || this.#reported.has(s.inode)) continue;
      const member = tree.members.get(pid);
      if (member === undefined) continue;
      const event = this.#classify(s, listening);
      if (event === null) continue;
      this.#reported.add(s.inode);
      if (event.kind !== "net.listen" && event.detail.proto === "tcp") this.#connectsSinceOpens++;
      this.#counter.counters.emitted++;
      tree.markBusy(Date.now());
      this.#emit?.({
        pid,
        ppid: member.ppid,
        exe: member.exe,
        cmdline: member.cmdline,
        kind: event.kind,
        target: event.target,
        detail: event.detail,
        sensor: this.name,
      });
    }
    this.#countUnseenConnects();
    // Forget sockets that are closed, so the set stays small.
    if (this.#reported.size > 4096) {
      for (const inode of this.#reported) if (!owners.has(inode)) this.#reported.delete(inode);
    }
  }

  #classify(
    s: SocketView,
    listening: ReadonlySet<string>,
  ): { kind: Kind; target: string; detail: Record<string, unknown> } | null {
    const proto = s.proto.startsWith("tcp") ? "tcp" : "udp";
    const local = endpoint(s.localIp, s.localPort);
    if (s.state === "LISTEN" || (proto === "udp" && s.remotePort === 0 && s.localPort !== 0)) {
      if (proto === "udp") {
        // A UDP socket without a peer is a server, or a client that names each datagram's
        // destination in sendto: those destinations are in no table this tier reads.
        this.#counter.blind(
          "udp_unconnected_sockets",
          "UDP sockets without a peer: where their datagrams went (sendto, sendmsg) is not seen by this tier",
        );
      }
      return { kind: "net.listen", target: local, detail: { proto } };
    }
    if (s.remotePort === 0 || UNSPECIFIED.has(s.remoteIp)) return null;
    if (proto === "tcp" && listening.has(`tcp:${s.localPort}`)) {
      // Accepted from a peer: inbound, not a connection the agent opened.
      this.#counter.blind(
        "inbound_connections",
        "connections accepted by the agent's listeners (counted, not judged)",
      );
      return null;
    }
    const target = endpoint(s.remoteIp, s.remotePort);
    const hosts = this.#options.resolver?.namesFor(s.remoteIp) ?? [];
    const kind: Kind = this.#options.databasePorts.has(s.remotePort) ? "db.connect" : "net.connect";
    return {
      kind,
      target,
      detail: { proto, local, state: s.state, ...(hosts.length > 0 ? { hosts } : {}) },
    };
  }

  #countUnseenConnects(): void {
    // The namespace's TCP ActiveOpens counter tells how many connects were made since the last
    // poll; those the tree made and closed within one interval are not in the socket tables.
    const opens = this.#options.platform.tcpActiveOpens(this.#options.tree.rootPid);
    if (opens === null) return;
    if (this.#lastActiveOpens !== null) {
      const unseen = opens - this.#lastActiveOpens - this.#connectsSinceOpens;
      if (unseen > 0) {
        this.#counter.blind(
          "short_lived_connections",
          "TCP connects in the agent's network namespace that closed between two polls (an upper bound: other processes count too)",
          unseen,
        );
      }
    }
    this.#lastActiveOpens = opens;
    this.#connectsSinceOpens = 0;
  }
}
