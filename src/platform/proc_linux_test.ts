import assert from "node:assert/strict";
import { join } from "node:path";
import {
  accessMode,
  bootTimeMs,
  clockTicks,
  describeFlags,
  failureReason,
  formatEndpoint,
  hasFlag,
  listChildren,
  listFds,
  listPids,
  pageSize,
  parseAuxv,
  parseBootTime,
  parseFdinfo,
  parseNetFile,
  parseStat,
  parseStatusUids,
  processStartMs,
  readCmdline,
  readCwd,
  readExe,
  readFdinfo,
  readFdTarget,
  readNetNamespace,
  readNetSockets,
  readStat,
  readStatusUids,
  socketInode,
} from "./proc_linux.ts";

// ---------------------------------------------------------------------------------------------
// Helpers for real processes. Every child is killed and awaited in `finally`; every wait is bounded.

const WAIT_MS = 5000;

function spawn(args: string[]): Deno.ChildProcess {
  const [cmd = "", ...rest] = args;
  return new Deno.Command(cmd, { args: rest, stdout: "piped", stderr: "inherit", stdin: "null" })
    .spawn();
}

/** Reads the child's first stdout line, failing after `WAIT_MS`, then lets go of stdout. */
async function firstLine(child: Deno.ChildProcess): Promise<string> {
  const reader = child.stdout.pipeThrough(new TextDecoderStream()).getReader();
  let timer: ReturnType<typeof setTimeout> | undefined;
  const timeout = new Promise<never>((_, reject) => {
    timer = setTimeout(() => reject(new Error("Timed out waiting for the child's line")), WAIT_MS);
  });
  let text = "";
  try {
    while (!text.includes("\n")) {
      const { value, done } = await Promise.race([reader.read(), timeout]);
      if (done) throw new Error(`Child closed stdout before a full line: "${text}"`);
      text += value;
    }
    return text.slice(0, text.indexOf("\n"));
  } finally {
    clearTimeout(timer);
    await reader.cancel();
  }
}

async function killChild(child: Deno.ChildProcess, extraPids: number[] = []): Promise<void> {
  for (const pid of extraPids) {
    try {
      Deno.kill(pid, "SIGKILL");
    } catch { /* already gone */ }
  }
  try {
    child.kill("SIGKILL");
  } catch { /* already exited */ }
  await child.status;
}

async function waitFor(check: () => boolean): Promise<void> {
  const deadline = Date.now() + WAIT_MS;
  while (!check()) {
    if (Date.now() > deadline) throw new Error("Timed out waiting for a condition");
    await new Promise((resolve) => setTimeout(resolve, 10));
  }
}

// ---------------------------------------------------------------------------------------------
// parseStat

const STAT_CAT =
  "8742 (cat) R 8740 8740 5843 34816 8742 4194304 101 0 0 0 7 3 0 0 20 0 1 0 121228 3133440 390 " +
  "18446744073709551615 94805231288320 94805231308201 140721956260496 0 0 0 0 0 0 0 0 0 17 0 0 0 " +
  "0 0 0 94805231324208 94805231325824 94806187876352 140721956268574 140721956268594 " +
  "140721956268594 140721956270059 0\n";

Deno.test("parseStat() reads the fields Sentry uses from a stat line", () => {
  assert.deepEqual(parseStat(STAT_CAT), {
    pid: 8742,
    comm: "cat",
    state: "R",
    ppid: 8740,
    pgrp: 8740,
    session: 5843,
    ttyNr: 34816,
    tpgid: 8742,
    utime: 7,
    stime: 3,
    numThreads: 1,
    starttime: 121228,
    vsize: 3133440,
    rss: 390,
  });
});

Deno.test("parseStat() keeps spaces and parentheses in comm by splitting on the last ')'", () => {
  const stat = parseStat(STAT_CAT.replace("(cat)", "(a) b)"));
  assert.equal(stat.comm, "a) b");
  assert.equal(stat.state, "R");
  assert.equal(stat.ppid, 8740);
  assert.equal(parseStat(STAT_CAT.replace("(cat)", "((x) ) S 1 ()")).comm, "(x) ) S 1 (");
  assert.equal(parseStat(STAT_CAT.replace("(cat)", "()")).comm, "");
});

Deno.test("parseStat() reads a kernel thread", () => {
  const stat = parseStat(
    "2 (kthreadd) S 0 0 0 0 -1 2129984 0 0 0 0 0 0 0 0 20 0 1 0 24 0 0 18446744073709551615 0 0 " +
      "0 0 0 0 0 2147483647 0 1 0 0 0 1 0 0 0 0 0 0 0 0 0 0 0 0 0",
  );
  assert.equal(stat.comm, "kthreadd");
  assert.equal(stat.ppid, 0);
  assert.equal(stat.tpgid, -1);
  assert.equal(stat.rss, 0);
});

Deno.test("parseStat() throws SyntaxError on text that is not a stat line", () => {
  assert.throws(() => parseStat("hello"), SyntaxError);
  assert.throws(() => parseStat("12 (x) S 1 2"), SyntaxError);
});

// ---------------------------------------------------------------------------------------------
// status, fdinfo, flags

Deno.test("parseStatusUids() reads real and effective uid and the tracer", () => {
  const status = "Name:\tpasswd\nUmask:\t0022\nState:\tS (sleeping)\nTgid:\t77\nPid:\t77\n" +
    "PPid:\t1\nTracerPid:\t4242\nUid:\t1000\t0\t0\t0\nGid:\t1000\t1000\t1000\t1000\n";
  assert.deepEqual(parseStatusUids(status), { uid: 1000, euid: 0, tracerPid: 4242 });
  assert.throws(() => parseStatusUids("Name:\tx\n"), SyntaxError);
});

Deno.test("parseFdinfo() reads pos, octal flags, mnt_id and ino", () => {
  const info = parseFdinfo("pos:\t1234\nflags:\t02102001\nmnt_id:\t16\nino:\t12635\n");
  assert.deepEqual(info, { pos: 1234, flags: 0o2102001, mntId: 16, ino: 12635 });
  assert.equal(accessMode(info.flags), "write");
  assert.ok(hasFlag(info.flags, "O_APPEND"));
  assert.ok(hasFlag(info.flags, "O_CLOEXEC"));
  assert.ok(!hasFlag(info.flags, "O_NONBLOCK"));
});

Deno.test("parseFdinfo() ignores the extra lines of an eventfd and tolerates a missing ino", () => {
  const eventfd = "pos:\t0\nflags:\t02000002\nmnt_id:\t17\nino:\t1038\n" +
    "eventfd-count:                3\neventfd-id: 1\neventfd-semaphore: 0\n";
  assert.deepEqual(parseFdinfo(eventfd), { pos: 0, flags: 0o2000002, mntId: 17, ino: 1038 });
  assert.deepEqual(parseFdinfo("pos:\t0\nflags:\t00\nmnt_id:\t16\n"), {
    pos: 0,
    flags: 0,
    mntId: 16,
  });
  assert.throws(() => parseFdinfo("pos:\t0\n"), SyntaxError);
});

Deno.test("accessMode() maps O_ACCMODE and describeFlags() names the flags", () => {
  assert.equal(accessMode(0o2100000), "read");
  assert.equal(accessMode(0o2100001), "write");
  assert.equal(accessMode(0o2102002), "readwrite");
  assert.equal(accessMode(3), "readwrite");
  assert.deepEqual(describeFlags(0o2102001), ["O_WRONLY", "O_APPEND", "O_LARGEFILE", "O_CLOEXEC"]);
  // O_SYNC includes O_DSYNC's bit: only O_SYNC is named.
  assert.ok(hasFlag(0o4010001, "O_DSYNC"));
  assert.deepEqual(describeFlags(0o4010001), ["O_WRONLY", "O_SYNC"]);
  assert.ok(!hasFlag(0o10001, "O_SYNC"));
});

Deno.test("socketInode() reads the inode of socket targets only", () => {
  assert.equal(socketInode("socket:[15208]"), 15208);
  assert.equal(socketInode("pipe:[15208]"), null);
  assert.equal(socketInode("/tmp/socket:[1]"), null);
  assert.equal(socketInode("anon_inode:[eventfd]"), null);
});

// ---------------------------------------------------------------------------------------------
// /proc/net

const HEADER4 =
  "  sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";
const HEADER6 =
  "  sl  local_address                         remote_address                        " +
  "st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode";

Deno.test("parseNetFile() reads IPv4 TCP listeners and connections", () => {
  const text = `${HEADER4}
   0: 00000000:07E8 00000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 1054 1 000000002c55450d 100 0 0 10 0
   1: 0100007F:D63E 0100007F:D131 01 00000000:00000000 00:00000000 00000000  1000        0 15208 2 000000003747e48a 20 0 0 10 -1
   2: 0A01A8C0:C350 22D8B85D:01BB 06 00000000:00000000 03:00000F4B 00000000     0        0 0 3 0000000000000000
`;
  assert.deepEqual(parseNetFile(text, "tcp"), [
    {
      proto: "tcp",
      localAddress: "0.0.0.0",
      localPort: 2024,
      remoteAddress: "0.0.0.0",
      remotePort: 0,
      state: "LISTEN",
      uid: 0,
      inode: 1054,
    },
    {
      proto: "tcp",
      localAddress: "127.0.0.1",
      localPort: 54846,
      remoteAddress: "127.0.0.1",
      remotePort: 53553,
      state: "ESTABLISHED",
      uid: 1000,
      inode: 15208,
    },
    {
      proto: "tcp",
      localAddress: "192.168.1.10",
      localPort: 50000,
      remoteAddress: "93.184.216.34",
      remotePort: 443,
      state: "TIME_WAIT",
      uid: 0,
      inode: 0,
    },
  ]);
});

Deno.test("parseNetFile() renders IPv6 compressed and IPv4-mapped IPv6 as IPv4", () => {
  const text = `${HEADER6}
   0: 00000000000000000000000001000000:B06B 00000000000000000000000000000000:0000 0A 00000000:00000000 00:00000000 00000000     0        0 15212 1 000000000f31dbc2 100 0 0 10 0
   1: 0000000000000000FFFF00000100007F:D131 0000000000000000FFFF00000100007F:D63E 01 00000000:00000000 00:00000000 00000000     0        0 15209 1 00000000ee3f174c 20 0 0 10 -1
   2: B80D0120000000000000000001000000:0050 000080FE00000000FF0102000304FFFE:C000 08 00000000:00000000 00:00000000 00000000     0        0 77 1 0000000000000000 20 0 0 10 -1
   3: B80D0120000000000000000000000000:0016 B80D0120000001000000000001000000:C001 0B 00000000:00000000 00:00000000 00000000     0        0 78 1 0000000000000000 20 0 0 10 -1
`;
  const sockets = parseNetFile(text, "tcp6");
  const pick = sockets.map((s) => [s.localAddress, s.localPort, s.remoteAddress, s.state]);
  assert.deepEqual(pick, [
    ["::1", 45163, "::", "LISTEN"],
    ["127.0.0.1", 53553, "127.0.0.1", "ESTABLISHED"],
    ["2001:db8::1", 80, "fe80::2:1ff:feff:403", "CLOSE_WAIT"],
    ["2001:db8::", 22, "2001:db8:1::1", "CLOSING"],
  ]);
});

Deno.test("parseNetFile() compresses only the longest zero run, the first one on a tie", () => {
  // 2001:db8:0:0:1:0:0:1 -> 2001:db8::1:0:0:1; 2001:0:0:1:0:0:0:1 -> 2001:0:0:1::1.
  const line = (hex: string) =>
    `${HEADER6}\n 0: ${hex}:0001 00000000000000000000000000000000:0000 07 0:0 0:0 0 0 0 9 2\n`;
  assert.equal(
    parseNetFile(line("B80D0120000000000000010001000000"), "udp6")[0]?.localAddress,
    "2001:db8::1:0:0:1",
  );
  assert.equal(
    parseNetFile(line("00000120010000000000000001000000"), "udp6")[0]?.localAddress,
    "2001:0:0:1::1",
  );
  // A single zero group is not compressed.
  assert.equal(
    parseNetFile(line("B80D0120010000000100010001000100"), "udp6")[0]?.localAddress,
    "2001:db8:0:1:1:1:1:1",
  );
});

Deno.test("parseNetFile() reads UDP sockets, unconnected as CLOSE", () => {
  const udp =
    `   sl  local_address rem_address   st tx_queue rx_queue tr tm->when retrnsmt   uid  timeout inode ref pointer drops
 4846: 0100007F:ABF7 00000000:0000 07 00000000:00000000 00:00000000 00000000     0        0 15211 2 0000000080ee357b 0
`;
  const udp6 = `${HEADER6} ref pointer drops
 6412: 00000000000000000000000001000000:B215 00000000000000000000000001000000:0009 01 00000000:00000000 00:00000000 00000000     0        0 15210 2 00000000d01c94c2 0
`;
  const [v4] = parseNetFile(udp, "udp");
  assert.equal(v4?.state, "CLOSE");
  assert.equal(formatEndpoint(v4?.localAddress ?? "", v4?.localPort ?? 0), "127.0.0.1:44023");
  const [v6] = parseNetFile(udp6, "udp6");
  assert.equal(v6?.state, "ESTABLISHED");
  assert.equal(formatEndpoint(v6?.remoteAddress ?? "", v6?.remotePort ?? 0), "[::1]:9");
  assert.deepEqual(parseNetFile(`${HEADER4}\n`, "tcp"), []);
});

Deno.test("parseNetFile() throws SyntaxError on a malformed line", () => {
  assert.throws(() => parseNetFile(`${HEADER4}\n 0: nonsense\n`, "tcp"), SyntaxError);
});

// ---------------------------------------------------------------------------------------------
// auxv, boot time, start time

Deno.test("parseAuxv() reads 64-bit little-endian pairs up to AT_NULL", () => {
  const view = new DataView(new ArrayBuffer(64));
  view.setBigUint64(0, 6n, true);
  view.setBigUint64(8, 4096n, true);
  view.setBigUint64(16, 17n, true);
  view.setBigUint64(24, 100n, true);
  view.setBigUint64(48, 33n, true); // after AT_NULL: ignored
  const auxv = parseAuxv(new Uint8Array(view.buffer));
  assert.deepEqual([...auxv], [[6, 4096n], [17, 100n]]);
});

Deno.test("clockTicks() and pageSize() agree with getconf", async () => {
  const getconf = async (name: string) => {
    const out = await new Deno.Command("getconf", { args: [name], stdout: "piped" }).output();
    return Number(new TextDecoder().decode(out.stdout).trim());
  };
  assert.equal(clockTicks(), await getconf("CLK_TCK"));
  assert.equal(pageSize(), await getconf("PAGESIZE"));
});

Deno.test("parseBootTime() and processStartMs() convert ticks after boot to epoch ms", () => {
  assert.equal(parseBootTime("cpu  1 2 3\nbtime 1700000000\nprocesses 9\n"), 1700000000000);
  assert.throws(() => parseBootTime("cpu 1\n"), SyntaxError);
  assert.equal(
    processStartMs({ starttime: 12345 }, { bootTimeMs: 1700000000000, clockTicks: 100 }),
    1700000123450,
  );
});

Deno.test("processStartMs() of a fresh child is within two seconds of now", async () => {
  const child = spawn(["sleep", "30"]);
  try {
    const stat = readStat(child.pid);
    assert.ok(stat);
    assert.ok(Math.abs(processStartMs(stat) - Date.now()) < 2000);
    assert.ok(bootTimeMs() < Date.now());
  } finally {
    await killChild(child);
  }
});

// ---------------------------------------------------------------------------------------------
// Readers on real processes

Deno.test("readers describe the running test process", () => {
  const pids = listPids();
  assert.ok(pids.includes(Deno.pid));
  assert.ok(pids.includes(1));
  const stat = readStat(Deno.pid);
  assert.equal(stat?.pid, Deno.pid);
  assert.ok((stat?.numThreads ?? 0) > 1);
  assert.equal(readExe(Deno.pid)?.path, Deno.realPathSync(Deno.execPath()));
  assert.equal(readExe(Deno.pid)?.deleted, false);
  assert.equal(readCwd(Deno.pid), Deno.cwd());
  assert.ok(readCmdline(Deno.pid)?.includes("test"));
  assert.deepEqual(readStatusUids(Deno.pid), { uid: Deno.uid(), euid: Deno.uid(), tracerPid: 0 });
  assert.match(readNetNamespace(Deno.pid) ?? "", /^net:\[\d+\]$/);
});

Deno.test("readers return null or a gone result for a process that has exited", async () => {
  const child = new Deno.Command("true").spawn();
  await child.status;
  const pid = child.pid;
  assert.equal(readStat(pid), null);
  assert.equal(readCmdline(pid), null);
  assert.equal(readExe(pid), null);
  assert.equal(readCwd(pid), null);
  assert.equal(readStatusUids(pid), null);
  assert.equal(readFdinfo(pid, 0), null);
  assert.equal(readNetSockets(pid), null);
  assert.equal(listChildren(pid), null);
  assert.equal(listChildren(pid, { method: "scan" }), null);
  assert.equal(readNetNamespace(pid), null);
  const fds = listFds(pid);
  assert.equal(fds.ok, false);
  assert.equal(!fds.ok && fds.reason, "gone");
  const target = readFdTarget(pid, 0);
  assert.equal(!target.ok && target.reason, "gone");
});

Deno.test("failureReason() tells gone from denied", () => {
  assert.equal(failureReason(new Deno.errors.NotFound("x")), "gone");
  assert.equal(failureReason(new Error("ESRCH: No such process")), "gone");
  assert.equal(failureReason(new Deno.errors.PermissionDenied("x")), "denied");
  assert.equal(failureReason(new Deno.errors.NotCapable("x")), "denied");
  assert.equal(failureReason(new Error("Input/output error (os error 5)")), "error");
  assert.equal(failureReason("weird"), "error");
});

Deno.test("readCmdline() and readExe() of a kernel thread and a zombie", async () => {
  // kthreadd is pid 2 on a machine (not in a pid namespace); skip the kernel half in a container.
  if (readStat(2)?.comm === "kthreadd") {
    assert.deepEqual(readCmdline(2), []);
    assert.equal(readExe(2), null);
  }
  const script = "import os,sys,time\npid=os.fork()\nif pid==0: os._exit(0)\n" +
    "print(pid, flush=True)\ntime.sleep(60)";
  const child = spawn(["python3", "-c", script]);
  try {
    const zombie = Number(await firstLine(child));
    await waitFor(() => readStat(zombie)?.state === "Z");
    assert.deepEqual(readCmdline(zombie), []);
    assert.equal(readExe(zombie), null);
    assert.equal(readStat(zombie)?.ppid, child.pid);
  } finally {
    await killChild(child);
  }
});

Deno.test("readExe() reports an executable deleted after exec", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sentry_proc_" });
  const copy = join(dir, "sleepy");
  await Deno.copyFile("/bin/sleep", copy);
  const child = spawn([copy, "30"]);
  try {
    await waitFor(() => readExe(child.pid)?.path === copy);
    assert.deepEqual(readExe(child.pid), { path: copy, deleted: false });
    await Deno.remove(copy);
    assert.deepEqual(readExe(child.pid), { path: copy, deleted: true });
  } finally {
    await killChild(child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("listChildren() lists a shell's two background children", async () => {
  const child = spawn(["sh", "-c", "sleep 30 & a=$!; sleep 30 & echo $a $!; wait"]);
  let sleeps: number[] = [];
  try {
    sleeps = (await firstLine(child)).split(" ").map(Number);
    assert.deepEqual(listChildren(child.pid)?.sort(), [...sleeps].sort());
    assert.deepEqual(listChildren(child.pid, { method: "scan" })?.sort(), [...sleeps].sort());
    assert.ok(listChildren(Deno.pid)?.includes(child.pid));
    assert.deepEqual(listChildren(sleeps[0] ?? 0), []);
  } finally {
    await killChild(child, sleeps);
  }
});

Deno.test("listFds() and readFdinfo() tell a file opened for reading from one for writing", async () => {
  const dir = await Deno.makeTempDir({ prefix: "sentry_proc_" });
  await Deno.writeTextFile(join(dir, "in.txt"), "hello\n");
  const script = [
    "import os,sys,time",
    "d=sys.argv[1]",
    "r=open(os.path.join(d,'in.txt'))",
    "r.read(3)",
    "w=open(os.path.join(d,'out.txt'),'w')",
    "a=open(os.path.join(d,'log.txt'),'a')",
    "rw=os.open(os.path.join(d,'in.txt'),os.O_RDWR|os.O_NONBLOCK)",
    "os.set_inheritable(rw, True)",
    "print(r.fileno(),w.fileno(),a.fileno(),rw,flush=True)",
    "time.sleep(60)",
  ].join("\n");
  const child = spawn(["python3", "-c", script, dir]);
  try {
    const [r = -1, w = -1, a = -1, rw = -1] = (await firstLine(child)).split(" ").map(Number);
    const fds = listFds(child.pid);
    assert.ok(fds.ok);
    const byFd = new Map(fds.value.map((entry) => [entry.fd, entry.target]));
    assert.equal(byFd.get(r), join(dir, "in.txt"));
    assert.equal(byFd.get(w), join(dir, "out.txt"));
    assert.equal(byFd.get(a), join(dir, "log.txt"));
    assert.ok(byFd.get(1)?.startsWith("pipe:["));
    assert.deepEqual(readFdTarget(child.pid, w), { ok: true, value: join(dir, "out.txt") });

    const read = readFdinfo(child.pid, r);
    const write = readFdinfo(child.pid, w);
    const append = readFdinfo(child.pid, a);
    const both = readFdinfo(child.pid, rw);
    assert.ok(read && write && append && both);
    assert.equal(accessMode(read.flags), "read");
    assert.equal(read.pos, 6); // Python's buffered reader read the whole file.
    assert.equal(accessMode(write.flags), "write");
    assert.equal(accessMode(append.flags), "write");
    assert.equal(accessMode(both.flags), "readwrite");
    assert.ok(hasFlag(append.flags, "O_APPEND") && !hasFlag(write.flags, "O_APPEND"));
    assert.ok(hasFlag(both.flags, "O_NONBLOCK"));
    // Python opens with O_CLOEXEC; set_inheritable cleared it for rw, and fdinfo follows.
    assert.ok(hasFlag(read.flags, "O_CLOEXEC") && !hasFlag(both.flags, "O_CLOEXEC"));
    // O_CREAT and O_TRUNC ('w' mode) do not survive into fdinfo.
    assert.equal(write.flags & 0o1100, 0);
    assert.equal(read.ino, Deno.statSync(join(dir, "in.txt")).ino);
    assert.equal(readFdinfo(child.pid, 999), null);
    const missing = readFdTarget(child.pid, 999);
    assert.equal(!missing.ok && missing.reason, "gone");
  } finally {
    await killChild(child);
    await Deno.remove(dir, { recursive: true });
  }
});

Deno.test("readNetSockets() joined with listFds() shows a listener and both ends of a connection", async () => {
  const script = [
    "import socket,time",
    "l=socket.socket(); l.bind(('127.0.0.1',0)); l.listen()",
    "c=socket.create_connection(l.getsockname())",
    "a,_=l.accept()",
    "u=socket.socket(socket.AF_INET,socket.SOCK_DGRAM); u.bind(('127.0.0.1',0))",
    "p6=0",
    "try:",
    "  l6=socket.socket(socket.AF_INET6); l6.bind(('::1',0)); l6.listen(); p6=l6.getsockname()[1]",
    "except OSError: pass",
    "print(l.getsockname()[1],c.getsockname()[1],u.getsockname()[1],p6,flush=True)",
    "time.sleep(60)",
  ].join("\n");
  const child = spawn(["python3", "-c", script]);
  try {
    const [port = 0, clientPort = 0, udpPort = 0, v6Port = 0] = (await firstLine(child))
      .split(" ").map(Number);
    const fds = listFds(child.pid);
    assert.ok(fds.ok);
    const inodes = new Set(fds.value.map((e) => socketInode(e.target)).filter((i) => i !== null));
    const all = readNetSockets(child.pid);
    assert.ok(all);
    const mine = all.filter((s) => inodes.has(s.inode));
    const show = (s: (typeof mine)[number]) =>
      `${s.proto} ${formatEndpoint(s.localAddress, s.localPort)} ${
        formatEndpoint(s.remoteAddress, s.remotePort)
      } ${s.state}`;
    const lines = mine.map(show).sort();
    const expected = [
      `tcp 127.0.0.1:${port} 0.0.0.0:0 LISTEN`,
      `tcp 127.0.0.1:${clientPort} 127.0.0.1:${port} ESTABLISHED`,
      `tcp 127.0.0.1:${port} 127.0.0.1:${clientPort} ESTABLISHED`,
      `udp 127.0.0.1:${udpPort} 0.0.0.0:0 CLOSE`,
    ];
    if (v6Port !== 0) expected.push(`tcp6 [::1]:${v6Port} [::]:0 LISTEN`);
    assert.deepEqual(lines, expected.sort());
    assert.equal(mine.length, inodes.size);
  } finally {
    await killChild(child);
  }
});
