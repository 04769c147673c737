/**
 * End-to-end test of the eBPF tier's guard of other processes: an agent under `sentry run
 * --sensor ebpf` signals, traces and writes into processes outside its tree (decoys the test
 * started, and Sentry itself), and each attempt must be journaled as a denied `proc.control`,
 * with the outcome the agent itself saw. Whether the kernel let it through (no Landlock scope)
 * or refused it (EPERM), the journal must say so, and the decoys must show it.
 * @module
 */
import assert from "node:assert/strict";
import type { AgentEvent } from "../src/events/mod.ts";
import { EbpfTracer } from "../src/platform/mod.ts";
import { EbpfSensor, ProcessTable, type SensorEvent } from "../src/sensors/mod.ts";
import { isGone, isStopped, PYTHON, pyWrite, waitFor, withSandbox } from "./_helpers.ts";

function ebpfUnavailable(): string | null {
  try {
    EbpfTracer.open({ ringBytes: 4096 }).close();
    return null;
  } catch (error) {
    return (error as Error).message;
  }
}

const UNAVAILABLE = ebpfUnavailable();
if (UNAVAILABLE !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the eBPF control tests: ${UNAVAILABLE}`);
}

/** errno names of the numbers the agent may report. */
const ERRNO: Record<number, string> = { 1: "EPERM", 3: "ESRCH", 14: "EFAULT" };

Deno.test({
  name:
    "the ebpf tier journals signals, a ptrace and a memory write aimed outside the tree as denied proc.control",
  ignore: UNAVAILABLE !== null,
  async fn() {
    await withSandbox(async (sb) => {
      // Two decoys outside the agent's tree: one to stop, one whose memory the agent writes.
      const stopDecoy = sb.spawnRaw("sleep", ["60"]);
      const marker = sb.path("tampered");
      const memDecoy = sb.spawnRaw(PYTHON, [
        "-S",
        "-c",
        `
import ctypes, os, time
buf = ctypes.create_string_buffer(b"clean!", 16)
${pyWrite(sb.path("mem.addr"), 'f"{os.getpid()} {ctypes.addressof(buf)}"')}
while True:
    if buf.value != b"clean!":
        ${pyWrite(marker, "buf.value.decode()")}
        break
    time.sleep(0.01)
time.sleep(60)
`,
      ]);
      const [memPid, addr] = (await sb.readWhenWritten("mem.addr")).split(" ").map(Number);
      assert.equal(memPid, memDecoy.pid);
      const agent = await sb.write(
        "agent.py",
        `
import ctypes, json, os, signal, subprocess, sys, time
libc = ctypes.CDLL(None, use_errno=True)
libc.ptrace.restype = ctypes.c_long
libc.ptrace.argtypes = [ctypes.c_long, ctypes.c_long, ctypes.c_void_p, ctypes.c_void_p]
libc.process_vm_writev.restype = ctypes.c_ssize_t
out = {"pid": os.getpid(), "ppid": os.getppid()}
def attempt(name, fn):
    try:
        fn()
        out[name] = 0
    except OSError as e:
        out[name] = e.errno
def call(name, r):
    out[name] = 0 if r >= 0 else ctypes.get_errno()
    return r
STOP, MEM, ADDR = ${stopDecoy.pid}, ${memPid}, ${addr}
# The tree's own processes: a child killed, and a zombie child killed before it is reaped.
child = subprocess.Popen(["sleep", "30"])
os.kill(child.pid, signal.SIGTERM)
child.wait()
zombie = os.fork()
if zombie == 0:
    os._exit(0)
time.sleep(0.2)
os.kill(zombie, signal.SIGKILL)
os.waitpid(zombie, 0)
os.kill(os.getpid(), 0)
# Outside the tree: a decoy and Sentry itself.
attempt("stop", lambda: os.kill(STOP, signal.SIGSTOP))
attempt("probe", lambda: os.kill(out["ppid"], 0))
# TODO(#11): the session folds events of one pid, kind and target within 2 s (Dedup): wait out
# the window until it keeps every proc.control.
time.sleep(2.2)
attempt("cont", lambda: os.kill(out["ppid"], signal.SIGCONT))
if call("attach", libc.ptrace(16, MEM, None, None)) == 0:
    os.waitpid(MEM, 0x40000000)  # __WALL: the tracee's stop
    call("detach", libc.ptrace(17, MEM, None, None))
time.sleep(2.2)  # TODO(#11): as above
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
data = ctypes.create_string_buffer(b"TAMPER", 8)
local = iovec(ctypes.cast(data, ctypes.c_void_p), 7)
remote = iovec(ADDR, 7)
call("writev", libc.process_vm_writev(MEM, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0))
${pyWrite(sb.path("agent.json"), "json.dumps(out)")}
`,
      );
      const run = await sb.sentry([
        "run",
        "--sensor",
        "ebpf",
        "--no-api",
        // A tamper that went through is still journaled as denied; monitor keeps the agent
        // running so the test sees every attempt (the guard's blocks are journaled in any mode).
        "--mode",
        "monitor",
        "--",
        PYTHON,
        agent,
      ], { timeoutMs: 30_000 });
      assert.equal(run.code, 0, run.stderr);
      const seen: Record<string, number> = JSON.parse(await sb.readWhenWritten("agent.json"));
      const events = await sb.events();
      const controls = events.filter((e) => e.kind === "proc.control");
      const context = () => `${JSON.stringify(seen)}\n${JSON.stringify(controls, null, 1)}`;

      /** The one proc.control event that matches, checked against what the agent saw. */
      const find = (
        name: string,
        match: Record<string, unknown>,
      ): AgentEvent => {
        const found = controls.filter((e) =>
          e.pid === seen.pid &&
          Object.entries(match).every(([k, v]) => e.detail[k] === v)
        );
        assert.equal(found.length, 1, `${name}: ${context()}`);
        const e = found[0] as AgentEvent;
        assert.equal(e.verdict, "deny", name);
        assert.equal(e.rule, "guard.process", name);
        assert.equal(e.sensor, "ebpf", name);
        const errno = seen[name];
        if (errno === 0) {
          assert.equal(e.detail.result, "ok", name);
          assert.equal(e.detail.blocked, undefined, name);
        } else {
          assert.equal(e.detail.result, "failed", name);
          assert.equal(e.detail.errno, ERRNO[errno ?? -1] ?? `errno ${errno}`, name);
          assert.equal(e.detail.blocked, errno === 1 ? "EPERM" : undefined, name);
          if (errno === 1) assert.equal(e.response, "block", name);
        }
        return e;
      };

      const stop = find("stop", { syscall: "kill", signal: "SIGSTOP", target_pid: stopDecoy.pid });
      assert.equal(stop.target, `pid ${stopDecoy.pid} (sleep)`);
      // What the journal says happened did happen: the decoy is stopped only if it went through.
      assert.equal(isStopped(stopDecoy.pid), seen.stop === 0, `the decoy's state: ${context()}`);

      const probe = find("probe", { syscall: "kill", signal: "0", target_pid: seen.ppid });
      assert.equal(probe.detail.probe, true);
      assert.match(probe.target, new RegExp(`^pid ${seen.ppid} \\(`));
      find("cont", { syscall: "kill", signal: "SIGCONT", target_pid: seen.ppid });

      find("attach", { syscall: "ptrace", request: "PTRACE_ATTACH", target_pid: memPid });
      if (seen.attach === 0) {
        find("detach", { syscall: "ptrace", request: "PTRACE_DETACH", target_pid: memPid });
      }

      find("writev", { syscall: "process_vm_writev", target_pid: memPid });
      if (seen.writev === 0) {
        assert.equal(await sb.readWhenWritten(marker, 5000), "TAMPER");
      } else {
        await new Promise((r) => setTimeout(r, 200));
        assert.equal(await Deno.stat(marker).catch(() => null), null, "the decoy's memory");
      }

      // Nothing else: the signals within the tree (a child, a zombie child, itself) are the
      // agent's own business.
      const expected = seen.attach === 0 ? 6 : 5;
      assert.equal(controls.length, expected, context());
      const report = await sb.report();
      const ebpf = report.sensors.find((s) => s.sensor === "ebpf");
      assert.equal(ebpf?.dropped, 0);
      assert.ok(
        !(ebpf?.blindSpots ?? []).some((b) => b.id === "undecodable"),
        JSON.stringify(ebpf),
      );
    });
  },
});

Deno.test({
  name: "the ebpf tier journals a pidfd signal and a kill of a process group outside the tree",
  ignore: UNAVAILABLE !== null,
  async fn() {
    await withSandbox(async (sb) => {
      // A decoy that leads a process group of its own, outside the agent's session.
      const decoy = sb.spawnRaw(PYTHON, [
        "-S",
        "-c",
        `import os, time\nos.setpgid(0, 0)\n${
          pyWrite(sb.path("decoy.ready"), "os.getpid()")
        }\ntime.sleep(60)`,
      ]);
      await sb.readWhenWritten("decoy.ready");
      const agent = await sb.write(
        "agent.py",
        `
import json, os, signal
out = {"pid": os.getpid()}
fd = os.pidfd_open(${decoy.pid})
for name, fn in [
    ("pidfd", lambda: signal.pidfd_send_signal(fd, signal.SIGUSR1)),
    ("group", lambda: os.kill(-${decoy.pid}, signal.SIGUSR2)),
]:
    try:
        fn()
        out[name] = 0
    except OSError as e:
        out[name] = e.errno
${pyWrite(sb.path("agent.json"), "json.dumps(out)")}
`,
      );
      const run = await sb.sentry(
        ["run", "--sensor", "ebpf", "--no-api", "--mode", "monitor", "--", PYTHON, agent],
        { timeoutMs: 30_000 },
      );
      assert.equal(run.code, 0, run.stderr);
      const seen: Record<string, number> = JSON.parse(await sb.readWhenWritten("agent.json"));
      const controls = (await sb.events()).filter((e) => e.kind === "proc.control");
      const context = `${JSON.stringify(seen)}\n${JSON.stringify(controls, null, 1)}`;
      const pidfd = controls.find((e) => e.detail.syscall === "pidfd_send_signal");
      assert.ok(pidfd, context);
      assert.equal(pidfd.detail.signal, "SIGUSR1");
      assert.equal(pidfd.detail.target_pid, decoy.pid);
      assert.equal(pidfd.detail.result, seen.pidfd === 0 ? "ok" : "failed");
      assert.equal(pidfd.rule, "guard.process");
      const group = controls.find((e) => e.detail.syscall === "kill");
      assert.ok(group, context);
      assert.equal(group.detail.signal, "SIGUSR2");
      assert.equal(group.detail.target_pid, -decoy.pid);
      assert.equal(group.detail.scope, "group");
      assert.deepEqual(group.detail.outside_pids, [decoy.pid]);
      assert.match(group.target, new RegExp(`^process group ${decoy.pid} \\(python`));
      assert.equal(group.verdict, "deny");
      assert.equal(group.detail.result, seen.group === 0 ? "ok" : "failed");
      // The decoy (which ignores neither signal) died of the first that went through.
      if (seen.pidfd === 0 || seen.group === 0) {
        await waitFor(() => isGone(decoy.pid), { what: "the decoy's end", timeoutMs: 5000 });
      }
    });
  },
});

Deno.test({
  name:
    "the ebpf sensor journals a SIGSTOP and a memory write that went through as ok, and they did",
  ignore: UNAVAILABLE !== null,
  async fn() {
    // No launcher here, so no Landlock scope: the kernel lets both through, as it would for an
    // agent on a host without Landlock.
    const dir = await Deno.makeTempDir({ prefix: "sentry-ebpf-control-" });
    const decoy = new Deno.Command("sleep", { args: ["60"] }).spawn();
    const memDecoy = new Deno.Command(PYTHON, {
      args: [
        "-S",
        "-c",
        `
import ctypes, os, sys, time
buf = ctypes.create_string_buffer(b"clean!", 16)
os.write(1, f"{ctypes.addressof(buf)}\\n".encode())
while buf.value == b"clean!":
    time.sleep(0.01)
${pyWrite(`${dir}/tampered`, "buf.value.decode()")}
time.sleep(60)
`,
      ],
      stdout: "piped",
    }).spawn();
    const agent = new Deno.Command(PYTHON, {
      args: [
        "-S",
        "-c",
        `
import ctypes, os, signal, sys
addr = int(sys.stdin.readline())
os.kill(${decoy.pid}, signal.SIGSTOP)
libc = ctypes.CDLL(None, use_errno=True)
libc.process_vm_writev.restype = ctypes.c_ssize_t
class iovec(ctypes.Structure):
    _fields_ = [("base", ctypes.c_void_p), ("len", ctypes.c_size_t)]
data = ctypes.create_string_buffer(b"TAMPER", 8)
local, remote = iovec(ctypes.cast(data, ctypes.c_void_p), 7), iovec(addr, 7)
n = libc.process_vm_writev(${memDecoy.pid}, ctypes.byref(local), 1, ctypes.byref(remote), 1, 0)
assert n == 7, ctypes.get_errno()
`,
      ],
      stdin: "piped",
    }).spawn();
    const tracer = EbpfTracer.open({ ringBytes: 1 << 20 });
    try {
      const reader = memDecoy.stdout.getReader();
      const addr = new TextDecoder().decode((await reader.read()).value).trim();
      reader.releaseLock();
      tracer.track(agent.pid);
      const writer = agent.stdin.getWriter();
      await writer.write(new TextEncoder().encode(`${addr}\n`));
      await writer.close();
      assert.equal((await agent.status).code, 0);
      const sensor = new EbpfSensor({
        tracer,
        table: new ProcessTable(() => null),
        databasePorts: new Set(),
      });
      const events: SensorEvent[] = [];
      const stopped = new AbortController();
      stopped.abort();
      await sensor.start((e) => events.push(e), stopped.signal);
      const controls = events.filter((e) => e.kind === "proc.control");
      assert.deepEqual(controls.map((e) => [e.pid, e.target, e.detail]), [
        [agent.pid, `pid ${decoy.pid} (sleep)`, {
          syscall: "kill",
          signal: "SIGSTOP",
          target_pid: decoy.pid,
          result: "ok",
        }],
        [agent.pid, `pid ${memDecoy.pid} (${tracer.describe(memDecoy.pid)?.comm})`, {
          syscall: "process_vm_writev",
          target_pid: memDecoy.pid,
          result: "ok",
        }],
      ]);
      assert.ok(isStopped(decoy.pid), "the decoy is stopped, as the journal says");
      const tampered = await waitFor(
        () => Deno.readTextFile(`${dir}/tampered`).catch(() => null),
        { what: "the decoy's memory to change" },
      );
      assert.equal(tampered.trim(), "TAMPER");
    } finally {
      tracer.close();
      for (const p of [decoy, memDecoy, agent]) {
        try {
          p.kill("SIGKILL");
        } catch {
          // Exited already.
        }
        await p.status;
      }
      await memDecoy.stdout.cancel().catch(() => {});
      await Deno.remove(dir, { recursive: true });
    }
  },
});
