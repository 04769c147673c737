import type { Command } from "commander";
import YAML from "yaml";
import {
  configPath,
  loadConfig,
  type LoadConfigOptions,
  type SentryConfig,
  webhooksOf,
} from "../config/mod.ts";
import { eprintln, paint, printJson, println } from "./output.ts";

/** Adds `sentry config path|show|validate`. */
export function registerConfigCommands(program: Command): void {
  const config = program.command("config").description(
    "find, show and check the configuration file (config.yaml)",
  );

  config.command("path").description(
    "print the configuration file's path ($SENTRY_CONFIG, else config.yaml in the config directory)",
  ).action(async () => {
    const path = configPath(Deno.env.toObject());
    println(path);
    if (!(await exists(path))) eprintln(paint("(no such file: the defaults apply)", "dim"));
  });

  config.command("show").description(
    "print the effective configuration, defaults filled; ${VARIABLES} are shown as written",
  )
    .argument("[file]", "the file to show (default: sentry config path)")
    .option("--json", "print JSON instead of YAML")
    .action(async (file: string | undefined, opts: { json?: boolean }) => {
      // Load once with expansion, so that an unset variable fails here as it would in `run`.
      await loadConfig(loadOptions(file));
      const loaded = await loadConfig({ ...loadOptions(file), expandEnv: false });
      const shown = redactHeaders(loaded.config);
      if (opts.json) {
        printJson(shown);
        return;
      }
      println(`# ${loaded.path}${loaded.exists ? "" : " (no such file: the defaults apply)"}`);
      println(YAML.stringify(shown, { lineWidth: 0 }).trimEnd());
    });

  config.command("validate").description(
    "check a configuration file: YAML, keys, values, URLs and ${VARIABLES}",
  )
    .argument("[file]", "the file to check (default: sentry config path)")
    .action(async (file: string | undefined) => {
      const loaded = await loadConfig(loadOptions(file));
      if (!loaded.exists) {
        println(`${paint("ok", "green")}  ${loaded.path}: no such file, the defaults apply`);
        return;
      }
      println(`${paint("ok", "green")}  ${loaded.path}: valid (${summary(loaded.config)})`);
    });
}

function loadOptions(path: string | undefined): LoadConfigOptions {
  return path === undefined ? {} : { path };
}

async function exists(path: string): Promise<boolean> {
  try {
    await Deno.stat(path);
    return true;
  } catch {
    return false;
  }
}

/** One phrase per section: what is on. */
function summary(config: SentryConfig): string {
  const hooks = webhooksOf(config.outputs).length;
  return [
    `sync ${config.sync.enabled ? "on" : "off"}`,
    `${hooks} ${hooks === 1 ? "webhook" : "webhooks"}`,
    `otlp ${config.outputs.otlp === undefined ? "off" : "on"}`,
  ].join(", ");
}

const SECRET_HEADER = /auth|token|key|secret|cookie|pass/i;

/** Hides literal values of headers that look like credentials; `${VARIABLES}` stay visible. */
function redactHeaders(config: SentryConfig): SentryConfig {
  const copy = structuredClone(config);
  const hide = (headers: Record<string, string>) => {
    for (const [name, value] of Object.entries(headers)) {
      if (SECRET_HEADER.test(name) && !value.includes("${")) headers[name] = "<redacted>";
    }
  };
  for (const hook of webhooksOf(copy.outputs)) hide(hook.headers);
  if (copy.outputs.otlp !== undefined) hide(copy.outputs.otlp.headers);
  return copy;
}
