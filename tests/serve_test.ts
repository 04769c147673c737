/**
 * `sentry serve` and `sentry token` end to end, over a real socket.
 * @module
 */
import assert from "node:assert/strict";
import { withSandbox } from "./_helpers.ts";

Deno.test("`sentry serve` serves the journal on loopback and demands the token from `sentry token`", async () => {
  await withSandbox(async (sb) => {
    const ran = await sb.sentry(["run", "--", "sh", "-c", "exit 0"]);
    assert.equal(ran.code, 0, ran.stderr);
    const token = (await sb.sentry(["token"])).stdout.trim();
    assert.match(token, /^[A-Za-z0-9_-]{40,}$/);
    assert.equal((await Deno.stat(sb.path("sentry", "api-token"))).mode! & 0o777, 0o600);
    assert.equal((await sb.sentry(["token"])).stdout.trim(), token, "the token is kept");

    const serve = sb.spawn(["serve", "--port", "0"]);
    const url = /serving the API at (http:\/\/127\.0\.0\.1:\d+)/;
    await serve.waitForStderr(url);
    const base = url.exec(serve.stderr)?.[1] ?? "";
    const health = await fetch(`${base}/health`);
    assert.equal(health.status, 200);
    assert.equal((await health.json()).status, "ok");
    const anonymous = await fetch(`${base}/v1/sessions`);
    assert.equal(anonymous.status, 401);
    await anonymous.body?.cancel();
    const sessions = await fetch(`${base}/v1/sessions`, {
      headers: { authorization: `Bearer ${token}` },
    });
    assert.equal(sessions.status, 200);
    assert.equal((await sessions.json()).sessions.length, 1);
    Deno.kill(serve.pid, "SIGINT");
    assert.equal(await serve.exit(), 0, serve.stderr);
  });
});
