import { join } from "node:path";
import YAML, { LineCounter } from "yaml";
import type { z } from "zod";
import { configDir, type Env } from "../platform/mod.ts";
import { formatFieldPath, offsetOf, readFailure, valueAt } from "../policy/mod.ts";
import { ConfigError } from "./errors.ts";
import { redactUrl } from "./redact.ts";
import { SentryConfig } from "./schema.ts";

/** The configuration file's name inside the configuration directory. */
export const CONFIG_FILE = "config.yaml";

/** The environment variable that names another configuration file. */
export const CONFIG_VARIABLE = "SENTRY_CONFIG";

/** A webhook with no threshold takes alerts: events whose response is `alert` or more. */
export const DEFAULT_WEBHOOK_MIN_RESPONSE = "alert";

/**
 * Returns the configuration file's path: `$SENTRY_CONFIG` when set, else `config.yaml` in the
 * configuration directory (`$SENTRY_HOME`, else `$XDG_CONFIG_HOME/sentry`, else
 * `~/.config/sentry`).
 *
 * @throws {TypeError} when neither variable nor `HOME` is set.
 */
export function configPath(env: Env): string {
  const explicit = env[CONFIG_VARIABLE];
  if (explicit !== undefined && explicit !== "") return explicit;
  return join(configDir(env), CONFIG_FILE);
}

/** How the configuration is found and read. */
export interface LoadConfigOptions {
  /** The environment, for the path and for `${VARIABLES}`; defaults to `Deno.env`. */
  env?: Env;
  /** A file to read instead of {@link configPath}'s; it must exist. */
  path?: string;
  /** Reads a file as text; defaults to `Deno.readTextFile`. */
  readFile?: (path: string) => Promise<string>;
  /** Whether to expand `${VARIABLES}` (default true); `sentry config show` keeps them. */
  expandEnv?: boolean;
}

/** A loaded configuration and where it came from. */
export interface LoadedConfig {
  /** The file that was read, or that would have been. */
  path: string;
  /** False when there is no file and the defaults apply. */
  exists: boolean;
  config: SentryConfig;
}

/**
 * Loads the configuration file. A missing default file means the defaults; a missing file
 * named by `SENTRY_CONFIG` or `path` is an error, since someone asked for it.
 *
 * @throws {ConfigError} naming the file, line, column and field of the first problem.
 */
export async function loadConfig(options: LoadConfigOptions = {}): Promise<LoadedConfig> {
  const env = options.env ?? Deno.env.toObject();
  const path = options.path ?? configPath(env);
  const explicit = options.path !== undefined || (env[CONFIG_VARIABLE] ?? "") !== "";
  const read = options.readFile ?? Deno.readTextFile;
  let text: string;
  try {
    text = await read(path);
  } catch (error) {
    if (error instanceof Deno.errors.NotFound && !explicit) {
      return { path, exists: false, config: parseConfig("", { file: path, env }) };
    }
    throw new ConfigError(`Cannot read config "${path}": ${readFailure(error)}`, {
      file: path,
      cause: error,
    });
  }
  const parseOptions: ParseConfigOptions = { file: path, env };
  if (options.expandEnv !== undefined) parseOptions.expandEnv = options.expandEnv;
  return { path, exists: true, config: parseConfig(text, parseOptions) };
}

/** What {@link parseConfig} needs besides the text. */
export interface ParseConfigOptions {
  /** The file name used in errors. */
  file?: string;
  /** Where `${VARIABLES}` come from; defaults to `Deno.env`. */
  env?: Env;
  /** Whether to expand `${VARIABLES}` (default true). */
  expandEnv?: boolean;
}

/**
 * `FILE:LINE` of the line that sets the field at `path` in a configuration file's text (or of its
 * nearest parent that is there), or `file` alone when it has none: for errors about a value the
 * file gave, found after it was loaded. Pure.
 */
export function fieldLine(text: string, path: readonly PropertyKey[], file: string): string {
  const lineCounter = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter });
  const offset = offsetOf(doc.contents, path);
  return offset === undefined ? file : `${file}:${lineCounter.linePos(offset).line}`;
}

/**
 * Parses and validates a configuration file's text: YAML syntax, the strict schema (unknown
 * keys are errors), `${VARIABLE}` references and URLs. Fills every default.
 *
 * @throws {ConfigError} whose message names the `file:line:col` and the dotted field.
 */
export function parseConfig(text: string, options: ParseConfigOptions = {}): SentryConfig {
  const file = options.file ?? "config.yaml";
  const lineCounter = new LineCounter();
  const doc = YAML.parseDocument(text, { lineCounter, uniqueKeys: true, prettyErrors: false });
  const place = (offset: number | undefined) => {
    if (offset === undefined) return { where: file, at: {} };
    const { line, col } = lineCounter.linePos(offset);
    return { where: `${file}:${line}:${col}`, at: { line, column: col } };
  };
  const yamlError = doc.errors[0];
  if (yamlError !== undefined) {
    const { where, at } = place(yamlError.pos[0]);
    const reason = yamlError.message.split("\n")[0]?.replace(/ at line \d+, column \d+:?$/, "") ??
      "";
    throw new ConfigError(`Invalid YAML at ${where}: ${reason}`, { file, ...at, cause: yamlError });
  }
  const data: unknown = doc.toJS() ?? {};
  const fail = (path: readonly PropertyKey[], reason: string, keyOnly = false): never => {
    const { where, at } = place(offsetOf(doc.contents, path, { keyOnly }));
    throw new ConfigError(`Invalid config at ${where}: ${reason}`, {
      file,
      field: formatFieldPath(path),
      ...at,
    });
  };
  if (typeof data !== "object" || data === null || Array.isArray(data)) {
    fail([], "the configuration must be a mapping of keys to values");
  }
  const parsed = SentryConfig.safeParse(data);
  if (!parsed.success) {
    const issues = parsed.error.issues;
    const issue = firstIssue(issues[0] as z.core.$ZodIssue, data);
    const more = issues.length - 1;
    const suffix = more > 0 ? ` (and ${more} more ${more === 1 ? "problem" : "problems"})` : "";
    if (issue.code === "unrecognized_keys") {
      const path = [...issue.path, issue.keys[0] as string];
      fail(path, `unknown key "${formatFieldPath(path)}"${suffix}`, true);
    }
    const value = valueAt(data, issue.path);
    const shown = value === undefined || typeof value === "object"
      ? ""
      : ` (got ${JSON.stringify(value)})`;
    const message = issue.message.replace(/^Invalid input: /, "");
    fail(
      issue.path,
      `field "${formatFieldPath(issue.path)}": ${message.charAt(0).toLowerCase()}${
        message.slice(1)
      }${shown}${suffix}`,
    );
  }
  const config = parsed.data as SentryConfig;
  finish(config, {
    env: options.env ?? Deno.env.toObject(),
    expand: options.expandEnv ?? true,
    fail,
  });
  return config;
}

/**
 * The issue to report. A union (one webhook or a list) reports the branch that matches the
 * value's shape, with its path made absolute, rather than zod's "invalid input".
 */
function firstIssue(issue: z.core.$ZodIssue, data: unknown): z.core.$ZodIssue {
  if (issue.code !== "invalid_union" || issue.errors.length === 0) return issue;
  const value = valueAt(data, issue.path);
  const branches = issue.errors.filter((errors) =>
    !errors.some((e) => e.code === "invalid_type" && e.path.length === 0)
  );
  const chosen = branches[0] ?? issue.errors[Array.isArray(value) ? 1 : 0] ?? issue.errors[0];
  const inner = chosen?.[0];
  if (inner === undefined) return issue;
  return firstIssue({ ...inner, path: [...issue.path, ...inner.path] } as z.core.$ZodIssue, data);
}

type Fail = (path: readonly PropertyKey[], reason: string) => never;

/** Checks and rewrites what the schema cannot: `${VARIABLES}`, URLs and implied defaults. */
function finish(config: SentryConfig, options: { env: Env; expand: boolean; fail: Fail }): void {
  const { fail } = options;
  const expand = (path: readonly PropertyKey[], value: string): string => {
    if (!options.expand) return value;
    try {
      return expandVariables(value, options.env);
    } catch (error) {
      return fail(path, `field "${formatFieldPath(path)}": ${(error as Error).message}`);
    }
  };
  const url = (path: readonly PropertyKey[], value: string, what: UrlKind): string => {
    const expanded = expand(path, value);
    // Unexpanded references cannot be checked; they are checked when Sentry uses them.
    if (!options.expand && /\$\{/.test(value)) return expanded;
    try {
      // Name the value as written, so that an expanded secret is never printed.
      return checkUrl(expanded, what, value);
    } catch (error) {
      return fail(path, `field "${formatFieldPath(path)}": ${(error as Error).message}`);
    }
  };
  const headers = (path: readonly PropertyKey[], map: Record<string, string>) => {
    for (const [name, value] of Object.entries(map)) map[name] = expand([...path, name], value);
  };
  if (config.sync.endpoint !== undefined) {
    config.sync.endpoint = url(["sync", "endpoint"], config.sync.endpoint, "endpoint");
  }
  const webhook = config.outputs.webhook;
  const list = webhook === undefined ? [] : Array.isArray(webhook) ? webhook : [webhook];
  list.forEach((hook, i) => {
    const base: PropertyKey[] = Array.isArray(webhook) ? ["outputs", "webhook", i] : [
      "outputs",
      "webhook",
    ];
    hook.url = url([...base, "url"], hook.url, "webhook");
    headers([...base, "headers"], hook.headers);
    if (hook.min_risk === undefined && hook.min_response === undefined) {
      hook.min_response = DEFAULT_WEBHOOK_MIN_RESPONSE;
    }
  });
  const names = new Set<string>();
  list.forEach((hook, i) => {
    if (hook.name === undefined) return;
    if (names.has(hook.name)) {
      fail(
        ["outputs", "webhook", i, "name"],
        `field "outputs.webhook[${i}].name": duplicate webhook name "${hook.name}"`,
      );
    }
    names.add(hook.name);
  });
  const otlp = config.outputs.otlp;
  if (otlp !== undefined) {
    otlp.endpoint = url(["outputs", "otlp", "endpoint"], otlp.endpoint, "otlp");
    headers(["outputs", "otlp", "headers"], otlp.headers);
  }
}

/**
 * Replaces each `${NAME}` in a value by the variable's value. Only that form is expanded, so a
 * lone `$` stays as it is.
 *
 * @throws {RangeError} naming the first variable that is unset or empty.
 */
export function expandVariables(value: string, env: Env): string {
  return value.replace(/\$\{([A-Za-z_][A-Za-z0-9_]*)\}/g, (_, name: string) => {
    const found = env[name];
    if (found === undefined || found === "") {
      throw new RangeError(`environment variable "${name}" is not set`);
    }
    return found;
  });
}

/** What a URL is for: a sync endpoint takes no query, an OTLP endpoint gets a default path. */
type UrlKind = "endpoint" | "webhook" | "otlp";

/** Checks a URL and returns it normalized; errors quote `value` as written. */
function checkUrl(expanded: string, kind: UrlKind, value: string): string {
  let url: URL;
  try {
    url = new URL(expanded);
  } catch {
    throw new TypeError(`"${value}" is not a URL`);
  }
  if (url.protocol !== "http:" && url.protocol !== "https:") {
    throw new TypeError(`"${value}" is not an http or https URL`);
  }
  if (url.username !== "" || url.password !== "") {
    const shown = redactUrl(value, { userinfo: "hide" }) ?? "the URL";
    throw new TypeError(`"${shown}" holds credentials: put them in "headers" instead`);
  }
  if (kind === "endpoint") {
    if (url.search !== "" || url.hash !== "") {
      throw new TypeError(`"${value}" has a query or fragment: remove it`);
    }
    return url.href.replace(/\/+$/, "");
  }
  if (url.hash !== "") throw new TypeError(`"${value}" has a fragment: remove it`);
  // OTLP's signal-specific URL is used as it is; a bare collector address gets the logs path.
  if (kind === "otlp" && url.pathname === "/") url.pathname = "/v1/logs";
  return url.href;
}
