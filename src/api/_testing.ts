/** Fixtures for the API's tests: a temporary journal with a seeded session. */

import { join } from "node:path";
import { type AgentEvent, createUlid, type Kind } from "../events/mod.ts";
import { type Journal, JOURNAL_FILE, openJournal } from "../journal/mod.ts";
import { type AppDeps, createApp, type SentryApp } from "./app.ts";
import type { SessionControls } from "./control.ts";
import { createLiveHub, type LiveHub } from "./live.ts";

export const TOKEN = "test-token-0123456789";
export const HOST = "127.0.0.1:7070";
export const SESSION = "01JTESTSESSION000000000000";
export const T0 = Date.parse("2026-01-02T03:04:05.000Z");

/** A test world: journal, hub, app, and the calls made to the fake controls. */
export interface World {
  dir: string;
  journal: Journal;
  hub: LiveHub;
  app: SentryApp;
  calls: string[];
  nextEvent: (overrides?: Partial<AgentEvent>) => AgentEvent;
  request: (path: string, init?: RequestInit) => Promise<Response>;
  close: () => void;
}

const KINDS: Kind[] = ["file.read", "file.write", "proc.exec", "net.connect"];

/** Opens a world with `events` seeded events in one session. */
export function world(
  events = 0,
  options: Partial<AppDeps> & { realControls?: boolean } = {},
): World {
  const { realControls, ...deps } = options;
  const dir = Deno.makeTempDirSync({ prefix: "sentry-api-" });
  let now = T0;
  const journal = openJournal(join(dir, JOURNAL_FILE), { now: () => now, hostname: "test" });
  journal.createSession({
    id: SESSION,
    agent: "demo",
    command: ["sh", "-c", "true"],
    pid: null,
    kind: "run",
    policy: "coding-agent",
    mode: "monitor",
    workspace: dir,
  });
  const ulid = createUlid({ now: () => now, random: (b) => b.fill(7) });
  let n = 0;
  const nextEvent = (overrides: Partial<AgentEvent> = {}): AgentEvent => {
    now += 1;
    const i = n++;
    return {
      id: ulid(),
      ts: new Date(now).toISOString(),
      session: SESSION,
      agent: "demo",
      pid: 100,
      ppid: 1,
      exe: "/bin/sh",
      cmdline: ["sh"],
      kind: KINDS[i % KINDS.length] ?? "file.read",
      target: `/work/file${i}`,
      detail: {},
      sensor: "fd",
      verdict: i % 3 === 0 ? "deny" : "allow",
      risk: (i * 7) % 101,
      factors: [],
      rule: "files.read.allow",
      response: i % 3 === 0 ? "alert" : "none",
      ...overrides,
    };
  };
  for (let i = 0; i < events; i++) journal.append(nextEvent());
  journal.flush();
  const hub = createLiveHub();
  const calls: string[] = [];
  const fake = (action: "pause" | "resume" | "kill"): SessionControls["pause"] => (session) => {
    calls.push(`${action} ${session.id}`);
    return Promise.resolve({ session: session.id, action, ok: true, done: [100], failed: [] });
  };
  const controls: SessionControls = {
    pause: fake("pause"),
    resume: fake("resume"),
    kill: fake("kill"),
    rollback: (session, request) => {
      calls.push(`rollback ${session.id} ${JSON.stringify(request)}`);
      return Promise.resolve({
        session: session.id,
        dry_run: request.dryRun,
        ok: true,
        snapshot: "snap",
        actions: [],
        rollback: null,
        counts: null,
      });
    },
  };
  const app = createApp({
    journal,
    dataDir: dir,
    token: TOKEN,
    allowedHosts: [HOST, "localhost:7070"],
    live: hub,
    ...(realControls ? {} : { controls }),
    clock: () => 5000,
    ...deps,
  });
  return {
    dir,
    journal,
    hub,
    app,
    calls,
    nextEvent,
    request: (path, init = {}) => {
      const headers = new Headers(init.headers);
      if (!headers.has("host")) headers.set("host", HOST);
      if (!headers.has("authorization")) headers.set("authorization", `Bearer ${TOKEN}`);
      return Promise.resolve(app.request(`http://${HOST}${path}`, { ...init, headers }));
    },
    close: () => {
      app.close();
      journal.close();
      Deno.removeSync(dir, { recursive: true });
    },
  };
}
