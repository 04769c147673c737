import assert from "node:assert/strict";
import { responseRank } from "../events/mod.ts";
import {
  type CompiledPolicy,
  compilePolicy,
  evaluate,
  loadPolicy,
  parsePolicy,
  TEMPLATES,
} from "../policy/mod.ts";
import { parseIp } from "../policy/patterns.ts";
import { resolveLayers } from "../policy/resolve.ts";
import { decodeSockaddr } from "../platform/mod.ts";
import {
  decisionSockaddr,
  GUARD_VERDICT,
  type GuardDecision,
  type GuardTables,
  type GuardVerdict,
  lookupVerdict,
} from "../platform/connect_guard_record.ts";
import type { ConnectGuardCounters } from "../platform/connect_guard_linux.ts";
import {
  compileConnectGuard,
  decisionEvent,
  type GuardKernel,
  portBlocks,
  RISK_NETWORKS,
  ruleTargetShape,
  startConnectGuard,
} from "./connect_guard.ts";
import { ProcessTable } from "./kernel_action.ts";
import type { SensorEvent } from "./sensor.ts";

const CTX = { home: "/home/u", workspace: "/w", env: {} };
const { ALLOW, REPORT, BLOCK } = GUARD_VERDICT;

/** Compiles a one-layer policy; without database ports unless it names some. */
function policy(yaml: string): CompiledPolicy {
  const text = /^database:/m.test(yaml) ? yaml : `${yaml}\ndatabase: { ports: [] }`;
  const file = parsePolicy(text, "test.yaml");
  return compilePolicy(resolveLayers([{ source: "test", policy: file }]), CTX);
}

/** The bytes of an address, as the kernel hands them over (IPv4: 4, IPv6: 16). */
function bytesOf(text: string): Uint8Array {
  if (!text.includes(":")) return new Uint8Array(text.split(".").map(Number));
  // Through the engine's own parser, without its IPv4-mapped folding.
  const bytes = new Uint8Array(16);
  const mapped = /^::ffff:(\d+\.\d+\.\d+\.\d+)$/i.exec(text);
  if (mapped !== null) {
    bytes[10] = 0xff;
    bytes[11] = 0xff;
    bytes.set(bytesOf(mapped[1] as string), 12);
    return bytes;
  }
  const ip = parseIp(text);
  assert.ok(ip !== null && ip.v === 6, text);
  let n = ip.n;
  for (let i = 15; i >= 0; i--) {
    bytes[i] = Number(n & 0xffn);
    n >>= 8n;
  }
  return bytes;
}

/** What the kernel decides for `addr` and `port` under a plan's tables. */
function kernel(tables: GuardTables, addr: string, port: number): GuardVerdict | null {
  return lookupVerdict(tables, { addr: bytesOf(addr), port });
}

/** What the engine decides for the same destination, in the kernel's terms. */
function engine(
  p: CompiledPolicy,
  addr: string,
  port: number,
  resolved: Map<string, string[]> = new Map(),
): GuardVerdict {
  const raw = bytesOf(addr);
  const target = decodeSockaddr(
    decisionSockaddr({ family: raw.length === 4 ? 4 : 6, port, addr: raw }),
  )!.target;
  const ip = parseIp(addr)!;
  const hosts = [...resolved].filter(([, addrs]) =>
    addrs.some((a) => {
      const other = parseIp(a);
      return other !== null && other.v === ip.v && BigInt(other.n) === BigInt(ip.n);
    })
  ).map(([name]) => name).sort();
  const db = p.monitors.database && p.database.ports.has(port);
  const d = evaluate({
    kind: db ? "db.connect" : "net.connect",
    target,
    pid: 7,
    detail: hosts.length > 0 ? { hosts } : {},
  }, p);
  if (d.verdict !== "deny") return ALLOW;
  return responseRank(d.response) >= responseRank("block") ? BLOCK : REPORT;
}

/** A deterministic pseudo-random sequence (xorshift32). */
function random(seed: number): () => number {
  let x = seed >>> 0 || 1;
  return () => {
    x ^= x << 13;
    x >>>= 0;
    x ^= x >>> 17;
    x ^= x << 5;
    x >>>= 0;
    return x;
  };
}

function v4Text(n: number): string {
  return [n >>> 24, (n >>> 16) & 255, (n >>> 8) & 255, n & 255].join(".");
}

function v6Text(n: bigint): string {
  const words: string[] = [];
  for (let i = 7; i >= 0; i--) words.push(((n >> BigInt(i * 16)) & 0xffffn).toString(16));
  return words.join(":");
}

/**
 * Addresses around every prefix the policy or the resolver names (the first, the last, and
 * the neighbours outside), plus random ones.
 */
function probeAddresses(p: CompiledPolicy, resolved: Map<string, string[]>, seed = 1): string[] {
  const out = new Set<string>([
    "0.0.0.0",
    "0.0.0.1",
    "127.0.0.1",
    "127.0.0.2",
    "127.255.255.255",
    "128.0.0.0",
    "255.255.255.255",
    "1.1.1.1",
    "::",
    "::1",
    "::2",
    "::ffff:127.0.0.1",
    "::ffff:10.1.2.3",
    "::ffff:0.0.0.0",
    "2001:db8::1",
    "ffff:ffff:ffff:ffff:ffff:ffff:ffff:ffff",
  ]);
  const cidrs = [...RISK_NETWORKS];
  for (const e of [...p.network.deny, ...p.network.allow, ...p.database.allow]) {
    if (e.type === "cidr") {
      cidrs.push(
        `${e.cidr.v === 4 ? v4Text(Number(e.cidr.base)) : v6Text(e.cidr.base)}/${e.cidr.bits}`,
      );
    }
    if (e.type === "ip") out.add(e.ip.v === 4 ? v4Text(e.ip.n) : v6Text(e.ip.n));
  }
  for (const addrs of resolved.values()) for (const a of addrs) out.add(a);
  for (const c of cidrs) {
    const [a, b] = c.split("/") as [string, string];
    const ip = parseIp(a)!;
    const width = ip.v === 4 ? 32 : 128;
    const size = 1n << BigInt(width - Number(b));
    const base = BigInt(ip.n);
    for (const n of [base - 1n, base, base + size / 2n, base + size - 1n, base + size]) {
      const max = (1n << BigInt(width)) - 1n;
      if (n < 0n || n > max) continue;
      out.add(ip.v === 4 ? v4Text(Number(n)) : v6Text(n));
    }
  }
  const next = random(seed);
  for (let i = 0; i < 40; i++) {
    out.add(v4Text(next()));
    out.add(v6Text((BigInt(next()) << 96n) | (BigInt(next()) << 32n) | BigInt(next())));
  }
  return [...out];
}

/** Ports around every port the policy names, plus random ones. */
function probePorts(p: CompiledPolicy, seed = 2): number[] {
  const out = new Set<number>([0, 1, 22, 53, 80, 443, 1023, 1024, 65535]);
  const add = (lo: number, hi: number) => {
    for (const n of [lo - 1, lo, hi, hi + 1]) if (n >= 0 && n <= 65535) out.add(n);
  };
  for (const e of [...p.network.deny, ...p.network.allow, ...p.database.allow]) {
    if (e.type !== "any" && e.type !== "unix" && e.ports !== null) add(e.ports.lo, e.ports.hi);
  }
  for (const port of p.database.ports) add(port, port);
  const next = random(seed);
  for (let i = 0; i < 12; i++) out.add(next() % 65536);
  return [...out];
}

/** Checks that the kernel decides as the engine on every probe; returns how many it checked. */
function assertAgrees(
  p: CompiledPolicy,
  resolved: Map<string, string[]> = new Map(),
  extraPorts: number[] = [],
): number {
  const plan = compileConnectGuard(p, { resolved });
  const ports = [...probePorts(p), ...extraPorts];
  let n = 0;
  for (const addr of probeAddresses(p, resolved)) {
    for (const port of ports) {
      // The kernel judges the peer: an IPv4-mapped address is its IPv4 address.
      const peer = addr.toLowerCase().startsWith("::ffff:") ? addr.slice(7) : addr;
      let want = engine(p, peer, port, resolved);
      // 0.0.0.0 and :: reach loopback: the kernel takes the stricter of the two.
      if (peer === "0.0.0.0") {
        want = Math.max(want, engine(p, "127.0.0.1", port, resolved)) as GuardVerdict;
      }
      if (addr === "::") want = Math.max(want, engine(p, "::1", port, resolved)) as GuardVerdict;
      assert.equal(kernel(plan.tables, addr, port), want, `${addr} port ${port}`);
      n++;
    }
  }
  return n;
}

// ---------------------------------------------------------------------------------------------
// Building blocks

Deno.test("`portBlocks()` splits a range into aligned blocks that cover it exactly", () => {
  assert.deepEqual(portBlocks(0, 65535), [{ port: 0, bits: 0 }]);
  assert.deepEqual(portBlocks(22, 22), [{ port: 22, bits: 16 }]);
  assert.deepEqual(portBlocks(8000, 8003), [{ port: 8000, bits: 14 }]);
  const next = random(9);
  for (let i = 0; i < 200; i++) {
    const a = next() % 65536;
    const b = next() % 65536;
    const [lo, hi] = a <= b ? [a, b] : [b, a];
    const blocks = portBlocks(lo, hi);
    let at = lo;
    for (const block of blocks) {
      const size = 1 << (16 - block.bits);
      assert.equal(block.port, at, `${lo}-${hi}`);
      assert.equal(block.port % size, 0, "aligned");
      at += size;
    }
    assert.equal(at, hi + 1, `${lo}-${hi} covered exactly`);
    assert.ok(blocks.length <= 32);
  }
});

Deno.test("`ruleTargetShape()` accepts literals, whole-field wildcards and dotted IPv4 prefixes", () => {
  const shape = (t: string) => {
    const s = ruleTargetShape(t);
    assert.ok(s.ok, t);
    return { ips: s.ips, names: s.names, ports: s.ports };
  };
  const none = { ips: [], names: [], ports: [] };
  assert.deepEqual(shape("*"), none);
  assert.deepEqual(shape("*:*"), none);
  assert.deepEqual(shape("*:22"), { ...none, ports: [22] });
  assert.deepEqual(shape("10.0.0.1:5432"), {
    ...none,
    ips: [{ v: 4, n: 0x0a000001 }],
    ports: [5432],
  });
  assert.deepEqual(shape("10.0.0.1:*"), { ...none, ips: [{ v: 4, n: 0x0a000001 }] });
  assert.deepEqual(shape("[::1]:*"), { ...none, ips: [{ v: 6, n: 1n }] });
  assert.deepEqual(shape("[::1]:6379"), { ...none, ips: [{ v: 6, n: 1n }], ports: [6379] });
  assert.deepEqual(shape("127.*"), { ...none, ips: [{ v: 4, n: 0x7f000000, bits: 8 }] });
  assert.deepEqual(shape("10.0.*:22"), {
    ...none,
    ips: [{ v: 4, n: 0x0a000000, bits: 16 }],
    ports: [22],
  });
  assert.deepEqual(shape("192.168.1.*"), { ...none, ips: [{ v: 4, n: 0xc0a80100, bits: 24 }] });
  assert.deepEqual(shape("Evil.Example:443"), { ...none, names: ["evil.example"], ports: [443] });
  // Names only: a wildcard over the name, with a whole port.
  assert.deepEqual(shape("*.evil.example:*"), none);
  assert.deepEqual(shape("*.evil.example:8443"), { ...none, ports: [8443] });
  assert.deepEqual(shape("*evil*"), none);
  // These match no target at all (a target always ends in its port).
  assert.deepEqual(shape("evil.example"), none);
  assert.deepEqual(shape("*.evil.example"), none);
  assert.deepEqual(shape("10.0.0.1:http"), none);
  for (
    const t of [
      "10.0.*.1:*",
      "1*:80",
      "*.1:80",
      "[fe80::*]:22",
      "*:80*",
      "*.evil.example:4*",
      "*evil*4",
      "12*",
      "300.*",
    ]
  ) {
    assert.equal(ruleTargetShape(t).ok, false, t);
  }
});

Deno.test("`RISK_NETWORKS` is where the engine's risk score gives network factors", () => {
  const p = policy("mode: pause\nnetwork: { deny: ['*'] }");
  for (const cidr of RISK_NETWORKS) {
    const [addr] = cidr.split("/") as [string];
    const target = addr.includes(":") ? `[${addr}]:80` : `${addr}:80`;
    const d = evaluate({ kind: "net.connect", target, pid: 1 }, p);
    assert.ok(
      d.factors.some((f) => f.id === "private_network" || f.id === "cloud_metadata"),
      `${cidr}: ${JSON.stringify(d.factors)}`,
    );
  }
  const outside = evaluate({ kind: "net.connect", target: "11.0.0.1:80", pid: 1 }, p);
  assert.ok(!outside.factors.some((f) => f.id === "private_network"));
});

// ---------------------------------------------------------------------------------------------
// Verdicts

Deno.test("`compileConnectGuard()` blocks a denied CIDR in mode block, for IPv4 and IPv4-mapped IPv6", () => {
  const p = policy("mode: block\nnetwork: { deny: [10.0.0.0/8] }");
  const { tables, blocks, notices } = compileConnectGuard(p);
  assert.equal(blocks, true);
  assert.deepEqual(notices, []);
  assert.equal(kernel(tables, "10.1.2.3", 80), BLOCK);
  assert.equal(kernel(tables, "10.255.255.255", 1), BLOCK);
  assert.equal(kernel(tables, "::ffff:10.1.2.3", 443), BLOCK);
  assert.equal(kernel(tables, "11.0.0.0", 80), ALLOW);
  assert.equal(kernel(tables, "9.255.255.255", 80), ALLOW);
  assert.equal(kernel(tables, "::1", 80), ALLOW);
  assertAgrees(p);
});

Deno.test("`compileConnectGuard()` blocks single addresses, address:port and a port on any host", () => {
  const p = policy(
    "mode: block\nnetwork: { deny: [127.0.0.2, '127.0.0.1:9', ':2222', '[::1]:6379', '8000-8999'] }",
  );
  const t = compileConnectGuard(p).tables;
  assert.equal(kernel(t, "127.0.0.2", 80), BLOCK);
  assert.equal(kernel(t, "127.0.0.2", 1), BLOCK);
  assert.equal(kernel(t, "127.0.0.1", 9), BLOCK);
  assert.equal(kernel(t, "127.0.0.1", 10), ALLOW);
  assert.equal(kernel(t, "127.0.0.1", 8), ALLOW);
  assert.equal(kernel(t, "8.8.8.8", 2222), BLOCK);
  assert.equal(kernel(t, "2001:db8::1", 2222), BLOCK);
  assert.equal(kernel(t, "::1", 6379), BLOCK);
  assert.equal(kernel(t, "::1", 6380), ALLOW);
  assert.equal(kernel(t, "::2", 6379), ALLOW);
  assertAgrees(p, new Map(), [7999, 8000, 8500, 8999, 9000]);
});

Deno.test("`compileConnectGuard()` blocks IPv6 prefixes and keeps IPv4-mapped addresses out of them", () => {
  const p = policy("mode: block\nnetwork: { deny: ['fd00::/8', '2001:db8:1::/48:443'] }");
  const t = compileConnectGuard(p).tables;
  assert.equal(kernel(t, "fd12::1", 80), BLOCK);
  assert.equal(kernel(t, "fe00::1", 80), ALLOW);
  assert.equal(kernel(t, "2001:db8:1:ffff::9", 443), BLOCK);
  assert.equal(kernel(t, "2001:db8:1:ffff::9", 444), ALLOW);
  assert.equal(kernel(t, "2001:db8:2::9", 443), ALLOW);
  assertAgrees(p);
});

Deno.test("`compileConnectGuard()` follows a default-deny allow list, loopback included", () => {
  const p = policy(
    "mode: block\nnetwork: { default: deny, allow: ['127.0.0.1:8080', ':53', '192.168.0.0/16'] }",
  );
  const t = compileConnectGuard(p).tables;
  assert.equal(kernel(t, "127.0.0.1", 8080), ALLOW);
  assert.equal(kernel(t, "127.0.0.1", 8081), BLOCK);
  assert.equal(kernel(t, "127.0.0.2", 8080), BLOCK);
  assert.equal(kernel(t, "9.9.9.9", 53), ALLOW);
  assert.equal(kernel(t, "::1", 53), ALLOW);
  assert.equal(kernel(t, "192.168.7.7", 22), ALLOW);
  assert.equal(kernel(t, "1.1.1.1", 443), BLOCK);
  assert.equal(kernel(t, "::1", 443), BLOCK);
  assertAgrees(p);
});

Deno.test("`compileConnectGuard()` lets deny beat allow, as the engine does", () => {
  const p = policy(
    "mode: block\nnetwork: { allow: ['10.0.0.0/8'], deny: ['10.1.0.0/16', '10.0.0.0/8:22'] }",
  );
  const t = compileConnectGuard(p).tables;
  assert.equal(kernel(t, "10.1.2.3", 443), BLOCK);
  assert.equal(kernel(t, "10.2.2.3", 443), ALLOW);
  assert.equal(kernel(t, "10.2.2.3", 22), BLOCK);
  assertAgrees(p);
});

Deno.test("`compileConnectGuard()` blocks 0.0.0.0 and :: where loopback is blocked (they reach loopback)", () => {
  const p = policy(
    "mode: block\nnetwork: { deny: ['127.0.0.1:6379', '[::1]:5000', 'localhost:7000'] }",
  );
  const t = compileConnectGuard(p).tables;
  assert.equal(kernel(t, "0.0.0.0", 6379), BLOCK);
  assert.equal(kernel(t, "::ffff:0.0.0.0", 6379), BLOCK);
  assert.equal(kernel(t, "0.0.0.0", 6380), ALLOW);
  assert.equal(kernel(t, "::", 5000), BLOCK);
  assert.equal(kernel(t, "127.9.9.9", 7000), BLOCK, "localhost is 127.0.0.0/8");
  assert.equal(kernel(t, "::1", 7000), BLOCK, "and ::1");
  assert.equal(kernel(t, "0.0.0.0", 7000), BLOCK);
  assertAgrees(p);
});

Deno.test("`compileConnectGuard()` matches host names through the addresses it is given", () => {
  const p = policy(
    "mode: block\nnetwork: { default: allow, deny: [evil.example, 'db.example:5432', '*.bad.example'], allow: [good.example] }",
  );
  const resolved = new Map([
    ["evil.example", ["203.0.113.7", "2001:db8::7"]],
    ["db.example", ["198.51.100.5"]],
    ["api.bad.example", ["198.51.100.9"]],
    ["good.example", ["203.0.113.8"]],
  ]);
  const plan = compileConnectGuard(p, { resolved });
  assert.deepEqual(plan.notices, []);
  const t = plan.tables;
  assert.equal(kernel(t, "203.0.113.7", 443), BLOCK);
  assert.equal(kernel(t, "2001:db8::7", 443), BLOCK);
  assert.equal(kernel(t, "203.0.113.6", 443), ALLOW);
  assert.equal(kernel(t, "198.51.100.5", 5432), BLOCK);
  assert.equal(kernel(t, "198.51.100.5", 443), ALLOW);
  assert.equal(kernel(t, "198.51.100.9", 80), BLOCK, "a resolved name in *.bad.example");
  assertAgrees(p, resolved);
});

Deno.test("`compileConnectGuard()` names each entry it cannot match: unresolved hosts, domains with no resolved name, unix sockets", () => {
  const p = policy(
    "mode: block\nnetwork: { default: allow, deny: [evil.example, '*.bad.example', 'unix:/run/docker.sock'], allow: [api.example.com] }",
  );
  const plan = compileConnectGuard(p);
  const messages = plan.notices.map((n) => `${n.type}: ${n.message}`);
  assert.deepEqual(messages, [
    'warn: network.deny "evil.example": no address is resolved for "evil.example", so the connect guard cannot match it in the kernel',
    'warn: network.deny "*.bad.example": no resolved host name falls in this domain, so the connect guard cannot match it in the kernel (it knows the addresses of the policy\'s own host names only)',
    'warn: network.deny "unix:/run/docker.sock": unix sockets are not seen by the connect guard (IPv4 and IPv6 only), so it is not enforced in the kernel',
    'warn: network.allow "api.example.com": no address is resolved for "api.example.com", so the connect guard cannot match it in the kernel',
  ]);
  assert.equal(plan.blocks, false);
  assertAgrees(p);
});

Deno.test("`compileConnectGuard()` reports but never blocks in modes monitor and alert", () => {
  for (const mode of ["monitor", "alert"]) {
    const p = policy(`mode: ${mode}\nnetwork: { default: deny, allow: ['127.0.0.1:80'] }`);
    const plan = compileConnectGuard(p);
    assert.equal(plan.blocks, false, mode);
    assert.equal(kernel(plan.tables, "1.1.1.1", 443), REPORT, mode);
    assert.equal(kernel(plan.tables, "127.0.0.1", 80), ALLOW, mode);
    assert.ok(plan.tables.ports.every((b) => b.verdict !== BLOCK));
    assert.deepEqual(plan.notices.map((n) => n.type), ["info"]);
    assert.match(plan.notices[0]!.message, new RegExp(`mode "${mode}"`));
    assertAgrees(p);
  }
});

Deno.test("`compileConnectGuard()` in mode pause blocks a denial whose risk reaches a block response, and reports the others", () => {
  // net.connect 10 + denied_by_list 40 = 50 (alert); a private address adds 15: 65 (pause).
  const p = policy("mode: pause\nnetwork: { deny: ['10.0.0.0/8', '8.8.8.0/24'] }");
  const t = compileConnectGuard(p).tables;
  assert.equal(kernel(t, "10.1.1.1", 80), BLOCK);
  assert.equal(kernel(t, "8.8.8.8", 80), REPORT);
  assertAgrees(p);
});

Deno.test("`compileConnectGuard()` follows a rule's response above the mode's floor, and caps it by the mode", () => {
  const rules = `rules:
  - id: no_ssh_out
    description: Detect SSH connections
    match: { kind: net.connect, target: "*:22" }
    risk: 10
    response: block
  - id: no_db_host
    description: Detect a connection to the database host
    match: { kind: [net.connect, db.connect], target: ["10.9.9.9:*", "db.example:5432"] }
    risk: 10
    response: kill`;
  const resolved = new Map([["db.example", ["10.7.7.7"]]]);
  const kill = policy(`mode: kill\n${rules}`);
  const t = compileConnectGuard(kill, { resolved }).tables;
  assert.equal(kernel(t, "1.2.3.4", 22), BLOCK);
  assert.equal(kernel(t, "1.2.3.4", 23), ALLOW);
  assert.equal(kernel(t, "10.7.7.7", 5432), BLOCK);
  assert.equal(kernel(t, "10.7.7.7", 5433), ALLOW);
  assertAgrees(kill, resolved);
  // In mode alert the rule's response is capped at alert: reported, not blocked.
  const alert = policy(`mode: alert\n${rules}`);
  assert.equal(kernel(compileConnectGuard(alert, { resolved }).tables, "1.2.3.4", 22), REPORT);
  assertAgrees(alert, resolved);
});

Deno.test("`compileConnectGuard()` leaves out, and names, rules it cannot express", () => {
  const p = policy(`mode: block
rules:
  - id: curl_out
    description: Detect curl reaching out
    match: { kind: net.connect, process: curl }
    risk: 50
  - id: ssh_but_git
    description: Detect SSH connections other than git's
    match: { kind: net.connect, target: "*:22" }
    exceptions: [{ process: git }]
    risk: 50
  - id: lan_scan
    description: Detect connections to the office LAN
    match: { kind: net.connect, target: "10.*.0.1:*" }
    risk: 50
  - id: odd_ports
    description: Detect connections to ports starting with 4
    match: { kind: net.connect, target: "*:4*" }
    risk: 50
  - id: files_only
    description: Detect reads of secrets
    match: { kind: file.read, target: "/secret/**" }
    risk: 50`);
  const plan = compileConnectGuard(p);
  assert.deepEqual(plan.notices.map((n) => n.message), [
    'Rule "curl_out" matches by process, which the connect guard cannot tell apart: it does not block for this rule in the kernel',
    'Rule "ssh_but_git" has an exception by process, which the connect guard cannot tell apart: it does not block for this rule in the kernel',
    'Rule "lan_scan": target "10.*.0.1:*" is a wildcard over the address, which the connect guard cannot express: it does not block for this rule in the kernel',
    'Rule "odd_ports": target "*:4*" has a wildcard within the port, which the connect guard cannot express: it does not block for this rule in the kernel',
  ]);
  assert.equal(kernel(plan.tables, "10.0.1.1", 22), ALLOW);
  assert.equal(plan.kernelPolicy.rulesByKind.get("net.connect")?.length, 0);
  // The engine's own copy is untouched.
  assert.equal(p.rulesByKind.get("net.connect")?.length, 4);
});

Deno.test("`compileConnectGuard()` treats database ports as db.connect, against database.allow", () => {
  const p = policy(
    "mode: block\ndatabase: { ports: [5432], allow: ['127.0.0.1:5432'] }\nnetwork: { default: allow }",
  );
  const t = compileConnectGuard(p).tables;
  assert.equal(kernel(t, "127.0.0.1", 5432), ALLOW);
  assert.equal(kernel(t, "10.0.0.5", 5432), BLOCK);
  assert.equal(kernel(t, "10.0.0.5", 5433), ALLOW);
  assertAgrees(p);
  const off = policy(
    "mode: block\nmonitors: { database: false }\ndatabase: { ports: [5432], allow: [] }",
  );
  assert.equal(kernel(compileConnectGuard(off).tables, "10.0.0.5", 5432), ALLOW);
  assertAgrees(off);
});

Deno.test("`compileConnectGuard()` allows every net.connect when the network monitor is off", () => {
  const p = policy("mode: block\nmonitors: { network: false }\nnetwork: { default: deny }");
  const plan = compileConnectGuard(p);
  assert.equal(plan.blocks, false);
  assert.equal(kernel(plan.tables, "1.1.1.1", 443), ALLOW);
  assertAgrees(p);
});

Deno.test("`compileConnectGuard()` blocks the default database ports outside database.allow", () => {
  const p = compilePolicy(
    resolveLayers([{ source: "test", policy: parsePolicy("mode: block", "test.yaml") }]),
    CTX,
  );
  const plan = compileConnectGuard(p);
  assert.equal(plan.blocks, true);
  assert.equal(kernel(plan.tables, "127.0.0.1", 5432), BLOCK);
  assert.equal(kernel(plan.tables, "::1", 6379), BLOCK);
  assert.equal(kernel(plan.tables, "127.0.0.1", 5433), ALLOW);
  assertAgrees(p);
});

Deno.test("`compileConnectGuard()` keeps the tables small: no prefix whose table is its parent's", () => {
  const open = compileConnectGuard(policy("mode: block"));
  // The two roots, one table, one block: the private ranges and loopback change nothing.
  assert.equal(open.tables.prefixes.length, 2);
  assert.equal(open.tables.tables, 1);
  assert.deepEqual(open.tables.ports, [{ table: 0, port: 0, bits: 0, verdict: ALLOW }]);
  const one = compileConnectGuard(policy("mode: block\nnetwork: { deny: ['10.0.0.0/8'] }"));
  assert.equal(one.tables.prefixes.length, 3);
  assert.equal(one.tables.tables, 2);
  // Every lookup finds an answer: both roots and every table's /0 block are there.
  for (const plan of [open, one]) {
    assert.ok(plan.tables.prefixes.some((x) => x.family === 4 && x.bits === 0));
    assert.ok(plan.tables.prefixes.some((x) => x.family === 6 && x.bits === 0));
    for (let id = 0; id < plan.tables.tables; id++) {
      assert.ok(plan.tables.ports.some((b) => b.table === id && b.bits === 0));
    }
  }
});

Deno.test("`compileConnectGuard()` agrees with the engine on every built-in template, in modes block and pause", async () => {
  const resolved = new Map([
    ["api.openai.com", ["162.159.140.245"]],
    ["api.anthropic.com", ["160.79.104.10", "2607:6bc0::10"]],
    ["github.com", ["140.82.121.4"]],
    ["registry.npmjs.org", ["104.16.0.35"]],
    ["pypi.org", ["151.101.0.223"]],
  ]);
  let checked = 0;
  for (const name of TEMPLATES) {
    const resolvedPolicy = await loadPolicy(name);
    for (const mode of ["block", "pause"] as const) {
      const p = compilePolicy({ ...resolvedPolicy, mode }, CTX);
      checked += assertAgrees(p, resolved);
    }
  }
  assert.ok(checked > 10_000, `${checked} destinations checked`);
});

// ---------------------------------------------------------------------------------------------
// Decisions to events

function decision(over: Partial<GuardDecision> = {}): GuardDecision {
  return {
    bootNs: 5_000_000_000n,
    cgroup: 1184n,
    pid: 4242,
    tid: 4243,
    uid: 1000,
    table: 1,
    family: 4,
    port: 9,
    addr: new Uint8Array([127, 0, 0, 1]),
    verdict: BLOCK,
    hook: "connect4",
    protocol: 6,
    comm: "python3",
    ...over,
  };
}

const TABLE = new ProcessTable((pid) =>
  pid === 4242 ? { ppid: 1, exe: "/usr/bin/python3", cmdline: ["python3", "x.py"] } : null
);

function context(namesOf: (ip: unknown) => string[] = () => []) {
  return {
    table: TABLE,
    databasePorts: new Set([5432]),
    namesOf,
    bootOffsetNs: 1_700_000_000_000_000_000n,
  };
}

Deno.test("`decisionEvent()` turns a blocked connect into a net.connect with blocked: EPERM", () => {
  const event = decisionEvent(decision(), context())!;
  assert.equal(event.kind, "net.connect");
  assert.equal(event.target, "127.0.0.1:9");
  assert.equal(event.pid, 4242);
  assert.equal(event.exe, "/usr/bin/python3");
  assert.equal(event.sensor, "connect_guard");
  assert.equal(event.ts, new Date(1_700_000_005_000).toISOString());
  assert.deepEqual(event.detail, {
    syscall: "connect",
    family: "inet",
    result: "failed",
    errno: "EPERM",
    tid: 4243,
    protocol: "tcp",
    blocked: "EPERM",
  });
  // The engine journals it as a block.
  const p = policy("mode: block\nnetwork: { deny: ['127.0.0.1:9'] }");
  const d = evaluate({ ...event, pid: event.pid ?? null }, p);
  assert.equal(d.verdict, "deny");
  assert.equal(d.response, "block");
  assert.ok(d.factors.some((f) => f.id === "blocked"));
});

Deno.test("`decisionEvent()` writes targets as the other sensors do: IPv6, IPv4-mapped, UDP sends, databases", () => {
  const v6 = decisionEvent(
    decision({ family: 6, addr: bytesOf("::1"), port: 6379, hook: "connect6" }),
    context(),
  )!;
  assert.equal(v6.target, "[::1]:6379");
  assert.equal(v6.detail.family, "inet6");
  const mapped = decisionEvent(
    decision({ family: 6, addr: bytesOf("::ffff:10.1.2.3"), hook: "connect6" }),
    context(),
  )!;
  // The peer, as the engine should judge it: a rule on "10.*" must not be dodged by spelling.
  assert.equal(mapped.target, "10.1.2.3:9");
  assert.equal(mapped.detail.family, "inet6");
  const udp = decisionEvent(decision({ hook: "sendmsg4", protocol: 17, port: 53 }), context())!;
  assert.equal(udp.kind, "net.connect");
  assert.equal(udp.detail.via, "sendto");
  assert.equal(udp.detail.syscall, "sendmsg");
  assert.equal(udp.detail.protocol, "udp");
  const db = decisionEvent(decision({ port: 5432 }), context())!;
  assert.equal(db.kind, "db.connect");
});

Deno.test("`decisionEvent()` leaves a reported connect's outcome unknown, and names hosts and an unknown process", () => {
  const event = decisionEvent(
    decision({ verdict: REPORT, pid: 99, tid: 99 }),
    context(() => ["evil.example"]),
  )!;
  assert.equal(event.detail.result, "unknown");
  assert.equal(event.detail.blocked, undefined);
  assert.deepEqual(event.detail.hosts, ["evil.example"]);
  assert.equal(event.exe, null);
  assert.equal(event.detail.comm, "python3");
});

// ---------------------------------------------------------------------------------------------
// The running guard, on a fake kernel

class FakeKernel implements GuardKernel {
  readonly bootOffsetNs = 0n;
  records: Uint8Array[] = [];
  replaced: GuardTables[] = [];
  closed = false;
  constructor(readonly first: GuardTables) {}
  replace(tables: GuardTables): void {
    this.replaced.push(tables);
  }
  drain(onRecord: (bytes: Uint8Array) => void): number {
    const n = this.records.length;
    for (const r of this.records.splice(0)) onRecord(r);
    return n;
  }
  wait(): Promise<boolean> {
    return new Promise((resolve) => setTimeout(() => resolve(this.records.length > 0), 5));
  }
  counters(): ConnectGuardCounters {
    return { checked: 3, blocked: 2, reported: 1, drops: 0, misses: 0 };
  }
  close(): void {
    this.closed = true;
  }
}

/** A record as the program writes it. */
function record(addr: number[], port: number, verdict: number): Uint8Array {
  const bytes = new Uint8Array(72);
  const view = new DataView(bytes.buffer);
  view.setBigUint64(0, 1_000_000n, true);
  view.setUint32(16, 4242, true);
  view.setUint32(20, 4242, true);
  view.setUint16(32, 2, true);
  view.setUint16(34, port, true);
  bytes.set(addr, 36);
  bytes[52] = verdict;
  bytes[53] = 1;
  bytes[54] = 6;
  bytes.set(new TextEncoder().encode("python3"), 56);
  return bytes;
}

Deno.test("`startConnectGuard()` emits the kernel's decisions, swaps tables on update, and detaches on abort", async () => {
  const p = policy("mode: block\nnetwork: { deny: [evil.example, '127.0.0.1:9'] }");
  let fake: FakeKernel | null = null;
  const events: SensorEvent[] = [];
  const controller = new AbortController();
  const guard = await startConnectGuard({
    cgroupDir: "/sys/fs/cgroup/unified/x",
    policy: p,
    emit: (e) => events.push(e),
    signal: controller.signal,
    table: TABLE,
    pollMs: 5,
    open: (o) => (fake = new FakeKernel(o.tables)),
  });
  assert.ok(fake !== null);
  const k = fake as FakeKernel;
  assert.equal(guard.blocks, true);
  assert.equal(guard.notices.length, 1, "evil.example is not resolved");
  assert.equal(kernel(k.first, "127.0.0.1", 9), BLOCK);
  k.records.push(record([127, 0, 0, 1], 9, BLOCK));
  const deadline = Date.now() + 2000;
  while (events.length === 0 && Date.now() < deadline) await new Promise((r) => setTimeout(r, 5));
  assert.equal(events.length, 1);
  assert.equal(events[0]!.target, "127.0.0.1:9");
  assert.equal(events[0]!.detail.blocked, "EPERM");
  const notices = guard.update({ resolved: new Map([["evil.example", ["203.0.113.7"]]]) });
  assert.deepEqual(notices, []);
  assert.equal(k.replaced.length, 1);
  assert.equal(kernel(k.replaced[0]!, "203.0.113.7", 443), BLOCK);
  // Decisions read after the update name the host.
  k.records.push(record([203, 0, 113, 7], 443, BLOCK));
  controller.abort();
  await guard.done;
  assert.equal(k.closed, true);
  assert.equal(events.length, 2, "the last decisions are emitted before the guard stops");
  assert.deepEqual(events[1]!.detail.hosts, ["evil.example"]);
  const stats = guard.stats();
  assert.equal(stats.sensor, "connect_guard");
  assert.equal(stats.emitted, 2);
  assert.equal(stats.blocked, 2);
  assert.throws(() => guard.update({}), /stopped/);
});

Deno.test("`startConnectGuard()` rejects when the kernel side cannot open, and attaches nothing", async () => {
  const p = policy("mode: block");
  await assert.rejects(
    startConnectGuard({
      cgroupDir: "/nope",
      policy: p,
      emit: () => {},
      signal: new AbortController().signal,
      open: () => {
        throw new Error("Cannot attach");
      },
    }),
    /Cannot attach/,
  );
});
