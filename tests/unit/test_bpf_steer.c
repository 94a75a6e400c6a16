/* SPDX-License-Identifier: MIT */
/*
 * Unit tests for bpf/steer.bpf.c and its loader (daemon/bpf_steer.c):
 * real connections over loopback to a reuseport group of listening
 * sockets, one per fake worker, counted where the kernel queued them.
 * Needs root (or CAP_BPF and CAP_NET_ADMIN) and a kernel with BPF:
 * otherwise every test is skipped and says why once.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <fcntl.h>
#include <linux/types.h>
#include <netinet/in.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include <cmocka.h>

#include <bpf/bpf.h>
#include <bpf/libbpf.h>

#include "bpf_steer.h"
#include "bpf_util.h"
#include "config.h"
#include "server.h"
#include "steer.h"
#include "steer.skel.h"

#define NWORKERS	3
#define BACKLOG		1024

#ifndef SO_ATTACH_REUSEPORT_EBPF
#define SO_ATTACH_REUSEPORT_EBPF 52
#endif
#ifndef SO_COOKIE
#define SO_COOKIE 57
#endif

static const char *skip_why;
static struct config cfg;
static struct server srv;

/* ---- Sockets ---- */

/* A listening socket of family af on addr:port (0: any port), SO_REUSEPORT, nonblocking. */
static int listen_on(int af, const char *addr, uint16_t port)
{
	struct sockaddr_storage ss;
	socklen_t len;
	int one = 1, fd = socket(af, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);

	assert_true(fd >= 0);
	assert_int_equal(setsockopt(fd, SOL_SOCKET, SO_REUSEPORT, &one, sizeof(one)), 0);
	memset(&ss, 0, sizeof(ss));
	if (af == AF_INET) {
		struct sockaddr_in *s4 = (struct sockaddr_in *)&ss;

		s4->sin_family = AF_INET;
		s4->sin_port = htons(port);
		assert_int_equal(inet_pton(AF_INET, addr, &s4->sin_addr), 1);
		len = sizeof(*s4);
	} else {
		struct sockaddr_in6 *s6 = (struct sockaddr_in6 *)&ss;

		s6->sin6_family = AF_INET6;
		s6->sin6_port = htons(port);
		assert_int_equal(inet_pton(AF_INET6, addr, &s6->sin6_addr), 1);
		len = sizeof(*s6);
	}
	assert_int_equal(bind(fd, (struct sockaddr *)&ss, len), 0);
	assert_int_equal(listen(fd, BACKLOG), 0);
	return fd;
}

static uint16_t port_of(int fd)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);

	assert_int_equal(getsockname(fd, (struct sockaddr *)&ss, &len), 0);
	return ntohs(ss.ss_family == AF_INET ? ((struct sockaddr_in *)&ss)->sin_port
					     : ((struct sockaddr_in6 *)&ss)->sin6_port);
}

/* Adds a c2s listener on addr (any port) with one socket per worker in one reuseport group. */
static struct listener *add_listener(int af, const char *addr, unsigned nworkers)
{
	struct listener *l = &srv.listeners[srv.nlisteners++];

	l->kind = LISTENER_C2S;
	snprintf(l->addr, sizeof(l->addr), "%s", addr);
	for (unsigned k = 0; k < SERVER_MAX_WORKERS; k++)
		l->worker_fd[k] = -1;
	l->worker_fd[0] = listen_on(af, addr, 0);
	for (unsigned k = 1; k < nworkers; k++)
		l->worker_fd[k] = listen_on(af, addr, port_of(l->worker_fd[0]));
	l->fd = l->worker_fd[0];
	return l;
}

/* A fake server with nworkers workers and one IPv4 loopback c2s listener. */
static struct listener *make_server(unsigned nworkers, const char *steering)
{
	memset(&cfg, 0, sizeof(cfg));
	memset(&srv, 0, sizeof(srv));
	cfg.bpf = true;
	cfg.steering = (char *)steering;
	srv.cfg = &cfg;
	srv.nworkers = nworkers;
	return add_listener(AF_INET, "127.0.0.1", nworkers);
}

/*
 * Connects to l's address from src (NULL: the kernel's choice; a
 * 127.x.y.z or ::1 address), once the kernel has queued the connection on
 * some worker's socket. Returns the client socket.
 */
static int connect_from(const struct listener *l, const char *src)
{
	struct sockaddr_storage ss;
	socklen_t len = sizeof(ss);
	int fd;

	assert_int_equal(getsockname(l->fd, (struct sockaddr *)&ss, &len), 0);
	fd = socket(ss.ss_family, SOCK_STREAM | SOCK_CLOEXEC, 0);
	assert_true(fd >= 0);
	if (src) {
		struct sockaddr_in s4 = { .sin_family = AF_INET };

		assert_int_equal(inet_pton(AF_INET, src, &s4.sin_addr), 1);
		assert_int_equal(bind(fd, (struct sockaddr *)&s4, sizeof(s4)), 0);
	}
	/* Loopback: the SYN, the worker's choice and the handshake happen inside connect(). */
	assert_int_equal(connect(fd, (struct sockaddr *)&ss, len), 0);
	return fd;
}

/* Accepts (and closes) what each worker's socket of l has queued into count[]. */
static void accept_all(const struct listener *l, unsigned nworkers, unsigned count[])
{
	for (unsigned k = 0; k < nworkers; k++) {
		int fd;

		count[k] = 0;
		while ((fd = accept4(l->worker_fd[k], NULL, NULL, SOCK_CLOEXEC)) >= 0) {
			close(fd);
			count[k]++;
		}
		assert_true(errno == EAGAIN || errno == EWOULDBLOCK);
	}
}

/* n connections from src, then where they landed. */
static void connect_many(const struct listener *l, unsigned nworkers, unsigned n, const char *src,
			 unsigned count[])
{
	int fds[BACKLOG];

	assert_true(n <= BACKLOG);
	for (unsigned i = 0; i < n; i++)
		fds[i] = connect_from(l, src);
	accept_all(l, nworkers, count);
	for (unsigned i = 0; i < n; i++)
		close(fds[i]);
}

static unsigned sum(const unsigned count[], unsigned n)
{
	unsigned s = 0;

	for (unsigned k = 0; k < n; k++)
		s += count[k];
	return s;
}

/* The one worker that got connections, or -1 when several did. */
static int only_worker(const unsigned count[], unsigned n)
{
	int w = -1;

	for (unsigned k = 0; k < n; k++) {
		if (!count[k])
			continue;
		if (w >= 0)
			return -1;
		w = (int)k;
	}
	return w;
}

/* ---- Fixture ---- */

static int group_setup(void **state)
{
	struct steer_bpf *skel;

	if (geteuid() != 0) {
		skip_why = "not root";
		return 0;
	}
	bpf_util_quiet_libbpf();
	skel = steer_bpf__open_and_load();
	if (!skel) {
		skip_why = "the kernel refused to load the steering program (no BPF here?)";
		return 0;
	}
	steer_bpf__destroy(skel);
	return 0;
}

static int teardown(void **state)
{
	bpf_steer_stop();
	for (unsigned i = 0; i < srv.nlisteners; i++)
		for (unsigned k = 0; k < SERVER_MAX_WORKERS; k++)
			if (srv.listeners[i].worker_fd[k] >= 0)
				close(srv.listeners[i].worker_fd[k]);
	memset(&srv, 0, sizeof(srv));
	return 0;
}

#define NEED_BPF() do {							\
		if (skip_why) {						\
			print_message("skipped: %s\n", skip_why);	\
			skip();						\
		}							\
	} while (0)

/* Starts steering on the fake server; it must come up. */
static void start(void)
{
	const char *detail, *reason;

	if (!bpf_steer_start(&srv)) {
		bpf_steer_state(&detail, &reason);
		fail_msg("steering did not start: %s", reason);
	}
}

/* ---- Least loaded ---- */

static void test_least_loaded_avoids_the_busy_worker(void **state)
{
	struct listener *l;
	struct bpf_steer_counters tc;
	unsigned count[NWORKERS];

	NEED_BPF();
	l = make_server(NWORKERS, NULL);
	start();
	bpf_steer_set_load(0, 1000000);
	connect_many(l, NWORKERS, 120, NULL, count);
	assert_int_equal(sum(count, NWORKERS), 120);
	assert_int_equal(count[0], 0);
	assert_true(count[1] > 0 && count[2] > 0);
	assert_int_equal(bpf_steer_counters(&tc), 0);
	assert_int_equal(tc.selected[0], 0);
	assert_int_equal(tc.selected[1] + tc.selected[2], 120);
	assert_int_equal(tc.fallbacks, 0);
}

static void test_least_loaded_spreads_a_burst_over_equal_workers(void **state)
{
	struct listener *l;
	unsigned count[NWORKERS];

	NEED_BPF();
	l = make_server(NWORKERS, "least-loaded");
	start();
	/* No worker publishes in between: the program's own count spreads them evenly. */
	connect_many(l, NWORKERS, 150, NULL, count);
	for (unsigned k = 0; k < NWORKERS; k++)
		assert_int_equal(count[k], 50);
}

/*
 * A worker that closes its socket (it stops) passes the connections already
 * queued on it to the live workers instead of resetting them.
 */
static void test_closing_worker_passes_its_queue_on(void **state)
{
	struct listener *l;
	unsigned count[NWORKERS];
	int fds[60];
	char b;

	NEED_BPF();
	l = make_server(NWORKERS, NULL);
	start();
	/* Everything to worker 0... */
	bpf_steer_set_load(1, 1000000);
	bpf_steer_set_load(2, 1000000);
	for (unsigned i = 0; i < 60; i++)
		fds[i] = connect_from(l, NULL);
	/* ...which stops before accepting any of them. */
	close(l->worker_fd[0]);
	l->worker_fd[0] = -1;
	count[0] = 0;
	for (unsigned k = 1; k < NWORKERS; k++) {
		int fd;

		count[k] = 0;
		while ((fd = accept4(l->worker_fd[k], NULL, NULL, SOCK_CLOEXEC)) >= 0) {
			close(fd);
			count[k]++;
		}
	}
	assert_int_equal(count[1] + count[2], 60);
	/* None was reset: every client sees its server-side close, not ECONNRESET. */
	for (unsigned i = 0; i < 60; i++) {
		assert_true(recv(fds[i], &b, 1, 0) == 0);
		close(fds[i]);
	}
}

static void test_least_loaded_follows_published_loads(void **state)
{
	struct listener *l;
	unsigned count[NWORKERS];

	NEED_BPF();
	l = make_server(NWORKERS, NULL);
	start();
	bpf_steer_set_load(0, 100);
	bpf_steer_set_load(1, 10);
	bpf_steer_set_load(2, 100);
	connect_many(l, NWORKERS, 60, NULL, count);
	assert_int_equal(count[1], 60);
	/* The workers publish: worker 1 is now the busy one. */
	bpf_steer_set_load(0, 5);
	bpf_steer_set_load(1, 500);
	bpf_steer_set_load(2, 5);
	connect_many(l, NWORKERS, 40, NULL, count);
	assert_int_equal(count[1], 0);
	assert_int_equal(count[0], 20);
	assert_int_equal(count[2], 20);
}

/* ---- Source hash ---- */

static void test_source_hash_keeps_a_source_on_one_worker_and_spreads_sources(void **state)
{
	struct listener *l;
	struct bpf_steer_counters tc;
	unsigned count[NWORKERS], used[NWORKERS] = { 0 };
	char src[32];

	NEED_BPF();
	l = make_server(NWORKERS, "source-hash");
	start();
	/* Loads do not matter to this policy. */
	bpf_steer_set_load(0, 1000000);
	for (unsigned i = 0; i < 24; i++) {
		int w;

		snprintf(src, sizeof(src), "127.0.%u.%u", 1 + i / 8, 10 + i);
		connect_many(l, NWORKERS, 6, src, count);
		assert_int_equal(sum(count, NWORKERS), 6);
		w = only_worker(count, NWORKERS);
		if (w < 0)
			fail_msg("source %s went to several workers", src);
		used[w]++;
		/* Again: the same worker (another source port each time). */
		connect_many(l, NWORKERS, 3, src, count);
		assert_int_equal(only_worker(count, NWORKERS), w);
	}
	for (unsigned k = 0; k < NWORKERS; k++)
		assert_true(used[k] > 0);	/* 24 sources: all on one of 3 is ~3^-23 */
	assert_int_equal(bpf_steer_counters(&tc), 0);
	assert_int_equal(tc.fallbacks, 0);
}

static void test_source_hash_drain_moves_only_the_drained_workers_sources(void **state)
{
	struct listener *l;
	unsigned count[NWORKERS];
	int before[16], moved = 0;
	char src[32];

	NEED_BPF();
	l = make_server(NWORKERS, "source-hash");
	start();
	for (unsigned i = 0; i < 16; i++) {
		snprintf(src, sizeof(src), "127.0.9.%u", 1 + i);
		connect_many(l, NWORKERS, 2, src, count);
		before[i] = only_worker(count, NWORKERS);
		assert_true(before[i] >= 0);
	}
	assert_int_equal(bpf_steer_drain(1, true), 0);
	for (unsigned i = 0; i < 16; i++) {
		snprintf(src, sizeof(src), "127.0.9.%u", 1 + i);
		connect_many(l, NWORKERS, 2, src, count);
		assert_int_equal(count[1], 0);
		if (before[i] == 1)
			moved++;
		else
			assert_int_equal(only_worker(count, NWORKERS), before[i]);
	}
	print_message("%d of 16 sources moved off the drained worker\n", moved);
}

/* ---- Drain ---- */

static void test_drained_worker_gets_nothing_until_undrained(void **state)
{
	struct listener *l;
	unsigned count[NWORKERS];

	NEED_BPF();
	l = make_server(NWORKERS, NULL);
	start();
	assert_false(bpf_steer_drained(2));
	assert_int_equal(bpf_steer_drain(2, true), 0);
	assert_true(bpf_steer_drained(2));
	/* Even as the idlest. */
	bpf_steer_set_load(0, 50);
	bpf_steer_set_load(1, 50);
	bpf_steer_set_load(2, 0);
	connect_many(l, NWORKERS, 90, NULL, count);
	assert_int_equal(count[2], 0);
	assert_int_equal(count[0] + count[1], 90);
	assert_int_equal(bpf_steer_drain(2, false), 0);
	assert_false(bpf_steer_drained(2));
	bpf_steer_set_load(0, 50);
	bpf_steer_set_load(1, 50);
	connect_many(l, NWORKERS, 30, NULL, count);
	assert_int_equal(count[2], 30);
}

static void test_drain_refuses_the_last_worker_and_bad_ids(void **state)
{
	NEED_BPF();
	make_server(NWORKERS, NULL);
	start();
	assert_int_equal(bpf_steer_drain(0, true), 0);
	assert_int_equal(bpf_steer_drain(1, true), 0);
	assert_int_equal(bpf_steer_drain(2, true), -EBUSY);
	assert_false(bpf_steer_drained(2));
	assert_int_equal(bpf_steer_drain(3, true), -EINVAL);
	assert_int_equal(bpf_steer_drain(1000, false), -EINVAL);
	/* Undraining one frees the other to be drained. */
	assert_int_equal(bpf_steer_drain(0, false), 0);
	assert_int_equal(bpf_steer_drain(2, true), 0);
}

/*
 * The program itself with every worker drained (the loader refuses to get
 * there): it selects nobody, and the kernel's hash still places every
 * connection. Loaded and attached here, as the loader would.
 */
static void test_every_worker_drained_falls_back_to_the_kernel_hash(void **state)
{
	struct steer_config sc = { .policy = STEER_LEAST_LOADED, .nworkers = NWORKERS };
	struct steer_group grp = { 0 };
	struct steer_bpf *skel;
	struct listener *l;
	unsigned count[NWORKERS];
	uint64_t c[STEER_NCOUNTERS];
	uint32_t zero = 0, one = 1, g = 0;
	int prog_fd;

	NEED_BPF();
	l = make_server(NWORKERS, NULL);
	skel = steer_bpf__open_and_load();
	assert_non_null(skel);
	for (uint32_t k = 0; k < NWORKERS; k++) {
		uint64_t fd = (uint64_t)l->worker_fd[k], cookie;
		socklen_t len = sizeof(cookie);

		assert_int_equal(bpf_map__update_elem(skel->maps.socks, &k, sizeof(k), &fd,
						      sizeof(fd), BPF_ANY), 0);
		assert_int_equal(getsockopt(l->worker_fd[k], SOL_SOCKET, SO_COOKIE, &cookie, &len), 0);
		assert_int_equal(bpf_map__update_elem(skel->maps.cookies, &cookie, sizeof(cookie), &g,
						      sizeof(g), BPF_ANY), 0);
		assert_int_equal(bpf_map__update_elem(skel->maps.drain, &k, sizeof(k), &one,
						      sizeof(one), BPF_ANY), 0);
		grp.members |= 1ull << k;
	}
	assert_int_equal(bpf_map__update_elem(skel->maps.groups, &g, sizeof(g), &grp, sizeof(grp),
					      BPF_ANY), 0);
	assert_int_equal(bpf_map__update_elem(skel->maps.settings, &zero, sizeof(zero), &sc,
					      sizeof(sc), BPF_ANY), 0);
	prog_fd = bpf_program__fd(skel->progs.stanzad_steer);
	assert_int_equal(setsockopt(l->fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog_fd,
				    sizeof(prog_fd)), 0);
	connect_many(l, NWORKERS, 60, NULL, count);
	assert_int_equal(sum(count, NWORKERS), 60);
	assert_int_equal(bpf_util_percpu_sum(bpf_map__fd(skel->maps.counters), STEER_NCOUNTERS, c),
			 0);
	assert_int_equal(c[STEER_FALLBACK], 60);
	for (unsigned k = 0; k < NWORKERS; k++)
		assert_int_equal(c[k], 0);
	steer_bpf__destroy(skel);
}

/* ---- Groups, IPv6, off ---- */

static void test_two_groups_and_ipv6(void **state)
{
	struct listener *l4, *l6;
	struct bpf_steer_counters tc;
	unsigned count[NWORKERS];

	NEED_BPF();
	l4 = make_server(NWORKERS, "source-hash");
	l6 = add_listener(AF_INET6, "::1", NWORKERS);
	start();
	/* One source (::1) on one worker; each group's connections stay in their group. */
	connect_many(l6, NWORKERS, 12, NULL, count);
	assert_int_equal(sum(count, NWORKERS), 12);
	assert_true(only_worker(count, NWORKERS) >= 0);
	connect_many(l4, NWORKERS, 12, "127.0.0.1", count);
	assert_int_equal(sum(count, NWORKERS), 12);
	assert_true(only_worker(count, NWORKERS) >= 0);
	assert_int_equal(bpf_steer_counters(&tc), 0);
	assert_int_equal(tc.fallbacks, 0);
	assert_int_equal(tc.selected[0] + tc.selected[1] + tc.selected[2], 24);
}

static void test_ipv6_least_loaded(void **state)
{
	struct listener *l6;
	unsigned count[NWORKERS];

	NEED_BPF();
	make_server(NWORKERS, NULL);
	l6 = add_listener(AF_INET6, "::1", NWORKERS);
	start();
	bpf_steer_set_load(1, 1000);
	connect_many(l6, NWORKERS, 40, NULL, count);
	assert_int_equal(count[1], 0);
	assert_int_equal(count[0], 20);
	assert_int_equal(count[2], 20);
}

static void test_off_reasons_and_the_kernel_hash_still_serves(void **state)
{
	struct listener *l;
	const char *detail, *reason;
	unsigned count[NWORKERS];

	NEED_BPF();
	l = make_server(NWORKERS, "kernel");
	assert_false(bpf_steer_start(&srv));
	assert_false(bpf_steer_state(&detail, &reason));
	assert_string_equal(reason, "steering = kernel");
	assert_int_equal(bpf_steer_drain(0, true), -ENODEV);
	bpf_steer_set_load(0, 5);	/* a no-op, not a crash */
	connect_many(l, NWORKERS, 30, NULL, count);
	assert_int_equal(sum(count, NWORKERS), 30);

	cfg.steering = NULL;
	cfg.bpf = false;
	assert_false(bpf_steer_start(&srv));
	bpf_steer_state(&detail, &reason);
	assert_string_equal(reason, "disabled (bpf = no)");

	cfg.bpf = true;
	srv.nworkers = 1;
	assert_false(bpf_steer_start(&srv));
	bpf_steer_state(&detail, &reason);
	assert_string_equal(reason, "single worker");
	srv.nworkers = NWORKERS;
}

static void test_stop_leaves_the_kernel_hash_and_a_restart_takes_over(void **state)
{
	struct listener *l;
	const char *detail, *reason;
	unsigned count[NWORKERS];

	NEED_BPF();
	l = make_server(NWORKERS, NULL);
	start();
	assert_true(bpf_steer_state(&detail, &reason));
	assert_non_null(strstr(detail, "least-loaded over 3 workers"));
	bpf_steer_stop();
	/* Stopped: the kernel's hash, every connection still placed. */
	connect_many(l, NWORKERS, 30, NULL, count);
	assert_int_equal(sum(count, NWORKERS), 30);
	/* A successor on the same sockets: they leave our array, so its start succeeds. */
	start();
	bpf_steer_set_load(0, 1000);
	bpf_steer_set_load(2, 1000);
	connect_many(l, NWORKERS, 30, NULL, count);
	assert_int_equal(count[1], 30);
}

/*
 * A predecessor that crashed left its program attached and the sockets in
 * its socket array (a socket can be in one array only): start detaches
 * it, waits for the kernel to let go of the sockets, and takes over.
 */
static void test_start_takes_over_from_a_crashed_predecessor(void **state)
{
	struct steer_bpf *old;
	struct listener *l;
	unsigned count[NWORKERS];
	int prog_fd;

	NEED_BPF();
	l = make_server(NWORKERS, NULL);
	old = steer_bpf__open_and_load();
	assert_non_null(old);
	for (uint32_t k = 0; k < NWORKERS; k++) {
		uint64_t fd = (uint64_t)l->worker_fd[k];

		assert_int_equal(bpf_map__update_elem(old->maps.socks, &k, sizeof(k), &fd,
						      sizeof(fd), BPF_ANY), 0);
	}
	prog_fd = bpf_program__fd(old->progs.stanzad_steer);
	assert_int_equal(setsockopt(l->fd, SOL_SOCKET, SO_ATTACH_REUSEPORT_EBPF, &prog_fd,
				    sizeof(prog_fd)), 0);
	steer_bpf__destroy(old);	/* the "crash": only the attachment keeps it alive */
	start();
	bpf_steer_set_load(0, 1000);
	bpf_steer_set_load(1, 1000);
	connect_many(l, NWORKERS, 30, NULL, count);
	assert_int_equal(count[2], 30);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test_teardown(test_least_loaded_avoids_the_busy_worker, teardown),
		cmocka_unit_test_teardown(test_least_loaded_spreads_a_burst_over_equal_workers,
					  teardown),
		cmocka_unit_test_teardown(test_least_loaded_follows_published_loads, teardown),
		cmocka_unit_test_teardown(test_closing_worker_passes_its_queue_on, teardown),
		cmocka_unit_test_teardown(
			test_source_hash_keeps_a_source_on_one_worker_and_spreads_sources, teardown),
		cmocka_unit_test_teardown(
			test_source_hash_drain_moves_only_the_drained_workers_sources, teardown),
		cmocka_unit_test_teardown(test_drained_worker_gets_nothing_until_undrained, teardown),
		cmocka_unit_test_teardown(test_drain_refuses_the_last_worker_and_bad_ids, teardown),
		cmocka_unit_test_teardown(test_every_worker_drained_falls_back_to_the_kernel_hash,
					  teardown),
		cmocka_unit_test_teardown(test_two_groups_and_ipv6, teardown),
		cmocka_unit_test_teardown(test_ipv6_least_loaded, teardown),
		cmocka_unit_test_teardown(test_off_reasons_and_the_kernel_hash_still_serves,
					  teardown),
		cmocka_unit_test_teardown(
			test_stop_leaves_the_kernel_hash_and_a_restart_takes_over,
			teardown),
		cmocka_unit_test_teardown(test_start_takes_over_from_a_crashed_predecessor,
					  teardown),
	};

	return cmocka_run_group_tests(tests, group_setup, NULL);
}
