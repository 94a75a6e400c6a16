/* SPDX-License-Identifier: MIT */
/* SQLite statements of the XEP-0133 commands (admin.c). */
#include <errno.h>

#include "admin.h"
#include "storage_sqlite.h"

static const char sql_count_accounts[] = "SELECT count(*) FROM accounts";

int admin_store_count_accounts(struct storage *st, uint64_t *out)
{
	sqlite3_stmt *s = storage_sqlite_stmt(st, sql_count_accounts);
	int rc, ret = 0;

	if (!s)
		return -EIO;
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW)
		*out = (uint64_t)sqlite3_column_int64(s, 0);
	else
		ret = storage_sqlite_error(st, "admin_count_accounts", rc);
	storage_sqlite_release(s);
	return ret;
}
