/* SPDX-License-Identifier: MIT */
/*
 * XEP-0313 archives and XEP-0441 preferences in the store (tables
 * mam_messages and mam_prefs of the mam migration). Storage thread only.
 *
 * Every page query is one index range scan: (username, ts) for the whole
 * archive, (username, peer, ts) for a 'with' query; the 'with' variants
 * are separate statements because an "?4 IS NULL OR peer = ?4" condition
 * would keep SQLite from using the peer index.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "log.h"
#include "mam.h"
#include "storage.h"
#include "storage_db.h"

#define MAM_COLUMNS "ts, id, peer, resource, outgoing, stanza"

/*
 * The new entry goes after the newest one of the archive even when the
 * clock says otherwise (a step back, or two messages in one microsecond),
 * and only for an existing account (no foreign-key error to log). A UID
 * or a ts that is taken inserts nothing rather than failing: on
 * PostgreSQL a failed statement would end the whole batch's transaction.
 * The ts is taken when another node sharing the database appended to the
 * same archive at the same moment: PostgreSQL makes this insert wait for
 * that node's commit, and the next try (a new statement, so a new
 * snapshot under READ COMMITTED) sees its entry and goes after it.
 */
static const char sql_insert[] =
	"INSERT INTO mam_messages (username, ts, id, peer, resource, outgoing, stanza)"
	" SELECT ?1, CASE WHEN newer > ?2 THEN newer ELSE ?2 END, ?3, ?4, ?5, ?6, ?7"
	" FROM (SELECT coalesce(max(ts) + 1, ?2) AS newer FROM mam_messages WHERE username = ?1) n"
	" WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?1)"
	" ON CONFLICT DO NOTHING";
static const char sql_account[] = "SELECT 1 FROM accounts WHERE username = ?1";
static const char sql_id_taken[] = "SELECT 1 FROM mam_messages WHERE username = ?1 AND id = ?2";
static const char sql_lookup[] =
	"SELECT ts FROM mam_messages WHERE username = ?1 AND id = ?2 AND ts > ?3";
static const char sql_get[] =
	"SELECT " MAM_COLUMNS " FROM mam_messages WHERE username = ?1 AND id = ?2 AND ts > ?3";
static const char sql_page_asc[] =
	"SELECT " MAM_COLUMNS " FROM mam_messages WHERE username = ?1 AND ts > ?2 AND ts < ?3"
	" ORDER BY ts LIMIT ?4 OFFSET ?5";
static const char sql_page_desc[] =
	"SELECT " MAM_COLUMNS " FROM mam_messages WHERE username = ?1 AND ts > ?2 AND ts < ?3"
	" ORDER BY ts DESC LIMIT ?4 OFFSET ?5";
static const char sql_page_peer_asc[] =
	"SELECT " MAM_COLUMNS " FROM mam_messages WHERE username = ?1 AND peer = ?6"
	" AND ts > ?2 AND ts < ?3 AND (?7 IS NULL OR resource = ?7)"
	" ORDER BY ts LIMIT ?4 OFFSET ?5";
static const char sql_page_peer_desc[] =
	"SELECT " MAM_COLUMNS " FROM mam_messages WHERE username = ?1 AND peer = ?6"
	" AND ts > ?2 AND ts < ?3 AND (?7 IS NULL OR resource = ?7)"
	" ORDER BY ts DESC LIMIT ?4 OFFSET ?5";
static const char sql_count[] =
	"SELECT count(*) FROM mam_messages WHERE username = ?1 AND ts > ?2 AND ts < ?3";
/* Without a resource the peer index alone answers (a resource needs the rows). */
static const char sql_count_peer[] =
	"SELECT count(*) FROM mam_messages WHERE username = ?1 AND peer = ?4"
	" AND ts > ?2 AND ts < ?3";
static const char sql_count_peer_res[] =
	"SELECT count(*) FROM mam_messages WHERE username = ?1 AND peer = ?4"
	" AND ts > ?2 AND ts < ?3 AND resource = ?5";
static const char sql_first[] =
	"SELECT " MAM_COLUMNS " FROM mam_messages WHERE username = ?1 AND ts > ?2"
	" ORDER BY ts LIMIT 1";
static const char sql_last[] =
	"SELECT " MAM_COLUMNS " FROM mam_messages WHERE username = ?1 AND ts > ?2"
	" ORDER BY ts DESC LIMIT 1";
/* Oldest first through the ts index, so a sweep never scans live rows. */
static const char sql_expire[] =
	"DELETE FROM mam_messages WHERE (username, ts) IN"
	" (SELECT username, ts FROM mam_messages WHERE ts < ?1 ORDER BY ts LIMIT ?2)";
/* The count quota (max_mam_messages): everything older than the keep-th newest goes. */
static const char sql_prune[] =
	"DELETE FROM mam_messages WHERE username = ?1 AND ts <= (SELECT ts FROM mam_messages"
	" WHERE username = ?1 ORDER BY ts DESC LIMIT 1 OFFSET ?2)";
static const char sql_prefs_get[] =
	"SELECT mode, always, never FROM mam_prefs WHERE username = ?1";
static const char sql_prefs_put[] =
	"INSERT INTO mam_prefs (username, mode, always, never) VALUES (?1, ?2, ?3, ?4)"
	" ON CONFLICT (username) DO UPDATE SET mode = excluded.mode, always = excluded.always,"
	" never = excluded.never";
static const char sql_unstamp[] =
	"UPDATE offline_messages SET stanza = replace(stanza, ?2, '')"
	" WHERE username = ?1 AND replace(stanza, ?2, '') <> stanza";

/* A text column, "" for NULL (never dereference what SQLite did not give). */
static const char *column_text(struct db_stmt *s, int col)
{
	const char *t = (const char *)db_column_text(s, col);

	return t ? t : "";
}

/* The current row of a MAM_COLUMNS statement. */
static void read_row(struct db_stmt *s, struct mam_row *row)
{
	row->ts = db_column_int64(s, 0);
	row->id = column_text(s, 1);
	row->peer = column_text(s, 2);
	row->resource = column_text(s, 3);
	row->outgoing = db_column_int(s, 4) != 0;
	row->stanza = column_text(s, 5);
	row->len = (size_t)db_column_bytes(s, 5);
}

/*
 * Steps a MAM_COLUMNS statement to its end, handing each row to fn. A
 * positive return of fn stops early and is success; a negative one is
 * returned. Releases the statement.
 */
static int each_row(struct storage *st, const char *op, struct db_stmt *s,
		    int (*fn)(void *arg, const struct mam_row *row), void *arg)
{
	struct mam_row row;
	int rc, ret = 0;

	while ((rc = db_step(s)) == DB_ROW) {
		read_row(s, &row);
		ret = fn(arg, &row);
		if (ret)
			break;
	}
	storage_stmt_release(s);
	if (ret < 0)
		return ret;
	if (ret == 0 && rc != DB_DONE)
		return storage_db_error(st, op, rc);
	return 0;
}

/* Whether a one-row lookup by user (and id) finds a row: 1, 0 or -errno. */
static int found(struct storage *st, const char *sql, const char *user, const char *id)
{
	struct db_stmt *s = storage_stmt(st, sql);
	int rc;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	if (id)
		db_bind_text(s, 2, id, -1);
	rc = db_step(s);
	storage_stmt_release(s);
	if (rc == DB_ROW || rc == DB_DONE)
		return rc == DB_ROW;
	return storage_db_error(st, "mam.insert", rc);
}

int mam_db_insert(struct storage *st, const char *user, int64_t ts, const char *id,
		  const char *peer, const char *resource, bool outgoing, const char *stanza,
		  size_t len)
{
	for (int i = 0; i < MAM_INSERT_TRIES; i++) {
		struct db_stmt *s = storage_stmt(st, sql_insert);
		int rc;

		if (!s)
			return -EIO;
		db_bind_text(s, 1, user, -1);
		db_bind_int64(s, 2, ts);
		db_bind_text(s, 3, id, -1);
		db_bind_text(s, 4, peer, -1);
		db_bind_text(s, 5, resource, -1);
		db_bind_int(s, 6, outgoing);
		db_bind_text(s, 7, stanza, (int)len);
		rc = db_step(s);
		storage_stmt_release(s);
		if (rc != DB_DONE)
			return storage_db_error(st, "mam.insert", rc);
		if (db_changes(storage_db(st)))
			return 0;
		/* A random UID met an existing one (2^-96 per pair): the caller decides. */
		rc = found(st, sql_id_taken, user, id);
		if (rc)
			return rc > 0 ? -EEXIST : rc;
		rc = found(st, sql_account, user, NULL);
		if (rc <= 0)
			return rc ? rc : -ENOENT;
		/* Another node took the ts: again, after its entry. */
	}
	/* Nodes kept racing for this archive: the caller's batch tries again alone. */
	log_warn("mam.insert_contended", "user=%s tries=%d", user, MAM_INSERT_TRIES);
	return -EBUSY;
}

int mam_db_prune(struct storage *st, const char *user, uint32_t keep)
{
	struct db_stmt *s = storage_stmt(st, sql_prune);

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_int64(s, 2, keep);
	return storage_stmt_exec(st, "mam.prune", s);
}

int mam_db_lookup(struct storage *st, const char *user, const char *id, int64_t cutoff,
		  int64_t *ts)
{
	struct db_stmt *s = storage_stmt(st, sql_lookup);
	int rc;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_text(s, 2, id, -1);
	db_bind_int64(s, 3, cutoff);
	rc = db_step(s);
	if (rc == DB_ROW)
		*ts = db_column_int64(s, 0);
	storage_stmt_release(s);
	if (rc == DB_DONE)
		return -ENOENT;
	if (rc != DB_ROW)
		return storage_db_error(st, "mam.lookup", rc);
	return 0;
}

int mam_db_get(struct storage *st, const char *user, const char *id, int64_t cutoff,
	       int (*fn)(void *arg, const struct mam_row *row), void *arg)
{
	struct db_stmt *s = storage_stmt(st, sql_get);
	struct mam_row row;
	int rc, ret;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_text(s, 2, id, -1);
	db_bind_int64(s, 3, cutoff);
	rc = db_step(s);
	if (rc != DB_ROW) {
		storage_stmt_release(s);
		return rc == DB_DONE ? -ENOENT : storage_db_error(st, "mam.get", rc);
	}
	read_row(s, &row);
	ret = fn(arg, &row);
	storage_stmt_release(s);
	return ret < 0 ? ret : 0;
}

int mam_db_page(struct storage *st, const char *user, const struct mam_filter *f,
		bool backwards, uint32_t limit, uint32_t offset,
		int (*fn)(void *arg, const struct mam_row *row), void *arg)
{
	const char *sql = f->peer ? (backwards ? sql_page_peer_desc : sql_page_peer_asc) :
				    (backwards ? sql_page_desc : sql_page_asc);
	struct db_stmt *s = storage_stmt(st, sql);

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_int64(s, 2, f->lo);
	db_bind_int64(s, 3, f->hi);
	db_bind_int64(s, 4, limit);
	db_bind_int64(s, 5, offset);
	if (f->peer) {
		db_bind_text(s, 6, f->peer, -1);
		if (f->resource)
			db_bind_text(s, 7, f->resource, -1);
		else
			db_bind_null(s, 7);
	}
	return each_row(st, "mam.page", s, fn, arg);
}

int mam_db_count(struct storage *st, const char *user, const struct mam_filter *f,
		 uint32_t *out)
{
	const char *sql = !f->peer ? sql_count : f->resource ? sql_count_peer_res : sql_count_peer;
	struct db_stmt *s = storage_stmt(st, sql);
	int rc;

	*out = 0;
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_int64(s, 2, f->lo);
	db_bind_int64(s, 3, f->hi);
	if (f->peer)
		db_bind_text(s, 4, f->peer, -1);
	if (f->peer && f->resource)
		db_bind_text(s, 5, f->resource, -1);
	rc = db_step(s);
	if (rc == DB_ROW) {
		int64_t n = db_column_int64(s, 0);

		*out = n > UINT32_MAX ? UINT32_MAX : (uint32_t)n;
	}
	storage_stmt_release(s);
	if (rc != DB_ROW)
		return storage_db_error(st, "mam.count", rc);
	return 0;
}

int mam_db_bounds(struct storage *st, const char *user, int64_t cutoff,
		  int (*fn)(void *arg, const struct mam_row *row), void *arg)
{
	static const char *const sqls[2] = { sql_first, sql_last };

	for (int i = 0; i < 2; i++) {
		struct db_stmt *s = storage_stmt(st, sqls[i]);
		int ret;

		if (!s)
			return -EIO;
		db_bind_text(s, 1, user, -1);
		db_bind_int64(s, 2, cutoff);
		ret = each_row(st, "mam.bounds", s, fn, arg);
		if (ret < 0)
			return ret;
	}
	return 0;
}

int mam_db_expire(struct storage *st, int64_t cutoff, uint32_t batch, uint32_t *deleted)
{
	struct db_stmt *s = storage_stmt(st, sql_expire);
	int ret;

	*deleted = 0;
	if (!s)
		return -EIO;
	db_bind_int64(s, 1, cutoff);
	db_bind_int64(s, 2, batch);
	ret = storage_stmt_exec(st, "mam.expire", s);
	if (ret == 0)
		*deleted = (uint32_t)db_changes(storage_db(st));
	return ret;
}

int mam_db_prefs_get(struct storage *st, const char *user, enum mam_mode *mode, char **always,
		     char **never)
{
	struct db_stmt *s = storage_stmt(st, sql_prefs_get);
	int rc, ret = 0;

	*mode = MAM_MODE_SERVER;
	*always = *never = NULL;
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	rc = db_step(s);
	if (rc == DB_ROW) {
		*mode = mam_mode_parse(column_text(s, 0));
		*always = strdup(column_text(s, 1));
		*never = strdup(column_text(s, 2));
		if (!*always || !*never)
			ret = -ENOMEM;
	} else if (rc == DB_DONE) {
		*always = strdup("");
		*never = strdup("");
		if (!*always || !*never)
			ret = -ENOMEM;
	} else {
		ret = storage_db_error(st, "mam.prefs_get", rc);
	}
	storage_stmt_release(s);
	if (ret < 0) {
		free(*always);
		free(*never);
		*always = *never = NULL;
	}
	return ret;
}

int mam_db_prefs_put(struct storage *st, const char *user, enum mam_mode mode,
		     const char *always, const char *never)
{
	struct db_stmt *s;

	if (!mam_mode_name(mode))
		return -EINVAL;
	s = storage_stmt(st, sql_prefs_put);
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_text(s, 2, mam_mode_name(mode), -1);
	db_bind_text(s, 3, always, -1);
	db_bind_text(s, 4, never, -1);
	return storage_stmt_exec(st, "mam.prefs_put", s);
}

int mam_db_unstamp_offline(struct storage *st, const char *user, const char *stamp)
{
	struct db_stmt *s = storage_stmt(st, sql_unstamp);

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_text(s, 2, stamp, -1);
	return storage_stmt_exec(st, "mam.unstamp", s);
}
