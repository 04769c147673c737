/**
 * OTLP export of every event, end to end: from a host (`sentry run` of a real python3 agent) and
 * from the collector (batches as they are stored), to a loopback receiver that checks each
 * payload against the OTLP JSON encoding.
 * @module
 */
import assert from "node:assert/strict";
import { startCollectorExport } from "../src/cli/_collector_export.ts";
import {
  batchRequest,
  makeBatch,
  makeEvent,
  makeSession,
  openCollector,
  ulid,
} from "../src/collector/_testing.ts";
import { parseConfig } from "../src/config/mod.ts";
import { otlpLogsProblems, recordsOf } from "../src/outputs/_otlp_check.ts";
import { PYTHON, withSandbox } from "./_helpers.ts";

interface Receiver {
  url: string;
  bodies: unknown[];
  problems: string[];
  close(): Promise<void>;
}

/** A loopback OTLP receiver: a payload that breaks the JSON encoding gets 400 and is noted. */
function receiver(): Receiver {
  const bodies: unknown[] = [];
  const problems: string[] = [];
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    async (request) => {
      const body = await request.json().catch(() => null);
      const found = otlpLogsProblems(body);
      if (new URL(request.url).pathname !== "/v1/logs") found.push(`path ${request.url}`);
      if (request.headers.get("content-type") !== "application/json") found.push("content-type");
      if (found.length > 0) {
        problems.push(...found);
        return new Response("invalid", { status: 400 });
      }
      bodies.push(body);
      return Response.json({});
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    bodies,
    problems,
    async close() {
      ac.abort();
      await server.finished;
    },
  };
}

Deno.test("`sentry run` exports the agent's file events as OTLP logs, filtered by kind", async () => {
  const otlp = receiver();
  try {
    await withSandbox(async (sb) => {
      await Deno.mkdir(sb.data, { recursive: true });
      await sb.write(
        "sentry/config.yaml",
        `outputs:
  otlp:
    endpoint: ${otlp.url}
    kinds: [file.*]
    batch_size: 4
    flush_interval_ms: 50
`,
      );
      const agent = await sb.write(
        "agent.py",
        `import os, time
for i in range(3):
    with open(os.path.join(${JSON.stringify(sb.workspace)}, f"out{i}.txt"), "w") as f:
        f.write("x" * (i + 1))
for i in range(3):
    with open(os.path.join(${JSON.stringify(sb.workspace)}, f"out{i}.txt")) as f:
        f.read()
time.sleep(0.5)
`,
      );
      const run = await sb.sentry(["run", "--no-api", "--mode", "monitor", "--", PYTHON, agent]);
      assert.equal(run.code, 0, run.stderr);
      const events = await sb.events();
      const files = events.filter((e) => e.kind.startsWith("file."));
      for (const i of [0, 1, 2]) {
        const target = `${sb.workspace}/out${i}.txt`;
        assert.ok(
          files.some((e) => e.target === target && e.kind !== "file.read"),
          `the write of ${target} was journaled`,
        );
        assert.ok(
          files.some((e) => e.target === target && e.kind === "file.read"),
          `the read of ${target} was journaled`,
        );
      }
      assert.ok(events.some((e) => !e.kind.startsWith("file.")), "other kinds were journaled");

      assert.deepEqual(otlp.problems, []);
      const records = otlp.bodies.flatMap(recordsOf);
      // Exactly the journaled file events, each once, and nothing else.
      assert.deepEqual(
        records.map((r) => r.attributes["sentry.event.id"]).sort(),
        files.map((e) => e.id).sort(),
      );
      assert.ok(
        records.every((r) => String(r.attributes["sentry.event.kind"]).startsWith("file.")),
      );
      const byId = new Map(records.map((r) => [r.attributes["sentry.event.id"], r]));
      for (const e of files) {
        const r = byId.get(e.id);
        assert.equal(r?.attributes["sentry.event.target"], e.target);
        assert.equal(r?.record["timeUnixNano"], `${Date.parse(e.ts)}000000`);
        assert.equal(r?.resource["service.name"], "sentry");
      }
      assert.ok(otlp.bodies.length >= 2, "batches of at most 4 records");
    });
  } finally {
    await otlp.close();
  }
});

Deno.test("the collector exports each stored batch under its host, once, and reports its counters", async () => {
  const otlp = receiver();
  const lines: string[] = [];
  const config = parseConfig(
    `outputs:\n  otlp:\n    endpoint: ${otlp.url}/v1/logs\n    flush_interval_ms: 20\n    verdicts: [allow]\n`,
    { file: "config.yaml" },
  ).outputs.otlp;
  const exporter = startCollectorExport(config, { report: (m) => lines.push(m) });
  assert.ok(exporter !== null);
  const c = await openCollector({ onIngested: exporter.onIngested });
  try {
    const key = (await c.store.addKey("fleet")).key;
    const hostA = ulid();
    const hostB = ulid();
    const sessionA = ulid();
    const sessionB = ulid();
    const eventsA = Array.from({ length: 6 }, (_, i) => makeEvent(sessionA, i));
    const denied = {
      ...makeEvent(sessionA, 99),
      verdict: "deny" as const,
      response: "alert" as const,
    };
    const eventsB = Array.from({ length: 3 }, (_, i) => makeEvent(sessionB, i));
    const batchA = makeBatch({
      hostId: hostA,
      hostName: "laptop-a",
      sessions: [makeSession(sessionA, "laptop-a")],
      events: [...eventsA, denied],
    });
    const post = async (body: unknown) => {
      const response = await c.app.request("/v1/sync/batches", await batchRequest(body, { key }));
      assert.equal(response.status, 200, await response.text());
    };
    await post(batchA);
    // The host resends the same batch (its answer was lost): stored once, exported once.
    await post(batchA);
    await post(makeBatch({
      hostId: hostB,
      hostName: "laptop-b",
      sessions: [makeSession(sessionB, "laptop-b")],
      events: eventsB,
    }));
    await exporter.close(5_000);
    assert.deepEqual(otlp.problems, []);
    const records = otlp.bodies.flatMap(recordsOf);
    const ids = (host: string) =>
      records.filter((r) => r.resource["host.name"] === host).map((r) =>
        r.attributes["sentry.event.id"]
      );
    // The denied event is filtered out by `verdicts: [allow]`.
    assert.deepEqual(ids("laptop-a"), eventsA.map((e) => e.id));
    assert.deepEqual(ids("laptop-b"), eventsB.map((e) => e.id));
    assert.ok(
      records.every((r) =>
        r.resource["host.id"] === (r.resource["host.name"] === "laptop-a" ? hostA : hostB)
      ),
    );
    const stats = exporter.stats()[0];
    assert.deepEqual([stats?.sent, stats?.dropped, stats?.failed], [9, 0, 0]);
    assert.match(lines.at(-1) ?? "", /^otlp export: 9 sent, 0 dropped, 0 failed, 0 rejected/);
  } finally {
    await exporter.close();
    await c.close();
    await otlp.close();
  }
});

Deno.test("the collector's export reports events it could not deliver as they grow", async () => {
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const lines: string[] = [];
  const config = parseConfig(
    `outputs:\n  otlp:\n    endpoint: http://127.0.0.1:${port}\n    max_retries: 0\n    flush_interval_ms: 1\n    queue_size: 2\n    batch_size: 1\n`,
    { file: "config.yaml" },
  ).outputs.otlp;
  const exporter = startCollectorExport(config, {
    report: (m) => lines.push(m),
    reportEveryMs: 50,
  });
  assert.ok(exporter !== null);
  try {
    const session = ulid();
    exporter.onIngested({
      hostId: ulid(),
      hostName: "h",
      events: Array.from({ length: 10 }, (_, i) => makeEvent(session, i)),
      accepted: 10,
      duplicates: 0,
    });
    await new Promise((r) => setTimeout(r, 300));
    assert.ok(
      lines.some((l) => /events not delivered so far: 0 sent, \d+ dropped, \d+ failed/.test(l)),
      lines.join("\n"),
    );
    await exporter.close(1_000);
    const stats = exporter.stats()[0];
    // Every event is accounted for: a refused connection fails it, a full queue drops it.
    assert.equal((stats?.failed ?? 0) + (stats?.dropped ?? 0), 10);
    assert.ok((stats?.dropped ?? 0) >= 7, `dropped ${stats?.dropped}`);
  } finally {
    await exporter.close();
  }
});
