import assert from "node:assert/strict";
import { join } from "node:path";
import { decodeWaitStatus } from "./prctl_linux.ts";

// The FFI calls run in a child Deno process: making the test runner a subreaper, or reaping its
// children, would leak into the other tests.

const PRCTL_URL = new URL("./prctl_linux.ts", import.meta.url).href;
const PROC_URL = new URL("./proc_linux.ts", import.meta.url).href;
const CHILD_TIMEOUT_MS = 20_000;

/**
 * Runs a TypeScript script in `deno run -A` (optionally under a wrapper command such as python3),
 * killed after `CHILD_TIMEOUT_MS`, and returns the JSON object on the last line it prints.
 */
async function runScript(
  body: string,
  wrap: (denoArgv: string[]) => string[] = (argv) => argv,
): Promise<Record<string, unknown>> {
  const dir = await Deno.makeTempDir({ prefix: "sentry_prctl_" });
  try {
    const script = join(dir, "child.ts");
    const header = `import * as prctl from "${PRCTL_URL}";\n` +
      `import { readStat } from "${PROC_URL}";\n` +
      "const sleep = (ms: number) => new Promise((r) => setTimeout(r, ms));\n" +
      "async function waitState(pid: number, state: string): Promise<void> {\n" +
      "  const deadline = Date.now() + 5000;\n" +
      "  while (readStat(pid)?.state !== state && Date.now() < deadline) await sleep(10);\n" +
      "}\n" +
      "void sleep; void waitState;\n";
    await Deno.writeTextFile(script, header + body);
    const argv = wrap([Deno.execPath(), "run", "-A", "--no-config", "--no-lock", script]);
    const [cmd = "", ...args] = argv;
    const output = await new Deno.Command(cmd, {
      args,
      cwd: dir,
      stdout: "piped",
      stderr: "piped",
      stdin: "null",
      signal: AbortSignal.timeout(CHILD_TIMEOUT_MS),
    }).output();
    const stdout = new TextDecoder().decode(output.stdout);
    const last = stdout.split(/\r?\n/).filter((line) => line.startsWith("{")).at(-1);
    if (!output.success || last === undefined) {
      throw new Error(
        `Child script failed (${output.code}): ${stdout}${new TextDecoder().decode(output.stderr)}`,
      );
    }
    return JSON.parse(last);
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
}

Deno.test("decodeWaitStatus() decodes exits, deaths by signal and stops", () => {
  assert.deepEqual(decodeWaitStatus(0), { code: 0, signal: null });
  assert.deepEqual(decodeWaitStatus(3 << 8), { code: 3, signal: null });
  assert.deepEqual(decodeWaitStatus(9), { code: null, signal: 9 });
  assert.deepEqual(decodeWaitStatus(0x80 | 11), { code: null, signal: 11 }); // with core dump
  assert.deepEqual(decodeWaitStatus((19 << 8) | 0x7f), { code: null, signal: null }); // stopped
  assert.deepEqual(decodeWaitStatus(0xffff), { code: null, signal: null }); // continued
});

Deno.test("a subreaper adopts a double-forked grandchild and reaps it with its exit code", async () => {
  const result = await runScript(`
const out: Record<string, unknown> = { self: Deno.pid };
out.available = prctl.ffiAvailable();
out.before = prctl.isChildSubreaper();
out.set = prctl.setChildSubreaper();
out.after = prctl.isChildSubreaper();

async function orphan(seconds: number): Promise<number> {
  // The subshell backgrounds sleep and exits, so sleep is orphaned before sh exits.
  const sh = await new Deno.Command("sh", {
    args: ["-c", \`(sleep \${seconds} >/dev/null 2>&1 & echo $!); exit 0\`],
    stdout: "piped",
  }).output();
  return Number(new TextDecoder().decode(sh.stdout).trim());
}

const pid = await orphan(0.5);
out.orphanPpid = readStat(pid)?.ppid;
out.whileRunning = prctl.reapIfZombie(pid);
await waitState(pid, "Z");
out.zombieState = readStat(pid)?.state;
out.reaped = prctl.reapIfZombie(pid);
out.goneAfterReap = readStat(pid) === null;

const killed = await orphan(30);
Deno.kill(killed, "SIGKILL");
await waitState(killed, "Z");
out.killed = prctl.reapIfZombie(killed);

out.notMine = prctl.reapIfZombie(1);
out.notMineError = prctl.lastFfiError();
out.pgid = prctl.getProcessGroup(0);
out.statPgrp = readStat(Deno.pid)?.pgrp;
out.noSuchPgid = prctl.getProcessGroup(2 ** 22 + 1);
// stdin is /dev/null here, not a terminal.
out.notTty = prctl.setForegroundProcessGroup(0, out.pgid as number);
out.notTtyError = prctl.lastFfiError()?.message;
out.unset = prctl.setChildSubreaper(false) && prctl.isChildSubreaper() === false;
console.log(JSON.stringify(out));
`);
  assert.deepEqual(result.available, { ok: true });
  assert.equal(result.before, false);
  assert.equal(result.set, true);
  assert.equal(result.after, true);
  assert.equal(result.orphanPpid, result.self, "the orphan was re-parented to the subreaper");
  assert.equal(result.whileRunning, null);
  assert.equal(result.zombieState, "Z");
  assert.deepEqual(result.reaped, { code: 0, signal: null });
  assert.equal(result.goneAfterReap, true);
  assert.deepEqual(result.killed, { code: null, signal: 9 });
  assert.equal(result.notMine, null);
  assert.deepEqual(result.notMineError, {
    call: "waitpid(1)",
    errno: 10,
    message: "waitpid(1) failed: ECHILD",
  });
  assert.equal(result.pgid, result.statPgrp);
  assert.equal(result.noSuchPgid, null);
  assert.equal(result.notTty, false);
  assert.equal(result.notTtyError, `tcsetpgrp(0, ${result.pgid}) failed: ENOTTY`);
  assert.equal(result.unset, true);
});

Deno.test("setForegroundProcessGroup() hands a terminal to another group and takes it back", async () => {
  // python3 gives the script a pseudo-terminal as its controlling terminal (pty.fork), plus a
  // sleeping process in a group of its own in the same session, whose pgid is the last argument.
  const wrapper = [
    "import os,pty,sys,time",
    "pid,fd=pty.fork()",
    "if pid==0:",
    "  g=os.fork()",
    "  if g==0:",
    "    os.setpgid(0,0); time.sleep(30); os._exit(0)",
    "  os.setpgid(g,g)",
    "  os.execv(sys.argv[1],sys.argv[1:]+[str(g)])",
    "out=b''",
    "while True:",
    "  try: chunk=os.read(fd,4096)",
    "  except OSError: break",
    "  if not chunk: break",
    "  out+=chunk",
    "os.waitpid(pid,0)",
    "sys.stdout.write(out.decode())",
  ].join("\n");
  const result = await runScript(
    `
const other = Number(Deno.args.at(-1));
const own = prctl.getProcessGroup(0) ?? -1;
const out: Record<string, unknown> = { own, otherPgid: prctl.getProcessGroup(other) };
try {
  out.foregroundBefore = readStat(Deno.pid)?.tpgid;
  out.handOver = prctl.setForegroundProcessGroup(0, other);
  out.foregroundOther = readStat(Deno.pid)?.tpgid;
  // Now in the background: without SIGTTOU ignored, this call would stop the process, or
  // (as here, where the group is orphaned) fail with EIO.
  out.takeBack = prctl.setForegroundProcessGroup(0, own);
  out.foregroundAfter = readStat(Deno.pid)?.tpgid;
} finally {
  Deno.kill(other, "SIGKILL");
}
console.log(JSON.stringify(out));
`,
    (argv) => ["python3", "-c", wrapper, ...argv],
  );
  assert.notEqual(result.own, result.otherPgid);
  assert.equal(result.foregroundBefore, result.own);
  assert.equal(result.handOver, true);
  assert.equal(result.foregroundOther, result.otherPgid);
  assert.equal(result.takeBack, true);
  assert.equal(result.foregroundAfter, result.own);
});
