/**
 * End-to-end tests of the README's quick start: `deno task install` puts a `sentry` on PATH that
 * works from the user's own directory (which becomes the workspace), offline; and the demo keeps
 * its session in the user's journal, so the commands it prints work afterwards.
 * @module
 */
import assert from "node:assert/strict";
import { fileURLToPath } from "node:url";
import { withSandbox } from "./_helpers.ts";

const INSTALL = fileURLToPath(new URL("../scripts/install.ts", import.meta.url));
const DEMO = fileURLToPath(new URL("../scripts/demo.ts", import.meta.url));
const CONFIG = fileURLToPath(new URL("../deno.json", import.meta.url));

/** Whether this host lets the test take the network away (a network namespace, as root). */
const canUnshare = Deno.uid() === 0 &&
  (await new Deno.Command("unshare", { args: ["--net", "true"], stderr: "null" })
    .output().then((o) => o.success, () => false));

Deno.test("the installed sentry runs from the user's directory, which is the workspace", () =>
  withSandbox(async (sb) => {
    const bin = sb.path("bin");
    const install = sb.spawnRaw(Deno.execPath(), [
      "run",
      "-A",
      "--config",
      CONFIG,
      INSTALL,
      "--bin-dir",
      bin,
    ]);
    assert.equal(await install.exit(), 0, install.stderr);
    assert.match(install.stdout, /installed .*\/bin\/sentry/);
    assert.match(install.stdout, /is not on your PATH/);
    const wrapper = `${bin}/sentry`;
    assert.equal((await Deno.stat(wrapper)).mode! & 0o777, 0o755);

    const project = sb.path("project");
    await Deno.mkdir(project);
    const env = { PATH: `${bin}:${sb.env.PATH}` };
    // Without a network when the host allows it: the wrapper needs nothing from a registry.
    const [program, args] = canUnshare
      ? ["unshare", ["--net", "sh", "-c", 'ip link set lo up; exec sentry "$@"', "sh"]]
      : [wrapper, []] as [string, string[]];
    const run = sb.spawnRaw(program, [
      ...args,
      "run",
      "--no-api",
      "--",
      "sh",
      "-c",
      "pwd > where; echo made > made.txt",
    ], { cwd: project, env });
    assert.equal(await run.exit(60_000), 0, run.stderr);
    assert.equal((await Deno.readTextFile(`${project}/where`)).trim(), project);
    const [session] = await sb.sessions();
    assert.equal(session?.workspace, project);
    // The checkout was not the workspace: nothing of it was snapshotted.
    assert.match(run.stderr, /protected 0 files/);

    // --remove takes it away, and never a sentry it did not write.
    const remove = sb.spawnRaw(Deno.execPath(), [
      "run",
      "-A",
      INSTALL,
      "--bin-dir",
      bin,
      "--remove",
    ]);
    assert.equal(await remove.exit(), 0, remove.stderr);
    await assert.rejects(Deno.stat(wrapper));
    await Deno.writeTextFile(wrapper, "#!/bin/sh\necho another sentry\n", { mode: 0o755 });
    const again = sb.spawnRaw(Deno.execPath(), ["run", "-A", INSTALL, "--bin-dir", bin]);
    assert.equal(await again.exit(), 1);
    assert.match(again.stderr, /exists and is not this script's wrapper/);
    assert.equal(await Deno.readTextFile(wrapper), "#!/bin/sh\necho another sentry\n");
  }));

Deno.test({
  name: "the demo keeps its session, so the report and token it points to work afterwards",
  sanitizeResources: false,
  fn: () =>
    withSandbox(async (sb) => {
      // Its temporary workspace and home go in the sandbox, removed with it even on failure.
      const demo = sb.spawnRaw(Deno.execPath(), ["run", "-A", "--config", CONFIG, DEMO], {
        env: { TMPDIR: sb.root },
      });
      const code = await demo.exit(120_000);
      assert.equal(code, 0, demo.stderr);
      const id = /as session ([0-9A-Z]+)/.exec(demo.stderr)?.[1];
      assert.ok(id !== undefined, demo.stderr);
      assert.match(demo.stdout, new RegExp(`sentry report ${id}`));
      // Three denials pause it; the CPU spike a fourth time when this machine lets it hold a core.
      assert.match(demo.stdout, /paused and resumed [34] times/);
      // The journal is the user's (here the sandbox's SENTRY_HOME), not a deleted temporary one.
      const report = await sb.report(id);
      assert.equal(report.session.agent, "demo-agent");
      const rules = report.violations.filter((v) => v.kind !== "resource.cpu").map((v) => v.rule);
      assert.deepEqual(rules.sort(), ["files.read.deny", "files.write.deny", "processes.deny"]);
      const token = (await sb.ok(["token"])).trim();
      assert.match(token, /^\S{20,}$/);
      // The workspace is kept for rollback, and the demo says how to remove it.
      const root = /remove them with: rm -rf (\S+)/.exec(demo.stdout)?.[1];
      assert.ok(root !== undefined, demo.stdout);
      assert.ok(root.startsWith(sb.root), root);
      const dry = await sb.ok(["rollback", id, "--dry-run"]);
      // The agent's files were made after the snapshot: a rollback would remove them.
      assert.match(dry, new RegExp(`remove\\s+${root}/workspace/src\\s+\\(created\\)`));
    }),
});
