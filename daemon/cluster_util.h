/* SPDX-License-Identifier: MIT */
/*
 * The pure parts of cluster mode (cluster.c): the Redis URI, node names,
 * the registry's value text, and the session table that holds this
 * node's own registrations and the replica of the other nodes' ones.
 * Nothing here talks to Redis or touches a worker: unit-tested alone.
 */
#ifndef STANZAD_CLUSTER_UTIL_H
#define STANZAD_CLUSTER_UTIL_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define CLUSTER_NODE_NAME_MAX	64	/* [A-Za-z0-9._-]{1,64} */
#define CLUSTER_HOST_MAX	255
#define CLUSTER_PASSWORD_MAX	255
#define CLUSTER_URI_MAX		(CLUSTER_HOST_MAX + CLUSTER_PASSWORD_MAX + 32)

/* redis://[:PASSWORD@]HOST:PORT[/DB] */
struct cluster_uri {
	char host[CLUSTER_HOST_MAX + 1];	/* a name, IPv4, or IPv6 without brackets */
	char password[CLUSTER_PASSWORD_MAX + 1];	/* "" when none (cluster_uri_wipe) */
	uint16_t port;
	unsigned db;
};

/*
 * Parses text into *u. The port is required (the packaged server's 6379
 * is one explicit word away). 0 or -EINVAL.
 */
int cluster_uri_parse(struct cluster_uri *u, const char *text);

/*
 * The URI as it may be shown and logged: the password replaced by "***".
 * Returns buf.
 */
char *cluster_uri_masked(const struct cluster_uri *u, char *buf, size_t size);

/* Overwrites the password (before the URI is freed or forgotten). */
void cluster_uri_wipe(struct cluster_uri *u);

/* Whether name is a valid node name: [A-Za-z0-9._-]{1,64}. */
bool cluster_node_name_valid(const char *name);

/*
 * One resource in the registry: where its session is and what routing
 * needs of it. Text form, the value of the hash PREFIX sess:BARE:
 * "NODE WORKER PRIORITY AVAILABLE FLAGS", e.g. "n1 0 5 1 3".
 */
struct cluster_sess {
	char node[CLUSTER_NODE_NAME_MAX + 1];
	unsigned worker;
	int priority;		/* -128..127 */
	bool available;
	unsigned flags;		/* CLUSTER_SESS_*: what the account's other nodes need to know */
	/*
	 * Not in the text: our own entry was written but its event has not
	 * come back on the channel yet (cluster.c, resource conflicts).
	 */
	bool unconfirmed;
};

#define CLUSTER_SESS_CARBONS	1u	/* XEP-0280 enabled: gets the account's carbons */
#define CLUSTER_SESS_ROSTER	2u	/* requested the roster: gets roster pushes */
#define CLUSTER_SESS_FLAGS_MAX	255u

#define CLUSTER_SESS_TEXT_MAX	(CLUSTER_NODE_NAME_MAX + 32)

/* Writes v's text form into buf. Length, or -ENOSPC / -EINVAL (bad node name). */
int cluster_sess_encode(const struct cluster_sess *v, char *buf, size_t size);
/* Parses the text form (len bytes, not necessarily NUL-terminated). 0 or -EINVAL. */
int cluster_sess_decode(struct cluster_sess *v, const char *text, size_t len);

/*
 * A table of sessions by bare JID: each account's resources with their
 * registry value. Not locked: its owner decides (cluster.c takes a lock
 * for the replica, which every worker reads).
 */
struct cluster_table;

struct cluster_entry {
	const char *resource;
	struct cluster_sess v;
};

struct cluster_table *cluster_table_new(void);
void cluster_table_free(struct cluster_table *t);

/*
 * Sets the value of full JID full (bare/resource, normalized). 0,
 * -EINVAL (no resource), -ENOMEM.
 */
int cluster_table_set(struct cluster_table *t, const char *full, const struct cluster_sess *v);
/*
 * Removes full JID full; when node is not NULL, only if its entry is that
 * node's (a resource may have moved to another node meanwhile). Returns
 * whether something was removed.
 */
bool cluster_table_del(struct cluster_table *t, const char *full, const char *node);
/* Removes every entry of node. Returns how many. */
size_t cluster_table_drop_node(struct cluster_table *t, const char *node);
/* Removes everything. */
void cluster_table_clear(struct cluster_table *t);

/*
 * Copies up to max entries of bare JID bare into out (resource pointers
 * valid until the table changes: copy under the owner's lock). Returns the
 * number of entries the account has (may exceed max).
 */
size_t cluster_table_find(const struct cluster_table *t, const char *bare,
			  struct cluster_entry *out, size_t max);

/* The value of full JID full (bare/resource), to change in place; NULL when absent. */
struct cluster_sess *cluster_table_get(struct cluster_table *t, const char *full);

/* Entries in the table, and those of one node. */
size_t cluster_table_size(const struct cluster_table *t);
size_t cluster_table_count_node(const struct cluster_table *t, const char *node);

/* Calls fn for every entry, with its bare JID. fn must not change the table. */
void cluster_table_each(const struct cluster_table *t,
			void (*fn)(void *arg, const char *bare, const struct cluster_entry *e),
			void *arg);

#endif
