/**
 * What the seccomp tier asks Landlock to enforce for a session, and what it says about it at
 * start. Sentry's own data and configuration directories are always walled off (read, write and
 * delete), in every mode: the agent must not read the token or edit the journal. In mode `block`
 * the policy's deny lists (`files.read.deny`, `files.write.deny`, `files.delete.deny`) are mapped
 * too, since there every denial is a block; in the other modes a denial's response depends on
 * its risk, which only the supervisor can weigh, so the deny lists stay with it.
 *
 * In mode `block`, the binaries of denied commands (`processes.deny`) lose Landlock's EXECUTE
 * right too, so that a denied command stays denied against a thread that rewrites the execve
 * path after the supervisor's check: an entry by name is looked up, at start, in every
 * directory of the agent's PATH and the usual bin directories, each match resolved to its real
 * file; an entry by path is mapped as a path glob. What stays open, and why:
 * - a copy of the binary under another name or in another place (or a hard link) runs: Landlock
 *   walls inodes by path, not programs by content; a binary installed after start is not covered;
 * - an entry with `args`, or with both a name and a path, cannot be expressed (the supervisor
 *   still refuses it on the arguments it copied, which a racing thread can swap);
 * - a multi-call binary (busybox; a file that runs under two or more names the entry does not
 *   match) is left out, since walling it would deny every command it provides (listed as
 *   unenforceable); a single other name is taken for an alias (`slogin` for `ssh`) and walled;
 * - an interpreter running a denied script by name (`sh ./nc`) is the supervisor's decision.
 *
 * @module
 */

import { resolve } from "node:path";
import picomatch from "picomatch";
import { expandGlob, parseNetworkEntry, type ResolvedPolicy } from "../policy/mod.ts";
import type { NetworkEntry } from "../policy/patterns.ts";
import { configDir, dataDir } from "../platform/mod.ts";
import {
  type DenyEntry,
  type LandlockPlan,
  type PlanHost,
  planLandlock,
  RIGHT_GROUPS,
  type Unenforceable,
} from "../platform/landlock_plan.ts";

/** The session's policy, as the tiers get it. */
export interface LandlockPolicy {
  resolved: ResolvedPolicy;
  workspace: string;
  home: string;
}

/** Options for {@link landlockDenyEntries} and {@link landlockPlanFor}. */
export interface LandlockPlanOptions {
  /** The session's policy; absent: only Sentry's own directories are walled off. */
  policy?: LandlockPolicy | undefined;
  /** The environment Sentry's directories (`SENTRY_HOME`, XDG, `HOME`) are found from. */
  env: Readonly<Record<string, string>>;
  /** Where a relative `SENTRY_HOME` is resolved. */
  cwd: string;
}

/** Whether the policy's deny lists go to Landlock: mode `block`, with file monitoring on. */
export function mapsDenyLists(policy: LandlockPolicy | undefined): boolean {
  return policy !== undefined && policy.resolved.mode === "block" &&
    policy.resolved.monitors.files;
}

/**
 * The deny globs for Landlock: Sentry's own directories in every group, then (in mode `block`)
 * the policy's three deny lists, expanded. A glob that does not expand is returned as
 * unenforceable. Pure.
 */
export function landlockDenyEntries(
  options: LandlockPlanOptions,
): { deny: DenyEntry[]; unenforceable: Unenforceable[] } {
  const deny: DenyEntry[] = [];
  const unenforceable: Unenforceable[] = [];
  const policy = options.policy;
  // Path rules cost the agent something (nothing can be created directly in an ancestor of a
  // walled path, such as ~): only in mode block, which asks for hard walls. In every mode the
  // scope still keeps the agent from signalling or tracing Sentry.
  if (policy === undefined || mapsDenyLists(policy)) {
    for (const dir of ownDirs(options)) {
      for (const group of RIGHT_GROUPS) {
        deny.push({ group, source: "sentry", glob: dir, path: `${escape(dir)}/**` });
      }
    }
  }
  if (policy !== undefined && mapsDenyLists(policy)) {
    const context = { home: policy.home, workspace: policy.workspace, env: options.env };
    for (const group of RIGHT_GROUPS) {
      const source = `files.${group}.deny`;
      for (const glob of policy.resolved.files[group].deny) {
        try {
          deny.push({ group, source, glob, path: expandGlob(glob, context) });
        } catch (error) {
          unenforceable.push({ source, glob, reason: (error as Error).message });
        }
      }
    }
  }
  return { deny, unenforceable };
}

/** Computes the session's Landlock plan on a kernel of Landlock `abi`. */
export function landlockPlanFor(
  options: LandlockPlanOptions & { abi: number; host: PlanHost },
): LandlockPlan {
  const { deny, unenforceable } = landlockDenyEntries(options);
  const commands = deniedCommandEntries(options);
  deny.push(...commands.deny);
  unenforceable.push(...commands.unenforceable);
  const plan = planLandlock({ abi: options.abi, deny, host: options.host });
  plan.unenforceable.unshift(...unenforceable);
  if (options.abi >= 4 && options.policy !== undefined) {
    const ports = landlockTcpDeniedPorts(options.policy);
    if (ports.length > 0) plan.tcpDenied = ports;
  }
  return plan;
}

/**
 * The TCP ports Landlock may wall off (mode `block`, network monitoring on): those the policy
 * denies on every address. A port is one when a `network.deny` entry names the port alone
 * (`:25`, `:6000-6063`), or when `network.default` is `deny` and no `network.allow` entry can
 * match it (an entry without a port matches them all). Database ports are left to the
 * supervisor and the connect guard, which weigh `database.allow`. Coarse but sound: a port any
 * allowed destination uses is never walled. Pure.
 */
export function landlockTcpDeniedPorts(policy: LandlockPolicy): [number, number][] {
  const { resolved } = policy;
  if (resolved.mode !== "block" || !resolved.monitors.network) return [];
  const parse = (list: string[]) => {
    const out: NetworkEntry[] = [];
    for (const text of list) {
      try {
        out.push(parseNetworkEntry(text));
      } catch {
        // The policy compiler already refused it.
      }
    }
    return out;
  };
  const deny = parse(resolved.network.deny);
  const allow = parse(resolved.network.allow);
  const covers = (e: NetworkEntry, port: number) =>
    e.type === "any" ||
    (e.type !== "unix" && (e.ports === null || (e.ports.lo <= port && port <= e.ports.hi)));
  const database = new Set(resolved.database.ports);
  const out: [number, number][] = [];
  for (let port = 1; port <= 65535; port++) {
    if (database.has(port)) continue;
    const denied = deny.some((e) => e.type === "any" || (e.type === "ports" && covers(e, port)));
    const unallowed = resolved.network.default === "deny" && !allow.some((e) => covers(e, port));
    if (!denied && !unallowed) continue;
    const last = out.at(-1);
    if (last !== undefined && last[1] === port - 1) last[1] = port;
    else out.push([port, port]);
  }
  return out;
}

/** Whether denied commands lose EXECUTE: mode `block`, with process monitoring on. */
export function mapsDeniedCommands(policy: LandlockPolicy | undefined): boolean {
  return policy !== undefined && policy.resolved.mode === "block" &&
    policy.resolved.monitors.processes;
}

/** Where a command named in `processes.deny` is looked for, besides the agent's PATH. */
export const BIN_DIRS: readonly string[] = [
  "/usr/local/sbin",
  "/usr/local/bin",
  "/usr/sbin",
  "/usr/bin",
  "/sbin",
  "/bin",
];

/**
 * The `execute` deny entries for the policy's denied commands (mode `block`): an entry by name
 * becomes the real file of every match in the agent's PATH (`env.PATH`) and {@link BIN_DIRS};
 * an entry by path its expanded glob. Entries Landlock cannot express are returned as
 * unenforceable. Pure given `host`.
 */
export function deniedCommandEntries(
  options: LandlockPlanOptions & { host: PlanHost },
): { deny: DenyEntry[]; unenforceable: Unenforceable[] } {
  const deny: DenyEntry[] = [];
  const unenforceable: Unenforceable[] = [];
  const policy = options.policy;
  if (policy === undefined || !mapsDeniedCommands(policy)) return { deny, unenforceable };
  const { host } = options;
  const dirs = [
    ...new Set([
      ...(options.env.PATH ?? "").split(":").filter((d) => d.startsWith("/")),
      ...BIN_DIRS,
    ]),
  ];
  // Every program name in those directories, by the real file it runs (read once, lazily).
  let names: Map<string, Set<string>> | null = null;
  const programs = () => {
    if (names !== null) return names;
    names = new Map();
    for (const dir of dirs) {
      let listed: readonly { name: string; type: string }[];
      try {
        listed = host.list(dir);
      } catch {
        continue;
      }
      for (const entry of listed) {
        if (entry.type !== "file" && entry.type !== "symlink") continue;
        const real = host.realPath(`${dir}/${entry.name}`);
        if (real === null || host.typeOf(real) !== "file") continue;
        const set = names.get(real) ?? new Set<string>();
        set.add(entry.name);
        names.set(real, set);
      }
    }
    return names;
  };
  const context = { home: policy.home, workspace: policy.workspace, env: options.env };
  const source = "processes.deny";
  for (const entry of policy.resolved.processes.deny) {
    const text = typeof entry === "string" ? entry : JSON.stringify(entry);
    const e = typeof entry === "string"
      ? (entry.includes("/") ? { path: entry } : { name: entry })
      : entry;
    const skip = (reason: string) => unenforceable.push({ source, glob: text, reason });
    if (e.args !== undefined) {
      skip("Landlock cannot match a command's arguments");
      continue;
    }
    if (e.name !== undefined && e.path !== undefined) {
      skip("Landlock maps a command by name or by path, not both");
      continue;
    }
    if (e.path !== undefined) {
      try {
        deny.push({ group: "execute", source, glob: text, path: expandGlob(e.path, context) });
      } catch (error) {
        skip((error as Error).message);
      }
      continue;
    }
    if (e.name === undefined) continue;
    const matches = picomatch(e.name, { dot: true });
    for (const [real, runAs] of programs()) {
      if (![...runAs].some((n) => matches(n))) continue;
      const own = real.slice(real.lastIndexOf("/") + 1);
      // One more name is an alias (slogin for ssh); two or more, a multi-call binary (busybox,
      // systemctl as halt, reboot...), whose other programs must keep running.
      const others = [...runAs].filter((n) => !matches(n) && n !== own).sort();
      if (others.length >= 2) {
        skip(
          `"${real}" also runs as ${
            others.slice(0, 3).map((n) => `"${n}"`).join(", ")
          } (a multi-call binary): walling it would deny those too`,
        );
        continue;
      }
      deny.push({ group: "execute", source, glob: text, path: escape(real) });
    }
  }
  return { deny, unenforceable };
}

/** A line for the operator at start. */
export interface LandlockNotice {
  type: "info" | "warn";
  message: string;
}

/**
 * What Sentry says at start about Landlock: what it walls off, which deny rules it cannot
 * enforce (named, with why), and what is missing on this kernel. Pure.
 */
export function landlockNotices(
  options: {
    plan: LandlockPlan | null;
    reason: string | null;
    policy?: LandlockPolicy | undefined;
    /**
     * What still holds the deny rules Landlock cannot: the seccomp supervisor (the default, on
     * the seccomp tier), or under the wall of the other tiers the root gates and a pause.
     */
    beyond?: string;
  },
): LandlockNotice[] {
  const { plan } = options;
  if (plan === null) {
    return [{
      type: "warn",
      message: `Landlock is not available (${
        options.reason ?? "unknown reason"
      }): the agent can signal Sentry and its watchdog, and Sentry's own files are guarded by the seccomp supervisor alone`,
    }];
  }
  const lists = mapsDenyLists(options.policy);
  const execute = plan.denied.execute?.length ?? 0;
  const out: LandlockNotice[] = [{
    type: "info",
    message: `Landlock (ABI ${plan.abi}, ${plan.rules.length} rules) ${
      lists
        ? "walls off Sentry's own files and the policy's deny lists"
        : "is on (Sentry's own files are walled off in mode block only)"
    }${
      (plan.tcpDenied ?? []).length > 0
        ? `; ${
          (plan.tcpDenied ?? []).reduce((n, [lo, hi]) => n + hi - lo + 1, 0)
        } TCP ports the policy denies on every address cannot be connected to`
        : ""
    }${
      plan.scoped !== 0 ? "; the agent cannot signal or trace processes outside its own tree" : ""
    }${
      execute > 0
        ? `; ${execute} binar${execute === 1 ? "y" : "ies"} of denied commands cannot be executed`
        : ""
    }`,
  }];
  if (plan.scoped === 0) {
    out.push({
      type: "warn",
      message:
        `Landlock ABI ${plan.abi} has no signal scoping (ABI 6, Linux 6.12): the agent can signal Sentry and its watchdog`,
    });
  }
  if (plan.unenforceable.length > 0) {
    const rules = plan.unenforceable.map((u) => `${u.source} "${u.glob}" (${u.reason})`);
    out.push({
      type: "warn",
      message: `Landlock cannot enforce ${plan.unenforceable.length} deny rule${
        plan.unenforceable.length === 1 ? "" : "s"
      }; ${options.beyond ?? "the seccomp supervisor still blocks them by path"}: ${
        rules.join("; ")
      }`,
    });
  }
  return out;
}

/** Sentry's data and configuration directories, absolute, without duplicates. */
function ownDirs(options: LandlockPlanOptions): string[] {
  const dirs = new Set<string>();
  for (const find of [dataDir, configDir]) {
    try {
      dirs.add(resolve(options.cwd, find(options.env)));
    } catch {
      // No HOME and no SENTRY_HOME: Sentry cannot open a journal either, and says so there.
    }
  }
  return [...dirs];
}

/** Escapes a path so that the planner reads it as literal (as the policy's expansion does). */
function escape(path: string): string {
  return path.replace(/[\\*?[\]{}()!+@|]/g, "\\$&");
}
