/**
 * Hashing files for snapshots, plans and verification. Private to src/rollback.
 * @module
 */
import { createHash } from "node:crypto";
import { closeSync, constants, openSync, readSync } from "node:fs";

const BUFFER = new Uint8Array(1 << 20);
const READ_NOFOLLOW = constants.O_RDONLY | constants.O_NOFOLLOW;

/**
 * SHA-256 of a file and its size, read in 1 MiB chunks. The last component is opened with
 * O_NOFOLLOW: a path that is a symlink fails (ELOOP) rather than hashing what it points to.
 */
export function hashFile(path: string): { hash: string; size: number } {
  const fd = openSync(path, READ_NOFOLLOW);
  try {
    const h = createHash("sha256");
    let size = 0;
    while (true) {
      const n = readSync(fd, BUFFER, 0, BUFFER.length, null);
      if (n === 0) break;
      h.update(BUFFER.subarray(0, n));
      size += n;
    }
    return { hash: h.digest("hex"), size };
  } finally {
    closeSync(fd);
  }
}

/** SHA-256 of bytes, lowercase hex. */
export function hashBytes(data: Uint8Array): string {
  return createHash("sha256").update(data).digest("hex");
}
