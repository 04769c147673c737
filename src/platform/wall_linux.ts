/**
 * The parts of the agent's wall that are neither Landlock nor seccomp, through FFI on the C
 * library, for the launcher of `sentry run` (every tier but seccomp, whose launcher has its
 * own): a private mount namespace in which Sentry's own directories are covered by an empty,
 * read-only tmpfs, and, for an agent that runs as root, the capabilities that would let it
 * switch Sentry off dropped from its bounding set.
 *
 * Everything here acts on the calling thread (`unshare(CLONE_NEWNS)` moves only the caller,
 * which is allowed in a process with several threads) or on the whole process (`prctl`
 * capability bounding set); the launcher calls it from the main thread, which then calls
 * `execve`, so the agent inherits the namespace and the bounding set.
 *
 * Why a mask holds: the tmpfs is mounted in the agent's namespace only, its propagation made
 * one-way (slave) first, so nothing reaches the host; and the agent, once under Landlock (which
 * forbids mount, umount and pivot_root to a restricted thread), cannot take it down. The only
 * other way back to the real directories, `/proc/PID/root` of a process outside the namespace,
 * is a ptrace-mode access that Landlock's scoping refuses.
 *
 * @module
 */

import { errnoOf, openLibc } from "./_libc.ts";
import { errnoName } from "./kernel_abi.ts";

const SYMBOLS = {
  unshare: { parameters: ["i32"], result: "i32" },
  mount: { parameters: ["buffer", "buffer", "buffer", "u64", "buffer"], result: "i32" },
  mount_flags: {
    name: "mount",
    parameters: ["pointer", "buffer", "pointer", "u64", "pointer"],
    result: "i32",
  },
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

const CLONE_NEWNS = 0x00020000;
const MS_RDONLY = 0x1;
const MS_NOSUID = 0x2;
const MS_NODEV = 0x4;
const MS_NOEXEC = 0x8;
const MS_REC = 0x4000;
const MS_SLAVE = 1 << 19;
const PR_CAPBSET_READ = 23;
const PR_CAPBSET_DROP = 24;

/**
 * The capabilities a root agent loses under `sentry run`, by number, with why. Each would let it
 * switch Sentry off from inside: load a kernel module, read raw memory or disks, detach
 * Sentry's eBPF programs by id (`CAP_BPF`, `CAP_SYS_ADMIN`), reboot, or reconfigure the LSMs
 * and the audit log; or reach a file by its handle (`open_by_handle_at`, `CAP_DAC_READ_SEARCH`),
 * past every path check: Landlock, the seccomp supervisor, and the tiers' path tracing.
 */
export const DROPPED_CAPABILITIES: ReadonlyArray<{ cap: number; name: string }> = [
  { cap: 2, name: "CAP_DAC_READ_SEARCH" },
  { cap: 16, name: "CAP_SYS_MODULE" },
  { cap: 17, name: "CAP_SYS_RAWIO" },
  { cap: 19, name: "CAP_SYS_PTRACE" },
  { cap: 21, name: "CAP_SYS_ADMIN" },
  { cap: 22, name: "CAP_SYS_BOOT" },
  { cap: 30, name: "CAP_AUDIT_CONTROL" },
  { cap: 32, name: "CAP_MAC_OVERRIDE" },
  { cap: 33, name: "CAP_MAC_ADMIN" },
  { cap: 38, name: "CAP_PERFMON" },
  { cap: 39, name: "CAP_BPF" },
];

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;
let libc: Libc | undefined;

/** A wall step the kernel refused, naming the call, the path and the errno. */
export class WallError extends Error {
  /** Wraps a refusal. */
  constructor(message: string) {
    super(message);
    this.name = "WallError";
  }
}

function lib(): Libc {
  if (libc !== undefined) return libc;
  const opened = openLibc(SYMBOLS);
  if (typeof opened === "string") throw new WallError(opened);
  libc = opened;
  return libc;
}

function cString(text: string): Uint8Array<ArrayBuffer> {
  const bytes = new TextEncoder().encode(text);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}

function fail(call: string, handle: Libc): never {
  throw new WallError(`${call} failed: ${errnoName(errnoOf(handle))}`);
}

/**
 * Moves the calling thread into a new mount namespace whose mounts receive the host's but send
 * nothing back (`MS_SLAVE`, recursively from `/`). Needs `CAP_SYS_ADMIN`.
 */
export function enterPrivateMountNamespace(): void {
  const handle = lib();
  if (handle.symbols.unshare(CLONE_NEWNS) !== 0) fail("unshare(CLONE_NEWNS)", handle);
  if (handle.symbols.mount_flags(null, cString("/"), null, BigInt(MS_REC | MS_SLAVE), null) !== 0) {
    fail('mount("/", MS_REC | MS_SLAVE)', handle);
  }
}

/**
 * Covers a directory with an empty tmpfs that nobody can read, write or enter (mode 0000,
 * read-only, nosuid, nodev, noexec), in the calling thread's mount namespace.
 */
export function maskDirectory(path: string): void {
  const handle = lib();
  const flags = MS_RDONLY | MS_NOSUID | MS_NODEV | MS_NOEXEC;
  const result = handle.symbols.mount(
    cString("sentry-guard"),
    cString(path),
    cString("tmpfs"),
    BigInt(flags),
    cString("size=4k,nr_inodes=1,mode=000"),
  );
  if (result !== 0) fail(`mount(tmpfs over "${path}")`, handle);
}

/**
 * Drops capabilities from the process's bounding set: a root program exec'd afterwards never
 * has them. Returns the names of those that were in the set. Needs `CAP_SETPCAP`.
 */
export function dropBoundingCapabilities(
  caps: ReadonlyArray<{ cap: number; name: string }> = DROPPED_CAPABILITIES,
): string[] {
  const handle = lib();
  const dropped: string[] = [];
  for (const { cap, name } of caps) {
    const held = handle.symbols.prctl(PR_CAPBSET_READ, BigInt(cap), 0n, 0n, 0n);
    if (held !== 1) continue; // Absent, or unknown to this kernel (EINVAL): nothing to drop.
    if (handle.symbols.prctl(PR_CAPBSET_DROP, BigInt(cap), 0n, 0n, 0n) !== 0) {
      fail(`prctl(PR_CAPBSET_DROP, ${name})`, handle);
    }
    dropped.push(name);
  }
  return dropped;
}
