/**
 * `sentry login` / `auth` / `logout` end to end: the real CLI against a real collector on
 * loopback.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { hasStackTrace, type Sandbox, withSandbox } from "./_helpers.ts";
import { closedPort, withCollector } from "./_loopback_collector.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const CONFIG = fileURLToPath(new URL("../deno.json", import.meta.url));

function credentialsPath(sb: Sandbox): string {
  return join(sb.data, "credentials.json");
}

function stored(sb: Sandbox): { api_key: string; endpoint: string } | null {
  try {
    return JSON.parse(Deno.readTextFileSync(credentialsPath(sb)));
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) return null;
    throw error;
  }
}

/** Runs `sentry ARGS` with `input` on stdin (the sandbox's helpers give commands no stdin). */
async function sentryWithStdin(sb: Sandbox, args: string[], input: string) {
  const child = new Deno.Command(Deno.execPath(), {
    args: ["run", "-A", "--config", CONFIG, MAIN, ...args],
    cwd: sb.workspace,
    env: sb.env,
    clearEnv: true,
    stdin: "piped",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(20_000),
  }).spawn();
  const writer = child.stdin.getWriter();
  await writer.write(new TextEncoder().encode(input));
  await writer.close();
  const out = await child.output();
  const decode = (b: Uint8Array) => new TextDecoder().decode(b);
  return { code: out.code, stdout: decode(out.stdout), stderr: decode(out.stderr) };
}

Deno.test("`sentry login` checks the key, stores it mode 0600 without printing it, and `logout` removes it", async () => {
  await withCollector(async (c) => {
    await withSandbox(async (sb) => {
      const out = await sb.sentry(["login", "--api-key", c.key, "--endpoint", `${c.endpoint}/`]);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, new RegExp(`logged in to ${c.endpoint} as key "laptop" \\(k_`));
      assert.match(out.stdout, /latency: +\d+ ms/);
      assert.match(out.stdout, /clock: +\d+\.\d s/);
      assert.match(out.stdout, new RegExp(`stored: +${credentialsPath(sb)} \\(mode 0600\\)`));
      assert.ok(!out.stdout.includes(c.key) && !out.stderr.includes(c.key), "the key is not shown");
      assert.match(out.stdout, /sk_\w{0,6}…/);
      assert.equal(Deno.statSync(credentialsPath(sb)).mode! & 0o777, 0o600);
      assert.deepEqual(
        { ...stored(sb), saved_at: undefined },
        { api_key: c.key, endpoint: c.endpoint, saved_at: undefined },
      );

      const logout = await sb.sentry(["logout"]);
      assert.equal(logout.code, 0, logout.stderr);
      assert.match(logout.stdout, /logged out: deleted .*credentials\.json/);
      assert.equal(stored(sb), null);
      const again = await sb.sentry(["logout"]);
      assert.equal(again.code, 0);
      assert.match(again.stdout, /no API key was stored/);
    });
  });
});

Deno.test("`sentry auth` is `login` by the seed product's name, and reads the key from stdin with `-`", async () => {
  await withCollector(async (c) => {
    await withSandbox(async (sb) => {
      const out = await sentryWithStdin(
        sb,
        ["auth", "--api-key", "-", "--endpoint", c.endpoint, "--json"],
        `\n${c.key}\n`,
      );
      assert.equal(out.code, 0, out.stderr);
      const result = JSON.parse(out.stdout);
      assert.equal(result.verified, true);
      assert.equal(result.key_name, "laptop");
      assert.equal(result.endpoint, c.endpoint);
      assert.ok(Number.isInteger(result.latency_ms) && result.latency_ms >= 0);
      assert.ok(!out.stdout.includes(c.key));
      assert.equal(stored(sb)?.api_key, c.key);

      const empty = await sentryWithStdin(sb, ["login", "--api-key", "-"], "\n");
      assert.equal(empty.code, 2);
      assert.match(empty.stderr, /No API key on stdin/);
    });
  });
});

Deno.test("`sentry login` does not store a key the endpoint refuses, and exits 1", async () => {
  await withCollector(async (c) => {
    await withSandbox(async (sb) => {
      const unknown = `sk_${"z".repeat(52)}`;
      const out = await sb.sentry(["login", "--api-key", unknown, "--endpoint", c.endpoint]);
      assert.equal(out.code, 1);
      assert.match(
        out.stderr,
        /refused the API key: Invalid API key: unknown or revoked; the key was not stored/,
      );
      assert.match(out.stderr, /hint: .*sentry server keys add/);
      assert.ok(!out.stderr.includes(unknown));
      assert.ok(!hasStackTrace(out.stderr));
      assert.equal(stored(sb), null);

      // A key that worked once and was revoked is refused too, and the old login is kept.
      assert.equal(
        (await sb.sentry(["login", "--api-key", c.key, "--endpoint", c.endpoint])).code,
        0,
      );
      const second = c.keys.add("second").key;
      c.keys.revoke("second");
      const revoked = await sb.sentry(["login", "--api-key", second, "--endpoint", c.endpoint]);
      assert.equal(revoked.code, 1);
      assert.equal(stored(sb)?.api_key, c.key);
    });
  });
});

Deno.test("`sentry login` against an endpoint that cannot be reached exits 1, suggests --endpoint, and stores nothing", async () => {
  await withSandbox(async (sb) => {
    const endpoint = `http://127.0.0.1:${closedPort()}`;
    const key = `sk_${"a".repeat(52)}`;
    const out = await sb.sentry(["login", "--api-key", key, "--endpoint", endpoint]);
    assert.equal(out.code, 1);
    assert.match(out.stderr, new RegExp(`Cannot reach endpoint "${endpoint}"`));
    assert.match(out.stderr, /hint: .*--endpoint URL.*--no-verify/);
    assert.equal(stored(sb), null);

    const unchecked = await sb.sentry([
      "login",
      "--api-key",
      key,
      "--endpoint",
      endpoint,
      "--no-verify",
    ]);
    assert.equal(unchecked.code, 0, unchecked.stderr);
    assert.match(unchecked.stdout, /without checking it \(--no-verify\)/);
    assert.deepEqual({ ...stored(sb), saved_at: undefined }, {
      api_key: key,
      endpoint,
      saved_at: undefined,
    });
  });
});

Deno.test("`sentry login` rejects a malformed key or endpoint with exit 2, naming the flag", async () => {
  await withSandbox(async (sb) => {
    const short = await sb.sentry([
      "login",
      "--api-key",
      "abc",
      "--endpoint",
      "http://127.0.0.1:1",
    ]);
    assert.equal(short.code, 2);
    assert.match(short.stderr, /^sentry: Invalid --api-key: it is shorter than 20 characters$/m);
    assert.ok(!short.stderr.includes("abc"), "not even a short key is echoed");

    const spaced = await sb.sentry(["login", "--api-key", `${"k".repeat(24)} x`]);
    assert.equal(spaced.code, 2);
    assert.match(spaced.stderr, /Invalid --api-key: it holds a space/);

    const url = await sb.sentry(["login", "--api-key", "k".repeat(24), "--endpoint", "ftp://x"]);
    assert.equal(url.code, 2);
    assert.match(url.stderr, /^sentry: Invalid --endpoint "ftp:\/\/x": use http or https$/m);

    const none = await sb.sentry(["login"]);
    assert.equal(none.code, 2);
    assert.match(none.stderr, /Missing --api-key/);
    assert.match(none.stderr, /SENTRY_API_KEY or VAULTAK_API_KEY/);

    const badEnv = await sb.sentry(["login"], { env: { SENTRY_API_KEY: "short" } });
    assert.equal(badEnv.code, 2);
    assert.match(badEnv.stderr, /Invalid SENTRY_API_KEY: it is shorter than 20 characters/);
    assert.equal(stored(sb), null);
  });
});

Deno.test("`sentry login` uses SENTRY_API_KEY or VAULTAK_API_KEY when no --api-key is given, and SENTRY_ENDPOINT", async () => {
  await withCollector(async (c) => {
    await withSandbox(async (sb) => {
      const vaultak = await sb.sentry(["login", "--endpoint", c.endpoint], {
        env: { VAULTAK_API_KEY: c.key },
      });
      assert.equal(vaultak.code, 0, vaultak.stderr);
      assert.match(vaultak.stdout, /\(from VAULTAK_API_KEY\)/);
      assert.equal(stored(sb)?.api_key, c.key);

      const other = c.keys.add("ci").key;
      const sentry = await sb.sentry(["login"], {
        env: { SENTRY_API_KEY: other, VAULTAK_API_KEY: c.key, SENTRY_ENDPOINT: c.endpoint },
      });
      assert.equal(sentry.code, 0, sentry.stderr);
      assert.match(sentry.stdout, /as key "ci"/);
      assert.match(sentry.stdout, /\(from SENTRY_API_KEY\)/);
      assert.equal(stored(sb)?.api_key, other);

      // A flag key that differs from the environment's is stored, with a warning that the
      // environment still wins.
      const flag = await sb.sentry(["login", "--api-key", c.key, "--endpoint", c.endpoint], {
        env: { SENTRY_API_KEY: other },
      });
      assert.equal(flag.code, 0, flag.stderr);
      assert.match(flag.stderr, /warning: SENTRY_API_KEY is set and wins over the stored key/);

      const logout = await sb.sentry(["logout"], { env: { SENTRY_API_KEY: other } });
      assert.equal(logout.code, 0);
      assert.match(logout.stderr, /warning: SENTRY_API_KEY still provides a key \(sk_\w+…\)/);
      assert.ok(!logout.stderr.includes(other));
    });
  });
});

Deno.test("`sentry login` checks the config file's sync.endpoint, and warns when it overrides --endpoint", async () => {
  await withCollector(async (c) => {
    await withSandbox(async (sb) => {
      await Deno.mkdir(sb.data, { recursive: true, mode: 0o700 });
      await Deno.writeTextFile(join(sb.data, "config.yaml"), `sync:\n  endpoint: ${c.endpoint}\n`);
      const out = await sb.sentry(["login", "--api-key", c.key]);
      assert.equal(out.code, 0, out.stderr);
      assert.match(out.stdout, new RegExp(`logged in to ${c.endpoint} as key "laptop"`));
      assert.equal(stored(sb)?.endpoint, c.endpoint);
      assert.doesNotMatch(out.stderr, /warning/);

      const elsewhere = `http://127.0.0.1:${closedPort()}`;
      const other = await sb.sentry([
        "login",
        "--api-key",
        c.key,
        "--endpoint",
        elsewhere,
        "--no-verify",
      ]);
      assert.equal(other.code, 0, other.stderr);
      assert.match(
        other.stderr,
        new RegExp(
          `warning: sync\\.endpoint in ".*config\\.yaml" wins over the stored endpoint: sync uploads to ${c.endpoint}`,
        ),
      );
    });
  });
});
