/* SPDX-License-Identifier: MIT */
/*
 * The control socket (see control.h): the listener, the request line, the
 * commands and their JSON answers.
 *
 * A control connection is a struct conn of kind CONN_CONTROL on worker
 * 0's loop: the loop's receive, output queue, deadline and close sequence
 * serve it as they serve a client. Its state (struct control_conn) holds
 * the request line until it is complete, then the answer text, which is
 * queued HTTP_FILE_CHUNK at a time as the peer reads (an answer may be
 * larger than max_output_bytes). Commands that need the store submit a
 * request to the storage thread and answer from its completion, finding
 * the connection again by slot and generation (it may be gone).
 *
 * JSON is built with jansson (Debian's libjansson), the same library
 * stanzactl reads it with.
 */
#include <errno.h>
#include <grp.h>
#include <jansson.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/socket.h>
#include <sys/stat.h>
#include <sys/un.h>
#include <time.h>
#include <unistd.h>

#include "c2s.h"
#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "control.h"
#include "control_db.h"
#include "jid.h"
#include "kpaths.h"
#include "bpf_guard.h"
#include "bpf_steer.h"
#include "log.h"
#include "mailbox.h"
#include "metrics.h"
#include "provisioning.h"
#include "roster.h"
#include "server.h"
#include "session.h"
#include "storage.h"
#include "strbuf.h"
#include "subscription.h"
#include "tls_certs.h"
#include "worker.h"

#ifndef STANZAD_VERSION
#define STANZAD_VERSION "0.1.0"
#endif

#define CONTROL_BACKLOG		16
#define CONTROL_OUT_CHUNK	(64 * 1024)	/* answer bytes queued per output drain */
#define CONTROL_TICK_MS		1000		/* log_tick() period */

struct control_conn {
	bool answered;			/* a request was taken: later input is ignored */
	size_t len;			/* request bytes so far */
	char *out;			/* the answer (json_dumps), queued as the peer reads */
	size_t out_len, out_off;
	char line[CONTROL_MAX_REQUEST + 1];
};

/*
 * The socket file this process created, removed at shutdown or exit, and
 * its identity: after a hand-over the path may already be the
 * successor's socket, which must stay.
 */
static char control_path[sizeof(((struct sockaddr_un *)0)->sun_path)];
static dev_t control_dev;
static ino_t control_ino;

/* Worker 0's once-a-second timer (log_tick). */
static struct loop_timer control_tick;
static struct worker *control_tick_worker;

/* ---- The socket ---- */

const char *control_socket_path(const struct config *cfg, char *buf, size_t size)
{
	if (cfg->control_socket && strcmp(cfg->control_socket, "off") == 0)
		return NULL;
	if (cfg->control_socket)
		snprintf(buf, size, "%s", cfg->control_socket);
	else
		snprintf(buf, size, "%s/%s", cfg->state_dir, CONTROL_SOCKET_NAME);
	return buf;
}

/*
 * A socket file left at path: a crash left it (nobody answers: remove
 * it), or a daemon runs there (refuse to take it over). 0 or -errno.
 */
static int control_clear_stale(const char *path, const struct sockaddr_un *sa)
{
	struct stat st;
	int fd, ret;

	if (lstat(path, &st) < 0)
		return errno == ENOENT ? 0 : -errno;
	if (!S_ISSOCK(st.st_mode)) {
		fprintf(stderr, "stanzad: control_socket %s exists and is not a socket\n", path);
		return -EEXIST;
	}
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0);
	if (fd < 0)
		return -errno;
	ret = connect(fd, (const struct sockaddr *)sa, sizeof(*sa)) == 0 ? 0 : -errno;
	close(fd);
	if (ret == 0) {
		fprintf(stderr, "stanzad: another process answers on the control socket %s "
			"(is stanzad running with this state directory?)\n", path);
		return -EADDRINUSE;
	}
	if (ret != -ECONNREFUSED && ret != -ENOENT) {
		fprintf(stderr, "stanzad: cannot check the control socket %s: %s\n", path,
			strerror(-ret));
		return ret;
	}
	return unlink(path) < 0 && errno != ENOENT ? -errno : 0;
}

/* Mode 0600, or 0660 and the group when control_group is set. 0 or -errno. */
static int control_set_access(const struct config *cfg, const char *path)
{
	struct group *g;

	if (!cfg->control_group)
		return chmod(path, 0600) < 0 ? -errno : 0;
	g = getgrnam(cfg->control_group);
	if (!g) {
		fprintf(stderr, "stanzad: control_group '%s' does not exist\n", cfg->control_group);
		return -ENOENT;
	}
	if (chown(path, (uid_t)-1, g->gr_gid) < 0 || chmod(path, 0660) < 0) {
		int e = errno;

		fprintf(stderr, "stanzad: cannot give the control socket %s to group %s: %s\n", path,
			cfg->control_group, strerror(e));
		return -e;
	}
	return 0;
}

int control_open(struct server *srv)
{
	const struct config *cfg = srv->cfg;
	struct sockaddr_un sa = { .sun_family = AF_UNIX };
	char path[PATH_MAX];
	struct listener *l;
	struct stat st;
	mode_t old;
	int fd, ret;

	if (!control_socket_path(cfg, path, sizeof(path)))
		return 0;
	if (strlen(path) >= sizeof(sa.sun_path)) {
		fprintf(stderr, "stanzad: control socket path %s is longer than %zu bytes (the Unix "
			"socket limit); set control_socket\n", path, sizeof(sa.sun_path) - 1);
		return -ENAMETOOLONG;
	}
	if (srv->nlisteners == SERVER_MAX_LISTENERS) {
		fprintf(stderr, "stanzad: too many listeners (at most %d)\n", SERVER_MAX_LISTENERS);
		return -EINVAL;
	}
	memcpy(sa.sun_path, path, strlen(path) + 1);
	ret = control_clear_stale(path, &sa);
	if (ret < 0)
		return ret;
	fd = socket(AF_UNIX, SOCK_STREAM | SOCK_NONBLOCK | SOCK_CLOEXEC, 0);
	if (fd < 0)
		goto err;
	/* Created 0600 at once: no moment where others may connect (no threads yet). */
	old = umask(0177);
	ret = bind(fd, (struct sockaddr *)&sa, sizeof(sa));
	umask(old);
	if (ret < 0)
		goto err_close;
	memcpy(control_path, path, strlen(path) + 1);
	if (lstat(path, &st) == 0) {
		control_dev = st.st_dev;
		control_ino = st.st_ino;
	}
	ret = control_set_access(cfg, path);
	if (ret < 0)
		goto err_unlink;
	if (listen(fd, CONTROL_BACKLOG) < 0)
		goto err_unlink_errno;
	l = &srv->listeners[srv->nlisteners++];
	l->fd = fd;
	l->kind = LISTENER_CONTROL;
	log_info("control.listen", "path=%s mode=%s group=%s", path,
		 cfg->control_group ? "0660" : "0600", cfg->control_group ? cfg->control_group : "-");
	/* For logs only: a long path is cut (the socket itself has the whole one). */
	snprintf(l->addr, sizeof(l->addr), "unix:%.*s", (int)sizeof(l->addr) - 6, path);
	return 0;

err_unlink_errno:
	ret = -errno;
	fprintf(stderr, "stanzad: cannot listen on the control socket %s: %s\n", path,
		strerror(-ret));
err_unlink:
	unlink(path);
	control_path[0] = '\0';
	close(fd);
	return ret;
err_close:
	ret = -errno;
	close(fd);
	errno = -ret;
err:
	ret = -errno;
	fprintf(stderr, "stanzad: cannot create the control socket %s: %s\n", path, strerror(-ret));
	return ret;
}

/* Removes the socket file if it is still the one we made. */
static void control_unlink_ours(void)
{
	struct stat st;

	if (control_path[0] && lstat(control_path, &st) == 0 && st.st_dev == control_dev &&
	    st.st_ino == control_ino)
		unlink(control_path);
	control_path[0] = '\0';
}

void control_close(struct server *srv)
{
	control_unlink_ours();
}

void control_shutdown(struct worker *w)
{
	struct server *srv = w->srv;

	if (w->id != 0 || !control_path[0])
		return;
	/*
	 * No new requests: the accept is cancelled (the fd stays open until
	 * close_listeners) and the path goes, so a successor taking over
	 * (handover.h) finds no live socket, and stanzactl says "not running".
	 */
	for (unsigned i = 0; i < srv->nlisteners; i++)
		if (srv->listeners[i].kind == LISTENER_CONTROL)
			loop_cancel_fd(w->loop, srv->listeners[i].fd);
	control_unlink_ours();
}

/* ---- Answers ---- */

/* Queues the answer as the peer reads it; closes once all of it is out. */
static void control_pump(struct conn *c)
{
	struct control_conn *cc = c->ctl;

	while (cc->out_off < cc->out_len && c->out_bytes < CONTROL_OUT_CHUNK && !c->closing) {
		size_t n = cc->out_len - cc->out_off;

		if (n > CONTROL_OUT_CHUNK)
			n = CONTROL_OUT_CHUNK;
		if (conn_send(c, cc->out + cc->out_off, n) < 0)
			return;
		cc->out_off += n;
	}
	if (cc->out_off == cc->out_len && !c->closing)
		conn_close(c, CONN_CLOSE_PEER);
}

/* Sends {"ok":..., ...} (takes the reference to obj) and ends the connection. */
static void control_send(struct conn *c, json_t *obj)
{
	struct control_conn *cc = c->ctl;
	char *text = obj ? json_dumps(obj, JSON_COMPACT) : NULL, *line;
	size_t n;

	json_decref(obj);
	if (!text) {
		conn_send_str(c, "{\"ok\":false,\"error\":\"out of memory\"}\n");
		conn_close(c, CONN_CLOSE_ERROR);
		return;
	}
	/* Room for the line end: the answer is one line. */
	n = strlen(text);
	line = realloc(text, n + 2);
	if (!line) {
		free(text);
		conn_close(c, CONN_CLOSE_ERROR);
		return;
	}
	cc->out = line;
	cc->out[n] = '\n';
	cc->out[n + 1] = '\0';
	cc->out_len = n + 1;
	cc->out_off = 0;
	conn_set_deadline(c, CONTROL_ANSWER_MS);
	control_pump(c);
}

static void control_reply(struct conn *c, json_t *result)
{
	control_send(c, json_pack("{s:b, s:o}", "ok", 1, "result", result ? result : json_object()));
}

static void control_fail(struct conn *c, const char *fmt, ...) __attribute__((format(printf, 2, 3)));

static void control_fail(struct conn *c, const char *fmt, ...)
{
	char why[512];
	va_list ap;

	json_t *obj;

	va_start(ap, fmt);
	vsnprintf(why, sizeof(why), fmt, ap);
	va_end(ap);
	obj = json_pack("{s:b, s:s}", "ok", 0, "error", why);
	if (!obj) {
		/* The request echoed in why was not UTF-8 (JSON strings must be). */
		for (char *p = why; *p; p++)
			if ((unsigned char)*p >= 0x80 || (unsigned char)*p < 0x20)
				*p = '?';
		obj = json_pack("{s:b, s:s}", "ok", 0, "error", why);
	}
	control_send(c, obj);
}

/* Adds key -> string when s is not NULL (else null). */
static void control_set_str(json_t *o, const char *key, const char *s)
{
	json_object_set_new(o, key, s ? json_string(s) : json_null());
}

/* A list answer: entries up to CONTROL_MAX_ITEMS, and whether more were left out. */
static void control_set_list(json_t *o, const char *key, json_t *list, uint64_t total)
{
	json_object_set_new(o, key, list);
	json_object_set_new(o, "total", json_integer((json_int_t)total));
	json_object_set_new(o, "truncated", json_boolean(total > json_array_size(list)));
}

/* ---- status and paths ---- */

static json_t *control_paths_json(const struct server *srv)
{
	struct kpath paths[KPATHS_MAX];
	unsigned n = kpaths_describe(srv, paths);
	json_t *a = json_array();

	for (unsigned i = 0; i < n; i++)
		json_array_append_new(a, json_pack("{s:s, s:b, s:s, s:s}", "name", paths[i].name,
						   "active", paths[i].active, "detail",
						   paths[i].detail, "reason", paths[i].reason));
	return a;
}

static uint64_t control_worker_conns(const struct worker *w)
{
	uint64_t n = 0;

	for (unsigned k = 0; k < METRICS_CONN_CLASSES; k++)
		n += METRIC_READ(w->metrics.conns[k]);
	return n;
}

static const char *control_listener_kind(enum listener_kind k)
{
	switch (k) {
	case LISTENER_C2S: return "c2s";
	case LISTENER_C2S_TLS: return "c2s_tls";
	case LISTENER_HTTP: return "http";
	case LISTENER_HTTPS: return "https";
	case LISTENER_S2S: return "s2s";
	case LISTENER_S2S_TLS: return "s2s_tls";
	case LISTENER_COMPONENT: return "component";
	case LISTENER_CONTROL: return "control";
	}
	return "other";
}

/*
 * status: version, domain, pid, started (Unix time), uptime_seconds,
 * workers [{id, connections, sessions}], connections, sessions, storage
 * {queue_depth, requests, commits, failures}, kernel_paths [...],
 * listeners [{kind, addr}], log {target, rate_limit}.
 */
static void control_status(struct conn *c, const char *arg)
{
	struct server *srv = c->w->srv;
	struct storage_queue_stats sq = { 0 };
	json_t *r = json_object(), *workers = json_array(), *ls = json_array();
	uint64_t total = 0;

	for (unsigned i = 0; i < srv->nworkers; i++) {
		uint64_t n = control_worker_conns(&srv->workers[i]);

		total += n;
		json_array_append_new(workers, json_pack("{s:i, s:I, s:I}", "id",
							 (int)srv->workers[i].id,
							 "connections", (json_int_t)n, "sessions",
							 (json_int_t)sessdir_size(srv->sessdirs[i])));
	}
	for (unsigned i = 0; i < srv->nlisteners; i++)
		json_array_append_new(ls, json_pack("{s:s, s:s}", "kind",
						    control_listener_kind(srv->listeners[i].kind),
						    "addr", srv->listeners[i].addr));
	if (srv->store)
		storage_queue_get_stats(srv->store, &sq);
	json_object_set_new(r, "version", json_string(STANZAD_VERSION));
	json_object_set_new(r, "domain", json_string(srv->cfg->domain));
	json_object_set_new(r, "pid", json_integer(getpid()));
	json_object_set_new(r, "started", json_integer((json_int_t)srv->started));
	json_object_set_new(r, "uptime_seconds", json_integer((json_int_t)(time(NULL) - srv->started)));
	json_object_set_new(r, "workers", workers);
	json_object_set_new(r, "connections", json_integer((json_int_t)total));
	json_object_set_new(r, "sessions", json_integer((json_int_t)server_sessions_total(srv)));
	json_object_set_new(r, "storage", json_pack("{s:I, s:I, s:I, s:I}",
						    "queue_depth", (json_int_t)sq.queued,
						    "requests", (json_int_t)sq.requests,
						    "commits", (json_int_t)sq.commits,
						    "failures", (json_int_t)sq.failures));
	json_object_set_new(r, "kernel_paths", control_paths_json(srv));
	json_object_set_new(r, "listeners", ls);
	json_object_set_new(r, "log", json_pack("{s:s, s:i}", "target",
						log_to_journal() ? "journal" : "stderr",
						"rate_limit", (int)srv->cfg->log_rate_limit));
	control_reply(c, r);
}

/* paths: paths [{name, active, detail, reason}]. */
static void control_paths(struct conn *c, const char *arg)
{
	control_reply(c, json_pack("{s:o}", "paths", control_paths_json(c->w->srv)));
}

/*
 * guard: the XDP guard (bpf_guard.c): active, detail, reason, syn_rate,
 * syn_burst, counters {passed, rate_dropped, ban_dropped} (zero when off).
 */
static void control_guard(struct conn *c, const char *arg)
{
	const struct config *cfg = c->w->srv->cfg;
	struct bpf_guard_counters gc;
	const char *detail, *reason;
	bool active = bpf_guard_state(&detail, &reason);

	bpf_guard_counters(&gc);
	control_reply(c, json_pack("{s:b, s:s, s:s, s:i, s:i, s:{s:I, s:I, s:I}}", "active", active,
				   "detail", detail, "reason", reason,
				   "syn_rate", (int)cfg->guard_syn_rate,
				   "syn_burst", (int)cfg->guard_syn_burst, "counters",
				   "passed", (json_int_t)gc.passed,
				   "rate_dropped", (json_int_t)gc.rate_dropped,
				   "ban_dropped", (json_int_t)gc.ban_dropped));
}

/* ---- workers and steering ---- */

/*
 * workers: workers [{id, connections, drained, selected}] (selected: new
 * connections the steering program sent it), steering {active, detail,
 * reason, fallbacks} (fallbacks: connections it left to the kernel's hash).
 */
static void control_workers(struct conn *c, const char *arg)
{
	struct server *srv = c->w->srv;
	struct bpf_steer_counters tc;
	const char *detail, *reason;
	bool active = bpf_steer_state(&detail, &reason);
	json_t *ws = json_array();

	bpf_steer_counters(&tc);
	for (unsigned i = 0; i < srv->nworkers && i < SERVER_MAX_WORKERS; i++)
		json_array_append_new(ws, json_pack("{s:i, s:I, s:b, s:I}", "id",
						    (int)srv->workers[i].id, "connections",
						    (json_int_t)control_worker_conns(&srv->workers[i]),
						    "drained", bpf_steer_drained(i), "selected",
						    (json_int_t)tc.selected[i]));
	control_reply(c, json_pack("{s:o, s:{s:b, s:s, s:s, s:I}}", "workers", ws, "steering",
				   "active", active, "detail", detail, "reason", reason,
				   "fallbacks", (json_int_t)tc.fallbacks));
}

/* workers drain N / undrain N: worker, drained. */
static void control_workers_set_drain(struct conn *c, const char *arg, bool drained)
{
	unsigned nworkers = c->w->srv->nworkers;
	const char *detail, *reason;
	unsigned long id;
	char *end;
	int ret;

	errno = 0;
	id = strtoul(arg, &end, 10);
	if (arg[0] < '0' || arg[0] > '9' || *end || errno || id >= nworkers) {
		control_fail(c, "no worker '%s' (workers are 0 to %u)", arg, nworkers - 1);
		return;
	}
	ret = bpf_steer_drain((unsigned)id, drained);
	if (ret == -ENODEV) {
		bpf_steer_state(&detail, &reason);
		control_fail(c, "steering is off (%s): the kernel's reuseport hash cannot drain a "
			     "worker", reason);
		return;
	}
	if (ret == -EBUSY) {
		control_fail(c, "worker %lu is the last one taking new connections: undrain another "
			     "first", id);
		return;
	}
	if (ret < 0) {
		control_fail(c, "cannot %s worker %lu: %s", drained ? "drain" : "undrain", id,
			     strerror(-ret));
		return;
	}
	control_reply(c, json_pack("{s:i, s:b}", "worker", (int)id, "drained", drained));
}

static void control_workers_drain(struct conn *c, const char *arg)
{
	control_workers_set_drain(c, arg, true);
}

static void control_workers_undrain(struct conn *c, const char *arg)
{
	control_workers_set_drain(c, arg, false);
}

/* ---- sessions ---- */

/*
 * The sessions live on their accounts' home workers: the commands that
 * read them ask those workers (worker_gather) and answer from the
 * completion, on this worker, if the control connection is still there.
 */
struct control_gather {
	uint32_t slot, gen;		/* the control connection */
	json_t *part[SERVER_MAX_WORKERS];	/* sessions list / kicked: one array per worker */
	uint64_t total[SERVER_MAX_WORKERS];	/* sessions list: sessions seen per worker */
	char jid[JID_MAX];		/* kick: the target */
	size_t bare_len;
	unsigned *counts;		/* users: sessions per listed account */
	struct control_req *cr;		/* users: the storage answer */
};

/* The control connection a gather answers, or NULL when it is gone. */
static struct conn *control_gather_conn(struct worker *w, const struct control_gather *g)
{
	struct conn *c = worker_conn(w, g->slot, g->gen);

	return c && !c->closing && c->kind == CONN_CONTROL ? c : NULL;
}

static struct control_gather *control_gather_new(struct conn *c)
{
	struct control_gather *g = calloc(1, sizeof(*g));

	if (!g)
		return NULL;
	g->slot = c->slot;
	g->gen = c->gen;
	return g;
}

static void control_gather_free(struct control_gather *g)
{
	for (unsigned k = 0; k < SERVER_MAX_WORKERS; k++)
		json_decref(g->part[k]);
	free(g->counts);
	free(g);
}

struct control_sessions {
	json_t *list;
	uint64_t total;
	uint64_t now_ms;
};

static void control_session_add(void *arg, struct session *s)
{
	struct control_sessions *cs = arg;
	struct conn *sc = s->conn;
	json_t *o;
	char peer[64];

	if (s->ending)
		return;
	if (++cs->total > CONTROL_MAX_ITEMS || !cs->list)
		return;
	o = json_pack("{s:s, s:b, s:i, s:b, s:b}", "jid", s->jid, "available", s->available,
		      "priority", s->priority, "stream_management", s->sm != NULL, "detached",
		      sc == NULL);
	if (sc) {
		json_object_set_new(o, "conn", json_integer((json_int_t)sc->id));
		json_object_set_new(o, "worker", json_integer(sc->w->id));
		json_object_set_new(o, "peer", json_string(conn_peer_str(sc, peer, sizeof(peer))));
		json_object_set_new(o, "transport", json_string(sc->websocket ? "websocket" : "c2s"));
		json_object_set_new(o, "tls", json_string(conn_tls_mode_name(sc)));
		json_object_set_new(o, "idle_seconds",
				    json_integer((json_int_t)((cs->now_ms - sc->last_input_ms) / 1000)));
	}
	json_array_append_new(cs->list, o);
}

/* On each worker: the sessions at home there (a new array: jansson objects are per thread). */
static void control_sessions_part(struct worker *w, void *arg)
{
	struct control_gather *g = arg;
	struct control_sessions cs = { json_array(), 0, loop_now_ms(w->loop) };

	sessdir_each(w->sessions, control_session_add, &cs);
	g->part[w->id] = cs.list;
	g->total[w->id] = cs.total;
}

static void control_sessions_done(struct worker *w, void *arg)
{
	struct control_gather *g = arg;
	struct conn *c = control_gather_conn(w, g);
	json_t *list = json_array(), *r = json_object(), *o;
	uint64_t total = 0;
	size_t i;

	for (unsigned k = 0; k < w->srv->nworkers; k++) {
		total += g->total[k];
		json_array_foreach(g->part[k], i, o)
			if (json_array_size(list) < CONTROL_MAX_ITEMS)
				json_array_append(list, o);
	}
	control_set_list(r, "sessions", list, total);
	if (c)
		control_reply(c, r);
	else
		json_decref(r);
	control_gather_free(g);
}

/*
 * sessions list: sessions [{jid, available, priority, stream_management,
 * detached, and with a connection: conn, worker, peer, transport, tls,
 * idle_seconds}], total, truncated. Worker by worker.
 */
static void control_sessions_list(struct conn *c, const char *arg)
{
	struct control_gather *g = control_gather_new(c);

	if (!g || worker_gather(c->w, control_sessions_part, control_sessions_done, g) < 0) {
		free(g);
		control_fail(c, "out of memory");
	}
}

/*
 * Ends one session as the XEP-0133 command does (admin.c): policy-violation,
 * which also rules out a stream-management resumption.
 */
static void control_kick_one(struct worker *w, struct session *s)
{
	log_info("control.kick", "jid=%s", s->jid);
	if (s->conn)
		c2s_stream_error(s->conn, "policy-violation", "the session was ended by an administrator");
	else
		c2s_session_end(w, s);	/* detached: no stream to tell */
}

/* At the account's home: ends the sessions, listing them in part[w->id]. */
static void control_kick_part(struct worker *w, void *arg)
{
	struct control_gather *g = arg;
	struct sessdir *dir = w->sessions;
	json_t *kicked = json_array();
	size_t len = strlen(g->jid), n, i = 0;
	bool full_jid = len > g->bare_len;
	char **full;

	g->part[w->id] = kicked;
	/*
	 * Full JIDs first, ended one by one after: ending a session runs other
	 * features (presence, stream management) that may change the list.
	 */
	n = full_jid ? 1 : sessdir_count_bare(dir, g->jid, g->bare_len);
	full = calloc(n ? n : 1, sizeof(*full));
	if (full && full_jid) {
		if (sessdir_find_full(dir, g->jid, len))
			full[i++] = strdup(g->jid);
	} else if (full) {
		for (struct session *s = sessdir_find_bare(dir, g->jid, g->bare_len); s && i < n;
		     s = s->next)
			if (!s->ending)
				full[i++] = strdup(s->jid);
	}
	for (size_t k = 0; k < i; k++) {
		struct session *s = full[k] ? sessdir_find_full(dir, full[k], strlen(full[k])) : NULL;

		if (s && !s->ending) {
			json_array_append_new(kicked, json_string(s->jid));
			control_kick_one(w, s);
		}
		free(full[k]);
	}
	free(full);
}

static void control_kick_done(struct worker *w, void *arg)
{
	struct control_gather *g = arg;
	struct conn *c = control_gather_conn(w, g);
	json_t *kicked = NULL;

	for (unsigned k = 0; k < w->srv->nworkers && !kicked; k++)
		kicked = g->part[k];
	if (!c) {
		/* Gone: nothing to answer. */
	} else if (!json_array_size(kicked)) {
		control_fail(c, "no session for %s", g->jid);
	} else {
		json_incref(kicked);
		control_reply(c, json_pack("{s:o}", "kicked", kicked));
	}
	control_gather_free(g);
}

/*
 * sessions kick JID: a full JID ends that session, a bare JID every
 * session of the account. kicked [full JIDs]. The account's home ends
 * them; the answer comes after.
 */
static void control_sessions_kick(struct conn *c, const char *arg)
{
	struct control_gather *g;
	struct jid j;
	char bare[JID_MAX];

	if (jid_parse(&j, arg, strlen(arg)) < 0 || !jid_has_local(&j)) {
		control_fail(c, "'%s' is not a user JID (user@domain or user@domain/resource)", arg);
		return;
	}
	if (j.domain_len != strlen(c->w->srv->cfg->domain) ||
	    memcmp(j.buf + j.domain_off, c->w->srv->cfg->domain, j.domain_len) != 0) {
		control_fail(c, "'%s' is not a JID of this server (%s)", arg, c->w->srv->cfg->domain);
		return;
	}
	g = control_gather_new(c);
	if (!g) {
		control_fail(c, "out of memory");
		return;
	}
	memcpy(g->jid, j.buf, j.len + 1);
	g->bare_len = j.domain_off + j.domain_len;
	snprintf(bare, sizeof(bare), "%.*s", (int)g->bare_len, j.buf);
	if (worker_gather_some(c->w, UINT64_C(1) << worker_home(c->w->srv, bare),
			       control_kick_part, control_kick_done, g) < 0) {
		free(g);
		control_fail(c, "out of memory");
	}
}

/* ---- Requests answered by the storage thread ---- */

enum control_op {
	CONTROL_OP_USERS = 0,
	CONTROL_OP_ROSTER,
	CONTROL_OP_QUEUES,
};

struct control_req {
	struct storage_req req;		/* first: req.user is the account asked about */
	enum control_op op;
	uint64_t total;			/* rows seen */
	struct strbuf rows;		/* users: "name\0"...; queues: "name\0count\0"... */
	struct roster *roster;		/* roster show */
};

static int control_collect_user(void *arg, const char *user)
{
	struct control_req *cr = arg;

	if (++cr->total <= CONTROL_MAX_ITEMS)
		strbuf_append(&cr->rows, user, strlen(user) + 1);
	return 0;
}

static int control_collect_queue(void *arg, const char *user, uint64_t count)
{
	struct control_req *cr = arg;
	char num[24];

	if (++cr->total <= CONTROL_MAX_ITEMS) {
		strbuf_append(&cr->rows, user, strlen(user) + 1);
		snprintf(num, sizeof(num), "%llu", (unsigned long long)count);
		strbuf_append(&cr->rows, num, strlen(num) + 1);
	}
	return 0;
}

/* Storage thread. */
static int control_run(struct storage *st, struct storage_req *req)
{
	struct control_req *cr = (struct control_req *)req;
	int ret;

	switch (cr->op) {
	case CONTROL_OP_USERS:
		return storage_account_list(st, control_collect_user, cr);
	case CONTROL_OP_ROSTER:
		ret = roster_db_account_exists(st, req->user);
		return ret < 0 ? ret : roster_load_sync(st, req->user, &cr->roster);
	case CONTROL_OP_QUEUES:
		return control_db_offline_counts(st, control_collect_queue, cr);
	}
	return -EINVAL;
}

/* users: [{user, jid, online, sessions}], by username; counts from the accounts' homes. */
static json_t *control_users_json(struct worker *w, struct control_req *cr, const unsigned *counts)
{
	const char *domain = w->srv->cfg->domain;
	json_t *list = json_array(), *r = json_object();
	char bare[JID_MAX];
	size_t i = 0;

	for (size_t off = 0; off < cr->rows.len; i++) {
		const char *user = cr->rows.data + off;
		unsigned sessions = counts ? counts[i] : 0;

		snprintf(bare, sizeof(bare), "%s@%s", user, domain);
		json_array_append_new(list, json_pack("{s:s, s:s, s:b, s:i}", "user", user, "jid",
						      bare, "online", sessions > 0, "sessions",
						      (int)sessions));
		off += strlen(user) + 1;
	}
	control_set_list(r, "users", list, cr->total);
	return r;
}

/* On each worker: the session counts of the listed accounts at home there. */
static void control_users_part(struct worker *w, void *arg)
{
	struct control_gather *g = arg;
	const char *domain = w->srv->cfg->domain;
	char bare[JID_MAX];
	size_t i = 0;

	for (size_t off = 0; off < g->cr->rows.len; i++) {
		const char *user = g->cr->rows.data + off;
		int n = snprintf(bare, sizeof(bare), "%s@%s", user, domain);

		off += strlen(user) + 1;
		if (n <= 0 || (size_t)n >= sizeof(bare) || worker_home(w->srv, bare) != w->id)
			continue;
		g->counts[i] = (unsigned)sessdir_count_bare(w->sessions, bare, (size_t)n);
	}
}

static void control_req_free(struct control_req *cr);

static void control_users_done(struct worker *w, void *arg)
{
	struct control_gather *g = arg;
	struct conn *c = control_gather_conn(w, g);

	if (c)
		control_reply(c, control_users_json(w, g->cr, g->counts));
	control_req_free(g->cr);
	control_gather_free(g);
}

/* The stored accounts are in: their session counts come from every worker. */
static void control_users_gather(struct conn *c, struct control_req *cr)
{
	struct control_gather *g = control_gather_new(c);
	size_t n = 0;

	for (size_t off = 0; off < cr->rows.len; off += strlen(cr->rows.data + off) + 1)
		n++;
	if (g) {
		g->cr = cr;
		g->counts = calloc(n ? n : 1, sizeof(*g->counts));
	}
	if (!g || !g->counts ||
	    worker_gather(c->w, control_users_part, control_users_done, g) < 0) {
		if (g)
			control_gather_free(g);
		control_req_free(cr);
		control_fail(c, "out of memory");
	}
}

static const char *control_subscription_name(uint8_t sub)
{
	switch (sub & (SUB_TO | SUB_FROM)) {
	case SUB_TO | SUB_FROM: return "both";
	case SUB_TO: return "to";
	case SUB_FROM: return "from";
	default: return "none";
	}
}

/*
 * roster: user, version, items [{jid, name, subscription, ask, approved,
 * groups []}], pending_requests [bare JIDs], total, truncated.
 */
static json_t *control_roster_json(struct control_req *cr)
{
	const struct roster *ro = cr->roster;
	json_t *items = json_array(), *pending = json_array(), *r = json_object();
	uint64_t total = 0;

	for (const struct roster_item *it = ro->items; it; it = it->next) {
		json_t *o, *groups = json_array();

		if (it->deleted || ++total > CONTROL_MAX_ITEMS)
			continue;
		for (const char *g = it->groups; g && *g;) {
			const char *end = strchr(g, ROSTER_GROUP_SEP);
			size_t len = end ? (size_t)(end - g) : strlen(g);

			json_array_append_new(groups, json_stringn(g, len));
			g = end ? end + 1 : g + len;
		}
		o = json_pack("{s:s, s:s, s:b, s:o}", "jid", it->jid, "subscription",
			      control_subscription_name(it->sub), "approved", it->approved,
			      "groups", groups);
		control_set_str(o, "name", it->name);
		control_set_str(o, "ask", (it->sub & SUB_PENDING_OUT) ? "subscribe" : NULL);
		json_array_append_new(items, o);
	}
	for (const struct roster_request *rq = ro->requests; rq; rq = rq->next)
		json_array_append_new(pending, json_stringn(rq->jid, rq->jid_len));
	json_object_set_new(r, "user", json_string(cr->req.user));
	json_object_set_new(r, "version", json_integer((json_int_t)ro->version));
	json_object_set_new(r, "pending_requests", pending);
	control_set_list(r, "items", items, total);
	return r;
}

/* queues: queues [{user, offline}], messages (all of them), total, truncated. */
static json_t *control_queues_json(struct worker *w, struct control_req *cr)
{
	json_t *list = json_array(), *r = json_object();
	struct storage_queue_stats sq = { 0 };
	uint64_t messages = 0;

	for (size_t off = 0; off < cr->rows.len;) {
		const char *user = cr->rows.data + off;
		const char *num = user + strlen(user) + 1;
		unsigned long long n = strtoull(num, NULL, 10);

		messages += n;
		json_array_append_new(list, json_pack("{s:s, s:I}", "user", user, "offline",
						      (json_int_t)n));
		off = (size_t)(num - cr->rows.data) + strlen(num) + 1;
	}
	storage_queue_get_stats(w->srv->store, &sq);
	control_set_list(r, "queues", list, cr->total);
	json_object_set_new(r, "messages", json_integer((json_int_t)messages));
	json_object_set_new(r, "storage_queue_depth", json_integer((json_int_t)sq.queued));
	return r;
}

static void control_req_free(struct control_req *cr)
{
	roster_free(cr->roster);
	strbuf_free(&cr->rows);
	free(cr);
}

/* Worker: the answer came back; the connection may be gone. */
static void control_done(struct storage_req *req)
{
	struct control_req *cr = (struct control_req *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct conn *c = worker_conn(w, req->slot, req->gen);

	if (!c || c->closing || c->kind != CONN_CONTROL) {
		control_req_free(cr);
		return;
	}
	if (req->result == -ENOENT && cr->op == CONTROL_OP_ROSTER)
		control_fail(c, "no account '%s'", req->user);
	else if (req->result < 0 || cr->rows.oom)
		control_fail(c, "the store failed: %s", strerror(req->result < 0 ? -req->result : ENOMEM));
	else if (cr->op == CONTROL_OP_USERS) {
		control_users_gather(c, cr);
		return;
	} else if (cr->op == CONTROL_OP_ROSTER)
		control_reply(c, control_roster_json(cr));
	else
		control_reply(c, control_queues_json(w, cr));
	control_req_free(cr);
}

/* Hands a question to the storage thread; the answer comes in control_done. */
static void control_submit(struct conn *c, enum control_op op, const char *user)
{
	struct control_req *cr = calloc(1, sizeof(*cr));

	if (!cr) {
		control_fail(c, "out of memory");
		return;
	}
	cr->op = op;
	cr->req.op = STORAGE_OP_RUN;
	cr->req.run = control_run;
	cr->req.done = control_done;
	cr->req.inbox = &c->w->inbox;
	cr->req.slot = c->slot;
	cr->req.gen = c->gen;
	if (user)
		snprintf(cr->req.user, sizeof(cr->req.user), "%s", user);
	storage_queue_submit(c->w->srv->store, &cr->req);
}

/* users list: every account, with how many sessions it has now. */
static void control_users_list(struct conn *c, const char *arg)
{
	control_submit(c, CONTROL_OP_USERS, NULL);
}

/* queues: stored offline messages per account. */
static void control_queues(struct conn *c, const char *arg)
{
	control_submit(c, CONTROL_OP_QUEUES, NULL);
}

/*
 * roster show USER (a username or a bare JID of this server): the stored
 * roster. Changes are persisted in order through the same queue, so the
 * store has every change made before this request.
 */
static void control_roster_show(struct conn *c, const char *arg)
{
	const char *domain = c->w->srv->cfg->domain;
	char user[JID_PART_MAX + 1];
	struct jid j;

	if (strchr(arg, '@')) {
		if (jid_parse(&j, arg, strlen(arg)) < 0 || !jid_has_local(&j) ||
		    jid_has_resource(&j) || j.domain_len != strlen(domain) ||
		    memcmp(j.buf + j.domain_off, domain, j.domain_len) != 0) {
			control_fail(c, "'%s' is not a user or bare JID of this server (%s)", arg, domain);
			return;
		}
		snprintf(user, sizeof(user), "%.*s", (int)j.local_len, j.buf);
	} else if (jid_prep_local(user, sizeof(user), arg, strlen(arg)) < 0) {
		control_fail(c, "'%s' is not a valid username", arg);
		return;
	}
	control_submit(c, CONTROL_OP_ROSTER, user);
}

/* ---- certs ---- */

static json_t *control_cert_json(const struct tls_cert_info *ci)
{
	json_t *names = json_array();

	for (const char *p = ci->dns_names; *p;) {
		const char *end = strchr(p, ',');
		size_t len = end ? (size_t)(end - p) : strlen(p);

		json_array_append_new(names, json_stringn(p, len));
		p = end ? end + 1 : p + len;
	}
	return json_pack("{s:s, s:s, s:s, s:s, s:I, s:s, s:s, s:o, s:s, s:b}",
			 "subject", ci->subject, "issuer", ci->issuer, "not_before", ci->not_before,
			 "not_after", ci->not_after, "days_left",
			 (json_int_t)((ci->not_after_epoch - (long long)time(NULL)) / 86400),
			 "serial", ci->serial, "sha256", ci->sha256, "dns_names", names, "key",
			 ci->key, "self_signed", ci->self_signed);
}

/* certs show: certificate {subject, issuer, ...}, cert_file, key_file. */
static void control_certs_show(struct conn *c, const char *arg)
{
	const struct config *cfg = c->w->srv->cfg;
	struct tls_cert_info ci;
	char cert[PATH_MAX];
	json_t *r;

	if (tls_certs_describe(c->w->srv->tls_starttls, &ci) < 0) {
		control_fail(c, "no certificate is loaded");
		return;
	}
	snprintf(cert, sizeof(cert), "%s", config_cert_path(cfg));
	r = json_pack("{s:o, s:s, s:s}", "certificate", control_cert_json(&ci), "cert_file", cert,
		      "key_file", config_key_path(cfg));
	control_reply(c, r);
}

/*
 * certs reload: reads cert and key again (the configured files, or the
 * generated pair in the state directory); new handshakes use them.
 * Answers like certs show, with the new certificate.
 */
static void control_certs_reload(struct conn *c, const char *arg)
{
	struct server *srv = c->w->srv;
	struct tls_cert_info ci;
	char cert[PATH_MAX], key[PATH_MAX], why[512];
	int ret;

	snprintf(cert, sizeof(cert), "%s", config_cert_path(srv->cfg));
	snprintf(key, sizeof(key), "%s", config_key_path(srv->cfg));
	/* The other workers start handshakes on these contexts without locks (mailbox.h). */
	worker_park_all(c->w);
	ret = tls_certs_reload(srv->tls_starttls, cert, key, why, sizeof(why));
	worker_resume_all(c->w);
	if (ret < 0) {
		log_warn("tls.reload_failed", "cert=%s key=%s err=\"%s\"", cert, key, why);
		control_fail(c, "%s; the running certificate is unchanged", why);
		return;
	}
	tls_certs_describe(srv->tls_starttls, &ci);
	log_info("tls.reload", "cert=%s sha256=%s not_after=%s", cert, ci.sha256, ci.not_after);
	control_reply(c, json_pack("{s:o, s:s, s:s}", "certificate", control_cert_json(&ci),
				   "cert_file", cert, "key_file", key));
}

/*
 * provisioning refresh JID: `stanzactl device import` changed the
 * enrollment of this device (provisioning.h). Answered at once; the
 * table follows one storage round trip later.
 */
static void control_provisioning_refresh(struct conn *c, const char *arg)
{
	struct jid j;

	if (jid_parse(&j, arg, strlen(arg)) < 0 || !jid_has_local(&j) || jid_has_resource(&j)) {
		control_fail(c, "'%s' is not a bare user JID", arg);
		return;
	}
	if (provisioning_refresh(c->w, j.buf) < 0) {
		control_fail(c, "out of memory");
		return;
	}
	control_reply(c, json_pack("{s:s}", "refreshing", j.buf));
}

/* cluster status: this node, Redis, the nodes and their sessions, inter-node lag (cluster.c). */
static void control_cluster_status(struct conn *c, const char *arg)
{
	control_reply(c, cluster_status_json(c->w->srv));
}

/* ---- Requests ---- */

struct control_cmd {
	const char *name;	/* one or two words */
	bool takes_arg;
	const char *arg_name;
	void (*run)(struct conn *c, const char *arg);
};

static const struct control_cmd control_cmds[] = {
	{ "status", false, NULL, control_status },
	{ "sessions list", false, NULL, control_sessions_list },
	{ "sessions kick", true, "JID", control_sessions_kick },
	{ "users list", false, NULL, control_users_list },
	{ "roster show", true, "USER", control_roster_show },
	{ "queues", false, NULL, control_queues },
	{ "certs show", false, NULL, control_certs_show },
	{ "certs reload", false, NULL, control_certs_reload },
	{ "paths", false, NULL, control_paths },
	{ "guard", false, NULL, control_guard },
	{ "workers drain", true, "N", control_workers_drain },	/* before "workers" */
	{ "workers undrain", true, "N", control_workers_undrain },
	{ "workers", false, NULL, control_workers },
	{ "provisioning refresh", true, "JID", control_provisioning_refresh },
	{ "cluster status", false, NULL, control_cluster_status },
};

#define CONTROL_NCMDS (sizeof(control_cmds) / sizeof(control_cmds[0]))
#define CONTROL_MAX_WORDS 4

/* The peer's uid for the log (SO_PEERCRED), -1 if unknown. */
static long control_peer_uid(const struct conn *c)
{
	struct ucred cred;
	socklen_t len = sizeof(cred);

	if (getsockopt(c->fd, SOL_SOCKET, SO_PEERCRED, &cred, &len) < 0)
		return -1;
	return (long)cred.uid;
}

/* Splits the line into words (in place). Returns the count, or -1 if more than max. */
static int control_words(char *line, char *words[], int max)
{
	int n = 0;

	for (char *p = strtok(line, " \t"); p; p = strtok(NULL, " \t")) {
		if (n == max)
			return -1;
		words[n++] = p;
	}
	return n;
}

static void control_dispatch(struct conn *c, char *line)
{
	char *w[CONTROL_MAX_WORDS], logline[160], logarg[160];
	int n = control_words(line, w, CONTROL_MAX_WORDS);

	if (n <= 0) {
		control_fail(c, n < 0 ? "too many words in the request" : "empty request");
		return;
	}
	for (size_t i = 0; i < CONTROL_NCMDS; i++) {
		const struct control_cmd *cmd = &control_cmds[i];
		const char *sp = strchr(cmd->name, ' ');
		int words = sp ? 2 : 1, want = words + (cmd->takes_arg ? 1 : 0);

		if (n < words || (sp ? strncmp(cmd->name, w[0], (size_t)(sp - cmd->name)) != 0 ||
					       strlen(w[0]) != (size_t)(sp - cmd->name) ||
					       strcmp(sp + 1, w[1]) != 0
				     : strcmp(cmd->name, w[0]) != 0))
			continue;
		if (n != want) {
			control_fail(c, "'%s' %s", cmd->name,
				     n < want ? "needs an argument" : "takes no more arguments");
			return;
		}
		log_info("control.request", "conn=%llu uid=%ld cmd=%s arg=%s",
			 (unsigned long long)c->id, control_peer_uid(c),
			 log_sanitize(logline, sizeof(logline), cmd->name, strlen(cmd->name)),
			 cmd->takes_arg ? log_sanitize(logarg, sizeof(logarg), w[words],
						       strlen(w[words])) : "-");
		cmd->run(c, cmd->takes_arg ? w[words] : NULL);
		return;
	}
	control_fail(c, "unknown command '%s' (status, sessions list, sessions kick JID, users list, "
		     "roster show USER, queues, certs show, certs reload, paths, guard, workers, "
		     "cluster status)", w[0]);
}

void control_accepted(struct conn *c)
{
	c->kind = CONN_CONTROL;
	c->ctl = calloc(1, sizeof(*c->ctl));
	if (!c->ctl) {
		conn_abort(c, CONN_CLOSE_ERROR);
		return;
	}
	conn_set_deadline(c, CONTROL_TIMEOUT_MS);
}

void control_input(struct conn *c, const char *data, size_t len)
{
	struct control_conn *cc = c->ctl;
	const char *nl;
	size_t take;

	if (!cc || cc->answered)
		return;	/* one request per connection */
	nl = memchr(data, '\n', len);
	take = nl ? (size_t)(nl - data) : len;
	if (cc->len + take > CONTROL_MAX_REQUEST) {
		cc->answered = true;
		control_fail(c, "request longer than %d bytes", CONTROL_MAX_REQUEST);
		return;
	}
	memcpy(cc->line + cc->len, data, take);
	cc->len += take;
	if (!nl)
		return;
	cc->answered = true;
	/* From here the store may take its time (a long batch): a longer deadline. */
	conn_set_deadline(c, CONTROL_ANSWER_MS);
	if (cc->len && cc->line[cc->len - 1] == '\r')
		cc->len--;
	cc->line[cc->len] = '\0';
	if (memchr(cc->line, '\0', cc->len)) {
		control_fail(c, "the request contains a NUL byte");
		return;
	}
	control_dispatch(c, cc->line);
}

void control_output_drained(struct conn *c)
{
	if (c->ctl && c->ctl->out)
		control_pump(c);
}

void control_deadline(struct conn *c)
{
	struct control_conn *cc = c->ctl;

	if (cc && !cc->answered) {
		cc->answered = true;
		control_fail(c, "no request within %d s", CONTROL_TIMEOUT_MS / 1000);
		return;
	}
	if (cc && !cc->out) {
		struct storage_queue_stats sq = { 0 };

		/* Its completion finds the connection closing and is dropped. */
		storage_queue_get_stats(c->w->srv->store, &sq);
		control_fail(c, "the store did not answer within %d s (%llu requests queued)",
			     CONTROL_ANSWER_MS / 1000, (unsigned long long)sq.queued);
		return;
	}
	/* Answered, but the peer does not read it. */
	conn_abort(c, CONN_CLOSE_TIMEOUT);
}

void control_conn_free(struct conn *c)
{
	if (!c->ctl)
		return;
	free(c->ctl->out);
	free(c->ctl);
	c->ctl = NULL;
}

/* ---- Worker 0's tick ---- */

static void control_tick_fired(struct loop_timer *t)
{
	log_tick();
	if (control_tick_worker)
		loop_timer_arm(control_tick_worker->loop, t, CONTROL_TICK_MS);
}

void control_worker_start(struct worker *w)
{
	if (w->id != 0)
		return;
	control_tick_worker = w;
	control_tick.fn = control_tick_fired;
	loop_timer_arm(w->loop, &control_tick, CONTROL_TICK_MS);
}

void control_worker_stop(struct worker *w)
{
	if (w != control_tick_worker)
		return;
	loop_timer_cancel(&control_tick);
	control_tick_worker = NULL;
}
