/* SPDX-License-Identifier: MIT */
/*
 * The publish-subscribe engine's data model (XEP-0060), shared by the
 * service at pubsub.DOMAIN and by every account's personal eventing
 * service (XEP-0163, PEP): hosts, nodes, their configuration,
 * affiliations and subscriptions, and the pure decisions made on them
 * (who may subscribe, retrieve, publish).
 *
 * A host is a pubsub service: the service's domain, or an account's bare
 * JID for PEP. Every node of every host is in memory for the life of the
 * process (loaded at startup, changed here first and written through to
 * the store); items are not: they live in the store, except the last
 * item of a node that does not persist items. Memory is therefore about
 * 200 bytes per node plus the node's name, its non-default strings and
 * ~60 bytes per affiliation or explicit subscription.
 *
 * Nodes are reference counted: a storage request in flight holds its
 * node, so a node deleted meanwhile stays valid (flagged `deleted`, out
 * of every index) until the request completes.
 *
 * Each worker owns a registry of its own (no locks): the PEP hosts of
 * the accounts at home there and, on worker 0, the service. Requests for
 * a host are routed to its worker, and a fan-out to sessions at home
 * elsewhere goes by message (pubsub.c). The storage thread never
 * touches it.
 */
#ifndef STANZAD_PUBSUB_NODE_H
#define STANZAD_PUBSUB_NODE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "arena.h"
#include "strbuf.h"
#include "xml.h"

#include "pubsub.h"

#define NS_XDATA		"jabber:x:data"

#define PS_NODE_NAME_MAX	1023	/* bytes of a NodeID (more: not-acceptable) */
#define PS_ITEM_ID_MAX		1023	/* bytes of an ItemID (more: not-acceptable) */
#define PS_TEXT_MAX		1023	/* bytes of a title, description or payload type */
#define PS_GROUPS_MAX		64	/* pubsub#roster_groups_allowed values */
#define PS_SUBID_LEN		16	/* hex digits of a generated SubID */
#define PS_FORM_FIELDS_MAX	64	/* fields of one submitted form */
/* Defaults for pubsub#max_items (the service may hold more with 'max'). */
#define PS_DEFAULT_MAX_ITEMS	10	/* nodes at pubsub.DOMAIN */
#define PS_DEFAULT_MAX_ITEMS_PEP 1	/* PEP nodes: the current state is what counts */

enum ps_access {
	PS_ACCESS_OPEN = 1,
	PS_ACCESS_PRESENCE,
	PS_ACCESS_ROSTER,
	PS_ACCESS_WHITELIST,
};

enum ps_publish_model {
	PS_PUBLISH_PUBLISHERS = 1,
	PS_PUBLISH_SUBSCRIBERS,
	PS_PUBLISH_OPEN,
};

enum ps_send_last {
	PS_SEND_LAST_NEVER = 1,
	PS_SEND_LAST_ON_SUB,
	PS_SEND_LAST_ON_SUB_AND_PRESENCE,
};

/* Ordered by privilege: comparisons like affil >= PS_AFFIL_MEMBER are meaningful. */
enum ps_affil {
	PS_AFFIL_NONE = 0,
	PS_AFFIL_OUTCAST,
	PS_AFFIL_MEMBER,
	PS_AFFIL_PUBLISH_ONLY,
	PS_AFFIL_PUBLISHER,
	PS_AFFIL_OWNER,
};

enum ps_sub_state {
	PS_SUB_NONE = 0,
	PS_SUB_PENDING,
	PS_SUB_UNCONFIGURED,
	PS_SUB_SUBSCRIBED,
};

/* A node's configuration (pubsub#node_config). Strings are malloc'd or NULL. */
struct ps_config {
	enum ps_access access;
	enum ps_publish_model publish_model;
	enum ps_send_last send_last;
	uint32_t max_items;		/* meaningful unless max_items_max */
	bool max_items_max;		/* 'max': the service's limit (max_items_per_node) */
	bool persist_items;
	bool deliver_payloads;
	bool deliver_notifications;
	bool notify_retract;
	bool notify_delete;
	bool notify_config;
	bool presence_based;		/* pubsub#presence_based_delivery (kept, see pubsub.c) */
	bool notification_normal;	/* pubsub#notification_type normal (else headline) */
	char *title;
	char *description;
	char *payload_type;		/* pubsub#type */
	char *groups;			/* roster_groups_allowed, joined by ROSTER_GROUP_SEP */
};

struct ps_affiliation {
	struct ps_affiliation *next;
	enum ps_affil affil;
	size_t jid_len;
	char jid[];			/* bare JID */
};

struct ps_subscription {
	struct ps_subscription *next;
	enum ps_sub_state state;
	bool deliver;			/* subscription option pubsub#deliver */
	char subid[PS_SUBID_LEN + 1];
	size_t bare_len;		/* jid[0..bare_len) is the bare JID */
	size_t jid_len;
	char jid[];			/* as subscribed: bare or full JID */
};

struct ps_host;

struct ps_node {
	struct ps_node *hnext;		/* index chain by (host, name) */
	struct ps_node *idnext;		/* index chain by id */
	struct ps_node *next;		/* the host's nodes */
	struct ps_host *host;
	uint64_t id;			/* the store's key; never reused */
	unsigned refs;			/* the index's one + requests in flight */
	bool deleted;			/* out of every index, freed with the last ref */
	struct ps_config cfg;
	struct ps_affiliation *affils;
	struct ps_subscription *subs;
	unsigned nsubs;
	int64_t created;		/* unix seconds */
	char *creator;			/* bare JID, malloc'd */
	/* Last item of a node that does not persist items (malloc'd, or NULL). */
	char *last_id;
	char *last_payload;		/* serialized standalone, may be "" */
	size_t last_payload_len;
	uint32_t hash;
	size_t name_len;
	char name[];
};

struct ps_host {
	struct ps_host *hnext;
	struct ps_node *nodes;
	unsigned nnodes;
	bool pep;			/* an account's PEP service (jid is its bare JID) */
	uint32_t hash;
	size_t user_len;		/* PEP: bytes of the localpart at the start of jid */
	size_t jid_len;
	char jid[];
};

/* The limits the operator configured (config.c), in the model's terms. */
struct ps_limits {
	uint32_t max_nodes;		/* max_pubsub_nodes: nodes one account may own, per host */
	uint32_t max_items;		/* max_items_per_node: what 'max' means */
	uint32_t max_item_bytes;	/* max_pubsub_item_bytes: one serialized payload */
};

/* ---- The registries (one per worker) ---- */

/*
 * Sets up n empty registries, one per worker (the PEP hosts of the
 * accounts at home there; the service's on worker 0), and makes the
 * calling thread use the first. 0 or -ENOMEM.
 */
int ps_registry_init(unsigned n);
/* Frees every host and node (nodes still referenced are freed too: shutdown only). */
void ps_registry_free(void);
/*
 * The calling thread works on registry k from now on: every function
 * below reads and changes that one only (a worker's thread, its own;
 * the loader, each in turn).
 */
void ps_registry_use(unsigned k);
unsigned ps_registry_count(void);
/* Calls fn for every host of the registry in use (fn may empty it, not free it). */
void ps_host_each(void (*fn)(struct ps_host *h, void *arg), void *arg);

/* The host for a JID string (bare JID or service domain), or NULL. */
struct ps_host *ps_host_find(const char *jid, size_t len);
/* The host, created when missing. pep: user_len = localpart bytes. NULL on ENOMEM. */
struct ps_host *ps_host_get(const char *jid, size_t len, bool pep, size_t user_len);

/* A live node of a host by name, or NULL. */
struct ps_node *ps_node_find(const struct ps_host *h, const char *name, size_t len);
/* A live node by id, or NULL. */
struct ps_node *ps_node_by_id(uint64_t id);
/*
 * A new node in h with the given configuration (taken over: cfg is zeroed)
 * and creator. id 0 = the next free id. NULL on ENOMEM (cfg then freed).
 */
struct ps_node *ps_node_add(struct ps_host *h, const char *name, size_t len, uint64_t id,
			    struct ps_config *cfg, const char *creator, int64_t created);
/* Takes the node out of every index; it is freed when its last ref goes. */
void ps_node_remove(struct ps_node *n);
void ps_node_ref(struct ps_node *n);
void ps_node_unref(struct ps_node *n);
/* Nodes of host h owned by bare JID `jid` (for max_pubsub_nodes). */
unsigned ps_host_count_owned(const struct ps_host *h, const char *jid, size_t len);

/*
 * Node ids are process-wide: unique across the registries, whichever
 * thread takes them. After loading, new ids come from the block the
 * store reserved for this process (pubsub_store_load), so that several
 * processes sharing one database never create two nodes with one id;
 * ps_node_add fails once the block (2^32 - 1 ids) is used up.
 */
void ps_node_ids_reserved(uint64_t block);

/* ---- Affiliations and subscriptions of a node ---- */

/* The affiliation of a bare JID (PS_AFFIL_NONE when none). */
enum ps_affil ps_affil_get(const struct ps_node *n, const char *bare, size_t len);
/* Sets (PS_AFFIL_NONE removes). 0 or -ENOMEM. */
int ps_affil_set(struct ps_node *n, const char *bare, size_t len, enum ps_affil a);
/* Owners of the node. */
unsigned ps_owner_count(const struct ps_node *n);
/* The first owner's bare JID, or NULL: whose roster presence/roster models mean. */
const struct ps_affiliation *ps_first_owner(const struct ps_node *n);

/* The subscription of exactly this JID, or NULL (one per JID: no multi-subscribe). */
struct ps_subscription *ps_sub_find(const struct ps_node *n, const char *jid, size_t len);
/* Whether any subscription's JID has this bare JID (full-JID subscriptions included). */
bool ps_sub_any_for_bare(const struct ps_node *n, const char *bare, size_t len);
/*
 * Adds (or returns the existing) subscription for jid. subid NULL = a new
 * random one. NULL on ENOMEM.
 */
struct ps_subscription *ps_sub_add(struct ps_node *n, const char *jid, size_t len,
				   enum ps_sub_state state, const char *subid);
/* Removes one subscription. */
void ps_sub_remove(struct ps_node *n, struct ps_subscription *s);

/* Random lowercase hex of `digits` digits into out (digits + 1 bytes). */
void ps_random_hex(char *out, size_t digits);

/* ---- Names ---- */

const char *ps_access_name(enum ps_access a);
const char *ps_publish_model_name(enum ps_publish_model m);
const char *ps_send_last_name(enum ps_send_last s);
const char *ps_affil_name(enum ps_affil a);
const char *ps_sub_state_name(enum ps_sub_state s);
/* Parse the names above; 0 (not one of them) when unknown. */
enum ps_access ps_access_parse(const char *s);
enum ps_affil ps_affil_parse(const char *s);	/* "none" -> PS_AFFIL_NONE, unknown -> -1 */
enum ps_sub_state ps_sub_state_parse(const char *s);	/* unknown -> -1 */

/* ---- Configuration ---- */

/* The defaults of a new node on a PEP service or on pubsub.DOMAIN. */
void ps_config_default(struct ps_config *c, bool pep);
void ps_config_free(struct ps_config *c);
/* Deep copy. 0 or -ENOMEM (dst then empty). */
int ps_config_copy(struct ps_config *dst, const struct ps_config *src);
/* The effective item limit: max_items, or the service's limit for 'max'. */
uint32_t ps_config_max_items(const struct ps_config *c, const struct ps_limits *lim);

/*
 * The outcome of reading a submitted form. On failure, `cond` is the
 * stanza error condition and `app` (may be NULL) the pubsub#errors
 * element to add, as XEP-0060 names them.
 */
struct ps_form_error {
	const char *cond;
	const char *app;
	const char *text;
};

/*
 * Applies a node_config form (type 'submit'; a 'cancel' form changes
 * nothing) to c. Unknown fields are ignored unless `strict` (XEP-0004
 * lets a client send back the whole form it got, fields we do not know
 * included); strict is for publish-options on auto-create, where an
 * unknown field is a precondition that cannot hold (conflict +
 * precondition-not-met). Known fields with a bad value fail with
 * not-acceptable (unsupported-access-model for an access model we lack).
 * Nothing is changed on failure. 0, -EINVAL (err filled) or -ENOMEM.
 */
int ps_config_apply_form(struct ps_config *c, const struct xml_node *x,
			 const struct ps_limits *lim, bool strict, struct ps_form_error *err);

/*
 * XEP-0060 7.1.5: checks the publish-options form against the node's
 * configuration. 0 when every precondition holds; -EINVAL with err =
 * conflict + precondition-not-met when one does not, or bad-request for
 * an unknown field or a form of another type; -ENOMEM.
 */
int ps_config_check_preconditions(const struct ps_config *c, const struct xml_node *x,
				  const struct ps_limits *lim, struct ps_form_error *err);

/*
 * The configuration as a data form (type "form" for configure and
 * default, "result" for notifications), FORM_TYPE node_config. NULL on ENOMEM.
 */
struct xml_node *ps_config_form(struct arena *a, const struct ps_config *c, const char *type,
				const struct ps_limits *lim);

/*
 * The store's text form of a configuration (key=value lines), and back.
 * ps_config_parse starts from the defaults and ignores unknown keys.
 * 0, -EINVAL (malformed line) or -ENOMEM.
 */
void ps_config_serialize(struct strbuf *out, const struct ps_config *c);
int ps_config_parse(struct ps_config *c, bool pep, const char *text, size_t len);

/* ---- Forms (XEP-0004) ---- */

/* The <x xmlns='jabber:x:data'/> child of parent, or NULL. */
const struct xml_node *ps_form_get(const struct xml_node *parent);
/* The form's FORM_TYPE value, or NULL. */
const char *ps_form_type(struct arena *a, const struct xml_node *x);
/* Boolean field values (XEP-0004: 1/true, 0/false). 0 or -EINVAL. */
int ps_parse_bool(const char *v, bool *out);

/* ---- Access decisions (XEP-0060 4.5, 6.1.3, 6.5, 7.1.3) ---- */

/*
 * What the service knows about a requester. has_from / in_groups are
 * the node owner's roster facts (contact with subscription from|both;
 * in one of the allowed groups): only consulted when the model needs
 * them (ps_access_needs_roster).
 */
struct ps_requester {
	enum ps_affil affil;		/* of the requester's bare JID */
	bool is_owner_account;		/* PEP: the requester is the account itself */
	bool subscribed;		/* holds a subscription in state subscribed */
	bool has_from;
	bool in_groups;
};

enum ps_verdict {
	PS_ALLOW = 0,
	PS_DENY_OUTCAST,		/* forbidden */
	PS_DENY_PRESENCE,		/* not-authorized + presence-subscription-required */
	PS_DENY_ROSTER,			/* not-authorized + not-in-roster-group */
	PS_DENY_WHITELIST,		/* not-allowed + closed-node */
	PS_DENY_FORBIDDEN,		/* forbidden */
};

/* Whether subscribing / retrieving items is allowed by the access model. */
enum ps_verdict ps_access_check(const struct ps_config *c, const struct ps_requester *r);
/* Whether the decision above needs the owner's roster (has_from / in_groups). */
bool ps_access_needs_roster(const struct ps_config *c, const struct ps_requester *r);
/* Whether publishing is allowed by the publish model (forbidden when not). */
enum ps_verdict ps_publish_check(const struct ps_config *c, const struct ps_requester *r);
/* The stanza condition and pubsub#errors element of a denial. */
void ps_verdict_error(enum ps_verdict v, const char **cond, const char **app);

/*
 * Whether a contact whose roster groups are `contact_groups` (joined by
 * ROSTER_GROUP_SEP, may be NULL) is in one of `allowed` (same form).
 */
bool ps_groups_match(const char *allowed, const char *contact_groups);
/* Whether every group of `sub` is one of `super` (both joined; NULL = none). */
bool ps_groups_match_all(const char *sub, const char *super);

#endif
