/**
 * Landlock through FFI on the C library's `syscall()`: reading the kernel's ABI, and applying a
 * {@link LandlockPlan} to the calling thread (the seccomp tier's launcher does it on the thread
 * that then calls `execve`, so the agent and all its descendants inherit the domain).
 *
 * Landlock restricts one thread: there is no TSYNC. Deno's other threads (its Workers, its
 * thread pool for async file operations) stay unrestricted, which is why only the launcher,
 * which execs right after, applies a plan: execve ends every other thread.
 *
 * The syscall numbers (444-446) are the same on every architecture. The `statx` layout is too.
 *
 * @module
 */

import { errnoOf, openLibc } from "./_libc.ts";
import type { DirEntry, EntryType, LandlockPlan, PlanHost } from "./landlock_plan.ts";
import { FILE_ACCESS } from "./landlock_plan.ts";
import { errnoName } from "./kernel_abi.ts";

const SYMBOLS = {
  syscall: { parameters: ["i64", "u64", "u64", "u64"], result: "i64" },
  syscall_buf: { name: "syscall", parameters: ["i64", "buffer", "u64", "u64"], result: "i64" },
  syscall_rule: {
    name: "syscall",
    parameters: ["i64", "i64", "u64", "buffer", "u64"],
    result: "i64",
  },
  open: { parameters: ["buffer", "i32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  statx: { parameters: ["i32", "buffer", "i32", "u32", "buffer"], result: "i32" },
  prctl: { parameters: ["i32", "u64", "u64", "u64", "u64"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

const SYS_LANDLOCK_CREATE_RULESET = 444n;
const SYS_LANDLOCK_ADD_RULE = 445n;
const SYS_LANDLOCK_RESTRICT_SELF = 446n;
const LANDLOCK_CREATE_RULESET_VERSION = 1n;
const LANDLOCK_RULE_PATH_BENEATH = 1n;
const LANDLOCK_RULE_NET_PORT = 2n;
const NET_CONNECT_TCP = 2n;
const PR_GET_NO_NEW_PRIVS = 39;
const O_PATH = 0o10000000;
const O_NOFOLLOW = 0o400000;
const O_CLOEXEC = 0o2000000;
const AT_EMPTY_PATH = 0x1000;
const STATX_TYPE = 0x1;
const S_IFMT = 0o170000;
const S_IFDIR = 0o040000;
const S_IFLNK = 0o120000;
const ENOENT = 2;
const ENOTDIR = 20;
const ELOOP = 40;

let libc: Libc | null | undefined;
let unavailable = "";

function open(): Libc | null {
  if (libc !== undefined) return libc;
  libc = null;
  if (Deno.build.os !== "linux") {
    unavailable = `Landlock needs Linux, not ${Deno.build.os}`;
    return null;
  }
  const opened = openLibc(SYMBOLS);
  if (typeof opened === "string") {
    unavailable = opened;
    return null;
  }
  libc = opened;
  return libc;
}

const errno = errnoOf;

/** What the kernel offers: its Landlock ABI (0 when there is none), and why not. */
export interface LandlockSupport {
  abi: number;
  /** Why Landlock cannot be used here, or null when `abi` is 1 or more. */
  reason: string | null;
}

/** Asks the kernel for its Landlock ABI (`landlock_create_ruleset` with the version flag). */
export function landlockAbi(): LandlockSupport {
  const handle = open();
  if (handle === null) return { abi: 0, reason: unavailable };
  const abi = Number(
    handle.symbols.syscall(SYS_LANDLOCK_CREATE_RULESET, 0n, 0n, LANDLOCK_CREATE_RULESET_VERSION),
  );
  if (abi >= 1) return { abi, reason: null };
  const code = errno(handle);
  const reason = code === 38
    ? "this kernel has no Landlock (ENOSYS)"
    : code === 95
    ? "Landlock is built but not enabled (EOPNOTSUPP: add landlock to the lsm= boot parameter)"
    : `landlock_create_ruleset failed: ${errnoName(code)}`;
  return { abi: 0, reason };
}

/** A plan the kernel refused, or a thread that cannot be restricted. */
export class LandlockError extends Error {
  /** Builds the error. */
  constructor(message: string, options?: ErrorOptions) {
    super(message, options);
    this.name = "LandlockError";
  }
}

/** What {@link applyLandlock} did. */
export interface LandlockApplied {
  /** Rules added to the ruleset. */
  rules: number;
  /** Paths of the plan that no longer exist (or became symlinks): their rules were left out. */
  skipped: string[];
  /** Time taken, in ms. */
  ms: number;
}

/**
 * Restricts the **calling thread** (and whatever it execs or forks afterwards) to `plan`:
 * creates the ruleset, opens each rule's path with O_PATH (not following a final symlink) and
 * adds it, then `landlock_restrict_self`. A path that vanished since the plan was made is
 * skipped and counted (leaving out a rule only grants less); a directory that became a file
 * keeps only file rights. `prctl(PR_SET_NO_NEW_PRIVS)` must already be set on this thread.
 *
 * @throws {LandlockError} naming the call and errno when the kernel refuses: the caller must
 * then not run the agent.
 */
export function applyLandlock(plan: LandlockPlan): LandlockApplied {
  const started = performance.now();
  const handle = open();
  if (handle === null) throw new LandlockError(`Cannot apply Landlock: ${unavailable}`);
  const s = handle.symbols;
  const support = landlockAbi();
  if (support.abi < plan.abi) {
    throw new LandlockError(
      `Cannot apply Landlock: the plan is for ABI ${plan.abi}, the kernel has ${
        support.reason ?? `ABI ${support.abi}`
      }`,
    );
  }
  if (s.prctl(PR_GET_NO_NEW_PRIVS, 0n, 0n, 0n, 0n) !== 1) {
    throw new LandlockError("Cannot apply Landlock: no_new_privs is not set on this thread");
  }
  // struct landlock_ruleset_attr { u64 handled_access_fs, handled_access_net, scoped; }: its
  // size grew with the ABI (net in 4, scoped in 6); an older kernel rejects a larger one.
  const attr = new Uint8Array(24);
  const view = new DataView(attr.buffer);
  view.setBigUint64(0, BigInt(plan.handledFs), true);
  const tcpDenied = new Uint8Array(65536);
  for (const [lo, hi] of plan.tcpDenied ?? []) tcpDenied.fill(1, lo, hi + 1);
  const tcp = (plan.tcpDenied ?? []).length > 0;
  if (tcp) view.setBigUint64(8, NET_CONNECT_TCP, true);
  view.setBigUint64(16, BigInt(plan.scoped), true);
  const size = plan.abi >= 6 ? 24 : plan.abi >= 4 ? 16 : 8;
  if (plan.scoped !== 0 && size < 24) {
    throw new LandlockError(
      `Cannot apply Landlock: scopes need ABI 6, the plan is for ${plan.abi}`,
    );
  }
  const ruleset = Number(s.syscall_buf(SYS_LANDLOCK_CREATE_RULESET, attr, BigInt(size), 0n));
  if (ruleset < 0) {
    throw new LandlockError(
      `Cannot apply Landlock: landlock_create_ruleset failed: ${errnoName(errno(handle))}`,
    );
  }
  const skipped: string[] = [];
  let added = 0;
  // struct landlock_path_beneath_attr { u64 allowed_access; s32 parent_fd; } __packed
  const beneath = new Uint8Array(12);
  const beneathView = new DataView(beneath.buffer);
  const stx = new Uint8Array(256);
  try {
    for (const rule of plan.rules) {
      const fd = s.open(cString(rule.path), O_PATH | O_NOFOLLOW | O_CLOEXEC, 0);
      if (fd < 0) {
        const code = errno(handle);
        if (code === ENOENT || code === ENOTDIR || code === ELOOP) {
          skipped.push(rule.path);
          continue;
        }
        throw new LandlockError(
          `Cannot apply Landlock: cannot open "${rule.path}": ${errnoName(code)}`,
        );
      }
      try {
        if (s.statx(fd, EMPTY, AT_EMPTY_PATH, STATX_TYPE, stx) !== 0) {
          throw new LandlockError(
            `Cannot apply Landlock: statx("${rule.path}") failed: ${errnoName(errno(handle))}`,
          );
        }
        const type = new DataView(stx.buffer).getUint16(0x1c, true) & S_IFMT;
        if (type === S_IFLNK) {
          skipped.push(rule.path);
          continue;
        }
        const access = type === S_IFDIR ? rule.access : rule.access & FILE_ACCESS;
        if (access === 0) {
          skipped.push(rule.path);
          continue;
        }
        beneathView.setBigUint64(0, BigInt(access), true);
        beneathView.setInt32(8, fd, true);
        const result = s.syscall_rule(
          SYS_LANDLOCK_ADD_RULE,
          BigInt(ruleset),
          LANDLOCK_RULE_PATH_BENEATH,
          beneath,
          0n,
        );
        if (Number(result) !== 0) {
          throw new LandlockError(
            `Cannot apply Landlock: landlock_add_rule("${rule.path}") failed: ${
              errnoName(errno(handle))
            }`,
          );
        }
        added++;
      } finally {
        s.close(fd);
      }
    }
    if (tcp) {
      // struct landlock_net_port_attr { u64 allowed_access; u64 port; } __packed: every port
      // but the denied ones may be connected to (Landlock only grants).
      const port = new Uint8Array(16);
      const portView = new DataView(port.buffer);
      portView.setBigUint64(0, NET_CONNECT_TCP, true);
      for (let p = 0; p <= 65535; p++) {
        if (tcpDenied[p] === 1) continue;
        portView.setBigUint64(8, BigInt(p), true);
        if (
          Number(
            s.syscall_rule(
              SYS_LANDLOCK_ADD_RULE,
              BigInt(ruleset),
              LANDLOCK_RULE_NET_PORT,
              port,
              0n,
            ),
          ) !==
            0
        ) {
          throw new LandlockError(
            `Cannot apply Landlock: landlock_add_rule(TCP port ${p}) failed: ${
              errnoName(errno(handle))
            }`,
          );
        }
      }
    }
    if (Number(s.syscall(SYS_LANDLOCK_RESTRICT_SELF, BigInt(ruleset), 0n, 0n)) !== 0) {
      throw new LandlockError(
        `Cannot apply Landlock: landlock_restrict_self failed: ${errnoName(errno(handle))}`,
      );
    }
  } finally {
    s.close(ruleset);
  }
  return { rules: added, skipped, ms: performance.now() - started };
}

/**
 * The file system as {@link planLandlock} reads it, through Deno's synchronous calls: real
 * paths, `lstat` types and directory listings.
 */
export function hostPlanFs(): PlanHost {
  return {
    realPath(path) {
      try {
        return Deno.realPathSync(path);
      } catch {
        return null;
      }
    },
    typeOf(path) {
      try {
        return entryType(Deno.lstatSync(path));
      } catch {
        return null;
      }
    },
    list(dir) {
      const out: DirEntry[] = [];
      for (const entry of Deno.readDirSync(dir)) {
        out.push({ name: entry.name, type: entryType(entry) });
      }
      return out;
    },
  };
}

function entryType(info: { isFile: boolean; isDirectory: boolean; isSymlink: boolean }): EntryType {
  return info.isSymlink
    ? "symlink"
    : info.isDirectory
    ? "directory"
    : info.isFile
    ? "file"
    : "other";
}

const EMPTY = new Uint8Array(1);
const encoder = new TextEncoder();

function cString(text: string): Uint8Array {
  const bytes = encoder.encode(text);
  const out = new Uint8Array(bytes.length + 1);
  out.set(bytes);
  return out;
}
