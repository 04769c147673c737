/**
 * An exec through a descriptor on the seccomp tier: a memfd or a deleted file run with fexecve
 * (execveat(fd, "", AT_EMPTY_PATH)) or through `/proc/self/fd/N` is decided by the policy and
 * journaled as a `proc.exec` that names what ran (`/memfd:innocent (deleted)`), in mode block
 * failed with EACCES before it runs, as root and as uid 65534.
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import type { AgentEvent } from "../src/events/mod.ts";
import { seccompAvailability } from "../src/platform/mod.ts";
import { type Sandbox, withSandbox } from "./_helpers.ts";
import { NOBODY_SKIP, nobodyHome, sentryAsNobody } from "./_nobody.ts";

/** The system python3: a user-installed one is out of reach of uid 65534. */
const PYTHON = "/usr/bin/python3";
/** The program copied into the memfd and the deleted file: it proves it ran by a marker. */
const TOUCH = "/usr/bin/touch";

const available = seccompAvailability();
const why = !available.ok ? available.reason : null;
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the seccomp fd exec tests: ${why}`);
}

const whyNobody = why ?? NOBODY_SKIP;

/**
 * The agent: three children each exec a copy of touch through a descriptor (a memfd with
 * fexecve, the same memfd through /proc/self/fd/N, a deleted file with fexecve), named
 * "innocent", to create a marker. It prints, per way, the errno the exec failed with (null if
 * it ran) and whether the marker exists.
 */
function agentSource(dir: string): string {
  return `
import json, os, sys
DIR = ${JSON.stringify(dir)}
TOUCH = ${JSON.stringify(TOUCH)}
program = open(TOUCH, "rb").read()
def memfd():
    fd = os.memfd_create("innocent", 0)
    os.write(fd, program)
    return fd
def deleted():
    path = os.path.join(DIR, "tool")
    with open(path, "wb") as f:
        f.write(program)
    os.chmod(path, 0o755)
    fd = os.open(path, os.O_RDONLY)
    os.unlink(path)
    return fd
ways = {
    "fexecve_memfd": lambda fd, argv: os.execve(fd, argv, {}),
    "procfd_memfd": lambda fd, argv: os.execve(f"/proc/self/fd/{fd}", argv, {}),
    "fexecve_deleted": lambda fd, argv: os.execve(fd, argv, {}),
}
out = {}
for name, run in ways.items():
    fd = deleted() if name.endswith("deleted") else memfd()
    marker = os.path.join(DIR, name + ".ran")
    r, w = os.pipe()
    pid = os.fork()
    if pid == 0:
        os.close(r)
        try:
            run(fd, ["innocent", marker])
        except OSError as e:
            os.write(w, str(e.errno).encode())
        os._exit(0)
    os.close(w)
    failed = os.read(r, 64).decode()
    os.close(r)
    os.waitpid(pid, 0)
    os.close(fd)
    out[name] = [int(failed) if failed else None, os.path.exists(marker)]
# A PATH search miss: the kernel's ENOENT, and no event (nothing ran).
pid = os.fork()
if pid == 0:
    try:
        os.execve("/nonexistent/innocent", ["innocent", "miss"], {})
    except OSError as e:
        os._exit(e.errno)
    os._exit(0)
out["miss"] = [os.waitstatus_to_exitcode(os.waitpid(pid, 0)[1]), False]
print(json.dumps(out))
`;
}

/** A policy that lets only python3 run: a memfd is in no allow list. */
function policyText(mode: string): string {
  return `name: fd-exec\nextends: none\nmode: ${mode}\nprocesses: { allow: [python3] }\n`;
}

function lastJson(stdout: string): Record<string, [number | null, boolean]> {
  return JSON.parse(stdout.trim().split("\n").at(-1) ?? "{}");
}

/** The exec events of the three ways, by the path they name. */
function fdExecs(events: AgentEvent[]): AgentEvent[] {
  return events.filter((e) => e.kind === "proc.exec" && e.target.startsWith("innocent "));
}

function assertBlocked(out: Record<string, [number | null, boolean]>, events: AgentEvent[]) {
  for (const way of ["fexecve_memfd", "procfd_memfd", "fexecve_deleted"]) {
    assert.deepEqual(out[way], [13, false], `${way}: EACCES, and the program never ran`);
  }
  assert.deepEqual(out.miss, [2, false], "a file that is not there still fails with ENOENT");
  const execs = fdExecs(events).filter((e) => e.target !== "innocent miss");
  assert.equal(fdExecs(events).length, execs.length, "a miss is no event");
  const paths = execs.map((e) => e.detail.path);
  assert.equal(execs.length, 3, JSON.stringify(paths));
  assert.deepEqual(
    paths.filter((p) => p === "/memfd:innocent (deleted)").length,
    2,
    `both memfd execs name the memfd: ${JSON.stringify(paths)}`,
  );
  assert.ok(
    paths.some((p) => typeof p === "string" && /\/tool \(deleted\)$/.test(p)),
    `the deleted file's exec names it: ${JSON.stringify(paths)}`,
  );
  for (const e of execs) {
    assert.equal(e.verdict, "deny", JSON.stringify(e));
    assert.equal(e.response, "block", JSON.stringify(e));
    assert.equal(e.detail.blocked, "EACCES", JSON.stringify(e));
    assert.equal(e.detail.result, "failed", JSON.stringify(e));
  }
}

/** Runs the agent under the seccomp tier with `policy`, as root (the sandbox's user). */
function underSeccomp(sb: Sandbox, policy: string, agent: string) {
  return sb.sentry([
    "run",
    "--sensor",
    "seccomp",
    "--no-api",
    "--no-rollback",
    "--policy",
    policy,
    "--",
    PYTHON,
    agent,
  ]);
}

Deno.test({
  name:
    "seccomp block mode fails an exec of a memfd or a deleted file with EACCES and journals it as a blocked proc.exec",
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      const policy = await sb.write("policy.yaml", policyText("block"));
      const agent = await sb.write("agent.py", agentSource(sb.workspace));
      const run = await underSeccomp(sb, policy, agent);
      assert.equal(run.code, 0, run.stderr);
      const events = await sb.events();
      assertBlocked(lastJson(run.stdout), events);
    });
  },
});

Deno.test({
  name:
    "seccomp monitor mode lets an exec of a memfd or a deleted file run and journals it, denied by an allow list",
  ignore: why !== null,
  async fn() {
    await withSandbox(async (sb) => {
      const policy = await sb.write("policy.yaml", policyText("monitor"));
      const agent = await sb.write("agent.py", agentSource(sb.workspace));
      const run = await underSeccomp(sb, policy, agent);
      assert.equal(run.code, 0, run.stderr);
      const out = lastJson(run.stdout);
      for (const way of ["fexecve_memfd", "procfd_memfd", "fexecve_deleted"]) {
        assert.deepEqual(out[way], [null, true], `${way}: the program ran`);
      }
      const execs = fdExecs(await sb.events());
      const paths = execs.map((e) => e.detail.path);
      assert.equal(execs.length, 3, JSON.stringify(paths));
      assert.equal(paths.filter((p) => p === "/memfd:innocent (deleted)").length, 2);
      for (const e of execs) {
        assert.equal(e.verdict, "deny", JSON.stringify(e));
        assert.equal(e.detail.blocked, undefined, JSON.stringify(e));
        assert.notEqual(e.detail.result, "failed", JSON.stringify(e));
      }
      // A processes.deny-only policy (default allow) lets it run, as on the other tiers.
      const open = await sb.write(
        "open.yaml",
        "name: fd-exec-open\nextends: none\nmode: block\nprocesses: { deny: [nc] }\n",
      );
      for (const way of ["fexecve_memfd", "procfd_memfd", "fexecve_deleted"]) {
        await Deno.remove(join(sb.workspace, `${way}.ran`));
      }
      const allowed = await underSeccomp(sb, open, agent);
      assert.equal(allowed.code, 0, allowed.stderr);
      const ran = lastJson(allowed.stdout);
      for (const way of ["fexecve_memfd", "procfd_memfd", "fexecve_deleted"]) {
        assert.deepEqual(ran[way], [null, true], `${way}: allowed by a deny-only policy`);
      }
      const logged = fdExecs(await sb.events());
      assert.equal(logged.length, 3, JSON.stringify(logged.map((e) => e.detail.path)));
      for (const e of logged) assert.equal(e.verdict, "allow", JSON.stringify(e));
    });
  },
});

// As uid 65534

Deno.test({
  name:
    "seccomp block mode as uid 65534 fails an exec of a memfd or a deleted file with EACCES and journals it",
  ignore: whyNobody !== null,
  async fn() {
    const home = await nobodyHome("sentry-fdexec-", async ({ dir, ws }) => {
      await Deno.writeTextFile(join(dir, "policy.yaml"), policyText("block"));
      await Deno.writeTextFile(join(dir, "agent.py"), agentSource(ws));
    });
    const { dir } = home;
    const sentry = (args: string[]) => sentryAsNobody(home, args);
    try {
      const out = await sentry([
        "run",
        "--sensor",
        "seccomp",
        "--no-api",
        "--no-rollback",
        "--policy",
        join(dir, "policy.yaml"),
        "--",
        PYTHON,
        join(dir, "agent.py"),
      ]);
      assert.equal(out.code, 0, out.stderr);
      const listed = await sentry(["events", "--session", "last", "--json", "--limit", "100000"]);
      assert.equal(listed.code, 0, listed.stderr);
      const events = listed.stdout.split("\n").filter((l) => l.trim() !== "").map((l) =>
        JSON.parse(l) as AgentEvent
      );
      assertBlocked(lastJson(out.stdout), events);
    } finally {
      await Deno.remove(dir, { recursive: true });
    }
  },
});
