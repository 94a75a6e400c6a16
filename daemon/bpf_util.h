/* SPDX-License-Identifier: MIT */
/*
 * What the BPF loaders (bpf_guard.c, bpf_sockops.c, bpf_steer.c) share: libbpf's
 * messages routed to our log, the TCP ports of the daemon's listeners,
 * per-CPU counters summed, and errors worded for the startup log.
 */
#ifndef STANZAD_BPF_UTIL_H
#define STANZAD_BPF_UTIL_H

#include <stddef.h>
#include <stdint.h>

struct config;

#define BPF_UTIL_MAX_PORTS 64	/* distinct listener ports a loader puts in its map */

/* libbpf's output goes to log_debug (bpf.libbpf), not to stderr. Idempotent. */
void bpf_util_quiet_libbpf(void);

/*
 * The distinct TCP ports the configuration listens on (every listen_* key;
 * the control socket is a Unix socket) into ports[]; returns how many
 * (<= max). From the configuration, not the sockets: the programs are
 * attached before the listeners open, so that no connection completes
 * its handshake before they run.
 */
unsigned bpf_util_listener_ports(const struct config *cfg, uint16_t *ports, unsigned max);

/*
 * Sums slot 0..n-1 of the per-CPU array map map_fd over every possible
 * CPU into out[]. 0 or -errno.
 */
int bpf_util_percpu_sum(int map_fd, unsigned n, uint64_t *out);

/*
 * Why loading or attaching failed, for the log: -EPERM becomes a sentence
 * naming the capabilities, the rest strerror().
 */
const char *bpf_util_why(int err);

#endif
