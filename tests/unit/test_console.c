/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for daemon/console.c: the session cookie is found in a
 * Cookie header exactly by its name (never by a prefix or suffix of
 * another cookie's name), over-long values are refused, and the
 * embedded pages are all there with their types.
 */
#include <stdarg.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>
#include <setjmp.h>
#include <cmocka.h>

#include "console.h"

static void cookie_found_among_others(void **state)
{
	char v[80];

	assert_true(console_cookie("stanzad_console=abc", CONSOLE_COOKIE, v, sizeof(v)));
	assert_string_equal(v, "abc");
	assert_true(console_cookie("a=1; stanzad_console=f00d;b=2", CONSOLE_COOKIE, v, sizeof(v)));
	assert_string_equal(v, "f00d");
	/* Two Cookie headers, joined by the HTTP layer. */
	assert_true(console_cookie("a=1, stanzad_console=beef", CONSOLE_COOKIE, v, sizeof(v)));
	assert_string_equal(v, "beef");
	assert_true(console_cookie("a=1;\tstanzad_console=", CONSOLE_COOKIE, v, sizeof(v)));
	assert_string_equal(v, "");
}

static void cookie_name_must_match_exactly(void **state)
{
	char v[80];

	assert_false(console_cookie("xstanzad_console=abc", CONSOLE_COOKIE, v, sizeof(v)));
	assert_false(console_cookie("stanzad_console_x=abc", CONSOLE_COOKIE, v, sizeof(v)));
	assert_false(console_cookie("stanzad_consol=abc", CONSOLE_COOKIE, v, sizeof(v)));
	assert_false(console_cookie("stanzad_console", CONSOLE_COOKIE, v, sizeof(v)));
	assert_false(console_cookie("", CONSOLE_COOKIE, v, sizeof(v)));
	assert_false(console_cookie(";;; ;", CONSOLE_COOKIE, v, sizeof(v)));
	/* The name inside another cookie's value is not the cookie. */
	assert_false(console_cookie("a=stanzad_console=abc", CONSOLE_COOKIE, v, sizeof(v)));
}

static void cookie_value_too_long_is_refused(void **state)
{
	char v[8];

	assert_true(console_cookie("stanzad_console=1234567", CONSOLE_COOKIE, v, sizeof(v)));
	assert_string_equal(v, "1234567");
	assert_false(console_cookie("stanzad_console=12345678", CONSOLE_COOKIE, v, sizeof(v)));
}

static void cookie_first_of_repeats_wins(void **state)
{
	char v[80];

	/* Browsers send the most specific path first. */
	assert_true(console_cookie("stanzad_console=one; stanzad_console=two", CONSOLE_COOKIE, v,
				   sizeof(v)));
	assert_string_equal(v, "one");
}

static void assets_are_embedded_with_types(void **state)
{
	bool html = false, js = false, css = false;

	assert_true(console_nassets >= 3);
	for (size_t i = 0; i < console_nassets; i++) {
		const struct console_asset *a = &console_assets[i];

		assert_non_null(a->data);
		assert_true(a->len > 0);
		if (!strcmp(a->name, "index.html")) {
			html = !strncmp(a->type, "text/html", 9) &&
			       memmem(a->data, a->len, "console.js", 10) != NULL;
		} else if (!strcmp(a->name, "console.js")) {
			js = !strncmp(a->type, "text/javascript", 15);
		} else if (!strcmp(a->name, "console.css")) {
			css = !strncmp(a->type, "text/css", 8);
		}
	}
	assert_true(html && js && css);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(cookie_found_among_others),
		cmocka_unit_test(cookie_name_must_match_exactly),
		cmocka_unit_test(cookie_value_too_long_is_refused),
		cmocka_unit_test(cookie_first_of_repeats_wins),
		cmocka_unit_test(assets_are_embedded_with_types),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
