/* SPDX-License-Identifier: MIT */
/*
 * The daemon's side of the stanza offload module (kmod/, ABI in
 * include/stanzad/uapi/stanza_offload.h): fan-out copies handed to the
 * kernel in one request instead of one queued send per recipient.
 *
 * Where it sits: every copy of a fan-out (presence broadcast, MUC, pubsub,
 * announcements: the users of fanout.h) reaches c2s_send_prepared(), which
 * offers it to kmod_fanout_take(). A copy is taken when the module is open
 * and the connection qualifies:
 *   - a client stream over plain TCP, or TLS whose record layer is in the
 *     kernel (kTLS): the module writes plaintext to the socket, so never a
 *     userspace-TLS or WebSocket connection;
 *   - nothing queued and no send in flight in the daemon, and no copy of
 *     this batch yet: the module's bytes must be the next on the stream;
 *   - not closing, not over its output limit.
 * Taken copies of one template form a batch (the template once, each
 * recipient's ' to' splice), sent in one ioctl when the batch must go:
 * another template arrives, anything else is about to be queued for one
 * of its connections (conn.c calls kmod_flush() first), the connection
 * closes, or the turn ends (worker_flush()). What a socket did not take
 * (a full send buffer) is queued in the daemon after the bytes that went
 * out, so the stream is exactly what the io_uring path would have sent.
 * Batches smaller than kmod_min_fanout go through the queue as well: for
 * a few recipients one system call costs more than it saves.
 *
 * A connection is registered with the module (one batched ioctl) the
 * first time one of its copies is taken, and unregistered when it is
 * freed, before its fd is closed (the module holds a reference on the
 * socket until then). Stream management counts each taken copy as sent
 * (sm_count_stanza()).
 *
 * The module may be absent, disabled or unloaded at any time: the daemon
 * then uses io_uring sends only. Opening is retried every KMOD_RETRY_MS
 * while fan-outs happen; the module's "events" multicast group tells the
 * daemon at once when an administrator turns it off, so that the daemon
 * closes the device and the module can be unloaded while it runs.
 */
#ifndef STANZAD_KMOD_H
#define STANZAD_KMOD_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct worker;
struct conn;

/*
 * Sets up the worker's offload state and opens the device if the
 * configuration allows and the module is there; the outcome is what
 * kmod_state() reports. Needs the worker's loop. 0 or -ENOMEM.
 */
int kmod_worker_init(struct worker *w);
/* Closes the device and the event socket; drops a batch in progress. */
void kmod_worker_destroy(struct worker *w);

/*
 * "on" when the device is open, else "off" with *reason saying why (for
 * the server.paths log line).
 */
const char *kmod_state(const struct worker *w, const char **reason);

/*
 * Offers one fan-out copy for c (data[0..len) as fanout_render() made
 * it). true: taken (or refused by stream management, which then counts
 * it as sm_send_stanza() would), nothing more to do; false: send it the
 * usual way.
 */
bool kmod_fanout_take(struct conn *c, const char *data, size_t len);

/* Sends the batch in progress, if any, and queues what sockets did not take. */
void kmod_flush(struct worker *w);

/* Whether a batch is waiting to be sent. */
bool kmod_pending(const struct worker *w);

/* c is being freed: drops its registration (before its fd is closed). */
void kmod_conn_free(struct conn *c);

/* The module's event socket is readable (WORKER_WATCH_KMOD). */
void kmod_watch(struct worker *w);

/* Counters of this worker's use of the module (for logs and tests). */
struct kmod_counters {
	uint64_t requests;		/* fan-out ioctls */
	uint64_t copies;		/* copies handed to the module */
	uint64_t kernel_bytes;		/* bytes the module wrote */
	uint64_t queued_bytes;		/* remainders queued in the daemon */
	uint64_t small_batches;		/* batches under kmod_min_fanout, queued instead */
	uint64_t registered;		/* sockets registered */
};
/* Every worker's counters summed (any thread). */
struct server;
void kmod_counters(const struct server *srv, struct kmod_counters *out);

#endif
