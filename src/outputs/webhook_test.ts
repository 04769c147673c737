import assert from "node:assert/strict";
import { hold, makeEvent, outputsFrom, type Received, startServer, until } from "./_testing.ts";
import { createOutputs } from "./outputs.ts";
import type { SlackMessage, WebhookJsonMessage } from "./webhook.ts";

/** A webhook section aimed at a test server, with fast retries. */
function hook(url: string, extra = ""): string {
  return `outputs:\n  webhook:\n    url: ${url}\n    retry_backoff_ms: 5\n${extra}`;
}

function bodies(received: Received[]): WebhookJsonMessage[] {
  return received.map((r) => r.body as WebhookJsonMessage);
}

Deno.test("a json webhook gets alerts at or above its threshold, in Sentry's envelope", async () => {
  const server = startServer();
  const warnings: string[] = [];
  const outputs = createOutputs(
    outputsFrom(
      `outputs:
  webhook:
    - url: ${server.origin}/alerts
      headers: { Authorization: "Bearer \${HOOK_TOKEN}" }
    - name: high-risk
      url: ${server.origin}/high
      min_risk: 60
`,
      { HOOK_TOKEN: "t0ken" },
    ),
    { host: "test-host", version: "9.9.9", onWarning: (m) => warnings.push(m) },
  );
  try {
    const quiet = makeEvent({ verdict: "allow", risk: 5, response: "none", rule: "default" });
    const alert = makeEvent({ risk: 40, response: "alert" });
    const pause = makeEvent({ risk: 85, response: "pause" });
    for (const e of [quiet, alert, pause]) outputs.publish(e);
    await outputs.close();
    const byPath = (p: string) => server.received.filter((r) => r.path === p);
    // The default threshold is "alert": the allowed, unanswered event is not sent.
    assert.deepEqual(bodies(byPath("/alerts")).map((b) => b.event?.id), [alert.id, pause.id]);
    assert.deepEqual(bodies(byPath("/high")).map((b) => b.event?.id), [pause.id]);
    const first = byPath("/alerts")[0];
    assert.ok(first !== undefined);
    assert.equal(first.method, "POST");
    assert.equal(first.headers.get("content-type"), "application/json");
    assert.equal(first.headers.get("authorization"), "Bearer t0ken");
    assert.deepEqual(first.body, {
      sentry: { version: "9.9.9", host: "test-host" },
      event: alert,
      suppressed: 0,
    });
    const stats = outputs.stats();
    assert.deepEqual(stats.map((s) => [s.name, s.queued, s.sent, s.failed, s.dropped]), [
      ["webhook[0]", 2, 2, 0, 0],
      ["high-risk", 1, 1, 0, 0],
    ]);
    assert.deepEqual(warnings, []);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("a webhook retries after 500s and then delivers once", async () => {
  const server = startServer((_, i) => new Response("busy", { status: i < 2 ? 500 : 200 }));
  const outputs = createOutputs(outputsFrom(hook(server.origin)), { host: "h" });
  try {
    const event = makeEvent();
    outputs.publish(event);
    await until(() => outputs.stats()[0]?.sent === 1, "the delivery");
    assert.equal(server.received.length, 3);
    assert.ok(bodies(server.received).every((b) => b.event?.id === event.id));
    const [stats] = outputs.stats();
    assert.equal(stats?.retries, 2);
    assert.equal(stats?.failed, 0);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("a webhook never retries a 4xx other than 429, and says why it failed", async () => {
  const server = startServer(() => new Response("no such hook", { status: 404 }));
  const warnings: string[] = [];
  const outputs = createOutputs(outputsFrom(hook(server.origin)), {
    onWarning: (m) => warnings.push(m),
  });
  try {
    outputs.publish(makeEvent());
    outputs.publish(makeEvent());
    await until(() => outputs.stats()[0]?.failed === 2, "two failures");
    assert.equal(server.received.length, 2);
    assert.equal(outputs.stats()[0]?.retries, 0);
    // One warning, not one per event.
    assert.deepEqual(warnings, [
      'output "webhook": delivery failed: HTTP 404: no such hook',
    ]);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("a webhook honours Retry-After on 429 rather than its own back-off", async () => {
  const server = startServer((_, i) =>
    i === 0
      ? new Response("slow down", { status: 429, headers: { "retry-after": "1" } })
      : new Response("ok")
  );
  const outputs = createOutputs(outputsFrom(hook(server.origin)));
  try {
    outputs.publish(makeEvent());
    await until(() => outputs.stats()[0]?.sent === 1, "the delivery after Retry-After");
    const [first, second] = server.received;
    assert.ok(first !== undefined && second !== undefined);
    // The back-off alone would have waited 5 ms or less.
    const gap = second.at - first.at;
    assert.ok(gap >= 950 && gap < 3_000, `waited ${gap} ms`);
    assert.equal(outputs.stats()[0]?.retries, 1);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("a webhook gives up on a slow server at its timeout, retries, then counts a failure", async () => {
  const server = startServer(async (_, _i, closing) => {
    await hold(closing, 3_000);
    return new Response("late");
  });
  const warnings: string[] = [];
  const outputs = createOutputs(
    outputsFrom(hook(server.origin, "    timeout_ms: 150\n    max_retries: 1\n")),
    { onWarning: (m) => warnings.push(m) },
  );
  try {
    const started = performance.now();
    outputs.publish(makeEvent());
    await until(() => outputs.stats()[0]?.failed === 1, "the failure");
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 1_500, `took ${elapsed} ms`);
    assert.equal(server.received.length, 2);
    assert.equal(outputs.stats()[0]?.retries, 1);
    assert.match(warnings[0] ?? "", /timed out after 150 ms/);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("a webhook retries a refused connection a bounded number of times", async () => {
  const gone = startServer();
  const origin = gone.origin;
  await gone.close();
  const outputs = createOutputs(outputsFrom(hook(origin, "    max_retries: 2\n")));
  try {
    outputs.publish(makeEvent());
    await until(() => outputs.stats()[0]?.failed === 1, "the failure");
    assert.equal(outputs.stats()[0]?.retries, 2);
  } finally {
    await outputs.close();
  }
});

Deno.test("the rate limit suppresses alerts over it and the next message counts them", async () => {
  const server = startServer();
  const outputs = createOutputs(
    outputsFrom(hook(server.origin, "    rate_limit: { per_minute: 60, burst: 2 }\n")),
  );
  try {
    const events = Array.from({ length: 5 }, () => makeEvent());
    for (const e of events) outputs.publish(e);
    await until(() => outputs.stats()[0]?.sent === 2, "two deliveries");
    const got = bodies(server.received);
    assert.deepEqual(got.map((b) => b.event?.id), [events[0]?.id, events[1]?.id]);
    // Three were suppressed before the first message left, so it carries their count.
    assert.deepEqual(got.map((b) => b.suppressed), [3, 0]);
    const [stats] = outputs.stats();
    assert.equal(stats?.rateLimited, 3);
    assert.equal(stats?.dropped, 0);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("suppressed alerts with no later alert get a summary once a token is back", async () => {
  const server = startServer();
  const outputs = createOutputs(
    outputsFrom(hook(server.origin, "    rate_limit: { per_minute: 600, burst: 1 }\n")),
  );
  try {
    outputs.publish(makeEvent());
    await until(() => server.received.length === 1, "the first message");
    // The token refills in 100 ms: these two come too soon.
    outputs.publish(makeEvent());
    outputs.publish(makeEvent());
    await until(() => server.received.length === 2, "the summary");
    const summary = server.received[1]?.body as WebhookJsonMessage;
    assert.equal(summary.event, null);
    assert.equal(summary.suppressed, 2);
    assert.ok((server.received[1]?.at ?? 0) - (server.received[0]?.at ?? 0) >= 50);
    assert.equal(outputs.stats()[0]?.rateLimited, 2);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("close() sends the count of suppressed alerts that nothing carried yet", async () => {
  const server = startServer();
  const outputs = createOutputs(
    outputsFrom(
      hook(server.origin, "    format: slack\n    rate_limit: { per_minute: 1, burst: 1 }\n"),
    ),
  );
  try {
    outputs.publish(makeEvent());
    await until(() => server.received.length === 1, "the first message");
    for (let i = 0; i < 4; i++) outputs.publish(makeEvent());
    await outputs.close();
    assert.equal(server.received.length, 2);
    const summary = server.received[1]?.body as SlackMessage;
    assert.match(summary.text, /4 more alerts suppressed by the rate limit/);
    assert.equal(summary.blocks[0]?.type, "section");
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("the slack format is a Slack message: fallback text and blocks with every fact", async () => {
  const server = startServer();
  const outputs = createOutputs(
    outputsFrom(hook(server.origin, "    format: slack\n    min_risk: 0\n")),
    { host: "build-07", version: "1.2.3" },
  );
  try {
    const event = makeEvent({
      target: "/tmp/<evil>&`x`.txt",
      kind: "file.write",
      response: "rollback",
      risk: 90,
      rule: "detect_export",
      agent: "coder",
    });
    outputs.publish(event);
    await outputs.close();
    const message = server.received[0]?.body as SlackMessage;
    assert.equal(typeof message.text, "string");
    assert.match(message.text, /^Sentry on build-07: DENY file\.write /);
    assert.ok(!message.text.includes("<evil>"), "mrkdwn control characters are escaped");
    assert.deepEqual(message.blocks.map((b) => b.type), ["header", "section", "context"]);
    const [header, section, context] = message.blocks;
    assert.ok(header?.type === "header" && section?.type === "section");
    assert.equal(header.text.type, "plain_text");
    assert.ok(header.text.text.length <= 150);
    assert.match(header.text.text, /rollback \(risk 90\)/);
    assert.equal(section.text.text, "*file.write* `/tmp/&lt;evil&gt;&amp;'x'.txt`");
    const fields = Object.fromEntries(
      (section.fields ?? []).map((f) => {
        const [label, ...value] = f.text.split("\n");
        return [label, value.join("\n")];
      }),
    );
    assert.deepEqual(fields, {
      "*Verdict*": "deny",
      "*Risk*": "90",
      "*Rule*": "`detect_export`",
      "*Response*": "rollback",
      "*Agent*": "coder",
      "*Session*": `\`${event.session}\``,
      "*Process*": "pid 4242 (cat)",
      "*Host*": "build-07",
    });
    assert.ok(context?.type === "context");
    assert.match(context.elements[0]?.text ?? "", new RegExp(event.id));
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("a full queue drops events and counts them, without blocking publish", async () => {
  let release = () => {};
  const gate = new Promise<void>((r) => release = r);
  const server = startServer(async () => {
    await gate;
    return new Response("ok");
  });
  const outputs = createOutputs(
    outputsFrom(hook(server.origin, "    queue_size: 2\n    rate_limit: { burst: 1000 }\n")),
  );
  try {
    const started = performance.now();
    for (let i = 0; i < 10; i++) outputs.publish(makeEvent());
    assert.ok(performance.now() - started < 50, "publish never waits");
    let stats = outputs.stats()[0];
    assert.deepEqual([stats?.queued, stats?.dropped, stats?.pending], [2, 8, 2]);
    release();
    await outputs.close();
    stats = outputs.stats()[0];
    assert.deepEqual([stats?.sent, stats?.dropped, stats?.pending], [2, 8, 0]);
    assert.equal(server.received.length, 2);
  } finally {
    release();
    await outputs.close();
    await server.close();
  }
});

Deno.test("close() flushes the queue, and at its deadline counts the rest", async () => {
  const server = startServer(async (_, i, closing) => {
    if (i >= 3) await hold(closing, 10_000);
    return new Response("ok");
  });
  const outputs = createOutputs(
    outputsFrom(hook(server.origin, "    rate_limit: { burst: 100 }\n")),
  );
  try {
    for (let i = 0; i < 6; i++) outputs.publish(makeEvent());
    const started = performance.now();
    await outputs.close({ timeoutMs: 300 });
    const elapsed = performance.now() - started;
    assert.ok(elapsed < 2_000, `close took ${elapsed} ms`);
    const stats = outputs.stats()[0];
    // Three delivered, the fourth cut in flight, two never attempted.
    assert.deepEqual([stats?.sent, stats?.failed, stats?.dropped, stats?.pending], [3, 1, 2, 0]);
    // Published after close: counted, not queued.
    outputs.publish(makeEvent());
    assert.equal(outputs.stats()[0]?.dropped, 3);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("createOutputs() with no outputs configured is inactive and costs nothing", async () => {
  const outputs = createOutputs(outputsFrom(""));
  assert.equal(outputs.active, false);
  outputs.publish(makeEvent());
  assert.deepEqual(outputs.stats(), []);
  await outputs.close();
});
