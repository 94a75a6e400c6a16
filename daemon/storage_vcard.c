/* SPDX-License-Identifier: MIT */
/* The vcards table (schema migration 2): one serialized vCard per account. */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "storage_db.h"
#include "vcard.h"

static const char sql_vcard_get[] = "SELECT vcard FROM vcards WHERE username = ?1";
/* Only for an account that exists: a late write after its removal stores nothing. */
static const char sql_vcard_put[] =
	"INSERT INTO vcards (username, vcard)"
	" SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?1)"
	" ON CONFLICT (username) DO UPDATE SET vcard = excluded.vcard";
static const char sql_vcard_delete[] = "DELETE FROM vcards WHERE username = ?1";
static const char sql_account_exists[] = "SELECT 1 FROM accounts WHERE username = ?1";

int vcard_store_get(struct storage *st, const char *user, char **xml, size_t *len)
{
	struct db_stmt *s = storage_stmt(st, sql_vcard_get);
	int rc, ret = -ENOENT;

	*xml = NULL;
	*len = 0;
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
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
		ret = storage_db_error(st, "vcard_get", rc);
	}
	storage_stmt_release(s);
	return ret;
}

/* 0 when the account exists, -ENOENT when not, or a storage error. */
static int vcard_account_exists(struct storage *st, const char *user)
{
	struct db_stmt *s = storage_stmt(st, sql_account_exists);
	int rc;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	rc = db_step(s);
	storage_stmt_release(s);
	if (rc == DB_ROW)
		return 0;
	return rc == DB_DONE ? -ENOENT : storage_db_error(st, "vcard_account", rc);
}

int vcard_store_set(struct storage *st, const char *user, const char *xml, size_t len)
{
	struct db_stmt *s;
	int ret;

	if (!xml) {
		s = storage_stmt(st, sql_vcard_delete);
		if (!s)
			return -EIO;
		db_bind_text(s, 1, user, -1);
		ret = storage_stmt_exec(st, "vcard_delete", s);
		return ret < 0 ? ret : vcard_account_exists(st, user);
	}
	s = storage_stmt(st, sql_vcard_put);
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_text(s, 2, xml, (int)len);
	ret = storage_stmt_exec(st, "vcard_put", s);
	if (ret < 0)
		return ret;
	return db_changes(storage_db(st)) > 0 ? 0 : -ENOENT;
}
