import assert from "node:assert/strict";
import { AuditTargetConfig } from "../config/mod.ts";
import { compileTarget, findMatches, globToRegExp, parsePasswd, type ProcessInfo } from "./mod.ts";

function proc(pid: number, fields: Partial<ProcessInfo> = {}): ProcessInfo {
  return {
    pid,
    ppid: 1,
    comm: "python3",
    argv: ["python3"],
    uid: 1000,
    cgroups: ["/"],
    start: pid,
    ...fields,
  };
}

Deno.test("globToRegExp() matches * across slashes and takes regex characters literally", () => {
  assert.ok(globToRegExp("*claude*").test("/usr/bin/claude --print"));
  assert.ok(globToRegExp("a?c").test("abc"));
  assert.ok(!globToRegExp("a.c").test("abc"));
  assert.ok(globToRegExp("[x](y)+").test("[x](y)+"));
  assert.ok(!globToRegExp("claude").test("claude2"), "anchored");
});

Deno.test("findMatches() needs every selector, resolves users by name, and keeps the oldest tree roots", () => {
  const users = parsePasswd(
    "root:x:0:0::/root:/bin/sh\nann:x:1000:1000::/home/ann:/bin/bash\n# junk\n",
  );
  assert.deepEqual([...users], [["root", 0], ["ann", 1000]]);
  const target = AuditTargetConfig.parse({
    name: "claude",
    process: "node",
    cmdline: "*claude*",
    user: "ann",
    cgroup: "*/user@1000.service/*",
  });
  const cg = ["/user.slice/user-1000.slice/user@1000.service/app.slice/x.scope"];
  const root = proc(50, {
    comm: "node",
    argv: ["node", "/opt/claude/cli.js"],
    cgroups: cg,
    start: 9,
  });
  const child = proc(60, {
    ppid: 50,
    comm: "node",
    argv: ["node", "/opt/claude/cli.js", "--worker"],
    cgroups: cg,
  });
  const older = proc(70, {
    comm: "node",
    argv: ["/usr/bin/node", "claude"],
    cgroups: cg,
    start: 1,
  });
  const otherUser = proc(80, { comm: "node", argv: ["node", "claude"], uid: 0, cgroups: cg });
  const otherName = proc(90, { comm: "python3", argv: ["python3", "claude"], cgroups: cg });
  const kernel = proc(2, { comm: "node", argv: [], cgroups: cg });
  const found = findMatches(target, [root, child, older, otherUser, otherName, kernel], users);
  assert.deepEqual(found.map((p) => p.pid), [70, 50], "the child is part of its root's tree");
  assert.deepEqual(
    findMatches({ ...target, max_matches: 1 }, [root, older], users).map((p) => p.pid),
    [70],
  );
  assert.ok(!compileTarget({ ...target, user: "nobody-here" }, users).matches(root));
  assert.ok(compileTarget({ ...target, user: 1000 }, users).matches(root));
  // The name matches comm, or argv[0]'s base name when comm is truncated.
  const long = proc(99, {
    comm: "claude-code-age",
    argv: ["/opt/bin/claude-code-agent"],
    cgroups: cg,
  });
  assert.ok(
    compileTarget(AuditTargetConfig.parse({ name: "x", process: "claude-code-agent" }), users)
      .matches(long),
  );
});
