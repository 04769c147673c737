/**
 * `sentry server` (the collector) and `sentry server keys` end to end: the real CLI, a real
 * socket on loopback, and gzip batches posted with fetch as a host's uploader would.
 * @module
 */
import assert from "node:assert/strict";
import { createUlid } from "../src/events/mod.ts";
import { hasStackTrace, type Sandbox, withSandbox } from "./_helpers.ts";

const ulid = createUlid();

function batch(hostId: string, session: string, n: number): string {
  const events = Array.from({ length: n }, (_, i) => ({
    id: ulid(),
    ts: new Date(Date.UTC(2026, 10, 24, 18, 0, 0) + i).toISOString(),
    session,
    agent: "claude",
    pid: 4321,
    ppid: 1,
    exe: "/usr/bin/python3",
    cmdline: ["python3"],
    kind: "file.write",
    target: `/w/f${i}`,
    detail: {},
    sensor: "fd",
    verdict: "allow",
    risk: 5,
    factors: [],
    rule: "files.write.allow",
    response: "none",
  }));
  return JSON.stringify({
    protocol: 1,
    batch: ulid(),
    host: { id: hostId, name: "build-7" },
    sent_at: new Date().toISOString(),
    sessions: [{
      id: session,
      agent: "claude",
      command: ["claude"],
      pid: 4321,
      kind: "run",
      policy: "coding-agent",
      mode: "alert",
      workspace: "/w",
      host: "build-7",
      sentryPid: 4320,
      startedAt: "2026-11-24T18:00:00.000Z",
      endedAt: null,
      state: "running",
      exitCode: null,
      note: null,
    }],
    events,
    dropped: 3,
  });
}

async function post(base: string, key: string, body: string): Promise<Response> {
  const gz = await new Response(
    new Blob([body]).stream().pipeThrough(new CompressionStream("gzip")),
  ).bytes();
  return await fetch(`${base}/v1/sync/batches`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${key}`,
      "content-type": "application/json",
      "content-encoding": "gzip",
      "sentry-protocol": "1",
    },
    body: gz,
  });
}

async function keysList(
  sb: Sandbox,
): Promise<{ id: string; name: string; revoked_at: string | null }[]> {
  const out = await sb.ok(["server", "keys", "list", "--json"]);
  return out.split("\n").filter((l) => l !== "").map((l) => JSON.parse(l));
}

Deno.test("`sentry server` stores a host's gzip batch once, and a revoked key is refused at once", async () => {
  await withSandbox(async (sb) => {
    const added = await sb.sentry(["server", "keys", "add", "build-7"]);
    assert.equal(added.code, 0, added.stderr);
    const key = added.stdout.trim();
    assert.match(key, /^sk_[a-z2-7]{52}$/);
    const file = sb.path("sentry", "collector", "keys.json");
    assert.equal((await Deno.stat(file)).mode! & 0o777, 0o600);
    assert.ok(!(await Deno.readTextFile(file)).includes(key.slice(3)), "the secret is not stored");

    const twice = await sb.sentry(["server", "keys", "add", "build-7"]);
    assert.equal(twice.code, 2);
    assert.match(twice.stderr, /^sentry: Invalid key name "build-7": an active key has it\n/);
    assert.ok(!hasStackTrace(twice.stderr));

    const server = sb.spawn(["server", "--port", "0"]);
    const url = /collector listening at (http:\/\/127\.0\.0\.1:\d+)/;
    await server.waitForStderr(url);
    const base = url.exec(server.stderr)?.[1] ?? "";

    const hello = await fetch(`${base}/v1/sync/hello`, {
      headers: { authorization: `Bearer ${key}` },
    });
    assert.equal(hello.status, 200);
    const body = await hello.json();
    assert.equal(body.key.name, "build-7");
    assert.equal(body.key.id, (await keysList(sb))[0]?.id);

    const hostId = ulid();
    const session = ulid();
    const payload = batch(hostId, session, 120);
    const first = await post(base, key, payload);
    assert.equal(first.status, 200);
    assert.deepEqual(await first.json(), { accepted: 120, duplicates: 0, sessions: 1 });
    const retry = await post(base, key, payload);
    assert.deepEqual(await retry.json(), { accepted: 0, duplicates: 120, sessions: 1 });

    // The dashboard's API, with the collector's own token, filtered by host.
    const token = (await sb.ok(["server", "token"])).trim();
    const auth = { headers: { authorization: `Bearer ${token}` } };
    const sessions = await (await fetch(`${base}/v1/sessions?host=build-7`, auth)).json();
    assert.equal(sessions.sessions.length, 1);
    assert.equal(sessions.sessions[0].events, 120);
    const hosts = await (await fetch(`${base}/v1/hosts`, auth)).json();
    assert.equal(hosts.hosts.length, 1);
    assert.equal(hosts.hosts[0].host_id, hostId);
    assert.equal(hosts.hosts[0].dropped, 3);
    assert.equal(hosts.hosts[0].sessions, 1);
    const pause = await fetch(`${base}/v1/sessions/${session}/pause`, { method: "POST", ...auth });
    assert.equal(pause.status, 409);
    await pause.body?.cancel();

    const revoked = await sb.sentry(["server", "keys", "revoke", "build-7"]);
    assert.equal(revoked.code, 0, revoked.stderr);
    assert.match(revoked.stdout, /^revoked key k_[0-9A-Z]{26} "build-7"\n$/);
    const refused = await post(base, key, batch(hostId, session, 1));
    assert.equal(refused.status, 401);
    await refused.body?.cancel();
    const [listed] = await keysList(sb);
    assert.notEqual(listed?.revoked_at ?? null, null);
    // The name is free again.
    assert.equal((await sb.sentry(["server", "keys", "add", "build-7"])).code, 0);
    const unknown = await sb.sentry(["server", "keys", "revoke", "nobody"]);
    assert.equal(unknown.code, 2);
    assert.match(unknown.stderr, /No key "nobody"/);

    Deno.kill(server.pid, "SIGTERM");
    assert.equal(await server.exit(), 0, server.stderr);
    assert.ok(!hasStackTrace(server.stderr), server.stderr);
  });
});

Deno.test("`sentry server` refuses a bad --port with exit 2, and warns off loopback", async () => {
  await withSandbox(async (sb) => {
    const bad = await sb.sentry(["server", "--port", "http"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /Invalid --port "http"/);
    const server = sb.spawn(["server", "--port", "0", "--listen", "0.0.0.0"]);
    await server.waitForStderr(/collector listening at http:\/\/0\.0\.0\.0:\d+/);
    assert.match(server.stderr, /warning: the collector listens on 0\.0\.0\.0, not loopback/);
    assert.match(server.stderr, /no active upload key yet/);
    Deno.kill(server.pid, "SIGINT");
    assert.equal(await server.exit(), 0, server.stderr);
  });
});
