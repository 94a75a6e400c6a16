/* SPDX-License-Identifier: MIT */
/*
 * The delivery rules. Local accounts only so far; stanzas for other
 * domains are answered with remote-server-not-found until federation
 * exists. Messages for an account with no available resource go to
 * offline storage (offline.c), which also finds out whether the account
 * exists; presence subscriptions and probes go to presence.c.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>

#include "blocking.h"
#include "c2s.h"
#include "carbons.h"
#include "console.h"
#include "conn.h"
#include "csi.h"
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
#include "worker.h"

/* The local session of a stanza's sender (by its 'from'), or NULL. */
static struct session *sender_session(struct worker *w, const struct xml_node *st)
{
	const char *from = xml_attr_get(st, "from");
	struct jid j;

	if (!from || jid_parse(&j, from, strlen(from)) < 0)
		return NULL;
	return sessdir_find_full(w->srv->sessions, j.buf, j.len);
}

static void router_bounce_remote(struct worker *w, const struct xml_node *st,
				 const char *condition);

void router_bounce_w(struct worker *w, struct conn *src, const struct xml_node *st,
		     const char *condition)
{
	struct session *detached = NULL;
	struct arena_mark mark;
	struct xml_node *r;

	if (stanza_is_error(st))
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
		if (local)
			router_route_w(w, NULL, r, &self, &sender);
		else
			s2s_route(w, NULL, r, &self, &sender);	/* back to its server or component */
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

void router_deliver_prepared(struct session *s, struct xml_node *st, const char *to,
			     const char *data, size_t len)
{
	struct xml_attr tmp_to = { 0 }, *to_attr = NULL;
	const char *old_to = NULL;

	/*
	 * A fanned-out tree is shared by all recipients: for the filters,
	 * and for the hooks that keep a copy of the tree, it carries this
	 * recipient's 'to' during the call (no allocation: an existing
	 * attribute's value is swapped, else one on the stack is linked).
	 */
	if (to) {
		for (to_attr = st->attrs; to_attr; to_attr = to_attr->next)
			if (!to_attr->ns && strcmp(to_attr->name, "to") == 0)
				break;
		if (!to_attr) {
			tmp_to = (struct xml_attr){ .next = st->attrs, .name = "to" };
			st->attrs = to_attr = &tmp_to;
		}
		old_to = to_attr->value;
		to_attr->value = to;
	}
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
	if (to_attr == &tmp_to)
		st->attrs = tmp_to.next;
	else if (to_attr)
		to_attr->value = old_to;
}

static void deliver(struct session *s, struct xml_node *st)
{
	router_deliver(s, st);
}

/* Highest priority among available sessions with priority >= 0, or -1. */
static int best_priority(struct session *list)
{
	int best = -1;

	for (struct session *s = list; s; s = s->next)
		if (s->available && s->priority >= 0 && s->priority > best)
			best = s->priority;
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
 */
static void route_message_bare(struct worker *w, struct conn *src, struct xml_node *st,
			       const struct jid *to, struct session *list)
{
	const char *type = stanza_type(st);
	bool headline = strcmp(type, "headline") == 0;
	int best = best_priority(list);
	struct session *next;
	char user[JID_PART_MAX + 1];
	int ret;

	if (strcmp(type, "error") == 0)
		return;
	if (strcmp(type, "groupchat") == 0) {
		router_bounce_w(w, src, st, "service-unavailable");
		return;
	}
	if (best >= 0 && !(!headline && list && offline_holding(session_account(list)))) {
		/* Sessions may end inside a delivery (output overflow): take next first. */
		for (struct session *s = list; s; s = next) {
			next = s->next;
			if (s->available && s->priority >= 0 && (headline || s->priority == best))
				deliver(s, st);
		}
		return;
	}
	if (headline || !offline_wanted(st))
		return;
	snprintf(user, sizeof(user), "%.*s", (int)to->local_len, to->buf);
	ret = offline_store(w, st, user);
	if (ret == 0)
		push_notify_offline(w, user, st);	/* XEP-0357 (push.c) */
	/* -EBUSY: more is waiting for the disk than offline.c allows (a flood). */
	if (ret < 0)
		router_bounce_w(w, src, st, ret == -EBUSY ? "resource-constraint" :
				"service-unavailable");
}

/* Presence to a bare JID: every available resource (RFC 6121 8.5.2.1.2). */
static void route_presence_bare(struct xml_node *st, struct session *list)
{
	struct session *next;

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
	if (!src && !(scope == IQ_SCOPE_SERVER && iq_remote_allowed(&rq))) {
		router_bounce_w(w, src, st, "service-unavailable");
		return;
	}
	iq_dispatch(&rq);
}

/* Stanzas to a local account (bare or full JID). */
static void route_local(struct worker *w, struct conn *src, struct xml_node *st,
			const struct jid *from, const struct jid *to)
{
	struct sessdir *dir = w->srv->sessions;
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
				route_message_bare(w, src, st, to, list);
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
		route_message_bare(w, src, st, to, list);
		break;
	case STANZA_PRESENCE:
		if (!presence_inbound(w, src, st, from, to))
			route_presence_bare(st, list);
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

void router_route_w(struct worker *w, struct conn *src, struct xml_node *st,
		    const struct jid *from, const struct jid *to)
{
	const char *domain = w->srv->cfg->domain;
	enum stanza_kind kind = stanza_kind(st);
	struct mam_stamp ms;
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
		const struct service *svc = service_for(w->srv->cfg, to);

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

			/* Read-outs the web console asked for (console.c); nothing else reads them. */
			if (console_sensor_data(w, st, from))
				return;
			if (strcmp(type, "headline") != 0 && strcmp(type, "groupchat") != 0)
				router_bounce_w(w, src, st, "service-unavailable");
		} else if (kind == STANZA_IQ) {
			router_bounce_w(w, src, st, "service-unavailable");
		}
		return;
	}
	/* XEP-0191: once per stanza, so a refused message is answered once. */
	if (blocking_inbound(w, src, st, from, to))
		return;
	mam_inbound(&ms, w, src, st, from, to);	/* XEP-0313 archive, XEP-0359 stamp (mam.c) */
	route_local(w, src, st, from, to);
	carbons_received(w, st, from, to);	/* XEP-0280 (carbons.c) */
	mam_stamp_end(&ms);
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
