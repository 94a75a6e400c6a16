/* SPDX-License-Identifier: MIT */
/*
 * The SQL driver layer (db.h) on SQLite: results and error codes as the
 * feature code relies on them (unique -> -EEXIST, other constraints ->
 * -EINVAL), savepoints after a failed statement, the dialect both engines
 * share (upsert, RETURNING); and the storage settings: which are accepted,
 * and how a URI's password is masked for log lines.
 *
 * With STANZAD_TEST_PG_DSN set (a postgresql:// URI of a database the test
 * may write a table t in), the driver tests run again on PostgreSQL, with
 * what only that engine's driver does: ?N rewritten outside literals, a
 * NULL first binding of "?N IS NULL", booleans read as integers.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <sqlite3.h>

#include "db.h"

/* The PostgreSQL database of the second run, NULL for SQLite. */
static const char *pg_dsn;

static struct db *open_memory(void)
{
	sqlite3 *conn = NULL;
	struct db *db;

	if (pg_dsn) {
		char why[512];

		if (db_pg_connect(&db, pg_dsn, why, sizeof(why)))
			fail_msg("%s", why);
		assert_int_equal(db_exec(db, "DROP TABLE IF EXISTS t; CREATE TABLE t ("
					 "k TEXT COLLATE \"C\" PRIMARY KEY,"
					 " n BIGINT NOT NULL CHECK (n >= 0), b BYTEA)"), 0);
		return db;
	}
	assert_int_equal(sqlite3_open_v2(":memory:", &conn, SQLITE_OPEN_READWRITE |
					 SQLITE_OPEN_CREATE | SQLITE_OPEN_EXRESCODE, NULL),
			 SQLITE_OK);
	db = db_sqlite_wrap(conn);
	assert_non_null(db);
	assert_int_equal(db_exec(db, "CREATE TABLE t (k TEXT PRIMARY KEY, n INTEGER NOT NULL"
				 " CHECK (n >= 0), b BLOB)"), 0);
	return db;
}

static int put(struct db *db, const char *k, int64_t n)
{
	static const char sql[] = "INSERT INTO t (k, n) VALUES (?1, ?2)";
	struct db_stmt *s = db_prepare(db, sql);
	int rc;

	assert_non_null(s);
	db_bind_text(s, 1, k, -1);
	db_bind_int64(s, 2, n);
	rc = db_step(s);
	db_finalize(s);
	return rc;
}

static void test_constraints_map_to_errno(void **state)
{
	struct db *db = open_memory();

	assert_int_equal(put(db, "a", 1), DB_DONE);
	assert_int_equal(db_changes(db), 1);
	assert_int_equal(put(db, "a", 2), -EEXIST);
	assert_int_equal(put(db, "b", -1), -EINVAL);
	assert_true(db_errmsg(db)[0] != '\0');
	db_close(db);
}

static void test_savepoint_undoes_a_failed_request_only(void **state)
{
	struct db *db = open_memory();
	struct db_stmt *s;

	assert_int_equal(db_txn(db, DB_BEGIN), 0);
	assert_true(db_in_transaction(db));
	assert_int_equal(put(db, "kept", 1), DB_DONE);
	assert_int_equal(db_txn(db, DB_SAVEPOINT), 0);
	assert_int_equal(put(db, "undone", 1), DB_DONE);
	assert_int_equal(put(db, "kept", 2), -EEXIST);
	assert_int_equal(db_txn(db, DB_ROLLBACK_TO), 0);
	assert_int_equal(db_txn(db, DB_RELEASE), 0);
	assert_int_equal(db_txn(db, DB_COMMIT), 0);
	assert_false(db_in_transaction(db));
	s = db_prepare(db, "SELECT k FROM t ORDER BY k");
	assert_int_equal(db_step(s), DB_ROW);
	assert_string_equal((const char *)db_column_text(s, 0), "kept");
	assert_int_equal(db_step(s), DB_DONE);
	db_finalize(s);
	db_close(db);
}

/* The shared dialect: upsert with excluded, RETURNING, blobs and NULLs. */
static void test_upsert_returning_and_blobs(void **state)
{
	static const char upsert[] =
		"INSERT INTO t (k, n, b) VALUES (?1, ?2, ?3)"
		" ON CONFLICT (k) DO UPDATE SET n = t.n + excluded.n, b = excluded.b RETURNING n";
	static const unsigned char blob[] = { 0, 1, 2, 0xff };
	struct db *db = open_memory();
	struct db_stmt *s = db_prepare(db, upsert);

	assert_non_null(s);
	for (int i = 1; i <= 2; i++) {
		db_bind_text(s, 1, "k", -1);
		db_bind_int(s, 2, 5);
		db_bind_blob(s, 3, blob, sizeof(blob));
		assert_int_equal(db_step(s), DB_ROW);
		assert_int_equal(db_column_int64(s, 0), 5 * i);
		assert_true(db_busy(s));
		assert_int_equal(db_step(s), DB_DONE);
		db_reset(s);
		assert_false(db_busy(s));
	}
	db_finalize(s);
	s = db_prepare(db, "SELECT b, NULL FROM t WHERE k = ?1");
	db_bind_text(s, 1, "k", -1);
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal(db_column_count(s), 2);
	assert_memory_equal(db_column_blob(s, 0), blob, sizeof(blob));
	assert_int_equal(db_column_bytes(s, 0), (int)sizeof(blob));
	assert_true(db_column_is_null(s, 1));
	assert_null(db_column_text(s, 1));
	db_finalize(s);
	db_close(db);
}

/* ?N inside a literal is text, "?N IS NULL" with NULL, comparisons as 0/1. */
static void test_literals_null_filters_and_booleans(void **state)
{
	static const char sql[] =
		"SELECT '?1 ''?2''', n, n > 3, ?2 IS NULL FROM t WHERE (?1 IS NULL OR k = ?1)"
		" ORDER BY k";
	struct db *db = open_memory();
	struct db_stmt *s;

	assert_int_equal(put(db, "a", 2), DB_DONE);
	assert_int_equal(put(db, "b", 7), DB_DONE);
	s = db_prepare(db, sql);
	assert_non_null(s);
	db_bind_null(s, 1);
	db_bind_int(s, 2, 1);
	assert_int_equal(db_step(s), DB_ROW);
	assert_string_equal((const char *)db_column_text(s, 0), "?1 '?2'");
	assert_int_equal(db_column_int(s, 2), 0);
	assert_int_equal(db_column_int(s, 3), 0);
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal(db_column_int64(s, 1), 7);
	assert_int_equal(db_column_int(s, 2), 1);
	assert_int_equal(db_step(s), DB_DONE);
	db_reset(s);
	/* Text where NULL was bound first: the same statement runs again. */
	db_bind_text(s, 1, "b", -1);
	assert_int_equal(db_step(s), DB_ROW);
	assert_int_equal(db_column_int64(s, 1), 7);
	assert_int_equal(db_step(s), DB_DONE);
	db_finalize(s);
	db_close(db);
}

static void test_storage_settings(void **state)
{
	assert_true(db_storage_ok(NULL));
	assert_true(db_storage_ok("sqlite"));
	assert_true(db_storage_ok("postgresql://u@h:5432/d"));
	assert_true(db_storage_ok("postgres://u@h/d"));
	assert_false(db_storage_ok(""));
	assert_false(db_storage_ok("SQLite"));
	assert_false(db_storage_ok("mysql://u@h/d"));
	assert_false(db_is_pg_uri("sqlite"));
}

static void check_mask(const char *uri, const char *want)
{
	char out[256];

	db_uri_mask(uri, out, sizeof(out));
	assert_string_equal(out, want);
}

static void test_uri_password_is_masked(void **state)
{
	char small[12];

	check_mask("postgresql://u@h:5432/d", "postgresql://u@h:5432/d");
	check_mask("postgresql://u:s3cret@h:5432/d", "postgresql://u:***@h:5432/d");
	/* '@' may appear in a password; the last one of the authority ends it. */
	check_mask("postgresql://u:p@ss@h/d", "postgresql://u:***@h/d");
	check_mask("postgresql://u@h/d?sslmode=require&password=x&connect_timeout=2",
		   "postgresql://u@h/d?sslmode=require&password=***&connect_timeout=2");
	check_mask("postgresql://h/d?password=x", "postgresql://h/d?password=***");
	check_mask("postgresql:///d", "postgresql:///d");
	/* Truncated, never overflowing. */
	db_uri_mask("postgresql://u:secret@host/d", small, sizeof(small));
	assert_string_equal(small, "postgresql:");
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_constraints_map_to_errno),
		cmocka_unit_test(test_savepoint_undoes_a_failed_request_only),
		cmocka_unit_test(test_upsert_returning_and_blobs),
		cmocka_unit_test(test_literals_null_filters_and_booleans),
		cmocka_unit_test(test_storage_settings),
		cmocka_unit_test(test_uri_password_is_masked),
	};
	int failed = cmocka_run_group_tests_name("sqlite", tests, NULL, NULL);

	pg_dsn = getenv("STANZAD_TEST_PG_DSN");
	if (pg_dsn && pg_dsn[0])
		failed += cmocka_run_group_tests_name("postgresql", tests, NULL, NULL);
	return failed;
}
