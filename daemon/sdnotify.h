/* SPDX-License-Identifier: MIT */
/*
 * The service manager's readiness and watchdog protocol (sd_notify(3)),
 * spoken by hand: one datagram per state change to the AF_UNIX socket
 * named by $NOTIFY_SOCKET.
 *
 *   READY=1     the listeners accept and the event loop is about to run
 *   STOPPING=1  a graceful shutdown began (SIGTERM, SIGINT)
 *   WATCHDOG=1  every half $WATCHDOG_USEC, from the event loop's timer
 *               wheel, so a wedged loop stops the pings and systemd
 *               restarts the service
 *
 * Why not libsystemd: stanzad runs on embedded systems without systemd
 * (OpenWrt, Buildroot, Alpine) where libsystemd is not there, and the
 * protocol is a documented, stable datagram format of a few lines. When
 * $NOTIFY_SOCKET is unset (a terminal, the tests, another init) every
 * function here does nothing.
 */
#ifndef STANZAD_SDNOTIFY_H
#define STANZAD_SDNOTIFY_H

#include <stdint.h>
#include <sys/socket.h>
#include <sys/types.h>
#include <sys/un.h>

struct loop;

/* Below this the one-second timer wheel cannot keep the pings in time. */
#define SDNOTIFY_WATCHDOG_MIN_USEC	4000000ull

/*
 * Reads $NOTIFY_SOCKET, $WATCHDOG_USEC and $WATCHDOG_PID, then removes
 * them from the environment (no child inherits them), and opens the
 * notification socket. Call once, before any thread starts (it changes
 * the environment). Absent variables are not an error; malformed ones are
 * logged and ignored. 0, or -errno when the socket cannot be opened (the
 * daemon goes on without notifications).
 */
int sdnotify_init(void);

/*
 * Sends READY=1 with a human-readable STATUS= and, when systemd asked for
 * a watchdog, arms its timer on `l` (the signal-handling worker's loop).
 */
void sdnotify_ready(struct loop *l, const char *status);

/* Sends STOPPING=1; later calls do nothing. */
void sdnotify_stopping(void);

/* Cancels the watchdog timer and closes the socket; before loop_free(). */
void sdnotify_close(void);

/* ---- Exposed for the unit tests ---- */

/*
 * The socket address for a $NOTIFY_SOCKET value: a path, or "@name" for
 * the abstract namespace. 0, or -EINVAL (empty, too long, not a path).
 */
int sdnotify_addr(const char *value, struct sockaddr_un *sa, socklen_t *len);

/*
 * The watchdog ping interval in milliseconds for the given $WATCHDOG_USEC
 * and $WATCHDOG_PID values (either may be NULL), or 0 when there is no
 * watchdog for process `self`: unset, not a number, zero, or meant for
 * another process. Half the timeout less one timer tick (a timer fires
 * up to a tick late), never less than one tick.
 */
uint64_t sdnotify_watchdog_interval_ms(const char *usec, const char *pid, pid_t self);

/* Sends one message (newline-separated assignments). 0 or -errno. */
int sdnotify_send(const char *msg);

#endif
