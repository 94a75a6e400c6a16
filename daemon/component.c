/* SPDX-License-Identifier: MIT */
/*
 * External components (XEP-0114, jabber:component:accept).
 *
 * A component connects, names its domain in the stream header ('to'),
 * gets our header with a stream id and answers with <handshake/>: the hex
 * SHA-1 of the stream id and the shared secret configured for that domain
 * (component = DOMAIN=SECRET). From then on stanzas flow both ways: what
 * it sends must come from its domain and is routed like anything else
 * (to local users, services, other components or other servers); what is
 * addressed to its domain goes to it. While no component serves a
 * configured domain, stanzas to it bounce with service-unavailable.
 *
 * Streams are plain TCP, as XEP-0114 has it: components run on the same
 * host or a trusted network; the listener defaults to off.
 */
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "log.h"
#include "router.h"
#include "s2s_internal.h"
#include "server.h"
#include "stanza.h"
#include "worker.h"

enum component_state {
	COMP_HEADER = 0,	/* waiting for the stream header */
	COMP_HANDSHAKE,		/* header answered, waiting for <handshake/> */
	COMP_READY,		/* authenticated: stanzas flow */
};

static unsigned long long cid(const struct conn *c)
{
	return (unsigned long long)c->id;
}

struct s2s_component *component_find(struct s2s_server *ss, const char *domain, size_t len)
{
	for (unsigned i = 0; i < ss->ncomps; i++)
		if (strlen(ss->comps[i].domain) == len && memcmp(ss->comps[i].domain, domain, len) == 0)
			return &ss->comps[i];
	return NULL;
}

/* The component's live stream, or NULL. */
static struct conn *component_conn(struct worker *w, struct s2s_component *comp)
{
	struct conn *c;

	if (comp->w != w)
		return NULL;	/* not connected (or, with several workers, elsewhere) */
	c = worker_conn(w, comp->slot, comp->gen);
	if (!c || c->kind != CONN_COMPONENT || c->closing || !c->s2s || c->s2s->comp != comp)
		return NULL;
	return c;
}

void component_route(struct worker *w, struct conn *src, struct s2s_component *comp,
		     struct xml_node *st)
{
	struct conn *c = component_conn(w, comp);

	if (!c) {
		router_bounce_w(w, src, st, "service-unavailable");
		return;
	}
	conn_send_node(c, st);
}

void component_send_prepared(struct worker *w, struct s2s_component *comp, const char *data,
			     size_t len)
{
	struct conn *c = component_conn(w, comp);

	if (c)
		conn_send(c, data, len);
}

/* ---- The stream ---- */

static bool comp_stream_open(void *ctx, const struct xml_node *hdr, const char *default_ns)
{
	struct conn *c = ctx;
	struct s2s_conn *sc = c->s2s;
	const char *to = xml_attr_get(hdr, "to");
	char dom[JID_PART_MAX + 1];
	struct s2s_component *comp;

	if (sc->state != COMP_HEADER) {
		s2s_stream_error(c, "policy-violation", "unexpected stream header");
		return false;
	}
	if (strcmp(hdr->ns, XML_NS_STREAM) != 0 || strcmp(hdr->name, "stream") != 0 ||
	    strcmp(default_ns, NS_COMPONENT) != 0) {
		s2s_stream_error(c, "invalid-namespace", NULL);
		return false;
	}
	if (!to || jid_prep_domain(dom, sizeof(dom), to, strlen(to)) < 0 ||
	    !(comp = component_find(s2s_srv(c->w), dom, strlen(dom)))) {
		s2s_stream_error(c, "host-unknown", "no such component");
		return false;
	}
	sc->local = strdup(dom);
	if (!sc->local) {
		s2s_stream_error(c, "internal-server-error", NULL);
		return false;
	}
	/* XEP-0114: our header carries the stream id the handshake hashes. */
	s2s_send_header(c, NS_COMPONENT, sc->local, NULL, false);
	sc->state = COMP_HANDSHAKE;
	return true;
}

static bool comp_handshake(struct conn *c, struct xml_node *el)
{
	struct s2s_conn *sc = c->s2s;
	struct s2s_component *comp = component_find(s2s_srv(c->w), sc->local, strlen(sc->local));
	const char *given = xml_text(&c->w->tmp, el);
	struct conn *old;

	if (sc->state != COMP_HANDSHAKE || !comp) {
		s2s_stream_error(c, "not-authorized", NULL);
		return false;
	}
	if (!given || !s2s_component_handshake_ok(c->stream_id, comp->secret, given)) {
		log_info("component.auth_failed", "conn=%llu domain=%s", cid(c), comp->domain);
		arena_reset(&c->w->tmp);
		s2s_stream_error(c, "not-authorized", NULL);
		return false;
	}
	arena_reset(&c->w->tmp);
	/* XEP-0114 3: one stream per component domain; a second one gets conflict. */
	old = component_conn(c->w, comp);
	if (old) {
		log_info("component.conflict", "conn=%llu domain=%s connected_conn=%llu", cid(c),
			 comp->domain, cid(old));
		s2s_stream_error(c, "conflict", "the component is already connected");
		return false;
	}
	comp->w = c->w;
	comp->slot = c->slot;
	comp->gen = c->gen;
	sc->comp = comp;
	sc->state = COMP_READY;
	c->authenticated = true;
	c->xs.limit_override = 0;
	loop_timer_cancel(&c->timer);
	conn_send_str(c, "<handshake/>");
	log_info("component.connected", "conn=%llu domain=%s", cid(c), comp->domain);
	return true;
}

/* A stanza from the component: it may only speak for its own domain. */
static bool comp_peer_ok(struct conn *c, const struct jid *from)
{
	const char *d = c->s2s->local;

	return strlen(d) == from->domain_len &&
	       memcmp(d, from->buf + from->domain_off, from->domain_len) == 0;
}

static bool comp_stanza(void *ctx, struct xml_node *el)
{
	struct conn *c = ctx;
	struct s2s_conn *sc = c->s2s;

	if (strcmp(el->ns, NS_COMPONENT) == 0 && strcmp(el->name, "handshake") == 0)
		return comp_handshake(c, el) && !c->closing;
	if (strcmp(el->ns, NS_COMPONENT) == 0 &&
	    (strcmp(el->name, "message") == 0 || strcmp(el->name, "presence") == 0 ||
	     strcmp(el->name, "iq") == 0)) {
		if (sc->state != COMP_READY) {
			s2s_stream_error(c, "not-authorized", "handshake first");
			return false;
		}
		/* Its stanzas go anywhere: local users, services, other servers. */
		return s2s_inbound_stanza(c, el, comp_peer_ok, true) && !c->closing;
	}
	if (strcmp(el->ns, XML_NS_STREAM) == 0 && strcmp(el->name, "error") == 0)
		return true;	/* the close tag follows */
	s2s_stream_error(c, "unsupported-stanza-type", NULL);
	return false;
}

static const struct xml_stream_handlers comp_handlers = {
	.stream_open = comp_stream_open,
	.stanza = comp_stanza,
};

void component_accepted(struct conn *c)
{
	c->kind = CONN_COMPONENT;
	c->s2s = calloc(1, sizeof(*c->s2s));
	if (!c->s2s) {
		conn_abort(c, CONN_CLOSE_ERROR);
		return;
	}
	xml_stream_init(&c->xs, c->w->xml, &comp_handlers, c);
	c->xs.limit_override = c->w->srv->cfg->max_stanza_bytes_preauth;
	conn_set_deadline(c, (uint64_t)c->w->srv->cfg->s2s_handshake_timeout * 1000);
}

void component_deadline(struct conn *c)
{
	if (c->s2s->state == COMP_READY)
		return;
	c->close_reason = CONN_CLOSE_TIMEOUT;
	s2s_stream_error(c, "connection-timeout", "no handshake in time");
}

void component_closing(struct conn *c)
{
	struct s2s_component *comp = c->s2s ? c->s2s->comp : NULL;

	if (!comp)
		return;
	/* From now on stanzas to its domain bounce with service-unavailable. */
	if (comp->w == c->w && comp->slot == c->slot && comp->gen == c->gen)
		comp->w = NULL;
	c->s2s->comp = NULL;
	log_info("component.disconnected", "conn=%llu domain=%s", cid(c), comp->domain);
}
