/* SPDX-License-Identifier: MIT */
/*
 * Storage-backed iq requests: the copy of the addressing that outlives
 * the stanza, the per-connection bound, and the answers built from that
 * copy. See iq_async.h.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "iq_async.h"
#include "log.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "worker.h"

struct worker *iq_async_worker(const struct iq_async *op)
{
	return (struct worker *)((char *)op->req.inbox - offsetof(struct worker, inbox));
}

struct arena *iq_async_arena(const struct iq_async *op)
{
	return &iq_async_worker(op)->tmp;
}

/*
 * The requester's session by full JID (one stream management resumed
 * elsewhere still gets the answer), or, for a requester at home on
 * another worker, this worker's stand-in: answers to it are routed there
 * (router_deliver_prepared). NULL when the requester is gone.
 */
static struct session *iq_async_requester(struct worker *w, const char *from)
{
	size_t len = strlen(from);

	if (!len)
		return NULL;
	/* Or on another node (cluster mode): answers are routed there just the same. */
	if (router_home_elsewhere(w, from, len) ||
	    (cluster_enabled() && cluster_elsewhere(from, len)))
		return w->remote_requester;
	return sessdir_find_full(w->sessions, from, len);
}

/* Copies what the answer needs from the request. 0, or -EINVAL (id too long). */
static int iq_async_fill(struct iq_async *op, struct iq_request *rq, const char *ns,
			 const char *name)
{
	const char *id = xml_attr_get(rq->iq, "id");
	const char *to = xml_attr_get(rq->iq, "to");
	/* A request forwarded from the requester's home has no connection here. */
	const char *from = rq->conn ? (rq->conn->sess ? rq->conn->sess->jid : "") :
			   rq->from ? rq->from->buf : "";

	if (!id || strlen(id) > IQ_ASYNC_ID_MAX)
		return -EINVAL;
	/* The router normalized 'to' already, so it fits a JID buffer. */
	if ((to && strlen(to) >= sizeof(op->to)) || strlen(from) >= sizeof(op->from))
		return -EINVAL;
	snprintf(op->id, sizeof(op->id), "%s", id);
	snprintf(op->to, sizeof(op->to), "%s", to ? to : "");
	snprintf(op->from, sizeof(op->from), "%s", from);
	op->ns = ns;
	op->name = name;
	op->scope = rq->scope;
	return 0;
}

struct session *iq_async_init_sync(struct iq_async *op, struct iq_request *rq, const char *ns,
				   const char *name)
{
	memset(op, 0, sizeof(*op));
	op->req.inbox = &rq->w->inbox;
	op->req.slot = rq->conn ? rq->conn->slot : 0;
	op->req.gen = rq->conn ? rq->conn->gen : 0;
	/* Cannot fail for an iq the router validated; answer with what fits. */
	iq_async_fill(op, rq, ns, name);
	if (!rq->conn)	/* forwarded from the requester's home (router.c) */
		return iq_async_requester(rq->w, op->from);
	return rq->conn->sess;
}

void *iq_async_new(struct iq_request *rq, size_t size, const char *user, const char *ns,
		   const char *name, int (*run)(struct storage *st, struct storage_req *req),
		   void (*done)(struct storage_req *req))
{
	struct iq_async *op;

	if (rq->conn && rq->conn->iq_async >= IQ_ASYNC_MAX_INFLIGHT) {
		iq_reply_error(rq, "resource-constraint", "too many requests in progress");
		return NULL;
	}
	/* Requests forwarded from other workers have no connection here: one bound for all. */
	if (!rq->conn && rq->w->iq_async_remote >= IQ_ASYNC_MAX_REMOTE) {
		iq_reply_error(rq, "resource-constraint", "too many requests in progress");
		return NULL;
	}
	op = calloc(1, size);
	if (!op) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return NULL;
	}
	if (iq_async_fill(op, rq, ns, name) < 0) {
		free(op);
		iq_reply_error(rq, "bad-request", "id too long");
		return NULL;
	}
	op->req.op = STORAGE_OP_RUN;
	op->req.run = run;
	op->req.done = done;
	op->req.inbox = &rq->w->inbox;
	/* No connection (forwarded request): no in-flight slot to hold. */
	op->req.slot = rq->conn ? rq->conn->slot : 0;
	op->req.gen = rq->conn ? rq->conn->gen : 0;
	snprintf(op->req.user, sizeof(op->req.user), "%s", user);
	return op;
}

/* Counted at submission, released by iq_async_session() in the completion. */
void iq_async_submit(struct iq_request *rq, struct iq_async *op)
{
	if (rq->conn) {
		rq->conn->iq_async++;
		op->counted = true;
	} else {
		rq->w->iq_async_remote++;
		op->counted_remote = true;
	}
	storage_queue_submit(rq->w->srv->store, &op->req);
}

static void iq_async_uncount_remote(struct iq_async *op)
{
	struct worker *w = iq_async_worker(op);

	if (op->counted_remote && w->iq_async_remote)
		w->iq_async_remote--;
	op->counted_remote = false;
}

struct session *iq_async_session(struct iq_async *op)
{
	struct worker *w = iq_async_worker(op);
	struct conn *c = worker_conn(w, op->req.slot, op->req.gen);

	if (c && op->counted && c->iq_async)
		c->iq_async--;
	op->counted = false;
	iq_async_uncount_remote(op);
	if (op->req.result == -ESHUTDOWN)
		return NULL;
	return iq_async_requester(w, op->from);
}

/*
 * The request as the client sent it, minus the payload's content: enough
 * for stanza_iq_result()/stanza_error_reply() to address the answer the
 * same way the synchronous handlers do (from = the original 'to', or when
 * there was none the domain, or nothing for the account's own data).
 */
static struct xml_node *iq_async_shell(struct arena *a, const struct iq_async *op,
				       bool with_payload)
{
	struct xml_node *iq = xml_node_new(a, XML_NS_CLIENT, "iq");

	if (!iq || xml_attr_set(a, iq, "type", "get") < 0 ||
	    (op->id[0] && xml_attr_set(a, iq, "id", op->id) < 0) ||
	    xml_attr_set(a, iq, "from", op->from) < 0 ||
	    (op->to[0] && xml_attr_set(a, iq, "to", op->to) < 0))
		return NULL;
	if (with_payload && op->ns && !xml_node_add_child(a, iq, op->ns, op->name))
		return NULL;
	return iq;
}

static void iq_async_send(const struct iq_async *op, struct session *s, struct xml_node *r)
{
	if (!r) {
		log_warn("iq.reply_failed", "jid=%s msg=\"out of memory\"", op->from);
		return;
	}
	router_deliver(s, r);
}

/* As iq.c: no 'from' on what the server answers for the account itself. */
static const char *iq_async_domain(const struct iq_async *op)
{
	return op->scope == IQ_SCOPE_ACCOUNT ? NULL : iq_async_worker(op)->srv->cfg->domain;
}

void iq_async_result(const struct iq_async *op, struct session *s, struct xml_node *payload)
{
	struct arena *a = iq_async_arena(op);
	struct xml_node *shell = iq_async_shell(a, op, false);
	struct xml_node *r = shell ? stanza_iq_result(a, shell, iq_async_domain(op)) : NULL;

	if (r && payload)
		xml_node_append(r, payload);
	iq_async_send(op, s, r);
}

void iq_async_error(const struct iq_async *op, struct session *s, const char *condition,
		    const char *text)
{
	struct arena *a = iq_async_arena(op);
	struct xml_node *shell = iq_async_shell(a, op, true);

	iq_async_send(op, s, shell ? stanza_error_reply(a, shell, iq_async_domain(op), condition,
							text) : NULL);
}

void iq_async_free(struct iq_async *op)
{
	if (!op)
		return;
	iq_async_uncount_remote(op);	/* when the completion did not ask for the session */
	arena_reset(&iq_async_worker(op)->tmp);
	free(op);
}
