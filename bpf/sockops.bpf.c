// SPDX-License-Identifier: GPL-2.0 OR MIT
/*
 * TCP settings for device links (sockops, attached to the daemon's
 * cgroup v2): when a connection to one of the daemon's listening ports
 * (the ports map, filled by the loader) completes its handshake, before
 * accept() returns it, the kernel applies keepalive (idle, interval,
 * count), TCP_USER_TIMEOUT and TCP_NODELAY from the daemon's config, so
 * the daemon makes no setsockopt() call per connection. Sockets of other
 * ports in the same cgroup are left alone.
 */
#include "vmlinux.h"
#include <bpf/bpf_helpers.h>

#include "sockops.h"

#define SOL_SOCKET		1
#define SO_KEEPALIVE		9
#define SOL_TCP			6
#define TCP_NODELAY		1
#define TCP_KEEPIDLE		4
#define TCP_KEEPINTVL		5
#define TCP_KEEPCNT		6
#define TCP_USER_TIMEOUT	18

/* Set by the loader before the program is loaded (0: leave the kernel's). */
const volatile __u32 keepalive_idle = 0;	/* seconds; 0: no keepalive */
const volatile __u32 keepalive_interval = 0;	/* seconds */
const volatile __u32 keepalive_count = 0;
const volatile __u32 user_timeout_ms = 0;
const volatile __u32 nodelay = 1;

struct {
	__uint(type, BPF_MAP_TYPE_HASH);
	__uint(max_entries, SOCKOPS_MAX_PORTS);
	__type(key, __u16);	/* host byte order */
	__type(value, __u8);
} ports SEC(".maps");

struct {
	__uint(type, BPF_MAP_TYPE_PERCPU_ARRAY);
	__uint(max_entries, SOCKOPS_NCOUNTERS);
	__type(key, __u32);
	__type(value, __u64);
} counters SEC(".maps");

static __always_inline int set_int(struct bpf_sock_ops *skops, int level, int opt, int val)
{
	return bpf_setsockopt(skops, level, opt, &val, sizeof(val));
}

SEC("sockops")
int stanzad_sockops(struct bpf_sock_ops *skops)
{
	__u16 port = (__u16)skops->local_port;	/* host byte order for the local side */
	__u32 slot = SOCKOPS_TUNED;
	int err = 0;
	__u64 *v;

	if (skops->op != BPF_SOCK_OPS_PASSIVE_ESTABLISHED_CB)
		return 1;
	if (!bpf_map_lookup_elem(&ports, &port))
		return 1;
	if (keepalive_idle) {
		err |= set_int(skops, SOL_SOCKET, SO_KEEPALIVE, 1);
		err |= set_int(skops, SOL_TCP, TCP_KEEPIDLE, keepalive_idle);
		if (keepalive_interval)
			err |= set_int(skops, SOL_TCP, TCP_KEEPINTVL, keepalive_interval);
		if (keepalive_count)
			err |= set_int(skops, SOL_TCP, TCP_KEEPCNT, keepalive_count);
	}
	if (user_timeout_ms)
		err |= set_int(skops, SOL_TCP, TCP_USER_TIMEOUT, user_timeout_ms);
	if (nodelay)
		err |= set_int(skops, SOL_TCP, TCP_NODELAY, 1);
	if (err)
		slot = SOCKOPS_FAILED;
	v = bpf_map_lookup_elem(&counters, &slot);
	if (v)
		*v += 1;
	return 1;
}

char LICENSE[] SEC("license") = "Dual MIT/GPL";
