import assert from "node:assert/strict";
import {
  buildSeccompFilter,
  decodeProgram,
  encodeProgram,
  GUARD_SYSCALLS,
  NOTIFY_SYSCALLS,
  SYSCALL_NR,
} from "./seccomp_filter.ts";

// The filter is run here by a small classic-BPF interpreter written from the kernel's rules
// (linux/filter.h, kernel/seccomp.c), with its own opcode and action values, so that a wrong
// constant in the assembler makes these tests fail.

const X86_64 = 0xc000003e;
const I386 = 0x40000003;
const ALLOW = 0x7fff0000;
const USER_NOTIF = 0x7fc00000;
const KILL_PROCESS = 0x80000000;
const ERRNO = 0x00050000;

interface Call {
  nr: number;
  arch?: number;
  args?: bigint[];
}

/** Builds `struct seccomp_data` (64 bytes) for a call. */
function seccompData(call: Call): Uint8Array {
  const bytes = new Uint8Array(64);
  const view = new DataView(bytes.buffer);
  view.setInt32(0, call.nr, true);
  view.setUint32(4, call.arch ?? X86_64, true);
  view.setBigUint64(8, 0x401000n, true);
  (call.args ?? []).forEach((arg, i) => view.setBigUint64(16 + 8 * i, arg, true));
  return bytes;
}

/** Runs a seccomp cBPF program on a call and returns the action value it returns. */
function run(program: Uint8Array, call: Call): number {
  const data = new DataView(seccompData(call).buffer);
  const ins = decodeProgram(program);
  let a = 0;
  let pc = 0;
  for (let steps = 0; steps < 4096; steps++) {
    const step = ins[pc];
    if (step === undefined) throw new Error(`Fell off the program at ${pc}`);
    const cls = step.code & 0x07;
    if (cls === 0x00) {
      // BPF_LD | BPF_W | BPF_ABS only: seccomp allows 32-bit aligned loads inside seccomp_data.
      assert.equal(step.code, 0x20, `unsupported load ${step.code.toString(16)}`);
      assert.ok(step.k % 4 === 0 && step.k < 64, `bad load offset ${step.k}`);
      a = data.getUint32(step.k, true);
      pc++;
    } else if (cls === 0x05) {
      const op = step.code & 0xf0;
      assert.equal(step.code & 0x08, 0, "only BPF_K jumps are expected");
      let taken: boolean;
      if (op === 0x10) taken = a === step.k;
      else if (op === 0x20) taken = a > step.k;
      else if (op === 0x30) taken = a >= step.k;
      else if (op === 0x40) taken = (a & step.k) !== 0;
      else throw new Error(`Unsupported jump ${step.code.toString(16)}`);
      pc += 1 + (taken ? step.jt : step.jf);
    } else if (cls === 0x06) {
      assert.equal(step.code, 0x06, "only BPF_RET | BPF_K is expected");
      return step.k >>> 0;
    } else {
      throw new Error(`Unsupported instruction class ${cls}`);
    }
  }
  throw new Error("The program did not return");
}

const program = buildSeccompFilter();

Deno.test("the seccomp filter sends every watched syscall to the supervisor", () => {
  for (const name of NOTIFY_SYSCALLS) {
    const nr = SYSCALL_NR[name] ?? -1;
    // sendto notifies only with an address; give it one here.
    const args = name === "sendto" ? [3n, 0x1000n, 10n, 0n, 0x7ffd0000n, 16n] : [];
    assert.equal(run(program, { nr, args }), USER_NOTIF, name);
  }
  // Spot checks against numbers from the x86_64 syscall table, independent of SYSCALL_NR.
  assert.equal(run(program, { nr: 257 }), USER_NOTIF, "openat");
  assert.equal(run(program, { nr: 59 }), USER_NOTIF, "execve");
  assert.equal(run(program, { nr: 42 }), USER_NOTIF, "connect");
  assert.equal(run(program, { nr: 437 }), USER_NOTIF, "openat2");
  assert.equal(run(program, { nr: 316 }), USER_NOTIF, "renameat2");
});

Deno.test("the seccomp filter allows every other syscall", () => {
  // read, write, close, fstat, mmap, clone, exit_group, getpid, futex, epoll_wait.
  for (const nr of [0, 1, 3, 5, 9, 56, 231, 39, 202, 232]) {
    assert.equal(run(program, { nr }), ALLOW, `nr ${nr}`);
  }
});

Deno.test("the seccomp filter notifies sendto only when it carries an address", () => {
  assert.equal(run(program, { nr: 44, args: [3n, 0x1000n, 10n, 0n, 0n, 0n] }), ALLOW);
  // A pointer in either half of the 64-bit argument counts.
  assert.equal(run(program, { nr: 44, args: [3n, 0x1000n, 10n, 0n, 0x10n, 16n] }), USER_NOTIF);
  assert.equal(
    run(program, { nr: 44, args: [3n, 0x1000n, 10n, 0n, 0x7fff_0000_0000n, 16n] }),
    USER_NOTIF,
  );
});

Deno.test("the seccomp filter fails io_uring and x32 syscalls with EPERM", () => {
  for (const nr of [425, 426, 427]) assert.equal(run(program, { nr }), ERRNO | 1, `nr ${nr}`);
  // x32 openat and x32 read.
  assert.equal(run(program, { nr: 0x40000000 + 257 }), ERRNO | 1);
  assert.equal(run(program, { nr: 0x40000000 }), ERRNO | 1);
});

Deno.test("the seccomp filter kills, or fails with ENOSYS, a syscall through another ABI", () => {
  // i386 open (5) through int 0x80 would otherwise pass as x86_64 fstat.
  assert.equal(run(program, { nr: 5, arch: I386 }), KILL_PROCESS);
  const enosys = buildSeccompFilter({ foreignArch: "enosys" });
  assert.equal(run(enosys, { nr: 5, arch: I386 }), ERRNO | 38);
  assert.equal(run(enosys, { nr: 5 }), ALLOW);
});

Deno.test("buildSeccompFilter() takes other syscall lists and rejects unknown names", () => {
  const only = buildSeccompFilter({ notify: ["execve"], deny: [] });
  assert.equal(run(only, { nr: 59 }), USER_NOTIF);
  assert.equal(run(only, { nr: 257 }), ALLOW);
  assert.equal(run(only, { nr: 425 }), ALLOW);
  assert.throws(() => buildSeccompFilter({ notify: ["nosuchcall"] }), RangeError);
});

Deno.test("encodeProgram() and decodeProgram() round-trip struct sock_filter bytes", () => {
  const ins = [{ code: 0x15, jt: 2, jf: 7, k: 0xc000003e }];
  const bytes = encodeProgram(ins);
  assert.deepEqual([...bytes], [0x15, 0, 2, 7, 0x3e, 0, 0, 0xc0]);
  assert.deepEqual(decodeProgram(bytes), ins);
  assert.throws(() => decodeProgram(new Uint8Array(7)), RangeError);
});

Deno.test("the seccomp filter sends every signal, ptrace and cross-process memory call to the supervisor", () => {
  // x86_64 numbers, independent of SYSCALL_NR: kill, ptrace, rt_sigqueueinfo, tkill, tgkill,
  // rt_tgsigqueueinfo, process_vm_readv, process_vm_writev, pidfd_send_signal, pidfd_getfd.
  for (const nr of [62, 101, 129, 200, 234, 297, 310, 311, 424, 438]) {
    assert.equal(run(program, { nr }), USER_NOTIF, `syscall ${nr}`);
  }
  for (const name of GUARD_SYSCALLS) assert.ok(NOTIFY_SYSCALLS.includes(name), name);
});
