// deno-lint-ignore-file no-console
/**
 * Puts a `sentry` command on PATH that runs this checkout from wherever the user stands, until
 * the compiled binary is the download. It writes a small shell wrapper (mode 0755) that runs
 * `main.ts` with this checkout's `deno.json` and the Deno that ran this script, so the working
 * directory, and with it the default workspace, stays the user's own.
 *
 * Run: deno task install [--bin-dir DIR] [--remove]   (default DIR: ~/.local/bin)
 * @module
 */
import { fileURLToPath } from "node:url";
import { join } from "node:path";

/** What {@link wrapperScript} runs. */
export interface WrapperOptions {
  /** The Deno executable, absolute. */
  deno: string;
  /** This checkout's `deno.json` and `main.ts`, absolute. */
  config: string;
  main: string;
}

/** Quotes a value for a POSIX shell. */
function shellQuote(text: string): string {
  return `'${text.replaceAll("'", `'"'"'`)}'`;
}

/** The wrapper's text: a POSIX shell script that runs the checkout's CLI with its arguments. */
export function wrapperScript(options: WrapperOptions): string {
  return [
    "#!/bin/sh",
    "# sentry: runs the Sentry checkout's CLI from any directory (written by deno task install).",
    `exec ${shellQuote(options.deno)} run -A --config ${shellQuote(options.config)} ${
      shellQuote(options.main)
    } "$@"`,
    "",
  ].join("\n");
}

/** The marker line that says a file is our wrapper, so `--remove` never deletes another `sentry`. */
const MARKER = "written by deno task install";

function usage(message: string): never {
  console.error(`install: ${message}`);
  console.error("usage: deno task install [--bin-dir DIR] [--remove]");
  Deno.exit(2);
}

if (import.meta.main) {
  const args = [...Deno.args];
  let binDir: string | null = null;
  let remove = false;
  while (args.length > 0) {
    const arg = args.shift() as string;
    if (arg === "--remove") remove = true;
    else if (arg === "--bin-dir") {
      const value = args.shift();
      if (value === undefined || value === "") usage('"--bin-dir" needs a directory');
      binDir = value;
    } else usage(`unknown argument "${arg}"`);
  }
  const home = Deno.env.get("HOME");
  if (binDir === null) {
    if (home === undefined) usage("HOME is not set: give --bin-dir");
    binDir = join(home, ".local", "bin");
  }
  const target = join(binDir, "sentry");
  let existing: string | null = null;
  try {
    existing = await Deno.readTextFile(target);
  } catch {
    existing = null;
  }
  if (existing !== null && !existing.includes(MARKER)) {
    console.error(
      `install: "${target}" exists and is not this script's wrapper (a compiled sentry?): left as it is`,
    );
    Deno.exit(1);
  }
  if (remove) {
    if (existing === null) console.log(`nothing to remove: no "${target}"`);
    else {
      await Deno.remove(target);
      console.log(`removed ${target}`);
    }
    Deno.exit(0);
  }
  const script = wrapperScript({
    deno: Deno.execPath(),
    config: fileURLToPath(new URL("../deno.json", import.meta.url)),
    main: fileURLToPath(new URL("../main.ts", import.meta.url)),
  });
  await Deno.mkdir(binDir, { recursive: true });
  // Written aside and renamed, so a sentry running now never reads half a script.
  const tmp = `${target}.tmp-${Deno.pid}`;
  await Deno.writeTextFile(tmp, script, { mode: 0o755 });
  await Deno.chmod(tmp, 0o755);
  await Deno.rename(tmp, target);
  console.log(`installed ${target}: runs ${fileURLToPath(new URL("../main.ts", import.meta.url))}`);
  const path = (Deno.env.get("PATH") ?? "").split(":");
  if (!path.includes(binDir)) {
    console.log(
      `note: ${binDir} is not on your PATH; add it, for example: echo 'export PATH="${binDir}:$PATH"' >> ~/.profile`,
    );
  }
}
