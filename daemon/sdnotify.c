/* SPDX-License-Identifier: MIT */
/*
 * sd_notify(3) by hand; see sdnotify.h for why. The wire format is
 * "KEY=VALUE" lines in one SOCK_DGRAM message to $NOTIFY_SOCKET; systemd
 * checks the sender's pid from the kernel's SCM_CREDENTIALS, so nothing
 * else is needed for NotifyAccess=main.
 */
#include <errno.h>
#include <limits.h>
#include <stdbool.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "log.h"
#include "loop.h"
#include "sdnotify.h"

/* Longest STATUS= text sent; systemd shows it in `systemctl status`. */
#define SDNOTIFY_STATUS_MAX	200

/* Process-wide: only the signal-handling worker (worker 0) calls in. */
static struct {
	int fd;				/* -1: no notifications */
	struct sockaddr_un sa;
	socklen_t salen;
	uint64_t watchdog_ms;		/* 0: no watchdog */
	struct loop *loop;
	struct loop_timer timer;
	bool stopping_sent;
	bool send_failed_logged;
} sdn = { .fd = -1 };

int sdnotify_addr(const char *value, struct sockaddr_un *sa, socklen_t *len)
{
	size_t n;

	if (!value)
		return -EINVAL;
	n = strlen(value);
	/* Abstract names are "@name"; paths are absolute. vsock: is not ours. */
	if (n < 2 || (value[0] != '/' && value[0] != '@') || n >= sizeof(sa->sun_path))
		return -EINVAL;
	memset(sa, 0, sizeof(*sa));
	sa->sun_family = AF_UNIX;
	memcpy(sa->sun_path, value, n);
	if (value[0] == '@') {
		/* Abstract: a leading NUL, and the length counts exactly the name. */
		sa->sun_path[0] = '\0';
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n);
	} else {
		*len = (socklen_t)(offsetof(struct sockaddr_un, sun_path) + n + 1);
	}
	return 0;
}

uint64_t sdnotify_watchdog_interval_ms(const char *usec, const char *pid, pid_t self)
{
	unsigned long long u, p;
	char *end;
	uint64_t ms;

	if (!usec || !*usec || usec[0] == '-')
		return 0;
	errno = 0;
	u = strtoull(usec, &end, 10);
	if (errno || *end || u == 0)
		return 0;
	/* WATCHDOG_PID names the process meant; a forked child must not ping. */
	if (pid && *pid) {
		errno = 0;
		p = strtoull(pid, &end, 10);
		if (errno || *end || p != (unsigned long long)self)
			return 0;
	}
	/*
	 * A timer fires up to one tick after its delay, so aim one tick early
	 * to ping within half the timeout (as sd_watchdog_enabled(3) advises).
	 */
	ms = u / 2000;
	ms = ms > 2 * LOOP_TICK_MS ? ms - LOOP_TICK_MS : LOOP_TICK_MS;
	return ms;
}

int sdnotify_send(const char *msg)
{
	ssize_t n;

	if (sdn.fd < 0)
		return 0;
	/* Non-blocking: a stuck manager must never stall the event loop. */
	n = sendto(sdn.fd, msg, strlen(msg), MSG_NOSIGNAL | MSG_DONTWAIT,
		   (const struct sockaddr *)&sdn.sa, sdn.salen);
	if (n < 0) {
		int e = errno;

		if (!sdn.send_failed_logged) {
			sdn.send_failed_logged = true;
			log_warn("sdnotify.send_failed", "err=\"%s\"", strerror(e));
		}
		return -e;
	}
	return 0;
}

int sdnotify_init(void)
{
	const char *sock = getenv("NOTIFY_SOCKET");
	char usec[32] = "", pid[32] = "";
	int fd;

	if (getenv("WATCHDOG_USEC"))
		snprintf(usec, sizeof(usec), "%s", getenv("WATCHDOG_USEC"));
	if (getenv("WATCHDOG_PID"))
		snprintf(pid, sizeof(pid), "%s", getenv("WATCHDOG_PID"));
	if (!sock) {
		unsetenv("WATCHDOG_USEC");
		unsetenv("WATCHDOG_PID");
		return 0;
	}
	if (sdnotify_addr(sock, &sdn.sa, &sdn.salen) < 0) {
		char val[96];

		log_warn("sdnotify.bad_socket", "notify_socket=%s msg=\"not a path or @name; no "
			 "readiness notifications\"", log_sanitize(val, sizeof(val), sock, strlen(sock)));
		goto out_unset;
	}
	fd = socket(AF_UNIX, SOCK_DGRAM | SOCK_CLOEXEC | SOCK_NONBLOCK, 0);
	if (fd < 0) {
		int e = errno;

		log_warn("sdnotify.socket", "err=\"%s\"", strerror(e));
		unsetenv("NOTIFY_SOCKET");
		return -e;
	}
	sdn.fd = fd;
	sdn.watchdog_ms = sdnotify_watchdog_interval_ms(usec, pid, getpid());
	if (sdn.watchdog_ms && strtoull(usec, NULL, 10) < SDNOTIFY_WATCHDOG_MIN_USEC)
		log_warn("sdnotify.watchdog_short", "watchdog_usec=%s msg=\"below %llu us the "
			 "one-second timer may ping late; use WatchdogSec=4 or more\"", usec,
			 SDNOTIFY_WATCHDOG_MIN_USEC);
out_unset:
	unsetenv("NOTIFY_SOCKET");
	unsetenv("WATCHDOG_USEC");
	unsetenv("WATCHDOG_PID");
	return 0;
}

/*
 * The ping runs from the loop's timer wheel, so it stops when the loop
 * stops turning: that is what the watchdog is there to notice.
 */
static void sdnotify_watchdog_fired(struct loop_timer *t)
{
	(void)t;
	sdnotify_send("WATCHDOG=1");
	loop_timer_arm(sdn.loop, &sdn.timer, sdn.watchdog_ms);
}

void sdnotify_ready(struct loop *l, const char *status)
{
	char msg[SDNOTIFY_STATUS_MAX + 32];

	if (sdn.fd < 0)
		return;
	snprintf(msg, sizeof(msg), "READY=1\nSTATUS=%.*s", SDNOTIFY_STATUS_MAX, status);
	sdnotify_send(msg);
	log_info("sdnotify.ready", "watchdog_ms=%llu", (unsigned long long)sdn.watchdog_ms);
	if (sdn.watchdog_ms && l) {
		sdn.loop = l;
		sdn.timer.fn = sdnotify_watchdog_fired;
		/* One ping now: the timeout counts from READY=1 already. */
		sdnotify_send("WATCHDOG=1");
		loop_timer_arm(l, &sdn.timer, sdn.watchdog_ms);
	}
}

void sdnotify_stopping(void)
{
	if (sdn.fd < 0 || sdn.stopping_sent)
		return;
	sdn.stopping_sent = true;
	sdnotify_send("STOPPING=1\nSTATUS=shutting down");
}

void sdnotify_close(void)
{
	if (sdn.loop) {
		loop_timer_cancel(&sdn.timer);
		sdn.loop = NULL;
	}
	if (sdn.fd >= 0)
		close(sdn.fd);
	sdn.fd = -1;
	sdn.watchdog_ms = 0;
	sdn.stopping_sent = false;
	sdn.send_failed_logged = false;
}
