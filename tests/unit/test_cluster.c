/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for daemon/cluster_util.c: the Redis URI (with the password
 * masked wherever it is shown), node names, the registry's value text and
 * the session table behind the replica of the other nodes' sessions.
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

#include "cluster_util.h"

/* ---- URI ---- */

static void test_uri_plain_host_and_port(void **state)
{
	struct cluster_uri u;
	char buf[CLUSTER_URI_MAX];

	assert_int_equal(cluster_uri_parse(&u, "redis://127.0.0.1:6379"), 0);
	assert_string_equal(u.host, "127.0.0.1");
	assert_int_equal(u.port, 6379);
	assert_int_equal(u.db, 0);
	assert_string_equal(u.password, "");
	assert_string_equal(cluster_uri_masked(&u, buf, sizeof(buf)), "redis://127.0.0.1:6379");
}

static void test_uri_password_and_db_are_masked(void **state)
{
	struct cluster_uri u;
	char buf[CLUSTER_URI_MAX];

	/* The password may hold '@' and ':': the authority ends at the last '@'. */
	assert_int_equal(cluster_uri_parse(&u, "redis://:p@ss:w0rd@redis.example:7000/3"), 0);
	assert_string_equal(u.password, "p@ss:w0rd");
	assert_string_equal(u.host, "redis.example");
	assert_int_equal(u.port, 7000);
	assert_int_equal(u.db, 3);
	cluster_uri_masked(&u, buf, sizeof(buf));
	assert_string_equal(buf, "redis://:***@redis.example:7000/3");
	assert_null(strstr(buf, "w0rd"));
	cluster_uri_wipe(&u);
	for (size_t i = 0; i < sizeof(u.password); i++)
		assert_int_equal(u.password[i], 0);
}

static void test_uri_ipv6(void **state)
{
	struct cluster_uri u;
	char buf[CLUSTER_URI_MAX];

	assert_int_equal(cluster_uri_parse(&u, "redis://[::1]:6380"), 0);
	assert_string_equal(u.host, "::1");
	assert_int_equal(u.port, 6380);
	assert_string_equal(cluster_uri_masked(&u, buf, sizeof(buf)), "redis://[::1]:6380");
}

static void test_uri_bad_forms_are_refused(void **state)
{
	static const char *const bad[] = {
		"", "redis://", "http://h:1", "redis://host", "redis://host:", "redis://host:0",
		"redis://host:65536", "redis://host:12x", "redis://:6379", "redis://user:pw@h:1",
		"redis://:@h:1", "redis://h:1/16", "redis://h:1/", "redis://h:1/x",
		"redis://[::1:1",
		"redis://::1:6379", "redis://h o:1", "rediss://h:1", "redis://h:99999999999",
	};
	struct cluster_uri u;

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (cluster_uri_parse(&u, bad[i]) != -EINVAL) {
			print_error("accepted: \"%s\"\n", bad[i]);
			fail();
		}
		/* Nothing of a refused URI (a password) is left behind. */
		assert_string_equal(u.password, "");
	}
	assert_int_equal(cluster_uri_parse(&u, NULL), -EINVAL);
}

static void test_uri_overlong_parts_are_refused(void **state)
{
	char text[1024];
	struct cluster_uri u;

	snprintf(text, sizeof(text), "redis://:%0300d@h:1", 7);
	assert_int_equal(cluster_uri_parse(&u, text), -EINVAL);
	snprintf(text, sizeof(text), "redis://%0300d:1", 7);
	assert_int_equal(cluster_uri_parse(&u, text), -EINVAL);
}

/* ---- Node names ---- */

static void test_node_names(void **state)
{
	char max[CLUSTER_NODE_NAME_MAX + 2];

	assert_true(cluster_node_name_valid("n1"));
	assert_true(cluster_node_name_valid("edge-02.eu_west"));
	assert_false(cluster_node_name_valid(""));
	assert_false(cluster_node_name_valid("a b"));
	assert_false(cluster_node_name_valid("a/b"));
	assert_false(cluster_node_name_valid("a:b"));
	assert_false(cluster_node_name_valid("n\xc3\xa9"));
	memset(max, 'x', CLUSTER_NODE_NAME_MAX);
	max[CLUSTER_NODE_NAME_MAX] = '\0';
	assert_true(cluster_node_name_valid(max));
	max[CLUSTER_NODE_NAME_MAX] = 'x';
	max[CLUSTER_NODE_NAME_MAX + 1] = '\0';
	assert_false(cluster_node_name_valid(max));
}

/* ---- Registry values ---- */

static void test_sess_round_trip(void **state)
{
	struct cluster_sess v = { .node = "n2", .worker = 3, .priority = -5, .available = true,
				  .flags = CLUSTER_SESS_CARBONS | CLUSTER_SESS_ROSTER }, w;
	char buf[CLUSTER_SESS_TEXT_MAX];
	int n = cluster_sess_encode(&v, buf, sizeof(buf));

	assert_int_equal(n, (int)strlen("n2 3 -5 1 3"));
	assert_string_equal(buf, "n2 3 -5 1 3");
	assert_int_equal(cluster_sess_decode(&w, buf, (size_t)n), 0);
	assert_string_equal(w.node, "n2");
	assert_int_equal(w.worker, 3);
	assert_int_equal(w.priority, -5);
	assert_true(w.available);
	assert_int_equal(w.flags, CLUSTER_SESS_CARBONS | CLUSTER_SESS_ROSTER);
	/* Not NUL-terminated input: only len bytes count. */
	assert_int_equal(cluster_sess_decode(&w, "n3 0 127 0 0garbage", 12), 0);
	assert_string_equal(w.node, "n3");
	assert_int_equal(w.priority, 127);
	assert_false(w.available);
}

static void test_sess_bad_values_are_refused(void **state)
{
	static const char *const bad[] = {
		"", "n1", "n1 0 0", "n1 0 0 1", "n1 0 0 2 0", "n1 0 128 1 0", "n1 0 -129 1 0",
		"n1 x 0 1 0", "n1 0 0 1 0 extra", "bad/name 0 0 1 0", "n1 0 0 1 0x",
		"n1 99999 0 1 0", "n1 0 0 1 256", "n1 0 0 1 -1",
	};
	struct cluster_sess v = { .node = "bad name" };
	char buf[CLUSTER_SESS_TEXT_MAX], big[200];

	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		if (cluster_sess_decode(&v, bad[i], strlen(bad[i])) != -EINVAL) {
			print_error("accepted: \"%s\"\n", bad[i]);
			fail();
		}
	}
	assert_int_equal(cluster_sess_decode(&v, "n1\0 0 0 1 0", 11), -EINVAL);
	memset(big, 'a', sizeof(big) - 1);
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(cluster_sess_decode(&v, big, strlen(big)), -EINVAL);
	/* An invalid node name is never written. */
	memcpy(v.node, "bad name", 9);
	assert_int_equal(cluster_sess_encode(&v, buf, sizeof(buf)), -EINVAL);
	memcpy(v.node, "n1", 3);
	assert_int_equal(cluster_sess_encode(&v, buf, 4), -ENOSPC);
}

/* ---- The table ---- */

static struct cluster_sess sv(const char *node, int prio, bool avail)
{
	struct cluster_sess v = { .priority = prio, .available = avail };

	snprintf(v.node, sizeof(v.node), "%s", node);
	return v;
}

static void test_table_set_find_del(void **state)
{
	struct cluster_table *t = cluster_table_new();
	struct cluster_sess v1 = sv("n1", 0, true), v2 = sv("n2", 5, false);
	struct cluster_entry e[4];

	assert_non_null(t);
	assert_int_equal(cluster_table_set(t, "a@d/r1", &v1), 0);
	assert_int_equal(cluster_table_set(t, "a@d/r2", &v2), 0);
	assert_int_equal(cluster_table_set(t, "b@d/with space", &v1), 0);
	assert_int_equal(cluster_table_set(t, "a@d", &v1), -EINVAL);	/* no resource */
	assert_int_equal(cluster_table_set(t, "/r", &v1), -EINVAL);
	assert_int_equal(cluster_table_set(t, "a@d/", &v1), -EINVAL);
	assert_int_equal(cluster_table_size(t), 3);
	assert_int_equal(cluster_table_find(t, "a@d", e, 4), 2);
	assert_int_equal(cluster_table_find(t, "b@d", e, 4), 1);
	assert_string_equal(e[0].resource, "with space");
	assert_int_equal(cluster_table_find(t, "c@d", e, 4), 0);
	/* A prefix of a bare JID is another account. */
	assert_int_equal(cluster_table_find(t, "a@", e, 4), 0);
	/* Set again: the value changes, nothing is added. */
	v2.available = true;
	assert_int_equal(cluster_table_set(t, "a@d/r2", &v2), 0);
	assert_int_equal(cluster_table_size(t), 3);
	assert_int_equal(cluster_table_find(t, "a@d", e, 1), 2);	/* more than fit */
	/* Found by full JID, changed in place. */
	assert_non_null(cluster_table_get(t, "a@d/r2"));
	assert_int_equal(cluster_table_get(t, "a@d/r2")->priority, 5);
	cluster_table_get(t, "a@d/r2")->unconfirmed = true;
	assert_true(cluster_table_get(t, "a@d/r2")->unconfirmed);
	assert_non_null(cluster_table_get(t, "b@d/with space"));
	assert_null(cluster_table_get(t, "a@d/r3"));
	assert_null(cluster_table_get(t, "a@d"));
	assert_null(cluster_table_get(t, "c@d/r1"));
	/* A delete naming another node leaves it (the resource moved). */
	assert_false(cluster_table_del(t, "a@d/r2", "n1"));
	assert_true(cluster_table_del(t, "a@d/r2", "n2"));
	assert_false(cluster_table_del(t, "a@d/r2", NULL));
	assert_true(cluster_table_del(t, "a@d/r1", NULL));
	assert_int_equal(cluster_table_find(t, "a@d", e, 4), 0);
	assert_int_equal(cluster_table_size(t), 1);
	cluster_table_free(t);
}

static void count_each(void *arg, const char *bare, const struct cluster_entry *e)
{
	(*(size_t *)arg)++;
}

static void test_table_drop_node_and_growth(void **state)
{
	struct cluster_table *t = cluster_table_new();
	struct cluster_sess v1 = sv("n1", 0, true), v2 = sv("n2", 0, true);
	struct cluster_entry e[4];
	char full[64];
	size_t seen = 0;

	/* Enough accounts to make the table grow several times. */
	for (int i = 0; i < 5000; i++) {
		snprintf(full, sizeof(full), "u%d@d/a", i);
		assert_int_equal(cluster_table_set(t, full, i % 2 ? &v1 : &v2), 0);
		snprintf(full, sizeof(full), "u%d@d/b", i);
		assert_int_equal(cluster_table_set(t, full, &v1), 0);
	}
	assert_int_equal(cluster_table_size(t), 10000);
	assert_int_equal(cluster_table_count_node(t, "n2"), 2500);
	cluster_table_each(t, count_each, &seen);
	assert_int_equal(seen, 10000);
	/* A dead node's entries go; accounts with none left go with them. */
	assert_int_equal(cluster_table_drop_node(t, "n2"), 2500);
	assert_int_equal(cluster_table_size(t), 7500);
	assert_int_equal(cluster_table_count_node(t, "n2"), 0);
	assert_int_equal(cluster_table_find(t, "u0@d", e, 4), 1);
	assert_string_equal(e[0].resource, "b");
	assert_int_equal(cluster_table_drop_node(t, "n1"), 7500);
	assert_int_equal(cluster_table_size(t), 0);
	assert_int_equal(cluster_table_find(t, "u1@d", e, 4), 0);
	assert_int_equal(cluster_table_drop_node(t, "n1"), 0);
	cluster_table_clear(t);
	assert_int_equal(cluster_table_set(t, "x@d/r", &v1), 0);
	cluster_table_free(t);
	cluster_table_free(NULL);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_uri_plain_host_and_port),
		cmocka_unit_test(test_uri_password_and_db_are_masked),
		cmocka_unit_test(test_uri_ipv6),
		cmocka_unit_test(test_uri_bad_forms_are_refused),
		cmocka_unit_test(test_uri_overlong_parts_are_refused),
		cmocka_unit_test(test_node_names),
		cmocka_unit_test(test_sess_round_trip),
		cmocka_unit_test(test_sess_bad_values_are_refused),
		cmocka_unit_test(test_table_set_find_del),
		cmocka_unit_test(test_table_drop_node_and_growth),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
