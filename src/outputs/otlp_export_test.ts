/**
 * The OTLP exporter against a loopback receiver that checks every payload against the OTLP JSON
 * encoding, with faults injected: throttling with `Retry-After`, gateway errors, statuses the
 * specification forbids retrying, slow answers, refused connections and a full queue.
 *
 * @module
 */
import assert from "node:assert/strict";
import { parseConfig } from "../config/mod.ts";
import { otlpLogsProblems, recordsOf } from "./_otlp_check.ts";
import { type Answer, hold, makeEvent, outputsFrom, startServer, until } from "./_testing.ts";
import { passesOtlpFilter, toExportLogsRequest } from "./otlp.ts";
import { createOutputs } from "./outputs.ts";

function otlp(endpoint: string, extra = ""): string {
  return `outputs:\n  otlp:\n    endpoint: ${endpoint}\n    retry_backoff_ms: 20\n${extra}`;
}

/** Ids of the records in the requests the receiver answered with a 2xx. */
function delivered(
  server: ReturnType<typeof startServer>,
  statuses: number[],
): string[] {
  return server.received.flatMap((r, i) =>
    (statuses[i] ?? 0) >= 200 && (statuses[i] ?? 0) < 300
      ? recordsOf(r.body).map((x) => String(x.attributes["sentry.event.id"]))
      : []
  );
}

/**
 * Wraps an answer: checks each payload first (400 when invalid), and records each status.
 * `bodies` gives the body the server recorded for request `index`.
 */
function strict(
  answer: Answer,
  statuses: number[],
  problems: string[],
  bodies: (index: number) => unknown,
): Answer {
  return async (request, index, closing) => {
    const found = otlpLogsProblems(bodies(index));
    if (found.length > 0) {
      problems.push(...found);
      statuses[index] = 400;
      return new Response("invalid", { status: 400 });
    }
    const response = await answer(request, index, closing);
    statuses[index] = response.status;
    return response;
  };
}

Deno.test("otlpLogsProblems() accepts Sentry's requests and names what breaks the JSON encoding", () => {
  const good = toExportLogsRequest([
    makeEvent({ detail: { n: 1, ratio: 0.5, list: [true, null], nested: { a: "b" } } }),
    makeEvent({ pid: null, ppid: null, exe: null, cmdline: [] }),
  ], { serviceName: "sentry", host: "h", version: "1.0.0", hostId: "01J" });
  assert.deepEqual(otlpLogsProblems(good), []);
  assert.deepEqual(otlpLogsProblems(JSON.parse(JSON.stringify(good))), []);

  const record = {
    timeUnixNano: "1700000000000000000",
    severityNumber: 9,
    body: { stringValue: "x" },
    attributes: [{ key: "a", value: { intValue: "1" } }],
  };
  const wrap = (r: unknown) => ({
    resourceLogs: [{ resource: { attributes: [] }, scopeLogs: [{ logRecords: [r] }] }],
  });
  assert.deepEqual(otlpLogsProblems(wrap(record)), []);
  const cases: [unknown, RegExp][] = [
    [wrap({ ...record, timeUnixNano: 1700000000000000000 }), /timeUnixNano: must be a uint64/],
    [wrap({ ...record, time_unix_nano: "1" }), /unknown field "time_unix_nano"/],
    [
      wrap({ ...record, severityNumber: "SEVERITY_NUMBER_INFO" }),
      /severityNumber: must be an enum/,
    ],
    [wrap({ ...record, severityNumber: 25 }), /severityNumber/],
    [wrap({ ...record, traceId: "AAECAwQFBgcICQoLDA0ODw==" }), /traceId: must be hex/],
    [wrap({ ...record, traceId: "0".repeat(32) }), /traceId: an all-zero id/],
    [wrap({ ...record, spanId: "0102030405060708aa" }), /spanId: must be hex \(16/],
    [wrap({ ...record, body: { stringValue: "a", intValue: "1" } }), /AnyValue is a oneof/],
    [
      wrap({ ...record, attributes: [{ key: "a", value: { intValue: 1 } }] }),
      /intValue: must be an int64/,
    ],
    [
      wrap({ ...record, attributes: [{ key: "a", value: { int_value: "1" } }] }),
      /unknown AnyValue field/,
    ],
    [
      wrap({ ...record, attributes: [{ key: "a", value: {} }, { key: "a", value: {} }] }),
      /duplicate key "a"/,
    ],
    [wrap({ ...record, attributes: [{ key: "", value: {} }] }), /must be a non-empty string/],
    [{ resource_logs: [] }, /unknown field "resource_logs"/],
    [{ resourceLogs: {} }, /resourceLogs: must be an array/],
  ];
  for (const [body, pattern] of cases) {
    const problems = otlpLogsProblems(body);
    assert.ok(problems.some((p) => pattern.test(p)), `${pattern}: ${problems.join("; ")}`);
  }
  // A valid trace id passes, in either case.
  assert.deepEqual(
    otlpLogsProblems(wrap({ ...record, traceId: "5B8EFFF798038103D269B633813FC60C" })),
    [],
  );
});

Deno.test("throttling and gateway errors are retried until delivered: no event lost", async () => {
  const statuses: number[] = [];
  const problems: string[] = [];
  const retryDate = () => new Date(Date.now() + 1_000).toUTCString();
  const script: (() => Response)[] = [
    () => new Response("", { status: 429, headers: { "retry-after": "1" } }),
    () => new Response("", { status: 503 }),
    () => new Response("", { status: 502 }),
    () => new Response("", { status: 504, headers: { "retry-after": retryDate() } }),
  ];
  const server: ReturnType<typeof startServer> = startServer(
    strict(
      async (_request, i, closing) => {
        const fault = script[i];
        if (fault !== undefined) return fault();
        // Slow, but within the attempt's time limit.
        if (i === script.length) await hold(closing, 300);
        return Response.json({});
      },
      statuses,
      problems,
      (i) => server.received[i]?.body,
    ),
  );
  const outputs = createOutputs(
    outputsFrom(otlp(server.origin, "    batch_size: 10\n    flush_interval_ms: 20\n")),
  );
  try {
    const ids: string[] = [];
    for (let i = 0; i < 45; i++) {
      const event = makeEvent({ risk: i % 100, response: i % 2 === 0 ? "none" : "alert" });
      ids.push(event.id);
      outputs.publish(event);
    }
    await until(() => (outputs.stats()[0]?.sent ?? 0) === 45, "every event delivered", 15_000);
    await outputs.close();
    assert.deepEqual(problems, []);
    assert.deepEqual(statuses.slice(0, 4), [429, 503, 502, 504]);
    // Each retried batch went out again whole, and every event arrived exactly once.
    assert.deepEqual(delivered(server, statuses).sort(), [...ids].sort());
    const stats = outputs.stats()[0];
    assert.deepEqual(
      [stats?.sent, stats?.failed, stats?.dropped, stats?.retries],
      [45, 0, 0, 4],
    );
    // Retry-After: 1 (seconds) was waited out before the second attempt.
    const [first, second] = server.received;
    assert.ok(first !== undefined && second !== undefined);
    assert.ok(second.at - first.at >= 950, `waited ${second.at - first.at} ms after 429`);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("statuses the OTLP specification forbids retrying fail at once; 429 and 502-504 are retried", async () => {
  const server = startServer((request) => {
    const status = Number(new URL(request.url).pathname.split("/")[1]);
    return new Response("no", { status });
  });
  const forbidden = [400, 401, 403, 404, 405, 408, 413, 415, 500, 501, 505];
  const retryable = [429, 502, 503, 504];
  const all = [...forbidden, ...retryable].map((status) => ({
    status,
    outputs: createOutputs(
      outputsFrom(otlp(`${server.origin}/${status}/v1/logs`, "    max_retries: 2\n")),
    ),
  }));
  try {
    for (const { outputs } of all) outputs.publish(makeEvent());
    await Promise.all(all.map(({ outputs }) => outputs.close({ timeoutMs: 10_000 })));
    for (const { status, outputs } of all) {
      const attempts = server.received.filter((r) => r.path === `/${status}/v1/logs`).length;
      const stats = outputs.stats()[0];
      const expected = retryable.includes(status) ? 3 : 1;
      assert.equal(attempts, expected, `HTTP ${status}: attempts`);
      assert.deepEqual(
        [stats?.sent, stats?.failed, stats?.retries],
        [0, 1, expected - 1],
        `HTTP ${status}: counters`,
      );
    }
  } finally {
    await Promise.all(all.map(({ outputs }) => outputs.close()));
    await server.close();
  }
});

Deno.test("a refused connection and a timed-out answer are retried with back-off: no event lost", async () => {
  // A port with nothing behind it: take one, then free it.
  const probe = Deno.listen({ hostname: "127.0.0.1", port: 0 });
  const port = (probe.addr as Deno.NetAddr).port;
  probe.close();
  const statuses: number[] = [];
  const problems: string[] = [];
  const outputs = createOutputs(
    outputsFrom(
      otlp(
        `http://127.0.0.1:${port}`,
        "    max_retries: 10\n    timeout_ms: 300\n    flush_interval_ms: 10\n",
      ),
    ),
  );
  let server: ReturnType<typeof startServer> | null = null;
  try {
    const ids = Array.from({ length: 7 }, () => makeEvent());
    for (const e of ids) outputs.publish(e);
    await until(() => (outputs.stats()[0]?.retries ?? 0) >= 2, "two refused attempts");
    assert.equal(outputs.stats()[0]?.sent, 0);
    // The receiver comes up on that port; its first answer is slower than the time limit.
    const ac = new AbortController();
    const received: unknown[] = [];
    let n = 0;
    const s = Deno.serve(
      { hostname: "127.0.0.1", port, signal: ac.signal, onListen: () => {} },
      async (request) => {
        const body = await request.json();
        const found = otlpLogsProblems(body);
        problems.push(...found);
        if (n++ === 0) {
          await new Promise((r) => setTimeout(r, 600));
          statuses.push(0);
          return Response.json({});
        }
        statuses.push(200);
        received.push(body);
        return Response.json({});
      },
    );
    server = {
      origin: "",
      received: [],
      close: async () => {
        ac.abort();
        await s.finished;
      },
    };
    await until(() => (outputs.stats()[0]?.sent ?? 0) === 7, "delivery after the outage", 15_000);
    await outputs.close();
    assert.deepEqual(problems, []);
    const got = received.flatMap((b) => recordsOf(b).map((r) => r.attributes["sentry.event.id"]));
    assert.deepEqual(got, ids.map((e) => e.id));
    const stats = outputs.stats()[0];
    assert.deepEqual([stats?.failed, stats?.dropped], [0, 0]);
    assert.ok((stats?.retries ?? 0) >= 3, "refused twice, timed out once");
  } finally {
    await outputs.close();
    await server?.close();
  }
});

Deno.test("a full queue drops exactly the overflow, counts it, and warns once", async () => {
  let release: () => void = () => {};
  const released = new Promise<void>((r) => release = r);
  const server = startServer(async (_request, i) => {
    if (i === 0) await released;
    return Response.json({});
  });
  const warnings: string[] = [];
  const outputs = createOutputs(
    outputsFrom(
      otlp(server.origin, "    batch_size: 1\n    queue_size: 5\n    flush_interval_ms: 1\n"),
    ),
    { onWarning: (m) => warnings.push(m) },
  );
  try {
    outputs.publish(makeEvent());
    // The first event is in flight, held by the receiver: the queue is empty again.
    await until(() => server.received.length === 1, "the first request");
    for (let i = 0; i < 12; i++) outputs.publish(makeEvent());
    const before = outputs.stats()[0];
    assert.deepEqual([before?.queued, before?.pending, before?.dropped], [6, 5, 7]);
    release();
    await outputs.close();
    const stats = outputs.stats()[0];
    assert.deepEqual([stats?.sent, stats?.dropped, stats?.failed, stats?.pending], [6, 7, 0, 0]);
    assert.equal(server.received.length, 6);
    assert.equal(warnings.filter((w) => w.includes("queue full")).length, 1);
  } finally {
    release();
    await outputs.close();
    await server.close();
  }
});

Deno.test("a partial success counts its rejected records once and is not retried", async () => {
  const server = startServer(() =>
    Response.json({ partialSuccess: { rejectedLogRecords: "3", errorMessage: "too big" } })
  );
  const outputs = createOutputs(outputsFrom(otlp(server.origin, "    batch_size: 10\n")));
  try {
    for (let i = 0; i < 10; i++) outputs.publish(makeEvent());
    await outputs.close();
    const stats = outputs.stats()[0];
    assert.equal(server.received.length, 1);
    assert.deepEqual([stats?.sent, stats?.rejected, stats?.retries], [7, 3, 0]);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("the OTLP filters select by kind or family, verdict, risk and response", () => {
  const config = parseConfig(
    otlp(
      "http://127.0.0.1:1",
      "    kinds: [file.*, net.connect]\n    verdicts: [deny]\n    responses: [alert, kill]\n    min_risk: 20\n",
    ),
    { file: "c.yaml" },
  ).outputs.otlp;
  assert.ok(config !== undefined);
  const base = { kind: "file.write", verdict: "deny", risk: 50, response: "alert" } as const;
  assert.equal(passesOtlpFilter(makeEvent(base), config), true);
  assert.equal(passesOtlpFilter(makeEvent({ ...base, kind: "net.connect" }), config), true);
  assert.equal(passesOtlpFilter(makeEvent({ ...base, kind: "proc.exec" }), config), false);
  assert.equal(passesOtlpFilter(makeEvent({ ...base, verdict: "allow" }), config), false);
  assert.equal(passesOtlpFilter(makeEvent({ ...base, response: "pause" }), config), false);
  assert.equal(passesOtlpFilter(makeEvent({ ...base, risk: 19 }), config), false);
  assert.equal(passesOtlpFilter(makeEvent({ ...base, response: "kill" }), config), true);
  // No filter: everything.
  assert.equal(
    passesOtlpFilter(makeEvent({ verdict: "allow", risk: 0, response: "none" }), {}),
    true,
  );

  for (
    const [yaml, pattern] of [
      [
        "    kinds: [file.raed]\n",
        /outputs\.otlp\.kinds\[0\].*"file\.read" or "file\.\*" \(got "file\.raed"\)/,
      ],
      ["    kinds: [bogus.*]\n", /outputs\.otlp\.kinds\[0\]/],
      ["    verdicts: [maybe]\n", /outputs\.otlp\.verdicts\[0\]/],
      ["    responses: [stop]\n", /outputs\.otlp\.responses\[0\]/],
      ["    kinds: []\n", /outputs\.otlp\.kinds/],
    ] as const
  ) {
    assert.throws(
      () => parseConfig(otlp("http://127.0.0.1:1", yaml), { file: "c.yaml" }),
      (e: Error) => pattern.test(e.message) && /c\.yaml:\d+:\d+/.test(e.message),
      yaml,
    );
  }
});
