import type { Command } from "commander";
import type { AgentEvent } from "../events/mod.ts";
import type { Journal, ResponseRecord, SessionSummary } from "../journal/mod.ts";
import { findSession, openForReading } from "./journal_access.ts";
import { paint, printJson, println, printTable } from "./output.ts";
import { shortTime } from "./sessions.ts";

/** How many timeline lines a report prints before it folds the middle. */
const TIMELINE_MAX = 60;

/** Everything a report shows, gathered from the journal (also printed with --json). */
export interface Report {
  session: SessionSummary;
  counts: { kind: string; count: number; denied: number }[];
  /** Denied actions of the agent's processes. */
  violations: AgentEvent[];
  /**
   * Denied actions no evidence ties to the agent (`pid: null`, poll tier only): listed apart,
   * never counted as violations nor toward the session's risk.
   */
  unattributed: AgentEvent[];
  topRisks: AgentEvent[];
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

/** Gathers a session's report from the journal. */
export function buildReport(journal: Journal, session: SessionSummary): Report {
  const denied = journal.queryEvents({ session: session.id, verdict: "deny", limit: 10_000 });
  const violations = denied.filter((e) => e.pid !== null);
  const unattributed = denied.filter((e) => e.pid === null);
  const notable = journal.queryEvents({
    session: session.id,
    kind: ["proc.exec", "proc.exit", "resource.cpu", "resource.memory"],
    limit: 10_000,
  });
  const responses = journal.responses(session.id);
  const byId = new Map<string, AgentEvent>();
  for (const e of [...violations, ...notable]) byId.set(e.id, e);
  const timeline: { ts: string; text: string }[] = [];
  for (const e of [...byId.values()]) {
    const who = e.pid === null ? "unattributed" : `pid ${e.pid}`;
    const measured = e.kind.startsWith("resource.") ? resourceText(e.detail) : "";
    const text = e.verdict === "deny"
      ? `${e.kind} ${e.target}${measured} (${who}): deny, risk ${e.risk}, ${e.rule} -> ${e.response}`
      : e.kind === "proc.exit"
      ? `${e.kind} ${e.target} (${who})${
        typeof e.detail.code === "number" ? ` code ${e.detail.code}` : ""
      }`
      : `${e.kind} ${e.target}${measured} (${who})`;
    timeline.push({ ts: e.ts, text });
  }
  for (const r of responses) {
    timeline.push({ ts: r.ts, text: `response ${r.action}: ${r.outcome}${describe(r)}` });
  }
  timeline.sort((a, b) => a.ts.localeCompare(b.ts));
  return {
    session,
    counts: journal.countsByKind(session.id),
    violations,
    unattributed,
    topRisks: journal.topRisks(session.id, 10 + unattributed.length)
      .filter((e) => e.pid !== null).slice(0, 10),
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

/**
 * What a CPU spike or memory excursion measured, for the timeline: `: 99.2% CPU (peak 100%) for
 * 3.9 s` (percent of one core) or `: 2600 MB (peak 3500 MB) for 2.5 s`, with `, ongoing` when it
 * was journaled before its end.
 */
function resourceText(d: Record<string, unknown>): string {
  const n = (key: string) => typeof d[key] === "number" ? d[key] as number : null;
  const [value, peak, seconds] = [
    n("percent") ?? n("mb"),
    n("peak_percent") ?? n("peak_mb"),
    n("duration_seconds"),
  ];
  if (value === null) return "";
  const unit = n("percent") !== null ? "% CPU" : " MB";
  const peakUnit = n("percent") !== null ? "%" : " MB";
  return `: ${value}${unit}${peak === null ? "" : ` (peak ${peak}${peakUnit})`}${
    seconds === null ? "" : ` for ${seconds} s`
  }${d.ongoing === true ? ", ongoing" : ""}`;
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
  println(`  agent ${s.agent}: ${s.command.join(" ") || "(unknown command)"}`);
  println(`  ${s.kind} under policy ${s.policy} (mode ${s.mode}), workspace ${s.workspace}`);
  println(`  sensing tier: ${s.tier ?? "unknown (journaled before tiers)"}`);
  println(
    `  started ${shortTime(s.startedAt)}, ${
      s.endedAt === null ? "" : `ended ${shortTime(s.endedAt)}, `
    }${duration}; ` +
      `state ${s.state}${s.exitCode === null ? "" : `, exit code ${s.exitCode}`}${
        s.note === null ? "" : ` (${s.note})`
      }`,
  );
  println(
    `  ${s.events} events, ${s.denied} denied, highest risk ${s.maxRisk}, ${s.responses} responses`,
  );

  println();
  println(paint("Actions by kind", "bold"));
  if (report.counts.length === 0) println("  none recorded");
  else {printTable([
      ["  KIND", "EVENTS", "DENIED"],
      ...report.counts.map((c) => [`  ${c.kind}`, String(c.count), String(c.denied)]),
    ]);}

  println();
  println(paint(`Violations (${report.violations.length})`, "bold"));
  if (report.violations.length === 0) println("  none");
  else {
    printTable([
      ["  TIME", "RISK", "RESPONSE", "KIND", "PID", "RULE", "TARGET"],
      ...report.violations.map((e) => [
        `  ${elapsed(s.startedAt, e.ts)}`,
        String(e.risk),
        e.response,
        e.kind,
        String(e.pid ?? "?"),
        e.rule,
        e.target,
      ]),
    ]);
  }

  if (report.unattributed.length > 0) {
    println();
    println(
      paint(`Unattributed (${report.unattributed.length}), not counted as violations`, "bold"),
    );
    println("  file events no evidence ties to the agent: another program may have acted");
    for (const e of report.unattributed.slice(0, 20)) {
      println(`  ${elapsed(s.startedAt, e.ts)}  ${e.kind} ${e.target} (${e.rule})`);
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
      `  ${
        String(e.risk).padStart(3)
      }  ${e.kind} ${e.target} (${e.verdict}, ${e.rule}): ${factors}`,
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
    .option("--json", "print the report as one JSON object")
    .action((ref: string, opts: { json?: boolean }) => {
      const { journal } = openForReading();
      try {
        const report = buildReport(journal, findSession(journal, ref));
        if (opts.json) printJson(report);
        else printReport(report);
      } finally {
        journal.close();
      }
    });
}
