/**
 * The OTLP export of `sentry server`: every event the collector stores goes on to the
 * `outputs.otlp` of the config file, under the host that uploaded it. What is lost is said on
 * stderr as it grows and summed up at shutdown, never silently.
 *
 * @module
 */

import { type OtlpConfig, redactUrl } from "../config/mod.ts";
import type { IngestedBatch } from "../collector/mod.ts";
import { createOutputs, type OutputStats } from "../outputs/mod.ts";

/** What {@link startCollectorExport} needs. */
export interface CollectorExportOptions {
  /** Where lines for the operator go (stderr in `sentry server`). */
  report: (message: string) => void;
  /** How often a growing loss is reported; default 60 s. */
  reportEveryMs?: number;
}

/** The running export: the collector's `onIngested` hook, counters, and shutdown. */
export interface CollectorExport {
  onIngested(batch: IngestedBatch): void;
  stats(): OutputStats[];
  /** Delivers what is queued within `timeoutMs`, then reports the totals. */
  close(timeoutMs?: number): Promise<void>;
}

function lost(s: OutputStats): number {
  return s.dropped + s.failed + s.rejected;
}

function describe(s: OutputStats): string {
  return `${s.sent} sent, ${s.dropped} dropped, ${s.failed} failed, ${s.rejected} rejected, ` +
    `${s.retries} retries`;
}

/** Starts the export when `otlp` is configured; null otherwise. */
export function startCollectorExport(
  otlp: OtlpConfig | undefined,
  options: CollectorExportOptions,
): CollectorExport | null {
  if (otlp === undefined) return null;
  const outputs = createOutputs({ otlp }, {
    onWarning: (message) => options.report(`otlp export: ${message}`),
  });
  options.report(
    `exporting every stored event as OTLP logs to ${redactUrl(otlp.endpoint) ?? otlp.endpoint}`,
  );
  let reported = 0;
  const check = setInterval(() => {
    const [s] = outputs.stats();
    if (s === undefined || lost(s) === reported) return;
    reported = lost(s);
    options.report(`otlp export: events not delivered so far: ${describe(s)}`);
  }, options.reportEveryMs ?? 60_000);
  return {
    onIngested(batch) {
      const origin = { hostId: batch.hostId, hostName: batch.hostName };
      for (const event of batch.events) outputs.publishFrom(event, origin);
    },
    stats: () => outputs.stats(),
    async close(timeoutMs = 5_000) {
      clearInterval(check);
      await outputs.close({ timeoutMs });
      const [s] = outputs.stats();
      if (s !== undefined) options.report(`otlp export: ${describe(s)}`);
    },
  };
}
