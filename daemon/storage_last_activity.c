/* SPDX-License-Identifier: MIT */
/* The last_activity table (schema migration 2): the last logout of each account. */
#include <errno.h>
#include <string.h>

#include "last_activity.h"
#include "storage_db.h"

/* Only for an account that exists: a session of a removed account may end after it. */
static const char sql_last_put[] =
	"INSERT INTO last_activity (username, logout_at, status)"
	" SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?1)"
	" ON CONFLICT (username) DO UPDATE SET logout_at = excluded.logout_at,"
	" status = excluded.status";
static const char sql_last_get[] =
	"SELECT logout_at, status FROM last_activity WHERE username = ?1";

int last_activity_store_set(struct storage *st, const char *user, int64_t logout_at,
			    const char *status)
{
	struct db_stmt *s = storage_stmt(st, sql_last_put);
	int ret;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_int64(s, 2, logout_at);
	if (status && status[0])
		db_bind_text(s, 3, status, -1);
	else
		db_bind_null(s, 3);
	ret = storage_stmt_exec(st, "last_activity_put", s);
	if (ret < 0)
		return ret;
	return db_changes(storage_db(st)) > 0 ? 0 : -ENOENT;
}

int last_activity_store_get(struct storage *st, const char *user, int64_t *logout_at,
			    char *status, size_t status_size)
{
	struct db_stmt *s = storage_stmt(st, sql_last_get);
	int rc, ret = -ENOENT;

	if (status_size)
		status[0] = '\0';
	*logout_at = 0;
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	rc = db_step(s);
	if (rc == DB_ROW) {
		const char *text = (const char *)db_column_text(s, 1);

		*logout_at = db_column_int64(s, 0);
		if (text && status_size)
			last_activity_truncate(status, status_size, text, status_size - 1);
		ret = 0;
	} else if (rc != DB_DONE) {
		ret = storage_db_error(st, "last_activity_get", rc);
	}
	storage_stmt_release(s);
	return ret;
}
