/**
 * Changing a protected tree only beneath its root, never through a symlink: every path is
 * resolved by `openat2(2)` relative to an open directory fd, with `RESOLVE_BENEATH |
 * RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS`, and every change is made on fds (`renameat`,
 * `unlinkat`, `mkdirat`, `symlinkat`, `linkat`, `fchmod`, `futimens`) relative to the directory
 * fd so opened. A directory swapped for a symlink between two changes makes the next one fail
 * with ELOOP; it is never followed. Used by the rollback's restore (src/rollback/restore.ts).
 *
 * The pure part ({@link splitRel}, {@link encodeOpenHow}, {@link encodeTimes},
 * {@link openFailure}) is unit-tested; the rest is a thin FFI layer over libc.
 * @module
 */

import { errnoOf, openLibc } from "./_libc.ts";

/** `openat2` resolve flags (linux/openat2.h). */
export const RESOLVE_NO_MAGICLINKS = 0x02;
/** Refuse every symlink, in any component. */
export const RESOLVE_NO_SYMLINKS = 0x04;
/** Refuse to leave the directory fd (`..`, absolute paths, absolute symlinks). */
export const RESOLVE_BENEATH = 0x08;
/** What every open below a root uses. */
export const RESOLVE_STRICT = RESOLVE_BENEATH | RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS;

/** Open flags (x86_64 and aarch64 share these values). */
export const O = {
  RDONLY: 0,
  WRONLY: 0o1,
  CREAT: 0o100,
  EXCL: 0o200,
  DIRECTORY: 0o200000,
  NOFOLLOW: 0o400000,
  CLOEXEC: 0o2000000,
  PATH: 0o10000000,
} as const;

const AT_FDCWD = -100;
const AT_REMOVEDIR = 0x200;
const SYS_OPENAT2 = 437;

const ERRNO_NAMES: Record<number, string> = {
  1: "EPERM",
  2: "ENOENT",
  11: "EAGAIN",
  13: "EACCES",
  17: "EEXIST",
  18: "EXDEV",
  20: "ENOTDIR",
  21: "EISDIR",
  22: "EINVAL",
  28: "ENOSPC",
  30: "EROFS",
  38: "ENOSYS",
  39: "ENOTEMPTY",
  40: "ELOOP",
};

/** A failed system call on a path below a root; `code` is the errno's name (`ELOOP`). */
export class BeneathError extends Error {
  /** The errno's name, such as `ELOOP`, or `E<number>`. */
  readonly code: string;
  /** Builds the error for an errno and the path it concerns. */
  constructor(message: string, readonly errno: number, readonly path: string) {
    super(message);
    this.name = "BeneathError";
    this.code = ERRNO_NAMES[errno] ?? `E${errno}`;
  }
}

/** A relative path split into the directory to open and the last component. */
export interface SplitRel {
  /** The parent, relative to the root; `"."` for top-level names. */
  parent: string;
  name: string;
}

/**
 * Splits a root-relative path into its parent and last component, refusing what could leave the
 * root or name the root itself: empty, absolute, `.`/`..` or empty components, NUL bytes.
 *
 * @throws {RangeError} for such a path.
 */
export function splitRel(rel: string): SplitRel {
  const parts = rel.split("/");
  if (
    rel === "" || rel.includes("\0") || parts.some((p) => p === "" || p === "." || p === "..")
  ) {
    throw new RangeError(`Invalid path below a root "${rel}": it must be plain names`);
  }
  const name = parts.pop() as string;
  return { parent: parts.length === 0 ? "." : parts.join("/"), name };
}

/** `struct open_how` (24 bytes: flags, mode, resolve as little-endian u64). */
export function encodeOpenHow(how: { flags: number; mode: number; resolve: number }): Uint8Array {
  const out = new Uint8Array(24);
  const view = new DataView(out.buffer);
  view.setBigUint64(0, BigInt(how.flags), true);
  view.setBigUint64(8, BigInt(how.mode), true);
  view.setBigUint64(16, BigInt(how.resolve), true);
  return out;
}

/** `struct timespec[2]` for `futimens` (access, then modification), from epoch milliseconds. */
export function encodeTimes(atimeMs: number, mtimeMs: number): Uint8Array {
  const out = new Uint8Array(32);
  const view = new DataView(out.buffer);
  [atimeMs, mtimeMs].forEach((ms, i) => {
    const sec = Math.floor(ms / 1000);
    view.setBigInt64(i * 16, BigInt(sec), true);
    view.setBigInt64(i * 16 + 8, BigInt(Math.round((ms - sec * 1000) * 1e6)), true);
  });
  return out;
}

/** Why an `openat2` of `path` failed, in words the rollback's report can show. */
export function openFailure(errno: number, path: string): string {
  switch (errno) {
    case 40: // ELOOP
    case 18: // EXDEV
      return `refusing to follow "${path}": a component of it is a symlink or leaves the root`;
    case 2:
      return `"${path}" is missing`;
    case 20:
      return `a component of "${path}" is not a directory`;
    case 38:
      return `cannot open "${path}": this kernel has no openat2 (Linux 5.6 or later is needed)`;
    default:
      return `cannot open "${path}": ${ERRNO_NAMES[errno] ?? `errno ${errno}`}`;
  }
}

const SYMBOLS = {
  syscall: { parameters: ["i64", "i64", "buffer", "buffer", "u64"], result: "i64" },
  renameat: { parameters: ["i32", "buffer", "i32", "buffer"], result: "i32" },
  linkat: { parameters: ["i32", "buffer", "i32", "buffer", "i32"], result: "i32" },
  unlinkat: { parameters: ["i32", "buffer", "i32"], result: "i32" },
  mkdirat: { parameters: ["i32", "buffer", "u32"], result: "i32" },
  symlinkat: { parameters: ["buffer", "i32", "buffer"], result: "i32" },
  fchmod: { parameters: ["i32", "u32"], result: "i32" },
  futimens: { parameters: ["i32", "buffer"], result: "i32" },
  close: { parameters: ["i32"], result: "i32" },
  __errno_location: { parameters: [], result: "pointer" },
} as const satisfies Deno.ForeignLibraryInterface;

let libc: Deno.DynamicLibrary<typeof SYMBOLS> | undefined;

function lib(): Deno.DynamicLibrary<typeof SYMBOLS>["symbols"] {
  if (libc === undefined) {
    if (Deno.build.os !== "linux") {
      throw new Error(`Cannot restore safely on ${Deno.build.os}: openat2 is Linux only`);
    }
    const opened = openLibc(SYMBOLS);
    if (typeof opened === "string") throw new Error(opened);
    libc = opened;
  }
  return libc.symbols;
}

function errno(): number {
  lib();
  return errnoOf(libc as Deno.DynamicLibrary<typeof SYMBOLS>);
}

const encoder = new TextEncoder();

function cstr(s: string): Uint8Array<ArrayBuffer> {
  return encoder.encode(s + "\0") as Uint8Array<ArrayBuffer>;
}

/** Throws a {@link BeneathError} for a failed call, naming the path. */
function check(rc: number | bigint, what: string, path: string): void {
  if (Number(rc) >= 0) return;
  const e = errno();
  const name = ERRNO_NAMES[e] ?? `errno ${e}`;
  throw new BeneathError(`Cannot ${what} "${path}": ${name}`, e, path);
}

/** `openat2(dirfd, rel, how)`; retried on EAGAIN (a rename raced the resolution). */
function openat2(dirfd: number, rel: string, flags: number, mode: number, resolve: number): {
  fd: number;
  errno: number;
} {
  const how = encodeOpenHow({ flags: flags | O.CLOEXEC, mode, resolve }) as Uint8Array<
    ArrayBuffer
  >;
  const path = cstr(rel);
  for (let i = 0;; i++) {
    const fd = Number(lib().syscall(BigInt(SYS_OPENAT2), BigInt(dirfd), path, how, 24n));
    if (fd >= 0) return { fd, errno: 0 };
    const e = errno();
    if (e !== 11 || i >= 8) return { fd: -1, errno: e };
  }
}

/** A path for reading an entry of an open directory (the directory is pinned by its fd). */
export function procPath(dirfd: number, name?: string): string {
  return name === undefined ? `/proc/self/fd/${dirfd}` : `/proc/self/fd/${dirfd}/${name}`;
}

/** An open directory and one name in it: where a change below a root is made. */
export interface At {
  /** The directory's fd. */
  fd: number;
  name: string;
  /** The absolute path, for messages. */
  path: string;
  /** Closes the directory fd (unless it belongs to the root handle). */
  close(): void;
}

/**
 * One protected root, held open. Operations on the root itself (moving it away, recreating it)
 * are made in its parent, opened without following any symlink; everything else beneath the
 * root's own fd. Call {@link Beneath.close} in `finally`.
 */
export class Beneath {
  /** The root's absolute path. */
  readonly root: string;
  #up: number;
  #name: string;
  #root: number | null = null;

  /**
   * Opens the root's parent (every component a real directory).
   *
   * @throws {BeneathError} when a component is a symlink, or missing.
   */
  constructor(root: string) {
    if (!root.startsWith("/") || root === "/") {
      throw new RangeError(`Cannot roll back the root "${root}": it must be a directory below /`);
    }
    this.root = root;
    const i = root.lastIndexOf("/");
    const up = i === 0 ? "/" : root.slice(0, i);
    this.#name = root.slice(i + 1);
    const r = openat2(
      AT_FDCWD,
      up,
      O.PATH | O.DIRECTORY,
      0,
      RESOLVE_NO_SYMLINKS | RESOLVE_NO_MAGICLINKS,
    );
    if (r.fd < 0) throw new BeneathError(openFailure(r.errno, up), r.errno, up);
    this.#up = r.fd;
  }

  /** The absolute path of a root-relative one. */
  abs(rel: string): string {
    return rel === "" ? this.root : `${this.root}/${rel}`;
  }

  /** Forgets the root's fd: the root was moved away or recreated. */
  resetRoot(): void {
    if (this.#root !== null) lib().close(this.#root);
    this.#root = null;
  }

  #rootFd(): number {
    if (this.#root === null) {
      const r = openat2(this.#up, this.#name, O.PATH | O.DIRECTORY, 0, RESOLVE_STRICT);
      if (r.fd < 0) throw new BeneathError(openFailure(r.errno, this.root), r.errno, this.root);
      this.#root = r.fd;
    }
    return this.#root;
  }

  /**
   * Opens a root-relative path (`""` is the root) with `flags`, beneath the root, refusing
   * symlinks in every component, the last included (RESOLVE_NO_SYMLINKS: ELOOP, where
   * O_NOFOLLOW with O_DIRECTORY would say ENOTDIR). The caller closes the fd.
   *
   * @throws {BeneathError} naming the path: ELOOP/EXDEV when a component is a symlink.
   */
  open(rel: string, flags: number, mode = 0): number {
    const r = rel === ""
      ? openat2(this.#up, this.#name, flags, mode, RESOLVE_STRICT)
      : (splitRel(rel), openat2(this.#rootFd(), rel, flags, mode, RESOLVE_STRICT));
    if (r.fd < 0) {
      throw new BeneathError(openFailure(r.errno, this.abs(rel)), r.errno, this.abs(rel));
    }
    return r.fd;
  }

  /** The directory holding a root-relative path, opened (O_PATH) beneath the root, and its name. */
  at(rel: string): At {
    const path = this.abs(rel);
    if (rel === "") return { fd: this.#up, name: this.#name, path, close: () => {} };
    const { parent, name } = splitRel(rel);
    const fd = this.open(parent === "." ? "" : parent, O.PATH | O.DIRECTORY);
    return { fd, name, path, close: () => void lib().close(fd) };
  }

  /** Closes the fds. */
  close(): void {
    this.resetRoot();
    lib().close(this.#up);
  }
}

/** Closes an fd. */
export function closeFd(fd: number): void {
  lib().close(fd);
}

/** Creates a new file (O_EXCL, never following a symlink) in a directory fd; returns its fd. */
export function createAt(at: At, name: string, mode: number): number {
  const r = openat2(at.fd, name, O.WRONLY | O.CREAT | O.EXCL | O.NOFOLLOW, mode, RESOLVE_STRICT);
  check(r.fd, "create a file beside", at.path);
  return r.fd;
}

/** `renameat` within one directory fd: `from` over `to`. Never follows a symlink at either. */
export function renameWithin(at: At, from: string, to: string): void {
  check(lib().renameat(at.fd, cstr(from), at.fd, cstr(to)), "rename over", at.path);
}

/** `renameat` of an entry out to an absolute path (the quarantine). */
export function renameOut(at: At, dst: string): void {
  check(lib().renameat(at.fd, cstr(at.name), AT_FDCWD, cstr(dst)), "move away", at.path);
}

/** `linkat` of an entry (itself, never what a symlink points to) to an absolute path. */
export function linkOut(at: At, dst: string): void {
  check(lib().linkat(at.fd, cstr(at.name), AT_FDCWD, cstr(dst), 0), "keep", at.path);
}

/** `mkdirat` in a directory fd. */
export function mkdirAt(at: At, mode: number): void {
  check(lib().mkdirat(at.fd, cstr(at.name), mode), "create the directory", at.path);
}

/** `symlinkat`: a symlink named `name` in the directory fd. */
export function symlinkAt(target: string, at: At, name: string): void {
  check(lib().symlinkat(cstr(target), at.fd, cstr(name)), "create a symlink beside", at.path);
}

/** `unlinkat` of a name in a directory fd (`dir`: a directory, AT_REMOVEDIR). */
export function unlinkAt(fd: number, name: string, dir: boolean, path: string): void {
  check(lib().unlinkat(fd, cstr(name), dir ? AT_REMOVEDIR : 0), "remove", path);
}

/** `fchmod` and `futimens` on an open fd. */
export function setMeta(
  fd: number,
  meta: { mode: number; atimeMs: number; mtimeMs: number },
  path: string,
): void {
  check(lib().fchmod(fd, meta.mode), "set the mode of", path);
  const times = encodeTimes(meta.atimeMs, meta.mtimeMs) as Uint8Array<ArrayBuffer>;
  check(lib().futimens(fd, times), "set the times of", path);
}

/**
 * Removes an entry and everything below it, each directory opened beneath the one above it,
 * never following a symlink (a symlink is removed, never what it points to).
 */
export function removeTreeAt(fd: number, name: string, path: string): void {
  if (Number(lib().unlinkat(fd, cstr(name), 0)) === 0) return;
  const e = errno();
  if (e !== 21 && e !== 1) check(-1, "remove", path);
  const r = openat2(fd, name, O.RDONLY | O.DIRECTORY, 0, RESOLVE_STRICT);
  if (r.fd < 0) throw new BeneathError(openFailure(r.errno, path), r.errno, path);
  try {
    for (const entry of Deno.readDirSync(procPath(r.fd))) {
      removeTreeAt(r.fd, entry.name, `${path}/${entry.name}`);
    }
  } finally {
    lib().close(r.fd);
  }
  unlinkAt(fd, name, true, path);
}

/** `renameat` of an absolute path (a quarantine item) into a directory fd, as `at.name`. */
export function renameIn(src: string, at: At): void {
  check(lib().renameat(AT_FDCWD, cstr(src), at.fd, cstr(at.name)), "move back", at.path);
}

/** What an entry of an open directory is, without following a symlink; null when absent. */
export function lstatAt(at: At): Deno.FileInfo | null {
  try {
    return Deno.lstatSync(procPath(at.fd, at.name));
  } catch (e) {
    if (e instanceof Deno.errors.NotFound) return null;
    throw e;
  }
}

/**
 * Copies a file, symlink or directory tree at an absolute path (Sentry's own, such as a
 * quarantine item) into a directory fd as `at.name`, which must not exist: every entry is made
 * with `O_EXCL`/`mkdirat`/`symlinkat` relative to an fd opened beneath, so nothing is written
 * through a symlink. Keeps modes and mtimes. Other file types are skipped.
 */
export function copyIn(src: string, at: At): void {
  const info = Deno.lstatSync(src);
  const mode = (info.mode ?? 0o600) & 0o7777;
  const times = { mode, atimeMs: Date.now(), mtimeMs: info.mtime?.getTime() ?? Date.now() };
  if (info.isSymlink) {
    symlinkAt(Deno.readLinkSync(src), at, at.name);
    return;
  }
  if (info.isFile) {
    const fd = createAt(at, at.name, 0o600);
    try {
      const out = Deno.openSync(procPath(fd), { write: true });
      try {
        const input = Deno.openSync(src, { read: true });
        try {
          const buffer = new Uint8Array(1 << 16);
          for (;;) {
            const n = input.readSync(buffer);
            if (n === null) break;
            let done = 0;
            while (done < n) done += out.writeSync(buffer.subarray(done, n));
          }
        } finally {
          input.close();
        }
      } finally {
        out.close();
      }
      setMeta(fd, times, at.path);
    } finally {
      closeFd(fd);
    }
    return;
  }
  if (!info.isDirectory) return;
  mkdirAt(at, 0o700);
  const r = openat2(at.fd, at.name, O.RDONLY | O.DIRECTORY, 0, RESOLVE_STRICT);
  if (r.fd < 0) throw new BeneathError(openFailure(r.errno, at.path), r.errno, at.path);
  try {
    for (const entry of Deno.readDirSync(src)) {
      copyIn(`${src}/${entry.name}`, {
        fd: r.fd,
        name: entry.name,
        path: `${at.path}/${entry.name}`,
        close: () => {},
      });
    }
    setMeta(r.fd, times, at.path);
  } finally {
    lib().close(r.fd);
  }
}
