/* SPDX-License-Identifier: MIT */
/*
 * Fuzz target: SASL exchanges (daemon/sasl.c, daemon/scram.c).
 *
 * Input layout:
 *   byte 0  bits 0-2 mechanism (the five offered names and three that are
 *           not), bit 3 honest-client mode, bit 4 (raw mode) no initial
 *           response, bits 5-7 (honest mode) gs2 channel-binding choice
 *   byte 1  channel: bit 0 TLS, bit 1 TLS 1.3, bit 2 tls-exporter data,
 *           bit 3 tls-unique data, bit 4 PLAIN allowed in the clear,
 *           bits 5-7 (raw mode) account exists, PLAIN verdict, stored
 *           iteration count out of range
 *   byte 2  (honest mode) bits 0-1 authzid (none, own localpart, own bare
 *           JID, the input's), bit 2 wrong password, bit 3 flip a byte of
 *           the client-final-message
 *   byte 3  (honest mode) which byte to flip, and how
 *   rest    fields separated by "|||": raw mode: the client messages, the
 *           first being the initial response; honest mode: username,
 *           password, authzid, client nonce
 *
 * Raw mode drives sasl_begin()/sasl_set_account()/sasl_step() with the
 * messages as they come. Honest mode runs a real SCRAM (or PLAIN) client
 * written here against the server, with one account "alice" whose
 * password is "pencil", and checks the outcome against the policy of
 * sasl.h: success exactly for the right password, the right account,
 * an acceptable authzid and a gs2 flag that matches the offer.
 *
 * Properties checked besides the sanitizers: conditions are RFC 6120
 * ones; a failed exchange keeps failing with the same condition; a raw
 * client never completes SCRAM (that would need the proof); a decoy
 * never succeeds; the honest client succeeds when it should and fails
 * with not-authorized for a wrong password and an unknown user alike;
 * the server signature verifies; base64 decoding is canonical, encoding
 * agrees with OpenSSL and both round-trip; SASLprep's ASCII shortcut
 * agrees with libidn.
 */
#include <errno.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <stringprep.h>

#include "fuzz_common.h"
#include "jid.h"
#include "sasl.h"
#include "scram.h"

#define SEP		"|||"
#define MAX_MSGS	6
#define ALICE		"alice"
#define ALICE_PW	"pencil"
#define DOMAIN		"localhost"
/* Low, so that the honest client's PBKDF2 costs little per input. */
#define ALICE_ITER	64

static const char *const mech_names[8] = {
	"SCRAM-SHA-256-PLUS", "SCRAM-SHA-1-PLUS", "SCRAM-SHA-256", "SCRAM-SHA-1", "PLAIN",
	"DIGEST-MD5", "scram-sha-1", "",
};

static struct sasl_server *srv;
static struct scram_creds alice;
/* FUZZ_VERBOSE=1 in the environment: say how each honest exchange ended. */
static bool verbose;

int LLVMFuzzerInitialize(int *argc, char ***argv)
{
	static const uint8_t secret[32] = { 1, 2, 3, 4, 5, 6, 7, 8 };
	static const uint8_t salt[SCRAM_SALT_LEN] = "QSXCR+Q6sek8bf9";

	(void)argc;
	(void)argv;
	fuzz_quiet_logs();
	verbose = getenv("FUZZ_VERBOSE") != NULL;
	srv = sasl_server_new(DOMAIN, secret);
	if (!srv || scram_creds_from_password_salt(ALICE_PW, salt, ALICE_ITER, &alice) < 0)
		abort();
	return 0;
}

static bool is_condition(const char *c)
{
	static const char *const ok[] = {
		"aborted", "account-disabled", "credentials-expired", "encryption-required",
		"incorrect-encoding", "invalid-authzid", "invalid-mechanism",
		"malformed-request", "mechanism-too-weak", "not-authorized",
		"temporary-auth-failure", NULL,
	};

	for (int i = 0; c && ok[i]; i++)
		if (strcmp(c, ok[i]) == 0)
			return true;
	return false;
}

static bool is_mech(const char *name)
{
	for (int i = 0; i < 5; i++)
		if (strcmp(name, mech_names[i]) == 0)
			return true;
	return false;
}

/* The channel as byte 1 describes it. */
static void make_channel(uint8_t f, struct sasl_channel *ch, bool *allow_plain)
{
	memset(ch, 0, sizeof(*ch));
	ch->tls = f & 1;
	ch->tls13 = f & 2;
	if (f & 4) {
		memset(ch->exporter, 0x11, sizeof(ch->exporter));
		ch->exporter_len = 32;
	}
	if (f & 8) {
		memset(ch->unique, 0x22, 12);
		ch->unique_len = 12;
	}
	*allow_plain = f & 16;
}

static bool channel_has_cb(const struct sasl_channel *ch)
{
	return ch->tls && (ch->exporter_len || ch->unique_len);
}

/* sasl_offer, sasl_cb_types and sasl_mech_condition tell the same story. */
static void check_offer(const struct sasl_channel *ch, bool allow_plain)
{
	const char *names[8], *types[4];
	size_t n = sasl_offer(ch, allow_plain, names, 8);
	size_t nt = sasl_cb_types(ch, types, 4);

	for (size_t i = 0; i < 8; i++) {
		const char *cond = sasl_mech_condition(ch, allow_plain, mech_names[i]);
		bool offered = false;

		for (size_t k = 0; k < n; k++)
			offered |= strcmp(names[k], mech_names[i]) == 0;
		fuzz_check(offered == (cond == NULL), "%s offered %d but condition %s",
			   mech_names[i], offered, cond ? cond : "none");
		fuzz_check(!cond || is_condition(cond), "odd condition %s", cond);
		if (i < 2)	/* the -PLUS variants */
			fuzz_check(offered == channel_has_cb(ch), "-PLUS offer vs binding data");
	}
	fuzz_check(nt <= 2 && (nt == 0 || ch->tls), "cb types without TLS");
}

/*
 * Base64: encoding agrees with OpenSSL and decodes back; a decodable text
 * is the one canonical encoding of what it decodes to.
 */
static void check_b64(const uint8_t *p, size_t n)
{
	size_t dlen;
	char *enc = sasl_b64_encode((const char *)p, n);
	char *dec;

	fuzz_check(enc, "encode failed");
	if (n) {
		unsigned char *ref = malloc(4 * ((n + 2) / 3) + 1);

		EVP_EncodeBlock(ref, p, (int)n);
		fuzz_check(strcmp((char *)ref, enc) == 0, "encode differs from OpenSSL");
		free(ref);
	} else {
		fuzz_check(strcmp(enc, "=") == 0, "empty payload not encoded as '='");
	}
	dec = sasl_b64_decode(enc, strlen(enc), &dlen);
	fuzz_check(dec && dlen == n && memcmp(dec, p, n) == 0 && dec[dlen] == '\0',
		   "decode(encode(x)) != x");
	free(dec);
	free(enc);

	dec = sasl_b64_decode((const char *)p, n, &dlen);
	if (!dec) {
		fuzz_check(errno == EINVAL, "decode failed with errno %d", errno);
		return;
	}
	fuzz_check(dec[dlen] == '\0', "decode result not NUL-terminated");
	enc = sasl_b64_encode(dec, dlen);
	fuzz_check(enc, "encode failed");
	if (dlen == 0)
		fuzz_check(n == 0 || (n == 1 && p[0] == '='), "odd text decoded to nothing");
	else
		fuzz_check(strlen(enc) == n && memcmp(enc, p, n) == 0,
			   "non-canonical base64 accepted");
	free(enc);
	free(dec);
}

/* SASLprep's printable-ASCII shortcut is what libidn would do too. */
static void check_saslprep(const uint8_t *p, size_t n)
{
	char *pw = fuzz_strndup(p, n);
	char out[SCRAM_PASSWORD_MAX * 3 + 1];
	char *ref = NULL;
	int rc = scram_saslprep(pw, out, sizeof(out));
	int rrc = stringprep_profile(pw, &ref, "SASLprep", STRINGPREP_NO_UNASSIGNED);

	if (strlen(pw) > 0 && strlen(pw) <= SCRAM_PASSWORD_MAX) {
		bool ref_ok = rrc == STRINGPREP_OK && ref && *ref;

		fuzz_check((rc == 0) == ref_ok, "scram_saslprep rc %d, libidn rc %d", rc, rrc);
		fuzz_check(rc != 0 || strcmp(out, ref) == 0, "scram_saslprep '%s', libidn '%s'",
			   out, ref);
	} else {
		fuzz_check(rc == -EINVAL, "empty or long password accepted");
	}
	free(ref);
	free(pw);
}

/* ---- raw mode ---- */

static void raw_mode(const char *mech, uint8_t f0, uint8_t f1, struct fuzz_in *in)
{
	const uint8_t *msg[MAX_MSGS];
	size_t len[MAX_MSGS], nmsg = 0;
	struct sasl_channel ch;
	struct sasl_exchange *x = NULL;
	char user[SASL_USERNAME_MAX + 1];
	const char *cond = NULL, *failed = NULL;
	bool allow_plain, exists = f1 & 32, plain_ok = f1 & 64, bad_iter = f1 & 128;
	bool scram = strncmp(mech, "SCRAM", 5) == 0, succeeded = false;
	int rc;

	make_channel(f1, &ch, &allow_plain);
	check_offer(&ch, allow_plain);
	while (in->left && nmsg < MAX_MSGS) {
		len[nmsg] = fuzz_field(in, SEP, 3, &msg[nmsg]);
		check_b64(msg[nmsg], len[nmsg]);
		check_saslprep(msg[nmsg], len[nmsg]);
		nmsg++;
	}
	if (nmsg == 0) {
		msg[0] = (const uint8_t *)"";
		len[0] = 0;
		nmsg = 1;
	}

	rc = sasl_begin(srv, mech, &ch, (f0 & 16) ? NULL : (const char *)msg[0], len[0], &x,
			user, sizeof(user), &cond);
	if (rc < 0) {
		fuzz_check(!x && is_condition(cond), "sasl_begin rc %d condition %s", rc,
			   cond ? cond : "NULL");
		fuzz_check(rc == -EINVAL || (rc == -EAGAIN && (f0 & 16)), "sasl_begin rc %d", rc);
		fuzz_check(is_mech(mech) || strcmp(cond, "invalid-mechanism") == 0,
			   "unknown mechanism %s accepted as far as %s", mech, cond);
		return;
	}
	fuzz_check(x && !cond && is_mech(mech), "sasl_begin succeeded oddly");
	fuzz_check(user[0] && strlen(user) <= SASL_USERNAME_MAX, "empty username");
	fuzz_check(sasl_needs_lookup(x), "no lookup wanted");
	fuzz_check(strcmp(sasl_mech_name(x), mech) == 0, "mechanism name");
	fuzz_check(scram == !sasl_plain_password(x), "PLAIN password presence");
	fuzz_check(!strstr(mech, "PLUS") || channel_has_cb(&ch), "-PLUS without binding data");

	if (exists) {
		struct scram_creds c = alice;

		if (bad_iter)
			c.iterations = SCRAM_ITERATIONS_MAX + 1;
		sasl_set_account(x, &c, plain_ok);
	} else {
		sasl_set_account(x, NULL, plain_ok);
	}
	fuzz_check(!sasl_needs_lookup(x), "lookup still wanted");

	for (size_t i = 0; i < nmsg + 1; i++) {
		char *out = NULL;
		size_t out_len = 0;
		enum sasl_result r;
		const uint8_t *m = i < nmsg ? msg[i] : (const uint8_t *)"";
		size_t ml = i < nmsg ? len[i] : 0;

		r = sasl_step(x, (const char *)m, ml, &out, &out_len, &cond);
		switch (r) {
		case SASL_CONTINUE:
			fuzz_check(!failed && !succeeded && scram && i == 0,
				   "continue at step %zu", i);
			fuzz_check(out && out_len > 2 && memcmp(out, "r=", 2) == 0,
				   "server-first-message does not start with r=");
			break;
		case SASL_SUCCESS:
			fuzz_check(!failed && !succeeded, "success after the end");
			fuzz_check(exists && !bad_iter, "success without a usable account");
			fuzz_check(!scram, "raw SCRAM client succeeded (forged proof?)");
			fuzz_check(plain_ok, "PLAIN succeeded without the verdict");
			fuzz_check(sasl_authenticated_user(x) &&
				   strcmp(sasl_authenticated_user(x), user) == 0,
				   "authenticated user differs");
			succeeded = true;
			break;
		case SASL_FAILURE:
			fuzz_check(is_condition(cond), "step condition %s", cond ? cond : "NULL");
			fuzz_check(!out, "output with a failure");
			fuzz_check(!failed || strcmp(failed, cond) == 0,
				   "failure changed from %s to %s", failed ? failed : "", cond);
			fuzz_check(!sasl_authenticated_user(x), "user after failure");
			if (succeeded)
				fuzz_check(strcmp(cond, "malformed-request") == 0,
					   "step after success: %s", cond);
			if (bad_iter && exists && i == 0)
				fuzz_check(strcmp(cond, "temporary-auth-failure") == 0,
					   "bad iteration count gave %s", cond);
			failed = cond;
			break;
		default:
			fuzz_fail("sasl_step returned %d", (int)r);
		}
		free(out);
	}
	sasl_end(x);
}

/* ---- honest mode ---- */

/* saslname escaping (RFC 5802 section 5.1). */
static void put_saslname(char *out, size_t cap, const uint8_t *s, size_t n)
{
	size_t o = 0;

	for (size_t i = 0; i < n && o + 4 < cap; i++) {
		if (s[i] == ',') {
			memcpy(out + o, "=2C", 3);
			o += 3;
		} else if (s[i] == '=') {
			memcpy(out + o, "=3D", 3);
			o += 3;
		} else {
			out[o++] = (char)s[i];
		}
	}
	out[o] = '\0';
}

static char *b64(const void *p, size_t n)
{
	char *s = malloc(4 * ((n + 2) / 3) + 1);

	if (!s)
		abort();
	EVP_EncodeBlock((unsigned char *)s, p, (int)n);
	return s;
}

struct scram_client {
	const EVP_MD *md;
	size_t hlen;
	char gs2[256];
	char first_bare[2048];
	char nonce[512];
	uint8_t salted[32];
	bool keys_ok;		/* salted is the real SaltedPassword */
	char auth_msg[8192];
};

/*
 * Parses r=,s=,i= and derives SaltedPassword from the prepared password.
 * Only our own account is worth a real PBKDF2 (a decoy fails whatever
 * the proof), so keys_ok says whether the count is ALICE_ITER.
 */
static void scram_client_server_first(struct scram_client *c, const char *sf, const char *pw,
				      const char *cnonce)
{
	const char *r = strstr(sf, "r="), *s = strstr(sf, ",s="), *i = strstr(sf, ",i=");
	unsigned char salt[128];
	const char *sb;
	size_t sbl;
	long iter;
	int slen;

	fuzz_check(r == sf && s && i && s < i, "server-first '%s'", sf);
	fuzz_check(strncmp(r + 2, cnonce, strlen(cnonce)) == 0, "server nonce drops ours");
	snprintf(c->nonce, sizeof(c->nonce), "%.*s", (int)(s - r - 2), r + 2);
	sb = s + 3;
	sbl = (size_t)(i - sb);
	fuzz_check(sbl > 0 && sbl % 4 == 0 && sbl < 4 * sizeof(salt) / 3, "salt '%.*s'",
		   (int)sbl, sb);
	slen = EVP_DecodeBlock(salt, (const unsigned char *)sb, (int)sbl);
	slen -= (sb[sbl - 1] == '=') + (sb[sbl - 2] == '=');
	iter = strtol(i + 3, NULL, 10);
	fuzz_check(slen > 0 && iter > 0, "salt or iteration count");
	c->keys_ok = iter == ALICE_ITER;
	if (c->keys_ok)
		PKCS5_PBKDF2_HMAC(pw, (int)strlen(pw), salt, slen, (int)iter, c->md, (int)c->hlen,
				  c->salted);
	else
		memset(c->salted, 0x42, sizeof(c->salted));
}

/* Builds client-final-message into out; returns the server signature expected. */
static void scram_client_final(struct scram_client *c, const char *sf,
			       const struct sasl_channel *ch, const char *cbname, char *out,
			       size_t cap, uint8_t *server_sig)
{
	uint8_t ckey[32], skey[32], stored[32], csig[32], proof[32], cbind[512];
	unsigned mlen;
	size_t gl = strlen(c->gs2), cbl = gl;
	char *cb64, *p64, without[1024];

	memcpy(cbind, c->gs2, gl);
	if (cbname && strcmp(cbname, "tls-exporter") == 0 && ch->exporter_len) {
		memcpy(cbind + gl, ch->exporter, ch->exporter_len);
		cbl += ch->exporter_len;
	} else if (cbname && strcmp(cbname, "tls-unique") == 0 && ch->unique_len) {
		memcpy(cbind + gl, ch->unique, ch->unique_len);
		cbl += ch->unique_len;
	}
	cb64 = b64(cbind, cbl);
	snprintf(without, sizeof(without), "c=%s,r=%s", cb64, c->nonce);
	snprintf(c->auth_msg, sizeof(c->auth_msg), "%s,%s,%s", c->first_bare, sf, without);

	HMAC(c->md, c->salted, (int)c->hlen, (const unsigned char *)"Client Key", 10, ckey, &mlen);
	EVP_Digest(ckey, c->hlen, stored, NULL, c->md, NULL);
	HMAC(c->md, stored, (int)c->hlen, (const unsigned char *)c->auth_msg,
	     strlen(c->auth_msg), csig, &mlen);
	for (size_t i = 0; i < c->hlen; i++)
		proof[i] = ckey[i] ^ csig[i];
	HMAC(c->md, c->salted, (int)c->hlen, (const unsigned char *)"Server Key", 10, skey, &mlen);
	HMAC(c->md, skey, (int)c->hlen, (const unsigned char *)c->auth_msg, strlen(c->auth_msg),
	     server_sig, &mlen);
	p64 = b64(proof, c->hlen);
	snprintf(out, cap, "%s,p=%s", without, p64);
	free(cb64);
	free(p64);
	OPENSSL_cleanse(ckey, sizeof(ckey));
	OPENSSL_cleanse(skey, sizeof(skey));
}

/*
 * What a client sends as the SCRAM password: SASLprep'd by libidn
 * (RFC 5802 section 2.2), or the raw bytes when preparation fails (the
 * server then cannot match it). *right says whether it is Alice's.
 */
static char *client_password(const char *pw, bool *right)
{
	char *prep = NULL;

	if (stringprep_profile(pw, &prep, "SASLprep", STRINGPREP_NO_UNASSIGNED) != STRINGPREP_OK ||
	    !prep || !*prep) {
		free(prep);
		*right = false;
		return strdup(pw);
	}
	*right = strcmp(prep, ALICE_PW) == 0;
	return prep;
}

/* One honest-client exchange, as the input describes it. */
struct honest {
	const char *mech;
	bool scram, plus, sha1;
	struct sasl_channel ch;
	char cbflag;			/* gs2 flag sent */
	const char *cbname;		/* with 'p' */
	bool cb_ok;			/* the flag fits the offer (sasl.h policy) */
	char authz[1200];		/* "" = none */
	bool authz_known;		/* none or our own: acceptable for sure */
	const uint8_t *user;		/* raw username bytes */
	size_t user_len;
	char *pw;			/* what the client sends (SASLprep'd for SCRAM) */
	bool pw_right;
	char cnonce[300];
	bool mutate;			/* flip a byte of client-final */
	uint8_t flip;
};

/* gs2 flag: as chosen (0-4), or (5-7) what a correct client would send. */
static void honest_cbflag(struct honest *h, unsigned sel)
{
	static const char *const names[] = { NULL, NULL, "tls-exporter", "tls-unique",
					     "tls-bogus" };

	if (sel < 5) {
		h->cbflag = sel == 0 ? 'n' : sel == 1 ? 'y' : 'p';
		h->cbname = names[sel];
	} else if (h->plus) {
		h->cbflag = 'p';
		h->cbname = h->ch.exporter_len ? "tls-exporter" : "tls-unique";
	} else {
		h->cbflag = 'n';
		h->cbname = NULL;
	}
	if (!h->scram)
		h->cb_ok = true;
	else if (h->plus)
		h->cb_ok = h->cbflag == 'p' && h->ch.tls &&
			   ((strcmp(h->cbname, "tls-exporter") == 0 && h->ch.exporter_len) ||
			    (strcmp(h->cbname, "tls-unique") == 0 && h->ch.unique_len));
	else
		h->cb_ok = h->cbflag == 'n' || (h->cbflag == 'y' && !channel_has_cb(&h->ch));
}

static void honest_report(const struct honest *h, const char *user, enum sasl_result r,
			  const char *cond, bool expect)
{
	if (verbose)
		fprintf(fuzz_err(), "honest %s user=%s: %s %s (expected %s)\n", h->mech, user,
			r == SASL_SUCCESS ? "success" : "failure", cond ? cond : "",
			expect ? "success" : "failure");
}

static void honest_scram(struct honest *h)
{
	struct scram_client c = { .md = h->sha1 ? EVP_sha1() : EVP_sha256(),
				  .hlen = h->sha1 ? 20 : 32 };
	char user_esc[4200], authz_esc[4000], prepared[SASL_USERNAME_MAX + 1], msg[8192];
	struct sasl_exchange *x = NULL;
	const char *cond = NULL;
	char *out = NULL;
	size_t out_len, mlen;
	uint8_t sig[32];
	enum sasl_result r;
	bool exists, expect;

	put_saslname(user_esc, sizeof(user_esc), h->user, h->user_len);
	put_saslname(authz_esc, sizeof(authz_esc), (const uint8_t *)h->authz, strlen(h->authz));
	snprintf(c.gs2, sizeof(c.gs2), "%c%s%s,%s%s,", h->cbflag, h->cbname ? "=" : "",
		 h->cbname ? h->cbname : "", h->authz[0] ? "a=" : "", authz_esc);
	snprintf(c.first_bare, sizeof(c.first_bare), "n=%s,r=%s", user_esc, h->cnonce);
	mlen = (size_t)snprintf(msg, sizeof(msg), "%s%s", c.gs2, c.first_bare);
	if (sasl_begin(srv, h->mech, &h->ch, msg, mlen, &x, prepared, sizeof(prepared),
		       &cond) < 0) {
		/* A flag that contradicts the offer is refused here, before the lookup. */
		fuzz_check(is_condition(cond), "condition %s", cond ? cond : "NULL");
		return;
	}
	fuzz_check(h->cb_ok, "gs2 flag '%c%s' accepted against the offer (%s, cb %d)",
		   h->cbflag, h->cbname ? h->cbname : "", h->mech, channel_has_cb(&h->ch));
	exists = strcmp(prepared, ALICE) == 0;
	sasl_set_account(x, exists ? &alice : NULL, false);
	r = sasl_step(x, NULL, 0, &out, &out_len, &cond);
	fuzz_check(r == SASL_CONTINUE, "first step gave %d (%s)", r, cond ? cond : "");
	scram_client_server_first(&c, out, h->pw, h->cnonce);
	/* Test data: Alice's count differs from the decoys' (4096). */
	fuzz_check(c.keys_ok == exists, "decoy for alice, or alice's credentials for a decoy");
	scram_client_final(&c, out, &h->ch, h->cbname, msg, sizeof(msg), sig);
	free(out);
	out = NULL;
	mlen = strlen(msg);
	if (h->mutate && mlen) {
		msg[h->flip % mlen] ^= (char)((h->flip >> 5) + 1);
		if (msg[h->flip % mlen] == '\0')
			msg[h->flip % mlen] = 'x';
	}
	r = sasl_step(x, msg, mlen, &out, &out_len, &cond);
	expect = exists && h->pw_right && h->cb_ok && h->authz_known && !h->mutate;
	honest_report(h, prepared, r, cond, expect);
	if (r == SASL_SUCCESS) {
		fuzz_check(exists, "decoy succeeded");
		fuzz_check(h->pw_right, "SCRAM success for %s with a wrong password", prepared);
		if (!h->mutate) {
			char *sig64 = b64(sig, c.hlen);

			fuzz_check(out && out_len == 2 + strlen(sig64) && memcmp(out, "v=", 2) == 0 &&
				   memcmp(out + 2, sig64, strlen(sig64)) == 0,
				   "server signature does not verify");
			free(sig64);
		}
	} else {
		fuzz_check(r == SASL_FAILURE && is_condition(cond), "final step %d", r);
		fuzz_check(!expect, "honest SCRAM client refused: %s (user %s, mech %s)", cond,
			   prepared, h->mech);
		/* No account enumeration: both fail the same way. */
		if (!h->mutate && h->authz_known && !(exists && h->pw_right))
			fuzz_check(strcmp(cond, "not-authorized") == 0,
				   "wrong password / unknown user gave %s", cond);
	}
	free(out);
	sasl_end(x);
}

/* PLAIN: authzid NUL authcid NUL password. */
static void honest_plain(struct honest *h)
{
	char *user = fuzz_strndup(h->user, h->user_len);
	size_t al = strlen(h->authz), ul = strlen(user), pl = strlen(h->pw), mlen;
	char msg[8192], prepared[SASL_USERNAME_MAX + 1];
	struct sasl_exchange *x = NULL;
	const char *cond = NULL;
	char *out = NULL;
	size_t out_len;
	enum sasl_result r;
	bool exists, expect;

	if (al + ul + pl + 2 > sizeof(msg))
		goto out;
	memcpy(msg, h->authz, al);
	msg[al] = '\0';
	memcpy(msg + al + 1, user, ul);
	msg[al + 1 + ul] = '\0';
	memcpy(msg + al + ul + 2, h->pw, pl);
	mlen = al + ul + pl + 2;
	if (sasl_begin(srv, h->mech, &h->ch, msg, mlen, &x, prepared, sizeof(prepared),
		       &cond) < 0) {
		fuzz_check(is_condition(cond), "condition %s", cond ? cond : "NULL");
		goto out;
	}
	fuzz_check(strcmp(sasl_plain_password(x), h->pw) == 0, "PLAIN password differs");
	exists = strcmp(prepared, ALICE) == 0;
	sasl_set_account(x, exists ? &alice : NULL, exists && scram_verify_password(&alice, h->pw));
	r = sasl_step(x, NULL, 0, &out, &out_len, &cond);
	expect = exists && h->pw_right && h->authz_known;
	honest_report(h, prepared, r, cond, expect);
	if (r == SASL_SUCCESS) {
		fuzz_check(exists && h->pw_right, "PLAIN success for %s, password right %d",
			   prepared, h->pw_right);
	} else {
		fuzz_check(r == SASL_FAILURE && is_condition(cond), "PLAIN step %d", r);
		fuzz_check(!expect, "honest PLAIN client refused: %s", cond);
	}
	free(out);
out:
	sasl_end(x);
	free(user);
}

static void honest_mode(int mech_idx, uint8_t f0, uint8_t f1, struct fuzz_in *in)
{
	struct honest h = {
		.mech = mech_names[mech_idx],
		.scram = mech_idx < 4,
		.plus = mech_idx < 2,
		.sha1 = mech_idx == 1 || mech_idx == 3,
	};
	uint8_t f2 = fuzz_u8(in);
	const uint8_t *fp, *fa, *fn;
	size_t lp, la, ln, o;
	bool allow_plain;
	char *raw;

	h.flip = fuzz_u8(in);
	h.mutate = f2 & 8;
	h.user_len = fuzz_field(in, SEP, 3, &h.user);
	lp = fuzz_field(in, SEP, 3, &fp);
	la = fuzz_field(in, SEP, 3, &fa);
	ln = fuzz_field(in, SEP, 3, &fn);
	make_channel(f1, &h.ch, &allow_plain);
	honest_cbflag(&h, f0 >> 5);

	/* The password: Alice's, or the input's (bit 2). */
	raw = (f2 & 4) ? fuzz_strndup(fp, lp) : strdup(ALICE_PW);
	if (!raw)
		abort();
	h.pw = client_password(raw, &h.pw_right);
	if (!h.pw)
		abort();
	if (!h.scram) {
		/* PLAIN sends it raw; the server prepares it. */
		free(h.pw);
		h.pw = raw;
	} else {
		free(raw);
	}

	/* authzid: none, our localpart, our bare JID, or the input's. */
	h.authz_known = (f2 & 3) != 3;
	switch (f2 & 3) {
	case 1:
		snprintf(h.authz, sizeof(h.authz), "%.*s", (int)h.user_len, (const char *)h.user);
		break;
	case 2:
		snprintf(h.authz, sizeof(h.authz), "%.*s@" DOMAIN, (int)h.user_len,
			 (const char *)h.user);
		break;
	case 3:
		snprintf(h.authz, sizeof(h.authz), "%.*s", (int)la, (const char *)fa);
		break;
	default:
		break;
	}

	/* A client nonce: printable characters other than ','. */
	snprintf(h.cnonce, sizeof(h.cnonce), "fyko+d2lbbFgONRv9qkxdawL");
	o = strlen(h.cnonce);
	for (size_t i = 0; i < ln && o + 1 < sizeof(h.cnonce); i++) {
		if (fn[i] > 0x20 && fn[i] < 0x7f && fn[i] != ',') {
			h.cnonce[o++] = (char)fn[i];
			h.cnonce[o] = '\0';
		}
	}

	if (h.scram)
		honest_scram(&h);
	else
		honest_plain(&h);
	free(h.pw);
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size)
{
	struct fuzz_in in = { data, size };
	uint8_t f0 = fuzz_u8(&in), f1 = fuzz_u8(&in);
	int mech_idx = f0 & 7;

	if ((f0 & 8) && mech_idx < 5)
		honest_mode(mech_idx, f0, f1, &in);
	else
		raw_mode(mech_names[mech_idx], f0, f1, &in);
	return 0;
}
