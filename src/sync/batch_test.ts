import assert from "node:assert/strict";
import { testEvent, testSession } from "./_testing.ts";
import { encodeBatch, gzip, utf8Length } from "./batch.ts";

Deno.test("encodeBatch() splices the stored event JSON into the protocol's body", () => {
  const events = [testEvent("S1", 0), testEvent("S1", 1)];
  const session = {
    ...testSession("S1"),
    host: "h",
    sentryPid: 1,
    startedAt: "2026-11-24T12:00:00.000Z",
    endedAt: null,
    state: "running" as const,
    exitCode: null,
    note: null,
    tier: null,
  };
  const text = encodeBatch({
    batch: "01JBATCH",
    host: { id: "01JHOST", name: "build-7" },
    sentAt: "2026-11-24T12:00:01.000Z",
    sessions: [session],
    events: events.map((e) => JSON.stringify(e)),
    dropped: 3,
  });
  assert.deepEqual(JSON.parse(text), {
    protocol: 1,
    batch: "01JBATCH",
    host: { id: "01JHOST", name: "build-7" },
    sent_at: "2026-11-24T12:00:01.000Z",
    sessions: [session],
    events,
    dropped: 3,
  });
  const empty = encodeBatch({
    batch: "b",
    host: { id: "h", name: "n" },
    sentAt: "t",
    sessions: [],
    events: [],
    dropped: 0,
  });
  assert.deepEqual(JSON.parse(empty).events, []);
});

Deno.test("utf8Length() counts UTF-8 bytes as TextEncoder does", () => {
  const encoder = new TextEncoder();
  for (
    const text of ["", "ascii", "é", "€ uro", "😀 face", "a\u{10FFFF}b", "\ud800 lone", "日本語"]
  ) {
    assert.equal(utf8Length(text), encoder.encode(text).length, JSON.stringify(text));
  }
});

Deno.test("gzip() output decompresses to its input", async () => {
  const input = new TextEncoder().encode("x".repeat(10_000) + "tail");
  const packed = await gzip(input);
  assert.ok(packed.length < 200);
  const back = await new Response(
    new Blob([packed]).stream().pipeThrough(new DecompressionStream("gzip")),
  ).bytes();
  assert.deepEqual(back, input);
});
