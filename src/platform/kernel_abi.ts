/**
 * Pure decoders of the kernel ABI values every kernel-event tier (eBPF, seccomp, fanotify)
 * meets: errno numbers, socket addresses and open flags. No I/O; tested on byte samples.
 *
 * @module
 */

import { formatEndpoint, hasFlag } from "./proc_linux.ts";

/** Linux errno names by number (the generic table, shared by x86_64 and arm64). */
const ERRNO: Readonly<Record<number, string>> = {
  1: "EPERM",
  2: "ENOENT",
  3: "ESRCH",
  4: "EINTR",
  5: "EIO",
  6: "ENXIO",
  7: "E2BIG",
  8: "ENOEXEC",
  9: "EBADF",
  10: "ECHILD",
  11: "EAGAIN",
  12: "ENOMEM",
  13: "EACCES",
  14: "EFAULT",
  16: "EBUSY",
  17: "EEXIST",
  18: "EXDEV",
  19: "ENODEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  23: "ENFILE",
  24: "EMFILE",
  26: "ETXTBSY",
  27: "EFBIG",
  28: "ENOSPC",
  30: "EROFS",
  31: "EMLINK",
  32: "EPIPE",
  36: "ENAMETOOLONG",
  38: "ENOSYS",
  39: "ENOTEMPTY",
  40: "ELOOP",
  88: "ENOTSOCK",
  95: "EOPNOTSUPP",
  97: "EAFNOSUPPORT",
  98: "EADDRINUSE",
  99: "EADDRNOTAVAIL",
  100: "ENETDOWN",
  101: "ENETUNREACH",
  103: "ECONNABORTED",
  104: "ECONNRESET",
  106: "EISCONN",
  110: "ETIMEDOUT",
  111: "ECONNREFUSED",
  113: "EHOSTUNREACH",
  114: "EALREADY",
  115: "EINPROGRESS",
  122: "EDQUOT",
};

/** The name of an errno (`2` → `ENOENT`), or `errno N` for one not in the table. */
export function errnoName(errno: number): string {
  const n = Math.abs(errno);
  return ERRNO[n] ?? `errno ${n}`;
}

/** EINPROGRESS: a non-blocking connect that has started but not finished. */
export const EINPROGRESS = 115;

/** A decoded socket address. */
export type Sockaddr =
  | { family: "inet" | "inet6"; ip: string; port: number; target: string }
  | { family: "unix"; path: string; abstract: boolean; target: string };

const AF_UNIX = 1;
const AF_INET = 2;
const AF_INET6 = 10;

/**
 * Decodes a `struct sockaddr` as the process passed it (the bytes and the length it gave).
 * Returns null for families Sentry does not judge (netlink, packet, AF_UNSPEC, which a UDP
 * socket connects to in order to disconnect) and for addresses shorter than their family needs.
 * The target is `ip:port`, `[v6]:port`, `unix:/path`, or `unix:@name` for an abstract socket.
 */
export function decodeSockaddr(bytes: Uint8Array): Sockaddr | null {
  if (bytes.length < 2) return null;
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const family = view.getUint16(0, true);
  if (family === AF_INET) {
    if (bytes.length < 8) return null;
    const port = view.getUint16(2, false);
    const ip = `${bytes[4]}.${bytes[5]}.${bytes[6]}.${bytes[7]}`;
    return { family: "inet", ip, port, target: formatEndpoint(ip, port) };
  }
  if (family === AF_INET6) {
    if (bytes.length < 24) return null;
    const port = view.getUint16(2, false);
    const ip = formatIpv6(bytes.subarray(8, 24));
    return { family: "inet6", ip, port, target: formatEndpoint(ip, port) };
  }
  if (family === AF_UNIX) {
    const raw = bytes.subarray(2);
    if (raw.length === 0) return { family: "unix", path: "", abstract: false, target: "unix:" };
    const abstract = raw[0] === 0;
    // A path name ends at its first NUL; an abstract name is every byte of the given length.
    const body = abstract ? raw.subarray(1) : raw.subarray(0, nulAt(raw));
    const path = new TextDecoder().decode(body);
    return { family: "unix", path, abstract, target: abstract ? `unix:@${path}` : `unix:${path}` };
  }
  return null;
}

function nulAt(bytes: Uint8Array): number {
  const i = bytes.indexOf(0);
  return i < 0 ? bytes.length : i;
}

/** Formats 16 bytes as an IPv6 address in RFC 5952 form (the longest zero run as `::`). */
export function formatIpv6(bytes: Uint8Array): string {
  const words: number[] = [];
  for (let i = 0; i < 16; i += 2) words.push(((bytes[i] ?? 0) << 8) | (bytes[i + 1] ?? 0));
  // An IPv4-mapped address reads better as ::ffff:a.b.c.d, as the policy writes it.
  if (words.slice(0, 5).every((w) => w === 0) && words[5] === 0xffff) {
    return `::ffff:${bytes[12]}.${bytes[13]}.${bytes[14]}.${bytes[15]}`;
  }
  let bestStart = -1;
  let bestLen = 0;
  for (let i = 0; i < 8;) {
    if (words[i] !== 0) {
      i++;
      continue;
    }
    let j = i;
    while (j < 8 && words[j] === 0) j++;
    if (j - i > bestLen && j - i >= 2) {
      bestStart = i;
      bestLen = j - i;
    }
    i = j;
  }
  const hex = words.map((w) => w.toString(16));
  if (bestStart < 0) return hex.join(":");
  const head = hex.slice(0, bestStart).join(":");
  const tail = hex.slice(bestStart + bestLen).join(":");
  return `${head}::${tail}`;
}

/** What an open asks for, from its flags: the file kind it is journaled as. */
export type OpenAccess = "read" | "write" | "create";

const O_CREAT = 0o100;
const O_TRUNC = 0o1000;

const O_EXCL = 0o200;

/**
 * What an open did: `create` when it made the file (the kernel says so with `created`; without
 * that, only O_CREAT|O_EXCL guarantees a new file), `write` when it opens for writing or
 * truncates (O_CREAT on an existing file writes it), and `read` otherwise. O_PATH opens are
 * reads: they read no byte, but they name the file, and their fd can be re-opened through /proc.
 */
export function openAccess(flags: number, created?: boolean): OpenAccess {
  if (created === true) return "create";
  if (created === undefined && (flags & (O_CREAT | O_EXCL)) === (O_CREAT | O_EXCL)) {
    return "create";
  }
  if ((flags & 3) !== 0 || (flags & O_TRUNC) !== 0 || (flags & O_CREAT) !== 0) return "write";
  return "read";
}

/** Whether open flags include O_PATH (a descriptor that reads no byte). */
export function isPathOnly(flags: number): boolean {
  return hasFlag(flags, "O_PATH");
}

const SIGNAL_NAMES = [
  "",
  "SIGHUP",
  "SIGINT",
  "SIGQUIT",
  "SIGILL",
  "SIGTRAP",
  "SIGABRT",
  "SIGBUS",
  "SIGFPE",
  "SIGKILL",
  "SIGUSR1",
  "SIGSEGV",
  "SIGUSR2",
  "SIGPIPE",
  "SIGALRM",
  "SIGTERM",
  "SIGSTKFLT",
  "SIGCHLD",
  "SIGCONT",
  "SIGSTOP",
  "SIGTSTP",
  "SIGTTIN",
  "SIGTTOU",
  "SIGURG",
  "SIGXCPU",
  "SIGXFSZ",
  "SIGVTALRM",
  "SIGPROF",
  "SIGWINCH",
  "SIGIO",
  "SIGPWR",
  "SIGSYS",
];

/** A signal's name (`9` → `SIGKILL`), or `SIG<n>` for real-time signals. */
export function signalName(signal: number): string {
  return SIGNAL_NAMES[signal] || `SIG${signal}`;
}
