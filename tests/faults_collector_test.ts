/**
 * The collector and the local API under hostile input, with real `sentry server` and
 * `sentry serve` processes on loopback (issue 12, "The collector"): a valid key presenting
 * another host's id, across a restart and across two collectors sharing one store; and bodies
 * of 300 MB, declared, chunked or with a lying `Content-Length`, to every kind of route, while
 * the server's resident memory is read from /proc.
 * @module
 */
import assert from "node:assert/strict";
import { createUlid } from "../src/events/mod.ts";
import { hasStackTrace, type Running, type Sandbox, withSandbox } from "./_helpers.ts";

const ulid = createUlid();
const MiB = 1024 * 1024;
/** The body every route is sent: 300 MB, made as it is sent. */
const HUGE = 300 * MiB;
/** How much a server may grow while refusing the bodies. */
const MAX_GROWTH = 64 * MiB;

function session(id: string, state: "running" | "ended" = "running") {
  return {
    id,
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
    endedAt: state === "ended" ? "2026-11-24T18:09:00.000Z" : null,
    state,
    exitCode: state === "ended" ? 0 : null,
    note: null,
  };
}

function batch(hostId: string, id: string, n: number, state?: "running" | "ended"): string {
  const events = Array.from({ length: n }, (_, i) => ({
    id: ulid(),
    ts: new Date(Date.UTC(2026, 10, 24, 18, 0, 0) + i).toISOString(),
    session: id,
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
    sessions: [session(id, state)],
    events,
    dropped: 0,
  });
}

async function post(base: string, key: string, body: string): Promise<Response> {
  return await fetch(`${base}/v1/sync/batches`, {
    method: "POST",
    headers: { authorization: `Bearer ${key}`, "content-type": "application/json" },
    body,
  });
}

async function startServer(sb: Sandbox): Promise<{ server: Running; base: string }> {
  const server = sb.spawn(["server", "--port", "0"]);
  const url = /collector listening at (http:\/\/127\.0\.0\.1:\d+)/;
  await server.waitForStderr(url);
  return { server, base: url.exec(server.stderr)?.[1] ?? "" };
}

async function stop(server: Running): Promise<void> {
  server.kill("SIGTERM");
  assert.equal(await server.exit(), 0, server.stderr);
  assert.ok(!hasStackTrace(server.stderr), server.stderr);
}

Deno.test("a second key presenting another host's id gets 403 naming host.id, stores nothing, is logged, and the binding survives a restart and a second collector", async () => {
  await withSandbox(async (sb) => {
    const laptop = (await sb.ok(["server", "keys", "add", "laptop"])).trim();
    const intruder = (await sb.ok(["server", "keys", "add", "intruder"])).trim();
    const intruderId = JSON.parse(
      (await sb.ok(["server", "keys", "list", "--json"])).split("\n")[1] ?? "{}",
    ).id;
    const token = (await sb.ok(["server", "token"])).trim();
    const auth = { headers: { authorization: `Bearer ${token}` } };
    const host = ulid();
    const id = ulid();

    let { server, base } = await startServer(sb);
    assert.equal((await post(base, laptop, batch(host, id, 5))).status, 200);
    // Events into the host's session, and its end: both refused.
    const refused = await post(base, intruder, batch(host, id, 7, "ended"));
    assert.equal(refused.status, 403);
    const answer = await refused.json();
    assert.equal(answer.field, "host.id");
    assert.match(answer.error, /bound to another key/);
    const stored = await (await fetch(`${base}/v1/sessions/${id}`, auth)).json();
    assert.equal(stored.session.state, "running");
    assert.equal(stored.session.events, 5);
    await server.waitForStderr(
      `sentry: collector: refused a batch for host "${host}" from key ${intruderId} ("intruder")`,
    );
    assert.ok(!server.stderr.includes("sk_"), "no secret in the log");
    const hosts = (await (await fetch(`${base}/v1/hosts`, auth)).json()).hosts;
    assert.deepEqual(hosts.map((h: { key_name: string }) => h.key_name), ["laptop"]);
    await stop(server);

    // A restart keeps the binding.
    ({ server, base } = await startServer(sb));
    assert.equal((await post(base, intruder, batch(host, id, 1))).status, 403);
    assert.equal((await post(base, laptop, batch(host, id, 1))).status, 200);

    // Two collectors on one store: of two keys racing for each new host, exactly one wins.
    const second = await startServer(sb);
    for (let i = 0; i < 10; i++) {
      const fresh = ulid();
      const [a, b] = await Promise.all([
        post(base, laptop, batch(fresh, ulid(), 2)),
        post(second.base, intruder, batch(fresh, ulid(), 2)),
      ]);
      await a.body?.cancel();
      await b.body?.cancel();
      assert.deepEqual([a.status, b.status].sort(), [200, 403], `host ${i}`);
    }
    await stop(second.server);
    await stop(server);
  });
});

/** How a raw request carries its body. */
type Framing = "chunked" | "declared" | "lying";

interface RawResult {
  /** The status of the first answer, or 0 when the connection closed without one. */
  status: number;
  /** The first answer's body, when it came whole in the first read. */
  body: string;
  /** Time to the first answer, in ms. */
  ms: number;
  /** Body bytes written before the server answered or closed. */
  sent: number;
}

/**
 * Sends a request over a raw TCP connection with a body of `HUGE` bytes, made as it is sent:
 * chunked, with an honest `Content-Length`, or with a `Content-Length` of 100 that the bytes
 * then overrun. Stops writing when the server answers.
 */
async function rawRequest(
  port: number,
  request: { method: string; path: string; headers: Record<string, string>; framing: Framing },
): Promise<RawResult> {
  const conn = await Deno.connect({ hostname: "127.0.0.1", port });
  const enc = new TextEncoder();
  const head = [`${request.method} ${request.path} HTTP/1.1`, `Host: 127.0.0.1:${port}`];
  for (const [k, v] of Object.entries(request.headers)) head.push(`${k}: ${v}`);
  if (request.framing === "chunked") head.push("Transfer-Encoding: chunked");
  else head.push(`Content-Length: ${request.framing === "declared" ? HUGE : 100}`);
  const started = performance.now();
  let answered = false;
  let sent = 0;
  const writing = (async () => {
    await conn.write(enc.encode(`${head.join("\r\n")}\r\n\r\n`));
    const data = new Uint8Array(64 * 1024).fill(120);
    const frame = new Uint8Array([...enc.encode("10000\r\n"), ...data, ...enc.encode("\r\n")]);
    while (!answered && sent < HUGE) {
      await conn.write(request.framing === "chunked" ? frame : data);
      sent += data.length;
    }
    if (!answered && request.framing === "chunked") await conn.write(enc.encode("0\r\n\r\n"));
  })().catch(() => {});
  const buf = new Uint8Array(64 * 1024);
  let text = "";
  try {
    const timer = setTimeout(() => conn.close(), 30_000);
    const n = await conn.read(buf).catch(() => null);
    clearTimeout(timer);
    if (n !== null) text = new TextDecoder().decode(buf.subarray(0, n));
  } finally {
    answered = true;
  }
  const ms = performance.now() - started;
  try {
    conn.close();
  } catch {
    // Closed by the timer.
  }
  await writing;
  const status = Number(/^HTTP\/1\.1 (\d{3})/.exec(text)?.[1] ?? 0);
  return { status, body: text.slice(text.indexOf("\r\n\r\n") + 4), ms, sent };
}

/** VmRSS and VmHWM (the peak) of a process, in bytes. */
function memory(pid: number): { rss: number; peak: number } {
  const status = Deno.readTextFileSync(`/proc/${pid}/status`);
  const kb = (field: string) => Number(new RegExp(`${field}:\\s+(\\d+) kB`).exec(status)?.[1]);
  return { rss: kb("VmRSS") * 1024, peak: kb("VmHWM") * 1024 };
}

interface Route {
  name: string;
  method: string;
  path: string;
  headers: Record<string, string>;
}

/**
 * Sends every route each framing of a 300 MB body and checks the answer: 413 naming the limit
 * for a declared or chunked body, and no buffering for a lying one (it is cut at 100 bytes).
 * Returns the lines of the table it measured.
 */
async function flood(server: Running, port: number, routes: readonly Route[]): Promise<string[]> {
  const lines: string[] = [];
  // Warm up the routes first, so the baseline includes the code they load.
  for (const route of routes) {
    await rawRequest(port, { ...route, framing: "lying" });
  }
  const before = memory(server.pid);
  for (const route of routes) {
    for (const framing of ["declared", "chunked"] as const) {
      const r = await rawRequest(port, { ...route, framing });
      lines.push(
        `${route.name} ${framing}: ${r.status} in ${r.ms.toFixed(0)} ms after ${
          (r.sent / MiB).toFixed(1)
        } MiB sent`,
      );
      assert.equal(r.status, 413, `${route.name} ${framing}: ${r.body}`);
      assert.match(r.body, /Body too large: .*\b(65536|1048576) bytes/, `${route.name} ${framing}`);
      assert.ok(r.ms < 10_000, `${route.name} ${framing} took ${r.ms} ms`);
      // The answer comes before the body ends: the server neither waits for nor keeps it. How
      // much the client pushed before the close reached it is timing (usually 4–25 MiB; once
      // 150 MiB on a loaded CI machine: loopback moves about 1 GiB/s), so only this is asserted.
      assert.ok(r.sent < HUGE, `${route.name} ${framing}: ${r.sent} bytes sent`);
    }
    const lying = await rawRequest(port, { ...route, framing: "lying" });
    lines.push(`${route.name} lying: ${lying.status} in ${lying.ms.toFixed(0)} ms`);
    assert.ok(lying.status < 500, `${route.name} lying: ${lying.status} ${lying.body}`);
    assert.ok(lying.sent < HUGE, `${route.name} lying: ${lying.sent} bytes sent`);
  }
  const after = memory(server.pid);
  lines.push(
    `RSS ${(before.rss / MiB).toFixed(1)} -> ${(after.rss / MiB).toFixed(1)} MiB, peak ${
      (before.peak / MiB).toFixed(1)
    } -> ${(after.peak / MiB).toFixed(1)} MiB`,
  );
  assert.ok(after.peak - before.peak < MAX_GROWTH, lines.join("\n"));
  assert.ok(after.rss - before.rss < MAX_GROWTH, lines.join("\n"));
  return lines;
}

Deno.test("`sentry server` answers a 300 MB body on every route kind with 413, and its memory stays bounded", async () => {
  await withSandbox(async (sb) => {
    const key = (await sb.ok(["server", "keys", "add", "laptop"])).trim();
    const token = (await sb.ok(["server", "token"])).trim();
    const { server, base } = await startServer(sb);
    const port = Number(new URL(base).port);
    const id = ulid();
    assert.equal((await post(base, key, batch(ulid(), id, 1))).status, 200);
    const upload = { authorization: `Bearer ${key}`, "Content-Type": "application/json" };
    const api = { authorization: `Bearer ${token}`, "Content-Type": "application/json" };
    const lines = await flood(server, port, [
      { name: "batches", method: "POST", path: "/v1/sync/batches", headers: upload },
      { name: "hello", method: "GET", path: "/v1/sync/hello", headers: upload },
      { name: "hosts", method: "GET", path: "/v1/hosts", headers: api },
      { name: "rollback", method: "POST", path: `/v1/sessions/${id}/rollback`, headers: api },
      { name: "pause", method: "POST", path: `/v1/sessions/${id}/pause`, headers: api },
      { name: "no key", method: "POST", path: `/v1/sessions/${id}/kill`, headers: {} },
      { name: "no route", method: "PUT", path: "/nowhere", headers: {} },
    ]);
    // deno-lint-ignore no-console
    console.log(`sentry server:\n  ${lines.join("\n  ")}`);
    // Still serving.
    assert.equal((await post(base, key, batch(ulid(), ulid(), 1))).status, 200);
    await stop(server);
  });
});

Deno.test("`sentry serve` (the local API) answers a 300 MB body on every route kind with 413, and its memory stays bounded", async () => {
  await withSandbox(async (sb) => {
    const ran = await sb.sentry(["run", "--", "sh", "-c", "exit 0"]);
    assert.equal(ran.code, 0, ran.stderr);
    const token = (await sb.ok(["token"])).trim();
    const serve = sb.spawn(["serve", "--port", "0"]);
    const url = /serving the API at (http:\/\/127\.0\.0\.1:(\d+))/;
    await serve.waitForStderr(url);
    const port = Number(url.exec(serve.stderr)?.[2]);
    const api = { authorization: `Bearer ${token}`, "Content-Type": "application/json" };
    const lines = await flood(serve, port, [
      { name: "rollback", method: "POST", path: "/v1/sessions/latest/rollback", headers: api },
      { name: "pause", method: "POST", path: "/v1/sessions/latest/pause", headers: api },
      { name: "sessions", method: "GET", path: "/v1/sessions", headers: api },
      { name: "health", method: "GET", path: "/health", headers: {} },
      { name: "no key", method: "POST", path: "/v1/sessions/latest/rollback", headers: {} },
    ]);
    // deno-lint-ignore no-console
    console.log(`sentry serve:\n  ${lines.join("\n  ")}`);
    serve.kill("SIGINT");
    assert.equal(await serve.exit(), 0, serve.stderr);
  });
});
