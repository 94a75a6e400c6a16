/* SPDX-License-Identifier: MIT */
/*
 * FAST tokens (XEP-0484) in the store: the fast_tokens table of the
 * "devices" migration, two slots per account and client. Runs on the
 * storage thread inside the login's transaction.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include <openssl/crypto.h>

#include "fast.h"
#include "storage_db.h"

#define SQL_GET \
	"SELECT slot, mechanism, key, issued_at, expires_at, counter FROM fast_tokens" \
	" WHERE username = ?1 AND client_id = ?2 ORDER BY slot = 'new' DESC"
static const char sql_get[] = SQL_GET;
/*
 * On PostgreSQL the rows stay locked until the login's commit: a login
 * with the same token on another node waits, then reads the counter and
 * slots this one wrote (a replayed count is refused there too).
 */
static const char sql_get_locked[] = SQL_GET " FOR UPDATE";
static const char sql_put[] =
	"INSERT INTO fast_tokens (username, client_id, slot, mechanism, key, issued_at,"
	" expires_at, counter) VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8)"
	" ON CONFLICT (username, client_id, slot) DO UPDATE SET mechanism = ?4, key = ?5,"
	" issued_at = ?6, expires_at = ?7, counter = ?8";
static const char sql_delete_slot[] =
	"DELETE FROM fast_tokens WHERE username = ?1 AND client_id = ?2 AND slot = ?3";
static const char sql_delete_all[] =
	"DELETE FROM fast_tokens WHERE username = ?1 AND client_id = ?2";
static const char sql_delete_user[] =
	"DELETE FROM fast_tokens WHERE username = ?1";
static const char sql_counter[] =
	"UPDATE fast_tokens SET counter = ?4 WHERE username = ?1 AND client_id = ?2 AND slot = ?3";

static const char *fast_slot_name(bool is_new)
{
	return is_new ? "new" : "current";
}

/* Every statement here has the account and client as ?1 and ?2. */
static void fast_bind_owner(struct db_stmt *s, const char *user, const char *client)
{
	db_bind_text(s, 1, user, -1);
	db_bind_text(s, 2, client, -1);
}

int fast_db_get(struct storage *st, const char *user, const char *client,
		struct fast_token_row rows[2], size_t *n)
{
	struct db_stmt *s = storage_stmt(st, storage_on_pg(st) ? sql_get_locked : sql_get);
	int rc = DB_DONE, ret = 0;

	*n = 0;
	if (!s)
		return -EIO;
	fast_bind_owner(s, user, client);
	while (*n < 2 && (rc = db_step(s)) == DB_ROW) {
		struct fast_token_row *r = &rows[*n];
		const char *slot = (const char *)db_column_text(s, 0);
		const char *mech = (const char *)db_column_text(s, 1);
		const void *key = db_column_blob(s, 2);

		/* The table's CHECK guarantees the key length; skip anything odd anyway. */
		if (!slot || !mech || !key || db_column_bytes(s, 2) != FAST_KEY_LEN)
			continue;
		r->is_new = strcmp(slot, "new") == 0;
		snprintf(r->mech, sizeof(r->mech), "%s", mech);
		memcpy(r->key, key, FAST_KEY_LEN);
		r->issued_at = db_column_int64(s, 3);
		r->expires_at = db_column_int64(s, 4);
		r->counter = db_column_int64(s, 5);
		(*n)++;
	}
	if (*n < 2 && rc != DB_DONE)
		ret = storage_db_error(st, "fast.get", rc);
	storage_stmt_release(s);
	return ret;
}

int fast_db_put(struct storage *st, const char *user, const char *client,
		const struct fast_token_row *row)
{
	struct db_stmt *s = storage_stmt(st, sql_put);

	if (!s)
		return -EIO;
	fast_bind_owner(s, user, client);
	db_bind_text(s, 3, fast_slot_name(row->is_new), -1);
	db_bind_text(s, 4, row->mech, -1);
	db_bind_blob(s, 5, row->key, FAST_KEY_LEN);
	db_bind_int64(s, 6, row->issued_at);
	db_bind_int64(s, 7, row->expires_at);
	db_bind_int64(s, 8, row->counter);
	return storage_stmt_exec(st, "fast.put", s);
}

int fast_db_delete(struct storage *st, const char *user, const char *client, int is_new)
{
	struct db_stmt *s;

	if (!client) {
		/* Every client's tokens: the account's credentials changed. */
		s = storage_stmt(st, sql_delete_user);
		if (!s)
			return -EIO;
		db_bind_text(s, 1, user, -1);
		return storage_stmt_exec(st, "fast.delete_user", s);
	}
	s = storage_stmt(st, is_new < 0 ? sql_delete_all : sql_delete_slot);
	if (!s)
		return -EIO;
	fast_bind_owner(s, user, client);
	if (is_new >= 0)
		db_bind_text(s, 3, fast_slot_name(is_new > 0), -1);
	return storage_stmt_exec(st, "fast.delete", s);
}

int fast_db_set_counter(struct storage *st, const char *user, const char *client, bool is_new,
			int64_t counter)
{
	struct db_stmt *s = storage_stmt(st, sql_counter);

	if (!s)
		return -EIO;
	fast_bind_owner(s, user, client);
	db_bind_text(s, 3, fast_slot_name(is_new), -1);
	db_bind_int64(s, 4, counter);
	return storage_stmt_exec(st, "fast.counter", s);
}
