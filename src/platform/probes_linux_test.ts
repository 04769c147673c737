import assert from "node:assert/strict";
import { join } from "node:path";
import { errnoName } from "./kernel_abi.ts";
import {
  describePtraceScope,
  hidesOtherUsers,
  parseProcMount,
  parseStraceVersion,
  parseSysctlInt,
  probeDirectory,
  probeFanotify,
  probeInotify,
  probeLandlock,
  probeProc,
  probeStrace,
  readInotifyLimits,
  readPtraceScope,
} from "./probes_linux.ts";

// Captured on Linux 6.18 inside `unshare -mpf` after `mount -t proc -o hidepid=2 proc /proc`:
// the host's /proc stays below, and the new mount is the one visible.
const HIDEPID_MOUNTINFO = [
  "22 27 0:21 / /proc rw,relatime - proc proc rw",
  "27 1 254:0 / / rw,relatime - ext4 /dev/vda rw,discard",
  "45 43 0:21 / /proc rw,relatime - proc proc rw",
  "63 45 0:39 / /proc rw,relatime - proc proc rw,hidepid=invisible,subset=pid",
  "",
].join("\n");

// The shape of a systemd host (optional `shared:` fields) on a kernel older than 5.8.
const SYSTEMD_MOUNTINFO = [
  "25 30 0:23 / /sys rw,nosuid,nodev,noexec,relatime shared:7 - sysfs sysfs rw",
  "26 30 0:24 / /proc rw,nosuid,nodev,noexec,relatime shared:13 - proc proc rw,hidepid=2",
  "30 1 8:1 / / rw,relatime shared:1 - ext4 /dev/sda1 rw,errors=remount-ro",
  "",
].join("\n");

Deno.test("`parseProcMount()` reads hidepid and subset from the visible /proc mount", () => {
  assert.deepEqual(parseProcMount(HIDEPID_MOUNTINFO), {
    options: ["rw", "relatime", "rw", "hidepid=invisible", "subset=pid"],
    hidepid: "invisible",
    subset: "pid",
  });
  const old = parseProcMount(SYSTEMD_MOUNTINFO);
  assert.equal(old?.hidepid, "2");
  assert.equal(old?.subset, null);
  assert.equal(parseProcMount("22 27 0:21 / /proc rw,relatime - proc proc rw\n")?.hidepid, null);
  assert.equal(parseProcMount("27 1 254:0 / / rw - ext4 /dev/vda rw\n"), null);
  // A tmpfs mounted on /proc is not procfs.
  assert.equal(parseProcMount("40 1 0:40 / /proc rw - tmpfs none rw\n"), null);
});

Deno.test("`hidesOtherUsers()` knows the numeric and named hidepid values", () => {
  assert.equal(hidesOtherUsers(null), false);
  assert.equal(hidesOtherUsers("0"), false);
  assert.equal(hidesOtherUsers("off"), false);
  assert.equal(hidesOtherUsers("2"), true);
  assert.equal(hidesOtherUsers("invisible"), true);
  assert.equal(hidesOtherUsers("ptraceable"), true);
});

Deno.test("`parseSysctlInt()` reads one integer and nothing else", () => {
  assert.equal(parseSysctlInt("8192\n"), 8192);
  assert.equal(parseSysctlInt("-1\n"), -1);
  assert.equal(parseSysctlInt("1 2\n"), null);
  assert.equal(parseSysctlInt(""), null);
});

Deno.test("`parseStraceVersion()` reads old and new `strace -V` banners", () => {
  assert.equal(
    parseStraceVersion(
      "strace -- version 6.1\nCopyright (c) 1991-2022 The strace developers <https://strace.io>.\n",
    ),
    "6.1",
  );
  assert.equal(parseStraceVersion("strace -- version 4.21\n"), "4.21");
  assert.equal(parseStraceVersion("command not found"), null);
});

Deno.test("`describePtraceScope()` and `errnoName()` name what they are given", () => {
  assert.match(describePtraceScope(1), /descendants/);
  assert.match(describePtraceScope(3), /disabled/);
  assert.match(describePtraceScope(9), /unknown scope 9/);
  assert.equal(errnoName(38), "ENOSYS");
  assert.equal(errnoName(4242), "errno 4242");
});

Deno.test("the readers answer on this host: /proc, inotify limits and a live inotify watch", async () => {
  const proc = probeProc();
  assert.equal(proc.usable, true);
  assert.ok(proc.paths.every((p) => p.readable), JSON.stringify(proc.paths));
  assert.ok(proc.mount !== null);
  const limits = readInotifyLimits();
  assert.equal(
    limits.maxUserWatches,
    Number(Deno.readTextFileSync("/proc/sys/fs/inotify/max_user_watches")),
  );
  assert.ok((limits.maxUserInstances ?? 0) > 0);
  const dir = await Deno.makeTempDir();
  try {
    assert.equal(probeInotify(dir), null);
    assert.notEqual(
      probeInotify(join(dir, "missing")),
      null,
      "a missing directory cannot be watched",
    );
  } finally {
    await Deno.remove(dir, { recursive: true });
  }
  const scope = readPtraceScope();
  let expected: number | null = null;
  try {
    expected = Number(Deno.readTextFileSync("/proc/sys/kernel/yama/ptrace_scope"));
  } catch {
    expected = null; // No Yama in this kernel.
  }
  assert.equal(scope, expected);
});

Deno.test("`probeLandlock()` gets the kernel's ABI version or the reason there is none", () => {
  const probe = probeLandlock();
  if (probe.abi === null) {
    assert.match(probe.error ?? "", /ENOSYS|EOPNOTSUPP/);
  } else {
    assert.ok(Number.isInteger(probe.abi) && probe.abi >= 1, String(probe.abi));
    assert.equal(probe.error, null);
  }
});

const isRoot = Deno.uid() === 0;
const hasCapsh = (() => {
  try {
    return Deno.statSync("/usr/sbin/capsh").isFile;
  } catch {
    return false;
  }
})();

Deno.test({
  name: "`probeFanotify()` as root makes a permission-event group",
  ignore: !isRoot,
  fn() {
    const probe = probeFanotify();
    // A container's seccomp profile may forbid fanotify_init even to root.
    if (probe.permissionError === "EPERM" && !probe.notification) return;
    assert.deepEqual(probe, {
      permission: true,
      notification: true,
      permissionError: null,
      notificationError: null,
    });
  },
});

Deno.test({
  name: "`probeFanotify()` without CAP_SYS_ADMIN reports EPERM for permission events",
  ignore: !isRoot || !hasCapsh,
  async fn() {
    const code = `import { probeFanotify } from ${
      JSON.stringify(new URL("./probes_linux.ts", import.meta.url).href)
    }; console.log(JSON.stringify(probeFanotify()));`;
    const out = await new Deno.Command("/usr/sbin/capsh", {
      args: ["--drop=cap_sys_admin", "--", "-c", `"$0" eval "$1"`, Deno.execPath(), code],
      stdout: "piped",
      stderr: "piped",
    }).output();
    const stderr = new TextDecoder().decode(out.stderr);
    assert.ok(out.success, stderr);
    const probe = JSON.parse(new TextDecoder().decode(out.stdout));
    assert.equal(probe.permission, false);
    assert.equal(probe.permissionError, "EPERM");
  },
});

Deno.test("`probeStrace()` reports strace's version, or that it is not on PATH", async () => {
  const probe = await probeStrace();
  const which = await new Deno.Command("sh", {
    args: ["-c", "command -v strace"],
    stdout: "piped",
  }).output();
  if (which.success) {
    assert.match(probe.version ?? "", /^\d+(\.\d+)+$/);
  } else {
    assert.equal(probe.version, null);
    assert.match(probe.error ?? "", /not installed/);
  }
});

Deno.test("`probeDirectory()` writes and deletes a file, and never creates a missing directory", async () => {
  const root = await Deno.makeTempDir();
  try {
    await Deno.chmod(root, 0o750);
    const existing = probeDirectory(root);
    assert.deepEqual(existing, {
      path: root,
      exists: true,
      mode: 0o750,
      writable: true,
      error: null,
      ancestor: null,
    });
    assert.deepEqual([...Deno.readDirSync(root)], [], "the probe file is gone");

    const missing = join(root, "a", "b");
    const probe = probeDirectory(missing);
    assert.equal(probe.exists, false);
    assert.equal(probe.writable, true);
    assert.equal(probe.ancestor, root);
    assert.deepEqual([...Deno.readDirSync(root)], [], "nothing was created");

    // Under a regular file, no one can create a directory, root included (ENOTDIR).
    await Deno.writeTextFile(join(root, "file"), "x");
    const blocked = probeDirectory(join(root, "file", "sentry"));
    assert.equal(blocked.writable, false);
    assert.equal(blocked.error, `"${join(root, "file")}" is not a directory`);
    assert.equal(blocked.ancestor, join(root, "file"));
    const notDir = probeDirectory(join(root, "file"));
    assert.equal(notDir.writable, false);
    assert.equal(notDir.error, "it is not a directory");
  } finally {
    await Deno.remove(root, { recursive: true });
  }
});
