/**
 * Live reload of a session's policy (`sentry policy reload`, SIGHUP, the API): what a new
 * policy may change in a session that runs, and how another process asks the session's Sentry
 * for it.
 *
 * What a reload changes: every decision the engine takes on the events that follow (verdicts,
 * risk, the rule, the response and its cap, the mode, thresholds, rules and exceptions, every
 * allow and deny list, `block.pause`, `on_journal_error`). What it cannot change, because it
 * was set up at start: the kernel gates (the Landlock wall, which can only narrow, never widen;
 * the seccomp supervisor's, the fanotify guard's and the connect guard's tables, compiled at
 * start), the sensors and their settings (monitors, limits, database ports, the host names
 * resolved), the snapshot (rollback), the pause timeout and the watchdog's `on_sentry_exit`. A
 * reload that would need one of those changed in a way the session cannot honour (widen a
 * gate, watch what no sensor of the session watches) is refused, saying which; the other
 * differences are stated in the reload's result.
 *
 * @module
 */

import { createHash } from "node:crypto";
import { join } from "node:path";
import { responseRank } from "../events/mod.ts";
import type { ResolvedPolicy } from "../policy/mod.ts";

/** The policy a session decides with: resolved, compiled, and the context it compiled in. */
export interface LivePolicy {
  resolved: ResolvedPolicy;
  /** Host names the compiled policy mentions (the sensors resolve them). */
  namedHosts: readonly string[];
  /** The compiled policy's response cap (the mode's rank). */
  modeCap: number;
}

/** What {@link checkReload} found. */
export interface ReloadCheck {
  /** Why the reload is refused, or null when it may be applied. */
  refusal: string | null;
  /** What stays as the session started although the new policy says otherwise. */
  fixed: string[];
}

/** What {@link checkReload} needs besides the two policies. */
export interface ReloadCheckOptions {
  /**
   * The kernel gates that hold the start policy in this session (`the Landlock wall`, `the
   * seccomp supervisor`, `the fanotify guard`, `the connect guard`); empty when none blocks.
   */
  gates: readonly string[];
  /** The policy the session started with (the gates and sensors hold it). */
  start: LivePolicy;
}

const BLOCK_RANK = responseRank("block");

/**
 * Decides whether `next` may replace the policy of a live session, and says what of it cannot
 * apply. Pure. Refused: a monitor switched on that was off at start (no sensor of the session
 * watches it), or, when a kernel gate holds the start policy, anything that would widen it (a
 * deny removed, an allow added, a default opened, a rule dropped or given exceptions, a
 * threshold raised, a mode below `block`): the gate would go on refusing it.
 */
export function checkReload(next: LivePolicy, options: ReloadCheckOptions): ReloadCheck {
  const start = options.start;
  const old = start.resolved;
  const neu = next.resolved;
  const monitorsOn = (Object.keys(neu.monitors) as (keyof ResolvedPolicy["monitors"])[])
    .filter((m) => neu.monitors[m] && !old.monitors[m]);
  if (monitorsOn.length > 0) {
    return {
      refusal: `${
        monitorsOn.map((m) => `monitors.${m}`).join(", ")
      } was off when the session started, and no sensor of a live session can be started: ` +
        "start a new session to watch it",
      fixed: [],
    };
  }
  if (options.gates.length > 0) {
    const wider = widenings(start, next);
    if (wider.length > 0) {
      const more = wider.length > 3 ? ` (and ${wider.length - 3} more)` : "";
      return {
        refusal:
          `${listOf(options.gates)} of this session hold${
            options.gates.length === 1 ? "s" : ""
          } the start policy in the kernel and can only narrow, never widen, in a live session ` +
          `(a Landlock wall cannot be lifted; the seccomp, fanotify and connect tables were ` +
          `compiled at start): the new policy widens it: ${wider.slice(0, 3).join("; ")}${more}` +
          "; start a new session to widen it",
        fixed: [],
      };
    }
  }
  const fixed: string[] = [];
  if (options.gates.length > 0) {
    fixed.push(
      `${listOf(options.gates)} keep${
        options.gates.length === 1 ? "s" : ""
      } refusing in the kernel what the start policy denies (compiled at start); what the new ` +
        "policy denies besides is answered after the fact, with its response",
    );
  } else if (next.modeCap >= BLOCK_RANK && start.modeCap < BLOCK_RANK) {
    fixed.push(
      `no kernel gate blocks in this session (it started in mode "${old.mode}"): the new ` +
        "policy's denials are answered after the fact (pause, rollback, kill), not refused " +
        "before they happen",
    );
  }
  const differs = (a: unknown, b: unknown) => JSON.stringify(a) !== JSON.stringify(b);
  const monitorsOff = (Object.keys(neu.monitors) as (keyof ResolvedPolicy["monitors"])[])
    .filter((m) => !neu.monitors[m] && old.monitors[m]);
  if (monitorsOff.length > 0) {
    fixed.push(
      `${
        monitorsOff.map((m) => `monitors.${m}`).join(", ")
      } off: the sensors keep running, and the engine allows what they report`,
    );
  }
  if (differs(old.limits, neu.limits)) {
    fixed.push(
      `limits: the resource sensor keeps reporting above the start policy's (cpu ${old.limits.cpu_percent}% for ${old.limits.cpu_seconds} s, memory ${old.limits.memory_mb} MB); the new limits judge what it reports`,
    );
  }
  if (differs(old.database.ports, neu.database.ports)) {
    fixed.push("database.ports: the sensors tell database connects by the start policy's ports");
  }
  const newHosts = next.namedHosts.filter((h) => !start.namedHosts.includes(h));
  if (newHosts.length > 0) {
    fixed.push(
      `host names new in the policy are not resolved in this session (${
        newHosts.slice(0, 5).map((h) => `"${h}"`).join(", ")
      }${newHosts.length > 5 ? ", ..." : ""}): their entries match connects by address only`,
    );
  }
  if (differs(old.rollback, neu.rollback)) {
    fixed.push("rollback: the snapshot taken at start is what a rollback restores");
  }
  if (differs(old.pause, neu.pause)) {
    fixed.push("pause.timeout and pause.on_timeout stay as started");
  }
  if (old.on_sentry_exit !== neu.on_sentry_exit) {
    fixed.push(`on_sentry_exit stays "${old.on_sentry_exit}" (the watchdog was told at start)`);
  }
  return { refusal: null, fixed };
}

/**
 * What `next` allows that `old` did not, as far as a kernel gate decides it: each as
 * `files.read.deny "~/.ssh/**" removed`. Pure.
 */
export function widenings(start: LivePolicy, next: LivePolicy): string[] {
  const out: string[] = [];
  const old = start.resolved;
  const neu = next.resolved;
  if (start.modeCap >= BLOCK_RANK && next.modeCap < BLOCK_RANK) {
    out.push(`mode "${old.mode}" lowered to "${neu.mode}"`);
  }
  const text = (e: unknown) => typeof e === "string" ? e : JSON.stringify(e);
  const compare = (
    name: string,
    neu: { default: string; allow: unknown[]; deny: unknown[] },
    was: { default: string; allow: unknown[]; deny: unknown[] },
  ) => {
    const had = new Set(was.deny.map(text));
    const has = new Set(neu.deny.map(text));
    for (const d of had) if (!has.has(d)) out.push(`${name}.deny "${d}" removed`);
    const allowed = new Set(was.allow.map(text));
    for (const a of neu.allow.map(text)) {
      if (!allowed.has(a)) out.push(`${name}.allow "${a}" added`);
    }
    if (was.default === "deny" && neu.default === "allow") {
      out.push(`${name}.default opened from "deny" to "allow"`);
    }
  };
  for (const op of ["read", "write", "delete"] as const) {
    compare(`files.${op}`, neu.files[op], old.files[op]);
  }
  compare("network", neu.network, old.network);
  compare("processes", neu.processes, old.processes);
  if (!old.network.listen && neu.network.listen) out.push("network.listen allowed");
  for (const rule of old.rules) {
    if (!rule.enabled) continue;
    const now = neu.rules.find((r) => r.id === rule.id);
    if (now === undefined || !now.enabled) out.push(`rule "${rule.id}" removed or disabled`);
    else if (JSON.stringify(now) !== JSON.stringify(rule)) out.push(`rule "${rule.id}" changed`);
  }
  for (const key of ["alert", "pause", "rollback", "kill"] as const) {
    if (neu.thresholds[key] > old.thresholds[key]) {
      out.push(`thresholds.${key} raised from ${old.thresholds[key]} to ${neu.thresholds[key]}`);
    }
  }
  return out;
}

function listOf(items: readonly string[]): string {
  if (items.length <= 1) return items[0] ?? "";
  return `${items.slice(0, -1).join(", ")} and ${items.at(-1)}`;
}

/**
 * The sha256 of a resolved policy, over its JSON with keys sorted: the same policy hashes the
 * same whatever the order of its keys. Journaled with every reload.
 */
export function policyHash(policy: ResolvedPolicy): string {
  return createHash("sha256").update(canonicalJson(policy)).digest("hex");
}

function canonicalJson(value: unknown): string {
  if (Array.isArray(value)) return `[${value.map(canonicalJson).join(",")}]`;
  if (value !== null && typeof value === "object") {
    const entries = Object.entries(value as Record<string, unknown>)
      .filter(([, v]) => v !== undefined)
      .sort(([a], [b]) => (a < b ? -1 : a > b ? 1 : 0));
    return `{${entries.map(([k, v]) => `${JSON.stringify(k)}:${canonicalJson(v)}`).join(",")}}`;
  }
  return JSON.stringify(value) ?? "null";
}

/** A reload asked of a session's Sentry by another process, left beside its pids file. */
export interface ReloadRequest {
  /** The policy file or template (absolute), or null: read the session's policy again. */
  file: string | null;
  /** Who asked, for the journal (`sentry policy reload`, `api`). */
  by: string;
  /** Matches the journaled result to the request. */
  nonce: string;
}

/** Where a session's pending reload request is kept: `run/<session>.reload`, mode 0600. */
export function reloadRequestPath(dataDir: string, session: string): string {
  return join(dataDir, "run", `${session}.reload`);
}

/**
 * Leaves a reload request for a session's Sentry (mode 0600, replaced atomically), to be read
 * at its next SIGHUP.
 */
export function writeReloadRequest(path: string, request: ReloadRequest): void {
  const tmp = `${path}.${request.nonce}.tmp`;
  Deno.writeTextFileSync(tmp, JSON.stringify(request) + "\n", { mode: 0o600 });
  Deno.renameSync(tmp, path);
}

/**
 * Where the session's Sentry answers the request with `nonce`: `run/<session>.reload-<nonce>`,
 * mode 0600. The requester reads it rather than the journal, whose rows another process may see
 * late.
 */
export function reloadResultPath(dataDir: string, session: string, nonce: string): string {
  return join(dataDir, "run", `${session}.reload-${nonce.replace(/[^A-Za-z0-9-]/g, "")}`);
}

/** Writes an answer to a reload request (mode 0600, replaced atomically). */
export function writeReloadResult(path: string, result: unknown): void {
  const tmp = `${path}.tmp`;
  Deno.writeTextFileSync(tmp, JSON.stringify(result) + "\n", { mode: 0o600 });
  Deno.renameSync(tmp, path);
}

/**
 * Takes the pending reload request (reads and removes it), or null when there is none: a plain
 * SIGHUP reads the session's own policy again. A malformed request is dropped as none.
 */
export function takeReloadRequest(path: string): ReloadRequest | null {
  let text: string;
  try {
    text = Deno.readTextFileSync(path);
    Deno.removeSync(path);
  } catch {
    return null;
  }
  try {
    const data = JSON.parse(text) as Record<string, unknown>;
    const file = data["file"];
    return {
      file: typeof file === "string" && file !== "" ? file : null,
      by: typeof data["by"] === "string" ? data["by"] : "SIGHUP",
      nonce: typeof data["nonce"] === "string" ? data["nonce"] : "",
    };
  } catch {
    return null;
  }
}
