/* SPDX-License-Identifier: MIT */
/*
 * XEP-0352 Client State Indication. See csi.h for the policy.
 *
 * Held presence lives in one arena per session (struct csi_held), as deep
 * copies with a delay stamp, and a small array indexes the latest copy
 * per sender full JID. A newer presence from the same sender replaces the
 * index entry; the older copy stays in the arena as garbage until the
 * flush, which is why the byte bound counts the arena, not the live
 * entries. Flushing sends in arrival order of the latest presences, then
 * frees everything.
 */
#include <errno.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "c2s.h"
#include "config.h"
#include "conn.h"
#include "csi.h"
#include "log.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "worker.h"

#define NS_DELAY	"urn:xmpp:delay"
#define CSI_ARENA_CHUNK	2048	/* a few presence stanzas per chunk */
#define CSI_MIN_ENTRIES	8

struct csi_entry {
	uint64_t hash;		/* of from */
	uint64_t seq;		/* arrival of the latest presence from this sender */
	const char *from;	/* in the arena */
	struct xml_node *st;	/* the latest presence, copied into the arena */
};

struct csi_held {
	struct arena arena;
	uint64_t next_seq;
	unsigned n, cap;
	struct csi_entry *v;
};

static uint64_t csi_hash(const char *s)
{
	uint64_t h = 0xcbf29ce484222325ULL;

	for (; *s; s++) {
		h ^= (unsigned char)*s;
		h *= 0x100000001b3ULL;
	}
	return h;
}

static void csi_held_free(struct csi_held *h)
{
	if (!h)
		return;
	arena_release(&h->arena);
	free(h->v);
	free(h);
}

static int csi_by_seq(const void *a, const void *b)
{
	const struct csi_entry *x = a, *y = b;

	return x->seq < y->seq ? -1 : x->seq > y->seq;
}

/*
 * Delivers what s holds, in arrival order, and frees it. The held set is
 * detached from the session first: a send that overflows the output
 * queue ends the session (and may free it) in the middle of the loop.
 */
static void csi_flush(struct session *s)
{
	struct csi_held *h = s->csi_held;
	struct conn *c = s->conn;

	if (!h)
		return;
	s->csi_held = NULL;
	if (h->n > 1)
		qsort(h->v, h->n, sizeof(h->v[0]), csi_by_seq);
	for (unsigned i = 0; i < h->n && c && !c->closing; i++)
		c2s_send_stanza(c, h->v[i].st);
	csi_held_free(h);
}

/* Presence broadcasts (available, unavailable): what an inactive client can wait for. */
static bool csi_holdable(const struct xml_node *st)
{
	const char *type;

	if (stanza_kind(st) != STANZA_PRESENCE)
		return false;
	type = stanza_type(st);
	return type[0] == '\0' || strcmp(type, "unavailable") == 0;
}

/* Adds <delay/> (XEP-0203) saying when the server received the presence. */
static int csi_stamp(struct arena *a, struct xml_node *st, const char *domain)
{
	struct xml_node *d;
	char stamp[32];
	struct tm tm;
	time_t now = time(NULL);

	if (xml_child(st, NS_DELAY, "delay"))
		return 0;	/* stamped already, by whoever delayed it first */
	if (!gmtime_r(&now, &tm) || !strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm))
		return 0;
	d = xml_node_add_child(a, st, NS_DELAY, "delay");
	if (!d || xml_attr_set(a, d, "from", domain) < 0 || xml_attr_set(a, d, "stamp", stamp) < 0)
		return -ENOMEM;
	return 0;
}

/*
 * Keeps a copy of st as the latest presence of `from`. 0, -ENOBUFS when a
 * bound is reached (nothing kept), -ENOMEM.
 */
static int csi_keep(struct session *s, const struct xml_node *st, const char *from)
{
	const struct config *cfg = s->conn->w->srv->cfg;
	struct csi_held *h = s->csi_held;
	uint64_t hash = csi_hash(from);
	struct csi_entry *e = NULL;
	struct xml_node *copy;

	if (!h) {
		h = calloc(1, sizeof(*h));
		if (!h)
			return -ENOMEM;
		arena_init(&h->arena, CSI_ARENA_CHUNK);
		s->csi_held = h;
	}
	/* A linear scan: bounded by max_csi_held_presence, the hash filters. */
	for (unsigned i = 0; i < h->n && !e; i++)
		if (h->v[i].hash == hash && strcmp(h->v[i].from, from) == 0)
			e = &h->v[i];
	if ((!e && h->n >= cfg->max_csi_held_presence) || h->arena.total >= cfg->max_csi_held_bytes)
		return -ENOBUFS;
	if (!e && h->n == h->cap) {
		unsigned ncap = h->cap ? h->cap * 2 : CSI_MIN_ENTRIES;
		struct csi_entry *v = realloc(h->v, ncap * sizeof(*v));

		if (!v)
			return -ENOMEM;
		h->v = v;
		h->cap = ncap;
	}
	copy = xml_node_clone(&h->arena, st);
	if (!copy || csi_stamp(&h->arena, copy, cfg->domain) < 0)
		return -ENOMEM;
	if (!e) {
		e = &h->v[h->n];
		e->hash = hash;
		e->from = arena_strdup(&h->arena, from);
		if (!e->from)
			return -ENOMEM;
		h->n++;
	}
	e->st = copy;
	e->seq = h->next_seq++;
	return 0;
}

bool csi_hold(struct session *s, struct xml_node *st)
{
	const char *from;
	int ret;

	/* The common case costs one test. */
	if (!s->csi_inactive) {
		/* Left over from before a stream resumption: out first. */
		if (s->csi_held)
			csi_flush(s);
		return false;
	}
	from = xml_attr_get(st, "from");
	if (!csi_holdable(st) || !from) {
		csi_flush(s);
		return false;
	}
	ret = csi_keep(s, st, from);
	if (ret == 0)
		return true;
	/* At a bound (or out of memory): deliver everything, this one last. */
	if (ret == -ENOMEM)
		log_warn("csi.hold_failed", "jid=%s msg=\"out of memory\"", s->jid);
	csi_flush(s);
	return false;
}

bool csi_element(struct conn *c, struct xml_node *el)
{
	struct session *s = c->sess;
	bool inactive = strcmp(el->name, "inactive") == 0;

	if (!s)
		return true;
	if (s->csi_inactive != inactive)
		log_debug("csi.state", "conn=%llu jid=%s state=%s", (unsigned long long)c->id,
			  s->jid, inactive ? "inactive" : "active");
	s->csi_inactive = inactive;
	/* Section 5.1: the flush happens before the next stanza is processed. */
	if (!inactive)
		csi_flush(s);
	return true;
}

void csi_stream_resumed(struct session *s)
{
	s->csi_inactive = false;
	if (s->conn)
		csi_flush(s);
}

void csi_session_end(struct session *s)
{
	csi_held_free(s->csi_held);
	s->csi_held = NULL;
	s->csi_inactive = false;
}
