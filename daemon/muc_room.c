/* SPDX-License-Identifier: MIT */
/*
 * Occupants (XEP-0045 sections 7 and 8): entering, leaving, nickname and
 * status changes, the presence the room reflects, groupchat messages and
 * their history, the subject, private messages, iqs between occupants,
 * and mediated invitations.
 *
 * Fan-out: one presence or message goes to every occupant serialized once
 * per variant (fanout.h): a message has one variant; a presence two (with
 * and without the real JID, as each recipient may see it) and the
 * occupant's own copy (status 110), a separate tree. Every copy goes
 * through router_deliver_prepared(), the single path to a session.
 *
 * An occupant whose session is not in the directory any more (it ended
 * without the unavailable presence reaching us) is marked as a ghost by
 * the delivery and removed with status 333 afterwards. Occupants at home
 * on other workers get their copies in one message per worker, whose
 * home reports the missing sessions back (muc_remote.c).
 */
#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "cluster.h"
#include "config.h"
#include "dataform.h"
#include "log.h"
#include "muc.h"
#include "muc_room.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "stored_xml.h"
#include "worker.h"

#define NS_DELAY	"urn:xmpp:delay"
#define NS_PING		"urn:xmpp:ping"
#define NS_DISCO_INFO	"http://jabber.org/protocol/disco#info"

#define Q(buf, s) log_sanitize(buf, sizeof(buf), s, strlen(s))

/* ---- Occupants ---- */

struct muc_occupant *muc_occupant_by_jid(const struct muc_room *room, const char *jid,
					 size_t len)
{
	for (struct muc_occupant *o = room->occupants; o; o = o->next)
		if (o->jid_len == len && memcmp(o->jid, jid, len) == 0)
			return o;
	return NULL;
}

struct muc_occupant *muc_occupant_by_nick(const struct muc_room *room, const char *nick)
{
	for (struct muc_occupant *o = room->occupants; o; o = o->next)
		if (strcmp(o->nick, nick) == 0)
			return o;
	return NULL;
}

/*
 * Another session of the same user under the same nickname, or NULL.
 * XEP-0045 7.2.9: a user's resources may share one nickname; the room
 * shows them as one occupant (the nickname), every session gets the
 * room's traffic, and the nickname leaves with its last session.
 */
static struct muc_occupant *sibling_of(const struct muc_room *room,
				       const struct muc_occupant *occ)
{
	for (struct muc_occupant *o = room->occupants; o; o = o->next)
		if (o != occ && o->nick_len == occ->nick_len && strcmp(o->nick, occ->nick) == 0)
			return o;
	return NULL;
}

static bool same_nick(const struct muc_occupant *a, const struct muc_occupant *b)
{
	return a->nick_len == b->nick_len && strcmp(a->nick, b->nick) == 0;
}

void muc_set_nick_role(struct muc_room *room, struct muc_occupant *occ, enum muc_role role)
{
	for (struct muc_occupant *o = room->occupants; o; o = o->next)
		if (same_nick(o, occ))
			o->role = (uint8_t)role;
}

/* Frees an occupant already out of its room's list (NULL is fine). */
void muc_occupant_free(struct muc_occupant *occ)
{
	if (!occ)
		return;
	free(occ->nick);
	free(occ->pres);
	free(occ);
}

/* A new occupant at the end of the room's list. NULL on ENOMEM. */
static struct muc_occupant *occupant_add(struct muc_room *room, const struct jid *real,
					 const char *nick, enum muc_role role,
					 enum muc_affiliation aff)
{
	struct muc_occupant *occ = calloc(1, sizeof(*occ) + real->len + 1), **pp;

	if (!occ)
		return NULL;
	occ->nick = strdup(nick);
	if (!occ->nick) {
		free(occ);
		return NULL;
	}
	occ->nick_len = strlen(nick);
	memcpy(occ->jid, real->buf, real->len + 1);
	occ->jid_len = real->len;
	occ->bare_len = real->domain_off + real->domain_len;
	occ->role = (uint8_t)role;
	occ->aff = (uint8_t)aff;
	for (pp = &room->occupants; *pp; pp = &(*pp)->next)
		;
	*pp = occ;
	room->noccupants++;
	return occ;
}

/* Takes occ out of the room's list (the caller frees it). */
static void occupant_unlink(struct muc_room *room, struct muc_occupant *occ)
{
	for (struct muc_occupant **pp = &room->occupants; *pp; pp = &(*pp)->next) {
		if (*pp == occ) {
			*pp = occ->next;
			room->noccupants--;
			return;
		}
	}
}

/* Children of a presence the room passes on: all but the MUC extensions. */
static bool pres_child_kept(const struct xml_node *ch)
{
	if (strcmp(ch->ns, NS_MUC) == 0 || strcmp(ch->ns, NS_MUC_USER) == 0 ||
	    strcmp(ch->ns, NS_OCCUPANT_ID) == 0)
		return false;
	return !(strcmp(ch->ns, XML_NS_CLIENT) == 0 && strcmp(ch->name, "error") == 0);
}

/* Keeps st's children (show, status, caps, ...) as occ's presence. 0 or -ENOMEM. */
static int occupant_keep_presence(struct muc_ctx *c, struct muc_occupant *occ,
				  const struct xml_node *st)
{
	struct xml_node *p = xml_node_new(c->a, XML_NS_CLIENT, "presence");
	struct strbuf *b = &c->svc->buf;
	char *copy;

	if (!p)
		return -ENOMEM;
	for (struct xml_node *ch = xml_first_element(st); ch; ch = xml_next_element(ch)) {
		struct xml_node *n;

		if (!pres_child_kept(ch))
			continue;
		n = xml_node_clone(c->a, ch);
		if (!n)
			return -ENOMEM;
		xml_node_append(p, n);
	}
	strbuf_clear(b);
	xml_serialize(b, p, XML_NS_CLIENT);
	copy = b->oom ? NULL : malloc(b->len + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, b->data, b->len + 1);
	free(occ->pres);
	occ->pres = copy;
	occ->pres_len = b->len;
	return 0;
}

/* ---- The presence the room reflects ---- */

struct muc_pres {
	struct xml_node *p;	/* <presence from='room/nick'> */
	struct xml_node *x;	/* its <x xmlns='...#user'/> */
	struct xml_node *item;
};

/*
 * Builds occ's presence as the room shows it: from room/nick, type, the
 * children of `src` (its non-MUC ones) or else, when `stored`, occ's
 * kept presence, then <x><item affiliation role/></x>. The item carries
 * no real JID yet (see pres_with_jid). 0 or -ENOMEM.
 */
static int pres_build(struct muc_ctx *c, const struct muc_room *room,
		      const struct muc_occupant *occ, const char *type,
		      const struct xml_node *src, bool stored, struct muc_pres *bp)
{
	struct arena *a = c->a;
	struct xml_node *p = NULL;
	char *from = muc_occupant_jid(c, room, occ->nick);

	if (!from)
		return -ENOMEM;
	if (!src && stored && occ->pres)
		p = stored_xml_parse(c->w->xml, a, occ->pres, occ->pres_len);
	if (!p)
		p = xml_node_new(a, XML_NS_CLIENT, "presence");
	if (!p)
		return -ENOMEM;
	if (src) {
		for (struct xml_node *ch = xml_first_element(src); ch; ch = xml_next_element(ch)) {
			struct xml_node *n;

			if (!pres_child_kept(ch))
				continue;
			n = xml_node_clone(a, ch);
			if (!n)
				return -ENOMEM;
			xml_node_append(p, n);
		}
	}
	bp->p = p;
	if (xml_attr_set(a, p, "from", from) < 0 || (type && xml_attr_set(a, p, "type", type) < 0) ||
	    muc_occupant_id_stamp(c, room, occ, p) < 0)
		return -ENOMEM;
	bp->x = xml_node_add_child(a, p, NS_MUC_USER, "x");
	bp->item = bp->x ? xml_node_add_child(a, bp->x, NS_MUC_USER, "item") : NULL;
	if (!bp->item ||
	    xml_attr_set(a, bp->item, "affiliation", muc_affiliation_name(occ->aff)) < 0 ||
	    xml_attr_set(a, bp->item, "role", muc_role_name(occ->role)) < 0)
		return -ENOMEM;
	return 0;
}

/* Appends <status code='N'/> to a muc#user <x/>. 0 or -ENOMEM. */
static int pres_add_code(struct muc_ctx *c, struct xml_node *x, int code)
{
	struct xml_node *s = xml_node_add_child(c->a, x, NS_MUC_USER, "status");
	char num[12];

	snprintf(num, sizeof(num), "%d", code);
	return s && xml_attr_set(c->a, s, "code", num) == 0 ? 0 : -ENOMEM;
}

/* <actor nick/> and <reason/> inside the item (kicks, bans, role changes). */
static int pres_add_actor(struct muc_ctx *c, struct muc_pres *bp, const char *actor,
			  const char *reason)
{
	if (actor) {
		struct xml_node *n = xml_node_add_child(c->a, bp->item, NS_MUC_USER, "actor");

		if (!n || xml_attr_set(c->a, n, "nick", actor) < 0)
			return -ENOMEM;
	}
	if (reason && reason[0]) {
		struct xml_node *n = xml_node_add_child(c->a, bp->item, NS_MUC_USER, "reason");

		if (!n || xml_node_add_text(c->a, n, reason, strlen(reason)) < 0)
			return -ENOMEM;
	}
	return 0;
}

/* A copy of the presence with the real JID in the item. NULL on ENOMEM. */
static struct xml_node *pres_with_jid(struct muc_ctx *c, const struct muc_pres *bp,
				      const struct muc_occupant *occ, struct xml_node **x)
{
	struct xml_node *p = xml_node_clone(c->a, bp->p);
	struct xml_node *xx = p ? xml_child(p, NS_MUC_USER, "x") : NULL;
	struct xml_node *item = xx ? xml_child(xx, NS_MUC_USER, "item") : NULL;

	if (!item || xml_attr_set(c->a, item, "jid", occ->jid) < 0)
		return NULL;
	if (x)
		*x = xx;
	return p;
}

/*
 * One copy of a fanned-out stanza to occupant o: the template with o's
 * real JID as 'to'. A detached session (stream management) takes the
 * tree, which the router addresses itself.
 */
static void deliver_copy(struct muc_ctx *c, struct muc_occupant *o, struct xml_node *st,
			 struct fanout *f)
{
	struct session *s;
	const char *data = NULL;
	size_t len = 0;

	/* Cluster mode: a session on another node gets its copy through the router. */
	if (cluster_enabled() && cluster_elsewhere(o->jid, o->jid_len)) {
		router_route_copy(c->w, st, o->jid, o->jid_len);
		return;
	}
	/* At home on another worker: in that worker's batch (muc_remote_flush). */
	if (muc_remote_add(c, f, st, o->jid, o->jid_len))
		return;
	s = sessdir_find_full(c->w->sessions, o->jid, o->jid_len);
	if (!s) {
		o->ghost = true;
		return;
	}
	if (s->conn) {
		data = fanout_render(f, o->jid, o->jid_len, &len);
		if (!data) {
			log_error("muc.fanout_failed", "msg=\"out of memory\"");
			return;
		}
	}
	router_deliver_prepared(s, st, o->jid, data, len);
}

/*
 * occ's own copy, for session `to` (occ itself or another session of it
 * under the same nickname): real JID, status 110 and the codes only it
 * gets.
 */
static void pres_send_self(struct muc_ctx *c, const struct muc_pres *bp,
			   const struct muc_occupant *occ, struct muc_occupant *to,
			   const int *codes, size_t ncodes, const char *id)
{
	struct xml_node *x, *p = pres_with_jid(c, bp, occ, &x);

	if (!p || pres_add_code(c, x, 110) < 0)
		goto oom;
	for (size_t i = 0; i < ncodes; i++)
		if (pres_add_code(c, x, codes[i]) < 0)
			goto oom;
	/* XEP-0045 7.2.3: the room may reflect the id of the presence it answers. */
	if (id && xml_attr_set(c->a, p, "id", id) < 0)
		goto oom;
	if (muc_deliver(c, to->jid, p) == -ENOENT)
		to->ghost = true;
	return;
oom:
	log_error("muc.presence_failed", "msg=\"out of memory\"");
}

/*
 * Sends occ's presence (bp) to every occupant: the others with or
 * without the real JID as they may see it, occ itself (when to_self)
 * with the JID, 110 and self_codes, before the others (self_first:
 * leaving) or after them (entering, so that the newcomer's own presence
 * ends its room roster, 7.2.3).
 */
static void pres_broadcast(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ,
			   struct muc_pres *bp, const int *self_codes, size_t nself,
			   bool self_first, bool to_self, const char *self_id)
{
	struct muc_service *svc = c->svc;
	struct xml_node *with_jid = NULL;
	bool need_anon = false, need_jid = false;

	for (struct muc_occupant *o = room->occupants; o; o = o->next) {
		if (o == occ || same_nick(o, occ))
			continue;
		if (muc_sees_jid(o->role, room->cfg.non_anonymous))
			need_jid = true;
		else
			need_anon = true;
	}
	if (to_self && self_first)
		pres_send_self(c, bp, occ, occ, self_codes, nself, self_id);
	if (need_anon && fanout_prepare(&svc->fan_anon, bp->p) < 0)
		goto oom;
	if (need_jid) {
		with_jid = pres_with_jid(c, bp, occ, NULL);
		if (!with_jid || fanout_prepare(&svc->fan_jid, with_jid) < 0)
			goto oom;
	}
	for (struct muc_occupant *o = room->occupants; o; o = o->next) {
		if (o == occ)
			continue;
		if (same_nick(o, occ))	/* the user's other sessions: it is their own too */
			pres_send_self(c, bp, occ, o, NULL, 0, NULL);
		else if (muc_sees_jid(o->role, room->cfg.non_anonymous))
			deliver_copy(c, o, with_jid, &svc->fan_jid);
		else
			deliver_copy(c, o, bp->p, &svc->fan_anon);
	}
	if (need_anon)
		muc_remote_flush(c, room, &svc->fan_anon);
	if (need_jid)
		muc_remote_flush(c, room, &svc->fan_jid);
	if (to_self && !self_first)
		pres_send_self(c, bp, occ, occ, self_codes, nself, self_id);
	return;
oom:
	log_error("muc.presence_failed", "msg=\"out of memory\"");
}

/* ---- Leaving and removal ---- */

void muc_purge_ghosts(struct muc_ctx *c, struct muc_room *room)
{
	struct muc_occupant *o;

	/* Each removal tells the others, which may find more ghosts: until none. */
	for (;;) {
		/* Linear: ghosts are rare and rooms small; each removal changes the list. */
		for (o = room->occupants; o && !o->ghost; o = o->next)
			;
		if (!o)
			return;
		log_info("muc.ghost_removed", "room=%s", room->jid);
		muc_occupant_remove(c, room, o, 333, NULL, NULL);
	}
}

void muc_occupant_remove(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ,
			 int code, const char *actor, const char *reason)
{
	struct muc_pres bp;

	occ->role = MUC_ROLE_NONE;
	/* A lost session of a nickname other sessions keep: nobody to tell. */
	if (code == 333 && sibling_of(room, occ))
		goto out;
	/* The code is for everyone; the occupant's own copy adds 110. */
	if (pres_build(c, room, occ, "unavailable", NULL, false, &bp) < 0 ||
	    pres_add_actor(c, &bp, actor, reason) < 0 || pres_add_code(c, bp.x, code) < 0)
		log_error("muc.presence_failed", "msg=\"out of memory\"");
	else
		pres_broadcast(c, room, occ, &bp, NULL, 0, true, !occ->ghost, NULL);
out:
	occupant_unlink(room, occ);
	muc_occupant_free(occ);
}

/* occ left (unavailable presence to any of the room's JIDs). */
static void muc_leave(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ)
{
	struct muc_occupant *sib = sibling_of(room, occ);
	enum muc_role role = occ->role;
	struct muc_pres bp;
	char q1[128], q2[256];

	occ->role = MUC_ROLE_NONE;
	/* The leaving presence's <status/> is the exit message (7.14). */
	if (pres_build(c, room, occ, "unavailable", c->st, false, &bp) < 0)
		log_error("muc.presence_failed", "msg=\"out of memory\"");
	else if (sib)	/* the nickname stays (7.2.9): only this session is told */
		pres_send_self(c, &bp, occ, occ, NULL, 0, NULL);
	else
		pres_broadcast(c, room, occ, &bp, NULL, 0, true, true, NULL);
	log_debug("muc.leave", "room=%s nick=%s jid=%s", room->jid, Q(q1, occ->nick),
		  Q(q2, occ->jid));
	occupant_unlink(room, occ);
	muc_occupant_free(occ);
	/* The nickname now shows the presence of the session that stays. */
	if (sib && role != MUC_ROLE_NONE)
		muc_occupant_changed(c, room, sib, NULL, NULL);
	muc_purge_ghosts(c, room);
	muc_room_maybe_destroy(c, room);
}

void muc_occupant_changed(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ,
			  const char *actor, const char *reason)
{
	struct muc_pres bp;

	if (pres_build(c, room, occ, NULL, NULL, true, &bp) < 0 ||
	    pres_add_actor(c, &bp, actor, reason) < 0) {
		log_error("muc.presence_failed", "msg=\"out of memory\"");
		return;
	}
	pres_broadcast(c, room, occ, &bp, NULL, 0, false, true, NULL);
}

/* <name>text</name> in the muc#user namespace under parent; nothing for NULL or "". */
static int add_text_child(struct muc_ctx *c, struct xml_node *parent, const char *name,
			  const char *text)
{
	struct xml_node *n;

	if (!text || !text[0])
		return 0;
	n = xml_node_add_child(c->a, parent, NS_MUC_USER, name);
	return n && xml_node_add_text(c->a, n, text, strlen(text)) == 0 ? 0 : -ENOMEM;
}

void muc_room_evacuate(struct muc_ctx *c, struct muc_room *room, const char *venue,
		       const char *password, const char *reason)
{
	struct muc_occupant *occ;

	/* 10.9: one unavailable presence per occupant, from its own occupant JID. */
	while ((occ = room->occupants) != NULL) {
		struct muc_pres bp;
		struct xml_node *d;

		occ->role = MUC_ROLE_NONE;
		occ->aff = MUC_AFF_NONE;
		if (pres_build(c, room, occ, "unavailable", NULL, false, &bp) < 0 ||
		    !(d = xml_node_add_child(c->a, bp.x, NS_MUC_USER, "destroy")) ||
		    (venue && xml_attr_set(c->a, d, "jid", venue) < 0) ||
		    add_text_child(c, d, "reason", reason) < 0 ||
		    add_text_child(c, d, "password", password) < 0 ||
		    pres_add_code(c, bp.x, 110) < 0)
			log_error("muc.presence_failed", "msg=\"out of memory\"");
		else
			muc_deliver(c, occ->jid, bp.p);
		occupant_unlink(room, occ);
		muc_occupant_free(occ);
	}
}

/* ---- Discussion history and the subject ---- */

void muc_history_free(struct muc_room *room)
{
	for (unsigned i = 0; i < room->hist_count; i++)
		free(room->hist[i].text);
	free(room->hist);
	room->hist = NULL;
	room->hist_cap = room->hist_count = 0;
	room->hist_bytes = 0;
}

/* Drops the oldest n entries. */
static void history_drop(struct muc_room *room, unsigned n)
{
	for (unsigned i = 0; i < n; i++) {
		room->hist_bytes -= room->hist[i].len;
		free(room->hist[i].text);
	}
	memmove(room->hist, room->hist + n, (room->hist_count - n) * sizeof(*room->hist));
	room->hist_count -= n;
}

void muc_history_trim(struct muc_room *room)
{
	if (!room->cfg.history_len) {
		muc_history_free(room);
		return;
	}
	if (room->hist_count > room->cfg.history_len)
		history_drop(room, room->hist_count - room->cfg.history_len);
}

void muc_history_add(struct muc_service *svc, struct muc_room *room, const char *text,
		     size_t len, int64_t at)
{
	unsigned want = room->cfg.history_len;
	char *copy;

	if (!want || len > MUC_HISTORY_MAX_BYTES)
		return;
	if (room->hist_cap < want) {
		struct muc_history *h = realloc(room->hist, want * sizeof(*h));

		if (!h)
			return;
		room->hist = h;
		room->hist_cap = want;
	}
	copy = malloc(len + 1);
	if (!copy)
		return;
	memcpy(copy, text, len);
	copy[len] = '\0';
	/*
	 * A plain array moved by memmove: history lengths are tens of entries
	 * (max_muc_history caps them), and joins read it oldest first.
	 */
	if (room->hist_count >= want)
		history_drop(room, room->hist_count - want + 1);
	while (room->hist_count && room->hist_bytes + len > MUC_HISTORY_MAX_BYTES)
		history_drop(room, 1);
	room->hist[room->hist_count].text = copy;
	room->hist[room->hist_count].len = len;
	room->hist[room->hist_count].at = at;
	room->hist_count++;
	room->hist_bytes += len;
	(void)svc;
}

/* A non-negative decimal attribute, or -1 when absent or not a number. */
static long attr_long(const struct xml_node *n, const char *name)
{
	const char *v = n ? xml_attr_get(n, name) : NULL;
	char *end;
	long x;

	if (!v || !*v || *v == '-')
		return -1;
	x = strtol(v, &end, 10);
	return *end || x < 0 ? -1 : x;
}

/* The history occ asked for (<history/> in its <x/>, 7.2.15), with the delay stamps. */
static void send_history(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ,
			 const struct xml_node *x)
{
	const struct xml_node *h = x ? xml_child(x, NS_MUC, "history") : NULL;
	long max_stanzas = attr_long(h, "maxstanzas"), max_chars = attr_long(h, "maxchars");
	long seconds = attr_long(h, "seconds");
	const char *since_s = h ? xml_attr_get(h, "since") : NULL;
	int64_t since = INT64_MIN, t, *at;
	size_t n = room->hist_count, k, *len;

	if (!n)
		return;
	if (since_s && muc_parse_datetime(since_s, &t) == 0)
		since = t;
	if (seconds >= 0 && muc_now() - seconds > since)
		since = muc_now() - seconds;
	at = arena_alloc(c->a, n * sizeof(*at));
	len = arena_alloc(c->a, n * sizeof(*len));
	if (!at || !len)
		return;
	for (size_t i = 0; i < n; i++) {
		at[i] = room->hist[i].at;
		len[i] = room->hist[i].len;
	}
	k = muc_history_select(at, len, n, max_stanzas, max_chars, since);
	for (size_t i = n - k; i < n; i++) {
		struct xml_node *m = stored_xml_parse(c->w->xml, c->a, room->hist[i].text,
						      room->hist[i].len);
		struct xml_node *d;
		char stamp[32];

		if (!m)
			continue;
		/* 7.2.15: stamped with when the room got it, from the room itself. */
		muc_format_time(room->hist[i].at, stamp, sizeof(stamp));
		d = xml_node_add_child(c->a, m, NS_DELAY, "delay");
		if (!d || xml_attr_set(c->a, d, "from", room->jid) < 0 ||
		    xml_attr_set(c->a, d, "stamp", stamp) < 0)
			continue;
		if (muc_deliver(c, occ->jid, m) == -ENOENT) {
			occ->ghost = true;
			return;
		}
	}
}

/* The subject message (7.2.16): from whoever set it, empty when none. */
static void send_subject(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ)
{
	struct arena *a = c->a;
	struct xml_node *m = xml_node_new(a, XML_NS_CLIENT, "message"), *s;
	const char *from = room->jid;
	char stamp[32];

	if (room->subject_nick && room->subject_nick[0])
		from = muc_occupant_jid(c, room, room->subject_nick);
	if (!m || !from || xml_attr_set(a, m, "from", from) < 0 ||
	    xml_attr_set(a, m, "type", "groupchat") < 0)
		goto oom;
	s = xml_node_add_child(a, m, XML_NS_CLIENT, "subject");
	if (!s || (room->subject && room->subject[0] &&
		   xml_node_add_text(a, s, room->subject, strlen(room->subject)) < 0))
		goto oom;
	if (room->subject) {
		struct xml_node *d = xml_node_add_child(a, m, NS_DELAY, "delay");

		muc_format_time(room->subject_at, stamp, sizeof(stamp));
		if (!d || xml_attr_set(a, d, "from", room->jid) < 0 ||
		    xml_attr_set(a, d, "stamp", stamp) < 0)
			goto oom;
	}
	if (muc_deliver(c, occ->jid, m) == -ENOENT)
		occ->ghost = true;
	return;
oom:
	log_error("muc.subject_failed", "msg=\"out of memory\"");
}

/* ---- Entering ---- */

/* The room as the newcomer finds it: everyone's presence, then its own and the rest. */
static void send_room_state(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ)
{
	bool sees = muc_sees_jid(occ->role, room->cfg.non_anonymous);

	for (struct muc_occupant *o = room->occupants; o; o = o->next) {
		struct muc_pres bp;
		struct xml_node *p;

		/* The user's other sessions under this nickname are its self-presence. */
		if (o == occ || same_nick(o, occ))
			continue;
		if (pres_build(c, room, o, NULL, NULL, true, &bp) < 0)
			goto oom;
		p = sees ? pres_with_jid(c, &bp, o, NULL) : bp.p;
		if (!p)
			goto oom;
		if (muc_deliver(c, occ->jid, p) == -ENOENT) {
			occ->ghost = true;
			return;
		}
	}
	return;
oom:
	log_error("muc.presence_failed", "msg=\"out of memory\"");
}

/* Status codes of the newcomer's own presence (7.2.3-7.2.13). */
static size_t join_codes(struct muc_ctx *c, const struct muc_room *room, bool created,
			 int *codes)
{
	size_t n = 0;

	if (room->cfg.non_anonymous)
		codes[n++] = 100;
	if (room->cfg.archive && c->svc->cfg->max_muc_archive)
		codes[n++] = 170;
	if (created)
		codes[n++] = 201;
	return n;
}

/* Compares a password in constant time (it is a shared secret). */
static bool password_ok(const char *want, const char *got)
{
	size_t lw = strlen(want), lg = got ? strlen(got) : 0;
	unsigned char diff = lw != lg;

	for (size_t i = 0; i < lw; i++)
		diff |= (unsigned char)(want[i] ^ (i < lg ? got[i] : 0));
	return got && !diff;
}

/* Why nick may not be taken by real JID `who` in the room, or NULL. */
static const char *nick_refused(const struct muc_room *room, const char *nick,
				const struct jid *who, const struct muc_occupant *self)
{
	const struct muc_occupant *o = muc_occupant_by_nick(room, nick);
	const struct muc_affil *r;

	size_t who_bare = who->domain_off + who->domain_len;

	if (!muc_nick_ok(nick, strlen(nick)))
		return "not-acceptable";
	/* 7.2.9: taken, unless by another session of the same user. */
	if (o && o != self && !(o->bare_len == who_bare && memcmp(o->jid, who->buf, who_bare) == 0))
		return "conflict";
	/* 7.2.9: a nickname reserved by another user is taken too. */
	r = muc_nick_reserved(room, nick);
	if (r && !(r->jid_len == who->domain_off + who->domain_len &&
		   memcmp(r->jid, who->buf, r->jid_len) == 0))
		return "conflict";
	return NULL;
}

/*
 * A user enters as nick (7.2), creating the room when there is none
 * (10.1.1). x is the <x xmlns=muc/> of the presence (password, history).
 * Refusals are answered with the condition XEP-0045 7.2.x names.
 */
static void muc_join(struct muc_ctx *c, const char *nick, const struct xml_node *x)
{
	struct muc_service *svc = c->svc;
	struct muc_room *room = c->room;
	const struct jid *from = c->from;
	size_t bare_len = from->domain_off + from->domain_len;
	enum muc_affiliation aff;
	struct muc_occupant *occ, *sib;
	struct muc_pres bp;
	const char *err;
	bool created = false;
	int codes[MUC_MAX_CODES];
	size_t ncodes;
	uint32_t limit;
	char q1[128], q2[256];

	if (!muc_nick_ok(nick, strlen(nick))) {
		muc_reply_error(c, "not-acceptable", "the nickname is empty");
		return;
	}
	if (!room) {
		/* 10.1.1: entering a room that does not exist creates it, locked. */
		if (svc->nrooms >= svc->cfg->max_muc_rooms) {
			muc_reply_error(c, "resource-constraint", "too many rooms on this service");
			return;
		}
		room = muc_room_create(svc, c->to->buf, c->to->local_len);
		if (!room || muc_affil_set(room, from->buf, bare_len, MUC_AFF_OWNER, NULL) < 0) {
			if (room)
				muc_room_destroy(c, room);
			muc_reply_error(c, "internal-server-error", NULL);
			return;
		}
		room->locked = true;
		c->room = room;
		created = true;
		log_info("muc.room_created", "room=%s owner=%.*s", room->jid, (int)bare_len,
			 from->buf);
	}
	aff = muc_room_affiliation(room, from->buf, from->len);
	/* 7.2.6: a locked room does not exist yet for anyone but its owner. */
	if (room->locked && aff != MUC_AFF_OWNER) {
		muc_reply_error(c, "item-not-found", "the room is locked until it is configured");
		return;
	}
	err = muc_check_enter(aff, room->cfg.members_only);
	if (err) {
		muc_reply_error(c, err, NULL);
		return;
	}
	/* 7.2.5; admins and owners are let in without it. */
	if (room->cfg.password && aff < MUC_AFF_ADMIN) {
		const struct xml_node *pw = xml_child(x, NS_MUC, "password");

		if (!password_ok(room->cfg.password, pw ? xml_text(c->a, pw) : NULL)) {
			muc_reply_error(c, "not-authorized", "a password is required");
			return;
		}
	}
	err = nick_refused(room, nick, from, NULL);
	if (err) {
		muc_reply_error(c, err, NULL);
		return;
	}
	/* 7.2.10: full; admins and owners get a few more places. */
	limit = muc_room_max_users(svc, room);
	if (room->noccupants >= limit + (aff >= MUC_AFF_ADMIN ? MUC_OWNER_EXTRA_SLOTS : 0)) {
		/* 7.2.10 answers with type wait: a place may free up. */
		muc_reply_error_typed(c, "wait", "service-unavailable", "the room is full");
		return;
	}
	/* Another session of the user under this nickname: the same role (7.2.9). */
	sib = muc_occupant_by_nick(room, nick);
	occ = occupant_add(room, from, nick,
			   sib ? sib->role : muc_default_role(aff, room->cfg.moderated), aff);
	if (!occ || occupant_keep_presence(c, occ, c->st) < 0) {
		if (occ) {
			occupant_unlink(room, occ);
			muc_occupant_free(occ);
		}
		muc_reply_error(c, "internal-server-error", NULL);
		muc_room_maybe_destroy(c, room);
		return;
	}
	log_debug("muc.join", "room=%s nick=%s jid=%s role=%s", room->jid, Q(q1, nick),
		  Q(q2, from->buf), muc_role_name(occ->role));
	/* 7.1: others' presence, own presence, history, subject, then live traffic. */
	send_room_state(c, room, occ);
	if (pres_build(c, room, occ, NULL, NULL, true, &bp) == 0) {
		ncodes = join_codes(c, room, created, codes);
		pres_broadcast(c, room, occ, &bp, codes, ncodes, false, true,
			       xml_attr_get(c->st, "id"));
	}
	if (!occ->ghost) {
		send_history(c, room, occ, x);
		send_subject(c, room, occ);
	}
	muc_purge_ghosts(c, room);
	muc_room_maybe_destroy(c, room);
}

/* 7.2.1: an occupant that sends its join again lost track: it gets it all again. */
static void muc_resync(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ,
		       const struct xml_node *x)
{
	struct muc_pres bp;
	int codes[MUC_MAX_CODES];
	size_t ncodes = join_codes(c, room, false, codes);

	if (occupant_keep_presence(c, occ, c->st) < 0)
		return;
	send_room_state(c, room, occ);
	if (pres_build(c, room, occ, NULL, NULL, true, &bp) == 0)
		pres_broadcast(c, room, occ, &bp, codes, ncodes, false, true,
			       xml_attr_get(c->st, "id"));
	if (!occ->ghost) {
		send_history(c, room, occ, x);
		send_subject(c, room, occ);
	}
	muc_purge_ghosts(c, room);
	muc_room_maybe_destroy(c, room);
}

/* 7.7: new show/status: everyone sees the new presence. */
static void muc_status_change(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ)
{
	struct muc_pres bp;

	if (occupant_keep_presence(c, occ, c->st) < 0 ||
	    pres_build(c, room, occ, NULL, NULL, true, &bp) < 0) {
		log_error("muc.presence_failed", "msg=\"out of memory\"");
		return;
	}
	pres_broadcast(c, room, occ, &bp, NULL, 0, false, true, xml_attr_get(c->st, "id"));
	muc_purge_ghosts(c, room);
	muc_room_maybe_destroy(c, room);
}

/* 7.6: unavailable from the old nickname (303, new nick), then available from the new. */
static void muc_nick_change(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ,
			    const char *nick)
{
	const char *err = nick_refused(room, nick, c->from, occ);
	struct muc_occupant *sib;
	struct muc_pres bp;
	char *copy, q1[128], q2[128];

	if (err) {
		muc_reply_error(c, err, NULL);
		return;
	}
	copy = strdup(nick);
	if (!copy) {
		muc_reply_error(c, "internal-server-error", NULL);
		return;
	}
	if (pres_build(c, room, occ, "unavailable", NULL, false, &bp) < 0 ||
	    xml_attr_set(c->a, bp.item, "nick", nick) < 0 || pres_add_code(c, bp.x, 303) < 0) {
		free(copy);
		muc_reply_error(c, "internal-server-error", NULL);
		return;
	}
	/* The old nickname stays while another session of the user has it. */
	sib = sibling_of(room, occ);
	if (sib)
		pres_send_self(c, &bp, occ, occ, NULL, 0, NULL);
	else
		pres_broadcast(c, room, occ, &bp, NULL, 0, false, true, NULL);
	log_debug("muc.nick", "room=%s old=%s new=%s", room->jid, Q(q1, occ->nick), Q(q2, nick));
	free(occ->nick);
	occ->nick = copy;
	occ->nick_len = strlen(copy);
	sib = sibling_of(room, occ);
	if (sib)
		occ->role = sib->role;
	if (occupant_keep_presence(c, occ, c->st) == 0 &&
	    pres_build(c, room, occ, NULL, NULL, true, &bp) == 0)
		pres_broadcast(c, room, occ, &bp, NULL, 0, false, true, xml_attr_get(c->st, "id"));
	muc_purge_ghosts(c, room);
	muc_room_maybe_destroy(c, room);
}

/*
 * 7.2.2: presence without <x/> from someone who is not an occupant is
 * either groupchat 1.0 or a client that lost track: it is told it is not
 * in the room (110, 307, 333), so a modern client joins again properly.
 */
static void muc_not_in_room(struct muc_ctx *c)
{
	struct arena *a = c->a;
	struct xml_node *p = xml_node_new(a, XML_NS_CLIENT, "presence"), *x, *item, *r;

	if (!p || xml_attr_set(a, p, "from", c->to->buf) < 0 ||
	    xml_attr_set(a, p, "type", "unavailable") < 0 ||
	    !(x = xml_node_add_child(a, p, NS_MUC_USER, "x")) ||
	    !(item = xml_node_add_child(a, x, NS_MUC_USER, "item")) ||
	    xml_attr_set(a, item, "affiliation", "none") < 0 ||
	    xml_attr_set(a, item, "role", "none") < 0 ||
	    !(r = xml_node_add_child(a, item, NS_MUC_USER, "reason")) ||
	    xml_node_add_text(a, r, "You are not in the room.", 24) < 0 ||
	    pres_add_code(c, x, 110) < 0 || pres_add_code(c, x, 307) < 0 ||
	    pres_add_code(c, x, 333) < 0)
		return;
	muc_deliver(c, c->from->buf, p);
}

void muc_presence(struct muc_ctx *c)
{
	const char *type = stanza_type(c->st);
	struct muc_room *room = c->room;
	struct muc_occupant *occ;
	const struct xml_node *x;
	const char *nick;

	occ = room ? muc_occupant_by_jid(room, c->from->buf, c->from->len) : NULL;
	if (strcmp(type, "error") == 0) {
		/* An occupant's side refused the room's presence: it is gone (16.4.5). */
		if (occ) {
			muc_occupant_remove(c, room, occ, 333, NULL, NULL);
			muc_room_maybe_destroy(c, room);
		}
		return;
	}
	if (strcmp(type, "unavailable") == 0) {
		/* 7.14; from a non-occupant it is ignored (17.3). Any nickname will do. */
		if (occ)
			muc_leave(c, room, occ);
		return;
	}
	if (type[0])
		return;	/* probes and subscriptions are not for rooms (17.3) */
	if (!jid_has_resource(c->to)) {
		muc_reply_error(c, "jid-malformed", "a nickname is needed: room@service/nick");
		return;
	}
	nick = c->to->buf + c->to->res_off;
	x = xml_child(c->st, NS_MUC, "x");
	if (occ) {
		if (strcmp(occ->nick, nick) != 0)
			muc_nick_change(c, room, occ, nick);
		else if (x)
			muc_resync(c, room, occ, x);
		else
			muc_status_change(c, room, occ);
		return;
	}
	if (!x) {
		muc_not_in_room(c);
		return;
	}
	muc_join(c, nick, x);
}

/* ---- Messages ---- */

/* Removes every child of st with this (ns, name) (and, for stanza-id, by = the room). */
static void strip_children(struct xml_node *st, const char *ns, const char *name,
			   const char *by)
{
	struct xml_node *ch = xml_first_element(st), *next;

	for (; ch; ch = next) {
		next = xml_next_element(ch);
		if (strcmp(ch->ns, ns) != 0 || strcmp(ch->name, name) != 0)
			continue;
		if (by) {
			const char *b = xml_attr_get(ch, "by");

			if (!b || strcmp(b, by) != 0)
				continue;
		}
		xml_node_remove(ch);
	}
}

/*
 * Reflects a groupchat message (7.4) or subject change (8.1) from occ to
 * every occupant: 'from' becomes the occupant JID, claims of MUC data and
 * of the room's own stanza ids are removed, and, when the room archives,
 * a stanza-id (XEP-0359) is added. Messages with a body go to the
 * history and the archive; a subject change to the archive.
 */
static void reflect(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ,
		    bool subject)
{
	struct muc_service *svc = c->svc;
	struct xml_node *st = c->st;
	bool body = xml_child(st, XML_NS_CLIENT, "body") != NULL;
	bool archive = room->cfg.archive && svc->cfg->max_muc_archive && (body || subject);
	char *from = muc_occupant_jid(c, room, occ->nick);
	char sid[MUC_ID_LEN + 1], id[MUC_ID_LEN + 1];
	int64_t now = muc_now();
	size_t len;
	const char *text;

	if (!from || xml_attr_set(c->a, st, "from", from) < 0)
		goto oom;
	strip_children(st, NS_MUC_USER, "x", NULL);
	strip_children(st, NS_SID, "stanza-id", room->jid);
	if (muc_occupant_id_stamp(c, room, occ, st) < 0)
		goto oom;
	/* 7.4: the id is reflected; one is made up when there is none (stable_id). */
	if (!xml_attr_get(st, "id")) {
		muc_new_id(svc, id);
		if (xml_attr_set(c->a, st, "id", id) < 0)
			goto oom;
	}
	if (archive) {
		struct xml_node *s = xml_node_add_child(c->a, st, NS_SID, "stanza-id");

		muc_new_id(svc, sid);
		if (!s || xml_attr_set(c->a, s, "id", sid) < 0 ||
		    xml_attr_set(c->a, s, "by", room->jid) < 0)
			goto oom;
	}
	/* Serialized once, without 'to': the copies, the history and the archive. */
	if (fanout_prepare(&svc->fan_jid, st) < 0)
		goto oom;
	text = fanout_template(&svc->fan_jid, &len);
	if (body && !subject)
		muc_history_add(svc, room, text, len, now);
	if (archive)
		muc_archive_put(c, room, occ, sid, text, len, now);
	for (struct muc_occupant *o = room->occupants; o; o = o->next)
		deliver_copy(c, o, st, &svc->fan_jid);
	muc_remote_flush(c, room, &svc->fan_jid);
	muc_purge_ghosts(c, room);
	muc_room_maybe_destroy(c, room);
	return;
oom:
	log_error("muc.message_failed", "msg=\"out of memory\"");
}

/* 8.1: a message with a subject and neither body nor thread. */
static bool is_subject_change(const struct xml_node *st)
{
	return xml_child(st, XML_NS_CLIENT, "subject") &&
	       !xml_child(st, XML_NS_CLIENT, "body") && !xml_child(st, XML_NS_CLIENT, "thread");
}

/* occ changes the subject (8.1): kept, stored if persistent, reflected, archived. */
static void muc_subject(struct muc_ctx *c, struct muc_room *room, struct muc_occupant *occ)
{
	const char *err = muc_check_subject(occ->role, room->cfg.change_subject);
	const char *text;
	char *s, *n;

	if (err) {
		muc_reply_error(c, err, "you may not change the subject");
		return;
	}
	text = xml_text(c->a, xml_child(c->st, XML_NS_CLIENT, "subject"));
	if (!text || strlen(text) > MUC_SUBJECT_MAX) {
		muc_reply_error(c, text ? "not-acceptable" : "internal-server-error",
				text ? "the subject is too long" : NULL);
		return;
	}
	s = strdup(text);
	n = strdup(occ->nick);
	if (!s || !n) {
		free(s);
		free(n);
		muc_reply_error(c, "internal-server-error", NULL);
		return;
	}
	free(room->subject);
	free(room->subject_nick);
	room->subject = s;
	room->subject_nick = n;
	room->subject_at = muc_now();
	muc_persist(c, room);
	reflect(c, room, occ, true);
}

/* 7.5: a private message to room/nick, from an occupant to an occupant. */
static void muc_private_message(struct muc_ctx *c, struct muc_room *room)
{
	const char *nick = c->to->buf + c->to->res_off;
	struct muc_occupant *occ = muc_occupant_by_jid(room, c->from->buf, c->from->len);
	struct muc_occupant *target;
	struct xml_node *st = c->st;
	const char *err;
	char *from;

	if (strcmp(stanza_type(st), "groupchat") == 0) {
		muc_reply_error(c, "bad-request", "private messages are not of type groupchat");
		return;
	}
	if (!occ) {
		muc_reply_error(c, "not-acceptable", "only occupants may send private messages");
		return;
	}
	err = muc_check_pm(occ->role, room->cfg.allow_pm);
	if (err) {
		muc_reply_error(c, err, "private messages are not allowed in this room");
		return;
	}
	target = muc_occupant_by_nick(room, nick);
	if (!target) {
		muc_reply_error(c, "item-not-found", "no such occupant");
		return;
	}
	from = muc_occupant_jid(c, room, occ->nick);
	/* 7.5: marked with an empty <x/> so carbons and clients see where it is from. */
	if (!from || xml_attr_set(c->a, st, "from", from) < 0 ||
	    (!xml_child(st, NS_MUC_USER, "x") && !xml_node_add_child(c->a, st, NS_MUC_USER, "x")) ||
	    muc_occupant_id_stamp(c, room, occ, st) < 0) {
		muc_reply_error(c, "internal-server-error", NULL);
		return;
	}
	/* 7.2.9: to every session of the nickname (RECOMMENDED). */
	for (struct muc_occupant *o = room->occupants; o; o = o->next)
		if (same_nick(o, target) && muc_deliver(c, o->jid, st) == -ENOENT)
			o->ghost = true;
	muc_purge_ghosts(c, room);
	muc_room_maybe_destroy(c, room);
}

/* The text of an optional <reason/> child, bounded; NULL when none. */
static const char *reason_of(struct muc_ctx *c, const struct xml_node *n)
{
	const struct xml_node *r = n ? xml_child(n, NS_MUC_USER, "reason") : NULL;
	const char *t = r ? xml_text(c->a, r) : NULL;

	if (!t)
		return NULL;
	return strlen(t) > MUC_REASON_MAX ? arena_strndup(c->a, t, MUC_REASON_MAX) : t;
}

/* <message from=room to=who><x xmlns=muc#user><what from=by><reason/></what>...</x></message> */
static struct xml_node *invitation(struct muc_ctx *c, struct muc_room *room, const char *who,
				   const char *what, const char *by, const char *reason,
				   struct xml_node **x_out)
{
	struct arena *a = c->a;
	struct xml_node *m = xml_node_new(a, XML_NS_CLIENT, "message"), *x, *el;
	const char *id = xml_attr_get(c->st, "id");

	if (!m || xml_attr_set(a, m, "from", room->jid) < 0 || xml_attr_set(a, m, "to", who) < 0 ||
	    (id && xml_attr_set(a, m, "id", id) < 0) ||
	    !(x = xml_node_add_child(a, m, NS_MUC_USER, "x")) ||
	    !(el = xml_node_add_child(a, x, NS_MUC_USER, what)) ||
	    xml_attr_set(a, el, "from", by) < 0)
		return NULL;
	if (reason) {
		struct xml_node *r = xml_node_add_child(a, el, NS_MUC_USER, "reason");

		if (!r || xml_node_add_text(a, r, reason, strlen(reason)) < 0)
			return NULL;
	}
	*x_out = x;
	return m;
}

/* 7.8.2: the room passes invitations on (and declines back), adding the password. */
static void muc_invitations(struct muc_ctx *c, struct muc_room *room, struct xml_node *xu)
{
	struct muc_occupant *occ = muc_occupant_by_jid(room, c->from->buf, c->from->len);
	enum muc_affiliation aff = muc_room_affiliation(room, c->from->buf, c->from->len);
	struct xml_node *el, *m, *x;
	bool stored = false;
	unsigned n = 0;
	const char *err;
	char bare[JID_MAX];

	jid_bare_str(c->from, bare, sizeof(bare));
	/* Every element is checked before anything is sent: all or nothing. */
	for (el = xml_first_element(xu); el; el = xml_next_element(el)) {
		const char *to = xml_attr_get(el, "to");
		struct jid j;

		if (strcmp(el->ns, NS_MUC_USER) != 0 ||
		    (strcmp(el->name, "invite") != 0 && strcmp(el->name, "decline") != 0))
			continue;
		if (++n > MUC_MAX_ITEMS) {
			muc_reply_error(c, "policy-violation", "too many invitations at once");
			return;
		}
		if (!to || jid_parse(&j, to, strlen(to)) < 0) {
			muc_reply_error(c, "jid-malformed", "an invitation needs a valid 'to'");
			return;
		}
		if (strcmp(el->name, "invite") == 0) {
			err = muc_check_invite(occ ? occ->role : MUC_ROLE_NONE, aff,
					       room->cfg.members_only, room->cfg.allow_invites);
			if (err) {
				muc_reply_error(c, err, "you may not invite to this room");
				return;
			}
		}
	}
	if (!n) {
		muc_reply_error(c, "bad-request", "nothing to do");
		return;
	}
	for (el = xml_first_element(xu); el; el = xml_next_element(el)) {
		const char *to = xml_attr_get(el, "to");
		bool invite = strcmp(el->name, "invite") == 0;
		struct jid j;

		if (strcmp(el->ns, NS_MUC_USER) != 0 ||
		    (!invite && strcmp(el->name, "decline") != 0))
			continue;
		jid_parse(&j, to, strlen(to));
		/* The inviter by real full JID; the decliner by bare JID (7.8.2). */
		m = invitation(c, room, j.buf, el->name, invite ? c->from->buf : bare,
			       reason_of(c, el), &x);
		if (!m)
			goto oom;
		if (invite && room->cfg.password) {
			struct xml_node *pw = xml_node_add_child(c->a, x, NS_MUC_USER, "password");

			if (!pw || xml_node_add_text(c->a, pw, room->cfg.password,
						     strlen(room->cfg.password)) < 0)
				goto oom;
		}
		/* 9.4: an invitation to a members-only room makes the invitee a member. */
		if (invite && room->cfg.members_only) {
			struct jid b = j;

			jid_to_bare(&b);
			if (muc_room_affiliation(room, b.buf, b.len) == MUC_AFF_NONE &&
			    muc_affil_set(room, b.buf, b.len, MUC_AFF_MEMBER, NULL) == 0)
				stored = true;
		}
		muc_route_out(c, m);
	}
	if (stored)
		muc_persist(c, room);
	return;
oom:
	log_error("muc.invite_failed", "msg=\"out of memory\"");
}

/*
 * 7.13 and 8.6: a visitor asks for voice with a muc#request form; the
 * room forwards an approval form to the moderators, and a moderator who
 * submits it with muc#request_allow grants voice.
 */
static void muc_voice_request(struct muc_ctx *c, struct muc_room *room,
			      struct muc_occupant *occ, const struct dataform *f)
{
	const char *allow = dataform_value(f, "muc#request_allow");
	struct arena *a = c->a;

	if (allow) {
		const char *nick = dataform_value(f, "muc#roomnick");
		struct muc_occupant *t = nick ? muc_occupant_by_nick(room, nick) : NULL;
		bool yes = false;
		const char *err;

		if (dataform_parse_bool(allow, &yes) < 0 || !t) {
			muc_reply_error(c, "bad-request", "no such occupant");
			return;
		}
		if (!yes || t->role != MUC_ROLE_VISITOR)
			return;
		err = muc_check_role_change(occ->aff, occ->role, t->aff, t->role,
					    MUC_ROLE_PARTICIPANT, t == occ);
		if (err) {
			muc_reply_error(c, err, NULL);
			return;
		}
		muc_set_nick_role(room, t, MUC_ROLE_PARTICIPANT);
		muc_occupant_changed(c, room, t, occ->nick, NULL);
		muc_purge_ghosts(c, room);
		return;
	}
	if (occ->role != MUC_ROLE_VISITOR)
		return;	/* nothing to ask for */
	for (struct muc_occupant *o = room->occupants; o; o = o->next) {
		struct xml_node *m, *x;

		if (o->role != MUC_ROLE_MODERATOR)
			continue;
		m = xml_node_new(a, XML_NS_CLIENT, "message");
		x = m ? dataform_new(a, DATAFORM_FORM, NS_MUC_REQUEST) : NULL;
		if (!x || xml_attr_set(a, m, "from", room->jid) < 0 ||
		    dataform_set_title(a, x, "Voice request") < 0 ||
		    dataform_add_instructions(a, x, "To approve this request for voice, select "
					      "the \"Grant voice to this person?\" checkbox and "
					      "submit the form.") < 0 ||
		    !dataform_add_field_value(a, x, DATAFORM_FIELD_LIST_SINGLE, "muc#role",
					      "Requested role", "participant") ||
		    !dataform_add_field_value(a, x, DATAFORM_FIELD_JID_SINGLE, "muc#jid",
					      "User ID", occ->jid) ||
		    !dataform_add_field_value(a, x, DATAFORM_FIELD_TEXT_SINGLE, "muc#roomnick",
					      "Room Nickname", occ->nick) ||
		    !dataform_add_field_value(a, x, DATAFORM_FIELD_BOOLEAN, "muc#request_allow",
					      "Grant voice to this person?", "false")) {
			log_error("muc.voice_request_failed", "msg=\"out of memory\"");
			return;
		}
		xml_node_append(m, x);
		if (muc_deliver(c, o->jid, m) == -ENOENT)
			o->ghost = true;
	}
	muc_purge_ghosts(c, room);
}

void muc_message(struct muc_ctx *c)
{
	struct muc_room *room = c->room;
	const char *type = stanza_type(c->st);
	struct muc_occupant *occ;
	struct xml_node *xu, *form;
	const char *err;

	if (strcmp(type, "error") == 0)
		return;	/* never answered; a client refusing a copy is no delivery failure */
	/* 17.2: no such room (a locked one does not exist for others yet). */
	if (!room || (room->locked && muc_room_affiliation(room, c->from->buf, c->from->len) !=
		      MUC_AFF_OWNER)) {
		muc_reply_error(c, "item-not-found", "no such room");
		return;
	}
	if (jid_has_resource(c->to)) {
		muc_private_message(c, room);
		return;
	}
	occ = muc_occupant_by_jid(room, c->from->buf, c->from->len);
	if (strcmp(type, "groupchat") == 0) {
		err = muc_check_groupchat(occ ? occ->role : MUC_ROLE_NONE);
		if (err) {
			muc_reply_error(c, err, occ ? "you have no voice in this room" :
					"only occupants may send messages to the room");
			return;
		}
		if (is_subject_change(c->st))
			muc_subject(c, room, occ);
		else
			reflect(c, room, occ, false);
		return;
	}
	xu = xml_child(c->st, NS_MUC_USER, "x");
	if (xu && (xml_child(xu, NS_MUC_USER, "invite") || xml_child(xu, NS_MUC_USER, "decline"))) {
		muc_invitations(c, room, xu);
		return;
	}
	form = dataform_find(c->st, NS_MUC_REQUEST);
	if (form && occ) {
		struct dataform f;

		if (dataform_parse(c->a, form, &f, NULL) < 0) {
			muc_reply_error(c, "bad-request", "not a valid data form");
			return;
		}
		muc_voice_request(c, room, occ, &f);
		return;
	}
	if (!occ) {
		muc_reply_error(c, "not-acceptable",
				"only occupants may send messages to the room");
		return;
	}
	/* 17.2: messages to the room itself are groupchat. */
	muc_reply_error(c, "bad-request", "messages to the room must be of type groupchat");
}

/* ---- iq between occupants ---- */

void muc_iq_occupant(struct muc_ctx *c)
{
	struct muc_room *room = c->room;
	struct xml_node *st = c->st, *payload = xml_first_element(st);
	const char *type = stanza_type(st);
	bool request = strcmp(type, "get") == 0 || strcmp(type, "set") == 0;
	struct muc_occupant *occ, *target;
	char *from;

	occ = room ? muc_occupant_by_jid(room, c->from->buf, c->from->len) : NULL;
	if (!occ) {
		if (!request)
			return;
		/* XEP-0410: not joined; XEP-0045 6.6: a non-occupant's disco is a bad request. */
		if (payload && strcmp(payload->ns, NS_DISCO_INFO) == 0)
			muc_reply_error(c, "bad-request", "not an occupant of this room");
		else
			muc_reply_error(c, "not-acceptable", "not an occupant of this room");
		return;
	}
	target = muc_occupant_by_nick(room, c->to->buf + c->to->res_off);
	if (!target) {
		if (request)
			muc_reply_error(c, "item-not-found", "no such occupant");
		return;
	}
	/* XEP-0410 5: a ping to oneself is answered by the room. */
	if (request && target == occ && payload && strcmp(payload->ns, NS_PING) == 0 &&
	    strcmp(payload->name, "ping") == 0) {
		muc_reply_result(c, NULL);
		return;
	}
	/*
	 * 17.4: the room passes iqs between occupants (answers too), with
	 * the sender's occupant JID as 'from': the real JIDs stay hidden.
	 */
	from = muc_occupant_jid(c, room, occ->nick);
	if (!from || xml_attr_set(c->a, st, "from", from) < 0)
		return;
	if (muc_deliver(c, target->jid, st) == -ENOENT) {
		if (request)
			muc_reply_error(c, "recipient-unavailable", NULL);
		target->ghost = true;
		muc_purge_ghosts(c, room);
		muc_room_maybe_destroy(c, room);
	}
}

/* ---- Notices ---- */

void muc_room_notify_codes(struct muc_ctx *c, struct muc_room *room, const int *codes,
			   size_t ncodes)
{
	struct arena *a = c->a;
	struct xml_node *m = xml_node_new(a, XML_NS_CLIENT, "message"), *x;
	char id[MUC_ID_LEN + 1];

	muc_new_id(c->svc, id);
	if (!m || xml_attr_set(a, m, "from", room->jid) < 0 ||
	    xml_attr_set(a, m, "type", "groupchat") < 0 || xml_attr_set(a, m, "id", id) < 0 ||
	    !(x = xml_node_add_child(a, m, NS_MUC_USER, "x")))
		goto oom;
	for (size_t i = 0; i < ncodes; i++)
		if (pres_add_code(c, x, codes[i]) < 0)
			goto oom;
	if (fanout_prepare(&c->svc->fan_jid, m) < 0)
		goto oom;
	for (struct muc_occupant *o = room->occupants; o; o = o->next)
		deliver_copy(c, o, m, &c->svc->fan_jid);
	muc_remote_flush(c, room, &c->svc->fan_jid);
	return;
oom:
	log_error("muc.notify_failed", "msg=\"out of memory\"");
}
