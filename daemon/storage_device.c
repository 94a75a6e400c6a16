/* SPDX-License-Identifier: MIT */
/*
 * Enrolled devices and their certificate fingerprints in the store (tables
 * devices and device_certs of the "devices" migration). Runs on the
 * storage thread or in stanzactl, inside the caller's batch.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "device.h"
#include "log.h"
#include "storage_db.h"

static const char sql_get[] = "SELECT tags, owner, jid FROM devices WHERE username = ?1";
static const char sql_put[] =
	"INSERT INTO devices (username, jid, tags, owner, enrolled_at, updated_at)"
	" VALUES (?1, ?5, ?2, ?3, ?4, ?4)"
	" ON CONFLICT (username) DO UPDATE SET jid = ?5, tags = ?2, owner = ?3, updated_at = ?4";
static const char sql_cert_find[] =
	"SELECT username, revoked FROM device_certs WHERE fingerprint = ?1";
static const char sql_cert_drop_others[] =
	"DELETE FROM device_certs WHERE username = ?1 AND revoked = 0 AND fingerprint <> ?2";
static const char sql_cert_insert[] =
	"INSERT INTO device_certs (fingerprint, username, created_at) VALUES (?1, ?2, ?3)"
	" ON CONFLICT (fingerprint) DO NOTHING";
static const char sql_cert_current[] =
	"SELECT 1 FROM device_certs WHERE username = ?1 AND fingerprint = ?2 AND revoked = 0";
static const char sql_cert_revoke[] =
	"UPDATE device_certs SET revoked = 1 WHERE fingerprint = ?1";
static const char sql_list[] =
	"SELECT d.username, d.tags, d.owner, coalesce(l.logout_at, 0), d.jid,"
	" (SELECT count(*) FROM device_certs c WHERE c.username = d.username AND c.revoked = 0),"
	" (SELECT count(*) FROM device_certs c WHERE c.username = d.username AND c.revoked = 1)"
	" FROM devices d LEFT JOIN last_activity l ON l.username = d.username"
	" ORDER BY d.username";

/* Copies a text column (NULL as "") into a buffer, truncating. */
static void device_copy_col(struct db_stmt *s, int col, char *out, size_t size)
{
	const char *v = (const char *)db_column_text(s, col);

	if (size)
		snprintf(out, size, "%s", v ? v : "");
}

int device_db_get(struct storage *st, const char *user, char *jid, size_t jid_size, char *tags,
		  size_t tags_size, char *owner, size_t owner_size)
{
	struct db_stmt *s = storage_stmt(st, sql_get);
	int rc, ret = -ENOENT;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	rc = db_step(s);
	if (rc == DB_ROW) {
		device_copy_col(s, 0, tags, tags_size);
		device_copy_col(s, 1, owner, owner_size);
		device_copy_col(s, 2, jid, jid_size);
		ret = 0;
	} else if (rc != DB_DONE) {
		ret = storage_db_error(st, "device.get", rc);
	}
	storage_stmt_release(s);
	return ret;
}

int device_db_put(struct storage *st, const char *user, const char *jid, const char *tags,
		  const char *owner, int64_t now)
{
	struct db_stmt *s = storage_stmt(st, sql_put);

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_text(s, 2, tags ? tags : "", -1);
	if (owner && owner[0])
		db_bind_text(s, 3, owner, -1);
	else
		db_bind_null(s, 3);
	db_bind_int64(s, 4, now);
	db_bind_text(s, 5, jid, -1);
	return storage_stmt_exec(st, "device.put", s);
}

int device_db_cert_find(struct storage *st, const uint8_t fp[TLS_FINGERPRINT_LEN], char *user,
			size_t user_size, bool *revoked)
{
	struct db_stmt *s = storage_stmt(st, sql_cert_find);
	int rc, ret = -ENOENT;

	*revoked = false;
	if (user_size)
		user[0] = '\0';
	if (!s)
		return -EIO;
	db_bind_blob(s, 1, fp, TLS_FINGERPRINT_LEN);
	rc = db_step(s);
	if (rc == DB_ROW) {
		device_copy_col(s, 0, user, user_size);
		*revoked = db_column_int(s, 1) != 0;
		ret = 0;
	} else if (rc != DB_DONE) {
		ret = storage_db_error(st, "device.cert_find", rc);
	}
	storage_stmt_release(s);
	return ret;
}

int device_db_cert_set(struct storage *st, const char *user,
		       const uint8_t fp[TLS_FINGERPRINT_LEN], int64_t now)
{
	struct db_stmt *s = storage_stmt(st, sql_cert_drop_others);
	int ret;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_blob(s, 2, fp, TLS_FINGERPRINT_LEN);
	ret = storage_stmt_exec(st, "device.cert_drop", s);
	if (ret < 0)
		return ret;
	s = storage_stmt(st, sql_cert_insert);
	if (!s)
		return -EIO;
	db_bind_blob(s, 1, fp, TLS_FINGERPRINT_LEN);
	db_bind_text(s, 2, user, -1);
	db_bind_int64(s, 3, now);
	return storage_stmt_exec(st, "device.cert_insert", s);
}

int device_db_cert_is_current(struct storage *st, const char *user,
			      const uint8_t fp[TLS_FINGERPRINT_LEN])
{
	struct db_stmt *s = storage_stmt(st, sql_cert_current);
	int rc, ret;

	if (!s)
		return -EIO;
	db_bind_text(s, 1, user, -1);
	db_bind_blob(s, 2, fp, TLS_FINGERPRINT_LEN);
	rc = db_step(s);
	if (rc == DB_ROW)
		ret = 0;
	else if (rc == DB_DONE)
		ret = -ENOENT;
	else
		ret = storage_db_error(st, "device.cert_current", rc);
	storage_stmt_release(s);
	return ret;
}

int device_db_cert_revoke(struct storage *st, const uint8_t fp[TLS_FINGERPRINT_LEN])
{
	struct db_stmt *s = storage_stmt(st, sql_cert_revoke);
	int ret;

	if (!s)
		return -EIO;
	db_bind_blob(s, 1, fp, TLS_FINGERPRINT_LEN);
	ret = storage_stmt_exec(st, "device.cert_revoke", s);
	if (ret < 0)
		return ret;
	return db_changes(storage_db(st)) > 0 ? 0 : -ENOENT;
}

int device_db_list(struct storage *st, int (*fn)(void *arg, const struct device_row *r),
		   void *arg)
{
	struct db_stmt *s = storage_stmt(st, sql_list);
	struct device_row r;
	int rc, ret;

	if (!s)
		return -EIO;
	while ((rc = db_step(s)) == DB_ROW) {
		r.user = (const char *)db_column_text(s, 0);
		r.tags = (const char *)db_column_text(s, 1);
		r.owner = (const char *)db_column_text(s, 2);
		r.logout_at = db_column_int64(s, 3);
		r.jid = (const char *)db_column_text(s, 4);
		r.certs = (unsigned)db_column_int(s, 5);
		r.revoked = (unsigned)db_column_int(s, 6);
		if (!r.user || !r.jid)
			continue;
		if (!r.tags)
			r.tags = "";
		if (fn(arg, &r) != 0) {
			rc = DB_DONE;
			break;
		}
	}
	ret = rc == DB_DONE ? 0 : storage_db_error(st, "device.list", rc);
	storage_stmt_release(s);
	return ret;
}
