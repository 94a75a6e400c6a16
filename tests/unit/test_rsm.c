/* SPDX-License-Identifier: MIT */
/*
 * XEP-0059 Result Set Management helper: parsing requests (good and
 * malformed), building replies (tree and bytes agree), and paging an
 * in-memory list forwards and backwards until complete.
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
#include "rsm.h"
#include "stored_xml.h"
#include "strbuf.h"
#include "xml.h"

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

/* Parses "<query xmlns='q'>" + inner + "</query>" and reads its set. */
static int parse(struct fixture *f, const char *inner, struct rsm_request *r, const char **why)
{
	char text[4096];
	struct xml_node *q;

	snprintf(text, sizeof(text), "<query xmlns='urn:test:q'>%s</query>", inner);
	q = stored_xml_parse(f->pool, &f->a, text, strlen(text));
	assert_non_null(q);
	*why = NULL;
	return rsm_parse(&f->a, q, r, why);
}

#define SET(x) "<set xmlns='http://jabber.org/protocol/rsm'>" x "</set>"

static void test_no_set_is_not_an_error(void **state)
{
	struct rsm_request r;
	const char *why;

	assert_int_equal(parse(*state, "<x xmlns='jabber:x:data'/>", &r, &why), 0);
	assert_false(r.present);
	assert_false(r.has_max);
	assert_null(r.after);
	assert_null(r.before);
	assert_false(rsm_backwards(&r));
}

static void test_parses_max_after_before(void **state)
{
	struct rsm_request r;
	const char *why;

	assert_int_equal(parse(*state, SET("<max> 10\n</max><after>09af3-cc343</after>"), &r, &why),
			 0);
	assert_true(r.present);
	assert_true(r.has_max);
	assert_int_equal(r.max, 10);
	assert_string_equal(r.after, "09af3-cc343");
	assert_null(r.before);
	assert_false(rsm_backwards(&r));

	assert_int_equal(parse(*state, SET("<before>a b</before>"), &r, &why), 0);
	assert_false(r.has_max);
	assert_string_equal(r.before, "a b");	/* UIDs are opaque: spaces kept */
	assert_true(rsm_backwards(&r));
}

static void test_empty_before_asks_for_last_page(void **state)
{
	struct rsm_request r;
	const char *why;

	assert_int_equal(parse(*state, SET("<max>5</max><before/>"), &r, &why), 0);
	assert_non_null(r.before);
	assert_string_equal(r.before, "");
	assert_true(rsm_backwards(&r));
}

static void test_parses_index_and_max_zero(void **state)
{
	struct rsm_request r;
	const char *why;

	assert_int_equal(parse(*state, SET("<max>0</max><index>371</index>"), &r, &why), 0);
	assert_true(r.has_max);
	assert_int_equal(r.max, 0);
	assert_true(r.has_index);
	assert_int_equal(r.index, 371);
	assert_int_equal(parse(*state, SET("<max>4294967295</max>"), &r, &why), 0);
	assert_int_equal(r.max, UINT32_MAX);
}

static void test_rejects_bad_numbers(void **state)
{
	static const char *const bad[] = {
		SET("<max>abc</max>"), SET("<max>-1</max>"), SET("<max></max>"),
		SET("<max>4294967296</max>"), SET("<max>1 2</max>"), SET("<max>0x10</max>"),
		SET("<index>-3</index>"), SET("<index>99999999999999999999</index>"),
	};
	struct rsm_request r;
	const char *why;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		assert_int_equal(parse(*state, bad[i], &r, &why), -EINVAL);
		assert_non_null(why);
	}
}

static void test_rejects_empty_after_and_duplicates(void **state)
{
	struct rsm_request r;
	const char *why;

	assert_int_equal(parse(*state, SET("<after/>"), &r, &why), -EINVAL);
	assert_non_null(why);
	assert_int_equal(parse(*state, SET("<max>1</max><max>2</max>"), &r, &why), -EINVAL);
	assert_int_equal(parse(*state, SET("<after>a</after><after>b</after>"), &r, &why), -EINVAL);
	assert_int_equal(parse(*state, SET("<before/><before>x</before>"), &r, &why), -EINVAL);
	assert_int_equal(parse(*state, SET("<index>1</index><index>2</index>"), &r, &why), -EINVAL);
}

static void test_rejects_index_with_uid(void **state)
{
	struct rsm_request r;
	const char *why;

	assert_int_equal(parse(*state, SET("<index>2</index><after>x</after>"), &r, &why), -EINVAL);
	assert_int_equal(parse(*state, SET("<before/><index>2</index>"), &r, &why), -EINVAL);
}

static void test_rejects_overlong_uid(void **state)
{
	char inner[3000];
	char uid[RSM_UID_MAX + 2];
	struct rsm_request r;
	const char *why;

	memset(uid, 'u', sizeof(uid) - 1);
	uid[sizeof(uid) - 1] = '\0';
	snprintf(inner, sizeof(inner), SET("<after>%s</after>"), uid);
	assert_int_equal(parse(*state, inner, &r, &why), -EINVAL);
	uid[RSM_UID_MAX] = '\0';	/* exactly the limit is fine */
	snprintf(inner, sizeof(inner), SET("<after>%s</after>"), uid);
	assert_int_equal(parse(*state, inner, &r, &why), 0);
	assert_int_equal(strlen(r.after), RSM_UID_MAX);
}

static void test_ignores_foreign_and_unknown_children(void **state)
{
	struct rsm_request r;
	const char *why;

	assert_int_equal(parse(*state, SET("<max xmlns='urn:other'>zz</max><first>q</first>"
					   "<max>3</max>"), &r, &why), 0);
	assert_true(r.has_max);
	assert_int_equal(r.max, 3);
	/* A <set/> in another namespace is not a result set request. */
	assert_int_equal(parse(*state, "<set xmlns='urn:other'><max>x</max></set>", &r, &why), 0);
	assert_false(r.present);
}

static void test_page_size_default_and_cap(void **state)
{
	struct rsm_request r = { 0 };

	assert_int_equal(rsm_page_size(&r, 50, 250), 50);
	assert_int_equal(rsm_page_size(&r, 500, 250), 250);
	r.has_max = true;
	r.max = 10;
	assert_int_equal(rsm_page_size(&r, 50, 250), 10);
	r.max = 100000;
	assert_int_equal(rsm_page_size(&r, 50, 250), 250);
	r.max = 0;
	assert_int_equal(rsm_page_size(&r, 50, 250), 0);
}

static const char *tree_text(struct fixture *f, const struct rsm_reply *rep, struct strbuf *b)
{
	struct xml_node *set = rsm_build(&f->a, NULL, rep);

	assert_non_null(set);
	strbuf_clear(b);
	xml_serialize(b, set, NULL);
	return b->data;
}

static void test_build_full_reply(void **state)
{
	struct rsm_reply rep = { .first = "a1", .last = "z9", .has_index = true, .index = 20,
				 .has_count = true, .count = 800 };
	struct strbuf t = STRBUF_INIT, s = STRBUF_INIT;

	assert_string_equal(tree_text(*state, &rep, &t),
			    "<set xmlns='http://jabber.org/protocol/rsm'><first index='20'>a1</first>"
			    "<last>z9</last><count>800</count></set>");
	rsm_serialize(&s, &rep);
	assert_string_equal(s.data, t.data);
	strbuf_free(&t);
	strbuf_free(&s);
}

static void test_build_empty_page_has_no_first_last(void **state)
{
	struct rsm_reply rep = { .has_count = true, .count = 790 };
	struct strbuf t = STRBUF_INIT, s = STRBUF_INIT;

	assert_string_equal(tree_text(*state, &rep, &t),
			    "<set xmlns='http://jabber.org/protocol/rsm'><count>790</count></set>");
	rsm_serialize(&s, &rep);
	assert_string_equal(s.data, t.data);
	rep.has_count = false;
	strbuf_clear(&s);
	rsm_serialize(&s, &rep);
	assert_string_equal(s.data, "<set xmlns='http://jabber.org/protocol/rsm'></set>");
	strbuf_free(&t);
	strbuf_free(&s);
}

static void test_build_single_item_and_escaping(void **state)
{
	struct fixture *f = *state;
	struct rsm_reply rep = { .first = "<a&'b\">" };
	struct strbuf t = STRBUF_INIT, s = STRBUF_INIT;
	struct xml_node *back;

	tree_text(f, &rep, &t);
	rsm_serialize(&s, &rep);
	assert_string_equal(s.data, t.data);
	/* Bytes parse back to the same UIDs; last defaults to first. */
	back = stored_xml_parse(f->pool, &f->a, s.data, s.len);
	assert_non_null(back);
	assert_string_equal(xml_text(&f->a, xml_child(back, NS_RSM, "first")), "<a&'b\">");
	assert_string_equal(xml_text(&f->a, xml_child(back, NS_RSM, "last")), "<a&'b\">");
	assert_null(xml_attr_get(xml_child(back, NS_RSM, "first"), "index"));
	strbuf_free(&t);
	strbuf_free(&s);
}

static void test_build_appends_to_parent(void **state)
{
	struct fixture *f = *state;
	struct xml_node *fin = xml_node_new(&f->a, "urn:xmpp:mam:2", "fin");
	struct rsm_reply rep = { .first = "x", .last = "y" };

	assert_non_null(rsm_build(&f->a, fin, &rep));
	assert_non_null(xml_child(fin, NS_RSM, "set"));
}

/* ---- rsm_window over items "i0".."i{n-1}" ---- */

static long find_item(void *arg, const char *uid)
{
	size_t n = *(size_t *)arg;
	char *end;
	long v;

	if (uid[0] != 'i' || !uid[1])
		return -1;
	v = strtol(uid + 1, &end, 10);
	return *end || v < 0 || (size_t)v >= n ? -1 : v;
}

static int window(size_t n, const char *after, const char *before, int max, int index,
		  struct rsm_window *w)
{
	struct rsm_request r = { .present = true, .after = after, .before = before };

	if (max >= 0) {
		r.has_max = true;
		r.max = (uint32_t)max;
	}
	if (index >= 0) {
		r.has_index = true;
		r.index = (uint32_t)index;
	}
	return rsm_window(&r, n, 10, 100, find_item, &n, w);
}

static void test_window_first_page(void **state)
{
	struct rsm_window w;

	assert_int_equal(window(25, NULL, NULL, -1, -1, &w), 0);
	assert_int_equal(w.start, 0);
	assert_int_equal(w.len, 10);	/* the default page size */
	assert_false(w.complete);
	assert_int_equal(window(5, NULL, NULL, -1, -1, &w), 0);
	assert_int_equal(w.len, 5);
	assert_true(w.complete);
	assert_int_equal(window(0, NULL, NULL, -1, -1, &w), 0);
	assert_int_equal(w.len, 0);
	assert_true(w.complete);
}

static void test_window_after_and_before(void **state)
{
	struct rsm_window w;

	assert_int_equal(window(25, "i9", NULL, 10, -1, &w), 0);
	assert_int_equal(w.start, 10);
	assert_int_equal(w.len, 10);
	assert_int_equal(window(25, "i19", NULL, 10, -1, &w), 0);
	assert_int_equal(w.start, 20);
	assert_int_equal(w.len, 5);
	assert_true(w.complete);
	assert_int_equal(window(25, "i24", NULL, 10, -1, &w), 0);	/* after the last */
	assert_int_equal(w.len, 0);
	assert_true(w.complete);

	assert_int_equal(window(25, NULL, "i20", 10, -1, &w), 0);
	assert_int_equal(w.start, 10);
	assert_int_equal(w.len, 10);
	assert_false(w.complete);
	assert_int_equal(window(25, NULL, "i3", 10, -1, &w), 0);
	assert_int_equal(w.start, 0);
	assert_int_equal(w.len, 3);
	assert_true(w.complete);
	assert_int_equal(window(25, NULL, "i0", 10, -1, &w), 0);	/* before the first */
	assert_int_equal(w.len, 0);
	assert_true(w.complete);
}

static void test_window_last_page(void **state)
{
	struct rsm_window w;

	assert_int_equal(window(25, NULL, "", 10, -1, &w), 0);
	assert_int_equal(w.start, 15);
	assert_int_equal(w.len, 10);
	assert_false(w.complete);
	assert_int_equal(window(7, NULL, "", 10, -1, &w), 0);
	assert_int_equal(w.start, 0);
	assert_int_equal(w.len, 7);
	assert_true(w.complete);
}

static void test_window_between_after_and_before(void **state)
{
	struct rsm_window w;

	/* Items strictly between, the last of them when the page is short. */
	assert_int_equal(window(25, "i2", "i8", 3, -1, &w), 0);
	assert_int_equal(w.start, 5);
	assert_int_equal(w.len, 3);
	assert_false(w.complete);
	assert_int_equal(window(25, "i2", "i8", 10, -1, &w), 0);
	assert_int_equal(w.start, 3);
	assert_int_equal(w.len, 5);
	assert_true(w.complete);
	assert_int_equal(window(25, "i8", "i2", 10, -1, &w), 0);	/* reversed: nothing */
	assert_int_equal(w.len, 0);
}

static void test_window_index(void **state)
{
	struct rsm_window w;

	assert_int_equal(window(25, NULL, NULL, 10, 12, &w), 0);
	assert_int_equal(w.start, 12);
	assert_int_equal(w.len, 10);
	assert_int_equal(window(25, NULL, NULL, 10, 25, &w), 0);	/* past the end: empty */
	assert_int_equal(w.len, 0);
	assert_int_equal(window(25, NULL, NULL, 10, 4000000, &w), 0);
	assert_int_equal(w.start, 25);
	assert_int_equal(w.len, 0);
}

static void test_window_count_only(void **state)
{
	struct rsm_window w;

	assert_int_equal(window(25, NULL, NULL, 0, -1, &w), 0);
	assert_int_equal(w.len, 0);
	assert_false(w.complete);	/* items exist that were not sent */
	assert_int_equal(window(0, NULL, NULL, 0, -1, &w), 0);
	assert_true(w.complete);
}

static void test_window_unknown_uid_is_item_not_found(void **state)
{
	struct rsm_window w;

	assert_int_equal(window(25, "nope", NULL, 10, -1, &w), -ENOENT);
	assert_int_equal(window(25, NULL, "i25", 10, -1, &w), -ENOENT);
	assert_int_equal(window(0, "i0", NULL, 10, -1, &w), -ENOENT);
}

static void test_window_caps_large_max(void **state)
{
	struct rsm_window w;

	assert_int_equal(window(1000, NULL, NULL, 100000, -1, &w), 0);
	assert_int_equal(w.len, 100);	/* the cap */
	assert_false(w.complete);
}

/* Paging through the whole list by UID visits every item once, in order. */
static void test_window_walks_everything_both_ways(void **state)
{
	char uid[16];
	const size_t n = 47;
	int seen[47];
	struct rsm_window w;
	size_t pages = 0;

	memset(seen, 0, sizeof(seen));
	assert_int_equal(window(n, NULL, NULL, 10, -1, &w), 0);
	for (;;) {
		for (size_t i = w.start; i < w.start + w.len; i++)
			seen[i]++;
		pages++;
		if (w.complete)
			break;
		snprintf(uid, sizeof(uid), "i%zu", w.start + w.len - 1);
		assert_int_equal(window(n, uid, NULL, 10, -1, &w), 0);
	}
	assert_int_equal(pages, 5);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(seen[i], 1);

	memset(seen, 0, sizeof(seen));
	pages = 0;
	assert_int_equal(window(n, NULL, "", 10, -1, &w), 0);
	for (;;) {
		for (size_t i = w.start; i < w.start + w.len; i++)
			seen[i]++;
		pages++;
		if (w.complete)
			break;
		snprintf(uid, sizeof(uid), "i%zu", w.start);
		assert_int_equal(window(n, NULL, uid, 10, -1, &w), 0);
	}
	assert_int_equal(pages, 5);
	for (size_t i = 0; i < n; i++)
		assert_int_equal(seen[i], 1);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_no_set_is_not_an_error, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parses_max_after_before, setup, teardown),
		cmocka_unit_test_setup_teardown(test_empty_before_asks_for_last_page, setup, teardown),
		cmocka_unit_test_setup_teardown(test_parses_index_and_max_zero, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejects_bad_numbers, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejects_empty_after_and_duplicates, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_rejects_index_with_uid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_rejects_overlong_uid, setup, teardown),
		cmocka_unit_test_setup_teardown(test_ignores_foreign_and_unknown_children, setup,
						teardown),
		cmocka_unit_test(test_page_size_default_and_cap),
		cmocka_unit_test_setup_teardown(test_build_full_reply, setup, teardown),
		cmocka_unit_test_setup_teardown(test_build_empty_page_has_no_first_last, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_build_single_item_and_escaping, setup, teardown),
		cmocka_unit_test_setup_teardown(test_build_appends_to_parent, setup, teardown),
		cmocka_unit_test(test_window_first_page),
		cmocka_unit_test(test_window_after_and_before),
		cmocka_unit_test(test_window_last_page),
		cmocka_unit_test(test_window_between_after_and_before),
		cmocka_unit_test(test_window_index),
		cmocka_unit_test(test_window_count_only),
		cmocka_unit_test(test_window_unknown_uid_is_item_not_found),
		cmocka_unit_test(test_window_caps_large_max),
		cmocka_unit_test(test_window_walks_everything_both_ways),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
