/* SPDX-License-Identifier: MIT */
/*
 * For the SQLite side of feature modules (storage_sqlite_<feature>.c):
 * each feature keeps its statements as static SQL strings and gets them
 * prepared once and cached by the store. Every call runs on the storage
 * thread (or in stanzactl), inside the caller's batch when there is one.
 *
 * Pattern:
 *   static const char sql_get[] = "SELECT ... WHERE username = ?1";
 *   sqlite3_stmt *s = storage_sqlite_stmt(st, sql_get);
 *   if (!s) return -EIO;
 *   bind, step, read columns;
 *   storage_sqlite_release(s);
 */
#ifndef STANZAD_STORAGE_SQLITE_H
#define STANZAD_STORAGE_SQLITE_H

#include <sqlite3.h>

struct storage;

sqlite3 *storage_sqlite_db(struct storage *st);
/* The prepared statement for `sql` (keyed by its address), or NULL (logged). */
sqlite3_stmt *storage_sqlite_stmt(struct storage *st, const char *sql);
/* Resets a statement and clears its bindings after use. */
void storage_sqlite_release(sqlite3_stmt *s);
/* Logs a failed step and maps it to -EBUSY or -EIO. */
int storage_sqlite_error(struct storage *st, const char *op, int rc);
/* Steps a statement that returns no rows, then releases it. 0 or -errno. */
int storage_sqlite_exec(struct storage *st, const char *op, sqlite3_stmt *s);

#endif
