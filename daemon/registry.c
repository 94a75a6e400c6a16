/* SPDX-License-Identifier: MIT */
/*
 * XEP-0347 thing registry at registry.DOMAIN (see registry.h). Requests
 * are parsed and checked on the worker, the store is read and written on
 * the storage thread (iot_store.h), and the completion answers, tells the
 * thing, and updates friendships and provisioning.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/random.h>
#include <time.h>

#include "cluster.h"
#include "config.h"
#include "conn.h"
#include "iot_roster.h"
#include "iot_store.h"
#include "iq.h"
#include "iq_async.h"
#include "jid.h"
#include "log.h"
#include "loop.h"
#include "provisioning.h"
#include "registry.h"
#include "registry_search.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "storage.h"
#include "stored_xml.h"
#include "worker.h"

#define REG_ARENA_CHUNK		4096

enum reg_op_kind {
	REG_OP_REGISTER = 1,
	REG_OP_CLAIM,
	REG_OP_UPDATE,
	REG_OP_REMOVE,
	REG_OP_UNREGISTER,
	REG_OP_DISOWN_CHECK,	/* is it the requester's? then ask the thing */
	REG_OP_DISOWN,		/* the thing agreed: unclaim it */
	REG_OP_SEARCH,
};

struct registry_op {
	struct iq_async base;		/* first */
	enum reg_op_kind kind;
	struct arena a;			/* tags and search expression */
	struct reg_tag *tags;
	size_t ntags, max_tags;
	struct strbuf sig;
	struct reg_expr *expr;
	bool self_owned, public_, by_owner;
	int status;			/* out: 1 = claimed already / disowned / was claimed */
	uint32_t offset, max, seen;	/* search paging */
	bool more;
	struct strbuf out;		/* search: the <thing/> elements */
	int64_t now;
	struct iot_thing_info info;	/* out: the thing's row */
	char jid[JID_MAX];		/* the thing's bare JID */
	char node_id[IOT_NODE_MAX + 1];
	char source_id[IOT_NODE_MAX + 1];
	char cache_type[IOT_NODE_MAX + 1];
	char user[JID_PART_MAX + 1];	/* the thing's localpart when local */
	char requester[JID_MAX];	/* bare */
	char owner[JID_MAX];		/* out: register */
	/* Disown: waiting for the thing's answer. */
	struct registry_op *next_pending;
	struct loop_timer timer;
	char iq_id[32];
	char thing_full[JID_MAX];
	char key[2 * REGISTRY_KEY_BYTES + 1];
};

/*
 * Process-wide: the disowns waiting for their thing's answer (the
 * service's, worker 0 only), and the counter of the ids of the
 * registry's own iqs (also sent from things' homes, so atomic).
 */
static struct {
	struct registry_op *pending;		/* disowns waiting for their thing */
	_Atomic uint64_t counter;
} reg;

bool registry_enabled(const struct config *cfg)
{
	return cfg->registry;
}

/* ---- Output helpers ---- */

/* Appends ` name='value'` with the value escaped (results are built as text). */
static void reg_attr(struct strbuf *b, const char *name, const char *value)
{
	strbuf_printf(b, " %s='", name);
	strbuf_append_xml_escaped(b, value, strlen(value));
	strbuf_puts(b, "'");
}

void registry_found_append(struct strbuf *b, const struct iot_found *t)
{
	strbuf_puts(b, "<thing");
	reg_attr(b, "owner", t->owner);
	reg_attr(b, "jid", t->jid);
	if (t->node_id[0])
		reg_attr(b, "nodeId", t->node_id);
	if (t->source_id[0])
		reg_attr(b, "sourceId", t->source_id);
	if (t->cache_type[0])
		reg_attr(b, "cacheType", t->cache_type);
	strbuf_puts(b, ">");
	for (size_t i = 0; i < t->ntags; i++) {
		/* XEP-0347 3.10: search results never return KEY tags. */
		if (strcmp(t->tags[i].name, REG_KEY_TAG) == 0)
			continue;
		strbuf_puts(b, t->tags[i].num ? "<num" : "<str");
		reg_attr(b, "name", t->tags[i].name);
		reg_attr(b, "value", t->tags[i].value);
		strbuf_puts(b, "/>");
	}
	strbuf_puts(b, "</thing>");
}

/* Sets nodeId/sourceId/cacheType on el where not empty. 0 or -ENOMEM. */
static int reg_node_attrs(struct arena *a, struct xml_node *el, const char *node_id,
			  const char *source_id, const char *cache_type)
{
	if ((node_id[0] && xml_attr_set(a, el, "nodeId", node_id) < 0) ||
	    (source_id[0] && xml_attr_set(a, el, "sourceId", source_id) < 0) ||
	    (cache_type[0] && xml_attr_set(a, el, "cacheType", cache_type) < 0))
		return -ENOMEM;
	return 0;
}

/*
 * An iq set from the registry with <name/> (discovery namespace) to one
 * full JID; `id` is filled in. The element is returned for attributes,
 * the iq through *iq_out.
 */
static struct xml_node *reg_iq_to(struct worker *w, struct arena *a, const char *to,
				  const char *name, char *id, size_t id_size, struct xml_node **iq_out)
{
	char domain[JID_MAX];
	struct xml_node *iq = xml_node_new(a, XML_NS_CLIENT, "iq");
	struct xml_node *el;

	snprintf(domain, sizeof(domain), "%s.%s", REGISTRY_LABEL, w->srv->cfg->domain);
	snprintf(id, id_size, "reg-%" PRIu64, ++reg.counter);
	if (!iq || xml_attr_set(a, iq, "type", "set") < 0 || xml_attr_set(a, iq, "id", id) < 0 ||
	    xml_attr_set(a, iq, "from", domain) < 0 || xml_attr_set(a, iq, "to", to) < 0)
		return NULL;
	el = xml_node_add_child(a, iq, NS_IOT_DISCOVERY, name);
	*iq_out = iq;
	return el;
}

/*
 * Tells every session of the thing (XEP-0347 3.6, 3.8): <claimed/> or
 * <removed/>, with the owner for a claim. Answers are not waited for.
 * At the thing's home, where its sessions are.
 */
/* One notice for session `full` of the thing. false: out of memory. */
static bool reg_tell_one(struct worker *w, struct arena *a, const struct iot_thing_info *t,
			 const char *full, const char *name)
{
	struct xml_node *iq, *el;
	char id[32];

	el = reg_iq_to(w, a, full, name, id, sizeof(id), &iq);
	if (!el || reg_node_attrs(a, el, t->node_id, t->source_id, t->cache_type) < 0 ||
	    (t->owner[0] && strcmp(name, "claimed") == 0 &&
	     (xml_attr_set(a, el, "jid", t->owner) < 0 ||
	      (!t->public_ && xml_attr_set(a, el, "public", "false") < 0))))
		return false;
	if (router_route_stanza(w, iq) < 0)
		log_warn("registry.send_failed", "to=%s", t->jid);
	arena_reset(a);
	return true;
}

struct reg_tell_ctx {
	struct worker *w;
	struct arena *a;
	const struct iot_thing_info *t;
	const char *name;
};

static void reg_tell_remote(void *arg, const char *full)
{
	struct reg_tell_ctx *tc = arg;

	reg_tell_one(tc->w, tc->a, tc->t, full, tc->name);
}

static void reg_tell_here(struct worker *w, const struct iot_thing_info *t, const char *name)
{
	struct arena a;

	arena_init(&a, REG_ARENA_CHUNK);
	for (struct session *s = sessdir_find_bare(w->sessions, t->jid, strlen(t->jid)), *next;
	     s; s = next) {
		next = s->next;
		if (!s->ending && !reg_tell_one(w, &a, t, s->jid, name))
			break;
	}
	/* Cluster mode: its sessions on other nodes are told through the router. */
	if (cluster_enabled()) {
		struct reg_tell_ctx tc = { .w = w, .a = &a, .t = t, .name = name };

		cluster_each_resource(t->jid, reg_tell_remote, &tc);
	}
	arena_release(&a);
}

/* reg_tell_thing for a thing at home on another worker: the sessions are told there. */
struct reg_tell_msg {
	struct worker_msg msg;		/* first */
	bool claimed;			/* else removed */
	struct iot_thing_info info;
};

static void reg_tell_arrived(struct worker *w, struct worker_msg *m)
{
	struct reg_tell_msg *tm = (struct reg_tell_msg *)m;
	struct arena_mark mark = arena_mark(&w->tmp);

	reg_tell_here(w, &tm->info, tm->claimed ? "claimed" : "removed");
	arena_rewind(&w->tmp, mark);
	free(tm);
}

/* name: "claimed" or "removed" (see reg_tell_here). */
static void reg_tell_thing(struct worker *w, const struct registry_op *op, const char *name)
{
	const struct iot_thing_info *t = &op->info;
	struct reg_tell_msg *tm;

	if (!router_home_elsewhere(w, t->jid, strlen(t->jid))) {
		reg_tell_here(w, t, name);
		return;
	}
	tm = calloc(1, sizeof(*tm));
	if (!tm) {
		log_warn("registry.send_failed", "to=%s msg=\"out of memory\"", t->jid);
		return;
	}
	tm->claimed = strcmp(name, "claimed") == 0;
	tm->info = *t;
	worker_post(w, worker_home(w->srv, tm->info.jid), &tm->msg, reg_tell_arrived);
}

/* ---- Requests ---- */

/* The request's element name, static: errors echo it (iq_async_new keeps the pointer). */
static const char *reg_op_name(enum reg_op_kind kind)
{
	switch (kind) {
	case REG_OP_REGISTER: return "register";
	case REG_OP_CLAIM: return "mine";
	case REG_OP_UPDATE: return "update";
	case REG_OP_REMOVE: return "remove";
	case REG_OP_UNREGISTER: return "unregister";
	case REG_OP_DISOWN_CHECK:
	case REG_OP_DISOWN: return "disown";
	case REG_OP_SEARCH: return "search";
	}
	return "";
}

static int reg_op_run(struct storage *st, struct storage_req *req);
static void reg_op_done(struct storage_req *req);

/*
 * Frees an operation that never reached the store, from inside routing:
 * unlike iq_async_free() it leaves the worker's scratch arena alone (the
 * router may still hold memory there).
 */
static void reg_op_discard(struct registry_op *op)
{
	arena_release(&op->a);
	strbuf_free(&op->sig);
	strbuf_free(&op->out);
	free(op);
}

/* Frees an operation at the end of a completion or timer (scratch arena reset). */
static void reg_op_free(struct registry_op *op)
{
	arena_release(&op->a);
	strbuf_free(&op->sig);
	strbuf_free(&op->out);
	iq_async_free(&op->base);
}

/* The thing an operation is about, as the store looks it up. */
static struct iot_thing_key reg_key(const struct registry_op *op)
{
	return (struct iot_thing_key){ .jid = op->jid, .node_id = op->node_id,
				       .source_id = op->source_id, .cache_type = op->cache_type };
}

/* A node attribute: absent is "", longer than IOT_NODE_MAX is refused. */
static int reg_copy_node_attr(const struct xml_node *el, const char *name, char *out)
{
	const char *v = xml_attr_get(el, name);

	if (v && strlen(v) > IOT_NODE_MAX)
		return -EINVAL;
	snprintf(out, IOT_NODE_MAX + 1, "%s", v ? v : "");
	return 0;
}

/*
 * A new operation for rq; the thing is the requester's bare JID, or the
 * JID in the payload's 'jid' attribute when jid_attr. NULL after
 * answering rq with an error.
 */
static struct registry_op *reg_op_new(struct iq_request *rq, enum reg_op_kind kind, bool jid_attr)
{
	const char *domain = rq->w->srv->cfg->domain;
	struct registry_op *op;
	struct jid j;
	const char *jid;

	if (jid_attr) {
		jid = xml_attr_get(rq->payload, "jid");
		if (!jid || jid_parse(&j, jid, strlen(jid)) < 0) {
			iq_reply_error(rq, "bad-request", "'jid' must name the thing");
			return NULL;
		}
	}
	op = iq_async_new(rq, sizeof(*op), "", NS_IOT_DISCOVERY, reg_op_name(kind), reg_op_run,
			  reg_op_done);
	if (!op)
		return NULL;
	op->kind = kind;
	op->now = (int64_t)time(NULL);
	op->sig = (struct strbuf)STRBUF_INIT;
	op->out = (struct strbuf)STRBUF_INIT;
	op->max_tags = rq->w->srv->cfg->max_thing_tags;
	arena_init(&op->a, REG_ARENA_CHUNK);
	jid_bare_str(rq->from, op->requester, sizeof(op->requester));
	if (jid_attr)
		jid_bare_str(&j, op->jid, sizeof(op->jid));
	else
		snprintf(op->jid, sizeof(op->jid), "%s", op->requester);
	if (reg_copy_node_attr(rq->payload, "nodeId", op->node_id) < 0 ||
	    reg_copy_node_attr(rq->payload, "sourceId", op->source_id) < 0 ||
	    reg_copy_node_attr(rq->payload, "cacheType", op->cache_type) < 0) {
		iq_reply_error(rq, "bad-request", "a node attribute is too long");
		reg_op_discard(op);
		return NULL;
	}
	/* A local thing's row goes with its account. */
	if (!jid_attr || (j.local_len && j.domain_len == strlen(domain) &&
			  memcmp(j.buf + j.domain_off, domain, j.domain_len) == 0)) {
		const char *at = strchr(op->jid, '@');

		if (at && (size_t)(at - op->jid) < sizeof(op->user))
			snprintf(op->user, sizeof(op->user), "%.*s", (int)(at - op->jid), op->jid);
	}
	return op;
}

/* The tags of the payload into op (with the signature when sig). false after answering. */
static bool reg_op_tags(struct iq_request *rq, struct registry_op *op, bool allow_empty, bool sig)
{
	const char *err = NULL;
	size_t cap = op->max_tags;
	int ret;

	op->tags = arena_alloc(&op->a, cap * sizeof(*op->tags));
	ret = op->tags ? reg_tags_parse(&op->a, rq->payload, op->tags, cap, &op->ntags, allow_empty,
					&err) : -ENOMEM;
	if (ret == 0 && !op->ntags && op->kind != REG_OP_REGISTER) {
		ret = -EINVAL;
		err = "no meta tags";
	}
	if (ret == 0 && sig) {
		reg_tags_signature(op->tags, op->ntags, &op->sig);
		if (op->sig.oom)
			ret = -ENOMEM;
	}
	if (ret < 0) {
		iq_reply_error(rq, ret == -ENOMEM ? "internal-server-error" : "bad-request", err);
		reg_op_discard(op);
		return false;
	}
	return true;
}

/* An optional xs:boolean attribute with a default ('true'/'1', 'false'/'0'). 0 or -1. */
static int reg_bool(const struct xml_node *el, const char *name, bool def, bool *out)
{
	const char *v = xml_attr_get(el, name);

	*out = def;
	if (!v)
		return 0;
	if (!strcmp(v, "true") || !strcmp(v, "1"))
		*out = true;
	else if (!strcmp(v, "false") || !strcmp(v, "0"))
		*out = false;
	else
		return -1;
	return 0;
}

/*
 * <register/> (XEP-0347 3.4, 3.5, 3.6): the requester registers itself,
 * or a node behind it. The tags' signature is computed here, on the
 * worker, so the storage thread only compares text.
 */
static void reg_register(struct iq_request *rq)
{
	struct registry_op *op;
	bool self_owned;

	if (reg_bool(rq->payload, "selfOwned", false, &self_owned) < 0) {
		iq_reply_error(rq, "bad-request", "selfOwned must be true or false");
		return;
	}
	op = reg_op_new(rq, REG_OP_REGISTER, false);
	if (!op || !reg_op_tags(rq, op, false, true))
		return;
	op->self_owned = self_owned;
	iq_async_submit(rq, &op->base);
}

/*
 * <mine/> (XEP-0347 3.7): a claim by the requester. The thing is found by
 * the exact tag set (its signature); everything else is the store's job.
 */
static void reg_mine(struct iq_request *rq)
{
	struct registry_op *op;
	bool public_;

	if (reg_bool(rq->payload, "public", true, &public_) < 0) {
		iq_reply_error(rq, "bad-request", "public must be true or false");
		return;
	}
	op = reg_op_new(rq, REG_OP_CLAIM, false);
	if (!op || !reg_op_tags(rq, op, false, true))
		return;
	op->public_ = public_;
	iq_async_submit(rq, &op->base);
}

/* <update/> (XEP-0347 3.9, 3.10): by the thing itself, or by its owner with 'jid'. */
static void reg_update(struct iq_request *rq)
{
	bool by_owner = xml_attr_get(rq->payload, "jid") != NULL;
	struct registry_op *op = reg_op_new(rq, REG_OP_UPDATE, by_owner);

	if (!op || !reg_op_tags(rq, op, true, false))
		return;
	op->by_owner = by_owner;
	iq_async_submit(rq, &op->base);
}

/* remove, unregister, disown: no payload beyond the thing's address. */
static void reg_simple(struct iq_request *rq, enum reg_op_kind kind, bool jid_attr)
{
	struct registry_op *op = reg_op_new(rq, kind, jid_attr);

	if (op)
		iq_async_submit(rq, &op->base);
}

/*
 * One public claimed thing during a search (storage thread): counted when
 * it matches, appended when it is on the requested page. Returns 1 (stop)
 * once one match past the page shows there are more, or the page reached
 * REGISTRY_RESULT_MAX_BYTES.
 */
static int reg_search_one(void *arg, const struct iot_found *t)
{
	struct registry_op *op = arg;

	if (!reg_expr_eval(op->expr, t->tags, t->ntags))
		return 0;
	if (op->seen++ < op->offset)
		return 0;
	if (op->seen > op->offset + op->max || op->out.len >= REGISTRY_RESULT_MAX_BYTES) {
		op->more = true;
		return 1;
	}
	registry_found_append(&op->out, t);
	return op->out.oom ? -ENOMEM : 0;
}

/* Parses an optional non-negative integer attribute. 0 or -1. */
static int reg_uint(const struct xml_node *el, const char *name, uint32_t def, uint32_t *out)
{
	const char *v = xml_attr_get(el, name);

	*out = def;
	if (!v)
		return 0;
	if (!v[0] || strspn(v, "0123456789") != strlen(v) || strlen(v) > 9)
		return -1;
	*out = (uint32_t)strtoul(v, NULL, 10);
	return 0;
}

static void reg_search_answer(struct registry_op *op, struct session *s);

/*
 * <search/> (XEP-0347 3.11): the expression is parsed on the worker (a
 * malformed one is a bad-request at once) and evaluated on the storage
 * thread over the public claimed things.
 */
static void reg_search(struct iq_request *rq)
{
	const char *err = NULL;
	uint32_t offset, max;
	struct registry_op *op;
	int ret;

	if (reg_uint(rq->payload, "offset", 0, &offset) < 0 ||
	    reg_uint(rq->payload, "maxCount", REGISTRY_SEARCH_DEFAULT, &max) < 0 || max == 0) {
		iq_reply_error(rq, "bad-request", "offset and maxCount must be numbers (maxCount > 0)");
		return;
	}
	op = reg_op_new(rq, REG_OP_SEARCH, false);
	if (!op)
		return;
	op->offset = offset;
	op->max = max > REGISTRY_SEARCH_MAX ? REGISTRY_SEARCH_MAX : max;
	ret = reg_expr_parse(&op->a, rq->payload, &op->expr, &err);
	if (ret < 0) {
		iq_reply_error(rq, ret == -ENOMEM ? "internal-server-error" : "bad-request", err);
		reg_op_discard(op);
		return;
	}
	/* XEP-0347 3.10: searches on KEY never find anything. */
	if (reg_expr_uses_key(op->expr)) {
		struct xml_node *found = xml_node_new(iq_arena(rq), NS_IOT_DISCOVERY, "found");

		if (found && xml_attr_set(iq_arena(rq), found, "more", "false") == 0)
			iq_reply_result(rq, found);
		else
			iq_reply_error(rq, "internal-server-error", NULL);
		reg_op_discard(op);
		return;
	}
	iq_async_submit(rq, &op->base);
}

/* ---- The storage side ---- */

/*
 * The storage side of every registry request. Results travel in op:
 * status 1 means "claimed already" (register, mine), "disowned" (update)
 * or "was claimed" (unregister); -ENOENT is the XEP's item-not-found,
 * whatever the reason (no such thing, someone else's, removed).
 */
static int reg_op_run(struct storage *st, struct storage_req *req)
{
	struct registry_op *op = (struct registry_op *)req;
	struct iot_thing_key k = reg_key(op);
	int ret;

	switch (op->kind) {
	case REG_OP_REGISTER:
		ret = iot_db_register(st, &k, op->user[0] ? op->user : NULL, op->tags, op->ntags,
				      op->sig.data ? op->sig.data : "", op->self_owned,
				      REGISTRY_NODES_MAX, op->owner, sizeof(op->owner), op->now);
		op->status = ret == 1;
		return ret < 0 ? ret : 0;
	case REG_OP_CLAIM:
		ret = iot_db_claim(st, op->sig.data ? op->sig.data : "", op->requester, op->public_,
				   &op->info, op->now);
		op->status = ret == 1;
		return ret < 0 ? ret : 0;
	case REG_OP_UPDATE:
		ret = iot_db_thing_get(st, &k, &op->info);
		if (ret < 0)
			return ret;
		if (op->by_owner ? strcmp(op->info.owner, op->requester) != 0 || op->info.self_owned :
				   op->info.removed)
			return -ENOENT;
		if (!op->info.owner[0]) {
			op->status = 1;	/* disowned: must register again */
			return 0;
		}
		return iot_db_update_tags(st, op->info.id, op->tags, op->ntags, op->max_tags, op->now);
	case REG_OP_REMOVE:
		ret = iot_db_thing_get(st, &k, &op->info);
		if (ret == 0 && strcmp(op->info.owner, op->requester) != 0)
			ret = -ENOENT;
		return ret < 0 ? ret : iot_db_set_removed(st, op->info.id, op->now);
	case REG_OP_UNREGISTER:
		ret = iot_db_thing_get(st, &k, &op->info);
		if (ret == -ENOENT)
			return 0;
		op->status = ret == 0 && op->info.owner[0];
		return ret < 0 ? ret : iot_db_delete(st, &op->info);
	case REG_OP_DISOWN_CHECK:
		ret = iot_db_thing_get(st, &k, &op->info);
		if (ret == 0 && (strcmp(op->info.owner, op->requester) != 0 || op->info.self_owned))
			ret = -ENOENT;
		return ret;
	case REG_OP_DISOWN:
		return iot_db_disown(st, &op->info, op->key, op->now);
	case REG_OP_SEARCH: {
		struct reg_tag has = { 0 };

		/* A strEq among the ANDed operators narrows the walk through an index. */
		for (const struct reg_expr *e = op->expr->kids; e; e = e->next) {
			if (e->op == REG_OP_STR_EQ) {
				has.name = e->name;
				has.value = e->s1;
				break;
			}
		}
		return iot_db_things(st, NULL, has.name ? &has : NULL, reg_search_one, op);
	}
	}
	return -EINVAL;
}

/* ---- Completions ---- */

/* The search result: the collected <thing/> text inside <found more=''/>, parsed. */
static void reg_search_answer(struct registry_op *op, struct session *s)
{
	struct worker *w = iq_async_worker(&op->base);
	struct arena *a = iq_async_arena(&op->base);
	struct strbuf text = STRBUF_INIT;
	struct xml_node *found;

	if (!s)
		return;
	strbuf_printf(&text, "<found xmlns='%s' more='%s'>", NS_IOT_DISCOVERY,
		      op->more ? "true" : "false");
	if (op->out.len)
		strbuf_append(&text, op->out.data, op->out.len);
	strbuf_puts(&text, "</found>");
	found = text.oom ? NULL : stored_xml_parse(w->xml, a, text.data, text.len);
	if (found)
		iq_async_result(&op->base, s, found);
	else
		iq_async_error(&op->base, s, "internal-server-error", NULL);
	strbuf_free(&text);
}

/*
 * <claimed jid='..'/> as an answer payload: the owner (to a thing
 * registering again) or the thing with its node attributes (to a claim).
 */
static struct xml_node *reg_claimed_el(struct arena *a, const char *jid,
				       const struct iot_thing_info *t)
{
	struct xml_node *c = xml_node_new(a, NS_IOT_DISCOVERY, "claimed");

	if (!c || xml_attr_set(a, c, "jid", jid) < 0 ||
	    (t && reg_node_attrs(a, c, t->node_id, t->source_id, t->cache_type) < 0))
		return NULL;
	return c;
}

/* A registration of the JID itself, not of a node behind it: what provisioning covers. */
static bool reg_jid_level(const struct iot_thing_info *t)
{
	return !t->node_id[0] && !t->source_id[0] && !t->cache_type[0];
}

/*
 * A claim went through: the thing is provisioned for its owner (JID level
 * only: provisioning decides per JID), owner and thing become friends
 * (a node's owner befriends the concentrator's JID), and the thing's
 * sessions are told (XEP-0347 3.7).
 */
static void reg_claimed(struct worker *w, struct registry_op *op)
{
	const struct iot_thing_info *t = &op->info;

	char node[IOT_NODE_MAX * 4 + 8];

	log_info("registry.claimed", "thing=%s node=%s owner=%s public=%s", t->jid,
		 log_sanitize(node, sizeof(node), t->node_id, strlen(t->node_id)), t->owner,
		 t->public_ ? "true" : "false");
	if (reg_jid_level(t)) {
		provisioning_thing_owned(w, t->jid, t->owner);
		cluster_provisioning_changed(w, t->jid);	/* the other nodes' tables */
	}
	iot_befriend(w, t->owner, t->jid);
	reg_tell_thing(w, op, "claimed");
}

static void reg_disown_ask(struct worker *w, struct registry_op *op);

/*
 * Completion of every registry request on the worker: side effects first
 * (they happen even if the requester left), then the answer.
 */
static void reg_op_done(struct storage_req *req)
{
	struct registry_op *op = (struct registry_op *)req;
	struct worker *w = iq_async_worker(&op->base);
	struct arena *a = iq_async_arena(&op->base);
	struct session *s;
	int res = req->result;

	/* The disown check keeps the request (and its in-flight slot) for the thing's answer. */
	if (op->kind == REG_OP_DISOWN_CHECK && res == 0) {
		reg_disown_ask(w, op);
		return;
	}
	s = iq_async_session(&op->base);
	/* What changed is carried out whether or not the requester is still there. */
	if (res == 0 && op->kind == REG_OP_CLAIM && !op->status)
		reg_claimed(w, op);
	if (res == 0 && op->kind == REG_OP_REMOVE)
		reg_tell_thing(w, op, "removed");
	if (res == 0 && op->kind == REG_OP_UNREGISTER && op->status && reg_jid_level(&op->info)) {
		provisioning_thing_released(w, op->info.jid);
		cluster_provisioning_changed(w, op->info.jid);
	}
	if (res == 0 && op->kind == REG_OP_DISOWN) {
		log_info("registry.disowned", "thing=%s owner=%s", op->info.jid, op->info.owner);
		if (reg_jid_level(&op->info)) {
			provisioning_thing_released(w, op->info.jid);
			cluster_provisioning_changed(w, op->info.jid);
		}
		iot_unfriend(w, op->info.owner, op->info.jid);
	}
	if (!s)
		goto out;
	if (res == -ENOENT) {
		/* XEP-0347: never say why (no such thing, or someone else's). */
		iq_async_error(&op->base, s, "item-not-found", NULL);
	} else if (res == -ENOSPC) {
		iq_async_error(&op->base, s, "resource-constraint",
			       op->kind == REG_OP_REGISTER ? "too many things behind this JID" :
			       "too many meta tags (max_thing_tags)");
	} else if (res < 0) {
		iq_async_error(&op->base, s, op->kind == REG_OP_DISOWN ? "not-allowed" :
			       "internal-server-error", NULL);
	} else if (op->kind == REG_OP_REGISTER && op->status) {
		iq_async_result(&op->base, s, reg_claimed_el(a, op->owner, NULL));
	} else if (op->kind == REG_OP_CLAIM) {
		iq_async_result(&op->base, s, reg_claimed_el(a, op->info.jid, &op->info));
	} else if (op->kind == REG_OP_UPDATE && op->status) {
		iq_async_result(&op->base, s, xml_node_new(a, NS_IOT_DISCOVERY, "disowned"));
	} else if (op->kind == REG_OP_SEARCH) {
		reg_search_answer(op, s);
	} else {
		iq_async_result(&op->base, s, NULL);
	}
out:
	reg_op_free(op);
}

/* ---- Disown: asking the thing ---- */

/* Takes a disown off the waiting list (its timer is the caller's business). */
static void reg_pending_unlink(struct registry_op *op)
{
	for (struct registry_op **pp = &reg.pending; *pp; pp = &(*pp)->next_pending) {
		if (*pp == op) {
			*pp = op->next_pending;
			return;
		}
	}
}

/*
 * Ends a disown that will not happen: not-allowed to the owner. nested:
 * called from inside routing (the scratch arena is given back, not reset).
 */
static void reg_disown_fail(struct registry_op *op, const char *why, bool nested)
{
	struct worker *w = iq_async_worker(&op->base);
	struct arena_mark mark = arena_mark(&w->tmp);
	struct session *s = iq_async_session(&op->base);

	log_info("registry.disown_refused", "thing=%s reason=\"%s\"", op->info.jid, why);
	if (s)
		iq_async_error(&op->base, s, "not-allowed", why);
	if (nested) {
		arena_rewind(&w->tmp, mark);
		reg_op_discard(op);
	} else {
		reg_op_free(op);
	}
}

/* The thing did not answer <disowned/> in time: the disown is refused. */
static void reg_disown_timeout(struct loop_timer *t)
{
	struct registry_op *op = (struct registry_op *)((char *)t - offsetof(struct registry_op, timer));

	reg_pending_unlink(op);
	reg_disown_fail(op, "the thing did not answer", false);
}

/*
 * The requester owns it: the thing must be online and agree (XEP-0347
 * 3.13), so its available resource with the highest priority is sent
 * <disowned/> and the request waits (holding its in-flight slot) for the
 * answer or REGISTRY_DISOWN_TIMEOUT_MS. The new random KEY is made now,
 * so that the store needs nothing from the worker later.
 */
static void reg_disown_send(struct worker *w, struct registry_op *op, const char *best);

/* The thing's available session with the highest priority, here (its home), or NULL. */
static struct session *reg_best_session(struct worker *w, const char *bare)
{
	struct session *best = NULL;

	for (struct session *s = sessdir_find_bare(w->sessions, bare, strlen(bare)); s; s = s->next)
		if (!s->ending && s->available && (!best || s->priority > best->priority))
			best = s;
	return best;
}

/*
 * A round to the thing's home worker for its best session: the op stays
 * the service's (only carried), the full JID ("" when offline) comes back.
 */
struct reg_best_msg {
	struct worker_msg msg;		/* first */
	struct registry_op *op;
	unsigned asker;
	char jid[JID_MAX];		/* the thing's bare JID; back: the session's full JID */
};

static void reg_best_back(struct worker *w, struct worker_msg *m)
{
	struct reg_best_msg *bm = (struct reg_best_msg *)m;
	struct registry_op *op = bm->op;
	char full[JID_MAX];

	snprintf(full, sizeof(full), "%s", bm->jid);
	free(bm);
	reg_disown_send(w, op, full[0] ? full : NULL);
}

static void reg_best_arrived(struct worker *w, struct worker_msg *m)
{
	struct reg_best_msg *bm = (struct reg_best_msg *)m;
	struct session *best = reg_best_session(w, bm->jid);

	snprintf(bm->jid, sizeof(bm->jid), "%s", best ? best->jid : "");
	worker_post(w, bm->asker, &bm->msg, reg_best_back);
}

static void reg_disown_ask(struct worker *w, struct registry_op *op)
{
	struct session *best;
	struct reg_best_msg *bm;

	if (router_home_elsewhere(w, op->info.jid, strlen(op->info.jid))) {
		bm = calloc(1, sizeof(*bm));
		if (!bm) {
			reg_disown_fail(op, "could not ask the thing", false);
			return;
		}
		bm->op = op;
		bm->asker = w->id;
		snprintf(bm->jid, sizeof(bm->jid), "%s", op->info.jid);
		worker_post(w, worker_home(w->srv, bm->jid), &bm->msg, reg_best_arrived);
		return;
	}
	best = reg_best_session(w, op->info.jid);
	reg_disown_send(w, op, best ? best->jid : NULL);
}

static void reg_first_resource(void *arg, const char *full)
{
	char *out = arg;

	if (!out[0])
		snprintf(out, JID_MAX, "%s", full);
}

/* Asks session `best` (full JID; NULL: the thing is offline), see reg_disown_ask. */
static void reg_disown_send(struct worker *w, struct registry_op *op, const char *best)
{
	struct xml_node *iq, *el;
	unsigned char raw[REGISTRY_KEY_BYTES];
	char remote[JID_MAX] = "";
	struct arena a;

	/* Cluster mode: online on another node only; asked there (the answer comes back here). */
	if (!best && cluster_enabled() &&
	    cluster_each_resource(op->info.jid, reg_first_resource, remote) > 0)
		best = remote;
	if (!best) {
		reg_disown_fail(op, "the thing is offline", false);
		return;
	}
	if (getrandom(raw, sizeof(raw), 0) != sizeof(raw)) {
		reg_disown_fail(op, "no randomness for a new key", false);
		return;
	}
	for (size_t i = 0; i < sizeof(raw); i++)
		snprintf(op->key + 2 * i, 3, "%02x", raw[i]);
	snprintf(op->thing_full, sizeof(op->thing_full), "%s", best);
	arena_init(&a, REG_ARENA_CHUNK);
	el = reg_iq_to(w, &a, best, "disowned", op->iq_id, sizeof(op->iq_id), &iq);
	if (!el || reg_node_attrs(&a, el, op->info.node_id, op->info.source_id,
				  op->info.cache_type) < 0 || router_route_stanza(w, iq) < 0) {
		arena_release(&a);
		reg_disown_fail(op, "could not ask the thing", false);
		return;
	}
	arena_release(&a);
	op->next_pending = reg.pending;
	reg.pending = op;
	op->timer.fn = reg_disown_timeout;
	loop_timer_arm(w->loop, &op->timer, REGISTRY_DISOWN_TIMEOUT_MS);
}

/*
 * An iq result or error for the registry: a thing answering <disowned/>?
 * Only the session that was asked can answer (id and full JID); answers
 * to <claimed/> and <removed/> end here unread.
 */
static void reg_iq_answer(struct worker *w, struct xml_node *st, const struct jid *from)
{
	const char *id = xml_attr_get(st, "id");

	if (!id)
		return;
	for (struct registry_op *op = reg.pending; op; op = op->next_pending) {
		if (strcmp(op->iq_id, id) != 0 || strcmp(op->thing_full, from->buf) != 0)
			continue;
		reg_pending_unlink(op);
		loop_timer_cancel(&op->timer);
		if (stanza_is_error(st)) {
			reg_disown_fail(op, "the thing refused", true);
			return;
		}
		/* Agreed: unclaim it (the same request goes to the store again). */
		op->kind = REG_OP_DISOWN;
		op->base.req.next = NULL;
		op->base.req.result = 0;
		storage_queue_submit(w->srv->store, &op->base.req);
		return;
	}
}

void registry_shutdown(void)
{
	while (reg.pending) {
		struct registry_op *op = reg.pending;

		reg.pending = op->next_pending;
		/* The loop is gone: the timer needs no cancelling, only the memory goes. */
		arena_release(&op->a);
		strbuf_free(&op->sig);
		strbuf_free(&op->out);
		free(op);
	}
	reg.counter = 0;
}

/* ---- Dispatch ---- */

/* disco#info: XEP-0347 has no identity of its own; the feature says what it is. */
static void reg_disco_info(struct iq_request *rq)
{
	struct arena *a = iq_arena(rq);
	struct xml_node *q = xml_node_new(a, NS_DISCO_INFO, "query"), *n;

	if (!q || xml_attr_get(rq->payload, "node")) {
		iq_reply_error(rq, q ? "item-not-found" : "internal-server-error", NULL);
		return;
	}
	n = xml_node_add_child(a, q, NULL, "identity");
	if (!n || xml_attr_set(a, n, "category", "component") < 0 ||
	    xml_attr_set(a, n, "type", "generic") < 0 ||
	    xml_attr_set(a, n, "name", "Thing registry") < 0)
		goto oom;
	n = xml_node_add_child(a, q, NULL, "feature");
	if (!n || xml_attr_set(a, n, "var", NS_DISCO_INFO) < 0)
		goto oom;
	n = xml_node_add_child(a, q, NULL, "feature");
	if (!n || xml_attr_set(a, n, "var", NS_IOT_DISCOVERY) < 0)
		goto oom;
	iq_reply_result(rq, q);
	return;
oom:
	iq_reply_error(rq, "internal-server-error", NULL);
}

/* The registry's iq payloads: gets are searches and disco, sets change things. */
static void reg_dispatch(struct iq_request *rq, bool get)
{
	struct xml_node *p = rq->payload;
	bool disco = strcmp(p->ns, NS_IOT_DISCOVERY) == 0;

	if (get && strcmp(p->ns, NS_DISCO_INFO) == 0 && strcmp(p->name, "query") == 0)
		reg_disco_info(rq);
	else if (get && strcmp(p->ns, NS_DISCO_ITEMS) == 0 && strcmp(p->name, "query") == 0)
		iq_reply_result(rq, xml_node_new(iq_arena(rq), NS_DISCO_ITEMS, "query"));
	else if (disco && get && strcmp(p->name, "search") == 0)
		reg_search(rq);
	else if (disco && !get && strcmp(p->name, "register") == 0)
		reg_register(rq);
	else if (disco && !get && strcmp(p->name, "mine") == 0)
		reg_mine(rq);
	else if (disco && !get && strcmp(p->name, "update") == 0)
		reg_update(rq);
	else if (disco && !get && strcmp(p->name, "remove") == 0)
		reg_simple(rq, REG_OP_REMOVE, true);
	else if (disco && !get && strcmp(p->name, "unregister") == 0)
		reg_simple(rq, REG_OP_UNREGISTER, false);
	else if (disco && !get && strcmp(p->name, "disown") == 0)
		reg_simple(rq, REG_OP_DISOWN_CHECK, true);
	else
		iq_reply_error(rq, "service-unavailable", NULL);
}

void registry_route(struct worker *w, struct conn *src, struct xml_node *st,
		    const struct jid *from, const struct jid *to)
{
	const char *type = stanza_type(st);
	struct arena_mark mark = arena_mark(&w->tmp);
	struct iq_request rq = {
		.w = w, .conn = src, .iq = st, .from = from, .to = to, .scope = IQ_SCOPE_SERVER,
	};
	bool get = strcmp(type, "get") == 0;

	if (stanza_kind(st) != STANZA_IQ) {
		/* Nothing reads messages here; presence is ignored (no friendship needed). */
		if (stanza_kind(st) == STANZA_MESSAGE && !stanza_is_error(st))
			router_bounce_w(w, src, st, "service-unavailable");
		return;
	}
	if (!get && strcmp(type, "set") != 0) {
		reg_iq_answer(w, st, from);
		return;
	}
	/*
	 * Only local clients ask, on their stream here or from their home
	 * worker (the answer is routed back there).
	 */
	if (src ? !src->sess : !router_from_local_session(w, src, st))
		return;
	rq.payload = xml_first_element(st);
	if (!rq.payload || jid_has_local(to) || jid_has_resource(to))
		iq_reply_error(&rq, "service-unavailable", NULL);
	else
		reg_dispatch(&rq, get);
	arena_rewind(&w->tmp, mark);
}
