/**
 * What the journal keeps of a live session's policy changes (`sentry policy reload`, SIGHUP,
 * the API): each attempt, applied or refused, with the hashes of the policy before and after.
 *
 * @module
 */

/** How a reload went: `applied` (the new policy decides what follows) or `refused`. */
export type PolicyReloadOutcome = "applied" | "refused";

/** A reload to record with `Journal.recordPolicyReload`. */
export interface NewPolicyReload {
  session: string;
  /** Defaults to the journal's clock. */
  ts?: string;
  outcome: PolicyReloadOutcome;
  /** The policy asked for: a template name or a file path. */
  policy: string;
  /** The sha256 of the resolved policy in force before. */
  oldHash: string;
  /** The sha256 of the resolved policy asked for, or null when it did not load. */
  newHash: string | null;
  /** Who asked, the reason for a refusal, and what stays as the session started. */
  detail?: Record<string, unknown>;
}

/** A recorded reload. */
export interface PolicyReloadRecord {
  /** Increasing in the order reloads were written. */
  id: number;
  session: string;
  ts: string;
  outcome: PolicyReloadOutcome;
  policy: string;
  oldHash: string;
  newHash: string | null;
  detail: Record<string, unknown>;
}

/** Inserts one reload. */
export const INSERT_POLICY_RELOAD = `INSERT INTO policy_reloads
  (session, ts, outcome, policy, old_hash, new_hash, detail) VALUES (?, ?, ?, ?, ?, ?, ?)`;

/** A session's reloads after an id, oldest first. */
export const SELECT_POLICY_RELOADS =
  "SELECT * FROM policy_reloads WHERE session = ? AND id > ? ORDER BY id";

/** Maps a `policy_reloads` row to a record. */
export function toPolicyReload(row: Record<string, unknown>): PolicyReloadRecord {
  return {
    id: Number(row["id"]),
    session: String(row["session"]),
    ts: String(row["ts"]),
    outcome: row["outcome"] === "applied" ? "applied" : "refused",
    policy: String(row["policy"]),
    oldHash: String(row["old_hash"]),
    newHash: row["new_hash"] === null ? null : String(row["new_hash"]),
    detail: JSON.parse(String(row["detail"])) as Record<string, unknown>,
  };
}
