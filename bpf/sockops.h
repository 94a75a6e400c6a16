/* SPDX-License-Identifier: MIT */
/*
 * What bpf/sockops.bpf.c shares with its loader (daemon/bpf_sockops.c).
 * Include <linux/types.h> (userspace) or vmlinux.h (BPF) first.
 */
#ifndef STANZAD_BPFPROG_SOCKOPS_H
#define STANZAD_BPFPROG_SOCKOPS_H

#define SOCKOPS_MAX_PORTS	64	/* entries of the ports map */

/* Slots of the per-CPU counters array. */
enum sockops_counter {
	SOCKOPS_TUNED = 0,	/* accepted connections the settings were applied to */
	SOCKOPS_FAILED,		/* ... where a bpf_setsockopt() failed */
	SOCKOPS_NCOUNTERS,
};

#endif
