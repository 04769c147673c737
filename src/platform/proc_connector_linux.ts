/**
 * The proc connector socket (NETLINK_CONNECTOR, CN_IDX_PROC) through FFI on the C library: the
 * kernel's exact stream of fork, exec and exit events of every process on the host, with per-CPU
 * sequence numbers that count what the socket lost (see `proc_connector_record.ts`).
 *
 * Reading never blocks Deno's event loop: {@link ProcConnector.wait} polls the socket on the
 * FFI thread pool (`nonblocking: true`), then {@link ProcConnector.receive} drains it
 * synchronously with `MSG_DONTWAIT`. An eventfd in the same poll lets `close()` wake a pending
 * wait before the descriptors are closed, so no poll ever runs on a closed (or reused) fd.
 *
 * Needs CAP_NET_ADMIN (root) to listen.
 *
 * @module
 */

import { errnoOf, openLibc } from "./_libc.ts";
import { WakeablePoll } from "./_wakeable_poll.ts";
import { errnoName } from "./kernel_abi.ts";
import { CN_MSG_BYTES, NLMSG_HEADER_BYTES, PROC_EVENT } from "./proc_connector_record.ts";

const SYMBOLS = {
  socket: { parameters: ["i32", "i32", "i32"], result: "i32" },
  bind: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  send: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  recv: { parameters: ["i32", "buffer", "usize", "i32"], result: "isize" },
  setsockopt: { parameters: ["i32", "i32", "i32", "buffer", "u32"], result: "i32" },
  getsockopt: { parameters: ["i32", "i32", "i32", "buffer", "buffer"], result: "i32" },
  eventfd: { parameters: ["u32", "i32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

const AF_NETLINK = 16;
const SOCK_DGRAM = 2;
const SOCK_NONBLOCK = 0o4000;
const SOCK_CLOEXEC = 0o2000000;
const NETLINK_CONNECTOR = 11;
const SOL_SOCKET = 1;
const SO_RCVBUF = 8;
const SO_RCVBUFFORCE = 33;
const MSG_DONTWAIT = 0x40;
const NLMSG_DONE = 3;
const CN_IDX_PROC = 1;
const CN_VAL_PROC = 1;
const PROC_CN_MCAST_LISTEN = 1;
const PROC_CN_MCAST_IGNORE = 2;
const EFD_NONBLOCK = 0o4000;
const EFD_CLOEXEC = 0o2000000;
const EAGAIN = 11;
const EINTR = 4;
const ENOBUFS = 105;

/** The event kinds Sentry needs from the kernel's 6.6+ filter: fork, exec and exit. */
export const PROC_EVENTS_TREE = (PROC_EVENT.FORK | PROC_EVENT.EXEC | PROC_EVENT.EXIT) >>> 0;

/** Every event kind (`PROC_EVENT_ALL`), which is also what a listener without a filter gets. */
export const PROC_EVENTS_ALL = (PROC_EVENT.FORK | PROC_EVENT.EXEC | PROC_EVENT.UID |
  PROC_EVENT.GID | PROC_EVENT.SID | PROC_EVENT.PTRACE | PROC_EVENT.COMM |
  PROC_EVENT.NONZERO_EXIT | PROC_EVENT.COREDUMP | PROC_EVENT.EXIT) >>> 0;

/** A failed call to the kernel, with its errno. */
export class ProcConnectorError extends Error {
  /** The call that failed, such as `bind`. */
  readonly call: string;
  /** The errno it set (0 when FFI itself was unavailable). */
  readonly errno: number;

  /** Builds the error; the message names the call and the errno. */
  constructor(call: string, errno: number, options?: ErrorOptions) {
    super(
      errno === 0
        ? `Cannot use the proc connector: ${call}`
        : `Cannot use the proc connector: ${call} failed: ${errnoName(errno)}`,
      options,
    );
    this.name = "ProcConnectorError";
    this.call = call;
    this.errno = errno;
  }
}

/** How {@link ProcConnector.open} sets the socket up. */
export interface ProcConnectorOptions {
  /**
   * The receive buffer to force with SO_RCVBUFFORCE, in bytes (8–32 MiB is right: about 1 KiB of
   * buffer per queued event). Default 16 MiB.
   */
  receiveBufferBytes?: number;
  /**
   * The kernel-side filter (Linux 6.6+ `struct proc_input`): a mask of `PROC_EVENT` kinds.
   * `null` sends the old 4-byte listen request, which every kernel since 2.6.15 understands and
   * which delivers every kind. Default {@link PROC_EVENTS_ALL}: see the module note on why a
   * narrower filter breaks exact loss accounting.
   */
  events?: number | null;
}

/** The outcome of one {@link ProcConnector.wait}. */
export type WaitResult = "readable" | "timeout" | "closed";

/**
 * One proc connector socket, listening. It owns the socket and an eventfd; `close()` releases
 * both (after waking and awaiting any pending wait), and tells the kernel it stopped listening.
 *
 * On the filter: the kernel takes a sequence number for every event before it applies a
 * listener's filter (`send_msg()` in cn_proc.c), so events filtered out leave gaps that look like
 * loss. Sentry therefore asks for every kind by default and drops uid, gid, sid, comm, ptrace and
 * coredump events itself: they are rare, and the sequence then counts loss exactly.
 */
export class ProcConnector {
  /** The socket's fd. */
  readonly fd: number;
  /** The receive buffer the kernel granted (SO_RCVBUF reads back twice the size asked). */
  readonly receiveBufferBytes: number;
  /** The filter mask the kernel accepted, or null for the old listen request. */
  readonly events: number | null;
  readonly #lib: Libc;
  readonly #wakeFd: number;
  readonly #buffer = new Uint8Array(16384);
  readonly #poll: WakeablePoll;
  #closed = false;
  #overruns = 0;

  private constructor(
    lib: Libc,
    fd: number,
    wakeFd: number,
    rcvbuf: number,
    events: number | null,
  ) {
    this.#lib = lib;
    this.fd = fd;
    this.#wakeFd = wakeFd;
    this.receiveBufferBytes = rcvbuf;
    this.events = events;
    this.#poll = new WakeablePoll({ fd, wakeFd });
  }

  /**
   * Opens a socket, forces its receive buffer, joins the proc group and asks the kernel to send
   * events. Throws {@link ProcConnectorError} when any step fails (EPERM without CAP_NET_ADMIN),
   * having released whatever it had opened.
   */
  static open(options: ProcConnectorOptions = {}): ProcConnector {
    const lib = libcFor();
    const errno = () => errnoOf(lib);
    const fd = lib.symbols.socket(
      AF_NETLINK,
      SOCK_DGRAM | SOCK_NONBLOCK | SOCK_CLOEXEC,
      NETLINK_CONNECTOR,
    );
    if (fd < 0) {
      const e = errno();
      lib.close();
      throw new ProcConnectorError("socket(AF_NETLINK, NETLINK_CONNECTOR)", e);
    }
    let wakeFd = -1;
    try {
      const size = options.receiveBufferBytes ?? 16 * 1024 * 1024;
      const value = new Int32Array([size]);
      // SO_RCVBUFFORCE ignores rmem_max (needs CAP_NET_ADMIN, which listening needs anyway).
      if (
        lib.symbols.setsockopt(fd, SOL_SOCKET, SO_RCVBUFFORCE, new Uint8Array(value.buffer), 4) !==
          0
      ) {
        throw new ProcConnectorError(`setsockopt(SO_RCVBUFFORCE, ${size})`, errno());
      }
      const granted = new Int32Array(1);
      const length = new Uint32Array([4]);
      lib.symbols.getsockopt(
        fd,
        SOL_SOCKET,
        SO_RCVBUF,
        new Uint8Array(granted.buffer),
        new Uint8Array(length.buffer),
      );
      // struct sockaddr_nl: family, pad, pid (0: the kernel assigns one), groups.
      const address = new Uint8Array(12);
      const addressView = new DataView(address.buffer);
      addressView.setUint16(0, AF_NETLINK, true);
      addressView.setUint32(8, CN_IDX_PROC, true);
      if (lib.symbols.bind(fd, address, address.length) !== 0) {
        throw new ProcConnectorError("bind(CN_IDX_PROC)", errno());
      }
      wakeFd = lib.symbols.eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
      if (wakeFd < 0) throw new ProcConnectorError("eventfd", errno());
      const asked = options.events === undefined ? PROC_EVENTS_ALL : options.events;
      // Every kind is what the old request asks for, and every kernel understands it; a kernel
      // before 6.6 silently ignores the 8-byte form.
      const events = asked === null || (asked >>> 0) === PROC_EVENTS_ALL ? null : asked >>> 0;
      const request = listenRequest(PROC_CN_MCAST_LISTEN, events);
      if (lib.symbols.send(fd, request, BigInt(request.length), 0) !== BigInt(request.length)) {
        throw new ProcConnectorError("send(PROC_CN_MCAST_LISTEN)", errno());
      }
      return new ProcConnector(lib, fd, wakeFd, granted[0] ?? 0, events);
    } catch (error) {
      if (wakeFd >= 0) lib.symbols.close(wakeFd);
      lib.symbols.close(fd);
      lib.close();
      throw error;
    }
  }

  /** Times `recv` reported ENOBUFS: the kernel dropped events (the sequence gaps say how many). */
  get overruns(): number {
    return this.#overruns;
  }

  /**
   * Waits until the socket has data, the timeout passes, or `close()` is called. The poll runs on
   * the FFI thread pool, so the event loop keeps running. Concurrent callers share one poll.
   */
  wait(timeoutMs = -1): Promise<WaitResult> {
    return this.#poll.wait(timeoutMs);
  }

  /**
   * Receives one datagram without waiting. Returns a view of it (valid until the next call), or
   * null when the socket is empty. An ENOBUFS report (the kernel dropped events because the
   * buffer was full) is counted in `overruns` and skipped. Throws on any other error.
   */
  receive(): Uint8Array | null {
    if (this.#closed) return null;
    for (;;) {
      const n = Number(
        this.#lib.symbols.recv(this.fd, this.#buffer, BigInt(this.#buffer.length), MSG_DONTWAIT),
      );
      if (n >= 0) return this.#buffer.subarray(0, n);
      const e = errnoOf(this.#lib);
      if (e === EAGAIN) return null;
      if (e === EINTR) continue;
      if (e === ENOBUFS) {
        this.#overruns++;
        continue;
      }
      throw new ProcConnectorError("recv", e);
    }
  }

  /**
   * Stops listening and releases the socket and the eventfd. A pending wait is woken first and
   * awaited, so its poll never sees a closed descriptor. Safe to call twice.
   */
  async close(): Promise<void> {
    if (this.#closed) return;
    this.#closed = true;
    const lib = this.#lib;
    await this.#poll.close();
    const request = listenRequest(PROC_CN_MCAST_IGNORE, this.events);
    lib.symbols.send(this.fd, request, BigInt(request.length), MSG_DONTWAIT);
    lib.symbols.close(this.#wakeFd);
    lib.symbols.close(this.fd);
    lib.close();
  }
}

/** nlmsghdr + cn_msg + the request: `proc_input {op, event_type}`, or the old bare `op`. */
function listenRequest(op: number, events: number | null): Uint8Array {
  const payload = events === null ? 4 : 8;
  const length = NLMSG_HEADER_BYTES + CN_MSG_BYTES + payload;
  const bytes = new Uint8Array(length);
  const view = new DataView(bytes.buffer);
  view.setUint32(0, length, true);
  view.setUint16(4, NLMSG_DONE, true);
  view.setUint32(12, Deno.pid, true);
  const cn = NLMSG_HEADER_BYTES;
  view.setUint32(cn, CN_IDX_PROC, true);
  view.setUint32(cn + 4, CN_VAL_PROC, true);
  view.setUint16(cn + 16, payload, true);
  view.setUint32(cn + CN_MSG_BYTES, op, true);
  if (events !== null) view.setUint32(cn + CN_MSG_BYTES + 4, events >>> 0, true);
  return bytes;
}

function libcFor(): Libc {
  if (Deno.build.os !== "linux") {
    throw new ProcConnectorError(`needs Linux, not "${Deno.build.os}"`, 0);
  }
  const opened = openLibc(SYMBOLS);
  if (typeof opened === "string") throw new ProcConnectorError(opened, 0);
  return opened;
}
