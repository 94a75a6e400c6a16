/* SPDX-License-Identifier: MIT */
/*
 * XEP-0115 Entity Capabilities of local clients, for PEP's filtered
 * notifications (XEP-0163 section 4.3, XEP-0060 section 9.2): a client
 * that advertises the feature "NODE+notify" wants notifications of NODE.
 *
 * Presence a client broadcasts may carry <c node ver hash/>. The 'ver'
 * names a set of disco#info features: known sets are cached by ver
 * (per worker, for the sessions at home there, at most
 * PEP_CAPS_CACHE_MAX each); an unknown ver is resolved
 * by a disco#info query to the client's full JID (node 'node#ver'), whose
 * answer is hashed again (XEP-0115 5.4, data forms included) and cached
 * only when the hash matches, so nobody can poison the cache for others.
 * An answer that does not match (or legacy caps without 'hash') serves
 * that one session only. Sessions sharing one unknown ver wait on one
 * query.
 *
 * Per session (struct pep_session, hung off struct session): its caps,
 * whether its initial presence was handled, and the serial of the last
 * notification it got (one copy per notification even when a contact is
 * both an explicit subscriber and a +notify contact).
 */
#ifndef STANZAD_PEP_H
#define STANZAD_PEP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xml.h"

#define PEP_CAPS_CACHE_MAX	4096	/* distinct verified 'ver' values kept */
#define PEP_CAPS_QUERIES_MAX	256	/* caps disco#info queries in flight */
#define PEP_CAPS_QUERY_TIMEOUT_MS 30000	/* an unanswered query is forgotten after this */
#define PEP_CAPS_NOTIFY_MAX	256	/* "+notify" features kept per caps set */
#define PEP_CAPS_FEATURES_MAX	1024	/* features (and identities, forms) of one answer */
#define PEP_CAPS_ID_PREFIX	"stanzad-caps-"

struct conn;
struct iq_request;
struct session;
struct worker;

struct pep_caps;

/* Per-session state (session->pep). */
struct pep_session {
	struct pep_caps *caps;		/* what the session wants (+notify), or NULL */
	bool available;			/* initial presence seen and not yet unavailable */
	bool pending_initial;		/* the pending ver came with initial presence */
	uint64_t delivered;		/* serial of the last notification it got */
	uint64_t pending_ms;		/* when the pending ver was asked */
	char pending[64];		/* ver being resolved for it ("" when none) */
	char node[256];			/* the caps 'node' of that ver */
};

/*
 * c2s: presence without 'to' from c's session, after the broadcast:
 * records its caps (querying an unknown ver) and, on initial presence
 * or when the interests grow, has the last items sent.
 */
void pep_presence(struct conn *c, struct xml_node *st);
/* c2s: the session ends: its state and pending query waits go. */
void pep_session_end(struct worker *w, struct session *s);
/*
 * iq.c: an iq result or error addressed to the server. True when it was
 * the answer to one of our caps queries (then it is consumed).
 */
bool pep_iq_response(struct iq_request *rq);

/* Whether the session's caps say NODE+notify. */
bool pep_session_wants(const struct session *s, const char *node, size_t len);
bool pep_caps_wants(const struct pep_caps *c, const char *node, size_t len);
/*
 * Marks the session as having got notification `serial`; false when it
 * had it already (or has no PEP state and serial dedup does not apply:
 * then true).
 */
bool pep_session_deliver_once(struct session *s, uint64_t serial);

/*
 * The XEP-0115 5.1 verification string of a disco#info <query/>
 * (identities, features, extended data forms), SHA-1, base64, into out
 * (>= 64 bytes). 0, -EINVAL (malformed per 5.4: duplicate identity or
 * feature, a form without FORM_TYPE, too many entries) or -ENOMEM.
 */
int pep_caps_ver(const struct xml_node *query, char *out, size_t out_size);

/* Frees the worker's caps cache and pending queries (shutdown, sessions gone). */
void pep_worker_destroy(struct worker *w);

/*
 * A private copy of c's "+notify" set (uncached, refs = 1) that another
 * worker may read and release: caps sets are per worker. NULL for NULL
 * or on ENOMEM.
 */
struct pep_caps *pep_caps_copy(const struct pep_caps *c);
void pep_caps_release(struct pep_caps *c);

#endif
