/* SPDX-License-Identifier: MIT */
/*
 * The event loop on a real io_uring: typed user_data, receive through the
 * provided-buffer ring, sends, watched fds, timers, stale generations.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/eventfd.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"

struct events {
	char rx[65536];
	size_t rx_len;
	int rx_eof;
	int rx_err;
	uint32_t rx_gen;
	int sent;
	unsigned watches;
	unsigned flushes;
	unsigned fired;
	unsigned rx_calls;
	bool rx_more;		/* `more` of the last receive completion */
	unsigned tls_type;	/* record type of the last kTLS receive */
};

static void h_accepted(void *ctx, unsigned l, int fd)
{
	close(fd);
}

static void h_accept_error(void *ctx, unsigned l, int err)
{
}

static void h_received(void *ctx, uint32_t slot, uint32_t gen, const char *data, size_t len,
		       int err, bool more)
{
	struct events *ev = ctx;

	ev->rx_gen = gen;
	ev->rx_calls++;
	ev->rx_more = more;
	if (len) {
		memcpy(ev->rx + ev->rx_len, data, len);
		ev->rx_len += len;
	} else if (err == 0) {
		ev->rx_eof++;
	} else {
		ev->rx_err = err;
	}
}

static void h_sent(void *ctx, uint32_t slot, uint32_t gen, int res)
{
	struct events *ev = ctx;

	ev->sent += res;
}

static void h_watch(void *ctx, unsigned id)
{
	struct events *ev = ctx;

	ev->watches++;
}

static void h_flush(void *ctx)
{
	struct events *ev = ctx;

	ev->flushes++;
}

static void h_received_tls(void *ctx, uint32_t slot, uint32_t gen, unsigned type,
			   const char *data, size_t len, int err, bool more)
{
	struct events *ev = ctx;

	ev->tls_type = type;
	h_received(ctx, slot, gen, data, len, err, more);
}

static const struct loop_handlers handlers = {
	h_accepted, h_accept_error, h_received, h_sent, h_watch, h_flush, h_received_tls,
};

static void test_user_data_round_trips(void **state)
{
	uint64_t ud = loop_ud_pack(LOOP_OP_SEND, 0xabcdef, 0xfffffffe);

	assert_int_equal(loop_ud_op(ud), LOOP_OP_SEND);
	assert_int_equal(loop_ud_gen(ud), 0xabcdef);
	assert_int_equal(loop_ud_slot(ud), 0xfffffffe);
	/* Generations wrap inside their bits and never touch the op. */
	ud = loop_ud_pack(LOOP_OP_RECV, 0x1000001, 7);
	assert_int_equal(loop_ud_op(ud), LOOP_OP_RECV);
	assert_int_equal(loop_ud_gen(ud), 1);
}

static void test_recv_and_send_through_the_ring(void **state)
{
	const struct loop_config cfg = { 64, 8, 4096 };
	struct events ev = { 0 };
	struct loop *l = loop_new(&cfg, &handlers, &ev);
	int sv[2];
	static char big[40000];

	assert_non_null(l);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	loop_recv(l, sv[0], 3, 42);

	/* More than all provided buffers together: forces ENOBUFS re-arms by the caller. */
	memset(big, 'x', sizeof(big));
	assert_int_equal(write(sv[1], "hello", 5), 5);
	for (int i = 0; i < 20 && ev.rx_len < 5; i++)
		assert_int_equal(loop_run_once(l, 100), 0);
	assert_int_equal(ev.rx_len, 5);
	assert_memory_equal(ev.rx, "hello", 5);
	assert_int_equal(ev.rx_gen, 42);

	loop_send(l, sv[0], 3, 42, "world", 5);
	for (int i = 0; i < 20 && ev.sent < 5; i++)
		assert_int_equal(loop_run_once(l, 100), 0);
	assert_int_equal(ev.sent, 5);
	char buf[8];

	assert_int_equal(read(sv[1], buf, sizeof(buf)), 5);
	assert_memory_equal(buf, "world", 5);

	close(sv[1]);
	for (int i = 0; i < 20 && !ev.rx_eof; i++)
		assert_int_equal(loop_run_once(l, 100), 0);
	assert_int_equal(ev.rx_eof, 1);
	assert_true(ev.flushes > 0);
	close(sv[0]);
	loop_free(l);
}

static void test_buffers_are_recycled(void **state)
{
	const struct loop_config cfg = { 64, 2, 1024 };
	struct events ev = { 0 };
	struct loop *l = loop_new(&cfg, &handlers, &ev);
	char chunk[1000];
	int sv[2];

	assert_non_null(l);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	memset(chunk, 'a', sizeof(chunk));
	/* Ten receives through two buffers: only works if each is given back. */
	for (int round = 0; round < 10; round++) {
		size_t want = ev.rx_len + sizeof(chunk);

		loop_recv(l, sv[0], 1, 1);
		assert_int_equal(write(sv[1], chunk, sizeof(chunk)), (ssize_t)sizeof(chunk));
		for (int i = 0; i < 20 && ev.rx_len < want; i++)
			assert_int_equal(loop_run_once(l, 100), 0);
		assert_int_equal(ev.rx_len, want);
		/* Cancel so the next round arms a fresh receive. */
		loop_cancel_fd(l, sv[0]);
		for (int i = 0; i < 3; i++)
			loop_run_once(l, 10);
	}
	close(sv[0]);
	close(sv[1]);
	loop_free(l);
}

static void test_watch_reports_readiness(void **state)
{
	const struct loop_config cfg = LOOP_CONFIG_DEFAULT;
	struct events ev = { 0 };
	struct loop *l = loop_new(&cfg, &handlers, &ev);
	int efd = eventfd(0, EFD_NONBLOCK);
	uint64_t one = 1, v;

	assert_non_null(l);
	assert_int_equal(loop_watch(l, efd, 5), 0);
	assert_int_equal(write(efd, &one, sizeof(one)), 8);
	for (int i = 0; i < 20 && !ev.watches; i++)
		assert_int_equal(loop_run_once(l, 100), 0);
	assert_int_equal(ev.watches, 1);
	assert_int_equal(read(efd, &v, sizeof(v)), 8);
	/* Multishot: a second signal is reported without re-arming. */
	assert_int_equal(write(efd, &one, sizeof(one)), 8);
	for (int i = 0; i < 20 && ev.watches < 2; i++)
		assert_int_equal(loop_run_once(l, 100), 0);
	assert_int_equal(ev.watches, 2);
	close(efd);
	loop_free(l);
}

static struct events *timer_ev;

static void timer_fn(struct loop_timer *t)
{
	timer_ev->fired++;
}

static struct loop_timer *cancel_target;

static void timer_cancels_other(struct loop_timer *t)
{
	timer_ev->fired += 100;
	loop_timer_cancel(cancel_target);
}

static void test_timers_fire_once_and_cancel(void **state)
{
	const struct loop_config cfg = LOOP_CONFIG_DEFAULT;
	struct events ev = { 0 };
	struct loop *l = loop_new(&cfg, &handlers, &ev);
	struct loop_timer a = { .fn = timer_fn }, b = { .fn = timer_fn }, c = { .fn = timer_fn };

	assert_non_null(l);
	timer_ev = &ev;
	loop_timer_arm(l, &a, 10);
	loop_timer_arm(l, &b, 10);
	loop_timer_arm(l, &c, 100000);	/* far in the future: never fires here */
	assert_true(loop_timer_armed(&a));
	loop_timer_cancel(&b);
	assert_false(loop_timer_armed(&b));
	for (int i = 0; i < 30 && !ev.fired; i++)
		loop_run_once(l, 100);
	assert_int_equal(ev.fired, 1);
	assert_false(loop_timer_armed(&a));
	assert_true(loop_timer_armed(&c));

	/* A callback may cancel a timer due in the same tick. */
	struct loop_timer d = { .fn = timer_cancels_other }, e = { .fn = timer_fn };

	ev.fired = 0;
	cancel_target = &e;
	loop_timer_arm(l, &e, 5);
	loop_timer_arm(l, &d, 5);
	for (int i = 0; i < 30 && !ev.fired; i++)
		loop_run_once(l, 100);
	assert_int_equal(ev.fired, 100);
	assert_false(loop_timer_armed(&e));
	loop_timer_cancel(&c);
	loop_free(l);
}

/* A limited receive takes at most what it was asked for, then disarms. */
static void test_limited_recv_reads_no_more_than_asked(void **state)
{
	const struct loop_config cfg = { 64, 8, 4096 };
	struct events ev = { 0 };
	struct loop *l = loop_new(&cfg, &handlers, &ev);
	char buf[64];
	int sv[2];

	assert_non_null(l);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	assert_int_equal(write(sv[1], "0123456789abcdef", 16), 16);
	loop_recv_limited(l, sv[0], 2, 7, 10);
	for (int i = 0; i < 20 && ev.rx_len < 10; i++)
		assert_int_equal(loop_run_once(l, 100), 0);
	assert_int_equal(ev.rx_len, 10);
	assert_memory_equal(ev.rx, "0123456789", 10);
	assert_false(ev.rx_more);
	/* Nothing else was taken from the socket. */
	for (int i = 0; i < 3; i++)
		loop_run_once(l, 10);
	assert_int_equal(ev.rx_calls, 1);
	assert_int_equal(read(sv[0], buf, sizeof(buf)), 6);
	assert_memory_equal(buf, "abcdef", 6);
	close(sv[0]);
	close(sv[1]);
	loop_free(l);
}

/* Cancelling a multishot receive ends it: no data is taken afterwards. */
static void test_cancel_recv_stops_reading(void **state)
{
	const struct loop_config cfg = { 64, 8, 4096 };
	struct events ev = { 0 };
	struct loop *l = loop_new(&cfg, &handlers, &ev);
	char buf[16];
	int sv[2];

	assert_non_null(l);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	loop_recv(l, sv[0], 4, 9);
	assert_int_equal(loop_run_once(l, 10), 0);
	loop_cancel_recv(l, LOOP_OP_RECV, 4, 9);
	for (int i = 0; i < 20 && ev.rx_err != -ECANCELED; i++)
		assert_int_equal(loop_run_once(l, 50), 0);
	assert_int_equal(ev.rx_err, -ECANCELED);
	assert_false(ev.rx_more);
	assert_int_equal(write(sv[1], "later", 5), 5);
	for (int i = 0; i < 3; i++)
		loop_run_once(l, 10);
	assert_int_equal(ev.rx_len, 0);
	assert_int_equal(read(sv[0], buf, sizeof(buf)), 5);
	close(sv[0]);
	close(sv[1]);
	loop_free(l);
}

/*
 * The kTLS receive path (multishot recvmsg) on a socket without kTLS:
 * every receive is application data, and the end of the stream is seen.
 */
static void test_tls_recv_reports_data_and_eof(void **state)
{
	const struct loop_config cfg = { 64, 4, 4096 };
	struct events ev = { 0 };
	struct loop *l = loop_new(&cfg, &handlers, &ev);
	static char big[10000];
	int sv[2];

	assert_non_null(l);
	assert_int_equal(socketpair(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK, 0, sv), 0);
	loop_recv_tls(l, sv[0], 5, 11);
	assert_int_equal(write(sv[1], "<presence/>", 11), 11);
	for (int i = 0; i < 20 && ev.rx_len < 11; i++)
		assert_int_equal(loop_run_once(l, 100), 0);
	assert_int_equal(ev.rx_len, 11);
	assert_memory_equal(ev.rx, "<presence/>", 11);
	assert_int_equal(ev.tls_type, 23);
	assert_int_equal(ev.rx_gen, 11);
	assert_true(ev.rx_more);

	/* More than one buffer holds: several completions, bytes in order. */
	for (size_t i = 0; i < sizeof(big); i++)
		big[i] = (char)('a' + i % 26);
	assert_int_equal(write(sv[1], big, sizeof(big)), (ssize_t)sizeof(big));
	for (int i = 0; i < 40 && ev.rx_len < 11 + sizeof(big); i++) {
		assert_int_equal(loop_run_once(l, 100), 0);
		if (ev.rx_err == -ENOBUFS || !ev.rx_more) {
			ev.rx_err = 0;
			loop_recv_tls(l, sv[0], 5, 11);
		}
	}
	assert_int_equal(ev.rx_len, 11 + sizeof(big));
	assert_memory_equal(ev.rx + 11, big, sizeof(big));

	close(sv[1]);
	for (int i = 0; i < 20 && !ev.rx_eof; i++)
		assert_int_equal(loop_run_once(l, 100), 0);
	assert_int_equal(ev.rx_eof, 1);
	close(sv[0]);
	loop_free(l);
}

static void test_bad_config_is_rejected(void **state)
{
	const struct loop_config cfg = { 64, 3, 1024 };	/* not a power of two */

	assert_null(loop_new(&cfg, &handlers, NULL));
	assert_int_equal(errno, EINVAL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_user_data_round_trips),
		cmocka_unit_test(test_recv_and_send_through_the_ring),
		cmocka_unit_test(test_buffers_are_recycled),
		cmocka_unit_test(test_watch_reports_readiness),
		cmocka_unit_test(test_timers_fire_once_and_cancel),
		cmocka_unit_test(test_limited_recv_reads_no_more_than_asked),
		cmocka_unit_test(test_cancel_recv_stops_reading),
		cmocka_unit_test(test_tls_recv_reports_data_and_eof),
		cmocka_unit_test(test_bad_config_is_rejected),
	};

	return cmocka_run_group_tests_name("loop", tests, NULL, NULL);
}
