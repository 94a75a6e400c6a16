/* SPDX-License-Identifier: MIT */
/*
 * SASL for c2s streams on GNU SASL: SCRAM-SHA-256(-PLUS), SCRAM-SHA-1
 * (-PLUS) and PLAIN, answered from stored SCRAM credentials.
 *
 * sasl_begin() parses the first client message itself, strictly: it needs
 * the username before GNU SASL runs (storage is asynchronous), and it is
 * where stanzad's own policy is enforced, because GNU SASL 2.2 leaves it
 * to the application:
 *   - the gs2 channel-binding flag against what was offered (GNU SASL
 *     accepts "p=..." on a non-PLUS mechanism when the binding data is
 *     empty, and cannot know what was offered);
 *   - the authorization identity (GNU SASL's SCRAM never checks it);
 *   - saslname escapes (GNU SASL copies a bad "=xx" escape literally).
 * Only a message that passed these checks reaches GNU SASL, which then
 * runs the mechanism with the callbacks below answering from the
 * credentials handed to sasl_set_account().
 *
 * Property encodings GNU SASL 2.2 expects from a server callback (checked
 * against the library, not its header, which says hex for the keys):
 * GSASL_SCRAM_ITER decimal, GSASL_SCRAM_SALT, GSASL_SCRAM_STOREDKEY,
 * GSASL_SCRAM_SERVERKEY, GSASL_CB_TLS_EXPORTER and GSASL_CB_TLS_UNIQUE
 * base64.
 */
#include <errno.h>
#include <inttypes.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <gsasl.h>
#include <openssl/crypto.h>
#include <openssl/rand.h>
#include <stringprep.h>

#include "jid.h"
#include "log.h"
#include "sasl.h"

/* Base64 text of the largest binary value handed to GNU SASL, plus NUL. */
#define SASL_B64_PROP_MAX	(((sizeof(((struct sasl_channel *)0)->unique) + 2) / 3) * 4 + 1)

struct sasl_mech {
	const char *name;
	bool scram;
	bool plus;
	enum scram_hash hash;
};

/* Best first: the order of sasl_offer(). */
static const struct sasl_mech sasl_mechs[] = {
	{ "SCRAM-SHA-256-PLUS", true, true, SCRAM_HASH_SHA256 },
	{ "SCRAM-SHA-1-PLUS", true, true, SCRAM_HASH_SHA1 },
	{ "SCRAM-SHA-256", true, false, SCRAM_HASH_SHA256 },
	{ "SCRAM-SHA-1", true, false, SCRAM_HASH_SHA1 },
	{ "PLAIN", false, false, SCRAM_HASH_SHA256 },
};

#define SASL_MECH_COUNT (sizeof(sasl_mechs) / sizeof(sasl_mechs[0]))

struct sasl_server {
	Gsasl *ctx;			/* read-only after sasl_server_new() */
	uint8_t decoy_secret[32];
	char domain[JID_PART_MAX + 1];	/* normalized */
};

enum sasl_state {
	SASL_ST_LOOKUP = 0,	/* waiting for sasl_set_account() */
	SASL_ST_FIRST,		/* next step feeds the saved initial response */
	SASL_ST_FINAL,		/* SCRAM: waiting for client-final-message */
	SASL_ST_DONE,		/* succeeded */
	SASL_ST_FAILED,		/* failed with fail_condition */
};

/*
 * One authentication attempt. Allocated once per attempt with the initial
 * response at its end; besides this, only GNU SASL's session allocates.
 */
struct sasl_exchange {
	const struct sasl_server *srv;
	const struct sasl_mech *mech;
	Gsasl_session *gs;
	enum sasl_state state;
	const char *fail_condition;
	bool decoy;		/* unknown account: SCRAM runs on decoy creds */
	bool creds_bad;		/* stored creds unusable (iteration count) */
	bool plain_ok;		/* PLAIN: verdict of the off-loop check */
	struct sasl_channel ch;	/* copy; binding data cleared without TLS */
	struct scram_creds creds;
	const char *password;	/* PLAIN: points into initial, NUL-terminated */
	char username[SASL_USERNAME_MAX + 1];
	size_t initial_len;
	char initial[];		/* initial response + NUL; wiped at the end */
};

/* ---- base64 (RFC 4648 section 4) ---- */

static const char sasl_b64_alphabet[] =
	"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";

/* Value of one base64 character, -1 for anything outside the alphabet. */
static int sasl_b64_value(unsigned char c)
{
	if (c >= 'A' && c <= 'Z')
		return c - 'A';
	if (c >= 'a' && c <= 'z')
		return c - 'a' + 26;
	if (c >= '0' && c <= '9')
		return c - '0' + 52;
	if (c == '+')
		return 62;
	if (c == '/')
		return 63;
	return -1;
}

/* Writes the padded encoding of in[0..len) and a NUL; out holds 4*ceil(len/3)+1. */
static void sasl_b64_encode_to(char *out, const unsigned char *in, size_t len)
{
	size_t i = 0;

	for (; i + 3 <= len; i += 3) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8 | in[i + 2];

		*out++ = sasl_b64_alphabet[v >> 18];
		*out++ = sasl_b64_alphabet[(v >> 12) & 63];
		*out++ = sasl_b64_alphabet[(v >> 6) & 63];
		*out++ = sasl_b64_alphabet[v & 63];
	}
	if (len - i == 1) {
		uint32_t v = (uint32_t)in[i] << 16;

		*out++ = sasl_b64_alphabet[v >> 18];
		*out++ = sasl_b64_alphabet[(v >> 12) & 63];
		*out++ = '=';
		*out++ = '=';
	} else if (len - i == 2) {
		uint32_t v = (uint32_t)in[i] << 16 | (uint32_t)in[i + 1] << 8;

		*out++ = sasl_b64_alphabet[v >> 18];
		*out++ = sasl_b64_alphabet[(v >> 12) & 63];
		*out++ = sasl_b64_alphabet[(v >> 6) & 63];
		*out++ = '=';
	}
	*out = '\0';
}

char *sasl_b64_encode(const char *in, size_t in_len)
{
	char *out;

	if (in_len == 0)
		return strdup("=");
	if (in_len > (SIZE_MAX - 1) / 4 * 3 - 2) {
		errno = ENOMEM;
		return NULL;
	}
	out = malloc((in_len + 2) / 3 * 4 + 1);
	if (!out)
		return NULL;
	sasl_b64_encode_to(out, (const unsigned char *)in, in_len);
	return out;
}

char *sasl_b64_decode(const char *in, size_t in_len, size_t *out_len)
{
	const unsigned char *s = (const unsigned char *)in;
	unsigned char *out, *o;

	*out_len = 0;
	if (in_len == 0 || (in_len == 1 && in[0] == '='))
		return calloc(1, 1);
	if (in_len % 4 != 0) {
		errno = EINVAL;
		return NULL;
	}
	out = malloc(in_len / 4 * 3 + 1);
	if (!out)
		return NULL;
	o = out;
	for (size_t i = 0; i < in_len; i += 4) {
		bool last = i + 4 == in_len;
		int a = sasl_b64_value(s[i]);
		int b = sasl_b64_value(s[i + 1]);
		int c = sasl_b64_value(s[i + 2]);
		int d = sasl_b64_value(s[i + 3]);

		if (a < 0 || b < 0)
			goto err_invalid;
		if (c >= 0 && d >= 0) {
			*o++ = (unsigned char)(a << 2 | b >> 4);
			*o++ = (unsigned char)((b & 15) << 4 | c >> 2);
			*o++ = (unsigned char)((c & 3) << 6 | d);
			continue;
		}
		/*
		 * Padding only in the last quantum, as "xx==" or "xxx=", and
		 * the bits it leaves over must be zero (RFC 4648 section 3.5),
		 * so every payload has exactly one accepted encoding.
		 */
		if (!last || s[i + 3] != '=')
			goto err_invalid;
		if (c < 0) {
			if (s[i + 2] != '=' || (b & 15) != 0)
				goto err_invalid;
			*o++ = (unsigned char)(a << 2 | b >> 4);
		} else {
			if ((c & 3) != 0)
				goto err_invalid;
			*o++ = (unsigned char)(a << 2 | b >> 4);
			*o++ = (unsigned char)((b & 15) << 4 | c >> 2);
		}
	}
	*o = '\0';
	*out_len = (size_t)(o - out);
	return (char *)out;

err_invalid:
	free(out);
	errno = EINVAL;
	return NULL;
}

/* ---- mechanisms, offers ---- */

static const struct sasl_mech *sasl_mech_find(const char *name)
{
	for (size_t i = 0; name && i < SASL_MECH_COUNT; i++) {
		if (strcmp(sasl_mechs[i].name, name) == 0)
			return &sasl_mechs[i];
	}
	return NULL;
}

/* Binding data counts only on an encrypted stream. */
static bool sasl_channel_has_cb(const struct sasl_channel *ch)
{
	return ch->tls && (ch->exporter_len > 0 || ch->unique_len > 0);
}

/* Offers exactly what sasl_mech_condition() would let start. */
size_t sasl_offer(const struct sasl_channel *ch, bool allow_plain_insecure,
		  const char **names, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < SASL_MECH_COUNT && n < cap; i++) {
		if (sasl_mech_condition(ch, allow_plain_insecure, sasl_mechs[i].name))
			continue;
		names[n++] = sasl_mechs[i].name;
	}
	return n;
}

size_t sasl_cb_types(const struct sasl_channel *ch, const char **names, size_t cap)
{
	size_t n = 0;

	if (!ch->tls)
		return 0;
	if (ch->exporter_len > 0 && n < cap)
		names[n++] = "tls-exporter";
	if (ch->unique_len > 0 && !ch->tls13 && n < cap)
		names[n++] = "tls-unique";
	return n;
}

const char *sasl_mech_condition(const struct sasl_channel *ch, bool allow_plain_insecure,
				const char *mech)
{
	const struct sasl_mech *m = sasl_mech_find(mech);

	if (!m || (m->plus && !sasl_channel_has_cb(ch)))
		return "invalid-mechanism";
	if (!m->scram && !ch->tls && !allow_plain_insecure)
		return "mechanism-too-weak";
	return NULL;
}

/* ---- GNU SASL error codes ---- */

const char *sasl_condition_from_gsasl(int rc)
{
	switch (rc) {
	case GSASL_AUTHENTICATION_ERROR:
	case GSASL_SASLPREP_ERROR:		/* name or password unpreparable */
	case GSASL_NO_CB_TLS_UNIQUE:		/* binding type not on this channel */
	case GSASL_NO_CB_TLS_EXPORTER:
	case GSASL_INTEGRITY_ERROR:
	case GSASL_SECURID_SERVER_NEED_ADDITIONAL_PASSCODE:
	case GSASL_SECURID_SERVER_NEED_NEW_PIN:
		return "not-authorized";
	case GSASL_MECHANISM_PARSE_ERROR:
	case GSASL_BASE64_ERROR:		/* base64 inside a SCRAM attribute */
	case GSASL_MECHANISM_CALLED_TOO_MANY_TIMES:
		return "malformed-request";
	case GSASL_UNKNOWN_MECHANISM:
		return "invalid-mechanism";
	case GSASL_MALLOC_ERROR:
	case GSASL_CRYPTO_ERROR:
	case GSASL_NO_CLIENT_CODE:
	case GSASL_NO_SERVER_CODE:
	case GSASL_NO_CALLBACK:
	case GSASL_NO_ANONYMOUS_TOKEN:
	case GSASL_NO_AUTHID:
	case GSASL_NO_AUTHZID:
	case GSASL_NO_PASSWORD:
	case GSASL_NO_PASSCODE:
	case GSASL_NO_PIN:
	case GSASL_NO_SERVICE:
	case GSASL_NO_HOSTNAME:
	case GSASL_NO_SAML20_IDP_IDENTIFIER:
	case GSASL_NO_SAML20_REDIRECT_URL:
	case GSASL_NO_OPENID20_REDIRECT_URL:
	case GSASL_GSSAPI_RELEASE_BUFFER_ERROR:
	case GSASL_GSSAPI_IMPORT_NAME_ERROR:
	case GSASL_GSSAPI_INIT_SEC_CONTEXT_ERROR:
	case GSASL_GSSAPI_ACCEPT_SEC_CONTEXT_ERROR:
	case GSASL_GSSAPI_UNWRAP_ERROR:
	case GSASL_GSSAPI_WRAP_ERROR:
	case GSASL_GSSAPI_ACQUIRE_CRED_ERROR:
	case GSASL_GSSAPI_DISPLAY_NAME_ERROR:
	case GSASL_GSSAPI_UNSUPPORTED_PROTECTION_ERROR:
	case GSASL_GSSAPI_ENCAPSULATE_TOKEN_ERROR:
	case GSASL_GSSAPI_DECAPSULATE_TOKEN_ERROR:
	case GSASL_GSSAPI_INQUIRE_MECH_FOR_SASLNAME_ERROR:
	case GSASL_GSSAPI_TEST_OID_SET_MEMBER_ERROR:
	case GSASL_GSSAPI_RELEASE_OID_SET_ERROR:
		/* The server side broke, not the client's credentials. */
		return "temporary-auth-failure";
	default:
		/* Codes added after 2.2 (and OK/NEEDS_MORE misused): fail closed. */
		return "not-authorized";
	}
}

/* ---- parsing of first client messages ---- */

/* Bounded cursor over one client message. */
struct sasl_cursor {
	const char *p;
	const char *end;
};

/* Consumes ch if it is the next character; true if it was. */
static bool sasl_cur_take(struct sasl_cursor *c, char ch)
{
	if (c->p < c->end && *c->p == ch) {
		c->p++;
		return true;
	}
	return false;
}

/* Consumes up to the next ',' (not included) or the end; returns the length. */
static size_t sasl_cur_field(struct sasl_cursor *c, const char **start)
{
	const char *comma = memchr(c->p, ',', (size_t)(c->end - c->p));
	const char *stop = comma ? comma : c->end;
	size_t n = (size_t)(stop - c->p);

	*start = c->p;
	c->p = stop;
	return n;
}

static bool sasl_is_alpha(char ch)
{
	return (ch >= 'A' && ch <= 'Z') || (ch >= 'a' && ch <= 'z');
}

/* cb-name = 1*(ALPHA / DIGIT / "." / "-") */
static bool sasl_cbname_ok(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (!sasl_is_alpha(s[i]) && !(s[i] >= '0' && s[i] <= '9') &&
		    s[i] != '.' && s[i] != '-')
			return false;
	}
	return len > 0;
}

/* c-nonce = 1*printable; printable = %x21-2B / %x2D-7E */
static bool sasl_nonce_ok(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if (s[i] < 0x21 || s[i] > 0x7e || s[i] == ',')
			return false;
	}
	return len > 0;
}

/* The parts of a SCRAM client-first-message, as views into the message. */
struct sasl_scram_first {
	char cbflag;		/* 'n', 'y' or 'p' */
	const char *cbname;
	size_t cbname_len;
	const char *authzid;	/* raw saslname, NULL when absent */
	size_t authzid_len;
	const char *user;	/* raw saslname */
	size_t user_len;
};

/*
 * Parses a client-first-message (RFC 5802 section 7):
 *   gs2-cbind-flag "," [ "a=" saslname ] "," "n=" saslname "," "r=" c-nonce
 *   *("," ALPHA "=" 1*value-char)
 * A reserved "m=" extension is refused, as section 5.1 requires of a
 * server that does not know it. saslname escapes are checked later, when
 * decoding. 0 or -EBADMSG.
 */
static int sasl_scram_parse_first(const char *msg, size_t len, struct sasl_scram_first *f)
{
	struct sasl_cursor c = { msg, msg + len };
	const char *nonce, *val;
	size_t n;

	memset(f, 0, sizeof(*f));
	if (memchr(msg, '\0', len))
		return -EBADMSG;
	if (sasl_cur_take(&c, 'n')) {
		f->cbflag = 'n';
	} else if (sasl_cur_take(&c, 'y')) {
		f->cbflag = 'y';
	} else if (sasl_cur_take(&c, 'p') && sasl_cur_take(&c, '=')) {
		f->cbflag = 'p';
		f->cbname_len = sasl_cur_field(&c, &f->cbname);
		if (!sasl_cbname_ok(f->cbname, f->cbname_len))
			return -EBADMSG;
	} else {
		return -EBADMSG;
	}
	if (!sasl_cur_take(&c, ','))
		return -EBADMSG;
	if (sasl_cur_take(&c, 'a')) {
		if (!sasl_cur_take(&c, '='))
			return -EBADMSG;
		f->authzid_len = sasl_cur_field(&c, &f->authzid);
		if (f->authzid_len == 0)
			return -EBADMSG;
	}
	if (!sasl_cur_take(&c, ','))
		return -EBADMSG;
	if (!sasl_cur_take(&c, 'n') || !sasl_cur_take(&c, '='))
		return -EBADMSG;
	f->user_len = sasl_cur_field(&c, &f->user);
	if (f->user_len == 0 || !sasl_cur_take(&c, ','))
		return -EBADMSG;
	if (!sasl_cur_take(&c, 'r') || !sasl_cur_take(&c, '='))
		return -EBADMSG;
	n = sasl_cur_field(&c, &nonce);
	if (!sasl_nonce_ok(nonce, n))
		return -EBADMSG;
	while (sasl_cur_take(&c, ',')) {
		if (c.p >= c.end || !sasl_is_alpha(*c.p) || *c.p == 'm')
			return -EBADMSG;
		c.p++;
		if (!sasl_cur_take(&c, '=') || sasl_cur_field(&c, &val) == 0)
			return -EBADMSG;
	}
	return c.p == c.end ? 0 : -EBADMSG;
}

/*
 * Decodes a saslname: "=2C" is ',', "=3D" is '=', any other '=' is an
 * error (RFC 5802 section 5.1). Writes a NUL-terminated result into out.
 * Returns the decoded length, -EBADMSG, or -ENAMETOOLONG when it does not
 * fit in out_size.
 */
static long sasl_saslname_decode(const char *s, size_t len, char *out, size_t out_size)
{
	size_t o = 0;

	for (size_t i = 0; i < len; i++) {
		char ch = s[i];

		if (ch == '=') {
			if (len - i >= 3 && s[i + 1] == '2' && s[i + 2] == 'C')
				ch = ',';
			else if (len - i >= 3 && s[i + 1] == '3' && s[i + 2] == 'D')
				ch = '=';
			else
				return -EBADMSG;
			i += 2;
		}
		if (o + 1 >= out_size)
			return -ENAMETOOLONG;
		out[o++] = ch;
	}
	if (o == 0)
		return -EBADMSG;
	out[o] = '\0';
	return (long)o;
}

/*
 * Printable ASCII is unchanged by SASLprep (nothing in U+0020..U+007E is
 * mapped or prohibited), so the common case skips libidn.
 */
static bool sasl_is_printable_ascii(const char *s, size_t len)
{
	for (size_t i = 0; i < len; i++) {
		if ((unsigned char)s[i] < 0x20 || (unsigned char)s[i] > 0x7e)
			return false;
	}
	return true;
}

/*
 * A username as the account is stored: SASLprep (RFC 4013, as a query:
 * unassigned code points allowed), then nodeprep via jid_prep_local().
 * in[0..len) holds no NUL. 0 or -EINVAL.
 */
static int sasl_prep_username(const char *in, size_t len, char *out, size_t out_size)
{
	char buf[SASL_USERNAME_MAX + 1];
	char *prep = NULL;
	int rc;

	if (len == 0 || len > SASL_USERNAME_MAX)
		return -EINVAL;
	if (sasl_is_printable_ascii(in, len))
		return jid_prep_local(out, out_size, in, len) < 0 ? -EINVAL : 0;
	memcpy(buf, in, len);
	buf[len] = '\0';
	if (stringprep_profile(buf, &prep, "SASLprep", 0) != STRINGPREP_OK || !prep)
		return -EINVAL;
	rc = jid_prep_local(out, out_size, prep, strlen(prep));
	free(prep);
	return rc < 0 ? -EINVAL : 0;
}

/*
 * An authorization identity is acceptable when it names the user itself:
 * its bare JID on this domain, or its bare localpart. Returns true if so.
 */
static bool sasl_authzid_ok(const struct sasl_exchange *x, const char *authz, size_t len)
{
	char local[SASL_USERNAME_MAX + 1];
	struct jid j;

	if (!memchr(authz, '@', len)) {
		return sasl_prep_username(authz, len, local, sizeof(local)) == 0 &&
		       strcmp(local, x->username) == 0;
	}
	if (jid_parse(&j, authz, len) < 0 || j.local_len == 0 || j.res_len > 0)
		return false;
	return j.local_len == strlen(x->username) &&
	       memcmp(j.buf, x->username, j.local_len) == 0 &&
	       j.domain_len == strlen(x->srv->domain) &&
	       memcmp(j.buf + j.domain_off, x->srv->domain, j.domain_len) == 0;
}

/*
 * Checks the gs2 channel-binding flag against the offer (RFC 5802 section
 * 6): -PLUS demands "p" with a type this channel has; without -PLUS, "p"
 * is refused, and "y" (the client could bind but saw no -PLUS) means the
 * offer was stripped on the way when this channel did offer -PLUS.
 */
static const char *sasl_check_cbflag(const struct sasl_exchange *x,
				     const struct sasl_scram_first *f)
{
	if (x->mech->plus) {
		if (f->cbflag != 'p')
			return "not-authorized";
		if (f->cbname_len == 12 && memcmp(f->cbname, "tls-exporter", 12) == 0 &&
		    x->ch.exporter_len > 0)
			return NULL;
		if (f->cbname_len == 10 && memcmp(f->cbname, "tls-unique", 10) == 0 &&
		    x->ch.unique_len > 0)
			return NULL;
		return "not-authorized";
	}
	if (f->cbflag == 'p')
		return "not-authorized";
	if (f->cbflag == 'y' && sasl_channel_has_cb(&x->ch))
		return "not-authorized";
	return NULL;
}

/* Phase one for SCRAM. NULL, or the condition to fail with. */
static const char *sasl_begin_scram(struct sasl_exchange *x)
{
	struct sasl_scram_first f;
	char raw[SASL_USERNAME_MAX + 1];
	char authz[JID_MAX];
	const char *cond;
	long n;

	if (sasl_scram_parse_first(x->initial, x->initial_len, &f) < 0)
		return "malformed-request";
	n = sasl_saslname_decode(f.user, f.user_len, raw, sizeof(raw));
	if (n == -EBADMSG)
		return "malformed-request";
	if (n < 0 || sasl_prep_username(raw, (size_t)n, x->username, sizeof(x->username)) < 0)
		return "not-authorized";
	cond = sasl_check_cbflag(x, &f);
	if (cond)
		return cond;
	if (f.authzid) {
		n = sasl_saslname_decode(f.authzid, f.authzid_len, authz, sizeof(authz));
		if (n == -EBADMSG)
			return "malformed-request";
		if (n < 0 || !sasl_authzid_ok(x, authz, (size_t)n))
			return "invalid-authzid";
	}
	return NULL;
}

/*
 * Phase one for PLAIN (RFC 4616): [authzid] NUL authcid NUL passwd, no
 * other NUL, authcid and passwd not empty. NULL, or the condition.
 */
static const char *sasl_begin_plain(struct sasl_exchange *x)
{
	const char *msg = x->initial, *end = x->initial + x->initial_len;
	const char *nul1, *nul2;
	size_t authz_len, authc_len, pw_len;

	nul1 = memchr(msg, '\0', x->initial_len);
	if (!nul1)
		return "malformed-request";
	nul2 = memchr(nul1 + 1, '\0', (size_t)(end - nul1 - 1));
	if (!nul2 || memchr(nul2 + 1, '\0', (size_t)(end - nul2 - 1)))
		return "malformed-request";
	authz_len = (size_t)(nul1 - msg);
	authc_len = (size_t)(nul2 - nul1 - 1);
	pw_len = (size_t)(end - nul2 - 1);
	if (authc_len == 0 || pw_len == 0)
		return "malformed-request";
	if (sasl_prep_username(nul1 + 1, authc_len, x->username, sizeof(x->username)) < 0)
		return "not-authorized";
	/* No stored password is longer, so this one cannot match. */
	if (pw_len > SCRAM_PASSWORD_MAX)
		return "not-authorized";
	if (authz_len > 0 && !sasl_authzid_ok(x, msg, authz_len))
		return "invalid-authzid";
	/* The password is the last field: initial[] ends with a NUL. */
	x->password = nul2 + 1;
	return NULL;
}

/* ---- exchanges ---- */

/* Frees an exchange with its secrets; NULL is fine. */
static void sasl_exchange_free(struct sasl_exchange *x);

/*
 * Everything decided here is decided before the account lookup, from the
 * message and the channel alone, so no answer depends on whether the
 * account exists. GNU SASL's session is started here as well, which draws
 * the server nonce; the callbacks stay silent until sasl_set_account().
 */
int sasl_begin(struct sasl_server *srv, const char *mech, const struct sasl_channel *ch,
	       const char *initial, size_t initial_len, struct sasl_exchange **out,
	       char *username, size_t username_size, const char **condition)
{
	const struct sasl_mech *m = sasl_mech_find(mech);
	struct sasl_exchange *x;
	const char *cond;
	int rc;

	*out = NULL;
	*condition = NULL;
	if (username_size > 0)
		username[0] = '\0';
	if (!m || (m->plus && !sasl_channel_has_cb(ch))) {
		*condition = "invalid-mechanism";
		return -EINVAL;
	}
	if (!initial) {
		*condition = "malformed-request";
		return -EAGAIN;
	}
	if (initial_len > SASL_MESSAGE_MAX) {
		*condition = "malformed-request";
		return -EINVAL;
	}
	x = calloc(1, sizeof(*x) + initial_len + 1);
	if (!x) {
		*condition = "temporary-auth-failure";
		return -EINVAL;
	}
	x->srv = srv;
	x->mech = m;
	x->state = SASL_ST_LOOKUP;
	x->ch = *ch;
	/* Binding data is only meaningful on TLS, and never beyond its array. */
	if (!x->ch.tls)
		x->ch.exporter_len = x->ch.unique_len = 0;
	if (x->ch.exporter_len > sizeof(x->ch.exporter))
		x->ch.exporter_len = 0;
	if (x->ch.unique_len > sizeof(x->ch.unique))
		x->ch.unique_len = 0;
	memcpy(x->initial, initial, initial_len);
	x->initial_len = initial_len;

	cond = m->scram ? sasl_begin_scram(x) : sasl_begin_plain(x);
	if (cond)
		goto err_free;
	if (strlen(x->username) >= username_size) {
		cond = "not-authorized";
		goto err_free;
	}
	rc = gsasl_server_start(srv->ctx, m->name, &x->gs);
	if (rc != GSASL_OK) {
		log_error("sasl.gsasl_start", "mech=%s rc=%s", m->name, gsasl_strerror_name(rc));
		x->gs = NULL;
		cond = sasl_condition_from_gsasl(rc);
		goto err_free;
	}
	gsasl_session_hook_set(x->gs, x);
	memcpy(username, x->username, strlen(x->username) + 1);
	*out = x;
	return 0;

err_free:
	sasl_exchange_free(x);
	*condition = cond;
	return -EINVAL;
}

bool sasl_needs_lookup(const struct sasl_exchange *x)
{
	return x->state == SASL_ST_LOOKUP;
}

const char *sasl_plain_password(const struct sasl_exchange *x)
{
	return x->mech->scram ? NULL : x->password;
}

void sasl_set_account(struct sasl_exchange *x, const struct scram_creds *creds,
		      bool plain_ok)
{
	if (x->state != SASL_ST_LOOKUP) {
		log_error("sasl.set_account_twice", "mech=%s", x->mech->name);
		return;
	}
	if (creds) {
		x->creds = *creds;
		x->creds_bad = creds->iterations < 1 ||
			       creds->iterations > SCRAM_ITERATIONS_MAX;
		x->plain_ok = plain_ok;
	} else {
		/*
		 * The decoy gives the same salt and count on every attempt for
		 * this name, like a real account, and keys nobody can match.
		 */
		scram_decoy_creds(x->srv->decoy_secret, x->username, &x->creds);
		x->decoy = true;
		x->plain_ok = false;
	}
	x->state = SASL_ST_FIRST;
}

/* Marks the exchange failed; every later step repeats the condition. */
static enum sasl_result sasl_fail(struct sasl_exchange *x, const char *cond,
				  const char *why, const char **condition)
{
	char user[96];

	x->state = SASL_ST_FAILED;
	x->fail_condition = cond;
	*condition = cond;
	log_debug("sasl.failure", "mech=%s user=%s condition=%s why=%s", x->mech->name,
		  log_sanitize(user, sizeof(user), x->username, strlen(x->username)),
		  cond, why);
	return SASL_FAILURE;
}

/*
 * The state decides the input: FIRST replays the initial response that
 * sasl_begin() checked (so GNU SASL sees exactly those bytes), FINAL takes
 * the caller's. GNU SASL's answer is then accepted only where it fits the
 * mechanism: NEEDS_MORE after SCRAM's first message, OK after SCRAM's
 * final message or PLAIN's only one, and never OK on decoy credentials.
 */
enum sasl_result sasl_step(struct sasl_exchange *x, const char *in, size_t in_len,
			   char **out, size_t *out_len, const char **condition)
{
	enum sasl_state was = x->state;
	char *o = NULL;
	size_t olen = 0;
	int rc;

	*out = NULL;
	*out_len = 0;
	*condition = NULL;
	switch (x->state) {
	case SASL_ST_LOOKUP:
		log_error("sasl.step_before_account", "mech=%s", x->mech->name);
		return sasl_fail(x, "temporary-auth-failure", "no account yet", condition);
	case SASL_ST_FIRST:
		if (x->creds_bad)
			return sasl_fail(x, "temporary-auth-failure", "bad stored iteration count",
					 condition);
		in = x->initial;
		in_len = x->initial_len;
		break;
	case SASL_ST_FINAL:
		if (in_len > SASL_MESSAGE_MAX || (in_len > 0 && !in) ||
		    (in_len > 0 && memchr(in, '\0', in_len)))
			return sasl_fail(x, "malformed-request", "bad client-final", condition);
		break;
	case SASL_ST_DONE:
		return sasl_fail(x, "malformed-request", "step after success", condition);
	case SASL_ST_FAILED:
		*condition = x->fail_condition;
		return SASL_FAILURE;
	}

	rc = gsasl_step(x->gs, in ? in : "", in_len, &o, &olen);
	if (rc == GSASL_NEEDS_MORE && x->mech->scram && was == SASL_ST_FIRST) {
		x->state = SASL_ST_FINAL;
		*out = o;
		*out_len = olen;
		return SASL_CONTINUE;
	}
	if (rc == GSASL_OK && !x->decoy &&
	    (!x->mech->scram || was == SASL_ST_FINAL)) {
		x->state = SASL_ST_DONE;
		if (olen == 0) {
			free(o);
			o = NULL;
		}
		*out = o;
		*out_len = olen;
		return SASL_SUCCESS;
	}
	free(o);
	/* A decoy that verified: impossible short of knowing the decoy secret. */
	if (rc == GSASL_OK && x->decoy)
		return sasl_fail(x, "not-authorized", "decoy", condition);
	/* A mechanism that wants another round than it has. */
	if (rc == GSASL_OK || rc == GSASL_NEEDS_MORE)
		return sasl_fail(x, "malformed-request", "unexpected round", condition);
	/*
	 * Decoy or not, the same input fails the same way here: GNU SASL ran
	 * identical code on credentials of identical shape, so the condition
	 * tells nothing about the account.
	 */
	return sasl_fail(x, sasl_condition_from_gsasl(rc), gsasl_strerror_name(rc), condition);
}

const char *sasl_authenticated_user(const struct sasl_exchange *x)
{
	return x->state == SASL_ST_DONE ? x->username : NULL;
}

const char *sasl_mech_name(const struct sasl_exchange *x)
{
	return x->mech->name;
}

/*
 * GNU SASL frees property strings without clearing them. Clear the live
 * copies of secrets just before gsasl_finish() frees the session; nothing
 * reads them after this point.
 */
static void sasl_wipe_property(Gsasl_session *gs, Gsasl_property prop)
{
	char *p = (char *)gsasl_property_fast(gs, prop);

	if (p)
		OPENSSL_cleanse(p, strlen(p));
}

static void sasl_exchange_free(struct sasl_exchange *x)
{
	if (!x)
		return;
	if (x->gs) {
		sasl_wipe_property(x->gs, GSASL_SCRAM_STOREDKEY);
		sasl_wipe_property(x->gs, GSASL_SCRAM_SERVERKEY);
		sasl_wipe_property(x->gs, GSASL_SCRAM_SALTED_PASSWORD);
		sasl_wipe_property(x->gs, GSASL_PASSWORD);
		gsasl_finish(x->gs);
	}
	scram_creds_wipe(&x->creds);
	OPENSSL_cleanse(x->initial, x->initial_len);
	free(x);
}

void sasl_end(struct sasl_exchange *x)
{
	sasl_exchange_free(x);
}

/* ---- GNU SASL callback ---- */

/* Sets a property to the base64 of data[0..len); the text is wiped. */
static int sasl_set_b64_property(Gsasl_session *gs, Gsasl_property prop,
				 const void *data, size_t len)
{
	char buf[SASL_B64_PROP_MAX];
	int rc;

	if (len == 0 || (len + 2) / 3 * 4 + 1 > sizeof(buf))
		return GSASL_NO_CALLBACK;
	sasl_b64_encode_to(buf, data, len);
	rc = gsasl_property_set(gs, prop, buf);
	OPENSSL_cleanse(buf, sizeof(buf));
	return rc;
}

/*
 * PLAIN: the password was checked off the loop (plain_ok); this only
 * confirms that the identity GNU SASL parsed is the one that was looked
 * up.
 */
static int sasl_validate_plain(struct sasl_exchange *x, Gsasl_session *gs)
{
	const char *authid = gsasl_property_fast(gs, GSASL_AUTHID);
	char user[SASL_USERNAME_MAX + 1];

	if (!x->plain_ok || x->decoy || !authid)
		return GSASL_AUTHENTICATION_ERROR;
	if (sasl_prep_username(authid, strlen(authid), user, sizeof(user)) < 0 ||
	    strcmp(user, x->username) != 0)
		return GSASL_AUTHENTICATION_ERROR;
	return GSASL_OK;
}

/* Answers GNU SASL from the exchange, never from storage. */
static int sasl_gsasl_callback(Gsasl *ctx, Gsasl_session *gs, Gsasl_property prop)
{
	struct sasl_exchange *x = gs ? gsasl_session_hook_get(gs) : NULL;
	bool sha1;
	char iter[16];

	(void)ctx;
	if (!x || x->state == SASL_ST_LOOKUP)
		return GSASL_NO_CALLBACK;
	sha1 = x->mech->hash == SCRAM_HASH_SHA1;
	switch (prop) {
	case GSASL_SCRAM_ITER:
		snprintf(iter, sizeof(iter), "%" PRIu32, x->creds.iterations);
		return gsasl_property_set(gs, prop, iter);
	case GSASL_SCRAM_SALT:
		return sasl_set_b64_property(gs, prop, x->creds.salt, SCRAM_SALT_LEN);
	case GSASL_SCRAM_STOREDKEY:
		return sha1 ? sasl_set_b64_property(gs, prop, x->creds.sha1_stored_key,
						    SCRAM_SHA1_LEN)
			    : sasl_set_b64_property(gs, prop, x->creds.sha256_stored_key,
						    SCRAM_SHA256_LEN);
	case GSASL_SCRAM_SERVERKEY:
		return sha1 ? sasl_set_b64_property(gs, prop, x->creds.sha1_server_key,
						    SCRAM_SHA1_LEN)
			    : sasl_set_b64_property(gs, prop, x->creds.sha256_server_key,
						    SCRAM_SHA256_LEN);
	case GSASL_CB_TLS_EXPORTER:
		return sasl_set_b64_property(gs, prop, x->ch.exporter, x->ch.exporter_len);
	case GSASL_CB_TLS_UNIQUE:
		return sasl_set_b64_property(gs, prop, x->ch.unique, x->ch.unique_len);
	case GSASL_VALIDATE_SIMPLE:
		return sasl_validate_plain(x, gs);
	default:
		/* Never a password: GNU SASL must not fall back to one. */
		return GSASL_NO_CALLBACK;
	}
}

/* ---- server ---- */

struct sasl_server *sasl_server_new(const char *domain, const uint8_t decoy_secret[32])
{
	struct sasl_server *srv;
	int rc;

	srv = calloc(1, sizeof(*srv));
	if (!srv)
		return NULL;
	if (!domain || jid_prep_domain(srv->domain, sizeof(srv->domain), domain,
				       strlen(domain)) < 0) {
		errno = EINVAL;
		goto err_free;
	}
	if (decoy_secret) {
		memcpy(srv->decoy_secret, decoy_secret, sizeof(srv->decoy_secret));
	} else if (RAND_bytes(srv->decoy_secret, sizeof(srv->decoy_secret)) != 1) {
		errno = EIO;
		goto err_free;
	}
	/* tls-exporter needs 2.1 (GSASL_CB_TLS_EXPORTER). */
	if (!gsasl_check_version("2.1.0")) {
		log_error("sasl.gsasl_version", "have=%s need=2.1.0",
			  gsasl_check_version(NULL));
		errno = EIO;
		goto err_free;
	}
	rc = gsasl_init(&srv->ctx);
	if (rc != GSASL_OK) {
		log_error("sasl.gsasl_init", "rc=%s", gsasl_strerror_name(rc));
		errno = rc == GSASL_MALLOC_ERROR ? ENOMEM : EIO;
		goto err_free;
	}
	for (size_t i = 0; i < SASL_MECH_COUNT; i++) {
		if (!gsasl_server_support_p(srv->ctx, sasl_mechs[i].name)) {
			log_error("sasl.gsasl_mech_missing", "mech=%s", sasl_mechs[i].name);
			errno = EIO;
			goto err_done;
		}
	}
	gsasl_callback_set(srv->ctx, sasl_gsasl_callback);
	return srv;

err_done:
	gsasl_done(srv->ctx);
err_free:
	OPENSSL_cleanse(srv->decoy_secret, sizeof(srv->decoy_secret));
	free(srv);
	return NULL;
}

void sasl_server_free(struct sasl_server *srv)
{
	if (!srv)
		return;
	gsasl_done(srv->ctx);
	OPENSSL_cleanse(srv->decoy_secret, sizeof(srv->decoy_secret));
	free(srv);
}
