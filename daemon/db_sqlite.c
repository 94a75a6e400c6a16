/* SPDX-License-Identifier: MIT */
/*
 * The SQLite engine of the driver layer (db.h): a thin shim over the
 * sqlite3 API, which db.h copies the shape of. Opening, pragmas and the
 * schema version stay in storage.c; this only runs statements.
 */
#include <errno.h>
#include <stdlib.h>

#include <sqlite3.h>

#include "db.h"

struct db_sqlite {
	struct db base;
	sqlite3 *conn;
	/* The transaction verbs, prepared on first use (BEGIN runs per batch). */
	sqlite3_stmt *txn[DB_ROLLBACK_TO + 1];
};

struct db_sqlite_stmt {
	struct db_stmt base;
	sqlite3_stmt *s;
};

static const char *const txn_sql[] = {
	/* IMMEDIATE: the write lock now, so a batch never fails half-way. */
	[DB_BEGIN] = "BEGIN IMMEDIATE",
	[DB_COMMIT] = "COMMIT",
	[DB_ROLLBACK] = "ROLLBACK",
	[DB_SAVEPOINT] = "SAVEPOINT req",
	[DB_RELEASE] = "RELEASE req",
	[DB_ROLLBACK_TO] = "ROLLBACK TO req",
};

static struct db_sqlite *to_db(struct db *db)
{
	return (struct db_sqlite *)db;
}

static sqlite3_stmt *to_s(struct db_stmt *s)
{
	return ((struct db_sqlite_stmt *)s)->s;
}

int db_sqlite_result(int rc)
{
	switch (rc) {
	case SQLITE_OK:
		return 0;
	case SQLITE_ROW:
		return DB_ROW;
	case SQLITE_DONE:
		return DB_DONE;
	case SQLITE_CONSTRAINT_PRIMARYKEY:
	case SQLITE_CONSTRAINT_UNIQUE:
		return -EEXIST;
	}
	switch (rc & 0xff) {
	case SQLITE_CONSTRAINT:
		return -EINVAL;
	case SQLITE_BUSY:
	case SQLITE_LOCKED:
		return -EBUSY;
	case SQLITE_FULL:
		return -ENOSPC;
	case SQLITE_NOMEM:
		return -ENOMEM;
	default:
		return -EIO;
	}
}

static struct db_stmt *sq_prepare(struct db *db, const char *sql)
{
	struct db_sqlite_stmt *s = calloc(1, sizeof(*s));

	if (!s)
		return NULL;
	s->base.db = db;
	/* PERSISTENT: cached for the life of the store, kept out of lookaside. */
	if (sqlite3_prepare_v3(to_db(db)->conn, sql, -1, SQLITE_PREPARE_PERSISTENT, &s->s,
			       NULL) != SQLITE_OK) {
		free(s);
		return NULL;
	}
	return &s->base;
}

static void sq_finalize(struct db_stmt *s)
{
	sqlite3_finalize(to_s(s));
	free(s);
}

/* SQLITE_STATIC everywhere: db.h promises the value lives until the step. */
static int sq_bind_text(struct db_stmt *s, int i, const char *p, int len)
{
	return db_sqlite_result(sqlite3_bind_text(to_s(s), i, p, len, SQLITE_STATIC));
}

static int sq_bind_blob(struct db_stmt *s, int i, const void *p, int len)
{
	return db_sqlite_result(sqlite3_bind_blob(to_s(s), i, p, len, SQLITE_STATIC));
}

static int sq_bind_int64(struct db_stmt *s, int i, int64_t v)
{
	return db_sqlite_result(sqlite3_bind_int64(to_s(s), i, v));
}

static int sq_bind_null(struct db_stmt *s, int i)
{
	return db_sqlite_result(sqlite3_bind_null(to_s(s), i));
}

static int sq_step(struct db_stmt *s)
{
	return db_sqlite_result(sqlite3_step(to_s(s)));
}

static void sq_reset(struct db_stmt *s)
{
	sqlite3_reset(to_s(s));
	sqlite3_clear_bindings(to_s(s));
}

static bool sq_busy(struct db_stmt *s)
{
	return sqlite3_stmt_busy(to_s(s));
}

static int sq_column_count(struct db_stmt *s)
{
	return sqlite3_column_count(to_s(s));
}

static bool sq_column_is_null(struct db_stmt *s, int col)
{
	return sqlite3_column_type(to_s(s), col) == SQLITE_NULL;
}

static const unsigned char *sq_column_text(struct db_stmt *s, int col)
{
	return sqlite3_column_text(to_s(s), col);
}

static const void *sq_column_blob(struct db_stmt *s, int col)
{
	return sqlite3_column_blob(to_s(s), col);
}

static int sq_column_bytes(struct db_stmt *s, int col)
{
	return sqlite3_column_bytes(to_s(s), col);
}

static int64_t sq_column_int64(struct db_stmt *s, int col)
{
	return sqlite3_column_int64(to_s(s), col);
}

static int sq_changes(struct db *db)
{
	return sqlite3_changes(to_db(db)->conn);
}

static int sq_exec(struct db *db, const char *script)
{
	return db_sqlite_result(sqlite3_exec(to_db(db)->conn, script, NULL, NULL, NULL));
}

static int sq_txn(struct db *db, enum db_txn verb)
{
	struct db_sqlite *d = to_db(db);
	int rc;

	if (!d->txn[verb]) {
		rc = sqlite3_prepare_v3(d->conn, txn_sql[verb], -1, SQLITE_PREPARE_PERSISTENT,
					&d->txn[verb], NULL);
		if (rc != SQLITE_OK)
			return db_sqlite_result(rc);
	}
	rc = sqlite3_step(d->txn[verb]);
	sqlite3_reset(d->txn[verb]);
	return rc == SQLITE_DONE ? 0 : db_sqlite_result(rc);
}

static bool sq_in_transaction(struct db *db)
{
	return !sqlite3_get_autocommit(to_db(db)->conn);
}

static const char *sq_errmsg(struct db *db)
{
	return sqlite3_errmsg(to_db(db)->conn);
}

static bool sq_lost(struct db *db)
{
	return false;
}

static void sq_close(struct db *db)
{
	struct db_sqlite *d = to_db(db);

	for (size_t i = 0; i < sizeof(d->txn) / sizeof(d->txn[0]); i++)
		sqlite3_finalize(d->txn[i]);
	/* The last connection to close checkpoints the WAL into the file. */
	sqlite3_close(d->conn);
	free(d);
}

static const struct db_ops db_sqlite_ops = {
	.name = "sqlite",
	.prepare = sq_prepare,
	.finalize = sq_finalize,
	.bind_text = sq_bind_text,
	.bind_blob = sq_bind_blob,
	.bind_int64 = sq_bind_int64,
	.bind_null = sq_bind_null,
	.step = sq_step,
	.reset = sq_reset,
	.busy = sq_busy,
	.column_count = sq_column_count,
	.column_is_null = sq_column_is_null,
	.column_text = sq_column_text,
	.column_blob = sq_column_blob,
	.column_bytes = sq_column_bytes,
	.column_int64 = sq_column_int64,
	.changes = sq_changes,
	.exec = sq_exec,
	.txn = sq_txn,
	.in_transaction = sq_in_transaction,
	.errmsg = sq_errmsg,
	.lost = sq_lost,
	.close = sq_close,
};

struct db *db_sqlite_wrap(struct sqlite3 *conn)
{
	struct db_sqlite *d = calloc(1, sizeof(*d));

	if (!d)
		return NULL;
	d->base.ops = &db_sqlite_ops;
	d->conn = conn;
	return &d->base;
}

struct sqlite3 *db_sqlite_handle(struct db *db)
{
	return to_db(db)->conn;
}
