/* SPDX-License-Identifier: MIT */
/*
 * XEP-0050 Ad-Hoc Commands: the command list, sessions, stages and
 * actions. See adhoc.h; the commands themselves live in their feature
 * files (admin.c: XEP-0133).
 */
#include <errno.h>
#include <inttypes.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>

#include "adhoc.h"
#include "admin.h"
#include "config.h"
#include "conn.h"
#include "log.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "worker.h"

#define ADHOC_MAC_HEX	16	/* hex digits of the MAC in a session id (64 bits) */

/* Every command the server offers, by feature. */
static const struct {
	const struct adhoc_command *v;
	const size_t *n;
} adhoc_tables[] = {
	{ admin_commands, &admin_ncommands },
};

#define N_ADHOC_TABLES (sizeof(adhoc_tables) / sizeof(adhoc_tables[0]))

/* An open command session: one requester, one command, one stage. */
struct adhoc_session {
	struct adhoc_session *next;
	const struct adhoc_command *cmd;
	uint64_t deadline_ms;		/* expires when the loop clock passes it */
	unsigned stage;
	bool busy;			/* an async step is in flight: never expired */
	char id[ADHOC_SESSIONID_MAX];
	size_t owner_bare_len;		/* owner[0..owner_bare_len) is the bare JID */
	char owner[];			/* requester's full JID */
};

struct adhoc_worker {
	struct adhoc_session *sessions;	/* newest first */
	unsigned count;
	uint64_t seq;			/* session ids issued by this worker */
};

/* ---- Actions ---- */

static const char *const adhoc_action_names[] = {
	[ADHOC_ACTION_EXECUTE] = "execute",
	[ADHOC_ACTION_CANCEL] = "cancel",
	[ADHOC_ACTION_PREV] = "prev",
	[ADHOC_ACTION_NEXT] = "next",
	[ADHOC_ACTION_COMPLETE] = "complete",
};

enum adhoc_action adhoc_action_parse(const char *name)
{
	if (!name)
		return ADHOC_ACTION_EXECUTE;
	for (unsigned i = ADHOC_ACTION_EXECUTE; i <= ADHOC_ACTION_COMPLETE; i++)
		if (strcmp(adhoc_action_names[i], name) == 0)
			return (enum adhoc_action)i;
	return 0;
}

enum adhoc_action adhoc_action_resolve(enum adhoc_action a, unsigned stage, unsigned nstages)
{
	bool last = stage + 1 >= nstages;

	switch (a) {
	case ADHOC_ACTION_CANCEL:
		return a;
	case ADHOC_ACTION_EXECUTE:
		/* XEP-0050 6.4: 'execute' is the stage's default, which we set as below. */
		return last ? ADHOC_ACTION_COMPLETE : ADHOC_ACTION_NEXT;
	case ADHOC_ACTION_PREV:
		return stage > 0 && stage < nstages ? a : 0;
	case ADHOC_ACTION_NEXT:
		return !last ? a : 0;
	case ADHOC_ACTION_COMPLETE:
		return last && nstages ? a : 0;
	}
	return 0;
}

/* ---- Commands ---- */

/* The command at node, or NULL. A handful of entries: a linear scan. */
static const struct adhoc_command *adhoc_find(const char *node)
{
	for (size_t t = 0; t < N_ADHOC_TABLES; t++)
		for (size_t i = 0; i < *adhoc_tables[t].n; i++)
			if (strcmp(adhoc_tables[t].v[i].node, node) == 0)
				return &adhoc_tables[t].v[i];
	return NULL;
}

/* One rule for listing and running, so the list never shows what would be forbidden. */
static bool adhoc_allowed(const struct worker *w, const struct adhoc_command *cmd,
			  const char *requester_bare)
{
	return !cmd->allowed || cmd->allowed(w, requester_bare);
}

struct worker *adhoc_worker(const struct adhoc_ctx *ctx)
{
	return iq_async_worker(&ctx->a);
}

struct arena *adhoc_arena(const struct adhoc_ctx *ctx)
{
	return iq_async_arena(&ctx->a);
}

static const char *adhoc_domain(const struct adhoc_ctx *ctx)
{
	return adhoc_worker(ctx)->srv->cfg->domain;
}

/* ---- Session ids ---- */

static uint8_t adhoc_key[32];
static pthread_once_t adhoc_key_once = PTHREAD_ONCE_INIT;

static void adhoc_key_init(void)
{
	/* Process-wide, so a session id means the same on every worker. */
	if (RAND_bytes(adhoc_key, sizeof(adhoc_key)) != 1)
		log_error("adhoc.key_failed", "msg=\"no random bytes; session ids are guessable\"");
}

/*
 * The MAC part of a session id: HMAC-SHA256 over the id's prefix, the
 * owner's full JID and the command node, first 64 bits in hex. Binding
 * owner and node means an id is only recognized for its own requester
 * and command. out gets ADHOC_MAC_HEX + 1 bytes.
 */
static void adhoc_mac(const char *prefix, size_t prefix_len, const char *owner,
		      const char *node, char *out)
{
	unsigned char md[EVP_MAX_MD_SIZE];
	unsigned mdlen = 0;
	struct strbuf b = STRBUF_INIT;

	pthread_once(&adhoc_key_once, adhoc_key_init);
	strbuf_append(&b, prefix, prefix_len);
	strbuf_append(&b, "", 1);
	strbuf_puts(&b, owner);
	strbuf_append(&b, "", 1);
	strbuf_puts(&b, node);
	if (b.oom || !HMAC(EVP_sha256(), adhoc_key, sizeof(adhoc_key), (const unsigned char *)b.data,
			   b.len, md, &mdlen) || mdlen < ADHOC_MAC_HEX / 2)
		memset(md, 0, sizeof(md));	/* an id that never verifies */
	strbuf_free(&b);
	for (unsigned i = 0; i < ADHOC_MAC_HEX / 2; i++)
		snprintf(out + 2 * i, 3, "%02x", md[i]);
}

/* A new id "w<worker>-<seq>-<mac>" for owner and node into out. */
static void adhoc_new_id(struct worker *w, struct adhoc_worker *aw, const char *owner,
			 const char *node, char *out)
{
	char mac[ADHOC_MAC_HEX + 1];
	int n;

	n = snprintf(out, ADHOC_SESSIONID_MAX, "w%u-%" PRIx64, w->id, ++aw->seq);
	adhoc_mac(out, (size_t)n, owner, node, mac);
	snprintf(out + n, ADHOC_SESSIONID_MAX - (size_t)n, "-%s", mac);
}

/* Whether id is one this server issued to owner for node (active or not). */
static bool adhoc_id_ours(const char *id, const char *owner, const char *node)
{
	const char *dash = strrchr(id, '-');
	char mac[ADHOC_MAC_HEX + 1];

	if (!dash || strlen(id) >= ADHOC_SESSIONID_MAX || strlen(dash + 1) != ADHOC_MAC_HEX)
		return false;
	adhoc_mac(id, (size_t)(dash - id), owner, node, mac);
	return CRYPTO_memcmp(mac, dash + 1, ADHOC_MAC_HEX) == 0;
}

/* ---- Session table ---- */

/*
 * The worker's table, made at the first command: sessions stay with the
 * worker that owns the requester's connection, so no lock is needed.
 * NULL on ENOMEM.
 */
static struct adhoc_worker *adhoc_worker_state(struct worker *w)
{
	if (!w->adhoc)
		w->adhoc = calloc(1, sizeof(*w->adhoc));
	return w->adhoc;
}

/* Removes and frees s (its id then reads as ended: session-expired). */
static void adhoc_session_unlink(struct adhoc_worker *aw, struct adhoc_session *s)
{
	for (struct adhoc_session **pp = &aw->sessions; *pp; pp = &(*pp)->next) {
		if (*pp == s) {
			*pp = s->next;
			aw->count--;
			free(s);
			return;
		}
	}
}

/*
 * The open session with this id, or NULL. Linear: a worker holds at most
 * ADHOC_MAX_SESSIONS, and in practice a few (only admins run commands).
 */
static struct adhoc_session *adhoc_session_find(struct worker *w, const char *id)
{
	if (!w->adhoc || !id[0])
		return NULL;
	for (struct adhoc_session *s = w->adhoc->sessions; s; s = s->next)
		if (strcmp(s->id, id) == 0)
			return s;
	return NULL;
}

/* Ends sessions past their deadline (the next use of their id gets session-expired). */
static void adhoc_sweep(struct worker *w)
{
	uint64_t now = loop_now_ms(w->loop);
	struct adhoc_session **pp;

	if (!w->adhoc)
		return;
	for (pp = &w->adhoc->sessions; *pp;) {
		struct adhoc_session *s = *pp;

		if (!s->busy && now >= s->deadline_ms) {
			log_debug("adhoc.expired", "session=%s jid=%s", s->id, s->owner);
			*pp = s->next;
			w->adhoc->count--;
			free(s);
		} else {
			pp = &s->next;
		}
	}
}

/*
 * The oldest idle session, of one account (bare != NULL) or of anyone.
 * The list is newest first, so that is the last match.
 */
static struct adhoc_session *adhoc_oldest(struct adhoc_worker *aw, const char *bare,
					  size_t bare_len, unsigned *count)
{
	struct adhoc_session *oldest = NULL;

	*count = 0;
	for (struct adhoc_session *s = aw->sessions; s; s = s->next) {
		if (bare && (s->owner_bare_len != bare_len || memcmp(s->owner, bare, bare_len)))
			continue;
		(*count)++;
		if (!s->busy)
			oldest = s;
	}
	return oldest;
}

/*
 * Makes room for one more session of the account with bare JID bare:
 * past adhoc_max_sessions for the account, or ADHOC_MAX_SESSIONS for the
 * worker, the oldest idle session ends (a client that walks away from a
 * form without cancelling must not lock its account out until expiry).
 * 0, or -EBUSY when every session in the way is busy.
 */
static int adhoc_make_room(struct worker *w, struct adhoc_worker *aw, const char *bare)
{
	size_t bare_len = strlen(bare);
	struct adhoc_session *old;
	unsigned n;

	old = adhoc_oldest(aw, bare, bare_len, &n);
	if (n >= w->srv->cfg->adhoc_max_sessions) {
		if (!old)
			return -EBUSY;
		log_info("adhoc.evicted", "session=%s jid=%s reason=account_limit", old->id,
			 old->owner);
		adhoc_session_unlink(aw, old);
	}
	if (aw->count >= ADHOC_MAX_SESSIONS) {
		old = adhoc_oldest(aw, NULL, 0, &n);
		if (!old)
			return -EBUSY;
		log_info("adhoc.evicted", "session=%s jid=%s reason=worker_limit", old->id, old->owner);
		adhoc_session_unlink(aw, old);
	}
	return 0;
}

/* A step happened: the session lives adhoc_timeout seconds more. */
static void adhoc_touch(struct worker *w, struct adhoc_session *s)
{
	s->deadline_ms = loop_now_ms(w->loop) + (uint64_t)w->srv->cfg->adhoc_timeout * 1000;
}

void adhoc_worker_destroy(struct worker *w)
{
	struct adhoc_session *s;

	if (!w->adhoc)
		return;
	while ((s = w->adhoc->sessions) != NULL) {
		w->adhoc->sessions = s->next;
		free(s);
	}
	free(w->adhoc);
	w->adhoc = NULL;
}

/* ---- Replies ---- */

/* <command xmlns node sessionid? status?/> in the scratch arena, or NULL. */
static struct xml_node *adhoc_command_node(struct adhoc_ctx *ctx, const char *node,
					   const char *status)
{
	struct arena *a = adhoc_arena(ctx);
	struct xml_node *c = xml_node_new(a, NS_COMMANDS, "command");

	if (!c || (node && xml_attr_set(a, c, "node", node) < 0) ||
	    (ctx->sessionid[0] && xml_attr_set(a, c, "sessionid", ctx->sessionid) < 0) ||
	    (status && xml_attr_set(a, c, "status", status) < 0) ||
	    xml_attr_set_ns(a, c, XML_NS_XML, "lang", "en") < 0)
		return NULL;
	return c;
}

/* <note type='info|warn|error'>text</note> (XEP-0050 4.5). */
static int adhoc_add_note(struct arena *a, struct xml_node *cmd, const char *type,
			  const char *text)
{
	struct xml_node *n = xml_node_add_child(a, cmd, NULL, "note");

	if (!n || xml_attr_set(a, n, "type", type ? type : "info") < 0 ||
	    xml_node_add_text(a, n, text, strlen(text)) < 0)
		return -ENOMEM;
	return 0;
}

/* <actions/> for a stage (XEP-0050 6.4): the default, prev when possible. */
static int adhoc_add_actions(struct arena *a, struct xml_node *cmd, unsigned stage,
			     unsigned nstages)
{
	const char *dflt = stage + 1 < nstages ? "next" : "complete";
	struct xml_node *act = xml_node_add_child(a, cmd, NULL, "actions");

	if (!act || xml_attr_set(a, act, "execute", dflt) < 0 ||
	    (stage > 0 && !xml_node_add_child(a, act, NULL, "prev")) ||
	    !xml_node_add_child(a, act, NULL, dflt))
		return -ENOMEM;
	return 0;
}

/*
 * The answer, through the requester's session (router_deliver: a session
 * stream management holds gets it on resumption). cmd NULL means building
 * it ran out of memory: internal-server-error instead.
 */
static void adhoc_send_result(struct adhoc_ctx *ctx, struct xml_node *cmd)
{
	ctx->answered = true;
	if (!ctx->s)
		return;
	if (!cmd) {
		iq_async_error(&ctx->a, ctx->s, "internal-server-error", NULL);
		return;
	}
	iq_async_result(&ctx->a, ctx->s, cmd);
}

/*
 * An error answer: condition, optional commands-namespace condition
 * after it (XEP-0050 4.6), optional text, and `echo` (a <command/> made
 * here; never the request's payload, which may hold a password).
 */
static void adhoc_error(struct adhoc_ctx *ctx, const char *condition, const char *cmd_condition,
			const char *text, struct xml_node *echo)
{
	struct arena *a = adhoc_arena(ctx);
	struct xml_node *shell = xml_node_new(a, XML_NS_CLIENT, "iq"), *r, *err;

	ctx->answered = true;
	if (!ctx->s)
		return;
	if (!shell || xml_attr_set(a, shell, "type", "set") < 0 ||
	    (ctx->a.id[0] && xml_attr_set(a, shell, "id", ctx->a.id) < 0) ||
	    xml_attr_set(a, shell, "from", ctx->a.from) < 0 ||
	    (ctx->a.to[0] && xml_attr_set(a, shell, "to", ctx->a.to) < 0))
		goto err_oom;
	if (echo)
		xml_node_append(shell, echo);
	r = stanza_error_reply(a, shell, adhoc_domain(ctx), condition, text);
	if (!r)
		goto err_oom;
	err = xml_child(r, XML_NS_CLIENT, "error");
	if (cmd_condition && (!err || !xml_node_add_child(a, err, NS_COMMANDS, cmd_condition)))
		goto err_oom;
	router_deliver(ctx->s, r);
	return;
err_oom:
	log_warn("adhoc.reply_failed", "jid=%s msg=\"out of memory\"", ctx->a.from);
}

/* An error before a session is involved: echo the node (and sessionid) only. */
static void adhoc_refuse(struct adhoc_ctx *ctx, const char *node, const char *condition,
			 const char *cmd_condition, const char *text)
{
	adhoc_error(ctx, condition, cmd_condition, text, adhoc_command_node(ctx, node, NULL));
}

/*
 * Sends the form of ctx->stage (status 'executing', with actions), with
 * an optional note; prefilled from ctx->form when `prefill` is set.
 */
static void adhoc_send_form(struct adhoc_ctx *ctx, bool prefill, const char *note_type,
			    const char *note)
{
	struct arena *a = adhoc_arena(ctx);
	struct xml_node *cmd = adhoc_command_node(ctx, ctx->cmd->node, "executing");
	struct xml_node *x = ctx->cmd->form(ctx, ctx->stage);

	if (!cmd || !x || adhoc_add_actions(a, cmd, ctx->stage, ctx->cmd->nstages) < 0 ||
	    (note && adhoc_add_note(a, cmd, note_type, note) < 0) ||
	    (prefill && ctx->form && dataform_prefill(a, x, ctx->form) < 0)) {
		adhoc_send_result(ctx, NULL);
		return;
	}
	xml_node_append(cmd, x);
	adhoc_send_result(ctx, cmd);
}

void adhoc_complete(struct adhoc_ctx *ctx, const char *note_type, const char *note,
		    struct xml_node *payload)
{
	struct worker *w = adhoc_worker(ctx);
	struct adhoc_session *s = adhoc_session_find(w, ctx->sessionid);
	struct xml_node *cmd;

	if (s)
		adhoc_session_unlink(w->adhoc, s);
	cmd = adhoc_command_node(ctx, ctx->cmd->node, "completed");
	if (cmd && note && adhoc_add_note(adhoc_arena(ctx), cmd, note_type, note) < 0)
		cmd = NULL;
	if (cmd && payload)
		xml_node_append(cmd, payload);
	adhoc_send_result(ctx, cmd);
}

void adhoc_advance(struct adhoc_ctx *ctx)
{
	struct worker *w = adhoc_worker(ctx);
	struct adhoc_session *s = adhoc_session_find(w, ctx->sessionid);

	if (!s || ctx->stage + 1 >= ctx->cmd->nstages) {
		/* Ended meanwhile (evicted during an async step), or a command bug. */
		adhoc_refuse(ctx, ctx->cmd->node, "not-allowed", "session-expired",
			     "the command session ended");
		return;
	}
	s->stage = ++ctx->stage;
	adhoc_touch(w, s);
	ctx->form = NULL;	/* the next stage starts from its defaults */
	adhoc_send_form(ctx, false, NULL, NULL);
}

void adhoc_fail(struct adhoc_ctx *ctx, const char *condition, const char *cmd_condition,
		const char *note, struct xml_node *form)
{
	struct arena *a = adhoc_arena(ctx);
	struct xml_node *cmd = adhoc_command_node(ctx, ctx->cmd->node, "executing");

	if (!form && ctx->cmd->nstages) {
		form = ctx->cmd->form(ctx, ctx->stage);
		if (form && ctx->form && dataform_prefill(a, form, ctx->form) < 0)
			form = NULL;
	}
	if (cmd && ((ctx->cmd->nstages &&
		     adhoc_add_actions(a, cmd, ctx->stage, ctx->cmd->nstages) < 0) ||
		    adhoc_add_note(a, cmd, "error", note) < 0))
		cmd = NULL;
	if (cmd && form)
		xml_node_append(cmd, form);
	adhoc_error(ctx, condition, cmd_condition, note, cmd);
}

/* ---- Async steps ---- */

/*
 * The copy keeps everything an answer needs (addressing, command, stage,
 * session id); the session is marked busy so that neither a second step
 * nor expiry can overtake the storage round trip.
 */
void *adhoc_async_new(struct adhoc_ctx *ctx, size_t size, const char *user,
		      int (*run)(struct storage *st, struct storage_req *req),
		      void (*done)(struct storage_req *req))
{
	struct adhoc_session *s;
	struct adhoc_ctx *op;

	/* As iq_async_new, but errors never echo the payload (passwords). */
	if (ctx->rq->conn && ctx->rq->conn->iq_async >= IQ_ASYNC_MAX_INFLIGHT) {
		adhoc_refuse(ctx, ctx->cmd->node, "resource-constraint", NULL,
			     "too many requests in progress");
		return NULL;
	}
	op = calloc(1, size);
	if (!op) {
		adhoc_refuse(ctx, ctx->cmd->node, "internal-server-error", NULL, NULL);
		return NULL;
	}
	memcpy(op, ctx, sizeof(*op));
	op->a.req.op = STORAGE_OP_RUN;
	op->a.req.run = run;
	op->a.req.done = done;
	snprintf(op->a.req.user, sizeof(op->a.req.user), "%s", user);
	op->form = NULL;
	op->s = NULL;
	op->answered = false;
	s = adhoc_session_find(adhoc_worker(ctx), ctx->sessionid);
	if (s)
		s->busy = true;
	ctx->answered = true;	/* the completion answers */
	return op;
}

void adhoc_async_submit(struct adhoc_ctx *op)
{
	struct iq_request *rq = op->rq;

	op->rq = NULL;
	iq_async_submit(rq, &op->a);
}

void adhoc_async_hold(struct adhoc_ctx *op)
{
	struct iq_request *rq = op->rq;

	op->rq = NULL;
	/* Counted as a storage step is (iq_async_submit): iq_async_session() releases it. */
	if (rq->conn) {
		rq->conn->iq_async++;
		op->a.counted = true;
	}
}

bool adhoc_async_begin(struct adhoc_ctx *op)
{
	struct adhoc_session *s = adhoc_session_find(adhoc_worker(op), op->sessionid);

	if (s) {
		s->busy = false;
		adhoc_touch(adhoc_worker(op), s);
	}
	op->s = iq_async_session(&op->a);
	return op->s != NULL;
}

void adhoc_async_free(struct adhoc_ctx *op)
{
	if (!op)
		return;
	/* Credentials derived for an account operation leave no trace. */
	explicit_bzero(&op->a.req.password, sizeof(op->a.req.password));
	explicit_bzero(&op->a.req.creds, sizeof(op->a.req.creds));
	iq_async_free(&op->a);
}

/* ---- Execution ---- */

/* A new session (or, for a command without stages, just its run). */
static void adhoc_start(struct adhoc_ctx *ctx)
{
	struct worker *w = adhoc_worker(ctx);
	struct adhoc_worker *aw = adhoc_worker_state(w);
	struct adhoc_session *s;
	size_t len = strlen(ctx->a.from);

	if (!aw) {
		adhoc_refuse(ctx, ctx->cmd->node, "internal-server-error", NULL, NULL);
		return;
	}
	adhoc_new_id(w, aw, ctx->a.from, ctx->cmd->node, ctx->sessionid);
	ctx->stage = 0;
	if (!ctx->cmd->nstages) {
		ctx->cmd->run(ctx, 0, NULL);
		return;
	}
	if (adhoc_make_room(w, aw, ctx->requester) < 0) {
		ctx->sessionid[0] = '\0';
		adhoc_refuse(ctx, ctx->cmd->node, "resource-constraint", NULL,
			     "too many command sessions in progress");
		return;
	}
	s = calloc(1, sizeof(*s) + len + 1);
	if (!s) {
		ctx->sessionid[0] = '\0';
		adhoc_refuse(ctx, ctx->cmd->node, "internal-server-error", NULL, NULL);
		return;
	}
	s->cmd = ctx->cmd;
	memcpy(s->id, ctx->sessionid, sizeof(s->id));
	memcpy(s->owner, ctx->a.from, len + 1);
	s->owner_bare_len = strlen(ctx->requester);
	adhoc_touch(w, s);
	s->next = aw->sessions;
	aw->sessions = s;
	aw->count++;
	log_debug("adhoc.start", "session=%s node=%s jid=%s", s->id, s->cmd->node, s->owner);
	adhoc_send_form(ctx, false, NULL, NULL);
}

/*
 * A submission for ctx->stage: parsed, checked against the stage's own
 * form, then handed to the command. Every refusal sends the form again.
 */
static void adhoc_submit(struct adhoc_ctx *ctx)
{
	struct arena *a = adhoc_arena(ctx);
	struct xml_node *x = dataform_find(ctx->rq->payload, NULL), *tx;
	struct dataform sub, tmpl;
	const char *why = NULL, *bad = NULL;
	char note[256];

	if (!x) {
		adhoc_fail(ctx, "bad-request", "bad-payload", "this step needs the form filled in",
			   NULL);
		return;
	}
	if (dataform_parse(a, x, &sub, &why) < 0) {
		adhoc_fail(ctx, "bad-request", "bad-payload", why, NULL);
		return;
	}
	/* XEP-0050 6.5.1: a form of type cancel counts as a submission. */
	if (sub.type != DATAFORM_SUBMIT && sub.type != DATAFORM_CANCEL) {
		adhoc_fail(ctx, "bad-request", "bad-payload", "the form must be of type 'submit'",
			   NULL);
		return;
	}
	ctx->form = &sub;
	tx = ctx->cmd->form(ctx, ctx->stage);
	if (!tx || dataform_parse(a, tx, &tmpl, NULL) < 0) {
		adhoc_refuse(ctx, ctx->cmd->node, "internal-server-error", NULL, NULL);
		return;
	}
	if (dataform_validate(&tmpl, &sub, &bad, &why) < 0) {
		if (bad)
			snprintf(note, sizeof(note), "%s: %s", bad, why);
		else
			snprintf(note, sizeof(note), "%s", why);
		adhoc_fail(ctx, "bad-request", "bad-payload", note, NULL);
		return;
	}
	ctx->cmd->run(ctx, ctx->stage, &sub);
}

/* A step of an open session: find it, check it is the requester's, act. */
static void adhoc_continue(struct adhoc_ctx *ctx, const char *sid, enum adhoc_action act)
{
	struct worker *w = adhoc_worker(ctx);
	const struct adhoc_command *cmd = ctx->cmd;
	struct adhoc_session *s;
	enum adhoc_action eff;

	adhoc_sweep(w);
	s = strlen(sid) < ADHOC_SESSIONID_MAX ? adhoc_session_find(w, sid) : NULL;
	if (!s) {
		/* XEP-0050 4.6: ours but over (completed, canceled, timed out) vs unknown. */
		if (adhoc_id_ours(sid, ctx->a.from, cmd->node))
			adhoc_refuse(ctx, cmd->node, "not-allowed", "session-expired",
				     "the command session is no longer active");
		else
			adhoc_refuse(ctx, cmd->node, "bad-request", "bad-sessionid",
				     "unknown command session");
		return;
	}
	/* Someone else's session, or another command's: unknown to this requester. */
	if (s->cmd != cmd || strcmp(s->owner, ctx->a.from) != 0) {
		adhoc_refuse(ctx, cmd->node, "bad-request", "bad-sessionid", "unknown command session");
		return;
	}
	memcpy(ctx->sessionid, s->id, sizeof(ctx->sessionid));
	ctx->stage = s->stage;
	if (s->busy) {
		adhoc_refuse(ctx, cmd->node, "resource-constraint", NULL,
			     "the previous step is still running");
		return;
	}
	/* Any step counts as activity, a refused one too: the requester is there. */
	adhoc_touch(w, s);
	eff = adhoc_action_resolve(act, s->stage, cmd->nstages);
	if (!eff) {
		adhoc_refuse(ctx, cmd->node, "bad-request", "bad-action",
			     "this step does not offer that action");
		return;
	}
	switch (eff) {
	case ADHOC_ACTION_CANCEL:
		adhoc_session_unlink(w->adhoc, s);
		adhoc_send_result(ctx, adhoc_command_node(ctx, cmd->node, "canceled"));
		return;
	case ADHOC_ACTION_PREV:
		/* Remembered values are optional (XEP-0050 4.3): the form comes with defaults. */
		s->stage = --ctx->stage;
		adhoc_send_form(ctx, false, NULL, NULL);
		return;
	default:
		adhoc_submit(ctx);
		return;
	}
}

/*
 * An error that must not echo anything of the request, for a request the
 * addressing copy cannot hold (an id longer than IQ_ASYNC_ID_MAX).
 */
static void adhoc_plain_error(struct iq_request *rq, const char *condition, const char *text)
{
	struct arena *a = iq_arena(rq);
	struct xml_node *shell = xml_node_new(a, XML_NS_CLIENT, "iq"), *r;
	const char *id = xml_attr_get(rq->iq, "id");
	const char *from = xml_attr_get(rq->iq, "from");
	const char *to = xml_attr_get(rq->iq, "to");

	if (!shell || xml_attr_set(a, shell, "type", "set") < 0 ||
	    (id && xml_attr_set(a, shell, "id", id) < 0) ||
	    (from && xml_attr_set(a, shell, "from", from) < 0) ||
	    (to && xml_attr_set(a, shell, "to", to) < 0))
		return;
	r = stanza_error_reply(a, shell, rq->w->srv->cfg->domain, condition, text);
	if (r)
		conn_send_node(rq->conn, r);
}

void adhoc_set(struct iq_request *rq)
{
	struct adhoc_ctx ctx;	/* about 12 KiB of addressing buffers, on the worker's stack */
	const char *node = xml_attr_get(rq->payload, "node");
	const char *sid = xml_attr_get(rq->payload, "sessionid");
	const char *id = xml_attr_get(rq->iq, "id");
	enum adhoc_action act;

	if (!rq->from || !id || strlen(id) > IQ_ASYNC_ID_MAX) {
		adhoc_plain_error(rq, "bad-request", "id too long");
		return;
	}
	memset(&ctx, 0, sizeof(ctx));
	ctx.s = iq_async_init_sync(&ctx.a, rq, NS_COMMANDS, "command");
	ctx.rq = rq;
	if (jid_bare_str(rq->from, ctx.requester, sizeof(ctx.requester)) < 0 || !ctx.s) {
		adhoc_plain_error(rq, "internal-server-error", NULL);
		return;
	}
	if (!node || !node[0]) {
		adhoc_refuse(&ctx, NULL, "bad-request", NULL, "a command needs a node");
		return;
	}
	ctx.cmd = adhoc_find(node);
	if (!ctx.cmd) {
		adhoc_refuse(&ctx, node, "item-not-found", NULL, NULL);
		return;
	}
	if (!adhoc_allowed(rq->w, ctx.cmd, ctx.requester)) {
		log_info("adhoc.forbidden", "jid=%s node=%s", ctx.a.from, ctx.cmd->node);
		adhoc_refuse(&ctx, ctx.cmd->node, "forbidden", NULL, NULL);
		return;
	}
	act = adhoc_action_parse(xml_attr_get(rq->payload, "action"));
	if (!act) {
		adhoc_refuse(&ctx, ctx.cmd->node, "bad-request", "malformed-action",
			     "unknown action");
		return;
	}
	if (!sid) {
		if (act != ADHOC_ACTION_EXECUTE) {
			adhoc_refuse(&ctx, ctx.cmd->node, "bad-request", "bad-sessionid",
				     "this action needs a sessionid");
			return;
		}
		adhoc_sweep(rq->w);
		adhoc_start(&ctx);
	} else {
		adhoc_continue(&ctx, sid, act);
	}
	if (!ctx.answered) {
		log_error("adhoc.unanswered", "node=%s", ctx.cmd->node);
		adhoc_refuse(&ctx, ctx.cmd->node, "internal-server-error", NULL, NULL);
	}
}

/*
 * ---- Service discovery ----
 * The command list node and the command nodes of XEP-0050 section 2;
 * disco.c asks here first for any node of the server.
 */

static struct xml_node *adhoc_identity(struct arena *a, struct xml_node *q, const char *type,
				       const char *name)
{
	struct xml_node *id = xml_node_add_child(a, q, NULL, "identity");

	if (!id || xml_attr_set(a, id, "category", "automation") < 0 ||
	    xml_attr_set(a, id, "type", type) < 0 || (name && xml_attr_set(a, id, "name", name) < 0))
		return NULL;
	return id;
}

static int adhoc_feature(struct arena *a, struct xml_node *q, const char *var)
{
	struct xml_node *f = xml_node_add_child(a, q, NULL, "feature");

	return f && xml_attr_set(a, f, "var", var) == 0 ? 0 : -ENOMEM;
}

static bool adhoc_requester(struct iq_request *rq, char *bare, size_t size)
{
	return rq->from && jid_bare_str(rq->from, bare, size) == 0;
}

bool adhoc_disco_info(struct iq_request *rq, const char *node)
{
	struct arena *a = iq_arena(rq);
	const struct adhoc_command *cmd = NULL;
	char bare[JID_MAX];
	struct xml_node *q;
	bool list = strcmp(node, NS_COMMANDS) == 0;

	if (!list && !(cmd = adhoc_find(node)))
		return false;
	if (cmd && (!adhoc_requester(rq, bare, sizeof(bare)) || !adhoc_allowed(rq->w, cmd, bare))) {
		/* XEP-0050 2.2: a command the requester may not run is forbidden. */
		iq_reply_error(rq, "forbidden", NULL);
		return true;
	}
	q = xml_node_new(a, NS_DISCO_INFO, "query");
	if (!q || xml_attr_set(a, q, "node", node) < 0 ||
	    !adhoc_identity(a, q, list ? "command-list" : "command-node", cmd ? cmd->name : NULL) ||
	    (cmd && (adhoc_feature(a, q, NS_COMMANDS) < 0 || adhoc_feature(a, q, NS_DATA_FORMS) < 0)) ||
	    (list && (adhoc_feature(a, q, NS_DISCO_INFO) < 0 || adhoc_feature(a, q, NS_DISCO_ITEMS) < 0))) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return true;
	}
	iq_reply_result(rq, q);
	return true;
}

bool adhoc_disco_items(struct iq_request *rq, const char *node)
{
	struct arena *a = iq_arena(rq);
	const char *domain = rq->w->srv->cfg->domain;
	char bare[JID_MAX];
	struct xml_node *q;

	if (strcmp(node, NS_COMMANDS) != 0)
		return false;
	q = xml_node_new(a, NS_DISCO_ITEMS, "query");
	if (!q || xml_attr_set(a, q, "node", node) < 0)
		goto err_oom;
	/* Only what this requester may run (XEP-0050 2.2: lists may differ per requester). */
	if (!adhoc_requester(rq, bare, sizeof(bare)))
		bare[0] = '\0';
	for (size_t t = 0; t < N_ADHOC_TABLES; t++) {
		for (size_t i = 0; i < *adhoc_tables[t].n; i++) {
			const struct adhoc_command *cmd = &adhoc_tables[t].v[i];
			struct xml_node *it;

			if (!bare[0] || !adhoc_allowed(rq->w, cmd, bare))
				continue;
			it = xml_node_add_child(a, q, NULL, "item");
			if (!it || xml_attr_set(a, it, "jid", domain) < 0 ||
			    xml_attr_set(a, it, "node", cmd->node) < 0 ||
			    xml_attr_set(a, it, "name", cmd->name) < 0)
				goto err_oom;
		}
	}
	iq_reply_result(rq, q);
	return true;
err_oom:
	iq_reply_error(rq, "internal-server-error", NULL);
	return true;
}
