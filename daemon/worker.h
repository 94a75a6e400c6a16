/* SPDX-License-Identifier: MIT */
/*
 * A worker: one thread, one event loop, the connections it accepted, and
 * the per-thread pools they share (XML parsers, output chunks, scratch
 * buffers). Nothing here is touched by another thread except the storage
 * inbox (which has its own lock).
 */
#ifndef STANZAD_WORKER_H
#define STANZAD_WORKER_H

#include <stdbool.h>
#include <pthread.h>
#include <stdint.h>

#include "arena.h"
#include "conn.h"
#include "loop.h"
#include "mailbox.h"
#include "metrics.h"
#include "storage.h"
#include "strbuf.h"

struct server;
struct xml_pool;
struct sm_worker;
struct pep_worker;
struct adhoc_worker;
struct kmod_worker;
struct s2s_worker;
struct conn_move;
struct route_origin;
struct route_fwd;

enum worker_watch {
	WORKER_WATCH_INBOX = 0,		/* storage completions */
	WORKER_WATCH_SIGNAL,		/* signalfd (worker 0 only) */
	WORKER_WATCH_KMOD,		/* the offload module's events (kmod.c) */
	WORKER_WATCH_HANDOVER,		/* a successor asks for the listeners (handover.c) */
	WORKER_WATCH_MAILBOX,		/* doorbell eventfd, kernels without MSG_RING (mailbox.c) */
	WORKER_WATCH_CLUSTER,		/* cluster mode's timer (cluster.c) */
};

struct worker {
	struct server *srv;
	unsigned id;
	struct loop *loop;

	/* Connection slots: conns[slot] or NULL; gens survive reuse. */
	struct conn **conns;
	uint32_t *gens;
	uint32_t *free_slots;
	uint32_t nfree;
	uint32_t cap;
	uint32_t nconns;

	struct conn *flush_list;	/* connections with output to send */
	struct conn *reap_list;		/* closed, waiting for ops to finish */
	struct session *ending_sessions;	/* ended this turn, freed at its end */
	struct conn *overflow_list;		/* output limit hit this turn */

	struct sessdir *sessions;	/* the sessions of accounts at home here (srv->sessdirs[id]) */
	struct session *remote_requester;	/* stand-in for requesters at home elsewhere (iq_async.c) */
	unsigned iq_async_remote;	/* storage-backed iqs in flight for such requesters */
	struct xml_pool *xml;
	struct storage_inbox inbox;
	/*
	 * The storage queue's failure count when the client stanza being
	 * handled arrived (durable.c): a write of that stanza failing before
	 * its barrier shows as a difference, however fast the storage thread.
	 */
	uint64_t durable_failures;
	int signal_fd;			/* -1 unless this worker handles signals */

	/* Free output chunks of CONN_CHUNK_SIZE, to avoid malloc per write. */
	struct out_chunk *chunk_free;
	unsigned chunk_free_count;

	/* Scratch space reused by handlers within one call (never kept). */
	struct strbuf scratch;
	struct arena tmp;

	struct sm_worker *sm;		/* stream management lists (sm.c), lazily */
	struct pep_worker *pep;		/* caps cache and queries (pep.c), lazily */
	struct adhoc_worker *adhoc;	/* ad-hoc command sessions (adhoc.c), lazily */
	struct kmod_worker *kmod;	/* the stanza offload module (kmod.c) */
	struct metrics_worker metrics;	/* counters only this thread writes (metrics.h) */
	struct s2s_worker *s2s;		/* federation links and queues (s2s.c), lazily */

	uint64_t next_conn_id;
	bool draining;			/* shutdown: closing everyone */
	struct loop_timer shutdown_timer;

	/* Messages from other workers (mailbox.c). */
	struct mailbox mbox;
	uint64_t bells_due;		/* workers posted to this turn, one bit each */
	struct worker_msg park_msg;	/* stop the world (worker_park_all) */
	struct worker_msg stop_msg;	/* worker 0 asks us to shut down */
	const struct route_origin *origin;	/* the forwarded stanza being routed (router.c) */
	bool fwd_self;			/* homes = loop: forwarded to ourselves, not yet routed */
	/* Messages of forwarded stanzas for reuse (router.c): ours, and those given back. */
	struct route_fwd *fwd_free;
	unsigned fwd_nfree;
	struct route_fwd *_Atomic fwd_returned;
	struct conn_move *moving;	/* connections leaving for their home worker */
	uint32_t load_published;	/* connection count last given to the steering */
};

/*
 * Sets up a worker on the calling thread: ring, pools, inbox, listeners.
 * 0 or -errno.
 */
int worker_init(struct worker *w, struct server *srv, unsigned id, int signal_fd);
/* Runs the worker's loop until shutdown completes. 0 or -errno. */
int worker_run(struct worker *w);
void worker_destroy(struct worker *w);

/* The connection at slot if its generation matches, else NULL. */
struct conn *worker_conn(struct worker *w, uint32_t slot, uint32_t gen);

/*
 * A connection of our own making (outbound s2s) on the nonblocking socket
 * fd, in a free slot; the caller sets kind and stream state. NULL with
 * errno (EMFILE: max_connections; ESHUTDOWN: draining; ENOMEM).
 */
struct conn *worker_conn_new(struct worker *w, int fd);

/*
 * Starts connecting c (from worker_conn_new) to addr, which must live in
 * c's own state until the completion: s2s_connected() gets the result,
 * and receiving is armed on success. 0 or -EBUSY.
 */
struct sockaddr;
int worker_connect(struct conn *c, const struct sockaddr *addr, unsigned addrlen);

/* Queues c for the end-of-turn flush. */
void worker_want_flush(struct worker *w, struct conn *c);
/* Queues c for reaping once its operations are done. */
void worker_want_reap(struct worker *w, struct conn *c);

/* Output chunks from the worker's pool. */
struct out_chunk *worker_chunk_get(struct worker *w, size_t need);
void worker_chunk_put(struct worker *w, struct out_chunk *ch);

/*
 * Takes fd as if the loop had accepted it on `listener` (connections the
 * predecessor passed on at a hand-over, handover.c).
 */
void worker_adopt(struct worker *w, unsigned listener, int fd);

/* Starts an orderly shutdown: every connection gets system-shutdown. */
void worker_begin_shutdown(struct worker *w);

/*
 * The worker that owns an account's sessions and state (its home). All
 * authenticated client connections live on their home worker; a
 * connection authenticated elsewhere moves there (worker_migrate), and
 * stanzas for the account are forwarded there (router.c). The services
 * (MUC, pubsub, IoT, upload, federation, HTTP) run on worker 0. The
 * `homes` setting places accounts: zero (worker 0), hash (FNV-1a of the
 * normalized bare JID modulo the workers: stable across restarts, so
 * tests can pick accounts on given workers), other (the last worker).
 */
unsigned worker_home(const struct server *srv, const char *bare_jid);

/*
 * Moves an authenticated client connection to worker `to`: input is
 * held, the receive cancelled, queued output sent; then the connection
 * (socket, TLS state, held input, a WebSocket's framing state and held
 * frames: nothing of it belongs to the old worker) goes through `to`'s
 * mailbox, and `to` adopts it in a fresh slot and calls resume(c) on its
 * own thread. The stream layer must not touch c after this call on the
 * old worker. If the connection closes meanwhile, nothing moves.
 */
/*
 * Makes the calling thread act for w: its thread-local state (the pubsub
 * registry in use, the metrics counters) becomes w's. For the shutdown,
 * when one thread runs what is left of every worker.
 */
void worker_bind_thread(struct worker *w);

/*
 * After every worker's loop has ended (one thread left): runs what was
 * posted to any worker meanwhile (a session ending at shutdown tells its
 * contacts at home elsewhere; a forwarded stanza is stored offline) and
 * the storage completions, each as its worker, for as long as that posts
 * more (at most WORKERS_QUIESCE_ROUNDS rounds). Nothing is sent then (no
 * connection is left); what needs storage after the storage thread
 * stopped completes at once with -ESHUTDOWN.
 */
#define WORKERS_QUIESCE_ROUNDS 16
void workers_quiesce(struct server *srv);

/* Sessions of all workers (for status and metrics, from any thread). */
size_t server_sessions_total(const struct server *srv);

void worker_migrate(struct conn *c, unsigned to, void (*resume)(struct conn *c));

/*
 * A question to several workers, for what reads the sessions or state of
 * accounts at home anywhere (admin commands, the control socket). each()
 * runs on every worker whose bit is set in `mask` (bit k: worker k), on
 * that worker's thread, where it may read the sessions and state of the
 * accounts at home there and fill its own part of *arg: a slot per
 * worker (indexed by w->id), since the parts are written by different
 * threads at once. Once all of them have run, done() runs on the calling
 * worker, which then has arg to itself again (the mailboxes order each
 * part's writes before it).
 *
 * The caller's own part runs at once, before worker_gather_some returns,
 * so it comes before anything the caller does after the call; when no
 * other worker is asked, done() runs at once too. A worker's part runs
 * after what the caller posted to that worker before.
 * 0, or -ENOMEM (then nothing ran).
 */
typedef void (*worker_gather_fn)(struct worker *w, void *arg);

int worker_gather_some(struct worker *w, uint64_t mask, worker_gather_fn each,
		       worker_gather_fn done, void *arg);

/* worker_gather_some on every worker. */
int worker_gather(struct worker *w, worker_gather_fn each, worker_gather_fn done, void *arg);

/* Whether c is on its way to another worker (input stays held). */
static inline bool conn_migrating(const struct conn *c)
{
	return c->move != NULL;
}

#endif
