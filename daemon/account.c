/* SPDX-License-Identifier: MIT */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "account.h"
#include "avatar_compat.h"
#include "blocking.h"
#include "conn.h"
#include "last_activity.h"
#include "log.h"
#include "mam.h"
#include "offline.h"
#include "roster.h"
#include "server.h"
#include "worker.h"

int account_load_sync(struct storage *st, const char *user, struct account **out)
{
	struct account *a = calloc(1, sizeof(*a));
	int ret;

	*out = NULL;
	if (!a)
		return -ENOMEM;
	snprintf(a->user, sizeof(a->user), "%s", user);
	/* Each feature's per-account state loads here. */
	ret = blocking_load_sync(st, user, &a->blocklist);
	if (ret < 0) {
		account_free(a);
		return ret;
	}
	ret = roster_load_sync(st, user, &a->roster);
	if (ret == 0)
		ret = offline_count_sync(st, user, &a->offline_count);
	if (ret == 0)
		ret = mam_prefs_load_sync(st, user, &a->mam_prefs);
	/* Without the hash, presence just goes without it (XEP-0153). */
	if (ret == 0 && avatar_compat_load(st, user, a->avatar_hash) < 0)
		a->avatar_hash[0] = '\0';
	if (ret < 0) {
		account_free(a);
		return ret;
	}
	*out = a;
	return 0;
}

void account_free(struct account *a)
{
	if (!a)
		return;
	last_activity_account_free(a);
	blocklist_free(a->blocklist);
	roster_free(a->roster);
	mam_prefs_free(a->mam_prefs);
	free(a);
}

static int account_load_run(struct storage *st, struct storage_req *req)
{
	struct account_load_req *lr = (struct account_load_req *)req;

	return account_load_sync(st, req->user, &lr->loaded);
}

static void account_load_done(struct storage_req *req)
{
	struct account_load_req *lr = (struct account_load_req *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct conn *c = worker_conn(w, req->slot, req->gen);

	if (!c || c->closing) {
		account_free(lr->loaded);
	} else {
		if (req->result < 0)
			log_warn("account.load_failed", "user=%s err=%d", req->user, req->result);
		lr->done(c, req->result < 0 ? NULL : lr->loaded, req->result);
	}
	free(lr);
}

int account_load_submit(struct conn *c, const char *user,
			void (*done)(struct conn *c, struct account *loaded, int err))
{
	struct account_load_req *lr = calloc(1, sizeof(*lr));

	if (!lr)
		return -ENOMEM;
	lr->req.op = STORAGE_OP_RUN;
	lr->req.run = account_load_run;
	lr->req.done = account_load_done;
	lr->req.inbox = &c->w->inbox;
	lr->req.slot = c->slot;
	lr->req.gen = c->gen;
	snprintf(lr->req.user, sizeof(lr->req.user), "%s", user);
	lr->done = done;
	storage_queue_submit(c->w->srv->store, &lr->req);
	return 0;
}
