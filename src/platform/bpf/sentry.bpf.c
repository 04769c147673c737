// SPDX-License-Identifier: GPL-2.0
/* Sentry's eBPF sensor: every file, network and process action of one process tree.
 *
 * The tree is filtered in the kernel. `tracked` holds the thread-group ids of the tree; a fork
 * of a tracked process tracks the child in sched_process_fork, which runs before the child can
 * run a single instruction, so no child ever runs untracked. A process stays tracked whatever
 * namespace it moves into: tgids here are the host's.
 *
 * Syscalls are recorded at sys_exit, with their return value, from the arguments saved at
 * sys_enter: at sys_enter a user page may not be resident yet. Paths are resolved in the kernel:
 * a successful open reports the path of the file it opened (symlinks followed, as the kernel
 * did), and a relative path that failed or names no fd (unlink, rename) reports the path of its
 * base directory (the dirfd's file or the cwd) beside the name as given.
 *
 * Signals, traces and memory writes the tree aims at other processes (kill, tkill, tgkill,
 * rt_sigqueueinfo, rt_tgsigqueueinfo, pidfd_send_signal, pidfd_getfd, ptrace, process_vm_readv,
 * process_vm_writev) are recorded with their target as the kernel resolves it at sys_enter, while
 * the target surely exists: its host pid and whether it belongs to the tree (`tracked`, or a
 * thread of it in `threads`). A pidfd is resolved to the struct pid it holds.
 *
 * Every record that cannot be written to the ring buffer is counted in `drops`, per CPU: the
 * reader adds them up, so loss is exact. Rebuild with `deno task bpf` (clang, libbpf-dev).
 */
#include "vmlinux_min.h"
#include <bpf/bpf_helpers.h>
#include <bpf/bpf_tracing.h>
#include <bpf/bpf_core_read.h>

char LICENSE[] SEC("license") = "GPL";

/* Record types; the TypeScript decoder (ebpf_record.ts) mirrors these. */
enum {
	EV_OPEN = 1,
	EV_UNLINK = 2,
	EV_RMDIR = 3,
	EV_RENAME = 4,
	EV_LINK = 5,
	EV_SYMLINK = 6,
	EV_CONNECT = 7,
	EV_SENDTO = 8,
	EV_EXEC = 9,
	EV_EXEC_FAILED = 10,
	EV_FORK = 11,
	EV_EXIT = 12,
	EV_CONTROL = 13,
};

/* Header flags. */
#define F_TRUNC0 (1 << 0) /* field 0 was cut at its limit; bits 0-3 for fields 0-3 */
#define F_RESOLVED (1 << 4) /* field 0 is the full path of the opened file */
#define F_DIR (1 << 5) /* field 0 (or 2) is the base directory of a relative name */
#define F_DIR2 (1 << 6)
#define F_DEEP (1 << 7) /* a path walk stopped at its depth limit */
#define F_CREATED (1 << 8) /* the open created the file (FMODE_CREATED) */
#define F_INSIDE (1 << 9) /* a control's target belongs to the tracked tree */
#define F_TARGET (1 << 10) /* a control's target_pid and target_tgid are the kernel's (host) */
#define F_COMPAT (1 << 11) /* a 32-bit (int 0x80) call, decoded as its x86_64 counterpart */

/* fmode_t: set by the VFS when an open created the file it returns (include/linux/fs.h). */
#define FMODE_CREATED (1u << 20)

/* Counter slots in `counters` (per CPU). */
enum {
	C_DROPS = 0, /* records lost: the ring buffer was full */
	C_UNTRACKED = 1, /* forks of tracked processes that could not be tracked (map full) */
	C_COMPAT = 2, /* 32-bit (int 0x80) syscalls by tracked processes, every one */
	C_IOURING = 3, /* io_uring_setup by tracked processes: its I/O bypasses syscalls */
	C_EMITTED = 4, /* records written */
	C_PENDING_LOST = 5, /* sys_exit without its sys_enter (the saved arguments were evicted) */
	C_THREADS_LOST = 6, /* threads of tracked processes not kept in `threads` (map full) */
	C_COUNT = 7,
};

#define FIELD_MAX 4096 /* PATH_MAX: the longest path or argv a field holds */
#define ARGV_MAX 4096
#define HDR_SIZE 56
#define HEAP_SIZE 32768
#define OFF_MASK 16383 /* 3 fields of at most FIELD_MAX fit below it, the 4th above */
#define WALK_DEPTH 48
#define WALK_SIZE 8192
#define WALK_END 4096

/*
 * Masks a register in a way clang cannot reorder or drop: the verifier must see the bound on the
 * very register passed as a size or an offset (clang otherwise reuses an unbounded copy).
 */
#define BOUND(x, mask) asm volatile("%0 &= " #mask : "+r"(x))

#define AT_FDCWD -100
#define TS_COMPAT 0x0002

struct hdr {
	u16 type;
	u16 flags;
	u32 nr;
	u32 pid;
	u32 tid;
	u32 ppid;
	u32 aux32;
	u64 ts;
	s64 ret;
	u64 aux;
	u16 len[4];
};
_Static_assert(sizeof(struct hdr) == HDR_SIZE, "header layout");

/* A control syscall's target, resolved at sys_enter: field 0 of an EV_CONTROL record. */
struct ctl {
	s64 arg; /* the target as passed: a pid with its sign (kill), or a pidfd */
	u64 op; /* the signal, or the ptrace request */
	u32 target_pid; /* the target's host pid (a tid for a thread), with F_TARGET */
	u32 target_tgid; /* its thread group, with F_TARGET */
	u32 caller_pgid; /* the caller's process group (host), which kill(0, ...) aims at */
	u32 level; /* the caller's pid namespace level: above 0, `arg` is that namespace's number */
};
_Static_assert(sizeof(struct ctl) == 32, "control layout");

struct pending {
	u64 args[6];
	u32 nr;
	u32 flags; /* F_INSIDE, F_TARGET for a control syscall; F_COMPAT */
	struct ctl ctl;
};

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, u8);
} tracked SEC(".maps");

/* Threads (tid -> tgid) of tracked processes other than their leaders, for a control's target. */
struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, 65536);
	__type(key, u32);
	__type(value, u32);
} threads SEC(".maps");

/*
 * Processes of the tree that have exited but are not reaped yet (zombies), until their task is
 * freed: a kill racing with the reaping of one's own child is aimed inside the tree.
 */
struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u32);
	__type(value, u8);
} exited SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, 16384);
	__type(key, u64);
	__type(value, struct pending);
} pending SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_RINGBUF);
	__uint(max_entries, 16 * 1024 * 1024);
} events SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, C_COUNT);
	__type(key, u32);
	__type(value, u64);
} counters SEC(".maps");

struct heap {
	u8 buf[HEAP_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct heap);
} heaps SEC(".maps");

struct walk {
	u8 buf[WALK_SIZE];
};

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, 1);
	__type(key, u32);
	__type(value, struct walk);
} walks SEC(".maps");

static __always_inline void count(u32 slot)
{
	u64 *v = bpf_map_lookup_elem(&counters, &slot);
	if (v)
		*v += 1;
}

static __always_inline bool is_tracked(u32 tgid)
{
	return bpf_map_lookup_elem(&tracked, &tgid) != 0;
}

/* Syscall numbers (x86_64) of the actions recorded. */
enum {
	NR_OPEN = 2,
	NR_CONNECT = 42,
	NR_SENDTO = 44,
	NR_SENDMSG = 46,
	NR_EXECVE = 59,
	NR_KILL = 62,
	NR_RENAME = 82,
	NR_RMDIR = 84,
	NR_CREAT = 85,
	NR_LINK = 86,
	NR_UNLINK = 87,
	NR_SYMLINK = 88,
	NR_PTRACE = 101,
	NR_RT_SIGQUEUEINFO = 129,
	NR_TKILL = 200,
	NR_TGKILL = 234,
	NR_OPENAT = 257,
	NR_UNLINKAT = 263,
	NR_RENAMEAT = 264,
	NR_LINKAT = 265,
	NR_SYMLINKAT = 266,
	NR_RT_TGSIGQUEUEINFO = 297,
	NR_PROCESS_VM_READV = 310,
	NR_SENDMMSG = 307,
	NR_PROCESS_VM_WRITEV = 311,
	NR_RENAMEAT2 = 316,
	NR_EXECVEAT = 322,
	NR_PIDFD_SEND_SIGNAL = 424,
	NR_IO_URING_SETUP = 425,
	NR_OPENAT2 = 437,
	NR_PIDFD_GETFD = 438,
};

/* Syscalls that act on another process: a signal, a trace, a memory access, an fd taken. */
static __always_inline bool is_control(long id)
{
	switch (id) {
	case NR_KILL:
	case NR_TKILL:
	case NR_TGKILL:
	case NR_RT_SIGQUEUEINFO:
	case NR_RT_TGSIGQUEUEINFO:
	case NR_PIDFD_SEND_SIGNAL:
	case NR_PIDFD_GETFD:
	case NR_PTRACE:
	case NR_PROCESS_VM_READV:
	case NR_PROCESS_VM_WRITEV:
		return true;
	}
	return false;
}

static __always_inline bool wanted(long id)
{
	switch (id) {
	case NR_OPEN:
	case NR_CONNECT:
	case NR_SENDTO:
	case NR_SENDMSG:
	case NR_SENDMMSG:
	case NR_EXECVE:
	case NR_RENAME:
	case NR_RMDIR:
	case NR_CREAT:
	case NR_LINK:
	case NR_UNLINK:
	case NR_SYMLINK:
	case NR_OPENAT:
	case NR_UNLINKAT:
	case NR_RENAMEAT:
	case NR_LINKAT:
	case NR_SYMLINKAT:
	case NR_RENAMEAT2:
	case NR_EXECVEAT:
	case NR_OPENAT2:
		return true;
	}
	return is_control(id);
}

static __always_inline struct heap *heap_get(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&heaps, &zero);
}

static __always_inline struct walk *walk_get(void)
{
	u32 zero = 0;
	return bpf_map_lookup_elem(&walks, &zero);
}

static __always_inline struct hdr *hdr_init(struct heap *h, u16 type, u32 nr, s64 ret)
{
	struct hdr *e = (struct hdr *)h->buf;
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	u64 pid_tgid = bpf_get_current_pid_tgid();
	e->type = type;
	e->flags = 0;
	e->nr = nr;
	e->pid = pid_tgid >> 32;
	e->tid = (u32)pid_tgid;
	e->ppid = BPF_CORE_READ(task, real_parent, tgid);
	e->aux32 = 0;
	e->ts = bpf_ktime_get_boot_ns();
	e->ret = ret;
	e->aux = 0;
	e->len[0] = 0;
	e->len[1] = 0;
	e->len[2] = 0;
	e->len[3] = 0;
	return e;
}

/* The offset of field `i`: the header, then every earlier field. */
static __always_inline u32 field_off(struct hdr *e, int i)
{
	u32 off = HDR_SIZE;
	if (i > 0)
		off += e->len[0];
	if (i > 1)
		off += e->len[1];
	if (i > 2)
		off += e->len[2];
	if (i > 3)
		off += e->len[3];
	return off;
}

/* Copies a user string into field i; a string cut at FIELD_MAX is flagged. */
static __always_inline void put_user_str(struct heap *h, int i, const void *src)
{
	struct hdr *e = (struct hdr *)h->buf;
	u32 off = field_off(e, i);
	BOUND(off, 16383);
	long n = bpf_probe_read_user_str(&h->buf[off], FIELD_MAX, src);
	if (n < 0)
		n = 0;
	if (n >= FIELD_MAX)
		e->flags |= F_TRUNC0 << i;
	/* The terminating NUL is not kept. */
	e->len[i] = n > 0 ? n - 1 : 0;
}

static __always_inline void put_kernel_str(struct heap *h, int i, const void *src)
{
	struct hdr *e = (struct hdr *)h->buf;
	u32 off = field_off(e, i);
	BOUND(off, 16383);
	long n = bpf_probe_read_kernel_str(&h->buf[off], FIELD_MAX, src);
	if (n < 0)
		n = 0;
	if (n >= FIELD_MAX)
		e->flags |= F_TRUNC0 << i;
	e->len[i] = n > 0 ? n - 1 : 0;
}

/* Copies `len` bytes of user memory into field i (a sockaddr, argv). */
static __always_inline void put_user_bytes(struct heap *h, int i, const void *src, u32 len)
{
	struct hdr *e = (struct hdr *)h->buf;
	u32 off = field_off(e, i);
	BOUND(off, 16383);
	if (len > FIELD_MAX) {
		len = FIELD_MAX;
		e->flags |= F_TRUNC0 << i;
	}
	BOUND(len, 8191);
	if (len == 0 || bpf_probe_read_user(&h->buf[off], len, src) < 0)
		len = 0;
	e->len[i] = len;
}

static __always_inline struct mount *real_mount(struct vfsmount *mnt)
{
	return (struct mount *)((void *)mnt - bpf_core_field_offset(struct mount, mnt));
}

/* The state of one path walk, shared with its bpf_loop() step. */
struct walk_state {
	struct dentry *dentry;
	struct vfsmount *vfsmnt;
	struct mount *mnt;
	u32 pos;
	bool done;
};

/*
 * One step of a path walk: prepends one component to the walk buffer, or crosses to the parent
 * mount at a mount point, or stops at the root of the mount namespace.
 */
static long walk_step(u32 index, void *ctx)
{
	struct walk_state *st = ctx;
	struct walk *w = walk_get();
	if (!w)
		return 1;
	struct dentry *dentry = st->dentry;
	struct vfsmount *vfsmnt = st->vfsmnt;
	struct mount *mnt = st->mnt;
	struct dentry *root = BPF_CORE_READ(vfsmnt, mnt_root);
	struct dentry *parent = BPF_CORE_READ(dentry, d_parent);
	if (dentry == root || dentry == parent) {
		struct mount *up = BPF_CORE_READ(mnt, mnt_parent);
		if (dentry != root || up == mnt) {
			st->done = true;
			return 1;
		}
		st->dentry = BPF_CORE_READ(mnt, mnt_mountpoint);
		st->mnt = up;
		st->vfsmnt = (struct vfsmount *)((void *)up + bpf_core_field_offset(struct mount, mnt));
		return 0;
	}
	u32 len = BPF_CORE_READ(dentry, d_name.len);
	const unsigned char *name = BPF_CORE_READ(dentry, d_name.name);
	BOUND(len, 255);
	u32 pos = st->pos;
	if (len + 1 > pos)
		return 1;
	pos -= len;
	u32 at = pos;
	BOUND(at, 4095);
	bpf_probe_read_kernel(&w->buf[at], len, name);
	pos -= 1;
	at = pos;
	BOUND(at, 4095);
	w->buf[at] = '/';
	st->pos = pos;
	st->dentry = parent;
	return 0;
}

/*
 * Writes the absolute path of a dentry into field i, walking d_parent up to the root of the
 * mount namespace and crossing mount points, as d_path() does. A walk that stops after
 * WALK_DEPTH steps, or fills its buffer, is flagged F_DEEP (the path then lacks its head).
 */
static __always_inline void put_path(struct heap *h, int i, struct dentry *dentry,
				     struct vfsmount *vfsmnt)
{
	struct hdr *e = (struct hdr *)h->buf;
	struct walk *w = walk_get();
	if (!w || !dentry || !vfsmnt)
		return;
	struct walk_state st = {
		.dentry = dentry,
		.vfsmnt = vfsmnt,
		.mnt = real_mount(vfsmnt),
		.pos = WALK_END,
		.done = false,
	};
	bpf_loop(WALK_DEPTH, walk_step, &st, 0);
	if (!st.done)
		e->flags |= F_DEEP;
	u32 pos = st.pos;
	if (pos == WALK_END) {
		pos -= 1;
		w->buf[WALK_END - 1] = '/';
	}
	u32 len = WALK_END - pos;
	BOUND(len, 4095);
	u32 at = pos;
	BOUND(at, 4095);
	u32 off = field_off(e, i);
	BOUND(off, 16383);
	bpf_probe_read_kernel(&h->buf[off], len, &w->buf[at]);
	e->len[i] = len;
}

/* The file behind a descriptor of the current process, or null. */
static __always_inline struct file *fd_file(int fd)
{
	struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
	struct fdtable *fdt = BPF_CORE_READ(task, files, fdt);
	if (!fdt || fd < 0)
		return 0;
	unsigned int max = BPF_CORE_READ(fdt, max_fds);
	if ((unsigned int)fd >= max)
		return 0;
	struct file **fds = BPF_CORE_READ(fdt, fd);
	struct file *f = 0;
	bpf_probe_read_kernel(&f, sizeof(f), &fds[fd]);
	return f;
}

/*
 * The kernel types a control's target is resolved through. The `___ctl` flavour keeps them apart
 * from vmlinux_min.h's declarations; CO-RE matches them to the kernel's types by the name before
 * the `___`.
 */
struct hlist_node___ctl {
	struct hlist_node___ctl *next;
} __attribute__((preserve_access_index));

struct hlist_head___ctl {
	struct hlist_node___ctl *first;
} __attribute__((preserve_access_index));

struct upid___ctl {
	int nr;
} __attribute__((preserve_access_index));

struct pid___ctl {
	unsigned int level;
	struct hlist_head___ctl tasks[4];
	struct upid___ctl numbers[1];
} __attribute__((preserve_access_index));

struct signal_struct___ctl {
	struct pid___ctl *pids[4];
} __attribute__((preserve_access_index));

struct task_struct___ctl {
	int tgid;
	struct pid___ctl *thread_pid;
	struct hlist_node___ctl pid_links[4];
	struct signal_struct___ctl *signal;
} __attribute__((preserve_access_index));

struct super_block___ctl {
	unsigned long s_magic;
} __attribute__((preserve_access_index));

struct inode___ctl {
	struct super_block___ctl *i_sb;
	void *i_private;
} __attribute__((preserve_access_index));

struct file___ctl {
	void *private_data;
	struct inode___ctl *f_inode;
} __attribute__((preserve_access_index));

struct proc_inode___ctl {
	struct pid___ctl *pid;
	struct inode___ctl vfs_inode;
} __attribute__((preserve_access_index));

#define PIDTYPE_PID 0
#define PIDTYPE_PGID 2
#define PROC_SUPER_MAGIC 0x9fa0 /* a /proc/<pid> directory, which pidfd_send_signal accepts */
#define PID_FS_MAGIC 0x50494446 /* a pidfd, 6.9 and later: the inode's i_private */
#define ANON_INODE_FS_MAGIC 0x09041934 /* a pidfd before 6.9: the file's private_data */

/*
 * Whether a host pid is a process of the tree (alive, or a zombie) or a thread of one; its tgid
 * goes to `tgid`.
 */
static __always_inline bool tree_member(u32 pid, u32 *tgid)
{
	if (is_tracked(pid) || bpf_map_lookup_elem(&exited, &pid)) {
		*tgid = pid;
		return true;
	}
	u32 *group = bpf_map_lookup_elem(&threads, &pid);
	if (group) {
		*tgid = *group;
		return true;
	}
	return false;
}

/* The struct pid a pidfd (or a /proc/<pid> directory fd) holds, or null. */
static __always_inline struct pid___ctl *pidfd_pid(int fd)
{
	struct file___ctl *f = (struct file___ctl *)fd_file(fd);
	if (!f)
		return 0;
	struct inode___ctl *inode = BPF_CORE_READ(f, f_inode);
	unsigned long magic = BPF_CORE_READ(inode, i_sb, s_magic);
	if (magic == PROC_SUPER_MAGIC) {
		struct proc_inode___ctl *pi =
			(void *)inode - bpf_core_field_offset(struct proc_inode___ctl, vfs_inode);
		return BPF_CORE_READ(pi, pid);
	}
	if (magic == PID_FS_MAGIC)
		return BPF_CORE_READ(inode, i_private);
	if (magic == ANON_INODE_FS_MAGIC)
		return BPF_CORE_READ(f, private_data);
	return 0;
}

/*
 * Resolves a control syscall's target while it surely exists (a SIGKILLed child may be gone by
 * sys_exit): its host pid, its thread group, and whether it is the tree's. A number is the
 * caller's pid namespace's: it is the host's only at level 0. A pidfd names its struct pid, whose
 * first number is the host's, wherever the caller lives.
 */
static __always_inline void resolve_control(struct pending *p)
{
	struct task_struct___ctl *task = (struct task_struct___ctl *)bpf_get_current_task_btf();
	struct pid___ctl *own = BPF_CORE_READ(task, thread_pid);
	u32 level = BPF_CORE_READ(own, level);
	struct pid___ctl *pgrp = BPF_CORE_READ(task, signal, pids[PIDTYPE_PGID]);
	p->ctl.level = level;
	p->ctl.caller_pgid = BPF_CORE_READ(pgrp, numbers[0].nr);
	int n = (int)p->args[0];
	switch (p->nr) {
	case NR_KILL:
	case NR_RT_SIGQUEUEINFO:
		p->ctl.op = p->args[1];
		break;
	case NR_TKILL:
		p->ctl.op = p->args[1];
		break;
	case NR_TGKILL:
	case NR_RT_TGSIGQUEUEINFO:
		p->ctl.op = p->args[2];
		break;
	case NR_PIDFD_SEND_SIGNAL:
		p->ctl.op = p->args[1];
		break;
	case NR_PTRACE:
		p->ctl.op = p->args[0];
		n = (int)p->args[1];
		break;
	}
	p->ctl.arg = n;
	u32 target = 0;
	if (p->nr == NR_PIDFD_SEND_SIGNAL || p->nr == NR_PIDFD_GETFD) {
		struct pid___ctl *pid = pidfd_pid(n);
		if (!pid)
			return;
		target = BPF_CORE_READ(pid, numbers[0].nr);
		struct hlist_node___ctl *node = BPF_CORE_READ(pid, tasks[PIDTYPE_PID].first);
		u32 tgid = target;
		if (node) {
			struct task_struct___ctl *t =
				(void *)node - bpf_core_field_offset(struct task_struct___ctl, pid_links);
			tgid = BPF_CORE_READ(t, tgid);
		}
		p->ctl.target_tgid = tgid;
	} else {
		/* kill(0), kill(-1), kill(-pgrp) aim at groups; a namespace's number is not the host's. */
		if (n <= 0 || level != 0)
			return;
		target = n;
	}
	if (target == 0)
		return;
	p->ctl.target_pid = target;
	p->flags |= F_TARGET;
	u32 tgid = 0;
	if (tree_member(target, &tgid)) {
		p->ctl.target_tgid = tgid;
		p->flags |= F_INSIDE;
	}
}

/* i386 numbers of the 32-bit calls decoded (arch/x86/entry/syscalls/syscall_32.tbl). */
enum {
	NR32_LINK = 9,
	NR32_OPEN = 5,
	NR32_CREAT = 8,
	NR32_UNLINK = 10,
	NR32_EXECVE = 11,
	NR32_RENAME = 38,
	NR32_RMDIR = 40,
	NR32_SYMLINK = 83,
	NR32_SOCKETCALL = 102,
	NR32_OPENAT = 295,
	NR32_UNLINKAT = 301,
	NR32_RENAMEAT = 302,
	NR32_LINKAT = 303,
	NR32_SYMLINKAT = 304,
	NR32_RENAMEAT2 = 353,
	NR32_EXECVEAT = 358,
	NR32_CONNECT = 362,
	NR32_SENDTO = 369,
	NR32_OPENAT2 = 437,
};

/* socketcall's calls (include/uapi/linux/net.h). */
#define SYS_CONNECT 3
#define SYS_SENDTO 11

/* The x86_64 number of a 32-bit call whose arguments mean the same (pointers are addresses). */
static __always_inline long compat_nr(long id)
{
	switch (id) {
	case NR32_OPEN:
		return NR_OPEN;
	case NR32_CREAT:
		return NR_CREAT;
	case NR32_LINK:
		return NR_LINK;
	case NR32_UNLINK:
		return NR_UNLINK;
	case NR32_EXECVE:
		return NR_EXECVE;
	case NR32_RENAME:
		return NR_RENAME;
	case NR32_RMDIR:
		return NR_RMDIR;
	case NR32_SYMLINK:
		return NR_SYMLINK;
	case NR32_OPENAT:
		return NR_OPENAT;
	case NR32_UNLINKAT:
		return NR_UNLINKAT;
	case NR32_RENAMEAT:
		return NR_RENAMEAT;
	case NR32_LINKAT:
		return NR_LINKAT;
	case NR32_SYMLINKAT:
		return NR_SYMLINKAT;
	case NR32_RENAMEAT2:
		return NR_RENAMEAT2;
	case NR32_EXECVEAT:
		return NR_EXECVEAT;
	case NR32_CONNECT:
		return NR_CONNECT;
	case NR32_SENDTO:
		return NR_SENDTO;
	case NR32_OPENAT2:
		return NR_OPENAT2;
	}
	return -1;
}

/*
 * A 32-bit call of a tracked process: counted, every one, and saved as its x86_64 counterpart
 * when it is a file, connect or sendto call (also through socketcall), so that sys_exit records
 * it. Its arguments are in ebx, ecx, edx, esi, edi, ebp; its pointers are 32-bit addresses.
 */
static __always_inline int on_compat_enter(struct pt_regs *regs, long id, u64 pid_tgid)
{
	count(C_COMPAT);
	struct pending p = {};
	p.flags = F_COMPAT;
	p.args[0] = (u32)BPF_CORE_READ(regs, bx);
	p.args[1] = (u32)BPF_CORE_READ(regs, cx);
	p.args[2] = (u32)BPF_CORE_READ(regs, dx);
	p.args[3] = (u32)BPF_CORE_READ(regs, si);
	p.args[4] = (u32)BPF_CORE_READ(regs, di);
	p.args[5] = (u32)BPF_CORE_READ(regs, bp);
	long nr = compat_nr(id);
	if (id == NR32_SOCKETCALL && (p.args[0] == SYS_CONNECT || p.args[0] == SYS_SENDTO)) {
		/* socketcall(call, u32 args[]): connect's 3 arguments, or sendto's 6. */
		u32 a[6] = {};
		u32 n = p.args[0] == SYS_CONNECT ? 3 : 6;
		nr = n == 3 ? NR_CONNECT : NR_SENDTO;
		if (bpf_probe_read_user(a, n == 3 ? 12 : 24, (void *)p.args[1]) < 0)
			return 0;
		for (int i = 0; i < 6; i++)
			p.args[i] = a[i];
	}
	if (nr < 0)
		return 0;
	/* The signed arguments: a dirfd (AT_FDCWD is negative). */
	switch (nr) {
	case NR_OPENAT:
	case NR_OPENAT2:
	case NR_UNLINKAT:
	case NR_EXECVEAT:
		p.args[0] = (s64)(s32)p.args[0];
		break;
	case NR_RENAMEAT:
	case NR_RENAMEAT2:
	case NR_LINKAT:
		p.args[0] = (s64)(s32)p.args[0];
		p.args[2] = (s64)(s32)p.args[2];
		break;
	case NR_SYMLINKAT:
		p.args[1] = (s64)(s32)p.args[1];
		break;
	}
	p.nr = nr;
	bpf_map_update_elem(&pending, &pid_tgid, &p, BPF_ANY);
	return 0;
}

SEC("tp_btf/sys_enter")
int BPF_PROG(sys_enter, struct pt_regs *regs, long id)
{
	/*
	 * The syscall number is checked before the map, then the thread's status (one direct load
	 * from the current task): most syscalls of the host stop here. Only a 32-bit call, whose
	 * number means another call, goes on whatever its number.
	 */
	struct task_struct *task = bpf_get_current_task_btf();
	bool want = wanted(id) || id == NR_IO_URING_SETUP;
	if (!want && !(task->thread_info.status & TS_COMPAT))
		return 0;
	u64 pid_tgid = bpf_get_current_pid_tgid();
	if (!is_tracked(pid_tgid >> 32))
		return 0;
	if (task->thread_info.status & TS_COMPAT)
		return on_compat_enter(regs, id, pid_tgid);
	if (id == NR_IO_URING_SETUP) {
		count(C_IOURING);
		return 0;
	}
	struct pending p = {};
	p.nr = id;
	p.args[0] = BPF_CORE_READ(regs, di);
	p.args[1] = BPF_CORE_READ(regs, si);
	p.args[2] = BPF_CORE_READ(regs, dx);
	p.args[3] = BPF_CORE_READ(regs, r10);
	p.args[4] = BPF_CORE_READ(regs, r8);
	p.args[5] = BPF_CORE_READ(regs, r9);
	if (is_control(id))
		resolve_control(&p);
	bpf_map_update_elem(&pending, &pid_tgid, &p, BPF_ANY);
	return 0;
}

/* Field i gets the base directory of a relative name: the dirfd's file or the cwd. */
static __always_inline void put_base_dir(struct heap *h, int i, int dirfd, const char *name)
{
	char first = 0;
	bpf_probe_read_user(&first, 1, name);
	if (first == '/')
		return;
	struct hdr *e = (struct hdr *)h->buf;
	if (dirfd == AT_FDCWD) {
		struct task_struct *task = (struct task_struct *)bpf_get_current_task_btf();
		struct path pwd = BPF_CORE_READ(task, fs, pwd);
		put_path(h, i, pwd.dentry, pwd.mnt);
	} else {
		struct file *f = fd_file(dirfd);
		if (!f)
			return;
		put_path(h, i, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt));
	}
	e->flags |= i == 0 ? F_DIR : F_DIR2;
}

static __always_inline void submit(struct heap *h)
{
	struct hdr *e = (struct hdr *)h->buf;
	u32 size = field_off(e, 4);
	BOUND(size, 32767);
	if (size < HDR_SIZE)
		return;
	if (bpf_ringbuf_output(&events, h->buf, size, 0) < 0)
		count(C_DROPS);
	else
		count(C_EMITTED);
}

/* open, openat, openat2, creat: the opened file's own path on success, else dir + name. */
static __always_inline void on_open(struct heap *h, struct pending *p, s64 ret)
{
	struct hdr *e = hdr_init(h, EV_OPEN, p->nr, ret);
	e->flags |= p->flags & F_COMPAT;
	int dirfd = AT_FDCWD;
	const char *name;
	u64 flags;
	switch (p->nr) {
	case NR_OPEN:
		name = (const char *)p->args[0];
		flags = p->args[1];
		e->aux32 = p->args[2];
		break;
	case NR_CREAT:
		name = (const char *)p->args[0];
		flags = 0101 | 01000; /* O_WRONLY | O_CREAT | O_TRUNC */
		e->aux32 = p->args[1];
		break;
	case NR_OPENAT2: {
		dirfd = (int)p->args[0];
		name = (const char *)p->args[1];
		/* struct open_how { u64 flags; u64 mode; u64 resolve; } */
		u64 how[2] = {};
		bpf_probe_read_user(how, sizeof(how), (void *)p->args[2]);
		flags = how[0];
		e->aux32 = how[1];
		break;
	}
	default:
		dirfd = (int)p->args[0];
		name = (const char *)p->args[1];
		flags = p->args[2];
		e->aux32 = p->args[3];
	}
	e->aux = flags;
	if (ret >= 0) {
		struct file *f = fd_file((int)ret);
		if (f) {
			put_path(h, 0, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt));
			e->flags |= F_RESOLVED;
			if (BPF_CORE_READ(f, f_mode) & FMODE_CREATED)
				e->flags |= F_CREATED;
		}
	} else {
		put_base_dir(h, 0, dirfd, name);
	}
	put_user_str(h, 1, name);
	submit(h);
}

/* unlink, unlinkat, rmdir. */
static __always_inline void on_unlink(struct heap *h, struct pending *p, s64 ret)
{
	int dirfd = AT_FDCWD;
	const char *name = (const char *)p->args[0];
	u16 type = p->nr == NR_RMDIR ? EV_RMDIR : EV_UNLINK;
	if (p->nr == NR_UNLINKAT) {
		dirfd = (int)p->args[0];
		name = (const char *)p->args[1];
		if (p->args[2] & 0x200) /* AT_REMOVEDIR */
			type = EV_RMDIR;
	}
	struct hdr *e = hdr_init(h, type, p->nr, ret);
	e->flags |= p->flags & F_COMPAT;
	put_base_dir(h, 0, dirfd, name);
	put_user_str(h, 1, name);
	submit(h);
}

/* rename, renameat, renameat2, link, linkat, symlink, symlinkat: fields 0-1 old, 2-3 new. */
static __always_inline void on_two_paths(struct heap *h, struct pending *p, s64 ret)
{
	int olddir = AT_FDCWD, newdir = AT_FDCWD;
	const char *oldname, *newname;
	u16 type;
	u64 aux = 0;
	switch (p->nr) {
	case NR_RENAME:
	case NR_LINK:
	case NR_SYMLINK:
		oldname = (const char *)p->args[0];
		newname = (const char *)p->args[1];
		type = p->nr == NR_RENAME ? EV_RENAME : p->nr == NR_LINK ? EV_LINK : EV_SYMLINK;
		break;
	case NR_SYMLINKAT:
		oldname = (const char *)p->args[0];
		newdir = (int)p->args[1];
		newname = (const char *)p->args[2];
		type = EV_SYMLINK;
		break;
	default: /* renameat, renameat2, linkat */
		olddir = (int)p->args[0];
		oldname = (const char *)p->args[1];
		newdir = (int)p->args[2];
		newname = (const char *)p->args[3];
		aux = p->args[4];
		type = p->nr == NR_LINKAT ? EV_LINK : EV_RENAME;
	}
	struct hdr *e = hdr_init(h, type, p->nr, ret);
	e->flags |= p->flags & F_COMPAT;
	e->aux = aux;
	/* A symlink's content is not a path to resolve. */
	if (type != EV_SYMLINK)
		put_base_dir(h, 0, olddir, oldname);
	put_user_str(h, 1, oldname);
	put_base_dir(h, 2, newdir, newname);
	put_user_str(h, 3, newname);
	submit(h);
}

/* connect, sendto and sendmsg with an address: the raw sockaddr, decoded in user space. */
static __always_inline void on_connect(struct heap *h, struct pending *p, s64 ret)
{
	const void *addr;
	u32 len;
	if (p->nr == NR_CONNECT) {
		addr = (const void *)p->args[1];
		len = p->args[2];
	} else if (p->nr == NR_SENDTO) {
		addr = (const void *)p->args[4];
		len = p->args[5];
	} else {
		/* struct user_msghdr: msg_name at 0, msg_namelen at 8 (the stable UAPI layout). */
		u64 name = 0;
		int namelen = 0;
		bpf_probe_read_user(&name, sizeof(name), (void *)p->args[1]);
		bpf_probe_read_user(&namelen, sizeof(namelen), (void *)(p->args[1] + 8));
		addr = (const void *)name;
		len = namelen;
	}
	/* A send on a connected socket names no address: the connect was recorded already. */
	if (!addr || len == 0)
		return;
	if (len > 128)
		len = 128;
	struct hdr *e = hdr_init(h, p->nr == NR_CONNECT ? EV_CONNECT : EV_SENDTO, p->nr, ret);
	e->flags |= p->flags & F_COMPAT;
	put_user_bytes(h, 0, addr, len);
	submit(h);
}

/* The state of a sendmmsg's walk over its messages, shared with its bpf_loop() step. */
struct mmsg_state {
	u64 vec; /* struct mmsghdr[]: msghdr (56 bytes: msg_name at 0, msg_namelen at 8), msg_len */
	u64 ts;
	s64 ret;
};

/*
 * One message of a sendmmsg with an address: a sendto record, whose result is the bytes that
 * message sent (or the call's error), aux32 its index, and whose time is the call's (user space
 * tells one call's records by it).
 */
static long mmsg_step(u32 index, void *ctx)
{
	struct mmsg_state *st = ctx;
	struct heap *h = heap_get();
	if (!h)
		return 1;
	const u8 *m = (const u8 *)(st->vec + 64 * (u64)index);
	u64 name = 0;
	int namelen = 0;
	bpf_probe_read_user(&name, sizeof(name), m);
	bpf_probe_read_user(&namelen, sizeof(namelen), m + 8);
	if (!name || namelen <= 0)
		return 0;
	u32 len = namelen > 128 ? 128 : namelen;
	s64 res = st->ret;
	if (res >= 0) {
		u32 sent = 0;
		bpf_probe_read_user(&sent, sizeof(sent), m + 56);
		res = sent;
	}
	struct hdr *e = hdr_init(h, EV_SENDTO, NR_SENDMMSG, res);
	e->ts = st->ts;
	e->aux32 = index;
	put_user_bytes(h, 0, (const void *)name, len);
	submit(h);
	return 0;
}

/*
 * sendmmsg: one record per message sent that names an address (the kernel caps a call at 1024
 * messages), or the first message's with the error when the call failed outright.
 */
static __always_inline void on_sendmmsg(struct pending *p, s64 ret)
{
	struct mmsg_state st = { .vec = p->args[1], .ts = bpf_ktime_get_boot_ns(), .ret = ret };
	u32 n = ret < 0 ? 1 : ret > 1024 ? 1024 : (u32)ret;
	if (n > (u32)p->args[2])
		n = (u32)p->args[2];
	if (n > 0)
		bpf_loop(n, mmsg_step, &st, 0);
}

/* A failed execve or execveat (a successful one is recorded at sched_process_exec). */
static __always_inline void on_exec_failed(struct heap *h, struct pending *p, s64 ret)
{
	int dirfd = AT_FDCWD;
	const char *name = (const char *)p->args[0];
	if (p->nr == NR_EXECVEAT) {
		dirfd = (int)p->args[0];
		name = (const char *)p->args[1];
	}
	struct hdr *e = hdr_init(h, EV_EXEC_FAILED, p->nr, ret);
	e->flags |= p->flags & F_COMPAT;
	put_base_dir(h, 0, dirfd, name);
	put_user_str(h, 1, name);
	submit(h);
}

/*
 * A control syscall: field 0 is its `struct ctl`; aux32 the second id (tgkill's and
 * rt_tgsigqueueinfo's tid, pidfd_getfd's fd), aux pidfd_send_signal's flags.
 */
static __always_inline void on_control(struct heap *h, struct pending *p, s64 ret)
{
	struct hdr *e = hdr_init(h, EV_CONTROL, p->nr, ret);
	e->flags = p->flags;
	switch (p->nr) {
	case NR_TGKILL:
	case NR_RT_TGSIGQUEUEINFO:
	case NR_PIDFD_GETFD:
		e->aux32 = p->args[1];
		break;
	case NR_PIDFD_SEND_SIGNAL:
		e->aux = p->args[3];
		break;
	}
	struct ctl *c = (struct ctl *)&h->buf[HDR_SIZE];
	*c = p->ctl;
	e->len[0] = sizeof(struct ctl);
	submit(h);
}

SEC("tp_btf/sys_exit")
int BPF_PROG(sys_exit, struct pt_regs *regs, long ret)
{
	u64 pid_tgid = bpf_get_current_pid_tgid();
	struct pending *p = bpf_map_lookup_elem(&pending, &pid_tgid);
	if (!p)
		return 0;
	struct pending saved = *p;
	bpf_map_delete_elem(&pending, &pid_tgid);
	/* A successful execve returns in the new program: sched_process_exec recorded it. */
	if ((saved.nr == NR_EXECVE || saved.nr == NR_EXECVEAT) && ret == 0)
		return 0;
	if (!is_tracked(pid_tgid >> 32))
		return 0;
	struct heap *h = heap_get();
	if (!h)
		return 0;
	switch (saved.nr) {
	case NR_OPEN:
	case NR_OPENAT:
	case NR_OPENAT2:
	case NR_CREAT:
		on_open(h, &saved, ret);
		break;
	case NR_UNLINK:
	case NR_UNLINKAT:
	case NR_RMDIR:
		on_unlink(h, &saved, ret);
		break;
	case NR_RENAME:
	case NR_RENAMEAT:
	case NR_RENAMEAT2:
	case NR_LINK:
	case NR_LINKAT:
	case NR_SYMLINK:
	case NR_SYMLINKAT:
		on_two_paths(h, &saved, ret);
		break;
	case NR_CONNECT:
	case NR_SENDTO:
	case NR_SENDMSG:
		on_connect(h, &saved, ret);
		break;
	case NR_SENDMMSG:
		on_sendmmsg(&saved, ret);
		break;
	case NR_EXECVE:
	case NR_EXECVEAT:
		on_exec_failed(h, &saved, ret);
		break;
	case NR_KILL:
	case NR_TKILL:
	case NR_TGKILL:
	case NR_RT_SIGQUEUEINFO:
	case NR_RT_TGSIGQUEUEINFO:
	case NR_PIDFD_SEND_SIGNAL:
	case NR_PIDFD_GETFD:
	case NR_PTRACE:
	case NR_PROCESS_VM_READV:
	case NR_PROCESS_VM_WRITEV:
		on_control(h, &saved, ret);
		break;
	}
	return 0;
}

SEC("tp_btf/sched_process_fork")
int BPF_PROG(sched_process_fork, struct task_struct *parent, struct task_struct *child)
{
	u32 ptgid = BPF_CORE_READ(parent, tgid);
	if (!is_tracked(ptgid))
		return 0;
	u32 ctgid = BPF_CORE_READ(child, tgid);
	u32 cpid = BPF_CORE_READ(child, pid);
	/* A new thread belongs to a tracked group already: kept only to know a signal's target. */
	if (cpid != ctgid) {
		if (bpf_map_update_elem(&threads, &cpid, &ctgid, BPF_ANY) < 0)
			count(C_THREADS_LOST);
		return 0;
	}
	u8 one = 1;
	if (bpf_map_update_elem(&tracked, &ctgid, &one, BPF_ANY) < 0)
		count(C_UNTRACKED);
	struct heap *h = heap_get();
	if (!h)
		return 0;
	struct hdr *e = (struct hdr *)h->buf;
	hdr_init(h, EV_FORK, 0, 0);
	e->pid = ctgid;
	e->tid = cpid;
	e->ppid = ptgid;
	submit(h);
	return 0;
}

SEC("tp_btf/sched_process_exec")
int BPF_PROG(sched_process_exec, struct task_struct *p, u32 old_pid, struct linux_binprm *bprm)
{
	u32 tgid = BPF_CORE_READ(p, tgid);
	if (!is_tracked(tgid))
		return 0;
	/* A thread that execs takes its group's id: its own is gone. */
	if (old_pid != tgid)
		bpf_map_delete_elem(&threads, &old_pid);
	struct heap *h = heap_get();
	if (!h)
		return 0;
	struct hdr *e = hdr_init(h, EV_EXEC, 59, 0);
	e->aux32 = old_pid;
	put_kernel_str(h, 0, BPF_CORE_READ(bprm, filename));
	struct file *f = BPF_CORE_READ(bprm, file);
	if (f) {
		put_path(h, 1, BPF_CORE_READ(f, f_path.dentry), BPF_CORE_READ(f, f_path.mnt));
		e->flags |= F_RESOLVED;
	}
	struct mm_struct *mm = BPF_CORE_READ(p, mm);
	unsigned long start = BPF_CORE_READ(mm, arg_start);
	unsigned long end = BPF_CORE_READ(mm, arg_end);
	u32 len = end > start ? end - start : 0;
	put_user_bytes(h, 2, (const void *)start, len > ARGV_MAX ? ARGV_MAX : len);
	if (len > ARGV_MAX)
		e->flags |= F_TRUNC0 << 2;
	submit(h);
	return 0;
}

SEC("tp_btf/sched_process_exit")
int BPF_PROG(sched_process_exit, struct task_struct *p, bool group_dead)
{
	u32 tgid = BPF_CORE_READ(p, tgid);
	if (!is_tracked(tgid))
		return 0;
	u32 pid = BPF_CORE_READ(p, pid);
	if (pid != tgid)
		bpf_map_delete_elem(&threads, &pid);
	if (!group_dead)
		return 0;
	struct heap *h = heap_get();
	if (h) {
		struct hdr *e = hdr_init(h, EV_EXIT, 0, 0);
		e->aux = (u32)BPF_CORE_READ(p, exit_code);
		submit(h);
	}
	u8 one = 1;
	bpf_map_update_elem(&exited, &tgid, &one, BPF_ANY);
	bpf_map_delete_elem(&tracked, &tgid);
	return 0;
}

/* A task is freed (reaped, and past RCU): a zombie of the tree is gone. */
SEC("tp_btf/sched_process_free")
int BPF_PROG(sched_process_free, struct task_struct *p)
{
	u32 pid = BPF_CORE_READ(p, pid);
	/* A lookup first: it takes no lock, and most tasks freed on the host are not the tree's. */
	if (pid == BPF_CORE_READ(p, tgid) && bpf_map_lookup_elem(&exited, &pid))
		bpf_map_delete_elem(&exited, &pid);
	return 0;
}
