import assert from "node:assert/strict";
import {
  ACCESS_FS as A,
  type DenyEntry,
  type DirEntry,
  type EntryType,
  FILE_ACCESS,
  groupAccess,
  landlockAllows,
  landlockAllowsOpen,
  type LandlockPlan,
  parseLandlockPlan,
  type PlanHost,
  planLandlock,
  type RightGroup,
  SCOPE,
} from "./landlock_plan.ts";

/**
 * A fake tree: `"/etc/"` is a directory, `"/bin -> /usr/bin"` a symlink, anything else a file.
 * Parents exist implicitly. Listing a directory in `unlistable` throws, as EACCES would.
 */
function fakeHost(spec: string[], unlistable: string[] = []): PlanHost & { paths: string[] } {
  const nodes = new Map<string, { type: EntryType; target?: string }>([["/", {
    type: "directory",
  }]]);
  const addParents = (path: string) => {
    const parts = path.split("/").filter(Boolean);
    for (let i = 1; i < parts.length; i++) {
      const p = "/" + parts.slice(0, i).join("/");
      if (!nodes.has(p)) nodes.set(p, { type: "directory" });
    }
  };
  for (const line of spec) {
    const [left, target] = line.split(" -> ");
    const path = (left as string).replace(/\/$/, "") || "/";
    addParents(path);
    if (target !== undefined) nodes.set(path, { type: "symlink", target });
    else nodes.set(path, { type: line.endsWith("/") ? "directory" : "file" });
  }
  const realPath = (path: string, depth = 0): string | null => {
    if (depth > 20) return null;
    let out = "/";
    const parts = path.split("/").filter(Boolean);
    for (let i = 0; i < parts.length; i++) {
      const next = out === "/" ? `/${parts[i]}` : `${out}/${parts[i]}`;
      const node = nodes.get(next);
      if (node === undefined) return null;
      if (node.type === "symlink") {
        const target = (node.target as string).startsWith("/")
          ? node.target as string
          : `${out === "/" ? "" : out}/${node.target}`;
        const resolved = realPath(target, depth + 1);
        if (resolved === null) return null;
        out = resolved;
      } else {
        if (i < parts.length - 1 && node.type !== "directory") return null;
        out = next;
      }
    }
    return out;
  };
  return {
    paths: [...nodes.keys()],
    realPath: (path) => realPath(path),
    typeOf: (path) => nodes.get(path)?.type ?? null,
    list(dir): DirEntry[] {
      if (unlistable.includes(dir)) throw new Error("Permission denied (os error 13)");
      if (nodes.get(dir)?.type !== "directory") throw new Error("Not a directory");
      const prefix = dir === "/" ? "/" : `${dir}/`;
      return [...nodes.entries()]
        .filter(([p]) => p !== "/" && p.startsWith(prefix) && !p.slice(prefix.length).includes("/"))
        .map(([p, n]) => ({ name: p.slice(prefix.length), type: n.type }));
    },
  };
}

function deny(group: RightGroup, ...paths: string[]): DenyEntry[] {
  return paths.map((path) => ({ group, source: `files.${group}.deny`, glob: path, path }));
}

/** The denied paths as globs: `/a/**` for a tree, `/a` for a directory without its entries. */
function denied(plan: LandlockPlan, group: RightGroup): string[] {
  return (plan.denied[group] ?? []).map((d) => (d.beneath ? `${d.path}/**` : d.path));
}

function ruleMap(plan: LandlockPlan): Record<string, number> {
  return Object.fromEntries(plan.rules.map((r) => [r.path, r.access]));
}

const READ = A.READ_FILE | A.READ_DIR;
const WRITE = groupAccess("write", 7);
const DELETE = A.REMOVE_FILE | A.REMOVE_DIR;

const TREE = [
  "/bin -> usr/bin",
  "/usr/bin/python3",
  "/usr/lib/x/",
  "/lib -> usr/lib",
  "/lib64 -> usr/lib64",
  "/usr/lib64/",
  "/etc/passwd",
  "/etc/shadow",
  "/etc/ssh/ssh_host_rsa_key",
  "/etc/ssh/ssh_host_rsa_key.pub",
  "/etc/ssh/sshd_config",
  "/etc/ssl/certs/",
  "/home/u/.ssh/id_rsa",
  "/home/u/.bashrc",
  "/home/u/.config/gcloud/creds",
  "/home/u/.config/git/config",
  "/home/u/ws/app.py",
  "/home/other/",
  "/tmp/",
  "/proc/1/environ",
  "/proc/sys/kernel/",
  "/dev/null",
  "/dev/sda",
  "/dev/pts/",
];

/**
 * The invariant the mapping must keep, checked on every path of the fake tree: a path gets the
 * group's rights iff it is not a denied path, not beneath one, and not an ancestor of one.
 */
function assertInvariant(
  plan: LandlockPlan,
  host: ReturnType<typeof fakeHost>,
  group: RightGroup,
) {
  const denied = plan.denied[group] ?? [];
  const under = (path: string, dir: string) =>
    path === dir || path.startsWith(dir === "/" ? "/" : `${dir}/`);
  const bits = groupAccess(group, plan.abi);
  for (const path of host.paths) {
    if (host.typeOf(path) === "symlink") continue;
    const isDir = host.typeOf(path) === "directory";
    const want = isDir ? bits : bits & FILE_ACCESS;
    if (want === 0) continue;
    const blocked = denied.some((d) =>
      (d.beneath ? under(path, d.path) : path === d.path) || under(d.path, path)
    );
    assert.equal(
      landlockAllows(plan, { path, access: want }),
      !blocked,
      `${group} on ${path} (denied: ${JSON.stringify(denied)})`,
    );
  }
}

Deno.test("planLandlock() grants a denied group on the siblings of every ancestor, never on the ancestors or the denied path", () => {
  const host = fakeHost(TREE);
  const plan = planLandlock({ abi: 7, deny: deny("read", "/home/u/.ssh/**"), host });
  const rules = ruleMap(plan);
  assert.deepEqual(denied(plan, "read"), ["/home/u/.ssh/**"]);
  // The groups with nothing denied are granted on / entirely.
  assert.equal(rules["/"], WRITE | DELETE);
  for (const sibling of ["/usr", "/etc", "/tmp", "/proc", "/dev", "/home/other", "/home/u/ws"]) {
    assert.equal(rules[sibling], READ, sibling);
  }
  // A file sibling carries file rights only (READ_DIR on a file is EINVAL in the kernel).
  assert.equal(rules["/home/u/.bashrc"], A.READ_FILE);
  for (const none of ["/home", "/home/u", "/home/u/.ssh", "/bin", "/lib"]) {
    assert.equal(rules[none], undefined, none);
  }
  assert.equal(plan.handledFs, READ | WRITE | DELETE);
  assert.equal(plan.scoped, SCOPE.SIGNAL | SCOPE.ABSTRACT_UNIX_SOCKET);
  assert.deepEqual(plan.unenforceable, []);
  assertInvariant(plan, host, "read");
  assert.ok(!landlockAllows(plan, { path: "/home/u/.ssh/id_rsa", access: A.READ_FILE }));
  assert.ok(landlockAllows(plan, { path: "/home/u/.ssh/id_rsa", access: A.WRITE_FILE }));
});

Deno.test("planLandlock() puts every rule's rights within what the ruleset handles, and file rules carry file rights only", () => {
  const host = fakeHost(TREE);
  const plan = planLandlock({
    abi: 7,
    deny: [
      ...deny("read", "/home/u/.ssh/**", "/etc/shadow"),
      ...deny("write", "/home/u/.bashrc", "/usr/**", "/etc/**"),
      ...deny("delete", "/home/u/.bashrc", "/usr/**"),
    ],
    host,
  });
  for (const rule of plan.rules) {
    assert.equal(rule.access & ~plan.handledFs, 0, rule.path);
    assert.ok(rule.access > 0, rule.path);
    if (host.typeOf(rule.path) !== "directory") {
      assert.equal(rule.access & ~FILE_ACCESS, 0, `file rule ${rule.path}`);
    }
    assert.notEqual(host.typeOf(rule.path), "symlink", rule.path);
  }
  // Deleting a file is a right on its directory: a file sibling gets nothing from DELETE.
  assert.equal(ruleMap(plan)["/home/u/.ssh"], WRITE & FILE_ACCESS | WRITE | DELETE);
  for (const group of ["read", "write", "delete"] as const) assertInvariant(plan, host, group);
});

Deno.test("planLandlock() follows symlinks in denied paths to the real ones, and skips symlink entries", () => {
  const host = fakeHost(TREE);
  const plan = planLandlock({ abi: 7, deny: deny("write", "/bin/**"), host });
  assert.deepEqual(denied(plan, "write"), ["/usr/bin/**"]);
  const rules = ruleMap(plan);
  assert.equal(rules["/usr/lib"], WRITE);
  assert.equal(rules["/bin"], undefined, "a symlink never gets a rule (the kernel says EINVAL)");
  assert.equal(rules["/usr"], undefined);
  assertInvariant(plan, host, "write");
});

Deno.test("planLandlock() denies an exact directory without its entries, and a missing path from its first missing component", () => {
  const host = fakeHost(TREE);
  const plan = planLandlock({
    abi: 7,
    deny: deny("read", "/home/u/.config", "/home/u/.config/gh/hosts.yml", "/nowhere/at/all/**"),
    host,
  });
  const rules = ruleMap(plan);
  // Only the directory itself: its entries keep the group (as the glob, which matches it only).
  assert.equal(rules["/home/u/.config/gcloud"], READ);
  assert.equal(rules["/home/u/.config/git"], READ);
  assert.equal(rules["/home/u/.config"], undefined);
  assert.deepEqual(denied(plan, "read"), [
    "/home/u/.config",
    "/home/u/.config/gh/**",
    "/nowhere/**",
  ]);
  assert.ok(!landlockAllows(plan, { path: "/home/u/.config/gh/hosts.yml", access: A.READ_FILE }));
  assert.ok(!landlockAllows(plan, { path: "/nowhere/at/all/x", access: A.READ_FILE }));
  assertInvariant(plan, host, "read");
});

Deno.test("planLandlock() expands a wildcard last segment against the directory, which stays an ancestor", () => {
  const host = fakeHost(TREE);
  const plan = planLandlock({ abi: 7, deny: deny("read", "/etc/ssh/ssh_host_*"), host });
  assert.deepEqual(denied(plan, "read"), [
    "/etc/ssh",
    "/etc/ssh/ssh_host_rsa_key/**",
    "/etc/ssh/ssh_host_rsa_key.pub/**",
  ]);
  const rules = ruleMap(plan);
  assert.equal(rules["/etc/ssh/sshd_config"], A.READ_FILE);
  assert.equal(rules["/etc/passwd"], A.READ_FILE);
  // A key created later in /etc/ssh gets no rights: the directory itself has none.
  assert.ok(!landlockAllows(plan, { path: "/etc/ssh/ssh_host_new_key", access: A.READ_FILE }));
  const none = planLandlock({ abi: 7, deny: deny("read", "/dev/nvme*"), host });
  assert.deepEqual(denied(none, "read"), ["/dev"], "no match: the directory is still an ancestor");
  assert.equal(ruleMap(none)["/dev/sda"], A.READ_FILE);
  const lib = planLandlock({ abi: 7, deny: deny("write", "/lib*/**"), host });
  assert.deepEqual(denied(lib, "write"), ["/", "/usr/lib/**", "/usr/lib64/**"]);
  assert.equal(ruleMap(lib)["/usr/bin"], WRITE);
});

Deno.test("planLandlock() lists what Landlock cannot express, with the rule and why", () => {
  const host = fakeHost(TREE);
  const plan = planLandlock({
    abi: 7,
    deny: [
      ...deny("read", "/proc/*/environ", "**/.env", "/home/*/.ssh/id_rsa", "/x/{1..3}/**"),
      ...deny("write", "/proc/sys/**"),
      ...deny("read", "/home/u/.ssh/**"),
    ],
    host,
  });
  const reasons = Object.fromEntries(plan.unenforceable.map((u) => [u.glob, u.reason]));
  assert.match(reasons["/proc/*/environ"] ?? "", /under \/proc/);
  assert.match(reasons["/proc/sys/**"] ?? "", /under \/proc/);
  assert.match(reasons["**/.env"] ?? "", /does not start at \//);
  assert.match(reasons["/home/*/.ssh/id_rsa"] ?? "", /wildcard before its last path segment/);
  assert.match(reasons["/x/{1..3}/**"] ?? "", /brace group without alternatives/);
  assert.equal(
    plan.unenforceable.find((u) => u.glob === "/proc/sys/**")?.source,
    "files.write.deny",
  );
  // The rest is planned all the same; /proc is never made an ancestor.
  assert.deepEqual(denied(plan, "read"), ["/home/u/.ssh/**"]);
  assert.equal(ruleMap(plan)["/proc"], READ);
  assert.equal(ruleMap(plan)["/"], WRITE | DELETE);
});

Deno.test("planLandlock() expands brace alternatives, escapes stay literal, and a covered path adds no ancestors", () => {
  const host = fakeHost([...TREE, "/home/we ird*/.ssh/key", "/home/we irdo/"]);
  const plan = planLandlock({
    abi: 7,
    deny: deny(
      "write",
      "/{,private/}etc/**",
      "/home/we\\ ird\\*/.ssh/**",
      "/home/u/.config/**",
      "/home/u/.config/gcloud/**",
    ),
    host,
  });
  assert.deepEqual(denied(plan, "write"), [
    "/etc/**",
    "/home/u/.config/**",
    "/home/we ird*/.ssh/**",
    "/private/**",
  ]);
  assert.equal(ruleMap(plan)["/home/we irdo"], WRITE, "the escaped * matched nothing else");
  assert.equal(ruleMap(plan)["/home/u/.config/gcloud"], undefined);
  assertInvariant(plan, host, "write");
});

Deno.test("planLandlock() drops a deny whose ancestor cannot be listed, and plans the others", () => {
  const host = fakeHost(TREE, ["/home/other"]);
  const plan = planLandlock({
    abi: 7,
    deny: deny("read", "/home/other/.ssh/**", "/home/u/.ssh/**"),
    host,
  });
  assert.equal(plan.unenforceable.length, 1);
  assert.equal(plan.unenforceable[0]?.glob, "/home/other/.ssh/**");
  assert.match(
    plan.unenforceable[0]?.reason ?? "",
    /cannot list "\/home\/other": Permission denied/,
  );
  assert.deepEqual(denied(plan, "read"), ["/home/u/.ssh/**"]);
  assert.equal(ruleMap(plan)["/home/other"], READ, "then it is a sibling like any other");
});

Deno.test("planLandlock() fits the ABI: REFER from 2, TRUNCATE from 3, scopes from 6", () => {
  const host = fakeHost(TREE);
  const entries = deny("write", "/usr/**");
  const v1 = planLandlock({ abi: 1, deny: entries, host });
  assert.equal(v1.handledFs & (A.REFER | A.TRUNCATE), 0);
  assert.equal(v1.scoped, 0);
  assert.ok(v1.rules.every((r) => (r.access & (A.REFER | A.TRUNCATE)) === 0));
  const v2 = planLandlock({ abi: 2, deny: entries, host });
  assert.equal(v2.handledFs & A.REFER, A.REFER);
  assert.equal(v2.handledFs & A.TRUNCATE, 0);
  const v5 = planLandlock({ abi: 5, deny: entries, host });
  assert.equal(v5.handledFs & A.TRUNCATE, A.TRUNCATE);
  assert.equal(v5.scoped, 0);
  assert.equal(v5.handledFs & (A.EXECUTE | A.IOCTL_DEV), 0, "exec and ioctl stay unhandled");
  assert.throws(() => planLandlock({ abi: 0, deny: entries, host }), RangeError);
});

Deno.test("planLandlock() of `/**` grants the group nowhere", () => {
  const host = fakeHost(TREE);
  const plan = planLandlock({ abi: 7, deny: deny("delete", "/**"), host });
  assert.ok(plan.rules.every((r) => (r.access & DELETE) === 0));
  assert.deepEqual(ruleMap(plan)["/"], READ | WRITE);
  assert.ok(!landlockAllows(plan, { path: "/tmp/x", access: A.REMOVE_FILE }));
});

Deno.test("landlockAllowsOpen() models the kernel: MAKE_REG on the directory for a new file, TRUNCATE for O_TRUNC", () => {
  const host = fakeHost(TREE);
  const plan = planLandlock({
    abi: 7,
    deny: [...deny("read", "/home/u/.ssh/**"), ...deny("write", "/home/u/.bashrc")],
    host,
  });
  const open = (
    path: string,
    flags: number,
    extra: Partial<{ directory: boolean; creates: boolean }> = {},
  ) => landlockAllowsOpen(plan, { path, flags, directory: false, creates: false, ...extra });
  assert.ok(!open("/home/u/.ssh/id_rsa", 0));
  assert.ok(open("/home/u/.ssh/id_rsa", 0o1), "write-only needs no read");
  assert.ok(!open("/home/u/.bashrc", 0o1));
  assert.ok(open("/home/u/.bashrc", 0));
  assert.ok(!open("/home/u/.ssh", 0, { directory: true }));
  assert.ok(open("/home/u/ws", 0, { directory: true }));
  // A new file directly in an ancestor: no MAKE_REG there.
  assert.ok(!open("/home/u/new.txt", 0o101, { creates: true }));
  assert.ok(open("/home/u/ws/new.txt", 0o1101, { creates: true }));
  assert.ok(open("/tmp/x", 0o1001));
});

Deno.test("parseLandlockPlan() reads back what planLandlock() wrote, and refuses a bad field by name", () => {
  const plan = planLandlock({
    abi: 7,
    deny: deny("read", "/home/u/.ssh/**"),
    host: fakeHost(TREE),
  });
  assert.deepEqual(parseLandlockPlan(JSON.stringify(plan)), plan);
  assert.throws(() => parseLandlockPlan("{"), SyntaxError);
  assert.throws(() => parseLandlockPlan("[]"), /Bad Landlock plan: "abi"/);
  const bad = (patch: Record<string, unknown>) => JSON.stringify({ ...plan, ...patch });
  assert.throws(() => parseLandlockPlan(bad({ abi: 0 })), /"abi"/);
  assert.throws(
    () => parseLandlockPlan(bad({ rules: [{ path: "/x", access: A.EXECUTE }] })),
    /rules\[0\]/,
    "a right the ruleset does not handle",
  );
  assert.throws(() => parseLandlockPlan(bad({ rules: [{ path: "x", access: 4 }] })), /rules\[0\]/);
  assert.throws(() => parseLandlockPlan(bad({ rules: [{ path: "/x", access: 0 }] })), /rules\[0\]/);
  assert.throws(() => parseLandlockPlan(bad({ denied: { read: [1] } })), /denied\.read/);
});

/** A small deterministic PRNG (mulberry32), so that a failure names its seed. */
function prng(seed: number): () => number {
  let a = seed;
  return () => {
    a = (a + 0x6d2b79f5) | 0;
    let t = Math.imul(a ^ (a >>> 15), 1 | a);
    t = (t + Math.imul(t ^ (t >>> 7), 61 | t)) ^ t;
    return ((t ^ (t >>> 14)) >>> 0) / 4294967296;
  };
}

Deno.test("planLandlock() keeps the invariant on 300 random trees and deny lists", () => {
  for (let seed = 1; seed <= 300; seed++) {
    const random = prng(seed);
    const pick = <T>(list: readonly T[]): T => list[Math.floor(random() * list.length)] as T;
    const names = ["a", "b", "c", "ab", ".x"];
    const spec: string[] = [];
    const dirs = ["/"];
    for (let i = 0; i < 25; i++) {
      const parent = pick(dirs);
      const path = `${parent === "/" ? "" : parent}/${pick(names)}`;
      if (spec.some((s) => s.replace(/\/$/, "").split(" -> ")[0] === path)) continue;
      const kind = random();
      if (kind < 0.45) {
        spec.push(`${path}/`);
        dirs.push(path);
      } else if (kind < 0.85) spec.push(path);
      else spec.push(`${path} -> ${pick(dirs)}`);
    }
    const host = fakeHost(spec);
    const entries: DenyEntry[] = [];
    for (let i = 0; i < 4; i++) {
      const base = `${pick(dirs) === "/" ? "" : pick(dirs)}/${pick(names)}`;
      const shape = random();
      const glob = shape < 0.4
        ? `${base}/**`
        : shape < 0.7
        ? base
        : `${base.replace(/[^/]*$/, "")}${pick(["a*", "*b", "?"])}`;
      entries.push(...deny(pick(["read", "write", "delete"] as const), glob));
    }
    const plan = planLandlock({ abi: 7, deny: entries, host });
    const where = `seed ${seed}: ${JSON.stringify(spec)} ${
      JSON.stringify(entries.map((e) => e.path))
    }`;
    assert.equal(new Set(plan.rules.map((r) => r.path)).size, plan.rules.length, where);
    for (const rule of plan.rules) {
      assert.equal(rule.access & ~plan.handledFs, 0, where);
      const type = host.typeOf(rule.path);
      assert.ok(type !== null && type !== "symlink", `${where}: rule on ${rule.path}`);
      if (type !== "directory") assert.equal(rule.access & ~FILE_ACCESS, 0, where);
    }
    for (const group of ["read", "write", "delete"] as const) assertInvariant(plan, host, group);
  }
});

Deno.test("planLandlock() takes EXECUTE from a denied binary only, and handles it only when something denies it", () => {
  const host = fakeHost([...TREE, "/usr/bin/nc", "/usr/bin/ls", "/usr/local/bin/tool"]);
  const none = planLandlock({ abi: 7, deny: deny("read", "/home/u/.ssh/**"), host });
  assert.equal(none.handledFs & A.EXECUTE, 0, "nothing denies exec: EXECUTE stays unhandled");
  const plan = planLandlock({
    abi: 7,
    deny: [{ group: "execute", source: "processes.deny", glob: "nc", path: "/usr/bin/nc" }],
    host,
  });
  assert.equal(plan.handledFs & A.EXECUTE, A.EXECUTE);
  assert.deepEqual(denied(plan, "execute"), ["/usr/bin/nc/**"]);
  assert.equal(landlockAllows(plan, { path: "/usr/bin/nc", access: A.EXECUTE }), false);
  assert.equal(landlockAllows(plan, { path: "/usr/bin/ls", access: A.EXECUTE }), true);
  assert.equal(landlockAllows(plan, { path: "/usr/bin/python3", access: A.EXECUTE }), true);
  assert.equal(landlockAllows(plan, { path: "/usr/local/bin/tool", access: A.EXECUTE }), true);
  assertInvariant(plan, host, "execute");
  // Reading the denied binary is still allowed: only exec is taken.
  assert.equal(landlockAllows(plan, { path: "/usr/bin/nc", access: A.READ_FILE }), true);
  const back = parseLandlockPlan(JSON.stringify(plan));
  assert.deepEqual(back.denied.execute, plan.denied.execute);
  // A plan written before the execute group reads back with none.
  const old = JSON.parse(JSON.stringify(none));
  delete old.denied.execute;
  assert.deepEqual(parseLandlockPlan(JSON.stringify(old)).denied.execute, []);
});
