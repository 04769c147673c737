/**
 * Decoding inotify(7) records: `struct inotify_event { int wd; uint32_t mask; uint32_t cookie;
 * uint32_t len; char name[len]; }`, where `name` is NUL-padded. Pure, so it is tested on bytes
 * built by hand.
 *
 * @module
 */

/** The inotify mask bits Sentry uses (linux/inotify.h). */
export const IN = {
  MODIFY: 0x2,
  ATTRIB: 0x4,
  CLOSE_WRITE: 0x8,
  MOVED_FROM: 0x40,
  MOVED_TO: 0x80,
  CREATE: 0x100,
  DELETE: 0x200,
  DELETE_SELF: 0x400,
  MOVE_SELF: 0x800,
  UNMOUNT: 0x2000,
  Q_OVERFLOW: 0x4000,
  IGNORED: 0x8000,
  ONLYDIR: 0x1000000,
  DONT_FOLLOW: 0x2000000,
  EXCL_UNLINK: 0x4000000,
  ISDIR: 0x40000000,
} as const;

/** One decoded record. */
export interface InotifyRecord {
  /** The watch descriptor (-1 for a queue overflow). */
  wd: number;
  mask: number;
  /** Ties the two halves of a rename; 0 otherwise. */
  cookie: number;
  /** The entry's name inside the watched directory; "" for events on the directory itself. */
  name: string;
}

const HEADER = 16;
const decoder = new TextDecoder();

/**
 * Decodes the records in `bytes[0, length)`. A truncated record at the end (which the kernel
 * never produces, since a read returns whole records) ends the decoding.
 */
export function decodeInotify(bytes: Uint8Array, length: number): InotifyRecord[] {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const out: InotifyRecord[] = [];
  let at = 0;
  while (at + HEADER <= length) {
    const wd = view.getInt32(at, true);
    const mask = view.getUint32(at + 4, true);
    const cookie = view.getUint32(at + 8, true);
    const len = view.getUint32(at + 12, true);
    if (at + HEADER + len > length) break;
    let end = at + HEADER;
    while (end < at + HEADER + len && bytes[end] !== 0) end++;
    out.push({ wd, mask, cookie, name: decoder.decode(bytes.subarray(at + HEADER, end)) });
    at += HEADER + len;
  }
  return out;
}

/** Encodes records as the kernel would (for tests and fixtures). */
export function encodeInotify(records: readonly InotifyRecord[]): Uint8Array {
  const encoder = new TextEncoder();
  const parts = records.map((r) => {
    const name = encoder.encode(r.name);
    const len = name.length === 0 ? 0 : Math.ceil((name.length + 1) / 16) * 16;
    const bytes = new Uint8Array(HEADER + len);
    const view = new DataView(bytes.buffer);
    view.setInt32(0, r.wd, true);
    view.setUint32(4, r.mask, true);
    view.setUint32(8, r.cookie, true);
    view.setUint32(12, len, true);
    bytes.set(name, HEADER);
    return bytes;
  });
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let at = 0;
  for (const p of parts) {
    out.set(p, at);
    at += p.length;
  }
  return out;
}
