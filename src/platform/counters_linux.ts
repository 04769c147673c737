/**
 * Host counters that let the polling sensors count what they could not see: the last pid the
 * kernel allocated, and how many TCP connections were opened.
 * @module
 */

/** The last allocated pid: the fifth field of /proc/loadavg, as in `0.00 0.01 0.05 1/123 4567`. */
export function parseLoadavgLastPid(text: string): number | null {
  const field = text.trim().split(/\s+/)[4];
  return field !== undefined && /^\d+$/.test(field) ? Number(field) : null;
}

/** The TCP `ActiveOpens` counter from the text of /proc/net/snmp (a header line, then values). */
export function parseSnmpActiveOpens(text: string): number | null {
  const lines = text.split("\n").filter((l) => l.startsWith("Tcp:"));
  const [header, values] = lines;
  if (header === undefined || values === undefined) return null;
  const index = header.split(/\s+/).indexOf("ActiveOpens");
  const value = values.split(/\s+/)[index];
  return index < 0 || value === undefined || !/^\d+$/.test(value) ? null : Number(value);
}

/** Reads the last allocated pid, or null when /proc/loadavg cannot be read. */
export function readLastPid(): number | null {
  try {
    return parseLoadavgLastPid(Deno.readTextFileSync("/proc/loadavg"));
  } catch {
    return null;
  }
}

/** Reads the TCP active opens of a process's network namespace, or null. */
export function readTcpActiveOpens(pid: number): number | null {
  try {
    return parseSnmpActiveOpens(Deno.readTextFileSync(`/proc/${pid}/net/snmp`));
  } catch {
    return null;
  }
}
