import { isAbsolute, join } from "node:path";

/** Why a command cannot be started: it does not exist (127) or may not be executed (126). */
export class LaunchError extends Error {
  /** The shell's exit code for the same failure. */
  readonly code: 126 | 127;

  /** Builds the error with the exit code a shell would give. */
  constructor(message: string, code: 126 | 127) {
    super(message);
    this.name = "LaunchError";
    this.code = code;
  }
}

/**
 * Finds the executable a command names, as a shell would: a name with a slash is a path, other
 * names are searched in PATH. Throws a {@link LaunchError} (127 when it does not exist, 126 when
 * it is not executable) so `sentry run` fails clearly before anything starts.
 */
export function resolveCommand(command: string, env: { PATH?: string; cwd: string }): string {
  const candidates = command.includes("/")
    ? [isAbsolute(command) ? command : join(env.cwd, command)]
    : (env.PATH ?? "/usr/local/bin:/usr/bin:/bin").split(":").filter(Boolean).map((dir) =>
      join(dir, command)
    );
  let denied: string | null = null;
  for (const path of candidates) {
    let info: Deno.FileInfo;
    try {
      info = Deno.statSync(path);
    } catch {
      continue;
    }
    if (!info.isFile) {
      denied ??= path;
      continue;
    }
    if (((info.mode ?? 0) & 0o111) === 0) {
      denied ??= path;
      continue;
    }
    return path;
  }
  if (denied !== null) {
    throw new LaunchError(`Cannot run "${command}": "${denied}" is not an executable file`, 126);
  }
  throw new LaunchError(`Command not found: "${command}"`, 127);
}

/** The argv that starts a command stopped: the shell stops itself, then execs the command. */
export function launcherArgs(command: readonly string[]): string[] {
  // `kill -STOP $$` stops the shell before the agent runs a single instruction; Sentry sees it
  // stopped, takes its first look at the tree, then sends SIGCONT and the shell execs the agent
  // in the same pid. The agent sees no wrapper: exec replaces the shell entirely.
  return ["/bin/sh", "-c", 'kill -STOP $$; exec "$0" "$@"', ...command];
}

/** Waits until a process is stopped (state T), polling /proc; false on timeout or exit. */
export async function waitStopped(pid: number, timeoutMs: number): Promise<boolean> {
  const deadline = Date.now() + timeoutMs;
  while (Date.now() < deadline) {
    let state: string | null = null;
    try {
      const text = Deno.readTextFileSync(`/proc/${pid}/stat`);
      state = text.slice(text.lastIndexOf(")") + 2, text.lastIndexOf(")") + 3);
    } catch {
      return false;
    }
    if (state === "T" || state === "t") return true;
    if (state === "Z") return false;
    await new Promise((r) => setTimeout(r, 1));
  }
  return false;
}
