/* SPDX-License-Identifier: MIT */
/* XEP-0012 Last Activity; see last_activity.h for the answers. */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "account.h"
#include "conn.h"
#include "contact_query.h"
#include "last_activity.h"
#include "jid.h"
#include "log.h"
#include "roster.h"
#include "server.h"
#include "session.h"
#include "stanza.h"
#include "worker.h"

/*
 * When the process started, on the boot clock (it keeps counting while
 * the host is suspended, as uptime should). Taken by a constructor so no
 * startup code has to remember to call us.
 */
static struct timespec last_started;

__attribute__((constructor)) static void last_activity_note_start(void)
{
	clock_gettime(CLOCK_BOOTTIME, &last_started);
}

uint64_t last_activity_uptime(void)
{
	struct timespec now;

	clock_gettime(CLOCK_BOOTTIME, &now);
	if (now.tv_sec < last_started.tv_sec)
		return 0;
	return (uint64_t)(now.tv_sec - last_started.tv_sec);
}

size_t last_activity_truncate(char *out, size_t out_size, const char *s, size_t max)
{
	size_t n = strlen(s);

	if (!out_size)
		return 0;
	if (max > out_size - 1)
		max = out_size - 1;
	if (n > max) {
		n = max;
		/* Back off continuation bytes so no character is cut in two. */
		while (n > 0 && ((unsigned char)s[n] & 0xc0) == 0x80)
			n--;
	}
	memcpy(out, s, n);
	out[n] = '\0';
	return n;
}

/* <query xmlns='jabber:iq:last' seconds='N'>status</query> in a. */
static struct xml_node *last_query(struct arena *a, uint64_t seconds, const char *status)
{
	struct xml_node *q = xml_node_new(a, NS_LAST, "query");
	char num[24];

	snprintf(num, sizeof(num), "%" PRIu64, seconds);
	if (!q || xml_attr_set(a, q, "seconds", num) < 0)
		return NULL;
	if (status && status[0] && xml_node_add_text(a, q, status, strlen(status)) < 0)
		return NULL;
	return q;
}

/* The answer for another account, once the facts are known (XEP-0012 section 3). */
static void last_contact_answer(const struct iq_async *op, struct session *s,
				const struct contact_facts *f)
{
	struct xml_node *q;
	int64_t now = (int64_t)time(NULL);

	if (!f->exists) {
		iq_async_error(op, s, "service-unavailable", NULL);
		return;
	}
	if (!f->subscribed) {
		iq_async_error(op, s, "forbidden", NULL);
		return;
	}
	if (f->online)
		q = last_query(iq_async_arena(op), 0, NULL);
	else if (f->has_last)
		q = last_query(iq_async_arena(op),
			       f->logout_at < now ? (uint64_t)(now - f->logout_at) : 0, f->status);
	else {
		iq_async_error(op, s, "service-unavailable", "no activity recorded");
		return;
	}
	if (q)
		iq_async_result(op, s, q);
	else
		iq_async_error(op, s, "internal-server-error", NULL);
}

void last_activity_get(struct iq_request *rq)
{
	struct xml_node *q;

	switch (rq->scope) {
	case IQ_SCOPE_CONTACT:
		contact_query(rq, true, NS_LAST, "query", last_contact_answer);
		return;
	case IQ_SCOPE_SERVER:
		/* XEP-0012 section 5: a server answers with its uptime. */
		q = last_query(iq_arena(rq), last_activity_uptime(), NULL);
		break;
	default:
		/* One's own account: the asker is a connected resource. */
		q = last_query(iq_arena(rq), 0, NULL);
		break;
	}
	if (q)
		iq_reply_result(rq, q);
	else
		iq_reply_error(rq, "internal-server-error", NULL);
}

/* ---- Recording logouts ---- */

struct last_write {
	struct storage_req req;		/* first */
	int64_t at;
	char status[LAST_STATUS_MAX + 1];
};

static int last_write_run(struct storage *st, struct storage_req *req)
{
	struct last_write *lw = (struct last_write *)req;

	return last_activity_store_set(st, req->user, lw->at, lw->status);
}

/* Runs on the storage thread (no inbox): nobody waits for the answer. */
static void last_write_done(struct storage_req *req)
{
	/* -ENOENT: the account was removed, which ended the session. */
	if (req->result < 0 && req->result != -ENOENT)
		log_warn("last_activity.store_failed", "user=%s err=%d", req->user, req->result);
	free(req);
}

void last_activity_session_end(struct worker *w, struct session *s)
{
	struct server *srv = w->srv;
	struct account *a;
	struct last_write *lw;
	const char *at;

	if (!srv->store)
		return;
	/* Only the account's last session counts as a logout. */
	if (sessdir_count_bare(w->sessions, s->jid, s->bare_len) > 1)
		return;
	at = memchr(s->jid, '@', s->bare_len);
	if (!at)
		return;
	lw = calloc(1, sizeof(*lw));
	if (!lw) {
		log_warn("last_activity.store_failed", "err=%d", -ENOMEM);
		return;
	}
	snprintf(lw->req.user, sizeof(lw->req.user), "%.*s", (int)(at - s->jid), s->jid);
	lw->at = (int64_t)time(NULL);
	a = session_account(s);
	if (a && a->last_status)
		snprintf(lw->status, sizeof(lw->status), "%s", a->last_status);
	lw->req.op = STORAGE_OP_RUN;
	lw->req.run = last_write_run;
	lw->req.done = last_write_done;
	lw->req.inbox = NULL;
	storage_queue_submit(srv->store, &lw->req);
}

void last_activity_note_presence(struct conn *c, const struct xml_node *presence)
{
	struct account *a = c->sess ? session_account(c->sess) : NULL;
	const char *type = stanza_type(presence);
	struct xml_node *st;
	const char *text;
	char *copy;
	size_t len;

	if (!a)
		return;
	if (type[0] == '\0') {
		/* Available again: an older goodbye no longer describes the account. */
		free(a->last_status);
		a->last_status = NULL;
		return;
	}
	if (strcmp(type, "unavailable") != 0)
		return;
	st = xml_child(presence, XML_NS_CLIENT, "status");
	text = st ? xml_text(&c->w->tmp, st) : NULL;
	free(a->last_status);
	a->last_status = NULL;
	if (!text || !text[0])
		return;
	len = strlen(text);
	if (len > LAST_STATUS_MAX)
		len = LAST_STATUS_MAX;
	copy = malloc(len + 1);
	if (!copy)
		return;
	last_activity_truncate(copy, len + 1, text, len);
	a->last_status = copy;
}

bool last_activity_deny_resource(struct worker *w, const struct xml_node *st,
				 const struct jid *from, const struct jid *to)
{
	const struct xml_node *p = xml_first_element(st);
	struct account *a;
	char asker[JID_MAX];

	if (!p || strcmp(p->name, "query") != 0 || strcmp(p->ns, NS_LAST) != 0 ||
	    strcmp(stanza_type(st), "get") != 0)
		return false;
	a = sessdir_find_account(w->sessions, to->buf, to->domain_off + to->domain_len);
	/* The account is online, so its roster is loaded; if not, refuse. */
	if (!a || !a->roster || jid_bare_str(from, asker, sizeof(asker)) < 0)
		return true;
	return !roster_contact_has_from(a, asker);
}

void last_activity_account_free(struct account *a)
{
	free(a->last_status);
	a->last_status = NULL;
}
