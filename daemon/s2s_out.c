/* SPDX-License-Identifier: MIT */
/*
 * Our links to other servers (RFC 6120 as the initiating entity).
 *
 * A link is the route for one (local domain, remote domain) pair:
 *
 *   resolve (host table, or DNS on the resolver thread)
 *     -> connect to each address in turn (io_uring connect)
 *     -> Direct TLS, or header + <starttls/> + <proceed/> + TLS
 *     -> header, features: SASL EXTERNAL when offered, else dialback
 *     -> ready: the queue goes out, later stanzas go straight out
 *
 * While a link comes up its stanzas wait in a bounded queue, serialized.
 * When every address failed the queue is bounced: remote-server-timeout
 * when the last attempt ran out of time, remote-server-not-found
 * otherwise. A ready link whose connection ends is simply dropped; the
 * next stanza makes a new one. An idle link closes after
 * s2s_idle_timeout.
 *
 * The link also carries the dialback verifications this server asks for
 * as a receiving server (<db:verify/>, XEP-0220 2.1.2), sent once the
 * stream is secure, answered on the same stream.
 */
#include <errno.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "router.h"
#include "s2s_internal.h"
#include "sasl.h"
#include "server.h"
#include "stanza.h"
#include "stored_xml.h"
#include "worker.h"

#define S2S_BOUNCE_ARENA	4096

enum s2s_out_state {
	OUT_CONNECTING = 0,	/* TCP connect in flight */
	OUT_TLS,		/* Direct TLS handshake */
	OUT_HEADER,		/* our header is out: waiting for the peer's and its features */
	OUT_STARTTLS,		/* <starttls/> sent, waiting for <proceed/> */
	OUT_AUTH_SASL,		/* <auth mechanism='EXTERNAL'/> sent */
	OUT_AUTH_DB,		/* <db:result/> sent */
	OUT_READY,		/* authenticated: stanzas flow */
};

static const char *const out_state_names[] = {
	[OUT_CONNECTING] = "connecting", [OUT_TLS] = "tls", [OUT_HEADER] = "header",
	[OUT_STARTTLS] = "starttls", [OUT_AUTH_SASL] = "sasl", [OUT_AUTH_DB] = "dialback",
	[OUT_READY] = "ready",
};

static const struct config *cfg_of(const struct s2s_link *l)
{
	return l->w->srv->cfg;
}

static unsigned long long cid(const struct conn *c)
{
	return (unsigned long long)c->id;
}

/* ---- Sending on a link's stream ---- */

static void s2s_out_send_verify(struct conn *c, struct s2s_link *l, struct s2s_verify *v)
{
	struct strbuf *b = &c->w->scratch;

	strbuf_clear(b);
	strbuf_puts(b, "<db:verify from='");
	strbuf_append_xml_escaped(b, l->local, strlen(l->local));
	strbuf_puts(b, "' to='");
	strbuf_append_xml_escaped(b, l->remote, strlen(l->remote));
	strbuf_puts(b, "' id='");
	strbuf_append_xml_escaped(b, v->id, strlen(v->id));
	strbuf_puts(b, "'>");
	strbuf_puts(b, v->key);
	strbuf_puts(b, "</db:verify>");
	conn_send(c, b->data, b->len);
	strbuf_clear(b);
	v->sent = true;
}

/* Sends the verifications waiting for a secure stream. */
static void s2s_out_flush_verifies(struct s2s_link *l)
{
	struct conn *c = l->conn;

	if (!c || c->closing || !c->s2s->features_secure)
		return;
	for (struct s2s_verify *v = l->verifies; v; v = v->next)
		if (!v->sent)
			s2s_out_send_verify(c, l, v);
}

/*
 * Takes v (freed when answered or when the link goes). A link made only
 * for verification is started here; it authenticates itself too, which
 * costs one round trip and lets it carry our stanzas later.
 */
void s2s_out_verify(struct s2s_link *l, struct s2s_verify *v)
{
	v->next = l->verifies;
	l->verifies = v;
	l->nverifies++;
	s2s_out_flush_verifies(l);
	if (l->next_addr == (unsigned)-1 && !l->dns)
		s2s_out_start(l);
}

/*
 * Ready: straight onto the stream, no copy beyond the output queue's.
 * Otherwise one malloc'd item per stanza, bounded by count and bytes:
 * only stanzas for a link that is coming up pay for it.
 */
/* Output a ready link may have queued on its socket before stanzas wait in the link. */
static size_t s2s_out_high_water(const struct s2s_link *l)
{
	return cfg_of(l)->max_output_bytes / 2;
}

int s2s_out_send(struct s2s_link *l, const char *data, size_t len)
{
	const struct config *cfg = cfg_of(l);
	struct s2s_qitem *it;

	if (l->state == S2S_LINK_READY && l->conn && !l->conn->closing) {
		struct conn *c = l->conn;

		c->s2s->last_used_ms = loop_now_ms(l->w->loop);
		/*
		 * Flow control: a link is shared by every sender, so it must
		 * not hit the output limit that cuts off slow clients. Past the
		 * high-water mark stanzas wait in the (bounded) queue and move
		 * on as the socket drains (s2s_out_drained).
		 */
		if (!l->q_head && c->out_bytes + len <= s2s_out_high_water(l))
			return conn_send(c, data, len) < 0 ? -EIO : 0;
	}
	if (l->q_count >= cfg->s2s_queue_max || l->q_bytes + len > cfg->s2s_queue_max_bytes) {
		log_warn("s2s.queue_full", "local=%s remote=%s queued=%u bytes=%zu", l->local, l->remote,
			 l->q_count, l->q_bytes);
		return -ENOBUFS;
	}
	it = malloc(sizeof(*it) + len);
	if (!it)
		return -ENOMEM;
	it->next = NULL;
	it->len = len;
	memcpy(it->data, data, len);
	if (l->q_tail)
		l->q_tail->next = it;
	else
		l->q_head = it;
	l->q_tail = it;
	l->q_count++;
	l->q_bytes += len;
	return 0;
}

/* ---- Ending a link ---- */

/* Returns each queued stanza to its sender with `condition` (RFC 6120 8.3.3). */
static void s2s_out_bounce_queue(struct s2s_link *l, const char *condition)
{
	struct worker *w = l->w;
	struct s2s_qitem *it;
	struct arena a;

	arena_init(&a, S2S_BOUNCE_ARENA);
	while ((it = l->q_head) != NULL) {
		l->q_head = it->next;
		if (condition && !w->draining) {
			struct xml_node *st = stored_xml_parse(w->xml, &a, it->data, it->len);

			/* Broadcasts and probes are not worth an error each (as before federation). */
			if (st && (stanza_kind(st) != STANZA_PRESENCE || s2s_presence_bounces(st)))
				router_bounce_w(w, NULL, st, condition);
			arena_reset(&a);
		}
		free(it);
	}
	arena_release(&a);
	l->q_tail = NULL;
	l->q_count = 0;
	l->q_bytes = 0;
}

/*
 * Unlinks and frees l: its connection (closed if still open), its
 * pending verifications (their inbound streams get an error), its queue
 * (bounced with condition, or dropped when NULL or shutting down). Safe
 * from the connection's own close path: the connection is detached first.
 */
void s2s_link_free(struct s2s_link *l, const char *condition)
{
	struct worker *w = l->w;
	struct s2s_link **pp;
	struct conn *c = l->conn;

	for (pp = &w->s2s->links; *pp; pp = &(*pp)->next)
		if (*pp == l) {
			*pp = l->next;
			w->s2s->nlinks--;
			break;
		}
	if (l->dns)
		l->dns->req.arg = NULL;	/* its completion frees it */
	if (c) {
		l->conn = NULL;
		c->s2s->link = NULL;
		if (!c->closing) {
			conn_send_str(c, "</stream:stream>");
			conn_close(c, CONN_CLOSE_ERROR);
		}
	}
	if (condition)
		log_info("s2s.link_failed", "local=%s remote=%s condition=%s bounced=%u", l->local,
			 l->remote, condition, l->q_count);
	/* Inbound streams waiting for a verification over this link get an error. */
	while (l->verifies) {
		struct s2s_verify *v = l->verifies;

		l->verifies = v->next;
		if (!w->draining)
			s2s_in_verified(w, v, l->remote, l->local, "error");
		free(v);
	}
	s2s_out_bounce_queue(l, condition);
	free(l->local);
	free(l->remote);
	free(l);
}

/* ---- Connecting ---- */

static bool out_stream_open(void *ctx, const struct xml_node *hdr, const char *default_ns);
static bool out_stanza(void *ctx, struct xml_node *el);

static const struct xml_stream_handlers out_handlers = {
	.stream_open = out_stream_open,
	.stanza = out_stanza,
};

/* The peer address of c for logs (IPv4 as v4-mapped, as accepted connections have it). */
static void s2s_out_set_peer(struct conn *c, const struct s2s_addr *a)
{
	if (a->ss.ss_family == AF_INET) {
		const struct sockaddr_in *a4 = (const struct sockaddr_in *)&a->ss;

		c->peer.sin6_family = AF_INET6;
		c->peer.sin6_port = a4->sin_port;
		c->peer.sin6_addr.s6_addr[10] = 0xff;
		c->peer.sin6_addr.s6_addr[11] = 0xff;
		memcpy(&c->peer.sin6_addr.s6_addr[12], &a4->sin_addr, 4);
	} else {
		memcpy(&c->peer, &a->ss, sizeof(c->peer));
	}
}

/* One connection attempt to addr; 0 or -errno (nothing left behind). */
static int s2s_out_connect(struct s2s_link *l, const struct s2s_addr *addr)
{
	struct worker *w = l->w;
	struct s2s_conn *sc;
	struct conn *c;
	char peer[64];
	int fd, one = 1, ret;

	fd = socket(addr->ss.ss_family, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	sc = calloc(1, sizeof(*sc));
	c = sc ? worker_conn_new(w, fd) : NULL;
	if (!c) {
		ret = sc ? -errno : -ENOMEM;
		free(sc);
		close(fd);
		return ret;
	}
	c->kind = CONN_S2S_OUT;
	c->direct_tls = addr->direct_tls;
	c->s2s = sc;
	sc->link = l;
	sc->addr = *addr;
	sc->local = strdup(l->local);
	sc->remote = strdup(l->remote);
	xml_stream_init(&c->xs, w->xml, &out_handlers, c);
	s2s_out_set_peer(c, addr);
	setsockopt(fd, IPPROTO_TCP, TCP_NODELAY, &one, sizeof(one));
	l->conn = c;
	l->state = S2S_LINK_CONNECTING;
	log_info("s2s.connect", "conn=%llu local=%s remote=%s peer=%s tls=%s", cid(c), l->local,
		 l->remote, conn_peer_str(c, peer, sizeof(peer)), addr->direct_tls ? "direct" : "starttls");
	if (!sc->local || !sc->remote ||
	    worker_connect(c, (const struct sockaddr *)&sc->addr.ss, sc->addr.len) < 0) {
		/* Closing tries the next address. */
		conn_abort(c, CONN_CLOSE_ERROR);
		return 0;
	}
	conn_set_deadline(c, (uint64_t)cfg_of(l)->s2s_connect_timeout * 1000);
	return 0;
}

/*
 * Tries the next address; with none left the link fails: a timeout if
 * the last attempt timed out, not found otherwise.
 */
static void s2s_out_next(struct s2s_link *l, bool last_timed_out)
{
	while (l->next_addr < l->naddrs) {
		int ret = s2s_out_connect(l, &l->addrs[l->next_addr++]);

		if (ret == 0)
			return;
		log_info("s2s.connect_failed", "local=%s remote=%s err=\"%s\"", l->local, l->remote,
			 strerror(-ret));
	}
	s2s_link_free(l, last_timed_out ? "remote-server-timeout" : "remote-server-not-found");
}

static void s2s_out_resolved(struct storage_req *req)
{
	struct s2s_dns_req *dr = (struct s2s_dns_req *)req;
	struct s2s_link *l = req->arg;

	if (l)
		l->dns = NULL;
	if (!l || l->w->draining) {
		free(dr);	/* shutting down: the link goes with the worker */
		return;
	}
	memcpy(l->addrs, dr->addrs, sizeof(l->addrs));
	l->naddrs = dr->naddrs;
	free(dr);
	log_debug("s2s.resolved", "remote=%s addresses=%u", l->remote, l->naddrs);
	if (!l->naddrs) {
		log_info("s2s.resolve_failed", "remote=%s", l->remote);
		s2s_link_free(l, "remote-server-not-found");
		return;
	}
	s2s_out_next(l, false);
}

/*
 * The static host table wins over DNS (every entry for the domain, in
 * order); otherwise the resolver thread is asked and s2s_out_resolved()
 * continues. May fail at once (out of memory), freeing l.
 */
void s2s_out_start(struct s2s_link *l)
{
	struct s2s_server *ss = s2s_srv(l->w);
	struct s2s_dns_req *dr;

	l->next_addr = 0;
	l->naddrs = 0;
	/* The static host table wins over DNS (private networks, tests). */
	for (unsigned i = 0; i < ss->nhosts; i++) {
		if (strcmp(ss->hosts[i].domain, l->remote) == 0 && l->naddrs < S2S_ADDRS_MAX)
			l->addrs[l->naddrs++] = ss->hosts[i].addr;
	}
	if (l->naddrs) {
		s2s_out_next(l, false);
		return;
	}
	dr = calloc(1, sizeof(*dr));
	if (!dr) {
		s2s_link_free(l, "internal-server-error");
		return;
	}
	snprintf(dr->domain, sizeof(dr->domain), "%s", l->remote);
	dr->req.inbox = &l->w->inbox;
	dr->req.done = s2s_out_resolved;
	dr->req.arg = l;
	l->dns = dr;
	s2s_resolver_submit(ss->resolver, dr);
}

/* TCP is up: Direct TLS starts at once; STARTTLS streams begin with our header. */
void s2s_out_connected(struct conn *c, int res)
{
	struct s2s_conn *sc = c->s2s;

	if (c->closing)
		return;
	if (res < 0) {
		log_info("s2s.connect_failed", "conn=%llu remote=%s err=\"%s\"", cid(c), sc->remote,
			 strerror(-res));
		conn_abort(c, CONN_CLOSE_IO);
		return;
	}
	conn_set_deadline(c, (uint64_t)c->w->srv->cfg->s2s_handshake_timeout * 1000);
	if (c->direct_tls) {
		sc->state = OUT_TLS;
		if (conn_start_tls(c) < 0) {
			log_warn("tls.start_failed", "conn=%llu", cid(c));
			conn_abort(c, CONN_CLOSE_ERROR);
		}
		return;
	}
	s2s_send_header(c, XML_NS_SERVER, sc->local, sc->remote, true);
	sc->state = OUT_HEADER;
}

/*
 * TLS is up: the peer's certificate is checked for the remote domain
 * (SNI named it). s2s_auth = verified ends the attempt when it does not
 * prove the domain; otherwise dialback will speak for us, and DNS (or the
 * host table) for them, as XEP-0220 assumes.
 */
void s2s_out_tls_established(struct conn *c)
{
	struct s2s_conn *sc = c->s2s;
	const char *why;

	sc->peer_verified = tls_conn_peer_verify_domain(c->tls, sc->remote, &why) == 0;
	log_info("s2s.peer_certificate", "conn=%llu remote=%s verified=%s reason=\"%s\"", cid(c),
		 sc->remote, sc->peer_verified ? "yes" : "no", why);
	if (!sc->peer_verified && s2s_srv(c->w)->verified_only) {
		/* s2s_auth = verified: we do not talk to a server that cannot prove its name. */
		conn_close(c, CONN_CLOSE_ERROR);
		return;
	}
	/* A fresh stream over TLS (STARTTLS restarted the parser already). */
	s2s_send_header(c, XML_NS_SERVER, sc->local, sc->remote, true);
	sc->state = OUT_HEADER;
}

/*
 * Connect and handshake deadlines end the attempt (the close path tries
 * the next address, or bounces with remote-server-timeout); on a ready
 * link the deadline checks idleness since the last stanza sent.
 */
void s2s_out_deadline(struct conn *c)
{
	struct s2s_conn *sc = c->s2s;
	uint64_t now = loop_now_ms(c->w->loop);
	uint64_t idle_ms = (uint64_t)c->w->srv->cfg->s2s_idle_timeout * 1000;

	if (sc->state != OUT_READY) {
		log_info("s2s.timeout", "conn=%llu remote=%s state=%s", cid(c), sc->remote,
			 out_state_names[sc->state]);
		sc->timed_out = true;
		c->close_reason = CONN_CLOSE_TIMEOUT;
		conn_abort(c, CONN_CLOSE_TIMEOUT);
		return;
	}
	if (!idle_ms)
		return;
	if (now - sc->last_used_ms < idle_ms) {
		conn_set_deadline(c, idle_ms - (now - sc->last_used_ms));
		return;
	}
	log_info("s2s.idle_close", "conn=%llu local=%s remote=%s", cid(c), sc->local, sc->remote);
	conn_send_str(c, "</stream:stream>");
	conn_close(c, CONN_CLOSE_TIMEOUT);
}

/*
 * The link's connection ends. A ready link is dropped (the next stanza
 * builds a new one); one still coming up tries its next address, and
 * fails when there is none.
 */
void s2s_out_closing(struct conn *c)
{
	struct s2s_conn *sc = c->s2s;
	struct s2s_link *l = sc ? sc->link : NULL;

	if (!l)
		return;
	sc->link = NULL;
	l->conn = NULL;
	if (l->state == S2S_LINK_READY) {
		log_info("s2s.link_down", "local=%s remote=%s queued=%u", l->local, l->remote,
			 l->q_count);
		/*
		 * Queued stanzas (the peer had stopped reading) never left:
		 * they go over a new connection, from the first address on.
		 * Once per link, so a peer that keeps dropping us cannot
		 * hold them forever; after that they bounce.
		 */
		if (!l->q_head || c->w->draining || l->relinked) {
			s2s_link_free(l, l->q_head && !c->w->draining ? "remote-server-timeout" : NULL);
			return;
		}
		l->relinked = true;
		l->state = S2S_LINK_CONNECTING;
		l->next_addr = 0;
		sc->timed_out = false;
	}
	/* Verifications sent on this stream will not be answered: ask again on the next. */
	for (struct s2s_verify *v = l->verifies; v; v = v->next)
		v->sent = false;
	if (c->w->draining) {
		s2s_link_free(l, NULL);
		return;
	}
	s2s_out_next(l, sc->timed_out);
}

/* ---- The peer's stream ---- */

static bool out_stream_open(void *ctx, const struct xml_node *hdr, const char *default_ns)
{
	struct conn *c = ctx;
	struct s2s_conn *sc = c->s2s;
	const char *id = xml_attr_get(hdr, "id");

	if (strcmp(hdr->ns, XML_NS_STREAM) != 0 || strcmp(hdr->name, "stream") != 0 ||
	    strcmp(default_ns, XML_NS_SERVER) != 0) {
		s2s_stream_error(c, "invalid-namespace", NULL);
		return false;
	}
	/* The receiving server's stream id keys our dialback (XEP-0220 2.1.1). */
	snprintf(sc->peer_id, sizeof(sc->peer_id), "%s",
		 id && strlen(id) <= S2S_STREAM_ID_MAX ? id : "");
	return true;
}

/* Authenticated: the queue goes out, the deadline now watches idleness. */
static void out_ready(struct conn *c)
{
	struct s2s_conn *sc = c->s2s;
	struct s2s_link *l = sc->link;
	uint32_t idle = c->w->srv->cfg->s2s_idle_timeout;

	sc->state = OUT_READY;
	sc->last_used_ms = loop_now_ms(c->w->loop);
	if (idle)
		conn_set_deadline(c, (uint64_t)idle * 1000);
	else
		loop_timer_cancel(&c->timer);
	if (!l)
		return;
	l->state = S2S_LINK_READY;
	log_info("s2s.link_up", "conn=%llu local=%s remote=%s auth=%s queued=%u", cid(c), l->local,
		 l->remote, sc->auth_done ? "external" : "dialback", l->q_count);
	s2s_out_drained(c);	/* the queue, up to the high-water mark; the rest as it drains */
}

/* Dialback (XEP-0220 2.1.1): our key for this stream, in <db:result/>. */
static bool out_send_db_result(struct conn *c)
{
	struct s2s_conn *sc = c->s2s;
	struct strbuf *b = &c->w->scratch;
	char key[S2S_DB_KEY_LEN + 1];

	if (!sc->peer_id[0] || s2s_dialback_key(s2s_srv(c->w)->db_secret,
						sizeof(s2s_srv(c->w)->db_secret), sc->remote,
						sc->local, sc->peer_id, key) < 0) {
		s2s_stream_error(c, "undefined-condition", "no stream id for dialback");
		return false;
	}
	strbuf_clear(b);
	strbuf_puts(b, "<db:result from='");
	strbuf_append_xml_escaped(b, sc->local, strlen(sc->local));
	strbuf_puts(b, "' to='");
	strbuf_append_xml_escaped(b, sc->remote, strlen(sc->remote));
	strbuf_puts(b, "'>");
	strbuf_puts(b, key);
	strbuf_puts(b, "</db:result>");
	conn_send(c, b->data, b->len);
	strbuf_clear(b);
	sc->state = OUT_AUTH_DB;
	return true;
}

/* Whether <mechanisms/> lists EXTERNAL. */
static bool out_offers_external(struct conn *c, const struct xml_node *features)
{
	struct xml_node *mechs = xml_child(features, NS_SASL, "mechanisms");

	if (!mechs)
		return false;
	for (struct xml_node *m = xml_first_element(mechs); m; m = xml_next_element(m)) {
		const char *t = strcmp(m->name, "mechanism") == 0 ? xml_text(&c->w->tmp, m) : NULL;

		if (t && strcmp(t, "EXTERNAL") == 0)
			return true;
	}
	return false;
}

/*
 * The peer's features: STARTTLS first (we refuse to go on in the clear);
 * after TLS, SASL EXTERNAL when offered (our certificate convinced them),
 * else dialback; after SASL success the link is ready. The first secure
 * features also release the verifications waiting for this link.
 */
static bool out_features(struct conn *c, struct xml_node *el)
{
	struct s2s_conn *sc = c->s2s;
	char *b64;
	bool ok = true;

	if (!c->secure) {
		if (xml_child(el, NS_TLS, "starttls")) {
			conn_send_str(c, "<starttls xmlns='" NS_TLS "'/>");
			sc->state = OUT_STARTTLS;
			return true;
		}
		/* RFC 6120 5.3.1: we never send stanzas to another server in the clear. */
		log_info("s2s.no_tls", "conn=%llu remote=%s", cid(c), sc->remote);
		conn_send_str(c, "</stream:stream>");
		conn_close(c, CONN_CLOSE_ERROR);
		return false;
	}
	if (sc->auth_done) {
		out_ready(c);
		return true;
	}
	sc->features_secure = true;
	if (sc->link)
		s2s_out_flush_verifies(sc->link);
	sc->db_offered = xml_child(el, NS_DIALBACK_FEATURE, "dialback") != NULL;
	if (out_offers_external(c, el)) {
		/* XEP-0178 section 3: the authorization identity is our domain. */
		b64 = sasl_b64_encode(sc->local, strlen(sc->local));
		if (b64) {
			conn_send_str(c, "<auth xmlns='" NS_SASL "' mechanism='EXTERNAL'>");
			conn_send_str(c, b64);
			conn_send_str(c, "</auth>");
			free(b64);
			sc->state = OUT_AUTH_SASL;
			arena_reset(&c->w->tmp);
			return true;
		}
	}
	arena_reset(&c->w->tmp);
	/* Without the dialback feature, try it anyway: older servers do not announce it. */
	ok = out_send_db_result(c);
	return ok;
}

/*
 * <proceed/>: the client side of TLS starts (ClientHello queued by
 * conn_start_tls), and the parser restarts after this element so the
 * peer's next header is a new document.
 */
static bool out_proceed(struct conn *c)
{
	if (c->s2s->state != OUT_STARTTLS || c->tls) {
		s2s_stream_error(c, "policy-violation", "unexpected <proceed/>");
		return false;
	}
	if (conn_start_tls(c) < 0) {
		log_warn("tls.start_failed", "conn=%llu", cid(c));
		conn_abort(c, CONN_CLOSE_ERROR);
		return false;
	}
	c->s2s->state = OUT_TLS;
	c->restart_pending = true;	/* what follows is the TLS handshake, then a new stream */
	return false;
}

/* RFC 6120 6.4.5: on failure, dialback is the fallback when the peer offered it. */
static bool out_sasl_result(struct conn *c, struct xml_node *el)
{
	struct s2s_conn *sc = c->s2s;

	if (sc->state != OUT_AUTH_SASL) {
		s2s_stream_error(c, "policy-violation", "unexpected SASL element");
		return false;
	}
	if (strcmp(el->name, "success") == 0) {
		/* RFC 6120 6.4.6: a new stream on the same TLS session. */
		sc->auth_done = true;
		c->restart_pending = true;
		s2s_send_header(c, XML_NS_SERVER, sc->local, sc->remote, true);
		sc->state = OUT_HEADER;
		return false;
	}
	log_info("s2s.external_refused", "conn=%llu remote=%s dialback=%s", cid(c), sc->remote,
		 sc->db_offered ? "yes" : "no");
	if (sc->db_offered)
		return out_send_db_result(c);
	conn_send_str(c, "</stream:stream>");
	conn_close(c, CONN_CLOSE_ERROR);
	return false;
}

/* <db:result type=.../> answering our key (XEP-0220 2.1.1 step 4). */
static bool out_db_result(struct conn *c, struct xml_node *el)
{
	struct s2s_conn *sc = c->s2s;
	const char *type = xml_attr_get(el, "type"), *from = xml_attr_get(el, "from");
	const char *to = xml_attr_get(el, "to");

	/* It must answer the request sent over this stream (XEP-0220 3.1). */
	if (sc->state != OUT_AUTH_DB || !type || !from || !to || strcmp(from, sc->remote) != 0 ||
	    strcmp(to, sc->local) != 0) {
		log_info("s2s.dialback_unexpected", "conn=%llu remote=%s", cid(c), sc->remote);
		return true;
	}
	if (strcmp(type, "valid") == 0) {
		out_ready(c);
		return true;
	}
	log_info("s2s.dialback_refused", "conn=%llu local=%s remote=%s type=%s", cid(c), sc->local,
		 sc->remote, type);
	conn_send_str(c, "</stream:stream>");
	conn_close(c, CONN_CLOSE_ERROR);
	return false;
}

/* <db:verify type=.../> answering a verification we asked for (2.1.2). */
static bool out_db_verify(struct conn *c, struct xml_node *el)
{
	struct s2s_conn *sc = c->s2s;
	struct s2s_link *l = sc->link;
	const char *type = xml_attr_get(el, "type"), *id = xml_attr_get(el, "id");
	const char *from = xml_attr_get(el, "from"), *to = xml_attr_get(el, "to");
	struct s2s_verify **pp, *v;

	if (!l || !type || !id || !from || !to || strcmp(from, l->remote) != 0 ||
	    strcmp(to, l->local) != 0)
		return true;
	for (pp = &l->verifies; (v = *pp) != NULL; pp = &v->next) {
		if (v->sent && strcmp(v->id, id) == 0) {
			*pp = v->next;
			l->nverifies--;
			s2s_in_verified(c->w, v, l->remote, l->local, type);
			free(v);
			break;
		}
	}
	return true;
}

/* What the peer sends on our link: negotiation, dialback answers, errors. */
static bool out_stanza(void *ctx, struct xml_node *el)
{
	struct conn *c = ctx;
	bool go_on = true;

	if (strcmp(el->ns, XML_NS_STREAM) == 0 && strcmp(el->name, "features") == 0) {
		go_on = out_features(c, el);
	} else if (strcmp(el->ns, NS_TLS) == 0 && strcmp(el->name, "proceed") == 0) {
		go_on = out_proceed(c);
	} else if (strcmp(el->ns, NS_SASL) == 0 &&
		   (strcmp(el->name, "success") == 0 || strcmp(el->name, "failure") == 0)) {
		go_on = out_sasl_result(c, el);
	} else if (strcmp(el->ns, NS_DIALBACK) == 0 && strcmp(el->name, "result") == 0) {
		go_on = out_db_result(c, el);
	} else if (strcmp(el->ns, NS_DIALBACK) == 0 && strcmp(el->name, "verify") == 0) {
		go_on = out_db_verify(c, el);
	} else if (strcmp(el->ns, XML_NS_STREAM) == 0 && strcmp(el->name, "error") == 0) {
		struct xml_node *cond = xml_first_element(el);

		log_info("s2s.peer_stream_error", "conn=%llu remote=%s condition=%s", cid(c),
			 c->s2s->remote, cond ? cond->name : "-");
		/* The close tag follows; the close path tries the next address. */
	} else if (strcmp(el->ns, NS_TLS) == 0 && strcmp(el->name, "failure") == 0) {
		conn_close(c, CONN_CLOSE_ERROR);
		go_on = false;
	} else {
		/* Stanzas come to us on the peer's own link (no XEP-0288 here): ignored. */
		log_debug("s2s.out_ignored", "conn=%llu element=%s", cid(c), el->name);
	}
	return go_on && !c->closing && !c->restart_pending;
}

void s2s_out_drained(struct conn *c)
{
	struct s2s_link *l = c->s2s ? c->s2s->link : NULL;
	struct s2s_qitem *it;

	if (!l || l->state != S2S_LINK_READY || c->closing)
		return;
	/* Refill the socket's queue up to the high-water mark, in order. */
	while ((it = l->q_head) != NULL &&
	       (!c->out_bytes || c->out_bytes + it->len <= s2s_out_high_water(l))) {
		l->q_head = it->next;
		if (!l->q_head)
			l->q_tail = NULL;
		l->q_count--;
		l->q_bytes -= it->len;
		conn_send(c, it->data, it->len);
		free(it);
	}
}
