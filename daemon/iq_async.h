/* SPDX-License-Identifier: MIT */
/*
 * iq requests answered after a storage round trip (vCards, private XML,
 * last activity, account info for contacts, block lists).
 *
 * The iq tree dies when the handler returns, so what the answer needs
 * (id, the original 'to', the requester's full JID and connection) is
 * copied into a request that travels through the storage thread
 * (STORAGE_OP_RUN) and comes back to the worker. The answer goes to the
 * requester's session through router_deliver(), so a session that stream
 * management holds detached gets it on resumption; when the session is
 * gone, the answer is dropped. A requester at home on another worker is
 * answered through a stand-in session whose deliveries are routed there.
 *
 * A connection may have at most IQ_ASYNC_MAX_INFLIGHT such requests in
 * flight: a client that floods them gets resource-constraint instead of
 * growing the storage queue without bound.
 */
#ifndef STANZAD_IQ_ASYNC_H
#define STANZAD_IQ_ASYNC_H

#include <stdbool.h>
#include <stddef.h>

#include "iq.h"
#include "jid.h"
#include "storage.h"

#define IQ_ASYNC_ID_MAX		256	/* longest iq id kept for a late answer */
#define IQ_ASYNC_MAX_INFLIGHT	8	/* storage-backed iqs per connection */
/* The same for requests forwarded from other workers (no connection here), per worker. */
#define IQ_ASYNC_MAX_REMOTE	1024

struct session;
struct worker;

struct iq_async {
	struct storage_req req;		/* first: the storage layer sees this */
	char id[IQ_ASYNC_ID_MAX + 1];
	char to[JID_MAX];		/* the request's 'to' ("" when none) */
	char from[JID_MAX];		/* the requester's full JID */
	const char *ns;			/* payload element, echoed in errors */
	const char *name;		/* (static strings) */
	enum iq_scope scope;
	bool counted;			/* holds one of the connection's in-flight slots */
	bool counted_remote;		/* holds one of the worker's slots (no connection) */
};

/*
 * Allocates a zeroed request of `size` bytes (a struct embedding struct
 * iq_async first) for rq, with req.op = STORAGE_OP_RUN, run/done set,
 * req.user = `user` and the addressing copied. ns/name must be static
 * strings. Returns NULL after answering rq with an error (id too long,
 * too many requests in flight, out of memory).
 */
void *iq_async_new(struct iq_request *rq, size_t size, const char *user, const char *ns,
		   const char *name, int (*run)(struct storage *st, struct storage_req *req),
		   void (*done)(struct storage_req *req));

/* Hands the request to the storage thread; done runs later on this worker. */
void iq_async_submit(struct iq_request *rq, struct iq_async *op);

/*
 * In `done`: releases the connection's in-flight slot and returns the
 * session to answer, or NULL when it is gone (then just free the request).
 * Call it once per completion.
 */
struct session *iq_async_session(struct iq_async *op);

/*
 * Fills an iq_async on the stack from rq, for answering synchronously
 * through the same helpers (no storage involved, nothing to free).
 * Returns rq's session.
 */
struct session *iq_async_init_sync(struct iq_async *op, struct iq_request *rq, const char *ns,
				   const char *name);

/* The worker the request belongs to. */
struct worker *iq_async_worker(const struct iq_async *op);

/* The worker's scratch arena, to build a payload in before iq_async_result. */
struct arena *iq_async_arena(const struct iq_async *op);

/*
 * Answers to s: a result with `payload` (may be NULL; built in any arena
 * that lives until the call returns), or an error with condition and
 * optional text (the payload element echoed empty).
 */
void iq_async_result(const struct iq_async *op, struct session *s, struct xml_node *payload);
void iq_async_error(const struct iq_async *op, struct session *s, const char *condition,
		    const char *text);

/*
 * Ends a completion: resets the worker's scratch arena (answers were
 * built there) and frees the request (NULL is fine).
 */
void iq_async_free(struct iq_async *op);

#endif
