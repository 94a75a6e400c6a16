/* SPDX-License-Identifier: MIT */
/*
 * What bpf/steer.bpf.c shares with its loader (daemon/bpf_steer.c) and
 * its unit test: sizes, map values, policies and counter slots. Include
 * <linux/types.h> (userspace) or vmlinux.h (BPF) first.
 *
 * A group is one listening address (a c2s or c2s TLS listener): the
 * SO_REUSEPORT group of its workers' sockets. The socket array holds
 * worker w's socket of group g at g * STEER_MAX_WORKERS + w.
 */
#ifndef STANZAD_BPFPROG_STEER_H
#define STANZAD_BPFPROG_STEER_H

#define STEER_MAX_WORKERS	64	/* SERVER_MAX_WORKERS */
#define STEER_MAX_GROUPS	16	/* c2s and c2s TLS listeners: 8 each */
#define STEER_MAX_SOCKS		(STEER_MAX_WORKERS * STEER_MAX_GROUPS)

enum steer_policy {
	STEER_LEAST_LOADED = 0,	/* the undrained worker with the lowest load */
	STEER_SOURCE_HASH,	/* by the source address (device affinity) */
};

/* The settings map's one value (the loader writes it before attaching). */
struct steer_config {
	__u32 policy;		/* enum steer_policy */
	__u32 nworkers;		/* workers 0..nworkers-1 exist */
	__u32 seed;		/* of the source hash: random per start */
	__u32 pad;
};

/* A group's value: which workers have a socket in it (bit w: worker w). */
struct steer_group {
	__u64 members;
};

/*
 * Slots of the per-CPU counters array: 0..STEER_MAX_WORKERS-1 count the
 * connections sent to that worker, then the ones left to the kernel.
 */
enum steer_counter {
	STEER_FALLBACK = STEER_MAX_WORKERS,	/* no worker selected: kernel hash */
	STEER_NCOUNTERS,
};

#endif
