import assert from "node:assert/strict";
import { join } from "node:path";
import { applyLandlock, hostPlanFs, landlockAbi, LandlockError } from "./landlock_linux.ts";
import { type DenyEntry, planLandlock } from "./landlock_plan.ts";

const support = landlockAbi();
const why = support.abi < 1 ? `Landlock is not available: ${support.reason}` : null;
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the Landlock tests: ${why}`);
}

const CONFIG = new URL("../../deno.json", import.meta.url).pathname;

/**
 * The child: sets no_new_privs, applies the plan to its main thread, then tries each action
 * with Deno's synchronous calls (made on that thread) and prints what each got.
 */
const CHILD = `
import { applyLandlock } from ${
  JSON.stringify(new URL("./landlock_linux.ts", import.meta.url).href)
};
import { parseLandlockPlan } from ${
  JSON.stringify(new URL("./landlock_plan.ts", import.meta.url).href)
};
import { setNoNewPrivs } from ${
  JSON.stringify(new URL("./seccomp_linux.ts", import.meta.url).href)
};
const [planFile, root] = Deno.args;
const plan = parseLandlockPlan(Deno.readTextFileSync(planFile));
setNoNewPrivs();
const applied = applyLandlock(plan);
const out = { applied: { rules: applied.rules, skipped: applied.skipped.length, ms: applied.ms } };
const attempt = (name, fn) => {
  try { fn(); out[name] = "ok"; } catch (e) {
    out[name] = e.code ?? /^E[A-Z]+/.exec(e.message)?.[0] ?? e.name;
  }
};
attempt("readSecret", () => Deno.readTextFileSync(root + "/secret/key"));
attempt("listSecret", () => [...Deno.readDirSync(root + "/secret")]);
attempt("readOpen", () => Deno.readTextFileSync(root + "/open/file"));
attempt("writeOpen", () => Deno.writeTextFileSync(root + "/open/file", "x"));
attempt("createInWs", () => Deno.writeTextFileSync(root + "/ws/new", "x"));
attempt("createInAncestor", () => Deno.writeTextFileSync(root + "/new", "x"));
attempt("removeKeep", () => Deno.removeSync(root + "/ws/keep"));
attempt("removeNew", () => Deno.removeSync(root + "/ws/new"));
attempt("renameKeep", () => Deno.renameSync(root + "/ws/keep", root + "/open/keep"));
attempt("readEtc", () => Deno.readTextFileSync("/etc/hostname"));
attempt("signalParent", () => Deno.kill(Number(Deno.args[2]), "SIGCONT"));
const child = new Deno.Command("/bin/sleep", { args: ["30"] }).spawn();
attempt("signalOwnChild", () => Deno.kill(child.pid, "SIGKILL"));
await child.status;
console.log(JSON.stringify(out));
`;

Deno.test({
  name:
    "applyLandlock() restricts the calling thread: denied paths fail with EACCES, siblings work, and no signal leaves the domain",
  ignore: why !== null,
  async fn() {
    const root = await Deno.makeTempDir({ prefix: "sentry-landlock-" });
    try {
      await Deno.mkdir(join(root, "secret"));
      await Deno.mkdir(join(root, "open"));
      await Deno.mkdir(join(root, "ws"));
      await Deno.writeTextFile(join(root, "secret", "key"), "-----BEGIN KEY-----\n");
      await Deno.writeTextFile(join(root, "open", "file"), "public\n");
      await Deno.writeTextFile(join(root, "ws", "keep"), "keep\n");
      const entry = (group: DenyEntry["group"], path: string): DenyEntry => ({
        group,
        source: `files.${group}.deny`,
        glob: path,
        path,
      });
      const plan = planLandlock({
        abi: support.abi,
        deny: [
          entry("read", `${root}/secret/**`),
          entry("write", `${root}/open/file`),
          entry("delete", `${root}/ws/keep`),
        ],
        host: hostPlanFs(),
      });
      const planFile = join(root, "plan.json");
      await Deno.writeTextFile(planFile, JSON.stringify(plan));
      const script = join(root, "child.ts");
      await Deno.writeTextFile(script, CHILD);
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["run", "-A", "--config", CONFIG, script, planFile, root, String(Deno.pid)],
        stdout: "piped",
        stderr: "piped",
        signal: AbortSignal.timeout(60_000),
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.equal(out.code, 0, stderr);
      const result = JSON.parse(new TextDecoder().decode(out.stdout).trim().split("\n").at(-1)!);
      assert.equal(result.applied.rules, plan.rules.length);
      assert.equal(result.readSecret, "EACCES");
      assert.equal(result.listSecret, "EACCES");
      assert.equal(result.readOpen, "ok");
      assert.equal(result.writeOpen, "EACCES");
      assert.equal(result.createInWs, "ok");
      assert.equal(result.createInAncestor, "EACCES", "the documented cost in an ancestor");
      assert.equal(result.removeKeep, "EACCES");
      assert.equal(result.removeNew, "EACCES", "ws is an ancestor of a delete-denied file");
      assert.equal(result.renameKeep, "EACCES");
      assert.equal(result.readEtc, "ok");
      assert.equal(result.signalParent, "EPERM", "the signal scope keeps the parent out of reach");
      assert.equal(result.signalOwnChild, "ok");
      assert.equal(await Deno.readTextFile(join(root, "open", "file")), "public\n");
      assert.equal(await Deno.readTextFile(join(root, "ws", "keep")), "keep\n");
    } finally {
      await Deno.remove(root, { recursive: true });
    }
  },
});

/** Whether this test thread has no_new_privs (then the refusal below could not be tested safely). */
const noNewPrivs = /NoNewPrivs:\s+1/.test(Deno.readTextFileSync("/proc/thread-self/status"));

Deno.test({
  name:
    "applyLandlock() refuses a thread without no_new_privs and a plan for a newer ABI, before restricting anything",
  ignore: why !== null || noNewPrivs,
  fn() {
    const plan = {
      abi: support.abi,
      handledFs: 4,
      scoped: 0,
      rules: [],
      denied: { read: [], write: [], delete: [] },
      unenforceable: [],
    };
    assert.throws(
      () => applyLandlock(plan),
      (e: unknown) => e instanceof LandlockError && /no_new_privs is not set/.test(e.message),
    );
    assert.throws(
      () => applyLandlock({ ...plan, abi: support.abi + 1 }),
      (e: unknown) => e instanceof LandlockError && /the plan is for ABI/.test(e.message),
    );
    // Still unrestricted: this process reads what it could before.
    assert.ok(Deno.readTextFileSync("/etc/hostname").length > 0);
  },
});

Deno.test("landlockAbi() reports the kernel's ABI, or why there is none", () => {
  const s = landlockAbi();
  if (s.abi >= 1) assert.equal(s.reason, null);
  else assert.match(s.reason ?? "", /Landlock|C library|Linux/);
});
