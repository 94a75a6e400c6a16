/* SPDX-License-Identifier: MIT */
/*
 * Storage: accounts now, and rosters, offline messages, archives, pubsub
 * and the registry as features land, behind one interface.
 *
 * Two layers:
 *  - the synchronous store (struct storage): open, migrate, and one call
 *    per operation. The embedded backend is SQLite in WAL mode with
 *    synchronous=FULL under the state directory; PostgreSQL is the shared
 *    one (storage_open_at). Both run the same SQL (db.h). stanzactl uses
 *    this layer directly.
 *  - the asynchronous queue (struct storage_queue): one thread owns a
 *    store; event-loop workers submit requests and get completions back in
 *    their inbox (an eventfd the loop watches). The thread takes every
 *    pending request at once and runs them in one transaction (group
 *    commit), so a burst of writes costs one fsync.
 *
 * Usernames are normalized localparts (see jid_prep_local).
 */
#ifndef STANZAD_STORAGE_H
#define STANZAD_STORAGE_H

#include <pthread.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "scram.h"

#define STORAGE_DB_FILE "stanzad.db"

/* Group commit of lazy requests: wait at most this long, or this many. */
#define STORAGE_LINGER_MS	5
#define STORAGE_LINGER_MAX	512
/* Where stanzad and stanzactl keep state unless told otherwise. */
#define STORAGE_DEFAULT_STATE_DIR "/var/lib/stanzad"
/* Longest username in bytes (a normalized localpart, see JID_PART_MAX). */
#define STORAGE_USER_MAX 1023
/* How long a call waits for another process (stanzactl) holding the lock. */
#define STORAGE_BUSY_TIMEOUT_MS 5000

struct storage;

/* ---- Synchronous store ---- */

/*
 * Opens (creating if needed) the store under state_dir, migrating the
 * schema to the current version. Returns 0 or -errno; on failure a log
 * line says why (unreadable directory, newer schema, corrupt file).
 *
 * The state directory is created 0700 when missing, the database file
 * 0600; a directory writable by others or a database file writable by
 * group or others is refused (-EPERM). Notable errors: -EPROTO (the schema
 * is newer than this build), -EBADMSG (not a stanzad database), -EBUSY
 * (locked by another process for longer than STORAGE_BUSY_TIMEOUT_MS).
 *
 * A struct storage is used by one thread at a time.
 */
int storage_open(struct storage **out, const char *state_dir);
/*
 * As storage_open, but instead of logging the reason for a failure, writes
 * it as one line naming the path into why (for stanzactl). why may be NULL.
 */
int storage_open_why(struct storage **out, const char *state_dir, char *why,
		     size_t why_size);
/*
 * Opens the store that a `storage` setting names: "sqlite" or NULL, the
 * SQLite file under state_dir (as storage_open_why); a postgresql:// or
 * postgres:// URI (libpq syntax), that database, created tables and all
 * when empty. Errors as storage_open_why, and for PostgreSQL
 * -ECONNREFUSED (no connection: why says libpq's reason), -EBADMSG (the
 * database has tables but is not stanzad's), -EPROTO (newer schema).
 * Messages and log lines show the URI with its password masked.
 */
int storage_open_at(struct storage **out, const char *storage, const char *state_dir,
		    char *why, size_t why_size);
void storage_close(struct storage *st);
/* Replaces STORAGE_BUSY_TIMEOUT_MS for this store (before a queue owns it). */
void storage_set_busy_timeout(struct storage *st, int ms);
/*
 * True while the PostgreSQL server is unreachable: calls fail with -EIO
 * until a batch can begin again (storage_begin reconnects).
 */
bool storage_down(struct storage *st);
/* Schema version the store is at. */
int storage_schema_version(struct storage *st);
/* Schema version this build migrates to (the newest it knows). */
int storage_schema_latest(void);

/*
 * Accounts. `user` is a normalized localpart of 1..STORAGE_USER_MAX bytes;
 * anything else gives -EINVAL, as do credentials with an iteration count
 * outside 1..SCRAM_ITERATIONS_MAX. Any call may also give -EBUSY when
 * another process held the write lock for longer than
 * STORAGE_BUSY_TIMEOUT_MS.
 */
/* 0, -ENOENT (no such account) or -EIO. */
int storage_account_get(struct storage *st, const char *user, struct scram_creds *out);
/* 0, -EEXIST or -EIO. */
int storage_account_create(struct storage *st, const char *user, const struct scram_creds *c);
/* 0, -ENOENT or -EIO. */
int storage_account_set_creds(struct storage *st, const char *user, const struct scram_creds *c);
/* Deletes the account and everything it owns. 0, -ENOENT or -EIO. */
int storage_account_delete(struct storage *st, const char *user);
/*
 * Calls fn for each username in byte order; stops early if fn returns
 * nonzero. 0 or -EIO. fn may call the other storage functions, but not
 * storage_account_list itself (-EBUSY).
 */
int storage_account_list(struct storage *st, int (*fn)(void *arg, const char *user), void *arg);

/*
 * Group commit around a batch of calls. 0, -EBUSY or -EIO. storage_begin
 * takes the write lock at once (BEGIN IMMEDIATE), so a batch never fails
 * half-way because another process wrote in between. Without a batch,
 * each call is its own transaction.
 */
int storage_begin(struct storage *st);
int storage_commit(struct storage *st);
/*
 * Harmless when no transaction is open (SQLite may have ended it on error;
 * a PostgreSQL connection may have gone with it).
 */
void storage_rollback(struct storage *st);
/* True while a batch is open (false again if SQLite rolled it back itself). */
bool storage_in_batch(struct storage *st);

/*
 * One nesting level inside a batch, so that one failing call can be undone
 * without losing the rest of the batch: savepoint, the calls, then either
 * release (keep) or undo (discard; the savepoint is released too). 0,
 * -EBUSY or -EIO.
 */
int storage_savepoint(struct storage *st);
int storage_savepoint_release(struct storage *st);
int storage_savepoint_undo(struct storage *st);

/*
 * A 32-byte secret shared by every process serving this store, by name:
 * read, or made at random and stored by the first to ask (nodes of a
 * cluster on one PostgreSQL database get the same one). 0 or -errno.
 */
int storage_shared_secret(struct storage *st, const char *name, uint8_t out[32]);

/* ---- Asynchronous queue ---- */

enum storage_op {
	STORAGE_OP_ACCOUNT_GET = 1,	/* user -> creds */
	STORAGE_OP_ACCOUNT_VERIFY_PLAIN,/* user, password -> creds, plain_ok */
	STORAGE_OP_ACCOUNT_CREATE,	/* user, password -> (creds derived off-loop) */
	STORAGE_OP_ACCOUNT_SET_PASSWORD,/* user, password */
	STORAGE_OP_ACCOUNT_DELETE,	/* user */
	STORAGE_OP_RUN,			/* req->run(st, req): a feature's own statements */
};

struct storage_inbox;

/*
 * One request. The submitter owns the memory and must keep it alive until
 * `done` runs on the submitting worker's thread. The password, when
 * present, is wiped by the storage thread as soon as it is used.
 */
struct storage_req {
	struct storage_req *next;		/* queue link, private */
	enum storage_op op;
	int result;				/* 0 or -errno, set before done */
	struct storage_inbox *inbox;		/* where the completion goes */
	void (*done)(struct storage_req *req);	/* runs on the inbox's thread */
	void *arg;				/* for the submitter */
	uint32_t slot, gen;			/* for the submitter: its connection */
	/*
	 * STORAGE_OP_RUN: runs on the storage thread inside the batch's
	 * transaction (in its own savepoint: a negative return undoes only
	 * this request). Feature modules embed storage_req first in a struct
	 * of their own and keep inputs and outputs there. Returns 0 or -errno.
	 */
	int (*run)(struct storage *st, struct storage_req *req);
	/*
	 * Nobody waits for this request's answer soon (an archive write):
	 * the storage thread may hold a batch of lazy requests back for up
	 * to STORAGE_LINGER_MS so one commit covers many.
	 */
	bool lazy;
	uint64_t submit_ns;			/* private: CLOCK_MONOTONIC at submission (metrics) */

	char user[STORAGE_USER_MAX + 1];	/* NUL-terminated, normalized */
	char password[SCRAM_PASSWORD_MAX + 1];	/* ACCOUNT_VERIFY_PLAIN/CREATE/SET_PASSWORD */
	/*
	 * out: ACCOUNT_GET/VERIFY_PLAIN: the stored credentials;
	 * ACCOUNT_CREATE/SET_PASSWORD: the credentials derived and stored.
	 */
	struct scram_creds creds;
	bool plain_ok;				/* out: ACCOUNT_VERIFY_PLAIN */
};

/*
 * A worker's completion inbox: completions are appended under a mutex and
 * the eventfd is signalled; the worker's loop watches the eventfd and calls
 * storage_inbox_drain().
 */
struct storage_inbox {
	pthread_mutex_t lock;
	struct storage_req *head, *tail;
	int eventfd;
};

/* 0 or -errno (eventfd creation failed). */
int storage_inbox_init(struct storage_inbox *in);
/* The owner drains first: completions still queued are not run. */
void storage_inbox_destroy(struct storage_inbox *in);
/*
 * Runs `done` of every completed request, in completion order, on the
 * calling thread, and resets the eventfd. `done` may free or resubmit its
 * request. Returns how many ran.
 */
size_t storage_inbox_drain(struct storage_inbox *in);

/*
 * Posts a completion from any thread, as the storage thread does: `done`
 * runs on the inbox's thread (for other off-loop work: the s2s resolver).
 */
void storage_inbox_post(struct storage_req *req);

struct storage_queue;

/*
 * Starts the storage thread on an open store, which it then owns. 0 or
 * -errno; on failure the caller still owns (and closes) the store.
 */
int storage_queue_start(struct storage_queue **out, struct storage *st);
/*
 * Hands a request to the storage thread. Never blocks on I/O. Results:
 *  ACCOUNT_GET:          0, -ENOENT, -EIO
 *  ACCOUNT_VERIFY_PLAIN: 0 (then see plain_ok), -ENOENT, -EIO; an unknown
 *                        account costs the same PBKDF2 time as a known one
 *  ACCOUNT_CREATE:       0, -EEXIST, -EINVAL (SASLprep refused the password)
 *  ACCOUNT_SET_PASSWORD: 0, -ENOENT, -EINVAL
 *  ACCOUNT_DELETE:       0, -ENOENT
 * and -EINVAL for a malformed request, -EIO for a storage failure, -EBUSY
 * when another process (stanzactl) kept the store locked too long. A
 * request with no inbox has `done` run on the storage thread. A request
 * submitted while storage_queue_stop runs, or after it (q NULL: the last
 * steps of a shutdown), completes with -ESHUTDOWN.
 */
void storage_queue_submit(struct storage_queue *q, struct storage_req *req);
/*
 * Finishes queued requests, stops the thread, closes the store. Their
 * completions are posted to their inboxes, so call this before destroying
 * the inboxes requests were submitted with, then drain those.
 */
void storage_queue_stop(struct storage_queue *q);

/* Counters for metrics and tests; read under the queue lock. */
struct storage_queue_stats {
	uint64_t requests;	/* taken by the storage thread */
	uint64_t batches;	/* times the thread took the pending list */
	uint64_t commits;	/* batch transactions committed */
	uint64_t fallbacks;	/* batches redone one request at a time */
	uint64_t failures;	/* requests completed with -EIO or -EBUSY */
	uint64_t queued;	/* requests waiting for the thread right now */
};

void storage_queue_get_stats(struct storage_queue *q, struct storage_queue_stats *out);

/*
 * Requests submitted so far (a counter that only grows, read without the
 * lock): comparing two readings tells whether anything was submitted in
 * between (durable.c).
 */
uint64_t storage_queue_submitted(struct storage_queue *q);
/* Requests failed with -EIO or -EBUSY so far (stats.failures, without the lock). */
uint64_t storage_queue_failed(struct storage_queue *q);

struct metrics_hist;
/*
 * Adds the latency histogram (submission to completion, ns, buckets of
 * metrics_storage_bounds) into *out; callable from any thread.
 */
void storage_queue_get_latency(struct storage_queue *q, struct metrics_hist *out);

#endif
