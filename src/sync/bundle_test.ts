import assert from "node:assert/strict";
import { Buffer } from "node:buffer";
import { createHash, createHmac } from "node:crypto";
import { type AgentEvent, createUlid } from "../events/mod.ts";
import { ingestBatch } from "../collector/mod.ts";
import { IngestError, type Journal, openJournal, type SessionRecord } from "../journal/mod.ts";
import { splitLines } from "./_lines.ts";
import {
  BundleEncoder,
  BundleError,
  type BundleProblem,
  type BundleSink,
  exportBundle,
  type ExportBundleOptions,
  importBundle,
  readBundle,
  verifyBundle,
} from "./bundle.ts";

const T0 = Date.UTC(2026, 10, 24, 12, 0, 0);
const HOST = { id: "01JDQ7ZQ0000000000000H0571", name: "air-gapped-1" };
const KEY = new TextEncoder().encode("k".repeat(40));

/** A journal with sessions S1 and S2 and `n` events alternating between them, 1 s apart. */
function sourceJournal(n: number): { journal: Journal; events: AgentEvent[] } {
  let clock = T0;
  const journal = openJournal(":memory:", {
    now: () => clock,
    hostname: "air-gapped-1",
    pid: 4242,
    batchMs: 60_000,
  });
  const ulid = createUlid({ now: () => clock });
  for (const id of ["S1", "S2"]) {
    journal.createSession({
      id,
      agent: "claude",
      command: ["python3", "agent.py"],
      pid: 1000,
      kind: "run",
      policy: "coding-agent",
      mode: "alert",
      workspace: "/w",
    });
  }
  const events: AgentEvent[] = [];
  for (let i = 0; i < n; i++) {
    clock = T0 + i * 1000;
    const event: AgentEvent = {
      id: ulid(),
      ts: new Date(clock).toISOString(),
      session: i % 2 === 0 ? "S1" : "S2",
      agent: "claude",
      pid: 1000,
      ppid: 1,
      exe: "/usr/bin/python3",
      cmdline: ["python3", "agent.py"],
      kind: "file.write",
      target: `/w/f${i}`,
      detail: { access: "write" },
      sensor: "fd",
      verdict: "allow",
      risk: 5,
      factors: [],
      rule: "files.write.allow",
      response: "none",
    };
    journal.append(event);
    events.push(event);
  }
  journal.flush();
  journal.updateSession("S1", { state: "ended", endedAt: new Date(clock).toISOString() });
  return { journal, events };
}

function collector(): Journal {
  return openJournal(":memory:", { hostname: "collector", pid: 1, batchMs: 60_000 });
}

/** A collector journal as the bundle sink a collector's store is. */
function sinkOf(journal: Journal): BundleSink {
  return { ingest: (batch) => Promise.resolve().then(() => ingestBatch(journal, batch)) };
}

function memoryOutput(): { output: WritableStream<Uint8Array>; bytes: () => Uint8Array } {
  const chunks: Uint8Array[] = [];
  return {
    output: new WritableStream({ write: (c) => void chunks.push(c.slice()) }),
    bytes: () => concat(chunks),
  };
}

function concat(chunks: readonly Uint8Array[]): Uint8Array<ArrayBuffer> {
  const out = new Uint8Array(chunks.reduce((n, c) => n + c.length, 0));
  let offset = 0;
  for (const c of chunks) {
    out.set(c, offset);
    offset += c.length;
  }
  return out;
}

async function exportToBytes(
  journal: Journal,
  options: Omit<ExportBundleOptions, "output" | "host"> = {},
): Promise<Uint8Array<ArrayBuffer>> {
  const sink = memoryOutput();
  await exportBundle(journal, { output: sink.output, host: HOST, now: () => T0, ...options });
  return concat([sink.bytes()]);
}

function stream(bytes: Uint8Array<ArrayBuffer>): ReadableStream<Uint8Array<ArrayBuffer>> {
  return new Blob([bytes]).stream();
}

async function gunzipLines(bytes: Uint8Array<ArrayBuffer>): Promise<string[]> {
  const text = await new Response(stream(bytes).pipeThrough(new DecompressionStream("gzip")))
    .text();
  assert.ok(text.endsWith("\n"));
  return text.slice(0, -1).split("\n");
}

async function gzipLines(lines: readonly string[], end = "\n"): Promise<Uint8Array<ArrayBuffer>> {
  const body = new Blob([lines.join("\n") + end]).stream();
  return new Uint8Array(
    await new Response(body.pipeThrough(new CompressionStream("gzip"))).arrayBuffer(),
  );
}

function sha256(...parts: (Uint8Array | string)[]): Buffer {
  const hash = createHash("sha256");
  for (const p of parts) hash.update(p);
  return hash.digest();
}

/**
 * What a tamperer who knows the format does: recompute every `prev` and the trailer's head
 * (written here from the documented format, independently of the encoder).
 */
function rechain(lines: readonly string[]): string[] {
  const out: string[] = [lines[0] ?? ""];
  let head = sha256(lines[0] ?? "");
  for (const line of lines.slice(1)) {
    const value = JSON.parse(line);
    if (value.type === "trailer") {
      value.head = head.toString("hex");
      out.push(JSON.stringify(value));
      continue;
    }
    value.prev = head.toString("hex");
    const text = JSON.stringify(value);
    head = sha256(head, text);
    out.push(text);
  }
  return out;
}

async function rejection(
  bytes: Uint8Array<ArrayBuffer>,
  options: { signKey?: Uint8Array } = {},
): Promise<BundleError> {
  try {
    await verifyBundle(stream(bytes), options);
  } catch (error) {
    assert.ok(error instanceof BundleError, `not a BundleError: ${error}`);
    return error;
  }
  assert.fail("the bundle was accepted");
}

async function assertRejected(
  bytes: Uint8Array<ArrayBuffer>,
  expected: { problem: BundleProblem; line: number; detail?: RegExp },
  options: { signKey?: Uint8Array } = {},
): Promise<void> {
  const error = await rejection(bytes, options);
  assert.equal(error.problem, expected.problem, error.message);
  assert.equal(error.line, expected.line, error.message);
  if (expected.detail !== undefined) assert.match(error.detail, expected.detail);
}

Deno.test("an exported bundle holds a header, the sessions, the events in id order and a trailer", async () => {
  const { journal, events } = sourceJournal(25);
  try {
    const lines = await gunzipLines(await exportToBytes(journal, { pageSize: 7 }));
    assert.equal(lines.length, 1 + 2 + 25 + 1);
    const header = JSON.parse(lines[0] ?? "");
    assert.deepEqual(
      { ...header, sentry: "-" },
      {
        type: "header",
        format: "sentry-bundle",
        version: 1,
        created_at: new Date(T0).toISOString(),
        host: HOST,
        sentry: "-",
        filter: { since: null, until: null, session: null },
        mac: null,
      },
    );
    const parsed = lines.map((l) => JSON.parse(l));
    assert.deepEqual(parsed.slice(1, 3).map((l) => [l.type, l.session.id]), [
      ["session", "S1"],
      ["session", "S2"],
    ]);
    assert.equal(parsed[1].session.state, "ended");
    assert.deepEqual(parsed.slice(3, 28).map((l) => l.event), events);
    // The chain, recomputed from the documented definition.
    let head = sha256(lines[0] ?? "");
    for (const [i, line] of lines.slice(1, -1).entries()) {
      assert.equal(parsed[i + 1].prev, head.toString("hex"), `prev of line ${i + 2}`);
      head = sha256(head, line);
    }
    assert.deepEqual(parsed.at(-1), {
      type: "trailer",
      events: 25,
      sessions: 2,
      head: head.toString("hex"),
    });
  } finally {
    journal.close();
  }
});

Deno.test("a bundle round-trips into a collector's journal, and a second import counts duplicates", async () => {
  const { journal, events } = sourceJournal(1234);
  const target = collector();
  try {
    const bytes = await exportToBytes(journal, { pageSize: 100 });
    const { summary } = await verifyBundle(stream(bytes));
    assert.equal(summary.events, 1234);
    assert.equal(summary.sessions, 2);
    assert.equal(summary.signature, "none");
    assert.equal(summary.firstTs, events[0]?.ts);
    assert.equal(summary.lastTs, events.at(-1)?.ts);

    const first = await importBundle(sinkOf(target), {
      open: () => Promise.resolve(stream(bytes)),
    });
    assert.deepEqual(
      { accepted: first.accepted, duplicates: first.duplicates, sessions: first.sessions },
      { accepted: 1234, duplicates: 0, sessions: 2 },
    );
    assert.equal(first.key, `bundle:${HOST.id}`);
    const stored = target.queryEvents({ limit: 10_000 });
    assert.deepEqual(stored, events);
    const original = (id: string): SessionRecord => {
      const { events: _e, denied: _d, maxRisk: _m, responses: _r, ...rest } = journal.getSession(
        id,
      );
      return rest;
    };
    for (const id of ["S1", "S2"]) {
      const { events: _e, denied: _d, maxRisk: _m, responses: _r, ...rest } = target.getSession(
        id,
      );
      assert.deepEqual(rest, original(id));
    }
    assert.deepEqual(
      target.statement(
        "SELECT origin_key, origin_host, count(*) AS n FROM sessions GROUP BY 1, 2",
      ).all().map((r) => ({ ...r })),
      [{ origin_key: `bundle:${HOST.id}`, origin_host: HOST.id, n: 2 }],
    );

    const again = await importBundle(sinkOf(target), {
      open: () => Promise.resolve(stream(bytes)),
    });
    assert.deepEqual(
      { accepted: again.accepted, duplicates: again.duplicates },
      { accepted: 0, duplicates: 1234 },
    );
    assert.equal(target.queryEvents({ limit: 10_000 }).length, 1234);
  } finally {
    journal.close();
    target.close();
  }
});

Deno.test("the export keeps to since, until and session", async () => {
  const { journal, events } = sourceJournal(40);
  try {
    const since = new Date(T0 + 10_000).toISOString();
    const until = new Date(T0 + 30_000).toISOString();
    const read = async (options: Omit<ExportBundleOptions, "output" | "host">) => {
      const lines = (await gunzipLines(await exportToBytes(journal, { pageSize: 3, ...options })))
        .map((l) => JSON.parse(l));
      return {
        header: lines[0],
        sessions: lines.filter((l) => l.type === "session").map((l) => l.session.id),
        events: lines.filter((l) => l.type === "event").map((l) => l.event.id),
      };
    };
    const window = await read({ since, until });
    assert.deepEqual(
      window.events,
      events.filter((e) => e.ts >= since && e.ts < until).map((e) => e.id),
    );
    assert.equal(window.events.length, 20);
    assert.deepEqual(window.header.filter, { since, until, session: null });

    const one = await read({ session: "S2", since });
    assert.deepEqual(one.sessions, ["S2"]);
    assert.deepEqual(
      one.events,
      events.filter((e) => e.session === "S2" && e.ts >= since).map((e) => e.id),
    );

    // Only the sessions the events belong to.
    const late = await read({ since: new Date(T0 + 39_000).toISOString() });
    assert.deepEqual(late.sessions, ["S2"]);
    assert.equal(late.events.length, 1);

    // Nothing matches: a valid, empty bundle.
    const none = await read({ since: new Date(T0 + 3_600_000).toISOString() });
    assert.deepEqual([none.sessions, none.events], [[], []]);
  } finally {
    journal.close();
  }
});

Deno.test("a tampered bundle is rejected at the line where its chain breaks", async () => {
  const { journal } = sourceJournal(10);
  try {
    const bytes = await exportToBytes(journal);
    const lines = await gunzipLines(bytes);
    // Lines: 1 header, 2-3 sessions, 4-13 events, 14 trailer.
    assert.equal(lines.length, 14);
    await verifyBundle(stream(bytes));
    const edit = (i: number, change: (value: Record<string, unknown>) => void): string[] => {
      const copy = [...lines];
      const value = JSON.parse(copy[i - 1] ?? "");
      change(value);
      copy[i - 1] = JSON.stringify(value);
      return copy;
    };
    const chainAt = (line: number) => ({
      problem: "chain" as const,
      line,
      detail: new RegExp(`at line ${line}.*line ${line - 1} or line ${line} was changed`),
    });

    // An edited event field: the next line no longer chains to it.
    await assertRejected(
      await gzipLines(edit(6, (v) => ((v.event as AgentEvent).target = "/w/innocent"))),
      chainAt(7),
    );
    await assertRejected(
      await gzipLines(edit(8, (v) => {
        const event = v.event as AgentEvent;
        event.verdict = "deny";
        event.risk = 90;
      })),
      chainAt(9),
    );
    // The last event edited: the trailer's head no longer matches.
    await assertRejected(
      await gzipLines(edit(13, (v) => ((v.event as AgentEvent).risk = 99))),
      { problem: "chain", line: 14, detail: /\(the trailer\)/ },
    );
    // An edited session.
    await assertRejected(
      await gzipLines(edit(2, (v) => ((v.session as SessionRecord).agent = "someone-else"))),
      chainAt(3),
    );
    // An edited header.
    await assertRejected(
      await gzipLines(edit(1, (v) => ((v.host as { name: string }).name = "other"))),
      chainAt(2),
    );
    // A deleted event line.
    await assertRejected(await gzipLines(lines.filter((_, i) => i !== 7)), chainAt(8));
    // An inserted line (a copy of an event) and an event made up with a plausible prev.
    await assertRejected(
      await gzipLines([...lines.slice(0, 9), lines[8] ?? "", ...lines.slice(9)]),
      chainAt(10),
    );
    const forged = JSON.parse(lines[8] ?? "");
    forged.event.id = forged.event.id.slice(0, -1) + "Z";
    await assertRejected(
      await gzipLines([...lines.slice(0, 9), JSON.stringify(forged), ...lines.slice(9)]),
      chainAt(10),
    );
    // Two lines swapped.
    const swapped = [...lines];
    [swapped[4], swapped[5]] = [lines[5] ?? "", lines[4] ?? ""];
    await assertRejected(await gzipLines(swapped), chainAt(5));
    // The trailer edited: its counts, its head.
    await assertRejected(await gzipLines(edit(14, (v) => (v.events = 9))), {
      problem: "count",
      line: 14,
      detail: /counts 9 events and 2 sessions, but the bundle holds 10 and 2/,
    });
    await assertRejected(
      await gzipLines(edit(14, (v) => (v.head = "0".repeat(64)))),
      { problem: "chain", line: 14 },
    );
    // An event removed and the chain recomputed: the counts give it away.
    await assertRejected(await gzipLines(rechain(lines.filter((_, i) => i !== 7))), {
      problem: "count",
      line: 13,
    });
  } finally {
    journal.close();
  }
});

Deno.test("a truncated bundle is rejected, whether cut at a line, inside one or inside the gzip data", async () => {
  const { journal } = sourceJournal(10);
  try {
    const bytes = await exportToBytes(journal);
    const lines = await gunzipLines(bytes);
    await assertRejected(await gzipLines(lines.slice(0, -1)), {
      problem: "truncated",
      line: 13,
      detail: /ends at line 13 without its trailer/,
    });
    await assertRejected(await gzipLines(lines.slice(0, 6)), { problem: "truncated", line: 6 });
    await assertRejected(
      await gzipLines([...lines.slice(0, 6), (lines[6] ?? "").slice(0, 40)], ""),
      {
        problem: "truncated",
        line: 7,
        detail: /line 7 is cut off/,
      },
    );
    await assertRejected(await gzipLines([]), { problem: "format", line: 1 });
    const cut = await rejection(bytes.slice(0, Math.floor(bytes.length * 0.6)));
    assert.equal(cut.problem, "gzip", cut.message);
    assert.match(cut.detail, /corrupt or truncated/);
    await assertRejected(new Uint8Array(0), { problem: "gzip", line: 1, detail: /not gzip/ });
  } finally {
    journal.close();
  }
});

Deno.test("malformed bundles are rejected with the line and field at fault", async () => {
  const { journal } = sourceJournal(4);
  try {
    const lines = await gunzipLines(await exportToBytes(journal));
    const plain = new TextEncoder().encode(lines.join("\n") + "\n");
    await assertRejected(plain, { problem: "gzip", line: 1, detail: /not gzip data/ });
    await assertRejected(await gzipLines(["{not json", ...lines.slice(1)]), {
      problem: "format",
      line: 1,
      detail: /line 1 is not JSON/,
    });
    await assertRejected(await gzipLines([`{"type":"header","format":"other"}`]), {
      problem: "format",
      line: 1,
      detail: /not a Sentry bundle header/,
    });
    await assertRejected(await gzipLines([...lines, lines[3] ?? ""]), {
      problem: "format",
      line: lines.length + 1,
      detail: /follows the trailer/,
    });
    // A valid chain over invalid content.
    const bad = rechain(lines.map((l, i) => {
      if (i !== 4) return l;
      const v = JSON.parse(l);
      v.event.kind = "file.teleport";
      return JSON.stringify(v);
    }));
    await assertRejected(await gzipLines(bad), {
      problem: "format",
      line: 5,
      detail: /invalid "event.kind"/,
    });
  } finally {
    journal.close();
  }
});

Deno.test("a bundle of a newer format version is refused as such", async () => {
  const { journal } = sourceJournal(2);
  try {
    const lines = await gunzipLines(await exportToBytes(journal));
    const header = JSON.parse(lines[0] ?? "");
    header.version = 2;
    const error = await rejection(
      await gzipLines(rechain([JSON.stringify(header), ...lines.slice(1)])),
    );
    assert.equal(error.problem, "version");
    assert.equal(error.line, 1);
    assert.match(error.message, /^Unsupported bundle: it is format version 2, written by a newer/);
  } finally {
    journal.close();
  }
});

Deno.test("the encoder's own checks: events in id order, of sessions the bundle holds", async () => {
  const { journal, events } = sourceJournal(3);
  try {
    const encode = (build: (e: BundleEncoder) => Uint8Array<ArrayBuffer>[]) => {
      const e = new BundleEncoder();
      const header = e.header({
        created_at: new Date(T0).toISOString(),
        host: HOST,
        sentry: "test",
        filter: { since: null, until: null, session: null },
      });
      return concat([header, ...build(e), e.trailer()]);
    };
    const gz = async (raw: Uint8Array<ArrayBuffer>) =>
      new Uint8Array(
        await new Response(new Blob([raw]).stream().pipeThrough(new CompressionStream("gzip")))
          .arrayBuffer(),
      );
    const s1 = journal.getSession("S1");
    const [a, b, c] = events as [AgentEvent, AgentEvent, AgentEvent];
    await assertRejected(await gz(encode((e) => [e.session(s1), e.event(c), e.event(a)])), {
      problem: "format",
      line: 4,
      detail: /out of id order/,
    });
    await assertRejected(await gz(encode((e) => [e.session(s1), e.event(b)])), {
      problem: "format",
      line: 3,
      detail: /of session "S2", which the bundle does not hold/,
    });
    await assertRejected(await gz(encode((e) => [e.session(s1), e.session(s1)])), {
      problem: "format",
      line: 3,
      detail: /repeats session "S1"/,
    });
    await assertRejected(
      await gz(encode((e) => [e.session(s1), e.event(a), e.session(s1)])),
      {
        problem: "format",
        line: 4,
        detail: /session after the events/,
      },
    );
  } finally {
    journal.close();
  }
});

Deno.test("a signed bundle verifies with its key only, and a recomputed chain cannot forge it", async () => {
  const { journal } = sourceJournal(6);
  try {
    const signed = await exportToBytes(journal, { signKey: KEY });
    const lines = await gunzipLines(signed);
    const trailer = JSON.parse(lines.at(-1) ?? "");
    assert.equal(JSON.parse(lines[0] ?? "").mac, "hmac-sha256");
    assert.equal(
      trailer.mac,
      createHmac("sha256", KEY).update(Buffer.from(trailer.head, "hex")).digest("hex"),
    );
    assert.equal(
      (await verifyBundle(stream(signed), { signKey: KEY })).summary.signature,
      "verified",
    );
    assert.equal((await verifyBundle(stream(signed))).summary.signature, "unchecked");

    const other = new TextEncoder().encode("o".repeat(40));
    await assertRejected(signed, { problem: "signature", line: 10, detail: /does not match/ }, {
      signKey: other,
    });
    const unsigned = await exportToBytes(journal);
    await assertRejected(unsigned, { problem: "signature", line: 10, detail: /not signed/ }, {
      signKey: KEY,
    });
    // A tamperer edits an event and recomputes the chain: the chain holds, the signature not.
    const edited = rechain(lines.map((l, i) => {
      if (i !== 4) return l;
      const v = JSON.parse(l);
      v.event.target = "/w/innocent";
      return JSON.stringify(v);
    }));
    await verifyBundle(stream(await gzipLines(edited)));
    await assertRejected(await gzipLines(edited), { problem: "signature", line: 10 }, {
      signKey: KEY,
    });
    // Stripping the signature is noticed even without the key.
    const stripped = [...lines];
    stripped[9] = JSON.stringify({ ...trailer, mac: null });
    await assertRejected(await gzipLines(stripped), {
      problem: "signature",
      line: 10,
      detail: /lacks the signature the header announces/,
    });
    await assert.rejects(
      exportToBytes(journal, { signKey: new Uint8Array(8) }),
      /Signing key too short: 8 bytes/,
    );
  } finally {
    journal.close();
  }
});

Deno.test("a rejected import stores nothing", async () => {
  const { journal } = sourceJournal(30);
  const target = collector();
  try {
    const lines = await gunzipLines(await exportToBytes(journal));
    const edited = [...lines];
    const v = JSON.parse(edited[20] ?? "");
    v.event.risk = 0;
    edited[20] = JSON.stringify(v);
    const bytes = await gzipLines(edited);
    await assert.rejects(
      importBundle(sinkOf(target), { open: () => Promise.resolve(stream(bytes)), batchSize: 5 }),
      (error) => error instanceof BundleError && error.line === 22,
    );
    assert.deepEqual(target.queryEvents({}), []);
    assert.deepEqual(target.listSessions(), []);
  } finally {
    journal.close();
    target.close();
  }
});

Deno.test("an import stops storing when the file changes between the check and the store", async () => {
  const { journal } = sourceJournal(25);
  const target = collector();
  try {
    const lines = await gunzipLines(await exportToBytes(journal));
    const original = await gzipLines(lines);
    // A different but valid bundle: event 23 (line 26) edited and the chain recomputed.
    const changed = await gzipLines(rechain(lines.map((l, i) => {
      if (i !== 25) return l;
      const v = JSON.parse(l);
      v.event.target = "/w/other";
      return JSON.stringify(v);
    })));
    let opens = 0;
    const open = () => Promise.resolve(stream(opens++ === 0 ? original : changed));
    await assert.rejects(
      importBundle(sinkOf(target), { open, batchSize: 10 }),
      (error) =>
        error instanceof BundleError && error.problem === "changed" &&
        /the file changed while it was imported \(the chain differs at line 28\); 20 events were/
          .test(error.message),
    );
    // Only the batches read before the change, all of which matched the verified chain.
    assert.deepEqual(
      target.queryEvents({ limit: 100 }).map((e) => e.target),
      lines.slice(3, 23).map((l) => JSON.parse(l).event.target),
    );
  } finally {
    journal.close();
    target.close();
  }
});

Deno.test("an import refuses sessions that another host owns, and stores nothing", async () => {
  const { journal } = sourceJournal(4);
  const target = collector();
  try {
    const bytes = await exportToBytes(journal);
    const s2 = journal.getSession("S2");
    ingestBatch(target, {
      key: "k_OTHER",
      hostId: "01J00000000000000000000000",
      sessions: [s2],
      events: [],
    });
    await assert.rejects(
      importBundle(sinkOf(target), { open: () => Promise.resolve(stream(bytes)) }),
      (error) => error instanceof IngestError && /belongs to another host/.test(error.message),
    );
    assert.deepEqual(target.queryEvents({}), []);
    assert.deepEqual(target.listSessions().map((s) => s.id), ["S2"]);
  } finally {
    journal.close();
    target.close();
  }
});

Deno.test("an import of sessions its host already uploaded online goes in, counting duplicates", async () => {
  const { journal } = sourceJournal(4);
  const target = collector();
  try {
    const bytes = await exportToBytes(journal);
    const s2 = journal.getSession("S2");
    ingestBatch(target, { key: "k_ONLINE", hostId: HOST.id, sessions: [s2], events: [] });
    const result = await importBundle(sinkOf(target), {
      open: () => Promise.resolve(stream(bytes)),
    });
    assert.equal(result.accepted, 4);
  } finally {
    journal.close();
    target.close();
  }
});

Deno.test("readBundle yields the chain head after each line", async () => {
  const { journal } = sourceJournal(3);
  try {
    const bytes = await exportToBytes(journal);
    const lines = await gunzipLines(bytes);
    let head = sha256(lines[0] ?? "");
    const seen: string[] = [];
    for await (const item of readBundle(stream(bytes))) {
      seen.push(item.type);
      if (item.type === "header") assert.equal(item.head, head.toString("hex"));
      if (item.type === "session" || item.type === "event") {
        head = sha256(head, lines[item.line - 1] ?? "");
        assert.equal(item.head, head.toString("hex"));
      }
    }
    assert.deepEqual(seen, ["header", "session", "session", "event", "event", "event", "trailer"]);
  } finally {
    journal.close();
  }
});

Deno.test("splitLines keeps the exact bytes of lines split across chunks", async () => {
  const chunks = ["ab", "c\nde", "f\n\n", "g", "h\nlast"].map((s) => new TextEncoder().encode(s));
  const source = new ReadableStream<Uint8Array>({
    start(controller) {
      for (const c of chunks) controller.enqueue(c);
      controller.close();
    },
  });
  const out: [number, string, boolean][] = [];
  for await (const line of splitLines(source, 100)) {
    out.push([line.number, new TextDecoder().decode(line.bytes), line.terminated]);
  }
  assert.deepEqual(out, [
    [1, "abc", true],
    [2, "def", true],
    [3, "", true],
    [4, "gh", true],
    [5, "last", false],
  ]);
  const long = new Blob(["12345\n", "1234567890"]).stream();
  await assert.rejects(async () => {
    for await (const _ of splitLines(long, 8)) { /* drain */ }
  }, /Line 2 is longer than 8 bytes/);
});
