/* SPDX-License-Identifier: MIT */
/*
 * Stream management (XEP-0198): the 'h' arithmetic with 32-bit wraparound,
 * parsing of 'h', the unacked queue (records, trimming, chunk reuse) and
 * resumption ids.
 */
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "conn.h"
#include "sm.h"
#include "worker.h"

/* Only the chunk pool of the worker is used by the queue. */
static struct worker *new_worker(void)
{
	return calloc(1, sizeof(struct worker));
}

static void free_worker(struct worker *w)
{
	while (w->chunk_free) {
		struct out_chunk *ch = w->chunk_free;

		w->chunk_free = ch->next;
		free(ch);
	}
	free(w);
}

/* Pushes "stanza-<seq>" records seq = first .. first+n-1. */
static void push_seq(struct sm_queue *q, struct worker *w, uint32_t first, uint32_t n)
{
	char buf[64];

	for (uint32_t i = 0; i < n; i++) {
		int len = snprintf(buf, sizeof(buf), "<message id='%u'/>", first + i);

		assert_int_equal(sm_queue_push(q, w, buf, (size_t)len, first + i), 0);
	}
}

/* The id of the oldest record, or -1 when the queue is empty. */
static long head_seq(const struct sm_queue *q)
{
	uint32_t stamp;
	size_t len;
	const char *d = sm_queue_peek(q, &len, &stamp);
	char text[64];
	unsigned long v;

	if (!d)
		return -1;
	/* Records are not NUL-terminated. */
	assert_true(len < sizeof(text));
	memcpy(text, d, len);
	text[len] = '\0';
	assert_int_equal(sscanf(text, "<message id='%lu'/>", &v), 1);
	assert_int_equal(v, stamp);	/* the stamp travels with its record */
	return (long)v;
}

static void test_ack_delta_counts_new_acks(void **state)
{
	assert_int_equal(sm_ack_delta(0, 0, 0), 0);
	assert_int_equal(sm_ack_delta(0, 5, 3), 3);
	assert_int_equal(sm_ack_delta(3, 5, 3), 0);	/* a repeated ack */
	assert_int_equal(sm_ack_delta(3, 5, 5), 2);
}

static void test_ack_delta_rejects_too_high(void **state)
{
	assert_int_equal(sm_ack_delta(0, 0, 1), -1);
	assert_int_equal(sm_ack_delta(0, 5, 6), -1);
	assert_int_equal(sm_ack_delta(2, 5, UINT32_MAX), -1);
	/* Going back behind an earlier ack looks the same modulo 2^32. */
	assert_int_equal(sm_ack_delta(3, 5, 2), -1);
}

static void test_ack_delta_wraps_at_2_pow_32(void **state)
{
	/* Sent 0xfffffffe, 0xffffffff, 0, 1, 2 after an ack of 0xfffffffd. */
	uint32_t acked = 0xfffffffdu, sent = 2;

	assert_int_equal(sm_ack_delta(acked, sent, 0xfffffffeu), 1);
	assert_int_equal(sm_ack_delta(acked, sent, 0xffffffffu), 2);
	assert_int_equal(sm_ack_delta(acked, sent, 0), 3);	/* 2^32-1 wraps to 0 */
	assert_int_equal(sm_ack_delta(acked, sent, 2), 5);
	assert_int_equal(sm_ack_delta(acked, sent, 3), -1);
	assert_int_equal(sm_ack_delta(acked, sent, 0xfffffffcu), -1);
	/* Nothing outstanding at the wrap point. */
	assert_int_equal(sm_ack_delta(UINT32_MAX, UINT32_MAX, 0), -1);
	assert_int_equal(sm_ack_delta(UINT32_MAX, 0, 0), 1);
}

static void test_parse_h_accepts_unsigned_int(void **state)
{
	uint32_t h = 7;

	assert_int_equal(sm_parse_h("0", &h), 0);
	assert_int_equal(h, 0);
	assert_int_equal(sm_parse_h("4294967295", &h), 0);
	assert_int_equal(h, UINT32_MAX);
	assert_int_equal(sm_parse_h("+12", &h), 0);
	assert_int_equal(h, 12);
	assert_int_equal(sm_parse_h("007", &h), 0);
	assert_int_equal(h, 7);
}

static void test_parse_h_rejects_garbage(void **state)
{
	static const char *const bad[] = {
		"", "+", "-1", "-0", "1x", " 1", "1 ", "0x10", "4294967296",
		"99999999999999999999999", "1.0", "１",
	};
	uint32_t h = 42;

	assert_int_equal(sm_parse_h(NULL, &h), -EINVAL);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(sm_parse_h(bad[i], &h), -EINVAL);
	assert_int_equal(h, 42);	/* untouched on error */
}

static void test_queue_keeps_order_and_trims_by_ack(void **state)
{
	struct worker *w = new_worker();
	struct sm_queue q = { 0 };
	uint32_t acked = 0, sent = 0;

	push_seq(&q, w, 1, 10);
	sent = 10;
	assert_int_equal(q.count, 10);
	assert_int_equal(head_seq(&q), 1);

	/* <a h='4'/>: stanzas 1..4 are gone, 5 is the oldest unacked. */
	int64_t n = sm_ack_delta(acked, sent, 4);

	assert_int_equal(n, 4);
	sm_queue_drop(&q, w, (uint32_t)n);
	acked = 4;
	assert_int_equal(q.count, 6);
	assert_int_equal(head_seq(&q), 5);

	/* A repeated ack trims nothing. */
	sm_queue_drop(&q, w, (uint32_t)sm_ack_delta(acked, sent, 4));
	assert_int_equal(head_seq(&q), 5);

	/* Everything acknowledged: the queue holds no memory. */
	sm_queue_drop(&q, w, (uint32_t)sm_ack_delta(acked, sent, 10));
	assert_int_equal(q.count, 0);
	assert_int_equal(q.bytes, 0);
	assert_null(q.head);
	assert_null(q.tail);
	assert_int_equal(head_seq(&q), -1);
	assert_true(w->chunk_free_count >= 1);	/* the chunk went back to the pool */
	free_worker(w);
}

static void test_queue_trims_across_the_wrap(void **state)
{
	struct worker *w = new_worker();
	struct sm_queue q = { 0 };
	uint32_t acked = 0xfffffff0u, sent = acked;

	/* 40 stanzas numbered from 0xfffffff1 through the wrap to 0x18. */
	for (int i = 0; i < 40; i++) {
		sent++;
		push_seq(&q, w, sent, 1);
	}
	assert_int_equal(sent, 0x18);
	assert_int_equal(q.count, 40);

	int64_t n = sm_ack_delta(acked, sent, 2);	/* h wrapped: 0xfffffff1..2 */

	assert_int_equal(n, 18);
	sm_queue_drop(&q, w, (uint32_t)n);
	acked = 2;
	assert_int_equal(head_seq(&q), 3);
	assert_int_equal(sm_ack_delta(acked, sent, 0x19), -1);
	sm_queue_drop(&q, w, (uint32_t)sm_ack_delta(acked, sent, sent));
	assert_int_equal(q.count, 0);
	assert_null(q.head);
	free_worker(w);
}

static void count_records(void *arg, const char *data, size_t len, uint32_t stamp)
{
	uint32_t *expect = arg;
	char buf[64];
	int n = snprintf(buf, sizeof(buf), "<message id='%u'/>", *expect);

	assert_int_equal(len, (size_t)n);
	assert_memory_equal(data, buf, len);
	assert_int_equal(stamp, *expect);
	(*expect)++;
}

static void test_queue_spans_many_chunks_without_splitting_records(void **state)
{
	struct worker *w = new_worker();
	struct sm_queue q = { 0 };
	uint32_t next = 1;
	int chunks = 0;

	push_seq(&q, w, 1, 2000);
	for (struct out_chunk *ch = q.head; ch; ch = ch->next)
		chunks++;
	assert_true(chunks > 1);
	sm_queue_each(&q, count_records, &next);
	assert_int_equal(next, 2001);

	/* Trim part of the first chunk, then across chunk boundaries. */
	sm_queue_drop(&q, w, 3);
	assert_int_equal(head_seq(&q), 4);
	sm_queue_drop(&q, w, 1500);
	assert_int_equal(head_seq(&q), 1504);
	next = 1504;
	sm_queue_each(&q, count_records, &next);
	assert_int_equal(next, 2001);
	sm_queue_clear(&q, w);
	assert_int_equal(q.count, 0);
	assert_null(q.head);
	free_worker(w);
}

static void test_queue_big_stanza_gets_its_own_chunk(void **state)
{
	struct worker *w = new_worker();
	struct sm_queue q = { 0 };
	size_t big = 3 * CONN_CHUNK_SIZE;
	char *data = malloc(big);
	uint32_t stamp;
	size_t len;

	assert_non_null(data);
	memset(data, 'x', big);
	push_seq(&q, w, 1, 1);
	assert_int_equal(sm_queue_push(&q, w, data, big, 99), 0);
	push_seq(&q, w, 3, 1);
	assert_int_equal(q.count, 3);
	assert_int_equal(q.bytes, big + 2 * strlen("<message id='1'/>"));
	sm_queue_drop(&q, w, 1);
	const char *d = sm_queue_peek(&q, &len, &stamp);

	assert_int_equal(len, big);
	assert_int_equal(stamp, 99);
	assert_memory_equal(d, data, big);
	sm_queue_drop(&q, w, 1);
	assert_int_equal(head_seq(&q), 3);
	sm_queue_drop(&q, w, 5);	/* more than queued: stops when empty */
	assert_int_equal(q.count, 0);
	assert_null(q.head);
	free(data);
	free_worker(w);
}

static void test_queue_empty_peek_and_drop_are_safe(void **state)
{
	struct worker *w = new_worker();
	struct sm_queue q = { 0 };
	uint32_t stamp;
	size_t len;

	assert_null(sm_queue_peek(&q, &len, &stamp));
	sm_queue_drop(&q, w, 3);
	sm_queue_clear(&q, w);
	assert_int_equal(q.count, 0);
	/* Zero-length records are records too. */
	assert_int_equal(sm_queue_push(&q, w, "", 0, 1), 0);
	assert_non_null(sm_queue_peek(&q, &len, &stamp));
	assert_int_equal(len, 0);
	sm_queue_drop(&q, w, 1);
	assert_null(q.head);
	free_worker(w);
}

static void test_ids_are_random_base64url(void **state)
{
	char a[SM_ID_LEN + 1], b[SM_ID_LEN + 1];

	assert_true(SM_ID_BYTES * 8 >= 128);
	assert_int_equal(sm_new_id(a), 0);
	assert_int_equal(sm_new_id(b), 0);
	assert_int_equal(strlen(a), SM_ID_LEN);
	assert_int_equal(strspn(a, "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz"
				   "0123456789-_"), SM_ID_LEN);
	assert_string_not_equal(a, b);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_ack_delta_counts_new_acks),
		cmocka_unit_test(test_ack_delta_rejects_too_high),
		cmocka_unit_test(test_ack_delta_wraps_at_2_pow_32),
		cmocka_unit_test(test_parse_h_accepts_unsigned_int),
		cmocka_unit_test(test_parse_h_rejects_garbage),
		cmocka_unit_test(test_queue_keeps_order_and_trims_by_ack),
		cmocka_unit_test(test_queue_trims_across_the_wrap),
		cmocka_unit_test(test_queue_spans_many_chunks_without_splitting_records),
		cmocka_unit_test(test_queue_big_stanza_gets_its_own_chunk),
		cmocka_unit_test(test_queue_empty_peek_and_drop_are_safe),
		cmocka_unit_test(test_ids_are_random_base64url),
	};

	return cmocka_run_group_tests_name("sm", tests, NULL, NULL);
}
