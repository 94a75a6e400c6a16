/* SPDX-License-Identifier: MIT */
/*
 * The pubsub engine's pure parts: access decisions (XEP-0060 4.5, 6.1.3,
 * 6.5, 7.1.3), configuration forms and publish-options preconditions
 * (7.1.5), the stored configuration text, the node registry, and the
 * XEP-0115 verification string PEP uses to trust a client's caps.
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

#include "caps.h"
#include "pep.h"
#include "pubsub_node.h"
#include "roster.h"
#include "stored_xml.h"

static const struct ps_limits lim = { .max_nodes = 10, .max_items = 100, .max_item_bytes = 1024 };

static struct xml_pool *pool;
static struct arena arena;

/* A tree from XML text (the default namespace around it is jabber:client). */
static struct xml_node *parse(const char *text)
{
	struct xml_node *n = stored_xml_parse(pool, &arena, text, strlen(text));

	assert_non_null(n);
	return n;
}

static int setup(void **state)
{
	pool = xml_pool_new(NULL);
	arena_init(&arena, 4096);
	return pool && ps_registry_init(1) == 0 ? 0 : -1;
}

static int teardown(void **state)
{
	ps_registry_free();
	arena_release(&arena);
	xml_pool_free(pool);
	return 0;
}

static struct ps_config cfg_with(enum ps_access a)
{
	struct ps_config c;

	ps_config_default(&c, false);
	c.access = a;
	return c;
}

/* ---- Access models ---- */

static void test_open_allows_anyone_but_outcasts(void **state)
{
	struct ps_config c = cfg_with(PS_ACCESS_OPEN);
	struct ps_requester r = { 0 };

	assert_int_equal(ps_access_check(&c, &r), PS_ALLOW);
	r.affil = PS_AFFIL_OUTCAST;
	assert_int_equal(ps_access_check(&c, &r), PS_DENY_OUTCAST);
	r.affil = PS_AFFIL_PUBLISH_ONLY;	/* table 4.1: may not subscribe or retrieve */
	assert_int_equal(ps_access_check(&c, &r), PS_DENY_FORBIDDEN);
	assert_false(ps_access_needs_roster(&c, &r));
}

static void test_presence_needs_subscription_from(void **state)
{
	struct ps_config c = cfg_with(PS_ACCESS_PRESENCE);
	struct ps_requester r = { 0 };

	assert_true(ps_access_needs_roster(&c, &r));
	assert_int_equal(ps_access_check(&c, &r), PS_DENY_PRESENCE);
	r.in_groups = true;	/* groups alone do not give presence access */
	assert_int_equal(ps_access_check(&c, &r), PS_DENY_PRESENCE);
	r.has_from = true;
	assert_int_equal(ps_access_check(&c, &r), PS_ALLOW);
	/* An outcast is out even with a presence subscription. */
	r.affil = PS_AFFIL_OUTCAST;
	assert_int_equal(ps_access_check(&c, &r), PS_DENY_OUTCAST);
	assert_false(ps_access_needs_roster(&c, &r));
}

static void test_roster_needs_an_allowed_group(void **state)
{
	struct ps_config c = cfg_with(PS_ACCESS_ROSTER);
	struct ps_requester r = { .has_from = true };

	assert_true(ps_access_needs_roster(&c, &r));
	assert_int_equal(ps_access_check(&c, &r), PS_DENY_ROSTER);
	r.in_groups = true;
	assert_int_equal(ps_access_check(&c, &r), PS_ALLOW);
}

static void test_whitelist_needs_membership(void **state)
{
	struct ps_config c = cfg_with(PS_ACCESS_WHITELIST);
	struct ps_requester r = { .has_from = true, .in_groups = true };

	assert_int_equal(ps_access_check(&c, &r), PS_DENY_WHITELIST);
	assert_false(ps_access_needs_roster(&c, &r));
	r.affil = PS_AFFIL_MEMBER;
	assert_int_equal(ps_access_check(&c, &r), PS_ALLOW);
	r.affil = PS_AFFIL_PUBLISHER;
	assert_int_equal(ps_access_check(&c, &r), PS_ALLOW);
	r.affil = PS_AFFIL_OWNER;
	assert_int_equal(ps_access_check(&c, &r), PS_ALLOW);
}

/* The PEP account itself passes every model, whatever its affiliation says. */
static void test_owner_account_always_allowed(void **state)
{
	enum ps_access models[] = { PS_ACCESS_OPEN, PS_ACCESS_PRESENCE, PS_ACCESS_ROSTER,
				    PS_ACCESS_WHITELIST };
	struct ps_requester r = { .is_owner_account = true };

	for (size_t i = 0; i < sizeof(models) / sizeof(models[0]); i++) {
		struct ps_config c = cfg_with(models[i]);

		assert_int_equal(ps_access_check(&c, &r), PS_ALLOW);
		assert_false(ps_access_needs_roster(&c, &r));
		assert_int_equal(ps_publish_check(&c, &r), PS_ALLOW);
	}
}

static void test_publish_models(void **state)
{
	struct ps_config c = cfg_with(PS_ACCESS_OPEN);
	struct ps_requester r = { 0 };

	/* publishers (the default): owners, publishers and publish-only. */
	assert_int_equal(ps_publish_check(&c, &r), PS_DENY_FORBIDDEN);
	r.affil = PS_AFFIL_MEMBER;
	assert_int_equal(ps_publish_check(&c, &r), PS_DENY_FORBIDDEN);
	r.affil = PS_AFFIL_PUBLISH_ONLY;
	assert_int_equal(ps_publish_check(&c, &r), PS_ALLOW);
	r.affil = PS_AFFIL_PUBLISHER;
	assert_int_equal(ps_publish_check(&c, &r), PS_ALLOW);
	/* subscribers: a subscription is enough. */
	c.publish_model = PS_PUBLISH_SUBSCRIBERS;
	r.affil = PS_AFFIL_NONE;
	assert_int_equal(ps_publish_check(&c, &r), PS_DENY_FORBIDDEN);
	r.subscribed = true;
	assert_int_equal(ps_publish_check(&c, &r), PS_ALLOW);
	/* open: anyone but an outcast. */
	c.publish_model = PS_PUBLISH_OPEN;
	r.subscribed = false;
	assert_int_equal(ps_publish_check(&c, &r), PS_ALLOW);
	r.affil = PS_AFFIL_OUTCAST;
	assert_int_equal(ps_publish_check(&c, &r), PS_DENY_OUTCAST);
}

static void test_verdict_errors_as_xep0060_names_them(void **state)
{
	const char *cond, *app;

	ps_verdict_error(PS_DENY_PRESENCE, &cond, &app);
	assert_string_equal(cond, "not-authorized");
	assert_string_equal(app, "presence-subscription-required");
	ps_verdict_error(PS_DENY_ROSTER, &cond, &app);
	assert_string_equal(cond, "not-authorized");
	assert_string_equal(app, "not-in-roster-group");
	ps_verdict_error(PS_DENY_WHITELIST, &cond, &app);
	assert_string_equal(cond, "not-allowed");
	assert_string_equal(app, "closed-node");
	ps_verdict_error(PS_DENY_OUTCAST, &cond, &app);
	assert_string_equal(cond, "forbidden");
	assert_null(app);
}

static void test_groups_match(void **state)
{
	char allowed[] = "friends\x1f" "family", contact[] = "work\x1f" "family";

	assert_true(ps_groups_match(allowed, contact));
	assert_false(ps_groups_match(allowed, "work"));
	assert_false(ps_groups_match(allowed, NULL));
	assert_false(ps_groups_match(NULL, contact));
	/* Whole names only: a prefix is not the group. */
	assert_false(ps_groups_match("fam", contact));
	assert_false(ps_groups_match("family", "familyx"));
	assert_true(ps_groups_match_all("family", contact));
	assert_false(ps_groups_match_all(allowed, contact));
	assert_true(ps_groups_match_all(NULL, contact));
}

/* ---- Configuration forms ---- */

#define FORM_OPEN "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>" \
		  "<value>http://jabber.org/protocol/pubsub#node_config</value></field>"
#define PO_OPEN "<x xmlns='jabber:x:data' type='submit'><field var='FORM_TYPE' type='hidden'>" \
		"<value>http://jabber.org/protocol/pubsub#publish-options</value></field>"
#define FIELD(var, val) "<field var='" var "'><value>" val "</value></field>"

static void test_config_form_applies_known_fields(void **state)
{
	struct ps_config c;
	struct ps_form_error err = { 0 };

	ps_config_default(&c, true);
	assert_int_equal(c.access, PS_ACCESS_PRESENCE);
	assert_int_equal(c.send_last, PS_SEND_LAST_ON_SUB_AND_PRESENCE);
	assert_int_equal(ps_config_apply_form(&c, parse(FORM_OPEN
		FIELD("pubsub#access_model", "roster")
		"<field var='pubsub#roster_groups_allowed'><value>a</value><value>b</value></field>"
		FIELD("pubsub#max_items", "max") FIELD("pubsub#persist_items", "false")
		FIELD("pubsub#title", "T") FIELD("pubsub#notify_retract", "0")
		FIELD("pubsub#send_last_published_item", "never")
		FIELD("pubsub#x-unknown", "ignored") "</x>"), &lim, false, &err), 0);
	assert_int_equal(c.access, PS_ACCESS_ROSTER);
	assert_string_equal(c.groups, "a\x1f" "b");
	assert_true(c.max_items_max);
	assert_int_equal(ps_config_max_items(&c, &lim), lim.max_items);
	assert_false(c.persist_items);
	assert_false(c.notify_retract);
	assert_string_equal(c.title, "T");
	assert_int_equal(c.send_last, PS_SEND_LAST_NEVER);
	ps_config_free(&c);
}

static void test_config_form_rejects_bad_values_without_change(void **state)
{
	struct ps_config c;
	struct ps_form_error err = { 0 };

	ps_config_default(&c, false);
	/* A later bad field undoes the earlier good one: all or nothing. */
	assert_int_equal(ps_config_apply_form(&c, parse(FORM_OPEN
		FIELD("pubsub#title", "x") FIELD("pubsub#access_model", "authorize") "</x>"),
		&lim, false, &err), -EINVAL);
	assert_string_equal(err.cond, "not-acceptable");
	assert_string_equal(err.app, "unsupported-access-model");
	assert_null(c.title);
	assert_int_equal(c.access, PS_ACCESS_OPEN);
	/* max_items above max_items_per_node. */
	assert_int_equal(ps_config_apply_form(&c, parse(FORM_OPEN
		FIELD("pubsub#max_items", "101") "</x>"), &lim, false, &err), -EINVAL);
	assert_string_equal(err.cond, "not-acceptable");
	assert_int_equal(ps_config_apply_form(&c, parse(FORM_OPEN
		FIELD("pubsub#max_items", "0") "</x>"), &lim, false, &err), -EINVAL);
	assert_int_equal(ps_config_apply_form(&c, parse(FORM_OPEN
		FIELD("pubsub#persist_items", "yes") "</x>"), &lim, false, &err), -EINVAL);
	assert_int_equal(ps_config_apply_form(&c, parse(FORM_OPEN
		FIELD("pubsub#node_type", "collection") "</x>"), &lim, false, &err), -EINVAL);
	assert_int_equal(c.max_items, PS_DEFAULT_MAX_ITEMS);
	assert_true(c.persist_items);
	/* Another form type altogether. */
	assert_int_equal(ps_config_apply_form(&c, parse("<x xmlns='jabber:x:data' type='submit'>"
		FIELD("FORM_TYPE", "urn:other") "</x>"), &lim, false, &err), -EINVAL);
	assert_string_equal(err.cond, "bad-request");
	/* A cancelled form changes nothing and succeeds. */
	assert_int_equal(ps_config_apply_form(&c, parse("<x xmlns='jabber:x:data' type='cancel'/>"),
					      &lim, false, &err), 0);
	ps_config_free(&c);
}

static void test_strict_form_refuses_unknown_fields(void **state)
{
	struct ps_config c;
	struct ps_form_error err = { 0 };

	ps_config_default(&c, true);
	assert_int_equal(ps_config_apply_form(&c, parse(PO_OPEN
		FIELD("pubsub#access_model", "open") FIELD("pubsub#bogus", "1") "</x>"),
		&lim, true, &err), -EINVAL);
	assert_string_equal(err.cond, "conflict");
	assert_string_equal(err.app, "precondition-not-met");
	assert_int_equal(c.access, PS_ACCESS_PRESENCE);
	ps_config_free(&c);
}

static void test_preconditions(void **state)
{
	struct ps_config c;
	struct ps_form_error err = { 0 };

	ps_config_default(&c, true);
	assert_int_equal(ps_config_check_preconditions(&c, parse(PO_OPEN
		FIELD("pubsub#access_model", "presence") FIELD("pubsub#persist_items", "true")
		"</x>"), &lim, &err), 0);
	/* A precondition that differs from the configuration: conflict. */
	assert_int_equal(ps_config_check_preconditions(&c, parse(PO_OPEN
		FIELD("pubsub#access_model", "open") "</x>"), &lim, &err), -EINVAL);
	assert_string_equal(err.cond, "conflict");
	assert_string_equal(err.app, "precondition-not-met");
	/* Unknown fields cannot hold. */
	assert_int_equal(ps_config_check_preconditions(&c, parse(PO_OPEN
		FIELD("pubsub#whatever", "1") "</x>"), &lim, &err), -EINVAL);
	assert_string_equal(err.app, "precondition-not-met");
	/* 'max' is the service's limit, as a number or by name. */
	c.max_items_max = true;
	assert_int_equal(ps_config_check_preconditions(&c, parse(PO_OPEN
		FIELD("pubsub#max_items", "max") "</x>"), &lim, &err), 0);
	assert_int_equal(ps_config_check_preconditions(&c, parse(PO_OPEN
		FIELD("pubsub#max_items", "100") "</x>"), &lim, &err), 0);
	assert_int_equal(ps_config_check_preconditions(&c, parse(PO_OPEN
		FIELD("pubsub#max_items", "1") "</x>"), &lim, &err), -EINVAL);
	c.max_items_max = false;
	assert_int_equal(ps_config_check_preconditions(&c, parse(PO_OPEN
		FIELD("pubsub#max_items", "max") "</x>"), &lim, &err), -EINVAL);
	/* The form must say it is publish-options. */
	assert_int_equal(ps_config_check_preconditions(&c, parse(FORM_OPEN "</x>"), &lim, &err),
			 -EINVAL);
	assert_string_equal(err.cond, "bad-request");
	ps_config_free(&c);
}

static void test_config_text_round_trip(void **state)
{
	struct ps_config c, back;
	struct strbuf b = STRBUF_INIT;

	ps_config_default(&c, false);
	c.access = PS_ACCESS_WHITELIST;
	c.max_items_max = true;
	c.notify_config = true;
	c.notification_normal = true;
	c.title = strdup("line one\nline two \\ backslash=eq");
	c.groups = strdup("g1\x1fg2");
	ps_config_serialize(&b, &c);
	assert_false(b.oom);
	assert_int_equal(ps_config_parse(&back, false, b.data, b.len), 0);
	assert_int_equal(back.access, PS_ACCESS_WHITELIST);
	assert_true(back.max_items_max);
	assert_true(back.notify_config);
	assert_true(back.notification_normal);
	assert_string_equal(back.title, c.title);
	assert_string_equal(back.groups, c.groups);
	assert_null(back.description);
	ps_config_free(&back);
	/* Unknown keys are skipped; a line without '=' is corrupt. */
	assert_int_equal(ps_config_parse(&back, true, "future=1\naccess=open\n", 21), 0);
	assert_int_equal(back.access, PS_ACCESS_OPEN);
	assert_int_equal(back.send_last, PS_SEND_LAST_ON_SUB_AND_PRESENCE);
	ps_config_free(&back);
	assert_int_equal(ps_config_parse(&back, true, "garbage\n", 8), -EINVAL);
	assert_int_equal(ps_config_parse(&back, true, "access=nonsense\n", 16), -EINVAL);
	strbuf_free(&b);
	ps_config_free(&c);
}

static void test_config_form_lists_current_values(void **state)
{
	struct ps_config c;
	struct xml_node *x;
	struct strbuf b = STRBUF_INIT;

	ps_config_default(&c, true);
	c.groups = strdup("friends");
	x = ps_config_form(&arena, &c, "form", &lim);
	assert_non_null(x);
	xml_serialize(&b, x, NULL);
	assert_non_null(strstr(b.data, "<value>presence</value>"));
	assert_non_null(strstr(b.data, "<value>friends</value>"));
	assert_non_null(strstr(b.data, NS_PUBSUB_NODE_CONFIG));
	assert_non_null(strstr(b.data, "<option><value>whitelist</value></option>"));
	strbuf_free(&b);
	ps_config_free(&c);
}

/* ---- Registry ---- */

static void test_registry_nodes_affiliations_subscriptions(void **state)
{
	struct ps_host *h = ps_host_get("pubsub.example", 14, false, 0);
	struct ps_config c;
	struct ps_node *n, *n2;
	struct ps_subscription *s;
	char name[32];

	assert_non_null(h);
	assert_ptr_equal(ps_host_find("pubsub.example", 14), h);
	assert_null(ps_host_find("pubsub.exampl", 13));
	ps_config_default(&c, false);
	n = ps_node_add(h, "a", 1, 0, &c, "o@example", 1);
	assert_non_null(n);
	assert_null(c.title);	/* taken over */
	assert_ptr_equal(ps_node_find(h, "a", 1), n);
	assert_ptr_equal(ps_node_by_id(n->id), n);
	/* Many nodes: the indexes grow and still find everything. */
	for (int i = 0; i < 500; i++) {
		snprintf(name, sizeof(name), "node-%d", i);
		ps_config_default(&c, false);
		assert_non_null(ps_node_add(h, name, strlen(name), 0, &c, "o@example", 1));
	}
	assert_int_equal(h->nnodes, 501);
	assert_non_null(ps_node_find(h, "node-321", 8));
	assert_ptr_equal(ps_node_find(h, "a", 1), n);

	assert_int_equal(ps_affil_set(n, "o@example", 9, PS_AFFIL_OWNER), 0);
	assert_int_equal(ps_affil_set(n, "m@example", 9, PS_AFFIL_MEMBER), 0);
	assert_int_equal(ps_affil_get(n, "m@example", 9), PS_AFFIL_MEMBER);
	assert_int_equal(ps_owner_count(n), 1);
	assert_string_equal(ps_first_owner(n)->jid, "o@example");
	assert_int_equal(ps_host_count_owned(h, "o@example", 9), 1);
	assert_int_equal(ps_affil_set(n, "m@example", 9, PS_AFFIL_NONE), 0);
	assert_int_equal(ps_affil_get(n, "m@example", 9), PS_AFFIL_NONE);

	s = ps_sub_add(n, "u@example/r", 11, PS_SUB_SUBSCRIBED, NULL);
	assert_non_null(s);
	assert_int_equal(strlen(s->subid), PS_SUBID_LEN);
	assert_int_equal(s->bare_len, 9);
	/* One subscription per JID: adding again returns the same one. */
	assert_ptr_equal(ps_sub_add(n, "u@example/r", 11, PS_SUB_SUBSCRIBED, NULL), s);
	assert_true(ps_sub_any_for_bare(n, "u@example", 9));
	assert_false(ps_sub_any_for_bare(n, "u@exampl", 8));
	assert_int_equal(n->nsubs, 1);
	ps_sub_remove(n, s);
	assert_int_equal(n->nsubs, 0);

	/* A removed node stays valid while referenced, but is not found. */
	ps_node_ref(n);
	ps_node_remove(n);
	assert_null(ps_node_find(h, "a", 1));
	assert_null(ps_node_by_id(n->id));
	assert_true(n->deleted);
	assert_int_equal(h->nnodes, 500);
	ps_node_unref(n);
	n2 = ps_node_find(h, "node-0", 6);
	assert_non_null(n2);
	assert_true(n2->id > 0);
}

static void test_names_parse_both_ways(void **state)
{
	for (int a = PS_AFFIL_NONE; a <= PS_AFFIL_OWNER; a++)
		assert_int_equal(ps_affil_parse(ps_affil_name((enum ps_affil)a)), a);
	assert_int_equal((int)ps_affil_parse("king"), -1);
	assert_int_equal((int)ps_sub_state_parse("bogus"), -1);
	assert_int_equal(ps_sub_state_parse("subscribed"), PS_SUB_SUBSCRIBED);
	assert_int_equal(ps_access_parse("authorize"), 0);
	assert_int_equal(ps_access_parse(NULL), 0);
}

/* ---- XEP-0115 verification strings ---- */

static void test_caps_ver_simple_example(void **state)
{
	char ver[CAPS_VER_MAX];
	struct xml_node *q = parse(
		"<query xmlns='http://jabber.org/protocol/disco#info'>"
		"<identity category='client' name='Exodus 0.9.1' type='pc'/>"
		"<feature var='http://jabber.org/protocol/caps'/>"
		"<feature var='http://jabber.org/protocol/disco#info'/>"
		"<feature var='http://jabber.org/protocol/disco#items'/>"
		"<feature var='http://jabber.org/protocol/muc'/></query>");

	assert_int_equal(pep_caps_ver(q, ver, sizeof(ver)), 0);
	assert_string_equal(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
}

/* XEP-0115 5.3: two identities in two languages and a software-info form. */
static void test_caps_ver_complex_example_with_form(void **state)
{
	char ver[CAPS_VER_MAX];
	struct xml_node *q = parse(
		"<query xmlns='http://jabber.org/protocol/disco#info'>"
		"<identity xml:lang='en' category='client' name='Psi 0.11' type='pc'/>"
		"<identity xml:lang='el' category='client' name='\xce\xa8 0.11' type='pc'/>"
		"<feature var='http://jabber.org/protocol/caps'/>"
		"<feature var='http://jabber.org/protocol/disco#info'/>"
		"<feature var='http://jabber.org/protocol/disco#items'/>"
		"<feature var='http://jabber.org/protocol/muc'/>"
		"<x xmlns='jabber:x:data' type='result'>"
		"<field var='FORM_TYPE' type='hidden'><value>urn:xmpp:dataforms:softwareinfo</value></field>"
		"<field var='ip_version' type='text-multi'><value>ipv4</value><value>ipv6</value></field>"
		"<field var='os'><value>Mac</value></field>"
		"<field var='os_version'><value>10.5.1</value></field>"
		"<field var='software'><value>Psi</value></field>"
		"<field var='software_version'><value>0.11</value></field>"
		"</x></query>");

	assert_int_equal(pep_caps_ver(q, ver, sizeof(ver)), 0);
	assert_string_equal(ver, "q07IKJEyjvHSyhy//CH0CxmKi8w=");
}

/* 5.4: repeated features or form types make the answer ill-formed (no cache poisoning). */
static void test_caps_ver_rejects_ill_formed_answers(void **state)
{
	char ver[CAPS_VER_MAX];

	assert_int_equal(pep_caps_ver(parse(
		"<query xmlns='http://jabber.org/protocol/disco#info'>"
		"<identity category='client' type='pc'/>"
		"<feature var='a'/><feature var='a'/></query>"), ver, sizeof(ver)), -EINVAL);
	assert_int_equal(pep_caps_ver(parse(
		"<query xmlns='http://jabber.org/protocol/disco#info'>"
		"<identity category='client' type='pc'/><identity category='client' type='pc'/>"
		"</query>"), ver, sizeof(ver)), -EINVAL);
	assert_int_equal(pep_caps_ver(parse(
		"<query xmlns='http://jabber.org/protocol/disco#info'>"
		"<identity category='client' type='pc'/>"
		"<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
		"<value>urn:a</value></field></x>"
		"<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE' type='hidden'>"
		"<value>urn:a</value></field></x></query>"), ver, sizeof(ver)), -EINVAL);
	assert_int_equal(pep_caps_ver(parse(
		"<query xmlns='http://jabber.org/protocol/disco#info'>"
		"<identity type='pc'/></query>"), ver, sizeof(ver)), -EINVAL);
	/* A form whose FORM_TYPE is not hidden is ignored, not an error. */
	assert_int_equal(pep_caps_ver(parse(
		"<query xmlns='http://jabber.org/protocol/disco#info'>"
		"<identity category='client' name='Exodus 0.9.1' type='pc'/>"
		"<feature var='http://jabber.org/protocol/caps'/>"
		"<feature var='http://jabber.org/protocol/disco#info'/>"
		"<feature var='http://jabber.org/protocol/disco#items'/>"
		"<feature var='http://jabber.org/protocol/muc'/>"
		"<x xmlns='jabber:x:data' type='result'><field var='FORM_TYPE'>"
		"<value>urn:a</value></field></x></query>"), ver, sizeof(ver)), 0);
	assert_string_equal(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
}

/* New ids come from the reserved block; loaded ids (other blocks) leave it alone. */
static void test_node_ids_come_from_the_reserved_block(void **state)
{
	struct ps_host *h = ps_host_get("blocks.example", 14, false, 0);
	const uint64_t base = (uint64_t)5 << 32;
	struct ps_config c;
	struct ps_node *n;

	assert_non_null(h);
	ps_node_ids_reserved(5);
	ps_config_default(&c, false);
	n = ps_node_add(h, "loaded", 6, ((uint64_t)4 << 32) + 9, &c, "o@example", 1);
	assert_non_null(n);
	ps_config_default(&c, false);
	n = ps_node_add(h, "new", 3, 0, &c, "o@example", 1);
	assert_non_null(n);
	assert_true(n->id == base + 1);
	assert_ptr_equal(ps_node_by_id(base + 1), n);
	/* The block used up: no id from the next one (another process's). */
	ps_node_ids_reserved(6);
	ps_config_default(&c, false);
	assert_non_null(ps_node_add(h, "last", 4, ((uint64_t)7 << 32) - 1, &c, "o@example", 1));
	ps_config_default(&c, false);
	assert_null(ps_node_add(h, "over", 4, 0, &c, "o@example", 1));
	assert_null(ps_node_find(h, "over", 4));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_open_allows_anyone_but_outcasts),
		cmocka_unit_test(test_presence_needs_subscription_from),
		cmocka_unit_test(test_roster_needs_an_allowed_group),
		cmocka_unit_test(test_whitelist_needs_membership),
		cmocka_unit_test(test_owner_account_always_allowed),
		cmocka_unit_test(test_publish_models),
		cmocka_unit_test(test_verdict_errors_as_xep0060_names_them),
		cmocka_unit_test(test_groups_match),
		cmocka_unit_test(test_config_form_applies_known_fields),
		cmocka_unit_test(test_config_form_rejects_bad_values_without_change),
		cmocka_unit_test(test_strict_form_refuses_unknown_fields),
		cmocka_unit_test(test_preconditions),
		cmocka_unit_test(test_config_text_round_trip),
		cmocka_unit_test(test_config_form_lists_current_values),
		cmocka_unit_test(test_registry_nodes_affiliations_subscriptions),
		cmocka_unit_test(test_names_parse_both_ways),
		cmocka_unit_test(test_caps_ver_simple_example),
		cmocka_unit_test(test_caps_ver_complex_example_with_form),
		cmocka_unit_test(test_caps_ver_rejects_ill_formed_answers),
		cmocka_unit_test(test_node_ids_come_from_the_reserved_block),
	};

	return cmocka_run_group_tests(tests, setup, teardown);
}
