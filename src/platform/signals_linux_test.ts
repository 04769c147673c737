import assert from "node:assert/strict";
import {
  isAlive,
  killTree,
  processState,
  resumeTree,
  signalAll,
  stopTree,
} from "./signals_linux.ts";

// Every child is killed and awaited in `finally`; every wait is bounded.

const WAIT_MS = 5000;

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

    const stop = await stopTree(tree, { timeoutMs: 2000 });
    assert.deepEqual(stop, { stopped: tree, gone: [], failed: [] });
    for (const pid of tree) {
      assert.equal(processState(pid), "T");
      assert.ok(threadStates(pid).every((state) => state === "T"), `pid ${pid} fully stopped`);
      assert.ok(isAlive(pid));
    }

    const resume = await resumeTree(tree, { timeoutMs: 2000 });
    assert.deepEqual(resume, { resumed: tree, gone: [], failed: [] });
    for (const pid of tree) assert.ok(threadStates(pid).every((state) => state !== "T"));

    const kill = await killTree(tree, { graceMs: 2000 });
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
    const result = await killTree([child.pid, sleeper], { graceMs: 300 });
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
    assert.equal((await stopTree(tree)).stopped.length, 3);
    const result = await killTree(tree, { graceMs: 2000 });
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
  const result = signalAll([done.pid, 1, Deno.pid], "SIGCONT");
  assert.deepEqual(result.signalled, []);
  assert.deepEqual(result.failed.map((f) => [f.pid, f.reason]), [
    [done.pid, "gone"],
    [1, "denied"],
    [Deno.pid, "denied"],
  ]);
  assert.throws(() => signalAll([0], "SIGCONT"), RangeError);
  assert.throws(() => signalAll([-1], "SIGCONT"), RangeError);
  assert.equal(processState(done.pid), null);
  assert.equal(isAlive(done.pid), false);
  assert.deepEqual(await stopTree([done.pid]), { stopped: [], gone: [done.pid], failed: [] });
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
    assert.deepEqual(await stopTree([zombie]), { stopped: [], gone: [zombie], failed: [] });
  } finally {
    await cleanUp(child, []);
  }
});
