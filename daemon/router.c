/* SPDX-License-Identifier: MIT */
/*
 * The delivery rules. Local accounts only so far; stanzas for other
 * domains are answered with remote-server-not-found until federation
 * exists. Messages to an account with no available resource are answered
 * with service-unavailable until offline storage exists.
 */
#include <string.h>

#include "conn.h"
#include "iq.h"
#include "jid.h"
#include "log.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "worker.h"

void router_bounce(struct conn *src, const struct xml_node *st, const char *condition)
{
	struct worker *w = src->w;
	struct xml_node *r;

	if (stanza_is_error(st))
		return;
	r = stanza_error_reply(&w->tmp, st, w->srv->cfg->domain, condition, NULL);
	if (r)
		conn_send_node(src, r);
	arena_reset(&w->tmp);
}

static void deliver(struct session *s, const struct xml_node *st)
{
	conn_send_node(s->conn, st);
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
static void route_message_bare(struct conn *src, struct xml_node *st, struct session *list)
{
	const char *type = stanza_type(st);
	bool headline = strcmp(type, "headline") == 0;
	int best = best_priority(list);
	bool delivered = false;

	if (strcmp(type, "error") == 0 && best < 0)
		return;
	if (strcmp(type, "groupchat") == 0) {
		router_bounce(src, st, "service-unavailable");
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
		router_bounce(src, st, "service-unavailable");
}

/* Presence to a bare JID: every available resource (RFC 6121 8.5.2.1.2). */
static void route_presence_bare(struct xml_node *st, struct session *list)
{
	for (struct session *s = list; s; s = s->next)
		if (s->available)
			deliver(s, st);
}

static void route_iq_to_server(struct conn *src, struct xml_node *st, const struct jid *from,
			       const struct jid *to, enum iq_scope scope)
{
	struct iq_request rq = {
		.w = src->w,
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
			router_bounce(src, st, "bad-request");
		return;
	}
	iq_dispatch(&rq);
}

/* Stanzas to a local account (bare or full JID). */
static void route_local(struct conn *src, struct xml_node *st, const struct jid *from,
			const struct jid *to)
{
	struct sessdir *dir = src->w->srv->sessions;
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
				route_message_bare(src, st, list);
			else
				router_bounce(src, st, "service-unavailable");
		} else if (kind == STANZA_IQ) {
			router_bounce(src, st, "service-unavailable");
		}
		/* Presence to an unavailable resource is dropped. */
		return;
	}

	switch (kind) {
	case STANZA_MESSAGE:
		route_message_bare(src, st, list);
		break;
	case STANZA_PRESENCE:
		route_presence_bare(st, list);
		break;
	case STANZA_IQ:
		/* The server answers for the account, only to its owner for now. */
		if (own)
			route_iq_to_server(src, st, from, to, IQ_SCOPE_ACCOUNT);
		else if (!stanza_is_error(st) && strcmp(stanza_type(st), "result") != 0)
			router_bounce(src, st, "service-unavailable");
		break;
	case STANZA_OTHER:
		break;
	}
}

void router_route(struct conn *src, struct xml_node *st, const struct jid *from,
		  const struct jid *to)
{
	const char *domain = src->w->srv->cfg->domain;
	enum stanza_kind kind = stanza_kind(st);
	struct jid self;

	/* No 'to' (RFC 6120 10.3): the stanza is for the sender's own account. */
	if (!to) {
		if (kind == STANZA_IQ) {
			route_iq_to_server(src, st, from, NULL, IQ_SCOPE_ACCOUNT);
			return;
		}
		self = *from;
		jid_to_bare(&self);
		to = &self;
	}

	if (to->domain_len != strlen(domain) || memcmp(to->buf + to->domain_off, domain, to->domain_len)) {
		/* No federation yet: nobody else is reachable. */
		if (kind != STANZA_PRESENCE)
			router_bounce(src, st, "remote-server-not-found");
		return;
	}
	if (!jid_has_local(to)) {
		if (kind == STANZA_IQ && !jid_has_resource(to)) {
			route_iq_to_server(src, st, from, to, IQ_SCOPE_SERVER);
		} else if (kind == STANZA_MESSAGE) {
			const char *type = stanza_type(st);

			/* Nothing on the server reads messages yet. */
			if (strcmp(type, "headline") != 0 && strcmp(type, "groupchat") != 0)
				router_bounce(src, st, "service-unavailable");
		} else if (kind == STANZA_IQ) {
			router_bounce(src, st, "service-unavailable");
		}
		return;
	}
	route_local(src, st, from, to);
}
