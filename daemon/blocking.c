/* SPDX-License-Identifier: MIT */
/*
 * XEP-0191 Blocking Command. See blocking.h for the rules.
 *
 * The in-memory list is an open-addressing hash set of normalized JID
 * strings (linear probing, backward-shift deletion, at most half full).
 * Matching a sender looks up at most four substrings of its normalized
 * JID (full, bare, domain/resource, domain), which are all contiguous in
 * struct jid's buffer, so nothing is copied on the routing path and an
 * empty list costs one comparison.
 *
 * Changes (block, unblock) are written to storage first; the requesting
 * stream's input is paused meanwhile, and the completion updates the
 * list, answers, pushes the change to the resources that asked for the
 * list (section 3.3) and resumes the stream.
 */
#include <errno.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>

#include "account.h"
#include "blocking.h"
#include "c2s.h"
#include "config.h"
#include "conn.h"
#include "iq.h"
#include "iq_async.h"
#include "jid.h"
#include "log.h"
#include "presence.h"
#include "roster.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "stored_xml.h"
#include "worker.h"

/* ---- The list ---- */

#define BLOCKLIST_MIN_SLOTS	8

struct blocklist_slot {
	uint64_t hash;
	char *jid;		/* NUL-terminated; NULL = empty slot */
	size_t len;
};

struct blocklist {
	struct blocklist_slot *slots;
	size_t cap;		/* power of two, or 0 before the first item */
	size_t count;
	size_t reserved;	/* new items of block requests still being stored */
};

static uint64_t blocklist_seed;
static pthread_once_t blocklist_seed_once = PTHREAD_ONCE_INIT;

static void blocklist_seed_init(void)
{
	if (getrandom(&blocklist_seed, sizeof(blocklist_seed), 0) != sizeof(blocklist_seed))
		blocklist_seed = (uint64_t)(uintptr_t)&blocklist_seed;
}

/*
 * FNV-1a with a per-process seed. The keys are chosen by the account's
 * owner, so colliding keys would only slow down that owner's own list.
 */
static uint64_t blocklist_hash(const char *s, size_t len)
{
	uint64_t h = 0xcbf29ce484222325ULL ^ blocklist_seed;

	for (size_t i = 0; i < len; i++) {
		h ^= (unsigned char)s[i];
		h *= 0x100000001b3ULL;
	}
	return h ^ (h >> 31);
}

struct blocklist *blocklist_new(void)
{
	pthread_once(&blocklist_seed_once, blocklist_seed_init);
	return calloc(1, sizeof(struct blocklist));
}

void blocklist_free(struct blocklist *bl)
{
	if (!bl)
		return;
	for (size_t i = 0; i < bl->cap; i++)
		free(bl->slots[i].jid);
	free(bl->slots);
	free(bl);
}

/* The slot holding the item, or the empty slot where it would go. */
static size_t blocklist_find(const struct blocklist *bl, const char *jid, size_t len,
			     uint64_t h)
{
	size_t mask = bl->cap - 1, i = h & mask;

	while (bl->slots[i].jid) {
		const struct blocklist_slot *s = &bl->slots[i];

		if (s->hash == h && s->len == len && memcmp(s->jid, jid, len) == 0)
			break;
		i = (i + 1) & mask;
	}
	return i;
}

static int blocklist_grow(struct blocklist *bl)
{
	size_t ncap = bl->cap ? bl->cap * 2 : BLOCKLIST_MIN_SLOTS;
	struct blocklist_slot *old = bl->slots, *n = calloc(ncap, sizeof(*n));
	size_t ocap = bl->cap;

	if (!n)
		return -ENOMEM;
	bl->slots = n;
	bl->cap = ncap;
	for (size_t i = 0; i < ocap; i++)
		if (old[i].jid)
			n[blocklist_find(bl, old[i].jid, old[i].len, old[i].hash)] = old[i];
	free(old);
	return 0;
}

int blocklist_add(struct blocklist *bl, const char *jid, size_t len)
{
	uint64_t h = blocklist_hash(jid, len);
	struct blocklist_slot *s;
	char *copy;

	if (len == 0 || len >= JID_MAX || memchr(jid, '\0', len))
		return -EINVAL;
	if (bl->cap && bl->slots[blocklist_find(bl, jid, len, h)].jid)
		return 0;
	/* Keep at most half the slots used: probes stay short. */
	if ((bl->count + 1) * 2 > bl->cap && blocklist_grow(bl) < 0)
		return -ENOMEM;
	copy = malloc(len + 1);
	if (!copy)
		return -ENOMEM;
	memcpy(copy, jid, len);
	copy[len] = '\0';
	s = &bl->slots[blocklist_find(bl, jid, len, h)];
	s->hash = h;
	s->jid = copy;
	s->len = len;
	bl->count++;
	return 1;
}

bool blocklist_remove(struct blocklist *bl, const char *jid, size_t len)
{
	size_t mask, i, j;

	if (!bl || !bl->count)
		return false;
	mask = bl->cap - 1;
	i = blocklist_find(bl, jid, len, blocklist_hash(jid, len));
	if (!bl->slots[i].jid)
		return false;
	free(bl->slots[i].jid);
	bl->slots[i].jid = NULL;
	bl->count--;
	/*
	 * Backward-shift deletion: move up every later item of the probe run
	 * whose home slot does not lie cyclically in (i, j], so no lookup
	 * stops early at the hole.
	 */
	for (j = (i + 1) & mask; bl->slots[j].jid; j = (j + 1) & mask) {
		size_t home = bl->slots[j].hash & mask;
		bool stays = i <= j ? (home > i && home <= j) : (home > i || home <= j);

		if (stays)
			continue;
		bl->slots[i] = bl->slots[j];
		bl->slots[j].jid = NULL;
		i = j;
	}
	return true;
}

void blocklist_clear(struct blocklist *bl)
{
	if (!bl)
		return;
	for (size_t i = 0; i < bl->cap; i++) {
		free(bl->slots[i].jid);
		bl->slots[i].jid = NULL;
	}
	bl->count = 0;
}

size_t blocklist_count(const struct blocklist *bl)
{
	return bl ? bl->count : 0;
}

bool blocklist_contains(const struct blocklist *bl, const char *jid, size_t len)
{
	if (!bl || !bl->count)
		return false;
	return bl->slots[blocklist_find(bl, jid, len, blocklist_hash(jid, len))].jid != NULL;
}

bool blocklist_matches(const struct blocklist *bl, const struct jid *j)
{
	const char *dom = j->buf + j->domain_off;

	if (!bl || !bl->count || !j->len)
		return false;
	/*
	 * XEP-0191 section 5 order: full, bare, domain/resource, domain. A
	 * "d/r" item names the entity d/r itself ("only that resource"), not
	 * a user's resource of the same name, as Prosody reads it too.
	 */
	if (jid_has_local(j)) {
		if (jid_has_resource(j) && blocklist_contains(bl, j->buf, j->len))
			return true;
		if (blocklist_contains(bl, j->buf, j->domain_off + j->domain_len))
			return true;
	} else if (jid_has_resource(j) && blocklist_contains(bl, dom, j->len - j->domain_off)) {
		return true;
	}
	return blocklist_contains(bl, dom, j->domain_len);
}

const char *blocklist_next(const struct blocklist *bl, size_t *pos)
{
	if (!bl)
		return NULL;
	for (; *pos < bl->cap; (*pos)++)
		if (bl->slots[*pos].jid)
			return bl->slots[(*pos)++].jid;
	return NULL;
}

/* ---- Helpers on the worker ---- */

static struct blocklist *account_blocklist(const struct session *s)
{
	struct account *a = session_account(s);

	return a ? a->blocklist : NULL;
}

/* Whether the normalized text `jid` names the same account as bare[0..bare_len). */
static bool same_account(const char *jid, const char *bare, size_t bare_len)
{
	return strncmp(jid, bare, bare_len) == 0 && (jid[bare_len] == '\0' || jid[bare_len] == '/');
}

bool blocking_account_blocks(const struct session *s, const struct jid *j)
{
	struct blocklist *bl = account_blocklist(s);

	/* A user's own resources are never blocked from one another (section 4). */
	if (!bl || !bl->count || same_account(j->buf, s->jid, s->bare_len))
		return false;
	return blocklist_matches(bl, j);
}

/*
 * Sends an error reply for `st` to the connection `to_conn`, built in an
 * arena of its own: the worker's scratch arena may hold the attributes of
 * the stanza being routed, so it must not be reset here. `blocked` adds
 * the XEP-0191 application condition (and type 'cancel', as its example).
 */
static void blocking_send_error(struct worker *w, struct conn *to_conn, const struct xml_node *st,
				const char *condition, bool blocked)
{
	struct arena a;
	struct xml_node *r, *err;

	if (!to_conn || to_conn->closing)
		return;
	arena_init(&a, 1024);
	r = stanza_error_reply(&a, st, w->srv->cfg->domain, condition, NULL);
	err = r ? xml_child(r, XML_NS_CLIENT, "error") : NULL;
	if (err && blocked) {
		if (xml_attr_set(&a, err, "type", "cancel") < 0 ||
		    !xml_node_add_child(&a, err, NS_BLOCKING_ERRORS, "blocked"))
			err = NULL;
	}
	if (err)
		c2s_send_stanza(to_conn, r);
	else
		log_warn("blocking.reply_failed", "conn=%llu msg=\"out of memory\"",
			 (unsigned long long)to_conn->id);
	arena_release(&a);
}

/* Whether a stanza of this kind and type may be answered with an error. */
static bool answerable(const struct xml_node *st)
{
	const char *type = stanza_type(st);

	if (stanza_is_error(st))
		return false;
	return stanza_kind(st) != STANZA_IQ || strcmp(type, "get") == 0 || strcmp(type, "set") == 0;
}

/* ---- Enforcement ---- */

bool blocking_outbound(struct conn *c, struct xml_node *st, const struct jid *to)
{
	struct session *s = c->sess;

	/* The user's own server stays reachable even with its domain blocked. */
	if (!s || strcmp(to->buf, c->w->srv->cfg->domain) == 0 || !blocking_account_blocks(s, to))
		return false;
	log_debug("blocking.outbound", "conn=%llu jid=%s kind=%s", (unsigned long long)c->id,
		  s->jid, st->name);
	/* Errors and iq results cannot be answered with errors: dropped. */
	if (answerable(st))
		blocking_send_error(c->w, c, st, "not-acceptable", true);
	return true;
}

/*
 * The error for a refused inbound stanza: to the sender's connection, or
 * for a stanza forwarded from the sender's home, back there (router.c).
 */
static void blocking_inbound_error(struct worker *w, struct conn *to_conn,
				   struct conn *src, const struct xml_node *st)
{
	if (!src && router_from_local_session(w, NULL, st))
		router_bounce_w(w, NULL, st, "service-unavailable");
	else
		blocking_send_error(w, to_conn, st, "service-unavailable", false);
}

/* The local connection of a stanza's sender, by its (normalized) 'from'. */
static struct conn *sender_conn(struct worker *w, struct conn *src, const struct jid *from)
{
	struct session *s;

	if (src)
		return src;
	s = from ? sessdir_find_full(w->sessions, from->buf, from->len) : NULL;
	return s ? s->conn : NULL;
}

bool blocking_inbound(struct worker *w, struct conn *src, struct xml_node *st,
		      const struct jid *from, const struct jid *to)
{
	size_t bare_len = to->domain_off + to->domain_len;
	struct account *a;
	const char *type;

	/* Own resources, and the server itself, always pass. */
	if (!from || jid_bare_equal(from, to) || strcmp(from->buf, w->srv->cfg->domain) == 0)
		return false;
	a = sessdir_find_account(w->sessions, to->buf, bare_len);
	if (!a || !blocklist_matches(a->blocklist, from))
		return false;
	log_debug("blocking.inbound", "to=%.*s kind=%s", (int)bare_len, to->buf, st->name);
	/*
	 * Section 3.3: presence never gets an answer; chat and normal messages
	 * and iq get/set get service-unavailable, so the user looks offline;
	 * other messages (headline, groupchat, error) and iq results are
	 * dropped, as a server does for an account without sessions.
	 */
	type = stanza_type(st);
	switch (stanza_kind(st)) {
	case STANZA_MESSAGE:
		if (strcmp(type, "chat") == 0 || strcmp(type, "normal") == 0)
			blocking_inbound_error(w, sender_conn(w, src, from), src, st);
		break;
	case STANZA_IQ:
		if (answerable(st))
			blocking_inbound_error(w, sender_conn(w, src, from), src, st);
		break;
	default:
		break;
	}
	return true;
}

bool blocking_sender_allows(struct worker *w, const struct jid *from, const struct jid *to)
{
	struct account *a;

	if (!from || !jid_has_local(from) || jid_bare_equal(from, to))
		return true;
	a = sessdir_find_account(w->sessions, from->buf, from->domain_off + from->domain_len);
	return !a || !blocklist_count(a->blocklist) || !blocklist_matches(a->blocklist, to);
}

bool blocking_filter_delivery(struct session *s, struct xml_node *st)
{
	const char *from = xml_attr_get(st, "from");
	struct blocklist *mine = account_blocklist(s);
	struct account *theirs;
	const char *slash;
	size_t bare_len;
	struct jid fj;

	/* Own resources, and the server itself (answers, pushes), always pass. */
	if (!from || same_account(from, s->jid, s->bare_len) ||
	    (s->conn && strcmp(from, s->conn->w->srv->cfg->domain) == 0))
		return false;
	/* The sender's own list, when it is a local account with state in memory. */
	slash = strchr(from, '/');
	bare_len = slash ? (size_t)(slash - from) : strlen(from);
	theirs = s->conn ? sessdir_find_account(s->conn->w->sessions, from, bare_len) : NULL;
	/*
	 * Forwarded from the sender's home, or a sender at home elsewhere: its
	 * list was applied there (router.c, presence.c), and is only read on
	 * its own worker.
	 */
	if (theirs && (router_origin(s->conn->w, st) ||
		       router_home_elsewhere(s->conn->w, from, bare_len)))
		theirs = NULL;
	if (!blocklist_count(mine) && (!theirs || !blocklist_count(theirs->blocklist)))
		return false;
	if (jid_parse(&fj, from, strlen(from)) < 0)
		return false;
	if (blocklist_matches(mine, &fj)) {
		/* One session gets an iq request: answering here answers once. */
		if (stanza_kind(st) == STANZA_IQ && answerable(st) && s->conn)
			blocking_send_error(s->conn->w, sender_conn(s->conn->w, NULL, &fj), st,
					    "service-unavailable", false);
		return true;
	}
	/* The recipient, against the sender's list (fan-outs on the sender's behalf). */
	if (theirs && blocklist_count(theirs->blocklist) &&
	    jid_parse(&fj, s->jid, s->jid_len) == 0 && blocklist_matches(theirs->blocklist, &fj))
		return true;
	return false;
}

/* ---- Protocol ---- */

enum blocking_kind {
	BLOCKING_BLOCK = 1,
	BLOCKING_UNBLOCK,
	BLOCKING_UNBLOCK_ALL,
};

/* A change on its way through storage. */
struct blocking_op {
	struct iq_async iq;		/* first: the storage request is its first member */
	enum blocking_kind kind;
	size_t nreserved;		/* new items counted in the list's `reserved` */
	char bare[JID_MAX];		/* the account */
	size_t nitems;
	char *items[];			/* nitems strings, stored after the array */
};

static uint32_t max_items(const struct worker *w)
{
	return w->srv->cfg->max_blocklist_items;
}

void blocking_get(struct iq_request *rq)
{
	struct arena *a = iq_arena(rq);
	struct session *s = rq->conn->sess;
	struct xml_node *list = xml_node_new(a, NS_BLOCKING, "blocklist");
	struct blocklist *bl;
	const char *item;
	size_t pos = 0;

	if (!s || !list) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	bl = account_blocklist(s);
	while ((item = blocklist_next(bl, &pos))) {
		struct xml_node *it = xml_node_add_child(a, list, NULL, "item");

		if (!it || xml_attr_set(a, it, "jid", item) < 0) {
			iq_reply_error(rq, "internal-server-error", NULL);
			return;
		}
	}
	/* Section 3.3: pushes go to the resources that asked for the list. */
	s->blocklist_requested = true;
	iq_reply_result(rq, list);
}

static int blocking_run(struct storage *st, struct storage_req *req)
{
	struct blocking_op *op = (struct blocking_op *)req;
	int ret = 0;

	if (op->kind == BLOCKING_UNBLOCK_ALL)
		return blocking_store_clear(st, req->user);
	for (size_t i = 0; i < op->nitems && ret == 0; i++) {
		if (op->kind == BLOCKING_BLOCK)
			ret = blocking_store_add(st, req->user, op->items[i]);
		else
			ret = blocking_store_remove(st, req->user, op->items[i]);
	}
	return ret;
}

/* Routes <presence type='unavailable'/> from session s to `to`. */
static void blocking_unavailable_to(struct worker *w, const struct session *s, const char *to)
{
	struct arena a;
	struct xml_node *p;

	arena_init(&a, 512);
	p = xml_node_new(&a, XML_NS_CLIENT, "presence");
	if (p && xml_attr_set(&a, p, "type", "unavailable") == 0 &&
	    xml_attr_set(&a, p, "from", s->jid) == 0 && xml_attr_set(&a, p, "to", to) == 0)
		router_route_stanza(w, p);
	arena_release(&a);
}

/* Whether the item (a JID with a localpart) covers the normalized JID text t. */
static bool item_covers(const struct jid *item, const char *t)
{
	size_t bare_len = item->domain_off + item->domain_len;

	if (jid_has_resource(item))
		return strcmp(t, item->buf) == 0;
	return strncmp(t, item->buf, bare_len) == 0 && (t[bare_len] == '\0' || t[bare_len] == '/');
}

/*
 * Section 3.3: a newly blocked contact that may see the user's presence
 * gets unavailable presence from each available resource, before the
 * block hides the user from it. "May see" is RFC 6121's: a subscription
 * from the contact (the roster's From), or directed presence the
 * resource sent it (RFC 6121 4.6), which is then answered to the address
 * it went to. Anyone else learns nothing, not even that a resource
 * exists. Items without a localpart (whole domains) name no contact.
 */
static void blocking_send_unavailable(struct worker *w, struct account *acct,
				      struct session *list, const char *text)
{
	char bare[JID_MAX];
	struct jid item;
	bool from;

	if (!strchr(text, '@') || jid_parse(&item, text, strlen(text)) < 0 ||
	    jid_bare_str(&item, bare, sizeof(bare)) < 0)
		return;
	from = roster_contact_has_from(acct, bare);
	for (struct session *s = list; s; s = s->next) {
		if (!s->available)
			continue;
		if (from) {
			blocking_unavailable_to(w, s, item.buf);
			continue;
		}
		for (struct presence_directed *d = s->pres ? s->pres->directed : NULL; d; d = d->next)
			if (item_covers(&item, d->jid))
				blocking_unavailable_to(w, s, d->jid);
	}
}

/*
 * Section 3.4: an unblocked contact that may see the user's presence (a
 * subscription from it) gets each available resource's current presence.
 * Sent after the item left the list, or the list would stop it.
 */
static void blocking_send_current(struct worker *w, struct account *acct, struct session *list,
				  const char *text)
{
	char bare[JID_MAX];
	struct jid item;

	if (!strchr(text, '@') || jid_parse(&item, text, strlen(text)) < 0 ||
	    jid_bare_str(&item, bare, sizeof(bare)) < 0 || !roster_contact_has_from(acct, bare))
		return;
	for (struct session *s = list; s; s = s->next) {
		struct xml_node *st;
		struct arena a;

		if (!s->available || !s->pres || !s->pres->last)
			continue;
		arena_init(&a, 1024);
		st = stored_xml_parse(w->xml, &a, s->pres->last, s->pres->last_len);
		if (st && xml_attr_set(&a, st, "from", s->jid) == 0 &&
		    xml_attr_set(&a, st, "to", item.buf) == 0)
			router_route_stanza(w, st);
		arena_release(&a);
	}
}

/* Unblock all: the list empties first, then the unblocked learn the presence. */
static void blocking_unblock_all(struct worker *w, struct account *acct, struct session *list)
{
	struct blocklist *old = acct->blocklist, *fresh = blocklist_new();
	const char *item;
	size_t pos = 0;

	if (!old)
		return;
	if (!fresh) {
		blocklist_clear(old);	/* no presence for them then; the list is what counts */
		return;
	}
	fresh->reserved = old->reserved;
	acct->blocklist = fresh;
	while ((item = blocklist_next(old, &pos)))
		blocking_send_current(w, acct, list, item);
	blocklist_free(old);
}

/* Applies a stored change to the list in memory. */
static void blocking_apply(struct worker *w, struct blocking_op *op, struct account *acct)
{
	struct session *list = sessdir_find_bare(w->sessions, op->bare, strlen(op->bare));

	if (op->kind == BLOCKING_UNBLOCK_ALL) {
		blocking_unblock_all(w, acct, list);
		return;
	}
	for (size_t i = 0; i < op->nitems; i++) {
		const char *item = op->items[i];
		size_t len = strlen(item);

		if (op->kind == BLOCKING_UNBLOCK) {
			if (blocklist_remove(acct->blocklist, item, len))
				blocking_send_current(w, acct, list, item);
			continue;
		}
		if (!acct->blocklist && !(acct->blocklist = blocklist_new()))
			goto oom;
		if (blocklist_contains(acct->blocklist, item, len))
			continue;
		blocking_send_unavailable(w, acct, list, item);
		if (blocklist_add(acct->blocklist, item, len) < 0)
			goto oom;
	}
	return;
oom:
	/* Stored but not in memory: enforced again from the next load. */
	log_error("blocking.apply_failed", "jid=%s msg=\"out of memory\"", op->bare);
}

/*
 * The block or unblock push (section 3.3) to every resource of the account
 * that requested the list, the requester included.
 */
static void blocking_push(struct worker *w, const struct blocking_op *op)
{
	static uint64_t push_seq;	/* ids only need to differ */
	struct session *s, *next;
	struct arena a;
	struct xml_node *iq, *cmd;
	char id[32];

	arena_init(&a, 1024);
	snprintf(id, sizeof(id), "blocking-push-%llu",
		 (unsigned long long)__atomic_add_fetch(&push_seq, 1, __ATOMIC_RELAXED));
	iq = xml_node_new(&a, XML_NS_CLIENT, "iq");
	cmd = iq ? xml_node_add_child(&a, iq, NS_BLOCKING,
				      op->kind == BLOCKING_BLOCK ? "block" : "unblock") : NULL;
	if (!cmd || xml_attr_set(&a, iq, "type", "set") < 0 || xml_attr_set(&a, iq, "id", id) < 0)
		goto oom;
	for (size_t i = 0; i < op->nitems; i++) {
		struct xml_node *it = xml_node_add_child(&a, cmd, NULL, "item");

		if (!it || xml_attr_set(&a, it, "jid", op->items[i]) < 0)
			goto oom;
	}
	/* `next` first: a delivery that overflows a stream may end its session. */
	for (s = sessdir_find_bare(w->sessions, op->bare, strlen(op->bare)); s; s = next) {
		next = s->next;
		if (!s->blocklist_requested)
			continue;
		if (xml_attr_set(&a, iq, "to", s->jid) < 0)
			goto oom;
		router_deliver(s, iq);
	}
	arena_release(&a);
	return;
oom:
	log_error("blocking.push_failed", "jid=%s msg=\"out of memory\"", op->bare);
	arena_release(&a);
}

static void blocking_done(struct storage_req *req)
{
	struct blocking_op *op = (struct blocking_op *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct account *acct = sessdir_find_account(w->sessions, op->bare, strlen(op->bare));
	/* The requester, if still there; also releases its in-flight slot. */
	struct session *s = iq_async_session(&op->iq);
	struct conn *paused = worker_conn(w, req->slot, req->gen);

	if (acct && acct->blocklist) {
		struct blocklist *bl = acct->blocklist;

		/* The state may have been reloaded meanwhile: never below zero. */
		bl->reserved -= op->nreserved < bl->reserved ? op->nreserved : bl->reserved;
	}
	/*
	 * Durable now. Memory follows, then the answer, then the pushes: a
	 * client that sees the result or a push can rely on the new list.
	 */
	if (req->result == 0) {
		log_info("blocking.change", "jid=%s op=%s items=%zu", op->bare,
			 op->kind == BLOCKING_BLOCK ? "block" :
			 op->kind == BLOCKING_UNBLOCK ? "unblock" : "unblock-all", op->nitems);
		if (acct)
			blocking_apply(w, op, acct);
		if (s)
			iq_async_result(&op->iq, s, NULL);
		blocking_push(w, op);
	} else {
		log_warn("blocking.store_failed", "jid=%s err=%d", op->bare, req->result);
		if (s)
			iq_async_error(&op->iq, s, "internal-server-error", NULL);
	}
	iq_async_free(&op->iq);
	/* Stanzas the client sent after the command run now, seeing the new list. */
	if (paused && !paused->closing)
		conn_resume_input(paused);
}

/*
 * Reads the <item/> children of <block/> or <unblock/> into `items`
 * (normalized, without duplicates). Returns 0, or answers the error and
 * returns -1.
 */
static int blocking_parse_items(struct iq_request *rq, bool block, struct blocklist *items)
{
	const struct session *s = rq->conn->sess;
	uint32_t max = max_items(rq->w);
	struct jid j;

	for (struct xml_node *ch = xml_first_element(rq->payload); ch; ch = xml_next_element(ch)) {
		const char *text = xml_attr_get(ch, "jid");
		int ret;

		if (strcmp(ch->ns, NS_BLOCKING) != 0 || strcmp(ch->name, "item") != 0) {
			iq_reply_error(rq, "bad-request", "only <item/> elements are allowed");
			return -1;
		}
		if (!text) {
			iq_reply_error(rq, "bad-request", "an <item/> without a 'jid'");
			return -1;
		}
		if (jid_parse(&j, text, strlen(text)) < 0) {
			iq_reply_error(rq, "jid-malformed", NULL);
			return -1;
		}
		if (block && same_account(j.buf, s->jid, s->bare_len)) {
			iq_reply_error(rq, "not-acceptable", "you cannot block your own account");
			return -1;
		}
		ret = blocklist_add(items, j.buf, j.len);
		if (ret < 0) {
			iq_reply_error(rq, "internal-server-error", NULL);
			return -1;
		}
		if (blocklist_count(items) > max) {
			iq_reply_error(rq, "policy-violation",
				       "more items than a block list may hold");
			return -1;
		}
	}
	/* Section 3.3: a block command names at least one item. */
	if (block && !blocklist_count(items)) {
		iq_reply_error(rq, "bad-request", "a block command needs at least one <item/>");
		return -1;
	}
	return 0;
}

/* New items (not in `bl` yet) among `items`. */
static size_t blocking_count_new(const struct blocklist *bl, const struct blocklist *items)
{
	const char *it;
	size_t pos = 0, n = 0;

	while ((it = blocklist_next(items, &pos)))
		if (!blocklist_contains(bl, it, strlen(it)))
			n++;
	return n;
}

void blocking_set(struct iq_request *rq)
{
	bool block = strcmp(rq->payload->name, "block") == 0;
	struct session *s = rq->conn->sess;
	struct account *acct = s ? session_account(s) : NULL;
	struct blocklist *items = NULL;
	struct blocking_op *op;
	size_t n, text = 0, nnew = 0, pos = 0;
	const char *it;
	char *p;

	/* Bound sessions always have their account's state. */
	if (!acct) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	/* The request's items, normalized and deduplicated in a set of their own. */
	items = blocklist_new();
	if (!items) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	if (blocking_parse_items(rq, block, items) < 0)
		goto out;
	n = blocklist_count(items);
	if (block) {
		if (!acct->blocklist && !(acct->blocklist = blocklist_new())) {
			iq_reply_error(rq, "internal-server-error", NULL);
			goto out;
		}
		nnew = blocking_count_new(acct->blocklist, items);
		/* Changes still being stored count against the limit too. */
		if (acct->blocklist->count + acct->blocklist->reserved + nnew > max_items(rq->w)) {
			iq_reply_error(rq, "policy-violation", "the block list is full");
			goto out;
		}
	}
	/* One allocation: the op, the item pointers, then the item texts. */
	while ((it = blocklist_next(items, &pos)))
		text += strlen(it) + 1;
	op = iq_async_new(rq, sizeof(*op) + n * sizeof(char *) + text, acct->user, NS_BLOCKING,
			  block ? "block" : "unblock", blocking_run, blocking_done);
	if (!op)
		goto out;
	op->kind = block ? BLOCKING_BLOCK : n ? BLOCKING_UNBLOCK : BLOCKING_UNBLOCK_ALL;
	snprintf(op->bare, sizeof(op->bare), "%.*s", (int)s->bare_len, s->jid);
	p = (char *)&op->items[n];
	pos = 0;
	while ((it = blocklist_next(items, &pos))) {
		size_t len = strlen(it) + 1;

		memcpy(p, it, len);
		op->items[op->nitems++] = p;
		p += len;
	}
	op->nreserved = nnew;
	if (block)
		acct->blocklist->reserved += nnew;
	iq_async_submit(rq, &op->iq);
	/* In-order processing: the client's next stanza waits for the change. */
	conn_pause_input(rq->conn);
out:
	blocklist_free(items);
}
