/**
 * End-to-end tests of `sentry config path|show|validate`, through the real CLI.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { hasStackTrace, withSandbox } from "./_helpers.ts";

Deno.test("`sentry config` finds, validates and shows the config file in SENTRY_HOME", async () => {
  await withSandbox(async (sb) => {
    const path = join(sb.data, "config.yaml");
    assert.equal((await sb.ok(["config", "path"])).trim(), path);
    assert.match(await sb.ok(["config", "validate"]), /no such file, the defaults apply/);
    await Deno.mkdir(sb.data, { recursive: true });
    await sb.write(
      path,
      `outputs:
  webhook:
    url: https://hooks.example.com/\${HOOK_ID}
    headers: { Authorization: "Bearer \${TOKEN}", X-Api-Key: literal-secret }
  otlp:
    endpoint: http://127.0.0.1:4318
`,
    );
    const env = { HOOK_ID: "abc", TOKEN: "t0ken" };
    assert.equal(
      (await sb.sentry(["config", "validate"], { env })).stdout.trim(),
      `ok  ${path}: valid (sync on, 1 webhook, otlp on)`,
    );
    const shown = JSON.parse(
      await sb.sentry(["config", "show", "--json"], { env }).then((o) => o.stdout),
    );
    // Variables stay as written and literal credentials are hidden.
    assert.equal(shown.outputs.webhook.url, "https://hooks.example.com/${HOOK_ID}");
    assert.deepEqual(shown.outputs.webhook.headers, {
      Authorization: "Bearer ${TOKEN}",
      "X-Api-Key": "<redacted>",
    });
    assert.equal(shown.outputs.otlp.endpoint, "http://127.0.0.1:4318/v1/logs");
    assert.equal(shown.sync.outbox_max_events, 1_000_000);
  });
});

Deno.test("`sentry config validate` exits 2 with one line naming the place of the problem", async () => {
  await withSandbox(async (sb) => {
    const file = await sb.write(
      "bad.yaml",
      "outputs:\n  otlp:\n    endpoint: http://h:4318\n    batchsize: 10\n",
    );
    const out = await sb.sentry(["config", "validate", file]);
    assert.equal(out.code, 2, out.stderr);
    assert.equal(out.stdout, "");
    assert.ok(!hasStackTrace(out.stderr));
    assert.equal(
      out.stderr.trim(),
      `sentry: Invalid config at ${file}:4:5: unknown key "outputs.otlp.batchsize"`,
    );
    const missing = await sb.sentry(["config", "show"], {
      env: { SENTRY_CONFIG: sb.path("nope.yaml") },
    });
    assert.equal(missing.code, 2);
    assert.equal(
      missing.stderr.trim(),
      `sentry: Cannot read config "${sb.path("nope.yaml")}": no such file`,
    );
  });
});
