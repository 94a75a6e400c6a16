/* SPDX-License-Identifier: MIT */
/*
 * Federation: the parts every server and component stream shares (setup,
 * stream headers and errors, dispatch of connection events by kind,
 * address checks on inbound stanzas), the link table and routing to other
 * domains, and the small pure helpers (dialback keys, the component
 * handshake, the host table syntax).
 *
 * Links live in a per-worker list: a server talks to few other domains,
 * so a scan costs less than a hash table would, and the lookup only runs
 * for stanzas to other domains.
 */
#include <ctype.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/sha.h>

#include "config.h"
#include "log.h"
#include "router.h"
#include "s2s_internal.h"
#include "server.h"
#include "service.h"
#include "stanza.h"
#include "worker.h"

struct s2s_server *s2s_srv(const struct worker *w)
{
	return w->srv->s2s;
}

bool s2s_listener_kind(int kind)
{
	return kind == LISTENER_S2S || kind == LISTENER_S2S_TLS || kind == LISTENER_COMPONENT;
}

/* ---- Pure helpers ---- */

int s2s_dialback_key(const unsigned char *secret, size_t secret_len, const char *receiving,
		     const char *originating, const char *stream_id, char out[65])
{
	unsigned char digest[SHA256_DIGEST_LENGTH], mac[EVP_MAX_MD_SIZE];
	char hkey[2 * SHA256_DIGEST_LENGTH + 1];
	unsigned int mac_len = 0;
	char *msg;
	int n;

	out[0] = '\0';
	if (!receiving[0] || !originating[0] || !stream_id[0])
		return -EINVAL;
	n = asprintf(&msg, "%s %s %s", receiving, originating, stream_id);
	if (n < 0)
		return -ENOMEM;
	/* XEP-0185: the HMAC key is the SHA-256 of the secret, in hex (as its example has it). */
	SHA256(secret, secret_len, digest);
	for (unsigned i = 0; i < sizeof(digest); i++)
		snprintf(hkey + 2 * i, 3, "%02x", digest[i]);
	OPENSSL_cleanse(digest, sizeof(digest));
	if (!HMAC(EVP_sha256(), hkey, 2 * SHA256_DIGEST_LENGTH, (unsigned char *)msg, (size_t)n, mac,
		  &mac_len) || mac_len != 32) {
		free(msg);
		OPENSSL_cleanse(hkey, sizeof(hkey));
		return -EINVAL;
	}
	for (unsigned i = 0; i < mac_len; i++)
		snprintf(out + 2 * i, 3, "%02x", mac[i]);
	free(msg);
	OPENSSL_cleanse(hkey, sizeof(hkey));
	return 0;
}

/*
 * XEP-0114 section 3: SHA-1 over the stream id followed by the secret.
 * The length is checked first (a wrong length is not a timing secret);
 * the comparison of the hex digests is constant-time, and the lowercase
 * copy lets a component send uppercase hex as some libraries do.
 */
bool s2s_component_handshake_ok(const char *stream_id, const char *secret, const char *given)
{
	unsigned char digest[SHA_DIGEST_LENGTH];
	char want[2 * SHA_DIGEST_LENGTH + 1], low[2 * SHA_DIGEST_LENGTH + 1];
	size_t n = strlen(given), ls = strlen(stream_id), lk = strlen(secret);
	EVP_MD_CTX *md;
	bool ok;

	if (n != 2 * SHA_DIGEST_LENGTH)
		return false;
	md = EVP_MD_CTX_new();
	if (!md)
		return false;
	ok = EVP_DigestInit_ex(md, EVP_sha1(), NULL) == 1 &&
	     EVP_DigestUpdate(md, stream_id, ls) == 1 && EVP_DigestUpdate(md, secret, lk) == 1 &&
	     EVP_DigestFinal_ex(md, digest, NULL) == 1;
	EVP_MD_CTX_free(md);
	if (!ok)
		return false;
	for (unsigned i = 0; i < SHA_DIGEST_LENGTH; i++)
		snprintf(want + 2 * i, 3, "%02x", digest[i]);
	for (size_t i = 0; i < n; i++)
		low[i] = (char)tolower((unsigned char)given[i]);
	low[n] = '\0';
	ok = CRYPTO_memcmp(want, low, n) == 0;
	OPENSSL_cleanse(want, sizeof(want));
	OPENSSL_cleanse(digest, sizeof(digest));
	return ok;
}

/* ---- Process setup ---- */

int s2s_server_init(struct server *srv)
{
	const struct config *cfg = srv->cfg;
	const char *cert = config_cert_path(cfg), *key;
	char cert_path[4096];
	struct s2s_server *ss;
	unsigned char rnd[32];

	snprintf(cert_path, sizeof(cert_path), "%s", cert);
	key = config_key_path(cfg);
	ss = calloc(1, sizeof(*ss));
	if (!ss)
		return -ENOMEM;
	srv->s2s = ss;
	s2s_auth_parse(cfg->s2s_auth, &ss->verified_only);
	for (unsigned i = 0; i < cfg->s2s_host.n; i++) {
		struct s2s_host *h = &ss->hosts[ss->nhosts];

		if (s2s_host_parse(cfg->s2s_host.v[i], h->domain, sizeof(h->domain), &h->addr.ss,
				   &h->addr.len, &h->addr.direct_tls) == 0)
			ss->nhosts++;
	}
	for (unsigned i = 0; i < cfg->component.n; i++) {
		struct s2s_component *cp = &ss->comps[ss->ncomps];

		if (s2s_component_parse(cfg->component.v[i], cp->domain, sizeof(cp->domain),
					&cp->secret) == 0)
			ss->ncomps++;
	}
	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd)) {
		fprintf(stderr, "stanzad: no randomness for the dialback secret\n");
		return -EIO;
	}
	SHA256(rnd, sizeof(rnd), ss->db_secret);
	OPENSSL_cleanse(rnd, sizeof(rnd));

	ss->tls_in = tls_s2s_context_new(cert_path, key, cfg->s2s_ca, false, NULL);
	ss->tls_in_direct = ss->tls_in ? tls_s2s_context_new(cert_path, key, cfg->s2s_ca, false,
							     "xmpp-server") : NULL;
	ss->tls_out = ss->tls_in_direct ? tls_s2s_context_new(cert_path, key, cfg->s2s_ca, true,
								NULL) : NULL;
	if (!ss->tls_out) {
		fprintf(stderr, "stanzad: cannot set up TLS for federation (certificate %s, "
			"s2s_ca %s): see the log line above\n", cert_path,
			cfg->s2s_ca ? cfg->s2s_ca : "system store");
		return -EINVAL;
	}
	ss->resolver = s2s_resolver_start();
	if (!ss->resolver) {
		fprintf(stderr, "stanzad: cannot start the resolver thread: %s\n", strerror(errno));
		return -errno;
	}
	char in[256] = "", comp[256] = "";

	for (unsigned i = 0; i < srv->nlisteners; i++) {
		const struct listener *li = &srv->listeners[i];
		char *dst = li->kind == LISTENER_COMPONENT ? comp : in;

		if (!s2s_listener_kind(li->kind))
			continue;
		snprintf(dst + strlen(dst), sizeof(in) - strlen(dst), "%s%s%s", dst[0] ? "," : "",
			 li->kind == LISTENER_S2S_TLS ? "tls:" : "", li->addr);
	}
	log_info("s2s.start", "federation=%s listeners=%s components=%s auth=%s hosts=%u "
		 "configured_components=%u ca=%s", cfg->s2s ? "on" : "off", in[0] ? in : "off",
		 comp[0] ? comp : "off", ss->verified_only ? "verified" : "dialback", ss->nhosts,
		 ss->ncomps, cfg->s2s_ca ? cfg->s2s_ca : "system");
	return 0;
}

/*
 * The resolver posts completions into worker inboxes: it must stop before
 * the workers drain and destroy them (main.c).
 */
void s2s_server_stop(struct server *srv)
{
	if (srv->s2s) {
		s2s_resolver_stop(srv->s2s->resolver);
		srv->s2s->resolver = NULL;
	}
}

/* After the workers: the contexts may still be referenced by connections until then. */
void s2s_server_free(struct server *srv)
{
	struct s2s_server *ss = srv->s2s;

	if (!ss)
		return;
	s2s_resolver_stop(ss->resolver);
	tls_server_free(ss->tls_in);
	tls_server_free(ss->tls_in_direct);
	tls_server_free(ss->tls_out);
	OPENSSL_cleanse(ss, sizeof(*ss));
	free(ss);
	srv->s2s = NULL;
}

/* ---- Streams: headers, errors, namespaces ---- */

void s2s_new_stream_id(struct conn *c)
{
	static const char alphabet[] = "abcdefghijklmnopqrstuvwxyz0123456789";
	unsigned char rnd[sizeof(c->stream_id) - 1];

	if (getrandom(rnd, sizeof(rnd), 0) != (ssize_t)sizeof(rnd))
		memset(rnd, 0, sizeof(rnd));
	for (size_t i = 0; i < sizeof(rnd); i++)
		c->stream_id[i] = alphabet[rnd[i] % (sizeof(alphabet) - 1)];
	c->stream_id[sizeof(rnd)] = '\0';
}

/*
 * Our stream header. Server streams declare the dialback prefix (db:),
 * which older peers look for instead of the stream feature. Only the
 * receiving side sends an id; XEP-0114 headers carry no version.
 */
void s2s_send_header(struct conn *c, const char *ns, const char *from, const char *to,
		     bool version)
{
	struct strbuf *b = &c->w->scratch;

	strbuf_clear(b);
	strbuf_puts(b, "<?xml version='1.0'?><stream:stream xmlns='");
	strbuf_puts(b, ns);
	strbuf_puts(b, "' xmlns:stream='" XML_NS_STREAM "'");
	if (strcmp(ns, XML_NS_SERVER) == 0)
		strbuf_puts(b, " xmlns:db='" NS_DIALBACK "'");
	/* The responding side names the stream (RFC 6120 4.7.3). */
	if (c->kind != CONN_S2S_OUT) {
		s2s_new_stream_id(c);
		strbuf_puts(b, " id='");
		strbuf_puts(b, c->stream_id);
		strbuf_puts(b, "'");
	}
	if (from) {
		strbuf_puts(b, " from='");
		strbuf_append_xml_escaped(b, from, strlen(from));
		strbuf_puts(b, "'");
	}
	if (to) {
		strbuf_puts(b, " to='");
		strbuf_append_xml_escaped(b, to, strlen(to));
		strbuf_puts(b, "'");
	}
	if (version)
		strbuf_puts(b, " version='1.0'");
	strbuf_puts(b, ">");
	conn_send(c, b->data, b->len);
	strbuf_clear(b);
	c->header_sent = true;
}

static const char *s2s_kind_name(const struct conn *c)
{
	return c->kind == CONN_S2S_IN ? "s2s-in" : c->kind == CONN_S2S_OUT ? "s2s-out" : "component";
}

/*
 * RFC 6120 4.9: for every stream kind here. Our outbound streams always
 * sent their header before anything can fail at the XML level, except
 * during Direct TLS, where there is no stream yet: then we just close.
 */
void s2s_stream_error(struct conn *c, const char *condition, const char *text)
{
	struct strbuf *b = &c->w->scratch;
	struct s2s_conn *sc = c->s2s;
	const char *local = sc && sc->local ? sc->local : c->w->srv->cfg->domain;

	if (c->closing)
		return;
	/* RFC 6120 4.9.1.2: an error before our header still opens the stream. */
	if (!c->header_sent) {
		if (c->kind == CONN_S2S_IN)
			s2s_send_header(c, XML_NS_SERVER, local, sc ? sc->remote : NULL, true);
		else if (c->kind == CONN_COMPONENT)
			s2s_send_header(c, NS_COMPONENT, local, NULL, false);
	}
	if (c->header_sent) {
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
	}
	log_info("stream.error", "conn=%llu kind=%s condition=%s peer_domain=%s",
		 (unsigned long long)c->id, s2s_kind_name(c), condition,
		 sc && sc->remote ? sc->remote : "-");
	conn_close(c, c->close_reason ? c->close_reason : CONN_CLOSE_ERROR);
}

/* The peer's </stream:stream> or close_notify: answer in kind, then close. */
void s2s_stream_closed_by_peer(struct conn *c)
{
	if (c->closing)
		return;
	log_debug("stream.closed_by_peer", "conn=%llu kind=%s", (unsigned long long)c->id,
		  s2s_kind_name(c));
	if (c->header_sent)
		conn_send_str(c, "</stream:stream>");
	conn_close(c, CONN_CLOSE_PEER);
}

void s2s_ns_to_client(struct xml_node *n, const char *stream_ns)
{
	/*
	 * Internally every stanza is in jabber:client (the router, filters
	 * and features compare against it); on the wire the serializer
	 * writes no xmlns for it, so the peer's stream default applies.
	 */
	if (n->name && strcmp(n->ns, stream_ns) == 0)
		n->ns = XML_NS_CLIENT;
	for (struct xml_node *ch = n->children; ch; ch = ch->next)
		if (ch->name)
			s2s_ns_to_client(ch, stream_ns);
}

/* ---- Connection events, by kind ---- */

void s2s_accepted(struct conn *c, int listener_kind)
{
	if (listener_kind == LISTENER_COMPONENT)
		component_accepted(c);
	else
		s2s_in_accepted(c, listener_kind == LISTENER_S2S_TLS);
}

void s2s_connected(struct conn *c, int res)
{
	if (c->kind == CONN_S2S_OUT)
		s2s_out_connected(c, res);
}

void s2s_tls_established(struct conn *c)
{
	c->secure = true;
	log_info("tls.established", "conn=%llu kind=%s version=%s cipher=%s mode=%s",
		 (unsigned long long)c->id, s2s_kind_name(c), tls_conn_version(c->tls),
		 tls_conn_cipher(c->tls), conn_tls_mode_name(c));
	if (c->kind == CONN_S2S_OUT)
		s2s_out_tls_established(c);
	else if (c->kind == CONN_S2S_IN)
		s2s_in_tls_established(c);
}

void s2s_closing(struct conn *c)
{
	if (c->kind == CONN_S2S_OUT)
		s2s_out_closing(c);
	else if (c->kind == CONN_S2S_IN)
		s2s_in_closing(c);
	else
		component_closing(c);
}

void s2s_deadline(struct conn *c)
{
	if (c->kind == CONN_S2S_OUT)
		s2s_out_deadline(c);
	else if (c->kind == CONN_S2S_IN)
		s2s_in_deadline(c);
	else
		component_deadline(c);
}

void s2s_output_drained(struct conn *c)
{
	if (c->kind == CONN_S2S_OUT)
		s2s_out_drained(c);
}

/*
 * Frees conn->s2s. Normally s2s_closing() ran first and detached the
 * link; at worker teardown connections are freed without closing, so the
 * link pointer is cleared here too (the link itself goes with the worker).
 */
void s2s_conn_free(struct conn *c)
{
	struct s2s_conn *sc = c->s2s;

	if (!sc)
		return;
	/* Worker teardown frees connections without closing them: let go of the link. */
	if (sc->link && sc->link->conn == c)
		sc->link->conn = NULL;
	for (unsigned i = 0; i < sc->npairs; i++) {
		free(sc->pairs[i].remote);
		free(sc->pairs[i].local);
	}
	free(sc->local);
	free(sc->remote);
	free(sc);
	c->s2s = NULL;
}

/*
 * conn_start_tls() calls this for our kinds: inbound streams are the TLS
 * server (Direct TLS port: ALPN xmpp-server required when offered), our
 * links the client, whose ClientHello goes out at once (it speaks first).
 */
struct tls_conn *s2s_tls_conn_new(struct conn *c, tls_sink_fn sink)
{
	struct s2s_server *ss = s2s_srv(c->w);
	struct tls_conn *t;

	if (c->kind == CONN_S2S_OUT) {
		/* Direct TLS names its protocol (XEP-0368); STARTTLS needs no ALPN. */
		t = tls_conn_new_client(ss->tls_out, c->s2s->remote,
					c->direct_tls ? "xmpp-server" : NULL, sink, c);
		if (t && tls_conn_start_handshake(t) < 0) {
			tls_conn_free(t);
			errno = EPROTO;
			return NULL;
		}
		return t;
	}
	return tls_conn_new(c->direct_tls ? ss->tls_in_direct : ss->tls_in, sink, c);
}

/* Worker teardown: links go without bouncing (the sessions are gone already). */
void s2s_worker_destroy(struct worker *w)
{
	struct s2s_worker *sw = w->s2s;

	if (!sw)
		return;
	while (sw->links) {
		struct s2s_link *l = sw->links;

		s2s_link_free(l, NULL);
	}
	free(sw);
	w->s2s = NULL;
}

/* ---- Local domains ---- */

bool s2s_domain_is_local(const struct worker *w, const char *domain, size_t len)
{
	const struct config *cfg = w->srv->cfg;
	struct jid j;

	if (len == strlen(cfg->domain) && memcmp(domain, cfg->domain, len) == 0)
		return true;
	if (w->srv->s2s && component_find(w->srv->s2s, domain, len))
		return true;
	if (len >= sizeof(j.buf))
		return false;
	/* service_for() takes a JID: a bare domain JID is just the domain. */
	memcpy(j.buf, domain, len);
	j.buf[len] = '\0';
	j.len = len;
	j.local_len = 0;
	j.domain_off = 0;
	j.domain_len = len;
	j.res_off = len;
	j.res_len = 0;
	return service_for(cfg, &j) != NULL;
}

bool s2s_domain_is_component(const struct worker *w, const char *domain, size_t len)
{
	return w->srv->s2s && component_find(w->srv->s2s, domain, len);
}

bool s2s_is_local_str(const struct worker *w, const char *domain)
{
	return s2s_domain_is_local(w, domain, strlen(domain));
}

/* ---- Inbound stanzas ---- */

bool s2s_inbound_stanza(struct conn *c, struct xml_node *st,
			bool (*peer_ok)(struct conn *c, const struct jid *from), bool any_to)
{
	struct worker *w = c->w;
	const char *from_attr = xml_attr_get(st, "from");
	const char *to_attr = xml_attr_get(st, "to");
	const char *stream_ns = st->ns;
	const char *bad;
	struct jid from, to;

	/* RFC 6120 4.9.3.10: between servers both addresses are required and valid. */
	if (!from_attr || !to_attr || jid_parse(&from, from_attr, strlen(from_attr)) < 0 ||
	    jid_parse(&to, to_attr, strlen(to_attr)) < 0) {
		s2s_stream_error(c, "improper-addressing", NULL);
		return false;
	}
	/* 4.9.3.9: the 'from' domain must be one this stream proved. */
	if (!peer_ok(c, &from)) {
		s2s_stream_error(c, "invalid-from", NULL);
		return false;
	}
	/* 4.9.3.6: we route for our own domains only (no relaying). */
	if (!any_to && !s2s_domain_is_local(w, to.buf + to.domain_off, to.domain_len)) {
		s2s_stream_error(c, "host-unknown", "not a domain of this server");
		return false;
	}
	s2s_ns_to_client(st, stream_ns);
	if (xml_attr_set(&w->tmp, st, "from", from.buf) < 0 ||
	    xml_attr_set(&w->tmp, st, "to", to.buf) < 0) {
		arena_reset(&w->tmp);
		return true;
	}
	bad = stanza_validate(st);
	if (bad)
		router_bounce_w(w, NULL, st, bad);	/* back over the link to the sender */
	else
		router_route_w(w, NULL, st, &from, &to);
	arena_reset(&w->tmp);
	return true;
}

/* ---- Links and routing ---- */

struct s2s_link *s2s_link_find(struct worker *w, const char *local, const char *remote)
{
	if (!w->s2s)
		return NULL;
	for (struct s2s_link *l = w->s2s->links; l; l = l->next)
		if (strcmp(l->remote, remote) == 0 && strcmp(l->local, local) == 0)
			return l;
	return NULL;
}

/* A new link (not started: the caller queues first, then starts it). */
struct s2s_link *s2s_link_get(struct worker *w, const char *local, const char *remote)
{
	struct s2s_link *l = s2s_link_find(w, local, remote);

	if (l)
		return l;
	if (!w->s2s) {
		w->s2s = calloc(1, sizeof(*w->s2s));
		if (!w->s2s)
			return NULL;
	}
	l = calloc(1, sizeof(*l));
	if (!l)
		return NULL;
	l->w = w;
	l->local = strdup(local);
	l->remote = strdup(remote);
	if (!l->local || !l->remote) {
		free(l->local);
		free(l->remote);
		free(l);
		return NULL;
	}
	l->state = S2S_LINK_RESOLVING;
	l->next_addr = (unsigned)-1;	/* not started */
	l->next = w->s2s->links;
	w->s2s->links = l;
	w->s2s->nlinks++;
	return l;
}

static bool s2s_link_fresh(const struct s2s_link *l)
{
	return l->next_addr == (unsigned)-1 && !l->dns;
}

/* The domainpart of a normalized JID string (after '@', before '/'). */
static const char *s2s_jid_domain(const char *jid, size_t len, size_t *dlen)
{
	const char *at = memchr(jid, '@', len), *slash;
	const char *d = at ? at + 1 : jid;

	slash = memchr(d, '/', len - (size_t)(d - jid));
	*dlen = slash ? (size_t)(slash - d) : len - (size_t)(d - jid);
	return d;
}

/* Subscription requests and answers (RFC 6121 3): bounced like other stanzas. */
bool s2s_presence_bounces(const struct xml_node *st)
{
	const char *type = stanza_type(st);

	return strcmp(type, "subscribe") == 0 || strcmp(type, "subscribed") == 0 ||
	       strcmp(type, "unsubscribe") == 0 || strcmp(type, "unsubscribed") == 0;
}

/*
 * Serializes the stanza once into the worker's scratch buffer and hands
 * the bytes to the link: straight out when it is ready, into its queue
 * otherwise. The link is started only after the first stanza is queued,
 * because a start can fail at once and bounce the queue, which needs the
 * scratch buffer for the errors.
 */
void s2s_route(struct worker *w, struct conn *src, struct xml_node *st, const struct jid *from,
	       const struct jid *to)
{
	struct s2s_server *ss = s2s_srv(w);
	struct s2s_component *comp;
	struct strbuf *b = &w->scratch;
	char local[JID_PART_MAX + 1], remote[JID_PART_MAX + 1];
	struct s2s_link *l;
	int ret;

	comp = ss ? component_find(ss, to->buf + to->domain_off, to->domain_len) : NULL;
	if (comp) {
		component_route(w, src, comp, st);
		return;
	}
	if (!ss || !w->srv->cfg->s2s) {
		if (stanza_kind(st) != STANZA_PRESENCE || s2s_presence_bounces(st))
			router_bounce_w(w, src, st, "remote-server-not-found");
		return;
	}
	/* Only what a local domain sends leaves here: never relay for others. */
	if (!s2s_domain_is_local(w, from->buf + from->domain_off, from->domain_len)) {
		log_debug("s2s.relay_refused", "from_domain=%.*s", (int)from->domain_len,
			  from->buf + from->domain_off);
		return;
	}
	snprintf(local, sizeof(local), "%.*s", (int)from->domain_len, from->buf + from->domain_off);
	snprintf(remote, sizeof(remote), "%.*s", (int)to->domain_len, to->buf + to->domain_off);
	l = s2s_link_get(w, local, remote);
	if (!l) {
		router_bounce_w(w, src, st, "internal-server-error");
		return;
	}
	strbuf_clear(b);
	xml_serialize(b, st, XML_NS_CLIENT);
	ret = b->oom ? -ENOMEM : s2s_out_send(l, b->data, b->len);
	strbuf_clear(b);
	if (ret == -ENOBUFS)
		router_bounce_w(w, src, st, "resource-constraint");
	else if (ret < 0)
		router_bounce_w(w, src, st, "internal-server-error");
	if (s2s_link_fresh(l))
		s2s_out_start(l);	/* may fail at once and bounce what it queued */
}

/*
 * Fan-out copies arrive serialized already (fanout_render): no tree, no
 * second serialization. Full queues and unreachable domains drop the
 * copy silently: presence is state, and the next broadcast replaces it.
 */
void s2s_send_prepared(struct worker *w, const char *from_domain, const char *to, size_t to_len,
		       const char *data, size_t len)
{
	struct s2s_server *ss = s2s_srv(w);
	char remote[JID_PART_MAX + 1];
	struct s2s_component *comp;
	struct s2s_link *l;
	const char *d;
	size_t dlen;

	if (!ss)
		return;
	d = s2s_jid_domain(to, to_len, &dlen);
	comp = component_find(ss, d, dlen);
	if (comp) {
		component_send_prepared(w, comp, data, len);
		return;
	}
	if (!w->srv->cfg->s2s || dlen > JID_PART_MAX)
		return;	/* presence to an unreachable domain is dropped, as before */
	snprintf(remote, sizeof(remote), "%.*s", (int)dlen, d);
	l = s2s_link_get(w, from_domain, remote);
	if (!l)
		return;
	/* A full queue drops this copy: a later broadcast supersedes it anyway. */
	s2s_out_send(l, data, len);
	if (s2s_link_fresh(l))
		s2s_out_start(l);
}
