/* SPDX-License-Identifier: MIT */
/*
 * Loader of the XDP admission guard (bpf/guard.bpf.c): per-source SYN
 * token buckets on the daemon's ports and the kernel side of the source
 * bans of abuse.c, on the interfaces named by guard_interfaces.
 *
 * Optional: without BPF rights, without interfaces configured, with
 * bpf = no, or when an interface already has another XDP program, the
 * guard stays off and says why (the bpf.guard log line, kernel paths in
 * `stanzactl status`); the userspace limits of abuse.c work either way.
 * One guard per process; start and stop run on the main thread before
 * and after the workers.
 */
#ifndef STANZAD_BPF_GUARD_H
#define STANZAD_BPF_GUARD_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct server;

#define GUARD_MAX_IFACES 8	/* interfaces the guard attaches to */

struct bpf_guard_counters {
	uint64_t passed;	/* SYNs to the daemon's ports let through */
	uint64_t rate_dropped;	/* SYNs dropped: the source's bucket was empty */
	uint64_t ban_dropped;	/* SYNs dropped: the source was banned */
};

/*
 * Loads and attaches the guard for the ports srv's configuration listens
 * on (call before the listeners open) and registers the ban hook with abuse.c. Never fatal: logs
 * bpf.guard with state=active or state=off and the reason. Returns
 * whether it is active.
 */
bool bpf_guard_start(const struct server *srv);

/* Detaches and unloads (the ban hook first). Idempotent. */
void bpf_guard_stop(void);

/*
 * Whether the guard runs; *detail (interfaces, mode) and *reason (why
 * not) are static strings, "" when there is nothing to say.
 */
bool bpf_guard_state(const char **detail, const char **reason);

/* Sums the per-CPU counters. 0, or -ENODEV when the guard is off, or -errno. */
int bpf_guard_counters(struct bpf_guard_counters *out);

/* The ban hook (abuse.c's auth_ban_source calls it): bans addr for seconds. */
void bpf_guard_ban(const struct in6_addr *addr, unsigned seconds);

#endif
