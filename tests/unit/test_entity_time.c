/* SPDX-License-Identifier: MIT */
/* XEP-0082 DateTime formatting for XEP-0202 Entity Time. */
#include <errno.h>
#include <limits.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "entity_time.h"

static void test_formats_utc_with_z(void **state)
{
	char out[ENTITY_TIME_UTC_MAX];

	assert_int_equal(entity_time_format(0, out, sizeof(out)), 0);
	assert_string_equal(out, "1970-01-01T00:00:00Z");
	/* The XEP-0202 example instant. */
	assert_int_equal(entity_time_format(1166551115, out, sizeof(out)), 0);
	assert_string_equal(out, "2006-12-19T17:58:35Z");
	/* A leap day, late in the day. */
	assert_int_equal(entity_time_format(1709251199, out, sizeof(out)), 0);
	assert_string_equal(out, "2024-02-29T23:59:59Z");
}

static void test_refuses_what_the_format_cannot_hold(void **state)
{
	char out[ENTITY_TIME_UTC_MAX], small[ENTITY_TIME_UTC_MAX - 1];

	assert_int_equal(entity_time_format(0, small, sizeof(small)), -EINVAL);
	/* Year 10000 and years before 1000 do not fit four digits (or are negative). */
	assert_int_equal(entity_time_format(253402300800LL, out, sizeof(out)), -EINVAL);
	assert_int_equal(entity_time_format(-62135596800LL - 86400, out, sizeof(out)), -EINVAL);
	assert_int_equal(entity_time_format(-30610224001LL, out, sizeof(out)), -EINVAL);
	assert_int_equal(entity_time_format(-30610224000LL, out, sizeof(out)), 0);
	assert_string_equal(out, "1000-01-01T00:00:00Z");
	/* The last second of year 9999 still fits. */
	assert_int_equal(entity_time_format(253402300799LL, out, sizeof(out)), 0);
	assert_string_equal(out, "9999-12-31T23:59:59Z");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_formats_utc_with_z),
		cmocka_unit_test(test_refuses_what_the_format_cannot_hold),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
