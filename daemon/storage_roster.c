/* SPDX-License-Identifier: MIT */
/*
 * Rosters, roster versions and pending subscription requests in the store
 * (tables of schema migration 2). Runs on the storage thread, inside the
 * batch transaction of the request that calls it.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "log.h"
#include "roster.h"
#include "storage.h"
#include "storage_db.h"
#include "subscription.h"

static const char sql_items[] =
	"SELECT jid, name, subscription, ask, approved, groups, version, deleted"
	" FROM roster_items WHERE username = ?1";
static const char sql_version[] =
	"SELECT version, horizon FROM roster_versions WHERE username = ?1";
static const char sql_requests[] =
	"SELECT jid, stanza FROM subscription_requests WHERE username = ?1 ORDER BY created_at";
static const char sql_put[] =
	"INSERT INTO roster_items (username, jid, name, subscription, ask, approved, groups,"
	" version, deleted) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9)"
	" ON CONFLICT (username, jid) DO UPDATE SET name = ?3, subscription = ?4, ask = ?5,"
	" approved = ?6, groups = ?7, version = ?8, deleted = ?9";
static const char sql_version_raise[] =
	"INSERT INTO roster_versions (username, version) VALUES (?1, ?2)"
	" ON CONFLICT (username) DO UPDATE SET"
	" version = CASE WHEN roster_versions.version > ?2 THEN roster_versions.version ELSE ?2 END";
/*
 * The next version for a change made while the account is off-line,
 * taken in one statement: two nodes sharing the database never give
 * two changes one version (the row lock makes the second wait).
 */
static const char sql_version_next[] =
	"INSERT INTO roster_versions (username, version) VALUES (?1, 1)"
	" ON CONFLICT (username) DO UPDATE SET version = roster_versions.version + 1"
	" RETURNING version";
static const char sql_state[] =
	"SELECT subscription, ask, approved, deleted FROM roster_items"
	" WHERE username = ?1 AND jid = ?2";
static const char sql_request_exists[] =
	"SELECT 1 FROM subscription_requests WHERE username = ?1 AND jid = ?2";
/*
 * A state change for an account without sessions: keeps name and groups
 * of a live item, starts a revived tombstone blank (as roster_upsert does
 * in memory).
 */
static const char sql_set_state[] =
	"INSERT INTO roster_items (username, jid, subscription, ask, approved, version)"
	" VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
	" ON CONFLICT (username, jid) DO UPDATE SET subscription = ?3, ask = ?4, approved = ?5,"
	" version = ?6, name = CASE WHEN roster_items.deleted <> 0 THEN NULL ELSE roster_items.name END,"
	" groups = CASE WHEN roster_items.deleted <> 0 THEN '' ELSE roster_items.groups END,"
	" deleted = 0";
static const char sql_request_put[] =
	"INSERT INTO subscription_requests (username, jid, stanza, created_at)"
	" VALUES (?1, ?2, ?3, ?4) ON CONFLICT (username, jid) DO UPDATE SET stanza = ?3";
static const char sql_request_delete[] =
	"DELETE FROM subscription_requests WHERE username = ?1 AND jid = ?2";
static const char sql_account[] = "SELECT 1 FROM accounts WHERE username = ?1";
static const char sql_count_items[] =
	"SELECT count(*) FROM roster_items WHERE username = ?1 AND deleted = 0";
static const char sql_count_requests[] =
	"SELECT count(*) FROM subscription_requests WHERE username = ?1";
/* The version of the newest tombstone to forget (the oldest `keep` stay). */
static const char sql_prune_horizon[] =
	"SELECT version FROM roster_items WHERE username = ?1 AND deleted = 1"
	" ORDER BY version DESC LIMIT 1 OFFSET ?2";
static const char sql_prune[] =
	"DELETE FROM roster_items WHERE username = ?1 AND deleted = 1 AND version <= ?2";
static const char sql_set_horizon[] =
	"UPDATE roster_versions SET horizon = ?2 WHERE username = ?1";

/* Every statement here has the username as ?1. */
static int bind_user(struct db_stmt *s, const char *user)
{
	return db_bind_text(s, 1, user, -1);
}

/* Reads a step's result code: row, done, or an error mapped to -errno. */
static int step(struct storage *st, const char *op, struct db_stmt *s)
{
	int rc = db_step(s);

	if (rc == DB_ROW || rc == DB_DONE)
		return rc;
	return storage_db_error(st, op, rc);
}

/*
 * One row of sql_items into the roster. An unreadable subscription value
 * (a hand-edited store) skips the row rather than failing the login.
 */
static int row_to_item(struct roster *r, struct db_stmt *s)
{
	const char *jid = (const char *)db_column_text(s, 0);
	const char *name = (const char *)db_column_text(s, 1);
	const char *subv = (const char *)db_column_text(s, 2);
	const char *groups = (const char *)db_column_text(s, 5);
	struct roster_item *it;
	uint8_t bits = 0;

	if (!jid || !subv || sub_parse_attr(subv, &bits) < 0) {
		log_warn("roster.bad_row", "msg=\"skipped an unreadable roster row\"");
		return 0;
	}
	it = roster_upsert(r, jid, strlen(jid));
	if (!it || roster_item_set_name(it, name) < 0 ||
	    roster_item_set_groups(it, groups) < 0)
		return -ENOMEM;
	it->sub = bits | (db_column_int(s, 3) ? SUB_PENDING_OUT : 0);
	it->sub = sub_normalize(it->sub);
	it->approved = db_column_int(s, 4) != 0;
	it->version = (uint64_t)db_column_int64(s, 6);
	if (db_column_int(s, 7)) {
		roster_remove(r, it);
		it->version = (uint64_t)db_column_int64(s, 6);
	}
	return 0;
}

/*
 * Forgets the oldest tombstones beyond ROSTER_TOMBSTONES_MAX / 2 once
 * there are more than ROSTER_TOMBSTONES_MAX, raising the horizon: a
 * client that knows a version before it gets the whole roster.
 */
static int prune_tombstones(struct storage *st, const char *user, struct roster *r)
{
	struct db_stmt *s = storage_stmt(st, sql_prune_horizon);
	int64_t horizon = -1;
	int rc;

	if (r->tombstones <= ROSTER_TOMBSTONES_MAX)
		return 0;
	if (!s)
		return -EIO;
	bind_user(s, user);
	db_bind_int64(s, 2, ROSTER_TOMBSTONES_MAX / 2);
	rc = step(st, "roster.prune", s);
	if (rc == DB_ROW)
		horizon = db_column_int64(s, 0);
	storage_stmt_release(s);
	if (rc < 0)
		return rc;
	if (horizon < 0)
		return 0;
	s = storage_stmt(st, sql_prune);
	if (!s)
		return -EIO;
	bind_user(s, user);
	db_bind_int64(s, 2, horizon);
	rc = storage_stmt_exec(st, "roster.prune", s);
	if (rc < 0)
		return rc;
	s = storage_stmt(st, sql_set_horizon);
	if (!s)
		return -EIO;
	bind_user(s, user);
	db_bind_int64(s, 2, horizon);
	rc = storage_stmt_exec(st, "roster.horizon", s);
	if (rc < 0)
		return rc;
	/* The same in memory. */
	roster_forget_tombstones(r, (uint64_t)horizon);
	r->horizon = (uint64_t)horizon;
	log_info("roster.pruned", "user=%s horizon=%lld", user, (long long)horizon);
	return 0;
}

int roster_load_sync(struct storage *st, const char *user, struct roster **out)
{
	struct roster *r = roster_new();
	struct db_stmt *s;
	int rc, err = 0;

	*out = NULL;
	if (!r)
		return -ENOMEM;
	s = storage_stmt(st, sql_version);
	if (!s)
		goto eio;
	bind_user(s, user);
	rc = step(st, "roster.load", s);
	if (rc == DB_ROW) {
		r->version = (uint64_t)db_column_int64(s, 0);
		r->horizon = (uint64_t)db_column_int64(s, 1);
	}
	storage_stmt_release(s);
	if (rc < 0) {
		err = rc;
		goto fail;
	}

	s = storage_stmt(st, sql_items);
	if (!s)
		goto eio;
	bind_user(s, user);
	while ((rc = step(st, "roster.load", s)) == DB_ROW) {
		err = row_to_item(r, s);
		if (err < 0)
			break;
	}
	storage_stmt_release(s);
	if (rc < 0)
		err = rc;
	if (err < 0)
		goto fail;

	s = storage_stmt(st, sql_requests);
	if (!s)
		goto eio;
	bind_user(s, user);
	while ((rc = step(st, "roster.load", s)) == DB_ROW) {
		const char *jid = (const char *)db_column_text(s, 0);
		const char *stanza = (const char *)db_column_text(s, 1);

		if (!jid || !stanza)
			continue;
		/* No limit here: what was accepted once is kept. */
		err = roster_request_put(r, jid, strlen(jid), stanza,
					 (size_t)db_column_bytes(s, 1), SIZE_MAX);
		if (err < 0)
			break;
	}
	storage_stmt_release(s);
	if (rc < 0)
		err = rc;
	if (err < 0)
		goto fail;
	err = prune_tombstones(st, user, r);
	if (err < 0)
		goto fail;
	*out = r;
	return 0;
eio:
	err = -EIO;
fail:
	roster_free(r);
	return err;
}

/* The roster version only moves forward, whoever writes first. */
static int raise_version(struct storage *st, const char *user, uint64_t version)
{
	struct db_stmt *s = storage_stmt(st, sql_version_raise);

	if (!s)
		return -EIO;
	bind_user(s, user);
	db_bind_int64(s, 2, (int64_t)version);
	return storage_stmt_exec(st, "roster.version", s);
}

int roster_db_put(struct storage *st, const char *user, const struct roster_row *row)
{
	struct db_stmt *s = storage_stmt(st, sql_put);
	int rc;

	if (!s)
		return -EIO;
	bind_user(s, user);
	db_bind_text(s, 2, row->jid, -1);
	if (row->name)
		db_bind_text(s, 3, row->name, -1);
	else
		db_bind_null(s, 3);
	db_bind_text(s, 4, sub_attr_value(row->sub), -1);
	db_bind_int(s, 5, (row->sub & SUB_PENDING_OUT) ? 1 : 0);
	db_bind_int(s, 6, row->approved ? 1 : 0);
	db_bind_text(s, 7, row->groups ? row->groups : "", -1);
	db_bind_int64(s, 8, (int64_t)row->version);
	db_bind_int(s, 9, row->deleted ? 1 : 0);
	rc = storage_stmt_exec(st, "roster.put", s);
	if (rc < 0)
		return rc;
	return raise_version(st, user, row->version);
}

int roster_db_state(struct storage *st, const char *user, const char *jid, uint8_t *state,
		    bool *approved, bool *exists)
{
	struct db_stmt *s = storage_stmt(st, sql_state);
	int rc;

	*state = 0;
	*approved = false;
	*exists = false;
	if (!s)
		return -EIO;
	bind_user(s, user);
	db_bind_text(s, 2, jid, -1);
	rc = step(st, "roster.state", s);
	if (rc == DB_ROW && !db_column_int(s, 3)) {
		const char *v = (const char *)db_column_text(s, 0);
		uint8_t bits = 0;

		if (v && sub_parse_attr(v, &bits) == 0)
			*state = bits;
		if (db_column_int(s, 1))
			*state |= SUB_PENDING_OUT;
		*approved = db_column_int(s, 2) != 0;
		*exists = true;
	}
	storage_stmt_release(s);
	if (rc < 0)
		return rc;

	s = storage_stmt(st, sql_request_exists);
	if (!s)
		return -EIO;
	bind_user(s, user);
	db_bind_text(s, 2, jid, -1);
	rc = step(st, "roster.state", s);
	if (rc == DB_ROW)
		*state |= SUB_PENDING_IN;
	storage_stmt_release(s);
	if (rc < 0)
		return rc;
	*state = sub_normalize(*state);
	return 0;
}

int roster_db_set_state(struct storage *st, const char *user, const char *jid, uint8_t sub,
			bool approved)
{
	struct db_stmt *s = storage_stmt(st, sql_version_next);
	uint64_t version = 0;
	int rc;

	/* A change made while the account is off-line: the next version. */
	if (!s)
		return -EIO;
	bind_user(s, user);
	rc = step(st, "roster.set_state", s);
	if (rc == DB_ROW)
		version = (uint64_t)db_column_int64(s, 0);
	storage_stmt_release(s);
	if (rc < 0)
		return rc;
	if (rc != DB_ROW)
		return -EIO;

	s = storage_stmt(st, sql_set_state);
	if (!s)
		return -EIO;
	bind_user(s, user);
	db_bind_text(s, 2, jid, -1);
	db_bind_text(s, 3, sub_attr_value(sub), -1);
	db_bind_int(s, 4, (sub & SUB_PENDING_OUT) ? 1 : 0);
	db_bind_int(s, 5, approved ? 1 : 0);
	db_bind_int64(s, 6, (int64_t)version);
	return storage_stmt_exec(st, "roster.set_state", s);
}

int roster_db_request_put(struct storage *st, const char *user, const char *jid,
			  const char *stanza, size_t len)
{
	struct db_stmt *s = storage_stmt(st, sql_request_put);

	if (!s)
		return -EIO;
	bind_user(s, user);
	db_bind_text(s, 2, jid, -1);
	db_bind_text(s, 3, stanza, (int)len);
	db_bind_int64(s, 4, (int64_t)time(NULL));
	return storage_stmt_exec(st, "roster.request_put", s);
}

int roster_db_request_delete(struct storage *st, const char *user, const char *jid)
{
	struct db_stmt *s = storage_stmt(st, sql_request_delete);

	if (!s)
		return -EIO;
	bind_user(s, user);
	db_bind_text(s, 2, jid, -1);
	return storage_stmt_exec(st, "roster.request_delete", s);
}

static int count(struct storage *st, const char *sql, const char *user, size_t *out)
{
	struct db_stmt *s = storage_stmt(st, sql);
	int rc;

	*out = 0;
	if (!s)
		return -EIO;
	bind_user(s, user);
	rc = step(st, "roster.count", s);
	if (rc == DB_ROW)
		*out = (size_t)db_column_int64(s, 0);
	storage_stmt_release(s);
	return rc < 0 ? rc : 0;
}

int roster_db_counts(struct storage *st, const char *user, size_t *items, size_t *requests)
{
	int rc = count(st, sql_count_items, user, items);

	return rc < 0 ? rc : count(st, sql_count_requests, user, requests);
}

int roster_db_account_exists(struct storage *st, const char *user)
{
	struct db_stmt *s = storage_stmt(st, sql_account);
	int rc;

	if (!s)
		return -EIO;
	bind_user(s, user);
	rc = step(st, "roster.account", s);
	storage_stmt_release(s);
	if (rc < 0)
		return rc;
	return rc == DB_ROW ? 0 : -ENOENT;
}
