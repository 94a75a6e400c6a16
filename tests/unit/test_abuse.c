/* SPDX-License-Identifier: MIT */
/* Unit tests for abuse.c: the token bucket, source keys, bans and the bounded tables. */
#include <arpa/inet.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <string.h>

#include <cmocka.h>

#include "abuse.h"
#include "log.h"

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

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_setup(test_gcra_allows_the_burst_then_the_rate, reset),
		cmocka_unit_test_setup(test_gcra_sustained_rate_is_kept, reset),
		cmocka_unit_test_setup(test_gcra_costs_and_zero_rate, reset),
		cmocka_unit_test_setup(test_source_key_groups_ipv6_by_64, reset),
		cmocka_unit_test_setup(test_user_keys_differ_and_are_never_zero, reset),
		cmocka_unit_test_setup(test_ban_is_seen_and_feeds_the_hook, reset),
		cmocka_unit_test_setup(test_table_stays_bounded_under_many_sources, reset),
	};

	log_threshold = LOG_LVL_ERROR;	/* thousands of bans: keep the output readable */
	return cmocka_run_group_tests(tests, NULL, NULL);
}
