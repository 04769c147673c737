import assert from "node:assert/strict";
import { makeEvent, outputsFrom, startServer } from "./_testing.ts";
import { createOutputs } from "./outputs.ts";

Deno.test("an event that cannot be encoded fails alone and the output keeps working", async () => {
  const server = startServer();
  const warnings: string[] = [];
  const outputs = createOutputs(outputsFrom(`outputs:\n  webhook:\n    url: ${server.origin}\n`), {
    onWarning: (m) => warnings.push(m),
  });
  try {
    // JSON cannot hold a BigInt: a sensor bug must not stop the alerts that follow.
    outputs.publish(makeEvent({ detail: { size: 1n } }));
    const good = makeEvent();
    outputs.publish(good);
    await outputs.close();
    const stats = outputs.stats()[0];
    assert.deepEqual([stats?.sent, stats?.failed], [1, 1]);
    assert.equal((server.received[0]?.body as { event: { id: string } }).event.id, good.id);
    assert.match(warnings[0] ?? "", /^output "webhook": cannot deliver: .*BigInt/);
  } finally {
    await outputs.close();
    await server.close();
  }
});

Deno.test("one dead output does not hold up another", async () => {
  const server = startServer();
  const gone = startServer();
  const deadOrigin = gone.origin;
  await gone.close();
  const outputs = createOutputs(
    outputsFrom(`outputs:
  webhook:
    - url: ${deadOrigin}/dead
      max_retries: 20
      retry_backoff_ms: 1000
    - url: ${server.origin}/live
`),
  );
  try {
    for (let i = 0; i < 3; i++) outputs.publish(makeEvent());
    await outputs.close({ timeoutMs: 500 });
    const [dead, live] = outputs.stats();
    assert.equal(live?.sent, 3);
    assert.equal(dead?.sent, 0);
    assert.equal((dead?.failed ?? 0) + (dead?.dropped ?? 0), 3);
  } finally {
    await outputs.close();
    await server.close();
  }
});
