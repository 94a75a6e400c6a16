/* SPDX-License-Identifier: MIT */
/*
 * Server-made presence subscriptions (see iot_roster.h).
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "iot_roster.h"
#include "jid.h"
#include "log.h"
#include "presence.h"
#include "roster.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "storage.h"
#include "stored_xml.h"
#include "subscription.h"
#include "worker.h"

#define IOT_ROSTER_ARENA_CHUNK	2048

/*
 * One change of one account's roster item. The same change is applied in
 * memory or in the store, and again in memory when an account got loaded
 * while the store was being changed: it must be idempotent, which setting
 * and clearing bits is.
 */
struct iot_change {
	uint8_t add;		/* bits set (SUB_TO, SUB_FROM) */
	uint8_t del;		/* bits cleared */
	bool remove;		/* drop the item (in memory); 'none' in the store */
};

/* The visible state (item bits) after a change of state `old`. */
static uint8_t iot_change_apply(const struct iot_change *ch, uint8_t old)
{
	uint8_t vis = (uint8_t)(old & ~SUB_PENDING_IN);

	if (ch->remove)
		return 0;
	vis = (uint8_t)((vis | ch->add) & ~ch->del);
	/* An answered request is no longer pending (RFC 6121 3.1.6). */
	if (ch->add & SUB_TO)
		vis &= (uint8_t)~SUB_PENDING_OUT;
	return vis;
}

/*
 * Whether bare is an account of this server (a bare JID at the configured
 * domain; whether the account exists is the store's to say); its
 * localpart into user.
 */
static bool iot_local_user(struct worker *w, const char *bare, char *user, size_t user_size)
{
	const char *domain = w->srv->cfg->domain;
	const char *at = strchr(bare, '@');

	if (!at || strchr(bare, '/') || strcmp(at + 1, domain) != 0 ||
	    (size_t)(at - bare) >= user_size)
		return false;
	memcpy(user, bare, (size_t)(at - bare));
	user[at - bare] = '\0';
	return true;
}

/*
 * The change on an account in memory: a pending request from the contact
 * dropped when the change answers it (From granted), the item changed,
 * stored and pushed to the interested resources (roster_commit). A roster
 * at max_roster_items gets no new item: logged, the friendship is simply
 * not made on that side.
 */
static void iot_change_memory(struct worker *w, struct account *a, const char *bare,
			      const char *contact, const struct iot_change *ch)
{
	size_t clen = strlen(contact);
	struct roster_item *it;
	uint8_t old, vis;
	bool approved;

	old = roster_state(a->roster, contact, clen, &approved);
	if ((ch->add & SUB_FROM) && (old & SUB_PENDING_IN))
		roster_drop_request(w, a, contact, clen);
	vis = iot_change_apply(ch, old);
	it = roster_lookup(a->roster, contact, clen);
	if (ch->remove) {
		if (it && !it->deleted) {
			roster_remove(a->roster, it);
			roster_commit(w, a, bare, strlen(bare), it);
		}
		return;
	}
	if (it && !it->deleted && it->sub == vis)
		return;
	if ((!it || it->deleted) && a->roster->count >= w->srv->cfg->max_roster_items) {
		log_warn("iot.roster_full", "user=%s contact=%s", a->user, contact);
		return;
	}
	it = roster_upsert(a->roster, contact, clen);
	if (!it) {
		log_error("iot.roster_failed", "user=%s msg=\"out of memory\"", a->user);
		return;
	}
	it->sub = vis;
	roster_commit(w, a, bare, strlen(bare), it);
}

/* ---- Accounts without sessions: on the storage thread ---- */

struct iot_change_req {
	struct storage_req req;		/* first */
	struct iot_change ch;
	char bare[JID_MAX];
	char contact[JID_MAX];
};

/* Storage side for an account without sessions (-ENOENT: no such account). */
static int iot_change_run(struct storage *st, struct storage_req *req)
{
	struct iot_change_req *cr = (struct iot_change_req *)req;
	uint8_t old, vis;
	bool approved, exists;
	int ret;

	ret = roster_db_account_exists(st, req->user);
	if (ret < 0)
		return ret;
	ret = roster_db_state(st, req->user, cr->contact, &old, &approved, &exists);
	if (ret < 0)
		return ret;
	if ((cr->ch.add & SUB_FROM) && (old & SUB_PENDING_IN)) {
		ret = roster_db_request_delete(st, req->user, cr->contact);
		if (ret < 0)
			return ret;
	}
	vis = iot_change_apply(&cr->ch, old);
	if (vis == (old & (uint8_t)~SUB_PENDING_IN) && (exists || !vis))
		return 0;
	return roster_db_set_state(st, req->user, cr->contact, vis, approved);
}

static void iot_change_done(struct storage_req *req)
{
	struct iot_change_req *cr = (struct iot_change_req *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct account *a;

	if (req->result < 0 && req->result != -ENOENT)
		log_warn("iot.roster_store_failed", "user=%s err=%d", req->user, req->result);
	/* Loaded meanwhile, maybe before the write: apply it again in memory. */
	a = sessdir_find_account(w->sessions, cr->bare, strlen(cr->bare));
	if (a && a->roster)
		iot_change_memory(w, a, cr->bare, cr->contact, &cr->ch);
	free(cr);
}

/*
 * What iot_change and iot_presence_from do for an account at home on
 * another worker (its roster and sessions are there): done there, in the
 * order posted (a roster change before the presence it makes visible).
 */
struct iot_home_msg {
	struct worker_msg msg;		/* first */
	bool presence;			/* iot_presence_from, else iot_change */
	bool available;
	struct iot_change ch;
	char bare[JID_MAX];
	char other[JID_MAX];		/* the contact, or the presence's 'to' */
};

static void iot_change(struct worker *w, const char *bare, const char *contact,
		       struct iot_change ch);
static void iot_presence_from(struct worker *w, const char *bare, const char *to,
			      bool available);

static void iot_home_arrived(struct worker *w, struct worker_msg *m)
{
	struct iot_home_msg *hm = (struct iot_home_msg *)m;
	struct arena_mark mark = arena_mark(&w->tmp);

	if (hm->presence)
		iot_presence_from(w, hm->bare, hm->other, hm->available);
	else
		iot_change(w, hm->bare, hm->other, hm->ch);
	arena_rewind(&w->tmp, mark);
	free(hm);
}

/* Posts the work for bare to its home when that is another worker. true when posted. */
static bool iot_post_home(struct worker *w, const char *bare, const char *other, bool presence,
			  bool available, const struct iot_change *ch)
{
	struct iot_home_msg *hm;

	if (!router_home_elsewhere(w, bare, strlen(bare)))
		return false;
	hm = calloc(1, sizeof(*hm));
	if (!hm) {
		log_error("iot.roster_failed", "jid=%s msg=\"out of memory\"", bare);
		return true;
	}
	hm->presence = presence;
	hm->available = available;
	if (ch)
		hm->ch = *ch;
	snprintf(hm->bare, sizeof(hm->bare), "%s", bare);
	snprintf(hm->other, sizeof(hm->other), "%s", other);
	worker_post(w, worker_home(w->srv, hm->bare), &hm->msg, iot_home_arrived);
	return true;
}

/* Applies ch to bare's item for contact, where the account's roster is (its home). */
static void iot_change(struct worker *w, const char *bare, const char *contact,
		       struct iot_change ch)
{
	char user[JID_PART_MAX + 1];
	struct iot_change_req *cr;
	struct account *a;

	if (!iot_local_user(w, bare, user, sizeof(user)) || strcmp(bare, contact) == 0)
		return;
	if (iot_post_home(w, bare, contact, false, false, &ch))
		return;
	a = sessdir_find_account(w->sessions, bare, strlen(bare));
	if (a && a->roster) {
		iot_change_memory(w, a, bare, contact, &ch);
		return;
	}
	cr = calloc(1, sizeof(*cr));
	if (!cr) {
		log_error("iot.roster_failed", "user=%s msg=\"out of memory\"", user);
		return;
	}
	cr->ch = ch;
	snprintf(cr->bare, sizeof(cr->bare), "%s", bare);
	snprintf(cr->contact, sizeof(cr->contact), "%s", contact);
	snprintf(cr->req.user, sizeof(cr->req.user), "%s", user);
	cr->req.op = STORAGE_OP_RUN;
	cr->req.run = iot_change_run;
	cr->req.done = iot_change_done;
	cr->req.inbox = &w->inbox;
	storage_queue_submit(w->srv->store, &cr->req);
}

/* ---- Presence ---- */

/* Routes a presence the server makes: type (NULL = available) from -> to. */
static void iot_presence(struct worker *w, struct arena *a, const char *type, const char *from,
			 const char *to)
{
	struct xml_node *p = xml_node_new(a, XML_NS_CLIENT, "presence");

	if (!p || (type && xml_attr_set(a, p, "type", type) < 0) ||
	    xml_attr_set(a, p, "from", from) < 0 || xml_attr_set(a, p, "to", to) < 0 ||
	    router_route_stanza(w, p) < 0)
		log_warn("iot.presence_failed", "from=%s", from);
}

/*
 * Each available resource of `bare` sends its last presence to `to`
 * (available = true), or unavailable (false): at bare's home, where its
 * sessions are.
 */
static void iot_presence_from(struct worker *w, const char *bare, const char *to, bool available)
{
	char user[JID_PART_MAX + 1];
	struct arena a;

	/* Only accounts of this server have sessions here. */
	if (!iot_local_user(w, bare, user, sizeof(user)) ||
	    iot_post_home(w, bare, to, true, available, NULL))
		return;

	arena_init(&a, IOT_ROSTER_ARENA_CHUNK);
	for (struct session *s = sessdir_find_bare(w->sessions, bare, strlen(bare)), *next;
	     s; s = next) {
		struct xml_node *p;

		next = s->next;
		if (!s->available)
			continue;
		if (!available) {
			iot_presence(w, &a, "unavailable", s->jid, to);
		} else if (s->pres && s->pres->last) {
			p = stored_xml_parse(w->xml, &a, s->pres->last, s->pres->last_len);
			if (p && xml_attr_set(&a, p, "to", to) == 0)
				router_route_stanza(w, p);
		}
		arena_reset(&a);
	}
	arena_release(&a);
}

void iot_befriend(struct worker *w, const char *a, const char *b)
{
	struct iot_change both = { .add = SUB_TO | SUB_FROM };

	if (strcmp(a, b) == 0)
		return;
	iot_change(w, a, b, both);
	iot_change(w, b, a, both);
	iot_presence_from(w, a, b, true);
	iot_presence_from(w, b, a, true);
}

void iot_unfriend(struct worker *w, const char *a, const char *b)
{
	struct iot_change rm = { .del = SUB_TO | SUB_FROM | SUB_PENDING_OUT, .remove = true };

	if (strcmp(a, b) == 0)
		return;
	iot_change(w, a, b, rm);
	iot_change(w, b, a, rm);
	iot_presence_from(w, a, b, false);
	iot_presence_from(w, b, a, false);
}

void iot_grant(struct worker *w, const char *user, const char *contact)
{
	struct iot_change from = { .add = SUB_FROM };
	struct arena a;

	iot_change(w, user, contact, from);
	/* The contact's server (this one) turns its Pending Out into To. */
	arena_init(&a, IOT_ROSTER_ARENA_CHUNK);
	iot_presence(w, &a, "subscribed", user, contact);
	arena_release(&a);
	iot_presence_from(w, user, contact, true);
}
