/**
 * `sentry rollback` end to end: after Sentry was killed mid-session, dry runs, path filters and
 * undo, with a real agent doing the damage.
 * @module
 */
import assert from "node:assert/strict";
import { PYTHON, Sandbox, waitFor, withSandbox } from "./_helpers.ts";

/** Writes a small protected tree and an agent that damages it, then idles until killed. */
async function damage(sb: Sandbox): Promise<{ agent: string; files: { a: string; b: string } }> {
  await Deno.mkdir(`${sb.workspace}/sub`, { recursive: true });
  const files = {
    a: await sb.write(`${sb.workspace}/a.txt`, "alpha\n"),
    b: await sb.write(`${sb.workspace}/sub/b.txt`, "bravo\n"),
  };
  const agent = await sb.write(
    "agent.py",
    [
      "import os, shutil, time",
      `open(${JSON.stringify(files.a)}, "w").write("ruined")`,
      `shutil.rmtree(${JSON.stringify(sb.workspace + "/sub")})`,
      `open(${JSON.stringify(sb.workspace + "/junk.txt")}, "w").write("junk")`,
      `open(${JSON.stringify(sb.path("damaged"))}, "w").write("yes\\n")`,
      "time.sleep(60)",
    ].join("\n"),
  );
  return { agent, files };
}

Deno.test("`sentry rollback last` restores the workspace after Sentry was killed with SIGKILL mid-session", async () => {
  await withSandbox(async (sb) => {
    const { agent, files } = await damage(sb);
    const run = sb.spawn(["run", "--", PYTHON, agent]);
    await sb.readWhenWritten("damaged");
    // Give the sensors a poll to see the damage, then kill Sentry without warning.
    await new Promise((r) => setTimeout(r, 300));
    Deno.kill(run.pid, "SIGKILL");
    await run.exit();
    await waitFor(async () => (await sb.sessions())[0]?.state === "crashed", {
      what: "the session to be marked crashed",
    });

    const dry = await sb.sentry(["rollback", "last", "--dry-run"]);
    assert.equal(dry.code, 0, dry.stderr);
    assert.match(dry.stdout, /restore\s+.*a\.txt/);
    assert.match(dry.stdout, /recreate\s+.*sub\/b\.txt/);
    assert.match(dry.stdout, /remove\s+.*junk\.txt/);
    assert.equal(await Deno.readTextFile(files.a), "ruined", "a dry run changes nothing");

    const only = await sb.sentry(["rollback", "last", "--path", "**/a.txt"]);
    assert.equal(only.code, 0, only.stderr);
    assert.equal(await Deno.readTextFile(files.a), "alpha\n");
    await assert.rejects(
      () => Deno.stat(files.b),
      Deno.errors.NotFound,
      "--path limits the rollback",
    );

    const all = await sb.sentry(["rollback", "last", "--json"]);
    assert.equal(all.code, 0, all.stderr);
    const summary = all.stdout.trim().split("\n").map((l) => JSON.parse(l)).find((r) =>
      r.record === "summary"
    );
    assert.equal(summary.ok, true);
    assert.equal(await Deno.readTextFile(files.b), "bravo\n");
    await assert.rejects(() => Deno.stat(`${sb.workspace}/junk.txt`), Deno.errors.NotFound);

    const undo = await sb.sentry(["rollback", "--undo", "last"]);
    assert.equal(undo.code, 0, undo.stderr);
    assert.equal(
      await Deno.readTextFile(`${sb.workspace}/junk.txt`),
      "junk",
      "undo puts the quarantined file back",
    );
  });
});

Deno.test("`sentry rollback` of a session without a snapshot fails clearly with exit 1", async () => {
  await withSandbox(async (sb) => {
    const run = sb.spawn(["run", "--no-rollback", "--", "sh", "-c", "exit 0"]);
    assert.equal(await run.exit(), 0, run.stderr);
    const out = await sb.sentry(["rollback", "last"]);
    assert.equal(out.code, 1);
    assert.match(out.stderr, /has no snapshot/);
  });
});
