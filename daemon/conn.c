/* SPDX-License-Identifier: MIT */
/*
 * Connection plumbing: input through TLS into the XML stream, the output
 * queue, pausing input for asynchronous steps, and the close sequence.
 *
 * Close sequence:
 *   conn_close()      stop input; c2s cleanup; queue close_notify (TLS)
 *   output drains     (bounded by CONN_LINGER_MS)
 *   conn_finish()     shutdown(SHUT_WR) so the peer sees FIN after our
 *                     last bytes; keep reading and discarding until EOF or
 *                     the linger deadline, so unread input cannot turn our
 *                     close into a reset that destroys the stream error
 *   reap              cancel what is in flight; the worker frees the
 *                     connection once no completion can reference it
 */
#include <arpa/inet.h>
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>

#include "abuse.h"
#include "c2s.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "http.h"
#include "kmod.h"
#include "log.h"
#include "s2s.h"
#include "server.h"
#include "sm.h"
#include "tls.h"
#include "websocket.h"
#include "worker.h"

#define CONN_LINGER_MS	2000	/* time to drain output and see the peer's FIN */

const char *conn_peer_str(const struct conn *c, char *buf, size_t size)
{
	char addr[INET6_ADDRSTRLEN];
	const struct in6_addr *a = &c->peer.sin6_addr;

	if (IN6_IS_ADDR_V4MAPPED(a)) {
		inet_ntop(AF_INET, &a->s6_addr[12], addr, sizeof(addr));
		snprintf(buf, size, "%s:%u", addr, ntohs(c->peer.sin6_port));
	} else {
		inet_ntop(AF_INET6, a, addr, sizeof(addr));
		snprintf(buf, size, "[%s]:%u", addr, ntohs(c->peer.sin6_port));
	}
	return buf;
}

/* ---- Output ---- */

/*
 * Appends raw bytes (ciphertext when TLS is on) to the output queue. The
 * tail chunk is filled first so a burst of small stanzas becomes one send.
 */
static int conn_queue_raw(struct conn *c, const void *data, size_t len)
{
	const struct config *cfg = c->w->srv->cfg;
	const char *p = data;

	/* A fan-out copy of this connection waits in the offload batch: it goes first. */
	if (c->kmod_pending)
		kmod_flush(c->w);
	if (c->fd < 0 || c->overflowed)
		return c->fd < 0 ? -EPIPE : -ENOBUFS;
	if (c->out_bytes + len > cfg->max_output_bytes) {
		/*
		 * The peer does not read: drop it before it costs more memory.
		 * Not here, though: this runs in the middle of deliveries (a
		 * fan-out loop over sessions), which must not see a session
		 * end under their feet. The worker aborts it at the end of the
		 * turn; until then nothing more is queued.
		 */
		log_warn("conn.output_overflow", "conn=%llu queued=%zu limit=%u",
			 (unsigned long long)c->id, c->out_bytes, cfg->max_output_bytes);
		c->overflowed = true;
		c->overflow_next = c->w->overflow_list;
		c->w->overflow_list = c;
		return -ENOBUFS;
	}
	while (len) {
		struct out_chunk *t = c->out_tail;
		size_t room, n;

		if (!t || t->len == t->cap) {
			t = worker_chunk_get(c->w, len);
			if (!t)
				return -ENOMEM;
			if (c->out_tail)
				c->out_tail->next = t;
			else
				c->out_head = t;
			c->out_tail = t;
		}
		room = t->cap - t->len;
		n = len < room ? len : room;
		memcpy(t->data + t->len, p, n);
		t->len += (uint32_t)n;
		p += n;
		len -= n;
		c->out_bytes += n;
	}
	worker_want_flush(c->w, c);
	return 0;
}

/* TLS sink: records OpenSSL produced for this connection. */
static int conn_tls_sink(void *arg, const void *data, size_t len)
{
	return conn_queue_raw(arg, data, len);
}

int conn_send_transport(struct conn *c, const void *data, size_t len)
{
	if (c->fd < 0 || c->in_reap_list)
		return -EPIPE;
	/* In kTLS mode the kernel encrypts: plaintext goes on the socket. */
	if (c->tls && !tls_conn_in_kernel(c->tls))
		return tls_conn_write(c->tls, data, len);
	return conn_queue_raw(c, data, len);
}

int conn_send(struct conn *c, const void *data, size_t len)
{
	if (c->fd < 0 || c->in_reap_list)
		return -EPIPE;
	/* WebSocket: one text frame per top-level element (websocket.c). */
	if (c->websocket)
		return ws_send_xml(c, data, len);
	return conn_send_transport(c, data, len);
}

int conn_send_node(struct conn *c, const struct xml_node *n)
{
	struct strbuf *out = &c->w->scratch;
	int ret;

	strbuf_clear(out);
	xml_serialize(out, n, XML_NS_CLIENT);
	if (out->oom)
		return -ENOMEM;
	/* Every stanza to a client passes here: stream management counts it. */
	ret = sm_send_stanza(c, out->data, out->len);
	strbuf_clear(out);
	return ret;
}

/* ---- Input ---- */

/* Holds plaintext while input is paused. Bounded by the stanza limit. */
static int conn_hold(struct conn *c, const char *data, size_t len)
{
	size_t limit = (size_t)c->w->srv->cfg->max_stanza_bytes * 2;
	char *p;

	if (!len)
		return 0;
	if (c->pending_len + len > limit) {
		c2s_stream_error(c, "policy-violation", "too much data while a request is pending");
		return -ENOBUFS;
	}
	p = realloc(c->pending_in, c->pending_len + len);
	if (!p) {
		c2s_stream_error(c, "internal-server-error", NULL);
		return -ENOMEM;
	}
	memcpy(p + c->pending_len, data, len);
	c->pending_in = p;
	c->pending_len += len;
	return 0;
}

/*
 * Feeds plaintext to the XML stream. Stanza handlers may stop the parser
 * to pause input (async step), restart the stream (SASL success) or start
 * TLS (STARTTLS); the loop below resumes with the remaining bytes
 * accordingly.
 */
void conn_input_xml(struct conn *c, const char *data, size_t len)
{
	while (len && !c->closing) {
		size_t used = 0;
		enum xml_status st;

		if (c->input_paused) {
			conn_hold(c, data, len);
			return;
		}
		st = xml_stream_feed(&c->xs, data, len, &used);
		switch (st) {
		case XML_OK:
			return;
		case XML_STOPPED:
			data += used;
			len -= used;
			/* SASL success or STARTTLS: a new stream header comes next. */
			if (c->restart_pending) {
				c->restart_pending = false;
				xml_stream_restart(&c->xs);
			}
			/*
			 * STARTTLS: whatever follows <starttls/> is the peer's
			 * TLS handshake, never XML. Plaintext injected after the
			 * command would be ciphertext garbage to OpenSSL.
			 */
			if (c->tls && !c->secure) {
				/*
				 * Whitespace sent right after <starttls/> is still
				 * the old stream (go-xmpp, so go-sendxmpp, ends
				 * every write with a newline): drop it. No TLS
				 * record starts with such a byte (types 20-24).
				 */
				while (len && (*data == ' ' || *data == '\t' || *data == '\r' ||
					       *data == '\n')) {
					data++;
					len--;
				}
				if (len)
					conn_input(c, data, len);
				return;
			}
			continue;
		case XML_CLOSED:
			c2s_stream_closed_by_peer(c);
			return;
		default:
			c2s_stream_error(c, xml_status_condition(st), NULL);
			return;
		}
	}
}

/*
 * Plaintext from the transport: HTTP requests and WebSocket frames have
 * their own layer first (http.c, websocket.c); a TCP stream is XML.
 */
static void conn_input_plain(struct conn *c, const char *data, size_t len)
{
	if (c->kind == CONN_HTTP)
		http_input(c, data, len);
	else if (c->kind == CONN_CONTROL)
		control_input(c, data, len);	/* stanzactl (control.c) */
	else if (c->websocket)
		ws_input(c, data, len);
	else
		conn_input_xml(c, data, len);
}

/* TLS plaintext callback. */
static int conn_tls_plain(void *arg, const char *data, size_t len)
{
	struct conn *c = arg;

	/* Application data can arrive in the same read as the client Finished. */
	if (!c->secure && tls_conn_handshake_done(c->tls))
		conn_tls_established(c);
	conn_input_plain(c, data, len);
	return c->closing ? 1 : 0;
}

void conn_input(struct conn *c, const char *data, size_t len)
{
	enum tls_status st;

	if (c->closing)
		return;	/* lingering after our close: discard */
	c->last_input_ms = loop_now_ms(c->w->loop);
	if (!abuse_bytes_in(c, len))	/* the session's byte rate (abuse.c) */
		return;
	if (!c->tls) {
		conn_input_plain(c, data, len);
		return;
	}
	st = tls_conn_input(c->tls, data, len, conn_tls_plain, c);
	switch (st) {
	case TLS_OK:
	case TLS_STOPPED:
		break;
	case TLS_HANDSHAKE_DONE:
		if (!c->secure)
			conn_tls_established(c);
		break;
	case TLS_CLOSED:
		c2s_stream_closed_by_peer(c);
		break;
	case TLS_ERROR:
		log_info("tls.error", "conn=%llu reason=\"%s\"", (unsigned long long)c->id,
			 tls_conn_error(c->tls));
		conn_close(c, CONN_CLOSE_ERROR);
		break;
	}
}

void conn_input_end(struct conn *c, int err)
{
	if (c->closing) {
		/* The peer's FIN after ours: nothing left to wait for. */
		worker_want_reap(c->w, c);
		return;
	}
	if (err)
		log_info("conn.io_error", "conn=%llu err=\"%s\"", (unsigned long long)c->id, strerror(-err));
	/* Nobody is listening any more: skip the linger, reap now. */
	conn_abort(c, err ? CONN_CLOSE_IO : CONN_CLOSE_PEER);
}

void conn_pause_input(struct conn *c)
{
	c->input_paused = true;
}

void conn_resume_input(struct conn *c)
{
	char *held = c->pending_in;
	size_t len = c->pending_len;

	/* Moving to another worker: what is held goes along, resumed there. */
	if (conn_migrating(c))
		return;

	c->input_paused = false;
	if (!held) {
		ws_resume(c);	/* WebSocket: frames that came meanwhile */
		return;
	}
	c->pending_in = NULL;
	c->pending_len = 0;
	/* WebSocket: what conn_hold() kept is the rest of a message, i.e. XML. */
	if (c->websocket)
		conn_input_xml(c, held, len);
	else
		conn_input_plain(c, held, len);
	free(held);
	ws_resume(c);
	if (!c->closing && !c->input_paused)
		xml_stream_release_idle(&c->xs);
}

void conn_input_plaintext(struct conn *c, const char *data, size_t len)
{
	if (c->closing)
		return;	/* lingering after our close: discard */
	c->last_input_ms = loop_now_ms(c->w->loop);
	if (!abuse_bytes_in(c, len))
		return;
	conn_input_plain(c, data, len);
}

int conn_start_tls(struct conn *c)
{
	struct server *srv = c->w->srv;
	struct tls_server *ts = c->direct_tls ? srv->tls_direct : srv->tls_starttls;

	/* Federation has its own contexts, and the client side for our links (s2s.c). */
	if (s2s_owns(c))
		c->tls = s2s_tls_conn_new(c, conn_tls_sink);
	else
		c->tls = tls_conn_new(ts, conn_tls_sink, c);
	if (!c->tls)
		return -errno;
	/* XEP-0178: clients may present a certificate (never HTTPS: browsers would ask). */
	if (c->kind == CONN_C2S)
		tls_conn_request_client_cert(c->tls);
	c->tls_mode = CONN_TLS_USERSPACE;
	return 0;
}

/* ---- Deadlines and closing ---- */

void conn_set_deadline(struct conn *c, uint64_t ms)
{
	loop_timer_arm(c->w->loop, &c->timer, ms);
}

/* After output drained: FIN, then linger for the peer's FIN. */
static void conn_finish(struct conn *c)
{
	if (c->in_reap_list)
		return;
	/* kTLS: our close_notify follows the last queued byte, as OpenSSL's would. */
	conn_ktls_close_notify(c);
	if (c->fd >= 0 && c->recv_armed && c->close_reason != CONN_CLOSE_PEER &&
	    c->close_reason != CONN_CLOSE_IO) {
		shutdown(c->fd, SHUT_WR);
		conn_set_deadline(c, CONN_LINGER_MS);
		c->close_after_flush = false;
		return;
	}
	worker_want_reap(c->w, c);
}

void conn_close(struct conn *c, enum conn_close_reason reason)
{
	if (!c->close_reason)
		c->close_reason = reason;
	if (c->closing)
		return;
	c->closing = true;
	abuse_conn_done(c);	/* a closing connection no longer counts for its source */
	if (c->kind == CONN_HTTP)
		http_closing(c);	/* an upload in progress is abandoned */
	else
		c2s_closing(c);
	if (c->tls && tls_conn_handshake_done(c->tls))
		tls_conn_shutdown(c->tls);
	if (c->in_reap_list)
		return;
	c->close_after_flush = true;
	conn_set_deadline(c, CONN_LINGER_MS);
	if (c->kmod_pending)
		kmod_flush(c->w);	/* a copy in the offload batch is output too */
	if (!c->out_head && !c->send_inflight)
		conn_finish(c);
}

void conn_abort(struct conn *c, enum conn_close_reason reason)
{
	if (!c->close_reason)
		c->close_reason = reason;
	if (!c->closing) {
		c->closing = true;
		abuse_conn_done(c);
		if (c->kind == CONN_HTTP)
			http_closing(c);
		else
			c2s_closing(c);
	}
	worker_want_reap(c->w, c);
}

void conn_output_drained(struct conn *c)
{
	/* A kTLS handoff waits for OpenSSL's last records to leave. */
	if (c->tls_mode == CONN_TLS_HANDOFF)
		conn_ktls_step(c);
	if (c->kind == CONN_HTTP)
		http_output_drained(c);	/* the next piece of a file */
	else if (s2s_owns(c))
		s2s_output_drained(c);	/* a link's queued stanzas move on (s2s_out.c) */
	else if (c->kind == CONN_CONTROL)
		control_output_drained(c);	/* the next piece of an answer */
	if (c->closing && c->close_after_flush)
		conn_finish(c);
}
