import type { Command } from "commander";
import { join } from "node:path";
import { readApiRegistry } from "../api/mod.ts";
import { loadConfig } from "../config/mod.ts";
import { JOURNAL_FILE, openJournal, type SessionSummary } from "../journal/mod.ts";
import { configDir, dataDir, isAlive } from "../platform/mod.ts";
import { reconcileJournal } from "./journal_access.ts";
import { readSyncStatus, resolveSyncSettings, type SyncStatus } from "../sync/mod.ts";
import { oneLine } from "./cells.ts";
import { paint, printJson, println, printTable } from "./output.ts";
import { shortTime } from "./sessions.ts";

/** How many sessions `status` looks through for live ones. */
const SCAN_SESSIONS = 10_000;

/** One live session, as `sentry status` shows it. */
export interface LiveSession {
  id: string;
  agent: string;
  command: string[];
  pid: number | null;
  /** `running` or `paused`. */
  state: string;
  /** The sensing tier, such as `ebpf` or `poll`. */
  tier: string | null;
  mode: string;
  policy: string;
  startedAt: string;
  events: number;
  denied: number;
  /** The session's own API and dashboard, or null when it serves none (`--no-api`). */
  api: string | null;
}

/** What `sentry status --json` prints: what runs on this host now. */
export interface HostStatus {
  dataDir: string;
  /** Whether a journal exists (no session has run before it does). */
  journal: boolean;
  sessions: LiveSession[];
  sync: {
    enabled: boolean;
    endpoint: string;
    /** Whether an API key is configured. */
    key: boolean;
    pending: number;
    uploader: { running: boolean; pid: number | null; state: string | null };
    lastSuccessAt: string | null;
    lastError: string | null;
  };
}

/** Gathers what runs on this host: live sessions with their tier, state and API, and sync. */
export async function hostStatus(env: Record<string, string>): Promise<HostStatus> {
  const dir = dataDir(env);
  const { config } = await loadConfig({ env });
  const settings = resolveSyncSettings({ env, configDir: configDir(env), section: config.sync });
  const path = join(dir, JOURNAL_FILE);
  let exists = true;
  try {
    Deno.statSync(path);
  } catch {
    exists = false;
  }
  let live: SessionSummary[] = [];
  let sync: SyncStatus | null = null;
  if (exists) {
    const journal = openJournal(path);
    try {
      // A session whose Sentry died shows as crashed, not as running.
      reconcileJournal(journal, dir);
      live = journal.listSessions({ limit: SCAN_SESSIONS })
        .filter((s) => s.state === "running" || s.state === "paused");
      sync = readSyncStatus(journal, Date.now());
    } finally {
      journal.close();
    }
  }
  const apis = readApiRegistry(dir, isAlive);
  const lease = sync?.lease ?? null;
  const running = lease !== null && lease.valid &&
    (lease.host !== Deno.hostname() || lease.pid === null || isAlive(lease.pid));
  return {
    dataDir: dir,
    journal: exists,
    sessions: live.map((s) => ({
      id: s.id,
      agent: s.agent,
      command: s.command,
      pid: s.pid,
      state: s.state,
      tier: s.tier,
      mode: s.mode,
      policy: s.policy,
      startedAt: s.startedAt,
      events: s.events,
      denied: s.denied,
      api: apis.get(s.id)?.url ?? null,
    })),
    sync: {
      enabled: settings.enabled,
      endpoint: settings.endpoint,
      key: settings.credentials !== null,
      pending: sync?.pending ?? 0,
      uploader: {
        running,
        pid: running ? lease?.pid ?? null : null,
        state: sync?.recorded?.state ?? null,
      },
      lastSuccessAt: sync?.recorded?.lastSuccessAt ?? null,
      lastError: sync?.recorded?.lastError?.message ?? null,
    },
  };
}

/** Prints the status for people. */
function printStatus(status: HostStatus): void {
  println(paint("Sessions", "bold"));
  if (status.sessions.length === 0) {
    println(
      status.journal
        ? "  none running"
        : `  none: no session has run yet (data directory ${status.dataDir})`,
    );
  } else {
    const rows = [["  ID", "AGENT", "PID", "STATE", "TIER", "MODE", "STARTED", "EVENTS", "API"]];
    for (const s of status.sessions) {
      rows.push([
        `  ${s.id}`,
        oneLine(s.agent),
        String(s.pid ?? "-"),
        s.state === "paused" ? paint("paused", "yellow") : s.state,
        s.tier ?? "-",
        s.mode,
        shortTime(s.startedAt),
        `${s.events} (${s.denied} denied)`,
        s.api ?? "none",
      ]);
    }
    printTable(rows);
  }
  println();
  println(paint("Sync", "bold"));
  const y = status.sync;
  const uploader = y.uploader.running
    ? `running in pid ${y.uploader.pid ?? "?"}${
      y.uploader.state === null ? "" : ` (${y.uploader.state})`
    }`
    : "not running";
  printTable([
    ["  sync", !y.enabled ? "off" : y.key ? `on, to ${y.endpoint}` : "on, but no API key"],
    ["  outbox", `${y.pending} events pending`],
    ["  uploader", uploader],
    ["  last success", y.lastSuccessAt === null ? "never" : shortTime(y.lastSuccessAt)],
    ["  last error", y.lastError === null ? "none" : oneLine(y.lastError)],
  ]);
  println();
  println(paint("API", "bold"));
  const served = status.sessions.filter((s) => s.api !== null);
  if (served.length === 0) {
    println("  no session serves one; browse the journal with: sentry serve");
  }
  for (const s of served) println(`  ${s.api} (session ${s.id}; token: sentry token)`);
}

/** Adds `sentry status`. */
export function registerStatusCommand(program: Command): void {
  program.command("status").description(
    "what runs on this host: live sessions with their tier, state and API, and sync",
  )
    .option("--json", "print one JSON object")
    .action(async (opts: { json?: boolean }) => {
      const status = await hostStatus(Deno.env.toObject());
      if (opts.json) printJson(status);
      else printStatus(status);
    });
}
