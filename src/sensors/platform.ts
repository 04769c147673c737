/**
 * What the polling sensors need from the operating system, as one injected interface. The Linux
 * implementation lives in `src/platform/`; tests can substitute their own.
 * @module
 */

/** The parts of /proc/PID/stat the sensors use. */
export interface ProcStatView {
  pid: number;
  comm: string;
  /** The state letter: R, S, D, T, t, Z, X... */
  state: string;
  ppid: number;
  pgrp: number;
  session: number;
  /** User plus system CPU time, in clock ticks. */
  cpuTicks: number;
  /** Start time after boot, in clock ticks: with the pid, it names a process uniquely. */
  startTicks: number;
  /** Resident memory, in bytes. */
  rssBytes: number;
}

/** One open file descriptor. */
export interface FdView {
  fd: number;
  /** The readlink target: a path, `socket:[inode]`, `pipe:[inode]`, `anon_inode:...`. */
  target: string;
}

/** How a file descriptor was opened. */
export interface FdFlagsView {
  access: "read" | "write" | "readwrite";
  append: boolean;
}

/** One socket from /proc/net/{tcp,tcp6,udp,udp6}. */
export interface SocketView {
  proto: "tcp" | "tcp6" | "udp" | "udp6";
  localIp: string;
  localPort: number;
  remoteIp: string;
  remotePort: number;
  /** `ESTABLISHED`, `SYN_SENT`, `LISTEN`, ... (UDP reports `ESTABLISHED` when connected, `CLOSE` otherwise). */
  state: string;
  inode: number;
}

/** A read that can fail because the process is gone or we may not look. */
export type Probe<T> = { ok: true; value: T } | { ok: false; reason: "gone" | "denied" | "error" };

/** The operating-system calls of the polling sensors. */
export interface ProcPlatform {
  /** Every pid in /proc. */
  listPids(): number[];
  readStat(pid: number): ProcStatView | null;
  readCmdline(pid: number): string[] | null;
  readExe(pid: number): string | null;
  readCwd(pid: number): string | null;
  listFds(pid: number): Probe<FdView[]>;
  readFdFlags(pid: number, fd: number): FdFlagsView | null;
  /** The sockets of the network namespace that `pid` lives in. */
  readSockets(pid: number): SocketView[];
  /** The most recently allocated pid on the host (from /proc/loadavg), or null. */
  lastPid(): number | null;
  /** Host-wide count of active TCP opens (from /proc/PID/net/snmp), or null. */
  tcpActiveOpens(pid: number): number | null;
  /** Clock ticks per second, for CPU time. */
  clockTicks(): number;
  /** Reaps an adopted zombie child of this process, returning its exit status, or null. */
  reap(pid: number): { code: number | null; signal: number | null } | null;
}
