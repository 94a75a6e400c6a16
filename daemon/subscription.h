/* SPDX-License-Identifier: MIT */
/*
 * The presence subscription state machine of RFC 6121 (section 3 and the
 * tables of Appendix A), as data: a table indexed by event and state.
 *
 * A state is what one account's roster says about one contact: whether
 * the user receives the contact's presence (To), the contact receives the
 * user's (From), the user asked for a subscription that is unanswered
 * (Pending Out, ask='subscribe') and the contact asked the user and got no
 * answer yet (Pending In). RFC 6121 names nine valid combinations ("None",
 * "None + Pending Out", ..., "Both"). The pre-approval flag of section 3.4
 * ('approved') is carried beside the state.
 *
 * Events are the four subscription stanza types, either sent by the user
 * (outbound: the user's server processes them on the user's roster before
 * routing them) or received for the user (inbound: the user's server
 * processes them on the user's roster before delivering them).
 *
 * This file is pure logic (no I/O): presence.c applies the results to
 * rosters, storage, routing and pushes.
 */
#ifndef STANZAD_SUBSCRIPTION_H
#define STANZAD_SUBSCRIPTION_H

#include <stdbool.h>
#include <stdint.h>

/* State bits. Pending In is never stored in a roster item (see roster.h). */
enum sub_bits {
	SUB_NONE = 0,
	SUB_TO = 1 << 0,		/* the user receives the contact's presence */
	SUB_FROM = 1 << 1,		/* the contact receives the user's presence */
	SUB_PENDING_OUT = 1 << 2,	/* user -> contact request unanswered */
	SUB_PENDING_IN = 1 << 3,	/* contact -> user request unanswered */
};

#define SUB_STATE_MASK	(SUB_TO | SUB_FROM | SUB_PENDING_OUT | SUB_PENDING_IN)
/* The nine states of RFC 6121 Appendix A.1, in its order. */
#define SUB_STATE_COUNT	9

enum sub_event {
	SUB_OUT_SUBSCRIBE = 0,		/* A.2.1 */
	SUB_OUT_UNSUBSCRIBE,		/* A.2.2 */
	SUB_OUT_SUBSCRIBED,		/* A.2.3 */
	SUB_OUT_UNSUBSCRIBED,		/* A.2.4 */
	SUB_IN_SUBSCRIBE,		/* A.3.1 */
	SUB_IN_UNSUBSCRIBE,		/* A.3.2 */
	SUB_IN_SUBSCRIBED,		/* A.3.3 */
	SUB_IN_UNSUBSCRIBED,		/* A.3.4 */
	SUB_EVENT_COUNT,
};

/* What the server does besides changing the state. */
enum sub_action {
	/*
	 * Outbound: route the stanza to the contact. Inbound: deliver it to
	 * the user's available resources (a subscribe is also kept until
	 * answered, see Pending In).
	 */
	SUB_ACT_FORWARD = 1 << 0,
	/*
	 * Inbound subscribe from a contact who may see the user's presence
	 * already (From, Both) or was pre-approved: the user's server answers
	 * "subscribed" on the user's behalf (RFC 6121 3.1.3, 3.4).
	 */
	SUB_ACT_AUTO_SUBSCRIBED = 1 << 1,
	/*
	 * The contact gained From: send it the current presence of each of
	 * the user's available resources (RFC 6121 3.1.5).
	 */
	SUB_ACT_SEND_PRESENCE = 1 << 2,
	/*
	 * The contact lost From: send it unavailable presence from each of
	 * the user's available resources (RFC 6121 3.2.2, 3.3.3).
	 */
	SUB_ACT_SEND_UNAVAILABLE = 1 << 3,
};

/* The outcome of one event. */
struct sub_result {
	uint8_t state;		/* new state bits */
	bool approved;		/* new pre-approval flag */
	uint8_t actions;	/* enum sub_action bits */
};

/*
 * Applies `ev` to `state` (sub_bits; impossible combinations are first
 * normalized: From drops Pending In, To drops Pending Out) and the
 * pre-approval flag. Pure and total: every input has an answer.
 */
struct sub_result sub_transition(enum sub_event ev, uint8_t state, bool approved);

/* Normalizes state bits to one of the nine valid states. */
uint8_t sub_normalize(uint8_t state);

/* The event for a presence 'type' ("subscribe", ...), or -1 if it is none. */
int sub_event_from_type(const char *type, bool outbound);

/* The RFC 6121 name of a state, e.g. "None + Pending Out+In". */
const char *sub_state_name(uint8_t state);

/* The roster 'subscription' attribute for a state: none, to, from, both. */
const char *sub_attr_value(uint8_t state);

/* Parses a stored/wire 'subscription' value into To/From bits. 0 or -1. */
int sub_parse_attr(const char *v, uint8_t *bits);

/*
 * The table, exposed for the unit test: the rule for an event in the
 * state with index i (0..8, Appendix A.1 order: None, None + Pending Out,
 * None + Pending In, None + Pending Out+In, To, To + Pending In, From,
 * From + Pending Out, Both). next_state is state bits.
 */
struct sub_rule {
	uint8_t next_state;
	uint8_t actions;
};

extern const uint8_t sub_state_by_index[SUB_STATE_COUNT];
const struct sub_rule *sub_rule_get(enum sub_event ev, unsigned state_index);
/* The index (0..8) of a normalized state. */
unsigned sub_state_index(uint8_t state);

#endif
