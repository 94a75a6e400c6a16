/* SPDX-License-Identifier: MIT */
/*
 * SASL2 (XEP-0388) on c2s streams, and the inline features negotiated in
 * its <authenticate/>: Bind 2 (bind2.c), XEP-0198 resumption and
 * enabling (sm.c), FAST tokens (fast.c). See sasl2.h for the flow.
 *
 * Everything a login needs from storage is asynchronous: the credentials
 * (SCRAM, PLAIN: the same two-phase use of sasl.c as c2s.c makes), the
 * certificate decision (EXTERNAL), the token check (HT), a token to
 * issue, the account's state for binding. Each step that waits pauses
 * the stream's input (c2s_sasl2_waiting) and its completion moves the
 * login on (sasl2_advance) and resumes input once nothing is pending.
 * A completion whose connection closed, or whose login ended, drops what
 * it brought.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>

#include "account.h"
#include "arena.h"
#include "bind2.h"
#include "c2s.h"
#include "config.h"
#include "conn.h"
#include "fast.h"
#include "jid.h"
#include "log.h"
#include "sasl.h"
#include "sasl2.h"
#include "sasl_external.h"
#include "server.h"
#include "session.h"
#include "sm.h"
#include "storage.h"
#include "strbuf.h"
#include "tls.h"
#include "worker.h"
#include "xml.h"

#define NS_SASL_RFC		"urn:ietf:params:xml:ns:xmpp-sasl"
#define SASL2_MECH_MAX		31
#define SASL2_H_MAX		10	/* digits of an unsignedInt 'h' */

enum sasl2_kind {
	SASL2_GSASL = 0,	/* SCRAM and PLAIN through sasl.c */
	SASL2_EXTERNAL,		/* client certificate (sasl_external.c) */
	SASL2_HT,		/* FAST token (fast.c) */
};

/* One SASL2 login, from <authenticate/> to <success/> or <failure/>. */
struct sasl2 {
	enum sasl2_kind kind;
	char mech[SASL2_MECH_MAX + 1];
	struct sasl_exchange *x;		/* SASL2_GSASL */
	bool awaiting_initial;			/* sent an empty challenge for it */
	bool waiting;				/* a storage request is in flight */
	struct storage_req *lookup;		/* the credentials lookup, if in flight */

	/* What <authenticate/> asked for. */
	char ua_id[FAST_CLIENT_ID_MAX + 1];	/* <user-agent id/>, "" none */
	struct bind2_request bind;
	bool resume;
	bool resume_bad;			/* previd or h unusable: bad-request */
	char previd[SASL2_PREVID_MAX + 1];
	char resume_h[SASL2_H_MAX + 1];
	char request_mech[FAST_MECH_MAX + 1];	/* <request-token mechanism/>, "" none */
	bool fast_has_count;
	uint32_t fast_count;
	bool fast_invalidate;

	/* What came of it. */
	char user[STORAGE_USER_MAX + 1];
	char *additional;			/* success data of the mechanism */
	size_t additional_len;
	bool token_done;			/* the token step ran */
	bool token_issued;
	char token[FAST_TOKEN_LEN + 1];
	int64_t expires;
	bool resume_done, resumed, bind_done;
	char full[JID_MAX];			/* the JID Bind 2 binds */
	struct account *preloaded;		/* state loaded with the FAST check, for Bind 2 */
	struct strbuf out;			/* inline answers for <success/> */
};

static const struct config *cfg_of(const struct conn *c)
{
	return c->w->srv->cfg;
}

static unsigned long long cid(const struct conn *c)
{
	return (unsigned long long)c->id;
}

static void sasl2_free(struct conn *c)
{
	struct sasl2 *st = c->sasl2;

	if (!st)
		return;
	c->sasl2 = NULL;
	sasl_end(st->x);
	/* An in-flight lookup is freed by its completion, which finds us gone. */
	if (st->lookup)
		st->lookup->arg = NULL;
	if (st->additional) {
		OPENSSL_cleanse(st->additional, st->additional_len);
		free(st->additional);
	}
	OPENSSL_cleanse(st->token, sizeof(st->token));
	account_free(st->preloaded);
	strbuf_free(&st->out);
	free(st);
}

void sasl2_conn_closing(struct conn *c)
{
	sasl2_free(c);
}

/* Input goes on once no step of the login waits for storage. */
static void sasl2_resume_input(struct conn *c)
{
	if (!c->closing && !(c->sasl2 && c->sasl2->waiting))
		conn_resume_input(c);
}

static void sasl2_wait(struct conn *c)
{
	c->sasl2->waiting = true;
	c2s_sasl2_waiting(c);
}

/* The completion of a request for c's login, or NULL when it is gone. */
static struct conn *sasl2_live(struct storage_req *req)
{
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct conn *c = worker_conn(w, req->slot, req->gen);

	if (!c || c->closing || !c->sasl2 || !c->sasl2->waiting)
		return NULL;
	c->sasl2->waiting = false;
	return c;
}

/* <failure/> (section 2.6.2), then the common bookkeeping of c2s. */
static void sasl2_fail(struct conn *c, const char *condition, const char *text)
{
	struct sasl2 *st = c->sasl2;
	char mech[SASL2_MECH_MAX + 1], user[96];
	struct strbuf *b = &c->w->scratch;

	snprintf(mech, sizeof(mech), "%s", st ? st->mech : "-");
	log_sanitize(user, sizeof(user), st ? st->user : "", st ? strlen(st->user) : 0);
	strbuf_clear(b);
	strbuf_printf(b, "<failure xmlns='" NS_SASL2 "'><%s xmlns='" NS_SASL_RFC "'/>", condition);
	if (text) {
		strbuf_puts(b, "<text>");
		strbuf_append_xml_escaped(b, text, strlen(text));
		strbuf_puts(b, "</text>");
	}
	strbuf_puts(b, "</failure>");
	conn_send(c, b->data, b->len);
	strbuf_clear(b);
	sasl2_free(c);
	c2s_auth_failed(c, mech, user[0] ? user : NULL, condition);
}

/* <challenge/> with base64 data (an empty element for none). */
static void sasl2_challenge(struct conn *c, const char *data, size_t len)
{
	char *b64 = len ? sasl_b64_encode(data, len) : NULL;

	if (len && !b64) {
		sasl2_fail(c, "temporary-auth-failure", NULL);
		return;
	}
	conn_send_str(c, "<challenge xmlns='" NS_SASL2 "'>");
	if (b64)
		conn_send_str(c, b64);
	conn_send_str(c, "</challenge>");
	free(b64);
	c2s_sasl2_challenged(c);
}

/* ---- Features ---- */

void sasl2_features(struct conn *c, struct strbuf *b)
{
	const char *mechs[8], *ht[4];
	struct sasl_channel ch;
	size_t n;

	/* XEP-0388 section 7: after TLS (require_tls = no is the operator's call). */
	if (!cfg_of(c)->sasl2 || (!c->secure && !c2s_plain_allowed_insecure(c)))
		return;
	c2s_channel(c, &ch);
	n = sasl_offer(&ch, c2s_plain_allowed_insecure(c), mechs, 8);
	strbuf_puts(b, "<authentication xmlns='" NS_SASL2 "'>");
	sasl_external_feature(c, b);
	for (size_t i = 0; i < n; i++) {
		strbuf_puts(b, "<mechanism>");
		strbuf_puts(b, mechs[i]);
		strbuf_puts(b, "</mechanism>");
	}
	strbuf_puts(b, "<inline>");
	bind2_features(b);
	strbuf_puts(b, "<sm xmlns='" NS_SM "'/>");	/* XEP-0198 section 7.2 */
	strbuf_puts(b, "<fast xmlns='" NS_FAST "'>");
	n = fast_offer(c->secure, ch.exporter_len > 0, ht, 4);
	for (size_t i = 0; i < n; i++) {
		strbuf_puts(b, "<mechanism>");
		strbuf_puts(b, ht[i]);
		strbuf_puts(b, "</mechanism>");
	}
	strbuf_puts(b, "</fast></inline></authentication>");
}

/* Whether HT mechanism `mech` is offered on c. */
static bool sasl2_ht_offered(struct conn *c, const char *mech)
{
	const char *ht[4];
	struct sasl_channel ch;
	size_t n;

	c2s_channel(c, &ch);
	n = fast_offer(c->secure, ch.exporter_len > 0, ht, 4);
	for (size_t i = 0; i < n; i++)
		if (strcmp(ht[i], mech) == 0)
			return true;
	return false;
}

/* ---- Success ---- */

/* Sends <success/> and what follows it; the login is over. */
static void sasl2_succeed(struct conn *c)
{
	struct sasl2 *st = c->sasl2;
	struct strbuf b = STRBUF_INIT;
	const char *jid = c->sess ? c->sess->jid : c->jid;
	bool resumed = st->resumed;
	char when[32];

	strbuf_puts(&b, "<success xmlns='" NS_SASL2 "'>");
	if (st->additional) {
		char *b64 = sasl_b64_encode(st->additional, st->additional_len);

		if (b64) {
			strbuf_puts(&b, "<additional-data>");
			strbuf_puts(&b, b64);
			strbuf_puts(&b, "</additional-data>");
			free(b64);
		} else {
			b.oom = true;
		}
	}
	/* A full JID when a session is bound or resumed (section 2.6.1). */
	strbuf_puts(&b, "<authorization-identifier>");
	strbuf_append_xml_escaped(&b, jid, strlen(jid));
	strbuf_puts(&b, "</authorization-identifier>");
	if (st->out.len)
		strbuf_append(&b, st->out.data, st->out.len);
	if (st->token_issued) {
		fast_datetime(st->expires, when, sizeof(when));
		strbuf_printf(&b, "<token xmlns='" NS_FAST "' expiry='%s' token='%s'/>", when, st->token);
	}
	strbuf_puts(&b, "</success>");
	if (b.oom) {
		strbuf_free(&b);
		c2s_stream_error(c, "internal-server-error", NULL);
		return;
	}
	conn_send(c, b.data, b.len);
	OPENSSL_cleanse(b.data, b.len);	/* the token */
	strbuf_free(&b);
	log_info("sasl2.success", "conn=%llu jid=%s mechanism=%s bound=%s resumed=%s token=%s",
		 cid(c), jid, st->mech, st->bind_done && c->sess && !resumed ? "yes" : "no",
		 resumed ? "yes" : "no", st->token_issued ? "issued" : "none");
	sasl2_free(c);
	c2s_sasl2_finished(c, resumed);
	if (resumed)
		sm_resume_inline_finish(c);	/* the unacknowledged stanzas follow <success/> */
}

/* ---- Post-authentication steps ---- */

static void sasl2_advance(struct conn *c);

struct sasl2_issue_req {
	struct storage_req req;		/* first; req.user is the account */
	char client[FAST_CLIENT_ID_MAX + 1];
	char mech[FAST_MECH_MAX + 1];
	int64_t now;
	uint32_t lifetime;
	char token[FAST_TOKEN_LEN + 1];	/* out */
	int64_t expires;
};

static int sasl2_issue_run(struct storage *store, struct storage_req *req)
{
	struct sasl2_issue_req *ir = (struct sasl2_issue_req *)req;

	return fast_issue_sync(store, req->user, ir->client, ir->mech, ir->now, ir->lifetime,
			       ir->token, &ir->expires);
}

static void sasl2_issue_done(struct storage_req *req)
{
	struct sasl2_issue_req *ir = (struct sasl2_issue_req *)req;
	struct conn *c = sasl2_live(req);

	if (c) {
		struct sasl2 *st = c->sasl2;

		if (req->result == 0) {
			memcpy(st->token, ir->token, sizeof(st->token));
			st->expires = ir->expires;
			st->token_issued = true;
		} else {
			/* The login stands; the client just gets no token. */
			log_warn("fast.issue_failed", "conn=%llu err=%d", cid(c), req->result);
		}
		sasl2_advance(c);
		arena_reset(&c->w->tmp);
		sasl2_resume_input(c);
	}
	OPENSSL_cleanse(ir, sizeof(*ir));
	free(ir);
}

/* XEP-0484 section 3.2: a token after another mechanism. 0 when submitted. */
static int sasl2_issue_submit(struct conn *c)
{
	struct sasl2 *st = c->sasl2;
	struct sasl2_issue_req *ir = calloc(1, sizeof(*ir));

	if (!ir)
		return -ENOMEM;
	ir->req.op = STORAGE_OP_RUN;
	ir->req.run = sasl2_issue_run;
	ir->req.done = sasl2_issue_done;
	ir->req.inbox = &c->w->inbox;
	ir->req.slot = c->slot;
	ir->req.gen = c->gen;
	snprintf(ir->req.user, sizeof(ir->req.user), "%s", st->user);
	snprintf(ir->client, sizeof(ir->client), "%s", st->ua_id);
	snprintf(ir->mech, sizeof(ir->mech), "%s", st->request_mech);
	ir->now = time(NULL);
	ir->lifetime = cfg_of(c)->fast_token_lifetime;
	sasl2_wait(c);
	storage_queue_submit(c->w->srv->store, &ir->req);
	return 0;
}

/* XEP-0198 section 7.2: <resume/> inside <authenticate/>. */
static void sasl2_inline_resume(struct conn *c)
{
	struct sasl2 *st = c->sasl2;
	struct arena *a = &c->w->tmp;
	struct xml_node *el = xml_node_new(a, NS_SM, "resume");
	int ret;

	if (!el) {
		strbuf_puts(&st->out, "<failed xmlns='" NS_SM "'><internal-server-error xmlns='"
				      "urn:ietf:params:xml:ns:xmpp-stanzas'/></failed>");
		return;
	}
	if (!st->resume_bad) {
		xml_attr_set(a, el, "previd", st->previd);
		xml_attr_set(a, el, "h", st->resume_h);
	}
	ret = sm_resume_inline(c, el, &st->out);
	st->resumed = ret == 1;
	/* Cluster mode: another node holds the session; sasl2_resume_answered goes on. */
	if (ret == -EINPROGRESS)
		sasl2_wait(c);
}

struct strbuf *sasl2_inline_out(struct conn *c)
{
	return c->sasl2 ? &c->sasl2->out : NULL;
}

void sasl2_resume_answered(struct conn *c, bool resumed)
{
	if (!c->sasl2 || !c->sasl2->waiting)
		return;
	c->sasl2->waiting = false;
	c->sasl2->resumed = resumed;
	sasl2_advance(c);
	arena_reset(&c->w->tmp);
	sasl2_resume_input(c);
}

/* Binds now that the account's state is there (or held by another session). */
static void sasl2_bind_now(struct conn *c, struct account *loaded)
{
	struct sasl2 *st = c->sasl2;
	const char *err = NULL;

	/* A failed bind still authenticates: <success/> without <bound/>, then bind later. */
	if (bind2_finish(c, &st->bind, st->full, loaded, &st->out, &err) < 0)
		log_info("bind2.failed", "conn=%llu jid=%s reason=%s", cid(c), st->full, err);
}

static void sasl2_bind_loaded(struct conn *c, struct account *loaded, int err)
{
	if (!c->sasl2 || !c->sasl2->waiting) {
		account_free(loaded);
		return;
	}
	c->sasl2->waiting = false;
	if (err < 0)
		log_info("bind2.failed", "conn=%llu jid=%s reason=account-state", cid(c),
			 c->sasl2->full);
	else
		sasl2_bind_now(c, loaded);
	sasl2_advance(c);
	arena_reset(&c->w->tmp);
	sasl2_resume_input(c);
}

/* Starts Bind 2. true when it waits for the account's state. */
static bool sasl2_bind(struct conn *c)
{
	struct sasl2 *st = c->sasl2;
	char res[JID_PART_MAX + 1];

	if (bind2_resource(c->w->srv->decoy_secret, st->user, st->ua_id, st->bind.tag, res,
			   sizeof(res)) < 0) {
		log_warn("bind2.failed", "conn=%llu reason=resource", cid(c));
		return false;
	}
	snprintf(st->full, sizeof(st->full), "%s/%s", c->jid, res);
	/* Loaded already (FAST), or held by another session (then it is freed). */
	if (st->preloaded || sessdir_find_account(c->w->sessions, c->jid, strlen(c->jid))) {
		struct account *a = st->preloaded;

		st->preloaded = NULL;
		sasl2_bind_now(c, a);
		return false;
	}
	if (account_load_submit(c, st->user, sasl2_bind_loaded) < 0) {
		log_warn("bind2.failed", "conn=%llu reason=no-memory", cid(c));
		return false;
	}
	sasl2_wait(c);
	return true;
}

/*
 * The steps after authentication, in the order the XEPs ask for: the
 * token (XEP-0484), resumption (it wins over binding: XEP-0198 section
 * 7.2), Bind 2, then <success/>. Returns early whenever a step waits.
 */
static void sasl2_advance(struct conn *c)
{
	struct sasl2 *st = c->sasl2;

	if (!st || c->closing)
		return;
	if (st->request_mech[0] && !st->token_done) {
		st->token_done = true;
		if (sasl2_issue_submit(c) == 0)
			return;
	}
	if (st->resume && !st->resume_done) {
		st->resume_done = true;
		sasl2_inline_resume(c);
		if (c->closing || st->waiting)
			return;
	}
	if (st->bind.present && !st->resumed && !st->bind_done) {
		st->bind_done = true;
		if (sasl2_bind(c))
			return;
		if (c->closing)
			return;
	}
	sasl2_succeed(c);
}

/*
 * On the account's home worker (worker.h), where the steps after
 * authentication run: the connection moved there with its input held.
 */
static void sasl2_arrived_home(struct conn *c)
{
	sasl2_advance(c);
	sasl2_resume_input(c);
}

/* The mechanism authenticated st->user. */
static void sasl2_authenticated(struct conn *c)
{
	struct sasl2 *st = c->sasl2;
	unsigned home;

	if (c2s_authenticated(c, st->user, st->mech) < 0)
		return;
	/*
	 * Token, resumption and Bind 2 touch the account: they run at its
	 * home, whatever the transport (a WebSocket moves as a TCP stream does).
	 */
	home = worker_home(c->w->srv, c->jid);
	if (home != c->w->id) {
		worker_migrate(c, home, sasl2_arrived_home);
		return;
	}
	sasl2_advance(c);
}

/* ---- SCRAM and PLAIN (sasl.c), two phases as in c2s.c ---- */

/* Runs one step of the exchange and answers it. */
static void sasl2_step(struct conn *c, const char *in, size_t len)
{
	struct sasl2 *st = c->sasl2;
	const char *condition = "not-authorized";
	char *out = NULL;
	size_t out_len = 0;

	switch (sasl_step(st->x, in, len, &out, &out_len, &condition)) {
	case SASL_CONTINUE:
		sasl2_challenge(c, out, out_len);
		break;
	case SASL_SUCCESS:
		snprintf(st->user, sizeof(st->user), "%s", sasl_authenticated_user(st->x));
		st->additional = out;
		st->additional_len = out_len;
		out = NULL;
		sasl2_authenticated(c);
		break;
	case SASL_FAILURE:
		sasl2_fail(c, condition, NULL);
		break;
	}
	if (out) {
		OPENSSL_cleanse(out, out_len);
		free(out);
	}
}

static void sasl2_lookup_done(struct storage_req *req)
{
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct conn *c = req->arg ? worker_conn(w, req->slot, req->gen) : NULL;

	if (c && !c->closing && c->sasl2 == req->arg) {
		struct sasl2 *st = c->sasl2;

		st->lookup = NULL;
		st->waiting = false;
		if (req->result < 0 && req->result != -ENOENT) {
			sasl2_fail(c, "temporary-auth-failure", NULL);
		} else {
			sasl_set_account(st->x, req->result == 0 ? &req->creds : NULL, req->plain_ok);
			sasl2_step(c, NULL, 0);
		}
		if (!c->closing)
			arena_reset(&c->w->tmp);
		sasl2_resume_input(c);
	}
	OPENSSL_cleanse(req, sizeof(*req));
	free(req);
}

/* Phase one: parse the first message, look the account up. NULL or a condition. */
static const char *sasl2_gsasl_begin(struct conn *c, const char *initial, size_t len)
{
	struct sasl2 *st = c->sasl2;
	char user[SASL_USERNAME_MAX + 1];
	const char *cond = "malformed-request";
	struct sasl_channel ch;
	struct storage_req *req;
	const char *pw;

	c2s_channel(c, &ch);
	if (sasl_begin(c->w->srv->sasl, st->mech, &ch, initial, len, &st->x, user, sizeof(user),
		       &cond) < 0)
		return cond;
	snprintf(st->user, sizeof(st->user), "%s", user);
	req = calloc(1, sizeof(*req));
	if (!req)
		return "temporary-auth-failure";
	pw = sasl_plain_password(st->x);
	req->op = pw ? STORAGE_OP_ACCOUNT_VERIFY_PLAIN : STORAGE_OP_ACCOUNT_GET;
	if (pw)
		snprintf(req->password, sizeof(req->password), "%s", pw);
	snprintf(req->user, sizeof(req->user), "%s", user);
	req->inbox = &c->w->inbox;
	req->done = sasl2_lookup_done;
	req->arg = st;
	req->slot = c->slot;
	req->gen = c->gen;
	st->lookup = req;
	sasl2_wait(c);
	storage_queue_submit(c->w->srv->store, req);
	return NULL;
}

/* ---- EXTERNAL (sasl_external.c) ---- */

static void sasl2_external_done(struct conn *c, const char *user, const char *condition)
{
	struct sasl2 *st = c->sasl2;

	if (!st || !st->waiting)
		return;
	st->waiting = false;
	if (user) {
		snprintf(st->user, sizeof(st->user), "%s", user);
		sasl2_authenticated(c);
	} else {
		sasl2_fail(c, condition, NULL);
	}
	if (!c->closing)
		arena_reset(&c->w->tmp);
	sasl2_resume_input(c);
}

/* ---- HT with a FAST token (fast.c) ---- */

struct sasl2_fast_req {
	struct storage_req req;		/* first */
	struct fast_login fl;
	bool load;			/* Bind 2 will need the account's state */
	struct account *loaded;		/* out: that state */
};

/*
 * The token check and, once it passed, the account's state for Bind 2 in
 * the same request: a FAST login costs one storage round trip, not two.
 */
static int sasl2_fast_run(struct storage *store, struct storage_req *req)
{
	struct sasl2_fast_req *fr = (struct sasl2_fast_req *)req;
	int ret = fast_login_sync(store, &fr->fl);

	/* A failed load just leaves the usual path to sasl2_bind(). */
	if (ret == 0 && !fr->fl.condition && fr->load &&
	    account_load_sync(store, fr->fl.user, &fr->loaded) < 0)
		fr->loaded = NULL;
	return ret;
}

static void sasl2_fast_done(struct storage_req *req)
{
	struct sasl2_fast_req *fr = (struct sasl2_fast_req *)req;
	struct fast_login *fl = &fr->fl;
	struct conn *c = sasl2_live(req);
	char ubuf[96];

	if (c) {
		struct sasl2 *st = c->sasl2;
		const char *cond = req->result < 0 ? "temporary-auth-failure" : fl->condition;

		log_info("fast.auth", "conn=%llu user=%s mechanism=%s result=%s why=\"%s\"", cid(c),
			 log_sanitize(ubuf, sizeof(ubuf), fl->user, strlen(fl->user)), fl->mech,
			 cond ? cond : "success", req->result < 0 ? "storage" : fl->why);
		if (cond) {
			sasl2_fail(c, cond, NULL);
		} else {
			snprintf(st->user, sizeof(st->user), "%s", fl->user);
			st->additional = malloc(FAST_KEY_LEN);
			if (st->additional) {
				memcpy(st->additional, fl->responder, FAST_KEY_LEN);
				st->additional_len = FAST_KEY_LEN;
			}
			/* fast_login_sync() did the requested or rotated token already. */
			st->token_done = true;
			st->preloaded = fr->loaded;
			fr->loaded = NULL;
			if (fl->issued) {
				memcpy(st->token, fl->token, sizeof(st->token));
				st->expires = fl->expires;
				st->token_issued = true;
			}
			sasl2_authenticated(c);
		}
		if (!c->closing)
			arena_reset(&c->w->tmp);
		sasl2_resume_input(c);
	}
	account_free(fr->loaded);
	OPENSSL_cleanse(fr, sizeof(*fr));
	free(fr);
}

/* The channel binding data an HT mechanism hashes. 0 or -ENOTSUP. */
static int sasl2_ht_cb(struct conn *c, enum fast_cb cb, uint8_t *out, size_t *len)
{
	ssize_t n;

	*len = 0;
	if (cb == FAST_CB_NONE)
		return 0;
	if (!c->tls)
		return -ENOTSUP;
	n = tls_conn_channel_binding(c->tls, cb == FAST_CB_EXPR ? "tls-exporter"
								 : "tls-server-end-point",
				     out, FAST_CB_MAX);
	if (n <= 0)
		return -ENOTSUP;
	*len = (size_t)n;
	return 0;
}

/* Parses the HT message and hands the check to the storage thread. NULL or a condition. */
static const char *sasl2_ht_begin(struct conn *c, const char *msg, size_t len)
{
	struct sasl2 *st = c->sasl2;
	const struct fast_mech *m = fast_mech_find(st->mech);
	char raw[FAST_AUTHCID_MAX + 1], bare[JID_MAX];
	struct sasl2_fast_req *fr;
	const uint8_t *mac;
	size_t mac_len;

	if (!m || fast_ht_parse(msg, len, raw, sizeof(raw), &mac, &mac_len) < 0)
		return "malformed-request";
	fr = calloc(1, sizeof(*fr));
	if (!fr)
		return "temporary-auth-failure";
	/* The authcid is the username; HT has no authzid (draft section 1.3). */
	if (jid_prep_local(fr->fl.user, sizeof(fr->fl.user), raw, strlen(raw)) < 0 ||
	    mac_len != FAST_KEY_LEN || sasl2_ht_cb(c, m->cb, fr->fl.cb, &fr->fl.cb_len) < 0) {
		free(fr);
		return "not-authorized";
	}
	snprintf(st->user, sizeof(st->user), "%s", fr->fl.user);
	snprintf(fr->fl.client, sizeof(fr->fl.client), "%s", st->ua_id);
	snprintf(fr->fl.mech, sizeof(fr->fl.mech), "%s", m->name);
	memcpy(fr->fl.mac, mac, FAST_KEY_LEN);
	fr->fl.has_count = st->fast_has_count;
	fr->fl.count = st->fast_count;
	fr->fl.invalidate = st->fast_invalidate;
	snprintf(fr->fl.request_mech, sizeof(fr->fl.request_mech), "%s", st->request_mech);
	fr->fl.now = time(NULL);
	/* Bind 2 without resumption, and no session has the account's state in memory. */
	snprintf(bare, sizeof(bare), "%s@%s", fr->fl.user, cfg_of(c)->domain);
	/*
	 * The session directory is read only at the account's home (worker.h);
	 * elsewhere the state is loaded, and freed at home if a session holds it.
	 */
	fr->load = st->bind.present && !st->resume &&
		   (worker_home(c->w->srv, bare) != c->w->id ||
		    !sessdir_find_account(c->w->sessions, bare, strlen(bare)));
	fr->fl.lifetime = cfg_of(c)->fast_token_lifetime;
	fr->fl.rotate_after = cfg_of(c)->fast_rotate_after;
	fr->req.op = STORAGE_OP_RUN;
	fr->req.run = sasl2_fast_run;
	fr->req.done = sasl2_fast_done;
	fr->req.inbox = &c->w->inbox;
	fr->req.slot = c->slot;
	fr->req.gen = c->gen;
	sasl2_wait(c);
	storage_queue_submit(c->w->srv->store, &fr->req);
	return NULL;
}

/* ---- <authenticate/>, <response/>, <abort/> ---- */

/* Starts the mechanism with its initial response. NULL or a condition. */
static const char *sasl2_begin(struct conn *c, const char *initial, size_t len)
{
	switch (c->sasl2->kind) {
	case SASL2_EXTERNAL: {
		const char *cond = sasl_external_begin(c, initial, len, sasl2_external_done);

		if (!cond)
			sasl2_wait(c);	/* the completion cannot run before we return */
		return cond;
	}
	case SASL2_HT:
		return sasl2_ht_begin(c, initial, len);
	default:
		return sasl2_gsasl_begin(c, initial, len);
	}
}

/* Printable ASCII without spaces, 1..max bytes. */
static bool sasl2_token_ok(const char *s, size_t max)
{
	size_t n = s ? strlen(s) : 0;

	if (n == 0 || n > max)
		return false;
	for (size_t i = 0; i < n; i++)
		if (s[i] < 0x21 || s[i] > 0x7e)
			return false;
	return true;
}

/* Reads an inline <resume/> (XEP-0198) into the login. */
static void sasl2_parse_resume(struct sasl2 *st, const struct xml_node *el)
{
	const char *previd = xml_attr_get(el, "previd");
	const char *h = xml_attr_get(el, "h");

	st->resume = true;
	if (!previd || strlen(previd) > SASL2_PREVID_MAX || !h || strlen(h) > SASL2_H_MAX) {
		st->resume_bad = true;
		return;
	}
	snprintf(st->previd, sizeof(st->previd), "%s", previd);
	snprintf(st->resume_h, sizeof(st->resume_h), "%s", h);
}

/*
 * Reads what <authenticate/> asks for. The initial response, when
 * present, is decoded into *initial (malloc'd; *has_initial set).
 * Returns NULL or the condition to fail with.
 */
static const char *sasl2_parse(struct conn *c, struct sasl2 *st, const struct xml_node *auth,
			       char **initial, size_t *len, bool *has_initial)
{
	const char *v;

	*initial = NULL;
	*len = 0;
	*has_initial = false;
	for (const struct xml_node *ch = xml_first_element(auth); ch; ch = xml_next_element(ch)) {
		if (strcmp(ch->ns, NS_SASL2) == 0 && strcmp(ch->name, "initial-response") == 0) {
			const char *text = xml_text(&c->w->tmp, ch);

			if (*has_initial)
				return "malformed-request";
			*has_initial = true;
			*initial = sasl_b64_decode(text ? text : "", text ? strlen(text) : 0, len);
			if (!*initial)
				return errno == ENOMEM ? "temporary-auth-failure" : "incorrect-encoding";
		} else if (strcmp(ch->ns, NS_SASL2) == 0 && strcmp(ch->name, "user-agent") == 0) {
			v = xml_attr_get(ch, "id");
			if (sasl2_token_ok(v, FAST_CLIENT_ID_MAX))
				snprintf(st->ua_id, sizeof(st->ua_id), "%s", v);
		} else if (strcmp(ch->ns, NS_BIND2) == 0 && strcmp(ch->name, "bind") == 0) {
			bind2_parse(&st->bind, ch);
		} else if (strcmp(ch->ns, NS_SM) == 0 && strcmp(ch->name, "resume") == 0) {
			sasl2_parse_resume(st, ch);
		} else if (strcmp(ch->ns, NS_FAST) == 0 && strcmp(ch->name, "request-token") == 0) {
			v = xml_attr_get(ch, "mechanism");
			/* Only what we offer (section 3.2); anything else gets no token. */
			if (v && sasl2_ht_offered(c, v))
				snprintf(st->request_mech, sizeof(st->request_mech), "%s", v);
			else
				log_info("fast.request_ignored", "conn=%llu reason=mechanism", cid(c));
		} else if (strcmp(ch->ns, NS_FAST) == 0 && strcmp(ch->name, "fast") == 0) {
			v = xml_attr_get(ch, "count");
			if (v && sm_parse_h(v, &st->fast_count) < 0)
				return "malformed-request";
			st->fast_has_count = v != NULL;
			v = xml_attr_get(ch, "invalidate");
			st->fast_invalidate = v && (strcmp(v, "true") == 0 || strcmp(v, "1") == 0);
		}
	}
	return NULL;
}

/* Which kind of mechanism `mech` is, and whether c offers it. NULL or a condition. */
static const char *sasl2_pick(struct conn *c, struct sasl2 *st, const char *mech)
{
	struct sasl_channel ch;

	if (!mech || strlen(mech) > SASL2_MECH_MAX)
		return "invalid-mechanism";
	if (strcmp(mech, "EXTERNAL") == 0) {
		st->kind = SASL2_EXTERNAL;
		return sasl_external_available(c) ? NULL : "invalid-mechanism";
	}
	if (fast_mech_find(mech)) {
		st->kind = SASL2_HT;
		return sasl2_ht_offered(c, mech) ? NULL : "invalid-mechanism";
	}
	st->kind = SASL2_GSASL;
	c2s_channel(c, &ch);
	return sasl_mech_condition(&ch, c2s_plain_allowed_insecure(c), mech);
}

bool sasl2_authenticate(struct conn *c, struct xml_node *el)
{
	const char *mech = xml_attr_get(el, "mechanism");
	const char *cond;
	char *initial = NULL;
	size_t len = 0;
	bool has_initial;
	struct sasl2 *st;

	if (!cfg_of(c)->sasl2 || (!c->secure && !c2s_plain_allowed_insecure(c))) {
		c2s_stream_error(c, "policy-violation", "SASL2 is not offered on this stream");
		return false;
	}
	sasl2_free(c);
	st = calloc(1, sizeof(*st));
	if (!st) {
		c2s_stream_error(c, "internal-server-error", NULL);
		return false;
	}
	c->sasl2 = st;
	snprintf(st->mech, sizeof(st->mech), "%s", mech && strlen(mech) <= SASL2_MECH_MAX ? mech : "-");
	cond = sasl2_pick(c, st, mech);
	if (!cond)
		cond = sasl2_parse(c, st, el, &initial, &len, &has_initial);
	if (!cond && !has_initial) {
		/* No initial response: ask for one with an empty challenge. */
		st->awaiting_initial = true;
		sasl2_challenge(c, NULL, 0);
	} else if (!cond) {
		cond = sasl2_begin(c, initial, len);
	}
	if (cond)
		sasl2_fail(c, cond, NULL);
	if (initial) {
		OPENSSL_cleanse(initial, len);
		free(initial);
	}
	if (!c->closing)
		arena_reset(&c->w->tmp);
	return true;
}

bool sasl2_response(struct conn *c, struct xml_node *el)
{
	struct sasl2 *st = c->sasl2;
	const char *text = xml_text(&c->w->tmp, el);
	const char *cond = NULL;
	size_t len = 0;
	char *data;

	data = sasl_b64_decode(text ? text : "", text ? strlen(text) : 0, &len);
	arena_reset(&c->w->tmp);
	if (!st) {
		c2s_stream_error(c, "policy-violation", "no SASL2 exchange in progress");
		goto out;
	}
	if (!data) {
		sasl2_fail(c, errno == ENOMEM ? "temporary-auth-failure" : "incorrect-encoding", NULL);
		goto out;
	}
	if (st->awaiting_initial) {
		st->awaiting_initial = false;
		cond = sasl2_begin(c, data, len);
	} else if (st->x) {
		sasl2_step(c, data, len);
	} else {
		cond = "malformed-request";
	}
	if (cond)
		sasl2_fail(c, cond, NULL);
out:
	if (data) {
		OPENSSL_cleanse(data, len);
		free(data);
	}
	if (!c->closing)
		arena_reset(&c->w->tmp);
	return true;
}

bool sasl2_abort(struct conn *c, struct xml_node *el)
{
	sasl2_fail(c, "aborted", NULL);
	return true;
}
