/* SPDX-License-Identifier: MIT */
/*
 * Connections: the layer between the loop and the XMPP stream.
 *
 * A connection owns a socket, its output queue, its TLS state (while
 * userspace TLS is in use) and its XML stream. Bytes from the loop go
 * through TLS (if on) into the XML stream, whose stanzas go to the stream
 * layer (c2s.c). Output is queued with conn_send() and flushed by the
 * worker once per loop turn, one send in flight per connection.
 *
 * Lifetime (STYLE: never free a connection inside its own completion):
 * conn_close() marks it closing and cancels its operations; the worker
 * reaps it once no operation is in flight. A reaped slot gets a new
 * generation, so late completions and late storage replies are dropped.
 *
 * Memory: an idle connection holds only this struct (and its session);
 * no parser, no output buffer, no receive buffer.
 */
#ifndef STANZAD_CONN_H
#define STANZAD_CONN_H

#include <netinet/in.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include "loop.h"
#include "xml.h"

struct worker;
struct tls_conn;
struct session;
struct c2s_auth;
struct c2s_bind;
struct sasl2;
struct sm_take;
struct http_conn;
struct ws_conn;
struct s2s_conn;
struct control_conn;
struct conn_move;

/* Output is kept in chunks; small writes share one chunk. */
struct out_chunk {
	struct out_chunk *next;
	uint32_t len;		/* bytes written into data */
	uint32_t off;		/* bytes already sent */
	uint32_t cap;
	char data[];
};

#define CONN_CHUNK_SIZE		4096	/* regular chunk; larger writes get their own */

enum conn_kind {
	CONN_C2S = 1,
	CONN_HTTP,		/* HTTP listener (http.c); a WebSocket upgrade makes it CONN_C2S */
	CONN_S2S_IN,		/* a server connected to us (s2s_in.c) */
	CONN_S2S_OUT,		/* our link to a server (s2s_out.c) */
	CONN_COMPONENT,		/* an external component, XEP-0114 (component.c) */
	CONN_CONTROL,		/* the control socket (control.c): stanzactl requests */
};

/* Why a connection closed, for the log line. */
enum conn_close_reason {
	CONN_CLOSE_NONE = 0,
	CONN_CLOSE_PEER,		/* peer closed the stream or TCP */
	CONN_CLOSE_ERROR,		/* we sent a stream error */
	CONN_CLOSE_IO,			/* socket error */
	CONN_CLOSE_TIMEOUT,		/* a deadline expired */
	CONN_CLOSE_SHUTDOWN,		/* server shutting down */
	CONN_CLOSE_REPLACED,		/* resource conflict, new session won */
	CONN_CLOSE_SLOW,		/* output queue limit: the peer does not read */
};

/*
 * Where a connection's TLS record layer runs. After the handshake a
 * connection whose suite the kernel supports moves from USERSPACE through
 * HANDOFF (receive stopped, output draining, keys computed) to KTLS, where
 * the socket carries plaintext and the SSL object is freed (conn_ktls.c).
 */
enum conn_tls_mode {
	CONN_TLS_NONE = 0,		/* no TLS (yet) */
	CONN_TLS_USERSPACE,		/* OpenSSL's record layer */
	CONN_TLS_HANDOFF,		/* moving to the kernel */
	CONN_TLS_KTLS,			/* the kernel's record layer */
	CONN_TLS_KTLS_NO_RX,		/* kernel; receiving stopped for good (KeyUpdate) */
};

struct conn {
	struct worker *w;
	uint64_t id;			/* for logs; unique per process */
	int fd;
	uint32_t slot;
	uint32_t gen;
	uint8_t kind;			/* enum conn_kind */
	uint8_t state;			/* stream state (c2s.c) */
	uint8_t close_reason;		/* enum conn_close_reason */
	uint8_t auth_failures;
	uint8_t iq_async;		/* storage-backed iqs in flight (iq_async.h) */
	uint8_t tls_mode;		/* enum conn_tls_mode (conn_ktls.c) */
	uint8_t metrics_class;		/* counted under this class + 1, 0: not (metrics.c) */

	bool closing : 1;		/* no more input is processed */
	bool close_after_flush : 1;	/* shut down once the queue is empty */
	bool recv_armed : 1;
	bool send_inflight : 1;
	bool in_flush_list : 1;
	bool input_paused : 1;		/* waiting for an async step */
	bool direct_tls : 1;		/* accepted on the Direct TLS port */
	bool secure : 1;		/* TLS established */
	bool header_sent : 1;		/* our stream header is out */
	bool authenticated : 1;
	bool in_reap_list : 1;
	bool cancel_sent : 1;		/* reaping: cancel of in-flight ops queued */
	bool restart_pending : 1;	/* restart the XML stream after this element */
	bool overflowed : 1;		/* output limit hit: aborted at the end of the turn */
	bool ping_sent : 1;		/* idle check: our ping is unanswered */
	bool register_busy : 1;		/* an in-band registration request is running */
	bool websocket : 1;		/* XMPP over WebSocket, RFC 7395 (websocket.c) */
	bool abuse_counted : 1;		/* counts as unauthenticated for its source (abuse.c) */
	bool connect_inflight : 1;	/* outbound connect submitted (s2s) */
	bool kmod_pending : 1;		/* a copy waits in the offload batch (kmod.c) */
	bool kmod_refused : 1;		/* the offload module refused the socket (kmod.c) */
	uint32_t kmod_id;		/* socket id in the offload module, 0: none (kmod.c) */

	struct loop_timer timer;	/* the one deadline: handshake, auth, idle */
	uint64_t last_input_ms;
	uint64_t ping_sent_ms;		/* when our idle ping went out */
	/* Abuse limits (abuse.c): stanza deadline and inbound token buckets. */
	uint64_t stanza_start_ms;	/* an unfinished stanza began arriving; 0 none */
	uint64_t rate_tat_stanzas;	/* buckets as theoretical arrival times, us */
	uint64_t rate_tat_bytes;
	uint64_t auth_user_key;		/* the account name a SASL exchange named (abuse.c) */

	struct out_chunk *out_head, *out_tail;
	size_t out_bytes;
	struct conn *flush_next;	/* worker's list of connections to flush */
	struct conn *reap_next;		/* worker's list of closed connections */
	struct conn *overflow_next;	/* worker's list of connections to cut off */

	/* Plaintext held back while input is paused (malloc'd, bounded). */
	char *pending_in;
	size_t pending_len;

	struct xml_stream xs;
	struct tls_conn *tls;
	struct session *sess;		/* after resource binding */
	struct c2s_auth *auth;		/* during SASL / registration */
	struct c2s_bind *bind;		/* a bind waiting for the account's state */
	struct sasl2 *sasl2;		/* SASL2/Bind2/FAST negotiation in progress (sasl2.c) */
	struct sm_take *sm_take;	/* a resumption another node is asked for (sm.c) */
	struct http_conn *http;		/* CONN_HTTP: the request in progress (http.c) */
	struct ws_conn *ws;		/* WebSocket framing state (websocket.c) */
	struct s2s_conn *s2s;		/* s2s and component stream state (s2s.c) */
	struct control_conn *ctl;	/* CONN_CONTROL: the request being answered (control.c) */
	char *jid;			/* bare JID after SASL (malloc'd) */
	struct conn_move *move;		/* moving to its home worker (worker_migrate) */

	char stream_id[24];
	char lang[8];			/* xml:lang of the stream, "en" default */
	struct sockaddr_in6 peer;	/* IPv4 as v4-mapped */
};

/* Human-readable peer "addr:port" for logs. */
const char *conn_peer_str(const struct conn *c, char *buf, size_t size);

/*
 * Queues bytes for the peer (encrypting them first when TLS is on). Never
 * blocks. When the queue exceeds the output limit the connection is
 * closed (a peer that never reads cannot grow our memory). Returns 0, or
 * -ENOBUFS/-ENOMEM after closing the connection.
 */
int conn_send(struct conn *c, const void *data, size_t len);

/*
 * Queues bytes on the transport as they are (TLS applies, WebSocket
 * framing does not): for the HTTP and WebSocket layers. Same returns as
 * conn_send.
 */
int conn_send_transport(struct conn *c, const void *data, size_t len);

/*
 * Feeds XML to the connection's stream (the TCP path after TLS; the
 * WebSocket layer per message). Handles pauses (the rest is held),
 * stream restarts and stream errors.
 */
void conn_input_xml(struct conn *c, const char *data, size_t len);

/* Serializes a stanza (top ns jabber:client) and queues it. */
int conn_send_node(struct conn *c, const struct xml_node *n);

/*
 * Closes: stops input, lets queued output drain (bounded by a short
 * deadline), then cancels and reaps. Safe to call more than once and from
 * any handler; the first reason wins.
 */
void conn_close(struct conn *c, enum conn_close_reason reason);

/*
 * Closes at once: no linger, queued output is dropped. For a peer that is
 * gone or misbehaves at the transport level.
 */
void conn_abort(struct conn *c, enum conn_close_reason reason);

/* The worker calls this when a send completed and nothing is queued. */
void conn_output_drained(struct conn *c);

/* Pauses input processing; later bytes are held (bounded) until resume. */
void conn_pause_input(struct conn *c);
/* Resumes: processes held input now (may run stanza handlers). */
void conn_resume_input(struct conn *c);

/*
 * Starts TLS on the connection (STARTTLS after <proceed/>, or right at
 * accept for Direct TLS). Bytes received after this point are ciphertext.
 * 0 or -errno (then the caller closes).
 */
int conn_start_tls(struct conn *c);

/*
 * Plaintext from the peer into the XML stream (after userspace TLS, or
 * straight from a kTLS socket). Records the input time.
 */
void conn_input_plaintext(struct conn *c, const char *data, size_t len);

/* ---- kTLS (conn_ktls.c) ---- */

/*
 * The TLS handshake just completed: tells the stream layer, then starts
 * the handoff to the kernel when this connection qualifies (the receive is
 * cancelled so no byte past the switch point is read by userspace).
 */
void conn_tls_established(struct conn *c);

/*
 * Moves a handoff on: called whenever the receive stopped or the output
 * drained. Switches once nothing is in flight and OpenSSL holds no partial
 * record, reads the rest of a record first, or falls back to userspace.
 */
void conn_ktls_step(struct conn *c);

/* A record from a kTLS socket (plaintext; type 23 data, 21 alert, 22 handshake). */
void conn_ktls_record(struct conn *c, unsigned type, const char *data, size_t len);

/* Sends close_notify through the kernel once, when due (output drained). */
void conn_ktls_close_notify(struct conn *c);

/* "userspace", "ktls" (also while moving there) or "none", for logs. */
const char *conn_tls_mode_name(const struct conn *c);

/* Re-arms the connection's deadline (handshake, auth or idle). */
void conn_set_deadline(struct conn *c, uint64_t ms);

/* Input processing entry for the worker (bytes straight from the socket). */
void conn_input(struct conn *c, const char *data, size_t len);
/* The peer's TCP stream ended (err 0) or failed (err < 0). */
void conn_input_end(struct conn *c, int err);

static inline int conn_send_str(struct conn *c, const char *s)
{
	return conn_send(c, s, strlen(s));
}

#endif
