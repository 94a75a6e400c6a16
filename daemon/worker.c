/* SPDX-License-Identifier: MIT */
/*
 * Worker: the loop's upcalls (accept, receive, send, watched fds, end of
 * turn), the connection slot table, output batching and reaping.
 */
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <netinet/tcp.h>
#include <signal.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/signalfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include "abuse.h"
#include "adhoc.h"
#include "bpf_sockops.h"
#include "bpf_steer.h"
#include "c2s.h"
#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "handover.h"
#include "http.h"
#include "kmod.h"
#include "log.h"
#include "mailbox.h"
#include "metrics.h"
#include "pubsub.h"
#include "reload.h"
#include "router.h"
#include "s2s.h"
#include "sdnotify.h"
#include "server.h"
#include "session.h"
#include "sm.h"
#include "tls.h"
#include "worker.h"
#include "xml.h"

#define WORKER_CHUNK_POOL_MAX	1024	/* idle output chunks kept per worker */
#define WORKER_SHUTDOWN_MS	5000	/* longest a graceful shutdown may take */

#define container_of(ptr, type, member) ((type *)((char *)(ptr) - offsetof(type, member)))

static void worker_move_forget(struct worker *w, struct conn *c);
static void worker_moves_step(struct worker *w);
static void conn_timer_fired(struct loop_timer *t);

/* ---- Slots ---- */

struct conn *worker_conn(struct worker *w, uint32_t slot, uint32_t gen)
{
	struct conn *c;

	if (slot >= w->cap)
		return NULL;
	c = w->conns[slot];
	if (!c || c->gen != gen)
		return NULL;
	return c;
}

/* Grows the slot table geometrically up to max_connections. */
static int worker_grow_slots(struct worker *w)
{
	uint32_t max = w->srv->cfg->max_connections;
	uint32_t ncap = w->cap ? w->cap * 2 : 64;
	struct conn **conns;
	uint32_t *gens, *free_slots;

	if (ncap > max)
		ncap = max;
	if (ncap <= w->cap)
		return -EMFILE;
	conns = realloc(w->conns, ncap * sizeof(*conns));
	if (!conns)
		return -ENOMEM;
	w->conns = conns;
	gens = realloc(w->gens, ncap * sizeof(*gens));
	if (!gens)
		return -ENOMEM;
	w->gens = gens;
	free_slots = realloc(w->free_slots, ncap * sizeof(*free_slots));
	if (!free_slots)
		return -ENOMEM;
	w->free_slots = free_slots;
	/* New slots go on the free stack highest first, so low ones are used first. */
	for (uint32_t s = ncap; s > w->cap; s--) {
		w->conns[s - 1] = NULL;
		w->gens[s - 1] = 0;
		w->free_slots[w->nfree++] = s - 1;
	}
	w->cap = ncap;
	return 0;
}

/*
 * Gives c a free slot of w (growing the table up to max_connections) with
 * the slot's current generation. False when w is full.
 */
static bool worker_slot_take(struct worker *w, struct conn *c)
{
	uint32_t slot;

	if (!w->nfree && worker_grow_slots(w) < 0)
		return false;
	slot = w->free_slots[--w->nfree];
	c->w = w;
	c->slot = slot;
	c->gen = w->gens[slot];
	w->conns[slot] = c;
	w->nconns++;
	return true;
}

/* Frees c's slot; the next user of it gets a new generation. */
static void worker_slot_release(struct worker *w, struct conn *c)
{
	w->conns[c->slot] = NULL;
	w->gens[c->slot] = (c->gen + 1) & LOOP_GEN_MASK;
	w->free_slots[w->nfree++] = c->slot;
	w->nconns--;
}

/* ---- Output chunks ---- */

struct out_chunk *worker_chunk_get(struct worker *w, size_t need)
{
	struct out_chunk *ch;
	size_t cap = CONN_CHUNK_SIZE - sizeof(struct out_chunk);

	if (need <= cap && w->chunk_free) {
		ch = w->chunk_free;
		w->chunk_free = ch->next;
		w->chunk_free_count--;
	} else {
		if (need > cap)
			cap = need;
		ch = malloc(sizeof(*ch) + cap);
		if (!ch)
			return NULL;
		ch->cap = (uint32_t)cap;
	}
	ch->next = NULL;
	ch->len = 0;
	ch->off = 0;
	return ch;
}

void worker_chunk_put(struct worker *w, struct out_chunk *ch)
{
	if (ch->cap == CONN_CHUNK_SIZE - sizeof(struct out_chunk) &&
	    w->chunk_free_count < WORKER_CHUNK_POOL_MAX) {
		ch->next = w->chunk_free;
		w->chunk_free = ch;
		w->chunk_free_count++;
		return;
	}
	free(ch);
}

/* ---- Flush and reap lists ---- */

void worker_want_flush(struct worker *w, struct conn *c)
{
	if (c->in_flush_list)
		return;
	c->in_flush_list = true;
	c->flush_next = w->flush_list;
	w->flush_list = c;
}

void worker_want_reap(struct worker *w, struct conn *c)
{
	if (c->in_reap_list)
		return;
	c->in_reap_list = true;
	c->closing = true;
	loop_timer_cancel(&c->timer);
	c->reap_next = w->reap_list;
	w->reap_list = c;
}

/* Frees what c holds; its slot is the caller's business. */
static void conn_release_detached(struct worker *w, struct conn *c)
{
	struct out_chunk *ch = c->out_head;

	while (ch) {
		struct out_chunk *next = ch->next;

		worker_chunk_put(w, ch);
		ch = next;
	}
	loop_timer_cancel(&c->timer);
	xml_stream_destroy(&c->xs);
	if (c->tls)
		tls_conn_free(c->tls);
	free(c->pending_in);
	http_conn_free(c);	/* HTTP or WebSocket state */
	control_conn_free(c);	/* a control socket request (control.c) */
	metrics_conn_sync(c, true);	/* no longer counted (metrics.h) */
	abuse_conn_done(c);	/* no longer an unauthenticated connection of its source */
	s2s_conn_free(c);	/* federation or component stream state (s2s.c) */
	kmod_conn_free(c);	/* its registration with the offload module (kmod.c) */
	worker_move_forget(w, c);	/* closed on its way to another worker */
	free(c->jid);
	free(c);
	atomic_fetch_sub_explicit(&w->srv->conns_total, 1, memory_order_relaxed);
}

static void conn_free(struct worker *w, struct conn *c)
{
	worker_slot_release(w, c);
	conn_release_detached(w, c);
}

static void conn_log_close(const struct conn *c)
{
	static const char *const reasons[] = {
		[CONN_CLOSE_NONE] = "unknown",	  [CONN_CLOSE_PEER] = "peer",
		[CONN_CLOSE_ERROR] = "stream-error", [CONN_CLOSE_IO] = "io-error",
		[CONN_CLOSE_TIMEOUT] = "timeout", [CONN_CLOSE_SHUTDOWN] = "shutdown",
		[CONN_CLOSE_REPLACED] = "replaced", [CONN_CLOSE_SLOW] = "slow-reader",
	};

	log_info("conn.close", "conn=%llu reason=%s tls=%s", (unsigned long long)c->id,
		 reasons[c->close_reason], conn_tls_mode_name(c));
}

/*
 * Frees closed connections whose operations have all completed; asks the
 * kernel to cancel the rest (their CQEs bring them back here next turn).
 */
static void worker_reap(struct worker *w)
{
	struct conn **pp = &w->reap_list;
	struct conn *c;

	while ((c = *pp) != NULL) {
		if (c->recv_armed || c->send_inflight || c->connect_inflight) {
			if (!c->cancel_sent && c->fd >= 0) {
				loop_cancel_fd(w->loop, c->fd);
				c->cancel_sent = true;
			}
			pp = &c->reap_next;
			continue;
		}
		*pp = c->reap_next;
		conn_log_close(c);
		close(c->fd);
		c->fd = -1;
		conn_free(w, c);
	}
}

/* Queues one send per connection with output and no send in flight. */
static void worker_flush(void *ctx)
{
	struct worker *w = ctx;
	struct conn *c, *next;

	/*
	 * First what may queue output or end sessions: connections that hit
	 * their output limit are cut off (their sessions end, which may send
	 * presence to others and overflow more), and stream management's
	 * acks and reroutes. Repeat until nothing is left of either. A batch
	 * of fan-out copies for the offload module goes before all of it (its
	 * remainders may overflow), and again if they made one (kmod.c).
	 */
	do {
		kmod_flush(w);
		while ((c = w->overflow_list) != NULL) {
			w->overflow_list = c->overflow_next;
			c->overflow_next = NULL;
			conn_abort(c, CONN_CLOSE_SLOW);
		}
		sm_flush(w);
	} while (w->overflow_list || kmod_pending(w));
	c2s_reap_sessions(w);	/* sessions that ended this turn leave the directory */
	c = w->flush_list;
	w->flush_list = NULL;
	for (; c; c = next) {
		next = c->flush_next;
		c->in_flush_list = false;
		c->flush_next = NULL;
		/* What changes a connection's class (bind, TLS, upgrade) sends something. */
		metrics_conn_sync(c, false);
		if (c->in_reap_list || c->send_inflight || !c->out_head)
			continue;
		struct out_chunk *h = c->out_head;

		loop_send(w->loop, c->fd, c->slot, c->gen, h->data + h->off, h->len - h->off);
		c->send_inflight = true;
	}
	/* Connections on their way home: moved once their output is out. */
	worker_moves_step(w);
	/* After the flush list is empty: reaping may free its members. */
	worker_reap(w);
	/* The steering program's view of our load (bpf_steer.c). */
	if (w->load_published != w->nconns) {
		w->load_published = w->nconns;
		bpf_steer_set_load(w->id, w->nconns);
	}
	/* Doorbells of the workers we posted messages to this turn (mailbox.c). */
	worker_post_flush(w);

	if (w->draining && w->nconns == 0)
		loop_stop(w->loop);
}

static void conn_timer_fired(struct loop_timer *t);

/* ---- Loop upcalls ---- */

static void worker_accepted(void *ctx, unsigned listener, int fd);

/* A connection accepted by a stopping worker, on its way to worker 0. */
struct fd_pass {
	struct worker_msg msg;
	int fd;
	unsigned listener;
};

static void worker_fd_arrived(struct worker *w, struct worker_msg *m)
{
	struct fd_pass *p = (struct fd_pass *)m;

	worker_accepted(w, p->listener, p->fd);
	free(p);
}

static void worker_pass_fd(struct worker *w, unsigned listener, int fd)
{
	struct fd_pass *p = malloc(sizeof(*p));

	if (!p) {
		close(fd);
		return;
	}
	p->fd = fd;
	p->listener = listener;
	worker_post(w, 0, &p->msg, worker_fd_arrived);
}

static void worker_accepted(void *ctx, unsigned listener, int fd)
{
	struct worker *w = ctx;
	const struct listener *l = &w->srv->listeners[listener];
	struct sockaddr_storage ss;
	socklen_t sslen = sizeof(ss);
	struct conn *c;

	/* After a hand-over the successor serves new connections (handover.c). */
	if (w->id == 0 && handover_forward(w, listener, fd))
		return;
	/* Stopping: worker 0 passes it to a successor, or refuses it. */
	if (w->id != 0 && w->draining) {
		worker_pass_fd(w, listener, fd);
		return;
	}
	/* Banned sources, and sources with too many unauthenticated connections (abuse.c). */
	if (abuse_accept_refused(w, l, fd))
		return;
	if (w->draining ||
	    atomic_load_explicit(&w->srv->conns_total, memory_order_relaxed) >=
		    w->srv->cfg->max_connections) {
		log_warn("conn.refused", "listener=%s reason=%s", l->addr,
			 w->draining ? "shutting-down" : "max-connections");
		close(fd);
		return;
	}
	c = calloc(1, sizeof(*c));
	if (!c) {
		close(fd);
		return;
	}
	if (!worker_slot_take(w, c)) {
		log_warn("conn.refused", "listener=%s reason=max-connections", l->addr);
		free(c);
		close(fd);
		return;
	}
	atomic_fetch_add_explicit(&w->srv->conns_total, 1, memory_order_relaxed);
	c->fd = fd;
	c->id = ++w->next_conn_id * 256 + w->id;
	c->kind = CONN_C2S;
	c->direct_tls = l->kind == LISTENER_C2S_TLS;
	c->timer.fn = conn_timer_fired;

	if (getpeername(fd, (struct sockaddr *)&ss, &sslen) == 0) {
		if (ss.ss_family == AF_INET) {
			const struct sockaddr_in *a4 = (const struct sockaddr_in *)&ss;

			c->peer.sin6_family = AF_INET6;
			c->peer.sin6_port = a4->sin_port;
			c->peer.sin6_addr.s6_addr[10] = 0xff;
			c->peer.sin6_addr.s6_addr[11] = 0xff;
			memcpy(&c->peer.sin6_addr.s6_addr[12], &a4->sin_addr, 4);
		} else if (ss.ss_family == AF_INET6) {
			memcpy(&c->peer, &ss, sizeof(c->peer));
		}
	}
	/* nodelay, keepalive, user timeout: the sockops program's, or here (bpf_sockops.c). */
	if (l->kind != LISTENER_CONTROL)
		bpf_sockops_fallback(w->srv->cfg, fd);

	char peer[64];

	log_info("conn.open", "conn=%llu peer=%s listener=%s", (unsigned long long)c->id,
		 conn_peer_str(c, peer, sizeof(peer)), l->addr);
	loop_recv(w->loop, fd, c->slot, c->gen);
	c->recv_armed = true;
	if (l->kind == LISTENER_CONTROL) {
		control_accepted(c);	/* stanzactl (control.c): no stream, no abuse counting */
		return;
	}
	if (l->kind == LISTENER_HTTP || l->kind == LISTENER_HTTPS)
		http_accepted(c, l->kind == LISTENER_HTTPS);	/* http.c */
	else if (s2s_listener_kind(l->kind))
		s2s_accepted(c, l->kind);	/* federation and components (s2s.c) */
	else
		c2s_accepted(c);
	abuse_conn_opened(c);	/* unauthenticated until SASL succeeds (abuse.c) */
	metrics_conn_sync(c, false);	/* counted from now on (metrics.h) */
}

void worker_adopt(struct worker *w, unsigned listener, int fd)
{
	worker_accepted(w, listener, fd);
}

static void worker_accept_error(void *ctx, unsigned listener, int err)
{
	struct worker *w = ctx;

	if (err == -ECANCELED)
		return;
	log_warn("listener.accept_error", "listener=%s err=\"%s\"", w->srv->listeners[listener].addr,
		 strerror(-err));
}

static void worker_received(void *ctx, uint32_t slot, uint32_t gen, const char *data, size_t len,
			    int err, bool more)
{
	struct worker *w = ctx;
	struct conn *c = worker_conn(w, slot, gen);

	if (!c)
		return;
	if (!more)
		c->recv_armed = false;
	if (len) {
		conn_input(c, data, len);
		if (!c->closing && !c->input_paused)
			xml_stream_release_idle(&c->xs);
		abuse_after_input(c);	/* the stanza deadline (abuse.c) */
	} else if (err == 0) {
		conn_input_end(c, 0);
		return;
	} else if (err != -ENOBUFS && err != -ECANCELED) {
		conn_input_end(c, err);
		return;
	}
	/* kTLS handoff: no receive until the kernel has the keys (conn_ktls.c). */
	if (c->tls_mode == CONN_TLS_HANDOFF) {
		if (!c->recv_armed)
			conn_ktls_step(c);
		return;
	}
	/*
	 * Multishot receive stops when the buffer ring ran dry (ENOBUFS) or
	 * for kernel reasons of its own; keep reading unless we are done.
	 */
	if (!c->recv_armed && !c->in_reap_list && err != -ECANCELED && !conn_migrating(c)) {
		loop_recv(w->loop, c->fd, c->slot, c->gen);
		c->recv_armed = true;
	}
}

/* Receives on a kTLS socket: plaintext records with their type. */
static void worker_received_tls(void *ctx, uint32_t slot, uint32_t gen, unsigned type,
				const char *data, size_t len, int err, bool more)
{
	struct worker *w = ctx;
	struct conn *c = worker_conn(w, slot, gen);

	if (!c)
		return;
	if (!more)
		c->recv_armed = false;
	if (len) {
		conn_ktls_record(c, type, data, len);
		if (!c->closing && !c->input_paused)
			xml_stream_release_idle(&c->xs);
		abuse_after_input(c);
	} else if (err == 0) {
		conn_input_end(c, 0);
		return;
	} else if (err != -ENOBUFS && err != -ECANCELED) {
		/* EBADMSG: a record failed to decrypt; the stream is over. */
		conn_input_end(c, err);
		return;
	}
	/* Not after a KeyUpdate (CONN_TLS_KTLS_NO_RX): the next record cannot decrypt. */
	if (!c->recv_armed && !c->in_reap_list && err != -ECANCELED && !conn_migrating(c) &&
	    c->tls_mode == CONN_TLS_KTLS) {
		loop_recv_tls(w->loop, c->fd, c->slot, c->gen);
		c->recv_armed = true;
	}
}

static void worker_sent(void *ctx, uint32_t slot, uint32_t gen, int res)
{
	struct worker *w = ctx;
	struct conn *c = worker_conn(w, slot, gen);
	struct out_chunk *h;

	if (!c)
		return;
	c->send_inflight = false;
	if (c->in_reap_list)
		return;
	if (res < 0) {
		if (res != -ECANCELED)
			log_debug("conn.send_error", "conn=%llu err=\"%s\"", (unsigned long long)c->id,
				  strerror(-res));
		conn_abort(c, CONN_CLOSE_IO);
		return;
	}
	h = c->out_head;
	h->off += (uint32_t)res;
	c->out_bytes -= (size_t)res;
	if (h->off == h->len) {
		c->out_head = h->next;
		if (!c->out_head)
			c->out_tail = NULL;
		worker_chunk_put(w, h);
	}
	if (c->out_head)
		worker_want_flush(w, c);
	else
		conn_output_drained(c);
}

static void worker_handle_signal(struct worker *w)
{
	struct signalfd_siginfo si;

	while (read(w->signal_fd, &si, sizeof(si)) == sizeof(si)) {
		switch (si.ssi_signo) {
		case SIGINT:
		case SIGTERM:
			log_info("server.signal", "signal=%s action=shutdown",
				 si.ssi_signo == SIGINT ? "SIGINT" : "SIGTERM");
			worker_begin_shutdown(w);
			break;
		case SIGHUP:
			/* heap_in_use: what memory budgets are measured with (make bench, the lab). */
			log_info("server.signal", "signal=SIGHUP action=reload heap_in_use=%zu "
				 "connections=%u", mallinfo2().uordblks, w->nconns);
			/*
			 * The other workers read the configuration and the TLS
			 * contexts without locks: they stand still meanwhile.
			 */
			if (w->draining)
				break;
			worker_park_all(w);
			reload_config(w);	/* what can change while running (reload.c) */
			worker_resume_all(w);
			break;
		}
	}
}

static void worker_watch(void *ctx, unsigned id)
{
	struct worker *w = ctx;

	switch (id) {
	case WORKER_WATCH_INBOX:
		storage_inbox_drain(&w->inbox);
		break;
	case WORKER_WATCH_SIGNAL:
		worker_handle_signal(w);
		break;
	case WORKER_WATCH_HANDOVER:
		handover_accept(w);	/* a successor takes the listeners (handover.c) */
		break;
	case WORKER_WATCH_KMOD:
		kmod_watch(w);
		break;
	case WORKER_WATCH_MAILBOX:
		mailbox_drain(w);
		break;
	case WORKER_WATCH_CLUSTER:
		cluster_watch(w);	/* reconnects, retries, heartbeats (cluster.c) */
		break;
	}
}

/* An outbound connect finished (s2s links): receiving starts on success. */
static void worker_connected(void *ctx, uint32_t slot, uint32_t gen, int res)
{
	struct worker *w = ctx;
	struct conn *c = worker_conn(w, slot, gen);

	if (!c)
		return;
	c->connect_inflight = false;
	if (c->in_reap_list)
		return;
	if (res == 0) {
		loop_recv(w->loop, c->fd, c->slot, c->gen);
		c->recv_armed = true;
	}
	s2s_connected(c, res);
}

struct conn *worker_conn_new(struct worker *w, int fd)
{
	struct conn *c;

	if (w->draining) {
		errno = ESHUTDOWN;
		return NULL;
	}
	c = calloc(1, sizeof(*c));
	if (!c)
		return NULL;
	if (!worker_slot_take(w, c)) {
		free(c);
		errno = EMFILE;
		return NULL;
	}
	atomic_fetch_add_explicit(&w->srv->conns_total, 1, memory_order_relaxed);
	c->fd = fd;
	c->id = ++w->next_conn_id * 256 + w->id;
	c->timer.fn = conn_timer_fired;
	return c;
}

int worker_connect(struct conn *c, const struct sockaddr *addr, unsigned addrlen)
{
	int ret = loop_connect(c->w->loop, c->fd, addr, addrlen, c->slot, c->gen);

	if (ret == 0)
		c->connect_inflight = true;
	return ret;
}

static void worker_message(void *ctx, unsigned from)
{
	(void)from;
	mailbox_drain(ctx);
}

static void worker_message_failed(void *ctx, unsigned to, int err)
{
	mailbox_ring_failed(ctx, to, err);
}

/* Readiness of a Redis connection's socket (cluster mode). */
static void worker_polled(void *ctx, uint32_t id, uint32_t gen, int res, bool more)
{
	cluster_polled(ctx, id, gen, res, more);
}

static const struct loop_handlers worker_loop_handlers = {
	.accepted = worker_accepted,
	.accept_error = worker_accept_error,
	.received = worker_received,
	.sent = worker_sent,
	.watch = worker_watch,
	.flush = worker_flush,
	.received_tls = worker_received_tls,
	.connected = worker_connected,
	.message = worker_message,
	.message_failed = worker_message_failed,
	.polled = worker_polled,
};

/* ---- Moving a connection to its home worker ---- */

/*
 * A connection on its way: kept on the old worker's list until nothing of
 * it is in flight there, then posted to the new worker as this message.
 */
struct conn_move {
	struct worker_msg msg;		/* first: the mailbox hands this back */
	struct conn *c;
	struct conn_move *next;		/* the old worker's list */
	void (*resume)(struct conn *c);
	uint64_t deadline_ms;		/* the connection's deadline, absolute */
	unsigned to;
	bool cancel_sent;
};

unsigned worker_home(const struct server *srv, const char *bare_jid)
{
	uint64_t h = 14695981039346656037ull;	/* FNV-1a: stable, so tests can place accounts */

	if (srv->nworkers <= 1)
		return 0;	/* every stanza asks: no hashing for nothing */
	switch (srv->cfg->homes_mode) {
	case HOMES_HASH:
		for (const unsigned char *p = (const unsigned char *)bare_jid; *p; p++)
			h = (h ^ *p) * 1099511628211ull;
		return (unsigned)(h % srv->nworkers);
	case HOMES_OTHER:
		return srv->nworkers - 1;
	default:
		return 0;
	}
}

void worker_bind_thread(struct worker *w)
{
	pubsub_worker_init(w);			/* the registry of w's accounts (pubsub.c) */
	metrics_worker_bind(&w->metrics);	/* w's counters (metrics.h) */
}

void workers_quiesce(struct server *srv)
{
	size_t ran;
	int rounds = 0;

	do {
		ran = 0;
		for (unsigned k = 0; k < srv->nworkers; k++) {
			struct worker *w = &srv->workers[k];

			if (!w->loop)
				continue;
			worker_bind_thread(w);
			ran += storage_inbox_drain(&w->inbox);
			ran += mailbox_drain(w);
		}
	} while (ran && ++rounds < WORKERS_QUIESCE_ROUNDS);
	if (ran)
		log_warn("worker.final_drain", "msg=\"work still posted between workers after %d "
			 "rounds at shutdown\"", rounds);
	worker_bind_thread(&srv->workers[0]);
}

size_t server_sessions_total(const struct server *srv)
{
	size_t n = 0;

	for (unsigned k = 0; k < srv->nworkers; k++)
		if (srv->sessdirs[k])
			n += sessdir_size(srv->sessdirs[k]);
	return n;
}

/*
 * A gather: one message per other worker asked, which goes there, runs
 * that worker's part and comes back with it. Only the calling worker
 * counts the answers, so the count needs no atomics.
 */
struct gather_part {
	struct worker_msg msg;		/* first: the mailbox hands this back */
	struct worker_gather *g;
};

struct worker_gather {
	worker_gather_fn each, done;
	void *arg;
	unsigned origin;
	unsigned pending;		/* parts still out (the caller's thread only) */
	struct gather_part parts[];
};

static void worker_gather_answered(struct worker *w, struct worker_msg *m)
{
	struct worker_gather *g = ((struct gather_part *)m)->g;

	if (--g->pending)
		return;
	g->done(w, g->arg);
	free(g);
}

static void worker_gather_asked(struct worker *w, struct worker_msg *m)
{
	struct worker_gather *g = ((struct gather_part *)m)->g;

	g->each(w, g->arg);
	worker_post(w, g->origin, m, worker_gather_answered);
}

int worker_gather_some(struct worker *w, uint64_t mask, worker_gather_fn each,
		       worker_gather_fn done, void *arg)
{
	unsigned n = w->srv->nworkers, others = 0, k, i = 0;
	struct worker_gather *g;
	bool self;

	if (n < 64)
		mask &= (UINT64_C(1) << n) - 1;
	self = mask & (UINT64_C(1) << w->id);
	mask &= ~(UINT64_C(1) << w->id);
	others = (unsigned)__builtin_popcountll(mask);
	if (!others) {
		if (self)
			each(w, arg);
		done(w, arg);
		return 0;
	}
	g = calloc(1, sizeof(*g) + others * sizeof(g->parts[0]));
	if (!g)
		return -ENOMEM;
	g->each = each;
	g->done = done;
	g->arg = arg;
	g->origin = w->id;
	g->pending = others;
	for (uint64_t m = mask; m; m &= m - 1, i++) {
		k = (unsigned)__builtin_ctzll(m);
		g->parts[i].g = g;
		worker_post(w, k, &g->parts[i].msg, worker_gather_asked);
	}
	if (self)
		each(w, arg);
	return 0;
}

int worker_gather(struct worker *w, worker_gather_fn each, worker_gather_fn done, void *arg)
{
	return worker_gather_some(w, ~UINT64_C(0), each, done, arg);
}

void worker_migrate(struct conn *c, unsigned to, void (*resume)(struct conn *c))
{
	struct worker *w = c->w;
	struct conn_move *mv;

	if (to == w->id || to >= w->srv->nworkers || c->move || c->closing)
		return;
	mv = calloc(1, sizeof(*mv));
	if (!mv) {
		c2s_stream_error(c, "internal-server-error", NULL);
		return;
	}
	mv->c = c;
	mv->resume = resume;
	mv->to = to;
	c->move = mv;
	/* From here on, what arrives is held with the connection and goes along. */
	conn_pause_input(c);
	mv->next = w->moving;
	w->moving = mv;
	worker_want_flush(w, c);	/* so the step runs at the end of this turn */
}

/* Unlinks c's move from w's list (the connection closed, or it left). */
static void worker_move_forget(struct worker *w, struct conn *c)
{
	struct conn_move **pp;

	if (!c->move)
		return;
	for (pp = &w->moving; *pp; pp = &(*pp)->next) {
		if (*pp == c->move) {
			*pp = c->move->next;
			break;
		}
	}
	free(c->move);
	c->move = NULL;
}

static void worker_move_arrived(struct worker *w, struct worker_msg *m);

/*
 * Takes c out of w: its slot, its deadline, its parser (back to w's pool)
 * and its place in w's gauges. False if the parser cannot be let go (it
 * holds a partial stanza, which input being held at an element boundary
 * rules out); the connection is then closed instead.
 */
static bool worker_detach(struct worker *w, struct conn *c)
{
	struct conn_move *mv = c->move;

	xml_stream_release_idle(&c->xs);
	if (c->xs.parser) {
		log_error("conn.move_failed", "conn=%llu reason=parser-busy", (unsigned long long)c->id);
		worker_move_forget(w, c);
		c2s_stream_error(c, "internal-server-error", NULL);
		return false;
	}
	mv->deadline_ms = loop_timer_armed(&c->timer) ? c->timer.expires_ms : 0;
	loop_timer_cancel(&c->timer);
	if (c->metrics_class)
		METRIC_ADD(w->metrics.conns[c->metrics_class - 1], (uint64_t)-1);
	c->xs.pool = NULL;
	worker_slot_release(w, c);
	c->w = NULL;
	return true;
}

/* Moves on every connection on its way out whose operations have settled. */
static void worker_moves_step(struct worker *w)
{
	struct conn_move **pp = &w->moving;
	struct conn_move *mv;

	while ((mv = *pp) != NULL) {
		struct conn *c = mv->c;

		if (c->closing || c->in_reap_list) {
			/* It ends here; conn_free() forgets the move. */
			pp = &mv->next;
			continue;
		}
		if (c->recv_armed) {
			/* The last completion (data or -ECANCELED) brings us back. */
			if (!mv->cancel_sent && c->tls_mode != CONN_TLS_HANDOFF) {
				loop_cancel_recv(w->loop, c->tls_mode == CONN_TLS_KTLS ? LOOP_OP_RECV_TLS
							: LOOP_OP_RECV, c->slot, c->gen);
				mv->cancel_sent = true;
			}
			pp = &mv->next;
			continue;
		}
		/* Storage replies come back to this worker's inbox: wait for them too. */
		if (c->send_inflight || c->out_head || c->connect_inflight || c->kmod_pending ||
		    c->tls_mode == CONN_TLS_HANDOFF || c->register_busy || c->iq_async) {
			pp = &mv->next;
			continue;
		}
		*pp = mv->next;
		mv->next = NULL;
		if (!worker_detach(w, c))
			continue;
		log_debug("conn.move", "conn=%llu from=%u to=%u", (unsigned long long)c->id, w->id,
			  mv->to);
		worker_post(w, mv->to, &mv->msg, worker_move_arrived);
	}
}

/* The new worker's side: adopt the connection, receive, resume its stream. */
static void worker_move_arrived(struct worker *w, struct worker_msg *m)
{
	struct conn_move *mv = (struct conn_move *)m;
	struct conn *c = mv->c;
	uint64_t now = loop_now_ms(w->loop);

	if (!worker_slot_take(w, c)) {
		/* max_connections on the home worker: the peer must come back later. */
		log_warn("conn.refused", "conn=%llu reason=max-connections phase=move",
			 (unsigned long long)c->id);
		c->w = w;
		c->slot = UINT32_MAX;
		c->metrics_class = 0;	/* the old worker's gauge already let it go */
		close(c->fd);
		c->fd = -1;
		conn_release_detached(w, c);
		free(mv);
		return;
	}
	c->move = NULL;
	c->xs.pool = w->xml;
	c->timer.fn = conn_timer_fired;
	if (c->metrics_class)
		METRIC_INC(w->metrics.conns[c->metrics_class - 1]);
	if (mv->deadline_ms)
		loop_timer_arm(w->loop, &c->timer, mv->deadline_ms > now ? mv->deadline_ms - now : 1);
	if (c->tls_mode == CONN_TLS_KTLS) {
		loop_recv_tls(w->loop, c->fd, c->slot, c->gen);
		c->recv_armed = true;
	} else if (c->tls_mode != CONN_TLS_KTLS_NO_RX) {
		loop_recv(w->loop, c->fd, c->slot, c->gen);
		c->recv_armed = true;
	}
	if (mv->resume)
		mv->resume(c);
	free(mv);
	if (w->draining && !c->closing) {
		c->close_reason = CONN_CLOSE_SHUTDOWN;
		c2s_stream_error(c, "system-shutdown", NULL);
	}
}

/* ---- Deadlines and shutdown ---- */

static void conn_timer_fired(struct loop_timer *t)
{
	struct conn *c = container_of(t, struct conn, timer);

	if (c->closing) {
		/* Linger over: the peer had its chance to read and to close. */
		worker_want_reap(c->w, c);
		return;
	}
	if (c->kind == CONN_CONTROL) {
		control_deadline(c);	/* a stanzactl request took too long */
		return;
	}
	if (c->kind == CONN_HTTP)
		http_deadline(c);
	else if (!abuse_stanza_overdue(c))	/* a stanza arriving too slowly (abuse.c) */
		c2s_deadline(c);
	abuse_rearm(c);
}

static void worker_shutdown_expired(struct loop_timer *t)
{
	struct worker *w = container_of(t, struct worker, shutdown_timer);

	log_warn("server.shutdown_forced", "connections=%u", w->nconns);
	for (uint32_t s = 0; s < w->cap; s++)
		if (w->conns[s])
			conn_abort(w->conns[s], CONN_CLOSE_SHUTDOWN);
}

static void worker_stop_requested(struct worker *w, struct worker_msg *m)
{
	(void)m;
	worker_begin_shutdown(w);
}

/*
 * A workers' own client sockets close when it stops: the kernel then
 * sends new connections to the sockets left in the group (a successor's,
 * after a hand-over). What is already queued on them is accepted first
 * and passed to worker 0, which hands it to the successor or refuses it.
 */
static void worker_close_own_sockets(struct worker *w)
{
	struct server *srv = w->srv;

	for (unsigned i = 0; i < srv->nlisteners; i++) {
		struct listener *l = &srv->listeners[i];
		int fd;

		if ((l->kind != LISTENER_C2S && l->kind != LISTENER_C2S_TLS) || l->worker_fd[w->id] < 0)
			continue;
		loop_cancel_fd(w->loop, l->worker_fd[w->id]);
		while ((fd = accept4(l->worker_fd[w->id], NULL, NULL, SOCK_NONBLOCK | SOCK_CLOEXEC)) >= 0)
			worker_pass_fd(w, i, fd);
		close(l->worker_fd[w->id]);
		l->worker_fd[w->id] = -1;
	}
}

void worker_begin_shutdown(struct worker *w)
{
	if (w->draining)
		return;
	w->draining = true;
	w->srv->shutting_down = true;
	if (w->id != 0)
		worker_close_own_sockets(w);
	if (w->id == 0) {
		sdnotify_stopping();	/* systemd: STOPPING=1 */
		control_shutdown(w);	/* no more stanzactl requests; the socket file goes */
		cluster_leave(w);	/* our sessions leave the registry (cluster.c) */
		/* The other workers close their connections too, each on its own thread. */
		for (unsigned k = 1; k < w->srv->nworkers; k++)
			if (w->srv->workers[k].loop)	/* not those that failed to start */
				worker_post(w, k, &w->srv->workers[k].stop_msg,
					    worker_stop_requested);
	}
	sm_shutdown(w);	/* detached sessions end now */
	for (uint32_t s = 0; s < w->cap; s++) {
		struct conn *c = w->conns[s];

		if (c && !c->closing) {
			c->close_reason = CONN_CLOSE_SHUTDOWN;
			c2s_stream_error(c, "system-shutdown", NULL);
		}
	}
	w->shutdown_timer.fn = worker_shutdown_expired;
	loop_timer_arm(w->loop, &w->shutdown_timer, WORKER_SHUTDOWN_MS);
	if (w->nconns == 0)
		loop_stop(w->loop);
}

/* ---- Setup ---- */

int worker_init(struct worker *w, struct server *srv, unsigned id, int signal_fd)
{
	const struct loop_config lcfg = LOOP_CONFIG_DEFAULT;
	struct xml_limits limits = XML_LIMITS_DEFAULT;
	int ret;

	memset(w, 0, sizeof(*w));
	w->srv = srv;
	w->id = id;
	w->signal_fd = signal_fd;
	w->sessions = srv->sessdirs[id];
	pubsub_worker_init(w);	/* this thread's pubsub registry (pubsub.c) */
	w->remote_requester = session_new(NULL, "", 0);
	if (!w->remote_requester)
		return -ENOMEM;
	w->remote_requester->remote = w;
	arena_init(&w->tmp, 4096);
	metrics_worker_bind(&w->metrics);	/* this thread's counters (metrics.h) */

	limits.max_stanza_bytes = srv->cfg->max_stanza_bytes;
	w->xml = xml_pool_new(&limits);
	if (!w->xml) {
		ret = -errno;
		goto err_free_scratch;
	}

	ret = storage_inbox_init(&w->inbox);
	if (ret < 0)
		goto err_free_pool;
	w->mbox.efd = -1;

	w->loop = loop_new(&lcfg, &worker_loop_handlers, w);
	if (!w->loop) {
		ret = -errno;
		log_error("worker.init", "worker=%u msg=\"cannot create io_uring: %s\"", id, strerror(errno));
		goto err_destroy_inbox;
	}
	ret = loop_watch(w->loop, w->inbox.eventfd, WORKER_WATCH_INBOX);
	if (ret < 0)
		goto err_free_loop;
	if (signal_fd >= 0) {
		ret = loop_watch(w->loop, signal_fd, WORKER_WATCH_SIGNAL);
		if (ret < 0)
			goto err_free_loop;
	}
	/* Messages from the other workers: MSG_RING doorbells, or an eventfd without them. */
	ret = mailbox_init(&w->mbox, !loop_msg_ring_supported(w->loop));
	if (ret < 0)
		goto err_free_loop;
	if (w->mbox.efd >= 0) {
		ret = loop_watch(w->loop, w->mbox.efd, WORKER_WATCH_MAILBOX);
		if (ret < 0)
			goto err_free_loop;
	}
	/*
	 * Each worker accepts from its own socket of every address it serves:
	 * client listeners have one per worker (server.h); the others, and the
	 * control socket, whose requests read every worker's state, are
	 * worker 0's.
	 */
	for (unsigned i = 0; i < srv->nlisteners; i++) {
		const struct listener *l = &srv->listeners[i];
		bool per_worker = l->kind == LISTENER_C2S || l->kind == LISTENER_C2S_TLS;
		int fd = id == 0 ? l->fd : per_worker ? l->worker_fd[id] : -1;

		if (fd < 0)
			continue;
		ret = loop_add_listener(w->loop, fd, i);
		if (ret < 0)
			goto err_free_loop;
	}
	/*
	 * The stanza offload module, if loaded (kmod.c): after the loop, which
	 * watches its events. Every worker fans out to the sessions at home
	 * there, so each has its own open file (an owner, for the module).
	 */
	ret = kmod_worker_init(w);
	if (ret < 0)
		goto err_free_loop;
	/* Cluster mode: this worker's Redis connection(s) and timer (cluster.c). */
	ret = cluster_worker_start(w);
	if (ret < 0) {
		log_error("cluster.start_failed", "worker=%u msg=\"%s\"", id, strerror(-ret));
		kmod_worker_destroy(w);
		goto err_free_loop;
	}
	if (id == 0)
		http_worker_start(w);	/* the upload cleanup timer (worker 0) */
	control_worker_start(w);	/* log summaries once a second (worker 0) */
	return 0;

err_free_loop:
	mailbox_destroy(&w->mbox);
	loop_free(w->loop);
	w->loop = NULL;
err_destroy_inbox:
	storage_inbox_destroy(&w->inbox);
err_free_pool:
	xml_pool_free(w->xml);
	w->xml = NULL;
err_free_scratch:
	arena_release(&w->tmp);
	session_free(w->remote_requester);
	w->remote_requester = NULL;
	return ret;
}

int worker_run(struct worker *w)
{
	return loop_run(w->loop);
}

void worker_destroy(struct worker *w)
{
	struct out_chunk *ch;

	worker_bind_thread(w);	/* the completions drained below run as w */

	for (uint32_t s = 0; s < w->cap; s++) {
		struct conn *c = w->conns[s];

		if (c) {
			close(c->fd);
			c->fd = -1;
			conn_free(w, c);
		}
	}
	kmod_worker_destroy(w);	/* after the connections: they unregister */
	/* Completions for requests still queued would find no loop. */
	storage_inbox_drain(&w->inbox);
	sm_worker_destroy(w);
	s2s_worker_destroy(w);	/* links and queues, after the inbox is drained */
	http_worker_stop(w);
	control_worker_stop(w);
	cluster_worker_stop(w);	/* its Redis connections, while the loop exists */
	adhoc_worker_destroy(w);
	c2s_reap_sessions(w);
	pubsub_worker_destroy(w);	/* caps caches, after the sessions that use them */
	router_worker_destroy(w);	/* spare messages of forwarded stanzas */
	session_free(w->remote_requester);
	w->remote_requester = NULL;
	loop_free(w->loop);
	mailbox_destroy(&w->mbox);
	storage_inbox_destroy(&w->inbox);
	xml_pool_free(w->xml);
	while ((ch = w->chunk_free) != NULL) {
		w->chunk_free = ch->next;
		free(ch);
	}
	free(w->conns);
	free(w->gens);
	free(w->free_slots);
	strbuf_free(&w->scratch);
	arena_release(&w->tmp);
}
