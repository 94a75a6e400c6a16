/* SPDX-License-Identifier: MIT */
/*
 * HTTP/1.1 connections on the HTTP(S) listeners (see http.h).
 *
 * Parsing is http-parser's (callbacks, no buffering of its own): the
 * request line and the few headers the routes use are copied into the
 * connection's struct http_request, everything else is only counted
 * against HTTP_MAX_HEADER_BYTES. The parser is paused at the end of each
 * request, so one execute call handles at most one request; bytes after
 * it (pipelining) are held until the response is out, then parsed.
 *
 * A request goes through phases that decide its deadline:
 *   IDLE      keep-alive, no byte of a request yet   http_idle_timeout
 *   HEADERS   request line and headers arriving      http_request_timeout
 *                                                    from the first byte
 *   BODY      body arriving                          http_idle_timeout of silence
 *   RESPONSE  answer pending (storage) or streaming  http_idle_timeout of silence
 * The connection's one timer is armed lazily at phase changes; when it
 * fires it measures against the phase start or the last activity.
 *
 * Files are streamed HTTP_FILE_CHUNK at a time as the output queue drains
 * (pread on the loop thread: the page cache answers it in microseconds;
 * the connection's output limit is never approached).
 */
#include <errno.h>
#include <http_parser.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <time.h>
#include <unistd.h>

#include "config.h"
#include "conn.h"
#include "http.h"
#include "log.h"
#include "console.h"
#include "metrics.h"
#include "server.h"
#include "upload.h"
#include "websocket.h"
#include "worker.h"

enum http_phase {
	HTTP_PHASE_IDLE = 0,
	HTTP_PHASE_HEADERS,
	HTTP_PHASE_BODY,
	HTTP_PHASE_RESPONSE,
};

enum http_resp {
	HTTP_RESP_NONE = 0,	/* nothing sent yet */
	HTTP_RESP_STREAMING,	/* headers sent, a file is being streamed */
	HTTP_RESP_EVENTS,	/* headers sent, an event stream until the end */
	HTTP_RESP_DONE,		/* the whole response is queued */
};

struct http_conn {
	http_parser parser;
	struct http_request rq;
	const struct http_route *route;
	uint8_t phase;			/* enum http_phase */
	uint8_t resp;			/* enum http_resp */
	bool tls;			/* accepted on an HTTPS listener */
	bool msg_done;			/* the parser has the whole request */
	bool keep_alive;
	bool close_after;		/* end the connection after this response */
	bool in_exec;			/* inside http_parser_execute */
	bool discard_body;		/* answered already: the body is skipped */
	bool upgrade_ok;		/* the WebSocket route took the upgrade */
	bool hdr_in_value;		/* the last header callback was a value */
	bool headers_done;		/* rq.method and the headers are known */
	bool hdr_name_long;
	uint8_t hdr_name_len;
	char hdr_name[32];
	char *hdr_dst;			/* where the current value goes, or NULL */
	size_t hdr_dst_size;
	size_t header_bytes;
	int fail_status;		/* a callback failed the request with this */
	const char *fail_why;
	int status;
	uint64_t resp_bytes;
	uint64_t req_start_ms;
	uint64_t last_ms;		/* last input or drained output */
	int file_fd;
	uint64_t file_off, file_left;
	char ws_accept[WS_ACCEPT_LEN + 1];
	struct strbuf held;		/* pipelined input behind a response */
};

static int http_on_message_begin(http_parser *p);
static int http_on_url(http_parser *p, const char *at, size_t len);
static int http_on_header_field(http_parser *p, const char *at, size_t len);
static int http_on_header_value(http_parser *p, const char *at, size_t len);
static int http_on_headers_complete(http_parser *p);
static int http_on_body(http_parser *p, const char *at, size_t len);
static int http_on_message_complete(http_parser *p);

static const http_parser_settings http_settings = {
	.on_message_begin = http_on_message_begin,
	.on_url = http_on_url,
	.on_header_field = http_on_header_field,
	.on_header_value = http_on_header_value,
	.on_headers_complete = http_on_headers_complete,
	.on_body = http_on_body,
	.on_message_complete = http_on_message_complete,
};

static const struct config *http_cfg(const struct conn *c)
{
	return c->w->srv->cfg;
}

static uint64_t http_now(const struct conn *c)
{
	return loop_now_ms(c->w->loop);
}

/* ---- Routes ---- */

static void http_ws_handle(struct http_request *rq);
static void http_hostmeta_xrd(struct http_request *rq);
static void http_hostmeta_json(struct http_request *rq);

static bool http_ws_enabled(const struct config *cfg)
{
	return cfg->websocket;
}

/* Every path the listener serves; one line per feature. */
static const struct http_route http_routes[] = {
	{ WS_PATH, HTTP_M_GET, http_ws_enabled, http_ws_handle },
	{ "/.well-known/host-meta", HTTP_M_GET | HTTP_M_HEAD | HTTP_M_OPTIONS, NULL,
	  http_hostmeta_xrd },
	{ "/.well-known/host-meta.json", HTTP_M_GET | HTTP_M_HEAD | HTTP_M_OPTIONS, NULL,
	  http_hostmeta_json },
	{ UPLOAD_PATH_PREFIX, HTTP_M_GET | HTTP_M_HEAD | HTTP_M_PUT | HTTP_M_OPTIONS,
	  upload_enabled, upload_http },
	{ "/metrics", HTTP_M_GET | HTTP_M_HEAD, metrics_enabled, metrics_http },	/* metrics.c */
	{ CONSOLE_PATH, HTTP_M_GET | HTTP_M_HEAD | HTTP_M_POST, console_enabled, console_http },
	{ NULL, 0, NULL, NULL },
};

static const struct http_route *http_route_find(const struct config *cfg, const char *path)
{
	for (const struct http_route *r = http_routes; r->path; r++) {
		size_t n = strlen(r->path);
		bool match = r->path[n - 1] == '/' ? strncmp(path, r->path, n) == 0
						 : strcmp(path, r->path) == 0;

		if (match && (!r->enabled || r->enabled(cfg)))
			return r;
	}
	return NULL;
}

static unsigned http_method_bit(unsigned method)
{
	switch (method) {
	case HTTP_GET:
		return HTTP_M_GET;
	case HTTP_HEAD:
		return HTTP_M_HEAD;
	case HTTP_PUT:
		return HTTP_M_PUT;
	case HTTP_OPTIONS:
		return HTTP_M_OPTIONS;
	case HTTP_POST:
		return HTTP_M_POST;
	default:
		return 0;
	}
}

/* "Allow: GET, HEAD\r\n" for a route's methods. */
static void http_allow_header(char *out, size_t size, unsigned methods)
{
	static const struct {
		unsigned bit;
		const char *name;
	} names[] = {
		{ HTTP_M_GET, "GET" }, { HTTP_M_HEAD, "HEAD" }, { HTTP_M_PUT, "PUT" },
		{ HTTP_M_POST, "POST" }, { HTTP_M_OPTIONS, "OPTIONS" },
	};
	size_t n = (size_t)snprintf(out, size, "Allow:");
	bool first = true;

	for (size_t i = 0; i < sizeof(names) / sizeof(names[0]) && n < size; i++) {
		if (!(methods & names[i].bit))
			continue;
		n += (size_t)snprintf(out + n, size - n, "%s %s", first ? "" : ",", names[i].name);
		first = false;
	}
	if (n < size)
		snprintf(out + n, size - n, "\r\n");
}

/* ---- Small helpers ---- */

const char *http_reason(int status)
{
	switch (status) {
	case 101: return "Switching Protocols";
	case 200: return "OK";
	case 201: return "Created";
	case 204: return "No Content";
	case 400: return "Bad Request";
	case 401: return "Unauthorized";
	case 403: return "Forbidden";
	case 404: return "Not Found";
	case 405: return "Method Not Allowed";
	case 408: return "Request Timeout";
	case 409: return "Conflict";
	case 411: return "Length Required";
	case 413: return "Content Too Large";
	case 414: return "URI Too Long";
	case 415: return "Unsupported Media Type";
	case 426: return "Upgrade Required";
	case 431: return "Request Header Fields Too Large";
	case 500: return "Internal Server Error";
	case 501: return "Not Implemented";
	case 503: return "Service Unavailable";
	case 507: return "Insufficient Storage";
	default: return status < 400 ? "OK" : "Error";
	}
}

static int http_hex(char ch)
{
	if (ch >= '0' && ch <= '9')
		return ch - '0';
	if (ch >= 'a' && ch <= 'f')
		return ch - 'a' + 10;
	if (ch >= 'A' && ch <= 'F')
		return ch - 'A' + 10;
	return -1;
}

int http_percent_decode(char *s, size_t len)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		int hi, lo;

		if (s[i] != '%') {
			s[o++] = s[i];
			continue;
		}
		if (i + 2 >= len)
			return -EINVAL;
		hi = http_hex(s[i + 1]);
		lo = http_hex(s[i + 2]);
		/* An encoded NUL would cut the name short of what the peer meant. */
		if (hi < 0 || lo < 0 || (hi == 0 && lo == 0))
			return -EINVAL;
		s[o++] = (char)(hi << 4 | lo);
		i += 2;
	}
	s[o] = '\0';
	return (int)o;
}

/* True when a body was announced and is not read yet. */
static bool http_body_unread(const struct http_conn *h)
{
	return !h->msg_done && ((h->rq.has_length && h->rq.content_length) || h->rq.chunked);
}

/* Arms the deadline for the phase just entered. */
static void http_set_phase(struct conn *c, enum http_phase phase)
{
	struct http_conn *h = c->http;
	const struct config *cfg = http_cfg(c);

	h->phase = (uint8_t)phase;
	conn_set_deadline(c, (uint64_t)(phase == HTTP_PHASE_HEADERS ? cfg->http_request_timeout
								    : cfg->http_idle_timeout) * 1000);
}

/* ---- Responses ---- */

static void http_log_request(struct conn *c)
{
	struct http_conn *h = c->http;
	struct http_request *rq = &h->rq;
	char path[160];
	const char *m = h->headers_done ? http_method_str((enum http_method)rq->method) : "-";

	if (!rq->log_path)
		log_sanitize(path, sizeof(path), rq->path ? rq->path : rq->url,
			     strlen(rq->path ? rq->path : rq->url));
	log_info("http.request", "conn=%llu method=%s path=%s status=%d bytes=%" PRIu64 " ms=%" PRIu64,
		 (unsigned long long)c->id, m, rq->log_path ? rq->log_path : path, h->status,
		 h->resp_bytes, http_now(c) - h->req_start_ms);
}

/* Status line and headers. len is the Content-Length (none for 101/204, or HTTP_NO_LENGTH). */
#define HTTP_NO_LENGTH	UINT64_MAX

static void http_send_head(struct http_request *rq, int status, const char *type, uint64_t len,
			   const char *extra)
{
	struct conn *c = rq->c;
	struct http_conn *h = c->http;
	char buf[HTTP_MAX_VALUE * 2 + 1024], date[64];
	time_t now = time(NULL);
	struct tm tm;
	int n;

	/* An unread body or an upgrade request leaves the byte stream undefined. */
	if (http_body_unread(h) || h->parser.upgrade || c->w->draining) {
		h->close_after = true;
		h->discard_body = true;
	}
	if (!h->keep_alive)
		h->close_after = true;
	gmtime_r(&now, &tm);
	strftime(date, sizeof(date), "%a, %d %b %Y %H:%M:%S GMT", &tm);
	n = snprintf(buf, sizeof(buf), "HTTP/1.1 %d %s\r\nServer: stanzad\r\nDate: %s\r\n", status,
		     http_reason(status), date);
	if (status != 204 && status != 101 && len != HTTP_NO_LENGTH)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "Content-Length: %" PRIu64 "\r\n", len);
	if (type)
		n += snprintf(buf + n, sizeof(buf) - (size_t)n, "Content-Type: %s\r\n", type);
	n += snprintf(buf + n, sizeof(buf) - (size_t)n, "%sConnection: %s\r\n\r\n", extra ? extra : "",
		      h->close_after ? "close" : "keep-alive");
	if ((size_t)n >= sizeof(buf)) {
		/* Only a bug could make headers this long: fail closed. */
		log_error("http.headers_too_long", "conn=%llu status=%d", (unsigned long long)c->id, status);
		conn_abort(c, CONN_CLOSE_ERROR);
		return;
	}
	h->status = status;
	conn_send(c, buf, (size_t)n);
}

/* The response is queued: log it, then close or go on with the next request. */
static void http_try_next(struct conn *c);

static void http_response_done(struct conn *c)
{
	struct http_conn *h = c->http;

	h->resp = HTTP_RESP_DONE;
	http_log_request(c);
	if (h->close_after) {
		conn_close(c, h->status >= 400 ? CONN_CLOSE_ERROR : CONN_CLOSE_PEER);
		return;
	}
	if (!h->in_exec)
		http_try_next(c);
}

void http_respond(struct http_request *rq, int status, const char *type, const void *body,
		  size_t len, const char *extra)
{
	struct conn *c = rq->c;
	struct http_conn *h = c->http;

	if (!h || h->resp != HTTP_RESP_NONE || c->closing)
		return;
	http_send_head(rq, status, type, len, extra);
	if (c->closing)
		return;
	if (len && rq->method != HTTP_HEAD)
		conn_send(c, body, len);
	h->resp_bytes = rq->method == HTTP_HEAD ? 0 : len;
	http_response_done(c);
}

/* "404 Not Found: why" as text/plain, with extra header lines. */
static void http_respond_text(struct http_request *rq, int status, const char *why,
			      const char *extra)
{
	char body[HTTP_MAX_VALUE + 64];
	int n = snprintf(body, sizeof(body), "%d %s%s%s\n", status, http_reason(status),
			 why ? ": " : "", why ? why : "");

	http_respond(rq, status, "text/plain; charset=utf-8", body,
		     (size_t)n < sizeof(body) ? (size_t)n : sizeof(body) - 1, extra);
}

void http_respond_error(struct http_request *rq, int status, const char *why)
{
	http_respond_text(rq, status, why, NULL);
}

/* Queues file bytes until the output holds a chunk's worth. */
static void http_pump(struct conn *c)
{
	struct http_conn *h = c->http;
	char buf[16384];

	while (h->file_left && c->out_bytes < HTTP_FILE_CHUNK && !c->closing) {
		size_t want = h->file_left < sizeof(buf) ? (size_t)h->file_left : sizeof(buf);
		ssize_t n = pread(h->file_fd, buf, want, (off_t)h->file_off);

		if (n <= 0) {
			/* The headers promised more: all we can do is cut the connection. */
			log_warn("http.file_read", "conn=%llu err=\"%s\"", (unsigned long long)c->id,
				 n < 0 ? strerror(errno) : "file shrank");
			conn_abort(c, CONN_CLOSE_IO);
			return;
		}
		conn_send(c, buf, (size_t)n);
		h->file_off += (uint64_t)n;
		h->file_left -= (uint64_t)n;
		h->resp_bytes += (uint64_t)n;
	}
	if (!h->file_left && h->resp == HTTP_RESP_STREAMING) {
		close(h->file_fd);
		h->file_fd = -1;
		http_response_done(c);
	}
}

void http_respond_file(struct http_request *rq, int status, const char *type, int fd,
		       uint64_t size, const char *extra)
{
	struct conn *c = rq->c;
	struct http_conn *h = c->http;

	if (!h || h->resp != HTTP_RESP_NONE || c->closing) {
		close(fd);
		return;
	}
	http_send_head(rq, status, type, size, extra);
	if (c->closing || rq->method == HTTP_HEAD || !size) {
		close(fd);
		if (!c->closing)
			http_response_done(c);
		return;
	}
	h->file_fd = fd;
	h->file_off = 0;
	h->file_left = size;
	h->resp = HTTP_RESP_STREAMING;
	http_pump(c);
}

void http_respond_events(struct http_request *rq, const char *type, const char *extra)
{
	struct conn *c = rq->c;
	struct http_conn *h = c->http;

	if (!h || h->resp != HTTP_RESP_NONE || c->closing)
		return;
	/* Without a length the stream ends with the connection. */
	h->close_after = true;
	http_send_head(rq, 200, type, HTTP_NO_LENGTH, extra);
	if (c->closing)
		return;
	if (rq->method == HTTP_HEAD) {
		http_response_done(c);
		return;
	}
	h->resp = HTTP_RESP_EVENTS;
	http_set_phase(c, HTTP_PHASE_RESPONSE);
}

int http_event_send(struct conn *c, const char *data, size_t len)
{
	struct http_conn *h = c ? c->http : NULL;

	if (!h || c->closing || h->resp != HTTP_RESP_EVENTS)
		return -ENOTCONN;
	if (c->out_bytes > HTTP_MAX_HELD) {
		log_info("http.events_slow", "conn=%llu queued=%zu", (unsigned long long)c->id,
			 (size_t)c->out_bytes);
		conn_abort(c, CONN_CLOSE_SLOW);
		return -ENOBUFS;
	}
	conn_send(c, data, len);
	h->resp_bytes += len;
	return 0;
}

bool http_request_tls(const struct http_request *rq)
{
	return rq->c->http && rq->c->http->tls;
}

struct http_request *http_pending_request(struct conn *c)
{
	if (!c || c->kind != CONN_HTTP || !c->http || c->closing || c->http->resp != HTTP_RESP_NONE)
		return NULL;
	return &c->http->rq;
}

/* ---- Parser callbacks ---- */

static struct conn *http_conn_of(http_parser *p)
{
	return p->data;
}

/* Fails the request: the status is answered after execute returns. */
static int http_fail(struct http_conn *h, int status, const char *why)
{
	h->fail_status = status;
	h->fail_why = why;
	return -1;
}

static int http_count(struct http_conn *h, size_t len)
{
	h->header_bytes += len;
	if (h->header_bytes > HTTP_MAX_HEADER_BYTES)
		return http_fail(h, 431, "the request headers exceed 8 KiB");
	return 0;
}

static int http_on_message_begin(http_parser *p)
{
	struct conn *c = http_conn_of(p);
	struct http_conn *h = c->http;

	memset(&h->rq, 0, sizeof(h->rq));
	h->rq.c = c;
	h->route = NULL;
	h->header_bytes = 0;
	h->hdr_in_value = true;	/* the first field starts a new name */
	h->hdr_dst = NULL;
	h->fail_status = 0;
	h->fail_why = NULL;
	h->status = 0;
	h->resp_bytes = 0;
	h->discard_body = false;
	h->upgrade_ok = false;
	h->headers_done = false;
	h->req_start_ms = http_now(c);
	http_set_phase(c, HTTP_PHASE_HEADERS);
	return 0;
}

static int http_on_url(http_parser *p, const char *at, size_t len)
{
	struct http_conn *h = http_conn_of(p)->http;

	if (http_count(h, len))
		return -1;
	if (h->rq.url_len + len > HTTP_MAX_URL)
		return http_fail(h, 414, "the request target exceeds 2 KiB");
	memcpy(h->rq.url + h->rq.url_len, at, len);
	h->rq.url_len += len;
	h->rq.url[h->rq.url_len] = '\0';
	return 0;
}

static int http_on_header_field(http_parser *p, const char *at, size_t len)
{
	struct http_conn *h = http_conn_of(p)->http;

	/* ": " and CRLF of each line count too. */
	if (http_count(h, len + (h->hdr_in_value ? 4 : 0)))
		return -1;
	if (h->hdr_in_value) {
		h->hdr_in_value = false;
		h->hdr_name_len = 0;
		h->hdr_name_long = false;
		h->hdr_dst = NULL;
	}
	if (h->hdr_name_len + len >= sizeof(h->hdr_name)) {
		h->hdr_name_long = true;	/* no header we keep has so long a name */
		return 0;
	}
	memcpy(h->hdr_name + h->hdr_name_len, at, len);
	h->hdr_name_len = (uint8_t)(h->hdr_name_len + len);
	h->hdr_name[h->hdr_name_len] = '\0';
	return 0;
}

/* Where the value of the header just named goes (NULL: not kept). */
static char *http_header_dst(struct http_conn *h, size_t *size)
{
	static const struct {
		const char *name;
		size_t off, size;
	} kept[] = {
#define KEEP(n, f) { n, offsetof(struct http_request, f), sizeof(((struct http_request *)0)->f) }
		KEEP("content-type", content_type),
		KEEP("host", host),
		KEEP("upgrade", upgrade),
		KEEP("connection", connection),
		KEEP("sec-websocket-key", ws_key),
		KEEP("sec-websocket-version", ws_version),
		KEEP("sec-websocket-protocol", ws_protocol),
		KEEP("expect", expect),
		KEEP("cookie", cookie),
#undef KEEP
	};

	if (h->hdr_name_long)
		return NULL;
	for (size_t i = 0; i < sizeof(kept) / sizeof(kept[0]); i++) {
		if (strcasecmp(h->hdr_name, kept[i].name) == 0) {
			*size = kept[i].size;
			return (char *)&h->rq + kept[i].off;
		}
	}
	return NULL;
}

/*
 * A kept header's value does not fit: 431, except for Cookie. Cookies are
 * the browser's (other services on the same host add theirs) and only the
 * console reads one: too many of them cost its login, not the request.
 */
static int http_value_too_long(struct http_conn *h)
{
	if (h->hdr_dst == h->rq.cookie) {
		h->rq.cookie[0] = '\0';
		h->hdr_dst = NULL;
		return 0;
	}
	return http_fail(h, 431, "a header value is too long");
}

static int http_on_header_value(http_parser *p, const char *at, size_t len)
{
	struct http_conn *h = http_conn_of(p)->http;
	size_t have;

	if (http_count(h, len))
		return -1;
	if (!h->hdr_in_value) {
		h->hdr_in_value = true;
		h->hdr_dst = http_header_dst(h, &h->hdr_dst_size);
		/* A repeated header is read as one comma-separated list. */
		if (h->hdr_dst && h->hdr_dst[0]) {
			have = strlen(h->hdr_dst);
			if (have + 2 >= h->hdr_dst_size)
				return http_value_too_long(h);
			memcpy(h->hdr_dst + have, ", ", 3);
		}
	}
	if (!h->hdr_dst)
		return 0;
	have = strlen(h->hdr_dst);
	if (have + len >= h->hdr_dst_size)
		return http_value_too_long(h);
	memcpy(h->hdr_dst + have, at, len);
	h->hdr_dst[have + len] = '\0';
	return 0;
}

/* Points rq->path at the target's path (origin or absolute form). 0 or -EINVAL. */
static int http_split_target(struct http_request *rq)
{
	struct http_parser_url u;

	if (rq->url[0] == '/') {
		char *q = strpbrk(rq->url, "?#");

		rq->path = rq->url;
		if (q)
			*q = '\0';
		return 0;
	}
	http_parser_url_init(&u);
	if (http_parser_parse_url(rq->url, rq->url_len, 0, &u) != 0 || !(u.field_set & (1 << UF_PATH)))
		return -EINVAL;
	rq->url[u.field_data[UF_PATH].off + u.field_data[UF_PATH].len] = '\0';
	rq->path = rq->url + u.field_data[UF_PATH].off;
	return 0;
}

static int http_on_headers_complete(http_parser *p)
{
	struct conn *c = http_conn_of(p);
	struct http_conn *h = c->http;
	struct http_request *rq = &h->rq;
	const struct http_route *r;
	char allow[96];

	rq->method = p->method;
	h->headers_done = true;
	rq->has_length = p->flags & F_CONTENTLENGTH;
	rq->chunked = p->flags & F_CHUNKED;
	rq->content_length = rq->has_length ? p->content_length : 0;
	h->keep_alive = http_should_keep_alive(p);
	http_set_phase(c, HTTP_PHASE_BODY);
	if (http_split_target(rq) < 0) {
		rq->path = NULL;
		http_respond_error(rq, 400, "malformed request target");
		return 0;
	}
	r = http_route_find(http_cfg(c), rq->path);
	if (!r) {
		http_respond_error(rq, 404, NULL);
		return 0;
	}
	h->route = r;
	if (!(http_method_bit(rq->method) & r->methods)) {
		http_allow_header(allow, sizeof(allow), r->methods);
		http_respond_text(rq, 405, NULL, allow);
		return 0;
	}
	/* Only PUT and POST carry a body here; the handler must take it. */
	if (http_body_unread(h) && rq->method != HTTP_PUT && rq->method != HTTP_POST) {
		http_respond_error(rq, 413, "this request takes no body");
		return 0;
	}
	r->handle(rq);
	if (h->resp == HTTP_RESP_NONE && !rq->on_body && http_body_unread(h))
		http_respond_error(rq, 413, "this resource takes no request body");
	/* RFC 9110 10.1.1: the handler takes the body, so ask for it. */
	if (h->resp == HTTP_RESP_NONE && rq->on_body && !strcasecmp(rq->expect, "100-continue"))
		conn_send(c, "HTTP/1.1 100 Continue\r\n\r\n", 25);
	return 0;
}

static int http_on_body(http_parser *p, const char *at, size_t len)
{
	struct conn *c = http_conn_of(p);
	struct http_conn *h = c->http;
	int status;

	if (h->discard_body || h->resp != HTTP_RESP_NONE || !h->rq.on_body)
		return 0;
	status = h->rq.on_body(&h->rq, at, len);
	if (status)
		http_respond_error(&h->rq, status, NULL);
	return 0;
}

static int http_on_message_complete(http_parser *p)
{
	struct conn *c = http_conn_of(p);
	struct http_conn *h = c->http;

	h->msg_done = true;
	if (!p->upgrade)
		http_set_phase(c, HTTP_PHASE_RESPONSE);
	if (h->resp == HTTP_RESP_NONE && h->rq.on_complete && !c->closing)
		h->rq.on_complete(&h->rq);
	else if (h->resp == HTTP_RESP_NONE && !h->upgrade_ok && !h->rq.deferred && !c->closing)
		http_respond_error(&h->rq, 500, "the request was not answered");
	/*
	 * One request per execute call; an upgrade stops the parser by
	 * itself (pausing there would leave the last header byte unread).
	 */
	if (!p->upgrade)
		http_parser_pause(p, 1);
	return 0;
}

/* ---- Driving the parser ---- */

static void http_upgrade(struct conn *c, const char *rest, size_t len);

/*
 * Parses data up to the end of one request. Returns the bytes used; all
 * of them when the connection closed, failed or was upgraded.
 */
static size_t http_exec(struct conn *c, const char *data, size_t len)
{
	struct http_conn *h = c->http;
	enum http_errno err;
	size_t n;

	h->in_exec = true;
	n = http_parser_execute(&h->parser, &http_settings, data, len);
	h->in_exec = false;
	if (c->closing || c->http != h)
		return len;
	err = HTTP_PARSER_ERRNO(&h->parser);
	if (err == HPE_OK && h->parser.upgrade) {
		http_upgrade(c, data + n, len - n);
		return len;
	}
	if (err == HPE_PAUSED) {
		http_parser_pause(&h->parser, 0);
		return n;
	}
	if (err != HPE_OK) {
		int status = h->fail_status ? h->fail_status
					    : err == HPE_HEADER_OVERFLOW ? 431 : 400;

		if (h->req_start_ms == 0)
			h->req_start_ms = http_now(c);
		h->close_after = true;
		h->keep_alive = false;
		if (h->resp == HTTP_RESP_NONE)
			http_respond_error(&h->rq, status,
					   h->fail_why ? h->fail_why : http_errno_description(err));
		else
			conn_close(c, CONN_CLOSE_ERROR);
		return len;
	}
	return n;
}

/* Keeps pipelined input until the response before it is out. */
static void http_hold(struct conn *c, const char *data, size_t len)
{
	struct http_conn *h = c->http;

	if (h->held.len + len > HTTP_MAX_HELD) {
		log_info("http.pipeline_overflow", "conn=%llu held=%zu", (unsigned long long)c->id,
			 h->held.len + len);
		conn_abort(c, CONN_CLOSE_ERROR);
		return;
	}
	strbuf_append(&h->held, data, len);
	if (h->held.oom)
		conn_abort(c, CONN_CLOSE_ERROR);
}

/*
 * The current request is answered: start the next one, from held input
 * first. Loops rather than recursing through the response path.
 */
static void http_try_next(struct conn *c)
{
	struct http_conn *h = c->http;

	while (!c->closing && c->http == h && h->msg_done && h->resp == HTTP_RESP_DONE) {
		size_t used;

		h->msg_done = false;
		h->resp = HTTP_RESP_NONE;
		h->route = NULL;
		h->headers_done = false;
		memset(&h->rq, 0, sizeof(h->rq));
		h->rq.c = c;
		h->last_ms = http_now(c);
		http_set_phase(c, HTTP_PHASE_IDLE);
		if (!h->held.len)
			break;
		used = http_exec(c, h->held.data, h->held.len);
		if (c->closing || c->http != h)
			return;
		memmove(h->held.data, h->held.data + used, h->held.len - used);
		h->held.len -= used;
		h->held.data[h->held.len] = '\0';
	}
	if (c->http == h && !h->held.len && h->held.cap > HTTP_MAX_HELD)
		strbuf_free(&h->held);
}

void http_input(struct conn *c, const char *data, size_t len)
{
	struct http_conn *h = c->http;
	size_t used;

	if (!h || c->closing)
		return;
	h->last_ms = http_now(c);
	if (h->held.len || h->msg_done) {
		http_hold(c, data, len);
		http_try_next(c);
		return;
	}
	used = http_exec(c, data, len);
	if (c->closing || c->http != h)
		return;
	if (used < len)
		http_hold(c, data + used, len - used);
	http_try_next(c);
}

/* ---- WebSocket upgrade ---- */

static void http_ws_handle(struct http_request *rq)
{
	struct conn *c = rq->c;
	struct http_conn *h = c->http;

	rq->log_path = WS_PATH;
	if (!h->parser.upgrade || !ws_header_has_token(rq->upgrade, "websocket")) {
		http_respond_text(rq, 426, "this is the XMPP WebSocket endpoint (RFC 7395)",
				  "Upgrade: websocket\r\n");
		return;
	}
	if (strcmp(rq->ws_version, "13") != 0) {
		http_respond_text(rq, 426, "WebSocket version 13 only", "Sec-WebSocket-Version: 13\r\n");
		return;
	}
	if (ws_accept_key(rq->ws_key, h->ws_accept) < 0) {
		http_respond_error(rq, 400, "missing or malformed Sec-WebSocket-Key");
		return;
	}
	if (!ws_header_has_token(rq->ws_protocol, WS_SUBPROTOCOL)) {
		http_respond_error(rq, 400, "the 'xmpp' WebSocket subprotocol is required (RFC 7395)");
		return;
	}
	/* ws:// carries no TLS and offers no STARTTLS: only where TLS is not required. */
	if (!h->tls && http_cfg(c)->require_tls) {
		http_respond_error(rq, 403, "XMPP over plain ws:// needs require_tls = no; "
				   "use wss:// (listen_https)");
		return;
	}
	h->upgrade_ok = true;
}

static void http_upgrade(struct conn *c, const char *rest, size_t len)
{
	struct http_conn *h = c->http;
	char buf[256];
	int n;

	if (!h->upgrade_ok || h->resp != HTTP_RESP_NONE) {
		/* Refused and answered (or an upgrade to something we do not speak). */
		h->close_after = true;
		if (h->resp == HTTP_RESP_NONE)
			http_respond_error(&h->rq, 400, "unsupported upgrade");
		else if (!c->closing)
			conn_close(c, CONN_CLOSE_ERROR);
		return;
	}
	n = snprintf(buf, sizeof(buf), "HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\n"
		     "Connection: Upgrade\r\nSec-WebSocket-Accept: %s\r\nSec-WebSocket-Protocol: "
		     WS_SUBPROTOCOL "\r\n\r\n", h->ws_accept);
	conn_send(c, buf, (size_t)n);
	h->status = 101;
	http_log_request(c);
	/* The connection speaks WebSocket from the next byte on. */
	loop_timer_cancel(&c->timer);
	strbuf_free(&h->held);
	free(h);
	c->http = NULL;
	if (ws_start(c, rest, len) < 0)
		conn_abort(c, CONN_CLOSE_ERROR);
}

/* ---- XEP-0156 discovery ---- */

/* The WebSocket URL a client reached through this request's Host. */
static void http_ws_url(struct http_request *rq, char *out, size_t size)
{
	const struct http_server *hs = rq->c->w->srv->http;
	const char *host = rq->host;
	bool tls = rq->c->http->tls;

	/* Only a plain host[:port] is echoed; anything else falls back to the base URL. */
	if (!host[0] || strlen(host) > 255 || strspn(host, "abcdefghijklmnopqrstuvwxyz"
			"ABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789.-:[]") != strlen(host)) {
		const char *base = strstr(hs->base_url, "://");

		host = base ? base + 3 : hs->base_url;
		tls = strncmp(hs->base_url, "https:", 6) == 0;
	}
	snprintf(out, size, "%s://%s" WS_PATH, tls ? "wss" : "ws", host);
}

#define HTTP_CORS_ANY "Access-Control-Allow-Origin: *\r\n"

static void http_hostmeta(struct http_request *rq, bool json)
{
	struct strbuf *b = &rq->c->w->scratch;
	char url[320];

	if (rq->method == HTTP_OPTIONS) {
		http_respond(rq, 204, NULL, NULL, 0, HTTP_CORS_ANY
			     "Access-Control-Allow-Methods: GET, HEAD, OPTIONS\r\n");
		return;
	}
	http_ws_url(rq, url, sizeof(url));
	strbuf_clear(b);
	if (json) {
		strbuf_puts(b, "{\"links\":[");
		if (http_cfg(rq->c)->websocket)
			strbuf_printf(b, "{\"rel\":\"urn:xmpp:alt-connections:websocket\",\"href\":\"%s\"}",
				      url);
		strbuf_puts(b, "]}\n");
	} else {
		strbuf_puts(b, "<?xml version='1.0' encoding='utf-8'?>\n"
			       "<XRD xmlns='http://docs.oasis-open.org/ns/xri/xrd-1.0'>\n");
		if (http_cfg(rq->c)->websocket) {
			strbuf_puts(b, "  <Link rel='urn:xmpp:alt-connections:websocket' href='");
			strbuf_append_xml_escaped(b, url, strlen(url));
			strbuf_puts(b, "'/>\n");
		}
		strbuf_puts(b, "</XRD>\n");
	}
	if (b->oom)
		http_respond_error(rq, 500, NULL);
	else
		http_respond(rq, 200, json ? "application/json" : "application/xrd+xml; charset=utf-8",
			     b->data, b->len, HTTP_CORS_ANY);
	strbuf_clear(b);
}

static void http_hostmeta_xrd(struct http_request *rq)
{
	http_hostmeta(rq, false);
}

static void http_hostmeta_json(struct http_request *rq)
{
	http_hostmeta(rq, true);
}

/* ---- Connection hooks ---- */

void http_accepted(struct conn *c, bool tls)
{
	struct http_conn *h = calloc(1, sizeof(*h));

	if (!h) {
		conn_abort(c, CONN_CLOSE_ERROR);
		return;
	}
	c->kind = CONN_HTTP;
	c->http = h;
	h->tls = tls;
	h->file_fd = -1;
	h->keep_alive = true;
	h->last_ms = http_now(c);
	http_parser_init(&h->parser, HTTP_REQUEST);
	h->parser.data = c;
	h->rq.c = c;
	http_set_phase(c, HTTP_PHASE_IDLE);
	if (tls && conn_start_tls(c) < 0) {
		log_warn("tls.start_failed", "conn=%llu", (unsigned long long)c->id);
		conn_abort(c, CONN_CLOSE_ERROR);
	}
}

void http_deadline(struct conn *c)
{
	struct http_conn *h = c->http;
	const struct config *cfg = http_cfg(c);
	uint64_t now = http_now(c), since, limit;

	if (!h)
		return;
	if (h->phase == HTTP_PHASE_HEADERS) {
		since = h->req_start_ms;
		limit = (uint64_t)cfg->http_request_timeout * 1000;
	} else {
		since = h->last_ms;
		limit = (uint64_t)cfg->http_idle_timeout * 1000;
	}
	if (now - since < limit) {
		conn_set_deadline(c, limit - (now - since));
		return;
	}
	switch (h->phase) {
	case HTTP_PHASE_IDLE:
		log_debug("http.idle_close", "conn=%llu", (unsigned long long)c->id);
		conn_close(c, CONN_CLOSE_TIMEOUT);
		break;
	case HTTP_PHASE_HEADERS:
	case HTTP_PHASE_BODY:
		log_info("http.timeout", "conn=%llu phase=%s", (unsigned long long)c->id,
			 h->phase == HTTP_PHASE_HEADERS ? "headers" : "body");
		h->close_after = true;
		h->keep_alive = false;
		if (h->resp == HTTP_RESP_NONE)
			http_respond_error(&h->rq, 408, "the request took too long to arrive");
		else
			conn_close(c, CONN_CLOSE_TIMEOUT);
		break;
	case HTTP_PHASE_RESPONSE:
		/* The peer does not read, or the answer never came. */
		log_info("http.timeout", "conn=%llu phase=response", (unsigned long long)c->id);
		conn_abort(c, CONN_CLOSE_TIMEOUT);
		break;
	}
}

void http_closing(struct conn *c)
{
	struct http_conn *h = c->http;

	if (!h)
		return;
	if (h->rq.on_abort && h->resp != HTTP_RESP_DONE) {
		h->rq.on_abort(&h->rq);
		h->rq.on_abort = NULL;
	}
	/* An event stream ends only here: its one log line. */
	if (h->resp == HTTP_RESP_EVENTS) {
		h->resp = HTTP_RESP_DONE;
		http_log_request(c);
	}
	if (h->file_fd >= 0) {
		close(h->file_fd);
		h->file_fd = -1;
	}
}

void http_output_drained(struct conn *c)
{
	struct http_conn *h = c->http;

	if (!h || c->closing)
		return;
	h->last_ms = http_now(c);
	if (h->resp == HTTP_RESP_STREAMING)
		http_pump(c);
}

void http_conn_free(struct conn *c)
{
	if (c->http) {
		http_closing(c);
		strbuf_free(&c->http->held);
		free(c->http);
		c->http = NULL;
	}
	ws_free(c);
}

/* ---- Process-wide state ---- */

bool http_configured(const struct config *cfg)
{
	return cfg->listen_http.n || cfg->listen_https.n;
}

/* "http://host:port" for a listener address; a wildcard becomes the domain. */
static void http_url_for(const struct config *cfg, const char *addr, bool tls, char *out,
			 size_t size)
{
	const char *colon = strrchr(addr, ':');
	size_t hlen = colon ? (size_t)(colon - addr) : strlen(addr);
	const char *port = colon ? colon + 1 : "";
	char host[128];

	snprintf(host, sizeof(host), "%.*s", (int)hlen, addr);
	if (!strcmp(host, "*") || !strcmp(host, "0.0.0.0") || !strcmp(host, "[::]") ||
	    !strcmp(host, "::"))
		snprintf(host, sizeof(host), "%s", cfg->domain);
	snprintf(out, size, "%s://%s:%s", tls ? "https" : "http", host, port);
}

struct http_server *http_server_new(struct server *srv)
{
	const struct config *cfg = srv->cfg;
	struct http_server *hs = calloc(1, sizeof(*hs));
	size_t n;

	if (!hs)
		return NULL;
	hs->cfg = cfg;
	if (cfg->upload_url_base)
		snprintf(hs->base_url, sizeof(hs->base_url), "%s", cfg->upload_url_base);
	else if (cfg->listen_https.n)
		http_url_for(cfg, cfg->listen_https.v[0], true, hs->base_url, sizeof(hs->base_url));
	else if (cfg->listen_http.n)
		http_url_for(cfg, cfg->listen_http.v[0], false, hs->base_url, sizeof(hs->base_url));
	n = strlen(hs->base_url);
	while (n && hs->base_url[n - 1] == '/')
		hs->base_url[--n] = '\0';
	/* Backstop to our own count: the library refuses longer headers too. */
	http_parser_set_max_header_size(HTTP_MAX_HEADER_BYTES * 2);
	if (upload_enabled(cfg)) {
		hs->upload = upload_state_new(cfg);
		if (!hs->upload) {
			int e = errno;

			free(hs);
			errno = e;
			return NULL;
		}
	}
	return hs;
}

void http_server_free(struct http_server *hs)
{
	if (!hs)
		return;
	upload_state_free(hs->upload);
	free(hs);
}

void http_worker_start(struct worker *w)
{
	if (w->srv->http && w->srv->http->upload)
		upload_worker_start(w);
}

void http_worker_stop(struct worker *w)
{
	if (w->srv->http && w->srv->http->upload)
		upload_worker_stop(w);
}
