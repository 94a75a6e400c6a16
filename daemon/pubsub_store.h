/* SPDX-License-Identifier: MIT */
/*
 * The store of the pubsub engine (storage_pubsub.c): nodes with
 * their configuration, affiliations, subscriptions and items, in the
 * tables of the pubsub migration (storage.c).
 *
 * Everything here runs on the storage thread (or at startup, before it
 * exists). The worker describes what to write as a list of mutations
 * (struct ps_mut) carried by a request; the storage thread applies them
 * in order inside the request's savepoint, so a request is all or
 * nothing and requests keep the order they were submitted in.
 */
#ifndef STANZAD_PUBSUB_STORE_H
#define STANZAD_PUBSUB_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"

struct storage;

enum ps_mut_kind {
	PS_MUT_NODE_PUT = 1,	/* node_id host user name config creator created */
	PS_MUT_NODE_CONFIG,	/* node_id config */
	PS_MUT_NODE_DEL,	/* node_id: its affiliations, subscriptions, items go too */
	PS_MUT_AFF_PUT,		/* node_id jid value (affiliation name; "none" deletes) */
	PS_MUT_SUB_PUT,		/* node_id jid subid value (state) options */
	PS_MUT_SUB_DEL,		/* node_id jid */
	PS_MUT_ITEM_PUT,	/* node_id item_id publisher payload created max_items (the store numbers it) */
	PS_MUT_ITEM_DEL,	/* node_id item_id [publisher]: -ENOENT when there is no such item */
	PS_MUT_ITEMS_PURGE,	/* node_id */
	PS_MUT_ITEMS_TRIM,	/* node_id max_items */
};

struct ps_mut {
	struct ps_mut *next;
	enum ps_mut_kind kind;
	uint64_t node_id;
	const char *host;
	const char *user;		/* PEP owner's username, NULL on the service */
	const char *name;
	const char *config;
	const char *creator;
	const char *jid;
	const char *value;
	const char *subid;
	const char *options;
	const char *item_id;
	const char *publisher;
	const char *payload;
	size_t payload_len;
	uint32_t max_items;		/* 0 = no trim */
	int64_t created;
};

/* Applies one mutation. 0, -ENOENT (ITEM_DEL of a missing item; a write to a gone node), -errno. */
int pubsub_store_apply(struct storage *st, const struct ps_mut *m);

/* An item read back (strings in the caller's arena). */
struct ps_item_row {
	struct ps_item_row *next;
	uint64_t node_id;
	const char *id;
	const char *publisher;
	const char *payload;		/* serialized payload, "" when none */
	size_t payload_len;
	int64_t created;
};

/*
 * Items of a node into *out, oldest first: the newest `max` (0 = all),
 * or those with the given ids (nids > 0) in stored order. ids_only
 * leaves payloads empty. Rows are allocated in `a`. 0 or -errno.
 */
int pubsub_store_items(struct storage *st, struct arena *a, uint64_t node_id, uint32_t max,
		       const char *const *ids, size_t nids, bool ids_only,
		       struct ps_item_row **out);

/* The newest item of a node, or *out = NULL. 0 or -errno. */
int pubsub_store_last_item(struct storage *st, struct arena *a, uint64_t node_id,
			   struct ps_item_row **out);

/*
 * The roster facts that presence and roster access models need, for an
 * owner whose roster is not in memory: whether `owner_user`'s roster
 * has contact_bare with subscription from|both, and its groups (joined,
 * in `a`; NULL when none or no item). 0 or -errno.
 */
int pubsub_store_roster_facts(struct storage *st, struct arena *a, const char *owner_user,
			      const char *contact_bare, bool *has_from, const char **groups);

/* What loading calls for each stored row (return nonzero to stop). */
struct ps_load_cb {
	int (*node)(void *arg, uint64_t id, const char *host, const char *user, const char *name,
		    const char *config, const char *creator, int64_t created);
	int (*affil)(void *arg, uint64_t node_id, const char *jid, const char *affil);
	int (*sub)(void *arg, uint64_t node_id, const char *jid, const char *subid,
		   const char *state, const char *options);
};

/*
 * Reads every node, affiliation and subscription (nodes first), then
 * reserves a block of node ids for this process: the ids it creates are
 * *id_block << 32 plus 1 up to 2^32 - 1, which no other process sharing
 * the database uses, now or later. 0, the first nonzero callback result,
 * or -errno.
 */
int pubsub_store_load(struct storage *st, const struct ps_load_cb *cb, void *arg,
		      uint64_t *id_block);

#endif
