import assert from "node:assert/strict";
import { join } from "node:path";
import { type AgentEvent, createUlid } from "../events/mod.ts";
import { type Journal, openJournal } from "../journal/mod.ts";
import { collectFindings, eventFails, parseFailOn, responseFails } from "./mod.ts";

const T0 = Date.UTC(2026, 0, 1, 12, 0, 0);

function withJournal(body: (journal: Journal) => void): void {
  const dir = Deno.makeTempDirSync({ prefix: "sentry_audit_" });
  const journal = openJournal(join(dir, "journal.db"), {
    now: () => T0,
    hostname: "h",
    pid: 4242,
    batchMs: 60_000,
  });
  try {
    body(journal);
  } finally {
    journal.close();
    Deno.removeSync(dir, { recursive: true });
  }
}

function events(session: string): (second: number, fields?: Partial<AgentEvent>) => AgentEvent {
  return (second, fields = {}) => ({
    id: createUlid({ now: () => T0 + second * 1000 })(),
    ts: new Date(T0 + second * 1000).toISOString(),
    session,
    agent: "claude",
    pid: 100,
    ppid: 1,
    exe: "/usr/bin/python3",
    cmdline: ["python3"],
    kind: "file.read",
    target: `/p/${second}`,
    detail: {},
    sensor: "fd",
    verdict: "allow",
    risk: 5,
    factors: [],
    rule: "files.read.allow",
    response: "none",
    ...fields,
  });
}

function iso(second: number): string {
  return new Date(T0 + second * 1000).toISOString();
}

Deno.test("parseFailOn() takes a risk from 0 to 100, deny or response, and refuses the rest", () => {
  assert.equal(parseFailOn("0"), 0);
  assert.equal(parseFailOn(" 100 "), 100);
  assert.equal(parseFailOn("deny"), "deny");
  assert.equal(parseFailOn("response"), "response");
  for (const bad of ["101", "-1", "7.5", "", "Deny", "high", "0x10"]) {
    assert.throws(() => parseFailOn(bad), RangeError, bad);
  }
});

Deno.test("eventFails() and responseFails() apply each threshold", () => {
  const e = events("S")(0, { verdict: "deny", risk: 80, response: "alert" });
  assert.equal(eventFails(e, "deny"), true);
  assert.equal(eventFails(e, "response"), false, "an alert does not enforce anything");
  assert.equal(eventFails({ ...e, response: "pause" }, "response"), true);
  assert.equal(eventFails(e, 80), true);
  assert.equal(eventFails(e, 81), false);
  assert.equal(eventFails({ ...e, verdict: "allow" }, "deny"), false);
  const r = {
    id: 1,
    session: "S",
    eventId: e.id,
    ts: e.ts,
    action: "kill" as const,
    outcome: "ok" as const,
    detail: {},
  };
  assert.equal(responseFails(r, "deny", 80), true);
  assert.equal(responseFails(r, "response", null), true);
  assert.equal(responseFails(r, 90, 80), false);
  assert.equal(responseFails(r, 50, null), false, "an unknown risk does not reach a threshold");
  assert.equal(responseFails({ ...r, action: "alert" }, "deny", 80), false);
});

Deno.test("collectFindings() takes the window's denials, high risks and responses across sessions, and nothing outside it", () => {
  withJournal((journal) => {
    for (const id of ["A", "B"]) {
      journal.createSession({
        id,
        agent: "claude",
        command: [],
        pid: 1,
        kind: "run",
        policy: "default",
        mode: "alert",
        workspace: "/p",
      });
    }
    const a = events("A");
    const b = events("B");
    const before = a(1, { verdict: "deny", risk: 80 });
    const denied = a(10, { verdict: "deny", risk: 60, response: "block" });
    const risky = b(11, { risk: 75, response: "alert" });
    const quiet = b(12, { risk: 30 });
    const after = b(30, { verdict: "deny", risk: 90 });
    for (const e of [before, denied, risky, quiet, after]) journal.append(e);
    journal.recordResponse({
      session: "A",
      eventId: denied.id,
      ts: iso(10),
      action: "block",
      outcome: "ok",
    });
    journal.recordResponse({
      session: "B",
      eventId: risky.id,
      ts: iso(11),
      action: "alert",
      outcome: "ok",
    });
    journal.recordResponse({ session: "B", ts: iso(13), action: "resume", outcome: "ok" });
    journal.recordResponse({
      session: "B",
      eventId: after.id,
      ts: iso(30),
      action: "kill",
      outcome: "ok",
    });
    journal.flush();

    const found = collectFindings(journal, {
      since: iso(5),
      until: iso(20),
      failOn: "deny",
      minRisk: 70,
      limit: 100,
    });
    assert.deepEqual(
      found.findings.map((f) => [f.type, f.event?.id ?? f.response?.action, f.failing]),
      [
        ["event", denied.id, true],
        ["event", risky.id, false],
        ["response", "block", true],
        ["response", "alert", false],
      ],
    );
    assert.equal(found.total, 4);
    assert.equal(found.failing, 2);
    assert.deepEqual(found.sessions, ["A", "B"]);
    assert.equal(found.findings[2]?.risk, 60, "a response carries its event's risk");

    const atRisk = collectFindings(journal, {
      since: iso(5),
      until: iso(20),
      failOn: 70,
      minRisk: 70,
      limit: 1,
    });
    assert.equal(atRisk.failing, 1, "only the risk-75 event reaches 70");
    assert.equal(atRisk.truncated, true);
    assert.equal(atRisk.findings.length, 2, "at most `limit` of each type");

    const open = collectFindings(journal, {
      since: null,
      until: iso(31),
      failOn: "response",
      minRisk: 100,
      limit: 100,
    });
    assert.deepEqual(
      open.findings.filter((f) => f.failing).map((f) => f.event?.id ?? f.response?.action),
      [denied.id, "block", "kill"],
    );
  });
});
