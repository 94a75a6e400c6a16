/* SPDX-License-Identifier: MIT */
/*
 * XEP-0115 verification strings: the specification's own example, order
 * independence, duplicates, the identity fields that change the hash, bad
 * input; and the server's caps (features sorted and unique, caps node).
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cmocka.h>

#include "caps.h"
#include "iq.h"
#include "strbuf.h"

static const struct caps_identity exodus = { "client", "pc", NULL, "Exodus 0.9.1" };

/* XEP-0115 section 5.2, "Simple Generation Example". */
static void test_ver_matches_xep0115_simple_example(void **state)
{
	const char *features[] = {
		"http://jabber.org/protocol/caps",
		"http://jabber.org/protocol/disco#info",
		"http://jabber.org/protocol/disco#items",
		"http://jabber.org/protocol/muc",
	};
	char ver[CAPS_VER_MAX];

	assert_int_equal(caps_ver_compute(&exodus, 1, features, 4, ver, sizeof(ver)), 0);
	assert_string_equal(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
}

static void test_ver_ignores_feature_order_and_repeats(void **state)
{
	const char *features[] = {
		"http://jabber.org/protocol/muc",
		"http://jabber.org/protocol/disco#items",
		"http://jabber.org/protocol/caps",
		"http://jabber.org/protocol/disco#info",
		"http://jabber.org/protocol/muc",
	};
	char ver[CAPS_VER_MAX];

	assert_int_equal(caps_ver_compute(&exodus, 1, features, 5, ver, sizeof(ver)), 0);
	assert_string_equal(ver, "QgayPKawpkPSDYmwT/WM94uAlu0=");
}

/* Byte order, not locale order: "Z" sorts before "a". */
static void test_ver_sorts_features_by_octets(void **state)
{
	const char *ab[] = { "a", "Z" }, *ba[] = { "Z", "a" };
	char v1[CAPS_VER_MAX], v2[CAPS_VER_MAX];

	assert_int_equal(caps_ver_compute(&exodus, 1, ab, 2, v1, sizeof(v1)), 0);
	assert_int_equal(caps_ver_compute(&exodus, 1, ba, 2, v2, sizeof(v2)), 0);
	assert_string_equal(v1, v2);
}

/* Identities sort by category, type, then lang; the name takes part in S. */
static void test_ver_sorts_identities_and_uses_every_field(void **state)
{
	const struct caps_identity two[] = {
		{ "client", "pc", "en", "Psi 0.11" },
		{ "client", "pc", "el", "Psi 0.11" },
	};
	const struct caps_identity swapped[] = { two[1], two[0] };
	const struct caps_identity renamed = { "client", "pc", NULL, "Exodus 0.9.2" };
	const struct caps_identity with_lang = { "client", "pc", "en", "Exodus 0.9.1" };
	const char *f[] = { "http://jabber.org/protocol/disco#info" };
	char v1[CAPS_VER_MAX], v2[CAPS_VER_MAX], v3[CAPS_VER_MAX];

	assert_int_equal(caps_ver_compute(two, 2, f, 1, v1, sizeof(v1)), 0);
	assert_int_equal(caps_ver_compute(swapped, 2, f, 1, v2, sizeof(v2)), 0);
	assert_string_equal(v1, v2);
	assert_int_equal(caps_ver_compute(&exodus, 1, f, 1, v1, sizeof(v1)), 0);
	assert_int_equal(caps_ver_compute(&renamed, 1, f, 1, v2, sizeof(v2)), 0);
	assert_int_equal(caps_ver_compute(&with_lang, 1, f, 1, v3, sizeof(v3)), 0);
	assert_string_not_equal(v1, v2);
	assert_string_not_equal(v1, v3);
}

/* A feature set must not collide with one whose names were split differently. */
static void test_ver_separators_keep_features_apart(void **state)
{
	const char *one[] = { "ab" }, *two[] = { "a", "b" };
	char v1[CAPS_VER_MAX], v2[CAPS_VER_MAX];

	assert_int_equal(caps_ver_compute(&exodus, 1, one, 1, v1, sizeof(v1)), 0);
	assert_int_equal(caps_ver_compute(&exodus, 1, two, 2, v2, sizeof(v2)), 0);
	assert_string_not_equal(v1, v2);
}

static void test_ver_rejects_bad_input(void **state)
{
	const struct caps_identity no_type = { "client", NULL, NULL, NULL };
	const char *f[] = { "x", NULL };
	char ver[CAPS_VER_MAX];

	assert_int_equal(caps_ver_compute(&exodus, 0, f, 1, ver, sizeof(ver)), -EINVAL);
	assert_int_equal(caps_ver_compute(&no_type, 1, f, 1, ver, sizeof(ver)), -EINVAL);
	assert_int_equal(caps_ver_compute(&exodus, 1, f, 2, ver, sizeof(ver)), -EINVAL);
	assert_int_equal(caps_ver_compute(&exodus, 1, f, 1, ver, 8), -EINVAL);
	/* No features at all is still a valid (if odd) entity. */
	assert_int_equal(caps_ver_compute(&exodus, 1, NULL, 0, ver, sizeof(ver)), 0);
	assert_int_equal(strlen(ver), 28);
}

/* What disco#info lists for the server: sorted, unique, caps included. */
static void test_server_features_sorted_unique_with_caps(void **state)
{
	const char *f[CAPS_MAX_FEATURES];
	size_t n = caps_features(IQ_SCOPE_SERVER, f, CAPS_MAX_FEATURES);
	bool caps = false, has_time = false, vcard = false;

	assert_true(n > 3);
	for (size_t i = 0; i < n; i++) {
		if (i)
			assert_true(strcmp(f[i - 1], f[i]) < 0);
		caps |= strcmp(f[i], NS_CAPS) == 0;
		has_time |= strcmp(f[i], "urn:xmpp:time") == 0;
		vcard |= strcmp(f[i], "vcard-temp") == 0;
	}
	assert_true(caps && has_time && vcard);
	/* Accounts do not advertise caps (the server's stream feature does). */
	n = caps_features(IQ_SCOPE_ACCOUNT, f, CAPS_MAX_FEATURES);
	for (size_t i = 0; i < n; i++)
		assert_string_not_equal(f[i], NS_CAPS);
}

/* The server's ver is the hash of exactly what disco#info lists. */
static void test_server_ver_hashes_the_disco_answer(void **state)
{
	const char *f[CAPS_MAX_FEATURES];
	size_t n = caps_features(IQ_SCOPE_SERVER, f, CAPS_MAX_FEATURES);
	char ver[CAPS_VER_MAX], node[256];

	assert_int_equal(caps_ver_compute(caps_server_identities, caps_server_nidentities, f, n, ver,
					  sizeof(ver)), 0);
	assert_string_equal(caps_server_ver(), ver);
	snprintf(node, sizeof(node), "%s#%s", CAPS_NODE, ver);
	assert_true(caps_is_server_node(node));
	node[strlen(node) - 2] ^= 1;
	assert_false(caps_is_server_node(node));
	assert_false(caps_is_server_node(CAPS_NODE));
	assert_false(caps_is_server_node(""));
}

static void test_stream_feature_element(void **state)
{
	struct strbuf b = STRBUF_INIT;
	char want[256];

	caps_stream_feature(&b);
	snprintf(want, sizeof(want),
		 "<c xmlns='http://jabber.org/protocol/caps' hash='sha-1' node='%s' ver='%s'/>",
		 CAPS_NODE, caps_server_ver());
	assert_string_equal(b.data, want);
	strbuf_free(&b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ver_matches_xep0115_simple_example),
		cmocka_unit_test(test_ver_ignores_feature_order_and_repeats),
		cmocka_unit_test(test_ver_sorts_features_by_octets),
		cmocka_unit_test(test_ver_sorts_identities_and_uses_every_field),
		cmocka_unit_test(test_ver_separators_keep_features_apart),
		cmocka_unit_test(test_ver_rejects_bad_input),
		cmocka_unit_test(test_server_features_sorted_unique_with_caps),
		cmocka_unit_test(test_server_ver_hashes_the_disco_answer),
		cmocka_unit_test(test_stream_feature_element),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
