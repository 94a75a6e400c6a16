/* SPDX-License-Identifier: MIT */
/* The store's statements of the XEP-0133 commands (admin.c). */
#include <errno.h>

#include "admin.h"
#include "storage_db.h"

static const char sql_count_accounts[] = "SELECT count(*) FROM accounts";

int admin_store_count_accounts(struct storage *st, uint64_t *out)
{
	struct db_stmt *s = storage_stmt(st, sql_count_accounts);
	int rc, ret = 0;

	if (!s)
		return -EIO;
	rc = db_step(s);
	if (rc == DB_ROW)
		*out = (uint64_t)db_column_int64(s, 0);
	else
		ret = storage_db_error(st, "admin_count_accounts", rc);
	storage_stmt_release(s);
	return ret;
}
