/* SPDX-License-Identifier: MIT */
/*
 * systemd socket activation (the sd_listen_fds(3) protocol, by hand like
 * sdnotify.c): listening sockets passed as fds 3 .. 3+$LISTEN_FDS-1 when
 * $LISTEN_PID is ours. Each is claimed by the configured listener bound
 * to the same address, instead of a socket of our own; so systemd can hold
 * the ports (connections queue while the daemon starts or restarts) and
 * the daemon needs no privilege to bind ports below 1024.
 */
#include <errno.h>
#include <fcntl.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <unistd.h>

#include "config.h"
#include "log.h"
#include "sdlisten.h"
#include "server.h"

#define SDLISTEN_FD_START	3

static struct {
	struct {
		int fd;
		struct sockaddr_storage addr;
		socklen_t addr_len;
		bool claimed;
	} fds[SERVER_MAX_LISTENERS];
	unsigned n;
} sdl;

/* A listening TCP socket? Logs why not. */
static bool sdlisten_usable(int fd)
{
	int type = 0, acc = 0;
	socklen_t len = sizeof(type);

	if (getsockopt(fd, SOL_SOCKET, SO_TYPE, &type, &len) < 0 || type != SOCK_STREAM) {
		log_warn("server.socket_activation_skipped", "fd=%d msg=\"not a stream socket\"", fd);
		return false;
	}
	len = sizeof(acc);
	if (getsockopt(fd, SOL_SOCKET, SO_ACCEPTCONN, &acc, &len) < 0 || !acc) {
		log_warn("server.socket_activation_skipped", "fd=%d msg=\"not listening\"", fd);
		return false;
	}
	return true;
}

int sdlisten_take(void)
{
	const char *pid_s = getenv("LISTEN_PID"), *fds_s = getenv("LISTEN_FDS");
	char *end;
	long pid, n;

	if (!pid_s || !fds_s)
		return 0;
	pid = strtol(pid_s, &end, 10);
	if (*end || pid != (long)getpid())
		return 0;	/* meant for another process (a wrapper, say) */
	n = strtol(fds_s, &end, 10);
	/* Read once: children (there are none) and a re-exec must not take them again. */
	unsetenv("LISTEN_PID");
	unsetenv("LISTEN_FDS");
	unsetenv("LISTEN_FDNAMES");
	if (*end || n <= 0)
		return 0;
	if (n > SERVER_MAX_LISTENERS) {
		log_warn("server.socket_activation", "fds=%ld max=%d msg=\"only the first %d are "
			 "used\"", n, SERVER_MAX_LISTENERS, SERVER_MAX_LISTENERS);
		n = SERVER_MAX_LISTENERS;
	}
	for (int fd = SDLISTEN_FD_START; fd < SDLISTEN_FD_START + n; fd++) {
		int flags = fcntl(fd, F_GETFL);

		if (flags < 0)
			continue;
		/* Like our own listeners: non-blocking, not inherited by anything we run. */
		fcntl(fd, F_SETFL, flags | O_NONBLOCK);
		fcntl(fd, F_SETFD, FD_CLOEXEC);
		if (!sdlisten_usable(fd)) {
			close(fd);
			continue;
		}
		sdl.fds[sdl.n].fd = fd;
		sdl.fds[sdl.n].addr_len = sizeof(sdl.fds[sdl.n].addr);
		if (getsockname(fd, (struct sockaddr *)&sdl.fds[sdl.n].addr,
				&sdl.fds[sdl.n].addr_len) < 0) {
			close(fd);
			continue;
		}
		sdl.n++;
	}
	log_info("server.socket_activation", "fds=%ld usable=%u", n, sdl.n);
	return (int)sdl.n;
}

int sdlisten_claim(const struct sockaddr *addr)
{
	for (unsigned i = 0; i < sdl.n; i++) {
		if (sdl.fds[i].claimed ||
		    !config_addr_equal((const struct sockaddr *)&sdl.fds[i].addr, addr))
			continue;
		sdl.fds[i].claimed = true;
		return sdl.fds[i].fd;
	}
	return -ENOENT;
}

void sdlisten_release_unclaimed(void)
{
	for (unsigned i = 0; i < sdl.n; i++) {
		if (sdl.fds[i].claimed)
			continue;
		log_warn("server.socket_activation_unused", "fd=%d msg=\"no listen key has this "
			 "socket's address; closed (the socket unit and the config disagree)\"",
			 sdl.fds[i].fd);
		close(sdl.fds[i].fd);
		sdl.fds[i].claimed = true;
	}
}
