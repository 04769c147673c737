/**
 * What the API's control routes do by default: act on a session's process tree from this
 * process (which may not be the session's Sentry), and journal it, like `sentry resume` and
 * `sentry kill` do.
 *
 * @module
 */

import type { Journal, SessionRecord } from "../journal/mod.ts";
import { openStore, rollback } from "../rollback/mod.ts";
import { journalRestore, killSession, pauseSession, resumeSession } from "../session/mod.ts";
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
