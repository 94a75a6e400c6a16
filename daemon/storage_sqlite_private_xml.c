/* SPDX-License-Identifier: MIT */
/* The private_xml table (schema migration 2): one row per (account, ns, name). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "private_xml.h"
#include "storage_sqlite.h"

static const char sql_private_get[] =
	"SELECT xml FROM private_xml WHERE username = ?1 AND ns = ?2 AND name = ?3";
/*
 * Replaces an existing row, or adds one while the account exists and is
 * under its item limit (?5): one statement, so nothing can slip between
 * the check and the write.
 */
static const char sql_private_put[] =
	"INSERT OR REPLACE INTO private_xml (username, ns, name, xml)"
	" SELECT ?1, ?2, ?3, ?4"
	" WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?1)"
	" AND (EXISTS (SELECT 1 FROM private_xml WHERE username = ?1 AND ns = ?2 AND name = ?3)"
	"      OR (SELECT count(*) FROM private_xml WHERE username = ?1) < ?5)";
static const char sql_private_delete[] =
	"DELETE FROM private_xml WHERE username = ?1 AND ns = ?2 AND name = ?3";
static const char sql_private_account[] = "SELECT 1 FROM accounts WHERE username = ?1";

int private_xml_store_get(struct storage *st, const char *user, const char *ns,
			  const char *name, char **xml, size_t *len)
{
	sqlite3_stmt *s = storage_sqlite_stmt(st, sql_private_get);
	int rc, ret = -ENOENT;

	*xml = NULL;
	*len = 0;
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, ns, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	if (rc == SQLITE_ROW) {
		const unsigned char *text = sqlite3_column_text(s, 0);
		int n = sqlite3_column_bytes(s, 0);

		*xml = text ? malloc((size_t)n + 1) : NULL;
		if (*xml) {
			memcpy(*xml, text, (size_t)n);
			(*xml)[n] = '\0';
			*len = (size_t)n;
			ret = 0;
		} else {
			ret = -ENOMEM;
		}
	} else if (rc != SQLITE_DONE) {
		ret = storage_sqlite_error(st, "private_get", rc);
	}
	storage_sqlite_release(s);
	return ret;
}

static int private_xml_account_exists(struct storage *st, const char *user)
{
	sqlite3_stmt *s = storage_sqlite_stmt(st, sql_private_account);
	int rc;

	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
	rc = sqlite3_step(s);
	storage_sqlite_release(s);
	if (rc == SQLITE_ROW)
		return 0;
	return rc == SQLITE_DONE ? -ENOENT : storage_sqlite_error(st, "private_account", rc);
}

int private_xml_store_set(struct storage *st, const char *user, const char *ns,
			  const char *name, const char *xml, size_t len)
{
	sqlite3_stmt *s;
	int ret;

	s = storage_sqlite_stmt(st, xml ? sql_private_put : sql_private_delete);
	if (!s)
		return -EIO;
	sqlite3_bind_text(s, 1, user, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 2, ns, -1, SQLITE_STATIC);
	sqlite3_bind_text(s, 3, name, -1, SQLITE_STATIC);
	if (xml) {
		sqlite3_bind_text(s, 4, xml, (int)len, SQLITE_STATIC);
		sqlite3_bind_int(s, 5, PRIVATE_MAX_ITEMS);
	}
	ret = storage_sqlite_exec(st, xml ? "private_put" : "private_delete", s);
	if (ret < 0 || !xml)
		return ret < 0 ? ret : private_xml_account_exists(st, user);
	if (sqlite3_changes(storage_sqlite_db(st)) > 0)
		return 0;
	/* Nothing written: either the account is gone or it is full. */
	ret = private_xml_account_exists(st, user);
	return ret < 0 ? ret : -ENOSPC;
}
