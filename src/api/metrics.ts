/**
 * `GET /metrics` in the Prometheus text format (version 0.0.4).
 *
 * @module
 */

import type { AgentEvent } from "../events/mod.ts";
import type { JournalMetrics } from "../journal/mod.ts";
import type { LiveSource } from "./live.ts";
import type { SensorStatus } from "./schemas.ts";
import type { z } from "zod";

/** Counts live events by kind, verdict and response from the moment it subscribes. */
export interface EventCounter {
  /** Counts by `kind\u0000verdict\u0000response`. */
  readonly counts: ReadonlyMap<string, number>;
  /** Stops counting. */
  close(): void;
}

/**
 * Subscribes to a live source and counts its events. Counters start at zero with the process,
 * as Prometheus counters do; Prometheus's `rate()` and `increase()` handle the resets.
 */
export function countEvents(live: LiveSource): EventCounter {
  const counts = new Map<string, number>();
  const unsubscribe = live.subscribe((e: AgentEvent) => {
    const key = `${e.kind}\u0000${e.verdict}\u0000${e.response}`;
    counts.set(key, (counts.get(key) ?? 0) + 1);
  });
  return { counts, close: unsubscribe };
}

/** A sensor's counters in a session. */
export interface SessionSensor {
  session: string;
  stats: z.infer<typeof SensorStatus>;
}

/** What {@link renderMetrics} reports. */
export interface MetricsInput {
  /** This process's journal write figures; none: their families are left out (a remote store). */
  writes?: JournalMetrics;
  events: EventCounter;
  /** The sensors of live sessions. */
  sensors: readonly SessionSensor[];
  /** Live sessions and the sensing tier that watches each (null: journaled before tiers). */
  live?: readonly { session: string; tier: string | null }[];
  uptimeMs: number;
  /** More families, as Prometheus text lines, written last (the collector's hosts). */
  extra?: readonly string[];
}

function label(value: string): string {
  return value.replace(/\\/g, "\\\\").replace(/\n/g, "\\n").replace(/"/g, '\\"');
}

function num(value: number): string {
  return Number.isFinite(value) ? String(value) : "NaN";
}

/** Renders the metrics as Prometheus text: HELP and TYPE lines, then samples. */
export function renderMetrics(input: MetricsInput): string {
  const lines: string[] = [];
  const family = (name: string, type: string, help: string): void => {
    lines.push(`# HELP ${name} ${help}`, `# TYPE ${name} ${type}`);
  };

  family("sentry_uptime_seconds", "gauge", "Seconds since this API started.");
  lines.push(`sentry_uptime_seconds ${num(input.uptimeMs / 1000)}`);

  family(
    "sentry_events_total",
    "counter",
    "Events seen live since this API started, by kind, verdict and response.",
  );
  for (const [key, count] of [...input.events.counts].sort(([a], [b]) => a.localeCompare(b))) {
    const [kind = "", verdict = "", response = ""] = key.split("\u0000");
    lines.push(
      `sentry_events_total{kind="${label(kind)}",verdict="${label(verdict)}",response="${
        label(response)
      }"} ${count}`,
    );
  }

  family(
    "sentry_session_tier",
    "gauge",
    "1 for each live session, labelled with the sensing tier that watches it.",
  );
  for (const s of input.live ?? []) {
    lines.push(
      `sentry_session_tier{session="${label(s.session)}",tier="${label(s.tier ?? "unknown")}"} 1`,
    );
  }

  family("sentry_sensor_dropped_total", "counter", "Events a sensor lost, per live session.");
  for (const s of input.sensors) {
    lines.push(
      `sentry_sensor_dropped_total{session="${label(s.session)}",sensor="${
        label(s.stats.sensor)
      }"} ${num(s.stats.dropped)}`,
    );
  }
  family("sentry_sensor_lag_seconds", "gauge", "How far behind a sensor ran at its last poll.");
  for (const s of input.sensors) {
    lines.push(
      `sentry_sensor_lag_seconds{session="${label(s.session)}",sensor="${label(s.stats.sensor)}"} ${
        num(s.stats.lagMs / 1000)
      }`,
    );
  }

  const m = input.writes;
  if (m !== undefined) {
    family(
      "sentry_journal_write_seconds",
      "summary",
      "Latency of this process's journal batch transactions, over the recent batches.",
    );
    lines.push(
      `sentry_journal_write_seconds{quantile="0.5"} ${num(m.p50BatchMs / 1000)}`,
      `sentry_journal_write_seconds{quantile="0.99"} ${num(m.p99BatchMs / 1000)}`,
      `sentry_journal_write_seconds{quantile="1"} ${num(m.maxBatchMs / 1000)}`,
      `sentry_journal_write_seconds_count ${m.batches}`,
    );
    const counters: [string, string, number][] = [
      ["sentry_journal_events_written_total", "Events this process wrote.", m.eventsWritten],
      ["sentry_journal_rejected_total", "Rows the database refused.", m.rejected],
      ["sentry_journal_dropped_total", "Appends refused with a full buffer.", m.dropped],
      ["sentry_journal_write_errors_total", "Batches that failed to commit.", m.writeErrors],
    ];
    for (const [name, help, value] of counters) {
      family(name, "counter", help);
      lines.push(`${name} ${value}`);
    }
    family("sentry_journal_pending", "gauge", "Events and responses buffered, not yet written.");
    lines.push(`sentry_journal_pending ${m.pending}`);
  }
  lines.push(...input.extra ?? []);
  return `${lines.join("\n")}\n`;
}
