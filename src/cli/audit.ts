/**
 * `sentry audit`: a one-shot check for schedulers (cron, systemd, launchd) and CI. It covers the
 * window since the last audit (a watermark in the journal) or `--since`/`--until`; finds the
 * window's violations and responses across sessions; watches the agents that run outside Sentry
 * (the config's `audit.targets`) for a bounded window; runs the essential host checks; and hands
 * the result on: a summary or `--json` on stdout, `--report FILE`, `--export DIR` (a
 * tamper-evident bundle), a sync of the outbox and the configured outputs.
 *
 * It never prompts and never paints, is bounded by `--timeout`, and refuses to overlap another
 * audit of the same data directory. Exit codes: 0 clean, 1 findings at or above `--fail-on`,
 * 2 usage, 3 the audit itself failed (timed out, locked, or an error).
 *
 * @module
 */

import type { Command } from "commander";
import { join } from "node:path";
import {
  acquireAuditLock,
  AUDIT_EXIT,
  AUDIT_LOCK_FILE,
  AUDIT_SCHEMA,
  type AuditLock,
  AuditLockedError,
  type AuditReport,
  backlogCheck,
  collectFindings,
  type FailOn,
  type Finding,
  findMatches,
  type HostCheck,
  LAST_AUDIT_KEY,
  type LastAudit,
  openAtomic,
  parseFailOn,
  parsePasswd,
  readProcesses,
  resolveWindow,
  storeCheck,
  summaryLines,
  type TargetReport,
  watchProcess,
  WATERMARK_KEY,
  writeFileAtomic,
} from "../audit/mod.ts";
import { type AuditConfig, loadConfig, type SentryConfig } from "../config/mod.ts";
import { type Journal, JOURNAL_FILE, openJournal } from "../journal/mod.ts";
import { createOutputs } from "../outputs/mod.ts";
import { parseDuration } from "../policy/mod.ts";
import { configDir, dataDir, ensureDataDir, isAlive, selfCommand } from "../platform/mod.ts";
import {
  createUploader,
  exportBundle,
  loadOrCreateHostId,
  resolveSyncSettings,
} from "../sync/mod.ts";
import { VERSION } from "../version.ts";
import { parseTimeFlag, readSignKey } from "./bundle.ts";
import { runDoctor } from "./doctor.ts";
import { ExitCode, UsageError } from "./errors.ts";
import { eprintln, println } from "./output.ts";
import { syncOn } from "./_session_services.ts";

/** The doctor checks an audit keeps: the data directory, config, /proc, tiers and the journal. */
const HOST_CHECK_IDS = /^(data_dir|config_dir|config|proc|sensor|tier_\w+|journal)$/;

/** How long the outbox sync may take at most, within the audit's own time limit. */
const SYNC_TIMEOUT_MS = 60_000;

interface AuditFlags {
  since?: string;
  until?: string;
  failOn?: string;
  timeout?: string;
  json?: boolean;
  report?: string;
  export?: string;
  signKeyFile?: string;
  maxFindings: string;
  targets: boolean;
  host: boolean;
  sync: boolean;
  outputs: boolean;
}

/** The flags, checked: everything that can be a usage error is found before the audit starts. */
interface Plan {
  since?: string;
  until?: string;
  failOn: FailOn;
  timeoutMs: number;
  json: boolean;
  report?: string;
  exportDir?: string;
  signKey?: Uint8Array;
  maxFindings: number;
  targets: boolean;
  host: boolean;
  sync: boolean;
  outputs: boolean;
}

function usage(error: unknown, flag: string, value: string): never {
  throw new UsageError(
    `Invalid ${flag} "${value}": ${(error as Error).message.replace(/^Invalid [^:]*: /, "")}`,
  );
}

function directoryExists(path: string): boolean {
  try {
    return Deno.statSync(path).isDirectory;
  } catch {
    return false;
  }
}

function plan(flags: AuditFlags, audit: AuditConfig, now: number): Plan {
  let failOn: FailOn = audit.fail_on;
  if (flags.failOn !== undefined) {
    try {
      failOn = parseFailOn(flags.failOn);
    } catch (error) {
      throw new UsageError((error as Error).message);
    }
  }
  const timeoutText = flags.timeout ?? audit.timeout;
  let timeoutMs: number;
  try {
    timeoutMs = parseDuration(timeoutText);
  } catch (error) {
    usage(error, flags.timeout === undefined ? "audit.timeout" : "--timeout", timeoutText);
  }
  const maxFindings = Number(flags.maxFindings);
  if (!/^\d+$/.test(flags.maxFindings) || maxFindings < 1 || maxFindings > 1_000_000) {
    throw new UsageError(
      `Invalid --max-findings "${flags.maxFindings}": give a whole number from 1 to 1000000`,
    );
  }
  const since = flags.since === undefined ? undefined : parseTimeFlag("--since", flags.since, now);
  const until = flags.until === undefined ? undefined : parseTimeFlag("--until", flags.until, now);
  if (since !== undefined && until !== undefined && until <= since) {
    throw new UsageError(`Invalid --until "${flags.until}": it must be later than --since`);
  }
  if (flags.report !== undefined) {
    const parent = join(flags.report, "..");
    if (!directoryExists(parent) || directoryExists(flags.report)) {
      throw new UsageError(
        `Invalid --report "${flags.report}": give a file in an existing directory`,
      );
    }
  }
  if (flags.export !== undefined && !directoryExists(flags.export)) {
    throw new UsageError(`Invalid --export "${flags.export}": no such directory`);
  }
  if (flags.signKeyFile !== undefined && flags.export === undefined) {
    throw new UsageError("--sign-key-file needs --export DIR");
  }
  return {
    ...(since === undefined ? {} : { since }),
    ...(until === undefined ? {} : { until }),
    failOn,
    timeoutMs,
    json: flags.json === true,
    ...(flags.report === undefined ? {} : { report: flags.report }),
    ...(flags.export === undefined ? {} : { exportDir: flags.export }),
    ...(flags.signKeyFile === undefined ? {} : { signKey: readSignKey(flags.signKeyFile) }),
    maxFindings,
    targets: flags.targets,
    host: flags.host,
    sync: flags.sync,
    outputs: flags.outputs,
  };
}

/** A report before anything is known: what a failure at any step still prints. */
function emptyReport(p: Plan, startedAt: string): AuditReport {
  let host = "unknown";
  try {
    host = Deno.hostname();
  } catch {
    // Keep "unknown".
  }
  return {
    schema: AUDIT_SCHEMA,
    sentry: { version: VERSION, host },
    startedAt,
    finishedAt: startedAt,
    window: {
      since: p.since ?? null,
      until: p.until ?? startedAt,
      source: "flags",
      advanced: false,
    },
    failOn: p.failOn,
    result: "failed",
    exitCode: AUDIT_EXIT.failed,
    counts: { findings: 0, failing: 0, sessions: 0, listed: 0 },
    truncated: false,
    findings: [],
    sessions: [],
    targets: [],
    host: null,
    outputs: { report: null, export: null, sync: null, alerts: null },
    errors: [],
  };
}

interface Context {
  plan: Plan;
  config: SentryConfig;
  env: Record<string, string>;
  dir: string;
  journal: Journal;
  signal: AbortSignal;
  report: AuditReport;
  /** When the last target watch ended (ms), or null when none ran. */
  watchesEnded: number | null;
}

/** Finds and watches the configured targets; a required target that is not running is a finding. */
async function auditTargets(ctx: Context): Promise<Finding[]> {
  const targets = ctx.config.audit.targets;
  if (!ctx.plan.targets || targets.length === 0) return [];
  if (Deno.build.os !== "linux") {
    ctx.report.errors.push(`targets are not watched on ${Deno.build.os}: Linux only`);
    return [];
  }
  let users = new Map<string, number>();
  try {
    users = parsePasswd(Deno.readTextFileSync("/etc/passwd"));
  } catch {
    // No passwd: users by name match nothing.
  }
  const processes = readProcesses(new Set([Deno.pid]));
  const sentry = selfCommand();
  const findings: Finding[] = [];
  const watches: Promise<void>[] = [];
  for (const target of targets) {
    const matches = findMatches(target, processes, users);
    const entry: TargetReport = {
      name: target.name,
      policy: target.policy,
      found: matches.length > 0,
      matches: [],
    };
    ctx.report.targets.push(entry);
    if (matches.length === 0) {
      if (target.required) {
        findings.push({
          type: "target",
          failing: true,
          risk: null,
          summary: `target "${target.name}" is not running`,
          session: null,
          ts: new Date().toISOString(),
          target: target.name,
        });
      }
      continue;
    }
    for (const process of matches) {
      watches.push((async () => {
        const watched = await watchProcess(process, {
          sentry,
          target,
          windowMs: parseDuration(target.window),
          env: ctx.env,
          signal: ctx.signal,
        });
        let counts = { events: 0, denied: 0, maxRisk: 0 };
        if (watched.session !== null) {
          try {
            const s = ctx.journal.getSession(watched.session);
            counts = { events: s.events, denied: s.denied, maxRisk: s.maxRisk };
          } catch {
            // Not journaled: the error says why.
          }
        }
        entry.matches.push({ ...watched, ...counts });
        if (watched.error !== null) {
          findings.push({
            type: "target",
            failing: true,
            risk: null,
            summary:
              `target "${target.name}" pid ${process.pid} could not be watched: ${watched.error}`,
            session: watched.session,
            ts: new Date().toISOString(),
            target: target.name,
          });
        }
      })());
    }
  }
  await Promise.all(watches);
  if (watches.length > 0) ctx.watchesEnded = Date.now() + 1;
  for (const t of ctx.report.targets) t.matches.sort((a, b) => a.pid - b.pid);
  return findings;
}

/** The doctor's essential checks plus the store and the backlog; failures are findings. */
async function auditHost(ctx: Context): Promise<Finding[]> {
  if (!ctx.plan.host || !ctx.config.audit.host.enabled) return [];
  const limits = ctx.config.audit.host;
  const doctor = await runDoctor({ env: ctx.env, endpointTimeoutMs: 3000 });
  const checks: HostCheck[] = doctor.checks.filter((c) => HOST_CHECK_IDS.test(c.id)).map((c) => ({
    id: c.id,
    title: c.title,
    status: c.status,
    detail: c.detail,
  }));
  const store = storeCheck(ctx.dir, limits.max_store_bytes);
  checks.push(store.check);
  const sync = resolveSyncSettings({
    env: ctx.env,
    configDir: configDir(ctx.env),
    section: ctx.config.sync,
  });
  const outbox = ctx.journal.outboxStats();
  checks.push(
    backlogCheck(outbox, { maxEvents: limits.max_sync_backlog, syncOn: syncOn(sync) }),
  );
  ctx.report.host = { checks, syncBacklog: outbox.pending, storeBytes: store.bytes };
  return checks.filter((c) => c.status === "fail").map((c) => ({
    type: "host" as const,
    failing: true,
    risk: null,
    summary: `${c.title}: ${c.detail}`,
    session: null,
    ts: new Date().toISOString(),
    check: c.id,
  }));
}

function bundleName(until: string): string {
  // Milliseconds included: two audits in one second write two bundles, not one over the other.
  return `sentry-audit-${until.replace(/[-:]/g, "")}.jsonl.gz`;
}

/** Writes the window as a tamper-evident bundle in the export directory, atomically. */
async function auditExport(ctx: Context): Promise<void> {
  const dir = ctx.plan.exportDir;
  if (dir === undefined) return;
  const { since, until } = ctx.report.window;
  const path = join(dir, bundleName(until));
  const file = await openAtomic(path, { mode: 0o600 });
  try {
    const result = await exportBundle(ctx.journal, {
      output: file.stream,
      host: { id: loadOrCreateHostId(ctx.dir), name: ctx.report.sentry.host },
      ...(since === null ? {} : { since }),
      until,
      ...(ctx.plan.signKey === undefined ? {} : { signKey: ctx.plan.signKey }),
    });
    await file.commit();
    ctx.report.outputs.export = {
      path,
      events: result.events,
      sessions: result.sessions,
      head: result.head,
      signed: result.signed,
    };
  } catch (error) {
    await file.abort();
    throw error;
  }
}

/** Drains the outbox to the collector when one is configured. A failure is reported, not fatal. */
async function auditSync(ctx: Context, deadline: number): Promise<void> {
  if (!ctx.plan.sync) return;
  const sync = resolveSyncSettings({
    env: ctx.env,
    configDir: configDir(ctx.env),
    section: ctx.config.sync,
  });
  if (!syncOn(sync) || sync.credentials === null) return;
  const uploader = createUploader(ctx.journal, {
    endpoint: sync.endpoint,
    apiKey: sync.credentials.apiKey,
    host: { id: loadOrCreateHostId(ctx.dir), name: ctx.report.sentry.host },
    batchEvents: sync.batchEvents,
    outboxMaxEvents: sync.outboxMaxEvents,
  });
  try {
    const timeoutMs = Math.max(1000, Math.min(SYNC_TIMEOUT_MS, deadline - Date.now()));
    const result = await uploader.drainNow({ timeoutMs, signal: ctx.signal });
    ctx.report.outputs.sync = {
      ok: result.ok,
      accepted: result.accepted,
      pending: result.pending,
      reason: result.reason,
    };
    if (!result.ok) ctx.report.errors.push(`sync did not finish: ${result.reason ?? "no detail"}`);
  } finally {
    await uploader.close();
  }
}

/** Sends the window's event findings to the configured webhooks and OTLP exporter. */
async function auditOutputs(ctx: Context, deadline: number): Promise<void> {
  if (!ctx.plan.outputs) return;
  const outputs = createOutputs(ctx.config.outputs, {
    onWarning: (message) => ctx.report.errors.push(`outputs: ${message}`),
  });
  if (!outputs.active) return;
  for (const f of ctx.report.findings) if (f.event !== undefined) outputs.publish(f.event);
  await outputs.close({ timeoutMs: Math.max(1000, Math.min(10_000, deadline - Date.now())) });
  const stats = outputs.stats();
  ctx.report.outputs.alerts = {
    sent: stats.reduce((n, s) => n + s.sent, 0),
    failed: stats.reduce((n, s) => n + s.failed, 0),
    dropped: stats.reduce((n, s) => n + s.dropped, 0),
  };
}

/** Everything between the lock and the report; throws on what makes the audit fail. */
async function runAudit(ctx: Context, startedMs: number): Promise<void> {
  const { journal, report } = ctx;
  const deadline = startedMs + ctx.plan.timeoutMs;
  // Targets first: their attach sessions end before the window does, so it covers them.
  const targetFindings = await auditTargets(ctx);
  ctx.signal.throwIfAborted();
  const window = resolveWindow({
    since: ctx.plan.since,
    until: ctx.plan.until,
    watermark: journal.syncState(WATERMARK_KEY),
    now: Date.now(),
    notBefore: ctx.watchesEnded ?? undefined,
  });
  report.window = {
    since: window.since,
    until: window.until,
    source: window.source,
    advanced: false,
  };
  const collected = collectFindings(journal, {
    since: window.since,
    until: window.until,
    failOn: ctx.plan.failOn,
    minRisk: ctx.config.audit.min_risk,
    limit: ctx.plan.maxFindings,
  });
  const hostFindings = await auditHost(ctx);
  ctx.signal.throwIfAborted();
  const extra = [...targetFindings, ...hostFindings];
  report.findings = [...collected.findings, ...extra];
  const failing = collected.failing + extra.filter((f) => f.failing).length;
  report.counts = {
    findings: collected.total + extra.length,
    failing,
    sessions: collected.sessions.length,
    listed: report.findings.length,
  };
  report.truncated = collected.truncated;
  for (const id of collected.sessions) {
    const own = collected.findings.filter((f) => f.session === id);
    try {
      const s = journal.getSession(id);
      report.sessions.push({
        id,
        agent: s.agent,
        kind: s.kind,
        state: s.state,
        startedAt: s.startedAt,
        findings: own.length,
        failing: own.filter((f) => f.failing).length,
      });
    } catch {
      // Deleted meanwhile.
    }
  }
  report.result = failing > 0 ? "findings" : "clean";
  report.exitCode = failing > 0 ? AUDIT_EXIT.findings : AUDIT_EXIT.clean;
  await auditExport(ctx);
  ctx.signal.throwIfAborted();
  await auditSync(ctx, deadline);
  ctx.signal.throwIfAborted();
  await auditOutputs(ctx, deadline);
  ctx.signal.throwIfAborted();
  // Moved once the report is written (see `audit()`): a failed audit's window is covered again.
  report.window.advanced = window.advances;
}

function timeoutText(ms: number): string {
  return ms % 60_000 === 0 ? `${ms / 60_000}m` : ms % 1000 === 0 ? `${ms / 1000}s` : `${ms}ms`;
}

/** Records the outcome for `sentry schedule status`; never fails the audit. */
function recordLast(journal: Journal, report: AuditReport): void {
  const last: LastAudit = {
    at: report.finishedAt,
    since: report.window.since,
    until: report.window.until,
    result: report.result,
    exitCode: report.exitCode,
    failing: report.counts.failing,
    findings: report.counts.findings,
  };
  try {
    journal.setSyncState(LAST_AUDIT_KEY, JSON.stringify(last));
  } catch {
    // The report says what happened; the status line is a convenience.
  }
}

async function audit(flags: AuditFlags): Promise<void> {
  const startedMs = Date.now();
  const env = Deno.env.toObject();
  const { config } = await loadConfig({ env });
  const p = plan(flags, config.audit, startedMs);
  const report = emptyReport(p, new Date(startedMs).toISOString());
  let lock: AuditLock | null = null;
  let journal: Journal | null = null;
  const controller = new AbortController();
  let timer: ReturnType<typeof setTimeout> | undefined;
  try {
    const dir = ensureDataDir(dataDir(env));
    const run = join(dir, "run");
    Deno.mkdirSync(run, { recursive: true, mode: 0o700 });
    lock = acquireAuditLock(join(run, AUDIT_LOCK_FILE));
    journal = openJournal(join(dir, JOURNAL_FILE), { busyTimeoutMs: 5000 });
    journal.reconcile(isAlive);
    const ctx: Context = {
      plan: p,
      config,
      env,
      dir,
      journal,
      signal: controller.signal,
      report,
      watchesEnded: null,
    };
    const timedOut = new Promise<"timeout">((resolve) => {
      timer = setTimeout(() => resolve("timeout"), p.timeoutMs);
    });
    const body = runAudit(ctx, startedMs);
    const outcome = await Promise.race([body.then(() => "done" as const), timedOut]);
    if (outcome === "timeout") {
      controller.abort();
      // Let the watches detach and the writes stop before the journal closes.
      await Promise.race([body.catch(() => {}), new Promise((r) => setTimeout(r, 15_000))]);
      throw new Error(`The audit timed out after ${timeoutText(p.timeoutMs)} (--timeout)`);
    }
  } catch (error) {
    if (error instanceof UsageError) throw error;
    report.result = "failed";
    report.exitCode = AUDIT_EXIT.failed;
    report.window.advanced = false;
    report.errors.push(
      error instanceof AuditLockedError
        ? error.message
        : (error as Error).message.split("\n")[0] ?? "",
    );
  } finally {
    clearTimeout(timer);
  }
  report.finishedAt = new Date().toISOString();
  try {
    if (p.report !== undefined) {
      try {
        await writeFileAtomic(p.report, JSON.stringify(report, null, 2) + "\n", { mode: 0o600 });
      } catch (error) {
        throw new Error(`Cannot write --report "${p.report}": ${(error as Error).message}`);
      }
      report.outputs.report = p.report;
    }
    if (journal !== null && report.window.advanced) {
      journal.setSyncState(WATERMARK_KEY, report.window.until);
    }
  } catch (error) {
    report.result = "failed";
    report.exitCode = AUDIT_EXIT.failed;
    report.window.advanced = false;
    report.errors.push((error as Error).message);
  } finally {
    if (journal !== null) recordLast(journal, report);
    journal?.close();
    lock?.release();
  }
  if (p.json) println(JSON.stringify(report));
  else for (const line of summaryLines(report)) println(line);
  if (report.result === "failed") {
    throw new ExitCode(report.exitCode, `audit failed: ${report.errors.at(-1) ?? "no detail"}`);
  }
  for (const e of report.errors) eprintln(`sentry: warning: ${e}`);
  if (report.exitCode !== AUDIT_EXIT.clean) throw new ExitCode(report.exitCode);
}

/** Adds `sentry audit`. */
export function registerAuditCommand(program: Command): void {
  program.command("audit")
    .description(
      "check what agents did since the last audit, the agents running outside Sentry and the host; for cron, systemd and launchd",
    )
    .option(
      "--since <time>",
      "start of the window (24h, 7d, or an ISO time); default: the last audit",
    )
    .option("--until <time>", "end of the window; default: now (less one second)")
    .option(
      "--fail-on <threshold>",
      "exit 1 on findings at or above: a risk 0-100, deny, or response (default: audit.fail_on, deny)",
    )
    .option("--timeout <duration>", "give up after this long, exit 3 (default: audit.timeout, 5m)")
    .option("--json", "print the report as one JSON object (schema 1, see the README)")
    .option("--report <file>", "also write the JSON report to FILE, atomically, mode 0600")
    .option("--export <dir>", "write the window as a tamper-evident bundle into DIR")
    .option("--sign-key-file <file>", "sign the --export bundle with this shared key")
    .option("--max-findings <n>", "list at most N findings of each type (all are counted)", "1000")
    .option("--no-targets", "do not look for or watch audit.targets")
    .option("--no-host", "skip the host checks")
    .option("--no-sync", "do not upload the outbox")
    .option("--no-outputs", "do not send findings to the configured webhooks and OTLP")
    .action(audit);
}
