/**
 * The connect guard against real processes, as root: a python3 process in a temporary cgroup v2
 * directory connects to loopback listeners run by another process outside it. Denied connects
 * fail with EPERM and the listener accepts nothing, also while another process rewrites the
 * sockaddr (in shared memory) as the agent connects with it; a process outside the cgroup is not affected; every
 * blocked connect comes back as an event. Prints the added connect latency.
 *
 * Everything is released in `finally`: the guard detached (checked with bpftool), the
 * processes killed, the cgroup emptied and removed.
 *
 * @module
 */
import assert from "node:assert/strict";
import { compilePolicy, parsePolicy } from "../src/policy/mod.ts";
import { resolveLayers } from "../src/policy/resolve.ts";
import { startConnectGuard } from "../src/sensors/connect_guard.ts";
import type { SensorEvent } from "../src/sensors/mod.ts";
import { cpuExclusive } from "./_helpers.ts";

const ROOT = "/sys/fs/cgroup/unified";

function whySkip(): string | null {
  if (Deno.build.os !== "linux") return "not Linux";
  if (Deno.uid() !== 0) return "needs root (cgroup programs and moving processes between cgroups)";
  try {
    Deno.statSync(`${ROOT}/cgroup.procs`);
  } catch {
    return `no cgroup v2 mount at ${ROOT}`;
  }
  for (const tool of ["python3", "bpftool"]) {
    try {
      new Deno.Command(tool, { args: ["--version"], stdout: "null", stderr: "null" }).outputSync();
    } catch {
      return `needs ${tool}`;
    }
  }
  return null;
}

const why = whySkip();
if (why !== null) {
  // deno-lint-ignore no-console
  console.warn(`skipping the connect guard tests: ${why}`);
}

/** Listeners outside the guarded cgroup; they count what they accept. */
const LISTENERS = String.raw`
import json, socket, sys, threading
counts = {}
ports = {}
def serve(name, host):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
    s.bind((host, 0))
    s.listen(4096)
    ports[name] = s.getsockname()[1]
    counts[name] = 0
    def loop():
        while True:
            c, _ = s.accept()
            counts[name] += 1
            c.close()
    threading.Thread(target=loop, daemon=True).start()
serve("allowed", "127.0.0.1")
serve("denied_port", "127.0.0.1")
serve("denied_addr", "127.0.0.2")
print(json.dumps(ports), flush=True)
for line in sys.stdin:
    print(json.dumps(counts), flush=True)
`;

/**
 * The agent: moves itself into the cgroup (argv[1]), then connects as told by argv[2], a JSON
 * plan, and prints one JSON line of outcomes.
 */
const AGENT = String.raw`
import ctypes, errno, json, mmap, os, socket, struct, sys, time
cgroup, plan = sys.argv[1], json.loads(sys.argv[2])
if cgroup:
    open(cgroup + "/cgroup.procs", "w").write(str(os.getpid()))
libc = ctypes.CDLL(None, use_errno=True)
LINGER0 = struct.pack("ii", 1, 0)
def connect(host, port):
    s = socket.socket()
    s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
    try:
        s.connect((host, port))
        return "ok"
    except OSError as e:
        return errno.errorcode[e.errno]
    finally:
        s.close()
out = {"pid": os.getpid()}
if plan["op"] == "connect":
    out["results"] = [connect(h, p) for h, p in plan["targets"]]
elif plan["op"] == "race":
    # Another process (so, another CPU, with no lock shared) rewrites the sockaddr in shared
    # memory between an allowed and a denied destination while this one connects with it.
    class Sin(ctypes.Structure):
        _fields_ = [("family", ctypes.c_ushort), ("port", ctypes.c_ushort),
                    ("addr", ctypes.c_uint32), ("zero", ctypes.c_char * 8)]
    def raw(host, port):
        return (socket.htons(port), struct.unpack("<I", socket.inet_aton(host))[0])
    good, bad = raw(*plan["allowed"]), raw(*plan["denied"])
    shared = mmap.mmap(-1, 32)
    sin = Sin.from_buffer(shared)
    sin.family, (sin.port, sin.addr) = socket.AF_INET, good
    stop = ctypes.c_uint32.from_buffer(shared, 16)
    flips = ctypes.c_uint64.from_buffer(shared, 24)
    child = os.fork()
    if child == 0:
        n = 0
        while not stop.value:
            sin.port, sin.addr = bad
            sin.port, sin.addr = good
            n += 2
            if n % 1024 == 0:
                flips.value = n
        flips.value = n
        os._exit(0)
    libc.connect.argtypes = [ctypes.c_int, ctypes.c_void_p, ctypes.c_uint]
    results = {}
    for _ in range(plan["tries"]):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        rc = libc.connect(s.fileno(), ctypes.addressof(sin), ctypes.sizeof(sin))
        key = "ok" if rc == 0 else errno.errorcode[ctypes.get_errno()]
        results[key] = results.get(key, 0) + 1
        s.close()
    stop.value = 1
    os.waitpid(child, 0)
    out["results"] = results
    out["flips"] = flips.value
elif plan["op"] == "latency":
    host, port = plan["target"]
    times = []
    for _ in range(plan["tries"]):
        s = socket.socket()
        s.setsockopt(socket.SOL_SOCKET, socket.SO_LINGER, LINGER0)
        t0 = time.perf_counter_ns()
        s.connect((host, port))
        times.append(time.perf_counter_ns() - t0)
        s.close()
    out["times"] = times
print(json.dumps(out), flush=True)
`;

interface AgentOutput {
  pid: number;
  results?: string[] | Record<string, number>;
  flips?: number;
  times?: number[];
}

/** Runs the agent script in `cgroup` (or outside any guarded cgroup with ""), within 60 s. */
async function agent(cgroup: string, plan: Record<string, unknown>): Promise<AgentOutput> {
  const child = new Deno.Command("python3", {
    args: ["-c", AGENT, cgroup, JSON.stringify(plan)],
    stdout: "piped",
    stderr: "piped",
  }).spawn();
  const timer = setTimeout(() => child.kill("SIGKILL"), 60_000);
  try {
    const out = await child.output();
    const text = new TextDecoder().decode(out.stdout);
    assert.ok(out.success, `agent failed: ${new TextDecoder().decode(out.stderr)}`);
    return JSON.parse(text) as AgentOutput;
  } finally {
    clearTimeout(timer);
  }
}

/** The listener process, and a way to read its counts. */
class Listeners {
  readonly child: Deno.ChildProcess;
  readonly #writer: WritableStreamDefaultWriter<Uint8Array>;
  readonly #reader: ReadableStreamDefaultReader<string>;
  #buffer = "";
  ports: Record<"allowed" | "denied_port" | "denied_addr", number> = {
    allowed: 0,
    denied_port: 0,
    denied_addr: 0,
  };

  constructor() {
    this.child = new Deno.Command("python3", {
      args: ["-c", LISTENERS],
      stdin: "piped",
      stdout: "piped",
      stderr: "inherit",
    }).spawn();
    this.#writer = this.child.stdin.getWriter();
    this.#reader = this.child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  }

  async #line(): Promise<string> {
    while (!this.#buffer.includes("\n")) {
      const { value, done } = await this.#reader.read();
      if (done) throw new Error("The listener process ended");
      this.#buffer += value;
    }
    const at = this.#buffer.indexOf("\n");
    const line = this.#buffer.slice(0, at);
    this.#buffer = this.#buffer.slice(at + 1);
    return line;
  }

  async start(): Promise<void> {
    this.ports = JSON.parse(await this.#line());
  }

  async counts(): Promise<Record<string, number>> {
    await this.#writer.write(new TextEncoder().encode("c\n"));
    return JSON.parse(await this.#line());
  }

  async close(): Promise<void> {
    try {
      this.child.kill("SIGKILL");
    } catch {
      // Gone.
    }
    await this.#writer.close().catch(() => {});
    await this.#reader.cancel().catch(() => {});
    await this.child.status;
  }
}

/** Moves every process still in `dir` to the root cgroup, then removes `dir`. */
function removeCgroup(dir: string): void {
  for (let i = 0; i < 50; i++) {
    let pids: string[] = [];
    try {
      pids = Deno.readTextFileSync(`${dir}/cgroup.procs`).split("\n").filter((p) => p !== "");
    } catch {
      return;
    }
    for (const pid of pids) {
      try {
        Deno.writeTextFileSync(`${ROOT}/cgroup.procs`, `${pid}\n`);
      } catch {
        // Exited meanwhile.
      }
    }
    try {
      Deno.removeSync(dir);
      return;
    } catch {
      // A process was still leaving: try again.
    }
  }
  throw new Error(`Cannot remove the test cgroup "${dir}"`);
}

function attachedTo(dir: string): string {
  const out = new Deno.Command("bpftool", { args: ["cgroup", "show", dir], stderr: "null" })
    .outputSync();
  return new TextDecoder().decode(out.stdout).trim();
}

function percentile(sorted: number[], p: number): number {
  return sorted[Math.min(sorted.length - 1, Math.floor(sorted.length * p))] ?? 0;
}

Deno.test({
  name:
    "the connect guard blocks denied connects in its cgroup before the listener sees them, with a racing writer flipping the sockaddr",
  ignore: why !== null,
  async fn() {
    await cpuExclusive(async () => {
      const guarded = `${ROOT}/sentry-connect-guard-${Deno.pid}`;
      const control = `${ROOT}/sentry-connect-guard-control-${Deno.pid}`;
      Deno.mkdirSync(guarded);
      Deno.mkdirSync(control);
      const listeners = new Listeners();
      const controller = new AbortController();
      let done: Promise<void> | null = null;
      try {
        await listeners.start();
        const { allowed, denied_port: deniedPort, denied_addr: deniedAddr } = listeners.ports;
        const policy = compilePolicy(
          resolveLayers([{
            source: "test",
            policy: parsePolicy(
              `mode: block\nnetwork: { default: allow, deny: ['127.0.0.1:${deniedPort}', 127.0.0.2] }\ndatabase: { ports: [] }`,
              "test.yaml",
            ),
          }]),
          { home: "/root", workspace: "/tmp", env: {} },
        );

        // Latency is measured later, in the control cgroup (never guarded) against the guarded
        // one; this first run, before anything is attached, only warms the path up.
        const latency = { plain: [] as number[], guarded: [] as number[] };
        const measure = async (dir: string, into: number[]) => {
          const out = await agent(dir, {
            op: "latency",
            target: ["127.0.0.1", allowed],
            tries: 2000,
          });
          into.push(...(out.times ?? []));
        };
        await measure(guarded, []);

        const events: SensorEvent[] = [];
        const guard = await startConnectGuard({
          cgroupDir: guarded,
          policy,
          emit: (e) => events.push(e),
          signal: controller.signal,
          pollMs: 20,
        });
        done = guard.done;
        assert.equal(guard.blocks, true);
        assert.deepEqual(guard.notices, []);
        assert.match(attachedTo(guarded), /guard_connect4[\s\S]*guard_connect6/);

        // Plain connects: the denied port and address fail with EPERM, the allowed one works.
        const plain = await agent(guarded, {
          op: "connect",
          targets: [["127.0.0.1", deniedPort], ["127.0.0.2", deniedAddr], ["127.0.0.1", allowed], [
            "::ffff:127.0.0.1",
            deniedPort,
          ]],
        });
        assert.deepEqual(plain.results, ["EPERM", "EPERM", "ok", "EPERM"]);

        // Another process flips the sockaddr between the allowed and a denied destination while
        // the agent connects with it, 10,000 times for the port and 10,000 for the address.
        const races = [];
        for (const denied of [["127.0.0.1", deniedPort], ["127.0.0.2", deniedAddr]]) {
          const race = await agent(guarded, {
            op: "race",
            allowed: ["127.0.0.1", allowed],
            denied,
            tries: 10_000,
          });
          races.push(race);
          const results = race.results as Record<string, number>;
          // ECONNREFUSED: the kernel copied a sockaddr torn between the two writes (half of
          // each port), a third destination nobody listens on, which the policy allows.
          assert.deepEqual(
            Object.keys(results).filter((k) => !["ok", "EPERM", "ECONNREFUSED"].includes(k)),
            [],
            JSON.stringify(results),
          );
          assert.equal(Object.values(results).reduce((a, b) => a + b, 0), 10_000);
          // The race did race: the kernel saw both destinations.
          assert.ok((results.EPERM ?? 0) > 0 && (results.ok ?? 0) > 0, JSON.stringify(results));
        }
        const counts = await listeners.counts();
        assert.equal(counts.denied_port, 0, "the denied port's listener accepted nothing");
        assert.equal(counts.denied_addr, 0, "the denied address's listener accepted nothing");
        const allowedOk = 1 +
          races.reduce((n, r) => n + ((r.results as Record<string, number>).ok ?? 0), 0);
        assert.equal(
          counts.allowed,
          allowedOk + 2000,
          "every allowed connect reached its listener",
        );

        // A process outside the guarded cgroup is not affected.
        const outside = await agent(control, {
          op: "connect",
          targets: [["127.0.0.1", deniedPort]],
        });
        assert.deepEqual(outside.results, ["ok"]);
        assert.equal((await listeners.counts()).denied_port, 1);

        // Every blocked connect comes back as an event, with the errno the agent got.
        const blocked = 3 +
          races.reduce((n, r) => n + ((r.results as Record<string, number>).EPERM ?? 0), 0);
        const deadline = Date.now() + 10_000;
        while (events.length < blocked && Date.now() < deadline) {
          await new Promise((r) => setTimeout(r, 20));
        }
        assert.equal(events.length, blocked);
        assert.ok(events.every((e) => e.detail.blocked === "EPERM" && e.kind === "net.connect"));
        const first = events.filter((e) => e.pid === plain.pid).map((e) => e.target);
        assert.deepEqual(first, [
          `127.0.0.1:${deniedPort}`,
          `127.0.0.2:${deniedAddr}`,
          `127.0.0.1:${deniedPort}`,
        ]);
        assert.ok(events.every((e) => e.pid !== outside.pid));
        const stats = guard.stats();
        assert.equal(stats.blocked, blocked);
        assert.equal(stats.dropped, 0);

        // Latency: the guarded cgroup against the plain one, alternating.
        for (let round = 0; round < 3; round++) {
          await measure(control, latency.plain);
          await measure(guarded, latency.guarded);
        }
        const row = (name: string, values: number[]) => {
          const sorted = [...values].sort((a, b) => a - b);
          const us = (n: number) => (n / 1000).toFixed(1).padStart(8);
          return `${name.padEnd(22)}${us(percentile(sorted, 0.5))}${us(percentile(sorted, 0.99))}`;
        };
        // deno-lint-ignore no-console
        console.log(
          [
            "",
            `loopback TCP connect() latency, µs   (${latency.plain.length} / ${latency.guarded.length} connects)`,
            `${"".padEnd(22)}${"p50".padStart(8)}${"p99".padStart(8)}`,
            row("no program", latency.plain),
            row("connect guard", latency.guarded),
            `race: ${
              races.map((r) => `${JSON.stringify(r.results)} (${r.flips} flips)`).join(", ")
            }`,
          ].join("\n"),
        );

        controller.abort();
        await guard.done;
        assert.equal(attachedTo(guarded), "", "nothing stays attached");
      } finally {
        controller.abort();
        await done?.catch(() => {});
        await listeners.close();
        removeCgroup(guarded);
        removeCgroup(control);
      }
    });
  },
});
