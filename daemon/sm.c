/* SPDX-License-Identifier: MIT */
/*
 * Stream Management (XEP-0198). See sm.h for the model; the parts:
 *
 *   queue      serialized copies of unacked stanzas in pooled chunks
 *   counting   sm_send_stanza() (every stanza to a client passes there,
 *              through conn_send_node()) and sm_inbound()
 *   elements   <enable/>, <r/>, <a/>, <resume/> from the client
 *   lifetime   detach on a broken transport, the resumption window,
 *              resumption onto a new stream, the end of the session
 *   flush      once per loop turn: <r/> where stanzas went out since the
 *              last request, sessions whose queue overflowed are ended,
 *              unacked stanzas of ended sessions are rerouted
 *
 * Counters follow XEP-0198 section 4: 32-bit, wrapping from 2^32-1 to 0,
 * so every comparison is a difference modulo 2^32.
 */
#include <errno.h>
#include <openssl/crypto.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "account.h"
#include "c2s.h"
#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "csi.h"
#include "log.h"
#include "metrics.h"
#include "presence.h"
#include "router.h"
#include "sasl2.h"
#include "server.h"
#include "session.h"
#include "sm.h"
#include "stanza.h"
#include "strbuf.h"
#include "worker.h"

#define SM_NS_DELAY		"urn:xmpp:delay"
#define SM_OVERFLOW_SLACK	2	/* after an overflow, keep up to this many times the limit */
#define SM_REPARSE_LIMIT	((size_t)1 << 30)	/* our own copies: no stanza limit */

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

/* Per-session state, allocated on <enable/>. */
struct sm_state {
	struct session *sess;		/* NULL once the session ended (an orphan) */
	struct worker *w;
	struct sm_queue q;		/* unacked stanzas, oldest first */
	uint32_t out_count;		/* stanzas sent or queued since <enabled/> */
	uint32_t acked;			/* the client's last 'h' */
	uint32_t in_count;		/* our 'h': client stanzas handled */
	uint32_t r_at;			/* out_count when our last <r/> went out */
	uint32_t window_s;		/* resumption window; 0 = not resumable */
	bool resumable : 1;
	bool r_pending : 1;		/* our <r/> is not answered yet */
	bool clean_close : 1;		/* the client sent </stream:stream> */
	bool overflowed : 1;		/* queue limit hit: the session ends this turn */
	bool in_flush : 1;		/* on the worker's flush list */
	bool detached : 1;		/* on the worker's detached list, timer armed */
	bool a_deferred : 1;		/* an <r/> waits for ack_holds to reach 0 */
	uint32_t ack_holds;		/* storage writes this client's stanzas caused, in flight */

	/* Worker lists (doubly linked, so leaving is O(1)). */
	struct sm_state *flush_next, **flush_pprev;
	struct sm_state *det_next, **det_pprev;
	struct sm_state *orphan_next;
	struct loop_timer timer;	/* the resumption window while detached */
	char id[SM_ID_LEN + 1];		/* resumption id ("" when not resumable) */
};

/* An ended resumable session, remembered to answer a late <resume/> with its h. */
struct sm_tomb {
	uint64_t acct;			/* keyed hash of the bare JID */
	uint32_t h;
	bool used;
	char id[SM_ID_LEN + 1];
};

/* Per-worker lists, allocated with the first <enable/>. */
struct sm_worker {
	struct sm_state *flush;		/* need an <r/> or an end this turn */
	struct sm_state *detached;	/* sessions without a stream */
	struct sm_state *orphans;	/* ended sessions with unacked stanzas */
	struct arena deliver_arena;	/* delay stamps of detached deliveries */
	struct arena reroute_arena;	/* delay stamps of rerouted messages */
	uint64_t seed;			/* for sm_tomb.acct */
	unsigned tomb_next;
	struct sm_tomb tombs[SM_TOMBSTONES];
};

/* A connection's id for logs; 0 for none (a detached session). */
static unsigned long long sm_cid(const struct conn *c)
{
	return c ? (unsigned long long)c->id : 0ULL;
}

static const struct config *sm_cfg(const struct sm_state *sm)
{
	return sm->w->srv->cfg;
}

/* ---- Pure parts: queue, arithmetic, ids ---- */

int sm_queue_push(struct sm_queue *q, struct worker *w, const void *data, size_t len,
		  uint32_t stamp)
{
	size_t need = SM_REC_HDR + len;
	struct out_chunk *t = q->tail;
	uint32_t l32 = (uint32_t)len;

	if (len > UINT32_MAX - SM_REC_HDR)
		return -EMSGSIZE;
	/* A record never spans chunks: a big one gets a chunk of its own. */
	if (!t || t->cap - t->len < need) {
		t = worker_chunk_get(w, need);
		if (!t)
			return -ENOMEM;
		if (q->tail)
			q->tail->next = t;
		else
			q->head = t;
		q->tail = t;
	}
	memcpy(t->data + t->len, &l32, 4);
	memcpy(t->data + t->len + 4, &stamp, 4);
	memcpy(t->data + t->len + SM_REC_HDR, data, len);
	t->len += (uint32_t)need;
	q->count++;
	q->bytes += len;
	return 0;
}

/* Length of the record at chunk offset off (headers are unaligned: memcpy). */
static uint32_t sm_rec_len(const struct out_chunk *ch, uint32_t off)
{
	uint32_t l;

	memcpy(&l, ch->data + off, 4);
	return l;
}

void sm_queue_drop(struct sm_queue *q, struct worker *w, uint32_t n)
{
	while (n && q->head) {
		struct out_chunk *h = q->head;
		uint32_t l = sm_rec_len(h, h->off);

		h->off += SM_REC_HDR + l;
		q->count--;
		q->bytes -= l;
		n--;
		if (h->off >= h->len) {
			/* Chunk consumed: back to the pool, so an empty queue holds nothing. */
			q->head = h->next;
			if (!q->head)
				q->tail = NULL;
			worker_chunk_put(w, h);
		}
	}
}

const char *sm_queue_peek(const struct sm_queue *q, size_t *len, uint32_t *stamp)
{
	const struct out_chunk *h = q->head;

	if (!h)
		return NULL;
	*len = sm_rec_len(h, h->off);
	memcpy(stamp, h->data + h->off + 4, 4);
	return h->data + h->off + SM_REC_HDR;
}

void sm_queue_each(const struct sm_queue *q,
		   void (*fn)(void *arg, const char *data, size_t len, uint32_t stamp), void *arg)
{
	for (const struct out_chunk *ch = q->head; ch; ch = ch->next) {
		for (uint32_t off = ch->off; off < ch->len;) {
			uint32_t l = sm_rec_len(ch, off), stamp;

			memcpy(&stamp, ch->data + off + 4, 4);
			fn(arg, ch->data + off + SM_REC_HDR, l, stamp);
			off += SM_REC_HDR + l;
		}
	}
}

void sm_queue_clear(struct sm_queue *q, struct worker *w)
{
	struct out_chunk *ch = q->head;

	while (ch) {
		struct out_chunk *next = ch->next;

		worker_chunk_put(w, ch);
		ch = next;
	}
	memset(q, 0, sizeof(*q));
}

int64_t sm_ack_delta(uint32_t acked, uint32_t sent, uint32_t h)
{
	uint32_t outstanding = sent - acked;	/* modulo 2^32 */
	uint32_t n = h - acked;

	if (n > outstanding)
		return -1;
	return n;
}

int sm_parse_h(const char *s, uint32_t *out)
{
	uint64_t v = 0;
	size_t i = 0;

	if (!s)
		return -EINVAL;
	if (s[0] == '+')	/* xs:unsignedInt allows an explicit sign */
		i++;
	if (!s[i])
		return -EINVAL;
	for (; s[i]; i++) {
		if (s[i] < '0' || s[i] > '9')
			return -EINVAL;
		v = v * 10 + (uint64_t)(s[i] - '0');
		if (v > UINT32_MAX)
			return -EINVAL;
	}
	*out = (uint32_t)v;
	return 0;
}

int sm_new_id(char out[SM_ID_LEN + 1])
{
	static const char b64url[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char r[SM_ID_BYTES];
	size_t o = 0;

	/* getrandom() never returns short for <= 256 bytes once seeded. */
	if (getrandom(r, sizeof(r), 0) != (ssize_t)sizeof(r))
		return -EIO;
	for (size_t i = 0; i < sizeof(r); i += 3) {
		uint32_t v = (uint32_t)r[i] << 16 | (uint32_t)r[i + 1] << 8 | r[i + 2];

		out[o++] = b64url[(v >> 18) & 63];
		out[o++] = b64url[(v >> 12) & 63];
		out[o++] = b64url[(v >> 6) & 63];
		out[o++] = b64url[v & 63];
	}
	out[o] = '\0';
	explicit_bzero(r, sizeof(r));
	return 0;
}

/* ---- Worker lists ---- */

/* Frees a state whose queue is empty or handed back; the id is a secret. */
static void sm_free(struct sm_state *sm)
{
	explicit_bzero(sm->id, sizeof(sm->id));
	free(sm);
}

/*
 * The worker's SM lists, allocated at the first <enable/> so a worker
 * whose clients never use stream management pays nothing. NULL on ENOMEM.
 */
static struct sm_worker *sm_worker_get(struct worker *w)
{
	if (!w->sm) {
		w->sm = calloc(1, sizeof(*w->sm));
		if (!w->sm)
			return NULL;
		arena_init(&w->sm->deliver_arena, 1024);
		arena_init(&w->sm->reroute_arena, 1024);
		if (getrandom(&w->sm->seed, sizeof(w->sm->seed), 0) != sizeof(w->sm->seed))
			w->sm->seed = (uint64_t)(uintptr_t)w->sm;
	}
	return w->sm;
}

/* Asks for a visit at the end of the turn (an <r/> to send, or an overflow). */
static void sm_want_flush(struct sm_state *sm)
{
	struct sm_worker *sw = sm->w->sm;

	if (sm->in_flush || !sm->sess)
		return;
	sm->in_flush = true;
	sm->flush_next = sw->flush;
	if (sw->flush)
		sw->flush->flush_pprev = &sm->flush_next;
	sm->flush_pprev = &sw->flush;
	sw->flush = sm;
}

/* Leaves the flush list (no-op when not on it). */
static void sm_unflush(struct sm_state *sm)
{
	if (!sm->in_flush)
		return;
	*sm->flush_pprev = sm->flush_next;
	if (sm->flush_next)
		sm->flush_next->flush_pprev = sm->flush_pprev;
	sm->in_flush = false;
	sm->flush_next = NULL;
	sm->flush_pprev = NULL;
}

/* Leaves the detached list and stops the resumption window (no-op when attached). */
static void sm_undetach(struct sm_state *sm)
{
	if (!sm->detached)
		return;
	loop_timer_cancel(&sm->timer);
	*sm->det_pprev = sm->det_next;
	if (sm->det_next)
		sm->det_next->det_pprev = sm->det_pprev;
	sm->detached = false;
	sm->det_next = NULL;
	sm->det_pprev = NULL;
}

/*
 * A seeded hash of a bare JID: tombstones remember whose session it was
 * without keeping the JID itself. The id is the secret; this only makes a
 * leaked id useless to another account.
 */
static uint64_t sm_acct_hash(const struct sm_worker *sw, const char *bare, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ sw->seed;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)bare[i];
		h *= 0x100000001b3ULL;
	}
	return h ^ (h >> 31);
}

/* Remembers an ended resumable session (the ring overwrites the oldest). */
static void sm_tomb_add(struct sm_worker *sw, const struct sm_state *sm, const struct session *s)
{
	struct sm_tomb *t = &sw->tombs[sw->tomb_next++ % SM_TOMBSTONES];

	t->used = true;
	t->h = sm->in_count;
	t->acct = sm_acct_hash(sw, s->jid, s->bare_len);
	memcpy(t->id, sm->id, sizeof(t->id));
}

/* Finds and forgets the tombstone of id for the account. 0 and *h, or -ENOENT. */
static int sm_tomb_take(struct sm_worker *sw, const char *id, const char *bare, uint32_t *h)
{
	uint64_t acct;

	if (!sw || strlen(id) != SM_ID_LEN)
		return -ENOENT;
	acct = sm_acct_hash(sw, bare, strlen(bare));
	for (unsigned i = 0; i < SM_TOMBSTONES; i++) {
		struct sm_tomb *t = &sw->tombs[i];

		if (t->used && t->acct == acct && CRYPTO_memcmp(t->id, id, SM_ID_LEN) == 0) {
			*h = t->h;
			memset(t, 0, sizeof(*t));
			return 0;
		}
	}
	return -ENOENT;
}

/* ---- Counting and queueing ---- */

/* Is this serialized element a stanza (the only elements XEP-0198 counts)? */
static bool sm_is_stanza(const char *d, size_t len)
{
	static const char *const names[] = { "<message", "<presence", "<iq" };

	for (size_t i = 0; i < 3; i++) {
		size_t n = strlen(names[i]);

		if (len > n && memcmp(d, names[i], n) == 0 &&
		    (d[n] == ' ' || d[n] == '>' || d[n] == '/'))
			return true;
	}
	return false;
}

/*
 * Counts one outbound stanza and keeps its copy; sends it on c when c is
 * not NULL. A full queue marks the session for ending at the end of the
 * turn (from here, inside a delivery, the router may be walking the
 * session list); the stanza is still kept, to be rerouted with the rest.
 */
static int sm_track(struct sm_state *sm, struct conn *c, const char *data, size_t len)
{
	const struct config *cfg = sm_cfg(sm);
	uint32_t max = cfg->sm_max_unacked;
	/* Never so small that one largest stanza could not be kept. */
	size_t max_bytes = cfg->sm_max_unacked_bytes > 2 * (size_t)cfg->max_stanza_bytes ?
			   cfg->sm_max_unacked_bytes : 2 * (size_t)cfg->max_stanza_bytes;
	uint32_t stamp = (uint32_t)time(NULL);
	int ret;

	if (sm->overflowed || sm->q.count >= max || sm->q.bytes + len > max_bytes) {
		if (!sm->overflowed) {
			log_warn("sm.overflow", "conn=%llu jid=%s unacked=%u bytes=%zu limit=%u "
				 "limit_bytes=%zu", sm_cid(c), sm->sess->jid, sm->q.count, sm->q.bytes,
				 max, max_bytes);
			sm->overflowed = true;
			sm_want_flush(sm);
		}
		if (sm->q.count >= (uint64_t)max * SM_OVERFLOW_SLACK ||
		    sm->q.bytes + len > max_bytes * SM_OVERFLOW_SLACK ||
		    sm_queue_push(&sm->q, sm->w, data, len, stamp) < 0)
			log_warn("sm.dropped", "jid=%s bytes=%zu reason=overflow", sm->sess->jid, len);
		return -ENOBUFS;
	}
	ret = sm_queue_push(&sm->q, sm->w, data, len, stamp);
	if (ret < 0) {
		/* Without the copy the counts would lie: end the session instead. */
		log_error("sm.dropped", "jid=%s bytes=%zu reason=\"out of memory\"", sm->sess->jid, len);
		sm->overflowed = true;
		sm_want_flush(sm);
		return ret;
	}
	sm->out_count++;
	if (!sm->r_pending)
		sm_want_flush(sm);
	return c ? conn_send(c, data, len) : 0;
}

int sm_send_stanza(struct conn *c, const char *data, size_t len)
{
	struct sm_state *sm = c->sess ? c->sess->sm : NULL;

	metrics_stanza_out(&c->w->metrics, data, len);	/* every stanza to a client (metrics.h) */
	if (!sm || !sm_is_stanza(data, len))
		return conn_send(c, data, len);
	return sm_track(sm, c, data, len);
}

int sm_count_stanza(struct conn *c, const char *data, size_t len)
{
	struct sm_state *sm = c->sess ? c->sess->sm : NULL;

	metrics_stanza_out(&c->w->metrics, data, len);	/* sent by the offload module */
	if (!sm || !sm_is_stanza(data, len))
		return 0;
	return sm_track(sm, NULL, data, len);
}

void sm_inbound(struct conn *c)
{
	if (c->sess && c->sess->sm)
		c->sess->sm->in_count++;
}

/* Adds <delay xmlns='urn:xmpp:delay' from=domain stamp=.../> unless st has one (XEP-0203). */
static struct xml_node *sm_add_delay(struct arena *a, struct xml_node *st, const char *domain,
				     time_t when)
{
	struct xml_node *d;
	char stamp[32];
	struct tm tm;

	if (xml_child(st, SM_NS_DELAY, "delay"))
		return NULL;
	gmtime_r(&when, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	d = xml_node_new(a, SM_NS_DELAY, "delay");
	if (!d || xml_attr_set(a, d, "from", domain) < 0 || xml_attr_set(a, d, "stamp", stamp) < 0)
		return NULL;
	xml_node_append(st, d);
	return d;
}

struct worker *sm_session_worker(const struct session *s)
{
	return s->sm ? s->sm->w : NULL;
}

void sm_deliver_detached(struct session *s, const struct xml_node *st)
{
	struct sm_state *sm = s->sm;
	struct sm_worker *sw;
	struct strbuf *out;
	struct xml_node *delay = NULL;
	enum stanza_kind kind = stanza_kind(st);

	if (!sm) {
		log_error("sm.dropped", "jid=%s reason=\"no stream and no stream management\"", s->jid);
		return;
	}
	sw = sm->w->sm;
	out = &sm->w->scratch;
	/*
	 * The client sees these late: stamp messages and presence with the
	 * time they arrived (the stamp is removed again right after, the tree
	 * may be delivered to other sessions too).
	 */
	if (kind == STANZA_MESSAGE || kind == STANZA_PRESENCE)
		delay = sm_add_delay(&sw->deliver_arena, (struct xml_node *)st, sm_cfg(sm)->domain,
				     time(NULL));
	strbuf_clear(out);
	xml_serialize(out, st, XML_NS_CLIENT);
	if (delay) {
		xml_node_remove(delay);
		arena_reset(&sw->deliver_arena);
	}
	if (out->oom) {
		log_error("sm.dropped", "jid=%s reason=\"out of memory\"", s->jid);
	} else {
		sm_track(sm, NULL, out->data, out->len);
		log_debug("sm.queued", "jid=%s unacked=%u", s->jid, sm->q.count);
	}
	strbuf_clear(out);
}

/* ---- Elements from the client ---- */

/*
 * SASL2/Bind2 inline negotiation (sm_enable_inline, sm_resume_inline):
 * while set, the answers to <enable/> and <resume/> go here instead of
 * onto the stream, to be wrapped in the caller's <success/>.
 */
static __thread struct strbuf *sm_inline_out;

static void sm_emit(struct conn *c, const char *text)
{
	if (sm_inline_out)
		strbuf_puts(sm_inline_out, text);
	else
		conn_send_str(c, text);
}

/*
 * <failed/> with a stanza error condition (XEP-0198 section 5), and the
 * 'h' we handled when h is given (a session that timed out).
 */
static void sm_send_failed(struct conn *c, const char *condition, const uint32_t *h)
{
	char buf[192];

	if (h)
		snprintf(buf, sizeof(buf), "<failed xmlns='" NS_SM "' h='%u'><%s xmlns='" NS_STANZAS
			 "'/></failed>", *h, condition);
	else
		snprintf(buf, sizeof(buf), "<failed xmlns='" NS_SM "'><%s xmlns='" NS_STANZAS
			 "'/></failed>", condition);
	sm_emit(c, buf);
}

/* The client acknowledged more than we sent (XEP-0198 section 5). */
static void sm_count_error(struct conn *c, struct sm_state *sm, uint32_t h)
{
	char buf[512];

	snprintf(buf, sizeof(buf),
		 "<stream:error><undefined-condition xmlns='" NS_STREAMS "'/>"
		 "<text xmlns='" NS_STREAMS "' xml:lang='en'>You acknowledged %u stanzas, but I "
		 "only sent you %u so far.</text>"
		 "<handled-count-too-high xmlns='" NS_SM "' h='%u' send-count='%u'/>"
		 "</stream:error></stream:stream>",
		 h, sm->out_count, h, sm->out_count);
	conn_send_str(c, buf);
	log_info("stream.error", "conn=%llu condition=undefined-condition sm=handled-count-too-high "
		 "h=%u sent=%u acked=%u", sm_cid(c), h, sm->out_count, sm->acked);
	conn_close(c, CONN_CLOSE_ERROR);
}

/*
 * <enable resume? max?/>: only once and only after binding (else
 * <failed><unexpected-request/>). With resume='true' (or '1') and a
 * nonzero sm_resume_timeout the session gets a random id and a window,
 * the shorter of ours and the client's 'max'. Counting starts now.
 */
static void sm_enable(struct conn *c, struct xml_node *el)
{
	const struct config *cfg = c->w->srv->cfg;
	const char *resume = xml_attr_get(el, "resume");
	const char *max = xml_attr_get(el, "max");
	struct session *s = c->sess;
	struct sm_state *sm;
	uint32_t client_max;
	char buf[160];

	/* XEP-0198 section 3: after binding, once. */
	if (!s || s->sm) {
		sm_send_failed(c, "unexpected-request", NULL);
		return;
	}
	sm = sm_worker_get(c->w) ? calloc(1, sizeof(*sm)) : NULL;
	if (!sm) {
		sm_send_failed(c, "internal-server-error", NULL);
		return;
	}
	sm->sess = s;
	sm->w = c->w;
	sm->timer.fn = NULL;
	if (resume && (strcmp(resume, "true") == 0 || strcmp(resume, "1") == 0) &&
	    cfg->sm_resume_timeout && sm_new_id(sm->id) == 0) {
		sm->resumable = true;
		sm->window_s = cfg->sm_resume_timeout;
		/* The client may prefer a shorter window. */
		if (max && sm_parse_h(max, &client_max) == 0 && client_max && client_max < sm->window_s)
			sm->window_s = client_max;
	}
	s->sm = sm;
	if (sm->resumable)
		snprintf(buf, sizeof(buf), "<enabled xmlns='" NS_SM "' id='%s' resume='true' max='%u'/>",
			 sm->id, sm->window_s);
	else
		snprintf(buf, sizeof(buf), "<enabled xmlns='" NS_SM "'/>");
	sm_emit(c, buf);
	log_info("sm.enable", "conn=%llu jid=%s resume=%s max=%u", sm_cid(c), s->jid,
		 sm->resumable ? "yes" : "no", sm->window_s);
}

/*
 * <r/>: answered with our count, at once unless a stanza it covers is still
 * on its way to storage (an offline message): an ack is a promise that
 * the stanza survives a crash, so the answer waits for the commit
 * (sm_release_ack), which is milliseconds away.
 */
static void sm_request(struct conn *c)
{
	struct sm_state *sm = c->sess->sm;
	char buf[64];

	if (sm->ack_holds) {
		sm->a_deferred = true;
		return;
	}
	snprintf(buf, sizeof(buf), "<a xmlns='" NS_SM "' h='%u'/>", sm->in_count);
	conn_send_str(c, buf);
	/* Piggyback our own request when the client owes us one. */
	if (!sm->r_pending && sm->out_count != sm->acked)
		sm_want_flush(sm);
}

/*
 * <a h/>: drops the newly acknowledged stanzas from the queue. An 'h'
 * that is no unsignedInt is invalid-xml; one above what we sent (or
 * behind the previous ack) is handled-count-too-high. Either ends the
 * stream, and the unacked stanzas are rerouted.
 */
static void sm_ack(struct conn *c, struct xml_node *el)
{
	struct sm_state *sm = c->sess->sm;
	uint32_t h;
	int64_t n;

	if (sm_parse_h(xml_attr_get(el, "h"), &h) < 0) {
		c2s_stream_error(c, "invalid-xml", "<a/> needs an 'h' that is an unsignedInt");
		return;
	}
	n = sm_ack_delta(sm->acked, sm->out_count, h);
	if (n < 0) {
		sm_count_error(c, sm, h);
		return;
	}
	sm_queue_drop(&sm->q, c->w, (uint32_t)n);
	sm->acked = h;
	sm->r_pending = false;
	/* Stanzas went out after our last request: ask again at the end of the turn. */
	if (sm->out_count != sm->acked && sm->out_count != sm->r_at)
		sm_want_flush(sm);
}

/* The session with resumption id `id` among the account's, or NULL. */
static struct session *sm_find(struct worker *w, const char *bare, const char *id)
{
	if (strlen(id) != SM_ID_LEN)
		return NULL;
	for (struct session *s = sessdir_find_bare(w->sessions, bare, strlen(bare)); s;
	     s = s->next)
		if (s->sm && s->sm->resumable && CRYPTO_memcmp(s->sm->id, id, SM_ID_LEN) == 0)
			return s;
	return NULL;
}

/* Resends one queued record on the resumed stream; it keeps its number. */
static void sm_resend_one(void *arg, const char *data, size_t len, uint32_t stamp)
{
	conn_send(arg, data, len);
}

/* After <resumed/> went out: what the client did not see, in order, uncounted. */
static void sm_resume_resend(struct conn *c)
{
	struct session *s = c->sess;

	sm_queue_each(&s->sm->q, sm_resend_one, c);
	csi_stream_resumed(s);	/* XEP-0352 5.2: active again; held presence follows */
}

static int sm_take_start(struct conn *c, const char *previd, uint32_t h);

/* <failed><item-not-found/> for a resumption id that is not (or no longer) here. */
static void sm_resume_not_found(struct conn *c, const char *previd, const char *why)
{
	char idbuf[48];
	uint32_t th;
	/* Known but timed out: tell the client how far we got (XEP-0198 section 5). */
	bool known = c->w->sm && sm_tomb_take(c->w->sm, previd, c->jid, &th) == 0;

	sm_send_failed(c, "item-not-found", known ? &th : NULL);
	METRIC_INC(c->w->metrics.sm_resume_failed);
	log_info("sm.resume_failed", "conn=%llu jid=%s previd=%s reason=%s", sm_cid(c), c->jid,
		 log_sanitize(idbuf, sizeof(idbuf), previd, strlen(previd)),
		 known ? "expired" : why);
}

static void sm_resume_session(struct conn *c, struct session *s, uint32_t h);

/*
 * A half-open stream the server still believes in loses its session to
 * the resumption (XEP-0198 section 5): closed with conflict. Returns it
 * (NULL when the session was detached).
 */
static struct conn *sm_take_from_stream(struct session *s)
{
	struct conn *old = s->conn;

	if (old) {
		old->sess = NULL;
		s->conn = NULL;
		old->close_reason = CONN_CLOSE_REPLACED;
		c2s_stream_error(old, "conflict", "replaced by a resumed stream");
	}
	return old;
}

/*
 * <resume previd h/> instead of a bind: takes the session over from its
 * old stream (closed with conflict if it is still open) or from the
 * detached state, drops what the client acknowledged and resends the rest.
 * In cluster mode a session not found here may be held by another node,
 * which is asked for it (sm_take_start): the answer comes later.
 */
static void sm_resume(struct conn *c, struct xml_node *el)
{
	const char *previd = xml_attr_get(el, "previd");
	struct session *s;
	uint32_t h;

	if (c->sess || c->sm_take) {
		sm_send_failed(c, "unexpected-request", NULL);	/* bound already */
		return;
	}
	if (!previd || sm_parse_h(xml_attr_get(el, "h"), &h) < 0) {
		sm_send_failed(c, "bad-request", NULL);
		return;
	}
	s = sm_find(c->w, c->jid, previd);
	if (!s && cluster_enabled() && sm_take_start(c, previd, h) == 0)
		return;
	if (!s || s->sm->overflowed) {
		sm_resume_not_found(c, previd, "unknown");
		return;
	}
	sm_resume_session(c, s, h);
}

/* Resumes s, found for c's <resume/> with the client's count h. */
static void sm_resume_session(struct conn *c, struct session *s, uint32_t h)
{
	struct sm_state *sm = s->sm;
	struct conn *old;
	char buf[128];
	int64_t n;

	n = sm_ack_delta(sm->acked, sm->out_count, h);
	if (n < 0) {
		sm_send_failed(c, "undefined-condition", NULL);
		METRIC_INC(c->w->metrics.sm_resume_failed);
		log_info("sm.resume_failed", "conn=%llu jid=%s reason=handled-count-too-high h=%u "
			 "sent=%u", sm_cid(c), s->jid, h, sm->out_count);
		return;
	}
	old = sm_take_from_stream(s);
	sm_undetach(sm);
	sm_queue_drop(&sm->q, c->w, (uint32_t)n);
	sm->acked = h;
	c2s_resume_session(c, s);

	snprintf(buf, sizeof(buf), "<resumed xmlns='" NS_SM "' previd='%s' h='%u'/>", sm->id,
		 sm->in_count);
	sm_emit(c, buf);
	/* Inline (SASL2): the resend follows the caller's <success/> (sm_resume_inline_finish). */
	if (!sm_inline_out)
		sm_resume_resend(c);
	sm->r_pending = false;
	sm->r_at = sm->acked;
	if (sm->q.count)
		sm_want_flush(sm);
	METRIC_INC(c->w->metrics.sm_resumed);
	log_info("sm.resume", "conn=%llu jid=%s old_conn=%llu acked=%u resent=%u", sm_cid(c), s->jid,
		 sm_cid(old), (unsigned)n, sm->q.count);
}

/* Dispatch by name: the state table already checked the namespace. */
bool sm_element(struct conn *c, struct xml_node *el)
{
	const char *name = el->name;

	if (strcmp(name, "enable") == 0) {
		sm_enable(c, el);
	} else if (strcmp(name, "resume") == 0) {
		sm_resume(c, el);
	} else if (!c->sess || !c->sess->sm) {
		/* <r/> or <a/> without <enable/>: nothing to count; ignore, as Prosody does. */
		log_debug("sm.ignored", "conn=%llu element=%s", sm_cid(c), name);
	} else if (strcmp(name, "r") == 0) {
		sm_request(c);
	} else if (strcmp(name, "a") == 0) {
		sm_ack(c, el);
	}
	return true;
}

void sm_enable_inline(struct conn *c, struct xml_node *el, struct strbuf *out)
{
	sm_inline_out = out;
	sm_enable(c, el);
	sm_inline_out = NULL;
}

int sm_resume_inline(struct conn *c, struct xml_node *el, struct strbuf *out)
{
	sm_inline_out = out;
	sm_resume(c, el);
	sm_inline_out = NULL;
	if (c->sm_take)
		return -EINPROGRESS;
	return c->sess != NULL;
}

void sm_resume_inline_finish(struct conn *c)
{
	if (c->sess && c->sess->sm)
		sm_resume_resend(c);
}

/* ---- Resumption on another node (cluster mode) ---- */

static void sm_reroute(struct worker *w, struct sm_state *sm);

/*
 * A client resumes where the load balancer puts it, not necessarily on
 * the node that holds its detached session. The node it reached (Y) asks
 * the nodes with sessions of the account (cluster_sm_take); the holder
 * (X) serializes the session (sm_export), ends it there without a word
 * to anyone (its contacts, rooms and registry entry carry on), and sends
 * the state to Y, which binds the session to the new stream and resumes
 * it as if it had been detached here (sm_take_answered). The state:
 *
 *   FULL-JID \n
 *   ID IN OUT ACKED WINDOW PRIORITY AVAILABLE FLAGS LAST-LEN RECORDS \n
 *   LAST-LEN bytes: the last presence (serialized, without 'to')
 *   RECORDS times: STAMP LEN \n and LEN bytes: an unacknowledged stanza
 */
#define SM_MOVE_CARBONS		1u
#define SM_MOVE_INTERESTED	2u
#define SM_MOVE_INACTIVE	4u
#define SM_TAKE_TIMEOUT_MS	5000	/* no node answered: the client binds anew */

struct sm_take {
	struct conn *c;
	struct loop_timer timer;
	unsigned waiting;		/* nodes asked that did not answer yet */
	uint32_t h;			/* the client's count, from its <resume/> */
	bool inline_sasl2;		/* inside SASL2's <authenticate/> */
	char *state;			/* the answer, while the account's state loads */
	size_t state_len;
	char id[SM_ID_LEN + 1];
};

/* A moved session as read from its state (pointers into the state text). */
struct sm_moved {
	char full[JID_MAX];
	char id[SM_ID_LEN + 1];
	uint32_t in, out, acked, window;
	int priority;
	bool available;
	unsigned flags;
	const char *last;
	size_t last_len;
	const char *recs;		/* RECORDS records from here to end */
	const char *end;
	uint32_t nrecs;
};

static void sm_export_rec(void *arg, const char *data, size_t len, uint32_t stamp)
{
	struct strbuf *out = arg;

	strbuf_printf(out, "%u %zu\n", stamp, len);
	strbuf_append(out, data, len);
}

bool sm_export(struct worker *w, const char *bare, const char *id, const char *to_node,
	       struct strbuf *out)
{
	struct session *s = sm_find(w, bare, id);
	struct sm_state *sm;
	const char *last = s && s->pres ? s->pres->last : NULL;
	size_t last_len = last ? s->pres->last_len : 0;
	unsigned flags;

	if (!s || s->ending || s->sm->overflowed)
		return false;
	sm = s->sm;
	flags = (s->carbons ? SM_MOVE_CARBONS : 0) | (s->interested ? SM_MOVE_INTERESTED : 0) |
		(s->csi_inactive ? SM_MOVE_INACTIVE : 0);
	strbuf_printf(out, "%s\n%s %u %u %u %u %d %d %u %zu %u\n", s->jid, sm->id, sm->in_count,
		      sm->out_count, sm->acked, sm->window_s, s->priority, s->available ? 1 : 0,
		      flags, last_len, sm->q.count);
	if (last_len)
		strbuf_append(out, last, last_len);
	sm_queue_each(&sm->q, sm_export_rec, out);
	if (out->oom)
		return false;
	sm_take_from_stream(s);
	log_info("sm.moved", "jid=%s to_node=%s unacked=%u", s->jid, to_node, sm->q.count);
	/* What it held went with the state: the session ends here without a trace. */
	s->sm = NULL;
	sm_undetach(sm);
	sm_unflush(sm);
	sm_queue_clear(&sm->q, w);
	sm_free(sm);
	s->moved = true;
	c2s_session_end(w, s);
	return true;
}

/* Reads a moved session's state; false when it is not one. */
static bool sm_moved_parse(struct sm_moved *m, const char *state, size_t len)
{
	const char *end = state + len, *nl = memchr(state, '\n', len), *nl2;
	char hdr[160];
	size_t last_len;
	int avail;

	if (!nl || (size_t)(nl - state) >= sizeof(m->full))
		return false;
	memcpy(m->full, state, (size_t)(nl - state));
	m->full[nl - state] = '\0';
	nl2 = memchr(nl + 1, '\n', (size_t)(end - nl - 1));
	if (!nl2 || (size_t)(nl2 - nl - 1) >= sizeof(hdr))
		return false;
	memcpy(hdr, nl + 1, (size_t)(nl2 - nl - 1));
	hdr[nl2 - nl - 1] = '\0';
	if (sscanf(hdr, "%24s %u %u %u %u %d %d %u %zu %u", m->id, &m->in, &m->out, &m->acked,
		   &m->window, &m->priority, &avail, &m->flags, &last_len, &m->nrecs) != 10 ||
	    strlen(m->id) != SM_ID_LEN || !strchr(m->full, '/') ||
	    last_len > (size_t)(end - nl2 - 1) || m->priority < -128 || m->priority > 127)
		return false;
	m->available = avail == 1;
	m->last = last_len ? nl2 + 1 : NULL;
	m->last_len = last_len;
	m->recs = nl2 + 1 + last_len;
	m->end = end;
	return true;
}

/* The next record of a moved session's state; NULL at the end (or when it is cut). */
static const char *sm_moved_next(struct sm_moved *m, size_t *len, uint32_t *stamp)
{
	const char *nl = m->recs < m->end ? memchr(m->recs, '\n', (size_t)(m->end - m->recs)) :
			 NULL;
	const char *data;
	char hdr[48];

	if (!nl || (size_t)(nl - m->recs) >= sizeof(hdr))
		return NULL;
	memcpy(hdr, m->recs, (size_t)(nl - m->recs));
	hdr[nl - m->recs] = '\0';
	if (sscanf(hdr, "%u %zu", stamp, len) != 2 || *len > (size_t)(m->end - nl - 1))
		return NULL;
	data = nl + 1;
	m->recs = data + *len;
	return data;
}

/*
 * A moved session no stream took (the client gave up, or the node it
 * went to could not take it): its unacknowledged stanzas are rerouted
 * here as undelivered, as when a session ends (sm_reroute).
 */
static void sm_moved_lost(struct worker *w, const char *state, size_t len)
{
	struct sm_state *sm = sm_worker_get(w) ? calloc(1, sizeof(*sm)) : NULL;
	struct sm_moved m;
	const char *data;
	uint32_t stamp;
	size_t dlen;

	if (!sm || !sm_moved_parse(&m, state, len)) {
		free(sm);
		log_warn("sm.move_lost", "msg=\"a moved session's state is unreadable or out of "
			 "memory: its unacknowledged stanzas are lost\"");
		return;
	}
	sm->w = w;
	while ((data = sm_moved_next(&m, &dlen, &stamp)) != NULL)
		if (sm_queue_push(&sm->q, w, data, dlen, stamp) < 0)
			break;
	log_info("sm.move_unclaimed", "jid=%s unacked=%u", m.full, sm->q.count);
	sm_reroute(w, sm);
	sm_queue_clear(&sm->q, w);
	sm_free(sm);
}

static void sm_take_free(struct sm_take *t)
{
	loop_timer_cancel(&t->timer);
	if (t->state) {
		OPENSSL_cleanse(t->state, t->state_len);	/* holds the resumption id */
		free(t->state);
	}
	free(t);
}

/* The resumption c waited for is answered (resumed or not): the login goes on. */
static void sm_take_finish(struct conn *c)
{
	struct sm_take *t = c->sm_take;
	bool inline_sasl2 = t->inline_sasl2;

	c->sm_take = NULL;
	sm_take_free(t);
	if (inline_sasl2)
		sasl2_resume_answered(c, c->sess != NULL);
	else
		conn_resume_input(c);
}

static void sm_take_failed(struct conn *c, const char *why)
{
	sm_inline_out = c->sm_take->inline_sasl2 ? sasl2_inline_out(c) : NULL;
	sm_resume_not_found(c, c->sm_take->id, why);
	sm_inline_out = NULL;
	sm_take_finish(c);
}

static void sm_take_timeout(struct loop_timer *timer)
{
	struct sm_take *t = (struct sm_take *)((char *)timer - offsetof(struct sm_take, timer));

	sm_take_failed(t->c, "no-answer");
}

/*
 * Binds the moved session (state[0..len)) to c (its account's state
 * `loaded`, or NULL when another session here holds it) and resumes it.
 * false: c was answered with a failure and the state is to be rerouted.
 * Either way c's wait is over.
 */
static bool sm_take_import(struct conn *c, struct account *loaded, const char *state, size_t len)
{
	struct sm_take *t = c->sm_take;
	struct worker *w = c->w;
	struct sm_state *sm;
	struct session *s;
	struct sm_moved m;
	const char *err = NULL, *data;
	uint32_t stamp;
	size_t dlen;

	if (!sm_moved_parse(&m, state, len) || strcmp(m.id, t->id) != 0 ||
	    strncmp(m.full, c->jid, strlen(c->jid)) != 0 || m.full[strlen(c->jid)] != '/') {
		account_free(loaded);
		sm_take_failed(c, "unreadable");
		return false;
	}
	if (sm_ack_delta(m.acked, m.out, t->h) < 0) {
		account_free(loaded);
		sm_inline_out = t->inline_sasl2 ? sasl2_inline_out(c) : NULL;
		sm_send_failed(c, "undefined-condition", NULL);
		sm_inline_out = NULL;
		log_info("sm.resume_failed", "conn=%llu jid=%s reason=handled-count-too-high h=%u "
			 "sent=%u", sm_cid(c), m.full, t->h, m.out);
		sm_take_finish(c);
		return false;
	}
	sm = sm_worker_get(w) ? calloc(1, sizeof(*sm)) : NULL;
	s = sm ? c2s_bind_resource(c, m.full, loaded, &err) : NULL;
	if (!s) {
		if (!sm)
			account_free(loaded);
		free(sm);
		log_info("sm.resume_failed", "conn=%llu jid=%s reason=bind-%s", sm_cid(c), m.full,
			 err ? err : "internal-server-error");
		sm_take_failed(c, "bind-failed");
		return false;
	}
	sm->sess = s;
	sm->w = w;
	sm->resumable = true;
	sm->window_s = m.window;
	sm->in_count = m.in;
	sm->out_count = m.out;
	sm->acked = m.acked;
	memcpy(sm->id, m.id, sizeof(sm->id));
	while ((data = sm_moved_next(&m, &dlen, &stamp)) != NULL)
		if (sm_queue_push(&sm->q, w, data, dlen, stamp) < 0)
			break;	/* out of memory: the client learns of the gap by its count */
	s->sm = sm;
	s->carbons = m.flags & SM_MOVE_CARBONS;
	s->interested = m.flags & SM_MOVE_INTERESTED;
	s->csi_inactive = m.flags & SM_MOVE_INACTIVE;
	presence_restore(s, m.available, m.priority, m.last, m.last_len);
	cluster_session_update(w, s);	/* availability, priority, flags as they were */
	log_info("sm.move_taken", "conn=%llu jid=%s unacked=%u", sm_cid(c), s->jid, sm->q.count);
	/* As if it had been detached here: the normal resumption from now on. */
	c->sess = NULL;
	s->conn = NULL;
	sm_inline_out = t->inline_sasl2 ? sasl2_inline_out(c) : NULL;
	sm_resume_session(c, s, t->h);
	sm_inline_out = NULL;
	sm_take_finish(c);
	return true;
}

/* Imports the state c's wait brought; what no session took is rerouted as undelivered. */
static void sm_take_import_state(struct conn *c, struct account *loaded, int err)
{
	struct sm_take *t = c->sm_take;
	struct worker *w = c->w;
	char *state = t->state;
	size_t len = t->state_len;

	t->state = NULL;
	if (err < 0) {
		account_free(loaded);
		sm_take_failed(c, "account-state");
		sm_moved_lost(w, state, len);
	} else if (!sm_take_import(c, loaded, state, len)) {
		sm_moved_lost(w, state, len);
	}
	OPENSSL_cleanse(state, len);	/* holds the resumption id */
	free(state);
}

static void sm_take_loaded(struct conn *c, struct account *loaded, int err)
{
	if (!c->sm_take || !c->sm_take->state) {
		account_free(loaded);
		return;
	}
	sm_take_import_state(c, loaded, err);
}

void sm_take_answered(struct worker *w, uint32_t slot, uint32_t gen, const char *id,
		      const char *state, size_t len)
{
	struct conn *c = worker_conn(w, slot, gen);
	struct sm_take *t = c && !c->closing ? c->sm_take : NULL;
	char user[JID_PART_MAX + 1];
	const char *at;

	if (!t || t->state || strcmp(t->id, id) != 0) {
		/* Nobody waits for it any more (timed out, gone): undelivered. */
		if (len)
			sm_moved_lost(w, state, len);
		return;
	}
	if (!len) {
		if (--t->waiting == 0)
			sm_take_failed(c, "unknown");
		return;
	}
	t->state = malloc(len);
	if (!t->state) {
		sm_take_failed(c, "no-memory");
		sm_moved_lost(w, state, len);
		return;
	}
	memcpy(t->state, state, len);
	t->state_len = len;
	loop_timer_cancel(&t->timer);
	/* The account's state: here already, or loaded as a bind loads it. */
	if (sessdir_find_account(w->sessions, c->jid, strlen(c->jid))) {
		sm_take_import_state(c, NULL, 0);
		return;
	}
	at = strchr(c->jid, '@');
	snprintf(user, sizeof(user), "%.*s", at ? (int)(at - c->jid) : 0, c->jid);
	if (account_load_submit(c, user, sm_take_loaded) < 0)
		sm_take_import_state(c, NULL, -ENOMEM);
}

/* Starts asking the other nodes for session `previd` of c's account. 0, or -ENOENT. */
static int sm_take_start(struct conn *c, const char *previd, uint32_t h)
{
	struct sm_take *t;

	if (strlen(previd) != SM_ID_LEN || !(t = calloc(1, sizeof(*t))))
		return -ENOENT;
	t->c = c;
	t->h = h;
	t->inline_sasl2 = sm_inline_out != NULL;
	memcpy(t->id, previd, SM_ID_LEN + 1);
	t->waiting = cluster_sm_take(c->w, c, c->jid, previd);
	if (!t->waiting) {
		free(t);
		return -ENOENT;
	}
	c->sm_take = t;
	t->timer.fn = sm_take_timeout;
	loop_timer_arm(c->w->loop, &t->timer, SM_TAKE_TIMEOUT_MS);
	if (!t->inline_sasl2)
		conn_pause_input(c);	/* nothing goes on until <resumed/> or <failed/> */
	log_info("sm.resume_elsewhere", "conn=%llu jid=%s nodes=%u", sm_cid(c), c->jid, t->waiting);
	return 0;
}

void sm_conn_gone(struct conn *c)
{
	if (c->sm_take) {
		struct sm_take *t = c->sm_take;

		c->sm_take = NULL;
		/* The state arrived, the account's was loading: its stanzas go as undelivered. */
		if (t->state)
			sm_moved_lost(c->w, t->state, t->state_len);
		sm_take_free(t);
	}
}

/* ---- Lifetime ---- */

void sm_stream_closed(struct conn *c)
{
	struct sm_state *sm = c->sess ? c->sess->sm : NULL;
	char buf[64];

	if (!sm)
		return;
	sm->clean_close = true;
	/* Our last ack, so the client knows what we handled (XEP-0198 1.5.2). */
	snprintf(buf, sizeof(buf), "<a xmlns='" NS_SM "' h='%u'/>", sm->in_count);
	conn_send_str(c, buf);
}

/*
 * The resumption window of a detached session is over: the session ends
 * now (presence unavailable, unacked stanzas rerouted at the flush).
 * Timer callbacks run outside any delivery, so ending it here is safe.
 */
static void sm_window_expired(struct loop_timer *t)
{
	struct sm_state *sm = container_of(t, struct sm_state, timer);
	struct session *s = sm->sess;

	log_info("sm.expire", "jid=%s unacked=%u", s->jid, sm->q.count);
	c2s_session_end(sm->w, s);	/* frees sm (or makes it an orphan) */
}

bool sm_conn_closing(struct conn *c)
{
	struct session *s = c->sess;
	struct sm_state *sm = s->sm;
	struct sm_worker *sw;
	bool broken;

	if (!sm)
		return false;
	/*
	 * Only a broken transport keeps the session: a clean close, a stream
	 * error we sent (but for the idle timeout), a replaced session and a
	 * shutdown end it (XEP-0198 section 6).
	 */
	broken = c->close_reason == CONN_CLOSE_PEER || c->close_reason == CONN_CLOSE_IO ||
		 c->close_reason == CONN_CLOSE_TIMEOUT || c->close_reason == CONN_CLOSE_SLOW;
	if (!sm->resumable || sm->overflowed || sm->clean_close || !broken ||
	    c->w->srv->shutting_down)
		return false;

	sw = c->w->sm;
	c->sess = NULL;
	s->conn = NULL;
	sm->r_pending = false;
	sm_unflush(sm);
	sm->detached = true;
	sm->det_next = sw->detached;
	if (sw->detached)
		sw->detached->det_pprev = &sm->det_next;
	sm->det_pprev = &sw->detached;
	sw->detached = sm;
	sm->timer.fn = sm_window_expired;
	loop_timer_arm(c->w->loop, &sm->timer, (uint64_t)sm->window_s * 1000);
	log_info("sm.detach", "conn=%llu jid=%s unacked=%u window=%u", sm_cid(c), s->jid,
		 sm->q.count, sm->window_s);
	return true;
}

void sm_session_end(struct worker *w, struct session *s)
{
	struct sm_state *sm = s->sm;
	struct sm_worker *sw = w->sm;

	if (!sm)
		return;
	s->sm = NULL;
	sm_undetach(sm);
	sm_unflush(sm);
	if (sm->resumable)
		sm_tomb_add(sw, sm, s);
	sm->sess = NULL;
	if (!sm->q.count) {
		sm_free(sm);
		return;
	}
	/* Rerouted at the end of the turn, outside whatever delivery got us here. */
	log_info("sm.unacked", "jid=%s count=%u", s->jid, sm->q.count);
	sm->orphan_next = sw->orphans;
	sw->orphans = sm;
}

/* ---- Rerouting unacked stanzas of an ended session ---- */

struct sm_reroute {
	struct worker *w;
	uint32_t stamp;			/* of the record being parsed */
	unsigned routed, bounced, dropped;
};

/* The synthetic stream header of a reparse: nothing to check. */
static bool sm_reroute_open(void *ctx, const struct xml_node *hdr, const char *default_ns)
{
	return true;
}

/*
 * One unacked stanza, as if it had been sent to an unavailable resource
 * (XEP-0198 section 4, RFC 6121 8.5.3.2): messages are routed again by
 * their addresses (other resources, offline storage), iq requests get
 * service-unavailable, the rest is dropped.
 */
static bool sm_reroute_stanza(void *ctx, struct xml_node *st)
{
	struct sm_reroute *rr = ctx;
	struct worker *w = rr->w;
	struct arena *a = &w->sm->reroute_arena;
	const char *type = stanza_type(st);

	switch (stanza_kind(st)) {
	case STANZA_MESSAGE:
		sm_add_delay(a, st, w->srv->cfg->domain, (time_t)rr->stamp);
		if (router_route_stanza(w, st) == 0)
			rr->routed++;
		else
			rr->dropped++;
		break;
	case STANZA_IQ:
		if (strcmp(type, "get") == 0 || strcmp(type, "set") == 0) {
			router_bounce_w(w, NULL, st, "service-unavailable");
			rr->bounced++;
		} else {
			rr->dropped++;
		}
		break;
	default:
		rr->dropped++;	/* presence: the contact will see the session go */
		break;
	}
	arena_reset(a);
	return true;
}

static const struct xml_stream_handlers sm_reroute_handlers = {
	.stream_open = sm_reroute_open,
	.stanza = sm_reroute_stanza,
};

static const char sm_stream_header[] =
	"<stream:stream xmlns='" XML_NS_CLIENT "' xmlns:stream='" XML_NS_STREAM "'>";

/*
 * Parses the orphan's records again, one stanza at a time, and hands each
 * to sm_reroute_stanza(). Records are dropped as they go, so the queue is
 * empty afterwards. The parser comes from the worker's pool.
 */
static void sm_reroute(struct worker *w, struct sm_state *sm)
{
	struct sm_reroute rr = { .w = w };
	struct xml_stream xs;
	const char *data;
	size_t len;
	uint32_t stamp;

	xml_stream_init(&xs, w->xml, &sm_reroute_handlers, &rr);
	xs.limit_override = SM_REPARSE_LIMIT;
	xml_stream_feed(&xs, sm_stream_header, sizeof(sm_stream_header) - 1, NULL);
	while ((data = sm_queue_peek(&sm->q, &len, &stamp)) != NULL) {
		enum xml_status st;

		rr.stamp = stamp;
		st = xml_stream_feed(&xs, data, len, NULL);
		if (st != XML_OK) {
			/* Our own serializer wrote it: should not happen; keep going. */
			log_error("sm.reroute_parse", "status=%d bytes=%zu", (int)st, len);
			rr.dropped++;
			xml_stream_restart(&xs);
			xml_stream_feed(&xs, sm_stream_header, sizeof(sm_stream_header) - 1, NULL);
		}
		sm_queue_drop(&sm->q, w, 1);
	}
	xml_stream_destroy(&xs);
	log_info("sm.reroute", "routed=%u bounced=%u dropped=%u", rr.routed, rr.bounced, rr.dropped);
}

/* ---- End of turn, shutdown ---- */

/*
 * One session on the flush list: an overflowed one ends (its stream gets
 * policy-violation first); otherwise an <r/> goes out if the client owes
 * an ack for stanzas sent since our last request and none is pending.
 */
static void sm_flush_one(struct worker *w, struct sm_state *sm)
{
	struct session *s = sm->sess;
	struct conn *c = s->conn;

	if (sm->overflowed) {
		if (c) {
			/* As ejabberd does; the session cannot be resumed (see README). */
			c2s_stream_error(c, "policy-violation", "too many unacknowledged stanzas");
			/* An already closing stream kept its session: end it here. */
			if (c->sess == s)
				c2s_session_end(w, s);
		} else {
			log_info("sm.expire", "jid=%s reason=overflow unacked=%u", s->jid, sm->q.count);
			c2s_session_end(w, s);
		}
		return;
	}
	if (!c || c->closing || sm->r_pending || sm->out_count == sm->acked ||
	    sm->out_count == sm->r_at)
		return;
	/* One request per turn covers every stanza of the turn. */
	conn_send_str(c, "<r xmlns='" NS_SM "'/>");
	sm->r_pending = true;
	sm->r_at = sm->out_count;
}

void sm_flush(struct worker *w)
{
	struct sm_worker *sw = w->sm;

	if (!sw)
		return;
	/* Ending a session or rerouting can refill either list: loop until both are empty. */
	for (;;) {
		struct sm_state *sm;

		if ((sm = sw->flush) != NULL) {
			sm_unflush(sm);
			sm_flush_one(w, sm);
		} else if ((sm = sw->orphans) != NULL) {
			sw->orphans = sm->orphan_next;
			sm_reroute(w, sm);
			sm_queue_clear(&sm->q, w);
			sm_free(sm);
		} else {
			break;
		}
	}
}

void sm_shutdown(struct worker *w)
{
	struct sm_worker *sw = w->sm;

	if (!sw)
		return;
	/* Their stanzas go to offline storage while it still runs. */
	while (sw->detached) {
		struct session *s = sw->detached->sess;

		log_info("sm.expire", "jid=%s reason=shutdown", s->jid);
		c2s_session_end(w, s);
	}
}

void sm_worker_destroy(struct worker *w)
{
	struct sm_worker *sw = w->sm;

	if (!sw)
		return;
	while (sw->orphans) {
		struct sm_state *sm = sw->orphans;

		sw->orphans = sm->orphan_next;
		sm_queue_clear(&sm->q, w);
		sm_free(sm);
	}
	/* Detached sessions end at shutdown; anything left is abandoned state. */
	while (sw->detached) {
		struct sm_state *sm = sw->detached;

		sm_undetach(sm);
		if (sm->sess)
			sm->sess->sm = NULL;
		sm_queue_clear(&sm->q, w);
		sm_free(sm);
	}
	arena_release(&sw->deliver_arena);
	arena_release(&sw->reroute_arena);
	explicit_bzero(sw->tombs, sizeof(sw->tombs));
	free(sw);
	w->sm = NULL;
}

void sm_hold_ack(struct session *s)
{
	if (s->sm)
		s->sm->ack_holds++;
}

void sm_release_ack(struct session *s)
{
	struct sm_state *sm = s->sm;
	char buf[64];

	if (!sm || !sm->ack_holds || --sm->ack_holds)
		return;
	if (!sm->a_deferred)
		return;
	sm->a_deferred = false;
	/* Detached: <resumed h/> will carry the count instead. */
	if (!s->conn)
		return;
	snprintf(buf, sizeof(buf), "<a xmlns='" NS_SM "' h='%u'/>", sm->in_count);
	conn_send_str(s->conn, buf);
}
