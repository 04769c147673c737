/**
 * Where Sentry keeps its journal and its configuration.
 *
 * Resolution is a pure function of an environment record (and the OS), so it can be tested
 * without touching the real home directory; creating the directory is a separate step.
 *
 * @module
 */

import { chmodSync, mkdirSync, statSync } from "node:fs";
import { join } from "node:path";

/** An environment, as `Deno.env.toObject()` returns it. */
export type Env = Readonly<Record<string, string | undefined>>;

/** Options for {@link dataDir}. */
export interface DirOptions {
  /** The operating system; defaults to `Deno.build.os`. Only `darwin` changes the data dir. */
  os?: string | undefined;
}

/** Reads a variable, treating an empty value as unset (as the XDG spec asks). */
function read(env: Env, name: string): string | undefined {
  const value = env[name];
  return value === undefined || value === "" ? undefined : value;
}

/** Reads an XDG base directory, which the spec says to ignore unless it is absolute. */
function readXdg(env: Env, name: string): string | undefined {
  const value = read(env, name);
  return value !== undefined && value.startsWith("/") ? value : undefined;
}

function home(env: Env, what: string): string {
  const dir = read(env, "HOME");
  if (dir === undefined) {
    throw new TypeError(`Cannot locate Sentry's ${what} directory: set SENTRY_HOME or HOME`);
  }
  return dir;
}

/**
 * Returns Sentry's data directory, where the journal lives: `$SENTRY_HOME` when set, else
 * `$XDG_DATA_HOME/sentry`, else `~/Library/Application Support/sentry` on macOS and
 * `~/.local/share/sentry` elsewhere. `SENTRY_HOME` isolates a whole installation (tests use it).
 * The result is not resolved against the working directory, so a relative `SENTRY_HOME` stays
 * relative.
 *
 * @throws {TypeError} when none of `SENTRY_HOME`, `XDG_DATA_HOME` and `HOME` is set.
 */
export function dataDir(env: Env, options: DirOptions = {}): string {
  const sentryHome = read(env, "SENTRY_HOME");
  if (sentryHome !== undefined) return sentryHome;
  const xdg = readXdg(env, "XDG_DATA_HOME");
  if (xdg !== undefined) return join(xdg, "sentry");
  const os = options.os ?? Deno.build.os;
  if (os === "darwin") return join(home(env, "data"), "Library", "Application Support", "sentry");
  return join(home(env, "data"), ".local", "share", "sentry");
}

/**
 * Returns Sentry's configuration directory: `$SENTRY_HOME` (the same directory as the data)
 * when set, else `$XDG_CONFIG_HOME/sentry`, else `~/.config/sentry` on every OS.
 *
 * @throws {TypeError} when none of `SENTRY_HOME`, `XDG_CONFIG_HOME` and `HOME` is set.
 */
export function configDir(env: Env): string {
  const sentryHome = read(env, "SENTRY_HOME");
  if (sentryHome !== undefined) return sentryHome;
  const xdg = readXdg(env, "XDG_CONFIG_HOME");
  if (xdg !== undefined) return join(xdg, "sentry");
  return join(home(env, "config"), ".config", "sentry");
}

/**
 * Creates a directory (and its parents) readable by its owner only, and returns it. The journal
 * holds what an agent read, ran and connected to, so an existing directory that others can read
 * is narrowed to mode 0700 too.
 *
 * @throws {Error} when the directory cannot be created or its mode cannot be narrowed, with the
 * OS error as `cause`.
 */
export function ensureDataDir(dir: string): string {
  try {
    mkdirSync(dir, { recursive: true, mode: 0o700 });
    if (Deno.build.os !== "windows" && (statSync(dir).mode & 0o077) !== 0) chmodSync(dir, 0o700);
  } catch (cause) {
    const reason = cause instanceof Error ? cause.message : String(cause);
    throw new Error(`Cannot create Sentry's data directory "${dir}": ${reason}`, { cause });
  }
  return dir;
}
