/**
 * Shared parts of the learn and backtest benchmarks: a one-session journal of the API
 * benchmarks' event mix, read back page by page, and the process's memory. Private to bench/.
 * @module
 */
import type { AgentEvent } from "../src/events/mod.ts";
import type { Journal } from "../src/journal/mod.ts";

/** Events per journal query, as `policy learn` and `policy test --session` read them. */
export const PAGE = 5000;

/** Reads a session's events oldest first, a page at a time, and hands each to `fn`. */
export function forEachEvent(
  journal: Journal,
  session: string,
  fn: (event: AgentEvent) => void,
): number {
  let after: string | undefined;
  let n = 0;
  while (true) {
    const page = journal.queryEvents({
      session,
      limit: PAGE,
      ...(after === undefined ? {} : { after }),
    });
    for (const e of page) fn(e);
    n += page.length;
    if (page.length < PAGE) return n;
    after = page[page.length - 1]?.id;
  }
}

/** The process's resident memory now and its peak so far, in MB, from /proc/self/status. */
export function residentMb(): { rss: number; peak: number } {
  const status = Deno.readTextFileSync("/proc/self/status");
  const kb = (key: string) =>
    Number(new RegExp(`^${key}:\\s+(\\d+) kB`, "m").exec(status)?.[1] ?? NaN);
  return { rss: kb("VmRSS") / 1024, peak: kb("VmHWM") / 1024 };
}
