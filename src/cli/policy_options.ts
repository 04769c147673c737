import { type Command, Option } from "commander";
import { resolve } from "node:path";
import {
  applyPatch,
  type CompiledPolicy,
  compilePolicy,
  type InlinePatch,
  loadPolicy,
  type Mode,
  MODES,
  MONITOR_FLAGS,
  type MonitorFlag,
  type ResolvedPolicy,
  splitList,
} from "../policy/mod.ts";
import { UsageError } from "./errors.ts";
import { configDir, dataDir } from "../platform/mod.ts";

/** The flags that choose and patch a policy, as commander parses them. */
export interface PolicyFlags {
  policy?: string;
  mode?: Mode;
  workspace?: string;
  allow?: string[];
  block?: string[];
  allowHosts?: string[];
  blockHosts?: string[];
  maxRisk?: string;
  fs?: boolean;
  net?: boolean;
  proc?: boolean;
  cpu?: boolean;
  mem?: boolean;
  db?: boolean;
}

const collect = (value: string, previous: string[] = []) => [...previous, value];

/**
 * Adds the policy flags shared by `run`, `attach` and `policy test`: `--policy`, `--mode`,
 * `--workspace`, `--allow`, `--block`, `--allow-hosts`, `--block-hosts`, `--max-risk` and the
 * `--no-*` monitor switches.
 */
export function addPolicyFlags(cmd: Command, options: { policyOption?: boolean } = {}): Command {
  if (options.policyOption !== false) {
    cmd.option("-p, --policy <name|file>", "a template name or a policy file", "default");
  }
  cmd
    .addOption(new Option("--mode <mode>", "cap the response").choices([...MODES]))
    .option("-w, --workspace <dir>", "the agent's workspace (default: the current directory)")
    .option(
      "--allow <glob>",
      "allow reading and writing paths matching a glob (repeatable)",
      collect,
    )
    .option(
      "--block <glob>",
      "deny reading, writing and deleting paths matching a glob (repeatable)",
      collect,
    )
    .option("--allow-hosts <list>", "allow network entries, comma-separated (repeatable)", collect)
    .option("--block-hosts <list>", "deny network entries, comma-separated (repeatable)", collect)
    .option(
      "--max-risk <n>",
      "the highest risk tolerated (0-100); anything above pauses the agent",
    );
  for (const flag of Object.keys(MONITOR_FLAGS) as MonitorFlag[]) {
    cmd.option(`--no-${flag}`, `switch off the ${MONITOR_FLAGS[flag]} monitor`);
  }
  return cmd;
}

/** Turns parsed flags into an inline patch; throws a {@link UsageError} on a bad `--max-risk`. */
export function patchFromFlags(flags: PolicyFlags): InlinePatch {
  const patch: InlinePatch = {};
  if (flags.allow) patch.allow = flags.allow;
  if (flags.block) patch.block = flags.block;
  if (flags.allowHosts) patch.allowHosts = splitList(flags.allowHosts);
  if (flags.blockHosts) patch.blockHosts = splitList(flags.blockHosts);
  if (flags.mode) patch.mode = flags.mode;
  if (flags.maxRisk !== undefined) {
    const text = flags.maxRisk.trim();
    // Accept the seed product's fractions (0.7) as well as points (70).
    const n = /^0?\.\d+$/.test(text)
      ? Math.round(Number(text) * 100)
      : /^\d+$/.test(text)
      ? Number(text)
      : NaN;
    if (!Number.isInteger(n) || n < 0 || n > 100) {
      throw new UsageError(
        `Invalid --max-risk "${flags.maxRisk}": give a whole number from 0 to 100`,
        {
          hint: "--max-risk 60 pauses the agent on any action scoring above 60",
        },
      );
    }
    patch.maxRisk = n;
  }
  const off = (Object.keys(MONITOR_FLAGS) as MonitorFlag[]).filter((f) => flags[f] === false);
  if (off.length > 0) patch.off = off;
  return patch;
}

/** A policy ready to use: resolved, patched and compiled, with the context it compiled in. */
export interface LoadedPolicy {
  resolved: ResolvedPolicy;
  compiled: CompiledPolicy;
  workspace: string;
  home: string;
  /** Sentry's own directories (data and configuration), which the guard keeps from the agent. */
  guarded: string[];
}

/** Where relative paths and `~` resolve. Injected for tests. */
export interface PolicyEnvironment {
  cwd: string;
  home: string;
  env: Record<string, string>;
}

/** Reads the real environment. */
export function currentEnvironment(): PolicyEnvironment {
  return { cwd: Deno.cwd(), home: Deno.env.get("HOME") ?? "/", env: Deno.env.toObject() };
}

/**
 * Loads the policy the flags name, applies the inline flags and compiles it. The workspace is
 * `--workspace`, else the policy's `workspace`, else the current directory, made absolute.
 */
export async function loadPolicyFromFlags(
  flags: PolicyFlags,
  environment: PolicyEnvironment = currentEnvironment(),
): Promise<LoadedPolicy> {
  const base = await loadPolicy(flags.policy ?? "default", {
    cwd: environment.cwd,
    env: environment.env,
  });
  const resolved = applyPatch(base, patchFromFlags(flags));
  const workspace = resolve(environment.cwd, flags.workspace ?? resolved.workspace);
  resolved.workspace = workspace;
  const guarded = sentryDirs(environment);
  const compiled = compilePolicy(resolved, {
    home: environment.home,
    workspace,
    env: environment.env,
    guarded,
  });
  return { resolved, compiled, workspace, home: environment.home, guarded };
}

/** Sentry's data and configuration directories, absolute, without duplicates. */
export function sentryDirs(environment: PolicyEnvironment): string[] {
  const dirs = new Set<string>();
  for (const find of [dataDir, configDir]) {
    try {
      dirs.add(resolve(environment.cwd, find(environment.env)));
    } catch {
      // No HOME and no SENTRY_HOME: Sentry cannot open a journal either, and says so there.
    }
  }
  return [...dirs];
}
