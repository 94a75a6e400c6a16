/* SPDX-License-Identifier: MIT */
/* The push_registrations table (XEP-0357, push.c): one row per (account, app server, node). */
#include <errno.h>
#include <time.h>

#include "push.h"
#include "storage_db.h"

/*
 * Replaces an existing registration, or adds one while the account
 * exists and holds fewer than ?6: one statement, so nothing slips
 * between the check and the write.
 */
static const char sql_push_put[] =
	"INSERT INTO push_registrations (username, jid, node, options, created_at)"
	" SELECT ?1, ?2, ?3, ?4, ?5"
	" WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?1)"
	" AND (EXISTS (SELECT 1 FROM push_registrations"
	"              WHERE username = ?1 AND jid = ?2 AND node = ?3)"
	"      OR (SELECT count(*) FROM push_registrations WHERE username = ?1) < ?6)"
	" ON CONFLICT (username, jid, node) DO UPDATE SET options = excluded.options,"
	" created_at = excluded.created_at";
/* Tells a full account from a gone one when the put wrote nothing. */
static const char sql_push_account[] = "SELECT 1 FROM accounts WHERE username = ?1";
/* ?3 NULL: every node of that app server (XEP-0357 <disable/> without a node). */
static const char sql_push_delete[] =
	"DELETE FROM push_registrations WHERE username = ?1 AND jid = ?2"
	" AND (?3 IS NULL OR node = ?3)";
/*
 * Oldest first, and never more than PUSH_REGISTRATIONS_MAX even if the
 * table holds more (a lowered limit keeps old rows; they still count).
 */
static const char sql_push_list[] =
	"SELECT jid, node, options FROM push_registrations WHERE username = ?1"
	" ORDER BY created_at, jid, node LIMIT ?2";

int push_db_enable(struct storage *st, const char *user, const char *jid, const char *node,
		   const char *options, uint32_t max)
{
	struct db_stmt *s = storage_stmt(st, sql_push_put);
	int ret, rc;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_text(s, 2, jid, -1);
	db_bind_text(s, 3, node, -1);
	if (options)
		db_bind_text(s, 4, options, -1);
	else
		db_bind_null(s, 4);
	db_bind_int64(s, 5, (int64_t)time(NULL));
	db_bind_int64(s, 6, max);
	/* The options text is the submitted form as stored_xml_serialize wrote it. */
	ret = storage_stmt_exec(st, "push_put", s);
	if (ret < 0)
		return ret;
	if (db_changes(storage_db(st)) > 0)
		return 0;
	/* Nothing written: the account is gone, or it is full. */
	s = storage_stmt(st, sql_push_account);
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	rc = db_step(s);
	storage_stmt_release(s);
	if (rc == DB_ROW)
		return -ENOSPC;
	return rc == DB_DONE ? -ENOENT : storage_db_error(st, "push_account", rc);
}

int push_db_disable(struct storage *st, const char *user, const char *jid, const char *node)
{
	struct db_stmt *s = storage_stmt(st, sql_push_delete);
	int ret;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_text(s, 2, jid, -1);
	if (node)
		db_bind_text(s, 3, node, -1);
	else
		db_bind_null(s, 3);
	ret = storage_stmt_exec(st, "push_delete", s);
	/* Nothing removed is no error: disabling is idempotent. */
	return ret < 0 ? ret : db_changes(storage_db(st));
}

int push_db_each(struct storage *st, const char *user,
		 int (*fn)(void *arg, const char *jid, const char *node, const char *options),
		 void *arg)
{
	struct db_stmt *s = storage_stmt(st, sql_push_list);
	int rc = DB_DONE, ret = 0;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_int(s, 2, PUSH_REGISTRATIONS_MAX);
	while (ret == 0 && (rc = db_step(s)) == DB_ROW) {
		const char *jid = (const char *)db_column_text(s, 0);
		const char *node = (const char *)db_column_text(s, 1);
		const char *options = (const char *)db_column_text(s, 2);

		/* NOT NULL columns; a NULL here would be a damaged row: skipped. */
		if (jid && node)
			ret = fn(arg, jid, node, options);
	}
	if (ret == 0 && rc != DB_DONE)
		ret = storage_db_error(st, "push_list", rc);
	storage_stmt_release(s);
	return ret;
}
