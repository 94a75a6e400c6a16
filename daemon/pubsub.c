/* SPDX-License-Identifier: MIT */
/*
 * The pubsub protocol (XEP-0060) for pubsub.DOMAIN and PEP (XEP-0163);
 * see pubsub.h for the shape of it.
 *
 * A request is handled in three steps: the handler checks it against
 * the in-memory model and changes the model; a storage request (struct
 * ps_job) writes the change and reads what the answer needs (items, a
 * last item, the owner's roster when it is not in memory); its
 * completion answers and sends the notifications. A job with nothing
 * to store or read completes at once.
 *
 * The roster facts that the presence and roster access models need come
 * from the owner's in-memory roster when the owner has sessions, and
 * otherwise from the store (a "gate" the storage thread checks before
 * the job's writes, which it then skips when access is denied).
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "account.h"
#include "avatar_compat.h"
#include "blocking.h"
#include "bookmarks_compat.h"
#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "fanout.h"
#include "iq.h"
#include "iq_async.h"
#include "jid.h"
#include "log.h"
#include "pep.h"
#include "pubsub.h"
#include "pubsub_node.h"
#include "pubsub_store.h"
#include "roster.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "storage.h"
#include "stored_xml.h"
#include "subscription.h"
#include "worker.h"

#define NS_DELAY		"urn:xmpp:delay"
#define PS_JOB_ARENA_CHUNK	4096
#define PS_GEN_ID_LEN		16	/* hex digits of generated ItemIDs and NodeIDs */

static struct ps_limits ps_lim;
static char ps_service_jid[JID_MAX];	/* pubsub.DOMAIN */
static size_t ps_service_len;
/* Notifications sent, process-wide: a session gets one copy of each, whoever sends it. */
static _Atomic uint64_t ps_serial;

/* ---- Requests and answers ---- */

/* One pubsub iq being handled. */
struct ps_ctx {
	struct iq_request *rq;
	struct worker *w;
	struct ps_host *host;		/* NULL: a PEP service without nodes yet */
	bool pep;
	bool owner_account;		/* PEP: the requester is the account itself */
	bool is_set;
	const char *ns;			/* the payload's namespace (static) */
	const struct xml_node *op;	/* the action: first child of <pubsub/> */
	struct iq_async sync;		/* the addressing, for answers */
	struct session *sess;
	size_t host_len;
	size_t user_len;		/* PEP: bytes of the account's localpart */
	size_t from_bare_len;
	char host_jid[JID_MAX];		/* the service's domain or the account's bare JID */
	char from_bare[JID_MAX];
};

/* A roster check the storage thread makes for an owner without sessions. */
struct ps_gate {
	const char *owner_user;
	const char *contact;		/* bare JID */
	struct ps_config cfg;		/* access and groups only (strings in the job's arena) */
	struct ps_requester r;		/* affiliation known; roster facts filled there */
	enum ps_verdict verdict;	/* out */
};

/*
 * Cluster mode: a subscriber whose access to the job's node depends on
 * its owner's roster, which is not in memory here (the owner's sessions
 * are on other nodes): the store decides before the job's notification
 * goes to it (ps_notify).
 */
struct ps_subgate {
	struct ps_subgate *next;
	const char *jid;		/* the subscription's JID, as in n->subs */
	struct ps_gate *gate;
};

/* A node whose last item a job reads. */
struct ps_last {
	struct ps_last *next;
	struct ps_node *node;		/* referenced */
	uint64_t node_id;
	struct ps_gate *gate;		/* NULL: allowed already */
	struct ps_item_row *row;	/* out: NULL when none (or denied) */
};

struct ps_job;
typedef void ps_finish_fn(struct ps_job *j, struct session *s);

struct ps_job {
	struct iq_async op;		/* first: op.req is what the storage queue sees */
	struct arena a;			/* everything below lives here */
	bool has_iq;			/* answers an iq (op is filled) */
	struct ps_mut *muts, **mtail;
	struct ps_gate *gate;		/* checked first; denied: no writes */
	struct ps_node *node;		/* the node it is about (referenced), or NULL */
	uint64_t node_id;
	/* Reads, after the writes. */
	bool read_items;
	uint32_t read_max;
	const char **read_ids;
	size_t read_nids;
	bool read_ids_only;
	bool read_last;			/* the node's newest item into rows */
	struct ps_item_row *rows;
	struct ps_last *lasts;
	struct ps_subgate *subgates;	/* decided after the writes */
	/* For the completion. */
	ps_finish_fn *finish;
	bool created;			/* the node was created by this request */
	struct xml_node *notify;	/* notification to fan out after success */
	struct xml_node *reply;		/* result payload */
	const char *target;		/* JID that gets items (new subscriber, new session) */
	const char *item_id;
	const char *subid;
	enum ps_sub_state sub_state;
	bool sub_deliver;
	/* Work done on an account's behalf (pubsub_pep_replace, pubsub_pep_read). */
	struct ps_replace *replace;
	struct ps_notice *notices;	/* notifications to fan out after success */
	pubsub_pep_items_cb *read_cb;
	char read_user[JID_PART_MAX + 1];
	unsigned char read_ctx[PUBSUB_PEP_CTX_MAX];
	char from_bare[JID_MAX];
};

/* The worker a job belongs to: the owner of the inbox its completion goes to. */
static struct worker *ps_job_worker(const struct ps_job *j)
{
	return (struct worker *)((char *)j->op.req.inbox - offsetof(struct worker, inbox));
}

/* The 'from' of an answer: what the request was sent to, else as iq.c decides. */
static const char *ps_reply_from(const struct iq_async *op, const struct worker *w)
{
	if (op->to[0])
		return op->to;
	return op->scope == IQ_SCOPE_ACCOUNT ? NULL : w->srv->cfg->domain;
}

/*
 * <iq type=... id=...> addressed back to the requester from what the
 * request was sent to (op keeps both, so a late answer needs no tree).
 */
static struct xml_node *ps_iq_shell(struct arena *a, const struct iq_async *op,
				    const struct worker *w, const char *type)
{
	struct xml_node *iq = xml_node_new(a, XML_NS_CLIENT, "iq");
	const char *from = ps_reply_from(op, w);

	if (!iq || xml_attr_set(a, iq, "type", type) < 0 ||
	    (op->id[0] && xml_attr_set(a, iq, "id", op->id) < 0) ||
	    (op->from[0] && xml_attr_set(a, iq, "to", op->from) < 0) ||
	    (from && xml_attr_set(a, iq, "from", from) < 0))
		return NULL;
	return iq;
}

/* Whether the requester is a session at home on another worker (answers are routed). */
static bool ps_requester_remote(struct worker *w, const struct iq_async *op)
{
	size_t len = strlen(op->from);

	/* Or on another node (cluster mode): routed there just the same. */
	return len && (router_home_elsewhere(w, op->from, len) ||
		       (cluster_enabled() && cluster_elsewhere(op->from, len)));
}

/*
 * Delivers an answer to the requester's session (none: it left; dropped).
 * A requester at home on another worker (the request was forwarded here:
 * the service on worker 0, or a contact's PEP service) gets it routed.
 */
static void ps_send(struct worker *w, const struct iq_async *op, struct session *s,
		    struct xml_node *st)
{
	if (!st) {
		log_warn("pubsub.reply_failed", "msg=\"out of memory\"");
		return;
	}
	if (s)
		router_deliver(s, st);
	else if (xml_attr_get(st, "from") && ps_requester_remote(w, op))
		router_route_stanza(w, st);
}

/* An iq result with an optional payload. */
static void ps_send_result(struct worker *w, const struct iq_async *op, struct session *s,
			   struct arena *a, struct xml_node *payload)
{
	struct xml_node *iq = ps_iq_shell(a, op, w, "result");

	if (iq && payload)
		xml_node_append(iq, payload);
	ps_send(w, op, s, iq);
}

/*
 * An error answer: the stanza condition, and the pubsub#errors element
 * XEP-0060 names (app; with feature for <unsupported/>), and a text.
 */
static void ps_send_error(struct worker *w, const struct iq_async *op, struct session *s,
			  struct arena *a, const char *cond, const char *app, const char *feature,
			  const char *text)
{
	struct xml_node *iq = ps_iq_shell(a, op, w, "error");
	struct xml_node *err = iq ? xml_node_add_child(a, iq, XML_NS_CLIENT, "error") : NULL;
	struct xml_node *c;
	bool ok = err && xml_attr_set(a, err, "type", stanza_error_type(cond)) == 0 &&
		  xml_node_add_child(a, err, NS_STANZAS, cond);

	if (ok && text) {
		c = xml_node_add_child(a, err, NS_STANZAS, "text");
		ok = c && xml_node_add_text(a, c, text, strlen(text)) == 0;
	}
	if (ok && app) {
		c = xml_node_add_child(a, err, NS_PUBSUB_ERRORS, app);
		ok = c && (!feature || xml_attr_set(a, c, "feature", feature) == 0);
	}
	ps_send(w, op, s, ok ? iq : NULL);
}

/* The error answer of a request being handled now (no job yet). */
static void ps_err(struct ps_ctx *ctx, const char *cond, const char *app, const char *text)
{
	ps_send_error(ctx->w, &ctx->sync, ctx->sess, iq_arena(ctx->rq), cond, app, NULL, text);
}

/* feature-not-implemented + <unsupported feature=.../> (XEP-0060 table of errors). */
static void ps_unsupported(struct ps_ctx *ctx, const char *feature)
{
	ps_send_error(ctx->w, &ctx->sync, ctx->sess, iq_arena(ctx->rq), "feature-not-implemented",
		      "unsupported", feature, NULL);
}

/* The result of a request answered at once, payload in the worker's scratch arena. */
static void ps_ok(struct ps_ctx *ctx, struct xml_node *payload)
{
	ps_send_result(ctx->w, &ctx->sync, ctx->sess, iq_arena(ctx->rq), payload);
}

/* The error answer of a job's request, built in the job's arena. */
static void ps_job_error(struct ps_job *j, struct session *s, const char *cond, const char *app,
			 const char *text)
{
	ps_send_error(ps_job_worker(j), &j->op, s, &j->a, cond, app, NULL, text);
}

/* The result of a job's request, with the payload the handler prepared. */
static void ps_job_ok(struct ps_job *j, struct session *s)
{
	ps_send_result(ps_job_worker(j), &j->op, s, &j->a, j->reply);
}

/* A storage failure, answered once, in the words of RFC 6120. */
static void ps_job_failed(struct ps_job *j, struct session *s)
{
	log_error("pubsub.store_failed", "err=%d", j->op.req.result);
	ps_job_error(j, s, j->op.req.result == -EBUSY ? "resource-constraint" :
			   "internal-server-error", NULL, NULL);
}

/* <pubsub xmlns=ns><name node=node/></pubsub>; returns the inner element. */
static struct xml_node *ps_wrap(struct arena *a, struct xml_node **outer, const char *ns,
				const char *name, const char *node)
{
	struct xml_node *p = xml_node_new(a, ns, "pubsub");
	struct xml_node *el = p ? xml_node_add_child(a, p, ns, name) : NULL;

	if (!el || (node && xml_attr_set(a, el, "node", node) < 0))
		return NULL;
	*outer = p;
	return el;
}

/* ---- Jobs ---- */

/*
 * Storage thread: the roster facts of a gate from the owner's stored
 * roster, and the access decision they give. 0 or -errno.
 */
static int ps_gate_run(struct storage *st, struct ps_job *j, struct ps_gate *g)
{
	const char *groups;
	int ret = pubsub_store_roster_facts(st, &j->a, g->owner_user, g->contact,
					    &g->r.has_from, &groups);

	if (ret < 0)
		return ret;
	g->r.in_groups = groups && ps_groups_match(g->cfg.groups, groups);
	g->verdict = ps_access_check(&g->cfg, &g->r);
	return 0;
}

/*
 * Storage thread: the gate first (a denial skips everything else, which
 * is not an error: the completion answers it), then the writes in order,
 * then the reads. A negative return undoes this job's writes only.
 */
static int ps_job_run(struct storage *st, struct storage_req *req)
{
	struct ps_job *j = (struct ps_job *)req;
	int ret;

	if (j->gate) {
		ret = ps_gate_run(st, j, j->gate);
		if (ret < 0 || j->gate->verdict != PS_ALLOW)
			return ret;
	}
	for (struct ps_mut *m = j->muts; m; m = m->next) {
		ret = pubsub_store_apply(st, m);
		if (ret < 0)
			return ret;
	}
	if (j->read_items) {
		ret = pubsub_store_items(st, &j->a, j->node_id, j->read_max, j->read_ids,
					 j->read_nids, j->read_ids_only, &j->rows);
		if (ret < 0)
			return ret;
	}
	if (j->read_last) {
		ret = pubsub_store_last_item(st, &j->a, j->node_id, &j->rows);
		if (ret < 0)
			return ret;
	}
	for (struct ps_last *l = j->lasts; l; l = l->next) {
		if (l->gate) {
			ret = ps_gate_run(st, j, l->gate);
			if (ret < 0)
				return ret;
			if (l->gate->verdict != PS_ALLOW)
				continue;
		}
		ret = pubsub_store_last_item(st, &j->a, l->node_id, &l->row);
		if (ret < 0)
			return ret;
	}
	for (struct ps_subgate *g = j->subgates; g; g = g->next) {
		ret = ps_gate_run(st, j, g->gate);
		if (ret < 0)
			return ret;
	}
	return 0;
}

/* Releases a finished job: its node references and its arena. */
static void ps_job_free(struct ps_job *j)
{
	if (j->node)
		ps_node_unref(j->node);
	for (struct ps_last *l = j->lasts; l; l = l->next)
		ps_node_unref(l->node);
	arena_release(&j->a);
	free(j);
}

/* Worker: the job's completion; the session is NULL when the requester left. */
static void ps_job_done(struct storage_req *req)
{
	struct ps_job *j = (struct ps_job *)req;
	struct session *s = j->has_iq ? iq_async_session(&j->op) : NULL;

	/*
	 * At shutdown the answers have nowhere to go, and connections may be
	 * freed under the sessions a fan-out would walk: nothing is sent.
	 */
	if (req->result != -ESHUTDOWN && !ps_job_worker(j)->srv->shutting_down)
		j->finish(j, s);
	ps_job_free(j);
}

/* A job answering nobody (background work on this worker). NULL on ENOMEM. */
static struct ps_job *ps_job_alloc(struct worker *w, ps_finish_fn *finish)
{
	struct ps_job *j = calloc(1, sizeof(*j));

	if (!j)
		return NULL;
	arena_init(&j->a, PS_JOB_ARENA_CHUNK);
	j->mtail = &j->muts;
	j->finish = finish;
	j->op.req.op = STORAGE_OP_RUN;
	j->op.req.run = ps_job_run;
	j->op.req.done = ps_job_done;
	j->op.req.inbox = &w->inbox;
	return j;
}

/*
 * A job answering ctx's iq. NULL after answering with an error (too many
 * requests in flight on the connection, out of memory).
 */
static struct ps_job *ps_job_new(struct ps_ctx *ctx, ps_finish_fn *finish)
{
	struct conn *c = ctx->rq->conn;
	struct ps_job *j;

	if (c && c->iq_async >= PUBSUB_MAX_INFLIGHT) {
		ps_err(ctx, "resource-constraint", NULL, "too many requests in progress");
		return NULL;
	}
	j = ps_job_alloc(ctx->w, finish);
	if (!j) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return NULL;
	}
	j->op = ctx->sync;
	j->op.req.op = STORAGE_OP_RUN;
	j->op.req.run = ps_job_run;
	j->op.req.done = ps_job_done;
	j->op.req.inbox = &ctx->w->inbox;
	/* Counted like iq_async requests: iq_async_session() releases it. */
	if (c) {
		j->op.req.slot = c->slot;
		j->op.req.gen = c->gen;
		c->iq_async++;
		j->op.counted = true;
	}
	j->has_iq = true;
	memcpy(j->from_bare, ctx->from_bare, ctx->from_bare_len + 1);
	return j;
}

/* Releases a job that was never submitted. */
static void ps_job_drop(struct ps_ctx *ctx, struct ps_job *j)
{
	if (j->has_iq && j->op.counted && ctx->rq->conn->iq_async)
		ctx->rq->conn->iq_async--;
	ps_job_free(j);
}

/* The node a job is about: referenced until the job is freed. */
static void ps_job_set_node(struct ps_job *j, struct ps_node *n)
{
	ps_node_ref(n);
	j->node = n;
	j->node_id = n->id;
}

/* Appends a write of `kind` to the job (fields zeroed). NULL on ENOMEM. */
static struct ps_mut *ps_mut_add(struct ps_job *j, enum ps_mut_kind kind, uint64_t node_id)
{
	struct ps_mut *m = arena_alloc(&j->a, sizeof(*m));

	if (!m)
		return NULL;
	memset(m, 0, sizeof(*m));
	m->kind = kind;
	m->node_id = node_id;
	*j->mtail = m;
	j->mtail = &m->next;
	return m;
}

/* A copy in the job's arena (NULL stays NULL). */
static const char *ps_dup(struct ps_job *j, const char *s)
{
	return s ? arena_strdup(&j->a, s) : NULL;
}

static void ps_job_gate_subscribers(struct worker *w, struct ps_job *j);

/* Hands the job to the storage thread, or completes it now when it has nothing to do there. */
static void ps_job_submit(struct worker *w, struct ps_job *j)
{
	if (cluster_enabled() && j->notify && j->node)
		ps_job_gate_subscribers(w, j);
	if (!j->muts && !j->gate && !j->read_items && !j->read_last && !j->lasts &&
	    !j->subgates) {
		j->op.req.result = 0;
		ps_job_done(&j->op.req);
		return;
	}
	storage_queue_submit(w->srv->store, &j->op.req);
}

/* ---- Store writes of model changes ---- */

/* The configuration's stored text, in the job's arena. */
static const char *ps_config_text(struct ps_job *j, const struct ps_config *c)
{
	struct strbuf b = STRBUF_INIT;
	const char *out;

	ps_config_serialize(&b, c);
	out = b.oom ? NULL : arena_strdup(&j->a, b.data ? b.data : "");
	strbuf_free(&b);
	return out;
}

/* The write that creates node n's row (PEP nodes belong to their account). */
static int ps_put_node(struct ps_job *j, const struct ps_node *n)
{
	const struct ps_host *h = n->host;
	struct ps_mut *m = ps_mut_add(j, PS_MUT_NODE_PUT, n->id);

	if (!m)
		return -ENOMEM;
	m->host = ps_dup(j, h->jid);
	m->user = h->pep ? arena_strndup(&j->a, h->jid, h->user_len) : NULL;
	m->name = ps_dup(j, n->name);
	m->config = ps_config_text(j, &n->cfg);
	m->creator = ps_dup(j, n->creator);
	m->created = n->created;
	return m->host && m->name && m->config && m->creator && (!h->pep || m->user) ? 0 : -ENOMEM;
}

/* The write of n's configuration after a change. */
static int ps_put_config(struct ps_job *j, const struct ps_node *n)
{
	struct ps_mut *m = ps_mut_add(j, PS_MUT_NODE_CONFIG, n->id);

	if (!m || !(m->config = ps_config_text(j, &n->cfg)))
		return -ENOMEM;
	return 0;
}

/* The write of one affiliation (PS_AFFIL_NONE deletes it). */
static int ps_put_affil(struct ps_job *j, const struct ps_node *n, const char *jid,
			enum ps_affil a)
{
	struct ps_mut *m = ps_mut_add(j, PS_MUT_AFF_PUT, n->id);

	if (!m || !(m->jid = ps_dup(j, jid)))
		return -ENOMEM;
	m->value = ps_affil_name(a);
	return 0;
}

/* The write of one subscription with its state and options. */
static int ps_put_sub(struct ps_job *j, const struct ps_node *n, const struct ps_subscription *s)
{
	struct ps_mut *m = ps_mut_add(j, PS_MUT_SUB_PUT, n->id);

	if (!m || !(m->jid = ps_dup(j, s->jid)) || !(m->subid = ps_dup(j, s->subid)))
		return -ENOMEM;
	m->value = ps_sub_state_name(s->state);
	m->options = s->deliver ? "" : "deliver=0";
	return 0;
}

/* The write that removes the subscription of exactly this JID. */
static int ps_del_sub(struct ps_job *j, const struct ps_node *n, const char *jid)
{
	struct ps_mut *m = ps_mut_add(j, PS_MUT_SUB_DEL, n->id);

	if (!m || !(m->jid = ps_dup(j, jid)))
		return -ENOMEM;
	return 0;
}

/* ---- Who is asking ---- */

/* Whether bare JID bare[0..len) is an account of this server (no federation yet). */
static bool ps_is_local(const struct worker *w, const char *bare, size_t len)
{
	const char *at = memchr(bare, '@', len);
	const char *dom = w->srv->cfg->domain;
	size_t dl = strlen(dom);

	return at && (size_t)(bare + len - at - 1) == dl && memcmp(at + 1, dom, dl) == 0;
}

/*
 * The bare JID whose roster the presence and roster access models of a
 * node mean: the PEP account, or the node's first owner on the service.
 * NULL when there is none, or it is not a local account.
 */
static const char *ps_roster_owner(const struct worker *w, const struct ps_node *n, size_t *len)
{
	const struct ps_affiliation *o;

	if (n->host->pep) {
		*len = n->host->jid_len;
		return n->host->jid;
	}
	o = ps_first_owner(n);
	if (!o || !ps_is_local(w, o->jid, o->jid_len))
		return NULL;
	*len = o->jid_len;
	return o->jid;
}

/*
 * Fills r for requester `bare` on node n. The roster facts come from the
 * owner's in-memory roster when it has sessions; when they are needed
 * and it has none, *gate_owner is set to the owner's bare JID (the store
 * must be asked), else to NULL.
 */
static void ps_requester_facts(struct worker *w, const struct ps_node *n, const char *bare,
			       size_t bare_len, bool owner_account, struct ps_requester *r,
			       const char **gate_owner, size_t *gate_owner_len)
{
	const char *owner;
	size_t olen;
	struct account *acct;
	char b[JID_MAX];

	memset(r, 0, sizeof(*r));
	*gate_owner = NULL;
	if (bare_len >= sizeof(b))
		return;
	/* Callers may pass the bare part of a full JID: roster lookups need a string. */
	memcpy(b, bare, bare_len);
	b[bare_len] = '\0';
	bare = b;
	r->affil = ps_affil_get(n, bare, bare_len);
	r->is_owner_account = owner_account;
	for (const struct ps_subscription *s = n->subs; s; s = s->next)
		if (s->state == PS_SUB_SUBSCRIBED && s->bare_len == bare_len &&
		    memcmp(s->jid, bare, bare_len) == 0)
			r->subscribed = true;
	if (!ps_access_needs_roster(&n->cfg, r))
		return;
	owner = ps_roster_owner(w, n, &olen);
	if (!owner)
		return;
	/* The owner itself is in its own roster's terms always allowed. */
	if (olen == bare_len && memcmp(owner, bare, olen) == 0) {
		r->has_from = r->in_groups = true;
		return;
	}
	/*
	 * Rosters are read only at their account's home (the service on
	 * worker 0 sees its owner's there, or asks the store).
	 */
	acct = router_home_elsewhere(w, owner, olen) ? NULL :
	       sessdir_find_account(w->sessions, owner, olen);
	if (acct) {
		const struct roster_item *it = roster_find(acct, bare);

		r->has_from = it && (it->sub & SUB_FROM);
		r->in_groups = it && ps_groups_match(n->cfg.groups, it->groups);
		return;
	}
	/*
	 * The owner has no session, but for "presence" the requester's own
	 * roster says the same: both accounts are local, and To on its side
	 * is From on the owner's (RFC 6121 Appendix A keeps them in step).
	 */
	acct = n->cfg.access == PS_ACCESS_PRESENCE && !router_home_elsewhere(w, bare, bare_len) ?
	       sessdir_find_account(w->sessions, bare, bare_len) : NULL;
	if (acct) {
		const struct roster_item *it = roster_find(acct, owner);

		r->has_from = it && (it->sub & SUB_TO);
		return;
	}
	*gate_owner = owner;
	*gate_owner_len = olen;
}

/* A gate for the job: the store decides access for `bare` on n (owner offline). */
static struct ps_gate *ps_gate_new(struct ps_job *j, const struct ps_node *n, const char *owner,
				   size_t olen, const char *bare, const struct ps_requester *r)
{
	struct ps_gate *g = arena_alloc(&j->a, sizeof(*g));
	const char *at = memchr(owner, '@', olen);

	if (!g || !at)
		return NULL;
	memset(g, 0, sizeof(*g));
	g->owner_user = arena_strndup(&j->a, owner, (size_t)(at - owner));
	g->contact = ps_dup(j, bare);
	g->cfg.access = n->cfg.access;
	g->cfg.groups = n->cfg.groups ? (char *)ps_dup(j, n->cfg.groups) : NULL;
	g->r = *r;
	g->verdict = PS_DENY_FORBIDDEN;
	if (!g->owner_user || !g->contact || (n->cfg.groups && !g->cfg.groups))
		return NULL;
	return g;
}

/* Whether the requester owns n (the PEP account always owns its nodes). */
static bool ps_is_owner(const struct ps_ctx *ctx, const struct ps_node *n)
{
	return ctx->owner_account ||
	       ps_affil_get(n, ctx->from_bare, ctx->from_bare_len) == PS_AFFIL_OWNER;
}

/* Answers a denial. */
static void ps_deny(struct ps_ctx *ctx, enum ps_verdict v)
{
	const char *cond, *app;

	ps_verdict_error(v, &cond, &app);
	ps_err(ctx, cond, app, NULL);
}

/* Answers a job's request with the error of an access denial. */
static void ps_job_deny(struct ps_job *j, struct session *s, enum ps_verdict v)
{
	const char *cond, *app;

	ps_verdict_error(v, &cond, &app);
	ps_job_error(j, s, cond, app, NULL);
}

/*
 * Access (subscribe, retrieve) of the requester to n. Returns 1 when
 * allowed, 0 after answering a denial, 2 when the store must decide: the
 * gate is then set on j (which must exist: pass it for requests that
 * have a job).
 */
static int ps_check_access(struct ps_ctx *ctx, struct ps_node *n, struct ps_job *j)
{
	struct ps_requester r;
	const char *owner;
	size_t olen = 0;
	enum ps_verdict v;

	ps_requester_facts(ctx->w, n, ctx->from_bare, ctx->from_bare_len, ctx->owner_account, &r,
			   &owner, &olen);
	/* Facts only the store has: the decision travels with the job. */
	if (owner) {
		if (!j || !(j->gate = ps_gate_new(j, n, owner, olen, ctx->from_bare, &r))) {
			ps_err(ctx, "internal-server-error", NULL, NULL);
			return 0;
		}
		return 2;
	}
	v = ps_access_check(&n->cfg, &r);
	if (v != PS_ALLOW) {
		ps_deny(ctx, v);
		return 0;
	}
	return 1;
}

/* The node named by el's 'node' attribute; NULL after answering when there is none. */
static struct ps_node *ps_node_of(struct ps_ctx *ctx, const struct xml_node *el)
{
	const char *name = xml_attr_get(el, "node");
	struct ps_node *n;

	if (!name || !name[0]) {
		ps_err(ctx, "bad-request", "nodeid-required", NULL);
		return NULL;
	}
	n = ps_node_find(ctx->host, name, strlen(name));
	if (!n)
		ps_err(ctx, "item-not-found", NULL, NULL);
	return n;
}

/* ---- Notifications ---- */

/* A new <message from=host type=...><event xmlns=#event/></message>; returns the event. */
static struct xml_node *ps_event_message(struct arena *a, const struct ps_node *n,
					 struct xml_node **msg)
{
	struct xml_node *m = xml_node_new(a, XML_NS_CLIENT, "message");
	char id[PS_GEN_ID_LEN + 1];

	ps_random_hex(id, PS_GEN_ID_LEN);
	if (!m || xml_attr_set(a, m, "from", n->host->jid) < 0 ||
	    xml_attr_set(a, m, "type", n->cfg.notification_normal ? "normal" : "headline") < 0 ||
	    xml_attr_set(a, m, "id", id) < 0)
		return NULL;
	*msg = m;
	return xml_node_add_child(a, m, NS_PUBSUB_EVENT, "event");
}

/* <event><items node><item id>payload</item></items></event> (payload may be NULL). */
static struct xml_node *ps_item_message(struct arena *a, const struct ps_node *n,
					const char *item_id, struct xml_node *payload)
{
	struct xml_node *msg = NULL, *ev = ps_event_message(a, n, &msg);
	struct xml_node *items = ev ? xml_node_add_child(a, ev, NULL, "items") : NULL;
	struct xml_node *item = items ? xml_node_add_child(a, items, NULL, "item") : NULL;

	if (!item || xml_attr_set(a, items, "node", n->name) < 0 ||
	    xml_attr_set(a, item, "id", item_id) < 0)
		return NULL;
	if (payload)
		xml_node_append(item, payload);
	return msg;
}

/*
 * How a recipient of a fan-out gets it: that session (FULL), the
 * non-negative resources of a bare JID as a headline routed to it (BARE),
 * the resources whose caps want the node (NOTIFY: PEP's implicit
 * subscribers), or those, else as BARE (SUB: an explicit bare-JID
 * subscription to a PEP node, XEP-0163 4.3.2).
 */
enum ps_rcpt_mode {
	PS_RCPT_FULL,
	PS_RCPT_BARE,
	PS_RCPT_NOTIFY,
	PS_RCPT_SUB,
};

struct ps_rcpt {
	struct ps_rcpt *next;
	enum ps_rcpt_mode mode;
	struct ps_requester facts;	/* a check at the owner's home: all but the roster's */
	size_t len, bare_len;
	char jid[];
};

/*
 * The part of a fan-out for the sessions at home on one other worker:
 * one message per worker, with the stanza (without 'to') copied once,
 * the node name its sessions' caps are asked about, and the recipients.
 * That worker delivers as it does to its own sessions (ps_fan_local).
 */
struct ps_remote {
	struct worker_msg msg;		/* first */
	struct arena a;			/* everything below */
	struct xml_node *st;
	const char *node;
	size_t node_len;
	uint64_t serial;		/* 0: no once-per-session filter */
	struct ps_rcpt *rcpts, **tail;
	unsigned count;
	/*
	 * Set: the recipients are subscribers whose access depends on the
	 * roster of `owner`, at home on the receiving worker, which decides
	 * with that roster (as ps_sub_allowed would) and then fans out.
	 */
	const char *owner;
	struct ps_config cfg;		/* access and groups only (in the arena) */
};

/* One fan-out: the stanza, its template, and the serial that dedups sessions. */
struct ps_fan {
	struct ps_node *n;		/* at the sender only */
	const char *node;		/* n's name: what caps must want */
	size_t node_len;
	bool pep;			/* from a PEP account: its block list applies */
	struct xml_node *msg;		/* without 'to' */
	struct fanout f;
	bool ready;
	uint64_t serial;
	unsigned copies;
	struct ps_remote **remote;	/* per worker, allocated on first use */
};

/*
 * One copy of a fan-out to session s with 'to' = to: the template with
 * that 'to' spliced in (fanout.h), or for a detached session the tree,
 * which stream management keeps. A session gets each notification once.
 */
static void ps_fan_copy(struct ps_fan *fan, struct session *s, const char *to, size_t to_len)
{
	const char *data = NULL;
	size_t len = 0;

	if (s->ending || (fan->serial && !pep_session_deliver_once(s, fan->serial)))
		return;
	if (s->conn) {
		if (!fan->ready) {
			if (fanout_prepare(&fan->f, fan->msg) < 0)
				return;
			fan->ready = true;
		}
		data = fanout_render(&fan->f, to, to_len, &len);
		if (!data)
			return;
	}
	router_deliver_prepared(s, fan->msg, to, data, len);
	fan->copies++;
}

/* Delivery to a recipient at home on this worker. */
static void ps_fan_local(struct worker *w, struct ps_fan *fan, const char *jid, size_t len,
			 enum ps_rcpt_mode mode)
{
	struct sessdir *dir = w->sessions;
	struct session *s, *next;
	bool any = false;

	if (mode == PS_RCPT_FULL) {
		s = sessdir_find_full(dir, jid, len);
		if (s && s->available)
			ps_fan_copy(fan, s, jid, len);
		return;
	}
	if (mode == PS_RCPT_NOTIFY || mode == PS_RCPT_SUB) {
		for (s = sessdir_find_bare(dir, jid, len); s; s = next) {
			next = s->next;
			if (s->available && pep_session_wants(s, fan->node, fan->node_len)) {
				ps_fan_copy(fan, s, s->jid, s->jid_len);
				any = true;
			}
		}
		/* SUB: nobody asked by caps, so as to a bare JID. */
		if (any || mode == PS_RCPT_NOTIFY)
			return;
	}
	for (s = sessdir_find_bare(dir, jid, len); s; s = next) {
		next = s->next;
		if (s->available && s->priority >= 0)
			ps_fan_copy(fan, s, jid, len);
	}
}

/* The message for worker k's recipients, made on first use. NULL on ENOMEM. */
static struct ps_remote *ps_remote_get(struct worker *w, struct ps_fan *fan, unsigned k)
{
	struct ps_remote *r;

	if (!fan->remote && !(fan->remote = calloc(w->srv->nworkers, sizeof(*fan->remote))))
		return NULL;
	if (fan->remote[k])
		return fan->remote[k];
	r = calloc(1, sizeof(*r));
	if (!r)
		return NULL;
	arena_init(&r->a, 2048);
	r->st = xml_node_clone(&r->a, fan->msg);
	r->node = arena_strndup(&r->a, fan->node, fan->node_len);
	if (!r->st || !r->node) {
		arena_release(&r->a);
		free(r);
		return NULL;
	}
	r->node_len = fan->node_len;
	r->serial = fan->serial;
	r->tail = &r->rcpts;
	fan->remote[k] = r;
	return r;
}

/*
 * A recipient of the fan-out: delivered here when at home here, else
 * added to its home's message. The PEP account's block list is applied
 * here, at its home, before the copy leaves (its home alone has it).
 */
static void ps_fan_to(struct worker *w, struct ps_fan *fan, const char *jid, size_t len,
		      enum ps_rcpt_mode mode)
{
	const char *from = xml_attr_get(fan->msg, "from");
	struct jid fj, tj;
	struct ps_remote *r;
	struct ps_rcpt *rc;
	char bare[JID_MAX];
	const char *slash;
	size_t blen;

	/* Cluster mode: a subscriber on another node gets it through the router. */
	if (!fan->pep && cluster_enabled() && cluster_elsewhere(jid, len)) {
		router_route_copy(w, fan->msg, jid, len);
		return;
	}
	if (!router_home_elsewhere(w, jid, len)) {
		ps_fan_local(w, fan, jid, len, mode);
		return;
	}
	if (fan->pep && from && jid_parse(&fj, from, strlen(from)) == 0 &&
	    jid_parse(&tj, jid, len) == 0 && !blocking_sender_allows(w, &fj, &tj))
		return;
	slash = memchr(jid, '/', len);
	blen = slash ? (size_t)(slash - jid) : len;
	if (blen >= sizeof(bare))
		return;
	memcpy(bare, jid, blen);
	bare[blen] = '\0';
	r = ps_remote_get(w, fan, worker_home(w->srv, bare));
	rc = r ? arena_alloc(&r->a, sizeof(*rc) + len + 1) : NULL;
	if (!rc) {
		log_warn("pubsub.fanout_failed", "msg=\"out of memory\"");
		return;
	}
	memset(rc, 0, sizeof(*rc));
	rc->mode = mode;
	rc->len = len;
	rc->bare_len = blen;
	memcpy(rc->jid, jid, len);
	rc->jid[len] = '\0';
	*r->tail = rc;
	r->tail = &rc->next;
	r->count++;
}

/*
 * A subscriber of a service node whose access needs the roster of its
 * owner, at home on another worker: the decision is made there (the
 * owner's roster is only read at its home), with the facts known here.
 */
static void ps_fan_check(struct worker *w, struct ps_fan *chk, const struct ps_node *n,
			 const struct ps_subscription *sub, const struct ps_requester *facts,
			 const char *owner, size_t olen)
{
	char ob[JID_MAX];
	struct ps_remote *r;
	struct ps_rcpt *rc;

	if (olen >= sizeof(ob))
		return;
	memcpy(ob, owner, olen);
	ob[olen] = '\0';
	r = ps_remote_get(w, chk, worker_home(w->srv, ob));
	if (r && !r->owner) {
		r->owner = arena_strdup(&r->a, ob);
		r->cfg.access = n->cfg.access;
		r->cfg.groups = n->cfg.groups ? arena_strdup(&r->a, n->cfg.groups) : NULL;
		if (!r->owner || (n->cfg.groups && !r->cfg.groups))
			r = NULL;
	}
	rc = r ? arena_alloc(&r->a, sizeof(*rc) + sub->jid_len + 1) : NULL;
	if (!rc) {
		log_warn("pubsub.fanout_failed", "msg=\"out of memory\"");
		return;
	}
	memset(rc, 0, sizeof(*rc));
	rc->mode = sub->bare_len < sub->jid_len ? PS_RCPT_FULL : PS_RCPT_BARE;
	rc->facts = *facts;
	rc->len = sub->jid_len;
	rc->bare_len = sub->bare_len;
	memcpy(rc->jid, sub->jid, sub->jid_len);
	rc->jid[sub->jid_len] = '\0';
	*r->tail = rc;
	r->tail = &rc->next;
}

static void ps_fan_flush(struct worker *w, struct ps_fan *fan);

/* At a recipient's home: its part of a fan-out, delivered to the sessions here. */
static void ps_remote_arrived(struct worker *w, struct worker_msg *m)
{
	struct ps_remote *r = (struct ps_remote *)m;
	struct ps_fan fan = {
		.node = r->node, .node_len = r->node_len, .msg = r->st,
		.f = FANOUT_INIT, .serial = r->serial,
	};

	/* At shutdown the sessions may be going (as ps_job_done). */
	if (w->srv->shutting_down) {
		/* nothing */
	} else if (r->owner) {
		struct account *acct = sessdir_find_account(w->sessions, r->owner,
							    strlen(r->owner));

		for (struct ps_rcpt *rc = r->rcpts; rc; rc = rc->next) {
			const struct roster_item *it;
			char bare[JID_MAX];

			/* Without the roster in memory the subscription stands (ps_sub_allowed). */
			if (acct) {
				snprintf(bare, sizeof(bare), "%.*s", (int)rc->bare_len, rc->jid);
				it = roster_find(acct, bare);
				rc->facts.has_from = it && (it->sub & SUB_FROM);
				rc->facts.in_groups = it && ps_groups_match(r->cfg.groups, it->groups);
				if (ps_access_check(&r->cfg, &rc->facts) != PS_ALLOW)
					continue;
			}
			ps_fan_to(w, &fan, rc->jid, rc->len, rc->mode);
		}
		ps_fan_flush(w, &fan);
	} else {
		for (const struct ps_rcpt *rc = r->rcpts; rc; rc = rc->next)
			ps_fan_local(w, &fan, rc->jid, rc->len, rc->mode);
	}
	fanout_release(&fan.f);
	arena_release(&r->a);
	free(r);
}

/* Sends each other worker its part of the fan-out. */
static void ps_fan_flush(struct worker *w, struct ps_fan *fan)
{
	for (unsigned k = 0; fan->remote && k < w->srv->nworkers; k++) {
		struct ps_remote *r = fan->remote[k];

		if (!r)
			continue;
		fan->copies += r->count;	/* recipients, for the log */
		worker_post(w, k, &r->msg, ps_remote_arrived);
	}
	free(fan->remote);
	fan->remote = NULL;
}

/*
 * Whether a contact (bare JID, its roster item in the PEP owner's
 * roster) may get notifications of n: the access model, outcasts, and
 * the owner's block list (XEP-0163 4.3.1 last rule).
 */
static bool ps_contact_allowed(const struct ps_node *n, const struct account *owner,
			       const struct roster_item *it)
{
	enum ps_affil af = ps_affil_get(n, it->jid, it->jid_len);
	struct jid j;

	if (af == PS_AFFIL_OUTCAST)
		return false;
	switch (n->cfg.access) {
	case PS_ACCESS_OPEN:
	case PS_ACCESS_PRESENCE:
		break;
	case PS_ACCESS_ROSTER:
		if (af < PS_AFFIL_MEMBER && !ps_groups_match(n->cfg.groups, it->groups))
			return false;
		break;
	case PS_ACCESS_WHITELIST:
		if (af < PS_AFFIL_MEMBER || af == PS_AFFIL_PUBLISH_ONLY)
			return false;
		break;
	}
	if (owner->blocklist && blocklist_count(owner->blocklist) &&
	    jid_parse(&j, it->jid, it->jid_len) == 0 && blocklist_matches(owner->blocklist, &j))
		return false;
	return true;
}

/*
 * Whether an explicit subscriber still has access to a node whose model
 * depends on the owner's roster (XEP-0163 6: access follows roster
 * changes). Without the owner's roster in memory the subscription stands.
 * An owner at home on another worker has its roster there: then *owner
 * is set (and r filled but for the roster), and that worker decides.
 */
static bool ps_sub_allowed(struct worker *w, const struct ps_node *n,
			   const struct ps_subscription *sub, struct ps_requester *r,
			   const char **owner, size_t *olen)
{
	const char *gate;
	size_t glen;

	*owner = NULL;
	if (n->cfg.access == PS_ACCESS_OPEN)
		return ps_affil_get(n, sub->jid, sub->bare_len) != PS_AFFIL_OUTCAST;
	ps_requester_facts(w, n, sub->jid, sub->bare_len,
			   n->host->pep && sub->bare_len == n->host->jid_len &&
			   memcmp(sub->jid, n->host->jid, sub->bare_len) == 0, r, &gate, &glen);
	if (gate && router_home_elsewhere(w, gate, glen)) {
		*owner = gate;
		*olen = glen;
		return false;
	}
	return gate || ps_access_check(&n->cfg, r) == PS_ALLOW;
}

/*
 * Cluster mode, before a job with a notification is submitted: the
 * subscribers whose access hangs on the owner's roster when that roster
 * is not in memory here get a gate each, which the store decides with
 * the job (ps_job_run). On one node such a subscription stands until the
 * owner's roster is back in memory; in a cluster the owner changes its
 * roster on its own node while the services run on another.
 */
static void ps_job_gate_subscribers(struct worker *w, struct ps_job *j)
{
	struct ps_node *n = j->node;
	struct ps_subgate **tail = &j->subgates;
	struct ps_requester r;
	const char *gate;
	size_t glen;

	if (n->host->pep || n->cfg.access == PS_ACCESS_OPEN || j->subgates)
		return;
	for (const struct ps_subscription *sub = n->subs; sub; sub = sub->next) {
		struct ps_subgate *g;
		char bare[JID_MAX];

		if (!sub->deliver || sub->state == PS_SUB_NONE ||
		    !ps_is_local(w, sub->jid, sub->bare_len))
			continue;
		ps_requester_facts(w, n, sub->jid, sub->bare_len, false, &r, &gate, &glen);
		if (!gate)
			continue;
		snprintf(bare, sizeof(bare), "%.*s", (int)sub->bare_len, sub->jid);
		g = arena_alloc(&j->a, sizeof(*g));
		if (!g || !(g->gate = ps_gate_new(j, n, gate, glen, bare, &r)) ||
		    !(g->jid = ps_dup(j, sub->jid)))
			return;	/* out of memory: the others stand, as on one node */
		/* In the order of n->subs: ps_notify walks both together. */
		g->next = NULL;
		*tail = g;
		tail = &g->next;
	}
}

/* Delivery to one explicit subscription (XEP-0060 12.3, XEP-0163 4.3.2). */
static void ps_fan_sub(struct worker *w, struct ps_fan *fan, const struct ps_subscription *sub)
{
	enum ps_rcpt_mode mode = sub->bare_len < sub->jid_len ? PS_RCPT_FULL :
				 fan->pep ? PS_RCPT_SUB : PS_RCPT_BARE;

	ps_fan_to(w, fan, sub->jid, sub->jid_len, mode);
}

/* PEP's implicit subscribers: the owner's resources and its contacts, by +notify. */
static void ps_fan_pep(struct worker *w, struct ps_fan *fan)
{
	struct ps_node *n = fan->n;
	struct ps_host *h = n->host;
	struct sessdir *dir = w->sessions;
	struct account *owner = sessdir_find_account(dir, h->jid, h->jid_len);
	struct session *s, *next;

	for (s = sessdir_find_bare(dir, h->jid, h->jid_len); s; s = next) {
		next = s->next;
		if (s->available && pep_session_wants(s, n->name, n->name_len))
			ps_fan_copy(fan, s, s->jid, s->jid_len);
	}
	/* The owner's roster is in memory while it has sessions (publishers do). */
	if (!owner || !owner->roster)
		return;
	/*
	 * Contacts that receive the owner's presence (from/both), one roster
	 * walk per notification; their resources are asked for +notify.
	 */
	for (const struct roster_item *it = owner->roster->items; it; it = it->next) {
		if (it->deleted || !(it->sub & SUB_FROM) ||
		    (it->jid_len == h->jid_len && memcmp(it->jid, h->jid, h->jid_len) == 0) ||
		    !ps_is_local(w, it->jid, it->jid_len))
			continue;
		/* At home elsewhere: its home asks its resources' caps. */
		if (router_home_elsewhere(w, it->jid, it->jid_len)) {
			if (ps_contact_allowed(n, owner, it))
				ps_fan_to(w, fan, it->jid, it->jid_len, PS_RCPT_NOTIFY);
			continue;
		}
		s = sessdir_find_bare(dir, it->jid, it->jid_len);
		if (!s || !ps_contact_allowed(n, owner, it))
			continue;
		for (; s; s = next) {
			next = s->next;
			if (s->available && pep_session_wants(s, n->name, n->name_len))
				ps_fan_copy(fan, s, s->jid, s->jid_len);
		}
	}
}

/*
 * Sends msg (without 'to') about node n to everyone who gets its
 * notifications: explicit subscribers (subscribed or unconfigured, with
 * delivery on) and, for PEP nodes, the implicit ones. pending_too adds
 * pending subscriptions (node deletion, XEP-0060 8.4.2).
 */
static void ps_notify(struct worker *w, struct ps_node *n, struct xml_node *msg, bool pending_too,
		      const struct ps_subgate *gates)
{
	struct ps_fan fan = {
		.n = n, .node = n->name, .node_len = n->name_len, .pep = n->host->pep,
		.msg = msg, .f = FANOUT_INIT, .serial = atomic_fetch_add(&ps_serial, 1) + 1,
	};
	struct ps_fan chk = fan;	/* subscribers decided at their owner's home */
	const struct ps_subgate *next_gate = gates;
	struct ps_requester r;
	const char *owner;
	size_t olen;

	if (!msg)
		return;
	for (const struct ps_subscription *sub = n->subs; sub; sub = sub->next) {
		const struct ps_subgate *g = next_gate;

		if (!sub->deliver || sub->state == PS_SUB_NONE ||
		    (sub->state == PS_SUB_PENDING && !pending_too) ||
		    !ps_is_local(w, sub->jid, sub->bare_len))
			continue;
		/* Gates follow n->subs: usually the next one (subscriptions may change meanwhile). */
		while (g && strcmp(g->jid, sub->jid) != 0)
			g = g->next;
		if (g) {
			next_gate = g->next;
			if (g->gate->verdict == PS_ALLOW)
				ps_fan_sub(w, &fan, sub);
			continue;
		}
		if (ps_sub_allowed(w, n, sub, &r, &owner, &olen))
			ps_fan_sub(w, &fan, sub);
		else if (owner)
			ps_fan_check(w, &chk, n, sub, &r, owner, olen);
	}
	if (n->host->pep)
		ps_fan_pep(w, &fan);
	ps_fan_flush(w, &fan);
	ps_fan_flush(w, &chk);
	fanout_release(&fan.f);
	log_debug("pubsub.notified", "node_id=%" PRIu64 " copies=%u", n->id, fan.copies);
}

/* A simple <event><NAME node=.../></event> notification (delete, purge, configuration). */
static struct xml_node *ps_simple_event(struct arena *a, const struct ps_node *n, const char *name,
					struct xml_node **child)
{
	struct xml_node *msg = NULL, *ev = ps_event_message(a, n, &msg);
	struct xml_node *el = ev ? xml_node_add_child(a, ev, NULL, name) : NULL;

	if (!el || xml_attr_set(a, el, "node", n->name) < 0)
		return NULL;
	if (child)
		*child = el;
	return msg;
}

/*
 * Tells a subscriber its subscription changed (XEP-0060 12.9): sent to
 * the subscribed JID from the service (or the PEP account).
 */
static void ps_notify_subscription(struct worker *w, struct arena *a, const struct ps_node *n,
				   const char *jid, enum ps_sub_state state, const char *subid)
{
	struct xml_node *msg = NULL, *ev = ps_event_message(a, n, &msg);
	struct xml_node *el = ev ? xml_node_add_child(a, ev, NULL, "subscription") : NULL;

	if (!el || xml_attr_set(a, el, "node", n->name) < 0 || xml_attr_set(a, el, "jid", jid) < 0 ||
	    xml_attr_set(a, el, "subscription", ps_sub_state_name(state)) < 0 ||
	    (subid && xml_attr_set(a, el, "subid", subid) < 0) ||
	    xml_attr_set(a, msg, "to", jid) < 0)
		return;
	if (router_route_stanza(w, msg) < 0)
		log_warn("pubsub.route_failed", "what=subscription");
}

/* XEP-0203 stamp of unix time t. */
static int ps_add_delay(struct arena *a, struct xml_node *msg, const char *from, int64_t t)
{
	struct xml_node *d = xml_node_add_child(a, msg, NS_DELAY, "delay");
	char stamp[32];
	time_t tt = (time_t)t;
	struct tm tm;

	if (!d || !gmtime_r(&tt, &tm))
		return -ENOMEM;
	strftime(stamp, sizeof(stamp), "%Y-%m-%dT%H:%M:%SZ", &tm);
	if (xml_attr_set(a, d, "stamp", stamp) < 0 || xml_attr_set(a, d, "from", from) < 0)
		return -ENOMEM;
	return 0;
}

/* A stored payload as a tree in `a`; NULL for "" (no payload) or a corrupt row (logged). */
static struct xml_node *ps_payload_tree(struct worker *w, struct arena *a, const char *text,
					size_t len)
{
	struct xml_node *el;

	if (!len)
		return NULL;
	el = stored_xml_parse(w->xml, a, text, len);
	if (!el)
		log_warn("pubsub.item_unreadable", "len=%zu", len);
	return el;
}

/*
 * Sends a stored item of n as a last-published-item notification
 * (delayed) to `to`: a full JID (that session) or a bare JID (its
 * non-negative resources, as a headline would be routed).
 */
static void ps_send_item_to(struct worker *w, struct arena *a, struct ps_node *n, const char *id,
			    const char *payload, size_t payload_len, int64_t created,
			    const char *to)
{
	struct xml_node *body = n->cfg.deliver_payloads ?
				ps_payload_tree(w, a, payload, payload_len) : NULL;
	struct xml_node *msg = ps_item_message(a, n, id, body);
	struct sessdir *dir = w->sessions;
	struct session *s, *next;
	size_t tl = strlen(to);
	const char *slash = memchr(to, '/', tl);

	if (!msg || ps_add_delay(a, msg, n->host->jid, created) < 0)
		return;
	/* Cluster mode: on another node, through the router (as ps_fan_to). */
	if (!n->host->pep && cluster_enabled() && cluster_elsewhere(to, tl)) {
		router_route_copy(w, msg, to, tl);
		return;
	}
	/* At home elsewhere: a message to that worker, which delivers as below. */
	if (router_home_elsewhere(w, to, tl)) {
		struct ps_fan fan = {
			.node = n->name, .node_len = n->name_len, .pep = n->host->pep,
			.msg = msg, .f = FANOUT_INIT,
		};

		ps_fan_to(w, &fan, to, tl, slash ? PS_RCPT_FULL : PS_RCPT_BARE);
		ps_fan_flush(w, &fan);
		return;
	}
	if (slash) {
		s = sessdir_find_full(dir, to, tl);
		if (s && s->available && xml_attr_set(a, msg, "to", to) == 0)
			router_deliver(s, msg);
		return;
	}
	if (xml_attr_set(a, msg, "to", to) < 0)
		return;
	for (s = sessdir_find_bare(dir, to, tl); s; s = next) {
		next = s->next;
		if (s->available && s->priority >= 0)
			router_deliver(s, msg);
	}
}

/* ---- Loading ---- */

struct ps_load_ctx {
	const struct server *srv;
	unsigned nodes, affils, subs, skipped;
	bool reload;	/* pubsub_service_reload: the service's nodes, on worker 0 */
};

/*
 * Loading: the node of a stored id, whichever registry it went to; the
 * loader then works on that one.
 */
static struct ps_node *ps_load_find(uint64_t node_id)
{
	for (unsigned k = 0; k < ps_registry_count(); k++) {
		struct ps_node *n;

		ps_registry_use(k);
		if ((n = ps_node_by_id(node_id)))
			return n;
	}
	return NULL;
}

/* The service's node of a stored id, in worker 0's registry (where it was just loaded). */
static struct ps_node *ps_reload_find(uint64_t node_id)
{
	struct ps_node *n = ps_node_by_id(node_id);

	return n && !n->host->pep ? n : NULL;
}

/* The node a stored affiliation or subscription belongs to, for a load or a reload. */
static struct ps_node *ps_load_node_of(const struct ps_load_ctx *lc, uint64_t node_id)
{
	return lc->reload ? ps_reload_find(node_id) : ps_load_find(node_id);
}

/* Loading: one stored node into the registry (a corrupt configuration: defaults, logged). */
static int ps_load_node(void *arg, uint64_t id, const char *host, const char *user,
			const char *name, const char *config, const char *creator, int64_t created)
{
	struct ps_load_ctx *lc = arg;
	struct ps_config cfg;
	struct ps_host *h;
	bool pep = user != NULL;
	int ret;

	if (!host || !name || !config) {
		lc->skipped++;
		return 0;
	}
	ret = ps_config_parse(&cfg, pep, config, strlen(config));
	if (ret == -ENOMEM)
		return ret;
	if (ret < 0) {
		log_warn("pubsub.config_unreadable", "node_id=%" PRIu64 " msg=\"defaults used\"", id);
		ps_config_default(&cfg, pep);
	}
	/* An account's nodes live at its home, the service's on worker 0. */
	ps_registry_use(pep ? worker_home(lc->srv, host) : 0);
	h = ps_host_get(host, strlen(host), pep, pep ? strlen(user) : 0);
	if (!h) {
		ps_config_free(&cfg);
		return -ENOMEM;
	}
	if (!ps_node_add(h, name, strlen(name), id, &cfg, creator, created))
		return -ENOMEM;
	lc->nodes++;
	return 0;
}

/* Loading: one affiliation (rows of unknown nodes or names are skipped). */
static int ps_load_affil(void *arg, uint64_t node_id, const char *jid, const char *affil)
{
	struct ps_load_ctx *lc = arg;
	struct ps_node *n = ps_load_node_of(lc, node_id);
	int a = (int)ps_affil_parse(affil);

	if (!n || !jid || a <= 0) {
		lc->skipped++;
		return 0;
	}
	lc->affils++;
	return ps_affil_set(n, jid, strlen(jid), (enum ps_affil)a);
}

/* Loading: one subscription, with its delivery option. */
static int ps_load_sub(void *arg, uint64_t node_id, const char *jid, const char *subid,
		       const char *state, const char *options)
{
	struct ps_load_ctx *lc = arg;
	struct ps_node *n = ps_load_node_of(lc, node_id);
	int st = (int)ps_sub_state_parse(state);
	struct ps_subscription *s;

	if (!n || !jid || st <= 0) {
		lc->skipped++;
		return 0;
	}
	s = ps_sub_add(n, jid, strlen(jid), (enum ps_sub_state)st,
		       subid && subid[0] ? subid : NULL);
	if (!s)
		return -ENOMEM;
	s->deliver = !(options && strstr(options, "deliver=0"));
	lc->subs++;
	return 0;
}

int pubsub_init(struct storage *st, const struct server *srv)
{
	static const struct ps_load_cb cb = {
		.node = ps_load_node, .affil = ps_load_affil, .sub = ps_load_sub,
	};
	const struct config *cfg = srv->cfg;
	struct ps_load_ctx lc = { .srv = srv };
	uint64_t id_block = 0;
	int ret;

	ps_lim.max_nodes = cfg->max_pubsub_nodes;
	ps_lim.max_items = cfg->max_items_per_node;
	ps_lim.max_item_bytes = cfg->max_pubsub_item_bytes;
	ps_service_len = (size_t)snprintf(ps_service_jid, sizeof(ps_service_jid), "%s.%s",
					  PUBSUB_LABEL, cfg->domain);
	ret = ps_registry_init(srv->nworkers);
	if (ret < 0)
		return ret;
	ret = pubsub_store_load(st, &cb, &lc, &id_block);
	ps_registry_use(0);	/* this thread goes on as worker 0 */
	if (ret < 0) {
		log_error("pubsub.load_failed", "err=%d", ret);
		ps_registry_free();
		return ret;
	}
	ps_node_ids_reserved(id_block);
	log_info("pubsub.loaded", "nodes=%u affiliations=%u subscriptions=%u skipped=%u service=%s",
		 lc.nodes, lc.affils, lc.subs, lc.skipped, ps_service_jid);
	return 0;
}

/* Reloading the service's nodes (worker 0): the stored ones of pubsub.DOMAIN only. */
static int ps_reload_node(void *arg, uint64_t id, const char *host, const char *user,
			  const char *name, const char *config, const char *creator,
			  int64_t created)
{
	if (user || !host || strcmp(host, ps_service_jid) != 0)
		return 0;
	return ps_load_node(arg, id, host, user, name, config, creator, created);
}

int pubsub_service_reload(struct storage *st, const struct server *srv)
{
	static const struct ps_load_cb cb = {
		.node = ps_reload_node, .affil = ps_load_affil, .sub = ps_load_sub,
	};
	struct ps_load_ctx lc = { .srv = srv, .reload = true };
	struct ps_host *h = ps_host_find(ps_service_jid, ps_service_len);
	uint64_t spare_block = 0;
	int ret;

	/* Requests in flight keep their node alive (a reference) until they end. */
	while (h && h->nodes)
		ps_node_remove(h->nodes);
	/*
	 * The load reserves another block of node ids; this process keeps
	 * using the one it reserved at start (other workers take ids from it
	 * meanwhile), so the new one is left unused.
	 */
	ret = pubsub_store_load(st, &cb, &lc, &spare_block);
	ps_registry_use(0);
	if (ret < 0) {
		log_error("pubsub.reload_failed", "err=%d", ret);
		return ret;
	}
	log_info("pubsub.reloaded", "nodes=%u affiliations=%u subscriptions=%u service=%s",
		 lc.nodes, lc.affils, lc.subs, ps_service_jid);
	return 0;
}

void pubsub_worker_init(struct worker *w)
{
	ps_registry_use(w->id);
}

void pubsub_worker_destroy(struct worker *w)
{
	pep_worker_destroy(w);
}

void pubsub_shutdown(void)
{
	ps_registry_free();
}

bool pubsub_enabled(const struct config *cfg)
{
	return cfg->pubsub;
}

/*
 * After a client's publish or retract was stored and notified: the
 * modules that mirror a PEP node elsewhere are told (bookmarks_compat.h,
 * avatar_compat.h). Changes made on an account's behalf (no iq) are not,
 * so a mirror never echoes back.
 */
static void ps_changed_hook(struct worker *w, const struct ps_job *j)
{
	const struct ps_host *h = j->node->host;
	char user[JID_PART_MAX + 1];

	if (!j->has_iq || !h->pep || j->node->deleted || h->user_len >= sizeof(user))
		return;
	memcpy(user, h->jid, h->user_len);
	user[h->user_len] = '\0';
	if (strcmp(j->node->name, NS_BOOKMARKS2) == 0)
		bookmarks_compat_pep_changed(w, user);
	else if (strcmp(j->node->name, NS_AVATAR_METADATA) == 0)
		avatar_compat_pep_changed(w, user);
}

/* ---- create ---- */

/* Completion of a create: the node stays only if it was stored. */
static void ps_finish_create(struct ps_job *j, struct session *s)
{
	if (j->op.req.result < 0) {
		/* Not stored (the account went away, or the store failed): not created. */
		ps_node_remove(j->node);
		if (j->op.req.result == -ENOENT)
			ps_job_error(j, s, "item-not-found", NULL, NULL);
		else
			ps_job_failed(j, s);
		return;
	}
	ps_job_ok(j, s);
}

/* Whether the requester may create one more node on this host (max_pubsub_nodes). */
static bool ps_quota_ok(struct ps_ctx *ctx)
{
	const char *owner = ctx->pep ? ctx->host_jid : ctx->from_bare;
	size_t len = ctx->pep ? ctx->host_len : ctx->from_bare_len;

	return !ctx->host || ps_host_count_owned(ctx->host, owner, len) < ps_lim.max_nodes;
}

/*
 * Creates node `name` on ctx's host in memory with cfg (taken over) and
 * adds its writes to j. NULL on ENOMEM (answered).
 */
static struct ps_node *ps_create_node(struct ps_ctx *ctx, struct ps_job *j, const char *name,
				      size_t len, struct ps_config *cfg)
{
	const char *owner = ctx->pep ? ctx->host_jid : ctx->from_bare;
	size_t olen = ctx->pep ? ctx->host_len : ctx->from_bare_len;
	struct ps_node *n;

	if (!ctx->host)
		ctx->host = ps_host_get(ctx->host_jid, ctx->host_len, ctx->pep, ctx->user_len);
	n = ctx->host ? ps_node_add(ctx->host, name, len, 0, cfg, ctx->from_bare, time(NULL)) : NULL;
	if (!ctx->host)
		ps_config_free(cfg);
	if (!n || ps_affil_set(n, owner, olen, PS_AFFIL_OWNER) < 0 || ps_put_node(j, n) < 0 ||
	    ps_put_affil(j, n, owner, PS_AFFIL_OWNER) < 0) {
		if (n)
			ps_node_remove(n);
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return NULL;
	}
	ps_job_set_node(j, n);
	j->created = true;
	log_info("pubsub.node_created", "host=%s node_id=%" PRIu64, ctx->host_jid, n->id);
	return n;
}

/* Checks a NodeID from the network. 0, or -1 after answering. */
static int ps_check_name(struct ps_ctx *ctx, const char *name)
{
	if (strlen(name) > PS_NODE_NAME_MAX) {
		ps_err(ctx, "not-acceptable", NULL, "NodeID too long");
		return -1;
	}
	return 0;
}

/*
 * XEP-0060 8.1: create a node, with the default configuration or the
 * <configure/> form next to <create/>; no NodeID makes an instant node.
 * PEP: only the account itself creates nodes on its service.
 */
static void ps_create(struct ps_ctx *ctx)
{
	const char *name = xml_attr_get(ctx->op, "node");
	const struct xml_node *conf = xml_child(ctx->rq->payload, NS_PUBSUB, "configure");
	const struct xml_node *x = conf ? ps_form_get(conf) : NULL;
	char gen[PS_GEN_ID_LEN + 1];
	struct ps_form_error ferr = { 0 };
	struct ps_config cfg;
	struct xml_node *outer = NULL, *el;
	struct ps_job *j;

	/* Only the account creates on its PEP service; only local accounts on the service. */
	if ((ctx->pep && !ctx->owner_account) ||
	    (!ctx->pep && !ps_is_local(ctx->w, ctx->from_bare, ctx->from_bare_len))) {
		ps_err(ctx, "forbidden", NULL, NULL);
		return;
	}
	if (conf && xml_attr_get(conf, "node")) {
		ps_err(ctx, "bad-request", NULL, "configure must not name the node");
		return;
	}
	if (name && !name[0])
		name = NULL;
	if (name && ps_check_name(ctx, name) < 0)
		return;
	if (!name) {
		/* An instant node (XEP-0060 8.1.1): a fresh random NodeID. */
		do
			ps_random_hex(gen, PS_GEN_ID_LEN);
		while (ps_node_find(ctx->host, gen, PS_GEN_ID_LEN));
		name = gen;
	} else if (ps_node_find(ctx->host, name, strlen(name))) {
		ps_err(ctx, "conflict", NULL, NULL);
		return;
	}
	if (!ps_quota_ok(ctx)) {
		ps_err(ctx, "policy-violation", "max-nodes-exceeded", "too many nodes (max_pubsub_nodes)");
		return;
	}
	ps_config_default(&cfg, ctx->pep);
	if (x) {
		int ret = ps_config_apply_form(&cfg, x, &ps_lim, false, &ferr);

		if (ret < 0) {
			ps_config_free(&cfg);
			if (ret == -ENOMEM)
				ps_err(ctx, "internal-server-error", NULL, NULL);
			else
				ps_err(ctx, ferr.cond, ferr.app, ferr.text);
			return;
		}
	}
	j = ps_job_new(ctx, ps_finish_create);
	if (!j) {
		ps_config_free(&cfg);
		return;
	}
	if (!ps_create_node(ctx, j, name, strlen(name), &cfg)) {
		ps_job_free(j);
		return;
	}
	el = ps_wrap(&j->a, &outer, NS_PUBSUB, "create", name);
	j->reply = el ? outer : NULL;
	ps_job_submit(ctx->w, j);
}

/* ---- publish ---- */

/*
 * Completion of a publish: answered once the item is stored, then the
 * notification fans out (after the commit, so nobody is told of an item
 * the store then lost).
 */
static void ps_finish_publish(struct ps_job *j, struct session *s)
{
	struct worker *w = ps_job_worker(j);

	if (j->op.req.result < 0) {
		if (j->created)
			ps_node_remove(j->node);
		if (j->op.req.result == -ENOENT)
			ps_job_error(j, s, "item-not-found", NULL, NULL);
		else
			ps_job_failed(j, s);
		return;
	}
	ps_job_ok(j, s);
	/* A node deleted meanwhile has no one left to tell. */
	if (!j->node->deleted && j->node->cfg.deliver_notifications)
		ps_notify(w, j->node, j->notify, false, j->subgates);
	ps_changed_hook(w, j);
}

/*
 * XEP-0060 7.1.3.6 / table 4.3: the item and payload a publish must (not)
 * carry for the node's event type. 0, or -1 after answering.
 */
static int ps_check_item(struct ps_ctx *ctx, const struct ps_config *c,
			 const struct xml_node *item, const struct xml_node **payload)
{
	const struct xml_node *p = item ? xml_first_element(item) : NULL;

	*payload = p;
	if (!item) {
		if (c->persist_items || c->deliver_payloads) {
			ps_err(ctx, "bad-request", "item-required", NULL);
			return -1;
		}
		return 0;
	}
	if (!c->persist_items && !c->deliver_payloads) {
		ps_err(ctx, "bad-request", "item-forbidden", NULL);
		return -1;
	}
	if (p && xml_next_element(p)) {
		ps_err(ctx, "bad-request", "invalid-payload", "one payload element per item");
		return -1;
	}
	if (!p && c->deliver_payloads) {
		ps_err(ctx, "bad-request", "payload-required", NULL);
		return -1;
	}
	if (p && c->payload_type && strcmp(p->ns, c->payload_type) != 0) {
		ps_err(ctx, "bad-request", "invalid-payload", "the payload's namespace is not the node's type");
		return -1;
	}
	return 0;
}

/*
 * The node a publish goes to: existing (its publish-options checked as
 * preconditions), or created now on a PEP service (auto-create, with the
 * publish-options as configuration). NULL after answering.
 */
static struct ps_node *ps_publish_node(struct ps_ctx *ctx, struct ps_job *j, const char *name,
				       const struct xml_node *po)
{
	struct ps_node *n = ps_node_find(ctx->host, name, strlen(name));
	struct ps_form_error ferr = { 0 };
	struct ps_config cfg;
	int ret;

	if (n) {
		if (po && ps_config_check_preconditions(&n->cfg, po, &ps_lim, &ferr) < 0) {
			ps_err(ctx, ferr.cond, ferr.app, ferr.text);
			return NULL;
		}
		ps_job_set_node(j, n);
		return n;
	}
	/* XEP-0163 3: PEP auto-creates on the owner's publish; the service does not. */
	if (!ctx->pep || !ctx->owner_account) {
		ps_err(ctx, ctx->pep ? "forbidden" : "item-not-found", NULL, NULL);
		return NULL;
	}
	if (ps_check_name(ctx, name) < 0)
		return NULL;
	if (!ps_quota_ok(ctx)) {
		ps_err(ctx, "policy-violation", "max-nodes-exceeded", "too many nodes (max_pubsub_nodes)");
		return NULL;
	}
	ps_config_default(&cfg, true);
	if (po) {
		/* 7.1.5 step 3: defaults except what the preconditions name. */
		ret = ps_config_apply_form(&cfg, po, &ps_lim, true, &ferr);
		if (ret < 0) {
			ps_config_free(&cfg);
			if (ret == -ENOMEM)
				ps_err(ctx, "internal-server-error", NULL, NULL);
			else
				ps_err(ctx, ferr.cond, ferr.app, ferr.text);
			return NULL;
		}
	}
	return ps_create_node(ctx, j, name, strlen(name), &cfg);
}

/*
 * Keeps a published item: a write to the store (trimmed to the node's
 * max_items) for a node that persists items, else the node's in-memory
 * last item. text[0..len) is the serialized payload. 0 or -ENOMEM.
 */
static int ps_publish_keep(struct ps_ctx *ctx, struct ps_job *j, struct ps_node *n,
			   const char *item_id, const char *text, size_t len)
{
	struct ps_mut *m;
	char *id_copy, *pl;

	if (n->cfg.persist_items) {
		m = ps_mut_add(j, PS_MUT_ITEM_PUT, n->id);
		if (!m || !(m->item_id = ps_dup(j, item_id)) ||
		    !(m->publisher = ps_dup(j, ctx->from_bare)) ||
		    !(m->payload = arena_strndup(&j->a, text, len)))
			return -ENOMEM;
		m->payload_len = len;
		/* The store numbers the item when it writes it: the commit order. */
		m->created = time(NULL);
		m->max_items = ps_config_max_items(&n->cfg, &ps_lim);
		return 0;
	}
	id_copy = strdup(item_id);
	pl = malloc(len + 1);
	if (!id_copy || !pl) {
		free(id_copy);
		free(pl);
		return -ENOMEM;
	}
	memcpy(pl, text, len);
	pl[len] = '\0';
	free(n->last_id);
	free(n->last_payload);
	n->last_id = id_copy;
	n->last_payload = pl;
	n->last_payload_len = len;
	return 0;
}

/*
 * The notification of a publish, built now (the request's tree is gone
 * by the time the store answers) in the job's arena: the item with a copy
 * of its payload when the node delivers payloads, or an empty <items/>
 * for a transient notification-only node (XEP-0060 table 4.3).
 */
static int ps_publish_notice(struct ps_job *j, const struct ps_node *n, const char *item_id,
			     const struct xml_node *item, const struct xml_node *payload)
{
	struct xml_node *copy = NULL;

	if (!n->cfg.deliver_notifications)
		return 0;
	if (payload && n->cfg.deliver_payloads && !(copy = xml_node_clone(&j->a, payload)))
		return -ENOMEM;
	j->notify = item ? ps_item_message(&j->a, n, item_id, copy) :
			   ps_simple_event(&j->a, n, "items", NULL);
	return j->notify ? 0 : -ENOMEM;
}

/*
 * The checks of a publish that need no node (XEP-0060 7.1.3): a NodeID,
 * at most one item (batches were removed from the XEP), a form in
 * publish-options, a bounded ItemID. *item_id is the item's id or a new
 * one in gen. 0, or -1 after answering.
 */
static int ps_publish_request(struct ps_ctx *ctx, const struct xml_node *item,
			      const struct xml_node *po_el, const char **item_id, char *gen)
{
	const char *name = xml_attr_get(ctx->op, "node");

	if (!name || !name[0]) {
		ps_err(ctx, "bad-request", "nodeid-required", NULL);
		return -1;
	}
	if (item && xml_next_element(item)) {
		ps_err(ctx, "bad-request", "invalid-payload", "one item per publish");
		return -1;
	}
	if (po_el && !ps_form_get(po_el)) {
		ps_err(ctx, "bad-request", NULL, "publish-options without a form");
		return -1;
	}
	*item_id = item ? xml_attr_get(item, "id") : NULL;
	if (*item_id && strlen(*item_id) > PS_ITEM_ID_MAX) {
		ps_err(ctx, "not-acceptable", NULL, "ItemID too long");
		return -1;
	}
	if (!*item_id || !(*item_id)[0]) {
		ps_random_hex(gen, PS_GEN_ID_LEN);
		*item_id = gen;
	}
	return 0;
}

/*
 * XEP-0060 7.1: publish an item (auto-creating a PEP node for its
 * account), checked against the node's publish model, event type and
 * the payload limit; stored, then notified by the completion.
 */
static void ps_publish(struct ps_ctx *ctx)
{
	const char *name = xml_attr_get(ctx->op, "node");
	const struct xml_node *item = xml_child(ctx->op, NS_PUBSUB, "item");
	const struct xml_node *po_el = xml_child(ctx->rq->payload, NS_PUBSUB, "publish-options");
	const struct xml_node *payload;
	struct xml_node *outer = NULL, *el, *ri;
	struct strbuf b = STRBUF_INIT;
	struct ps_requester r;
	const char *item_id, *gate;
	char gen[PS_GEN_ID_LEN + 1];
	size_t glen;
	struct ps_node *n;
	struct ps_job *j;
	enum ps_verdict v;

	if (ps_publish_request(ctx, item, po_el, &item_id, gen) < 0)
		return;
	j = ps_job_new(ctx, ps_finish_publish);
	if (!j)
		return;
	n = ps_publish_node(ctx, j, name, po_el ? ps_form_get(po_el) : NULL);
	if (!n)
		goto out_job;
	/* A node created just now is the requester's own. */
	if (!j->created) {
		ps_requester_facts(ctx->w, n, ctx->from_bare, ctx->from_bare_len,
				   ctx->owner_account, &r, &gate, &glen);
		v = ps_publish_check(&n->cfg, &r);
		if (v != PS_ALLOW) {
			ps_deny(ctx, v);
			goto out_job;
		}
	}
	if (ps_check_item(ctx, &n->cfg, item, &payload) < 0)
		goto out_undo;
	if (payload)
		stored_xml_serialize(&b, payload);
	if (b.len > ps_lim.max_item_bytes) {
		ps_err(ctx, "not-acceptable", "payload-too-big", NULL);
		goto out_undo;
	}
	if (b.oom || (item && ps_publish_keep(ctx, j, n, item_id, b.data ? b.data : "",
					      b.len) < 0) ||
	    ps_publish_notice(j, n, item_id, item, payload) < 0) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		goto out_undo;
	}
	el = ps_wrap(&j->a, &outer, NS_PUBSUB, "publish", name);
	ri = el && item ? xml_node_add_child(&j->a, el, NS_PUBSUB, "item") : NULL;
	if (ri)
		xml_attr_set(&j->a, ri, "id", item_id);
	j->reply = outer;
	strbuf_free(&b);
	ps_job_submit(ctx->w, j);
	return;
out_undo:
	if (j->created)
		ps_node_remove(n);
out_job:
	strbuf_free(&b);
	ps_job_drop(ctx, j);
}

/* ---- retract ---- */

/* Completion of a retract: item-not-found when the store had no such item. */
static void ps_finish_retract(struct ps_job *j, struct session *s)
{
	if (j->op.req.result == -ENOENT) {
		ps_job_error(j, s, "item-not-found", NULL, NULL);
		return;
	}
	if (j->op.req.result < 0) {
		ps_job_failed(j, s);
		return;
	}
	ps_job_ok(j, s);
	if (j->notify && !j->node->deleted)
		ps_notify(ps_job_worker(j), j->node, j->notify, false, j->subgates);
	ps_changed_hook(ps_job_worker(j), j);
}

/*
 * XEP-0060 7.2: delete an item. Owners and publishers may delete any
 * item, publish-only entities their own; transient nodes keep none.
 */
static void ps_retract(struct ps_ctx *ctx)
{
	const struct xml_node *item = xml_child(ctx->op, NS_PUBSUB, "item");
	const char *id = item ? xml_attr_get(item, "id") : NULL;
	const char *notify = xml_attr_get(ctx->op, "notify");
	struct ps_node *n = ps_node_of(ctx, ctx->op);
	enum ps_affil af;
	struct ps_job *j;
	struct ps_mut *m;
	bool tell;

	if (!n)
		return;
	if (!id || !id[0] || xml_next_element(item)) {
		ps_err(ctx, "bad-request", "item-required", NULL);
		return;
	}
	af = ps_affil_get(n, ctx->from_bare, ctx->from_bare_len);
	if (!ctx->owner_account && af != PS_AFFIL_OWNER && af != PS_AFFIL_PUBLISHER &&
	    af != PS_AFFIL_PUBLISH_ONLY) {
		ps_err(ctx, "forbidden", NULL, NULL);
		return;
	}
	if (!n->cfg.persist_items) {
		ps_unsupported(ctx, "persistent-items");
		return;
	}
	j = ps_job_new(ctx, ps_finish_retract);
	if (!j)
		return;
	ps_job_set_node(j, n);
	m = ps_mut_add(j, PS_MUT_ITEM_DEL, n->id);
	if (!m || !(m->item_id = ps_dup(j, id))) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		ps_job_drop(ctx, j);
		return;
	}
	/* Publish-only may remove only what it published (XEP-0060 4.1). */
	if (af == PS_AFFIL_PUBLISH_ONLY && !ctx->owner_account)
		m->publisher = ps_dup(j, ctx->from_bare);
	/* 7.2.2.1: notify='true'; otherwise as the node is configured. */
	tell = notify ? (strcmp(notify, "true") == 0 || strcmp(notify, "1") == 0)
		      : n->cfg.notify_retract;
	if (tell && n->cfg.deliver_notifications) {
		struct xml_node *msg = NULL, *ev = ps_event_message(&j->a, n, &msg);
		struct xml_node *items = ev ? xml_node_add_child(&j->a, ev, NULL, "items") : NULL;
		struct xml_node *rt = items ? xml_node_add_child(&j->a, items, NULL, "retract") : NULL;

		if (rt && xml_attr_set(&j->a, items, "node", n->name) == 0 &&
		    xml_attr_set(&j->a, rt, "id", id) == 0)
			j->notify = msg;
	}
	ps_job_submit(ctx->w, j);
}

/* ---- subscribe, unsubscribe, options ---- */

/*
 * The subscriber JID of a subscribe/unsubscribe/options element: parsed
 * into out. Its bare JID must be the requester's. Returns 0, or -1 after
 * answering (jid-required, invalid-jid / forbidden).
 */
static int ps_sub_jid(struct ps_ctx *ctx, const struct xml_node *el, struct jid *out,
		      const char *mismatch_cond, const char *mismatch_app)
{
	const char *jid = xml_attr_get(el, "jid");

	if (!jid) {
		ps_err(ctx, "bad-request", "jid-required", NULL);
		return -1;
	}
	if (jid_parse(out, jid, strlen(jid)) < 0) {
		ps_err(ctx, "bad-request", "invalid-jid", NULL);
		return -1;
	}
	if (!jid_bare_equal(out, ctx->rq->from)) {
		ps_err(ctx, mismatch_cond, mismatch_app, NULL);
		return -1;
	}
	return 0;
}

/* The subscribe options form (pubsub#subscribe_options) of a subscription. */
static struct xml_node *ps_sub_options_form(struct arena *a, bool deliver, const char *type)
{
	struct xml_node *x = xml_node_new(a, NS_XDATA, "x");
	struct xml_node *f, *v;

	if (!x || xml_attr_set(a, x, "type", type) < 0)
		return NULL;
	f = xml_node_add_child(a, x, NS_XDATA, "field");
	v = f ? xml_node_add_child(a, f, NS_XDATA, "value") : NULL;
	if (!v || xml_attr_set(a, f, "var", "FORM_TYPE") < 0 ||
	    xml_attr_set(a, f, "type", "hidden") < 0 ||
	    xml_node_add_text(a, v, NS_PUBSUB_SUB_OPTIONS, strlen(NS_PUBSUB_SUB_OPTIONS)) < 0)
		return NULL;
	f = xml_node_add_child(a, x, NS_XDATA, "field");
	v = f ? xml_node_add_child(a, f, NS_XDATA, "value") : NULL;
	if (!v || xml_attr_set(a, f, "var", "pubsub#deliver") < 0 ||
	    xml_attr_set(a, f, "type", "boolean") < 0 ||
	    xml_attr_set(a, f, "label", "Enable delivery?") < 0 ||
	    xml_node_add_text(a, v, deliver ? "1" : "0", 1) < 0)
		return NULL;
	return x;
}

/*
 * Reads a submitted subscribe options form: pubsub#deliver (other
 * fields are accepted and ignored: digests, bodies and show-values are
 * not offered). 0, or -EINVAL for a bad value.
 */
static int ps_parse_sub_options(const struct xml_node *x, bool *deliver)
{
	struct arena a;
	int ret = 0;

	arena_init(&a, 512);
	for (const struct xml_node *f = xml_first_element(x); f && !ret; f = xml_next_element(f)) {
		const char *var = xml_attr_get(f, "var");
		const struct xml_node *v;

		if (strcmp(f->name, "field") != 0 || !var || strcmp(var, "pubsub#deliver") != 0)
			continue;
		v = xml_child(f, NS_XDATA, "value");
		ret = ps_parse_bool(v ? xml_text(&a, v) : NULL, deliver);
	}
	arena_release(&a);
	return ret;
}

/* The <subscription/> element of an answer. */
static struct xml_node *ps_sub_element(struct arena *a, struct xml_node *parent,
				       const char *node, const char *jid, const char *subid,
				       enum ps_sub_state state)
{
	struct xml_node *el = xml_node_add_child(a, parent, NULL, "subscription");

	if (!el || (node && xml_attr_set(a, el, "node", node) < 0) ||
	    xml_attr_set(a, el, "jid", jid) < 0 ||
	    (subid && subid[0] && xml_attr_set(a, el, "subid", subid) < 0) ||
	    xml_attr_set(a, el, "subscription", ps_sub_state_name(state)) < 0)
		return NULL;
	return el;
}

/* After a subscription: the last item, when the node sends it on subscription. */
static void ps_send_last_to_new(struct ps_job *j)
{
	struct worker *w = ps_job_worker(j);
	struct ps_node *n = j->node;

	if (n->cfg.persist_items) {
		for (struct ps_item_row *r = j->rows; r; r = r->next)
			ps_send_item_to(w, &j->a, n, r->id, r->payload, r->payload_len, r->created,
					j->target);
	} else if (n->last_id) {
		ps_send_item_to(w, &j->a, n, n->last_id, n->last_payload, n->last_payload_len,
				time(NULL), j->target);
	}
}

/*
 * Completion of a subscribe. When the store decided access (gate), the
 * subscription enters memory only now; then the answer, then the last
 * item when the node sends it on subscription.
 */
static void ps_finish_subscribe(struct ps_job *j, struct session *s)
{
	struct ps_node *n = j->node;
	struct ps_subscription *sub;

	if (j->gate && j->gate->verdict != PS_ALLOW && j->op.req.result == 0) {
		ps_job_deny(j, s, j->gate->verdict);
		return;
	}
	if (j->op.req.result == -ENOENT || n->deleted) {
		ps_job_error(j, s, "item-not-found", NULL, NULL);
		return;
	}
	if (j->op.req.result < 0) {
		ps_job_failed(j, s);
		return;
	}
	/* Decided by the store: the subscription enters memory now. */
	if (j->gate) {
		sub = ps_sub_add(n, j->target, strlen(j->target), j->sub_state, j->subid);
		if (!sub) {
			ps_job_error(j, s, "internal-server-error", NULL, NULL);
			return;
		}
		sub->deliver = j->sub_deliver;
	}
	ps_job_ok(j, s);
	if (n->cfg.send_last != PS_SEND_LAST_NEVER)
		ps_send_last_to_new(j);
}

/*
 * XEP-0060 6.1: subscribe a JID whose bare JID is the requester's, per
 * the node's access model, with optional subscribe options.
 */
static void ps_subscribe(struct ps_ctx *ctx)
{
	const struct xml_node *opts = xml_child(ctx->rq->payload, NS_PUBSUB, "options");
	const struct xml_node *x = opts ? ps_form_get(opts) : NULL;
	struct xml_node *outer = NULL, *el;
	struct ps_subscription *sub;
	struct ps_node *n;
	struct ps_job *j;
	struct jid jid;
	bool deliver = true;
	int access;

	if (ps_sub_jid(ctx, ctx->op, &jid, "bad-request", "invalid-jid") < 0)
		return;
	if (opts && (xml_attr_get(opts, "node") || xml_attr_get(opts, "jid"))) {
		ps_err(ctx, "bad-request", NULL, "options with subscribe name neither node nor jid");
		return;
	}
	if (x && ps_parse_sub_options(x, &deliver) < 0) {
		ps_err(ctx, "bad-request", "invalid-options", NULL);
		return;
	}
	n = ps_node_of(ctx, ctx->op);
	if (!n)
		return;
	j = ps_job_new(ctx, ps_finish_subscribe);
	if (!j)
		return;
	ps_job_set_node(j, n);
	j->target = ps_dup(j, jid.buf);
	access = ps_check_access(ctx, n, j);
	if (!access || !j->target) {
		if (access)
			ps_err(ctx, "internal-server-error", NULL, NULL);
		ps_job_drop(ctx, j);
		return;
	}
	/*
	 * Two ways from here: the store decides (owner offline, roster model)
	 * and the subscription is written there only if allowed, or access
	 * is known and the subscription exists in memory at once.
	 */
	sub = ps_sub_find(n, jid.buf, jid.len);
	if (access == 2 && !sub) {
		/* The store decides; the subscription is written there if allowed. */
		char subid[PS_SUBID_LEN + 1];
		struct ps_mut *m = ps_mut_add(j, PS_MUT_SUB_PUT, n->id);

		ps_random_hex(subid, PS_SUBID_LEN);
		j->subid = ps_dup(j, subid);
		j->sub_state = PS_SUB_SUBSCRIBED;
		j->sub_deliver = deliver;
		if (!m || !j->subid) {
			ps_err(ctx, "internal-server-error", NULL, NULL);
			ps_job_drop(ctx, j);
			return;
		}
		m->jid = j->target;
		m->subid = j->subid;
		m->value = "subscribed";
		m->options = deliver ? "" : "deliver=0";
	} else {
		/* One subscription per JID: a repeated request gets the current one (6.1.6). */
		bool fresh = !sub;

		j->gate = NULL;
		if (!sub)
			sub = ps_sub_add(n, jid.buf, jid.len, PS_SUB_SUBSCRIBED, NULL);
		if (!sub) {
			ps_err(ctx, "internal-server-error", NULL, NULL);
			ps_job_drop(ctx, j);
			return;
		}
		if (fresh || x)
			sub->deliver = deliver;
		j->subid = ps_dup(j, sub->subid);
		j->sub_state = sub->state;
		if (ps_put_sub(j, n, sub) < 0) {
			ps_err(ctx, "internal-server-error", NULL, NULL);
			ps_job_drop(ctx, j);
			return;
		}
	}
	if (n->cfg.persist_items && n->cfg.send_last != PS_SEND_LAST_NEVER)
		j->read_last = true;
	el = ps_wrap(&j->a, &outer, NS_PUBSUB, "subscription", NULL);
	if (el) {
		xml_node_remove(el);
		el = ps_sub_element(&j->a, outer, n->name, jid.buf, j->subid, j->sub_state);
	}
	j->reply = el ? outer : NULL;
	log_debug("pubsub.subscribe", "node_id=%" PRIu64 " deferred=%d", n->id, access == 2);
	ps_job_submit(ctx->w, j);
}

/*
 * The requester's subscription named by el (jid, optional subid), or NULL
 * after answering (not-subscribed, invalid-subid).
 */
static struct ps_subscription *ps_own_sub(struct ps_ctx *ctx, struct ps_node *n,
					  const struct xml_node *el, const struct jid *jid)
{
	const char *subid = xml_attr_get(el, "subid");
	struct ps_subscription *sub = ps_sub_find(n, jid->buf, jid->len);

	if (!sub) {
		ps_err(ctx, "unexpected-request", "not-subscribed", NULL);
		return NULL;
	}
	if (subid && subid[0] && strcmp(subid, sub->subid) != 0) {
		ps_err(ctx, "not-acceptable", "invalid-subid", NULL);
		return NULL;
	}
	return sub;
}

/* Completion of a plain write: answered once it is stored (a gone node is no error). */
static void ps_finish_write(struct ps_job *j, struct session *s)
{
	if (j->op.req.result < 0 && j->op.req.result != -ENOENT) {
		ps_job_failed(j, s);
		return;
	}
	ps_job_ok(j, s);
}

/* XEP-0060 6.2: end one of the requester's own subscriptions. */
static void ps_unsubscribe(struct ps_ctx *ctx)
{
	struct xml_node *outer = NULL, *el;
	struct ps_subscription *sub;
	struct ps_node *n;
	struct ps_job *j;
	struct jid jid;

	if (ps_sub_jid(ctx, ctx->op, &jid, "forbidden", NULL) < 0)
		return;
	n = ps_node_of(ctx, ctx->op);
	if (!n || !(sub = ps_own_sub(ctx, n, ctx->op, &jid)))
		return;
	j = ps_job_new(ctx, ps_finish_write);
	if (!j)
		return;
	ps_job_set_node(j, n);
	el = ps_wrap(&j->a, &outer, NS_PUBSUB, "subscription", NULL);
	if (el) {
		xml_node_remove(el);
		el = ps_sub_element(&j->a, outer, n->name, jid.buf, sub->subid, PS_SUB_NONE);
	}
	j->reply = el ? outer : NULL;
	if (ps_del_sub(j, n, jid.buf) < 0) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		ps_job_drop(ctx, j);
		return;
	}
	ps_sub_remove(n, sub);
	ps_job_submit(ctx->w, j);
}

/* XEP-0060 6.3: the subscribe options form of one's subscription. */
static void ps_options_get(struct ps_ctx *ctx)
{
	struct arena *a = iq_arena(ctx->rq);
	struct xml_node *outer = NULL, *el, *x;
	struct ps_subscription *sub;
	struct ps_node *n;
	struct jid jid;

	if (ps_sub_jid(ctx, ctx->op, &jid, "forbidden", NULL) < 0)
		return;
	n = ps_node_of(ctx, ctx->op);
	if (!n || !(sub = ps_own_sub(ctx, n, ctx->op, &jid)))
		return;
	el = ps_wrap(a, &outer, NS_PUBSUB, "options", n->name);
	x = el ? ps_sub_options_form(a, sub->deliver, "form") : NULL;
	if (!x || xml_attr_set(a, el, "jid", jid.buf) < 0 ||
	    xml_attr_set(a, el, "subid", sub->subid) < 0) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	xml_node_append(el, x);
	ps_ok(ctx, outer);
}

/* XEP-0060 6.3.5: new subscribe options (pubsub#deliver). */
static void ps_options_set(struct ps_ctx *ctx)
{
	const struct xml_node *x = ps_form_get(ctx->op);
	struct ps_subscription *sub;
	struct ps_node *n;
	struct ps_job *j;
	struct jid jid;
	bool deliver;

	if (ps_sub_jid(ctx, ctx->op, &jid, "forbidden", NULL) < 0)
		return;
	n = ps_node_of(ctx, ctx->op);
	if (!n || !(sub = ps_own_sub(ctx, n, ctx->op, &jid)))
		return;
	deliver = sub->deliver;
	if (!x || ps_parse_sub_options(x, &deliver) < 0) {
		ps_err(ctx, "bad-request", "invalid-options", NULL);
		return;
	}
	j = ps_job_new(ctx, ps_finish_write);
	if (!j)
		return;
	ps_job_set_node(j, n);
	sub->deliver = deliver;
	if (ps_put_sub(j, n, sub) < 0) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		ps_job_drop(ctx, j);
		return;
	}
	ps_job_submit(ctx->w, j);
}

/* <default/> in the pubsub namespace: the default subscription options (6.4). */
static void ps_sub_default(struct ps_ctx *ctx)
{
	struct arena *a = iq_arena(ctx->rq);
	const char *name = xml_attr_get(ctx->op, "node");
	struct xml_node *outer = NULL, *el, *x;

	if (name && name[0] && !ps_node_find(ctx->host, name, strlen(name))) {
		ps_err(ctx, "item-not-found", NULL, NULL);
		return;
	}
	el = ps_wrap(a, &outer, NS_PUBSUB, "default", name && name[0] ? name : NULL);
	x = el ? ps_sub_options_form(a, true, "result") : NULL;
	if (!x) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	xml_node_append(el, x);
	ps_ok(ctx, outer);
}

/* ---- items ---- */

/* Appends <item id [publisher]>payload</item> for a stored row. */
static int ps_append_item(struct worker *w, struct arena *a, struct xml_node *items,
			  const char *id, const char *payload, size_t len)
{
	struct xml_node *it = xml_node_add_child(a, items, NULL, "item");
	struct xml_node *p;

	if (!it || xml_attr_set(a, it, "id", id) < 0)
		return -ENOMEM;
	p = ps_payload_tree(w, a, payload, len);
	if (p)
		xml_node_append(it, p);
	return 0;
}

/* Completion of an items request: the rows read, as <item/>s (oldest first). */
static void ps_finish_items(struct ps_job *j, struct session *s)
{
	struct worker *w = ps_job_worker(j);
	struct xml_node *outer = NULL, *items;

	if (j->gate && j->op.req.result == 0 && j->gate->verdict != PS_ALLOW) {
		ps_job_deny(j, s, j->gate->verdict);
		return;
	}
	if (j->op.req.result < 0) {
		ps_job_failed(j, s);
		return;
	}
	if (!s && !ps_requester_remote(w, &j->op))
		return;
	items = ps_wrap(&j->a, &outer, NS_PUBSUB, "items", j->node->name);
	for (struct ps_item_row *r = j->rows; items && r; r = r->next)
		if (ps_append_item(w, &j->a, items, r->id, r->payload, r->payload_len) < 0)
			items = NULL;
	/* A node without persistent items answers with its last one (6.5.7). */
	if (items && !j->node->cfg.persist_items && j->node->last_id && !j->read_nids &&
	    ps_append_item(w, &j->a, items, j->node->last_id, j->node->last_payload,
			   j->node->last_payload_len) < 0)
		items = NULL;
	if (!items) {
		ps_job_error(j, s, "internal-server-error", NULL, NULL);
		return;
	}
	j->reply = outer;
	ps_job_ok(j, s);
}

/* A node that does not persist items answers with its last item, if any (6.5.7). */
static void ps_items_transient(struct ps_ctx *ctx, struct ps_node *n, unsigned nids,
			       const struct xml_node *first_id)
{
	struct arena *a = iq_arena(ctx->rq);
	struct xml_node *outer = NULL, *items = ps_wrap(a, &outer, NS_PUBSUB, "items", n->name);
	bool want = n->last_id != NULL;

	/* Asked by id: only when one of the ids is the last item's. */
	if (want && nids) {
		want = false;
		for (const struct xml_node *it = first_id; it; it = xml_next_element(it)) {
			const char *id = xml_attr_get(it, "id");

			if (id && strcmp(id, n->last_id) == 0)
				want = true;
		}
	}
	if (!items || (want && ps_append_item(ctx->w, a, items, n->last_id, n->last_payload,
					      n->last_payload_len) < 0)) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	ps_ok(ctx, outer);
}

/*
 * XEP-0060 6.5: items of a node, all of them, the newest max_items or
 * those named by id, for whoever the access model admits.
 */
static void ps_items(struct ps_ctx *ctx)
{
	const char *max_s = xml_attr_get(ctx->op, "max_items");
	const struct xml_node *first = xml_child(ctx->op, NS_PUBSUB, "item");
	struct ps_node *n;
	struct ps_job *j;
	unsigned long max = 0;
	size_t nids = 0;
	int access;

	if (max_s) {
		char *end;

		errno = 0;
		max = strtoul(max_s, &end, 10);
		if (errno || *end || max_s[0] < '0' || max_s[0] > '9' || max == 0 ||
		    max > UINT32_MAX) {
			ps_err(ctx, "bad-request", NULL, "max_items must be a positive number");
			return;
		}
	}
	for (const struct xml_node *it = first; it; it = xml_next_element(it)) {
		const char *id = xml_attr_get(it, "id");

		if (strcmp(it->name, "item") != 0 || !id || !id[0] || strlen(id) > PS_ITEM_ID_MAX) {
			ps_err(ctx, "bad-request", NULL, "each requested item needs an id");
			return;
		}
		if (++nids > ps_lim.max_items) {
			ps_err(ctx, "policy-violation", NULL, "too many item ids");
			return;
		}
	}
	n = ps_node_of(ctx, ctx->op);
	if (!n)
		return;
	j = ps_job_new(ctx, ps_finish_items);
	if (!j)
		return;
	ps_job_set_node(j, n);
	access = ps_check_access(ctx, n, j);
	if (!access) {
		ps_job_drop(ctx, j);
		return;
	}
	if (!n->cfg.persist_items && access == 1) {
		ps_job_drop(ctx, j);
		ps_items_transient(ctx, n, (unsigned)nids, first);
		return;
	}
	j->read_items = n->cfg.persist_items;
	j->read_max = (uint32_t)max;
	if (nids) {
		size_t i = 0;

		j->read_ids = arena_alloc(&j->a, nids * sizeof(*j->read_ids));
		for (const struct xml_node *it = first; j->read_ids && it; it = xml_next_element(it))
			if (!(j->read_ids[i++] = ps_dup(j, xml_attr_get(it, "id"))))
				j->read_ids = NULL;
		if (!j->read_ids) {
			ps_err(ctx, "internal-server-error", NULL, NULL);
			ps_job_drop(ctx, j);
			return;
		}
		j->read_nids = nids;
	}
	ps_job_submit(ctx->w, j);
}

/* ---- Entity subscriptions and affiliations (5.6, 5.7) ---- */

/* XEP-0060 5.6: the requester's subscriptions on this service (or one node). */
static void ps_entity_subscriptions(struct ps_ctx *ctx)
{
	struct arena *a = iq_arena(ctx->rq);
	const char *name = xml_attr_get(ctx->op, "node");
	struct xml_node *outer = NULL, *list = ps_wrap(a, &outer, NS_PUBSUB, "subscriptions",
						       name && name[0] ? name : NULL);

	for (const struct ps_node *n = ctx->host ? ctx->host->nodes : NULL; list && n; n = n->next) {
		if (name && name[0] && strcmp(name, n->name) != 0)
			continue;
		for (const struct ps_subscription *s = n->subs; list && s; s = s->next)
			if (s->bare_len == ctx->from_bare_len &&
			    memcmp(s->jid, ctx->from_bare, s->bare_len) == 0 &&
			    !ps_sub_element(a, list, n->name, s->jid, s->subid, s->state))
				list = NULL;
	}
	if (!list) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	ps_ok(ctx, outer);
}

/* XEP-0060 5.7: the requester's affiliations on this service (or one node). */
static void ps_entity_affiliations(struct ps_ctx *ctx)
{
	struct arena *a = iq_arena(ctx->rq);
	const char *name = xml_attr_get(ctx->op, "node");
	struct xml_node *outer = NULL, *list = ps_wrap(a, &outer, NS_PUBSUB, "affiliations",
						       name && name[0] ? name : NULL);

	for (const struct ps_node *n = ctx->host ? ctx->host->nodes : NULL; list && n; n = n->next) {
		enum ps_affil af = ps_affil_get(n, ctx->from_bare, ctx->from_bare_len);
		struct xml_node *el;

		if ((name && name[0] && strcmp(name, n->name) != 0) || af == PS_AFFIL_NONE)
			continue;
		el = xml_node_add_child(a, list, NULL, "affiliation");
		if (!el || xml_attr_set(a, el, "node", n->name) < 0 ||
		    xml_attr_set(a, el, "affiliation", ps_affil_name(af)) < 0)
			list = NULL;
	}
	if (!list) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	ps_ok(ctx, outer);
}

/* ---- Owner: configure, default, delete, purge ---- */

/* The node of an owner request; NULL after answering (not found, not owner). */
static struct ps_node *ps_owned_node(struct ps_ctx *ctx)
{
	struct ps_node *n = ps_node_of(ctx, ctx->op);

	if (n && !ps_is_owner(ctx, n)) {
		ps_err(ctx, "forbidden", NULL, NULL);
		return NULL;
	}
	return n;
}

/* XEP-0060 8.2: the node_config form with the node's current values. */
static void ps_configure_get(struct ps_ctx *ctx)
{
	struct arena *a = iq_arena(ctx->rq);
	struct ps_node *n = ps_owned_node(ctx);
	struct xml_node *outer = NULL, *el, *x;

	if (!n)
		return;
	el = ps_wrap(a, &outer, NS_PUBSUB_OWNER, "configure", n->name);
	x = el ? ps_config_form(a, &n->cfg, "form", &ps_lim) : NULL;
	if (!x) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	xml_node_append(el, x);
	ps_ok(ctx, outer);
}

/* Completion of a configure: answered, then notify_config's notification. */
static void ps_finish_configure(struct ps_job *j, struct session *s)
{
	if (j->op.req.result < 0 && j->op.req.result != -ENOENT) {
		ps_job_failed(j, s);
		return;
	}
	ps_job_ok(j, s);
	if (j->notify && !j->node->deleted)
		ps_notify(ps_job_worker(j), j->node, j->notify, false, j->subgates);
}

/*
 * XEP-0060 8.2.5: a submitted node_config form, all or nothing. Items
 * the new configuration no longer keeps (persist_items off, a lower
 * max_items) are removed in the same write.
 */
static void ps_configure_set(struct ps_ctx *ctx)
{
	const struct xml_node *x = ps_form_get(ctx->op);
	struct ps_form_error ferr = { 0 };
	struct ps_node *n = ps_owned_node(ctx);
	struct ps_config cfg;
	struct ps_job *j;
	bool was_persistent;
	uint32_t old_max;
	int ret;

	if (!n)
		return;
	if (!x) {
		ps_err(ctx, "bad-request", NULL, "no configuration form");
		return;
	}
	if (ps_config_copy(&cfg, &n->cfg) < 0) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	ret = ps_config_apply_form(&cfg, x, &ps_lim, false, &ferr);
	if (ret < 0) {
		ps_config_free(&cfg);
		if (ret == -ENOMEM)
			ps_err(ctx, "internal-server-error", NULL, NULL);
		else
			ps_err(ctx, ferr.cond, ferr.app, ferr.text);
		return;
	}
	j = ps_job_new(ctx, ps_finish_configure);
	if (!j) {
		ps_config_free(&cfg);
		return;
	}
	ps_job_set_node(j, n);
	was_persistent = n->cfg.persist_items;
	old_max = ps_config_max_items(&n->cfg, &ps_lim);
	ps_config_free(&n->cfg);
	n->cfg = cfg;
	if (ps_put_config(j, n) < 0)
		goto nomem;
	/* Items the new configuration does not keep go now. */
	if (was_persistent && !n->cfg.persist_items) {
		if (!ps_mut_add(j, PS_MUT_ITEMS_PURGE, n->id))
			goto nomem;
	} else if (n->cfg.persist_items && ps_config_max_items(&n->cfg, &ps_lim) < old_max) {
		struct ps_mut *m = ps_mut_add(j, PS_MUT_ITEMS_TRIM, n->id);

		if (!m)
			goto nomem;
		m->max_items = ps_config_max_items(&n->cfg, &ps_lim);
	}
	if (n->cfg.persist_items) {
		free(n->last_id);
		free(n->last_payload);
		n->last_id = n->last_payload = NULL;
	}
	/* 8.2.5.4: notify_config sends the new configuration (with payloads: the form). */
	if (n->cfg.notify_config && n->cfg.deliver_notifications) {
		struct xml_node *el = NULL;

		j->notify = ps_simple_event(&j->a, n, "configuration", &el);
		if (el && n->cfg.deliver_payloads) {
			struct xml_node *form = ps_config_form(&j->a, &n->cfg, "result", &ps_lim);

			if (form)
				xml_node_append(el, form);
		}
	}
	ps_job_submit(ctx->w, j);
	return;
nomem:
	ps_err(ctx, "internal-server-error", NULL, NULL);
	ps_job_drop(ctx, j);
}

/* XEP-0060 8.3: the default node configuration (leaf nodes only). */
static void ps_owner_default(struct ps_ctx *ctx)
{
	struct arena *a = iq_arena(ctx->rq);
	const char *type = xml_attr_get(ctx->op, "type");
	struct xml_node *outer = NULL, *el, *x;
	struct ps_config cfg;

	if (type && strcmp(type, "leaf") != 0) {
		ps_unsupported(ctx, "collections");
		return;
	}
	ps_config_default(&cfg, ctx->pep);
	el = ps_wrap(a, &outer, NS_PUBSUB_OWNER, "default", NULL);
	x = el ? ps_config_form(a, &cfg, "form", &ps_lim) : NULL;
	ps_config_free(&cfg);
	if (!x) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	xml_node_append(el, x);
	ps_ok(ctx, outer);
}

/* Completion of a delete: answered, then every subscriber told. */
static void ps_finish_delete(struct ps_job *j, struct session *s)
{
	if (j->op.req.result < 0) {
		ps_job_failed(j, s);
		return;
	}
	ps_job_ok(j, s);
	/* The node left the indexes already; its subscription list is still here. */
	ps_notify(ps_job_worker(j), j->node, j->notify, true, j->subgates);
}

/*
 * XEP-0060 8.4: delete a node. It leaves memory at once (a new node
 * may take the name); its subscriptions are told once the store agrees.
 */
static void ps_delete(struct ps_ctx *ctx)
{
	const struct xml_node *redirect = xml_child(ctx->op, NS_PUBSUB_OWNER, "redirect");
	const char *uri = redirect ? xml_attr_get(redirect, "uri") : NULL;
	struct ps_node *n = ps_owned_node(ctx);
	struct xml_node *el = NULL;
	struct ps_job *j;

	if (!n)
		return;
	j = ps_job_new(ctx, ps_finish_delete);
	if (!j)
		return;
	ps_job_set_node(j, n);
	if (!ps_mut_add(j, PS_MUT_NODE_DEL, n->id)) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		ps_job_drop(ctx, j);
		return;
	}
	/* 8.4.2: every subscriber is told (pending ones too), whatever notify_delete says. */
	j->notify = ps_simple_event(&j->a, n, "delete", &el);
	if (el && uri) {
		struct xml_node *r = xml_node_add_child(&j->a, el, NULL, "redirect");

		if (r)
			xml_attr_set(&j->a, r, "uri", uri);
	}
	log_info("pubsub.node_deleted", "host=%s node_id=%" PRIu64, ctx->host_jid, n->id);
	ps_node_remove(n);
	ps_job_submit(ctx->w, j);
}

/* Completion of a purge: answered, then one <purge/> per subscriber. */
static void ps_finish_purge(struct ps_job *j, struct session *s)
{
	if (j->op.req.result < 0) {
		ps_job_failed(j, s);
		return;
	}
	ps_job_ok(j, s);
	if (j->notify && !j->node->deleted)
		ps_notify(ps_job_worker(j), j->node, j->notify, false, j->subgates);
}

/* XEP-0060 8.5: remove every item of a node that persists items. */
static void ps_purge(struct ps_ctx *ctx)
{
	struct ps_node *n = ps_owned_node(ctx);
	struct ps_job *j;

	if (!n)
		return;
	if (!n->cfg.persist_items) {
		ps_unsupported(ctx, "persistent-items");
		return;
	}
	j = ps_job_new(ctx, ps_finish_purge);
	if (!j)
		return;
	ps_job_set_node(j, n);
	if (!ps_mut_add(j, PS_MUT_ITEMS_PURGE, n->id)) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		ps_job_drop(ctx, j);
		return;
	}
	/* 8.5.2: one <purge/> per subscriber, when deletions are notified at all. */
	if (n->cfg.notify_retract && n->cfg.deliver_notifications)
		j->notify = ps_simple_event(&j->a, n, "purge", NULL);
	ps_job_submit(ctx->w, j);
}

/* ---- Owner: subscriptions and affiliations (8.8, 8.9) ---- */

/* XEP-0060 8.8.1: the node's subscriptions (subscribed and unconfigured). */
static void ps_owner_subs_get(struct ps_ctx *ctx)
{
	struct arena *a = iq_arena(ctx->rq);
	struct ps_node *n = ps_owned_node(ctx);
	struct xml_node *outer = NULL, *list;

	if (!n)
		return;
	list = ps_wrap(a, &outer, NS_PUBSUB_OWNER, "subscriptions", n->name);
	for (const struct ps_subscription *s = n->subs; list && s; s = s->next)
		if ((s->state == PS_SUB_SUBSCRIBED || s->state == PS_SUB_UNCONFIGURED) &&
		    !ps_sub_element(a, list, NULL, s->jid, s->subid, s->state))
			list = NULL;
	if (!list) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	ps_ok(ctx, outer);
}

/* One entry of an owner's subscriptions set, checked before anything changes. */
struct ps_sub_change {
	struct jid jid;
	enum ps_sub_state state;
	bool has_state;
};

/*
 * XEP-0060 8.8.2: the owner changes subscriptions (none removes one);
 * every entry is checked before anything changes, and each subscriber
 * whose subscription changed is told.
 */
static void ps_owner_subs_set(struct ps_ctx *ctx)
{
	struct ps_node *n = ps_owned_node(ctx);
	struct ps_sub_change *ch;
	struct ps_job *j;
	size_t count = 0, i = 0;

	if (!n)
		return;
	for (const struct xml_node *el = xml_first_element(ctx->op); el; el = xml_next_element(el))
		count++;
	if (count > PS_FORM_FIELDS_MAX) {
		ps_err(ctx, "policy-violation", NULL, "too many changes in one request");
		return;
	}
	ch = arena_alloc(iq_arena(ctx->rq), (count ? count : 1) * sizeof(*ch));
	if (!ch) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	/* All or nothing: every entry is checked first (8.8.2.4). */
	for (const struct xml_node *el = xml_first_element(ctx->op); el; el = xml_next_element(el)) {
		const char *jid = xml_attr_get(el, "jid"), *state = xml_attr_get(el, "subscription");
		int st = state ? (int)ps_sub_state_parse(state) : 0;

		if (strcmp(el->name, "subscription") != 0 || !jid ||
		    jid_parse(&ch[i].jid, jid, strlen(jid)) < 0 || (state && st < 0)) {
			ps_err(ctx, "not-acceptable", NULL, "bad subscription entry");
			return;
		}
		ch[i].has_state = state != NULL;
		ch[i].state = state ? (enum ps_sub_state)st : PS_SUB_NONE;
		i++;
	}
	j = ps_job_new(ctx, ps_finish_write);
	if (!j)
		return;
	ps_job_set_node(j, n);
	for (i = 0; i < count; i++) {
		struct ps_subscription *sub = ps_sub_find(n, ch[i].jid.buf, ch[i].jid.len);
		int ret = 0;

		if (!ch[i].has_state)
			continue;
		if (ch[i].state == PS_SUB_NONE) {
			if (!sub)
				continue;
			ret = ps_del_sub(j, n, sub->jid);
			ps_notify_subscription(ctx->w, &j->a, n, sub->jid, PS_SUB_NONE, sub->subid);
			ps_sub_remove(n, sub);
		} else {
			if (!sub)
				sub = ps_sub_add(n, ch[i].jid.buf, ch[i].jid.len, ch[i].state, NULL);
			if (!sub) {
				ret = -ENOMEM;
			} else {
				sub->state = ch[i].state;
				ret = ps_put_sub(j, n, sub);
				ps_notify_subscription(ctx->w, &j->a, n, sub->jid, sub->state,
						       sub->subid);
			}
		}
		if (ret < 0) {
			ps_err(ctx, "internal-server-error", NULL, NULL);
			ps_job_drop(ctx, j);
			return;
		}
	}
	ps_job_submit(ctx->w, j);
}

/* XEP-0060 8.9.1: every affiliation of the node (none is never listed). */
static void ps_owner_affils_get(struct ps_ctx *ctx)
{
	struct arena *a = iq_arena(ctx->rq);
	struct ps_node *n = ps_owned_node(ctx);
	struct xml_node *outer = NULL, *list;

	if (!n)
		return;
	list = ps_wrap(a, &outer, NS_PUBSUB_OWNER, "affiliations", n->name);
	for (const struct ps_affiliation *af = n->affils; list && af; af = af->next) {
		struct xml_node *el = xml_node_add_child(a, list, NULL, "affiliation");

		if (!el || xml_attr_set(a, el, "jid", af->jid) < 0 ||
		    xml_attr_set(a, el, "affiliation", ps_affil_name(af->affil)) < 0)
			list = NULL;
	}
	if (!list) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	ps_ok(ctx, outer);
}

struct ps_affil_change {
	struct jid jid;			/* bare */
	enum ps_affil affil;
};

/* Checks an owner's affiliation changes (8.9.2.4). 0, or -1 after answering. */
static int ps_affil_changes(struct ps_ctx *ctx, const struct ps_node *n,
			    struct ps_affil_change *ch, size_t count)
{
	size_t i = 0, owners = ps_owner_count(n);

	for (const struct xml_node *el = xml_first_element(ctx->op); el; el = xml_next_element(el)) {
		const char *jid = xml_attr_get(el, "jid"), *aff = xml_attr_get(el, "affiliation");
		int af = aff ? (int)ps_affil_parse(aff) : -1;
		enum ps_affil old;

		if (strcmp(el->name, "affiliation") != 0 || !jid || af < 0 ||
		    jid_parse(&ch[i].jid, jid, strlen(jid)) < 0) {
			ps_err(ctx, "bad-request", NULL, "bad affiliation entry");
			return -1;
		}
		jid_to_bare(&ch[i].jid);
		for (size_t k = 0; k < i; k++)
			if (jid_equal(&ch[k].jid, &ch[i].jid)) {
				ps_err(ctx, "bad-request", NULL, "an entity named twice");
				return -1;
			}
		/* The PEP account stays the owner of its own nodes. */
		if (n->host->pep && ch[i].jid.len == n->host->jid_len &&
		    memcmp(ch[i].jid.buf, n->host->jid, n->host->jid_len) == 0 &&
		    af != PS_AFFIL_OWNER) {
			ps_err(ctx, "not-acceptable", NULL, "the account owns its PEP nodes");
			return -1;
		}
		old = ps_affil_get(n, ch[i].jid.buf, ch[i].jid.len);
		if (old == PS_AFFIL_OWNER && af != PS_AFFIL_OWNER)
			owners--;
		else if (old != PS_AFFIL_OWNER && af == PS_AFFIL_OWNER)
			owners++;
		ch[i].affil = (enum ps_affil)af;
		i++;
	}
	(void)count;
	/* A node keeps at least one owner (8.9.2.4). */
	if (owners == 0) {
		ps_err(ctx, "not-acceptable", NULL, "the node would have no owner");
		return -1;
	}
	return 0;
}

/*
 * XEP-0060 8.9.2: the owner changes affiliations, all or nothing (see
 * ps_affil_changes); outcasts lose their subscriptions.
 */
static void ps_owner_affils_set(struct ps_ctx *ctx)
{
	struct ps_node *n = ps_owned_node(ctx);
	struct ps_affil_change *ch;
	struct ps_job *j;
	size_t count = 0;

	if (!n)
		return;
	for (const struct xml_node *el = xml_first_element(ctx->op); el; el = xml_next_element(el))
		count++;
	if (count > PS_FORM_FIELDS_MAX) {
		ps_err(ctx, "policy-violation", NULL, "too many changes in one request");
		return;
	}
	ch = arena_alloc(iq_arena(ctx->rq), (count ? count : 1) * sizeof(*ch));
	if (!ch) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	if (ps_affil_changes(ctx, n, ch, count) < 0)
		return;
	j = ps_job_new(ctx, ps_finish_write);
	if (!j)
		return;
	ps_job_set_node(j, n);
	for (size_t i = 0; i < count; i++) {
		const struct jid *bj = &ch[i].jid;
		struct ps_subscription *sub, *next;
		int ret = ps_affil_set(n, bj->buf, bj->len, ch[i].affil);

		if (!ret)
			ret = ps_put_affil(j, n, bj->buf, ch[i].affil);
		/* An outcast loses its subscriptions (4.1), and is told. */
		for (sub = n->subs; !ret && ch[i].affil == PS_AFFIL_OUTCAST && sub; sub = next) {
			next = sub->next;
			if (sub->bare_len != bj->len || memcmp(sub->jid, bj->buf, bj->len) != 0)
				continue;
			ret = ps_del_sub(j, n, sub->jid);
			ps_notify_subscription(ctx->w, &j->a, n, sub->jid, PS_SUB_NONE, sub->subid);
			ps_sub_remove(n, sub);
		}
		if (ret < 0) {
			ps_err(ctx, "internal-server-error", NULL, NULL);
			ps_job_drop(ctx, j);
			return;
		}
	}
	ps_job_submit(ctx->w, j);
}

/* ---- Dispatch ---- */

struct ps_action {
	const char *ns;
	const char *name;
	bool set;
	void (*fn)(struct ps_ctx *ctx);
};

static const struct ps_action ps_actions[] = {
	{ NS_PUBSUB, "create", true, ps_create },
	{ NS_PUBSUB, "publish", true, ps_publish },
	{ NS_PUBSUB, "retract", true, ps_retract },
	{ NS_PUBSUB, "subscribe", true, ps_subscribe },
	{ NS_PUBSUB, "unsubscribe", true, ps_unsubscribe },
	{ NS_PUBSUB, "options", false, ps_options_get },
	{ NS_PUBSUB, "options", true, ps_options_set },
	{ NS_PUBSUB, "items", false, ps_items },
	{ NS_PUBSUB, "subscriptions", false, ps_entity_subscriptions },
	{ NS_PUBSUB, "affiliations", false, ps_entity_affiliations },
	{ NS_PUBSUB, "default", false, ps_sub_default },
	{ NS_PUBSUB_OWNER, "configure", false, ps_configure_get },
	{ NS_PUBSUB_OWNER, "configure", true, ps_configure_set },
	{ NS_PUBSUB_OWNER, "default", false, ps_owner_default },
	{ NS_PUBSUB_OWNER, "delete", true, ps_delete },
	{ NS_PUBSUB_OWNER, "purge", true, ps_purge },
	{ NS_PUBSUB_OWNER, "subscriptions", false, ps_owner_subs_get },
	{ NS_PUBSUB_OWNER, "subscriptions", true, ps_owner_subs_set },
	{ NS_PUBSUB_OWNER, "affiliations", false, ps_owner_affils_get },
	{ NS_PUBSUB_OWNER, "affiliations", true, ps_owner_affils_set },
};

#define PS_NACTIONS (sizeof(ps_actions) / sizeof(ps_actions[0]))

/*
 * Sets up ctx for rq: the host (the service, or the PEP account: the
 * requester's own in scope ACCOUNT, the addressed one in CONTACT). 0, or
 * -1 after answering.
 */
static int ps_ctx_init(struct ps_ctx *ctx, struct iq_request *rq, bool pep)
{
	const char *id = xml_attr_get(rq->iq, "id");
	const struct jid *target;

	memset(ctx, 0, sizeof(*ctx));
	ctx->rq = rq;
	ctx->w = rq->w;
	ctx->pep = pep;
	ctx->ns = strcmp(rq->payload->ns, NS_PUBSUB_OWNER) == 0 ? NS_PUBSUB_OWNER : NS_PUBSUB;
	if (!id || strlen(id) > IQ_ASYNC_ID_MAX || !rq->from || (rq->conn && !rq->conn->sess)) {
		iq_reply_error(rq, "bad-request", "id too long");
		return -1;
	}
	ctx->sess = iq_async_init_sync(&ctx->sync, rq, ctx->ns, "pubsub");
	jid_bare_str(rq->from, ctx->from_bare, sizeof(ctx->from_bare));
	ctx->from_bare_len = strlen(ctx->from_bare);
	if (pep) {
		target = rq->scope == IQ_SCOPE_CONTACT && rq->to ? rq->to : rq->from;
		jid_bare_str(target, ctx->host_jid, sizeof(ctx->host_jid));
		ctx->host_len = strlen(ctx->host_jid);
		ctx->user_len = target->local_len;
		ctx->owner_account = ctx->host_len == ctx->from_bare_len &&
				     memcmp(ctx->host_jid, ctx->from_bare, ctx->host_len) == 0;
	} else {
		memcpy(ctx->host_jid, ps_service_jid, ps_service_len + 1);
		ctx->host_len = ps_service_len;
	}
	ctx->host = ps_host_find(ctx->host_jid, ctx->host_len);
	ctx->is_set = strcmp(stanza_type(rq->iq), "set") == 0;
	ctx->op = xml_first_element(rq->payload);
	return 0;
}

/* Every action's 'node' attribute is a NodeID: bounded before anything else. */
static int ps_check_name_attr(struct ps_ctx *ctx, const struct xml_node *op)
{
	const char *name = xml_attr_get(op, "node");

	if (name && strlen(name) > PS_NODE_NAME_MAX) {
		ps_err(ctx, "not-acceptable", NULL, "NodeID too long");
		return -1;
	}
	return 0;
}

/* Runs the action of a <pubsub/> payload, or answers that there is none such. */
static void ps_dispatch(struct ps_ctx *ctx)
{
	const struct xml_node *op = ctx->op;
	bool known = false;

	if (!op || strcmp(op->ns, ctx->ns) != 0) {
		ps_err(ctx, "bad-request", NULL, "no pubsub action");
		return;
	}
	if (ps_check_name_attr(ctx, op) < 0)
		return;
	for (size_t i = 0; i < PS_NACTIONS; i++) {
		const struct ps_action *a = &ps_actions[i];

		if (strcmp(a->ns, ctx->ns) != 0 || strcmp(a->name, op->name) != 0)
			continue;
		known = true;
		if (a->set == ctx->is_set) {
			a->fn(ctx);
			return;
		}
	}
	if (known)
		ps_err(ctx, "bad-request", NULL, "wrong iq type for this action");
	else
		ps_err(ctx, "feature-not-implemented", NULL, NULL);
}

void pep_iq_get(struct iq_request *rq)
{
	struct ps_ctx ctx;

	if (ps_ctx_init(&ctx, rq, true) == 0)
		ps_dispatch(&ctx);
}

void pep_iq_set(struct iq_request *rq)
{
	pep_iq_get(rq);
}

/* ---- Disco (XEP-0030; XEP-0060 5.1-5.5) ---- */

/* Features of a PEP service: the server's and every account's disco#info (XEP-0163 9). */
static const char *const ps_pep_features[] = {
	NS_PUBSUB,
	NS_PUBSUB "#access-open",
	NS_PUBSUB "#access-presence",
	NS_PUBSUB "#access-roster",
	NS_PUBSUB "#access-whitelist",
	NS_PUBSUB "#auto-create",
	NS_PUBSUB "#auto-subscribe",
	NS_PUBSUB "#config-node",
	NS_PUBSUB "#create-and-configure",
	NS_PUBSUB "#create-nodes",
	NS_PUBSUB "#delete-items",
	NS_PUBSUB "#delete-nodes",
	NS_PUBSUB "#filtered-notifications",
	NS_PUBSUB "#instant-nodes",
	NS_PUBSUB "#item-ids",
	NS_PUBSUB "#last-published",
	NS_PUBSUB "#manage-subscriptions",
	NS_PUBSUB "#member-affiliation",
	NS_PUBSUB "#meta-data",
	NS_PUBSUB "#modify-affiliations",
	NS_PUBSUB "#outcast-affiliation",
	NS_PUBSUB "#persistent-items",
	NS_PUBSUB "#presence-notifications",
	NS_PUBSUB "#presence-subscribe",
	NS_PUBSUB "#publish",
	NS_PUBSUB "#publish-only-affiliation",
	NS_PUBSUB "#publish-options",
	NS_PUBSUB "#publisher-affiliation",
	NS_PUBSUB "#purge-nodes",
	NS_PUBSUB "#retract-items",
	NS_PUBSUB "#retrieve-affiliations",
	NS_PUBSUB "#retrieve-default",
	NS_PUBSUB "#retrieve-default-sub",
	NS_PUBSUB "#retrieve-items",
	NS_PUBSUB "#retrieve-subscriptions",
	NS_PUBSUB "#subscribe",
	NS_PUBSUB "#subscription-notifications",
	NS_PUBSUB "#subscription-options",
	NS_PUBSUB "#pubsub-on-a-jid",
};

/* The service's: the same less what is PEP's alone (no auto-create, no presence tie-in). */
static const char *const ps_service_features[] = {
	NS_DISCO_INFO,
	NS_DISCO_ITEMS,
	NS_PUBSUB,
	NS_PUBSUB "#access-open",
	NS_PUBSUB "#access-presence",
	NS_PUBSUB "#access-roster",
	NS_PUBSUB "#access-whitelist",
	NS_PUBSUB "#config-node",
	NS_PUBSUB "#create-and-configure",
	NS_PUBSUB "#create-nodes",
	NS_PUBSUB "#delete-items",
	NS_PUBSUB "#delete-nodes",
	NS_PUBSUB "#instant-nodes",
	NS_PUBSUB "#item-ids",
	NS_PUBSUB "#manage-subscriptions",
	NS_PUBSUB "#member-affiliation",
	NS_PUBSUB "#meta-data",
	NS_PUBSUB "#modify-affiliations",
	NS_PUBSUB "#outcast-affiliation",
	NS_PUBSUB "#persistent-items",
	NS_PUBSUB "#publish",
	NS_PUBSUB "#publish-only-affiliation",
	NS_PUBSUB "#publish-options",
	NS_PUBSUB "#publisher-affiliation",
	NS_PUBSUB "#purge-nodes",
	NS_PUBSUB "#retract-items",
	NS_PUBSUB "#retrieve-affiliations",
	NS_PUBSUB "#retrieve-default",
	NS_PUBSUB "#retrieve-default-sub",
	NS_PUBSUB "#retrieve-items",
	NS_PUBSUB "#retrieve-subscriptions",
	NS_PUBSUB "#subscribe",
	NS_PUBSUB "#subscription-notifications",
	NS_PUBSUB "#subscription-options",
	NS_PING,
};

#define PS_COUNT(a) (sizeof(a) / sizeof((a)[0]))

size_t pubsub_disco_features(unsigned scope, const char **out, size_t cap)
{
	size_t n = 0;

	if (!(scope & (IQ_SCOPE_SERVER | IQ_SCOPE_ACCOUNT | IQ_SCOPE_CONTACT)))
		return 0;
	for (size_t i = 0; i < PS_COUNT(ps_pep_features) && n < cap; i++)
		out[n++] = ps_pep_features[i];
	/*
	 * On the account: XEP-0402 7, bookmarks unified with private XML;
	 * XEP-0398 2, avatars converted between PEP and the vCard.
	 */
	if ((scope & (IQ_SCOPE_ACCOUNT | IQ_SCOPE_CONTACT)) && n < cap)
		out[n++] = NS_BOOKMARKS_COMPAT;
	if ((scope & (IQ_SCOPE_ACCOUNT | IQ_SCOPE_CONTACT)) && n < cap)
		out[n++] = NS_PEP_VCARD_CONVERSION;
	return n;
}

/* <feature var=.../> in a disco#info answer. */
static int ps_add_feature(struct arena *a, struct xml_node *q, const char *var)
{
	struct xml_node *f = xml_node_add_child(a, q, NULL, "feature");

	return f && xml_attr_set(a, f, "var", var) == 0 ? 0 : -ENOMEM;
}

/* <identity category='pubsub' type=.../> in a disco#info answer. */
static int ps_add_identity(struct arena *a, struct xml_node *q, const char *type,
			   const char *name)
{
	struct xml_node *id = xml_node_add_child(a, q, NULL, "identity");

	if (!id || xml_attr_set(a, id, "category", "pubsub") < 0 ||
	    xml_attr_set(a, id, "type", type) < 0 || (name && xml_attr_set(a, id, "name", name) < 0))
		return -ENOMEM;
	return 0;
}

/* A field of the meta-data form with zero or more values. */
static struct xml_node *ps_meta_field(struct arena *a, struct xml_node *x, const char *var,
				      const char *type, const char *v)
{
	struct xml_node *f = xml_node_add_child(a, x, NS_XDATA, "field");
	struct xml_node *val;

	if (!f || xml_attr_set(a, f, "var", var) < 0 || (type && xml_attr_set(a, f, "type", type) < 0))
		return NULL;
	if (v) {
		val = xml_node_add_child(a, f, NS_XDATA, "value");
		if (!val || xml_node_add_text(a, val, v, strlen(v)) < 0)
			return NULL;
	}
	return f;
}

/* The jid-multi field listing the affiliated JIDs of one kind. */
static int ps_meta_affils(struct arena *a, struct xml_node *x, const char *var,
			  const struct ps_node *n, enum ps_affil kind)
{
	struct xml_node *f = ps_meta_field(a, x, var, "jid-multi", NULL);

	for (const struct ps_affiliation *af = n->affils; f && af; af = af->next) {
		struct xml_node *v;

		if (af->affil != kind)
			continue;
		v = xml_node_add_child(a, f, NS_XDATA, "value");
		if (!v || xml_node_add_text(a, v, af->jid, af->jid_len) < 0)
			return -ENOMEM;
	}
	return f ? 0 : -ENOMEM;
}

/* disco#info of a node: pubsub/leaf and its meta-data (XEP-0060 5.3, 5.4). */
static struct xml_node *ps_node_info(struct arena *a, const struct ps_node *n)
{
	struct xml_node *q = xml_node_new(a, NS_DISCO_INFO, "query");
	struct xml_node *x = xml_node_new(a, NS_XDATA, "x");
	char num[24], date[32];
	time_t t = (time_t)n->created;
	struct tm tm;
	bool ok;

	if (!q || !x || xml_attr_set(a, q, "node", n->name) < 0 || xml_attr_set(a, x, "type", "result") < 0)
		return NULL;
	if (!gmtime_r(&t, &tm))
		memset(&tm, 0, sizeof(tm));
	strftime(date, sizeof(date), "%Y-%m-%dT%H:%M:%SZ", &tm);
	snprintf(num, sizeof(num), "%u", n->nsubs);
	ok = ps_add_identity(a, q, "leaf", n->cfg.title) == 0 &&
	     ps_add_feature(a, q, NS_PUBSUB) == 0 &&
	     ps_meta_field(a, x, "FORM_TYPE", "hidden", NS_PUBSUB_META_DATA) &&
	     ps_meta_field(a, x, "pubsub#type", "text-single", n->cfg.payload_type) &&
	     ps_meta_field(a, x, "pubsub#creator", "jid-single", n->creator) &&
	     ps_meta_field(a, x, "pubsub#creation_date", "text-single", date) &&
	     ps_meta_field(a, x, "pubsub#title", "text-single", n->cfg.title) &&
	     ps_meta_field(a, x, "pubsub#description", "text-single", n->cfg.description) &&
	     ps_meta_field(a, x, "pubsub#access_model", "list-single",
			   ps_access_name(n->cfg.access)) &&
	     ps_meta_field(a, x, "pubsub#publish_model", "list-single",
			   ps_publish_model_name(n->cfg.publish_model)) &&
	     ps_meta_field(a, x, "pubsub#num_subscribers", "text-single", num) &&
	     ps_meta_affils(a, x, "pubsub#owner", n, PS_AFFIL_OWNER) == 0 &&
	     ps_meta_affils(a, x, "pubsub#publisher", n, PS_AFFIL_PUBLISHER) == 0;
	if (ok) {
		if (n->cfg.max_items_max)
			snprintf(num, sizeof(num), "max");
		else
			snprintf(num, sizeof(num), "%" PRIu32, n->cfg.max_items);
		ok = ps_meta_field(a, x, "pubsub#max_items", "text-single", num) != NULL;
	}
	if (ok)
		xml_node_append(q, x);	/* after identity and features, as XEP-0128 shows */
	return ok ? q : NULL;
}

/*
 * Whether the requester may learn about node n (disco): the access model
 * with what is known now (a decision the store would have to make counts
 * as allowed for the service's metadata, as not for listing PEP nodes).
 */
static bool ps_visible(struct ps_ctx *ctx, const struct ps_node *n, bool unknown_ok)
{
	struct ps_requester r;
	const char *gate;
	size_t glen;

	ps_requester_facts(ctx->w, n, ctx->from_bare, ctx->from_bare_len, ctx->owner_account, &r,
			   &gate, &glen);
	if (gate)
		return unknown_ok;
	return ps_access_check(&n->cfg, &r) == PS_ALLOW;
}

/* disco#info of a node the requester may know about, else item-not-found. */
static void ps_disco_node_info(struct ps_ctx *ctx, const char *name)
{
	struct ps_node *n = ps_node_find(ctx->host, name, strlen(name));
	struct xml_node *q;

	if (!n || !ps_visible(ctx, n, true)) {
		ps_err(ctx, "item-not-found", NULL, NULL);
		return;
	}
	q = ps_node_info(iq_arena(ctx->rq), n);
	if (!q) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	ps_ok(ctx, q);
}

/* Completion of a node's disco#items: one <item name=ItemID/> per item. */
static void ps_finish_disco_items(struct ps_job *j, struct session *s)
{
	struct xml_node *q;

	if (j->gate && j->op.req.result == 0 && j->gate->verdict != PS_ALLOW) {
		ps_job_deny(j, s, j->gate->verdict);
		return;
	}
	if (j->op.req.result < 0) {
		ps_job_failed(j, s);
		return;
	}
	q = xml_node_new(&j->a, NS_DISCO_ITEMS, "query");
	if (q && xml_attr_set(&j->a, q, "node", j->node->name) < 0)
		q = NULL;
	for (struct ps_item_row *r = j->rows; q && r; r = r->next) {
		struct xml_node *it = xml_node_add_child(&j->a, q, NULL, "item");

		if (!it || xml_attr_set(&j->a, it, "jid", j->node->host->jid) < 0 ||
		    xml_attr_set(&j->a, it, "name", r->id) < 0)
			q = NULL;
	}
	if (!q) {
		ps_job_error(j, s, "internal-server-error", NULL, NULL);
		return;
	}
	j->reply = q;
	ps_job_ok(j, s);
}

/* disco#items of a node: its items' ids (5.5). */
static void ps_disco_node_items(struct ps_ctx *ctx, const char *name)
{
	struct ps_node *n = ps_node_find(ctx->host, name, strlen(name));
	struct ps_job *j;
	int access;

	if (!n) {
		ps_err(ctx, "item-not-found", NULL, NULL);
		return;
	}
	j = ps_job_new(ctx, ps_finish_disco_items);
	if (!j)
		return;
	ps_job_set_node(j, n);
	access = ps_check_access(ctx, n, j);
	if (!access) {
		ps_job_drop(ctx, j);
		return;
	}
	if (n->cfg.persist_items) {
		j->read_items = true;
		j->read_ids_only = true;
	} else if (n->last_id) {
		struct ps_item_row *r = arena_alloc(&j->a, sizeof(*r));

		if (r) {
			memset(r, 0, sizeof(*r));
			r->id = ps_dup(j, n->last_id);
			r->payload = "";
			j->rows = r->id ? r : NULL;
		}
	}
	ps_job_submit(ctx->w, j);
}

/* disco#items of the host: its nodes the requester may see (5.2). */
static void ps_disco_nodes(struct ps_ctx *ctx, bool unknown_ok)
{
	struct arena *a = iq_arena(ctx->rq);
	struct xml_node *q = xml_node_new(a, NS_DISCO_ITEMS, "query");

	for (const struct ps_node *n = ctx->host ? ctx->host->nodes : NULL; q && n; n = n->next) {
		struct xml_node *it;

		if (!ps_visible(ctx, n, unknown_ok))
			continue;
		it = xml_node_add_child(a, q, NULL, "item");
		if (!it || xml_attr_set(a, it, "jid", ctx->host_jid) < 0 ||
		    xml_attr_set(a, it, "node", n->name) < 0 ||
		    (n->cfg.title && xml_attr_set(a, it, "name", n->cfg.title) < 0))
			q = NULL;
	}
	if (!q) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	ps_ok(ctx, q);
}

/* disco#info of pubsub.DOMAIN (pubsub/service and its features), or of a node. */
static void ps_service_disco_info(struct ps_ctx *ctx, const char *node)
{
	struct arena *a = iq_arena(ctx->rq);
	struct xml_node *q;
	bool ok;

	if (node && node[0]) {
		ps_disco_node_info(ctx, node);
		return;
	}
	q = xml_node_new(a, NS_DISCO_INFO, "query");
	ok = q && ps_add_identity(a, q, "service", "Publish-Subscribe") == 0;
	for (size_t i = 0; ok && i < PS_COUNT(ps_service_features); i++)
		ok = ps_add_feature(a, q, ps_service_features[i]) == 0;
	if (!ok) {
		ps_err(ctx, "internal-server-error", NULL, NULL);
		return;
	}
	ps_ok(ctx, q);
}

bool pubsub_pep_disco_info(struct iq_request *rq)
{
	const char *node = xml_attr_get(rq->payload, "node");
	struct ps_node *n;
	struct ps_ctx ctx;

	if (!node || !node[0] || !rq->from)
		return false;
	if (ps_ctx_init(&ctx, rq, true) < 0)
		return true;
	/*
	 * A node that is not there (or not for this asker) gets the account's
	 * own answer, which tells a stranger nothing (XEP-0030 section 8).
	 */
	if (!ctx.host || !(n = ps_node_find(ctx.host, node, strlen(node))) ||
	    !ps_visible(&ctx, n, true))
		return false;
	ps_disco_node_info(&ctx, node);
	return true;
}

bool pubsub_pep_disco_items(struct iq_request *rq)
{
	const char *node = xml_attr_get(rq->payload, "node");
	struct ps_ctx ctx;

	if (!rq->from)
		return false;
	if (ps_ctx_init(&ctx, rq, true) < 0)
		return true;
	if (!ctx.host)
		return false;
	if (node && node[0]) {
		struct ps_node *n = ps_node_find(ctx.host, node, strlen(node));

		/* As for disco#info: unknown or hidden nodes get the account's answer. */
		if (!n || !ps_visible(&ctx, n, true))
			return false;
		ps_disco_node_items(&ctx, node);
	} else {
		/* XEP-0163 9: only the nodes this contact may subscribe to. */
		ps_disco_nodes(&ctx, false);
	}
	return true;
}

/* ---- The service at pubsub.DOMAIN ---- */

void pubsub_service_route(struct worker *w, struct conn *src, struct xml_node *st,
			  const struct jid *from, const struct jid *to)
{
	enum stanza_kind kind = stanza_kind(st);
	const char *type = stanza_type(st);
	struct iq_request rq = {
		.w = w, .conn = src, .iq = st, .payload = xml_first_element(st),
		.from = from, .to = to, .scope = IQ_SCOPE_SERVER,
	};
	struct arena_mark mark = arena_mark(&w->tmp);
	struct ps_ctx ctx;
	const char *ns, *name;

	/*
	 * Bounced notifications could end subscriptions (XEP-0060 12.4); the
	 * service keeps them: a bare-JID subscriber is often just offline.
	 */
	if (kind != STANZA_IQ) {
		/*
		 * Bounced notifications and presence need nothing; other
		 * messages are for no one here.
		 */
		if (kind == STANZA_MESSAGE && strcmp(type, "error") != 0 &&
		    strcmp(type, "headline") != 0)
			router_bounce_w(w, src, st, "service-unavailable");
		return;
	}
	if (strcmp(type, "get") != 0 && strcmp(type, "set") != 0)
		return;	/* results and errors: we ask nothing of anyone */
	/* Nodes are addressed by 'node' attributes, never as JIDs (XEP-0060 4.6.2). */
	/* Clients only: here directly, or forwarded from their home worker. */
	if (jid_has_local(to) || jid_has_resource(to) || (src && !src->sess) ||
	    !router_from_local_session(w, src, st) || !rq.payload) {
		router_bounce_w(w, src, st, rq.payload ? "service-unavailable" : "bad-request");
		return;
	}
	ns = rq.payload->ns;
	name = rq.payload->name;
	if (strcmp(name, "query") == 0 &&
	    (strcmp(ns, NS_DISCO_INFO) == 0 || strcmp(ns, NS_DISCO_ITEMS) == 0)) {
		const char *node = xml_attr_get(rq.payload, "node");

		if (strcmp(type, "get") != 0) {
			iq_reply_error(&rq, "bad-request", NULL);
		} else if (ps_ctx_init(&ctx, &rq, false) == 0) {
			if (strcmp(ns, NS_DISCO_INFO) == 0)
				ps_service_disco_info(&ctx, node);
			else if (node && node[0])
				ps_disco_node_items(&ctx, node);
			else
				ps_disco_nodes(&ctx, true);
		}
	} else if (strcmp(name, "pubsub") == 0 &&
		   (strcmp(ns, NS_PUBSUB) == 0 || strcmp(ns, NS_PUBSUB_OWNER) == 0)) {
		if (ps_ctx_init(&ctx, &rq, false) == 0)
			ps_dispatch(&ctx);
	} else if (strcmp(name, "ping") == 0 && strcmp(ns, NS_PING) == 0 &&
		   strcmp(type, "get") == 0) {
		iq_reply_result(&rq, NULL);
	} else {
		iq_reply_error(&rq, "service-unavailable", NULL);
	}
	/* Inside routing: the caller may still have the stanza's attributes in w->tmp. */
	arena_rewind(&w->tmp, mark);
}

/* ---- Last items for a newly interested session (XEP-0163 4.3.2, 4.3.3) ---- */

/*
 * Completion of the last-items read for a session that became
 * interested: each item found, if the session is still available.
 */
static void ps_finish_lasts(struct ps_job *j, struct session *unused)
{
	struct worker *w = ps_job_worker(j);
	size_t tl = strlen(j->target);
	struct session *s = sessdir_find_full(w->sessions, j->target, tl);

	if (j->op.req.result < 0) {
		log_warn("pubsub.last_items_failed", "err=%d", j->op.req.result);
		return;
	}
	/* A session at home elsewhere: its home checks it is still there. */
	if (!router_home_elsewhere(w, j->target, tl) && (!s || !s->available))
		return;
	for (struct ps_last *l = j->lasts; l; l = l->next)
		if (l->row && !l->node->deleted)
			ps_send_item_to(w, &j->a, l->node, l->row->id, l->row->payload,
					l->row->payload_len, l->row->created, j->target);
}

/*
 * Adds to j the nodes of PEP host h whose last item session `jid` (bare
 * part bare_len bytes) should get: on_sub_and_presence nodes that its
 * caps want and `before` did not, that its account may see (own: always).
 */
static void ps_interest_host(struct worker *w, struct ps_job *j, const char *jid,
			     size_t bare_len, const struct pep_caps *caps,
			     const struct pep_caps *before, struct ps_host *h, bool own)
{
	if (!h || !h->pep)
		return;
	for (struct ps_node *n = h->nodes; n; n = n->next) {
		struct ps_gate *gate = NULL;
		struct ps_last *l;

		if (n->cfg.send_last != PS_SEND_LAST_ON_SUB_AND_PRESENCE ||
		    !n->cfg.deliver_notifications || !pep_caps_wants(caps, n->name, n->name_len) ||
		    (before && pep_caps_wants(before, n->name, n->name_len)))
			continue;
		if (!own) {
			struct ps_requester r;
			const char *go;
			size_t gol;

			ps_requester_facts(w, n, jid, bare_len, false, &r, &go, &gol);
			if (go) {
				char bare[JID_MAX];

				snprintf(bare, sizeof(bare), "%.*s", (int)bare_len, jid);
				gate = ps_gate_new(j, n, go, gol, bare, &r);
				if (!gate)
					continue;
			} else if (ps_access_check(&n->cfg, &r) != PS_ALLOW) {
				continue;
			}
		}
		if (!n->cfg.persist_items) {
			if (n->last_id && !gate)
				ps_send_item_to(w, &j->a, n, n->last_id, n->last_payload,
						n->last_payload_len, time(NULL), j->target);
			continue;
		}
		l = arena_alloc(&j->a, sizeof(*l));
		if (!l)
			return;
		memset(l, 0, sizeof(*l));
		ps_node_ref(n);
		l->node = n;
		l->node_id = n->id;
		l->gate = gate;
		l->next = j->lasts;
		j->lasts = l;
	}
}

/*
 * A session's interest in the PEP nodes of contacts at home on another
 * worker: that worker (where their nodes and, when online, their rosters
 * are) reads the last items and sends them to the session. The caps sets
 * travel as copies: caps are per worker.
 */
struct ps_interest {
	struct worker_msg msg;		/* first */
	struct pep_caps *caps;		/* copies, released there */
	struct pep_caps *before;
	size_t bare_len;
	char target[JID_MAX];		/* the session's full JID */
	size_t ncontacts;
	char *contacts;			/* bare JIDs, each NUL-terminated, back to back */
	size_t used, cap;
};

static void ps_interest_free(struct ps_interest *in)
{
	pep_caps_release(in->caps);
	pep_caps_release(in->before);
	free(in->contacts);
	free(in);
}

/* At the contacts' home: their nodes' last items for the session. */
static void ps_interest_arrived(struct worker *w, struct worker_msg *m)
{
	struct ps_interest *in = (struct ps_interest *)m;
	struct ps_job *j = w->srv->shutting_down ? NULL : ps_job_alloc(w, ps_finish_lasts);
	const char *c = in->contacts;

	if (j && (j->target = arena_strdup(&j->a, in->target))) {
		for (size_t i = 0; i < in->ncontacts; i++, c += strlen(c) + 1)
			ps_interest_host(w, j, in->target, in->bare_len, in->caps, in->before,
					 ps_host_find(c, strlen(c)), false);
		if (j->lasts) {
			ps_job_submit(w, j);
			j = NULL;
		}
	}
	if (j)
		ps_job_free(j);
	ps_interest_free(in);
}

/* Adds contact `jid` to the message for worker k (made on first use). */
static void ps_interest_add(struct worker *w, struct ps_interest **homes, unsigned k,
			    struct session *s, const struct pep_caps *caps,
			    const struct pep_caps *before, const char *jid, size_t len)
{
	struct ps_interest *in = homes[k];

	if (!in) {
		in = calloc(1, sizeof(*in));
		if (!in)
			return;
		in->caps = pep_caps_copy(caps);
		in->before = pep_caps_copy(before);
		if (!in->caps || (before && !in->before) || s->jid_len >= sizeof(in->target)) {
			ps_interest_free(in);
			return;
		}
		memcpy(in->target, s->jid, s->jid_len + 1);
		in->bare_len = s->bare_len;
		homes[k] = in;
	}
	if (in->used + len + 1 > in->cap) {
		size_t nc = in->cap ? in->cap * 2 : 256;
		char *p;

		while (nc < in->used + len + 1)
			nc *= 2;
		if (!(p = realloc(in->contacts, nc)))
			return;
		in->contacts = p;
		in->cap = nc;
	}
	memcpy(in->contacts + in->used, jid, len);
	in->contacts[in->used + len] = '\0';
	in->used += len + 1;
	in->ncontacts++;
	(void)w;
}

void pubsub_pep_interest(struct worker *w, struct session *s, const struct pep_caps *before)
{
	struct account *acct = session_account(s);
	const struct pep_caps *caps = s->pep ? s->pep->caps : NULL;
	struct ps_interest **homes = NULL;
	struct ps_job *j;

	if (!caps || !acct || s->ending)
		return;
	j = ps_job_alloc(w, ps_finish_lasts);
	if (!j || !(j->target = arena_strndup(&j->a, s->jid, s->jid_len))) {
		if (j)
			ps_job_free(j);
		return;
	}
	/* One's own nodes, then those of the contacts whose presence one receives. */
	ps_interest_host(w, j, s->jid, s->bare_len, caps, before,
			 ps_host_find(s->jid, s->bare_len), true);
	for (const struct roster_item *it = acct->roster ? acct->roster->items : NULL; it;
	     it = it->next) {
		if (it->deleted || !(it->sub & SUB_TO) || !ps_is_local(w, it->jid, it->jid_len) ||
		    (it->jid_len == s->bare_len && memcmp(it->jid, s->jid, s->bare_len) == 0))
			continue;
		/* Nodes at home elsewhere: one message per worker, with its contacts. */
		if (router_home_elsewhere(w, it->jid, it->jid_len)) {
			if (!homes && !(homes = calloc(w->srv->nworkers, sizeof(*homes))))
				continue;
			ps_interest_add(w, homes, worker_home(w->srv, it->jid), s, caps, before,
					it->jid, it->jid_len);
			continue;
		}
		ps_interest_host(w, j, s->jid, s->bare_len, caps, before,
				 ps_host_find(it->jid, it->jid_len), false);
	}
	for (unsigned k = 0; homes && k < w->srv->nworkers; k++)
		if (homes[k])
			worker_post(w, k, &homes[k]->msg, ps_interest_arrived);
	free(homes);
	if (!j->lasts) {
		ps_job_free(j);
		return;
	}
	ps_job_submit(w, j);
}

/* ---- Accounts that go away ---- */

/* Completion of background writes: nothing to answer; failures are logged. */
static void ps_finish_nothing(struct ps_job *j, struct session *s)
{
	if (j->op.req.result < 0)
		log_warn("pubsub.cleanup_failed", "err=%d", j->op.req.result);
}

/* What an account's removal takes from the nodes of one host. */
struct ps_forget {
	struct ps_job *j;
	const char *bare;
	size_t len;
};

/* Its affiliations and subscriptions go from every node of h; the nodes stay. */
static void ps_forget_in_host(struct ps_host *h, void *arg)
{
	struct ps_forget *fg = arg;

	for (struct ps_node *n = h->nodes; n; n = n->next) {
		struct ps_subscription *sub, *next;

		if (ps_affil_get(n, fg->bare, fg->len) != PS_AFFIL_NONE) {
			ps_affil_set(n, fg->bare, fg->len, PS_AFFIL_NONE);
			ps_put_affil(fg->j, n, fg->bare, PS_AFFIL_NONE);
		}
		for (sub = n->subs; sub; sub = next) {
			next = sub->next;
			if (sub->bare_len != fg->len || memcmp(sub->jid, fg->bare, fg->len) != 0)
				continue;
			ps_del_sub(fg->j, n, sub->jid);
			ps_sub_remove(n, sub);
		}
	}
}

/* The removal in this worker's registry: its own nodes if at home here, and its traces. */
static void ps_account_forget(struct worker *w, const char *user)
{
	char bare[JID_MAX];
	int n = snprintf(bare, sizeof(bare), "%s@%s", user, w->srv->cfg->domain);
	struct ps_forget fg = { .bare = bare };
	struct ps_host *h;

	if (n < 0 || (size_t)n >= sizeof(bare))
		return;
	fg.len = (size_t)n;
	/* Its PEP nodes left the store with the account (ON DELETE CASCADE). */
	h = ps_host_find(bare, fg.len);
	while (h && h->nodes)
		ps_node_remove(h->nodes);
	if (!(fg.j = ps_job_alloc(w, ps_finish_nothing)))
		return;
	/* The service's nodes (worker 0) and other accounts' PEP nodes at home here. */
	ps_host_each(ps_forget_in_host, &fg);
	ps_job_submit(w, fg.j);
}

struct ps_removed {
	struct worker_msg msg;		/* first */
	char user[JID_PART_MAX + 1];
};

static void ps_removed_arrived(struct worker *w, struct worker_msg *m)
{
	struct ps_removed *r = (struct ps_removed *)m;

	if (!w->srv->shutting_down)
		ps_account_forget(w, r->user);
	free(r);
}

/*
 * Every registry may hold something of the account: its nodes (at its
 * home), its subscriptions on the service (worker 0) and on contacts'
 * nodes (at their homes). Each worker cleans its own.
 */
void pubsub_account_removed(struct worker *w, const char *user)
{
	for (unsigned k = 0; k < w->srv->nworkers; k++) {
		struct ps_removed *r;

		if (k == w->id) {
			ps_account_forget(w, user);
			continue;
		}
		r = calloc(1, sizeof(*r));
		if (!r || strlen(user) >= sizeof(r->user)) {
			free(r);
			log_warn("pubsub.cleanup_failed", "worker=%u msg=\"out of memory\"", k);
			continue;
		}
		memcpy(r->user, user, strlen(user) + 1);
		worker_post(w, k, &r->msg, ps_removed_arrived);
	}
}

/* ---- Work on an account's behalf (pubsub.h: pubsub_pep_replace, pubsub_pep_read) ---- */

/* One wanted item of a replace: its id and serialized payload (in the job's arena). */
struct ps_replace_item {
	const char *id;
	const char *text;
	size_t len;
};

struct ps_replace {
	size_t n;
	struct ps_replace_item *items;
	char node[PS_NODE_NAME_MAX + 1];
	size_t user_len;
	bool whitelist;			/* a node created: private storage (else PEP defaults) */
	char bare[JID_MAX];		/* the account's bare JID: the PEP host */
};

/* A notification queued by a job, sent by its completion. */
struct ps_notice {
	struct ps_notice *next;
	struct xml_node *msg;
};

/* Queues msg on the job's notices (kept in order). -ENOMEM when msg is NULL. */
static int ps_notice_add(struct ps_job *j, struct ps_notice ***tail, struct xml_node *msg)
{
	struct ps_notice *nt = msg ? arena_alloc(&j->a, sizeof(*nt)) : NULL;

	if (!nt)
		return -ENOMEM;
	nt->next = NULL;
	nt->msg = msg;
	**tail = nt;
	*tail = &nt->next;
	return 0;
}

/*
 * The PEP node a replace writes to, created (for the owner, as if the
 * owner had published to it; with r->whitelist the XEP-0223
 * private-storage configuration: whitelist access, as many items as
 * allowed, no last item on presence) when it does not exist. Referenced
 * by j. NULL and -errno in *err.
 */
static struct ps_node *ps_replace_node(struct ps_job *j, const struct ps_replace *r, int *err)
{
	size_t blen = strlen(r->bare), nlen = strlen(r->node);
	struct ps_host *h = ps_host_find(r->bare, blen);
	struct ps_node *n = h ? ps_node_find(h, r->node, nlen) : NULL;
	struct ps_config cfg;

	if (n) {
		ps_job_set_node(j, n);
		return n;
	}
	if (h && ps_host_count_owned(h, r->bare, blen) >= ps_lim.max_nodes) {
		*err = -EDQUOT;
		return NULL;
	}
	ps_config_default(&cfg, true);
	if (r->whitelist) {
		cfg.access = PS_ACCESS_WHITELIST;
		cfg.max_items_max = true;
		cfg.send_last = PS_SEND_LAST_NEVER;
	}
	if (!h)
		h = ps_host_get(r->bare, blen, true, r->user_len);
	n = h ? ps_node_add(h, r->node, nlen, 0, &cfg, r->bare, time(NULL)) : NULL;
	if (!h)
		ps_config_free(&cfg);
	if (!n || ps_affil_set(n, r->bare, blen, PS_AFFIL_OWNER) < 0 || ps_put_node(j, n) < 0 ||
	    ps_put_affil(j, n, r->bare, PS_AFFIL_OWNER) < 0) {
		if (n)
			ps_node_remove(n);
		*err = -ENOMEM;
		return NULL;
	}
	ps_job_set_node(j, n);
	j->created = true;
	log_info("pubsub.node_created", "host=%s node_id=%" PRIu64 " by=server", r->bare, n->id);
	return n;
}

/* Completion of the writes of a replace: the notifications, once stored. */
static void ps_finish_replace(struct ps_job *j, struct session *unused)
{
	struct worker *w = ps_job_worker(j);

	(void)unused;
	if (j->op.req.result < 0) {
		if (j->created)
			ps_node_remove(j->node);
		log_warn("pubsub.replace_failed", "node_id=%" PRIu64 " err=%d", j->node_id,
			 j->op.req.result);
		return;
	}
	for (struct ps_notice *nt = j->notices; nt && !j->node->deleted; nt = nt->next)
		ps_notify(w, j->node, nt->msg, false, NULL);
}

/* The stored row with this id among rows, or NULL. */
static const struct ps_item_row *ps_row_find(const struct ps_item_row *rows, const char *id)
{
	for (; rows; rows = rows->next)
		if (strcmp(rows->id, id) == 0)
			return rows;
	return NULL;
}

/* Whether id is among the wanted items of r. */
static bool ps_replace_wants(const struct ps_replace *r, const char *id)
{
	for (size_t i = 0; i < r->n; i++)
		if (strcmp(r->items[i].id, id) == 0)
			return true;
	return false;
}

/*
 * The writes of a replace, given the stored items (`old`, read by the
 * first job): new and changed items put, missing ones deleted, each with
 * its notification; unchanged items untouched (XEP-0402 "Publishing via
 * the old specification"). 0 or -errno.
 */
static int ps_replace_writes(struct worker *w, const struct ps_replace *r,
			     const struct ps_item_row *old)
{
	struct ps_job *j = ps_job_alloc(w, ps_finish_replace);
	struct ps_notice **tail;
	struct ps_node *n;
	struct ps_mut *m;
	int err = 0;

	if (!j)
		return -ENOMEM;
	tail = &j->notices;
	n = ps_replace_node(j, r, &err);
	if (!n)
		goto out_job;
	/* A node its owner made transient keeps nothing to mirror into. */
	err = -EOPNOTSUPP;
	if (!n->cfg.persist_items)
		goto out_undo;
	err = -ENOMEM;
	/* Deletions first: a put trimming the node to max_items may drop an old item. */
	for (const struct ps_item_row *row = old; row; row = row->next) {
		struct xml_node *msg = NULL, *ev, *items, *rt;

		if (ps_replace_wants(r, row->id))
			continue;
		m = ps_mut_add(j, PS_MUT_ITEM_DEL, n->id);
		if (!m || !(m->item_id = ps_dup(j, row->id)))
			goto out_undo;
		if (!n->cfg.notify_retract || !n->cfg.deliver_notifications)
			continue;
		ev = ps_event_message(&j->a, n, &msg);
		items = ev ? xml_node_add_child(&j->a, ev, NULL, "items") : NULL;
		rt = items ? xml_node_add_child(&j->a, items, NULL, "retract") : NULL;
		if (!rt || xml_attr_set(&j->a, items, "node", n->name) < 0 ||
		    xml_attr_set(&j->a, rt, "id", row->id) < 0 || ps_notice_add(j, &tail, msg) < 0)
			goto out_undo;
	}
	for (size_t i = 0; i < r->n; i++) {
		const struct ps_replace_item *it = &r->items[i];
		const struct ps_item_row *row = ps_row_find(old, it->id);
		struct xml_node *copy = NULL;

		if (row && row->payload_len == it->len && memcmp(row->payload, it->text, it->len) == 0)
			continue;
		m = ps_mut_add(j, PS_MUT_ITEM_PUT, n->id);
		if (!m || !(m->item_id = ps_dup(j, it->id)) || !(m->publisher = ps_dup(j, r->bare)) ||
		    !(m->payload = arena_strndup(&j->a, it->text, it->len)))
			goto out_undo;
		m->payload_len = it->len;
		m->created = time(NULL);
		m->max_items = ps_config_max_items(&n->cfg, &ps_lim);
		if (!n->cfg.deliver_notifications)
			continue;
		if (n->cfg.deliver_payloads &&
		    !(copy = ps_payload_tree(w, &j->a, m->payload, m->payload_len)))
			goto out_undo;
		if (ps_notice_add(j, &tail, ps_item_message(&j->a, n, it->id, copy)) < 0)
			goto out_undo;
	}
	ps_job_submit(w, j);
	return 0;
out_undo:
	if (j->created)
		ps_node_remove(n);
out_job:
	ps_job_free(j);
	return err;
}

/* Completion of a replace's read: the writes follow (the node may be new by now). */
static void ps_finish_replace_read(struct ps_job *j, struct session *unused)
{
	int ret;

	(void)unused;
	ret = j->op.req.result;
	if (ret == 0)
		ret = ps_replace_writes(ps_job_worker(j), j->replace, j->rows);
	if (ret < 0)
		log_warn("pubsub.replace_failed", "node=%s err=%d", j->replace->node, ret);
}

int pubsub_pep_replace(struct worker *w, const char *user, const char *node,
		       const struct pubsub_pep_item *items, size_t nitems, bool whitelist)
{
	struct ps_job *j;
	struct ps_replace *r;
	struct ps_host *h;
	struct ps_node *n;
	struct strbuf b = STRBUF_INIT;
	int len;

	if (strlen(node) > PS_NODE_NAME_MAX || nitems > ps_lim.max_items)
		return -EINVAL;
	j = ps_job_alloc(w, ps_finish_replace_read);
	if (!j)
		return -ENOMEM;
	r = arena_alloc(&j->a, sizeof(*r));
	if (!r)
		goto out_nomem;
	memset(r, 0, sizeof(*r));
	len = snprintf(r->bare, sizeof(r->bare), "%s@%s", user, w->srv->cfg->domain);
	if (len < 0 || (size_t)len >= sizeof(r->bare)) {
		ps_job_free(j);
		return -EINVAL;
	}
	r->user_len = strlen(user);
	r->whitelist = whitelist;
	strcpy(r->node, node);
	r->n = nitems;
	r->items = arena_alloc(&j->a, (nitems ? nitems : 1) * sizeof(*r->items));
	if (!r->items)
		goto out_nomem;
	/* The payloads as the store keeps them, so unchanged items compare equal. */
	for (size_t i = 0; i < nitems; i++) {
		strbuf_clear(&b);
		if (items[i].payload)
			stored_xml_serialize(&b, items[i].payload);
		if (b.oom)
			goto out_nomem;
		if (strlen(items[i].id) > PS_ITEM_ID_MAX || b.len > ps_lim.max_item_bytes) {
			strbuf_free(&b);
			ps_job_free(j);
			return -E2BIG;
		}
		r->items[i].id = ps_dup(j, items[i].id);
		r->items[i].text = arena_strndup(&j->a, b.data ? b.data : "", b.len);
		r->items[i].len = b.len;
		if (!r->items[i].id || !r->items[i].text)
			goto out_nomem;
	}
	strbuf_free(&b);
	j->replace = r;
	/* First the stored items (none to read when there is no node yet). */
	h = ps_host_find(r->bare, strlen(r->bare));
	n = h ? ps_node_find(h, node, strlen(node)) : NULL;
	if (n && n->cfg.persist_items) {
		ps_job_set_node(j, n);
		j->read_items = true;
	}
	ps_job_submit(w, j);
	return 0;
out_nomem:
	strbuf_free(&b);
	ps_job_free(j);
	return -ENOMEM;
}

/* Completion of pubsub_pep_read: the rows to the caller. */
static void ps_finish_read(struct ps_job *j, struct session *unused)
{
	(void)unused;
	j->read_cb(ps_job_worker(j), j->read_user, j->read_ctx, j->op.req.result, j->rows);
}

int pubsub_pep_read(struct worker *w, const char *user, const char *node,
		    pubsub_pep_items_cb *cb, const void *ctx, size_t ctx_len)
{
	char bare[JID_MAX];
	int len = snprintf(bare, sizeof(bare), "%s@%s", user, w->srv->cfg->domain);
	struct ps_host *h;
	struct ps_node *n;
	struct ps_job *j;

	if (len < 0 || (size_t)len >= sizeof(bare) || strlen(user) > JID_PART_MAX ||
	    ctx_len > PUBSUB_PEP_CTX_MAX)
		return -EINVAL;
	j = ps_job_alloc(w, ps_finish_read);
	if (!j)
		return -ENOMEM;
	j->read_cb = cb;
	strcpy(j->read_user, user);
	if (ctx_len)
		memcpy(j->read_ctx, ctx, ctx_len);
	h = ps_host_find(bare, (size_t)len);
	n = h ? ps_node_find(h, node, strlen(node)) : NULL;
	/* No node, or one that keeps no items: no rows (the callback runs now). */
	if (n && n->cfg.persist_items) {
		ps_job_set_node(j, n);
		j->read_items = true;
	}
	ps_job_submit(w, j);
	return 0;
}
