/**
 * What the API's control routes do by default: act on a session's process tree from this
 * process (which may not be the session's Sentry), and journal it, like `sentry resume` and
 * `sentry kill` do.
 *
 * @module
 */

import type { Journal, SessionRecord } from "../journal/mod.ts";
import { openStore, rollback } from "../rollback/mod.ts";
import { isAbsolute, join } from "node:path";
import { z } from "zod";
import { isTemplateName } from "../policy/mod.ts";
import {
  journalRestore,
  killSession,
  pauseSession,
  ReloadError,
  type ReloadResult,
  reloadSession,
  resumeSession,
} from "../session/mod.ts";
import { HttpError } from "./errors.ts";
import type { ControlResult, RollbackResultBody } from "./schemas.ts";

/** What a rollback route asks for. */
export interface RollbackRequest {
  dryRun: boolean;
  /** Globs: only matching paths are rolled back. */
  paths?: string[];
}

/**
 * The control actions behind `POST /v1/sessions/:id/{pause,resume,kill,rollback}`. Inject your
 * own (`sentry run` can route them to its live session's responders) or use
 * {@link defaultControls}.
 */
export interface SessionControls {
  pause(session: SessionRecord): Promise<ControlResult>;
  resume(session: SessionRecord): Promise<ControlResult>;
  kill(session: SessionRecord): Promise<ControlResult>;
  rollback(session: SessionRecord, request: RollbackRequest): Promise<RollbackResultBody>;
  /**
   * Applies a new policy to a live session's next events (`POST /v1/sessions/:id/policy/reload`);
   * absent: the route answers 501.
   */
  reload?(session: SessionRecord, request: PolicyReloadRequest): Promise<ReloadResult>;
}

/**
 * The body of `POST /v1/sessions/:id/policy/reload`: `policy`, a template name or an absolute
 * policy file on the host, or `yaml`, a policy's text; neither: the session's own policy read
 * again.
 */
export const PolicyReloadBody = z.object({
  policy: z.string().min(1).max(4096).optional().describe(
    "A template name or an absolute policy file on the host",
  ),
  yaml: z.string().min(1).max(1_000_000).optional().describe("A policy's YAML text"),
}).strict().refine((b) => b.policy === undefined || b.yaml === undefined, {
  message: "give policy or yaml, not both",
});

/** What `POST /v1/sessions/:id/policy/reload` answers: the reload, applied or refused. */
export const PolicyReloadResultBody = z.object({
  session: z.string(),
  outcome: z.enum(["applied", "refused"]),
  policy: z.string().describe("The policy asked for: a file, a template, or the session's own"),
  by: z.string(),
  old_hash: z.string().describe("sha256 of the resolved policy in force before"),
  new_hash: z.string().nullable().describe("sha256 of the policy asked for; null: it did not load"),
  reason: z.string().nullable().describe("Why it was refused"),
  fixed: z.array(z.string()).describe("What stays as the session started"),
});

/** A reload's result as the API answers it. */
export type PolicyReloadResultBody = z.infer<typeof PolicyReloadResultBody>;

/** A reload's result in the API's shape (snake_case). */
export function reloadResultBody(r: ReloadResult): PolicyReloadResultBody {
  return {
    session: r.session,
    outcome: r.outcome,
    policy: r.policy,
    by: r.by,
    old_hash: r.oldHash,
    new_hash: r.newHash,
    reason: r.reason,
    fixed: r.fixed,
  };
}

/** A reload asked through the API: the policy file or template to load, or null. */
export interface PolicyReloadRequest {
  file: string | null;
}

/**
 * Turns a reload body into the file to load: a template name or an absolute path as given, or
 * YAML text written to `run/<session>.api-policy.yaml` (mode 0600) in the data directory. A
 * relative path is a 400: the API's working directory means nothing to its caller.
 */
export function reloadRequestOf(
  body: z.infer<typeof PolicyReloadBody>,
  where: { dataDir: string; session: string },
): PolicyReloadRequest {
  if (body.yaml !== undefined) {
    const dir = join(where.dataDir, "run");
    Deno.mkdirSync(dir, { recursive: true, mode: 0o700 });
    const file = join(dir, `${where.session}.api-policy.yaml`);
    Deno.writeTextFileSync(file, body.yaml, { mode: 0o600 });
    return { file };
  }
  if (body.policy === undefined) return { file: null };
  if (!isTemplateName(body.policy) && !isAbsolute(body.policy)) {
    throw new HttpError(
      400,
      `Invalid policy "${body.policy}": give a template name or an absolute file path`,
      { field: "policy" },
    );
  }
  return { file: body.policy };
}

/** What {@link defaultControls} needs. */
export interface DefaultControlsOptions {
  journal: Journal;
  dataDir: string;
  /** Time between SIGTERM and SIGKILL for a kill; default 3000 ms. */
  graceMs?: number;
}

/** What the API writes in the `by` detail of the responses it journals. */
const BY = "api";

/**
 * Controls that work from any process on the host, on what the session's pids file proves (each
 * process by its start time, and its cgroup): pause freezes the session's cgroup, or stops the
 * tree with SIGSTOP, verified in /proc; resume and kill are `sentry resume` and `sentry kill`;
 * rollback restores the session's snapshot from the store. Each is journaled.
 */
export function defaultControls(options: DefaultControlsOptions): SessionControls {
  const { journal, dataDir } = options;
  const graceMs = options.graceMs ?? 3000;
  return {
    async pause(session) {
      return report(session, "pause", await pauseSession(session, { journal, dataDir, by: BY }));
    },
    async resume(session) {
      return report(session, "resume", await resumeSession(session, { journal, dataDir, by: BY }));
    },
    async kill(session) {
      return report(
        session,
        "kill",
        await killSession(session, { journal, dataDir, graceMs, by: BY }),
      );
    },
    async reload(session, request) {
      try {
        return await reloadSession(session, { dataDir, file: request.file, by: BY });
      } catch (error) {
        if (error instanceof ReloadError) throw new HttpError(409, error.message, { cause: error });
        throw error;
      }
    },
    async rollback(session, request) {
      // The agent must not write while its files are restored: stop it first (it stays stopped).
      // A session that is not live has nothing to stop.
      let stopped: number[] = [];
      if (!request.dryRun && (session.state === "running" || session.state === "paused")) {
        const paused = await this.pause(session);
        stopped = paused.done;
        if (paused.failed.length > 0) {
          throw new HttpError(
            409,
            `Cannot roll back session "${session.id}": ${paused.failed.length} of its processes could not be stopped`,
          );
        }
      }
      const store = openStore(dataDir);
      let result;
      try {
        result = await rollback(store, {
          session: session.id,
          dryRun: request.dryRun,
          ...(request.paths === undefined ? {} : { filter: request.paths }),
        });
      } catch (error) {
        if (error instanceof Deno.errors.NotFound) {
          throw new HttpError(409, `Session "${session.id}" has no snapshot to roll back to`, {
            cause: error,
          });
        }
        throw error;
      }
      if (result.restore !== null) journalRestore(journal, result.restore, BY);
      return {
        session: session.id,
        dry_run: result.dryRun,
        ok: result.ok,
        snapshot: result.plan.snapshot.id,
        actions: result.plan.actions.map((a) => ({
          kind: a.kind,
          path: a.path,
          differences: a.differences,
        })),
        rollback: result.restore?.id ?? null,
        counts: result.restore?.counts ?? null,
        ...(request.dryRun ? {} : { stopped }),
      };
    },
  };
}

function report(
  session: SessionRecord,
  action: ControlResult["action"],
  r: { done: number[]; failed: { pid: number; reason: string }[]; forced?: number[] },
): ControlResult {
  return {
    session: session.id,
    action,
    ok: r.failed.length === 0 && r.done.length > 0,
    done: r.done,
    failed: r.failed,
    ...(r.forced === undefined ? {} : { forced: r.forced }),
  };
}
