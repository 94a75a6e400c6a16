/* SPDX-License-Identifier: MIT */
/* The last_activity table (schema migration 2): the last logout of each account. */
#include <errno.h>
#include <string.h>

#include "last_activity.h"
#include "storage_sqlite.h"

/* Only for an account that exists: a session of a removed account may end after it. */
static const char sql_last_put[] =
	"INSERT OR REPLACE INTO last_activity (username, logout_at, status)"
	" SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?1)";
static const char sql_last_get[] =
	"SELECT logout_at, status FROM last_activity WHERE username = ?1";

int last_activity_store_set(struct storage *st, const char *user, int64_t logout_at,
			    const char *status)
{
	sqlite3_stmt *s = storage_sqlite_stmt(st, sql_last_put);
	int ret;

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_int64(s, 2, logout_at);
	if (status && status[0])
		sqlite3_bind_text(s, 3, status, -1, SQLITE_STATIC);
	else
		sqlite3_bind_null(s, 3);
	ret = storage_sqlite_exec(st, "last_activity_put", s);
	if (ret < 0)
		return ret;
	return sqlite3_changes(storage_sqlite_db(st)) > 0 ? 0 : -ENOENT;
}

int last_activity_store_get(struct storage *st, const char *user, int64_t *logout_at,
			    char *status, size_t status_size)
{
	sqlite3_stmt *s = storage_sqlite_stmt(st, sql_last_get);
	int rc, ret = -ENOENT;

	if (status_size)
		status[0] = '\0';
	*logout_at = 0;
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const char *text = (const char *)sqlite3_column_text(s, 1);

		*logout_at = sqlite3_column_int64(s, 0);
		if (text && status_size)
			last_activity_truncate(status, status_size, text, status_size - 1);
		ret = 0;
	} else if (rc != SQLITE_DONE) {
		ret = storage_sqlite_error(st, "last_activity_get", rc);
	}
	storage_sqlite_release(s);
	return ret;
}
