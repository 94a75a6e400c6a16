/* SPDX-License-Identifier: MIT */
/*
 * MUC rooms and their archive in the store (tables muc_rooms,
 * muc_affiliations, muc_archive; see the MUC migration in
 * storage.c). Persistent rooms only have rows in muc_rooms; the
 * archive of any room with archiving on is kept until the room goes
 * away, newest `keep` messages per room. Storage thread only (and the
 * startup load, before that thread runs).
 */
#include <errno.h>
#include <stdint.h>
#include <string.h>
#include <time.h>

#include "muc.h"
#include "storage.h"
#include "storage_db.h"

static const char sql_rooms[] =
	"SELECT name, title, description, password, subject, subject_nick, subject_at,"
	" max_users, history_len, allow_pm, public_room, members_only, moderated,"
	" non_anonymous, change_subject, allow_invites, archive FROM muc_rooms ORDER BY name";
static const char sql_affs[] =
	"SELECT room, jid, affiliation, nick FROM muc_affiliations ORDER BY room, jid";
static const char sql_room_put[] =
	"INSERT INTO muc_rooms (name, title, description, password, subject, subject_nick,"
	" subject_at, max_users, history_len, allow_pm, public_room, members_only, moderated,"
	" non_anonymous, change_subject, allow_invites, archive, updated_at)"
	" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7, ?8, ?9, ?10, ?11, ?12, ?13, ?14, ?15, ?16, ?17, ?18)"
	" ON CONFLICT (name) DO UPDATE SET title = ?2, description = ?3, password = ?4,"
	" subject = ?5, subject_nick = ?6, subject_at = ?7, max_users = ?8, history_len = ?9,"
	" allow_pm = ?10, public_room = ?11, members_only = ?12, moderated = ?13,"
	" non_anonymous = ?14, change_subject = ?15, allow_invites = ?16, archive = ?17,"
	" updated_at = ?18";
static const char sql_affs_clear[] = "DELETE FROM muc_affiliations WHERE room = ?1";
static const char sql_aff_put[] =
	"INSERT INTO muc_affiliations (room, jid, affiliation, nick) VALUES (?1, ?2, ?3, ?4)";
static const char sql_room_delete[] = "DELETE FROM muc_rooms WHERE name = ?1";
static const char sql_archive_put[] =
	"INSERT INTO muc_archive (room, stanza_id, nick, real_jid, real_bare, created_at, stanza)"
	" VALUES (?1, ?2, ?3, ?4, ?5, ?6, ?7)";
/* Everything older than the keep-th newest row of the room. */
static const char sql_archive_prune[] =
	"DELETE FROM muc_archive WHERE room = ?1 AND seq <= (SELECT seq FROM muc_archive"
	" WHERE room = ?1 ORDER BY seq DESC LIMIT 1 OFFSET ?2)";
static const char sql_archive_delete[] = "DELETE FROM muc_archive WHERE room = ?1";
static const char sql_archive_seq[] =
	"SELECT seq FROM muc_archive WHERE room = ?1 AND stanza_id = ?2";
static const char sql_archive_get[] =
	"SELECT seq, created_at, stanza_id, nick, real_jid, stanza FROM muc_archive"
	" WHERE room = ?1 AND stanza_id = ?2";
/* One filter for every query: absent bounds are passed as the widest values. */
#define ARCHIVE_WHERE \
	" WHERE room = ?1 AND seq > ?2 AND seq < ?3 AND created_at >= ?4 AND created_at <= ?5" \
	" AND (?6 IS NULL OR real_bare = ?6) AND (?7 IS NULL OR nick = ?7)"
static const char sql_archive_fwd[] =
	"SELECT seq, created_at, stanza_id, nick, real_jid, stanza FROM muc_archive"
	ARCHIVE_WHERE " ORDER BY seq LIMIT ?8";
static const char sql_archive_back[] =
	"SELECT seq, created_at, stanza_id, nick, real_jid, stanza FROM muc_archive"
	ARCHIVE_WHERE " ORDER BY seq DESC LIMIT ?8";
static const char sql_archive_count[] = "SELECT count(*) FROM muc_archive" ARCHIVE_WHERE;

/* A text column (NULL for SQL NULL), valid until the statement steps again. */
static const char *col_text(struct db_stmt *s, int i)
{
	return (const char *)db_column_text(s, i);
}

/* Binds a string, or SQL NULL for NULL (optional configuration texts). */
static void bind_opt_text(struct db_stmt *s, int i, const char *v)
{
	if (v)
		db_bind_text(s, i, v, -1);
	else
		db_bind_null(s, i);
}

int muc_db_load(struct storage *st, int (*room_fn)(void *arg, const struct muc_room_row *r),
		int (*aff_fn)(void *arg, const char *room, const struct muc_affiliation_row *a),
		void *arg)
{
	struct db_stmt *s = storage_stmt(st, sql_rooms);
	int rc, ret = 0;

	if (!s)
		return -EIO;
	while ((rc = db_step(s)) == DB_ROW) {
		struct muc_room_row r = {
			.name = col_text(s, 0),
			.title = col_text(s, 1),
			.description = col_text(s, 2),
			.password = col_text(s, 3),
			.subject = col_text(s, 4),
			.subject_nick = col_text(s, 5),
			.subject_at = db_column_int64(s, 6),
			.max_users = (uint32_t)db_column_int64(s, 7),
			.history_len = (uint32_t)db_column_int64(s, 8),
			.public_room = db_column_int(s, 10) != 0,
			.members_only = db_column_int(s, 11) != 0,
			.moderated = db_column_int(s, 12) != 0,
			.non_anonymous = db_column_int(s, 13) != 0,
			.change_subject = db_column_int(s, 14) != 0,
			.allow_invites = db_column_int(s, 15) != 0,
			.archive = db_column_int(s, 16) != 0,
		};
		int pm = muc_allow_pm_parse(col_text(s, 9));

		r.allow_pm = pm < 0 ? MUC_PM_ANYONE : (uint8_t)pm;
		if (!r.name)
			continue;
		ret = room_fn(arg, &r);
		if (ret < 0)
			break;
	}
	storage_stmt_release(s);
	if (ret < 0)
		return ret;
	if (rc != DB_DONE && rc != DB_ROW)
		return storage_db_error(st, "muc.load_rooms", rc);

	s = storage_stmt(st, sql_affs);
	if (!s)
		return -EIO;
	while ((rc = db_step(s)) == DB_ROW) {
		int aff = muc_affiliation_parse(col_text(s, 2));
		struct muc_affiliation_row a = {
			.jid = col_text(s, 1),
			.nick = col_text(s, 3),
		};

		/* A row the CHECK constraint let through but this build does not know: skip. */
		if (aff < 0 || aff == MUC_AFF_NONE || !a.jid || !col_text(s, 0))
			continue;
		a.aff = (uint8_t)aff;
		ret = aff_fn(arg, col_text(s, 0), &a);
		if (ret < 0)
			break;
	}
	storage_stmt_release(s);
	if (ret < 0)
		return ret;
	if (rc != DB_DONE && rc != DB_ROW)
		return storage_db_error(st, "muc.load_affiliations", rc);
	return 0;
}

int muc_db_room_put(struct storage *st, const struct muc_room_row *r,
		    const struct muc_affiliation_row *affs, size_t naff)
{
	struct db_stmt *s = storage_stmt(st, sql_room_put);
	int ret;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, r->name, -1);
	bind_opt_text(s, 2, r->title);
	bind_opt_text(s, 3, r->description);
	bind_opt_text(s, 4, r->password);
	bind_opt_text(s, 5, r->subject);
	bind_opt_text(s, 6, r->subject_nick);
	db_bind_int64(s, 7, r->subject_at);
	db_bind_int64(s, 8, r->max_users);
	db_bind_int64(s, 9, r->history_len);
	db_bind_text(s, 10, muc_allow_pm_name(r->allow_pm), -1);
	db_bind_int(s, 11, r->public_room);
	db_bind_int(s, 12, r->members_only);
	db_bind_int(s, 13, r->moderated);
	db_bind_int(s, 14, r->non_anonymous);
	db_bind_int(s, 15, r->change_subject);
	db_bind_int(s, 16, r->allow_invites);
	db_bind_int(s, 17, r->archive);
	db_bind_int64(s, 18, (int64_t)time(NULL));
	ret = storage_stmt_exec(st, "muc.room_put", s);
	if (ret < 0)
		return ret;
	/* The list is written whole: rooms change it rarely and it is small. */
	s = storage_stmt(st, sql_affs_clear);
	if (!s)
		return -EIO;
	db_bind_text(s, 1, r->name, -1);
	ret = storage_stmt_exec(st, "muc.affiliations_clear", s);
	for (size_t i = 0; ret == 0 && i < naff; i++) {
		s = storage_stmt(st, sql_aff_put);
		if (!s)
			return -EIO;
		db_bind_text(s, 1, r->name, -1);
		db_bind_text(s, 2, affs[i].jid, -1);
		db_bind_text(s, 3, muc_affiliation_name(affs[i].aff), -1);
		bind_opt_text(s, 4, affs[i].nick);
		ret = storage_stmt_exec(st, "muc.affiliation_put", s);
	}
	return ret;
}

/* A statement taking the room name only, run for its effect. */
static int room_exec(struct storage *st, const char *sql, const char *op, const char *room)
{
	struct db_stmt *s = storage_stmt(st, sql);

	if (!s)
		return -EIO;
	db_bind_text(s, 1, room, -1);
	return storage_stmt_exec(st, op, s);
}

int muc_db_room_delete(struct storage *st, const char *name, bool with_archive)
{
	int ret = room_exec(st, sql_affs_clear, "muc.affiliations_clear", name);

	if (ret == 0)
		ret = room_exec(st, sql_room_delete, "muc.room_delete", name);
	if (ret == 0 && with_archive)
		ret = room_exec(st, sql_archive_delete, "muc.archive_delete", name);
	return ret;
}

int muc_db_archive_delete(struct storage *st, const char *room)
{
	return room_exec(st, sql_archive_delete, "muc.archive_delete", room);
}

int muc_db_archive_put(struct storage *st, const char *room, const struct muc_archive_row *m,
		       const char *real_bare, uint32_t keep)
{
	struct db_stmt *s = storage_stmt(st, sql_archive_put);
	int rc, ret;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, room, -1);
	db_bind_text(s, 2, m->stanza_id, -1);
	db_bind_text(s, 3, m->nick, -1);
	db_bind_text(s, 4, m->real_jid, -1);
	db_bind_text(s, 5, real_bare, -1);
	db_bind_int64(s, 6, m->at);
	db_bind_text(s, 7, m->stanza, (int)m->stanza_len);
	rc = db_step(s);
	storage_stmt_release(s);
	/* The unique (room, stanza_id) index: an id can only be used once. */
	if (rc == -EEXIST)
		return -EEXIST;
	if (rc != DB_DONE)
		return storage_db_error(st, "muc.archive_put", rc);
	/* Retention by count: the oldest go, never a hole (XEP-0313 3.2). */
	s = storage_stmt(st, sql_archive_prune);
	if (!s)
		return -EIO;
	db_bind_text(s, 1, room, -1);
	db_bind_int64(s, 2, keep);
	ret = storage_stmt_exec(st, "muc.archive_prune", s);
	return ret;
}

int muc_db_archive_seq(struct storage *st, const char *room, const char *stanza_id,
		       int64_t *seq)
{
	struct db_stmt *s = storage_stmt(st, sql_archive_seq);
	int rc;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, room, -1);
	db_bind_text(s, 2, stanza_id, -1);
	rc = db_step(s);
	if (rc == DB_ROW)
		*seq = db_column_int64(s, 0);
	storage_stmt_release(s);
	if (rc == DB_ROW)
		return 0;
	if (rc == DB_DONE)
		return -ENOENT;
	return storage_db_error(st, "muc.archive_seq", rc);
}

/* Binds ?1..?7 of ARCHIVE_WHERE. */
static void bind_filter(struct db_stmt *s, const char *room, const struct muc_archive_filter *f)
{
	db_bind_text(s, 1, room, -1);
	db_bind_int64(s, 2, f->lo);
	db_bind_int64(s, 3, f->hi);
	db_bind_int64(s, 4, f->start);
	db_bind_int64(s, 5, f->end);
	bind_opt_text(s, 6, f->with_bare);
	bind_opt_text(s, 7, f->with_nick);
}

/* Calls fn for each row of a statement selecting the archive columns. */
static int archive_rows(struct storage *st, struct db_stmt *s,
			int (*fn)(void *arg, const struct muc_archive_row *m), void *arg)
{
	int rc, ret = 0;

	while ((rc = db_step(s)) == DB_ROW) {
		struct muc_archive_row m = {
			.seq = db_column_int64(s, 0),
			.at = db_column_int64(s, 1),
			.stanza_id = col_text(s, 2),
			.nick = col_text(s, 3),
			.real_jid = col_text(s, 4),
			.stanza = col_text(s, 5),
			.stanza_len = (size_t)db_column_bytes(s, 5),
		};

		if (!m.stanza_id || !m.nick || !m.real_jid || !m.stanza)
			continue;
		ret = fn(arg, &m);
		if (ret != 0)
			break;
	}
	storage_stmt_release(s);
	if (ret < 0)
		return ret;
	if (rc != DB_DONE && rc != DB_ROW)
		return storage_db_error(st, "muc.archive_query", rc);
	return 0;
}

int muc_db_archive_query(struct storage *st, const char *room,
			 const struct muc_archive_filter *f, bool backward, uint32_t limit,
			 int (*fn)(void *arg, const struct muc_archive_row *m), void *arg)
{
	struct db_stmt *s = storage_stmt(st, backward ? sql_archive_back : sql_archive_fwd);

	if (!s)
		return -EIO;
	bind_filter(s, room, f);
	db_bind_int64(s, 8, limit);
	return archive_rows(st, s, fn, arg);
}

int muc_db_archive_count(struct storage *st, const char *room,
			 const struct muc_archive_filter *f, uint64_t *out)
{
	struct db_stmt *s = storage_stmt(st, sql_archive_count);
	int rc;

	if (!s)
		return -EIO;
	bind_filter(s, room, f);
	rc = db_step(s);
	*out = rc == DB_ROW ? (uint64_t)db_column_int64(s, 0) : 0;
	storage_stmt_release(s);
	if (rc != DB_ROW)
		return storage_db_error(st, "muc.archive_count", rc);
	return 0;
}

int muc_db_archive_get(struct storage *st, const char *room, const char *stanza_id,
		       int (*fn)(void *arg, const struct muc_archive_row *m), void *arg)
{
	struct db_stmt *s = storage_stmt(st, sql_archive_get);

	if (!s)
		return -EIO;
	db_bind_text(s, 1, room, -1);
	db_bind_text(s, 2, stanza_id, -1);
	return archive_rows(st, s, fn, arg);
}
