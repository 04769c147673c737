/**
 * Small helpers of the dashboard's views: building elements (always through `textContent`, never
 * HTML, because paths and command lines come from the agent) and formatting values.
 *
 * @module
 */

/** The action kinds, as in `src/events/kinds.ts` (a test checks that they agree). */
export const KINDS = [
  "file.read",
  "file.write",
  "file.create",
  "file.delete",
  "file.rename",
  "proc.exec",
  "proc.exit",
  "proc.control",
  "net.connect",
  "net.listen",
  "db.connect",
  "resource.cpu",
  "resource.memory",
];

/** Kind groups offered by the filter, besides each kind alone. */
export const KIND_GROUPS = [
  { label: "files (file.*)", kinds: KINDS.filter((k) => k.startsWith("file.")) },
  { label: "processes (proc.*)", kinds: KINDS.filter((k) => k.startsWith("proc.")) },
  { label: "network (net.*, db.*)", kinds: KINDS.filter((k) => /^(net|db)\./.test(k)) },
  { label: "resources (resource.*)", kinds: KINDS.filter((k) => k.startsWith("resource.")) },
];

/**
 * The risk band of a score, for colours: 0 none, 1-29 low, 30-59 medium, 60-79 high, 80+
 * critical.
 * @param {number} risk
 * @returns {"none" | "low" | "medium" | "high" | "critical"}
 */
export function riskBand(risk) {
  if (risk >= 80) return "critical";
  if (risk >= 60) return "high";
  if (risk >= 30) return "medium";
  if (risk > 0) return "low";
  return "none";
}

/**
 * @typedef {Record<string, string | number | boolean | null | undefined | EventListener>} Attrs
 * @typedef {Node | string | number | null | undefined | false} Child
 */

/**
 * Builds an element. Keys of `attrs` starting with "on" add listeners; `class` sets the class;
 * `false`, null and undefined leave an attribute out; children are nodes or text.
 * @param {string} tag
 * @param {Attrs} [attrs]
 * @param {...(Child | Child[])} children
 * @returns {HTMLElement}
 */
export function h(tag, attrs = {}, ...children) {
  const el = document.createElement(tag);
  for (const [key, value] of Object.entries(attrs)) {
    if (value === null || value === undefined || value === false) continue;
    if (typeof value === "function") el.addEventListener(key.slice(2), value);
    else if (key === "class") el.className = String(value);
    else el.setAttribute(key, value === true ? "" : String(value));
  }
  append(el, children);
  return el;
}

/**
 * @param {Element} el
 * @param {(Child | Child[])[]} children
 */
function append(el, children) {
  for (const child of children.flat()) {
    if (child === null || child === undefined || child === false) continue;
    el.append(typeof child === "object" ? child : String(child));
  }
}

/**
 * Replaces an element's children.
 * @param {Element} el
 * @param {...(Child | Child[])} children
 */
export function fill(el, ...children) {
  el.replaceChildren();
  append(el, children);
}

/**
 * A time of day, `HH:MM:SS.mmm` in local time.
 * @param {string} iso
 */
export function clock(iso) {
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const pad = (/** @type {number} */ n, w = 2) => String(n).padStart(w, "0");
  return `${pad(d.getHours())}:${pad(d.getMinutes())}:${pad(d.getSeconds())}.${
    pad(d.getMilliseconds(), 3)
  }`;
}

/**
 * A date and time, short and local: `2026-01-02 03:04:05`.
 * @param {string | null} iso
 */
export function dateTime(iso) {
  if (iso === null) return "";
  const d = new Date(iso);
  if (Number.isNaN(d.getTime())) return iso;
  const pad = (/** @type {number} */ n) => String(n).padStart(2, "0");
  return `${d.getFullYear()}-${pad(d.getMonth() + 1)}-${pad(d.getDate())} ${pad(d.getHours())}:${
    pad(d.getMinutes())
  }:${pad(d.getSeconds())}`;
}

/**
 * A duration in words: `850 ms`, `12 s`, `4 min 5 s`, `2 h 3 min`.
 * @param {number} ms
 */
export function duration(ms) {
  if (ms < 1000) return `${Math.max(0, Math.round(ms))} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  return `${Math.floor(m / 60)} h ${m % 60} min`;
}

/**
 * A number with thousands separators.
 * @param {number} n
 */
export function count(n) {
  return n.toLocaleString("en-US");
}

/** Lower case for ASCII letters only, as SQLite's `lower()`. */
function asciiLower(/** @type {string} */ text) {
  return text.replace(/[A-Z]/g, (c) => c.toLowerCase());
}

/**
 * Whether an event matches a free-text search, exactly as the server's search (`q` of the
 * events route) decides: every word, JSON-escaped, must appear (ASCII case-insensitively) in the
 * JSON array of its kind, target, rule, verdict, response, pid, executable, command line and
 * detail.
 * @param {{ kind: string, target: string, rule: string, verdict: string, response: string,
 *   exe: string | null, cmdline: string[], pid: number | null, detail?: unknown }} event
 * @param {string} query
 */
export function matchesSearch(event, query) {
  const words = query.split(/\s+/).filter((w) => w !== "").map((w) =>
    asciiLower(JSON.stringify(w).slice(1, -1))
  );
  if (words.length === 0) return true;
  const text = asciiLower(JSON.stringify([
    event.kind,
    event.target,
    event.rule,
    event.verdict,
    event.response,
    event.pid,
    event.exe,
    event.cmdline,
    event.detail ?? {},
  ]));
  return words.every((w) => text.includes(w));
}

/**
 * The time an event id (a ULID) was minted, in ms since the epoch.
 * @param {string} id
 */
export function ulidTime(id) {
  const digits = "0123456789ABCDEFGHJKMNPQRSTVWXYZ";
  let t = 0;
  for (const ch of id.slice(0, 10).toUpperCase()) t = t * 32 + digits.indexOf(ch);
  return t;
}

/**
 * One entry of the dashboard's host filter.
 * @typedef {object} HostEntry
 * @property {string} value What `GET /v1/sessions?host=` gets: the host id on a collector, else
 *   the host name.
 * @property {string} name The host's name.
 * @property {string} label The name, with the end of the host id when two hosts share the name.
 * @property {number} sessions
 * @property {string | null} lastSeen When the collector last received a batch from it (ISO).
 * @property {number | null} dropped Events its outbox dropped at its cap, as it last reported:
 *   events the collector never saw.
 * @property {string[]} keys The names of the upload keys it used.
 */

/**
 * The hosts of a collector's `GET /v1/hosts`, the most recently seen first. The collector lists a
 * host once per upload key, so a host that rotated its key is merged here into one entry: its
 * sessions add up, and its dropped count is the highest reported (the outbox's total, whatever
 * the key).
 * @param {{ host_id: string, name: string, key_name: string, last_seen: string,
 *   sessions: number, dropped: number }[]} records
 * @returns {HostEntry[]}
 */
export function collectorHosts(records) {
  /** @type {Map<string, HostEntry>} */
  const byId = new Map();
  for (const r of records) {
    const known = byId.get(r.host_id);
    if (known === undefined) {
      byId.set(r.host_id, {
        value: r.host_id,
        name: r.name,
        label: r.name,
        sessions: r.sessions,
        lastSeen: r.last_seen,
        dropped: r.dropped,
        keys: [r.key_name],
      });
      continue;
    }
    known.sessions += r.sessions;
    known.dropped = Math.max(known.dropped ?? 0, r.dropped);
    if (known.lastSeen === null || r.last_seen > known.lastSeen) {
      known.lastSeen = r.last_seen;
      known.name = r.name;
    }
    if (!known.keys.includes(r.key_name)) known.keys.push(r.key_name);
  }
  const hosts = [...byId.values()].sort((a, b) =>
    (b.lastSeen ?? "").localeCompare(a.lastSeen ?? "")
  );
  return labelled(hosts);
}

/**
 * The hosts of the local API's `GET /v1/hosts` (`sentry run`, `attach`, `serve`: the host names
 * of the journal's sessions), in its order: the host of the latest session first.
 * @param {{ name: string, sessions: number }[]} records
 * @returns {HostEntry[]}
 */
export function localHosts(records) {
  return records.map((r) => ({
    value: r.name,
    name: r.name,
    label: r.name,
    sessions: r.sessions,
    lastSeen: null,
    dropped: null,
    keys: [],
  }));
}

/**
 * Gives hosts that share a name a label with the end of their id (the random part of the ULID).
 * @param {HostEntry[]} hosts
 */
function labelled(hosts) {
  /** @type {Map<string, number>} */
  const names = new Map();
  for (const x of hosts) names.set(x.name, (names.get(x.name) ?? 0) + 1);
  for (const x of hosts) {
    x.label = (names.get(x.name) ?? 0) > 1 ? `${x.name} (…${x.value.slice(-6)})` : x.name;
  }
  return hosts;
}

/**
 * How long ago a time was, coarsely: `just now`, `42 s ago`, `5 min ago`, `3 h ago`, `2 d ago`.
 * A time ahead of `now` (clocks disagree) is `just now`.
 * @param {string} iso
 * @param {number} now ms since the epoch
 */
export function ago(iso, now) {
  const ms = now - Date.parse(iso);
  if (Number.isNaN(ms)) return iso;
  const s = Math.floor(ms / 1000);
  if (s < 10) return "just now";
  if (s < 60) return `${s} s ago`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ago`;
  const hours = Math.floor(m / 60);
  if (hours < 48) return `${hours} h ago`;
  return `${Math.floor(hours / 24)} d ago`;
}
