/* SPDX-License-Identifier: MIT */
/*
 * Worker mailboxes on real rings and threads: messages from several
 * senders arrive complete and in each sender's order, with MSG_RING
 * doorbells and with the eventfd fallback; stop the world parks every
 * other worker and lets it go again; a gather runs each part on its own
 * worker and the completion on the asking one, once all are back.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "mailbox.h"
#include "server.h"
#include "worker.h"

#define NWORKERS	3
#define PER_SENDER	20000	/* messages each sender posts */
#define BATCH		64	/* posts per turn: one doorbell each */
#define DEADLINE_S	20	/* every wait is bounded */

struct test_msg {
	struct worker_msg m;
	unsigned from;
	unsigned seq;
};

static struct server srv;
static struct worker workers[NWORKERS];
static bool use_eventfd;
static atomic_uint ready, done_senders;
static atomic_bool stop_all;
static atomic_ulong turns[NWORKERS];

/* What worker 0 received: next expected sequence per sender, and errors. */
static unsigned next_seq[NWORKERS];
static unsigned received, out_of_order;

static void h_message(void *ctx, unsigned from)
{
	(void)from;
	mailbox_drain(ctx);
}

static void h_watch(void *ctx, unsigned id)
{
	(void)id;
	mailbox_drain(ctx);
}

static void h_flush(void *ctx)
{
	struct worker *w = ctx;

	atomic_fetch_add(&turns[w->id], 1);
	worker_post_flush(w);
}

static void h_accepted(void *ctx, unsigned l, int fd) { close(fd); }
static void h_accept_error(void *ctx, unsigned l, int err) {}
static void h_received(void *ctx, uint32_t s, uint32_t g, const char *d, size_t n, int e, bool m) {}
static void h_sent(void *ctx, uint32_t s, uint32_t g, int r) {}

static const struct loop_handlers handlers = {
	.accepted = h_accepted, .accept_error = h_accept_error, .received = h_received,
	.sent = h_sent, .watch = h_watch, .flush = h_flush, .message = h_message,
};

static void got(struct worker *w, struct worker_msg *m)
{
	struct test_msg *t = (struct test_msg *)m;

	assert_int_equal(w->id, 0);
	if (t->seq != next_seq[t->from])
		out_of_order++;
	next_seq[t->from] = t->seq + 1;
	received++;
	free(t);
}

static time_t deadline(void)
{
	return time(NULL) + DEADLINE_S;
}

/* Makes worker id's ring on the calling thread (the ring's single issuer). */
static void worker_setup(unsigned id)
{
	const struct loop_config lcfg = { 64, 8, 4096 };
	struct worker *w = &workers[id];

	w->srv = &srv;
	w->id = id;
	w->loop = loop_new(&lcfg, &handlers, w);
	assert_non_null(w->loop);
	assert_int_equal(mailbox_init(&w->mbox, use_eventfd || !loop_msg_ring_supported(w->loop)), 0);
	if (w->mbox.efd >= 0)
		assert_int_equal(loop_watch(w->loop, w->mbox.efd, 0), 0);
	atomic_fetch_add(&ready, 1);
}

static void wait_ready(void)
{
	time_t end = deadline();

	while (atomic_load(&ready) < NWORKERS && time(NULL) < end)
		usleep(1000);
}

static void *sender(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg;
	struct worker *w = &workers[id];

	worker_setup(id);
	wait_ready();
	for (unsigned i = 0; i < PER_SENDER; i++) {
		struct test_msg *t = malloc(sizeof(*t));

		t->from = id;
		t->seq = i;
		worker_post(w, 0, &t->m, got);
		if (i % BATCH == BATCH - 1)
			loop_run_once(w->loop, 0);	/* the end of a turn rings the doorbell */
	}
	atomic_fetch_add(&done_senders, 1);
	/* Keep turning: a doorbell that found no free entry is retried at a turn's end. */
	while (!atomic_load(&stop_all))
		loop_run_once(w->loop, 1);
	return NULL;
}

static void teardown_workers(void)
{
	for (unsigned i = 0; i < NWORKERS; i++) {
		loop_free(workers[i].loop);
		mailbox_destroy(&workers[i].mbox);
	}
	memset(workers, 0, sizeof(workers));
}

/* A fresh server of NWORKERS workers, none set up yet. */
static void workers_reset(bool eventfd_doorbell)
{
	memset(&srv, 0, sizeof(srv));
	memset(workers, 0, sizeof(workers));
	atomic_store(&ready, 0);
	atomic_store(&stop_all, false);
	use_eventfd = eventfd_doorbell;
	srv.workers = workers;
	srv.nworkers = NWORKERS;
}

static void run_order_test(bool eventfd_doorbell)
{
	pthread_t th[NWORKERS];
	time_t end;

	workers_reset(eventfd_doorbell);
	memset(next_seq, 0, sizeof(next_seq));
	received = out_of_order = 0;
	atomic_store(&done_senders, 0);
	worker_setup(0);
	for (unsigned i = 1; i < NWORKERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, sender, (void *)(uintptr_t)i), 0);
	wait_ready();
	end = deadline();
	while (received < (NWORKERS - 1) * PER_SENDER && time(NULL) < end)
		loop_run_once(workers[0].loop, 10);
	atomic_store(&stop_all, true);
	for (unsigned i = 1; i < NWORKERS; i++)
		pthread_join(th[i], NULL);
	assert_int_equal(received, (NWORKERS - 1) * PER_SENDER);
	assert_int_equal(out_of_order, 0);
	for (unsigned i = 1; i < NWORKERS; i++)
		assert_int_equal(next_seq[i], PER_SENDER);
	teardown_workers();
}

static void test_order_with_msg_ring(void **state)
{
	(void)state;
	run_order_test(false);
}

static void test_order_with_eventfd(void **state)
{
	(void)state;
	run_order_test(true);
}

/* ---- Stop the world ---- */

static void *turner(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg;

	worker_setup(id);
	while (!atomic_load(&stop_all))
		loop_run_once(workers[id].loop, 5);
	return NULL;
}

static void test_park_stops_every_other_worker(void **state)
{
	pthread_t th[NWORKERS];
	unsigned long before[NWORKERS];
	time_t end;

	(void)state;
	workers_reset(false);
	pthread_barrier_init(&srv.park_in, NULL, NWORKERS);
	pthread_barrier_init(&srv.park_out, NULL, NWORKERS);
	worker_setup(0);
	for (unsigned i = 1; i < NWORKERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, turner, (void *)(uintptr_t)i), 0);
	wait_ready();
	for (unsigned round = 0; round < 3; round++) {
		/* Everybody turns... */
		end = deadline();
		for (unsigned i = 1; i < NWORKERS; i++) {
			unsigned long t0 = atomic_load(&turns[i]);

			while (atomic_load(&turns[i]) < t0 + 3 && time(NULL) < end)
				usleep(1000);
			assert_true(atomic_load(&turns[i]) >= t0 + 3);
		}
		/* ...until parked: then nobody moves. */
		worker_park_all(&workers[0]);
		for (unsigned i = 1; i < NWORKERS; i++)
			before[i] = atomic_load(&turns[i]);
		usleep(50000);
		for (unsigned i = 1; i < NWORKERS; i++)
			assert_int_equal(atomic_load(&turns[i]), before[i]);
		worker_resume_all(&workers[0]);
	}
	atomic_store(&stop_all, true);
	for (unsigned i = 1; i < NWORKERS; i++)
		pthread_join(th[i], NULL);
	pthread_barrier_destroy(&srv.park_in);
	pthread_barrier_destroy(&srv.park_out);
	teardown_workers();
}

/* ---- Gathers ---- */

struct gather_probe {
	pthread_t asker;
	pthread_t ran_on[NWORKERS];	/* each part writes only its own slot */
	unsigned ran[NWORKERS];
	unsigned done_runs;
	bool done_on_asker;
	bool parts_complete;
};

static pthread_t thread_of[NWORKERS];

static void *gather_turner(void *arg)
{
	unsigned id = (unsigned)(uintptr_t)arg;

	thread_of[id] = pthread_self();
	worker_setup(id);
	while (!atomic_load(&stop_all))
		loop_run_once(workers[id].loop, 5);
	return NULL;
}

static void probe_part(struct worker *w, void *arg)
{
	struct gather_probe *p = arg;

	p->ran_on[w->id] = pthread_self();
	p->ran[w->id]++;
}

static void probe_done(struct worker *w, void *arg)
{
	struct gather_probe *p = arg;

	p->done_runs++;
	p->done_on_asker = w->id == 0 && pthread_equal(pthread_self(), p->asker);
	p->parts_complete = true;
	for (unsigned k = 0; k < NWORKERS; k++)
		p->parts_complete &= p->ran[k] == 1 && pthread_equal(p->ran_on[k], thread_of[k]);
}

static void test_gather_runs_each_part_on_its_worker(void **state)
{
	pthread_t th[NWORKERS];
	struct gather_probe p, q;
	time_t end;

	(void)state;
	workers_reset(false);
	thread_of[0] = pthread_self();
	worker_setup(0);
	for (unsigned i = 1; i < NWORKERS; i++)
		assert_int_equal(pthread_create(&th[i], NULL, gather_turner, (void *)(uintptr_t)i), 0);
	wait_ready();

	for (unsigned round = 0; round < 50; round++) {
		memset(&p, 0, sizeof(p));
		p.asker = pthread_self();
		assert_int_equal(worker_gather(&workers[0], probe_part, probe_done, &p), 0);
		/* The asker's own part ran at once; the others come back later. */
		assert_int_equal(p.ran[0], 1);
		assert_int_equal(p.done_runs, 0);
		end = deadline();
		while (!p.done_runs && time(NULL) < end)
			loop_run_once(workers[0].loop, 10);
		assert_int_equal(p.done_runs, 1);
		assert_true(p.done_on_asker);
		assert_true(p.parts_complete);
	}

	/* Only the asker itself: everything runs before the call returns. */
	memset(&q, 0, sizeof(q));
	q.asker = pthread_self();
	assert_int_equal(worker_gather_some(&workers[0], 1, probe_part, probe_done, &q), 0);
	assert_int_equal(q.ran[0], 1);
	assert_int_equal(q.done_runs, 1);
	assert_int_equal(q.ran[1] + q.ran[2], 0);

	atomic_store(&stop_all, true);
	for (unsigned i = 1; i < NWORKERS; i++)
		pthread_join(th[i], NULL);
	teardown_workers();
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_order_with_msg_ring),
		cmocka_unit_test(test_order_with_eventfd),
		cmocka_unit_test(test_park_stops_every_other_worker),
		cmocka_unit_test(test_gather_runs_each_part_on_its_worker),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
