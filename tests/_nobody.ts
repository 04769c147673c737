/**
 * Running `sentry` as a real non-root user (uid 65534, no capabilities) from a root test: a
 * home it owns, with a copy of Deno's cache it can read, and `setpriv` to switch to it.
 * @module
 */
import { join } from "node:path";

const ROOT = new URL("../", import.meta.url).pathname;

function hasSetpriv(): boolean {
  try {
    return Deno.statSync("/usr/bin/setpriv").isFile;
  } catch {
    return false;
  }
}

/** Why a test cannot switch to uid 65534 here, or null when it can. */
export const NOBODY_SKIP: string | null = Deno.uid() !== 0
  ? "needs root to switch to uid 65534"
  : !hasSetpriv()
  ? "needs setpriv"
  : null;

/** Runs a command to completion; throws with its stderr when it fails. */
export async function run(cmd: string, args: string[]): Promise<void> {
  const out = await new Deno.Command(cmd, { args, stdout: "null", stderr: "piped" }).output();
  if (!out.success) throw new Error(`${cmd} failed: ${new TextDecoder().decode(out.stderr)}`);
}

/** A home that uid 65534 owns: `ws` is its workspace, `data` its `SENTRY_HOME`. */
export interface NobodyHome {
  dir: string;
  denoDir: string;
  ws: string;
  data: string;
}

/**
 * Makes a home for uid 65534 under a new temporary directory (remove `dir` afterwards): a copy
 * of Deno's cache, an empty workspace, what `prepare` writes (as root), all then owned by 65534.
 */
export async function nobodyHome(
  prefix: string,
  prepare: (home: NobodyHome) => Promise<void> = () => Promise.resolve(),
): Promise<NobodyHome> {
  const dir = await Deno.makeTempDir({ prefix });
  const info = await new Deno.Command(Deno.execPath(), {
    args: ["info", "--json"],
    stdout: "piped",
    stderr: "null",
  }).output();
  const home: NobodyHome = {
    dir,
    denoDir: join(dir, "deno"),
    ws: join(dir, "ws"),
    data: join(dir, "sentry"),
  };
  await run("cp", ["-a", JSON.parse(new TextDecoder().decode(info.stdout)).denoDir, home.denoDir]);
  await Deno.mkdir(home.ws);
  await prepare(home);
  await run("chown", ["-R", "65534:65534", dir]);
  await Deno.chmod(dir, 0o755);
  return home;
}

/** Runs `sentry ARGS` as uid 65534 with no capabilities, in the home's workspace. */
export async function sentryAsNobody(
  home: NobodyHome,
  args: string[],
  timeoutMs = 90_000,
): Promise<{ code: number; stdout: string; stderr: string }> {
  const out = await new Deno.Command("setpriv", {
    args: [
      "--reuid=65534",
      "--regid=65534",
      "--clear-groups",
      "--",
      Deno.execPath(),
      "run",
      "-A",
      "--cached-only",
      "--config",
      join(ROOT, "deno.json"),
      join(ROOT, "main.ts"),
      ...args,
    ],
    cwd: home.ws,
    clearEnv: true,
    env: {
      DENO_DIR: home.denoDir,
      HOME: home.dir,
      SENTRY_HOME: home.data,
      PATH: "/usr/local/bin:/usr/bin:/bin",
      DENO_NO_UPDATE_CHECK: "1",
      NO_COLOR: "1",
    },
    stdin: "null",
    stdout: "piped",
    stderr: "piped",
    signal: AbortSignal.timeout(timeoutMs),
  }).output();
  const text = new TextDecoder();
  return { code: out.code, stdout: text.decode(out.stdout), stderr: text.decode(out.stderr) };
}
