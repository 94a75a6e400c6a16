/* SPDX-License-Identifier: MIT */
/*
 * Room traffic for occupants at home on other workers
 * (docs/account-homes.md, section 2.6).
 *
 * The service runs on worker 0; an occupant's sessions live on the home
 * worker of its account, and only that worker may look them up. A
 * fan-out collects, per home worker, the full JIDs of the occupants
 * there and posts one message to each: the stanza as the fan-out already
 * serialized it without 'to' (its template), a copy of the tree for the
 * filters and hooks, and the list. The home gives each of its sessions
 * its copy through router_deliver_prepared(), exactly as the room does
 * for the sessions on worker 0 (block lists, client state indication,
 * stream management apply), and posts back the JIDs it found no session
 * for: the room removes those occupants as ghosts (status 333), as it
 * does when a delivery on worker 0 finds no session.
 *
 * Order: the messages of one worker to another run in the order posted,
 * and a fan-out posts its batches before it returns, so the copies one
 * occupant gets keep the room's order, whether a batch, a single
 * delivery (muc_remote_deliver) or the router carried them.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "config.h"
#include "log.h"
#include "mailbox.h"
#include "muc.h"
#include "muc_room.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "worker.h"

#define MUC_REMOTE_ARENA_CHUNK	4096

/* Copies for the sessions of one worker; everything lives in the message's arena. */
struct muc_remote_msg {
	struct worker_msg msg;		/* first */
	struct arena a;
	struct xml_node *st;		/* the stanza (its 'to' is set per copy) */
	char *text;			/* serialized without 'to' (fanout.h template) */
	size_t text_len;
	char *jids;			/* njids full JIDs, each ending with a NUL */
	uint32_t njids;
	char room[JID_MAX];		/* whose occupants they are ("" for none) */
};

static void remote_msg_free(struct muc_remote_msg *r)
{
	arena_release(&r->a);
	free(r);
}

/* The JIDs a worker found no session for, back to the service (worker 0). */
struct muc_gone_msg {
	struct worker_msg msg;		/* first */
	char room[JID_MAX];
	uint32_t njids;
	char jids[];			/* each ending with a NUL */
};

/*
 * The home worker of a full or bare JID of a local account; this worker
 * for any other JID (a session here or none: the room's usual rules).
 */
static unsigned home_of(const struct worker *w, const char *jid, size_t len)
{
	const char *domain = w->srv->cfg->domain;
	size_t dlen = strlen(domain);
	const char *slash = memchr(jid, '/', len);
	const char *at;
	char bare[JID_MAX];

	if (slash)
		len = (size_t)(slash - jid);
	at = memchr(jid, '@', len);
	if (!at || len >= sizeof(bare) || (size_t)(jid + len - at - 1) != dlen ||
	    memcmp(at + 1, domain, dlen) != 0)
		return w->id;
	memcpy(bare, jid, len);
	bare[len] = '\0';
	return worker_home(w->srv, bare);
}

bool muc_home_elsewhere(const struct worker *w, const char *jid, size_t len)
{
	/* Cluster mode: a requester on another node is answered through the router too. */
	return (w->srv->nworkers > 1 && home_of(w, jid, len) != w->id) ||
	       (cluster_enabled() && cluster_elsewhere(jid, len));
}

/* On worker 0: the sessions a home did not have are ghosts (muc.c purges them). */
static void muc_gone_arrived(struct worker *w, struct worker_msg *m)
{
	struct muc_gone_msg *g = (struct muc_gone_msg *)m;

	muc_ghosts_reported(w, g->room, g->jids, g->njids);
	free(g);
}

static void report_gone(struct worker *w, const char *room, const struct strbuf *gone,
			uint32_t n)
{
	struct muc_gone_msg *g = malloc(sizeof(*g) + gone->len);

	if (!g) {
		log_error("muc.remote_report_failed", "room=%s msg=\"out of memory\"", room);
		return;
	}
	snprintf(g->room, sizeof(g->room), "%s", room);
	g->njids = n;
	memcpy(g->jids, gone->data, gone->len);
	worker_post(w, 0, &g->msg, muc_gone_arrived);
}

/* At the occupants' home: one copy to each session, then the report of the missing. */
static void muc_remote_arrived(struct worker *w, struct worker_msg *m)
{
	struct muc_remote_msg *r = (struct muc_remote_msg *)m;
	struct fanout f = FANOUT_INIT;
	struct strbuf gone = STRBUF_INIT;
	const char *jid = r->jids;
	uint32_t ngone = 0;

	if (fanout_prepare_bytes(&f, r->text, r->text_len) < 0) {
		log_error("muc.remote_failed", "room=%s msg=\"out of memory\"", r->room);
		goto out;
	}
	for (uint32_t i = 0; i < r->njids; i++) {
		size_t len = strlen(jid);
		struct session *s = sessdir_find_full(w->sessions, jid, len);
		const char *data = NULL;
		size_t dlen = 0;

		if (!s) {
			strbuf_append(&gone, jid, len + 1);
			ngone++;
		} else if (s->conn && !(data = fanout_render(&f, jid, len, &dlen))) {
			log_error("muc.fanout_failed", "msg=\"out of memory\"");
		} else {
			/* A detached session (stream management) takes the tree. */
			router_deliver_prepared(s, r->st, jid, data, dlen);
		}
		jid += len + 1;
	}
	if (ngone && !gone.oom)
		report_gone(w, r->room, &gone, ngone);
out:
	strbuf_free(&gone);
	fanout_release(&f);
	remote_msg_free(r);
}

/* Posts st (text: it serialized without 'to') for the JIDs in jids[0..jids_len) to `to`. */
static int post_copies(struct muc_ctx *c, unsigned to, const struct muc_room *room,
		       const struct xml_node *st, const char *text, size_t text_len,
		       const char *jids, size_t jids_len, uint32_t njids)
{
	struct muc_remote_msg *r;

	/*
	 * Every session is being closed, and a worker whose loop ended
	 * would never run (nor free) the message.
	 */
	if (c->w->srv->shutting_down)
		return 0;
	r = calloc(1, sizeof(*r));
	if (!r)
		goto oom;
	arena_init(&r->a, MUC_REMOTE_ARENA_CHUNK);
	r->st = xml_node_clone(&r->a, st);
	r->text = arena_strndup(&r->a, text, text_len);
	r->jids = arena_alloc(&r->a, jids_len);
	if (!r->st || !r->text || !r->jids) {
		remote_msg_free(r);
		goto oom;
	}
	memcpy(r->jids, jids, jids_len);
	r->text_len = text_len;
	r->njids = njids;
	snprintf(r->room, sizeof(r->room), "%s", room ? room->jid : "");
	worker_post(c->w, to, &r->msg, muc_remote_arrived);
	return 0;
oom:
	log_error("muc.remote_failed", "msg=\"out of memory\"");
	return -ENOMEM;
}

/* The batch that goes with fan-out f (one per variant the service serializes). */
static struct muc_batch *batch_of(struct muc_service *svc, const struct fanout *f)
{
	return f == &svc->fan_anon ? &svc->remote_anon : &svc->remote_jid;
}

bool muc_remote_add(struct muc_ctx *c, const struct fanout *f, const struct xml_node *st,
		    const char *jid, size_t len)
{
	unsigned n = c->w->srv->nworkers, home;
	struct muc_batch *b;

	if (n == 1)
		return false;
	home = home_of(c->w, jid, len);
	if (home == c->w->id || home >= n)
		return false;
	b = batch_of(c->svc, f);
	if (!b->jids) {
		b->jids = calloc(n, sizeof(*b->jids));
		b->count = calloc(n, sizeof(*b->count));
		if (!b->jids || !b->count) {
			free(b->jids);
			free(b->count);
			b->jids = NULL;
			b->count = NULL;
			log_error("muc.remote_failed", "msg=\"out of memory\"");
			return true;
		}
		b->nworkers = n;
	}
	b->st = st;
	strbuf_append(&b->jids[home], jid, len);
	strbuf_append(&b->jids[home], "", 1);
	b->count[home]++;
	return true;
}

void muc_remote_flush(struct muc_ctx *c, const struct muc_room *room, const struct fanout *f)
{
	struct muc_batch *b = batch_of(c->svc, f);
	const char *text;
	size_t text_len;

	if (!b->jids || !b->st)
		return;
	text = fanout_template(f, &text_len);
	for (unsigned k = 0; k < b->nworkers; k++) {
		if (!b->count[k])
			continue;
		if (b->jids[k].oom)
			log_error("muc.remote_failed", "msg=\"out of memory\"");
		else
			post_copies(c, k, room, b->st, text, text_len, b->jids[k].data,
				    b->jids[k].len, b->count[k]);
		strbuf_clear(&b->jids[k]);
		b->count[k] = 0;
	}
	b->st = NULL;
}

int muc_remote_deliver(struct muc_ctx *c, const char *jid, struct xml_node *st)
{
	size_t len = strlen(jid);
	unsigned home;
	struct fanout f = FANOUT_INIT;
	const char *text;
	size_t text_len;
	int ret;

	if (c->w->srv->nworkers == 1)
		return -EAGAIN;
	home = home_of(c->w, jid, len);
	if (home == c->w->id || home >= c->w->srv->nworkers)
		return -EAGAIN;
	if (fanout_prepare(&f, st) < 0) {
		fanout_release(&f);
		return -ENOMEM;
	}
	text = fanout_template(&f, &text_len);
	ret = post_copies(c, home, c->room, st, text, text_len, jid, len + 1, 1);
	fanout_release(&f);
	return ret;
}

void muc_batch_free(struct muc_batch *b)
{
	for (unsigned k = 0; b->jids && k < b->nworkers; k++)
		strbuf_free(&b->jids[k]);
	free(b->jids);
	free(b->count);
	b->jids = NULL;
	b->count = NULL;
}
