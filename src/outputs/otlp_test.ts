import assert from "node:assert/strict";
import { makeEvent, outputsFrom, startServer, until } from "./_testing.ts";
import {
  type AnyValue,
  type ExportLogsServiceRequest,
  partialSuccess,
  severityOf,
  toAnyValue,
} from "./otlp.ts";
import { createOutputs } from "./outputs.ts";

function otlp(endpoint: string, extra = ""): string {
  return `outputs:\n  otlp:\n    endpoint: ${endpoint}\n    retry_backoff_ms: 5\n${extra}`;
}

/** Every object key in a JSON value, at any depth. */
function keysOf(value: unknown, out: Set<string> = new Set()): Set<string> {
  if (Array.isArray(value)) value.forEach((v) => keysOf(v, out));
  else if (value !== null && typeof value === "object") {
    for (const [k, v] of Object.entries(value)) {
      out.add(k);
      keysOf(v, out);
    }
  }
  return out;
}

/** The attributes of a resource or record as a plain map of key to AnyValue. */
function attrs(list: { key: string; value: AnyValue }[]): Record<string, AnyValue> {
  return Object.fromEntries(list.map((kv) => [kv.key, kv.value]));
}

/** Checks that a value is a well-formed AnyValue: exactly one known field, of the right type. */
function assertAnyValue(value: AnyValue, where: string): void {
  const fields = Object.keys(value);
  assert.ok(fields.length <= 1, `${where}: one field at most, got ${fields}`);
  const [field] = fields;
  const v = (value as Record<string, unknown>)[field ?? ""];
  switch (field) {
    case undefined:
      return;
    case "stringValue":
      return assert.equal(typeof v, "string", where);
    case "boolValue":
      return assert.equal(typeof v, "boolean", where);
    case "intValue":
      return assert.match(v as string, /^-?\d+$/, `${where}: int64 as a decimal string`);
    case "doubleValue":
      return assert.equal(typeof v, "number", where);
    case "arrayValue":
      return (v as { values: AnyValue[] }).values.forEach((x, i) =>
        assertAnyValue(x, `${where}[${i}]`)
      );
    case "kvlistValue":
      return (v as { values: { key: string; value: AnyValue }[] }).values.forEach((kv) => {
        assert.equal(typeof kv.key, "string");
        assertAnyValue(kv.value, `${where}.${kv.key}`);
      });
    default:
      assert.fail(`${where}: unknown AnyValue field "${field}"`);
  }
}

Deno.test("the OTLP exporter POSTs an ExportLogsServiceRequest in OTLP's JSON encoding", async () => {
  const server = startServer(() =>
    new Response("{}", { headers: { "content-type": "application/json" } })
  );
  const outputs = createOutputs(
    outputsFrom(
      otlp(
        server.origin,
        `    headers: { X-Scope-OrgID: "\${TENANT}" }
    service_name: agent-guard
    resource_attributes: { deployment.environment: staging }
`,
      ),
      { TENANT: "team-a" },
    ),
    { host: "build-07", version: "1.2.3" },
  );
  try {
    const events = [
      makeEvent({ verdict: "allow", risk: 0, response: "none", rule: "default", factors: [] }),
      makeEvent({ risk: 35, response: "alert", detail: { bytes: 12, ratio: 0.5, tags: ["a"] } }),
      makeEvent({ risk: 90, response: "kill", pid: null, ppid: null, exe: null, cmdline: [] }),
    ];
    for (const e of events) outputs.publish(e);
    await outputs.close();
    assert.equal(server.received.length, 1);
    const request = server.received[0];
    assert.ok(request !== undefined);
    // A bare collector address gets the logs path.
    assert.equal(request.path, "/v1/logs");
    assert.equal(request.headers.get("content-type"), "application/json");
    assert.equal(request.headers.get("x-scope-orgid"), "team-a");
    const body = request.body as ExportLogsServiceRequest;
    // OTLP/JSON keys are lowerCamelCase, never the proto's snake_case.
    for (const key of keysOf(body)) assert.match(key, /^[a-z][A-Za-z]*$/, `key "${key}"`);
    assert.equal(body.resourceLogs.length, 1);
    const [resourceLogs] = body.resourceLogs;
    assert.ok(resourceLogs !== undefined);
    const resource = attrs(resourceLogs.resource.attributes);
    assert.deepEqual(resource["service.name"], { stringValue: "agent-guard" });
    assert.deepEqual(resource["service.version"], { stringValue: "1.2.3" });
    assert.deepEqual(resource["host.name"], { stringValue: "build-07" });
    assert.deepEqual(resource["deployment.environment"], { stringValue: "staging" });
    const [scopeLogs] = resourceLogs.scopeLogs;
    assert.ok(scopeLogs !== undefined);
    assert.deepEqual(scopeLogs.scope, { name: "sentry", version: "1.2.3" });
    assert.equal(scopeLogs.logRecords.length, 3);
    scopeLogs.logRecords.forEach((record, i) => {
      const event = events[i];
      assert.ok(event !== undefined);
      assert.equal(typeof record.timeUnixNano, "string");
      assert.equal(record.timeUnixNano, `${Date.parse(event.ts)}000000`);
      assert.match(record.observedTimeUnixNano, /^\d{19}$/);
      assert.equal(typeof record.severityNumber, "number");
      assert.ok(!("traceId" in record) && !("spanId" in record));
      assert.equal(typeof record.body.stringValue, "string");
      const a = attrs(record.attributes);
      for (const [key, value] of Object.entries(a)) assertAnyValue(value, key);
      assert.deepEqual(a["sentry.event.id"], { stringValue: event.id });
      assert.deepEqual(a["sentry.event.kind"], { stringValue: event.kind });
      assert.deepEqual(a["sentry.event.target"], { stringValue: event.target });
      assert.deepEqual(a["sentry.event.verdict"], { stringValue: event.verdict });
      assert.deepEqual(a["sentry.event.risk"], { intValue: String(event.risk) });
      assert.deepEqual(a["sentry.event.rule"], { stringValue: event.rule });
      assert.deepEqual(a["sentry.event.response"], { stringValue: event.response });
      assert.deepEqual(a["sentry.session.id"], { stringValue: event.session });
      assert.deepEqual(a["sentry.agent.name"], { stringValue: event.agent });
    });
    const [allow, alert, kill] = scopeLogs.logRecords;
    assert.deepEqual([allow?.severityNumber, allow?.severityText], [9, "INFO"]);
    assert.deepEqual([alert?.severityNumber, alert?.severityText], [13, "WARN"]);
    assert.deepEqual([kill?.severityNumber, kill?.severityText], [17, "ERROR"]);
    assert.match(
      kill?.body.stringValue ?? "",
      /^DENY file\.read ".*" risk 90 .* -> kill by unattributed$/,
    );
    const allowAttrs = attrs(allow?.attributes ?? []);
    assert.deepEqual(allowAttrs["process.pid"], { intValue: "4242" });
    assert.deepEqual(allowAttrs["process.executable.path"], { stringValue: "/usr/bin/cat" });
    assert.deepEqual(allowAttrs["process.command_args"], {
      arrayValue: { values: [{ stringValue: "cat" }, { stringValue: "/home/u/.ssh/id_rsa" }] },
    });
    const killAttrs = attrs(kill?.attributes ?? []);
    assert.ok(!("process.pid" in killAttrs), "no pid attribute for an unattributed event");
    assert.deepEqual(attrs(alert?.attributes ?? [])["sentry.event.detail"], {
      kvlistValue: {
        values: [
          { key: "bytes", value: { intValue: "12" } },
          { key: "ratio", value: { doubleValue: 0.5 } },
          { key: "tags", value: { arrayValue: { values: [{ stringValue: "a" }] } } },
        ],
      },
    });
    assert.deepEqual(outputs.stats()[0]?.sent, 3);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("the OTLP exporter sends full batches at once and a partial one after its interval", async () => {
  const server = startServer();
  const outputs = createOutputs(
    outputsFrom(
      otlp(`${server.origin}/custom/logs`, "    batch_size: 3\n    flush_interval_ms: 200\n"),
    ),
  );
  try {
    const started = performance.now();
    for (let i = 0; i < 7; i++) outputs.publish(makeEvent());
    await until(() => server.received.length === 3, "three requests");
    const sizes = server.received.map((r) =>
      (r.body as ExportLogsServiceRequest).resourceLogs[0]?.scopeLogs[0]?.logRecords.length
    );
    assert.deepEqual(sizes, [3, 3, 1]);
    // A signal-specific URL is used as it is.
    assert.ok(server.received.every((r) => r.path === "/custom/logs"));
    const last = server.received[2];
    assert.ok(last !== undefined && last.at - started >= 150, "the partial batch waited");
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("the OTLP exporter counts a partial success's rejected records and does not retry", async () => {
  const server = startServer(() =>
    Response.json({ partialSuccess: { rejectedLogRecords: "2", errorMessage: "too old" } })
  );
  const warnings: string[] = [];
  const outputs = createOutputs(outputsFrom(otlp(server.origin)), {
    onWarning: (m) => warnings.push(m),
  });
  try {
    for (let i = 0; i < 5; i++) outputs.publish(makeEvent());
    await outputs.close();
    assert.equal(server.received.length, 1);
    const stats = outputs.stats()[0];
    assert.deepEqual([stats?.sent, stats?.rejected, stats?.retries], [3, 2, 0]);
    assert.deepEqual(warnings, [
      'output "otlp": the collector rejected 2 of 5 records: too old',
    ]);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("the OTLP exporter retries 503 with Retry-After, but not 500, as OTLP/HTTP says", async () => {
  const server = startServer((request, i) => {
    const path = new URL(request.url).pathname;
    if (path === "/busy/v1/logs" && i === 0) {
      return new Response("", { status: 503, headers: { "retry-after": "0" } });
    }
    if (path === "/broken/v1/logs") return new Response("bug", { status: 500 });
    return new Response("{}");
  });
  const busy = createOutputs(outputsFrom(otlp(`${server.origin}/busy/v1/logs`)));
  const broken = createOutputs(outputsFrom(otlp(`${server.origin}/broken/v1/logs`)));
  try {
    busy.publish(makeEvent());
    await busy.close();
    assert.deepEqual([busy.stats()[0]?.sent, busy.stats()[0]?.retries], [1, 1]);
    broken.publish(makeEvent());
    await broken.close();
    const stats = broken.stats()[0];
    assert.deepEqual([stats?.sent, stats?.failed, stats?.retries], [0, 1, 0]);
    assert.equal(server.received.filter((r) => r.path === "/broken/v1/logs").length, 1);
  } finally {
    await busy.close();
    await broken.close();
    await server.close();
  }
});

Deno.test("the OTLP exporter exports every event by default, and only those above min_risk if set", async () => {
  const server = startServer();
  const all = createOutputs(outputsFrom(otlp(`${server.origin}/all/v1/logs`)));
  const risky = createOutputs(
    outputsFrom(otlp(`${server.origin}/risky/v1/logs`, "    min_risk: 50\n")),
  );
  try {
    const risks = [0, 10, 49, 50, 99];
    for (const risk of risks) {
      const event = makeEvent({ risk, response: "none", verdict: "allow" });
      all.publish(event);
      risky.publish(event);
    }
    await Promise.all([all.close(), risky.close()]);
    const risksAt = (path: string) =>
      server.received.filter((r) => r.path === path).flatMap((r) =>
        (r.body as ExportLogsServiceRequest).resourceLogs[0]?.scopeLogs[0]?.logRecords.map((l) =>
          Number((attrs(l.attributes)["sentry.event.risk"] as { intValue: string }).intValue)
        ) ?? []
      );
    assert.deepEqual(risksAt("/all/v1/logs"), risks);
    assert.deepEqual(risksAt("/risky/v1/logs"), [50, 99]);
  } finally {
    await all.close();
    await risky.close();
    await server.close();
  }
});

Deno.test("severityOf() maps responses to OTLP severities", () => {
  const cases = [
    ["allow", "none", 9],
    ["deny", "none", 13],
    ["deny", "alert", 13],
    ["deny", "block", 17],
    ["deny", "pause", 17],
    ["deny", "rollback", 17],
    ["deny", "kill", 17],
  ] as const;
  for (const [verdict, response, number] of cases) {
    assert.equal(severityOf(makeEvent({ verdict, response })).number, number, response);
  }
});

Deno.test("toAnyValue() encodes int64 as strings and keeps non-finite numbers readable", () => {
  assert.deepEqual(toAnyValue(2 ** 40), { intValue: "1099511627776" });
  assert.deepEqual(toAnyValue(10n ** 20n), { intValue: "100000000000000000000" });
  assert.deepEqual(toAnyValue(1.5), { doubleValue: 1.5 });
  assert.deepEqual(toAnyValue(Infinity), { stringValue: "Infinity" });
  assert.deepEqual(toAnyValue(null), {});
  assert.deepEqual(toAnyValue({ a: true }), {
    kvlistValue: { values: [{ key: "a", value: { boolValue: true } }] },
  });
});

Deno.test("partialSuccess() reads rejected counts given as strings or numbers", () => {
  assert.deepEqual(partialSuccess(""), { rejected: 0, message: "" });
  assert.deepEqual(partialSuccess("{}"), { rejected: 0, message: "" });
  assert.deepEqual(partialSuccess('{"partialSuccess":{"rejectedLogRecords":7}}'), {
    rejected: 7,
    message: "",
  });
  assert.deepEqual(partialSuccess("not json"), { rejected: 0, message: "" });
});
