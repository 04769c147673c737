// SPDX-License-Identifier: GPL-2.0
/* Sentry's connect guard: cgroup sock_addr programs that refuse a denied connect() (TCP and
 * UDP) or UDP sendmsg() of every process in one cgroup v2 directory, before any packet leaves.
 *
 * The kernel runs these programs inside connect() and sendmsg(), on the address it has already
 * copied from the caller: a thread that rewrites its sockaddr buffer afterwards changes nothing.
 * Returning 0 makes the call fail with EPERM; 1 lets it go on.
 *
 * The decision is two lookups in tables Sentry compiles from the policy (connect_guard.ts):
 *   1. the address (IPv4, or IPv6; an IPv4-mapped IPv6 address is looked up as IPv4) in an LPM
 *      trie of prefixes, which gives a port table id;
 *   2. (table id, port) in an LPM trie of port ranges, which gives the verdict.
 * Every key starts with a generation number: Sentry fills the inactive generation, then flips
 * `config.gen`, so that a policy or DNS update swaps all tables at once.
 *
 * A decision for a denied destination (and, when `config.sample` is N > 0, one allowed decision
 * in N) is written to the ring buffer for the journal; records that do not fit are counted in
 * `counters`, per CPU, so loss is exact.
 *
 * No CO-RE and no kernel headers: only the stable UAPI context (struct bpf_sock_addr) is read.
 * Rebuild with `deno task bpf` (clang, libbpf-dev).
 */
typedef unsigned char __u8;
typedef unsigned short __u16;
typedef unsigned int __u32;
typedef unsigned long long __u64;
typedef signed char __s8;
typedef short __s16;
typedef int __s32;
typedef long long __s64;
typedef __u16 __be16;
typedef __u32 __be32;
typedef __u32 __wsum;

#include <bpf/bpf_helpers.h>
#include <bpf/bpf_endian.h>

char LICENSE[] SEC("license") = "GPL";

/* From include/uapi/linux/bpf.h. */
enum {
	MAP_ARRAY = 2,
	MAP_PERCPU_ARRAY = 6,
	MAP_LPM_TRIE = 11,
	MAP_RINGBUF = 27,
};
#define F_NO_PREALLOC 1

/* The context of cgroup/connect4, connect6, sendmsg4 and sendmsg6 (UAPI, stable). Only the
 * fields read are declared; the verifier checks each access against the real layout. */
struct bpf_sock_addr {
	__u32 user_family;
	__u32 user_ip4; /* network byte order */
	__u32 user_ip6[4]; /* network byte order */
	__u32 user_port; /* network byte order, in the low 16 bits */
	__u32 family;
	__u32 type;
	__u32 protocol;
};

#define AF_INET 2
#define AF_INET6 10

/* Verdicts in the port tables; the TypeScript compiler (connect_guard.ts) mirrors these. */
enum {
	V_ALLOW = 0, /* allowed: no record unless sampled */
	V_REPORT = 1, /* denied by the policy, but its response does not block: allowed, recorded */
	V_BLOCK = 2, /* denied and blocked: EPERM, recorded */
};

/* Which program decided. */
enum {
	HOOK_CONNECT4 = 1,
	HOOK_CONNECT6 = 2,
	HOOK_SENDMSG4 = 3,
	HOOK_SENDMSG6 = 4,
};

/* Counter slots in `counters` (per CPU). */
enum {
	C_CHECKED = 0, /* decisions taken */
	C_BLOCKED = 1, /* calls failed with EPERM */
	C_REPORTED = 2, /* denied destinations allowed because the response does not block */
	C_DROPS = 3, /* records lost: the ring buffer was full */
	C_MISSES = 4, /* no table answered (never, once Sentry has filled them): allowed */
	C_COUNT = 5,
};

/* Prefix keys: `prefixlen` counts the 32 bits of `gen`, then the address bits. */
struct key4 {
	__u32 prefixlen;
	__u32 gen;
	__u8 addr[4];
};

struct key6 {
	__u32 prefixlen;
	__u32 gen;
	__u8 addr[16];
};

/* Port key: `prefixlen` counts the 32 bits of `table` (which holds the generation in its top
 * bit), then the port's bits, most significant first. */
struct port_key {
	__u32 prefixlen;
	__u32 table;
	__be16 port;
	__u16 pad;
};

struct config {
	__u32 gen; /* the live generation: 0 or 1 */
	__u32 sample; /* record one allowed decision in `sample`; 0: none */
};

/* One decision, as the reader decodes it (connect_guard_record.ts): 72 bytes. */
struct decision {
	__u64 ts; /* CLOCK_BOOTTIME, ns */
	__u64 cgroup; /* the caller's cgroup v2 id */
	__u32 tgid;
	__u32 tid;
	__u32 uid;
	__u32 table;
	__u16 family; /* AF_INET or AF_INET6: the socket's, as the caller addressed it */
	__u16 port; /* host byte order */
	__u8 addr[16]; /* IPv4 in the first 4 bytes */
	__u8 verdict;
	__u8 hook;
	__u8 protocol; /* IPPROTO_TCP, IPPROTO_UDP... */
	__u8 pad;
	char comm[16];
};

struct {
	__uint(type, MAP_LPM_TRIE);
	__uint(map_flags, F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct key4);
	__type(value, __u32);
} prefixes4 SEC(".maps");

struct {
	__uint(type, MAP_LPM_TRIE);
	__uint(map_flags, F_NO_PREALLOC);
	__uint(max_entries, 65536);
	__type(key, struct key6);
	__type(value, __u32);
} prefixes6 SEC(".maps");

struct {
	__uint(type, MAP_LPM_TRIE);
	__uint(map_flags, F_NO_PREALLOC);
	__uint(max_entries, 262144);
	__type(key, struct port_key);
	__type(value, __u8);
} ports SEC(".maps");

struct {
	__uint(type, MAP_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct config);
} config SEC(".maps");

struct {
	__uint(type, MAP_RINGBUF);
	__uint(max_entries, 1024 * 1024);
} decisions SEC(".maps");

struct {
	__uint(type, MAP_PERCPU_ARRAY);
	__uint(max_entries, C_COUNT);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void count(__u32 slot)
{
	__u64 *n = bpf_map_lookup_elem(&counters, &slot);
	if (n)
		*n += 1;
}

static __always_inline int decide(struct bpf_sock_addr *ctx, int hook, int v6)
{
	__u32 zero = 0;
	struct config *cfg = bpf_map_lookup_elem(&config, &zero);
	if (!cfg)
		return 1;
	__u32 gen = cfg->gen;
	__u32 sample = cfg->sample;
	__u32 ip[4] = {};
	int as4 = !v6;
	if (v6) {
		ip[0] = ctx->user_ip6[0];
		ip[1] = ctx->user_ip6[1];
		ip[2] = ctx->user_ip6[2];
		ip[3] = ctx->user_ip6[3];
		/* ::ffff:a.b.c.d is an IPv4 peer reached through an IPv6 socket. */
		if (ip[0] == 0 && ip[1] == 0 && ip[2] == bpf_htonl(0xffff))
			as4 = 1;
	} else {
		ip[3] = ctx->user_ip4;
	}
	count(C_CHECKED);
	__u32 *table;
	if (as4) {
		struct key4 k = { .prefixlen = 64, .gen = gen };
		__builtin_memcpy(k.addr, &ip[3], 4);
		table = bpf_map_lookup_elem(&prefixes4, &k);
	} else {
		struct key6 k = { .prefixlen = 160, .gen = gen };
		__builtin_memcpy(k.addr, ip, 16);
		table = bpf_map_lookup_elem(&prefixes6, &k);
	}
	if (!table) {
		count(C_MISSES);
		return 1;
	}
	__be16 nport = (__be16)ctx->user_port;
	struct port_key pk = { .prefixlen = 48, .table = *table, .port = nport };
	__u8 *found = bpf_map_lookup_elem(&ports, &pk);
	if (!found) {
		count(C_MISSES);
		return 1;
	}
	__u8 verdict = *found;
	if (verdict == V_ALLOW && (sample == 0 || bpf_get_prandom_u32() % sample != 0))
		return 1;
	if (verdict == V_BLOCK)
		count(C_BLOCKED);
	else if (verdict == V_REPORT)
		count(C_REPORTED);
	struct decision *d = bpf_ringbuf_reserve(&decisions, sizeof(*d), 0);
	if (!d) {
		count(C_DROPS);
	} else {
		__u64 id = bpf_get_current_pid_tgid();
		d->ts = bpf_ktime_get_boot_ns();
		d->cgroup = bpf_get_current_cgroup_id();
		d->tgid = id >> 32;
		d->tid = (__u32)id;
		d->uid = (__u32)bpf_get_current_uid_gid();
		d->table = *table;
		d->family = v6 ? AF_INET6 : AF_INET;
		d->port = bpf_ntohs(nport);
		if (v6) {
			__builtin_memcpy(d->addr, ip, 16);
		} else {
			__builtin_memcpy(d->addr, &ip[3], 4);
			__builtin_memset(&d->addr[4], 0, 12);
		}
		d->verdict = verdict;
		d->hook = hook;
		d->protocol = ctx->protocol;
		d->pad = 0;
		bpf_get_current_comm(d->comm, sizeof(d->comm));
		bpf_ringbuf_submit(d, 0);
	}
	return verdict == V_BLOCK ? 0 : 1;
}

SEC("cgroup/connect4")
int guard_connect4(struct bpf_sock_addr *ctx)
{
	return decide(ctx, HOOK_CONNECT4, 0);
}

SEC("cgroup/connect6")
int guard_connect6(struct bpf_sock_addr *ctx)
{
	return decide(ctx, HOOK_CONNECT6, 1);
}

SEC("cgroup/sendmsg4")
int guard_sendmsg4(struct bpf_sock_addr *ctx)
{
	return decide(ctx, HOOK_SENDMSG4, 0);
}

SEC("cgroup/sendmsg6")
int guard_sendmsg6(struct bpf_sock_addr *ctx)
{
	return decide(ctx, HOOK_SENDMSG6, 1);
}
