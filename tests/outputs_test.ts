/**
 * Alert outputs wired into `sentry run`, end to end: a real agent's denied read reaches a
 * loopback webhook and a loopback OTLP receiver, and what could not be delivered shows up in the
 * session's report.
 * @module
 */
import assert from "node:assert/strict";
import type { AgentEvent } from "../src/events/mod.ts";
import { PYTHON, withSandbox } from "./_helpers.ts";

interface Receiver {
  url: string;
  bodies: unknown[];
  close(): Promise<void>;
}

function receiver(status = 200): Receiver {
  const bodies: unknown[] = [];
  const ac = new AbortController();
  const server = Deno.serve(
    { hostname: "127.0.0.1", port: 0, signal: ac.signal, onListen: () => {} },
    async (request) => {
      bodies.push(await request.json());
      return new Response(status === 200 ? "{}" : "no", { status });
    },
  );
  return {
    url: `http://127.0.0.1:${server.addr.port}`,
    bodies,
    async close() {
      ac.abort();
      await server.finished;
    },
  };
}

Deno.test("`sentry run` sends a denied read to the configured webhook and OTLP receiver", async () => {
  const hook = receiver();
  const otlp = receiver();
  const dead = receiver(400); // refuses every alert: the report must count them
  try {
    await withSandbox(async (sb) => {
      await Deno.mkdir(sb.data, { recursive: true });
      await sb.write(
        "sentry/config.yaml",
        `outputs:
  webhook:
    - url: ${hook.url}/hook
    - name: refusing
      url: ${dead.url}/hook
      max_retries: 0
  otlp:
    endpoint: ${otlp.url}/v1/logs
    flush_interval_ms: 100
`,
      );
      const agent = await sb.write(
        "agent.py",
        `import time\nf = open(${JSON.stringify(sb.sshKey)})\nf.read()\ntime.sleep(0.5)\n`,
      );
      const run = await sb.sentry(["run", "--no-api", "--mode", "alert", "--", PYTHON, agent]);
      assert.equal(run.code, 0, run.stderr);
      const events = await sb.events();
      const denied = events.find((e) => e.kind === "file.read" && e.target === sb.sshKey);
      assert.ok(denied, "the read was journaled");
      assert.equal(denied.response, "alert");

      const sent = hook.bodies.map((b) => (b as { event: AgentEvent | null }).event);
      assert.ok(sent.some((e) => e?.id === denied.id), JSON.stringify(hook.bodies).slice(0, 500));
      const records = otlp.bodies.flatMap((b) =>
        (b as {
          resourceLogs: {
            scopeLogs: {
              logRecords: { attributes: { key: string; value: { stringValue?: string } }[] }[];
            }[];
          }[];
        })
          .resourceLogs.flatMap((r) => r.scopeLogs.flatMap((s) => s.logRecords))
      );
      const ids = records.map((r) =>
        r.attributes.find((a) => a.key === "sentry.event.id")?.value.stringValue
      );
      assert.ok(ids.includes(denied.id), "the OTLP receiver got the denied read");
      assert.equal(ids.length, events.length, "OTLP takes every event by default");

      const report = JSON.parse(await sb.ok(["report", "last", "--json"]));
      const text = JSON.stringify(report);
      assert.match(text, /output\.refusing/, "the refusing webhook is in the report");
      assert.match(text, /output_failed/);
      assert.match(run.stderr, /could not be delivered/);
    });
  } finally {
    await hook.close();
    await otlp.close();
    await dead.close();
  }
});
