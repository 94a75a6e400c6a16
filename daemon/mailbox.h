/* SPDX-License-Identifier: MIT */
/*
 * Messages between workers: each worker has one mailbox, a lock-free
 * intrusive multi-producer single-consumer queue (Vyukov's), and a
 * doorbell. A sender links its message in (one atomic exchange, no lock,
 * no copy: the message is the sender's allocation, handed over), and at
 * the end of its loop turn rings each receiver it wrote to with
 * IORING_OP_MSG_RING (loop_msg_ring), once per receiver and turn, and only
 * if that receiver's doorbell is not already ringing. The receiver clears
 * its doorbell, then runs every queued message in order.
 *
 * Order: messages from one sender run in the order it posted them (the
 * queue is FIFO per producer), so per sender-to-recipient order holds.
 * Without MSG_RING (kernels before 5.18) the doorbell is an eventfd the
 * receiver's loop watches.
 */
#ifndef STANZAD_MAILBOX_H
#define STANZAD_MAILBOX_H

#include <stdatomic.h>
#include <stdbool.h>
#include <stddef.h>

struct worker;
struct worker_msg;

/* Runs on the receiving worker's thread, which owns m from then on. */
typedef void (*worker_msg_fn)(struct worker *w, struct worker_msg *m);

struct worker_msg {
	struct worker_msg *_Atomic next;
	worker_msg_fn fn;
};

struct mailbox {
	struct worker_msg *_Atomic tail;	/* producers exchange here */
	struct worker_msg *head;		/* the consumer's end */
	struct worker_msg stub;
	atomic_bool bell;			/* a doorbell is on its way */
	int efd;				/* doorbell without MSG_RING, else -1 */
};

/* 0 or -errno (the eventfd, when MSG_RING is missing). */
int mailbox_init(struct mailbox *mb, bool need_eventfd);
void mailbox_destroy(struct mailbox *mb);

/*
 * Queues m for worker `to` (any thread may post; the receiver runs fn).
 * The doorbell rings at the end of the sender's turn (worker_post_flush),
 * or at once with worker_post_now.
 */
void worker_post(struct worker *from, unsigned to, struct worker_msg *m, worker_msg_fn fn);
/* Rings the doorbells of the workers posted to this turn. */
void worker_post_flush(struct worker *from);
/* Rings them and submits now (before the sender blocks). */
void worker_post_now(struct worker *from);

/* The doorbell rang: runs every queued message. Returns how many ran. */
size_t mailbox_drain(struct worker *w);


/* A doorbell could not be posted: ring again at the end of this turn. */
void mailbox_ring_failed(struct worker *from, unsigned to, int err);

/*
 * Stop the world (worker 0 only): every other worker parks at the top
 * of its next turn until worker_resume_all(). For the rare changes of
 * shared state that readers take without locks, such as a reload.
 * Returns only once all of them are parked.
 */
void worker_park_all(struct worker *w0);
void worker_resume_all(struct worker *w0);

#endif
