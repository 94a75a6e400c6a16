/* SPDX-License-Identifier: GPL-2.0 OR MIT */
/*
 * The stanza offload module's private declarations: per-namespace state,
 * owners (open files of the device) and their registered sockets.
 *
 * Locking, outermost first:
 *   so_net.lock	the namespace's owner list, its configuration writes
 *			and revocation (SET_CONFIG), the socket dump
 *   so_owner.lock	one owner's registrations and requests; a fan-out
 *			holds it while it writes, so a socket cannot be
 *			unregistered under it
 * Counters are atomics and need no lock; the configuration is read with
 * READ_ONCE by requests.
 */
#ifndef STANZA_OFFLOAD_INTERNAL_H
#define STANZA_OFFLOAD_INTERNAL_H

#include <linux/atomic.h>
#include <linux/list.h>
#include <linux/mutex.h>
#include <linux/net.h>
#include <linux/xarray.h>
#include <net/net_namespace.h>
#include <net/netns/generic.h>

#include <stanzad/uapi/stanza_offload.h>

/* The configuration of one namespace (GET_CONFIG / SET_CONFIG). */
struct so_config {
	u32 enabled;
	u32 max_sockets_per_request;
	u32 max_payload;
	u32 max_registered;
};

/* Counters of one namespace (GET_STATS); see the STAT_* attributes. */
struct so_stats {
	atomic64_t requests;
	atomic64_t rejected;
	atomic64_t targets;
	atomic64_t complete;
	atomic64_t partial;
	atomic64_t blocked;
	atomic64_t errors;
	atomic64_t bytes;
	atomic64_t registrations;
};

/* Per network namespace (pernet_operations, so_net_id). */
struct so_net {
	struct mutex lock;		/* owners, gen, configuration writes */
	struct list_head owners;	/* struct so_owner.node */
	unsigned int gen;		/* bumped when owners change (dump consistency) */
	u32 nowners;
	atomic_t registered;		/* sockets registered by all owners */
	struct so_config cfg;
	struct so_stats stats;
};

/* One open file of the device. */
struct so_owner {
	struct list_head node;		/* in so_net.owners, under so_net.lock */
	struct net *net;		/* held: the namespace it was opened in */
	struct so_net *sn;
	struct mutex lock;		/* socks, nsocks, revoked; held during requests */
	struct xarray socks;		/* id -> struct so_sock */
	u32 next_id;			/* xa_alloc_cyclic cursor */
	u32 nsocks;
	bool revoked;			/* disabled by SET_CONFIG: only INFO works */
	pid_t pid;			/* tgid of the opener, for the dump */
};

/* One registered socket. */
struct so_sock {
	struct socket *sock;		/* holds a reference on its file */
	u32 id;
	u64 bytes;			/* counters for the dump, under so_owner.lock */
	u64 sends;
	u64 partial;
};

extern unsigned int so_net_id;

static inline struct so_net *so_net(const struct net *net)
{
	return net_generic(net, so_net_id);
}

/* so_dev.c: the character device (data plane). */
int so_dev_init(void);
void so_dev_exit(void);
void so_owner_revoke(struct so_owner *o);
bool so_sock_is_ktls(struct socket *sock);

/* so_genl.c: the generic netlink family (control plane). */
int so_genl_init(void);
void so_genl_exit(void);

#endif /* STANZA_OFFLOAD_INTERNAL_H */
