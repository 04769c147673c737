import assert from "node:assert/strict";
import { EbpfTracer } from "./ebpf_linux.ts";
import { decodeControl, decodeRecord, EV } from "./ebpf_record.ts";

function unavailable(): string | null {
  try {
    EbpfTracer.open({ ringBytes: 4096 }).close();
    return null;
  } catch (error) {
    return (error as Error).message;
  }
}

const UNAVAILABLE = unavailable();
const ignore = UNAVAILABLE !== null;
if (ignore) {
  // deno-lint-ignore no-console
  console.warn(`skipping the EbpfTracer tests: ${UNAVAILABLE}`);
}

/** The bpf objects (programs, links, maps) this process holds, by their fd's readlink. */
function bpfFds(): number {
  let n = 0;
  for (const entry of Deno.readDirSync("/proc/self/fd")) {
    try {
      if (Deno.readLinkSync(`/proc/self/fd/${entry.name}`).startsWith("anon_inode:bpf")) n++;
    } catch {
      // Closed meanwhile.
    }
  }
  return n;
}

/** A python3 binary, not a wrapper script that would run other programs first. */
const PYTHON = (() => {
  try {
    Deno.statSync("/usr/bin/python3");
    return "/usr/bin/python3";
  } catch {
    return "python3";
  }
})();

/**
 * A python process that says "ready" once started, waits for a line on stdin, then opens
 * /dev/null `n` times and exits with os._exit: after the line, its only recorded actions are n
 * opens and one exit.
 */
function opener(n: number): Deno.ChildProcess {
  const code = [
    "import os, sys",
    "os.write(1, b'ready\\n')",
    "sys.stdin.readline()",
    `for _ in range(${n}):`,
    "    os.close(os.open('/dev/null', os.O_RDONLY))",
    "os._exit(0)",
  ].join("\n");
  return new Deno.Command(PYTHON, { args: ["-S", "-c", code], stdin: "piped", stdout: "piped" })
    .spawn();
}

/** Waits for the first line of a child's stdout. */
async function firstLine(child: Deno.ChildProcess): Promise<string> {
  const reader = child.stdout.getReader();
  const { value } = await reader.read();
  reader.releaseLock();
  return new TextDecoder().decode(value ?? new Uint8Array()).trim();
}

Deno.test({
  name: "EbpfTracer counts every record lost to a full ring buffer, exactly",
  ignore,
  async fn() {
    const N = 5000;
    const tracer = EbpfTracer.open({ ringBytes: 16384 });
    const child = opener(N);
    try {
      // Tracked once started: from here on its only actions are the opens and the exit.
      assert.equal(await firstLine(child), "ready");
      tracer.track(child.pid);
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
      await child.status;
      await child.stdout.cancel();
      // Nothing was read while the agent ran: the 16 KiB buffer overflowed.
      let opens = 0;
      let exits = 0;
      let records = 0;
      while (
        tracer.drain((bytes) => {
          records++;
          const r = decodeRecord(bytes);
          if (r.type === EV.OPEN && r.pid === child.pid) opens++;
          if (r.type === EV.EXIT && r.pid === child.pid) exits++;
        }) > 0
      );
      const counters = tracer.counters();
      assert.ok(counters.drops > 0, "the buffer must have overflowed");
      assert.equal(records, opens + exits, "only the agent's records");
      assert.equal(counters.emitted, records, "every record written was read");
      assert.equal(records + counters.drops, N + 1, "read plus lost is every action");
    } finally {
      tracer.close();
    }
  },
});

Deno.test({
  name: "EbpfTracer with a large buffer loses nothing, and follows children forked later",
  ignore,
  async fn() {
    const tracer = EbpfTracer.open();
    const code = "import os, sys, subprocess\nsys.stdin.readline()\n" +
      "subprocess.run(['/bin/sh', '-c', 'exec 3</dev/null'])\nos._exit(0)";
    const child = new Deno.Command(PYTHON, { args: ["-S", "-c", code], stdin: "piped" }).spawn();
    try {
      tracer.track(child.pid);
      assert.equal(tracer.isTracked(child.pid), true);
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
      await child.status;
      const types: number[] = [];
      const pids = new Set<number>();
      while (
        tracer.drain((bytes) => {
          const r = decodeRecord(bytes);
          types.push(r.type);
          pids.add(r.pid);
        }) > 0
      );
      assert.equal(tracer.counters().drops, 0);
      assert.ok(types.includes(EV.FORK) && types.includes(EV.EXEC));
      assert.ok(pids.size >= 2, "the child's own records");
      // A process leaves the kernel's table when it has exited.
      assert.equal(tracer.isTracked(child.pid), false);
    } finally {
      tracer.close();
    }
  },
});

Deno.test({
  name: "EbpfTracer.close() leaves no program, link or map behind",
  ignore,
  async fn() {
    const before = bpfFds();
    const tracer = EbpfTracer.open({ ringBytes: 4096 });
    assert.ok(bpfFds() > before, "the programs and maps are open");
    tracer.close();
    tracer.close();
    // Other test files run in this process (`--parallel`) and may hold a tracer a moment.
    let after = bpfFds();
    for (let i = 0; i < 50 && after !== before; i++) {
      await new Promise((r) => setTimeout(r, 20));
      after = bpfFds();
    }
    assert.equal(after, before);
  },
});

Deno.test({
  name: "EbpfTracer loads the libbpf a release binary embeds, from memfds, without the host's",
  ignore,
  async fn() {
    const { stageNativeLibs, unstageNativeLibs } = await import("../../scripts/compile.ts");
    const root = new URL("../../", import.meta.url).pathname;
    const missing = stageNativeLibs(root);
    try {
      if (missing.length > 0) {
        // deno-lint-ignore no-console
        console.warn(`cannot stage ${missing.join(", ")}: the embedded path is not tested`);
        return;
      }
      const code = [
        `import { EbpfTracer } from ${
          JSON.stringify(new URL("./ebpf_linux.ts", import.meta.url).href)
        };`,
        "const t = EbpfTracer.open({ ringBytes: 4096 });",
        "const maps = Deno.readTextFileSync('/proc/self/maps');",
        "t.close();",
        "console.log(JSON.stringify({",
        "  memfd: /memfd:libbpf\\.so\\.1/.test(maps),",
        "  host: /\\/libbpf\\.so\\.1/.test(maps.replace(/memfd:libbpf\\.so\\.1/g, '')),",
        "}));",
      ].join("\n");
      const out = await new Deno.Command(Deno.execPath(), {
        args: ["eval", code],
        env: { SENTRY_LIBBPF: "embedded" },
        stdout: "piped",
        stderr: "piped",
      }).output();
      const stderr = new TextDecoder().decode(out.stderr);
      assert.ok(out.success, stderr);
      const seen = JSON.parse(new TextDecoder().decode(out.stdout));
      assert.deepEqual(seen, { memfd: true, host: false }, stderr);
    } finally {
      unstageNativeLibs(root);
    }
  },
});

Deno.test({
  name:
    "EbpfTracer resolves a control's target in the kernel: the tree's threads inside, a pidfd's process outside",
  ignore,
  async fn() {
    const decoy = new Deno.Command("sleep", { args: ["30"] }).spawn();
    const code = [
      "import os, signal, sys, threading",
      "os.write(1, b'ready\\n')",
      "sys.stdin.readline()",
      "ev = threading.Event()",
      "th = threading.Thread(target=ev.wait)",
      "th.start()",
      "signal.pthread_kill(th.ident, 0)",
      "ev.set()",
      "th.join()",
      `fd = os.pidfd_open(${decoy.pid})`,
      "signal.pidfd_send_signal(fd, 0)",
      `os.kill(${decoy.pid}, 0)`,
      "os._exit(0)",
    ].join("\n");
    const child = new Deno.Command(PYTHON, {
      args: ["-S", "-c", code],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const tracer = EbpfTracer.open({ ringBytes: 1 << 20 });
    try {
      assert.equal(await firstLine(child), "ready");
      tracer.track(child.pid);
      const writer = child.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
      assert.equal((await child.status).code, 0);
      const controls: ReturnType<typeof decodeControl>[] = [];
      tracer.drain((bytes) => {
        const r = decodeRecord(bytes);
        if (r.type === EV.CONTROL) controls.push(decodeControl(r));
      });
      const [thread, pidfd, kill] = controls;
      assert.equal(controls.length, 3, JSON.stringify(controls));
      // pthread_kill is tgkill(own pid, thread's tid): the thread is the tree's.
      assert.equal(thread?.syscall, "tgkill");
      assert.equal(thread?.inside, true);
      assert.equal(thread?.targetTgid, child.pid);
      assert.notEqual(thread?.tid, child.pid);
      assert.equal(pidfd?.syscall, "pidfd_send_signal");
      assert.equal(pidfd?.targetPid, decoy.pid);
      assert.equal(pidfd?.targetTgid, decoy.pid);
      assert.equal(pidfd?.inside, false);
      assert.equal(kill?.targetPid, decoy.pid);
      assert.equal(kill?.inside, false);
      // /proc agrees while the decoy lives.
      assert.equal(tracer.describe(decoy.pid)?.comm, "sleep");
      assert.equal(tracer.describe(decoy.pid)?.ppid, Deno.pid);
      assert.ok(tracer.groupMembers(tracer.describe(Deno.pid)?.pgrp ?? -1).includes(Deno.pid));
    } finally {
      tracer.close();
      decoy.kill("SIGKILL");
      await decoy.status;
    }
  },
});

Deno.test({
  name: "EbpfTracer.pidfdTarget() reads the pid a pidfd holds from its fdinfo",
  ignore,
  async fn() {
    const holder = new Deno.Command(PYTHON, {
      args: [
        "-S",
        "-c",
        "import os, sys\nfd = os.pidfd_open(os.getppid())\nos.write(1, f'{fd}\\n'.encode())\nsys.stdin.readline()",
      ],
      stdin: "piped",
      stdout: "piped",
    }).spawn();
    const tracer = EbpfTracer.open({ ringBytes: 4096 });
    try {
      const fd = Number(await firstLine(holder));
      assert.equal(tracer.pidfdTarget(holder.pid, fd), Deno.pid);
      assert.equal(tracer.pidfdTarget(holder.pid, 0), null, "stdin is no pidfd");
    } finally {
      tracer.close();
      await holder.stdin.close();
      await holder.status;
    }
  },
});
