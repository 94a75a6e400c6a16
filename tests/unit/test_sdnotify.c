/* SPDX-License-Identifier: MIT */
/* sd_notify(3) by hand: addresses, the watchdog interval, the messages. */
#include <errno.h>
#include <poll.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/un.h>
#include <unistd.h>

#include <cmocka.h>

#include "loop.h"
#include "sdnotify.h"

/* ---- A fake service manager: a datagram socket the daemon writes to ---- */

struct manager {
	int fd;
	char path[108];
};

static int manager_open(struct manager *m, bool abstract)
{
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	socklen_t len;

	m->fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC, 0);
	if (m->fd < 0)
		return -errno;
	if (abstract) {
		snprintf(m->path, sizeof(m->path), "@stanzad-test-notify-%d", (int)getpid());
		snprintf(sa.sun_path + 1, sizeof(sa.sun_path) - 1, "%s", m->path + 1);
		len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + strlen(m->path));
	} else {
		snprintf(m->path, sizeof(m->path), "/tmp/stanzad-test-notify-%d.sock", (int)getpid());
		unlink(m->path);
		snprintf(sa.sun_path, sizeof(sa.sun_path), "%s", m->path);
		len = sizeof(sa);
	}
	if (bind(m->fd, (struct sockaddr *)&sa, len) < 0)
		return -errno;
	return 0;
}

static void manager_close(struct manager *m)
{
	close(m->fd);
	if (m->path[0] == '/')
		unlink(m->path);
}

/* The next datagram within timeout_ms into buf (NUL-terminated); its length or -1. */
static int manager_recv(struct manager *m, char *buf, size_t size, int timeout_ms)
{
	struct pollfd p = { .fd = m->fd, .events = POLLIN };
	ssize_t n;

	if (poll(&p, 1, timeout_ms) != 1)
		return -1;
	n = recv(m->fd, buf, size - 1, 0);
	if (n < 0)
		return -1;
	buf[n] = '\0';
	return (int)n;
}

/* The loop calls flush every turn; nothing else happens in these tests. */
static void no_flush(void *ctx)
{
	(void)ctx;
}

static const struct loop_handlers no_handlers = { .flush = no_flush };

/* ---- Addresses ---- */

static void test_addr_takes_a_path(void **state)
{
	struct sockaddr_un sa;
	socklen_t len;

	assert_int_equal(sdnotify_addr("/run/systemd/notify", &sa, &len), 0);
	assert_int_equal(sa.sun_family, AF_UNIX);
	assert_string_equal(sa.sun_path, "/run/systemd/notify");
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + strlen("/run/systemd/notify") + 1);
}

static void test_addr_takes_an_abstract_name_without_its_nul(void **state)
{
	struct sockaddr_un sa;
	socklen_t len;

	assert_int_equal(sdnotify_addr("@foo", &sa, &len), 0);
	assert_int_equal(sa.sun_path[0], '\0');
	assert_memory_equal(sa.sun_path + 1, "foo", 3);
	/* Exactly the name: a trailing NUL would be part of an abstract name. */
	assert_int_equal(len, offsetof(struct sockaddr_un, sun_path) + 4);
}

static void test_addr_refuses_what_is_not_a_socket_name(void **state)
{
	char big[200];
	struct sockaddr_un sa;
	socklen_t len;

	memset(big, 'a', sizeof(big) - 1);
	big[0] = '/';
	big[sizeof(big) - 1] = '\0';
	assert_int_equal(sdnotify_addr(NULL, &sa, &len), -EINVAL);
	assert_int_equal(sdnotify_addr("", &sa, &len), -EINVAL);
	assert_int_equal(sdnotify_addr("@", &sa, &len), -EINVAL);
	assert_int_equal(sdnotify_addr("relative/path", &sa, &len), -EINVAL);
	assert_int_equal(sdnotify_addr("vsock:2:1234", &sa, &len), -EINVAL);
	assert_int_equal(sdnotify_addr(big, &sa, &len), -EINVAL);
}

/* ---- Watchdog interval ---- */

static void test_watchdog_pings_within_half_the_timeout(void **state)
{
	/* One tick early: the wheel may run a timer up to a tick late. */
	assert_int_equal(sdnotify_watchdog_interval_ms("30000000", NULL, 42), 14000);
	assert_int_equal(sdnotify_watchdog_interval_ms("6000000", "42", 42), 2000);
	assert_int_equal(sdnotify_watchdog_interval_ms("4004000", NULL, 42), 1002);
}

static void test_watchdog_never_pings_faster_than_a_tick(void **state)
{
	assert_int_equal(sdnotify_watchdog_interval_ms("1", NULL, 42), LOOP_TICK_MS);
	assert_int_equal(sdnotify_watchdog_interval_ms("1000000", NULL, 42), LOOP_TICK_MS);
	assert_int_equal(sdnotify_watchdog_interval_ms("4000000", NULL, 42), LOOP_TICK_MS);
}

static void test_watchdog_off_when_unset_malformed_or_for_another_process(void **state)
{
	assert_int_equal(sdnotify_watchdog_interval_ms(NULL, NULL, 42), 0);
	assert_int_equal(sdnotify_watchdog_interval_ms("", NULL, 42), 0);
	assert_int_equal(sdnotify_watchdog_interval_ms("0", NULL, 42), 0);
	assert_int_equal(sdnotify_watchdog_interval_ms("-5", NULL, 42), 0);
	assert_int_equal(sdnotify_watchdog_interval_ms("12abc", NULL, 42), 0);
	assert_int_equal(sdnotify_watchdog_interval_ms("99999999999999999999999", NULL, 42), 0);
	assert_int_equal(sdnotify_watchdog_interval_ms("30000000", "43", 42), 0);
	assert_int_equal(sdnotify_watchdog_interval_ms("30000000", "x", 42), 0);
}

/* ---- Messages ---- */

static void test_without_notify_socket_nothing_is_sent(void **state)
{
	unsetenv("NOTIFY_SOCKET");
	setenv("WATCHDOG_USEC", "2000000", 1);
	assert_int_equal(sdnotify_init(), 0);
	/* The variables are consumed: no child process inherits them. */
	assert_null(getenv("WATCHDOG_USEC"));
	sdnotify_ready(NULL, "x");
	sdnotify_stopping();
	assert_int_equal(sdnotify_send("READY=1"), 0);
	sdnotify_close();
}

static void test_ready_then_stopping_once(void **state)
{
	struct manager m;
	char buf[512];

	assert_int_equal(manager_open(&m, false), 0);
	setenv("NOTIFY_SOCKET", m.path, 1);
	unsetenv("WATCHDOG_USEC");
	assert_int_equal(sdnotify_init(), 0);
	assert_null(getenv("NOTIFY_SOCKET"));

	sdnotify_ready(NULL, "accepting connections");
	assert_true(manager_recv(&m, buf, sizeof(buf), 1000) > 0);
	assert_string_equal(buf, "READY=1\nSTATUS=accepting connections");
	sdnotify_stopping();
	assert_true(manager_recv(&m, buf, sizeof(buf), 1000) > 0);
	assert_string_equal(buf, "STOPPING=1\nSTATUS=shutting down");
	/* A second shutdown request (SIGINT after SIGTERM) says nothing new. */
	sdnotify_stopping();
	assert_int_equal(manager_recv(&m, buf, sizeof(buf), 100), -1);
	sdnotify_close();
	manager_close(&m);
}

static void test_abstract_socket_gets_messages(void **state)
{
	struct manager m;
	char buf[512];

	assert_int_equal(manager_open(&m, true), 0);
	setenv("NOTIFY_SOCKET", m.path, 1);
	assert_int_equal(sdnotify_init(), 0);
	sdnotify_ready(NULL, "ok");
	assert_true(manager_recv(&m, buf, sizeof(buf), 1000) > 0);
	assert_string_equal(buf, "READY=1\nSTATUS=ok");
	sdnotify_close();
	manager_close(&m);
}

static void test_gone_manager_does_not_block_or_fail_startup(void **state)
{
	setenv("NOTIFY_SOCKET", "/nonexistent/stanzad-notify.sock", 1);
	assert_int_equal(sdnotify_init(), 0);
	sdnotify_ready(NULL, "x");	/* logged once, not fatal */
	assert_true(sdnotify_send("READY=1") < 0);
	sdnotify_close();
}

static void test_watchdog_pings_from_the_loop_timer(void **state)
{
	const struct loop_config lcfg = LOOP_CONFIG_DEFAULT;
	struct manager m;
	struct loop *l;
	char buf[512];
	int pings = 0;

	assert_int_equal(manager_open(&m, false), 0);
	setenv("NOTIFY_SOCKET", m.path, 1);
	setenv("WATCHDOG_USEC", "2000000", 1);	/* ping every second */
	assert_int_equal(sdnotify_init(), 0);
	l = loop_new(&lcfg, &no_handlers, NULL);
	if (!l) {
		sdnotify_close();
		manager_close(&m);
		skip();	/* no io_uring here: test_loop reports that */
	}
	sdnotify_ready(l, "x");
	assert_true(manager_recv(&m, buf, sizeof(buf), 1000) > 0);
	assert_string_equal(buf, "READY=1\nSTATUS=x");
	/* The first ping goes out with READY=1, the next ones from the timer. */
	for (int turn = 0; turn < 40 && pings < 2; turn++) {
		loop_run_once(l, 100);
		while (manager_recv(&m, buf, sizeof(buf), 0) > 0) {
			assert_string_equal(buf, "WATCHDOG=1");
			pings++;
		}
	}
	assert_true(pings >= 2);
	/* Closed before the loop is freed: the timer must be off the wheel. */
	sdnotify_close();
	for (int turn = 0; turn < 15; turn++)
		loop_run_once(l, 100);
	assert_int_equal(manager_recv(&m, buf, sizeof(buf), 0), -1);
	loop_free(l);
	manager_close(&m);
}

static void test_watchdog_for_another_pid_is_ignored(void **state)
{
	const struct loop_config lcfg = LOOP_CONFIG_DEFAULT;
	struct manager m;
	struct loop *l;
	char buf[512], other[32];

	assert_int_equal(manager_open(&m, false), 0);
	setenv("NOTIFY_SOCKET", m.path, 1);
	setenv("WATCHDOG_USEC", "2000000", 1);
	snprintf(other, sizeof(other), "%d", (int)getpid() + 1);
	setenv("WATCHDOG_PID", other, 1);
	assert_int_equal(sdnotify_init(), 0);
	l = loop_new(&lcfg, &no_handlers, NULL);
	if (!l) {
		sdnotify_close();
		manager_close(&m);
		skip();
	}
	sdnotify_ready(l, "x");
	assert_true(manager_recv(&m, buf, sizeof(buf), 1000) > 0);
	assert_string_equal(buf, "READY=1\nSTATUS=x");
	for (int turn = 0; turn < 15; turn++)
		loop_run_once(l, 100);
	assert_int_equal(manager_recv(&m, buf, sizeof(buf), 0), -1);
	sdnotify_close();
	loop_free(l);
	manager_close(&m);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_addr_takes_a_path),
		cmocka_unit_test(test_addr_takes_an_abstract_name_without_its_nul),
		cmocka_unit_test(test_addr_refuses_what_is_not_a_socket_name),
		cmocka_unit_test(test_watchdog_pings_within_half_the_timeout),
		cmocka_unit_test(test_watchdog_never_pings_faster_than_a_tick),
		cmocka_unit_test(test_watchdog_off_when_unset_malformed_or_for_another_process),
		cmocka_unit_test(test_without_notify_socket_nothing_is_sent),
		cmocka_unit_test(test_ready_then_stopping_once),
		cmocka_unit_test(test_abstract_socket_gets_messages),
		cmocka_unit_test(test_gone_manager_does_not_block_or_fail_startup),
		cmocka_unit_test(test_watchdog_pings_from_the_loop_timer),
		cmocka_unit_test(test_watchdog_for_another_pid_is_ignored),
	};

	return cmocka_run_group_tests(tests, NULL, NULL);
}
