import assert from "node:assert/strict";
import { parseWallPlan, planWall, type WallPlan } from "./wall.ts";
import { loadPolicy } from "../policy/mod.ts";

const PLAN: WallPlan = {
  landlock: null,
  mask: ["/home/a/.local/share/sentry"],
  dropCapabilities: true,
};

Deno.test("parseWallPlan() reads back what was written, and names the bad field", () => {
  assert.deepEqual(parseWallPlan(JSON.stringify(PLAN)), PLAN);
  assert.throws(() => parseWallPlan("[]"), /"mask" must list absolute paths/);
  assert.throws(
    () => parseWallPlan(JSON.stringify({ ...PLAN, mask: ["relative"] })),
    /"mask" must list absolute paths/,
  );
  assert.throws(
    () => parseWallPlan(JSON.stringify({ ...PLAN, dropCapabilities: "yes" })),
    /"dropCapabilities" must be a boolean/,
  );
  assert.throws(() => parseWallPlan(JSON.stringify({ ...PLAN, landlock: { abi: 0 } })), /Landlock/);
});

Deno.test("planWall() hides Sentry's directories and drops capabilities as root only, and says what it cannot do", async () => {
  const resolved = await loadPolicy("coding-agent", { cwd: "/" });
  const policy = { resolved, workspace: "/tmp", home: "/home/a", guarded: ["/home/a/.sentry"] };
  const env = { HOME: "/home/a", SENTRY_HOME: "/home/a/.sentry" };
  const noLandlock = { abi: 0, reason: "not in this kernel" };
  const asRoot = planWall({
    policy,
    env,
    cwd: "/",
    root: true,
    landlock: noLandlock,
    tier: "ebpf",
  });
  assert.deepEqual(asRoot.plan, {
    landlock: null,
    mask: ["/home/a/.sentry"],
    dropCapabilities: true,
  });
  const said = asRoot.notices.map((n) => `${n.type}: ${n.message}`).join("\n");
  assert.match(
    said,
    /warn: Landlock is not available \(not in this kernel\): the agent can signal/,
  );
  assert.match(said, /info: Sentry's own directories \(\/home\/a\/\.sentry\) are hidden/);
  assert.match(said, /CAP_SYS_ADMIN/);
  const user = planWall({ policy, env, cwd: "/", root: false, landlock: noLandlock, tier: "poll" });
  assert.deepEqual(user.plan, { landlock: null, mask: [], dropCapabilities: false });
  assert.match(
    user.notices.map((n) => n.message).join("\n"),
    /without root the poll tier cannot hide Sentry's own directories/,
  );
});
