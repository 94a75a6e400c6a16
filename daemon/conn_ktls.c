/* SPDX-License-Identifier: MIT */
/*
 * Moving a connection's TLS record layer into the kernel, and living with
 * it there.
 *
 * The handoff (conn_tls_established -> conn_ktls_step):
 *   1. The handshake completes inside OpenSSL (userspace, buffer BIO). The
 *      stream layer is told at once (the client's stream header may be in
 *      the same read), and when the kernel supports the suite the
 *      connection enters CONN_TLS_HANDOFF: its multishot receive is
 *      cancelled, because every ciphertext byte userspace takes from the
 *      socket after the switch point would be lost to the kernel.
 *   2. Completions that raced the cancel still go through OpenSSL as usual
 *      (their plaintext reaches the stream, their records are counted).
 *      Output produced meanwhile is still encrypted by OpenSSL.
 *   3. The switch happens when no receive is armed, no send is in flight
 *      and the output queue is empty (bytes OpenSSL encrypted must reach
 *      the wire before the kernel encrypts anything), and OpenSSL holds no
 *      partial record. If it does, a receive of exactly the missing bytes
 *      is armed and the step repeats. OpenSSL never reads past the record
 *      it needs (no read-ahead), so nothing else can hide in it.
 *   4. Keys and sequence numbers come from tls.c; ktls_install() sets the
 *      ULP, TX and RX; the SSL object is freed (tls_conn_ktls_done) and a
 *      multishot recvmsg is armed on the now-plaintext socket.
 *   Any failure before TX keys are installed falls back to userspace TLS
 *   on the same socket (logged once per connection, as tls.ktls_failed).
 *
 * In the kernel (CONN_TLS_KTLS): data records are plaintext for the XML
 * stream; alerts and post-handshake messages arrive as records of their
 * own type. close_notify closes cleanly, other alerts are fatal. A TLS 1.3
 * KeyUpdate cannot be followed: kernels before 6.14 cannot install new
 * receive keys, and every record after it would fail to decrypt. The
 * connection stops reading and closes with the stream error <reset/>
 * ("the keys ... used to establish a secure context ... have expired",
 * RFC 6120 4.9.3.16), so a client reconnects instead of losing data.
 */
#include <errno.h>
#include <string.h>

#include <openssl/ssl.h>

#include "c2s.h"
#include "conn.h"
#include "ktls.h"
#include "log.h"
#include "tls.h"
#include "worker.h"

#define CONN_KTLS_ALERT_LEN	2	/* level, description */

static unsigned long long conn_id(const struct conn *c)
{
	return (unsigned long long)c->id;
}

const char *conn_tls_mode_name(const struct conn *c)
{
	switch (c->tls_mode) {
	case CONN_TLS_USERSPACE:
		return "userspace";
	case CONN_TLS_HANDOFF:
	case CONN_TLS_KTLS:
	case CONN_TLS_KTLS_NO_RX:
		return "ktls";
	default:
		return "none";
	}
}

/* Re-arms the receive that the current mode reads with, if none is armed. */
static void conn_ktls_rearm(struct conn *c)
{
	if (c->recv_armed || c->in_reap_list || c->fd < 0)
		return;
	if (c->tls_mode == CONN_TLS_KTLS)
		loop_recv_tls(c->w->loop, c->fd, c->slot, c->gen);
	else if (c->tls_mode == CONN_TLS_USERSPACE)
		loop_recv(c->w->loop, c->fd, c->slot, c->gen);
	else
		return;
	c->recv_armed = true;
}

/*
 * The handoff is off: userspace TLS goes on (the socket was not touched,
 * or only got the ULP, which passes bytes through). reason NULL: quietly
 * (the connection is closing anyway).
 */
static void conn_ktls_fallback(struct conn *c, const char *reason, int err)
{
	tls_conn_ktls_abandon(c->tls);
	c->tls_mode = CONN_TLS_USERSPACE;
	if (reason)
		log_warn("tls.ktls_failed", "conn=%llu reason=\"%s\" err=%s mode=userspace", conn_id(c),
			 reason, err ? strerrorname_np(-err) : "-");
	conn_ktls_rearm(c);
}

void conn_tls_established(struct conn *c)
{
	if (c->tls_mode == CONN_TLS_USERSPACE && tls_conn_ktls_possible(c->tls))
		c->tls_mode = CONN_TLS_HANDOFF;
	else if (c->tls_mode == CONN_TLS_USERSPACE)
		tls_conn_ktls_abandon(c->tls);	/* nothing to collect any more */
	c2s_tls_established(c);
	if (c->tls_mode != CONN_TLS_HANDOFF)
		return;
	/*
	 * Stop reading now. Completions already on their way are handled by
	 * OpenSSL; the last one (-ECANCELED, or data without "more") lets
	 * the worker call conn_ktls_step().
	 */
	if (c->recv_armed)
		loop_cancel_recv(c->w->loop, LOOP_OP_RECV, c->slot, c->gen);
}

void conn_ktls_step(struct conn *c)
{
	union ktls_crypto_info tx, rx;
	enum ktls_step step;
	int ret;

	if (c->tls_mode != CONN_TLS_HANDOFF || c->recv_armed)
		return;
	if (c->closing || c->in_reap_list) {
		conn_ktls_fallback(c, NULL, 0);
		return;
	}
	if (c->send_inflight || c->out_head)
		return;	/* conn_output_drained() calls again */

	ret = tls_conn_ktls_keys(c->tls, &tx, &rx);
	if (ret == -EAGAIN) {
		/* OpenSSL holds part of a record: fetch exactly the rest. */
		loop_recv_limited(c->w->loop, c->fd, c->slot, c->gen, tls_conn_rx_partial(c->tls));
		c->recv_armed = true;
		return;
	}
	if (ret < 0) {
		conn_ktls_fallback(c, "session keys not available", ret);
		return;
	}
	ret = ktls_install(c->fd, &tx, &rx, &step);
	explicit_bzero(&tx, sizeof(tx));
	explicit_bzero(&rx, sizeof(rx));
	if (ret < 0 && step == KTLS_STEP_RX) {
		/* The kernel encrypts our output already: OpenSSL cannot go on. */
		log_error("tls.ktls_failed", "conn=%llu step=%s err=%s action=close", conn_id(c),
			  ktls_step_name(step), strerrorname_np(-ret));
		tls_conn_ktls_abandon(c->tls);
		c->tls_mode = CONN_TLS_USERSPACE;
		conn_abort(c, CONN_CLOSE_IO);
		return;
	}
	if (ret < 0) {
		conn_ktls_fallback(c, ktls_step_name(step), ret);
		return;
	}
	tls_conn_ktls_done(c->tls);
	c->tls_mode = CONN_TLS_KTLS;
	log_debug("tls.ktls_active", "conn=%llu version=%s cipher=%s tx=kernel rx=kernel", conn_id(c),
		  tls_conn_version(c->tls), tls_conn_cipher(c->tls));
	conn_ktls_rearm(c);
}

void conn_ktls_close_notify(struct conn *c)
{
	int ret;

	if (c->tls_mode != CONN_TLS_KTLS && c->tls_mode != CONN_TLS_KTLS_NO_RX)
		return;
	if (c->fd < 0 || !tls_conn_take_close_notify(c->tls))
		return;
	/* The output queue is empty here, so a small record always fits. */
	ret = ktls_send_alert(c->fd, KTLS_ALERT_WARNING, KTLS_ALERT_CLOSE_NOTIFY);
	if (ret < 0)
		log_debug("tls.close_notify_failed", "conn=%llu err=%s", conn_id(c),
			  strerrorname_np(-ret));
}

/* Stops receiving for good: the kernel could not decrypt what comes next. */
static void conn_ktls_stop_reading(struct conn *c)
{
	c->tls_mode = CONN_TLS_KTLS_NO_RX;
	if (c->recv_armed)
		loop_cancel_recv(c->w->loop, LOOP_OP_RECV_TLS, c->slot, c->gen);
}

static void conn_ktls_alert(struct conn *c, const unsigned char *a, size_t len)
{
	if (len < CONN_KTLS_ALERT_LEN) {
		log_info("tls.error", "conn=%llu reason=\"truncated alert record\"", conn_id(c));
		tls_conn_mark_failed(c->tls);
		conn_close(c, CONN_CLOSE_ERROR);
		return;
	}
	if (a[1] == KTLS_ALERT_CLOSE_NOTIFY) {
		/* As with userspace TLS: answer the stream close, then ours. */
		c2s_stream_closed_by_peer(c);
		return;
	}
	/* user_canceled is a warning; close_notify follows it (RFC 8446 6.1). */
	if (a[1] == KTLS_ALERT_USER_CANCELED && a[0] == KTLS_ALERT_WARNING)
		return;
	log_info("tls.error", "conn=%llu reason=\"peer sent alert: %s\" level=%u description=%u",
		 conn_id(c), SSL_alert_desc_string_long(a[1]), a[0], a[1]);
	tls_conn_mark_failed(c->tls);
	conn_close(c, CONN_CLOSE_ERROR);
}

/*
 * A handshake message after the handshake. A renegotiation request is
 * declined; nothing else the kernel could follow (KeyUpdate) or that we
 * accept can come this way, so the connection stops reading and closes
 * its stream with <reset/>.
 */
static void conn_ktls_handshake(struct conn *c, const unsigned char *m, size_t len)
{
	unsigned type = len ? m[0] : 0;

	/*
	 * A TLS 1.2 ClientHello asks for renegotiation. Userspace OpenSSL
	 * (SSL_OP_NO_RENEGOTIATION) declines with a no_renegotiation warning
	 * and keeps the connection; so do we, when the alert cannot overtake
	 * queued output.
	 */
	if (type == KTLS_HS_CLIENT_HELLO && !tls_conn_is_tls13(c->tls) && !c->out_head &&
	    !c->send_inflight &&
	    ktls_send_alert(c->fd, KTLS_ALERT_WARNING, KTLS_ALERT_NO_RENEGOTIATION) == 0) {
		log_info("tls.renegotiation_refused", "conn=%llu", conn_id(c));
		return;
	}
	conn_ktls_stop_reading(c);
	if (type == KTLS_HS_KEY_UPDATE) {
		log_info("tls.key_update", "conn=%llu requested=%s action=close "
			 "reason=\"the kernel TLS in use cannot rekey\"", conn_id(c),
			 len > 4 && m[4] ? "yes" : "no");
		c2s_stream_error(c, "reset", "TLS key update is not supported on this connection; "
				 "please reconnect");
		return;
	}
	log_info("tls.error", "conn=%llu reason=\"handshake message %u after the handshake\" "
		 "action=close", conn_id(c), type);
	c2s_stream_error(c, "reset", "TLS renegotiation is not supported");
}

void conn_ktls_record(struct conn *c, unsigned type, const char *data, size_t len)
{
	if (c->closing || c->tls_mode != CONN_TLS_KTLS)
		return;	/* lingering after our close, or no longer reading */
	switch (type) {
	case KTLS_RECORD_DATA:
		conn_input_plaintext(c, data, len);
		return;
	case KTLS_RECORD_ALERT:
		conn_ktls_alert(c, (const unsigned char *)data, len);
		return;
	case KTLS_RECORD_HANDSHAKE:
		conn_ktls_handshake(c, (const unsigned char *)data, len);
		return;
	default:
		log_info("tls.error", "conn=%llu reason=\"unexpected record type %u\"", conn_id(c), type);
		tls_conn_mark_failed(c->tls);
		conn_close(c, CONN_CLOSE_ERROR);
		return;
	}
}
