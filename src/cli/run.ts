import { type Command, Option } from "commander";
import { DEFAULT_API_PORT } from "../api/mod.ts";
import { loadConfig } from "../config/mod.ts";
import { parseDuration } from "../policy/mod.ts";
import {
  type FreezerRequest,
  FREEZERS,
  superviseAttach,
  SuperviseError,
  superviseRun,
  type TierRequest,
  TIERS,
} from "../session/mod.ts";
import { configDir } from "../platform/mod.ts";
import { resolveSyncSettings } from "../sync/mod.ts";
import { sessionServices, syncOn } from "./_session_services.ts";
import { ExitCode, UsageError } from "./errors.ts";
import { modeCeiling } from "./mode_notice.ts";
import { printNotice } from "./notices.ts";
import { addPolicyFlags, loadPolicyFromFlags, type PolicyFlags } from "./policy_options.ts";

/** The polling interval when none is given, in milliseconds (see bench/recall_bench.ts). */
export const DEFAULT_INTERVAL_MS = 50;

/** The flags `run` and `attach` share beyond the policy flags. */
interface WatchFlags extends PolicyFlags {
  name?: string;
  json?: boolean;
  interval: string;
  onExit?: "resume" | "kill";
  killGrace: string;
  rollback: boolean;
  api: boolean;
  apiPort?: string;
  sensor: TierRequest;
  freezer: FreezerRequest;
  pauseTimeout?: string;
  onPauseTimeout?: "resume" | "kill";
}

function addWatchFlags(cmd: Command): Command {
  return addPolicyFlags(cmd)
    .option("-n, --name <agent>", "the agent's name in the journal (default: the command's name)")
    .option("--json", "print alerts and responses as JSON lines on stderr")
    .option(
      "--interval <ms>",
      "how often to poll /proc, in milliseconds",
      String(DEFAULT_INTERVAL_MS),
    )
    .addOption(
      new Option(
        "--on-exit <action>",
        "what the watchdog does with the agent if Sentry dies (default: the policy's on_sentry_exit, resume)",
      ).choices(["resume", "kill"]),
    )
    .option("--kill-grace <ms>", "time between SIGTERM and SIGKILL when killing", "3000")
    .addOption(
      new Option(
        "--freezer <how>",
        "how a pause stops the tree: cgroup (freeze its own cgroup; root), signals (SIGSTOP), auto",
      ).choices([...FREEZERS]).default("auto"),
    )
    .option(
      "--pause-timeout <duration>",
      "end a pause nobody resumes after this long (500ms, 30s, 10m, 1h; default: the policy's pause.timeout, else never)",
    )
    .addOption(
      new Option(
        "--on-pause-timeout <action>",
        "what a timed-out pause ends in (default: the policy's pause.on_timeout, else kill)",
      ).choices(["resume", "kill"]),
    )
    .option("--no-rollback", "take no snapshot at start: rollback is then off for the session")
    .option(
      "--api-port <n>",
      `serve the local API and dashboard on this port of 127.0.0.1 (default: auto, the first free from ${DEFAULT_API_PORT})`,
    )
    .option("--no-api", "serve no API while watching")
    .addOption(
      new Option(
        "--sensor <tier>",
        "how to see the agent's actions: auto picks the most exact tier this host allows",
      ).choices(["auto", ...TIERS]).default("auto"),
    );
}

function apiPort(text: string): number | "auto" {
  if (text === "auto") return "auto";
  const n = Number(text);
  if (!/^\d+$/.test(text) || n > 65535) {
    throw new UsageError(`Invalid --api-port "${text}": give a port from 0 to 65535, or auto`);
  }
  return n;
}

function positive(flag: string, text: string, min: number): number {
  const n = Number(text);
  if (!Number.isInteger(n) || n < min) {
    throw new UsageError(
      `Invalid ${flag} "${text}": give a whole number of milliseconds, at least ${min}`,
    );
  }
  return n;
}

async function options(flags: WatchFlags) {
  // Start-up order: the config file, then the policy (then the journal, services, sensors, agent).
  const { config } = await loadConfig();
  const policy = await loadPolicyFromFlags(flags);
  const json = flags.json === true;
  if (!flags.api && flags.apiPort !== undefined) {
    throw new UsageError(
      `Conflicting flags: --no-api serves no API, so --api-port "${flags.apiPort}" has nothing to do`,
      { hint: "give one of them" },
    );
  }
  const port = apiPort(flags.apiPort ?? "auto");
  const killGraceMs = positive("--kill-grace", flags.killGrace, 0);
  const pause = policy.resolved.pause;
  const timeoutText = flags.pauseTimeout ?? pause.timeout;
  let pauseTimeoutMs: number | null = null;
  if (timeoutText !== null) {
    try {
      pauseTimeoutMs = parseDuration(timeoutText);
    } catch (error) {
      throw new UsageError(
        `Invalid ${flags.pauseTimeout === undefined ? "pause.timeout" : "--pause-timeout"}: ${
          (error as Error).message
        }`,
      );
    }
  }
  const onNotice = (n: Parameters<typeof printNotice>[0]) => printNotice(n, { json });
  const capped = modeCeiling(policy.resolved);
  if (capped !== null) onNotice({ type: "warn", message: capped });
  const env = Deno.env.toObject();
  const sync = resolveSyncSettings({ env, configDir: configDir(env), section: config.sync });
  const services = sessionServices({
    apiPort: flags.api ? port : null,
    killGraceMs,
    config,
    sync,
    onNotice,
  });
  // A live reload (SIGHUP, `sentry policy reload`, the API) loads as here, with the same inline
  // flags on top and the session's workspace: FILE replaces --policy, null reads it again.
  const loadReload = (file: string | null) =>
    loadPolicyFromFlags({
      ...flags,
      policy: file ?? flags.policy ?? "default",
      workspace: policy.workspace,
    });
  return {
    policy,
    loadPolicy: loadReload,
    policySource: flags.policy ?? "default",
    ...(flags.name === undefined ? {} : { agent: flags.name }),
    intervalMs: positive("--interval", flags.interval, 5),
    killGraceMs,
    onExit: flags.onExit ?? policy.resolved.on_sentry_exit,
    rollback: flags.rollback !== false,
    onNotice,
    env,
    services,
    outbox: syncOn(sync),
    sensor: flags.sensor,
    freezer: flags.freezer,
    pauseTimeoutMs,
    onPauseTimeout: flags.onPauseTimeout ?? pause.on_timeout,
  };
}

function rethrow(error: unknown): never {
  if (error instanceof SuperviseError) {
    if (error.code === 2) throw new UsageError(error.message);
    throw new ExitCode(error.code, error.message);
  }
  throw error;
}

/** Adds `sentry run` and `sentry attach`. */
export function registerRunCommands(program: Command): void {
  addWatchFlags(
    program.command("run")
      .description("start an agent under Sentry and watch everything it does")
      .argument("<command...>", "the agent's command, after --")
      .passThroughOptions(),
  ).action(async (command: string[], flags: WatchFlags) => {
    let code: number;
    try {
      code = await superviseRun(command, await options(flags));
    } catch (error) {
      rethrow(error);
    }
    if (code !== 0) throw new ExitCode(code);
  });

  addWatchFlags(
    program.command("attach")
      .description("watch a running process and all its descendants (Ctrl-C detaches)")
      .argument("<pid>", "the agent's process id"),
  ).action(async (pidText: string, flags: WatchFlags) => {
    if (!/^\d+$/.test(pidText) || Number(pidText) < 1) {
      throw new UsageError(`Invalid pid "${pidText}": give a process id, such as 4242`);
    }
    try {
      await superviseAttach(Number(pidText), await options(flags));
    } catch (error) {
      rethrow(error);
    }
  });
}
