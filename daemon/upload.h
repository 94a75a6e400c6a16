/* SPDX-License-Identifier: MIT */
/*
 * HTTP File Upload (XEP-0363) at upload.DOMAIN, served by the HTTP
 * listener (http.c).
 *
 * Slot request (iq get <request filename size content-type/>): the size
 * is checked against upload_max_bytes (not-acceptable with
 * <file-too-large><max-file-size/></file-too-large>), the type against
 * upload_allowed_types, and on the storage thread the account's files and
 * open slots against upload_quota_bytes (resource-constraint); then a row
 * is written (state 'pending') and the answer carries
 *   PUT and GET BASE/upload/TOKEN/NAME
 * where TOKEN is 128 random bits (the only credential: it is never
 * logged) and NAME the percent-encoded file name.
 *
 * PUT: the slot must be open (upload_slot_timeout after the request:
 * 403 once expired, 404 unknown, 409 when already uploaded or being
 * uploaded), Content-Length must equal the declared size (413 above it,
 * 400 below, 411 missing) and Content-Type the declared type (415). The
 * body goes to STATE_DIR/upload/TOKEN.part; when complete the storage
 * thread fsyncs it, renames it to STATE_DIR/upload/TOKEN, fsyncs the
 * directory and marks the row 'done' in the same transaction; then 201.
 *
 * GET/HEAD: the row is looked up on the storage thread (404 unless done
 * and the name matches); the file is streamed with its Content-Type and
 * Content-Length, and headers that keep a browser from running it in the
 * server's origin (Content-Security-Policy, nosniff). OPTIONS answers
 * CORS preflights.
 *
 * Open slots live in memory (a process-wide table under a mutex): a slot
 * not used before a restart is void, and its row is removed at startup.
 * The cleanup (at startup and hourly, on worker 0, on the storage thread)
 * deletes files upload_expire_days after their upload, rows of slots that
 * were never used, and files no row refers to (an account was deleted).
 */
#ifndef STANZAD_UPLOAD_H
#define STANZAD_UPLOAD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xml.h"

struct config;
struct conn;
struct http_request;
struct http_server;
struct jid;
struct storage;
struct worker;

#define NS_UPLOAD		"urn:xmpp:http:upload:0"
#define UPLOAD_TOKEN_LEN	32		/* hex characters */
#define UPLOAD_FILENAME_MAX	255		/* bytes of a file name */
#define UPLOAD_TYPE_MAX		127		/* bytes of a content type */
#define UPLOAD_MAX_SLOTS	4096		/* open slots in memory, all accounts */
#define UPLOAD_CLEANUP_MS	(3600 * 1000)	/* the periodic cleanup */
#define UPLOAD_PENDING_GRACE	3600		/* s: a slot row outlives its timeout by this */
#define UPLOAD_PATH_PREFIX	"/upload/"

/* ---- Pure helpers (unit-tested) ---- */

/* Appends s percent-encoded (RFC 3986: everything but unreserved). */
struct strbuf;
void upload_url_encode(struct strbuf *b, const char *s, size_t len);

/* A file name a slot may have: 1..UPLOAD_FILENAME_MAX bytes, no controls, not "." or "..". */
bool upload_filename_ok(const char *name);

/* A content type: "type/subtype[; params]" of printable ASCII, at most UPLOAD_TYPE_MAX. */
bool upload_type_ok(const char *type);

/*
 * Whether `type` is in the allowed list (exact, case-insensitive, or a
 * "family/" + "*" entry; parameters are ignored). An empty list allows all.
 */
bool upload_type_allowed(const char *type, char *const *allowed, unsigned n);

/*
 * Splits "/upload/TOKEN/NAME" (path as sent): token is checked (32 lower
 * hex), NAME percent-decoded into name. 0 or -EINVAL.
 */
int upload_parse_path(const char *path, char token[UPLOAD_TOKEN_LEN + 1],
		      char *name, size_t name_size);

/* ---- The service ---- */

/* The process-wide state; `dir` is created (0700). NULL with errno set. */
struct upload_state *upload_state_new(const struct config *cfg);
void upload_state_free(struct upload_state *us);

/* service.c: whether upload.DOMAIN runs. */
bool upload_enabled(const struct config *cfg);

/* service.c: a stanza for upload.DOMAIN. */
void upload_route(struct worker *w, struct conn *src, struct xml_node *st,
		  const struct jid *from, const struct jid *to);

/* http.c: a request under /upload/. */
void upload_http(struct http_request *rq);

/* Worker 0 runs the cleanup now and then every UPLOAD_CLEANUP_MS. */
void upload_worker_start(struct worker *w);
void upload_worker_stop(struct worker *w);

/* ---- SQL (storage_upload.c), on the storage thread ---- */

/* Bytes of an account's files and open slots. 0 or -EIO. */
int storage_upload_usage(struct storage *st, const char *user, uint64_t *bytes);
/* A new slot row ('pending'). 0, -EEXIST or -EIO. */
int storage_upload_add(struct storage *st, const char *user, const char *token,
		       const char *filename, uint64_t size, const char *type, int64_t now);
/* Marks a slot uploaded with its final type. 0, -ENOENT or -EIO. */
int storage_upload_done(struct storage *st, const char *token, const char *type, int64_t now);
/*
 * A file's metadata. 0, -ENOENT (no row, or not uploaded) or -EIO.
 * name/type are written NUL-terminated, truncated to their sizes.
 */
int storage_upload_get(struct storage *st, const char *token, char *name, size_t name_size,
		       uint64_t *size, char *type, size_t type_size);
/* Deletes one row. 0 or -EIO. */
int storage_upload_delete(struct storage *st, const char *token);
/*
 * Calls fn for each expired row: 'done' rows uploaded before done_before
 * (0: none), 'pending' rows created before pending_before. Stops at a
 * nonzero return. 0 or -EIO.
 */
int storage_upload_expired(struct storage *st, int64_t done_before, int64_t pending_before,
			   int (*fn)(void *arg, const char *token), void *arg);
/* 1 when a row (any state) has this token, 0 when none, -EIO. */
int storage_upload_exists(struct storage *st, const char *token);

#endif
