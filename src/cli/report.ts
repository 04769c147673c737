import type { Command } from "commander";
import type { AgentEvent } from "../events/mod.ts";
import type { Journal, ResponseRecord, SessionSummary } from "../journal/mod.ts";
import { measuredText, oneLine, responsesByEvent, takenCell } from "./cells.ts";
import { findSession, openForReading } from "./journal_access.ts";
import { paint, printJson, println, printTable } from "./output.ts";
import { shortTime } from "./sessions.ts";
import { inWindow, parseWindow, type TimeWindow } from "./time_window.ts";

/** How many timeline lines a report prints before it folds the middle. */
const TIMELINE_MAX = 60;

/** Everything a report shows, gathered from the journal (also printed with --json). */
export interface Report {
  session: SessionSummary;
  /**
   * The time window the report covers (`--since`, `--until`; either end open), or null for the
   * whole session. The session's own figures (events, denied, highest risk) stay whole-session.
   */
  window: TimeWindow | null;
  counts: { kind: string; count: number; denied: number }[];
  /** Denied actions of the agent's processes. */
  violations: AgentEvent[];
  /**
   * Denied actions no evidence ties to the agent (`pid: null`, poll tier only): listed apart,
   * never counted as violations nor toward the session's risk.
   */
  unattributed: AgentEvent[];
  topRisks: AgentEvent[];
  /**
   * Shadow mode (`--mode monitor`): how many of the violations would have got each response
   * (the events' `would`), such as `{ pause: 2 }`; empty when no event carries one.
   */
  would: Record<string, number>;
  responses: ResponseRecord[];
  timeline: { ts: string; text: string }[];
  sensors: {
    sensor: string;
    emitted: number;
    dropped: number;
    deduplicated: number;
    blindSpots: { id: string; reason: string; count: number }[];
  }[];
}

/** What {@link buildReport} reports on. */
export interface BuildReportOptions {
  session: SessionSummary;
  /** Only what happened in this window; the whole session when absent or empty. */
  window?: TimeWindow;
}

/** Gathers a session's report from the journal, whole or over a time window. */
export function buildReport(journal: Journal, options: BuildReportOptions): Report {
  const { session } = options;
  const window = options.window ?? {};
  const windowed = window.since !== undefined || window.until !== undefined;
  const denied = journal.queryEvents({
    session: session.id,
    verdict: "deny",
    limit: 10_000,
    ...window,
  });
  const violations = denied.filter((e) => e.pid !== null);
  const unattributed = denied.filter((e) => e.pid === null);
  const notable = journal.queryEvents({
    session: session.id,
    kind: ["proc.exec", "proc.exit", "resource.cpu", "resource.memory"],
    limit: 10_000,
    ...window,
  });
  const responses = journal.responses(session.id).filter((r) => inWindow(r.ts, window));
  const byId = new Map<string, AgentEvent>();
  for (const e of [...violations, ...notable]) byId.set(e.id, e);
  const timeline: { ts: string; text: string }[] = [];
  for (const e of [...byId.values()]) {
    const who = e.pid === null ? "unattributed" : `pid ${e.pid}`;
    const measured = e.kind.startsWith("resource.") ? measuredText(e.detail) : "";
    const text = e.verdict === "deny"
      ? `${e.kind} ${e.target}${measured} (${who}): deny, risk ${e.risk}, ${e.rule} -> ${e.response}${
        e.would === undefined ? "" : ` (would: ${e.would})`
      }`
      : e.kind === "proc.exit"
      ? `${e.kind} ${e.target} (${who})${
        typeof e.detail.code === "number" ? ` code ${e.detail.code}` : ""
      }`
      : `${e.kind} ${e.target}${measured} (${who})`;
    timeline.push({ ts: e.ts, text: oneLine(text) });
  }
  for (const r of responses) {
    timeline.push({
      ts: r.ts,
      text: oneLine(`response ${r.action}: ${r.outcome}${describe(r)}`),
    });
  }
  for (const r of journal.policyReloads(session.id)) {
    if (!inWindow(r.ts, window)) continue;
    const by = typeof r.detail.by === "string" ? `, by ${r.detail.by}` : "";
    timeline.push({
      ts: r.ts,
      text: oneLine(
        r.outcome === "applied"
          ? `policy reload: ${r.policy} applied (sha256 ${r.oldHash.slice(0, 12)} -> ${
            (r.newHash ?? "").slice(0, 12)
          }${by})`
          : `policy reload: ${r.policy} refused${by}: ${String(r.detail.reason ?? "")}`,
      ),
    });
  }
  timeline.sort((a, b) => a.ts.localeCompare(b.ts));
  const would: Record<string, number> = {};
  for (const e of violations) if (e.would !== undefined) would[e.would] = (would[e.would] ?? 0) + 1;
  let counts: Report["counts"];
  let topRisks: AgentEvent[];
  if (windowed) {
    // The journal counts whole sessions: over a window, count the window's events.
    const all = journal.queryEvents({ session: session.id, limit: 10_000_000, ...window });
    const byKind = new Map<string, { kind: string; count: number; denied: number }>();
    for (const e of all) {
      let c = byKind.get(e.kind);
      if (c === undefined) byKind.set(e.kind, c = { kind: e.kind, count: 0, denied: 0 });
      c.count++;
      if (e.verdict === "deny") c.denied++;
    }
    counts = [...byKind.values()].sort((a, b) => b.count - a.count || a.kind.localeCompare(b.kind));
    topRisks = all.filter((e) => e.pid !== null && e.risk > 0)
      .sort((a, b) => b.risk - a.risk || a.ts.localeCompare(b.ts)).slice(0, 10);
  } else {
    counts = journal.countsByKind(session.id);
    topRisks = journal.topRisks(session.id, 10 + unattributed.length)
      .filter((e) => e.pid !== null).slice(0, 10);
  }
  return {
    session,
    window: windowed ? window : null,
    counts,
    violations,
    unattributed,
    topRisks,
    would,
    responses,
    timeline,
    sensors: journal.sensorStats(session.id).map((r) => ({
      sensor: r.sensor,
      emitted: r.stats.emitted,
      dropped: r.stats.dropped,
      deduplicated: r.stats.deduplicated,
      blindSpots: r.stats.blindSpots,
    })),
  };
}

function describe(r: ResponseRecord): string {
  const d = r.detail;
  const list = (key: string) => Array.isArray(d[key]) ? (d[key] as unknown[]).length : null;
  const parts: string[] = [];
  for (const key of ["stopped", "resumed", "killed", "forced", "failed"]) {
    const n = list(key);
    if (n !== null && n > 0) parts.push(`${n} ${key}`);
  }
  if (typeof d.path === "string") {
    parts.push(`${typeof d.op === "string" ? d.op + " " : ""}${d.path}`);
  }
  if (typeof d.reason === "string") parts.push(d.reason);
  for (const key of ["restored", "recreated", "removed"]) {
    if (typeof d[key] === "number" && (d[key] as number) > 0) parts.push(`${d[key]} ${key}`);
  }
  if (typeof d.by === "string") parts.push(`by ${d.by}`);
  if (typeof d.fallback === "string") parts.push(`fell back to ${d.fallback}`);
  return parts.length > 0 ? ` (${parts.join(", ")})` : "";
}

function elapsed(from: string, to: string): string {
  const ms = Date.parse(to) - Date.parse(from);
  return `+${(ms / 1000).toFixed(3)}s`;
}

/** Prints a report for people. */
export function printReport(report: Report): void {
  const s = report.session;
  const duration = s.endedAt === null
    ? "still running"
    : `${((Date.parse(s.endedAt) - Date.parse(s.startedAt)) / 1000).toFixed(1)} s`;
  println(paint(`Session ${s.id}`, "bold"));
  println(oneLine(`  agent ${s.agent}: ${s.command.join(" ") || "(unknown command)"}`));
  println(
    oneLine(`  ${s.kind} under policy ${s.policy} (mode ${s.mode}), workspace ${s.workspace}`),
  );
  println(`  sensing tier: ${s.tier ?? "unknown (journaled before tiers)"}`);
  println(
    `  started ${shortTime(s.startedAt)}, ${
      s.endedAt === null ? "" : `ended ${shortTime(s.endedAt)}, `
    }${duration}; ` +
      `state ${s.state}${s.exitCode === null ? "" : `, exit code ${s.exitCode}`}${
        s.note === null ? "" : ` (${oneLine(s.note)})`
      }`,
  );
  println(
    `  ${s.events} events, ${s.denied} denied, highest risk ${s.maxRisk}, ${s.responses} responses`,
  );
  if (report.window !== null) {
    const w = report.window;
    println(
      `  this report covers ${w.since === undefined ? "the start" : shortTime(w.since)} to ${
        w.until === undefined ? "now" : shortTime(w.until)
      } only: ${report.violations.length} violations, ${report.responses.length} responses in it`,
    );
  }

  println();
  println(paint("Actions by kind", "bold"));
  if (report.counts.length === 0) println("  none recorded");
  else {printTable([
      ["  KIND", "EVENTS", "DENIED"],
      ...report.counts.map((c) => [`  ${c.kind}`, String(c.count), String(c.denied)]),
    ]);}

  println();
  const taken = responsesByEvent(report.responses);
  println(paint(`Violations (${report.violations.length})`, "bold"));
  if (report.violations.length === 0) println("  none");
  else {
    printTable([
      ["  TIME", "RISK", "RESPONSE", "TAKEN", "KIND", "PID", "RULE", "TARGET"],
      ...report.violations.map((e) => [
        `  ${elapsed(s.startedAt, e.ts)}`,
        String(e.risk),
        e.would === undefined ? e.response : `${e.response} (would: ${e.would})`,
        takenCell(taken.get(e.id) ?? []),
        e.kind,
        String(e.pid ?? "?"),
        oneLine(e.rule),
        oneLine(e.target),
      ]),
    ]);
  }

  const would = Object.entries(report.would);
  if (would.length > 0) {
    println(
      `  shadow mode: the policy would have answered ${
        would.map(([r, n]) => `${n} with ${r}`).join(", ")
      }; none was taken`,
    );
  }

  if (report.unattributed.length > 0) {
    println();
    println(
      paint(`Unattributed (${report.unattributed.length}), not counted as violations`, "bold"),
    );
    println("  file events no evidence ties to the agent: another program may have acted");
    for (const e of report.unattributed.slice(0, 20)) {
      println(`  ${elapsed(s.startedAt, e.ts)}  ${e.kind} ${oneLine(e.target)} (${e.rule})`);
    }
  }

  println();
  println(paint("Top risks", "bold"));
  if (report.topRisks.length === 0) println("  none");
  for (const e of report.topRisks) {
    const factors = e.factors.map((f) => `${f.id} ${f.points > 0 ? "+" : ""}${f.points}`).join(
      ", ",
    );
    println(
      `  ${String(e.risk).padStart(3)}  ${e.kind} ${
        oneLine(e.target)
      } (${e.verdict}, ${e.rule}): ${factors}`,
    );
  }

  println();
  println(paint("Timeline", "bold"));
  const lines = report.timeline;
  const show = lines.length <= TIMELINE_MAX
    ? lines
    : [...lines.slice(0, TIMELINE_MAX / 2), null, ...lines.slice(-TIMELINE_MAX / 2)];
  if (lines.length === 0) println("  nothing notable");
  for (const line of show) {
    if (line === null) {
      println(`  ... ${lines.length - TIMELINE_MAX} more (sentry events --session ${s.id})`);
    } else println(`  ${elapsed(s.startedAt, line.ts).padStart(10)}  ${line.text}`);
  }

  println();
  println(paint("What the sensors could not see", "bold"));
  if (report.sensors.length === 0) {
    println("  no sensor counters were saved (Sentry may have been killed early)");
  }
  for (const sensor of report.sensors) {
    println(
      `  ${sensor.sensor}: ${sensor.emitted} events, ${sensor.dropped} dropped, ${sensor.deduplicated} repeats folded`,
    );
    for (const spot of sensor.blindSpots) println(`    ${spot.count} ${spot.id}: ${spot.reason}`);
  }
  println(
    "  always: file opens, connections and processes shorter than one polling interval can be missed by polling;" +
      " the counts above bound them where the kernel offers a counter",
  );
}

/** Adds `sentry report`. */
export function registerReportCommand(program: Command): void {
  program.command("report").description(
    "summarise a session: counts, violations, top risks, timeline, blind spots",
  )
    .argument("<session>", "a session id, a unique prefix, or last")
    .option("--since <time>", "only what happened from a time: ISO (2026-12-06T14:30) or ago (2h)")
    .option("--until <time>", "only what happened before a time: ISO or ago, as --since")
    .option("--json", "print the report as one JSON object")
    .action((ref: string, opts: { json?: boolean; since?: string; until?: string }) => {
      const window = parseWindow(opts);
      const { journal } = openForReading();
      try {
        const report = buildReport(journal, { session: findSession(journal, ref), window });
        if (opts.json) printJson(report);
        else printReport(report);
      } finally {
        journal.close();
      }
    });
}
