/* SPDX-License-Identifier: MIT */
/*
 * For the SQL side of feature modules (storage_<feature>.c): each feature
 * keeps its statements as static SQL strings in the dialect db.h
 * describes, and gets them prepared once and cached by the store, on
 * SQLite or PostgreSQL alike. Every call runs on the storage thread (or in
 * stanzactl), inside the caller's batch when there is one.
 *
 * Pattern:
 *   static const char sql_get[] = "SELECT ... WHERE username = ?1";
 *   struct db_stmt *s = storage_stmt(st, sql_get);
 *   if (!s) return -EIO;
 *   bind, step, read columns;
 *   storage_stmt_release(s);
 */
#ifndef STANZAD_STORAGE_DB_H
#define STANZAD_STORAGE_DB_H

#include "db.h"

struct storage;

struct db *storage_db(struct storage *st);
/*
 * True on PostgreSQL, for the few statements only it needs: row locks
 * (SELECT ... FOR UPDATE) where another node sharing the database may
 * write the same rows at once. SQLite needs none: a batch holds the
 * database's write lock from its BEGIN.
 */
bool storage_on_pg(struct storage *st);
struct sqlite3;
/* The SQLite connection under the store, NULL on PostgreSQL (for tests). */
struct sqlite3 *storage_sqlite_db(struct storage *st);
/* The prepared statement for `sql` (keyed by its address), or NULL (logged). */
struct db_stmt *storage_stmt(struct storage *st, const char *sql);
/* Resets a statement and clears its bindings after use. */
void storage_stmt_release(struct db_stmt *s);
/*
 * Logs a failed step (rc from db_step) and maps it: -EBUSY stays, a lost
 * connection is -EIO without a line per request (db_pg.c logs the
 * outage once), anything else is logged and -EIO.
 */
int storage_db_error(struct storage *st, const char *op, int rc);
/* Steps a statement that returns no rows, then releases it. 0 or -errno. */
int storage_stmt_exec(struct storage *st, const char *op, struct db_stmt *s);

#endif
