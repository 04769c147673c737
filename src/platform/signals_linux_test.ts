import assert from "node:assert/strict";
import {
  isAlive,
  killTree,
  processState,
  resumeTree,
  signalAll,
  stopTree,
} from "./signals_linux.ts";
import type { ProcessRef } from "./pidfd_linux.ts";
import { readStat } from "./proc_linux.ts";

// Every child is killed and awaited in `finally`; every wait is bounded.

const WAIT_MS = 5000;

/** The refs (pid and start time) of live processes. */
function refs(pids: readonly number[]): ProcessRef[] {
  return pids.map((pid) => ({ pid, start: readStat(pid)?.starttime ?? -1 }));
}

function spawnPython(script: string): Deno.ChildProcess {
  return new Deno.Command("python3", {
    args: ["-c", script],
    stdout: "piped",
    stderr: "inherit",
    stdin: "null",
  }).spawn();
}

/** Reads the child's first stdout line, failing after `WAIT_MS`, then lets go of stdout. */
async function firstLine(child: Deno.ChildProcess): Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("Timed out waiting for the child's line")), WAIT_MS);
  });
  let text = "";
  try {
    while (!text.includes("\n")) {
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) throw new Error(`Child closed stdout before a full line: "${text}"`);
      text += value;
    }
    return text.slice(0, text.indexOf("\n"));
  } finally {
    clearTimeout(timer);
    await reader.cancel();
  }
}

/** SIGKILLs the extra pids (grandchildren) and the child, and awaits the child. */
async function cleanUp(child: Deno.ChildProcess, extraPids: number[]): Promise<void> {
  for (const pid of [...extraPids, child.pid]) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* already gone */ }
  }
  await child.status;
}

function threadStates(pid: number): string[] {
  return [...Deno.readDirSync(`/proc/${pid}/task`)].map((task) => {
    const text = Deno.readTextFileSync(`/proc/${pid}/task/${task.name}/stat`);
    return text.slice(text.lastIndexOf(")") + 2, text.lastIndexOf(")") + 3);
  });
}

/** A Python parent with a second thread and two `sleep` children: three processes, four threads. */
const TREE = [
  "import subprocess,threading,time",
  "threading.Thread(target=time.sleep, args=(60,), daemon=True).start()",
  "a=subprocess.Popen(['sleep','30']); b=subprocess.Popen(['sleep','30'])",
  "print(a.pid,b.pid,flush=True)",
  "time.sleep(60)",
].join("\n");

Deno.test("stopTree() stops every thread of a 3-process tree and resumeTree() resumes them", async () => {
  const child = spawnPython(TREE);
  let tree: number[] = [child.pid];
  try {
    tree = [child.pid, ...(await firstLine(child)).split(" ").map(Number)];
    assert.equal(tree.length, 3);
    assert.ok(threadStates(child.pid).length >= 2);

    const stop = await stopTree(refs(tree), { timeoutMs: 2000 });
    assert.deepEqual(stop, { stopped: tree, gone: [], failed: [] });
    for (const pid of tree) {
      assert.equal(processState(pid), "T");
      assert.ok(threadStates(pid).every((state) => state === "T"), `pid ${pid} fully stopped`);
      assert.ok(isAlive(pid));
    }

    const resume = await resumeTree(refs(tree), { timeoutMs: 2000 });
    assert.deepEqual(resume, { resumed: tree, gone: [], failed: [] });
    for (const pid of tree) assert.ok(threadStates(pid).every((state) => state !== "T"));

    const kill = await killTree(refs(tree), { graceMs: 2000 });
    assert.deepEqual(kill.killed, []);
    assert.deepEqual(kill.failed, []);
    assert.deepEqual(kill.terminated.sort(), [...tree].sort());
    for (const pid of tree) assert.equal(isAlive(pid), false);
  } finally {
    await cleanUp(child, tree);
  }
});

Deno.test("killTree() needs SIGKILL only for the process that ignores SIGTERM", async () => {
  // The handler is set after Popen, because an ignored signal is inherited across exec.
  const child = spawnPython([
    "import signal,subprocess,time",
    "p=subprocess.Popen(['sleep','30'])",
    "signal.signal(signal.SIGTERM, signal.SIG_IGN)",
    "print(p.pid,flush=True)",
    "time.sleep(60)",
  ].join("\n"));
  let sleeper = 0;
  try {
    sleeper = Number(await firstLine(child));
    const started = Date.now();
    const result = await killTree(refs([child.pid, sleeper]), { graceMs: 300 });
    assert.deepEqual(result, {
      terminated: [sleeper],
      killed: [child.pid],
      gone: [],
      failed: [],
    });
    assert.ok(Date.now() - started >= 300, "waited out the grace period");
    assert.equal((await child.status).signal, "SIGKILL");
  } finally {
    await cleanUp(child, sleeper ? [sleeper] : []);
  }
});

Deno.test("killTree() ends a stopped tree with SIGTERM alone", async () => {
  const child = spawnPython(TREE);
  let tree: number[] = [child.pid];
  try {
    tree = [child.pid, ...(await firstLine(child)).split(" ").map(Number)];
    assert.equal((await stopTree(refs(tree))).stopped.length, 3);
    const result = await killTree(refs(tree), { graceMs: 2000 });
    assert.deepEqual(result.killed, []);
    assert.deepEqual(result.terminated.sort(), [...tree].sort());
    assert.equal((await child.status).signal, "SIGTERM");
  } finally {
    await cleanUp(child, tree);
  }
});

Deno.test("signalAll() reports gone pids and refuses init and itself", async () => {
  const done = new Deno.Command("true").spawn();
  await done.status;
  // SIGCONT, so that even a broken refusal would do no harm.
  const result = signalAll(
    [{ pid: done.pid, start: 0 }, ...refs([1, Deno.pid])],
    "SIGCONT",
  );
  assert.deepEqual(result.signalled, []);
  assert.deepEqual(result.failed.map((f) => [f.pid, f.reason]), [
    [done.pid, "gone"],
    [1, "denied"],
    [Deno.pid, "denied"],
  ]);
  assert.throws(() => signalAll([{ pid: 0, start: 0 }], "SIGCONT"), RangeError);
  assert.throws(() => signalAll([{ pid: -1, start: 0 }], "SIGCONT"), RangeError);
  assert.equal(processState(done.pid), null);
  assert.equal(isAlive(done.pid), false);
  assert.deepEqual(await stopTree([{ pid: done.pid, start: 0 }]), {
    stopped: [],
    gone: [done.pid],
    failed: [],
  });
});

Deno.test("isAlive() is false for a zombie and stopTree() counts it as gone", async () => {
  const child = spawnPython(
    "import os,time\npid=os.fork()\nif pid==0: os._exit(0)\nprint(pid,flush=True)\ntime.sleep(60)",
  );
  try {
    const zombie = Number(await firstLine(child));
    const deadline = Date.now() + WAIT_MS;
    while (processState(zombie) !== "Z" && Date.now() < deadline) {
      await new Promise((resolve) => setTimeout(resolve, 10));
    }
    assert.equal(processState(zombie), "Z");
    assert.equal(isAlive(zombie), false);
    assert.deepEqual(await stopTree(refs([zombie])), { stopped: [], gone: [zombie], failed: [] });
  } finally {
    await cleanUp(child, []);
  }
});

Deno.test("a pid that names another process than its ref is never signalled, even by killTree()", async () => {
  const child = new Deno.Command("sleep", { args: ["30"] }).spawn();
  try {
    const deadline = Date.now() + WAIT_MS;
    while (processState(child.pid) !== "S" && Date.now() < deadline) {
      await new Promise((r) => setTimeout(r, 5));
    }
    const start = readStat(child.pid)?.starttime ?? 0;
    // The same pid with another start time: what a ref looks like after the pid was reused.
    const stale = { pid: child.pid, start: start + 1 };
    assert.deepEqual(signalAll([stale], "SIGSTOP").signalled, []);
    assert.deepEqual(await stopTree([stale], { timeoutMs: 200 }), {
      stopped: [],
      gone: [child.pid],
      failed: [],
    });
    const kill = await killTree([stale], { graceMs: 100 });
    assert.deepEqual(kill, { terminated: [], killed: [], gone: [child.pid], failed: [] });
    // Neither stopped nor ended: nothing reached it.
    assert.equal(processState(child.pid), "S");
  } finally {
    child.kill("SIGKILL");
    await child.status;
  }
});

/** The live, non-zombie processes of a process group. */
function groupMembers(pgrp: number): { pid: number; state: string }[] {
  const members: { pid: number; state: string }[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const stat = readStat(Number(entry.name));
    if (stat !== null && stat.pgrp === pgrp && stat.state !== "Z") {
      members.push({ pid: stat.pid, state: stat.state });
    }
  }
  return members;
}

for (const groups of [true, false]) {
  Deno.test(`stopTree() ${groups ? "with" : "without"} groups against a process whose pid hops every 0.3 ms`, async () => {
    // With groups every try must hold. Without, the escape is a race the hopper wins on an idle
    // machine; a loaded one (another session's eBPF program slowing every fork) can make it lose,
    // so it gets three tries to show it, and says so when it cannot.
    for (let attempt = 1; attempt <= 3; attempt++) {
      const held = await hopperHeld(groups);
      if (groups) {
        assert.equal(held.held, true, held.detail);
        return;
      }
      if (!held.held) return;
    }
    // deno-lint-ignore no-console
    console.warn(
      "per-pid signals caught the hopper in 3 of 3 tries: too slow a machine to show the escape",
    );
  });
}

async function hopperHeld(groups: boolean): Promise<{ held: boolean; detail: string }> {
  {
    // A session leader with a child that forks and exits every 0.3 ms (its pid hops), each new
    // one SIGCONTing the whole group: per-pid signals chase a pid that no longer exists.
    const leader = new Deno.Command("python3", {
      args: [
        "-c",
        [
          "import os, signal, time",
          "if os.fork() == 0:",
          "    while True:",
          "        if os.fork() != 0: os._exit(0)",
          "        try: os.killpg(0, signal.SIGCONT)",
          "        except OSError: pass",
          "        time.sleep(0.0003)",
          "time.sleep(60)",
        ].join("\n"),
      ],
      detached: true,
    }).spawn();
    try {
      await new Promise((r) => setTimeout(r, 300));
      const listed = refs(groupMembers(leader.pid).map((m) => m.pid));
      // By the time the signals go, every pid listed but the leader's has hopped on.
      await new Promise((r) => setTimeout(r, 20));
      await stopTree(listed, { timeoutMs: 500, groups });
      // A child caught in its fork takes the group's SIGSTOP as it starts: let it settle.
      await new Promise((r) => setTimeout(r, 50));
      const before = groupMembers(leader.pid);
      await new Promise((r) => setTimeout(r, 200));
      const after = groupMembers(leader.pid);
      const held = JSON.stringify(after) === JSON.stringify(before) &&
        after.every((m) => m.state === "T");
      // With groups the whole group is stopped at once and stays so; without, the hopper runs on.
      return { held, detail: `${JSON.stringify(before)} -> ${JSON.stringify(after)}` };
    } finally {
      try {
        Deno.kill(-leader.pid, "SIGKILL");
      } catch {
        // Gone.
      }
      await leader.status;
    }
  }
}
