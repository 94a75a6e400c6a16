/* SPDX-License-Identifier: MIT */
/*
 * The serialize-once template of presence fan-out: each copy must be
 * exactly what serializing the tree with that 'to' would give (modulo
 * attribute order), for hostile attribute values too, and it must be
 * cheaper than a tree walk per recipient (measured and printed).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <cmocka.h>

#include "arena.h"
#include "fanout.h"
#include "strbuf.h"
#include "xml.h"

static struct xml_node *presence(struct arena *a, const char *to)
{
	struct xml_node *p = xml_node_new(a, XML_NS_CLIENT, "presence");
	struct xml_node *c;

	assert_non_null(p);
	assert_int_equal(xml_attr_set(a, p, "from", "alice@example.org/phone"), 0);
	if (to)
		assert_int_equal(xml_attr_set(a, p, "to", to), 0);
	assert_int_equal(xml_attr_set(a, p, "id", "p1"), 0);
	c = xml_node_add_child(a, p, NULL, "show");
	assert_int_equal(xml_node_add_text(a, c, "away", 4), 0);
	c = xml_node_add_child(a, p, NULL, "status");
	assert_int_equal(xml_node_add_text(a, c, "at <lunch> & 'back' soon", 25), 0);
	c = xml_node_add_child(a, p, NULL, "priority");
	assert_int_equal(xml_node_add_text(a, c, "5", 1), 0);
	c = xml_node_add_child(a, p, "http://jabber.org/protocol/caps", "c");
	assert_int_equal(xml_attr_set(a, c, "hash", "sha-1"), 0);
	assert_int_equal(xml_attr_set(a, c, "node", "https://example.org/client"), 0);
	assert_int_equal(xml_attr_set(a, c, "ver", "QgayPKawpkPSDYmwT/WM94uAlu0="), 0);
	return p;
}

/* What the tree serializes to with 'to' set (the reference for a copy). */
static void reference(struct arena *a, struct xml_node *p, const char *to, struct strbuf *out)
{
	assert_int_equal(xml_attr_set(a, p, "to", to), 0);
	strbuf_clear(out);
	xml_serialize(out, p, XML_NS_CLIENT);
}

/* Same bytes once 'to' is moved to the front (attribute order differs). */
static void assert_same_stanza(const char *got, size_t got_len, const char *want, const char *to)
{
	char expect[1024];
	const char *rest = want + strlen("<presence");
	char toattr[256];
	const char *at;
	struct strbuf esc = STRBUF_INIT;

	strbuf_append_xml_escaped(&esc, to, strlen(to));
	snprintf(toattr, sizeof(toattr), " to='%s'", esc.data);
	strbuf_free(&esc);
	at = strstr(rest, toattr);
	assert_non_null(at);
	snprintf(expect, sizeof(expect), "<presence%s%.*s%s", toattr, (int)(at - rest), rest,
		 at + strlen(toattr));
	assert_int_equal(got_len, strlen(expect));
	assert_memory_equal(got, expect, got_len);
}

static void test_copy_equals_tree_serialized_with_that_to(void **state)
{
	struct arena a;
	struct fanout f = FANOUT_INIT;
	struct strbuf ref = STRBUF_INIT;
	const char *tos[] = { "bob@example.org", "carol@example.org/desk",
			      "dave@example.org/it's <odd> & \"quoted\"" };
	struct xml_node *p;

	arena_init(&a, 4096);
	p = presence(&a, "ignored@example.org");
	assert_int_equal(fanout_prepare(&f, p), 0);
	/* The tree keeps its 'to' and the template has none. */
	assert_string_equal(xml_attr_get(p, "to"), "ignored@example.org");
	assert_null(strstr(f.tmpl.data, " to="));
	for (size_t i = 0; i < 3; i++) {
		size_t len;
		const char *copy = fanout_render(&f, tos[i], strlen(tos[i]), &len);

		assert_non_null(copy);
		reference(&a, p, tos[i], &ref);
		assert_same_stanza(copy, len, ref.data, tos[i]);
	}
	fanout_release(&f);
	strbuf_free(&ref);
	arena_release(&a);
}

/* An attribute value that looks like a 'to' attribute must survive intact. */
static void test_value_mimicking_to_attribute_is_kept(void **state)
{
	struct arena a;
	struct fanout f = FANOUT_INIT;
	struct xml_node *p;
	size_t len;
	const char *copy;

	arena_init(&a, 4096);
	p = xml_node_new(&a, XML_NS_CLIENT, "presence");
	assert_int_equal(xml_attr_set(&a, p, "id", "x to='evil@example.org'"), 0);
	assert_int_equal(xml_attr_set(&a, p, "to", "real@example.org"), 0);
	assert_int_equal(fanout_prepare(&f, p), 0);
	copy = fanout_render(&f, "bob@example.org", 15, &len);
	assert_non_null(copy);
	assert_string_equal(copy, "<presence to='bob@example.org' "
				  "id='x to=&apos;evil@example.org&apos;'/>");
	/* The unlinked attribute went back in place. */
	assert_string_equal(xml_attr_get(p, "to"), "real@example.org");
	assert_string_equal(p->attrs->name, "id");
	fanout_release(&f);
	arena_release(&a);
}

static void test_template_from_stored_bytes(void **state)
{
	struct fanout f = FANOUT_INIT;
	const char stored[] = "<presence from='a@b/c'><show>dnd</show></presence>";
	const char bare[] = "<presence/>";
	size_t len;
	const char *copy;

	assert_int_equal(fanout_prepare_bytes(&f, stored, strlen(stored)), 0);
	copy = fanout_render(&f, "x@y", 3, &len);
	assert_string_equal(copy, "<presence to='x@y' from='a@b/c'><show>dnd</show></presence>");
	assert_int_equal(len, strlen(copy));
	assert_int_equal(fanout_prepare_bytes(&f, bare, strlen(bare)), 0);
	assert_string_equal(fanout_render(&f, "x@y", 3, &len), "<presence to='x@y'/>");
	/* Not a serialized element: refused. */
	assert_int_equal(fanout_prepare_bytes(&f, "presence/>", 10), -EINVAL);
	assert_int_equal(fanout_prepare_bytes(&f, "<", 1), -EINVAL);
	assert_int_equal(fanout_prepare_bytes(&f, "<presence", 9), -EINVAL);
	assert_int_equal(fanout_prepare_bytes(&f, "", 0), -EINVAL);
	fanout_release(&f);
}

static double now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return ts.tv_sec * 1e9 + ts.tv_nsec;
}

/*
 * The per-recipient cost: a copy from the template versus setting 'to'
 * and serializing the tree. Prints both; the template must win clearly.
 */
static void test_per_recipient_cost(void **state)
{
	enum { RECIPIENTS = 1000, ROUNDS = 200 };
	static char jids[RECIPIENTS][48];
	struct arena a;
	struct fanout f = FANOUT_INIT;
	struct strbuf ser = STRBUF_INIT;
	struct xml_node *p;
	double t0, t_tmpl, t_tree;
	size_t sink = 0, len;

	arena_init(&a, 64 * 1024);
	p = presence(&a, NULL);
	for (int i = 0; i < RECIPIENTS; i++)
		snprintf(jids[i], sizeof(jids[i]), "contact%04d@example.org", i);

	t0 = now_ns();
	for (int r = 0; r < ROUNDS; r++) {
		assert_int_equal(fanout_prepare(&f, p), 0);
		for (int i = 0; i < RECIPIENTS; i++)
			sink += fanout_render(&f, jids[i], strlen(jids[i]), &len)[len - 1];
	}
	t_tmpl = (now_ns() - t0) / ((double)ROUNDS * RECIPIENTS);

	t0 = now_ns();
	for (int r = 0; r < ROUNDS; r++) {
		for (int i = 0; i < RECIPIENTS; i++) {
			xml_attr_set(&a, p, "to", jids[i]);
			strbuf_clear(&ser);
			xml_serialize(&ser, p, XML_NS_CLIENT);
			sink += ser.data[ser.len - 1];
		}
		arena_reset(&a);
		p = presence(&a, NULL);
	}
	t_tree = (now_ns() - t0) / ((double)ROUNDS * RECIPIENTS);

	print_message("fan-out per recipient (%zu-byte presence): template %.0f ns, "
		      "tree serialization %.0f ns (sink %zu)\n", f.tmpl.len, t_tmpl, t_tree,
		      sink % 10);
	assert_true(t_tmpl < t_tree);
	fanout_release(&f);
	strbuf_free(&ser);
	arena_release(&a);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_copy_equals_tree_serialized_with_that_to),
		cmocka_unit_test(test_value_mimicking_to_attribute_is_kept),
		cmocka_unit_test(test_template_from_stored_bytes),
		cmocka_unit_test(test_per_recipient_cost),
	};

	return cmocka_run_group_tests_name("fanout", tests, NULL, NULL);
}
