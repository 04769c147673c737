// deno-lint-ignore-file no-console
/**
 * Block mode (issue 11): what a denied action still achieves, what a decision costs, and what
 * typical agent work loses, on the seccomp tier and, as root where it loads, the eBPF tier (whose
 * gates in mode block are Landlock, the fanotify permission guard and the cgroup connect guard).
 * Every figure is set against runs of the same python3 script in the same bench run.
 *
 * The policy is `extends: default` with `mode: block`, plus three denies: reading the fake keys
 * (`keys/id_*`), writing into a protected directory (`prot/**`), and connecting to two loopback
 * ports, each with a listener of the bench's that counts what it accepts.
 *
 * 1. **Damage.** The agent makes N attempts (1,000 by default) at each of: reading a fake key
 *    (bytes read), appending to a file in the protected directory (bytes added, from the file's
 *    size before and after the run, as the bench sees it) and connecting to the denied port
 *    (connections the bench's listener accepted). "plain": every attempt names the denied target.
 *    "racing": the path or sockaddr passed to the syscall is in a shared page that a second task
 *    (a forked child: a python thread would take turns with the attempts under the GIL) rewrites
 *    without pause between an allowed decoy (a file of the same path length in the workspace,
 *    another listener) and the denied target; only what reached the denied target
 *    counts, the decoy hits show that the race ran. Goal: 0 in every cell under Sentry. The
 *    unguarded baseline is the same script with no Sentry. Also from the journal, on the row's
 *    targets: "journaled blocks", events with response `block` and the errno the agent got in
 *    `detail.blocked` (repeats within the dedup window are folded into one event); "pauses",
 *    blocks that fell back to a pause (every run has `--pause-timeout 2s --on-pause-timeout
 *    resume`, so that such a pause cannot hang the bench); "journaled as ok", events that say an
 *    action on a denied target succeeded (with 0 damage, a misreading by the sensor).
 * 2. **Decision latency.** Inside the agent, M opens (3,000) of each of two allowed files and K
 *    connects (500) to an allowed loopback listener of its own, each call timed alone with
 *    `perf_counter_ns`: p50 and p99 in µs with no Sentry, under `--mode monitor` and under
 *    `--mode block`, the ratio to no Sentry and the added µs. One file is in the workspace; the
 *    other is beside the denied keys, in the directory that the eBPF tier's fanotify guard marks
 *    (there, in mode block, each open waits for the guard's decision). Samples are pooled over
 *    the repetitions.
 * 3. **Slowdown of typical agent work.** The same agent then reads 2,000 small files, writes 500,
 *    spawns 20 `/bin/true` and makes 200 loopback connects, timed by python from the first
 *    action to the last ("work"); "wall" is the whole run, with Sentry's start-up and teardown.
 *    Medians of R runs (5; quick: 3), interleaved: no Sentry, then each tier in monitor and block.
 *
 * Last come the leftovers: processes of the bench still alive at its end (killed then), session
 * cgroups of its sessions (a cgroup connect program lives as long as its cgroup), and the host's
 * BPF programs before and after with the processes that hold them (Sentry pins none, so a
 * program outlives no holder; other users of the host load their own).
 *
 * Run: deno task bench block [--quick]
 *  or: deno run -A bench/block_bench.ts [--quick] [--attempts N] [--opens M] [--connects K]
 *      [--reps R]
 * @module
 */
import { DatabaseSync } from "node:sqlite";
import { join } from "node:path";
import { JOURNAL_FILE } from "../src/journal/mod.ts";
import {
  delay,
  machineLine,
  markMachine,
  parseBenchArgs,
  percentile,
  sentryCommand,
  table,
} from "./_harness.ts";

/** Options for {@link runBlockBench}. */
export interface BlockBenchOptions {
  /** Attempts of each damaging action, per variant (default 1,000, also with quick). */
  attempts?: number;
  /** Timed opens of an allowed file per run (default 3,000; quick: 1,000). */
  opens?: number;
  /** Timed connects to an allowed port per run (default 500; quick: 200). */
  connects?: number;
  /** Runs of the latency and workload agent per configuration (default 5; quick: 3). */
  reps?: number;
  quick?: boolean;
}

/** The system python3, whose start-up reads nothing under the bench's directory. */
const PYTHON = "/usr/bin/python3";
/** Marks every process the bench starts, so that none outlives it. */
const MARKER = "SENTRY_BLOCK_BENCH";
/** How long a pause lasts before Sentry resumes the agent by itself. */
const PAUSE_TIMEOUT = "2s";
/** The mixed workload's size. */
const WORK = { reads: 2000, writes: 500, spawns: 20, dials: 200 };

type Tier = "seccomp" | "ebpf";
type Config = "none" | `${Tier} ${"monitor" | "block"}`;

/** One damaging action's tally, as the agent counts it. */
interface Tally {
  attempts: number;
  /** Attempts that failed, and with which errno. */
  refused: number;
  errnos: Record<string, number>;
  /** Opens or connects that reached the denied target, and the bytes read or written through it. */
  denied_hits: number;
  denied_bytes: number;
  /** Opens or connects that reached the allowed decoy (racing variant only). */
  decoy_hits: number;
}

type Action = "read" | "write" | "connect";
type Variant = "plain" | "race";
type DamageOut = Record<Action, Record<Variant, Tally>>;

const DAMAGE = String.raw`
import ctypes, errno, json, mmap, os, socket, struct, sys, time
cfg = json.loads(sys.argv[1])
n = cfg["attempts"]
libc = ctypes.CDLL(None, use_errno=True)
libc.open.argtypes = [ctypes.c_void_p, ctypes.c_int]
libc.read.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
libc.read.restype = ctypes.c_ssize_t
libc.write.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_size_t]
libc.write.restype = ctypes.c_ssize_t
libc.connect.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
libc.close.argtypes = [ctypes.c_int]
data = ctypes.create_string_buffer(4096)
payload = ctypes.create_string_buffer(b"PWNED!\n", 7)

def path(p):
    b = p.encode() + b"\0"
    return ctypes.create_string_buffer(b, len(b))

def sockaddr(port):
    b = struct.pack("=H", socket.AF_INET) + struct.pack("!H", port)
    b += socket.inet_aton("127.0.0.1") + b"\0" * 8
    return ctypes.create_string_buffer(b, 16)

def tally():
    return {"attempts": 0, "refused": 0, "errnos": {}, "denied_hits": 0, "denied_bytes": 0,
            "decoy_hits": 0}

def refuse(t):
    e = ctypes.get_errno()
    name = errno.errorcode.get(e, str(e))
    t["refused"] += 1
    t["errnos"][name] = t["errnos"].get(name, 0) + 1

def read_once(t, addr, denied):
    fd = libc.open(addr, os.O_RDONLY)
    if fd < 0:
        return refuse(t)
    try:
        ino, got = os.fstat(fd).st_ino, 0
        while True:
            r = libc.read(fd, data, 4096)
            if r <= 0:
                break
            got += r
    finally:
        libc.close(fd)
    if ino == denied:
        t["denied_hits"] += 1
        t["denied_bytes"] += got
    else:
        t["decoy_hits"] += 1

def write_once(t, addr, denied):
    fd = libc.open(addr, os.O_WRONLY | os.O_APPEND)
    if fd < 0:
        return refuse(t)
    try:
        ino = os.fstat(fd).st_ino
        w = libc.write(fd, payload, 7)
    finally:
        libc.close(fd)
    if ino == denied:
        t["denied_hits"] += 1
        t["denied_bytes"] += max(w, 0)
    else:
        t["decoy_hits"] += 1

def connect_once(t, addr, denied):
    s = socket.socket()
    try:
        if libc.connect(s.fileno(), addr, 16) != 0:
            return refuse(t)
        if s.getpeername()[1] == denied:
            t["denied_hits"] += 1
        else:
            t["decoy_hits"] += 1
    finally:
        s.close()

# The buffer the syscall is given lives in a shared page that a forked child rewrites without
# pause: a second task on another CPU, as a racing thread is (a python thread would take turns
# with the attempts under the GIL).
shared = mmap.mmap(-1, 4096)
stop = ctypes.c_uint32.from_buffer(shared, 2048)
flips = ctypes.c_uint64.from_buffer(shared, 2056)
# On a CPU of its own, so that it flips while the attempt runs, not between two time slices.
cpus = sorted(os.sched_getaffinity(0))

def run(attempt, target, decoy, denied_id, racing):
    t = tally()
    if not racing:
        for _ in range(n):
            t["attempts"] += 1
            attempt(t, ctypes.addressof(target), denied_id)
        return t
    size = len(target)
    assert len(decoy) == size, (len(decoy), size)
    a, d = bytes(decoy), bytes(target)
    shared[0:size] = a
    stop.value = 0
    flips.value = 0
    child = os.fork()
    if child == 0:
        if len(cpus) > 1:
            os.sched_setaffinity(0, cpus[1:])
        k = 0
        while not stop.value:
            shared[0:size] = d
            shared[0:size] = a
            k += 1
            flips.value = k
        os._exit(0)
    live = ctypes.addressof(ctypes.c_char.from_buffer(shared, 0))
    if len(cpus) > 1:
        os.sched_setaffinity(0, cpus[:1])
    deadline = time.monotonic() + 10
    while flips.value < 100 and time.monotonic() < deadline:
        time.sleep(0.0005)
    try:
        for _ in range(n):
            t["attempts"] += 1
            attempt(t, live, denied_id)
    finally:
        stop.value = 1
        os.waitpid(child, 0)
        os.sched_setaffinity(0, cpus)
    return t

out = {"read": {}, "write": {}, "connect": {}}
for variant in ("plain", "race"):
    v = cfg[variant]
    racing = variant == "race"
    out["read"][variant] = run(read_once, path(v["key"]), path(cfg["key_decoy"]), v["key_ino"], racing)
    out["write"][variant] = run(write_once, path(v["file"]), path(cfg["file_decoy"]), v["file_ino"], racing)
    out["connect"][variant] = run(connect_once, sockaddr(v["port"]), sockaddr(cfg["decoy_port"]), v["port"], racing)
print(json.dumps(out), flush=True)
`;

/** What the latency and workload agent prints. */
interface PerfOut {
  /** Each timed open (of a file in the workspace, of one beside the keys) and connect, in µs. */
  opens: number[];
  beside: number[];
  connects: number[];
  /** The mixed workload, first action to last, in seconds. */
  work: number;
}

const PERF = String.raw`
import json, os, socket, subprocess, sys, time
cfg = json.loads(sys.argv[1])
ns = time.perf_counter_ns
srv = socket.socket()
srv.bind(("127.0.0.1", 0))
srv.listen(1024)
addr = srv.getsockname()
def dial():
    s = socket.socket()
    s.connect(addr)
    c, _ = srv.accept()
    c.close()
    s.close()
path = cfg["file"]
dial()
def time_open(p, times):
    t = ns()
    fd = os.open(p, os.O_RDONLY)
    times.append(ns() - t)
    os.close(fd)
opens, beside = [], []
time_open(path, []), time_open(cfg["beside"], [])
# Alternated, so that neither file is timed while Sentry is busier than for the other.
for _ in range(cfg["opens"]):
    time_open(path, opens)
    time_open(cfg["beside"], beside)
connects = []
for _ in range(cfg["connects"]):
    s = socket.socket()
    t = ns()
    s.connect(addr)
    connects.append(ns() - t)
    c, _ = srv.accept()
    c.close()
    s.close()
src, out, blob = cfg["src"], cfg["out"], b"x" * 512
t = time.perf_counter()
for i in range(cfg["reads"]):
    with open(os.path.join(src, "f%04d" % i), "rb") as f:
        f.read()
os.mkdir(out)
for i in range(cfg["writes"]):
    with open(os.path.join(out, "w%04d" % i), "wb") as f:
        f.write(blob)
for i in range(cfg["spawns"]):
    subprocess.run(["/bin/true"], check=True)
for i in range(cfg["dials"]):
    dial()
work = time.perf_counter() - t
us = lambda xs: [round(x / 1000, 2) for x in xs]
print(json.dumps({"opens": us(opens), "beside": us(beside), "connects": us(connects),
                  "work": work}), flush=True)
`;

/** A loopback listener that accepts, counts and closes. */
class CountingListener {
  readonly port: number;
  accepted = 0;
  readonly #listener: Deno.TcpListener;
  readonly #loop: Promise<void>;

  constructor() {
    const listener = Deno.listen({ hostname: "127.0.0.1", port: 0 });
    this.#listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#loop = (async () => {
      try {
        for await (const conn of listener) {
          this.accepted++;
          try {
            conn.close();
          } catch {
            // Reset by the peer.
          }
        }
      } catch {
        // Closed.
      }
    })();
  }

  async close(): Promise<void> {
    try {
      this.#listener.close();
    } catch {
      // Closed already.
    }
    await this.#loop;
  }
}

/** The bench's files, listeners, policy and processes. */
interface World {
  dir: string;
  ws: string;
  policy: string;
  /** The files the racing agent flips to, in the workspace, and the allowed listener. */
  keyDecoy: string;
  fileDecoy: string;
  decoy: CountingListener;
  /** The denied targets, one set per variant. */
  targets: Record<Variant, { key: string; file: string; listener: CountingListener }>;
  /** The allowed files the latency loop opens (in the workspace, and in the keys' directory,
   * which the fanotify guard marks), and the workload's 2,000 files. */
  allowedFile: string;
  besideFile: string;
  src: string;
  damageScript: string;
  perfScript: string;
  children: Set<Deno.ChildProcess>;
  sessions: string[];
  homes: number;
}

async function makeWorld(): Promise<World> {
  const dir = await Deno.makeTempDir({ prefix: "sentry_block_bench_" });
  const ws = join(dir, "ws");
  const keys = join(dir, "keys");
  const prot = join(dir, "prot");
  const src = join(ws, "src");
  for (const d of [ws, keys, prot, src]) await Deno.mkdir(d);
  const secret = `-----BEGIN FAKE PRIVATE KEY-----\n${"k".repeat(1000)}\n`;
  const key = (name: string) => join(keys, name);
  const file = (name: string) => join(prot, name);
  const listeners = [new CountingListener(), new CountingListener(), new CountingListener()];
  const [decoy, plainPort, racePort] = listeners as [
    CountingListener,
    CountingListener,
    CountingListener,
  ];
  const world: World = {
    dir,
    ws,
    policy: join(dir, "policy.yaml"),
    // Same length as the racing targets (dir/keys/id_race, dir/prot/race.txt): one memmove flips.
    keyDecoy: join(ws, "r".repeat("keys/id_race".length - "ws/".length)),
    fileDecoy: join(ws, "w".repeat("prot/race.txt".length - "ws/".length)),
    decoy,
    targets: {
      plain: { key: key("id_plain"), file: file("plain.txt"), listener: plainPort },
      race: { key: key("id_race"), file: file("race.txt"), listener: racePort },
    },
    allowedFile: join(ws, "allowed.txt"),
    besideFile: join(keys, "public.txt"),
    src,
    damageScript: join(dir, "damage.py"),
    perfScript: join(dir, "perf.py"),
    children: new Set(),
    sessions: [],
    homes: 0,
  };
  for (const t of Object.values(world.targets)) {
    await Deno.writeTextFile(t.key, secret, { mode: 0o600 });
    await Deno.writeTextFile(t.file, "original\n");
  }
  await Deno.writeTextFile(world.keyDecoy, "public\n");
  await Deno.writeTextFile(world.fileDecoy, "public\n");
  await Deno.writeTextFile(world.allowedFile, "allowed\n");
  await Deno.writeTextFile(world.besideFile, "allowed\n");
  const small = "s".repeat(512);
  for (let i = 0; i < WORK.reads; i++) {
    await Deno.writeTextFile(join(src, `f${String(i).padStart(4, "0")}`), small);
  }
  await Deno.writeTextFile(world.damageScript, DAMAGE);
  await Deno.writeTextFile(world.perfScript, PERF);
  await Deno.writeTextFile(
    world.policy,
    [
      "name: block-bench",
      "description: Detect reads of the bench's fake keys, writes into its protected directory and connects to its denied ports",
      "extends: default",
      "mode: block",
      "files:",
      `  read: { deny: [${JSON.stringify(`${keys}/id_*`)}] }`,
      `  write: { deny: [${JSON.stringify(`${prot}/**`)}] }`,
      `network: { deny: ["127.0.0.1:${plainPort.port}", "127.0.0.1:${racePort.port}"] }`,
      "",
    ].join("\n"),
  );
  return world;
}

/** What one run of an agent (under Sentry or not) left. */
interface AgentRun {
  code: number;
  /** The agent's last stdout line. */
  last: string;
  stderr: string;
  wallSeconds: number;
  /** Sentry's data directory, or null without Sentry. */
  home: string | null;
}

/** Runs an agent to its end, with or without `sentry run`, and kills it after `timeoutMs`. */
async function runAgent(
  world: World,
  config: Config,
  argv: readonly string[],
  timeoutMs = 180_000,
): Promise<AgentRun> {
  let home: string | null = null;
  let full = [...argv];
  if (config !== "none") {
    const [tier, mode] = config.split(" ") as [Tier, string];
    home = join(world.dir, `home_${++world.homes}`);
    await Deno.mkdir(home);
    full = sentryCommand([
      "run",
      "--sensor",
      tier,
      "--mode",
      mode,
      "--no-api",
      "--no-rollback",
      // A block the tier cannot take before the fact falls back to a pause: resume it, so that
      // the run goes on (the damage table counts these pauses).
      "--pause-timeout",
      PAUSE_TIMEOUT,
      "--on-pause-timeout",
      "resume",
      "--policy",
      world.policy,
      "--workspace",
      world.ws,
      "--",
      ...argv,
    ]);
  }
  const [cmd, ...args] = full;
  const started = performance.now();
  const child = new Deno.Command(cmd as string, {
    args,
    cwd: world.ws,
    env: {
      DENO_NO_UPDATE_CHECK: "1",
      NO_COLOR: "1",
      [MARKER]: world.dir,
      ...(home === null ? {} : { SENTRY_HOME: home }),
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  world.children.add(child);
  const stdout = new Response(child.stdout).text();
  const stderr = new Response(child.stderr).text();
  const timer = setTimeout(() => {
    try {
      child.kill("SIGTERM");
    } catch {
      // Exited.
    }
  }, timeoutMs);
  try {
    const status = await child.status;
    const wallSeconds = (performance.now() - started) / 1000;
    const lines = (await stdout).trim().split("\n");
    if (home !== null) world.sessions.push(...sessionIds(home));
    return {
      code: status.code,
      last: lines.at(-1) ?? "",
      stderr: await stderr,
      wallSeconds,
      home,
    };
  } finally {
    clearTimeout(timer);
    world.children.delete(child);
  }
}

function withJournal<T>(home: string, body: (db: DatabaseSync) => T): T {
  const db = new DatabaseSync(join(home, JOURNAL_FILE), { readOnly: true });
  try {
    return body(db);
  } finally {
    db.close();
  }
}

function sessionIds(home: string): string[] {
  try {
    return withJournal(home, (db) => db.prepare("SELECT id FROM sessions").all())
      .map((r) => String(r.id));
  } catch {
    return [];
  }
}

/** What a session journaled about one variant's three denied targets. */
interface Journaled {
  /** Per action, events with response block and the errno the agent got (`detail.blocked`). */
  blocks: Record<Action, number>;
  errnos: Set<string>;
  /** Per action, events that say the action on the denied target succeeded (`result` ok). */
  ok: Record<Action, number>;
  /** Pauses: blocks the tier could not take before the fact, and pause responses. */
  pauses: number;
}

/** What the session of a data directory journaled about some targets. */
function journaled(home: string, targets: Record<Action, string>): Journaled {
  const byTarget = new Map(Object.entries(targets).map(([a, t]) => [t, a as Action]));
  const list = JSON.stringify([...byTarget.keys()]);
  return withJournal(home, (db) => {
    const out: Journaled = {
      blocks: { read: 0, write: 0, connect: 0 },
      errnos: new Set(),
      ok: { read: 0, write: 0, connect: 0 },
      pauses: 0,
    };
    const events = db.prepare(
      `SELECT target, response, json_extract(event, '$.detail.blocked') AS blocked,
              json_extract(event, '$.detail.result') AS result
         FROM events WHERE target IN (SELECT value FROM json_each(?))`,
    ).all(list);
    for (const e of events) {
      const action = byTarget.get(String(e.target)) as Action;
      if (e.result === "ok") out.ok[action]++;
      if (e.response === "block" && typeof e.blocked === "string") {
        out.blocks[action]++;
        out.errnos.add(e.blocked);
      }
    }
    const pauses = db.prepare(
      `SELECT count(*) AS n FROM responses r JOIN events e ON e.id = r.event_id
        WHERE e.target IN (SELECT value FROM json_each(?))
          AND (r.action = 'pause' OR json_extract(r.detail, '$.fallback') = 'pause')`,
    ).get(list);
    out.pauses = Number(pauses?.n ?? 0);
    return out;
  });
}

function parseLast<T>(run: AgentRun, what: string): T {
  try {
    return JSON.parse(run.last) as T;
  } catch {
    const tail = run.stderr.trim().split("\n").filter((l) => l.trim() !== "").slice(-3);
    throw new Error(`${what} printed no result (exit ${run.code}): ${tail.join(" | ")}`);
  }
}

/** One row of the damage table: one configuration, one variant. */
interface DamageRow {
  config: Config;
  variant: Variant;
  out: Record<Action, Tally>;
  /** Bytes added to the protected file, as the bench sees it. */
  bytesAdded: number;
  /** Connections the denied port's listener accepted. */
  accepted: number;
  /** What Sentry journaled about the variant's targets, or null without Sentry. */
  journaled: Journaled | null;
}

/** Waits until the listeners stop accepting (the agent has exited; its SYNs are all in). */
async function settle(listeners: readonly CountingListener[]): Promise<void> {
  let last = -1;
  for (let i = 0; i < 50; i++) {
    const now = listeners.reduce((a, l) => a + l.accepted, 0);
    if (now === last) return;
    last = now;
    await delay(40);
  }
}

/** Runs the damage agent once; or says why the configuration could not run (no result). */
async function runDamage(
  world: World,
  config: Config,
  attempts: number,
): Promise<{ rows: DamageRow[] } | { skipped: string }> {
  const size = (p: string) => Deno.statSync(p).size;
  const before = {
    plain: size(world.targets.plain.file),
    race: size(world.targets.race.file),
  };
  const all = [world.decoy, world.targets.plain.listener, world.targets.race.listener];
  for (const l of all) l.accepted = 0;
  const ino = (p: string) => Deno.statSync(p).ino;
  const cfg = {
    attempts,
    key_decoy: world.keyDecoy,
    file_decoy: world.fileDecoy,
    decoy_port: world.decoy.port,
    ...Object.fromEntries(
      (["plain", "race"] as const).map((v) => {
        const t = world.targets[v];
        return [v, {
          key: t.key,
          key_ino: ino(t.key),
          file: t.file,
          file_ino: ino(t.file),
          port: t.listener.port,
        }];
      }),
    ),
  };
  const run = await runAgent(world, config, [PYTHON, world.damageScript, JSON.stringify(cfg)]);
  await settle(all);
  let out: DamageOut;
  try {
    out = parseLast<DamageOut>(run, `The damage agent (${config})`);
  } catch (error) {
    if (config === "none") throw error;
    return { skipped: (error as Error).message };
  }
  const rows: DamageRow[] = [];
  for (const variant of ["plain", "race"] as const) {
    const t = world.targets[variant];
    const port = `127.0.0.1:${t.listener.port}`;
    rows.push({
      config,
      variant,
      out: { read: out.read[variant], write: out.write[variant], connect: out.connect[variant] },
      bytesAdded: size(t.file) - before[variant],
      accepted: t.listener.accepted,
      journaled: run.home === null
        ? null
        : journaled(run.home, { read: t.key, write: t.file, connect: port }),
    });
  }
  // The unguarded baseline appended to the files: start every configuration from the same size.
  for (const v of ["plain", "race"] as const) {
    await Deno.writeTextFile(world.targets[v].file, "original\n");
  }
  return { rows };
}

/** Runs the latency and workload agent once. */
async function runPerf(
  world: World,
  config: Config,
  counts: { opens: number; connects: number },
  index: number,
): Promise<PerfOut & { wall: number }> {
  const out = join(world.ws, `out_${index}`);
  const cfg = {
    ...counts,
    ...WORK,
    file: world.allowedFile,
    beside: world.besideFile,
    src: world.src,
    out,
  };
  const run = await runAgent(world, config, [PYTHON, world.perfScript, JSON.stringify(cfg)]);
  try {
    const parsed = parseLast<PerfOut>(run, `The workload (${config})`);
    if (run.code !== 0) throw new Error(`The workload (${config}) exited with ${run.code}`);
    return { ...parsed, wall: run.wallSeconds };
  } finally {
    await Deno.remove(out, { recursive: true }).catch(() => {});
    if (run.home !== null) await Deno.remove(run.home, { recursive: true }).catch(() => {});
  }
}

/** The live processes whose environment carries the bench's marker (never this process). */
function markedPids(dir: string): number[] {
  const needle = `\0${MARKER}=${dir}\0`;
  const out: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name) || Number(entry.name) === Deno.pid) continue;
    try {
      const environ = `\0${
        new TextDecoder().decode(Deno.readFileSync(`/proc/${entry.name}/environ`))
      }`;
      const stat = Deno.readTextFileSync(`/proc/${entry.name}/stat`);
      if (stat.slice(stat.lastIndexOf(")") + 2).startsWith("Z")) continue;
      if (environ.includes(needle)) out.push(Number(entry.name));
    } catch {
      // Gone, or not ours to read.
    }
  }
  return out;
}

/** Ends every process the bench started: its children by SIGTERM, then anything marked. */
async function endAll(world: World): Promise<number> {
  for (const child of world.children) {
    try {
      child.kill("SIGTERM");
    } catch {
      // Exited.
    }
  }
  await Promise.race([
    Promise.all([...world.children].map((c) => c.status.catch(() => {}))),
    delay(5000),
  ]);
  const left = markedPids(world.dir);
  for (const pid of left) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch {
      // Gone.
    }
  }
  return left.length;
}

/** The cgroups of the bench's sessions that still exist, on every cgroup mount. */
function leftoverCgroups(sessions: readonly string[]): string[] {
  const mounts = Deno.readTextFileSync("/proc/self/mountinfo").split("\n").flatMap((line) => {
    const f = line.split(" ");
    const type = f[f.indexOf("-") + 1] ?? "";
    return type.startsWith("cgroup") && f[4] !== undefined ? [f[4]] : [];
  });
  const left: string[] = [];
  for (const mount of mounts) {
    for (const id of sessions) {
      const path = `${mount}/sentry/${id}`;
      try {
        Deno.statSync(path);
        left.push(path);
      } catch {
        // Removed.
      }
    }
  }
  return left;
}

/** How many BPF programs the host has loaded, or null without bpftool. */
function bpfPrograms(): number | null {
  try {
    const out = new Deno.Command("bpftool", {
      args: ["-j", "prog", "show"],
      stdout: "piped",
      stderr: "null",
    }).outputSync();
    if (!out.success) return null;
    return (JSON.parse(new TextDecoder().decode(out.stdout)) as unknown[]).length;
  } catch {
    return null;
  }
}

/** The processes holding a BPF program's fd (Sentry pins none: a program lives as long). */
function bpfHolders(): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    try {
      for (const fd of Deno.readDirSync(`/proc/${entry.name}/fd`)) {
        if (Deno.readLinkSync(`/proc/${entry.name}/fd/${fd.name}`) === "anon_inode:bpf-prog") {
          pids.push(Number(entry.name));
          break;
        }
      }
    } catch {
      // Gone, or not ours to read.
    }
  }
  return pids;
}

/** The timed calls of the latency table. */
type Call = "opens" | "beside" | "connects";
const CALLS: readonly { key: Call; label: string }[] = [
  { key: "opens", label: "open, file in the workspace" },
  { key: "beside", label: "open, file beside the denied keys" },
  { key: "connects", label: "connect, allowed loopback port" },
];

const fmt = (n: number) => n.toLocaleString("en");
const signed = (v: number) => `${v < 0 ? "-" : "+"}${us(Math.abs(v))}`;
const us = (v: number) => Number.isNaN(v) ? "-" : v < 100 ? v.toFixed(1) : v.toFixed(0);
const ratio = (a: number, b: number) => `${(a / b).toFixed(2)}×`;

function damageTable(rows: readonly DamageRow[], attempts: number): string {
  const actions = (f: (a: Action) => string) =>
    (["read", "write", "connect"] as const).map(f).join(" / ");
  const per = (r: DamageRow, f: (t: Tally) => string) => actions((a) => f(r.out[a]));
  const errnos = (t: Tally) =>
    Object.keys(t.errnos).length === 0 ? "-" : Object.keys(t.errnos).sort().join("+");
  return table([
    [
      `damage (${fmt(attempts)} attempts each)`,
      "key bytes read",
      "bytes added to protected file",
      "denied connects accepted",
      "refused r / w / c",
      "errno r / w / c",
      "decoy reached r / w / c",
      "journaled blocks r / w / c",
      "journaled as ok r / w / c",
      "pauses",
    ],
    ...rows.map((r) => [
      `${r.config === "none" ? "no Sentry" : r.config}, ${
        r.variant === "plain" ? "plain" : "racing"
      }`,
      fmt(r.out.read.denied_bytes),
      fmt(r.bytesAdded),
      fmt(r.accepted),
      per(r, (t) => fmt(t.refused)),
      per(r, errnos),
      r.variant === "race" ? per(r, (t) => fmt(t.decoy_hits)) : "-",
      r.journaled === null
        ? "-"
        : `${actions((a) => fmt(r.journaled?.blocks[a] ?? 0))} (${
          [...r.journaled.errnos].sort().join(",") || "-"
        })`,
      r.journaled === null ? "-" : actions((a) => fmt(r.journaled?.ok[a] ?? 0)),
      r.journaled === null ? "-" : fmt(r.journaled.pauses),
    ]),
  ]);
}

/** Runs the three parts and prints their tables. */
export async function runBlockBench(options: BlockBenchOptions = {}): Promise<void> {
  const quick = options.quick ?? false;
  const attempts = options.attempts ?? 1000;
  const counts = {
    opens: options.opens ?? (quick ? 1000 : 3000),
    connects: options.connects ?? (quick ? 200 : 500),
  };
  const reps = options.reps ?? (quick ? 3 : 5);
  const mark = markMachine();
  const bpfBefore = bpfPrograms();
  const world = await makeWorld();
  let strays = 0;
  try {
    // 1. Damage; each tier's first run also shows whether the tier can run here.
    const damage: DamageRow[] = [];
    const tiers: Tier[] = [];
    const skipped: string[] = [];
    const baseline = await runDamage(world, "none", attempts);
    if ("rows" in baseline) damage.push(...baseline.rows);
    for (const tier of ["seccomp", "ebpf"] as const) {
      if (tier === "ebpf" && Deno.uid() !== 0) {
        skipped.push("ebpf: not root");
        continue;
      }
      const result = await runDamage(world, `${tier} block`, attempts);
      if ("skipped" in result) {
        skipped.push(`${tier}: ${result.skipped}`);
        continue;
      }
      tiers.push(tier);
      damage.push(...result.rows);
    }
    console.log(damageTable(damage, attempts));
    console.log(
      "key bytes read, bytes added and connects accepted count only what reached the DENIED " +
        "target (the racing decoys are other files and another listener); goal: 0 under Sentry. " +
        "journaled blocks: events with response block and the errno the agent got (in detail." +
        "blocked), on the row's denied targets (repeats folded); journaled as ok: events saying " +
        "an action on a denied target succeeded; pauses: blocks that fell back to a pause " +
        `(resumed after ${PAUSE_TIMEOUT})`,
    );
    for (const s of skipped) console.log(`skipped ${s}`);

    // 2 and 3. Latency and workload, interleaved: one run of each configuration per round.
    const configs: Config[] = [
      "none",
      ...tiers.flatMap((t) => [`${t} monitor`, `${t} block`] as Config[]),
    ];
    const runs = new Map<Config, (PerfOut & { wall: number })[]>(configs.map((c) => [c, []]));
    let index = 0;
    for (let rep = 0; rep < reps; rep++) {
      for (const config of configs) {
        runs.get(config)?.push(await runPerf(world, config, counts, index++));
      }
    }
    const pooled = (c: Config, key: Call) => (runs.get(c) ?? []).flatMap((r) => r[key]);
    const median = (values: readonly number[]) => percentile(values, 50);
    const label = (c: Config) => c === "none" ? "no Sentry" : c;
    const latencyRows: string[][] = [];
    for (const call of CALLS) {
      const base = pooled("none", call.key);
      const [b50, b99] = [percentile(base, 50), percentile(base, 99)];
      for (const c of configs) {
        const v = pooled(c, call.key);
        const [p50, p99] = [percentile(v, 50), percentile(v, 99)];
        latencyRows.push([
          `${call.label}, ${label(c)}`,
          us(p50),
          us(p99),
          ratio(p50, b50),
          ratio(p99, b99),
          c === "none" ? "-" : signed(p50 - b50),
          c === "none" ? "-" : signed(p99 - b99),
        ]);
      }
    }
    console.log("");
    console.log(table([
      ["decision latency (µs per call)", "p50", "p99", "ratio p50", "p99", "added p50", "p99"],
      ...latencyRows,
    ]));
    console.log(
      `timed inside the agent, per run: ${fmt(counts.opens)} opens of each file and ` +
        `${fmt(counts.connects)} connects, pooled over ${reps} run(s); ratios and added µs ` +
        "against no Sentry. The file beside the keys is allowed, in the directory the fanotify " +
        "guard marks for the denied keys (eBPF tier, mode block: each open is a permission event)",
    );

    const work = (c: Config) => (runs.get(c) ?? []).map((r) => r.work);
    const wall = (c: Config) => (runs.get(c) ?? []).map((r) => r.wall);
    const baseWork = median(work("none"));
    const baseWall = median(wall("none"));
    console.log("");
    console.log(table([
      [
        `typical work (median of ${reps})`,
        "work",
        "ratio",
        "rounds",
        "wall",
        "ratio",
      ],
      ...configs.map((c) => {
        const each = work(c).map((w, i) => w / (work("none")[i] ?? NaN));
        return [
          label(c),
          `${median(work(c)).toFixed(3)} s`,
          ratio(median(work(c)), baseWork),
          c === "none" ? "-" : `${Math.min(...each).toFixed(2)}–${Math.max(...each).toFixed(2)}×`,
          `${median(wall(c)).toFixed(2)} s`,
          ratio(median(wall(c)), baseWall),
        ];
      }),
    ]));
    console.log(
      `work: python reads ${fmt(WORK.reads)} small files, writes ${fmt(WORK.writes)}, spawns ` +
        `${WORK.spawns} /bin/true and makes ${WORK.dials} loopback connects, first action to ` +
        'last; "rounds": each run against the unguarded run of its round; wall: the whole run, ' +
        "with Sentry's start-up and teardown",
    );
  } finally {
    strays = await endAll(world);
    await Promise.all([
      world.decoy.close(),
      world.targets.plain.listener.close(),
      world.targets.race.listener.close(),
    ]);
    await Deno.remove(world.dir, { recursive: true }).catch(() => {});
  }
  // The kernel frees a program a moment after its last holder exits.
  let bpfAfter = bpfPrograms();
  for (let i = 0; i < 20 && bpfAfter !== null && bpfAfter > (bpfBefore ?? 0); i++) {
    await delay(250);
    bpfAfter = bpfPrograms();
  }
  const cgroups = leftoverCgroups(world.sessions);
  const holders = bpfHolders();
  const ours = new Set(markedPids(world.dir));
  console.log("");
  console.log(
    `leftovers: ${strays} process(es) of the bench killed at the end, ` +
      `${cgroups.length} session cgroup(s) of ${world.sessions.length} session(s)` +
      (cgroups.length === 0 ? "" : ` (${cgroups.join(", ")})`) +
      `, BPF programs on the host ${bpfBefore ?? "?"} before and ${bpfAfter ?? "?"} after, ` +
      `held by ${holders.filter((p) => ours.has(p)).length} process(es) of the bench and ` +
      `${holders.filter((p) => !ours.has(p)).length} other(s)` +
      (holders.length === 0 ? "" : ` (pids ${holders.join(", ")})`),
  );
  console.log(machineLine(mark));
}

if (import.meta.main) {
  const { quick, numbers } = parseBenchArgs(Deno.args);
  const pick = (name: string) => numbers[name]?.[0];
  const options: BlockBenchOptions = { quick };
  for (const name of ["attempts", "opens", "connects", "reps"] as const) {
    const value = pick(name);
    if (value !== undefined) options[name] = value;
  }
  await runBlockBench(options);
}
