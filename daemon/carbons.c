/* SPDX-License-Identifier: MIT */
/*
 * XEP-0280 Message Carbons. See carbons.h for the rules.
 *
 * Cost: a message to or from an account without carbons-enabled sessions
 * pays one walk over that account's (few) sessions. Only when a copy is
 * due is the message cloned, once, into a wrapper built in an arena of
 * its own (the worker's scratch arena may hold attributes of the stanza
 * being routed) and handed to router_deliver() per receiving session, so
 * block lists, client state indication and stream management see copies
 * like any other delivery.
 */
#include <stdlib.h>
#include <string.h>

#include "carbons.h"
#include "cluster.h"
#include "iq.h"
#include "jid.h"
#include "log.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "worker.h"

#define NS_RECEIPTS	"urn:xmpp:receipts"
#define NS_CHATSTATES	"http://jabber.org/protocol/chatstates"
#define NS_MARKERS	"urn:xmpp:chat-markers:0"
#define NS_CONFERENCE	"jabber:x:conference"
#define NS_MUC_USER	"http://jabber.org/protocol/muc#user"

void carbons_enable(struct iq_request *rq)
{
	struct session *s = rq->conn->sess;

	if (!s) {
		iq_reply_error(rq, "not-allowed", NULL);
		return;
	}
	/* Section 9.1: enabling twice is not an error. */
	s->carbons = true;
	cluster_session_update(rq->w, s);	/* the account's other nodes copy to it (cluster.c) */
	log_debug("carbons.enable", "jid=%s", s->jid);
	iq_reply_result(rq, NULL);
}

void carbons_disable(struct iq_request *rq)
{
	struct session *s = rq->conn->sess;

	if (!s) {
		iq_reply_error(rq, "not-allowed", NULL);
		return;
	}
	s->carbons = false;
	cluster_session_update(rq->w, s);
	log_debug("carbons.disable", "jid=%s", s->jid);
	iq_reply_result(rq, NULL);
}

bool carbons_eligible(const struct xml_node *msg, bool received)
{
	const char *type = stanza_type(msg);
	bool body = false, im = false, muc_user = false, invite = false;

	if (stanza_kind(msg) != STANZA_MESSAGE || strcmp(type, "groupchat") == 0)
		return false;
	for (const struct xml_node *ch = xml_first_element(msg); ch; ch = xml_next_element(ch)) {
		/* <private/>, or a carbon itself: never copied (section 7). */
		if (strcmp(ch->ns, NS_CARBONS) == 0)
			return false;
		if (strcmp(ch->ns, NS_HINTS) == 0 && strcmp(ch->name, "no-copy") == 0)
			return false;
		if (strcmp(ch->ns, XML_NS_CLIENT) == 0 && strcmp(ch->name, "body") == 0)
			body = true;
		else if (strcmp(ch->ns, NS_RECEIPTS) == 0 || strcmp(ch->ns, NS_CHATSTATES) == 0 ||
			 strcmp(ch->ns, NS_MARKERS) == 0)
			im = true;
		else if (strcmp(ch->ns, NS_CONFERENCE) == 0 && strcmp(ch->name, "x") == 0)
			invite = true;
		else if (strcmp(ch->ns, NS_MUC_USER) == 0 && strcmp(ch->name, "x") == 0) {
			muc_user = true;
			if (xml_child(ch, NS_MUC_USER, "invite"))
				invite = true;
		}
	}
	if (invite)
		return true;
	/* A private message from a MUC occupant: the MUC copies it itself. */
	if (muc_user && received)
		return false;
	if (strcmp(type, "chat") == 0)
		return true;
	if (strcmp(type, "normal") == 0 && body)
		return true;
	/*
	 * An error answering an eligible message: errors echo the original's
	 * content (RFC 6120 8.3.1), which is all there is to judge it by.
	 */
	if (strcmp(type, "error") == 0)
		return body || im;
	return im;
}

/* Whether some session of the list other than `skip` has carbons on. */
static bool any_enabled(const struct session *list, const struct session *skip)
{
	for (const struct session *s = list; s; s = s->next)
		if (s->carbons && s != skip)
			return true;
	return false;
}

/*
 * Cluster mode: the account's resources on other nodes with carbons on
 * (the replica); *n of them, NULL when none. free() it.
 */
static struct cluster_res *remote_enabled(const char *bare, size_t len, size_t *n)
{
	struct cluster_res *res;
	size_t k = 0;

	*n = 0;
	if (!cluster_enabled() || !(res = cluster_resources(bare, len, n)))
		return NULL;
	for (size_t i = 0; i < *n; i++)
		if (res[i].v.flags & CLUSTER_SESS_CARBONS)
			res[k++] = res[i];
	*n = k;
	if (!k) {
		free(res);
		return NULL;
	}
	return res;
}

/* The wrapper of one carbon: <message><dir><forwarded>copy</forwarded></dir></message>. */
struct carbon {
	struct arena arena;
	struct xml_node *msg;
	bool built;
};

/* Builds the wrapper on first use. false when out of memory (logged). */
static bool carbon_build(struct carbon *cb, const struct xml_node *st, const char *bare,
			 size_t bare_len, const char *dir)
{
	struct arena *a = &cb->arena;
	const char *type = xml_attr_get(st, "type");
	struct xml_node *d, *fw, *copy;
	char *from;

	if (cb->built)
		return cb->msg != NULL;
	cb->built = true;
	arena_init(a, 2048);
	from = arena_strndup(a, bare, bare_len);
	cb->msg = xml_node_new(a, XML_NS_CLIENT, "message");
	d = cb->msg ? xml_node_add_child(a, cb->msg, NS_CARBONS, dir) : NULL;
	fw = d ? xml_node_add_child(a, d, NS_FORWARD, "forwarded") : NULL;
	copy = fw ? xml_node_clone(a, st) : NULL;
	/* Section 6: the wrapper keeps the original's type. */
	if (!from || !copy || xml_attr_set(a, cb->msg, "from", from) < 0 ||
	    (type && xml_attr_set(a, cb->msg, "type", type) < 0)) {
		log_warn("carbons.build_failed", "jid=%s msg=\"out of memory\"", from ? from : "-");
		cb->msg = NULL;
		return false;
	}
	xml_node_append(fw, copy);
	return true;
}

/*
 * One wrapper serves every receiving session: only its 'to' changes, and
 * router_deliver() serializes (or copies) it before returning.
 */
static void carbon_deliver(struct carbon *cb, struct session *s)
{
	if (xml_attr_set(&cb->arena, cb->msg, "to", s->jid) < 0)
		return;
	router_deliver(s, cb->msg);
}

static void carbon_done(struct carbon *cb)
{
	if (cb->built)
		arena_release(&cb->arena);
}

void carbons_sent(struct conn *c, const struct xml_node *st, const struct jid *to)
{
	struct session *self = c->sess, *list;
	struct carbon cb = { .built = false };
	struct cluster_res *res;
	size_t nres;

	if (!self || stanza_kind(st) != STANZA_MESSAGE)
		return;
	/* To the own account: the received copies cover every other session. */
	if (to && to->domain_off + to->domain_len == self->bare_len &&
	    memcmp(to->buf, self->jid, self->bare_len) == 0)
		return;
	/* The cheap test first: most accounts have no other enabled session. */
	list = sessdir_find_bare(c->w->sessions, self->jid, self->bare_len);
	res = remote_enabled(self->jid, self->bare_len, &nres);
	if ((!any_enabled(list, self) && !nres) || !carbons_eligible(st, false)) {
		free(res);
		return;
	}
	/* `next` first: a delivery that overflows a stream may end its session. */
	for (struct session *s = list, *next; s; s = next) {
		next = s->next;
		if (s == self || !s->carbons)
			continue;
		if (!carbon_build(&cb, st, self->jid, self->bare_len, "sent"))
			break;
		carbon_deliver(&cb, s);
	}
	/* On other nodes: through their streams (cluster.c). */
	for (size_t i = 0; i < nres; i++) {
		if (!carbon_build(&cb, st, self->jid, self->bare_len, "sent") ||
		    xml_attr_set(&cb.arena, cb.msg, "to", res[i].full) < 0)
			break;
		cluster_deliver(c->w, c, cb.msg, self->jid, &res[i]);
	}
	free(res);
	carbon_done(&cb);
}

/*
 * Whether bare-JID routing (RFC 6121 8.5.2.1.1, router.c route_message_bare)
 * gave s the message itself: available, non-negative priority, and the
 * highest priority (or any, for a headline).
 */
static bool got_original(const struct session *s, int best, bool headline)
{
	return best >= 0 && s->available && s->priority >= 0 && (headline || s->priority == best);
}

/*
 * The same computation as the router's (kept in step with
 * route_message_bare): over the sessions here and, in cluster mode, the
 * account's resources on other nodes (`all`, nall of them).
 */
static int best_priority(const struct session *list, const struct cluster_res *all, size_t nall)
{
	int best = -1;

	for (const struct session *s = list; s; s = s->next)
		if (s->available && s->priority >= 0 && s->priority > best)
			best = s->priority;
	for (size_t i = 0; i < nall; i++)
		if (all[i].v.available && all[i].v.priority > best)
			best = all[i].v.priority;
	return best;
}

void carbons_received(struct worker *w, const struct xml_node *st, const struct jid *from,
		      const struct jid *to)
{
	size_t bare_len = to->domain_off + to->domain_len;
	struct session *list, *direct = NULL;
	struct carbon cb = { .built = false };
	struct cluster_res *res = NULL;
	size_t nres = 0;
	bool remote = false;
	const char *type;
	bool headline;
	int best;

	if (stanza_kind(st) != STANZA_MESSAGE)
		return;
	/* The cheap test first: most accounts have no carbons-enabled session. */
	list = sessdir_find_bare(w->sessions, to->buf, bare_len);
	/* Cluster mode: the account's resources on other nodes too (cluster.c). */
	if (cluster_enabled() && (res = cluster_resources(to->buf, bare_len, &nres)) != NULL)
		for (size_t i = 0; i < nres; i++)
			remote |= (res[i].v.flags & CLUSTER_SESS_CARBONS) != 0;
	if (!any_enabled(list, NULL) && !remote)
		goto out;
	type = stanza_type(st);
	if (jid_has_resource(to)) {
		direct = sessdir_find_full(w->sessions, to->buf, to->len);
		/*
		 * Same rule as the router (RFC 6121 8.5.3.2.1, route_local):
		 * only chat falls back to the bare JID; anything else to a
		 * missing resource was bounced or dropped, so no copies.
		 */
		if (!direct && strcmp(type, "chat") != 0)
			goto out;
	}
	if (!carbons_eligible(st, true))
		goto out;
	headline = strcmp(type, "headline") == 0;
	best = direct ? -1 : best_priority(list, res, nres);
	/*
	 * No resource took the message (the sender got an error, or it went
	 * to offline storage): copies would show as received what the sender
	 * was told did not arrive.
	 */
	if (!direct && best < 0)
		goto out;
	for (struct session *s = list, *next; s; s = next) {
		next = s->next;
		if (!s->carbons || s == direct || (!direct && got_original(s, best, headline)))
			continue;
		/* The sending session of the same account has the message already. */
		if (from && from->len == s->jid_len && memcmp(from->buf, s->jid, s->jid_len) == 0)
			continue;
		if (!carbon_build(&cb, st, to->buf, bare_len, "received"))
			break;
		carbon_deliver(&cb, s);
	}
	for (size_t i = 0; i < nres; i++) {
		const struct cluster_sess *v = &res[i].v;

		if (!(v->flags & CLUSTER_SESS_CARBONS) ||
		    (!direct && best >= 0 && v->available && v->priority >= 0 &&
		     (headline || v->priority == best)) ||
		    (from && strcmp(from->buf, res[i].full) == 0))
			continue;
		if (!carbon_build(&cb, st, to->buf, bare_len, "received") ||
		    xml_attr_set(&cb.arena, cb.msg, "to", res[i].full) < 0)
			break;
		cluster_deliver(w, NULL, cb.msg, to->buf, &res[i]);
	}
	carbon_done(&cb);
out:
	free(res);
}
