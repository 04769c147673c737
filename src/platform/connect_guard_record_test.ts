import assert from "node:assert/strict";
import {
  configValue,
  DECISION_SIZE,
  decisionSockaddr,
  decodeDecision,
  GUARD_VERDICT,
  type GuardTables,
  lookupVerdict,
  portKey,
  prefixKey,
  prefixValue,
  sumCounter,
  tableId,
} from "./connect_guard_record.ts";
import { decodeSockaddr } from "./kernel_abi.ts";

function hex(text: string): Uint8Array {
  return new Uint8Array(text.match(/../g)!.map((b) => parseInt(b, 16)));
}

// Captured from the kernel (Linux 6.18): python3 (pid 25961) connecting to 127.0.0.1:9, to
// 127.0.0.2:80, and to [::1]:9, each blocked.
const CONNECT4 = hex(
  "63bb59780e010000040f00000000000069650000696500000000000000000000020009007f000001000000000000000000000000020106007079" +
    "74686f6e33000000000000000000",
);
const CONNECT4_TABLE1 = hex(
  "002c5c780e010000040f00000000000069650000696500000000000001000000020050007f000002000000000000000000000000020106007079" +
    "74686f6e33000000000000000000",
);
const CONNECT6 = hex(
  "52445e780e010000040f000000000000696500006965000000000000000000000a0009000000000000000000000000000000000102020600707974" +
    "686f6e33000000000000000000",
);

Deno.test("`decodeDecision()` decodes a captured blocked IPv4 connect", () => {
  assert.equal(CONNECT4.length, DECISION_SIZE);
  assert.deepEqual(decodeDecision(CONNECT4), {
    bootNs: 0x10e7859bb63n,
    cgroup: 3844n,
    pid: 25961,
    tid: 25961,
    uid: 0,
    table: 0,
    family: 4,
    port: 9,
    addr: new Uint8Array([127, 0, 0, 1]),
    verdict: GUARD_VERDICT.BLOCK,
    hook: "connect4",
    protocol: 6,
    comm: "python3",
  });
  const other = decodeDecision(CONNECT4_TABLE1)!;
  assert.equal(other.table, 1);
  assert.equal(other.port, 80);
  assert.deepEqual(other.addr, new Uint8Array([127, 0, 0, 2]));
});

Deno.test("`decodeDecision()` decodes a captured IPv6 connect, and its sockaddr reads [::1]:9", () => {
  const d = decodeDecision(CONNECT6)!;
  assert.equal(d.family, 6);
  assert.equal(d.hook, "connect6");
  assert.equal(d.addr.length, 16);
  assert.equal(decodeSockaddr(decisionSockaddr(d))?.target, "[::1]:9");
  assert.equal(decodeSockaddr(decisionSockaddr(decodeDecision(CONNECT4)!))?.target, "127.0.0.1:9");
});

Deno.test("`decodeDecision()` refuses short records, unknown families, hooks and verdicts", () => {
  assert.equal(decodeDecision(CONNECT4.subarray(0, 71)), null);
  for (const [offset, value] of [[32, 1], [53, 0], [53, 5], [52, 3]] as const) {
    const bad = CONNECT4.slice();
    bad[offset] = value;
    assert.equal(decodeDecision(bad), null, `byte ${offset} = ${value}`);
  }
});

Deno.test("prefix and port keys carry the generation and the prefix length the trie matches on", () => {
  const k4 = prefixKey({ family: 4, addr: new Uint8Array([10, 0, 0, 0]), bits: 8, table: 3 }, 1);
  assert.deepEqual([...k4], [40, 0, 0, 0, 1, 0, 0, 0, 10, 0, 0, 0]);
  const k6 = prefixKey({ family: 6, addr: new Uint8Array(16), bits: 0, table: 0 }, 0);
  assert.equal(k6.length, 24);
  assert.deepEqual([...k6.subarray(0, 8)], [32, 0, 0, 0, 0, 0, 0, 0]);
  const pk = portKey({ table: 5, port: 8000, bits: 14, verdict: GUARD_VERDICT.BLOCK }, 1);
  // prefixlen 32 + 14, table 5 with generation 1 in its top bit, port 8000 big-endian.
  assert.deepEqual([...pk], [46, 0, 0, 0, 5, 0, 0, 0x80, 0x1f, 0x40, 0, 0]);
  assert.deepEqual([...prefixValue({ family: 4, addr: new Uint8Array(4), bits: 0, table: 5 }, 1)], [
    5,
    0,
    0,
    0x80,
  ]);
  assert.equal(tableId(7, 0), 7);
  assert.equal(tableId(7, 1), 0x80000007);
  assert.throws(() => tableId(-1, 0), RangeError);
  assert.throws(
    () => prefixKey({ family: 4, addr: new Uint8Array(16), bits: 8, table: 0 }, 0),
    RangeError,
  );
  assert.throws(
    () => prefixKey({ family: 4, addr: new Uint8Array(4), bits: 33, table: 0 }, 0),
    RangeError,
  );
  assert.throws(() => portKey({ table: 0, port: 1, bits: 17, verdict: 0 }, 0), RangeError);
});

Deno.test("`configValue()` holds the generation and the sample rate", () => {
  assert.deepEqual([...configValue(1, 100)], [1, 0, 0, 0, 100, 0, 0, 0]);
  assert.throws(() => configValue(0, -1), RangeError);
  assert.throws(() => configValue(0, 0.5), RangeError);
});

Deno.test("`lookupVerdict()` takes the longest prefix, then the longest port block, and folds IPv4-mapped addresses", () => {
  const tables: GuardTables = {
    tables: 3,
    prefixes: [
      { family: 4, addr: new Uint8Array(4), bits: 0, table: 0 },
      { family: 4, addr: new Uint8Array([10, 0, 0, 0]), bits: 8, table: 1 },
      { family: 4, addr: new Uint8Array([10, 1, 0, 0]), bits: 16, table: 2 },
      { family: 6, addr: new Uint8Array(16), bits: 0, table: 0 },
    ],
    ports: [
      { table: 0, port: 0, bits: 0, verdict: GUARD_VERDICT.ALLOW },
      { table: 1, port: 0, bits: 0, verdict: GUARD_VERDICT.BLOCK },
      { table: 1, port: 443, bits: 16, verdict: GUARD_VERDICT.ALLOW },
      { table: 2, port: 0, bits: 0, verdict: GUARD_VERDICT.REPORT },
    ],
  };
  const at = (addr: number[], port: number) =>
    lookupVerdict(tables, { addr: new Uint8Array(addr), port });
  assert.equal(at([8, 8, 8, 8], 80), GUARD_VERDICT.ALLOW);
  assert.equal(at([10, 2, 3, 4], 80), GUARD_VERDICT.BLOCK);
  assert.equal(at([10, 2, 3, 4], 443), GUARD_VERDICT.ALLOW);
  assert.equal(at([10, 1, 3, 4], 443), GUARD_VERDICT.REPORT);
  const mapped = [0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0xff, 0xff, 10, 2, 3, 4];
  assert.equal(at(mapped, 80), GUARD_VERDICT.BLOCK);
  assert.equal(at([0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 10, 2, 3, 4], 80), GUARD_VERDICT.ALLOW);
  assert.equal(
    lookupVerdict({ ...tables, prefixes: [] }, { addr: new Uint8Array(4), port: 1 }),
    null,
  );
});

Deno.test("`sumCounter()` adds a per-CPU counter's values", () => {
  const bytes = new Uint8Array(new BigUint64Array([3n, 4n, 0n, 10n]).buffer);
  assert.equal(sumCounter(bytes), 17);
});
