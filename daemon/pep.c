/* SPDX-License-Identifier: MIT */
/*
 * Capabilities of local clients for PEP notification filtering; see
 * pep.h. The pubsub side (which items a newly interested session gets)
 * is pubsub_pep_interest() in pubsub.c.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/evp.h>

#include "caps.h"
#include "config.h"
#include "conn.h"
#include "iq.h"
#include "jid.h"
#include "log.h"
#include "loop.h"
#include "pep.h"
#include "pubsub.h"
#include "pubsub_node.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "strbuf.h"
#include "worker.h"

#define PEP_NOTIFY_SUFFIX	"+notify"
#define PEP_CACHE_BUCKETS	1024	/* power of two */

/*
 * A set of "+notify" interests: the node names, sorted (i;octet) for
 * binary search. Shared by every session whose caps have this 'ver'
 * (cached) or owned by one session (unverified); reference counted.
 */
struct pep_caps {
	struct pep_caps *hnext;
	unsigned refs;
	bool cached;
	size_t nnodes;
	char **nodes;			/* into the same allocation */
	char ver[];
};

/* A disco#info query in flight, and the sessions waiting for its answer. */
struct pep_waiter {
	struct pep_waiter *next;
	char jid[];
};

struct pep_query {
	struct pep_query *next;
	uint64_t sent_ms;
	bool hashed;			/* sha-1 caps: the answer can be verified and cached */
	struct pep_waiter *waiters;	/* other sessions with the same ver */
	char id[48];
	char ver[64];
	char target[];			/* full JID asked */
};

/*
 * A worker's caps cache and queries in flight (w->pep): the sessions that
 * share a cached set, and the ones a query answers, are all at home on
 * that worker, so nothing here is shared between threads (a ver is
 * resolved once per worker).
 */
struct pep_worker {
	struct pep_caps *cache[PEP_CACHE_BUCKETS];
	unsigned cache_count;
	struct pep_query *queries;
	unsigned nqueries;
	uint64_t next_query;
};

static struct pep_worker *pep_worker_get(struct worker *w)
{
	if (!w->pep)
		w->pep = calloc(1, sizeof(*w->pep));
	return w->pep;
}

/* ---- Caps sets ---- */

/* FNV-1a of a ver string, for the cache's buckets. */
static uint32_t pep_hash(const char *s)
{
	uint32_t h = 2166136261u;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 16777619u;
	}
	return h;
}

/* Drops a reference; the set is freed with the last one (NULL is fine). */
static void pep_caps_unref(struct pep_caps *c)
{
	if (c && --c->refs == 0)
		free(c);
}

/* Takes a reference (NULL is fine); returns c. */
static struct pep_caps *pep_caps_ref(struct pep_caps *c)
{
	if (c)
		c->refs++;
	return c;
}

/* The verified set cached for ver, or NULL. */
static struct pep_caps *pep_cache_find(const struct pep_worker *pw, const char *ver)
{
	for (struct pep_caps *c = pw->cache[pep_hash(ver) & (PEP_CACHE_BUCKETS - 1)]; c; c = c->hnext)
		if (strcmp(c->ver, ver) == 0)
			return c;
	return NULL;
}

/* qsort comparison of C strings, i;octet (RFC 4790 9.3) as XEP-0115 sorts. */
static int pep_cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * The "+notify" set of a disco#info answer, with refs = 1 and ver copied.
 * NULL on ENOMEM.
 */
static struct pep_caps *pep_caps_from_query(const struct xml_node *query, const char *ver)
{
	size_t suffix = strlen(PEP_NOTIFY_SUFFIX), n = 0, bytes = 0, vlen = strlen(ver);
	struct pep_caps *c;
	char *p;

	for (const struct xml_node *f = xml_first_element(query); f; f = xml_next_element(f)) {
		const char *var = xml_attr_get(f, "var");
		size_t l = var ? strlen(var) : 0;

		if (strcmp(f->name, "feature") != 0 || l <= suffix ||
		    strcmp(var + l - suffix, PEP_NOTIFY_SUFFIX) != 0 || n == PEP_CAPS_NOTIFY_MAX)
			continue;
		n++;
		bytes += l - suffix + 1;
	}
	c = calloc(1, sizeof(*c) + vlen + 1 + n * sizeof(char *) + bytes + sizeof(char *));
	if (!c)
		return NULL;
	memcpy(c->ver, ver, vlen + 1);
	/* Pointer array after the ver, aligned; strings after the array. */
	p = c->ver + vlen + 1;
	p += (sizeof(char *) - ((uintptr_t)p % sizeof(char *))) % sizeof(char *);
	c->nodes = (char **)p;
	p += n * sizeof(char *);
	for (const struct xml_node *f = xml_first_element(query); f; f = xml_next_element(f)) {
		const char *var = xml_attr_get(f, "var");
		size_t l = var ? strlen(var) : 0;

		if (strcmp(f->name, "feature") != 0 || l <= suffix ||
		    strcmp(var + l - suffix, PEP_NOTIFY_SUFFIX) != 0 || c->nnodes == n)
			continue;
		memcpy(p, var, l - suffix);
		p[l - suffix] = '\0';
		c->nodes[c->nnodes++] = p;
		p += l - suffix + 1;
	}
	qsort(c->nodes, c->nnodes, sizeof(char *), pep_cmp_str);
	c->refs = 1;
	return c;
}

struct pep_caps *pep_caps_copy(const struct pep_caps *c)
{
	size_t bytes = 0, vlen;
	struct pep_caps *d;
	char *p;

	if (!c)
		return NULL;
	vlen = strlen(c->ver);
	for (size_t i = 0; i < c->nnodes; i++)
		bytes += strlen(c->nodes[i]) + 1;
	d = calloc(1, sizeof(*d) + vlen + 1 + c->nnodes * sizeof(char *) + bytes +
		      sizeof(char *));
	if (!d)
		return NULL;
	memcpy(d->ver, c->ver, vlen + 1);
	/* Laid out as pep_caps_from_query does; the order (sorted) is kept. */
	p = d->ver + vlen + 1;
	p += (sizeof(char *) - ((uintptr_t)p % sizeof(char *))) % sizeof(char *);
	d->nodes = (char **)p;
	p += c->nnodes * sizeof(char *);
	for (size_t i = 0; i < c->nnodes; i++) {
		size_t l = strlen(c->nodes[i]);

		memcpy(p, c->nodes[i], l + 1);
		d->nodes[d->nnodes++] = p;
		p += l + 1;
	}
	d->refs = 1;
	return d;
}

void pep_caps_release(struct pep_caps *c)
{
	pep_caps_unref(c);
}

bool pep_caps_wants(const struct pep_caps *c, const char *node, size_t len)
{
	size_t lo = 0, hi = c ? c->nnodes : 0;

	while (lo < hi) {
		size_t mid = (lo + hi) / 2;
		int r = strncmp(c->nodes[mid], node, len);

		if (r == 0 && c->nodes[mid][len] != '\0')
			r = 1;
		if (r == 0)
			return true;
		if (r < 0)
			lo = mid + 1;
		else
			hi = mid;
	}
	return false;
}

bool pep_session_wants(const struct session *s, const char *node, size_t len)
{
	return s->pep && pep_caps_wants(s->pep->caps, node, len);
}

bool pep_session_deliver_once(struct session *s, uint64_t serial)
{
	if (!s->pep)
		return true;
	if (s->pep->delivered == serial)
		return false;
	s->pep->delivered = serial;
	return true;
}

/* ---- The verification string (XEP-0115 5.1, 5.4) ---- */

/* An element's text, "" when it has none. */
static const char *pep_text(struct arena *a, const struct xml_node *el)
{
	const char *t = xml_text(a, el);

	return t ? t : "";
}

/* Appends each of v[0..n) followed by '<', sorted; -EINVAL on a duplicate when unique. */
static int pep_append_sorted(struct strbuf *s, const char **v, size_t n, bool unique)
{
	qsort(v, n, sizeof(*v), pep_cmp_str);
	for (size_t i = 0; i < n; i++) {
		if (unique && i && strcmp(v[i - 1], v[i]) == 0)
			return -EINVAL;
		strbuf_puts(s, v[i]);
		strbuf_puts(s, "<");
	}
	return 0;
}

/* One extended-info form: its FORM_TYPE, or NULL when it is to be ignored (5.4 3.6). */
static const char *pep_form_type(struct arena *a, const struct xml_node *x, int *err)
{
	const char *ft = NULL;

	for (const struct xml_node *f = xml_first_element(x); f; f = xml_next_element(f)) {
		const char *var = xml_attr_get(f, "var"), *type = xml_attr_get(f, "type");

		if (strcmp(f->name, "field") != 0 || !var || strcmp(var, "FORM_TYPE") != 0)
			continue;
		if (!type || strcmp(type, "hidden") != 0)
			return NULL;
		for (const struct xml_node *v = xml_first_element(f); v; v = xml_next_element(v)) {
			const char *t;

			if (strcmp(v->name, "value") != 0)
				continue;
			t = pep_text(a, v);
			if (ft && strcmp(ft, t) != 0)
				*err = -EINVAL;
			ft = t;
		}
	}
	return ft;
}

/* Appends a form's fields (FORM_TYPE first, then var<values< sorted). */
static int pep_append_form(struct arena *a, struct strbuf *s, const struct xml_node *x,
			   const char *ft)
{
	const struct xml_node *fields[PEP_CAPS_FEATURES_MAX];
	size_t nf = 0;

	strbuf_puts(s, ft);
	strbuf_puts(s, "<");
	for (const struct xml_node *f = xml_first_element(x); f; f = xml_next_element(f)) {
		const char *var = xml_attr_get(f, "var");

		if (strcmp(f->name, "field") != 0 || !var || strcmp(var, "FORM_TYPE") == 0)
			continue;
		if (nf == PEP_CAPS_FEATURES_MAX)
			return -EINVAL;
		fields[nf++] = f;
	}
	/* Insertion sort by var: forms are small. */
	for (size_t i = 1; i < nf; i++)
		for (size_t j = i; j > 0 && strcmp(xml_attr_get(fields[j - 1], "var"),
						   xml_attr_get(fields[j], "var")) > 0; j--) {
			const struct xml_node *t = fields[j];

			fields[j] = fields[j - 1];
			fields[j - 1] = t;
		}
	for (size_t i = 0; i < nf; i++) {
		const char *vals[64];
		size_t nv = 0;

		strbuf_puts(s, xml_attr_get(fields[i], "var"));
		strbuf_puts(s, "<");
		for (const struct xml_node *v = xml_first_element(fields[i]); v;
		     v = xml_next_element(v)) {
			if (strcmp(v->name, "value") != 0)
				continue;
			if (nv == sizeof(vals) / sizeof(vals[0]))
				return -EINVAL;
			vals[nv++] = pep_text(a, v);
		}
		pep_append_sorted(s, vals, nv, false);
	}
	return 0;
}

/* The S string of 5.1 for a disco#info query. 0 or -EINVAL / -ENOMEM. */
static int pep_caps_string(struct arena *a, const struct xml_node *query, struct strbuf *s)
{
	const char *ids[PEP_CAPS_FEATURES_MAX], *feats[PEP_CAPS_FEATURES_MAX];
	const char *ftypes[PEP_CAPS_FEATURES_MAX];
	const struct xml_node *forms[PEP_CAPS_FEATURES_MAX];
	size_t ni = 0, nfe = 0, nfo = 0;
	int err = 0;

	for (const struct xml_node *el = xml_first_element(query); el; el = xml_next_element(el)) {
		if (strcmp(el->name, "identity") == 0 && strcmp(el->ns, NS_DISCO_INFO) == 0) {
			const char *cat = xml_attr_get(el, "category"), *type = xml_attr_get(el, "type");
			const char *lang = xml_attr_get_ns(el, XML_NS_XML, "lang");
			const char *name = xml_attr_get(el, "name");
			struct strbuf one = STRBUF_INIT;

			if (!cat || !type || ni == PEP_CAPS_FEATURES_MAX)
				return -EINVAL;
			strbuf_printf(&one, "%s/%s/%s/%s", cat, type, lang ? lang : "", name ? name : "");
			ids[ni] = one.oom ? NULL : arena_strdup(a, one.data);
			strbuf_free(&one);
			if (!ids[ni++])
				return -ENOMEM;
		} else if (strcmp(el->name, "feature") == 0 && strcmp(el->ns, NS_DISCO_INFO) == 0) {
			const char *var = xml_attr_get(el, "var");

			if (!var || nfe == PEP_CAPS_FEATURES_MAX)
				return -EINVAL;
			feats[nfe++] = var;
		} else if (strcmp(el->name, "x") == 0 && strcmp(el->ns, NS_XDATA) == 0) {
			const char *ft = pep_form_type(a, el, &err);

			if (err)
				return err;
			if (!ft)
				continue;
			if (nfo == PEP_CAPS_FEATURES_MAX)
				return -EINVAL;
			for (size_t i = 0; i < nfo; i++)
				if (strcmp(ftypes[i], ft) == 0)
					return -EINVAL;
			ftypes[nfo] = ft;
			forms[nfo++] = el;
		}
	}
	if (pep_append_sorted(s, ids, ni, true) < 0 || pep_append_sorted(s, feats, nfe, true) < 0)
		return -EINVAL;
	/* Forms in FORM_TYPE order (insertion sort keeps forms[] in step). */
	for (size_t i = 1; i < nfo; i++)
		for (size_t j = i; j > 0 && strcmp(ftypes[j - 1], ftypes[j]) > 0; j--) {
			const char *t = ftypes[j];
			const struct xml_node *tf = forms[j];

			ftypes[j] = ftypes[j - 1];
			forms[j] = forms[j - 1];
			ftypes[j - 1] = t;
			forms[j - 1] = tf;
		}
	for (size_t i = 0; i < nfo; i++)
		if (pep_append_form(a, s, forms[i], ftypes[i]) < 0)
			return -EINVAL;
	return s->oom ? -ENOMEM : 0;
}

int pep_caps_ver(const struct xml_node *query, char *out, size_t out_size)
{
	struct strbuf s = STRBUF_INIT;
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	struct arena a;
	int ret;

	if (out_size < CAPS_VER_MAX)
		return -EINVAL;
	arena_init(&a, 1024);
	ret = pep_caps_string(&a, query, &s);
	if (ret == 0 && EVP_Digest(s.data ? s.data : "", s.len, md, &mdlen, EVP_sha1(), NULL) != 1)
		ret = -EIO;
	if (ret == 0)
		EVP_EncodeBlock((unsigned char *)out, md, (int)mdlen);
	strbuf_free(&s);
	arena_release(&a);
	return ret;
}

/* ---- Queries ---- */

/* Frees a query and its waiters' names. */
static void pep_query_free(struct pep_query *q)
{
	while (q->waiters) {
		struct pep_waiter *wt = q->waiters;

		q->waiters = wt->next;
		free(wt);
	}
	free(q);
}

/* Takes a query off the list of those in flight. */
static void pep_query_unlink(struct pep_worker *pw, struct pep_query *q)
{
	for (struct pep_query **pp = &pw->queries; *pp; pp = &(*pp)->next)
		if (*pp == q) {
			*pp = q->next;
			pw->nqueries--;
			return;
		}
}

/* Drops queries nobody answered within PEP_CAPS_QUERY_TIMEOUT_MS. */
static void pep_queries_expire(struct pep_worker *pw, uint64_t now)
{
	struct pep_query **pp = &pw->queries;

	while (*pp) {
		struct pep_query *q = *pp;

		if (now - q->sent_ms > PEP_CAPS_QUERY_TIMEOUT_MS) {
			*pp = q->next;
			pw->nqueries--;
			pep_query_free(q);
		} else {
			pp = &q->next;
		}
	}
}

/*
 * Asks session s (full JID) for the disco#info of node#ver, or joins a
 * query already asking for the same hashed ver.
 */
static void pep_query_start(struct worker *w, struct session *s, const char *node,
			    const char *ver, bool hashed)
{
	uint64_t now = loop_now_ms(w->loop);
	struct pep_worker *pw = pep_worker_get(w);
	struct strbuf *b = &w->scratch;
	struct pep_query *q;
	struct arena *a = &w->tmp;
	struct xml_node *iq, *query;
	char q_node[JID_PART_MAX + 80];

	if (!pw)
		return;
	pep_queries_expire(pw, now);
	/* One query per hashed ver at a time: later askers wait for its answer. */
	if (hashed) {
		for (q = pw->queries; q; q = q->next) {
			struct pep_waiter *wt;

			if (!q->hashed || strcmp(q->ver, ver) != 0)
				continue;
			wt = malloc(sizeof(*wt) + s->jid_len + 1);
			if (!wt)
				return;
			memcpy(wt->jid, s->jid, s->jid_len + 1);
			wt->next = q->waiters;
			q->waiters = wt;
			return;
		}
	}
	if (pw->nqueries >= PEP_CAPS_QUERIES_MAX) {
		log_warn("pep.caps_queries_full", "limit=%d", PEP_CAPS_QUERIES_MAX);
		return;
	}
	q = calloc(1, sizeof(*q) + s->jid_len + 1);
	if (!q)
		return;
	memcpy(q->target, s->jid, s->jid_len + 1);
	snprintf(q->ver, sizeof(q->ver), "%s", ver);
	snprintf(q->id, sizeof(q->id), PEP_CAPS_ID_PREFIX "%llu",
		 (unsigned long long)++pw->next_query);
	q->hashed = hashed;
	q->sent_ms = now;
	snprintf(q_node, sizeof(q_node), "%s#%s", node, ver);
	iq = xml_node_new(a, XML_NS_CLIENT, "iq");
	query = iq ? xml_node_add_child(a, iq, NS_DISCO_INFO, "query") : NULL;
	if (!query || xml_attr_set(a, iq, "type", "get") < 0 || xml_attr_set(a, iq, "id", q->id) < 0 ||
	    xml_attr_set(a, iq, "from", w->srv->cfg->domain) < 0 ||
	    xml_attr_set(a, iq, "to", s->jid) < 0 || xml_attr_set(a, query, "node", q_node) < 0) {
		free(q);
		return;
	}
	q->next = pw->queries;
	pw->queries = q;
	pw->nqueries++;
	(void)b;
	router_deliver(s, iq);
}

/*
 * Gives session `jid` the caps c if it is still waiting for `ver`, and
 * has its new interests served.
 */
static void pep_apply(struct worker *w, const char *jid, const char *ver, struct pep_caps *c)
{
	struct session *s = sessdir_find_full(w->sessions, jid, strlen(jid));
	struct pep_session *ps = s ? s->pep : NULL;
	struct pep_caps *old;
	bool initial;

	if (!ps || strcmp(ps->pending, ver) != 0)
		return;
	old = ps->caps;
	initial = ps->pending_initial;
	ps->caps = pep_caps_ref(c);
	ps->pending[0] = '\0';
	ps->pending_initial = false;
	if (ps->available && !s->ending)
		pubsub_pep_interest(w, s, initial ? NULL : old);
	pep_caps_unref(old);
}

bool pep_iq_response(struct iq_request *rq)
{
	const char *id = xml_attr_get(rq->iq, "id");
	const struct xml_node *query;
	struct pep_worker *pw = rq->w->pep;
	struct pep_query *q;
	struct pep_caps *c = NULL;
	char ver[CAPS_VER_MAX];
	bool valid;

	if (!id || strncmp(id, PEP_CAPS_ID_PREFIX, strlen(PEP_CAPS_ID_PREFIX)) != 0)
		return false;
	if (!pw)
		return true;	/* nothing asked from here: not an answer of ours */
	for (q = pw->queries; q; q = q->next)
		if (strcmp(q->id, id) == 0)
			break;
	/* Only the entity asked may answer. */
	if (!q || !rq->from || strcmp(rq->from->buf, q->target) != 0)
		return true;
	pep_query_unlink(pw, q);
	query = xml_child(rq->iq, NS_DISCO_INFO, "query");
	if (strcmp(stanza_type(rq->iq), "result") != 0 || !query) {
		pep_query_free(q);
		return true;
	}
	/*
	 * XEP-0115 5.4: only an answer that hashes to the ver it was asked
	 * for may be cached for everyone; anything else is believed for its
	 * sender only (a client lying about itself harms nobody else).
	 */
	valid = q->hashed && pep_caps_ver(query, ver, sizeof(ver)) == 0 && strcmp(ver, q->ver) == 0;
	c = pep_caps_from_query(query, q->ver);
	if (!c) {
		pep_query_free(q);
		return true;
	}
	if (valid && !pep_cache_find(pw, q->ver) && pw->cache_count < PEP_CAPS_CACHE_MAX) {
		unsigned b = pep_hash(q->ver) & (PEP_CACHE_BUCKETS - 1);

		c->cached = true;
		c->refs++;	/* the cache's own reference */
		c->hnext = pw->cache[b];
		pw->cache[b] = c;
		pw->cache_count++;
	}
	if (!valid && q->hashed)
		log_info("pep.caps_mismatch", "ver_len=%zu", strlen(q->ver));
	pep_apply(rq->w, q->target, q->ver, c);
	/* An unverified answer is its sender's alone: the others ask themselves. */
	while (q->waiters) {
		struct pep_waiter *wt = q->waiters;
		struct session *s = sessdir_find_full(rq->w->sessions, wt->jid, strlen(wt->jid));

		q->waiters = wt->next;
		if (valid)
			pep_apply(rq->w, wt->jid, q->ver, c);
		else if (s && s->pep && strcmp(s->pep->pending, q->ver) == 0 && s->pep->node[0])
			pep_query_start(rq->w, s, s->pep->node, q->ver, true);
		free(wt);
	}
	pep_caps_unref(c);
	pep_query_free(q);
	return true;
}

/* ---- Presence and sessions ---- */

void pep_presence(struct conn *c, struct xml_node *st)
{
	struct session *s = c->sess;
	const char *type = stanza_type(st);
	const struct xml_node *cel;
	const char *node, *ver, *hash;
	struct pep_session *ps;
	struct pep_caps *known, *old;
	bool initial, hashed;

	if (!s)
		return;
	if (strcmp(type, "unavailable") == 0) {
		if (s->pep)
			s->pep->available = false;
		return;
	}
	if (type[0])
		return;
	/*
	 * Initial presence is the first available one since the session was
	 * unavailable (XEP-0163 4.3.2 footnote): only it brings last items.
	 */
	cel = xml_child(st, NS_CAPS, "c");
	if (!cel && !s->pep)
		return;	/* no caps, nothing wanted: no state needed */
	if (!s->pep && !(s->pep = calloc(1, sizeof(*s->pep))))
		return;
	ps = s->pep;
	initial = !ps->available;
	ps->available = true;
	node = cel ? xml_attr_get(cel, "node") : NULL;
	ver = cel ? xml_attr_get(cel, "ver") : NULL;
	hash = cel ? xml_attr_get(cel, "hash") : NULL;
	if (!node || !ver || !ver[0] || strlen(ver) >= sizeof(ps->pending) ||
	    strlen(node) >= sizeof(ps->node)) {
		/* Caps gone (or unusable): nothing is wanted any more. */
		pep_caps_unref(ps->caps);
		ps->caps = NULL;
		ps->pending[0] = '\0';
		ps->pending_initial = false;
		return;
	}
	if (ps->caps && strcmp(ps->caps->ver, ver) == 0) {
		/* Same interests; initial presence still gets the last items. */
		if (initial)
			pubsub_pep_interest(c->w, s, NULL);
		return;
	}
	/* Asked already; unless that query was lost (never answered): ask again. */
	if (ps->pending[0] && strcmp(ps->pending, ver) == 0 &&
	    loop_now_ms(c->w->loop) - ps->pending_ms <= PEP_CAPS_QUERY_TIMEOUT_MS) {
		ps->pending_initial |= initial;
		return;
	}
	hashed = hash && strcmp(hash, "sha-1") == 0;
	known = hashed && c->w->pep ? pep_cache_find(c->w->pep, ver) : NULL;
	if (known) {
		old = ps->caps;
		ps->caps = pep_caps_ref(known);
		initial |= ps->pending_initial;
		ps->pending[0] = '\0';
		ps->pending_initial = false;
		pubsub_pep_interest(c->w, s, initial ? NULL : old);
		pep_caps_unref(old);
		return;
	}
	/* Unknown: ask the client, keep the old interests until it answers. */
	snprintf(ps->pending, sizeof(ps->pending), "%s", ver);
	snprintf(ps->node, sizeof(ps->node), "%s", node);
	ps->pending_initial |= initial;
	ps->pending_ms = loop_now_ms(c->w->loop);
	pep_query_start(c->w, s, node, ver, hashed);
}

void pep_session_end(struct worker *w, struct session *s)
{
	if (!s->pep)
		return;
	pep_caps_unref(s->pep->caps);
	free(s->pep);
	s->pep = NULL;
	(void)w;
}

void pep_worker_destroy(struct worker *w)
{
	struct pep_worker *pw = w->pep;

	if (!pw)
		return;
	while (pw->queries) {
		struct pep_query *q = pw->queries;

		pw->queries = q->next;
		pep_query_free(q);
	}
	for (size_t i = 0; i < PEP_CACHE_BUCKETS; i++) {
		while (pw->cache[i]) {
			struct pep_caps *c = pw->cache[i];

			pw->cache[i] = c->hnext;
			c->cached = false;
			pep_caps_unref(c);
		}
	}
	free(pw);
	w->pep = NULL;
}
