// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * The admission guard (XDP): runs on every packet an interface receives,
 * before the kernel allocates anything for it.
 *
 *  - A SYN (a new connection) to one of the daemon's ports (the ports
 *    map, filled by the loader from its listeners) from a banned source
 *    (the bans map, filled by the daemon after repeated authentication
 *    failures) is dropped until the ban's expiry; an expired ban is
 *    deleted here. Only SYNs: the source's open streams end as the
 *    daemon decides (abuse.c), with their FIN and ACKs still flowing.
 *  - Any other SYN to those ports is charged to its source's token
 *    bucket (GCRA: syn_interval_ns per SYN, syn_burst at once); when the
 *    bucket is empty it is dropped.
 *  - Everything else passes untouched: other ports, other protocols,
 *    IPv4 fragments after the first, IPv6 with extension headers before
 *    TCP (rare for TCP; the daemon's own limits still apply to them).
 *
 * The buckets are updated without atomics: two CPUs racing on one source
 * may each let a SYN through that one of them should have dropped, which
 * costs nothing that matters and keeps the fast path to two map lookups.
 */
#include "vmlinux.h"
#include <bpf/bpf_endian.h>
#include <bpf/bpf_helpers.h>

#include "guard.h"

#define ETH_P_IP	0x0800
#define ETH_P_IPV6	0x86DD
#define IP_MF		0x2000
#define IP_OFFSET	0x1FFF
#define TCP_FLAG_SYN	0x02
#define TCP_FLAG_ACK	0x10

/* Set by the loader before the program is loaded. */
const volatile __u64 syn_interval_ns = 50000000;	/* 20 SYNs/s */
const volatile __u32 syn_burst = 100;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, GUARD_MAX_PORTS);
	__type(key, __u16);	/* host byte order */
	__type(value, __u8);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GUARD_MAX_BANS);
	__type(key, struct guard_key);
	__type(value, struct guard_ban);
} bans SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_LRU_HASH);
	__uint(max_entries, GUARD_MAX_BUCKETS);
	__type(key, struct guard_key);
	__type(value, struct guard_bucket);
} buckets SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, GUARD_NCOUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline void guard_count(__u32 slot)
{
	__u64 *v = bpf_map_lookup_elem(&counters, &slot);

	if (v)
		*v += 1;
}

/* True when the source's bucket has room for one more SYN (and charges it). */
static __always_inline bool guard_bucket_admits(const struct guard_key *key, __u64 now)
{
	__u64 limit = syn_interval_ns * syn_burst;
	struct guard_bucket *b, fresh;
	__u64 tat;

	b = bpf_map_lookup_elem(&buckets, key);
	if (!b) {
		fresh.tat_ns = now + syn_interval_ns;
		bpf_map_update_elem(&buckets, key, &fresh, BPF_ANY);
		return true;
	}
	tat = b->tat_ns > now ? b->tat_ns : now;
	if (tat + syn_interval_ns - now > limit)
		return false;
	b->tat_ns = tat + syn_interval_ns;
	return true;
}

/* The verdict for a TCP header at tcp (bounds still to check) from key. */
static __always_inline int guard_tcp(void *tcp, void *end, const struct guard_key *key)
{
	struct tcphdr *th = tcp;
	struct guard_ban *ban;
	__u16 port;
	__u8 flags;
	__u64 now;

	if ((void *)(th + 1) > end)
		return XDP_PASS;
	port = bpf_ntohs(th->dest);
	if (!bpf_map_lookup_elem(&ports, &port))
		return XDP_PASS;
	flags = ((__u8 *)th)[13];	/* CWR ECE URG ACK PSH RST SYN FIN */
	if ((flags & (TCP_FLAG_SYN | TCP_FLAG_ACK)) != TCP_FLAG_SYN)
		return XDP_PASS;
	now = bpf_ktime_get_ns();
	ban = bpf_map_lookup_elem(&bans, key);
	if (ban) {
		if (now < ban->until_ns) {
			guard_count(GUARD_BAN_DROPPED);
			return XDP_DROP;
		}
		bpf_map_delete_elem(&bans, key);
	}
	if (!guard_bucket_admits(key, now)) {
		guard_count(GUARD_RATE_DROPPED);
		return XDP_DROP;
	}
	guard_count(GUARD_PASSED);
	return XDP_PASS;
}

SEC("xdp")
int stanzad_guard(struct xdp_md *ctx)
{
	void *data = (void *)(long)ctx->data;
	void *end = (void *)(long)ctx->data_end;
	struct ethhdr *eth = data;
	struct guard_key key = {};

	if ((void *)(eth + 1) > end)
		return XDP_PASS;
	if (eth->h_proto == bpf_htons(ETH_P_IP)) {
		struct iphdr *ip = (void *)(eth + 1);
		__u32 ihl;

		if ((void *)(ip + 1) > end || ip->protocol != IPPROTO_TCP)
			return XDP_PASS;
		if (ip->frag_off & bpf_htons(IP_OFFSET))
			return XDP_PASS;	/* not the first fragment: no TCP header */
		ihl = ip->ihl * 4;
		if (ihl < sizeof(*ip))
			return XDP_PASS;
		key.addr[10] = 0xff;
		key.addr[11] = 0xff;
		__builtin_memcpy(&key.addr[12], &ip->saddr, 4);
		return guard_tcp((void *)ip + ihl, end, &key);
	}
	if (eth->h_proto == bpf_htons(ETH_P_IPV6)) {
		struct ipv6hdr *ip6 = (void *)(eth + 1);

		if ((void *)(ip6 + 1) > end || ip6->nexthdr != IPPROTO_TCP)
			return XDP_PASS;
		/* The /64: one host usually owns all of it. */
		__builtin_memcpy(key.addr, &ip6->saddr, 8);
		return guard_tcp(ip6 + 1, end, &key);
	}
	return XDP_PASS;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
