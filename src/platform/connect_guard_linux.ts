/**
 * Loads the connect guard (`bpf/connect_guard.bpf.o`, built from `bpf/connect_guard.bpf.c`) with
 * libbpf through FFI, fills its tables, attaches its four programs (`cgroup/connect4`,
 * `connect6`, `sendmsg4`, `sendmsg6`) to one cgroup v2 directory, and reads its decisions.
 *
 * libbpf is opened the way the eBPF tier opens it (`openLibbpf()` in `ebpf_linux.ts`: the host's
 * copy, else the copies a compiled binary embeds); this module binds the few more functions it
 * needs on the same library, found by its soname.
 *
 * The attachments are BPF links, which are file descriptors: {@link ConnectGuardProgram.close}
 * detaches them, and so does Sentry's death, even by SIGKILL. Nothing stays attached to the
 * cgroup. The guard then fails open: the cgroup's processes connect unguarded.
 *
 * @module
 */

import { errnoOf, openLibc } from "./_libc.ts";
import { openLibbpf } from "./ebpf_linux.ts";
import {
  configValue,
  GUARD_COUNTER,
  GUARD_COUNTER_SLOTS,
  type GuardTables,
  portKey,
  prefixKey,
  prefixValue,
  sumCounter,
} from "./connect_guard_record.ts";

const SYMBOLS = {
  libbpf_set_print: { parameters: ["function"], result: "pointer" },
  bpf_object__open_mem: { parameters: ["buffer", "usize", "pointer"], result: "pointer" },
  bpf_object__find_map_by_name: { parameters: ["pointer", "buffer"], result: "pointer" },
  bpf_object__find_program_by_name: { parameters: ["pointer", "buffer"], result: "pointer" },
  bpf_map__set_max_entries: { parameters: ["pointer", "u32"], result: "i32" },
  bpf_map__fd: { parameters: ["pointer"], result: "i32" },
  bpf_object__load: { parameters: ["pointer"], result: "i32" },
  bpf_program__attach_cgroup: { parameters: ["pointer", "i32"], result: "pointer" },
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
  open: { parameters: ["buffer", "i32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  clock_gettime: { parameters: ["i32", "buffer"], result: "i32" },
} as const;

const EPOLL_SYMBOLS = {
  epoll_wait: { parameters: ["i32", "buffer", "i32", "i32"], result: "i32", nonblocking: true },
} as const;

const SAMPLE_FN = { parameters: ["pointer", "pointer", "usize"], result: "i32" } as const;

type Lib = Deno.DynamicLibrary<typeof SYMBOLS>;
type Libc = Deno.DynamicLibrary<typeof LIBC_SYMBOLS>;

/** The programs, by their names in the object, and the maps the loader writes. */
export const GUARD_PROGRAMS = [
  "guard_connect4",
  "guard_connect6",
  "guard_sendmsg4",
  "guard_sendmsg6",
] as const;

/** The object committed beside its source. */
export const GUARD_OBJECT_URL = new URL("./bpf/connect_guard.bpf.o", import.meta.url);

/** The entries each prefix trie holds (both generations), as the object declares them. */
export const GUARD_PREFIX_CAPACITY = 65536;
/** The entries the port trie holds (both generations), as the object declares them. */
export const GUARD_PORT_CAPACITY = 262144;

/** Why the connect guard cannot run here: no libbpf, no permission, no cgroup v2 directory. */
export class ConnectGuardError extends Error {
  /** Builds the error; `log` may hold diagnostic lines (none since libbpf's printer is off). */
  constructor(message: string, readonly log: string[] = [], options?: ErrorOptions) {
    super(message, options);
    this.name = "ConnectGuardError";
  }
}

let lib: Lib | null = null;
let libc: Libc | null = null;

function libs(): { lib: Lib; libc: Libc } {
  if (libc === null) {
    const opened = openLibc(LIBC_SYMBOLS);
    if (typeof opened === "string") throw new ConnectGuardError(opened);
    libc = opened;
  }
  if (lib === null) {
    try {
      // Loads libbpf (host or embedded) with its dependencies; the dynamic loader then finds
      // the loaded copy by its soname.
      openLibbpf();
      lib = Deno.dlopen("libbpf.so.1", SYMBOLS);
    } catch (error) {
      throw new ConnectGuardError((error as Error).message, [], { cause: error });
    }
  }
  return { lib, libc };
}

function cstr(text: string): Uint8Array<ArrayBuffer> {
  return new TextEncoder().encode(text + "\0");
}

/** Options for {@link ConnectGuardProgram.open}. */
export interface ConnectGuardProgramOptions {
  /** The cgroup v2 directory whose processes (and their descendants' cgroups) are guarded. */
  cgroupDir: string;
  /** The first tables, written before any program is attached. */
  tables: GuardTables;
  /** Record one allowed decision in `sample` (0, the default: none). */
  sample?: number;
  /** The ring buffer's size in bytes, a power of two of at least 4096; default 1 MiB. */
  ringBytes?: number;
  /** The object's bytes; default the committed `connect_guard.bpf.o`. */
  object?: Uint8Array;
}

/** The programs' counters, summed over every CPU. */
export interface ConnectGuardCounters {
  /** Decisions taken. */
  checked: number;
  /** Calls failed with EPERM. */
  blocked: number;
  /** Denied destinations allowed because their response does not block. */
  reported: number;
  /** Records lost because the ring buffer was full. */
  drops: number;
  /** Lookups no table answered (allowed): 0 unless the tables are incomplete. */
  misses: number;
}

/** A key written to a map, to delete when its generation is refilled. */
interface Written {
  fd: number;
  key: Uint8Array<ArrayBuffer>;
}

/**
 * The loaded, filled and attached guard. Records reach `onRecord` during
 * {@link ConnectGuardProgram.drain}, synchronously; the bytes are only valid during the call.
 */
export class ConnectGuardProgram {
  readonly #lib: Lib;
  readonly #obj: Deno.PointerValue;
  readonly #links: Deno.PointerValue[];
  readonly #ring: Deno.PointerValue;
  readonly #callback: Deno.UnsafeCallback<typeof SAMPLE_FN>;
  readonly #epoll = Deno.dlopen("libc.so.6", EPOLL_SYMBOLS);
  readonly #epollFd: number;
  readonly #fds: { v4: number; v6: number; ports: number; config: number; counters: number };
  readonly #cpus: number;
  readonly #written: [Written[], Written[]] = [[], []];
  #gen: 0 | 1 = 0;
  #sample: number;
  #onRecord: ((bytes: Uint8Array) => void) | null = null;
  #closed = false;
  /** CLOCK_BOOTTIME minus the wall clock, in nanoseconds, measured at load. */
  readonly bootOffsetNs: bigint;
  /** The cgroup directory the programs are attached to. */
  readonly cgroupDir: string;

  private constructor(parts: {
    lib: Lib;
    obj: Deno.PointerValue;
    links: Deno.PointerValue[];
    ring: Deno.PointerValue;
    callback: Deno.UnsafeCallback<typeof SAMPLE_FN>;
    fds: { v4: number; v6: number; ports: number; config: number; counters: number };
    cpus: number;
    sample: number;
    bootOffsetNs: bigint;
    cgroupDir: string;
  }) {
    this.#lib = parts.lib;
    this.#obj = parts.obj;
    this.#links = parts.links;
    this.#ring = parts.ring;
    this.#callback = parts.callback;
    this.#epollFd = parts.lib.symbols.ring_buffer__epoll_fd(parts.ring);
    this.#fds = parts.fds;
    this.#cpus = parts.cpus;
    this.#sample = parts.sample;
    this.bootOffsetNs = parts.bootOffsetNs;
    this.cgroupDir = parts.cgroupDir;
  }

  /**
   * Loads the programs, fills generation 0 of the tables, and only then attaches the programs
   * to the cgroup, so that no connect is decided on empty tables. Throws a
   * {@link ConnectGuardError} (naming the errno) when the host does not allow it;
   * nothing stays loaded or attached then.
   */
  static open(options: ConnectGuardProgramOptions): ConnectGuardProgram {
    const { lib, libc } = libs();
    // No print callback: libbpf's printer is one for the whole process (see ebpf_linux.ts).
    lib.symbols.libbpf_set_print(null);
    // libbpf keeps a pointer to the buffer until the object is closed: it lives with the object.
    const objectBytes = new Uint8Array(options.object ?? Deno.readFileSync(GUARD_OBJECT_URL));
    const obj = lib.symbols.bpf_object__open_mem(objectBytes, BigInt(objectBytes.length), null);
    const links: Deno.PointerValue[] = [];
    let ring: Deno.PointerValue = null;
    let callback: Deno.UnsafeCallback<typeof SAMPLE_FN> | null = null;
    let cgroupFd = -1;
    let guard: ConnectGuardProgram | null = null;
    const release = () => {
      for (const link of links) lib.symbols.bpf_link__destroy(link);
      if (ring !== null) lib.symbols.ring_buffer__free(ring);
      callback?.close();
      if (obj !== null) lib.symbols.bpf_object__close(obj);
      if (cgroupFd >= 0) libc.symbols.close(cgroupFd);
      if (guard !== null) guard.#epoll.close();
    };
    const fail = (what: string, errno = errnoOf(libc)): never => {
      release();
      const hint = errno === 1 || errno === 13 ? " (needs root, or CAP_BPF and CAP_NET_ADMIN)" : "";
      throw new ConnectGuardError(`${what}: errno ${errno}${hint}`);
    };
    if (obj === null) fail("Cannot open the connect guard's eBPF object");
    const mapFd = (name: string) => {
      const map = lib.symbols.bpf_object__find_map_by_name(obj, cstr(name));
      if (map === null) fail(`The connect guard's object has no map "${name}"`);
      return map;
    };
    const decisions = mapFd("decisions");
    lib.symbols.bpf_map__set_max_entries(decisions, options.ringBytes ?? 1024 * 1024);
    if (lib.symbols.bpf_object__load(obj) !== 0) fail("Cannot load the connect guard");
    const fds = {
      v4: lib.symbols.bpf_map__fd(mapFd("prefixes4")),
      v6: lib.symbols.bpf_map__fd(mapFd("prefixes6")),
      ports: lib.symbols.bpf_map__fd(mapFd("ports")),
      config: lib.symbols.bpf_map__fd(mapFd("config")),
      counters: lib.symbols.bpf_map__fd(mapFd("counters")),
    };
    callback = new Deno.UnsafeCallback(SAMPLE_FN, (_ctx, data, size) => {
      if (data === null || guard === null || guard.#onRecord === null) return 0;
      guard.#onRecord(
        new Uint8Array(new Deno.UnsafePointerView(data).getArrayBuffer(Number(size))),
      );
      return 0;
    });
    ring = lib.symbols.ring_buffer__new(
      lib.symbols.bpf_map__fd(decisions),
      callback.pointer,
      null,
      null,
    );
    if (ring === null) fail("Cannot open the connect guard's ring buffer");
    const ts = new BigInt64Array(2);
    const CLOCK_BOOTTIME = 7;
    libc.symbols.clock_gettime(CLOCK_BOOTTIME, new Uint8Array(ts.buffer));
    const bootNs = ts[0]! * 1_000_000_000n + ts[1]!;
    guard = new ConnectGuardProgram({
      lib,
      obj,
      links,
      ring,
      callback,
      fds,
      cpus: Math.max(1, lib.symbols.libbpf_num_possible_cpus()),
      sample: options.sample ?? 0,
      bootOffsetNs: BigInt(Date.now()) * 1_000_000n - bootNs,
      cgroupDir: options.cgroupDir,
    });
    try {
      guard.#fill(options.tables, 0);
      guard.#setConfig(0);
    } catch (error) {
      release();
      throw error;
    }
    const O_RDONLY = 0, O_DIRECTORY = 0o200000, O_CLOEXEC = 0o2000000;
    cgroupFd = libc.symbols.open(cstr(options.cgroupDir), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (cgroupFd < 0) fail(`Cannot open the cgroup directory "${options.cgroupDir}"`);
    for (const name of GUARD_PROGRAMS) {
      const prog = lib.symbols.bpf_object__find_program_by_name(obj, cstr(name));
      if (prog === null) fail(`The connect guard's object has no program "${name}"`);
      const link = lib.symbols.bpf_program__attach_cgroup(prog, cgroupFd);
      if (link === null) {
        const errno = errnoOf(libc);
        fail(
          `Cannot attach "${name}" to "${options.cgroupDir}"${
            errno === 9 || errno === 22 ? " (is it a cgroup v2 directory?)" : ""
          }`,
          errno,
        );
      }
      links.push(link);
    }
    // The links hold the cgroup; its fd is not needed any more.
    libc.symbols.close(cgroupFd);
    cgroupFd = -1;
    return guard;
  }

  /** The live generation. */
  get generation(): 0 | 1 {
    return this.#gen;
  }

  /**
   * Swaps in new tables at once: fills the generation not in use (after deleting what it held
   * two updates ago), then flips `config.gen`. Throws a {@link ConnectGuardError} when the
   * tables do not fit; the live generation is untouched then.
   */
  replace(tables: GuardTables): void {
    this.#assertOpen();
    const next: 0 | 1 = this.#gen === 0 ? 1 : 0;
    this.#fill(tables, next);
    this.#setConfig(next);
  }

  /** Records one allowed decision in `sample` (0: none) from now on. */
  setSample(sample: number): void {
    this.#assertOpen();
    this.#sample = sample;
    this.#setConfig(this.#gen);
  }

  /**
   * Hands every decision waiting in the ring buffer to `onRecord`, synchronously, and returns
   * how many there were. Never blocks.
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
   * Waits until decisions are ready or `timeoutMs` passes, on a thread of the pool, so the
   * event loop runs meanwhile. Resolves true when decisions are ready.
   */
  async wait(timeoutMs: number): Promise<boolean> {
    if (this.#closed) return false;
    const events = new Uint8Array(12);
    const n = await this.#epoll.symbols.epoll_wait(this.#epollFd, events, 1, timeoutMs);
    return n > 0;
  }

  /** The programs' counters, summed over every CPU. */
  counters(): ConnectGuardCounters {
    const read = (slot: number) => {
      if (this.#closed) return 0;
      const value = new Uint8Array(8 * this.#cpus);
      const key = new Uint8Array(new Uint32Array([slot]).buffer);
      if (this.#lib.symbols.bpf_map_lookup_elem(this.#fds.counters, key, value) !== 0) return 0;
      return sumCounter(value);
    };
    void GUARD_COUNTER_SLOTS;
    return {
      checked: read(GUARD_COUNTER.CHECKED),
      blocked: read(GUARD_COUNTER.BLOCKED),
      reported: read(GUARD_COUNTER.REPORTED),
      drops: read(GUARD_COUNTER.DROPS),
      misses: read(GUARD_COUNTER.MISSES),
    };
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

  #assertOpen(): void {
    if (this.#closed) throw new ConnectGuardError("The connect guard is closed");
  }

  #fill(tables: GuardTables, gen: 0 | 1): void {
    const v4 = tables.prefixes.filter((p) => p.family === 4).length;
    const v6 = tables.prefixes.length - v4;
    // Each generation gets half of each map, so that an update always fits beside the live one.
    if (
      v4 > GUARD_PREFIX_CAPACITY / 2 || v6 > GUARD_PREFIX_CAPACITY / 2 ||
      tables.ports.length > GUARD_PORT_CAPACITY / 2
    ) {
      throw new ConnectGuardError(
        `The connect guard's tables are too large: ${v4} IPv4 and ${v6} IPv6 prefixes (at most ${
          GUARD_PREFIX_CAPACITY / 2
        } each), ${tables.ports.length} port blocks (at most ${GUARD_PORT_CAPACITY / 2})`,
      );
    }
    const lib = this.#lib;
    const old = this.#written[gen];
    for (const { fd, key } of old) lib.symbols.bpf_map_delete_elem(fd, key);
    old.length = 0;
    const put = (fd: number, key: Uint8Array<ArrayBuffer>, value: Uint8Array<ArrayBuffer>) => {
      if (lib.symbols.bpf_map_update_elem(fd, key, value, 0n) !== 0) {
        throw new ConnectGuardError(
          `Cannot write the connect guard's tables: errno ${errnoOf(libs().libc)}`,
        );
      }
      old.push({ fd, key });
    };
    for (const block of tables.ports) {
      put(this.#fds.ports, portKey(block, gen), new Uint8Array([block.verdict]));
    }
    for (const prefix of tables.prefixes) {
      put(
        prefix.family === 4 ? this.#fds.v4 : this.#fds.v6,
        prefixKey(prefix, gen),
        prefixValue(prefix, gen),
      );
    }
  }

  #setConfig(gen: 0 | 1): void {
    const key = new Uint8Array(4);
    if (
      this.#lib.symbols.bpf_map_update_elem(
        this.#fds.config,
        key,
        configValue(gen, this.#sample),
        0n,
      ) !== 0
    ) {
      throw new ConnectGuardError(
        `Cannot switch the connect guard's tables: errno ${errnoOf(libs().libc)}`,
      );
    }
    this.#gen = gen;
  }
}
