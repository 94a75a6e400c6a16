/* SPDX-License-Identifier: MIT */
/*
 * Offline messages (XEP-0160, with XEP-0203 delay stamps): messages of
 * type normal and chat for an account with no available resource of
 * non-negative priority are stored, and delivered (then deleted) when a
 * resource next sends available presence with priority >= 0.
 *
 * Storing is asynchronous: the message is kept serialized in the request
 * until the store answers. The storage thread checks that the account
 * exists (no: the sender gets service-unavailable, RFC 6121 8.5.1) and
 * that it holds fewer than max_offline_messages (else resource-constraint),
 * so the router never needs to know whether an account without sessions
 * exists.
 *
 * Order: the storage queue runs requests in submission order, so messages
 * from one sender are stored in the order sent. While a fetch for an
 * account is in flight, new bare-JID messages for it are stored too
 * (offline_holding) and fetched by a follow-up fetch, so they cannot
 * overtake the stored ones.
 */
#ifndef STANZAD_OFFLINE_H
#define STANZAD_OFFLINE_H

#include <stdbool.h>
#include <stdint.h>

#include "xml.h"

#define NS_DELAY		"urn:xmpp:delay"
#define OFFLINE_FEATURE		"msgoffline"	/* XEP-0160 section 5 disco feature */
#define OFFLINE_FETCH_BATCH	100		/* messages delivered per storage round trip */

struct account;
struct session;
struct storage;
struct worker;

/*
 * Whether a message to an unavailable account is worth storing: type
 * normal or chat, not only chat states (XEP-0085), no <no-store/> hint
 * (XEP-0334). Others are dropped silently by the caller.
 */
bool offline_wanted(const struct xml_node *msg);

/*
 * Stores msg for local account `user` (normalized localpart), async: a
 * copy is kept, msg may die when this returns. Errors (no such account,
 * quota full, storage failure) are answered to the sender (found by the
 * message's 'from') from the completion. Returns 0 once queued, or
 * -ENOMEM (nothing queued; the caller answers).
 */
int offline_store(struct worker *w, const struct xml_node *msg, const char *user);

/*
 * Session s (of an account with state loaded) just became available
 * with priority >= 0: its account's offline messages are fetched,
 * delivered to s and deleted.
 */
void offline_deliver(struct worker *w, struct session *s);

/* True while a fetch for the account is in flight (see ordering above). */
bool offline_holding(const struct account *a);

/* Stored messages of a user (storage thread, at account load). 0 or -errno. */
int offline_count_sync(struct storage *st, const char *user, uint32_t *out);

/* ---- Storage (storage thread; storage_offline.c) ---- */

/* 0, -ENOENT (no such account), -EDQUOT (max messages stored), -EIO. */
int offline_db_put(struct storage *st, const char *user, const char *stanza, size_t len,
		   uint32_t max);
/*
 * Takes up to `limit` oldest messages of user, in order: fn is called for
 * each, then they are deleted. *n is set to how many. 0 or -errno.
 */
int offline_db_take(struct storage *st, const char *user, uint32_t limit,
		    int (*fn)(void *arg, const char *stanza, size_t len), void *arg, uint32_t *n);

#endif
