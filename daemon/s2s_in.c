/* SPDX-License-Identifier: MIT */
/*
 * Streams other servers open to us (RFC 6120 as the receiving entity).
 *
 *   HEADER --(plain)--> TLS_OFFERED --starttls--> TLS --> HEADER
 *   HEADER --(secure)--> OPEN: SASL EXTERNAL, <db:result/>, <db:verify/>,
 *                              stanzas from proven domains
 *   OPEN --EXTERNAL success--> HEADER --> OPEN (empty features)
 *
 * TLS is required before anything but a dialback verification request
 * (which reveals nothing). A peer proves a domain by its certificate:
 * SASL EXTERNAL (XEP-0178), or a <db:result/> whose domain the
 * certificate names (XEP-0344 shortcut); when s2s_auth = dialback and the
 * certificate does not prove it, the key is verified with the domain's
 * authoritative server over our link to it (XEP-0220), and the answer
 * comes back through s2s_in_verified(). One stream may prove several
 * domain pairs (piggybacking, XEP-0220 section 4).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>

#include "config.h"
#include "log.h"
#include "s2s_internal.h"
#include "sasl.h"
#include "server.h"
#include "stanza.h"
#include "worker.h"

enum s2s_in_state {
	IN_HEADER = 0,		/* a stream header is expected */
	IN_TLS_OFFERED,		/* plain stream: only <starttls/> (and <db:verify/>) */
	IN_TLS,			/* the bytes are the TLS handshake */
	IN_OPEN,		/* secure and negotiated: authentication and stanzas */
};

static unsigned long long cid(const struct conn *c)
{
	return (unsigned long long)c->id;
}

static const struct config *cfg_of(const struct conn *c)
{
	return c->w->srv->cfg;
}

/* ---- Domain pairs ---- */

static bool in_has_pair(const struct s2s_conn *sc, const char *remote, const char *local)
{
	for (unsigned i = 0; i < sc->npairs; i++)
		if (strcmp(sc->pairs[i].remote, remote) == 0 &&
		    (!local || strcmp(sc->pairs[i].local, local) == 0))
			return true;
	return false;
}

/* Records a proven pair; the first one opens the stream to stanzas. 0 or -ENOSPC/-ENOMEM. */
static int in_add_pair(struct conn *c, const char *remote, const char *local, const char *how)
{
	struct s2s_conn *sc = c->s2s;
	struct s2s_pair *p;
	uint32_t idle = cfg_of(c)->s2s_idle_timeout;

	if (in_has_pair(sc, remote, local))
		return 0;
	if (sc->npairs == S2S_PAIRS_MAX)
		return -ENOSPC;
	p = &sc->pairs[sc->npairs];
	p->remote = strdup(remote);
	p->local = strdup(local);
	if (!p->remote || !p->local) {
		free(p->remote);
		free(p->local);
		return -ENOMEM;
	}
	sc->npairs++;
	log_info("s2s.peer_authenticated", "conn=%llu remote=%s local=%s method=%s", cid(c), remote,
		 local, how);
	if (sc->npairs == 1) {
		c->authenticated = true;
		c->xs.limit_override = 0;	/* the full stanza limit from now on */
		if (idle)
			conn_set_deadline(c, (uint64_t)idle * 1000);
		else
			loop_timer_cancel(&c->timer);
	}
	return 0;
}

/*
 * The 'from' check of s2s_inbound_stanza(): the domain must be one this
 * stream proved. The 'to' side is checked there against all our domains,
 * not the pair's: a peer proven to our domain may write to our services.
 */
static bool in_peer_ok(struct conn *c, const struct jid *from)
{
	const struct s2s_conn *sc = c->s2s;

	for (unsigned i = 0; i < sc->npairs; i++)
		if (strlen(sc->pairs[i].remote) == from->domain_len &&
		    memcmp(sc->pairs[i].remote, from->buf + from->domain_off, from->domain_len) == 0)
			return true;
	return false;
}

/* ---- Header and features ---- */

static bool in_version_ok(const char *v)
{
	unsigned major, minor;
	int n = 0;

	if (!v || sscanf(v, "%u.%u%n", &major, &minor, &n) != 2 || v[n] != '\0')
		return false;
	return major == 1;
}

/*
 * Features for where the stream stands: STARTTLS (required) on a plain
 * stream; after TLS, EXTERNAL when the certificate proves the domain of
 * the header's 'from' (XEP-0178 offers it only then) and dialback with
 * error handling; after SASL, nothing. The certificate verdict is logged
 * once per stream: it is what operators ask about when peers fail.
 */
static void in_send_features(struct conn *c)
{
	struct s2s_conn *sc = c->s2s;
	const char *why = "";

	if (!c->secure) {
		conn_send_str(c, "<stream:features><starttls xmlns='" NS_TLS "'><required/></starttls>"
				 "</stream:features>");
		sc->state = IN_TLS_OFFERED;
		return;
	}
	sc->state = IN_OPEN;
	if (c->authenticated && sc->npairs && in_has_pair(sc, sc->remote ? sc->remote : "", NULL)) {
		/* After SASL: nothing more to negotiate (no XEP-0288 bidi here). */
		conn_send_str(c, "<stream:features/>");
		return;
	}
	sc->peer_verified = sc->remote &&
			    tls_conn_peer_verify_domain(c->tls, sc->remote, &why) == 0;
	log_info("s2s.peer_certificate", "conn=%llu remote=%s verified=%s reason=\"%s\"", cid(c),
		 sc->remote ? sc->remote : "-", sc->peer_verified ? "yes" : "no", why);
	conn_send_str(c, "<stream:features>");
	if (sc->peer_verified)
		conn_send_str(c, "<mechanisms xmlns='" NS_SASL "'><mechanism>EXTERNAL</mechanism>"
				 "</mechanisms>");
	/* Dialback with error handling (XEP-0220 2.4); keys are checked against policy. */
	conn_send_str(c, "<dialback xmlns='" NS_DIALBACK_FEATURE "'><errors/></dialback>");
	conn_send_str(c, "</stream:features>");
}

/*
 * A stream header (at connect, after TLS, after SASL). The 'from' is kept
 * as the claimed domain; it proves nothing until TLS and SASL or dialback.
 */
static bool in_stream_open(void *ctx, const struct xml_node *hdr, const char *default_ns)
{
	struct conn *c = ctx;
	struct s2s_conn *sc = c->s2s;
	const char *to = xml_attr_get(hdr, "to"), *from = xml_attr_get(hdr, "from");
	char dom[JID_PART_MAX + 1];

	if (sc->state != IN_HEADER) {
		s2s_stream_error(c, "policy-violation", "unexpected stream header");
		return false;
	}
	if (strcmp(hdr->ns, XML_NS_STREAM) != 0 || strcmp(hdr->name, "stream") != 0 ||
	    strcmp(default_ns, XML_NS_SERVER) != 0) {
		s2s_stream_error(c, "invalid-namespace", NULL);
		return false;
	}
	/* RFC 6120 4.9.3.6: a stream to a domain we do not serve. */
	if (!to || jid_prep_domain(dom, sizeof(dom), to, strlen(to)) < 0 ||
	    !s2s_is_local_str(c->w, dom)) {
		s2s_stream_error(c, "host-unknown", NULL);
		return false;
	}
	free(sc->local);
	sc->local = strdup(dom);
	free(sc->remote);
	sc->remote = NULL;
	if (from && jid_prep_domain(dom, sizeof(dom), from, strlen(from)) == 0)
		sc->remote = strdup(dom);
	if (!sc->local) {
		s2s_stream_error(c, "internal-server-error", NULL);
		return false;
	}
	if (!in_version_ok(xml_attr_get(hdr, "version"))) {
		s2s_stream_error(c, "unsupported-version", NULL);
		return false;
	}
	s2s_send_header(c, XML_NS_SERVER, sc->local, sc->remote, true);
	in_send_features(c);
	return true;
}

/* ---- STARTTLS and SASL EXTERNAL ---- */

static bool in_starttls(struct conn *c)
{
	if (c->secure || c->tls || c->s2s->state != IN_TLS_OFFERED) {
		s2s_stream_error(c, "policy-violation", "TLS is already on");
		return false;
	}
	conn_send_str(c, "<proceed xmlns='" NS_TLS "'/>");
	if (conn_start_tls(c) < 0) {
		log_warn("tls.start_failed", "conn=%llu", cid(c));
		conn_abort(c, CONN_CLOSE_ERROR);
		return false;
	}
	c->s2s->state = IN_TLS;
	c->restart_pending = true;
	return false;
}

/* Not a stream error: the peer may fall back to dialback on this stream. */
static void in_sasl_failure(struct conn *c, const char *condition, const char *who)
{
	char q[128];

	conn_send_str(c, "<failure xmlns='" NS_SASL "'><");
	conn_send_str(c, condition);
	conn_send_str(c, "/></failure>");
	log_info("s2s.external_refused", "conn=%llu remote=%s reason=%s", cid(c),
		 who ? log_sanitize(q, sizeof(q), who, strlen(who)) : "-", condition);
}

/* XEP-0178: the certificate must prove the authorization identity (or the header's from). */
static bool in_sasl_auth(struct conn *c, struct xml_node *el)
{
	struct s2s_conn *sc = c->s2s;
	const char *mech = xml_attr_get(el, "mechanism");
	const char *text = xml_text(&c->w->tmp, el), *why;
	char dom[JID_PART_MAX + 1];
	char *authz = NULL;
	size_t len = 0;

	if (!mech || strcmp(mech, "EXTERNAL") != 0 || !sc->peer_verified) {
		in_sasl_failure(c, "invalid-mechanism", sc->remote);
		goto out;
	}
	if (text && text[0] && strcmp(text, "=") != 0) {
		authz = sasl_b64_decode(text, strlen(text), &len);
		if (!authz) {
			in_sasl_failure(c, "incorrect-encoding", sc->remote);
			goto out;
		}
	}
	if (authz && (memchr(authz, '\0', len) ||
		      jid_prep_domain(dom, sizeof(dom), authz, len) < 0)) {
		in_sasl_failure(c, "invalid-authzid", sc->remote);
		goto out;
	}
	if (!authz) {
		if (!sc->remote) {
			in_sasl_failure(c, "invalid-authzid", NULL);
			goto out;
		}
		snprintf(dom, sizeof(dom), "%s", sc->remote);
	}
	if ((sc->remote && strcmp(dom, sc->remote) != 0) ||
	    tls_conn_peer_verify_domain(c->tls, dom, &why) < 0) {
		in_sasl_failure(c, "not-authorized", dom);
		goto out;
	}
	if (in_add_pair(c, dom, sc->local, "external") < 0) {
		in_sasl_failure(c, "temporary-auth-failure", dom);
		goto out;
	}
	free(sc->remote);
	sc->remote = strdup(dom);
	conn_send_str(c, "<success xmlns='" NS_SASL "'/>");
	/* RFC 6120 6.4.6: the initiating server opens a new stream. */
	sc->state = IN_HEADER;
	c->restart_pending = true;
out:
	free(authz);
	arena_reset(&c->w->tmp);
	return !c->restart_pending;
}

/* ---- Dialback (XEP-0220) ---- */

/* <db:result type='error'> or <db:verify type='error'> with a stanza error condition. */
static void in_db_error(struct conn *c, const char *el, const char *local, const char *remote,
			const char *id, const char *condition)
{
	struct strbuf *b = &c->w->scratch;

	strbuf_clear(b);
	strbuf_printf(b, "<db:%s from='", el);
	strbuf_append_xml_escaped(b, local, strlen(local));
	strbuf_puts(b, "' to='");
	strbuf_append_xml_escaped(b, remote, strlen(remote));
	if (id) {
		strbuf_puts(b, "' id='");
		strbuf_append_xml_escaped(b, id, strlen(id));
	}
	strbuf_printf(b, "' type='error'><error type='%s'><%s xmlns='" NS_STANZAS "'/></error>"
		      "</db:%s>", stanza_error_type(condition), condition, el);
	conn_send(c, b->data, b->len);
	strbuf_clear(b);
}

/* <db:result type='valid|invalid'/>: step 4, our answer to the initiating server. */
static void in_db_result_type(struct conn *c, const char *local, const char *remote,
			      const char *type)
{
	struct strbuf *b = &c->w->scratch;

	strbuf_clear(b);
	strbuf_puts(b, "<db:result from='");
	strbuf_append_xml_escaped(b, local, strlen(local));
	strbuf_puts(b, "' to='");
	strbuf_append_xml_escaped(b, remote, strlen(remote));
	strbuf_printf(b, "' type='%s'/>", type);
	conn_send(c, b->data, b->len);
	strbuf_clear(b);
}

/* Normalized domains of a dialback element's from/to; false when malformed. */
static bool in_db_domains(const struct xml_node *el, char *from, char *to, size_t size)
{
	const char *f = xml_attr_get(el, "from"), *t = xml_attr_get(el, "to");

	return f && t && jid_prep_domain(from, size, f, strlen(f)) == 0 &&
	       jid_prep_domain(to, size, t, strlen(t)) == 0;
}

/* Step 1 from the initiating server: prove `from` to `to` with this key. */
static bool in_db_result(struct conn *c, struct xml_node *el)
{
	struct s2s_conn *sc = c->s2s;
	char from[JID_PART_MAX + 1], to[JID_PART_MAX + 1];
	const char *key = xml_text(&c->w->tmp, el), *why;
	struct s2s_verify *v;
	struct s2s_link *l;

	if (!c->secure) {
		s2s_stream_error(c, "policy-violation", "TLS is required");
		return false;
	}
	if (!in_db_domains(el, from, to, sizeof(from))) {
		s2s_stream_error(c, "improper-addressing", NULL);
		return false;
	}
	if (!s2s_is_local_str(c->w, to)) {
		in_db_error(c, "result", to, from, NULL, "item-not-found");
		goto out;
	}
	if (in_has_pair(sc, from, to) ||
	    tls_conn_peer_verify_domain(c->tls, from, &why) == 0) {
		/* The certificate proves the domain: no need to call back (XEP-0344). */
		if (in_add_pair(c, from, to, "dialback-certificate") < 0)
			in_db_error(c, "result", to, from, NULL, "resource-constraint");
		else
			in_db_result_type(c, to, from, "valid");
		goto out;
	}
	if (s2s_srv(c->w)->verified_only || !cfg_of(c)->s2s) {
		log_info("s2s.dialback_refused", "conn=%llu remote=%s reason=\"%s\"", cid(c), from,
			 s2s_srv(c->w)->verified_only ? "s2s_auth=verified" : "s2s=no");
		in_db_error(c, "result", to, from, NULL, "not-authorized");
		goto out;
	}
	if (!key || strlen(key) > S2S_DB_KEY_LEN * 2 || sc->verifying >= S2S_VERIFY_MAX) {
		in_db_error(c, "result", to, from, NULL, key ? "resource-constraint" : "bad-request");
		goto out;
	}
	v = calloc(1, sizeof(*v));
	l = v ? s2s_link_get(c->w, to, from) : NULL;
	if (!l) {
		free(v);
		in_db_error(c, "result", to, from, NULL, "internal-server-error");
		goto out;
	}
	/* An authoritative server that never answers must not grow our memory. */
	if (l->nverifies >= S2S_LINK_VERIFY_MAX) {
		free(v);
		in_db_error(c, "result", to, from, NULL, "resource-constraint");
		goto out;
	}
	v->in_slot = c->slot;
	v->in_gen = c->gen;
	snprintf(v->id, sizeof(v->id), "%s", c->stream_id);
	snprintf(v->key, sizeof(v->key), "%s", key);
	sc->verifying++;
	log_info("s2s.dialback_verify", "conn=%llu remote=%s local=%s", cid(c), from, to);
	/* Our link to the sender domain asks its authoritative server (step 2). */
	s2s_out_verify(l, v);
out:
	arena_reset(&c->w->tmp);
	return true;
}

/*
 * Step 3 came back over our link: find the inbound stream by slot,
 * generation and its stream id (the id the key was made for), and answer
 * there. An error keeps the stream: the peer may retry or use another pair.
 */
void s2s_in_verified(struct worker *w, const struct s2s_verify *v, const char *remote,
		     const char *local, const char *type)
{
	struct conn *c = worker_conn(w, v->in_slot, v->in_gen);
	struct s2s_conn *sc;

	if (!c || c->kind != CONN_S2S_IN || c->closing || strcmp(c->stream_id, v->id) != 0)
		return;	/* that stream is gone: the answer is dropped (XEP-0220 2.1.2) */
	sc = c->s2s;
	if (sc->verifying)
		sc->verifying--;
	if (strcmp(type, "valid") == 0) {
		if (in_add_pair(c, remote, local, "dialback") < 0)
			in_db_error(c, "result", local, remote, NULL, "resource-constraint");
		else
			in_db_result_type(c, local, remote, "valid");
		return;
	}
	if (strcmp(type, "invalid") == 0) {
		log_warn("s2s.dialback_invalid", "conn=%llu remote=%s local=%s", cid(c), remote, local);
		in_db_result_type(c, local, remote, "invalid");
		/* XEP-0220 2.2.1: with no other pair the stream ends. */
		if (!sc->npairs) {
			conn_send_str(c, "</stream:stream>");
			conn_close(c, CONN_CLOSE_ERROR);
		}
		return;
	}
	in_db_error(c, "result", local, remote, NULL, "remote-connection-failed");
}

/* Step 2 from a receiving server: did we (authoritative) make this key? */
static bool in_db_verify(struct conn *c, struct xml_node *el)
{
	struct s2s_server *ss = s2s_srv(c->w);
	char from[JID_PART_MAX + 1], to[JID_PART_MAX + 1], want[S2S_DB_KEY_LEN + 1];
	const char *id = xml_attr_get(el, "id"), *key = xml_text(&c->w->tmp, el);
	struct strbuf *b = &c->w->scratch;
	bool ok;

	if (!in_db_domains(el, from, to, sizeof(from)) || !id) {
		s2s_stream_error(c, "improper-addressing", NULL);
		return false;
	}
	if (!s2s_is_local_str(c->w, to)) {
		in_db_error(c, "verify", to, from, id, "item-not-found");
		goto out;
	}
	/* The key was made for (receiving = from, originating = to, their stream id). */
	ok = key && strlen(key) == S2S_DB_KEY_LEN &&
	     s2s_dialback_key(ss->db_secret, sizeof(ss->db_secret), from, to, id, want) == 0 &&
	     CRYPTO_memcmp(want, key, S2S_DB_KEY_LEN) == 0;
	log_info("s2s.dialback_answer", "conn=%llu asker=%s for=%s valid=%s", cid(c), from, to,
		 ok ? "yes" : "no");
	strbuf_clear(b);
	strbuf_puts(b, "<db:verify from='");
	strbuf_append_xml_escaped(b, to, strlen(to));
	strbuf_puts(b, "' to='");
	strbuf_append_xml_escaped(b, from, strlen(from));
	strbuf_puts(b, "' id='");
	strbuf_append_xml_escaped(b, id, strlen(id));
	strbuf_printf(b, "' type='%s'/>", ok ? "valid" : "invalid");
	conn_send(c, b->data, b->len);
	strbuf_clear(b);
out:
	arena_reset(&c->w->tmp);
	return true;
}

/* ---- Dispatch ---- */

static bool in_stanza(void *ctx, struct xml_node *el)
{
	struct conn *c = ctx;
	struct s2s_conn *sc = c->s2s;
	bool go_on = true;

	if (strcmp(el->ns, NS_TLS) == 0 && strcmp(el->name, "starttls") == 0) {
		go_on = in_starttls(c);
	} else if (strcmp(el->ns, NS_DIALBACK) == 0 && strcmp(el->name, "verify") == 0) {
		go_on = in_db_verify(c, el);
	} else if (sc->state != IN_OPEN) {
		/* Before TLS only STARTTLS and verification requests (RFC 6120 5.3.1). */
		s2s_stream_error(c, strcmp(el->ns, XML_NS_SERVER) == 0 ? "not-authorized" :
				 "policy-violation", "TLS is required");
		go_on = false;
	} else if (strcmp(el->ns, NS_SASL) == 0 && strcmp(el->name, "auth") == 0) {
		go_on = in_sasl_auth(c, el);
	} else if (strcmp(el->ns, NS_DIALBACK) == 0 && strcmp(el->name, "result") == 0) {
		go_on = in_db_result(c, el);
	} else if (strcmp(el->ns, XML_NS_SERVER) == 0 &&
		   (strcmp(el->name, "message") == 0 || strcmp(el->name, "presence") == 0 ||
		    strcmp(el->name, "iq") == 0)) {
		if (!sc->npairs) {
			s2s_stream_error(c, "not-authorized", "no domain proven on this stream");
			return false;
		}
		go_on = s2s_inbound_stanza(c, el, in_peer_ok, false);
	} else if (strcmp(el->ns, XML_NS_STREAM) == 0 && strcmp(el->name, "error") == 0) {
		struct xml_node *cond = xml_first_element(el);

		log_info("s2s.peer_stream_error", "conn=%llu remote=%s condition=%s", cid(c),
			 sc->remote ? sc->remote : "-", cond ? cond->name : "-");
	} else {
		s2s_stream_error(c, "unsupported-stanza-type", NULL);
		go_on = false;
	}
	return go_on && !c->closing && !c->restart_pending;
}

static const struct xml_stream_handlers in_handlers = {
	.stream_open = in_stream_open,
	.stanza = in_stanza,
};

/* ---- Connection events ---- */

void s2s_in_accepted(struct conn *c, bool direct_tls)
{
	c->kind = CONN_S2S_IN;
	c->direct_tls = direct_tls;
	c->s2s = calloc(1, sizeof(*c->s2s));
	if (!c->s2s) {
		conn_abort(c, CONN_CLOSE_ERROR);
		return;
	}
	xml_stream_init(&c->xs, c->w->xml, &in_handlers, c);
	c->xs.limit_override = cfg_of(c)->max_stanza_bytes_preauth;
	conn_set_deadline(c, (uint64_t)cfg_of(c)->s2s_handshake_timeout * 1000);
	if (direct_tls) {
		if (conn_start_tls(c) < 0) {
			log_warn("tls.start_failed", "conn=%llu", cid(c));
			conn_abort(c, CONN_CLOSE_ERROR);
			return;
		}
		c->s2s->state = IN_TLS;
	}
}

void s2s_in_tls_established(struct conn *c)
{
	/* STARTTLS restarted the XML stream already; Direct TLS starts fresh. */
	c->s2s->state = IN_HEADER;
}

/*
 * Before a domain is proven: the handshake timeout. After: idleness,
 * checked lazily against the last input (the timer is not moved per
 * stanza), as for clients.
 */
void s2s_in_deadline(struct conn *c)
{
	struct s2s_conn *sc = c->s2s;
	uint64_t now = loop_now_ms(c->w->loop), idle = now - c->last_input_ms;
	uint64_t idle_ms = (uint64_t)cfg_of(c)->s2s_idle_timeout * 1000;

	if (!sc->npairs) {
		c->close_reason = CONN_CLOSE_TIMEOUT;
		s2s_stream_error(c, "connection-timeout", "negotiation took too long");
		return;
	}
	if (!idle_ms)
		return;
	if (idle < idle_ms) {
		conn_set_deadline(c, idle_ms - idle);
		return;
	}
	log_info("s2s.idle_close", "conn=%llu remote=%s", cid(c), sc->remote ? sc->remote : "-");
	conn_send_str(c, "</stream:stream>");
	conn_close(c, CONN_CLOSE_TIMEOUT);
}

void s2s_in_closing(struct conn *c)
{
	/* Verifications still pending for this stream find it gone (slot generation). */
	(void)c;
}
