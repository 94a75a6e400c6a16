/* SPDX-License-Identifier: MIT */
/*
 * XEP-0347 thing registry: meta tag parsing (names, values, limits),
 * the claim signature (order and number spelling do not matter, types
 * do), strMask wildcards, every search operator, and/or/not, the KEY
 * rule, and malformed searches.
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
#include "registry_search.h"
#include "stored_xml.h"
#include "strbuf.h"
#include "xml.h"

#define DISCO "xmlns='urn:xmpp:iot:discovery'"
#define MAX_TAGS 32

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

static struct xml_node *xml(struct fixture *f, const char *text)
{
	struct xml_node *el = stored_xml_parse(f->pool, &f->a, text, strlen(text));

	assert_non_null(el);
	return el;
}

/* Parses "<register>" + inner + "</register>". */
static int tags(struct fixture *f, const char *inner, struct reg_tag *out, size_t *n,
		bool allow_empty)
{
	char text[8192];
	const char *err = NULL;
	int ret;

	snprintf(text, sizeof(text), "<register " DISCO ">%s</register>", inner);
	ret = reg_tags_parse(&f->a, xml(f, text), out, MAX_TAGS, n, allow_empty, &err);
	if (ret < 0)
		assert_non_null(err);
	return ret;
}

/* The registered thing of XEP-0347's examples, with LON/LAT/CLASS of the update. */
static const char thing_tags[] =
	"<str name='SN' value='394872348732948723'/><str name='MAN' value='www.ktc.se'/>"
	"<str name='MODEL' value='IMC'/><num name='V' value='1.2'/>"
	"<str name='KEY' value='4857402340298342'/><str name='CLASS' value='PLC'/>"
	"<num name='LON' value='-71.519722'/><num name='LAT' value='-33.008055'/>";

/* Whether the example thing matches the search with these operators. */
static bool matches(struct fixture *f, const char *ops)
{
	struct reg_tag t[MAX_TAGS];
	char text[8192];
	struct reg_expr *e;
	const char *err = NULL;
	size_t n;

	assert_int_equal(tags(f, thing_tags, t, &n, false), 0);
	snprintf(text, sizeof(text), "<search " DISCO ">%s</search>", ops);
	if (reg_expr_parse(&f->a, xml(f, text), &e, &err) != 0)
		fail_msg("search not parsed (%s): %s", err ? err : "?", ops);
	return reg_expr_eval(e, t, n);
}

static int parse_search(struct fixture *f, const char *ops, struct reg_expr **e)
{
	char text[16384];
	const char *err = NULL;
	int ret;

	snprintf(text, sizeof(text), "<search " DISCO ">%s</search>", ops);
	ret = reg_expr_parse(&f->a, xml(f, text), e, &err);
	if (ret < 0)
		assert_non_null(err);
	return ret;
}

static void test_tags_are_upper_cased(void **state)
{
	struct fixture *f = *state;
	struct reg_tag t[MAX_TAGS];
	size_t n;

	assert_int_equal(tags(f, "<str name='sn' value='1'/><num name='Lat' value='-3.5e1'/>", t, &n,
			      false), 0);
	assert_int_equal(n, 2);
	assert_string_equal(t[0].name, "SN");
	assert_false(t[0].num);
	assert_string_equal(t[1].name, "LAT");
	assert_true(t[1].num);
	assert_true(t[1].number == -35.0);
	assert_string_equal(t[1].value, "-3.5e1");
}

static void test_tags_rejects_bad_names_and_values(void **state)
{
	struct fixture *f = *state;
	static const char *const bad[] = {
		"<str name='A:B' value='1'/>",
		"<str name='A#B' value='1'/>",
		"<str name='A B' value='1'/>",
		"<str name='' value='1'/>",
		"<str value='1'/>",
		"<str name='A'/>",
		"<str name='ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456' value='33 characters'/>",
		"<num name='V' value='one'/>",
		"<num name='V' value='1.2x'/>",
		"<num name='V' value=''/>",
		"<num name='V' value='nan'/>",
		"<num name='V' value='inf'/>",
		"<num name='V' value='1e999'/>",
		"<str name='A' value='x'/><str name='a' value='y'/>",
		"<bogus name='A' value='1'/>",
		"<str name='A' value=''/>",
	};
	struct reg_tag t[MAX_TAGS];
	size_t n;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (tags(f, bad[i], t, &n, false) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
	/* An update may empty a string tag (it removes it). */
	assert_int_equal(tags(f, "<str name='A' value=''/>", t, &n, true), 0);
}

static void test_tags_length_limits_count_characters(void **state)
{
	struct fixture *f = *state;
	struct reg_tag t[MAX_TAGS];
	char inner[2048], value[1024];
	size_t n;

	/* 128 two-byte characters are fine; 129 are not. */
	value[0] = '\0';
	for (int i = 0; i < 128; i++)
		strcat(value, "\xc3\xa9");
	snprintf(inner, sizeof(inner), "<str name='N' value='%s'/>", value);
	assert_int_equal(tags(f, inner, t, &n, false), 0);
	strcat(value, "x");
	snprintf(inner, sizeof(inner), "<str name='N' value='%s'/>", value);
	assert_int_equal(tags(f, inner, t, &n, false), -EINVAL);
	/* A 32-character name is fine. */
	assert_int_equal(tags(f, "<str name='ABCDEFGHIJKLMNOPQRSTUVWXYZ012345' value='1'/>", t, &n,
			      false), 0);
}

static void test_tags_cap(void **state)
{
	struct fixture *f = *state;
	struct reg_tag t[MAX_TAGS + 1];
	char inner[8192];
	size_t n = 0, len = 0;

	for (int i = 0; i <= MAX_TAGS; i++)
		len += (size_t)snprintf(inner + len, sizeof(inner) - len, "<str name='T%d' value='v'/>",
					i);
	assert_int_equal(tags(f, inner, t, &n, false), -EINVAL);
}

static void test_signature_ignores_order_and_spelling(void **state)
{
	struct fixture *f = *state;
	struct strbuf s1 = STRBUF_INIT, s2 = STRBUF_INIT, s3 = STRBUF_INIT, s4 = STRBUF_INIT;
	struct reg_tag t[MAX_TAGS];
	size_t n;

	assert_int_equal(tags(f, "<str name='SN' value='1'/><num name='V' value='1.2'/>", t, &n,
			      false), 0);
	reg_tags_signature(t, n, &s1);
	assert_int_equal(tags(f, "<num name='v' value='1.20'/><str name='sn' value='1'/>", t, &n,
			      false), 0);
	reg_tags_signature(t, n, &s2);
	assert_string_equal(s1.data, s2.data);
	/* A string "1.2" is not the number 1.2; another value is another thing. */
	assert_int_equal(tags(f, "<str name='SN' value='1'/><str name='V' value='1.2'/>", t, &n,
			      false), 0);
	reg_tags_signature(t, n, &s3);
	assert_string_not_equal(s1.data, s3.data);
	assert_int_equal(tags(f, "<str name='SN' value='1'/><num name='V' value='1.3'/>", t, &n,
			      false), 0);
	reg_tags_signature(t, n, &s4);
	assert_string_not_equal(s1.data, s4.data);
	strbuf_free(&s1);
	strbuf_free(&s2);
	strbuf_free(&s3);
	strbuf_free(&s4);
}

static void test_mask(void **state)
{
	(void)state;
	assert_true(reg_mask_match("394872348732948723", "39487*", "*"));
	assert_false(reg_mask_match("39488", "39487*", "*"));
	assert_true(reg_mask_match("www.ktc.se", "*.se", "*"));
	assert_false(reg_mask_match("www.ktc.se.org", "*.se", "*"));
	assert_true(reg_mask_match("abXcdYef", "ab*cd*ef", "*"));
	assert_true(reg_mask_match("abcdef", "ab*cd*ef", "*"));
	assert_false(reg_mask_match("abcdf", "ab*cd*ef", "*"));
	/* Segments may not overlap: "a*a" needs two a's. */
	assert_false(reg_mask_match("a", "a*a", "*"));
	assert_true(reg_mask_match("aa", "a*a", "*"));
	assert_true(reg_mask_match("anything", "**", "*"));
	/* No wildcard in the mask: exact; a multi-character wildcard. */
	assert_true(reg_mask_match("ab*", "ab*", "%%"));
	assert_false(reg_mask_match("abc", "ab*", "%%"));
	assert_true(reg_mask_match("abc", "a%%c", "%%"));
	assert_true(reg_mask_match("ac", "a%%c", "%%"));
}

static void test_string_operators(void **state)
{
	struct fixture *f = *state;

	assert_true(matches(f, "<strEq name='MAN' value='www.ktc.se'/>"));
	assert_false(matches(f, "<strEq name='MAN' value='WWW.KTC.SE'/>"));
	assert_true(matches(f, "<strEq name='man' value='www.ktc.se'/>"));	/* names: any case */
	assert_true(matches(f, "<strNEq name='MODEL' value='XYZ'/>"));
	assert_false(matches(f, "<strNEq name='MODEL' value='IMC'/>"));
	assert_true(matches(f, "<strGt name='MODEL' value='IMB'/>"));
	assert_false(matches(f, "<strGt name='MODEL' value='IMC'/>"));
	assert_true(matches(f, "<strGtEq name='MODEL' value='IMC'/>"));
	assert_true(matches(f, "<strLt name='MODEL' value='IMD'/>"));
	assert_false(matches(f, "<strLt name='MODEL' value='IMC'/>"));
	assert_true(matches(f, "<strLtEq name='MODEL' value='IMC'/>"));
	assert_true(matches(f, "<strRange name='MODEL' min='IMA' max='IMC'/>"));
	assert_false(matches(f, "<strRange name='MODEL' min='IMA' max='IMC' maxIncluded='false'/>"));
	assert_false(matches(f, "<strRange name='MODEL' min='IMC' max='IMZ' minIncluded='false'/>"));
	assert_false(matches(f, "<strNRange name='MODEL' min='IMA' max='IMD'/>"));
	assert_true(matches(f, "<strNRange name='MODEL' min='IMA' max='IMC' maxIncluded='false'/>"));
	assert_true(matches(f, "<strMask name='SN' value='39487*' wildcard='*'/>"));
	assert_false(matches(f, "<strMask name='SN' value='49487*' wildcard='*'/>"));
}

static void test_numeric_operators(void **state)
{
	struct fixture *f = *state;

	assert_true(matches(f, "<numEq name='V' value='1.2'/>"));
	assert_true(matches(f, "<numEq name='V' value='1.20'/>"));
	assert_false(matches(f, "<numNEq name='V' value='1.2'/>"));
	assert_true(matches(f, "<numGt name='V' value='1'/>"));
	assert_false(matches(f, "<numGt name='V' value='1.2'/>"));
	assert_true(matches(f, "<numGtEq name='V' value='1.2'/>"));
	assert_true(matches(f, "<numLt name='LAT' value='-33'/>"));
	assert_true(matches(f, "<numLtEq name='V' value='1.2'/>"));
	assert_true(matches(f, "<numRange name='V' min='1' max='2' maxIncluded='false'/>"));
	assert_false(matches(f, "<numRange name='V' min='1.2' max='2' minIncluded='false'/>"));
	assert_true(matches(f, "<numNRange name='V' min='2' max='3'/>"));
	assert_false(matches(f, "<numNRange name='V' min='1' max='3'/>"));
	/* Numbers compare numerically, not as text ("-71.5" < "-72" as text). */
	assert_true(matches(f, "<numGt name='LON' value='-72'/>"));
}

static void test_types_and_missing_tags_never_match(void **state)
{
	struct fixture *f = *state;

	/* A string operator on a numeric tag, and the other way round. */
	assert_false(matches(f, "<strEq name='V' value='1.2'/>"));
	assert_false(matches(f, "<numEq name='SN' value='394872348732948723'/>"));
	/* An operator on a tag the thing lacks: false, even "not equal". */
	assert_false(matches(f, "<strNEq name='ROOM' value='x'/>"));
	assert_false(matches(f, "<numNRange name='ALT' min='0' max='1'/>"));
}

static void test_xep_example_search(void **state)
{
	struct fixture *f = *state;

	assert_true(matches(f, "<strEq name='MAN' value='www.ktc.se'/>"
			    "<strEq name='MODEL' value='IMC'/>"
			    "<strMask name='SN' value='39487*' wildcard='*'/>"
			    "<numRange name='V' min='1' minIncluded='true' max='2' maxIncluded='false'/>"
			    "<numRange name='LON' min='-72' minIncluded='true' max='-70' "
			    "maxIncluded='true'/>"
			    "<numRange name='LAT' min='-34' minIncluded='true' max='-33' "
			    "maxIncluded='true'/>"));
	/* All operators must hold. */
	assert_false(matches(f, "<strEq name='MAN' value='www.ktc.se'/>"
			     "<strEq name='MODEL' value='PLC'/>"));
}

static void test_and_or_not(void **state)
{
	struct fixture *f = *state;

	assert_true(matches(f, "<or><strEq name='MODEL' value='X'/><strEq name='MODEL' value='IMC'/>"
			    "</or>"));
	assert_false(matches(f, "<or><strEq name='MODEL' value='X'/><numEq name='V' value='9'/>"
			     "</or>"));
	assert_true(matches(f, "<not><strEq name='MODEL' value='X'/></not>"));
	assert_false(matches(f, "<not><strEq name='MODEL' value='IMC'/></not>"));
	assert_true(matches(f, "<and><strEq name='CLASS' value='PLC'/><or><numLt name='V' value='1'/>"
			    "<not><numLt name='V' value='1'/></not></or></and>"));
	assert_false(matches(f, "<and><strEq name='CLASS' value='PLC'/><strEq name='CLASS' "
			     "value='X'/></and>"));
}

static void test_key_is_detected_anywhere(void **state)
{
	struct fixture *f = *state;
	struct reg_expr *e;

	assert_int_equal(parse_search(f, "<strEq name='KEY' value='4857402340298342'/>", &e), 0);
	assert_true(reg_expr_uses_key(e));
	assert_int_equal(parse_search(f, "<or><strEq name='MAN' value='x'/><not><strMask name='key' "
				      "value='*' wildcard='*'/></not></or>", &e), 0);
	assert_true(reg_expr_uses_key(e));
	assert_int_equal(parse_search(f, "<strEq name='KEYS' value='x'/>", &e), 0);
	assert_false(reg_expr_uses_key(e));
}

static void test_malformed_searches(void **state)
{
	struct fixture *f = *state;
	static const char *const bad[] = {
		"",
		"<strSimilar name='A' value='1'/>",
		"<strEq value='1'/>",
		"<strEq name='A'/>",
		"<strEq name='A:B' value='1'/>",
		"<numEq name='A' value='x'/>",
		"<numRange name='A' min='1'/>",
		"<numRange name='A' min='1' max='2' minIncluded='maybe'/>",
		"<strMask name='A' value='x*'/>",
		"<strMask name='A' value='x*' wildcard=''/>",
		"<not><strEq name='A' value='1'/><strEq name='B' value='1'/></not>",
		"<or/>",
		"<strEq xmlns='urn:other' name='A' value='1'/>",
	};
	struct reg_expr *e;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		if (parse_search(f, bad[i], &e) != -EINVAL)
			fail_msg("accepted: %s", bad[i]);
}

static void test_search_limits(void **state)
{
	struct fixture *f = *state;
	char ops[16384];
	struct reg_expr *e;
	size_t len = 0;

	for (int i = 0; i <= REG_EXPR_MAX_OPS; i++)
		len += (size_t)snprintf(ops + len, sizeof(ops) - len, "<strEq name='A' value='%d'/>", i);
	assert_int_equal(parse_search(f, ops, &e), -EINVAL);
	len = 0;
	for (int i = 0; i <= REG_EXPR_MAX_DEPTH; i++)
		len += (size_t)snprintf(ops + len, sizeof(ops) - len, "<not>");
	len += (size_t)snprintf(ops + len, sizeof(ops) - len, "<strEq name='A' value='1'/>");
	for (int i = 0; i <= REG_EXPR_MAX_DEPTH; i++)
		len += (size_t)snprintf(ops + len, sizeof(ops) - len, "</not>");
	assert_int_equal(parse_search(f, ops, &e), -EINVAL);
	/* Just inside the depth limit parses (and double negation holds). */
	len = 0;
	for (int i = 0; i < REG_EXPR_MAX_DEPTH; i++)
		len += (size_t)snprintf(ops + len, sizeof(ops) - len, "<not>");
	len += (size_t)snprintf(ops + len, sizeof(ops) - len, "<strEq name='MODEL' value='IMC'/>");
	for (int i = 0; i < REG_EXPR_MAX_DEPTH; i++)
		len += (size_t)snprintf(ops + len, sizeof(ops) - len, "</not>");
	assert_true(matches(f, ops));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup_teardown(test_tags_are_upper_cased, setup, teardown),
		cmocka_unit_test_setup_teardown(test_tags_rejects_bad_names_and_values, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tags_length_limits_count_characters, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_tags_cap, setup, teardown),
		cmocka_unit_test_setup_teardown(test_signature_ignores_order_and_spelling, setup,
						teardown),
		cmocka_unit_test(test_mask),
		cmocka_unit_test_setup_teardown(test_string_operators, setup, teardown),
		cmocka_unit_test_setup_teardown(test_numeric_operators, setup, teardown),
		cmocka_unit_test_setup_teardown(test_types_and_missing_tags_never_match, setup,
						teardown),
		cmocka_unit_test_setup_teardown(test_xep_example_search, setup, teardown),
		cmocka_unit_test_setup_teardown(test_and_or_not, setup, teardown),
		cmocka_unit_test_setup_teardown(test_key_is_detected_anywhere, setup, teardown),
		cmocka_unit_test_setup_teardown(test_malformed_searches, setup, teardown),
		cmocka_unit_test_setup_teardown(test_search_limits, setup, teardown),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
