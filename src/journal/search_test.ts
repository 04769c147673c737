/**
 * The journal's text search, attribution filter, bounded search steps and host list: what they
 * match, against a plain filter of every event in JavaScript.
 */
import assert from "node:assert/strict";
import { join } from "node:path";
import { type AgentEvent, createUlid, type Kind } from "../events/mod.ts";
import { type EventFilter, type Journal, type NewSession, openJournal } from "./mod.ts";
import { searchWords } from "./_sql.ts";

const T0 = Date.UTC(2026, 0, 2, 3, 4, 5);
const SESSION = "01JSEARCHSESSION0000000000";
const OTHER = "01JSEARCHOTHER000000000000";

function session(id: string): NewSession {
  return {
    id,
    agent: "claude",
    command: ["claude"],
    pid: 1000,
    kind: "run",
    policy: "coding-agent",
    mode: "monitor",
    workspace: "/work/project",
  };
}

const KINDS: Kind[] = ["file.read", "file.write", "proc.exec", "net.connect"];

/** Event `i` of a session: varied targets, command lines, details and attribution. */
function makeEvent(id: string, sessionId: string, i: number, ms: number): AgentEvent {
  const kind = KINDS[i % KINDS.length] as Kind;
  const target = kind === "net.connect"
    ? `api${i % 3}.example.com:443`
    : kind === "proc.exec"
    ? `/usr/bin/git`
    : i % 17 === 0
    ? `/work/project/it's "quoted"\\back ${i}.txt`
    : `/work/project/src/File_${i}.TS`;
  return {
    id,
    ts: new Date(ms).toISOString(),
    session: sessionId,
    agent: "claude",
    pid: i % 5 === 0 ? null : 4000 + (i % 7),
    ppid: i % 5 === 0 ? null : 3999,
    exe: kind === "proc.exec" ? "/usr/bin/git" : i % 2 === 0 ? "/usr/bin/node" : null,
    cmdline: kind === "proc.exec" ? ["git", "push", `--tag=v${i}`] : ["node", "agent.js"],
    kind,
    target,
    detail: kind === "net.connect" ? { host: `Mirror-${i % 3}.corp`, port: 443 } : { bytes: i },
    sensor: "fd",
    verdict: i % 6 === 0 ? "deny" : "allow",
    risk: (i * 13) % 101,
    factors: [{ id: "kind", points: 5, reason: "pidfile timestamp target" }],
    rule: i % 6 === 0 ? "secrets.credential_read" : "files.read.allow",
    response: i % 6 === 0 ? "alert" : "none",
  };
}

/** What the search matches, in JavaScript: the dashboard's rule. */
function matches(e: AgentEvent, text: string): boolean {
  const hay = JSON.stringify([
    e.kind,
    e.target,
    e.rule,
    e.verdict,
    e.response,
    e.pid,
    e.exe,
    e.cmdline,
    e.detail,
  ]).replace(/[A-Z]/g, (c) => c.toLowerCase());
  return searchWords(text).every((w) => hay.includes(w));
}

async function withJournal(
  count: number,
  fn: (journal: Journal, events: AgentEvent[], path: string) => void | Promise<void>,
): Promise<void> {
  const dir = await Deno.makeTempDir({ prefix: "sentry-search-" });
  let now = T0;
  const path = join(dir, "journal.db");
  const journal = openJournal(path, {
    batchMax: 1000,
    batchMs: 60_000,
    hostname: "alpha",
    now: () => now,
  });
  try {
    journal.createSession(session(SESSION));
    journal.createSession(session(OTHER));
    const ulid = createUlid({ now: () => now });
    const events: AgentEvent[] = [];
    for (let i = 0; i < count; i++) {
      now += 1 + (i % 3);
      const e = makeEvent(ulid(), i % 5 === 2 ? OTHER : SESSION, i, now);
      events.push(e);
      journal.append(e);
    }
    journal.flush();
    await fn(journal, events, path);
  } finally {
    journal.close();
    await Deno.remove(dir, { recursive: true });
  }
}

const SEARCHES = [
  "file_1",
  "FILE_1 .ts",
  "mirror-2.corp",
  "api1.example.com",
  "push --tag=v1",
  `"quoted"\\back`,
  "it's",
  "credential deny",
  "4003",
  "/usr/bin/node",
  "bytes",
  "nothing-like-this",
];

Deno.test("queryEvents() with text finds every word in target, command line, detail, exe, rule and pid, and nothing else", async () => {
  await withJournal(400, (journal, events) => {
    for (const text of SEARCHES) {
      const want = events.filter((e) => e.session === SESSION && matches(e, text)).map((e) => e.id);
      const got = journal.queryEvents({ session: SESSION, text, limit: 10_000 }).map((e) => e.id);
      assert.deepEqual(got, want, text);
      assert.equal(want.length === 0, text === "nothing-like-this", `matches of ${text}`);
    }
    assert.ok(journal.queryEvents({ session: SESSION, text: "file_1", limit: 10 }).length > 0);
    // Quotes and backslashes match as typed, case folds (ASCII), and field names never match.
    assert.ok(journal.queryEvents({ session: SESSION, text: `"quoted"\\back` }).length > 0);
    assert.ok(journal.queryEvents({ session: SESSION, text: "MIRROR-1.CORP" }).length > 0);
    for (const key of ["target", "cmdline", "factors", "timestamp", "session", "pidfile"]) {
      assert.deepEqual(journal.queryEvents({ session: SESSION, text: key }), [], key);
    }
    // With the other filters, across sessions, newest first.
    const filter: EventFilter = { text: "example.com", verdict: "allow", order: "desc" };
    assert.deepEqual(
      journal.queryEvents(filter).map((e) => e.id),
      events.filter((e) => e.verdict === "allow" && matches(e, "example.com")).map((e) => e.id)
        .reverse(),
    );
  });
});

Deno.test("queryEvents() with attributed keeps the agent's events (true) or the unattributed ones (false)", async () => {
  await withJournal(300, (journal, events) => {
    const mine = events.filter((e) => e.session === SESSION);
    for (const attributed of [true, false]) {
      assert.deepEqual(
        journal.queryEvents({ session: SESSION, attributed, limit: 10_000 }).map((e) => e.id),
        mine.filter((e) => (e.pid !== null) === attributed).map((e) => e.id),
      );
    }
    // The report's violations: denied and attributed.
    assert.deepEqual(
      journal.queryEvents({ session: SESSION, attributed: true, verdict: "deny", limit: 10_000 })
        .map((e) => e.id),
      mine.filter((e) => e.pid !== null && e.verdict === "deny").map((e) => e.id),
    );
  });
});

Deno.test("searchEvents() walks a session in bounded steps that together find exactly what one query finds", async () => {
  await withJournal(500, (journal, events) => {
    const mine = events.filter((e) => e.session === SESSION);
    for (const order of ["asc", "desc"] as const) {
      for (const [text, limit, walk] of [["file_", 7, 25], ["mirror-1", 1000, 40], ["zz", 5, 60]]) {
        const want = mine.filter((e) => matches(e, String(text))).map((e) => e.id);
        if (order === "desc") want.reverse();
        const got: string[] = [];
        let after: string | undefined;
        let steps = 0;
        for (;;) {
          const page = journal.searchEvents({
            session: SESSION,
            text: String(text),
            order,
            limit: Number(limit),
            ...(after === undefined ? {} : { after }),
          }, Number(walk));
          assert.ok(page.events.length <= Number(limit));
          got.push(...page.events.map((e) => e.id));
          steps++;
          if (page.next === null) break;
          after = page.next;
          assert.ok(steps < 1000, "the steps end");
        }
        assert.deepEqual(got, want, `${order} ${text}`);
        // Each step walks at most `walk` events: enough steps to cover the session.
        assert.ok(steps >= Math.ceil(mine.length / Number(walk)) || got.length > 0, `${steps}`);
      }
    }
  });
});

Deno.test("searchEvents() stops a step after maxWalk events even when nothing matches", async () => {
  await withJournal(200, (journal, events) => {
    const mine = events.filter((e) => e.session === SESSION);
    const first = journal.searchEvents(
      { session: SESSION, text: "no-such-word", order: "desc", limit: 50 },
      20,
    );
    assert.deepEqual(first.events, []);
    // The cursor is the 20th newest event: the next step starts below it.
    assert.equal(first.next, mine.at(-20)?.id);
    const rest = journal.searchEvents(
      { session: SESSION, text: "no-such-word", order: "desc", after: first.next ?? "" },
      1000,
    );
    assert.deepEqual(rest, { events: [], next: null });
    assert.throws(() => journal.searchEvents({ session: SESSION }, 0), RangeError);
  });
});

Deno.test("sessionHosts() counts sessions and live ones per host name, the latest first", async () => {
  await withJournal(0, (journal, _events, path) => {
    const beta = openJournal(path, { hostname: "beta", now: () => T0 + 60_000 });
    beta.createSession(session("01JSEARCHHOSTB000000000000"));
    beta.close();
    journal.updateSession(SESSION, { state: "ended", endedAt: new Date(T0).toISOString() });
    const hosts = journal.sessionHosts();
    assert.deepEqual(hosts.map((h) => [h.host, h.sessions, h.live]), [
      ["beta", 1, 1],
      ["alpha", 2, 1],
    ]);
    assert.ok(hosts.every((h) => typeof h.lastStarted === "string"));
  });
});
