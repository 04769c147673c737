/**
 * The SQL of the sync outbox and sync state. Private to the journal folder.
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
