import assert from "node:assert/strict";
import { saveCredentials } from "./credentials.ts";
import { resolveSyncSettings } from "./settings.ts";

const KEY = "sk_0123456789abcdefghijklmnop";

function withDir(body: (dir: string) => void): void {
  const dir = Deno.makeTempDirSync({ prefix: "sentry_sync_settings_" });
  try {
    body(dir);
  } finally {
    Deno.removeSync(dir, { recursive: true });
  }
}

Deno.test("resolveSyncSettings(): the endpoint is SENTRY_ENDPOINT, then the config, then login's", () => {
  withDir((dir) => {
    saveCredentials(dir, { apiKey: KEY, endpoint: "http://stored.example:8787/" });
    const section = { endpoint: "https://config.example" };
    const env = { SENTRY_ENDPOINT: "http://env.example" };
    const all = resolveSyncSettings({ env, configDir: dir, section });
    assert.deepEqual([all.endpoint, all.endpointSource], ["http://env.example", "env"]);
    assert.equal(all.credentials?.endpoint, "http://env.example");
    const config = resolveSyncSettings({ env: {}, configDir: dir, section });
    assert.deepEqual([config.endpoint, config.endpointSource], [
      "https://config.example",
      "config",
    ]);
    const stored = resolveSyncSettings({ env: {}, configDir: dir });
    assert.deepEqual(
      [stored.endpoint, stored.endpointSource, stored.credentials?.source],
      ["http://stored.example:8787", "credentials", "file"],
    );
  });
});

Deno.test("resolveSyncSettings(): no key means no credentials, the default endpoint and defaults", () => {
  withDir((dir) => {
    const none = resolveSyncSettings({ env: {}, configDir: dir });
    assert.equal(none.credentials, null);
    assert.deepEqual([none.endpointSource, none.enabled], ["default", true]);
    assert.deepEqual([none.outboxMaxEvents, none.batchEvents], [1_000_000, 500]);
    const env = resolveSyncSettings({
      env: { VAULTAK_API_KEY: KEY },
      configDir: dir,
      section: { enabled: false, outbox_max_events: 5000, batch_events: 100 },
    });
    assert.deepEqual(
      [env.credentials?.variable, env.enabled, env.outboxMaxEvents, env.batchEvents],
      ["VAULTAK_API_KEY", false, 5000, 100],
    );
  });
});
