import assert from "node:assert/strict";
import type { AgentEvent } from "../events/mod.ts";
import type { ResponseRecord } from "../journal/mod.ts";
import { measuredText, oneLine, responsesByEvent, takenCell, targetCell } from "./cells.ts";

Deno.test("oneLine() escapes newlines and control characters, and keeps the rest", () => {
  assert.equal(oneLine("sh -c 'a\nb'\r\t"), "sh -c 'a\\nb'\\r\\t");
  assert.equal(oneLine("\x1b[31mred\x07"), "\\x1b[31mred\\x07");
  assert.equal(oneLine("a\u2028b\x85"), "a\\u2028b\\x85");
  assert.equal(oneLine("/path/with spaces/é/\\back"), "/path/with spaces/é/\\back");
});

Deno.test("measuredText() says a CPU spike's percent, peak, duration and limit", () => {
  assert.equal(
    measuredText({
      percent: 99.2,
      peak_percent: 100,
      duration_seconds: 3.9,
      ongoing: true,
      limit_percent: 90,
      limit_seconds: 2,
    }),
    ": 99.2% CPU (peak 100%) for 3.9 s, ongoing, limit 90% for 2 s",
  );
  assert.equal(measuredText({ percent: 95, duration_seconds: 1.5 }), ": 95% CPU for 1.5 s");
  assert.equal(
    measuredText({ mb: 2600, peak_mb: 3500, duration_seconds: 2.5 }),
    ": 2600 MB (peak 3500 MB) for 2.5 s",
  );
  assert.equal(measuredText({ path: "/x" }), "");
});

function event(fields: Partial<AgentEvent>): AgentEvent {
  return {
    id: "e1",
    session: "s",
    ts: "2026-12-06T12:00:00.000Z",
    kind: "file.read",
    target: "/x",
    pid: 1,
    detail: {},
    response: "pause",
    ...fields,
  } as AgentEvent;
}

function record(fields: Partial<ResponseRecord>): ResponseRecord {
  return {
    id: 1,
    session: "s",
    eventId: "e1",
    ts: "2026-12-06T12:00:00.000Z",
    action: "pause",
    outcome: "ok",
    detail: {},
    ...fields,
  } as ResponseRecord;
}

Deno.test("takenCell() shows what was really done, and what it stood in for", () => {
  assert.equal(takenCell([record({})]), "pause");
  assert.equal(takenCell([]), "-");
  assert.equal(
    takenCell([
      record({ action: "rollback", detail: { fallback: "pause" } }),
    ]),
    "pause (instead of rollback)",
  );
  assert.equal(
    takenCell([record({ action: "kill", outcome: "partial" })]),
    "kill (partial)",
  );
  // Shadow mode takes nothing: the RESPONSE column says what the policy would have done.
  assert.equal(takenCell([]), "-");
});

Deno.test("responsesByEvent() groups records by event and skips those of no event", () => {
  const by = responsesByEvent([
    record({ id: 1 }),
    record({ id: 2, eventId: null, action: "resume" }),
    record({ id: 3, action: "kill" }),
  ]);
  assert.deepEqual(by.get("e1")?.map((r) => r.id), [1, 3]);
  assert.equal(by.size, 1);
});

Deno.test("targetCell() puts a resource event's measure after its target, on one line", () => {
  assert.equal(
    targetCell(event({ kind: "resource.cpu", target: "tree", detail: { percent: 97 } })),
    "tree: 97% CPU",
  );
  assert.equal(targetCell(event({ target: "a\nb" })), "a\\nb");
});
