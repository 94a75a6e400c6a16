/* SPDX-License-Identifier: MIT */
/*
 * The event loop: one io_uring per worker thread. This is the only code
 * that touches the ring (SQEs, CQEs, registered buffers); everything above
 * it sees "a connection arrived", "bytes arrived", "a send finished", "a
 * watched fd is readable" and "a timer fired".
 *
 * One loop turn:
 *   1. submit everything queued and wait for completions (or the next
 *      timer tick), with a single io_uring_submit_and_wait_timeout();
 *   2. dispatch every ready CQE to its handler; received data is lent from
 *      the provided-buffer ring for the duration of the handler call and
 *      the buffer is recycled right after;
 *   3. run expired timers;
 *   4. call the flush hook, where the connection layer queues one send per
 *      connection with pending output (batch, then flush).
 *
 * user_data packs {op, generation, slot} so a completion for a connection
 * slot that was reused in the meantime is recognised and dropped.
 */
#ifndef STANZAD_LOOP_H
#define STANZAD_LOOP_H

#include <liburing.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

/* ---- Typed user_data ---- */

enum loop_op {
	LOOP_OP_NONE = 0,
	LOOP_OP_ACCEPT,		/* slot = listener index */
	LOOP_OP_RECV,		/* slot = connection slot */
	LOOP_OP_SEND,		/* slot = connection slot */
	LOOP_OP_CANCEL,		/* completion of a cancel request; ignored */
	LOOP_OP_WATCH,		/* slot = watch index (eventfd, signalfd) */
	LOOP_OP_RECV_TLS,	/* slot = connection slot; kTLS recvmsg */
	LOOP_OP_CONNECT,	/* slot = connection slot; outbound connect (s2s) */
	LOOP_OP_MSG,		/* slot = sending worker; a doorbell from another ring */
	LOOP_OP_MSG_SENT,	/* slot = target worker; only a failed doorbell completes */
	LOOP_OP_POLL,		/* slot = poll id, gen = its owner's generation (loop_poll) */
};

#define LOOP_GEN_BITS	24
#define LOOP_GEN_MASK	((1u << LOOP_GEN_BITS) - 1)

static inline uint64_t loop_ud_pack(enum loop_op op, uint32_t gen, uint32_t slot)
{
	return ((uint64_t)op << 56) | ((uint64_t)(gen & LOOP_GEN_MASK) << 32) | slot;
}

static inline enum loop_op loop_ud_op(uint64_t ud)
{
	return (enum loop_op)(ud >> 56);
}

static inline uint32_t loop_ud_gen(uint64_t ud)
{
	return (uint32_t)(ud >> 32) & LOOP_GEN_MASK;
}

static inline uint32_t loop_ud_slot(uint64_t ud)
{
	return (uint32_t)ud;
}

/* ---- Timers: a hashed wheel with one-second ticks ---- */

struct loop_timer {
	struct loop_timer *next;
	struct loop_timer **pprev;	/* NULL when not armed */
	uint64_t expires_ms;
	void (*fn)(struct loop_timer *t);
};

#define LOOP_WHEEL_SLOTS	256	/* power of two */
#define LOOP_TICK_MS		1000

/* ---- The loop ---- */

struct loop;

/* Upcalls into the layer above; `ctx` is the pointer given to loop_init. */
struct loop_handlers {
	/* A new connection on listener `listener`; the handler owns fd. */
	void (*accepted)(void *ctx, unsigned listener, int fd);
	/* An accept failed (e.g. EMFILE); the loop re-arms it. */
	void (*accept_error)(void *ctx, unsigned listener, int err);
	/*
	 * Received data for a connection: len > 0 with data lent until the
	 * handler returns; len == 0 and err == 0 at end of file; err < 0 on
	 * an error. `more` is false when the receive is no longer armed
	 * (EOF, error, cancel, or out of buffers: err == -ENOBUFS, re-arm).
	 */
	void (*received)(void *ctx, uint32_t slot, uint32_t gen, const char *data,
			 size_t len, int err, bool more);
	/* A send finished: res = bytes sent or -errno. */
	void (*sent)(void *ctx, uint32_t slot, uint32_t gen, int res);
	/* A watched fd became readable (see loop_watch). */
	void (*watch)(void *ctx, unsigned watch_id);
	/* End of a turn: queue the batched sends now. */
	void (*flush)(void *ctx);
	/*
	 * Received on a kTLS socket (see loop_recv_tls): like `received`, plus
	 * the TLS record type of the data (23 application data, 21 alert,
	 * 22 handshake). A non-data record always arrives alone, whole.
	 */
	void (*received_tls)(void *ctx, uint32_t slot, uint32_t gen, unsigned record_type,
			     const char *data, size_t len, int err, bool more);
	/* An outbound connect finished (see loop_connect): res 0 or -errno. */
	void (*connected)(void *ctx, uint32_t slot, uint32_t gen, int res);
	/* Another loop rang us (loop_msg_ring) on behalf of `from`. */
	void (*message)(void *ctx, unsigned from);
	/* Our doorbell to `to` could not be posted (e.g. its CQ was full). */
	void (*message_failed)(void *ctx, unsigned to, int err);
	/*
	 * A socket armed with loop_poll() is ready: res = the poll mask or
	 * -errno (-ECANCELED after loop_poll_cancel). `more` is false when the
	 * poll is no longer armed.
	 */
	void (*polled)(void *ctx, uint32_t id, uint32_t gen, int res, bool more);
};

struct loop_config {
	unsigned ring_entries;	/* SQ size; CQ is twice this */
	unsigned buf_count;	/* provided buffers (power of two) */
	unsigned buf_size;	/* bytes per provided buffer */
};

#define LOOP_CONFIG_DEFAULT { 1024, 256, 16384 }

/*
 * Creates the ring (SINGLE_ISSUER + DEFER_TASKRUN where the kernel has
 * them) and registers the provided-buffer ring. Must be called on the
 * thread that will run the loop. NULL with errno set.
 */
struct loop *loop_new(const struct loop_config *cfg, const struct loop_handlers *h, void *ctx);
void loop_free(struct loop *l);

/* Milliseconds of CLOCK_MONOTONIC, cached once per turn. */
uint64_t loop_now_ms(const struct loop *l);
/* The same reading in nanoseconds: when the current turn's completions arrived. */
uint64_t loop_turn_ns(const struct loop *l);
/* The IORING_SETUP_* flags the ring was created with (the kernel accepted them). */
unsigned loop_setup_flags(const struct loop *l);

/* Arms a multishot accept on a listening socket. 0 or -errno. */
int loop_add_listener(struct loop *l, int fd, unsigned listener);

/* Arms a multishot receive (buffer select) for a connection. */
void loop_recv(struct loop *l, int fd, uint32_t slot, uint32_t gen);

/*
 * Arms a single receive of at most max bytes (and at most one provided
 * buffer); it completes through `received` with more == false. The kTLS
 * handoff uses it to read exactly the rest of a record.
 */
void loop_recv_limited(struct loop *l, int fd, uint32_t slot, uint32_t gen, size_t max);

/*
 * Arms a multishot recvmsg (buffer select) on a kTLS socket: plaintext and
 * the record type of each receive go to `received_tls`. Plain recv cannot
 * be used there: a non-data record makes it fail with EIO. On a socket
 * without kTLS every receive reports record type 23.
 */
void loop_recv_tls(struct loop *l, int fd, uint32_t slot, uint32_t gen);

/*
 * Cancels the receive armed with loop_recv() (op LOOP_OP_RECV) or
 * loop_recv_tls() (LOOP_OP_RECV_TLS) for slot/gen; its last completion
 * arrives with more == false (-ECANCELED, or data that raced the cancel).
 */
void loop_cancel_recv(struct loop *l, enum loop_op op, uint32_t slot, uint32_t gen);

/*
 * Queues one send of data[0..len). The memory must stay valid and unchanged
 * until the `sent` upcall for it. At most one send per connection should be
 * in flight so that output stays ordered.
 */
void loop_send(struct loop *l, int fd, uint32_t slot, uint32_t gen, const void *data, size_t len);

/*
 * Starts a connect of the nonblocking socket fd to addr; it completes
 * through `connected`. addr must stay valid until the next submission
 * (the kernel copies it then): keep it in the connection, not on the
 * stack. 0, or -EBUSY when no submission entry is free.
 */
struct sockaddr;
int loop_connect(struct loop *l, int fd, const struct sockaddr *addr, unsigned addrlen,
		 uint32_t slot, uint32_t gen);

/*
 * Rings another loop's doorbell with IORING_OP_MSG_RING: a completion
 * appears in target's ring and runs its `message` upcall with `from`.
 * Nothing but the doorbell travels; the messages themselves wait in the
 * receiver's lock-free mailbox (mailbox.c), which keeps them in order.
 * The ring is rung at the next submission; the sender sees a completion
 * only when the kernel could not post it (`message_failed`).
 * 0, -EBUSY when no submission entry is free, -EOPNOTSUPP when the
 * kernel lacks MSG_RING (then use loop_ring_supported() to choose).
 */
int loop_msg_ring(struct loop *l, const struct loop *target, unsigned from, unsigned to);
/* Whether this kernel has IORING_OP_MSG_RING. */
bool loop_msg_ring_supported(const struct loop *l);
/* Submits what is queued now, without waiting (a doorbell that must not wait for the turn). */
void loop_submit(struct loop *l);

/* Cancels every operation on fd (their CQEs still arrive, with -ECANCELED). */
void loop_cancel_fd(struct loop *l, int fd);

/*
 * Watches a pollable fd (eventfd, signalfd) for readability with a
 * multishot poll; `watch` runs on every readiness. 0 or -errno.
 */
int loop_watch(struct loop *l, int fd, unsigned watch_id);

/*
 * Polls fd for `events` (POLLIN, POLLOUT) on behalf of a library that
 * does its own reads and writes (the Redis client, cluster_redis.c):
 * multishot keeps it armed across readiness, else it completes once.
 * Completions go to `polled` with id and gen; an owner that reconnects
 * bumps gen, so what an earlier socket left in flight is told apart.
 * 0 or -EBUSY when no submission entry is free.
 */
int loop_poll(struct loop *l, int fd, unsigned events, bool multishot, uint32_t id, uint32_t gen);
/* Removes the poll armed with id and gen (its last completion still arrives). */
void loop_poll_cancel(struct loop *l, uint32_t id, uint32_t gen);

/* Arms t to fire after delay_ms (rounded up to the tick); re-arming moves it. */
void loop_timer_arm(struct loop *l, struct loop_timer *t, uint64_t delay_ms);
void loop_timer_cancel(struct loop_timer *t);
static inline bool loop_timer_armed(const struct loop_timer *t)
{
	return t->pprev != NULL;
}

/* Runs turns until loop_stop(). 0, or -errno on a fatal ring error. */
int loop_run(struct loop *l);
/* Makes loop_run return after the current turn. */
void loop_stop(struct loop *l);

/* Runs exactly one turn, waiting at most timeout_ms (for tests). */
int loop_run_once(struct loop *l, unsigned timeout_ms);

#endif
