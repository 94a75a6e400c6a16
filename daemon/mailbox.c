/* SPDX-License-Identifier: MIT */
/*
 * Worker mailboxes (see mailbox.h).
 *
 * The queue is Dmitry Vyukov's intrusive MPSC queue: a producer swaps
 * itself in as the tail and then links the previous tail to it; the one
 * consumer walks from the head. Between those two steps of a producer
 * the consumer sees a gap and stops early; that producer rings the
 * doorbell only after linking (at the end of its turn), so the consumer
 * is woken again for what it left behind.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <string.h>
#include <sys/eventfd.h>
#include <unistd.h>

#include "log.h"
#include "mailbox.h"
#include "server.h"
#include "worker.h"

int mailbox_init(struct mailbox *mb, bool need_eventfd)
{
	atomic_store_explicit(&mb->stub.next, NULL, memory_order_relaxed);
	atomic_store_explicit(&mb->tail, &mb->stub, memory_order_relaxed);
	mb->head = &mb->stub;
	atomic_store_explicit(&mb->bell, false, memory_order_relaxed);
	mb->efd = -1;
	if (need_eventfd) {
		mb->efd = eventfd(0, EFD_NONBLOCK | EFD_CLOEXEC);
		if (mb->efd < 0)
			return -errno;
	}
	return 0;
}

void mailbox_destroy(struct mailbox *mb)
{
	if (mb->efd >= 0)
		close(mb->efd);
	mb->efd = -1;
}

static void mailbox_push(struct mailbox *mb, struct worker_msg *m)
{
	struct worker_msg *prev;

	atomic_store_explicit(&m->next, NULL, memory_order_relaxed);
	prev = atomic_exchange_explicit(&mb->tail, m, memory_order_acq_rel);
	atomic_store_explicit(&prev->next, m, memory_order_release);
}

/* The oldest message, or NULL when empty (or a producer is mid-push). */
static struct worker_msg *mailbox_pop(struct mailbox *mb)
{
	struct worker_msg *head = mb->head;
	struct worker_msg *next = atomic_load_explicit(&head->next, memory_order_acquire);

	if (head == &mb->stub) {
		if (!next)
			return NULL;
		mb->head = next;
		head = next;
		next = atomic_load_explicit(&head->next, memory_order_acquire);
	}
	if (next) {
		mb->head = next;
		return head;
	}
	if (head != atomic_load_explicit(&mb->tail, memory_order_acquire))
		return NULL;	/* a producer swapped the tail but has not linked yet */
	mailbox_push(mb, &mb->stub);
	next = atomic_load_explicit(&head->next, memory_order_acquire);
	if (next) {
		mb->head = next;
		return head;
	}
	return NULL;
}

void worker_post(struct worker *from, unsigned to, struct worker_msg *m, worker_msg_fn fn)
{
	struct worker *target = &from->srv->workers[to];

	m->fn = fn;
	mailbox_push(&target->mbox, m);
	from->bells_due |= UINT64_C(1) << to;
}

/* Rings `to` unless its doorbell is already on the way. */
static void mailbox_ring(struct worker *from, unsigned to)
{
	struct worker *target = &from->srv->workers[to];
	uint64_t one = 1;
	int ret;

	if (!target->loop)
		return;	/* it never started (startup failed) */
	if (atomic_exchange_explicit(&target->mbox.bell, true, memory_order_acq_rel))
		return;
	if (target->mbox.efd >= 0) {
		if (write(target->mbox.efd, &one, sizeof(one)) < 0 && errno != EAGAIN)
			log_error("worker.doorbell", "from=%u to=%u err=\"%s\"", from->id, to,
				  strerror(errno));
		return;
	}
	ret = loop_msg_ring(from->loop, target->loop, from->id, to);
	if (ret < 0) {
		/* No submission entry free: try again at the next turn's end. */
		atomic_store_explicit(&target->mbox.bell, false, memory_order_release);
		from->bells_due |= UINT64_C(1) << to;
	}
}

void worker_post_flush(struct worker *from)
{
	uint64_t due = from->bells_due;

	from->bells_due = 0;
	while (due) {
		unsigned to = (unsigned)__builtin_ctzll(due);

		due &= due - 1;
		mailbox_ring(from, to);
	}
}

void worker_post_now(struct worker *from)
{
	worker_post_flush(from);
	loop_submit(from->loop);
}

void mailbox_ring_failed(struct worker *from, unsigned to, int err)
{
	struct worker *target;

	if (to >= from->srv->nworkers)
		return;
	target = &from->srv->workers[to];
	log_warn("worker.doorbell_failed", "from=%u to=%u err=\"%s\" action=retry", from->id, to,
		 strerror(-err));
	atomic_store_explicit(&target->mbox.bell, false, memory_order_release);
	from->bells_due |= UINT64_C(1) << to;
}

size_t mailbox_drain(struct worker *w)
{
	struct worker_msg *m;
	size_t n = 0;
	uint64_t v;

	if (w->mbox.efd >= 0)
		while (read(w->mbox.efd, &v, sizeof(v)) == sizeof(v))
			;
	/* Cleared before reading: a message posted after this rings again. */
	atomic_store_explicit(&w->mbox.bell, false, memory_order_seq_cst);
	while ((m = mailbox_pop(&w->mbox)) != NULL) {
		m->fn(w, m);
		n++;
	}
	return n;
}

/* ---- Stop the world ---- */

static void worker_park(struct worker *w, struct worker_msg *m)
{
	(void)m;
	/* Everything queued so far goes out before we stand still. */
	loop_submit(w->loop);
	pthread_barrier_wait(&w->srv->park_in);
	pthread_barrier_wait(&w->srv->park_out);
}

void worker_park_all(struct worker *w0)
{
	struct server *srv = w0->srv;

	if (srv->nworkers < 2)
		return;
	for (unsigned k = 1; k < srv->nworkers; k++)
		worker_post(w0, k, &srv->workers[k].park_msg, worker_park);
	worker_post_now(w0);
	pthread_barrier_wait(&srv->park_in);
}

void worker_resume_all(struct worker *w0)
{
	if (w0->srv->nworkers < 2)
		return;
	pthread_barrier_wait(&w0->srv->park_out);
}
