/* SPDX-License-Identifier: MIT */
/*
 * Client-to-server stream negotiation (RFC 6120 sections 4-7).
 *
 * The negotiation is a state table. Every state lists the top-level
 * elements it accepts and the handler for each; anything else gets the
 * state's stream error. A new stream header is accepted whenever the XML
 * stream was restarted (at connect, after TLS, after SASL success), and the
 * features it gets depend on how far negotiation has come:
 *
 *   HEADER --(plain, TLS required)--> TLS_OFFERED --starttls--> TLS_HANDSHAKE
 *   HEADER --(TLS or not required)--> AUTH --auth--> SASL_LOOKUP <-> SASL
 *   SASL --success--> HEADER --(authenticated)--> BIND --bind--> READY
 *
 * SASL and registration need storage, which answers asynchronously: input
 * is paused while a lookup is in flight and resumed by its completion.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "abuse.h"
#include "account.h"
#include "blocking.h"
#include "c2s.h"
#include "cluster.h"
#include "caps.h"
#include "carbons.h"
#include "config.h"
#include "csi.h"
#include "durable.h"
#include "iq.h"
#include "jid.h"
#include "kmod.h"
#include "last_activity.h"
#include "log.h"
#include "mam.h"
#include "metrics.h"
#include "pep.h"
#include "presence.h"
#include "provisioning.h"
#include "roster.h"
#include "router.h"
#include "s2s.h"
#include "sasl.h"
#include "sasl2.h"
#include "sasl_external.h"
#include "server.h"
#include "session.h"
#include "sm.h"
#include "stanza.h"
#include "storage.h"
#include "tls.h"
#include "worker.h"

#define NS_TLS		"urn:ietf:params:xml:ns:xmpp-tls"
#define NS_SASL		"urn:ietf:params:xml:ns:xmpp-sasl"
#define NS_BIND		"urn:ietf:params:xml:ns:xmpp-bind"
#define NS_SESSION	"urn:ietf:params:xml:ns:xmpp-session"
#define NS_SASL_CB	"urn:xmpp:sasl-cb:0"
#define NS_REGISTER_FEATURE "http://jabber.org/features/iq-register"

#define C2S_LANG_MAX	(sizeof(((struct conn *)0)->lang) - 1)

enum c2s_state {
	C2S_HEADER = 0,		/* waiting for a stream header */
	C2S_TLS_OFFERED,	/* TLS required: only <starttls/> */
	C2S_TLS_HANDSHAKE,	/* bytes are TLS handshake, no XML yet */
	C2S_AUTH,		/* SASL (and registration) */
	C2S_SASL,		/* mid-exchange: <response/> or <abort/> */
	C2S_SASL_LOOKUP,	/* storage lookup in flight, input paused */
	C2S_SASL2,		/* SASL2 (XEP-0388) mid-exchange: <response/> or <abort/> */
	C2S_BIND,		/* authenticated: resource binding */
	C2S_BIND_LOADING,	/* the account's state is loading, input paused */
	C2S_READY,		/* session bound: stanzas are routed */
};

/* SASL state while authenticating; freed on success, failure or close. */
struct c2s_auth {
	struct sasl_exchange *x;
	char mech[32];
	bool awaiting_initial;		/* sent an empty challenge for it */
	char *initial;			/* decoded initial response (for the step after lookup) */
	size_t initial_len;
	struct storage_req *req;	/* lookup in flight; owned by its completion */
};

/* A bind request waiting for the account's state. */
#define C2S_ID_MAX 256

struct c2s_bind {
	char id[C2S_ID_MAX + 1];
	char full[JID_MAX];
};

typedef bool (*c2s_handler_fn)(struct conn *c, struct xml_node *el);

struct c2s_rule {
	const char *ns;
	const char *name;
	c2s_handler_fn fn;
};

struct c2s_state_desc {
	const char *name;
	const struct c2s_rule *rules;	/* NULL-terminated; NULL = no stanzas */
};

static bool c2s_starttls(struct conn *c, struct xml_node *el);
static bool c2s_sasl_auth(struct conn *c, struct xml_node *el);
static bool c2s_sasl_response(struct conn *c, struct xml_node *el);
static bool c2s_sasl_abort(struct conn *c, struct xml_node *el);
static bool c2s_preauth_iq(struct conn *c, struct xml_node *el);
static bool c2s_bind_iq(struct conn *c, struct xml_node *el);
static bool c2s_ready_stanza(struct conn *c, struct xml_node *el);

static const struct c2s_rule rules_tls_offered[] = {
	{ NS_TLS, "starttls", c2s_starttls },
	{ NS_SASL, "auth", c2s_sasl_auth },	/* answered with encryption-required */
	{ NULL, NULL, NULL },
};

static const struct c2s_rule rules_auth[] = {
	{ NS_SASL, "auth", c2s_sasl_auth },
	{ NS_SASL2, "authenticate", sasl2_authenticate },	/* XEP-0388 (sasl2.c) */
	{ NS_TLS, "starttls", c2s_starttls },
	{ XML_NS_CLIENT, "iq", c2s_preauth_iq },
	{ NULL, NULL, NULL },
};

static const struct c2s_rule rules_sasl[] = {
	{ NS_SASL, "response", c2s_sasl_response },
	{ NS_SASL, "abort", c2s_sasl_abort },
	{ NULL, NULL, NULL },
};

static const struct c2s_rule rules_sasl2[] = {
	{ NS_SASL2, "response", sasl2_response },
	{ NS_SASL2, "abort", sasl2_abort },
	{ NULL, NULL, NULL },
};

static const struct c2s_rule rules_bind[] = {
	{ XML_NS_CLIENT, "iq", c2s_bind_iq },
	{ NS_SM, "resume", sm_element },	/* XEP-0198 resumption instead of a bind */
	{ NS_SM, "enable", sm_element },	/* before bind: <failed/> */
	{ NULL, NULL, NULL },
};

static const struct c2s_rule rules_ready[] = {
	{ XML_NS_CLIENT, "message", c2s_ready_stanza },
	{ XML_NS_CLIENT, "presence", c2s_ready_stanza },
	{ XML_NS_CLIENT, "iq", c2s_ready_stanza },
	{ NS_SM, "enable", sm_element },	/* XEP-0198 (sm.c) */
	{ NS_SM, "r", sm_element },
	{ NS_SM, "a", sm_element },
	{ NS_SM, "resume", sm_element },	/* after bind: <failed/> */
	{ NS_CSI, "active", csi_element },	/* XEP-0352 (csi.c) */
	{ NS_CSI, "inactive", csi_element },
	{ NULL, NULL, NULL },
};

static const struct c2s_state_desc c2s_states[] = {
	[C2S_HEADER] = { "header", NULL },
	[C2S_TLS_OFFERED] = { "tls-offered", rules_tls_offered },
	[C2S_TLS_HANDSHAKE] = { "tls-handshake", NULL },
	[C2S_AUTH] = { "auth", rules_auth },
	[C2S_SASL] = { "sasl", rules_sasl },
	[C2S_SASL_LOOKUP] = { "sasl-lookup", NULL },
	[C2S_SASL2] = { "sasl2", rules_sasl2 },
	[C2S_BIND] = { "bind", rules_bind },
	[C2S_BIND_LOADING] = { "bind-loading", NULL },
	[C2S_READY] = { "ready", rules_ready },
};

static struct server *srv_of(const struct conn *c)
{
	return c->w->srv;
}

static const struct config *cfg_of(const struct conn *c)
{
	return c->w->srv->cfg;
}

static unsigned long long cid(const struct conn *c)
{
	return (unsigned long long)c->id;
}

/* ---- Stream header, features, errors ---- */

static void c2s_new_stream_id(struct conn *c)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char rnd[sizeof(c->stream_id) - 1];

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	for (size_t i = 0; i < sizeof(rnd); i++)
		c->stream_id[i] = alphabet[rnd[i] % (sizeof(alphabet) - 1)];
	c->stream_id[sizeof(rnd)] = '\0';
}

/* Our stream header. `to` echoes the client's 'from' when it gave a valid one. */
static void c2s_send_header(struct conn *c, const char *to)
{
	struct strbuf *b = &c->w->scratch;

	c2s_new_stream_id(c);
	strbuf_clear(b);
	strbuf_puts(b, "<?xml version='1.0'?><stream:stream xmlns='jabber:client' "
		       "xmlns:stream='http://etherx.jabber.org/streams' id='");
	strbuf_puts(b, c->stream_id);
	strbuf_puts(b, "' from='");
	strbuf_append_xml_escaped(b, cfg_of(c)->domain, strlen(cfg_of(c)->domain));
	if (to) {
		strbuf_puts(b, "' to='");
		strbuf_append_xml_escaped(b, to, strlen(to));
	}
	strbuf_puts(b, "' version='1.0' xml:lang='");
	strbuf_append_xml_escaped(b, c->lang[0] ? c->lang : "en", strlen(c->lang[0] ? c->lang : "en"));
	strbuf_puts(b, "'>");
	conn_send(c, b->data, b->len);
	strbuf_clear(b);
	c->header_sent = true;
}

void c2s_stream_error(struct conn *c, const char *condition, const char *text)
{
	struct strbuf *b = &c->w->scratch;

	if (c->closing)
		return;
	if (s2s_owns(c)) {	/* server and component streams (s2s.c) */
		s2s_stream_error(c, condition, text);
		return;
	}
	/* An HTTP or control connection (kTLS trouble, shutdown) has no stream: just close. */
	if (c->kind == CONN_HTTP || c->kind == CONN_CONTROL) {
		conn_close(c, c->close_reason ? c->close_reason : CONN_CLOSE_ERROR);
		return;
	}
	/* RFC 6120 4.9.1.2: an error before our header still opens the stream. */
	if (!c->header_sent)
		c2s_send_header(c, NULL);
	strbuf_clear(b);
	strbuf_puts(b, "<stream:error><");
	strbuf_puts(b, condition);
	strbuf_puts(b, " xmlns='" NS_STREAMS "'/>");
	if (text) {
		strbuf_puts(b, "<text xmlns='" NS_STREAMS "' xml:lang='en'>");
		strbuf_append_xml_escaped(b, text, strlen(text));
		strbuf_puts(b, "</text>");
	}
	strbuf_puts(b, "</stream:error></stream:stream>");
	conn_send(c, b->data, b->len);
	strbuf_clear(b);
	log_info("stream.error", "conn=%llu condition=%s state=%s", cid(c), condition,
		 c2s_states[c->state].name);
	metrics_stream_error(&c->w->metrics, condition);
	conn_close(c, c->close_reason ? c->close_reason : CONN_CLOSE_ERROR);
}

/* Fills the channel-binding view of this connection for SASL. */
void c2s_channel(const struct conn *c, struct sasl_channel *ch)
{
	ssize_t n;

	memset(ch, 0, sizeof(*ch));
	if (!c->secure || !c->tls)
		return;
	ch->tls = true;
	ch->tls13 = tls_conn_is_tls13(c->tls);
	n = tls_conn_channel_binding(c->tls, "tls-exporter", ch->exporter, sizeof(ch->exporter));
	ch->exporter_len = n > 0 ? (size_t)n : 0;
	n = tls_conn_channel_binding(c->tls, "tls-unique", ch->unique, sizeof(ch->unique));
	ch->unique_len = n > 0 ? (size_t)n : 0;
}

bool c2s_plain_allowed_insecure(const struct conn *c)
{
	return !cfg_of(c)->require_tls;
}

static void c2s_features_preauth(struct conn *c, struct strbuf *b)
{
	const char *mechs[8], *cbs[4];
	struct sasl_channel ch;
	size_t n;

	c2s_channel(c, &ch);
	if (!c->secure && !c->websocket)	/* RFC 7395 3.8: no STARTTLS over WebSocket */
		strbuf_puts(b, "<starttls xmlns='" NS_TLS "'/>");
	n = sasl_offer(&ch, c2s_plain_allowed_insecure(c), mechs, 8);
	strbuf_puts(b, "<mechanisms xmlns='" NS_SASL "'>");
	sasl_external_feature(c, b);	/* XEP-0178: a verified client certificate */
	for (size_t i = 0; i < n; i++) {
		strbuf_puts(b, "<mechanism>");
		strbuf_puts(b, mechs[i]);
		strbuf_puts(b, "</mechanism>");
	}
	strbuf_puts(b, "</mechanisms>");
	/* XEP-0440: which channel-binding types the -PLUS mechanisms accept. */
	n = sasl_cb_types(&ch, cbs, 4);
	if (n) {
		strbuf_puts(b, "<sasl-channel-binding xmlns='" NS_SASL_CB "'>");
		for (size_t i = 0; i < n; i++) {
			strbuf_puts(b, "<channel-binding type='");
			strbuf_puts(b, cbs[i]);
			strbuf_puts(b, "'/>");
		}
		strbuf_puts(b, "</sasl-channel-binding>");
	}
	if (cfg_of(c)->registration_open)
		strbuf_puts(b, "<register xmlns='" NS_REGISTER_FEATURE "'/>");
	sasl2_features(c, b);	/* XEP-0388 with Bind2, SM and FAST inline (sasl2.c) */
}

/* Sends the features for where negotiation stands and enters that state. */
static void c2s_send_features(struct conn *c)
{
	struct strbuf *b = &c->w->scratch;

	strbuf_clear(b);
	strbuf_puts(b, "<stream:features>");
	if (c->authenticated && c->sess) {
		/* Bound inline by SASL2/Bind2: what is left to negotiate. */
		if (!c->sess->sm)
			strbuf_puts(b, SM_FEATURE);
		strbuf_puts(b, CSI_FEATURE);
		strbuf_puts(b, ROSTER_STREAM_FEATURES);
		c->state = C2S_READY;
	} else if (c->authenticated) {
		strbuf_puts(b, "<bind xmlns='" NS_BIND "'/>"
			       "<session xmlns='" NS_SESSION "'><optional/></session>");
		strbuf_puts(b, SM_FEATURE);
		strbuf_puts(b, CSI_FEATURE);
		strbuf_puts(b, ROSTER_STREAM_FEATURES);	/* versioning, pre-approval */
		c->state = C2S_BIND;
	} else if (!c->secure && cfg_of(c)->require_tls) {
		strbuf_puts(b, "<starttls xmlns='" NS_TLS "'><required/></starttls>");
		c->state = C2S_TLS_OFFERED;
	} else {
		c2s_features_preauth(c, b);
		c->state = C2S_AUTH;
	}
	caps_stream_feature(b);	/* XEP-0115: the server's capabilities */
	strbuf_puts(b, "</stream:features>");
	conn_send(c, b->data, b->len);
	strbuf_clear(b);
}

/*
 * RFC 6120 4.7.5: a missing version means pre-1.0 (unsupported); a higher
 * minor version is answered with ours; a higher major is unsupported.
 */
static bool c2s_version_ok(const char *v)
{
	unsigned major, minor;
	int n = 0;

	if (!v || sscanf(v, "%u.%u%n", &major, &minor, &n) != 2 || v[n] != '\0')
		return false;
	return major == 1;
}

static bool c2s_on_stream_open(void *ctx, const struct xml_node *hdr, const char *default_ns)
{
	struct conn *c = ctx;
	const char *to = xml_attr_get(hdr, "to");
	const char *lang = xml_attr_get_ns(hdr, XML_NS_XML, "lang");
	const char *from = xml_attr_get(hdr, "from");
	char dom[JID_PART_MAX + 1];
	struct jid from_jid;

	if (c->state != C2S_HEADER) {
		c2s_stream_error(c, "policy-violation", "unexpected stream header");
		return false;
	}
	if (lang && strlen(lang) <= C2S_LANG_MAX && lang[0] && !strpbrk(lang, "'\"<>&"))
		strcpy(c->lang, lang);
	if (strcmp(hdr->ns, XML_NS_STREAM) != 0 || strcmp(hdr->name, "stream") != 0 ||
	    strcmp(default_ns, XML_NS_CLIENT) != 0) {
		c2s_stream_error(c, "invalid-namespace", NULL);
		return false;
	}
	if (!to) {
		c2s_stream_error(c, "host-unknown", "the stream header has no 'to'");
		return false;
	}
	if (jid_prep_domain(dom, sizeof(dom), to, strlen(to)) < 0 ||
	    strcmp(dom, cfg_of(c)->domain) != 0) {
		c2s_stream_error(c, "host-unknown", NULL);
		return false;
	}
	if (!c2s_version_ok(xml_attr_get(hdr, "version"))) {
		c2s_stream_error(c, "unsupported-version", NULL);
		return false;
	}
	/* RFC 6120 4.7.2: echo a valid 'from' as our 'to'. */
	if (from && jid_parse(&from_jid, from, strlen(from)) < 0)
		from = NULL;
	c2s_send_header(c, from ? from_jid.buf : NULL);
	c2s_send_features(c);
	return true;
}

/* ---- Dispatch through the state table ---- */

/* The stream error for an element a state does not accept. */
static const char *c2s_unexpected_condition(const struct conn *c, const struct xml_node *el)
{
	if (strcmp(el->ns, XML_NS_CLIENT) == 0) {
		if (strcmp(el->name, "message") && strcmp(el->name, "presence") && strcmp(el->name, "iq"))
			return "unsupported-stanza-type";
		/* RFC 6120 4.9.3.12: stanzas before authentication / binding. */
		return c->state == C2S_READY ? "unsupported-stanza-type" : "not-authorized";
	}
	if (strcmp(el->ns, NS_TLS) == 0 || strcmp(el->ns, NS_SASL) == 0 ||
	    strcmp(el->ns, NS_SASL2) == 0)
		return "policy-violation";
	return "unsupported-stanza-type";
}

static bool c2s_on_stanza(void *ctx, struct xml_node *el)
{
	struct conn *c = ctx;
	const struct c2s_rule *r = c2s_states[c->state].rules;

	/* The session's stanza rate; also ends the stanza deadline (abuse.c). */
	if (!abuse_stanza_in(c))
		return false;

	for (; r && r->ns; r++) {
		if (strcmp(r->ns, el->ns) == 0 && strcmp(r->name, el->name) == 0) {
			bool go_on = r->fn(c, el);

			return go_on && !c->closing && !c->input_paused && !c->restart_pending;
		}
	}
	c2s_stream_error(c, c2s_unexpected_condition(c, el), NULL);
	return false;
}

static const struct xml_stream_handlers c2s_xml_handlers = {
	.stream_open = c2s_on_stream_open,
	.stanza = c2s_on_stanza,
};

/* ---- Connection lifecycle ---- */

void c2s_accepted(struct conn *c)
{
	xml_stream_init(&c->xs, c->w->xml, &c2s_xml_handlers, c);
	c->xs.limit_override = cfg_of(c)->max_stanza_bytes_preauth;
	c->state = C2S_HEADER;
	conn_set_deadline(c, (uint64_t)cfg_of(c)->auth_timeout * 1000);
	if (c->direct_tls) {
		if (conn_start_tls(c) < 0) {
			log_warn("tls.start_failed", "conn=%llu", cid(c));
			conn_abort(c, CONN_CLOSE_ERROR);
			return;
		}
		c->state = C2S_TLS_HANDSHAKE;
	}
}

bool c2s_expects_header(const struct conn *c)
{
	return c->state == C2S_HEADER;
}

void c2s_tls_established(struct conn *c)
{
	if (s2s_owns(c)) {
		s2s_tls_established(c);
		return;
	}
	c->secure = true;
	/* mode=ktls: the record layer moves to the kernel now (conn_ktls.c). */
	log_info("tls.established", "conn=%llu version=%s cipher=%s mode=%s", cid(c),
		 tls_conn_version(c->tls), tls_conn_cipher(c->tls), conn_tls_mode_name(c));
	/* STARTTLS restarted the XML stream already; Direct TLS starts fresh. */
	c->state = C2S_HEADER;
}

void c2s_stream_closed_by_peer(struct conn *c)
{
	if (c->closing)
		return;
	if (s2s_owns(c)) {
		s2s_stream_closed_by_peer(c);
		return;
	}
	log_debug("stream.closed_by_peer", "conn=%llu state=%s", cid(c), c2s_states[c->state].name);
	sm_stream_closed(c);	/* a clean close: no resumption (XEP-0198 section 6) */
	if (c->header_sent)
		conn_send_str(c, "</stream:stream>");
	conn_close(c, CONN_CLOSE_PEER);
}

static void c2s_auth_free(struct conn *c)
{
	struct c2s_auth *a = c->auth;

	if (!a)
		return;
	sasl_end(a->x);
	if (a->initial) {
		explicit_bzero(a->initial, a->initial_len);
		free(a->initial);
	}
	/* An in-flight request is freed by its completion, which finds us gone. */
	if (a->req)
		a->req->arg = NULL;
	free(a);
	c->auth = NULL;
}

/*
 * The session ends for good: when its connection closes, or, for a
 * session stream management kept detached (s->conn == NULL), when its
 * resumption window ends. What must happen once per session end belongs
 * here, not in c2s_closing(), which runs once per connection.
 */
void c2s_session_end(struct worker *w, struct session *s)
{
	struct conn *c = s->conn;

	if (s->ending)
		return;
	log_info("session.end", "conn=%llu jid=%s%s", c ? cid(c) : 0ULL, s->jid,
		 s->moved ? " moved=yes" : "");
	if (!s->moved)
		last_activity_session_end(w, s);	/* XEP-0012: the account's last logout */
	presence_session_end(w, s);	/* unavailable to contacts and directed (presence.c) */
	/*
	 * From here the session is invisible to routing (unavailable, no
	 * full-JID match), but it stays allocated and listed until the end of
	 * the loop turn: this can run in the middle of a delivery loop over
	 * the account's sessions (a recipient whose output overflowed), which
	 * must not find its next element freed.
	 */
	s->ending = true;
	s->available = false;
	if (c)
		c->sess = NULL;
	s->conn = NULL;
	sm_session_end(w, s);	/* unacked stanzas are rerouted as undelivered (sm.c) */
	csi_session_end(s);	/* held presence is dropped (csi.c) */
	pep_session_end(w, s);	/* XEP-0115 caps for PEP are forgotten (pep.c) */
	cluster_session_end(w, s);	/* leaves the cluster's registry (cluster.c) */
	s->ending_next = w->ending_sessions;
	w->ending_sessions = s;
}

void c2s_reap_sessions(struct worker *w)
{
	struct session *s;

	while ((s = w->ending_sessions) != NULL) {
		w->ending_sessions = s->ending_next;
		sessdir_remove(w->sessions, s);
		session_free(s);
	}
}

void c2s_closing(struct conn *c)
{
	if (s2s_owns(c)) {
		s2s_closing(c);
		return;
	}
	c2s_auth_free(c);
	sm_conn_gone(c);	/* a resumption asked of another node (sm.c) */
	sasl2_conn_closing(c);	/* SASL2/Bind2/FAST state (sasl2.c) */
	free(c->bind);
	c->bind = NULL;
	/* Stream management may keep the session, detached, for resumption. */
	if (c->sess && !sm_conn_closing(c))
		c2s_session_end(c->w, c->sess);
}

static void c2s_send_ping(struct conn *c)
{
	struct strbuf *b = &c->w->scratch;

	strbuf_clear(b);
	strbuf_puts(b, "<iq type='get' id='stanzad-ping' from='");
	strbuf_append_xml_escaped(b, cfg_of(c)->domain, strlen(cfg_of(c)->domain));
	strbuf_puts(b, "' to='");
	strbuf_append_xml_escaped(b, c->sess->jid, c->sess->jid_len);
	strbuf_puts(b, "'><ping xmlns='" NS_PING "'/></iq>");
	sm_send_stanza(c, b->data, b->len);	/* a stanza: stream management counts it */
	strbuf_clear(b);
}

/*
 * The one deadline. Before a session is bound it is the auth timeout. After,
 * it checks idleness lazily (input does not re-arm the timer; the timer
 * compares against the last input time): silence for idle_timeout gets a
 * ping, and silence for ping_timeout more closes the connection.
 */
void c2s_deadline(struct conn *c)
{
	const struct config *cfg = cfg_of(c);
	uint64_t now = loop_now_ms(c->w->loop), idle = now - c->last_input_ms;
	uint64_t idle_ms = (uint64_t)cfg->idle_timeout * 1000;

	if (s2s_owns(c)) {
		s2s_deadline(c);
		return;
	}
	if (c->state != C2S_READY) {
		log_info("stream.timeout", "conn=%llu state=%s", cid(c), c2s_states[c->state].name);
		c->close_reason = CONN_CLOSE_TIMEOUT;
		c2s_stream_error(c, "connection-timeout", "negotiation took too long");
		return;
	}
	if (!idle_ms)
		return;
	/* Any input after our ping answers it. */
	if (c->ping_sent && c->last_input_ms >= c->ping_sent_ms)
		c->ping_sent = false;
	if (!c->ping_sent) {
		if (idle < idle_ms) {
			conn_set_deadline(c, idle_ms - idle);
			return;
		}
		c->ping_sent = true;
		c->ping_sent_ms = now;
		c2s_send_ping(c);
		conn_set_deadline(c, (uint64_t)cfg->ping_timeout * 1000);
		return;
	}
	log_info("stream.timeout", "conn=%llu state=ready idle_ms=%llu", cid(c),
		 (unsigned long long)idle);
	c->close_reason = CONN_CLOSE_TIMEOUT;
	c2s_stream_error(c, "connection-timeout", NULL);
}

void c2s_send_stanza(struct conn *c, const struct xml_node *st)
{
	/* A detached session has no stream: router_deliver() queues for it. */
	if (!c)
		return;
	conn_send_node(c, st);
}

void c2s_send_prepared(struct conn *c, const struct xml_node *st, const char *data, size_t len)
{
	/* Keep in step with c2s_send_stanza: same stream, bytes made already. */
	if (!c)
		return;
	/* A fan-out copy may go out through the offload module (kmod.c). */
	if (kmod_fanout_take(c, data, len))
		return;
	sm_send_stanza(c, data, len);
}

/* ---- STARTTLS (RFC 6120 section 5) ---- */

static bool c2s_starttls(struct conn *c, struct xml_node *el)
{
	if (c->websocket) {
		c2s_stream_error(c, "policy-violation", "no STARTTLS over WebSocket (RFC 7395)");
		return false;
	}
	if (c->secure || c->tls) {
		c2s_stream_error(c, "policy-violation", "TLS is already on");
		return false;
	}
	if (!srv_of(c)->tls_starttls) {
		conn_send_str(c, "<failure xmlns='" NS_TLS "'/></stream:stream>");
		conn_close(c, CONN_CLOSE_ERROR);
		return false;
	}
	/* <proceed/> must leave in plaintext, before the TLS layer exists. */
	conn_send_str(c, "<proceed xmlns='" NS_TLS "'/>");
	if (conn_start_tls(c) < 0) {
		log_warn("tls.start_failed", "conn=%llu", cid(c));
		conn_abort(c, CONN_CLOSE_ERROR);
		return false;
	}
	c->state = C2S_TLS_HANDSHAKE;
	c->restart_pending = true;
	return false;
}

/* ---- SASL (RFC 6120 section 6) ---- */

void c2s_auth_failed(struct conn *c, const char *mech, const char *user, const char *condition)
{
	char ubuf[80];

	abuse_auth_failed(c, user, condition);	/* per-account and per-source limits */
	log_info("auth.failure", "conn=%llu mechanism=%s user=%s reason=%s", cid(c),
		 mech ? mech : "-",
		 user ? log_sanitize(ubuf, sizeof(ubuf), user, strlen(user)) : "-", condition);
	metrics_auth(&c->w->metrics, mech, false);
	c2s_auth_free(c);
	c->state = C2S_AUTH;
	/* RFC 6120 6.4.5: a bounded number of retries, then policy-violation. */
	if (strcmp(condition, "aborted") != 0 && ++c->auth_failures >= cfg_of(c)->max_auth_failures)
		c2s_stream_error(c, "policy-violation", "too many failed authentication attempts");
}

static void c2s_sasl_failure(struct conn *c, const char *condition, const char *user)
{
	conn_send_str(c, "<failure xmlns='" NS_SASL "'><");
	conn_send_str(c, condition);
	conn_send_str(c, "/></failure>");
	c2s_auth_failed(c, c->auth ? c->auth->mech : NULL, user, condition);
}

/* Sends challenge or success data (base64, "=" for empty success data). */
static void c2s_sasl_send(struct conn *c, const char *el, const char *data, size_t len)
{
	char *b64 = len ? sasl_b64_encode(data, len) : NULL;

	conn_send_str(c, "<");
	conn_send_str(c, el);
	conn_send_str(c, " xmlns='" NS_SASL "'>");
	if (b64)
		conn_send_str(c, b64);
	conn_send_str(c, "</");
	conn_send_str(c, el);
	conn_send_str(c, ">");
	free(b64);
}

int c2s_authenticated(struct conn *c, const char *user, const char *mech)
{
	size_t n = strlen(user) + strlen(cfg_of(c)->domain) + 2;
	char *jid = malloc(n);

	if (!jid) {
		c2s_stream_error(c, "internal-server-error", NULL);
		return -ENOMEM;
	}
	snprintf(jid, n, "%s@%s", user, cfg_of(c)->domain);
	free(c->jid);
	c->jid = jid;
	/* Before c2s_auth_free(): user and mech may point into the exchange. */
	log_info("auth.success", "conn=%llu mechanism=%s jid=%s", cid(c), mech, c->jid);
	metrics_auth(&c->w->metrics, mech, true);
	c2s_auth_free(c);
	c->authenticated = true;
	abuse_auth_succeeded(c);	/* no longer an unauthenticated connection (abuse.c) */
	c->auth_failures = 0;
	c->xs.limit_override = 0;	/* the full stanza limit from now on */
	return 0;
}

/*
 * After <success/>: an account's streams live on its home worker
 * (worker.h), WebSocket ones too (accepted by worker 0's HTTP listener,
 * they carry their framing state along). The new stream header, and
 * anything after it, is read there.
 */
static void c2s_go_home(struct conn *c)
{
	unsigned home = worker_home(srv_of(c), c->jid);

	if (home != c->w->id)
		worker_migrate(c, home, conn_resume_input);
}

static void c2s_sasl_success(struct conn *c, const char *user, const char *data, size_t len)
{
	if (c2s_authenticated(c, user, c->auth->mech) < 0)
		return;
	c2s_sasl_send(c, "success", data, len);
	c->state = C2S_HEADER;
	c2s_go_home(c);
}

/*
 * SASL EXTERNAL on the RFC 6120 profile ended (sasl_external.c, from a
 * storage completion while input is paused): success restarts the stream.
 */
static void c2s_sasl_external_done(struct conn *c, const char *user, const char *condition)
{
	if (!c->auth) {
		conn_resume_input(c);
		return;
	}
	if (user) {
		if (c2s_authenticated(c, user, "EXTERNAL") == 0) {
			conn_send_str(c, "<success xmlns='" NS_SASL "'/>");
			c->state = C2S_HEADER;
			xml_stream_restart(&c->xs);
			c2s_go_home(c);
		}
	} else {
		c2s_sasl_failure(c, condition, NULL);
	}
	if (!c->closing)
		conn_resume_input(c);
}

/*
 * Runs one SASL step and answers it. Returns true when the stream must be
 * restarted (success).
 */
static bool c2s_sasl_run_step(struct conn *c, const char *in, size_t len)
{
	const char *condition = "not-authorized";
	char *out = NULL;
	size_t out_len = 0;
	enum sasl_result r;

	r = sasl_step(c->auth->x, in, len, &out, &out_len, &condition);
	switch (r) {
	case SASL_CONTINUE:
		c2s_sasl_send(c, "challenge", out, out_len);
		c->state = C2S_SASL;
		break;
	case SASL_SUCCESS:
		c2s_sasl_success(c, sasl_authenticated_user(c->auth->x), out, out_len);
		break;
	case SASL_FAILURE:
		c2s_sasl_failure(c, condition, sasl_authenticated_user(c->auth->x));
		break;
	}
	if (out) {
		explicit_bzero(out, out_len);
		free(out);
	}
	return r == SASL_SUCCESS;
}

/* Storage answered the credentials lookup: take the first step. */
static void c2s_sasl_lookup_done(struct storage_req *req)
{
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct conn *c = req->arg ? worker_conn(w, req->slot, req->gen) : NULL;
	struct c2s_auth *a;

	if (!c || c->auth != req->arg || c->closing) {
		explicit_bzero(req, sizeof(*req));
		free(req);
		return;
	}
	a = c->auth;
	a->req = NULL;
	if (req->result == -EIO || (req->result < 0 && req->result != -ENOENT)) {
		c2s_sasl_failure(c, "temporary-auth-failure", req->user);
	} else {
		sasl_set_account(a->x, req->result == 0 ? &req->creds : NULL, req->plain_ok);
		if (c2s_sasl_run_step(c, a->initial, a->initial_len) && !c->closing)
			xml_stream_restart(&c->xs);
	}
	explicit_bzero(req, sizeof(*req));
	free(req);
	if (!c->closing)
		conn_resume_input(c);
}

/* Starts the exchange with the initial response: parse, then look up. */
static void c2s_sasl_begin(struct conn *c, char *initial, size_t len)
{
	struct c2s_auth *a = c->auth;
	char user[SASL_USERNAME_MAX + 1];
	const char *condition = "malformed-request";
	struct sasl_channel ch;
	struct storage_req *req;
	const char *pw;

	if (strcmp(a->mech, "EXTERNAL") == 0) {
		/* XEP-0178: the certificate decides, after a lookup (sasl_external.c). */
		condition = sasl_external_begin(c, initial, len, c2s_sasl_external_done);
		explicit_bzero(initial, len);
		free(initial);
		if (condition) {
			c2s_sasl_failure(c, condition, NULL);
			return;
		}
		c->state = C2S_SASL_LOOKUP;
		conn_pause_input(c);
		return;
	}
	c2s_channel(c, &ch);
	if (sasl_begin(srv_of(c)->sasl, a->mech, &ch, initial, len, &a->x, user, sizeof(user),
		       &condition) < 0) {
		explicit_bzero(initial, len);
		free(initial);
		c2s_sasl_failure(c, condition, NULL);
		return;
	}
	a->initial = initial;
	a->initial_len = len;
	/* Brute force: a locked account name or a banned source (abuse.c). */
	if (abuse_auth_begin(c, user)) {
		c2s_sasl_failure(c, "temporary-auth-failure", user);
		return;
	}

	req = calloc(1, sizeof(*req));
	if (!req) {
		c2s_sasl_failure(c, "temporary-auth-failure", user);
		return;
	}
	pw = sasl_plain_password(a->x);
	req->op = pw ? STORAGE_OP_ACCOUNT_VERIFY_PLAIN : STORAGE_OP_ACCOUNT_GET;
	if (pw)
		snprintf(req->password, sizeof(req->password), "%s", pw);
	snprintf(req->user, sizeof(req->user), "%s", user);
	req->inbox = &c->w->inbox;
	req->done = c2s_sasl_lookup_done;
	req->arg = a;
	req->slot = c->slot;
	req->gen = c->gen;
	a->req = req;
	c->state = C2S_SASL_LOOKUP;
	conn_pause_input(c);
	storage_queue_submit(srv_of(c)->store, req);
}

/*
 * Decodes the base64 text of <auth/> or <response/>. Returns the bytes
 * (malloc'd) or NULL after answering incorrect-encoding. *empty is set
 * when the element had no text at all (no initial response).
 */
static char *c2s_sasl_decode(struct conn *c, struct xml_node *el, size_t *len, bool *empty)
{
	const char *text = xml_text(&c->w->tmp, el);
	char *data;

	*empty = !text || !text[0];
	if (*empty) {
		*len = 0;
		return calloc(1, 1);
	}
	data = sasl_b64_decode(text, strlen(text), len);
	if (!data)
		c2s_sasl_failure(c, errno == ENOMEM ? "temporary-auth-failure" : "incorrect-encoding",
				 NULL);
	return data;
}

static bool c2s_mech_offered(struct conn *c, const char *mech)
{
	const char *mechs[8];
	struct sasl_channel ch;
	size_t n;

	/* With any client certificate: an unverified one then fails not-authorized. */
	if (strcmp(mech, "EXTERNAL") == 0)
		return sasl_external_available(c);
	c2s_channel(c, &ch);
	n = sasl_offer(&ch, c2s_plain_allowed_insecure(c), mechs, 8);
	for (size_t i = 0; i < n; i++)
		if (strcmp(mechs[i], mech) == 0)
			return true;
	return false;
}

static bool c2s_sasl_auth(struct conn *c, struct xml_node *el)
{
	const char *mech = xml_attr_get(el, "mechanism");
	struct c2s_auth *a;
	bool empty;
	char *data;
	size_t len;

	if (!c->secure && cfg_of(c)->require_tls) {
		conn_send_str(c, "<failure xmlns='" NS_SASL "'><encryption-required/></failure>");
		log_info("auth.failure", "conn=%llu reason=encryption-required", cid(c));
		metrics_auth(&c->w->metrics, NULL, false);
		return true;
	}
	a = calloc(1, sizeof(*a));
	if (!a) {
		c2s_stream_error(c, "internal-server-error", NULL);
		return false;
	}
	c->auth = a;
	snprintf(a->mech, sizeof(a->mech), "%s", mech ? mech : "-");
	if (!mech || strlen(mech) >= sizeof(a->mech) || !c2s_mech_offered(c, mech)) {
		c2s_sasl_failure(c, "invalid-mechanism", NULL);
		goto out;
	}
	data = c2s_sasl_decode(c, el, &len, &empty);
	if (!data)
		goto out;
	if (empty) {
		/* RFC 6120 6.4.2: no initial response, so ask for one. */
		free(data);
		a->awaiting_initial = true;
		conn_send_str(c, "<challenge xmlns='" NS_SASL "'/>");
		c->state = C2S_SASL;
		goto out;
	}
	c2s_sasl_begin(c, data, len);
out:
	arena_reset(&c->w->tmp);
	return true;
}

static bool c2s_sasl_response(struct conn *c, struct xml_node *el)
{
	struct c2s_auth *a = c->auth;
	bool empty, restart = false;
	char *data;
	size_t len;

	data = c2s_sasl_decode(c, el, &len, &empty);
	arena_reset(&c->w->tmp);
	if (!data)
		return true;
	if (a->awaiting_initial) {
		a->awaiting_initial = false;
		c2s_sasl_begin(c, data, len);
		return true;
	}
	restart = c2s_sasl_run_step(c, data, len);
	explicit_bzero(data, len);
	free(data);
	if (restart)
		c->restart_pending = true;
	return true;
}

static bool c2s_sasl_abort(struct conn *c, struct xml_node *el)
{
	c2s_sasl_failure(c, "aborted", NULL);
	return true;
}

/* ---- Pre-authentication iq: in-band registration only ---- */

static bool c2s_preauth_iq(struct conn *c, struct xml_node *el)
{
	const char *bad = stanza_validate(el);
	struct iq_request rq = {
		.w = c->w,
		.conn = c,
		.iq = el,
		.payload = xml_first_element(el),
		.scope = IQ_SCOPE_PREAUTH,
	};

	/* RFC 6120 4.9.3.12 would allow not-authorized; answer iqs politely instead. */
	xml_attr_set(&c->w->tmp, el, "from", NULL);
	xml_attr_set(&c->w->tmp, el, "to", NULL);
	if (bad) {
		router_bounce(c, el, bad);
		return true;
	}
	if (!rq.payload)
		return true;
	iq_dispatch(&rq);
	return true;
}

/* ---- Resource binding (RFC 6120 section 7) ---- */

static void c2s_iq_error(struct conn *c, struct xml_node *iq, const char *condition)
{
	router_bounce(c, iq, condition);
}

/* A random resource: 8 random bytes in hex, unique enough not to clash. */
static void c2s_random_resource(char *out, size_t size)
{
	unsigned char r[8];

	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		memset(r, 0, sizeof(r));
	snprintf(out, size, "stanzad-%02x%02x%02x%02x%02x%02x%02x%02x", r[0], r[1], r[2], r[3],
		 r[4], r[5], r[6], r[7]);
}

/* Replaces an older session with the same full JID (its stream gets conflict). */
static void c2s_replace_session(struct conn *c, struct session *old)
{
	struct conn *oc = old->conn;

	if (!oc) {
		/* Detached (stream management): there is no stream to close. */
		log_info("session.replaced", "conn=0 jid=%s by_conn=%llu", old->jid, cid(c));
		c2s_session_end(c->w, old);
		return;
	}
	log_info("session.replaced", "conn=%llu jid=%s by_conn=%llu", cid(oc), old->jid, cid(c));
	oc->close_reason = CONN_CLOSE_REPLACED;
	c2s_stream_error(oc, "conflict", "replaced by a new session with the same resource");
	/* c2s_closing() took it out of the directory. */
}

void c2s_replaced_elsewhere(struct worker *w, const char *full, const char *by)
{
	struct session *s = sessdir_find_full(w->sessions, full, strlen(full));
	struct conn *oc;

	if (!s || s->remote || s->ending)
		return;
	oc = s->conn;
	log_info("session.replaced", "conn=%llu jid=%s by_node=%s", oc ? cid(oc) : 0ULL, s->jid, by);
	if (!oc) {
		c2s_session_end(w, s);	/* detached (stream management) */
		return;
	}
	oc->close_reason = CONN_CLOSE_REPLACED;
	c2s_stream_error(oc, "conflict", "replaced by a new session with the same resource");
}

/*
 * The account's sessions counted against max_resources: here, and in
 * cluster mode on the other nodes too (their replica; a resource bound
 * there is replaced, not added, when `full` names it).
 */
static size_t c2s_account_sessions(struct conn *c, const char *full, size_t bare_len)
{
	size_t n = sessdir_count_bare(c->w->sessions, c->jid, bare_len), nres = 0;
	struct cluster_res *res;
	bool replaces = false;

	if (!cluster_enabled())
		return n;
	res = cluster_resources(c->jid, bare_len, &nres);
	for (size_t i = 0; i < nres; i++)
		replaces |= strcmp(res[i].full, full) == 0;
	free(res);
	return replaces ? 0 : n + nres;	/* a replacement is within the limit, as here */
}

struct session *c2s_bind_resource(struct conn *c, const char *full, struct account *loaded,
				  const char **errp)
{
	struct sessdir *dir = c->w->sessions;
	size_t bare_len = strlen(c->jid);
	struct session *old, *s;
	const char *err = NULL;

	c->state = C2S_BIND;
	old = sessdir_find_full(dir, full, strlen(full));
	if (!old && c2s_account_sessions(c, full, bare_len) >= cfg_of(c)->max_resources)
		err = "resource-constraint";
	s = err ? NULL : session_new(c, full, bare_len);
	if (!err && !s)
		err = "internal-server-error";
	if (!err) {
		/*
		 * The replaced session may be the account's last: keep the
		 * state it holds, or it would go with its directory entry.
		 */
		if (old) {
			if (!loaded)
				loaded = session_take_account(old);
			c2s_replace_session(c, old);
		}
		if (sessdir_add(dir, s) < 0) {
			session_free(s);
			err = "internal-server-error";
		}
	}
	if (err) {
		account_free(loaded);
		*errp = err;
		return NULL;
	}
	session_install_account(s, loaded);
	c->sess = s;
	c->state = C2S_READY;
	log_info("session.bind", "conn=%llu jid=%s", cid(c), s->jid);
	cluster_session_update(c->w, s);	/* the cluster's registry (cluster.c) */
	/* From now on the deadline watches idleness. */
	if (cfg_of(c)->idle_timeout)
		conn_set_deadline(c, (uint64_t)cfg_of(c)->idle_timeout * 1000);
	else
		loop_timer_cancel(&c->timer);
	return s;
}

/*
 * Finishes binding once the account's state is in memory (loaded now, or
 * NULL when another session of the account has it already) and answers
 * the bind request.
 */
static void c2s_finish_bind(struct conn *c, struct account *loaded)
{
	struct c2s_bind *pb = c->bind;
	struct strbuf *b = &c->w->scratch;
	const char *err = NULL;
	struct session *s;

	c->bind = NULL;
	s = c2s_bind_resource(c, pb->full, loaded, &err);
	strbuf_clear(b);
	strbuf_puts(b, "<iq type='");
	strbuf_puts(b, s ? "result" : "error");
	strbuf_puts(b, "' id='");
	strbuf_append_xml_escaped(b, pb->id, strlen(pb->id));
	if (s) {
		strbuf_puts(b, "'><bind xmlns='" NS_BIND "'><jid>");
		strbuf_append_xml_escaped(b, s->jid, s->jid_len);
		strbuf_puts(b, "</jid></bind></iq>");
	} else {
		strbuf_printf(b, "'><bind xmlns='" NS_BIND "'/><error type='%s'><%s xmlns='"
			      NS_STANZAS "'/></error></iq>", stanza_error_type(err), err);
	}
	conn_send(c, b->data, b->len);
	strbuf_clear(b);
	free(pb);
}

/* ---- SASL2 (sasl2.c) moves through these states ---- */

void c2s_sasl2_waiting(struct conn *c)
{
	c->state = C2S_SASL_LOOKUP;
	conn_pause_input(c);
}

void c2s_sasl2_challenged(struct conn *c)
{
	c->state = C2S_SASL2;
}

void c2s_sasl2_finished(struct conn *c, bool resumed)
{
	/* XEP-0198 section 7: a stream resumed inline gets no features. */
	if (resumed)
		c->state = C2S_READY;
	else
		c2s_send_features(c);
}

/*
 * Stream management resumed session s on c (sm.c checked the request and
 * took s from its old stream): c is ready, as after a bind.
 */
void c2s_resume_session(struct conn *c, struct session *s)
{
	c->sess = s;
	s->conn = c;
	c->state = C2S_READY;
	if (cfg_of(c)->idle_timeout)
		conn_set_deadline(c, (uint64_t)cfg_of(c)->idle_timeout * 1000);
	else
		loop_timer_cancel(&c->timer);
}

/* The account's state arrived from storage. */
static void c2s_bind_loaded(struct conn *c, struct account *loaded, int err)
{
	struct c2s_bind *pb = c->bind;
	struct strbuf *b = &c->w->scratch;

	if (!pb) {
		account_free(loaded);
		return;
	}
	if (err < 0) {
		c->bind = NULL;
		c->state = C2S_BIND;
		strbuf_clear(b);
		strbuf_puts(b, "<iq type='error' id='");
		strbuf_append_xml_escaped(b, pb->id, strlen(pb->id));
		strbuf_puts(b, "'><bind xmlns='" NS_BIND "'/><error type='wait'><resource-constraint "
			       "xmlns='" NS_STANZAS "'/></error></iq>");
		conn_send(c, b->data, b->len);
		strbuf_clear(b);
		free(pb);
	} else {
		c2s_finish_bind(c, loaded);
	}
	if (!c->closing)
		conn_resume_input(c);
}

static void c2s_do_bind(struct conn *c, struct xml_node *iq, struct xml_node *bind)
{
	struct xml_node *res_el = xml_child(bind, NS_BIND, "resource");
	const char *res_text = res_el ? xml_text(&c->w->tmp, res_el) : NULL;
	const char *id = xml_attr_get(iq, "id");
	char resource[JID_PART_MAX + 1];
	size_t bare_len = strlen(c->jid);
	struct c2s_bind *pb;

	if (res_text && res_text[0]) {
		if (jid_prep_resource(resource, sizeof(resource), res_text, strlen(res_text)) < 0) {
			c2s_iq_error(c, iq, "bad-request");
			return;
		}
	} else {
		c2s_random_resource(resource, sizeof(resource));
	}
	if (strlen(id) > C2S_ID_MAX) {
		c2s_iq_error(c, iq, "bad-request");
		return;
	}
	pb = calloc(1, sizeof(*pb));
	if (!pb) {
		c2s_iq_error(c, iq, "internal-server-error");
		return;
	}
	snprintf(pb->id, sizeof(pb->id), "%s", id);
	snprintf(pb->full, sizeof(pb->full), "%s/%s", c->jid, resource);
	c->bind = pb;
	/* Another session of the account has its state in memory already. */
	if (sessdir_find_account(c->w->sessions, c->jid, bare_len)) {
		c2s_finish_bind(c, NULL);
		return;
	}
	char user[JID_PART_MAX + 1];

	snprintf(user, sizeof(user), "%.*s", (int)(strchr(c->jid, '@') - c->jid), c->jid);
	if (account_load_submit(c, user, c2s_bind_loaded) < 0) {
		c->bind = NULL;
		free(pb);
		c2s_iq_error(c, iq, "internal-server-error");
		return;
	}
	c->state = C2S_BIND_LOADING;
	conn_pause_input(c);
}

static bool c2s_bind_iq(struct conn *c, struct xml_node *iq)
{
	const char *bad = stanza_validate(iq);
	const char *type = stanza_type(iq);
	struct xml_node *payload = xml_first_element(iq);

	if (bad) {
		c2s_iq_error(c, iq, bad);
	} else if (payload && strcmp(type, "set") == 0 && strcmp(payload->ns, NS_BIND) == 0 &&
		   strcmp(payload->name, "bind") == 0) {
		c2s_do_bind(c, iq, payload);
	} else if (payload && strcmp(payload->ns, NS_SESSION) == 0) {
		/* Legacy session establishment, accepted at any point. */
		struct xml_node *r = stanza_iq_result(&c->w->tmp, iq, NULL);

		if (r)
			conn_send_node(c, r);
	} else {
		c2s_stream_error(c, "not-authorized", "bind a resource first");
	}
	arena_reset(&c->w->tmp);
	return true;
}

/* ---- Ready: validate, stamp and route (RFC 6120 section 8) ---- */

/* Presence with no 'to' updates the session's availability. */
static void c2s_presence_broadcast(struct conn *c, struct xml_node *st, const struct jid *from)
{
	const char *type = stanza_type(st);
	bool unavailable = strcmp(type, "unavailable") == 0;

	if (type[0] && !unavailable)
		return;	/* subscriptions and probes need an address */
	last_activity_note_presence(c, st);	/* XEP-0012: the status at logout */
	presence_broadcast(c, st);	/* RFC 6121 4.2-4.5 (presence.c) */
	pep_presence(c, st);		/* XEP-0163: +notify caps, last items (pep.c) */
}

static bool c2s_ready_stanza(struct conn *c, struct xml_node *st)
{
	struct session *s = c->sess;
	const char *bad = stanza_validate(st);
	const char *from_attr = xml_attr_get(st, "from");
	const char *to_attr = xml_attr_get(st, "to");
	uint64_t mark = durable_mark(c);	/* what the storage queue had before this stanza */
	struct mam_stamp ms;
	struct jid from, to;

	sm_inbound(c);	/* XEP-0198: handled from here on, whatever the outcome */
	/* RFC 6120 8.1.2.1: 'from' may only be the session's full or bare JID. */
	if (from_attr && strcmp(from_attr, s->jid) != 0 &&
	    (strlen(from_attr) != s->bare_len || memcmp(from_attr, s->jid, s->bare_len) != 0)) {
		struct jid fj;

		if (jid_parse(&fj, from_attr, strlen(from_attr)) < 0 ||
		    (strcmp(fj.buf, s->jid) != 0 &&
		     (fj.len != s->bare_len || memcmp(fj.buf, s->jid, s->bare_len) != 0))) {
			c2s_stream_error(c, "invalid-from", NULL);
			return false;
		}
	}
	jid_parse(&from, s->jid, s->jid_len);
	if (xml_attr_set(&c->w->tmp, st, "from", s->jid) < 0) {
		c2s_stream_error(c, "internal-server-error", NULL);
		return false;
	}
	if (bad) {
		router_bounce(c, st, bad);
		goto out;
	}
	if (to_attr) {
		if (jid_parse(&to, to_attr, strlen(to_attr)) < 0) {
			router_bounce(c, st, "jid-malformed");
			goto out;
		}
		/* Route with the normalized address. */
		xml_attr_set(&c->w->tmp, st, "to", to.buf);
		if (blocking_outbound(c, st, &to))	/* XEP-0191 (blocking.c) */
			goto out;
		mam_outbound(&ms, c, st, &from, &to);	/* XEP-0313: archive, stamp for carbons */
		carbons_sent(c, st, &to);		/* XEP-0280 (carbons.c) */
		mam_stamp_end(&ms);
		if (stanza_kind(st) == STANZA_PRESENCE) {
			presence_outbound(c, st, &from, &to);	/* presence.c */
		} else {
			/* XEP-0324: a thing's table entry is here, at its home (provisioning.c). */
			provisioning_outbound(c->w, st, &from, &to);
			router_route(c, st, &from, &to);
		}
	} else if (stanza_kind(st) == STANZA_PRESENCE) {
		c2s_presence_broadcast(c, st, &from);
	} else if (stanza_kind(st) == STANZA_IQ && xml_child(st, NS_BIND, "bind")) {
		/* One resource per stream (RFC 6120 7.7.2.3 allows refusing more). */
		router_bounce(c, st, "not-allowed");
	} else if (stanza_kind(st) == STANZA_IQ && xml_child(st, NS_SESSION, "session")) {
		struct xml_node *r = stanza_iq_result(&c->w->tmp, st, NULL);

		if (r) {
			xml_attr_set(&c->w->tmp, r, "to", NULL);
			conn_send_node(c, r);
		}
	} else {
		router_route(c, st, &from, NULL);
	}
out:
	metrics_stanza_routed(c, stanza_kind(st));	/* count and routing latency (metrics.h) */
	/* Writes this stanza caused commit before stream management acks it (durable.c). */
	durable_settle(c, mark);
	arena_reset(&c->w->tmp);
	/* homes = loop: what this stanza forwarded to us is routed before the next one. */
	router_forwards_settle(c->w);
	return true;
}
