/* SPDX-License-Identifier: MIT */
/*
 * The room archive (XEP-0313 on the room JID, section 4.1.2 / 5.1.2):
 * the query form, queries with the form's filters (with, start, end,
 * before-id, after-id, ids) and RSM paging (XEP-0059: max, after, before,
 * an empty before for the last page), flipped pages, and the archive's
 * metadata. Rooms store each message once (muc.c, muc_archive_put); a
 * query runs on the storage thread and its completion sends the results,
 * then the iq result with <fin/>.
 *
 * Access (XEP-0313 5.1.2): whoever may enter the room: not outcasts, in a
 * members-only room members and up, in a password-protected room
 * occupants and members. Real JIDs appear in results (and 'with' may name
 * one) only for those who may see them in the room.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dataform.h"
#include "iq_async.h"
#include "log.h"
#include "muc.h"
#include "muc_room.h"
#include "router.h"
#include "rsm.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "stored_xml.h"
#include "worker.h"

#define NS_DELAY		"urn:xmpp:delay"
#define NS_XDATA_VALIDATE	"http://jabber.org/protocol/xdata-validate"
#define MUC_MAM_PAGE_DEFAULT	50	/* results per page when the query gives no <max/> */
#define MUC_MAM_PAGE_MAX	250	/* most results per page, whatever it asks */
#define MUC_MAM_QUERYID_MAX	256
#define MUC_MAM_UID_MAX		64	/* longest archive id ours can be */
#define MUC_MAM_MAX_IDS		MUC_MAM_PAGE_MAX	/* ids in one 'ids' field */
#define MUC_MAM_ARENA_CHUNK	4096

struct mam_row {
	int64_t seq, at;
	char *stanza_id, *nick, *real_jid, *stanza;
	size_t stanza_len;
};

struct mam_query {
	struct iq_async a;		/* first: its storage_req is what the queue sees */
	char room[JID_PART_MAX + 1];	/* the room's localpart */
	char room_jid[JID_MAX];
	char queryid[MUC_MAM_QUERYID_MAX + 1];
	struct muc_archive_filter f;
	char with_bare[JID_MAX];
	char with_nick[JID_PART_MAX + 1];
	char after_id[MUC_MAM_UID_MAX + 1];	/* form: after-id */
	char before_id[MUC_MAM_UID_MAX + 1];/* form: before-id */
	char rsm_after[MUC_MAM_UID_MAX + 1];
	char rsm_before[MUC_MAM_UID_MAX + 1];
	bool has_rsm_after, has_rsm_before;	/* an empty <before/> asks for the last page */
	char *ids;			/* NUL-separated 'ids' values, malloc'd */
	size_t nids;
	uint32_t max;
	bool flip, show_jid, metadata;
	/* Filled on the storage thread. */
	struct mam_row *rows;
	size_t nrows, cap;
	bool complete, not_found;
	uint64_t count;
};

/* Frees a query, its rows and its ids, and resets the worker's scratch (iq_async_free). */
static void mam_query_free(struct mam_query *q)
{
	for (size_t i = 0; i < q->nrows; i++) {
		free(q->rows[i].stanza_id);
		free(q->rows[i].nick);
		free(q->rows[i].real_jid);
		free(q->rows[i].stanza);
	}
	free(q->rows);
	free(q->ids);
	iq_async_free(&q->a);
}

/* ---- Storage thread ---- */

static int mam_keep_row(void *arg, const struct muc_archive_row *m)
{
	struct mam_query *q = arg;
	struct mam_row *r;

	if (q->nrows == q->cap) {
		size_t cap = q->cap ? q->cap * 2 : 16;
		struct mam_row *n = realloc(q->rows, cap * sizeof(*n));

		if (!n)
			return -ENOMEM;
		q->rows = n;
		q->cap = cap;
	}
	r = &q->rows[q->nrows];
	r->seq = m->seq;
	r->at = m->at;
	r->stanza_id = strdup(m->stanza_id);
	r->nick = strdup(m->nick);
	r->real_jid = strdup(m->real_jid);
	r->stanza = malloc(m->stanza_len + 1);
	r->stanza_len = m->stanza_len;
	q->nrows++;
	if (!r->stanza_id || !r->nick || !r->real_jid || !r->stanza)
		return -ENOMEM;
	memcpy(r->stanza, m->stanza, m->stanza_len);
	r->stanza[m->stanza_len] = '\0';
	return 0;
}

/* Narrows (lo, hi) by an archive id: 0, or -ENOENT when it is not in the archive. */
static int mam_bound(struct storage *st, struct mam_query *q, const char *id, bool after,
		     int64_t *lo, int64_t *hi)
{
	int64_t seq;
	int ret = muc_db_archive_seq(st, q->room, id, &seq);

	if (ret < 0)
		return ret;
	if (after && seq > *lo)
		*lo = seq;
	if (!after && seq < *hi)
		*hi = seq;
	return 0;
}

/* Rows fetched newest first (backward paging) back into archive order. */
static void mam_reverse(struct mam_query *q)
{
	for (size_t i = 0, j = q->nrows; i + 1 < j; i++, j--) {
		struct mam_row t = q->rows[i];

		q->rows[i] = q->rows[j - 1];
		q->rows[j - 1] = t;
	}
}

/* Drops the last row (the one fetched only to learn whether more exist). */
static void mam_drop_last(struct mam_query *q)
{
	struct mam_row *r = &q->rows[--q->nrows];

	free(r->stanza_id);
	free(r->nick);
	free(r->real_jid);
	free(r->stanza);
}

/*
 * The query on the storage thread: resolves ids to positions, counts the
 * result set, fetches one page (one row more than asked, to learn whether
 * the page is complete). An unknown id sets not_found (item-not-found).
 */
static int mam_run(struct storage *st, struct storage_req *req)
{
	struct mam_query *q = (struct mam_query *)req;
	struct muc_archive_filter *f = &q->f;
	int ret = 0;

	if (q->metadata) {
		struct muc_archive_filter all = { 0, INT64_MAX, INT64_MIN, INT64_MAX, NULL, NULL };

		ret = muc_db_archive_query(st, q->room, &all, false, 1, mam_keep_row, q);
		if (ret == 0)
			ret = muc_db_archive_query(st, q->room, &all, true, 1, mam_keep_row, q);
		return ret;
	}
	if (q->nids) {
		/* The messages asked for by id, in archive order; one unknown fails all. */
		const char *id = q->ids;

		for (size_t i = 0; ret == 0 && i < q->nids; i++, id += strlen(id) + 1) {
			size_t before = q->nrows;

			ret = muc_db_archive_get(st, q->room, id, mam_keep_row, q);
			if (ret == 0 && q->nrows == before) {
				q->not_found = true;
				return 0;
			}
		}
		for (size_t i = 1; ret == 0 && i < q->nrows; i++) {
			struct mam_row t = q->rows[i];
			size_t j = i;

			for (; j > 0 && q->rows[j - 1].seq > t.seq; j--)
				q->rows[j] = q->rows[j - 1];
			q->rows[j] = t;
		}
		q->count = q->nrows;
		q->complete = true;
		return ret;
	}
	/* The form's id bounds belong to the result set; RSM's only to the page. */
	if ((q->after_id[0] && mam_bound(st, q, q->after_id, true, &f->lo, &f->hi) == -ENOENT) ||
	    (q->before_id[0] && mam_bound(st, q, q->before_id, false, &f->lo, &f->hi) == -ENOENT)) {
		q->not_found = true;
		return 0;
	}
	ret = muc_db_archive_count(st, q->room, f, &q->count);
	if (ret < 0)
		return ret;
	if ((q->has_rsm_after && mam_bound(st, q, q->rsm_after, true, &f->lo, &f->hi) == -ENOENT) ||
	    (q->has_rsm_before && q->rsm_before[0] &&
	     mam_bound(st, q, q->rsm_before, false, &f->lo, &f->hi) == -ENOENT)) {
		q->not_found = true;
		return 0;
	}
	/* One more than the page: whether it was there tells if the page is complete. */
	ret = muc_db_archive_query(st, q->room, f, q->has_rsm_before, q->max + 1, mam_keep_row, q);
	if (ret < 0)
		return ret;
	q->complete = q->nrows <= q->max;
	if (!q->complete)
		mam_drop_last(q);
	if (q->has_rsm_before)
		mam_reverse(q);
	return 0;
}

/* ---- Completion: results, then <fin/> ---- */

/* One result message (4.2): the archived stanza forwarded, stamped, without 'to'. */
static struct xml_node *mam_result(struct worker *w, struct arena *a, const struct mam_query *q,
				   const struct mam_row *r)
{
	struct xml_node *m, *res, *fwd, *d, *inner, *x, *item, *ch, *next;
	char stamp[32];

	inner = stored_xml_parse(w->xml, a, r->stanza, r->stanza_len);
	if (!inner)
		return NULL;
	/* 5.1.2: MUC data other than the room's own is not passed on. */
	for (ch = xml_first_element(inner); ch; ch = next) {
		next = xml_next_element(ch);
		if (strcmp(ch->ns, NS_MUC_USER) == 0 && strcmp(ch->name, "x") == 0)
			xml_node_remove(ch);
	}
	if (q->show_jid) {
		x = xml_node_add_child(a, inner, NS_MUC_USER, "x");
		item = x ? xml_node_add_child(a, x, NS_MUC_USER, "item") : NULL;
		if (!item || xml_attr_set(a, item, "jid", r->real_jid) < 0)
			return NULL;
	}
	muc_format_time(r->at, stamp, sizeof(stamp));
	m = xml_node_new(a, XML_NS_CLIENT, "message");
	if (!m || xml_attr_set(a, m, "from", q->room_jid) < 0 ||
	    !(res = xml_node_add_child(a, m, NS_MAM, "result")) ||
	    (q->queryid[0] && xml_attr_set(a, res, "queryid", q->queryid) < 0) ||
	    xml_attr_set(a, res, "id", r->stanza_id) < 0 ||
	    !(fwd = xml_node_add_child(a, res, NS_FORWARD, "forwarded")) ||
	    !(d = xml_node_add_child(a, fwd, NS_DELAY, "delay")) ||
	    xml_attr_set(a, d, "stamp", stamp) < 0)
		return NULL;
	xml_node_append(fwd, inner);
	return m;
}

/* <fin complete?><set><first/><last/><count/></set></fin> (XEP-0313 4.3). */
static struct xml_node *mam_fin(struct arena *a, const struct mam_query *q)
{
	struct xml_node *fin = xml_node_new(a, NS_MAM, "fin");
	struct rsm_reply r = {
		.first = q->nrows ? q->rows[0].stanza_id : NULL,
		.last = q->nrows ? q->rows[q->nrows - 1].stanza_id : NULL,
		.has_count = true,
		.count = q->count > UINT32_MAX ? UINT32_MAX : (uint32_t)q->count,
	};

	if (!fin || (q->complete && xml_attr_set(a, fin, "complete", "true") < 0) ||
	    !rsm_build(a, fin, &r))
		return NULL;
	return fin;
}

/* 8: the first and last message of the archive, or an empty <metadata/>. */
static struct xml_node *mam_metadata(struct arena *a, const struct mam_query *q)
{
	struct xml_node *md = xml_node_new(a, NS_MAM, "metadata");
	char stamp[32];

	if (!md)
		return NULL;
	for (size_t i = 0; i < q->nrows && i < 2; i++) {
		struct xml_node *e = xml_node_add_child(a, md, NS_MAM, i == 0 ? "start" : "end");

		muc_format_time(q->rows[i].at, stamp, sizeof(stamp));
		if (!e || xml_attr_set(a, e, "id", q->rows[i].stanza_id) < 0 ||
		    xml_attr_set(a, e, "timestamp", stamp) < 0)
			return NULL;
	}
	return md;
}

/*
 * Where the answers go: the requester's session on this worker, or, when
 * the requester is at home on another worker, the router, which posts
 * them there in the order they are sent.
 */
struct mam_dest {
	struct session *s;
	bool routed;
};

/* One answer (with 'from' and 'to' set) to the requester. */
static void mam_send(struct worker *w, const struct mam_dest *d, struct xml_node *st)
{
	if (!d->routed)
		router_deliver(d->s, st);
	else if (router_route_stanza(w, st) < 0)
		log_warn("muc.route_failed", "msg=\"could not route an archive answer\"");
}

/*
 * The iq result (payload) or, with a condition, the error: through
 * iq_async for a session here, built the same way for one elsewhere.
 */
static void mam_answer(struct mam_query *q, const struct mam_dest *d, struct xml_node *payload,
		       const char *condition, const char *text)
{
	struct worker *w = iq_async_worker(&q->a);
	struct arena *a = iq_async_arena(&q->a);
	const char *domain = w->srv->cfg->domain;
	struct xml_node *shell, *r = NULL;

	if (!d->routed) {
		if (condition)
			iq_async_error(&q->a, d->s, condition, text);
		else
			iq_async_result(&q->a, d->s, payload);
		return;
	}
	/* The request as it came (iq_async.c does the same), answered from its 'to'. */
	shell = xml_node_new(a, XML_NS_CLIENT, "iq");
	if (!shell || xml_attr_set(a, shell, "type", "get") < 0 ||
	    (q->a.id[0] && xml_attr_set(a, shell, "id", q->a.id) < 0) ||
	    xml_attr_set(a, shell, "from", q->a.from) < 0 ||
	    (q->a.to[0] && xml_attr_set(a, shell, "to", q->a.to) < 0))
		goto oom;
	if (condition) {
		if (!xml_node_add_child(a, shell, q->a.ns, q->a.name))
			goto oom;
		r = stanza_error_reply(a, shell, domain, condition, text);
	} else {
		r = stanza_iq_result(a, shell, domain);
		if (r && payload)
			xml_node_append(r, payload);
	}
	if (!r)
		goto oom;
	mam_send(w, d, r);
	return;
oom:
	log_warn("iq.reply_failed", "jid=%s msg=\"out of memory\"", q->a.from);
}

/*
 * On the worker: the results one message each, then the iq result, both
 * to the requester (a session here that is gone gets nothing), then the
 * query is freed.
 */
static void mam_done(struct storage_req *req)
{
	struct mam_query *q = (struct mam_query *)req;
	struct worker *w = iq_async_worker(&q->a);
	struct mam_dest d = {
		.routed = muc_home_elsewhere(w, q->a.from, strlen(q->a.from)),
	};
	struct xml_node *payload;
	struct arena a;

	d.s = iq_async_session(&q->a);
	if (req->result == -ESHUTDOWN || (!d.s && !d.routed))
		goto out;
	if (req->result < 0) {
		log_error("muc.archive_query_failed", "room=%s err=%d", q->room, req->result);
		mam_answer(q, &d, NULL, "internal-server-error", NULL);
		goto out;
	}
	if (q->not_found) {
		mam_answer(q, &d, NULL, "item-not-found", "no such id in the archive");
		goto out;
	}
	if (q->metadata) {
		payload = mam_metadata(iq_async_arena(&q->a), q);
		if (payload)
			mam_answer(q, &d, payload, NULL, NULL);
		else
			mam_answer(q, &d, NULL, "internal-server-error", NULL);
		goto out;
	}
	arena_init(&a, MUC_MAM_ARENA_CHUNK);
	for (size_t k = 0; k < q->nrows; k++) {
		size_t i = q->flip ? q->nrows - 1 - k : k;
		struct xml_node *m = mam_result(w, &a, q, &q->rows[i]);

		if (!m || xml_attr_set(&a, m, "to", q->a.from) < 0) {
			log_warn("muc.archive_row_unreadable", "room=%s id=%s", q->room,
				 q->rows[i].stanza_id);
		} else {
			mam_send(w, &d, m);
		}
		arena_reset(&a);
		if (d.routed)
			continue;
		/* A delivery may end the session (its output overflowed). */
		d.s = sessdir_find_full(w->sessions, q->a.from, strlen(q->a.from));
		if (!d.s)
			break;
	}
	arena_release(&a);
	if (!d.s && !d.routed)
		goto out;
	payload = mam_fin(iq_async_arena(&q->a), q);
	if (payload)
		mam_answer(q, &d, payload, NULL, NULL);
	else
		mam_answer(q, &d, NULL, "internal-server-error", NULL);
out:
	mam_query_free(q);
}

/* ---- The request ---- */

/* The query form (4.1.1 / 5.3): the fields a query may use. */
static void mam_form(struct muc_ctx *c)
{
	struct arena *a = c->a;
	struct xml_node *q = xml_node_new(a, NS_MAM, "query");
	struct xml_node *x = dataform_new(a, DATAFORM_FORM, NS_MAM), *ids, *v;

	if (!q || !x ||
	    !dataform_add_field(a, x, DATAFORM_FIELD_JID_SINGLE, "with", NULL) ||
	    !dataform_add_field(a, x, DATAFORM_FIELD_TEXT_SINGLE, "start", NULL) ||
	    !dataform_add_field(a, x, DATAFORM_FIELD_TEXT_SINGLE, "end", NULL) ||
	    !dataform_add_field(a, x, DATAFORM_FIELD_TEXT_SINGLE, "before-id", NULL) ||
	    !dataform_add_field(a, x, DATAFORM_FIELD_TEXT_SINGLE, "after-id", NULL) ||
	    !(ids = dataform_add_field(a, x, DATAFORM_FIELD_LIST_MULTI, "ids", NULL)) ||
	    !(v = xml_node_add_child(a, ids, NS_XDATA_VALIDATE, "validate")) ||
	    xml_attr_set(a, v, "datatype", "xs:string") < 0 ||
	    !xml_node_add_child(a, v, NS_XDATA_VALIDATE, "open")) {
		muc_reply_error(c, "internal-server-error", NULL);
		return;
	}
	xml_node_append(q, x);
	muc_reply_result(c, q);
}

/* Copies an archive id given by the client; -EINVAL when it cannot be one of ours. */
static int copy_uid(char *dst, const char *src)
{
	size_t n = strlen(src);

	if (n > MUC_MAM_UID_MAX)
		return -EINVAL;
	memcpy(dst, src, n + 1);
	return 0;
}

/* The form's fields into q. NULL, or the error condition (and *text). */
static const char *mam_read_form(struct muc_ctx *c, struct mam_query *q, const struct dataform *f,
				 const char **text)
{
	static const char *const known[] = { DATAFORM_FORM_TYPE, "with", "start", "end",
					     "before-id", "after-id", "ids" };
	const char *v;

	if (f->form_type && strcmp(f->form_type, NS_MAM) != 0) {
		*text = "not a urn:xmpp:mam:2 form";
		return "bad-request";
	}
	/* 4.1.5: a field the server does not know is feature-not-implemented. */
	for (size_t i = 0; i < f->nfields; i++) {
		size_t k = 0;

		while (k < sizeof(known) / sizeof(known[0]) && strcmp(f->fields[i].var, known[k]))
			k++;
		if (k == sizeof(known) / sizeof(known[0])) {
			*text = "unknown query field";
			return "feature-not-implemented";
		}
	}
	v = dataform_value(f, "with");
	if (v && v[0]) {
		struct jid j;

		if (jid_parse(&j, v, strlen(v)) < 0) {
			*text = "bad 'with'";
			return "jid-malformed";
		}
		/* The room's own occupant JID names a nickname; other JIDs real senders. */
		if (jid_has_resource(&j) && j.res_off - 1 == c->room->jid_len &&
		    memcmp(j.buf, c->room->jid, c->room->jid_len) == 0) {
			snprintf(q->with_nick, sizeof(q->with_nick), "%s", j.buf + j.res_off);
			q->f.with_nick = q->with_nick;
		} else {
			if (!q->show_jid) {
				*text = "real JIDs are hidden in this room";
				return "forbidden";
			}
			jid_to_bare(&j);
			snprintf(q->with_bare, sizeof(q->with_bare), "%s", j.buf);
			q->f.with_bare = q->with_bare;
		}
	}
	v = dataform_value(f, "start");
	if (v && v[0] && muc_parse_datetime(v, &q->f.start) < 0) {
		*text = "bad 'start'";
		return "bad-request";
	}
	v = dataform_value(f, "end");
	if (v && v[0] && muc_parse_datetime(v, &q->f.end) < 0) {
		*text = "bad 'end'";
		return "bad-request";
	}
	v = dataform_value(f, "after-id");
	if (v && v[0] && copy_uid(q->after_id, v) < 0)
		goto unknown;
	v = dataform_value(f, "before-id");
	if (v && v[0] && copy_uid(q->before_id, v) < 0)
		goto unknown;
	{
		const struct dataform_field *fl = dataform_get(f, "ids");
		size_t size = 0;
		char *p;

		if (!fl || !fl->nvalues)
			return NULL;
		if (fl->nvalues > MUC_MAM_MAX_IDS) {
			*text = "too many ids";
			return "policy-violation";
		}
		for (size_t i = 0; i < fl->nvalues; i++) {
			if (strlen(fl->values[i]) > MUC_MAM_UID_MAX)
				goto unknown;
			size += strlen(fl->values[i]) + 1;
		}
		q->ids = p = malloc(size);
		if (!p) {
			*text = NULL;
			return "internal-server-error";
		}
		for (size_t i = 0; i < fl->nvalues; i++) {
			memcpy(p, fl->values[i], strlen(fl->values[i]) + 1);
			p += strlen(fl->values[i]) + 1;
		}
		q->nids = fl->nvalues;
	}
	return NULL;
unknown:
	*text = "no such id in the archive";
	return "item-not-found";
}

/* The RSM <set/> of the query (XEP-0059 2.1-2.5, rsm.h); <index/> is not supported. */
static const char *mam_read_rsm(struct muc_ctx *c, struct mam_query *q, const char **text)
{
	struct rsm_request r;

	if (rsm_parse(c->a, xml_first_element(c->st), &r, text) < 0)
		return "bad-request";
	if (!r.present)
		return NULL;
	q->max = rsm_page_size(&r, MUC_MAM_PAGE_DEFAULT, MUC_MAM_PAGE_MAX);
	if (r.after) {
		/* Longer than any id of ours: not in the archive. */
		if (copy_uid(q->rsm_after, r.after) < 0)
			goto unknown;
		q->has_rsm_after = true;
	}
	if (r.before) {
		if (copy_uid(q->rsm_before, r.before) < 0)
			goto unknown;
		q->has_rsm_before = true;
	}
	return NULL;
unknown:
	*text = "no such id in the archive";
	return "item-not-found";
}

/* Whether the requester may read the room's archive (5.1.2). */
static const char *mam_access(struct muc_ctx *c, bool *show_jid)
{
	struct muc_room *room = c->room;
	enum muc_affiliation aff = muc_room_affiliation(room, c->from->buf, c->from->len);
	struct muc_occupant *occ = muc_occupant_by_jid(room, c->from->buf, c->from->len);
	const char *err = muc_check_enter(aff, room->cfg.members_only);

	if (err)
		return "forbidden";
	if (room->cfg.password && !occ && aff < MUC_AFF_MEMBER)
		return "forbidden";
	*show_jid = room->cfg.non_anonymous || aff >= MUC_AFF_ADMIN ||
		    (occ && occ->role == MUC_ROLE_MODERATOR);
	return NULL;
}

void muc_archive_iq(struct muc_ctx *c)
{
	struct muc_room *room = c->room;
	struct xml_node *payload = xml_first_element(c->st);
	bool get = strcmp(stanza_type(c->st), "get") == 0;
	bool metadata = strcmp(payload->name, "metadata") == 0;
	const char *err, *text = NULL, *qid;
	struct iq_request rq;
	struct session *s;
	struct mam_query *q;
	const struct xml_node *form;
	bool show_jid = false;

	if (!room->cfg.archive || !c->svc->cfg->max_muc_archive ||
	    (strcmp(payload->name, "query") != 0 && !metadata) || (metadata && !get)) {
		muc_reply_error(c, "service-unavailable", NULL);
		return;
	}
	err = mam_access(c, &show_jid);
	if (err) {
		muc_reply_error(c, err, "you may not read this room's archive");
		return;
	}
	if (get && !metadata) {
		mam_form(c);
		return;
	}
	qid = xml_attr_get(payload, "queryid");
	if (qid && strlen(qid) > MUC_MAM_QUERYID_MAX) {
		muc_reply_error(c, "bad-request", "queryid too long");
		return;
	}
	/*
	 * iq_async bounds the requests in flight per connection and keeps the
	 * addressing. A requester at home on another worker has no
	 * connection here: its answers are routed (mam_done).
	 */
	s = NULL;
	if (!muc_home_elsewhere(c->w, c->from->buf, c->from->len)) {
		s = sessdir_find_full(c->w->sessions, c->from->buf, c->from->len);
		if (!s || !s->conn) {
			muc_reply_error(c, "resource-constraint", "try again once connected");
			return;
		}
	}
	rq = (struct iq_request){
		.w = c->w,
		.conn = s ? s->conn : NULL,
		.iq = c->st,
		.payload = payload,
		.from = c->from,
		.to = c->to,
		.scope = IQ_SCOPE_SERVER,
	};
	q = iq_async_new(&rq, sizeof(*q), "", NS_MAM, metadata ? "metadata" : "query", mam_run,
			 mam_done);
	if (!q)
		return;
	snprintf(q->room, sizeof(q->room), "%.*s", (int)room->name_len, room->jid);
	snprintf(q->room_jid, sizeof(q->room_jid), "%s", room->jid);
	snprintf(q->queryid, sizeof(q->queryid), "%s", qid ? qid : "");
	q->f = (struct muc_archive_filter){ 0, INT64_MAX, INT64_MIN, INT64_MAX, NULL, NULL };
	q->max = MUC_MAM_PAGE_DEFAULT;
	q->show_jid = show_jid;
	q->metadata = metadata;
	q->flip = xml_child(payload, NS_MAM, "flip-page") != NULL;
	form = metadata ? NULL : xml_child(payload, NS_DATA_FORMS, "x");
	if (form) {
		struct dataform f;
		const char *why = NULL;

		if (dataform_parse(c->a, form, &f, &why) < 0) {
			err = "bad-request";
			text = why;
		} else {
			err = mam_read_form(c, q, &f, &text);
		}
	}
	if (!err && !metadata)
		err = mam_read_rsm(c, q, &text);
	if (!err && q->has_rsm_after && q->has_rsm_before) {
		err = "bad-request";
		text = "<after/> and <before/> together are not defined (use after-id/before-id)";
	}
	if (err) {
		muc_reply_error(c, err, text);
		/* Not submitted: give back the connection's in-flight slot unused. */
		q->a.counted = false;
		free(q->ids);
		free(q);
		return;
	}
	iq_async_submit(&rq, &q->a);
}
