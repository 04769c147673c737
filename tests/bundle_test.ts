/**
 * End-to-end tests of offline bundles: `sentry export` on a host with a real agent's journal,
 * `sentry import` into a separate collector data directory, and the rejection of tampered and
 * truncated bundles with nothing stored.
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { openPostgresStore, redactUrl } from "../src/collector/mod.ts";
import { postgresSkip, startPostgres } from "../src/collector/_pg_testing.ts";
import type { AgentEvent } from "../src/events/mod.ts";
import { hasStackTrace, PYTHON, type Sandbox, withSandbox } from "./_helpers.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const CONFIG = fileURLToPath(new URL("../deno.json", import.meta.url));

/** Runs a small agent that writes, renames and deletes files, and returns its session id. */
async function runAgent(sb: Sandbox, name: string): Promise<string> {
  const agent = await sb.write(
    `${name}.py`,
    `
import os, time
for i in range(3):
    with open("${name}-%d.txt" % i, "w") as f:
        f.write("x" * 100)
    time.sleep(0.15)
os.rename("${name}-0.txt", "${name}-moved.txt")
os.remove("${name}-1.txt")
time.sleep(0.3)
`,
  );
  const run = await sb.sentry(
    ["run", "--no-api", "--no-rollback", "--name", name, "--", PYTHON, agent],
    { timeoutMs: 30_000 },
  );
  assert.equal(run.code, 0, run.stderr);
  const session = /as session (\w+)/.exec(run.stderr)?.[1];
  assert.ok(session, run.stderr);
  return session;
}

function parseLines<T>(text: string): T[] {
  return text.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l));
}

/** Every event of the journal under `home` (a `SENTRY_HOME`), oldest first. */
async function journalEvents(sb: Sandbox, home = sb.data): Promise<AgentEvent[]> {
  const out = await sb.sentry(["events", "--json", "--limit", "1000000"], {
    env: { SENTRY_HOME: home },
  });
  assert.equal(out.code, 0, out.stderr);
  return parseLines<AgentEvent>(out.stdout);
}

function ids(events: readonly AgentEvent[]): string[] {
  return events.map((e) => e.id).sort();
}

async function gunzip(path: string): Promise<string[]> {
  const file = await Deno.open(path);
  const text = await new Response(file.readable.pipeThrough(new DecompressionStream("gzip")))
    .text();
  return text.split("\n").slice(0, -1);
}

async function gzipTo(path: string, lines: readonly string[]): Promise<void> {
  const body = new Blob([lines.join("\n") + "\n"]).stream();
  const bytes = await new Response(body.pipeThrough(new CompressionStream("gzip"))).arrayBuffer();
  await Deno.writeFile(path, new Uint8Array(bytes));
}

function exists(path: string): boolean {
  try {
    Deno.statSync(path);
    return true;
  } catch {
    return false;
  }
}

Deno.test("a bundle exported from a real run imports into a collector with exactly its events, once", async () => {
  await withSandbox(async (sb) => {
    const first = await runAgent(sb, "alpha");
    const second = await runAgent(sb, "beta");
    const local = await journalEvents(sb);
    assert.ok(local.some((e) => e.session === first) && local.some((e) => e.session === second));

    const bundle = sb.path("all.jsonl.gz");
    const exported = await sb.sentry(["export", "--since", "1h", "-o", bundle]);
    assert.equal(exported.code, 0, exported.stderr);
    assert.match(exported.stderr, new RegExp(`exported ${local.length} events of 2 sessions`));
    const head = /chain head ([0-9a-f]{64})/.exec(exported.stderr)?.[1];
    assert.ok(head, exported.stderr);
    assert.equal(Deno.statSync(bundle).mode! & 0o777, 0o600);
    assert.deepEqual(
      Deno.readDirSync(sb.root).filter((e) => e.name.endsWith(".tmp")).toArray(),
      [],
      "no temporary file left",
    );

    // Import into a separate collector data directory.
    const collector = sb.path("collector");
    const imported = await sb.sentry(["import", bundle, "--data", collector, "--json"]);
    assert.equal(imported.code, 0, imported.stderr);
    const result = JSON.parse(imported.stdout);
    assert.equal(result.accepted, local.length);
    assert.equal(result.duplicates, 0);
    assert.equal(result.stored_sessions, 2);
    assert.equal(result.head, head, "the importer prints the head the exporter printed");
    const hostId = (await Deno.readTextFile(join(sb.data, "host-id"))).trim();
    assert.equal(result.key, `bundle:${hostId}`);
    const stored = await journalEvents(sb, collector);
    assert.deepEqual(ids(stored), ids(local));
    assert.deepEqual(
      stored.find((e) => e.id === local[3]?.id),
      local[3],
      "events arrive unchanged",
    );

    // A second import stores nothing new.
    const again = await sb.sentry(["import", bundle, "--data", collector]);
    assert.equal(again.code, 0, again.stderr);
    assert.match(again.stdout, new RegExp(`0 events accepted, ${local.length} duplicates`));
    assert.equal((await journalEvents(sb, collector)).length, local.length);

    // The default target is the collector directory inside SENTRY_HOME, as for `sentry server`.
    const other = sb.path("other-home");
    const byDefault = await sb.sentry(["import", bundle], { env: { SENTRY_HOME: other } });
    assert.equal(byDefault.code, 0, byDefault.stderr);
    assert.deepEqual(ids(await journalEvents(sb, join(other, "collector"))), ids(local));

    // Written to stdout, the same bundle (but for its creation time).
    const piped = sb.path("piped.jsonl.gz");
    const viaStdout = await sb.spawnRaw("sh", [
      "-c",
      `"$0" run -A --config "$1" "$2" export -o - > "$3"`,
      Deno.execPath(),
      CONFIG,
      MAIN,
      piped,
    ]).exit();
    assert.equal(viaStdout, 0, sb.stderr());
    const [pipedLines, fileLines] = [await gunzip(piped), await gunzip(bundle)];
    assert.deepEqual(pipedLines.slice(1).map((l) => JSON.parse(l).event?.id), [
      ...fileLines.slice(1).map((l) => JSON.parse(l).event?.id),
    ]);
  });
});

Deno.test("a tampered or truncated bundle is rejected with the line at fault, and nothing is stored", async () => {
  await withSandbox(async (sb) => {
    await runAgent(sb, "gamma");
    const bundle = sb.path("b.jsonl.gz");
    assert.equal((await sb.sentry(["export", "-o", bundle])).code, 0);
    const lines = await gunzip(bundle);
    const collector = sb.path("collector");

    // One event's verdict quietly changed, as someone hiding a violation would.
    const at = lines.findIndex((l) => l.includes('"type":"event"'));
    const edited = JSON.parse(lines[at] ?? "");
    edited.event.verdict = edited.event.verdict === "allow" ? "deny" : "allow";
    const tampered = [...lines];
    tampered[at] = JSON.stringify(edited);
    await gzipTo(sb.path("tampered.jsonl.gz"), tampered);
    const rejected = await sb.sentry(["import", sb.path("tampered.jsonl.gz"), "--data", collector]);
    assert.equal(rejected.code, 2, rejected.stderr);
    const line = at + 2; // 1-based, and the break shows at the next line
    assert.match(
      rejected.stderr,
      new RegExp(
        `^sentry: Rejected bundle ".*": the hash chain breaks at line ${line}: line ${
          line - 1
        } or line ${line} was changed.*; nothing was imported\nhint: `,
      ),
    );
    assert.ok(!hasStackTrace(rejected.stderr));
    assert.ok(!exists(collector), "nothing is created for a rejected bundle");

    // Cut off: the last lines lost, or the gzip data cut in the middle.
    await gzipTo(sb.path("short.jsonl.gz"), lines.slice(0, -3));
    const short = await sb.sentry(["import", sb.path("short.jsonl.gz"), "--data", collector]);
    assert.equal(short.code, 2, short.stderr);
    assert.match(short.stderr, new RegExp(`ends at line ${lines.length - 3} without its trailer`));
    const bytes = await Deno.readFile(bundle);
    await Deno.writeFile(sb.path("cut.jsonl.gz"), bytes.subarray(0, bytes.length >> 1));
    const cut = await sb.sentry(["import", sb.path("cut.jsonl.gz"), "--data", collector]);
    assert.equal(cut.code, 2, cut.stderr);
    assert.match(cut.stderr, /gzip data is corrupt or truncated after line \d+/);
    assert.ok(!exists(collector));

    // A newer format version.
    const header = JSON.parse(lines[0] ?? "");
    await gzipTo(sb.path("v2.jsonl.gz"), [JSON.stringify({ ...header, version: 2 })]);
    const v2 = await sb.sentry(["import", sb.path("v2.jsonl.gz"), "--data", collector]);
    assert.equal(v2.code, 2);
    assert.match(v2.stderr, /it is format version 2, written by a newer Sentry/);

    // The untouched bundle still goes in.
    const ok = await sb.sentry(["import", bundle, "--data", collector]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.deepEqual(ids(await journalEvents(sb, collector)), ids(await journalEvents(sb)));
  });
});

Deno.test("`sentry export` keeps to --since and --session, and a signed bundle needs its key", async () => {
  await withSandbox(async (sb) => {
    const first = await runAgent(sb, "one");
    const between = new Date().toISOString();
    const second = await runAgent(sb, "two");
    const local = await journalEvents(sb);
    const exportIds = async (args: string[]): Promise<string[]> => {
      const path = sb.path(`f${Math.random()}.jsonl.gz`);
      const out = await sb.sentry(["export", ...args, "-o", path]);
      assert.equal(out.code, 0, out.stderr);
      return (await gunzip(path)).map((l) => JSON.parse(l)).filter((l) => l.type === "event")
        .map((l) => l.event.id).sort();
    };
    assert.deepEqual(
      await exportIds(["--session", first]),
      ids(local.filter((e) => e.session === first)),
    );
    assert.deepEqual(
      await exportIds(["--since", between]),
      ids(local.filter((e) => e.ts >= between)),
    );
    assert.deepEqual(
      await exportIds(["--since", between]),
      ids(local.filter((e) => e.session === second)),
    );
    assert.deepEqual(
      await exportIds(["--until", between]),
      ids(local.filter((e) => e.ts < between)),
    );
    assert.deepEqual(
      await exportIds(["--since", "2d", "--session", second]),
      ids(
        local.filter((e) => e.session === second),
      ),
    );

    for (const bad of ["yesterday", "2026-13-01", "-5h"]) {
      const out = await sb.sentry(["export", "--since", bad, "-o", sb.path("x.gz")]);
      assert.equal(out.code, 2, out.stderr);
      assert.match(out.stderr, new RegExp(`^sentry: Invalid --since "${bad}": give a duration`));
      assert.equal(out.stderr.trim().split("\n").length, 1, out.stderr);
    }
    assert.ok(!exists(sb.path("x.gz")));

    // Signed with a shared key: verified with it, refused with another.
    const key = await sb.write("bundle.key", "a".repeat(44) + "\n", 0o600);
    const wrong = await sb.write("wrong.key", "b".repeat(44) + "\n", 0o600);
    const signed = sb.path("signed.jsonl.gz");
    const out = await sb.sentry(["export", "--sign-key-file", key, "-o", signed]);
    assert.equal(out.code, 0, out.stderr);
    assert.match(out.stderr, /, signed\)/);
    const collector = sb.path("collector");
    const refused = await sb.sentry([
      "import",
      signed,
      "--data",
      collector,
      "--sign-key-file",
      wrong,
    ]);
    assert.equal(refused.code, 2);
    assert.match(refused.stderr, /its signature does not match the signing key/);
    const dry = await sb.sentry(["import", signed, "--dry-run", "--sign-key-file", key]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(
      dry.stdout,
      /nothing stored \(--dry-run\)\nchain head [0-9a-f]{64} \(signature verified\)/,
    );
    assert.ok(!exists(collector));
    const accepted = await sb.sentry([
      "import",
      signed,
      "--data",
      collector,
      "--sign-key-file",
      key,
    ]);
    assert.equal(accepted.code, 0, accepted.stderr);
    assert.match(accepted.stdout, new RegExp(`${local.length} events accepted`));
  });
});

Deno.test("`sentry import --key` refuses a bundle whose host is bound to another key", async () => {
  await withSandbox(async (sb) => {
    await runAgent(sb, "gamma");
    const bundle = sb.path("gamma.jsonl.gz");
    const exported = await sb.sentry(["export", "--since", "1h", "-o", bundle]);
    assert.equal(exported.code, 0, exported.stderr);
    const collector = sb.path("collector");
    for (const name of ["fleet-a", "fleet-b"]) {
      const added = await sb.sentry(["server", "keys", "add", name, "--data", collector]);
      assert.equal(added.code, 0, added.stderr);
    }
    // The first key to file the host's bundle registers the host.
    const first = await sb.sentry(["import", bundle, "--data", collector, "--key", "fleet-a"]);
    assert.equal(first.code, 0, first.stderr);
    // Another key presenting the same host id is refused, names the field, and stores nothing.
    await runAgent(sb, "delta");
    const later = sb.path("later.jsonl.gz");
    assert.equal((await sb.sentry(["export", "--since", "1h", "-o", later])).code, 0);
    const before = (await journalEvents(sb, collector)).length;
    const refused = await sb.sentry(["import", later, "--data", collector, "--key", "fleet-b"]);
    assert.equal(refused.code, 2, refused.stderr);
    assert.match(refused.stderr, /host\.id "[0-9A-Z]+" is bound to another key/);
    assert.match(refused.stderr, /nothing was imported/);
    assert.ok(!hasStackTrace(refused.stderr));
    assert.equal((await journalEvents(sb, collector)).length, before);
    // Under its own key the same bundle goes in.
    const ok = await sb.sentry(["import", later, "--data", collector, "--key", "fleet-a"]);
    assert.equal(ok.code, 0, ok.stderr);
    assert.ok((await journalEvents(sb, collector)).length > before);
  });
});

Deno.test({
  name:
    "`sentry import --store postgres://` stores a bundle in PostgreSQL once, binds its host, and refuses another key",
  ignore: postgresSkip() !== null,
  async fn() {
    const pg = await startPostgres();
    try {
      await withSandbox(async (sb) => {
        await runAgent(sb, "delta");
        const bundle = sb.path("delta.jsonl.gz");
        assert.equal((await sb.sentry(["export", "--since", "1h", "-o", bundle])).code, 0);
        const local = await journalEvents(sb);
        const store = ["--store", pg.url];
        for (const name of ["fleet-a", "fleet-b"]) {
          const added = await sb.sentry(["server", "keys", "add", name, ...store]);
          assert.equal(added.code, 0, added.stderr);
        }
        // An unknown key is refused before the bundle is read, and nothing is stored.
        const unknown = await sb.sentry(["import", bundle, ...store, "--key", "nobody"]);
        assert.equal(unknown.code, 2, unknown.stderr);
        assert.match(unknown.stderr, /Unknown --key "nobody"/);

        const first = await sb.sentry(["import", bundle, ...store, "--key", "fleet-a", "--json"]);
        assert.equal(first.code, 0, first.stderr);
        const result = JSON.parse(first.stdout);
        assert.equal(result.accepted, local.length);
        assert.equal(result.stored_sessions, 1);
        assert.equal(result.data, redactUrl(pg.url));
        const again = await sb.sentry(["import", bundle, ...store, "--key", "fleet-a"]);
        assert.equal(again.code, 0, again.stderr);
        assert.match(again.stdout, new RegExp(`0 events accepted, ${local.length} duplicates`));
        const refused = await sb.sentry(["import", bundle, ...store, "--key", "fleet-b"]);
        assert.equal(refused.code, 2, refused.stderr);
        assert.match(refused.stderr, /host\.id "[0-9A-Z]+" is bound to another key/);
        assert.ok(!hasStackTrace(refused.stderr));
        // Nothing went to a SQLite collector, and the database holds each event once.
        assert.ok(!exists(join(sb.data, "collector", "journal.db")));
        const db = await openPostgresStore(pg.url);
        try {
          const [session] = await db.listSessions();
          assert.equal(session?.events, local.length);
          const stored = await db.queryEvents({ limit: 100_000 });
          assert.deepEqual(ids(stored), ids(local));
          const [host] = await db.listHosts();
          assert.equal(host?.key_name, "fleet-a");
          assert.equal(host?.events, local.length);
          assert.equal(host?.duplicates, local.length);
        } finally {
          await db.close();
        }
      });
    } finally {
      await pg.close();
    }
  },
});
