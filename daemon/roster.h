/* SPDX-License-Identifier: MIT */
/*
 * Rosters (RFC 6121 section 2): the contact list of an account, kept in
 * memory in struct account (account.h) while the account has sessions,
 * persisted in roster_items / roster_versions / subscription_requests
 * (storage_roster.c).
 *
 * An item is a contact's bare JID with a handle (name), groups, and the
 * subscription state (subscription.h): To, From, Pending Out (ask) and the
 * pre-approval flag. Pending In is not an item property: an unanswered
 * inbound subscription request is kept as a request (with its stanza, to
 * deliver again at each login until answered, RFC 6121 3.1.3), whether
 * or not the contact is in the roster.
 *
 * Versioning (RFC 6121 2.6): every change bumps the roster's version and
 * stamps the item with it. Removed items stay as tombstones (deleted,
 * with the version of the removal), so a client holding version v gets
 * exactly the changes after v as pushes. Tombstones beyond
 * ROSTER_TOMBSTONES_MAX are pruned at load; a client older than the
 * pruning horizon gets the whole roster instead.
 *
 * Only the account's own resources read or change its roster (iq to its
 * bare JID or without 'to'); changes are pushed to every "interested"
 * resource (one that requested the roster in its session).
 */
#ifndef STANZAD_ROSTER_H
#define STANZAD_ROSTER_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define NS_ROSTER		"jabber:iq:roster"
#define NS_ROSTERVER_FEATURE	"urn:xmpp:features:rosterver"
#define NS_PREAPPROVAL_FEATURE	"urn:xmpp:features:pre-approval"
/* Stream features offered after authentication (RFC 6121 2.6.1, 3.4.1). */
#define ROSTER_STREAM_FEATURES	"<ver xmlns='" NS_ROSTERVER_FEATURE "'/>" \
				"<sub xmlns='" NS_PREAPPROVAL_FEATURE "'/>"

#define ROSTER_NAME_MAX		1023	/* bytes of an item's name (more: not-acceptable) */
#define ROSTER_GROUP_MAX	1023	/* bytes of one group name */
#define ROSTER_GROUPS_MAX	64	/* groups of one item */
#define ROSTER_TOMBSTONES_MAX	512	/* removed items remembered for versioned gets */
#define ROSTER_GROUP_SEP	'\x1f'	/* joins stored groups: XML cannot carry it */

struct account;
struct iq_request;
struct storage;
struct worker;
struct jid;
struct xml_node;

struct roster_item {
	struct roster_item *next;	/* all items, tombstones included */
	struct roster_item *hnext;	/* hash chain */
	uint64_t version;		/* roster version of the last change */
	uint8_t sub;			/* SUB_TO | SUB_FROM | SUB_PENDING_OUT */
	bool approved;			/* pre-approved (RFC 6121 3.4) */
	bool deleted;			/* tombstone: removed at `version` */
	char *name;			/* malloc'd, NULL when none */
	char *groups;			/* malloc'd, ROSTER_GROUP_SEP-joined, NULL when none */
	size_t jid_len;
	char jid[];			/* normalized bare JID */
};

/* An unanswered inbound subscription request. */
struct roster_request {
	struct roster_request *next;
	char *stanza;			/* the subscribe as received (serialized) */
	size_t stanza_len;
	size_t jid_len;
	char jid[];			/* the requester's bare JID */
};

struct roster {
	struct roster_item **buckets;	/* by jid; power-of-two count */
	size_t nbuckets;
	struct roster_item *items;	/* newest first */
	size_t count;			/* live items */
	size_t tombstones;
	uint64_t version;		/* current roster version */
	uint64_t horizon;		/* oldest version a client may diff from */
	struct roster_request *requests;
	size_t nrequests;
};

/* ---- The data structure (any thread, one at a time) ---- */

/* An empty roster, NULL with errno = ENOMEM. */
struct roster *roster_new(void);
/* NULL is fine. */
void roster_free(struct roster *r);

/* The item for a bare JID (tombstones too), or NULL. */
struct roster_item *roster_lookup(const struct roster *r, const char *jid, size_t len);

/*
 * The live item for bare_jid (a normalized bare JID, NUL-terminated) in
 * the account's roster, or NULL: for other modules that need the
 * subscription (it->sub & SUB_FROM: the contact may see the user's
 * presence; SUB_TO: the user sees the contact's). a may be NULL.
 */
const struct roster_item *roster_find(const struct account *a, const char *bare_jid);

/* Convenience checks on roster_find(). */
bool roster_contact_has_from(const struct account *a, const char *bare_jid);
bool roster_contact_has_to(const struct account *a, const char *bare_jid);

/*
 * The live item for jid, created (or revived from a tombstone, with no
 * name or groups) when absent. The caller sets fields and then commits
 * (roster_commit). NULL with errno = ENOMEM.
 */
struct roster_item *roster_upsert(struct roster *r, const char *jid, size_t len);

/*
 * Cluster mode: the account `bare` changed an item of its roster on
 * another node, which sent its roster push `iq` (cluster.c): the copy of
 * the roster here takes the item as the push shows it, and the
 * account's interested resources here get the push.
 */
void roster_pushed_elsewhere(struct worker *w, const struct jid *bare, struct xml_node *iq);

/* Stamps `it` with a new roster version (roster_commit does it for changes). */
void roster_touch(struct roster *r, struct roster_item *it);

/* Turns `it` into a tombstone (name, groups, state cleared); commit it next. */
void roster_remove(struct roster *r, struct roster_item *it);

/* Frees tombstones with version <= horizon and raises r->horizon to it. */
void roster_forget_tombstones(struct roster *r, uint64_t horizon);

/* Replaces name / groups (NULL or "" for none). 0 or -ENOMEM. */
int roster_item_set_name(struct roster_item *it, const char *name);
int roster_item_set_groups(struct roster_item *it, const char *joined);

/* The pending request from jid, or NULL. */
struct roster_request *roster_request_find(const struct roster *r, const char *jid, size_t len);
/*
 * Records a request (replacing the stanza of an existing one). 0 or
 * -ENOMEM; -ENOSPC when max requests are pending already.
 */
int roster_request_put(struct roster *r, const char *jid, size_t len, const char *stanza,
		       size_t stanza_len, size_t max);
/* Drops a request. true when there was one. */
bool roster_request_drop(struct roster *r, const char *jid, size_t len);

/*
 * The full subscription state (sub_bits, Pending In included) of jid and
 * its approval flag, from item and requests.
 */
uint8_t roster_state(const struct roster *r, const char *jid, size_t len, bool *approved);

/* ---- Storage (storage thread; storage_roster.c) ---- */

/* The stored row of one item, as the storage layer reads and writes it. */
struct roster_row {
	const char *jid;
	const char *name;		/* NULL: none */
	const char *groups;		/* "" or NULL: none */
	uint8_t sub;			/* SUB_TO | SUB_FROM | SUB_PENDING_OUT */
	bool approved;
	bool deleted;
	uint64_t version;
};

/*
 * Loads user's roster and pending requests into *out (a new roster),
 * pruning old tombstones. 0 or -errno.
 */
int roster_load_sync(struct storage *st, const char *user, struct roster **out);

/* Writes one item (all columns) and raises the roster version to row->version. */
int roster_db_put(struct storage *st, const char *user, const struct roster_row *row);

/*
 * The stored subscription state of one contact in user's roster, for
 * accounts that are not in memory: item bits and approval (zero when no
 * live item), Pending In from the requests, and whether the item exists.
 */
int roster_db_state(struct storage *st, const char *user, const char *jid, uint8_t *state,
		    bool *approved, bool *exists);
/*
 * Sets the subscription columns of one item (creating a nameless item or
 * reviving a tombstone when absent) under a new roster version. 0 or -errno.
 */
int roster_db_set_state(struct storage *st, const char *user, const char *jid, uint8_t sub,
			bool approved);
/* Stores (replacing) / deletes a pending request. 0 or -errno. */
int roster_db_request_put(struct storage *st, const char *user, const char *jid,
			  const char *stanza, size_t len);
int roster_db_request_delete(struct storage *st, const char *user, const char *jid);
/* 0 when the account exists, -ENOENT when not, or -errno. */
int roster_db_account_exists(struct storage *st, const char *user);
/* Live items and pending requests of a user (for limits off-line). 0 or -errno. */
int roster_db_counts(struct storage *st, const char *user, size_t *items, size_t *requests);

/* ---- Protocol (worker thread) ---- */

/* iq handlers: own roster get/set; foreign rosters are forbidden. */
void roster_get(struct iq_request *rq);
void roster_set(struct iq_request *rq);
void roster_foreign(struct iq_request *rq);

/*
 * Commits a change the caller made to item `it` of the account whose
 * bare JID is bare[0..bare_len): a new version, the row persisted, a push
 * to every interested resource. `it` may be a fresh tombstone.
 */
void roster_commit(struct worker *w, struct account *a, const char *bare, size_t bare_len,
		   struct roster_item *it);

/*
 * Records / drops a pending subscription request of the account in
 * memory and in the store. roster_keep_request returns 0, -ENOSPC
 * (too many pending) or -ENOMEM.
 */
int roster_keep_request(struct worker *w, struct account *a, const char *jid, size_t len,
			const char *stanza, size_t stanza_len);
void roster_drop_request(struct worker *w, struct account *a, const char *jid, size_t len);

#endif
