/**
 * The API parts the dashboard's filters and its life after the agent rely on: the local
 * `/v1/hosts`, the `attributed` and `q` filters of the events route (a text search walks the
 * session in bounded steps), and the `server` and `closing` messages of an API that stops with
 * its session.
 */
import assert from "node:assert/strict";
import { HOST, SESSION, world } from "./_testing.ts";
import { SEARCH_WALK } from "./app.ts";
import { serveCommand } from "./instance.ts";
import type { AgentEvent } from "../events/mod.ts";
import { openJournal } from "../journal/mod.ts";
import { join } from "node:path";

async function body(res: Response): Promise<Record<string, unknown>> {
  return await res.json() as Record<string, unknown>;
}

async function page(
  request: (path: string) => Promise<Response>,
  query: string,
): Promise<{ events: AgentEvent[]; next_cursor: string | null }> {
  const res = await request(`/v1/sessions/${SESSION}/events?${query}`);
  assert.equal(res.status, 200, query);
  return await res.json();
}

Deno.test("GET /v1/hosts lists the journal's hosts with their sessions, behind the token", async () => {
  const w = world(3);
  try {
    const other = openJournal(join(w.dir, "journal.db"), { hostname: "build-7" });
    other.createSession({
      id: "01JOTHERHOSTSESSION0000000",
      agent: "codex",
      command: ["codex"],
      pid: null,
      kind: "run",
      policy: "default",
      mode: "monitor",
      workspace: w.dir,
    });
    other.updateSession("01JOTHERHOSTSESSION0000000", {
      state: "ended",
      endedAt: new Date().toISOString(),
    });
    other.close();
    const res = await w.request("/v1/hosts");
    assert.equal(res.status, 200);
    const hosts = await body(res);
    assert.equal(hosts["collector"], false);
    const list = hosts["hosts"] as { name: string; sessions: number; live: number }[];
    assert.deepEqual(list.map((h) => [h.name, h.sessions, h.live]).sort(), [
      ["build-7", 1, 0],
      ["test", 1, 1],
    ]);
    // What the dashboard then asks for: one host's sessions.
    const only = await body(await w.request("/v1/sessions?host=build-7"));
    assert.deepEqual((only["sessions"] as { id: string }[]).map((s) => s.id), [
      "01JOTHERHOSTSESSION0000000",
    ]);
    const anonymous = await w.app.request(`http://${HOST}/v1/hosts`, { headers: { host: HOST } });
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
    const post = await w.request("/v1/hosts", { method: "POST" });
    assert.equal(post.status, 405);
    assert.equal(post.headers.get("allow"), "GET");
    await post.body?.cancel();
  } finally {
    w.close();
  }
});

Deno.test("GET events with attributed keeps the agent's or the unattributed events; with verdict=deny, the violations", async () => {
  const w = world();
  try {
    const events = Array.from({ length: 30 }, (_, i) =>
      w.nextEvent({
        pid: i % 3 === 0 ? null : 100 + i,
        verdict: i % 2 === 0 ? "deny" : "allow",
      }));
    for (const e of events) w.journal.append(e);
    w.journal.flush();
    const ids = (list: AgentEvent[]) => list.map((e) => e.id);
    assert.deepEqual(
      ids((await page(w.request, "attributed=true&limit=1000")).events),
      ids(events.filter((e) => e.pid !== null)),
    );
    assert.deepEqual(
      ids((await page(w.request, "attributed=false&limit=1000")).events),
      ids(events.filter((e) => e.pid === null)),
    );
    assert.deepEqual(
      ids((await page(w.request, "attributed=true&verdict=deny&order=desc&limit=1000")).events),
      ids(events.filter((e) => e.pid !== null && e.verdict === "deny")).reverse(),
    );
    const bad = await w.request(`/v1/sessions/${SESSION}/events?attributed=yes`);
    assert.equal(bad.status, 400);
    assert.equal((await body(bad))["field"], "attributed");
  } finally {
    w.close();
  }
});

Deno.test("GET events with q searches the whole session in bounded steps, following next_cursor", async () => {
  const w = world();
  try {
    const oldest = w.nextEvent({
      target: "/home/dev/.aws/credentials",
      cmdline: ["aws", "s3", "cp"],
      detail: { host: "Bucket.Example.com" },
    });
    w.journal.append(oldest);
    for (let i = 0; i < SEARCH_WALK + 50; i++) w.journal.append(w.nextEvent());
    const newest = w.nextEvent({
      target: "/work/notes.txt",
      detail: { host: "bucket.example.com" },
    });
    w.journal.append(newest);
    w.journal.flush();

    // The newest step walks SEARCH_WALK events: it finds the newest match, and a cursor.
    const first = await page(w.request, "q=BUCKET.example&order=desc&limit=200");
    assert.deepEqual(first.events.map((e) => e.id), [newest.id]);
    assert.ok(first.next_cursor !== null);
    // The next step reaches the session's start: the oldest match, and no cursor.
    const second = await page(
      w.request,
      `q=BUCKET.example&order=desc&limit=200&cursor=${first.next_cursor}`,
    );
    assert.deepEqual(second.events.map((e) => e.id), [oldest.id]);
    assert.equal(second.next_cursor, null);

    // Every word must match: path and command line together; with other filters too.
    const both = await page(w.request, "q=credentials%20s3&order=desc&limit=5");
    assert.deepEqual(both.events.map((e) => e.id), []);
    assert.ok(both.next_cursor !== null, "not found in the newest step: search on");
    const near = await page(
      w.request,
      `q=${encodeURIComponent("notes.txt bucket")}&verdict=allow&order=desc`,
    );
    assert.deepEqual(near.events.map((e) => e.id), newest.verdict === "allow" ? [newest.id] : []);
    // A full page ends the step at its last event.
    const full = await page(w.request, "q=file&order=desc&limit=3");
    assert.equal(full.events.length, 3);
    assert.equal(full.next_cursor, full.events[2]?.id);
    // A blank q is no search.
    const blank = await page(w.request, "q=%20&order=desc&limit=2");
    assert.equal(blank.events.length, 2);

    const long = await w.request(`/v1/sessions/${SESSION}/events?q=${"x".repeat(201)}`);
    assert.equal(long.status, 400);
    assert.equal((await body(long))["field"], "q");
  } finally {
    w.close();
  }
});

/** Reads SSE messages (event, data) until the stream ends or `n` arrived. */
async function messages(res: Response, n: number): Promise<{ event: string; data: string }[]> {
  assert(res.body);
  const reader = res.body.pipeThrough(new TextDecoderStream()).getReader();
  const out: { event: string; data: string }[] = [];
  let buffer = "";
  const timer = setTimeout(() => reader.cancel(), 3000);
  try {
    while (out.length < n) {
      const { value, done } = await reader.read();
      if (done) break;
      buffer += value;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const event = /^event: (.*)$/m.exec(block)?.[1];
        const data = /^data: (.*)$/m.exec(block)?.[1];
        if (event !== undefined && data !== undefined) out.push({ event, data });
      }
    }
  } finally {
    clearTimeout(timer);
    await reader.cancel().catch(() => {});
  }
  return out;
}

Deno.test("an API that stops with its session opens its stream with `server` and ends it with `closing` and the ended session", async () => {
  const serve = "SENTRY_HOME=/tmp/x sentry serve --port 7979";
  const w = world(0, { endsWith: { session: SESSION, serve } });
  try {
    const res = await w.request("/v1/events/stream");
    const last = w.nextEvent();
    setTimeout(() => {
      w.hub.publish(last);
      w.journal.append(last);
      w.journal.updateSession(SESSION, {
        state: "ended",
        endedAt: new Date().toISOString(),
        exitCode: 3,
      });
      w.journal.flush();
      w.app.close();
    }, 50);
    const got = await messages(res, 10);
    assert.deepEqual(got.map((m) => m.event), ["server", "event", "closing"]);
    assert.deepEqual(JSON.parse(got[0]?.data ?? ""), { session: SESSION, serve });
    assert.equal(JSON.parse(got[1]?.data ?? "").id, last.id);
    const closing = JSON.parse(got[2]?.data ?? "");
    assert.equal(closing.serve, serve);
    assert.equal(closing.ended.state, "ended");
    assert.equal(closing.ended.exitCode, 3);
    assert.equal(closing.ended.events, 1);
  } finally {
    w.close();
  }
  // `sentry serve` and the collector stop with no session: neither message.
  const plain = world();
  try {
    const res = await plain.request("/v1/events/stream");
    setTimeout(() => plain.app.close(), 50);
    assert.deepEqual(await messages(res, 10), []);
  } finally {
    plain.close();
  }
});

Deno.test("serveCommand() names SENTRY_HOME only when `sentry serve` would not find the data by itself", () => {
  const env = { HOME: "/home/ann", PATH: "/usr/bin" };
  assert.equal(
    serveCommand("/home/ann/.local/share/sentry", 7979, env),
    "sentry serve --port 7979",
  );
  assert.equal(
    serveCommand("/home/ann/.local/share/sentry", 7980, { ...env, SENTRY_HOME: "/elsewhere" }),
    "sentry serve --port 7980",
  );
  assert.equal(
    serveCommand("/srv/sentry data", 7979, { ...env, SENTRY_HOME: "/srv/sentry data" }),
    "SENTRY_HOME='/srv/sentry data' sentry serve --port 7979",
  );
  assert.equal(
    serveCommand("/data/xdg/sentry", 7979, { ...env, XDG_DATA_HOME: "/data/xdg" }),
    "sentry serve --port 7979",
  );
  assert.equal(serveCommand("/d", 1, {}), "SENTRY_HOME=/d sentry serve --port 1");
});

Deno.test("the dashboard's matchesSearch() finds exactly what the server's search finds", async () => {
  const { matchesSearch } = await import("./assets/view.js");
  const w = world();
  try {
    const targets = [
      `/w/it's "quoted"\\back.txt`,
      "/w/Ünïcode/Straße.md",
      "api.Example.com:443",
      "/w/line\nbreak\ttab",
      "/w/plain.ts",
    ];
    const events = targets.flatMap((target, i) => [
      w.nextEvent({ target, pid: i % 2 === 0 ? null : 7 + i, exe: i % 2 ? "/usr/bin/Git" : null }),
      w.nextEvent({ detail: { host: target, n: i }, cmdline: ["sh", "-c", `echo ${target}`] }),
    ]);
    for (const e of events) w.journal.append(e);
    w.journal.flush();
    const searches = [
      `"quoted"\\back`,
      "it's",
      "straße",
      "STRASSE",
      "ünïcode",
      "EXAMPLE.com :443",
      "line\\nbreak",
      "\\t",
      "echo plain",
      "/usr/bin/git",
      "null",
      "7",
      "host",
      "file.read deny",
      "files.read.allow",
    ];
    for (const q of searches) {
      const server = await page(w.request, `q=${encodeURIComponent(q)}&limit=1000`);
      assert.deepEqual(
        server.events.map((e) => e.id),
        events.filter((e) => matchesSearch(e, q)).map((e) => e.id),
        q,
      );
    }
  } finally {
    w.close();
  }
});

Deno.test("the dashboard's ulidTime() reads the time an event id was minted", async () => {
  const { ulidTime } = await import("./assets/view.js");
  const { ulidFloor } = await import("./live.ts");
  for (const ms of [0, 1, Date.UTC(2026, 11, 6, 21, 0, 0, 123), 2 ** 48 - 1]) {
    assert.equal(ulidTime(ulidFloor(ms)), ms);
    assert.equal(ulidTime(ulidFloor(ms).toLowerCase()), ms);
  }
});
