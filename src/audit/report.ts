/**
 * The audit's report: one JSON document with a stable schema (`schema: 1`, documented in the
 * README under "The audit report"), and its human summary.
 *
 * @module
 */

import type { FailOn, Finding } from "./findings.ts";
import type { WindowSource } from "./window.ts";

/** The report's schema version: fields are only added within a version. */
export const AUDIT_SCHEMA = 1;

/** The audit's exit codes. */
export const AUDIT_EXIT = { clean: 0, findings: 1, usage: 2, failed: 3 } as const;

/** A host check, as `sentry doctor` reports it. */
export interface HostCheck {
  id: string;
  title: string;
  status: "ok" | "warn" | "fail" | "skip";
  detail: string;
}

/** What the audit saw of one target. */
export interface TargetReport {
  name: string;
  policy: string;
  /** Whether any process matched. */
  found: boolean;
  matches: {
    pid: number;
    command: string[];
    session: string | null;
    events: number;
    denied: number;
    maxRisk: number;
    error: string | null;
  }[];
}

/** A session with findings in the window. */
export interface SessionReport {
  id: string;
  agent: string;
  kind: string;
  state: string;
  startedAt: string;
  findings: number;
  failing: number;
}

/** The audit report (`sentry audit --json`, `--report FILE`). */
export interface AuditReport {
  schema: typeof AUDIT_SCHEMA;
  sentry: { version: string; host: string };
  startedAt: string;
  finishedAt: string;
  window: { since: string | null; until: string; source: WindowSource; advanced: boolean };
  failOn: FailOn;
  /** `clean` (exit 0), `findings` (exit 1) or `failed` (exit 3). */
  result: "clean" | "findings" | "failed";
  exitCode: number;
  counts: { findings: number; failing: number; sessions: number; listed: number };
  /** Whether `findings` lists fewer than `counts.findings`. */
  truncated: boolean;
  findings: Finding[];
  sessions: SessionReport[];
  targets: TargetReport[];
  host: { checks: HostCheck[]; syncBacklog: number | null; storeBytes: number | null } | null;
  outputs: {
    report: string | null;
    export:
      | { path: string; events: number; sessions: number; head: string; signed: boolean }
      | null;
    sync: { ok: boolean; accepted: number; pending: number; reason: string | null } | null;
    alerts: { sent: number; failed: number; dropped: number } | null;
  };
  /** Why the audit failed (exit 3), or problems that did not stop it. */
  errors: string[];
}

function describeFailOn(failOn: FailOn): string {
  return typeof failOn === "number" ? `risk >= ${failOn}` : failOn;
}

/** The human summary, as lines without colour. */
export function summaryLines(report: AuditReport): string[] {
  const lines: string[] = [];
  const since = report.window.since ?? "the beginning";
  lines.push(
    `sentry audit: ${report.result.toUpperCase()} (exit ${report.exitCode}); ` +
      `window ${since} to ${report.window.until} (${report.window.source})`,
  );
  lines.push(
    `findings: ${report.counts.findings} (${report.counts.failing} at or above ` +
      `--fail-on ${describeFailOn(report.failOn)}) in ${report.counts.sessions} session(s)`,
  );
  for (const f of report.findings) {
    const mark = f.failing ? "FAIL" : "note";
    const risk = f.risk === null ? "" : ` risk ${f.risk}`;
    const where = f.session === null ? "" : ` [${f.session.slice(-8)}]`;
    const when = f.ts === null ? "" : ` ${f.ts}`;
    lines.push(`  ${mark} ${f.type}${risk}${where}${when} ${f.summary.replace(/\s+/g, " ")}`);
  }
  if (report.truncated) {
    lines.push(`  ... ${report.counts.findings - report.counts.listed} more (see --json)`);
  }
  for (const t of report.targets) {
    if (!t.found) {
      lines.push(`target ${t.name}: not running`);
      continue;
    }
    for (const m of t.matches) {
      lines.push(
        `target ${t.name}: pid ${m.pid} watched under ${t.policy}` +
          (m.error !== null
            ? `: ${m.error}`
            : `: ${m.events} event(s), ${m.denied} denied, max risk ${m.maxRisk}, session ${m.session}`),
      );
    }
  }
  if (report.host !== null) {
    const bad = report.host.checks.filter((c) => c.status === "fail" || c.status === "warn");
    const ok = report.host.checks.length - bad.length;
    lines.push(`host: ${ok} check(s) ok${bad.length > 0 ? `, ${bad.length} not` : ""}`);
    for (const c of bad) lines.push(`  ${c.status} ${c.title}: ${c.detail}`);
  }
  const o = report.outputs;
  if (o.report !== null) lines.push(`report: ${o.report}`);
  if (o.export !== null) {
    lines.push(
      `export: ${o.export.path} (${o.export.events} events, ${o.export.sessions} sessions, ` +
        `chain head ${o.export.head}${o.export.signed ? ", signed" : ""})`,
    );
  }
  if (o.sync !== null) {
    lines.push(
      o.sync.ok
        ? `sync: ${o.sync.accepted} event(s) uploaded; the outbox is empty`
        : `sync: not finished (${o.sync.reason ?? "no detail"}); ${o.sync.pending} pending`,
    );
  }
  if (o.alerts !== null) {
    lines.push(
      `alerts: ${o.alerts.sent} sent, ${o.alerts.failed} failed, ${o.alerts.dropped} dropped`,
    );
  }
  for (const e of report.errors) lines.push(`error: ${e}`);
  return lines;
}
