/* SPDX-License-Identifier: MIT */
/*
 * The HTTP(S) listener: HTTP/1.1 on the same io_uring loop as XMPP,
 * parsed by the nodejs http-parser library (Debian's libhttp-parser).
 *
 * Routes (one table in http.c; one line per feature):
 *   /xmpp-websocket              RFC 7395 upgrade (websocket.c)
 *   /.well-known/host-meta       XEP-0156 discovery, XRD
 *   /.well-known/host-meta.json  the same in JSON
 *   /upload/TOKEN/NAME           XEP-0363 PUT, GET, HEAD (upload.c)
 *   /metrics                     Prometheus text (metrics.c)
 *   /console/...                 the hub's web console (console.c)
 *
 * A connection speaks HTTP until a WebSocket upgrade turns it into a c2s
 * stream. Requests are handled one at a time: pipelined requests wait
 * (bounded) until the response before them is out. Keep-alive follows
 * HTTP/1.1 (Connection: close, HTTP/1.0 without keep-alive end it).
 *
 * Limits and deadlines, each answered with a status and a log line:
 *   - request line and headers together at most HTTP_MAX_HEADER_BYTES
 *     (431), the request target at most HTTP_MAX_URL (414);
 *   - a body only where the route takes one, up to the route's limit
 *     (413; 411 without Content-Length where a length is needed);
 *   - headers must arrive within http_request_timeout of the request's
 *     first byte (408: slow senders cannot hold a connection with a
 *     trickle), silence inside a body or while a response waits for the
 *     peer to read is bounded by http_idle_timeout, as is an idle
 *     keep-alive connection;
 *   - unknown paths 404, known paths with other methods 405 with Allow.
 * Every request ends with one log line: http.request with method, path
 * (secret parts redacted), status, bytes and duration.
 */
#ifndef STANZAD_HTTP_H
#define STANZAD_HTTP_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct conn;
struct server;
struct worker;
struct upload_state;

#define HTTP_MAX_HEADER_BYTES	8192	/* request line + headers */
#define HTTP_MAX_URL		2048	/* request target */
#define HTTP_MAX_VALUE		512	/* a header value the server keeps */
#define HTTP_MAX_COOKIE		1024	/* the Cookie header kept; longer ones are dropped */
#define HTTP_MAX_HELD		(64 * 1024)	/* pipelined bytes held behind a response */
#define HTTP_FILE_CHUNK		(64 * 1024)	/* file bytes queued per output drain */

/* Process-wide state of the HTTP listeners (read-mostly; see upload.h). */
struct http_server {
	const struct config *cfg;
	char base_url[256];		/* public http(s)://host[:port], no trailing '/' */
	struct upload_state *upload;	/* XEP-0363 slots and files (upload.c), or NULL */
};

/*
 * Creates the shared state once the listeners are open: derives the base
 * URL (upload_url_base, else the first HTTPS listener, else the first HTTP
 * one; a wildcard address becomes the XMPP domain) and sets up the upload
 * service. NULL with errno set (and a line on stderr).
 */
struct http_server *http_server_new(struct server *srv);
void http_server_free(struct http_server *hs);

/* Whether any HTTP(S) listener is configured (services that need one). */
bool http_configured(const struct config *cfg);

/* ---- One request ---- */

enum http_route_body {
	HTTP_BODY_NONE = 0,	/* a body is refused with 413 */
	HTTP_BODY_HANDLER,	/* the handler takes it (on_body) */
};

/*
 * The request being handled. Handlers answer with http_respond*() right
 * away or later (after a storage round trip: keep c->slot/c->gen and find
 * the connection again with worker_conn()); input waits meanwhile.
 */
struct http_request {
	struct conn *c;
	unsigned method;		/* enum http_method (http_parser.h) */
	char url[HTTP_MAX_URL + 1];	/* request target as sent */
	size_t url_len;
	const char *path;		/* the target's path, NUL-terminated (in url) */
	char content_type[HTTP_MAX_VALUE];
	char host[256];
	char upgrade[64];
	char connection[128];
	char ws_key[64];
	char ws_version[16];
	char ws_protocol[HTTP_MAX_VALUE];
	char expect[32];		/* "100-continue": the peer waits before its body */
	char cookie[HTTP_MAX_COOKIE];	/* Cookie (the console's session); "" when longer */
	uint64_t content_length;
	bool has_length;		/* a Content-Length header was given */
	bool chunked;			/* Transfer-Encoding: chunked */
	const char *log_path;		/* what the log shows for the path (static) */

	/*
	 * Set by a handler that takes the body: on_body gets it piece by
	 * piece and returns 0 or an HTTP status to fail with; on_complete
	 * runs when the body is in; on_abort when the connection goes away
	 * before the response (release what ctx holds).
	 */
	int (*on_body)(struct http_request *rq, const char *data, size_t len);
	void (*on_complete)(struct http_request *rq);
	void (*on_abort)(struct http_request *rq);
	void *ctx;
	bool deferred;			/* the answer comes later (http_defer) */
};

/* A route: exact path, or every path under it when it ends with '/'. */
struct http_route {
	const char *path;
	unsigned methods;		/* HTTP_M_* bits */
	bool (*enabled)(const struct config *cfg);
	/* Headers are in (body not yet read). */
	void (*handle)(struct http_request *rq);
};

#define HTTP_M_GET	(1u << 0)
#define HTTP_M_HEAD	(1u << 1)
#define HTTP_M_PUT	(1u << 2)
#define HTTP_M_OPTIONS	(1u << 3)
#define HTTP_M_POST	(1u << 4)

/*
 * Answers the current request. `extra` holds additional header lines,
 * each ending in "\r\n" (may be NULL). A HEAD request gets the headers
 * only. Statuses >= 400 on a request whose body was not read end the
 * connection after the response.
 */
void http_respond(struct http_request *rq, int status, const char *type, const void *body,
		  size_t len, const char *extra);
/* A short text/plain error page saying why; `why` may be NULL. */
void http_respond_error(struct http_request *rq, int status, const char *why);
/*
 * Answers with the contents of an open file (size bytes from offset 0),
 * streamed as the peer reads; the fd is owned (closed) from here on.
 */
void http_respond_file(struct http_request *rq, int status, const char *type, int fd,
		       uint64_t size, const char *extra);

/*
 * The handler answers later (a storage round trip): the request waits,
 * bounded by http_idle_timeout, and input is held meanwhile.
 */
static inline void http_defer(struct http_request *rq)
{
	rq->deferred = true;
}

/*
 * Answers with an event stream (server-sent events): 200 with `type`
 * and no Content-Length; the connection ends with the stream. The
 * handler keeps c->slot/c->gen and sends events with http_event_send();
 * rq->on_abort runs when the connection goes away. The peer must be sent
 * something at least every http_idle_timeout (a comment line will do),
 * or the connection is ended as idle.
 */
void http_respond_events(struct http_request *rq, const char *type, const char *extra);
/*
 * Queues bytes of an event stream started on c. -ENOTCONN when c carries
 * no event stream (any more), -ENOBUFS when the peer has HTTP_MAX_HELD
 * bytes unread already (the stream is ended: a reader that does not read
 * must not grow our memory).
 */
int http_event_send(struct conn *c, const char *data, size_t len);

/* Whether the request came in over TLS (an HTTPS listener). */
bool http_request_tls(const struct http_request *rq);

/* The request of connection c, if it is still waiting for its answer. */
struct http_request *http_pending_request(struct conn *c);

/* The reason phrase of a status ("Not Found"). */
const char *http_reason(int status);

/* Decodes %XX in place; -EINVAL for a bad escape or an encoded NUL. Returns the new length. */
int http_percent_decode(char *s, size_t len);

/* ---- Connection hooks (worker.c, conn.c) ---- */

/* A connection was accepted on an HTTP (tls false) or HTTPS listener. */
void http_accepted(struct conn *c, bool tls);
/* Plaintext from the peer (after TLS). */
void http_input(struct conn *c, const char *data, size_t len);
/* The connection's deadline fired (it is not closing). */
void http_deadline(struct conn *c);
/* The connection closes (conn_close/conn_abort): abort what is in progress. */
void http_closing(struct conn *c);
/* Its output queue drained: stream more of a file, or finish the response. */
void http_output_drained(struct conn *c);
/* Frees HTTP and WebSocket state (from the worker's conn_free). */
void http_conn_free(struct conn *c);

/* Worker start and stop: the periodic upload cleanup runs on worker 0. */
void http_worker_start(struct worker *w);
void http_worker_stop(struct worker *w);

#endif
