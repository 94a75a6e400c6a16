/* SPDX-License-Identifier: MIT */
/*
 * The SQL behind the control socket's storage questions (control.c):
 * offline queue lengths per account. Runs on the storage thread.
 */
#include <errno.h>

#include "control_db.h"
#include "storage_db.h"

/* The index (username, id) makes this a walk of the index, no table scan. */
static const char sql_offline_counts[] =
	"SELECT username, COUNT(*) FROM offline_messages GROUP BY username ORDER BY username";

int control_db_offline_counts(struct storage *st,
			      int (*fn)(void *arg, const char *user, uint64_t count), void *arg)
{
	struct db_stmt *s = storage_stmt(st, sql_offline_counts);
	int rc, ret = 0;

	if (!s)
		return -EIO;
	while ((rc = db_step(s)) == DB_ROW) {
		const char *user = (const char *)db_column_text(s, 0);

		if (user && fn(arg, user, (uint64_t)db_column_int64(s, 1)) != 0)
			break;
	}
	if (rc != DB_ROW && rc != DB_DONE)
		ret = storage_db_error(st, "control.offline_counts", rc);
	storage_stmt_release(s);
	return ret;
}
