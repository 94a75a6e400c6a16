/* SPDX-License-Identifier: MIT */
/*
 * XEP-0357 Push Notifications (see push.h for the rules): registering
 * app servers, and publishing a summary to them when a message waits for
 * a user who is not there.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dataform.h"
#include "iq_async.h"
#include "jid.h"
#include "log.h"
#include "offline.h"
#include "pubsub.h"
#include "pubsub_node.h"
#include "push.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "sm.h"
#include "stanza.h"
#include "storage.h"
#include "stored_xml.h"
#include "strbuf.h"
#include "worker.h"

#define PUSH_LOG_JID 256	/* bytes of an app server JID in a log line */

#define PUSH_ID_PREFIX "push-"	/* ids of our notification iqs */

/* Lookups in flight (any worker), bounded by PUSH_MAX_PENDING. */
static _Atomic unsigned push_pending;
/* Ids of the notification iqs: unique per process. */
static _Atomic uint64_t push_serial;

/* ---- enable / disable ---- */

struct push_op {
	struct iq_async a;	/* first */
	bool enable;
	uint32_t max;
	const char *jid;	/* into buf */
	const char *node;	/* into buf, or NULL (disable: every node) */
	const char *options;	/* into buf, or NULL */
	char buf[];
};

static int push_op_run(struct storage *st, struct storage_req *req)
{
	struct push_op *op = (struct push_op *)req;
	int ret;

	if (op->enable)
		return push_db_enable(st, req->user, op->jid, op->node, op->options, op->max);
	ret = push_db_disable(st, req->user, op->jid, op->node);
	return ret < 0 ? ret : 0;
}

static void push_op_done(struct storage_req *req)
{
	struct push_op *op = (struct push_op *)req;
	struct session *s = iq_async_session(&op->a);
	char safe[PUSH_LOG_JID];

	if (req->result < 0 && req->result != -ENOSPC)
		log_warn("push.storage_failed", "user=%s enable=%d err=%d", req->user, op->enable,
			 req->result);
	else if (req->result == 0)
		log_info(op->enable ? "push.enabled" : "push.disabled", "user=%s jid=%s",
			 req->user, log_sanitize(safe, sizeof(safe), op->jid, strlen(op->jid)));
	if (s) {
		if (req->result == -ENOSPC) {
			char text[96];

			snprintf(text, sizeof(text), "at most %" PRIu32 " push registrations per account",
				 op->max);
			iq_async_error(&op->a, s, "resource-constraint", text);
		} else if (req->result < 0) {
			iq_async_error(&op->a, s, "internal-server-error", NULL);
		} else {
			iq_async_result(&op->a, s, NULL);
		}
	}
	iq_async_free(&op->a);
}

/*
 * Checks and copies an <enable/> or <disable/> into a request: 'jid'
 * required (a valid JID, stored normalized), 'node' required to enable
 * (XEP-0357 section 5), a publish-options form kept serialized. Submits
 * it, or answers the error.
 */
static void push_request(struct iq_request *rq, bool enable)
{
	const struct config *cfg = rq->w->srv->cfg;
	const char *jid_s = xml_attr_get(rq->payload, "jid");
	const char *node = xml_attr_get(rq->payload, "node");
	struct strbuf *b = &rq->w->scratch;
	const struct xml_node *form = NULL;
	char user[JID_PART_MAX + 1];
	struct push_op *op;
	struct jid app;
	size_t jl, nl, at;

	if (!jid_s || jid_parse(&app, jid_s, strlen(jid_s)) < 0) {
		iq_reply_error(rq, "bad-request", "a valid 'jid' of the app server is required");
		return;
	}
	if (node && (!node[0] || strlen(node) > PUSH_NODE_MAX)) {
		iq_reply_error(rq, "bad-request", "the 'node' is empty or too long");
		return;
	}
	if (enable && !node) {
		iq_reply_error(rq, "bad-request", "enabling needs the app server's 'node'");
		return;
	}
	if (enable && cfg->push_max_registrations == 0) {
		iq_reply_error(rq, "not-allowed", "push notifications are disabled on this server");
		return;
	}
	strbuf_clear(b);
	if (enable)
		form = xml_child(rq->payload, NS_XDATA, "x");
	if (form) {
		stored_xml_serialize(b, form);
		if (b->oom || b->len > PUSH_OPTIONS_MAX) {
			strbuf_clear(b);
			iq_reply_error(rq, "not-acceptable", "the publish-options form is too large");
			return;
		}
	}
	jl = app.len + 1;
	nl = node ? strlen(node) + 1 : 0;
	snprintf(user, sizeof(user), "%.*s", (int)rq->from->local_len, rq->from->buf);
	op = iq_async_new(rq, sizeof(*op) + jl + nl + b->len + 1, user, NS_PUSH,
			  enable ? "enable" : "disable", push_op_run, push_op_done);
	/* iq_async_new answered the error already (too many in flight, ENOMEM). */
	if (!op) {
		strbuf_clear(b);
		return;
	}
	op->enable = enable;
	op->max = cfg->push_max_registrations;
	op->jid = memcpy(op->buf, app.buf, jl);
	at = jl;
	if (node) {
		op->node = memcpy(op->buf + at, node, nl);
		at += nl;
	}
	if (form) {
		memcpy(op->buf + at, b->data, b->len);
		op->buf[at + b->len] = '\0';
		op->options = op->buf + at;
	}
	strbuf_clear(b);
	iq_async_submit(rq, &op->a);
}

void push_enable(struct iq_request *rq)
{
	push_request(rq, true);
}

void push_disable(struct iq_request *rq)
{
	push_request(rq, false);
}

/* ---- notifications ---- */

/*
 * A lookup of the registrations of one account. regs holds, per
 * registration, "jid\0node\0options\0" (options "" when none).
 */
struct push_notify_req {
	struct storage_req req;	/* first */
	struct worker *w;
	bool offline;		/* also count the stored messages */
	uint32_t count;		/* out: stored offline messages */
	unsigned n;		/* out: registrations in regs */
	struct strbuf regs;
	char sender[];		/* the message's 'from', "" when none */
};

/* push_db_each callback: packs one registration into regs (storage thread). */
static int push_collect(void *arg, const char *jid, const char *node, const char *options)
{
	struct push_notify_req *nr = arg;

	strbuf_append(&nr->regs, jid, strlen(jid) + 1);
	strbuf_append(&nr->regs, node, strlen(node) + 1);
	strbuf_append(&nr->regs, options ? options : "", (options ? strlen(options) : 0) + 1);
	nr->n++;
	return nr->regs.oom ? -ENOMEM : 0;
}

static int push_notify_run(struct storage *st, struct storage_req *req)
{
	struct push_notify_req *nr = (struct push_notify_req *)req;
	int ret = push_db_each(st, req->user, push_collect, nr);

	/*
	 * The count includes the message that caused this lookup: its write
	 * was submitted first, and the queue runs requests in order.
	 */
	if (ret == 0 && nr->n && nr->offline)
		ret = offline_count_sync(st, req->user, &nr->count);
	return ret;
}

/*
 * The publish to one app server: the summary form in a notification
 * item, and the registration's publish-options (its secret) when it gave
 * some. NULL on ENOMEM or a stored form that no longer parses.
 */
static struct xml_node *push_build(struct worker *w, const struct push_notify_req *nr,
				   const char *jid, const char *node, const char *options)
{
	struct arena *a = &w->tmp;
	struct xml_node *iq, *ps, *pub, *item, *notif, *x, *po, *form;
	char id[32], from[JID_MAX], num[16];

	snprintf(id, sizeof(id), PUSH_ID_PREFIX "%" PRIu64, atomic_fetch_add(&push_serial, 1) + 1);
	snprintf(from, sizeof(from), "%s@%s", nr->req.user, w->srv->cfg->domain);
	iq = xml_node_new(a, XML_NS_CLIENT, "iq");
	if (!iq || xml_attr_set(a, iq, "type", "set") < 0 || xml_attr_set(a, iq, "id", id) < 0 ||
	    xml_attr_set(a, iq, "from", from) < 0 || xml_attr_set(a, iq, "to", jid) < 0)
		return NULL;
	ps = xml_node_add_child(a, iq, NS_PUBSUB, "pubsub");
	pub = ps ? xml_node_add_child(a, ps, NULL, "publish") : NULL;
	if (!pub || xml_attr_set(a, pub, "node", node) < 0)
		return NULL;
	item = xml_node_add_child(a, pub, NULL, "item");
	notif = item ? xml_node_add_child(a, item, NS_PUSH, "notification") : NULL;
	x = notif ? dataform_new(a, DATAFORM_SUBMIT, NS_PUSH_SUMMARY) : NULL;
	if (!x)
		return NULL;
	xml_node_append(notif, x);
	/* Privacy: who and how many, never what (the body stays on the server). */
	if (nr->offline) {
		snprintf(num, sizeof(num), "%" PRIu32, nr->count);
		if (!dataform_add_field_value(a, x, DATAFORM_FIELD_UNSPECIFIED, "message-count",
					      NULL, num))
			return NULL;
	}
	if (nr->sender[0] && !dataform_add_field_value(a, x, DATAFORM_FIELD_UNSPECIFIED,
						       "last-message-sender", NULL, nr->sender))
		return NULL;
	if (options[0]) {
		form = stored_xml_parse(w->xml, a, options, strlen(options));
		po = form ? xml_node_add_child(a, ps, NULL, "publish-options") : NULL;
		if (!po)
			return NULL;
		xml_node_append(po, form);
	}
	return iq;
}

static void push_notify_done(struct storage_req *req)
{
	struct push_notify_req *nr = (struct push_notify_req *)req;
	struct worker *w = nr->w;
	const char *p = nr->regs.data;

	atomic_fetch_sub(&push_pending, 1);
	if (req->result < 0 && req->result != -ENOENT && req->result != -ESHUTDOWN)
		log_warn("push.lookup_failed", "user=%s err=%d", req->user, req->result);
	/* Drained at shutdown (the store is gone): nothing goes out any more. */
	for (unsigned i = 0; req->result == 0 && w->srv->store && i < nr->n; i++) {
		const char *jid = p, *node = jid + strlen(jid) + 1, *options = node + strlen(node) + 1;
		struct arena_mark mark = arena_mark(&w->tmp);
		struct xml_node *iq = push_build(w, nr, jid, node, options);
		char safe[PUSH_LOG_JID];

		p = options + strlen(options) + 1;
		log_sanitize(safe, sizeof(safe), jid, strlen(jid));
		if (!iq || router_route_stanza(w, iq) < 0)
			log_warn("push.not_sent", "user=%s jid=%s", req->user, safe);
		else
			log_info("push.sent", "user=%s jid=%s", req->user, safe);
		arena_rewind(&w->tmp, mark);
	}
	strbuf_free(&nr->regs);
	free(nr);
}

/* Whether msg calls for a notification: what offline storage would keep. */
static bool push_wanted(const struct config *cfg, const struct xml_node *msg)
{
	return cfg->push_max_registrations && offline_wanted(msg);
}

/* Queues the lookup for `user`; the notifications go out from its completion. */
static void push_submit(struct worker *w, const char *user, const struct xml_node *msg,
			bool offline)
{
	const char *from = xml_attr_get(msg, "from");
	size_t fl = from ? strlen(from) : 0;
	struct push_notify_req *nr;

	if (fl >= JID_MAX)
		fl = 0;
	if (!w->srv->store)
		return;		/* shutting down */
	if (atomic_fetch_add(&push_pending, 1) >= PUSH_MAX_PENDING) {
		atomic_fetch_sub(&push_pending, 1);
		log_warn("push.overload", "user=%s msg=\"notification dropped\"", user);
		return;
	}
	/* calloc: regs starts as an empty strbuf (STRBUF_INIT is all zero). */
	nr = calloc(1, sizeof(*nr) + fl + 1);
	if (!nr) {
		atomic_fetch_sub(&push_pending, 1);
		return;
	}
	nr->w = w;
	nr->offline = offline;
	if (fl)
		memcpy(nr->sender, from, fl);
	nr->req.op = STORAGE_OP_RUN;
	nr->req.run = push_notify_run;
	nr->req.done = push_notify_done;
	nr->req.inbox = &w->inbox;
	snprintf(nr->req.user, sizeof(nr->req.user), "%s", user);
	storage_queue_submit(w->srv->store, &nr->req);
}

void push_notify_offline(struct worker *w, const char *user, const struct xml_node *msg)
{
	if (push_wanted(w->srv->cfg, msg))
		push_submit(w, user, msg, true);
}

void push_notify_detached(struct worker *w, const struct session *s, const struct xml_node *msg)
{
	const char *at = memchr(s->jid, '@', s->bare_len);
	const char *from = xml_attr_get(msg, "from");
	char user[JID_PART_MAX + 1];

	if (!w || !at || stanza_kind(msg) != STANZA_MESSAGE || !push_wanted(w->srv->cfg, msg))
		return;
	/* One's own messages (carbons of what another resource sent) need no alert. */
	if (from && strncmp(from, s->jid, s->bare_len) == 0 &&
	    (from[s->bare_len] == '\0' || from[s->bare_len] == '/'))
		return;
	/* The localpart is already normalized: it is the session's own JID. */
	snprintf(user, sizeof(user), "%.*s", (int)(at - s->jid), s->jid);
	push_submit(w, user, msg, false);
}

/* ---- an app server refuses ---- */

/* Removes every registration of one app server of an account. */
struct push_drop_req {
	struct storage_req req;	/* first */
	char jid[JID_MAX];
};

static int push_drop_run(struct storage *st, struct storage_req *req)
{
	struct push_drop_req *dr = (struct push_drop_req *)req;
	int ret = push_db_disable(st, req->user, dr->jid, NULL);

	return ret < 0 ? ret : 0;
}

static void push_drop_done(struct storage_req *req)
{
	struct push_drop_req *dr = (struct push_drop_req *)req;
	char safe[PUSH_LOG_JID];

	log_sanitize(safe, sizeof(safe), dr->jid, strlen(dr->jid));
	if (req->result < 0)
		log_warn("push.drop_failed", "user=%s jid=%s err=%d", req->user, safe, req->result);
	else
		log_info("push.dropped", "user=%s jid=%s reason=\"the app server refused\"",
			 req->user, safe);
	free(dr);
}

/* Conditions of an error that says the notification was not delivered. */
static bool push_undelivered(const char *cond)
{
	static const char *const undelivered[] = {
		"remote-server-not-found", "remote-server-timeout", "service-unavailable",
		"recipient-unavailable",
	};

	for (size_t i = 0; i < sizeof(undelivered) / sizeof(undelivered[0]); i++)
		if (strcmp(cond, undelivered[i]) == 0)
			return true;
	return false;
}

void push_iq_error(struct worker *w, const struct xml_node *iq, const struct jid *from,
		   const struct jid *to)
{
	const char *id = xml_attr_get(iq, "id");
	const struct xml_node *err;
	const char *etype;
	struct push_drop_req *dr;

	if (!id || strncmp(id, PUSH_ID_PREFIX, strlen(PUSH_ID_PREFIX)) != 0 || !from || !to ||
	    !to->local_len || to->res_len || !w->srv->store)
		return;
	/*
	 * XEP-0357 section 8: an app server that refuses for good (anything
	 * but a temporary 'wait') no longer wants these: its registrations
	 * go. Only that JID's own, so nobody else can remove them. Errors
	 * that say the notification never got there (the app server or its
	 * domain unreachable: routing bounces them with its JID as 'from')
	 * are no refusal, and keep them.
	 */
	for (err = xml_first_element(iq); err; err = xml_next_element(err))
		if (strcmp(err->name, "error") == 0)
			break;
	etype = err ? xml_attr_get(err, "type") : NULL;
	if (!err || (etype && strcmp(etype, "wait") == 0))
		return;
	for (const struct xml_node *c = xml_first_element(err); c; c = xml_next_element(c))
		if (strcmp(c->ns, NS_STANZAS) == 0 && push_undelivered(c->name))
			return;
	/* Best effort: without memory the registration stays, as after a 'wait'. */
	dr = calloc(1, sizeof(*dr));
	if (!dr)
		return;
	snprintf(dr->jid, sizeof(dr->jid), "%s", from->buf);
	snprintf(dr->req.user, sizeof(dr->req.user), "%.*s", (int)to->local_len, to->buf);
	dr->req.op = STORAGE_OP_RUN;
	dr->req.run = push_drop_run;
	dr->req.done = push_drop_done;
	dr->req.inbox = &w->inbox;
	storage_queue_submit(w->srv->store, &dr->req);
}
