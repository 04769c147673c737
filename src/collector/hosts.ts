/**
 * What the collector knows about each uploading host, kept by the SQLite store as named values
 * ({@link StateSlots}, its journal's `sync_state`) under `host:<key id>:<host id>`: when it was
 * first and last seen, its name, how many batches and events it sent, and how many events its
 * outbox dropped (the count it reports in each batch). And the binding of each host id to the
 * key that registered it, under `host-key:<host id>`. (The PostgreSQL store keeps both in
 * tables of its own.)
 *
 * @module
 */

/**
 * Named string values shared by every process of one store: where the SQLite store keeps host
 * records and bindings. `swap` is a compare-and-swap in one write transaction.
 */
export interface StateSlots {
  /** The value of `key`, or undefined. */
  get(key: string): string | undefined;
  /** Sets `key` to `value`. */
  set(key: string, value: string): void;
  /**
   * Sets `key` to `value` (deletes it when undefined) only if it is `expected` now (undefined:
   * not set). Returns the value found: the swap happened when it equals `expected`.
   */
  swap(key: string, expected: string | undefined, value: string | undefined): string | undefined;
  /** Every value whose key starts with `prefix`, by key. */
  list(prefix: string): [string, string][];
}

/** The `sync_state` key prefix of host records. */
export const HOST_STATE_PREFIX = "host:";

/** One host, as the collector saw it. */
export interface HostRecord {
  /** The host id (a ULID the host made once). */
  host_id: string;
  /** The host's name (its hostname) in its latest batch. */
  name: string;
  /** The key it uploads with. */
  key_id: string;
  key_name: string;
  first_seen: string;
  last_seen: string;
  /** Accepted batches. */
  batches: number;
  /** Events stored from it. */
  events: number;
  /** Events it sent again (retries), not stored twice. */
  duplicates: number;
  /** Events its outbox dropped at its cap, in total, as it last reported. */
  dropped: number;
}

/** What one accepted batch adds to a host's record. */
export interface HostVisit {
  hostId: string;
  name: string;
  keyId: string;
  keyName: string;
  /** ISO time of the batch's arrival. */
  at: string;
  accepted: number;
  duplicates: number;
  dropped: number;
}

/** The `sync_state` key of a host's record. */
export function hostStateKey(keyId: string, hostId: string): string {
  return `${HOST_STATE_PREFIX}${keyId}:${hostId}`;
}

/**
 * Adds an accepted batch to its host's record. The dropped count only grows: a retried older
 * batch carries an older, smaller total.
 */
export function recordHostVisit(slots: StateSlots, visit: HostVisit): HostRecord {
  const key = hostStateKey(visit.keyId, visit.hostId);
  const previous = parseHost(slots.get(key));
  const record: HostRecord = {
    host_id: visit.hostId,
    name: visit.name,
    key_id: visit.keyId,
    key_name: visit.keyName,
    first_seen: previous?.first_seen ?? visit.at,
    last_seen: visit.at,
    batches: (previous?.batches ?? 0) + 1,
    events: (previous?.events ?? 0) + visit.accepted,
    duplicates: (previous?.duplicates ?? 0) + visit.duplicates,
    dropped: Math.max(previous?.dropped ?? 0, visit.dropped),
  };
  slots.set(key, JSON.stringify(record));
  return record;
}

/** Parses a stored host record; null when absent or unreadable. */
export function parseHost(value: string | undefined): HostRecord | null {
  if (value === undefined) return null;
  try {
    const data = JSON.parse(value) as HostRecord;
    return typeof data === "object" && data !== null && typeof data.host_id === "string"
      ? data
      : null;
  } catch {
    return null;
  }
}

/**
 * The `sync_state` key prefix of host bindings: `host-key:<host id>` holds the id of the key the
 * host is bound to. (Not under {@link HOST_STATE_PREFIX}, so host listings skip it.)
 */
export const HOST_BINDING_PREFIX = "host-key:";

/** The `sync_state` key of a host's binding. */
export function hostBindingKey(hostId: string): string {
  return `${HOST_BINDING_PREFIX}${hostId}`;
}

/** The key a host id is presented with. */
export interface HostClaim {
  /** The host id, upper case. */
  hostId: string;
  /** The key of the request. */
  key: { id: string; name: string };
  /** Every key of the store, revoked ones too: who the host is bound to. */
  keys: readonly { id: string; name: string; revoked_at: string | null }[];
}

/**
 * What {@link bindHost} decided: `bound` (already this key's), `claimed` (now this key's, the
 * first), `rebound` (moved from `previous`, a revoked key of the same name, or a key the store
 * no longer has) or `refused` (bound to `boundTo`, another key).
 */
export type HostBinding =
  | { outcome: "bound" }
  | { outcome: "claimed" }
  | { outcome: "rebound"; previous: string }
  | { outcome: "refused"; boundTo: string };

/**
 * Binds a host id to the key that registered it, or checks that it is bound to the key that
 * presents it. The first key to present a host id gets it (a host recorded before bindings
 * existed goes to the key of its oldest record). Another key is refused, unless the bound key
 * was revoked and this key has its name (a rotated key), or the key store no longer has the
 * bound key: then the binding moves. Each change is a compare-and-swap in the journal's write
 * transaction, so several collectors sharing the store agree.
 */
export function bindHost(slots: StateSlots, claim: HostClaim): HostBinding {
  const slot = hostBindingKey(claim.hostId);
  let bound = slots.get(slot);
  // Each turn either decides or sees another process's change; a few turns settle any race.
  for (let turn = 0; turn < 4; turn++) {
    if (bound === claim.key.id) return { outcome: "bound" };
    if (bound === undefined) {
      const registrar = oldestRecordKey(slots, claim.hostId) ?? claim.key.id;
      const found = slots.swap(slot, undefined, registrar);
      if (found !== undefined) {
        bound = found;
        continue;
      }
      if (registrar === claim.key.id) return { outcome: "claimed" };
      bound = registrar;
      continue;
    }
    const holder = claim.keys.find((k) => k.id === bound);
    const movable = holder === undefined ||
      (holder.revoked_at !== null && holder.name === claim.key.name);
    if (!movable) return { outcome: "refused", boundTo: bound };
    const found = slots.swap(slot, bound, claim.key.id);
    if (found === bound) return { outcome: "rebound", previous: bound };
    bound = found;
  }
  return { outcome: "refused", boundTo: bound ?? "(changing)" };
}

/**
 * Undoes a binding {@link bindHost} just made, when the batch that made it was not stored: a
 * host is bound by its first accepted batch. Does nothing if the binding changed meanwhile.
 */
export function unbindHost(
  slots: StateSlots,
  options: { hostId: string; keyId: string; binding: HostBinding },
): void {
  const { binding } = options;
  if (binding.outcome !== "claimed" && binding.outcome !== "rebound") return;
  slots.swap(
    hostBindingKey(options.hostId),
    options.keyId,
    binding.outcome === "rebound" ? binding.previous : undefined,
  );
}

/** The key of the host's oldest record, from before bindings existed; null when none. */
function oldestRecordKey(slots: StateSlots, hostId: string): string | null {
  let oldest: HostRecord | null = null;
  for (const [, value] of slots.list(HOST_STATE_PREFIX)) {
    const host = parseHost(value);
    if (host === null || host.host_id !== hostId) continue;
    if (oldest === null || host.first_seen < oldest.first_seen) oldest = host;
  }
  return oldest?.key_id ?? null;
}
