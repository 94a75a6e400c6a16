/* SPDX-License-Identifier: MIT */
/*
 * XEP-0077 In-Band Registration: creating an account before
 * authentication (when registration = open), and for an authenticated
 * account: showing it, changing its password, removing it.
 *
 * Key derivation (PBKDF2) and the database write run on the storage
 * thread; the reply is sent from the completion, found again by the
 * connection's slot and generation. Passwords are never echoed back in
 * errors (XEP-0077 section 3.3) and never logged.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "c2s.h"
#include "config.h"
#include "conn.h"
#include "iq.h"
#include "jid.h"
#include "log.h"
#include "pubsub.h"
#include "server.h"
#include "session.h"
#include "sm.h"
#include "stanza.h"
#include "storage.h"
#include "worker.h"

#define REGISTER_ID_MAX 256	/* longest iq id we keep for an async reply */

struct register_op {
	struct storage_req req;	/* first: the completion gets &req */
	char id[REGISTER_ID_MAX + 1];
	bool preauth;
};

static const char *domain_of(struct iq_request *rq)
{
	return rq->w->srv->cfg->domain;
}

/*
 * An error reply that carries no payload: the request may hold a password,
 * which must not travel back (not even to its sender) or into any log.
 */
static void register_error(struct iq_request *rq, const char *condition, const char *text)
{
	struct arena *a = iq_arena(rq);
	struct xml_node *shell = xml_node_new(a, XML_NS_CLIENT, "iq");
	struct xml_node *r;
	const char *id = xml_attr_get(rq->iq, "id");
	const char *from = xml_attr_get(rq->iq, "from");

	if (!shell || (id && xml_attr_set(a, shell, "id", id) < 0) ||
	    (from && xml_attr_set(a, shell, "from", from) < 0) ||
	    xml_attr_set(a, shell, "type", stanza_type(rq->iq)) < 0)
		return;
	r = stanza_error_reply(a, shell, domain_of(rq), condition, text);
	if (r) {
		if (!from)
			xml_attr_set(a, r, "to", NULL);
		conn_send_node(rq->conn, r);
	}
}

static struct xml_node *register_field(struct arena *a, struct xml_node *q, const char *name,
				       const char *text)
{
	struct xml_node *f = xml_node_add_child(a, q, NULL, name);

	if (f && text && xml_node_add_text(a, f, text, strlen(text)) < 0)
		return NULL;
	return f;
}

void register_get(struct iq_request *rq)
{
	struct arena *a = iq_arena(rq);
	struct xml_node *q = xml_node_new(a, NS_REGISTER, "query");
	bool ok;

	if (!q) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	if (rq->scope == IQ_SCOPE_PREAUTH) {
		if (!rq->w->srv->cfg->registration_open) {
			iq_reply_error(rq, "service-unavailable", NULL);
			return;
		}
		ok = register_field(a, q, "instructions", "Choose a username and password.") &&
		     register_field(a, q, "username", NULL) && register_field(a, q, "password", NULL);
	} else {
		char local[JID_PART_MAX + 1];

		snprintf(local, sizeof(local), "%.*s", (int)rq->from->local_len, rq->from->buf);
		ok = register_field(a, q, "registered", NULL) && register_field(a, q, "username", local);
	}
	if (!ok) {
		iq_reply_error(rq, "internal-server-error", NULL);
		return;
	}
	iq_reply_result(rq, q);
}

/*
 * Answers a finished operation: `<iq type='result'/>` when condition is
 * NULL, else an error with that condition and no payload echoed.
 */
static void register_answer(struct conn *c, const struct register_op *op, const char *condition)
{
	struct strbuf *b = &c->w->scratch;
	const char *domain = c->w->srv->cfg->domain;

	strbuf_clear(b);
	strbuf_puts(b, condition ? "<iq type='error' id='" : "<iq type='result' id='");
	strbuf_append_xml_escaped(b, op->id, strlen(op->id));
	if (c->sess) {
		strbuf_puts(b, "' to='");
		strbuf_append_xml_escaped(b, c->sess->jid, c->sess->jid_len);
	}
	strbuf_puts(b, "' from='");
	strbuf_append_xml_escaped(b, domain, strlen(domain));
	if (condition)
		strbuf_printf(b, "'><error type='%s'><%s xmlns='" NS_STANZAS "'/></error></iq>",
			      stanza_error_type(condition), condition);
	else
		strbuf_puts(b, "'/>");
	sm_send_stanza(c, b->data, b->len);	/* a stanza: stream management counts it */
	strbuf_clear(b);
}

/* Ends the sessions of an account at home on w. */
static void register_end_here(struct worker *w, const char *bare, const char *condition,
			      const char *text)
{
	struct session *s, *next;

	for (s = sessdir_find_bare(w->sessions, bare, strlen(bare)); s; s = next) {
		next = s->next;
		if (s->ending)
			continue;
		if (s->conn)
			c2s_stream_error(s->conn, condition, text);
		else
			c2s_session_end(w, s);	/* detached (stream management, sm.c) */
	}
}

struct register_end_msg {
	struct worker_msg msg;		/* first: the mailbox hands this back */
	const char *condition, *text;
	char bare[JID_MAX];
};

static void register_end_arrived(struct worker *w, struct worker_msg *m)
{
	struct register_end_msg *em = (struct register_end_msg *)m;

	register_end_here(w, em->bare, em->condition, em->text);
	free(em);
}

void register_end_account(struct worker *w, const char *bare, const char *condition,
			  const char *text)
{
	unsigned home = worker_home(w->srv, bare);
	struct register_end_msg *em;

	if (home == w->id) {
		register_end_here(w, bare, condition, text);
		return;
	}
	em = calloc(1, sizeof(*em));
	if (!em || strlen(bare) >= sizeof(em->bare)) {
		log_warn("account.end_sessions", "jid=%s home=%u msg=\"out of memory\"", bare, home);
		free(em);
		return;
	}
	memcpy(em->bare, bare, strlen(bare) + 1);
	em->condition = condition;
	em->text = text;
	worker_post(w, home, &em->msg, register_end_arrived);
}

/* XEP-0077 3.2: a removed account's sessions all end with not-authorized. */
static void register_end_sessions(struct worker *w, const char *user)
{
	char bare[JID_MAX];

	snprintf(bare, sizeof(bare), "%s@%s", user, w->srv->cfg->domain);
	register_end_account(w, bare, "not-authorized", "the account was removed");
}

static void register_done(struct storage_req *req)
{
	struct register_op *op = (struct register_op *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct conn *c = worker_conn(w, req->slot, req->gen);
	const char *what = req->op == STORAGE_OP_ACCOUNT_CREATE ? "account.register" :
			   req->op == STORAGE_OP_ACCOUNT_DELETE ? "account.remove" :
								"account.password";

	if (c)
		c->register_busy = false;
	if (req->result == 0) {
		log_info(what, "user=%s conn=%llu", req->user, c ? (unsigned long long)c->id : 0ULL);
	} else {
		log_info(what, "user=%s result=failed err=%d", req->user, req->result);
	}
	if (c && !c->closing) {
		if (req->result == 0)
			register_answer(c, op, NULL);
		else if (req->result == -EEXIST)
			register_answer(c, op, "conflict");
		else if (req->result == -EINVAL)
			register_answer(c, op, "not-acceptable");
		else if (req->result == -ENOENT)
			register_answer(c, op, "item-not-found");
		else
			register_answer(c, op, "internal-server-error");
	}
	if (req->result == 0 && req->op == STORAGE_OP_ACCOUNT_DELETE) {
		register_end_sessions(w, req->user);
		pubsub_account_removed(w, req->user);	/* its PEP nodes (pubsub.c) */
	}
	explicit_bzero(op, sizeof(*op));
	free(op);
}

/* Queues a storage operation whose completion answers the iq. */
static void register_submit(struct iq_request *rq, enum storage_op kind, const char *user,
			    const char *password)
{
	struct register_op *op;
	const char *id = xml_attr_get(rq->iq, "id");

	if (strlen(id) > REGISTER_ID_MAX) {
		register_error(rq, "bad-request", "id too long");
		return;
	}
	op = calloc(1, sizeof(*op));
	if (!op) {
		register_error(rq, "internal-server-error", NULL);
		return;
	}
	snprintf(op->id, sizeof(op->id), "%s", id);
	op->preauth = rq->scope == IQ_SCOPE_PREAUTH;
	op->req.op = kind;
	snprintf(op->req.user, sizeof(op->req.user), "%s", user);
	if (password)
		snprintf(op->req.password, sizeof(op->req.password), "%s", password);
	op->req.inbox = &rq->w->inbox;
	op->req.done = register_done;
	op->req.slot = rq->conn->slot;
	op->req.gen = rq->conn->gen;
	rq->conn->register_busy = true;
	storage_queue_submit(rq->w->srv->store, &op->req);
}

/*
 * Reads username and password fields. Returns 0, or answers the error and
 * returns -1. The password is checked for presence and size only; SASLprep
 * runs with the key derivation.
 */
static int register_fields(struct iq_request *rq, char *user, size_t user_size,
			   const char **password)
{
	struct arena *a = iq_arena(rq);
	struct xml_node *u = xml_child(rq->payload, NS_REGISTER, "username");
	struct xml_node *p = xml_child(rq->payload, NS_REGISTER, "password");
	const char *ut = u ? xml_text(a, u) : NULL;
	const char *pt = p ? xml_text(a, p) : NULL;

	if (!ut || !ut[0] || !pt || !pt[0]) {
		register_error(rq, "not-acceptable", "a username and a password are required");
		return -1;
	}
	if (strlen(pt) > SCRAM_PASSWORD_MAX) {
		register_error(rq, "not-acceptable", "the password is too long");
		return -1;
	}
	if (jid_prep_local(user, user_size, ut, strlen(ut)) < 0) {
		register_error(rq, "not-acceptable", "the username is not valid for an XMPP address");
		return -1;
	}
	*password = pt;
	return 0;
}

static void register_set_preauth(struct iq_request *rq)
{
	char user[JID_PART_MAX + 1];
	const char *password;

	if (!rq->w->srv->cfg->registration_open) {
		register_error(rq, "not-allowed", "registration is closed on this server");
		return;
	}
	if (xml_child(rq->payload, NS_REGISTER, "remove")) {
		register_error(rq, "unexpected-request", "not registered");
		return;
	}
	if (register_fields(rq, user, sizeof(user), &password) < 0)
		return;
	register_submit(rq, STORAGE_OP_ACCOUNT_CREATE, user, password);
}

static void register_set_account(struct iq_request *rq)
{
	char own[JID_PART_MAX + 1], user[JID_PART_MAX + 1];
	const char *password;

	/* Only the account itself, addressed at its server or its bare JID. */
	if (rq->to && (jid_has_local(rq->to) && !jid_bare_equal(rq->to, rq->from))) {
		register_error(rq, "forbidden", NULL);
		return;
	}
	snprintf(own, sizeof(own), "%.*s", (int)rq->from->local_len, rq->from->buf);
	if (xml_child(rq->payload, NS_REGISTER, "remove")) {
		if (xml_element_count(rq->payload) != 1) {
			register_error(rq, "bad-request", NULL);
			return;
		}
		register_submit(rq, STORAGE_OP_ACCOUNT_DELETE, own, NULL);
		return;
	}
	if (register_fields(rq, user, sizeof(user), &password) < 0)
		return;
	if (strcmp(user, own) != 0) {
		register_error(rq, "not-authorized", "you can only change your own password");
		return;
	}
	register_submit(rq, STORAGE_OP_ACCOUNT_SET_PASSWORD, own, password);
}

void register_set(struct iq_request *rq)
{
	if (rq->conn->register_busy) {
		register_error(rq, "resource-constraint", "a registration request is still running");
		return;
	}
	if (rq->scope == IQ_SCOPE_PREAUTH)
		register_set_preauth(rq);
	else
		register_set_account(rq);
}
