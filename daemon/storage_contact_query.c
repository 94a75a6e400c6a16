/* SPDX-License-Identifier: MIT */
/*
 * Facts about an account for answers given on its behalf: existence (the
 * accounts table), the asker's subscription in its roster (read through
 * the roster module, which owns roster_items) and its last logout.
 */
#include <errno.h>
#include <string.h>

#include "contact_query.h"
#include "roster.h"
#include "storage_db.h"
#include "subscription.h"

static const char sql_contact_account[] = "SELECT 1 FROM accounts WHERE username = ?1";

/* Steps a one-row lookup: 1 row, 0 none, or -errno. */
static int contact_step(struct storage *st, struct db_stmt *s, const char *op)
{
	int rc = db_step(s);

	if (rc == DB_ROW)
		return 1;
	return rc == DB_DONE ? 0 : storage_db_error(st, op, rc);
}

int contact_store_facts(struct storage *st, const char *user, const char *asker_bare,
			bool want_last, struct contact_facts *f)
{
	struct db_stmt *s;
	uint8_t state;
	bool approved, item;
	int ret;

	memset(f, 0, sizeof(*f));
	s = storage_stmt(st, sql_contact_account);
	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	ret = contact_step(st, s, "contact_account");
	storage_stmt_release(s);
	if (ret <= 0)
		return ret;
	f->exists = true;

	/* 'from' or 'both': the asker receives the account's presence. */
	ret = roster_db_state(st, user, asker_bare, &state, &approved, &item);
	if (ret < 0)
		return ret;
	f->subscribed = item && (state & SUB_FROM);

	if (!want_last || !f->subscribed)
		return 0;
	ret = last_activity_store_get(st, user, &f->logout_at, f->status, sizeof(f->status));
	if (ret == 0)
		f->has_last = true;
	return ret == -ENOENT ? 0 : ret;
}
