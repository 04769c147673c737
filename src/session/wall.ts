/**
 * The agent's wall under `sentry run` for the tiers without a launcher of their own (eBPF,
 * fanotify, poll): what the launcher (`sentry __launch`, src/cli/wall_launcher.ts) puts up
 * before it execs the agent, and what Sentry says about it at start.
 *
 * - Landlock, wherever the kernel has it: signal and abstract-socket scoping in every mode (the
 *   agent cannot signal, stop or trace Sentry, its watchdog or any process outside its tree),
 *   and in mode `block` the policy's deny lists as hard walls, as the seccomp tier does.
 * - As root: a private mount namespace in which Sentry's data and configuration directories
 *   are covered by an empty tmpfs (the journal, the token, the snapshots and the pids files
 *   are out of reach in every mode), and the capabilities that would let a root agent switch
 *   Sentry off dropped from its bounding set.
 *
 * Without root the mask is not possible here: a new user namespace cannot be made by a
 * process with threads, and Deno always has some. The seccomp tier (the default without root)
 * guards Sentry's files in its supervisor instead; the poll tier says so at start.
 *
 * @module
 */

import type { LandlockPlan } from "../platform/landlock_plan.ts";
import {
  ACCESS_FS,
  landlockAllows,
  landlockAllowsOpen,
  parseLandlockPlan,
} from "../platform/landlock_plan.ts";
import type { SensorEvent } from "../sensors/sensor.ts";
import { hostPlanFs, landlockAbi } from "../platform/landlock_linux.ts";
import { DROPPED_CAPABILITIES } from "../platform/wall_linux.ts";
import { selfCommand } from "../platform/self_command.ts";
import {
  type LandlockNotice,
  landlockNotices,
  landlockPlanFor,
  type LandlockPolicy,
} from "./landlock_policy.ts";

/** What the launcher puts up, written by the supervisor as JSON. */
export interface WallPlan {
  /** The Landlock plan; null where the kernel has no Landlock. */
  landlock: LandlockPlan | null;
  /** Directories to cover with an empty tmpfs in the agent's mount namespace (root only). */
  mask: string[];
  /** Whether to drop the capabilities of {@link DROPPED_CAPABILITIES} (a root agent). */
  dropCapabilities: boolean;
}

/** Reads a plan written by {@link wallLauncherArgs}; throws a `TypeError` naming the bad field. */
export function parseWallPlan(text: string): WallPlan {
  const value: unknown = JSON.parse(text);
  if (typeof value !== "object" || value === null) {
    throw new TypeError("Bad wall plan: not an object");
  }
  const v = value as Record<string, unknown>;
  if (
    !Array.isArray(v.mask) ||
    !v.mask.every((d): d is string => typeof d === "string" && d.startsWith("/"))
  ) {
    throw new TypeError('Bad wall plan: "mask" must list absolute paths');
  }
  if (typeof v.dropCapabilities !== "boolean") {
    throw new TypeError('Bad wall plan: "dropCapabilities" must be a boolean');
  }
  const landlock = v.landlock === null ? null : parseLandlockPlan(JSON.stringify(v.landlock));
  return { landlock, mask: v.mask, dropCapabilities: v.dropCapabilities };
}

/** What {@link planWall} needs. */
export interface WallOptions {
  /** The session's policy, and Sentry's own directories (`guarded`). */
  policy: LandlockPolicy & { guarded: readonly string[] };
  env: Readonly<Record<string, string>>;
  cwd: string;
  /** Whether Sentry runs as root (default: `Deno.uid() === 0`). */
  root?: boolean;
  /** The kernel's Landlock ABI, and why it has none (default: asked of the kernel). */
  landlock?: { abi: number; reason: string | null };
  /** The tier, named in the notices. */
  tier: string;
}

/** Plans the wall for one launch, with the lines Sentry says about it at start. */
export function planWall(options: WallOptions): { plan: WallPlan; notices: LandlockNotice[] } {
  const root = options.root ?? Deno.uid() === 0;
  const support = options.landlock ?? landlockAbi();
  const landlock = support.abi < 1 ? null : landlockPlanFor({
    policy: options.policy,
    env: options.env,
    cwd: options.cwd,
    abi: support.abi,
    host: hostPlanFs(),
  });
  const notices: LandlockNotice[] = landlockNotices({
    plan: landlock,
    reason: support.reason,
    policy: options.policy,
    beyond:
      "the fanotify guard (root) holds those it can mark, and the rest pause the agent instead",
  }).filter((n) => !(landlock === null && n.type === "warn"));
  if (landlock === null) {
    notices.push({
      type: "warn",
      message: `Landlock is not available (${
        support.reason ?? "unknown reason"
      }): the agent can signal, stop or trace Sentry and its watchdog`,
    });
  }
  const mask = root ? [...options.policy.guarded] : [];
  if (root) {
    const caps = DROPPED_CAPABILITIES.map((c) => c.name).join(", ");
    notices.push({
      type: "info",
      message: mask.length > 0
        ? `Sentry's own directories (${
          mask.join(", ")
        }) are hidden from the agent (an empty tmpfs in its mount namespace), and a root agent runs without ${caps}`
        : `a root agent runs without ${caps}`,
    });
  } else {
    notices.push({
      type: "warn",
      message:
        `without root the ${options.tier} tier cannot hide Sentry's own directories from the agent: it can read the journal and the token (the seccomp tier guards them: --sensor seccomp)`,
    });
  }
  return { plan: { landlock, mask, dropCapabilities: root }, notices };
}

/**
 * Writes the plan to a new 0600 file and returns the launcher's argv and a `cleanup` that
 * removes the file (once the launcher has stopped itself, it has read it).
 */
export function wallLauncherArgs(
  command: readonly string[],
  options: { plan: WallPlan; session: string },
): { argv: string[]; cleanup: () => void } {
  const { plan } = options;
  const file = Deno.makeTempFileSync({ prefix: "sentry-wall-", suffix: ".json" });
  Deno.chmodSync(file, 0o600);
  Deno.writeTextFileSync(file, JSON.stringify(plan));
  return {
    // The session names the launcher, for a watchdog that finds no pids file.
    argv: [
      ...selfCommand(),
      "__launch",
      "--wall",
      file,
      "--session",
      options.session,
      "--",
      ...command,
    ],
    cleanup: () => {
      try {
        Deno.removeSync(file);
      } catch {
        // Gone already.
      }
    },
  };
}

/**
 * Tells whether the agent's Landlock plan is why a file action failed with EACCES (or EXDEV, a
 * rename or link out of a walled directory): returns that errno, else null. A string model of
 * the kernel's checks (see `landlockAllows`), for journaling the wall's refusals as blocks.
 */
export function landlockRefusal(plan: LandlockPlan): (event: SensorEvent) => string | null {
  const denies = landlockDenies(plan);
  return (event) => {
    const errno = event.detail.errno;
    if (errno !== "EACCES" && errno !== "EXDEV") return null;
    return denies(event) ? errno : null;
  };
}

/**
 * Tells whether the agent's Landlock plan refuses a file action, whatever the tier saw: a tier
 * that saw one succeed read a path a racing thread rewrote after the kernel's own copy.
 */
export function landlockDenies(plan: LandlockPlan): (event: SensorEvent) => boolean {
  return (event) => {
    const path = event.target;
    const parent = path.slice(0, Math.max(1, path.lastIndexOf("/")));
    const flags = typeof event.detail.flags === "number" ? event.detail.flags : null;
    let allowed: boolean;
    switch (event.kind) {
      case "file.read":
        allowed = landlockAllowsOpen(plan, {
          path,
          flags: flags ?? 0,
          directory: false,
          creates: false,
        });
        break;
      case "file.write":
      case "file.create":
        allowed = landlockAllowsOpen(plan, {
          path,
          flags: flags ?? 1,
          directory: false,
          creates: event.kind === "file.create",
        });
        break;
      case "file.delete":
        allowed = landlockAllows(plan, { path: parent, access: ACCESS_FS.REMOVE_FILE }) ||
          landlockAllows(plan, { path: parent, access: ACCESS_FS.REMOVE_DIR });
        break;
      case "file.rename": {
        const from = typeof event.detail.from === "string" ? event.detail.from : null;
        const fromParent = from === null ? null : from.slice(0, Math.max(1, from.lastIndexOf("/")));
        allowed = landlockAllows(plan, { path: parent, access: ACCESS_FS.MAKE_REG }) &&
          (fromParent === null ||
            landlockAllows(plan, { path: fromParent, access: ACCESS_FS.REMOVE_FILE }));
        break;
      }
      default:
        return false;
    }
    return !allowed;
  };
}

/**
 * Tells whether a file action failed because Sentry's own directories are hidden from the agent
 * (`mask`): whatever errno the empty tmpfs gave (ENOENT, EACCES, EROFS), that refusal is the
 * wall's. Returns the errno, else null.
 */
export function maskRefusal(mask: readonly string[]): (event: SensorEvent) => string | null {
  return (event) => {
    if (!event.kind.startsWith("file.")) return null;
    const errno = event.detail.errno;
    if (typeof errno !== "string") return null;
    const from = typeof event.detail.from === "string" ? event.detail.from : null;
    const beneath = (path: string) => mask.some((d) => path === d || path.startsWith(`${d}/`));
    return beneath(event.target) || (from !== null && beneath(from)) ? errno : null;
  };
}
