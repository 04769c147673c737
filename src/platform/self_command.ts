/**
 * How Sentry re-invokes itself, for example to run a child command or restart a daemon.
 *
 * A compiled binary is its own program, so the command is just its path. Under `deno run`, the
 * program is the deno executable plus the flags and the entry point, and the project's deno.json
 * must be passed so that the child resolves the same import map.
 *
 * @module
 */

import { statSync } from "node:fs";
import { dirname, join } from "node:path";
import { fileURLToPath } from "node:url";

/** Options for {@link selfCommand}, {@link isCompiled} and {@link mainModulePath}; all default to the running process. */
export interface SelfCommandOptions {
  /** Path of the running executable; defaults to `Deno.execPath()`. */
  execPath?: string | undefined;
  /** URL of the main module; defaults to `Deno.mainModule`. */
  mainModule?: string | undefined;
  /**
   * Whether this is a compiled binary; defaults to `Deno.build.standalone`. `null` means the
   * runtime does not say, so a heuristic decides (see {@link isCompiled}).
   */
  standalone?: boolean | null | undefined;
  /** Whether a regular file exists at a path; defaults to a `stat` of the file system. */
  isFile?: ((path: string) => boolean) | undefined;
}

/** The path fragment that `deno compile` puts in the main module of a compiled binary. */
const COMPILED_MARKER = /[\\/]deno-compile-[^\\/]+[\\/]/;

function defaultIsFile(path: string): boolean {
  try {
    return statSync(path).isFile();
  } catch {
    return false;
  }
}

/**
 * Returns whether Sentry runs as a `deno compile` binary. Uses `Deno.build.standalone` when the
 * runtime has it; otherwise the binary is compiled when its main module lives in deno compile's
 * virtual `deno-compile-<name>` directory, or when the executable is not named `deno`.
 */
export function isCompiled(options: SelfCommandOptions = {}): boolean {
  // Older runtimes lack `standalone`, hence the loose read.
  const standalone = options.standalone === undefined
    ? (Deno.build as { standalone?: unknown }).standalone
    : options.standalone;
  if (typeof standalone === "boolean") return standalone;
  const mainModule = options.mainModule ?? Deno.mainModule;
  if (COMPILED_MARKER.test(mainModule)) return true;
  // Split on both separators so Windows paths are read right on any host (tests run on Linux).
  const name = (options.execPath ?? Deno.execPath()).split(/[\\/]/).at(-1)?.toLowerCase();
  return name !== "deno" && name !== "deno.exe";
}

/**
 * Returns the file path of the main module (main.ts under `deno run`).
 *
 * @throws {TypeError} when the main module is not a local file, as with `deno eval` or a
 * remote entry point; Sentry cannot re-run those.
 */
export function mainModulePath(options: SelfCommandOptions = {}): string {
  const mainModule = options.mainModule ?? Deno.mainModule;
  if (!mainModule.startsWith("file:")) {
    throw new TypeError(
      `Cannot locate Sentry's main module "${mainModule}": it is not a local file`,
    );
  }
  return fileURLToPath(mainModule);
}

/**
 * Returns the argv prefix that runs Sentry again: `[execPath]` in a compiled binary, otherwise
 * `[deno, "run", "-A", "--config", <deno.json beside main.ts>, <main.ts>]`, where `--config` is
 * left out when there is no deno.json beside main.ts. Append Sentry's own arguments to it.
 *
 * @throws {TypeError} under `deno run` when the main module is not a local file.
 */
export function selfCommand(options: SelfCommandOptions = {}): string[] {
  const execPath = options.execPath ?? Deno.execPath();
  if (isCompiled(options)) return [execPath];
  const main = mainModulePath(options);
  const config = join(dirname(main), "deno.json");
  const isFile = options.isFile ?? defaultIsFile;
  const configArgs = isFile(config) ? ["--config", config] : [];
  return [execPath, "run", "-A", ...configArgs, main];
}
