/**
 * The API that `sentry run` serves while it watches, end to end: live events of its own
 * session, controls that go through the live session, several instances on one host, and the
 * flags that choose or turn off the port.
 * @module
 */
import assert from "node:assert/strict";
import type { AgentEvent } from "../src/events/mod.ts";
import {
  isGone,
  isStopped,
  procState,
  PYTHON,
  type Running,
  type Sandbox,
  waitFor,
  withSandbox,
} from "./_helpers.ts";

const API_LINE = /API and dashboard at (http:\/\/127\.0\.0\.1:(\d+))/;
const SESSION_LINE = /as session ([0-9A-Z]{26})/;

/** An agent that writes a file in the workspace every 100 ms until it is told to stop. */
function busyAgent(sb: Sandbox, name = "agent.py"): Promise<string> {
  return sb.write(
    name,
    `
import os, sys, time
print(os.getpid(), flush=True)
i = 0
while not os.path.exists("stop"):
    with open(f"out_{i % 5}.txt", "w") as f:
        f.write(str(i))
    i += 1
    time.sleep(0.1)
`,
  );
}

interface Served {
  run: Running;
  base: string;
  port: number;
  session: string;
  pid: number;
}

async function startServed(sb: Sandbox, args: string[], script: string): Promise<Served> {
  const run = sb.spawn(["run", ...args, "--", PYTHON, script]);
  await run.waitForStderr(API_LINE);
  await run.waitForStdout(/^\d+$/m);
  const [, base = "", port = "0"] = API_LINE.exec(run.stderr) ?? [];
  const session = SESSION_LINE.exec(run.stderr)?.[1] ?? "";
  const pid = Number(/^(\d+)$/m.exec(run.stdout)?.[1]);
  return { run, base, port: Number(port), session, pid };
}

function authed(token: string, init: RequestInit = {}): RequestInit {
  return { ...init, headers: { authorization: `Bearer ${token}`, ...init.headers } };
}

async function post(base: string, path: string, token: string): Promise<Record<string, unknown>> {
  const response = await fetch(`${base}${path}`, authed(token, { method: "POST" }));
  const body = await response.json();
  assert.equal(response.status, 200, JSON.stringify(body));
  return body;
}

/** Reads SSE events from the stream until `want` returns true or the time is up. */
async function collectStream(
  url: string,
  token: string,
  want: (events: AgentEvent[]) => boolean,
  timeoutMs = 10_000,
): Promise<{ events: AgentEvent[]; firstMs: number | null }> {
  const ac = new AbortController();
  const timer = setTimeout(() => ac.abort(), timeoutMs);
  const started = performance.now();
  const events: AgentEvent[] = [];
  let firstMs: number | null = null;
  try {
    const response = await fetch(url, authed(token, { signal: ac.signal }));
    assert.equal(response.status, 200);
    let buffer = "";
    for await (const chunk of response.body!.pipeThrough(new TextDecoderStream())) {
      buffer += chunk;
      let end;
      while ((end = buffer.indexOf("\n\n")) >= 0) {
        const block = buffer.slice(0, end);
        buffer = buffer.slice(end + 2);
        const data = block.split("\n").filter((l) => l.startsWith("data:"))
          .map((l) => l.slice(5).trim()).join("\n");
        if (data === "" || !block.split("\n").some((l) => l === "event: event")) continue;
        events.push(JSON.parse(data) as AgentEvent);
        firstMs ??= performance.now() - started;
      }
      if (want(events)) break;
    }
  } catch (error) {
    if (!ac.signal.aborted) throw error;
  } finally {
    clearTimeout(timer);
    ac.abort();
  }
  return { events, firstMs };
}

Deno.test("`sentry run` serves its live events, and pause, resume and kill act through its session", async () => {
  await withSandbox(async (sb) => {
    const served = await startServed(sb, ["--api-port", "0"], await busyAgent(sb));
    const { base, session, pid, run } = served;
    const token = (await sb.sentry(["token"])).stdout.trim();

    const health = await (await fetch(`${base}/health`)).json();
    assert.equal(health.status, "ok");
    assert.ok(
      health.sensors.some((s: { sensor: string }) => s.sensor === "proc"),
      JSON.stringify(health.sensors),
    );
    const registry = JSON.parse(
      await Deno.readTextFile(sb.path("sentry", "run", `${session}.api`)),
    );
    assert.deepEqual(registry, { session, url: base, pid: run.pid });
    assert.equal(
      (await Deno.stat(sb.path("sentry", "run", `${session}.api`))).mode! & 0o777,
      0o600,
    );

    // Live events of the own session come from the session itself, not from a journal poll.
    const streamed = await collectStream(
      `${base}/v1/events/stream?session=${session}`,
      token,
      (events) => events.filter((e) => e.kind === "file.write").length >= 3,
    );
    const writes = streamed.events.filter((e) => e.kind === "file.write");
    assert.ok(writes.length >= 3, `only ${writes.length} writes streamed`);
    assert.ok(writes.every((e) => e.session === session));

    const paused = await post(base, `/v1/sessions/${session}/pause`, token);
    assert.equal(paused.ok, true, JSON.stringify(paused));
    assert.ok((paused.done as number[]).includes(pid));
    assert.ok(isStopped(pid), `agent state ${procState(pid)}`);
    const detail = await (await fetch(`${base}/v1/sessions/${session}`, authed(token))).json();
    assert.equal(detail.session.state, "paused");
    await post(base, `/v1/sessions/${session}/resume`, token);
    await waitFor(() => !isStopped(pid), { what: "the agent resumed", timeoutMs: 5000 });
    const killed = await post(base, `/v1/sessions/${session}/kill`, token);
    assert.equal(killed.ok, true, JSON.stringify(killed));
    assert.notEqual(await run.exit(), 0);
    assert.ok(isGone(pid));
    const [summary] = await sb.sessions();
    assert.equal(summary?.state, "killed");
    const by = await sb.ok(["report", session, "--json"]);
    assert.match(by, /"by":\s*"api"/, "the resume is journaled as the API's");
    await assert.rejects(
      Deno.stat(sb.path("sentry", "run", `${session}.api`)),
      Deno.errors.NotFound,
    );
  });
});

Deno.test("two `sentry run` on one host get their own APIs, and each shows and controls the other's session", async () => {
  await withSandbox(async (sb) => {
    const a = await startServed(sb, [], await busyAgent(sb, "a.py"));
    const b = await startServed(sb, [], await busyAgent(sb, "b.py"));
    assert.notEqual(a.port, b.port);
    const token = (await sb.sentry(["token"])).stdout.trim();
    const listed = await (await fetch(`${a.base}/v1/sessions`, authed(token))).json();
    const ids = listed.sessions.map((s: { id: string }) => s.id);
    assert.ok(ids.includes(a.session) && ids.includes(b.session), JSON.stringify(ids));

    // A's API streams B's events too (through the journal).
    const streamed = await collectStream(
      `${a.base}/v1/events/stream?session=${b.session}`,
      token,
      (events) => events.length >= 2,
    );
    assert.ok(streamed.events.length >= 2);
    assert.ok(streamed.events.every((e) => e.session === b.session));

    // A's API pauses B's agent from outside, and B's own API sees it paused.
    await post(a.base, `/v1/sessions/${b.session}/pause`, token);
    assert.ok(isStopped(b.pid));
    assert.ok(!isStopped(a.pid));
    const seen = await (await fetch(`${b.base}/v1/sessions/${b.session}`, authed(token))).json();
    assert.equal(seen.session.state, "paused");
    await post(b.base, `/v1/sessions/${b.session}/resume`, token);
    await waitFor(() => !isStopped(b.pid), { what: "agent b resumed", timeoutMs: 5000 });

    await Deno.writeTextFile(sb.path("ws", "stop"), "");
    assert.equal(await a.run.exit(), 0, a.run.stderr);
    assert.equal(await b.run.exit(), 0, b.run.stderr);
  });
});

Deno.test("`sentry run --api-port` on a taken port exits 2 before the agent runs; --no-api serves nothing", async () => {
  await withSandbox(async (sb) => {
    const blocker = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    try {
      const port = (blocker.addr as Deno.NetAddr).port;
      const marker = sb.path("ws", "ran");
      const taken = await sb.sentry([
        "run",
        "--api-port",
        String(port),
        "--",
        "sh",
        "-c",
        `touch ${marker}`,
      ]);
      assert.equal(taken.code, 2, taken.stderr);
      assert.match(taken.stderr, new RegExp(`port is in use: choose another with --api-port`));
      assert.equal(taken.stderr.trim().split("\n").at(-1)?.includes("at "), false);
      await assert.rejects(Deno.stat(marker), Deno.errors.NotFound, "the agent never ran");

      const bad = await sb.sentry(["run", "--api-port", "http", "--", "true"]);
      assert.equal(bad.code, 2);
      assert.match(bad.stderr, /Invalid --api-port "http"/);

      const quiet = await sb.sentry(["run", "--no-api", "--", "sh", "-c", "exit 0"]);
      assert.equal(quiet.code, 0, quiet.stderr);
      assert.doesNotMatch(quiet.stderr, /API and dashboard/);
    } finally {
      blocker.close();
    }
  });
});
