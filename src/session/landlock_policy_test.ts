import assert from "node:assert/strict";
import { loadPolicy, parsePolicy, type ResolvedPolicy } from "../policy/mod.ts";
import { resolveLayers } from "../policy/resolve.ts";
import type { DirEntry, LandlockPlan, PlanHost } from "../platform/landlock_plan.ts";
import {
  deniedCommandEntries,
  landlockDenyEntries,
  landlockNotices,
  landlockPlanFor,
  type LandlockPolicy,
  landlockTcpDeniedPorts,
} from "./landlock_policy.ts";

const ENV = { HOME: "/home/u", SENTRY_HOME: "state/sentry" };

async function policy(mode: ResolvedPolicy["mode"]): Promise<LandlockPolicy> {
  const resolved = await loadPolicy("coding-agent");
  return { resolved: { ...resolved, mode }, workspace: "/home/u/ws", home: "/home/u" };
}

/** A host where only /, /home/u and /home/u/ws exist. */
const HOST: PlanHost = {
  realPath: (p) => (["/", "/home", "/home/u", "/home/u/ws"].includes(p) ? p : null),
  typeOf: (p) => (["/", "/home", "/home/u", "/home/u/ws"].includes(p) ? "directory" : null),
  list(dir): DirEntry[] {
    const children: Record<string, string[]> = { "/": ["home"], "/home": ["u"], "/home/u": ["ws"] };
    return (children[dir] ?? []).map((name) => ({ name, type: "directory" }));
  },
};

Deno.test("landlockDenyEntries() walls off Sentry's own directories in every group in mode block, and none in the others", async () => {
  const other = landlockDenyEntries({ policy: await policy("pause"), env: ENV, cwd: "/srv" });
  assert.deepEqual(other.deny, [], "path rules cost the agent: only mode block asks for them");
  const { deny } = landlockDenyEntries({ policy: await policy("block"), env: ENV, cwd: "/srv" });
  // SENTRY_HOME is both the data and the config directory; a relative one resolves against cwd.
  assert.deepEqual(deny.filter((d) => d.source === "sentry").map((d) => [d.group, d.path]), [
    ["read", "/srv/state/sentry/**"],
    ["write", "/srv/state/sentry/**"],
    ["delete", "/srv/state/sentry/**"],
  ]);
  const xdg = landlockDenyEntries({ env: { HOME: "/home/u" }, cwd: "/" });
  assert.deepEqual([...new Set(xdg.deny.map((d) => d.glob))], [
    "/home/u/.local/share/sentry",
    "/home/u/.config/sentry",
  ]);
});

Deno.test("landlockDenyEntries() maps the policy's deny lists in mode block only, expanded", async () => {
  const block = landlockDenyEntries({ policy: await policy("block"), env: ENV, cwd: "/" });
  const read = block.deny.filter((d) => d.source === "files.read.deny");
  assert.ok(read.some((d) => d.glob === "~/.ssh/**" && d.path === "/home/u/.ssh/**"));
  assert.ok(block.deny.some((d) => d.source === "files.write.deny" && d.glob === "/usr/**"));
  assert.ok(block.deny.some((d) => d.source === "files.delete.deny" && d.group === "delete"));
  for (const mode of ["monitor", "alert", "pause", "kill"] as const) {
    const other = landlockDenyEntries({ policy: await policy(mode), env: ENV, cwd: "/" });
    assert.ok(other.deny.every((d) => d.source === "sentry"), mode);
  }
  const off = await policy("block");
  off.resolved = { ...off.resolved, monitors: { ...off.resolved.monitors, files: false } };
  assert.ok(
    landlockDenyEntries({ policy: off, env: ENV, cwd: "/" }).deny.every((d) =>
      d.source === "sentry"
    ),
  );
});

Deno.test("landlockDenyEntries() lists a deny glob that does not expand as unenforceable", async () => {
  const p = await policy("block");
  p.resolved = {
    ...p.resolved,
    files: { ...p.resolved.files, read: { ...p.resolved.files.read, deny: ["${NOPE}/x/**"] } },
  };
  const { unenforceable } = landlockDenyEntries({ policy: p, env: ENV, cwd: "/" });
  assert.deepEqual(unenforceable.map((u) => [u.source, u.glob]), [[
    "files.read.deny",
    "${NOPE}/x/**",
  ]]);
  assert.match(unenforceable[0]?.reason ?? "", /Unset variable "NOPE"/);
  const plan = landlockPlanFor({ policy: p, env: ENV, cwd: "/", abi: 7, host: HOST });
  assert.equal(plan.unenforceable[0]?.glob, "${NOPE}/x/**");
});

Deno.test("landlockNotices() says what Landlock walls off, names each rule it cannot enforce, and what this kernel lacks", async () => {
  const block = await policy("block");
  const plan = landlockPlanFor({ policy: block, env: ENV, cwd: "/", abi: 7, host: HOST });
  const notices = landlockNotices({ plan, reason: null, policy: block });
  assert.equal(notices[0]?.type, "info");
  assert.match(
    notices[0]?.message ?? "",
    /^Landlock \(ABI 7, \d+ rules\) walls off Sentry's own files and the policy's deny lists(; [^;]+)*; the agent cannot signal or trace processes outside its own tree$/,
  );
  const warn = notices.find((n) => n.message.startsWith("Landlock cannot enforce"));
  assert.equal(warn?.type, "warn");
  assert.match(warn?.message ?? "", /files\.read\.deny "\/proc\/\*\/environ" \(it is under \/proc/);
  assert.match(warn?.message ?? "", /files\.write\.deny "\/proc\/sys\/\*\*"/);
  assert.match(warn?.message ?? "", /; the seccomp supervisor still blocks them by path: /);
  // Under the wall of the other tiers, no supervisor: the notice names what holds them there.
  const beyond = "the fanotify guard (root) holds those it can mark, and the rest pause";
  const walled = landlockNotices({ plan, reason: null, policy: block, beyond });
  const moved = walled.find((n) => n.message.startsWith("Landlock cannot enforce"));
  assert.match(moved?.message ?? "", /; the fanotify guard \(root\) holds those it can mark, and/);
  assert.doesNotMatch(moved?.message ?? "", /seccomp supervisor/);

  const old: LandlockPlan = { ...plan, abi: 5, scoped: 0, unenforceable: [] };
  // A plan for mode pause walls no TCP port either.
  delete old.tcpDenied;
  const pause = landlockNotices({ plan: old, reason: null, policy: await policy("pause") });
  assert.deepEqual(pause.map((n) => n.type), ["info", "warn"]);
  assert.match(pause[0]?.message ?? "", /own files are walled off in mode block only\)$/);
  assert.match(pause[1]?.message ?? "", /ABI 5 has no signal scoping/);

  const none = landlockNotices({ plan: null, reason: "this kernel has no Landlock (ENOSYS)" });
  assert.equal(none.length, 1);
  assert.equal(none[0]?.type, "warn");
  assert.match(
    none[0]?.message ?? "",
    /^Landlock is not available \(this kernel has no Landlock \(ENOSYS\)\): the agent can signal Sentry/,
  );
});

/** Bin directories with a plain binary, an alias, an alternatives link and a multi-call one. */
const BINS: PlanHost = (() => {
  const files: Record<string, string> = {
    "/usr/bin/nc.openbsd": "file",
    "/usr/bin/nc": "/usr/bin/nc.openbsd",
    "/usr/bin/ssh": "file",
    "/usr/bin/slogin": "/usr/bin/ssh",
    "/usr/bin/busybox": "file",
    "/usr/bin/telnet": "/usr/bin/busybox",
    "/usr/bin/sh": "/usr/bin/busybox",
    "/usr/bin/ls": "/usr/bin/busybox",
    "/opt/tools/scp": "file",
  };
  const dirs = new Set(["/", "/usr", "/usr/bin", "/opt", "/opt/tools", "/home", "/home/u"]);
  return {
    realPath: (p) => {
      if (dirs.has(p)) return p;
      const f = files[p];
      return f === undefined ? null : f === "file" ? p : f;
    },
    typeOf: (p) =>
      dirs.has(p)
        ? "directory"
        : files[p] === undefined
        ? null
        : files[p] === "file"
        ? "file"
        : "symlink",
    list(dir) {
      if (!dirs.has(dir)) throw new Error("No such file or directory (os error 2)");
      const prefix = dir === "/" ? "/" : `${dir}/`;
      return [...Object.keys(files), ...dirs]
        .filter((p) => p !== dir && p.startsWith(prefix) && !p.slice(prefix.length).includes("/"))
        .map((p) => ({
          name: p.slice(prefix.length),
          type: dirs.has(p) ? "directory" : files[p] === "file" ? "file" : "symlink",
        }));
    },
  };
})();

async function withDeny(mode: ResolvedPolicy["mode"], deny: ResolvedPolicy["processes"]["deny"]) {
  const p = await policy(mode);
  p.resolved = { ...p.resolved, processes: { ...p.resolved.processes, deny } };
  return p;
}

Deno.test("deniedCommandEntries() walls the real binaries of denied commands on PATH in mode block", async () => {
  const p = await withDeny("block", [
    "nc",
    "ssh",
    "telnet",
    "scp",
    "/usr/bin/ls",
    { name: "curl", args: "-d" },
    { name: "x", path: "/opt/**" },
  ]);
  const env = { ...ENV, PATH: "/opt/tools:/usr/bin" };
  const { deny, unenforceable } = deniedCommandEntries({ policy: p, env, cwd: "/", host: BINS });
  assert.deepEqual(deny.map((d) => [d.glob, d.path]), [
    ["nc", "/usr/bin/nc.openbsd"],
    ["ssh", "/usr/bin/ssh"],
    ["scp", "/opt/tools/scp"],
    ["/usr/bin/ls", "/usr/bin/ls"],
  ]);
  assert.ok(deny.every((d) => d.group === "execute" && d.source === "processes.deny"));
  assert.deepEqual(unenforceable.map((u) => u.glob), [
    "telnet",
    JSON.stringify({ name: "curl", args: "-d" }),
    JSON.stringify({ name: "x", path: "/opt/**" }),
  ]);
  assert.match(unenforceable[0]?.reason ?? "", /multi-call/);
  for (const mode of ["monitor", "pause", "kill"] as const) {
    const other = deniedCommandEntries({
      policy: await withDeny(mode, ["nc"]),
      env,
      cwd: "/",
      host: BINS,
    });
    assert.deepEqual(other.deny, [], mode);
  }
  const plan = landlockPlanFor({ policy: p, env, cwd: "/", abi: 7, host: BINS });
  assert.ok((plan.denied.execute ?? []).some((d) => d.path === "/usr/bin/nc.openbsd"));
});

Deno.test("landlockTcpDeniedPorts() walls the ports the policy denies on every address, never one an allowed destination uses", () => {
  const policyOf = (yaml: string) => {
    const resolved = resolveLayers([{ source: "t", policy: parsePolicy(yaml, "t.yaml") }]);
    return { resolved, workspace: "/w", home: "/h" };
  };
  const open = policyOf(
    'name: t\nmode: block\nnetwork:\n  deny: [":25", ":6000-6002", "10.0.0.0/8:22"]\n',
  );
  assert.deepEqual(landlockTcpDeniedPorts(open), [[25, 25], [6000, 6002]]);
  const closed = policyOf(
    'name: t\nmode: block\nnetwork:\n  default: deny\n  allow: ["api.example.com:443", ":53", "10.1.2.3:8000-8001"]\ndatabase:\n  ports: [5432]\n',
  );
  const ranges = landlockTcpDeniedPorts(closed);
  const walled = (p: number) => ranges.some(([lo, hi]) => lo <= p && p <= hi);
  for (const p of [443, 53, 8000, 8001, 5432]) assert.equal(walled(p), false, `port ${p}`);
  for (const p of [1, 22, 80, 52, 444, 7999, 8002, 65535]) {
    assert.equal(walled(p), true, `port ${p}`);
  }
  const anyHost = policyOf(
    'name: t\nmode: block\nnetwork:\n  default: deny\n  allow: ["example.com"]\n',
  );
  assert.deepEqual(landlockTcpDeniedPorts(anyHost), [], "a host with no port may use every port");
  const monitor = policyOf('name: t\nmode: monitor\nnetwork:\n  deny: [":25"]\n');
  assert.deepEqual(landlockTcpDeniedPorts(monitor), [], "only mode block walls");
});
