import type { Command } from "commander";
import { join } from "node:path";
import { loadConfig } from "../config/mod.ts";
import { type Journal, JOURNAL_FILE, openJournal } from "../journal/mod.ts";
import { configDir, dataDir, isAlive } from "../platform/mod.ts";
import {
  createUploader,
  DEFAULT_REQUEST_TIMEOUT_MS,
  loadOrCreateHostId,
  readSyncStatus,
  resolveSyncSettings,
  type SyncSettings,
  type SyncStatus,
} from "../sync/mod.ts";
import { ExitCode, UsageError } from "./errors.ts";
import { eprintln, paint, printJson, println, printTable } from "./output.ts";
import { shortTime } from "./sessions.ts";

/** How long `sentry sync now` tries by default, in seconds. */
export const DEFAULT_SYNC_NOW_TIMEOUT_S = 60;

/** The fix printed when there is no API key. */
const LOGIN_HINT = 'run "sentry login --api-key KEY" (or set SENTRY_API_KEY)';

/** Formats a duration for people: `850 ms`, `12 s`, `3 min 12 s`, `5 h 2 min`, `4 d 3 h`. */
export function formatAge(ms: number): string {
  if (ms < 1000) return `${Math.round(ms)} ms`;
  const s = Math.floor(ms / 1000);
  if (s < 60) return `${s} s`;
  const m = Math.floor(s / 60);
  if (m < 60) return `${m} min ${s % 60} s`;
  const h = Math.floor(m / 60);
  if (h < 24) return `${h} h ${m % 60} min`;
  return `${Math.floor(h / 24)} d ${h % 24} h`;
}

async function settingsFromEnv(): Promise<SyncSettings> {
  const env = Deno.env.toObject();
  const { config } = await loadConfig({ env });
  return resolveSyncSettings({ env, configDir: configDir(env), section: config.sync });
}

function keySource(settings: SyncSettings): string | null {
  const c = settings.credentials;
  if (c === null) return null;
  return c.source === "env" ? `env:${c.variable ?? "SENTRY_API_KEY"}` : `file:${c.path ?? "?"}`;
}

/** Opens the journal if there is one; sync commands never create it. */
function openExisting(dir: string): Journal | null {
  const path = join(dir, JOURNAL_FILE);
  try {
    Deno.statSync(path);
  } catch {
    return null;
  }
  return openJournal(path);
}

/** `sentry sync status` as JSON: the same facts as the table, with stable snake_case keys. */
function statusJson(settings: SyncSettings, status: SyncStatus, running: boolean): unknown {
  const r = status.recorded;
  return {
    enabled: settings.enabled,
    endpoint: settings.endpoint,
    key_source: keySource(settings),
    pending: status.pending,
    oldest_ts: status.oldestTs,
    oldest_age_ms: status.oldestAgeMs,
    outbox_max_events: r?.outboxMaxEvents ?? settings.outboxMaxEvents,
    dropped: status.dropped,
    dropped_synced: status.droppedSynced,
    uploader: {
      running,
      pid: running ? status.lease?.pid ?? null : null,
      lease_until: running ? status.lease?.until ?? null : null,
      state: r?.state ?? null,
    },
    last_success_at: r?.lastSuccessAt ?? null,
    last_error: r?.lastError ?? null,
    next_attempt_at: running ? r?.nextAttemptAt ?? null : null,
    accepted: r?.accepted ?? 0,
    duplicates: r?.duplicates ?? 0,
  };
}

function printStatus(settings: SyncSettings, status: SyncStatus, running: boolean): void {
  const now = Date.now();
  const r = status.recorded;
  const ago = (iso: string) => `${shortTime(iso)} (${formatAge(now - Date.parse(iso))} ago)`;
  const key = settings.credentials === null
    ? paint(`none: ${LOGIN_HINT}`, "red")
    : settings.credentials.source === "env"
    ? `from the environment (${settings.credentials.variable ?? "SENTRY_API_KEY"})`
    : `from ${settings.credentials.path ?? "the credentials file"}`;
  const cap = r?.outboxMaxEvents ?? settings.outboxMaxEvents;
  const outbox = status.pending === 0
    ? `empty (cap ${cap} events)`
    : `${status.pending} events pending, the oldest from ${
      status.oldestAgeMs === null ? "?" : formatAge(status.oldestAgeMs)
    } ago (cap ${cap} events)`;
  const dropped = status.dropped === 0 ? "0" : paint(
    `${status.dropped} events dropped at the cap (the collector knows of ${status.droppedSynced})`,
    "yellow",
  );
  const uploader = running
    ? `running in pid ${status.lease?.pid ?? "?"}: ${r?.state ?? "starting"}`
    : `not running${r === null ? "" : ` (last state: ${r.state})`}; "sentry run" uploads, ` +
      `or "sentry sync now"`;
  const error = r?.lastError ?? null;
  const rows: string[][] = [
    ["sync", settings.enabled ? "on" : 'off (config "sync.enabled: false")'],
    ["endpoint", settings.endpoint],
    ["api key", key],
    ["outbox", outbox],
    ["dropped", dropped],
    ["uploader", uploader],
    ["last success", r?.lastSuccessAt ? ago(r.lastSuccessAt) : "never"],
    ["last error", error === null ? "none" : `${ago(error.at)}: ${error.message}`],
  ];
  if (running && r?.nextAttemptAt) {
    const inMs = Date.parse(r.nextAttemptAt) - now;
    rows.push([
      "next attempt",
      `${shortTime(r.nextAttemptAt)} (in ${formatAge(Math.max(0, inMs))})`,
    ]);
  }
  if (r !== null) {
    rows.push(["uploaded", `${r.accepted} events, ${r.duplicates} duplicates absorbed`]);
  }
  printTable(rows);
}

/** Adds `sentry sync status` and `sentry sync now`. */
export function registerSyncCommands(program: Command): void {
  const sync = program.command("sync").description(
    "upload the journal's outbox to the collector: status, or drain it now",
  );

  sync.command("status").description(
    "show the outbox, the dropped count, the last upload and its error, and the endpoint",
  )
    .option("--json", "print one JSON object")
    .action(async (opts: { json?: boolean }) => {
      const settings = await settingsFromEnv();
      const journal = openExisting(dataDir(Deno.env.toObject()));
      let status: SyncStatus;
      try {
        status = journal === null
          ? {
            pending: 0,
            oldestTs: null,
            oldestAgeMs: null,
            dropped: 0,
            droppedSynced: 0,
            lease: null,
            recorded: null,
          }
          : readSyncStatus(journal, Date.now());
      } finally {
        journal?.close();
      }
      const lease = status.lease;
      const running = lease !== null && lease.valid &&
        (lease.host !== Deno.hostname() || lease.pid === null || isAlive(lease.pid));
      if (opts.json) printJson(statusJson(settings, status, running));
      else printStatus(settings, status, running);
    });

  sync.command("now").description(
    "upload everything in the outbox now; exit 0 once it is empty, 1 if it could not finish",
  )
    .option(
      "--timeout <seconds>",
      "give up after this long",
      String(DEFAULT_SYNC_NOW_TIMEOUT_S),
    )
    .option("--json", "print the outcome as one JSON object")
    .action(async (opts: { timeout: string; json?: boolean }) => {
      const seconds = Number(opts.timeout);
      if (!Number.isFinite(seconds) || seconds <= 0) {
        throw new UsageError(`Invalid --timeout "${opts.timeout}": give a number of seconds`);
      }
      const settings = await settingsFromEnv();
      const credentials = settings.credentials;
      if (credentials === null) {
        throw new UsageError("No API key: sync needs one", { hint: LOGIN_HINT });
      }
      const env = Deno.env.toObject();
      const dir = dataDir(env);
      const journal = openExisting(dir);
      const report = (ok: boolean, fields: Record<string, unknown>, line: string) => {
        if (opts.json) printJson({ ok, endpoint: settings.endpoint, ...fields });
        else if (ok) println(line);
      };
      if (journal === null) {
        report(
          true,
          { accepted: 0, duplicates: 0, batches: 0, pending: 0, reason: null },
          "nothing to sync: no journal yet",
        );
        return;
      }
      const timeoutMs = Math.round(seconds * 1000);
      const uploader = createUploader(journal, {
        endpoint: settings.endpoint,
        apiKey: credentials.apiKey,
        host: { id: loadOrCreateHostId(dir), name: Deno.hostname() },
        batchEvents: settings.batchEvents,
        outboxMaxEvents: settings.outboxMaxEvents,
        requestTimeoutMs: Math.min(DEFAULT_REQUEST_TIMEOUT_MS, timeoutMs),
        onNotice: (notice) => {
          // A refused key ends the drain, whose one-line error says the same.
          if (notice.code === "unauthorized") return;
          const text = `sentry: ${
            notice.level === "error" ? "error" : "warning"
          }: ${notice.message}`;
          eprintln(paint(text, notice.level === "error" ? "red" : "yellow"));
        },
      });
      const interrupt = new AbortController();
      const stop = () => interrupt.abort();
      Deno.addSignalListener("SIGINT", stop);
      Deno.addSignalListener("SIGTERM", stop);
      let result;
      try {
        result = await uploader.drainNow({ timeoutMs, signal: interrupt.signal });
      } finally {
        Deno.removeSignalListener("SIGINT", stop);
        Deno.removeSignalListener("SIGTERM", stop);
        await uploader.close();
        journal.close();
      }
      const { ok: _ok, ...fields } = result;
      report(
        result.ok,
        fields,
        `synced ${result.accepted} events in ${result.batches} batches to ${settings.endpoint}` +
          (result.duplicates > 0 ? ` (${result.duplicates} already there)` : "") +
          "; the outbox is empty",
      );
      if (!result.ok) {
        throw new ExitCode(
          1,
          opts.json ? "" : `Sync did not finish: ${result.reason ?? "no detail"}; ` +
            `${result.pending} events left in the outbox`,
        );
      }
    });
}
