/* SPDX-License-Identifier: MIT */
/*
 * Stream Management (XEP-0198, urn:xmpp:sm:3): stanza acknowledgements
 * and stream resumption for client streams.
 *
 * A session that sent <enable/> gets a struct sm_state (sessions without
 * SM carry only a NULL pointer). Every stanza sent to the client is
 * counted and a serialized copy is kept until the client acknowledges it
 * with <a h/>; the server asks for acks with <r/> at most once per loop
 * turn, and only when stanzas went out since the last request.
 *
 * Connection and session lifetimes are split for resumable sessions: when
 * the transport fails (EOF without </stream:stream>, socket error,
 * timeout, a reader too slow), the session stays in the directory,
 * "detached" (session->conn == NULL): it stays routable and available,
 * deliveries are queued, and the session ends only when the resumption
 * window (sm_resume_timeout) ends or a new stream resumes it. Unacked
 * stanzas of a session that ends are treated as undelivered: rerouted
 * (messages go to other resources or offline storage), iq requests get
 * service-unavailable, presence is dropped.
 *
 * Everything that ends a session from inside a delivery (a queue
 * overflow) is deferred to the end of the loop turn (sm_flush), so the
 * router never sees a session vanish while it walks a list of sessions.
 */
#ifndef STANZAD_SM_H
#define STANZAD_SM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#include "xml.h"

#define NS_SM		"urn:xmpp:sm:3"

/* The stream feature, offered once the client is authenticated. */
#define SM_FEATURE	"<sm xmlns='" NS_SM "'/>"

#define SM_ID_BYTES	18	/* random bytes of a resumption id (144 bits) */
#define SM_ID_LEN	24	/* its base64url text */
#define SM_TOMBSTONES	256	/* ended resumable sessions remembered for <failed h/> */

struct conn;
struct session;
struct worker;
struct out_chunk;
struct sm_state;

/* ---- Hooks for the stream layer (c2s.c, conn.c, router.c, worker.c) ---- */

/*
 * The c2s state-table handler for every urn:xmpp:sm:3 element the client
 * may send once authenticated: <enable/> and <resume/> (bind and ready
 * states), <r/> and <a/> (ready). Returns true (keep parsing) like every
 * c2s handler.
 */
bool sm_element(struct conn *c, struct xml_node *el);

/*
 * SASL2 and Bind2 inline (XEP-0198 section 7, sasl2.c): the same as the
 * <enable/> and <resume/> elements, except that the answer (<enabled/>,
 * <resumed/> or <failed/>) is appended to out for the caller's
 * <success/>. After a successful inline resumption (1) the caller
 * sends its <success/>, then calls sm_resume_inline_finish(), which
 * resends the stanzas the client has not acknowledged. 0: not resumed;
 * -EINPROGRESS: another node is asked for the session (cluster mode):
 * the answer is appended to sasl2_inline_out(c) later, and
 * sasl2_resume_answered() tells the caller.
 */
struct strbuf;
void sm_enable_inline(struct conn *c, struct xml_node *el, struct strbuf *out);
int sm_resume_inline(struct conn *c, struct xml_node *el, struct strbuf *out);
void sm_resume_inline_finish(struct conn *c);

/*
 * Cluster mode: resumption on another node than the one that held the
 * session (sm.c, "Resumption on another node").
 *
 * sm_export, on the holder: the account `bare`'s session with
 * resumption id `id` goes to node `to_node`: its state is appended to
 * out and the session ends here silently. false: no such session here.
 *
 * sm_take_answered, on the node the client reached: a node's answer for
 * connection (slot, gen) on worker w: the state (len bytes), or len 0
 * when that node has no such session. A state nobody waits for any more
 * is rerouted as undelivered.
 *
 * sm_conn_gone: c closes (a wait for another node's answer ends).
 */
bool sm_export(struct worker *w, const char *bare, const char *id, const char *to_node,
	       struct strbuf *out);
void sm_take_answered(struct worker *w, uint32_t slot, uint32_t gen, const char *id,
		      const char *state, size_t len);
void sm_conn_gone(struct conn *c);

/* A client stanza was handled in the ready state: counts it for 'h'. */
void sm_inbound(struct conn *c);

/*
 * Sends one serialized stanza (message, presence, iq in jabber:client) on
 * c. With SM on, counts it and keeps a copy until acknowledged. Returns
 * what conn_send() returns, or -ENOBUFS when the unacked queue is full
 * (the stream then ends at the end of the turn, the stanza is kept and
 * rerouted with the rest).
 */
int sm_send_stanza(struct conn *c, const char *data, size_t len);

/*
 * sm_send_stanza() without the send, for a stanza that leaves by another
 * path (the kernel offload, kmod.c): counts it and keeps its copy. 0, or
 * -ENOBUFS/-ENOMEM when it must not be sent (sm_send_stanza() would have
 * sent nothing either).
 */
int sm_count_stanza(struct conn *c, const char *data, size_t len);

/*
 * Delivery to a detached session (s->conn == NULL): the stanza is queued
 * for resumption (messages and presence get a XEP-0203 delay stamp).
 */
void sm_deliver_detached(struct session *s, const struct xml_node *st);

/* The worker that owns s's stream management state, or NULL without one. */
struct worker *sm_session_worker(const struct session *s);

/* The client closed its stream cleanly: no resumption; our last <a/> goes out. */
void sm_stream_closed(struct conn *c);

/*
 * c is closing and has a session. Returns true when stream management
 * keeps the session, detached, for resumption (c->sess is cleared), and
 * false when the session must end now.
 */
bool sm_conn_closing(struct conn *c);

/*
 * The session ends (it has left the directory already): unacked stanzas
 * are rerouted at the end of the turn, the SM state is freed.
 */
void sm_session_end(struct worker *w, struct session *s);

/* End of a loop turn: acks to request, overflowed sessions to end, unacked stanzas to reroute. */
void sm_flush(struct worker *w);

/*
 * Durability of acks (DESIGN: a stanza acknowledged to its sender is
 * committed): while a storage write caused by one of s's stanzas is in
 * flight, an <r/> from s is answered only once the write committed.
 * Every hold is released exactly once, when the write completes (either
 * way: a failure was answered with an error, which also settles it).
 */
void sm_hold_ack(struct session *s);
void sm_release_ack(struct session *s);
/* Shutdown: detached sessions end now (their unacked stanzas are rerouted). */
void sm_shutdown(struct worker *w);
/* Frees what is left at worker teardown. */
void sm_worker_destroy(struct worker *w);

/* ---- Pure parts, exposed for unit tests ---- */

/*
 * The queue of unacked stanzas: records {u32 length, u32 unix time,
 * bytes} packed into output chunks from the worker's pool, oldest first.
 * A record never spans chunks. An empty queue holds no memory.
 */
struct sm_queue {
	struct out_chunk *head, *tail;	/* head->off = first unread record */
	uint32_t count;			/* records queued */
	size_t bytes;			/* stanza bytes queued (headers excluded) */
};

#define SM_REC_HDR	8	/* bytes before each record's stanza */

/* Appends a copy of data. 0 or -ENOMEM. */
int sm_queue_push(struct sm_queue *q, struct worker *w, const void *data, size_t len,
		  uint32_t stamp);
/* Drops the n oldest records (n <= count). */
void sm_queue_drop(struct sm_queue *q, struct worker *w, uint32_t n);
/* The oldest record (NULL when empty); *len and *stamp set. */
const char *sm_queue_peek(const struct sm_queue *q, size_t *len, uint32_t *stamp);
/* Calls fn for each record, oldest first. */
void sm_queue_each(const struct sm_queue *q,
		   void (*fn)(void *arg, const char *data, size_t len, uint32_t stamp), void *arg);
/* Empties the queue. */
void sm_queue_clear(struct sm_queue *q, struct worker *w);

/*
 * XEP-0198 section 4 arithmetic (counters wrap from 2^32-1 to 0). The
 * peer acknowledges h; `acked` is its previous ack and `sent` our count.
 * Returns the number of newly acknowledged stanzas (0..sent-acked), or -1
 * when h acknowledges more than was sent (handled-count-too-high) or goes
 * back behind the previous ack (both look the same modulo 2^32).
 */
int64_t sm_ack_delta(uint32_t acked, uint32_t sent, uint32_t h);

/* Parses an xs:unsignedInt 'h' ("0".."4294967295", digits only). 0 or -EINVAL. */
int sm_parse_h(const char *s, uint32_t *out);

/* A new random resumption id: SM_ID_LEN base64url characters and a NUL. 0 or -errno. */
int sm_new_id(char out[SM_ID_LEN + 1]);

#endif
