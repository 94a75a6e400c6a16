/* SPDX-License-Identifier: MIT */
/*
 * Metrics: the hot-path hooks, the per-worker sums and the Prometheus text
 * exposition (see metrics.h for the cost model).
 *
 * Written by hand, not with a client library: the text format is a few
 * lines of grammar, and the C client libraries (not packaged by Debian)
 * keep every counter behind atomics or a mutex shared by all threads,
 * which is what the per-worker layout avoids.
 */
#include <arpa/inet.h>
#include <errno.h>
#include <malloc.h>
#include <netinet/in.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "bpf_guard.h"
#include "config.h"
#include "conn.h"
#include "http.h"
#include "kpaths.h"
#include "loop.h"
#include "metrics.h"
#include "server.h"
#include "session.h"
#include "storage.h"
#include "strbuf.h"
#include "worker.h"

#ifndef STANZAD_VERSION
#define STANZAD_VERSION "0.1.0"
#endif

#define METRICS_CONTENT_TYPE	"text/plain; version=0.0.4; charset=utf-8"

__thread struct metrics_worker *metrics_self;

/* A scrape sums the struct as an array of counters (metrics_sum_workers). */
_Static_assert(sizeof(struct metrics_worker) % sizeof(uint64_t) == 0,
	       "struct metrics_worker holds uint64_t counters only");

/* ---- Histograms ---- */

#define US 1000ull
#define MS 1000000ull

const struct metrics_bounds metrics_route_bounds = {
	13, { 5 * US, 10 * US, 25 * US, 50 * US, 100 * US, 250 * US, 500 * US, 1 * MS,
	      2500 * US, 5 * MS, 10 * MS, 25 * MS, 100 * MS }, 1e-9,
};

const struct metrics_bounds metrics_storage_bounds = {
	13, { 100 * US, 250 * US, 500 * US, 1 * MS, 2500 * US, 5 * MS, 10 * MS, 25 * MS,
	      50 * MS, 100 * MS, 250 * MS, 1000 * MS, 2500 * MS }, 1e-9,
};

const struct metrics_bounds metrics_fanout_bounds = {
	12, { 1, 2, 5, 10, 25, 50, 100, 250, 500, 1000, 2500, 10000 }, 1.0,
};

void metrics_hist_observe(struct metrics_hist *h, const struct metrics_bounds *b, uint64_t v)
{
	unsigned i = 0;

	/* At most 16 compares; the common (small) values stop early. */
	while (i < b->n && v > b->le[i])
		i++;
	METRIC_INC(h->bucket[i]);
	METRIC_ADD(h->sum, v);
	METRIC_INC(h->count);
}

void metrics_hist_merge(struct metrics_hist *dst, const struct metrics_hist *src)
{
	for (unsigned i = 0; i <= METRICS_HIST_MAX; i++)
		dst->bucket[i] += METRIC_READ(src->bucket[i]);
	dst->sum += METRIC_READ(src->sum);
	dst->count += METRIC_READ(src->count);
}

/* ---- Label values ---- */

static const char *const metrics_transports[METRICS_TR_COUNT] = {
	[METRICS_TR_C2S] = "c2s",
	[METRICS_TR_WEBSOCKET] = "websocket",
	[METRICS_TR_HTTP] = "http",
};

static const char *const metrics_tls_modes[METRICS_TLS_COUNT] = {
	[METRICS_TLS_NONE] = "none",
	[METRICS_TLS_USERSPACE] = "userspace",
	[METRICS_TLS_KTLS] = "ktls",
};

static const char *const metrics_kinds[METRICS_KINDS] = { "message", "presence", "iq" };

/* Index 0: no mechanism chosen (encryption-required); the last: anything else. */
static const char *const metrics_mechs[METRICS_MECHS] = {
	"none", "PLAIN", "SCRAM-SHA-1", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256",
	"SCRAM-SHA-256-PLUS", "SCRAM-SHA-512", "other",
};

/* RFC 6120 4.9.3, in its order; the last: anything else. */
static const char *const metrics_conditions[METRICS_STREAM_ERRORS] = {
	"bad-format", "bad-namespace-prefix", "conflict", "connection-timeout", "host-gone",
	"host-unknown", "improper-addressing", "internal-server-error", "invalid-from",
	"invalid-namespace", "invalid-xml", "not-authorized", "not-well-formed",
	"policy-violation", "remote-connection-failed", "reset", "resource-constraint",
	"restricted-xml", "see-other-host", "system-shutdown", "undefined-condition",
	"unsupported-encoding", "unsupported-feature", "unsupported-stanza-type",
	"unsupported-version", "other",
};

static const char *const metrics_guard_reasons[METRICS_GUARD_REASONS] = {
	[METRICS_GUARD_BANNED] = "source-banned",
	[METRICS_GUARD_PREAUTH] = "preauth-per-ip",
	[METRICS_GUARD_AUTH] = "auth-refused",
	[METRICS_GUARD_RATE] = "rate-limit",
};

/* ---- Hooks ---- */

void metrics_worker_bind(struct metrics_worker *m)
{
	memset(m, 0, sizeof(*m));
	metrics_self = m;
}

static unsigned metrics_conn_class(const struct conn *c)
{
	unsigned tr, ready, tls;

	if (c->kind == CONN_HTTP)
		tr = METRICS_TR_HTTP;
	else
		tr = c->websocket ? METRICS_TR_WEBSOCKET : METRICS_TR_C2S;
	/* A bound session (or one resumed) is what "ready" means; HTTP has none. */
	ready = tr != METRICS_TR_HTTP && c->sess != NULL;
	switch (c->tls_mode) {
	case CONN_TLS_NONE:
		tls = METRICS_TLS_NONE;
		break;
	case CONN_TLS_USERSPACE:
		tls = METRICS_TLS_USERSPACE;
		break;
	default:
		tls = METRICS_TLS_KTLS;
		break;
	}
	return (tr * 2 + ready) * METRICS_TLS_COUNT + tls;
}

static unsigned metrics_class_transport(unsigned cls)
{
	return cls / (2 * METRICS_TLS_COUNT);
}

void metrics_conn_sync(struct conn *c, bool gone)
{
	struct metrics_worker *m = &c->w->metrics;
	unsigned was = c->metrics_class, now;

	/* Client and HTTP connections only (not s2s, components, control requests). */
	if (c->kind != CONN_C2S && c->kind != CONN_HTTP)
		gone = true;
	now = gone ? 0 : metrics_conn_class(c) + 1;

	if (now == was)
		return;
	if (was)
		METRIC_ADD(m->conns[was - 1], (uint64_t)-1);
	if (now) {
		METRIC_INC(m->conns[now - 1]);
		/* A new connection, or an HTTP one that became a WebSocket. */
		if (!was || metrics_class_transport(was - 1) != metrics_class_transport(now - 1))
			METRIC_INC(m->accepted[metrics_class_transport(now - 1)]);
	}
	c->metrics_class = (uint8_t)now;
}

void metrics_conn_leave(struct conn *c)
{
	unsigned cls = c->metrics_class;

	if (cls)
		METRIC_ADD(c->w->metrics.conns[cls - 1], (uint64_t)-1);
}

void metrics_conn_join(struct conn *c)
{
	unsigned cls = c->metrics_class;

	if (cls)
		METRIC_INC(c->w->metrics.conns[cls - 1]);
}

static uint64_t metrics_now_ns(void)
{
	struct timespec ts;

	clock_gettime(CLOCK_MONOTONIC, &ts);
	return (uint64_t)ts.tv_sec * 1000000000u + (uint64_t)ts.tv_nsec;
}

void metrics_stanza_routed(struct conn *c, int kind)
{
	struct metrics_worker *m = &c->w->metrics;
	uint64_t start = loop_turn_ns(c->w->loop), now;

	if (kind < 1 || kind > METRICS_KINDS)
		return;
	METRIC_INC(m->stanzas_in[kind - 1]);
	now = metrics_now_ns();
	metrics_hist_observe(&m->route_latency, &metrics_route_bounds, now > start ? now - start : 0);
}

void metrics_auth(struct metrics_worker *m, const char *mech, bool ok)
{
	unsigned i = 0;

	if (mech && strcmp(mech, "-") != 0) {
		for (i = 1; i < METRICS_MECHS - 1; i++)
			if (strcmp(mech, metrics_mechs[i]) == 0)
				break;
	}
	if (ok)
		METRIC_INC(m->auth_ok[i]);
	else
		METRIC_INC(m->auth_fail[i]);
}

void metrics_stream_error(struct metrics_worker *m, const char *condition)
{
	unsigned i;

	for (i = 0; i < METRICS_STREAM_ERRORS - 1; i++)
		if (strcmp(condition, metrics_conditions[i]) == 0)
			break;
	METRIC_INC(m->stream_errors[i]);
}

void metrics_fanout(size_t copies)
{
	struct metrics_worker *m = metrics_self;

	if (m && copies)
		metrics_hist_observe(&m->fanout, &metrics_fanout_bounds, copies);
}

/* ---- Access ---- */

bool metrics_enabled(const struct config *cfg)
{
	return cfg->metrics;
}

/* ---- Exposition ---- */

/* What a scrape adds up: every worker's struct, summed. */
struct metrics_sum {
	struct metrics_worker w;
	struct metrics_hist storage;
	struct storage_queue_stats sq;
};

static void metrics_sum_workers(struct server *srv, struct metrics_sum *s)
{
	memset(s, 0, sizeof(*s));
	for (unsigned i = 0; i < srv->nworkers; i++) {
		const struct metrics_worker *m = &srv->workers[i].metrics;
		uint64_t *dst = (uint64_t *)&s->w;
		const uint64_t *src = (const uint64_t *)m;

		/* The struct is uint64_t all through (histograms too): sum it as an array. */
		for (size_t k = 0; k < sizeof(*m) / sizeof(uint64_t); k++)
			dst[k] += METRIC_READ(src[k]);
	}
	if (srv->store) {
		storage_queue_get_stats(srv->store, &s->sq);
		storage_queue_get_latency(srv->store, &s->storage);
	}
}

static void metrics_family(struct strbuf *out, const char *name, const char *type,
			   const char *help)
{
	strbuf_printf(out, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A bound or sum in the histogram's printed unit, without trailing zeros. */
static void metrics_number(char *buf, size_t size, double v)
{
	char *p;

	snprintf(buf, size, "%.9f", v);
	p = buf + strlen(buf) - 1;
	while (p > buf && *p == '0')
		*p-- = '\0';
	if (*p == '.')
		*p = '\0';
}

static void metrics_histogram(struct strbuf *out, const char *name, const char *help,
			      const struct metrics_hist *h, const struct metrics_bounds *b)
{
	uint64_t cum = 0;
	char num[48];

	metrics_family(out, name, "histogram", help);
	for (unsigned i = 0; i < b->n; i++) {
		cum += h->bucket[i];
		metrics_number(num, sizeof(num), (double)b->le[i] * b->scale);
		strbuf_printf(out, "%s_bucket{le=\"%s\"} %llu\n", name, num, (unsigned long long)cum);
	}
	cum += h->bucket[b->n];
	strbuf_printf(out, "%s_bucket{le=\"+Inf\"} %llu\n", name, (unsigned long long)cum);
	metrics_number(num, sizeof(num), (double)h->sum * b->scale);
	strbuf_printf(out, "%s_sum %s\n%s_count %llu\n", name, num, name,
		      (unsigned long long)h->count);
}

static void metrics_labelled(struct strbuf *out, const char *name, const char *label,
			     const char *const *values, const uint64_t *counts, unsigned n)
{
	for (unsigned i = 0; i < n; i++)
		strbuf_printf(out, "%s{%s=\"%s\"} %llu\n", name, label, values[i],
			      (unsigned long long)counts[i]);
}

static void metrics_render_conns(struct server *srv, const struct metrics_sum *s,
				 struct strbuf *out)
{
	metrics_family(out, "stanzad_connections", "gauge",
		       "Open connections by transport, stream state and TLS mode.");
	for (unsigned tr = 0; tr < METRICS_TR_COUNT; tr++) {
		for (unsigned ready = 0; ready < 2; ready++) {
			/* HTTP has no stream state: one "open" row per TLS mode. */
			if (tr == METRICS_TR_HTTP && ready)
				continue;
			for (unsigned tls = 0; tls < METRICS_TLS_COUNT; tls++) {
				unsigned cls = (tr * 2 + ready) * METRICS_TLS_COUNT + tls;
				const char *state = tr == METRICS_TR_HTTP ? "open"
							: ready ? "ready" : "negotiating";

				strbuf_printf(out, "stanzad_connections{transport=\"%s\",state=\"%s\","
					      "tls=\"%s\"} %llu\n", metrics_transports[tr], state,
					      metrics_tls_modes[tls],
					      (unsigned long long)s->w.conns[cls]);
			}
		}
	}
	metrics_family(out, "stanzad_connections_accepted_total", "counter",
		       "Connections accepted by transport (WebSocket: HTTP connections upgraded).");
	metrics_labelled(out, "stanzad_connections_accepted_total", "transport", metrics_transports,
			 s->w.accepted, METRICS_TR_COUNT);

	metrics_family(out, "stanzad_worker_connections", "gauge",
		       "Open connections per event-loop worker.");
	for (unsigned i = 0; i < srv->nworkers; i++) {
		const struct metrics_worker *m = &srv->workers[i].metrics;
		uint64_t n = 0;

		for (unsigned k = 0; k < METRICS_CONN_CLASSES; k++)
			n += METRIC_READ(m->conns[k]);
		strbuf_printf(out, "stanzad_worker_connections{worker=\"%u\"} %llu\n",
			      srv->workers[i].id, (unsigned long long)n);
	}
	metrics_family(out, "stanzad_sessions", "gauge",
		       "Bound sessions, detached ones (stream management) included.");
	strbuf_printf(out, "stanzad_sessions %zu\n", server_sessions_total(srv));
}

static void metrics_render_stanzas(const struct metrics_sum *s, struct strbuf *out)
{
	metrics_family(out, "stanzad_stanzas_received_total", "counter",
		       "Stanzas received from clients and routed, by kind.");
	metrics_labelled(out, "stanzad_stanzas_received_total", "kind", metrics_kinds,
			 s->w.stanzas_in, METRICS_KINDS);
	metrics_family(out, "stanzad_stanzas_sent_total", "counter",
		       "Stanzas queued to clients, by kind.");
	metrics_labelled(out, "stanzad_stanzas_sent_total", "kind", metrics_kinds,
			 s->w.stanzas_out, METRICS_KINDS);
	metrics_histogram(out, "stanzad_routing_latency_seconds",
			  "Time from the loop turn that received a client stanza to the end of "
			  "its routing (sends or storage requests queued).",
			  &s->w.route_latency, &metrics_route_bounds);
	metrics_histogram(out, "stanzad_fanout_recipients",
			  "Recipients of each stanza serialized once and copied (presence "
			  "broadcasts, chat rooms, pubsub notifications, announcements).",
			  &s->w.fanout, &metrics_fanout_bounds);
}

static void metrics_render_storage(const struct metrics_sum *s, struct strbuf *out)
{
	metrics_histogram(out, "stanzad_storage_latency_seconds",
			  "Time from a storage request's submission to its completion (commit "
			  "included).", &s->storage, &metrics_storage_bounds);
	metrics_family(out, "stanzad_storage_queue_depth", "gauge",
		       "Storage requests waiting for the storage thread.");
	strbuf_printf(out, "stanzad_storage_queue_depth %llu\n", (unsigned long long)s->sq.queued);
	metrics_family(out, "stanzad_storage_requests_total", "counter",
		       "Storage requests taken by the storage thread.");
	strbuf_printf(out, "stanzad_storage_requests_total %llu\n",
		      (unsigned long long)s->sq.requests);
	metrics_family(out, "stanzad_storage_commits_total", "counter",
		       "Group-commit transactions committed.");
	strbuf_printf(out, "stanzad_storage_commits_total %llu\n", (unsigned long long)s->sq.commits);
	metrics_family(out, "stanzad_storage_failures_total", "counter",
		       "Storage requests that failed with an I/O error or a lock timeout.");
	strbuf_printf(out, "stanzad_storage_failures_total %llu\n",
		      (unsigned long long)s->sq.failures);
	metrics_family(out, "stanzad_offline_messages_stored_total", "counter",
		       "Offline messages (XEP-0160) committed to the store.");
	strbuf_printf(out, "stanzad_offline_messages_stored_total %llu\n",
		      (unsigned long long)s->w.offline_stored);
	metrics_family(out, "stanzad_archive_writes_total", "counter",
		       "Message archive (XEP-0313) writes handed to the storage thread.");
	strbuf_printf(out, "stanzad_archive_writes_total %llu\n",
		      (unsigned long long)s->w.archive_writes);
}

static void metrics_render_streams(const struct metrics_sum *s, struct strbuf *out)
{
	struct bpf_guard_counters gc;

	metrics_family(out, "stanzad_auth_successes_total", "counter",
		       "Successful SASL authentications by mechanism.");
	metrics_labelled(out, "stanzad_auth_successes_total", "mechanism", metrics_mechs,
			 s->w.auth_ok, METRICS_MECHS);
	metrics_family(out, "stanzad_auth_failures_total", "counter",
		       "Failed or aborted SASL authentications by mechanism (none: refused "
		       "before one was chosen).");
	metrics_labelled(out, "stanzad_auth_failures_total", "mechanism", metrics_mechs,
			 s->w.auth_fail, METRICS_MECHS);
	metrics_family(out, "stanzad_stream_errors_total", "counter",
		       "Stream errors sent, by RFC 6120 condition.");
	metrics_labelled(out, "stanzad_stream_errors_total", "condition", metrics_conditions,
			 s->w.stream_errors, METRICS_STREAM_ERRORS);
	metrics_family(out, "stanzad_guard_drops_total", "counter",
		       "Connections, logins and streams the guard refused, by path and reason "
		       "(userspace: the limits of abuse.c; xdp: SYNs the XDP guard dropped).");
	for (unsigned i = 0; i < METRICS_GUARD_REASONS; i++)
		strbuf_printf(out, "stanzad_guard_drops_total{path=\"userspace\",reason=\"%s\"} %llu\n",
			      metrics_guard_reasons[i], (unsigned long long)s->w.guard_drops[i]);
	if (bpf_guard_counters(&gc) == 0)	/* only while the XDP guard runs (bpf_guard.c) */
		strbuf_printf(out, "stanzad_guard_drops_total{path=\"xdp\",reason=\"source-banned\"} "
			      "%llu\nstanzad_guard_drops_total{path=\"xdp\",reason=\"rate-limit\"} %llu\n",
			      (unsigned long long)gc.ban_dropped,
			      (unsigned long long)gc.rate_dropped);
	metrics_family(out, "stanzad_sm_resumptions_total", "counter",
		       "Stream management (XEP-0198) resumption attempts by result.");
	strbuf_printf(out, "stanzad_sm_resumptions_total{result=\"success\"} %llu\n"
		      "stanzad_sm_resumptions_total{result=\"failure\"} %llu\n",
		      (unsigned long long)s->w.sm_resumed, (unsigned long long)s->w.sm_resume_failed);
}

static void metrics_render_process(struct server *srv, struct strbuf *out)
{
	struct kpath paths[KPATHS_MAX];
	unsigned n = kpaths_describe(srv, paths);

	metrics_family(out, "stanzad_kernel_path_active", "gauge",
		       "1 when a kernel path is in use (see stanzactl paths for why not).");
	for (unsigned i = 0; i < n; i++)
		strbuf_printf(out, "stanzad_kernel_path_active{path=\"%s\"} %d\n", paths[i].name,
			      paths[i].active);
	metrics_family(out, "stanzad_build_info", "gauge", "The running version.");
	strbuf_printf(out, "stanzad_build_info{version=\"%s\"} 1\n", STANZAD_VERSION);
	metrics_family(out, "stanzad_start_time_seconds", "gauge",
		       "When the server started, in seconds since the Unix epoch.");
	strbuf_printf(out, "stanzad_start_time_seconds %lld\n", (long long)srv->started);
	metrics_family(out, "stanzad_heap_bytes", "gauge", "Bytes the allocator has handed out.");
	strbuf_printf(out, "stanzad_heap_bytes %zu\n", mallinfo2().uordblks);
}

void metrics_render(struct server *srv, struct strbuf *out)
{
	struct metrics_sum *s = calloc(1, sizeof(*s));

	if (!s) {
		out->oom = true;
		return;
	}
	metrics_sum_workers(srv, s);
	metrics_render_conns(srv, s, out);
	metrics_render_stanzas(s, out);
	metrics_render_storage(s, out);
	metrics_render_streams(s, out);
	metrics_render_process(srv, out);
	free(s);
}

void metrics_http(struct http_request *rq)
{
	struct server *srv = rq->c->w->srv;
	struct strbuf out = STRBUF_INIT;

	if (!metrics_peer_allowed(srv->cfg, &rq->c->peer)) {
		http_respond_error(rq, 403, "metrics are served to the addresses in metrics_allow");
		return;
	}
	metrics_render(srv, &out);
	if (out.oom)
		http_respond_error(rq, 500, "out of memory");
	else
		http_respond(rq, 200, METRICS_CONTENT_TYPE, out.data, out.len, NULL);
	strbuf_free(&out);
}
