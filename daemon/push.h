/* SPDX-License-Identifier: MIT */
/*
 * XEP-0357 Push Notifications, the user's server side.
 *
 * A client registers an app server (a JID and a node there, with an
 * optional publish-options form holding its secret) with <enable/>, and
 * removes one, or every node of one app server, with <disable/>. The
 * registrations belong to the account (not to the session that made
 * them) and live in the store, so they survive restarts and reach a user
 * with no session at all. An account holds at most push_max_registrations.
 *
 * When a message worth a notification (what offline storage would keep:
 * chat or normal, not only chat states, no <no-store/>) is stored offline,
 * or is queued for a session that stream management keeps detached, every
 * registered app server gets a publish of a urn:xmpp:push:summary form
 * (message-count, last-message-sender; never the body) from the account's
 * bare JID. The registrations are read in the storage thread after the
 * offline write (same queue, so a woken device finds its messages), and
 * at most PUSH_MAX_PENDING reads are in flight: past it (a flood) the
 * notification is dropped, since the next message sends one anyway.
 * An app server that answers a notification with an error (other than
 * type 'wait') loses its registrations with that account.
 */
#ifndef STANZAD_PUSH_H
#define STANZAD_PUSH_H

#include <stdbool.h>

#include "iq.h"
#include "xml.h"

#define NS_PUSH			"urn:xmpp:push:0"
#define NS_PUSH_SUMMARY		"urn:xmpp:push:summary"
#define PUSH_REGISTRATIONS_MAX	100	/* hard ceiling of push_max_registrations */
#define PUSH_NODE_MAX		1023	/* bytes of a node name */
#define PUSH_OPTIONS_MAX	4096	/* bytes of a stored publish-options form */
#define PUSH_MAX_PENDING	1024	/* notification lookups in flight, per process */

struct jid;
struct session;
struct storage;
struct worker;

/*
 * An iq error from `from` to the bare JID `to` of a local account
 * (router.c): when it answers one of our notifications with an error
 * other than type 'wait', every registration of that app server with
 * the account is removed. Anything else is ignored.
 */
void push_iq_error(struct worker *w, const struct xml_node *iq, const struct jid *from,
		   const struct jid *to);

/* <enable/> and <disable/> (iq set to one's own account). */
void push_enable(struct iq_request *rq);
void push_disable(struct iq_request *rq);

/*
 * msg (to local account `user`, normalized localpart) was just queued
 * for offline storage: notify the account's app servers.
 */
void push_notify_offline(struct worker *w, const char *user, const struct xml_node *msg);

/* msg is being queued for s, which stream management keeps detached. */
void push_notify_detached(struct worker *w, const struct session *s, const struct xml_node *msg);

/* ---- Storage (storage thread; storage_push.c) ---- */

/*
 * Adds or replaces the registration (jid, node) of user with `options`
 * (serialized form, or NULL). -ENOSPC when the account already holds
 * `max` others, -ENOENT when it does not exist, -EIO.
 */
int push_db_enable(struct storage *st, const char *user, const char *jid, const char *node,
		   const char *options, uint32_t max);
/* Removes (jid, node), or every node of jid when node is NULL. Count removed or -EIO. */
int push_db_disable(struct storage *st, const char *user, const char *jid, const char *node);
/*
 * Calls fn for each registration of user (options NULL when none), at
 * most PUSH_REGISTRATIONS_MAX. 0, fn's negative return, or -EIO.
 */
int push_db_each(struct storage *st, const char *user,
		 int (*fn)(void *arg, const char *jid, const char *node, const char *options),
		 void *arg);

#endif
