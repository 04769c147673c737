import assert from "node:assert/strict";
import { join } from "node:path";
import {
  apiKeyProblem,
  CREDENTIALS_FILE,
  DEFAULT_ENDPOINT,
  loadCredentials,
  normalizeEndpoint,
  removeCredentials,
  saveCredentials,
} from "./credentials.ts";
import { HOST_ID_FILE, loadOrCreateHostId } from "./host_id.ts";

const KEY = "sk_AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA";
const OTHER = "sk_BBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBBB";

async function withDir(fn: (dir: string) => Promise<void> | void): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sentry-cred-" });
  try {
    await fn(dir);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("`apiKeyProblem()` accepts 20 to 200 printable characters and says what is wrong", () => {
  assert.equal(apiKeyProblem(KEY), null);
  assert.equal(apiKeyProblem("x".repeat(20)), null);
  assert.equal(apiKeyProblem("x".repeat(200)), null);
  assert.equal(apiKeyProblem("x".repeat(19)), "it is shorter than 20 characters");
  assert.equal(apiKeyProblem("x".repeat(201)), "it is longer than 200 characters");
  assert.match(apiKeyProblem(`${KEY} tail`) ?? "", /space/);
  assert.match(apiKeyProblem(`${KEY}\u00e9`) ?? "", /non-printable/);
});

Deno.test("`normalizeEndpoint()` drops trailing slashes and keeps a base path", () => {
  assert.equal(normalizeEndpoint("http://127.0.0.1:8787/"), "http://127.0.0.1:8787");
  assert.equal(normalizeEndpoint("https://x.example/sentry//"), "https://x.example/sentry");
  assert.equal(normalizeEndpoint("HTTPS://X.Example"), "https://x.example");
  assert.throws(() => normalizeEndpoint("collector:8787"), /use http or https/);
  assert.throws(() => normalizeEndpoint("not a url"), /Invalid endpoint "not a url": not a URL/);
  assert.throws(() => normalizeEndpoint("ftp://x.example"), /use http or https/);
  assert.throws(() => normalizeEndpoint("https://u:p@x.example"), /no credentials/);
  assert.throws(() => normalizeEndpoint("https://x.example/?a=1"), /query or fragment/);
});

Deno.test("`loadCredentials()` returns null when neither the environment nor a file has a key", async () => {
  await withDir((dir) => {
    assert.equal(loadCredentials({ env: {}, configDir: dir }), null);
    assert.equal(loadCredentials({ env: { SENTRY_API_KEY: "  " }, configDir: dir }), null);
  });
});

Deno.test("`saveCredentials()` writes mode 0600 in a 0700 directory and `loadCredentials()` reads it back", async () => {
  await withDir((root) => {
    const dir = join(root, "config", "sentry");
    const path = saveCredentials(dir, {
      apiKey: KEY,
      endpoint: "http://127.0.0.1:8787/",
      now: new Date("2026-01-02T03:04:05.000Z"),
    });
    assert.equal(path, join(dir, CREDENTIALS_FILE));
    assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
    assert.equal(Deno.statSync(dir).mode! & 0o777, 0o700);
    assert.deepEqual(JSON.parse(Deno.readTextFileSync(path)), {
      api_key: KEY,
      endpoint: "http://127.0.0.1:8787",
      saved_at: "2026-01-02T03:04:05.000Z",
    });
    assert.deepEqual(loadCredentials({ env: {}, configDir: dir }), {
      apiKey: KEY,
      endpoint: "http://127.0.0.1:8787",
      source: "file",
      path,
    });
    assert.deepEqual([...Deno.readDirSync(dir)].map((e) => e.name), [CREDENTIALS_FILE]);
  });
});

Deno.test("`saveCredentials()` narrows a stored file that others could read", async () => {
  await withDir((dir) => {
    const path = join(dir, CREDENTIALS_FILE);
    Deno.writeTextFileSync(path, "{}", { mode: 0o644 });
    Deno.chmodSync(path, 0o644);
    saveCredentials(dir, { apiKey: KEY, endpoint: DEFAULT_ENDPOINT });
    assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
  });
});

Deno.test("an environment key beats the stored one, SENTRY_API_KEY before VAULTAK_API_KEY", async () => {
  await withDir((dir) => {
    saveCredentials(dir, { apiKey: KEY, endpoint: "http://127.0.0.1:1" });
    const both = loadCredentials({
      env: { SENTRY_API_KEY: ` ${OTHER} `, VAULTAK_API_KEY: "vk_ignored_ignored_ignored" },
      configDir: dir,
    });
    assert.deepEqual(both, {
      apiKey: OTHER,
      endpoint: "http://127.0.0.1:1",
      source: "env",
      variable: "SENTRY_API_KEY",
    });
    const seed = loadCredentials({ env: { VAULTAK_API_KEY: OTHER }, configDir: dir });
    assert.equal(seed?.variable, "VAULTAK_API_KEY");
    assert.equal(seed?.apiKey, OTHER);
    // An empty variable counts as unset.
    const empty = loadCredentials({ env: { SENTRY_API_KEY: "" }, configDir: dir });
    assert.equal(empty?.source, "file");
  });
});

Deno.test("SENTRY_ENDPOINT beats the stored endpoint, which beats the default", async () => {
  await withDir((dir) => {
    const env = { SENTRY_API_KEY: KEY };
    assert.equal(loadCredentials({ env, configDir: dir })?.endpoint, DEFAULT_ENDPOINT);
    saveCredentials(dir, { apiKey: KEY, endpoint: "http://127.0.0.1:2/" });
    assert.equal(loadCredentials({ env, configDir: dir })?.endpoint, "http://127.0.0.1:2");
    const overridden = loadCredentials({
      env: { ...env, SENTRY_ENDPOINT: "https://collector.example/base/" },
      configDir: dir,
    });
    assert.equal(overridden?.endpoint, "https://collector.example/base");
    assert.throws(
      () => loadCredentials({ env: { ...env, SENTRY_ENDPOINT: "nope" }, configDir: dir }),
      /Invalid endpoint "nope"/,
    );
  });
});

Deno.test("a malformed credentials file is an error naming the file and the field", async () => {
  await withDir((dir) => {
    const path = join(dir, CREDENTIALS_FILE);
    Deno.writeTextFileSync(path, "{not json");
    assert.throws(
      () => loadCredentials({ env: {}, configDir: dir }),
      (e: Error) =>
        e.message === `Cannot read credentials "${path}": not JSON; run "sentry login" again`,
    );
    Deno.writeTextFileSync(path, JSON.stringify({ api_key: 42, endpoint: "http://x.example" }));
    assert.throws(
      () => loadCredentials({ env: {}, configDir: dir }),
      (e: Error) =>
        e.message.startsWith(`Cannot read credentials "${path}": field "api_key": `) &&
        e.message.endsWith(`; run "sentry login" again`),
    );
    Deno.writeTextFileSync(
      path,
      JSON.stringify({ api_key: KEY, endpoint: "http://x.example", colour: "red" }),
    );
    assert.throws(() => loadCredentials({ env: {}, configDir: dir }), /colour/);
    // The file is read even when an environment key wins, so that a broken file is never hidden.
    assert.throws(
      () => loadCredentials({ env: { SENTRY_API_KEY: KEY }, configDir: dir }),
      /Cannot read credentials/,
    );
  });
});

Deno.test("`removeCredentials()` says whether there was a file to remove", async () => {
  await withDir((dir) => {
    assert.equal(removeCredentials(dir), false);
    saveCredentials(dir, { apiKey: KEY, endpoint: DEFAULT_ENDPOINT });
    assert.equal(removeCredentials(dir), true);
    assert.equal(loadCredentials({ env: {}, configDir: dir }), null);
    assert.equal(removeCredentials(dir), false);
  });
});

Deno.test("`loadOrCreateHostId()` makes a ULID once, mode 0600, and keeps it", async () => {
  await withDir((root) => {
    const dir = join(root, "data");
    const id = loadOrCreateHostId(dir);
    assert.match(id, /^[0-9A-HJKMNP-TV-Z]{26}$/);
    const path = join(dir, HOST_ID_FILE);
    assert.equal(Deno.statSync(path).mode! & 0o777, 0o600);
    assert.equal(loadOrCreateHostId(dir), id);
    assert.equal(Deno.readTextFileSync(path), `${id}\n`);
  });
});
