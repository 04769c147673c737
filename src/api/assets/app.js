/**
 * The Sentry dashboard: sessions and agents, a live feed of actions coloured by risk, a session
 * timeline, each event's decision, and the controls (pause, resume, kill, rollback). It talks
 * only to its own origin: the API under /v1 with the bearer token kept in session storage, and
 * the event stream read through fetch (see sse.js).
 *
 * @module
 */

import { openStream } from "./sse.js";
import {
  ago,
  clock,
  collectorHosts,
  count,
  dateTime,
  duration,
  fill,
  h,
  KIND_GROUPS,
  KINDS,
  localHosts,
  matchesSearch,
  riskBand,
  ulidTime,
} from "./view.js";

const TOKEN_KEY = "sentry.token";
/** Events fetched per page. */
const PAGE = 200;
/** Events of the selected session kept in memory. */
const MAX_EVENTS = 2000;
/** Rows the feed shows at most. */
const MAX_ROWS = 300;
/** How often the session list (states, counts) is refreshed. */
const POLL_MS = 2000;
/** How often the host list is refreshed (and also whenever a session appears). */
const HOSTS_MS = 10_000;
/**
 * Steps of a text search run at once (the server walks at most 5,000 events a step): past
 * them, "Search older events" continues.
 */
const SEARCH_STEPS = 40;
/** Bars of the timeline strip. */
const BINS = 60;
/** Timeline items shown at most (the newest). */
const MAX_TIMELINE = 120;

/** @param {string} id */
const $ = (id) => /** @type {HTMLElement} */ (document.getElementById(id));

const state = {
  token: "",
  /** @type {any[]} the sessions (of the selected host), newest first */
  sessions: [],
  /** The host filter: "" for every host, else what `/v1/sessions?host=` gets. */
  host: "",
  /** @type {import("./view.js").HostEntry[]} */
  hosts: [],
  /** @type {boolean | null} whether the server is a collector (has `/v1/hosts`); null until known */
  collector: null,
  /** Sessions the stream named that the list lacks: another host's, or older than the list. */
  elsewhere: new Set(),
  /** Sessions the stream named that the list lacks, not looked up yet. */
  unknown: new Set(),
  /** @type {ReturnType<typeof setInterval> | undefined} */
  hostsPoll: undefined,
  /** Scroll the chosen host into view at the next render (the list scrolls sideways on phones). */
  revealHost: false,
  selected: "",
  /** @type {any | null} the selected session's detail: session, responses, sensors */
  detail: null,
  /** @type {any[]} the selected session's events that match the filters, newest first */
  events: [],
  ids: new Set(),
  /** @type {string | null} */
  cursor: null,
  /** @type {Map<string, any>} denied and process events of the selected session */
  marks: new Map(),
  /** @type {string | null} */
  openEvent: null,
  /** @type {{ close(): void } | null} */
  stream: null,
  /** @type {ReturnType<typeof setInterval> | undefined} */
  poll: undefined,
  /** Bumped on every new selection or filter, so that late answers are dropped. */
  generation: 0,
  streamOpened: false,
  busy: false,
  /**
   * @type {{ session: string, serve: string } | null} set when the API serving this page stops
   * with a session (`sentry run`, `attach`): what its stream's `server` message said
   */
  server: null,
  /** @type {any | null} the `closing` message of that API: it stopped, and how its session ended */
  closed: null,
  /** Whether the API is gone (the agent exited): the page shows what it holds, and what to run. */
  offline: false,
  /** What the feed's last search covered: "" (no search), "all", or the ISO time it reached. */
  searched: "",
};

// ------------------------------------------------------------------------------------------
// The API

class ApiError extends Error {
  /** @param {number} status @param {string} message */
  constructor(status, message) {
    super(message);
    this.status = status;
  }
}

/**
 * Calls the API with the token; a 401 sends the user back to the token form.
 * @param {string} path
 * @param {{ method?: string, body?: unknown, token?: string }} [init]
 */
async function api(path, init = {}) {
  /** @type {Record<string, string>} */
  const headers = { authorization: `Bearer ${init.token ?? state.token}` };
  if (init.body !== undefined) headers["content-type"] = "application/json";
  const res = await fetch(path, {
    method: init.method ?? "GET",
    headers,
    cache: "no-store",
    ...(init.body === undefined ? {} : { body: JSON.stringify(init.body) }),
  });
  const data = await res.json().catch(() => null);
  if (res.status === 401 && init.token === undefined) {
    logout("The token was refused: enter it again");
  }
  if (!res.ok) throw new ApiError(res.status, data?.error ?? `HTTP ${res.status}`);
  return data;
}

// ------------------------------------------------------------------------------------------
// Token and start

function boot() {
  $("login-form").addEventListener("submit", onLogin);
  $("logout").addEventListener("click", () => logout(""));
  setupFilters();
  $("older").addEventListener("click", () => loadEvents({ older: true }));
  $("offline-copy").addEventListener("click", copyServeCommand);
  $("d-close").addEventListener("click", closeDetail);
  document.addEventListener("keydown", (e) => {
    if (e.key === "Escape" && !$("detail").hidden) closeDetail();
  });
  $("btn-pause").addEventListener("click", () => control("pause"));
  $("btn-resume").addEventListener("click", () => control("resume"));
  $("btn-kill").addEventListener("click", () => control("kill"));
  $("btn-rollback").addEventListener("click", rollback);
  // A hash edited by hand (or a bookmark opened in this tab) may name another host.
  addEventListener("hashchange", () => {
    if (state.token) selectHost(hashParams().get("host") ?? "");
  });
  fetch("/health", { cache: "no-store" }).then((r) => r.json()).then((health) => {
    $("version").textContent = `v${health.version}`;
  }).catch(() => {});
  const saved = sessionStorage.getItem(TOKEN_KEY);
  if (saved) start(saved);
  else showLogin("");
}

/** @param {string} message */
function showLogin(message) {
  $("dash").hidden = true;
  $("logout").hidden = true;
  $("login").hidden = false;
  $("login-error").textContent = message;
  /** @type {HTMLInputElement} */ ($("token")).focus();
}

/** @param {SubmitEvent} event */
async function onLogin(event) {
  event.preventDefault();
  const input = /** @type {HTMLInputElement} */ ($("token"));
  const token = input.value.trim();
  if (token === "") return;
  $("login-error").textContent = "";
  try {
    await api("/v1/sessions?limit=1", { token });
  } catch (error) {
    $("login-error").textContent = error instanceof ApiError && error.status === 401
      ? "That token was refused. Copy it again from the output of sentry token."
      : `Cannot reach Sentry: ${errorText(error)}`;
    return;
  }
  input.value = "";
  sessionStorage.setItem(TOKEN_KEY, token);
  start(token);
}

/** @param {string} token */
function start(token) {
  state.token = token;
  $("login").hidden = true;
  $("dash").hidden = false;
  $("logout").hidden = false;
  state.streamOpened = false;
  state.host = hashParams().get("host") ?? "";
  state.revealHost = state.host !== "";
  connectStream("");
  refreshSessions();
  state.poll = setInterval(refreshSessions, POLL_MS);
  refreshHosts();
  state.hostsPoll = setInterval(refreshHosts, HOSTS_MS);
}

/** Opens the live stream, resuming after `lastEventId` when given. */
function connectStream(/** @type {string} */ lastEventId) {
  state.stream?.close();
  state.stream = openStream({
    url: "/v1/events/stream",
    token: state.token,
    onMessage,
    onState: onStreamState,
    ...(lastEventId === "" ? {} : { lastEventId }),
  });
}

/** @param {string} message */
function logout(message) {
  state.stream?.close();
  state.stream = null;
  state.server = null;
  state.closed = null;
  setOffline(false);
  clearInterval(state.poll);
  clearInterval(state.hostsPoll);
  sessionStorage.removeItem(TOKEN_KEY);
  state.token = "";
  state.selected = "";
  state.sessions = [];
  state.hosts = [];
  state.collector = null;
  state.elsewhere = new Set();
  state.unknown = new Set();
  state.generation++;
  setConn("closed", "offline");
  showLogin(message);
}

/** @param {string} kind @param {string} text */
function setConn(kind, text) {
  const el = $("conn");
  el.dataset.state = kind;
  el.textContent = text;
}

/** @param {string} streamState @param {string} [detail] */
function onStreamState(streamState, detail) {
  if (streamState === "open") {
    // Whoever serves the page now says at once (`server`) whether it stops with a session.
    state.server = null;
    state.closed = null;
    setConn("open", "live");
    if (state.offline) {
      // Back (`sentry serve` on the same address): reload what the page shows.
      setOffline(false);
      refreshSessions();
      refreshHosts();
      if (state.selected) {
        loadDetail();
        loadEvents({});
        loadMarks();
      }
    } else if (state.streamOpened && state.selected) {
      // After a reconnect, fetch what may have been missed before the first event id was known.
      loadEvents({ merge: true });
    }
    state.streamOpened = true;
  } else if (streamState === "connecting") {
    if (!state.offline) setConn("connecting", "connecting…");
  } else if (streamState === "retrying") {
    // The API of `sentry run` stops with its agent: no use waiting, say what to run instead.
    if (state.closed !== null) setOffline(true);
    else if (state.server !== null && !state.offline) checkGone();
    if (state.offline) return;
    setConn("retrying", "reconnecting…");
    if (detail) $("conn").title = `The live event stream: ${detail}`;
  } else if (streamState === "unauthorized") {
    logout("The token was refused: enter it again");
  }
}

// ------------------------------------------------------------------------------------------
// Sessions and agents

async function refreshSessions() {
  const host = state.host;
  // The sessions the stream named since the last look: either they are in this list, or they
  // are another host's (or too old for the list), and their events stop asking for a refresh.
  const asked = [...state.unknown];
  state.unknown.clear();
  const query = new URLSearchParams({ limit: "100" });
  if (host !== "") query.set("host", host);
  /** @type {any[]} */
  let sessions;
  try {
    sessions = (await api(`/v1/sessions?${query}`)).sessions;
  } catch (error) {
    for (const id of asked) state.unknown.add(id);
    if (!(error instanceof ApiError && error.status === 401) && !state.offline) {
      setConn("retrying", "API unreachable");
    }
    return;
  }
  if (state.offline) {
    // Something serves this address again (`sentry serve`): reconnect now, not at the stream's
    // next retry; the stream's opening ends the offline mode.
    connectStream(state.stream?.lastEventId ?? "");
    return;
  }
  // Logged out, or another host was chosen while this answer was on its way.
  if (!state.token || host !== state.host) return;
  const listed = new Set(sessions.map((s) => s.id));
  for (const id of listed) state.elsewhere.delete(id);
  for (const id of asked) if (!listed.has(id)) state.elsewhere.add(id);
  const known = new Set(state.sessions.map((s) => s.id));
  // A new session anywhere may be a new host's, and changes the hosts' counts.
  if (asked.length > 0 || sessions.some((s) => !known.has(s.id))) refreshHosts();
  const before = state.sessions.find((s) => s.id === state.selected);
  state.sessions = sessions;
  renderSessions();
  renderAgents();
  if (!state.selected || !listed.has(state.selected)) {
    const wanted = hashParams().get("session");
    const pick = sessions.find((s) => s.id === wanted) ??
      sessions.find((s) => s.state === "running" || s.state === "paused") ?? sessions[0];
    if (pick) select(pick.id);
    else renderEmpty();
    return;
  }
  const now = sessions.find((s) => s.id === state.selected);
  renderHead(now);
  if (
    before && (before.state !== now.state || before.responses !== now.responses ||
      before.endedAt !== now.endedAt)
  ) {
    loadDetail();
  }
}

function renderEmpty() {
  if (state.selected !== "") {
    state.selected = "";
    state.generation++;
    closeDetail();
    writeHash();
  }
  fill(
    $("no-session"),
    state.host === ""
      ? ["No session yet. Start one with ", h("code", {}, "sentry run"), "."]
      : `No session of host ${hostLabel(state.host)} yet.`,
  );
  $("no-session").hidden = false;
  $("session-body").hidden = true;
}

/** The hash's parameters: `host` (the host filter) and `session` (the selected session). */
function hashParams() {
  return new URLSearchParams(location.hash.slice(1));
}

/** Puts the host filter and the selected session in the hash, so that a reload keeps them. */
function writeHash() {
  const params = new URLSearchParams();
  if (state.host !== "") params.set("host", state.host);
  if (state.selected !== "") params.set("session", state.selected);
  const text = params.toString();
  history.replaceState(
    null,
    "",
    text === "" ? `${location.pathname}${location.search}` : `#${text}`,
  );
}

// ------------------------------------------------------------------------------------------
// Hosts

let hostsLoading = false;

/**
 * Reloads the hosts from `/v1/hosts`: a collector's (hosts that upload, by id), or the local
 * API's (`collector: false`: the host names of the journal's sessions).
 */
async function refreshHosts() {
  if (hostsLoading || !state.token) return;
  hostsLoading = true;
  try {
    const body = await api("/v1/hosts");
    state.collector = body.collector !== false;
    const hosts = state.collector ? collectorHosts(body.hosts) : localHosts(body.hosts);
    if (!state.token) return;
    state.hosts = hosts;
    renderHosts();
    const selected = state.sessions.find((s) => s.id === state.selected);
    if (selected) renderHead(selected);
  } catch {
    // The sessions' poll reports an unreachable API; the next round tries again.
  } finally {
    hostsLoading = false;
  }
}

/** The name shown for a host filter's value. */
function hostLabel(/** @type {string} */ value) {
  return state.hosts.find((x) => x.value === value)?.label ?? value;
}

/**
 * The host filter: every host, then each host with its sessions and, on a collector, when it was
 * last seen, its key and the events its outbox dropped (a blind spot, shown as a warning). It is
 * hidden while there is one host and no filter.
 */
function renderHosts() {
  const hosts = state.hosts;
  const box = $("hosts-box");
  box.hidden = hosts.length <= 1 && state.host === "";
  if (box.hidden) return;
  const now = Date.now();
  const total = hosts.reduce((n, x) => n + x.sessions, 0);
  const dropped = hosts.reduce((n, x) => n + (x.dropped ?? 0), 0);
  const droppers = hosts.filter((x) => (x.dropped ?? 0) > 0).length;
  /** @type {import("./view.js").HostEntry[]} */
  const shown = [...hosts];
  // A filter on a host that is not listed (gone, or typed in the URL) stays visible, to clear it.
  if (state.host !== "" && !hosts.some((x) => x.value === state.host)) {
    shown.push({
      value: state.host,
      name: state.host,
      label: state.host,
      sessions: state.sessions.length,
      lastSeen: null,
      dropped: null,
      keys: [],
    });
  }
  $("host-count").textContent = `(${hosts.length})`;
  fill(
    $("hosts"),
    hostButton({
      value: "",
      title: "All hosts",
      count: `${count(total)} session${total === 1 ? "" : "s"}`,
      lines: [],
      warning: dropped > 0
        ? `⚠ ${count(dropped)} events dropped on ${droppers} host${droppers === 1 ? "" : "s"}`
        : "",
    }),
    shown.map((x) =>
      hostButton({
        value: x.value,
        title: x.label,
        count: `${count(x.sessions)} session${x.sessions === 1 ? "" : "s"}`,
        lines: [
          x.lastSeen === null ? "" : `seen ${ago(x.lastSeen, now)}`,
          x.keys.length === 0 ? "" : `key ${x.keys.join(", ")}`,
        ].filter((t) => t !== ""),
        lastSeen: x.lastSeen,
        warning: (x.dropped ?? 0) > 0 ? `⚠ ${count(x.dropped ?? 0)} events dropped` : "",
      })
    ),
  );
  if (state.revealHost) {
    state.revealHost = false;
    $("hosts").querySelector(".host.selected")?.scrollIntoView({
      block: "nearest",
      inline: "nearest",
    });
  }
}

/**
 * One button of the host filter.
 * @param {{ value: string, title: string, count: string, lines: string[], warning: string,
 *   lastSeen?: string | null }} o
 */
function hostButton(o) {
  const on = o.value === state.host;
  return h(
    "li",
    {},
    h(
      "button",
      {
        type: "button",
        class: `host${on ? " selected" : ""}${o.warning ? " dropping" : ""}`,
        "data-host": o.value,
        "aria-current": on ? "true" : null,
        title: o.lastSeen ? `Last batch: ${dateTime(o.lastSeen)}` : null,
        onclick: () => selectHost(o.value),
      },
      h(
        "span",
        { class: "host-top" },
        h("b", {}, o.title),
        h("span", { class: "small muted" }, o.count),
      ),
      o.lines.length > 0 && h("span", { class: "small muted host-meta" }, o.lines.join(" · ")),
      o.warning && h(
        "span",
        {
          class: "small warn",
          title:
            "Events the host's outbox dropped at its cap: the collector never received them. " +
            "Raise sync.outbox_max_events on that host, or check why it cannot upload.",
        },
        o.warning,
      ),
    ),
  );
}

/** Shows one host's sessions (or every host's, for ""), and keeps the choice in the hash. */
function selectHost(/** @type {string} */ value) {
  if (value === state.host) return;
  state.host = value;
  state.elsewhere = new Set();
  state.unknown = new Set();
  // The list is another host's until the new one arrives.
  state.sessions = [];
  writeHash();
  renderHosts();
  fill($("sessions"), h("li", { class: "empty" }, "Loading…"));
  fill($("agents"));
  refreshSessions();
}

function renderSessions() {
  $("session-count").textContent = `(${state.sessions.length})`;
  fill(
    $("sessions"),
    state.sessions.map((s) =>
      h(
        "li",
        {},
        h(
          "button",
          {
            type: "button",
            class: `sess${s.id === state.selected ? " selected" : ""}`,
            "data-session": s.id,
            "aria-current": s.id === state.selected ? "true" : null,
            onclick: () => select(s.id),
          },
          h("span", { class: "sess-top" }, h("b", {}, s.agent), stateBadge(s.state)),
          h("code", { class: "sess-id" }, s.id),
          h(
            "span",
            { class: "sess-counts" },
            `${count(s.events)} events · `,
            h("span", { class: s.denied > 0 ? "denied" : "" }, `${count(s.denied)} denied`),
            " · max ",
            riskPill(s.maxRisk),
          ),
          h("span", { class: "muted small" }, dateTime(s.startedAt)),
        ),
      )
    ),
  );
}

function renderAgents() {
  /** @type {Map<string, any>} */
  const agents = new Map();
  for (const s of state.sessions) {
    const a = agents.get(s.agent) ??
      { name: s.agent, sessions: 0, running: 0, paused: 0, events: 0, denied: 0, newest: s };
    a.sessions++;
    if (s.state === "running") a.running++;
    if (s.state === "paused") a.paused++;
    a.events += s.events;
    a.denied += s.denied;
    agents.set(s.agent, a);
  }
  fill(
    $("agents"),
    [...agents.values()].map((a) =>
      h(
        "li",
        {},
        h(
          "button",
          { type: "button", class: "agent", onclick: () => select(a.newest.id) },
          h("b", {}, a.name),
          h(
            "span",
            { class: "small" },
            a.running > 0 && h("span", { class: "state state-running" }, `${a.running} running`),
            a.paused > 0 && h("span", { class: "state state-paused" }, `${a.paused} paused`),
            ` ${a.sessions} session${a.sessions === 1 ? "" : "s"} · ${count(a.events)} events`,
            a.denied > 0 && h("span", { class: "denied" }, ` · ${count(a.denied)} denied`),
          ),
        ),
      )
    ),
  );
}

/** @param {string} id */
function select(id) {
  if (state.selected !== id) {
    state.selected = id;
    state.events = [];
    state.ids = new Set();
    state.cursor = null;
    state.marks = new Map();
    state.detail = null;
    closeDetail();
    writeHash();
  }
  for (const el of document.querySelectorAll("#sessions .sess")) {
    const on = /** @type {HTMLElement} */ (el).dataset.session === id;
    el.classList.toggle("selected", on);
    if (on) el.setAttribute("aria-current", "true");
    else el.removeAttribute("aria-current");
  }
  $("no-session").hidden = true;
  $("session-body").hidden = false;
  const summary = state.sessions.find((s) => s.id === id);
  if (summary) renderHead(summary);
  fill($("feed"), h("li", { class: "empty" }, "Loading…"));
  loadDetail();
  loadEvents({});
  loadMarks();
}

/** @param {any} s */
function renderHead(s) {
  $("s-agent").textContent = s.agent;
  const badge = $("s-state");
  badge.className = `state state-${s.state}`;
  badge.textContent = s.state;
  $("s-id").textContent = s.id;
  $("s-command").textContent = s.command.length > 0 ? s.command.map(quote).join(" ") : "(attached)";
  const end = s.endedAt ? Date.parse(s.endedAt) : Date.now();
  const meta = [
    ["pid", s.pid ?? "–"],
    ["policy", `${s.policy} (${s.mode})`],
    ["started", dateTime(s.startedAt)],
    [s.endedAt ? "ran for" : "running for", duration(end - Date.parse(s.startedAt))],
    ["workspace", s.workspace],
    ["host", s.host],
  ];
  if (s.exitCode !== null) meta.push(["exit code", s.exitCode]);
  if (s.note) meta.push(["note", s.note]);
  fill($("s-meta"), meta.map(([k, v]) => h("div", {}, h("dt", {}, k), h("dd", {}, v))));
  fill(
    $("s-counts"),
    counter("events", count(s.events)),
    counter("denied", count(s.denied), s.denied > 0 ? "denied" : ""),
    counter("max risk", riskPill(s.maxRisk)),
    counter("responses", count(s.responses)),
  );
  const live = s.state === "running" || s.state === "paused";
  // A collector holds other hosts' sessions: it cannot signal their processes (its API says 409).
  // Offline, nothing answers the buttons: the agent is gone with the API that served the page.
  const off = state.busy || state.collector === true || state.offline;
  /** @type {HTMLButtonElement} */ ($("btn-pause")).disabled = off || s.state !== "running";
  /** @type {HTMLButtonElement} */ ($("btn-resume")).disabled = off || s.state !== "paused";
  /** @type {HTMLButtonElement} */ ($("btn-kill")).disabled = off || !live;
  /** @type {HTMLButtonElement} */ ($("btn-rollback")).disabled = off;
  const controls = /** @type {HTMLElement} */ ($("btn-pause").parentElement);
  if (state.collector === true) {
    controls.title =
      `This collector cannot control sessions of other hosts: run sentry on ${s.host}`;
  } else controls.removeAttribute("title");
}

/** @param {string} label @param {any} value @param {string} [cls] */
function counter(label, value, cls = "") {
  return h("div", { class: `counter ${cls}` }, h("b", {}, value), h("span", {}, label));
}

/** @param {string} s */
function stateBadge(s) {
  return h("span", { class: `state state-${s}` }, s);
}

/** @param {number} risk */
function riskPill(risk) {
  return h("span", { class: `risk risk-${riskBand(risk)}`, title: `risk ${risk}` }, risk);
}

/** @param {string} arg */
function quote(arg) {
  return /^[\w@%+=:,./-]+$/.test(arg) ? arg : `'${arg.replaceAll("'", `'\\''`)}'`;
}

async function loadDetail() {
  const id = state.selected;
  try {
    const detail = await api(`/v1/sessions/${encodeURIComponent(id)}`);
    if (id !== state.selected) return;
    state.detail = detail;
    renderHead(detail.session);
    renderTimeline();
    renderSensors();
  } catch (error) {
    toast(`Cannot load the session: ${errorText(error)}`, "error");
  }
}

// ------------------------------------------------------------------------------------------
// The feed

function setupFilters() {
  const kind = $("f-kind");
  fill(
    kind,
    h("option", { value: "" }, "any"),
    h(
      "optgroup",
      { label: "Groups" },
      KIND_GROUPS.map((g) => h("option", { value: g.kinds.join(",") }, g.label)),
    ),
    h("optgroup", { label: "Kinds" }, KINDS.map((k) => h("option", { value: k }, k))),
  );
  for (const id of ["f-kind", "f-verdict", "f-risk", "f-agent", "f-violations"]) {
    $(id).addEventListener("change", () => loadEvents({}));
  }
  // A violation is a denied action of the agent's processes: "violations only" sets both.
  $("f-violations").addEventListener("change", () => {
    const on = /** @type {HTMLInputElement} */ ($("f-violations")).checked;
    /** @type {HTMLSelectElement} */ ($("f-verdict")).disabled = on;
    /** @type {HTMLInputElement} */ ($("f-agent")).disabled = on;
  });
  let timer = 0;
  $("f-search").addEventListener("input", () => {
    clearTimeout(timer);
    // The search runs on the server, over the whole session; shown rows follow at once.
    renderFeed();
    timer = setTimeout(() => loadEvents({}), 300);
  });
  $("filters").addEventListener("submit", (e) => e.preventDefault());
}

function filters() {
  const kinds = /** @type {HTMLSelectElement} */ ($("f-kind")).value;
  const violations = /** @type {HTMLInputElement} */ ($("f-violations")).checked;
  const verdict = violations ? "deny" : /** @type {HTMLSelectElement} */ ($("f-verdict")).value;
  const agentOnly = violations || /** @type {HTMLInputElement} */ ($("f-agent")).checked;
  const raw = Number(/** @type {HTMLInputElement} */ ($("f-risk")).value);
  const minRisk = Number.isFinite(raw) ? Math.min(100, Math.max(0, Math.round(raw))) : 0;
  return { kinds: kinds ? kinds.split(",") : [], verdict, minRisk, agentOnly };
}

/** @param {any} e */
function passesFilters(e) {
  const f = filters();
  return (f.kinds.length === 0 || f.kinds.includes(e.kind)) &&
    (f.verdict === "" || e.verdict === f.verdict) && e.risk >= f.minRisk &&
    (!f.agentOnly || e.pid !== null);
}

/**
 * Loads the newest page of the selected session's events with the filters (replacing what is
 * shown), or the next older page, or the newest page merged into what is shown.
 * @param {{ older?: boolean, merge?: boolean }} how
 */
async function loadEvents(how) {
  const id = state.selected;
  if (!id) return;
  if (state.offline) {
    // Nothing to ask: the filters and the search apply to the events already loaded.
    renderFeed();
    return;
  }
  if (!how.older && !how.merge) state.generation++;
  const generation = state.generation;
  const f = filters();
  const q = searchText().trim();
  const query = new URLSearchParams({ order: "desc", limit: String(PAGE) });
  if (f.kinds.length > 0) query.set("kind", f.kinds.join(","));
  if (f.verdict) query.set("verdict", f.verdict);
  if (f.minRisk > 0) query.set("min_risk", String(f.minRisk));
  if (f.agentOnly) query.set("attributed", "true");
  if (q !== "") query.set("q", q);
  let cursor = how.older ? state.cursor : null;
  let found = 0;
  if (!how.older && !how.merge) {
    state.searched = q === "" ? "" : "…";
    $("feed-note").textContent = q === "" ? "" : "Searching the session…";
  }
  // A search walks the session in bounded steps: follow them until a page is found.
  for (let step = 0; step < (q === "" ? 1 : SEARCH_STEPS); step++) {
    if (cursor) query.set("cursor", cursor);
    let page;
    try {
      page = await api(`/v1/sessions/${encodeURIComponent(id)}/events?${query}`);
    } catch (error) {
      if (!state.offline) toast(`Cannot load events: ${errorText(error)}`, "error");
      return;
    }
    if (generation !== state.generation || id !== state.selected) return;
    if (step === 0 && !how.older && !how.merge) {
      state.events = [];
      state.ids = new Set();
    }
    for (const e of page.events) addEvent(e);
    found += page.events.length;
    if (how.merge) break;
    cursor = state.cursor = page.next_cursor;
    if (q !== "") {
      state.searched = cursor === null ? "all" : new Date(ulidTime(cursor)).toISOString();
      renderFeed();
    }
    if (cursor === null || found >= PAGE) break;
  }
  renderFeed();
  renderStrip();
}

/**
 * Whether `a` comes before `b` in the feed: newer first, by time, then by id. (Ids are minted
 * when Sentry handles an event, a little after a sensor saw it, so they can disagree with `ts`.)
 */
function isNewer(/** @type {any} */ a, /** @type {any} */ b) {
  return a.ts === b.ts ? a.id > b.id : a.ts > b.ts;
}

/** Inserts an event in newest-first order; returns its index, or -1 when known already. */
function addEvent(/** @type {any} */ e) {
  if (state.ids.has(e.id)) return -1;
  state.ids.add(e.id);
  let at = 0;
  while (at < state.events.length && isNewer(state.events[at], e)) at++;
  state.events.splice(at, 0, e);
  if (state.events.length > MAX_EVENTS) {
    const dropped = state.events.pop();
    state.ids.delete(dropped.id);
    // Older pages continue below the oldest id still held.
    state.cursor = state.events.reduce((min, x) => x.id < min ? x.id : min, state.events[0].id);
  }
  return at;
}

function searchText() {
  return /** @type {HTMLInputElement} */ ($("f-search")).value;
}

function renderFeed() {
  const q = searchText();
  // Loaded events already match the search (the server's); live ones are checked here, and
  // offline the filters too.
  const shown = state.events.filter((e) =>
    matchesSearch(e, q) && (!state.offline || passesFilters(e))
  ).slice(0, MAX_ROWS);
  if (shown.length === 0) {
    fill(
      $("feed"),
      h(
        "li",
        { class: "empty" },
        state.events.length === 0 ? "No events match the filters yet." : "No event matches.",
      ),
    );
  } else {
    fill($("feed"), shown.map(feedRow));
  }
  updateFeedCount(shown.length);
  $("older").hidden = state.cursor === null || state.offline;
  $("older").textContent = q.trim() !== "" ? "Search older events" : "Load older events";
  $("feed-note").textContent = state.offline
    ? (q.trim() !== "" || filtersOn()
      ? `Offline: filtering the ${count(state.events.length)} events loaded.`
      : "")
    : q.trim() === "" || state.searched === "" || state.searched === "…"
    ? (q.trim() === "" ? "" : "Searching the session…")
    : state.searched === "all"
    ? "Searched the whole session."
    : `Searched back to ${dateTime(state.searched)}.`;
}

/** Whether a filter of the feed narrows it. */
function filtersOn() {
  const f = filters();
  return f.kinds.length > 0 || f.verdict !== "" || f.minRisk > 0 || f.agentOnly;
}

/** @param {number} shown */
function updateFeedCount(shown) {
  $("feed-count").textContent = shown === state.events.length
    ? `(${count(shown)})`
    : `(${count(shown)} shown of ${count(state.events.length)} loaded)`;
}

/** @param {any} e */
function feedRow(e) {
  return h(
    "li",
    {
      class: `ev risk-${riskBand(e.risk)}${e.verdict === "deny" ? " deny" : ""}${
        e.id === state.openEvent ? " open" : ""
      }`,
      "data-id": e.id,
      "data-kind": e.kind,
    },
    h(
      "button",
      { type: "button", onclick: () => openDetail(e) },
      riskPill(e.risk),
      h("time", { datetime: e.ts }, clock(e.ts)),
      h("span", { class: "kind" }, e.kind),
      h("span", { class: "target", title: e.target }, e.target),
      h(
        "span",
        { class: "tags" },
        e.verdict === "deny" && h("span", { class: "tag tag-deny" }, "deny"),
        e.response !== "none" && h("span", { class: "tag" }, e.response),
        // Shadow mode: what the policy asks for, not taken (mode monitor).
        e.would !== undefined &&
          h(
            "span",
            { class: "tag tag-would", title: "not taken: mode monitor" },
            `would: ${e.would}`,
          ),
      ),
    ),
  );
}

/** A live event from the stream. */
function onMessage(/** @type {{ event: string, data: string }} */ message) {
  if (message.event === "error") {
    toast(`The event stream failed: ${message.data}`, "error");
    return;
  }
  if (message.event === "server" || message.event === "closing") {
    onServer(message.event, message.data);
    return;
  }
  if (message.event !== "event") return;
  /** @type {any} */
  let e;
  try {
    e = JSON.parse(message.data);
  } catch {
    return;
  }
  const summary = state.sessions.find((s) => s.id === e.session);
  if (!summary) {
    // A new session, or one of another host (or older than the list): look it up once.
    if (!state.elsewhere.has(e.session)) {
      state.unknown.add(e.session);
      scheduleSessionsRefresh();
    }
  } else {
    summary.events++;
    if (e.verdict === "deny") summary.denied++;
    summary.maxRisk = Math.max(summary.maxRisk, e.risk);
    scheduleSessionsRender();
  }
  if (e.session !== state.selected) return;
  if (e.verdict === "deny" || e.kind.startsWith("proc.")) {
    state.marks.set(e.id, e);
    scheduleRender("timeline");
  }
  // The events held are the search's matches (the server's): a live one joins them if it matches.
  if (passesFilters(e) && matchesSearch(e, searchText())) {
    const at = addEvent(e);
    if (at === 0) {
      const feed = $("feed");
      feed.querySelector(".empty")?.remove();
      feed.prepend(feedRow(e));
      while (feed.children.length > MAX_ROWS) feed.lastElementChild?.remove();
      updateFeedCount(feed.querySelectorAll(".ev").length);
    } else if (at > 0) {
      scheduleRender("feed");
    }
    scheduleRender("strip");
  }
}

/** @type {Set<string>} */
const pending = new Set();
/** @param {"feed" | "strip" | "timeline" | "sessions"} what */
function scheduleRender(what) {
  if (pending.size === 0) {
    setTimeout(() => {
      const todo = [...pending];
      pending.clear();
      if (todo.includes("feed")) renderFeed();
      if (todo.includes("strip")) renderStrip();
      if (todo.includes("timeline")) renderTimeline();
      if (todo.includes("sessions")) {
        renderSessions();
        renderAgents();
        const s = state.sessions.find((x) => x.id === state.selected);
        if (s) renderHead(s);
      }
    }, 200);
  }
  pending.add(what);
}

function scheduleSessionsRender() {
  scheduleRender("sessions");
}

let refreshSoon = 0;
function scheduleSessionsRefresh() {
  if (refreshSoon) return;
  refreshSoon = setTimeout(() => {
    refreshSoon = 0;
    refreshSessions();
  }, 300);
}

// ------------------------------------------------------------------------------------------
// When the API stops with its agent

/**
 * The stream's `server` message (this API stops with a session) or its `closing` message (it
 * stops now; `ended` is the session as the journal has it).
 * @param {string} kind @param {string} data
 */
function onServer(kind, data) {
  /** @type {any} */
  let info;
  try {
    info = JSON.parse(data);
  } catch {
    return;
  }
  if (kind === "server") {
    state.server = { session: String(info.session), serve: String(info.serve) };
    state.closed = null;
    return;
  }
  state.closed = info;
  const ended = info.ended;
  if (ended) {
    const at = state.sessions.findIndex((s) => s.id === ended.id);
    if (at >= 0) state.sessions[at] = ended;
    if (state.detail?.session?.id === ended.id) state.detail.session = ended;
    renderSessions();
    renderAgents();
    if (state.selected === ended.id) {
      renderHead(ended);
      renderTimeline();
    }
  }
  setOffline(true);
}

/** Enters or leaves the offline mode: the banner, the connection badge and the controls. */
function setOffline(/** @type {boolean} */ on) {
  state.offline = on;
  const banner = $("offline");
  banner.hidden = !on;
  if (on) {
    const info = state.closed ?? state.server;
    const session = state.closed?.ended ??
      state.sessions.find((s) => s.id === info?.session);
    const how = session?.kind === "attach" ? "sentry attach" : "sentry run";
    const ended = state.closed?.ended;
    const what = ended?.state === "killed" ? "was killed" : "exited";
    const code = ended?.exitCode === null || ended?.exitCode === undefined
      ? ""
      : ` (exit code ${ended.exitCode})`;
    const by = state.closed?.by;
    fill(
      $("offline-text"),
      typeof by === "string"
        ? `${by} stopped serving this page. `
        : ended
        ? `The agent ${session?.agent ?? ""} ${what}${code}, and ${how} stopped serving this page. `
        : `${how} stopped serving this page: its process is gone. `,
      "The journal keeps everything it recorded. To browse it here again, run this on the host; " +
        "the page reconnects by itself:",
    );
    $("offline-cmd").textContent = info?.serve ?? "sentry serve";
    setConn("ended", "offline");
    $("conn").title = "The API that served this page stopped";
  }
  const s = state.sessions.find((x) => x.id === state.selected);
  if (s) renderHead(s);
  renderFeed();
}

/** Enters the offline mode when the API that stops with its session no longer answers. */
async function checkGone() {
  try {
    const res = await fetch("/health", { cache: "no-store" });
    await res.body?.cancel();
    return;
  } catch {
    // Nothing listens: the process is gone.
  }
  if (state.server !== null && !state.offline && state.token) setOffline(true);
}

async function copyServeCommand() {
  const text = $("offline-cmd").textContent ?? "";
  try {
    await navigator.clipboard.writeText(text);
    toast("Copied");
  } catch {
    getSelection()?.selectAllChildren($("offline-cmd"));
  }
}

// ------------------------------------------------------------------------------------------
// The timeline

async function loadMarks() {
  const id = state.selected;
  const base = `/v1/sessions/${encodeURIComponent(id)}/events?order=desc&limit=200`;
  try {
    const [denied, procs] = await Promise.all([
      api(`${base}&verdict=deny`),
      api(`${base}&kind=proc.exec,proc.exit`),
    ]);
    if (id !== state.selected) return;
    for (const e of [...denied.events, ...procs.events]) state.marks.set(e.id, e);
    renderTimeline();
    renderStrip();
  } catch (error) {
    toast(`Cannot load the timeline: ${errorText(error)}`, "error");
  }
}

/** The session's span in ms since the epoch: its start to its end, or to now while live. */
function span() {
  const s = state.detail?.session ?? state.sessions.find((x) => x.id === state.selected);
  if (!s) return null;
  const from = Date.parse(s.startedAt);
  const to = s.endedAt ? Date.parse(s.endedAt) : Date.now();
  return { from, to: Math.max(to, from + 1000), session: s };
}

function renderTimeline() {
  const s = state.detail?.session;
  if (!s) return;
  /** @type {{ ts: string, dot: string, text: (Node | string)[], event?: any }[]} */
  const items = [{ ts: s.startedAt, dot: "start", text: [`session started (${s.kind})`] }];
  for (const e of state.marks.values()) {
    const who = e.pid === null ? "unattributed" : `pid ${e.pid}`;
    const text = e.verdict === "deny"
      ? [
        h("b", {}, e.kind),
        ` ${e.target} (${who}): `,
        h("span", { class: "denied" }, "deny"),
        `, ${e.rule} → ${e.response}${e.would === undefined ? "" : ` (would: ${e.would})`}`,
      ]
      : e.kind === "proc.exit"
      ? [
        h("b", {}, e.kind),
        ` ${e.target} (${who})${
          typeof e.detail?.code === "number" ? `, code ${e.detail.code}` : ""
        }`,
      ]
      : [h("b", {}, e.kind), ` ${e.target} (${who})`];
    items.push({ ts: e.ts, dot: `risk-${riskBand(e.risk)}`, text, event: e });
  }
  for (const r of state.detail.responses) {
    const by = typeof r.detail?.by === "string" ? ` by ${r.detail.by}` : "";
    items.push({
      ts: r.ts,
      dot: `resp-${r.action}`,
      text: [h("b", {}, r.action), `: ${r.outcome}${by}${describeResponse(r)}`],
    });
  }
  if (s.endedAt) {
    items.push({
      ts: s.endedAt,
      dot: "end",
      text: [`session ${s.state}${s.exitCode === null ? "" : `, exit code ${s.exitCode}`}`],
    });
  }
  items.sort((a, b) => a.ts.localeCompare(b.ts));
  const hidden = Math.max(0, items.length - MAX_TIMELINE);
  const list = items.slice(hidden);
  const box = $("timeline");
  // Keep the newest item in view, unless the user scrolled up to read older ones.
  const atEnd = box.scrollTop + box.clientHeight >= box.scrollHeight - 8;
  fill(
    box,
    hidden > 0 && h("li", { class: "more muted" }, `${count(hidden)} earlier items not shown`),
    list.map((item) =>
      h(
        "li",
        { class: item.event ? "clickable" : "" },
        h("span", { class: `dot ${item.dot}` }),
        h("time", { datetime: item.ts }, clock(item.ts)),
        item.event
          ? h("button", {
            type: "button",
            class: "link",
            onclick: () => openDetail(item.event),
          }, item.text)
          : h("span", {}, item.text),
      )
    ),
  );
  if (atEnd) box.scrollTop = box.scrollHeight;
  renderStrip();
}

/** @param {any} r */
function describeResponse(r) {
  const d = r.detail ?? {};
  const parts = [];
  // Pids in lists (pause, resume, kill), counts in numbers (a rollback's summary).
  for (
    const key of [
      "paused",
      "stopped",
      "resumed",
      "killed",
      "forced",
      "restored",
      "recreated",
      "removed",
      "failed",
    ]
  ) {
    const n = Array.isArray(d[key]) ? d[key].length : typeof d[key] === "number" ? d[key] : 0;
    if (n > 0) parts.push(`${n} ${key}`);
  }
  // One path of a rollback.
  if (typeof d.path === "string") parts.push(`${d.op ?? ""} ${d.path}`.trim());
  if (typeof d.reason === "string") parts.push(d.reason);
  return parts.length > 0 ? ` (${parts.join(", ")})` : "";
}

/** Bars of event counts over the session's time, coloured by the highest risk in each. */
function renderStrip() {
  const s = span();
  const strip = $("strip");
  if (!s) return;
  const width = (s.to - s.from) / BINS;
  const bins = Array.from({ length: BINS }, () => ({ n: 0, risk: -1 }));
  const seen = new Set();
  for (const e of [...state.events, ...state.marks.values()]) {
    if (seen.has(e.id)) continue;
    seen.add(e.id);
    const i = Math.min(BINS - 1, Math.max(0, Math.floor((Date.parse(e.ts) - s.from) / width)));
    const bin = /** @type {{ n: number, risk: number }} */ (bins[i]);
    bin.n++;
    bin.risk = Math.max(bin.risk, e.risk);
  }
  const max = Math.max(1, ...bins.map((b) => b.n));
  fill(
    strip,
    bins.map((b, i) => {
      const bar = h("span", {
        class: b.n === 0 ? "bar idle" : `bar risk-${riskBand(b.risk)}`,
        title: `${clock(new Date(s.from + i * width).toISOString())}: ${b.n} event${
          b.n === 1 ? "" : "s"
        }${b.n > 0 ? `, max risk ${b.risk}` : ""}`,
      });
      bar.style.height = b.n === 0 ? "2px" : `${12 + 88 * Math.log1p(b.n) / Math.log1p(max)}%`;
      return bar;
    }),
    (state.detail?.responses ?? []).map((/** @type {any} */ r) => {
      const at = (Date.parse(r.ts) - s.from) / (s.to - s.from);
      const mark = h("span", {
        class: `mark resp-${r.action}`,
        title: `${r.action} at ${clock(r.ts)}`,
      });
      mark.style.left = `${Math.min(100, Math.max(0, at * 100))}%`;
      return mark;
    }),
  );
  fill(
    $("strip-axis"),
    h("span", {}, clock(new Date(s.from).toISOString())),
    h("span", { class: "muted" }, `${count(seen.size)} events loaded`),
    h("span", {}, s.session.endedAt ? clock(s.session.endedAt) : "now"),
  );
}

function renderSensors() {
  const sensors = state.detail?.sensors ?? [];
  fill(
    $("sensors"),
    h(
      "thead",
      {},
      h(
        "tr",
        {},
        ["sensor", "emitted", "dropped", "dedup", "lag", "blind spots"].map((t) => h("th", {}, t)),
      ),
    ),
    h(
      "tbody",
      {},
      sensors.length === 0
        ? h("tr", {}, h("td", { colspan: 6, class: "muted" }, "No counters saved yet."))
        : sensors.map((/** @type {any} */ s) =>
          h(
            "tr",
            {},
            h("td", {}, s.sensor),
            h("td", {}, count(s.emitted)),
            h("td", { class: s.dropped > 0 ? "denied" : "" }, count(s.dropped)),
            h("td", {}, count(s.deduplicated)),
            h("td", {}, `${Math.round(s.lagMs)} ms`),
            h(
              "td",
              {},
              s.blindSpots.length === 0
                ? "–"
                : s.blindSpots.map((/** @type {any} */ b) =>
                  h("div", { title: b.reason }, `${b.id}: ${count(b.count)}`)
                ),
            ),
          )
        ),
    ),
  );
}

// ------------------------------------------------------------------------------------------
// Event detail

/** @param {any} e */
function openDetail(e) {
  state.openEvent = e.id;
  for (const row of document.querySelectorAll("#feed .ev")) {
    row.classList.toggle("open", /** @type {HTMLElement} */ (row).dataset.id === e.id);
  }
  $("d-title").textContent = e.kind;
  const total = e.factors.reduce(
    (/** @type {number} */ n, /** @type {any} */ f) => n + f.points,
    0,
  );
  fill(
    $("d-body"),
    h("p", { class: "d-target" }, e.target),
    h(
      "div",
      { class: "d-verdict" },
      h("span", { class: `verdict verdict-${e.verdict}` }, e.verdict),
      riskPill(e.risk),
      h("span", { class: "muted" }, riskBand(e.risk)),
    ),
    h(
      "dl",
      { class: "kv" },
      kv("rule", h("code", {}, e.rule)),
      kv(
        "response",
        e.would === undefined
          ? e.response
          : `${e.response} (would: ${e.would}, not taken: mode monitor)`,
      ),
      kv("time", `${dateTime(e.ts)} (${clock(e.ts)})`),
      kv("sensor", e.sensor),
      kv("pid", e.pid === null ? "unattributed" : `${e.pid} (parent ${e.ppid ?? "?"})`),
      kv("exe", e.exe ?? "–"),
      kv("command", e.cmdline.length > 0 ? h("code", {}, e.cmdline.map(quote).join(" ")) : "–"),
      kv("id", h("code", {}, e.id)),
    ),
    h("h4", {}, "Risk factors"),
    e.factors.length === 0 ? h("p", { class: "muted" }, "None: risk 0.") : h(
      "table",
      { class: "factors" },
      h(
        "tbody",
        {},
        e.factors.map((/** @type {any} */ f) =>
          h(
            "tr",
            {},
            h("td", { class: "pts" }, f.points > 0 ? `+${f.points}` : f.points),
            h("td", {}, h("code", {}, f.id), h("div", { class: "muted" }, f.reason)),
          )
        ),
        h("tr", { class: "total" }, h("td", { class: "pts" }, total), h("td", {}, "risk")),
      ),
    ),
    Object.keys(e.detail ?? {}).length > 0 &&
      [h("h4", {}, "Detail"), h("pre", { class: "json" }, JSON.stringify(e.detail, null, 2))],
    h("h4", {}, "Why"),
    h("div", { id: "d-explain" }, h("p", { class: "muted" }, "Explaining…")),
  );
  $("detail").hidden = false;
  document.body.classList.add("detail-open");
  loadExplanation(e.id);
}

/**
 * Fills the event detail's "Why" with `GET /v1/events/:id/explain`: every entry that matched in
 * precedence order, with its file and line, why the winner won, and the exceptions that applied.
 * @param {string} id
 */
async function loadExplanation(id) {
  /** @type {any} */
  let data;
  try {
    data = await api(`/v1/events/${encodeURIComponent(id)}/explain`);
  } catch (err) {
    if (state.openEvent !== id) return;
    fill(
      $("d-explain"),
      h("p", { class: "muted" }, String(/** @type {any} */ (err)?.message ?? err)),
    );
    return;
  }
  if (state.openEvent !== id) return;
  const x = data.explanation;
  /** @param {any} s */
  const where = (s) => (s === null ? "implicit" : `${s.file}:${s.line}`);
  fill(
    $("d-explain"),
    h("p", {}, `${x.why}.`),
    h("p", { class: "muted" }, `${x.responseWhy}.`),
    h(
      "table",
      { class: "factors" },
      h(
        "tbody",
        {},
        x.matches.map((/** @type {any} */ m) =>
          h(
            "tr",
            {},
            h("td", { class: "pts" }, m.winner ? "→" : ""),
            h(
              "td",
              {},
              h("code", {}, m.section === "rules" ? `rule ${m.entry}` : `${m.section} ${m.entry}`),
              h(
                "div",
                { class: "muted" },
                `${m.effect}${
                  (m.exceptions ?? []).length > 0 ? ", exempted by an exception" : ""
                } · ${where(m.source)}`,
              ),
            ),
          )
        ),
      ),
    ),
    x.exceptions.map((/** @type {any} */ ex) =>
      h(
        "p",
        { class: "muted" },
        `Exception #${ex.index + 1} of ${ex.rule} applied: ${JSON.stringify(ex.match)} (${
          where(ex.source)
        })`,
      )
    ),
    data.warnings.map((/** @type {string} */ w) => h("p", { class: "muted" }, `Note: ${w}`)),
  );
}

/** @param {string} key @param {any} value */
function kv(key, value) {
  return h("div", {}, h("dt", {}, key), h("dd", {}, value));
}

function closeDetail() {
  state.openEvent = null;
  $("detail").hidden = true;
  document.body.classList.remove("detail-open");
  for (const row of document.querySelectorAll("#feed .ev.open")) row.classList.remove("open");
}

// ------------------------------------------------------------------------------------------
// Controls

const CONTROL_TEXT = {
  pause: {
    title: "Pause",
    body: "Sentry stops every process of the session with SIGSTOP and checks in /proc that " +
      "each thread is stopped. Nothing runs until you resume it.",
    ok: "Pause the agent",
    done: "paused",
  },
  resume: {
    title: "Resume",
    body: "Sentry sends SIGCONT to every process of the session, and checks that they run.",
    ok: "Resume the agent",
    done: "resumed",
  },
  kill: {
    title: "Kill",
    body: "Sentry sends SIGTERM to every process of the session, then SIGKILL to those still " +
      "alive after the grace period. This cannot be undone.",
    ok: "Kill the agent",
    done: "killed",
  },
};

/** @param {"pause" | "resume" | "kill"} action */
async function control(action) {
  const s = state.sessions.find((x) => x.id === state.selected);
  if (!s) return;
  const text = CONTROL_TEXT[action];
  const ok = await ask({
    title: `${text.title} ${s.agent}?`,
    body: [
      h("p", {}, text.body),
      h("p", { class: "muted" }, `Session ${s.id}, pid ${s.pid ?? "–"}`),
    ],
    ok: text.ok,
    danger: action === "kill",
  });
  if (!ok) return;
  await busy(async () => {
    const r = await api(`/v1/sessions/${encodeURIComponent(s.id)}/${action}`, { method: "POST" });
    const n = r.done.length;
    let message = `${text.done[0]?.toUpperCase()}${text.done.slice(1)} ${n} process${
      n === 1 ? "" : "es"
    }`;
    if (r.forced?.length) message += ` (${r.forced.length} with SIGKILL)`;
    if (r.failed.length > 0) {
      message += `; failed on ${
        r.failed.map((/** @type {any} */ f) => `${f.pid} (${f.reason})`).join(", ")
      }`;
    }
    toast(message, r.ok ? "ok" : "error");
  });
}

async function rollback() {
  const s = state.sessions.find((x) => x.id === state.selected);
  if (!s) return;
  /** @type {any} */
  let plan;
  await busy(async () => {
    plan = await api(`/v1/sessions/${encodeURIComponent(s.id)}/rollback`, {
      method: "POST",
      body: { dry_run: true },
    });
  });
  if (!plan) return;
  if (plan.actions.length === 0) {
    await ask({
      title: "Nothing to roll back",
      body: [h("p", {}, "The protected files match the snapshot taken at the session's start.")],
      ok: "Close",
      cancel: false,
    });
    return;
  }
  const live = s.state === "running" || s.state === "paused";
  const confirmed = await ask({
    title: `Roll back ${plan.actions.length} change${plan.actions.length === 1 ? "" : "s"}?`,
    body: [
      h(
        "p",
        {},
        `These paths go back to snapshot ${plan.snapshot}, taken when the session started.`,
        live ? " The agent is paused first, and stays paused." : "",
        " Overwritten and removed files go to a quarantine: ",
        h("code", {}, `sentry rollback --undo ${s.id}`),
        " puts them back.",
      ),
      h(
        "ul",
        { class: "plan" },
        plan.actions.map((/** @type {any} */ a) =>
          h(
            "li",
            {},
            h("span", { class: `tag tag-${a.kind}` }, a.kind),
            h("code", {}, a.path),
            a.differences.length > 0 &&
              h("span", { class: "muted small" }, ` ${a.differences.join(", ")}`),
          )
        ),
      ),
    ],
    ok: "Roll back",
    danger: true,
  });
  if (!confirmed) return;
  await busy(async () => {
    const r = await api(`/v1/sessions/${encodeURIComponent(s.id)}/rollback`, {
      method: "POST",
      body: { dry_run: false },
    });
    const c = r.counts ?? { restored: 0, recreated: 0, removed: 0, failed: 0 };
    toast(
      `${
        r.ok ? "Rolled back" : "Rollback incomplete"
      }: ${c.restored} restored, ${c.recreated} recreated, ` +
        `${c.removed} removed${c.failed > 0 ? `, ${c.failed} failed` : ""}`,
      r.ok ? "ok" : "error",
    );
  });
}

/** Runs a control with the buttons disabled, reports its error, then refreshes. */
async function busy(/** @type {() => Promise<void>} */ fn) {
  state.busy = true;
  const s = state.sessions.find((x) => x.id === state.selected);
  if (s) renderHead(s);
  try {
    await fn();
  } catch (error) {
    toast(errorText(error), "error");
  } finally {
    state.busy = false;
    await refreshSessions();
    await loadDetail();
  }
}

/**
 * Asks for confirmation in a modal dialog; resolves true when confirmed.
 * @param {{ title: string, body: (Node | false)[], ok: string, danger?: boolean, cancel?: boolean }} options
 * @returns {Promise<boolean>}
 */
function ask(options) {
  const dialog = /** @type {HTMLDialogElement} */ ($("dialog"));
  $("dialog-title").textContent = options.title;
  fill($("dialog-body"), options.body);
  const okButton = $("dialog-ok");
  const cancelButton = $("dialog-cancel");
  okButton.textContent = options.ok;
  okButton.className = options.danger ? "danger" : "primary";
  cancelButton.hidden = options.cancel === false;
  return new Promise((resolve) => {
    /** @param {boolean} value */
    const done = (value) => {
      okButton.removeEventListener("click", onOk);
      cancelButton.removeEventListener("click", onCancel);
      dialog.removeEventListener("close", onCancel);
      if (dialog.open) dialog.close();
      resolve(value);
    };
    const onOk = () => done(true);
    const onCancel = () => done(false);
    okButton.addEventListener("click", onOk);
    cancelButton.addEventListener("click", onCancel);
    dialog.addEventListener("close", onCancel);
    dialog.showModal();
    (options.cancel === false ? okButton : cancelButton).focus();
  });
}

let toastTimer = 0;
/** @param {string} message @param {"ok" | "error"} [kind] */
function toast(message, kind = "ok") {
  const el = $("toast");
  el.textContent = message;
  el.dataset.kind = kind;
  el.hidden = false;
  clearTimeout(toastTimer);
  toastTimer = setTimeout(() => (el.hidden = true), kind === "error" ? 10_000 : 6000);
}

/** @param {unknown} error */
function errorText(error) {
  return error instanceof Error ? error.message : String(error);
}

boot();
