/* SPDX-License-Identifier: MIT */
/*
 * Storage barriers: acks and iq results that wait until the writes before
 * them committed. See durable.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "conn.h"
#include "durable.h"
#include "iq.h"
#include "iq_async.h"
#include "log.h"
#include "server.h"
#include "session.h"
#include "sm.h"
#include "storage.h"
#include "worker.h"

/* A barrier that releases one held ack of the session `jid` (full JID). */
struct durable_ack {
	struct storage_req req;		/* first */
	unsigned worker;		/* where that session lives (its home) */
	char jid[];
};

/* The release of a held ack, on its way to the session's home worker. */
struct durable_release {
	struct worker_msg msg;		/* first */
	char jid[];
};

/* A barrier that answers an iq (and releases the ack it held). */
struct durable_reply {
	struct iq_async op;		/* first: op.req is the storage request */
	uint64_t failures;		/* the queue's failure count at submission */
	bool held;			/* an ack of the requester is held */
};

static struct worker *durable_worker(const struct storage_req *req)
{
	return (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
}

/* The barrier itself writes nothing: its commit is the one before it. */
static int durable_noop(struct storage *st, struct storage_req *req)
{
	return 0;
}

uint64_t durable_mark(const struct conn *c)
{
	/*
	 * Read before the stanza submits anything: a snapshot taken later, in
	 * durable_reply_result(), could already include the failure of the
	 * very write the reply is about.
	 */
	c->w->durable_failures = storage_queue_failed(c->w->srv->store);
	return storage_queue_submitted(c->w->srv->store);
}

/* Releases one held ack of the session `jid` on this worker (gone: nothing to do). */
static void durable_release_here(struct worker *w, const char *jid)
{
	struct session *s = sessdir_find_full(w->sessions, jid, strlen(jid));

	if (s)
		sm_release_ack(s);
}

static void durable_release_arrived(struct worker *w, struct worker_msg *m)
{
	struct durable_release *r = (struct durable_release *)m;

	durable_release_here(w, r->jid);
	free(r);
}

/* Releases the ack at `home`: here, or through its mailbox. */
static void durable_release_at(struct worker *w, unsigned home, const char *jid)
{
	size_t len = strlen(jid);
	struct durable_release *r;

	if (home == w->id) {
		durable_release_here(w, jid);
		return;
	}
	r = calloc(1, sizeof(*r) + len + 1);
	if (!r) {
		/* The session keeps its ack until it ends; say so rather than crash. */
		log_warn("durable.release_failed", "jid=%s msg=\"out of memory\"", jid);
		return;
	}
	memcpy(r->jid, jid, len + 1);
	worker_post(w, home, &r->msg, durable_release_arrived);
}

static void durable_ack_done(struct storage_req *req)
{
	struct durable_ack *b = (struct durable_ack *)req;
	struct worker *w = durable_worker(req);

	durable_release_at(w, b->worker, b->jid);
	free(b);
}

void durable_release_remote(struct worker *w, unsigned home, const char *jid, uint64_t mark)
{
	size_t len = strlen(jid);
	struct durable_ack *b;

	/* Nothing written for the stanza here: the ack may go at once. */
	if (storage_queue_submitted(w->srv->store) == mark) {
		durable_release_at(w, home, jid);
		return;
	}
	b = calloc(1, sizeof(*b) + len + 1);
	if (!b) {
		log_warn("durable.barrier_failed", "jid=%s msg=\"out of memory\"", jid);
		durable_release_at(w, home, jid);
		return;
	}
	memcpy(b->jid, jid, len + 1);
	b->worker = home;
	b->req.op = STORAGE_OP_RUN;
	b->req.run = durable_noop;
	b->req.done = durable_ack_done;
	b->req.inbox = &w->inbox;
	b->req.lazy = true;
	storage_queue_submit(w->srv->store, &b->req);
}

void durable_settle(struct conn *c, uint64_t mark)
{
	struct session *s = c->sess;
	struct durable_ack *b;

	if (!s || !s->sm || storage_queue_submitted(c->w->srv->store) == mark)
		return;
	b = calloc(1, sizeof(*b) + s->jid_len + 1);
	if (!b) {
		/* The ack goes out uncovered; say so rather than fail the stanza. */
		log_warn("durable.barrier_failed", "jid=%s msg=\"out of memory\"", s->jid);
		return;
	}
	memcpy(b->jid, s->jid, s->jid_len + 1);
	b->worker = c->w->id;
	b->req.op = STORAGE_OP_RUN;
	b->req.run = durable_noop;
	b->req.done = durable_ack_done;
	b->req.inbox = &c->w->inbox;
	b->req.slot = c->slot;
	b->req.gen = c->gen;
	/* As lazy as the archive writes it may follow: no extra commit of its own. */
	b->req.lazy = true;
	sm_hold_ack(s);
	storage_queue_submit(c->w->srv->store, &b->req);
}

static void durable_reply_done(struct storage_req *req)
{
	struct durable_reply *d = (struct durable_reply *)req;
	struct worker *w = durable_worker(req);
	struct session *s = iq_async_session(&d->op);

	if (s) {
		if (req->result < 0 || storage_queue_failed(w->srv->store) != d->failures) {
			log_warn("durable.reply_failed", "jid=%s msg=\"a storage write failed before "
				 "the answer; the change may be lost\"", d->op.from);
			iq_async_error(&d->op, s, "internal-server-error",
				       "the change could not be stored; try again later");
		} else {
			iq_async_result(&d->op, s, NULL);
		}
		if (d->held)
			sm_release_ack(s);
	}
	iq_async_free(&d->op);
}

void durable_reply_result(struct iq_request *rq, const char *ns, const char *name)
{
	struct session *s = rq->conn ? rq->conn->sess : NULL;
	struct durable_reply *d;

	if (!rq->conn) {
		iq_reply_result(rq, NULL);
		return;
	}
	d = iq_async_new(rq, sizeof(*d), "-", ns, name, durable_noop, durable_reply_done);
	if (!d)
		return;	/* answered with an error */
	d->failures = rq->w->durable_failures;
	if (s && s->sm) {
		sm_hold_ack(s);
		d->held = true;
	}
	/*
	 * Not iq_async_submit(): the answer is one the handler owed anyway,
	 * so it takes none of the connection's in-flight slots.
	 */
	storage_queue_submit(rq->w->srv->store, &d->op.req);
}
