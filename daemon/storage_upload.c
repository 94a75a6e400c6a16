/* SPDX-License-Identifier: MIT */
/*
 * The uploads table (XEP-0363, upload.c): one row per slot, 'pending'
 * from the slot request, 'done' once its file is stored under
 * STATE_DIR/upload/TOKEN. Rows of a deleted account go with it (ON DELETE
 * CASCADE); the cleanup then removes the files no row refers to.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "storage_db.h"
#include "upload.h"

static const char sql_usage[] = "SELECT COALESCE(SUM(size), 0) FROM uploads WHERE username = ?1";
static const char sql_add[] =
	"INSERT INTO uploads (token, username, filename, size, type, state, created_at)"
	" VALUES (?1, ?2, ?3, ?4, ?5, 'pending', ?6)";
static const char sql_done[] =
	"UPDATE uploads SET state = 'done', type = ?2, uploaded_at = ?3"
	" WHERE token = ?1 AND state = 'pending'";
static const char sql_get[] =
	"SELECT filename, size, type FROM uploads WHERE token = ?1 AND state = 'done'";
static const char sql_delete[] = "DELETE FROM uploads WHERE token = ?1";
static const char sql_expired[] =
	"SELECT token FROM uploads WHERE (state = 'done' AND uploaded_at < ?1)"
	" OR (state = 'pending' AND created_at < ?2)";
static const char sql_exists[] = "SELECT 1 FROM uploads WHERE token = ?1";

int storage_upload_usage(struct storage *st, const char *user, uint64_t *bytes)
{
	struct db_stmt *s = storage_stmt(st, sql_usage);
	int rc, ret = 0;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	rc = db_step(s);
	if (rc == DB_ROW)
		*bytes = (uint64_t)db_column_int64(s, 0);
	else
		ret = storage_db_error(st, "upload_usage", rc);
	storage_stmt_release(s);
	return ret;
}

int storage_upload_add(struct storage *st, const char *user, const char *token,
		       const char *filename, uint64_t size, const char *type, int64_t now)
{
	struct db_stmt *s = storage_stmt(st, sql_add);
	int rc;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, token, -1);
	db_bind_text(s, 2, user, -1);
	db_bind_text(s, 3, filename, -1);
	db_bind_int64(s, 4, (int64_t)size);
	db_bind_text(s, 5, type, -1);
	db_bind_int64(s, 6, now);
	rc = db_step(s);
	storage_stmt_release(s);
	if (rc == -EEXIST)
		return -EEXIST;
	return rc == DB_DONE ? 0 : storage_db_error(st, "upload_add", rc);
}

int storage_upload_done(struct storage *st, const char *token, const char *type, int64_t now)
{
	struct db_stmt *s = storage_stmt(st, sql_done);
	int rc;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, token, -1);
	db_bind_text(s, 2, type, -1);
	db_bind_int64(s, 3, now);
	rc = db_step(s);
	storage_stmt_release(s);
	if (rc != DB_DONE)
		return storage_db_error(st, "upload_done", rc);
	/* No pending row: the cleanup voided the slot meanwhile. */
	return db_changes(storage_db(st)) ? 0 : -ENOENT;
}

int storage_upload_get(struct storage *st, const char *token, char *name, size_t name_size,
		       uint64_t *size, char *type, size_t type_size)
{
	struct db_stmt *s = storage_stmt(st, sql_get);
	int rc, ret = 0;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, token, -1);
	rc = db_step(s);
	if (rc == DB_ROW) {
		const char *n = (const char *)db_column_text(s, 0);
		const char *t = (const char *)db_column_text(s, 2);

		snprintf(name, name_size, "%s", n ? n : "");
		*size = (uint64_t)db_column_int64(s, 1);
		snprintf(type, type_size, "%s", t ? t : "");
	} else if (rc == DB_DONE) {
		ret = -ENOENT;
	} else {
		ret = storage_db_error(st, "upload_get", rc);
	}
	storage_stmt_release(s);
	return ret;
}

int storage_upload_delete(struct storage *st, const char *token)
{
	struct db_stmt *s = storage_stmt(st, sql_delete);

	if (!s)
		return -EIO;
	db_bind_text(s, 1, token, -1);
	return storage_stmt_exec(st, "upload_delete", s);
}

int storage_upload_expired(struct storage *st, int64_t done_before, int64_t pending_before,
			   int (*fn)(void *arg, const char *token), void *arg)
{
	struct db_stmt *s = storage_stmt(st, sql_expired);
	int rc, ret = 0;

	if (!s)
		return -EIO;
	db_bind_int64(s, 1, done_before);
	db_bind_int64(s, 2, pending_before);
	while ((rc = db_step(s)) == DB_ROW) {
		const char *t = (const char *)db_column_text(s, 0);

		if (t && (ret = fn(arg, t)) != 0)
			break;
	}
	if (!ret && rc != DB_DONE)
		ret = storage_db_error(st, "upload_expired", rc);
	storage_stmt_release(s);
	return ret;
}

int storage_upload_exists(struct storage *st, const char *token)
{
	struct db_stmt *s = storage_stmt(st, sql_exists);
	int rc, ret;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, token, -1);
	rc = db_step(s);
	ret = rc == DB_ROW ? 1 : rc == DB_DONE ? 0 : storage_db_error(st, "upload_exists", rc);
	storage_stmt_release(s);
	return ret;
}
