/* SPDX-License-Identifier: MIT */
/*
 * Tests for daemon/sasl.c and daemon/scram.c.
 *
 * Full exchanges are driven by GNU SASL's client side against
 * sasl_begin/sasl_set_account/sasl_step, the way the stream layer will
 * drive them; hand-made messages cover what a real client never sends.
 */
#include <errno.h>
#include <pthread.h>
#include <setjmp.h>
#include <stdarg.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cmocka.h>
#include <gsasl.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>

#include "sasl.h"
#include "scram.h"

#define DOMAIN		"example.org"
#define PASSWORD	"s3cret pass"

static struct sasl_server *srv;
static Gsasl *cctx;			/* GNU SASL, client side */
static struct scram_creds juliet;	/* account "juliet", password PASSWORD */

static const uint8_t decoy_secret[32] = { 1, 2, 3, 4, 5, 6, 7, 8, 9 };

/* ---- channels ---- */

static void chan_plain(struct sasl_channel *ch)
{
	memset(ch, 0, sizeof(*ch));
}

static void chan_tls_nocb(struct sasl_channel *ch)
{
	memset(ch, 0, sizeof(*ch));
	ch->tls = true;
	ch->tls13 = true;
}

/* TLS 1.3 with exporter data, and unique data (as slixmpp computes it). */
static void chan_tls13(struct sasl_channel *ch, bool with_unique)
{
	chan_tls_nocb(ch);
	for (size_t i = 0; i < 32; i++)
		ch->exporter[i] = (unsigned char)(0xa0 + i);
	ch->exporter_len = 32;
	if (with_unique) {
		for (size_t i = 0; i < 12; i++)
			ch->unique[i] = (unsigned char)(0x10 + i);
		ch->unique_len = 12;
	}
}

static void chan_tls12_unique_only(struct sasl_channel *ch)
{
	chan_tls_nocb(ch);
	ch->tls13 = false;
	for (size_t i = 0; i < 12; i++)
		ch->unique[i] = (unsigned char)(0x10 + i);
	ch->unique_len = 12;
}

/* ---- the client side ---- */

struct client {
	const char *authid;
	const char *password;
	const char *authzid;
	const unsigned char *exporter;	/* binding data the client sees */
	size_t exporter_len;
	const unsigned char *unique;
	size_t unique_len;
};

static int client_set_b64(Gsasl_session *s, Gsasl_property p, const unsigned char *d,
			  size_t len)
{
	char *b64 = sasl_b64_encode((const char *)d, len);
	int rc = gsasl_property_set(s, p, b64);

	free(b64);
	return rc;
}

static int client_cb(Gsasl *ctx, Gsasl_session *s, Gsasl_property prop)
{
	const struct client *cl = gsasl_session_hook_get(s);

	(void)ctx;
	switch (prop) {
	case GSASL_AUTHID:
		return gsasl_property_set(s, prop, cl->authid);
	case GSASL_PASSWORD:
		return gsasl_property_set(s, prop, cl->password);
	case GSASL_AUTHZID:
		return cl->authzid ? gsasl_property_set(s, prop, cl->authzid) : GSASL_NO_CALLBACK;
	case GSASL_CB_TLS_EXPORTER:
		return cl->exporter_len ? client_set_b64(s, prop, cl->exporter, cl->exporter_len)
					: GSASL_NO_CALLBACK;
	case GSASL_CB_TLS_UNIQUE:
		return cl->unique_len ? client_set_b64(s, prop, cl->unique, cl->unique_len)
				      : GSASL_NO_CALLBACK;
	default:
		return GSASL_NO_CALLBACK;
	}
}

/* A client that sees the channel exactly as the server does. */
static struct client client_for(const char *user, const char *pw, const struct sasl_channel *ch)
{
	struct client cl = { .authid = user, .password = pw };

	if (ch) {
		cl.exporter = ch->exporter;
		cl.exporter_len = ch->exporter_len;
		cl.unique = ch->unique;
		cl.unique_len = ch->unique_len;
	}
	return cl;
}

/* What one exchange did, for the assertions. */
struct run {
	const char *condition;	/* NULL on success */
	int begin_rc;
	int failed_at;		/* 0 begin, 1 first step, 2 final step */
	char user[SASL_USERNAME_MAX + 1];
	char server_first[512];
	bool client_verified;	/* the client accepted the server signature */
};

/*
 * Runs mech from start to end: client-first, lookup outcome (creds, or
 * NULL for no such account), server-first, client-final, server-final.
 * For PLAIN the verdict is computed as storage would, unless
 * force_plain is set, in which case plain_verdict is used as is.
 */
static void run_full(struct run *r, const char *mech, const struct sasl_channel *ch,
		     const struct client *cl, const struct scram_creds *creds,
		     bool force_plain, bool plain_verdict)
{
	Gsasl_session *c;
	struct sasl_exchange *x = NULL;
	char *cmsg = NULL, *smsg = NULL;
	size_t clen = 0, slen = 0;
	enum sasl_result res;
	int rc;

	memset(r, 0, sizeof(*r));
	assert_int_equal(gsasl_client_start(cctx, mech, &c), GSASL_OK);
	gsasl_session_hook_set(c, (void *)cl);
	rc = gsasl_step(c, NULL, 0, &cmsg, &clen);
	assert_true(rc == GSASL_OK || rc == GSASL_NEEDS_MORE);

	r->begin_rc = sasl_begin(srv, mech, ch, cmsg, clen, &x, r->user, sizeof(r->user),
				 &r->condition);
	free(cmsg);
	if (r->begin_rc != 0) {
		assert_null(x);
		assert_non_null(r->condition);
		goto out;
	}
	assert_non_null(x);
	assert_true(sasl_needs_lookup(x));
	if (strcmp(mech, "PLAIN") == 0) {
		bool ok = force_plain ? plain_verdict
			  : creds && scram_verify_password(creds, sasl_plain_password(x));

		sasl_set_account(x, creds, ok);
	} else {
		assert_null(sasl_plain_password(x));
		sasl_set_account(x, creds, false);
	}
	assert_false(sasl_needs_lookup(x));

	r->failed_at = 1;
	res = sasl_step(x, NULL, 0, &smsg, &slen, &r->condition);
	if (res == SASL_FAILURE)
		goto out;
	if (strcmp(mech, "PLAIN") == 0) {
		assert_int_equal(res, SASL_SUCCESS);
		assert_null(smsg);
		goto success;
	}
	assert_int_equal(res, SASL_CONTINUE);
	assert_non_null(smsg);
	assert_true(slen < sizeof(r->server_first));
	memcpy(r->server_first, smsg, slen);

	rc = gsasl_step(c, smsg, slen, &cmsg, &clen);
	free(smsg);
	smsg = NULL;
	assert_int_equal(rc, GSASL_NEEDS_MORE);
	r->failed_at = 2;
	res = sasl_step(x, cmsg, clen, &smsg, &slen, &r->condition);
	free(cmsg);
	if (res == SASL_FAILURE)
		goto out;
	assert_int_equal(res, SASL_SUCCESS);
	assert_non_null(smsg);
	/* The client checks the server signature (v=): mutual authentication. */
	rc = gsasl_step(c, smsg, slen, &cmsg, &clen);
	free(cmsg);
	r->client_verified = rc == GSASL_OK;
success:
	r->condition = NULL;
	assert_string_equal(sasl_authenticated_user(x), r->user);
	assert_string_equal(sasl_mech_name(x), mech);
out:
	if (r->condition && x)
		assert_null(sasl_authenticated_user(x));
	free(smsg);
	sasl_end(x);
	gsasl_finish(c);
}

/* sasl_begin on a hand-made message; returns the condition (NULL = ok). */
static const char *begin_raw(const char *mech, const struct sasl_channel *ch, const char *msg,
			     size_t len, char *user, size_t user_size)
{
	struct sasl_exchange *x = NULL;
	const char *cond = NULL;
	char dummy[SASL_USERNAME_MAX + 1];
	int rc;

	if (!user) {
		user = dummy;
		user_size = sizeof(dummy);
	}
	rc = sasl_begin(srv, mech, ch, msg, len, &x, user, user_size, &cond);
	if (rc == 0) {
		assert_non_null(x);
		assert_null(cond);
		sasl_end(x);
		return NULL;
	}
	assert_int_equal(rc, -EINVAL);
	assert_null(x);
	assert_non_null(cond);
	return cond;
}

static const char *begin_str(const char *mech, const struct sasl_channel *ch, const char *msg)
{
	return begin_raw(mech, ch, msg, strlen(msg), NULL, 0);
}

/* ---- setup ---- */

static int group_setup(void **state)
{
	(void)state;
	srv = sasl_server_new(DOMAIN, decoy_secret);
	if (!srv)
		return -1;
	if (gsasl_init(&cctx) != GSASL_OK)
		return -1;
	gsasl_callback_set(cctx, client_cb);
	return scram_creds_from_password(PASSWORD, 0, &juliet);
}

static int group_teardown(void **state)
{
	(void)state;
	sasl_server_free(srv);
	gsasl_done(cctx);
	scram_creds_wipe(&juliet);
	return 0;
}

/* ---- SCRAM exchanges ---- */

static void test_scram_sha256_succeeds(void **state)
{
	struct sasl_channel ch;
	struct client cl = client_for("juliet", PASSWORD, NULL);
	struct run r;

	(void)state;
	chan_tls_nocb(&ch);
	run_full(&r, "SCRAM-SHA-256", &ch, &cl, &juliet, false, false);
	assert_null(r.condition);
	assert_string_equal(r.user, "juliet");
	assert_true(r.client_verified);
}

static void test_scram_sha1_succeeds(void **state)
{
	struct sasl_channel ch;
	struct client cl = client_for("juliet", PASSWORD, NULL);
	struct run r;

	(void)state;
	chan_tls_nocb(&ch);
	run_full(&r, "SCRAM-SHA-1", &ch, &cl, &juliet, false, false);
	assert_null(r.condition);
	assert_true(r.client_verified);
}

static void test_scram_username_is_nodeprepped(void **state)
{
	struct sasl_channel ch;
	struct client cl = client_for("JuLiEt", PASSWORD, NULL);
	struct run r;

	(void)state;
	chan_tls_nocb(&ch);
	run_full(&r, "SCRAM-SHA-256", &ch, &cl, &juliet, false, false);
	assert_null(r.condition);
	assert_string_equal(r.user, "juliet");
}

static void test_scram_wrong_password_not_authorized(void **state)
{
	struct sasl_channel ch;
	struct client cl = client_for("juliet", "wrong", NULL);
	struct run r;

	(void)state;
	chan_tls_nocb(&ch);
	run_full(&r, "SCRAM-SHA-256", &ch, &cl, &juliet, false, false);
	assert_string_equal(r.condition, "not-authorized");
	assert_int_equal(r.failed_at, 2);
	run_full(&r, "SCRAM-SHA-1", &ch, &cl, &juliet, false, false);
	assert_string_equal(r.condition, "not-authorized");
	assert_int_equal(r.failed_at, 2);
}

/* Value of attribute `attr` ("s", "i", "r") in a server-first-message. */
static void sf_attr(const char *sf, char attr, char *out, size_t out_size)
{
	char key[4] = { attr, '=', '\0' };
	const char *p = sf;

	out[0] = '\0';
	while (p && *p) {
		if (strncmp(p, key, 2) == 0) {
			size_t n = strcspn(p + 2, ",");

			assert_true(n < out_size);
			memcpy(out, p + 2, n);
			out[n] = '\0';
			return;
		}
		p = strchr(p, ',');
		if (p)
			p++;
	}
}

static void test_scram_unknown_user_fails_only_at_end(void **state)
{
	struct sasl_channel ch;
	struct client cl = client_for("nobody", PASSWORD, NULL);
	struct client cl2 = client_for("somebody", PASSWORD, NULL);
	struct run r, r2, real;
	char salt[64], salt2[64], salt_real[64], iter[16];

	(void)state;
	chan_tls_nocb(&ch);
	run_full(&r, "SCRAM-SHA-256", &ch, &cl, NULL, false, false);
	assert_string_equal(r.condition, "not-authorized");
	assert_int_equal(r.failed_at, 2);
	/* The first challenge looks like a real account's. */
	sf_attr(r.server_first, 'i', iter, sizeof(iter));
	assert_string_equal(iter, "4096");
	sf_attr(r.server_first, 's', salt, sizeof(salt));
	run_full(&real, "SCRAM-SHA-256", &ch, &cl, &juliet, false, false);
	sf_attr(real.server_first, 's', salt_real, sizeof(salt_real));
	assert_int_equal(strlen(salt), strlen(salt_real));
	/* Stable for a name across attempts, different between names. */
	run_full(&r2, "SCRAM-SHA-1", &ch, &cl, NULL, false, false);
	sf_attr(r2.server_first, 's', salt2, sizeof(salt2));
	assert_string_equal(salt, salt2);
	assert_string_equal(r2.condition, "not-authorized");
	run_full(&r2, "SCRAM-SHA-256", &ch, &cl2, NULL, false, false);
	sf_attr(r2.server_first, 's', salt2, sizeof(salt2));
	assert_string_not_equal(salt, salt2);
}

static void test_scram_server_nonce_fresh(void **state)
{
	struct sasl_channel ch;
	struct client cl = client_for("juliet", PASSWORD, NULL);
	struct run r1, r2;
	char n1[128], n2[128];

	(void)state;
	chan_tls_nocb(&ch);
	run_full(&r1, "SCRAM-SHA-256", &ch, &cl, &juliet, false, false);
	run_full(&r2, "SCRAM-SHA-256", &ch, &cl, &juliet, false, false);
	sf_attr(r1.server_first, 'r', n1, sizeof(n1));
	sf_attr(r2.server_first, 'r', n2, sizeof(n2));
	/* r = client nonce || server nonce; gsasl's client nonce is 24 chars. */
	assert_true(strlen(n1) >= 24 + 16);
	assert_string_not_equal(n1 + 24, n2 + 24);
}

static void test_scram_same_message_twice_gets_new_nonce(void **state)
{
	static const char msg[] = "n,,n=juliet,r=fixedclientnonce";
	struct sasl_channel ch;
	struct sasl_exchange *x;
	const char *cond;
	char user[SASL_USERNAME_MAX + 1];
	char *sf[2];
	size_t len;

	(void)state;
	chan_tls_nocb(&ch);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(sasl_begin(srv, "SCRAM-SHA-256", &ch, msg, strlen(msg), &x,
					    user, sizeof(user), &cond), 0);
		sasl_set_account(x, &juliet, false);
		assert_int_equal(sasl_step(x, NULL, 0, &sf[i], &len, &cond), SASL_CONTINUE);
		sasl_end(x);
	}
	assert_memory_equal(sf[0], "r=fixedclientnonce", 18);
	assert_string_not_equal(sf[0], sf[1]);
	free(sf[0]);
	free(sf[1]);
}

/*
 * Runs a SCRAM exchange whose client-final is "c=<cbind>,r=<nonce><tail>",
 * or `tail` alone when cbind is NULL; returns the failure condition.
 */
static const char *scram_with_final_for(const struct scram_creds *creds, const char *cbind,
					bool keep_nonce, const char *tail)
{
	static const char msg[] = "n,,n=juliet,r=abcdefghijkl";
	struct sasl_channel ch;
	struct sasl_exchange *x;
	const char *cond = NULL;
	char user[SASL_USERNAME_MAX + 1], nonce[128], final[512];
	char *sf, *out = NULL;
	size_t len;
	enum sasl_result res;

	chan_tls_nocb(&ch);
	assert_int_equal(sasl_begin(srv, "SCRAM-SHA-256", &ch, msg, strlen(msg), &x,
				    user, sizeof(user), &cond), 0);
	sasl_set_account(x, creds, false);
	assert_int_equal(sasl_step(x, NULL, 0, &sf, &len, &cond), SASL_CONTINUE);
	sf_attr(sf, 'r', nonce, sizeof(nonce));
	free(sf);
	if (cbind)
		snprintf(final, sizeof(final), "c=%s,r=%s%s", cbind,
			 keep_nonce ? nonce : "abcdefghijklXXXX", tail);
	else
		snprintf(final, sizeof(final), "%s", tail);
	res = sasl_step(x, final, strlen(final), &out, &len, &cond);
	assert_int_equal(res, SASL_FAILURE);
	assert_null(out);
	/* A failed exchange stays failed. */
	assert_int_equal(sasl_step(x, final, strlen(final), &out, &len, &cond), SASL_FAILURE);
	sasl_end(x);
	return cond;
}

static const char *scram_with_final(const char *cbind, bool keep_nonce, const char *tail)
{
	return scram_with_final_for(&juliet, cbind, keep_nonce, tail);
}

static void test_scram_bad_client_final(void **state)
{
	static const char proof[] = ",p=AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=";

	(void)state;
	/* A proof of the right size that is wrong. */
	assert_string_equal(scram_with_final("biws", true, proof), "not-authorized");
	/* Someone else's nonce. */
	assert_string_equal(scram_with_final("biws", false, proof), "not-authorized");
	/* Channel binding that does not repeat the gs2 header ("y,,"). */
	assert_string_equal(scram_with_final("eSws", true, proof), "not-authorized");
	/* Not base64 inside the message. */
	assert_string_equal(scram_with_final("b!ws", true, proof), "malformed-request");
	assert_string_equal(scram_with_final(NULL, true, "garbage"), "malformed-request");
	assert_string_equal(scram_with_final("biws", true, ""), "malformed-request");
	/* A proof of the wrong length. */
	assert_string_equal(scram_with_final("biws", true, ",p=AAAA"), "malformed-request");
	/* No account: the same conditions, so they tell nothing. */
	assert_string_equal(scram_with_final_for(NULL, "biws", true, proof), "not-authorized");
	assert_string_equal(scram_with_final_for(NULL, NULL, true, "garbage"),
			    "malformed-request");
	assert_string_equal(scram_with_final_for(NULL, "b!ws", true, proof),
			    "malformed-request");
	assert_string_equal(scram_with_final_for(NULL, "biws", true, ",p=AAAA"),
			    "malformed-request");
}

static void test_scram_final_with_nul_or_oversized(void **state)
{
	static const char msg[] = "n,,n=juliet,r=abcdefghijkl";
	struct sasl_channel ch;
	struct sasl_exchange *x;
	const char *cond;
	char user[SASL_USERNAME_MAX + 1];
	char *sf, *big;
	size_t len;

	(void)state;
	chan_tls_nocb(&ch);
	for (int i = 0; i < 2; i++) {
		assert_int_equal(sasl_begin(srv, "SCRAM-SHA-256", &ch, msg, strlen(msg), &x,
					    user, sizeof(user), &cond), 0);
		sasl_set_account(x, &juliet, false);
		assert_int_equal(sasl_step(x, NULL, 0, &sf, &len, &cond), SASL_CONTINUE);
		free(sf);
		if (i == 0) {
			assert_int_equal(sasl_step(x, "c=biws\0,r=x", 11, &sf, &len, &cond),
					 SASL_FAILURE);
		} else {
			big = malloc(SASL_MESSAGE_MAX + 1);
			memset(big, 'a', SASL_MESSAGE_MAX + 1);
			assert_int_equal(sasl_step(x, big, SASL_MESSAGE_MAX + 1, &sf, &len,
						   &cond), SASL_FAILURE);
			free(big);
		}
		assert_string_equal(cond, "malformed-request");
		sasl_end(x);
	}
}

static void test_step_order_misuse(void **state)
{
	static const char msg[] = "n,,n=juliet,r=abcdefghijkl";
	struct sasl_channel ch;
	struct sasl_exchange *x;
	const char *cond;
	char user[SASL_USERNAME_MAX + 1];
	char *out;
	size_t len;

	(void)state;
	chan_tls_nocb(&ch);
	/* A step before the lookup's outcome is a caller bug: fail safe. */
	assert_int_equal(sasl_begin(srv, "SCRAM-SHA-256", &ch, msg, strlen(msg), &x,
				    user, sizeof(user), &cond), 0);
	assert_int_equal(sasl_step(x, NULL, 0, &out, &len, &cond), SASL_FAILURE);
	assert_string_equal(cond, "temporary-auth-failure");
	sasl_end(x);
	/* No initial response: the caller sends an empty challenge first. */
	assert_int_equal(sasl_begin(srv, "SCRAM-SHA-256", &ch, NULL, 0, &x, user,
				    sizeof(user), &cond), -EAGAIN);
	assert_null(x);
	assert_non_null(cond);
}

static void test_stored_creds_with_bad_iterations(void **state)
{
	struct sasl_channel ch;
	struct client cl = client_for("juliet", PASSWORD, NULL);
	struct scram_creds bad = juliet;
	struct run r;

	(void)state;
	chan_tls_nocb(&ch);
	bad.iterations = 0;
	run_full(&r, "SCRAM-SHA-256", &ch, &cl, &bad, false, false);
	assert_string_equal(r.condition, "temporary-auth-failure");
	bad.iterations = SCRAM_ITERATIONS_MAX + 1;
	run_full(&r, "SCRAM-SHA-256", &ch, &cl, &bad, false, false);
	assert_string_equal(r.condition, "temporary-auth-failure");
	scram_creds_wipe(&bad);
}

/* ---- channel binding ---- */

static void test_plus_tls_exporter_succeeds(void **state)
{
	struct sasl_channel ch;
	struct client cl;
	struct run r;

	(void)state;
	chan_tls13(&ch, false);
	cl = client_for("juliet", PASSWORD, &ch);
	run_full(&r, "SCRAM-SHA-256-PLUS", &ch, &cl, &juliet, false, false);
	assert_null(r.condition);
	assert_true(r.client_verified);
	run_full(&r, "SCRAM-SHA-1-PLUS", &ch, &cl, &juliet, false, false);
	assert_null(r.condition);
}

static void test_plus_wrong_cb_data_not_authorized(void **state)
{
	struct sasl_channel ch;
	struct client cl;
	unsigned char other[32];
	struct run r;

	(void)state;
	chan_tls13(&ch, false);
	memcpy(other, ch.exporter, sizeof(other));
	other[31] ^= 1;	/* a man in the middle sees a different channel */
	cl = client_for("juliet", PASSWORD, &ch);
	cl.exporter = other;
	run_full(&r, "SCRAM-SHA-256-PLUS", &ch, &cl, &juliet, false, false);
	assert_string_equal(r.condition, "not-authorized");
	assert_int_equal(r.failed_at, 2);
	/* Binding data of another length fails the same way. */
	cl.exporter_len = 16;
	run_full(&r, "SCRAM-SHA-256-PLUS", &ch, &cl, &juliet, false, false);
	assert_string_equal(r.condition, "not-authorized");
}

static void test_plus_tls_unique_accepted_when_supplied(void **state)
{
	struct sasl_channel ch;
	struct client cl;
	unsigned char unique[64];
	struct run r;

	(void)state;
	/* TLS 1.2 with only tls-unique. */
	chan_tls12_unique_only(&ch);
	cl = client_for("juliet", PASSWORD, &ch);
	run_full(&r, "SCRAM-SHA-256-PLUS", &ch, &cl, &juliet, false, false);
	assert_null(r.condition);
	/* TLS 1.3: not advertised, but served when the TLS layer supplied it. */
	chan_tls13(&ch, true);
	memcpy(unique, ch.unique, ch.unique_len);
	cl = client_for("juliet", PASSWORD, &ch);
	cl.exporter_len = 0;	/* the client only knows tls-unique */
	cl.unique = unique;
	run_full(&r, "SCRAM-SHA-256-PLUS", &ch, &cl, &juliet, false, false);
	assert_null(r.condition);
	/* Wrong unique data. */
	unique[0] ^= 0xff;
	run_full(&r, "SCRAM-SHA-256-PLUS", &ch, &cl, &juliet, false, false);
	assert_string_equal(r.condition, "not-authorized");
	assert_int_equal(r.failed_at, 2);
}

static void test_plus_unavailable_cb_type_refused(void **state)
{
	struct sasl_channel ch;

	(void)state;
	chan_tls13(&ch, false);	/* exporter only */
	assert_string_equal(begin_str("SCRAM-SHA-256-PLUS", &ch,
				      "p=tls-unique,,n=juliet,r=abcdef"), "not-authorized");
	assert_string_equal(begin_str("SCRAM-SHA-256-PLUS", &ch,
				      "p=tls-server-end-point,,n=juliet,r=abcdef"),
			    "not-authorized");
	assert_null(begin_str("SCRAM-SHA-256-PLUS", &ch, "p=tls-exporter,,n=juliet,r=abcdef"));
	chan_tls12_unique_only(&ch);
	assert_string_equal(begin_str("SCRAM-SHA-256-PLUS", &ch,
				      "p=tls-exporter,,n=juliet,r=abcdef"), "not-authorized");
}

/*
 * GNU SASL 2.2's client fails instead of sending "y" when it has binding
 * data for a non-PLUS mechanism, so "y" exchanges are computed here
 * (RFC 5802 section 3, SHA-256).
 */
static void manual_client_final(const char *gs2, const char *cfmb, const char *sf,
				const char *password, char *final, size_t final_size,
				char *verifier, size_t verifier_size)
{
	unsigned char salt[64], salted[32], ckey[32], skey[32], stored[32], sig[32];
	char salt_b64[128], iter[16], nonce[128], am[1024], cfwp[256];
	char *cb64, *proof64, *v64;
	unsigned int len;
	size_t salt_len;
	char *d;

	sf_attr(sf, 's', salt_b64, sizeof(salt_b64));
	sf_attr(sf, 'i', iter, sizeof(iter));
	sf_attr(sf, 'r', nonce, sizeof(nonce));
	d = sasl_b64_decode(salt_b64, strlen(salt_b64), &salt_len);
	assert_non_null(d);
	memcpy(salt, d, salt_len);
	free(d);
	assert_int_equal(PKCS5_PBKDF2_HMAC(password, (int)strlen(password), salt, (int)salt_len,
					   atoi(iter), EVP_sha256(), 32, salted), 1);
	HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Client Key", 10, ckey, &len);
	HMAC(EVP_sha256(), salted, 32, (const unsigned char *)"Server Key", 10, skey, &len);
	EVP_Digest(ckey, 32, stored, NULL, EVP_sha256(), NULL);
	cb64 = sasl_b64_encode(gs2, strlen(gs2));
	snprintf(cfwp, sizeof(cfwp), "c=%s,r=%s", cb64, nonce);
	snprintf(am, sizeof(am), "%s,%s,%s", cfmb, sf, cfwp);
	HMAC(EVP_sha256(), stored, 32, (const unsigned char *)am, strlen(am), sig, &len);
	for (size_t i = 0; i < 32; i++)
		sig[i] ^= ckey[i];	/* ClientProof */
	proof64 = sasl_b64_encode((const char *)sig, 32);
	snprintf(final, final_size, "%s,p=%s", cfwp, proof64);
	HMAC(EVP_sha256(), skey, 32, (const unsigned char *)am, strlen(am), sig, &len);
	v64 = sasl_b64_encode((const char *)sig, 32);
	snprintf(verifier, verifier_size, "v=%s", v64);
	free(cb64);
	free(proof64);
	free(v64);
}

/*
 * A full SCRAM-SHA-256 exchange from client-first-message cfm, with a
 * correct proof and c= holding the gs2 header only (no binding data).
 * NULL on success, else the condition.
 */
static const char *run_manual(const struct sasl_channel *ch, const char *cfm)
{
	struct sasl_exchange *x;
	const char *cond = NULL, *bare;
	char user[SASL_USERNAME_MAX + 1], gs2[64], final[512], verifier[128];
	char *out;
	size_t len;

	bare = strchr(strchr(cfm, ',') + 1, ',') + 1;
	assert_true((size_t)(bare - cfm) < sizeof(gs2));
	memcpy(gs2, cfm, (size_t)(bare - cfm));
	gs2[bare - cfm] = '\0';
	if (sasl_begin(srv, "SCRAM-SHA-256", ch, cfm, strlen(cfm), &x, user, sizeof(user),
		       &cond) < 0)
		return cond;
	sasl_set_account(x, &juliet, false);
	assert_int_equal(sasl_step(x, NULL, 0, &out, &len, &cond), SASL_CONTINUE);
	manual_client_final(gs2, bare, out, PASSWORD, final, sizeof(final), verifier,
			    sizeof(verifier));
	free(out);
	if (sasl_step(x, final, strlen(final), &out, &len, &cond) == SASL_SUCCESS) {
		assert_int_equal(len, strlen(verifier));
		assert_memory_equal(out, verifier, len);
		free(out);
		cond = NULL;
	}
	sasl_end(x);
	return cond;
}

static const char *run_cbflag_y(const struct sasl_channel *ch)
{
	return run_manual(ch, "y,,n=juliet,r=clientnonce123");
}

static void test_cbflag_y_rejected_when_plus_offered(void **state)
{
	struct sasl_channel ch;

	(void)state;
	/* The client can bind but got no -PLUS: an attacker stripped it. */
	chan_tls13(&ch, false);
	assert_string_equal(run_cbflag_y(&ch), "not-authorized");
	assert_string_equal(begin_str("SCRAM-SHA-1", &ch, "y,,n=juliet,r=abcdef"),
			    "not-authorized");
	chan_tls12_unique_only(&ch);
	assert_string_equal(run_cbflag_y(&ch), "not-authorized");
	/* "y" with an authzid is the same flag. */
	chan_tls13(&ch, true);
	assert_string_equal(begin_str("SCRAM-SHA-256", &ch, "y,a=juliet,n=juliet,r=abcdef"),
			    "not-authorized");
}

static void test_cbflag_y_accepted_without_plus(void **state)
{
	struct sasl_channel ch;

	(void)state;
	/* The client binds, the server has no binding data, offers no -PLUS. */
	chan_tls_nocb(&ch);
	assert_null(run_cbflag_y(&ch));
	/* Binding data without TLS does not count as an offer either. */
	chan_tls13(&ch, false);
	ch.tls = false;
	assert_null(run_cbflag_y(&ch));
}

static void test_cbflag_mismatching_mechanism(void **state)
{
	struct sasl_channel ch;

	(void)state;
	chan_tls13(&ch, true);
	/* "p" on a mechanism without binding. */
	assert_string_equal(begin_str("SCRAM-SHA-256", &ch,
				      "p=tls-exporter,,n=juliet,r=abcdef"), "not-authorized");
	chan_tls_nocb(&ch);
	assert_string_equal(begin_str("SCRAM-SHA-1", &ch, "p=tls-exporter,,n=juliet,r=abcdef"),
			    "not-authorized");
	/*
	 * Even with a proof that is right for empty binding data, which
	 * GNU SASL 2.2 alone would accept.
	 */
	assert_string_equal(run_manual(&ch, "p=tls-exporter,,n=juliet,r=abcdef"),
			    "not-authorized");
	assert_null(run_manual(&ch, "n,,n=juliet,r=abcdef"));
	/* "n" or "y" on a -PLUS mechanism. */
	chan_tls13(&ch, true);
	assert_string_equal(begin_str("SCRAM-SHA-256-PLUS", &ch, "n,,n=juliet,r=abcdef"),
			    "not-authorized");
	assert_string_equal(begin_str("SCRAM-SHA-1-PLUS", &ch, "y,,n=juliet,r=abcdef"),
			    "not-authorized");
	/* -PLUS without binding data was never offered. */
	chan_tls_nocb(&ch);
	assert_string_equal(begin_str("SCRAM-SHA-256-PLUS", &ch,
				      "p=tls-exporter,,n=juliet,r=abcdef"), "invalid-mechanism");
}

/* ---- client-first syntax ---- */

static void test_malformed_client_first(void **state)
{
	static const char *const bad[] = {
		"",
		"junk",
		"n,,r=abcdef",			/* no n= */
		"n,,n=juliet",			/* no r= */
		"n,,n=juliet,r=",		/* empty nonce */
		"n,,n=,r=abcdef",		/* empty username */
		"n,,n=ju=2Xliet,r=abcdef",	/* bad escape */
		"n,,n=juliet=,r=abcdef",	/* bare '=' */
		"n,,n=juliet=2,r=abcdef",	/* short escape */
		"n,,n=ju=2cliet,r=abcdef",	/* lowercase escape */
		"x,,n=juliet,r=abcdef",		/* unknown flag */
		"n,n=juliet,r=abcdef",		/* gs2 header cut short */
		",,n=juliet,r=abcdef",
		"p,,n=juliet,r=abcdef",		/* p without name */
		"p=,,n=juliet,r=abcdef",
		"p=tls_unique,,n=juliet,r=abcdef", /* bad cb-name character */
		"n,a=,n=juliet,r=abcdef",	/* empty authzid */
		"n,a=ju=liet,n=juliet,r=abcdef",/* bad escape in authzid */
		"n,b=x,n=juliet,r=abcdef",
		"n,,m=ext,n=juliet,r=abcdef",	/* mandatory extension */
		"n,,n=juliet,r=abc def",	/* nonce not printable */
		"n,,n=juliet,r=abcdef,",	/* empty extension */
		"n,,n=juliet,r=abcdef,x",	/* extension without value */
		"n,,n=juliet,r=abcdef,x=",
		"n,,n=juliet,r=abcdef,9=1",	/* extension name not ALPHA */
		"n,,n=juliet,r=abcdef,m=1",	/* m is reserved */
		"N,,n=juliet,r=abcdef",
		"n,,r=abcdef,n=juliet",		/* wrong order */
	};
	struct sasl_channel ch;

	(void)state;
	chan_tls_nocb(&ch);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *cond = begin_str("SCRAM-SHA-256", &ch, bad[i]);

		if (!cond || strcmp(cond, "malformed-request") != 0)
			fail_msg("\"%s\" gave %s", bad[i], cond ? cond : "success");
	}
	/* A NUL anywhere. */
	assert_string_equal(begin_raw("SCRAM-SHA-256", &ch, "n,,n=jul\0iet,r=abcdef", 21,
				      NULL, 0), "malformed-request");
	assert_string_equal(begin_raw("SCRAM-SHA-256", &ch, "n,,n=juliet,r=abcdef\0", 21,
				      NULL, 0), "malformed-request");
}

static void test_oversized_initial_response(void **state)
{
	struct sasl_channel ch;
	char *big = malloc(SASL_MESSAGE_MAX + 1);

	(void)state;
	chan_tls_nocb(&ch);
	memcpy(big, "n,,n=juliet,r=", 14);
	memset(big + 14, 'a', SASL_MESSAGE_MAX + 1 - 14);
	assert_string_equal(begin_raw("SCRAM-SHA-256", &ch, big, SASL_MESSAGE_MAX + 1, NULL, 0),
			    "malformed-request");
	/* Exactly the limit is fine. */
	assert_null(begin_raw("SCRAM-SHA-256", &ch, big, SASL_MESSAGE_MAX, NULL, 0));
	free(big);
}

static void test_well_formed_client_first_variants(void **state)
{
	struct sasl_channel ch;
	char user[SASL_USERNAME_MAX + 1];
	const char *m;

	(void)state;
	chan_tls_nocb(&ch);
	m = "n,,n=juliet,r=abcdef,x=ext=ok,y=2";
	assert_null(begin_raw("SCRAM-SHA-256", &ch, m, strlen(m), user, sizeof(user)));
	assert_string_equal(user, "juliet");
	m = "n,,n=ju=2Cli=3Det,r=abcdef";
	assert_null(begin_raw("SCRAM-SHA-256", &ch, m, strlen(m), user, sizeof(user)));
	assert_string_equal(user, "ju,li=et");
	m = "n,,n=J\xc3\x9cLIET,r=abcdef";	/* case folded by nodeprep */
	assert_null(begin_raw("SCRAM-SHA-256", &ch, m, strlen(m), user, sizeof(user)));
	assert_string_equal(user, "j\xc3\xbcliet");
	m = "n,,n=jul\xc2\xadiet,r=abcdef";	/* soft hyphen: mapped to nothing */
	assert_null(begin_raw("SCRAM-SHA-256", &ch, m, strlen(m), user, sizeof(user)));
	assert_string_equal(user, "juliet");
}

static void test_unpreparable_username_not_authorized(void **state)
{
	static const char *const bad[] = {
		"n,,n=jul@iet,r=abcdef",	/* '@' prohibited by nodeprep */
		"n,,n=jul iet,r=abcdef",	/* space */
		"n,,n=jul\x07iet,r=abcdef",	/* control */
		"n,,n=jul\xff\xfeiet,r=abcdef",	/* not UTF-8 */
		"n,,n=\xc2\xad,r=abcdef",	/* empty after mapping */
	};
	struct sasl_channel ch;
	char *longname;

	(void)state;
	chan_tls_nocb(&ch);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		const char *cond = begin_str("SCRAM-SHA-256", &ch, bad[i]);

		if (!cond || strcmp(cond, "not-authorized") != 0)
			fail_msg("\"%s\" gave %s", bad[i], cond ? cond : "success");
	}
	longname = malloc(SASL_USERNAME_MAX + 64);
	strcpy(longname, "n,,n=");
	memset(longname + 5, 'a', SASL_USERNAME_MAX + 1);
	strcpy(longname + 5 + SASL_USERNAME_MAX + 1, ",r=abcdef");
	assert_string_equal(begin_str("SCRAM-SHA-256", &ch, longname), "not-authorized");
	free(longname);
	/* A caller buffer too small for the name. */
	assert_string_equal(begin_raw("SCRAM-SHA-256", &ch, "n,,n=juliet,r=abcdef", 20,
				      (char[4]){ 0 }, 4), "not-authorized");
}

static void test_unknown_mechanism(void **state)
{
	struct sasl_channel ch;

	(void)state;
	chan_tls13(&ch, true);
	assert_string_equal(begin_str("DIGEST-MD5", &ch, "x"), "invalid-mechanism");
	assert_string_equal(begin_str("scram-sha-256", &ch, "n,,n=juliet,r=abcdef"),
			    "invalid-mechanism");
	assert_string_equal(begin_str("", &ch, "x"), "invalid-mechanism");
}

/* ---- authorization identities ---- */

static void test_authzid_own_jid_accepted(void **state)
{
	static const char *const ok[] = {
		"juliet@example.org", "juliet", "JULIET@EXAMPLE.ORG", "Juliet",
	};
	struct sasl_channel ch;
	struct client cl = client_for("juliet", PASSWORD, NULL);
	struct run r;

	(void)state;
	chan_tls_nocb(&ch);
	for (size_t i = 0; i < sizeof(ok) / sizeof(ok[0]); i++) {
		cl.authzid = ok[i];
		run_full(&r, "SCRAM-SHA-256", &ch, &cl, &juliet, false, false);
		if (r.condition)
			fail_msg("authzid %s gave %s", ok[i], r.condition);
		run_full(&r, "PLAIN", &ch, &cl, &juliet, false, false);
		if (r.condition)
			fail_msg("PLAIN authzid %s gave %s", ok[i], r.condition);
	}
}

static void test_authzid_mismatch_invalid_authzid(void **state)
{
	static const char *const bad[] = {
		"romeo@example.org", "romeo", "juliet@example.com",
		"juliet@example.org/balcony", "example.org", "juliet@", "@example.org",
	};
	struct sasl_channel ch;
	struct client cl = client_for("juliet", PASSWORD, NULL);
	struct run r;

	(void)state;
	chan_tls_nocb(&ch);
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		cl.authzid = bad[i];
		run_full(&r, "SCRAM-SHA-256", &ch, &cl, &juliet, false, false);
		if (!r.condition || strcmp(r.condition, "invalid-authzid") != 0)
			fail_msg("authzid %s gave %s", bad[i], r.condition ? r.condition : "ok");
		assert_int_equal(r.failed_at, 0);
		run_full(&r, "PLAIN", &ch, &cl, &juliet, false, false);
		if (!r.condition || strcmp(r.condition, "invalid-authzid") != 0)
			fail_msg("PLAIN authzid %s gave %s", bad[i],
				 r.condition ? r.condition : "ok");
	}
	/* An escaped ',' in a SCRAM authzid is decoded before comparing. */
	assert_string_equal(begin_str("SCRAM-SHA-256", &ch,
				      "n,a=juliet=2C@example.org,n=juliet,r=abcdef"),
			    "invalid-authzid");
}

/* ---- PLAIN ---- */

static void test_plain_succeeds_with_verdict(void **state)
{
	struct sasl_channel ch;
	struct client cl = client_for("juliet", PASSWORD, NULL);
	struct run r;

	(void)state;
	chan_tls_nocb(&ch);
	run_full(&r, "PLAIN", &ch, &cl, &juliet, false, false);
	assert_null(r.condition);
	assert_string_equal(r.user, "juliet");
}

static void test_plain_wrong_password_or_verdict(void **state)
{
	struct sasl_channel ch;
	struct client cl = client_for("juliet", "wrong", NULL);
	struct client good = client_for("juliet", PASSWORD, NULL);
	struct run r;

	(void)state;
	chan_tls_nocb(&ch);
	run_full(&r, "PLAIN", &ch, &cl, &juliet, false, false);
	assert_string_equal(r.condition, "not-authorized");
	assert_int_equal(r.failed_at, 1);
	/* The verdict rules, whatever the password. */
	run_full(&r, "PLAIN", &ch, &good, &juliet, true, false);
	assert_string_equal(r.condition, "not-authorized");
	/* No account: a verdict of true (caller bug) still fails. */
	run_full(&r, "PLAIN", &ch, &good, NULL, true, true);
	assert_string_equal(r.condition, "not-authorized");
}

static void test_plain_password_exposed_for_check(void **state)
{
	static const char msg[] = "\0JULIET\0pass word";
	struct sasl_channel ch;
	struct sasl_exchange *x;
	const char *cond;
	char user[SASL_USERNAME_MAX + 1];

	(void)state;
	chan_tls_nocb(&ch);
	assert_int_equal(sasl_begin(srv, "PLAIN", &ch, msg, sizeof(msg) - 1, &x, user,
				    sizeof(user), &cond), 0);
	assert_string_equal(user, "juliet");
	assert_string_equal(sasl_plain_password(x), "pass word");
	sasl_end(x);
}

static void test_plain_malformed(void **state)
{
	static const struct {
		const char *msg;
		size_t len;
		const char *cond;
	} cases[] = {
		{ "juliet\0pw", 9, "malformed-request" },	/* one NUL */
		{ "nothing", 7, "malformed-request" },
		{ "", 0, "malformed-request" },
		{ "\0\0pw", 4, "malformed-request" },		/* empty authcid */
		{ "\0juliet\0", 8, "malformed-request" },	/* empty password */
		{ "\0juliet\0pw\0x", 12, "malformed-request" },	/* extra NUL */
		{ "\0jul@iet\0pw", 11, "not-authorized" },
		{ "\0jul\xff\0pw", 8, "not-authorized" },
	};
	struct sasl_channel ch;

	(void)state;
	chan_tls_nocb(&ch);
	for (size_t i = 0; i < sizeof(cases) / sizeof(cases[0]); i++) {
		const char *cond = begin_raw("PLAIN", &ch, cases[i].msg, cases[i].len, NULL, 0);

		if (!cond || strcmp(cond, cases[i].cond) != 0)
			fail_msg("case %zu gave %s", i, cond ? cond : "success");
	}
}

static void test_plain_overlong_password(void **state)
{
	struct sasl_channel ch;
	size_t n = SCRAM_PASSWORD_MAX + 1;
	char *msg = malloc(8 + n);

	(void)state;
	chan_tls_nocb(&ch);
	memcpy(msg, "\0juliet\0", 8);
	memset(msg + 8, 'p', n);
	assert_string_equal(begin_raw("PLAIN", &ch, msg, 8 + n, NULL, 0), "not-authorized");
	assert_null(begin_raw("PLAIN", &ch, msg, 8 + n - 1, NULL, 0));
	free(msg);
}

/* ---- offers ---- */

static void assert_names(const char **got, size_t n, const char *const *want, size_t wn)
{
	assert_int_equal(n, wn);
	for (size_t i = 0; i < n; i++)
		assert_string_equal(got[i], want[i]);
}

static void test_offer_lists(void **state)
{
	static const char *const all[] = {
		"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN",
	};
	const char *names[8];
	struct sasl_channel ch;

	(void)state;
	chan_plain(&ch);
	assert_names(names, sasl_offer(&ch, false, names, 8), all + 2, 2);
	assert_names(names, sasl_offer(&ch, true, names, 8), all + 2, 3);
	chan_tls_nocb(&ch);
	assert_names(names, sasl_offer(&ch, false, names, 8), all + 2, 3);
	chan_tls13(&ch, false);
	assert_names(names, sasl_offer(&ch, false, names, 8), all, 5);
	chan_tls12_unique_only(&ch);
	assert_names(names, sasl_offer(&ch, false, names, 8), all, 5);
	assert_names(names, sasl_offer(&ch, false, names, 2), all, 2);
	assert_int_equal(sasl_offer(&ch, false, names, 0), 0);
	/* Binding data on a cleartext stream is ignored. */
	chan_tls13(&ch, true);
	ch.tls = false;
	assert_names(names, sasl_offer(&ch, false, names, 8), all + 2, 2);
}

static void test_cb_types(void **state)
{
	const char *names[4];
	struct sasl_channel ch;

	(void)state;
	chan_tls13(&ch, true);
	assert_int_equal(sasl_cb_types(&ch, names, 4), 1);
	assert_string_equal(names[0], "tls-exporter");
	ch.tls13 = false;
	assert_int_equal(sasl_cb_types(&ch, names, 4), 2);
	assert_string_equal(names[0], "tls-exporter");
	assert_string_equal(names[1], "tls-unique");
	assert_int_equal(sasl_cb_types(&ch, names, 1), 1);
	chan_tls12_unique_only(&ch);
	assert_int_equal(sasl_cb_types(&ch, names, 4), 1);
	assert_string_equal(names[0], "tls-unique");
	chan_tls_nocb(&ch);
	assert_int_equal(sasl_cb_types(&ch, names, 4), 0);
	chan_tls13(&ch, true);
	ch.tls = false;
	assert_int_equal(sasl_cb_types(&ch, names, 4), 0);
}

static void test_mech_condition(void **state)
{
	struct sasl_channel ch;

	(void)state;
	chan_plain(&ch);
	assert_string_equal(sasl_mech_condition(&ch, false, "PLAIN"), "mechanism-too-weak");
	assert_null(sasl_mech_condition(&ch, true, "PLAIN"));
	assert_null(sasl_mech_condition(&ch, false, "SCRAM-SHA-1"));
	assert_string_equal(sasl_mech_condition(&ch, false, "SCRAM-SHA-1-PLUS"),
			    "invalid-mechanism");
	assert_string_equal(sasl_mech_condition(&ch, false, "CRAM-MD5"), "invalid-mechanism");
	chan_tls13(&ch, false);
	assert_null(sasl_mech_condition(&ch, false, "SCRAM-SHA-256-PLUS"));
	assert_null(sasl_mech_condition(&ch, false, "PLAIN"));
}

/* ---- GNU SASL error codes ---- */

static void test_every_gsasl_error_maps_to_a_condition(void **state)
{
	static const char *const allowed[] = {
		"not-authorized", "malformed-request", "invalid-mechanism",
		"temporary-auth-failure",
	};

	(void)state;
	for (int rc = 0; rc < 600; rc++) {
		const char *c = sasl_condition_from_gsasl(rc);
		bool found = false;

		for (size_t i = 0; i < sizeof(allowed) / sizeof(allowed[0]); i++)
			found |= strcmp(c, allowed[i]) == 0;
		if (!found)
			fail_msg("rc %d maps to %s", rc, c);
	}
	assert_string_equal(sasl_condition_from_gsasl(GSASL_AUTHENTICATION_ERROR),
			    "not-authorized");
	assert_string_equal(sasl_condition_from_gsasl(GSASL_MECHANISM_PARSE_ERROR),
			    "malformed-request");
	assert_string_equal(sasl_condition_from_gsasl(GSASL_MALLOC_ERROR),
			    "temporary-auth-failure");
	assert_string_equal(sasl_condition_from_gsasl(GSASL_NO_CB_TLS_EXPORTER),
			    "not-authorized");
}

/* ---- base64 ---- */

static void test_b64_encode(void **state)
{
	static const struct {
		const char *in, *out;
	} v[] = {
		{ "", "=" }, { "f", "Zg==" }, { "fo", "Zm8=" }, { "foo", "Zm9v" },
		{ "foob", "Zm9vYg==" }, { "fooba", "Zm9vYmE=" }, { "foobar", "Zm9vYmFy" },
		{ "\xff\xfe\xfd", "//79" }, { "n,,", "biws" },
	};

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char *e = sasl_b64_encode(v[i].in, strlen(v[i].in));

		assert_string_equal(e, v[i].out);
		free(e);
	}
}

static void test_b64_decode_valid(void **state)
{
	static const struct {
		const char *in, *out;
	} v[] = {
		{ "=", "" }, { "", "" }, { "Zg==", "f" }, { "Zm8=", "fo" }, { "Zm9v", "foo" },
		{ "Zm9vYmFy", "foobar" }, { "//79", "\xff\xfe\xfd" }, { "biws", "n,," },
	};
	size_t len;

	(void)state;
	for (size_t i = 0; i < sizeof(v) / sizeof(v[0]); i++) {
		char *d = sasl_b64_decode(v[i].in, strlen(v[i].in), &len);

		assert_non_null(d);
		assert_int_equal(len, strlen(v[i].out));
		assert_memory_equal(d, v[i].out, len);
		assert_int_equal(d[len], '\0');
		free(d);
	}
	/* Embedded NUL bytes survive. */
	{
		char *d = sasl_b64_decode("AGp1bGlldABwdw==", 16, &len);

		assert_int_equal(len, 10);
		assert_memory_equal(d, "\0juliet\0pw", 10);
		free(d);
	}
}

static void test_b64_decode_rejects_bad_input(void **state)
{
	static const char *const bad[] = {
		"Zg", "Zg=", "Zm9", "Z", "==", "===", "====", "Z===", "Zg==Zg==", "Zm9v\n",
		" Zm9v", "Zm9v ", "Zm 9", "Zm9v====", "Zm-v", "Zm_v", "Zh==", "Zm9=", "Zg=a",
		"Z=g=", "\x80\x81\x82\x83", "Zm9v\r\nZm9v", "=Zm9",
	};
	size_t len = 99;

	(void)state;
	for (size_t i = 0; i < sizeof(bad) / sizeof(bad[0]); i++) {
		errno = 0;
		char *d = sasl_b64_decode(bad[i], strlen(bad[i]), &len);

		if (d)
			fail_msg("\"%s\" decoded", bad[i]);
		assert_int_equal(errno, EINVAL);
	}
	/* A NUL inside the text. */
	assert_null(sasl_b64_decode("Zm\0v", 4, &len));
}

static void test_b64_round_trip(void **state)
{
	unsigned char buf[300];
	size_t len;

	(void)state;
	for (size_t i = 0; i < sizeof(buf); i++)
		buf[i] = (unsigned char)(i * 131 + 7);
	for (size_t n = 0; n <= sizeof(buf); n++) {
		char *e = sasl_b64_encode((const char *)buf, n);
		char *d = sasl_b64_decode(e, strlen(e), &len);

		assert_int_equal(strlen(e), n == 0 ? 1 : (n + 2) / 3 * 4);
		assert_int_equal(len, n);
		assert_memory_equal(d, buf, n);
		free(e);
		free(d);
	}
}

/* ---- SCRAM key derivation ---- */

static void b64d(const char *s, unsigned char *out, size_t want)
{
	size_t len;
	char *d = sasl_b64_decode(s, strlen(s), &len);

	assert_non_null(d);
	assert_int_equal(len, want);
	memcpy(out, d, len);
	free(d);
}

/*
 * Checks stored keys against a published exchange: the client proof must
 * verify with StoredKey and ServerKey must give the published verifier.
 */
static void check_vector(const EVP_MD *md, size_t hlen, const uint8_t *stored,
			 const uint8_t *server, const char *auth_message,
			 const char *proof_b64, const char *verifier_b64)
{
	unsigned char proof[32], verifier[32], sig[32], key[32], h[32];
	unsigned int len;

	b64d(proof_b64, proof, hlen);
	b64d(verifier_b64, verifier, hlen);
	HMAC(md, server, (int)hlen, (const unsigned char *)auth_message, strlen(auth_message),
	     sig, &len);
	assert_memory_equal(sig, verifier, hlen);
	HMAC(md, stored, (int)hlen, (const unsigned char *)auth_message, strlen(auth_message),
	     sig, &len);
	for (size_t i = 0; i < hlen; i++)
		key[i] = proof[i] ^ sig[i];	/* ClientKey */
	EVP_Digest(key, hlen, h, NULL, md, NULL);
	assert_memory_equal(h, stored, hlen);
}

static void test_rfc7677_sha256_vector(void **state)
{
	static const char am[] =
		"n=user,r=rOprNGfwEbeRWgbNEkqO,"
		"r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0,"
		"s=W22ZaJ0SNY7soEsUEjb6gQ==,i=4096,"
		"c=biws,r=rOprNGfwEbeRWgbNEkqO%hvYDpWUa2RaTCAfuxFIlj)hNlF$k0";
	uint8_t salt[SCRAM_SALT_LEN];
	struct scram_creds c;

	(void)state;
	b64d("W22ZaJ0SNY7soEsUEjb6gQ==", salt, sizeof(salt));
	assert_int_equal(scram_creds_from_password_salt("pencil", salt, 4096, &c), 0);
	assert_int_equal(c.iterations, 4096);
	assert_memory_equal(c.salt, salt, SCRAM_SALT_LEN);
	check_vector(EVP_sha256(), 32, c.sha256_stored_key, c.sha256_server_key, am,
		     "dHzbZapWIk4jUhN+Ute9ytag9zjfMHgsqmmiz7AndVQ=",
		     "6rriTRBi23WpRR/wtup+mMhUZUn/dB5nLTJRsjl95G4=");
	assert_true(scram_verify_password(&c, "pencil"));
	assert_false(scram_verify_password(&c, "Pencil"));
	scram_creds_wipe(&c);
}

static void test_rfc5802_sha1_vector(void **state)
{
	static const char am[] =
		"n=user,r=fyko+d2lbbFgONRv9qkxdawL,"
		"r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j,s=QSXCR+Q6sek8bf92,i=4096,"
		"c=biws,r=fyko+d2lbbFgONRv9qkxdawL3rfcNHYJY1ZVvWVs7j";
	uint8_t salt[12], stored[20], server[20];

	(void)state;
	b64d("QSXCR+Q6sek8bf92", salt, sizeof(salt));
	assert_int_equal(scram_keys_from_password(SCRAM_HASH_SHA1, "pencil", salt,
						  sizeof(salt), 4096, stored, server), 0);
	check_vector(EVP_sha1(), 20, stored, server, am, "v0X8v3Bz2T0CJGbJQyF0X+HI4Ts=",
		     "rmF9pqV8S7suAoZWja4dJRkFsKQ=");
}

static void test_creds_keys_agree_with_derivation(void **state)
{
	uint8_t stored[32], server[32];

	(void)state;
	assert_int_equal(scram_keys_from_password(SCRAM_HASH_SHA256, PASSWORD, juliet.salt,
						  SCRAM_SALT_LEN, juliet.iterations, stored,
						  server), 0);
	assert_memory_equal(stored, juliet.sha256_stored_key, 32);
	assert_memory_equal(server, juliet.sha256_server_key, 32);
	assert_int_equal(scram_keys_from_password(SCRAM_HASH_SHA1, PASSWORD, juliet.salt,
						  SCRAM_SALT_LEN, juliet.iterations, stored,
						  server), 0);
	assert_memory_equal(stored, juliet.sha1_stored_key, 20);
	assert_memory_equal(server, juliet.sha1_server_key, 20);
	assert_int_equal(juliet.iterations, SCRAM_ITERATIONS);
	assert_int_equal(scram_keys_from_password(SCRAM_HASH_SHA1, PASSWORD, juliet.salt,
						  SCRAM_SALT_LEN, 0, stored, server), -EINVAL);
}

static void test_fresh_creds_get_fresh_salts(void **state)
{
	struct scram_creds a, b;

	(void)state;
	assert_int_equal(scram_creds_from_password("pw", 1000, &a), 0);
	assert_int_equal(scram_creds_from_password("pw", 1000, &b), 0);
	assert_int_equal(a.iterations, 1000);
	assert_memory_not_equal(a.salt, b.salt, SCRAM_SALT_LEN);
	assert_memory_not_equal(a.sha256_stored_key, b.sha256_stored_key, 32);
	assert_int_equal(scram_creds_from_password("pw", SCRAM_ITERATIONS_MAX + 1, &a), -EINVAL);
	scram_creds_wipe(&a);
	scram_creds_wipe(&b);
}

static void test_saslprep_passwords(void **state)
{
	char out[SCRAM_PASSWORD_MAX * 3 + 1];
	struct scram_creds c;
	char *longpw;

	(void)state;
	/* RFC 4013 section 3 examples. */
	assert_int_equal(scram_saslprep("I\xc2\xadX", out, sizeof(out)), 0);
	assert_string_equal(out, "IX");
	assert_int_equal(scram_saslprep("\xc2\xaa", out, sizeof(out)), 0);
	assert_string_equal(out, "a");
	assert_int_equal(scram_saslprep("\xe2\x85\xa8", out, sizeof(out)), 0);
	assert_string_equal(out, "IX");
	assert_int_equal(scram_saslprep("\x07", out, sizeof(out)), -EINVAL);
	assert_int_equal(scram_saslprep("\xd8\xa7\x31", out, sizeof(out)), -EINVAL);
	assert_int_equal(scram_saslprep("", out, sizeof(out)), -EINVAL);
	assert_int_equal(scram_saslprep("\xc2\xad", out, sizeof(out)), -EINVAL);
	assert_int_equal(scram_saslprep("a\xff", out, sizeof(out)), -EINVAL);
	assert_int_equal(scram_saslprep("with space", out, sizeof(out)), 0);
	assert_string_equal(out, "with space");
	assert_int_equal(scram_saslprep("abcdef", out, 4), -EINVAL);
	longpw = malloc(SCRAM_PASSWORD_MAX + 2);
	memset(longpw, 'x', SCRAM_PASSWORD_MAX + 1);
	longpw[SCRAM_PASSWORD_MAX + 1] = '\0';
	assert_int_equal(scram_saslprep(longpw, out, sizeof(out)), -EINVAL);
	longpw[SCRAM_PASSWORD_MAX] = '\0';
	assert_int_equal(scram_saslprep(longpw, out, sizeof(out)), 0);
	free(longpw);
	/* PLAIN checks compare prepared forms. */
	assert_int_equal(scram_creds_from_password("IX", 1000, &c), 0);
	assert_true(scram_verify_password(&c, "I\xc2\xadX"));
	assert_true(scram_verify_password(&c, "\xe2\x85\xa8"));
	assert_false(scram_verify_password(&c, "ix"));
	assert_false(scram_verify_password(&c, "\x07"));
	assert_int_equal(scram_creds_from_password("\x07", 1000, &c), -EINVAL);
	c.iterations = 0;
	assert_false(scram_verify_password(&c, "IX"));
}

static void test_decoy_creds(void **state)
{
	uint8_t other_secret[32] = { 9 };
	struct scram_creds a, b, c, d;
	struct scram_creds zero;

	(void)state;
	memset(&zero, 0, sizeof(zero));
	scram_decoy_creds(decoy_secret, "nobody", &a);
	scram_decoy_creds(decoy_secret, "nobody", &b);
	scram_decoy_creds(decoy_secret, "nobodz", &c);
	scram_decoy_creds(other_secret, "nobody", &d);
	assert_memory_equal(&a, &b, sizeof(a));
	assert_memory_not_equal(a.salt, c.salt, SCRAM_SALT_LEN);
	assert_memory_not_equal(a.salt, d.salt, SCRAM_SALT_LEN);
	assert_memory_not_equal(a.sha256_stored_key, a.sha256_server_key, 32);
	assert_int_equal(a.iterations, SCRAM_ITERATIONS);
	assert_false(scram_verify_password(&a, PASSWORD));
	scram_creds_wipe(&a);
	assert_memory_equal(&a, &zero, sizeof(a));
}

/* ---- server object, threads ---- */

static void test_server_new_checks_domain(void **state)
{
	struct sasl_server *s;

	(void)state;
	errno = 0;
	assert_null(sasl_server_new("", NULL));
	assert_int_equal(errno, EINVAL);
	assert_null(sasl_server_new("bad domain", NULL));
	assert_null(sasl_server_new(NULL, NULL));
	s = sasl_server_new("Example.NET", NULL);	/* random decoy secret */
	assert_non_null(s);
	sasl_server_free(s);
	sasl_server_free(NULL);
	sasl_end(NULL);
}

#define THREADS		4
#define PER_THREAD	25

/*
 * One full exchange without cmocka assertions (they are not thread-safe):
 * true when the server accepted and the client verified the server.
 */
static bool thread_exchange(const char *mech, const struct sasl_channel *ch,
			    const struct client *cl)
{
	Gsasl_session *c;
	struct sasl_exchange *x = NULL;
	char user[SASL_USERNAME_MAX + 1];
	char *cmsg = NULL, *smsg = NULL;
	size_t clen, slen;
	const char *cond;
	bool ok = false;

	if (gsasl_client_start(cctx, mech, &c) != GSASL_OK)
		return false;
	gsasl_session_hook_set(c, (void *)cl);
	if (gsasl_step(c, NULL, 0, &cmsg, &clen) != GSASL_NEEDS_MORE)
		goto out;
	if (sasl_begin(srv, mech, ch, cmsg, clen, &x, user, sizeof(user), &cond) < 0)
		goto out;
	sasl_set_account(x, &juliet, false);
	if (sasl_step(x, NULL, 0, &smsg, &slen, &cond) != SASL_CONTINUE)
		goto out;
	free(cmsg);
	cmsg = NULL;
	if (gsasl_step(c, smsg, slen, &cmsg, &clen) != GSASL_NEEDS_MORE)
		goto out;
	free(smsg);
	smsg = NULL;
	if (sasl_step(x, cmsg, clen, &smsg, &slen, &cond) != SASL_SUCCESS)
		goto out;
	free(cmsg);
	cmsg = NULL;
	ok = gsasl_step(c, smsg, slen, &cmsg, &clen) == GSASL_OK &&
	     strcmp(sasl_authenticated_user(x), "juliet") == 0;
out:
	free(cmsg);
	free(smsg);
	sasl_end(x);
	gsasl_finish(c);
	return ok;
}

static void *thread_logins(void *arg)
{
	struct sasl_channel ch, nocb;
	struct client cl, cl_nocb;
	long ok = 0;

	(void)arg;
	chan_tls13(&ch, false);
	chan_tls_nocb(&nocb);
	cl = client_for("juliet", PASSWORD, &ch);
	cl_nocb = client_for("juliet", PASSWORD, NULL);
	for (int i = 0; i < PER_THREAD; i++) {
		switch (i % 3) {
		case 0:
			ok += thread_exchange("SCRAM-SHA-256-PLUS", &ch, &cl);
			break;
		case 1:
			ok += thread_exchange("SCRAM-SHA-1-PLUS", &ch, &cl);
			break;
		default:
			ok += thread_exchange("SCRAM-SHA-256", &nocb, &cl_nocb);
			break;
		}
	}
	return (void *)ok;
}

static void test_concurrent_exchanges_share_server(void **state)
{
	pthread_t t[THREADS];
	long total = 0;

	(void)state;
	for (int i = 0; i < THREADS; i++)
		assert_int_equal(pthread_create(&t[i], NULL, thread_logins, NULL), 0);
	for (int i = 0; i < THREADS; i++) {
		void *ret;

		pthread_join(t[i], &ret);
		total += (long)ret;
	}
	assert_int_equal(total, THREADS * PER_THREAD);
}

int main(void)
{
	const struct CMUnitTest tests[] = {
		cmocka_unit_test(test_scram_sha256_succeeds),
		cmocka_unit_test(test_scram_sha1_succeeds),
		cmocka_unit_test(test_scram_username_is_nodeprepped),
		cmocka_unit_test(test_scram_wrong_password_not_authorized),
		cmocka_unit_test(test_scram_unknown_user_fails_only_at_end),
		cmocka_unit_test(test_scram_server_nonce_fresh),
		cmocka_unit_test(test_scram_same_message_twice_gets_new_nonce),
		cmocka_unit_test(test_scram_bad_client_final),
		cmocka_unit_test(test_scram_final_with_nul_or_oversized),
		cmocka_unit_test(test_step_order_misuse),
		cmocka_unit_test(test_stored_creds_with_bad_iterations),
		cmocka_unit_test(test_plus_tls_exporter_succeeds),
		cmocka_unit_test(test_plus_wrong_cb_data_not_authorized),
		cmocka_unit_test(test_plus_tls_unique_accepted_when_supplied),
		cmocka_unit_test(test_plus_unavailable_cb_type_refused),
		cmocka_unit_test(test_cbflag_y_rejected_when_plus_offered),
		cmocka_unit_test(test_cbflag_y_accepted_without_plus),
		cmocka_unit_test(test_cbflag_mismatching_mechanism),
		cmocka_unit_test(test_malformed_client_first),
		cmocka_unit_test(test_oversized_initial_response),
		cmocka_unit_test(test_well_formed_client_first_variants),
		cmocka_unit_test(test_unpreparable_username_not_authorized),
		cmocka_unit_test(test_unknown_mechanism),
		cmocka_unit_test(test_authzid_own_jid_accepted),
		cmocka_unit_test(test_authzid_mismatch_invalid_authzid),
		cmocka_unit_test(test_plain_succeeds_with_verdict),
		cmocka_unit_test(test_plain_wrong_password_or_verdict),
		cmocka_unit_test(test_plain_password_exposed_for_check),
		cmocka_unit_test(test_plain_malformed),
		cmocka_unit_test(test_plain_overlong_password),
		cmocka_unit_test(test_offer_lists),
		cmocka_unit_test(test_cb_types),
		cmocka_unit_test(test_mech_condition),
		cmocka_unit_test(test_every_gsasl_error_maps_to_a_condition),
		cmocka_unit_test(test_b64_encode),
		cmocka_unit_test(test_b64_decode_valid),
		cmocka_unit_test(test_b64_decode_rejects_bad_input),
		cmocka_unit_test(test_b64_round_trip),
		cmocka_unit_test(test_rfc7677_sha256_vector),
		cmocka_unit_test(test_rfc5802_sha1_vector),
		cmocka_unit_test(test_creds_keys_agree_with_derivation),
		cmocka_unit_test(test_fresh_creds_get_fresh_salts),
		cmocka_unit_test(test_saslprep_passwords),
		cmocka_unit_test(test_decoy_creds),
		cmocka_unit_test(test_server_new_checks_domain),
		cmocka_unit_test(test_concurrent_exchanges_share_server),
	};

	return cmocka_run_group_tests_name("sasl", tests, group_setup, group_teardown);
}
