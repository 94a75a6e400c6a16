/* SPDX-License-Identifier: MIT */
/*
 * XEP-0160 offline messages: storing (with a XEP-0203 delay stamp added
 * at the time the server received the message), fetching at the first
 * non-negative available presence, and bouncing what cannot be stored.
 */
#include <errno.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "account.h"
#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "jid.h"
#include "log.h"
#include "metrics.h"
#include "offline.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "sm.h"
#include "stanza.h"
#include "storage.h"
#include "stored_xml.h"
#include "worker.h"

#define NS_CHATSTATES	"http://jabber.org/protocol/chatstates"
#define NS_HINTS	"urn:xmpp:hints"
#define OFFLINE_ARENA_CHUNK 4096
/*
 * Bytes of messages on their way to the store at most. Past it (a flood
 * faster than the disk) new offline messages are refused with
 * resource-constraint instead of queueing without bound.
 */
#define OFFLINE_MAX_PENDING_BYTES (16u << 20)

/* Bytes of offline_store_req in the storage queue (worker threads only). */
static _Atomic size_t offline_pending;
static _Atomic long long offline_overload_logged;

/* The worker a completion runs on: its inbox is embedded in it. */
static struct worker *worker_of(struct storage_req *req)
{
	return (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
}

/* The account state of local user `user`, if it has sessions. */
static struct account *offline_account(struct worker *w, const char *user)
{
	char bare[JID_MAX];
	int n = snprintf(bare, sizeof(bare), "%s@%s", user, w->srv->cfg->domain);

	if (n < 0 || (size_t)n >= sizeof(bare))
		return NULL;
	return sessdir_find_account(w->sessions, bare, (size_t)n);
}

/* Starts a fetch for the first available session with priority >= 0, if any. */
static void offline_deliver_to_available(struct worker *w, const char *user)
{
	char bare[JID_MAX];
	int n = snprintf(bare, sizeof(bare), "%s@%s", user, w->srv->cfg->domain);

	if (n < 0 || (size_t)n >= sizeof(bare))
		return;
	for (struct session *s = sessdir_find_bare(w->sessions, bare, (size_t)n); s; s = s->next) {
		if (!s->ending && s->available && s->priority >= 0 && s->conn) {
			offline_deliver(w, s);
			return;
		}
	}
}

bool offline_wanted(const struct xml_node *msg)
{
	const char *type = stanza_type(msg);
	bool only_chatstates = true;

	if (strcmp(type, "normal") != 0 && strcmp(type, "chat") != 0)
		return false;
	for (struct xml_node *ch = xml_first_element(msg); ch; ch = xml_next_element(ch)) {
		if (strcmp(ch->ns, NS_HINTS) == 0 && strcmp(ch->name, "no-store") == 0)
			return false;
		if (strcmp(ch->ns, NS_CHATSTATES) != 0)
			only_chatstates = false;
	}
	/* XEP-0160 section 3: chat states alone are not worth keeping. */
	return !(only_chatstates && xml_first_element(msg));
}

bool offline_holding(const struct account *a)
{
	return a && a->offline_fetching;
}

/* ---- Storing ---- */

/*
 * One message on its way to the store. Both forms are kept: what is
 * stored (with the delay stamp) and what arrived (to bounce it, payload
 * included, if it cannot be stored).
 */
struct offline_store_req {
	struct storage_req req;		/* first */
	uint32_t max;
	size_t size;			/* bytes counted in offline_pending */
	size_t stored_len;		/* buf[0..stored_len): with the delay stamp */
	size_t orig_off, orig_len;	/* the message as received, for a bounce */
	size_t sender_off, sender_len;	/* sender's full JID if its ack is held, else 0 */
	char buf[];
};

static int offline_store_run(struct storage *st, struct storage_req *req)
{
	struct offline_store_req *sr = (struct offline_store_req *)req;

	return offline_db_put(st, req->user, sr->buf, sr->stored_len, sr->max);
}

/*
 * Stored: the account (if loaded) now knows there is something to fetch.
 * Not stored: the sender gets an error built from the original message,
 * parsed again (the failure path only; the common path never parses).
 */
static void offline_store_done(struct storage_req *req)
{
	struct offline_store_req *sr = (struct offline_store_req *)req;
	struct worker *w = worker_of(req);
	const char *condition;
	struct xml_node *msg;
	struct account *a;
	struct arena ar;

	atomic_fetch_sub(&offline_pending, sr->size);
	/* Committed (or answered with an error): the sender may be acked now. */
	if (sr->sender_len) {
		struct session *snd = sessdir_find_full(w->sessions, sr->buf + sr->sender_off,
							sr->sender_len);

		if (snd)
			sm_release_ack(snd);
	}
	if (req->result == 0) {
		METRIC_INC(w->metrics.offline_stored);
		a = offline_account(w, req->user);
		if (a) {
			a->offline_count++;
			/*
			 * A session may have become available while this write
			 * was in flight; its fetch saw nothing. Deliver now.
			 */
			offline_deliver_to_available(w, req->user);
		}
		free(sr);
		return;
	}
	if (req->result == -ENOENT) {
		condition = "service-unavailable";	/* RFC 6121 8.5.1: no such user */
	} else if (req->result == -EDQUOT) {
		condition = "resource-constraint";
		log_info("offline.full", "user=%s limit=%u", req->user, sr->max);
	} else {
		condition = "internal-server-error";
		log_error("offline.store_failed", "user=%s err=%d", req->user, req->result);
	}
	arena_init(&ar, OFFLINE_ARENA_CHUNK);
	msg = stored_xml_parse(w->xml, &ar, sr->buf + sr->orig_off, sr->orig_len);
	if (msg)
		router_bounce_w(w, NULL, msg, condition);
	arena_release(&ar);
	free(sr);
}

/* Whether msg carries a delay stamp of ours already (it was stored before). */
static bool offline_has_our_delay(const struct xml_node *msg, const char *domain)
{
	for (struct xml_node *ch = xml_first_element(msg); ch; ch = xml_next_element(ch)) {
		const char *from;

		if (strcmp(ch->ns, NS_DELAY) != 0 || strcmp(ch->name, "delay") != 0)
			continue;
		from = xml_attr_get(ch, "from");
		if (from && strcmp(from, domain) == 0)
			return true;
	}
	return false;
}

/*
 * Appends to out the serialized message `orig` (orig_len bytes, as
 * xml_serialize wrote it) with a delay element inserted as its last
 * child: before "</message>", or replacing the "/>" of an empty element.
 */
static void offline_add_delay(struct strbuf *out, const char *orig, size_t orig_len,
			      const char *domain)
{
	static const char close_tag[] = "</message>";
	size_t cl = sizeof(close_tag) - 1;
	char stamp[32];
	struct tm tm;
	time_t now = time(NULL);
	size_t head;
	bool empty;

	gmtime_r(&now, &tm);
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	empty = orig_len >= 2 && memcmp(orig + orig_len - 2, "/>", 2) == 0;
	head = empty ? orig_len - 2 : orig_len - cl;
	strbuf_append(out, orig, head);
	if (empty)
		strbuf_append(out, ">", 1);
	strbuf_puts(out, "<delay xmlns='" NS_DELAY "' from='");
	strbuf_append_xml_escaped(out, domain, strlen(domain));
	strbuf_puts(out, "' stamp='");
	strbuf_puts(out, stamp);
	strbuf_puts(out, "'>Offline Storage</delay>");
	strbuf_append(out, close_tag, cl);
}

int offline_store(struct worker *w, const struct xml_node *msg, const char *user)
{
	const char *domain = w->srv->cfg->domain, *from;
	struct session *snd;
	struct strbuf orig = STRBUF_INIT, stored = STRBUF_INIT;
	struct offline_store_req *sr;
	struct account *a;
	int ret = -ENOMEM;
	size_t size;

	xml_serialize(&orig, msg, XML_NS_CLIENT);
	if (orig.oom || orig.len < 12)
		goto out;
	if (offline_has_our_delay(msg, domain))
		strbuf_append(&stored, orig.data, orig.len);
	else
		offline_add_delay(&stored, orig.data, orig.len, domain);
	if (stored.oom)
		goto out;
	/* A local sender with stream management is acked only after the commit. */
	from = xml_attr_get(msg, "from");
	snd = from ? sessdir_find_full(w->sessions, from, strlen(from)) : NULL;
	/* Forwarded from the sender's home: its ack is held there until we commit (router.c). */
	if (router_origin(w, msg))
		snd = NULL;
	if (snd && !snd->sm)
		snd = NULL;
	size = sizeof(*sr) + stored.len + orig.len + (snd ? snd->jid_len + 1 : 0) + 2;
	if (atomic_load(&offline_pending) + size > OFFLINE_MAX_PENDING_BYTES) {
		long long now = (long long)time(NULL), last = atomic_load(&offline_overload_logged);

		if (now - last >= 60 && atomic_compare_exchange_strong(&offline_overload_logged,
									&last, now))
			log_warn("offline.overload", "pending_bytes=%zu msg=\"offline messages arrive "
				 "faster than they are stored; refusing with resource-constraint\"",
				 atomic_load(&offline_pending));
		ret = -EBUSY;
		goto out;
	}
	sr = calloc(1, size);
	if (!sr)
		goto out;
	sr->size = size;
	atomic_fetch_add(&offline_pending, size);
	if (snd) {
		sr->sender_off = stored.len + orig.len + 2;
		sr->sender_len = snd->jid_len;
		memcpy(sr->buf + sr->sender_off, snd->jid, snd->jid_len + 1);
		sm_hold_ack(snd);
	}
	memcpy(sr->buf, stored.data, stored.len + 1);
	sr->stored_len = stored.len;
	sr->orig_off = stored.len + 1;
	memcpy(sr->buf + sr->orig_off, orig.data, orig.len + 1);
	sr->orig_len = orig.len;
	sr->max = w->srv->cfg->max_offline_messages;
	sr->req.op = STORAGE_OP_RUN;
	sr->req.run = offline_store_run;
	sr->req.done = offline_store_done;
	sr->req.inbox = &w->inbox;
	snprintf(sr->req.user, sizeof(sr->req.user), "%s", user);
	/* A fetch in flight missed this one: the next fetch takes it. */
	a = offline_account(w, user);
	if (a && a->offline_fetching)
		a->offline_more = true;
	storage_queue_submit(w->srv->store, &sr->req);
	ret = 0;
out:
	strbuf_free(&orig);
	strbuf_free(&stored);
	return ret;
}

/* ---- Fetching ---- */

/*
 * A fetch for the session at req.slot/req.gen: the storage thread takes
 * (reads and deletes, in one transaction) up to OFFLINE_FETCH_BATCH
 * messages, oldest first.
 */
struct offline_fetch_req {
	struct storage_req req;		/* first */
	uint32_t n;			/* out: messages taken */
	struct strbuf msgs;		/* out: each message NUL-terminated, in order */
};

static int offline_collect(void *arg, const char *stanza, size_t len)
{
	struct strbuf *b = arg;

	strbuf_append(b, stanza, len);
	strbuf_append(b, "", 1);	/* keep the NUL as a separator */
	return b->oom ? -ENOMEM : 0;
}

static int offline_fetch_run(struct storage *st, struct storage_req *req)
{
	struct offline_fetch_req *fr = (struct offline_fetch_req *)req;

	strbuf_clear(&fr->msgs);
	return offline_db_take(st, req->user, OFFLINE_FETCH_BATCH, offline_collect, &fr->msgs,
			       &fr->n);
}

/* An available session of the account with priority >= 0, or NULL. */
static struct session *offline_target(struct worker *w, const char *user)
{
	char bare[JID_MAX];
	int n = snprintf(bare, sizeof(bare), "%s@%s", user, w->srv->cfg->domain);

	if (n < 0 || (size_t)n >= sizeof(bare))
		return NULL;
	for (struct session *s = sessdir_find_bare(w->sessions, bare, (size_t)n); s;
	     s = s->next)
		if (s->available && s->priority >= 0 && s->conn)
			return s;
	return NULL;
}

/*
 * Delivers what a fetch took. The messages are gone from the store now,
 * so if the session cannot take them any more they are routed again
 * rather than dropped. A full batch, or messages stored while the fetch
 * ran, start the next fetch, for this session or another non-negative
 * one; with none left the count stays nonzero for the next login.
 */
static void offline_fetch_done(struct storage_req *req)
{
	struct offline_fetch_req *fr = (struct offline_fetch_req *)req;
	struct worker *w = worker_of(req);
	struct conn *c = worker_conn(w, req->slot, req->gen);
	struct session *s = c && !c->closing ? c->sess : NULL;
	struct account *a = offline_account(w, req->user);
	bool more = fr->n == OFFLINE_FETCH_BATCH;
	const char *p = fr->msgs.data, *end = p ? p + fr->msgs.len : NULL;
	struct arena ar;

	if (req->result < 0)
		log_error("offline.fetch_failed", "user=%s err=%d", req->user, req->result);
	if (a) {
		a->offline_fetching = false;
		more = more || a->offline_more;
		a->offline_more = false;
		a->offline_count = more ? 1 : 0;
	}
	if (s && !(s->available && s->priority >= 0))
		s = NULL;
	arena_init(&ar, OFFLINE_ARENA_CHUNK);
	for (; req->result == 0 && p && p < end; p += strlen(p) + 1) {
		struct xml_node *msg = stored_xml_parse(w->xml, &ar, p, strlen(p));

		if (!msg) {
			log_warn("offline.unreadable", "user=%s", req->user);
			continue;
		}
		/*
		 * The session went (or went negative) meanwhile: route the
		 * message again, to another resource or back into storage.
		 */
		if (s)
			router_deliver(s, msg);
		else
			router_route_stanza(w, msg);
		arena_reset(&ar);
	}
	arena_release(&ar);
	if (fr->n)
		log_info("offline.delivered", "user=%s count=%u", req->user, fr->n);
	strbuf_free(&fr->msgs);
	free(fr);
	if (a && more) {
		struct session *t = s ? s : offline_target(w, req->user);

		if (t)
			offline_deliver(w, t);
		else
			a->offline_count = 1;	/* left for the next available resource */
	}
}

void offline_deliver(struct worker *w, struct session *s)
{
	struct account *a = session_account(s);
	struct offline_fetch_req *fr;

	if (!a || !s->conn)
		return;
	if (a->offline_fetching) {
		a->offline_more = true;
		return;
	}
	/*
	 * Cluster mode: another node may have stored messages for the
	 * account (its resources there were unavailable or negative): the
	 * count here does not know, the store does.
	 */
	if (!a->offline_count && !a->offline_more && !cluster_enabled())
		return;
	fr = calloc(1, sizeof(*fr));
	if (!fr) {
		log_error("offline.fetch_failed", "user=%s msg=\"out of memory\"", a->user);
		return;
	}
	fr->req.op = STORAGE_OP_RUN;
	fr->req.run = offline_fetch_run;
	fr->req.done = offline_fetch_done;
	fr->req.inbox = &w->inbox;
	fr->req.slot = s->conn->slot;
	fr->req.gen = s->conn->gen;
	snprintf(fr->req.user, sizeof(fr->req.user), "%s", a->user);
	a->offline_fetching = true;
	a->offline_more = false;
	storage_queue_submit(w->srv->store, &fr->req);
}
