/**
 * Loads Sentry's eBPF program (`bpf/sentry.bpf.o`, built from `bpf/sentry.bpf.c`) with libbpf
 * through FFI, attaches its tracepoints, and reads its ring buffer.
 *
 * libbpf comes from the host (`libbpf.so.1`) or, in a compiled binary on a host without it, from
 * the copies `deno task compile` embeds (`bpf/lib/`): they are written to memfds and opened from
 * `/proc/self/fd/N` in dependency order (libz, libelf, libbpf), so that nothing touches the disk.
 *
 * {@link EbpfTracer} owns every kernel resource (the object, its maps and links, the ring
 * buffer); `close()` releases them. The attachments are file descriptors, so they also go away
 * when Sentry dies, even by SIGKILL: no program is ever left behind.
 *
 * @module
 */

import { errnoOf, openLibc } from "./_libc.ts";
import { COUNTER, COUNTER_SLOTS, sumPerCpu } from "./ebpf_record.ts";
import {
  listProcessGroup,
  readPidfdTarget,
  readTarget,
  type TargetInfo,
} from "./ebpf_target_linux.ts";

const LIBBPF_SYMBOLS = {
  libbpf_set_print: { parameters: ["function"], result: "pointer" },
  bpf_object__open_mem: { parameters: ["buffer", "usize", "pointer"], result: "pointer" },
  bpf_object__find_map_by_name: { parameters: ["pointer", "buffer"], result: "pointer" },
  bpf_map__set_max_entries: { parameters: ["pointer", "u32"], result: "i32" },
  bpf_map__fd: { parameters: ["pointer"], result: "i32" },
  bpf_object__load: { parameters: ["pointer"], result: "i32" },
  bpf_object__next_program: { parameters: ["pointer", "pointer"], result: "pointer" },
  bpf_program__name: { parameters: ["pointer"], result: "pointer" },
  bpf_program__attach: { parameters: ["pointer"], result: "pointer" },
  bpf_link__destroy: { parameters: ["pointer"], result: "i32" },
  bpf_object__close: { parameters: ["pointer"], result: "void" },
  bpf_map_update_elem: { parameters: ["i32", "buffer", "buffer", "u64"], result: "i32" },
  bpf_map_lookup_elem: { parameters: ["i32", "buffer", "buffer"], result: "i32" },
  bpf_map_delete_elem: { parameters: ["i32", "buffer"], result: "i32" },
  libbpf_num_possible_cpus: { parameters: [], result: "i32" },
  ring_buffer__new: { parameters: ["i32", "function", "pointer", "pointer"], result: "pointer" },
  ring_buffer__consume: { parameters: ["pointer"], result: "i32" },
  ring_buffer__epoll_fd: { parameters: ["pointer"], result: "i32" },
  ring_buffer__free: { parameters: ["pointer"], result: "void" },
} as const;

const LIBC_SYMBOLS = {
  __errno_location: { parameters: [], result: "pointer" },
  memfd_create: { parameters: ["buffer", "u32"], result: "i32" },
  write: { parameters: ["i32", "buffer", "usize"], result: "isize" },
  close: { parameters: ["i32"], result: "i32" },
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

const EPOLL_SYMBOLS = {
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32", nonblocking: true },
} as const;

type Libbpf = Deno.DynamicLibrary<typeof LIBBPF_SYMBOLS>;
const SAMPLE_FN = { parameters: ["pointer", "pointer", "usize"], result: "i32" } as const;
type SampleCallback = Deno.UnsafeCallback<typeof SAMPLE_FN>;
type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>;

/** Why the eBPF tier cannot run here: no libbpf, no permission, a verifier refusal. */
export class EbpfError extends Error {
  /** Builds the error; `log` may hold diagnostic lines (none since libbpf's printer is off). */
  constructor(message: string, readonly log: string[] = []) {
    super(message);
    this.name = "EbpfError";
  }
}

/** The libraries libbpf needs, in the order they must be opened. */
const EMBEDDED = ["libz.so.1", "libelf.so.1", "libbpf.so.1"] as const;

let libc: Libc | null = null;
let libbpf: Libbpf | null = null;
/** Embedded libraries opened from memfds; they stay open with the process (dlclose is unsafe). */
const keep: Deno.DynamicLibrary<Record<string, never>>[] = [];

function readEnv(name: string): string | undefined {
  try {
    return Deno.env.get(name);
  } catch {
    return undefined;
  }
}

function libcFor(): Libc {
  if (libc !== null) return libc;
  const opened = openLibc(LIBC_SYMBOLS);
  if (typeof opened === "string") throw new EbpfError(opened);
  libc = opened;
  return libc;
}

const errno = errnoOf;

function cstr(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(text + "\0");
}

/**
 * Writes an embedded copy of a library to a memfd and returns the path to open it by, or null
 * when this build embeds none. The fd stays open (close-on-exec) for as long as it is mapped.
 */
function embeddedPath(c: Libc, name: string): string | null {
  let bytes: Uint8Array<ArrayBuffer>;
  try {
    bytes = Deno.readFileSync(new URL(`./bpf/lib/${name}`, import.meta.url));
  } catch {
    return null;
  }
  const MFD_CLOEXEC = 1;
  const fd = c.symbols.memfd_create(cstr(name), MFD_CLOEXEC);
  if (fd < 0) throw new EbpfError(`Cannot load the embedded "${name}": memfd_create failed`);
  let off = 0;
  while (off < bytes.length) {
    const n = Number(c.symbols.write(fd, bytes.subarray(off), BigInt(bytes.length - off)));
    if (n <= 0) {
      c.symbols.close(fd);
      throw new EbpfError(`Cannot load the embedded "${name}": write failed`);
    }
    off += n;
  }
  return `/proc/self/fd/${fd}`;
}

/**
 * Opens libbpf: the host's `libbpf.so.1`, else the embedded copies, each dependency first (the
 * dynamic loader then finds them by their sonames). Throws an {@link EbpfError} that says what
 * was tried.
 */
export function openLibbpf(): Libbpf {
  if (libbpf !== null) return libbpf;
  const c = libcFor();
  let host: string;
  // SENTRY_LIBBPF=embedded skips the host's copy (one too old, say, or to test the embedded one).
  const embeddedOnly = readEnv("SENTRY_LIBBPF") === "embedded";
  try {
    if (embeddedOnly) throw new Error("SENTRY_LIBBPF=embedded");
    libbpf = Deno.dlopen("libbpf.so.1", LIBBPF_SYMBOLS);
    return libbpf;
  } catch (error) {
    host = (error as Error).message;
  }
  for (const name of EMBEDDED) {
    // The host's libz and libelf are used when present; the embedded ones are a fallback.
    if (name !== "libbpf.so.1" && !embeddedOnly) {
      try {
        keep.push(Deno.dlopen(name, {}));
        continue;
      } catch {
        // Use the embedded one.
      }
    }
    const path = embeddedPath(c, name);
    if (path === null) {
      throw new EbpfError(
        `Cannot open libbpf: the host has no "libbpf.so.1" (${host}) and this build embeds no "${name}" (install libbpf1, or use a release binary)`,
      );
    }
    if (name === "libbpf.so.1") {
      libbpf = Deno.dlopen(path, LIBBPF_SYMBOLS);
      return libbpf;
    }
    keep.push(Deno.dlopen(path, {}));
  }
  throw new EbpfError("Cannot open libbpf");
}

/**
 * The default ring buffer: 4 MiB holds about 25,000 records, a burst of more than a second at
 * the journal's sustained rate, and costs at most 8 MiB of Sentry's memory (its data pages are
 * mapped twice).
 */
export const DEFAULT_RING_BYTES = 4 * 1024 * 1024;

/** The program object committed beside its source. */
export const BPF_OBJECT_URL = new URL("./bpf/sentry.bpf.o", import.meta.url);

/** Options for {@link EbpfTracer.open}. */
export interface EbpfTracerOptions {
  /**
   * The ring buffer's size in bytes, a power of two of at least 4096; default
   * {@link DEFAULT_RING_BYTES}. Its pages are mapped into Sentry: the size is memory.
   */
  ringBytes?: number;
  /** The object's bytes; default the committed `sentry.bpf.o`. */
  object?: Uint8Array;
}

/** The program's counters, summed over every CPU. */
export interface EbpfCounters {
  /** Records lost because the ring buffer was full: the exact number of events not seen. */
  drops: number;
  /** Forks of tracked processes that could not be tracked (the tgid map was full). */
  untracked: number;
  /** 32-bit (int 0x80) syscalls by tracked processes, which the program does not decode. */
  compat: number;
  /** io_uring instances set up by tracked processes: their I/O bypasses the syscall hooks. */
  ioUring: number;
  /** Records written to the ring buffer. */
  emitted: number;
  /**
   * Threads of tracked processes the kernel could not note (its thread table was full): a
   * signal or trace aimed at one is classified from /proc instead.
   */
  threadsLost: number;
}

/**
 * One loaded and attached copy of the program. Records reach `onRecord` during
 * {@link EbpfTracer.drain}, synchronously, on the calling thread; the bytes are only valid
 * during the call.
 */
export class EbpfTracer {
  readonly #lib: Libbpf;
  readonly #obj: Deno.PointerValue;
  readonly #links: Deno.PointerValue[];
  readonly #trackedFd: number;
  readonly #countersFd: number;
  readonly #ring: Deno.PointerValue;
  readonly #callback: SampleCallback;
  readonly #epollFd: number;
  readonly #cpus: number;
  readonly #epoll = Deno.dlopen("libc.so.6", EPOLL_SYMBOLS);
  #onRecord: ((bytes: Uint8Array) => void) | null = null;
  #closed = false;
  /** CLOCK_BOOTTIME minus the wall clock, in nanoseconds, measured at load. */
  readonly bootOffsetNs: bigint;

  private constructor(parts: {
    lib: Libbpf;
    obj: Deno.PointerValue;
    links: Deno.PointerValue[];
    trackedFd: number;
    countersFd: number;
    ring: Deno.PointerValue;
    callback: SampleCallback;
    epollFd: number;
    cpus: number;
    bootOffsetNs: bigint;
  }) {
    this.#lib = parts.lib;
    this.#obj = parts.obj;
    this.#links = parts.links;
    this.#trackedFd = parts.trackedFd;
    this.#countersFd = parts.countersFd;
    this.#ring = parts.ring;
    this.#callback = parts.callback;
    this.#epollFd = parts.epollFd;
    this.#cpus = parts.cpus;
    this.bootOffsetNs = parts.bootOffsetNs;
  }

  /**
   * Loads the program, attaches its six tracepoints and opens its ring buffer. Throws an
   * {@link EbpfError} (naming the errno) when the host does not allow it; nothing is
   * left loaded then.
   */
  static open(options: EbpfTracerOptions = {}): EbpfTracer {
    const lib = openLibbpf();
    const c = libcFor();
    // No print callback: libbpf's printer is one for the whole process, and a JS callback
    // called from another isolate's thread (a second module loading a BPF object) crashes it.
    // The errno and its hint name the failure; the verifier's own log is not kept.
    lib.symbols.libbpf_set_print(null);
    const bytes = options.object ?? Deno.readFileSync(BPF_OBJECT_URL);
    // libbpf keeps a pointer to the buffer until the object is closed: keep it alive with it.
    const objectBytes = new Uint8Array(bytes);
    const obj = lib.symbols.bpf_object__open_mem(objectBytes, BigInt(objectBytes.length), null);
    if (obj === null) {
      throw new EbpfError(`Cannot open the eBPF object: errno ${errno(c)}`);
    }
    const links: Deno.PointerValue[] = [];
    let ring: Deno.PointerValue = null;
    let callback: SampleCallback | null = null;
    const fail = (what: string): never => {
      for (const link of links) lib.symbols.bpf_link__destroy(link);
      if (ring !== null) lib.symbols.ring_buffer__free(ring);
      callback?.close();
      lib.symbols.bpf_object__close(obj);
      const e = errno(c);
      const hint = e === 1 || e === 13 ? " (needs root, or CAP_BPF and CAP_PERFMON)" : "";
      throw new EbpfError(`${what}: errno ${e}${hint}`);
    };
    const map = (name: string) => {
      const m = lib.symbols.bpf_object__find_map_by_name(obj, cstr(name));
      if (m === null) fail(`The eBPF object has no map "${name}"`);
      return m;
    };
    const events = map("events");
    lib.symbols.bpf_map__set_max_entries(events, options.ringBytes ?? DEFAULT_RING_BYTES);
    if (lib.symbols.bpf_object__load(obj) !== 0) fail("Cannot load the eBPF program");
    let prog = lib.symbols.bpf_object__next_program(obj, null);
    while (prog !== null) {
      const link = lib.symbols.bpf_program__attach(prog);
      if (link === null) {
        const name = new Deno.UnsafePointerView(lib.symbols.bpf_program__name(prog)!).getCString();
        fail(`Cannot attach the eBPF program "${name}"`);
      }
      links.push(link);
      prog = lib.symbols.bpf_object__next_program(obj, prog);
    }
    let tracer: EbpfTracer | null = null;
    callback = new Deno.UnsafeCallback(
      SAMPLE_FN,
      (_ctx, data, size) => {
        if (data === null || tracer === null || tracer.#onRecord === null) return 0;
        const view = new Deno.UnsafePointerView(data);
        tracer.#onRecord(new Uint8Array(view.getArrayBuffer(Number(size))));
        return 0;
      },
    );
    ring = lib.symbols.ring_buffer__new(
      lib.symbols.bpf_map__fd(events),
      callback.pointer,
      null,
      null,
    );
    if (ring === null) fail("Cannot open the eBPF ring buffer");
    const ts = new BigInt64Array(2);
    const CLOCK_BOOTTIME = 7;
    c.symbols.clock_gettime(CLOCK_BOOTTIME, new Uint8Array(ts.buffer));
    const bootNs = ts[0]! * 1_000_000_000n + ts[1]!;
    const wallNs = BigInt(Date.now()) * 1_000_000n;
    tracer = new EbpfTracer({
      lib,
      obj,
      links,
      trackedFd: lib.symbols.bpf_map__fd(map("tracked")),
      countersFd: lib.symbols.bpf_map__fd(map("counters")),
      ring,
      callback,
      epollFd: lib.symbols.ring_buffer__epoll_fd(ring),
      cpus: Math.max(1, lib.symbols.libbpf_num_possible_cpus()),
      bootOffsetNs: wallNs - bootNs,
    });
    return tracer;
  }

  /** Tracks a process: its syscalls are recorded, and so are those of every child it forks. */
  track(pid: number): void {
    const key = new Uint8Array(new Uint32Array([pid]).buffer);
    if (
      this.#lib.symbols.bpf_map_update_elem(this.#trackedFd, key, new Uint8Array([1]), 0n) !== 0
    ) {
      throw new EbpfError(`Cannot track pid ${pid}: errno ${errno(libcFor())}`);
    }
  }

  /** Whether the kernel tracks a process (it leaves the map when its whole group has exited). */
  isTracked(pid: number): boolean {
    const key = new Uint8Array(new Uint32Array([pid]).buffer);
    return this.#lib.symbols.bpf_map_lookup_elem(this.#trackedFd, key, new Uint8Array(1)) === 0;
  }

  /** Stops tracking a process (its children stay tracked). */
  untrack(pid: number): void {
    const key = new Uint8Array(new Uint32Array([pid]).buffer);
    this.#lib.symbols.bpf_map_delete_elem(this.#trackedFd, key);
  }

  /**
   * Hands every record waiting in the ring buffer to `onRecord`, synchronously, and returns how
   * many there were. Never blocks.
   */
  drain(onRecord: (bytes: Uint8Array) => void): number {
    if (this.#closed) return 0;
    this.#onRecord = onRecord;
    try {
      const n = this.#lib.symbols.ring_buffer__consume(this.#ring);
      return n < 0 ? 0 : n;
    } finally {
      this.#onRecord = null;
    }
  }

  /**
   * Waits until records are ready or `timeoutMs` passes, on a thread of the pool, so the event
   * loop runs meanwhile. Resolves true when records are ready.
   */
  async wait(timeoutMs: number): Promise<boolean> {
    if (this.#closed) return false;
    const events = new Uint8Array(12);
    const n = await this.#epoll.symbols.epoll_wait(this.#epollFd, events, 1, timeoutMs);
    return n > 0;
  }

  /** The program's counters, summed over every CPU. */
  counters(): EbpfCounters {
    const read = (slot: number) => {
      const value = new Uint8Array(8 * this.#cpus);
      const key = new Uint8Array(new Uint32Array([slot]).buffer);
      if (this.#lib.symbols.bpf_map_lookup_elem(this.#countersFd, key, value) !== 0) return 0;
      return sumPerCpu(value);
    };
    void COUNTER_SLOTS;
    return {
      drops: read(COUNTER.DROPS),
      untracked: read(COUNTER.UNTRACKED),
      compat: read(COUNTER.COMPAT),
      ioUring: read(COUNTER.IO_URING),
      emitted: read(COUNTER.EMITTED),
      threadsLost: read(COUNTER.THREADS_LOST),
    };
  }

  /**
   * A control record's target as /proc shows it now (its process, name and process group), or
   * null when it is gone. Read while the record is fresh.
   */
  describe(pid: number): TargetInfo | null {
    return readTarget(pid);
  }

  /** The host pid that process `pid`'s pidfd `fd` holds, from its fdinfo; null when unknown. */
  pidfdTarget(pid: number, fd: number): number | null {
    return readPidfdTarget(pid, fd);
  }

  /** The live members of a process group. */
  groupMembers(pgid: number): number[] {
    return listProcessGroup(pgid);
  }

  /** Detaches every program and frees the maps and the ring buffer. Safe to call twice. */
  close(): void {
    if (this.#closed) return;
    this.#closed = true;
    for (const link of this.#links) this.#lib.symbols.bpf_link__destroy(link);
    this.#lib.symbols.ring_buffer__free(this.#ring);
    this.#lib.symbols.bpf_object__close(this.#obj);
    this.#callback.close();
    this.#epoll.close();
  }
}
