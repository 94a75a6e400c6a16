/* SPDX-License-Identifier: MIT */
/*
 * Presence and subscriptions (RFC 6121 sections 3 and 4).
 *
 * Outbound subscription stanzas change the sender's roster (always in
 * memory: the sender has a session) and are routed; the router hands
 * them to presence_inbound() on the contact's side, which changes the
 * contact's roster in memory when the contact has sessions and on the
 * storage thread otherwise (sub_store_*). Side effects the RFC requires
 * (automatic "subscribed", presence after an approval, unavailable after
 * a cancellation) are ordinary presence stanzas sent through the router.
 *
 * Scratch memory: trees this file builds live in a local arena per
 * operation, or in the worker's tmp arena only where the caller resets
 * it afterwards (c2s stanza handlers). router_bounce_w() resets w->tmp,
 * so nothing here keeps w->tmp memory across a call that may bounce.
 *
 * Sessions can end inside a delivery (an output overflow closes the
 * connection at once), so loops over sessions take `next` before they
 * deliver.
 *
 * Account homes (docs/account-homes.md): this file only ever reads the
 * roster, block list and sessions of accounts at home on its worker. A
 * broadcast reaches contacts at home elsewhere as one message per worker
 * (presence_batch), and a login probes them with a real probe, answered
 * at their home; the sender's block list is applied where it lives, at
 * the sender's home, before anything leaves.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "avatar_compat.h"
#include "blocking.h"
#include "c2s.h"
#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "fanout.h"
#include "jid.h"
#include "log.h"
#include "offline.h"
#include "presence.h"
#include "provisioning.h"
#include "roster.h"
#include "router.h"
#include "s2s.h"
#include "server.h"
#include "service.h"
#include "session.h"
#include "stanza.h"
#include "storage.h"
#include "stored_xml.h"
#include "subscription.h"
#include "worker.h"

#define PRESENCE_ARENA_CHUNK	4096

/* Full JIDs may carry spaces and quotes in the resource: quoted for logs. */
#define LOG_JID(buf, j) log_sanitize(buf, sizeof(buf), j, strlen(j))

static const char *domain_of(const struct worker *w)
{
	return w->srv->cfg->domain;
}

static bool jid_is_local(const struct worker *w, const struct jid *j)
{
	const char *d = domain_of(w);

	return j->domain_len == strlen(d) && memcmp(j->buf + j->domain_off, d, j->domain_len) == 0;
}

/*
 * Whether a roster contact (a bare JID) is at another domain: another
 * server or a component, not us and not one of our services.
 */
static bool contact_is_remote(const struct worker *w, const char *jid, size_t len)
{
	const char *at = memchr(jid, '@', len);
	const char *d = at ? at + 1 : jid;
	size_t dlen = len - (size_t)(d - jid);
	const char *own = domain_of(w);

	if (dlen == strlen(own) && memcmp(d, own, dlen) == 0)
		return false;
	/* A component counts as remote here: s2s_send_prepared() reaches it. */
	return !s2s_domain_is_local(w, d, dlen) || s2s_domain_is_component(w, d, dlen);
}

static void presence_deliver_copy(struct session *s, struct xml_node *st, struct fanout *f,
				  const char *to, size_t to_len);

/*
 * Recipients of a broadcast that are not served on this worker, one list
 * per destination (docs/account-homes.md, 2.3): contacts at home on
 * another worker, which delivers to their sessions, and contacts at other
 * domains, whose federation links are on worker 0. Each list is posted
 * once per broadcast with the stanza serialized without 'to'.
 *
 * A list is a sequence of entries "bare\0" followed by the full JIDs of
 * that contact the sender blocks ("full\0" each, XEP-0191 items naming
 * one resource) and an empty string: the sender's block list lives at the
 * sender's home only, so what the recipients' home needs of it travels
 * with the stanza.
 */
struct presence_targets {
	struct strbuf home[SERVER_MAX_WORKERS];	/* by home worker (this one stays empty) */
	struct strbuf remote;			/* other domains and components */
};

struct presence_batch {
	struct worker_msg msg;		/* first */
	bool remote;			/* the list is for s2s_send_prepared() */
	size_t tmpl_len;		/* buf[0..tmpl_len): the stanza, NUL after it */
	size_t list_len;		/* then the entries */
	char buf[];
};

/* The next NUL-terminated string of a list at *p (advanced past it). */
static const char *batch_next(const char **p, size_t *len)
{
	const char *s = *p;

	*len = strlen(s);
	*p = s + *len + 1;
	return s;
}

/* Whether the entry's blocked full JIDs (at excl, ending with "") name full. */
static bool batch_excluded(const char *excl, const char *full)
{
	size_t n;

	for (const char *p = excl, *j; *(j = batch_next(&p, &n));)
		if (strcmp(j, full) == 0)
			return true;
	return false;
}

/* Delivers a batch: runs on the contacts' home (or on worker 0 for remote ones). */
static void presence_batch_arrived(struct worker *w, struct worker_msg *m)
{
	struct presence_batch *b = (struct presence_batch *)m;
	const char *p = b->buf + b->tmpl_len + 1, *end = p + b->list_len;
	struct fanout f = FANOUT_INIT;
	struct cluster_fanout *cf = NULL;
	struct xml_node *st = NULL;
	struct session *s;
	const char *from;
	struct arena a;
	size_t n, len;

	arena_init(&a, PRESENCE_ARENA_CHUNK);
	if (fanout_prepare_bytes(&f, b->buf, b->tmpl_len) < 0 ||
	    (!b->remote && !(st = stored_xml_parse(w->xml, &a, b->buf, b->tmpl_len)))) {
		log_error("presence.batch_failed", "msg=\"unreadable or out of memory\"");
		goto out;
	}
	while (p < end) {
		const char *jid = batch_next(&p, &len), *excl = p;

		while (*batch_next(&p, &n))
			;	/* the entry's blocked full JIDs, read below */
		if (b->remote) {
			const char *data = fanout_render(&f, jid, len, &n);

			/* Out of memory drops this copy, as a full link queue does: presence is state. */
			if (data)
				s2s_send_prepared(w, domain_of(w), jid, len, data, n);
			continue;
		}
		s = sessdir_find_bare(w->sessions, jid, len);
		if (cluster_enabled())
			cluster_fanout_add(&cf, jid, len);	/* on other nodes too, maybe */
		for (struct session *next; s; s = next) {
			next = s->next;
			if (s->available && !(*excl && batch_excluded(excl, s->jid)))
				presence_deliver_copy(s, st, &f, jid, len);
		}
	}
	if (cf) {
		from = xml_attr_get(st, "from");
		cluster_fanout_send(w, cf, b->buf, b->tmpl_len, from ? from : "");
	}
out:
	fanout_release(&f);
	arena_release(&a);
	free(b);
}

/* Posts one list of t (if any) to worker `to` with the template of f. */
static void presence_batch_post(struct worker *w, unsigned to, const struct fanout *f,
				struct strbuf *list, bool remote)
{
	struct presence_batch *b;
	size_t tlen;
	const char *tmpl = fanout_template(f, &tlen);

	if (!list->len)
		return;
	b = list->oom ? NULL : malloc(sizeof(*b) + tlen + 1 + list->len);
	if (!b) {
		log_error("presence.batch_failed", "worker=%u msg=\"out of memory\"", to);
		return;
	}
	b->remote = remote;
	b->tmpl_len = tlen;
	b->list_len = list->len;
	memcpy(b->buf, tmpl, tlen);
	b->buf[tlen] = '\0';
	memcpy(b->buf + tlen + 1, list->data, list->len);
	worker_post(w, to, &b->msg, presence_batch_arrived);
}

static void presence_targets_post(struct worker *w, struct presence_targets *t,
				  const struct fanout *f)
{
	for (unsigned i = 0; i < w->srv->nworkers; i++) {
		presence_batch_post(w, i, f, &t->home[i], false);
		strbuf_free(&t->home[i]);
	}
	presence_batch_post(w, 0, f, &t->remote, true);
	strbuf_free(&t->remote);
}

/*
 * Adds the contact jid[0..len) to a list, with the full JIDs of it that
 * the sender's list `bl` blocks (bl NULL: none to look for).
 */
static void presence_targets_add(struct strbuf *list, const struct blocklist *bl,
				 const char *jid, size_t len)
{
	const char *item;
	size_t pos = 0;

	strbuf_append(list, jid, len);
	strbuf_append(list, "", 1);
	while (bl && (item = blocklist_next(bl, &pos)))
		if (strncmp(item, jid, len) == 0 && item[len] == '/')
			strbuf_append(list, item, strlen(item) + 1);
	strbuf_append(list, "", 1);
}

/* Whether the list bl has an item naming one resource of an account (l@d/r). */
static bool blocklist_has_full_items(const struct blocklist *bl)
{
	const char *item;
	size_t pos = 0;

	while ((item = blocklist_next(bl, &pos)))
		if (strchr(item, '@') && strchr(item, '/'))
			return true;
	return false;
}

/* One broadcast copy to a contact at another domain, on worker 0 (f holds the template). */
static void presence_send_remote(struct worker *w, struct fanout *f, const char *jid, size_t len)
{
	size_t n;
	const char *data = fanout_render(f, jid, len, &n);

	/* Out of memory drops this copy, as a full link queue does: presence is state. */
	if (data)
		s2s_send_prepared(w, domain_of(w), jid, len, data, n);
}

static struct presence_state *presence_state_get(struct session *s)
{
	if (!s->pres)
		s->pres = calloc(1, sizeof(*s->pres));
	return s->pres;
}

static void presence_forget_last(struct session *s)
{
	if (s->pres) {
		free(s->pres->last);
		s->pres->last = NULL;
		s->pres->last_len = 0;
	}
}

int presence_parse_priority(const char *text, int *out)
{
	char *end;
	long v;

	while (*text == ' ' || *text == '\t' || *text == '\n' || *text == '\r')
		text++;
	if (!*text)
		return -1;
	v = strtol(text, &end, 10);
	while (*end == ' ' || *end == '\t' || *end == '\n' || *end == '\r')
		end++;
	if (*end || v < -128 || v > 127)
		return -1;
	*out = (int)v;
	return 0;
}

/* A new presence tree <presence type='..' from='..' to='..'/> (type/to may be NULL). */
static struct xml_node *presence_new(struct arena *a, const char *type, const char *from,
				     const char *to)
{
	struct xml_node *p = xml_node_new(a, XML_NS_CLIENT, "presence");

	if (!p || (type && xml_attr_set(a, p, "type", type) < 0) ||
	    (from && xml_attr_set(a, p, "from", from) < 0) ||
	    (to && xml_attr_set(a, p, "to", to) < 0))
		return NULL;
	return p;
}

/* Routes a stanza the server generates (no client connection involved). */
static void presence_route(struct worker *w, struct xml_node *p)
{
	if (!p || router_route_stanza(w, p) < 0)
		log_warn("presence.route_failed", "msg=\"could not route a generated presence\"");
}

/* Routes a probe from `from` to `contact`. */
static void presence_probe_from(struct worker *w, const char *from, const char *contact)
{
	struct arena a;

	arena_init(&a, PRESENCE_ARENA_CHUNK);
	presence_route(w, presence_new(&a, "probe", from, contact));
	arena_release(&a);
}

/* A probe from the session's bare JID to a contact at another domain. */
static void presence_probe_remote(struct worker *w, struct session *s, const char *contact)
{
	char bare[JID_MAX];

	snprintf(bare, sizeof(bare), "%.*s", (int)s->bare_len, s->jid);
	presence_probe_from(w, bare, contact);
}

/*
 * Sends one copy of a fanned-out stanza to s, addressed to `to` (a
 * NUL-terminated JID of to_len bytes): the template with this 'to'
 * spliced in. A detached session (stream management keeps it for
 * resumption) takes the tree, which the router gives the 'to' itself.
 */
static void presence_deliver_copy(struct session *s, struct xml_node *st, struct fanout *f,
				  const char *to, size_t to_len)
{
	const char *data = NULL;
	size_t len = 0;

	if (s->conn) {
		data = fanout_render(f, to, to_len, &len);
		if (!data) {
			log_error("presence.fanout_failed", "msg=\"out of memory\"");
			return;
		}
	}
	router_deliver_prepared(s, st, to, data, len);
}

/*
 * Cluster mode: the account's own available resources on other nodes
 * get the broadcast too, each addressed to its full JID (cluster.c).
 */
static void presence_fan_out_own_elsewhere(struct session *from_s, struct cluster_fanout **cf)
{
	size_t n;
	struct cluster_res *res = cluster_resources(from_s->jid, from_s->bare_len, &n);

	for (size_t i = 0; i < n; i++)
		if (res[i].v.available)
			cluster_fanout_add(cf, res[i].full, strlen(res[i].full));
	free(res);
}

/*
 * The broadcast of a presence from session `from_s` (RFC 6121 4.2.2,
 * 4.4.2, 4.5.2): every available resource of every contact with From,
 * addressed to the contact's bare JID, and every available resource of
 * the user itself, addressed to its full JID (`self` too when
 * include_self). f holds st serialized without 'to'.
 *
 * Contacts at home here are delivered to at once (the delivery filter
 * applies both block lists). Contacts elsewhere go into one message per
 * worker; the sender's block list (XEP-0191 3.3: no presence to a blocked
 * JID) is applied here, where it is, and only the recipient's is left to
 * their home.
 */
static void presence_fan_out(struct worker *w, struct session *from_s, struct xml_node *st,
			     struct fanout *f, bool include_self)
{
	struct sessdir *dir = w->sessions;
	struct account *acct = session_account(from_s);
	struct presence_targets *t = NULL;
	struct blocklist *bl = acct ? acct->blocklist : NULL;
	bool full_items = blocklist_count(bl) && blocklist_has_full_items(bl);
	bool t_failed = false;
	struct cluster_fanout *cf = NULL;
	struct session *s2, *next;
	struct jid cj;

	if (acct && acct->roster) {
		for (struct roster_item *it = acct->roster->items; it; it = it->next) {
			struct strbuf *list;
			unsigned home;
			bool remote;

			if (it->deleted || !(it->sub & SUB_FROM))
				continue;
			/* The user's own account is served below, once. */
			if (it->jid_len == from_s->bare_len &&
			    memcmp(it->jid, from_s->jid, it->jid_len) == 0)
				continue;
			/* Contacts at other domains get their copy over s2s (s2s.c). */
			remote = contact_is_remote(w, it->jid, it->jid_len);
			home = remote || w->srv->nworkers == 1 ? w->id : worker_home(w->srv, it->jid);
			if (!remote && home == w->id) {
				s2 = sessdir_find_bare(dir, it->jid, it->jid_len);
				/* Sessions on other nodes, maybe (cluster.c). */
				if (cluster_enabled() &&
				    !(blocklist_count(bl) &&
				      jid_parse(&cj, it->jid, it->jid_len) == 0 &&
				      blocking_account_blocks(from_s, &cj)))
					cluster_fanout_add(&cf, it->jid, it->jid_len);
				for (; s2; s2 = next) {
					next = s2->next;
					if (s2->available)
						presence_deliver_copy(s2, st, f, it->jid, it->jid_len);
				}
				continue;
			}
			if (blocklist_count(bl) && jid_parse(&cj, it->jid, it->jid_len) == 0 &&
			    blocking_account_blocks(from_s, &cj))
				continue;
			if (remote && w->id == 0) {
				presence_send_remote(w, f, it->jid, it->jid_len);
				continue;
			}
			if (!t && (t_failed || !(t = calloc(1, sizeof(*t))))) {
				/* Presence is state: the next broadcast repairs it. */
				if (!t_failed)
					log_error("presence.broadcast_failed", "msg=\"out of memory\"");
				t_failed = true;
				continue;
			}
			list = remote ? &t->remote : &t->home[home];
			/* A remote server delivers to the resources: only bare items apply there. */
			presence_targets_add(list, full_items && !remote ? bl : NULL, it->jid,
					     it->jid_len);
		}
	}
	for (s2 = sessdir_find_bare(dir, from_s->jid, from_s->bare_len); s2; s2 = next) {
		next = s2->next;
		if (s2->available && (include_self || s2 != from_s))
			presence_deliver_copy(s2, st, f, s2->jid, s2->jid_len);
	}
	if (cluster_enabled())
		presence_fan_out_own_elsewhere(from_s, &cf);
	if (t) {
		presence_targets_post(w, t, f);
		free(t);
	}
	if (cf) {
		size_t tlen;
		const char *tmpl = fanout_template(f, &tlen);

		cluster_fanout_send(w, cf, tmpl, tlen, from_s->jid);
	}
}

/*
 * Delivers a stored presence (serialized without 'to', from a session's
 * last presence or a pending request) to session s, addressed to `to`
 * (NULL: as stored). The tree is parsed into `a`.
 */
static void presence_deliver_stored(struct worker *w, struct session *s, struct arena *a,
				    const char *data, size_t len, const char *to)
{
	struct xml_node *st = stored_xml_parse(w->xml, a, data, len);
	char q[128];

	if (!st || (to && xml_attr_set(a, st, "to", to) < 0)) {
		log_warn("presence.stored_unreadable", "jid=%s", LOG_JID(q, s->jid));
		return;
	}
	router_deliver(s, st);
}

/* Routes a stored presence from its sender to `to` (e.g. to a new subscriber). */
static void presence_route_stored(struct worker *w, struct arena *a, const char *data,
				  size_t len, const char *to)
{
	struct xml_node *st = stored_xml_parse(w->xml, a, data, len);
	char q[128];

	if (!st || xml_attr_set(a, st, "to", to) < 0) {
		log_warn("presence.stored_unreadable", "to=%s", LOG_JID(q, to));
		return;
	}
	presence_route(w, st);
}

/*
 * Answers a probe of `contact`'s presence by `prober` (RFC 6121 4.3.2)
 * for a local contact: the last presence of each available resource when
 * the prober may see it, "unsubscribed" when not, nothing when the
 * contact has no session. `to_s`, when not NULL, is the prober's session
 * (the probe a login sends), which gets the answers directly.
 */
static void presence_answer_probe(struct worker *w, const struct jid *contact,
				  const struct jid *prober, struct session *to_s)
{
	struct sessdir *dir = w->sessions;
	struct account *ca = sessdir_find_account(dir, contact->buf, contact->len);
	char prober_bare[JID_MAX];
	struct session *s2, *next;
	struct arena a;

	if (!ca)
		return;
	jid_bare_str(prober, prober_bare, sizeof(prober_bare));
	arena_init(&a, PRESENCE_ARENA_CHUNK);
	if (!jid_bare_equal(contact, prober) && !roster_contact_has_from(ca, prober_bare)) {
		presence_route(w, presence_new(&a, "unsubscribed", contact->buf, prober_bare));
		arena_release(&a);
		return;
	}
	for (s2 = sessdir_find_bare(dir, contact->buf, contact->len); s2; s2 = next) {
		next = s2->next;
		if (!s2->available || !s2->pres || !s2->pres->last || s2 == to_s)
			continue;
		if (to_s)
			presence_deliver_stored(w, to_s, &a, s2->pres->last, s2->pres->last_len,
						to_s->jid);
		else
			presence_route_stored(w, &a, s2->pres->last, s2->pres->last_len,
					      prober->buf);
		arena_reset(&a);
	}
	arena_release(&a);
}

/*
 * Cluster mode: a probe from session s to the other nodes with
 * available resources of `contact` (bare, or s's own full JID for its
 * own account), whose answers come back to s.
 */
static void presence_probe_others(struct worker *w, struct session *s, const struct jid *contact)
{
	struct jid from, bare = *contact;
	struct xml_node *p;
	struct arena a;

	jid_to_bare(&bare);
	if (jid_parse(&from, s->jid, s->jid_len) < 0)
		return;
	arena_init(&a, PRESENCE_ARENA_CHUNK);
	p = presence_new(&a, "probe", s->jid, bare.buf);
	if (p)
		cluster_route_others(w, NULL, p, &from, &bare);
	arena_release(&a);
}

/*
 * What a session's first available presence triggers besides the
 * broadcast (RFC 6121 4.2.2, 3.1.3, XEP-0160): probes to the contacts
 * it is subscribed to, the presence of the account's other resources,
 * the pending subscription requests.
 */
static void presence_initial(struct worker *w, struct session *s)
{
	struct account *acct = session_account(s);
	struct jid self, contact;
	struct arena a;

	/* The prober is this session: answers come to its full JID. */
	if (!acct || !acct->roster || jid_parse(&self, s->jid, s->jid_len) < 0)
		return;
	for (struct roster_item *it = acct->roster->items; it; it = it->next) {
		if (it->deleted || !(it->sub & SUB_TO))
			continue;
		if (jid_parse(&contact, it->jid, it->jid_len) < 0 || jid_bare_equal(&contact, &self))
			continue;
		if (!jid_is_local(w, &contact)) {
			/* RFC 6121 4.3.1: a remote contact's server answers our probe. */
			if (contact_is_remote(w, it->jid, it->jid_len))
				presence_probe_remote(w, s, contact.buf);
			continue;
		}
		/*
		 * A contact at home elsewhere: its roster and sessions are
		 * there, which answers a probe from this session's full JID
		 * (to this session only) as any inbound probe, with the
		 * "unsubscribed" correction when it does not grant From.
		 */
		if (router_home_elsewhere(w, contact.buf, contact.len))
			presence_probe_from(w, s->jid, contact.buf);
		else if (cluster_enabled() && !sessdir_find_bare(w->sessions, contact.buf,
								 contact.len))
			presence_probe_from(w, s->jid, contact.buf);	/* on another node? */
		else
			presence_answer_probe(w, &contact, &self, s);
		/* The contact's resources on other nodes answer from there (cluster.c). */
		if (cluster_enabled() && sessdir_find_bare(w->sessions, contact.buf, contact.len))
			presence_probe_others(w, s, &contact);
	}
	/* So do the account's own resources on other nodes. */
	if (cluster_enabled())
		presence_probe_others(w, s, &self);
	arena_init(&a, PRESENCE_ARENA_CHUNK);
	/* The account's own other resources (their presence is "contact" presence too). */
	for (struct session *s2 = sessdir_find_bare(w->sessions, s->jid, s->bare_len), *next;
	     s2; s2 = next) {
		next = s2->next;
		if (s2 == s || !s2->available || !s2->pres || !s2->pres->last)
			continue;
		presence_deliver_stored(w, s, &a, s2->pres->last, s2->pres->last_len, s->jid);
		arena_reset(&a);
	}
	/* 3.1.3: unanswered requests, again at each login until answered. */
	for (struct roster_request *q = acct->roster->requests; q; q = q->next) {
		presence_deliver_stored(w, s, &a, q->stanza, q->stanza_len, NULL);
		arena_reset(&a);
	}
	arena_release(&a);
}

/*
 * Unavailable to the session's directed-presence targets, except contacts
 * with From when the broadcast reached them already (`broadcast`).
 */
static void presence_directed_unavailable(struct worker *w, struct session *s,
					  struct arena *a, bool broadcast)
{
	struct presence_state *ps = s->pres;
	struct account *acct = session_account(s);

	if (!ps)
		return;
	while (ps->directed) {
		struct presence_directed *d = ps->directed;
		struct jid to, bare;

		ps->directed = d->next;
		if (jid_parse(&to, d->jid, d->len) == 0) {
			bare = to;
			jid_to_bare(&bare);
			/* A contact with From heard the broadcast already. */
			if (!(broadcast && roster_contact_has_from(acct, bare.buf)))
				presence_route(w, presence_new(a, "unavailable", s->jid, to.buf));
		}
		free(d);
	}
	ps->ndirected = 0;
}

void presence_broadcast(struct conn *c, struct xml_node *st)
{
	struct worker *w = c->w;
	struct session *s = c->sess;
	const char *type = stanza_type(st);
	struct fanout f = FANOUT_INIT;
	struct xml_node *prio;
	struct presence_state *ps;
	bool was = s->available;
	int p = 0, old_prio = s->priority;
	char *copy, q[128];

	if (strcmp(type, "unavailable") == 0) {
		if (was && !w->srv->shutting_down && fanout_prepare(&f, st) == 0)
			presence_fan_out(w, s, st, &f, true);
		s->available = false;
		presence_forget_last(s);
		presence_directed_unavailable(w, s, &w->tmp, was);
		fanout_release(&f);
		if (was)
			cluster_session_update(w, s);	/* the registry (cluster.c) */
		return;
	}
	if (type[0])
		return;	/* subscriptions and probes need an address: nothing to do */

	/* Available: its priority (4.7.2.3), defaulting to 0. */
	prio = xml_child(st, XML_NS_CLIENT, "priority");
	if (prio) {
		const char *text = xml_text(&w->tmp, prio);

		if (!text || presence_parse_priority(text, &p) < 0) {
			router_bounce(c, st, "bad-request");
			return;
		}
	}
	avatar_compat_presence(w, s, st);	/* XEP-0153 photo hash (avatar_compat.c) */
	ps = presence_state_get(s);
	if (!ps || fanout_prepare(&f, st) < 0) {
		log_error("presence.broadcast_failed", "jid=%s msg=\"out of memory\"",
			  LOG_JID(q, s->jid));
		fanout_release(&f);
		return;
	}
	s->priority = p;
	s->available = true;
	/* Kept for probes and new subscribers: the template is exactly that. */
	copy = malloc(f.tmpl.len + 1);
	if (copy) {
		memcpy(copy, f.tmpl.data, f.tmpl.len + 1);
		free(ps->last);
		ps->last = copy;
		ps->last_len = f.tmpl.len;
	}
	presence_fan_out(w, s, st, &f, true);
	fanout_release(&f);
	if (!was || p != old_prio)
		cluster_session_update(w, s);	/* availability, priority (cluster.c) */
	if (!was) {
		presence_initial(w, s);
		provisioning_available(w, s);	/* XEP-0324: a clearCache may wait (provisioning.c) */
	}
	/* XEP-0160: offline messages go to the first non-negative resource. */
	if (p >= 0 && (!was || old_prio < 0))
		offline_deliver(w, s);
}

/* Records (or forgets) a directed-presence target of s (RFC 6121 4.6). */
static void presence_track_directed(struct session *s, const struct jid *to, bool available)
{
	struct presence_state *ps = available ? presence_state_get(s) : s->pres;
	struct presence_directed **pp, *d;

	if (!ps)
		return;
	for (pp = &ps->directed; *pp; pp = &(*pp)->next) {
		if ((*pp)->len == to->len && memcmp((*pp)->jid, to->buf, to->len) == 0) {
			if (!available) {
				d = *pp;
				*pp = d->next;
				free(d);
				ps->ndirected--;
			}
			return;
		}
	}
	if (!available)
		return;
	if (ps->ndirected >= PRESENCE_DIRECTED_MAX) {
		char q[128];

		log_warn("presence.directed_limit", "jid=%s limit=%d", LOG_JID(q, s->jid),
			 PRESENCE_DIRECTED_MAX);
		return;
	}
	d = malloc(sizeof(*d) + to->len + 1);
	if (!d)
		return;
	memcpy(d->jid, to->buf, to->len + 1);
	d->len = to->len;
	d->next = ps->directed;
	ps->directed = d;
	ps->ndirected++;
}

/*
 * A presence of the user's (data[0..len), serialized without 'to', with
 * 'from') for `contact`, a bare JID: when it is a local account at home
 * elsewhere and the user's block list names some of its resources, the
 * router would check the list against the bare JID only, so the copy goes
 * as a batch that leaves those resources out. Returns false to route it.
 */
static bool presence_send_excluding(struct worker *w, struct account *acct, const char *data,
				    size_t len, const char *contact)
{
	struct blocklist *bl = acct ? acct->blocklist : NULL;
	size_t clen = strlen(contact), pos = 0;
	struct strbuf list = STRBUF_INIT;
	struct fanout f = FANOUT_INIT;
	const char *item;
	bool named = false;
	struct jid cj;

	if (!blocklist_count(bl) || jid_parse(&cj, contact, clen) < 0 || !jid_has_local(&cj) ||
	    jid_has_resource(&cj) || !jid_is_local(w, &cj) ||
	    !router_home_elsewhere(w, contact, clen))
		return false;
	while (!named && (item = blocklist_next(bl, &pos)))
		named = strncmp(item, contact, clen) == 0 && item[clen] == '/';
	if (!named)
		return false;
	if (!blocklist_matches(bl, &cj) && fanout_prepare_bytes(&f, data, len) == 0) {
		presence_targets_add(&list, bl, contact, clen);
		presence_batch_post(w, worker_home(w->srv, contact), &f, &list, false);
	}
	strbuf_free(&list);
	fanout_release(&f);
	return true;
}

/*
 * Cluster mode: st for the account `user`'s available resources on other
 * nodes, delivered there as it is (cluster.c).
 */
static void presence_deliver_elsewhere(struct worker *w, struct xml_node *st,
				       const struct jid *from, const struct jid *user)
{
	size_t n;
	struct cluster_res *res = cluster_resources(user->buf, user->len, &n);

	for (size_t i = 0; i < n; i++)
		if (res[i].v.available)
			cluster_deliver(w, NULL, st, from->buf, &res[i]);
	free(res);
}

/*
 * Sends the user's current presence (each available resource's last) to
 * `contact`, which just gained From (RFC 6121 3.1.5).
 */
static void presence_send_current(struct worker *w, const char *bare, size_t bare_len,
				  const char *contact)
{
	struct arena a;

	arena_init(&a, PRESENCE_ARENA_CHUNK);
	for (struct session *s = sessdir_find_bare(w->sessions, bare, bare_len), *next; s;
	     s = next) {
		next = s->next;
		if (!s->available || !s->pres || !s->pres->last ||
		    presence_send_excluding(w, session_account(s), s->pres->last,
					    s->pres->last_len, contact))
			continue;
		presence_route_stored(w, &a, s->pres->last, s->pres->last_len, contact);
		arena_reset(&a);
	}
	arena_release(&a);
}

/* Unavailable from each available resource of the user to `contact`, which lost From. */
static void presence_send_unavailable(struct worker *w, const char *bare, size_t bare_len,
				      const char *contact)
{
	struct arena a;

	arena_init(&a, PRESENCE_ARENA_CHUNK);
	for (struct session *s = sessdir_find_bare(w->sessions, bare, bare_len), *next; s;
	     s = next) {
		struct strbuf ser = STRBUF_INIT;
		struct xml_node *p;

		next = s->next;
		if (!s->available)
			continue;
		/* Serialized only for presence_send_excluding(), which needs a block list. */
		p = presence_new(&a, "unavailable", s->jid, NULL);
		if (p && session_account(s) && blocklist_count(session_account(s)->blocklist))
			xml_serialize(&ser, p, XML_NS_CLIENT);
		if (!ser.len || ser.oom ||
		    !presence_send_excluding(w, session_account(s), ser.data, ser.len, contact)) {
			if (p && xml_attr_set(&a, p, "to", contact) < 0)
				p = NULL;
			presence_route(w, p);
		}
		strbuf_free(&ser);
		arena_reset(&a);
	}
	arena_release(&a);
}

/* A subscription stanza the server sends on a user's behalf: from user to contact. */
static void presence_send_sub(struct worker *w, const char *type, const char *from,
			      const char *to)
{
	struct arena a;

	arena_init(&a, PRESENCE_ARENA_CHUNK);
	presence_route(w, presence_new(&a, type, from, to));
	arena_release(&a);
}

/*
 * Applies a transition result to the account's roster in memory: the
 * pending request kept or dropped, the item changed (created when the
 * new state needs one), persisted and pushed. `req` is the request
 * stanza to keep when Pending In appears.
 */
static void presence_apply(struct worker *w, struct account *a, const struct jid *user,
			   const struct jid *contact, uint8_t old, bool old_approved,
			   const struct sub_result *r, const char *req, size_t req_len)
{
	uint8_t vis_old = old & (uint8_t)~SUB_PENDING_IN;
	uint8_t vis_new = r->state & (uint8_t)~SUB_PENDING_IN;
	struct roster_item *it;

	if ((r->state & SUB_PENDING_IN) && !(old & SUB_PENDING_IN) && req) {
		int ret = roster_keep_request(w, a, contact->buf, contact->len, req, req_len);

		if (ret < 0)
			log_warn("presence.request_dropped", "user=%s from=%s err=%d", a->user,
				 contact->buf, ret);
	} else if (!(r->state & SUB_PENDING_IN) && (old & SUB_PENDING_IN)) {
		roster_drop_request(w, a, contact->buf, contact->len);
	}
	if (vis_old == vis_new && old_approved == r->approved)
		return;
	it = roster_lookup(a->roster, contact->buf, contact->len);
	if ((!it || it->deleted) && !vis_new && !r->approved)
		return;	/* nothing to keep for a contact outside the roster */
	it = roster_upsert(a->roster, contact->buf, contact->len);
	if (!it) {
		log_error("presence.roster_failed", "user=%s msg=\"out of memory\"", a->user);
		return;
	}
	it->sub = vis_new;
	it->approved = r->approved;
	roster_commit(w, a, user->buf, user->len, it);
}

/*
 * Inbound subscription stanza st (from contact, both bare) for the
 * account `a` of user, in memory (RFC 6121 3.1.3, 3.1.6, 3.2.3, 3.3.3).
 */
static void presence_sub_in_memory(struct worker *w, struct account *a, enum sub_event ev,
				   struct xml_node *st, const struct jid *contact,
				   const struct jid *user)
{
	struct strbuf ser = STRBUF_INIT;
	struct sub_result r;
	uint8_t old;
	bool approved;

	old = roster_state(a->roster, contact->buf, contact->len, &approved);
	r = sub_transition(ev, old, approved);
	if (ev == SUB_IN_SUBSCRIBE && (r.state & SUB_PENDING_IN) && !(old & SUB_PENDING_IN))
		xml_serialize(&ser, st, XML_NS_CLIENT);
	presence_apply(w, a, user, contact, old, approved, &r, ser.oom ? NULL : ser.data, ser.len);
	strbuf_free(&ser);
	if (r.actions & SUB_ACT_FORWARD) {
		/* To every available resource; a subscribe waits in the requests otherwise. */
		for (struct session *s = sessdir_find_bare(w->sessions, user->buf, user->len),
		     *next; s; s = next) {
			next = s->next;
			if (s->available)
				router_deliver(s, st);
		}
		if (cluster_enabled())
			presence_deliver_elsewhere(w, st, contact, user);
	}
	if (r.actions & SUB_ACT_AUTO_SUBSCRIBED)
		presence_send_sub(w, "subscribed", user->buf, contact->buf);
	if (r.actions & SUB_ACT_SEND_PRESENCE)
		presence_send_current(w, user->buf, user->len, contact->buf);
	if (r.actions & SUB_ACT_SEND_UNAVAILABLE)
		presence_send_unavailable(w, user->buf, user->len, contact->buf);
}

/* ---- Inbound subscription stanzas for accounts without sessions ---- */

struct sub_store_req {
	struct storage_req req;		/* first */
	uint8_t ev;
	uint32_t max_requests;
	struct sub_result result;	/* out */
	char *contact;			/* into buf: the sender's bare JID */
	char *user_bare;		/* the recipient's bare JID */
	char *stanza;			/* the stanza as received */
	size_t stanza_len;
	char buf[];
};

static int presence_sub_store_run(struct storage *st, struct storage_req *req)
{
	struct sub_store_req *sr = (struct sub_store_req *)req;
	uint8_t old, vis_old, vis_new;
	bool approved, exists;
	int ret;

	ret = roster_db_account_exists(st, req->user);
	if (ret < 0)
		return ret;
	ret = roster_db_state(st, req->user, sr->contact, &old, &approved, &exists);
	if (ret < 0)
		return ret;
	sr->result = sub_transition(sr->ev, old, approved);
	if ((sr->result.state & SUB_PENDING_IN) && !(old & SUB_PENDING_IN)) {
		size_t items, requests;

		ret = roster_db_counts(st, req->user, &items, &requests);
		if (ret < 0)
			return ret;
		if (requests < sr->max_requests) {
			ret = roster_db_request_put(st, req->user, sr->contact, sr->stanza,
						    sr->stanza_len);
			if (ret < 0)
				return ret;
		}
	} else if (!(sr->result.state & SUB_PENDING_IN) && (old & SUB_PENDING_IN)) {
		ret = roster_db_request_delete(st, req->user, sr->contact);
		if (ret < 0)
			return ret;
	}
	vis_old = old & (uint8_t)~SUB_PENDING_IN;
	vis_new = sr->result.state & (uint8_t)~SUB_PENDING_IN;
	if (vis_old == vis_new && approved == sr->result.approved)
		return 0;
	if (!exists && !vis_new && !sr->result.approved)
		return 0;
	return roster_db_set_state(st, req->user, sr->contact, vis_new, sr->result.approved);
}

static void presence_sub_store_done(struct storage_req *req)
{
	struct sub_store_req *sr = (struct sub_store_req *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct account *a;
	struct jid user, contact;

	if (jid_parse(&user, sr->user_bare, strlen(sr->user_bare)) < 0 ||
	    jid_parse(&contact, sr->contact, strlen(sr->contact)) < 0)
		goto out;
	if (req->result == -ENOENT) {
		/* RFC 6121 8.5.1: no such user; a request is answered "unsubscribed". */
		if (sr->ev == SUB_IN_SUBSCRIBE)
			presence_send_sub(w, "unsubscribed", user.buf, contact.buf);
		goto out;
	}
	if (req->result < 0) {
		log_error("presence.subscription_failed", "user=%s err=%d", req->user, req->result);
		goto out;
	}
	a = sessdir_find_account(w->sessions, user.buf, user.len);
	if (a && a->roster) {
		/*
		 * The account logged in meanwhile: its roster may have been
		 * loaded before this change was stored. Replaying the event
		 * in memory fixes a stale roster and is a no-op on a fresh
		 * one (the transitions are idempotent).
		 */
		struct arena ar;
		struct xml_node *st;

		arena_init(&ar, PRESENCE_ARENA_CHUNK);
		st = stored_xml_parse(w->xml, &ar, sr->stanza, sr->stanza_len);
		if (st)
			presence_sub_in_memory(w, a, sr->ev, st, &contact, &user);
		arena_release(&ar);
		goto out;
	}
	if (sr->result.actions & SUB_ACT_AUTO_SUBSCRIBED)
		presence_send_sub(w, "subscribed", user.buf, contact.buf);
out:
	free(sr);
}

/* Queues the inbound processing of st for an account whose roster is not in memory. */
static void presence_sub_store(struct worker *w, enum sub_event ev, struct xml_node *st,
			       const struct jid *contact, const struct jid *user)
{
	struct strbuf ser = STRBUF_INIT;
	struct sub_store_req *sr;
	char *p;

	xml_serialize(&ser, st, XML_NS_CLIENT);
	if (ser.oom)
		goto oom;
	sr = calloc(1, sizeof(*sr) + contact->len + user->len + ser.len + 3);
	if (!sr)
		goto oom;
	p = sr->buf;
	sr->contact = p;
	memcpy(p, contact->buf, contact->len + 1);
	p += contact->len + 1;
	sr->user_bare = p;
	memcpy(p, user->buf, user->len + 1);
	p += user->len + 1;
	sr->stanza = p;
	memcpy(p, ser.data, ser.len + 1);
	sr->stanza_len = ser.len;
	strbuf_free(&ser);
	sr->ev = (uint8_t)ev;
	sr->max_requests = w->srv->cfg->max_roster_items;
	sr->req.op = STORAGE_OP_RUN;
	sr->req.run = presence_sub_store_run;
	sr->req.done = presence_sub_store_done;
	sr->req.inbox = &w->inbox;
	snprintf(sr->req.user, sizeof(sr->req.user), "%.*s", (int)user->local_len, user->buf);
	storage_queue_submit(w->srv->store, &sr->req);
	return;
oom:
	strbuf_free(&ser);
	log_error("presence.subscription_failed", "user=%s msg=\"out of memory\"", user->buf);
}

/* ---- Router and c2s hooks ---- */

bool presence_inbound(struct worker *w, struct conn *src, struct xml_node *st,
		      const struct jid *from, const struct jid *to)
{
	const char *type = stanza_type(st);
	int ev = sub_event_from_type(type, false);
	struct jid user, contact;
	struct account *a;

	if (ev < 0 && strcmp(type, "probe") != 0)
		return false;
	user = *to;
	jid_to_bare(&user);
	contact = *from;
	jid_to_bare(&contact);
	if (ev < 0) {
		const struct route_origin *o = router_origin(w, st);

		presence_answer_probe(w, &user, from, NULL);
		/* Cluster mode: the account's resources on other nodes answer from there. */
		if (cluster_enabled() && !(o && o->from_cluster))
			cluster_route_others(w, src, st, from, &user);
		return true;
	}
	/* XEP-0324: a provisioned thing's friendships are decided by the rules (provisioning.c). */
	if (ev == SUB_IN_SUBSCRIBE && provisioning_subscribe(w, st, &contact, &user))
		return true;
	/*
	 * RFC 6121 3.1.2: subscription stanzas travel between bare JIDs
	 * (stamped by the sender's server; done again here for stanzas the
	 * server re-routes).
	 */
	if (xml_attr_set(&w->tmp, st, "from", contact.buf) < 0 ||
	    xml_attr_set(&w->tmp, st, "to", user.buf) < 0)
		return true;
	a = sessdir_find_account(w->sessions, user.buf, user.len);
	if (a && a->roster)
		presence_sub_in_memory(w, a, ev, st, &contact, &user);
	else
		presence_sub_store(w, ev, st, &contact, &user);
	return true;
}

/* Outbound subscription stanza from c's session (RFC 6121 3.1.2, 3.2.2, 3.3.2, 3.4). */
static void presence_sub_out(struct conn *c, struct xml_node *st, enum sub_event ev,
			     const struct jid *from, const struct jid *to)
{
	struct worker *w = c->w;
	struct session *s = c->sess;
	struct account *a = session_account(s);
	struct jid user = *from, contact = *to;
	struct roster_item *it;
	struct sub_result r;
	uint8_t old;
	bool approved;

	jid_to_bare(&user);
	jid_to_bare(&contact);
	/* Our services take no subscriptions; other domains get them over s2s. */
	if (!jid_is_local(w, &contact) && service_for(w->srv->cfg, &contact)) {
		router_bounce(c, st, "remote-server-not-found");
		return;
	}
	if (!jid_has_local(&contact)) {
		router_bounce(c, st, "service-unavailable");
		return;
	}
	if (!a || !a->roster) {
		router_bounce(c, st, "internal-server-error");
		return;
	}
	old = roster_state(a->roster, contact.buf, contact.len, &approved);
	r = sub_transition(ev, old, approved);
	it = roster_lookup(a->roster, contact.buf, contact.len);
	if ((!it || it->deleted) && (r.state & (SUB_TO | SUB_FROM | SUB_PENDING_OUT) || r.approved) &&
	    a->roster->count >= w->srv->cfg->max_roster_items) {
		router_bounce(c, st, "not-allowed");
		return;
	}
	presence_apply(w, a, &user, &contact, old, approved, &r, NULL, 0);
	if (r.actions & SUB_ACT_FORWARD) {
		if (xml_attr_set(&w->tmp, st, "from", user.buf) == 0 &&
		    xml_attr_set(&w->tmp, st, "to", contact.buf) == 0)
			router_route(c, st, &user, &contact);
	}
	if (r.actions & SUB_ACT_SEND_PRESENCE)
		presence_send_current(w, user.buf, user.len, contact.buf);
	if (r.actions & SUB_ACT_SEND_UNAVAILABLE)
		presence_send_unavailable(w, user.buf, user.len, contact.buf);
}

void presence_outbound(struct conn *c, struct xml_node *st, const struct jid *from,
		       const struct jid *to)
{
	const char *type = stanza_type(st);
	int ev = sub_event_from_type(type, true);
	struct jid bare;

	if (ev >= 0) {
		presence_sub_out(c, st, ev, from, to);
		return;
	}
	if (!type[0] || strcmp(type, "unavailable") == 0) {
		bare = *to;
		jid_to_bare(&bare);
		/* Directed presence (4.6), except to the account's own resources. */
		if (!jid_bare_equal(&bare, from))
			presence_track_directed(c->sess, to, !type[0]);
		/* XEP-0153: directed presence (a room join) carries the photo hash too. */
		if (!type[0])
			avatar_compat_presence(c->w, c->sess, st);
	}
	router_route(c, st, from, to);
}

void presence_session_end(struct worker *w, struct session *s)
{
	struct presence_state *ps = s->pres;
	bool was = s->available;
	struct arena a;

	arena_init(&a, PRESENCE_ARENA_CHUNK);
	/* Moved to another node (sm.c): it lives on there, for contacts and rooms alike. */
	if (s->moved)
		was = false;
	if (was && !w->srv->shutting_down) {
		struct xml_node *p = presence_new(&a, "unavailable", s->jid, NULL);
		struct fanout f = FANOUT_INIT;

		/* RFC 6121 4.5.3.2: the server generates it for a vanished session. */
		if (p && fanout_prepare(&f, p) == 0)
			presence_fan_out(w, s, p, &f, false);
		fanout_release(&f);
	}
	if (!w->srv->shutting_down && !s->moved)
		presence_directed_unavailable(w, s, &a, was);
	s->available = false;
	arena_release(&a);
	if (ps) {
		while (ps->directed) {
			struct presence_directed *d = ps->directed;

			ps->directed = d->next;
			free(d);
		}
		free(ps->last);
		free(ps);
		s->pres = NULL;
	}
}

void presence_restore(struct session *s, bool available, int priority, const char *last,
		      size_t len)
{
	struct presence_state *ps;
	char *copy;

	s->priority = priority;
	s->available = available;
	if (!last || !(ps = presence_state_get(s)) || !(copy = malloc(len + 1)))
		return;	/* out of memory: its next presence sets it */
	memcpy(copy, last, len);
	copy[len] = '\0';
	free(ps->last);
	ps->last = copy;
	ps->last_len = len;
}

void presence_from_changed(struct worker *w, const char *bare, size_t bare_len,
			   const char *contact, bool gained)
{
	if (gained)
		presence_send_current(w, bare, bare_len, contact);
	else
		presence_send_unavailable(w, bare, bare_len, contact);
}

void presence_roster_removed(struct worker *w, const char *bare, size_t bare_len,
			     const struct jid *contact, uint8_t state)
{
	char user[JID_MAX];

	snprintf(user, sizeof(user), "%.*s", (int)bare_len, bare);
	if (state & (SUB_FROM | SUB_PENDING_IN))
		presence_send_sub(w, "unsubscribed", user, contact->buf);
	if (state & (SUB_TO | SUB_PENDING_OUT))
		presence_send_sub(w, "unsubscribe", user, contact->buf);
	if (state & SUB_FROM)
		presence_send_unavailable(w, bare, bare_len, contact->buf);
}

/* ---- A dead node's sessions (cluster mode) ---- */

struct gone_req {
	struct storage_req req;		/* first */
	struct roster *roster;		/* out: the account's roster */
	char full[];
};

static int presence_gone_run(struct storage *st, struct storage_req *req)
{
	struct gone_req *g = (struct gone_req *)req;

	return roster_load_sync(st, req->user, &g->roster);
}

static void presence_gone_done(struct storage_req *req)
{
	struct gone_req *g = (struct gone_req *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	unsigned sent = 0;

	if (req->result < 0) {
		log_warn("presence.gone_failed", "jid=%s err=%d msg=\"the roster could not be read; "
			 "contacts keep the session's last presence\"", g->full, req->result);
	} else if (g->roster) {
		for (const struct roster_item *it = g->roster->items; it; it = it->next) {
			struct arena a;

			if (it->deleted || !(it->sub & SUB_FROM))
				continue;
			arena_init(&a, PRESENCE_ARENA_CHUNK);
			presence_route(w, presence_new(&a, "unavailable", g->full, it->jid));
			arena_release(&a);
			sent++;
		}
	}
	log_info("presence.gone", "jid=%s contacts=%u", g->full, sent);
	roster_free(g->roster);
	free(g);
}

void presence_unavailable_for(struct worker *w, const char *full)
{
	size_t len = strlen(full);
	struct gone_req *g;
	struct jid j;

	if (jid_parse(&j, full, len) < 0 || !jid_has_local(&j) || !jid_has_resource(&j))
		return;
	g = calloc(1, sizeof(*g) + len + 1);
	if (!g) {
		log_warn("presence.gone_failed", "jid=%s msg=\"out of memory\"", full);
		return;
	}
	memcpy(g->full, full, len + 1);
	snprintf(g->req.user, sizeof(g->req.user), "%.*s", (int)j.local_len, j.buf);
	g->req.op = STORAGE_OP_RUN;
	g->req.run = presence_gone_run;
	g->req.done = presence_gone_done;
	g->req.inbox = &w->inbox;
	storage_queue_submit(w->srv->store, &g->req);
}
