/**
 * `sentry doctor` end to end: the real CLI on a healthy setup (a real collector on loopback and
 * a valid key) and on broken ones (a refused key, an unwritable data directory, a damaged
 * journal, a skewed clock, an endpoint that never answers).
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { DatabaseSync } from "node:sqlite";
import { hasStackTrace, Listener, type Sandbox, withSandbox } from "./_helpers.ts";
import { closedPort, withCollector } from "./_loopback_collector.ts";

interface Check {
  id: string;
  title: string;
  status: "ok" | "warn" | "fail" | "skip";
  detail: string;
  fix: string | null;
}

interface Doctor {
  code: number;
  ok: boolean;
  checks: Map<string, Check>;
  stderr: string;
}

const IDS = [
  "version",
  "data_dir",
  "config",
  "api_key",
  "endpoint",
  "clock",
  "proc",
  "inotify",
  "ptrace",
  "fanotify",
  "landlock",
  "tier_ebpf",
  "tier_seccomp",
  "tier_fanotify",
  "tier_poll",
  "sensor",
  "strace",
  "journal",
];

async function doctor(sb: Sandbox, env: Record<string, string> = {}): Promise<Doctor> {
  const out = await sb.sentry(["doctor", "--json"], { env });
  assert.ok(!hasStackTrace(out.stderr), out.stderr);
  const report = JSON.parse(out.stdout) as { ok: boolean; checks: Check[] };
  // SENTRY_HOME is both the data and the config directory, so there is one directory check.
  assert.deepEqual(report.checks.map((c) => c.id), IDS);
  for (const c of report.checks) {
    assert.ok(["ok", "warn", "fail", "skip"].includes(c.status), JSON.stringify(c));
    if (c.status === "fail" || c.status === "warn") assert.ok(c.fix, `${c.id} has a fix`);
  }
  assert.equal(out.code, report.checks.some((c) => c.status === "fail") ? 1 : 0, out.stderr);
  assert.equal(report.ok, out.code === 0);
  return {
    code: out.code,
    ok: report.ok,
    checks: new Map(report.checks.map((c) => [c.id, c])),
    stderr: out.stderr,
  };
}

function get(d: Doctor, id: string): Check {
  const c = d.checks.get(id);
  assert.ok(c, `no check "${id}"`);
  return c;
}

async function login(sb: Sandbox, key: string, endpoint: string, verify = true): Promise<void> {
  const args = ["login", "--api-key", key, "--endpoint", endpoint];
  const out = await sb.sentry(verify ? args : [...args, "--no-verify"]);
  assert.equal(out.code, 0, out.stderr);
}

Deno.test("`sentry doctor` on a healthy setup: key accepted, latency and skew measured, journal sound, exit 0", async () => {
  await withCollector(async (c) => {
    await withSandbox(async (sb) => {
      const ran = await sb.sentry(["run", "--", "sh", "-c", "exit 0"]);
      assert.equal(ran.code, 0, ran.stderr);
      await login(sb, c.key, c.endpoint);
      const d = await doctor(sb);
      assert.equal(d.code, 0, JSON.stringify([...d.checks.values()], null, 2));
      assert.equal(get(d, "data_dir").status, "ok");
      assert.match(get(d, "data_dir").detail, /is writable, mode 0700/);
      const key = get(d, "api_key");
      assert.equal(key.status, "ok");
      assert.match(key.detail, /^sk_\w+… from ".*credentials\.json", accepted as "laptop" \(k_/);
      assert.ok(!key.detail.includes(c.key));
      const endpoint = get(d, "endpoint");
      assert.equal(endpoint.status, "ok");
      assert.match(
        endpoint.detail,
        new RegExp(
          `^${c.endpoint} \\(from sentry login\\) answers in \\d+ ms \\(sentry-collector `,
        ),
      );
      assert.equal(get(d, "config").status, "ok");
      assert.match(get(d, "config").detail, /the defaults apply/);
      assert.equal(get(d, "clock").status, "ok");
      assert.match(get(d, "clock").detail, /^\d+\.\d s/);
      assert.equal(get(d, "proc").status, "ok");
      const journal = get(d, "journal");
      assert.equal(journal.status, "ok");
      assert.match(journal.detail, /is sound \(schema version (\d+) of \1,/);

      // The table shows the same checks, in words.
      const table = await sb.sentry(["doctor"]);
      assert.equal(table.code, 0, table.stderr);
      assert.match(table.stdout, /^STATUS +CHECK +DETAIL$/m);
      assert.match(table.stdout, /^ok +API key +sk_\w+… from/m);
      assert.match(
        table.stdout,
        /^ok +endpoint +http:\/\/127\.0\.0\.1:\d+ \(from sentry login\) answers in \d+ ms/m,
      );
      assert.match(table.stdout, /\d+ ok, \d+ warning\(s\), 0 failure\(s\), \d+ skipped/);
    });
  });
});

Deno.test("`sentry doctor` without a key warns that sync is off, exits 0, and creates nothing", async () => {
  await withSandbox(async (sb) => {
    const d = await doctor(sb);
    assert.equal(d.code, 0);
    const key = get(d, "api_key");
    assert.equal(key.status, "warn");
    assert.match(key.detail, /sync is off/);
    assert.equal(key.fix, "sentry login --api-key KEY [--endpoint URL]");
    assert.equal(get(d, "endpoint").status, "skip");
    assert.equal(get(d, "clock").status, "skip");
    assert.equal(get(d, "journal").status, "skip");
    assert.match(get(d, "data_dir").detail, /does not exist yet/);
    assert.throws(
      () => Deno.statSync(sb.data),
      Deno.errors.NotFound,
      "SENTRY_HOME was not created",
    );
  });
});

Deno.test("`sentry doctor` fails on a refused key (revoked at the collector) with the fix, exit 1", async () => {
  await withCollector(async (c) => {
    await withSandbox(async (sb) => {
      await login(sb, c.key, c.endpoint);
      c.keys.revoke("laptop");
      const d = await doctor(sb);
      assert.equal(d.code, 1);
      const key = get(d, "api_key");
      assert.equal(key.status, "fail");
      assert.match(key.detail, new RegExp(`is refused by ${c.endpoint}: Invalid API key`));
      assert.match(key.fix ?? "", /sentry server keys add NAME.*sentry login --api-key KEY/);
      assert.equal(get(d, "endpoint").status, "ok", "the endpoint answered");
      assert.match(d.stderr, /doctor: 1 check\(s\) failed: API key/);

      // A key from the environment is checked the same way, and its variable is named.
      const env = await doctor(sb, { SENTRY_API_KEY: `sk_${"q".repeat(52)}` });
      assert.equal(env.code, 1);
      assert.match(get(env, "api_key").detail, /from \$SENTRY_API_KEY is refused/);
    });
  });
});

Deno.test("`sentry doctor` fails when the data directory cannot be created, even for root", async () => {
  await withSandbox(async (sb) => {
    // Tests run as root, and root ignores permission bits, so a chmod'ed directory would still
    // be writable. No one, root included, can create a directory under a regular file: mkdir
    // fails with ENOTDIR.
    const file = await sb.write("not-a-dir", "x");
    const d = await doctor(sb, { SENTRY_HOME: join(file, "sentry") });
    assert.equal(d.code, 1);
    const dir = get(d, "data_dir");
    assert.equal(dir.status, "fail");
    assert.equal(
      dir.detail,
      `"${join(file, "sentry")}" cannot be created: "${file}" is not a directory`,
    );
    assert.match(dir.fix ?? "", /set SENTRY_HOME to a directory this user can write/);
    assert.equal(get(d, "api_key").status, "warn", "no key there, rather than an error");
    assert.equal(get(d, "journal").status, "skip");

    // SENTRY_HOME naming the file itself fails the same way.
    const same = await doctor(sb, { SENTRY_HOME: file });
    assert.equal(same.code, 1);
    assert.match(get(same, "data_dir").detail, /is not writable: it is not a directory/);
  });
});

Deno.test("`sentry doctor` warns about a data directory and journal that others can read", async () => {
  await withSandbox(async (sb) => {
    const ran = await sb.sentry(["run", "--", "sh", "-c", "exit 0"]);
    assert.equal(ran.code, 0, ran.stderr);
    await Deno.chmod(sb.data, 0o755);
    const journalPath = join(sb.data, "journal.db");
    await Deno.chmod(journalPath, 0o644);
    const d = await doctor(sb);
    assert.equal(d.code, 0);
    assert.equal(get(d, "data_dir").status, "warn");
    assert.match(get(d, "data_dir").detail, /mode 0755/);
    assert.equal(get(d, "data_dir").fix, `chmod 700 "${sb.data}"`);
    // Opening the journal narrows its mode (as every command does), and the check says so.
    assert.equal(get(d, "journal").status, "ok");
    assert.match(get(d, "journal").detail, /its mode was 0644; narrowed to 0600/);
    assert.equal((await Deno.stat(journalPath)).mode! & 0o777, 0o600);
  });
});

Deno.test("`sentry doctor` fails on a journal overwritten with garbage, and on one whose index disagrees with its table", async () => {
  await withSandbox(async (sb) => {
    const ran = await sb.sentry(["run", "--", "sh", "-c", "ls / > /dev/null"]);
    assert.equal(ran.code, 0, ran.stderr);
    const path = join(sb.data, "journal.db");
    assert.equal((await doctor(sb)).code, 0);
    // Read only now: the last connection to close has checkpointed the write-ahead log.
    assert.throws(() => Deno.statSync(`${path}-wal`), Deno.errors.NotFound);
    const good = await Deno.readFile(path);

    // An index that no longer matches its table (its definition rewritten under it): the
    // journal opens, and only the integrity check finds it. Deterministic, unlike damaging
    // bytes, whose effect depends on where the page's cells fall.
    // `defensive: false` allows writable_schema; Deno's types for node:sqlite lack the option.
    const unguarded = { readOnly: false, defensive: false };
    const db = new DatabaseSync(path, unguarded);
    db.exec("PRAGMA writable_schema = ON");
    db.prepare("UPDATE sqlite_master SET sql = ? WHERE name = 'events_session_kind'").run(
      "CREATE INDEX events_session_kind ON events (session, target, id)",
    );
    db.close();
    const index = await doctor(sb);
    assert.equal(index.code, 1);
    const check = get(index, "journal");
    assert.equal(check.status, "fail");
    assert.match(
      check.detail,
      /fails its integrity check: row \d+ missing from index events_session_kind/,
    );
    assert.ok(!check.detail.includes("\n"));
    assert.match(check.fix ?? "", /^move it aside \(mv ".*journal\.db" ".*journal\.db\.broken"\)/);

    const garbage = new Uint8Array(good.length);
    crypto.getRandomValues(garbage.subarray(0, 65536));
    await Deno.writeFile(path, garbage);
    const d = await doctor(sb);
    assert.equal(d.code, 1);
    assert.equal(get(d, "journal").status, "fail");
    assert.equal(get(d, "journal").detail, `"${path}" is damaged: file is not a database`);
    assert.match(d.stderr, /doctor: 1 check\(s\) failed: journal/);
    assert.deepEqual(await Deno.readFile(path), garbage, "the doctor changed nothing");
  });
});

Deno.test("`sentry doctor` measures clock skew: a warning at 20 s, a failure at 10 minutes", async () => {
  await withSandbox(async (sb) => {
    await withCollector(async (c) => {
      await login(sb, c.key, c.endpoint);
      const d = await doctor(sb);
      assert.equal(d.code, 0);
      const clock = get(d, "clock");
      assert.equal(clock.status, "warn");
      assert.match(clock.detail, /^(19|20|21) s behind the endpoint/);
      assert.match(clock.fix ?? "", /NTP/);
    }, { clockOffsetMs: 20_000 });
    await withCollector(async (c) => {
      await login(sb, c.key, c.endpoint);
      const d = await doctor(sb);
      assert.equal(d.code, 1);
      assert.equal(get(d, "clock").status, "fail");
      assert.match(get(d, "clock").detail, /^(599|600|601) s ahead of the endpoint/);
    }, { clockOffsetMs: -600_000 });
  });
});

Deno.test("`sentry doctor` with an unreachable or silent endpoint warns within its time limit and exits 0", async () => {
  await withSandbox(async (sb) => {
    const key = `sk_${"b".repeat(52)}`;
    const closed = `http://127.0.0.1:${closedPort()}`;
    await login(sb, key, closed, false);
    const refused = await doctor(sb);
    assert.equal(refused.code, 0);
    assert.equal(get(refused, "endpoint").status, "warn");
    assert.match(get(refused, "endpoint").detail, new RegExp(`Cannot reach endpoint "${closed}"`));
    assert.match(get(refused, "endpoint").fix ?? "", /SENTRY_ENDPOINT/);
    assert.equal(get(refused, "api_key").status, "skip");

    // A server that accepts connections and never answers: the doctor gives it 3 s.
    const silent = new Listener();
    try {
      const started = Date.now();
      const d = await doctor(sb, { SENTRY_ENDPOINT: `http://127.0.0.1:${silent.port}` });
      const elapsed = Date.now() - started;
      assert.equal(d.code, 0);
      assert.match(get(d, "endpoint").detail, /no answer within 3000 ms/);
      assert.ok(elapsed >= 3000 && elapsed < 15_000, `took ${elapsed} ms`);
    } finally {
      await silent.close();
    }
  });
});

Deno.test("`sentry doctor` fails on a malformed credentials file, naming the file and field", async () => {
  await withSandbox(async (sb) => {
    await Deno.mkdir(sb.data, { recursive: true, mode: 0o700 });
    const path = join(sb.data, "credentials.json");
    await Deno.writeTextFile(path, JSON.stringify({ api_key: 7, endpoint: "http://x.example" }));
    const d = await doctor(sb);
    assert.equal(d.code, 1);
    const key = get(d, "api_key");
    assert.equal(key.status, "fail");
    assert.match(key.detail, new RegExp(`^Cannot read credentials "${path}": field "api_key"`));
    // `login` replaces a damaged file.
    const endpoint = `http://127.0.0.1:${closedPort()}`;
    await login(sb, `sk_${"c".repeat(52)}`, endpoint, false);
    const after = await doctor(sb);
    assert.equal(after.code, 0);
    assert.equal(get(after, "api_key").status, "skip", "not checked: the endpoint is down");
    assert.equal(get(after, "endpoint").status, "warn");
  });
});

const canUnshare = Deno.uid() === 0 && (() => {
  try {
    return Deno.statSync("/usr/bin/unshare").isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name:
    "`sentry doctor` reads a /proc mounted with hidepid and subset=pid, and warns what is hidden",
  ignore: !canUnshare,
  async fn() {
    await withSandbox(async (sb) => {
      // A new mount and pid namespace with its own procfs instance, so the host's /proc is
      // untouched: only this process tree sees the restricted mount.
      const main = new URL("../main.ts", import.meta.url).pathname;
      const config = new URL("../deno.json", import.meta.url).pathname;
      const run = sb.spawnRaw("/usr/bin/unshare", [
        "--mount",
        "--pid",
        "--fork",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount -t proc -o hidepid=invisible,subset=pid proc /proc && exec "$@"',
        "sh",
        Deno.execPath(),
        "run",
        "-A",
        "--config",
        config,
        main,
        "doctor",
        "--json",
      ]);
      const code = await run.exit();
      assert.equal(code, 0, run.stderr);
      const report = JSON.parse(run.stdout) as { checks: Check[] };
      const proc = report.checks.find((c) => c.id === "proc");
      assert.equal(proc?.status, "warn");
      assert.match(proc?.detail ?? "", /cannot read \/proc\/loadavg .*\/proc\/stat/);
      assert.match(proc?.detail ?? "", /hidepid=invisible: only this user's processes are visible/);
      assert.equal(proc?.fix, "mount /proc without subset=pid");
      const inotify = report.checks.find((c) => c.id === "inotify");
      assert.match(inotify?.detail ?? "", /max_user_watches unknown/);
    });
  },
});

Deno.test({
  name: "`sentry doctor` fails when the data directory exists on a read-only mount",
  ignore: !canUnshare,
  async fn() {
    await withSandbox(async (sb) => {
      const ran = await sb.sentry(["run", "--", "sh", "-c", "exit 0"]);
      assert.equal(ran.code, 0, ran.stderr);
      // A read-only bind mount in a private mount namespace: writes fail with EROFS, for root too.
      const main = new URL("../main.ts", import.meta.url).pathname;
      const config = new URL("../deno.json", import.meta.url).pathname;
      const run = sb.spawnRaw("/usr/bin/unshare", [
        "--mount",
        "--propagation",
        "private",
        "sh",
        "-c",
        'mount --bind "$1" "$1" && mount -o remount,bind,ro "$1" && shift && exec "$@"',
        "sh",
        sb.data,
        Deno.execPath(),
        "run",
        "-A",
        "--config",
        config,
        main,
        "doctor",
        "--json",
      ]);
      const code = await run.exit();
      assert.equal(code, 1, run.stderr);
      const report = JSON.parse(run.stdout) as { checks: Check[] };
      const dir = report.checks.find((c) => c.id === "data_dir");
      assert.equal(dir?.status, "fail");
      assert.match(dir?.detail ?? "", /is not writable: Read-only file system/);
      const journal = report.checks.find((c) => c.id === "journal");
      assert.equal(journal?.status, "fail");
      assert.match(journal?.detail ?? "", /^cannot open ".*journal\.db": Read-only file system/);
      assert.match(journal?.fix ?? "", /readable and writable/);
      assert.match(run.stderr, /doctor: 2 check\(s\) failed: data and config directory, journal/);
    });
  },
});

Deno.test("`sentry doctor` follows the config file: its sync.endpoint wins, sync.enabled false turns sync off, a bad file fails", async () => {
  await withCollector(async (c) => {
    await withSandbox(async (sb) => {
      await Deno.mkdir(sb.data, { recursive: true, mode: 0o700 });
      const config = join(sb.data, "config.yaml");
      // The stored endpoint is dead; the config's is the live collector, and it wins.
      await login(sb, c.key, `http://127.0.0.1:${closedPort()}`, false);
      await Deno.writeTextFile(config, `sync:\n  endpoint: ${c.endpoint}/\n`);
      const d = await doctor(sb);
      assert.equal(d.code, 0);
      assert.equal(get(d, "config").status, "ok");
      assert.equal(get(d, "config").detail, `"${config}" is valid`);
      assert.equal(get(d, "api_key").status, "ok");
      assert.match(
        get(d, "endpoint").detail,
        new RegExp(`^${c.endpoint} \\(from the config file\\)`),
      );

      await Deno.writeTextFile(config, "sync:\n  enabled: false\n");
      const off = await doctor(sb);
      assert.equal(off.code, 0);
      assert.equal(get(off, "api_key").status, "skip");
      assert.equal(get(off, "api_key").detail, `sync is off: sync.enabled is false in "${config}"`);
      assert.equal(get(off, "endpoint").status, "skip");

      await Deno.writeTextFile(config, "sync:\n  enabeld: true\n");
      const bad = await doctor(sb);
      assert.equal(bad.code, 1);
      assert.equal(get(bad, "config").status, "fail");
      assert.match(get(bad, "config").detail, /enabeld/);
      assert.equal(
        get(bad, "config").fix,
        "fix the file, then check it with: sentry config validate",
      );
    });
  });
});
