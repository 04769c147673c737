/**
 * A loopback OTLP/HTTP logs receiver, run as a Worker by bench/otlp_bench.ts so that receiving
 * does not share the exporter's thread. It counts records, notes when each event id arrived
 * (ms since the epoch, comparable across threads), and checks the first requests against the
 * OTLP JSON encoding. Private to bench/.
 *
 * Messages in: `{ type: "start" }`, `{ type: "reset" }`, `{ type: "report" }`, `{ type: "stop" }`.
 * Messages out: `{ type: "listening", port }`, `{ type: "report", records, requests, arrivals,
 * problems }`, `{ type: "stopped" }`.
 * @module
 */
/// <reference lib="deno.worker" />
import { otlpLogsProblems } from "../src/outputs/_otlp_check.ts";

/** Requests checked in full against the encoding; the rest are only counted. */
const CHECKED = 20;

let records = 0;
let requests = 0;
let arrivals: [string, number][] = [];
const problems: string[] = [];
let server: Deno.HttpServer | null = null;

function now(): number {
  return performance.timeOrigin + performance.now();
}

function receive(body: unknown): void {
  const at = now();
  requests++;
  if (requests <= CHECKED) problems.push(...otlpLogsProblems(body));
  const resourceLogs = (body as { resourceLogs: { scopeLogs: { logRecords: unknown[] }[] }[] })
    .resourceLogs;
  for (const rl of resourceLogs) {
    for (const sl of rl.scopeLogs) {
      for (const record of sl.logRecords as { attributes: { key: string; value: unknown }[] }[]) {
        records++;
        const id = record.attributes.find((a) => a.key === "sentry.event.id")?.value as
          | { stringValue: string }
          | undefined;
        if (id !== undefined) arrivals.push([id.stringValue, at]);
      }
    }
  }
}

self.onmessage = async (message: MessageEvent<{ type: string }>) => {
  switch (message.data.type) {
    case "start":
      server = Deno.serve({
        hostname: "127.0.0.1",
        port: 0,
        onListen: ({ port }) => self.postMessage({ type: "listening", port }),
      }, async (request) => {
        receive(await request.json());
        return Response.json({});
      });
      return;
    case "reset":
      records = 0;
      requests = 0;
      arrivals = [];
      return;
    case "report":
      self.postMessage({ type: "report", records, requests, arrivals, problems });
      return;
    case "stop":
      await server?.shutdown();
      self.postMessage({ type: "stopped" });
      return;
  }
};
