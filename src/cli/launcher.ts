/**
 * `sentry __seccomp_launch --control SOCKET [--landlock PLAN] -- COMMAND...`: the launcher of the
 * seccomp tier, a second copy of Sentry that becomes the agent. Deno cannot run code between fork
 * and exec, so this process does, in order:
 * 1. connect to the supervisor's control socket, read the Landlock plan, and resolve the program
 *    on PATH (any connect or open after the filter would wait on a listener nobody reads yet);
 * 2. start the handover Worker (its thread exists before the filter, so it is not filtered);
 * 3. `prctl(PR_SET_NO_NEW_PRIVS)`, then Landlock (the plan's rules, then
 *    `landlock_restrict_self`), then `seccomp(SET_MODE_FILTER, NEW_LISTENER)`, all on the main
 *    thread only (both are per thread; this is the thread that calls execve). A plan that
 *    cannot be applied fails the launch: the agent never runs without its wall;
 * 4. hand the listener to the supervisor (SCM_RIGHTS, from the Worker) and wait for "go": the
 *    listener is O_CLOEXEC, so an execve before the supervisor holds it would leave every
 *    filtered call of the agent failing with ENOSYS;
 * 5. reset the signals Deno leaves ignored (SIGPIPE, 32, 33), which would survive execve;
 * 6. `execve` the agent from the main thread, in this same pid: Sentry's tree code uses that pid
 *    as the root. The execve is itself the first notification the supervisor answers.
 *
 * A command that cannot be found (127) or run (126) is reported to the supervisor, which throws
 * a one-line `SeccompLaunchError`; this process then exits with that code, silently.
 *
 * @module
 */

import type { Command } from "commander";
import {
  closeFd,
  execve,
  installListenerFilter,
  resetSignals,
  setNoNewPrivs,
  SyscallError,
  unixConnect,
  writeAll,
} from "../platform/seccomp_linux.ts";
import { buildSeccompFilter } from "../platform/seccomp_filter.ts";
import { applyLandlock } from "../platform/landlock_linux.ts";
import { dropBoundingCapabilities } from "../platform/wall_linux.ts";
import { type LandlockPlan, parseLandlockPlan } from "../platform/landlock_plan.ts";
import { LaunchError, resolveCommand } from "../session/mod.ts";
import { HANDOVER, type HandoverMessage, type HandoverStart } from "../sensors/seccomp_worker.ts";
import { ExitCode } from "./errors.ts";

/** Registers the hidden `__seccomp_launch` command. */
export function registerLauncherCommand(program: Command): void {
  program.command("__seccomp_launch", { hidden: true })
    .requiredOption("--control <path>")
    .option("--landlock <file>")
    .argument("<command...>")
    .passThroughOptions()
    .action(async (command: string[], opts: { control: string; landlock?: string }) => {
      await runSeccompLauncher({
        control: opts.control,
        command,
        ...(opts.landlock === undefined ? {} : { landlock: opts.landlock }),
      });
    });
}

/** Options for {@link runSeccompLauncher}. */
export interface SeccompLauncherOptions {
  /** The supervisor's control socket. */
  control: string;
  /** The agent's argv; `command[0]` is looked up on PATH. */
  command: readonly string[];
  /** How long to wait for the supervisor's "go" (ms, default 120 s). */
  goTimeoutMs?: number;
  /** A Landlock plan (JSON, written by the supervisor) to apply before the seccomp filter. */
  landlock?: string;
}

const HANDOVER_WORKER = new URL("../sensors/seccomp_worker.ts", import.meta.url);

/**
 * Runs the launcher's steps (see the module header). Returns only by throwing: an
 * {@link ExitCode} (126/127 for a command that cannot run, 1 for a launcher failure).
 */
export async function runSeccompLauncher(options: SeccompLauncherOptions): Promise<never> {
  const [name] = options.command;
  if (name === undefined) throw new ExitCode(2, "No command to launch");
  let socket: number;
  try {
    socket = unixConnect(options.control);
  } catch (error) {
    // Without a supervisor the agent would run unwatched: never start it.
    throw new ExitCode(1, `Cannot reach Sentry's supervisor: ${message(error)}`);
  }
  const tell = (line: string) => writeAll(socket, new TextEncoder().encode(`${line}\n`));
  // Read now: once restricted, this thread may not be allowed to open it.
  let landlock: LandlockPlan | null = null;
  if (options.landlock !== undefined) {
    try {
      landlock = parseLandlockPlan(Deno.readTextFileSync(options.landlock));
    } catch (error) {
      const why = `Cannot read the Landlock plan "${options.landlock}": ${message(error)}`;
      tell(`fail ${why.replaceAll("\n", " ")}`);
      closeFd(socket);
      throw new ExitCode(1, why);
    }
  }
  let path: string;
  try {
    path = resolveCommand(name, { PATH: Deno.env.get("PATH") ?? "", cwd: Deno.cwd() });
  } catch (error) {
    if (!(error instanceof LaunchError)) throw error;
    tell(`error ${error.code} ${error.message.replaceAll("\n", " ")}`);
    closeFd(socket);
    throw new ExitCode(error.code);
  }
  const control = new SharedArrayBuffer(8);
  const state = new Int32Array(control);
  const worker = new Worker(HANDOVER_WORKER, { type: "module" });
  let failure = "";
  let listener = -1;
  try {
    await new Promise<void>((resolve, reject) => {
      worker.onmessage = (event: MessageEvent<HandoverMessage>) => {
        if (event.data.type === "ready") resolve();
        else failure = event.data.message;
      };
      worker.onerror = (event: ErrorEvent) => {
        event.preventDefault();
        reject(new Error(event.message));
      };
      const start: HandoverStart = { role: "handover", socketFd: socket, control };
      worker.postMessage(start);
    });
    // A root agent loses what would let it switch Sentry off or reach files past every path
    // check, as under the wall launcher of the other tiers (DROPPED_CAPABILITIES).
    if (Deno.uid() === 0) dropBoundingCapabilities();
    // From here on, the main thread makes no filtered call (open, connect...) before execve.
    setNoNewPrivs();
    // Before the filter: its opens (O_PATH, one per rule) must not wait on the supervisor.
    if (landlock !== null) applyLandlock(landlock);
    listener = installListenerFilter(buildSeccompFilter());
    Atomics.store(state, 1, listener);
    Atomics.store(state, 0, HANDOVER.SEND);
    Atomics.notify(state, 0);
    const deadline = performance.now() + (options.goTimeoutMs ?? 120_000);
    while (state[0] !== HANDOVER.GO && state[0] !== HANDOVER.FAILED) {
      const left = deadline - performance.now();
      if (left <= 0) throw new Error("Sentry's supervisor did not say go in time");
      Atomics.wait(state, 0, HANDOVER.SEND, Math.min(left, 1000));
    }
    if (state[0] === HANDOVER.FAILED) {
      // The worker's "failed" message is queued on this thread's event loop; let it arrive.
      await new Promise((resolve) => setTimeout(resolve, 0));
      throw new Error(failure || "The listener handover failed");
    }
    closeFd(listener);
  } catch (error) {
    // With no listener left open, a filtered call fails with ENOSYS instead of waiting forever.
    closeFd(listener);
    worker.terminate();
    try {
      tell(`fail ${message(error)}`);
    } catch {
      // The supervisor is gone; the exit code says it.
    }
    throw new ExitCode(1, `Cannot start the agent under seccomp: ${message(error)}`);
  }
  closeFd(socket);
  resetSignals();
  const env = Object.entries(Deno.env.toObject()).map(([key, value]) => `${key}=${value}`);
  const error = execve({ path, argv: options.command, env });
  // Still here: the exec failed (the file changed since it was resolved, or is not a program).
  const code = error.errno === 2 || error.errno === 20 ? 127 : 126;
  throw new ExitCode(code, `Cannot run "${name}": ${execMessage(error)}`);
}

function execMessage(error: SyscallError): string {
  switch (error.errno) {
    case 2:
      return "no such file";
    case 8:
      return "not an executable format";
    case 13:
      return "permission denied";
    default:
      return error.message;
  }
}

function message(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}
