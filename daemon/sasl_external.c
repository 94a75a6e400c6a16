/* SPDX-License-Identifier: MIT */
/*
 * SASL EXTERNAL (XEP-0178): which account a client certificate logs in
 * as. The certificate's facts were captured at the end of the TLS
 * handshake (tls_client_cert.c); what the store knows (enrolled
 * fingerprints, existing accounts) is looked up on the storage thread,
 * which also takes the decision, so one request answers the attempt.
 */
#include <errno.h>
#include <stddef.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/x509.h>

#include "conn.h"
#include "device.h"
#include "jid.h"
#include "log.h"
#include "roster.h"
#include "sasl_external.h"
#include "server.h"
#include "storage.h"
#include "strbuf.h"
#include "tls.h"
#include "worker.h"

/* One EXTERNAL attempt on the storage thread. */
struct external_req {
	struct storage_req req;		/* first; req.user gets the result */
	sasl_external_done_fn done;
	uint8_t fp[TLS_FINGERPRINT_LEN];
	char cands[TLS_PEER_JIDS_MAX][JID_PART_MAX + 1];
	size_t ncands;
	bool has_authz;
	bool authz_ok;			/* authz names an account of this domain */
	char authz[JID_PART_MAX + 1];
	const char *condition;		/* out: NULL on success */
	bool enrolled, revoked;		/* out: for the log */
};

static const struct tls_peer_cert *external_cert(const struct conn *c)
{
	return c->tls ? tls_conn_peer_cert(c->tls) : NULL;
}

bool sasl_external_available(const struct conn *c)
{
	return c->secure && external_cert(c) != NULL;
}

bool sasl_external_offered(const struct conn *c)
{
	const struct tls_peer_cert *pc = external_cert(c);

	return c->secure && pc && pc->verified;
}

void sasl_external_feature(const struct conn *c, struct strbuf *b)
{
	if (sasl_external_offered(c))
		strbuf_puts(b, "<mechanism>EXTERNAL</mechanism>");
}

const char *sasl_external_decide(const struct sasl_external_facts *f, const char **user)
{
	*user = NULL;
	if (f->enrolled) {
		if (f->revoked)
			return "not-authorized";
		if (f->has_authz && (!f->authz || strcmp(f->authz, f->enrolled) != 0))
			return "invalid-authzid";
		*user = f->enrolled;
		return NULL;
	}
	/* XEP-0178 section 3, step 8: mapping by the certificate's JIDs. */
	if (f->ncands == 0)
		return "not-authorized";
	if (!f->has_authz) {
		if (f->ncands > 1)
			return "invalid-authzid";
		*user = f->cands[0];
		return NULL;
	}
	for (size_t i = 0; f->authz && i < f->ncands; i++) {
		if (strcmp(f->cands[i], f->authz) == 0) {
			*user = f->cands[i];
			return NULL;
		}
	}
	return "invalid-authzid";
}

/*
 * The localpart of `text` when it is a bare JID at `domain`, copied into
 * out. 0 or -EINVAL. j is scratch space (3 KiB, kept off the stack).
 */
static int external_local_at(struct jid *j, const char *text, size_t len, const char *domain,
			     char *out, size_t out_size)
{
	size_t dlen = strlen(domain);

	if (jid_parse(j, text, len) < 0 || !jid_has_local(j) || jid_has_resource(j) ||
	    j->domain_len != dlen || memcmp(j->buf + j->domain_off, domain, dlen) != 0 ||
	    j->local_len >= out_size)
		return -EINVAL;
	memcpy(out, j->buf, j->local_len);
	out[j->local_len] = '\0';
	return 0;
}

/* Storage thread: gathers the facts, decides. */
static int external_run(struct storage *st, struct storage_req *req)
{
	struct external_req *er = (struct external_req *)req;
	struct sasl_external_facts f = { .has_authz = er->has_authz };
	char enrolled[STORAGE_USER_MAX + 1];
	const char *user;
	int ret;

	ret = device_db_cert_find(st, er->fp, enrolled, sizeof(enrolled), &er->revoked);
	if (ret < 0 && ret != -ENOENT)
		return ret;
	er->enrolled = ret == 0;
	if (er->enrolled) {
		f.enrolled = enrolled;
		f.revoked = er->revoked;
	} else {
		for (size_t i = 0; i < er->ncands; i++) {
			ret = roster_db_account_exists(st, er->cands[i]);
			if (ret == 0)
				f.cands[f.ncands++] = er->cands[i];
			else if (ret != -ENOENT)
				return ret;
		}
	}
	f.authz = er->authz_ok ? er->authz : NULL;
	er->condition = sasl_external_decide(&f, &user);
	if (!er->condition)
		snprintf(req->user, sizeof(req->user), "%s", user);
	return 0;
}

/* Worker: hands the outcome to the profile that started the attempt. */
static void external_done(struct storage_req *req)
{
	struct external_req *er = (struct external_req *)req;
	struct worker *w = (struct worker *)((char *)req->inbox - offsetof(struct worker, inbox));
	struct conn *c = worker_conn(w, req->slot, req->gen);
	char fp[3 * TLS_FINGERPRINT_LEN];
	const char *cond = er->condition;

	if (req->result < 0)
		cond = "temporary-auth-failure";
	if (c && !c->closing) {
		tls_fingerprint_format(er->fp, fp);
		log_info("auth.external", "conn=%llu fingerprint=%s enrolled=%s revoked=%s result=%s",
			 (unsigned long long)c->id, fp, er->enrolled ? "yes" : "no",
			 er->revoked ? "yes" : "no", cond ? cond : "success");
		er->done(c, cond ? NULL : req->user, cond);
	}
	free(er);
}

/* Fills the candidates from the certificate's JIDs at our domain. */
static void external_candidates(struct external_req *er, const struct tls_peer_cert *pc,
				const char *domain, struct jid *j)
{
	for (unsigned i = 0; i < pc->njids && er->ncands < TLS_PEER_JIDS_MAX; i++) {
		char *out = er->cands[er->ncands];
		bool dup = false;

		if (external_local_at(j, pc->jids[i], strlen(pc->jids[i]), domain, out,
				      sizeof(er->cands[0])) < 0)
			continue;
		/* A certificate naming one JID twice still names one account. */
		for (size_t k = 0; k < er->ncands; k++)
			dup = dup || strcmp(er->cands[k], out) == 0;
		if (!dup)
			er->ncands++;
	}
}

const char *sasl_external_begin(struct conn *c, const char *authzid, size_t len,
				sasl_external_done_fn done)
{
	const struct tls_peer_cert *pc = external_cert(c);
	const char *domain = c->w->srv->cfg->domain;
	struct external_req *er;
	struct jid *j;

	if (!pc || !c->secure)
		return "invalid-mechanism";
	if (!pc->verified) {
		log_info("auth.external", "conn=%llu result=not-authorized why=\"%s\"",
			 (unsigned long long)c->id, X509_verify_cert_error_string(pc->verify_error));
		return "not-authorized";
	}
	if (len > JID_MAX - 1 || (len && memchr(authzid, '\0', len)))
		return "invalid-authzid";
	er = calloc(1, sizeof(*er));
	j = malloc(sizeof(*j));
	if (!er || !j) {
		free(er);
		free(j);
		return "temporary-auth-failure";
	}
	memcpy(er->fp, pc->sha256, sizeof(er->fp));
	external_candidates(er, pc, domain, j);
	er->has_authz = len > 0;
	er->authz_ok = len > 0 && external_local_at(j, authzid, len, domain, er->authz,
						    sizeof(er->authz)) == 0;
	free(j);
	er->done = done;
	er->req.op = STORAGE_OP_RUN;
	er->req.run = external_run;
	er->req.done = external_done;
	er->req.inbox = &c->w->inbox;
	er->req.slot = c->slot;
	er->req.gen = c->gen;
	storage_queue_submit(c->w->srv->store, &er->req);
	return NULL;
}
