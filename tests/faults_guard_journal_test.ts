/**
 * The fanotify guard must not cost the journal its locks (root only). A permission event's fd is
 * opened in Sentry's own process; closing one for `journal.db` dropped every POSIX lock SQLite
 * held there, so the next reader (`sentry events`) took itself for the last connection, deleted
 * the WAL under the live session, and the session's later events stayed invisible until it
 * ended. The guard now never holds Sentry's SQLite files.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { PermissionGroup } from "../src/platform/fanotify_perm_linux.ts";
import { delay, PYTHON, waitFor, withSandbox } from "./_helpers.ts";

function unavailable(): string | null {
  if (Deno.build.os !== "linux") return `needs Linux, not ${Deno.build.os}`;
  if (Deno.uid() !== 0) return "needs root (the fanotify guard runs under attach as root)";
  try {
    PermissionGroup.open().close();
    return null;
  } catch (error) {
    return error instanceof Error ? error.message : String(error);
  }
}

const why = unavailable();

Deno.test({
  name: `readers of the journal do not freeze a live attach session's events${
    why === null ? "" : ` (skipped: ${why})`
  }`,
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      const agent = sb.spawnRaw(PYTHON, [
        "-c",
        "import time\ni = 0\nwhile True:\n  i += 1\n" +
        "  open('f%d' % i, 'w').write('x')\n  time.sleep(0.02)",
      ]);
      const sentry = sb.spawn(["attach", String(agent.pid), "--no-api"]);
      await sentry.waitForStderr("fanotify guard", 30_000);
      const count = async () => (await sb.events()).length;
      const first = await waitFor(async () => {
        const n = await count();
        return n > 0 ? n : null;
      }, { what: "the first events", timeoutMs: 20_000 });
      // Each `sentry events` opened and closed the journal; before the fix, the count stayed
      // where it was from here on, and the WAL was gone.
      await delay(1500);
      const second = await count();
      await delay(1500);
      const third = await count();
      assert.ok(second > first && third > second, `counts ${first}, ${second}, ${third}`);
      const files = [...Deno.readDirSync(sb.data)].map((e) => e.name);
      assert.ok(files.includes("journal.db-wal"), `data directory holds ${files.join(", ")}`);
      sentry.kill("SIGTERM");
      assert.equal(await sentry.exit(), 0, sentry.stderr);
      agent.kill("SIGKILL");
      assert.ok(Deno.statSync(join(sb.data, "journal.db")).isFile);
    });
  },
});
