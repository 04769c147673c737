/**
 * `sentry server --store postgres://...` end to end: the real CLI, two collector processes on one
 * throwaway PostgreSQL database, keys made and revoked with `sentry server keys --store`, and
 * gzip batches posted over loopback to either server.
 * @module
 */
import assert from "node:assert/strict";
import { postgresSkip, startPostgres } from "../src/collector/_pg_testing.ts";
import { gzip, makeBatch, makeEvent, makeSession, ulid } from "../src/collector/_testing.ts";
import { hasStackTrace, withSandbox } from "./_helpers.ts";

/** A batch body of `n` events of one session, as a host uploads it. */
function batch(hostId: string, session: string, n: number): string {
  return JSON.stringify(makeBatch({
    hostId,
    sessions: [makeSession(session)],
    events: Array.from({ length: n }, (_, i) => makeEvent(session, i)),
  }));
}

async function post(base: string, key: string, body: string): Promise<Response> {
  return await fetch(`${base}/v1/sync/batches`, {
    method: "POST",
    headers: {
      authorization: `Bearer ${key}`,
      "content-type": "application/json",
      "content-encoding": "gzip",
    },
    body: await gzip(body),
  });
}

Deno.test({
  name:
    "two `sentry server --store postgres://` processes share keys, revocations, bindings and events",
  ignore: postgresSkip() !== null,
  async fn() {
    const pg = await startPostgres();
    try {
      await withSandbox(async (sb) => {
        // Trust authentication takes any password: this one must never be printed.
        const store = ["--store", pg.url.replace("postgres@", "postgres:s3cret-pw@")];
        const key = (await sb.ok(["server", "keys", "add", "build-7", ...store])).trim();
        assert.match(key, /^sk_[a-z2-7]{52}$/);
        const other = (await sb.ok(["server", "keys", "add", "intruder", ...store])).trim();
        const dup = await sb.sentry(["server", "keys", "add", "build-7", ...store]);
        assert.equal(dup.code, 2);
        assert.match(dup.stderr, /Invalid key name "build-7": an active key has it/);

        const url = /collector listening at (http:\/\/127\.0\.0\.1:\d+)/;
        const one = sb.spawn(["server", "--port", "0", ...store, "--retain", "30d"]);
        const two = sb.spawn(["server", "--port", "0", ...store]);
        try {
          await one.waitForStderr(url);
          await two.waitForStderr(url);
          const a = url.exec(one.stderr)?.[1] ?? "";
          const b = url.exec(two.stderr)?.[1] ?? "";
          assert.ok(!one.stderr.includes("no active upload key"), one.stderr);

          const host = ulid();
          const session = ulid();
          const payload = batch(host, session, 50);
          const first = await post(a, key, payload);
          assert.deepEqual(await first.json(), { accepted: 50, duplicates: 0, sessions: 1 });
          // The retry lands on the other server: stored once.
          const retry = await post(b, key, payload);
          assert.deepEqual(await retry.json(), { accepted: 0, duplicates: 50, sessions: 1 });
          // The host is bound to its key in the database, whichever server is asked.
          const stolen = await post(b, other, batch(host, session, 1));
          assert.equal(stolen.status, 403);
          assert.equal((await stolen.json()).field, "host.id");

          const token = (await sb.ok(["server", "token"])).trim();
          const auth = { headers: { authorization: `Bearer ${token}` } };
          const hosts = await (await fetch(`${b}/v1/hosts`, auth)).json();
          assert.equal(hosts.hosts.length, 1);
          assert.equal(hosts.hosts[0].batches, 2);
          const page = await (await fetch(`${a}/v1/sessions/${session}/events?limit=10`, auth))
            .json();
          assert.equal(page.events.length, 10);

          const revoked = await sb.sentry(["server", "keys", "revoke", "build-7", ...store]);
          assert.equal(revoked.code, 0, revoked.stderr);
          for (const base of [a, b]) {
            const refused = await post(base, key, batch(host, session, 1));
            assert.equal(refused.status, 401);
            await refused.body?.cancel();
          }
          const listed = (await sb.ok(["server", "keys", "list", "--json", ...store]))
            .trim().split("\n").map((l) => JSON.parse(l));
          assert.equal(listed.length, 2);
        } finally {
          Deno.kill(one.pid, "SIGTERM");
          Deno.kill(two.pid, "SIGTERM");
          assert.equal(await one.exit(), 0, one.stderr);
          assert.equal(await two.exit(), 0, two.stderr);
        }
        assert.ok(!hasStackTrace(one.stderr + two.stderr), one.stderr + two.stderr);
        assert.match(one.stderr, /store "postgres:\/\/postgres:\*\*\*@127\.0\.0\.1:\d+\/sentry"/);
        assert.ok(!one.stderr.includes("s3cret-pw"), "the store's password is never printed");
      });
    } finally {
      await pg.close();
    }
  },
});

Deno.test("`sentry server --retain` without PostgreSQL, or a bad --store, is a usage error", async () => {
  await withSandbox(async (sb) => {
    const retain = await sb.sentry(["server", "--port", "0", "--retain", "30d"]);
    assert.equal(retain.code, 2);
    assert.match(retain.stderr, /Invalid --retain "30d": retention drops PostgreSQL partitions/);
    const bad = await sb.sentry(["server", "--port", "0", "--retain", "soon", "--store", "x"]);
    assert.equal(bad.code, 2);
    assert.match(bad.stderr, /^sentry: Invalid --retain "soon": use a whole number of hours/);
    // From the config file, the error names the file, the line and the field.
    const config = await sb.write("config.yaml", "# collector\nserver:\n  retain: 30d\n");
    const fromFile = await sb.sentry(["server", "--port", "0"], {
      env: { SENTRY_CONFIG: config },
    });
    assert.equal(fromFile.code, 2);
    assert.match(
      fromFile.stderr,
      new RegExp(`Invalid server\\.retain "30d" in ${config}:3: retention drops PostgreSQL`),
    );
    // A socket URL, or no host: a usage error that never repeats the password.
    const socket = await sb.sentry([
      "server",
      "keys",
      "list",
      "--store",
      "postgres://sentry:hunter2@/sentry?host=/run/postgresql",
    ]);
    assert.equal(socket.code, 2, socket.stderr);
    assert.match(socket.stderr, /give a host name or address \(Unix sockets are not supported\)/);
    assert.ok(!socket.stderr.includes("hunter2"), socket.stderr);
    const store = await sb.sentry(["server", "keys", "list", "--store", "mysql://db/x"]);
    assert.equal(store.code, 2);
    assert.match(
      store.stderr,
      /Invalid --store "mysql:\/\/db\/x": give "sqlite" or a postgres:\/\/ URL/,
    );
    assert.ok(!hasStackTrace(retain.stderr + bad.stderr + store.stderr + fromFile.stderr));
  });
});
