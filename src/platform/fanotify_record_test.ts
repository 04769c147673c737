import assert from "node:assert/strict";
import {
  decodeFanotifyEvents,
  describeMask,
  FAN,
  fileId,
  parseMountInfo,
  planFilesystemMarks,
} from "./fanotify_record.ts";

function bytes(hex: string): Uint8Array {
  return Uint8Array.from(hex.match(/../g) ?? [], (h) => parseInt(h, 16));
}

function concat(...parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((n, p) => n + p.length, 0));
  let offset = 0;
  for (const part of parts) {
    out.set(part, offset);
    offset += part.length;
  }
  return out;
}

// Captured on Linux 6.18 (ext4 root) from a group made with FAN_REPORT_DFID_NAME |
// FAN_REPORT_FID | FAN_REPORT_TARGET_FID, read after a python (pid 8475) had, in /tmp/fx/w:
// created a.txt, written and closed it, opened and read it (all merged into one event), renamed
// it to b.txt, made and removed sub/ (merged), and deleted b.txt.
const DIR = "3bb314c6a541e71f:1:d5c2200069bfa74b";
const FILE = "3bb314c6a541e71f:1:53c2200038ec9b2d";
const CREATE_MERGED = bytes(
  "58000000030018002b01000000000000ffffffff1b210000" +
    "020024003bb314c6a541e71f0800000001000000d5c2200069bfa74b612e747874000000" +
    "01001c003bb314c6a541e71f080000000100000053c2200038ec9b2d",
);
const RENAME = bytes(
  "7c000000030018000000001000000000ffffffff1b210000" +
    "0a0024003bb314c6a541e71f0800000001000000d5c2200069bfa74b612e747874000000" +
    "0c0024003bb314c6a541e71f0800000001000000d5c2200069bfa74b622e747874000000" +
    "01001c003bb314c6a541e71f080000000100000053c2200038ec9b2d",
);
const MKDIR_RMDIR = bytes(
  "54000000030018000003004000000000ffffffff1b210000" +
    "020020003bb314c6a541e71f0800000001000000d5c2200069bfa74b73756200" +
    "01001c003bb314c6a541e71f080000000100000063c220007d854820",
);
const DELETE = bytes(
  "58000000030018000002000000000000ffffffff1b210000" +
    "020024003bb314c6a541e71f0800000001000000d5c2200069bfa74b622e747874000000" +
    "01001c003bb314c6a541e71f080000000100000053c2200038ec9b2d",
);
// The exec of /usr/bin/python3.11 by pid 12733: FAN_OPEN | FAN_OPEN_EXEC.
const OPEN_EXEC = bytes(
  "5c000000030018002010000000000000ffffffffbd310000" +
    "020028003bb314c6a541e71f0800000001000000ebf7030000000000707974686f6e332e31310000" +
    "01001c003bb314c6a541e71f0800000001000000cbfa030000000000",
);
// The queue overflowed (16,384 events waiting): mask FAN_Q_OVERFLOW, no pid, no info.
const OVERFLOW = bytes("18000000030018000040000000000000ffffffff00000000");

Deno.test("`decodeFanotifyEvents()` decodes a merged event's mask, pid, entry and object", () => {
  const batch = decodeFanotifyEvents(CREATE_MERGED);
  assert.equal(batch.events.length, 1);
  const [event] = batch.events;
  assert.ok(event !== undefined);
  assert.deepEqual(describeMask(event.mask), [
    "FAN_ACCESS",
    "FAN_MODIFY",
    "FAN_CLOSE_WRITE",
    "FAN_OPEN",
    "FAN_CREATE",
  ]);
  assert.equal(event.pid, 8475);
  assert.equal(event.fd, -1);
  assert.equal(event.entry?.name, "a.txt");
  assert.equal(event.entry?.dir.key, DIR);
  assert.equal(event.entry?.dir.fsid, "3bb314c6a541e71f");
  // The handle is a struct file_handle as open_by_handle_at takes it.
  assert.deepEqual(event.entry?.dir.handle, bytes("0800000001000000d5c2200069bfa74b"));
  assert.equal(event.object?.key, FILE);
  assert.equal(event.from, null);
  assert.equal(event.to, null);
});

Deno.test("`decodeFanotifyEvents()` reads FAN_RENAME's old and new names and the moved file", () => {
  const [event] = decodeFanotifyEvents(RENAME).events;
  assert.equal(event?.mask, FAN.RENAME);
  assert.deepEqual(event?.from && { dir: event.from.dir.key, name: event.from.name }, {
    dir: DIR,
    name: "a.txt",
  });
  assert.deepEqual(event?.to && { dir: event.to.dir.key, name: event.to.name }, {
    dir: DIR,
    name: "b.txt",
  });
  assert.equal(event?.object?.key, FILE, "FAN_REPORT_TARGET_FID names the file moved");
  assert.equal(event?.entry, null);
});

Deno.test("`decodeFanotifyEvents()` marks events on directories with FAN_ONDIR", () => {
  const [event] = decodeFanotifyEvents(MKDIR_RMDIR).events;
  assert.deepEqual(describeMask(event?.mask ?? 0), ["FAN_CREATE", "FAN_DELETE", "FAN_ONDIR"]);
  assert.equal(event?.entry?.name, "sub");
  assert.notEqual(event?.object?.key, FILE);
});

Deno.test("`decodeFanotifyEvents()` decodes every event of a buffer in order", () => {
  const batch = decodeFanotifyEvents(concat(CREATE_MERGED, RENAME, MKDIR_RMDIR, DELETE, OPEN_EXEC));
  assert.deepEqual(batch.events.map((e) => e.pid), [8475, 8475, 8475, 8475, 12733]);
  assert.deepEqual(batch.events.map((e) => e.entry?.name ?? null), [
    "a.txt",
    null,
    "sub",
    "b.txt",
    "python3.11",
  ]);
  assert.equal(batch.events[3]?.object?.key, FILE, "the file deleted is the one created");
  assert.equal((batch.events[4]?.mask ?? 0) & FAN.OPEN_EXEC, FAN.OPEN_EXEC);
  assert.equal(batch.malformed, 0);
});

Deno.test("`decodeFanotifyEvents()` counts an overflow and never hands it to the filter", () => {
  const seen: number[] = [];
  const batch = decodeFanotifyEvents(concat(CREATE_MERGED, OVERFLOW, DELETE), {
    keep: (pid, mask) => {
      seen.push(mask);
      return pid === 8475;
    },
  });
  assert.equal(batch.overflows, 1);
  assert.equal(batch.events.length, 2);
  assert.ok(!seen.includes(FAN.Q_OVERFLOW));
});

Deno.test("`decodeFanotifyEvents()` skips events the filter refuses before decoding them", () => {
  const batch = decodeFanotifyEvents(concat(CREATE_MERGED, OPEN_EXEC, DELETE), {
    keep: (pid) => pid === 12733,
  });
  assert.equal(batch.skipped, 2);
  assert.deepEqual(batch.events.map((e) => e.entry?.name), ["python3.11"]);
});

Deno.test("`decodeFanotifyEvents()` stops at a bad length or version and counts it", () => {
  const longer = CREATE_MERGED.slice();
  new DataView(longer.buffer).setUint32(0, 4096, true);
  assert.deepEqual(decodeFanotifyEvents(concat(DELETE, longer)).malformed, 1);
  const version = CREATE_MERGED.slice();
  version[4] = 2;
  const batch = decodeFanotifyEvents(concat(version, DELETE));
  assert.equal(batch.malformed, 1);
  assert.equal(batch.events.length, 0);
  // A truncated info record is left out, not read past its event.
  const record = CREATE_MERGED.slice();
  new DataView(record.buffer).setUint16(24 + 2, 400, true);
  const [event] = decodeFanotifyEvents(record).events;
  assert.equal(event?.entry, null);
  assert.equal(event?.pid, 8475);
});

Deno.test("`fileId()` gives the key the decoder gives for the same handle", () => {
  const id = fileId(bytes("3bb314c6a541e71f"), bytes("080000000100000053c2200038ec9b2d0000"));
  assert.equal(id.key, FILE);
  assert.equal(id.handle.length, 16);
});

// Captured on this machine, plus a bind mount of a subdirectory, an autofs mount and a path
// with a space.
const MOUNTINFO = [
  "22 27 0:21 / /proc rw,relatime - proc proc rw",
  "24 27 0:6 / /dev rw,relatime - devtmpfs devtmpfs rw,size=12334792k,mode=755",
  "25 24 0:23 / /dev/shm rw,relatime - tmpfs tmpfs rw,size=24683784k",
  "50 27 254:0 /srv/data /mnt/data rw,relatime shared:4 - ext4 /dev/vda rw",
  "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard",
  "28 27 0:25 / /mnt/my\\040disk ro,nosuid - tmpfs model\\040tools ro,size=4k",
  "60 27 0:50 / /net rw,relatime - autofs systemd-1 rw,fd=30",
  "garbage",
  "",
].join("\n");

Deno.test("`parseMountInfo()` reads device, root, mount point and type, with escapes", () => {
  const entries = parseMountInfo(MOUNTINFO);
  assert.equal(entries.length, 7);
  assert.deepEqual(entries[3], {
    id: 50,
    device: "254:0",
    root: "/srv/data",
    mountPoint: "/mnt/data",
    fsType: "ext4",
    source: "/dev/vda",
  });
  assert.equal(entries[5]?.mountPoint, "/mnt/my disk");
  assert.equal(entries[5]?.source, "model tools");
});

Deno.test("`planFilesystemMarks()` marks each filesystem once, through a mount of its root", () => {
  const plan = planFilesystemMarks(parseMountInfo(MOUNTINFO));
  assert.deepEqual(
    plan.targets.map((t) => [t.device, t.mountPoint, t.partial]),
    [
      ["0:21", "/proc", false],
      ["0:6", "/dev", false],
      ["0:23", "/dev/shm", false],
      ["254:0", "/", false],
      ["0:25", "/mnt/my disk", false],
    ],
  );
  assert.deepEqual(plan.targets[3]?.mountPoints, ["/mnt/data", "/"]);
  assert.deepEqual(plan.skipped, [{ mountPoint: "/net", fsType: "autofs" }]);
});
