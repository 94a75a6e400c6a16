/* SPDX-License-Identifier: MIT */
/*
 * Rosters in memory and the jabber:iq:roster protocol (RFC 6121 section
 * 2): get (with versioning), set, remove, pushes to interested resources.
 *
 * Changes are made in memory first (the account's roster is the truth
 * while the account has sessions) and persisted by fire-and-forget
 * storage requests; the storage queue runs requests in submission order,
 * so a later load (the next login) sees every change.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "durable.h"
#include "iq.h"
#include "jid.h"
#include "log.h"
#include "presence.h"
#include "roster.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "storage.h"
#include "stored_xml.h"
#include "strbuf.h"
#include "subscription.h"
#include "worker.h"

/* ---- The data structure ---- */

/*
 * FNV-1a over the normalized JID. Unseeded: only the account's own
 * resources add items (bounded by max_roster_items), so nobody else can
 * choose colliding keys; inbound requests live in a separate list.
 */
static uint64_t roster_hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h ^ (h >> 31);
}

struct roster *roster_new(void)
{
	struct roster *r = calloc(1, sizeof(*r));

	if (!r)
		return NULL;
	r->nbuckets = 16;
	r->buckets = calloc(r->nbuckets, sizeof(*r->buckets));
	if (!r->buckets) {
		free(r);
		return NULL;
	}
	return r;
}

/* Frees an item that is already unlinked from list and hash. */
static void roster_item_free(struct roster_item *it)
{
	free(it->name);
	free(it->groups);
	free(it);
}

void roster_free(struct roster *r)
{
	if (!r)
		return;
	for (struct roster_item *it = r->items, *next; it; it = next) {
		next = it->next;
		roster_item_free(it);
	}
	for (struct roster_request *q = r->requests, *next; q; q = next) {
		next = q->next;
		free(q->stanza);
		free(q);
	}
	free(r->buckets);
	free(r);
}

struct roster_item *roster_lookup(const struct roster *r, const char *jid, size_t len)
{
	struct roster_item *it;

	if (!r)
		return NULL;
	it = r->buckets[roster_hash(jid, len) & (r->nbuckets - 1)];
	for (; it; it = it->hnext)
		if (it->jid_len == len && memcmp(it->jid, jid, len) == 0)
			return it;
	return NULL;
}

const struct roster_item *roster_find(const struct account *a, const char *bare_jid)
{
	const struct roster_item *it;

	if (!a || !a->roster || !bare_jid)
		return NULL;
	it = roster_lookup(a->roster, bare_jid, strlen(bare_jid));
	return it && !it->deleted ? it : NULL;
}

bool roster_contact_has_from(const struct account *a, const char *bare_jid)
{
	const struct roster_item *it = roster_find(a, bare_jid);

	return it && (it->sub & SUB_FROM);
}

bool roster_contact_has_to(const struct account *a, const char *bare_jid)
{
	const struct roster_item *it = roster_find(a, bare_jid);

	return it && (it->sub & SUB_TO);
}

/* Doubles the buckets when items (tombstones too) outnumber them. */
static void roster_grow(struct roster *r)
{
	size_t n = r->nbuckets * 2;
	struct roster_item **b = calloc(n, sizeof(*b));

	if (!b)
		return;	/* longer chains still work */
	for (struct roster_item *it = r->items; it; it = it->next) {
		size_t i = roster_hash(it->jid, it->jid_len) & (n - 1);

		it->hnext = b[i];
		b[i] = it;
	}
	free(r->buckets);
	r->buckets = b;
	r->nbuckets = n;
}

struct roster_item *roster_upsert(struct roster *r, const char *jid, size_t len)
{
	struct roster_item *it = roster_lookup(r, jid, len);
	size_t i;

	if (it) {
		if (it->deleted) {
			it->deleted = false;
			r->tombstones--;
			r->count++;
		}
		return it;
	}
	it = calloc(1, sizeof(*it) + len + 1);
	if (!it)
		return NULL;
	memcpy(it->jid, jid, len);
	it->jid_len = len;
	it->next = r->items;
	r->items = it;
	i = roster_hash(jid, len) & (r->nbuckets - 1);
	it->hnext = r->buckets[i];
	r->buckets[i] = it;
	r->count++;
	if (r->count + r->tombstones > r->nbuckets)
		roster_grow(r);
	return it;
}

void roster_touch(struct roster *r, struct roster_item *it)
{
	it->version = ++r->version;
}

void roster_remove(struct roster *r, struct roster_item *it)
{
	if (it->deleted)
		return;
	free(it->name);
	free(it->groups);
	it->name = it->groups = NULL;
	it->sub = 0;
	it->approved = false;
	it->deleted = true;
	r->count--;
	r->tombstones++;
}

void roster_forget_tombstones(struct roster *r, uint64_t horizon)
{
	for (struct roster_item **pp = &r->items; *pp;) {
		struct roster_item *it = *pp, **hp;

		if (!it->deleted || it->version > horizon) {
			pp = &it->next;
			continue;
		}
		hp = &r->buckets[roster_hash(it->jid, it->jid_len) & (r->nbuckets - 1)];
		while (*hp != it)
			hp = &(*hp)->hnext;
		*hp = it->hnext;
		*pp = it->next;
		r->tombstones--;
		roster_item_free(it);
	}
	if (horizon > r->horizon)
		r->horizon = horizon;
}

/* Replaces a malloc'd string field; "" and NULL both mean none. 0 or -ENOMEM. */
static int roster_replace_str(char **field, const char *v)
{
	char *copy = NULL;

	if (v && v[0]) {
		copy = strdup(v);
		if (!copy)
			return -ENOMEM;
	}
	free(*field);
	*field = copy;
	return 0;
}

int roster_item_set_name(struct roster_item *it, const char *name)
{
	return roster_replace_str(&it->name, name);
}

int roster_item_set_groups(struct roster_item *it, const char *joined)
{
	return roster_replace_str(&it->groups, joined);
}

struct roster_request *roster_request_find(const struct roster *r, const char *jid, size_t len)
{
	if (!r)
		return NULL;
	for (struct roster_request *q = r->requests; q; q = q->next)
		if (q->jid_len == len && memcmp(q->jid, jid, len) == 0)
			return q;
	return NULL;
}

int roster_request_put(struct roster *r, const char *jid, size_t len, const char *stanza,
		       size_t stanza_len, size_t max)
{
	struct roster_request *q = roster_request_find(r, jid, len), **pp;
	char *copy = malloc(stanza_len + 1);

	if (!copy)
		return -ENOMEM;
	memcpy(copy, stanza, stanza_len);
	copy[stanza_len] = '\0';
	if (q) {
		free(q->stanza);
		q->stanza = copy;
		q->stanza_len = stanza_len;
		return 0;
	}
	if (r->nrequests >= max) {
		free(copy);
		return -ENOSPC;
	}
	q = calloc(1, sizeof(*q) + len + 1);
	if (!q) {
		free(copy);
		return -ENOMEM;
	}
	memcpy(q->jid, jid, len);
	q->jid_len = len;
	q->stanza = copy;
	q->stanza_len = stanza_len;
	/* Oldest first, so they are delivered in the order they came. */
	pp = &r->requests;
	while (*pp)
		pp = &(*pp)->next;
	*pp = q;
	r->nrequests++;
	return 0;
}

bool roster_request_drop(struct roster *r, const char *jid, size_t len)
{
	for (struct roster_request **pp = &r->requests; *pp; pp = &(*pp)->next) {
		struct roster_request *q = *pp;

		if (q->jid_len == len && memcmp(q->jid, jid, len) == 0) {
			*pp = q->next;
			free(q->stanza);
			free(q);
			r->nrequests--;
			return true;
		}
	}
	return false;
}

uint8_t roster_state(const struct roster *r, const char *jid, size_t len, bool *approved)
{
	const struct roster_item *it = roster_lookup(r, jid, len);
	uint8_t state = 0;

	*approved = false;
	if (it && !it->deleted) {
		state = it->sub;
		*approved = it->approved;
	}
	if (roster_request_find(r, jid, len))
		state |= SUB_PENDING_IN;
	return sub_normalize(state);
}

/* ---- Persistence (fire and forget, in submission order) ---- */

/*
 * One item's row as it is now: a snapshot, because the item may change
 * again (or be freed with the account) before the storage thread runs.
 */
struct roster_put_req {
	struct storage_req req;		/* first */
	struct roster_row row;
	char buf[];			/* jid, name, groups, each NUL-terminated */
};

static int roster_put_run(struct storage *st, struct storage_req *req)
{
	struct roster_put_req *pr = (struct roster_put_req *)req;

	return roster_db_put(st, req->user, &pr->row);
}

/* Runs on the storage thread (no inbox): nothing to tell the worker. */
static void roster_store_done(struct storage_req *req)
{
	if (req->result < 0)
		log_error("roster.store_failed", "user=%s err=%d", req->user, req->result);
	free(req);
}

/*
 * Queues the write of `it` (no completion on the worker: a failed write is
 * logged; memory stays right and the next change of the item rewrites it).
 */
static void roster_persist(struct worker *w, const struct account *a,
			   const struct roster_item *it)
{
	size_t nl = it->name ? strlen(it->name) + 1 : 0;
	size_t gl = it->groups ? strlen(it->groups) + 1 : 0;
	struct roster_put_req *pr = calloc(1, sizeof(*pr) + it->jid_len + 1 + nl + gl);
	char *p;

	if (!pr) {
		log_error("roster.store_failed", "user=%s err=%d", a->user, -ENOMEM);
		return;
	}
	p = pr->buf;
	memcpy(p, it->jid, it->jid_len + 1);
	pr->row.jid = p;
	p += it->jid_len + 1;
	if (nl) {
		memcpy(p, it->name, nl);
		pr->row.name = p;
		p += nl;
	}
	if (gl) {
		memcpy(p, it->groups, gl);
		pr->row.groups = p;
	}
	pr->row.sub = it->sub;
	pr->row.approved = it->approved;
	pr->row.deleted = it->deleted;
	pr->row.version = it->version;
	pr->req.op = STORAGE_OP_RUN;
	pr->req.run = roster_put_run;
	pr->req.done = roster_store_done;
	snprintf(pr->req.user, sizeof(pr->req.user), "%s", a->user);
	storage_queue_submit(w->srv->store, &pr->req);
}

/* Stores (stanza != NULL) or deletes a pending request, fire and forget. */
struct roster_request_req {
	struct storage_req req;		/* first */
	bool drop;
	size_t stanza_len;
	char *stanza;			/* into buf */
	char buf[];			/* jid NUL stanza NUL */
};

static int roster_request_run(struct storage *st, struct storage_req *req)
{
	struct roster_request_req *rr = (struct roster_request_req *)req;

	if (rr->drop)
		return roster_db_request_delete(st, req->user, rr->buf);
	return roster_db_request_put(st, req->user, rr->buf, rr->stanza, rr->stanza_len);
}

static void roster_request_persist(struct worker *w, const struct account *a, const char *jid,
				   size_t len, const char *stanza, size_t stanza_len)
{
	struct roster_request_req *rr = calloc(1, sizeof(*rr) + len + 2 + stanza_len);

	if (!rr) {
		log_error("roster.store_failed", "user=%s err=%d", a->user, -ENOMEM);
		return;
	}
	memcpy(rr->buf, jid, len);
	rr->drop = stanza == NULL;
	if (stanza) {
		rr->stanza = rr->buf + len + 1;
		memcpy(rr->stanza, stanza, stanza_len);
		rr->stanza_len = stanza_len;
	}
	rr->req.op = STORAGE_OP_RUN;
	rr->req.run = roster_request_run;
	rr->req.done = roster_store_done;
	snprintf(rr->req.user, sizeof(rr->req.user), "%s", a->user);
	storage_queue_submit(w->srv->store, &rr->req);
}

/*
 * Cluster mode: the account's other nodes keep their copy of its pending
 * requests in step (roster_pushed_elsewhere): the request as received
 * (`stanza`), or for one answered or withdrawn an unsubscribe from the
 * requester.
 */
static void roster_request_elsewhere(struct worker *w, const struct account *a,
				     const char *jid, const char *stanza, size_t stanza_len)
{
	char bare[JID_MAX];
	struct xml_node *st;
	struct arena ar;
	int n = snprintf(bare, sizeof(bare), "%s@%s", a->user, w->srv->cfg->domain);

	if (n < 0 || (size_t)n >= sizeof(bare) || !cluster_account_elsewhere(bare, (size_t)n))
		return;
	arena_init(&ar, 1024);
	if (stanza) {
		st = stored_xml_parse(w->xml, &ar, stanza, stanza_len);
	} else {
		st = xml_node_new(&ar, XML_NS_CLIENT, "presence");
		if (st && (xml_attr_set(&ar, st, "type", "unsubscribe") < 0 ||
			   xml_attr_set(&ar, st, "from", jid) < 0))
			st = NULL;
	}
	if (st && (stanza == NULL || xml_attr_set(&ar, st, "from", jid) == 0))
		cluster_roster_push(w, bare, (size_t)n, st);
	else
		log_error("roster.push_failed", "msg=\"out of memory\"");
	arena_release(&ar);
}

int roster_keep_request(struct worker *w, struct account *a, const char *jid, size_t len,
			const char *stanza, size_t stanza_len)
{
	int ret = roster_request_put(a->roster, jid, len, stanza, stanza_len,
				     w->srv->cfg->max_roster_items);

	if (ret == 0) {
		roster_request_persist(w, a, jid, len, stanza, stanza_len);
		if (cluster_enabled())
			roster_request_elsewhere(w, a, jid, stanza, stanza_len);
	}
	return ret;
}

void roster_drop_request(struct worker *w, struct account *a, const char *jid, size_t len)
{
	if (roster_request_drop(a->roster, jid, len)) {
		roster_request_persist(w, a, jid, len, NULL, 0);
		if (cluster_enabled())
			roster_request_elsewhere(w, a, jid, NULL, 0);
	}
}

/* ---- Wire form ---- */

/* Appends <item/> for it (a tombstone is subscription='remove'). NULL on ENOMEM. */
static struct xml_node *roster_item_xml(struct arena *a, struct xml_node *query,
					const struct roster_item *it)
{
	struct xml_node *item = xml_node_add_child(a, query, NULL, "item");

	if (!item || xml_attr_set(a, item, "jid", it->jid) < 0)
		return NULL;
	if (it->deleted)
		return xml_attr_set(a, item, "subscription", "remove") < 0 ? NULL : item;
	if ((it->name && xml_attr_set(a, item, "name", it->name) < 0) ||
	    xml_attr_set(a, item, "subscription", sub_attr_value(it->sub)) < 0 ||
	    ((it->sub & SUB_PENDING_OUT) && xml_attr_set(a, item, "ask", "subscribe") < 0) ||
	    (it->approved && xml_attr_set(a, item, "approved", "true") < 0))
		return NULL;
	for (const char *g = it->groups; g && *g;) {
		const char *end = strchr(g, ROSTER_GROUP_SEP);
		size_t n = end ? (size_t)(end - g) : strlen(g);
		struct xml_node *group = xml_node_add_child(a, item, NULL, "group");

		if (!group || xml_node_add_text(a, group, g, n) < 0)
			return NULL;
		g = end ? end + 1 : g + n;
	}
	return item;
}

static struct xml_node *roster_query_xml(struct arena *a, const struct roster *r, bool with_ver)
{
	struct xml_node *q = xml_node_new(a, NS_ROSTER, "query");
	char ver[24];

	if (!q)
		return NULL;
	if (with_ver) {
		snprintf(ver, sizeof(ver), "%" PRIu64, r->version);
		if (xml_attr_set(a, q, "ver", ver) < 0)
			return NULL;
	}
	return q;
}

/*
 * Sends a roster push for `it` to every interested resource of the
 * account bare[0..len) (RFC 6121 2.1.6): no 'from' (it comes from the
 * account itself), ver = the item's version. In cluster mode (`others`)
 * the account's other nodes get it too: they hold a copy of the roster.
 */
static void roster_push(struct worker *w, const char *bare, size_t len,
			const struct roster_item *it, bool others)
{
	static uint64_t push_seq;
	struct arena *a = &w->tmp;
	struct xml_node *iq = NULL, *q;
	char id[32], ver[24];
	bool build = others && cluster_enabled() && cluster_account_elsewhere(bare, len);

	for (struct session *s = sessdir_find_bare(w->sessions, bare, len); build || s;
	     s = s ? s->next : NULL) {
		if (s && !s->interested)
			continue;
		if (!iq) {
			/* Unique per process, whichever worker pushes. */
			snprintf(id, sizeof(id), "push%" PRIu64,
				 __atomic_add_fetch(&push_seq, 1, __ATOMIC_RELAXED));
			snprintf(ver, sizeof(ver), "%" PRIu64, it->version);
			iq = xml_node_new(a, XML_NS_CLIENT, "iq");
			if (!iq || xml_attr_set(a, iq, "type", "set") < 0 ||
			    xml_attr_set(a, iq, "id", id) < 0)
				goto oom;
			q = xml_node_add_child(a, iq, NS_ROSTER, "query");
			if (!q || xml_attr_set(a, q, "ver", ver) < 0 || !roster_item_xml(a, q, it))
				goto oom;
			if (build)
				cluster_roster_push(w, bare, len, iq);	/* without 'to' (cluster.c) */
			build = false;
			if (!s)
				break;
		}
		if (xml_attr_set(a, iq, "to", s->jid) < 0)
			goto oom;
		router_deliver(s, iq);
	}
	return;
oom:
	log_error("roster.push_failed", "msg=\"out of memory\"");
}

void roster_commit(struct worker *w, struct account *a, const char *bare, size_t bare_len,
		   struct roster_item *it)
{
	roster_touch(a->roster, it);
	roster_persist(w, a, it);
	roster_push(w, bare, bare_len, it, true);
}

static int roster_parse_ver(const char *v, uint64_t *out);

/* The state an item of a roster push shows: 0, or -EINVAL when it is not one. */
static int roster_item_from_push(struct worker *w, const struct xml_node *item, uint8_t *sub,
				 bool *approved, bool *removed, struct strbuf *groups)
{
	const char *subscription = xml_attr_get(item, "subscription");
	const char *ask = xml_attr_get(item, "ask");
	const char *appr = xml_attr_get(item, "approved");

	*removed = subscription && strcmp(subscription, "remove") == 0;
	*sub = 0;
	if (!*removed) {
		if (!subscription || strcmp(subscription, "none") == 0)
			*sub = 0;
		else if (strcmp(subscription, "to") == 0)
			*sub = SUB_TO;
		else if (strcmp(subscription, "from") == 0)
			*sub = SUB_FROM;
		else if (strcmp(subscription, "both") == 0)
			*sub = SUB_TO | SUB_FROM;
		else
			return -EINVAL;
	}
	if (ask && strcmp(ask, "subscribe") == 0)
		*sub |= SUB_PENDING_OUT;
	*approved = appr && (strcmp(appr, "true") == 0 || strcmp(appr, "1") == 0);
	for (const struct xml_node *g = xml_first_element(item); g; g = xml_next_element(g)) {
		const char *text = strcmp(g->name, "group") == 0 ? xml_text(&w->tmp, g) : NULL;

		if (!text || !text[0])
			continue;
		if (groups->len)
			strbuf_append(groups, (char[]){ ROSTER_GROUP_SEP }, 1);
		strbuf_append(groups, text, strlen(text));
	}
	strbuf_append(groups, "", 1);
	return groups->oom ? -ENOMEM : 0;
}

/* A pending request kept (subscribe) or gone (unsubscribe) on another node. */
static void roster_request_pushed(struct worker *w, struct account *a, struct xml_node *p)
{
	const char *type = xml_attr_get(p, "type"), *from = xml_attr_get(p, "from");
	struct strbuf ser = STRBUF_INIT;

	if (!from || !type)
		return;
	if (strcmp(type, "unsubscribe") == 0) {
		roster_request_drop(a->roster, from, strlen(from));
		return;
	}
	xml_serialize(&ser, p, XML_NS_CLIENT);
	if (ser.oom || roster_request_put(a->roster, from, strlen(from), ser.data, ser.len,
					  w->srv->cfg->max_roster_items) < 0)
		log_warn("roster.request_lost", "user=%s msg=\"a pending request from another node "
			 "is not kept here\"", a->user);
	strbuf_free(&ser);
}

void roster_pushed_elsewhere(struct worker *w, const struct jid *bare, struct xml_node *iq)
{
	struct account *a = sessdir_find_account(w->sessions, bare->buf, bare->len);
	const struct xml_node *q = xml_child(iq, NS_ROSTER, "query");
	const struct xml_node *item = q ? xml_first_element(q) : NULL;
	const char *jid = item ? xml_attr_get(item, "jid") : NULL;
	const char *ver = q ? xml_attr_get(q, "ver") : NULL;
	struct strbuf groups = STRBUF_INIT;
	struct roster_item *it;
	bool approved, removed, had_from;
	uint64_t version;
	uint8_t sub;
	char qj[128];

	if (!a || !a->roster)
		return;	/* no session of the account here any more: nothing in memory */
	if (strcmp(iq->name, "presence") == 0) {
		roster_request_pushed(w, a, iq);
		return;
	}
	if (!jid || !ver || roster_parse_ver(ver, &version) < 0 ||
	    roster_item_from_push(w, item, &sub, &approved, &removed, &groups) < 0) {
		log_warn("roster.push_unusable", "user=%s msg=\"a roster change from another node "
			 "cannot be read\"", log_sanitize(qj, sizeof(qj), bare->buf, bare->len));
		strbuf_free(&groups);
		return;
	}
	/* Pushes of one item may cross: an older one changes nothing. */
	it = roster_lookup(a->roster, jid, strlen(jid));
	if (it && it->version > version) {
		strbuf_free(&groups);
		return;
	}
	it = roster_upsert(a->roster, jid, strlen(jid));
	if (!it || (!removed && (roster_item_set_name(it, xml_attr_get(item, "name")) < 0 ||
				 roster_item_set_groups(it, groups.data) < 0))) {
		log_error("roster.push_failed", "msg=\"out of memory\"");
		strbuf_free(&groups);
		return;
	}
	strbuf_free(&groups);
	had_from = !it->deleted && (it->sub & SUB_FROM);
	if (removed) {
		roster_remove(a->roster, it);
	} else {
		it->sub = sub;
		it->approved = approved;
	}
	/* The version the database gave the change; ours never goes back. */
	it->version = version;
	if (version > a->roster->version)
		a->roster->version = version;
	roster_push(w, bare->buf, bare->len, it, false);
	/* The contact hears of the resources here as of those there (RFC 6121 3.1.5, 3.3.3). */
	if (had_from != (!it->deleted && (it->sub & SUB_FROM)))
		presence_from_changed(w, bare->buf, bare->len, it->jid, !had_from);
}

/* ---- iq handlers ---- */

static struct account *roster_account(struct iq_request *rq, struct session **sp)
{
	struct session *s = rq->conn ? rq->conn->sess : NULL;
	struct account *a = s ? session_account(s) : NULL;

	*sp = s;
	if (!a || !a->roster) {
		iq_reply_error(rq, "internal-server-error", "the roster is not loaded");
		return NULL;
	}
	return a;
}

/*
 * Parses a client's 'ver': versions are decimal numbers we issued, so
 * anything else (signs, spaces, more digits than a uint64_t) is unknown
 * and gets the whole roster. 0 or -1.
 */
static int roster_parse_ver(const char *v, uint64_t *out)
{
	char *end;

	if (!v[0] || strspn(v, "0123456789") != strlen(v) || strlen(v) > 19)
		return -1;
	*out = strtoull(v, &end, 10);
	return 0;
}

static int roster_cmp_version(const void *x, const void *y)
{
	const struct roster_item *a = *(const struct roster_item *const *)x;
	const struct roster_item *b = *(const struct roster_item *const *)y;

	return a->version < b->version ? -1 : a->version > b->version;
}

/*
 * RFC 6121 2.6.3: the client knows version `known`: an empty result, then
 * one push per item changed since (removals included), oldest first, so
 * the last push leaves the client at the current version.
 */
static void roster_send_diff(struct iq_request *rq, struct roster *r, struct session *s,
			     uint64_t known)
{
	struct roster_item **changed;
	size_t n = 0;

	iq_reply_result(rq, NULL);
	for (struct roster_item *it = r->items; it; it = it->next)
		n += it->version > known;
	if (!n)
		return;
	changed = malloc(n * sizeof(*changed));
	if (!changed) {
		log_error("roster.diff_failed", "msg=\"out of memory\"");
		return;
	}
	n = 0;
	for (struct roster_item *it = r->items; it; it = it->next)
		if (it->version > known)
			changed[n++] = it;
	qsort(changed, n, sizeof(*changed), roster_cmp_version);
	for (size_t i = 0; i < n; i++) {
		struct arena *a = iq_arena(rq);
		struct xml_node *iq = xml_node_new(a, XML_NS_CLIENT, "iq");
		struct xml_node *q = iq ? xml_node_add_child(a, iq, NS_ROSTER, "query") : NULL;
		char id[40], ver[24];

		snprintf(id, sizeof(id), "diff%" PRIu64, changed[i]->version);
		snprintf(ver, sizeof(ver), "%" PRIu64, changed[i]->version);
		if (!q || xml_attr_set(a, iq, "type", "set") < 0 || xml_attr_set(a, iq, "id", id) < 0 ||
		    xml_attr_set(a, iq, "to", s->jid) < 0 || xml_attr_set(a, q, "ver", ver) < 0 ||
		    !roster_item_xml(a, q, changed[i]))
			break;
		router_deliver(s, iq);
	}
	free(changed);
}

/*
 * RFC 6121 2.1.3 / 2.6.3: without 'ver' the whole roster (no version
 * attribute); with a version we can diff from, an empty result and the
 * changes as pushes; with '' or a version we cannot diff from (unknown,
 * newer than ours, or older than the tombstone horizon) the whole roster
 * with the current version. Tombstones are never listed.
 */
void roster_get(struct iq_request *rq)
{
	struct arena *ar = iq_arena(rq);
	const char *ver = xml_attr_get(rq->payload, "ver");
	struct session *s;
	struct account *a = roster_account(rq, &s);
	struct xml_node *q;
	uint64_t known;

	if (!a)
		return;
	/* RFC 6121 2.1.6: this resource now gets pushes (on other nodes' too: cluster.c). */
	if (!s->interested) {
		s->interested = true;
		cluster_session_update(rq->w, s);
	}
	if (xml_first_element(rq->payload)) {
		iq_reply_error(rq, "bad-request", "a roster get carries no items");
		return;
	}
	if (ver && roster_parse_ver(ver, &known) == 0 && known <= a->roster->version &&
	    known >= a->roster->horizon) {
		roster_send_diff(rq, a->roster, s, known);
		return;
	}
	/* No versioning, or a version we cannot diff from: the whole roster. */
	q = roster_query_xml(ar, a->roster, ver != NULL);
	if (!q)
		goto oom;
	for (struct roster_item *it = a->roster->items; it; it = it->next)
		if (!it->deleted && !roster_item_xml(ar, q, it))
			goto oom;
	iq_reply_result(rq, q);
	return;
oom:
	iq_reply_error(rq, "internal-server-error", NULL);
}

void roster_foreign(struct iq_request *rq)
{
	/* RFC 6121 2.1.5 / 2.3.3: only the account's own resources see its roster. */
	iq_reply_error(rq, "forbidden", "only the account itself may access its roster");
}

/*
 * Checks and joins the <group/> children of an item (RFC 6121 2.3.3).
 * Returns the joined text in the iq arena ("" for none), or NULL after
 * answering the error.
 */
static const char *roster_groups(struct iq_request *rq, const struct xml_node *item)
{
	struct arena *a = iq_arena(rq);
	const char *names[ROSTER_GROUPS_MAX];
	size_t n = 0, total = 0;
	char *joined, *p;

	for (struct xml_node *g = xml_first_element(item); g; g = xml_next_element(g)) {
		const char *text;

		if (strcmp(g->ns, NS_ROSTER) != 0 || strcmp(g->name, "group") != 0)
			continue;
		if (n == ROSTER_GROUPS_MAX) {
			iq_reply_error(rq, "not-acceptable", "too many groups");
			return NULL;
		}
		text = xml_text(a, g);
		if (!text) {
			iq_reply_error(rq, "internal-server-error", NULL);
			return NULL;
		}
		if (!text[0]) {
			iq_reply_error(rq, "not-acceptable", "a group name is empty");
			return NULL;
		}
		if (strlen(text) > ROSTER_GROUP_MAX) {
			iq_reply_error(rq, "not-acceptable", "a group name is too long");
			return NULL;
		}
		for (size_t i = 0; i < n; i++) {
			if (strcmp(names[i], text) == 0) {
				iq_reply_error(rq, "bad-request", "a group is listed twice");
				return NULL;
			}
		}
		names[n++] = text;
		total += strlen(text) + 1;
	}
	joined = arena_alloc(a, total + 1);
	if (!joined) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return NULL;
	}
	p = joined;
	for (size_t i = 0; i < n; i++) {
		size_t l = strlen(names[i]);

		if (i)
			*p++ = ROSTER_GROUP_SEP;
		memcpy(p, names[i], l);
		p += l;
	}
	*p = '\0';
	return joined;
}

/* The account's bare JID (from the requester's session). */
static size_t roster_bare(const struct session *s, char *out, size_t size)
{
	snprintf(out, size, "%.*s", (int)s->bare_len, s->jid);
	return s->bare_len;
}

/*
 * RFC 6121 2.5: removal, with the subscriptions it cancels. The state is
 * taken before the item goes; the push (subscription='remove') goes out
 * before the unsubscribe / unsubscribed stanzas, and the result last.
 */
static void roster_remove_item(struct iq_request *rq, struct session *s, struct account *a,
			       const struct jid *contact)
{
	struct roster_item *it = roster_lookup(a->roster, contact->buf, contact->len);
	char bare[JID_MAX];
	size_t bare_len = roster_bare(s, bare, sizeof(bare));
	bool approved;
	uint8_t state;

	if (!it || it->deleted) {
		iq_reply_error(rq, "item-not-found", NULL);
		return;
	}
	state = roster_state(a->roster, contact->buf, contact->len, &approved);
	roster_drop_request(rq->w, a, contact->buf, contact->len);
	roster_remove(a->roster, it);
	roster_commit(rq->w, a, bare, bare_len, it);
	/* 2.5.2: unsubscribe and unsubscribed as the state requires. */
	presence_roster_removed(rq->w, bare, bare_len, contact, state);
	/* Answered once the removal is on disk (durable.h). */
	durable_reply_result(rq, NS_ROSTER, "query");
}

/*
 * RFC 6121 2.3 / 2.5. Checks, in order: exactly one <item/> (bad-request),
 * a 'jid' (bad-request) that parses (jid-malformed) and is bare
 * (bad-request); subscription='remove' goes to removal; any other value
 * must be a valid state name (bad-request) and is ignored, as 'ask' and
 * 'approved' are (only presence changes those); name and groups within
 * limits (not-acceptable; a duplicate group is bad-request); a new item
 * must fit in max_roster_items (not-allowed).
 */
void roster_set(struct iq_request *rq)
{
	struct session *s;
	struct account *a = roster_account(rq, &s);
	struct xml_node *item = NULL;
	const char *jid_attr, *sub, *name, *groups;
	struct roster_item *it;
	struct jid contact;
	size_t items = 0;
	uint8_t ignored;
	char bare[JID_MAX];
	size_t bare_len;

	if (!a)
		return;
	for (struct xml_node *ch = xml_first_element(rq->payload); ch; ch = xml_next_element(ch)) {
		if (strcmp(ch->ns, NS_ROSTER) == 0 && strcmp(ch->name, "item") == 0) {
			item = ch;
			items++;
		}
	}
	if (items != 1) {
		iq_reply_error(rq, "bad-request", "a roster set carries exactly one item");
		return;
	}
	jid_attr = xml_attr_get(item, "jid");
	if (!jid_attr) {
		iq_reply_error(rq, "bad-request", "the item has no jid");
		return;
	}
	if (jid_parse(&contact, jid_attr, strlen(jid_attr)) < 0) {
		iq_reply_error(rq, "jid-malformed", NULL);
		return;
	}
	if (jid_has_resource(&contact)) {
		iq_reply_error(rq, "bad-request", "roster items are bare JIDs");
		return;
	}
	sub = xml_attr_get(item, "subscription");
	if (sub && strcmp(sub, "remove") == 0) {
		roster_remove_item(rq, s, a, &contact);
		return;
	}
	/* 2.1.2.5: the client does not set the state; other values are errors. */
	if (sub && sub_parse_attr(sub, &ignored) < 0) {
		iq_reply_error(rq, "bad-request", "invalid subscription value");
		return;
	}
	name = xml_attr_get(item, "name");
	if (name && strlen(name) > ROSTER_NAME_MAX) {
		iq_reply_error(rq, "not-acceptable", "the name is too long");
		return;
	}
	groups = roster_groups(rq, item);
	if (!groups)
		return;
	it = roster_lookup(a->roster, contact.buf, contact.len);
	if ((!it || it->deleted) && a->roster->count >= rq->w->srv->cfg->max_roster_items) {
		iq_reply_error(rq, "not-allowed", "the roster is full (max_roster_items)");
		return;
	}
	it = roster_upsert(a->roster, contact.buf, contact.len);
	if (!it || roster_item_set_name(it, name) < 0 || roster_item_set_groups(it, groups) < 0) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	bare_len = roster_bare(s, bare, sizeof(bare));
	roster_commit(rq->w, a, bare, bare_len, it);
	/* The result promises the item is stored: it waits for the commit (durable.h). */
	durable_reply_result(rq, NS_ROSTER, "query");
}
