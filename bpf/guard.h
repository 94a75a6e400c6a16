/* SPDX-License-Identifier: MIT */
/*
 * What bpf/guard.bpf.c shares with its loader (daemon/bpf_guard.c) and
 * its unit test: map keys, values and counter slots. Include
 * <linux/types.h> (userspace) or vmlinux.h (BPF) first.
 *
 * A source is a 16-byte key: an IPv4 address as its v4-mapped IPv6 form
 * (::ffff:a.b.c.d), an IPv6 address as its /64 with the low 8 bytes zero,
 * the same unit as abuse_source_key() in daemon/abuse.c, so a ban there
 * and a ban here cover the same peers.
 */
#ifndef STANZAD_BPFPROG_GUARD_H
#define STANZAD_BPFPROG_GUARD_H

#define GUARD_MAX_PORTS		64	/* entries of the ports map */
#define GUARD_MAX_BUCKETS	65536	/* sources with a SYN bucket (LRU) */
#define GUARD_MAX_BANS		8192	/* banned sources (LRU; abuse.c tracks 4096) */

struct guard_key {
	__u8 addr[16];
};

/* The ban map's value: until when (bpf_ktime_get_ns(), CLOCK_MONOTONIC). */
struct guard_ban {
	__u64 until_ns;
};

/* A source's SYN bucket: GCRA, one time stamp (theoretical arrival time). */
struct guard_bucket {
	__u64 tat_ns;
};

/* Slots of the per-CPU counters array. */
enum guard_counter {
	GUARD_PASSED = 0,	/* SYNs to a guarded port let through */
	GUARD_RATE_DROPPED,	/* SYNs dropped: the source's bucket was empty */
	GUARD_BAN_DROPPED,	/* SYNs dropped: the source is banned */
	GUARD_NCOUNTERS,
};

#endif
