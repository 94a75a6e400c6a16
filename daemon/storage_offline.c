/* SPDX-License-Identifier: MIT */
/*
 * Offline messages in the store (table offline_messages of schema migration
 * 2): oldest first by their autoincrement id. Storage thread only.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "offline.h"
#include "storage.h"
#include "storage_db.h"

static const char sql_exists[] = "SELECT 1 FROM accounts WHERE username = ?1";
static const char sql_count[] = "SELECT count(*) FROM offline_messages WHERE username = ?1";
static const char sql_insert[] =
	"INSERT INTO offline_messages (username, stanza, created_at) VALUES (?1, ?2, ?3)";
static const char sql_take[] =
	"SELECT id, stanza FROM offline_messages WHERE username = ?1 ORDER BY id LIMIT ?2";
/*
 * The rows taken, one by one rather than up to the last id: with several
 * nodes on one PostgreSQL database, ids are handed out at insert and
 * committed in any order, so a row below the last one taken may become
 * visible between the read and the delete. It stays for the next take.
 * A row is handed on only if this delete removed it: two nodes taking
 * the account's messages at once (a session on each) read the same rows,
 * and the second delete waits for the first and then finds nothing.
 */
static const char sql_delete[] =
	"DELETE FROM offline_messages WHERE username = ?1 AND id = ?2 RETURNING id";

/* A one-row, one-integer query about user: its value in *out (0 when no row). */
static int offline_scalar(struct storage *st, const char *sql, const char *user, int64_t *out,
			  bool *found)
{
	struct db_stmt *s = storage_stmt(st, sql);
	int rc;

	*out = 0;
	*found = false;
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	rc = db_step(s);
	if (rc == DB_ROW) {
		*out = db_column_int64(s, 0);
		*found = true;
	}
	storage_stmt_release(s);
	if (rc != DB_ROW && rc != DB_DONE)
		return storage_db_error(st, "offline.query", rc);
	return 0;
}

int offline_count_sync(struct storage *st, const char *user, uint32_t *out)
{
	int64_t n;
	bool found;
	int rc = offline_scalar(st, sql_count, user, &n, &found);

	*out = rc < 0 ? 0 : (uint32_t)n;
	return rc;
}

int offline_db_put(struct storage *st, const char *user, const char *stanza, size_t len,
		   uint32_t max)
{
	struct db_stmt *s;
	int64_t n;
	bool found;
	int rc;

	rc = offline_scalar(st, sql_exists, user, &n, &found);
	if (rc < 0)
		return rc;
	if (!found)
		return -ENOENT;
	rc = offline_scalar(st, sql_count, user, &n, &found);
	if (rc < 0)
		return rc;
	if (n >= (int64_t)max)
		return -EDQUOT;
	s = storage_stmt(st, sql_insert);
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_text(s, 2, stanza, (int)len);
	db_bind_int64(s, 3, (int64_t)time(NULL));
	return storage_stmt_exec(st, "offline.insert", s);
}

/* A row read, kept until its delete says it is ours. */
struct offline_row {
	int64_t id;
	char *stanza;			/* NULL: none stored */
	size_t len;
};

int offline_db_take(struct storage *st, const char *user, uint32_t limit,
		    int (*fn)(void *arg, const char *stanza, size_t len), void *arg, uint32_t *n)
{
	struct offline_row *rows;
	struct db_stmt *s;
	uint32_t nrows = 0;
	int rc = DB_DONE, err = 0;

	*n = 0;
	if (!limit)
		return 0;
	rows = calloc(limit, sizeof(*rows));
	if (!rows)
		return -ENOMEM;
	s = storage_stmt(st, sql_take);
	if (!s) {
		free(rows);
		return -EIO;
	}
	db_bind_text(s, 1, user, -1);
	db_bind_int64(s, 2, limit);
	while (nrows < limit && (rc = db_step(s)) == DB_ROW) {
		const char *text = (const char *)db_column_text(s, 1);
		struct offline_row *r = &rows[nrows++];

		r->id = db_column_int64(s, 0);
		if (!text)
			continue;
		r->len = (size_t)db_column_bytes(s, 1);
		r->stanza = malloc(r->len + 1);
		if (!r->stanza) {
			err = -ENOMEM;
			break;
		}
		memcpy(r->stanza, text, r->len);
		r->stanza[r->len] = '\0';
	}
	storage_stmt_release(s);
	if (!err && rc != DB_ROW && rc != DB_DONE)
		err = storage_db_error(st, "offline.take", rc);
	for (uint32_t i = 0; !err && i < nrows; i++) {
		s = storage_stmt(st, sql_delete);
		if (!s) {
			err = -EIO;
			break;
		}
		db_bind_text(s, 1, user, -1);
		db_bind_int64(s, 2, rows[i].id);
		rc = db_step(s);
		storage_stmt_release(s);
		if (rc != DB_ROW && rc != DB_DONE) {
			err = storage_db_error(st, "offline.delete", rc);
			break;
		}
		/* Taken by another node meanwhile: it delivers it. */
		if (rc == DB_DONE || !rows[i].stanza)
			continue;
		err = fn(arg, rows[i].stanza, rows[i].len);
		if (err < 0)
			break;
		(*n)++;
	}
	for (uint32_t i = 0; i < nrows; i++)
		free(rows[i].stanza);
	free(rows);
	return err;
}
