/**
 * Free space of a filesystem, through `statvfs(3)` in the C library: what an unprivileged
 * process may still write there (`f_bavail` blocks of `f_frsize` bytes, and `f_favail` inodes).
 *
 * @module
 */

import { openLibc } from "./_libc.ts";

const SYMBOLS = {
  statvfs: { parameters: ["buffer", "buffer"], result: "i32" },
} as const;

let libc: Deno.DynamicLibrary<typeof SYMBOLS> | string | undefined;

/** The space and inodes left on a filesystem. */
export interface FreeSpace {
  /** Bytes an unprivileged process may still write. */
  bytes: number;
  /** Inodes it may still create. */
  inodes: number;
}

/**
 * The free space of the filesystem holding `path`, or null where it cannot be read (not Linux,
 * no FFI, the call failed): the caller then goes on without the check.
 */
export function freeSpace(path: string): FreeSpace | null {
  if (Deno.build.os !== "linux") return null;
  libc ??= openLibc(SYMBOLS);
  if (typeof libc === "string") return null;
  // struct statvfs on 64-bit Linux: f_bsize, f_frsize, f_blocks, f_bfree, f_bavail, f_files,
  // f_ffree, f_favail (each 8 bytes), then fsid, flag, namemax and spares: 112 bytes in all.
  const buf = new Uint8Array(112);
  const name = new TextEncoder().encode(`${path}\0`);
  if (libc.symbols.statvfs(name, buf) !== 0) return null;
  const view = new DataView(buf.buffer);
  const frsize = Number(view.getBigUint64(8, true));
  const bavail = Number(view.getBigUint64(32, true));
  const favail = Number(view.getBigUint64(56, true));
  return { bytes: bavail * frsize, inodes: favail };
}
