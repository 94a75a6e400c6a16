/* SPDX-License-Identifier: MIT */
/*
 * The delivery rules. Local accounts only so far; stanzas for other
 * domains are answered with remote-server-not-found until federation
 * exists. Messages to an account with no available resource are answered
 * with service-unavailable until offline storage exists.
 */
#include <errno.h>
#include <string.h>

#include "c2s.h"
#include "conn.h"
#include "iq.h"
#include "jid.h"
#include "log.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "worker.h"

/* The local connection of a stanza's sender (by its 'from'), or NULL. */
static struct conn *sender_conn(struct worker *w, const struct xml_node *st)
{
	const char *from = xml_attr_get(st, "from");
	struct session *s;
	struct jid j;

	if (!from || jid_parse(&j, from, strlen(from)) < 0)
		return NULL;
	s = sessdir_find_full(w->srv->sessions, j.buf, j.len);
	return s ? s->conn : NULL;
}

void router_bounce_w(struct worker *w, struct conn *src, const struct xml_node *st,
		     const char *condition)
{
	struct xml_node *r;

	if (stanza_is_error(st))
		return;
	if (!src)
		src = sender_conn(w, st);
	if (!src)
		return;	/* the sender is gone (or remote, once federation exists) */
	r = stanza_error_reply(&w->tmp, st, w->srv->cfg->domain, condition, NULL);
	if (r)
		conn_send_node(src, r);
	arena_reset(&w->tmp);
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
	c2s_send_stanza(s->conn, st);
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
 * non-negative ones; groupchat is not for accounts.
 */
static void route_message_bare(struct worker *w, struct conn *src, struct xml_node *st,
			       struct session *list)
{
	const char *type = stanza_type(st);
	bool headline = strcmp(type, "headline") == 0;
	int best = best_priority(list);
	bool delivered = false;

	if (strcmp(type, "error") == 0 && best < 0)
		return;
	if (strcmp(type, "groupchat") == 0) {
		router_bounce_w(w, src, st, "service-unavailable");
		return;
	}
	for (struct session *s = list; s && best >= 0; s = s->next) {
		if (!s->available || s->priority < 0)
			continue;
		if (headline || s->priority == best) {
			deliver(s, st);
			delivered = true;
		}
	}
	if (!delivered && !headline)
		router_bounce_w(w, src, st, "service-unavailable");
}

/* Presence to a bare JID: every available resource (RFC 6121 8.5.2.1.2). */
static void route_presence_bare(struct xml_node *st, struct session *list)
{
	for (struct session *s = list; s; s = s->next)
		if (s->available)
			deliver(s, st);
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
	/* Requests from elsewhere (no local connection) are not answered yet. */
	if (!src) {
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

	if (jid_has_resource(to)) {
		struct session *s = sessdir_find_full(dir, to->buf, to->len);

		if (s) {
			deliver(s, st);
			return;
		}
		/* RFC 6121 8.5.3.2: no such resource. */
		if (kind == STANZA_MESSAGE) {
			const char *type = stanza_type(st);

			if (strcmp(type, "normal") == 0 || strcmp(type, "chat") == 0 ||
			    strcmp(type, "headline") == 0)
				route_message_bare(w, src, st, list);
			else
				router_bounce_w(w, src, st, "service-unavailable");
		} else if (kind == STANZA_IQ) {
			router_bounce_w(w, src, st, "service-unavailable");
		}
		/* Presence to an unavailable resource is dropped. */
		return;
	}

	switch (kind) {
	case STANZA_MESSAGE:
		route_message_bare(w, src, st, list);
		break;
	case STANZA_PRESENCE:
		route_presence_bare(st, list);
		break;
	case STANZA_IQ:
		/* The server answers for the account, only to its owner for now. */
		if (own)
			route_iq_to_server(w, src, st, from, to, IQ_SCOPE_ACCOUNT);
		else if (!stanza_is_error(st) && strcmp(stanza_type(st), "result") != 0)
			router_bounce_w(w, src, st, "service-unavailable");
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
		/* No federation yet: nobody else is reachable. */
		if (kind != STANZA_PRESENCE)
			router_bounce_w(w, src, st, "remote-server-not-found");
		return;
	}
	if (!jid_has_local(to)) {
		if (kind == STANZA_IQ && !jid_has_resource(to)) {
			route_iq_to_server(w, src, st, from, to, IQ_SCOPE_SERVER);
		} else if (kind == STANZA_MESSAGE) {
			const char *type = stanza_type(st);

			/* Nothing on the server reads messages yet. */
			if (strcmp(type, "headline") != 0 && strcmp(type, "groupchat") != 0)
				router_bounce_w(w, src, st, "service-unavailable");
		} else if (kind == STANZA_IQ) {
			router_bounce_w(w, src, st, "service-unavailable");
		}
		return;
	}
	route_local(w, src, st, from, to);
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
