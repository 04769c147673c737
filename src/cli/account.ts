/**
 * `sentry login` (alias `sentry auth`, the seed product's name) and `sentry logout`: store or
 * remove the API key that syncs this host's journal with a collector (docs/sync-protocol.md).
 *
 * `login` checks the key with the endpoint's `hello` before storing it, so a stored key is a key
 * that worked; `--no-verify` stores it unchecked, for hosts that cannot reach their collector
 * yet. The key itself is never printed, only a masked prefix.
 *
 * @module
 */

import type { Command } from "commander";
import { join } from "node:path";
import { loadConfig } from "../config/mod.ts";
import { configDir } from "../platform/mod.ts";
import {
  API_KEY_VARIABLES,
  apiKeyProblem,
  CREDENTIALS_FILE,
  DEFAULT_ENDPOINT,
  ENDPOINT_VARIABLE,
  hello,
  type HelloResult,
  loadCredentials,
  normalizeEndpoint,
  removeCredentials,
  saveCredentials,
  SyncRequestError,
} from "../sync/mod.ts";
import { ExitCode, UsageError } from "./errors.ts";
import { eprint, eprintln, paint, printJson, println } from "./output.ts";

/** How long `login` waits for the endpoint's answer. */
const LOGIN_TIMEOUT_MS = 10_000;

/**
 * Masks an API key for display: its first characters (at most 6, and never more than a quarter
 * of it) and an ellipsis, so two keys can be told apart without revealing either.
 */
export function maskKey(key: string): string {
  const shown = Math.min(6, Math.floor(key.length / 4));
  return `${key.slice(0, shown)}…`;
}

/** Formats a clock skew (the endpoint's clock minus ours) for people. */
export function describeSkew(skewMs: number): string {
  const seconds = Math.abs(skewMs) / 1000;
  const amount = seconds < 10 ? seconds.toFixed(1) : Math.round(seconds).toString();
  if (Math.abs(skewMs) < 50) return `${amount} s (in step)`;
  return `${amount} s ${skewMs > 0 ? "behind" : "ahead of"} the endpoint`;
}

/** The first environment variable that holds a key, and its value. */
function keyFromEnv(env: Readonly<Record<string, string | undefined>>) {
  for (const variable of API_KEY_VARIABLES) {
    const value = env[variable]?.trim();
    if (value !== undefined && value !== "") return { variable, value };
  }
  return null;
}

/** Reads one line from stdin: hidden while typed on a terminal, else the first line piped in. */
async function readKeyFromStdin(): Promise<string> {
  if (Deno.stdin.isTerminal()) return await promptHidden("API key (hidden): ");
  const text = await new Response(Deno.stdin.readable).text();
  return text.split(/\r?\n/).map((line) => line.trim()).find((line) => line !== "") ?? "";
}

/** Prompts on stderr and reads a line from the terminal without echoing it. */
async function promptHidden(prompt: string): Promise<string> {
  eprint(prompt);
  const bytes: number[] = [];
  const buffer = new Uint8Array(64);
  Deno.stdin.setRaw(true);
  try {
    reading: while (true) {
      const n = await Deno.stdin.read(buffer);
      if (n === null) break;
      for (const byte of buffer.subarray(0, n)) {
        if (byte === 0x0d || byte === 0x0a || byte === 0x04) break reading;
        if (byte === 0x03) throw new ExitCode(130);
        if (byte === 0x7f || byte === 0x08) bytes.pop();
        else bytes.push(byte);
      }
    }
  } finally {
    Deno.stdin.setRaw(false);
    eprintln();
  }
  return new TextDecoder().decode(new Uint8Array(bytes)).trim();
}

/** Prints a runtime failure with its hint, and exits 1 (nothing is stored). */
function fail(message: string, hint: string): never {
  eprintln(`${paint("sentry:", "red")} ${message}`);
  eprintln(`hint: ${hint}`);
  throw new ExitCode(1);
}

interface LoginOptions {
  apiKey?: string;
  endpoint?: string;
  verify: boolean;
  json?: boolean;
}

/** The config file's `sync.endpoint`, normalized, or null (a broken file is `doctor`'s to report). */
async function configEndpoint(env: Readonly<Record<string, string | undefined>>) {
  try {
    const { config, path } = await loadConfig({ env });
    const value = config.sync.endpoint;
    return value === undefined ? null : { endpoint: normalizeEndpoint(value), path };
  } catch {
    return null;
  }
}

/**
 * Picks the endpoint as the uploader does (see `resolveSyncSettings`): the flag, then
 * `SENTRY_ENDPOINT`, then the config file's `sync.endpoint`, then the stored one, then the
 * default.
 */
function chooseEndpoint(
  flag: string | undefined,
  env: Readonly<Record<string, string | undefined>>,
  options: { dir: string; fromConfig: string | null },
): string {
  const [value, name] = flag !== undefined
    ? [flag, "--endpoint"]
    : env[ENDPOINT_VARIABLE] !== undefined && env[ENDPOINT_VARIABLE] !== ""
    ? [env[ENDPOINT_VARIABLE], ENDPOINT_VARIABLE]
    : [null, ""];
  if (value === null) {
    if (options.fromConfig !== null) return options.fromConfig;
    // A damaged credentials file must not stop the login that replaces it.
    try {
      return loadCredentials({ env: { [ENDPOINT_VARIABLE]: "" }, configDir: options.dir })
        ?.endpoint ?? DEFAULT_ENDPOINT;
    } catch {
      return DEFAULT_ENDPOINT;
    }
  }
  try {
    return normalizeEndpoint(value);
  } catch (error) {
    throw new UsageError(
      `Invalid ${name} "${value}": ${(error as Error).message.replace(/^.*": /, "")}`,
      { hint: "give the collector's base URL, such as http://127.0.0.1:8787" },
    );
  }
}

/** Warns when SENTRY_ENDPOINT or the config file will send sync elsewhere than `endpoint`. */
function warnIfOverridden(
  endpoint: string,
  env: Readonly<Record<string, string | undefined>>,
  options: { dir: string; fromConfig: { endpoint: string; path: string } | null },
): void {
  let effective: string;
  try {
    effective = chooseEndpoint(undefined, env, {
      dir: options.dir,
      fromConfig: options.fromConfig?.endpoint ?? null,
    });
  } catch {
    return; // An invalid SENTRY_ENDPOINT: every sync command reports it.
  }
  if (effective === endpoint) return;
  const envValue = env[ENDPOINT_VARIABLE];
  const by = envValue !== undefined && envValue !== ""
    ? ENDPOINT_VARIABLE
    : `sync.endpoint in "${options.fromConfig?.path}"`;
  eprintln(paint(
    `sentry: warning: ${by} wins over the stored endpoint: sync uploads to ${effective}`,
    "yellow",
  ));
}

async function login(opts: LoginOptions): Promise<void> {
  const env = Deno.env.toObject();
  const dir = configDir(env);
  let key: string;
  let from: string;
  if (opts.apiKey === "-") {
    key = await readKeyFromStdin();
    from = "stdin";
    if (key === "") throw new UsageError("No API key on stdin", { hint: "pipe the key in" });
  } else if (opts.apiKey !== undefined) {
    key = opts.apiKey.trim();
    from = "--api-key";
  } else {
    const found = keyFromEnv(env);
    if (found === null) {
      throw new UsageError("Missing --api-key", {
        hint: `give --api-key KEY, --api-key - to read it from stdin, or set ${
          API_KEY_VARIABLES.join(" or ")
        }`,
      });
    }
    key = found.value;
    from = found.variable;
  }
  const problem = apiKeyProblem(key);
  if (problem !== null) {
    throw new UsageError(`Invalid ${from === "stdin" ? "API key on stdin" : from}: ${problem}`, {
      hint: "an API key is 20 to 200 printable characters; `sentry server keys add NAME` makes one",
    });
  }
  const fromConfig = await configEndpoint(env);
  const endpoint = chooseEndpoint(opts.endpoint, env, {
    dir,
    fromConfig: fromConfig?.endpoint ?? null,
  });

  let checked: HelloResult | null = null;
  if (opts.verify) {
    try {
      checked = await hello(endpoint, { apiKey: key, timeoutMs: LOGIN_TIMEOUT_MS });
    } catch (error) {
      if (!(error instanceof SyncRequestError)) throw error;
      const notStored = `${error.message}; the key was not stored`;
      if (error.kind === "auth") {
        fail(notStored, "check the key, or make one on the collector: sentry server keys add NAME");
      }
      if (error.kind === "network") {
        fail(
          notStored,
          "check that the collector runs and the URL is right, give another with --endpoint URL, " +
            "or store the key unchecked with --no-verify",
        );
      }
      fail(notStored, "check that --endpoint names a Sentry collector");
    }
  }
  const path = saveCredentials(dir, { apiKey: key, endpoint });
  const shadow = keyFromEnv(env);
  if (opts.json) {
    printJson({
      endpoint,
      stored: path,
      key: maskKey(key),
      verified: checked !== null,
      key_name: checked?.body.key.name ?? null,
      key_id: checked?.body.key.id ?? null,
      latency_ms: checked === null ? null : Math.round(checked.latencyMs),
      skew_ms: checked === null ? null : Math.round(checked.skewMs),
    });
  } else {
    if (checked === null) {
      println(`stored key ${maskKey(key)} for ${endpoint} without checking it (--no-verify)`);
    } else {
      const name = checked.body.key;
      println(`logged in to ${endpoint} as key "${name.name}" (${name.id})`);
      println(`  key:      ${maskKey(key)} (from ${from})`);
      println(`  latency:  ${Math.round(checked.latencyMs)} ms`);
      println(`  clock:    ${describeSkew(checked.skewMs)}`);
    }
    println(`  stored:   ${path} (mode 0600)`);
  }
  warnIfOverridden(endpoint, env, { dir, fromConfig });
  if (shadow !== null && shadow.value !== key) {
    eprintln(paint(
      `sentry: warning: ${shadow.variable} is set and wins over the stored key; unset it to use this one`,
      "yellow",
    ));
  }
}

function logout(opts: { json?: boolean }): void {
  const env = Deno.env.toObject();
  const dir = configDir(env);
  const removed = removeCredentials(dir);
  const shadow = keyFromEnv(env);
  if (opts.json) {
    printJson({ removed, still_set: shadow?.variable ?? null });
  } else if (removed) {
    println(`logged out: deleted ${join(dir, CREDENTIALS_FILE)}`);
  } else {
    println(`no API key was stored (no ${join(dir, CREDENTIALS_FILE)})`);
  }
  if (shadow !== null) {
    eprintln(paint(
      `sentry: warning: ${shadow.variable} still provides a key (${
        maskKey(shadow.value)
      }); unset it to stop syncing`,
      "yellow",
    ));
  }
}

/** Adds `sentry login` (alias `auth`) and `sentry logout`. */
export function registerAccountCommands(program: Command): void {
  program.command("login").alias("auth")
    .description(
      "check an API key against the sync endpoint and store it (mode 0600) for this user",
    )
    .option(
      "--api-key <key>",
      `the key; "-" reads it from stdin (keeps it out of shell history); default $${
        API_KEY_VARIABLES[0]
      } or $${API_KEY_VARIABLES[1]}`,
    )
    .option(
      "--endpoint <url>",
      `the collector's base URL (default $${ENDPOINT_VARIABLE}, the stored one, or ${DEFAULT_ENDPOINT})`,
    )
    .option("--no-verify", "store the key without checking it (for hosts offline for now)")
    .option("--json", "print the outcome as one JSON object")
    .action((opts: LoginOptions) => login(opts));

  program.command("logout")
    .description("remove the stored API key")
    .option("--json", "print the outcome as one JSON object")
    .action((opts: { json?: boolean }) => logout(opts));
}
