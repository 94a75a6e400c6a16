/* SPDX-License-Identifier: MIT */
/*
 * XEP-0215 TURN credentials: the password is coturn's use-auth-secret
 * one, base64(HMAC-SHA1(secret, username)), checked against vectors
 * computed independently (Python's hmac module).
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "extdisco.h"

static void test_password_matches_coturn_scheme(void **state)
{
	char out[EXTDISCO_PASSWORD_MAX];

	(void)state;
	assert_int_equal(extdisco_turn_password("north", "1700000000:alice", out), 0);
	assert_string_equal(out, "Cd/49soE35ICqcJF/bCTn8Z4OyE=");
}

static void test_password_changes_with_username_and_secret(void **state)
{
	char a[EXTDISCO_PASSWORD_MAX], b[EXTDISCO_PASSWORD_MAX], c[EXTDISCO_PASSWORD_MAX];

	(void)state;
	assert_int_equal(extdisco_turn_password("north", "1700000000:alice", a), 0);
	assert_int_equal(extdisco_turn_password("north", "1700000001:alice", b), 0);
	assert_int_equal(extdisco_turn_password("south", "1700000000:alice", c), 0);
	assert_string_not_equal(a, b);
	assert_string_not_equal(a, c);
}

static void test_empty_secret_still_fits(void **state)
{
	char out[EXTDISCO_PASSWORD_MAX];

	(void)state;
	memset(out, 'x', sizeof(out));
	assert_int_equal(extdisco_turn_password("", "1:x", out), 0);
	assert_string_equal(out, "wBVqeCkzFfbJeptoGEftON2+Q7I=");
	assert_int_equal(strlen(out), 28);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_password_matches_coturn_scheme),
		cmocka_unit_test(test_password_changes_with_username_and_secret),
		cmocka_unit_test(test_empty_secret_still_fits),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
