/* SPDX-License-Identifier: MIT */
/*
 * XEP-0133 Service Administration commands (see admin.h). Each command is
 * a form builder and a run function for the ad-hoc engine (adhoc.c),
 * which has already checked the requester, the action, the session and
 * the submission against the form before run() is called.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "admin.h"
#include "c2s.h"
#include "config.h"
#include "fanout.h"
#include "jid.h"
#include "log.h"
#include "pubsub.h"
#include "router.h"
#include "server.h"
#include "session.h"
#include "storage.h"
#include "worker.h"

#define ADMIN_NODE(name)	NS_ADMIN "#" name
#define ADMIN_NOTE_MAX		1024	/* a note listing accounts is cut here */

/* config.c keeps the (at most CONFIG_MAX_LIST) admin JIDs normalized: bytes compare. */
bool admin_is_admin(const struct config *cfg, const char *bare)
{
	for (unsigned i = 0; i < cfg->admin.n; i++)
		if (strcmp(cfg->admin.v[i], bare) == 0)
			return true;
	return false;
}

static bool admin_allowed(const struct worker *w, const char *bare)
{
	return admin_is_admin(w->srv->cfg, bare);
}

/* A JID from a form, made safe for a log line. */
static const char *admin_logv(char *buf, size_t size, const char *v)
{
	return log_sanitize(buf, size, v, strlen(v));
}

/* ---- Forms ---- */

/*
 * A form as the XEP-0133 examples have them: FORM_TYPE
 * http://jabber.org/protocol/admin (section 5 registers the fields under
 * it), a title and instructions. NULL on ENOMEM.
 */
static struct xml_node *admin_form(struct adhoc_ctx *ctx, const char *title, const char *instr)
{
	struct arena *a = adhoc_arena(ctx);
	struct xml_node *x = dataform_new(a, DATAFORM_FORM, NS_ADMIN);

	if (!x || dataform_set_title(a, x, title) < 0 || dataform_add_instructions(a, x, instr) < 0)
		return NULL;
	return x;
}

/* Adds a field; a NULL form stays NULL, so builders chain without checks. */
static struct xml_node *admin_field(struct adhoc_ctx *ctx, struct xml_node *x,
				    enum dataform_field_type type, const char *var,
				    const char *label, bool required)
{
	struct arena *a = adhoc_arena(ctx);
	struct xml_node *f = x ? dataform_add_field(a, x, type, var, label) : NULL;

	if (!f || (required && dataform_field_set_required(a, f) < 0))
		return NULL;
	return x;
}

/* A result form (FORM_TYPE admin) with one field of values. */
static struct xml_node *admin_result(struct adhoc_ctx *ctx, enum dataform_field_type type,
				     const char *var, const char *label,
				     const char *const *values, size_t n)
{
	struct arena *a = adhoc_arena(ctx);
	struct xml_node *x = dataform_new(a, DATAFORM_RESULT, NS_ADMIN), *f;

	f = x ? dataform_add_field(a, x, type, var, label) : NULL;
	if (!f)
		return NULL;
	for (size_t i = 0; i < n; i++)
		if (dataform_field_add_value(a, f, values[i]) < 0)
			return NULL;
	return x;
}

/* A number answer (XEP-0133 4.13, 4.15): one text-single value in a result form. */
static struct xml_node *admin_result_num(struct adhoc_ctx *ctx, const char *var,
					 const char *label, uint64_t n)
{
	char num[24];
	const char *v = num;

	snprintf(num, sizeof(num), "%" PRIu64, n);
	return admin_result(ctx, DATAFORM_FIELD_TEXT_SINGLE, var, label, &v, 1);
}

/* The stage's form with one field set, for a refusal found after the submission is gone. */
static struct xml_node *admin_form_with(struct adhoc_ctx *ctx, const char *var, const char *value)
{
	struct xml_node *x = ctx->cmd->form(ctx, 0), *f;

	f = x ? dataform_field_node(x, var) : NULL;
	if (f && dataform_field_add_value(adhoc_arena(ctx), f, value) < 0)
		return NULL;
	return x;
}

/*
 * A JID from a form that must name an account of this server: bare (or,
 * for accept_full, with a resource). Fills j. 0 or -EINVAL.
 */
static int admin_local_jid(struct adhoc_ctx *ctx, const char *v, struct jid *j, bool accept_full)
{
	const char *domain = adhoc_worker(ctx)->srv->cfg->domain;

	if (jid_parse(j, v, strlen(v)) < 0 || !jid_has_local(j) ||
	    (jid_has_resource(j) && !accept_full) || j->domain_len != strlen(domain) ||
	    memcmp(j->buf + j->domain_off, domain, j->domain_len) != 0)
		return -EINVAL;
	return 0;
}

/* The localpart of j, which storage knows accounts by (JID_PART_MAX + 1 bytes). */
static void admin_localpart(const struct jid *j, char *out, size_t size)
{
	snprintf(out, size, "%.*s", (int)j->local_len, j->buf);
}

/* ---- Account operations (add-user, change-user-password) ---- */

struct admin_account_op {
	struct adhoc_ctx ctx;	/* first */
	char jid[JID_MAX];	/* the account's bare JID, for notes */
};

/*
 * XEP-0133 4.1. The password is required here although the XEP's form
 * leaves it optional: an account without credentials could never log
 * in. email, given_name and surname are not offered: nothing keeps them.
 */
static struct xml_node *admin_add_user_form(struct adhoc_ctx *ctx, unsigned stage)
{
	struct xml_node *x = admin_form(ctx, "Adding a User", "Fill out this form to add a user.");

	x = admin_field(ctx, x, DATAFORM_FIELD_JID_SINGLE, "accountjid",
			"The Jabber ID for the account to be added", true);
	x = admin_field(ctx, x, DATAFORM_FIELD_TEXT_PRIVATE, "password",
			"The password for this account", true);
	return admin_field(ctx, x, DATAFORM_FIELD_TEXT_PRIVATE, "password-verify",
			   "Retype password", false);
}

/* XEP-0133 4.7. */
static struct xml_node *admin_passwd_form(struct adhoc_ctx *ctx, unsigned stage)
{
	struct xml_node *x = admin_form(ctx, "Changing a User Password",
					"Fill out this form to change a user's password.");

	x = admin_field(ctx, x, DATAFORM_FIELD_JID_SINGLE, "accountjid",
			"The Jabber ID for this account", true);
	return admin_field(ctx, x, DATAFORM_FIELD_TEXT_PRIVATE, "password",
			   "The password for this account", true);
}

/*
 * The account write finished (keys derived and stored, or why not). The
 * refusals keep the session and send the form back with the JID filled
 * in, so the operator corrects one field instead of starting over.
 */
static void admin_account_done(struct storage_req *req)
{
	struct admin_account_op *op = (struct admin_account_op *)req;
	struct adhoc_ctx *ctx = &op->ctx;
	bool create = req->op == STORAGE_OP_ACCOUNT_CREATE;
	const char *event = create ? "admin.add_user" : "admin.change_password";
	char note[JID_MAX + 64];

	log_info(event, "admin=%s user=%s result=%d", ctx->requester, req->user, req->result);
	if (!adhoc_async_begin(ctx))
		goto out;
	switch (req->result) {
	case 0:
		snprintf(note, sizeof(note), create ? "The account %s was created." :
			 "The password of %s was changed.", op->jid);
		adhoc_complete(ctx, "info", note, NULL);
		break;
	case -EEXIST:
		/* XEP-0133 section 5: conflict; the form comes back to pick another name. */
		snprintf(note, sizeof(note), "The account %s already exists.", op->jid);
		adhoc_fail(ctx, "conflict", NULL, note, admin_form_with(ctx, "accountjid", op->jid));
		break;
	case -ENOENT:
		snprintf(note, sizeof(note), "There is no account %s.", op->jid);
		adhoc_fail(ctx, "item-not-found", NULL, note,
			   admin_form_with(ctx, "accountjid", op->jid));
		break;
	case -EINVAL:
		adhoc_fail(ctx, "not-acceptable", "bad-payload",
			   "The password is not acceptable (it must survive SASLprep).",
			   admin_form_with(ctx, "accountjid", op->jid));
		break;
	default:
		adhoc_fail(ctx, "internal-server-error", NULL, "The account could not be changed.",
			   admin_form_with(ctx, "accountjid", op->jid));
		break;
	}
out:
	adhoc_async_free(ctx);
}

/*
 * add-user and change-user-password: check the account JID and the
 * password, then the storage request that derives the keys and writes.
 */
static void admin_account_run(struct adhoc_ctx *ctx, const struct dataform *form,
			      enum storage_op kind)
{
	const char *v = dataform_value(form, "accountjid");
	const char *pw = dataform_value(form, "password");
	const char *verify = dataform_value(form, "password-verify");
	char user[JID_PART_MAX + 1];
	struct admin_account_op *op;
	struct jid j;

	if (!v || admin_local_jid(ctx, v, &j, false) < 0) {
		adhoc_fail(ctx, "bad-request", "bad-payload",
			   "accountjid: the account must be a bare JID of this server", NULL);
		return;
	}
	if (!pw || !pw[0] || strlen(pw) > SCRAM_PASSWORD_MAX) {
		adhoc_fail(ctx, "not-acceptable", "bad-payload",
			   "password: a password of 1 to 1023 bytes is needed", NULL);
		return;
	}
	if (kind == STORAGE_OP_ACCOUNT_CREATE && verify && strcmp(verify, pw) != 0) {
		adhoc_fail(ctx, "bad-request", "bad-payload", "password-verify: the passwords differ",
			   NULL);
		return;
	}
	admin_localpart(&j, user, sizeof(user));
	op = adhoc_async_new(ctx, sizeof(*op), user, NULL, admin_account_done);
	if (!op)
		return;
	op->ctx.a.req.op = kind;
	op->ctx.a.req.run = NULL;
	snprintf(op->ctx.a.req.password, sizeof(op->ctx.a.req.password), "%s", pw);
	snprintf(op->jid, sizeof(op->jid), "%s", j.buf);
	adhoc_async_submit(&op->ctx);
}

static void admin_add_user_run(struct adhoc_ctx *ctx, unsigned stage, const struct dataform *form)
{
	admin_account_run(ctx, form, STORAGE_OP_ACCOUNT_CREATE);
}

static void admin_passwd_run(struct adhoc_ctx *ctx, unsigned stage, const struct dataform *form)
{
	admin_account_run(ctx, form, STORAGE_OP_ACCOUNT_SET_PASSWORD);
}

/* ---- Targets: accountjids of delete-user and end-user-session ---- */

struct admin_targets {
	size_t n;
	struct jid *j;			/* n local JIDs, in the scratch arena */
	struct strbuf refused;		/* "a@b, c@d" not of this server */
};

/*
 * Reads accountjids: local JIDs (duplicates dropped, XEP-0004 3.3) into
 * t->j, bare unless keep_resource, the others listed in t->refused. 0,
 * or -E2BIG / -ENOMEM after answering the error.
 */
static int admin_targets(struct adhoc_ctx *ctx, const struct dataform *form, bool keep_resource,
			 struct admin_targets *t)
{
	const struct dataform_field *f = dataform_get(form, "accountjids");
	size_t nv = f ? f->nvalues : 0;

	memset(t, 0, sizeof(*t));
	if (nv > ADMIN_MAX_TARGETS) {
		adhoc_fail(ctx, "not-acceptable", "bad-payload",
			   "accountjids: at most 100 JIDs at once", NULL);
		return -E2BIG;
	}
	t->j = arena_alloc(adhoc_arena(ctx), (nv ? nv : 1) * sizeof(*t->j));
	if (!t->j) {
		adhoc_fail(ctx, "internal-server-error", NULL, "out of memory", NULL);
		return -ENOMEM;
	}
	for (size_t i = 0; i < nv; i++) {
		struct jid *j = &t->j[t->n];
		bool dup = false;

		if (!f->values[i][0])
			continue;
		if (admin_local_jid(ctx, f->values[i], j, true) < 0) {
			if (t->refused.len)
				strbuf_puts(&t->refused, ", ");
			strbuf_puts(&t->refused, f->values[i]);
			continue;
		}
		if (!keep_resource)
			jid_to_bare(j);
		for (size_t k = 0; k < t->n && !dup; k++)
			dup = jid_equal(&t->j[k], j);
		if (!dup)
			t->n++;
	}
	return 0;
}

/* Appends "label: list." to a note, cut at ADMIN_NOTE_MAX. */
static void admin_note_part(struct strbuf *note, const char *label, const struct strbuf *list)
{
	if (!list->len)
		return;
	if (note->len)
		strbuf_puts(note, " ");
	strbuf_printf(note, "%s: %.*s.", label, (int)(list->len > ADMIN_NOTE_MAX ? ADMIN_NOTE_MAX :
						      list->len), list->data);
}

/* ---- delete-user ---- */

struct admin_delete_op {
	struct adhoc_ctx ctx;			/* first */
	size_t n;
	int results[ADMIN_MAX_TARGETS];		/* storage_account_delete() per account */
	const char *jid[ADMIN_MAX_TARGETS];	/* bare JIDs, in text[] */
	char refused[ADMIN_NOTE_MAX + 1];	/* JIDs not of this server */
	char text[];				/* the JIDs, NUL-terminated one after another */
};

/* XEP-0133 4.2. */
static struct xml_node *admin_delete_form(struct adhoc_ctx *ctx, unsigned stage)
{
	struct xml_node *x = admin_form(ctx, "Deleting a User", "Fill out this form to delete a user.");

	return admin_field(ctx, x, DATAFORM_FIELD_JID_MULTI, "accountjids",
			   "The Jabber ID(s) to delete", true);
}

/* Storage thread: every account in one savepoint; a storage failure undoes all. */
static int admin_delete_store(struct storage *st, struct storage_req *req)
{
	struct admin_delete_op *op = (struct admin_delete_op *)req;

	for (size_t i = 0; i < op->n; i++) {
		char user[JID_PART_MAX + 1];
		const char *at = strchr(op->jid[i], '@');

		/* A bare JID of this server: a normalized localpart before the '@'. */
		snprintf(user, sizeof(user), "%.*s", (int)(at ? at - op->jid[i] : 0), op->jid[i]);
		op->results[i] = storage_account_delete(st, user);
		if (op->results[i] < 0 && op->results[i] != -ENOENT)
			return op->results[i];
	}
	return 0;
}

/*
 * Reports what happened to each named account in one note (deleted, no
 * such account, not of this server; "warn" when not all went through),
 * then ends the deleted accounts' sessions.
 */
static void admin_delete_done(struct storage_req *req)
{
	struct admin_delete_op *op = (struct admin_delete_op *)req;
	struct adhoc_ctx *ctx = &op->ctx;
	struct worker *w = adhoc_worker(ctx);
	struct strbuf deleted = STRBUF_INIT, missing = STRBUF_INIT, note = STRBUF_INIT;
	struct strbuf refused = STRBUF_INIT;
	size_t ndeleted = 0;
	char logv[256];

	for (size_t i = 0; i < op->n && req->result == 0; i++) {
		struct strbuf *b = op->results[i] == 0 ? &deleted : &missing;

		if (b->len)
			strbuf_puts(b, ", ");
		strbuf_puts(b, op->jid[i]);
		if (op->results[i] == 0)
			ndeleted++;
		log_info("admin.delete_user", "admin=%s jid=%s result=%d", ctx->requester,
			 admin_logv(logv, sizeof(logv), op->jid[i]), op->results[i]);
	}
	strbuf_puts(&refused, op->refused);
	if (req->result != 0) {
		log_warn("admin.delete_user", "admin=%s result=%d", ctx->requester, req->result);
		strbuf_puts(&note, "The accounts could not be deleted (storage error).");
	}
	admin_note_part(&note, "Deleted", &deleted);
	admin_note_part(&note, "No such account", &missing);
	admin_note_part(&note, "Not an account of this server", &refused);
	if (!note.len)
		strbuf_puts(&note, "No account was named.");
	if (adhoc_async_begin(ctx))
		adhoc_complete(ctx, ndeleted == op->n && !refused.len && req->result == 0 ? "info" :
				    ndeleted ? "warn" : "error", note.oom ? "" : note.data, NULL);
	/* After the answer: an admin who deleted their own account still hears back. */
	for (size_t i = 0; i < op->n && req->result == 0; i++) {
		char user[JID_PART_MAX + 1];

		if (op->results[i] != 0)
			continue;
		/* XEP-0133 4.2 (as XEP-0077 3.2), at the account's home (register.c). */
		register_end_account(w, op->jid[i], "not-authorized", "the account was removed");
		snprintf(user, sizeof(user), "%.*s", (int)strcspn(op->jid[i], "@"), op->jid[i]);
		pubsub_account_removed(w, user);	/* its PEP nodes (pubsub.c) */
	}
	strbuf_free(&deleted);
	strbuf_free(&missing);
	strbuf_free(&refused);
	strbuf_free(&note);
	adhoc_async_free(ctx);
}

/* The JIDs travel to the storage thread in the request itself (no pointers to the arena). */
static void admin_delete_run(struct adhoc_ctx *ctx, unsigned stage, const struct dataform *form)
{
	struct admin_targets t;
	struct admin_delete_op *op;
	size_t text = 0;
	char *p;

	if (admin_targets(ctx, form, false, &t) < 0)
		goto out;
	for (size_t i = 0; i < t.n; i++)
		text += t.j[i].len + 1;
	op = adhoc_async_new(ctx, sizeof(*op) + text, ctx->requester, admin_delete_store,
			     admin_delete_done);
	if (!op)
		goto out;
	op->n = t.n;
	p = op->text;
	for (size_t i = 0; i < t.n; i++) {
		memcpy(p, t.j[i].buf, t.j[i].len + 1);
		op->jid[i] = p;
		p += t.j[i].len + 1;
	}
	snprintf(op->refused, sizeof(op->refused), "%s", t.refused.len ? t.refused.data : "");
	adhoc_async_submit(&op->ctx);
out:
	strbuf_free(&t.refused);
}

/* ---- end-user-session ---- */

/* XEP-0133 4.5. */
static struct xml_node *admin_end_session_form(struct adhoc_ctx *ctx, unsigned stage)
{
	struct xml_node *x = admin_form(ctx, "Ending a User Session",
					"Fill out this form to end a user's session.");

	return admin_field(ctx, x, DATAFORM_FIELD_JID_MULTI, "accountjids",
			   "The Jabber ID(s) for which to end sessions", true);
}

/* Whether the full JID jid[0..len) is in list (NUL-separated). */
static bool admin_listed(const struct strbuf *list, const char *jid, size_t len)
{
	for (size_t off = 0; off < list->len;) {
		size_t l = strlen(list->data + off);

		if (l == len && memcmp(list->data + off, jid, len) == 0)
			return true;
		off += l + 1;
	}
	return false;
}

static size_t admin_collect_one(struct session *s, struct strbuf *list)
{
	if (!s || s->ending || admin_listed(list, s->jid, s->jid_len))
		return 0;
	strbuf_append(list, s->jid, s->jid_len + 1);
	return 1;
}

/*
 * Adds the full JIDs of the live sessions a target names (XEP-0133 4.5:
 * a bare JID all of the account's, a full JID that one) to list, each
 * once. jid[0..bare_len) is the target's bare JID. Returns how many were
 * added.
 */
static size_t admin_collect_sessions(struct worker *w, const char *jid, size_t bare_len,
				     struct strbuf *list)
{
	size_t len = strlen(jid), n = 0;

	if (len > bare_len)
		return admin_collect_one(sessdir_find_full(w->sessions, jid, len), list);
	for (struct session *s = sessdir_find_bare(w->sessions, jid, bare_len); s; s = s->next)
		n += admin_collect_one(s, list);
	return n;
}

/*
 * Ends one session. policy-violation (as ejabberd's kick): the client
 * learns it was not a network failure, and stream management does not
 * keep the session for resumption after a stream error we sent.
 */
static void admin_kick(struct worker *w, struct session *s)
{
	log_info("admin.end_session", "jid=%s", s->jid);
	if (s->conn)
		c2s_stream_error(s->conn, "policy-violation", "the session was ended by an administrator");
	else
		c2s_session_end(w, s);	/* detached: there is no stream to tell */
}

/* Ends the sessions listed by full JID (NUL-separated) that are still there. */
static void admin_kick_listed(struct worker *w, const struct strbuf *list)
{
	for (size_t off = 0; off < list->len; off += strlen(list->data + off) + 1) {
		const char *jid = list->data + off;
		struct session *s = sessdir_find_full(w->sessions, jid, strlen(jid));

		if (s && !s->ending)
			admin_kick(w, s);
	}
}

/*
 * The sessions live at their accounts' homes: each home worker named
 * ends its own (worker_gather), and the requester's worker answers with
 * the count. The requester's own worker only lists its sessions and ends
 * them after the answer: the admin may be ending their own session.
 */
struct admin_end_op {
	struct adhoc_ctx ctx;			/* first */
	unsigned origin;			/* the requester's worker */
	size_t n;
	const char *jid[ADMIN_MAX_TARGETS];	/* bare or full JIDs, in text[] */
	size_t bare_len[ADMIN_MAX_TARGETS];
	unsigned home[ADMIN_MAX_TARGETS];
	size_t ended[SERVER_MAX_WORKERS];	/* sessions each worker found */
	bool oom[SERVER_MAX_WORKERS];
	struct strbuf mine;			/* the origin's, ended after the answer */
	char refused[ADMIN_NOTE_MAX + 1];	/* JIDs not of this server */
	char text[];
};

/* On each home worker named (worker_gather): its part of the targets. */
static void admin_end_part(struct worker *w, void *arg)
{
	struct admin_end_op *op = arg;
	struct strbuf list = STRBUF_INIT;
	size_t n = 0;

	for (size_t i = 0; i < op->n; i++)
		if (op->home[i] == w->id)
			n += admin_collect_sessions(w, op->jid[i], op->bare_len[i], &list);
	op->ended[w->id] = n;
	op->oom[w->id] = list.oom;
	if (w->id == op->origin && !list.oom) {
		op->mine = list;
		return;
	}
	if (!list.oom)
		admin_kick_listed(w, &list);
	strbuf_free(&list);
}

/* On the requester's worker, once every home answered. */
static void admin_end_done(struct worker *w, void *arg)
{
	struct admin_end_op *op = arg;
	struct adhoc_ctx *ctx = &op->ctx;
	struct strbuf note = STRBUF_INIT, refused = STRBUF_INIT;
	bool oom = false;
	size_t n = 0;

	for (unsigned k = 0; k < w->srv->nworkers; k++) {
		n += op->ended[k];
		oom |= op->oom[k];
	}
	log_info("admin.end_sessions", "admin=%s sessions=%zu", ctx->requester, n);
	if (adhoc_async_begin(ctx)) {
		strbuf_puts(&refused, op->refused);
		if (oom) {
			strbuf_puts(&note, "Out of memory: not every session was ended.");
		} else {
			strbuf_printf(&note, "%zu session%s ended.", n, n == 1 ? "" : "s");
			admin_note_part(&note, "Not an account of this server", &refused);
		}
		/* Answer first: the admin may be ending their own session. */
		adhoc_complete(ctx, oom ? "error" : n ? "info" : "warn", note.oom ? "" : note.data,
			       NULL);
	}
	admin_kick_listed(w, &op->mine);
	strbuf_free(&op->mine);
	strbuf_free(&note);
	strbuf_free(&refused);
	adhoc_async_free(ctx);
}

/* A gather that could not start: the held step answers with an error. */
static void admin_gather_failed(struct adhoc_ctx *op)
{
	if (adhoc_async_begin(op))
		adhoc_complete(op, "error", "out of memory", NULL);
	adhoc_async_free(op);
}

static void admin_end_session_run(struct adhoc_ctx *ctx, unsigned stage,
				  const struct dataform *form)
{
	struct worker *w = adhoc_worker(ctx);
	struct admin_targets t;
	struct admin_end_op *op;
	uint64_t mask = 0;
	size_t text = 0;
	char *p;

	if (admin_targets(ctx, form, true, &t) < 0)
		goto out;
	for (size_t i = 0; i < t.n; i++)
		text += t.j[i].len + 1;
	op = adhoc_async_new(ctx, sizeof(*op) + text, ctx->requester, NULL, NULL);
	if (!op)
		goto out;
	op->origin = w->id;
	op->n = t.n;
	p = op->text;
	for (size_t i = 0; i < t.n; i++) {
		const struct jid *j = &t.j[i];
		char bare[JID_MAX];

		memcpy(p, j->buf, j->len + 1);
		op->jid[i] = p;
		op->bare_len[i] = j->domain_off + j->domain_len;
		snprintf(bare, sizeof(bare), "%.*s", (int)op->bare_len[i], j->buf);
		op->home[i] = worker_home(w->srv, bare);
		mask |= UINT64_C(1) << op->home[i];
		p += j->len + 1;
	}
	snprintf(op->refused, sizeof(op->refused), "%s", t.refused.len ? t.refused.data : "");
	adhoc_async_hold(&op->ctx);
	if (worker_gather_some(w, mask, admin_end_part, admin_end_done, op) < 0)
		admin_gather_failed(&op->ctx);
out:
	strbuf_free(&t.refused);
}

/* ---- Online users ---- */

struct admin_online {
	struct arena *a;
	const char **v;		/* bare or full JIDs, in the arena */
	size_t n, cap;
	bool full;		/* every session (announce) rather than every account */
	bool oom;
	const struct sessdir_account *last;	/* the account counted last */
};

/* sessdir_each callback: collects JIDs; the array grows by doubling in the arena. */
static void admin_online_add(void *arg, struct session *s)
{
	struct admin_online *o = arg;
	const char **nv;

	if (s->ending || o->oom)
		return;
	/* sessdir_each walks account by account: one entry per account. */
	if (!o->full && s->acct == o->last)
		return;
	o->last = s->acct;
	if (o->n == o->cap) {
		size_t cap = o->cap ? o->cap * 2 : 64;

		nv = arena_alloc(o->a, cap * sizeof(*nv));
		if (!nv) {
			o->oom = true;
			return;
		}
		if (o->n)
			memcpy(nv, o->v, o->n * sizeof(*nv));
		o->v = nv;
		o->cap = cap;
	}
	o->v[o->n] = arena_strndup(o->a, s->jid, o->full ? s->jid_len : s->bare_len);
	if (!o->v[o->n])
		o->oom = true;
	else
		o->n++;
}

static int admin_cmp_str(const void *a, const void *b)
{
	return strcmp(*(const char *const *)a, *(const char *const *)b);
}

/*
 * The online accounts (or sessions, full) at home on w, in `a`. -ENOMEM
 * when the list could not be made.
 */
static int admin_online(struct worker *w, struct arena *a, bool full, struct admin_online *o)
{
	memset(o, 0, sizeof(*o));
	o->a = a;
	o->full = full;
	sessdir_each(w->sessions, admin_online_add, o);
	return o->oom ? -ENOMEM : 0;
}

/*
 * The online users commands: every worker lists the accounts at home
 * there (worker_gather), the requester's worker merges and answers.
 */
struct admin_online_op {
	struct adhoc_ctx ctx;		/* first */
	bool list;			/* the list (else the number) */
	size_t max;			/* list: JIDs shown */
	struct strbuf part[SERVER_MAX_WORKERS];	/* bare JIDs at home on each, NUL-separated */
};

static void admin_online_part(struct worker *w, void *arg)
{
	struct admin_online_op *op = arg;
	struct strbuf *b = &op->part[w->id];
	struct admin_online o;
	struct arena own;

	arena_init(&own, 4096);
	if (admin_online(w, &own, false, &o) < 0)
		b->oom = true;
	for (size_t i = 0; i < o.n && !b->oom; i++)
		strbuf_append(b, o.v[i], strlen(o.v[i]) + 1);
	arena_release(&own);
}

/* The parts in one sorted array in the scratch arena, each account once. -ENOMEM. */
static int admin_online_merge(struct adhoc_ctx *ctx, struct admin_online_op *op,
			      unsigned nworkers, struct admin_online *o)
{
	size_t n = 0, k = 0;

	memset(o, 0, sizeof(*o));
	for (unsigned w = 0; w < nworkers; w++) {
		if (op->part[w].oom)
			return -ENOMEM;
		for (size_t off = 0; off < op->part[w].len; off += strlen(op->part[w].data + off) + 1)
			n++;
	}
	o->v = arena_alloc(adhoc_arena(ctx), (n ? n : 1) * sizeof(*o->v));
	if (!o->v)
		return -ENOMEM;
	for (unsigned w = 0; w < nworkers; w++)
		for (size_t off = 0; off < op->part[w].len; off += strlen(op->part[w].data + off) + 1)
			o->v[k++] = op->part[w].data + off;
	if (k > 1)
		qsort(o->v, k, sizeof(*o->v), admin_cmp_str);
	/* An account is at home on one worker; a session on its way there counts once. */
	for (size_t i = 0; i < k; i++)
		if (!o->n || strcmp(o->v[o->n - 1], o->v[i]) != 0)
			o->v[o->n++] = o->v[i];
	return 0;
}

static void admin_complete_list(struct adhoc_ctx *ctx, const char *var, const char *label,
				const char *const *v, size_t n, size_t max, uint64_t total);

static void admin_online_done(struct worker *w, void *arg)
{
	struct admin_online_op *op = arg;
	struct adhoc_ctx *ctx = &op->ctx;
	struct admin_online o;

	if (!adhoc_async_begin(ctx))
		goto out;
	if (admin_online_merge(ctx, op, w->srv->nworkers, &o) < 0)
		adhoc_complete(ctx, "error", "out of memory", NULL);
	else if (op->list)
		admin_complete_list(ctx, "onlineuserjids", "The list of all online users", o.v,
				    o.n, op->max, o.n);
	else
		adhoc_complete(ctx, NULL, NULL, admin_result_num(ctx, "onlineusersnum",
								 "The number of online users", o.n));
out:
	for (unsigned k = 0; k < w->srv->nworkers; k++)
		strbuf_free(&op->part[k]);
	adhoc_async_free(ctx);
}

static void admin_online_start(struct adhoc_ctx *ctx, bool list, size_t max)
{
	struct admin_online_op *op = adhoc_async_new(ctx, sizeof(*op), ctx->requester, NULL, NULL);

	if (!op)
		return;
	op->list = list;
	op->max = max;
	adhoc_async_hold(&op->ctx);
	if (worker_gather(adhoc_worker(ctx), admin_online_part, admin_online_done, op) < 0)
		admin_gather_failed(&op->ctx);
}

/* XEP-0133 4.15: accounts with at least one session, available or not. */
static void admin_online_num_run(struct adhoc_ctx *ctx, unsigned stage,
				 const struct dataform *form)
{
	admin_online_start(ctx, false, 0);
}

/* The max_items form of the list commands (XEP-0133 4.18, 4.20). */
static struct xml_node *admin_max_items_form(struct adhoc_ctx *ctx, const char *title,
					     const char *instr)
{
	static const char *const sizes[] = { "25", "50", "75", "100", "150", "200" };
	struct arena *a = adhoc_arena(ctx);
	struct xml_node *x = admin_form(ctx, title, instr);
	struct xml_node *f = x ? dataform_add_field(a, x, DATAFORM_FIELD_LIST_SINGLE, "max_items",
						    "Maximum number of items to show") : NULL;

	if (!f)
		return NULL;
	for (size_t i = 0; i < sizeof(sizes) / sizeof(sizes[0]); i++)
		if (dataform_field_add_option(a, f, sizes[i], sizes[i]) < 0)
			return NULL;
	if (dataform_field_add_option(a, f, "None", "none") < 0)
		return NULL;
	return x;
}

/* max_items of a list form: a number of the options, or "none"/absent = ADMIN_MAX_LIST. */
static size_t admin_max_items(const struct dataform *form)
{
	unsigned long n;

	if (dataform_get_uint(form, "max_items", 1, ADMIN_MAX_LIST, &n) == 0)
		return (size_t)n;
	return ADMIN_MAX_LIST;
}

/* Completes with a list result, noting a cut. */
static void admin_complete_list(struct adhoc_ctx *ctx, const char *var, const char *label,
				const char *const *v, size_t n, size_t max, uint64_t total)
{
	char note[96];
	size_t shown = n < max ? n : max;

	snprintf(note, sizeof(note), "The first %zu of %" PRIu64 " are shown.", shown, total);
	adhoc_complete(ctx, shown < total ? "info" : NULL, shown < total ? note : NULL,
		       admin_result(ctx, DATAFORM_FIELD_JID_MULTI, var, label, v, shown));
}

/* XEP-0133 4.20: the max_items form first, then the bare JIDs. */
static struct xml_node *admin_online_list_form(struct adhoc_ctx *ctx, unsigned stage)
{
	return admin_max_items_form(ctx, "Requesting List of Online Users",
				    "Fill out this form to request the online users of this service.");
}

static void admin_online_list_run(struct adhoc_ctx *ctx, unsigned stage,
				  const struct dataform *form)
{
	admin_online_start(ctx, true, admin_max_items(form));
}

/* ---- Registered users ---- */

struct admin_count_op {
	struct adhoc_ctx ctx;		/* first */
	uint64_t total;
	size_t max;			/* list: names kept */
	struct strbuf names;		/* list: NUL-separated usernames (storage thread) */
	size_t n;
};

/* Storage thread: XEP-0133 4.13, one count(*). */
static int admin_count_store(struct storage *st, struct storage_req *req)
{
	struct admin_count_op *op = (struct admin_count_op *)req;

	return admin_store_count_accounts(st, &op->total);
}

static void admin_count_done(struct storage_req *req)
{
	struct admin_count_op *op = (struct admin_count_op *)req;
	struct adhoc_ctx *ctx = &op->ctx;

	if (adhoc_async_begin(ctx)) {
		if (req->result < 0)
			adhoc_complete(ctx, "error", "The accounts could not be counted.", NULL);
		else
			adhoc_complete(ctx, NULL, NULL,
				       admin_result_num(ctx, "registeredusersnum",
							"The number of registered users", op->total));
	}
	adhoc_async_free(ctx);
}

static void admin_registered_num_run(struct adhoc_ctx *ctx, unsigned stage,
				     const struct dataform *form)
{
	struct admin_count_op *op = adhoc_async_new(ctx, sizeof(*op), ctx->requester,
						    admin_count_store, admin_count_done);

	if (op)
		adhoc_async_submit(&op->ctx);
}

/* storage_account_list callback: counts every account, keeps the first op->max names. */
static int admin_list_one(void *arg, const char *user)
{
	struct admin_count_op *op = arg;

	op->total++;
	if (op->n < op->max) {
		strbuf_append(&op->names, user, strlen(user) + 1);
		op->n++;
	}
	return 0;
}

static int admin_list_store(struct storage *st, struct storage_req *req)
{
	struct admin_count_op *op = (struct admin_count_op *)req;
	int ret = storage_account_list(st, admin_list_one, op);

	return ret < 0 ? ret : op->names.oom ? -ENOMEM : 0;
}

/* XEP-0133 4.18: names become JIDs of this domain, sorted as storage lists them. */
static void admin_list_done(struct storage_req *req)
{
	struct admin_count_op *op = (struct admin_count_op *)req;
	struct adhoc_ctx *ctx = &op->ctx;
	const char *domain = adhoc_worker(ctx)->srv->cfg->domain;
	const char **v;
	const char *p = op->names.data;

	if (!adhoc_async_begin(ctx))
		goto out;
	v = arena_alloc(adhoc_arena(ctx), (op->n ? op->n : 1) * sizeof(*v));
	if (req->result < 0 || !v) {
		adhoc_complete(ctx, "error", "The accounts could not be listed.", NULL);
		goto out;
	}
	for (size_t i = 0; i < op->n; i++) {
		size_t len = strlen(p);
		char *j = arena_alloc(adhoc_arena(ctx), len + strlen(domain) + 2);

		if (!j) {
			adhoc_complete(ctx, "error", "out of memory", NULL);
			goto out;
		}
		snprintf(j, len + strlen(domain) + 2, "%s@%s", p, domain);
		v[i] = j;
		p += len + 1;
	}
	admin_complete_list(ctx, "registereduserjids", "The list of all users", v, op->n, op->max,
			    op->total);
out:
	strbuf_free(&op->names);
	adhoc_async_free(ctx);
}

static struct xml_node *admin_registered_list_form(struct adhoc_ctx *ctx, unsigned stage)
{
	return admin_max_items_form(ctx, "Requesting List of Registered Users",
				    "Fill out this form to request the registered users of this service.");
}

static void admin_registered_list_run(struct adhoc_ctx *ctx, unsigned stage,
				      const struct dataform *form)
{
	struct admin_count_op *op = adhoc_async_new(ctx, sizeof(*op), ctx->requester,
						    admin_list_store, admin_list_done);

	if (!op)
		return;
	op->max = admin_max_items(form);
	adhoc_async_submit(&op->ctx);
}

/* ---- announce ---- */

/*
 * XEP-0133 4.23. The subject field is an addition (Prosody has the same);
 * clients that do not know it leave it out.
 */
static struct xml_node *admin_announce_form(struct adhoc_ctx *ctx, unsigned stage)
{
	struct xml_node *x = admin_form(ctx, "Making an Announcement",
					"Fill out this form to make an announcement to all active "
					"users of this service.");

	x = admin_field(ctx, x, DATAFORM_FIELD_TEXT_SINGLE, "subject", "Subject", false);
	return admin_field(ctx, x, DATAFORM_FIELD_TEXT_MULTI, "announcement", "Announcement", true);
}

/* <message type='headline' from=DOMAIN><subject/>?<body/></message>, or NULL. */
static struct xml_node *admin_announcement(struct arena *a, const char *domain,
					   const char *subject, const char *body)
{
	struct xml_node *m = xml_node_new(a, XML_NS_CLIENT, "message"), *e;

	if (!m || xml_attr_set(a, m, "type", "headline") < 0 || xml_attr_set(a, m, "from", domain) < 0)
		return NULL;
	if (subject && subject[0]) {
		e = xml_node_add_child(a, m, NULL, "subject");
		if (!e || xml_node_add_text(a, e, subject, strlen(subject)) < 0)
			return NULL;
	}
	e = xml_node_add_child(a, m, NULL, "body");
	if (!e || xml_node_add_text(a, e, body, strlen(body)) < 0)
		return NULL;
	return m;
}

/*
 * XEP-0133 4.23: every worker sends the announcement to the sessions at
 * home there (worker_gather), the requester's worker answers with the
 * count. The requester's own part runs first, so the admin's own copy
 * comes before the answer.
 */
struct admin_announce_op {
	struct adhoc_ctx ctx;		/* first */
	const char *subject;		/* in text[], or NULL */
	const char *body;		/* in text[] */
	size_t sent[SERVER_MAX_WORKERS];
	bool oom[SERVER_MAX_WORKERS];
	char text[];
};

/*
 * One worker's part: the message serialized once and spliced per
 * recipient (fanout.h). Sessions stream management holds detached get
 * it on resumption. The message and the recipient list live in an arena
 * of their own: a delivery may end a session (a client too slow to
 * read), which runs code that reuses the worker's scratch arena.
 */
static void admin_announce_part(struct worker *w, void *arg)
{
	struct admin_announce_op *op = arg;
	struct fanout f = FANOUT_INIT;
	struct admin_online o;
	struct xml_node *m;
	struct arena own;
	size_t sent = 0;

	arena_init(&own, 4096);
	m = admin_announcement(&own, w->srv->cfg->domain, op->subject, op->body);
	if (!m || admin_online(w, &own, true, &o) < 0 || fanout_prepare(&f, m) < 0) {
		op->oom[w->id] = true;
		goto out;
	}
	for (size_t i = 0; i < o.n; i++) {
		struct session *s = sessdir_find_full(w->sessions, o.v[i], strlen(o.v[i]));
		const char *data = NULL;
		size_t len = 0;

		if (!s)
			continue;	/* ended by an earlier delivery (output overflow) */
		if (s->conn && !(data = fanout_render(&f, s->jid, s->jid_len, &len))) {
			op->oom[w->id] = true;
			break;
		}
		router_deliver_prepared(s, m, s->jid, data, len);
		sent++;
	}
out:
	op->sent[w->id] = sent;
	fanout_release(&f);
	arena_release(&own);
}

static void admin_announce_done(struct worker *w, void *arg)
{
	struct admin_announce_op *op = arg;
	struct adhoc_ctx *ctx = &op->ctx;
	size_t sent = 0;
	bool oom = false;
	char note[96];

	for (unsigned k = 0; k < w->srv->nworkers; k++) {
		sent += op->sent[k];
		oom |= op->oom[k];
	}
	log_info("admin.announce", "admin=%s sessions=%zu", ctx->requester, sent);
	if (adhoc_async_begin(ctx)) {
		if (oom && !sent) {
			adhoc_complete(ctx, "error", "out of memory", NULL);
		} else {
			snprintf(note, sizeof(note), "The announcement went to %zu session%s%s.", sent,
				 sent == 1 ? "" : "s", oom ? " (not to all: out of memory)" : "");
			adhoc_complete(ctx, oom ? "warn" : "info", note, NULL);
		}
	}
	adhoc_async_free(ctx);
}

static void admin_announce_run(struct adhoc_ctx *ctx, unsigned stage, const struct dataform *form)
{
	struct arena *a = adhoc_arena(ctx);
	const char *body = dataform_field_text(a, dataform_get(form, "announcement"));
	const char *subject = dataform_value(form, "subject");
	size_t blen, slen = subject ? strlen(subject) + 1 : 0;
	struct admin_announce_op *op;

	if (!body) {
		adhoc_complete(ctx, "error", "out of memory", NULL);
		return;
	}
	blen = strlen(body) + 1;
	op = adhoc_async_new(ctx, sizeof(*op) + blen + slen, ctx->requester, NULL, NULL);
	if (!op)
		return;
	/* The parts run on other threads: the text travels in the request, not the arena. */
	memcpy(op->text, body, blen);
	op->body = op->text;
	if (subject) {
		memcpy(op->text + blen, subject, slen);
		op->subject = op->text + blen;
	}
	adhoc_async_hold(&op->ctx);
	if (worker_gather(adhoc_worker(ctx), admin_announce_part, admin_announce_done, op) < 0)
		admin_gather_failed(&op->ctx);
}

/*
 * ---- The table ----
 * Nodes as XEP-0133 names them; the order is the order of the command
 * list clients show.
 */

const struct adhoc_command admin_commands[] = {
	{ ADMIN_NODE("add-user"), "Add a User", admin_allowed, 1, admin_add_user_form,
	  admin_add_user_run },
	{ ADMIN_NODE("delete-user"), "Delete a User", admin_allowed, 1, admin_delete_form,
	  admin_delete_run },
	{ ADMIN_NODE("change-user-password"), "Change a User Password", admin_allowed, 1,
	  admin_passwd_form, admin_passwd_run },
	{ ADMIN_NODE("end-user-session"), "End a User Session", admin_allowed, 1,
	  admin_end_session_form, admin_end_session_run },
	{ ADMIN_NODE("get-registered-users-num"), "Get Number of Registered Users", admin_allowed,
	  0, NULL, admin_registered_num_run },
	{ ADMIN_NODE("get-registered-users-list"), "Get List of Registered Users", admin_allowed,
	  1, admin_registered_list_form, admin_registered_list_run },
	{ ADMIN_NODE("get-online-users-num"), "Get Number of Online Users", admin_allowed, 0, NULL,
	  admin_online_num_run },
	{ ADMIN_NODE("get-online-users-list"), "Get List of Online Users", admin_allowed, 1,
	  admin_online_list_form, admin_online_list_run },
	{ ADMIN_NODE("announce"), "Send Announcement to Online Users", admin_allowed, 1,
	  admin_announce_form, admin_announce_run },
};

const size_t admin_ncommands = sizeof(admin_commands) / sizeof(admin_commands[0]);
