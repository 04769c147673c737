/**
 * Assembles the classic-BPF program of Sentry's seccomp tier, as the bytes of a `struct
 * sock_filter` array ready for `seccomp(SECCOMP_SET_MODE_FILTER)`. Pure: no I/O.
 *
 * The program, in order:
 * 1. a syscall made through another ABI than x86_64 (`int 0x80` from a 64-bit process) kills the
 *    process, or fails with ENOSYS when asked: its numbers mean other syscalls, so it would slip
 *    past every check below;
 * 2. an x32 syscall (number with bit 30 set) fails with EPERM, for the same reason;
 * 3. `io_uring_setup`, `io_uring_enter` and `io_uring_register` fail with EPERM: io_uring does
 *    file and socket operations from kernel threads that no seccomp filter sees;
 * 4. the syscalls Sentry watches return `SECCOMP_RET_USER_NOTIF` (the supervisor decides);
 *    `sendto` only when it carries an address (argument 4 is not NULL), so that the sends on
 *    connected sockets, by far the most common, never leave the kernel. Besides the policy's
 *    syscalls (files, network, exec), this includes {@link GUARD_SYSCALLS} in every mode:
 *    signals, ptrace and cross-process memory access, which the supervisor fails with EPERM
 *    when they aim outside the agent's tree (Sentry's own guard, not policy);
 * 5. everything else is allowed.
 *
 * @module
 */

/** `AUDIT_ARCH_X86_64`: the `arch` field of `struct seccomp_data` for native x86_64 syscalls. */
export const AUDIT_ARCH_X86_64 = 0xc000003e;

/** Bit 30 of a syscall number marks the x32 ABI on x86_64. */
export const X32_SYSCALL_BIT = 0x40000000;

/** The actions a seccomp filter returns (the high 16 bits; ERRNO carries the errno below). */
export const SECCOMP_RET = {
  KILL_PROCESS: 0x80000000,
  ERRNO: 0x00050000,
  USER_NOTIF: 0x7fc00000,
  ALLOW: 0x7fff0000,
} as const;

/** The x86_64 numbers of the syscalls this tier names, by name. */
export const SYSCALL_NR: Readonly<Record<string, number>> = {
  open: 2,
  connect: 42,
  sendto: 44,
  sendmsg: 46,
  execve: 59,
  kill: 62,
  rename: 82,
  rmdir: 84,
  creat: 85,
  link: 86,
  unlink: 87,
  symlink: 88,
  ptrace: 101,
  rt_sigqueueinfo: 129,
  tkill: 200,
  tgkill: 234,
  openat: 257,
  unlinkat: 263,
  renameat: 264,
  linkat: 265,
  symlinkat: 266,
  rt_tgsigqueueinfo: 297,
  sendmmsg: 307,
  process_vm_readv: 310,
  process_vm_writev: 311,
  renameat2: 316,
  execveat: 322,
  pidfd_send_signal: 424,
  io_uring_setup: 425,
  io_uring_enter: 426,
  io_uring_register: 427,
  openat2: 437,
  pidfd_getfd: 438,
};

/**
 * The syscalls that act on another process: every way to send a signal, ptrace, reading or
 * writing another process's memory, and taking a descriptor out of it. The supervisor fails
 * them with EPERM when the target is outside the agent's tree (Sentry, its watchdog, any other
 * program), in every mode: they are in {@link NOTIFY_SYSCALLS}.
 */
export const GUARD_SYSCALLS: readonly string[] = [
  "kill",
  "tkill",
  "tgkill",
  "rt_sigqueueinfo",
  "rt_tgsigqueueinfo",
  "pidfd_send_signal",
  "ptrace",
  "process_vm_readv",
  "process_vm_writev",
  "pidfd_getfd",
];

/**
 * The syscalls the supervisor is asked about by default: every way to open, create, delete,
 * rename or link a file, to connect or send to an address, and to run a program. `sendmmsg` is
 * here too: like `sendmsg` it can carry an address per message (the supervisor records only
 * those that do). Then Sentry's guard: {@link GUARD_SYSCALLS}.
 */
export const NOTIFY_SYSCALLS: readonly string[] = [
  "open",
  "openat",
  "openat2",
  "creat",
  "unlink",
  "unlinkat",
  "rmdir",
  "rename",
  "renameat",
  "renameat2",
  "link",
  "linkat",
  "symlink",
  "symlinkat",
  "connect",
  "sendto",
  "sendmsg",
  "sendmmsg",
  "execve",
  "execveat",
  ...GUARD_SYSCALLS,
];

/** The syscalls that fail with EPERM because the filter could not see what they do. */
export const DENIED_SYSCALLS: readonly string[] = [
  "io_uring_setup",
  "io_uring_enter",
  "io_uring_register",
];

/** Options for {@link buildSeccompFilter}. */
export interface SeccompFilterOptions {
  /** Syscalls answered by the supervisor; defaults to {@link NOTIFY_SYSCALLS}. */
  notify?: readonly string[];
  /** Syscalls that fail with EPERM; defaults to {@link DENIED_SYSCALLS}. */
  deny?: readonly string[];
  /**
   * What a syscall through a foreign ABI gets: `kill` (the default) kills the process, `enosys`
   * fails the call with ENOSYS.
   */
  foreignArch?: "kill" | "enosys";
}

/** One `struct sock_filter` instruction. */
export interface BpfInstruction {
  code: number;
  jt: number;
  jf: number;
  k: number;
}

/** Size of one `struct sock_filter` in bytes. */
export const BPF_INSTRUCTION_SIZE = 8;

/** The classic-BPF opcodes this program uses (`BPF_LD|BPF_W|BPF_ABS` and so on). */
export const BPF = {
  LD_W_ABS: 0x20,
  JEQ_K: 0x15,
  JGE_K: 0x35,
  RET_K: 0x06,
} as const;

/** Offsets in `struct seccomp_data`: nr (int), arch (u32), instruction_pointer (u64), args[6]. */
export const SECCOMP_DATA = { nr: 0, arch: 4, args: 16 } as const;

const EPERM = 1;
const ENOSYS = 38;

/** An instruction whose jump targets are labels, resolved once the program is laid out. */
type Step = { code: number; k: number; jt?: string; jf?: string } | { label: string };

function syscallNumber(name: string): number {
  const nr = SYSCALL_NR[name];
  if (nr === undefined) throw new RangeError(`Unknown syscall "${name}": not in the x86_64 table`);
  return nr;
}

/**
 * Builds the filter program described in this module's header and returns it as the bytes of a
 * `struct sock_filter[]` (8 bytes per instruction, little-endian). Pass the bytes and
 * `length / 8` as `struct sock_fprog` to `seccomp(2)`.
 *
 * @throws {RangeError} for a syscall name that is not in {@link SYSCALL_NR}.
 */
export function buildSeccompFilter(options: SeccompFilterOptions = {}): Uint8Array {
  const notify = (options.notify ?? NOTIFY_SYSCALLS).map(syscallNumber);
  const deny = (options.deny ?? DENIED_SYSCALLS).map(syscallNumber);
  const sendto = syscallNumber("sendto");
  const foreign = options.foreignArch === "enosys"
    ? SECCOMP_RET.ERRNO | ENOSYS
    : SECCOMP_RET.KILL_PROCESS;
  const ld = (offset: number): Step => ({ code: BPF.LD_W_ABS, k: offset });
  const ret = (value: number): Step => ({ code: BPF.RET_K, k: value >>> 0 });
  const steps: Step[] = [
    ld(SECCOMP_DATA.arch),
    { code: BPF.JEQ_K, k: AUDIT_ARCH_X86_64, jf: "foreign" },
    ld(SECCOMP_DATA.nr),
    { code: BPF.JGE_K, k: X32_SYSCALL_BIT, jt: "eperm" },
    ...deny.map((nr): Step => ({ code: BPF.JEQ_K, k: nr, jt: "eperm" })),
    ...notify.map((nr): Step => ({
      code: BPF.JEQ_K,
      k: nr,
      jt: nr === sendto ? "sendto" : "notify",
    })),
    ret(SECCOMP_RET.ALLOW),
    // sendto(fd, buf, len, flags, addr, addrlen): notify only when addr (both halves) is set.
    { label: "sendto" },
    ld(SECCOMP_DATA.args + 4 * 8),
    { code: BPF.JEQ_K, k: 0, jf: "notify" },
    ld(SECCOMP_DATA.args + 4 * 8 + 4),
    { code: BPF.JEQ_K, k: 0, jf: "notify" },
    ret(SECCOMP_RET.ALLOW),
    { label: "notify" },
    ret(SECCOMP_RET.USER_NOTIF),
    { label: "eperm" },
    ret(SECCOMP_RET.ERRNO | EPERM),
    { label: "foreign" },
    ret(foreign),
  ];
  return encodeProgram(assemble(steps));
}

/** Lays out the steps and turns label jumps into the relative offsets cBPF uses. */
function assemble(steps: readonly Step[]): BpfInstruction[] {
  const labels = new Map<string, number>();
  let index = 0;
  for (const step of steps) {
    if ("label" in step) labels.set(step.label, index);
    else index++;
  }
  const program: BpfInstruction[] = [];
  for (const step of steps) {
    if ("label" in step) continue;
    const here = program.length;
    const offset = (label: string | undefined): number => {
      if (label === undefined) return 0;
      const target = labels.get(label);
      if (target === undefined) throw new RangeError(`Unknown label "${label}"`);
      const jump = target - here - 1;
      // cBPF jumps are forward only, at most 255 instructions.
      if (jump < 0 || jump > 255) throw new RangeError(`Jump to "${label}" is out of range`);
      return jump;
    };
    program.push({ code: step.code, jt: offset(step.jt), jf: offset(step.jf), k: step.k });
  }
  return program;
}

/** Encodes instructions as `struct sock_filter` bytes: u16 code, u8 jt, u8 jf, u32 k. */
export function encodeProgram(program: readonly BpfInstruction[]): Uint8Array {
  const bytes = new Uint8Array(program.length * BPF_INSTRUCTION_SIZE);
  const view = new DataView(bytes.buffer);
  program.forEach((ins, i) => {
    const at = i * BPF_INSTRUCTION_SIZE;
    view.setUint16(at, ins.code, true);
    view.setUint8(at + 2, ins.jt);
    view.setUint8(at + 3, ins.jf);
    view.setUint32(at + 4, ins.k, true);
  });
  return bytes;
}

/** Decodes `struct sock_filter` bytes back into instructions (for tests and diagnostics). */
export function decodeProgram(bytes: Uint8Array): BpfInstruction[] {
  if (bytes.length % BPF_INSTRUCTION_SIZE !== 0) {
    throw new RangeError(`A BPF program is a multiple of 8 bytes, got ${bytes.length}`);
  }
  const view = new DataView(bytes.buffer, bytes.byteOffset, bytes.byteLength);
  const program: BpfInstruction[] = [];
  for (let at = 0; at < bytes.length; at += BPF_INSTRUCTION_SIZE) {
    program.push({
      code: view.getUint16(at, true),
      jt: view.getUint8(at + 2),
      jf: view.getUint8(at + 3),
      k: view.getUint32(at + 4, true),
    });
  }
  return program;
}
