/* SPDX-License-Identifier: MIT */
/*
 * Loader of the reuseport steering program (bpf/steer.bpf.c): which
 * worker gets each new client connection on the c2s and c2s TLS
 * listeners, by the policy of the steering key (least-loaded, from the
 * loads the workers publish; source-hash, by the client's address), and
 * the drain of a worker for a graceful restart.
 *
 * Optional: without BPF rights, with bpf = no, steering = kernel or a
 * single worker, steering stays off and says why (the bpf.steer log line,
 * kernel paths in `stanzactl status`); the kernel's reuseport hash then
 * spreads the connections. One steering per process; start and stop run
 * on the main thread before and after the workers.
 */
#ifndef STANZAD_BPF_STEER_H
#define STANZAD_BPF_STEER_H

#include <stdbool.h>
#include <stdint.h>

#include "server.h"

struct bpf_steer_counters {
	uint64_t selected[SERVER_MAX_WORKERS];	/* connections the program sent to each worker */
	uint64_t fallbacks;	/* connections it left to the kernel's hash (nothing to choose) */
};

/*
 * Loads the program, fills its socket array with the workers' sockets of
 * every c2s listener (listener.worker_fd) and attaches it to each of their
 * reuseport groups. Call on the main thread once the listeners are open
 * and srv->nworkers is set, before the workers run. Never fatal: logs
 * bpf.steer with state=active or state=off and the reason. When off, a
 * program a previous daemon left on the sockets is detached, so the
 * kernel's hash really decides. Returns whether steering is active.
 */
bool bpf_steer_start(struct server *srv);

/*
 * Empties the socket array (the kernel's hash picks from then on, and a
 * successor can put the sockets in its own array) and unloads. The
 * program stays attached to the groups until a successor replaces it or
 * the sockets close: their file descriptors may be closed or reused by
 * now, so stop does not touch them. Idempotent.
 */
void bpf_steer_stop(void);

/*
 * At a hand-over (handover.c, worker 0): the sockets leave our array now,
 * so that the successor's can take them at once, and the program, still
 * attached, leaves every choice to the kernel's hash until the
 * successor's replaces it. Safe while the workers run (they keep
 * publishing loads into the still-mapped load map).
 */
void bpf_steer_release(void);

/*
 * Publishes worker's load (its open connections): a store into the
 * mmapped load map, no syscall; any thread, a no-op when steering is off.
 */
void bpf_steer_set_load(unsigned worker, uint32_t load);

/*
 * Drains worker (no new connections; it keeps the ones it has) or ends
 * its drain. 0, -ENODEV when steering is off, -EINVAL for no such worker,
 * -EBUSY when it would drain the last undrained worker (the program would
 * then leave every connection to the kernel's hash, which does not know
 * about drains: refusing says so instead of pretending), or -errno.
 */
int bpf_steer_drain(unsigned worker, bool drained);

/* Whether worker is drained (false when steering is off). */
bool bpf_steer_drained(unsigned worker);

/*
 * Whether steering runs; *detail (policy, workers, listeners) and *reason
 * (why not) are static strings, "" when there is nothing to say.
 */
bool bpf_steer_state(const char **detail, const char **reason);

/* Sums the per-CPU counters. 0, or -ENODEV when steering is off, or -errno. */
int bpf_steer_counters(struct bpf_steer_counters *out);

#endif
