/**
 * A large journal for the API benchmarks: a realistic mix of event kinds, verdicts and risks
 * over several sessions, one of which holds most events. Private to bench/.
 * @module
 */
import { type AgentEvent, createUlid, type Kind, type RiskFactor } from "../src/events/mod.ts";
import { type Journal, type Migration, openJournal } from "../src/journal/mod.ts";
import { rng } from "./_harness.ts";

/** Options for {@link buildEventJournal}. */
export interface EventJournalOptions {
  /** Events in all; default 1,000,000. */
  events?: number;
  /** Sessions; default 20. The first holds {@link BIG_SHARE} of the events. */
  sessions?: number;
  /** The seed of the pseudo-random mix; default 5. */
  seed?: number;
  /** The schema; defaults to the journal's own. */
  migrations?: readonly Migration[];
}

/** One session of the built journal. */
export interface BuiltSession {
  id: string;
  events: number;
  /** The first and last event times, in ms since the epoch. */
  firstMs: number;
  lastMs: number;
}

/** What {@link buildEventJournal} wrote. */
export interface EventJournal {
  path: string;
  sessions: BuiltSession[];
  /** The session holding most events. */
  big: BuiltSession;
  events: number;
  /** How long writing took, in milliseconds (not a figure of the benchmark). */
  buildMs: number;
  /** The database's size on disk, WAL included, in bytes. */
  bytes: number;
}

/** The share of all events in the first session. */
export const BIG_SHARE = 0.8;

/** Kinds by weight, roughly what a coding agent produces. */
const KIND_WEIGHTS: [Kind, number][] = [
  ["file.read", 52],
  ["file.write", 12],
  ["file.create", 4],
  ["file.delete", 1.2],
  ["file.rename", 0.8],
  ["proc.exec", 9],
  ["proc.exit", 9],
  ["net.connect", 8],
  ["net.listen", 0.3],
  ["db.connect", 0.5],
  ["resource.cpu", 2.2],
  ["resource.memory", 1],
];

const SENSOR: Record<string, string> = { file: "fd", proc: "proc", net: "net", db: "net" };

/** Picks a kind by weight. */
function kindPicker(random: () => number): () => Kind {
  const total = KIND_WEIGHTS.reduce((a, [, w]) => a + w, 0);
  return () => {
    let x = random() * total;
    for (const [kind, w] of KIND_WEIGHTS) {
      x -= w;
      if (x < 0) return kind;
    }
    return "file.read";
  };
}

const EXTS = ["ts", "py", "json", "md", "rs", "toml", "lock", "txt"];
const HOSTS = ["api.openai.com:443", "registry.npmjs.org:443", "github.com:443", "pypi.org:443"];

function target(kind: Kind, random: () => number, i: number): string {
  if (kind.startsWith("file.")) {
    const deep = Math.floor(random() * 40);
    const secret = random() < 0.004;
    return secret
      ? "/home/dev/.ssh/id_ed25519"
      : `/work/project/src/mod_${deep}/file_${i % 977}.${EXTS[i % EXTS.length]}`;
  }
  if (kind === "proc.exec" || kind === "proc.exit") {
    return ["git status", "python3 -m pytest -q", "node build.js", "curl -s https://x.dev"][
      i % 4
    ] as string;
  }
  if (kind === "net.connect") return HOSTS[i % HOSTS.length] as string;
  if (kind === "net.listen") return "127.0.0.1:8000";
  if (kind === "db.connect") return "127.0.0.1:5432";
  return "cpu";
}

/**
 * A risk: most actions are low, a few percent are high, a few per thousand near 100; denied
 * actions and sensitive kinds score higher.
 */
function riskOf(kind: Kind, random: () => number): number {
  const base = kind === "file.read"
    ? 5
    : kind.startsWith("file.")
    ? 15
    : kind === "proc.exec"
    ? 20
    : kind.startsWith("net.") || kind === "db.connect"
    ? 25
    : 10;
  const r = random();
  const extra = r < 0.003 ? 70 + random() * 30 : r < 0.03 ? 40 + random() * 40 : random() * 25;
  return Math.min(100, Math.round(base + extra));
}

/** Builds the event `i` of a session at time `ms`. */
function makeEvent(
  parts: { id: string; ms: number; session: string; i: number },
  random: () => number,
  pickKind: () => Kind,
): AgentEvent {
  const kind = pickKind();
  const risk = riskOf(kind, random);
  const deny = risk >= 70 ? random() < 0.6 : random() < 0.01;
  const factors: RiskFactor[] = [{ id: "kind", points: Math.min(risk, 10), reason: kind }];
  if (risk > 10) factors.push({ id: "path", points: risk - 10, reason: "outside the workspace" });
  // The watch sensor reports when a change happened, which can precede the id's mint time.
  const skew = random() < 0.001 ? Math.floor(random() * 2000) : Math.floor(random() * 3);
  return {
    id: parts.id,
    ts: new Date(parts.ms - skew).toISOString(),
    session: parts.session,
    agent: "claude-code",
    pid: 4000 + (parts.i % 37),
    ppid: 3999,
    exe: kind.startsWith("proc.") ? "/usr/bin/python3" : "/usr/bin/node",
    cmdline: ["node", "/usr/lib/agent/cli.js", "--task", "refactor"],
    kind,
    target: target(kind, random, parts.i),
    detail: kind.startsWith("file.") ? { bytes: Math.floor(random() * 65536) } : {},
    sensor: SENSOR[kind.split(".")[0] as string] ?? "proc",
    verdict: deny ? "deny" : "allow",
    risk,
    factors,
    rule: deny ? "secrets.credential_read" : `${kind.split(".")[0]}.allow`,
    response: deny ? (risk >= 90 ? "pause" : "alert") : "none",
  };
}

/**
 * A maker of events of the benchmark's mix, for benchmarks that write their own: the event
 * with id `id`, number `i` of `session`, at time `ms`.
 */
export function eventMaker(
  seed = 5,
): (parts: { id: string; ms: number; session: string; i: number }) => AgentEvent {
  const random = rng(seed);
  const pickKind = kindPicker(random);
  return (parts) => makeEvent(parts, random, pickKind);
}

/** Events per session: the first gets {@link BIG_SHARE}, the rest split the remainder unevenly. */
function sessionSizes(events: number, sessions: number): number[] {
  if (sessions === 1) return [events];
  const rest = events - Math.round(events * BIG_SHARE);
  const weights = Array.from({ length: sessions - 1 }, (_, i) => 1 + (i % 5));
  const sum = weights.reduce((a, b) => a + b, 0);
  const sizes = weights.map((w) => Math.floor((rest * w) / sum));
  const small = sizes.reduce((a, b) => a + b, 0);
  return [events - small, ...sizes];
}

/**
 * Writes a journal of `options.events` events at `path` through the journal's batched writer
 * (big batches, so the build is quick). Sessions run one after another, oldest first; within a
 * session events are spread evenly over its span (about 66 events/s for the big one), ids minted
 * from the event's time as Sentry does, and `ts` a few ms earlier (rarely up to 2 s).
 */
export function buildEventJournal(path: string, options: EventJournalOptions = {}): EventJournal {
  const total = options.events ?? 1_000_000;
  const count = options.sessions ?? 20;
  const random = rng(options.seed ?? 5);
  const pickKind = kindPicker(random);
  const start = performance.now();
  const batch = 20_000;
  let clockMs = Date.parse("2026-03-02T08:00:00.000Z");
  const journal: Journal = openJournal(path, {
    batchMax: batch,
    batchMs: 60_000,
    maxPending: batch + 1,
    now: () => clockMs,
    ...(options.migrations === undefined ? {} : { migrations: options.migrations }),
  });
  const sessions: BuiltSession[] = [];
  try {
    const sizes = sessionSizes(total, count);
    for (const [s, size] of sizes.entries()) {
      let ms = clockMs;
      const id = createUlid({ now: () => ms, random: (b) => b.fill(s) })();
      journal.createSession({
        id,
        agent: "claude-code",
        command: ["claude", "--task", `task ${s}`],
        pid: 4000,
        kind: "run",
        policy: "coding-agent",
        mode: s % 3 === 0 ? "pause" : "monitor",
        workspace: "/work/project",
        startedAt: new Date(ms).toISOString(),
        state: "ended",
        endedAt: new Date(ms).toISOString(),
      });
      const ulid = createUlid({
        now: () => ms,
        random: (b) => {
          for (let k = 0; k < b.length; k++) b[k] = Math.floor(random() * 256);
        },
      });
      // About 66 events/s on average in the big session (3.3 hours at 800,000), 5/s in the others.
      const gapMs = s === 0 ? 15 : 200;
      const first = ms;
      let t = ms;
      for (let i = 0; i < size; i++) {
        t += gapMs * (0.2 + random() * 1.6);
        ms = Math.floor(t);
        journal.append(makeEvent({ id: ulid(), ms, session: id, i }, random, pickKind));
      }
      journal.flush();
      sessions.push({ id, events: size, firstMs: first, lastMs: ms });
      clockMs = ms + 60_000;
      journal.updateSession(id, { endedAt: new Date(ms).toISOString() });
    }
  } finally {
    journal.close();
  }
  let bytes = 0;
  for (const suffix of ["", "-wal"]) {
    try {
      bytes += Deno.statSync(path + suffix).size;
    } catch {
      // No WAL after a clean close.
    }
  }
  return {
    path,
    sessions,
    big: sessions[0] as BuiltSession,
    events: total,
    buildMs: performance.now() - start,
    bytes,
  };
}
