/* SPDX-License-Identifier: MIT */
/*
 * Metrics: counters kept per worker on the hot path, summed and written in
 * the Prometheus text exposition format (0.0.4) at GET /metrics on the
 * HTTP listener.
 *
 * Cost model. Every counter lives in the struct metrics_worker of the
 * worker whose thread changes it (embedded in struct worker); nothing is
 * shared between writers, so an increment is a plain load and store, no
 * locked instruction, no cache line bouncing between workers. The store
 * is a relaxed atomic store (METRIC_ADD) only so that a scrape on another
 * worker's thread reads whole values without a data race; on x86-64 and
 * arm64 it compiles to the same single mov as a plain store. A scrape
 * sums the workers' structs (and the storage thread's histogram).
 *
 * Gauges of connections are counted the same way: each connection
 * remembers the class (transport, negotiation state, TLS mode) it is
 * counted under, and metrics_conn_sync() moves it when that changes. The
 * worker calls it at the few places where a class can change (accept,
 * each receive and send completion, the end-of-turn flush, free), which
 * costs a few compares per I/O event.
 *
 * Routing latency is the time from the start of the loop turn that
 * received a stanza (one CLOCK_MONOTONIC read per turn, loop.c) to the end
 * of its routing in c2s (sends queued, or the storage request submitted):
 * one more clock read per routed stanza, about 20 ns through the vDSO.
 *
 * Names follow the Prometheus conventions: the stanzad_ prefix, _total for
 * counters, base units (seconds, bytes) in the name.
 */
#ifndef STANZAD_METRICS_H
#define STANZAD_METRICS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

struct config;
struct conn;
struct http_request;
struct server;
struct strbuf;
struct sockaddr_in6;

/* Adds n to a counter owned by the calling thread (see the cost model). */
#define METRIC_ADD(field, n) __atomic_store_n(&(field), (field) + (n), __ATOMIC_RELAXED)
#define METRIC_INC(field) METRIC_ADD(field, 1)
/* Reads a counter another thread owns. */
#define METRIC_READ(field) __atomic_load_n(&(field), __ATOMIC_RELAXED)

/* ---- Histograms ---- */

#define METRICS_HIST_MAX	16	/* finite buckets of one histogram, at most */

/*
 * Counts per bucket (not cumulative: bucket i counts values in
 * (bound[i-1], bound[i]]; the last one is +Inf), the sum and the count.
 * Values are integers in the histogram's own unit (ns, recipients); the
 * bounds say how to print them.
 */
struct metrics_hist {
	uint64_t bucket[METRICS_HIST_MAX + 1];
	uint64_t sum;
	uint64_t count;
};

struct metrics_bounds {
	unsigned n;			/* finite bounds, <= METRICS_HIST_MAX */
	uint64_t le[METRICS_HIST_MAX];	/* increasing */
	double scale;			/* printed value = bound * scale (ns -> s: 1e-9) */
};

extern const struct metrics_bounds metrics_route_bounds;	/* ns: 5 us .. 100 ms */
extern const struct metrics_bounds metrics_storage_bounds;	/* ns: 100 us .. 2.5 s */
extern const struct metrics_bounds metrics_fanout_bounds;	/* recipients: 1 .. 10000 */

/* Records v (by the thread that owns h). */
void metrics_hist_observe(struct metrics_hist *h, const struct metrics_bounds *b, uint64_t v);
/* Adds src (owned by another thread: read relaxed) into dst (private). */
void metrics_hist_merge(struct metrics_hist *dst, const struct metrics_hist *src);

/* ---- Label sets ---- */

enum metrics_transport {
	METRICS_TR_C2S = 0,	/* XMPP over TCP (STARTTLS or Direct TLS) */
	METRICS_TR_WEBSOCKET,	/* XMPP over WebSocket (RFC 7395) */
	METRICS_TR_HTTP,	/* HTTP requests (upload, host-meta, /metrics) */
	METRICS_TR_COUNT,
};

enum metrics_tls {
	METRICS_TLS_NONE = 0,
	METRICS_TLS_USERSPACE,
	METRICS_TLS_KTLS,	/* also while the handoff runs */
	METRICS_TLS_COUNT,
};

/* Class = (transport * 2 + ready) * METRICS_TLS_COUNT + tls. */
#define METRICS_CONN_CLASSES	(METRICS_TR_COUNT * 2 * METRICS_TLS_COUNT)

/* SASL mechanisms by name; "other" for anything else, "none" for no mechanism. */
#define METRICS_MECHS		8
/* RFC 6120 4.9.3 stream error conditions, and "other". */
#define METRICS_STREAM_ERRORS	26
/* Message, presence, iq (enum stanza_kind - 1). */
#define METRICS_KINDS		3

/* What the guard (today its userspace path, abuse.c) refused, by reason. */
enum metrics_guard {
	METRICS_GUARD_BANNED = 0,	/* a connection from a banned source */
	METRICS_GUARD_PREAUTH,		/* a connection past max_preauth_per_ip */
	METRICS_GUARD_AUTH,		/* a login: banned source or locked account name */
	METRICS_GUARD_RATE,		/* a stream past its stanza or byte rate */
	METRICS_GUARD_REASONS,
};

/* ---- Per worker ---- */

struct metrics_worker {
	uint64_t conns[METRICS_CONN_CLASSES];		/* gauge: open connections by class */
	uint64_t accepted[METRICS_TR_COUNT];		/* connections accepted (WebSocket: upgrades) */
	uint64_t stanzas_in[METRICS_KINDS];		/* from clients, routed */
	uint64_t stanzas_out[METRICS_KINDS];		/* queued to clients */
	uint64_t auth_ok[METRICS_MECHS];
	uint64_t auth_fail[METRICS_MECHS];
	uint64_t stream_errors[METRICS_STREAM_ERRORS];
	uint64_t offline_stored;			/* XEP-0160 messages committed */
	uint64_t archive_writes;			/* XEP-0313 writes handed to storage */
	uint64_t sm_resumed;				/* XEP-0198 successful resumptions */
	uint64_t sm_resume_failed;
	uint64_t guard_drops[METRICS_GUARD_REASONS];	/* abuse.c refusals */
	struct metrics_hist route_latency;		/* ns */
	struct metrics_hist fanout;			/* recipients per serialized fan-out */
};

/*
 * The metrics of the worker running on this thread (set by
 * metrics_worker_bind), NULL on other threads: for code that has no
 * worker at hand (fanout.c).
 */
extern __thread struct metrics_worker *metrics_self;

/* Zeroes m and makes it this thread's metrics_self (worker_init). */
void metrics_worker_bind(struct metrics_worker *m);

/* ---- Hooks (each one line in the code it observes) ---- */

/*
 * Recounts c under its current class if that changed; c->metrics_class
 * remembers it (0: not counted). Call with gone = true when c is freed.
 */
void metrics_conn_sync(struct conn *c, bool gone);

/*
 * A connection handed over to another worker (authenticated on worker k,
 * moved to worker 0): each worker's gauges are written by its own thread
 * only, so the move is two steps. metrics_conn_leave() runs on the old
 * worker's thread while c->w is still the old worker, after its last
 * metrics_conn_sync(); metrics_conn_join() runs on the new worker's
 * thread once c->w is the new worker, before any metrics_conn_sync()
 * there. c keeps its class in between and is not counted as accepted
 * twice. (metrics_conn_sync() on the new worker without these two would
 * leave the old worker counting the connection forever and drive the new
 * one's gauge below zero.)
 */
void metrics_conn_leave(struct conn *c);
void metrics_conn_join(struct conn *c);

/*
 * A stanza from a client was routed: counts it by kind (enum
 * stanza_kind) and records the routing latency since the loop turn began.
 */
void metrics_stanza_routed(struct conn *c, int kind);

/* A stanza (serialized, data[0..len)) is queued to a client. */
static inline void metrics_stanza_out(struct metrics_worker *m, const char *data, size_t len)
{
	/* "<message", "<presence", "<iq": the second byte tells them apart. */
	if (len < 3)
		return;
	switch (data[1]) {
	case 'm':
		METRIC_INC(m->stanzas_out[0]);
		break;
	case 'p':
		METRIC_INC(m->stanzas_out[1]);
		break;
	case 'i':
		METRIC_INC(m->stanzas_out[2]);
		break;
	}
}

/* A SASL exchange ended; mech may be NULL (refused before one was chosen). */
void metrics_auth(struct metrics_worker *m, const char *mech, bool ok);
/* A stream error was sent. */
void metrics_stream_error(struct metrics_worker *m, const char *condition);
/* One fan-out (fanout.c) reached `copies` recipients. */
void metrics_fanout(size_t copies);

/* ---- Exposition ---- */

/* Whether /metrics is served (metrics = yes). */
bool metrics_enabled(const struct config *cfg);

/*
 * Checks metrics_allow: each value an address or CIDR prefix, IPv4
 * ("10.0.0.0/8") or IPv6 ("fd00::/8"). Prints one line to stderr and
 * returns -EINVAL for a bad one (config validation).
 */
int metrics_config_check(const struct config *cfg);

/*
 * Whether a peer (IPv4 as v4-mapped) may scrape: metrics_allow when set,
 * else loopback only (127.0.0.0/8, ::1).
 */
bool metrics_peer_allowed(const struct config *cfg, const struct sockaddr_in6 *peer);

/*
 * Parses "ADDR[/LEN]" into a v6 address (IPv4 v4-mapped, prefix + 96).
 * 0 or -EINVAL.
 */
int metrics_cidr_parse(const char *s, uint8_t addr[16], unsigned *prefix);
/* Whether a[0..16) falls in net/prefix. */
bool metrics_cidr_match(const uint8_t a[16], const uint8_t net[16], unsigned prefix);

/*
 * Writes every metric of the server (all workers summed) into out, in the
 * text format: HELP and TYPE before each family, histograms cumulative
 * with _bucket{le}, _sum and _count.
 */
void metrics_render(struct server *srv, struct strbuf *out);

/* The GET /metrics route (http.c): 403 unless the peer is allowed. */
void metrics_http(struct http_request *rq);

#endif
