/**
 * Pure decoding of fanotify notification buffers, as read(2) from a group made with
 * `FAN_REPORT_DFID_NAME | FAN_REPORT_FID` (and `FAN_REPORT_TARGET_FID`), and of the mount table
 * that decides which filesystems get a mark. No I/O: tested on captured byte samples.
 *
 * A buffer holds whole events. Each starts with `struct fanotify_event_metadata` (24 bytes:
 * `event_len` u32, `vers` u8, reserved u8, `metadata_len` u16, `mask` u64, `fd` i32, `pid` i32),
 * followed by info records, each `{info_type u8, pad u8, len u16}` then a body. The bodies this
 * group gets are `fsid` (8 bytes, as statfs reports it), `struct file_handle` (`handle_bytes` u32,
 * `handle_type` i32, the handle), and for the `*_DFID_NAME` kinds a NUL-terminated name.
 *
 * @module
 */

/** Event bits of `fanotify_event_metadata.mask` (include/uapi/linux/fanotify.h). */
export const FAN = {
  ACCESS: 0x1,
  MODIFY: 0x2,
  ATTRIB: 0x4,
  CLOSE_WRITE: 0x8,
  CLOSE_NOWRITE: 0x10,
  OPEN: 0x20,
  MOVED_FROM: 0x40,
  MOVED_TO: 0x80,
  CREATE: 0x100,
  DELETE: 0x200,
  DELETE_SELF: 0x400,
  MOVE_SELF: 0x800,
  OPEN_EXEC: 0x1000,
  Q_OVERFLOW: 0x4000,
  FS_ERROR: 0x8000,
  RENAME: 0x10000000,
  ONDIR: 0x40000000,
} as const;

/** `fanotify_event_info_header.info_type` values. */
export const FAN_INFO = {
  FID: 1,
  DFID_NAME: 2,
  DFID: 3,
  PIDFD: 4,
  ERROR: 5,
  OLD_DFID_NAME: 10,
  NEW_DFID_NAME: 12,
} as const;

/** Size of `struct fanotify_event_metadata`. */
export const FAN_METADATA_BYTES = 24;
/** `fanotify_event_metadata.vers` this decoder reads (FANOTIFY_METADATA_VERSION). */
export const FAN_METADATA_VERSION = 3;

/**
 * A file system object as the kernel identifies it: the filesystem (`fsid`) and a file handle
 * that `open_by_handle_at` accepts on any mount of that filesystem.
 */
export interface FileId {
  /** The filesystem id, 16 hex digits of the 8 bytes statfs reports as `f_fsid`. */
  fsid: string;
  /** `struct file_handle` as the kernel wrote it: `handle_bytes`, `handle_type`, the handle. */
  handle: Uint8Array;
  /** A string equal for equal objects: `fsid:type:handle` in hex. For maps and caches. */
  key: string;
}

/** A directory entry: the directory's id and the entry's name. */
export interface DirEntry {
  dir: FileId;
  name: string;
}

/** One decoded event. */
export interface FanotifyEvent {
  /** The event bits; merged events (same object, same pid) carry several. */
  mask: number;
  /** The acting process's tgid (0 for a queue overflow). */
  pid: number;
  /** The event's fd: always FAN_NOFD (-1) for groups that report file ids. */
  fd: number;
  /** The object the event is about (`FAN_EVENT_INFO_TYPE_FID`), when reported. */
  object: FileId | null;
  /** Its directory and name (`DFID_NAME`), or its directory alone (`DFID`, name null). */
  entry: { dir: FileId; name: string | null } | null;
  /** FAN_RENAME's old and new names (`OLD_DFID_NAME`, `NEW_DFID_NAME`). */
  from: DirEntry | null;
  to: DirEntry | null;
}

/** What {@link decodeFanotifyEvents} found. */
export interface FanotifyBatch {
  /** The events kept by the filter, decoded, in order. */
  events: FanotifyEvent[];
  /** Events the filter dropped before their info records were read. */
  skipped: number;
  /** Queue overflow events (`FAN_Q_OVERFLOW`): each is an episode of unknown size. */
  overflows: number;
  /** Events with a length or version this decoder does not trust; decoding stops at the first. */
  malformed: number;
}

/** How {@link decodeFanotifyEvents} filters. */
export interface DecodeOptions {
  /**
   * Called with each event's pid and mask before anything else of it is read; return false to
   * skip it. This is where the tracked-pid filter goes, so that host events cost next to nothing.
   * Overflow events are counted, never passed to it.
   */
  keep?: (pid: number, mask: number) => boolean;
}

const decoder = new TextDecoder();

/**
 * Decodes the events in one read(2) from a fanotify group. Events are skipped (counted) when
 * `keep` refuses them; overflow events are counted and left out; unknown info records are
 * ignored. Never throws on kernel input: a bad length stops decoding and counts as malformed.
 */
export function decodeFanotifyEvents(
  bytes: Uint8Array,
  options: DecodeOptions = {},
): FanotifyBatch {
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const keep = options.keep;
  const batch: FanotifyBatch = { events: [], skipped: 0, overflows: 0, malformed: 0 };
  let offset = 0;
  while (offset + FAN_METADATA_BYTES <= bytes.byteLength) {
    const length = view.getUint32(offset, true);
    const version = view.getUint8(offset + 4);
    const metadataLength = view.getUint16(offset + 6, true);
    if (
      version !== FAN_METADATA_VERSION || length < FAN_METADATA_BYTES ||
      metadataLength < FAN_METADATA_BYTES || metadataLength > length ||
      offset + length > bytes.byteLength
    ) {
      batch.malformed++;
      break;
    }
    // The mask is a u64; every defined bit is below 2^32.
    const mask = view.getUint32(offset + 8, true);
    const pid = view.getInt32(offset + 20, true);
    if ((mask & FAN.Q_OVERFLOW) !== 0) {
      batch.overflows++;
    } else if (keep !== undefined && !keep(pid, mask)) {
      batch.skipped++;
    } else {
      batch.events.push(decodeEvent(view, offset, length, metadataLength, mask, pid));
    }
    offset += length;
  }
  return batch;
}

function decodeEvent(
  view: DataView,
  start: number,
  length: number,
  metadataLength: number,
  mask: number,
  pid: number,
): FanotifyEvent {
  const event: FanotifyEvent = {
    mask,
    pid,
    fd: view.getInt32(start + 16, true),
    object: null,
    entry: null,
    from: null,
    to: null,
  };
  const end = start + length;
  let offset = start + metadataLength;
  while (offset + 4 <= end) {
    const type = view.getUint8(offset);
    const size = view.getUint16(offset + 2, true);
    if (size < 4 || offset + size > end) break;
    const body = offset + 4;
    const bodyEnd = offset + size;
    switch (type) {
      case FAN_INFO.FID: {
        const id = readFileId(view, body, bodyEnd);
        if (id !== null) event.object = id.id;
        break;
      }
      case FAN_INFO.DFID:
      case FAN_INFO.DFID_NAME:
      case FAN_INFO.OLD_DFID_NAME:
      case FAN_INFO.NEW_DFID_NAME: {
        const id = readFileId(view, body, bodyEnd);
        if (id === null) break;
        const name = type === FAN_INFO.DFID ? null : readName(view, id.end, bodyEnd);
        if (type === FAN_INFO.OLD_DFID_NAME) event.from = { dir: id.id, name: name ?? "" };
        else if (type === FAN_INFO.NEW_DFID_NAME) event.to = { dir: id.id, name: name ?? "" };
        else event.entry = { dir: id.id, name };
        break;
      }
    }
    offset = bodyEnd;
  }
  return event;
}

/** Reads `fsid` and `struct file_handle` at `offset`; returns the id and where it ends. */
function readFileId(
  view: DataView,
  offset: number,
  end: number,
): { id: FileId; end: number } | null {
  if (offset + 16 > end) return null;
  const handleBytes = view.getUint32(offset + 8, true);
  const handleEnd = offset + 16 + handleBytes;
  if (handleEnd > end) return null;
  const bytes = new Uint8Array(view.buffer, view.byteOffset, view.byteLength);
  const fsid = hex(bytes, offset, offset + 8);
  // Copied: the read buffer is reused for the next read.
  const handle = bytes.slice(offset + 8, handleEnd);
  const type = view.getInt32(offset + 12, true);
  return {
    id: { fsid, handle, key: `${fsid}:${type}:${hex(bytes, offset + 16, handleEnd)}` },
    end: handleEnd,
  };
}

/** The NUL-terminated name at `offset` (names are padded to 4 bytes with NULs). */
function readName(view: DataView, offset: number, end: number): string {
  const bytes = new Uint8Array(view.buffer, view.byteOffset + offset, end - offset);
  const nul = bytes.indexOf(0);
  return decoder.decode(nul < 0 ? bytes : bytes.subarray(0, nul));
}

const HEX = Array.from({ length: 256 }, (_, i) => i.toString(16).padStart(2, "0"));

function hex(bytes: Uint8Array, start: number, end: number): string {
  let out = "";
  for (let i = start; i < end; i++) out += HEX[bytes[i] ?? 0];
  return out;
}

/** Formats a `struct file_handle` and its fsid as a {@link FileId}, as the decoder does. */
export function fileId(fsid: Uint8Array, handle: Uint8Array): FileId {
  const view = new DataView(handle.buffer, handle.byteOffset, handle.byteLength);
  const size = Math.min(view.getUint32(0, true), handle.length - 8);
  const fsidHex = hex(fsid, 0, 8);
  const trimmed = handle.slice(0, 8 + size);
  return {
    fsid: fsidHex,
    handle: trimmed,
    key: `${fsidHex}:${view.getInt32(4, true)}:${hex(handle, 8, 8 + size)}`,
  };
}

/** The names of the bits set in a mask (`FAN_OPEN|FAN_CLOSE_NOWRITE`), for messages and tests. */
export function describeMask(mask: number): string[] {
  const names: string[] = [];
  for (const [name, bit] of Object.entries(FAN)) {
    if ((mask & bit) !== 0) names.push(`FAN_${name}`);
  }
  return names;
}

// --- The mount table ---------------------------------------------------------------------------

/** One line of /proc/self/mountinfo. */
export interface MountEntry {
  /** The mount's id. */
  id: number;
  /** `major:minor` of the filesystem: equal for every mount of one superblock. */
  device: string;
  /** The directory of the filesystem this mount shows (`/` unless it is a bind mount). */
  root: string;
  /** Where it is mounted. */
  mountPoint: string;
  fsType: string;
  source: string;
}

/** Undoes mountinfo's octal escapes (`\040` for a space, `\011`, `\012`, `\134`). */
function unescapeMount(field: string): string {
  return field.replace(
    /\\([0-7]{3})/g,
    (_, octal: string) => String.fromCharCode(parseInt(octal, 8)),
  );
}

/**
 * Parses /proc/self/mountinfo (proc(5)): `id parent major:minor root mountpoint options
 * [optional fields...] - fstype source superoptions`. Lines that do not parse are left out.
 */
export function parseMountInfo(text: string): MountEntry[] {
  const entries: MountEntry[] = [];
  for (const line of text.split("\n")) {
    const fields = line.split(" ");
    const dash = fields.indexOf("-", 6);
    if (dash < 0 || fields.length < dash + 3) continue;
    const id = Number(fields[0]);
    const device = fields[2] ?? "";
    if (!Number.isInteger(id) || !/^\d+:\d+$/.test(device)) continue;
    entries.push({
      id,
      device,
      root: unescapeMount(fields[3] ?? ""),
      mountPoint: unescapeMount(fields[4] ?? ""),
      fsType: fields[dash + 1] ?? "",
      source: unescapeMount(fields[dash + 2] ?? ""),
    });
  }
  return entries;
}

/**
 * Filesystem types never marked, because opening their mount point to mark it has side effects:
 * an autofs mount point may trigger an automount, and an nsfs "mount" is a namespace file bind
 * mounted to keep the namespace alive. Every other type is tried, and the kernel says which it
 * refuses (procfs, sysfs, devpts: EOPNOTSUPP, as they have no file handles).
 */
export const NEVER_MARKED: ReadonlySet<string> = new Set(["autofs", "nsfs"]);

/** A filesystem to mark, through one of its mounts. */
export interface FilesystemTarget {
  /** `major:minor`. */
  device: string;
  fsType: string;
  source: string;
  /** The mount to mark through and to resolve handles against: one showing the whole filesystem when there is one, else the first. */
  mountPoint: string;
  /** Whether `mountPoint` shows only part of the filesystem (a bind mount of a subdirectory). */
  partial: boolean;
  /** Every mount point of this filesystem. */
  mountPoints: string[];
}

/** What {@link planFilesystemMarks} decided. */
export interface MarkPlan {
  targets: FilesystemTarget[];
  /** Filesystems left out on purpose, by type: `{mountPoint, fsType}`. */
  skipped: { mountPoint: string; fsType: string }[];
}

/**
 * Chooses one mount per filesystem (superblock) to mark with `FAN_MARK_FILESYSTEM`: a mark on a
 * superblock covers every mount of it, so bind mounts need none of their own. The mount chosen
 * shows the filesystem's root when one does (paths then resolve fully), else the first listed.
 * Types in {@link NEVER_MARKED} are listed in `skipped`.
 */
export function planFilesystemMarks(entries: readonly MountEntry[]): MarkPlan {
  const byDevice = new Map<string, FilesystemTarget>();
  const skipped: MarkPlan["skipped"] = [];
  for (const entry of entries) {
    if (NEVER_MARKED.has(entry.fsType)) {
      skipped.push({ mountPoint: entry.mountPoint, fsType: entry.fsType });
      continue;
    }
    const known = byDevice.get(entry.device);
    if (known === undefined) {
      byDevice.set(entry.device, {
        device: entry.device,
        fsType: entry.fsType,
        source: entry.source,
        mountPoint: entry.mountPoint,
        partial: entry.root !== "/",
        mountPoints: [entry.mountPoint],
      });
      continue;
    }
    known.mountPoints.push(entry.mountPoint);
    const better = known.partial && entry.root === "/" ||
      known.partial === (entry.root !== "/") && entry.mountPoint.length < known.mountPoint.length;
    if (better) {
      known.mountPoint = entry.mountPoint;
      known.partial = entry.root !== "/";
    }
  }
  return { targets: [...byDevice.values()], skipped };
}
