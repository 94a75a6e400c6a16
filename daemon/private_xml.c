/* SPDX-License-Identifier: MIT */
/*
 * XEP-0049 Private XML Storage (see private_xml.h for the rules). All the
 * elements of one request go to the storage thread together, so a set of
 * several elements is written in one savepoint: all or nothing.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bookmarks_compat.h"
#include "config.h"
#include "conn.h"
#include "iq_async.h"
#include "log.h"
#include "private_xml.h"
#include "server.h"
#include "stored_xml.h"
#include "worker.h"

struct private_item {
	const char *ns;		/* into the request's buf */
	const char *name;
	char *xml;		/* set: into buf, NULL = delete; get: malloc'd or NULL */
	size_t len;
};

struct private_op {
	struct iq_async a;	/* first */
	bool is_set;
	unsigned n;
	struct private_item items[PRIVATE_MAX_PER_REQUEST];
	char buf[];		/* ns, name (and set: text) of each item, NUL-terminated */
};

/*
 * Prefixes, as XEP-0049 2.3 words it: the jabber: and jabber.org
 * namespaces belong to the protocol, and storing e.g. a vCard here would
 * shadow the real one for clients that look in both places.
 */
bool private_xml_ns_reserved(const char *ns)
{
	return !ns || !ns[0] || strncmp(ns, "jabber:", 7) == 0 ||
	       strncmp(ns, "http://jabber.org/", 18) == 0 || strcmp(ns, "vcard-temp") == 0;
}

static int private_run(struct storage *st, struct storage_req *req)
{
	struct private_op *op = (struct private_op *)req;
	int ret;

	for (unsigned i = 0; i < op->n; i++) {
		struct private_item *it = &op->items[i];

		if (op->is_set) {
			ret = private_xml_store_set(st, req->user, it->ns, it->name, it->xml,
						    it->len);
		} else {
			ret = private_xml_store_get(st, req->user, it->ns, it->name, &it->xml,
						    &it->len);
			if (ret == -ENOENT)
				ret = 0;
		}
		/* A failed set undoes the request's earlier writes (its savepoint). */
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* The get answer: each stored element, or the element as asked when none is. */
static struct xml_node *private_get_answer(const struct private_op *op)
{
	struct arena *a = iq_async_arena(&op->a);
	struct xml_pool *pool = iq_async_worker(&op->a)->xml;
	struct xml_node *q = xml_node_new(a, NS_PRIVATE, "query");

	if (!q)
		return NULL;
	for (unsigned i = 0; i < op->n; i++) {
		const struct private_item *it = &op->items[i];
		struct xml_node *el;

		if (it->xml) {
			el = stored_xml_parse(pool, a, it->xml, it->len);
			if (!el) {
				log_error("private.corrupt", "user=%s err=%d", op->a.req.user,
					  -errno);
				return NULL;
			}
			xml_node_append(q, el);
		} else if (!xml_node_add_child(a, q, it->ns, it->name)) {
			return NULL;
		}
	}
	return q;
}

static void private_done(struct storage_req *req)
{
	struct private_op *op = (struct private_op *)req;
	struct session *s = iq_async_session(&op->a);
	struct xml_node *q;

	if (req->result < 0 && req->result != -ENOSPC)
		log_warn("private.storage_failed", "user=%s set=%d err=%d", req->user, op->is_set,
			 req->result);
	if (s) {
		if (req->result == -ENOSPC) {
			char text[80];

			snprintf(text, sizeof(text),
				 "at most %d private XML elements can be stored",
				 PRIVATE_MAX_ITEMS);
			iq_async_error(&op->a, s, "not-acceptable", text);
		} else if (req->result < 0) {
			iq_async_error(&op->a, s, "internal-server-error", NULL);
		} else if (op->is_set) {
			iq_async_result(&op->a, s, NULL);
		} else if ((q = private_get_answer(op))) {
			iq_async_result(&op->a, s, q);
		} else {
			iq_async_error(&op->a, s, "internal-server-error", NULL);
		}
	}
	/* XEP-0402 #compat: bookmarks stored here are mirrored to PEP. */
	for (unsigned i = 0; op->is_set && req->result == 0 && i < op->n; i++)
		if (strcmp(op->items[i].ns, NS_BOOKMARKS_LEGACY) == 0 &&
		    strcmp(op->items[i].name, "storage") == 0)
			bookmarks_compat_private_set(iq_async_worker(&op->a), req->user,
						     op->items[i].xml, op->items[i].len);
	if (!op->is_set)
		for (unsigned i = 0; i < op->n; i++)
			free(op->items[i].xml);
	iq_async_free(&op->a);
}

/* The effective size limit: the stored text must also fit a stanza to be read back. */
static size_t private_limit(const struct config *cfg)
{
	return cfg->max_private_bytes < cfg->max_stanza_bytes ? cfg->max_private_bytes :
								 cfg->max_stanza_bytes;
}

/*
 * Checks the children of <query/>. Returns their count, or 0 after
 * answering the error.
 */
static unsigned private_check(struct iq_request *rq)
{
	unsigned n = 0;

	for (struct xml_node *el = xml_first_element(rq->payload); el; el = xml_next_element(el)) {
		if (private_xml_ns_reserved(el->ns)) {
			iq_reply_error(rq, "not-acceptable", "this namespace is reserved");
			return 0;
		}
		n++;
	}
	if (n == 0)
		iq_reply_error(rq, "not-acceptable", "the query needs a namespaced child element");
	else if (n > PRIVATE_MAX_PER_REQUEST)
		iq_reply_error(rq, "not-acceptable", "too many elements in one request");
	else
		return n;
	return 0;
}

/*
 * Builds the request for the n children of the query. For a set, each
 * child is serialized into `b` first (offsets in lens/offs) and too large
 * ones are refused here. Returns NULL after answering an error.
 */
static struct private_op *private_build(struct iq_request *rq, unsigned n, bool is_set)
{
	const struct config *cfg = rq->w->srv->cfg;
	struct strbuf *b = &rq->w->scratch;
	size_t offs[PRIVATE_MAX_PER_REQUEST], lens[PRIVATE_MAX_PER_REQUEST];
	size_t names = 0, at = 0;
	char user[JID_PART_MAX + 1], text[96];
	struct private_op *op = NULL;
	struct xml_node *el;
	unsigned i = 0;

	strbuf_clear(b);
	for (el = xml_first_element(rq->payload); el; el = xml_next_element(el), i++) {
		names += strlen(el->ns) + strlen(el->name) + 2;
		offs[i] = b->len;
		lens[i] = 0;
		if (!is_set || stored_xml_is_empty(el))
			continue;
		stored_xml_serialize(b, el);
		lens[i] = b->len - offs[i];
		if (lens[i] > private_limit(cfg)) {
			strbuf_clear(b);
			snprintf(text, sizeof(text),
				 "a private XML element is larger than %zu bytes",
				 private_limit(cfg));
			iq_reply_error(rq, "not-acceptable", text);
			return NULL;
		}
	}
	if (b->oom) {
		strbuf_clear(b);
		iq_reply_error(rq, "internal-server-error", NULL);
		return NULL;
	}
	snprintf(user, sizeof(user), "%.*s", (int)rq->from->local_len, rq->from->buf);
	op = iq_async_new(rq, sizeof(*op) + names + b->len + n, user, NS_PRIVATE, "query",
			  private_run, private_done);
	if (!op)
		goto out;
	op->is_set = is_set;
	op->n = n;
	for (el = xml_first_element(rq->payload), i = 0; el; el = xml_next_element(el), i++) {
		struct private_item *it = &op->items[i];
		size_t nl = strlen(el->ns) + 1, ml = strlen(el->name) + 1;

		it->ns = memcpy(op->buf + at, el->ns, nl);
		at += nl;
		it->name = memcpy(op->buf + at, el->name, ml);
		at += ml;
		if (lens[i]) {
			it->xml = memcpy(op->buf + at, b->data + offs[i], lens[i]);
			it->xml[lens[i]] = '\0';
			it->len = lens[i];
			at += lens[i] + 1;
		}
	}
out:
	strbuf_clear(b);
	return op;
}

static void private_request(struct iq_request *rq, bool is_set)
{
	struct private_op *op;
	unsigned n;

	/* XEP-0049: only the account itself, never on someone else's behalf. */
	if (rq->scope == IQ_SCOPE_CONTACT) {
		iq_reply_error(rq, "forbidden", "private XML belongs to its owner only");
		return;
	}
	n = private_check(rq);
	if (!n)
		return;
	op = private_build(rq, n, is_set);
	if (op)
		iq_async_submit(rq, &op->a);
}

void private_xml_get(struct iq_request *rq)
{
	private_request(rq, false);
}

void private_xml_set(struct iq_request *rq)
{
	private_request(rq, true);
}
