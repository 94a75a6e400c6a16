/* SPDX-License-Identifier: MIT */
/*
 * The control socket: how stanzactl talks to the running daemon.
 *
 * A Unix stream socket, STATE_DIR/control unless control_socket says
 * otherwise. Access control is the file's: mode 0600 (the daemon's user
 * only; root passes anyway), or 0660 with group control_group. The
 * listening socket is served by worker 0's event loop like any listener
 * (a connection of kind CONN_CONTROL), because the answers are about
 * state the loop owns (sessions, connections) and must be read there;
 * storage questions go through the storage thread like everything else.
 *
 * Protocol: the client sends one request line, the daemon answers with
 * one JSON object on one line and closes the connection.
 *
 *   request   = command [" " argument] "\n"         (at most 1 KiB)
 *   command   = "status" | "sessions list" | "sessions kick" | "users list"
 *             | "roster show" | "queues" | "certs show" | "certs reload"
 *             | "paths" | "guard" | "provisioning refresh"
 *   answer    = {"ok":true,"result":{...}} | {"ok":false,"error":"why"}
 *
 * So `echo status | socat - UNIX-CONNECT:/var/lib/stanzad/control` works
 * as well as stanzactl does. The result members of each command are
 * listed with its handler in control.c and in the README. Lists stop at
 * CONTROL_MAX_ITEMS entries ("truncated": true, with the full count).
 * Every request is logged (control.request, with the peer's uid).
 */
#ifndef STANZAD_CONTROL_H
#define STANZAD_CONTROL_H

#include <stddef.h>

struct config;
struct conn;
struct server;
struct worker;

#define CONTROL_SOCKET_NAME	"control"	/* in the state directory */
#define CONTROL_MAX_REQUEST	1024		/* bytes of a request line */
#define CONTROL_TIMEOUT_MS	10000		/* to send the request line */
#define CONTROL_ANSWER_MS	30000		/* to answer it (a busy store) and have it read */
#define CONTROL_MAX_ITEMS	10000		/* entries in one list answer */

/*
 * The socket path for this configuration into buf (size >= 108), or NULL
 * when control_socket = off.
 */
const char *control_socket_path(const struct config *cfg, char *buf, size_t size);

/*
 * Creates the socket (replacing a stale one left by a crash; refusing
 * when another daemon answers on it) and adds it to srv's listeners.
 * Prints one line to stderr and returns -errno on failure.
 */
int control_open(struct server *srv);
/* Removes the socket file (at exit), unless it is another daemon's by now. */
void control_close(struct server *srv);
/*
 * A shutdown (or a hand-over) began: stop taking requests and remove the
 * socket file, so a successor can make its own.
 */
void control_shutdown(struct worker *w);

/* ---- Connection hooks (worker.c, conn.c) ---- */

/* A client connected to the control socket. */
void control_accepted(struct conn *c);
/* Bytes from it. */
void control_input(struct conn *c, const char *data, size_t len);
/* Its deadline fired: it sent no request in time (or the answer took too long). */
void control_deadline(struct conn *c);
/* Its output queue drained: queue more of the answer, or close. */
void control_output_drained(struct conn *c);
/* Frees the request state (the worker's conn_free). */
void control_conn_free(struct conn *c);

/* Worker 0 runs a once-a-second timer for log summaries (log_tick). */
void control_worker_start(struct worker *w);
void control_worker_stop(struct worker *w);

#endif
