/* SPDX-License-Identifier: MIT */
/*
 * The hub's web console (console.h): embedded pages, admin login with
 * session cookies, the device snapshot and its event stream, and the
 * read-outs that feed the snapshot's readings.
 */
#include <errno.h>
#include <inttypes.h>
#include <jansson.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/random.h>
#include <time.h>

#include <http_parser.h>
#include <openssl/crypto.h>

#include "admin.h"
#include "arena.h"
#include "config.h"
#include "conn.h"
#include "console.h"
#include "device.h"
#include "http.h"
#include "iot_rules.h"
#include "iot_store.h"
#include "jid.h"
#include "log.h"
#include "loop.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "storage.h"
#include "strbuf.h"
#include "worker.h"
#include "xml.h"

#define CONSOLE_TOKEN_HEX	(CONSOLE_TOKEN_BYTES * 2)
#define CONSOLE_ARENA_CHUNK	2048
/* Headers of every page and answer: no framing, no sniffing, no caching. */
#define CONSOLE_HEADERS \
	"Content-Security-Policy: default-src 'self'; frame-ancestors 'none'\r\n" \
	"X-Content-Type-Options: nosniff\r\nReferrer-Policy: no-referrer\r\n" \
	"Cache-Control: no-store\r\n"
#define CONSOLE_JSON		"application/json"

/* A login: the token its cookie carries, whose it is, until when. */
struct console_session {
	char token[CONSOLE_TOKEN_HEX + 1];	/* "" when the slot is free */
	char user[JID_MAX];			/* bare JID */
	uint64_t created_ms, expires_ms;	/* loop clock */
};

/* An open event stream: its connection and the login it belongs to. */
struct console_stream {
	bool used;
	uint32_t slot, gen;
	char token[CONSOLE_TOKEN_HEX + 1];
	uint64_t sent_version;		/* the snapshot version it was sent last */
	uint64_t last_send_ms;
};

/* One field of a device's latest read-out. */
struct console_field {
	char name[CONSOLE_NAME_MAX];
	char value[CONSOLE_NAME_MAX];
	char unit[CONSOLE_UNIT_MAX];
};

/* The latest readings of a device the console asked. */
struct console_reading {
	char jid[JID_MAX];		/* bare; "" when the slot is free */
	uint64_t asked_ms;		/* last read-out asked (loop clock) */
	uint64_t updated_ms;		/* last read-out kept, 0 none */
	char stamp[40];			/* its timestamp as the device gave it */
	unsigned n;
	struct console_field f[CONSOLE_FIELDS_MAX];
};

/* The snapshot request: the storage thread fills devices. */
struct console_req {
	struct storage_req req;		/* first */
	json_t *devices;		/* [{jid, user, tags, owner, logout_at, rules}] */
	uint64_t total;
	bool for_api;			/* answers GET /console/api/devices (req.slot/gen) */
};

/* A login being checked: the request waits (slot/gen) for the store. */
struct console_login {
	struct storage_req req;		/* first: user, password (wiped by the store) */
	char bare[JID_MAX];
};

/* A login's body, collected from the request (wiped when done). */
struct console_body {
	size_t len;
	char data[CONSOLE_MAX_BODY + 1];
};

static struct {
	struct console_session sessions[CONSOLE_MAX_SESSIONS];
	struct console_stream streams[CONSOLE_MAX_STREAMS];
	unsigned nstreams;
	unsigned logins;		/* in flight */
	struct console_reading readings[CONSOLE_READ_DEVICES];
	struct loop_timer tick;
	struct worker *tick_worker;	/* whose loop the tick runs on, NULL when idle */
	bool refreshing;		/* a snapshot request is with the store */
	char *snapshot;			/* the last snapshot (JSON), NULL before the first */
	uint64_t version;		/* bumped whenever the snapshot changes */
	uint64_t last_poll_ms;
} console;

/* Of the read-outs asked: they are sent from the devices' home workers. */
static _Atomic uint64_t console_seqnr;

bool console_enabled(const struct config *cfg)
{
	return cfg->console;
}

/* ---- Sessions ---- */

bool console_cookie(const char *header, const char *name, char *out, size_t size)
{
	size_t nlen = strlen(name);

	for (const char *p = header; p && *p;) {
		/* ',' too: http.c joins repeated headers with ", " (no cookie value holds one). */
		const char *end = strpbrk(p, ";,");
		size_t len = end ? (size_t)(end - p) : strlen(p);

		while (len && (*p == ' ' || *p == '\t')) {
			p++;
			len--;
		}
		if (len > nlen && p[nlen] == '=' && memcmp(p, name, nlen) == 0) {
			len -= nlen + 1;
			if (len >= size)
				return false;
			memcpy(out, p + nlen + 1, len);
			out[len] = '\0';
			return true;
		}
		p = end ? end + 1 : NULL;
	}
	return false;
}

/* The live login whose token is `token`, or NULL (expired ones are freed). */
static struct console_session *console_session_find(const char *token, uint64_t now)
{
	struct console_session *found = NULL;

	if (strlen(token) != CONSOLE_TOKEN_HEX)
		return NULL;
	for (unsigned i = 0; i < CONSOLE_MAX_SESSIONS; i++) {
		struct console_session *s = &console.sessions[i];

		if (!s->token[0])
			continue;
		if (now >= s->expires_ms) {
			log_info("console.session_expired", "user=%s", s->user);
			explicit_bzero(s, sizeof(*s));
			continue;
		}
		/* Constant time: a guess learns nothing from how long the compare took. */
		if (CRYPTO_memcmp(s->token, token, CONSOLE_TOKEN_HEX) == 0)
			found = s;
	}
	return found;
}

/* The login of a request (its cookie), or NULL. */
static struct console_session *console_session_of(struct http_request *rq)
{
	char token[CONSOLE_TOKEN_HEX + 2];

	if (!console_cookie(rq->cookie, CONSOLE_COOKIE, token, sizeof(token)))
		return NULL;
	return console_session_find(token, loop_now_ms(rq->c->w->loop));
}

/* A new login for bare; the oldest one makes room when all slots are taken. */
static struct console_session *console_session_new(const char *bare, uint64_t now)
{
	uint8_t raw[CONSOLE_TOKEN_BYTES];
	struct console_session *s = NULL;

	if (getrandom(raw, sizeof(raw), 0) != (ssize_t)sizeof(raw))
		return NULL;
	for (unsigned i = 0; i < CONSOLE_MAX_SESSIONS; i++) {
		struct console_session *c = &console.sessions[i];

		if (!c->token[0] || now >= c->expires_ms) {
			s = c;
			break;
		}
		if (!s || c->created_ms < s->created_ms)
			s = c;
	}
	explicit_bzero(s, sizeof(*s));
	for (unsigned i = 0; i < sizeof(raw); i++)
		snprintf(s->token + 2 * i, 3, "%02x", raw[i]);
	explicit_bzero(raw, sizeof(raw));
	snprintf(s->user, sizeof(s->user), "%s", bare);
	s->created_ms = now;
	s->expires_ms = now + (uint64_t)CONSOLE_SESSION_TTL_S * 1000;
	return s;
}

/* ---- Answers ---- */

/*
 * Answers with o as compact JSON (o is consumed) and the console's
 * security headers; extra adds header lines (Set-Cookie).
 */
static void console_json(struct http_request *rq, int status, json_t *o, const char *extra)
{
	char headers[512];
	char *text = json_dumps(o, JSON_COMPACT);

	json_decref(o);
	if (!text) {
		http_respond_error(rq, 500, "out of memory");
		return;
	}
	snprintf(headers, sizeof(headers), CONSOLE_HEADERS "%s", extra ? extra : "");
	http_respond(rq, status, CONSOLE_JSON, text, strlen(text), headers);
	free(text);
}

/* {"error": why}: the page shows it as it is. */
static void console_error(struct http_request *rq, int status, const char *why)
{
	console_json(rq, status, json_pack("{s:s}", "error", why), NULL);
}

/* ---- The snapshot ---- */

/*
 * Storage thread: one XEP-0324 rule of a device as JSON (kind, range,
 * allow, remote, nodes, fields when partial). The rule is ours to free.
 */
static int console_rule_add(void *arg, const char *thing, struct iot_rule *r)
{
	json_t *rules = arg;
	json_t *o = json_pack("{s:s, s:s, s:b, s:s, s:s}", "kind", iot_kind_name(r->kind), "range",
			      iot_range_name(r->range), "allow", r->result, "remote", r->remote,
			      "nodes", r->nodes);

	if (o && r->partial)
		json_object_set_new(o, "fields", json_string(r->partial));
	json_array_append_new(rules, o);
	free(r);
	return 0;
}

/*
 * Storage thread: one enrolled device; past CONSOLE_MAX_DEVICES only
 * counted (the page says how many it does not show).
 */
static int console_device_add(void *arg, const struct device_row *r)
{
	struct console_req *cr = arg;

	if (++cr->total > CONSOLE_MAX_DEVICES)
		return 0;
	json_array_append_new(cr->devices,
			      json_pack("{s:s, s:s, s:s, s:s?, s:I}", "jid", r->jid, "user", r->user,
					"tags", r->tags, "owner", r->owner, "logout_at",
					(json_int_t)r->logout_at));
	return 0;
}

/* Storage thread: the enrolled devices and each one's provisioning rules. */
static int console_run(struct storage *st, struct storage_req *req)
{
	struct console_req *cr = (struct console_req *)req;
	size_t i;
	json_t *d;
	int ret = device_db_list(st, console_device_add, cr);

	if (ret < 0)
		return ret;
	json_array_foreach(cr->devices, i, d) {
		json_t *rules = json_array();
		char owner[JID_MAX];
		bool clear_cache = false;

		ret = iot_db_thing_load(st, json_string_value(json_object_get(d, "jid")), owner,
					sizeof(owner), &clear_cache, console_rule_add, rules);
		json_object_set_new(d, "rules", rules);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* The readings kept for bare, or NULL: only devices the console asked have a slot. */
static struct console_reading *console_reading_find(const char *bare)
{
	for (unsigned i = 0; i < CONSOLE_READ_DEVICES; i++)
		if (console.readings[i].jid[0] && strcmp(console.readings[i].jid, bare) == 0)
			return &console.readings[i];
	return NULL;
}

/* The slot of bare, made when missing (the one asked longest ago makes room). */
static struct console_reading *console_reading_get(const char *bare)
{
	struct console_reading *r = console_reading_find(bare), *old = NULL;

	if (r)
		return r;
	for (unsigned i = 0; i < CONSOLE_READ_DEVICES; i++) {
		r = &console.readings[i];
		if (!r->jid[0]) {
			old = r;
			break;
		}
		if (!old || r->asked_ms < old->asked_ms)
			old = r;
	}
	memset(old, 0, sizeof(*old));
	snprintf(old->jid, sizeof(old->jid), "%s", bare);
	return old;
}

/*
 * Asks each session of an online device for a momentary read-out, from
 * the domain. At the device's home worker, where its sessions are.
 */
static void console_poll_sessions(struct worker *w, const char *bare, size_t len)
{
	const char *domain = w->srv->cfg->domain;
	struct arena a;

	arena_init(&a, CONSOLE_ARENA_CHUNK);
	for (struct session *s = sessdir_find_bare(w->sessions, bare, len); s; s = s->next) {
		struct xml_node *iq, *req;
		char id[40], seq[24];
		uint64_t n;

		if (s->ending)
			continue;
		n = atomic_fetch_add(&console_seqnr, 1) + 1;
		snprintf(id, sizeof(id), "console-%" PRIu64, n);
		snprintf(seq, sizeof(seq), "%" PRIu64, n);
		iq = xml_node_new(&a, XML_NS_CLIENT, "iq");
		/* Delivered straight to the session: the hub's admin reads every device. */
		if (iq && !xml_attr_set(&a, iq, "type", "get") && !xml_attr_set(&a, iq, "id", id) &&
		    !xml_attr_set(&a, iq, "from", domain) && !xml_attr_set(&a, iq, "to", s->jid) &&
		    (req = xml_node_add_child(&a, iq, NS_IOT_SENSORDATA, "req")) &&
		    !xml_attr_set(&a, req, "seqnr", seq) && !xml_attr_set(&a, req, "momentary", "true"))
			router_deliver(s, iq);
		arena_reset(&a);
	}
	arena_release(&a);
}

/*
 * A device asked for a read-out: its slot keeps the answer (console_sensor_data
 * takes only devices with a slot). Made before the answer can arrive.
 */
static void console_poll_asked(const char *bare, uint64_t now)
{
	console_reading_get(bare)->asked_ms = now;
}

/* Adds online state, last seen and readings to the stored rows (sessions: per row). */
static void console_annotate(json_t *devices, const unsigned *counts)
{
	size_t i;
	json_t *d;

	json_array_foreach(devices, i, d) {
		const char *jid = json_string_value(json_object_get(d, "jid"));
		unsigned sessions = counts[i];
		json_int_t logout = json_integer_value(json_object_get(d, "logout_at"));
		struct console_reading *r = console_reading_find(jid);
		json_t *fields = json_array();

		json_object_del(d, "logout_at");
		json_object_set_new(d, "online", json_boolean(sessions > 0));
		json_object_set_new(d, "sessions", json_integer(sessions));
		/* Online: seen now (the page says so); the time would change every tick. */
		json_object_set_new(d, "last_seen", !sessions && logout ? json_integer(logout)
									: json_null());
		for (unsigned k = 0; r && k < r->n; k++)
			json_array_append_new(fields, json_pack("{s:s, s:s, s:s}", "name", r->f[k].name,
								"value", r->f[k].value, "unit",
								r->f[k].unit));
		json_object_set_new(d, "readings", fields);
		json_object_set_new(d, "readings_time",
				    r && r->updated_ms ? json_string(r->stamp) : json_null());
	}
}

/*
 * Queues bytes on one stream; a connection gone meanwhile is left to
 * on_abort, which frees the stream's slot.
 */
static void console_stream_send(struct worker *w, struct console_stream *cs, const char *data,
				size_t len, uint64_t now)
{
	struct conn *c = worker_conn(w, cs->slot, cs->gen);

	if (http_event_send(c, data, len) == 0)
		cs->last_send_ms = now;
}

/* Sends the snapshot to the streams that have not seen this version. */
static void console_publish(struct worker *w, uint64_t now)
{
	struct strbuf ev = STRBUF_INIT;

	if (!console.snapshot)
		return;
	strbuf_printf(&ev, "event: devices\ndata: %s\n\n", console.snapshot);
	if (ev.oom) {
		strbuf_free(&ev);
		return;
	}
	for (unsigned i = 0; i < CONSOLE_MAX_STREAMS; i++) {
		struct console_stream *cs = &console.streams[i];

		if (cs->used && cs->sent_version != console.version) {
			cs->sent_version = console.version;
			console_stream_send(w, cs, ev.data, ev.len, now);
		}
	}
	strbuf_free(&ev);
}

/* Frees a snapshot request and the JSON it holds. */
static void console_req_free(struct console_req *cr)
{
	json_decref(cr->devices);
	free(cr);
}

/* The snapshot document around the annotated device list (a new string). */
static char *console_document(struct worker *w, struct console_req *cr)
{
	json_t *doc = json_pack("{s:s, s:I, s:O, s:I, s:b}", "domain", w->srv->cfg->domain, "now",
				(json_int_t)time(NULL), "devices", cr->devices, "total",
				(json_int_t)cr->total, "truncated", cr->total > CONSOLE_MAX_DEVICES);
	char *text = doc ? json_dumps(doc, JSON_COMPACT) : NULL;

	json_decref(doc);
	return text;
}

/*
 * The devices' online counts, gathered from the workers where they are at
 * home (their sessions are there): one message to each worker with
 * devices of its own, which counts them (and asks them for read-outs when
 * due) and sends the message back; the snapshot is made once all are
 * back. Not worker_gather(), which asks every worker the same question:
 * here each home gets only its own devices, and the asking worker
 * records the read-outs asked for before the devices' answers can arrive.
 */
struct console_gather {
	struct console_req *cr;
	uint64_t now;
	bool poll;			/* read-outs asked this time */
	unsigned waiting;		/* workers yet to answer */
	unsigned *sessions;		/* per row of cr->devices */
};

struct console_count {
	size_t index;			/* the row */
	unsigned sessions;		/* filled at the home */
	char *jid;
};

struct console_count_msg {
	struct worker_msg msg;		/* first */
	struct console_gather *g;	/* the asking worker's: only carried */
	unsigned asker;
	bool poll;
	size_t n, cap;
	struct console_count *dev;
};

static void console_count_msg_free(struct console_count_msg *cm)
{
	for (size_t i = 0; i < cm->n; i++)
		free(cm->dev[i].jid);
	free(cm->dev);
	free(cm);
}

static void console_gather_free(struct console_gather *g)
{
	console_req_free(g->cr);
	free(g->sessions);
	free(g);
}

/* All counts are in: the snapshot is made, for the API request or the streams. */
static void console_finish(struct worker *w, struct console_gather *g)
{
	struct console_req *cr = g->cr;
	struct http_request *rq = NULL;
	char *text;

	/* Nobody waits any more (or the server stops). */
	if (cr->for_api) {
		rq = http_pending_request(worker_conn(w, cr->req.slot, cr->req.gen));
		if (!rq)
			goto out;
	} else {
		console.refreshing = false;
		if (!console.nstreams || w->draining)
			goto out;
	}
	console_annotate(cr->devices, g->sessions);
	text = console_document(w, cr);
	if (rq) {
		if (text)
			http_respond(rq, 200, CONSOLE_JSON, text, strlen(text), CONSOLE_HEADERS);
		else
			http_respond_error(rq, 500, "the store failed");
		free(text);
	} else if (text) {
		/* "now" changes every second: compare what matters, the devices. */
		if (!console.snapshot || strcmp(strstr(console.snapshot, "\"devices\""),
						strstr(text, "\"devices\"")) != 0)
			console.version++;
		free(console.snapshot);
		console.snapshot = text;
		console_publish(w, g->now);
	}
out:
	console_gather_free(g);
}

/* Back at the asking worker: the counts of one worker's devices. */
static void console_count_back(struct worker *w, struct worker_msg *m)
{
	struct console_count_msg *cm = (struct console_count_msg *)m;
	struct console_gather *g = cm->g;

	for (size_t i = 0; i < cm->n; i++) {
		g->sessions[cm->dev[i].index] = cm->dev[i].sessions;
		/* Before its answer: the home sends that after this message. */
		if (cm->poll && cm->dev[i].sessions)
			console_poll_asked(cm->dev[i].jid, g->now);
	}
	console_count_msg_free(cm);
	if (--g->waiting == 0)
		console_finish(w, g);
}

/* At a home worker: its devices' sessions counted (and asked for read-outs). */
static void console_count_arrived(struct worker *w, struct worker_msg *m)
{
	struct console_count_msg *cm = (struct console_count_msg *)m;
	struct arena_mark mark = arena_mark(&w->tmp);

	for (size_t i = 0; i < cm->n; i++) {
		size_t len = strlen(cm->dev[i].jid);

		cm->dev[i].sessions = sessdir_count_bare(w->sessions, cm->dev[i].jid, len);
		if (cm->poll && cm->dev[i].sessions)
			console_poll_sessions(w, cm->dev[i].jid, len);
	}
	arena_rewind(&w->tmp, mark);
	worker_post(w, cm->asker, &cm->msg, console_count_back);
}

/* Adds row i (device jid) to the message for worker `home`, made on first use. 0 or -ENOMEM. */
static int console_count_add(struct console_count_msg **msgs, unsigned home,
			     struct console_gather *g, unsigned asker, size_t i, const char *jid)
{
	struct console_count_msg *cm = msgs[home];

	if (!cm) {
		cm = msgs[home] = calloc(1, sizeof(*cm));
		if (!cm)
			return -ENOMEM;
		cm->g = g;
		cm->asker = asker;
		cm->poll = g->poll;
	}
	if (cm->n == cm->cap) {
		size_t cap = cm->cap ? cm->cap * 2 : 16;
		struct console_count *d = realloc(cm->dev, cap * sizeof(*d));

		if (!d)
			return -ENOMEM;
		cm->dev = d;
		cm->cap = cap;
	}
	cm->dev[cm->n] = (struct console_count){ .index = i, .jid = strdup(jid) };
	if (!cm->dev[cm->n].jid)
		return -ENOMEM;
	cm->n++;
	return 0;
}

/*
 * Counts the sessions of the snapshot's devices: those at home here at
 * once, the others through their home workers (console_count_msg).
 * console_finish() runs when all are counted (at once when all are here).
 * -ENOMEM: nothing was posted, g is still the caller's.
 */
static int console_gather(struct worker *w, struct console_gather *g)
{
	struct console_count_msg *msgs[SERVER_MAX_WORKERS] = { 0 };
	unsigned nworkers = w->srv->nworkers;
	size_t i;
	json_t *d;
	int ret = 0;

	g->sessions = calloc(json_array_size(g->cr->devices) + 1, sizeof(*g->sessions));
	if (!g->sessions)
		return -ENOMEM;
	json_array_foreach(g->cr->devices, i, d) {
		const char *jid = json_string_value(json_object_get(d, "jid"));
		size_t len = strlen(jid);
		unsigned home = nworkers > 1 ? worker_home(w->srv, jid) : w->id;

		if (home != w->id) {
			ret = console_count_add(msgs, home, g, w->id, i, jid);
			if (ret < 0)
				break;
			continue;
		}
		g->sessions[i] = sessdir_count_bare(w->sessions, jid, len);
		if (g->poll && g->sessions[i]) {
			console_poll_asked(jid, g->now);
			console_poll_sessions(w, jid, len);
		}
	}
	if (ret < 0) {
		for (unsigned k = 0; k < nworkers; k++)
			if (msgs[k])
				console_count_msg_free(msgs[k]);
		return ret;
	}
	for (unsigned k = 0; k < nworkers; k++)
		if (msgs[k])
			g->waiting++;
	if (!g->waiting) {
		console_finish(w, g);
		return 0;
	}
	for (unsigned k = 0; k < nworkers; k++)
		if (msgs[k])
			worker_post(w, k, &msgs[k]->msg, console_count_arrived);
	return 0;
}

/* Worker: the store answered a snapshot request. */
static void console_done(struct storage_req *req)
{
	struct console_req *cr = (struct console_req *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	uint64_t now = loop_now_ms(w->loop);
	struct http_request *rq = NULL;
	struct console_gather *g;

	/* Nobody waits any more (or the server stops): nothing to annotate or ask. */
	if (cr->for_api) {
		rq = http_pending_request(worker_conn(w, req->slot, req->gen));
		if (!rq)
			goto out;
	} else if (!console.nstreams || w->draining) {
		console.refreshing = false;
		goto out;
	}
	if (req->result < 0) {
		log_warn("console.snapshot_failed", "err=\"%s\"", strerror(-req->result));
		goto failed;
	}
	g = calloc(1, sizeof(*g));
	if (!g)
		goto failed;
	g->cr = cr;
	g->now = now;
	/* Read-outs only while someone watches the events. */
	g->poll = console.nstreams && now - console.last_poll_ms >= CONSOLE_POLL_MS;
	if (g->poll)
		console.last_poll_ms = now;
	/* Still refreshing (streams) until the counts are in: one snapshot at a time. */
	if (console_gather(w, g) == 0)
		return;
	free(g->sessions);
	free(g);
failed:
	if (rq)
		http_respond_error(rq, 500, "the store failed");
	else
		console.refreshing = false;
out:
	console_req_free(cr);
}

/* Asks the store for the devices; for_api answers the request of c instead. */
/*
 * Asks the storage thread for the device rows. c NULL: for the event
 * streams (at most one such request in flight: `refreshing`); else the
 * answer goes to c's pending GET /console/api/devices. 0 or -ENOMEM.
 */
static int console_submit(struct worker *w, struct conn *c)
{
	struct console_req *cr = calloc(1, sizeof(*cr));

	if (!cr || !(cr->devices = json_array())) {
		free(cr);
		return -ENOMEM;
	}
	cr->req.op = STORAGE_OP_RUN;
	cr->req.run = console_run;
	cr->req.done = console_done;
	cr->req.inbox = &w->inbox;
	if (c) {
		cr->for_api = true;
		cr->req.slot = c->slot;
		cr->req.gen = c->gen;
	} else {
		console.refreshing = true;
	}
	storage_queue_submit(w->srv->store, &cr->req);
	return 0;
}

/* Ends the streams whose login is gone; pings the quiet ones. */
static void console_check_streams(struct worker *w, uint64_t now)
{
	static const char bye[] = "event: logout\ndata: {}\n\n";
	static const char ping[] = ": ping\n\n";

	for (unsigned i = 0; i < CONSOLE_MAX_STREAMS; i++) {
		struct console_stream *cs = &console.streams[i];
		struct conn *c;

		if (!cs->used)
			continue;
		if (!console_session_find(cs->token, now)) {
			c = worker_conn(w, cs->slot, cs->gen);
			http_event_send(c, bye, sizeof(bye) - 1);
			if (c && !c->closing)
				conn_close(c, CONN_CLOSE_PEER);
			continue;
		}
		if (now - cs->last_send_ms >= CONSOLE_PING_MS)
			console_stream_send(w, cs, ping, sizeof(ping) - 1, now);
	}
}

/*
 * Once a second while streams are open: end streams of lost logins,
 * ping quiet ones, rebuild the snapshot (read-outs are asked from its
 * completion). The timer stops with the last stream.
 */
static void console_tick_fired(struct loop_timer *t)
{
	struct worker *w = console.tick_worker;
	uint64_t now;

	if (!w)
		return;
	now = loop_now_ms(w->loop);
	console_check_streams(w, now);
	if (!console.refreshing && console.nstreams)
		console_submit(w, NULL);
	if (console.nstreams)
		loop_timer_arm(w->loop, t, CONSOLE_TICK_MS);
	else
		console.tick_worker = NULL;
}

/* rq->on_abort of an event stream: its connection went away. */
static void console_stream_gone(struct http_request *rq)
{
	struct console_stream *cs = rq->ctx;

	if (!cs || !cs->used)
		return;
	memset(cs, 0, sizeof(*cs));
	if (--console.nstreams == 0 && console.tick_worker) {
		loop_timer_cancel(&console.tick);
		console.tick_worker = NULL;
		/* Nobody watches: the next watcher starts from fresh data. */
		free(console.snapshot);
		console.snapshot = NULL;
	}
}

/*
 * GET /console/events for login s: starts the event stream, sends the
 * current snapshot at once if there is one, and starts the tick with the
 * first stream.
 */
static void console_events(struct http_request *rq, struct console_session *s)
{
	struct worker *w = rq->c->w;
	struct console_stream *cs = NULL;

	for (unsigned i = 0; i < CONSOLE_MAX_STREAMS && !cs; i++)
		if (!console.streams[i].used)
			cs = &console.streams[i];
	if (!cs) {
		console_error(rq, 503, "too many consoles are open");
		return;
	}
	http_respond_events(rq, "text/event-stream", CONSOLE_HEADERS);
	if (rq->c->closing || rq->method == HTTP_HEAD)
		return;
	cs->used = true;
	cs->slot = rq->c->slot;
	cs->gen = rq->c->gen;
	cs->last_send_ms = loop_now_ms(w->loop);
	cs->sent_version = console.version - 1;	/* the current snapshot is new to it */
	memcpy(cs->token, s->token, sizeof(cs->token));
	rq->ctx = cs;
	rq->on_abort = console_stream_gone;
	console.nstreams++;
	console_publish(w, cs->last_send_ms);
	if (!console.tick_worker) {
		console.tick_worker = w;
		console.tick.fn = console_tick_fired;
		loop_timer_arm(w->loop, &console.tick, CONSOLE_TICK_MS);
		if (!console.refreshing)
			console_submit(w, NULL);
	}
}

/* ---- Login ---- */

/*
 * Worker: the store checked the password. A session only for an admin
 * with the right password; the request may be gone (closed meanwhile).
 * The request's copy of the password was wiped by the storage thread; the
 * whole request is wiped again before it is freed.
 */
static void console_login_done(struct storage_req *req)
{
	struct console_login *cl = (struct console_login *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct http_request *rq = http_pending_request(worker_conn(w, req->slot, req->gen));
	const struct config *cfg = w->srv->cfg;
	struct console_session *s;
	char cookie[256], who[JID_MAX + 16];

	console.logins--;
	log_sanitize(who, sizeof(who), cl->bare, strlen(cl->bare));
	if (!rq)
		goto out;
	if (req->result < 0 && req->result != -ENOENT) {
		log_warn("console.login_error", "user=%s err=\"%s\"", who, strerror(-req->result));
		console_error(rq, 503, "the store failed; try again");
		goto out;
	}
	/* The same answer for a wrong password, an unknown account and a non-admin. */
	if (req->result < 0 || !req->plain_ok || !admin_is_admin(cfg, cl->bare)) {
		log_info("console.login_failed", "user=%s admin=%s", who,
			 admin_is_admin(cfg, cl->bare) ? "yes" : "no");
		console_error(rq, 403, "wrong user name or password, or not an administrator");
		goto out;
	}
	s = console_session_new(cl->bare, loop_now_ms(w->loop));
	if (!s) {
		console_error(rq, 503, "no randomness for a session token");
		goto out;
	}
	snprintf(cookie, sizeof(cookie),
		 "Set-Cookie: " CONSOLE_COOKIE "=%s; Path=" CONSOLE_PATH "; Max-Age=%d; HttpOnly; "
		 "SameSite=Strict%s\r\n", s->token, CONSOLE_SESSION_TTL_S,
		 http_request_tls(rq) ? "; Secure" : "");
	log_info("console.login", "user=%s", who);
	console_json(rq, 200, json_pack("{s:s}", "user", cl->bare), cookie);
	explicit_bzero(cookie, sizeof(cookie));
out:
	explicit_bzero(cl, sizeof(*cl));
	free(cl);
}

/* on_body of a login: collects at most CONSOLE_MAX_BODY bytes (413 past that). */
static int console_body_add(struct http_request *rq, const char *data, size_t len)
{
	struct console_body *b = rq->ctx;

	if (len > CONSOLE_MAX_BODY - b->len)
		return 413;
	memcpy(b->data + b->len, data, len);
	b->len += len;
	return 0;
}

/* Wipes (it holds a password) and frees a login's body; also the on_abort. */
static void console_body_free(struct http_request *rq)
{
	struct console_body *b = rq->ctx;

	if (b) {
		explicit_bzero(b, sizeof(*b));
		free(b);
	}
	rq->ctx = NULL;
}

/*
 * The user as typed (a localpart or a bare JID of this domain) into the
 * normalized localpart and bare JID. 0 or -EINVAL.
 */
static int console_login_user(const struct config *cfg, const char *in, char *user, size_t usize,
			      char *bare, size_t bsize)
{
	struct jid j;

	if (strchr(in, '@')) {
		if (jid_parse(&j, in, strlen(in)) < 0 || !jid_has_local(&j) || jid_has_resource(&j) ||
		    strlen(cfg->domain) != j.domain_len ||
		    memcmp(j.buf + j.domain_off, cfg->domain, j.domain_len) != 0 ||
		    j.local_len >= usize)
			return -EINVAL;
		memcpy(user, j.buf, j.local_len);
		user[j.local_len] = '\0';
	} else if (jid_prep_local(user, usize, in, strlen(in)) < 0) {
		return -EINVAL;
	}
	return snprintf(bare, bsize, "%s@%s", user, cfg->domain) < (int)bsize ? 0 : -EINVAL;
}

/* The body is in: {"user": "...", "password": "..."}. */
static void console_login_complete(struct http_request *rq)
{
	struct console_body *b = rq->ctx;
	struct worker *w = rq->c->w;
	const char *user, *pw;
	struct console_login *cl = NULL;
	json_t *o;

	b->data[b->len] = '\0';
	o = json_loadb(b->data, b->len, 0, NULL);
	console_body_free(rq);
	user = json_string_value(json_object_get(o, "user"));
	pw = json_string_value(json_object_get(o, "password"));
	if (!user || !pw || !*pw || strlen(pw) >= sizeof(cl->req.password)) {
		console_error(rq, 400, "give user and password");
		goto out;
	}
	if (console.logins >= CONSOLE_MAX_LOGINS) {
		console_error(rq, 503, "too many logins at once; try again");
		goto out;
	}
	cl = calloc(1, sizeof(*cl));
	if (!cl) {
		console_error(rq, 500, "out of memory");
		goto out;
	}
	if (console_login_user(w->srv->cfg, user, cl->req.user, sizeof(cl->req.user), cl->bare,
			       sizeof(cl->bare)) < 0) {
		free(cl);
		console_error(rq, 403, "wrong user name or password, or not an administrator");
		goto out;
	}
	memcpy(cl->req.password, pw, strlen(pw) + 1);
	cl->req.op = STORAGE_OP_ACCOUNT_VERIFY_PLAIN;
	cl->req.done = console_login_done;
	cl->req.inbox = &w->inbox;
	cl->req.slot = rq->c->slot;
	cl->req.gen = rq->c->gen;
	console.logins++;
	http_defer(rq);
	storage_queue_submit(w->srv->store, &cl->req);
out:
	/* jansson keeps the password in the tree: wipe it before the tree goes. */
	if (pw)
		explicit_bzero((char *)pw, strlen(pw));
	json_decref(o);
}

/* POST bodies must be JSON: a cross-site form cannot send that type. */
static bool console_json_body(struct http_request *rq)
{
	return strncasecmp(rq->content_type, CONSOLE_JSON, strlen(CONSOLE_JSON)) == 0;
}

/* POST /console/login: headers are in; the body is collected, then checked. */
static void console_login(struct http_request *rq)
{
	struct console_body *b;

	if (!console_json_body(rq)) {
		console_error(rq, 415, "send application/json");
		return;
	}
	if (rq->has_length && rq->content_length > CONSOLE_MAX_BODY) {
		console_error(rq, 413, "the login request is too long");
		return;
	}
	b = calloc(1, sizeof(*b));
	if (!b) {
		http_respond_error(rq, 500, "out of memory");
		return;
	}
	rq->ctx = b;
	rq->on_body = console_body_add;
	rq->on_complete = console_login_complete;
	rq->on_abort = console_body_free;
}

/*
 * POST /console/logout: forgets the login (its open streams are ended by
 * the next tick) and tells the browser to drop the cookie.
 */
static void console_logout(struct http_request *rq, struct console_session *s)
{
	if (!console_json_body(rq)) {
		console_error(rq, 415, "send application/json");
		return;
	}
	if (s) {
		log_info("console.logout", "user=%s", s->user);
		explicit_bzero(s, sizeof(*s));
	}
	console_json(rq, 200, json_object(),
		     "Set-Cookie: " CONSOLE_COOKIE "=; Path=" CONSOLE_PATH
		     "; Max-Age=0; HttpOnly; SameSite=Strict\r\n");
}

/* ---- Routing ---- */

/* One embedded file by name ("" is the page); 404 for anything else. */
static void console_asset(struct http_request *rq, const char *name)
{
	if (!*name)
		name = "index.html";
	for (size_t i = 0; i < console_nassets; i++) {
		if (strcmp(console_assets[i].name, name) == 0) {
			http_respond(rq, 200, console_assets[i].type, console_assets[i].data,
				     console_assets[i].len, CONSOLE_HEADERS);
			return;
		}
	}
	http_respond_error(rq, 404, NULL);
}

/*
 * Everything under /console/: login and logout take a POST without a
 * session, the API and the events need one, the rest are the pages.
 */
void console_http(struct http_request *rq)
{
	const char *sub = rq->path + strlen(CONSOLE_PATH);
	bool post = rq->method == HTTP_POST;
	struct console_session *s;

	if (strcmp(sub, "login") == 0) {
		if (!post)
			console_error(rq, 405, "POST the login");
		else
			console_login(rq);
		return;
	}
	s = console_session_of(rq);
	if (strcmp(sub, "logout") == 0) {
		if (!post)
			console_error(rq, 405, "POST the logout");
		else
			console_logout(rq, s);
		return;
	}
	if (post) {
		console_error(rq, 405, "only login and logout take a POST");
		return;
	}
	if (strcmp(sub, "api/devices") == 0 || strcmp(sub, "events") == 0) {
		if (!s) {
			console_error(rq, 401, "log in first");
			return;
		}
		if (sub[0] == 'e') {
			console_events(rq, s);
		} else if (console_submit(rq->c->w, rq->c) < 0) {
			http_respond_error(rq, 500, "out of memory");
		} else {
			http_defer(rq);
		}
		return;
	}
	console_asset(rq, sub);
}

/* ---- Read-outs ---- */

/*
 * Copies a device's string into dst, cut to fit at a character boundary
 * (the snapshot is JSON: a cut UTF-8 sequence would make it invalid).
 */
static void console_copy(char *dst, size_t size, const char *src)
{
	size_t n = strnlen(src, size - 1);

	if (n == size - 1)
		while (n && ((unsigned char)src[n] & 0xc0) == 0x80)
			n--;
	memcpy(dst, src, n);
	dst[n] = '\0';
}

/* Keeps the momentary, status and identity fields of one <fields/>. */
static void console_keep_fields(struct console_reading *r, const struct xml_node *fields)
{
	unsigned n = 0;
	const char *stamp = NULL;

	for (struct xml_node *node = xml_first_element(fields); node; node = xml_next_element(node)) {
		if (strcmp(node->name, "node") != 0 || strcmp(node->ns, NS_IOT_SENSORDATA) != 0)
			continue;
		for (struct xml_node *ts = xml_first_element(node); ts; ts = xml_next_element(ts)) {
			if (strcmp(ts->name, "timestamp") != 0)
				continue;
			for (struct xml_node *f = xml_first_element(ts); f && n < CONSOLE_FIELDS_MAX;
			     f = xml_next_element(f)) {
				const char *name = xml_attr_get(f, "name");
				const char *value = xml_attr_get(f, "value");
				const char *unit = xml_attr_get(f, "unit");

				if (!name || !value || !(xml_attr_get(f, "momentary") ||
							 xml_attr_get(f, "status") ||
							 xml_attr_get(f, "identity")))
					continue;
				/* Bounded copies: these strings come from the device. */
				console_copy(r->f[n].name, sizeof(r->f[n].name), name);
				console_copy(r->f[n].value, sizeof(r->f[n].value), value);
				console_copy(r->f[n].unit, sizeof(r->f[n].unit), unit ? unit : "");
				n++;
				stamp = xml_attr_get(ts, "value");
			}
		}
	}
	if (!n)
		return;
	r->n = n;
	console_copy(r->stamp, sizeof(r->stamp), stamp ? stamp : "");
}

bool console_sensor_data(struct worker *w, struct xml_node *st, const struct jid *from)
{
	struct xml_node *fields = xml_child(st, NS_IOT_SENSORDATA, "fields");
	char bare[JID_MAX];
	struct console_reading *r;

	if (!from || !fields || jid_bare_str(from, bare, sizeof(bare)) < 0)
		return false;
	/* Only devices the console asked: nobody else can fill the table. */
	r = console_reading_find(bare);
	if (!r)
		return false;
	console_keep_fields(r, fields);
	r->updated_ms = loop_now_ms(w->loop);
	return true;
}
