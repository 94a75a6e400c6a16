/* SPDX-License-Identifier: MIT */
/*
 * Federation helpers: dialback keys (XEP-0220/XEP-0185 example vector),
 * the component handshake (XEP-0114), the host table and component entry
 * syntax, SRV answers (RFC 2782) and their order, the .invalid shortcut,
 * the configuration checks, and the loop's connect operation.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <time.h>
#include <unistd.h>

#include <cmocka.h>

#include "config.h"
#include "jid.h"
#include "loop.h"
#include "s2s.h"
#include "s2s_internal.h"

/* ---- Dialback keys ---- */

static void test_dialback_key_matches_xep0220_example(void **state)
{
	static const char secret[] = "s3cr3tf0rd14lb4ck";
	char key[65];

	(void)state;
	assert_int_equal(s2s_dialback_key((const unsigned char *)secret, strlen(secret),
					  "montague.example", "capulet.example", "D60000229F", key),
			 0);
	assert_string_equal(key, "b4835385f37fe2895af6c196b59097b16862406db80559900d96bf6fa7d23df3");
}

static void test_dialback_key_depends_on_every_part(void **state)
{
	static const unsigned char secret[] = "k";
	char a[65], b[65];

	(void)state;
	assert_int_equal(s2s_dialback_key(secret, 1, "r.example", "o.example", "id1", a), 0);
	assert_int_equal(s2s_dialback_key(secret, 1, "o.example", "r.example", "id1", b), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(s2s_dialback_key(secret, 1, "r.example", "o.example", "id2", b), 0);
	assert_string_not_equal(a, b);
	assert_int_equal(s2s_dialback_key((const unsigned char *)"j", 1, "r.example", "o.example",
					  "id1", b), 0);
	assert_string_not_equal(a, b);
	/* Empty parts make no key. */
	assert_int_equal(s2s_dialback_key(secret, 1, "", "o.example", "id1", b), -EINVAL);
	assert_int_equal(s2s_dialback_key(secret, 1, "r.example", "o.example", "", b), -EINVAL);
}

/* ---- Component handshake ---- */

static void test_component_handshake(void **state)
{
	(void)state;
	/* sha1("abc123" "s3cret"), computed independently. */
	assert_true(s2s_component_handshake_ok("abc123", "s3cret",
					       "c6b71d79e2349af2e00ebb4e78ba32f34c7fc6da"));
	assert_true(s2s_component_handshake_ok("abc123", "s3cret",
					       "C6B71D79E2349AF2E00EBB4E78BA32F34C7FC6DA"));
	assert_false(s2s_component_handshake_ok("abc123", "other",
						"c6b71d79e2349af2e00ebb4e78ba32f34c7fc6da"));
	assert_false(s2s_component_handshake_ok("abc124", "s3cret",
						"c6b71d79e2349af2e00ebb4e78ba32f34c7fc6da"));
	assert_false(s2s_component_handshake_ok("abc123", "s3cret", ""));
	assert_false(s2s_component_handshake_ok("abc123", "s3cret",
						"c6b71d79e2349af2e00ebb4e78ba32f34c7fc6d"));
	assert_false(s2s_component_handshake_ok("abc123", "s3cret",
						"c6b71d79e2349af2e00ebb4e78ba32f34c7fc6da00"));
}

/* ---- Configuration syntax ---- */

static void test_host_parse(void **state)
{
	char dom[JID_PART_MAX + 1];
	struct sockaddr_storage ss;
	unsigned len;
	bool tls;

	(void)state;
	assert_int_equal(s2s_host_parse("Beta.Example=127.0.0.1:5269", dom, sizeof(dom), &ss, &len,
					&tls), 0);
	assert_string_equal(dom, "beta.example");
	assert_false(tls);
	assert_int_equal(ss.ss_family, AF_INET);
	assert_int_equal(ntohs(((struct sockaddr_in *)&ss)->sin_port), 5269);
	assert_int_equal(s2s_host_parse("b.example=tls:[::1]:5270", dom, sizeof(dom), &ss, &len,
					&tls), 0);
	assert_true(tls);
	assert_int_equal(ss.ss_family, AF_INET6);
	/* Refused: no '=', no domain, a bad domain, no port, a name, any-address. */
	assert_int_equal(s2s_host_parse("b.example", dom, sizeof(dom), &ss, &len, &tls), -EINVAL);
	assert_int_equal(s2s_host_parse("=127.0.0.1:1", dom, sizeof(dom), &ss, &len, &tls), -EINVAL);
	assert_int_equal(s2s_host_parse("a b=127.0.0.1:1", dom, sizeof(dom), &ss, &len, &tls),
			 -EINVAL);
	assert_int_equal(s2s_host_parse("b.example=127.0.0.1", dom, sizeof(dom), &ss, &len, &tls),
			 -EINVAL);
	assert_int_equal(s2s_host_parse("b.example=host.example:5269", dom, sizeof(dom), &ss, &len,
					&tls), -EINVAL);
	assert_int_equal(s2s_host_parse("b.example=*:5269", dom, sizeof(dom), &ss, &len, &tls),
			 -EINVAL);
	assert_int_equal(s2s_host_parse("b.example=tls:", dom, sizeof(dom), &ss, &len, &tls),
			 -EINVAL);
}

static void test_component_parse(void **state)
{
	char dom[JID_PART_MAX + 1];
	const char *secret;

	(void)state;
	assert_int_equal(s2s_component_parse("Bot.Example=se=cret", dom, sizeof(dom), &secret), 0);
	assert_string_equal(dom, "bot.example");
	assert_string_equal(secret, "se=cret");	/* the first '=' splits */
	assert_int_equal(s2s_component_parse("bot.example=", dom, sizeof(dom), &secret), -EINVAL);
	assert_int_equal(s2s_component_parse("bot.example", dom, sizeof(dom), &secret), -EINVAL);
	assert_int_equal(s2s_component_parse("=x", dom, sizeof(dom), &secret), -EINVAL);
}

static int load(struct config *cfg, const char *const *args, int n)
{
	char *argv[16];
	int ret;

	argv[0] = "stanzad";
	for (int i = 0; i < n; i++)
		argv[i + 1] = (char *)args[i];
	ret = config_load(cfg, n + 1, argv);
	return ret;
}

static void test_config_keys(void **state)
{
	static const char *const good[] = {
		"--state-dir", "/tmp/x", "--listen-s2s", "127.0.0.1:5269", "--s2s-host",
		"b.example=127.0.0.1:5270", "--s2s-auth", "verified", "--component",
		"bot.example=pw", "--s2s-queue-max", "5",
	};
	static const char *const bad_auth[] = { "--s2s-auth", "maybe" };
	static const char *const bad_host[] = { "--s2s-host", "b.example" };
	static const char *const bad_comp[] = { "--component", "bot.example" };
	static const char *const own_comp[] = { "--domain", "a.example", "--component",
						"a.example=pw" };
	struct config cfg;

	(void)state;
	assert_int_equal(load(&cfg, good, 12), 0);
	assert_int_equal(cfg.listen_s2s.n, 1);
	assert_int_equal(cfg.s2s_host.n, 1);
	assert_int_equal(cfg.component.n, 1);
	assert_int_equal(cfg.s2s_queue_max, 5);
	assert_true(cfg.s2s);
	assert_int_equal(cfg.s2s_handshake_timeout, 30);
	config_free(&cfg);
	assert_int_equal(load(&cfg, bad_auth, 2), -EINVAL);
	config_free(&cfg);
	assert_int_equal(load(&cfg, bad_host, 2), -EINVAL);
	config_free(&cfg);
	assert_int_equal(load(&cfg, bad_comp, 2), -EINVAL);
	config_free(&cfg);
	assert_int_equal(load(&cfg, own_comp, 4), -EINVAL);
	config_free(&cfg);
}

/* ---- SRV answers ---- */

/*
 * An answer for _xmpp-server._tcp.example.net with four SRV records:
 * b (prio 20, port 5270), a (prio 10 weight 5, 5269), c (prio 10 weight
 * 50, 5271) and the "." target (service not offered).
 */
static const unsigned char srv_answer[] = {
	0x12, 0x34, 0x81, 0x80, 0x00, 0x01, 0x00, 0x04, 0x00, 0x00, 0x00, 0x00, 0x0c, 0x5f, 0x78,
	0x6d, 0x70, 0x70, 0x2d, 0x73, 0x65, 0x72, 0x76, 0x65, 0x72, 0x04, 0x5f, 0x74, 0x63, 0x70,
	0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x6e, 0x65, 0x74, 0x00, 0x00, 0x21,
	0x00, 0x01, 0xc0, 0x0c, 0x00, 0x21, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x15, 0x00,
	0x14, 0x00, 0x00, 0x14, 0x96, 0x01, 0x62, 0x07, 0x65, 0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65,
	0x03, 0x6e, 0x65, 0x74, 0x00, 0xc0, 0x0c, 0x00, 0x21, 0x00, 0x01, 0x00, 0x00, 0x01, 0x2c,
	0x00, 0x15, 0x00, 0x0a, 0x00, 0x05, 0x14, 0x95, 0x01, 0x61, 0x07, 0x65, 0x78, 0x61, 0x6d,
	0x70, 0x6c, 0x65, 0x03, 0x6e, 0x65, 0x74, 0x00, 0xc0, 0x0c, 0x00, 0x21, 0x00, 0x01, 0x00,
	0x00, 0x01, 0x2c, 0x00, 0x15, 0x00, 0x0a, 0x00, 0x32, 0x14, 0x97, 0x01, 0x63, 0x07, 0x65,
	0x78, 0x61, 0x6d, 0x70, 0x6c, 0x65, 0x03, 0x6e, 0x65, 0x74, 0x00, 0xc0, 0x0c, 0x00, 0x21,
	0x00, 0x01, 0x00, 0x00, 0x01, 0x2c, 0x00, 0x07, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00,
};

static void test_srv_parse_and_order(void **state)
{
	struct s2s_srv srv[8];
	int n;

	(void)state;
	n = s2s_srv_parse(srv_answer, sizeof(srv_answer), srv, 8);
	assert_int_equal(n, 3);	/* "." is not a target */
	assert_string_equal(srv[0].target, "b.example.net");
	assert_int_equal(srv[0].port, 5270);
	s2s_srv_sort(srv, (unsigned)n);
	assert_string_equal(srv[0].target, "c.example.net");	/* prio 10, heavier */
	assert_string_equal(srv[1].target, "a.example.net");
	assert_string_equal(srv[2].target, "b.example.net");	/* prio 20 last */
	assert_int_equal(srv[1].port, 5269);
	/* The output bound holds. */
	assert_int_equal(s2s_srv_parse(srv_answer, sizeof(srv_answer), srv, 2), 2);
}

static void test_srv_parse_rejects_malformed(void **state)
{
	struct s2s_srv srv[8];
	unsigned char cut[sizeof(srv_answer)];

	(void)state;
	assert_int_equal(s2s_srv_parse(srv_answer, 0, srv, 8), -EINVAL);
	assert_int_equal(s2s_srv_parse(srv_answer, 11, srv, 8), -EINVAL);
	/* Truncated inside the second record. */
	assert_int_equal(s2s_srv_parse(srv_answer, 100, srv, 8), -EINVAL);
	/* A compression pointer past the end. */
	memcpy(cut, srv_answer, sizeof(cut));
	cut[47] = 0xc0;
	cut[48] = 0xff;
	assert_true(s2s_srv_parse(cut, sizeof(cut), srv, 8) < 0);
}

static void test_resolve_invalid_tld_needs_no_dns(void **state)
{
	struct s2s_addr addrs[S2S_ADDRS_MAX];
	struct timespec t0, t1;

	(void)state;
	clock_gettime(CLOCK_MONOTONIC, &t0);
	assert_int_equal(s2s_resolve("nowhere.invalid", addrs, S2S_ADDRS_MAX), 0);
	assert_int_equal(s2s_resolve("invalid", addrs, S2S_ADDRS_MAX), 0);
	clock_gettime(CLOCK_MONOTONIC, &t1);
	assert_true(t1.tv_sec - t0.tv_sec < 2);
}

/* ---- The loop's connect ---- */

struct cevents {
	int res;
	unsigned calls;
	uint32_t slot, gen;
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
}

static void h_sent(void *ctx, uint32_t slot, uint32_t gen, int res)
{
}

static void h_watch(void *ctx, unsigned id)
{
}

static void h_flush(void *ctx)
{
}

static void h_connected(void *ctx, uint32_t slot, uint32_t gen, int res)
{
	struct cevents *ev = ctx;

	ev->res = res;
	ev->calls++;
	ev->slot = slot;
	ev->gen = gen;
}

static const struct loop_handlers handlers = {
	.accepted = h_accepted,
	.accept_error = h_accept_error,
	.received = h_received,
	.sent = h_sent,
	.watch = h_watch,
	.flush = h_flush,
	.connected = h_connected,
};

/* Runs turns until a connect completion came (bounded). */
static void run_until_connected(struct loop *l, struct cevents *ev)
{
	for (int i = 0; i < 50 && !ev->calls; i++)
		assert_int_equal(loop_run_once(l, 100), 0);
	assert_int_equal(ev->calls, 1);
}

static void test_loop_connect(void **state)
{
	const struct loop_config cfg = LOOP_CONFIG_DEFAULT;
	struct cevents ev = { 0 };
	struct sockaddr_in a = { .sin_family = AF_INET };
	socklen_t alen = sizeof(a);
	struct loop *l;
	int lfd, fd;

	(void)state;
	l = loop_new(&cfg, &handlers, &ev);
	assert_non_null(l);
	/* A listener: the connect completes with 0. */
	lfd = socket(AF_INET, SOCK_STREAM, 0);
	a.sin_addr.s_addr = htonl(INADDR_LOOPBACK);
	assert_int_equal(bind(lfd, (struct sockaddr *)&a, sizeof(a)), 0);
	assert_int_equal(listen(lfd, 4), 0);
	assert_int_equal(getsockname(lfd, (struct sockaddr *)&a, &alen), 0);
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_int_equal(loop_connect(l, fd, (struct sockaddr *)&a, sizeof(a), 7, 3), 0);
	run_until_connected(l, &ev);
	assert_int_equal(ev.res, 0);
	assert_int_equal(ev.slot, 7);
	assert_int_equal(ev.gen, 3);
	close(fd);
	/* Nothing listens any more: refused. */
	close(lfd);
	memset(&ev, 0, sizeof(ev));
	fd = socket(AF_INET, SOCK_STREAM | SOCK_NONBLOCK, 0);
	assert_int_equal(loop_connect(l, fd, (struct sockaddr *)&a, sizeof(a), 8, 1), 0);
	run_until_connected(l, &ev);
	assert_int_equal(ev.res, -ECONNREFUSED);
	close(fd);
	loop_free(l);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_dialback_key_matches_xep0220_example),
		cmocka_unit_test(test_dialback_key_depends_on_every_part),
		cmocka_unit_test(test_component_handshake),
		cmocka_unit_test(test_host_parse),
		cmocka_unit_test(test_component_parse),
		cmocka_unit_test(test_config_keys),
		cmocka_unit_test(test_srv_parse_and_order),
		cmocka_unit_test(test_srv_parse_rejects_malformed),
		cmocka_unit_test(test_resolve_invalid_tld_needs_no_dns),
		cmocka_unit_test(test_loop_connect),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
