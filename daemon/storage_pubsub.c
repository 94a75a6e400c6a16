/* SPDX-License-Identifier: MIT */
/*
 * The pubsub tables (migration "pubsub" in storage.c): nodes,
 * affiliations, subscriptions, items. See pubsub_store.h.
 *
 * Writes for a node that is gone (deleted by an earlier request, or its
 * PEP account removed) store nothing and report -ENOENT, so a late
 * request cannot leave orphan rows behind.
 */
#include <errno.h>
#include <stdlib.h>
#include <string.h>

#include "pubsub_store.h"
#include "storage_db.h"

static const char sql_node_put[] =
	"INSERT INTO pubsub_nodes (id, host, username, node, config, creator, created_at)"
	" SELECT ?1, ?2, ?3, ?4, ?5, ?6, ?7"
	" WHERE ?3 IS NULL OR EXISTS (SELECT 1 FROM accounts WHERE username = ?3)";
static const char sql_node_config[] = "UPDATE pubsub_nodes SET config = ?2 WHERE id = ?1";
static const char sql_node_del[] = "DELETE FROM pubsub_nodes WHERE id = ?1";
static const char sql_aff_put[] =
	"INSERT INTO pubsub_affiliations (node_id, jid, affiliation)"
	" SELECT ?1, ?2, ?3 WHERE EXISTS (SELECT 1 FROM pubsub_nodes WHERE id = ?1)"
	" ON CONFLICT (node_id, jid) DO UPDATE SET affiliation = excluded.affiliation";
static const char sql_aff_del[] = "DELETE FROM pubsub_affiliations WHERE node_id = ?1 AND jid = ?2";
static const char sql_sub_put[] =
	"INSERT INTO pubsub_subscriptions (node_id, jid, subid, state, options)"
	" SELECT ?1, ?2, ?3, ?4, ?5 WHERE EXISTS (SELECT 1 FROM pubsub_nodes WHERE id = ?1)"
	" ON CONFLICT (node_id, jid) DO UPDATE SET subid = excluded.subid, state = excluded.state,"
	" options = excluded.options";
static const char sql_sub_del[] = "DELETE FROM pubsub_subscriptions WHERE node_id = ?1 AND jid = ?2";
/*
 * An item's sequence number comes from its node's row: the row lock makes
 * writers of one node (on any node of a cluster) take turns, so numbers
 * are never shared and follow the commit order.
 */
static const char sql_item_seq[] =
	"UPDATE pubsub_nodes SET last_seq = last_seq + 1 WHERE id = ?1 RETURNING last_seq";
static const char sql_item_put[] =
	"INSERT INTO pubsub_items (node_id, item_id, seq, publisher, payload, created_at)"
	" VALUES (?1, ?2, ?3, ?4, ?5, ?6)"
	" ON CONFLICT (node_id, item_id) DO UPDATE SET seq = excluded.seq,"
	" publisher = excluded.publisher, payload = excluded.payload,"
	" created_at = excluded.created_at";
/* Everything at or below the (max+1)-th newest: nothing when there are fewer. */
static const char sql_item_trim[] =
	"DELETE FROM pubsub_items WHERE node_id = ?1 AND seq <= (SELECT seq FROM pubsub_items"
	" WHERE node_id = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)";
static const char sql_item_del[] = "DELETE FROM pubsub_items WHERE node_id = ?1 AND item_id = ?2";
/* Publish-only entities remove only what they published (XEP-0060 4.1). */
static const char sql_item_del_own[] =
	"DELETE FROM pubsub_items WHERE node_id = ?1 AND item_id = ?2 AND publisher = ?3";
static const char sql_items_purge[] = "DELETE FROM pubsub_items WHERE node_id = ?1";
static const char sql_items_newest[] =
	"SELECT item_id, publisher, payload, created_at FROM pubsub_items WHERE node_id = ?1"
	" ORDER BY seq DESC LIMIT ?2";
static const char sql_item_get[] =
	"SELECT item_id, publisher, payload, created_at, seq FROM pubsub_items"
	" WHERE node_id = ?1 AND item_id = ?2";
static const char sql_roster_facts[] =
	"SELECT subscription, groups FROM roster_items"
	" WHERE username = ?1 AND jid = ?2 AND deleted = 0";
static const char sql_load_nodes[] =
	"SELECT id, host, username, node, config, creator, created_at FROM pubsub_nodes ORDER BY id";
static const char sql_load_affils[] =
	"SELECT node_id, jid, affiliation FROM pubsub_affiliations ORDER BY node_id, jid";
static const char sql_load_subs[] =
	"SELECT node_id, jid, subid, state, options FROM pubsub_subscriptions";
/* A block of node ids of this process's own (see the id_blocks migration). */
static const char sql_node_block[] =
	"UPDATE id_blocks SET next_block = next_block + 1 WHERE name = 'pubsub_nodes'"
	" RETURNING next_block - 1";

/* Binds a string that may be NULL (SQL NULL). */
static void bind_opt(struct db_stmt *s, int i, const char *v)
{
	if (v)
		db_bind_text(s, i, v, -1);
	else
		db_bind_null(s, i);
}

/* Runs a write and maps "no row changed" to -ENOENT. */
static int exec_changed(struct storage *st, const char *op, struct db_stmt *s)
{
	int ret = storage_stmt_exec(st, op, s);

	if (ret < 0)
		return ret;
	return db_changes(storage_db(st)) > 0 ? 0 : -ENOENT;
}

/* The cached statement for sql with ?1 bound to a node id, or NULL (logged). */
static struct db_stmt *stmt_node(struct storage *st, const char *sql, uint64_t node_id)
{
	struct db_stmt *s = storage_stmt(st, sql);

	if (s)
		db_bind_int64(s, 1, (int64_t)node_id);
	return s;
}

/*
 * Stores (or replaces) an item, then drops the oldest beyond max_items:
 * the XEP's default publish_node_full behaviour, retract-oldest.
 */
static int store_item_put(struct storage *st, const struct ps_mut *m)
{
	struct db_stmt *s = stmt_node(st, sql_item_seq, m->node_id);
	int64_t seq;
	int rc, ret;

	if (!s)
		return -EIO;
	rc = db_step(s);
	seq = rc == DB_ROW ? db_column_int64(s, 0) : 0;
	storage_stmt_release(s);
	if (rc == DB_DONE)
		return -ENOENT;
	if (rc != DB_ROW)
		return storage_db_error(st, "pubsub_item_seq", rc);
	s = stmt_node(st, sql_item_put, m->node_id);
	if (!s)
		return -EIO;
	db_bind_text(s, 2, m->item_id, -1);
	db_bind_int64(s, 3, seq);
	db_bind_text(s, 4, m->publisher ? m->publisher : "", -1);
	db_bind_text(s, 5, m->payload ? m->payload : "", (int)m->payload_len);
	db_bind_int64(s, 6, m->created);
	ret = exec_changed(st, "pubsub_item_put", s);
	if (ret < 0 || !m->max_items)
		return ret;
	s = stmt_node(st, sql_item_trim, m->node_id);
	if (!s)
		return -EIO;
	db_bind_int64(s, 2, m->max_items);
	return storage_stmt_exec(st, "pubsub_item_trim", s);
}

int pubsub_store_apply(struct storage *st, const struct ps_mut *m)
{
	struct db_stmt *s;

	switch (m->kind) {
	case PS_MUT_NODE_PUT:
		if (!(s = stmt_node(st, sql_node_put, m->node_id)))
			return -EIO;
		db_bind_text(s, 2, m->host, -1);
		bind_opt(s, 3, m->user);
		db_bind_text(s, 4, m->name, -1);
		db_bind_text(s, 5, m->config, -1);
		db_bind_text(s, 6, m->creator ? m->creator : "", -1);
		db_bind_int64(s, 7, m->created);
		return exec_changed(st, "pubsub_node_put", s);
	case PS_MUT_NODE_CONFIG:
		if (!(s = stmt_node(st, sql_node_config, m->node_id)))
			return -EIO;
		db_bind_text(s, 2, m->config, -1);
		return exec_changed(st, "pubsub_node_config", s);
	case PS_MUT_NODE_DEL:
		if (!(s = stmt_node(st, sql_node_del, m->node_id)))
			return -EIO;
		return storage_stmt_exec(st, "pubsub_node_del", s);
	case PS_MUT_AFF_PUT:
		if (m->value && strcmp(m->value, "none") == 0) {
			if (!(s = stmt_node(st, sql_aff_del, m->node_id)))
				return -EIO;
			db_bind_text(s, 2, m->jid, -1);
			return storage_stmt_exec(st, "pubsub_aff_del", s);
		}
		if (!(s = stmt_node(st, sql_aff_put, m->node_id)))
			return -EIO;
		db_bind_text(s, 2, m->jid, -1);
		db_bind_text(s, 3, m->value, -1);
		return exec_changed(st, "pubsub_aff_put", s);
	case PS_MUT_SUB_PUT:
		if (!(s = stmt_node(st, sql_sub_put, m->node_id)))
			return -EIO;
		db_bind_text(s, 2, m->jid, -1);
		db_bind_text(s, 3, m->subid ? m->subid : "", -1);
		db_bind_text(s, 4, m->value, -1);
		db_bind_text(s, 5, m->options ? m->options : "", -1);
		return exec_changed(st, "pubsub_sub_put", s);
	case PS_MUT_SUB_DEL:
		if (!(s = stmt_node(st, sql_sub_del, m->node_id)))
			return -EIO;
		db_bind_text(s, 2, m->jid, -1);
		return storage_stmt_exec(st, "pubsub_sub_del", s);
	case PS_MUT_ITEM_PUT:
		return store_item_put(st, m);
	case PS_MUT_ITEM_DEL:
		if (!(s = stmt_node(st, m->publisher ? sql_item_del_own : sql_item_del, m->node_id)))
			return -EIO;
		db_bind_text(s, 2, m->item_id, -1);
		if (m->publisher)
			db_bind_text(s, 3, m->publisher, -1);
		return exec_changed(st, "pubsub_item_del", s);
	case PS_MUT_ITEMS_PURGE:
		if (!(s = stmt_node(st, sql_items_purge, m->node_id)))
			return -EIO;
		return storage_stmt_exec(st, "pubsub_items_purge", s);
	case PS_MUT_ITEMS_TRIM:
		if (!(s = stmt_node(st, sql_item_trim, m->node_id)))
			return -EIO;
		db_bind_int64(s, 2, m->max_items);
		return storage_stmt_exec(st, "pubsub_item_trim", s);
	}
	return -EINVAL;
}

/* A column's text copied into `a` ("" for NULL), or NULL on ENOMEM. */
static const char *col_dup(struct arena *a, struct db_stmt *s, int i, size_t *len)
{
	const unsigned char *t = db_column_text(s, i);
	size_t n = (size_t)db_column_bytes(s, i);

	if (len)
		*len = t ? n : 0;
	return arena_strndup(a, t ? (const char *)t : "", t ? n : 0);
}

/* One row of an item query (columns id, publisher, payload, created) into a new struct. */
static struct ps_item_row *item_row(struct arena *a, struct db_stmt *s, uint64_t node_id,
				    bool ids_only)
{
	struct ps_item_row *r = arena_alloc(a, sizeof(*r));

	if (!r)
		return NULL;
	memset(r, 0, sizeof(*r));
	r->node_id = node_id;
	r->id = col_dup(a, s, 0, NULL);
	r->publisher = col_dup(a, s, 1, NULL);
	r->payload = ids_only ? "" : col_dup(a, s, 2, &r->payload_len);
	r->created = db_column_int64(s, 3);
	if (!r->id || !r->publisher || !r->payload)
		return NULL;
	return r;
}

int pubsub_store_items(struct storage *st, struct arena *a, uint64_t node_id, uint32_t max,
		       const char *const *ids, size_t nids, bool ids_only,
		       struct ps_item_row **out)
{
	struct ps_item_row *head = NULL, **tail = &head;
	struct db_stmt *s;
	int rc;

	*out = NULL;
	if (nids) {
		/* Requested ids, in the order of the store (oldest first). */
		struct ps_item_row **rows = arena_alloc(a, nids * sizeof(*rows));
		uint64_t *seqs = arena_alloc(a, nids * sizeof(*seqs));
		size_t n = 0;

		if (!rows || !seqs)
			return -ENOMEM;
		for (size_t i = 0; i < nids; i++) {
			if (!(s = stmt_node(st, sql_item_get, node_id)))
				return -EIO;
			db_bind_text(s, 2, ids[i], -1);
			rc = db_step(s);
			if (rc == DB_ROW) {
				rows[n] = item_row(a, s, node_id, ids_only);
				seqs[n] = (uint64_t)db_column_int64(s, 4);
				if (!rows[n]) {
					storage_stmt_release(s);
					return -ENOMEM;
				}
				n++;
			}
			storage_stmt_release(s);
			if (rc != DB_ROW && rc != DB_DONE)
				return storage_db_error(st, "pubsub_item_get", rc);
		}
		/* Insertion sort by seq: the lists are short (one request's ids). */
		for (size_t i = 1; i < n; i++)
			for (size_t j = i; j > 0 && seqs[j - 1] > seqs[j]; j--) {
				struct ps_item_row *tr = rows[j];
				uint64_t ts = seqs[j];

				rows[j] = rows[j - 1];
				seqs[j] = seqs[j - 1];
				rows[j - 1] = tr;
				seqs[j - 1] = ts;
			}
		for (size_t i = 0; i < n; i++) {
			*tail = rows[i];
			tail = &rows[i]->next;
		}
		*out = head;
		return 0;
	}
	if (!(s = stmt_node(st, sql_items_newest, node_id)))
		return -EIO;
	/* No limit: the largest one (a negative LIMIT is SQLite's alone). */
	db_bind_int64(s, 2, max ? (int64_t)max : INT64_MAX);
	/* Newest first from the store; prepended, so the list ends oldest first. */
	while ((rc = db_step(s)) == DB_ROW) {
		struct ps_item_row *r = item_row(a, s, node_id, ids_only);

		if (!r) {
			storage_stmt_release(s);
			return -ENOMEM;
		}
		r->next = head;
		head = r;
	}
	storage_stmt_release(s);
	if (rc != DB_DONE)
		return storage_db_error(st, "pubsub_items", rc);
	*out = head;
	return 0;
}

int pubsub_store_last_item(struct storage *st, struct arena *a, uint64_t node_id,
			   struct ps_item_row **out)
{
	return pubsub_store_items(st, a, node_id, 1, NULL, 0, false, out);
}

int pubsub_store_roster_facts(struct storage *st, struct arena *a, const char *owner_user,
			      const char *contact_bare, bool *has_from, const char **groups)
{
	struct db_stmt *s = storage_stmt(st, sql_roster_facts);
	int rc, ret = 0;

	*has_from = false;
	*groups = NULL;
	if (!s)
		return -EIO;
	db_bind_text(s, 1, owner_user, -1);
	db_bind_text(s, 2, contact_bare, -1);
	rc = db_step(s);
	if (rc == DB_ROW) {
		const char *sub = (const char *)db_column_text(s, 0);

		*has_from = sub && (strcmp(sub, "from") == 0 || strcmp(sub, "both") == 0);
		*groups = col_dup(a, s, 1, NULL);
		if (!*groups)
			ret = -ENOMEM;
	} else if (rc != DB_DONE) {
		ret = storage_db_error(st, "pubsub_roster_facts", rc);
	}
	storage_stmt_release(s);
	return ret;
}

/* A column's text, or NULL for SQL NULL (valid until the next step). */
static const char *col_text(struct db_stmt *s, int i)
{
	const unsigned char *t = db_column_text(s, i);

	return t ? (const char *)t : NULL;
}

int pubsub_store_load(struct storage *st, const struct ps_load_cb *cb, void *arg,
		      uint64_t *id_block)
{
	struct db_stmt *s;
	int rc, ret = 0;

	*id_block = 0;
	if (!(s = storage_stmt(st, sql_load_nodes)))
		return -EIO;
	while (!ret && (rc = db_step(s)) == DB_ROW)
		ret = cb->node(arg, (uint64_t)db_column_int64(s, 0), col_text(s, 1),
			       col_text(s, 2), col_text(s, 3), col_text(s, 4), col_text(s, 5),
			       db_column_int64(s, 6));
	storage_stmt_release(s);
	if (!ret && rc != DB_DONE)
		return storage_db_error(st, "pubsub_load_nodes", rc);
	if (ret)
		return ret;
	if (!(s = storage_stmt(st, sql_load_affils)))
		return -EIO;
	while (!ret && (rc = db_step(s)) == DB_ROW)
		ret = cb->affil(arg, (uint64_t)db_column_int64(s, 0), col_text(s, 1),
				col_text(s, 2));
	storage_stmt_release(s);
	if (!ret && rc != DB_DONE)
		return storage_db_error(st, "pubsub_load_affils", rc);
	if (ret)
		return ret;
	if (!(s = storage_stmt(st, sql_load_subs)))
		return -EIO;
	while (!ret && (rc = db_step(s)) == DB_ROW)
		ret = cb->sub(arg, (uint64_t)db_column_int64(s, 0), col_text(s, 1),
			      col_text(s, 2), col_text(s, 3), col_text(s, 4));
	storage_stmt_release(s);
	if (!ret && rc != DB_DONE)
		return storage_db_error(st, "pubsub_load_subs", rc);
	if (ret)
		return ret;
	if (!(s = storage_stmt(st, sql_node_block)))
		return -EIO;
	rc = db_step(s);
	if (rc == DB_ROW)
		*id_block = (uint64_t)db_column_int64(s, 0);
	storage_stmt_release(s);
	if (rc != DB_ROW)
		return rc == DB_DONE ? -EBADMSG : storage_db_error(st, "pubsub_node_block", rc);
	/* Ids are signed 64-bit in the database: 2^31 blocks of 2^32. */
	return *id_block > 0 && *id_block < ((uint64_t)1 << 31) ? 0 : -EOVERFLOW;
}
