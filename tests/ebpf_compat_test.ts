/**
 * End-to-end tests of two actions the eBPF tier once missed, made by a compiled C agent
 * (`fixtures/ebpf_abi_agent.c`): 32-bit `int 0x80` calls, whose numbers mean other calls on
 * x86_64 (every one is counted, and open, openat and connect are journaled), and sendmmsg
 * (journaled once per distinct address of each call, as the seccomp tier does).
 * @module
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { fileURLToPath } from "node:url";
import { EbpfTracer } from "../src/platform/mod.ts";
import { Listener, type Sandbox, withSandbox } from "./_helpers.ts";

const SOURCE = fileURLToPath(new URL("./fixtures/ebpf_abi_agent.c", import.meta.url));

/** Why the eBPF tier cannot run here, or null when it can. */
function ebpfUnavailable(): string | null {
  if (Deno.build.os !== "linux" || Deno.build.arch !== "x86_64") return "not x86_64 Linux";
  try {
    EbpfTracer.open({ ringBytes: 4096 }).close();
  } catch (error) {
    return (error as Error).message;
  }
  try {
    const cc = new Deno.Command("cc", { args: ["--version"], stdout: "null", stderr: "null" });
    if (!cc.outputSync().success) return "cc does not run";
  } catch {
    return "no C compiler (cc)";
  }
  return null;
}

const UNAVAILABLE = ebpfUnavailable();
if (UNAVAILABLE !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the eBPF ABI tests: ${UNAVAILABLE}`);
}
const ignore = UNAVAILABLE !== null;

/** Compiles the agent into the sandbox. */
async function buildAgent(sb: Sandbox): Promise<string> {
  const out = sb.path("ebpf_abi_agent");
  const cc = await new Deno.Command("cc", { args: ["-O1", "-o", out, SOURCE] }).output();
  assert.ok(cc.success, new TextDecoder().decode(cc.stderr));
  return out;
}

/** `sentry run --sensor ebpf` in monitor mode (nothing refused) of the agent with `args`. */
function runAgent(sb: Sandbox, agent: string, args: string[]) {
  return sb.sentry([
    "run",
    "--sensor",
    "ebpf",
    "--no-api",
    "--policy",
    "coding-agent",
    "--mode",
    "monitor",
    "--workspace",
    sb.workspace,
    "--",
    agent,
    ...args,
  ]);
}

Deno.test({
  name: "the ebpf tier counts every int 0x80 call of the tree and journals its opens and connects",
  ignore,
  async fn() {
    await withSandbox(async (sb) => {
      const agent = await buildAgent(sb);
      const listeners = [new Listener(), new Listener()];
      try {
        const notes = join(sb.workspace, "notes.txt");
        await Deno.writeTextFile(notes, "notes");
        const ports = listeners.map((l) => String(l.port));
        // A secret by its absolute path, and a file of the workspace (the cwd) by a relative one.
        const run = await runAgent(sb, agent, ["int80", sb.sshKey, "notes.txt", ...ports]);
        if (run.code === 3) {
          // deno-lint-ignore no-console
          console.warn("skipped: the kernel has no 32-bit syscalls (IA32 emulation is off)");
          return;
        }
        assert.equal(run.code, 0, run.stderr);
        const calls = Number(/int80 calls=(\d+)/.exec(run.stdout)?.[1]);
        assert.equal(calls, 5, run.stdout);
        const report = await sb.report();
        const ebpf = report.sensors.find((s) => s.sensor === "ebpf");
        assert.ok(ebpf, "the ebpf sensor's report");
        assert.equal(ebpf.dropped, 0);
        const compat = ebpf.blindSpots.find((s) => s.id === "compat_syscalls");
        assert.equal(compat?.count, calls, JSON.stringify(ebpf.blindSpots));
        const events = (await sb.events()).filter((e) => e.sensor === "ebpf");
        const read = (target: string) =>
          events.filter((e) => e.kind === "file.read" && e.target === target)
            .map((e) => [e.detail.syscall, e.detail.abi, e.verdict]);
        assert.deepEqual(read(sb.sshKey), [["open", "i386", "deny"]]);
        assert.deepEqual(read(notes), [["openat", "i386", "allow"]]);
        const connect = (port: string) =>
          events.filter((e) => e.kind === "net.connect" && e.target === `127.0.0.1:${port}`)
            .map((e) => [e.detail.syscall, e.detail.abi, e.detail.result]);
        assert.deepEqual(connect(ports[0]!), [["connect", "i386", "ok"]]);
        // socketcall(SYS_CONNECT), as a 32-bit libc on an old kernel connects.
        assert.deepEqual(connect(ports[1]!), [["connect", "i386", "ok"]]);
        assert.deepEqual(listeners.map((l) => l.accepted), [1, 1], "both connects were made");
      } finally {
        for (const l of listeners) await l.close();
      }
    });
  },
});

Deno.test({
  name: "the ebpf tier journals a sendmmsg once per distinct address of each call",
  ignore,
  async fn() {
    await withSandbox(async (sb) => {
      const agent = await buildAgent(sb);
      const run = await runAgent(sb, agent, ["mmsg", "8"]);
      assert.equal(run.code, 0, run.stderr);
      const m = /mmsg sent=(\d+) received=(\d+) ports=(\d+),(\d+),(\d+)/.exec(run.stdout);
      assert.ok(m, run.stdout);
      const [, sent, received, a, b, c] = m;
      assert.equal(sent, "11");
      assert.equal(received, "11", "every message was delivered");
      const events = (await sb.events()).filter((e) =>
        e.sensor === "ebpf" && e.kind === "net.connect" && e.detail.syscall === "sendmmsg"
      );
      // The first call sends 4 messages to each of two ports, the second 3 to a third port.
      assert.deepEqual(
        events.map((e) => e.target).sort(),
        [`127.0.0.1:${a}`, `127.0.0.1:${b}`, `127.0.0.1:${c}`].sort(),
      );
      assert.ok(events.every((e) => e.detail.via === "sendto" && e.detail.result === "ok"));
      // The sensor keeps one record per distinct address of a call: 8 messages, 2 events.
      const ebpf = (await sb.report()).sensors.find((s) => s.sensor === "ebpf");
      assert.ok((ebpf?.deduplicated ?? 0) >= 6, JSON.stringify(ebpf));
    });
  },
});
