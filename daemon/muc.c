/* SPDX-License-Identifier: MIT */
/*
 * The MUC service (XEP-0045): the entry from the router, the room table,
 * affiliation lists, delivery and error helpers, persistence, and the
 * startup load. See muc.h for the overview.
 *
 * Reentrancy: delivering to a session can end another session (an output
 * overflow closes its connection at once), whose unavailable presence to
 * its rooms comes straight back here while a room is in the middle of a
 * fan-out. muc_route() therefore queues calls that arrive while it is
 * busy and handles them, in order, once the current stanza is done; no
 * handler ever sees the room model change under it.
 *
 * The stanza's 'from'/'to' attribute values, stamped by c2s in the
 * worker's scratch arena, would die if something inside a delivery reset
 * that arena (router_bounce_w does): the attribute list is copied into the
 * service's own arena first.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cluster.h"
#include "config.h"
#include "log.h"
#include "muc.h"
#include "muc_room.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "storage.h"
#include "stored_xml.h"
#include "worker.h"

#define MUC_ARENA_CHUNK		8192
#define MUC_BUCKETS_MIN		64

/* Log values from the network (nicknames, JIDs with odd resources) quoted. */
#define Q(buf, s) log_sanitize(buf, sizeof(buf), s, strlen(s))

bool muc_enabled(const struct config *cfg)
{
	return cfg->muc;
}

int64_t muc_now(void)
{
	return (int64_t)time(NULL);
}

void muc_format_time(int64_t t, char *out, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, size, "1970-01-01T00:00:00Z");
}

/*
 * Ids must be unpredictable (XEP-0313 3: archive UIDs) and cheap: random
 * bytes come from a pool refilled by one getrandom() per few hundred ids.
 */
void muc_new_id(struct muc_service *svc, char out[MUC_ID_LEN + 1])
{
	static const char b64[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	const size_t need = MUC_ID_LEN * 6 / 8;
	const uint8_t *r;

	if (svc->pool_left < need) {
		if (getrandom(svc->pool, sizeof(svc->pool), 0) != (ssize_t)sizeof(svc->pool)) {
			/* Never short for this size once seeded; keep going regardless. */
			for (size_t i = 0; i < sizeof(svc->pool); i++)
				svc->pool[i] ^= (uint8_t)(random() >> 7);
		}
		svc->pool_left = sizeof(svc->pool);
	}
	r = svc->pool + sizeof(svc->pool) - svc->pool_left;
	svc->pool_left -= need;
	for (size_t i = 0, o = 0; i < need; i += 3) {
		uint32_t v = (uint32_t)r[i] << 16 | (uint32_t)r[i + 1] << 8 | r[i + 2];

		out[o++] = b64[v >> 18 & 63];
		out[o++] = b64[v >> 12 & 63];
		out[o++] = b64[v >> 6 & 63];
		out[o++] = b64[v & 63];
	}
	out[MUC_ID_LEN] = '\0';
}

char *muc_occupant_jid(struct muc_ctx *c, const struct muc_room *room, const char *nick)
{
	size_t n = strlen(nick);
	char *s = arena_alloc(c->a, room->jid_len + n + 2);

	if (!s)
		return NULL;
	memcpy(s, room->jid, room->jid_len);
	s[room->jid_len] = '/';
	memcpy(s + room->jid_len + 1, nick, n + 1);
	return s;
}

/* ---- The room table ---- */

/* FNV-1a with a per-process seed: room names come from the network. */
static uint32_t muc_hash(const struct muc_service *svc, const char *s, size_t len)
{
	uint32_t h = 2166136261u ^ svc->hash_seed;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 16777619u;
	}
	return h;
}

struct muc_room *muc_room_find(struct muc_service *svc, const char *name, size_t len)
{
	uint32_t h = muc_hash(svc, name, len);

	for (struct muc_room *r = svc->buckets[h & (svc->nbuckets - 1)]; r; r = r->hnext)
		if (r->hash == h && r->name_len == len && memcmp(r->jid, name, len) == 0)
			return r;
	return NULL;
}

/* Doubles the table when it is as full as it is wide. Failure only costs speed. */
static void muc_table_grow(struct muc_service *svc)
{
	size_t n = svc->nbuckets * 2;
	struct muc_room **b = calloc(n, sizeof(*b));

	if (!b)
		return;
	for (size_t i = 0; i < svc->nbuckets; i++) {
		struct muc_room *r = svc->buckets[i], *next;

		for (; r; r = next) {
			next = r->hnext;
			r->hnext = b[r->hash & (n - 1)];
			b[r->hash & (n - 1)] = r;
		}
	}
	free(svc->buckets);
	svc->buckets = b;
	svc->nbuckets = n;
}

struct muc_room *muc_room_create(struct muc_service *svc, const char *name, size_t len)
{
	struct muc_room *room;
	size_t jid_len = len + 1 + svc->domain_len;
	size_t slot;

	room = calloc(1, sizeof(*room) + jid_len + 1);
	if (!room)
		return NULL;
	memcpy(room->jid, name, len);
	room->jid[len] = '@';
	memcpy(room->jid + len + 1, svc->domain, svc->domain_len + 1);
	room->jid_len = jid_len;
	room->name_len = len;
	room->hash = muc_hash(svc, name, len);
	muc_config_defaults(svc, &room->cfg);
	if (svc->nrooms >= svc->nbuckets)
		muc_table_grow(svc);
	slot = room->hash & (svc->nbuckets - 1);
	room->hnext = svc->buckets[slot];
	svc->buckets[slot] = room;
	svc->nrooms++;
	return room;
}

/* Frees a room and everything it holds (not in the table any more, or never was). */
static void muc_room_free(struct muc_room *room)
{
	struct muc_occupant *o;
	struct muc_affil *a;

	while ((o = room->occupants) != NULL) {
		room->occupants = o->next;
		muc_occupant_free(o);
	}
	while ((a = room->affils) != NULL) {
		room->affils = a->next;
		free(a->nick);
		free(a);
	}
	muc_history_free(room);
	muc_config_free(&room->cfg);
	free(room->subject);
	free(room->subject_nick);
	free(room);
}

/* Takes a room out of the table (it stays allocated). */
static void muc_room_unlink(struct muc_service *svc, struct muc_room *room)
{
	struct muc_room **pp = &svc->buckets[room->hash & (svc->nbuckets - 1)];

	for (; *pp; pp = &(*pp)->hnext) {
		if (*pp == room) {
			*pp = room->hnext;
			svc->nrooms--;
			return;
		}
	}
}

/* ---- Persistence: requests to the storage thread, fire and forget ---- */

/*
 * Each request carries copies of what it writes (one allocation, strings
 * packed behind the struct): the room may change or go before the
 * storage thread gets to it, and the queue keeps the order of writes.
 */
struct muc_put_req {
	struct storage_req req;		/* first */
	struct muc_room_row row;
	struct muc_affiliation_row *affs;
	size_t naff;
	char buf[];
};

struct muc_delete_req {
	struct storage_req req;		/* first */
	bool with_archive;
	char name[];
};

struct muc_archive_req {
	struct storage_req req;		/* first */
	struct muc_archive_row row;
	const char *room, *real_bare;
	uint32_t keep;
	char buf[];
};

static int muc_put_run(struct storage *st, struct storage_req *req)
{
	struct muc_put_req *pr = (struct muc_put_req *)req;

	return muc_db_room_put(st, &pr->row, pr->affs, pr->naff);
}

static int muc_delete_run(struct storage *st, struct storage_req *req)
{
	struct muc_delete_req *dr = (struct muc_delete_req *)req;

	return muc_db_room_delete(st, dr->name, dr->with_archive);
}

static int muc_archive_run(struct storage *st, struct storage_req *req)
{
	struct muc_archive_req *ar = (struct muc_archive_req *)req;

	return muc_db_archive_put(st, ar->room, &ar->row, ar->real_bare, ar->keep);
}

/* Completion of a write: nobody waits for it; a failure is logged. */
static void muc_write_done(struct storage_req *req)
{
	if (req->result < 0)
		log_error("muc.store_failed", "room=%s err=%d", req->user, req->result);
	free(req);
}

/* The room's copy of the configuration holds its password: wiped before free. */
static void muc_put_done(struct storage_req *req)
{
	struct muc_put_req *pr = (struct muc_put_req *)req;

	if (pr->row.password)
		explicit_bzero((char *)pr->row.password, strlen(pr->row.password));
	muc_write_done(req);
}

/* Hands a filled request to the storage thread; done (muc_write_done by default) frees it. */
static void muc_submit(struct muc_ctx *c, struct storage_req *req, const char *room_name,
		       int (*run)(struct storage *st, struct storage_req *req))
{
	req->op = STORAGE_OP_RUN;
	req->run = run;
	if (!req->done)
		req->done = muc_write_done;
	req->inbox = &c->w->inbox;
	/* req->user names the room in the failure log line. */
	snprintf(req->user, sizeof(req->user), "%s", room_name);
	storage_queue_submit(c->w->srv->store, req);
}

/* Copies s (may be NULL) to *p, advancing it; returns the copy or NULL. */
static const char *pack(char **p, const char *s)
{
	size_t n;
	char *d;

	if (!s)
		return NULL;
	n = strlen(s) + 1;
	d = *p;
	memcpy(d, s, n);
	*p += n;
	return d;
}

static size_t opt_len(const char *s)
{
	return s ? strlen(s) + 1 : 0;
}

/* The room's name as a string (its JID up to '@'), in the context's arena. */
static char *muc_room_name(struct muc_ctx *c, const struct muc_room *room)
{
	return arena_strndup(c->a, room->jid, room->name_len);
}

/* Queues the removal of a room's rows (and its archive when with_archive). */
static void muc_submit_delete(struct muc_ctx *c, const struct muc_room *room,
			      bool with_archive)
{
	const char *name = muc_room_name(c, room);
	struct muc_delete_req *dr;

	if (!name)
		goto oom;
	dr = calloc(1, sizeof(*dr) + strlen(name) + 1);
	if (!dr)
		goto oom;
	dr->with_archive = with_archive;
	memcpy(dr->name, name, strlen(name) + 1);
	muc_submit(c, &dr->req, name, muc_delete_run);
	return;
oom:
	log_error("muc.store_failed", "room=%.*s msg=\"out of memory\"", (int)room->name_len,
		  room->jid);
}

void muc_persist(struct muc_ctx *c, struct muc_room *room)
{
	const struct muc_config *cfg = &room->cfg;
	struct muc_put_req *pr;
	size_t size, i = 0;
	char *p;

	if (!cfg->persistent) {
		/* No longer persistent: the rows go, the archive stays with the room. */
		if (room->stored)
			muc_submit_delete(c, room, false);
		room->stored = false;
		return;
	}
	/* One allocation: the struct, the affiliation rows, then every string. */
	size = sizeof(*pr) + room->naffils * sizeof(struct muc_affiliation_row) +
	       room->name_len + 1 + opt_len(cfg->title) + opt_len(cfg->description) +
	       opt_len(cfg->password) + opt_len(room->subject) + opt_len(room->subject_nick);
	for (const struct muc_affil *a = room->affils; a; a = a->next)
		size += a->jid_len + 1 + opt_len(a->nick);
	pr = calloc(1, size);
	if (!pr) {
		log_error("muc.store_failed", "room=%.*s msg=\"out of memory\"",
			  (int)room->name_len, room->jid);
		return;
	}
	pr->affs = (struct muc_affiliation_row *)pr->buf;
	p = pr->buf + room->naffils * sizeof(struct muc_affiliation_row);
	memcpy(p, room->jid, room->name_len);
	p[room->name_len] = '\0';
	pr->row.name = p;
	p += room->name_len + 1;
	pr->row.title = pack(&p, cfg->title);
	pr->row.description = pack(&p, cfg->description);
	pr->row.password = pack(&p, cfg->password);
	pr->row.subject = pack(&p, room->subject);
	pr->row.subject_nick = pack(&p, room->subject_nick);
	pr->row.subject_at = room->subject_at;
	pr->row.max_users = cfg->max_users;
	pr->row.history_len = cfg->history_len;
	pr->row.allow_pm = cfg->allow_pm;
	pr->row.public_room = cfg->public_room;
	pr->row.members_only = cfg->members_only;
	pr->row.moderated = cfg->moderated;
	pr->row.non_anonymous = cfg->non_anonymous;
	pr->row.change_subject = cfg->change_subject;
	pr->row.allow_invites = cfg->allow_invites;
	pr->row.archive = cfg->archive;
	for (const struct muc_affil *a = room->affils; a; a = a->next, i++) {
		pr->affs[i].jid = pack(&p, a->jid);
		pr->affs[i].aff = a->aff;
		pr->affs[i].nick = pack(&p, a->nick);
	}
	pr->naff = i;
	room->stored = true;
	pr->req.done = muc_put_done;
	muc_submit(c, &pr->req, pr->row.name, muc_put_run);
}

void muc_archive_put(struct muc_ctx *c, struct muc_room *room, const struct muc_occupant *occ,
		     const char *sid, const char *text, size_t len, int64_t at)
{
	struct muc_archive_req *ar;
	char *p;

	/* The text is copied: the fan-out's template is reused by the next stanza. */
	ar = calloc(1, sizeof(*ar) + room->name_len + 1 + strlen(sid) + 1 + occ->nick_len + 1 +
			   occ->jid_len + 1 + occ->bare_len + 1 + len + 1);
	if (!ar) {
		log_error("muc.archive_failed", "room=%.*s msg=\"out of memory\"",
			  (int)room->name_len, room->jid);
		return;
	}
	p = ar->buf;
	memcpy(p, room->jid, room->name_len);
	p[room->name_len] = '\0';
	ar->room = p;
	p += room->name_len + 1;
	ar->row.stanza_id = pack(&p, sid);
	ar->row.nick = pack(&p, occ->nick);
	ar->row.real_jid = pack(&p, occ->jid);
	memcpy(p, occ->jid, occ->bare_len);
	p[occ->bare_len] = '\0';
	ar->real_bare = p;
	p += occ->bare_len + 1;
	memcpy(p, text, len);
	p[len] = '\0';
	ar->row.stanza = p;
	ar->row.stanza_len = len;
	ar->row.at = at;
	ar->keep = c->svc->cfg->max_muc_archive;
	room->archived = true;
	muc_submit(c, &ar->req, ar->room, muc_archive_run);
}

void muc_room_destroy(struct muc_ctx *c, struct muc_room *room)
{
	char q[256];

	log_info("muc.room_destroyed", "room=%s", Q(q, room->jid));
	/* Stored rows and the archive go with the room (a new one may take the name). */
	if (room->stored || room->archived)
		muc_submit_delete(c, room, true);
	muc_room_unlink(c->svc, room);
	if (c->room == room)
		c->room = NULL;
	muc_room_free(room);
}

bool muc_room_maybe_destroy(struct muc_ctx *c, struct muc_room *room)
{
	if (room->noccupants || (room->cfg.persistent && !room->locked))
		return false;
	muc_room_destroy(c, room);
	return true;
}

/* ---- Affiliation lists ---- */

struct muc_affil *muc_affil_find(const struct muc_room *room, const char *jid, size_t len)
{
	for (struct muc_affil *a = room->affils; a; a = a->next)
		if (a->jid_len == len && memcmp(a->jid, jid, len) == 0)
			return a;
	return NULL;
}

enum muc_affiliation muc_room_affiliation(const struct muc_room *room, const char *jid,
					  size_t len)
{
	const char *slash = memchr(jid, '/', len), *at;
	struct muc_affil *a;
	size_t bare = slash ? (size_t)(slash - jid) : len;

	a = muc_affil_find(room, jid, bare);
	if (a)
		return a->aff;
	/* A whole domain may be listed (bans, XEP-0045 9.2). */
	at = memchr(jid, '@', bare);
	if (at) {
		a = muc_affil_find(room, at + 1, bare - (size_t)(at + 1 - jid));
		if (a)
			return a->aff;
	}
	return MUC_AFF_NONE;
}

int muc_affil_set(struct muc_room *room, const char *jid, size_t len, enum muc_affiliation aff,
		  const char *nick)
{
	struct muc_affil **pp, *a;
	char *n = NULL;

	/* nowners is kept in step here: the last-owner rule reads it (10.5). */
	for (pp = &room->affils; *pp; pp = &(*pp)->next)
		if ((*pp)->jid_len == len && memcmp((*pp)->jid, jid, len) == 0)
			break;
	a = *pp;
	if (aff == MUC_AFF_NONE) {
		if (a) {
			*pp = a->next;
			if (a->aff == MUC_AFF_OWNER)
				room->nowners--;
			room->naffils--;
			free(a->nick);
			free(a);
		}
		return 0;
	}
	if (nick && nick[0]) {
		n = strdup(nick);
		if (!n)
			return -ENOMEM;
	}
	if (!a) {
		if (room->naffils >= MUC_MAX_AFFILIATIONS) {
			free(n);
			return -ENOSPC;
		}
		a = calloc(1, sizeof(*a) + len + 1);
		if (!a) {
			free(n);
			return -ENOMEM;
		}
		memcpy(a->jid, jid, len);
		a->jid_len = len;
		a->aff = MUC_AFF_NONE;
		*pp = a;	/* appended: lists come back in the order given */
		room->naffils++;
	}
	if (a->aff == MUC_AFF_OWNER)
		room->nowners--;
	if (aff == MUC_AFF_OWNER)
		room->nowners++;
	a->aff = (uint8_t)aff;
	if (aff == MUC_AFF_OUTCAST) {
		/* Outcasts have no reserved nickname (XEP-0045 9.1). */
		free(n);
		free(a->nick);
		a->nick = NULL;
	} else if (nick) {
		free(a->nick);
		a->nick = n;	/* NULL for "": cleared */
	}
	return 0;
}

const struct muc_affil *muc_nick_reserved(const struct muc_room *room, const char *nick)
{
	for (const struct muc_affil *a = room->affils; a; a = a->next)
		if (a->nick && strcmp(a->nick, nick) == 0)
			return a;
	return NULL;
}

uint32_t muc_room_max_users(const struct muc_service *svc, const struct muc_room *room)
{
	uint32_t cap = svc->cfg->max_muc_occupants;

	return room->cfg.max_users && room->cfg.max_users < cap ? room->cfg.max_users : cap;
}

/* ---- Sending ---- */

int muc_deliver(struct muc_ctx *c, const char *jid, struct xml_node *st)
{
	struct session *s;
	int ret;

	/* Cluster mode: a session on another node gets it through the router. */
	if (cluster_enabled() && cluster_elsewhere(jid, strlen(jid)))
		return router_route_copy(c->w, st, jid, strlen(jid)) < 0 ? -ENOENT : 0;
	/* A session at home on another worker: posted there (muc_remote.c). */
	ret = muc_remote_deliver(c, jid, st);
	if (ret != -EAGAIN)
		return ret == -ENOMEM ? -ENOMEM : 0;
	s = sessdir_find_full(c->w->sessions, jid, strlen(jid));
	if (!s)
		return -ENOENT;
	if (xml_attr_set(c->a, st, "to", jid) < 0)
		return -ENOMEM;
	router_deliver(s, st);
	return 0;
}

void muc_route_out(struct muc_ctx *c, struct xml_node *st)
{
	if (router_route_stanza(c->w, st) < 0)
		log_warn("muc.route_failed", "msg=\"could not route a room stanza\"");
}

/* Answers go to the sender's session; a sender with none (gone) gets nothing. */
static void muc_reply(struct muc_ctx *c, struct xml_node *r)
{
	if (!r) {
		log_warn("muc.reply_failed", "msg=\"out of memory\"");
		return;
	}
	muc_deliver(c, c->from->buf, r);
}

/* A reply shell: same name and id, from = the request's 'to', to = its sender. */
static struct xml_node *muc_reply_shell(struct muc_ctx *c, const char *type)
{
	struct xml_node *r = xml_node_new(c->a, XML_NS_CLIENT, c->st->name);
	const char *id = xml_attr_get(c->st, "id");

	if (!r || xml_attr_set(c->a, r, "from", c->to->buf) < 0 ||
	    (id && xml_attr_set(c->a, r, "id", id) < 0) ||
	    xml_attr_set(c->a, r, "type", type) < 0)
		return NULL;
	return r;
}

void muc_reply_error(struct muc_ctx *c, const char *condition, const char *text)
{
	muc_reply_error_typed(c, NULL, condition, text);
}

void muc_reply_error_typed(struct muc_ctx *c, const char *type, const char *condition,
			   const char *text)
{
	struct xml_node *r, *err, *ch;
	char by[JID_MAX];

	if (stanza_is_error(c->st))
		return;
	r = muc_reply_shell(c, "error");
	if (!r)
		goto out;
	if (stanza_kind(c->st) == STANZA_PRESENCE) {
		/* XEP-0045 7.2: an empty <x/> (never echo the password back). */
		if (!xml_node_add_child(c->a, r, NS_MUC, "x"))
			goto fail;
	} else {
		for (ch = xml_first_element(c->st); ch; ch = xml_next_element(ch)) {
			struct xml_node *copy;

			if (strcmp(ch->ns, XML_NS_CLIENT) == 0 && strcmp(ch->name, "error") == 0)
				continue;
			copy = xml_node_clone(c->a, ch);
			if (!copy)
				goto fail;
			xml_node_append(r, copy);
		}
	}
	jid_bare_str(c->to, by, sizeof(by));
	err = xml_node_add_child(c->a, r, XML_NS_CLIENT, "error");
	if (!type)
		type = stanza_error_type(condition);
	if (!err || xml_attr_set(c->a, err, "type", type) < 0 ||
	    xml_attr_set(c->a, err, "by", by) < 0 ||
	    !xml_node_add_child(c->a, err, NS_STANZAS, condition))
		goto fail;
	if (text) {
		struct xml_node *t = xml_node_add_child(c->a, err, NS_STANZAS, "text");

		if (!t || xml_attr_set_ns(c->a, t, XML_NS_XML, "lang", "en") < 0 ||
		    xml_node_add_text(c->a, t, text, strlen(text)) < 0)
			goto fail;
	}
out:
	muc_reply(c, r);
	return;
fail:
	muc_reply(c, NULL);
}

void muc_reply_result(struct muc_ctx *c, struct xml_node *payload)
{
	struct xml_node *r = muc_reply_shell(c, "result");

	if (r && payload)
		xml_node_append(r, payload);
	muc_reply(c, r);
}

/* ---- The entry point ---- */

/* Copies st's attribute list into a (see the reentrancy note at the top). */
static int muc_rehome_attrs(struct xml_node *st, struct arena *a)
{
	struct xml_attr *head = NULL, **tail = &head;

	for (const struct xml_attr *at = st->attrs; at; at = at->next) {
		struct xml_attr *n = arena_alloc(a, sizeof(*n));

		if (!n)
			return -ENOMEM;
		n->next = NULL;
		n->ns = at->ns ? arena_strdup(a, at->ns) : NULL;
		n->name = arena_strdup(a, at->name);
		n->value = arena_strdup(a, at->value);
		if ((at->ns && !n->ns) || !n->name || !n->value)
			return -ENOMEM;
		*tail = n;
		tail = &n->next;
	}
	st->attrs = head;
	return 0;
}

/*
 * Handles one stanza for the service, a room or an occupant JID. Every
 * tree it builds lives in the service's arena, which the caller resets.
 */
static void muc_handle(struct muc_service *svc, struct worker *w, struct xml_node *st,
		       const struct jid *from, const struct jid *to)
{
	struct muc_ctx c = {
		.w = w,
		.svc = svc,
		.st = st,
		.from = from,
		.to = to,
		.a = &svc->arena,
	};
	enum stanza_kind kind = stanza_kind(st);

	if (muc_rehome_attrs(st, c.a) < 0) {
		log_error("muc.handle_failed", "msg=\"out of memory\"");
		return;
	}
	if (!jid_has_local(to)) {
		/* The service itself: disco and friends; nothing else lives there. */
		if (kind == STANZA_IQ && !jid_has_resource(to))
			muc_iq_service(&c);
		else if (kind != STANZA_PRESENCE)
			muc_reply_error(&c, "service-unavailable", NULL);
		return;
	}
	c.room = muc_room_find(svc, to->buf, to->local_len);
	switch (kind) {
	case STANZA_PRESENCE:
		muc_presence(&c);
		break;
	case STANZA_MESSAGE:
		muc_message(&c);
		break;
	case STANZA_IQ:
		if (jid_has_resource(to))
			muc_iq_occupant(&c);
		else
			muc_iq_room(&c);
		break;
	case STANZA_OTHER:
		break;
	}
}

/* Queues st while the service is busy (serialized: the tree dies with the caller). */
static void muc_defer(struct muc_service *svc, struct xml_node *st)
{
	struct strbuf b = STRBUF_INIT;
	struct muc_deferred *d;

	if (svc->ndeferred >= MUC_DEFERRED_MAX) {
		log_warn("muc.deferred_full", "limit=%d msg=\"stanza dropped\"", MUC_DEFERRED_MAX);
		return;
	}
	xml_serialize(&b, st, XML_NS_CLIENT);
	d = b.oom ? NULL : malloc(sizeof(*d) + b.len + 1);
	if (!d) {
		log_error("muc.deferred_failed", "msg=\"out of memory\"");
		strbuf_free(&b);
		return;
	}
	d->next = NULL;
	d->len = b.len;
	memcpy(d->text, b.data, b.len + 1);
	strbuf_free(&b);
	log_debug("muc.deferred", "queued=%u", svc->ndeferred + 1);
	if (svc->deferred_tail)
		svc->deferred_tail->next = d;
	else
		svc->deferred = d;
	svc->deferred_tail = d;
	svc->ndeferred++;
}

/* Handles the oldest queued stanza. */
static void muc_run_deferred(struct muc_service *svc, struct worker *w)
{
	struct muc_deferred *d = svc->deferred;
	struct xml_node *st;
	const char *f, *t;
	struct jid from, to;

	svc->deferred = d->next;
	if (!svc->deferred)
		svc->deferred_tail = NULL;
	svc->ndeferred--;
	st = stored_xml_parse(w->xml, &svc->arena, d->text, d->len);
	f = st ? xml_attr_get(st, "from") : NULL;
	t = st ? xml_attr_get(st, "to") : NULL;
	if (f && t && jid_parse(&from, f, strlen(f)) == 0 && jid_parse(&to, t, strlen(t)) == 0)
		muc_handle(svc, w, st, &from, &to);
	arena_reset(&svc->arena);
	free(d);
}

void muc_route(struct worker *w, struct conn *src, struct xml_node *st,
	       const struct jid *from, const struct jid *to)
{
	struct muc_service *svc = w->srv->muc;

	if (!svc)
		return;
	if (svc->depth) {
		muc_defer(svc, st);
		return;
	}
	svc->depth++;
	muc_handle(svc, w, st, from, to);
	arena_reset(&svc->arena);
	/* What arrived meanwhile, in order; each may queue more: until none. */
	while (svc->deferred)
		muc_run_deferred(svc, w);
	svc->depth--;
}

void muc_ghosts_reported(struct worker *w, const char *room_jid, const char *jids, uint32_t n)
{
	struct muc_service *svc = w->srv->muc;
	struct muc_room *room;
	struct muc_ctx c;
	const char *at;
	bool found = false;

	if (!svc || !(at = strchr(room_jid, '@')))
		return;
	/* The room may be gone, or a new one under the name: then nobody matches. */
	room = muc_room_find(svc, room_jid, (size_t)(at - room_jid));
	if (!room)
		return;
	for (uint32_t i = 0; i < n; i++) {
		size_t len = strlen(jids);
		struct muc_occupant *o = muc_occupant_by_jid(room, jids, len);

		if (o) {
			o->ghost = true;
			found = true;
		}
		jids += len + 1;
	}
	/*
	 * Busy (a report drained inside a delivery): the ghosts stay marked
	 * and go with the room's next purge, as a local one found late would.
	 */
	if (!found || svc->depth)
		return;
	c = (struct muc_ctx){ .w = w, .svc = svc, .room = room, .a = &svc->arena };
	svc->depth++;
	muc_purge_ghosts(&c, room);
	muc_room_maybe_destroy(&c, room);
	arena_reset(&svc->arena);
	while (svc->deferred)
		muc_run_deferred(svc, w);
	svc->depth--;
}

/* ---- Startup and teardown ---- */

struct muc_load_ctx {
	struct muc_service *svc;
	unsigned rooms, affs;
};

/* strdup of an optional string; sets *err on ENOMEM (NULL stays NULL). */
static char *dup_opt(const char *s, int *err)
{
	char *d;

	if (!s)
		return NULL;
	d = strdup(s);
	if (!d)
		*err = -ENOMEM;
	return d;
}

/* One stored room into the table (muc_db_load callback). 0 or -ENOMEM. */
static int muc_load_room(void *arg, const struct muc_room_row *r)
{
	struct muc_load_ctx *lc = arg;
	struct muc_service *svc = lc->svc;
	struct muc_config *cfg;
	struct muc_room *room;
	struct jid j;
	int err = 0;

	/* A name that does not make a valid JID (edited by hand?) is skipped. */
	if (jid_from_parts(&j, r->name, svc->domain, NULL) < 0 || j.local_len != strlen(r->name) ||
	    memcmp(j.buf, r->name, j.local_len) != 0) {
		log_warn("muc.load_skipped", "room=%s msg=\"not a valid room name\"", r->name);
		return 0;
	}
	room = muc_room_create(svc, r->name, strlen(r->name));
	if (!room)
		return -ENOMEM;
	cfg = &room->cfg;
	cfg->title = dup_opt(r->title, &err);
	cfg->description = dup_opt(r->description, &err);
	cfg->password = dup_opt(r->password, &err);
	room->subject = dup_opt(r->subject, &err);
	room->subject_nick = dup_opt(r->subject_nick, &err);
	room->subject_at = r->subject_at;
	cfg->max_users = r->max_users;
	cfg->history_len = r->history_len < svc->cfg->max_muc_history ? r->history_len :
		svc->cfg->max_muc_history;
	cfg->allow_pm = r->allow_pm;
	cfg->persistent = true;
	cfg->public_room = r->public_room;
	cfg->members_only = r->members_only;
	cfg->moderated = r->moderated;
	cfg->non_anonymous = r->non_anonymous;
	cfg->change_subject = r->change_subject;
	cfg->allow_invites = r->allow_invites;
	cfg->archive = r->archive;
	room->stored = true;
	room->archived = true;
	lc->rooms++;
	return err;
}

/* One stored affiliation into its room; rows of unknown rooms are skipped. */
static int muc_load_aff(void *arg, const char *name, const struct muc_affiliation_row *a)
{
	struct muc_load_ctx *lc = arg;
	struct muc_room *room = muc_room_find(lc->svc, name, strlen(name));

	if (!room)
		return 0;
	lc->affs++;
	return muc_affil_set(room, a->jid, strlen(a->jid), a->aff, a->nick) == -ENOMEM ?
		-ENOMEM : 0;
}

/* The history of a loaded room, newest first from the archive. */
struct muc_load_hist {
	struct muc_history *rows;
	size_t n, cap;
};

/* Keeps a copy of one archived message; 1 (stop) once the room's length is reached. */
static int muc_load_hist_row(void *arg, const struct muc_archive_row *m)
{
	struct muc_load_hist *h = arg;
	char *text;

	if (h->n == h->cap)
		return 1;
	text = malloc(m->stanza_len + 1);
	if (!text)
		return -ENOMEM;
	memcpy(text, m->stanza, m->stanza_len + 1);
	h->rows[h->n].text = text;
	h->rows[h->n].len = m->stanza_len;
	h->rows[h->n].at = m->at;
	h->n++;
	return 0;
}

/* Refills a persistent room's discussion history from its archive. */
static int muc_load_history(struct muc_service *svc, struct storage *st, struct muc_room *room)
{
	struct muc_archive_filter all = { 0, INT64_MAX, INT64_MIN, INT64_MAX, NULL, NULL };
	struct muc_load_hist h = { 0 };
	char name[JID_PART_MAX + 1];
	int ret;

	if (!room->cfg.archive || !room->cfg.history_len)
		return 0;
	h.cap = room->cfg.history_len;
	h.rows = calloc(h.cap, sizeof(*h.rows));
	if (!h.rows)
		return -ENOMEM;
	snprintf(name, sizeof(name), "%.*s", (int)room->name_len, room->jid);
	ret = muc_db_archive_query(st, name, &all, true, (uint32_t)h.cap, muc_load_hist_row, &h);
	/* Oldest first into the ring; subject changes (no body) are not history. */
	for (size_t i = h.n; i-- > 0;) {
		if (ret == 0 && strstr(h.rows[i].text, "<body"))
			muc_history_add(svc, room, h.rows[i].text, h.rows[i].len, h.rows[i].at);
		free(h.rows[i].text);
	}
	free(h.rows);
	return ret;
}

int muc_service_load(struct server *srv, struct storage *st)
{
	const struct config *cfg = srv->cfg;
	struct muc_load_ctx lc = { 0 };
	struct muc_service *svc;
	int ret;

	srv->muc = NULL;
	if (!muc_enabled(cfg))
		return 0;
	svc = calloc(1, sizeof(*svc));
	if (!svc)
		return -ENOMEM;
	svc->srv = srv;
	svc->cfg = cfg;
	snprintf(svc->domain, sizeof(svc->domain), "%s.%s", MUC_SERVICE_LABEL, cfg->domain);
	svc->domain_len = strlen(svc->domain);
	svc->nbuckets = MUC_BUCKETS_MIN;
	svc->buckets = calloc(svc->nbuckets, sizeof(*svc->buckets));
	if (!svc->buckets) {
		ret = -ENOMEM;
		goto err_free;
	}
	/* Seeded: room names are chosen by users, who could otherwise aim at one bucket. */
	if (getrandom(&svc->hash_seed, sizeof(svc->hash_seed), 0) != sizeof(svc->hash_seed))
		svc->hash_seed = (uint32_t)time(NULL);
	muc_occupant_id_init(svc);
	arena_init(&svc->arena, MUC_ARENA_CHUNK);
	svc->fan_anon = (struct fanout)FANOUT_INIT;
	svc->fan_jid = (struct fanout)FANOUT_INIT;
	lc.svc = svc;
	ret = muc_db_load(st, muc_load_room, muc_load_aff, &lc);
	for (size_t i = 0; ret == 0 && i < svc->nbuckets; i++)
		for (struct muc_room *r = svc->buckets[i]; r && ret == 0; r = r->hnext)
			ret = muc_load_history(svc, st, r);
	if (ret < 0) {
		log_error("muc.load_failed", "err=%d", ret);
		goto err_free;
	}
	if (svc->nrooms > cfg->max_muc_rooms)
		log_warn("muc.rooms_over_limit", "rooms=%zu max_muc_rooms=%u msg=\"stored rooms "
			 "are kept; no new room until below the limit\"", svc->nrooms,
			 cfg->max_muc_rooms);
	log_info("muc.start", "domain=%s rooms=%u affiliations=%u", svc->domain, lc.rooms, lc.affs);
	srv->muc = svc;
	return 0;
err_free:
	muc_service_free(svc);
	return ret;
}

int muc_service_reload(struct server *srv, struct storage *st)
{
	struct muc_service *old = srv->muc;
	int ret;

	ret = muc_service_load(srv, st);
	if (ret < 0) {
		srv->muc = old;
		return ret;
	}
	muc_service_free(old);
	return 0;
}

void muc_service_free(struct muc_service *svc)
{
	if (!svc)
		return;
	for (size_t i = 0; svc->buckets && i < svc->nbuckets; i++) {
		struct muc_room *r = svc->buckets[i], *next;

		for (; r; r = next) {
			next = r->hnext;
			muc_room_free(r);
		}
	}
	while (svc->deferred) {
		struct muc_deferred *d = svc->deferred;

		svc->deferred = d->next;
		free(d);
	}
	free(svc->buckets);
	arena_release(&svc->arena);
	strbuf_free(&svc->buf);
	fanout_release(&svc->fan_anon);
	fanout_release(&svc->fan_jid);
	muc_batch_free(&svc->remote_anon);
	muc_batch_free(&svc->remote_jid);
	free(svc);
}
