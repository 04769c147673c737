import { PolicyError } from "./errors.ts";
import { checkGlobSyntax, parseNetworkEntry } from "./patterns.ts";
import type { Mode, ResolvedPolicy } from "./schema.ts";

/** The monitors that `--no-fs`, `--no-net` and the like switch off. */
export const MONITOR_FLAGS = {
  fs: "files",
  net: "network",
  proc: "processes",
  cpu: "cpu",
  mem: "memory",
  db: "database",
} as const;

/** A monitor flag name, such as `fs` for `--no-fs`. */
export type MonitorFlag = keyof typeof MONITOR_FLAGS;

/** The inline customisations of `run`, `attach` and `policy test`, as parsed from flags. */
export interface InlinePatch {
  /** Path globs to allow for reading and writing (`--allow`). */
  allow?: string[];
  /** Path globs to deny for reading, writing and deleting (`--block`). */
  block?: string[];
  /** Network entries to allow (`--allow-hosts`). */
  allowHosts?: string[];
  /** Network entries to deny (`--block-hosts`). */
  blockHosts?: string[];
  /** The highest risk tolerated; anything above it pauses the agent (`--max-risk`). */
  maxRisk?: number;
  mode?: Mode;
  /** Monitors to switch off (`--no-fs` and the like). */
  off?: MonitorFlag[];
}

/**
 * Applies inline flags to a resolved policy and returns a new one. Additions never weaken a
 * deny: `--allow` adds to allow lists, and deny still beats allow. Sections keep the default
 * they had, so `--allow` on an open section does not close it. Throws a {@link PolicyError}
 * naming the flag and the value when one is malformed.
 */
export function applyPatch(policy: ResolvedPolicy, patch: InlinePatch): ResolvedPolicy {
  const out: ResolvedPolicy = structuredClone(policy);
  const check = (flag: string, value: string, fn: (v: string) => unknown) => {
    try {
      fn(value);
    } catch (error) {
      const reason = error instanceof Error ? error.message : String(error);
      throw new PolicyError(`Invalid ${flag} "${value}": ${reason}`, { field: flag, cause: error });
    }
  };
  const pathGlob = (v: string) => {
    checkGlobSyntax(v);
    if (!/^(?:\/|~|\$|\*\*)/.test(v)) {
      throw new RangeError("a path glob must be absolute or start with ~, ${WORKSPACE} or **");
    }
  };
  for (const glob of patch.allow ?? []) {
    check("--allow", glob, pathGlob);
    out.files.read.allow.push(glob);
    out.files.write.allow.push(glob);
  }
  for (const glob of patch.block ?? []) {
    check("--block", glob, pathGlob);
    out.files.read.deny.push(glob);
    out.files.write.deny.push(glob);
    out.files.delete.deny.push(glob);
  }
  for (const entry of patch.allowHosts ?? []) {
    check("--allow-hosts", entry, parseNetworkEntry);
    out.network.allow.push(entry);
  }
  for (const entry of patch.blockHosts ?? []) {
    check("--block-hosts", entry, parseNetworkEntry);
    out.network.deny.push(entry);
  }
  if (patch.maxRisk !== undefined) {
    const n = patch.maxRisk;
    if (!Number.isInteger(n) || n < 0 || n > 100) {
      throw new PolicyError(`Invalid --max-risk "${n}": give a whole number from 0 to 100`, {
        field: "--max-risk",
      });
    }
    const t = out.thresholds;
    t.pause = n + 1;
    t.alert = Math.min(t.alert, t.pause);
    t.rollback = Math.max(t.rollback, t.pause);
    t.kill = Math.max(t.kill, t.rollback);
  }
  if (patch.mode !== undefined) out.mode = patch.mode;
  for (const flag of patch.off ?? []) out.monitors[MONITOR_FLAGS[flag]] = false;
  return out;
}

/** Splits comma-separated flag values (`--allow-hosts a.com,b.com`) and trims them. */
export function splitList(values: readonly string[]): string[] {
  return values.flatMap((v) => v.split(",")).map((v) => v.trim()).filter((v) => v !== "");
}
