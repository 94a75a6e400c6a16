/* SPDX-License-Identifier: MIT */
/*
 * RFC 6121 Appendix A as tables. Each row reads like the RFC's: existing
 * state, whether the stanza is routed (outbound) or delivered (inbound),
 * and the new state; the other side effects the RFC describes in prose
 * (sections 3.1.3 - 3.3.3) are the remaining action bits.
 */
#include <string.h>

#include "subscription.h"

#define ARRAY_SIZE(a) (sizeof(a) / sizeof((a)[0]))

/* Short names for the rows below. */
#define NONE	SUB_NONE
#define PO	SUB_PENDING_OUT
#define PI	SUB_PENDING_IN
#define TO	SUB_TO
#define FROM	SUB_FROM
#define BOTH	(SUB_TO | SUB_FROM)

#define FWD	SUB_ACT_FORWARD
#define AUTO	SUB_ACT_AUTO_SUBSCRIBED
#define PRES	SUB_ACT_SEND_PRESENCE
#define UNAV	SUB_ACT_SEND_UNAVAILABLE

/* Appendix A.1 order. */
const uint8_t sub_state_by_index[SUB_STATE_COUNT] = {
	NONE, NONE | PO, NONE | PI, NONE | PO | PI, TO, TO | PI, FROM, FROM | PO, BOTH,
};

static const char *const sub_state_names[SUB_STATE_COUNT] = {
	"None", "None + Pending Out", "None + Pending In", "None + Pending Out+In", "To",
	"To + Pending In", "From", "From + Pending Out", "Both",
};

/*
 * [event][state index] = { new state, actions }. "No state change" rows
 * repeat the old state. Without pre-approval; see sub_preapproval below.
 */
static const struct sub_rule sub_table[SUB_EVENT_COUNT][SUB_STATE_COUNT] = {
	/* A.2.1 outbound subscribe: always routed (the contact's server answers). */
	[SUB_OUT_SUBSCRIBE] = {
		{ NONE | PO, FWD },		/* None */
		{ NONE | PO, FWD },		/* None + Pending Out */
		{ NONE | PO | PI, FWD },	/* None + Pending In */
		{ NONE | PO | PI, FWD },	/* None + Pending Out+In */
		{ TO, FWD },			/* To */
		{ TO | PI, FWD },		/* To + Pending In */
		{ FROM | PO, FWD },		/* From */
		{ FROM | PO, FWD },		/* From + Pending Out */
		{ BOTH, FWD },			/* Both */
	},
	/* A.2.2 outbound unsubscribe: always routed. */
	[SUB_OUT_UNSUBSCRIBE] = {
		{ NONE, FWD },
		{ NONE, FWD },
		{ NONE | PI, FWD },
		{ NONE | PI, FWD },
		{ NONE, FWD },
		{ NONE | PI, FWD },
		{ FROM, FWD },
		{ FROM, FWD },
		{ FROM, FWD },
	},
	/* A.2.3 outbound subscribed: only an answer to a pending request. */
	[SUB_OUT_SUBSCRIBED] = {
		{ NONE, 0 },
		{ NONE | PO, 0 },
		{ FROM, FWD | PRES },
		{ FROM | PO, FWD | PRES },
		{ TO, 0 },
		{ BOTH, FWD | PRES },
		{ FROM, 0 },
		{ FROM | PO, 0 },
		{ BOTH, 0 },
	},
	/* A.2.4 outbound unsubscribed: denies a request or cancels From. */
	[SUB_OUT_UNSUBSCRIBED] = {
		{ NONE, 0 },
		{ NONE | PO, 0 },
		{ NONE, FWD },
		{ NONE | PO, FWD },
		{ TO, 0 },
		{ TO, FWD },
		{ NONE, FWD | UNAV },
		{ NONE | PO, FWD | UNAV },
		{ TO, FWD | UNAV },
	},
	/*
	 * A.3.1 inbound subscribe: delivered once; a contact that has From
	 * already gets "subscribed" back from the server (3.1.3).
	 */
	[SUB_IN_SUBSCRIBE] = {
		{ NONE | PI, FWD },
		{ NONE | PO | PI, FWD },
		{ NONE | PI, 0 },
		{ NONE | PO | PI, 0 },
		{ TO | PI, FWD },
		{ TO | PI, 0 },
		{ FROM, AUTO | PRES },
		{ FROM | PO, AUTO | PRES },
		{ BOTH, AUTO | PRES },
	},
	/* A.3.2 inbound unsubscribe: the contact withdraws a request or its To. */
	[SUB_IN_UNSUBSCRIBE] = {
		{ NONE, 0 },
		{ NONE | PO, 0 },
		{ NONE, FWD },
		{ NONE | PO, FWD },
		{ TO, 0 },
		{ TO, FWD },
		{ NONE, FWD | UNAV },
		{ NONE | PO, FWD | UNAV },
		{ TO, FWD | UNAV },
	},
	/* A.3.3 inbound subscribed: only an answer to our pending request. */
	[SUB_IN_SUBSCRIBED] = {
		{ NONE, 0 },
		{ TO, FWD },
		{ NONE | PI, 0 },
		{ TO | PI, FWD },
		{ TO, 0 },
		{ TO | PI, 0 },
		{ FROM, 0 },
		{ BOTH, FWD },
		{ BOTH, 0 },
	},
	/* A.3.4 inbound unsubscribed: our request was denied or our To cancelled. */
	[SUB_IN_UNSUBSCRIBED] = {
		{ NONE, 0 },
		{ NONE, FWD },
		{ NONE | PI, 0 },
		{ NONE | PI, FWD },
		{ NONE, FWD },
		{ NONE | PI, FWD },
		{ FROM, 0 },
		{ FROM, FWD },
		{ FROM, FWD },
	},
};

/*
 * Pre-approval (RFC 6121 3.4), which only exists while the contact has
 * neither From nor a pending request (None, None + Pending Out, To):
 *  - outbound subscribed there is not routed but noted as approval;
 *  - outbound unsubscribed there cancels the approval;
 *  - inbound subscribe from an approved contact is answered at once, as
 *    if the user had approved it then.
 * Rows that match override the table above; `approved_in` is the flag
 * before, `approved_out` after.
 */
struct sub_preapproval_rule {
	uint8_t event;
	uint8_t state;
	bool approved_in;
	uint8_t next_state;
	bool approved_out;
	uint8_t actions;
};

static const struct sub_preapproval_rule sub_preapproval[] = {
	{ SUB_OUT_SUBSCRIBED, NONE, false, NONE, true, 0 },
	{ SUB_OUT_SUBSCRIBED, NONE, true, NONE, true, 0 },
	{ SUB_OUT_SUBSCRIBED, NONE | PO, false, NONE | PO, true, 0 },
	{ SUB_OUT_SUBSCRIBED, NONE | PO, true, NONE | PO, true, 0 },
	{ SUB_OUT_SUBSCRIBED, TO, false, TO, true, 0 },
	{ SUB_OUT_SUBSCRIBED, TO, true, TO, true, 0 },
	{ SUB_OUT_UNSUBSCRIBED, NONE, true, NONE, false, 0 },
	{ SUB_OUT_UNSUBSCRIBED, NONE | PO, true, NONE | PO, false, 0 },
	{ SUB_OUT_UNSUBSCRIBED, TO, true, TO, false, 0 },
	{ SUB_IN_SUBSCRIBE, NONE, true, FROM, false, AUTO | PRES },
	{ SUB_IN_SUBSCRIBE, NONE | PO, true, FROM | PO, false, AUTO | PRES },
	{ SUB_IN_SUBSCRIBE, TO, true, BOTH, false, AUTO | PRES },
};

uint8_t sub_normalize(uint8_t state)
{
	state &= SUB_STATE_MASK;
	/* A contact that sees our presence has no request to make; we that see theirs neither. */
	if (state & SUB_FROM)
		state &= (uint8_t)~SUB_PENDING_IN;
	if (state & SUB_TO)
		state &= (uint8_t)~SUB_PENDING_OUT;
	return state;
}

unsigned sub_state_index(uint8_t state)
{
	state = sub_normalize(state);
	for (unsigned i = 0; i < SUB_STATE_COUNT; i++)
		if (sub_state_by_index[i] == state)
			return i;
	return 0;	/* unreachable: every normalized state is listed */
}

const struct sub_rule *sub_rule_get(enum sub_event ev, unsigned state_index)
{
	if ((unsigned)ev >= SUB_EVENT_COUNT || state_index >= SUB_STATE_COUNT)
		return NULL;
	return &sub_table[ev][state_index];
}

struct sub_result sub_transition(enum sub_event ev, uint8_t state, bool approved)
{
	struct sub_result r = { sub_normalize(state), approved, 0 };
	const struct sub_rule *rule;

	if ((unsigned)ev >= SUB_EVENT_COUNT)
		return r;
	state = r.state;
	for (size_t i = 0; i < ARRAY_SIZE(sub_preapproval); i++) {
		const struct sub_preapproval_rule *p = &sub_preapproval[i];

		if (p->event == ev && p->state == state && p->approved_in == approved) {
			r.state = p->next_state;
			r.approved = p->approved_out;
			r.actions = p->actions;
			return r;
		}
	}
	rule = &sub_table[ev][sub_state_index(state)];
	r.state = rule->next_state;
	r.actions = rule->actions;
	/* An approval is used up once the contact has From. */
	if (r.state & SUB_FROM)
		r.approved = false;
	return r;
}

int sub_event_from_type(const char *type, bool outbound)
{
	static const char *const types[] = { "subscribe", "unsubscribe", "subscribed",
					     "unsubscribed" };

	for (int i = 0; i < 4; i++)
		if (strcmp(type, types[i]) == 0)
			return (outbound ? SUB_OUT_SUBSCRIBE : SUB_IN_SUBSCRIBE) + i;
	return -1;
}

const char *sub_state_name(uint8_t state)
{
	return sub_state_names[sub_state_index(state)];
}

const char *sub_attr_value(uint8_t state)
{
	switch (state & (SUB_TO | SUB_FROM)) {
	case SUB_TO:
		return "to";
	case SUB_FROM:
		return "from";
	case SUB_TO | SUB_FROM:
		return "both";
	default:
		return "none";
	}
}

int sub_parse_attr(const char *v, uint8_t *bits)
{
	static const struct {
		const char *name;
		uint8_t bits;
	} values[] = {
		{ "none", SUB_NONE }, { "to", SUB_TO }, { "from", SUB_FROM },
		{ "both", SUB_TO | SUB_FROM },
	};

	for (size_t i = 0; i < ARRAY_SIZE(values); i++) {
		if (strcmp(v, values[i].name) == 0) {
			*bits = values[i].bits;
			return 0;
		}
	}
	return -1;
}
