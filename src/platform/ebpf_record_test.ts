import assert from "node:assert/strict";
import {
  CONTROL_SIZE,
  decodeControl,
  decodeRecord,
  EV,
  F,
  HEADER_SIZE,
  procSelf,
  ptraceRequestName,
  recordAction,
  RecordError,
  splitArgv,
  sumPerCpu,
  SYSCALL_NAMES,
} from "./ebpf_record.ts";
import { CONTROL } from "./_ebpf_control_fixtures.ts";

/**
 * Records captured from the ring buffer of `sentry.bpf.o` on Linux 6.18 while a python3 agent
 * (pid 28449, cwd /tmp/ws) read /etc/ld.so.cache, created x.txt, renamed it to y.txt, deleted
 * it, connected to 127.0.0.1:9 (refused) and ran `sh -c 'exit 3'` (pid 28459).
 */
const CAPTURED = {
  EXEC: "090010003b000000216f0000216f0000126f0000216f00004f60c49f13010000000000000000000000000000" +
    "0000000010001300370100002f7573722f62696e2f707974686f6e332f7573722f62696e2f707974686f6e33" +
    "2e31312f7573722f62696e2f707974686f6e33002d53002d6300696d706f7274206f732c736f636b65743b20" +
    "6f70656e28272f6574632f686f73746e616d6527292e7265616428293b206f70656e2827782e747874272c27" +
    "7727293b206f732e72656e616d652827782e747874272c27792e74787427293b206f732e756e6c696e6b2827" +
    "792e74787427290a7472793a20736f636b65742e736f636b657428292e636f6e6e6563742828273132372e30" +
    "2e302e31272c203929290a657863657074204f534572726f723a20706173730a733d736f636b65742e736f63" +
    "6b657428736f636b65742e41465f494e455436293b200a7472793a20732e636f6e6e6563742828273a3a3127" +
    "2c203534333229290a657863657074204f534572726f723a20706173730a6f732e73797374656d2827657869" +
    "742033272900",
  OPEN: "0100100001010000216f0000216f0000126f0000000000005462c89f13010000030000000000000000000800" +
    "0000000010001000000000002f6574632f6c642e736f2e63616368652f6574632f6c642e736f2e6361636865",
  RENAME:
    "0400600052000000216f0000216f0000126f000000000000f8a521a613010000000000000000000000000000" +
    "0000000007000500070005002f746d702f7773782e7478742f746d702f7773792e747874",
  UNLINK:
    "0200200057000000216f0000216f0000126f000000000000861422a613010000000000000000000000000000" +
    "0000000007000500000000002f746d702f7773792e747874",
  CONNECT:
    "070000002a000000216f0000216f0000126f000000000000787e23a61301000091ffffffffffffff00000000" +
    "000000001000000000000000020000097f0000010000000000000000",
  FORK: "0b000000000000002b6f00002b6f0000216f000000000000fa8f70a613010000000000000000000000000000" +
    "000000000000000000000000",
  EXIT: "0c000000000000002b6f00002b6f0000216f000000000000af4293a613010000000000000000000000030000" +
    "000000000000000000000000",
};

function hex(text: string): Uint8Array {
  const bytes = new Uint8Array(text.length / 2);
  for (let i = 0; i < bytes.length; i++) bytes[i] = parseInt(text.slice(i * 2, i * 2 + 2), 16);
  return bytes;
}

Deno.test("decodeRecord() reads the header of a captured open", () => {
  const r = decodeRecord(hex(CAPTURED.OPEN));
  assert.equal(r.type, EV.OPEN);
  assert.equal(r.nr, 257);
  assert.equal(r.pid, 28449);
  assert.equal(r.tid, 28449);
  assert.equal(r.ppid, 28434);
  assert.equal(r.ret, 3);
  assert.equal(r.flags & F.RESOLVED, F.RESOLVED);
  assert.equal(Number(r.aux), 0o2000000); // O_RDONLY | O_CLOEXEC
});

Deno.test("recordAction() gives an open's resolved path and the name as requested", () => {
  const a = recordAction(decodeRecord(hex(CAPTURED.OPEN)));
  assert.deepEqual(a, {
    op: "open",
    path: "/etc/ld.so.cache",
    requested: "/etc/ld.so.cache",
    flags: 0o2000000,
    created: false,
    result: 3,
  });
});

Deno.test("recordAction() joins a relative rename's names to the kernel's walk of the cwd", () => {
  const a = recordAction(decodeRecord(hex(CAPTURED.RENAME)));
  assert.deepEqual(a, { op: "rename", from: "/tmp/ws/x.txt", to: "/tmp/ws/y.txt", result: 0 });
});

Deno.test("recordAction() makes a relative unlink absolute", () => {
  const a = recordAction(decodeRecord(hex(CAPTURED.UNLINK)));
  assert.deepEqual(a, { op: "unlink", path: "/tmp/ws/y.txt", result: 0 });
});

Deno.test("recordAction() keeps a refused connect's sockaddr and its errno", () => {
  const a = recordAction(decodeRecord(hex(CAPTURED.CONNECT)));
  assert.equal(a?.op, "connect");
  if (a?.op !== "connect") return;
  assert.equal(a.result, -111); // ECONNREFUSED
  assert.deepEqual([...a.addr.subarray(0, 8)], [2, 0, 0, 9, 127, 0, 0, 1]);
});

Deno.test("recordAction() reads an exec's file, program and argv", () => {
  const a = recordAction(decodeRecord(hex(CAPTURED.EXEC)));
  assert.equal(a?.op, "exec");
  if (a?.op !== "exec") return;
  assert.equal(a.path, "/usr/bin/python3");
  assert.equal(a.exe, "/usr/bin/python3.11");
  assert.deepEqual(a.argv.slice(0, 3), ["/usr/bin/python3", "-S", "-c"]);
  assert.match(a.argv[3] ?? "", /os.rename/);
});

Deno.test("recordAction() reads a fork's parent and an exit's wait status", () => {
  const fork = decodeRecord(hex(CAPTURED.FORK));
  assert.equal(fork.pid, 28459);
  assert.deepEqual(recordAction(fork), { op: "fork", ppid: 28449 });
  const exit = decodeRecord(hex(CAPTURED.EXIT));
  assert.deepEqual(recordAction(exit), { op: "exit", status: 3 << 8 });
});

Deno.test("decodeRecord() refuses a record shorter than its header or its fields", () => {
  assert.throws(() => decodeRecord(new Uint8Array(HEADER_SIZE - 1)), RecordError);
  const bytes = hex(CAPTURED.RENAME);
  assert.throws(() => decodeRecord(bytes.subarray(0, bytes.length - 1)), RecordError);
});

Deno.test("recordAction() returns null for an unknown record type", () => {
  const bytes = hex(CAPTURED.FORK);
  bytes[0] = 99;
  assert.equal(recordAction(decodeRecord(bytes)), null);
});

Deno.test("procSelf() names a process's own /proc entries as /proc/self, and no one else's", () => {
  assert.equal(procSelf("/proc/42/environ", 42, 42), "/proc/self/environ");
  assert.equal(procSelf("/proc/42", 42, 42), "/proc/self");
  assert.equal(procSelf("/proc/42/task/43/comm", 42, 43), "/proc/thread-self/comm");
  assert.equal(procSelf("/proc/42/task/44/comm", 42, 43), "/proc/self/task/44/comm");
  assert.equal(procSelf("/proc/420/environ", 42, 42), "/proc/420/environ");
  assert.equal(procSelf("/proc/1/environ", 42, 42), "/proc/1/environ");
  assert.equal(procSelf("/etc/passwd", 42, 42), "/etc/passwd");
});

Deno.test("splitArgv() splits NUL-separated arguments and keeps empty ones", () => {
  const enc = new TextEncoder();
  assert.deepEqual(splitArgv(enc.encode("sh\0-c\0\0echo\0")), ["sh", "-c", "", "echo"]);
  assert.deepEqual(splitArgv(new Uint8Array()), []);
});

Deno.test("sumPerCpu() adds one u64 per CPU", () => {
  const v = new BigUint64Array([3n, 0n, 5n]);
  assert.equal(sumPerCpu(new Uint8Array(v.buffer)), 8);
});

const AGENT = 12394;
const DECOY = 12393;

function control(name: keyof typeof CONTROL) {
  const a = recordAction(decodeRecord(hex(CONTROL[name])));
  assert.equal(a?.op, "control", name);
  if (a?.op !== "control") throw new Error("unreachable");
  return a;
}

Deno.test("decodeRecord() reads a control record's header: type, syscall, caller and result", () => {
  const r = decodeRecord(hex(CONTROL.SIGSTOP));
  assert.equal(r.type, EV.CONTROL);
  assert.equal(r.nr, 62);
  assert.equal(r.pid, AGENT);
  assert.equal(r.ppid, 12387);
  assert.equal(r.ret, 0);
  assert.equal(r.fields[0]?.length, CONTROL_SIZE);
  assert.equal(r.flags & F.TARGET, F.TARGET);
  assert.equal(r.flags & F.INSIDE, 0);
});

Deno.test("decodeControl() reads a kill of an outside process: signal, pid and no tree membership", () => {
  const c = decodeControl(decodeRecord(hex(CONTROL.SIGSTOP)));
  assert.deepEqual(c, {
    syscall: "kill",
    scope: "process",
    arg: DECOY,
    signal: "SIGSTOP",
    signo: 19,
    targetPid: DECOY,
    targetTgid: null,
    group: null,
    inside: false,
    namespaced: false,
    result: 0,
  });
  assert.equal(control("PROBE").signal, "0", "signal 0 is named 0, an existence probe");
});

Deno.test("decodeControl() marks targets the kernel found in the tree: the caller, its threads", () => {
  const self = control("SELF");
  assert.equal(self.inside, true);
  assert.equal(self.targetTgid, AGENT);
  const tgkill = control("TGKILL_SELF");
  assert.equal(tgkill.syscall, "tgkill");
  assert.equal(tgkill.tid, AGENT);
  assert.equal(tgkill.inside, true);
  // tkill of a thread: the kernel's thread table names its process.
  const thread = control("TKILL_THREAD");
  assert.equal(thread.syscall, "tkill");
  assert.equal(thread.targetPid, 12452);
  assert.equal(thread.targetTgid, AGENT);
  assert.equal(thread.inside, true);
});

Deno.test("decodeControl() reads kill's groups: 0 is the caller's group, -1 every process", () => {
  const own = control("OWN_GROUP");
  assert.equal(own.scope, "group");
  assert.equal(own.arg, 0);
  assert.equal(own.group, 12385);
  assert.equal(own.targetPid, null);
  const all = control("ALL");
  assert.equal(all.scope, "all");
  assert.equal(all.arg, -1);
  const none = control("NO_SUCH_GROUP");
  assert.equal(none.scope, "group");
  assert.equal(none.arg, -DECOY);
  assert.equal(none.group, DECOY);
  assert.equal(none.result, -3); // ESRCH
});

Deno.test("decodeControl() reads a pidfd's target as the kernel resolved it, also a /proc dir fd", () => {
  const pidfd = control("PIDFD");
  assert.equal(pidfd.syscall, "pidfd_send_signal");
  assert.equal(pidfd.pidfd, 3);
  assert.equal(pidfd.targetPid, DECOY);
  assert.equal(pidfd.targetTgid, DECOY);
  assert.equal(pidfd.scope, "process");
  const dir = control("PROC_DIR_FD");
  assert.equal(dir.pidfd, 4);
  assert.equal(dir.targetPid, DECOY);
});

Deno.test("decodeControl() reads ptrace's request and process_vm_writev's failure", () => {
  const attach = control("ATTACH");
  assert.equal(attach.request, "PTRACE_ATTACH");
  assert.equal(attach.requestNo, 16);
  assert.equal(attach.targetPid, DECOY);
  assert.equal(attach.signal, undefined);
  const vm = control("VM_WRITEV");
  assert.equal(vm.syscall, "process_vm_writev");
  assert.equal(vm.targetPid, DECOY);
  assert.equal(vm.result, -14); // EFAULT: the remote address was bad, the access was allowed
});

Deno.test("decodeControl() leaves a pid numbered in a child pid namespace unresolved", () => {
  const ns = control("NAMESPACED");
  assert.equal(ns.namespaced, true);
  assert.equal(ns.arg, 1);
  assert.equal(ns.targetPid, null);
  assert.equal(ns.inside, false);
  const huge = control("HUGE_PID");
  assert.equal(huge.arg, 0x7fffffff);
  assert.equal(huge.result, -3);
  assert.equal(control("NO_SUCH_PID").targetPid, 999999);
});

/** A control record with some bytes changed. */
function altered(name: keyof typeof CONTROL, edit: (v: DataView, bytes: Uint8Array) => void) {
  const bytes = hex(CONTROL[name]);
  edit(new DataView(bytes.buffer), bytes);
  return bytes;
}

Deno.test("decodeControl() rejects malformed control records with a clear RecordError", () => {
  const cases: [string, Uint8Array, RegExp][] = [
    [
      "a short target field",
      altered("SIGSTOP", (v) => v.setUint16(48, CONTROL_SIZE - 8, true)).subarray(0, -8),
      /target field of 24 bytes, expected 32/,
    ],
    [
      "a long target field",
      (() => {
        const b = new Uint8Array(hex(CONTROL.SIGSTOP).length + 8);
        b.set(hex(CONTROL.SIGSTOP));
        new DataView(b.buffer).setUint16(48, CONTROL_SIZE + 8, true);
        return b;
      })(),
      /target field of 40 bytes, expected 32/,
    ],
    [
      "no target field",
      altered("SIGSTOP", (v) => v.setUint16(48, 0, true)).subarray(0, HEADER_SIZE),
      /target field of 0 bytes/,
    ],
    [
      "an extra field",
      (() => {
        const b = new Uint8Array(hex(CONTROL.SIGSTOP).length + 4);
        b.set(hex(CONTROL.SIGSTOP));
        new DataView(b.buffer).setUint16(52, 4, true);
        return b;
      })(),
      /unexpected field 2/,
    ],
    [
      "a syscall that acts on no process",
      altered("SIGSTOP", (v) => v.setUint32(4, 257, true)),
      /syscall 257, which acts on no process/,
    ],
    [
      "a resolved target of pid 0",
      altered("SIGSTOP", (v) => v.setUint32(HEADER_SIZE + 16, 0, true)),
      /resolved to pid 0/,
    ],
    [
      "inside the tree without a target",
      altered("SELF", (v) => v.setUint16(2, F.INSIDE, true)),
      /inside the tree without a resolved target/,
    ],
  ];
  for (const [what, bytes, message] of cases) {
    assert.throws(() => recordAction(decodeRecord(bytes)), (e: unknown) => {
      assert.ok(e instanceof RecordError, what);
      assert.match(e.message, message, what);
      return true;
    });
  }
  // A record cut inside its target field fails already in decodeRecord().
  const cut = hex(CONTROL.SIGSTOP).subarray(0, HEADER_SIZE + 10);
  assert.throws(() => decodeRecord(cut), /field 0 of 32 bytes runs past the record's 66 bytes/);
  assert.throws(() => decodeControl(decodeRecord(hex(CAPTURED.OPEN))), /type 1 is not a control/);
});

Deno.test("ptraceRequestName() names the requests and numbers an unknown one", () => {
  assert.equal(ptraceRequestName(16), "PTRACE_ATTACH");
  assert.equal(ptraceRequestName(0x4206), "PTRACE_SEIZE");
  assert.equal(ptraceRequestName(5), "PTRACE_POKEDATA");
  assert.equal(ptraceRequestName(999), "ptrace request 999");
});

Deno.test("recordAction() reads a sendmmsg message's record as a sendto of that message", () => {
  const bytes = new Uint8Array(HEADER_SIZE + 16);
  const v = new DataView(bytes.buffer);
  v.setUint16(0, EV.SENDTO, true);
  v.setUint16(2, F.COMPAT, true);
  v.setUint32(4, 307, true);
  v.setUint32(20, 3, true); // the message's index
  v.setBigInt64(32, 4n, true); // the bytes it sent
  v.setUint16(48, 16, true);
  bytes.set([2, 0, 0x13, 0x88, 127, 0, 0, 1], HEADER_SIZE);
  const record = decodeRecord(bytes);
  assert.equal(SYSCALL_NAMES[record.nr], "sendmmsg");
  assert.equal(record.aux32, 3);
  assert.equal(record.flags & F.COMPAT, F.COMPAT);
  const a = recordAction(record);
  assert.equal(a?.op, "sendto");
  if (a?.op !== "sendto") return;
  assert.equal(a.result, 4);
  assert.deepEqual([...a.addr.subarray(0, 8)], [2, 0, 0x13, 0x88, 127, 0, 0, 1]);
});
