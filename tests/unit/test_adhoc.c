/* SPDX-License-Identifier: MIT */
/*
 * XEP-0050 actions: names, and what each action means at each stage
 * (XEP-0050 6.4): 'execute' is the stage's default, next only before the
 * last stage, complete only at it, prev only after the first, cancel
 * always. The engine answers bad-action where resolve gives 0 and
 * malformed-action where parse gives 0.
 */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>

#include <cmocka.h>

#include "adhoc.h"

static void test_action_names(void **state)
{
	(void)state;
	assert_int_equal(adhoc_action_parse(NULL), ADHOC_ACTION_EXECUTE);
	assert_int_equal(adhoc_action_parse("execute"), ADHOC_ACTION_EXECUTE);
	assert_int_equal(adhoc_action_parse("cancel"), ADHOC_ACTION_CANCEL);
	assert_int_equal(adhoc_action_parse("prev"), ADHOC_ACTION_PREV);
	assert_int_equal(adhoc_action_parse("next"), ADHOC_ACTION_NEXT);
	assert_int_equal(adhoc_action_parse("complete"), ADHOC_ACTION_COMPLETE);
	assert_int_equal(adhoc_action_parse(""), 0);
	assert_int_equal(adhoc_action_parse("Execute"), 0);
	assert_int_equal(adhoc_action_parse("finish"), 0);
}

static void test_single_stage(void **state)
{
	(void)state;
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_EXECUTE, 0, 1), ADHOC_ACTION_COMPLETE);
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_COMPLETE, 0, 1), ADHOC_ACTION_COMPLETE);
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_NEXT, 0, 1), 0);
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_PREV, 0, 1), 0);
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_CANCEL, 0, 1), ADHOC_ACTION_CANCEL);
}

static void test_three_stages(void **state)
{
	(void)state;
	/* First stage: next is the default, nothing to go back to. */
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_EXECUTE, 0, 3), ADHOC_ACTION_NEXT);
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_PREV, 0, 3), 0);
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_COMPLETE, 0, 3), 0);
	/* Middle: next or prev. */
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_EXECUTE, 1, 3), ADHOC_ACTION_NEXT);
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_PREV, 1, 3), ADHOC_ACTION_PREV);
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_COMPLETE, 1, 3), 0);
	/* Last: complete or prev. */
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_EXECUTE, 2, 3), ADHOC_ACTION_COMPLETE);
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_NEXT, 2, 3), 0);
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_PREV, 2, 3), ADHOC_ACTION_PREV);
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_CANCEL, 2, 3), ADHOC_ACTION_CANCEL);
}

static void test_out_of_range(void **state)
{
	(void)state;
	/* A command without stages has no step to continue; a stage past the end none either. */
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_COMPLETE, 0, 0), 0);
	assert_int_equal(adhoc_action_resolve(ADHOC_ACTION_PREV, 5, 3), 0);
	assert_int_equal(adhoc_action_resolve((enum adhoc_action)0, 0, 1), 0);
	assert_int_equal(adhoc_action_resolve((enum adhoc_action)42, 0, 1), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_action_names),
		cmocka_unit_test(test_single_stage),
		cmocka_unit_test(test_three_stages),
		cmocka_unit_test(test_out_of_range),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
