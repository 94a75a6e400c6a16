/* SPDX-License-Identifier: MIT */
/*
 * The subscription state machine against RFC 6121 Appendix A, row by row.
 * The expected tables below are transcribed from the RFC's text (state
 * names, "yes"/"no" for route/deliver) independently of subscription.c,
 * so a wrong cell in either shows up as a failure naming the row.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "subscription.h"

struct row {
	const char *state;
	bool forward;
	const char *next;	/* NULL: no state change */
};

/* The RFC's names, mapped to bits here (not with sub_state_name). */
static uint8_t bits_of(const char *name)
{
	static const struct {
		const char *name;
		uint8_t bits;
	} names[] = {
		{ "None", 0 },
		{ "None + Pending Out", SUB_PENDING_OUT },
		{ "None + Pending In", SUB_PENDING_IN },
		{ "None + Pending Out+In", SUB_PENDING_OUT | SUB_PENDING_IN },
		{ "To", SUB_TO },
		{ "To + Pending In", SUB_TO | SUB_PENDING_IN },
		{ "From", SUB_FROM },
		{ "From + Pending Out", SUB_FROM | SUB_PENDING_OUT },
		{ "Both", SUB_TO | SUB_FROM },
	};

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]); i++)
		if (strcmp(names[i].name, name) == 0)
			return names[i].bits;
	fail_msg("unknown state name %s", name);
	return 0;
}

static void check_rows(enum sub_event ev, const char *table, const struct row *rows)
{
	for (int i = 0; i < SUB_STATE_COUNT; i++) {
		uint8_t in = bits_of(rows[i].state);
		uint8_t want = rows[i].next ? bits_of(rows[i].next) : in;
		struct sub_result r = sub_transition(ev, in, false);

		if (r.state != want || !!(r.actions & SUB_ACT_FORWARD) != rows[i].forward) {
			fail_msg("%s, existing state \"%s\": got state \"%s\" forward=%d, want \"%s\" "
				 "forward=%d", table, rows[i].state, sub_state_name(r.state),
				 !!(r.actions & SUB_ACT_FORWARD), sub_state_name(want), rows[i].forward);
		}
		assert_false(r.approved);
	}
}

/* A.2.1: outbound subscribe is always routed. */
static void test_outbound_subscribe_table_a21(void **state)
{
	static const struct row rows[] = {
		{ "None", true, "None + Pending Out" },
		{ "None + Pending Out", true, NULL },
		{ "None + Pending In", true, "None + Pending Out+In" },
		{ "None + Pending Out+In", true, NULL },
		{ "To", true, NULL },
		{ "To + Pending In", true, NULL },
		{ "From", true, "From + Pending Out" },
		{ "From + Pending Out", true, NULL },
		{ "Both", true, NULL },
	};

	check_rows(SUB_OUT_SUBSCRIBE, "A.2.1", rows);
}

static void test_outbound_unsubscribe_table_a22(void **state)
{
	static const struct row rows[] = {
		{ "None", true, NULL },
		{ "None + Pending Out", true, "None" },
		{ "None + Pending In", true, NULL },
		{ "None + Pending Out+In", true, "None + Pending In" },
		{ "To", true, "None" },
		{ "To + Pending In", true, "None + Pending In" },
		{ "From", true, NULL },
		{ "From + Pending Out", true, "From" },
		{ "Both", true, "From" },
	};

	check_rows(SUB_OUT_UNSUBSCRIBE, "A.2.2", rows);
}

static void test_outbound_subscribed_table_a23(void **state)
{
	static const struct row rows[] = {
		{ "None", false, NULL },
		{ "None + Pending Out", false, NULL },
		{ "None + Pending In", true, "From" },
		{ "None + Pending Out+In", true, "From + Pending Out" },
		{ "To", false, NULL },
		{ "To + Pending In", true, "Both" },
		{ "From", false, NULL },
		{ "From + Pending Out", false, NULL },
		{ "Both", false, NULL },
	};

	/*
	 * Rows None, None + Pending Out and To become pre-approvals; their
	 * state and routing are as the table says, checked here, and the
	 * approval itself in test_preapproval_*.
	 */
	for (int i = 0; i < SUB_STATE_COUNT; i++) {
		uint8_t in = bits_of(rows[i].state);
		uint8_t want = rows[i].next ? bits_of(rows[i].next) : in;
		struct sub_result r = sub_transition(SUB_OUT_SUBSCRIBED, in, false);

		if (r.state != want || !!(r.actions & SUB_ACT_FORWARD) != rows[i].forward)
			fail_msg("A.2.3, existing state \"%s\": got \"%s\" forward=%d", rows[i].state,
				 sub_state_name(r.state), !!(r.actions & SUB_ACT_FORWARD));
	}
}

static void test_outbound_unsubscribed_table_a24(void **state)
{
	static const struct row rows[] = {
		{ "None", false, NULL },
		{ "None + Pending Out", false, NULL },
		{ "None + Pending In", true, "None" },
		{ "None + Pending Out+In", true, "None + Pending Out" },
		{ "To", false, NULL },
		{ "To + Pending In", true, "To" },
		{ "From", true, "None" },
		{ "From + Pending Out", true, "None + Pending Out" },
		{ "Both", true, "To" },
	};

	check_rows(SUB_OUT_UNSUBSCRIBED, "A.2.4", rows);
}

static void test_inbound_subscribe_table_a31(void **state)
{
	static const struct row rows[] = {
		{ "None", true, "None + Pending In" },
		{ "None + Pending Out", true, "None + Pending Out+In" },
		{ "None + Pending In", false, NULL },
		{ "None + Pending Out+In", false, NULL },
		{ "To", true, "To + Pending In" },
		{ "To + Pending In", false, NULL },
		{ "From", false, NULL },
		{ "From + Pending Out", false, NULL },
		{ "Both", false, NULL },
	};

	check_rows(SUB_IN_SUBSCRIBE, "A.3.1", rows);
}

static void test_inbound_unsubscribe_table_a32(void **state)
{
	static const struct row rows[] = {
		{ "None", false, NULL },
		{ "None + Pending Out", false, NULL },
		{ "None + Pending In", true, "None" },
		{ "None + Pending Out+In", true, "None + Pending Out" },
		{ "To", false, NULL },
		{ "To + Pending In", true, "To" },
		{ "From", true, "None" },
		{ "From + Pending Out", true, "None + Pending Out" },
		{ "Both", true, "To" },
	};

	check_rows(SUB_IN_UNSUBSCRIBE, "A.3.2", rows);
}

static void test_inbound_subscribed_table_a33(void **state)
{
	static const struct row rows[] = {
		{ "None", false, NULL },
		{ "None + Pending Out", true, "To" },
		{ "None + Pending In", false, NULL },
		{ "None + Pending Out+In", true, "To + Pending In" },
		{ "To", false, NULL },
		{ "To + Pending In", false, NULL },
		{ "From", false, NULL },
		{ "From + Pending Out", true, "Both" },
		{ "Both", false, NULL },
	};

	check_rows(SUB_IN_SUBSCRIBED, "A.3.3", rows);
}

static void test_inbound_unsubscribed_table_a34(void **state)
{
	static const struct row rows[] = {
		{ "None", false, NULL },
		{ "None + Pending Out", true, "None" },
		{ "None + Pending In", false, NULL },
		{ "None + Pending Out+In", true, "None + Pending In" },
		{ "To", true, "None" },
		{ "To + Pending In", true, "None + Pending In" },
		{ "From", false, NULL },
		{ "From + Pending Out", true, "From" },
		{ "Both", true, "From" },
	};

	check_rows(SUB_IN_UNSUBSCRIBED, "A.3.4", rows);
}

/* 3.1.3: a subscribe from a contact that has From already is answered "subscribed". */
static void test_inbound_subscribe_with_from_is_auto_answered(void **state)
{
	const char *with_from[] = { "From", "From + Pending Out", "Both" };

	for (size_t i = 0; i < 3; i++) {
		struct sub_result r = sub_transition(SUB_IN_SUBSCRIBE, bits_of(with_from[i]), false);

		assert_true(r.actions & SUB_ACT_AUTO_SUBSCRIBED);
		assert_false(r.actions & SUB_ACT_FORWARD);
	}
	for (int i = 0; i < SUB_STATE_COUNT; i++) {
		uint8_t s = sub_state_by_index[i];

		if (!(s & SUB_FROM))
			assert_false(sub_transition(SUB_IN_SUBSCRIBE, s, false).actions &
				     SUB_ACT_AUTO_SUBSCRIBED);
	}
}

/* 3.1.5: approving sends our presence; 3.2.2 / 3.3.3: losing From sends unavailable. */
static void test_presence_side_effects_follow_from_changes(void **state)
{
	for (int ev = 0; ev < SUB_EVENT_COUNT; ev++) {
		for (int i = 0; i < SUB_STATE_COUNT; i++) {
			uint8_t s = sub_state_by_index[i];
			struct sub_result r = sub_transition(ev, s, false);
			bool gained = !(s & SUB_FROM) && (r.state & SUB_FROM);
			bool lost = (s & SUB_FROM) && !(r.state & SUB_FROM);

			if (gained)
				assert_true(r.actions & SUB_ACT_SEND_PRESENCE);
			if (lost)
				assert_true(r.actions & SUB_ACT_SEND_UNAVAILABLE);
			else
				assert_false(r.actions & SUB_ACT_SEND_UNAVAILABLE);
		}
	}
}

/* 3.4: subscribed without a pending request pre-approves, and is not routed. */
static void test_preapproval_is_noted_not_routed(void **state)
{
	const char *states[] = { "None", "None + Pending Out", "To" };

	for (size_t i = 0; i < 3; i++) {
		for (int approved = 0; approved < 2; approved++) {
			struct sub_result r = sub_transition(SUB_OUT_SUBSCRIBED, bits_of(states[i]),
							     approved);

			assert_int_equal(r.state, bits_of(states[i]));
			assert_true(r.approved);
			assert_int_equal(r.actions, 0);
		}
	}
}

/* 3.4: an inbound subscribe from a pre-approved contact is approved at once. */
static void test_preapproved_subscribe_is_answered_and_grants_from(void **state)
{
	static const struct {
		const char *from, *to;
	} rows[] = {
		{ "None", "From" },
		{ "None + Pending Out", "From + Pending Out" },
		{ "To", "Both" },
	};

	for (size_t i = 0; i < 3; i++) {
		struct sub_result r = sub_transition(SUB_IN_SUBSCRIBE, bits_of(rows[i].from), true);

		assert_int_equal(r.state, bits_of(rows[i].to));
		assert_false(r.approved);
		assert_int_equal(r.actions, SUB_ACT_AUTO_SUBSCRIBED | SUB_ACT_SEND_PRESENCE);
	}
}

static void test_preapproval_cancelled_by_unsubscribed(void **state)
{
	const char *states[] = { "None", "None + Pending Out", "To" };

	for (size_t i = 0; i < 3; i++) {
		struct sub_result r = sub_transition(SUB_OUT_UNSUBSCRIBED, bits_of(states[i]), true);

		assert_int_equal(r.state, bits_of(states[i]));
		assert_false(r.approved);
		assert_int_equal(r.actions, 0);
	}
}

/* Other events keep an approval until From is granted. */
static void test_preapproval_survives_unrelated_events(void **state)
{
	struct sub_result r;

	r = sub_transition(SUB_OUT_SUBSCRIBE, SUB_NONE, true);
	assert_int_equal(r.state, SUB_PENDING_OUT);
	assert_true(r.approved);
	r = sub_transition(SUB_IN_SUBSCRIBED, SUB_PENDING_OUT, true);
	assert_int_equal(r.state, SUB_TO);
	assert_true(r.approved);
	r = sub_transition(SUB_IN_UNSUBSCRIBED, SUB_TO, true);
	assert_int_equal(r.state, SUB_NONE);
	assert_true(r.approved);
}

static void test_impossible_states_are_normalized(void **state)
{
	assert_int_equal(sub_normalize(SUB_FROM | SUB_PENDING_IN), SUB_FROM);
	assert_int_equal(sub_normalize(SUB_TO | SUB_PENDING_OUT), SUB_TO);
	assert_int_equal(sub_normalize(0xff), SUB_TO | SUB_FROM);
	/* Every byte value has a defined transition for every event. */
	for (int ev = 0; ev < SUB_EVENT_COUNT; ev++) {
		for (int s = 0; s < 256; s++) {
			struct sub_result r = sub_transition(ev, (uint8_t)s, s & 1);

			assert_int_equal(sub_normalize(r.state), r.state);
		}
	}
	/* An out-of-range event changes nothing. */
	assert_int_equal(sub_transition(SUB_EVENT_COUNT, SUB_TO, false).state, SUB_TO);
	assert_int_equal(sub_transition(SUB_EVENT_COUNT, SUB_TO, false).actions, 0);
	assert_null(sub_rule_get(SUB_EVENT_COUNT, 0));
	assert_null(sub_rule_get(SUB_OUT_SUBSCRIBE, SUB_STATE_COUNT));
}

static void test_event_names_and_attributes(void **state)
{
	uint8_t bits = 0xff;

	assert_int_equal(sub_event_from_type("subscribe", true), SUB_OUT_SUBSCRIBE);
	assert_int_equal(sub_event_from_type("unsubscribe", true), SUB_OUT_UNSUBSCRIBE);
	assert_int_equal(sub_event_from_type("subscribed", true), SUB_OUT_SUBSCRIBED);
	assert_int_equal(sub_event_from_type("unsubscribed", true), SUB_OUT_UNSUBSCRIBED);
	assert_int_equal(sub_event_from_type("subscribe", false), SUB_IN_SUBSCRIBE);
	assert_int_equal(sub_event_from_type("unsubscribed", false), SUB_IN_UNSUBSCRIBED);
	assert_int_equal(sub_event_from_type("probe", false), -1);
	assert_int_equal(sub_event_from_type("", true), -1);
	assert_int_equal(sub_event_from_type("Subscribe", true), -1);

	assert_string_equal(sub_attr_value(SUB_NONE | SUB_PENDING_OUT), "none");
	assert_string_equal(sub_attr_value(SUB_TO | SUB_PENDING_IN), "to");
	assert_string_equal(sub_attr_value(SUB_FROM | SUB_PENDING_OUT), "from");
	assert_string_equal(sub_attr_value(SUB_TO | SUB_FROM), "both");
	assert_int_equal(sub_parse_attr("both", &bits), 0);
	assert_int_equal(bits, SUB_TO | SUB_FROM);
	assert_int_equal(sub_parse_attr("remove", &bits), -1);
	assert_int_equal(sub_parse_attr("BOTH", &bits), -1);
	assert_string_equal(sub_state_name(SUB_PENDING_OUT | SUB_PENDING_IN), "None + Pending Out+In");
	for (unsigned i = 0; i < SUB_STATE_COUNT; i++)
		assert_int_equal(sub_state_index(sub_state_by_index[i]), i);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_outbound_subscribe_table_a21),
		cmocka_unit_test(test_outbound_unsubscribe_table_a22),
		cmocka_unit_test(test_outbound_subscribed_table_a23),
		cmocka_unit_test(test_outbound_unsubscribed_table_a24),
		cmocka_unit_test(test_inbound_subscribe_table_a31),
		cmocka_unit_test(test_inbound_unsubscribe_table_a32),
		cmocka_unit_test(test_inbound_subscribed_table_a33),
		cmocka_unit_test(test_inbound_unsubscribed_table_a34),
		cmocka_unit_test(test_inbound_subscribe_with_from_is_auto_answered),
		cmocka_unit_test(test_presence_side_effects_follow_from_changes),
		cmocka_unit_test(test_preapproval_is_noted_not_routed),
		cmocka_unit_test(test_preapproved_subscribe_is_answered_and_grants_from),
		cmocka_unit_test(test_preapproval_cancelled_by_unsubscribed),
		cmocka_unit_test(test_preapproval_survives_unrelated_events),
		cmocka_unit_test(test_impossible_states_are_normalized),
		cmocka_unit_test(test_event_names_and_attributes),
	};

	return cmocka_run_group_tests_name("subscription", tests, NULL, NULL);
}
