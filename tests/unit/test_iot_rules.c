/* SPDX-License-Identifier: MIT */
/*
 * XEP-0324 provisioning rules: matching (ranges and their ranking, nodes,
 * tokens, newest first, kinds kept apart), the permitted names of a
 * partial permission, and parsing the owner's rule elements, including
 * malformed ones.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "arena.h"
#include "iot_rules.h"
#include "jid.h"
#include "stored_xml.h"
#include "xml.h"

#define OWNER_NS "xmlns='urn:nf:iot:prov:o:1.0'"

/* A rule list built newest first, as provisioning.c keeps it. */
struct rules {
	struct iot_rule *head;
};

static void add(struct rules *l, enum iot_rule_kind kind, enum iot_rule_range range, bool result,
		const char *remote, const char *nodes, const char *partial)
{
	struct iot_rule *r = iot_rule_new(kind, range, result, remote, nodes, partial);

	assert_non_null(r);
	r->next = l->head;
	l->head = r;
}

static void free_rules(struct rules *l)
{
	while (l->head) {
		struct iot_rule *r = l->head;

		l->head = r->next;
		free(r);
	}
}

static struct iot_query query(enum iot_rule_kind kind, const char *jid, const char *domain)
{
	struct iot_query q = { .kind = kind, .jid = jid, .domain = domain };

	return q;
}

static enum iot_verdict decide(const struct rules *l, const struct iot_query *q,
			       struct iot_decision *d)
{
	iot_decide(l->head, q, NULL, 0, d);
	return d->verdict;
}

static void test_no_rule_means_ask(void **state)
{
	struct rules l = { 0 };
	struct iot_query q = query(IOT_RULE_READ, "eve@x.org", "x.org");
	struct iot_decision d;

	(void)state;
	assert_int_equal(decide(&l, &q, &d), IOT_NO_RULE);
	assert_true(d.unanswered);
	assert_false(iot_decision_name_ok(&d, "Temperature"));
}

static void test_jid_rule_allows_that_jid_only(void **state)
{
	struct rules l = { 0 };
	struct iot_query alice = query(IOT_RULE_READ, "alice@x.org", "x.org");
	struct iot_query bob = query(IOT_RULE_READ, "bob@x.org", "x.org");
	struct iot_decision d;

	(void)state;
	add(&l, IOT_RULE_READ, IOT_RANGE_JID, true, "alice@x.org", NULL, NULL);
	assert_int_equal(decide(&l, &alice, &d), IOT_ALLOW);
	assert_true(d.every_name);
	assert_true(iot_decision_name_ok(&d, "anything"));
	assert_int_equal(decide(&l, &bob, &d), IOT_NO_RULE);
	free_rules(&l);
}

static void test_more_specific_range_wins(void **state)
{
	struct rules l = { 0 };
	struct iot_query eve = query(IOT_RULE_READ, "eve@x.org", "x.org");
	struct iot_query bob = query(IOT_RULE_READ, "bob@x.org", "x.org");
	struct iot_query zed = query(IOT_RULE_READ, "zed@y.org", "y.org");
	struct iot_decision d;

	(void)state;
	/* Everyone may, x.org may not, but bob@x.org may: the JID rule beats the domain rule. */
	add(&l, IOT_RULE_READ, IOT_RANGE_JID, true, "bob@x.org", NULL, NULL);
	add(&l, IOT_RULE_READ, IOT_RANGE_DOMAIN, false, "x.org", NULL, NULL);
	add(&l, IOT_RULE_READ, IOT_RANGE_ALL, true, NULL, NULL, NULL);
	assert_int_equal(decide(&l, &eve, &d), IOT_DENY);
	assert_int_equal(decide(&l, &bob, &d), IOT_ALLOW);
	assert_int_equal(decide(&l, &zed, &d), IOT_ALLOW);
	free_rules(&l);
}

static void test_domain_rule_is_exact_domain(void **state)
{
	struct rules l = { 0 };
	struct iot_query sub = query(IOT_RULE_FRIEND, "a@sub.x.org", "sub.x.org");
	struct iot_query same = query(IOT_RULE_FRIEND, "a@x.org", "x.org");
	struct iot_decision d;

	(void)state;
	add(&l, IOT_RULE_FRIEND, IOT_RANGE_DOMAIN, true, "x.org", NULL, NULL);
	assert_int_equal(decide(&l, &same, &d), IOT_ALLOW);
	assert_int_equal(decide(&l, &sub, &d), IOT_NO_RULE);
	free_rules(&l);
}

static void test_token_rules_need_the_token(void **state)
{
	struct rules l = { 0 };
	struct iot_query q = query(IOT_RULE_CONTROL, "svc@x.org", "x.org");
	struct iot_decision d;

	(void)state;
	add(&l, IOT_RULE_CONTROL, IOT_RANGE_SERVICE, true, "TOK1", NULL, NULL);
	add(&l, IOT_RULE_CONTROL, IOT_RANGE_USER, false, "U1", NULL, NULL);
	assert_int_equal(decide(&l, &q, &d), IOT_NO_RULE);
	q.service_token = "TOK2";
	assert_int_equal(decide(&l, &q, &d), IOT_NO_RULE);
	q.service_token = "TOK1";
	assert_int_equal(decide(&l, &q, &d), IOT_ALLOW);
	/* The user token ranks above the service token. */
	q.user_token = "U1";
	assert_int_equal(decide(&l, &q, &d), IOT_DENY);
	/* A token given empty never matches a rule. */
	q.user_token = "";
	q.service_token = "";
	assert_int_equal(decide(&l, &q, &d), IOT_NO_RULE);
	free_rules(&l);
}

static void test_newest_rule_wins_a_tie(void **state)
{
	struct rules l = { 0 };
	struct iot_query q = query(IOT_RULE_READ, "a@x.org", "x.org");
	struct iot_decision d;

	(void)state;
	add(&l, IOT_RULE_READ, IOT_RANGE_ALL, true, NULL, NULL, NULL);
	add(&l, IOT_RULE_READ, IOT_RANGE_ALL, false, NULL, NULL, NULL);
	assert_int_equal(decide(&l, &q, &d), IOT_DENY);
	free_rules(&l);
}

static void test_kinds_are_separate(void **state)
{
	struct rules l = { 0 };
	struct iot_query read = query(IOT_RULE_READ, "a@x.org", "x.org");
	struct iot_query control = query(IOT_RULE_CONTROL, "a@x.org", "x.org");
	struct iot_query friend = query(IOT_RULE_FRIEND, "a@x.org", "x.org");
	struct iot_decision d;

	(void)state;
	add(&l, IOT_RULE_READ, IOT_RANGE_JID, true, "a@x.org", NULL, NULL);
	assert_int_equal(decide(&l, &read, &d), IOT_ALLOW);
	assert_int_equal(decide(&l, &control, &d), IOT_NO_RULE);
	assert_int_equal(decide(&l, &friend, &d), IOT_NO_RULE);
	free_rules(&l);
}

static void test_partial_names(void **state)
{
	struct rules l = { 0 };
	struct iot_query q = query(IOT_RULE_READ, "a@x.org", "x.org");
	struct iot_decision d;

	(void)state;
	add(&l, IOT_RULE_READ, IOT_RANGE_JID, true, "a@x.org", NULL, "Temperature\x1fHumidity");
	assert_int_equal(decide(&l, &q, &d), IOT_ALLOW);
	assert_false(d.every_name);
	assert_true(iot_decision_name_ok(&d, "Temperature"));
	assert_true(iot_decision_name_ok(&d, "Humidity"));
	assert_false(iot_decision_name_ok(&d, "Battery"));
	/* Exact names: neither prefixes nor longer names match. */
	assert_false(iot_decision_name_ok(&d, "Temp"));
	assert_false(iot_decision_name_ok(&d, "Temperature2"));
	free_rules(&l);
}

static void test_empty_partial_permits_nothing(void **state)
{
	struct rules l = { 0 };
	struct iot_query q = query(IOT_RULE_CONTROL, "a@x.org", "x.org");
	struct iot_decision d;

	(void)state;
	add(&l, IOT_RULE_CONTROL, IOT_RANGE_ALL, true, NULL, NULL, "");
	assert_int_equal(decide(&l, &q, &d), IOT_ALLOW);
	assert_false(iot_decision_name_ok(&d, "Relay"));
	free_rules(&l);
}

static void test_nodes_are_decided_one_by_one(void **state)
{
	struct rules l = { 0 };
	struct iot_query q = query(IOT_RULE_READ, "a@x.org", "x.org");
	const char *nodes[] = { "N1", "N2", "N3" };
	struct iot_decision d;

	(void)state;
	add(&l, IOT_RULE_READ, IOT_RANGE_JID, true, "a@x.org", "N1\x1fN3", "Energy");
	add(&l, IOT_RULE_READ, IOT_RANGE_JID, false, "a@x.org", "N3", NULL);
	iot_decide(l.head, &q, nodes, 3, &d);
	assert_int_equal(d.verdict, IOT_ALLOW);
	/* N1 allowed, N2 has no rule, N3: both name it, the newest (deny) wins. */
	assert_int_equal(d.nodes_allowed, 1);
	assert_true(d.unanswered);
	assert_true(iot_decision_name_ok(&d, "Energy"));
	assert_false(iot_decision_name_ok(&d, "Power"));
	free_rules(&l);
}

static void test_node_rule_beats_thing_rule(void **state)
{
	struct rules l = { 0 };
	struct iot_query q = query(IOT_RULE_READ, "a@x.org", "x.org");
	const char *nodes[] = { "N1", "N2" };
	struct iot_decision d;

	(void)state;
	add(&l, IOT_RULE_READ, IOT_RANGE_JID, false, "a@x.org", "N2", NULL);
	add(&l, IOT_RULE_READ, IOT_RANGE_JID, true, "a@x.org", NULL, NULL);
	iot_decide(l.head, &q, nodes, 2, &d);
	assert_int_equal(d.verdict, IOT_ALLOW);
	assert_int_equal(d.nodes_allowed, 1);
	assert_false(d.unanswered);
	free_rules(&l);
}

static void test_all_nodes_denied_is_deny(void **state)
{
	struct rules l = { 0 };
	struct iot_query q = query(IOT_RULE_READ, "a@x.org", "x.org");
	const char *nodes[] = { "N1", "N2" };
	struct iot_decision d;

	(void)state;
	add(&l, IOT_RULE_READ, IOT_RANGE_ALL, false, NULL, NULL, NULL);
	iot_decide(l.head, &q, nodes, 2, &d);
	assert_int_equal(d.verdict, IOT_DENY);
	assert_int_equal(d.nodes_allowed, 0);
	free_rules(&l);
}

static void test_request_without_nodes_limited_by_rule(void **state)
{
	struct rules l = { 0 };
	struct iot_query q = query(IOT_RULE_READ, "a@x.org", "x.org");
	struct iot_decision d;

	(void)state;
	add(&l, IOT_RULE_READ, IOT_RANGE_JID, true, "a@x.org", "N1\x1fN2", NULL);
	assert_int_equal(decide(&l, &q, &d), IOT_ALLOW);
	assert_non_null(d.limit_nodes);
	assert_string_equal(d.limit_nodes, "N1\x1fN2");
	free_rules(&l);
}

static void test_list_has_and_same_key(void **state)
{
	struct iot_rule *a = iot_rule_new(IOT_RULE_READ, IOT_RANGE_JID, true, "a@x", "N", "F");
	struct iot_rule *b = iot_rule_new(IOT_RULE_READ, IOT_RANGE_JID, false, "a@x", "N", NULL);
	struct iot_rule *c = iot_rule_new(IOT_RULE_READ, IOT_RANGE_DOMAIN, true, "a@x", "N", NULL);

	(void)state;
	assert_true(iot_list_has("a\x1f" "bb\x1f" "c", "bb"));
	assert_false(iot_list_has("a\x1f" "bb\x1f" "c", "b"));
	assert_false(iot_list_has("", "a"));
	assert_false(iot_list_has(NULL, "a"));
	assert_true(iot_rule_same_key(a, b));	/* result and partial are not the key */
	assert_false(iot_rule_same_key(a, c));
	assert_null(b->partial);
	assert_string_equal(a->partial, "F");
	free(a);
	free(b);
	free(c);
}

static void test_names_round_trip(void **state)
{
	(void)state;
	for (int k = 0; k < IOT_RULE_KINDS; k++)
		assert_int_equal(iot_kind_parse(iot_kind_name(k)), k);
	for (int r = 0; r < IOT_RANGES; r++)
		assert_int_equal(iot_range_parse(iot_range_name(r)), r);
	assert_int_equal(iot_kind_parse("bogus"), -1);
	assert_int_equal(iot_range_parse(""), -1);
}

/* ---- Parsing ---- */

struct fixture {
	struct xml_pool *pool;
	struct arena a;
};

static int setup(void **state)
{
	struct fixture *f = calloc(1, sizeof(*f));

	assert_non_null(f);
	f->pool = xml_pool_new(NULL);
	assert_non_null(f->pool);
	arena_init(&f->a, 4096);
	*state = f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	arena_release(&f->a);
	xml_pool_free(f->pool);
	free(f);
	return 0;
}

static int parse(struct fixture *f, const char *text, char *thing, const char **key,
		 struct iot_rule **r, const char **err)
{
	struct xml_node *el = stored_xml_parse(f->pool, &f->a, text, strlen(text));

	assert_non_null(el);
	*key = NULL;
	*err = NULL;
	return iot_rule_parse(el, thing, JID_MAX, key, r, err);
}

static void test_parse_friend_rule(void **state)
{
	struct fixture *f = *state;
	char thing[JID_MAX];
	const char *key, *err;
	struct iot_rule *r;

	assert_int_equal(parse(f, "<isFriendRule " OWNER_NS " jid='Dev@X.org/res' "
			       "remoteJid='Bob@Y.org/phone' key='k1' result='true'/>",
			       thing, &key, &r, &err), 0);
	assert_string_equal(thing, "dev@x.org");
	assert_string_equal(key, "k1");
	assert_int_equal(r->kind, IOT_RULE_FRIEND);
	assert_int_equal(r->range, IOT_RANGE_JID);
	assert_true(r->result);
	assert_string_equal(r->remote, "bob@y.org");
	free(r);

	assert_int_equal(parse(f, "<isFriendRule " OWNER_NS " jid='dev@x.org' remoteJid='b@y.org' "
			       "result='false' range='Domain'/>", thing, &key, &r, &err), 0);
	assert_int_equal(r->range, IOT_RANGE_DOMAIN);
	assert_string_equal(r->remote, "y.org");
	assert_false(r->result);
	assert_null(key);
	free(r);

	/* range='All' needs no remoteJid. */
	assert_int_equal(parse(f, "<isFriendRule " OWNER_NS " jid='dev@x.org' result='1' "
			       "range='All'/>", thing, &key, &r, &err), 0);
	assert_int_equal(r->range, IOT_RANGE_ALL);
	assert_string_equal(r->remote, "");
	free(r);
}

static void test_parse_read_rule_with_partial_and_nodes(void **state)
{
	struct fixture *f = *state;
	char thing[JID_MAX];
	const char *key, *err;
	struct iot_rule *r;

	assert_int_equal(parse(f, "<canReadRule " OWNER_NS " jid='dev@x.org' remoteJid='b@y.org' "
			       "result='true'><nd nodeId='N1'/><nd nodeId='N2'/>"
			       "<partial><f n='Temperature'/><f n='Humidity'/><f n='Temperature'/>"
			       "</partial><fromJid/></canReadRule>", thing, &key, &r, &err), 0);
	assert_int_equal(r->kind, IOT_RULE_READ);
	assert_int_equal(r->range, IOT_RANGE_JID);
	assert_string_equal(r->nodes, "N1\x1fN2");
	assert_string_equal(r->partial, "Temperature\x1fHumidity");
	free(r);

	/* A denying rule restricts nothing: its partial is dropped. */
	assert_int_equal(parse(f, "<canReadRule " OWNER_NS " jid='dev@x.org' remoteJid='b@y.org' "
			       "result='false'><partial><f n='A'/></partial></canReadRule>",
			       thing, &key, &r, &err), 0);
	assert_null(r->partial);
	free(r);

	/* An empty <partial/> permits no field at all. */
	assert_int_equal(parse(f, "<canReadRule " OWNER_NS " jid='dev@x.org' result='true'>"
			       "<partial/><all/></canReadRule>", thing, &key, &r, &err), 0);
	assert_non_null(r->partial);
	assert_string_equal(r->partial, "");
	assert_int_equal(r->range, IOT_RANGE_ALL);
	free(r);
}

static void test_parse_control_rule_token_ranges(void **state)
{
	struct fixture *f = *state;
	char thing[JID_MAX];
	const char *key, *err;
	struct iot_rule *r;

	assert_int_equal(parse(f, "<canControlRule " OWNER_NS " jid='dev@x.org' result='true'>"
			       "<partial><p n='Relay'/></partial><fromService token='S1'/>"
			       "</canControlRule>", thing, &key, &r, &err), 0);
	assert_int_equal(r->kind, IOT_RULE_CONTROL);
	assert_int_equal(r->range, IOT_RANGE_SERVICE);
	assert_string_equal(r->remote, "S1");
	assert_string_equal(r->partial, "Relay");
	free(r);

	assert_int_equal(parse(f, "<canControlRule " OWNER_NS " jid='dev@x.org' remoteJid='b@y.org' "
			       "result='true'><fromDomain/></canControlRule>", thing, &key, &r, &err),
			 0);
	assert_int_equal(r->range, IOT_RANGE_DOMAIN);
	assert_string_equal(r->remote, "y.org");
	free(r);
}

static void test_parse_rejects_malformed_rules(void **state)
{
	struct fixture *f = *state;
	static const char *const bad[] = {
		/* no thing, or a thing without a localpart */
		"<isFriendRule " OWNER_NS " remoteJid='b@y.org' result='true'/>",
		"<isFriendRule " OWNER_NS " jid='x.org' remoteJid='b@y.org' result='true'/>",
		/* bad result, bad range */
		"<isFriendRule " OWNER_NS " jid='d@x.org' remoteJid='b@y.org' result='yes'/>",
		"<isFriendRule " OWNER_NS " jid='d@x.org' remoteJid='b@y.org' result='true' range='Me'/>",
		/* Caller without remoteJid */
		"<isFriendRule " OWNER_NS " jid='d@x.org' result='true'/>",
		/* a bad remoteJid */
		"<isFriendRule " OWNER_NS " jid='d@x.org' remoteJid='a@@b' result='true'/>",
		/* no range and no remoteJid */
		"<canReadRule " OWNER_NS " jid='d@x.org' result='true'/>",
		/* two ranges */
		"<canReadRule " OWNER_NS " jid='d@x.org' result='true'><all/><all/></canReadRule>",
		/* a token range without token */
		"<canReadRule " OWNER_NS " jid='d@x.org' result='true'><fromUser/></canReadRule>",
		/* parameters in a read rule, fields in a control rule */
		"<canReadRule " OWNER_NS " jid='d@x.org' result='true'><partial><p n='A'/></partial>"
		"<all/></canReadRule>",
		"<canControlRule " OWNER_NS " jid='d@x.org' result='true'><partial><f n='A'/></partial>"
		"<all/></canControlRule>",
		/* an unknown child, a node without id, two partials, a name without n */
		"<canReadRule " OWNER_NS " jid='d@x.org' result='true'><bogus/><all/></canReadRule>",
		"<canReadRule " OWNER_NS " jid='d@x.org' result='true'><nd/><all/></canReadRule>",
		"<canReadRule " OWNER_NS " jid='d@x.org' result='true'><partial/><partial/><all/>"
		"</canReadRule>",
		"<canReadRule " OWNER_NS " jid='d@x.org' result='true'><partial><f/></partial><all/>"
		"</canReadRule>",
		/* another namespace, another element */
		"<isFriendRule xmlns='urn:other' jid='d@x.org' result='true' range='All'/>",
		"<isFriend " OWNER_NS " jid='d@x.org' result='true' range='All'/>",
	};
	char thing[JID_MAX];
	const char *key, *err;
	struct iot_rule *r;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		r = (struct iot_rule *)1;
		if (parse(f, bad[i], thing, &key, &r, &err) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
		assert_null(r);
		assert_non_null(err);
	}
}

static void test_parse_limits_names_and_nodes(void **state)
{
	struct fixture *f = *state;
	char text[16384], thing[JID_MAX], longname[IOT_NAME_MAX + 2];
	const char *key, *err;
	struct iot_rule *r;
	size_t n;

	n = (size_t)snprintf(text, sizeof(text), "<canReadRule " OWNER_NS " jid='d@x.org' "
			     "result='true'><partial>");
	for (int i = 0; i <= IOT_RULE_NAMES_MAX; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "<f n='F%d'/>", i);
	snprintf(text + n, sizeof(text) - n, "</partial><all/></canReadRule>");
	assert_int_equal(parse(f, text, thing, &key, &r, &err), -EINVAL);

	n = (size_t)snprintf(text, sizeof(text), "<canReadRule " OWNER_NS " jid='d@x.org' "
			     "result='true'>");
	for (int i = 0; i <= IOT_RULE_NODES_MAX; i++)
		n += (size_t)snprintf(text + n, sizeof(text) - n, "<nd nodeId='N%d'/>", i);
	snprintf(text + n, sizeof(text) - n, "<all/></canReadRule>");
	assert_int_equal(parse(f, text, thing, &key, &r, &err), -EINVAL);

	memset(longname, 'x', sizeof(longname) - 1);
	longname[sizeof(longname) - 1] = '\0';
	snprintf(text, sizeof(text), "<canReadRule " OWNER_NS " jid='d@x.org' result='true'>"
		 "<partial><f n='%s'/></partial><all/></canReadRule>", longname);
	assert_int_equal(parse(f, text, thing, &key, &r, &err), -EINVAL);
}

static void test_parsed_rule_decides(void **state)
{
	struct fixture *f = *state;
	struct iot_query q = query(IOT_RULE_READ, "bob@y.org", "y.org");
	struct rules l = { 0 };
	char thing[JID_MAX];
	const char *key, *err;
	struct iot_decision d;

	assert_int_equal(parse(f, "<canReadRule " OWNER_NS " jid='d@x.org' remoteJid='BOB@y.org' "
			       "result='true'><partial><f n='Temperature'/></partial></canReadRule>",
			       thing, &key, &l.head, &err), 0);
	assert_int_equal(decide(&l, &q, &d), IOT_ALLOW);
	assert_true(iot_decision_name_ok(&d, "Temperature"));
	assert_false(iot_decision_name_ok(&d, "Humidity"));
	free_rules(&l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_no_rule_means_ask),
		cmocka_unit_test(test_jid_rule_allows_that_jid_only),
		cmocka_unit_test(test_more_specific_range_wins),
		cmocka_unit_test(test_domain_rule_is_exact_domain),
		cmocka_unit_test(test_token_rules_need_the_token),
		cmocka_unit_test(test_newest_rule_wins_a_tie),
		cmocka_unit_test(test_kinds_are_separate),
		cmocka_unit_test(test_partial_names),
		cmocka_unit_test(test_empty_partial_permits_nothing),
		cmocka_unit_test(test_nodes_are_decided_one_by_one),
		cmocka_unit_test(test_node_rule_beats_thing_rule),
		cmocka_unit_test(test_all_nodes_denied_is_deny),
		cmocka_unit_test(test_request_without_nodes_limited_by_rule),
		cmocka_unit_test(test_list_has_and_same_key),
		cmocka_unit_test(test_names_round_trip),
		cmocka_unit_test_setup_teardown(test_parse_friend_rule, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_read_rule_with_partial_and_nodes, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_parse_control_rule_token_ranges, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_rejects_malformed_rules, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parse_limits_names_and_nodes, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parsed_rule_decides, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
