/* SPDX-License-Identifier: MIT */
/*
 * The IoT tables (storage_iot.c): things registered in the thing
 * registry (XEP-0347) with their meta tags and owner, and the owners'
 * provisioning rules (XEP-0324). Synchronous: every call runs on the
 * storage thread (or at startup, before it owns the store).
 *
 * A thing is a bare JID, or a node behind it (node_id, source_id and
 * cache_type, XEP-0326; "" when absent). It is unclaimed (owner NULL),
 * claimed (owner set; public or private), possibly removed from the
 * registry by its owner (removed: kept for provisioning, never found),
 * or self-owned (owner = its own JID). Tag names are upper case; 'sig'
 * is the canonical text of the tag set (reg_tags_signature) that a claim
 * must match exactly.
 */
#ifndef STANZAD_IOT_STORE_H
#define STANZAD_IOT_STORE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "iot_rules.h"
#include "jid.h"
#include "registry_search.h"

struct storage;

#define IOT_NODE_MAX	255	/* bytes of a nodeId, sourceId or cacheType */

/* Which thing: a bare JID and a node triple ("" parts when absent). */
struct iot_thing_key {
	const char *jid;
	const char *node_id;
	const char *source_id;
	const char *cache_type;
};

/* A thing's row, copied out. */
struct iot_thing_info {
	int64_t id;
	char jid[JID_MAX];
	char node_id[IOT_NODE_MAX + 1];
	char source_id[IOT_NODE_MAX + 1];
	char cache_type[IOT_NODE_MAX + 1];
	char owner[JID_MAX];	/* "" when unclaimed */
	bool public_;
	bool removed;
	bool self_owned;
};

/*
 * A thing registers itself (tags replace all earlier ones). `user` is the
 * localpart when the JID is a local account (the row goes with the
 * account), else NULL. Returns 0 when stored; 1 when the thing is
 * claimed already (nothing changed; its owner copied into owner); -ENOSPC
 * when the JID has max_nodes registrations already; -EIO.
 */
int iot_db_register(struct storage *st, const struct iot_thing_key *k, const char *user,
		    const struct reg_tag *tags, size_t n, const char *sig, bool self_owned,
		    size_t max_nodes, char *owner, size_t owner_size, int64_t now);

/*
 * An owner claims the unclaimed thing whose tags have this signature.
 * 0 claimed now; 1 claimed by the same owner before (nothing changed);
 * -ENOENT (no such unclaimed thing); -EIO. out gets the thing.
 */
int iot_db_claim(struct storage *st, const char *sig, const char *claimant, bool public_,
		 struct iot_thing_info *out, int64_t now);

/* One thing's row. 0, -ENOENT or -EIO. */
int iot_db_thing_get(struct storage *st, const struct iot_thing_key *k,
		     struct iot_thing_info *out);

/*
 * Updates tags of a thing (by id): each given tag replaces the stored
 * one, an empty string value deletes it. The signature follows. -ENOSPC
 * when the thing would have more than max_tags tags (nothing changed).
 */
int iot_db_update_tags(struct storage *st, int64_t id, const struct reg_tag *tags, size_t n,
		       size_t max_tags, int64_t now);

/* Marks a claimed thing removed from the registry (by id). */
int iot_db_set_removed(struct storage *st, int64_t id, int64_t now);

/* Deletes a registration; with the JID-level row go the thing's rules. */
int iot_db_delete(struct storage *st, const struct iot_thing_info *t);

/*
 * Disowns a thing: unclaimed, public, not removed, all tags replaced by
 * KEY = key, and (JID level) its rules deleted.
 */
int iot_db_disown(struct storage *st, const struct iot_thing_info *t, const char *key,
		  int64_t now);

/*
 * Walks things with their tags in registration order: public claimed
 * things not removed (owner NULL), or the things of one owner. With
 * `has` (name and string value), only things with that string tag are
 * walked (an index lookup instead of a walk over every thing: searches
 * with a strEq use it). fn returns 0 to go on, 1 to stop, <0 for an
 * error (returned). The strings live until fn returns. 0 or -errno.
 */
struct iot_found {
	int64_t id;
	const char *jid, *node_id, *source_id, *cache_type, *owner;
	const struct reg_tag *tags;
	size_t ntags;
};
int iot_db_things(struct storage *st, const char *owner, const struct reg_tag *has,
		  int (*fn)(void *arg, const struct iot_found *t), void *arg);

/* ---- Provisioning ---- */

/*
 * Stores a rule of `thing`, replacing one with the same key (kind, range,
 * remote, nodes); r->id is set. -ENOSPC when the thing has max_rules
 * rules already and this one is new.
 */
int iot_db_rule_put(struct storage *st, const char *thing, const char *user,
		    struct iot_rule *r, size_t max_rules, int64_t now);

/* Deletes the thing's rules: all, or (nodes != NULL) those limited to exactly these nodes. */
int iot_db_rules_delete(struct storage *st, const char *thing, const char *nodes);

/* Records whether a clearCache waits for the thing to come online. */
int iot_db_clear_cache(struct storage *st, const char *thing, bool pending);

/*
 * Startup: calls thing_fn for every provisioned thing and rule_fn for
 * every rule (the callee owns the rule). A provisioned thing is a JID
 * claimed at JID level in the registry by someone else than itself, or a
 * device enrolled with an owner (`stanzactl device import`, the devices
 * table) that the registry does not say otherwise about. Either function
 * returning <0 stops with that error.
 */
int iot_db_load(struct storage *st,
		int (*thing_fn)(void *arg, const char *jid, const char *owner, bool clear_cache),
		int (*rule_fn)(void *arg, const char *thing, struct iot_rule *r), void *arg);

/*
 * The owner of one thing by the same definition, into owner ("" when it
 * is not provisioned), whether a clearCache waits for it, and (rule_fn)
 * its rules oldest first. 0 or -errno.
 */
int iot_db_thing_load(struct storage *st, const char *jid, char *owner, size_t owner_size,
		      bool *clear_cache,
		      int (*rule_fn)(void *arg, const char *thing, struct iot_rule *r), void *arg);

#endif
