/* SPDX-License-Identifier: MIT */
/*
 * XEP-0191 Blocking Command: the block list of an account, its iq protocol
 * (get, block, unblock, unblock all, pushes) and its enforcement on every
 * stanza kind.
 *
 * The list is kept in memory in struct account (account.h) while the
 * account has sessions, so enforcement on the routing path never waits for
 * storage; it is persisted in the blocklist table (storage_blocking.c)
 * and loaded with the account's state at the first bind.
 *
 * Items are normalized JIDs (jid_parse). A stanza from JID f is blocked by
 * an item when (XEP-0191 section 5, XEP-0016 section 2.1):
 *   item "l@d/r"  matches f == l@d/r only;
 *   item "l@d"    matches l@d and every l@d/r;
 *   item "d/r"    matches d/r only (not l@d/r: another entity);
 *   item "d"      matches d, every l@d, l@d/r and d/r.
 * A user's own account is never blocked (XEP-0191 section 4, note).
 *
 * Enforcement (XEP-0191 section 3.3):
 *  - outbound, from the user's client (blocking_outbound): refused with
 *    <not-acceptable/> and <blocked xmlns='urn:xmpp:blocking:errors'/>;
 *  - inbound, once per stanza for the account (blocking_inbound): presence
 *    is dropped silently; chat and normal messages and iq get/set are
 *    answered with <service-unavailable/> (the user looks offline); other
 *    types are dropped;
 *  - every delivery to a local session (blocking_filter_delivery): a
 *    stanza from a JID the recipient blocked, or from a local account that
 *    blocked the recipient, is dropped there too, whatever path brought
 *    it (presence fan-out, stored stanzas).
 */
#ifndef STANZAD_BLOCKING_H
#define STANZAD_BLOCKING_H

#include <stdbool.h>
#include <stddef.h>

#include "xml.h"

#define NS_BLOCKING		"urn:xmpp:blocking"
#define NS_BLOCKING_ERRORS	"urn:xmpp:blocking:errors"

struct blocklist;
struct conn;
struct iq_request;
struct jid;
struct session;
struct storage;
struct worker;

/* ---- The list (pure data structure; any thread, one at a time) ---- */

/* An empty list. NULL with errno = ENOMEM. */
struct blocklist *blocklist_new(void);
/* NULL is fine. */
void blocklist_free(struct blocklist *bl);
/*
 * Adds the normalized JID text jid[0..len) (no NUL needed; 1..JID_MAX-1
 * bytes). Returns 1 when added, 0 when it was present already, -EINVAL
 * for an empty or too long item, -ENOMEM.
 */
int blocklist_add(struct blocklist *bl, const char *jid, size_t len);
/* Removes an item. true when it was present. */
bool blocklist_remove(struct blocklist *bl, const char *jid, size_t len);
/* Removes every item (keeps the struct). */
void blocklist_clear(struct blocklist *bl);
/* Items in the list (NULL counts as empty). */
size_t blocklist_count(const struct blocklist *bl);
/* Whether this exact item is in the list. */
bool blocklist_contains(const struct blocklist *bl, const char *jid, size_t len);
/*
 * Whether an item of the list matches the normalized JID j by the rules
 * above (at most four lookups, none when the list is empty).
 */
bool blocklist_matches(const struct blocklist *bl, const struct jid *j);
/*
 * Iterates the items in no particular order: start with *pos = 0; returns
 * the next item (NUL-terminated, owned by the list) or NULL at the end.
 * The list must not change during an iteration.
 */
const char *blocklist_next(const struct blocklist *bl, size_t *pos);

/* ---- Storage (storage thread; storage_blocking.c) ---- */

/* The stored list of `user` into *out (NULL when empty). 0 or -errno. */
int blocking_load_sync(struct storage *st, const char *user, struct blocklist **out);
/* Stores one item (present already is fine). 0 or -errno. */
int blocking_store_add(struct storage *st, const char *user, const char *jid);
/* Deletes one item (absent is fine). 0 or -errno. */
int blocking_store_remove(struct storage *st, const char *user, const char *jid);
/* Deletes every item of the user. 0 or -errno. */
int blocking_store_clear(struct storage *st, const char *user);
/*
 * Whether the stored list of `user` blocks the normalized JID `from` (the
 * matching rules above), for code that handles stanzas to an account
 * whose state is not in memory (offline storage, subscription requests
 * processed on the storage thread). 1 blocked, 0 not, or -errno. The
 * caller exempts the account itself and its server.
 */
int blocking_store_blocks(struct storage *st, const char *user, const struct jid *from);

/* ---- Protocol (worker thread) ---- */

/*
 * iq handlers (IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT): <blocklist/> get, and
 * <block/> / <unblock/> set. A set is answered once the change is durable;
 * the requesting stream's input waits for it, so its next stanza already
 * sees the new list (RFC 6120 10.1 in-order processing).
 */
void blocking_get(struct iq_request *rq);
void blocking_set(struct iq_request *rq);

/*
 * Outbound enforcement for a stanza from c's session addressed to `to`
 * (called before routing). Returns true when the stanza was blocked and
 * handled (an error went back to the client, or an error/result stanza
 * was dropped); false to route it.
 */
bool blocking_outbound(struct conn *c, struct xml_node *st, const struct jid *to);

/*
 * Inbound enforcement for a stanza from `from` to the local account of
 * `to`, once per stanza before delivery. `src` is the sender's connection
 * when local (NULL: found by 'from'). Returns true when the stanza was
 * blocked and handled.
 */
bool blocking_inbound(struct worker *w, struct conn *src, struct xml_node *st,
		      const struct jid *from, const struct jid *to);

/*
 * Delivery filter for every stanza bound for session s (router_deliver).
 * Returns true when the stanza must not be delivered (handled here).
 */
bool blocking_filter_delivery(struct session *s, struct xml_node *st);

/*
 * At the sender's home, before a stanza the server routes on a local
 * account's behalf (src == NULL) is forwarded to the recipient's home:
 * false when the sender's own block list refuses `to`. The delivery at
 * the home does not read the sender's list for a forwarded stanza (it
 * belongs to another home, and a later change must not apply to what
 * was sent before it).
 */
bool blocking_sender_allows(struct worker *w, const struct jid *from, const struct jid *to);

/*
 * Whether the account of session s (its state loaded) blocks j. For other
 * modules that send on the user's behalf (presence broadcast, roster).
 */
bool blocking_account_blocks(const struct session *s, const struct jid *j);

#endif
