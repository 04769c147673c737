/**
 * Reading processes through Linux's /proc: pure parsers over the text of /proc files, and thin
 * readers that fetch one file each.
 *
 * The readers are synchronous on purpose. /proc files are generated in memory by the kernel, so a
 * read never waits on a disk, and a sync read costs a few microseconds where an async one costs a
 * trip through the runtime's thread pool. A sensor that scans every process each tick makes
 * thousands of these calls.
 *
 * A process can exit between any two reads. Readers treat that as an ordinary outcome: they return
 * `null` (or a failed {@link ProcResult}) and never throw for it. They throw only for what looks
 * like a bug, such as text that does not parse.
 *
 * @module
 */

/** Why a read from /proc failed: the process is gone, access was refused, or something else. */
export type FailureReason = "gone" | "denied" | "error";

/**
 * The outcome of a reader whose caller needs to tell "the process is gone" from "we may not look"
 * (for example a process of another user, or Deno without `--allow-read`): the first is routine,
 * the second is a blind spot the sensor should report.
 */
export type ProcResult<T> =
  | { ok: true; value: T }
  | { ok: false; reason: FailureReason; message: string };

/**
 * Classifies an error thrown by a `Deno.*` call on /proc or by `Deno.kill`: ENOENT and ESRCH mean
 * the process is gone, EACCES, EPERM and a missing Deno permission mean denied.
 */
export function failureReason(error: unknown): FailureReason {
  if (error instanceof Deno.errors.NotFound) return "gone";
  if (error instanceof Deno.errors.PermissionDenied || error instanceof Deno.errors.NotCapable) {
    return "denied";
  }
  if (error instanceof Error) {
    // Deno has no error class for ESRCH, which /proc returns when a process dies mid-read.
    const code = (error as { code?: unknown }).code;
    if (code === "ESRCH" || /\bESRCH\b|\(os error 3\)/.test(error.message)) return "gone";
  }
  return "error";
}

function failure(error: unknown): { ok: false; reason: FailureReason; message: string } {
  const message = error instanceof Error ? error.message : String(error);
  return { ok: false, reason: failureReason(error), message };
}

/** Runs a read; gone or denied become `null`, anything else is rethrown. */
function orNull<T>(read: () => T): T | null {
  try {
    return read();
  } catch (error: unknown) {
    if (failureReason(error) === "error") throw error;
    return null;
  }
}

// ---------------------------------------------------------------------------------------------
// /proc/PID/stat

/** The fields Sentry uses from /proc/PID/stat (see proc(5); times are in clock ticks). */
export interface ProcStat {
  /** Process id (the thread group id). */
  pid: number;
  /** Executable name, at most 15 bytes, as set by exec or `prctl(PR_SET_NAME)`; may hold spaces and parentheses. */
  comm: string;
  /** State: R running, S sleeping, D disk sleep, Z zombie, T stopped, t tracing stop, X dead, I idle. */
  state: string;
  /** Parent process id. */
  ppid: number;
  /** Process group id. */
  pgrp: number;
  /** Session id. */
  session: number;
  /** Controlling terminal (device number), 0 when there is none. */
  ttyNr: number;
  /** Foreground process group of the controlling terminal, -1 when there is none. */
  tpgid: number;
  /** User-mode CPU time in clock ticks (see {@link clockTicks}). */
  utime: number;
  /** Kernel-mode CPU time in clock ticks. */
  stime: number;
  /** Number of threads. */
  numThreads: number;
  /** Start time in clock ticks after boot (see {@link processStartMs}). */
  starttime: number;
  /** Virtual memory size in bytes. */
  vsize: number;
  /** Resident set size in pages (see {@link pageSize}). */
  rss: number;
}

/**
 * Parses the text of /proc/PID/stat. The comm field may contain spaces and parentheses, so it is
 * everything between the first "(" and the last ")".
 *
 * @throws {SyntaxError} when the text is not a stat line.
 */
export function parseStat(text: string): ProcStat {
  const open = text.indexOf("(");
  const close = text.lastIndexOf(")");
  if (open < 0 || close < open) {
    throw new SyntaxError(`Cannot parse /proc stat line "${text.slice(0, 60)}": no "(comm)"`);
  }
  const pid = Number(text.slice(0, open).trim());
  // rest[0] is field 3 (state), so field n of proc(5) is rest[n - 3].
  const rest = text.slice(close + 1).trim().split(" ");
  if (!Number.isInteger(pid) || rest.length < 22) {
    throw new SyntaxError(
      `Cannot parse /proc stat line "${text.slice(0, 60)}": expected at least 24 fields`,
    );
  }
  const field = (n: number): number => Number(rest[n - 3]);
  return {
    pid,
    comm: text.slice(open + 1, close),
    state: rest[0] ?? "",
    ppid: field(4),
    pgrp: field(5),
    session: field(6),
    ttyNr: field(7),
    tpgid: field(8),
    utime: field(14),
    stime: field(15),
    numThreads: field(20),
    starttime: field(22),
    vsize: field(23),
    rss: field(24),
  };
}

/** Reads and parses /proc/PID/stat; `null` when the process is gone or may not be read. */
export function readStat(pid: number): ProcStat | null {
  return orNull(() => parseStat(Deno.readTextFileSync(`/proc/${pid}/stat`)));
}

// ---------------------------------------------------------------------------------------------
// Process list and identity

/** Lists the ids of all processes (thread group leaders) visible in /proc, in the kernel's order. */
export function listPids(): number[] {
  const pids: number[] = [];
  for (const entry of Deno.readDirSync("/proc")) {
    const code = entry.name.charCodeAt(0);
    if (code >= 48 && code <= 57 && /^\d+$/.test(entry.name)) pids.push(Number(entry.name));
  }
  return pids;
}

/**
 * Reads a process's argv from /proc/PID/cmdline. Kernel threads and zombies give an empty array;
 * `null` when the process is gone. A process may rewrite its own argv (setproctitle), so this is
 * what the process claims, not necessarily what was exec'd.
 */
export function readCmdline(pid: number): string[] | null {
  return orNull(() => {
    const text = new TextDecoder().decode(Deno.readFileSync(`/proc/${pid}/cmdline`));
    if (text === "") return [];
    const args = text.split("\0");
    if (args.at(-1) === "") args.pop();
    return args;
  });
}

/** A process's executable, from /proc/PID/exe. */
export interface ExeInfo {
  /** Path of the executable, without the kernel's " (deleted)" suffix. */
  path: string;
  /** Whether the file was deleted or replaced after the process exec'd it. */
  deleted: boolean;
}

const DELETED_SUFFIX = " (deleted)";

/**
 * Reads the executable of a process. `null` when the process is gone, is a kernel thread or a
 * zombie (no exe), or may not be read (another user's process without CAP_SYS_PTRACE).
 */
export function readExe(pid: number): ExeInfo | null {
  return orNull(() => {
    const target = Deno.readLinkSync(`/proc/${pid}/exe`);
    const deleted = target.endsWith(DELETED_SUFFIX);
    return { path: deleted ? target.slice(0, -DELETED_SUFFIX.length) : target, deleted };
  });
}

/** Reads the working directory of a process; `null` when it is gone or may not be read. */
export function readCwd(pid: number): string | null {
  return orNull(() => Deno.readLinkSync(`/proc/${pid}/cwd`));
}

/** The identity fields of /proc/PID/status that Sentry uses. */
export interface StatusUids {
  /** Real user id. */
  uid: number;
  /** Effective user id: differs from `uid` for setuid programs. */
  euid: number;
  /** Pid of the process tracing this one (ptrace), 0 when not traced. */
  tracerPid: number;
}

/**
 * Parses the Uid and TracerPid lines of /proc/PID/status.
 *
 * @throws {SyntaxError} when either line is missing.
 */
export function parseStatusUids(text: string): StatusUids {
  const uidLine = /^Uid:\s+(\d+)\s+(\d+)/m.exec(text);
  const tracerLine = /^TracerPid:\s+(\d+)/m.exec(text);
  if (!uidLine || !tracerLine) {
    throw new SyntaxError('Cannot parse /proc status: no "Uid:" or "TracerPid:" line');
  }
  return {
    uid: Number(uidLine[1]),
    euid: Number(uidLine[2]),
    tracerPid: Number(tracerLine[1]),
  };
}

/** Reads the user ids and tracer of a process; `null` when it is gone or may not be read. */
export function readStatusUids(pid: number): StatusUids | null {
  return orNull(() => parseStatusUids(Deno.readTextFileSync(`/proc/${pid}/status`)));
}

let procChildrenSupported: boolean | undefined;

/** Options for {@link listChildren}. */
export interface ListChildrenOptions {
  /**
   * "auto" (the default) reads the children files when the kernel has them and scans otherwise;
   * "scan" always scans, for tests and for kernels whose children files are not trusted.
   */
  method?: "auto" | "scan";
}

/**
 * Lists the direct children of a process; `null` when it is gone.
 *
 * The fast path reads /proc/PID/task/TID/children for every thread (a child belongs to the thread
 * that forked it). Those files exist only in kernels built with CONFIG_PROC_CHILDREN (this one
 * has it; {@link hasProcChildren} tells); without it this falls back to scanning the ppid of every
 * process, which costs a full {@link listPids} + {@link readStat} pass.
 */
export function listChildren(pid: number, options: ListChildrenOptions = {}): number[] | null {
  if (options.method !== "scan" && hasProcChildren()) {
    const tids = orNull(() => [...Deno.readDirSync(`/proc/${pid}/task`)].map((e) => e.name));
    if (tids === null) return null;
    const children: number[] = [];
    for (const tid of tids) {
      // A thread may exit between the listing and the read: skip it.
      const text = orNull(() => Deno.readTextFileSync(`/proc/${pid}/task/${tid}/children`));
      for (const word of text?.split(" ") ?? []) if (word !== "") children.push(Number(word));
    }
    return children;
  }
  if (readStat(pid) === null) return null;
  const children: number[] = [];
  for (const candidate of listPids()) {
    if (readStat(candidate)?.ppid === pid) children.push(candidate);
  }
  return children;
}

/** Whether this kernel has /proc/PID/task/TID/children (CONFIG_PROC_CHILDREN); checked once. */
export function hasProcChildren(): boolean {
  if (procChildrenSupported === undefined) {
    try {
      Deno.statSync("/proc/thread-self/children");
      procChildrenSupported = true;
    } catch {
      procChildrenSupported = false;
    }
  }
  return procChildrenSupported;
}

// ---------------------------------------------------------------------------------------------
// File descriptors

/** An open file descriptor of a process and what it points to. */
export interface FdEntry {
  /** The descriptor number. */
  fd: number;
  /** The readlink target: "/path", "socket:[N]", "pipe:[N]", "anon_inode:[eventfd]" and so on. */
  target: string;
}

/**
 * Lists the open descriptors of a process from /proc/PID/fd, sorted by number. Descriptors closed
 * between the listing and their readlink are left out. Reading another user's descriptors needs
 * CAP_SYS_PTRACE, so the result says whether the process is gone or the read was denied.
 */
export function listFds(pid: number): ProcResult<FdEntry[]> {
  const dir = `/proc/${pid}/fd`;
  let names: string[];
  try {
    names = [...Deno.readDirSync(dir)].map((entry) => entry.name);
  } catch (error: unknown) {
    return failure(error);
  }
  const fds: FdEntry[] = [];
  for (const name of names) {
    try {
      fds.push({ fd: Number(name), target: Deno.readLinkSync(`${dir}/${name}`) });
    } catch (error: unknown) {
      if (failureReason(error) !== "gone") return failure(error);
    }
  }
  return { ok: true, value: fds.sort((a, b) => a.fd - b.fd) };
}

/** Reads where one descriptor of a process points (see {@link FdEntry.target}). */
export function readFdTarget(pid: number, fd: number): ProcResult<string> {
  try {
    return { ok: true, value: Deno.readLinkSync(`/proc/${pid}/fd/${fd}`) };
  } catch (error: unknown) {
    return failure(error);
  }
}

/** The common fields of /proc/PID/fdinfo/FD. */
export interface Fdinfo {
  /** File offset in bytes. */
  pos: number;
  /** Open flags as the kernel keeps them (see {@link accessMode} and {@link hasFlag}). */
  flags: number;
  /** Id of the mount the file lives on (see /proc/PID/mountinfo). */
  mntId: number;
  /** Inode number; kernels before 5.14 leave it out. */
  ino?: number;
}

/**
 * Parses the text of /proc/PID/fdinfo/FD. `flags` is printed in octal. Extra lines (eventfd
 * counts, epoll targets, inotify watches) are ignored.
 *
 * @throws {SyntaxError} when the pos, flags or mnt_id line is missing.
 */
export function parseFdinfo(text: string): Fdinfo {
  const fields = new Map<string, string>();
  for (const line of text.split("\n")) {
    const colon = line.indexOf(":");
    if (colon > 0 && !fields.has(line.slice(0, colon))) {
      fields.set(line.slice(0, colon), line.slice(colon + 1).trim());
    }
  }
  const pos = fields.get("pos");
  const flags = fields.get("flags");
  const mntId = fields.get("mnt_id");
  if (pos === undefined || flags === undefined || mntId === undefined) {
    throw new SyntaxError('Cannot parse /proc fdinfo: expected "pos", "flags" and "mnt_id" lines');
  }
  const info: Fdinfo = { pos: Number(pos), flags: parseInt(flags, 8), mntId: Number(mntId) };
  const ino = fields.get("ino");
  if (ino !== undefined) info.ino = Number(ino);
  return info;
}

/** Reads and parses /proc/PID/fdinfo/FD; `null` when the process or descriptor is gone or denied. */
export function readFdinfo(pid: number, fd: number): Fdinfo | null {
  return orNull(() => parseFdinfo(Deno.readTextFileSync(`/proc/${pid}/fdinfo/${fd}`)));
}

/**
 * The open flags that survive into fdinfo, by name. Values are for x86_64 (the asm-generic
 * layout); on aarch64 four differ, and the right set is picked at load time.
 *
 * Checked on Linux 6.18, x86_64: O_CREAT, O_EXCL, O_TRUNC and O_NOCTTY act only during open()
 * and never appear. The access mode, O_APPEND, O_NONBLOCK, O_DSYNC, O_SYNC, O_DIRECT,
 * O_DIRECTORY, O_NOFOLLOW, O_NOATIME and O_PATH do. O_CLOEXEC is not a file flag at all: the
 * kernel adds 02000000 when the descriptor's close-on-exec bit is set, however it was set.
 * O_LARGEFILE (0100000) is forced on every regular open by a 64-bit kernel (not on O_PATH), so it
 * says nothing about the program.
 */
export const OPEN_FLAGS: Readonly<Record<OpenFlagName, number>> = Deno.build.arch === "aarch64"
  ? {
    O_APPEND: 0o2000,
    O_NONBLOCK: 0o4000,
    O_DSYNC: 0o10000,
    O_DIRECTORY: 0o40000,
    O_NOFOLLOW: 0o100000,
    O_DIRECT: 0o200000,
    O_LARGEFILE: 0o400000,
    O_NOATIME: 0o1000000,
    O_CLOEXEC: 0o2000000,
    O_SYNC: 0o4010000,
    O_PATH: 0o10000000,
  }
  : {
    O_APPEND: 0o2000,
    O_NONBLOCK: 0o4000,
    O_DSYNC: 0o10000,
    O_DIRECT: 0o40000,
    O_LARGEFILE: 0o100000,
    O_DIRECTORY: 0o200000,
    O_NOFOLLOW: 0o400000,
    O_NOATIME: 0o1000000,
    O_CLOEXEC: 0o2000000,
    O_SYNC: 0o4010000,
    O_PATH: 0o10000000,
  };

/** Names of the open flags that fdinfo reports (see {@link OPEN_FLAGS}). */
export type OpenFlagName =
  | "O_APPEND"
  | "O_NONBLOCK"
  | "O_DSYNC"
  | "O_DIRECT"
  | "O_LARGEFILE"
  | "O_DIRECTORY"
  | "O_NOFOLLOW"
  | "O_NOATIME"
  | "O_CLOEXEC"
  | "O_SYNC"
  | "O_PATH";

/** How a descriptor may be used, from the O_ACCMODE bits of its flags. */
export type AccessMode = "read" | "write" | "readwrite";

/**
 * Returns the access mode of fdinfo flags. O_ACCMODE value 3 (a Linux special for ioctl-only
 * opens that needs read and write permission) counts as "readwrite". An O_PATH descriptor reports
 * "read" though it can neither read nor write: check {@link hasFlag} `O_PATH` first.
 */
export function accessMode(flags: number): AccessMode {
  const mode = flags & 3;
  return mode === 0 ? "read" : mode === 1 ? "write" : "readwrite";
}

/** Whether fdinfo flags include a flag (all its bits, which matters for O_SYNC). */
export function hasFlag(flags: number, name: OpenFlagName): boolean {
  const bits = OPEN_FLAGS[name];
  return (flags & bits) === bits;
}

/** Names the access mode and set flags, e.g. `["O_WRONLY", "O_APPEND", "O_CLOEXEC"]`, for logs. */
export function describeFlags(flags: number): string[] {
  const mode = flags & 3;
  const names = [["O_RDONLY", "O_WRONLY", "O_RDWR", "O_ACCMODE"][mode] ?? "O_RDONLY"];
  for (const name of Object.keys(OPEN_FLAGS) as OpenFlagName[]) {
    // O_SYNC contains O_DSYNC's bit; name only the stronger one.
    if (name === "O_DSYNC" && hasFlag(flags, "O_SYNC")) continue;
    if (hasFlag(flags, name)) names.push(name);
  }
  return names;
}

/** Returns the inode of a socket descriptor target ("socket:[12345]"), or `null` for anything else. */
export function socketInode(target: string): number | null {
  const match = /^socket:\[(\d+)\]$/.exec(target);
  return match ? Number(match[1]) : null;
}

// ---------------------------------------------------------------------------------------------
// Sockets: /proc/net/{tcp,tcp6,udp,udp6}

/** The /proc/net files Sentry parses. */
export type NetProto = "tcp" | "tcp6" | "udp" | "udp6";

/** Socket state names, as in the kernel's include/net/tcp_states.h. UDP uses ESTABLISHED and CLOSE. */
export type SocketState =
  | "ESTABLISHED"
  | "SYN_SENT"
  | "SYN_RECV"
  | "FIN_WAIT1"
  | "FIN_WAIT2"
  | "TIME_WAIT"
  | "CLOSE"
  | "CLOSE_WAIT"
  | "LAST_ACK"
  | "LISTEN"
  | "CLOSING"
  | "UNKNOWN";

const SOCKET_STATES: readonly SocketState[] = [
  "UNKNOWN",
  "ESTABLISHED",
  "SYN_SENT",
  "SYN_RECV",
  "FIN_WAIT1",
  "FIN_WAIT2",
  "TIME_WAIT",
  "CLOSE",
  "CLOSE_WAIT",
  "LAST_ACK",
  "LISTEN",
  "CLOSING",
];

/** One line of /proc/net/{tcp,tcp6,udp,udp6}. */
export interface NetSocket {
  /** Which file the line came from. */
  proto: NetProto;
  /** Local IP address: dotted IPv4, or compressed IPv6; IPv4-mapped IPv6 is shown as IPv4. */
  localAddress: string;
  /** Local port. */
  localPort: number;
  /** Remote IP address, "0.0.0.0" or "::" when unconnected. */
  remoteAddress: string;
  /** Remote port, 0 when unconnected. */
  remotePort: number;
  /** State name; unbound or unconnected UDP sockets are "CLOSE". */
  state: SocketState;
  /** Owner's user id. */
  uid: number;
  /** Socket inode: matches the N of a "socket:[N]" descriptor (see {@link socketInode}). */
  inode: number;
}

/**
 * Parses the text of /proc/net/tcp, tcp6, udp or udp6 (header line included). Addresses are hex
 * in host byte order per 32-bit word (little-endian on every platform Deno runs on); ports are hex
 * in network order.
 *
 * @throws {SyntaxError} when a line does not have the expected columns.
 */
export function parseNetFile(text: string, proto: NetProto): NetSocket[] {
  const sockets: NetSocket[] = [];
  const lines = text.split("\n");
  for (let i = 1; i < lines.length; i++) {
    const line = lines[i]?.trim() ?? "";
    if (line === "") continue;
    const cols = line.split(/\s+/);
    const local = parseHexEndpoint(cols[1]);
    const remote = parseHexEndpoint(cols[2]);
    const state = cols[3] === undefined ? NaN : parseInt(cols[3], 16);
    if (local === null || remote === null || Number.isNaN(state) || cols.length < 10) {
      throw new SyntaxError(`Cannot parse /proc/net/${proto} line ${i + 1}: "${line}"`);
    }
    sockets.push({
      proto,
      localAddress: local.address,
      localPort: local.port,
      remoteAddress: remote.address,
      remotePort: remote.port,
      state: SOCKET_STATES[state] ?? "UNKNOWN",
      uid: Number(cols[7]),
      inode: Number(cols[9]),
    });
  }
  return sockets;
}

function parseHexEndpoint(text: string | undefined): { address: string; port: number } | null {
  const match = /^([0-9A-Fa-f]{8}|[0-9A-Fa-f]{32}):([0-9A-Fa-f]{4})$/.exec(text ?? "");
  if (!match || match[1] === undefined || match[2] === undefined) return null;
  const hex = match[1];
  // Each 32-bit word is printed as a host-order integer, so its bytes come out reversed.
  const bytes: number[] = [];
  for (let word = 0; word < hex.length; word += 8) {
    for (let b = 6; b >= 0; b -= 2) bytes.push(parseInt(hex.slice(word + b, word + b + 2), 16));
  }
  return { address: formatIpBytes(bytes), port: parseInt(match[2], 16) };
}

function formatIpBytes(bytes: number[]): string {
  if (bytes.length === 4) return bytes.join(".");
  const isV4Mapped = bytes.slice(0, 10).every((b) => b === 0) && bytes[10] === 0xff &&
    bytes[11] === 0xff;
  if (isV4Mapped) return bytes.slice(12).join(".");
  const groups: number[] = [];
  for (let i = 0; i < 16; i += 2) groups.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  // RFC 5952: compress the longest run of two or more zero groups, the first one on a tie.
  let bestStart = -1;
  let bestLength = 1;
  for (let i = 0; i < 8;) {
    if (groups[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && groups[j] === 0) j++;
    if (j - i > bestLength) [bestStart, bestLength] = [i, j - i];
    i = j;
  }
  const hex = groups.map((g) => g.toString(16));
  if (bestStart < 0) return hex.join(":");
  const head = hex.slice(0, bestStart).join(":");
  const tail = hex.slice(bestStart + bestLength).join(":");
  return `${head}::${tail}`;
}

/**
 * Reads the TCP and UDP sockets of the network namespace a process is in, from
 * /proc/PID/net/{tcp,tcp6,udp,udp6}. The files list every socket of the namespace, not just the
 * process's: join on {@link NetSocket.inode} with the "socket:[N]" targets of {@link listFds}.
 * A missing file (no IPv6 in the kernel) is skipped. `null` when the process is gone or denied;
 * a zombie has left its namespace and gives an empty list.
 *
 * This is slow, and the cost is in the kernel: to print tcp and tcp6 it walks the whole TCP hash
 * table, however few sockets exist (about 4 ms per file with 262144 buckets on a 24 GB machine).
 * Read once per namespace per tick (see {@link readNetNamespace}); NETLINK_SOCK_DIAG is the fast
 * way if this becomes the bottleneck.
 */
export function readNetSockets(pid: number): NetSocket[] | null {
  const sockets: NetSocket[] = [];
  for (const proto of ["tcp", "tcp6", "udp", "udp6"] as const) {
    let text: string;
    try {
      text = Deno.readTextFileSync(`/proc/${pid}/net/${proto}`);
    } catch (error: unknown) {
      const reason = failureReason(error);
      if (reason === "error") throw error;
      // ENOENT for one file while the process lives means the protocol is not built in.
      if (reason === "denied" || readStat(pid) === null) return null;
      continue;
    }
    sockets.push(...parseNetFile(text, proto));
  }
  return sockets;
}

/**
 * Reads which network namespace a process is in, e.g. "net:[4026531840]"; `null` when it is gone
 * or denied. Processes in one namespace share one {@link readNetSockets} answer, so a sensor can
 * read the sockets once per namespace per tick.
 */
export function readNetNamespace(pid: number): string | null {
  return orNull(() => Deno.readLinkSync(`/proc/${pid}/ns/net`));
}

/** Formats an address and port as an endpoint: `1.2.3.4:80`, or `[::1]:80` for IPv6. */
export function formatEndpoint(ip: string, port: number): string {
  return ip.includes(":") ? `[${ip}]:${port}` : `${ip}:${port}`;
}

// ---------------------------------------------------------------------------------------------
// Clock ticks, page size, boot time

/** Auxiliary vector keys (see getauxval(3)). */
const AT_PAGESZ = 6;
const AT_CLKTCK = 17;

/**
 * Parses an auxiliary vector (the bytes of /proc/PID/auxv on a 64-bit system): pairs of 64-bit
 * little-endian key and value, ending at key 0.
 */
export function parseAuxv(bytes: Uint8Array): Map<number, bigint> {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const entries = new Map<number, bigint>();
  for (let offset = 0; offset + 16 <= bytes.byteLength; offset += 16) {
    const key = Number(view.getBigUint64(offset, true));
    if (key === 0) break;
    entries.set(key, view.getBigUint64(offset + 8, true));
  }
  return entries;
}

let auxv: Map<number, bigint> | undefined;

function auxvValue(key: number, fallback: number): number {
  if (auxv === undefined) {
    try {
      auxv = parseAuxv(Deno.readFileSync("/proc/self/auxv"));
    } catch {
      auxv = new Map();
    }
  }
  const value = auxv.get(key);
  return value === undefined || value === 0n ? fallback : Number(value);
}

/**
 * Clock ticks per second (sysconf(_SC_CLK_TCK)), the unit of the times in /proc/PID/stat. Read
 * once from AT_CLKTCK in /proc/self/auxv, which needs no subprocess; 100 if that fails.
 */
export function clockTicks(): number {
  return auxvValue(AT_CLKTCK, 100);
}

/** Page size in bytes, the unit of {@link ProcStat.rss}. Read once from AT_PAGESZ; 4096 if that fails. */
export function pageSize(): number {
  return auxvValue(AT_PAGESZ, 4096);
}

/**
 * Parses the boot time from the text of /proc/stat (the `btime` line, whole seconds since the
 * epoch) and returns it in milliseconds.
 *
 * @throws {SyntaxError} when there is no btime line.
 */
export function parseBootTime(text: string): number {
  const match = /^btime\s+(\d+)/m.exec(text);
  if (!match) throw new SyntaxError('Cannot parse /proc/stat: no "btime" line');
  return Number(match[1]) * 1000;
}

let bootTime: number | undefined;

/**
 * The time the system booted, in epoch milliseconds, from /proc/stat. Read once and cached: the
 * kernel recomputes btime on each read, and it can move by a second as the clock is adjusted,
 * which would make the start time of one process appear to change.
 */
export function bootTimeMs(): number {
  bootTime ??= parseBootTime(Deno.readTextFileSync("/proc/stat"));
  return bootTime;
}

/** Options for {@link processStartMs}; both default to this machine's values. */
export interface ProcessStartOptions {
  /** Boot time in epoch milliseconds; defaults to {@link bootTimeMs}. */
  bootTimeMs?: number;
  /** Clock ticks per second; defaults to {@link clockTicks}. */
  clockTicks?: number;
}

/**
 * Converts a process's start time (clock ticks after boot) to epoch milliseconds. Precise to
 * about a second, because btime is whole seconds: to recognise a process again, compare pid and
 * {@link ProcStat.starttime}, not this.
 */
export function processStartMs(
  stat: Pick<ProcStat, "starttime">,
  options: ProcessStartOptions = {},
): number {
  const ticks = options.clockTicks ?? clockTicks();
  return (options.bootTimeMs ?? bootTimeMs()) + Math.round((stat.starttime * 1000) / ticks);
}
