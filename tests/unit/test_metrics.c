/* SPDX-License-Identifier: MIT */
/*
 * Metrics: histogram buckets (edges, +Inf, merge), the CIDR access list
 * of /metrics (parsing, hostile inputs, matching, the loopback default),
 * label mapping of mechanisms and stream errors, and the exposition of a
 * server's summed workers (HELP/TYPE before every family, cumulative
 * buckets ending in +Inf = _count).
 */
#include <arpa/inet.h>
#include <errno.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>

#include "config.h"
#include "conn.h"
#include "metrics.h"
#include "server.h"
#include "strbuf.h"
#include "worker.h"

static void test_value_on_a_bound_goes_in_that_bucket(void **state)
{
	struct metrics_hist h = { 0 };
	const struct metrics_bounds *b = &metrics_fanout_bounds;	/* 1, 2, 5, 10, ... */

	metrics_hist_observe(&h, b, 0);		/* <= 1 */
	metrics_hist_observe(&h, b, 1);		/* <= 1 */
	metrics_hist_observe(&h, b, 2);		/* <= 2 */
	metrics_hist_observe(&h, b, 3);		/* <= 5 */
	metrics_hist_observe(&h, b, 10000);	/* the last finite bound */
	metrics_hist_observe(&h, b, 10001);	/* +Inf */
	assert_int_equal(h.bucket[0], 2);
	assert_int_equal(h.bucket[1], 1);
	assert_int_equal(h.bucket[2], 1);
	assert_int_equal(h.bucket[b->n - 1], 1);
	assert_int_equal(h.bucket[b->n], 1);
	assert_int_equal(h.count, 6);
	assert_int_equal(h.sum, 0 + 1 + 2 + 3 + 10000 + 10001);
}

static void test_huge_values_land_in_inf(void **state)
{
	struct metrics_hist h = { 0 };

	metrics_hist_observe(&h, &metrics_route_bounds, UINT64_MAX / 2);
	assert_int_equal(h.bucket[metrics_route_bounds.n], 1);
	for (unsigned i = 0; i < metrics_route_bounds.n; i++)
		assert_int_equal(h.bucket[i], 0);
}

static void test_bounds_increase(void **state)
{
	const struct metrics_bounds *all[] = { &metrics_route_bounds, &metrics_storage_bounds,
					       &metrics_fanout_bounds };

	for (size_t k = 0; k < 3; k++) {
		assert_true(all[k]->n > 0 && all[k]->n <= METRICS_HIST_MAX);
		for (unsigned i = 1; i < all[k]->n; i++)
			assert_true(all[k]->le[i] > all[k]->le[i - 1]);
	}
}

static void test_merge_adds_everything(void **state)
{
	struct metrics_hist a = { 0 }, b = { 0 }, sum = { 0 };

	metrics_hist_observe(&a, &metrics_storage_bounds, 50000);
	metrics_hist_observe(&b, &metrics_storage_bounds, 50000);
	metrics_hist_observe(&b, &metrics_storage_bounds, 5000000000ull);
	metrics_hist_merge(&sum, &a);
	metrics_hist_merge(&sum, &b);
	assert_int_equal(sum.count, 3);
	assert_int_equal(sum.bucket[0], 2);
	assert_int_equal(sum.bucket[metrics_storage_bounds.n], 1);
	assert_int_equal(sum.sum, 5000100000ull);
}

static void test_cidr_parses_v4_v6_and_plain_addresses(void **state)
{
	uint8_t a[16];
	unsigned p;

	assert_int_equal(metrics_cidr_parse("10.0.0.0/8", a, &p), 0);
	assert_int_equal(p, 96 + 8);
	assert_int_equal(a[10], 0xff);
	assert_int_equal(a[12], 10);
	assert_int_equal(metrics_cidr_parse("192.0.2.7", a, &p), 0);
	assert_int_equal(p, 128);
	assert_int_equal(metrics_cidr_parse("fd00::/8", a, &p), 0);
	assert_int_equal(p, 8);
	assert_int_equal(a[0], 0xfd);
	assert_int_equal(metrics_cidr_parse("::1", a, &p), 0);
	assert_int_equal(p, 128);
	assert_int_equal(metrics_cidr_parse("0.0.0.0/0", a, &p), 0);
	assert_int_equal(p, 96);
}

static void test_cidr_refuses_garbage(void **state)
{
	static const char *const bad[] = {
		"", "/8", "10.0.0.0/", "10.0.0.0/33", "::1/129", "10.0.0.0/-1", "10.0.0.0/+8",
		"10.0.0.0/8x", "10.0.0", "300.0.0.1", "example.org", "10.0.0.0//8", "1.2.3.4 ",
		"fe80::1%eth0", "::1/08x",
		"aaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaaa",
	};
	uint8_t a[16];
	unsigned p;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++)
		assert_int_equal(metrics_cidr_parse(bad[i], a, &p), -EINVAL);
}

static void test_cidr_match_respects_partial_bytes(void **state)
{
	uint8_t net[16], a[16];
	unsigned p;

	assert_int_equal(metrics_cidr_parse("192.168.16.0/20", net, &p), 0);
	assert_int_equal(metrics_cidr_parse("192.168.31.255", a, &p), 0);
	assert_true(metrics_cidr_match(a, net, 96 + 20));
	assert_int_equal(metrics_cidr_parse("192.168.32.0", a, &p), 0);
	assert_false(metrics_cidr_match(a, net, 96 + 20));
	assert_false(metrics_cidr_match(a, net, 129));
	/* /0 matches everything, v4 (mapped) and v6. */
	assert_int_equal(metrics_cidr_parse("::/0", net, &p), 0);
	assert_true(metrics_cidr_match(a, net, p));
}

static struct sockaddr_in6 peer(const char *addr)
{
	struct sockaddr_in6 s = { .sin6_family = AF_INET6 };
	struct in_addr a4;

	if (inet_pton(AF_INET, addr, &a4) == 1) {
		s.sin6_addr.s6_addr[10] = s.sin6_addr.s6_addr[11] = 0xff;
		memcpy(&s.sin6_addr.s6_addr[12], &a4, 4);
	} else {
		assert_int_equal(inet_pton(AF_INET6, addr, &s.sin6_addr), 1);
	}
	return s;
}

static void test_default_allows_loopback_only(void **state)
{
	struct config cfg;
	struct sockaddr_in6 p;

	memset(&cfg, 0, sizeof(cfg));
	p = peer("127.0.0.1");
	assert_true(metrics_peer_allowed(&cfg, &p));
	p = peer("127.200.1.2");
	assert_true(metrics_peer_allowed(&cfg, &p));
	p = peer("::1");
	assert_true(metrics_peer_allowed(&cfg, &p));
	p = peer("10.1.2.3");
	assert_false(metrics_peer_allowed(&cfg, &p));
	p = peer("::2");
	assert_false(metrics_peer_allowed(&cfg, &p));
	p = peer("::ffff:10.0.0.1");
	assert_false(metrics_peer_allowed(&cfg, &p));
}

static void test_allow_list_replaces_the_default(void **state)
{
	char v4[] = "10.0.0.0/8", v6[] = "fd00::/8";
	struct config cfg;
	struct sockaddr_in6 p;

	memset(&cfg, 0, sizeof(cfg));
	cfg.metrics_allow.v[0] = v4;
	cfg.metrics_allow.v[1] = v6;
	cfg.metrics_allow.n = 2;
	cfg.metrics_allow.set = true;
	p = peer("10.9.8.7");
	assert_true(metrics_peer_allowed(&cfg, &p));
	p = peer("fd12::1");
	assert_true(metrics_peer_allowed(&cfg, &p));
	p = peer("127.0.0.1");
	assert_false(metrics_peer_allowed(&cfg, &p));
	/* metrics_allow = off: a set list with no entries lets nobody in. */
	cfg.metrics_allow.n = 0;
	p = peer("10.9.8.7");
	assert_false(metrics_peer_allowed(&cfg, &p));
	assert_int_equal(metrics_config_check(&cfg), 0);
}

static void test_config_check_names_the_bad_entry(void **state)
{
	char good[] = "10.0.0.0/8", bad[] = "10.0.0.0/40";
	struct config cfg;

	memset(&cfg, 0, sizeof(cfg));
	cfg.metrics_allow.v[0] = good;
	cfg.metrics_allow.v[1] = bad;
	cfg.metrics_allow.n = 2;
	cfg.metrics_allow.set = true;
	assert_int_equal(metrics_config_check(&cfg), -EINVAL);
}

static void test_labels_map_known_and_unknown_values(void **state)
{
	struct metrics_worker m;

	memset(&m, 0, sizeof(m));
	metrics_auth(&m, "SCRAM-SHA-256", true);
	metrics_auth(&m, "SCRAM-SHA-256-PLUS", false);
	metrics_auth(&m, "X-EVIL\"}", false);	/* another mechanism: "other" */
	metrics_auth(&m, NULL, false);		/* no mechanism: "none" */
	metrics_auth(&m, "-", false);
	assert_int_equal(m.auth_ok[4], 1);
	assert_int_equal(m.auth_fail[5], 1);
	assert_int_equal(m.auth_fail[METRICS_MECHS - 1], 1);
	assert_int_equal(m.auth_fail[0], 2);
	metrics_stream_error(&m, "not-well-formed");
	metrics_stream_error(&m, "made-up-condition");
	assert_int_equal(m.stream_errors[12], 1);
	assert_int_equal(m.stream_errors[METRICS_STREAM_ERRORS - 1], 1);
}

static void test_stanza_out_counts_by_first_element(void **state)
{
	struct metrics_worker m;

	memset(&m, 0, sizeof(m));
	metrics_stanza_out(&m, "<message to='a'/>", 17);
	metrics_stanza_out(&m, "<presence/>", 11);
	metrics_stanza_out(&m, "<iq type='get'/>", 16);
	metrics_stanza_out(&m, "<r xmlns='urn:xmpp:sm:3'/>", 26);	/* not a stanza */
	metrics_stanza_out(&m, "<m", 2);				/* too short */
	assert_int_equal(m.stanzas_out[0], 1);
	assert_int_equal(m.stanzas_out[1], 1);
	assert_int_equal(m.stanzas_out[2], 1);
}

/* Checks the exposition line by line: HELP, then TYPE, then samples of that family. */
static void check_exposition(const char *text)
{
	char family[128] = "";
	const char *line = text;
	unsigned families = 0;
	bool typed = false;

	assert_true(strlen(text) > 0 && text[strlen(text) - 1] == '\n');
	while (*line) {
		const char *end = strchr(line, '\n');
		char buf[512];
		size_t n = (size_t)(end - line);

		assert_non_null(end);
		assert_true(n < sizeof(buf));
		memcpy(buf, line, n);
		buf[n] = '\0';
		if (strncmp(buf, "# HELP ", 7) == 0) {
			assert_true(sscanf(buf + 7, "%127s", family) == 1);
			assert_true(strncmp(family, "stanzad_", 8) == 0);
			typed = false;
			families++;
		} else if (strncmp(buf, "# TYPE ", 7) == 0) {
			char name[128], type[32];

			assert_true(sscanf(buf + 7, "%127s %31s", name, type) == 2);
			assert_string_equal(name, family);
			if (strcmp(type, "counter") == 0)
				assert_non_null(strstr(name, "_total"));
			typed = true;
		} else {
			assert_true(typed);
			assert_true(strncmp(buf, family, strlen(family)) == 0);
		}
		line = end + 1;
	}
	assert_true(families >= 20);
}

static void test_render_sums_workers_and_is_well_formed(void **state)
{
	struct worker *w = calloc(2, sizeof(*w));
	struct config cfg;
	struct server srv;
	struct strbuf out = STRBUF_INIT;

	assert_non_null(w);
	memset(&cfg, 0, sizeof(cfg));
	memset(&srv, 0, sizeof(srv));
	cfg.domain = "example.org";
	srv.cfg = &cfg;
	srv.workers = w;
	srv.nworkers = 2;
	w[1].id = 1;
	w[0].metrics.stanzas_in[0] = 3;
	w[1].metrics.stanzas_in[0] = 4;
	w[0].metrics.conns[0] = 2;
	w[1].metrics.conns[0] = 5;
	metrics_hist_observe(&w[0].metrics.route_latency, &metrics_route_bounds, 4000);
	metrics_hist_observe(&w[1].metrics.route_latency, &metrics_route_bounds, 7000);
	metrics_hist_observe(&w[1].metrics.route_latency, &metrics_route_bounds, 1u << 30);
	metrics_render(&srv, &out);
	assert_false(out.oom);
	check_exposition(out.data);
	assert_non_null(strstr(out.data, "stanzad_stanzas_received_total{kind=\"message\"} 7\n"));
	assert_non_null(strstr(out.data,
			       "stanzad_connections{transport=\"c2s\",state=\"negotiating\",tls=\"none\"} 7\n"));
	assert_non_null(strstr(out.data, "stanzad_worker_connections{worker=\"0\"} 2\n"));
	assert_non_null(strstr(out.data, "stanzad_worker_connections{worker=\"1\"} 5\n"));
	/* Cumulative: 4 us <= 5 us; 7 us <= 10 us; 1.07 s only in +Inf. */
	assert_non_null(strstr(out.data, "stanzad_routing_latency_seconds_bucket{le=\"0.000005\"} 1\n"));
	assert_non_null(strstr(out.data, "stanzad_routing_latency_seconds_bucket{le=\"0.00001\"} 2\n"));
	assert_non_null(strstr(out.data, "stanzad_routing_latency_seconds_bucket{le=\"0.1\"} 2\n"));
	assert_non_null(strstr(out.data, "stanzad_routing_latency_seconds_bucket{le=\"+Inf\"} 3\n"));
	assert_non_null(strstr(out.data, "stanzad_routing_latency_seconds_count 3\n"));
	assert_non_null(strstr(out.data, "stanzad_routing_latency_seconds_sum 1.073752824\n"));
	strbuf_free(&out);
	free(w);
}

static uint64_t conns_of(const struct worker *w)
{
	uint64_t n = 0;

	for (unsigned k = 0; k < METRICS_CONN_CLASSES; k++)
		n += METRIC_READ(w->metrics.conns[k]);
	return n;
}

static uint64_t accepted_of(const struct worker *w)
{
	uint64_t n = 0;

	for (unsigned k = 0; k < METRICS_TR_COUNT; k++)
		n += METRIC_READ(w->metrics.accepted[k]);
	return n;
}

/* Authenticated on worker 1, handed over to worker 0: counted once, where it is. */
static void test_conn_moves_between_workers(void **state)
{
	struct worker *w0 = calloc(1, sizeof(*w0)), *w1 = calloc(1, sizeof(*w1));
	struct conn *c = calloc(1, sizeof(*c));

	assert_true(w0 && w1 && c);
	c->kind = CONN_C2S;
	c->w = w1;
	metrics_conn_sync(c, false);
	assert_int_equal(conns_of(w1), 1);
	assert_int_equal(accepted_of(w1), 1);
	metrics_conn_leave(c);		/* on worker 1's thread */
	c->w = w0;
	metrics_conn_join(c);		/* on worker 0's thread */
	metrics_conn_sync(c, false);	/* same class: nothing moves */
	assert_int_equal(conns_of(w1), 0);
	assert_int_equal(conns_of(w0), 1);
	assert_int_equal(accepted_of(w0), 0);
	metrics_conn_sync(c, true);
	assert_int_equal(conns_of(w0), 0);
	free(c);
	free(w1);
	free(w0);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_conn_moves_between_workers),
		cmocka_unit_test(test_value_on_a_bound_goes_in_that_bucket),
		cmocka_unit_test(test_huge_values_land_in_inf),
		cmocka_unit_test(test_bounds_increase),
		cmocka_unit_test(test_merge_adds_everything),
		cmocka_unit_test(test_cidr_parses_v4_v6_and_plain_addresses),
		cmocka_unit_test(test_cidr_refuses_garbage),
		cmocka_unit_test(test_cidr_match_respects_partial_bytes),
		cmocka_unit_test(test_default_allows_loopback_only),
		cmocka_unit_test(test_allow_list_replaces_the_default),
		cmocka_unit_test(test_config_check_names_the_bad_entry),
		cmocka_unit_test(test_labels_map_known_and_unknown_values),
		cmocka_unit_test(test_stanza_out_counts_by_first_element),
		cmocka_unit_test(test_render_sums_workers_and_is_well_formed),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
