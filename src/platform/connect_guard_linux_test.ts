import assert from "node:assert/strict";
import { ConnectGuardError, ConnectGuardProgram } from "./connect_guard_linux.ts";
import { GUARD_VERDICT, type GuardTables } from "./connect_guard_record.ts";

const ROOT = "/sys/fs/cgroup/unified";

function usable(): string | null {
  if (Deno.build.os !== "linux") return "not Linux";
  if (Deno.uid() !== 0) return "needs root";
  try {
    Deno.statSync(`${ROOT}/cgroup.procs`);
  } catch {
    return `no cgroup v2 mount at ${ROOT}`;
  }
  for (const tool of ["bpftool", "python3"]) {
    try {
      new Deno.Command(tool, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
    } catch {
      return `no ${tool}`;
    }
  }
  return null;
}

const skip = usable();
if (skip !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the connect guard's kernel tests: ${skip}`);
}

/** Allows everything but port 9 everywhere, and blocks 127.0.0.2 on every port. */
const TABLES: GuardTables = {
  tables: 2,
  prefixes: [
    { family: 4, addr: new Uint8Array(4), bits: 0, table: 0 },
    { family: 6, addr: new Uint8Array(16), bits: 0, table: 0 },
    { family: 4, addr: new Uint8Array([127, 0, 0, 2]), bits: 32, table: 1 },
  ],
  ports: [
    { table: 0, port: 0, bits: 0, verdict: GUARD_VERDICT.ALLOW },
    { table: 0, port: 9, bits: 16, verdict: GUARD_VERDICT.BLOCK },
    { table: 1, port: 0, bits: 0, verdict: GUARD_VERDICT.BLOCK },
  ],
};

const OPEN: GuardTables = {
  tables: 1,
  prefixes: TABLES.prefixes.slice(0, 2),
  ports: [{ table: 0, port: 0, bits: 0, verdict: GUARD_VERDICT.ALLOW }],
};

/** What bpftool lists attached to a cgroup directory. */
function attached(dir: string): string[] {
  const out = new Deno.Command("bpftool", { args: ["cgroup", "show", dir], stderr: "null" })
    .outputSync();
  return new TextDecoder().decode(out.stdout).split("\n").filter((l) => /guard_/.test(l));
}

/**
 * Connects from a python3 process moved into `dir`, and returns each connect's outcome: "ok",
 * or the errno's name.
 */
function connectFrom(dir: string, targets: [string, number][]): string[] {
  const py = `
import errno, os, socket, sys
open(sys.argv[1] + "/cgroup.procs", "w").write(str(os.getpid()))
for host, port in ${JSON.stringify(targets)}:
    s = socket.socket(socket.AF_INET6 if ":" in host else socket.AF_INET)
    try:
        s.connect((host, port)); print("ok")
    except OSError as e:
        print(errno.errorcode[e.errno])
    s.close()
`;
  const out = new Deno.Command("python3", { args: ["-c", py, dir], stderr: "inherit" })
    .outputSync();
  assert.ok(out.success);
  return new TextDecoder().decode(out.stdout).trim().split("\n");
}

Deno.test({
  name:
    "`ConnectGuardProgram` blocks a connect in its cgroup, swaps tables, and leaves nothing attached",
  ignore: skip !== null,
  fn() {
    const dir = `${ROOT}/sentry-guard-test-${Deno.pid}`;
    Deno.mkdirSync(dir);
    let guard: ConnectGuardProgram | null = null;
    try {
      guard = ConnectGuardProgram.open({ cgroupDir: dir, tables: TABLES });
      assert.equal(attached(dir).length, 4, "connect4, connect6, sendmsg4, sendmsg6");
      assert.equal(guard.generation, 0);
      assert.deepEqual(connectFrom(dir, [["127.0.0.1", 9], ["127.0.0.2", 1], ["::1", 9]]), [
        "EPERM",
        "EPERM",
        "EPERM",
      ]);
      const records: Uint8Array[] = [];
      guard.drain((bytes) => records.push(bytes.slice()));
      assert.equal(records.length, 3);
      assert.equal(guard.counters().blocked, 3);
      guard.replace(OPEN);
      assert.equal(guard.generation, 1);
      // Nothing listens on port 9: the kernel now refuses it for that reason only.
      assert.deepEqual(connectFrom(dir, [["127.0.0.1", 9]]), ["ECONNREFUSED"]);
      guard.replace(TABLES);
      assert.equal(guard.generation, 0);
      assert.deepEqual(connectFrom(dir, [["127.0.0.1", 9]]), ["EPERM"]);
      guard.close();
      assert.deepEqual(attached(dir), []);
      guard.close();
    } finally {
      guard?.close();
      Deno.removeSync(dir);
    }
  },
});

Deno.test({
  name:
    "`ConnectGuardProgram.open()` refuses a directory that is not a cgroup v2 one, and attaches nothing",
  ignore: skip !== null,
  fn() {
    const dir = Deno.makeTempDirSync();
    try {
      assert.throws(
        () => ConnectGuardProgram.open({ cgroupDir: dir, tables: TABLES }),
        (e: unknown) =>
          e instanceof ConnectGuardError && /Cannot attach "guard_connect4"/.test(e.message),
      );
      assert.throws(
        () => ConnectGuardProgram.open({ cgroupDir: `${dir}/missing`, tables: TABLES }),
        ConnectGuardError,
      );
    } finally {
      Deno.removeSync(dir, { recursive: true });
    }
  },
});
