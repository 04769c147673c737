import assert from "node:assert/strict";
import { landlockDenies, landlockRefusal, parseWallPlan, planWall, type WallPlan } from "./wall.ts";
import { ACCESS_FS, type LandlockPlan } from "../platform/landlock_plan.ts";
import type { SensorEvent } from "../sensors/sensor.ts";
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

Deno.test("landlockRefusal() and landlockDenies() tell the wall's refusals, and a success it would have refused", () => {
  const all = ACCESS_FS.READ_FILE | ACCESS_FS.WRITE_FILE | ACCESS_FS.REMOVE_FILE |
    ACCESS_FS.REMOVE_DIR |
    ACCESS_FS.MAKE_REG | ACCESS_FS.TRUNCATE;
  const plan = {
    abi: 7,
    handledFs: all,
    scoped: 0,
    rules: [{ path: "/open", access: all }],
    denied: { read: [], write: [], delete: [] },
    unenforceable: [],
  } as unknown as LandlockPlan;
  const event = (kind: string, target: string, detail: Record<string, unknown>) =>
    ({ kind, target, detail, sensor: "ebpf", pid: 1 }) as unknown as SensorEvent;
  const refusal = landlockRefusal(plan);
  const denies = landlockDenies(plan);
  assert.equal(refusal(event("file.read", "/secret/key", { errno: "EACCES" })), "EACCES");
  assert.equal(refusal(event("file.read", "/open/x", { errno: "EACCES" })), null, "not the wall");
  assert.equal(refusal(event("file.read", "/secret/key", { errno: "ENOENT" })), null);
  assert.equal(refusal(event("file.delete", "/secret/key", { errno: "EACCES" })), "EACCES");
  assert.equal(refusal(event("file.delete", "/open/key", { errno: "EACCES" })), null);
  assert.equal(denies(event("file.write", "/secret/key", { result: "ok", flags: 1 })), true);
  assert.equal(denies(event("file.write", "/open/key", { result: "ok", flags: 1 })), false);
  assert.equal(denies(event("net.connect", "1.2.3.4:80", { result: "ok" })), false);
});
