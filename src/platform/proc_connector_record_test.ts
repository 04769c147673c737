import assert from "node:assert/strict";
import {
  decodeProcConnector,
  type ProcConnectorRecord,
  SequenceGaps,
} from "./proc_connector_record.ts";
import { ProcConnector } from "./proc_connector_linux.ts";

function bytes(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

// Captured on Linux 6.18 (x86_64) from a socket listening with the old 4-byte request: a python
// (pid 6934) forked 6940, which exec'd `sh -c "exit 3"`; its child 6981 exited with 3; 13343
// called setsid() and killed itself with SIGKILL.
const ACK = bytes(
  "4c00000003000000b3030000000000000100000001000000b303000001000000280000000000000000000000" +
    "769a7b1758000000000000000000000000000000000000000000000000000000",
);
const FORK = bytes(
  "4c00000003000000b4030000000000000100000001000000b40300000000000028000000010000000000000068f8ba1758000000" +
    "161b0000161b00001c1b00001c1b00000000000000000000",
);
const EXEC = bytes(
  "4c0000000300000025020000000000000100000001000000250200000000000028000000020000000100000029abc01758000000" +
    "1c1b00001c1b000000000000000000000000000000000000",
);
const EXIT_3 = bytes(
  "4c000000030000006b0200000000000001000000010000006b02000000000000280000000000008001000000c4b2eb1e58000000" +
    "451b0000451b000000030000110000001c1b00001c1b0000",
);
const SID = bytes(
  "4c000000030000005003000000000000010000000100000050030000000000002800000080000000010000003daa4265ab000000" +
    "1f3400001f34000000000000000000000000000000000000",
);
const EXIT_KILLED = bytes(
  "4c0000000300000051030000000000000100000001000000510300000000000028000000000000800100000082845365ab000000" +
    "1f3400001f34000009000000110000001e3400001e340000",
);

Deno.test("`decodeProcConnector()` decodes a captured fork with both pids and tgids", () => {
  assert.deepEqual(decodeProcConnector(FORK), {
    records: [{
      type: "fork",
      cpu: 0,
      seq: 948,
      timestampNs: 378355251304n,
      parentPid: 6934,
      parentTgid: 6934,
      childPid: 6940,
      childTgid: 6940,
    }],
    malformed: 0,
  });
});

Deno.test("`decodeProcConnector()` decodes a captured exec and its CPU's sequence number", () => {
  const [record] = decodeProcConnector(EXEC).records;
  assert.deepEqual(record, {
    type: "exec",
    cpu: 1,
    seq: 549,
    timestampNs: 378355624745n,
    pid: 6940,
    tgid: 6940,
  });
});

Deno.test("`decodeProcConnector()` keeps an exit's raw wait status and its parent", () => {
  const [exited] = decodeProcConnector(EXIT_3).records;
  assert.equal(exited?.type, "exit");
  if (exited?.type !== "exit") return;
  // exit(3): the status word is 3 << 8.
  assert.equal(exited.status, 768);
  assert.equal(exited.exitSignal, 17);
  assert.equal(exited.pid, 6981);
  assert.equal(exited.parentTgid, 6940);
  const [killed] = decodeProcConnector(EXIT_KILLED).records;
  assert.equal(killed?.type === "exit" && killed.status, 9, "SIGKILL is the status' low bits");
});

Deno.test("`decodeProcConnector()` reads an ack and other kinds, which still carry a sequence", () => {
  assert.deepEqual(decodeProcConnector(ACK).records, [
    { type: "ack", cpu: 0, seq: 947, timestampNs: 378351098486n, error: 0 },
  ]);
  const [sid] = decodeProcConnector(SID).records;
  assert.equal(sid?.type, "other");
  assert.equal(sid?.type === "other" && sid.what, 0x80);
  assert.equal(sid?.type === "other" && sid.seq, 848);
});

Deno.test("`decodeProcConnector()` decodes every message of a datagram in order", () => {
  const records = decodeProcConnector(concat(FORK, EXEC, EXIT_3)).records;
  assert.deepEqual(records.map((r) => r.type), ["fork", "exec", "exit"]);
});

Deno.test("`decodeProcConnector()` counts truncated and foreign messages and never throws", () => {
  assert.deepEqual(decodeProcConnector(FORK.subarray(0, 50)), { records: [], malformed: 1 });
  const cut = FORK.slice();
  new DataView(cut.buffer).setUint32(0, 200, true);
  assert.equal(decodeProcConnector(cut).malformed, 1, "a length past the datagram");
  const foreign = FORK.slice();
  new DataView(foreign.buffer).setUint32(16, 7, true);
  assert.deepEqual(decodeProcConnector(foreign), { records: [], malformed: 1 });
  const short = FORK.slice();
  new DataView(short.buffer).setUint16(32, 0x400, true);
  assert.equal(decodeProcConnector(short).malformed, 1, "cn_msg.len longer than the message");
});

Deno.test("`decodeProcConnector()` turns NLMSG_ERROR into an error outside the sequence", () => {
  const message = new Uint8Array(36);
  const view = new DataView(message.buffer);
  view.setUint32(0, 36, true);
  view.setUint16(4, 2, true);
  view.setInt32(16, -1, true);
  assert.deepEqual(decodeProcConnector(message).records, [{ type: "error", error: 1 }]);
});

function event(cpu: number, seq: number): { cpu: number; seq: number } {
  return { cpu, seq };
}

Deno.test("`SequenceGaps` counts nothing lost when each CPU's sequence is whole", () => {
  const gaps = new SequenceGaps();
  for (const [cpu, seq] of [[0, 10], [1, 500], [0, 11], [1, 501], [0, 12]] as const) {
    assert.equal(gaps.observe(event(cpu, seq)), 0);
  }
  assert.equal(gaps.lost, 0);
  assert.equal(gaps.cpus, 2);
  assert.equal(gaps.seen, 5);
});

Deno.test("`SequenceGaps` counts exactly the events missing from each CPU's sequence", () => {
  const gaps = new SequenceGaps();
  gaps.observe(event(0, 100));
  gaps.observe(event(1, 7));
  assert.equal(gaps.observe(event(0, 104)), 3);
  assert.equal(gaps.observe(event(1, 8)), 0);
  assert.equal(gaps.observe(event(1, 20)), 11);
  assert.equal(gaps.observe(event(0, 105)), 0);
  assert.equal(gaps.lost, 14);
});

Deno.test("`SequenceGaps` follows the 32-bit counter across its wrap", () => {
  const gaps = new SequenceGaps();
  gaps.observe(event(0, 0xfffffffe));
  assert.equal(gaps.observe(event(0, 0xffffffff)), 0);
  assert.equal(gaps.observe(event(0, 2)), 2, "0 and 1 were lost");
  assert.equal(gaps.lost, 2);
});

Deno.test("`SequenceGaps` counts a repeat or a step back as reordered, not as loss", () => {
  const gaps = new SequenceGaps();
  gaps.observe(event(0, 50));
  assert.equal(gaps.observe(event(0, 50)), 0);
  assert.equal(gaps.observe(event(0, 40)), 0);
  assert.equal(gaps.observe(event(0, 51)), 0);
  assert.equal(gaps.lost, 0);
  assert.equal(gaps.reordered, 2);
});

const root = Deno.uid() === 0;
/** A test name that says why the test is skipped, where it is. */
function needsRoot(name: string): string {
  return root ? name : `${name} (skipped: needs root for CAP_NET_ADMIN)`;
}

Deno.test({
  name: needsRoot(
    "`SequenceGaps` on a starved socket equals what a well-read socket got and it did not",
  ),
  ignore: !root,
  async fn() {
    // Two listeners get the same broadcast stream: one read at once with a large buffer, one
    // with the smallest buffer and read only after a burst of forks.
    const reference = ProcConnector.open({ receiveBufferBytes: 32 * 1024 * 1024 });
    let starved: ProcConnector | null = null;
    try {
      starved = ProcConnector.open({ receiveBufferBytes: 4096 });
      const seen = new Map<number, Set<number>>();
      const collect = () => {
        for (let d = reference.receive(); d !== null; d = reference.receive()) {
          for (const r of decodeProcConnector(d).records) {
            if (r.type === "error") continue;
            let set = seen.get(r.cpu);
            if (set === undefined) seen.set(r.cpu, set = new Set());
            set.add(r.seq);
          }
        }
      };
      const burst = new Deno.Command("python3", {
        args: [
          "-c",
          "import os\nfor _ in range(300):\n  p = os.fork()\n  if p == 0: os._exit(0)\n  os.waitpid(p, 0)\n",
        ],
      }).spawn();
      const done = burst.status;
      let finished = false;
      done.then(() => finished = true);
      const deadline = Date.now() + 20_000;
      while (!finished && Date.now() < deadline) {
        await reference.wait(20);
        collect();
      }
      assert.ok(finished, "the burst ended in time");
      const records: ProcConnectorRecord[] = [];
      const drainStarved = () => {
        for (let d = starved!.receive(); d !== null; d = starved!.receive()) {
          records.push(...decodeProcConnector(d).records);
        }
      };
      drainStarved();
      // A loss shows when the next event of its CPU arrives: make some, on both CPUs.
      for (let i = 0; i < 8; i++) await new Deno.Command("true").output();
      await new Promise((r) => setTimeout(r, 50));
      collect();
      drainStarved();
      const gaps = new SequenceGaps();
      const got = new Map<number, number[]>();
      for (const r of records) {
        if (r.type === "error") continue;
        gaps.observe(r);
        const list = got.get(r.cpu) ?? [];
        list.push(r.seq);
        got.set(r.cpu, list);
      }
      for (const set of seen.values()) {
        const sorted = [...set].sort((a, b) => a - b);
        assert.equal(
          set.size,
          (sorted.at(-1) ?? 0) - (sorted[0] ?? 0) + 1,
          "the reference lost none",
        );
      }
      assert.ok(gaps.lost > 0, "the small buffer lost events");
      assert.ok(starved.overruns > 0, "recv reported ENOBUFS");
      // Within the starved socket's window on each CPU, the reference saw exactly the events it
      // received plus those the gaps counted.
      let expectedLost = 0;
      for (const [cpu, seqs] of got) {
        const first = seqs[0] ?? 0;
        const last = seqs.at(-1) ?? 0;
        const reference = [...(seen.get(cpu) ?? [])].filter((s) => s >= first && s <= last);
        expectedLost += reference.length - seqs.length;
      }
      assert.equal(gaps.lost, expectedLost);
      assert.equal(gaps.reordered, 0);
    } finally {
      await starved?.close();
      await reference.close();
    }
  },
});
