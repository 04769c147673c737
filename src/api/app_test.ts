import assert from "node:assert/strict";
import { HOST, SESSION, TOKEN, world } from "./_testing.ts";
import type { AgentEvent } from "../events/mod.ts";

async function json(res: Response): Promise<Record<string, unknown>> {
  return await res.json() as Record<string, unknown>;
}

Deno.test("GET /health needs no token and reports version, uptime and sensors", async () => {
  const w = world();
  try {
    const res = await w.app.request(`http://${HOST}/health`, { headers: { host: HOST } });
    assert.equal(res.status, 200);
    const body = await json(res);
    assert.equal(typeof body["version"], "string");
    assert.equal(body["uptimeMs"], 0);
    assert.deepEqual(body["sensors"], []);
  } finally {
    w.close();
  }
});

Deno.test("routes refuse a missing or wrong token with 401 and accept the right one", async () => {
  const w = world(1);
  try {
    const none = await w.app.request(`http://${HOST}/v1/sessions`, { headers: { host: HOST } });
    assert.equal(none.status, 401);
    assert.equal((await json(none))["field"], "authorization");
    const wrong = await w.request("/v1/sessions", { headers: { authorization: "Bearer nope" } });
    assert.equal(wrong.status, 401);
    await wrong.body?.cancel();
    const prefix = await w.request("/v1/sessions", {
      headers: { authorization: `Bearer ${TOKEN.slice(0, -1)}` },
    });
    assert.equal(prefix.status, 401);
    await prefix.body?.cancel();
    const basic = await w.request("/v1/sessions", { headers: { authorization: `Basic ${TOKEN}` } });
    assert.equal(basic.status, 401);
    await basic.body?.cancel();
    const ok = await w.request("/v1/sessions");
    assert.equal(ok.status, 200);
    const sessions = (await json(ok))["sessions"] as { id: string; events: number }[];
    assert.equal(sessions[0]?.id, SESSION);
    assert.equal(sessions[0]?.events, 1);
  } finally {
    w.close();
  }
});

Deno.test("a Host header that is not the server's is refused with 421, even on /health", async () => {
  const w = world();
  try {
    for (const path of ["/health", "/v1/sessions"]) {
      const res = await w.request(path, { headers: { host: "evil.example:7070" } });
      assert.equal(res.status, 421);
      assert.equal((await json(res))["field"], "host");
    }
    const other = await w.request("/v1/sessions", { headers: { host: "127.0.0.1:9999" } });
    assert.equal(other.status, 421);
    await other.body?.cancel();
    const local = await w.request("/v1/sessions", { headers: { host: "LOCALHOST:7070" } });
    assert.equal(local.status, 200);
    await local.body?.cancel();
  } finally {
    w.close();
  }
});

Deno.test("no response carries CORS headers", async () => {
  const w = world();
  try {
    for (const path of ["/health", "/v1/sessions", "/nope"]) {
      const res = await w.request(path, { headers: { origin: "https://evil.example" } });
      await res.body?.cancel();
      for (const name of res.headers.keys()) assert(!name.startsWith("access-control-"), name);
    }
    const preflight = await w.request("/v1/sessions/x/kill", {
      method: "OPTIONS",
      headers: { origin: "https://evil.example" },
    });
    await preflight.body?.cancel();
    assert.equal(preflight.headers.get("access-control-allow-origin"), null);
  } finally {
    w.close();
  }
});

Deno.test("GET /v1/sessions/:id returns the session; an unknown one is a 404 JSON", async () => {
  const w = world(2);
  try {
    const res = await w.request(`/v1/sessions/${SESSION.slice(0, 8)}`);
    assert.equal(res.status, 200);
    const body = await json(res) as { session: { id: string; events: number } };
    assert.equal(body.session.id, SESSION);
    assert.equal(body.session.events, 2);
    for (const path of ["/v1/sessions/ZZZZ", "/v1/sessions/ZZZZ/events"]) {
      const missing = await w.request(path);
      assert.equal(missing.status, 404);
      const err = await json(missing);
      assert.match(String(err["error"]), /ZZZZ/);
      assert.equal(err["field"], "id");
    }
    const post = await w.request("/v1/sessions/ZZZZ/pause", { method: "POST" });
    assert.equal(post.status, 404);
    await post.body?.cancel();
    assert.deepEqual(w.calls, []);
  } finally {
    w.close();
  }
});

Deno.test("GET events rejects bad parameters with 400 naming the field", async () => {
  const w = world(3);
  try {
    const cases: [string, string][] = [
      ["min_risk=abc", "min_risk"],
      ["min_risk=101", "min_risk"],
      ["kind=file.eat", "kind"],
      ["kind=file.read,bogus", "kind"],
      ["verdict=maybe", "verdict"],
      ["since=yesterday", "since"],
      ["limit=0", "limit"],
      ["limit=5000", "limit"],
      ["cursor=abc", "cursor"],
      ["colour=red", "colour"],
    ];
    for (const [query, field] of cases) {
      const res = await w.request(`/v1/sessions/${SESSION}/events?${query}`);
      assert.equal(res.status, 400, query);
      const body = await json(res);
      assert.equal(body["field"], field, query);
      assert.equal(typeof body["error"], "string");
    }
  } finally {
    w.close();
  }
});

Deno.test("GET events filters by kind, verdict, min_risk and time", async () => {
  const w = world(40);
  try {
    const all = w.journal.queryEvents({ session: SESSION });
    const get = async (q: string): Promise<AgentEvent[]> => {
      const res = await w.request(`/v1/sessions/${SESSION}/events?limit=1000&${q}`);
      assert.equal(res.status, 200, q);
      return ((await json(res))["events"]) as AgentEvent[];
    };
    assert.deepEqual(
      (await get("kind=file.read,proc.exec")).map((e) => e.id),
      all.filter((e) => e.kind === "file.read" || e.kind === "proc.exec").map((e) => e.id),
    );
    assert.deepEqual(
      (await get("kind=file.read&kind=proc.exec")).map((e) => e.id),
      all.filter((e) => e.kind === "file.read" || e.kind === "proc.exec").map((e) => e.id),
    );
    assert.equal(
      (await get("verdict=deny&min_risk=50")).length,
      all.filter((e) => e.verdict === "deny" && e.risk >= 50).length,
    );
    const since = all[10]?.ts ?? "";
    const until = all[20]?.ts ?? "";
    assert.deepEqual(
      (await get(`since=${since}&until=${until}`)).map((e) => e.id),
      all.slice(10, 20).map((e) => e.id),
    );
  } finally {
    w.close();
  }
});

Deno.test("cursor pagination walks every event exactly once, in both orders", async () => {
  const w = world(57);
  try {
    const expected = w.journal.queryEvents({ session: SESSION }).map((e) => e.id);
    for (const order of ["asc", "desc"]) {
      const seen: string[] = [];
      let cursor: string | null = null;
      let pages = 0;
      do {
        const q: string = `limit=10&order=${order}${cursor ? `&cursor=${cursor}` : ""}`;
        const res = await w.request(`/v1/sessions/${SESSION}/events?${q}`);
        assert.equal(res.status, 200);
        const body = await json(res) as { events: AgentEvent[]; next_cursor: string | null };
        seen.push(...body.events.map((e) => e.id));
        cursor = body.next_cursor;
        pages++;
      } while (cursor !== null && pages < 100);
      assert.equal(pages, 6);
      assert.deepEqual(seen, order === "asc" ? expected : [...expected].reverse());
    }
    // An exact multiple of the page size ends with next_cursor null, not an empty page.
    const res = await w.request(`/v1/sessions/${SESSION}/events?limit=57`);
    assert.equal((await json(res))["next_cursor"], null);
  } finally {
    w.close();
  }
});

Deno.test("mutating routes take POST only; GET on them is 405", async () => {
  const w = world();
  try {
    for (const action of ["pause", "resume", "kill", "rollback"]) {
      const get = await w.request(`/v1/sessions/${SESSION}/${action}`);
      assert.equal(get.status, 405, action);
      assert.equal(get.headers.get("allow"), "POST");
      await get.body?.cancel();
      const post = await w.request(`/v1/sessions/${SESSION}/${action}`, { method: "POST" });
      assert.equal(post.status, 200, action);
      await post.body?.cancel();
    }
    const unauth = await w.app.request(`http://${HOST}/v1/sessions/${SESSION}/kill`, {
      method: "POST",
      headers: { host: HOST },
    });
    assert.equal(unauth.status, 401);
    await unauth.body?.cancel();
    assert.deepEqual(w.calls, [
      `pause ${SESSION}`,
      `resume ${SESSION}`,
      `kill ${SESSION}`,
      `rollback ${SESSION} {"dryRun":false}`,
    ]);
    const put = await w.request("/v1/sessions", { method: "DELETE" });
    assert.equal(put.status, 405);
    await put.body?.cancel();
  } finally {
    w.close();
  }
});

Deno.test("POST rollback validates its JSON body", async () => {
  const w = world();
  try {
    const post = (body: string, type = "application/json") =>
      w.request(`/v1/sessions/${SESSION}/rollback`, {
        method: "POST",
        headers: { "content-type": type },
        body,
      });
    const ok = await post(JSON.stringify({ dry_run: true, paths: ["src/**"] }));
    assert.equal(ok.status, 200);
    assert.equal((await json(ok))["dry_run"], true);
    assert.equal(w.calls.at(-1), `rollback ${SESSION} {"dryRun":true,"paths":["src/**"]}`);
    const cases: [string, string, string?][] = [
      ["{", "body"],
      ['{"dry_run":"yes"}', "dry_run"],
      ['{"paths":"src"}', "paths"],
      ['{"paths":[""]}', "paths.0"],
      ['{"force":true}', "force"],
      ["[]", "body"],
      ["dry_run=true", "content-type", "application/x-www-form-urlencoded"],
    ];
    for (const [body, field, type] of cases) {
      const res = await post(body, type);
      assert.equal(res.status, 400, body);
      assert.equal((await json(res))["field"], field, body);
    }
  } finally {
    w.close();
  }
});

Deno.test("a throwing control answers 500 JSON without a stack, and the app keeps serving", async () => {
  const w = world(0, {
    controls: {
      pause: () => Promise.reject(new Error("boom")),
      resume: () => Promise.reject(new Error("boom")),
      kill: () => {
        throw new Error("boom");
      },
      rollback: () => Promise.reject(new Error("boom")),
    },
  });
  try {
    for (const action of ["pause", "kill"]) {
      const res = await w.request(`/v1/sessions/${SESSION}/${action}`, { method: "POST" });
      assert.equal(res.status, 500);
      const text = await res.text();
      assert.deepEqual(JSON.parse(text), { error: "Internal error: boom" });
      assert(!text.includes(".ts:"), text);
    }
    const health = await w.request("/health");
    assert.equal(health.status, 200);
    await health.body?.cancel();
  } finally {
    w.close();
  }
});

Deno.test("GET /v1/policies lists the templates; a template is served, a path is not", async () => {
  const w = world();
  try {
    const list = await json(await w.request("/v1/policies")) as { policies: { name: string }[] };
    assert(list.policies.some((p) => p.name === "coding-agent"));
    const one = await w.request("/v1/policies/coding-agent");
    assert.equal(one.status, 200);
    const body = await json(one);
    assert.equal(body["name"], "coding-agent");
    assert.equal(typeof body["yaml"], "string");
    assert.equal(typeof body["resolved"], "object");
    const path = await w.request(`/v1/policies/${encodeURIComponent("/etc/passwd")}`);
    assert.equal(path.status, 404);
    await path.body?.cancel();
  } finally {
    w.close();
  }
});

Deno.test("GET /metrics is Prometheus text with events, sensors and journal latency", async () => {
  const w = world(3);
  try {
    w.journal.putSensorStats(SESSION, [{
      sensor: "fd",
      emitted: 10,
      dropped: 2,
      deduplicated: 0,
      lagMs: 250,
      polls: 5,
      blindSpots: [],
    }]);
    w.hub.publish(w.nextEvent({ kind: "file.read", verdict: "deny", response: "alert" }));
    w.hub.publish(w.nextEvent({ kind: "file.read", verdict: "deny", response: "alert" }));
    const res = await w.request("/metrics");
    assert.equal(res.status, 200);
    assert.match(res.headers.get("content-type") ?? "", /^text\/plain; version=0\.0\.4/);
    const text = await res.text();
    assert.match(
      text,
      /^sentry_events_total\{kind="file.read",verdict="deny",response="alert"\} 2$/m,
    );
    assert.match(
      text,
      new RegExp(`^sentry_sensor_dropped_total\\{session="${SESSION}",sensor="fd"\\} 2$`, "m"),
    );
    assert.match(text, /^sentry_sensor_lag_seconds\{session="\w+",sensor="fd"\} 0.25$/m);
    assert.match(text, /^sentry_journal_write_seconds\{quantile="0.99"\} [\d.e-]+$/m);
    assert.match(text, /^# TYPE sentry_journal_write_seconds summary$/m);
    for (const line of text.trimEnd().split("\n")) {
      assert.match(line, /^(# (HELP|TYPE) \w+ .+|\w+(\{[^}]*\})? [-\d.e+NaInf]+)$/, line);
    }
  } finally {
    w.close();
  }
});

Deno.test("GET /v1/openapi.json is an OpenAPI document with every path", async () => {
  const w = world();
  try {
    const res = await w.request("/v1/openapi.json");
    assert.equal(res.status, 200);
    const doc = JSON.parse(await res.text()) as {
      openapi: string;
      paths: Record<string, Record<string, { parameters?: { name: string }[] }>>;
    };
    assert.equal(doc.openapi, "3.1.0");
    for (
      const path of [
        "/health",
        "/v1/hosts",
        "/v1/sessions",
        "/v1/sessions/{id}",
        "/v1/sessions/{id}/events",
        "/v1/events/stream",
        "/v1/sessions/{id}/pause",
        "/v1/sessions/{id}/resume",
        "/v1/sessions/{id}/kill",
        "/v1/sessions/{id}/rollback",
        "/v1/policies",
        "/v1/policies/{name}",
        "/metrics",
      ]
    ) assert(doc.paths[path], path);
    const params = doc.paths["/v1/sessions/{id}/events"]?.["get"]?.parameters?.map((p) => p.name);
    assert.deepEqual(params, [
      "id",
      "kind",
      "verdict",
      "min_risk",
      "since",
      "until",
      "order",
      "limit",
      "cursor",
      "attributed",
      "q",
    ]);
  } finally {
    w.close();
  }
});

Deno.test("unknown routes are 404 JSON after auth", async () => {
  const w = world();
  try {
    const res = await w.request("/v2/whatever");
    assert.equal(res.status, 404);
    assert.equal(typeof (await json(res))["error"], "string");
    const anon = await w.app.request(`http://${HOST}/v2/whatever`, { headers: { host: HOST } });
    assert.equal(anon.status, 401);
    await anon.body?.cancel();
  } finally {
    w.close();
  }
});
