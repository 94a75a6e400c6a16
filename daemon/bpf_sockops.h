/* SPDX-License-Identifier: MIT */
/*
 * Loader of the sockops program (bpf/sockops.bpf.c): keepalive, user
 * timeout and nodelay for connections to the daemon's listening ports,
 * set by the kernel as their handshake completes. It is attached to the
 * cgroup v2 the daemon runs in (its service's cgroup under systemd; no
 * cgroup is created or entered), and acts only on the ports of this
 * daemon's listeners, so other processes of that cgroup keep their
 * sockets as they are.
 *
 * Optional: without BPF rights, without a cgroup v2 hierarchy, or with
 * bpf = no, the daemon sets the same options itself on each accepted
 * socket (bpf_sockops_fallback) and the bpf.sockops log line says why.
 */
#ifndef STANZAD_BPF_SOCKOPS_H
#define STANZAD_BPF_SOCKOPS_H

#include <stdbool.h>
#include <stdint.h>

struct config;
struct server;

struct bpf_sockops_counters {
	uint64_t tuned;		/* connections the kernel program set up */
	uint64_t failed;	/* ... where one of its settings failed */
};

/*
 * Loads and attaches the program for the ports srv's configuration listens
 * on (call before the listeners open, so no handshake completes without
 * it). Never fatal: logs bpf.sockops with state=active or state=off and
 * the reason. Returns whether it is active.
 */
bool bpf_sockops_start(const struct server *srv);

/* Detaches and unloads. Idempotent. */
void bpf_sockops_stop(void);

/* Whether it runs; *detail and *reason as for bpf_guard_state. */
bool bpf_sockops_state(const char **detail, const char **reason);

/* Sums the per-CPU counters. 0, -ENODEV when off, or -errno. */
int bpf_sockops_counters(struct bpf_sockops_counters *out);

/*
 * A TCP connection was just accepted on fd: when the program is not
 * active, applies the same settings with setsockopt() (tcp_nodelay,
 * tcp_keepalive_*, tcp_user_timeout); when it is, does nothing.
 */
void bpf_sockops_fallback(const struct config *cfg, int fd);

#endif
