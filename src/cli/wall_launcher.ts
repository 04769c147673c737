/**
 * `sentry __launch --wall PLAN --session ID -- COMMAND...`: the launcher of `sentry run` for every tier but
 * seccomp (which has its own, src/cli/launcher.ts). Deno cannot run code between fork and exec,
 * so this second copy of Sentry becomes the agent, in the same pid, after it has put up the
 * agent's wall on its main thread (the thread that calls execve), in this order:
 * 1. read the plan (a JSON {@link WallPlan} the supervisor wrote, 0600) and resolve the
 *    program on PATH;
 * 2. as root, a private mount namespace in which Sentry's own directories are covered by an
 *    empty, read-only tmpfs (`mask`), and the capabilities that would let a root agent switch
 *    Sentry off dropped from the bounding set (`dropCapabilities`);
 * 3. `prctl(PR_SET_NO_NEW_PRIVS)` and Landlock: the plan's rules (mode `block`: the policy's
 *    deny lists), its scopes (no signal, and no abstract unix socket, to anything outside the
 *    agent's domain; ptrace of processes outside it is refused by Landlock itself), and the
 *    device-creation rights, which also take mount, umount and pivot_root away from the agent;
 * 4. stop itself (SIGSTOP): Sentry takes its first look at the tree, then sends SIGCONT;
 * 5. reset the signals Deno leaves ignored, and `execve` the agent.
 *
 * Any step that fails ends the launch with a one-line error on stderr and exit 1 before the
 * agent runs: the agent never runs without the wall the supervisor announced.
 *
 * @module
 */

import type { Command } from "commander";
import { execve, resetSignals, setNoNewPrivs } from "../platform/seccomp_linux.ts";
import { applyLandlock } from "../platform/landlock_linux.ts";
import { ACCESS_FS, parseLandlockPlan } from "../platform/landlock_plan.ts";
import {
  dropBoundingCapabilities,
  enterPrivateMountNamespace,
  maskDirectory,
} from "../platform/wall_linux.ts";
import { LaunchError, resolveCommand } from "../session/mod.ts";
import { parseWallPlan } from "../session/wall.ts";
import { ExitCode } from "./errors.ts";

/** Registers the hidden `__launch` command. */
export function registerWallLauncherCommand(program: Command): void {
  program.command("__launch", { hidden: true })
    .requiredOption("--wall <file>")
    .requiredOption("--session <id>")
    .argument("<command...>")
    .passThroughOptions()
    .action((command: string[], opts: { wall: string }) => {
      runWallLauncher({ wall: opts.wall, command });
    });
}

/** Options for {@link runWallLauncher}. */
export interface WallLauncherOptions {
  /** The plan file the supervisor wrote. */
  wall: string;
  /** The agent's argv; `command[0]` is looked up on PATH. */
  command: readonly string[];
}

/**
 * Puts up the wall, stops, then execs the agent (see the module header). Returns only by
 * throwing an {@link ExitCode}: 127/126 for a command that cannot be found or run, 1 for a wall
 * that cannot be put up.
 */
export function runWallLauncher(options: WallLauncherOptions): never {
  const [name] = options.command;
  if (name === undefined) throw new ExitCode(2, "No command to launch");
  let path: string;
  try {
    path = resolveCommand(name, { PATH: Deno.env.get("PATH") ?? "", cwd: Deno.cwd() });
  } catch (error) {
    if (error instanceof LaunchError) throw new ExitCode(error.code, error.message);
    throw error;
  }
  try {
    const plan = parseWallPlan(Deno.readTextFileSync(options.wall));
    if (plan.mask.length > 0) {
      enterPrivateMountNamespace();
      for (const dir of plan.mask) maskDirectory(dir);
    }
    if (plan.dropCapabilities) dropBoundingCapabilities();
    if (plan.landlock !== null) {
      const landlock = parseLandlockPlan(JSON.stringify(plan.landlock));
      // Handled and granted nowhere: no device node can be made (a root agent could read the
      // disk under the mask through one). And a thread with any file right handled may not
      // mount, unmount or pivot_root, so the mask above stays.
      const devices = ACCESS_FS.MAKE_CHAR | ACCESS_FS.MAKE_BLOCK;
      landlock.handledFs |= devices;
      for (const rule of landlock.rules) rule.access &= ~devices;
      landlock.rules = landlock.rules.filter((rule) => rule.access !== 0);
      setNoNewPrivs();
      applyLandlock(landlock);
    }
  } catch (error) {
    throw new ExitCode(
      1,
      `Cannot put up the agent's wall, so it does not run: ${
        error instanceof Error ? error.message : String(error)
      }`,
    );
  }
  // Sentry looks at the stopped tree, then continues it.
  Deno.kill(Deno.pid, "SIGSTOP");
  resetSignals();
  const env = Object.entries(Deno.env.toObject()).map(([key, value]) => `${key}=${value}`);
  const error = execve({ path, argv: options.command, env });
  const code = error.errno === 2 || error.errno === 20 ? 127 : 126;
  throw new ExitCode(code, `Cannot run "${name}": ${error.message}`);
}
