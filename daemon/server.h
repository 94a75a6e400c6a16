/* SPDX-License-Identifier: MIT */
/*
 * Process-wide state shared (read-mostly) by the workers: configuration,
 * listeners, TLS contexts, the SASL context, the storage queue and the
 * session directory.
 */
#ifndef STANZAD_SERVER_H
#define STANZAD_SERVER_H

#include <pthread.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <time.h>

#include "config.h"

struct tls_server;
struct sasl_server;
struct storage_queue;
struct sessdir;
struct worker;
struct http_server;
struct muc_service;
struct s2s_server;

enum listener_kind {
	LISTENER_C2S = 1,	/* plain TCP, STARTTLS offered */
	LISTENER_C2S_TLS,	/* Direct TLS (XEP-0368) */
	LISTENER_HTTP,		/* HTTP: upload, WebSocket, host-meta (http.c) */
	LISTENER_HTTPS,		/* the same over TLS */
	LISTENER_S2S,		/* server-to-server, STARTTLS (s2s_in.c) */
	LISTENER_S2S_TLS,	/* server-to-server, Direct TLS (XEP-0368) */
	LISTENER_COMPONENT,	/* external components, XEP-0114 (component.c) */
	LISTENER_CONTROL,	/* the control socket, a Unix socket (control.c) */
};

#define SERVER_MAX_LISTENERS 57	/* c2s, c2s TLS, HTTP, HTTPS, s2s, s2s TLS, component: 8 each;
				 * the control socket */
#define SERVER_MAX_WORKERS 64	/* event-loop threads (the workers key's ceiling) */

/*
 * A listening address. The c2s ones are served by every worker: each has
 * its own socket in one SO_REUSEPORT group (worker_fd[k]; worker_fd[0] ==
 * fd), and the kernel, or the steering program (bpf_steer.c), picks the
 * worker of each new connection. Every other kind is served by worker 0
 * alone (worker_fd[k] == -1 for k > 0).
 */
struct listener {
	int fd;
	enum listener_kind kind;
	char addr[80];		/* as configured, for logs */
	int worker_fd[SERVER_MAX_WORKERS];
};

struct server {
	struct config *cfg;
	struct listener listeners[SERVER_MAX_LISTENERS];
	unsigned nlisteners;

	struct tls_server *tls_starttls;	/* no ALPN requirement */
	struct tls_server *tls_direct;		/* ALPN xmpp-client */
	unsigned ktls_mask;			/* KTLS_BIT suites the kernel takes */
	char ktls_reason[128];			/* why some or all are missing */
	struct sasl_server *sasl;
	struct storage_queue *store;
	/*
	 * Session directories, one per worker (worker.h: w->sessions): an
	 * account's sessions are in its home worker's (worker_home), which
	 * alone reads and writes it.
	 */
	struct sessdir *sessdirs[SERVER_MAX_WORKERS];
	struct http_server *http;		/* HTTP listeners' shared state (http.c) */
	struct muc_service *muc;		/* XEP-0045 rooms (muc.c), NULL when off */
	struct s2s_server *s2s;			/* federation and components (s2s.c) */

	/* Key for decoy SCRAM parameters of unknown users. */
	uint8_t decoy_secret[32];

	struct worker *workers;
	unsigned nworkers;
	/* Open connections of all workers: max_connections holds for the process. */
	atomic_uint conns_total;
	/* Stop the world (mailbox.c): every worker meets here twice per reload. */
	pthread_barrier_t park_in, park_out;
	time_t started;				/* wall clock at startup (status, metrics) */
	atomic_bool shutting_down;	/* set by worker 0, read by every worker */
};

#endif
