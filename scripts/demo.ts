// deno-lint-ignore-file no-console
/**
 * The demo: runs a bundled example agent under Sentry in a temporary workspace, with a fake
 * HOME holding a fake SSH key. The agent does ordinary work, then reads the key, writes
 * ~/.bashrc, deletes workspace files, connects to a local database port, runs a denied tool and
 * spikes the CPU. Sentry detects each step and pauses the agent where the policy says; the demo
 * plays the operator and resumes it each time (`sentry resume last`), then prints
 * `sentry report last`. The session is journaled in the user's own data directory (SENTRY_HOME,
 * else ~/.local/share/sentry), so `sentry report`, `sentry events`, `sentry serve` and the
 * dashboard token work on it afterwards; the temporary workspace and home are kept for
 * `sentry rollback`, and the demo says how to remove them.
 *
 * Run: deno task demo   (needs python3)
 * @module
 */
import { fileURLToPath } from "node:url";
import { join } from "node:path";
import { dataDir } from "../src/platform/mod.ts";

const here = fileURLToPath(new URL("./demo/", import.meta.url));
const main = fileURLToPath(new URL("../main.ts", import.meta.url));
const config = fileURLToPath(new URL("../deno.json", import.meta.url));
const sentry = [Deno.execPath(), "run", "-A", "--config", config, main];

/** The real python3 executable (not a shim that depends on HOME), or null. */
async function findPython(): Promise<string | null> {
  try {
    const out = await new Deno.Command("python3", {
      args: ["-c", "import sys; print(sys.executable)"],
      stdout: "piped",
      stderr: "null",
    }).output();
    const path = new TextDecoder().decode(out.stdout).trim();
    return out.success && path !== "" ? path : null;
  } catch {
    return null;
  }
}

const python = await findPython();
if (python === null) {
  console.error(
    "demo: python3 is needed to run the example agent; install it (apt-get install python3) and run again",
  );
  Deno.exit(1);
}
// The demo gives the agent a fake HOME; Deno must keep using the real module cache.
const denoDir = Deno.env.get("DENO_DIR") ??
  join(Deno.env.get("XDG_CACHE_HOME") ?? join(Deno.env.get("HOME") ?? "/root", ".cache"), "deno");

const root = await Deno.makeTempDir({ prefix: "sentry-demo-" });
const workspace = join(root, "workspace");
const home = join(root, "home");
// The user's own journal, not a temporary one: the hints Sentry prints (`sentry report ID`, the
// dashboard's token) must work after the demo, from the user's shell.
const journalDir = dataDir(Deno.env.toObject());
const env = {
  HOME: home,
  SENTRY_HOME: journalDir,
  DEMO_STEP_SECONDS: "0.4",
  DEMO_CPU_SECONDS: "3.5",
  PATH: Deno.env.get("PATH") ?? "/usr/bin:/bin",
  DENO_DIR: denoDir,
};
await Deno.mkdir(join(workspace, "bin"), { recursive: true });
await Deno.mkdir(join(home, ".ssh"), { recursive: true, mode: 0o700 });
await Deno.writeTextFile(
  join(home, ".ssh", "id_rsa"),
  "-----BEGIN OPENSSH PRIVATE KEY-----\nfake key for the Sentry demo\n-----END OPENSSH PRIVATE KEY-----\n",
  { mode: 0o600 },
);
await Deno.writeTextFile(join(home, ".bashrc"), "# the demo's fake .bashrc\n");
// A stand-in for netcat, so the demo needs no network tools: it only waits a moment.
await Deno.writeTextFile(join(workspace, "bin", "nc"), "#!/bin/sh\nsleep 0.6\n", { mode: 0o755 });

// A local "database": a listener on the first free database port.
let listener: Deno.TcpListener | null = null;
for (const port of [5432, 3306, 6379, 27017, 26257, 9042, 5984, 1433]) {
  try {
    listener = Deno.listen({ hostname: "127.0.0.1", port });
    break;
  } catch {
    // In use: try the next.
  }
}
if (listener === null) {
  console.error("demo: no database port is free on 127.0.0.1 for the demo's listener");
  Deno.exit(1);
}
const dbPort = (listener.addr as Deno.NetAddr).port;
(async () => {
  for await (const conn of listener) conn.close();
})().catch(() => {});

const run = async (args: string[], options: { quiet?: boolean } = {}) => {
  if (!options.quiet) console.log(`\n$ sentry ${args.join(" ")}`);
  return await new Deno.Command(sentry[0] as string, {
    args: [...sentry.slice(1), ...args],
    env,
    cwd: workspace,
    stdout: "inherit",
    stderr: "inherit",
  }).output();
};

const args = [
  "run",
  "--policy",
  join(here, "policy.yaml"),
  "--workspace",
  workspace,
  "--name",
  "demo-agent",
  "--",
  python,
  join(here, "agent.py"),
];
console.log(`$ sentry ${args.join(" ")}`);
const child = new Deno.Command(sentry[0] as string, {
  args: [...sentry.slice(1), ...args],
  env: { ...env, DEMO_DB_PORT: String(dbPort) },
  cwd: workspace,
  stdout: "inherit",
  stderr: "piped",
}).spawn();

// Play the operator: echo Sentry's lines, and resume the agent each time it is paused.
const decoder = new TextDecoder();
let buffer = "";
let resumes = 0;
let session: string | null = null;
for await (const chunk of child.stderr) {
  buffer += decoder.decode(chunk, { stream: true });
  let nl: number;
  while ((nl = buffer.indexOf("\n")) >= 0) {
    const line = buffer.slice(0, nl);
    buffer = buffer.slice(nl + 1);
    console.error(line);
    session ??= /as session ([0-9A-Z]+)/.exec(line)?.[1] ?? null;
    if (line.includes("paused the agent")) {
      resumes++;
      await new Promise((r) => setTimeout(r, 700));
      console.log("\n[operator] looked at the alert; resuming the agent");
      await run(["resume", "last"]);
    }
  }
}
const status = await child.status;
listener.close();
console.log(
  `\n[demo] the agent was paused and resumed ${resumes} times; sentry exited with code ${status.code}`,
);
await run(["report", session ?? "last"]);
const ref = session ?? "last";
console.log(`
[demo] the session is journaled in ${journalDir}; from any shell, try:
  sentry report ${ref}
  sentry events --session ${ref} --min-risk 30
  sentry serve            # the dashboard; paste the token from: sentry token
  sentry rollback ${ref} --dry-run
[demo] its workspace and fake home stay in ${root}; remove them with: rm -rf ${root}`);
