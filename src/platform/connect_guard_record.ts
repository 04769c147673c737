/**
 * The kernel ABI of the connect guard (`bpf/connect_guard.bpf.c`): the tables Sentry fills, the
 * keys they are written under, the decision records the programs write, and a model of the
 * programs' lookup. Pure functions over bytes and numbers, tested without a kernel.
 *
 * The programs take two lookups per connect or UDP send:
 *
 * 1. the destination address in an LPM trie of prefixes (`prefixes4`, `prefixes6`; an
 *    IPv4-mapped IPv6 address is looked up as IPv4), which gives a port table id;
 * 2. (table id, port) in an LPM trie of port ranges (`ports`), which gives the verdict.
 *
 * Every key starts with a generation: Sentry fills the generation not in use, then flips
 * `config.gen`, so that an update swaps every table at once. A table id carries its generation
 * in its top bit ({@link tableId}).
 *
 * A decision record is 72 bytes (`struct decision`):
 *
 * | offset | size  | field                                                   |
 * | ------ | ----- | ------------------------------------------------------- |
 * | 0      | u64   | time, CLOCK_BOOTTIME nanoseconds                        |
 * | 8      | u64   | the caller's cgroup v2 id                               |
 * | 16     | u32   | tgid (the pid, host namespace)                          |
 * | 20     | u32   | tid                                                     |
 * | 24     | u32   | uid                                                     |
 * | 28     | u32   | the port table id that decided                          |
 * | 32     | u16   | family: AF_INET (2) or AF_INET6 (10)                    |
 * | 34     | u16   | port, host byte order                                   |
 * | 36     | 16 B  | address, network byte order (IPv4 in the first 4 bytes) |
 * | 52     | u8    | verdict ({@link GUARD_VERDICT})                         |
 * | 53     | u8    | hook ({@link GUARD_HOOKS})                              |
 * | 54     | u8    | IP protocol (6 TCP, 17 UDP)                             |
 * | 55     | u8    | padding                                                 |
 * | 56     | 16 B  | comm, NUL-padded                                        |
 *
 * @module
 */

/** A verdict in the port tables, as in `connect_guard.bpf.c`. */
export const GUARD_VERDICT = {
  /** Allowed; recorded only when sampled. */
  ALLOW: 0,
  /** Denied by the policy, but its response does not block: allowed, and recorded. */
  REPORT: 1,
  /** Denied and blocked: the call fails with EPERM, and is recorded. */
  BLOCK: 2,
} as const;

/** One of {@link GUARD_VERDICT}'s values. */
export type GuardVerdict = typeof GUARD_VERDICT[keyof typeof GUARD_VERDICT];

/** The programs, by the hook number a record carries (index 0 is unused). */
export const GUARD_HOOKS = [null, "connect4", "connect6", "sendmsg4", "sendmsg6"] as const;

/** A program of the guard. */
export type GuardHook = NonNullable<typeof GUARD_HOOKS[number]>;

/** Counter slots in the `counters` map, as in `connect_guard.bpf.c`. */
export const GUARD_COUNTER = {
  CHECKED: 0,
  BLOCKED: 1,
  REPORTED: 2,
  DROPS: 3,
  MISSES: 4,
} as const;

/** The number of counter slots. */
export const GUARD_COUNTER_SLOTS = 5;

/** The size of a decision record. */
export const DECISION_SIZE = 72;

/** The size of a prefix key: `{u32 prefixlen; u32 gen; u8 addr[4 or 16]}`. */
export const KEY4_SIZE = 12;
/** The size of an IPv6 prefix key. */
export const KEY6_SIZE = 24;
/** The size of a port key: `{u32 prefixlen; u32 table; be16 port; u16 pad}`. */
export const PORT_KEY_SIZE = 12;
/** The size of the config value: `{u32 gen; u32 sample}`. */
export const CONFIG_SIZE = 8;

/** An address prefix and the port table its addresses use. */
export interface GuardPrefix {
  family: 4 | 6;
  /** The address, network byte order: 4 or 16 bytes (bits past `bits` are zero). */
  addr: Uint8Array;
  /** The prefix length: 0-32 or 0-128. */
  bits: number;
  /** The port table: an index into the compiled tables (without a generation). */
  table: number;
}

/** An aligned block of ports of one table, with its verdict. */
export interface GuardPortBlock {
  table: number;
  /** The first port of the block; its low `16 - bits` bits are zero. */
  port: number;
  /** The block's prefix length over the 16 bits of the port: 0 is every port, 16 one. */
  bits: number;
  verdict: GuardVerdict;
}

/**
 * What the guard's maps hold, compiled from a policy (`src/sensors/connect_guard.ts`). Every
 * family has a /0 prefix, and every table a block of 0 bits, so every lookup finds an answer.
 */
export interface GuardTables {
  prefixes: GuardPrefix[];
  ports: GuardPortBlock[];
  /** How many port tables there are (ids 0 to `tables - 1`). */
  tables: number;
}

/** The table id a generation's keys and values use: the generation in the top bit. */
export function tableId(table: number, gen: 0 | 1): number {
  if (!Number.isInteger(table) || table < 0 || table >= 0x80000000) {
    throw new RangeError(`Bad port table id ${table}: 0 to 2^31 - 1`);
  }
  return (table | (gen << 31)) >>> 0;
}

/** The key of a prefix in `prefixes4` or `prefixes6`, for one generation. */
export function prefixKey(prefix: GuardPrefix, gen: 0 | 1): Uint8Array<ArrayBuffer> {
  const width = prefix.family === 4 ? 4 : 16;
  if (prefix.addr.length !== width) {
    throw new RangeError(`Bad IPv${prefix.family} prefix: ${prefix.addr.length} address bytes`);
  }
  if (prefix.bits < 0 || prefix.bits > width * 8) {
    throw new RangeError(`Bad IPv${prefix.family} prefix length ${prefix.bits}`);
  }
  const key = new Uint8Array(prefix.family === 4 ? KEY4_SIZE : KEY6_SIZE);
  const view = new DataView(key.buffer);
  view.setUint32(0, 32 + prefix.bits, true);
  view.setUint32(4, gen, true);
  key.set(prefix.addr, 8);
  return key;
}

/** The key of a port block in `ports`, for one generation. */
export function portKey(block: GuardPortBlock, gen: 0 | 1): Uint8Array<ArrayBuffer> {
  if (block.bits < 0 || block.bits > 16 || block.port < 0 || block.port > 0xffff) {
    throw new RangeError(`Bad port block ${block.port}/${block.bits}`);
  }
  const key = new Uint8Array(PORT_KEY_SIZE);
  const view = new DataView(key.buffer);
  view.setUint32(0, 32 + block.bits, true);
  view.setUint32(4, tableId(block.table, gen), true);
  view.setUint16(8, block.port, false);
  return key;
}

/** The value of a prefix: its table id in the generation. */
export function prefixValue(prefix: GuardPrefix, gen: 0 | 1): Uint8Array<ArrayBuffer> {
  return new Uint8Array(new Uint32Array([tableId(prefix.table, gen)]).buffer);
}

/** The `config` value: the live generation, and one allowed decision in `sample` recorded. */
export function configValue(gen: 0 | 1, sample: number): Uint8Array<ArrayBuffer> {
  if (!Number.isInteger(sample) || sample < 0 || sample > 0xffffffff) {
    throw new RangeError(`Bad sample rate ${sample}: 0 (none) or one in N`);
  }
  return new Uint8Array(new Uint32Array([gen, sample]).buffer);
}

/** One decision of the guard, decoded. */
export interface GuardDecision {
  /** When, CLOCK_BOOTTIME nanoseconds. */
  bootNs: bigint;
  /** The caller's cgroup v2 id. */
  cgroup: bigint;
  pid: number;
  tid: number;
  uid: number;
  /** The table id that decided (with its generation bit). */
  table: number;
  /** The socket's family, as the caller addressed it. */
  family: 4 | 6;
  port: number;
  /** The address: 4 or 16 bytes, network byte order. */
  addr: Uint8Array;
  verdict: GuardVerdict;
  hook: GuardHook;
  /** The IP protocol: 6 for TCP, 17 for UDP. */
  protocol: number;
  /** The calling thread's name. */
  comm: string;
}

/** Decodes one decision record; null when it is too short or names an unknown hook or verdict. */
export function decodeDecision(bytes: Uint8Array): GuardDecision | null {
  if (bytes.length < DECISION_SIZE) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, DECISION_SIZE);
  const familyRaw = view.getUint16(32, true);
  const family = familyRaw === 2 ? 4 : familyRaw === 10 ? 6 : null;
  const verdict = bytes[52] as number;
  const hook = GUARD_HOOKS[bytes[53] as number];
  if (family === null || hook === undefined || hook === null || verdict > 2) return null;
  const comm = bytes.subarray(56, 72);
  const nul = comm.indexOf(0);
  return {
    bootNs: view.getBigUint64(0, true),
    cgroup: view.getBigUint64(8, true),
    pid: view.getUint32(16, true),
    tid: view.getUint32(20, true),
    uid: view.getUint32(24, true),
    table: view.getUint32(28, true),
    family,
    port: view.getUint16(34, true),
    addr: bytes.slice(36, family === 4 ? 40 : 52),
    verdict: verdict as GuardVerdict,
    hook,
    protocol: bytes[54] as number,
    comm: new TextDecoder().decode(comm.subarray(0, nul < 0 ? 16 : nul)),
  };
}

/**
 * The `struct sockaddr_in` or `sockaddr_in6` the caller passed, rebuilt from a decision: the
 * form the rest of Sentry decodes (`decodeSockaddr`), so a target reads the same everywhere.
 */
export function decisionSockaddr(
  decision: Pick<GuardDecision, "family" | "port" | "addr">,
): Uint8Array {
  const bytes = new Uint8Array(decision.family === 4 ? 16 : 28);
  const view = new DataView(bytes.buffer);
  view.setUint16(0, decision.family === 4 ? 2 : 10, true);
  view.setUint16(2, decision.port, false);
  bytes.set(decision.addr, decision.family === 4 ? 4 : 8);
  return bytes;
}

/** Whether the first `bits` bits of two byte strings are equal. */
function prefixMatches(a: Uint8Array, b: Uint8Array, bits: number): boolean {
  const whole = bits >> 3;
  for (let i = 0; i < whole; i++) if (a[i] !== b[i]) return false;
  const rest = bits & 7;
  if (rest === 0) return true;
  const mask = (0xff << (8 - rest)) & 0xff;
  return ((a[whole] ?? 0) & mask) === ((b[whole] ?? 0) & mask);
}

/**
 * What the programs decide for a destination, computed from the tables as the kernel does
 * (longest prefix, then longest port block; an IPv4-mapped IPv6 address is looked up as IPv4).
 * The model the compiler's tests check the tables against. Null when no entry answers (the
 * programs then allow, and count a miss).
 */
export function lookupVerdict(
  tables: GuardTables,
  destination: { addr: Uint8Array; port: number },
): GuardVerdict | null {
  let addr = destination.addr;
  if (
    addr.length === 16 && addr.subarray(0, 10).every((b) => b === 0) && addr[10] === 0xff &&
    addr[11] === 0xff
  ) {
    addr = addr.subarray(12);
  }
  const family = addr.length === 4 ? 4 : 6;
  let best: GuardPrefix | null = null;
  for (const p of tables.prefixes) {
    if (p.family !== family || (best !== null && p.bits <= best.bits)) continue;
    if (prefixMatches(p.addr, addr, p.bits)) best = p;
  }
  if (best === null) return null;
  const port = new Uint8Array([destination.port >> 8, destination.port & 0xff]);
  let block: GuardPortBlock | null = null;
  for (const b of tables.ports) {
    if (b.table !== best.table || (block !== null && b.bits <= block.bits)) continue;
    if (prefixMatches(new Uint8Array([b.port >> 8, b.port & 0xff]), port, b.bits)) block = b;
  }
  return block === null ? null : block.verdict;
}

/** Sums a per-CPU u64 counter's values. */
export function sumCounter(bytes: Uint8Array): number {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  let total = 0n;
  for (let off = 0; off + 8 <= bytes.length; off += 8) total += view.getBigUint64(off, true);
  return Number(total);
}
