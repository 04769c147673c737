/**
 * Block mode for the seccomp tier: the decision the supervisor takes while the caller waits,
 * with the same pure `evaluate()` as the rest of the pipeline, and the opens it makes itself
 * so that a denial holds against a thread that rewrites the path after the check.
 *
 * Why the supervisor opens: a check followed by "continue" is not a boundary, because the
 * kernel reads the path again when the call runs, and a second thread may have rewritten it by
 * then. For the open family, the supervisor opens the file itself (first with O_PATH, which
 * reads no byte, truncates nothing and never waits on a FIFO), decides on the path of the file
 * it actually holds (symlinks and `..` resolved by the kernel), and hands that very file to the
 * caller (`SECCOMP_IOCTL_NOTIF_ADDFD`): the caller's memory is never read again. It does so in
 * every mode while Sentry's own directories are guarded (`guard.sentry_home`), so that the
 * agent cannot read the token or edit the journal even in mode monitor. An allowed connect is
 * made by the supervisor too, on the caller's own socket with the copied address (see
 * seccomp_connect.ts). Other calls (delete, rename, link, exec, send) are decided on the
 * arguments the supervisor copied and failed with an errno when denied; when allowed they run
 * with "continue", so a racing thread could still swap an allowed argument for a denied one
 * there: Landlock is the hard wall for what it can express (paths, and in mode block the
 * binaries of denied commands, which lose the right to be executed; see landlock_policy.ts).
 *
 * Fails closed: if the supervisor dies, the kernel fails every watched call with ENOSYS.
 *
 * @module
 */

import { responseRank } from "../events/mod.ts";
import { type CompiledPolicy, evaluate } from "../policy/mod.ts";
import { type KernelAction, ProcessTable, toSensorEvent } from "./kernel_action.ts";
import type { SensorEvent } from "./sensor.ts";

/** The errno a blocked file action or exec gets. */
export const EACCES = 13;
/** The errno a blocked connect or send gets. */
export const EPERM = 1;

/** The caller of a blocked or allowed call, as the supervisor read it. */
export interface BlockCaller {
  pid: number;
  tid: number;
  ppid: number | null;
  exe: string | null;
  cmdline: string[];
}

/** Turns one action of a caller into the event the engine decides on. */
export function callerEvent(action: KernelAction, caller: BlockCaller): SensorEvent | null {
  const table = new ProcessTable(() => ({
    ppid: caller.ppid,
    exe: caller.exe,
    cmdline: caller.cmdline,
  }));
  return toSensorEvent(action, { sensor: "seccomp", table, databasePorts: new Set() });
}

/**
 * Whether a decided action is blocked: denied with a response of `block` or more (a policy in
 * mode `block` gives every denial `block`), or denied by Sentry's own guard (`guard.*`: its
 * data and configuration directories), which blocks in every mode, monitor included.
 */
export function blocks(event: SensorEvent, policy: CompiledPolicy): boolean {
  const decision = evaluate({ ...event, pid: event.pid ?? null }, policy);
  if (decision.verdict !== "deny") return false;
  return decision.rule.startsWith("guard.") ||
    responseRank(decision.response) >= responseRank("block");
}

/** The errno a blocked action gets: EPERM for the network, EACCES for files and exec. */
export function blockErrno(action: KernelAction): number {
  return action.op === "connect" || action.op === "sendto" ? EPERM : EACCES;
}

/**
 * Decides the actions of one call: the errno to fail it with when one of them is blocked, or
 * null to let it through. Pure: the compiled policy and the caller are all it reads.
 */
export function decideActions(
  actions: readonly KernelAction[],
  options: { caller: BlockCaller; policy: CompiledPolicy },
): number | null {
  for (const action of actions) {
    const event = callerEvent(action, options.caller);
    if (event !== null && blocks(event, options.policy)) return blockErrno(action);
  }
  return null;
}

/** Open flags the emulation reads. */
export const OPEN = {
  O_ACCMODE: 3,
  O_CREAT: 0o100,
  O_EXCL: 0o200,
  O_NOCTTY: 0o400,
  O_TRUNC: 0o1000,
  O_DIRECTORY: 0o200000,
  O_NOFOLLOW: 0o400000,
  O_CLOEXEC: 0o2000000,
  O_PATH: 0o10000000,
  O_TMPFILE: 0o20000000,
} as const;

/**
 * Rewrites a path that names the caller's own /proc entries (`/proc/self`, `/proc/thread-self`)
 * to its pid, so that the supervisor opens the caller's entries, not its own.
 */
export function callerProcPath(path: string, caller: { pid: number; tid: number }): string {
  if (path === "/proc/self" || path.startsWith("/proc/self/")) {
    return `/proc/${caller.pid}${path.slice("/proc/self".length)}`;
  }
  if (path === "/proc/thread-self" || path.startsWith("/proc/thread-self/")) {
    return `/proc/${caller.pid}/task/${caller.tid}${path.slice("/proc/thread-self".length)}`;
  }
  return path;
}

/** What an exec runs, as the supervisor decides and journals it, and where it looks it up. */
export interface ExecTarget {
  /**
   * The file to decide and journal on: the path as the caller named it, or for an exec through
   * a descriptor, the file the descriptor holds (its /proc link text, such as
   * `/memfd:innocent (deleted)` or `/tmp/tool (deleted)`).
   */
  path: string;
  /** Where the supervisor checks that the file is there, as the caller sees it. */
  probe: string;
}

/** A caller's descriptor or executable named through /proc (after {@link callerProcPath}). */
const PROC_LINK = /^\/proc\/\d+(?:\/task\/\d+)?\/(?:fd\/\d+|exe)$/;

/**
 * Names the file an exec runs and where to look it up, for a caller blocked in execve or
 * execveat. An exec through a descriptor runs the file the descriptor holds, which may have no
 * name at all: a memfd (`/memfd:NAME (deleted)`) or a deleted file (`PATH (deleted)`). So:
 * fexecve (execveat with AT_EMPTY_PATH) and a relative path on a dirfd are looked up through
 * the caller's descriptor itself (`/proc/TID/fd/N`), never by the link text; `/proc/self/fd/N`,
 * `/dev/fd/N` and `/proc/self/exe` name the file the link holds, looked up through the
 * caller's own /proc; any other path is looked up beneath the caller's root. Pure: `readLink`
 * (readlink(2) from the supervisor) is all it reads.
 */
export function execTarget(
  path: string,
  at: { pid: number; tid: number; dirfd: number | null; readLink: (path: string) => string | null },
): ExecTarget {
  const { tid } = at;
  if (at.dirfd !== null && at.dirfd >= 0) {
    const fd = `/proc/${tid}/fd/${at.dirfd}`;
    const link = at.readLink(fd);
    if (link !== null && link.startsWith("/") && link !== "/") {
      if (path === link) return { path, probe: fd };
      if (path.startsWith(`${link}/`)) return { path, probe: `${fd}${path.slice(link.length)}` };
    }
  }
  const named = path === "/dev/fd" || path.startsWith("/dev/fd/")
    ? `/proc/self/fd${path.slice("/dev/fd".length)}`
    : path;
  const own = callerProcPath(named, at);
  const probe = `/proc/${tid}/root${own}`;
  if (PROC_LINK.test(own)) {
    const link = at.readLink(probe);
    if (link !== null && link.startsWith("/")) return { path: link, probe };
  }
  return { path, probe };
}

/** Splits an absolute path into its directory and last component. */
export function splitPath(path: string): { dir: string; name: string } {
  const at = path.lastIndexOf("/");
  return { dir: at <= 0 ? "/" : path.slice(0, at), name: path.slice(at + 1) };
}

/** Reads the `Uid:`, `Gid:` and `Umask:` lines of /proc/PID/status. Null when absent. */
export function parseStatusIdentity(
  text: string,
): { fsuid: number; fsgid: number; umask: number } | null {
  const field = (name: string) => {
    const line = text.split("\n").find((l) => l.startsWith(`${name}:`));
    return line?.slice(name.length + 1).trim().split(/\s+/) ?? null;
  };
  const uid = field("Uid");
  const gid = field("Gid");
  const umask = field("Umask");
  if (uid === null || gid === null || uid.length < 4 || gid.length < 4) return null;
  return {
    fsuid: Number(uid[3]),
    fsgid: Number(gid[3]),
    umask: umask === null ? 0o022 : parseInt(umask[0] ?? "22", 8),
  };
}
