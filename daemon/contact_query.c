/* SPDX-License-Identifier: MIT */
/* Facts about a local account for answers on its behalf; see contact_query.h. */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "conn.h"
#include "contact_query.h"
#include "log.h"
#include "roster.h"
#include "server.h"
#include "session.h"
#include "worker.h"

struct contact_op {
	struct iq_async a;		/* first */
	char asker[JID_MAX];		/* bare JID */
	bool want_last;
	contact_answer_fn *answer;
	struct contact_facts f;
};

/* Storage thread: existence, subscription and (maybe) last logout in one go. */
static int contact_run(struct storage *st, struct storage_req *req)
{
	struct contact_op *op = (struct contact_op *)req;

	return contact_store_facts(st, req->user, op->asker, op->want_last, &op->f);
}

static void contact_done(struct storage_req *req)
{
	struct contact_op *op = (struct contact_op *)req;
	struct session *s = iq_async_session(&op->a);
	struct worker *w = iq_async_worker(&op->a);

	if (req->result < 0)
		log_warn("contact.storage_failed", "user=%s err=%d", req->user, req->result);
	if (s) {
		if (req->result < 0) {
			iq_async_error(&op->a, s, "internal-server-error", NULL);
		} else {
			/* Sessions come and go during the round trip: look now. */
			op->f.online = op->f.exists &&
				       sessdir_find_bare(w->sessions, op->a.to,
							 strlen(op->a.to)) != NULL;
			op->answer(&op->a, s, &op->f);
		}
	}
	iq_async_free(&op->a);
}

/*
 * The account is online with its roster in memory: the facts are at hand
 * (and the store may lag behind the roster's own writes). Returns false
 * when they are not.
 */
static bool contact_query_memory(struct iq_request *rq, const char *ns, const char *name,
				 contact_answer_fn *answer)
{
	struct sessdir *dir = rq->w->sessions;
	size_t bare_len = rq->to->domain_off + rq->to->domain_len;
	struct account *a = sessdir_find_account(dir, rq->to->buf, bare_len);
	struct contact_facts f = { .exists = true, .online = true };
	char asker[JID_MAX];
	struct iq_async op;
	struct session *s;

	if (!a || !a->roster || jid_bare_str(rq->from, asker, sizeof(asker)) < 0)
		return false;
	f.subscribed = roster_contact_has_from(a, asker);
	s = iq_async_init_sync(&op, rq, ns, name);
	if (s)
		answer(&op, s, &f);
	return true;
}

void contact_query(struct iq_request *rq, bool want_last, const char *ns, const char *name,
		   contact_answer_fn *answer)
{
	char user[JID_PART_MAX + 1];
	struct contact_op *op;

	if (contact_query_memory(rq, ns, name, answer))
		return;

	/* Offline (or no such account): the store knows. */
	snprintf(user, sizeof(user), "%.*s", (int)rq->to->local_len, rq->to->buf);
	op = iq_async_new(rq, sizeof(*op), user, ns, name, contact_run, contact_done);
	if (!op)
		return;
	if (jid_bare_str(rq->from, op->asker, sizeof(op->asker)) < 0) {
		iq_reply_error(rq, "internal-server-error", NULL);
		free(op);
		return;
	}
	op->want_last = want_last;
	op->answer = answer;
	iq_async_submit(rq, &op->a);
}
