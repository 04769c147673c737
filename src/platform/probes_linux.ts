/**
 * Probes of what the host lets Sentry see and do, for `sentry doctor`: whether `/proc` is
 * readable and how it is mounted, the inotify limits, the Yama ptrace scope, whether fanotify and
 * Landlock work, whether strace is installed, and whether a directory is writable.
 *
 * The parsers are pure functions over text, tested on captured samples. The readers are thin:
 * they read a file or make one system call, never throw, and say why when they cannot answer.
 * fanotify and Landlock have no file to read, so they are probed by calling the kernel through
 * libc (FFI): `fanotify_init` then `close`, and `landlock_create_ruleset` with the version flag,
 * which creates nothing.
 *
 * @module
 */

import { errnoName } from "./kernel_abi.ts";

import { dirname, join } from "node:path";

// --- Pure parsers ------------------------------------------------------------------------------

/** Reads a sysctl file's text (`/proc/sys/...`) as one integer, or null when it is not one. */
export function parseSysctlInt(text: string): number | null {
  const value = text.trim();
  return /^-?\d+$/.test(value) ? Number(value) : null;
}

/** How `/proc` is mounted: the options that decide what Sentry can see there. */
export interface ProcMount {
  /** The mount's own options and the file system's options, in order (`rw`, `hidepid=2`...). */
  options: string[];
  /**
   * `hidepid`: `0`/`off` shows every process; `1`/`noaccess` and `2`/`invisible` hide other
   * users' processes (`4`/`ptraceable` shows only those this user may ptrace). Null when unset.
   */
  hidepid: string | null;
  /** `subset=pid` hides everything but the process directories (no `/proc/sys`, `/proc/net`). */
  subset: string | null;
}

/**
 * Finds the `/proc` mount in the text of `/proc/self/mountinfo` (see proc(5)). When `/proc` is
 * mounted more than once, the last mount is the one visible. Returns null when there is none.
 */
export function parseProcMount(mountinfo: string): ProcMount | null {
  let found: ProcMount | null = null;
  for (const line of mountinfo.split("\n")) {
    const fields = line.trim().split(" ");
    // ID PARENT MAJ:MIN ROOT MOUNTPOINT OPTIONS [OPTIONAL...] - FSTYPE SOURCE SUPEROPTIONS
    const dash = fields.indexOf("-");
    if (dash < 6 || fields[4] !== "/proc" || fields[dash + 1] !== "proc") continue;
    const options = [
      ...(fields[5] ?? "").split(","),
      ...(fields[dash + 3] ?? "").split(","),
    ].filter((o) => o !== "");
    const value = (name: string) =>
      options.findLast((o) => o.startsWith(`${name}=`))?.slice(name.length + 1) ?? null;
    found = { options, hidepid: value("hidepid"), subset: value("subset") };
  }
  return found;
}

/** Whether a `hidepid` value hides processes of other users. */
export function hidesOtherUsers(hidepid: string | null): boolean {
  return hidepid !== null && hidepid !== "0" && hidepid !== "off";
}

/** What a Yama `ptrace_scope` value allows, in words (see the kernel's Yama documentation). */
export function describePtraceScope(scope: number): string {
  switch (scope) {
    case 0:
      return "classic: a process may trace any process of its user";
    case 1:
      return "restricted: a process may trace only its descendants";
    case 2:
      return "admin-only: tracing needs CAP_SYS_PTRACE";
    case 3:
      return "no attach: ptrace attach is disabled until reboot";
    default:
      return `unknown scope ${scope}`;
  }
}

/** The version from `strace -V` output (`strace -- version 6.1`), or null. */
export function parseStraceVersion(text: string): string | null {
  return /\bversion\s+(\d+(?:\.\d+)*)/.exec(text)?.[1] ?? null;
}

/** Names of the errno values the probes meet, for messages (the same on x86_64 and aarch64). */
// --- Readers -----------------------------------------------------------------------------------

function readText(path: string): string | null {
  try {
    return Deno.readTextFileSync(path);
  } catch {
    return null;
  }
}

function reason(error: unknown): string {
  return error instanceof Error ? error.message : String(error);
}

/** One `/proc` file or directory Sentry's sensors read, and whether it could be read. */
export interface ProcPathAccess {
  path: string;
  /** What the sensors use it for. */
  use: string;
  readable: boolean;
  /** Why not, when it could not be read. */
  error: string | null;
}

/** What {@link probeProc} found. */
export interface ProcAccess {
  /** Whether `/proc/self/stat` could be read: without it, no sensor works. */
  usable: boolean;
  paths: ProcPathAccess[];
  /** How `/proc` is mounted, or null when `/proc/self/mountinfo` cannot be read. */
  mount: ProcMount | null;
}

const PROC_PATHS: readonly { path: string; use: string; dir?: boolean }[] = [
  { path: "/proc/self/stat", use: "the process tree" },
  { path: "/proc/self/fd", use: "open files", dir: true },
  { path: "/proc/self/fdinfo", use: "read or write flags", dir: true },
  { path: "/proc/self/net/tcp", use: "connections" },
  { path: "/proc/loadavg", use: "the short-lived process count" },
  { path: "/proc/stat", use: "the boot time" },
];

/** Reads the `/proc` files the sensors depend on, and how `/proc` is mounted. */
export function probeProc(): ProcAccess {
  const paths = PROC_PATHS.map(({ path, use, dir }): ProcPathAccess => {
    try {
      if (dir === true) {
        for (const _ of Deno.readDirSync(path)) break;
      } else {
        Deno.readTextFileSync(path);
      }
      return { path, use, readable: true, error: null };
    } catch (error) {
      return { path, use, readable: false, error: reason(error) };
    }
  });
  const mountinfo = readText("/proc/self/mountinfo");
  return {
    usable: paths[0]?.readable ?? false,
    paths,
    mount: mountinfo === null ? null : parseProcMount(mountinfo),
  };
}

/** The inotify limits of this user (`/proc/sys/fs/inotify`), null where unreadable. */
export interface InotifyLimits {
  /** How many watches (one per watched directory) a user may hold. */
  maxUserWatches: number | null;
  /** How many inotify instances a user may open (one per `sentry run`). */
  maxUserInstances: number | null;
  /** How many events may queue before the kernel drops them (counted as overflows). */
  maxQueuedEvents: number | null;
}

/** Reads the inotify limits. */
export function readInotifyLimits(): InotifyLimits {
  const read = (name: string) => {
    const text = readText(`/proc/sys/fs/inotify/${name}`);
    return text === null ? null : parseSysctlInt(text);
  };
  return {
    maxUserWatches: read("max_user_watches"),
    maxUserInstances: read("max_user_instances"),
    maxQueuedEvents: read("max_queued_events"),
  };
}

/**
 * Starts and stops a file watcher on `dir` (an inotify instance and one watch), and returns why
 * it failed, or null when it worked.
 */
export function probeInotify(dir: string): string | null {
  try {
    Deno.watchFs(dir, { recursive: false }).close();
    return null;
  } catch (error) {
    return reason(error);
  }
}

/** Reads the Yama ptrace scope (0 to 3), or null when the kernel has no Yama. */
export function readPtraceScope(): number | null {
  const text = readText("/proc/sys/kernel/yama/ptrace_scope");
  return text === null ? null : parseSysctlInt(text);
}

/** What {@link probeFanotify} found. */
export interface FanotifyProbe {
  /** Permission events (`FAN_CLASS_CONTENT`), which can block an open: needs CAP_SYS_ADMIN. */
  permission: boolean;
  /** Notification events, possibly only the unprivileged kind (`FAN_REPORT_FID`, Linux 5.13+). */
  notification: boolean;
  /** Why permission events are not possible (an errno name, or why FFI failed), else null. */
  permissionError: string | null;
  /** Why no notification group could be made, else null. */
  notificationError: string | null;
}

/** What {@link probeLandlock} found. */
export interface LandlockProbe {
  /** The Landlock ABI version the kernel supports, or null. */
  abi: number | null;
  /** Why there is none: `ENOSYS` (not built in), `EOPNOTSUPP` (disabled at boot), or an FFI error. */
  error: string | null;
}

const SYMBOLS = {
  fanotify_init: { parameters: ["u32", "u32"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  // long syscall(long number, ...): the three arguments of landlock_create_ruleset.
  syscall: { parameters: ["i64", "pointer", "u64", "u32"], result: "i64" },
  __errno_location: { parameters: [], result: "pointer" },
} as const;

type Libc = Deno.DynamicLibrary<typeof SYMBOLS>;

/** Opens libc for the probes, or returns why it cannot be. */
function openLibc(): Libc | string {
  if (Deno.build.os !== "linux") return `needs Linux, not "${Deno.build.os}"`;
  const problems: string[] = [];
  for (const name of ["libc.so.6", "libc.so"]) {
    try {
      return Deno.dlopen(name, SYMBOLS);
    } catch (error) {
      problems.push(`${name}: ${reason(error)}`);
      if (error instanceof Deno.errors.NotCapable) break;
    }
  }
  return `cannot open the C library: ${problems.join("; ")}`;
}

function errnoOf(lib: Libc): string {
  const pointer = lib.symbols.__errno_location();
  return errnoName(pointer === null ? 0 : new Deno.UnsafePointerView(pointer).getInt32());
}

const FAN_CLASS_NOTIF = 0x0;
const FAN_CLASS_CONTENT = 0x4;
const FAN_REPORT_FID = 0x200;
const O_RDONLY = 0;

/**
 * Tries to make fanotify groups: one for permission events, then one for notifications (first
 * the privileged kind, then the unprivileged `FAN_REPORT_FID` kind). Each group is closed at once.
 */
export function probeFanotify(): FanotifyProbe {
  const lib = openLibc();
  if (typeof lib === "string") {
    return { permission: false, notification: false, permissionError: lib, notificationError: lib };
  }
  try {
    const attempt = (flags: number): string | null => {
      const fd = lib.symbols.fanotify_init(flags, O_RDONLY);
      if (fd < 0) return errnoOf(lib);
      lib.symbols.close(fd);
      return null;
    };
    const permissionError = attempt(FAN_CLASS_CONTENT);
    if (permissionError === null) {
      return { permission: true, notification: true, permissionError, notificationError: null };
    }
    const privileged = attempt(FAN_CLASS_NOTIF);
    const notificationError = privileged === null
      ? null
      : attempt(FAN_CLASS_NOTIF | FAN_REPORT_FID);
    return {
      permission: false,
      notification: notificationError === null,
      permissionError,
      notificationError,
    };
  } finally {
    lib.close();
  }
}

/** `landlock_create_ruleset` is 444 on x86_64 and on aarch64 (the generic table) alike. */
const SYS_LANDLOCK_CREATE_RULESET = 444n;
const LANDLOCK_CREATE_RULESET_VERSION = 1;

/** Asks the kernel for its Landlock ABI version. */
export function probeLandlock(): LandlockProbe {
  if (Deno.build.arch !== "x86_64" && Deno.build.arch !== "aarch64") {
    return { abi: null, error: `unknown syscall number on "${Deno.build.arch}"` };
  }
  const lib = openLibc();
  if (typeof lib === "string") return { abi: null, error: lib };
  try {
    const abi = lib.symbols.syscall(
      SYS_LANDLOCK_CREATE_RULESET,
      null,
      0n,
      LANDLOCK_CREATE_RULESET_VERSION,
    );
    return abi < 0n ? { abi: null, error: errnoOf(lib) } : { abi: Number(abi), error: null };
  } finally {
    lib.close();
  }
}

/** What {@link probeStrace} found. */
export interface StraceProbe {
  /** The version, or null when strace is missing or did not answer. */
  version: string | null;
  error: string | null;
}

/** Runs `strace -V` (with a time limit) and reads its version. */
export async function probeStrace(timeoutMs = 2000): Promise<StraceProbe> {
  try {
    const out = await new Deno.Command("strace", {
      args: ["-V"],
      stdin: "null",
      stdout: "piped",
      stderr: "null",
      signal: AbortSignal.timeout(timeoutMs),
    }).output();
    const version = parseStraceVersion(new TextDecoder().decode(out.stdout));
    if (out.success && version !== null) return { version, error: null };
    return { version: null, error: `"strace -V" exited ${out.code}` };
  } catch (error) {
    if (error instanceof Deno.errors.NotFound) {
      return { version: null, error: "not installed (not on PATH)" };
    }
    return { version: null, error: reason(error) };
  }
}

/** What {@link probeDirectory} found. */
export interface DirectoryProbe {
  path: string;
  exists: boolean;
  /** The permission bits, when it exists. */
  mode: number | null;
  /**
   * Whether a file could be created and deleted in it; when it does not exist, whether it could
   * be created (tried in its nearest existing ancestor, which is left as it was).
   */
  writable: boolean;
  /** Why it is not writable, or what is in the way. */
  error: string | null;
  /** The nearest existing ancestor, when the directory does not exist. */
  ancestor: string | null;
}

/**
 * Checks that a directory exists and is writable by creating and deleting a file in it. A
 * directory that does not exist yet is not created: its nearest existing ancestor is checked
 * instead, by creating and removing a directory in it, so the probe leaves no trace.
 */
export function probeDirectory(path: string): DirectoryProbe {
  let stat: Deno.FileInfo | null = null;
  try {
    stat = Deno.statSync(path);
  } catch (error) {
    if (!isMissing(error)) {
      return {
        path,
        exists: false,
        mode: null,
        writable: false,
        error: reason(error),
        ancestor: null,
      };
    }
  }
  if (stat !== null) {
    const mode = stat.mode === null ? null : stat.mode & 0o7777;
    if (!stat.isDirectory) {
      return {
        path,
        exists: true,
        mode,
        writable: false,
        error: "it is not a directory",
        ancestor: null,
      };
    }
    const error = tryWrite(path, "file");
    return { path, exists: true, mode, writable: error === null, error, ancestor: null };
  }
  let ancestor = dirname(path);
  while (true) {
    try {
      const info = Deno.statSync(ancestor);
      if (!info.isDirectory) {
        return {
          path,
          exists: false,
          mode: null,
          writable: false,
          error: `"${ancestor}" is not a directory`,
          ancestor,
        };
      }
      break;
    } catch (error) {
      if (!isMissing(error) || dirname(ancestor) === ancestor) {
        return { path, exists: false, mode: null, writable: false, error: reason(error), ancestor };
      }
      ancestor = dirname(ancestor);
    }
  }
  const error = tryWrite(ancestor, "dir");
  return { path, exists: false, mode: null, writable: error === null, error, ancestor };
}

/** Whether a stat failed because the path, or a directory on it, is not there. */
function isMissing(error: unknown): boolean {
  return error instanceof Deno.errors.NotFound || error instanceof Deno.errors.NotADirectory;
}

/** Creates and deletes a uniquely named file or directory in `dir`; returns why it failed. */
function tryWrite(dir: string, kind: "file" | "dir"): string | null {
  const probe = join(dir, `.sentry-doctor-${Deno.pid}-${crypto.randomUUID().slice(0, 8)}`);
  try {
    if (kind === "file") {
      Deno.writeFileSync(probe, new Uint8Array([0x6f, 0x6b]), { createNew: true, mode: 0o600 });
    } else {
      Deno.mkdirSync(probe, { mode: 0o700 });
    }
  } catch (error) {
    return reason(error);
  }
  try {
    Deno.removeSync(probe);
    return null;
  } catch (error) {
    return `created "${probe}" but cannot delete it: ${reason(error)}`;
  }
}
