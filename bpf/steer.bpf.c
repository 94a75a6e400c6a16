// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * Reuseport steering (sk_reuseport): picks the worker of each new client
 * connection. Every worker has its own listening socket in the SO_REUSEPORT
 * group of each c2s address; without this program the kernel picks one by
 * the hash of the 4-tuple, blind to how busy the workers are.
 *
 *  - least-loaded: the undrained worker with the lowest load (the load
 *    map, which each worker writes with a plain store into its mmap, no
 *    syscall). The scan starts at ctx->hash (differs per connection), so
 *    equal loads are shared rather than all going to the lowest id. The
 *    program adds one to the load of the worker it picks: a burst of SYNs
 *    between two publications of the workers then spreads instead of all
 *    landing on the worker that was idlest at the last one; the worker's
 *    next store replaces the estimate by its real count.
 *  - source-hash: by the client's IP address only (not its port), so a
 *    device that reconnects lands on the same worker (its state there is
 *    warm). Rendezvous hashing (the highest hash of (address, worker)
 *    wins): draining a worker moves only the sources that were on it, the
 *    others keep their worker.
 *  - A drained worker (the drain map, written by the control socket for a
 *    graceful restart) gets nothing new; it keeps what it has.
 *  - When there is nothing to choose (every worker drained, an unknown
 *    socket, a failed selection) the program returns SK_PASS without
 *    selecting: the kernel's own hash picks, as if it were not there.
 *
 * Groups: one program and one socket array serve every c2s address. The
 * kernel hands the program a socket of the group the SYN matched
 * (ctx->sk; any member) and refuses a selection from another group
 * (-EXDEV), so the group is found from that socket's cookie (the cookies
 * map: every member's cookie -> its group). A port would not do: one
 * port may be served on several addresses (127.0.0.1:5222 and
 * [::1]:5222 are two groups). One program per group would mean loading
 * the object up to 16 times for the same maps.
 *
 * Migration: attached as select-or-migrate, the program is also asked
 * where the queue of a closing listener goes (ctx->migrating_sk set): a
 * worker that stops, or the predecessor's sockets at a hand-over, pass
 * the connections the kernel already accepted for them to a live
 * listener instead of resetting them (net.ipv4.tcp_migrate_req is not
 * needed with such a program). The same choice applies; a drained or
 * closed worker is never picked, and the kernel's hash picks among the
 * live ones when the program does not.
 *
 * Kernels: ctx->sk and migration need 5.14, bpf_loop() 5.17 (Debian 12's 6.1 has both);
 * an older one refuses to load it and the loader says so (state=off).
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "steer.h"

#define ETH_P_IP	0x0800
#define ETH_P_IPV6	0x86DD

struct {
	__uint(type, BPF_MAP_TYPE_REUSEPORT_SOCKARRAY);
	__uint(max_entries, STEER_MAX_SOCKS);
	__type(key, __u32);	/* group * STEER_MAX_WORKERS + worker */
	__type(value, __u64);	/* the socket (fd on update, cookie on lookup) */
} socks SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, STEER_MAX_SOCKS);
	__type(key, __u64);	/* socket cookie of a group member */
	__type(value, __u32);	/* its group */
} cookies SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STEER_MAX_GROUPS);
	__type(key, __u32);
	__type(value, struct steer_group);
} groups SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(map_flags, BPF_F_MMAPABLE);
	__uint(max_entries, STEER_MAX_WORKERS);
	__type(key, __u32);
	__type(value, __u64);	/* the worker's connections (+ selections since); 8 bytes: the
				 * stride of an mmapped array */
} load SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, STEER_MAX_WORKERS);
	__type(key, __u32);
	__type(value, __u32);	/* nonzero: drained, no new connections */
} drain SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_ARRAY);
	__uint(max_entries, 1);
	__type(key, __u32);
	__type(value, struct steer_config);
} settings SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, STEER_NCOUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void steer_count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &slot);

	if (v)
		*v += 1;
}

/* murmur3's finalizer: every input bit moves every output bit. */
static __always_inline __u32 steer_mix(__u32 h)
{
	h ^= h >> 16;
	h *= 0x85ebca6b;
	h ^= h >> 13;
	h *= 0xc2b2ae35;
	h ^= h >> 16;
	return h;
}

/* Whether worker w may get a new connection: a member of the group, not drained. */
static __always_inline bool steer_eligible(__u64 members, __u32 w)
{
	__u32 *d;

	if (!((members >> (w & (STEER_MAX_WORKERS - 1))) & 1))
		return false;
	d = bpf_map_lookup_elem(&drain, &w);
	return d && !*d;
}

/*
 * One scan over the workers, as bpf_loop() callbacks: an open-coded loop
 * keeping the best so far makes the verifier walk every path of every
 * iteration (past its million-instruction limit at 64 workers); a
 * callback it checks once.
 */
struct steer_scan {
	__u64 members;		/* of the group */
	__u32 policy;
	__u32 n;		/* workers */
	__u32 start;		/* first worker looked at */
	__u32 h;		/* source-hash: the source's hash */
	__u64 best_v;		/* lowest load or highest score so far */
	int best;		/* its worker, -1 none yet */
};

static long steer_scan_one(__u32 i, void *data)
{
	struct steer_scan *s = data;
	__u32 w = s->start + i;
	__u64 v, *l;

	if (w >= s->n)
		w -= s->n;
	if (w >= STEER_MAX_WORKERS || !steer_eligible(s->members, w))
		return 0;
	if (s->policy == STEER_SOURCE_HASH) {
		/* Rendezvous: the highest hash of (source, worker). */
		v = steer_mix(s->h ^ ((w + 1) * 0x9e3779b9));
		if (s->best < 0 || v > s->best_v) {
			s->best_v = v;
			s->best = (int)w;
		}
		return 0;
	}
	l = bpf_map_lookup_elem(&load, &w);
	if (l && (s->best < 0 || *l < s->best_v)) {
		s->best_v = *l;
		s->best = (int)w;
	}
	return 0;
}

/* The source address's hash (IPv4 or IPv6, from the IP header); false if unreadable. */
static __always_inline bool steer_source_hash(struct sk_reuseport_md *ctx, __u32 seed, __u32 *out)
{
	__u32 a[4];

	/* ctx->data starts at the TCP header: the IP header is read relative to the network one. */
	if (ctx->eth_protocol == bpf_htons(ETH_P_IP)) {
		if (bpf_skb_load_bytes_relative(ctx, offsetof(struct iphdr, saddr), a, 4,
						BPF_HDR_START_NET))
			return false;
		*out = steer_mix(seed ^ a[0]);
		return true;
	}
	if (ctx->eth_protocol == bpf_htons(ETH_P_IPV6)) {
		if (bpf_skb_load_bytes_relative(ctx, offsetof(struct ipv6hdr, saddr), a, 16,
						BPF_HDR_START_NET))
			return false;
		*out = steer_mix(steer_mix(steer_mix(steer_mix(seed ^ a[0]) ^ a[1]) ^ a[2]) ^ a[3]);
		return true;
	}
	return false;
}

SEC("sk_reuseport/migrate")
int stanzad_steer(struct sk_reuseport_md *ctx)
{
	struct bpf_sock *sk = ctx->sk;
	struct steer_config *cfg;
	struct steer_group *grp;
	struct steer_scan scan = { .best = -1 };
	__u32 zero = 0, gi, key, n, *g;
	__u64 *l;
	__u64 cookie;
	int w;

	cfg = bpf_map_lookup_elem(&settings, &zero);
	if (!cfg || !sk)
		goto fallback;
	n = cfg->nworkers;
	if (n == 0 || n > STEER_MAX_WORKERS)
		goto fallback;
	cookie = bpf_get_socket_cookie(sk);
	g = bpf_map_lookup_elem(&cookies, &cookie);
	if (!g)
		goto fallback;	/* a socket the loader did not register */
	gi = *g;
	grp = bpf_map_lookup_elem(&groups, &gi);
	if (!grp || gi >= STEER_MAX_GROUPS)
		goto fallback;
	scan.members = grp->members;
	scan.policy = cfg->policy;
	scan.n = n;
	if (cfg->policy == STEER_SOURCE_HASH) {
		if (!steer_source_hash(ctx, cfg->seed, &scan.h))
			goto fallback;
	} else {
		/* Equal loads: where the scan starts wins, and that differs per connection. */
		scan.start = ctx->hash % n;
	}
	bpf_loop(n, steer_scan_one, &scan, 0);
	w = scan.best;
	if (w < 0 || w >= STEER_MAX_WORKERS)
		goto fallback;	/* every worker drained */
	key = gi * STEER_MAX_WORKERS + (__u32)w;
	if (bpf_sk_select_reuseport(ctx, &socks, &key, 0))
		goto fallback;	/* its socket is gone (closed) or not in this group */
	if (cfg->policy != STEER_SOURCE_HASH) {
		__u32 wk = (__u32)w;

		l = bpf_map_lookup_elem(&load, &wk);
		if (l)
			__sync_fetch_and_add(l, 1);
	}
	steer_count((__u32)w);
	return SK_PASS;
fallback:
	steer_count(STEER_FALLBACK);
	return SK_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
