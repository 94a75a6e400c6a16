/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for abuse.c: the token bucket, source keys, bans and the
 * bounded tables, and the tables shared by several worker threads (counts
 * exact when four threads update the same entries at once).
 */
#include <arpa/inet.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "abuse.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "server.h"
#include "worker.h"

static struct in6_addr v4(const char *s)
{
	struct in6_addr a;

	memset(&a, 0, sizeof(a));
	a.s6_addr[10] = 0xff;
	a.s6_addr[11] = 0xff;
	inet_pton(AF_INET, s, &a.s6_addr[12]);
	return a;
}

static struct in6_addr v6(const char *s)
{
	struct in6_addr a;

	inet_pton(AF_INET6, s, &a);
	return a;
}

static int reset(void **state)
{
	abuse_reset();
	auth_ban_set_hook(NULL);
	return 0;
}

static void test_gcra_allows_the_burst_then_the_rate(void **state)
{
	uint64_t tat = 0, now = 1000000;
	int allowed = 0;

	/* rate 10/s, burst 5: five at once, the sixth waits. */
	for (int i = 0; i < 8; i++)
		allowed += abuse_gcra(&tat, now, 1, 10, 5);
	assert_int_equal(allowed, 5);
	/* 100 ms later one more unit fits, not two. */
	now += 100000;
	assert_true(abuse_gcra(&tat, now, 1, 10, 5));
	assert_false(abuse_gcra(&tat, now, 1, 10, 5));
	/* A long pause refills to the burst, never beyond. */
	now += 10000000;
	allowed = 0;
	for (int i = 0; i < 20; i++)
		allowed += abuse_gcra(&tat, now, 1, 10, 5);
	assert_int_equal(allowed, 5);
}

static void test_gcra_sustained_rate_is_kept(void **state)
{
	uint64_t tat = 0, now = 0;
	int allowed = 0;

	/* 1000 units/s offered to a 100/s bucket for 10 s: about 100/s pass. */
	for (int i = 0; i < 10000; i++) {
		now += 1000;
		allowed += abuse_gcra(&tat, now, 1, 100, 10);
	}
	assert_in_range(allowed, 990, 1020);
}

static void test_gcra_costs_and_zero_rate(void **state)
{
	uint64_t tat = 0;

	/* Bytes: a cost larger than the burst never passes. */
	assert_false(abuse_gcra(&tat, 5, 70000, 65536, 65536));
	assert_true(abuse_gcra(&tat, 5, 65536, 65536, 65536));
	assert_false(abuse_gcra(&tat, 5, 1, 65536, 65536));
	/* rate 0: no limit. */
	for (int i = 0; i < 1000; i++)
		assert_true(abuse_gcra(&tat, 5, 1u << 30, 0, 1));
}

static void test_source_key_groups_ipv6_by_64(void **state)
{
	struct in6_addr a = v6("2001:db8:1:2:aaaa::1"), b = v6("2001:db8:1:2:bbbb::9");
	struct in6_addr c = v6("2001:db8:1:3::1"), x = v4("192.0.2.1"), y = v4("192.0.2.2");
	uint8_t ka[16], kb[16], kc[16], kx[16], ky[16];

	abuse_source_key(&a, ka);
	abuse_source_key(&b, kb);
	abuse_source_key(&c, kc);
	abuse_source_key(&x, kx);
	abuse_source_key(&y, ky);
	assert_memory_equal(ka, kb, 16);
	assert_memory_not_equal(ka, kc, 16);
	assert_memory_not_equal(kx, ky, 16);	/* IPv4: whole addresses */
}

static void test_user_keys_differ_and_are_never_zero(void **state)
{
	assert_int_not_equal(abuse_user_key("alice"), abuse_user_key("alicf"));
	assert_int_equal(abuse_user_key("alice"), abuse_user_key("alice"));
	assert_int_not_equal(abuse_user_key(""), 0);
}

static struct in6_addr hook_addr;
static unsigned hook_seconds, hook_calls;

static void hook(const struct in6_addr *addr, unsigned seconds)
{
	hook_addr = *addr;
	hook_seconds = seconds;
	hook_calls++;
}

static void test_ban_is_seen_and_feeds_the_hook(void **state)
{
	struct in6_addr a = v4("198.51.100.7"), b = v4("198.51.100.8");
	struct in6_addr p = v6("2001:db8::1"), q = v6("2001:db8::2");

	hook_calls = 0;
	auth_ban_set_hook(hook);
	assert_false(abuse_source_banned(&a));
	auth_ban_source(&a, 60);
	assert_true(abuse_source_banned(&a));
	assert_false(abuse_source_banned(&b));
	assert_int_equal(hook_calls, 1);
	assert_int_equal(hook_seconds, 60);
	assert_memory_equal(&hook_addr, &a, sizeof(a));
	/* An IPv6 ban covers the /64. */
	auth_ban_source(&p, 60);
	assert_true(abuse_source_banned(&q));
	auth_ban_set_hook(NULL);
	auth_ban_source(&b, 60);
	assert_int_equal(hook_calls, 2);
}

static void test_table_stays_bounded_under_many_sources(void **state)
{
	struct in6_addr first = v4("10.0.0.1");
	unsigned banned = 0;

	/* Far more banned sources than slots: no growth, no crash, and a
	 * banned source is either remembered or (table full) not tracked. */
	auth_ban_source(&first, 600);
	for (unsigned i = 0; i < 4 * ABUSE_SOURCES; i++) {
		struct in6_addr a = v4("10.0.0.0");

		a.s6_addr[13] = (uint8_t)(i >> 16);
		a.s6_addr[14] = (uint8_t)(i >> 8);
		a.s6_addr[15] = (uint8_t)i;
		auth_ban_source(&a, 600);
	}
	assert_true(abuse_source_banned(&first));
	for (unsigned i = 0; i < 4 * ABUSE_SOURCES; i++) {
		struct in6_addr a = v4("10.0.0.0");

		a.s6_addr[13] = (uint8_t)(i >> 16);
		a.s6_addr[14] = (uint8_t)(i >> 8);
		a.s6_addr[15] = (uint8_t)i;
		banned += abuse_source_banned(&a);
	}
	assert_true(banned <= ABUSE_SOURCES);
	assert_true(banned >= ABUSE_SOURCES / 2);
}

/* ---- Several workers at once ---- */

#define MT_THREADS	4
#define MT_CONNS	1000	/* connections per thread */
#define MT_SOURCES	4
#define MT_FAILURES	300	/* failed logins per thread */

/* A worker as abuse.c sees it: a server and its configuration. */
struct mt_env {
	struct config cfg;
	struct server srv;
	struct worker *w[MT_THREADS];
	struct conn *conns[MT_THREADS];	/* MT_CONNS each */
};

static struct mt_env *mt_env_new(void)
{
	struct mt_env *e = calloc(1, sizeof(*e));

	assert_non_null(e);
	e->srv.cfg = &e->cfg;
	e->cfg.auth_failure_window = 3600;
	e->cfg.auth_lockout_time = 600;
	for (unsigned t = 0; t < MT_THREADS; t++) {
		e->w[t] = calloc(1, sizeof(struct worker));
		e->conns[t] = calloc(MT_CONNS, sizeof(struct conn));
		assert_non_null(e->w[t]);
		assert_non_null(e->conns[t]);
		e->w[t]->srv = &e->srv;
		for (unsigned j = 0; j < MT_CONNS; j++) {
			struct conn *c = &e->conns[t][j];

			c->w = e->w[t];
			c->kind = CONN_C2S;
			c->id = (uint64_t)t << 32 | j;
			c->peer.sin6_family = AF_INET6;
		}
	}
	return e;
}

static void mt_env_free(struct mt_env *e)
{
	for (unsigned t = 0; t < MT_THREADS; t++) {
		free(e->conns[t]);
		free(e->w[t]);
	}
	free(e);
}

static struct in6_addr mt_source(unsigned s)
{
	struct in6_addr a = v4("10.1.0.0");

	a.s6_addr[15] = (uint8_t)(s + 1);
	return a;
}

struct mt_arg {
	struct mt_env *e;
	unsigned t;
	pthread_barrier_t *start;
};

/* Runs fn(arg) on MT_THREADS threads released together. */
static void mt_run(struct mt_env *e, void *(*fn)(void *))
{
	pthread_t th[MT_THREADS];
	struct mt_arg args[MT_THREADS];
	pthread_barrier_t start;

	assert_int_equal(pthread_barrier_init(&start, NULL, MT_THREADS), 0);
	for (unsigned t = 0; t < MT_THREADS; t++) {
		args[t] = (struct mt_arg){ .e = e, .t = t, .start = &start };
		assert_int_equal(pthread_create(&th[t], NULL, fn, &args[t]), 0);
	}
	for (unsigned t = 0; t < MT_THREADS; t++)
		assert_int_equal(pthread_join(th[t], NULL), 0);
	pthread_barrier_destroy(&start);
}

/* Connection j of every thread comes from source j % MT_SOURCES. */
static void *mt_open(void *p)
{
	struct mt_arg *a = p;

	pthread_barrier_wait(a->start);
	for (unsigned j = 0; j < MT_CONNS; j++) {
		struct conn *c = &a->e->conns[a->t][j];

		c->peer.sin6_addr = mt_source(j % MT_SOURCES);
		abuse_conn_opened(c);
		/* A third closes or authenticates at once (the others stay open). */
		if (j % 3 == 0)
			abuse_conn_done(c);
	}
	return NULL;
}

static void *mt_close(void *p)
{
	struct mt_arg *a = p;

	pthread_barrier_wait(a->start);
	for (unsigned j = 0; j < MT_CONNS; j++) {
		struct conn *c = &a->e->conns[a->t][j];

		if (j % 3 == 1)
			abuse_auth_succeeded(c);
		else
			abuse_conn_done(c);	/* idempotent for those done already */
	}
	return NULL;
}

static void test_preauth_counts_are_exact_across_threads(void **state)
{
	struct mt_env *e = mt_env_new();

	mt_run(e, mt_open);
	for (unsigned s = 0; s < MT_SOURCES; s++) {
		struct in6_addr a = mt_source(s);
		unsigned expect = 0;

		for (unsigned j = 0; j < MT_CONNS; j++)
			expect += j % MT_SOURCES == s && j % 3 != 0;
		assert_int_equal(abuse_source_preauth(&a), expect * MT_THREADS);
	}
	mt_run(e, mt_close);
	for (unsigned s = 0; s < MT_SOURCES; s++) {
		struct in6_addr a = mt_source(s);

		assert_int_equal(abuse_source_preauth(&a), 0);
	}
	for (unsigned t = 0; t < MT_THREADS; t++)
		for (unsigned j = 0; j < MT_CONNS; j++)
			assert_false(e->conns[t][j].abuse_counted);
	mt_env_free(e);
}

/*
 * Failed logins: every thread fails against one shared name and its own
 * name, all from one shared source (no limits: pure counting).
 */
static void *mt_fail(void *p)
{
	struct mt_arg *a = p;
	struct conn *c = &a->e->conns[a->t][0];
	char own[16];

	snprintf(own, sizeof(own), "user%u", a->t);
	c->peer.sin6_addr = v4("10.2.0.1");
	pthread_barrier_wait(a->start);
	for (unsigned i = 0; i < MT_FAILURES; i++) {
		abuse_auth_failed(c, "victim", "not-authorized");
		abuse_auth_failed(c, own, "not-authorized");
		abuse_auth_failed(c, "victim", "malformed-request");	/* not a guess */
	}
	return NULL;
}

static void test_failure_counts_are_exact_across_threads(void **state)
{
	struct mt_env *e = mt_env_new();
	struct in6_addr src = v4("10.2.0.1");

	mt_run(e, mt_fail);
	assert_int_equal(abuse_account_failures("victim"), MT_FAILURES * MT_THREADS);
	for (unsigned t = 0; t < MT_THREADS; t++) {
		char own[16];

		snprintf(own, sizeof(own), "user%u", t);
		assert_int_equal(abuse_account_failures(own), MT_FAILURES);
	}
	assert_false(abuse_source_banned(&src));
	mt_env_free(e);
}

static atomic_uint mt_hook_calls;

static void mt_hook(const struct in6_addr *addr, unsigned seconds)
{
	atomic_fetch_add(&mt_hook_calls, 1);
}

static void *mt_fail_shared(void *p)
{
	struct mt_arg *a = p;
	struct conn *c = &a->e->conns[a->t][0];

	c->peer.sin6_addr = v4("10.3.0.1");
	pthread_barrier_wait(a->start);
	for (unsigned i = 0; i < MT_FAILURES; i++)
		abuse_auth_failed(c, "victim", "not-authorized");
	return NULL;
}

/* The limit is crossed by one failure of one thread: one ban, one lockout. */
static void test_limits_trip_exactly_once_across_threads(void **state)
{
	struct mt_env *e = mt_env_new();
	struct in6_addr src = v4("10.3.0.1");

	/* 1200 failures in all: both limits are reached once, well before the end. */
	e->cfg.max_auth_failures_source = MT_FAILURES * MT_THREADS - 200;
	e->cfg.max_auth_failures_account = MT_FAILURES * MT_THREADS - 100;
	atomic_store(&mt_hook_calls, 0);
	auth_ban_set_hook(mt_hook);
	mt_run(e, mt_fail_shared);
	auth_ban_set_hook(NULL);
	assert_int_equal(atomic_load(&mt_hook_calls), 1);
	assert_true(abuse_source_banned(&src));
	/* Locked at exactly the limit: failures while locked are not counted. */
	assert_int_equal(abuse_account_failures("victim"), 0);
	e->conns[0][0].peer.sin6_addr = v4("10.3.0.2");	/* not banned: the name decides */
	assert_true(abuse_auth_begin(&e->conns[0][0], "victim"));
	mt_env_free(e);
}

/* Must run first: the first key the process hashes (see abuse_seeds). */
static void test_first_key_hashed_is_stable(void **state)
{
	uint64_t k = abuse_user_key("first");

	assert_int_equal(k, abuse_user_key("first"));
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_first_key_hashed_is_stable, reset),
		cmocka_unit_test_setup(test_gcra_allows_the_burst_then_the_rate, reset),
		cmocka_unit_test_setup(test_gcra_sustained_rate_is_kept, reset),
		cmocka_unit_test_setup(test_gcra_costs_and_zero_rate, reset),
		cmocka_unit_test_setup(test_source_key_groups_ipv6_by_64, reset),
		cmocka_unit_test_setup(test_user_keys_differ_and_are_never_zero, reset),
		cmocka_unit_test_setup(test_ban_is_seen_and_feeds_the_hook, reset),
		cmocka_unit_test_setup(test_table_stays_bounded_under_many_sources, reset),
		cmocka_unit_test_setup(test_preauth_counts_are_exact_across_threads, reset),
		cmocka_unit_test_setup(test_failure_counts_are_exact_across_threads, reset),
		cmocka_unit_test_setup(test_limits_trip_exactly_once_across_threads, reset),
	};

	log_threshold = LOG_LVL_ERROR;	/* thousands of bans: keep the output readable */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
