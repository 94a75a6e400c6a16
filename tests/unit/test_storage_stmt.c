/* SPDX-License-Identifier: MIT */
/* The feature statement cache: any number of statements, found by address. */
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include <cmocka.h>

#include "log.h"
#include "storage.h"
#include "storage_db.h"

#define NSTMT 700

static void test_many_statements_are_cached_by_address(void **state)
{
	char dir[] = "/tmp/stanzad-stmt-XXXXXX";
	static char *sql[NSTMT];
	struct db_stmt *first[NSTMT];
	struct storage *st;

	assert_non_null(mkdtemp(dir));
	log_threshold = LOG_LVL_ERROR;
	assert_int_equal(storage_open(&st, dir), 0);
	for (int i = 0; i < NSTMT; i++) {
		sql[i] = malloc(32);
		snprintf(sql[i], 32, "SELECT %d", i);
		first[i] = storage_stmt(st, sql[i]);
		assert_non_null(first[i]);
	}
	/* Found again (same prepared statement), and each one runs its own SQL. */
	for (int i = 0; i < NSTMT; i++) {
		struct db_stmt *s = storage_stmt(st, sql[i]);

		assert_ptr_equal(s, first[i]);
		assert_int_equal(db_step(s), DB_ROW);
		assert_int_equal(db_column_int(s, 0), i);
		storage_stmt_release(s);
	}
	/* Bad SQL is an error, not a cache entry. */
	assert_null(storage_stmt(st, "SELECT FROM nowhere"));
	storage_close(st);
	for (int i = 0; i < NSTMT; i++)
		free(sql[i]);
	char cmd[128];

	snprintf(cmd, sizeof(cmd), "rm -rf %s", dir);
	assert_int_equal(system(cmd), 0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_many_statements_are_cached_by_address),
	};

	return cmocka_run_group_tests_name("storage_stmt", tests, NULL, NULL);
}
