import assert from "node:assert/strict";
import { AgentEvent, Decision, Observation } from "./agent_event.ts";
import { FILE_KINDS, isFileKind, isNetKind, KINDS, responseRank, RESPONSES } from "./kinds.ts";

/** A complete, valid decided event. */
function fullEvent(): Record<string, unknown> {
  return {
    id: "01HZX3K4Q5R6S7T8V9W0XYZABC",
    ts: "2025-11-24T15:40:00.123Z",
    session: "sess-1",
    agent: "claude",
    pid: 4242,
    ppid: 1,
    exe: "/usr/bin/cat",
    cmdline: ["cat", "/home/agent/.ssh/id_rsa"],
    kind: "file.read",
    target: "/home/agent/.ssh/id_rsa",
    detail: { fd: 3 },
    sensor: "fd",
    verdict: "deny",
    risk: 80,
    factors: [
      { id: "kind", points: 5, reason: "a file.read action" },
      { id: "credential_path", points: 35, reason: "the path holds credentials or secrets" },
      { id: "violation", points: 40, reason: "matches files.read.deny" },
    ],
    rule: "files.read.deny",
    response: "pause",
  };
}

/** The field paths of the issues a failed parse reports. */
function issuePaths(result: { success: boolean; error?: { issues: { path: PropertyKey[] }[] } }) {
  return result.error?.issues.map((i) => i.path.join(".")) ?? [];
}

Deno.test("`AgentEvent` accepts a full decided event", () => {
  const parsed = AgentEvent.parse(fullEvent());
  assert.deepEqual(parsed, fullEvent());
});

Deno.test("`AgentEvent` accepts an unattributed event with null pid, ppid and exe", () => {
  const ok = AgentEvent.safeParse({ ...fullEvent(), pid: null, ppid: null, exe: null });
  assert.equal(ok.success, true);
});

Deno.test("`AgentEvent` accepts every kind and every response", () => {
  for (const kind of KINDS) {
    assert.equal(AgentEvent.safeParse({ ...fullEvent(), kind }).success, true, kind);
  }
  for (const response of RESPONSES) {
    assert.equal(AgentEvent.safeParse({ ...fullEvent(), response }).success, true, response);
  }
});

Deno.test("`AgentEvent` rejects an unknown kind", () => {
  const result = AgentEvent.safeParse({ ...fullEvent(), kind: "file.chmod" });
  assert.equal(result.success, false);
  assert.deepEqual(issuePaths(result), ["kind"]);
});

Deno.test("`AgentEvent` rejects a risk above 100, below 0 or with a fraction", () => {
  for (const risk of [101, -1, 50.5]) {
    const result = AgentEvent.safeParse({ ...fullEvent(), risk });
    assert.equal(result.success, false, String(risk));
    assert.deepEqual(issuePaths(result), ["risk"]);
  }
  assert.equal(AgentEvent.safeParse({ ...fullEvent(), risk: 100 }).success, true);
  assert.equal(AgentEvent.safeParse({ ...fullEvent(), risk: 0 }).success, true);
});

Deno.test("`AgentEvent` rejects a timestamp without milliseconds or not in UTC", () => {
  for (
    const ts of [
      "2025-11-24T15:40:00Z",
      "2025-11-24T15:40:00.1Z",
      "2025-11-24T15:40:00.123456Z",
      "2025-11-24T15:40:00.123+01:00",
      "2025-11-24 15:40:00.123Z",
      "yesterday",
    ]
  ) {
    const result = AgentEvent.safeParse({ ...fullEvent(), ts });
    assert.equal(result.success, false, ts);
    assert.deepEqual(issuePaths(result), ["ts"], ts);
  }
});

Deno.test("`AgentEvent` rejects an id that is not a ULID", () => {
  for (
    const id of [
      "01HZX3K4Q5R6S7T8V9W0XYZAB", // 25 characters
      "01HZX3K4Q5R6S7T8V9W0XYZABCD", // 27 characters
      "01HZX3K4Q5R6S7T8V9W0XYZABI", // I is not Crockford
      "01hzx3k4q5r6s7t8v9w0xyzabc", // lower case
    ]
  ) {
    const result = AgentEvent.safeParse({ ...fullEvent(), id });
    assert.equal(result.success, false, id);
    assert.match(result.error?.issues[0]?.message ?? "", /ULID/);
  }
});

Deno.test("`AgentEvent` rejects a bad verdict, response, pid or empty session", () => {
  const cases: [string, unknown][] = [
    ["verdict", "block"],
    ["response", "explode"],
    ["pid", 0],
    ["pid", 1.5],
    ["ppid", -1],
    ["session", ""],
    ["sensor", ""],
    ["rule", ""],
  ];
  for (const [field, value] of cases) {
    const result = AgentEvent.safeParse({ ...fullEvent(), [field]: value });
    assert.equal(result.success, false, `${field}=${JSON.stringify(value)}`);
    assert.deepEqual(issuePaths(result), [field]);
  }
});

Deno.test("`AgentEvent` rejects a factor with fractional points and accepts negative ones", () => {
  const bad = AgentEvent.safeParse({
    ...fullEvent(),
    factors: [{ id: "kind", points: 1.5, reason: "" }],
  });
  assert.deepEqual(issuePaths(bad), ["factors.0.points"]);
  const cap = AgentEvent.safeParse({
    ...fullEvent(),
    factors: [{ id: "cap", points: -20, reason: "the score is capped at 100" }],
  });
  assert.equal(cap.success, true);
});

Deno.test("`Observation` omits the decision fields and accepts an undecided event", () => {
  const event = fullEvent();
  for (const key of Object.keys(Decision.shape)) delete event[key];
  const parsed = Observation.parse(event);
  for (const key of ["verdict", "risk", "factors", "rule", "response"]) {
    assert.equal(key in parsed, false, key);
    assert.equal(key in Observation.shape, false, key);
  }
  // The decided event still fails as an AgentEvent without its decision.
  assert.equal(AgentEvent.safeParse(event).success, false);
});

Deno.test("`Observation` strips decision fields a sensor should not set", () => {
  const parsed = Observation.parse(fullEvent());
  assert.equal("verdict" in parsed, false);
  assert.equal("risk" in parsed, false);
});

Deno.test("`Observation` keeps the event fields of `AgentEvent`", () => {
  // `would` is decided too: by the session in shadow mode, not by `evaluate()`.
  const decision = new Set([...Object.keys(Decision.shape), "would"]);
  const eventOnly = Object.keys(AgentEvent.shape).filter((k) => !decision.has(k));
  assert.deepEqual(Object.keys(Observation.shape).sort(), eventOnly.sort());
});

Deno.test("`isFileKind()` and `isNetKind()` classify every kind", () => {
  for (const kind of KINDS) {
    assert.equal(isFileKind(kind), FILE_KINDS.includes(kind), kind);
  }
  assert.deepEqual(KINDS.filter(isNetKind), ["net.connect", "net.listen", "db.connect"]);
});

Deno.test("`responseRank()` orders responses from none to kill with block between alert and pause", () => {
  assert.deepEqual(RESPONSES.map(responseRank), [0, 1, 2, 3, 4, 5]);
  assert.ok(responseRank("alert") < responseRank("block"));
  assert.ok(responseRank("block") < responseRank("pause"));
});
