import assert from "node:assert/strict";
import { world } from "./_testing.ts";

Deno.test("GET /v1/events/:id/explain explains a rule-with-exception decision with files and lines", async () => {
  const w = world();
  try {
    const event = w.nextEvent({
      kind: "file.read",
      target: "/work/proj/.env.example",
      exe: "/usr/bin/python3",
      cmdline: ["python3", "agent.py"],
      verdict: "allow",
      rule: "files.read.default",
      risk: 5,
      response: "none",
    });
    w.journal.append(event);
    w.journal.flush();
    const res = await w.request(`/v1/events/${event.id.toLowerCase()}/explain`);
    assert.equal(res.status, 200);
    const body = await res.json();
    assert.equal(body.event.id, event.id);
    assert.deepEqual(body.policy.files, ["policies/default.yaml", "policies/coding-agent.yaml"]);
    const x = body.explanation;
    assert.equal(x.decision.rule, "files.read.default");
    assert.deepEqual(
      x.matches.map((m: { section: string; entry: string }) => `${m.section} ${m.entry}`),
      ["rules read_dotenv", "files.read.default allow"],
    );
    assert.equal(x.exceptions[0].rule, "read_dotenv");
    assert.equal(x.exceptions[0].source.file, "policies/default.yaml");
    assert.match(x.why, /"read_dotenv" matched but an exception exempts it/);
  } finally {
    w.close();
  }
});

Deno.test("GET /v1/events/:id/explain refuses bad ids, unknown events and policies kept only by name", async () => {
  const w = world();
  try {
    assert.equal((await w.request("/v1/events/nope/explain")).status, 400);
    assert.equal((await w.request("/v1/events/01JZZZZZZZZZZZZZZZZZZZZZZZ/explain")).status, 404);
    w.journal.createSession({
      id: "01JOTHERSESSION00000000000",
      agent: "demo",
      command: [],
      pid: null,
      kind: "run",
      policy: "my-team-policy",
      mode: "pause",
      workspace: w.dir,
    });
    const event = w.nextEvent({ session: "01JOTHERSESSION00000000000" });
    w.journal.append(event);
    w.journal.flush();
    const res = await w.request(`/v1/events/${event.id}/explain`);
    assert.equal(res.status, 409);
    assert.match(
      (await res.json()).error,
      /ran policy "my-team-policy", which is not a built-in template.*sentry explain --policy FILE/,
    );
    assert.equal(
      (await w.request(`/v1/events/${event.id}/explain`, { method: "POST" })).status,
      405,
    );
  } finally {
    w.close();
  }
});

Deno.test("GET /v1/openapi.json documents the explain route", async () => {
  const w = world();
  try {
    const doc = await (await w.request("/v1/openapi.json")).json();
    assert.equal(doc.paths["/v1/events/{id}/explain"].get.operationId, "explainEvent");
  } finally {
    w.close();
  }
});
