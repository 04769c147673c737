import assert from "node:assert/strict";
import type { AgentEvent, Decision } from "../events/mod.ts";
import { Backtest, crossedFailOn, parseFailOn } from "./backtest.ts";

function journaled(n: number, d: Pick<AgentEvent, "verdict" | "rule" | "response">): AgentEvent {
  return {
    id: `01J00000000000000000000${String(n).padStart(3, "0")}`,
    ts: "2026-12-01T00:00:00.000Z",
    session: "S",
    agent: "a",
    pid: 1,
    ppid: 0,
    exe: null,
    cmdline: [],
    kind: "file.read",
    target: `/f${n}`,
    detail: {},
    sensor: "ebpf",
    risk: 10,
    factors: [],
    ...d,
  };
}

function now(verdict: "allow" | "deny", rule: string, response: Decision["response"]): Decision {
  return { verdict, rule, response, risk: 10, factors: [] };
}

Deno.test("Backtest counts new denials, new allows and changed responses, grouped by rule", () => {
  const bt = new Backtest();
  const allow = { verdict: "allow", rule: "files.read.default", response: "none" } as const;
  const deny = { verdict: "deny", rule: "files.read.deny", response: "pause" } as const;
  for (let i = 0; i < 5; i++) {
    bt.add(journaled(i, allow), now("deny", "files.read.default", "pause"));
  }
  bt.add(journaled(5, allow), now("deny", "read_dotenv", "kill"));
  bt.add(journaled(6, deny), now("allow", "files.read.allow", "none"));
  bt.add(journaled(7, deny), now("deny", "files.read.deny", "kill"));
  bt.add(journaled(8, deny), now("deny", "files.read.deny", "pause"));
  bt.add(journaled(9, allow), now("allow", "files.read.default", "none"));
  const r = bt.result();
  assert.equal(r.events, 10);
  assert.equal(r.unchanged, 2);
  assert.deepEqual(r.counts, { newly_denied: 6, newly_allowed: 1, changed_response: 1 });
  assert.deepEqual(r.groups.newly_denied.map((g) => [g.rule, g.count]), [
    ["files.read.default", 5],
    ["read_dotenv", 1],
  ]);
  assert.equal(r.groups.newly_denied[0]?.examples.length, 3, "examples are capped");
  assert.deepEqual(r.groups.newly_denied[0]?.examples[0]?.before, allow);
  assert.equal(
    r.groups.newly_allowed[0]?.rule,
    "files.read.deny",
    "a new allow names the old rule",
  );
  assert.equal(r.groups.changed_response[0]?.responses, "pause -> kill");
});

Deno.test("parseFailOn() reads changes with optional counts and refuses anything else", () => {
  assert.deepEqual(parseFailOn("denied"), [{ change: "newly_denied", atLeast: 1 }]);
  assert.deepEqual(parseFailOn("allowed=3, response=10,any"), [
    { change: "newly_allowed", atLeast: 3 },
    { change: "changed_response", atLeast: 10 },
    { change: "any", atLeast: 1 },
  ]);
  assert.throws(() => parseFailOn("deny"), /Invalid --fail-on "deny"/);
  assert.throws(() => parseFailOn("denied=0"), /at least 1/);
});

Deno.test("crossedFailOn() names the conditions a backtest crosses", () => {
  const bt = new Backtest();
  const allow = { verdict: "allow", rule: "r", response: "none" } as const;
  bt.add(journaled(1, allow), now("deny", "r", "pause"));
  bt.add(journaled(2, allow), now("deny", "r", "pause"));
  const r = bt.result();
  assert.deepEqual(crossedFailOn(r, parseFailOn("denied=3,allowed")), []);
  assert.deepEqual(crossedFailOn(r, parseFailOn("denied=2")), ["2 newly denied (at least 2)"]);
  assert.deepEqual(crossedFailOn(r, parseFailOn("any")), ["2 changes (at least 1)"]);
});
