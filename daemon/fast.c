/* SPDX-License-Identifier: MIT */
/*
 * FAST tokens and the HT mechanisms (see fast.h). The protocol glue is
 * in sasl2.c; this file holds the pure parts (mechanism table, message
 * parsing, proofs, tokens) and the storage-thread logic of a login.
 */
#include <errno.h>
#include <stdio.h>
#include <string.h>
#include <time.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/rand.h>
#include <openssl/sha.h>

#include "fast.h"
#include "log.h"

/* Offered order: channel binding first (XEP-0484: clients MUST prefer it). */
static const struct fast_mech fast_mechs[] = {
	{ "HT-SHA-256-EXPR", FAST_CB_EXPR },
	{ "HT-SHA-256-ENDP", FAST_CB_ENDP },
	{ "HT-SHA-256-NONE", FAST_CB_NONE },
};

#define FAST_MECH_COUNT (sizeof(fast_mechs) / sizeof(fast_mechs[0]))

const struct fast_mech *fast_mech_find(const char *name)
{
	for (size_t i = 0; name && i < FAST_MECH_COUNT; i++) {
		if (strcmp(fast_mechs[i].name, name) == 0)
			return &fast_mechs[i];
	}
	return NULL;
}

size_t fast_offer(bool tls, bool exporter, const char **names, size_t cap)
{
	size_t n = 0;

	for (size_t i = 0; i < FAST_MECH_COUNT && n < cap; i++) {
		if (fast_mechs[i].cb == FAST_CB_EXPR && !(tls && exporter))
			continue;
		if (fast_mechs[i].cb == FAST_CB_ENDP && !tls)
			continue;
		names[n++] = fast_mechs[i].name;
	}
	return n;
}

int fast_ht_parse(const char *msg, size_t len, char *user, size_t user_size,
		  const uint8_t **mac, size_t *mac_len)
{
	const char *nul = msg ? memchr(msg, '\0', len) : NULL;
	size_t ulen;

	if (!nul)
		return -EINVAL;
	ulen = (size_t)(nul - msg);
	if (ulen == 0 || ulen > FAST_AUTHCID_MAX || ulen >= user_size)
		return -EINVAL;
	/* The proof is the rest: at least one byte (the draft's 1*OCTET). */
	if (len - ulen - 1 == 0)
		return -EINVAL;
	memcpy(user, msg, ulen);
	user[ulen] = '\0';
	*mac = (const uint8_t *)nul + 1;
	*mac_len = len - ulen - 1;
	return 0;
}

void fast_ht_hmac(const uint8_t key[FAST_KEY_LEN], const char *label, const uint8_t *cb,
		  size_t cb_len, uint8_t out[FAST_KEY_LEN])
{
	unsigned char msg[16 + FAST_CB_MAX];
	size_t llen = strlen(label);
	unsigned int olen = FAST_KEY_LEN;

	if (llen > 16 || cb_len > FAST_CB_MAX) {
		memset(out, 0, FAST_KEY_LEN);	/* never matches a real proof */
		return;
	}
	memcpy(msg, label, llen);
	if (cb_len)
		memcpy(msg + llen, cb, cb_len);
	if (!HMAC(EVP_sha256(), key, FAST_KEY_LEN, msg, llen + cb_len, out, &olen))
		memset(out, 0, FAST_KEY_LEN);
	OPENSSL_cleanse(msg, sizeof(msg));
}

void fast_token_key(const char *token, size_t len, uint8_t key[FAST_KEY_LEN])
{
	SHA256((const unsigned char *)token, len, key);
}

int fast_token_new(char token[FAST_TOKEN_LEN + 1], uint8_t key[FAST_KEY_LEN])
{
	static const char b64url[] =
		"ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789-_";
	unsigned char r[FAST_TOKEN_BYTES];
	size_t o = 0;

	if (RAND_bytes(r, sizeof(r)) != 1)
		return -EIO;
	/* 54 bytes = 18 groups of 3: no padding. */
	for (size_t i = 0; i < sizeof(r); i += 3) {
		uint32_t v = (uint32_t)r[i] << 16 | (uint32_t)r[i + 1] << 8 | r[i + 2];

		token[o++] = b64url[v >> 18];
		token[o++] = b64url[(v >> 12) & 63];
		token[o++] = b64url[(v >> 6) & 63];
		token[o++] = b64url[v & 63];
	}
	token[o] = '\0';
	OPENSSL_cleanse(r, sizeof(r));
	fast_token_key(token, o, key);
	return 0;
}

void fast_datetime(int64_t t, char *out, size_t size)
{
	time_t tt = (time_t)t;
	struct tm tm;

	if (!gmtime_r(&tt, &tm) || !strftime(out, size, "%Y-%m-%dT%H:%M:%SZ", &tm))
		snprintf(out, size, "1970-01-01T00:00:00Z");
}

/* ---- Storage-thread logic ---- */

int fast_issue_sync(struct storage *st, const char *user, const char *client, const char *mech,
		    int64_t now, uint32_t lifetime, char token[FAST_TOKEN_LEN + 1],
		    int64_t *expires)
{
	struct fast_token_row row = { .is_new = true, .issued_at = now };
	int ret;

	if (!fast_mech_find(mech))
		return -EINVAL;
	snprintf(row.mech, sizeof(row.mech), "%s", mech);
	if (fast_token_new(token, row.key) < 0)
		return -EIO;
	row.expires_at = now + lifetime;
	/* Replacing the slot ends an earlier token that was never used (section 3.4). */
	ret = fast_db_put(st, user, client, &row);
	OPENSSL_cleanse(row.key, sizeof(row.key));
	if (ret < 0) {
		OPENSSL_cleanse(token, FAST_TOKEN_LEN + 1);
		return ret;
	}
	*expires = row.expires_at;
	return 0;
}

/* The slot whose token proves fl's message, or -1. Constant time per row. */
static int fast_match(const struct fast_login *fl, const struct fast_token_row *rows, size_t n)
{
	uint8_t expect[FAST_KEY_LEN];
	int found = -1;

	for (size_t i = 0; i < n; i++) {
		/* A token works only with the mechanism it was issued for. */
		if (strcmp(rows[i].mech, fl->mech) != 0)
			continue;
		fast_ht_hmac(rows[i].key, "Initiator", fl->cb, fl->cb_len, expect);
		if (CRYPTO_memcmp(expect, fl->mac, FAST_KEY_LEN) == 0 && found < 0)
			found = (int)i;
	}
	OPENSSL_cleanse(expect, sizeof(expect));
	return found;
}

/* What a successful login changes: slots, counter, invalidation. 0 or -errno. */
static int fast_login_apply(struct storage *st, struct fast_login *fl,
			    struct fast_token_row *used)
{
	int ret;

	if (fl->invalidate)
		return fast_db_delete(st, fl->user, fl->client, -1);
	if (fl->has_count)
		used->counter = fl->count;
	if (used->is_new) {
		/* Section 5.1: the new token is in use; the one before it ends. */
		used->is_new = false;
		ret = fast_db_put(st, fl->user, fl->client, used);
		if (ret == 0)
			ret = fast_db_delete(st, fl->user, fl->client, 1);
		return ret;
	}
	if (fl->has_count)
		return fast_db_set_counter(st, fl->user, fl->client, false, used->counter);
	return 0;
}

int fast_login_sync(struct storage *st, struct fast_login *fl)
{
	struct fast_token_row rows[2];
	const char *mech = NULL;
	size_t n = 0;
	int m, ret;

	fl->condition = "not-authorized";
	fl->issued = false;
	ret = fast_db_get(st, fl->user, fl->client, rows, &n);
	if (ret < 0)
		goto out;
	m = fast_match(fl, rows, n);
	if (m < 0) {
		fl->why = n ? "wrong proof or mechanism" : "no token";
		goto out;
	}
	if (rows[m].expires_at <= fl->now) {
		fl->condition = "credentials-expired";
		fl->why = "expired";
		ret = fast_db_delete(st, fl->user, fl->client, rows[m].is_new);
		goto out;
	}
	if (fl->has_count && (int64_t)fl->count <= rows[m].counter) {
		fl->why = "count not above the last one (replay)";
		goto out;
	}
	ret = fast_login_apply(st, fl, &rows[m]);
	if (ret < 0)
		goto out;
	fast_ht_hmac(rows[m].key, "Responder", fl->cb, fl->cb_len, fl->responder);
	fl->condition = NULL;
	fl->why = "ok";
	/* A requested token wins; else an old one gets its successor (section 3.4). */
	if (fl->request_mech[0] && fast_mech_find(fl->request_mech))
		mech = fl->request_mech;
	else if (!fl->invalidate && fl->now - rows[m].issued_at >= (int64_t)fl->rotate_after)
		mech = rows[m].mech;
	if (mech) {
		ret = fast_issue_sync(st, fl->user, fl->client, mech, fl->now, fl->lifetime,
				      fl->token, &fl->expires);
		fl->issued = ret == 0;
	}
out:
	OPENSSL_cleanse(rows, sizeof(rows));
	return ret;
}
