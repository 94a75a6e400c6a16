/* SPDX-License-Identifier: MIT */
/*
 * iq to the MUC service and to rooms: service discovery (XEP-0045 6),
 * the #admin lists and changes of roles and affiliations (8, 9), the
 * #owner room configuration form, instant rooms and destruction (10).
 *
 * An #admin set is all or nothing: every item is checked against the
 * room as it is before anything changes (9.2: "SHOULD NOT apply any of
 * the requested changes"), then applied in order; the presence updates go
 * out first and the iq result last.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "config.h"
#include "dataform.h"
#include "log.h"
#include "muc.h"
#include "muc_room.h"
#include "stanza.h"

#define NS_DISCO_INFO	"http://jabber.org/protocol/disco#info"
#define NS_DISCO_ITEMS	"http://jabber.org/protocol/disco#items"
#define NS_PING		"urn:xmpp:ping"
#define NODE_ROOMUSER	"x-roomuser-item"
#define MUC_SERVICE_NAME "Chatrooms"

/* ---- Configuration ---- */

void muc_config_defaults(const struct muc_service *svc, struct muc_config *cfg)
{
	const struct config *sc = svc->cfg;

	memset(cfg, 0, sizeof(*cfg));
	cfg->history_len = MUC_ROOM_DEFAULT_HISTORY < sc->max_muc_history ?
		MUC_ROOM_DEFAULT_HISTORY : sc->max_muc_history;
	cfg->allow_pm = MUC_PM_ANYONE;
	cfg->public_room = true;
	cfg->archive = sc->max_muc_archive > 0;
}

/* Frees the strings of a configuration; the password is wiped first (a secret). */
void muc_config_free(struct muc_config *cfg)
{
	free(cfg->title);
	free(cfg->description);
	if (cfg->password) {
		explicit_bzero(cfg->password, strlen(cfg->password));
		free(cfg->password);
	}
	cfg->title = cfg->description = cfg->password = NULL;
}

/* ---- Small builders ---- */

static struct xml_node *query_new(struct muc_ctx *c, const char *ns, const char *node)
{
	struct xml_node *q = xml_node_new(c->a, ns, "query");

	if (q && node && xml_attr_set(c->a, q, "node", node) < 0)
		return NULL;
	return q;
}

/* <identity category='conference' type='text' name=.../> (6.2, 6.4). */
static int add_identity(struct muc_ctx *c, struct xml_node *q, const char *name)
{
	struct xml_node *id = xml_node_add_child(c->a, q, NULL, "identity");

	if (!id || xml_attr_set(c->a, id, "category", "conference") < 0 ||
	    xml_attr_set(c->a, id, "type", "text") < 0 ||
	    (name && xml_attr_set(c->a, id, "name", name) < 0))
		return -ENOMEM;
	return 0;
}

/* <feature var=.../> in a disco#info query. 0 or -ENOMEM. */
static int add_feature(struct muc_ctx *c, struct xml_node *q, const char *var)
{
	struct xml_node *f = xml_node_add_child(c->a, q, NULL, "feature");

	return f && xml_attr_set(c->a, f, "var", var) == 0 ? 0 : -ENOMEM;
}

/* The requester as an occupant (role) and by affiliation. */
static struct muc_occupant *requester(struct muc_ctx *c, enum muc_affiliation *aff)
{
	*aff = muc_room_affiliation(c->room, c->from->buf, c->from->len);
	return muc_occupant_by_jid(c->room, c->from->buf, c->from->len);
}

/* ---- The service ---- */

static void service_info(struct muc_ctx *c)
{
	static const char *const features[] = {
		NS_DISCO_INFO, NS_DISCO_ITEMS, NS_MUC, NS_MUC_STABLE_ID, NS_MUC_SELF_PING,
		NS_OCCUPANT_ID,	/* every room has them (XEP-0421 section 5) */
	};
	struct xml_node *q;

	if (xml_attr_get(xml_first_element(c->st), "node")) {
		muc_reply_error(c, "item-not-found", NULL);
		return;
	}
	q = query_new(c, NS_DISCO_INFO, NULL);
	if (!q || add_identity(c, q, MUC_SERVICE_NAME) < 0)
		goto oom;
	for (size_t i = 0; i < sizeof(features) / sizeof(features[0]); i++)
		if (add_feature(c, q, features[i]) < 0)
			goto oom;
	muc_reply_result(c, q);
	return;
oom:
	muc_reply_error(c, "internal-server-error", NULL);
}

/* qsort order of rooms: by JID, which RSM <after/> pages by. */
static int room_cmp(const void *a, const void *b)
{
	const struct muc_room *ra = *(const struct muc_room *const *)a;
	const struct muc_room *rb = *(const struct muc_room *const *)b;

	return strcmp(ra->jid, rb->jid);
}

/*
 * 6.3: the public rooms, sorted by JID; with an RSM <set/> (XEP-0059),
 * a page of them (<max/>, <after/>) and the paging information.
 */
static void service_items(struct muc_ctx *c)
{
	struct muc_service *svc = c->svc;
	const struct xml_node *req = xml_first_element(c->st);
	const struct xml_node *set = xml_child(req, NS_RSM, "set");
	const struct xml_node *max_el = set ? xml_child(set, NS_RSM, "max") : NULL;
	const struct xml_node *after_el = set ? xml_child(set, NS_RSM, "after") : NULL;
	const char *after = after_el ? xml_text(c->a, after_el) : NULL;
	struct muc_room **rooms;
	size_t n = 0, first = 0, max = SIZE_MAX, shown = 0;
	struct xml_node *q;

	if (xml_attr_get(req, "node")) {
		muc_reply_error(c, "item-not-found", NULL);
		return;
	}
	if (max_el) {
		const char *t = xml_text(c->a, max_el);
		char *end;
		long v = t ? strtol(t, &end, 10) : -1;

		if (!t || *end || v < 0) {
			muc_reply_error(c, "bad-request", "<max/> must be a number");
			return;
		}
		max = (size_t)v;
	}
	rooms = arena_alloc(c->a, (svc->nrooms + 1) * sizeof(*rooms));
	q = query_new(c, NS_DISCO_ITEMS, NULL);
	if (!rooms || !q)
		goto oom;
	for (size_t i = 0; i < svc->nbuckets; i++)
		for (struct muc_room *r = svc->buckets[i]; r; r = r->hnext)
			if (r->cfg.public_room && !r->locked)
				rooms[n++] = r;
	qsort(rooms, n, sizeof(*rooms), room_cmp);
	if (after) {
		while (first < n && strcmp(rooms[first]->jid, after) <= 0)
			first++;
	}
	for (size_t i = first; i < n && shown < max; i++, shown++) {
		struct xml_node *it = xml_node_add_child(c->a, q, NULL, "item");
		const char *name = rooms[i]->cfg.title;

		if (!it || xml_attr_set(c->a, it, "jid", rooms[i]->jid) < 0)
			goto oom;
		if (!name)
			name = arena_strndup(c->a, rooms[i]->jid, rooms[i]->name_len);
		if (!name || xml_attr_set(c->a, it, "name", name) < 0)
			goto oom;
	}
	if (set) {
		struct xml_node *rs = xml_node_add_child(c->a, q, NS_RSM, "set"), *el;
		char num[24];

		if (!rs)
			goto oom;
		if (shown) {
			el = xml_node_add_child(c->a, rs, NS_RSM, "first");
			snprintf(num, sizeof(num), "%zu", first);
			if (!el || xml_attr_set(c->a, el, "index", num) < 0 ||
			    xml_node_add_text(c->a, el, rooms[first]->jid,
					      rooms[first]->jid_len) < 0)
				goto oom;
			el = xml_node_add_child(c->a, rs, NS_RSM, "last");
			if (!el || xml_node_add_text(c->a, el, rooms[first + shown - 1]->jid,
						     rooms[first + shown - 1]->jid_len) < 0)
				goto oom;
		}
		el = xml_node_add_child(c->a, rs, NS_RSM, "count");
		snprintf(num, sizeof(num), "%zu", n);
		if (!el || xml_node_add_text(c->a, el, num, strlen(num)) < 0)
			goto oom;
	}
	muc_reply_result(c, q);
	return;
oom:
	muc_reply_error(c, "internal-server-error", NULL);
}

void muc_iq_service(struct muc_ctx *c)
{
	struct xml_node *payload = xml_first_element(c->st);
	const char *type = stanza_type(c->st);
	bool get = strcmp(type, "get") == 0;

	if (!get && strcmp(type, "set") != 0)
		return;	/* results and errors end here */
	if (get && payload && strcmp(payload->ns, NS_DISCO_INFO) == 0 &&
	    strcmp(payload->name, "query") == 0)
		service_info(c);
	else if (get && payload && strcmp(payload->ns, NS_DISCO_ITEMS) == 0 &&
		 strcmp(payload->name, "query") == 0)
		service_items(c);
	else if (get && payload && strcmp(payload->ns, NS_PING) == 0)
		muc_reply_result(c, NULL);
	else
		muc_reply_error(c, "service-unavailable", NULL);
}

/* ---- A room's disco ---- */

static int add_info_field(struct muc_ctx *c, struct xml_node *x, const char *var,
			  const char *label, const char *value)
{
	return dataform_add_field_value(c->a, x, DATAFORM_FIELD_UNSPECIFIED, var, label,
					value) ? 0 : -ENOMEM;
}

/* 6.4: identity, the muc_* features of the configuration, and muc#roominfo (XEP-0128). */
static void room_info(struct muc_ctx *c)
{
	struct muc_room *room = c->room;
	const struct muc_config *cfg = &room->cfg;
	const char *node = xml_attr_get(xml_first_element(c->st), "node");
	const char *features[16];
	size_t n = 0;
	struct xml_node *q, *x;
	char num[16];

	if (node && strcmp(node, NODE_ROOMUSER) == 0) {
		/* 7.12: the requester's reserved nickname, if any. */
		char bare[JID_MAX];
		const struct muc_affil *a;

		jid_bare_str(c->from, bare, sizeof(bare));
		a = muc_affil_find(room, bare, strlen(bare));
		q = query_new(c, NS_DISCO_INFO, node);
		if (!q || (a && a->nick && add_identity(c, q, a->nick) < 0))
			goto oom;
		muc_reply_result(c, q);
		return;
	}
	if (node) {
		muc_reply_error(c, "item-not-found", NULL);
		return;
	}
	features[n++] = NS_DISCO_INFO;
	features[n++] = NS_MUC;
	features[n++] = NS_MUC_STABLE_ID;
	features[n++] = NS_MUC_SELF_PING;
	features[n++] = NS_OCCUPANT_ID;
	features[n++] = cfg->public_room ? "muc_public" : "muc_hidden";
	features[n++] = cfg->persistent ? "muc_persistent" : "muc_temporary";
	features[n++] = cfg->members_only ? "muc_membersonly" : "muc_open";
	features[n++] = cfg->moderated ? "muc_moderated" : "muc_unmoderated";
	features[n++] = cfg->non_anonymous ? "muc_nonanonymous" : "muc_semianonymous";
	features[n++] = cfg->password ? "muc_passwordprotected" : "muc_unsecured";
	if (cfg->archive && c->svc->cfg->max_muc_archive) {
		features[n++] = NS_MAM;
		features[n++] = NS_MAM_EXTENDED;
		features[n++] = NS_SID;
	}
	q = query_new(c, NS_DISCO_INFO, NULL);
	if (!q)
		goto oom;
	if (add_identity(c, q, cfg->title ? cfg->title :
			 arena_strndup(c->a, room->jid, room->name_len)) < 0)
		goto oom;
	for (size_t i = 0; i < n; i++)
		if (add_feature(c, q, features[i]) < 0)
			goto oom;
	x = dataform_new(c->a, DATAFORM_RESULT, NS_MUC_ROOMINFO);
	snprintf(num, sizeof(num), "%u", room->noccupants);
	if (!x || add_info_field(c, x, "muc#roominfo_description", "Description",
				 cfg->description ? cfg->description : "") < 0 ||
	    add_info_field(c, x, "muc#roominfo_subject", "Current Discussion Topic",
			   room->subject ? room->subject : "") < 0 ||
	    add_info_field(c, x, "muc#roominfo_occupants", "Number of occupants", num) < 0 ||
	    add_info_field(c, x, "muc#roomconfig_changesubject", "Occupants may change the subject",
			   cfg->change_subject ? "1" : "0") < 0)
		goto oom;
	snprintf(num, sizeof(num), "%u", cfg->history_len);
	if (add_info_field(c, x, "muc#maxhistoryfetch", "Maximum Number of History Messages "
			   "Returned by Room", num) < 0)
		goto oom;
	xml_node_append(q, x);
	muc_reply_result(c, q);
	return;
oom:
	muc_reply_error(c, "internal-server-error", NULL);
}

/* ---- #admin ---- */

/* 9.5, 8.5: a list by role or affiliation. */
static void admin_get(struct muc_ctx *c, const struct xml_node *q)
{
	struct muc_room *room = c->room;
	const struct xml_node *item = xml_child(q, NS_MUC_ADMIN, "item");
	const char *role_s = item ? xml_attr_get(item, "role") : NULL;
	const char *aff_s = item ? xml_attr_get(item, "affiliation") : NULL;
	enum muc_affiliation actor_aff;
	struct muc_occupant *actor = requester(c, &actor_aff);
	struct xml_node *r;
	const char *err;
	int v;

	if (!item || (!role_s == !aff_s)) {
		muc_reply_error(c, "bad-request", "ask for one role or one affiliation");
		return;
	}
	r = xml_node_new(c->a, NS_MUC_ADMIN, "query");
	if (!r)
		goto oom;
	if (role_s) {
		v = muc_role_parse(role_s);
		if (v <= MUC_ROLE_NONE) {
			muc_reply_error(c, "bad-request", "no such role");
			return;
		}
		err = muc_check_role_list(actor ? actor->role : MUC_ROLE_NONE);
		if (err) {
			muc_reply_error(c, err, NULL);
			return;
		}
		for (struct muc_occupant *o = room->occupants; o; o = o->next) {
			struct xml_node *it;

			if (o->role != v)
				continue;
			it = xml_node_add_child(c->a, r, NS_MUC_ADMIN, "item");
			if (!it || xml_attr_set(c->a, it, "nick", o->nick) < 0 ||
			    xml_attr_set(c->a, it, "role", muc_role_name(o->role)) < 0 ||
			    xml_attr_set(c->a, it, "affiliation",
					 muc_affiliation_name(o->aff)) < 0 ||
			    xml_attr_set(c->a, it, "jid", o->jid) < 0)
				goto oom;
		}
	} else {
		v = muc_affiliation_parse(aff_s);
		if (v < 0 || v == MUC_AFF_NONE) {
			muc_reply_error(c, "bad-request", "no such affiliation list");
			return;
		}
		err = muc_check_affiliation_list(actor_aff, v, room->cfg.non_anonymous);
		if (err) {
			muc_reply_error(c, err, NULL);
			return;
		}
		for (struct muc_affil *a = room->affils; a; a = a->next) {
			struct xml_node *it;

			if (a->aff != v)
				continue;
			it = xml_node_add_child(c->a, r, NS_MUC_ADMIN, "item");
			if (!it || xml_attr_set(c->a, it, "affiliation", aff_s) < 0 ||
			    xml_attr_set(c->a, it, "jid", a->jid) < 0 ||
			    (a->nick && xml_attr_set(c->a, it, "nick", a->nick) < 0))
				goto oom;
		}
	}
	muc_reply_result(c, r);
	return;
oom:
	muc_reply_error(c, "internal-server-error", NULL);
}

/* One checked change of an #admin set. */
struct admin_change {
	const struct xml_node *item;
	bool is_role;
	int value;			/* the new role or affiliation */
	const char *nick;		/* role: the target's nickname */
	struct jid jid;			/* affiliation: the bare JID (or domain) */
	const char *reserve;		/* affiliation: a nickname to reserve, or NULL */
};

/*
 * The role or affiliation occupants of this bare JID (or domain) now
 * have, after an affiliation change: removed (301 ban, 321 no longer a
 * member of a members-only room) or told their new state.
 */
static void apply_affiliation_to_occupants(struct muc_ctx *c, struct muc_room *room,
					   const struct jid *who, const char *actor,
					   const char *reason)
{
	struct muc_occupant *o, *next;

	for (o = room->occupants; o; o = next) {
		enum muc_affiliation now, before = o->aff;
		const char *at = memchr(o->jid, '@', o->bare_len);
		bool match;

		next = o->next;
		/* The entry is a bare JID, or a domain that covers the occupant's. */
		match = (o->bare_len == who->len && memcmp(o->jid, who->buf, who->len) == 0) ||
			(!jid_has_local(who) && at &&
			 (size_t)(o->jid + o->bare_len - at - 1) == who->len &&
			 memcmp(at + 1, who->buf, who->len) == 0);
		if (!match)
			continue;
		now = muc_room_affiliation(room, o->jid, o->jid_len);
		if (now == before)
			continue;
		o->aff = (uint8_t)now;
		if (now == MUC_AFF_OUTCAST) {
			muc_occupant_remove(c, room, o, 301, actor, reason);
			next = room->occupants;	/* the list changed: start over */
			continue;
		}
		if (room->cfg.members_only && now < MUC_AFF_MEMBER) {
			muc_occupant_remove(c, room, o, 321, actor, reason);
			next = room->occupants;
			continue;
		}
		/* 5.1.3: gained roles follow the affiliation; a lost admin gets the default. */
		if (now >= MUC_AFF_ADMIN)
			o->role = MUC_ROLE_MODERATOR;
		else if (before >= MUC_AFF_ADMIN)
			o->role = (uint8_t)muc_default_role(now, room->cfg.moderated);
		else if (now == MUC_AFF_MEMBER && o->role == MUC_ROLE_VISITOR)
			o->role = MUC_ROLE_PARTICIPANT;
		muc_occupant_changed(c, room, o, actor, reason);
	}
}

/* The <reason/> of an #admin item, cut at MUC_REASON_MAX bytes; NULL when none. */
static const char *item_reason(struct muc_ctx *c, const struct xml_node *item)
{
	const struct xml_node *r = xml_child(item, NS_MUC_ADMIN, "reason");
	const char *t = r ? xml_text(c->a, r) : NULL;

	return t && strlen(t) > MUC_REASON_MAX ? arena_strndup(c->a, t, MUC_REASON_MAX) : t;
}

/*
 * An #admin set (8.2-8.5, 9.1-9.8): role items by nick, affiliation items
 * by bare JID. Checked whole first, then applied; the result comes last.
 */
static void admin_set(struct muc_ctx *c, const struct xml_node *q)
{
	struct muc_room *room = c->room;
	enum muc_affiliation actor_aff;
	struct muc_occupant *actor = requester(c, &actor_aff);
	enum muc_role actor_role = actor ? actor->role : MUC_ROLE_NONE;
	const char *actor_nick;
	struct admin_change *ch;
	size_t n = 0, new_entries = 0;
	long owners_after = room->nowners;
	bool aff_changed = false;
	char bare[JID_MAX];
	const char *err;

	jid_bare_str(c->from, bare, sizeof(bare));
	ch = arena_alloc(c->a, MUC_MAX_ITEMS * sizeof(*ch));
	if (!ch) {
		muc_reply_error(c, "internal-server-error", NULL);
		return;
	}
	for (const struct xml_node *it = xml_first_element(q); it; it = xml_next_element(it)) {
		const char *role_s = xml_attr_get(it, "role");
		const char *aff_s = xml_attr_get(it, "affiliation");
		struct admin_change *x;

		if (strcmp(it->ns, NS_MUC_ADMIN) != 0 || strcmp(it->name, "item") != 0)
			continue;
		if (n == MUC_MAX_ITEMS) {
			muc_reply_error(c, "policy-violation", "too many items at once");
			return;
		}
		x = &ch[n++];
		memset(x, 0, sizeof(*x));
		x->item = it;
		/* 17.4: a role or an affiliation, never both. */
		if (!role_s == !aff_s) {
			muc_reply_error(c, "bad-request",
					"each item changes a role or an affiliation");
			return;
		}
		if (role_s) {
			struct muc_occupant *t;

			x->is_role = true;
			x->value = muc_role_parse(role_s);
			x->nick = xml_attr_get(it, "nick");
			if (x->value < 0 || !x->nick) {
				muc_reply_error(c, "bad-request",
						"a role item needs a role and a nick");
				return;
			}
			t = muc_occupant_by_nick(room, x->nick);
			if (!t) {
				muc_reply_error(c, "item-not-found", "no such occupant");
				return;
			}
			err = muc_check_role_change(actor_aff, actor_role, t->aff, t->role,
						    x->value, t == actor);
		} else {
			const char *j = xml_attr_get(it, "jid");
			enum muc_affiliation cur;
			struct muc_affil *e;

			x->value = muc_affiliation_parse(aff_s);
			if (x->value < 0 || !j) {
				muc_reply_error(c, "bad-request", "an affiliation item needs "
						"an affiliation and a jid");
				return;
			}
			if (jid_parse(&x->jid, j, strlen(j)) < 0) {
				muc_reply_error(c, "jid-malformed", NULL);
				return;
			}
			jid_to_bare(&x->jid);
			x->reserve = xml_attr_get(it, "nick");
			e = muc_affil_find(room, x->jid.buf, x->jid.len);
			cur = e ? e->aff : MUC_AFF_NONE;
			if (!e && x->value != MUC_AFF_NONE)
				new_entries++;
			/* Owners left once every item applies (a JID given twice: approximate). */
			if (cur == MUC_AFF_OWNER && x->value != MUC_AFF_OWNER)
				owners_after--;
			else if (cur != MUC_AFF_OWNER && x->value == MUC_AFF_OWNER)
				owners_after++;
			err = muc_check_affiliation_change(actor_aff, cur, x->value,
							   strcmp(x->jid.buf, bare) == 0,
							   room->nowners);
		}
		if (err) {
			muc_reply_error(c, err, NULL);
			return;
		}
	}
	if (!n) {
		muc_reply_error(c, "bad-request", "no items");
		return;
	}
	/* 10.5: never a room without owners. */
	if (owners_after <= 0 && room->nowners) {
		muc_reply_error(c, "conflict", "the room would have no owner left");
		return;
	}
	if (room->naffils + new_entries > MUC_MAX_AFFILIATIONS) {
		muc_reply_error(c, "resource-constraint", "the affiliation list is full");
		return;
	}
	actor_nick = actor ? arena_strdup(c->a, actor->nick) : NULL;
	for (size_t i = 0; i < n; i++) {
		struct admin_change *x = &ch[i];
		const char *reason = item_reason(c, x->item);

		if (x->is_role) {
			/* An earlier item may have removed the occupant already. */
			struct muc_occupant *t = muc_occupant_by_nick(room, x->nick);

			if (!t || t->role == x->value)
				continue;
			if (x->value == MUC_ROLE_NONE) {
				/* Every session of the nickname goes (7.2.9). */
				do
					muc_occupant_remove(c, room, t, 307, actor_nick, reason);
				while ((t = muc_occupant_by_nick(room, x->nick)) != NULL);
			} else {
				muc_set_nick_role(room, t, x->value);
				muc_occupant_changed(c, room, t, actor_nick, reason);
			}
			continue;
		}
		if (muc_affil_set(room, x->jid.buf, x->jid.len, x->value, x->reserve) < 0) {
			log_error("muc.affiliation_failed", "room=%s msg=\"out of memory\"",
				  room->jid);
			continue;
		}
		aff_changed = true;
		apply_affiliation_to_occupants(c, room, &x->jid, actor_nick, reason);
	}
	if (aff_changed)
		muc_persist(c, room);
	muc_reply_result(c, NULL);
	muc_purge_ghosts(c, room);
	muc_room_maybe_destroy(c, room);
}

/* ---- #owner: the configuration form ---- */

static int form_bool(struct muc_ctx *c, struct xml_node *x, const char *var, const char *label,
		     bool v)
{
	return dataform_add_field_value(c->a, x, DATAFORM_FIELD_BOOLEAN, var, label,
					v ? "1" : "0") ? 0 : -ENOMEM;
}

/* A list-single field with its value and n options (labels may be NULL). */
static int form_list(struct muc_ctx *c, struct xml_node *x, const char *var, const char *label,
		     const char *value, const char *const *opts, const char *const *labels,
		     size_t n)
{
	struct xml_node *f = dataform_add_field_value(c->a, x, DATAFORM_FIELD_LIST_SINGLE, var,
						      label, value);

	if (!f)
		return -ENOMEM;
	for (size_t i = 0; i < n; i++)
		if (dataform_field_add_option(c->a, f, labels ? labels[i] : NULL, opts[i]) < 0)
			return -ENOMEM;
	return 0;
}

/* A jid-multi of the room's JIDs with one affiliation. */
static int form_aff_list(struct muc_ctx *c, struct xml_node *x, const char *var,
			 const char *label, enum muc_affiliation aff)
{
	struct xml_node *f = dataform_add_field(c->a, x, DATAFORM_FIELD_JID_MULTI, var, label);

	if (!f)
		return -ENOMEM;
	for (const struct muc_affil *a = c->room->affils; a; a = a->next)
		if (a->aff == aff && dataform_field_add_value(c->a, f, a->jid) < 0)
			return -ENOMEM;
	return 0;
}

/* 10.1.3, 10.2: the form with the room's current configuration. */
static struct xml_node *config_form(struct muc_ctx *c)
{
	static const char *const pm_opts[] = { "anyone", "participants", "moderators", "none" };
	static const char *const pm_labels[] = { "Anyone", "Anyone with Voice",
						 "Moderators Only", "Nobody" };
	static const char *const whois_opts[] = { "moderators", "anyone" };
	static const char *const whois_labels[] = { "Moderators Only", "Anyone" };
	static const unsigned sizes[] = { 10, 20, 30, 50, 100, 200, 500, 1000 };
	const struct muc_room *room = c->room;
	const struct muc_config *cfg = &room->cfg;
	uint32_t cap = c->svc->cfg->max_muc_occupants;
	struct arena *a = c->a;
	struct xml_node *x = dataform_new(a, DATAFORM_FORM, NS_MUC_ROOMCONFIG), *f;
	char title[JID_PART_MAX + 40], num[16];

	if (!x)
		return NULL;
	snprintf(title, sizeof(title), "Configuration for \"%.*s\" Room", (int)room->name_len,
		 room->jid);
	if (dataform_set_title(a, x, title) < 0 ||
	    !dataform_add_field_value(a, x, DATAFORM_FIELD_TEXT_SINGLE, "muc#roomconfig_roomname",
				      "Natural-Language Room Name", cfg->title) ||
	    !dataform_add_field_value(a, x, DATAFORM_FIELD_TEXT_SINGLE, "muc#roomconfig_roomdesc",
				      "Short Description of Room", cfg->description) ||
	    form_bool(c, x, "muc#roomconfig_persistentroom", "Make Room Persistent?",
		      cfg->persistent) < 0 ||
	    form_bool(c, x, "muc#roomconfig_publicroom", "Make Room Publicly Searchable?",
		      cfg->public_room) < 0 ||
	    form_bool(c, x, "muc#roomconfig_membersonly", "Make Room Members-Only?",
		      cfg->members_only) < 0 ||
	    form_bool(c, x, "muc#roomconfig_moderatedroom", "Make Room Moderated?",
		      cfg->moderated) < 0 ||
	    form_bool(c, x, "muc#roomconfig_passwordprotectedroom", "Password Required to Enter?",
		      cfg->password != NULL) < 0 ||
	    !dataform_add_field_value(a, x, DATAFORM_FIELD_TEXT_PRIVATE,
				      "muc#roomconfig_roomsecret", "Password", cfg->password))
		return NULL;
	/* Maximum occupants: the usual sizes under the service's limit, and the limit. */
	snprintf(num, sizeof(num), "%u", muc_room_max_users(c->svc, room));
	f = dataform_add_field_value(a, x, DATAFORM_FIELD_LIST_SINGLE, "muc#roomconfig_maxusers",
				     "Maximum Number of Occupants", num);
	if (!f)
		return NULL;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]) && sizes[i] < cap; i++) {
		snprintf(num, sizeof(num), "%u", sizes[i]);
		if (dataform_field_add_option(a, f, NULL, num) < 0)
			return NULL;
	}
	snprintf(num, sizeof(num), "%u", cap);
	if (dataform_field_add_option(a, f, NULL, num) < 0 ||
	    form_list(c, x, "muc#roomconfig_whois", "Who May Discover Real JIDs?",
		      cfg->non_anonymous ? "anyone" : "moderators", whois_opts, whois_labels,
		      2) < 0)
		return NULL;
	snprintf(num, sizeof(num), "%u", cfg->history_len);
	if (!dataform_add_field_value(a, x, DATAFORM_FIELD_TEXT_SINGLE, "muc#maxhistoryfetch",
				      "Maximum Number of History Messages Returned by Room", num) ||
	    form_bool(c, x, "muc#roomconfig_changesubject", "Allow Occupants to Change Subject?",
		      cfg->change_subject) < 0 ||
	    form_bool(c, x, "muc#roomconfig_allowinvites", "Allow Occupants to Invite Others?",
		      cfg->allow_invites) < 0 ||
	    form_list(c, x, "muc#roomconfig_allowpm", "Who Can Send Private Messages?",
		      muc_allow_pm_name(cfg->allow_pm), pm_opts, pm_labels, 4) < 0)
		return NULL;
	if (c->svc->cfg->max_muc_archive &&
	    form_bool(c, x, "muc#roomconfig_enablearchiving", "Archive Messages (XEP-0313)?",
		      cfg->archive) < 0)
		return NULL;
	if (form_aff_list(c, x, "muc#roomconfig_roomadmins", "Room Admins", MUC_AFF_ADMIN) < 0 ||
	    form_aff_list(c, x, "muc#roomconfig_roomowners", "Room Owners", MUC_AFF_OWNER) < 0)
		return NULL;
	return x;
}

/* A text field of the submission: NULL = absent (keep), "" = cleared. */
static const char *text_field(const struct dataform *f, const char *var, bool *present)
{
	const struct dataform_field *fl = dataform_get(f, var);

	*present = fl != NULL;
	if (!fl)
		return NULL;
	return fl->nvalues ? fl->values[0] : "";
}

/* Replaces *dst by a copy of v ("" or NULL: none). 0 or -ENOMEM. */
static int set_text(char **dst, const char *v)
{
	char *n = NULL;

	if (v && v[0]) {
		n = strdup(v);
		if (!n)
			return -ENOMEM;
	}
	free(*dst);
	*dst = n;
	return 0;
}

/* A boolean field: 0 (absent leaves *out), or -EINVAL with *bad set. */
static int get_bool(const struct dataform *f, const char *var, bool *out, const char **bad)
{
	int ret = dataform_get_bool(f, var, out);

	if (ret == -EINVAL)
		*bad = var;
	return ret == -EINVAL ? -EINVAL : 0;
}

/*
 * A jid-multi of owners or admins as bare JIDs in `a`: *n of them in
 * *out. 0 when absent (*out NULL), -EINVAL on a malformed JID.
 */
static int jid_list(struct arena *a, const struct dataform *f, const char *var,
		    struct jid **out, size_t *n)
{
	const struct dataform_field *fl = dataform_get(f, var);

	*out = NULL;
	*n = 0;
	if (!fl)
		return 0;
	*out = arena_alloc(a, (fl->nvalues + 1) * sizeof(**out));
	if (!*out)
		return -ENOMEM;
	for (size_t i = 0; i < fl->nvalues; i++) {
		if (!fl->values[i][0])
			continue;
		if (jid_parse(&(*out)[*n], fl->values[i], strlen(fl->values[i])) < 0 ||
		    !jid_has_local(&(*out)[*n]))
			return -EINVAL;
		jid_to_bare(&(*out)[*n]);
		(*n)++;
	}
	return 0;
}

/* Whether jid[0..len) is one of the n JIDs of list. */
static bool jid_in(const struct jid *list, size_t n, const char *jid, size_t len)
{
	for (size_t i = 0; i < n; i++)
		if (list[i].len == len && memcmp(list[i].buf, jid, len) == 0)
			return true;
	return false;
}

/*
 * Sets the owner (or admin) list to exactly `list` (others on it lose the
 * affiliation); the occupants concerned are told. 0 or -errno.
 */
static int set_aff_list(struct muc_ctx *c, struct muc_room *room, enum muc_affiliation aff,
			const struct jid *list, size_t n)
{
	struct muc_affil *a, *next;
	int ret;

	for (a = room->affils; a; a = next) {
		next = a->next;
		if (a->aff == aff && !jid_in(list, n, a->jid, a->jid_len)) {
			struct jid who;

			if (jid_parse(&who, a->jid, a->jid_len) < 0)
				continue;
			ret = muc_affil_set(room, who.buf, who.len, MUC_AFF_NONE, NULL);
			if (ret < 0)
				return ret;
			apply_affiliation_to_occupants(c, room, &who, NULL, NULL);
		}
	}
	for (size_t i = 0; i < n; i++) {
		/* The owner list wins over the admin list for a JID on both. */
		if (aff == MUC_AFF_ADMIN &&
		    muc_room_affiliation(room, list[i].buf, list[i].len) == MUC_AFF_OWNER)
			continue;
		ret = muc_affil_set(room, list[i].buf, list[i].len, aff, NULL);
		if (ret < 0)
			return ret;
		apply_affiliation_to_occupants(c, room, &list[i], NULL, NULL);
	}
	return 0;
}

/*
 * Applies a submitted configuration (10.1.3, 10.2). Everything is
 * checked into a copy first; a refusal leaves the room as it was.
 */
static void config_submit(struct muc_ctx *c, const struct dataform *f)
{
	struct muc_room *room = c->room;
	const struct config *sc = c->svc->cfg;
	struct muc_config n = room->cfg, old = room->cfg;
	const char *bad = NULL, *v;
	struct jid *owners, *admins;
	size_t nowners, nadmins;
	bool present, protect = room->cfg.password != NULL, was_locked = room->locked;
	int codes[4];
	size_t ncodes = 0;
	unsigned long num;
	int ret;

	if (f->form_type && strcmp(f->form_type, NS_MUC_ROOMCONFIG) != 0) {
		muc_reply_error(c, "bad-request", "not a room configuration form");
		return;
	}
	/* Strings are copied below, once everything else checked out. */
	n.title = n.description = n.password = NULL;
	/* Without the boolean, a non-empty secret is what protects the room. */
	if (!dataform_get(f, "muc#roomconfig_passwordprotectedroom") &&
	    dataform_get(f, "muc#roomconfig_roomsecret")) {
		v = dataform_value(f, "muc#roomconfig_roomsecret");
		protect = v && v[0];
	}
	if (get_bool(f, "muc#roomconfig_persistentroom", &n.persistent, &bad) < 0 ||
	    get_bool(f, "muc#roomconfig_publicroom", &n.public_room, &bad) < 0 ||
	    get_bool(f, "muc#roomconfig_membersonly", &n.members_only, &bad) < 0 ||
	    get_bool(f, "muc#roomconfig_moderatedroom", &n.moderated, &bad) < 0 ||
	    get_bool(f, "muc#roomconfig_passwordprotectedroom", &protect, &bad) < 0 ||
	    get_bool(f, "muc#roomconfig_changesubject", &n.change_subject, &bad) < 0 ||
	    get_bool(f, "muc#roomconfig_allowinvites", &n.allow_invites, &bad) < 0 ||
	    get_bool(f, "muc#roomconfig_enablearchiving", &n.archive, &bad) < 0)
		goto refuse;
	if (!sc->max_muc_archive)
		n.archive = false;
	v = dataform_value(f, "muc#roomconfig_maxusers");
	if (v) {
		if (strcmp(v, "none") == 0 || strcmp(v, "0") == 0)
			n.max_users = 0;
		else if (dataform_get_uint(f, "muc#roomconfig_maxusers", 1, sc->max_muc_occupants,
					   &num) == 0)
			n.max_users = (uint32_t)num;
		else
			bad = "muc#roomconfig_maxusers";
	}
	if (!bad && dataform_get_uint(f, "muc#maxhistoryfetch", 0, sc->max_muc_history, &num) == 0)
		n.history_len = (uint32_t)num;
	else if (!bad && dataform_value(f, "muc#maxhistoryfetch"))
		bad = "muc#maxhistoryfetch";
	v = dataform_value(f, "muc#roomconfig_whois");
	if (!bad && v) {
		if (strcmp(v, "anyone") == 0)
			n.non_anonymous = true;
		else if (strcmp(v, "moderators") == 0)
			n.non_anonymous = false;
		else
			bad = "muc#roomconfig_whois";
	}
	v = dataform_value(f, "muc#roomconfig_allowpm");
	if (!bad && v) {
		ret = muc_allow_pm_parse(v);
		if (ret < 0)
			bad = "muc#roomconfig_allowpm";
		else
			n.allow_pm = (uint8_t)ret;
	}
	if (bad)
		goto refuse;
	if (jid_list(c->a, f, "muc#roomconfig_roomowners", &owners, &nowners) < 0 ||
	    jid_list(c->a, f, "muc#roomconfig_roomadmins", &admins, &nadmins) < 0) {
		muc_reply_error(c, "jid-malformed", "the owner and admin lists take bare JIDs");
		return;
	}
	if (owners && !nowners) {
		muc_reply_error(c, "not-acceptable", "a room needs an owner");
		return;
	}
	/* Texts: absent keeps, empty clears; bounded. */
	v = text_field(f, "muc#roomconfig_roomname", &present);
	if (set_text(&n.title, present ? v : old.title) < 0)
		goto oom;
	v = text_field(f, "muc#roomconfig_roomdesc", &present);
	if (set_text(&n.description, present ? v : old.description) < 0)
		goto oom;
	v = text_field(f, "muc#roomconfig_roomsecret", &present);
	if (set_text(&n.password, protect ? (present ? v : old.password) : NULL) < 0)
		goto oom;
	if ((n.title && strlen(n.title) > MUC_CONFIG_TEXT_MAX) ||
	    (n.description && strlen(n.description) > MUC_CONFIG_TEXT_MAX) ||
	    (n.password && strlen(n.password) > MUC_PASSWORD_MAX)) {
		muc_config_free(&n);
		muc_reply_error(c, "not-acceptable", "a text field is too long");
		return;
	}
	/* 10.1.3: a password-protected room with no password is refused. */
	if (protect && !n.password) {
		muc_config_free(&n);
		muc_reply_error(c, "not-acceptable", "a password-protected room needs a password");
		return;
	}
	/* 10.2.1: what the occupants are told about. */
	if (n.non_anonymous != old.non_anonymous)
		codes[ncodes++] = n.non_anonymous ? 172 : 173;
	if (n.archive != old.archive)
		codes[ncodes++] = n.archive ? 170 : 171;
	if (n.persistent != old.persistent || n.public_room != old.public_room ||
	    n.members_only != old.members_only || n.moderated != old.moderated ||
	    n.max_users != old.max_users || n.history_len != old.history_len ||
	    n.allow_pm != old.allow_pm || n.change_subject != old.change_subject ||
	    n.allow_invites != old.allow_invites || !n.password != !old.password ||
	    (n.title && old.title ? strcmp(n.title, old.title) != 0 : n.title != old.title) ||
	    (n.description && old.description ? strcmp(n.description, old.description) != 0 :
	     n.description != old.description))
		codes[ncodes++] = 104;
	muc_config_free(&room->cfg);
	room->cfg = n;
	room->locked = false;
	muc_history_trim(room);
	if ((owners && set_aff_list(c, room, MUC_AFF_OWNER, owners, nowners) < 0) ||
	    (admins && set_aff_list(c, room, MUC_AFF_ADMIN, admins, nadmins) < 0))
		log_error("muc.affiliation_failed", "room=%s msg=\"out of memory\"", room->jid);
	/* 10.2: a room that became members-only keeps its members only (322). */
	if (n.members_only && !old.members_only) {
		struct muc_occupant *o = room->occupants, *next;

		for (; o; o = next) {
			next = o->next;
			if (o->aff < MUC_AFF_MEMBER) {
				muc_occupant_remove(c, room, o, 322, NULL, NULL);
				next = room->occupants;
			}
		}
	}
	if (was_locked)
		log_info("muc.room_unlocked", "room=%s persistent=%d", room->jid, n.persistent);
	if (n.persistent || room->stored)
		muc_persist(c, room);
	muc_reply_result(c, NULL);
	if (!was_locked && ncodes)
		muc_room_notify_codes(c, room, codes, ncodes);
	muc_purge_ghosts(c, room);
	muc_room_maybe_destroy(c, room);
	return;
refuse:
	{
		char text[128];

		snprintf(text, sizeof(text), "bad value for %s", bad ? bad : "a field");
		muc_reply_error(c, "not-acceptable", text);
	}
	return;
oom:
	muc_config_free(&n);
	muc_reply_error(c, "internal-server-error", NULL);
}

/* 10.9: everyone out (with the alternate venue and reason), then the room goes. */
static void room_destroy_request(struct muc_ctx *c, const struct xml_node *d)
{
	struct muc_room *room = c->room;
	const char *venue = xml_attr_get(d, "jid");
	const struct xml_node *r = xml_child(d, NS_MUC_OWNER, "reason");
	const struct xml_node *p = xml_child(d, NS_MUC_OWNER, "password");
	const char *reason = r ? xml_text(c->a, r) : NULL;
	const char *password = p ? xml_text(c->a, p) : NULL;
	struct jid alt;

	if (venue && (jid_parse(&alt, venue, strlen(venue)) < 0 || !jid_has_local(&alt))) {
		muc_reply_error(c, "jid-malformed", "the alternate venue is not a room JID");
		return;
	}
	if (reason && strlen(reason) > MUC_REASON_MAX)
		reason = arena_strndup(c->a, reason, MUC_REASON_MAX);
	muc_room_evacuate(c, room, venue ? alt.buf : NULL, password, reason);
	muc_reply_result(c, NULL);
	muc_room_destroy(c, room);
}

/*
 * #owner (10): get = the configuration form; set = a submitted form, a
 * cancellation, or <destroy/>. Owners only (forbidden otherwise).
 */
static void owner_iq(struct muc_ctx *c, const struct xml_node *q, bool get)
{
	struct muc_room *room = c->room;
	const struct xml_node *x, *d;
	struct dataform f;
	const char *why = NULL;

	if (muc_room_affiliation(room, c->from->buf, c->from->len) != MUC_AFF_OWNER) {
		muc_reply_error(c, "forbidden", "only owners configure the room");
		return;
	}
	if (get) {
		struct xml_node *r = xml_node_new(c->a, NS_MUC_OWNER, "query");
		struct xml_node *form = r ? config_form(c) : NULL;

		if (!form) {
			muc_reply_error(c, "internal-server-error", NULL);
			return;
		}
		xml_node_append(r, form);
		muc_reply_result(c, r);
		return;
	}
	d = xml_child(q, NS_MUC_OWNER, "destroy");
	if (d) {
		room_destroy_request(c, d);
		return;
	}
	x = xml_child(q, NS_DATA_FORMS, "x");
	if (!x) {
		muc_reply_error(c, "bad-request", "expected a form or <destroy/>");
		return;
	}
	if (dataform_parse(c->a, x, &f, &why) < 0) {
		muc_reply_error(c, "bad-request", why);
		return;
	}
	if (f.type == DATAFORM_CANCEL) {
		/* 10.1.3: cancelling the first configuration destroys the room. */
		if (room->locked) {
			muc_room_evacuate(c, room, NULL, NULL, NULL);
			muc_reply_result(c, NULL);
			muc_room_destroy(c, room);
			return;
		}
		muc_reply_result(c, NULL);
		return;
	}
	if (f.type != DATAFORM_SUBMIT) {
		muc_reply_error(c, "bad-request", "expected a submitted form");
		return;
	}
	config_submit(c, &f);
}

void muc_iq_room(struct muc_ctx *c)
{
	struct xml_node *q = xml_first_element(c->st);
	const char *type = stanza_type(c->st);
	bool get = strcmp(type, "get") == 0;
	struct muc_room *room = c->room;

	if (!get && strcmp(type, "set") != 0)
		return;	/* results and errors end here */
	/* A room that is locked exists only for its owner (7.2.6). */
	if (!room || (room->locked &&
		      muc_room_affiliation(room, c->from->buf, c->from->len) != MUC_AFF_OWNER)) {
		muc_reply_error(c, "item-not-found", "no such room");
		return;
	}
	if (!q) {
		muc_reply_error(c, "bad-request", NULL);
		return;
	}
	if (get && strcmp(q->ns, NS_DISCO_INFO) == 0 && strcmp(q->name, "query") == 0) {
		room_info(c);
	} else if (get && strcmp(q->ns, NS_DISCO_ITEMS) == 0 && strcmp(q->name, "query") == 0) {
		/* 6.5: occupants are private; nodes do not exist. */
		if (xml_attr_get(q, "node"))
			muc_reply_error(c, "item-not-found", NULL);
		else
			muc_reply_result(c, query_new(c, NS_DISCO_ITEMS, NULL));
	} else if (strcmp(q->ns, NS_MUC_ADMIN) == 0 && strcmp(q->name, "query") == 0) {
		if (get)
			admin_get(c, q);
		else
			admin_set(c, q);
	} else if (strcmp(q->ns, NS_MUC_OWNER) == 0 && strcmp(q->name, "query") == 0) {
		owner_iq(c, q, get);
	} else if (strcmp(q->ns, NS_MAM) == 0) {
		muc_archive_iq(c);
	} else if (get && strcmp(q->ns, NS_PING) == 0) {
		muc_reply_result(c, NULL);
	} else {
		muc_reply_error(c, "service-unavailable", NULL);
	}
}
