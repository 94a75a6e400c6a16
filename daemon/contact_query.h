/* SPDX-License-Identifier: MIT */
/*
 * What the server may say about a local account to someone else, for the
 * answers it gives on the account's behalf (XEP-0030 account info,
 * XEP-0012 last activity): does the account exist, and may the asker see
 * its presence, i.e. does the account's roster have the asker with
 * subscription 'from' or 'both' (RFC 6121 section 2.1.2.5).
 *
 * The facts come from the store (one round trip also fetching the last
 * logout when asked for), so they are right whether or not the account
 * is online; the in-memory roster is used instead when one is loaded.
 */
#ifndef STANZAD_CONTACT_QUERY_H
#define STANZAD_CONTACT_QUERY_H

#include <stdbool.h>
#include <stdint.h>

#include "iq_async.h"
#include "last_activity.h"

struct session;
struct storage;

struct contact_facts {
	bool exists;			/* the account exists */
	bool subscribed;		/* its roster gives the asker its presence */
	bool online;			/* it has a session now (set on the worker) */
	bool has_last;			/* a logout is recorded (when asked for) */
	int64_t logout_at;		/* unix seconds */
	char status[LAST_STATUS_MAX + 1];
};

/*
 * Runs on the worker with the facts; s is the asker's session, op the
 * request to answer with iq_async_result()/iq_async_error().
 */
typedef void contact_answer_fn(const struct iq_async *op, struct session *s,
			       const struct contact_facts *f);

/*
 * Gathers the facts about rq->to (scope IQ_SCOPE_CONTACT) for rq->from
 * and calls answer, now or after a storage round trip. want_last also
 * fetches the last logout. ns/name: the payload element (static strings).
 */
void contact_query(struct iq_request *rq, bool want_last, const char *ns, const char *name,
		   contact_answer_fn *answer);

/*
 * The store (storage thread; storage_contact_query.c): fills f for
 * account `user` and the asker's bare JID. 0 or -EIO/-EBUSY.
 */
int contact_store_facts(struct storage *st, const char *user, const char *asker_bare,
			bool want_last, struct contact_facts *f);

#endif
