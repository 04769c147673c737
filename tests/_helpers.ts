/**
 * Shared helpers for the end-to-end tests: each test gets a sandbox (a temporary directory with
 * its own `SENTRY_HOME`, workspace and fake `HOME`), runs the real `sentry` CLI in subprocesses,
 * and reads back what Sentry recorded. Every process a sandbox starts carries a marker in its
 * environment, so that disposing of the sandbox finds and kills all of them, including agents
 * that outlived a killed Sentry, even when the test failed.
 * @module
 */
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import type { AgentEvent } from "../src/events/mod.ts";
import type { SessionSummary } from "../src/journal/mod.ts";
import type { Report } from "../src/cli/report.ts";

const MAIN = fileURLToPath(new URL("../main.ts", import.meta.url));
const CONFIG = fileURLToPath(new URL("../deno.json", import.meta.url));
/** The environment variable that marks every process a sandbox started. */
const MARKER = "SENTRY_E2E_SANDBOX";

/** How long a CLI command that should return at once may take, on a loaded machine. */
const COMMAND_TIMEOUT_MS = 20_000;

/**
 * The real python3 executable, not a shim: pyenv shims are shell scripts that add processes
 * to the agent's tree and depend on `HOME`, which the sandbox replaces.
 */
export const PYTHON: string = await (async () => {
  const out = await new Deno.Command("python3", {
    args: ["-c", "import sys; print(sys.executable)"],
    stdout: "piped",
    stderr: "null",
  }).output();
  const path = new TextDecoder().decode(out.stdout).trim();
  if (!out.success || path === "") throw new Error("The end-to-end tests need python3");
  return path;
})();

/** Deno's module cache: the sandbox's fake HOME must not hide it from the CLI. */
const DENO_DIR = Deno.env.get("DENO_DIR") ??
  join(Deno.env.get("XDG_CACHE_HOME") ?? join(Deno.env.get("HOME") ?? "/root", ".cache"), "deno");

/** The exit of a CLI command run to completion. */
export interface Output {
  code: number;
  stdout: string;
  stderr: string;
}

/** Sleeps `ms` milliseconds. */
export function delay(ms: number): Promise<void> {
  return new Promise((r) => setTimeout(r, ms));
}

/** Waits for a promise, but no longer than `ms`. */
async function within(promise: Promise<unknown>, ms: number): Promise<void> {
  let timer: ReturnType<typeof setTimeout> | undefined;
  await Promise.race([promise, new Promise((r) => timer = setTimeout(r, ms))]);
  clearTimeout(timer);
}

/** What {@link waitFor} polls for. */
export interface WaitOptions {
  /** What is awaited, for the failure message. */
  what: string;
  timeoutMs?: number;
  /** More detail for the failure message, such as Sentry's stderr. */
  detail?: () => string;
}

/**
 * Polls `check` every 25 ms until it returns something other than undefined, null or false,
 * and returns that. Throws after the deadline, saying what was awaited.
 */
export async function waitFor<T>(
  check: () => T | undefined | null | false | Promise<T | undefined | null | false>,
  options: WaitOptions,
): Promise<T> {
  const timeoutMs = options.timeoutMs ?? 10_000;
  const deadline = Date.now() + timeoutMs;
  while (true) {
    const value = await check();
    if (value !== undefined && value !== null && value !== false) return value;
    if (Date.now() > deadline) {
      const detail = options.detail?.() ?? "";
      throw new Error(
        `Timed out after ${timeoutMs} ms waiting for ${options.what}${
          detail ? `:\n${detail}` : ""
        }`,
      );
    }
    await delay(25);
  }
}

/** A process's state letter from /proc/PID/stat (`S`, `R`, `T`, `Z`...), or null when gone. */
export function procState(pid: number): string | null {
  try {
    const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
    return text.slice(text.lastIndexOf(")") + 2, text.lastIndexOf(")") + 3);
  } catch {
    return null;
  }
}

/** Whether a process is stopped by a signal. */
export function isStopped(pid: number): boolean {
  const state = procState(pid);
  return state === "T" || state === "t";
}

/** Whether a process is gone (or a zombie, which has ended too). */
export function isGone(pid: number): boolean {
  const state = procState(pid);
  return state === null || state === "Z" || state === "X";
}

/** The states of some processes, for failure messages. */
export function states(pids: readonly number[]): string {
  return pids.map((p) => `${p}:${procState(p) ?? "gone"}`).join(" ");
}

/** A CLI command running in the background, with its output collected as it comes. */
export class Running {
  readonly child: Deno.ChildProcess;
  readonly pid: number;
  stdout = "";
  stderr = "";
  #code: number | null = null;
  /** Resolves with the exit code when the process exits. */
  readonly #done: Promise<number>;
  /** Resolves when stdout and stderr are closed: later than the exit when a descendant holds them. */
  readonly #drained: Promise<unknown>;

  /** Wraps a spawned child whose stdout and stderr are piped. */
  constructor(child: Deno.ChildProcess) {
    this.child = child;
    this.pid = child.pid;
    const collect = async (stream: ReadableStream<Uint8Array>, into: "stdout" | "stderr") => {
      for await (const text of stream.pipeThrough(new TextDecoderStream())) this[into] += text;
    };
    const out = collect(child.stdout, "stdout");
    const err = collect(child.stderr, "stderr");
    this.#drained = Promise.allSettled([out, err]);
    this.#done = child.status.then(async (s) => {
      // The agent and the watchdog inherit Sentry's stdout and stderr, and may outlive it.
      await within(this.#drained, 300);
      this.#code = s.signal === null ? s.code : 128 + signalNumber(s.signal);
      return this.#code;
    });
  }

  /** The exit code once exited (128 + signal for a signal), else null. */
  get code(): number | null {
    return this.#code;
  }

  /** Waits for the exit and returns the code; kills the process and throws on timeout. */
  async exit(timeoutMs = COMMAND_TIMEOUT_MS): Promise<number> {
    let timer: ReturnType<typeof setTimeout> | undefined;
    const timeout = new Promise<"timeout">((r) =>
      timer = setTimeout(() => r("timeout"), timeoutMs)
    );
    const result = await Promise.race([this.#done, timeout]);
    clearTimeout(timer);
    if (result === "timeout") {
      this.kill("SIGKILL");
      await this.#done;
      throw new Error(
        `Process ${this.pid} did not exit within ${timeoutMs} ms; stderr:\n${this.stderr}`,
      );
    }
    return result;
  }

  /** Waits until stderr matches. */
  waitForStderr(pattern: RegExp | string, timeoutMs = 15_000): Promise<true> {
    return waitFor(() => matches(this.stderr, pattern), {
      what: `stderr to match ${pattern}`,
      timeoutMs,
      detail: () => `exit ${this.#code}; stderr:\n${this.stderr}`,
    });
  }

  /** Waits until stdout matches. */
  waitForStdout(pattern: RegExp | string, timeoutMs = 15_000): Promise<true> {
    return waitFor(() => matches(this.stdout, pattern), {
      what: `stdout to match ${pattern}`,
      timeoutMs,
      detail: () => `exit ${this.#code}; stdout:\n${this.stdout}\nstderr:\n${this.stderr}`,
    });
  }

  /** Sends a signal; a process already gone is not an error. */
  kill(signal: Deno.Signal = "SIGTERM"): void {
    if (this.#code !== null) return;
    try {
      this.child.kill(signal);
    } catch {
      // Gone already.
    }
  }

  /**
   * Kills the process if it still runs and waits for it, and for its output to close (which
   * needs its descendants to be gone too).
   */
  async dispose(): Promise<void> {
    this.kill("SIGKILL");
    await this.#done.catch(() => {});
    await within(this.#drained, 5000);
  }
}

function matches(text: string, pattern: RegExp | string): boolean {
  return typeof pattern === "string" ? text.includes(pattern) : pattern.test(text);
}

const SIGNAL_NUMBERS: Partial<Record<Deno.Signal, number>> = {
  SIGHUP: 1,
  SIGINT: 2,
  SIGQUIT: 3,
  SIGABRT: 6,
  SIGKILL: 9,
  SIGSEGV: 11,
  SIGPIPE: 13,
  SIGALRM: 14,
  SIGTERM: 15,
};

function signalNumber(signal: Deno.Signal): number {
  return SIGNAL_NUMBERS[signal] ?? 0;
}

/** Options for starting a process in a sandbox. */
export interface SpawnOptions {
  /** The working directory; the workspace by default. */
  cwd?: string;
  /** More environment variables. */
  env?: Record<string, string>;
}

/**
 * One test's world: `root/home` is the fake HOME (with a fake `~/.ssh/id_rsa`), `root/ws` the
 * workspace and the default working directory, `root/sentry` the `SENTRY_HOME`.
 */
export class Sandbox {
  readonly root: string;
  readonly home: string;
  readonly workspace: string;
  readonly data: string;
  /** The fake SSH key, which every built-in policy denies reading. */
  readonly sshKey: string;
  readonly env: Record<string, string>;
  readonly #running: Running[] = [];

  private constructor(root: string) {
    this.root = root;
    this.home = join(root, "home");
    this.workspace = join(root, "ws");
    this.data = join(root, "sentry");
    this.sshKey = join(this.home, ".ssh", "id_rsa");
    this.env = {
      HOME: this.home,
      SENTRY_HOME: this.data,
      PATH: Deno.env.get("PATH") ?? "/usr/local/bin:/usr/bin:/bin",
      DENO_DIR,
      NO_COLOR: "1",
      [MARKER]: root,
    };
  }

  /** Creates the directories and the fake key. */
  static async create(): Promise<Sandbox> {
    const root = await Deno.makeTempDir({ prefix: "sentry-e2e-" });
    const sb = new Sandbox(root);
    await Deno.mkdir(sb.workspace);
    await Deno.mkdir(join(sb.home, ".ssh"), { recursive: true, mode: 0o700 });
    await Deno.writeTextFile(sb.sshKey, "-----BEGIN OPENSSH PRIVATE KEY-----\nfake\n", {
      mode: 0o600,
    });
    return sb;
  }

  /** A path in the sandbox's root. */
  path(...parts: string[]): string {
    return join(this.root, ...parts);
  }

  /** Writes a file in the sandbox's root (or at an absolute path) and returns its path. */
  async write(name: string, text: string, mode = 0o644): Promise<string> {
    const path = name.startsWith("/") ? name : this.path(name);
    await Deno.writeTextFile(path, text, { mode });
    return path;
  }

  /** Starts `sentry ARGS` in the background. */
  spawn(args: string[], options: SpawnOptions = {}): Running {
    return this.spawnRaw(
      Deno.execPath(),
      ["run", "-A", "--config", CONFIG, MAIN, ...args],
      options,
    );
  }

  /** Starts any program in the background, with the sandbox's environment. */
  spawnRaw(program: string, args: string[], options: SpawnOptions = {}): Running {
    const child = new Deno.Command(program, {
      args,
      cwd: options.cwd ?? this.workspace,
      env: { ...this.env, ...options.env },
      clearEnv: true,
      stdin: "null",
      stdout: "piped",
      stderr: "piped",
    }).spawn();
    const running = new Running(child);
    this.#running.push(running);
    return running;
  }

  /** Runs `sentry ARGS` to completion. */
  async sentry(
    args: string[],
    options: SpawnOptions & { timeoutMs?: number } = {},
  ): Promise<Output> {
    const running = this.spawn(args, options);
    const code = await running.exit(options.timeoutMs ?? COMMAND_TIMEOUT_MS);
    return { code, stdout: running.stdout, stderr: running.stderr };
  }

  /** Runs a `sentry` command that must succeed and returns its stdout. */
  async ok(args: string[]): Promise<string> {
    const out = await this.sentry(args);
    if (out.code !== 0) {
      throw new Error(`sentry ${args.join(" ")} exited ${out.code}:\n${out.stderr}`);
    }
    return out.stdout;
  }

  /** The events of a session (the last by default), from `sentry events --json`. */
  async events(session = "last"): Promise<AgentEvent[]> {
    const out = await this.ok(["events", "--session", session, "--json", "--limit", "100000"]);
    return out.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l));
  }

  /** The sessions, newest first, from `sentry sessions --json`. */
  async sessions(): Promise<SessionSummary[]> {
    const out = await this.ok(["sessions", "--json"]);
    return out.split("\n").filter((l) => l.trim() !== "").map((l) => JSON.parse(l));
  }

  /** A session's report (the last by default), from `sentry report --json`. */
  async report(session = "last"): Promise<Report> {
    return JSON.parse(await this.ok(["report", session, "--json"]));
  }

  /** Waits until a file exists and holds a line, and returns its content trimmed. */
  readWhenWritten(name: string, timeoutMs = 15_000): Promise<string> {
    const path = name.startsWith("/") ? name : this.path(name);
    return waitFor(() => {
      try {
        const text = Deno.readTextFileSync(path);
        return text.endsWith("\n") ? text.trim() : null;
      } catch {
        return null;
      }
    }, {
      what: `"${path}" to be written`,
      timeoutMs,
      detail: () => this.#running.map((r) => `[${r.pid}] ${r.stderr}`).join("\n"),
    });
  }

  /** Everything the sandbox's processes printed on stderr, for failure messages. */
  stderr(): string {
    return this.#running.map((r) => `[${r.pid}] ${r.stderr}`).join("\n");
  }

  /**
   * Kills every process the sandbox started, found by the marker in their environment (agents,
   * their descendants and Sentry's watchdog included, stopped or not), then removes the files.
   */
  async dispose(): Promise<void> {
    for (const r of this.#running) r.kill("SIGKILL");
    const deadline = Date.now() + 5000;
    while (Date.now() < deadline) {
      const left = markedPids(this.root);
      if (left.length === 0) break;
      for (const pid of left) {
        try {
          Deno.kill(pid, "SIGKILL");
        } catch {
          // Gone already.
        }
      }
      await delay(20);
    }
    await Promise.all(this.#running.map((r) => r.dispose()));
    await Deno.remove(this.root, { recursive: true }).catch(() => {});
  }
}

/** The live processes whose environment carries a sandbox's marker (never this process). */
function markedPids(root: string): number[] {
  const needle = new TextEncoder().encode(`\0${MARKER}=${root}\0`);
  const out: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    if (!/^\d+$/.test(entry.name)) continue;
    const pid = Number(entry.name);
    if (pid === Deno.pid || isGone(pid)) continue;
    let environ: Uint8Array;
    try {
      environ = Deno.readFileSync(`/proc/${pid}/environ`);
    } catch {
      continue;
    }
    const padded = new Uint8Array(environ.length + 1);
    padded.set(environ, 1);
    if (indexOf(padded, needle) >= 0) out.push(pid);
  }
  return out;
}

function indexOf(haystack: Uint8Array, needle: Uint8Array): number {
  outer: for (let i = 0; i + needle.length <= haystack.length; i++) {
    for (let j = 0; j < needle.length; j++) if (haystack[i + j] !== needle[j]) continue outer;
    return i;
  }
  return -1;
}

/**
 * Runs `fn` with a fresh sandbox, and always disposes of it. Tests keep their own deadline, so
 * a hang fails the test instead of the suite.
 */
export async function withSandbox(fn: (sb: Sandbox) => Promise<void>): Promise<void> {
  const sb = await Sandbox.create();
  try {
    await fn(sb);
  } finally {
    await sb.dispose();
  }
}

/** Python source that writes `text` and a newline to `path` (for pids the test waits on). */
export function pyWrite(path: string, expr: string): string {
  return `open(${JSON.stringify(path)}, "w").write(str(${expr}) + "\\n")`;
}

/** A TCP listener on 127.0.0.1 that accepts and holds connections until closed. */
export class Listener {
  readonly listener: Deno.TcpListener;
  readonly port: number;
  readonly #conns: Deno.Conn[] = [];
  readonly #loop: Promise<void>;

  /** Listens on `port` (0 for any free port); throws when the port is taken. */
  constructor(port = 0) {
    const listener = Deno.listen({ hostname: "127.0.0.1", port });
    this.listener = listener;
    this.port = (listener.addr as Deno.NetAddr).port;
    this.#loop = (async () => {
      try {
        for await (const conn of listener) this.#conns.push(conn);
      } catch {
        // Closed.
      }
    })();
  }

  /** Listens on the first free port of a list, or returns null. */
  static firstFree(ports: readonly number[]): Listener | null {
    for (const port of ports) {
      try {
        return new Listener(port);
      } catch {
        // Taken: try the next.
      }
    }
    return null;
  }

  /** How many connections the listener has accepted. */
  get accepted(): number {
    return this.#conns.length;
  }

  /** Closes the listener and every accepted connection. */
  async close(): Promise<void> {
    try {
      this.listener.close();
    } catch {
      // Closed already.
    }
    for (const c of this.#conns) {
      try {
        c.close();
      } catch {
        // Closed by the peer.
      }
    }
    await this.#loop;
  }
}

/** The events of one kind. */
export function ofKind(events: readonly AgentEvent[], kind: string): AgentEvent[] {
  return events.filter((e) => e.kind === kind);
}

/** Asserts a CLI's stderr holds no stack trace. */
export function hasStackTrace(stderr: string): boolean {
  return stderr.includes("    at ");
}

/**
 * Runs `fn` holding the suite's CPU lock (an exclusive `flock` on a file in the temp
 * directory): the tests that measure CPU and the tests that spin racing tasks on every core take
 * it, so that `--parallel` never runs one beside the other on this 2-core machine.
 */
export async function cpuExclusive<T>(fn: () => Promise<T>): Promise<T> {
  const path = join(Deno.env.get("TMPDIR") ?? "/tmp", "sentry-tests-cpu.lock");
  const file = await Deno.open(path, { create: true, write: true });
  try {
    await file.lock(true);
    return await fn();
  } finally {
    file.close();
  }
}
