import assert from "node:assert/strict";
import { join } from "node:path";
import { configDir, dataDir, ensureDataDir } from "./data_dir.ts";

const HOME = "/home/agent";

Deno.test("dataDir() prefers SENTRY_HOME over XDG_DATA_HOME and HOME", () => {
  const env = { SENTRY_HOME: "/srv/sentry", XDG_DATA_HOME: "/xdg/data", HOME };
  assert.equal(dataDir(env, { os: "linux" }), "/srv/sentry");
});

Deno.test("dataDir() uses $XDG_DATA_HOME/sentry when SENTRY_HOME is unset or empty", () => {
  assert.equal(dataDir({ XDG_DATA_HOME: "/xdg/data", HOME }, { os: "linux" }), "/xdg/data/sentry");
  assert.equal(
    dataDir({ SENTRY_HOME: "", XDG_DATA_HOME: "/xdg/data", HOME }, { os: "darwin" }),
    "/xdg/data/sentry",
  );
});

Deno.test("dataDir() falls back to ~/.local/share/sentry on Linux", () => {
  assert.equal(dataDir({ HOME }, { os: "linux" }), "/home/agent/.local/share/sentry");
});

Deno.test("dataDir() ignores a relative XDG_DATA_HOME, as the XDG spec asks", () => {
  assert.equal(
    dataDir({ XDG_DATA_HOME: "relative/data", HOME }, { os: "linux" }),
    "/home/agent/.local/share/sentry",
  );
});

Deno.test("dataDir() falls back to ~/Library/Application Support/sentry on macOS", () => {
  assert.equal(
    dataDir({ HOME: "/Users/agent" }, { os: "darwin" }),
    "/Users/agent/Library/Application Support/sentry",
  );
});

Deno.test("dataDir() without SENTRY_HOME, XDG_DATA_HOME or HOME throws a TypeError", () => {
  assert.throws(() => dataDir({}, { os: "linux" }), {
    name: "TypeError",
    message: "Cannot locate Sentry's data directory: set SENTRY_HOME or HOME",
  });
});

Deno.test("configDir() prefers SENTRY_HOME, then $XDG_CONFIG_HOME/sentry, then ~/.config/sentry", () => {
  assert.equal(
    configDir({ SENTRY_HOME: "/srv/sentry", XDG_CONFIG_HOME: "/xdg/cfg", HOME }),
    "/srv/sentry",
  );
  assert.equal(configDir({ XDG_CONFIG_HOME: "/xdg/cfg", HOME }), "/xdg/cfg/sentry");
  assert.equal(configDir({ HOME }), "/home/agent/.config/sentry");
  assert.throws(() => configDir({}), { name: "TypeError" });
});

Deno.test("ensureDataDir() creates nested directories with mode 0700", () => {
  const root = Deno.makeTempDirSync({ prefix: "sentry_data_dir_" });
  try {
    const dir = join(root, "a", "b", "sentry");
    assert.equal(ensureDataDir(dir), dir);
    assert.equal(Deno.statSync(dir).mode! & 0o777, 0o700);
    // Idempotent.
    assert.equal(ensureDataDir(dir), dir);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("ensureDataDir() narrows an existing world-readable directory to 0700", () => {
  const root = Deno.makeTempDirSync({ prefix: "sentry_data_dir_" });
  try {
    Deno.chmodSync(root, 0o755);
    ensureDataDir(root);
    assert.equal(Deno.statSync(root).mode! & 0o777, 0o700);
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});

Deno.test("ensureDataDir() reports a path it cannot create", () => {
  const root = Deno.makeTempDirSync({ prefix: "sentry_data_dir_" });
  try {
    const file = join(root, "file");
    Deno.writeTextFileSync(file, "");
    assert.throws(() => ensureDataDir(join(file, "sentry")), (error: unknown) => {
      assert.ok(error instanceof Error);
      assert.match(error.message, /^Cannot create Sentry's data directory ".*\/file\/sentry": /);
      assert.ok(error.cause !== undefined);
      return true;
    });
  } finally {
    Deno.removeSync(root, { recursive: true });
  }
});
