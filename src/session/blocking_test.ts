import assert from "node:assert/strict";
import { BLOCK_COLUMNS, blockingMatrix, type HostAbilities } from "./blocking.ts";

const FULL: HostAbilities = {
  root: true,
  seccomp: true,
  landlockAbi: 7,
  fanotifyPermission: true,
  ebpf: true,
  cgroupV2: true,
};

function row(host: HostAbilities, command: "run" | "attach", root: boolean) {
  const found = blockingMatrix(host).find((r) => r.command === command && r.root === root);
  assert.ok(found);
  assert.equal(found.cells.length, BLOCK_COLUMNS.length);
  return Object.fromEntries(BLOCK_COLUMNS.map((c, i) => [c, found.cells[i]]));
}

Deno.test("blockingMatrix() names the mechanism for each action, run and attach, root and not", () => {
  assert.equal(
    row(FULL, "run", false)["connect"],
    "seccomp (Sentry connects) + Landlock (TCP ports)",
  );
  assert.equal(row(FULL, "run", true)["connect"], "cgroup connect program + Landlock (TCP ports)");
  assert.equal(row(FULL, "run", true)["Sentry's files"], "hidden (mount namespace)");
  assert.equal(row(FULL, "attach", true)["open (read, write)"], "fanotify guard");
  assert.equal(row(FULL, "attach", true)["delete, rename"], "no: pauses instead");
  assert.match(row(FULL, "attach", false)["signal, trace Sentry"] ?? "", /^no: /);
});

Deno.test("blockingMatrix() falls back honestly: no seccomp, no Landlock, not root", () => {
  const bare = { ...FULL, root: false, seccomp: false, landlockAbi: 0, fanotifyPermission: false };
  const run = row(bare, "run", false);
  for (const column of BLOCK_COLUMNS.slice(0, 4)) assert.equal(run[column], "no: pauses instead");
  assert.equal(
    row({ ...bare, landlockAbi: 4 }, "run", false)["connect"],
    "Landlock (TCP ports, mode block)",
  );
  assert.equal(run["Sentry's files"], "no: readable by the agent");
  const rows = blockingMatrix(bare);
  assert.ok(rows.filter((r) => r.root).every((r) => r.unprobed && r.cells.every((c) => c === "?")));
  const oldKernel = row({ ...FULL, landlockAbi: 5 }, "run", true);
  assert.equal(oldKernel["signal, trace Sentry"], "no", "signal scoping needs Landlock ABI 6");
});
