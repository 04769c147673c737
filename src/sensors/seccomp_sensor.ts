/**
 * The seccomp sensing tier (no root needed, `sentry run` only).
 *
 * Sentry starts the agent through a launcher (`sentry __seccomp_launch`, src/cli/launcher.ts)
 * that installs a seccomp user-notification filter on itself and then runs `execve` in the same
 * pid, so the agent and every descendant (subshells, `setsid`, double forks, daemons) are under
 * the filter. The {@link SeccompSupervisor} owns the control socket the launcher hands its
 * listener fd over; the {@link SeccompSensor} answers and decodes the notifications in a Worker
 * (src/sensors/seccomp_worker.ts) and turns them into events on the main thread, in batches.
 *
 * Threads: the receive loop blocks in the kernel on the Worker's thread and answers there,
 * synchronously (read the arguments, `decide()`, answer); the main thread only turns batches of
 * answered records into events, so a busy journal can never delay an answer.
 *
 * Failure modes, written down as the house style asks:
 * - If Sentry (the supervisor) dies, or the sensor stops while the agent still runs, the
 *   listener is closed and the kernel fails every filtered syscall of the tree with ENOSYS: the
 *   gate fails **closed**. Unfiltered syscalls (read, write, ...) go on working. If the supervisor
 *   is stopped (SIGSTOP) or hangs, the tree's filtered calls wait for it.
 * - If the supervisor goes away before it says "go", the launcher exits 1 and the agent never
 *   runs: a launch that did not finish never leaves the agent running unwatched.
 * - A notification that is let through is answered "continue"; the syscall's outcome is then
 *   unknown (`result: null`), except for an exec of a file that does not exist (a PATH search
 *   miss), reported as -ENOENT and folded. Opens and (in block mode) connects the supervisor
 *   makes itself carry their real result.
 *
 * Sentry's guard, in every mode: signals (kill, tkill, tgkill, rt_sigqueueinfo,
 * rt_tgsigqueueinfo, pidfd_send_signal), ptrace, process_vm_readv/writev and pidfd_getfd aimed
 * outside the agent's tree fail with EPERM and are journaled as `proc.control` (see
 * seccomp_guard.ts for how the tree is told from the rest); opens beneath Sentry's own
 * directories are made by the supervisor and refused, race-proof.
 *
 * @module
 */

import { join, resolve } from "node:path";
import { configDir, dataDir } from "../platform/mod.ts";
import {
  accept,
  closeFd,
  installWakeSignal,
  peerCredentials,
  receiveWithFd,
  unixListen,
  waitReadable,
  wakeThread,
  writeAll,
} from "../platform/seccomp_linux.ts";
import { selfCommand } from "../platform/self_command.ts";
import type { LandlockPlan } from "../platform/landlock_plan.ts";
import { type KernelEventContext, type ProcessTable, toSensorEvent } from "./kernel_action.ts";
import { errnoName } from "../platform/kernel_abi.ts";
import type { ResolvedPolicy } from "../policy/mod.ts";
import { type Sensor, type SensorEvent, type SensorStats, StatsCounter } from "./sensor.ts";
import {
  type CallerInfo,
  SECCOMP_BLIND_SPOTS,
  type SeccompRecord,
  type SeccompWorkerStats,
  type SuperviseMessage,
  type SuperviseStart,
} from "./seccomp_worker.ts";

/** The hidden CLI command that runs the launcher. */
export const LAUNCH_COMMAND = "__seccomp_launch";

/** The launcher could not start the agent: not found (127) or not executable (126). */
export class SeccompLaunchError extends Error {
  /** The exit code a shell gives for the same failure. */
  readonly code: 126 | 127;

  /** Builds the error with the launcher's one-line message. */
  constructor(message: string, code: 126 | 127) {
    super(message);
    this.name = "SeccompLaunchError";
    this.code = code;
  }
}

/** Options for {@link SeccompSupervisor.create}. */
export interface SeccompSupervisorOptions {
  /** The argv prefix that runs Sentry again; defaults to `selfCommand()`. */
  self?: readonly string[];
}

/** Options for {@link SeccompSupervisor.launcherArgs}. */
export interface LauncherArgsOptions {
  /** The Landlock plan the launcher applies to itself before it execs the agent. */
  landlock?: LandlockPlan;
}

/** Options for {@link SeccompSupervisor.awaitListener}. */
export interface AwaitListenerOptions {
  /** How long the launcher may take to hand its listener over; default 20 s. */
  timeoutMs?: number;
  /** Settles when the launcher process exits (e.g. `child.status`): a launch that died. */
  exited?: Promise<unknown>;
}

/**
 * Owns the control socket of one launch, in a fresh 0700 directory, and the listener fd the
 * launcher sends over it until a {@link SeccompSensor} takes it. Use in this order:
 * `create()`, spawn `launcherArgs(command)`, `awaitListener()`, `createSensor()` and start it,
 * `go()`; `close()` in `finally`.
 */
export class SeccompSupervisor {
  readonly #dir: string;
  readonly #socketPath: string;
  readonly #self: readonly string[];
  #listenFd: number;
  #connFd = -1;
  #listenerFd = -1;
  #pid: number | null = null;

  private constructor(dir: string, listenFd: number, self: readonly string[]) {
    this.#dir = dir;
    this.#socketPath = join(dir, "control");
    this.#listenFd = listenFd;
    this.#self = self;
  }

  /** Makes the 0700 directory and listens on its control socket. */
  static async create(options: SeccompSupervisorOptions = {}): Promise<SeccompSupervisor> {
    const dir = await Deno.makeTempDir({ prefix: "sentry-seccomp-" });
    try {
      await Deno.chmod(dir, 0o700);
      const fd = unixListen(join(dir, "control"));
      return new SeccompSupervisor(dir, fd, options.self ?? selfCommand());
    } catch (error) {
      await Deno.remove(dir, { recursive: true }).catch(() => {});
      throw error;
    }
  }

  /** The control socket's path. */
  get socketPath(): string {
    return this.#socketPath;
  }

  /** The launcher's pid (the agent's, after its execve), once it has handed its listener over. */
  get pid(): number | null {
    return this.#pid;
  }

  /**
   * The argv that runs the launcher for `command` (the agent's argv). With `landlock`, the plan
   * is written (0600) in this supervisor's 0700 directory and the launcher applies it before
   * its seccomp filter.
   */
  launcherArgs(command: readonly string[], options: LauncherArgsOptions = {}): string[] {
    const landlock: string[] = [];
    if (options.landlock !== undefined) {
      const file = join(this.#dir, "landlock.json");
      Deno.writeTextFileSync(file, JSON.stringify(options.landlock), { mode: 0o600 });
      landlock.push("--landlock", file);
    }
    return [
      ...this.#self,
      LAUNCH_COMMAND,
      "--control",
      this.#socketPath,
      ...landlock,
      "--",
      ...command,
    ];
  }

  /**
   * Waits for the launcher to connect and hand over its listener fd. Returns the launcher's pid.
   *
   * @throws {SeccompLaunchError} when the launcher could not find or run the command.
   * @throws {Error} on timeout, or when the launcher exited or said something unexpected.
   */
  async awaitListener(options: AwaitListenerOptions = {}): Promise<{ pid: number }> {
    const timeoutMs = options.timeoutMs ?? 20_000;
    const deadline = Date.now() + timeoutMs;
    let exited = false;
    options.exited?.then(() => exited = true, () => exited = true);
    const waitFor = async (fd: number, what: string) => {
      for (;;) {
        // Short slices, so that no poll outlives this call on Deno's thread pool.
        const state = await waitReadable(fd, Math.max(0, Math.min(100, deadline - Date.now())));
        if (state !== "timeout") return;
        if (exited) throw new Error(`Sentry's seccomp launcher exited before it ${what}`);
        if (Date.now() >= deadline) {
          throw new Error(
            `Sentry's seccomp launcher did not ${what.replace(/ed\b/, "")} within ${timeoutMs} ms`,
          );
        }
      }
    };
    if (this.#connFd < 0) {
      await waitFor(this.#listenFd, "connected");
      this.#connFd = accept(this.#listenFd);
      // One launch per supervisor: nobody else may connect now.
      closeFd(this.#listenFd);
      this.#listenFd = -1;
    }
    await waitFor(this.#connFd, "handed its listener over");
    const { data, fd } = receiveWithFd(this.#connFd);
    const line = new TextDecoder().decode(data).trim();
    const error = /^error (126|127) (.*)$/s.exec(line);
    if (error !== null) {
      if (fd !== null) closeFd(fd);
      throw new SeccompLaunchError(error[2] ?? "", Number(error[1]) as 126 | 127);
    }
    const failed = /^fail (.*)$/s.exec(line);
    if (failed !== null) {
      if (fd !== null) closeFd(fd);
      throw new Error(`Sentry's seccomp launcher failed: ${failed[1]}`);
    }
    const ok = /^ok (\d+)$/.exec(line);
    if (ok === null || fd === null) {
      if (fd !== null) closeFd(fd);
      throw new Error(`Sentry's seccomp launcher sent an unexpected message: "${line}"`);
    }
    const pid = Number(ok[1]);
    const peer = peerCredentials(this.#connFd);
    if (peer.pid !== pid) {
      closeFd(fd);
      throw new Error(`Sentry's seccomp launcher claimed pid ${pid} but is pid ${peer.pid}`);
    }
    this.#listenerFd = fd;
    this.#pid = pid;
    // The launcher has read its plan and holds its connection: the directory (socket, plan) has
    // served, and goes now, so that a Sentry killed later leaves nothing of it in /tmp.
    try {
      Deno.removeSync(this.#dir, { recursive: true });
    } catch {
      // close() tries again.
    }
    return { pid };
  }

  /**
   * Creates the sensor that answers the launcher's notifications; it owns the listener fd from
   * now on.
   *
   * @throws {Error} before {@link awaitListener}, or when a sensor was already created.
   */
  createSensor(options: SeccompSensorOptions): SeccompSensor {
    if (this.#listenerFd < 0) throw new Error("No seccomp listener to supervise: await it first");
    const fd = this.#listenerFd;
    this.#listenerFd = -1;
    // The launcher's pid is the agent's root: the guard tells the tree from the rest by it.
    return new SeccompSensor(fd, { ...options, root: options.root ?? this.#pid });
  }

  /** Tells the launcher to run the agent (`execve`). Start the sensor first. */
  go(): void {
    if (this.#connFd < 0) throw new Error("No seccomp launcher to start: await its listener first");
    writeAll(this.#connFd, new TextEncoder().encode("go\n"));
    closeFd(this.#connFd);
    this.#connFd = -1;
  }

  /** Closes the sockets and a listener no sensor took, and removes the directory. Idempotent. */
  async close(): Promise<void> {
    closeFd(this.#listenFd);
    closeFd(this.#connFd);
    closeFd(this.#listenerFd);
    this.#listenFd = this.#connFd = this.#listenerFd = -1;
    await Deno.remove(this.#dir, { recursive: true }).catch(() => {});
  }
}

/**
 * The policy as the worker gets it, with Sentry's own directories to guard: the caller's list
 * when it gives one, else this process's data and configuration directories (found as the CLI
 * finds them: `SENTRY_HOME`, XDG, `HOME`, made absolute), so that the guard never lapses because
 * a caller left the list out.
 */
function policyWithGuard(policy: SeccompSensorOptions["policy"]): SuperviseStart["policy"] {
  if (policy === undefined) return null;
  if (policy.guarded !== undefined) return policy;
  const env = Deno.env.toObject();
  const guarded = new Set<string>();
  for (const find of [dataDir, configDir]) {
    try {
      guarded.add(resolve(Deno.cwd(), find(env)));
    } catch {
      // No HOME and no SENTRY_HOME: Sentry has no directory of its own to guard.
    }
  }
  return { ...policy, guarded: [...guarded] };
}

/** Options for {@link SeccompSensor}. */
export interface SeccompSensorOptions {
  table: ProcessTable;
  /** Ports that make a connection a `db.connect`. */
  databasePorts: ReadonlySet<number>;
  /** Records per batch handed from the worker (default 256). */
  batchMax?: number;
  /** Longest a record waits in the worker before its batch goes (ms, default 20). */
  batchMs?: number;
  /** Turn on SECCOMP_USER_NOTIF_FD_SYNC_WAKE_UP (default true). */
  syncWakeUp?: boolean;
  /** The worker module (a compiled binary may need its own URL). */
  workerUrl?: URL;
  /**
   * The policy the worker enforces before each call runs (block mode), or absent to observe
   * only. The worker compiles it itself and decides with the same `evaluate()`.
   */
  policy?: { resolved: ResolvedPolicy; workspace: string; home: string; guarded?: string[] };
  /**
   * The Landlock plan the launcher applied to the agent. The worker opens files on the agent's
   * behalf with Sentry's own rights, so it must refuse what the plan denies (Sentry's own files
   * above all); a worker that does not read it yet ignores it.
   */
  landlock?: LandlockPlan | null;
  /**
   * The agent's root process (the launcher's pid, which the agent keeps after its execve);
   * {@link SeccompSupervisor.createSensor} fills it in. Without it, the guard cannot tell the
   * tree from the rest and lets signals through (counted as a blind spot).
   */
  root?: number | null;
}

/** The worker's counters as the sensor reports them. */
export interface SeccompCounters extends SeccompWorkerStats {
  /** Whether SYNC_WAKE_UP took (Linux 6.6+). */
  syncWakeUp: boolean;
  /** How the receive loop ended: null while it runs. */
  ended: "stopped" | "hangup" | "error" | null;
}

/**
 * The seccomp tier's sensor: every watched syscall of the tree, with pid, ppid, exe and command
 * line read while the caller was blocked. See the module header for how it fails.
 */
export class SeccompSensor implements Sensor {
  readonly name = "seccomp";
  readonly #options: SeccompSensorOptions;
  readonly #counter = new StatsCounter("seccomp");
  readonly #context: KernelEventContext;
  #fd: number;
  #worker: SeccompCounters = {
    notifications: 0,
    answered: 0,
    denied: 0,
    records: 0,
    batches: 0,
    blind: {},
    syncWakeUp: false,
    ended: null,
  };
  #error: string | null = null;
  readonly #ready: PromiseWithResolvers<void> = Promise.withResolvers();

  /** Takes ownership of a listener fd; see {@link SeccompSupervisor.createSensor}. */
  constructor(listenerFd: number, options: SeccompSensorOptions) {
    this.#fd = listenerFd;
    this.#options = options;
    this.#context = {
      sensor: this.name,
      table: options.table,
      databasePorts: options.databasePorts,
    };
    // Nobody may be waiting on it; a failed start is reported by start() itself.
    this.#ready.promise.catch(() => {});
  }

  /** Resolves once the worker receives notifications; rejects if it could not start. */
  ready(): Promise<void> {
    return this.#ready.promise;
  }

  /** The receive loop's error, if it ended on one. */
  get error(): string | null {
    return this.#error;
  }

  /**
   * Runs the receive loop in a Worker until `signal` aborts, emitting events in batches; then
   * stops the loop, which closes the listener, and emits the last batch.
   */
  async start(emit: (event: SensorEvent) => void, signal: AbortSignal): Promise<void> {
    if (this.#fd < 0) throw new Error("The seccomp sensor was already started");
    const fd = this.#fd;
    this.#fd = -1;
    const control = new SharedArrayBuffer(12);
    const batchMs = this.#options.batchMs ?? 20;
    let workerTid = 0;
    let batches = 0;
    const stop = new Int32Array(control);
    const worker = new Worker(
      this.#options.workerUrl ?? new URL("./seccomp_worker.ts", import.meta.url),
      { type: "module" },
    );
    const ended = Promise.withResolvers<void>();
    let started = false;
    worker.onmessage = (event: MessageEvent<SuperviseMessage>) => {
      const message = event.data;
      switch (message.type) {
        case "ready":
          started = true;
          workerTid = message.tid;
          this.#worker.syncWakeUp = message.syncWakeUp;
          this.#ready.resolve();
          return;
        case "batch":
          batches++;
          this.#take(message.stats);
          for (const record of message.records) this.#record(record, message.callers, emit);
          return;
        case "done":
          this.#take(message.stats);
          this.#worker.ended = message.reason;
          ended.resolve();
          return;
        case "error":
          this.#take(message.stats);
          this.#worker.ended = "error";
          this.#error = message.message;
          this.#ready.reject(new Error(`The seccomp receive loop failed: ${message.message}`));
          ended.resolve();
          return;
      }
    };
    worker.onerror = (event: ErrorEvent) => {
      event.preventDefault();
      this.#error = event.message;
      this.#worker.ended = "error";
      // The worker died before it took the listener: it is still ours to close.
      if (!started) closeFd(fd);
      this.#ready.reject(new Error(`The seccomp worker failed to start: ${event.message}`));
      ended.resolve();
    };
    const start: SuperviseStart = {
      landlock: this.#options.landlock ?? null,
      root: this.#options.root ?? null,
      role: "supervise",
      listenerFd: fd,
      control,
      syncWakeUp: this.#options.syncWakeUp ?? true,
      batchMax: this.#options.batchMax ?? 256,
      batchMs,
      policy: policyWithGuard(this.#options.policy),
    };
    installWakeSignal();
    worker.postMessage(start);
    const aborted = new Promise<void>((resolve) => {
      if (signal.aborted) resolve();
      else signal.addEventListener("abort", () => resolve(), { once: true });
    });
    // The worker blocks in the kernel; records that wait there longer than a batch interval
    // (the agent went quiet) are fetched by waking it with a signal.
    let seen = 0;
    const kicker = setInterval(() => {
      if (
        workerTid !== 0 &&
        ((Atomics.load(stop, 1) > 0 && batches === seen) || Atomics.load(stop, 2) > 0)
      ) wakeThread(workerTid);
      seen = batches;
    }, batchMs);
    try {
      await aborted;
      Atomics.store(stop, 0, 1);
      // Wake the loop until it ends; a worker that never answers is given up on after 5 s.
      const deadline = Date.now() + 5_000;
      while (this.#worker.ended === null && Date.now() < deadline) {
        if (workerTid !== 0) wakeThread(workerTid);
        const tick = Promise.withResolvers<void>();
        const id = setTimeout(tick.resolve, 20);
        await Promise.race([ended.promise, tick.promise]);
        clearTimeout(id);
      }
    } finally {
      clearInterval(kicker);
      worker.terminate();
    }
  }

  /**
   * Closes the listener if {@link start} never took it (the agent's filtered calls then fail
   * with ENOSYS). After start, the worker owns it and closes it when it stops.
   */
  close(): void {
    closeFd(this.#fd);
    this.#fd = -1;
  }

  /** Counters of the receive loop: notifications, answers, records, batches, blind spots. */
  counters(): SeccompCounters {
    return { ...this.#worker, blind: { ...this.#worker.blind } };
  }

  /** The sensor's counters. `polls` counts the worker's batches; nothing is ever dropped. */
  stats(): SensorStats {
    const stats = this.#counter.snapshot();
    stats.polls = this.#worker.batches;
    for (const [id, count] of Object.entries(this.#worker.blind)) {
      if (count > 0) {
        stats.blindSpots.push({ id, reason: SECCOMP_BLIND_SPOTS[id] ?? id, count });
      }
    }
    if (this.error !== null) {
      // Never silent: from here on the tree's watched syscalls fail with ENOSYS (closed).
      stats.blindSpots.push({
        id: "supervisor_failed",
        reason: `the supervisor stopped: ${this.error}; the tree's watched syscalls then fail`,
        count: 1,
      });
    }
    return stats;
  }

  #take(stats: SeccompWorkerStats): void {
    Object.assign(this.#worker, stats);
  }

  #record(
    record: SeccompRecord,
    callers: readonly CallerInfo[],
    emit: (event: SensorEvent) => void,
  ): void {
    const caller = callers[record.caller];
    if (caller === undefined) return;
    this.#options.table.set(caller.pid, {
      ppid: caller.ppid,
      exe: caller.exe,
      cmdline: caller.cmdline,
    });
    const ts = new Date(record.ms).toISOString();
    if (record.control !== undefined) {
      // Sentry's guard refused a signal, trace or memory access aimed outside the tree.
      this.#counter.counters.emitted++;
      emit({
        pid: caller.pid,
        ppid: caller.ppid,
        exe: caller.exe,
        cmdline: caller.cmdline,
        kind: "proc.control",
        target: record.control.target,
        detail: caller.tid !== caller.pid
          ? { ...record.control.detail, tid: caller.tid }
          : { ...record.control.detail },
        sensor: this.name,
        ts,
      });
    }
    for (const action of record.actions) {
      // A PATH search miss (the file is not there as the caller sees it, looked up through its
      // descriptor for an exec through one): no program ran; fold it as the eBPF tier does.
      if (action.op === "exec" && action.result === -2) {
        this.#counter.counters.deduplicated++;
        continue;
      }
      const event = toSensorEvent({ ...action, ts }, this.#context);
      if (event === null) continue;
      // Sentry failed the call before it ran: the engine gives it the response `block`.
      if (record.denied !== undefined) event.detail.blocked = errnoName(record.denied);
      this.#counter.counters.emitted++;
      emit(event);
    }
  }
}
