/* SPDX-License-Identifier: MIT */
/*
 * The SQL driver under the store: one connection and its prepared
 * statements, shaped like the part of the SQLite API the store uses, with
 * two engines behind it (db_sqlite.c, db_pg.c). Feature code
 * (storage_<feature>.c) is written once against this and runs on
 * both, so its SQL keeps to what both accept:
 *  - numbered placeholders ?1..?N (the PostgreSQL driver rewrites them to
 *    $1..$N when it prepares);
 *  - INSERT ... ON CONFLICT (...) DO UPDATE / DO NOTHING, never INSERT OR
 *    REPLACE / IGNORE; RETURNING instead of last_insert_rowid();
 *  - no engine-only functions (max(a, b), instr, strftime, rowid), no
 *    integers used as booleans (CASE WHEN x <> 0, not CASE WHEN x), no
 *    negative LIMIT.
 * Text keys compare and sort in byte order on both (SQLite's BINARY, and
 * COLLATE "C" on every TEXT column of the PostgreSQL schema).
 *
 * A connection and its statements are used by one thread at a time.
 */
#ifndef STANZAD_DB_H
#define STANZAD_DB_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

/*
 * What db_step returns besides -errno. The errors:
 *  -EEXIST  a unique or primary key constraint refused the row
 *  -EINVAL  another constraint (CHECK, NOT NULL, foreign key)
 *  -EBUSY   another process kept the write lock too long (SQLite)
 *  -ENOTCONN the server connection is gone (PostgreSQL); the
 *           transaction is lost with it
 *  -EIO     anything else (db_errmsg says what)
 */
enum db_step_result {
	DB_ROW = 100,	/* a row is ready: read its columns */
	DB_DONE = 101,	/* no (more) rows */
};

/* Transaction verbs, each one statement on the connection. */
enum db_txn {
	DB_BEGIN = 0,		/* takes the write lock at once on SQLite */
	DB_COMMIT,
	DB_ROLLBACK,
	DB_SAVEPOINT,		/* one level, named "req" */
	DB_RELEASE,
	DB_ROLLBACK_TO,		/* undoes to the savepoint, which stays open */
};

struct db;
struct db_stmt;

struct db_ops {
	const char *name;	/* "sqlite" or "postgresql", for log lines */
	struct db_stmt *(*prepare)(struct db *db, const char *sql);
	void (*finalize)(struct db_stmt *s);
	int (*bind_text)(struct db_stmt *s, int i, const char *p, int len);
	int (*bind_blob)(struct db_stmt *s, int i, const void *p, int len);
	int (*bind_int64)(struct db_stmt *s, int i, int64_t v);
	int (*bind_null)(struct db_stmt *s, int i);
	int (*step)(struct db_stmt *s);
	void (*reset)(struct db_stmt *s);
	bool (*busy)(struct db_stmt *s);
	int (*column_count)(struct db_stmt *s);
	bool (*column_is_null)(struct db_stmt *s, int col);
	const unsigned char *(*column_text)(struct db_stmt *s, int col);
	const void *(*column_blob)(struct db_stmt *s, int col);
	int (*column_bytes)(struct db_stmt *s, int col);
	int64_t (*column_int64)(struct db_stmt *s, int col);
	int (*changes)(struct db *db);
	int (*exec)(struct db *db, const char *script);
	int (*txn)(struct db *db, enum db_txn verb);
	bool (*in_transaction)(struct db *db);
	const char *(*errmsg)(struct db *db);
	bool (*lost)(struct db *db);
	void (*close)(struct db *db);
};

/* The engines' own structs start with these. */
struct db {
	const struct db_ops *ops;
};

struct db_stmt {
	struct db *db;
};

/*
 * A statement for sql, which must stay valid as long as the statement (the
 * store keeps static strings). NULL when the engine refused it (see
 * db_errmsg). On PostgreSQL the server sees it at the first step.
 */
static inline struct db_stmt *db_prepare(struct db *db, const char *sql)
{
	return db->ops->prepare(db, sql);
}

static inline void db_finalize(struct db_stmt *s)
{
	if (s)
		s->db->ops->finalize(s);
}

/*
 * Binds parameter i (1-based). len -1 means up to the NUL. The value is
 * read before db_step returns, so it need live only until then. 0 or
 * -errno.
 */
static inline int db_bind_text(struct db_stmt *s, int i, const char *p, int len)
{
	return s->db->ops->bind_text(s, i, p, len);
}

static inline int db_bind_blob(struct db_stmt *s, int i, const void *p, int len)
{
	return s->db->ops->bind_blob(s, i, p, len);
}

static inline int db_bind_int64(struct db_stmt *s, int i, int64_t v)
{
	return s->db->ops->bind_int64(s, i, v);
}

static inline int db_bind_int(struct db_stmt *s, int i, int v)
{
	return s->db->ops->bind_int64(s, i, v);
}

static inline int db_bind_null(struct db_stmt *s, int i)
{
	return s->db->ops->bind_null(s, i);
}

/* DB_ROW, DB_DONE or -errno (see enum db_step_result). */
static inline int db_step(struct db_stmt *s)
{
	return s->db->ops->step(s);
}

/* Makes the statement ready to run again and drops its bindings. */
static inline void db_reset(struct db_stmt *s)
{
	s->db->ops->reset(s);
}

/* True between the first step and the reset. */
static inline bool db_busy(struct db_stmt *s)
{
	return s->db->ops->busy(s);
}

/*
 * Columns of the current row (0-based). Pointers stay valid until the
 * next step or reset; text is NUL-terminated; NULL reads as a NULL
 * pointer, 0 bytes, or 0.
 */
static inline int db_column_count(struct db_stmt *s)
{
	return s->db->ops->column_count(s);
}

static inline bool db_column_is_null(struct db_stmt *s, int col)
{
	return s->db->ops->column_is_null(s, col);
}

static inline const unsigned char *db_column_text(struct db_stmt *s, int col)
{
	return s->db->ops->column_text(s, col);
}

static inline const void *db_column_blob(struct db_stmt *s, int col)
{
	return s->db->ops->column_blob(s, col);
}

/* Bytes of the text or blob last read from col (call after reading it). */
static inline int db_column_bytes(struct db_stmt *s, int col)
{
	return s->db->ops->column_bytes(s, col);
}

static inline int64_t db_column_int64(struct db_stmt *s, int col)
{
	return s->db->ops->column_int64(s, col);
}

static inline int db_column_int(struct db_stmt *s, int col)
{
	return (int)s->db->ops->column_int64(s, col);
}

/* Rows the last INSERT, UPDATE or DELETE on the connection changed. */
static inline int db_changes(struct db *db)
{
	return db->ops->changes(db);
}

/* Runs a script of statements without parameters or rows. 0 or -errno. */
static inline int db_exec(struct db *db, const char *script)
{
	return db->ops->exec(db, script);
}

/* 0 or -errno as db_step. */
static inline int db_txn(struct db *db, enum db_txn verb)
{
	return db->ops->txn(db, verb);
}

/* False outside a transaction, and once the engine ended one on an error. */
static inline bool db_in_transaction(struct db *db)
{
	return db->ops->in_transaction(db);
}

/* The engine's message about the last failure on the connection. */
static inline const char *db_errmsg(struct db *db)
{
	return db->ops->errmsg(db);
}

/*
 * True while the server is unreachable (an outage db_pg.c logged once as
 * storage.down): calls fail with -ENOTCONN until a transaction can begin
 * again. Never true on SQLite.
 */
static inline bool db_lost(struct db *db)
{
	return db->ops->lost(db);
}

/* Finalizes nothing: the caller finalizes its statements first. */
static inline void db_close(struct db *db)
{
	if (db)
		db->ops->close(db);
}

struct sqlite3;
/*
 * Wraps an open SQLite connection, which the struct db then owns (closed
 * by db_close). NULL on ENOMEM.
 */
struct db *db_sqlite_wrap(struct sqlite3 *conn);
struct sqlite3 *db_sqlite_handle(struct db *db);
/* Maps an SQLite result code to DB_ROW, DB_DONE, 0 or -errno. */
int db_sqlite_result(int rc);

/*
 * Connects to PostgreSQL. uri is a libpq connection URI (postgresql:// or
 * postgres://). 0 or -errno; on failure why says what (never the
 * password).
 */
int db_pg_connect(struct db **out, const char *uri, char *why, size_t why_size);

/* True for a storage setting that names a PostgreSQL server. */
static inline bool db_is_pg_uri(const char *s)
{
	return s && (strncmp(s, "postgresql://", 13) == 0 || strncmp(s, "postgres://", 11) == 0);
}

/*
 * True for a storage setting the store can open: NULL or "sqlite" (the
 * file in the state directory) or a PostgreSQL URI.
 */
static inline bool db_storage_ok(const char *s)
{
	return !s || strcmp(s, "sqlite") == 0 || db_is_pg_uri(s);
}

/*
 * Copies a connection URI into out with its password, if any, replaced by
 * "***": what log lines and messages may show.
 */
void db_uri_mask(const char *uri, char *out, size_t out_size);

#endif
