/* SPDX-License-Identifier: MIT */
/*
 * The delivery rules. Local accounts only so far; stanzas for other
 * domains are answered with remote-server-not-found until federation
 * exists. Messages for an account with no available resource go to
 * offline storage (offline.c), which also finds out whether the account
 * exists; presence subscriptions and probes go to presence.c.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "blocking.h"
#include "c2s.h"
#include "carbons.h"
#include "cluster.h"
#include "console.h"
#include "conn.h"
#include "csi.h"
#include "durable.h"
#include "iq.h"
#include "jid.h"
#include "last_activity.h"
#include "log.h"
#include "mam.h"
#include "offline.h"
#include "presence.h"
#include "provisioning.h"
#include "push.h"
#include "router.h"
#include "s2s.h"
#include "server.h"
#include "service.h"
#include "session.h"
#include "sm.h"
#include "stanza.h"
#include "storage.h"
#include "worker.h"

/* The local session of a stanza's sender (by its 'from'), or NULL. */
static struct session *sender_session(struct worker *w, const struct xml_node *st)
{
	const char *from = xml_attr_get(st, "from");
	struct jid j;

	if (!from || jid_parse(&j, from, strlen(from)) < 0)
		return NULL;
	return sessdir_find_full(w->sessions, j.buf, j.len);
}

static void router_bounce_remote(struct worker *w, const struct xml_node *st,
				 const char *condition);
static bool route_bounce_home(struct worker *w, const struct xml_node *st,
			      const char *condition);

void router_bounce_w(struct worker *w, struct conn *src, const struct xml_node *st,
		     const char *condition)
{
	struct session *detached = NULL;
	struct arena_mark mark;
	struct xml_node *r;

	if (stanza_is_error(st))
		return;
	/* A forwarded stanza's sender is at its own home: the error goes there. */
	if (!src && route_bounce_home(w, st, condition))
		return;
	if (!src) {
		struct session *s = sender_session(w, st);

		src = s ? s->conn : NULL;
		detached = s && !s->conn ? s : NULL;	/* stream management keeps it */
	}
	if (!src && !detached) {
		router_bounce_remote(w, st, condition);	/* over s2s, or the sender is gone */
		return;
	}
	/*
	 * Bounces happen in the middle of routing, while the stanza being
	 * routed still has attributes in w->tmp: give back only what the
	 * reply took.
	 */
	mark = arena_mark(&w->tmp);
	r = stanza_error_reply(&w->tmp, st, w->srv->cfg->domain, condition, NULL);
	if (r && src)
		conn_send_node(src, r);
	else if (r)
		router_deliver(detached, r);	/* queued for its resumption */
	arena_rewind(&w->tmp, mark);
}

/*
 * The error for a stanza whose sender is not a local session: when it
 * came from another domain (a server or a component), it goes back there.
 */
static void router_bounce_remote(struct worker *w, const struct xml_node *st,
				 const char *condition)
{
	const char *from = xml_attr_get(st, "from");
	struct arena_mark mark;
	struct xml_node *r;
	struct jid sender, self;
	const char *to;

	bool local;

	if (!from || jid_parse(&sender, from, strlen(from)) < 0)
		return;
	local = s2s_domain_is_local(w, sender.buf + sender.domain_off, sender.domain_len);
	/*
	 * A local sender without a session of that JID: only a bare JID (the
	 * sender of a subscription request, RFC 6121 3.1.2) gets the error,
	 * through the router, at its available resources.
	 */
	if (local && (jid_has_resource(&sender) || !jid_has_local(&sender) ||
		      service_for(w->srv->cfg, &sender) ||
		      s2s_domain_is_component(w, sender.buf + sender.domain_off, sender.domain_len)))
		return;
	mark = arena_mark(&w->tmp);
	r = stanza_error_reply(&w->tmp, st, w->srv->cfg->domain, condition, NULL);
	to = r ? xml_attr_get(r, "from") : NULL;
	if (to && jid_parse(&self, to, strlen(to)) == 0) {
		/* Back to its server or component (through worker 0), or to the local sender. */
		router_route_w(w, NULL, r, &self, &sender);
	}
	arena_rewind(&w->tmp, mark);
}

void router_bounce(struct conn *src, const struct xml_node *st, const char *condition)
{
	router_bounce_w(src->w, src, st, condition);
}

/*
 * Every stanza for a local session passes here: the features that filter
 * or hold deliveries (block lists, client state indication) decide first,
 * then the stanza goes out on the session's stream.
 */
void router_deliver(struct session *s, struct xml_node *st)
{
	router_deliver_prepared(s, st, NULL, NULL, 0);
}

/*
 * A shared tree addressed to one recipient for the length of a call, with
 * no allocation: an existing 'to' attribute's value is swapped, else one
 * on the caller's stack is linked in; to_swap_end undoes either.
 */
struct to_swap {
	struct xml_attr tmp;
	struct xml_attr *attr;
	const char *old;
};

static void to_swap_begin(struct to_swap *sw, struct xml_node *st, const char *to)
{
	for (sw->attr = st->attrs; sw->attr; sw->attr = sw->attr->next)
		if (!sw->attr->ns && strcmp(sw->attr->name, "to") == 0)
			break;
	if (!sw->attr) {
		sw->tmp = (struct xml_attr){ .next = st->attrs, .name = "to" };
		st->attrs = sw->attr = &sw->tmp;
	}
	sw->old = sw->attr->value;
	sw->attr->value = to;
}

static void to_swap_end(struct to_swap *sw, struct xml_node *st)
{
	if (sw->attr == &sw->tmp)
		st->attrs = sw->tmp.next;
	else
		sw->attr->value = sw->old;
}

void router_deliver_prepared(struct session *s, struct xml_node *st, const char *to,
			     const char *data, size_t len)
{
	struct to_swap sw;

	/* The stand-in for a requester at home on another worker: routed there. */
	if (s->remote) {
		const char *dst = to ? to : xml_attr_get(st, "to");

		if (!dst || router_route_copy(s->remote, st, dst, strlen(dst)) < 0)
			log_warn("router.answer_unroutable", "msg=\"an answer for a requester at home "
				 "elsewhere has no usable address\"");
		return;
	}
	/*
	 * A fanned-out tree is shared by all recipients: for the filters,
	 * and for the hooks that keep a copy of the tree, it carries this
	 * recipient's 'to' during the call.
	 */
	if (to)
		to_swap_begin(&sw, st, to);
	/* An ended session (freed at the end of the turn) takes nothing more. */
	if (s->ending || blocking_filter_delivery(s, st))	/* XEP-0191 (blocking.c) */
		goto out;
	if (!s->conn) {
		push_notify_detached(sm_session_worker(s), s, st);	/* XEP-0357 (push.c) */
		sm_deliver_detached(s, st);	/* held for stream resumption (sm.c) */
	} else if (csi_hold(s, st))		/* XEP-0352 (csi.c) */
		goto out;
	else if (data)
		c2s_send_prepared(s->conn, st, data, len);
	else
		c2s_send_stanza(s->conn, st);
out:
	if (to)
		to_swap_end(&sw, st);
}

static void deliver(struct session *s, struct xml_node *st)
{
	router_deliver(s, st);
}

/*
 * Highest priority among available sessions with priority >= 0, or -1:
 * here, and on other nodes (the `nres` of `res`, cluster mode).
 */
static int best_priority(struct session *list, const struct cluster_res *res, size_t nres)
{
	int best = -1;

	for (struct session *s = list; s; s = s->next)
		if (s->available && s->priority >= 0 && s->priority > best)
			best = s->priority;
	for (size_t i = 0; i < nres; i++)
		if (res[i].v.available && res[i].v.priority > best)
			best = res[i].v.priority;
	return best;
}

/*
 * Message to a bare JID (RFC 6121 8.5.2): normal and chat go to the
 * available resources of highest non-negative priority, headline to all
 * non-negative ones; groupchat is not for accounts; error is dropped
 * (8.5.2.1.1, 8.5.2.2.1). Without a non-negative resource, normal and
 * chat are stored offline (XEP-0160) and headline is dropped. While
 * stored messages are being fetched, normal and chat are stored too, so
 * they cannot overtake the stored ones.
 *
 * Cluster mode (`others`): the account's resources on other nodes are
 * among those chosen from, and get their copy through their node.
 */
static void route_store_offline(struct worker *w, struct conn *src, struct xml_node *st,
				const struct jid *to)
{
	char user[JID_PART_MAX + 1];
	int ret;

	snprintf(user, sizeof(user), "%.*s", (int)to->local_len, to->buf);
	ret = offline_store(w, st, user);
	if (ret == 0)
		push_notify_offline(w, user, st);	/* XEP-0357 (push.c) */
	/* -EBUSY: more is waiting for the disk than offline.c allows (a flood). */
	if (ret < 0)
		router_bounce_w(w, src, st, ret == -EBUSY ? "resource-constraint" :
				"service-unavailable");
}

static void route_message_bare(struct worker *w, struct conn *src, struct xml_node *st,
			       const struct jid *from, const struct jid *to,
			       struct session *list, bool others)
{
	const char *type = stanza_type(st);
	bool headline = strcmp(type, "headline") == 0;
	size_t nres = 0;
	struct cluster_res *res = others && cluster_enabled() ?
		cluster_resources(to->buf, to->domain_off + to->domain_len, &nres) : NULL;
	int best = best_priority(list, res, nres);
	struct session *next;

	if (strcmp(type, "error") == 0)
		goto out;
	if (strcmp(type, "groupchat") == 0) {
		router_bounce_w(w, src, st, "service-unavailable");
		goto out;
	}
	if (best >= 0 && !(!headline && list && offline_holding(session_account(list)))) {
		/* Sessions may end inside a delivery (output overflow): take next first. */
		for (struct session *s = list; s; s = next) {
			next = s->next;
			if (s->available && s->priority >= 0 && (headline || s->priority == best))
				deliver(s, st);
		}
		for (size_t i = 0; i < nres; i++)
			if (res[i].v.available && res[i].v.priority >= 0 &&
			    (headline || res[i].v.priority == best))
				cluster_deliver(w, src, st, from->buf, &res[i]);
		goto out;
	}
	if (headline || !offline_wanted(st))
		goto out;
	route_store_offline(w, src, st, to);
out:
	free(res);
}

/*
 * Presence to a bare JID: every available resource (RFC 6121 8.5.2.1.2);
 * in cluster mode, unless another node sent it here, those on other
 * nodes too (through their nodes).
 */
static void route_presence_bare(struct worker *w, struct conn *src, struct xml_node *st,
				const struct jid *from, const struct jid *to,
				struct session *list)
{
	const struct route_origin *o = router_origin(w, st);
	struct session *next;

	if (cluster_enabled() && !(o && o->from_cluster))
		cluster_route_others(w, src, st, from, to);

	for (struct session *s = list; s; s = next) {
		next = s->next;
		if (s->available)
			deliver(s, st);
	}
}

static void route_iq_to_server(struct worker *w, struct conn *src, struct xml_node *st,
			       const struct jid *from, const struct jid *to, enum iq_scope scope)
{
	struct iq_request rq = {
		.w = w,
		.conn = src,
		.iq = st,
		.payload = xml_first_element(st),
		.from = from,
		.to = to,
		.scope = scope,
	};

	/* A result or error has at most one child; nothing to answer. */
	if (!rq.payload) {
		if (!stanza_is_error(st) && strcmp(stanza_type(st), "result") != 0)
			router_bounce_w(w, src, st, "bad-request");
		return;
	}
	/*
	 * Requests from elsewhere (no local connection): other servers and
	 * components get the server's own answers that need no session
	 * (ping, disco, version, time), routed back; others are refused.
	 */
	if (!router_from_local_session(w, src, st) &&
	    !(scope == IQ_SCOPE_SERVER && iq_remote_allowed(&rq))) {
		router_bounce_w(w, src, st, "service-unavailable");
		return;
	}
	iq_dispatch(&rq);
}

/* Stanzas to a local account (bare or full JID). */
static void route_local(struct worker *w, struct conn *src, struct xml_node *st,
			const struct jid *from, const struct jid *to)
{
	struct sessdir *dir = w->sessions;
	enum stanza_kind kind = stanza_kind(st);
	size_t bare_len = to->domain_off + to->domain_len;
	struct session *list = sessdir_find_bare(dir, to->buf, bare_len);
	bool own = jid_bare_equal(from, to);

	/* XEP-0323/0325 under XEP-0324 rules; IoT iqs to bare JIDs (provisioning.c). */
	if (provisioning_route(w, src, st, from, to))
		return;

	if (jid_has_resource(to)) {
		struct session *s = sessdir_find_full(dir, to->buf, to->len);

		/* XEP-0012 4: idle time only for those who may see the presence. */
		if (s && kind == STANZA_IQ && !own &&
		    last_activity_deny_resource(w, st, from, to)) {
			router_bounce_w(w, src, st, "forbidden");
			return;
		}
		/* Subscriptions and probes are for the account (RFC 6121 3.1.2, 4.3). */
		if (kind == STANZA_PRESENCE && presence_inbound(w, src, st, from, to))
			return;
		if (s) {
			deliver(s, st);
			return;
		}
		/*
		 * RFC 6121 8.5.3.2: no such resource. A chat message is
		 * handled as if sent to the bare JID; normal, headline and
		 * groupchat are answered service-unavailable; errors and
		 * iq results are dropped, other iqs answered.
		 */
		if (kind == STANZA_MESSAGE) {
			const char *type = stanza_type(st);

			if (strcmp(type, "chat") == 0)
				route_message_bare(w, src, st, from, to, list, true);
			else
				router_bounce_w(w, src, st, "service-unavailable");
		} else if (kind == STANZA_IQ && strcmp(stanza_type(st), "result") != 0) {
			router_bounce_w(w, src, st, "service-unavailable");
		}
		/* Presence to an unavailable resource is dropped. */
		return;
	}

	switch (kind) {
	case STANZA_MESSAGE:
		route_message_bare(w, src, st, from, to, list, true);
		break;
	case STANZA_PRESENCE:
		if (!presence_inbound(w, src, st, from, to))
			route_presence_bare(w, src, st, from, to, list);
		break;
	case STANZA_IQ:
		/*
		 * The server answers for the account (RFC 6121 8.5.2.1.3): to
		 * its owner, and to others through the IQ_SCOPE_CONTACT
		 * handlers (which check that the account exists).
		 */
		if (own)
			route_iq_to_server(w, src, st, from, to, IQ_SCOPE_ACCOUNT);
		else if (!stanza_is_error(st) && strcmp(stanza_type(st), "result") != 0)
			route_iq_to_server(w, src, st, from, to, IQ_SCOPE_CONTACT);
		else if (stanza_is_error(st))
			push_iq_error(w, st, from, to);	/* XEP-0357: an app server refuses */
		break;
	case STANZA_OTHER:
		break;
	}
}

/* ---- Account homes: forwarding between workers (docs/account-homes.md) ---- */

const struct route_origin *router_origin(const struct worker *w, const struct xml_node *st)
{
	return w->origin && w->origin->st == st ? w->origin : NULL;
}

bool router_take_held_ack(struct worker *w, const struct xml_node *st, unsigned *worker,
			  char *sender, size_t size)
{
	/* The origin lives in the forward's message, which is ours while it is routed. */
	struct route_origin *o = (struct route_origin *)router_origin(w, st);

	if (!o || !o->held_ack || !o->sender || strlen(o->sender) >= size)
		return false;
	memcpy(sender, o->sender, strlen(o->sender) + 1);
	*worker = o->origin_worker;
	o->held_ack = false;	/* route_fwd_arrived leaves it to the taker */
	return true;
}

bool router_from_local_session(const struct worker *w, const struct conn *src,
			       const struct xml_node *st)
{
	const struct route_origin *o;

	if (src)
		return true;
	o = router_origin(w, st);
	return o && o->from_local_session;
}

/*
 * Whether the recipient has no session here that takes the stanza: for a
 * full JID, that resource; for a bare JID, any (an account with sessions
 * on two nodes at once gets bare-JID stanzas on the node routing them).
 */
static bool route_elsewhere(struct worker *w, const struct jid *to)
{
	if (jid_has_resource(to))
		return !sessdir_find_full(w->sessions, to->buf, to->len);
	return !sessdir_find_bare(w->sessions, to->buf, to->domain_off + to->domain_len);
}

/*
 * Cluster mode: a message for the bare JID that none of the account's
 * sessions here takes (none available with a non-negative priority),
 * nor any elsewhere by the replica. The replica may lag a session that
 * became available on another node an instant ago: the registry decides
 * (cluster_route), before anything is archived or stored here.
 */
static bool route_nobody_takes(struct worker *w, const struct xml_node *st, const struct jid *to)
{
	const char *type = stanza_type(st);
	struct session *list;
	size_t nres = 0;
	struct cluster_res *res;
	int best;

	if (stanza_kind(st) != STANZA_MESSAGE || jid_has_resource(to) ||
	    strcmp(type, "error") == 0 || strcmp(type, "groupchat") == 0 ||
	    strcmp(type, "headline") == 0)
		return false;
	/* The common case, a session here takes it, needs no look at the replica. */
	list = sessdir_find_bare(w->sessions, to->buf, to->len);
	if (best_priority(list, NULL, 0) >= 0)
		return false;
	res = cluster_resources(to->buf, to->len, &nres);
	best = best_priority(list, res, nres);
	free(res);
	return best < 0;
}

/* The recipient's side of routing to a local account: at its home. */
static void route_home(struct worker *w, struct conn *src, struct xml_node *st,
		       const struct jid *from, const struct jid *to)
{
	const struct route_origin *o = router_origin(w, st);
	struct mam_stamp ms;

	/*
	 * Cluster mode: a recipient with no session on this node but some on
	 * another goes to that node's stream (cluster.c); the recipient's
	 * side (block list, archive, delivery) runs there. So does a message
	 * no session here would take when another node may have one.
	 */
	if (cluster_enabled() && !(o && o->from_cluster) &&
	    (route_elsewhere(w, to) || route_nobody_takes(w, st, to)) &&
	    cluster_route(w, src, st, from, to))
		return;
	/* XEP-0191: once per stanza, so a refused message is answered once. */
	if (blocking_inbound(w, src, st, from, to))
		return;
	mam_inbound(&ms, w, src, st, from, to);	/* XEP-0313 archive, XEP-0359 stamp (mam.c) */
	route_local(w, src, st, from, to);
	carbons_received(w, st, from, to);	/* XEP-0280 (carbons.c) */
	mam_stamp_end(&ms);
}

/* The home worker of a local account's JID (bare or full). */
static unsigned route_home_of(struct worker *w, const struct jid *j)
{
	char bare[JID_MAX];
	size_t len = j->domain_off + j->domain_len;

	if (len >= sizeof(bare))
		return 0;
	memcpy(bare, j->buf, len);
	bare[len] = '\0';
	return worker_home(w->srv, bare);
}

/*
 * Whether a stanza for the local account `to` goes to its home's mailbox:
 * when the home is another worker, or always with homes = loop. Not when
 * it was forwarded here already, nor when an account's own connection
 * addresses its own account (at home by definition; iqs to the own bare
 * JID need the connection).
 */
static bool route_must_forward(struct worker *w, struct conn *src, const struct xml_node *st,
			       const struct jid *from, const struct jid *to)
{
	if (!from || router_origin(w, st))
		return false;
	if (src && jid_bare_equal(from, to))
		return false;
	if (w->srv->cfg->homes_loop)
		return true;
	return w->srv->nworkers > 1 && route_home_of(w, to) != w->id;
}

/*
 * A stanza on its way to its recipient's home: a copy of the tree in the
 * message's own arena (the sender's tree lives in its scratch space),
 * the addresses and where it came from. The home routes it again.
 */
enum route_fwd_kind {
	FWD_HOME,			/* to a local account, at its home: route_home */
	FWD_ERROR,			/* an error for the sender: to its session `to` */
	FWD_REROUTE,			/* to a service or another domain: routed on worker 0 */
	FWD_CLUSTER_DELIVER,		/* another node's copy for a session `to`: at its home */
};

struct route_fwd {
	struct worker_msg msg;		/* first */
	struct route_origin origin;
	enum route_fwd_kind kind;
	struct xml_node *st;
	char *from, *to;		/* normalized JIDs */
	struct arena a;
	unsigned owner;			/* the worker that made it, where it goes back */
	struct route_fwd *pool_next;
};

/*
 * A forwarded stanza's message goes back to the worker that made it once
 * it was routed, and is reused there with its arena's first chunk:
 * forwarding then allocates nothing in the steady state. Freed on the
 * routing worker instead, each block would go back to the maker's malloc
 * arena under that arena's lock, which two workers forwarding to each
 * other then fight over (futex waits, measured: half the throughput).
 * Given back through a lock-free stack (push one, the owner takes all).
 */
#define ROUTE_FWD_KEEP	1024	/* messages a worker keeps for reuse */

static void route_fwd_destroy(struct route_fwd *f)
{
	arena_release(&f->a);
	free(f);
}

static struct route_fwd *route_fwd_get(struct worker *w)
{
	struct route_fwd *f = w->fwd_free;

	if (!f) {
		/* What the others gave back; beyond what we keep, freed here (our arena). */
		f = atomic_exchange_explicit(&w->fwd_returned, NULL, memory_order_acquire);
		while (f) {
			struct route_fwd *next = f->pool_next;

			if (w->fwd_nfree < ROUTE_FWD_KEEP) {
				f->pool_next = w->fwd_free;
				w->fwd_free = f;
				w->fwd_nfree++;
			} else {
				route_fwd_destroy(f);
			}
			f = next;
		}
		f = w->fwd_free;
	}
	if (f) {
		w->fwd_free = f->pool_next;
		w->fwd_nfree--;
		f->origin = (struct route_origin){ 0 };
		f->kind = FWD_HOME;
		f->st = NULL;
		f->from = f->to = NULL;
		return f;
	}
	f = calloc(1, sizeof(*f));
	if (f) {
		arena_init(&f->a, 1024);
		f->owner = w->id;
	}
	return f;
}

static void route_fwd_free(struct worker *w, struct route_fwd *f)
{
	struct worker *owner = &w->srv->workers[f->owner];
	struct route_fwd *head;

	arena_reset(&f->a);
	if (owner == w) {
		if (w->fwd_nfree >= ROUTE_FWD_KEEP) {
			route_fwd_destroy(f);
			return;
		}
		f->pool_next = w->fwd_free;
		w->fwd_free = f;
		w->fwd_nfree++;
		return;
	}
	head = atomic_load_explicit(&owner->fwd_returned, memory_order_relaxed);
	do
		f->pool_next = head;
	while (!atomic_compare_exchange_weak_explicit(&owner->fwd_returned, &head, f,
						      memory_order_release, memory_order_relaxed));
}

void router_worker_destroy(struct worker *w)
{
	struct route_fwd *lists[2] = {
		w->fwd_free, atomic_exchange_explicit(&w->fwd_returned, NULL, memory_order_acquire),
	};

	for (int i = 0; i < 2; i++)
		for (struct route_fwd *f = lists[i], *next; f; f = next) {
			next = f->pool_next;
			route_fwd_destroy(f);
		}
	w->fwd_free = NULL;
	w->fwd_nfree = 0;
}

/* An error for a forwarded stanza, at the sender's home: as router_bounce_w does. */
static void route_deliver_error(struct worker *w, struct xml_node *r, const struct jid *to)
{
	struct session *s = sessdir_find_full(w->sessions, to->buf, to->len);
	const char *from_attr = xml_attr_get(r, "from");
	struct jid from;

	/* Cluster mode: a sender on another node (a dead node's stanza, taken over here). */
	if (!s && cluster_enabled() && from_attr &&
	    jid_parse(&from, from_attr, strlen(from_attr)) == 0) {
		const struct route_origin *outer = w->origin;

		w->origin = NULL;
		router_route_w(w, NULL, r, &from, to);
		w->origin = outer;
		return;
	}
	if (!s || s->ending)
		return;	/* the sender is gone */
	if (s->conn)
		conn_send_node(s->conn, r);
	else
		router_deliver(s, r);	/* detached: queued for its resumption */
}

static void route_fwd_arrived(struct worker *w, struct worker_msg *m)
{
	struct route_fwd *f = (struct route_fwd *)m;
	uint64_t mark = storage_queue_submitted(w->srv->store);
	const struct route_origin *outer = w->origin;
	struct jid from, to;

	if (jid_parse(&from, f->from, strlen(f->from)) == 0 &&
	    jid_parse(&to, f->to, strlen(f->to)) == 0) {
		f->origin.st = f->st;
		w->origin = &f->origin;
		if (f->kind == FWD_ERROR)
			route_deliver_error(w, f->st, &to);
		else if (f->kind == FWD_CLUSTER_DELIVER)
			router_deliver_cluster(w, f->st, &from, &to);
		else if (f->kind == FWD_REROUTE)
			router_route_w(w, NULL, f->st, &from, &to);
		else
			route_home(w, NULL, f->st, &from, &to);
		w->origin = outer;
	}
	/* What the routing wrote commits before the sender's ack goes out (durable.c). */
	if (f->origin.held_ack)
		durable_release_remote(w, f->origin.origin_worker, f->origin.sender, mark);
	/* Nothing keeps the tree: hooks that hold a stanza copy it. */
	if (!outer)
		arena_reset(&w->tmp);
	route_fwd_free(w, f);
}

/*
 * Posts st to worker `home`: for `to`, a local account at home there
 * (FWD_HOME), the session of a sender that gets an error (FWD_ERROR), or
 * a service or another domain, served by worker 0 (FWD_REROUTE). Out of
 * memory: routed here after all when this is the target, else answered
 * with an error.
 */
static void route_forward_to(struct worker *w, unsigned home, struct conn *src,
			     struct xml_node *st, const struct jid *from, const struct jid *to,
			     enum route_fwd_kind kind)
{
	const struct route_origin *o = router_origin(w, st);
	bool deliver_only = kind == FWD_ERROR || kind == FWD_CLUSTER_DELIVER;
	struct route_fwd *f = route_fwd_get(w);

	if (f) {
		f->st = xml_node_clone(&f->a, st);
		f->from = arena_strndup(&f->a, from->buf, from->len);
		f->to = arena_strndup(&f->a, to->buf, to->len);
	}
	if (!f || !f->st || !f->from || !f->to) {
		log_warn("router.forward_failed", "to=%s msg=\"out of memory\"", to->buf);
		if (f)
			route_fwd_free(w, f);
		if (deliver_only)
			return;
		if (home == w->id && kind == FWD_HOME)
			route_home(w, src, st, from, to);
		else
			router_bounce_w(w, src, st, "internal-server-error");
		return;
	}
	f->kind = kind;
	f->origin.from_local_session = src != NULL || (o && o->from_local_session);
	f->origin.from_cluster = o && o->from_cluster;
	f->origin.origin_worker = w->id;
	/* Stream management: acked once the home has routed (and stored) it (0b). */
	if (!deliver_only && src && src->sess && src->sess->sm &&
	    (f->origin.sender = arena_strndup(&f->a, src->sess->jid, src->sess->jid_len))) {
		sm_hold_ack(src->sess);
		f->origin.held_ack = true;
	}
	if (home == w->id)
		w->fwd_self = true;
	worker_post(w, home, &f->msg, route_fwd_arrived);
}

static void route_forward(struct worker *w, struct conn *src, struct xml_node *st,
			  const struct jid *from, const struct jid *to, bool deliver_only)
{
	route_forward_to(w, route_home_of(w, to), src, st, from, to,
			 deliver_only ? FWD_ERROR : FWD_HOME);
}

/*
 * The error for a stanza routed here from another worker (or, homes =
 * loop, from this one): the sender is a local session at its own home,
 * so the error is posted there (and delivered to that session, as
 * router_bounce_w does for a sender here). Also for a local sender whose
 * home is elsewhere. Returns false to bounce as usual.
 */
static bool route_bounce_home(struct worker *w, const struct xml_node *st,
			      const char *condition)
{
	const struct route_origin *o = router_origin(w, st);
	const char *from = xml_attr_get(st, "from");
	const char *domain = w->srv->cfg->domain;
	struct arena_mark mark;
	struct xml_node *r;
	struct jid sender, self;
	const char *rfrom;

	if (!from || jid_parse(&sender, from, strlen(from)) < 0 || !jid_has_local(&sender) ||
	    !jid_has_resource(&sender) || sender.domain_len != strlen(domain) ||
	    memcmp(sender.buf + sender.domain_off, domain, sender.domain_len) != 0)
		return false;
	if (!(o && o->from_local_session) && route_home_of(w, &sender) == w->id)
		return false;
	mark = arena_mark(&w->tmp);
	r = stanza_error_reply(&w->tmp, st, domain, condition, NULL);
	rfrom = r ? xml_attr_get(r, "from") : NULL;
	if (rfrom && jid_parse(&self, rfrom, strlen(rfrom)) == 0) {
		if (o && o->from_cluster) {
			/* The sender is on another node: the error is routed, and goes there. */
			const struct route_origin *outer = w->origin;

			w->origin = NULL;
			router_route_w(w, NULL, r, &self, &sender);
			w->origin = outer;
		} else {
			route_forward(w, NULL, r, &self, &sender, true);
		}
	}
	arena_rewind(&w->tmp, mark);
	return true;
}

bool router_home_elsewhere(struct worker *w, const char *jid, size_t len)
{
	const char *slash = memchr(jid, '/', len);
	char bare[JID_MAX];

	if (w->srv->nworkers <= 1)
		return false;
	if (slash)
		len = (size_t)(slash - jid);
	if (len >= sizeof(bare))
		return false;
	memcpy(bare, jid, len);
	bare[len] = '\0';
	return worker_home(w->srv, bare) != w->id;
}

int router_route_copy(struct worker *w, struct xml_node *st, const char *to, size_t to_len)
{
	const char *from_attr = xml_attr_get(st, "from");
	const struct route_origin *outer;
	struct to_swap sw;
	struct jid from, dst;

	if (jid_parse(&dst, to, to_len) < 0)
		return -EINVAL;
	/* No 'from': what the server answers for the account itself comes from it. */
	if (!from_attr) {
		from = dst;
		jid_to_bare(&from);
	} else if (jid_parse(&from, from_attr, strlen(from_attr)) < 0) {
		return -EINVAL;
	}
	to_swap_begin(&sw, st, dst.buf);	/* this recipient's 'to' for the call */
	/*
	 * A new stanza of the service's, even when it reuses the tree of the
	 * forwarded one it answers (a room reflects a message in place).
	 */
	outer = w->origin;
	w->origin = NULL;
	router_route_w(w, NULL, st, &from, &dst);
	w->origin = outer;
	to_swap_end(&sw, st);
	return 0;
}

void router_forwards_settle(struct worker *w)
{
	if (!w->fwd_self)
		return;
	w->fwd_self = false;
	mailbox_drain(w);
}

void router_route_w(struct worker *w, struct conn *src, struct xml_node *st,
		    const struct jid *from, const struct jid *to)
{
	const char *domain = w->srv->cfg->domain;
	enum stanza_kind kind = stanza_kind(st);
	struct jid self;

	/* No 'to' (RFC 6120 10.3): the stanza is for the sender's own account. */
	if (!to) {
		if (kind == STANZA_IQ) {
			route_iq_to_server(w, src, st, from, NULL, IQ_SCOPE_ACCOUNT);
			return;
		}
		self = *from;
		jid_to_bare(&self);
		to = &self;
	}

	if (to->domain_len != strlen(domain) || memcmp(to->buf + to->domain_off, domain, to->domain_len)) {
		const struct service *svc;

		/* The services, components and federation links live on worker 0. */
		if (w->id != 0) {
			route_forward_to(w, 0, src, st, from, to, FWD_REROUTE);
			return;
		}
		svc = service_for(w->srv->cfg, to);
		/* Cluster mode: served by the node that holds their lease (cluster.c). */
		if (svc && cluster_enabled() && cluster_service_route(w, src, st, from, to))
			return;
		/* Services at subdomains (conference., pubsub., ...): service.c. */
		if (svc) {
			svc->route(w, src, st, from, to);
			return;
		}
		/* Components and other servers (s2s.c). */
		s2s_route(w, src, st, from, to);
		return;
	}
	if (!jid_has_local(to)) {
		if (kind == STANZA_IQ && !jid_has_resource(to)) {
			route_iq_to_server(w, src, st, from, to, IQ_SCOPE_SERVER);
		} else if (kind == STANZA_MESSAGE) {
			const char *type = stanza_type(st);

			/* Read-outs the web console asked for (console.c, on worker 0). */
			if (w->id != 0) {
				route_forward_to(w, 0, src, st, from, to, FWD_REROUTE);
				return;
			}
			if (console_sensor_data(w, st, from))
				return;
			if (strcmp(type, "headline") != 0 && strcmp(type, "groupchat") != 0)
				router_bounce_w(w, src, st, "service-unavailable");
		} else if (kind == STANZA_IQ) {
			router_bounce_w(w, src, st, "service-unavailable");
		}
		return;
	}
	/* The recipient's side runs at its home worker (docs/account-homes.md). */
	if (route_must_forward(w, src, st, from, to)) {
		/* What the server sends on an account's behalf: the sender's list applies here. */
		if (!src && !blocking_sender_allows(w, from, to))
			return;
		route_forward(w, src, st, from, to, false);
		return;
	}
	route_home(w, src, st, from, to);
}

void router_deliver_cluster(struct worker *w, struct xml_node *st, const struct jid *from,
			    const struct jid *to)
{
	struct session *s = jid_has_resource(to) ?
			    sessdir_find_full(w->sessions, to->buf, to->len) : NULL;
	unsigned home = route_home_of(w, to);

	if (s && !s->remote) {
		deliver(s, st);
		return;
	}
	/* Not at the account's home (a copy that could not go out, cluster.c): taken there. */
	if (home != w->id) {
		route_forward_to(w, home, NULL, st, from, to, FWD_CLUSTER_DELIVER);
		return;
	}
	/* A carbon copy, or presence, was for that session only. */
	if (stanza_kind(st) != STANZA_MESSAGE || xml_child(st, NS_CARBONS, "sent") ||
	    xml_child(st, NS_CARBONS, "received") || !jid_has_resource(to))
		return;
	/*
	 * Gone since the sender's node chose it (or the copy could not leave
	 * that node): offline, not to the account's other resources, which
	 * may have had their own copy (it was archived there already).
	 */
	if (offline_wanted(st))
		route_store_offline(w, NULL, st, to);
}

void router_route_cluster(struct worker *w, struct xml_node *st, const struct jid *from,
			  const struct jid *to, bool from_local_session, bool delivered)
{
	const char *domain = w->srv->cfg->domain;
	const struct route_origin *outer = w->origin;
	struct route_origin o = {
		.st = st,
		.from_local_session = from_local_session,
		.origin_worker = w->id,
		.from_cluster = delivered,
	};
	unsigned home;

	/*
	 * For a service (this node holds their lease, cluster.c): served with
	 * the stanza's origin, so that the service tells a client's request
	 * from another server's stanza, and its errors go back to the
	 * sender's node.
	 */
	if (service_for(w->srv->cfg, to)) {
		w->origin = &o;
		router_route_w(w, NULL, st, from, to);
		w->origin = outer;
		return;
	}
	/* Not for a local account (the server itself): routed as new. */
	if (!jid_has_local(to) || to->domain_len != strlen(domain) ||
	    memcmp(to->buf + to->domain_off, domain, to->domain_len) != 0) {
		w->origin = NULL;
		router_route_w(w, NULL, st, from, to);
		w->origin = outer;
		return;
	}
	home = route_home_of(w, to);
	w->origin = &o;
	if (home != w->id || w->srv->cfg->homes_loop)
		route_forward_to(w, home, NULL, st, from, to, FWD_HOME);
	else
		route_home(w, NULL, st, from, to);
	w->origin = outer;
}

void router_route(struct conn *src, struct xml_node *st, const struct jid *from,
		  const struct jid *to)
{
	router_route_w(src->w, src, st, from, to);
}

int router_route_stanza(struct worker *w, struct xml_node *st)
{
	const char *from_attr = xml_attr_get(st, "from");
	const char *to_attr = xml_attr_get(st, "to");
	struct jid from, to;

	if (!from_attr || jid_parse(&from, from_attr, strlen(from_attr)) < 0)
		return -EINVAL;
	if (to_attr && jid_parse(&to, to_attr, strlen(to_attr)) < 0)
		return -EINVAL;
	router_route_w(w, NULL, st, &from, to_attr ? &to : NULL);
	return 0;
}
