/* SPDX-License-Identifier: MIT */
/*
 * The asynchronous storage layer: one thread owns the store, event-loop
 * workers hand it requests and get completions back in their inbox.
 *
 * A batch is everything pending when the thread wakes. It runs in phases:
 *  1. prepare, outside any transaction: validate, and derive SCRAM keys
 *     for CREATE/SET_PASSWORD (PBKDF2 takes milliseconds and must not hold
 *     the write lock stanzactl may be waiting for);
 *  2. apply, in one transaction, each request inside its own savepoint so
 *     that one failing request (a duplicate account) is undone alone;
 *  3. commit: one fsync for the whole batch (group commit). If the batch
 *     transaction itself fails (disk full, lock timeout), each request is
 *     applied again alone in its own transaction, so a bad one cannot take
 *     the others down;
 *  4. complete: post completions; VERIFY_PLAIN runs its PBKDF2 only now,
 *     after the cheap completions have gone out.
 * While the thread commits, new requests pile up and form the next batch,
 * so the number of fsyncs adapts to the load.
 */
#include <errno.h>
#include <stdatomic.h>
#include <time.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/random.h>
#include <unistd.h>

#include "log.h"
#include "metrics.h"
#include "storage.h"
#include "storage_db.h"

/* A request still to be applied (results are 0 or -errno). */
#define REQ_PENDING 1
/*
 * Times a batch waits out the busy timeout for another process's write
 * lock before its requests fail with -EBUSY. stanzactl's transactions are
 * short, so a lock held this long means something is stuck.
 */
#define STORAGE_QUEUE_BUSY_TRIES 3

struct storage_queue {
	struct storage *st;		/* owned by the thread */
	pthread_t thread;

	pthread_mutex_t lock;		/* protects everything below */
	pthread_cond_t wake;
	struct storage_req *head, *tail;
	bool stopping;			/* storage_queue_stop was called */
	bool all_lazy;			/* every queued request may wait (see linger) */
	unsigned queued;		/* requests in head..tail */
	bool exited;			/* the thread took its last batch */
	struct storage_queue_stats stats;
	/* Requests ever submitted; read without the lock (storage_queue_submitted). */
	_Atomic uint64_t submitted;
	/* Requests failed with -EIO or -EBUSY; the lock-free copy of stats.failures. */
	_Atomic uint64_t failed;
	/* Written by the storage thread only, read by scrapes (metrics.h). */
	struct metrics_hist latency;

	/* Key for decoy credentials of unknown accounts (VERIFY_PLAIN). */
	uint8_t decoy_secret[32];
};

/* A singly linked list of requests, kept in submission order. */
struct req_list {
	struct storage_req *head, *tail;
};

static void req_list_add(struct req_list *l, struct storage_req *req)
{
	req->next = NULL;
	if (l->tail)
		l->tail->next = req;
	else
		l->head = req;
	l->tail = req;
}

static uint64_t storage_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

/* ---- Inbox ---- */

int storage_inbox_init(struct storage_inbox *in)
{
	int ret;

	in->head = in->tail = NULL;
	in->eventfd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
	if (in->eventfd < 0)
		return -errno;
	ret = pthread_mutex_init(&in->lock, NULL);
	if (ret) {
		close(in->eventfd);
		in->eventfd = -1;
		return -ret;
	}
	return 0;
}

void storage_inbox_destroy(struct storage_inbox *in)
{
	if (in->eventfd >= 0)
		close(in->eventfd);
	in->eventfd = -1;
	pthread_mutex_destroy(&in->lock);
}

/*
 * Appends a completion and wakes the inbox's owner. The eventfd is written
 * only when the list was empty: the drainer resets the counter before it
 * takes the list, so every completion that lands after that take finds an
 * empty list and signals again. A batch of completions costs one write.
 */
static void inbox_post(struct storage_req *req)
{
	struct storage_inbox *in = req->inbox;
	static const uint64_t one = 1;
	bool was_empty;

	if (!in) {
		req->done(req);
		return;
	}
	req->next = NULL;
	pthread_mutex_lock(&in->lock);
	was_empty = in->head == NULL;
	if (in->tail)
		in->tail->next = req;
	else
		in->head = req;
	in->tail = req;
	pthread_mutex_unlock(&in->lock);

	/* Only fails on counter overflow, which cannot happen with 1s. */
	if (was_empty && write(in->eventfd, &one, sizeof(one)) != sizeof(one))
		log_error("storage.inbox_signal_failed", "errno=%d", errno);
}

void storage_inbox_post(struct storage_req *req)
{
	inbox_post(req);
}

size_t storage_inbox_drain(struct storage_inbox *in)
{
	struct storage_req *req, *next;
	uint64_t count;
	size_t n = 0;

	/* Reset first, take second: see inbox_post. EAGAIN = already reset. */
	if (read(in->eventfd, &count, sizeof(count)) < 0 && errno != EAGAIN)
		log_error("storage.inbox_read_failed", "errno=%d", errno);

	pthread_mutex_lock(&in->lock);
	req = in->head;
	in->head = in->tail = NULL;
	pthread_mutex_unlock(&in->lock);

	for (; req; req = next) {
		/* done may free or resubmit req. */
		next = req->next;
		req->done(req);
		n++;
	}
	return n;
}

/* ---- Running requests on the storage thread ---- */

static void wipe_password(struct storage_req *req)
{
	explicit_bzero(req->password, sizeof(req->password));
}

/*
 * Phase 1, outside the transaction. Returns REQ_PENDING when the request
 * goes on to the apply phase, or its final result.
 */
static int req_prepare(struct storage_req *req)
{
	int ret;

	req->plain_ok = false;
	/* A feature's own request checks its own inputs. */
	if (req->op == STORAGE_OP_RUN)
		return req->run ? REQ_PENDING : -EINVAL;
	if (!memchr(req->user, '\0', sizeof(req->user)) || !req->user[0])
		return -EINVAL;
	switch (req->op) {
	case STORAGE_OP_RUN:
		break;
	case STORAGE_OP_ACCOUNT_GET:
	case STORAGE_OP_ACCOUNT_DELETE:
		return REQ_PENDING;
	case STORAGE_OP_ACCOUNT_VERIFY_PLAIN:
		if (!memchr(req->password, '\0', sizeof(req->password)))
			return -EINVAL;
		return REQ_PENDING;
	case STORAGE_OP_ACCOUNT_CREATE:
	case STORAGE_OP_ACCOUNT_SET_PASSWORD:
		if (!memchr(req->password, '\0', sizeof(req->password)))
			return -EINVAL;
		ret = scram_creds_from_password(req->password, 0, &req->creds);
		/* The password is no longer needed once the keys exist. */
		wipe_password(req);
		return ret ? ret : REQ_PENDING;
	}
	return -EINVAL;
}

/* Phase 2: the request's statements. 0 or -errno. */
static int req_apply(struct storage *st, struct storage_req *req)
{
	switch (req->op) {
	case STORAGE_OP_RUN:
		return req->run(st, req);
	case STORAGE_OP_ACCOUNT_GET:
	case STORAGE_OP_ACCOUNT_VERIFY_PLAIN:
		return storage_account_get(st, req->user, &req->creds);
	case STORAGE_OP_ACCOUNT_CREATE:
		return storage_account_create(st, req->user, &req->creds);
	case STORAGE_OP_ACCOUNT_SET_PASSWORD:
		return storage_account_set_creds(st, req->user, &req->creds);
	case STORAGE_OP_ACCOUNT_DELETE:
		return storage_account_delete(st, req->user);
	}
	return -EINVAL;
}

/*
 * Applies every request of the list inside one open transaction, each in
 * its own savepoint. Returns 0, or -EIO when the transaction itself was
 * lost (SQLite rolled it back, or a savepoint failed) or, on PostgreSQL,
 * a request met -EBUSY: the caller must then redo the whole list. That
 * -EBUSY is a deadlock with another node's batch (or a row another node
 * kept busy): rolling back to the savepoint would keep the locks of the
 * requests before, so it could deadlock again; one transaction per
 * request cannot. (SQLite's batch holds the write lock from its BEGIN.)
 */
static int apply_in_batch(struct storage *st, struct req_list *list)
{
	for (struct storage_req *req = list->head; req; req = req->next) {
		if (storage_savepoint(st))
			return -EIO;
		req->result = req_apply(st, req);
		if (req->result == 0) {
			if (storage_savepoint_release(st))
				return -EIO;
			continue;
		}
		/* After I/O errors SQLite may have ended the transaction. */
		if ((req->result == -EBUSY && storage_on_pg(st)) || !storage_in_batch(st) ||
		    storage_savepoint_undo(st))
			return -EIO;
	}
	return 0;
}

/*
 * The slow path: one transaction per request. Once the lock could not be
 * had, the rest fail with -EBUSY at once instead of each waiting out the
 * busy timeout again. On PostgreSQL a request that met -EBUSY after its
 * transaction began (a deadlock with another node) is tried again.
 */
static void apply_one_by_one(struct storage_queue *q, struct req_list *list)
{
	uint64_t failures = 0;
	bool busy = false;

	for (struct storage_req *req = list->head; req; req = req->next) {
		for (int i = 0; i < STORAGE_QUEUE_BUSY_TRIES; i++) {
			req->result = busy ? -EBUSY : storage_begin(q->st);
			if (req->result)
				break;
			req->result = req_apply(q->st, req);
			if (req->result == 0)
				req->result = storage_commit(q->st);
			if (req->result)
				storage_rollback(q->st);
			if (req->result != -EBUSY || !storage_on_pg(q->st))
				break;
		}
		/* A deadlock on PostgreSQL is this request's; SQLite's lock is everyone's. */
		busy |= req->result == -EBUSY && !storage_on_pg(q->st);
		if (req->result == -EIO || req->result == -EBUSY)
			failures++;
	}
	pthread_mutex_lock(&q->lock);
	q->stats.fallbacks++;
	q->stats.failures += failures;
	pthread_mutex_unlock(&q->lock);
	atomic_fetch_add_explicit(&q->failed, failures, memory_order_release);
}

/*
 * Phase 4 for VERIFY_PLAIN. An unknown account is checked against decoy
 * credentials so that it costs the same PBKDF2 time as a known one: the
 * response time must not tell which accounts exist.
 */
static void verify_plain(struct storage_queue *q, struct storage_req *req)
{
	struct scram_creds decoy;

	if (req->result == 0) {
		req->plain_ok = scram_verify_password(&req->creds, req->password);
	} else if (req->result == -ENOENT) {
		scram_decoy_creds(q->decoy_secret, req->user, &decoy);
		(void)scram_verify_password(&decoy, req->password);
		scram_creds_wipe(&decoy);
	}
	wipe_password(req);
}

/* Records the request's latency, then posts its completion (storage thread). */
static void queue_complete(struct storage_queue *q, struct storage_req *req)
{
	uint64_t now = storage_now_ns();

	metrics_hist_observe(&q->latency, &metrics_storage_bounds,
			     now > req->submit_ns ? now - req->submit_ns : 0);
	inbox_post(req);
}

static void run_batch(struct storage_queue *q, struct storage_req *batch)
{
	struct req_list failed = { 0 }, apply = { 0 }, verify = { 0 };
	struct storage_req *req, *next;
	bool committed = false;
	uint64_t failures = 0;

	/* Phase 1: split into requests already decided and those to apply. */
	for (req = batch; req; req = next) {
		next = req->next;
		req->result = req_prepare(req);
		if (req->result == REQ_PENDING) {
			req_list_add(&apply, req);
		} else {
			wipe_password(req);
			req_list_add(&failed, req);
		}
	}

	/* Phases 2 and 3: one transaction, or one per request if that fails. */
	if (apply.head) {
		int ret = -EBUSY;

		for (int i = 0; i < STORAGE_QUEUE_BUSY_TRIES && ret == -EBUSY; i++)
			ret = storage_begin(q->st);
		if (ret == 0) {
			if (apply_in_batch(q->st, &apply) == 0 && storage_commit(q->st) == 0)
				committed = true;
			else
				storage_rollback(q->st);
		}
		if (committed) {
			for (req = apply.head; req; req = req->next)
				failures += req->result == -EIO || req->result == -EBUSY;
		} else if (ret == -EBUSY) {
			/* The lock, not a request, is the problem: no retries. */
			log_error("storage.batch_failed", "reason=busy");
			for (req = apply.head; req; req = req->next, failures++)
				req->result = -EBUSY;
		} else if (storage_down(q->st)) {
			/*
			 * The server is gone (logged once as storage.down):
			 * the whole batch fails, and the next one reconnects.
			 */
			for (req = apply.head; req; req = req->next, failures++)
				req->result = -EIO;
		} else {
			log_warn("storage.batch_failed", "action=retry_one_by_one");
			apply_one_by_one(q, &apply);
		}
		pthread_mutex_lock(&q->lock);
		q->stats.commits += committed;
		q->stats.failures += failures;
		pthread_mutex_unlock(&q->lock);
		atomic_fetch_add_explicit(&q->failed, failures, memory_order_release);
	}

	/*
	 * Phase 4: the cheap completions first, then the PBKDF2 checks. Posting
	 * relinks req->next into the inbox, so each list is walked only once.
	 */
	for (req = failed.head; req; req = next) {
		next = req->next;
		queue_complete(q, req);
	}
	for (req = apply.head; req; req = next) {
		next = req->next;
		if (req->op == STORAGE_OP_ACCOUNT_VERIFY_PLAIN) {
			req_list_add(&verify, req);
			continue;
		}
		/* Every request leaves this thread with no password in it. */
		wipe_password(req);
		queue_complete(q, req);
	}
	for (req = verify.head; req; req = next) {
		next = req->next;
		verify_plain(q, req);
		queue_complete(q, req);
	}
}

static void *storage_thread(void *arg)
{
	struct storage_queue *q = arg;
	struct storage_req *batch;
	uint64_t n;

	for (;;) {
		pthread_mutex_lock(&q->lock);
		while (!q->head && !q->stopping)
			pthread_cond_wait(&q->wake, &q->lock);
		if (!q->head) {
			/* Stopping and nothing left: later submits complete at once. */
			q->exited = true;
			pthread_mutex_unlock(&q->lock);
			break;
		}
		/*
		 * Linger: a batch of lazy requests only (archive writes) waits
		 * up to STORAGE_LINGER_MS for company, so that one commit (one
		 * fsync) covers many. Anyone waiting for an answer (a lazy
		 * request never is) ends the wait at once.
		 */
		if (q->all_lazy && !q->stopping) {
			struct timespec until;

			clock_gettime(CLOCK_MONOTONIC, &until);
			until.tv_nsec += STORAGE_LINGER_MS * 1000000L;
			if (until.tv_nsec >= 1000000000L) {
				until.tv_sec++;
				until.tv_nsec -= 1000000000L;
			}
			while (q->all_lazy && !q->stopping && q->queued < STORAGE_LINGER_MAX)
				if (pthread_cond_timedwait(&q->wake, &q->lock, &until) == ETIMEDOUT)
					break;
		}
		batch = q->head;
		q->head = q->tail = NULL;
		q->queued = 0;
		q->all_lazy = true;
		n = 0;
		for (struct storage_req *r = batch; r; r = r->next)
			n++;
		q->stats.requests += n;
		q->stats.batches++;
		pthread_mutex_unlock(&q->lock);

		run_batch(q, batch);
	}
	return NULL;
}

/* ---- Queue ---- */

int storage_queue_start(struct storage_queue **out, struct storage *st)
{
	struct storage_queue *q;
	sigset_t all, old;
	int ret;

	*out = NULL;
	q = calloc(1, sizeof(*q));
	if (!q)
		return -ENOMEM;
	q->st = st;
	if (getrandom(q->decoy_secret, sizeof(q->decoy_secret), 0) !=
	    (ssize_t)sizeof(q->decoy_secret)) {
		ret = errno ? -errno : -EIO;
		goto err_free;
	}
	ret = -pthread_mutex_init(&q->lock, NULL);
	if (ret)
		goto err_free;
	/* The linger waits with a monotonic deadline. */
	pthread_condattr_t ca;

	pthread_condattr_init(&ca);
	pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
	ret = -pthread_cond_init(&q->wake, &ca);
	pthread_condattr_destroy(&ca);
	if (ret)
		goto err_destroy_lock;
	q->all_lazy = true;

	/* Signals belong to the main thread's handling, never to this one. */
	sigfillset(&all);
	pthread_sigmask(SIG_SETMASK, &all, &old);
	ret = -pthread_create(&q->thread, NULL, storage_thread, q);
	pthread_sigmask(SIG_SETMASK, &old, NULL);
	if (ret)
		goto err_destroy_cond;
	pthread_setname_np(q->thread, "stanzad-storage");

	*out = q;
	return 0;

err_destroy_cond:
	pthread_cond_destroy(&q->wake);
err_destroy_lock:
	pthread_mutex_destroy(&q->lock);
err_free:
	explicit_bzero(q->decoy_secret, sizeof(q->decoy_secret));
	free(q);
	return ret;
}

void storage_queue_submit(struct storage_queue *q, struct storage_req *req)
{
	/* The queue is gone (the last steps of a shutdown): complete here, never drop it. */
	if (!q) {
		req->result = -ESHUTDOWN;
		req->plain_ok = false;
		wipe_password(req);
		inbox_post(req);
		return;
	}
	atomic_fetch_add_explicit(&q->submitted, 1, memory_order_relaxed);
	req->next = NULL;
	req->submit_ns = storage_now_ns();
	pthread_mutex_lock(&q->lock);
	if (q->exited) {
		pthread_mutex_unlock(&q->lock);
		/* Too late for the thread: complete here, never drop it. */
		req->result = -ESHUTDOWN;
		req->plain_ok = false;
		wipe_password(req);
		inbox_post(req);
		return;
	}
	if (q->tail)
		q->tail->next = req;
	else
		q->head = req;
	q->tail = req;
	q->queued++;
	if (!req->lazy)
		q->all_lazy = false;
	/* A lingering lazy batch is woken only by what ends the linger. */
	if (q->queued == 1 || !req->lazy || q->queued >= STORAGE_LINGER_MAX)
		pthread_cond_signal(&q->wake);
	pthread_mutex_unlock(&q->lock);
}

void storage_queue_stop(struct storage_queue *q)
{
	if (!q)
		return;
	pthread_mutex_lock(&q->lock);
	q->stopping = true;
	pthread_cond_signal(&q->wake);
	pthread_mutex_unlock(&q->lock);

	/* The thread finishes every queued request before it exits. */
	pthread_join(q->thread, NULL);
	storage_close(q->st);
	pthread_cond_destroy(&q->wake);
	pthread_mutex_destroy(&q->lock);
	explicit_bzero(q->decoy_secret, sizeof(q->decoy_secret));
	free(q);
}

uint64_t storage_queue_submitted(struct storage_queue *q)
{
	if (!q)
		return 0;	/* stopped (shutdown) */
	return atomic_load_explicit(&q->submitted, memory_order_relaxed);
}

uint64_t storage_queue_failed(struct storage_queue *q)
{
	if (!q)
		return 0;	/* stopped (shutdown) */
	return atomic_load_explicit(&q->failed, memory_order_acquire);
}

void storage_queue_get_stats(struct storage_queue *q, struct storage_queue_stats *out)
{
	pthread_mutex_lock(&q->lock);
	*out = q->stats;
	out->queued = q->queued;
	pthread_mutex_unlock(&q->lock);
}

void storage_queue_get_latency(struct storage_queue *q, struct metrics_hist *out)
{
	metrics_hist_merge(out, &q->latency);
}
