/* SPDX-License-Identifier: MIT */
/*
 * Presence (RFC 6121 sections 3 and 4): availability broadcasts, probes,
 * directed presence, and the processing of subscription stanzas on both
 * sides (the state machine is subscription.c; rosters are roster.c).
 *
 * Per session, the last available presence is kept serialized without
 * 'to' (struct presence_state): it answers probes and new subscriptions
 * without a tree. A broadcast is serialized once (fanout.h) and each
 * recipient gets a copy with its own 'to' spliced in.
 *
 * Subscription stanzas for an account without sessions (its roster is not
 * in memory) are processed on the storage thread against the stored
 * roster; a completion that finds the account loaded meanwhile replays
 * the event in memory (the transitions are idempotent, so a replay on
 * state that already has the change does nothing).
 *
 * All parties are local until federation: subscription stanzas to other
 * domains are answered with remote-server-not-found (no state change),
 * other presence to other domains is dropped.
 */
#ifndef STANZAD_PRESENCE_H
#define STANZAD_PRESENCE_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xml.h"

#define PRESENCE_DIRECTED_MAX	256	/* directed-presence targets tracked per session */

struct conn;
struct jid;
struct session;
struct worker;

/* A directed-presence target (RFC 6121 4.6), to be told when the session goes. */
struct presence_directed {
	struct presence_directed *next;
	size_t len;
	char jid[];
};

/* Per-session presence, hung off struct session (NULL until needed). */
struct presence_state {
	char *last;			/* last available presence without 'to', malloc'd */
	size_t last_len;
	struct presence_directed *directed;
	unsigned ndirected;
};

/*
 * Presence without 'to' from c's session (c2s, 'from' stamped with the
 * full JID): available or unavailable broadcast (4.2, 4.4, 4.5). Initial
 * presence also sends probes, the account's pending subscription
 * requests and (priority >= 0) its offline messages.
 */
void presence_broadcast(struct conn *c, struct xml_node *st);

/*
 * Presence with 'to' from c's session (to normalized): subscription
 * stanzas are processed on the user's roster (outbound) and routed;
 * directed presence is tracked and routed; probes and errors are routed.
 */
void presence_outbound(struct conn *c, struct xml_node *st, const struct jid *from,
		       const struct jid *to);

/*
 * The router's hook for presence to a local account (bare or full 'to'):
 * handles subscription stanzas (inbound processing) and probes and
 * returns true; returns false for presence the router delivers itself
 * (available, unavailable, error). src may be NULL.
 */
bool presence_inbound(struct worker *w, struct conn *src, struct xml_node *st,
		      const struct jid *from, const struct jid *to);

/*
 * A session ends (still in the directory): unavailable to contacts, the
 * account's other resources and directed-presence targets if it was
 * available; its presence state is freed.
 */
void presence_session_end(struct worker *w, struct session *s);

/*
 * A session resumed here that another node held (sm.c): its presence as
 * it was there (last: serialized without 'to', len bytes; NULL when it
 * sent none). Nothing is broadcast: its contacts saw it already.
 */
void presence_restore(struct session *s, bool available, int priority, const char *last,
		      size_t len);

/*
 * Cluster mode: another node changed whether `contact` has From on the
 * account bare[0..bare_len)'s roster (roster_pushed_elsewhere): the
 * account's available resources here send it their current presence
 * (gained) or unavailable (lost), as those on that node did.
 */
void presence_from_changed(struct worker *w, const char *bare, size_t bare_len,
			   const char *contact, bool gained);

/*
 * The user (bare[0..bare_len)) removed contact from the roster, whose
 * state (sub_bits, Pending In included) was `state`: sends unsubscribe /
 * unsubscribed as RFC 6121 2.5.2 requires, and unavailable if the
 * contact had From.
 */
void presence_roster_removed(struct worker *w, const char *bare, size_t bare_len,
			     const struct jid *contact, uint8_t state);

/*
 * Cluster mode: the available session `full` of a node that died ended
 * without its unavailable presence (cluster.c, the reaper). Sends it, as
 * the session's end would have, to the contacts with a From subscription
 * in the account's roster, read from the (shared) store. Worker w.
 */
void presence_unavailable_for(struct worker *w, const char *full);

/* Parses a <priority/> value (RFC 6121 4.7.2.3: -128..127). 0 or -1. */
int presence_parse_priority(const char *text, int *out);

#endif
