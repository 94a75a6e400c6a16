/* SPDX-License-Identifier: MIT */
/*
 * The blocklist table (schema migration 2): one row per blocked JID of an
 * account (XEP-0191), the JID normalized as jid_parse() writes it.
 */
#include <errno.h>
#include <string.h>

#include "blocking.h"
#include "jid.h"
#include "log.h"
#include "storage_db.h"

static const char sql_blocklist_get[] = "SELECT jid FROM blocklist WHERE username = ?1";
/* Only for an account that exists: a late write after its removal stores nothing. */
static const char sql_blocklist_add[] =
	"INSERT INTO blocklist (username, jid)"
	" SELECT ?1, ?2 WHERE EXISTS (SELECT 1 FROM accounts WHERE username = ?1)"
	" ON CONFLICT (username, jid) DO NOTHING";
static const char sql_blocklist_remove[] = "DELETE FROM blocklist WHERE username = ?1 AND jid = ?2";
static const char sql_blocklist_clear[] = "DELETE FROM blocklist WHERE username = ?1";
/* The four item forms that can match a JID (unused ones bound to NULL, which matches nothing). */
static const char sql_blocklist_match[] =
	"SELECT 1 FROM blocklist WHERE username = ?1 AND jid IN (?2, ?3, ?4, ?5) LIMIT 1";

int blocking_load_sync(struct storage *st, const char *user, struct blocklist **out)
{
	struct db_stmt *s = storage_stmt(st, sql_blocklist_get);
	struct blocklist *bl = NULL;
	int rc, ret = 0;

	*out = NULL;
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	while ((rc = db_step(s)) == DB_ROW) {
		const char *jid = (const char *)db_column_text(s, 0);
		int n = db_column_bytes(s, 0);
		int added;

		if (!bl && !(bl = blocklist_new())) {
			ret = -ENOMEM;
			break;
		}
		added = jid && n > 0 ? blocklist_add(bl, jid, (size_t)n) : -EINVAL;
		if (added == -ENOMEM) {
			ret = added;
			break;
		}
		/* Written by this module only; a bad row is skipped, not fatal. */
		if (added < 0)
			log_warn("blocking.bad_row", "user=%s", user);
	}
	if (ret == 0 && rc != DB_DONE)
		ret = storage_db_error(st, "blocklist_get", rc);
	storage_stmt_release(s);
	if (ret < 0) {
		blocklist_free(bl);
		return ret;
	}
	*out = bl;
	return 0;
}

static int blocking_store_exec(struct storage *st, const char *op, const char *sql,
			       const char *user, const char *jid)
{
	struct db_stmt *s = storage_stmt(st, sql);

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	if (jid)
		db_bind_text(s, 2, jid, -1);
	return storage_stmt_exec(st, op, s);
}

int blocking_store_add(struct storage *st, const char *user, const char *jid)
{
	return blocking_store_exec(st, "blocklist_add", sql_blocklist_add, user, jid);
}

int blocking_store_remove(struct storage *st, const char *user, const char *jid)
{
	return blocking_store_exec(st, "blocklist_remove", sql_blocklist_remove, user, jid);
}

int blocking_store_clear(struct storage *st, const char *user)
{
	return blocking_store_exec(st, "blocklist_clear", sql_blocklist_clear, user, NULL);
}

int blocking_store_blocks(struct storage *st, const char *user, const struct jid *from)
{
	struct db_stmt *s = storage_stmt(st, sql_blocklist_match);
	const char *dom = from->buf + from->domain_off;
	int rc;

	if (!s)
		return -EIO;
	if (!from->len)
		return 0;
	db_bind_text(s, 1, user, -1);
	/* Same candidates as blocklist_matches(): full, bare, domain/resource, domain. */
	if (jid_has_local(from)) {
		if (jid_has_resource(from))
			db_bind_text(s, 2, from->buf, (int)from->len);
		db_bind_text(s, 3, from->buf, (int)(from->domain_off + from->domain_len));
	} else if (jid_has_resource(from)) {
		db_bind_text(s, 4, dom, (int)(from->len - from->domain_off));
	}
	db_bind_text(s, 5, dom, (int)from->domain_len);
	rc = db_step(s);
	storage_stmt_release(s);
	if (rc == DB_ROW)
		return 1;
	return rc == DB_DONE ? 0 : storage_db_error(st, "blocklist_match", rc);
}
