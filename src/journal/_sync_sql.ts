/**
 * The SQL of the sync outbox and of the collector's ingest. Private to the journal folder.
 *
 * @module
 */

/** The oldest queued events after a sequence number, with their stored JSON. */
export const SELECT_OUTBOX = `SELECT o.seq, o.event_id, e.session, e.event
  FROM outbox o LEFT JOIN events e ON e.id = o.event_id
  WHERE o.seq > ? ORDER BY o.seq LIMIT ?`;

/** Removes queued events up to and including a sequence number. */
export const DELETE_OUTBOX_THROUGH = "DELETE FROM outbox WHERE seq <= ?";

/** The queue's size and its ends. */
export const OUTBOX_STATS = `SELECT count(*) AS n, min(seq) AS first, max(seq) AS last,
  (SELECT e.ts FROM outbox o JOIN events e ON e.id = o.event_id ORDER BY o.seq LIMIT 1) AS oldest
  FROM outbox`;

/** The sequence number below which rows must go so that `?` rows remain. */
export const OUTBOX_CUT = "SELECT seq FROM outbox ORDER BY seq DESC LIMIT 1 OFFSET ?";

/** Reads one sync state value. */
export const GET_SYNC_STATE = "SELECT value FROM sync_state WHERE key = ?";

/** Writes one sync state value. */
export const PUT_SYNC_STATE = `INSERT INTO sync_state (key, value) VALUES (?, ?)
  ON CONFLICT (key) DO UPDATE SET value = excluded.value`;

/** Sessions changed since they were last uploaded, oldest change first. */
export const SELECT_UNSYNCED_SESSIONS = `SELECT * FROM sessions
  WHERE rev > synced_rev AND origin_key IS NULL ORDER BY started_at LIMIT ?`;

/** Records that a session's revision reached the collector. */
export const MARK_SESSION_SYNCED = `UPDATE sessions SET synced_rev = max(synced_rev, ?)
  WHERE id = ?`;

/**
 * Stores or updates a session received from a host. A final state is never moved back to a live
 * one, and a session belongs to the host (id) that first sent it, whatever key it used (so keys
 * can be rotated): another host's update is ignored (the caller then finds the owner differs and
 * rejects the batch). The key of the latest update is kept.
 */
export const UPSERT_INGESTED_SESSION = `INSERT INTO sessions
  (id, agent, command, pid, kind, policy, mode, workspace, host, sentry_pid, started_at,
   ended_at, state, exit_code, note, origin_key, origin_host, tier)
  VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)
  ON CONFLICT (id) DO UPDATE SET
    state = CASE WHEN sessions.state IN ('running', 'paused') THEN excluded.state
                 ELSE sessions.state END,
    ended_at = coalesce(excluded.ended_at, sessions.ended_at),
    exit_code = coalesce(excluded.exit_code, sessions.exit_code),
    note = coalesce(excluded.note, sessions.note),
    pid = coalesce(excluded.pid, sessions.pid),
    origin_key = excluded.origin_key,
    rev = sessions.rev + 1
  WHERE sessions.origin_host IS excluded.origin_host`;

/** Which host uploaded a session (null for a session of this journal's own host). */
export const SELECT_SESSION_ORIGIN = "SELECT origin_host FROM sessions WHERE id = ?";
