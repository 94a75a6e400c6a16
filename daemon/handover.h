/* SPDX-License-Identifier: MIT */
/*
 * Restart without dropping connections: the listening sockets are handed
 * from the running daemon to its successor through a Unix socket
 * (SCM_RIGHTS), so the kernel keeps queueing connections on them all
 * along and no client ever sees "connection refused".
 *
 * The running daemon listens on handover_socket (STATE_DIR/handover.sock
 * by default). A new daemon started on the same configuration:
 *
 *   1. loads its configuration, opens the store and the certificate (what
 *      can fail is checked while the old daemon still serves);
 *   2. connects to the hand-over socket; the old daemon checks that the
 *      peer runs as its own user (or root), sends its listening sockets,
 *      stops accepting, unlinks the socket path and shuts down as on
 *      SIGTERM (system-shutdown to every stream, storage flushed);
 *   3. waits until the old daemon has exited (the hand-over connection
 *      reaches end of file), at most HANDOVER_WAIT_MS, so that it reads
 *      the state (rooms, nodes) only after the last write of its
 *      predecessor;
 *   4. uses the sockets it received for the listeners it is configured
 *      with (matched by address and kind; the others it binds as usual,
 *      the received ones it has no use for it closes) and starts.
 *
 * Connections that arrive meanwhile wait in the listen backlog and are
 * accepted by the new daemon. One that the old daemon's accept took in
 * the instant before it stopped is sent over too and adopted by the new
 * daemon as if it had accepted it.
 */
#ifndef STANZAD_HANDOVER_H
#define STANZAD_HANDOVER_H

#include <stdbool.h>
#include <stddef.h>
#include <sys/socket.h>

#include "server.h"

#define HANDOVER_SOCKET_NAME	"handover.sock"	/* in the state directory */
#define HANDOVER_ANSWER_MS	5000	/* the old daemon's answer with its sockets */
#define HANDOVER_WAIT_MS	30000	/* the old daemon's exit */
#define HANDOVER_MAX_LATE	4096	/* connections the old daemon may pass on */

struct worker;
struct config;

/* The socket path for cfg into buf, or NULL when handover_socket = off. */
const char *handover_socket_path(const struct config *cfg, char *buf, size_t size);

/*
 * The successor's side, before its listeners open: asks a daemon running
 * on the same hand-over socket for its listening sockets and waits for
 * its exit (steps 2-3). Returns how many sockets it received (0 when no
 * daemon answered: a missing or stale socket). Logs what happens.
 */
int handover_take(const struct config *cfg);

/*
 * A received listening socket bound to addr for a listener of this kind,
 * or -ENOENT. Each is claimed at most once.
 */
int handover_claim(const struct sockaddr *addr, socklen_t len, enum listener_kind kind);

/* Closes the received sockets nobody claimed (logged). */
void handover_release_unclaimed(void);

/*
 * After worker_init: the connections the predecessor passed on are
 * adopted, then this daemon listens on the hand-over socket itself
 * (watched by w's loop). 0 or -errno (logged; the daemon runs without
 * hand-over).
 */
int handover_start(struct worker *w);

/* The hand-over socket is readable (worker_watch): a successor is here. */
void handover_accept(struct worker *w);

/*
 * A connection the loop accepted after the listeners were handed over:
 * passes it to the successor. True when it did (the fd is closed here).
 */
bool handover_forward(struct worker *w, unsigned listener, int fd);

/*
 * At exit, after the storage thread stopped: closes the hand-over
 * connection (the successor goes on) and removes our socket path.
 */
void handover_finish(void);

#endif
