import assert from "node:assert/strict";
import { join } from "node:path";
import { ConfigError } from "./errors.ts";
import { configPath, expandVariables, fieldLine, loadConfig, parseConfig } from "./loader.ts";
import { webhooksOf } from "./schema.ts";

/** Asserts that parsing fails with a ConfigError at a place, naming a field. */
function configError(
  text: string,
  expected: { message: RegExp; line?: number; column?: number; field?: string },
  env: Record<string, string> = {},
): ConfigError {
  let caught: unknown;
  try {
    parseConfig(text, { file: "/etc/sentry/config.yaml", env });
  } catch (error) {
    caught = error;
  }
  assert.ok(caught instanceof ConfigError, `expected a ConfigError, got ${caught}`);
  assert.equal(caught.name, "ConfigError");
  assert.match(caught.message, expected.message);
  assert.ok(!caught.message.includes("\n"), "one line");
  assert.equal(caught.file, "/etc/sentry/config.yaml");
  if (expected.line !== undefined) assert.equal(caught.line, expected.line);
  if (expected.column !== undefined) assert.equal(caught.column, expected.column);
  if (expected.field !== undefined) assert.equal(caught.field, expected.field);
  return caught;
}

Deno.test("configPath() prefers SENTRY_CONFIG, then SENTRY_HOME, then XDG, then ~/.config", () => {
  assert.equal(configPath({ SENTRY_CONFIG: "/x/c.yaml", SENTRY_HOME: "/s" }), "/x/c.yaml");
  assert.equal(configPath({ SENTRY_CONFIG: "", SENTRY_HOME: "/s" }), "/s/config.yaml");
  assert.equal(configPath({ XDG_CONFIG_HOME: "/xdg", HOME: "/h" }), "/xdg/sentry/config.yaml");
  assert.equal(configPath({ HOME: "/h" }), "/h/.config/sentry/config.yaml");
});

Deno.test("loadConfig() gives the defaults when there is no config file", async () => {
  const home = await Deno.makeTempDir();
  try {
    const loaded = await loadConfig({ env: { SENTRY_HOME: home } });
    assert.equal(loaded.path, join(home, "config.yaml"));
    assert.equal(loaded.exists, false);
    assert.deepEqual(loaded.config, {
      sync: { enabled: true, outbox_max_events: 1_000_000, batch_events: 500 },
      outputs: {},
      server: {},
      audit: {
        fail_on: "deny",
        min_risk: 70,
        timeout: "5m",
        targets: [],
        host: { enabled: true, max_store_bytes: 10 * 1024 ** 3, max_sync_backlog: 100_000 },
      },
    });
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("loadConfig() fails on a missing file that SENTRY_CONFIG names", async () => {
  await assert.rejects(
    loadConfig({ env: { SENTRY_CONFIG: "/nonexistent/sentry.yaml" } }),
    (error: unknown) =>
      error instanceof ConfigError &&
      error.message === 'Cannot read config "/nonexistent/sentry.yaml": no such file',
  );
});

Deno.test("loadConfig() reads a full file from SENTRY_HOME, defaults filled", async () => {
  const home = await Deno.makeTempDir();
  try {
    await Deno.writeTextFile(
      join(home, "config.yaml"),
      `# Sentry configuration
sync:
  endpoint: https://collector.example.com:8443/
  enabled: false
  outbox_max_events: 50000
  batch_events: 200
outputs:
  webhook:
    - name: oncall
      url: https://hooks.example.com/T0/B0/\${SLACK_SECRET}
      format: slack
      min_response: pause
      timeout_ms: 2000
      max_retries: 5
      rate_limit: { per_minute: 10, burst: 2 }
    - url: http://127.0.0.1:9000/alerts
      min_risk: 60
      headers:
        Authorization: Bearer \${WEBHOOK_TOKEN}
  otlp:
    endpoint: http://127.0.0.1:4318/v1/logs
    min_risk: 30
    service_name: sentry-prod
    batch_size: 100
    flush_interval_ms: 500
`,
    );
    const { config, exists } = await loadConfig({
      env: { SENTRY_HOME: home, SLACK_SECRET: "xyz", WEBHOOK_TOKEN: "tok" },
    });
    assert.equal(exists, true);
    assert.deepEqual(config.sync, {
      endpoint: "https://collector.example.com:8443",
      enabled: false,
      outbox_max_events: 50_000,
      batch_events: 200,
    });
    const [oncall, plain] = webhooksOf(config.outputs);
    assert.equal(oncall?.name, "oncall");
    assert.equal(oncall?.url, "https://hooks.example.com/T0/B0/xyz");
    assert.equal(oncall?.format, "slack");
    assert.equal(oncall?.min_response, "pause");
    assert.equal(oncall?.min_risk, undefined);
    assert.deepEqual(oncall?.rate_limit, { per_minute: 10, burst: 2 });
    assert.equal(plain?.format, "json");
    assert.equal(plain?.min_risk, 60);
    assert.equal(plain?.min_response, undefined, "a given threshold replaces the default");
    assert.deepEqual(plain?.headers, { Authorization: "Bearer tok" });
    assert.deepEqual([plain?.timeout_ms, plain?.max_retries, plain?.queue_size], [5_000, 3, 1_000]);
    assert.deepEqual(config.outputs.otlp, {
      endpoint: "http://127.0.0.1:4318/v1/logs",
      headers: {},
      min_risk: 30,
      service_name: "sentry-prod",
      resource_attributes: {},
      batch_size: 100,
      flush_interval_ms: 500,
      timeout_ms: 10_000,
      max_retries: 5,
      retry_backoff_ms: 500,
      queue_size: 10_000,
    });
  } finally {
    await Deno.remove(home, { recursive: true });
  }
});

Deno.test("parseConfig() gives a webhook without a threshold the alert threshold", () => {
  const config = parseConfig("outputs:\n  webhook:\n    url: https://h.example/x\n", { env: {} });
  assert.ok(!Array.isArray(config.outputs.webhook));
  assert.equal(config.outputs.webhook?.min_response, "alert");
});

Deno.test("parseConfig() reports an unknown key with its line, column and field path", () => {
  configError(
    `outputs:
  webhook:
    url: https://h.example/x
    max_retry: 3
`,
    {
      message:
        /^Invalid config at \/etc\/sentry\/config\.yaml:4:5: unknown key "outputs\.webhook\.max_retry"$/,
      line: 4,
      column: 5,
      field: "outputs.webhook.max_retry",
    },
  );
  configError("sync:\n  enabled: true\nsinks: {}\n", {
    message: /:3:1: unknown key "sinks"$/,
    field: "sinks",
  });
  configError(
    `outputs:
  webhook:
    - url: https://a.example/
    - url: https://b.example/
      formatt: slack
`,
    {
      message: /:5:7: unknown key "outputs\.webhook\[1\]\.formatt"$/,
      field: "outputs.webhook[1].formatt",
    },
  );
});

Deno.test("parseConfig() rejects bad URLs at their place", () => {
  configError("outputs:\n  webhook:\n    url: not a url\n", {
    message: /:3:10: field "outputs\.webhook\.url": "not a url" is not a URL$/,
    field: "outputs.webhook.url",
  });
  configError("outputs:\n  otlp:\n    endpoint: ftp://collector:4318\n", {
    message:
      /field "outputs\.otlp\.endpoint": "ftp:\/\/collector:4318" is not an http or https URL/,
    line: 3,
  });
  configError("outputs:\n  webhook:\n    url: https://user:pw@h.example/\n", {
    message: /holds credentials: put them in "headers" instead/,
  });
  configError("sync:\n  endpoint: https://c.example/?x=1\n", {
    message: /field "sync\.endpoint": .* has a query or fragment/,
  });
});

Deno.test("parseConfig() names the field of a bad value and what it got", () => {
  configError("sync:\n  batch_events: 900\n", {
    message: /:2:17: field "sync\.batch_events": too big: .*500 \(got 900\)$/,
  });
  configError("outputs:\n  webhook:\n    url: https://h.example/\n    format: teams\n", {
    message: /field "outputs\.webhook\.format": .*"json"\|"slack" \(got "teams"\)/,
    line: 4,
  });
  configError("outputs:\n  webhook:\n    url: https://h.example/\n    min_response: loud\n", {
    message: /field "outputs\.webhook\.min_response"/,
  });
  configError("- a\n- b\n", { message: /the configuration must be a mapping/ });
  configError("sync:\n  enabled: true\n  enabled: false\n", {
    message: /^Invalid YAML at \/etc\/sentry\/config\.yaml:3:3: /,
  });
});

Deno.test("parseConfig() expands ${VARIABLES} in headers and URLs, and fails on unset ones", () => {
  const config = parseConfig(
    `outputs:
  otlp:
    endpoint: \${OTLP_URL}
    headers:
      Authorization: "Basic \${OTLP_AUTH}"
      X-Literal: "$HOME stays"
`,
    { env: { OTLP_URL: "http://otel.internal:4318", OTLP_AUTH: "dTpw" } },
  );
  assert.equal(config.outputs.otlp?.endpoint, "http://otel.internal:4318/v1/logs");
  assert.deepEqual(config.outputs.otlp?.headers, {
    Authorization: "Basic dTpw",
    "X-Literal": "$HOME stays",
  });
  configError(
    `outputs:
  webhook:
    url: https://h.example/
    headers:
      Authorization: Bearer \${WEBHOOK_TOKEN}
`,
    {
      message:
        /:5:22: field "outputs\.webhook\.headers\.Authorization": environment variable "WEBHOOK_TOKEN" is not set$/,
      field: "outputs.webhook.headers.Authorization",
    },
  );
});

Deno.test("parseConfig() never prints an expanded secret in a URL error", () => {
  const error = configError(
    "outputs:\n  webhook:\n    url: ${HOOK}\n",
    { message: /"\$\{HOOK\}" is not a URL/ },
    { HOOK: "s3cret-not-a-url" },
  );
  assert.ok(!error.message.includes("s3cret"));
});

Deno.test("parseConfig() with expandEnv false keeps ${VARIABLES} as written", () => {
  const config = parseConfig(
    'outputs:\n  webhook:\n    url: ${HOOK}\n    headers: { A: "${T}" }\n',
    { env: {}, expandEnv: false },
  );
  const [hook] = webhooksOf(config.outputs);
  assert.equal(hook?.url, "${HOOK}");
  assert.deepEqual(hook?.headers, { A: "${T}" });
});

Deno.test("expandVariables() replaces only the ${NAME} form", () => {
  assert.equal(expandVariables("a ${X} $X ${X}", { X: "1" }), "a 1 $X 1");
  assert.throws(() => expandVariables("${X}", { X: "" }), RangeError);
});

Deno.test("parseConfig() rejects two webhooks with the same name", () => {
  configError(
    "outputs:\n  webhook:\n    - { name: a, url: https://a.example/ }\n    - { name: a, url: https://b.example/ }\n",
    { message: /duplicate webhook name "a"/, field: "outputs.webhook[1].name", line: 4 },
  );
});

Deno.test("fieldLine() names the line that sets a field, else its nearest parent, else the file", () => {
  const text = "# collector\nserver:\n  store: sqlite\n  retain: 30d\n";
  assert.equal(fieldLine(text, ["server", "retain"], "c.yaml"), "c.yaml:4");
  assert.equal(fieldLine(text, ["server", "nothing"], "c.yaml"), "c.yaml:3");
  assert.equal(fieldLine("", ["server", "retain"], "c.yaml"), "c.yaml");
});
