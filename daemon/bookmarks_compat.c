/* SPDX-License-Identifier: MIT */
/*
 * Bookmarks in private XML and in PEP kept in step; see
 * bookmarks_compat.h. The PEP side goes through pubsub.c's work on an
 * account's behalf (pubsub_pep_replace, pubsub_pep_read); the private
 * XML side is one storage request writing the element.
 */
#include <errno.h>
#include <stdbool.h>
#include <stdlib.h>
#include <string.h>

#include "arena.h"
#include "bookmarks_compat.h"
#include "config.h"
#include "jid.h"
#include "log.h"
#include "private_xml.h"
#include "pubsub.h"
#include "pubsub_store.h"
#include "server.h"
#include "storage.h"
#include "stored_xml.h"
#include "strbuf.h"
#include "worker.h"

#define BC_ARENA_CHUNK	4096

/* Whether an XEP-0048 / XEP-0402 boolean attribute says true. */
static bool bc_true(const char *v)
{
	return v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
}

/* Copies <name> (its text) from one conference element to another (ns of `to`). */
static int bc_copy_text_child(struct arena *a, const struct xml_node *from, struct xml_node *to,
			      const char *name)
{
	const struct xml_node *c = xml_child(from, NULL, name);
	struct xml_node *el;
	const char *t;

	if (!c)
		return 0;
	t = xml_text(a, c);
	el = xml_node_add_child(a, to, NULL, name);
	if (!t || !el || xml_node_add_text(a, el, t, strlen(t)) < 0)
		return -ENOMEM;
	return 0;
}

/*
 * The name, autojoin, nick and password of one conference element into
 * `to` (a conference of the other namespace). 0 or -ENOMEM.
 */
static int bc_copy_conference(struct arena *a, const struct xml_node *from, struct xml_node *to)
{
	const char *name = xml_attr_get(from, "name");

	if ((name && xml_attr_set(a, to, "name", name) < 0) ||
	    (bc_true(xml_attr_get(from, "autojoin")) && xml_attr_set(a, to, "autojoin", "true") < 0))
		return -ENOMEM;
	if (bc_copy_text_child(a, from, to, "nick") < 0 ||
	    bc_copy_text_child(a, from, to, "password") < 0)
		return -ENOMEM;
	return 0;
}

/* ---- private XML -> PEP ---- */

/*
 * The PEP items of a storage:bookmarks element (its conferences with a
 * valid bare room JID; the first of duplicates counts) into items[];
 * returns the count, or -errno.
 */
static int bc_items_of_storage(struct arena *a, const struct xml_node *storage,
			       struct pubsub_pep_item *items)
{
	int n = 0;

	for (const struct xml_node *c = xml_first_element(storage); c; c = xml_next_element(c)) {
		const char *room = xml_attr_get(c, "jid");
		struct xml_node *conf;
		struct jid j;
		bool dup = false;

		if (strcmp(c->name, "conference") != 0 || !room ||
		    jid_parse(&j, room, strlen(room)) < 0 || j.res_len || !j.local_len)
			continue;
		for (int i = 0; i < n && !dup; i++)
			dup = strcmp(items[i].id, j.buf) == 0;
		if (dup)
			continue;
		if (n == BOOKMARKS_COMPAT_MAX)
			return -E2BIG;
		conf = xml_node_new(a, NS_BOOKMARKS2, "conference");
		items[n].id = arena_strdup(a, j.buf);
		if (!conf || !items[n].id || bc_copy_conference(a, c, conf) < 0)
			return -ENOMEM;
		items[n++].payload = conf;
	}
	return n;
}

void bookmarks_compat_private_set(struct worker *w, const char *user, const char *xml,
				  size_t len)
{
	struct pubsub_pep_item *items = NULL;
	struct xml_node *storage = NULL;
	struct arena a;
	int n = 0, ret;

	/* Stopping: the store takes no new work. */
	if (w->srv->shutting_down)
		return;
	arena_init(&a, BC_ARENA_CHUNK);
	if (xml) {
		storage = stored_xml_parse(w->xml, &a, xml, len);
		items = arena_alloc(&a, BOOKMARKS_COMPAT_MAX * sizeof(*items));
		n = storage && items ? bc_items_of_storage(&a, storage, items) : -ENOMEM;
	}
	ret = n < 0 ? n : pubsub_pep_replace(w, user, NS_BOOKMARKS2, items, (size_t)n, true);
	if (ret < 0)
		log_warn("bookmarks.to_pep_failed", "user=%s err=%d", user, ret);
	else
		log_debug("bookmarks.to_pep", "user=%s rooms=%d", user, n);
	arena_release(&a);
}

/* ---- PEP -> private XML ---- */

/*
 * The private XML rewrite, in two storage requests: the stored element
 * is read first (its XEP-0048 <url/> bookmarks have no PEP counterpart
 * and are kept), then the merged element is written. `xml` holds the
 * conferences made of the PEP items (len 0: none), then the text to
 * write; `old` the stored text read.
 */
struct bc_write {
	struct storage_req req;		/* first */
	struct worker *w;
	bool writing;			/* second request: store xml (len 0: delete) */
	char *old;			/* read: stored text (malloc'd) or NULL */
	size_t old_len;
	size_t len;
	char xml[];
};

static void bc_write_done(struct storage_req *req);

static int bc_write_run(struct storage *st, struct storage_req *req)
{
	struct bc_write *bw = (struct bc_write *)req;
	int ret;

	if (bw->writing)
		return private_xml_store_set(st, req->user, NS_BOOKMARKS_LEGACY, "storage",
					     bw->len ? bw->xml : NULL, bw->len);
	ret = private_xml_store_get(st, req->user, NS_BOOKMARKS_LEGACY, "storage", &bw->old,
				    &bw->old_len);
	return ret == -ENOENT ? 0 : ret;
}

/* Submits bw (the read, or the write when bw->writing). */
static void bc_write_submit(struct worker *w, struct bc_write *bw)
{
	bw->req.op = STORAGE_OP_RUN;
	bw->req.run = bc_write_run;
	bw->req.done = bc_write_done;
	bw->req.inbox = &w->inbox;
	storage_queue_submit(w->srv->store, &bw->req);
}

/*
 * The element to write: the conferences of the PEP items (bw->xml) with
 * the <url/> children of the stored element appended, serialized into b
 * (left empty when there is nothing to keep: the element is deleted).
 * 0 or -errno.
 */
static int bc_merge(struct bc_write *bw, struct arena *a, struct strbuf *b)
{
	struct xml_node *storage = NULL, *old = NULL, *el, *next;

	if (bw->len && !(storage = stored_xml_parse(bw->w->xml, a, bw->xml, bw->len)))
		return -EIO;
	if (bw->old_len && !(old = stored_xml_parse(bw->w->xml, a, bw->old, bw->old_len)))
		log_warn("bookmarks.private_unreadable", "user=%s", bw->req.user);
	for (el = old ? xml_first_element(old) : NULL; el; el = next) {
		next = xml_next_element(el);
		if (strcmp(el->name, "url") != 0 || strcmp(el->ns, NS_BOOKMARKS_LEGACY) != 0)
			continue;
		if (!storage && !(storage = xml_node_new(a, NS_BOOKMARKS_LEGACY, "storage")))
			return -ENOMEM;
		xml_node_remove(el);
		xml_node_append(storage, el);
	}
	if (storage)
		stored_xml_serialize(b, storage);
	return b->oom ? -ENOMEM : 0;
}

static void bc_write_done(struct storage_req *req)
{
	struct bc_write *bw = (struct bc_write *)req, *next = NULL;
	const struct config *cfg;
	struct strbuf b = STRBUF_INIT;
	struct arena a;
	int err = req->result;

	if (err == -ESHUTDOWN || bw->w->srv->shutting_down)
		goto out;
	if (err < 0 || bw->writing)
		goto out;
	cfg = bw->w->srv->cfg;
	arena_init(&a, BC_ARENA_CHUNK);
	err = bc_merge(bw, &a, &b);
	arena_release(&a);
	if (!err && (b.len > cfg->max_private_bytes || b.len > cfg->max_stanza_bytes))
		err = -E2BIG;
	if (!err && !(next = calloc(1, sizeof(*next) + b.len + 1)))
		err = -ENOMEM;
	if (!err) {
		next->w = bw->w;
		next->writing = true;
		next->len = b.len;
		if (b.len)
			memcpy(next->xml, b.data, b.len);
		strcpy(next->req.user, req->user);
		bc_write_submit(bw->w, next);
	}
out:
	if (err < 0 && err != -ESHUTDOWN)
		log_warn("bookmarks.to_private_failed", "user=%s err=%d", req->user, err);
	strbuf_free(&b);
	free(bw->old);
	free(bw);
}

/*
 * <storage xmlns='storage:bookmarks'> with one conference per item
 * (jid = the item id) serialized into b (nothing when there is no
 * item). 0 or -errno.
 */
static int bc_storage_of_items(struct worker *w, struct arena *a, const struct ps_item_row *rows,
			       struct strbuf *b)
{
	struct xml_node *storage = xml_node_new(a, NS_BOOKMARKS_LEGACY, "storage");
	unsigned n = 0;

	if (!storage)
		return -ENOMEM;
	for (const struct ps_item_row *r = rows; r; r = r->next) {
		struct xml_node *p, *conf;

		if (!r->payload_len)
			continue;
		p = stored_xml_parse(w->xml, a, r->payload, r->payload_len);
		/* Not a bookmark (another payload someone published): not carried. */
		if (!p || strcmp(p->name, "conference") != 0 || strcmp(p->ns, NS_BOOKMARKS2) != 0)
			continue;
		if (++n > BOOKMARKS_COMPAT_MAX)
			return -E2BIG;
		conf = xml_node_add_child(a, storage, NULL, "conference");
		if (!conf || xml_attr_set(a, conf, "jid", r->id) < 0 ||
		    bc_copy_conference(a, p, conf) < 0)
			return -ENOMEM;
	}
	if (n)
		stored_xml_serialize(b, storage);
	return b->oom ? -ENOMEM : 0;
}

/* The bookmarks node's items were read: the private XML element follows them. */
static void bc_pep_read(struct worker *w, const char *user, const void *ctx, int err,
			const struct ps_item_row *rows)
{
	struct strbuf b = STRBUF_INIT;
	struct bc_write *bw = NULL;
	struct arena a;

	(void)ctx;
	arena_init(&a, BC_ARENA_CHUNK);
	if (!err)
		err = bc_storage_of_items(w, &a, rows, &b);
	if (!err && !(bw = calloc(1, sizeof(*bw) + b.len + 1)))
		err = -ENOMEM;
	if (err) {
		log_warn("bookmarks.to_private_failed", "user=%s err=%d", user, err);
		goto out;
	}
	bw->w = w;
	bw->len = b.len;
	if (b.len)
		memcpy(bw->xml, b.data, b.len);
	strcpy(bw->req.user, user);
	bc_write_submit(w, bw);
out:
	strbuf_free(&b);
	arena_release(&a);
}

void bookmarks_compat_pep_changed(struct worker *w, const char *user)
{
	int ret;

	if (strlen(user) > STORAGE_USER_MAX)
		return;
	ret = pubsub_pep_read(w, user, NS_BOOKMARKS2, bc_pep_read, NULL, 0);
	if (ret < 0)
		log_warn("bookmarks.to_private_failed", "user=%s err=%d", user, ret);
}
