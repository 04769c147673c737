import assert from "node:assert/strict";
import { join } from "node:path";
import { FAN, type FanotifyEvent, type FileId } from "../platform/fanotify_record.ts";
import type { ProcConnectorRecord } from "../platform/proc_connector_record.ts";
import { readCmdline, readExe, readStat } from "../platform/mod.ts";
import { FanotifySensor, FileActions, programOf, TreeTracker } from "./fanotify_sensor.ts";
import { type KernelAction, ProcessTable } from "./kernel_action.ts";
import type { SensorEvent } from "./sensor.ts";

// --- TreeTracker -------------------------------------------------------------------------------

const base = { cpu: 0, seq: 0, timestampNs: 0n };

function fork(parent: number, child: number, childTgid = child): ProcConnectorRecord {
  return {
    ...base,
    type: "fork",
    parentPid: parent,
    parentTgid: parent,
    childPid: child,
    childTgid,
  };
}

function exit(pid: number, status = 0, tgid = pid): ProcConnectorRecord {
  return {
    ...base,
    type: "exit",
    pid,
    tgid,
    status,
    exitSignal: 17,
    parentPid: 1,
    parentTgid: 1,
  };
}

Deno.test("`TreeTracker` tracks the children a tracked process forks, and theirs", () => {
  const tree = new TreeTracker();
  tree.add(100);
  assert.deepEqual(tree.apply(fork(100, 101)), { op: "fork", pid: 101, ppid: 100 });
  assert.deepEqual(tree.apply(fork(101, 102)), { op: "fork", pid: 102, ppid: 101 });
  assert.equal(tree.apply(fork(500, 501)), null, "a host process's child");
  assert.equal(tree.apply(fork(100, 103, 100)), null, "a new thread is not a process");
  assert.deepEqual([...tree.pids].sort(), [100, 101, 102]);
});

Deno.test("`TreeTracker` never tracks an excluded process, even forked by the tree", () => {
  const tree = new TreeTracker({ excluded: [7] });
  tree.add(100);
  assert.equal(tree.apply(fork(100, 7)), null);
  assert.equal(tree.add(7), false);
  assert.equal(tree.has(7), false);
});

Deno.test("`TreeTracker` reports a tracked exec and a leader's exit with its raw status", () => {
  const tree = new TreeTracker();
  tree.add(100);
  assert.deepEqual(tree.apply({ ...base, type: "exec", pid: 100, tgid: 100 }), {
    op: "exec",
    pid: 100,
    path: "",
    argv: [],
    result: 0,
    syscall: "execve",
  });
  assert.equal(tree.apply({ ...base, type: "exec", pid: 9, tgid: 9 }), null);
  assert.equal(tree.apply(exit(150, 0, 100)), null, "a thread's exit");
  assert.deepEqual(tree.apply(exit(100, 768)), { op: "exit", pid: 100, status: 768 });
  assert.equal(tree.apply(exit(100, 768)), null, "reported once");
});

Deno.test("`TreeTracker` keeps a process whose leader exited because another thread exec'd", () => {
  const tree = new TreeTracker();
  tree.add(100);
  assert.deepEqual(tree.apply(exit(100)), { op: "exit", pid: 100, status: 0 });
  assert.equal(tree.apply({ ...base, type: "exec", pid: 100, tgid: 100 })?.op, "exec");
  tree.endPump(true);
  assert.deepEqual(tree.endPump(true), []);
  assert.ok(tree.has(100));
});

Deno.test("`TreeTracker` keeps an exited process until a complete read after its exit", () => {
  const tree = new TreeTracker();
  tree.add(100);
  tree.apply(exit(100));
  assert.deepEqual(tree.endPump(true), [], "its last events may be in this cycle's read");
  assert.ok(tree.has(100));
  assert.deepEqual(tree.endPump(false), [], "a read cut short proves nothing");
  assert.ok(tree.has(100));
  assert.deepEqual(tree.endPump(true), [100]);
  assert.equal(tree.has(100), false);
});

// --- FileActions -------------------------------------------------------------------------------

function id(key: string): FileId {
  return { fsid: "00", handle: new Uint8Array(8), key };
}

const DIRS: Record<string, string> = { d1: "/work", d2: "/work/sub", root: "/" };

function event(
  mask: number,
  pid: number,
  name: string | null,
  object = `o-${name}`,
  dir = "d1",
): FanotifyEvent {
  return {
    mask,
    pid,
    fd: -1,
    object: id(object),
    entry: name === null ? null : { dir: id(dir), name },
    from: null,
    to: null,
  };
}

function mapper(options: { directoryReads?: boolean; inherited?: string[] } = {}): FileActions {
  return new FileActions({
    resolveDir: (dir) => DIRS[dir.key] ?? null,
    ...(options.directoryReads === undefined ? {} : { directoryReads: options.directoryReads }),
    inheritedOutputs: new Set(options.inherited ?? []),
  });
}

/** op, path (or from>to) and syscall of each action, for short assertions. */
function brief(actions: KernelAction[]): string[] {
  return actions.map((a) => {
    if (a.op === "rename") return `rename ${a.from}>${a.to}`;
    if (a.op === "open") return `open:${a.flags.toString(8)} ${a.path} ${a.syscall}`;
    return "path" in a ? `${a.op} ${a.path}` : a.op;
  });
}

Deno.test("`FileActions` turns an open into a read and a created file into a create", () => {
  const files = mapper();
  assert.deepEqual(brief(files.map(event(FAN.OPEN, 1, "a.txt"))), ["open:0 /work/a.txt FAN_OPEN"]);
  assert.deepEqual(brief(files.map(event(FAN.CREATE, 1, "b.txt"))), [
    "open:101 /work/b.txt FAN_CREATE",
  ]);
  assert.deepEqual(brief(files.map(event(FAN.CREATE | FAN.ONDIR, 1, "sub"))), [
    "open:200100 /work/sub FAN_CREATE",
  ]);
});

Deno.test("`FileActions` reports one write per open episode, not one per write(2)", () => {
  const files = mapper();
  assert.deepEqual(brief(files.map(event(FAN.MODIFY, 1, "log"))), ["open:1 /work/log FAN_MODIFY"]);
  assert.deepEqual(files.map(event(FAN.MODIFY, 1, "log")), []);
  assert.deepEqual(files.map(event(FAN.MODIFY | FAN.CLOSE_WRITE, 1, "log")), []);
  assert.equal(files.counters.foldedWrites, 2);
  // Closed: the next write is a new episode. Another process's write is its own.
  assert.equal(files.map(event(FAN.MODIFY, 1, "log")).length, 1);
  assert.equal(files.map(event(FAN.MODIFY, 2, "log")).length, 1);
  // Opened for writing and closed without a write (O_WRONLY with no data): still a write.
  assert.deepEqual(brief(files.map(event(FAN.CLOSE_WRITE, 1, "empty"))), [
    "open:1 /work/empty FAN_CLOSE_WRITE",
  ]);
});

Deno.test("`FileActions` folds the writes that fill a new file into its create", () => {
  const files = mapper();
  // The kernel merged create, open, write and close: one create.
  const merged = FAN.CREATE | FAN.OPEN | FAN.MODIFY | FAN.CLOSE_WRITE;
  assert.deepEqual(brief(files.map(event(merged, 1, "new"))), ["open:101 /work/new FAN_CREATE"]);
  assert.equal(files.counters.merged, 1);
  // Unmerged, the same sequence gives the same answer.
  assert.equal(files.map(event(FAN.CREATE, 1, "new2")).length, 1);
  assert.deepEqual(files.map(event(FAN.OPEN, 1, "new2")).length, 1, "an open is a read");
  assert.deepEqual(files.map(event(FAN.MODIFY, 1, "new2")), []);
  assert.deepEqual(files.map(event(FAN.CLOSE_WRITE, 1, "new2")), []);
});

Deno.test("`FileActions` reports an access as a read only when its open was not seen", () => {
  const files = mapper();
  assert.deepEqual(brief(files.map(event(FAN.ACCESS, 1, "inherited"))), [
    "open:0 /work/inherited FAN_ACCESS",
  ]);
  assert.deepEqual(files.map(event(FAN.ACCESS, 1, "inherited")), []);
  assert.equal(files.map(event(FAN.OPEN, 1, "a")).length, 1);
  assert.deepEqual(files.map(event(FAN.ACCESS, 1, "a")), []);
  assert.equal(files.counters.foldedReads, 2);
});

Deno.test("`FileActions` maps deletes, rmdir and FAN_RENAME", () => {
  const files = mapper();
  assert.deepEqual(brief(files.map(event(FAN.DELETE, 1, "a"))), ["unlink /work/a"]);
  assert.deepEqual(brief(files.map(event(FAN.DELETE | FAN.ONDIR, 1, "sub"))), ["rmdir /work/sub"]);
  const rename: FanotifyEvent = {
    ...event(FAN.RENAME, 1, null),
    from: { dir: id("d1"), name: "a" },
    to: { dir: id("d2"), name: "b" },
  };
  assert.deepEqual(brief(files.map(rename)), ["rename /work/a>/work/sub/b"]);
  // mkdir and rmdir of one name before the reader came: both, in a fixed order.
  assert.deepEqual(brief(files.map(event(FAN.CREATE | FAN.DELETE | FAN.ONDIR, 1, "t"))), [
    "open:200100 /work/t FAN_CREATE",
    "rmdir /work/t",
  ]);
  assert.deepEqual(brief(files.map(event(FAN.CREATE, 1, "top", "o", "root"))), [
    "open:101 /top FAN_CREATE",
  ]);
});

Deno.test("`FileActions` pairs FAN_MOVED_FROM and FAN_MOVED_TO of one file into a rename", () => {
  const files = mapper();
  assert.deepEqual(files.map(event(FAN.MOVED_FROM, 1, "a", "f1")), []);
  assert.deepEqual(brief(files.map(event(FAN.MOVED_TO, 1, "b", "f1", "d2"))), [
    "rename /work/a>/work/sub/b",
  ]);
  assert.deepEqual(brief(files.map(event(FAN.MOVED_TO, 1, "c", "f2"))), [
    "open:101 /work/c FAN_MOVED_TO",
  ]);
  assert.equal(files.counters.unpairedMoves, 1);
});

Deno.test("`FileActions` leaves out writes to the root's inherited stdout", () => {
  const files = mapper({ inherited: ["o-agent.log"] });
  assert.deepEqual(files.map(event(FAN.MODIFY, 1, "agent.log")), []);
  assert.deepEqual(files.map(event(FAN.CLOSE_WRITE, 1, "agent.log")), []);
  assert.equal(files.counters.inheritedWrites, 2);
  assert.equal(files.map(event(FAN.MODIFY, 1, "other.log")).length, 1);
});

Deno.test("`FileActions` drops directory listings unless asked, and exec opens always", () => {
  const quiet = mapper();
  assert.equal(quiet.wanted(FAN.OPEN | FAN.ONDIR), false);
  assert.equal(quiet.wanted(FAN.DELETE | FAN.ONDIR), true);
  assert.equal(quiet.wanted(FAN.OPEN_EXEC | FAN.OPEN), true, "kept for exec names");
  assert.deepEqual(quiet.map(event(FAN.OPEN | FAN.OPEN_EXEC, 1, "python3")), []);
  const loud = mapper({ directoryReads: true });
  assert.equal(loud.wanted(FAN.OPEN | FAN.ONDIR), true);
  assert.deepEqual(brief(loud.map(event(FAN.OPEN | FAN.ONDIR, 1, ".", "d2", "d2"))), [
    "open:200000 /work/sub FAN_OPEN",
  ]);
});

Deno.test("`FileActions` counts an event whose directory is gone and emits nothing for it", () => {
  const files = mapper();
  assert.deepEqual(files.map(event(FAN.DELETE, 1, "x", "o", "gone")), []);
  assert.equal(files.counters.unresolved, 1);
});

Deno.test("`programOf()` skips the dynamic loader", () => {
  assert.equal(
    programOf(["/usr/lib/x86_64-linux-gnu/ld-linux-x86-64.so.2", "/usr/bin/true"]),
    "/usr/bin/true",
  );
  assert.equal(programOf(["/lib/ld-musl-x86_64.so.1"]), null);
});

// --- The sensor, on real processes ---------------------------------------------------------------

const root = Deno.uid() === 0;
/** A test name that says why the test is skipped, where it is. */
function needsRoot(name: string): string {
  return root ? name : `${name} (skipped: needs root for fanotify marks and the proc connector)`;
}

/** The python3 that runs programs, not a version manager's shell shim. */
async function python(): Promise<string> {
  const out = await new Deno.Command("python3", {
    args: ["-c", "import sys; print(sys.executable)"],
    stdout: "piped",
  }).output();
  return new TextDecoder().decode(out.stdout).trim() || "python3";
}

function procTable(): ProcessTable {
  return new ProcessTable((pid) => {
    const exe = readExe(pid);
    if (exe === null) return null;
    return { ppid: readStat(pid)?.ppid ?? null, exe: exe.path, cmdline: readCmdline(pid) ?? [] };
  });
}

// The agent waits for "go" on stdin, then does each action once per round, 1 ms apart, on its
// own file names (identical events of one file would merge in the kernel), runs `sh -c`, and
// double-forks a grandchild that calls setsid() and writes once its parent is gone. It prints
// to its stdout, which the shell that started it redirected to agent.log.
const AGENT = `
import os, sys, time, json, subprocess
d, n = sys.argv[1], int(sys.argv[2])
sys.stdin.readline()
def pause(): time.sleep(0.001)
for i in range(n):
    with open(os.path.join(d, f"r{i}")) as f: f.read()
    pause()
    with open(os.path.join(d, f"c{i}"), "w") as f: f.write("c")
    pause()
    with open(os.path.join(d, f"w{i}"), "a") as f: f.write("w")
    pause()
    os.rename(os.path.join(d, f"c{i}"), os.path.join(d, f"m{i}"))
    pause()
    os.unlink(os.path.join(d, f"m{i}"))
    pause()
    os.mkdir(os.path.join(d, f"s{i}")); os.rmdir(os.path.join(d, f"s{i}"))
    pause()
    print("round", i, flush=True)
sh = subprocess.run(["sh", "-c", "echo hi > " + os.path.join(d, "sh.txt") + "; exit 3"])
rd, wr = os.pipe()
child = os.fork()
if child == 0:
    if os.fork() == 0:
        os.setsid()
        os.write(wr, str(os.getpid()).encode()); os.close(wr)
        time.sleep(0.05)
        with open(os.path.join(d, "grandchild.txt"), "w") as f: f.write("g")
        os._exit(0)
    os._exit(0)
os.close(wr)
os.waitpid(child, 0)
grandchild = int(os.read(rd, 32))
time.sleep(0.2)
print(json.dumps({"pid": os.getpid(), "child": child, "grandchild": grandchild, "sh": sh.returncode}), flush=True)
`;

Deno.test({
  name: needsRoot("`FanotifySensor` records 1 ms actions of a python tree with the right pids"),
  ignore: !root,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sentry-fanotify-" });
    const rounds = 40;
    for (let i = 0; i < rounds; i++) {
      await Deno.writeTextFile(join(dir, `r${i}`), "r");
      await Deno.writeTextFile(join(dir, `w${i}`), "w");
    }
    await Deno.writeTextFile(join(dir, "agent.py"), AGENT);
    const log = join(dir, "agent.log");
    // The shell opens agent.log and execs python: python inherits it as its stdout.
    const agent = new Deno.Command("sh", {
      args: [
        "-c",
        `exec "$0" "$1" "$2" "$3" > "$4"`,
        await python(),
        join(dir, "agent.py"),
        dir,
        String(rounds),
        log,
      ],
      stdin: "piped",
      stderr: "piped",
    }).spawn();
    // The redirect is made before Sentry watches, as a user's shell makes it before Sentry runs:
    // the descriptor is inherited, not opened by the watched tree.
    for (let i = 0; i < 500; i++) {
      if ((await Deno.stat(log).catch(() => null)) !== null) break;
      await new Promise((r) => setTimeout(r, 5));
    }
    const table = procTable();
    const sensor = new FanotifySensor({ rootPid: agent.pid, table });
    const events: SensorEvent[] = [];
    const abort = new AbortController();
    const running = sensor.start((e) => events.push(e), abort.signal);
    let host: Deno.ChildProcess | null = null;
    const timer = setTimeout(() => abort.abort(), 30_000);
    try {
      await sensor.ready;
      // Wait until the shell has become python, with its stdout redirected.
      for (let i = 0; i < 200 && !(readExe(agent.pid)?.path ?? "").includes("python"); i++) {
        await new Promise((r) => setTimeout(r, 10));
      }
      // A host process writing in the same directory while the agent runs.
      host = new Deno.Command("sh", {
        args: ["-c", `for i in 1 2 3 4 5 6 7 8; do echo h > "$0/host$i"; sleep 0.02; done`, dir],
      }).spawn();
      const writer = agent.stdin.getWriter();
      await writer.write(new TextEncoder().encode("go\n"));
      await writer.close();
      const status = await agent.status;
      await host.status;
      assert.equal(
        status.code,
        0,
        new TextDecoder().decode((await agent.stderr.getReader().read()).value),
      );
      await new Promise((r) => setTimeout(r, 100));
      abort.abort();
      await running;
    } finally {
      clearTimeout(timer);
      abort.abort();
      await running.catch(() => {});
      if (host !== null) await host.status;
      try {
        agent.kill("SIGKILL");
      } catch { /* already gone */ }
      await agent.status;
    }
    const lines = (await Deno.readTextFile(log)).trim().split("\n");
    const result = JSON.parse(lines.at(-1) ?? "{}") as {
      pid: number;
      child: number;
      grandchild: number;
      sh: number;
    };
    await Deno.remove(dir, { recursive: true });
    assert.equal(result.pid, agent.pid);
    assert.equal(result.sh, 3);
    const mine = events.filter((e) => e.target.startsWith(`${dir}/`));
    const count = (kind: string, prefix: string, pid = result.pid) =>
      mine.filter((e) =>
        e.kind === kind && e.pid === pid &&
        e.target.slice(dir.length + 1).match(new RegExp(`^${prefix}\\d+$`)) !== null
      ).length;
    assert.equal(count("file.read", "r"), rounds, "reads");
    assert.equal(count("file.create", "c"), rounds, "creates");
    assert.equal(count("file.write", "w"), rounds, "writes");
    assert.equal(count("file.rename", "m"), rounds, "renames");
    assert.equal(count("file.delete", "m"), rounds, "deletes");
    assert.equal(count("file.create", "s"), rounds, "mkdirs");
    assert.equal(
      mine.filter((e) => e.kind === "file.delete" && e.detail.directory === true).length,
      rounds,
      "rmdirs",
    );
    const renames = mine.filter((e) => e.kind === "file.rename");
    assert.ok(
      renames.every((e) => String(e.detail.from).includes("/c")),
      "renames name their source",
    );
    // sh -c: its exec, its file, its exit status, attributed to it. Its argv is read from /proc
    // when it is still running by then (a 1 ms program may not be: then the file it executed).
    const shells = events.filter((e) =>
      e.kind === "proc.exec" && e.ppid === result.pid &&
      /\/(sh|dash|bash)$/.test(String(e.detail.path))
    );
    assert.equal(shells.length, 1, "the sh -c exec");
    const sh = shells[0]!;
    if (sh.cmdline.length > 0) assert.deepEqual(sh.cmdline.slice(0, 2), ["sh", "-c"]);
    assert.ok(mine.some((e) => e.target === join(dir, "sh.txt") && e.pid === sh.pid));
    const shExit = events.find((e) => e.kind === "proc.exit" && e.pid === sh.pid);
    assert.equal(shExit?.detail.code, 3);
    // The double fork and setsid: the grandchild's write is still the tree's.
    const grand = mine.find((e) => e.target === join(dir, "grandchild.txt"));
    assert.equal(grand?.pid, result.grandchild);
    assert.equal(grand?.kind, "file.create");
    assert.ok(events.some((e) => e.kind === "proc.exit" && e.pid === result.child));
    assert.ok(events.some((e) => e.kind === "proc.exit" && e.pid === result.grandchild));
    // What the tree did not do is absent: the host's files, and its inherited stdout.
    assert.deepEqual(mine.filter((e) => e.target.includes("/host")), []);
    assert.deepEqual(events.filter((e) => e.target === log), []);
    const pids = new Set([result.pid, result.child, result.grandchild, sh.pid]);
    assert.deepEqual(
      events.filter((e) => !pids.has(e.pid)).map((e) => `${e.pid} ${e.kind} ${e.target}`),
      [],
    );
    const stats = sensor.stats();
    assert.equal(stats.dropped, 0);
    assert.equal(stats.emitted, events.length);
    assert.ok(stats.blindSpots.some((s) => s.id === "failed_actions"));
    assert.ok(
      stats.blindSpots.some((s) => s.id === "unmarked_filesystems" && s.reason.includes("/proc")),
    );
  },
});

Deno.test({
  name: needsRoot("`FanotifySensor` follows an existing tree it attaches to, top-down"),
  ignore: !root,
  async fn() {
    const dir = await Deno.makeTempDir({ prefix: "sentry-fanotify-" });
    // The root's child already runs when the sensor starts; it writes once the file "go" exists.
    const script = `while [ ! -e "$0/go" ]; do sleep 0.01; done; echo x > "$0/late.txt"`;
    const agent = new Deno.Command("sh", {
      args: ["-c", `sh -c '${script}' "$0"; true`, dir],
    }).spawn();
    const sensor = new FanotifySensor({ rootPid: agent.pid, table: procTable() });
    const events: SensorEvent[] = [];
    const abort = new AbortController();
    const running = sensor.start((e) => events.push(e), abort.signal);
    const timer = setTimeout(() => abort.abort(), 15_000);
    try {
      await new Promise((r) => setTimeout(r, 100));
      await sensor.ready;
      assert.ok(sensor.tracked.size >= 2, "the root and its running child");
      await Deno.writeTextFile(join(dir, "go"), "");
      await agent.status;
      await new Promise((r) => setTimeout(r, 100));
    } finally {
      clearTimeout(timer);
      abort.abort();
      await running.catch(() => {});
      try {
        agent.kill("SIGKILL");
      } catch { /* already gone */ }
      await agent.status;
      await Deno.remove(dir, { recursive: true });
    }
    const late = events.find((e) => e.target === join(dir, "late.txt"));
    assert.equal(late?.kind, "file.create");
    assert.notEqual(late?.pid, agent.pid);
    assert.equal(
      events.filter((e) => e.target === join(dir, "go")).length,
      0,
      "Sentry's own write",
    );
  },
});
