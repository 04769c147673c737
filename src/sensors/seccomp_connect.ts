/**
 * How the seccomp supervisor makes an allowed connect itself, on the caller's own socket, so
 * that the address it decided on is the address connected to: a thread that rewrites the
 * `struct sockaddr` after the check changes nothing, because the kernel never reads the
 * caller's copy again. Pure: what to connect to, from the bytes the supervisor copied.
 *
 * Address families:
 * - inet, inet6 and anything else: the copied bytes as they are (the socket's own network
 *   namespace applies, whoever calls connect);
 * - a unix path name: absolute as it is; a relative one resolves against the caller's current
 *   directory, which the supervisor cannot share (chdir is per process), so it is reached
 *   through a descriptor of that directory: `/proc/self/fd/N/name` (when that fits in
 *   `sun_path`'s 108 bytes);
 * - an abstract unix name: as it is.
 *
 * @module
 */

/** `sizeof(struct sockaddr_storage)`: the kernel refuses a longer address with EINVAL. */
export const SOCKADDR_STORAGE = 128;
/** `sizeof(sun_path)`. */
export const SUN_PATH = 108;

const AF_UNIX = 1;
const EINVAL = 22;
const EFAULT = 14;

/** What the supervisor connects to, decided from the copied address. */
export type ConnectPlan =
  /** The kernel would fail the call before touching the socket. */
  | { kind: "error"; errno: number }
  /** Connect with the copied bytes as they are. */
  | { kind: "direct"; family: "unix-path" | "unix-abstract" | "other"; addr: Uint8Array }
  /** A unix socket path relative to the caller's current directory. */
  | { kind: "unix-relative"; path: Uint8Array };

/**
 * Plans a connect from the caller's arguments: `addr` the bytes copied (fewer than `addrlen`
 * when the caller's mapping ended before), `addrlen` the length argument, `nullAddress` whether
 * the address pointer was NULL.
 */
export function connectPlan(
  options: { addr: Uint8Array; addrlen: number; nullAddress: boolean },
): ConnectPlan {
  const { addr, addrlen } = options;
  // move_addr_to_kernel(): a negative or too long length is EINVAL, an unreadable address EFAULT.
  if (addrlen < 0 || addrlen > SOCKADDR_STORAGE) return { kind: "error", errno: EINVAL };
  if (addrlen > 0 && (options.nullAddress || addr.length < addrlen)) {
    return { kind: "error", errno: EFAULT };
  }
  const bytes = addr.subarray(0, addrlen);
  const family = bytes.length >= 2 ? bytes[0]! | (bytes[1]! << 8) : -1;
  if (family !== AF_UNIX || bytes.length <= 2) {
    return { kind: "direct", family: "other", addr: bytes };
  }
  if (bytes[2] === 0) return { kind: "direct", family: "unix-abstract", addr: bytes };
  const raw = bytes.subarray(2);
  const nul = raw.indexOf(0);
  const path = nul < 0 ? raw : raw.subarray(0, nul);
  if (path[0] === 0x2f) return { kind: "direct", family: "unix-path", addr: bytes };
  return { kind: "unix-relative", path: path.slice() };
}

/**
 * A `struct sockaddr_un` for `name` beneath the directory `dir` (an absolute path such as
 * `/proc/self/fd/7`), NUL-terminated; null when it does not fit in `sun_path`.
 */
export function unixSockaddrAt(dir: string, name: Uint8Array): Uint8Array | null {
  const prefix = new TextEncoder().encode(dir.endsWith("/") ? dir : `${dir}/`);
  const length = prefix.length + name.length;
  if (length + 1 > SUN_PATH) return null;
  const out = new Uint8Array(2 + length + 1);
  out[0] = AF_UNIX;
  out.set(prefix, 2);
  out.set(name, 2 + prefix.length);
  return out;
}

/** What a finished connect attempt means for a caller that waits (a blocking socket). */
export type ConnectStep =
  /** Answer the caller with this result (0 or -errno). */
  | { kind: "answer"; result: number }
  /** The connection is under way: wait until the socket is writable. */
  | { kind: "wait" }
  /** A unix socket's listener has a full backlog: try again shortly. */
  | { kind: "retry" };

const EAGAIN = 11;
const EALREADY = 114;
const EINPROGRESS = 115;
const EISCONN = 106;

/**
 * What the result of the supervisor's non-blocking connect means for a caller whose socket
 * blocks. `again` is true for a second attempt on a socket that was already under way (the
 * poll said it finished): then EISCONN means it connected. Pure.
 */
export function connectStep(
  result: number,
  options: { unix: boolean; again: boolean },
): ConnectStep {
  if (result === -EINPROGRESS || result === -EALREADY) return { kind: "wait" };
  if (options.unix && result === -EAGAIN) return { kind: "retry" };
  if (options.again && result === -EISCONN) return { kind: "answer", result: 0 };
  return { kind: "answer", result };
}

/**
 * What a blocking connect gives once its send timeout (`SO_SNDTIMEO`) runs out: EINPROGRESS
 * for TCP (the connection goes on), EAGAIN for a unix socket (its listener stayed full).
 */
export function timeoutResult(options: { unix: boolean }): number {
  return options.unix ? -EAGAIN : -EINPROGRESS;
}
