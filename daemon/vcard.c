/* SPDX-License-Identifier: MIT */
/*
 * XEP-0054 vcard-temp (see vcard.h for the rules). The vCard is kept as
 * the text our serializer made of the element the client sent, and parsed
 * back into a tree for each get.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "avatar_compat.h"
#include "config.h"
#include "conn.h"
#include "iq_async.h"
#include "log.h"
#include "server.h"
#include "stored_xml.h"
#include "vcard.h"
#include "worker.h"

struct vcard_op {
	struct iq_async a;		/* first */
	bool is_set;
	char *xml;			/* get: the stored text (malloc'd) */
	size_t len;			/* set: bytes in text[] (0 = delete) */
	char text[];			/* set: the vCard to store */
};

/* The normalized localpart of a JID into out (JID_PART_MAX + 1 bytes). */
static void vcard_localpart(const struct jid *j, char *out, size_t size)
{
	snprintf(out, size, "%.*s", (int)j->local_len, j->buf);
}

/* Storage thread: one statement either way, in the request's savepoint. */
static int vcard_run(struct storage *st, struct storage_req *req)
{
	struct vcard_op *op = (struct vcard_op *)req;

	if (op->is_set)
		return vcard_store_set(st, req->user, op->len ? op->text : NULL, op->len);
	return vcard_store_get(st, req->user, &op->xml, &op->len);
}

/* The stored text as a tree in the worker's scratch arena, or NULL (logged). */
static struct xml_node *vcard_parse(const struct vcard_op *op)
{
	struct xml_node *v = stored_xml_parse(iq_async_worker(&op->a)->xml,
					      iq_async_arena(&op->a), op->xml, op->len);

	if (!v)
		log_error("vcard.corrupt", "user=%s err=%d", op->a.req.user, -errno);
	return v;
}

static void vcard_get_done(struct session *s, struct vcard_op *op)
{
	int ret = op->a.req.result;
	struct xml_node *v;

	if (ret == -ENOENT) {
		/* XEP-0054 3.1 / 3.3: an empty vCard for oneself, else one error for all. */
		if (op->a.scope == IQ_SCOPE_CONTACT) {
			iq_async_error(&op->a, s, "service-unavailable", NULL);
			return;
		}
		v = xml_node_new(iq_async_arena(&op->a), NS_VCARD, "vCard");
		if (v)
			iq_async_result(&op->a, s, v);
		else
			iq_async_error(&op->a, s, "internal-server-error", NULL);
		return;
	}
	v = ret == 0 ? vcard_parse(op) : NULL;
	if (!v) {
		iq_async_error(&op->a, s, "internal-server-error", NULL);
		return;
	}
	iq_async_result(&op->a, s, v);
}

/* The storage thread answered: reply to the requester, if it is still there. */
static void vcard_done(struct storage_req *req)
{
	struct vcard_op *op = (struct vcard_op *)req;
	struct session *s = iq_async_session(&op->a);

	if (req->result < 0 && req->result != -ENOENT)
		log_warn("vcard.storage_failed", "user=%s set=%d err=%d", req->user, op->is_set,
			 req->result);
	/* XEP-0398: a client's photo goes to PEP too (avatar_compat.c). */
	if (op->is_set && req->result == 0)
		avatar_compat_vcard_set(iq_async_worker(&op->a), req->user,
					op->len ? op->text : NULL, op->len);
	if (s) {
		if (!op->is_set)
			vcard_get_done(s, op);
		else if (req->result == 0)
			iq_async_result(&op->a, s, NULL);
		else
			iq_async_error(&op->a, s, "internal-server-error", NULL);
	}
	free(op->xml);
	iq_async_free(&op->a);
}

void vcard_get(struct iq_request *rq)
{
	char user[JID_PART_MAX + 1];
	struct vcard_op *op;

	/* The server itself has no vCard (yet). */
	if (rq->scope == IQ_SCOPE_SERVER) {
		iq_reply_error(rq, "item-not-found", NULL);
		return;
	}
	/* Anyone may read any local vCard (XEP-0054 3.3: it is world-readable). */
	vcard_localpart(rq->scope == IQ_SCOPE_CONTACT ? rq->to : rq->from, user, sizeof(user));
	op = iq_async_new(rq, sizeof(*op), user, NS_VCARD, "vCard", vcard_run, vcard_done);
	if (op)
		iq_async_submit(rq, &op->a);
}

/* The effective size limit: the stored text must also fit a stanza to be read back. */
static size_t vcard_limit(const struct config *cfg)
{
	return cfg->max_vcard_bytes < cfg->max_stanza_bytes ? cfg->max_vcard_bytes :
							       cfg->max_stanza_bytes;
}

void vcard_set(struct iq_request *rq)
{
	const struct config *cfg = rq->w->srv->cfg;
	struct strbuf *b = &rq->w->scratch;
	char user[JID_PART_MAX + 1], text[96];
	struct vcard_op *op;
	size_t len = 0;

	/* XEP-0054 3.2: only one's own vCard, addressed without 'to' or to one's bare JID. */
	if (rq->scope != IQ_SCOPE_ACCOUNT) {
		iq_reply_error(rq, "forbidden", "you can only change your own vCard");
		return;
	}
	strbuf_clear(b);
	if (!stored_xml_is_empty(rq->payload)) {
		stored_xml_serialize(b, rq->payload);
		if (b->oom) {
			strbuf_clear(b);
			iq_reply_error(rq, "internal-server-error", NULL);
			return;
		}
		len = b->len;
	}
	/*
	 * The serialized size is what is stored and sent back on every get,
	 * so that is what the limit bounds (not the client's spelling).
	 */
	if (len > vcard_limit(cfg)) {
		strbuf_clear(b);
		snprintf(text, sizeof(text), "the vCard is larger than %zu bytes",
			 vcard_limit(cfg));
		iq_reply_error(rq, "not-acceptable", text);
		return;
	}
	vcard_localpart(rq->from, user, sizeof(user));
	/* The text travels inside the request: the scratch buffer is reused meanwhile. */
	op = iq_async_new(rq, sizeof(*op) + len + 1, user, NS_VCARD, "vCard", vcard_run,
			  vcard_done);
	if (op) {
		op->is_set = true;
		op->len = len;
		if (len)
			memcpy(op->text, b->data, len);
		op->text[len] = '\0';
		iq_async_submit(rq, &op->a);
	}
	strbuf_clear(b);
}
