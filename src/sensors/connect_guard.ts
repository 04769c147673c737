/**
 * The connect guard: the policy's network section enforced in the kernel for one cgroup, by
 * cgroup `connect4`/`connect6`/`sendmsg4`/`sendmsg6` programs (`src/platform/bpf/
 * connect_guard.bpf.c`). A denied TCP connect or UDP send fails with EPERM before any packet
 * leaves, and the kernel decides on the address it has already copied: a thread that rewrites
 * the sockaddr after the check changes nothing. Needs root; works for `run` and `attach` alike,
 * since it guards a cgroup, not a process tree.
 *
 * {@link compileConnectGuard} turns a compiled policy into the kernel's tables, purely. The
 * kernel cannot run the engine, so the compiler asks the engine: it splits the address space at
 * every prefix the policy's decision can depend on (its CIDRs and addresses, the resolved
 * addresses of its host names, the loopback and private ranges the risk score looks at) and the
 * port space at every port it names, and calls the same `evaluate()` as the rest of Sentry on one
 * address and port of each cell. A cell's verdict is `block` when the engine denies with a
 * response of `block` or more (a policy in mode `block` blocks every denial; in mode `pause` and
 * above, a denial whose risk or rule response reaches `block`), `report` when it denies with a
 * lesser response (allowed, but journaled), else `allow`. So the kernel never blocks what the
 * engine would allow, nor allows what it would block, for any address the tables can tell apart.
 *
 * What the kernel cannot tell apart becomes a notice that names the rule: unix sockets, host
 * names with no resolved address, `*.domain` entries no resolved name falls in, and custom rules
 * that match by process or by a wildcard within an address or a port (`10.*.0.1:*`, `*:4*`;
 * a dotted prefix such as `127.*` is fine). Such a rule is left out of the
 * kernel's copy of the policy (it never blocks there) and is still judged after the fact.
 *
 * Decisions for denied destinations come back through a ring buffer and are emitted as
 * `net.connect` (or `db.connect`) events, with `detail.blocked: "EPERM"` when the call failed.
 *
 * Fails open: if Sentry dies, the programs are detached with its file descriptors.
 *
 * @module
 */

import { responseRank } from "../events/mod.ts";
import { type CompiledPolicy, evaluate } from "../policy/mod.ts";
// TODO(#11): import these from ../policy/mod.ts once it re-exports them.
import { type Ip, type NetworkEntry, parseIp } from "../policy/patterns.ts";
import { decodeSockaddr, readCmdline, readExe, readStat } from "../platform/mod.ts";
// TODO(#11): import these from ../platform/mod.ts once it re-exports them.
import {
  decisionSockaddr,
  decodeDecision,
  GUARD_VERDICT,
  type GuardDecision,
  type GuardPortBlock,
  type GuardPrefix,
  type GuardTables,
  type GuardVerdict,
} from "../platform/connect_guard_record.ts";
import {
  type ConnectGuardCounters,
  ConnectGuardProgram,
  type ConnectGuardProgramOptions,
} from "../platform/connect_guard_linux.ts";
import {
  type KernelAction,
  type ProcessInfo,
  ProcessTable,
  toSensorEvent,
} from "./kernel_action.ts";
import { type SensorEvent, type SensorStats, StatsCounter } from "./sensor.ts";

/** Something the operator should know at start: a rule the kernel cannot enforce, and why. */
export interface GuardNotice {
  type: "warn" | "info";
  message: string;
}

/** Host names and the addresses they resolve to (the caller resolves; the guard never waits on DNS). */
export type ResolvedHosts = ReadonlyMap<string, readonly string[]>;

/** Options for {@link compileConnectGuard}. */
export interface CompileConnectGuardOptions {
  /**
   * The policy's host names (`policy.namedHosts`) and their addresses. A name absent here, or
   * with no address, matches no address in the kernel.
   */
  resolved?: ResolvedHosts;
}

/** The kernel's tables for a policy, and what they cannot express. */
export interface ConnectGuardPlan {
  tables: GuardTables;
  /** One notice per rule or entry the kernel cannot enforce, naming it. */
  notices: GuardNotice[];
  /** Whether any destination is blocked (false in modes monitor and alert). */
  blocks: boolean;
  /** The policy the tables were computed from: the given one less the rules left out. */
  kernelPolicy: CompiledPolicy;
}

/** The kinds the guard decides: a connect is `db.connect` on a database port. */
const NET_KINDS = ["net.connect", "db.connect"] as const;

/**
 * The networks the risk score treats apart (`src/policy/risk.ts`): the cloud metadata service
 * and private ranges. A denial's response can depend on them, so the tables split there.
 * TODO(#11): take these from risk.ts once it exports them; a test checks the copy.
 */
export const RISK_NETWORKS: readonly string[] = [
  "169.254.169.254/32",
  "fd00:ec2::254/128",
  "10.0.0.0/8",
  "172.16.0.0/12",
  "192.168.0.0/16",
  "169.254.0.0/16",
  "100.64.0.0/10",
  "fc00::/7",
  "fe80::/10",
];

/** A prefix of the address space, and where the compiler found it. */
interface Node {
  v: 4 | 6;
  base: bigint;
  bits: number;
  end: bigint;
  /** Never a lookup result: the IPv4-mapped range, which the programs look up as IPv4. */
  hole: boolean;
  children: Node[];
}

const WIDTH = { 4: 32, 6: 128 } as const;

function nodeOf(v: 4 | 6, base: bigint, bits: number, hole = false): Node {
  const size = 1n << BigInt(WIDTH[v] - bits);
  const masked = (base / size) * size;
  return { v, base: masked, bits, end: masked + size - 1n, hole, children: [] };
}

function parsePrefix(text: string): Node {
  const [addr, bits] = text.split("/") as [string, string];
  const ip = parseIp(addr) as Ip;
  return nodeOf(ip.v, BigInt(ip.n), Number(bits));
}

function ipBytes(v: 4 | 6, n: bigint): Uint8Array {
  const bytes = new Uint8Array(v === 4 ? 4 : 16);
  for (let i = bytes.length - 1; i >= 0; i--) {
    bytes[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return bytes;
}

/** An address key for the names map: IPv4-mapped addresses are IPv4. */
function ipKey(ip: Ip): string {
  return `${ip.v}:${ip.n}`;
}

/** What shape a custom rule's target has, for the kernel: what it splits on, or why it cannot. */
export type TargetShape =
  | { ok: true; ips: (Ip & { bits?: number })[]; names: string[]; ports: number[] }
  | { ok: false; reason: string };

/** Every character a target with an IP address (`1.2.3.4:80`, `[::1]:80`) can hold. */
const IP_TEXT = /^[0-9a-f.:[\]*?]*$/;
const WILD = /[*?]/;
/** `10.*`, `10.0.*`, `10.0.0.*`: an IPv4 prefix written as text. */
const V4_TEXT_PREFIX = /^(\d{1,3})(?:\.(\d{1,3}))?(?:\.(\d{1,3}))?\.\*$/;
/** A host name as the policy compiler picks them out of rule targets, for the resolver. */
const HOST_NAME = /^[a-z0-9][a-z0-9.-]*\.[a-z]{2,}$/i;

/** The IPv4 prefix an `a.b.*` pattern covers, or null when the pattern is not one. */
function v4TextPrefix(host: string): Ip & { bits: number } | null {
  const m = V4_TEXT_PREFIX.exec(host);
  if (m === null) return null;
  const octets = m.slice(1).filter((o) => o !== undefined).map(Number);
  if (octets.some((o) => o > 255)) return null;
  let n = 0;
  for (let i = 0; i < 4; i++) n = n * 256 + (octets[i] ?? 0);
  return { v: 4, n, bits: octets.length * 8 };
}

/**
 * Tells whether the kernel can express a rule's wildcard target, as the engine matches it (the
 * target `ip:port` or `[v6]:port`, or a resolved `name:port`). It can when the pattern depends
 * on the address only as a whole literal, `*`, or a dotted IPv4 prefix (`10.0.*`), and on the
 * port only as a literal or `*`: the tables then split exactly where the pattern does.
 * Patterns with a character no address has can only match resolved names, which the tables
 * hold one by one.
 */
export function ruleTargetShape(target: string): TargetShape {
  const none: TargetShape = { ok: true, ips: [], names: [], ports: [] };
  if (target === "*") return none;
  let host = target;
  let port: string | null = null;
  const close = target.startsWith("[") ? target.indexOf("]") : -1;
  if (close > 0) {
    host = target.slice(1, close);
    if (target[close + 1] === ":") port = target.slice(close + 2);
    else if (close !== target.length - 1) port = "";
  } else {
    const colon = target.lastIndexOf(":");
    if (colon >= 0) {
      host = target.slice(0, colon);
      port = target.slice(colon + 1);
    }
  }
  const wildHost = WILD.test(host);
  if (port === null) {
    // No colon: the pattern runs to the end of the target, over the port too.
    if (!wildHost) return none;
    const prefix = v4TextPrefix(host);
    if (prefix !== null) {
      return { ok: true, ips: [prefix], names: [], ports: [] };
    }
    if (IP_TEXT.test(host)) {
      return { ok: false, reason: `target "${target}" is a wildcard over the address` };
    }
    if (/[*?]$/.test(host)) return none;
    const tail = host.slice(Math.max(host.lastIndexOf("*"), host.lastIndexOf("?")) + 1);
    // A tail with a character no port has matches no target.
    if (/\D/.test(tail)) return none;
    return { ok: false, reason: `target "${target}" has a wildcard within the port` };
  }
  const literalPort = /^\d{1,5}$/.test(port) && Number(port) <= 65535;
  if (port !== "*" && !literalPort) {
    if (WILD.test(port)) {
      return { ok: false, reason: `target "${target}" has a wildcard within the port` };
    }
    return none;
  }
  const ports = literalPort ? [Number(port)] : [];
  if (host === "*") return { ok: true, ips: [], names: [], ports };
  if (!wildHost) {
    const ip = parseIp(host);
    if (ip !== null) return { ok: true, ips: [ip], names: [], ports };
    const name = host.toLowerCase();
    return { ok: true, ips: [], names: HOST_NAME.test(name) ? [name] : [], ports };
  }
  const prefix = close > 0 ? null : v4TextPrefix(host);
  if (prefix !== null) return { ok: true, ips: [prefix], names: [], ports };
  // A literal character no address has: the pattern can only match resolved names.
  if (!IP_TEXT.test(host)) return { ok: true, ips: [], names: [], ports };
  return { ok: false, reason: `target "${target}" is a wildcard over the address` };
}

/** The verdict the kernel gives a destination the engine decided on. */
function verdictOf(policy: CompiledPolicy, target: string, names: readonly string[], db: boolean) {
  const decision = evaluate({
    kind: db ? "db.connect" : "net.connect",
    target,
    pid: 1,
    exe: null,
    cmdline: [],
    detail: { syscall: "connect", ...(names.length > 0 ? { hosts: names } : {}) },
  }, policy);
  if (decision.verdict !== "deny") return GUARD_VERDICT.ALLOW;
  return responseRank(decision.response) >= responseRank("block")
    ? GUARD_VERDICT.BLOCK
    : GUARD_VERDICT.REPORT;
}

/** The target text the rest of Sentry gives an address and port (`1.2.3.4:80`, `[::1]:80`). */
function targetOf(ip: Ip, port: number): string {
  const addr = ipBytes(ip.v, BigInt(ip.n));
  return decodeSockaddr(decisionSockaddr({ family: ip.v, port, addr }))?.target ?? "";
}

/** Splits an inclusive port range into aligned blocks (LPM prefixes over 16 bits). */
export function portBlocks(lo: number, hi: number): { port: number; bits: number }[] {
  const out: { port: number; bits: number }[] = [];
  let at = lo;
  while (at <= hi) {
    let size = at === 0 ? 65536 : at & -at;
    while (at + size - 1 > hi) size >>= 1;
    out.push({ port: at, bits: 16 - Math.log2(size) });
    at += size;
  }
  return out;
}

/** A run of ports with one verdict. */
interface Run {
  lo: number;
  hi: number;
  verdict: GuardVerdict;
}

/**
 * Compiles the network section (and the network rules) of a policy into the connect guard's
 * tables. Pure: DNS answers come in through `options.resolved`. See the module's comment for
 * how a cell's verdict is chosen; the result holds the notices for what cannot be enforced.
 */
export function compileConnectGuard(
  policy: CompiledPolicy,
  options: CompileConnectGuardOptions = {},
): ConnectGuardPlan {
  const notices: GuardNotice[] = [];
  const warn = (message: string) => {
    if (!notices.some((n) => n.message === message)) notices.push({ type: "warn", message });
  };
  const resolved = options.resolved ?? new Map<string, readonly string[]>();
  const dbPorts: ReadonlySet<number> = policy.monitors.database ? policy.database.ports : new Set();

  // Names by address, and every resolved address as a prefix of its own.
  const names = namesByAddress(resolved);
  const nodes = new Map<string, Node>();
  const add = (node: Node) => {
    const key = `${node.v}/${node.base}/${node.bits}`;
    if (!nodes.has(key)) nodes.set(key, node);
  };
  add(nodeOf(4, 0n, 0));
  add(nodeOf(6, 0n, 0));
  add(nodeOf(6, 0xffff00000000n, 96, true));
  // Connecting to 0.0.0.0 or :: reaches this host's loopback: their cells take the stricter
  // of their own verdict and loopback's.
  add(nodeOf(4, 0n, 32));
  add(nodeOf(6, 0n, 128));
  add(nodeOf(4, 127n << 24n, 8));
  add(nodeOf(6, 1n, 128));
  for (const text of RISK_NETWORKS) add(parsePrefix(text));
  const resolvedNames = new Set<string>();
  for (const [key, list] of names) {
    const [v, n] = key.split(":") as [string, string];
    add(nodeOf(v === "4" ? 4 : 6, BigInt(n), WIDTH[v === "4" ? 4 : 6]));
    for (const name of list) resolvedNames.add(name);
  }

  // Port cuts: the first port of every range the decision can change at.
  const cuts = new Set<number>([0]);
  const cut = (lo: number, hi: number) => {
    cuts.add(lo);
    if (hi < 65535) cuts.add(hi + 1);
  };
  for (const p of dbPorts) cut(p, p);

  const sections: [string, readonly NetworkEntry[]][] = [
    ["network.deny", policy.network.deny],
    ["network.allow", policy.network.allow],
    ["database.allow", policy.database.allow],
  ];
  const quoted = (list: readonly NetworkEntry[]) => list.map((e) => `"${e.text}"`).join(", ");
  for (const [field, entries] of sections) {
    const unix: NetworkEntry[] = [];
    const domains: NetworkEntry[] = [];
    for (const e of entries) {
      if (e.type !== "any" && e.type !== "unix" && e.ports !== null) cut(e.ports.lo, e.ports.hi);
      switch (e.type) {
        case "cidr":
          add(nodeOf(e.cidr.v, e.cidr.base, e.cidr.bits));
          break;
        case "ip":
          add(nodeOf(e.ip.v, BigInt(e.ip.n), WIDTH[e.ip.v]));
          break;
        case "unix":
          unix.push(e);
          break;
        case "host":
          if (e.host !== "localhost" && !resolvedNames.has(e.host)) {
            warn(
              `${field} "${e.text}": no address is resolved for "${e.host}", so the connect guard cannot match it in the kernel`,
            );
          }
          break;
        case "domain":
          if (![...resolvedNames].some((n) => n.endsWith(e.suffix))) domains.push(e);
          break;
      }
    }
    if (domains.length > 0) {
      warn(
        `${field} ${quoted(domains)}: no resolved host name falls in ${
          domains.length === 1 ? "this domain" : "these domains"
        }, so the connect guard cannot match ${
          domains.length === 1 ? "it" : "them"
        } in the kernel (it knows the addresses of the policy's own host names only)`,
      );
    }
    if (unix.length > 0) {
      warn(
        `${field} ${
          quoted(unix)
        }: unix sockets are not seen by the connect guard (IPv4 and IPv6 only), so ${
          unix.length === 1 ? "it is" : "they are"
        } not enforced in the kernel`,
      );
    }
  }

  // Custom rules: those the kernel can tell apart shape the cells; the others are left out.
  const dropped = new Set<unknown>();
  const seen = new Set<unknown>();
  for (const kind of NET_KINDS) {
    for (const r of policy.rulesByKind.get(kind) ?? []) {
      if (seen.has(r)) continue;
      seen.add(r);
      const id = r.rule.id;
      if (r.match.processes !== null || r.exceptions.some((m) => m.processes !== null)) {
        dropped.add(r);
        warn(
          `Rule "${id}" ${
            r.match.processes !== null ? "matches" : "has an exception"
          } by process, which the connect guard cannot tell apart: it does not block for this rule in the kernel`,
        );
        continue;
      }
      const targets = [r.rule.match, ...r.rule.exceptions].flatMap((m) =>
        m.target === undefined ? [] : Array.isArray(m.target) ? m.target : [m.target]
      );
      const shapes = targets.map(ruleTargetShape);
      const bad = shapes.find((s) => !s.ok);
      if (bad !== undefined && !bad.ok) {
        dropped.add(r);
        warn(
          `Rule "${id}": ${bad.reason}, which the connect guard cannot express: it does not block for this rule in the kernel`,
        );
        continue;
      }
      for (const s of shapes) {
        if (!s.ok) continue;
        for (const ip of s.ips) add(nodeOf(ip.v, BigInt(ip.n), ip.bits ?? WIDTH[ip.v]));
        for (const p of s.ports) cut(p, p);
        for (const n of s.names) {
          if (!resolvedNames.has(n)) {
            warn(
              `Rule "${id}": no address is resolved for "${n}", so the connect guard cannot match it in the kernel`,
            );
          }
        }
      }
    }
  }
  const rulesByKind = new Map(policy.rulesByKind);
  for (const kind of NET_KINDS) {
    rulesByKind.set(kind, (policy.rulesByKind.get(kind) ?? []).filter((r) => !dropped.has(r)));
  }
  const kernelPolicy: CompiledPolicy = { ...policy, rulesByKind };

  // The prefix tree, per family: each node's children are the largest prefixes inside it.
  const sorted = [...nodes.values()].sort((a, b) =>
    a.v - b.v || (a.base < b.base ? -1 : a.base > b.base ? 1 : a.bits - b.bits)
  );
  const roots: Node[] = [];
  const stack: Node[] = [];
  for (const node of sorted) {
    while (stack.length > 0) {
      const top = stack[stack.length - 1] as Node;
      if (top.v === node.v && node.base >= top.base && node.end <= top.end) break;
      stack.pop();
    }
    const parent = stack[stack.length - 1];
    if (parent === undefined) roots.push(node);
    else parent.children.push(node);
    stack.push(node);
  }

  const starts = [...cuts].sort((a, b) => a - b);
  const runsAt = (ip: Ip): Run[] => {
    const key = ipKey(ip);
    const own = names.get(key) ?? [];
    const loopback: Ip | null = ip.v === 4
      ? (ip.n === 0 ? { v: 4, n: 0x7f000001 } : null)
      : (ip.n === 0n ? { v: 6, n: 1n } : null);
    const runs: Run[] = [];
    for (let i = 0; i < starts.length; i++) {
      const lo = starts[i] as number;
      const hi = (starts[i + 1] ?? 65536) - 1;
      const db = dbPorts.has(lo);
      let verdict: GuardVerdict = verdictOf(kernelPolicy, targetOf(ip, lo), own, db);
      if (loopback !== null) {
        const other = verdictOf(
          kernelPolicy,
          targetOf(loopback, lo),
          names.get(ipKey(loopback)) ?? [],
          db,
        );
        if (other > verdict) verdict = other;
      }
      const last = runs[runs.length - 1];
      if (last !== undefined && last.verdict === verdict) last.hi = hi;
      else runs.push({ lo, hi, verdict });
    }
    return runs;
  };

  const tableIds = new Map<string, number>();
  const tableRuns: Run[][] = [];
  const prefixes: GuardPrefix[] = [];
  const visit = (node: Node, inherited: number | null) => {
    if (node.hole) return;
    let here = inherited;
    const rep = representative(node);
    if (rep !== null) {
      const ip: Ip = node.v === 4 ? { v: 4, n: Number(rep) } : { v: 6, n: rep };
      const runs = runsAt(ip);
      const key = runs.map((r) => `${r.lo}-${r.hi}:${r.verdict}`).join(",");
      let id = tableIds.get(key);
      if (id === undefined) {
        id = tableRuns.length;
        tableIds.set(key, id);
        tableRuns.push(runs);
      }
      // A prefix whose table is its nearest ancestor's adds nothing: the lookup falls back.
      if (id !== inherited) {
        prefixes.push({
          family: node.v,
          addr: ipBytes(node.v, node.base),
          bits: node.bits,
          table: id,
        });
        here = id;
      }
    }
    for (const child of node.children) visit(child, here);
  };
  for (const root of roots) visit(root, null);

  const ports: GuardPortBlock[] = [];
  let blocks = false;
  tableRuns.forEach((runs, table) => {
    const width = new Map<GuardVerdict, number>();
    for (const r of runs) width.set(r.verdict, (width.get(r.verdict) ?? 0) + r.hi - r.lo + 1);
    let fallback: GuardVerdict = GUARD_VERDICT.ALLOW;
    for (const [v, w] of width) if (w > (width.get(fallback) ?? 0)) fallback = v;
    ports.push({ table, port: 0, bits: 0, verdict: fallback });
    for (const r of runs) {
      if (r.verdict === GUARD_VERDICT.BLOCK) blocks = true;
      if (r.verdict === fallback) continue;
      for (const b of portBlocks(r.lo, r.hi)) ports.push({ table, ...b, verdict: r.verdict });
    }
  });
  if (!blocks && policy.modeCap < responseRank("block")) {
    notices.push({
      type: "info",
      message:
        `The connect guard blocks nothing in mode "${policy.policy.mode}": it reports denied connects only`,
    });
  }
  return { tables: { prefixes, ports, tables: tableRuns.length }, notices, blocks, kernelPolicy };
}

/**
 * An address of a prefix that none of its children holds: the one the engine decides on for
 * the whole cell. Null when the children cover the prefix (no lookup ever ends at it).
 */
function representative(node: Node): bigint | null {
  let cursor = node.base;
  for (const child of node.children) {
    if (child.base > cursor) return cursor;
    cursor = child.end + 1n;
    if (cursor > node.end) return null;
  }
  return cursor <= node.end ? cursor : null;
}

/** What {@link decisionEvent} needs besides the decision. */
export interface DecisionContext {
  table: ProcessTable;
  /** Ports that make a connection a `db.connect` (empty when the database monitor is off). */
  databasePorts: ReadonlySet<number>;
  /** The host names an address resolves to (`detail.hosts`, as the network sensor gives). */
  namesOf: (ip: Ip) => readonly string[];
  /** CLOCK_BOOTTIME minus the wall clock, in nanoseconds. */
  bootOffsetNs: bigint;
}

/** The errno a blocked connect or send fails with. */
const EPERM = 1;

/**
 * Turns one decision of the kernel into the event the engine decides on: a `net.connect` (or
 * `db.connect`) whose target reads as every other sensor writes it (`1.2.3.4:443`,
 * `[::1]:443`; an IPv4-mapped address as the IPv4 peer it is, with `family: "inet6"`), with `detail.blocked: "EPERM"` and `result: "failed"`
 * when the kernel refused the call, and `result: "unknown"` when it let it go on.
 */
export function decisionEvent(
  decision: GuardDecision,
  context: DecisionContext,
): SensorEvent | null {
  const send = decision.hook === "sendmsg4" || decision.hook === "sendmsg6";
  const blocked = decision.verdict === GUARD_VERDICT.BLOCK;
  const ms = Number((decision.bootNs + context.bootOffsetNs) / 1_000_000n);
  // An IPv4-mapped address is written as the IPv4 peer it is, which the tables decided on: a
  // rule on "127.*" must not read "[::ffff:127.0.0.1]:80" as another destination.
  const a = decision.addr;
  const mapped = decision.family === 6 && a.length === 16 &&
    a.subarray(0, 10).every((b) => b === 0) && a[10] === 0xff && a[11] === 0xff;
  const peer = mapped ? { ...decision, family: 4 as const, addr: a.slice(12) } : decision;
  const action: KernelAction = {
    op: send ? "sendto" : "connect",
    pid: decision.pid,
    tid: decision.tid,
    ts: new Date(ms).toISOString(),
    addr: decisionSockaddr(peer),
    result: blocked ? -EPERM : null,
    syscall: send ? "sendmsg" : "connect",
  };
  const event = toSensorEvent(action, {
    sensor: "connect_guard",
    table: context.table,
    databasePorts: context.databasePorts,
  });
  if (event === null) return null;
  const addr = decodeSockaddr(action.addr);
  const ip = addr === null || addr.family === "unix" ? null : parseIp(addr.ip);
  const hosts = ip === null ? [] : context.namesOf(ip);
  event.detail = {
    ...event.detail,
    ...(mapped ? { family: "inet6" } : {}),
    protocol: decision.protocol === 6
      ? "tcp"
      : decision.protocol === 17
      ? "udp"
      : decision.protocol,
    ...(hosts.length > 0 ? { hosts: [...hosts] } : {}),
    ...(event.exe === null ? { comm: decision.comm } : {}),
    ...(blocked ? { blocked: "EPERM" } : {}),
  };
  return event;
}

/** The kernel side of the guard, as {@link startConnectGuard} uses it (a fake in tests). */
export interface GuardKernel {
  readonly bootOffsetNs: bigint;
  replace(tables: GuardTables): void;
  drain(onRecord: (bytes: Uint8Array) => void): number;
  wait(timeoutMs: number): Promise<boolean>;
  counters(): ConnectGuardCounters;
  close(): void;
}

/** Options for {@link startConnectGuard}. */
export interface ConnectGuardOptions {
  /** The session's cgroup v2 directory: every process in it, and below it, is guarded. */
  cgroupDir: string;
  policy: CompiledPolicy;
  /** The policy's host names (`policy.namedHosts`) resolved to addresses. */
  resolved?: ResolvedHosts;
  /** Receives a `net.connect`/`db.connect` event for every decision on a denied destination. */
  emit: (event: SensorEvent) => void;
  /** Detaches the programs when it aborts; `done` then resolves. */
  signal: AbortSignal;
  /** The session's process table (exe and command line by pid); default: one that reads /proc. */
  table?: ProcessTable;
  /** Also journal one allowed decision in `sample` (0, the default: none). */
  sample?: number;
  /** How often to poll the ring buffer when it is idle, in ms; default 100. */
  pollMs?: number;
  /** Loads and attaches the programs; default {@link ConnectGuardProgram.open}. For tests. */
  open?: (options: ConnectGuardProgramOptions) => GuardKernel;
}

/** The guard's counters: a sensor's, plus the kernel's decisions. */
export interface ConnectGuardStats extends SensorStats {
  /** Connects and UDP sends decided in the kernel. */
  checked: number;
  /** Those failed with EPERM. */
  blocked: number;
  /** Denied destinations allowed because their response does not block. */
  reported: number;
}

/** A running guard. */
export interface ConnectGuard {
  /** What the kernel cannot enforce under the current policy, one notice per rule. */
  readonly notices: readonly GuardNotice[];
  /** Whether the current tables block any destination. */
  readonly blocks: boolean;
  /** The guard's counters so far. */
  stats(): ConnectGuardStats;
  /**
   * Recompiles for a new policy or new DNS answers and swaps every table at once; returns the
   * new notices. Throws when the guard has stopped.
   */
  update(options: { policy?: CompiledPolicy; resolved?: ResolvedHosts }): GuardNotice[];
  /** Resolves once the signal aborted, the last decisions were emitted and the programs detached. */
  readonly done: Promise<void>;
}

/** Reads a process the table has not seen, from /proc. */
function inspectProcess(pid: number): ProcessInfo | null {
  const stat = readStat(pid);
  if (stat === null) return null;
  return { ppid: stat.ppid, exe: readExe(pid)?.path ?? null, cmdline: readCmdline(pid) ?? [] };
}

/**
 * Compiles the policy, loads the guard, fills its tables and attaches it to `cgroupDir`, then
 * emits its decisions until `signal` aborts. Rejects with a `ConnectGuardError` when the host
 * does not allow it (not root, no libbpf, not a cgroup v2 directory): nothing is attached then.
 *
 * Its notices name each rule the kernel cannot enforce; show them at start.
 */
export function startConnectGuard(options: ConnectGuardOptions): Promise<ConnectGuard> {
  try {
    return Promise.resolve(start(options));
  } catch (error) {
    return Promise.reject(error);
  }
}

function start(options: ConnectGuardOptions): ConnectGuard {
  let policy = options.policy;
  let resolved: ResolvedHosts = options.resolved ?? new Map();
  let plan = compileConnectGuard(policy, { resolved });
  const open = options.open ?? ((o: ConnectGuardProgramOptions) => ConnectGuardProgram.open(o));
  const kernel = open({
    cgroupDir: options.cgroupDir,
    tables: plan.tables,
    sample: options.sample ?? 0,
  });
  const counter = new StatsCounter("connect_guard");
  const table = options.table ?? new ProcessTable(inspectProcess);
  let names = namesByAddress(resolved);
  let stopped = false;
  let lastCounters: ConnectGuardCounters = kernel.counters();
  const context = (): DecisionContext => ({
    table,
    databasePorts: policy.monitors.database ? policy.database.ports : new Set(),
    namesOf: (ip) => names.get(ipKey(ip)) ?? [],
    bootOffsetNs: kernel.bootOffsetNs,
  });
  const drain = () => {
    const ctx = context();
    counter.counters.polls++;
    return kernel.drain((bytes) => {
      const decision = decodeDecision(bytes);
      if (decision === null) {
        counter.blind("guard_record", "decision records that did not decode");
        return;
      }
      const event = decisionEvent(decision, ctx);
      if (event === null) return;
      counter.counters.emitted++;
      if (event.ts !== undefined) {
        counter.counters.lagMs = Math.max(0, Date.now() - Date.parse(event.ts));
      }
      options.emit(event);
    });
  };
  const done = (async () => {
    try {
      while (!options.signal.aborted) {
        // Not raced with the signal: the programs are detached only once no wait is pending.
        await kernel.wait(options.pollMs ?? 100);
        drain();
      }
      while (drain() > 0);
    } finally {
      stopped = true;
      lastCounters = kernel.counters();
      kernel.close();
    }
  })();
  const unenforced = () => plan.notices.filter((n) => n.type === "warn").length;
  return {
    get notices() {
      return plan.notices;
    },
    get blocks() {
      return plan.blocks;
    },
    stats(): ConnectGuardStats {
      const c = stopped ? lastCounters : kernel.counters();
      counter.counters.dropped = c.drops;
      const snapshot = counter.snapshot();
      const spots = [...snapshot.blindSpots];
      if (unenforced() > 0) {
        spots.push({
          id: "guard_unenforced",
          reason: "policy entries and rules the kernel cannot enforce (see the start-up notices)",
          count: unenforced(),
        });
      }
      if (c.misses > 0) {
        spots.push({
          id: "guard_miss",
          reason: "decisions no table answered (allowed)",
          count: c.misses,
        });
      }
      return {
        ...snapshot,
        blindSpots: spots,
        checked: c.checked,
        blocked: c.blocked,
        reported: c.reported,
      };
    },
    update(next) {
      if (stopped || options.signal.aborted) throw new Error("The connect guard has stopped");
      const nextPolicy = next.policy ?? policy;
      const nextResolved = next.resolved ?? resolved;
      const nextPlan = compileConnectGuard(nextPolicy, { resolved: nextResolved });
      kernel.replace(nextPlan.tables);
      policy = nextPolicy;
      resolved = nextResolved;
      names = namesByAddress(resolved);
      plan = nextPlan;
      return plan.notices;
    },
    done,
  };
}

/** The names each address resolves to, keyed like the compiler's. */
function namesByAddress(resolved: ResolvedHosts): Map<string, string[]> {
  const out = new Map<string, string[]>();
  for (const [name, addrs] of resolved) {
    const canonical = name.toLowerCase().replace(/\.$/, "");
    for (const text of addrs) {
      const ip = parseIp(text);
      if (ip === null) continue;
      const list = out.get(ipKey(ip)) ?? [];
      if (!list.includes(canonical)) list.push(canonical);
      out.set(ipKey(ip), list);
    }
  }
  for (const list of out.values()) list.sort();
  return out;
}
