/* SPDX-License-Identifier: MIT */
/* The private_xml table (schema migration 2): one row per (account, ns, name). */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "private_xml.h"
#include "storage_db.h"

static const char sql_private_get[] =
	"SELECT xml FROM private_xml WHERE username = ?1 AND ns = ?2 AND name = ?3";
/*
 * Replaces an existing row, or adds one while the account exists and is
 * under its item limit (?5): one statement, so nothing can slip between
 * the check and the write.
 */
static const char sql_private_put[] =
	"INSERT INTO private_xml (username, ns, name, xml)"
	" SELECT ?1, ?2, ?3, ?4"
	" WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?1)"
	" AND (EXISTS (SELECT 1 FROM private_xml WHERE username = ?1 AND ns = ?2 AND name = ?3)"
	"      OR (SELECT count(*) FROM private_xml WHERE username = ?1) < ?5)"
	" ON CONFLICT (username, ns, name) DO UPDATE SET xml = excluded.xml";
static const char sql_private_delete[] =
	"DELETE FROM private_xml WHERE username = ?1 AND ns = ?2 AND name = ?3";
static const char sql_private_account[] = "SELECT 1 FROM accounts WHERE username = ?1";

int private_xml_store_get(struct storage *st, const char *user, const char *ns,
			  const char *name, char **xml, size_t *len)
{
	struct db_stmt *s = storage_stmt(st, sql_private_get);
	int rc, ret = -ENOENT;

	*xml = NULL;
	*len = 0;
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_text(s, 2, ns, -1);
	db_bind_text(s, 3, name, -1);
	rc = db_step(s);
	if (rc == DB_ROW) {
		const unsigned char *text = db_column_text(s, 0);
		int n = db_column_bytes(s, 0);

		*xml = text ? malloc((size_t)n + 1) : NULL;
		if (*xml) {
			memcpy(*xml, text, (size_t)n);
			(*xml)[n] = '\0';
			*len = (size_t)n;
			ret = 0;
		} else {
			ret = -ENOMEM;
		}
	} else if (rc != DB_DONE) {
		ret = storage_db_error(st, "private_get", rc);
	}
	storage_stmt_release(s);
	return ret;
}

static int private_xml_account_exists(struct storage *st, const char *user)
{
	struct db_stmt *s = storage_stmt(st, sql_private_account);
	int rc;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	rc = db_step(s);
	storage_stmt_release(s);
	if (rc == DB_ROW)
		return 0;
	return rc == DB_DONE ? -ENOENT : storage_db_error(st, "private_account", rc);
}

int private_xml_store_set(struct storage *st, const char *user, const char *ns,
			  const char *name, const char *xml, size_t len)
{
	struct db_stmt *s;
	int ret;

	s = storage_stmt(st, xml ? sql_private_put : sql_private_delete);
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_text(s, 2, ns, -1);
	db_bind_text(s, 3, name, -1);
	if (xml) {
		db_bind_text(s, 4, xml, (int)len);
		db_bind_int(s, 5, PRIVATE_MAX_ITEMS);
	}
	ret = storage_stmt_exec(st, xml ? "private_put" : "private_delete", s);
	if (ret < 0 || !xml)
		return ret < 0 ? ret : private_xml_account_exists(st, user);
	if (db_changes(storage_db(st)) > 0)
		return 0;
	/* Nothing written: either the account is gone or it is full. */
	ret = private_xml_account_exists(st, user);
	return ret < 0 ? ret : -ENOSPC;
}
