/* SPDX-License-Identifier: MIT */
/*
 * The IoT tables in the store: iot_things, iot_tags, iot_rules (see the iot
 * migration in storage.c and iot_store.h). Storage thread only,
 * and the startup load before that thread runs.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "iot_store.h"
#include "log.h"
#include "storage.h"
#include "storage_db.h"

#define IOT_THING_COLS \
	"id, jid, node_id, source_id, cache_type, owner, public, removed, self_owned"
#define IOT_TAGS_PER_THING_MAX	256	/* tags read back for one thing (the config caps lower) */

/*
 * Every statement is a static string, prepared once and cached by
 * storage_stmt(). Things are found by their unique key (JID and
 * node triple) or by id; claims by the signature index.
 */
static const char sql_thing_by_key[] =
	"SELECT " IOT_THING_COLS " FROM iot_things"
	" WHERE jid = ?1 AND node_id = ?2 AND source_id = ?3 AND cache_type = ?4";
static const char sql_nodes_of_jid[] = "SELECT count(*) FROM iot_things WHERE jid = ?1";
/* username only when the account exists, so a thing of another domain has none. */
static const char sql_thing_insert[] =
	"INSERT INTO iot_things (jid, node_id, source_id, cache_type, username, owner, public,"
	" self_owned, sig, created_at, updated_at)"
	" VALUES (?1, ?2, ?3, ?4, (SELECT username FROM accounts WHERE username = ?5),"
	" CASE WHEN ?6 <> 0 THEN ?1 END, 1, ?6, ?7, ?8, ?8) RETURNING id";
static const char sql_thing_reregister[] =
	"UPDATE iot_things SET sig = ?2, self_owned = ?3, owner = CASE WHEN ?3 <> 0 THEN jid END,"
	" public = 1, removed = 0, updated_at = ?4 WHERE id = ?1";
static const char sql_tags_clear[] = "DELETE FROM iot_tags WHERE thing_id = ?1";
static const char sql_tag_put[] =
	"INSERT INTO iot_tags (thing_id, name, num, value) VALUES (?1, ?2, ?3, ?4)"
	" ON CONFLICT (thing_id, name) DO UPDATE SET num = excluded.num, value = excluded.value";
static const char sql_tag_delete[] = "DELETE FROM iot_tags WHERE thing_id = ?1 AND name = ?2";
static const char sql_tags_of[] =
	"SELECT name, num, value FROM iot_tags WHERE thing_id = ?1";
static const char sql_tag_count[] = "SELECT count(*) FROM iot_tags WHERE thing_id = ?1";
static const char sql_sig_set[] = "UPDATE iot_things SET sig = ?2, updated_at = ?3 WHERE id = ?1";
/* Things of the claimant first: claiming twice is not an error. */
static const char sql_claim_find[] =
	"SELECT " IOT_THING_COLS " FROM iot_things WHERE sig = ?1 AND (owner IS NULL OR"
	" (owner = ?2 AND self_owned = 0)) ORDER BY owner IS NULL, id LIMIT 1";
static const char sql_claim[] =
	"UPDATE iot_things SET owner = ?2, public = ?3, removed = 0, updated_at = ?4 WHERE id = ?1";
static const char sql_removed[] =
	"UPDATE iot_things SET removed = 1, updated_at = ?2 WHERE id = ?1";
static const char sql_thing_delete[] = "DELETE FROM iot_things WHERE id = ?1";
static const char sql_disown[] =
	"UPDATE iot_things SET owner = NULL, public = 1, removed = 0, self_owned = 0, sig = ?2,"
	" updated_at = ?3 WHERE id = ?1";
static const char sql_things_public[] =
	"SELECT t.id, t.jid, t.node_id, t.source_id, t.cache_type, t.owner, g.name, g.num, g.value"
	" FROM iot_things t LEFT JOIN iot_tags g ON g.thing_id = t.id"
	" WHERE t.owner IS NOT NULL AND t.public = 1 AND t.removed = 0 ORDER BY t.id";
static const char sql_things_public_with[] =
	"SELECT t.id, t.jid, t.node_id, t.source_id, t.cache_type, t.owner, g.name, g.num, g.value"
	" FROM iot_things t LEFT JOIN iot_tags g ON g.thing_id = t.id"
	" WHERE t.owner IS NOT NULL AND t.public = 1 AND t.removed = 0 AND t.id IN"
	" (SELECT thing_id FROM iot_tags WHERE name = ?1 AND value = ?2 AND num = 0) ORDER BY t.id";
static const char sql_things_owned[] =
	"SELECT t.id, t.jid, t.node_id, t.source_id, t.cache_type, t.owner, g.name, g.num, g.value"
	" FROM iot_things t LEFT JOIN iot_tags g ON g.thing_id = t.id"
	" WHERE t.owner = ?1 AND t.self_owned = 0 ORDER BY t.id";

static const char sql_rule_find[] =
	"SELECT id FROM iot_rules WHERE thing = ?1 AND kind = ?2 AND scope = ?3 AND remote = ?4"
	" AND nodes = ?5";
static const char sql_rule_count[] = "SELECT count(*) FROM iot_rules WHERE thing = ?1";
static const char sql_rule_put[] =
	"INSERT INTO iot_rules (thing, username, kind, scope, remote, nodes, result, partial,"
	" created_at) VALUES (?1, (SELECT username FROM accounts WHERE username = ?2), ?3, ?4, ?5,"
	" ?6, ?7, ?8, ?9) ON CONFLICT (thing, kind, scope, remote, nodes) DO UPDATE SET"
	" result = excluded.result, partial = excluded.partial, created_at = excluded.created_at"
	" RETURNING id";
static const char sql_rules_delete_all[] = "DELETE FROM iot_rules WHERE thing = ?1";
static const char sql_rules_delete_nodes[] =
	"DELETE FROM iot_rules WHERE thing = ?1 AND nodes = ?2";
static const char sql_clear_cache[] =
	"UPDATE iot_things SET clear_cache = ?2 WHERE jid = ?1 AND node_id = '' AND source_id = ''"
	" AND cache_type = ''";
static const char sql_load_things[] =
	"SELECT jid, owner, clear_cache FROM iot_things WHERE owner IS NOT NULL AND owner <> jid"
	" AND node_id = '' AND source_id = '' AND cache_type = ''";
static const char sql_load_rules[] =
	"SELECT id, thing, kind, scope, remote, nodes, result, partial FROM iot_rules ORDER BY id";
static const char sql_rules_of[] =
	"SELECT id, thing, kind, scope, remote, nodes, result, partial FROM iot_rules"
	" WHERE thing = ?1 ORDER BY id";
static const char sql_claim_of[] =
	"SELECT owner, clear_cache FROM iot_things WHERE jid = ?1 AND node_id = '' AND"
	" source_id = '' AND cache_type = '' AND owner IS NOT NULL";
static const char sql_load_enrolled[] =
	"SELECT d.jid, d.owner FROM devices d WHERE d.owner IS NOT NULL AND d.owner <> ''"
	" AND d.owner <> d.jid AND NOT EXISTS (SELECT 1 FROM iot_things t WHERE t.jid = d.jid"
	" AND t.node_id = '' AND t.source_id = '' AND t.cache_type = '' AND t.owner IS NOT NULL)";
static const char sql_enrolled_of[] =
	"SELECT owner FROM devices WHERE jid = ?1 AND owner IS NOT NULL AND owner <> ''"
	" AND owner <> jid";

/* Copies a text column into out (truncated to its size; NULL gives ""). */
static void iot_col_copy(struct db_stmt *s, int col, char *out, size_t out_size)
{
	const unsigned char *t = db_column_text(s, col);

	snprintf(out, out_size, "%s", t ? (const char *)t : "");
}

static const char *iot_col(struct db_stmt *s, int col)
{
	const unsigned char *t = db_column_text(s, col);

	return t ? (const char *)t : "";
}

static void iot_read_thing(struct db_stmt *s, struct iot_thing_info *out)
{
	out->id = db_column_int64(s, 0);
	iot_col_copy(s, 1, out->jid, sizeof(out->jid));
	iot_col_copy(s, 2, out->node_id, sizeof(out->node_id));
	iot_col_copy(s, 3, out->source_id, sizeof(out->source_id));
	iot_col_copy(s, 4, out->cache_type, sizeof(out->cache_type));
	iot_col_copy(s, 5, out->owner, sizeof(out->owner));
	out->public_ = db_column_int(s, 6) != 0;
	out->removed = db_column_int(s, 7) != 0;
	out->self_owned = db_column_int(s, 8) != 0;
}

static void iot_bind_key(struct db_stmt *s, const struct iot_thing_key *k)
{
	db_bind_text(s, 1, k->jid, -1);
	db_bind_text(s, 2, k->node_id ? k->node_id : "", -1);
	db_bind_text(s, 3, k->source_id ? k->source_id : "", -1);
	db_bind_text(s, 4, k->cache_type ? k->cache_type : "", -1);
}

static bool iot_is_jid_level(const struct iot_thing_info *t)
{
	return !t->node_id[0] && !t->source_id[0] && !t->cache_type[0];
}

/*
 * Runs an INSERT ... RETURNING id and releases it: the new (or updated)
 * row's id in *id. 0 or -errno.
 */
static int iot_insert_id(struct storage *st, const char *op, struct db_stmt *s, int64_t *id)
{
	int rc = db_step(s);

	if (rc == DB_ROW)
		*id = db_column_int64(s, 0);
	storage_stmt_release(s);
	return rc == DB_ROW ? 0 : storage_db_error(st, op, rc == DB_DONE ? -EIO : rc);
}

/*
 * A statement with an id (?1) and optionally a text (?2) and a time (?3),
 * or just a time (?2), run for no rows: the shape of most updates here.
 */
static int iot_exec_id(struct storage *st, const char *sql, const char *op, int64_t id,
		       const char *text, int64_t now)
{
	struct db_stmt *s = storage_stmt(st, sql);

	if (!s)
		return -EIO;
	db_bind_int64(s, 1, id);
	if (text) {
		db_bind_text(s, 2, text, -1);
		db_bind_int64(s, 3, now);
	} else if (now) {
		db_bind_int64(s, 2, now);
	}
	return storage_stmt_exec(st, op, s);
}

/* A single integer from a one-column query bound to one text (or, text NULL, one id). */
static int iot_count(struct storage *st, const char *sql, const char *op, const char *text,
		     int64_t id, int64_t *out)
{
	struct db_stmt *s = storage_stmt(st, sql);
	int rc, ret = 0;

	if (!s)
		return -EIO;
	if (text)
		db_bind_text(s, 1, text, -1);
	else
		db_bind_int64(s, 1, id);
	rc = db_step(s);
	if (rc == DB_ROW)
		*out = db_column_int64(s, 0);
	else
		ret = storage_db_error(st, op, rc);
	storage_stmt_release(s);
	return ret;
}

int iot_db_thing_get(struct storage *st, const struct iot_thing_key *k,
		     struct iot_thing_info *out)
{
	struct db_stmt *s = storage_stmt(st, sql_thing_by_key);
	int rc, ret = 0;

	if (!s)
		return -EIO;
	iot_bind_key(s, k);
	rc = db_step(s);
	if (rc == DB_ROW)
		iot_read_thing(s, out);
	else
		ret = rc == DB_DONE ? -ENOENT : storage_db_error(st, "iot_thing_get", rc);
	storage_stmt_release(s);
	return ret;
}

/* Stores tags of a thing, replacing tags of the same name. */
static int iot_tags_put(struct storage *st, int64_t id, const struct reg_tag *tags, size_t n)
{
	for (size_t i = 0; i < n; i++) {
		struct db_stmt *s = storage_stmt(st, sql_tag_put);
		int ret;

		if (!s)
			return -EIO;
		db_bind_int64(s, 1, id);
		db_bind_text(s, 2, tags[i].name, -1);
		db_bind_int(s, 3, tags[i].num);
		db_bind_text(s, 4, tags[i].value, -1);
		ret = storage_stmt_exec(st, "iot_tag_put", s);
		if (ret < 0)
			return ret;
	}
	return 0;
}

static int iot_has_devices(struct storage *st);

/*
 * The owner a device was enrolled with (`stanzactl device import`) into
 * owner ("" when none, or when the devices table does not exist). 0 or
 * -errno.
 */
static int iot_enrolled_owner(struct storage *st, const char *jid, char *owner,
			      size_t owner_size)
{
	struct db_stmt *s;
	int rc, ret;

	owner[0] = '\0';
	ret = iot_has_devices(st);
	if (ret <= 0)
		return ret;
	s = storage_stmt(st, sql_enrolled_of);
	if (!s)
		return -EIO;
	db_bind_text(s, 1, jid, -1);
	rc = db_step(s);
	if (rc == DB_ROW)
		iot_col_copy(s, 0, owner, owner_size);
	storage_stmt_release(s);
	if (rc != DB_ROW && rc != DB_DONE)
		return storage_db_error(st, "iot_enrolled_of", rc);
	return 0;
}

/*
 * A registration is one row per key: a new one (bounded per JID), or the
 * unclaimed row taking the new tags (all of them replaced, XEP-0347 3.5).
 * A device enrolled with an owner is answered as claimed by that owner
 * and nothing is stored: its ownership is the operator's, and a
 * claimable row would let whoever reads its KEY take it over.
 */
int iot_db_register(struct storage *st, const struct iot_thing_key *k, const char *user,
		    const struct reg_tag *tags, size_t n, const char *sig, bool self_owned,
		    size_t max_nodes, char *owner, size_t owner_size, int64_t now)
{
	struct iot_thing_info *t = malloc(sizeof(*t));
	struct db_stmt *s;
	int64_t id = 0, count;
	int ret;

	if (!t)
		return -ENOMEM;
	ret = iot_db_thing_get(st, k, t);
	if (ret == 0 && t->owner[0]) {
		/* XEP-0347 3.5: a claimed thing is told its owner; nothing changes. */
		snprintf(owner, owner_size, "%s", t->owner);
		free(t);
		return 1;
	}
	if ((ret == 0 || ret == -ENOENT) && !k->node_id[0] && !k->source_id[0] &&
	    !k->cache_type[0]) {
		int e = iot_enrolled_owner(st, k->jid, owner, owner_size);

		if (e < 0 || owner[0]) {
			free(t);
			return e < 0 ? e : 1;
		}
	}
	if (ret == 0) {
		id = t->id;
		s = storage_stmt(st, sql_thing_reregister);
		ret = -EIO;
		if (s) {
			db_bind_int64(s, 1, id);
			db_bind_text(s, 2, sig, -1);
			db_bind_int(s, 3, self_owned);
			db_bind_int64(s, 4, now);
			ret = storage_stmt_exec(st, "iot_reregister", s);
		}
		if (ret == 0)
			ret = iot_exec_id(st, sql_tags_clear, "iot_tags_clear", id, NULL, 0);
	} else if (ret == -ENOENT) {
		ret = iot_count(st, sql_nodes_of_jid, "iot_nodes", k->jid, 0, &count);
		if (ret == 0 && (size_t)count >= max_nodes)
			ret = -ENOSPC;
		s = ret == 0 ? storage_stmt(st, sql_thing_insert) : NULL;
		if (ret == 0 && !s)
			ret = -EIO;
		if (ret == 0) {
			iot_bind_key(s, k);
			if (user)
				db_bind_text(s, 5, user, -1);
			db_bind_int(s, 6, self_owned);
			db_bind_text(s, 7, sig, -1);
			db_bind_int64(s, 8, now);
			ret = iot_insert_id(st, "iot_register", s, &id);
		}
	}
	free(t);
	if (ret == 0)
		ret = iot_tags_put(st, id, tags, n);
	if (ret == 0 && self_owned)
		snprintf(owner, owner_size, "%s", k->jid);
	return ret;
}

/*
 * A claim matches the signature exactly; things already claimed by the
 * claimant come first, so claiming twice answers the same thing.
 */
int iot_db_claim(struct storage *st, const char *sig, const char *claimant, bool public_,
		 struct iot_thing_info *out, int64_t now)
{
	struct db_stmt *s = storage_stmt(st, sql_claim_find);
	int rc, ret;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, sig, -1);
	db_bind_text(s, 2, claimant, -1);
	rc = db_step(s);
	if (rc == DB_ROW)
		iot_read_thing(s, out);
	storage_stmt_release(s);
	if (rc == DB_DONE)
		return -ENOENT;
	if (rc != DB_ROW)
		return storage_db_error(st, "iot_claim_find", rc);
	if (out->owner[0])
		return 1;
	/* Registered before its enrollment gave it an owner: only that owner may claim it. */
	if (iot_is_jid_level(out)) {
		char enrolled[JID_MAX];

		ret = iot_enrolled_owner(st, out->jid, enrolled, sizeof(enrolled));
		if (ret < 0)
			return ret;
		if (enrolled[0] && strcmp(enrolled, claimant) != 0)
			return -ENOENT;
	}
	s = storage_stmt(st, sql_claim);
	if (!s)
		return -EIO;
	db_bind_int64(s, 1, out->id);
	db_bind_text(s, 2, claimant, -1);
	db_bind_int(s, 3, public_);
	db_bind_int64(s, 4, now);
	ret = storage_stmt_exec(st, "iot_claim", s);
	if (ret < 0)
		return ret;
	snprintf(out->owner, sizeof(out->owner), "%s", claimant);
	out->public_ = public_;
	out->removed = false;
	/* A new owner starts without the rules of an earlier one. */
	return iot_is_jid_level(out) ? iot_db_rules_delete(st, out->jid, NULL) : 0;
}

/*
 * Recomputes a thing's signature from its stored tags, after an update
 * (the claim of a disowned and re-registered thing must match what is
 * stored now, not what was registered).
 */
static int iot_resign(struct storage *st, int64_t id, int64_t now)
{
	struct reg_tag *tags = calloc(IOT_TAGS_PER_THING_MAX, sizeof(*tags));
	struct strbuf sig = STRBUF_INIT;
	struct arena a;
	struct db_stmt *s;
	size_t n = 0;
	int rc, ret = 0;

	if (!tags)
		return -ENOMEM;
	arena_init(&a, 4096);
	s = storage_stmt(st, sql_tags_of);
	if (!s) {
		ret = -EIO;
		goto out;
	}
	db_bind_int64(s, 1, id);
	while ((rc = db_step(s)) == DB_ROW && n < IOT_TAGS_PER_THING_MAX) {
		struct reg_tag *t = &tags[n++];

		t->name = arena_strdup(&a, iot_col(s, 0));
		t->num = db_column_int(s, 1) != 0;
		t->value = arena_strdup(&a, iot_col(s, 2));
		t->number = t->num ? strtod(t->value ? t->value : "0", NULL) : 0;
		if (!t->name || !t->value)
			ret = -ENOMEM;
	}
	if (rc != DB_ROW && rc != DB_DONE)
		ret = storage_db_error(st, "iot_tags_of", rc);
	storage_stmt_release(s);
	if (ret == 0) {
		reg_tags_signature(tags, n, &sig);
		ret = sig.oom ? -ENOMEM : iot_exec_id(st, sql_sig_set, "iot_sig", id,
						      sig.data ? sig.data : "", now);
	}
out:
	strbuf_free(&sig);
	arena_release(&a);
	free(tags);
	return ret;
}

int iot_db_update_tags(struct storage *st, int64_t id, const struct reg_tag *tags, size_t n,
		       size_t max_tags, int64_t now)
{
	int64_t count;
	int ret = 0;

	for (size_t i = 0; i < n && ret == 0; i++) {
		struct db_stmt *s;

		if (tags[i].num || tags[i].value[0]) {
			ret = iot_tags_put(st, id, &tags[i], 1);
			continue;
		}
		/* XEP-0347 3.9: an empty string value removes the tag. */
		s = storage_stmt(st, sql_tag_delete);
		if (!s)
			return -EIO;
		db_bind_int64(s, 1, id);
		db_bind_text(s, 2, tags[i].name, -1);
		ret = storage_stmt_exec(st, "iot_tag_delete", s);
	}
	if (ret == 0)
		ret = iot_count(st, sql_tag_count, "iot_tag_count", NULL, id, &count);
	if (ret == 0 && (size_t)count > max_tags)
		return -ENOSPC;	/* the request's savepoint undoes the changes */
	return ret < 0 ? ret : iot_resign(st, id, now);
}

int iot_db_set_removed(struct storage *st, int64_t id, int64_t now)
{
	return iot_exec_id(st, sql_removed, "iot_removed", id, NULL, now);
}

int iot_db_delete(struct storage *st, const struct iot_thing_info *t)
{
	int ret = iot_exec_id(st, sql_thing_delete, "iot_delete", t->id, NULL, 0);

	if (ret == 0 && iot_is_jid_level(t))
		ret = iot_db_rules_delete(st, t->jid, NULL);
	return ret;
}

int iot_db_disown(struct storage *st, const struct iot_thing_info *t, const char *key,
		  int64_t now)
{
	struct reg_tag kt = { .name = REG_KEY_TAG, .value = key };
	struct strbuf sig = STRBUF_INIT;
	int ret;

	reg_tags_signature(&kt, 1, &sig);
	if (sig.oom) {
		strbuf_free(&sig);
		return -ENOMEM;
	}
	ret = iot_exec_id(st, sql_disown, "iot_disown", t->id, sig.data, now);
	strbuf_free(&sig);
	if (ret == 0)
		ret = iot_exec_id(st, sql_tags_clear, "iot_tags_clear", t->id, NULL, 0);
	/* XEP-0347 3.13: a random KEY so nobody claims it by guessing. */
	if (ret == 0)
		ret = iot_tags_put(st, t->id, &kt, 1);
	if (ret == 0 && iot_is_jid_level(t))
		ret = iot_db_rules_delete(st, t->jid, NULL);
	return ret;
}

/*
 * The thing being collected by iot_db_things: the rows of one thing come
 * together (ORDER BY t.id), its strings copied into an arena that is
 * reset for the next thing, so a walk over every thing allocates once.
 */
struct iot_walk {
	struct iot_found f;
	struct reg_tag *tags;
	struct arena a;
};

static int iot_walk_start(struct iot_walk *wk, struct db_stmt *s)
{
	arena_reset(&wk->a);
	memset(&wk->f, 0, sizeof(wk->f));
	wk->f.id = db_column_int64(s, 0);
	wk->f.jid = arena_strdup(&wk->a, iot_col(s, 1));
	wk->f.node_id = arena_strdup(&wk->a, iot_col(s, 2));
	wk->f.source_id = arena_strdup(&wk->a, iot_col(s, 3));
	wk->f.cache_type = arena_strdup(&wk->a, iot_col(s, 4));
	wk->f.owner = arena_strdup(&wk->a, iot_col(s, 5));
	wk->f.tags = wk->tags;
	return wk->f.jid && wk->f.node_id && wk->f.source_id && wk->f.cache_type && wk->f.owner ?
	       0 : -ENOMEM;
}

static int iot_walk_tag(struct iot_walk *wk, struct db_stmt *s)
{
	struct reg_tag *t;

	if (db_column_is_null(s, 6) || wk->f.ntags == IOT_TAGS_PER_THING_MAX)
		return 0;	/* a thing without tags (LEFT JOIN) */
	t = &wk->tags[wk->f.ntags++];
	t->name = arena_strdup(&wk->a, iot_col(s, 6));
	t->num = db_column_int(s, 7) != 0;
	t->value = arena_strdup(&wk->a, iot_col(s, 8));
	if (!t->name || !t->value)
		return -ENOMEM;
	t->number = t->num ? strtod(t->value, NULL) : 0;
	return 0;
}

int iot_db_things(struct storage *st, const char *owner, const struct reg_tag *has,
		  int (*fn)(void *arg, const struct iot_found *t), void *arg)
{
	struct db_stmt *s = storage_stmt(st, owner ? sql_things_owned : has ?
					      sql_things_public_with : sql_things_public);
	struct iot_walk wk = { 0 };
	bool have = false;
	int rc = DB_DONE, ret = 0;

	if (!s)
		return -EIO;
	wk.tags = calloc(IOT_TAGS_PER_THING_MAX, sizeof(*wk.tags));
	if (!wk.tags) {
		storage_stmt_release(s);
		return -ENOMEM;
	}
	arena_init(&wk.a, 4096);
	if (owner) {
		db_bind_text(s, 1, owner, -1);
	} else if (has) {
		db_bind_text(s, 1, has->name, -1);
		db_bind_text(s, 2, has->value, -1);
	}
	/* Rows come thing by thing (ORDER BY t.id): one callback per thing. */
	while (ret == 0 && (rc = db_step(s)) == DB_ROW) {
		if (!have || db_column_int64(s, 0) != wk.f.id) {
			if (have && (ret = fn(arg, &wk.f)) != 0)
				break;
			ret = iot_walk_start(&wk, s);
			have = true;
		}
		if (ret == 0)
			ret = iot_walk_tag(&wk, s);
	}
	if (ret == 0 && rc != DB_DONE)
		ret = storage_db_error(st, "iot_things", rc);
	else if (ret == 0 && have)
		ret = fn(arg, &wk.f);
	storage_stmt_release(s);
	arena_release(&wk.a);
	free(wk.tags);
	return ret < 0 ? ret : 0;
}

/* ---- Rules ---- */

/*
 * Upsert by the rule's key (the same key replaces: iot_rule_same_key);
 * the count is checked only for a new key.
 */
int iot_db_rule_put(struct storage *st, const char *thing, const char *user,
		    struct iot_rule *r, size_t max_rules, int64_t now)
{
	struct db_stmt *s = storage_stmt(st, sql_rule_find);
	int64_t existing = 0, count;
	int rc, ret;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, thing, -1);
	db_bind_text(s, 2, iot_kind_name(r->kind), -1);
	db_bind_text(s, 3, iot_range_name(r->range), -1);
	db_bind_text(s, 4, r->remote, -1);
	db_bind_text(s, 5, r->nodes, -1);
	rc = db_step(s);
	if (rc == DB_ROW)
		existing = db_column_int64(s, 0);
	storage_stmt_release(s);
	if (rc != DB_ROW && rc != DB_DONE)
		return storage_db_error(st, "iot_rule_find", rc);
	if (!existing) {
		ret = iot_count(st, sql_rule_count, "iot_rule_count", thing, 0, &count);
		if (ret < 0)
			return ret;
		if ((size_t)count >= max_rules)
			return -ENOSPC;
	}
	s = storage_stmt(st, sql_rule_put);
	if (!s)
		return -EIO;
	db_bind_text(s, 1, thing, -1);
	if (user)
		db_bind_text(s, 2, user, -1);
	db_bind_text(s, 3, iot_kind_name(r->kind), -1);
	db_bind_text(s, 4, iot_range_name(r->range), -1);
	db_bind_text(s, 5, r->remote, -1);
	db_bind_text(s, 6, r->nodes, -1);
	db_bind_int(s, 7, r->result);
	if (r->partial)
		db_bind_text(s, 8, r->partial, -1);
	db_bind_int64(s, 9, now);
	return iot_insert_id(st, "iot_rule_put", s, &r->id);
}

int iot_db_rules_delete(struct storage *st, const char *thing, const char *nodes)
{
	struct db_stmt *s = storage_stmt(st, nodes ? sql_rules_delete_nodes :
						sql_rules_delete_all);

	if (!s)
		return -EIO;
	db_bind_text(s, 1, thing, -1);
	if (nodes)
		db_bind_text(s, 2, nodes, -1);
	return storage_stmt_exec(st, "iot_rules_delete", s);
}

int iot_db_clear_cache(struct storage *st, const char *thing, bool pending)
{
	struct db_stmt *s = storage_stmt(st, sql_clear_cache);

	if (!s)
		return -EIO;
	db_bind_text(s, 1, thing, -1);
	db_bind_int(s, 2, pending);
	return storage_stmt_exec(st, "iot_clear_cache", s);
}

/* Whether the devices table of fleet enrollment exists. 1, 0 or -errno. */
/*
 * Fleet enrollment's table (device.h) comes with an earlier migration
 * than the registry's, so a store that has the one has the other.
 */
static int iot_has_devices(struct storage *st)
{
	return 1;
}

/* Runs a (jid, owner[, clear_cache]) query and calls thing_fn per row. */
static int iot_load_owners(struct storage *st, const char *sql, const char *op,
			   int (*thing_fn)(void *arg, const char *jid, const char *owner,
					   bool clear_cache), void *arg)
{
	struct db_stmt *s = storage_stmt(st, sql);
	int rc = DB_DONE, ret = 0;

	if (!s)
		return -EIO;
	while (ret == 0 && (rc = db_step(s)) == DB_ROW)
		ret = thing_fn(arg, iot_col(s, 0), iot_col(s, 1), db_column_count(s) > 2 &&
			       db_column_int(s, 2) != 0);
	if (ret == 0 && rc != DB_DONE)
		ret = storage_db_error(st, op, rc);
	storage_stmt_release(s);
	return ret;
}

/* Rules from a prepared query, oldest first, to rule_fn. */
static int iot_rules_walk(struct storage *st, struct db_stmt *s,
			  int (*rule_fn)(void *arg, const char *thing, struct iot_rule *r),
			  void *arg)
{
	int rc = DB_DONE, ret = 0;

	while (ret == 0 && (rc = db_step(s)) == DB_ROW) {
		int kind = iot_kind_parse(iot_col(s, 2)), range = iot_range_parse(iot_col(s, 3));
		struct iot_rule *r;

		if (kind < 0 || range < 0) {
			log_warn("iot.rule_unreadable", "id=%lld", (long long)db_column_int64(s, 0));
			continue;
		}
		r = iot_rule_new(kind, range, db_column_int(s, 6) != 0, iot_col(s, 4),
				 iot_col(s, 5), db_column_is_null(s, 7) ? NULL :
				 iot_col(s, 7));
		if (!r) {
			ret = -ENOMEM;
			break;
		}
		r->id = db_column_int64(s, 0);
		ret = rule_fn(arg, iot_col(s, 1), r);
	}
	if (ret == 0 && rc != DB_DONE)
		ret = storage_db_error(st, "iot_load_rules", rc);
	storage_stmt_release(s);
	return ret;
}

int iot_db_load(struct storage *st,
		int (*thing_fn)(void *arg, const char *jid, const char *owner, bool clear_cache),
		int (*rule_fn)(void *arg, const char *thing, struct iot_rule *r), void *arg)
{
	struct db_stmt *s;
	int ret;

	ret = iot_load_owners(st, sql_load_things, "iot_load_things", thing_fn, arg);
	if (ret == 0)
		ret = iot_has_devices(st);
	if (ret == 1)
		ret = iot_load_owners(st, sql_load_enrolled, "iot_load_enrolled", thing_fn, arg);
	if (ret < 0)
		return ret;
	s = storage_stmt(st, sql_load_rules);
	return s ? iot_rules_walk(st, s, rule_fn, arg) : -EIO;
}

int iot_db_thing_load(struct storage *st, const char *jid, char *owner, size_t owner_size,
		      bool *clear_cache,
		      int (*rule_fn)(void *arg, const char *thing, struct iot_rule *r), void *arg)
{
	struct db_stmt *s = storage_stmt(st, sql_claim_of);
	int rc, ret;

	owner[0] = '\0';
	*clear_cache = false;
	if (!s)
		return -EIO;
	db_bind_text(s, 1, jid, -1);
	rc = db_step(s);
	if (rc == DB_ROW) {
		/* Claimed by itself (self-owned): not provisioned, whatever enrollment says. */
		iot_col_copy(s, 0, owner, owner_size);
		if (strcmp(owner, jid) == 0)
			owner[0] = '\0';
		*clear_cache = db_column_int(s, 1) != 0;
	}
	storage_stmt_release(s);
	if (rc != DB_ROW && rc != DB_DONE)
		return storage_db_error(st, "iot_claim_of", rc);
	if (rc == DB_DONE) {
		ret = iot_has_devices(st);
		if (ret < 0)
			return ret;
		s = ret ? storage_stmt(st, sql_enrolled_of) : NULL;
		if (ret && !s)
			return -EIO;
		if (s) {
			db_bind_text(s, 1, jid, -1);
			rc = db_step(s);
			if (rc == DB_ROW)
				iot_col_copy(s, 0, owner, owner_size);
			storage_stmt_release(s);
			if (rc != DB_ROW && rc != DB_DONE)
				return storage_db_error(st, "iot_enrolled_of", rc);
		}
	}
	if (!owner[0])
		return 0;
	s = storage_stmt(st, sql_rules_of);
	if (!s)
		return -EIO;
	db_bind_text(s, 1, jid, -1);
	return iot_rules_walk(st, s, rule_fn, arg);
}
