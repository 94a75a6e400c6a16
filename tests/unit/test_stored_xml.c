/* SPDX-License-Identifier: MIT */
/*
 * XML kept as text in the store (vCards, private XML): what the
 * serializer writes parses back into the same tree, standing alone (its
 * namespaces declared), and anything but exactly one element is refused.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "stored_xml.h"

struct fixture {
	struct xml_pool *pool;
	struct arena a;
	struct strbuf b;
};

static int setup(void **state)
{
	static struct fixture f;

	memset(&f, 0, sizeof(f));
	f.pool = xml_pool_new(NULL);
	assert_non_null(f.pool);
	arena_init(&f.a, 4096);
	*state = &f;
	return 0;
}

static int teardown(void **state)
{
	struct fixture *f = *state;

	strbuf_free(&f->b);
	arena_release(&f->a);
	assert_int_equal(xml_pool_in_use(f->pool), 0);
	xml_pool_free(f->pool);
	return 0;
}

/* Parses text, serializes the tree standalone, and returns the text. */
static const char *round_trip(struct fixture *f, const char *text)
{
	struct xml_node *n = stored_xml_parse(f->pool, &f->a, text, strlen(text));

	assert_non_null(n);
	strbuf_clear(&f->b);
	stored_xml_serialize(&f->b, n);
	assert_false(f->b.oom);
	return f->b.data;
}

static void test_round_trip_is_stable(void **state)
{
	struct fixture *f = *state;
	const char *in = "<vCard xmlns='vcard-temp'><FN>A &amp; B &lt;c&gt;</FN>"
			 "<X xmlns='urn:x' a='1&apos;2'><y>\xc3\xa9</y></X><NOTE/></vCard>";
	const char *once = round_trip(f, in);
	char copy[512];

	snprintf(copy, sizeof(copy), "%s", once);
	assert_string_equal(copy, in);
	assert_string_equal(round_trip(f, copy), in);
}

static void test_namespaces_survive(void **state)
{
	struct fixture *f = *state;
	struct xml_node *n, *c;
	const char *text;

	/* A prefixed input comes back with default namespaces only. */
	text = "<p:prefs xmlns:p='urn:p' xmlns:q='urn:q'><q:item q:k='v'/><p:n/><bare xmlns=''/>"
	       "</p:prefs>";
	n = stored_xml_parse(f->pool, &f->a, text, strlen(text));
	assert_non_null(n);
	assert_string_equal(n->ns, "urn:p");
	c = xml_first_element(n);
	assert_string_equal(c->ns, "urn:q");
	assert_string_equal(xml_attr_get_ns(c, "urn:q", "k"), "v");
	c = xml_next_element(c);
	assert_string_equal(c->ns, "urn:p");
	c = xml_next_element(c);
	assert_string_equal(c->ns, "");
	strbuf_clear(&f->b);
	stored_xml_serialize(&f->b, n);
	n = stored_xml_parse(f->pool, &f->a, f->b.data, f->b.len);
	assert_non_null(n);
	assert_string_equal(xml_next_element(xml_next_element(xml_first_element(n)))->ns, "");
}

/* Stanzas serialized as for a client stream come back in jabber:client. */
static void test_client_stanza_default_namespace(void **state)
{
	struct fixture *f = *state;
	const char *t = "<message to='a@b' type='chat'><body>hi</body></message>";
	struct xml_node *n = stored_xml_parse(f->pool, &f->a, t, strlen(t));

	assert_non_null(n);
	assert_string_equal(n->ns, XML_NS_CLIENT);
	assert_string_equal(xml_first_element(n)->ns, XML_NS_CLIENT);
	strbuf_clear(&f->b);
	xml_serialize(&f->b, n, XML_NS_CLIENT);
	assert_string_equal(f->b.data, t);
}

static void test_anything_but_one_element_is_refused(void **state)
{
	struct fixture *f = *state;
	const char *bad[] = {
		"", "   ", "text", "<a/><b/>", "<a/>tail", "<a>", "<a></b>", "<a x='1' x='2'/>",
		"<!-- c --><a/>", "<?pi x?><a/>", "<a>&unknown;</a>",
	};

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		assert_null(stored_xml_parse(f->pool, &f->a, bad[i], strlen(bad[i])));
		assert_int_equal(errno, EINVAL);
	}
	/* The pool is intact afterwards. */
	assert_non_null(stored_xml_parse(f->pool, &f->a, "<ok/>", 5));
}

static void test_a_stream_cannot_be_smuggled_in(void **state)
{
	struct fixture *f = *state;
	const char *t = "</stream:stream><a/>";

	assert_null(stored_xml_parse(f->pool, &f->a, t, strlen(t)));
}

static void test_emptiness(void **state)
{
	struct fixture *f = *state;
	const char *empty = "<v xmlns='urn:v'/>", *attr = "<v xmlns='urn:v' a='1'/>";
	const char *text = "<v xmlns='urn:v'>t</v>", *child = "<v xmlns='urn:v'><c/></v>";

	assert_true(stored_xml_is_empty(stored_xml_parse(f->pool, &f->a, empty, strlen(empty))));
	assert_false(stored_xml_is_empty(stored_xml_parse(f->pool, &f->a, attr, strlen(attr))));
	assert_false(stored_xml_is_empty(stored_xml_parse(f->pool, &f->a, text, strlen(text))));
	assert_false(stored_xml_is_empty(stored_xml_parse(f->pool, &f->a, child, strlen(child))));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_round_trip_is_stable, setup, teardown),
		cmocka_unit_test_setup_teardown(test_namespaces_survive, setup, teardown),
		cmocka_unit_test_setup_teardown(test_client_stanza_default_namespace, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_anything_but_one_element_is_refused, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_a_stream_cannot_be_smuggled_in, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_emptiness, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
