/* SPDX-License-Identifier: MIT */
/*
 * Publish-Subscribe (XEP-0060) at pubsub.DOMAIN and Personal Eventing
 * (XEP-0163, PEP) at every account's bare JID: one engine for both.
 *
 * The data model (hosts, nodes, configuration, affiliations,
 * subscriptions, access decisions) is pubsub_node.c; the store is
 * storage_pubsub.c; XEP-0115 capabilities of local clients, which
 * PEP uses to filter notifications by "+notify" interest, are pep.c.
 * This file is the protocol: iq handling, notifications, disco.
 *
 * Every change is applied to the in-memory model at once (so the next
 * request sees it) and written to the store by a request whose
 * completion sends the iq result: an answered request is durable. A
 * publish is notified after the item is stored, serialized once and
 * copied to each recipient with its own 'to' (fanout.h).
 *
 * Items stay in the store; retrieval, the last item for a new
 * subscriber and the last items a contact gets when it comes online are
 * read back by storage requests.
 *
 * Account homes: an account's PEP service runs on its home worker, the
 * service on worker 0. Notifications and last items for sessions at home
 * on another worker go there as one message per worker (the stanza
 * serialized once, the recipients), where their caps and block lists are
 * applied as for local ones; a session's interest in its contacts' nodes
 * is served by the contacts' homes; answers to requesters elsewhere are
 * routed.
 */
#ifndef STANZAD_PUBSUB_H
#define STANZAD_PUBSUB_H

#include <stdbool.h>
#include <stddef.h>

#include "xml.h"

#define NS_PUBSUB		"http://jabber.org/protocol/pubsub"
#define NS_PUBSUB_OWNER		NS_PUBSUB "#owner"
#define NS_PUBSUB_EVENT		NS_PUBSUB "#event"
#define NS_PUBSUB_ERRORS	NS_PUBSUB "#errors"
#define NS_PUBSUB_NODE_CONFIG	NS_PUBSUB "#node_config"
#define NS_PUBSUB_PUBLISH_OPTIONS NS_PUBSUB "#publish-options"
#define NS_PUBSUB_SUB_OPTIONS	NS_PUBSUB "#subscribe_options"
#define NS_PUBSUB_META_DATA	NS_PUBSUB "#meta-data"

#define PUBSUB_LABEL		"pubsub"	/* the service is pubsub.DOMAIN */
/* Storage-backed pubsub requests one connection may have in flight (more: resource-constraint). */
#define PUBSUB_MAX_INFLIGHT	64

struct config;
struct conn;
struct iq_request;
struct jid;
struct session;
struct storage;
struct worker;
struct pep_caps;

struct server;

/*
 * Startup (before the storage thread owns the store and before the
 * workers run): the registries and every stored node, affiliation and
 * subscription, each account's nodes in the registry of its home worker.
 * 0 or -errno (logged).
 */
int pubsub_init(struct storage *st, const struct server *srv);
/* On the worker's thread: its registry is the one this thread uses (worker.c). */
void pubsub_worker_init(struct worker *w);
/* Frees the worker's caps state (pep.c), with its sessions gone. */
void pubsub_worker_destroy(struct worker *w);
/* Frees everything (after the workers stopped). */
void pubsub_shutdown(void);
/*
 * Cluster mode, worker 0, this node took the services' lease: the nodes
 * of pubsub.DOMAIN (configuration, affiliations, subscriptions) are
 * loaded again from st (a store of the caller's), replacing those in
 * worker 0's registry; PEP nodes stay as they are. 0 or -errno.
 */
int pubsub_service_reload(struct storage *st, const struct server *srv);

/* service.c: whether pubsub.DOMAIN runs (config key pubsub), and its stanzas. */
bool pubsub_enabled(const struct config *cfg);
void pubsub_service_route(struct worker *w, struct conn *src, struct xml_node *st,
			  const struct jid *from, const struct jid *to);

/*
 * iq.c: PEP, the pubsub and pubsub#owner payloads to an account's bare
 * JID (IQ_SCOPE_ACCOUNT: one's own; IQ_SCOPE_CONTACT: someone else's).
 */
void pep_iq_get(struct iq_request *rq);
void pep_iq_set(struct iq_request *rq);

/*
 * caps.c: the pubsub features a disco#info answer lists for an iq scope
 * (PEP on the server and on accounts). Returns the count (<= cap).
 */
size_t pubsub_disco_features(unsigned scope, const char **out, size_t cap);

/*
 * disco.c: disco#info with a node / disco#items of an account, answered
 * for its PEP service. True when handled (an answer was sent).
 */
bool pubsub_pep_disco_info(struct iq_request *rq);
bool pubsub_pep_disco_items(struct iq_request *rq);

/*
 * register.c (and whatever else removes accounts): `user`'s PEP nodes are
 * forgotten (the store dropped them with the account) and its
 * affiliations and subscriptions on pubsub.DOMAIN and on other accounts'
 * PEP nodes are removed. Any worker may call it: each registry is
 * cleaned on its own worker.
 */
void pubsub_account_removed(struct worker *w, const char *user);

/*
 * pep.c: session s (available) now wants notifications of the nodes in
 * its capabilities that `before` (the previous ones, or NULL after
 * initial presence) did not want: the last item of each such node it may
 * see is sent (send_last_published_item = on_sub_and_presence).
 */
void pubsub_pep_interest(struct worker *w, struct session *s, const struct pep_caps *before);

/*
 * Work on an account's behalf, for modules that mirror a PEP node
 * elsewhere (bookmarks_compat.c, avatar_compat.c). `user` is a
 * normalized localpart.
 */
#define NS_BOOKMARKS2		"urn:xmpp:bookmarks:1"

struct ps_item_row;

/* One item of pubsub_pep_replace: its ItemID and payload element. */
struct pubsub_pep_item {
	const char *id;
	const struct xml_node *payload;
};

/*
 * Makes the items of `user`'s PEP node `node` exactly items[0..n), as if
 * the owner had published and retracted them: new and changed items are
 * stored and notified like a client's publish, items no longer listed
 * retracted (notified when the node notifies retractions), unchanged
 * ones left alone. A missing node is created for the owner: with
 * whitelist access and max_items 'max' (XEP-0223) when `whitelist`, else
 * with the PEP defaults (presence access). The payloads are copied at once;
 * the work completes later (failures are logged). 0, or -EINVAL (bad
 * name, too many items), -E2BIG (an ItemID or payload over the limits),
 * -ENOMEM.
 */
int pubsub_pep_replace(struct worker *w, const char *user, const char *node,
		       const struct pubsub_pep_item *items, size_t n, bool whitelist);

/*
 * Reads every item of `user`'s PEP node `node` (oldest first): cb runs
 * later on this worker with a copy of ctx[0..ctx_len) (at most
 * PUBSUB_PEP_CTX_MAX bytes, so nothing needs freeing), err 0 or -errno
 * and the rows (NULL when the node does not exist or keeps no items);
 * rows live until cb returns. cb is not called at shutdown. 0, -EINVAL
 * or -ENOMEM (cb not called).
 */
#define PUBSUB_PEP_CTX_MAX	128
typedef void pubsub_pep_items_cb(struct worker *w, const char *user, const void *ctx, int err,
				 const struct ps_item_row *rows);
int pubsub_pep_read(struct worker *w, const char *user, const char *node,
		    pubsub_pep_items_cb *cb, const void *ctx, size_t ctx_len);

#endif
