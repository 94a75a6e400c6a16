/* SPDX-License-Identifier: MIT */
/*
 * XEP-0324 tokens: challenges and proofs (see prov_tokens.h). Two small
 * tables, scanned linearly: challenges are few and short-lived, and
 * proofs are looked up only for requests that carry a token.
 */
#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/rand.h>
#include <openssl/rsa.h>
#include <openssl/x509.h>

#include "prov_tokens.h"

struct prov_challenge {
	char *requester;		/* bare JID; NULL: free slot */
	uint32_t seqnr;
	int64_t expires;
	unsigned char secret[PROV_TOKEN_SECRET];
	char token[PROV_TOKEN_LEN + 1];	/* what a right answer earns */
};

struct prov_proof {
	char token[PROV_TOKEN_LEN + 1];
	char *jid;			/* bare; NULL: free slot */
};

/* A set of proofs: a ring of PROV_TOKEN_PROOFS_MAX, allocated on first use. */
struct prov_proofs {
	struct prov_proof *ring;
	size_t next;			/* the slot the next proof takes */
};

static struct {
	struct prov_challenge pending[PROV_TOKEN_PENDING_MAX];
	struct prov_proofs sets[PROV_TOKEN_SETS];	/* 0: the service's own */
	uint32_t seqnr;
} tok;

static void prov_challenge_clear(struct prov_challenge *c)
{
	free(c->requester);
	OPENSSL_cleanse(c, sizeof(*c));
}

void prov_tokens_reset(void)
{
	for (size_t i = 0; i < PROV_TOKEN_PENDING_MAX; i++)
		prov_challenge_clear(&tok.pending[i]);
	for (size_t k = 0; k < PROV_TOKEN_SETS; k++) {
		for (size_t i = 0; tok.sets[k].ring && i < PROV_TOKEN_PROOFS_MAX; i++)
			free(tok.sets[k].ring[i].jid);
		free(tok.sets[k].ring);
	}
	memset(&tok, 0, sizeof(tok));
}

/*
 * A slot for a new challenge: a free or expired one, else the one
 * closest to expiry (a flood of getToken ends challenges early rather
 * than growing without bound).
 */
static struct prov_challenge *prov_challenge_slot(int64_t now)
{
	struct prov_challenge *best = &tok.pending[0];

	for (size_t i = 0; i < PROV_TOKEN_PENDING_MAX; i++) {
		struct prov_challenge *c = &tok.pending[i];

		if (!c->requester || c->expires < now)
			return c;
		if (c->expires < best->expires)
			best = c;
	}
	return best;
}

/* The certificate's SHA-256 in lower-case hex. */
static void prov_token_of(X509 *x, char token[PROV_TOKEN_LEN + 1])
{
	unsigned char md[32];
	unsigned int n = 0;

	if (!X509_digest(x, EVP_sha256(), md, &n) || n != sizeof(md)) {
		token[0] = '\0';
		return;
	}
	for (size_t i = 0; i < sizeof(md); i++)
		snprintf(token + 2 * i, 3, "%02x", md[i]);
}

int prov_token_challenge(const char *requester, const unsigned char *der, size_t len,
			 int64_t now, uint32_t *seqnr, unsigned char **ct, size_t *ct_len)
{
	const unsigned char *p = der;
	struct prov_challenge *c = NULL;
	EVP_PKEY_CTX *ctx = NULL;
	EVP_PKEY *key;
	X509 *x = NULL;
	size_t n = 0;
	int ret = -EINVAL;

	*ct = NULL;
	if (len == 0 || len > PROV_TOKEN_CERT_MAX)
		return -EINVAL;
	x = d2i_X509(NULL, &p, (long)len);
	if (!x || p != der + len)
		goto out;
	/* Only a key that encrypts can be challenged this way. */
	key = X509_get0_pubkey(x);
	if (!key || EVP_PKEY_get_base_id(key) != EVP_PKEY_RSA)
		goto out;
	c = prov_challenge_slot(now);
	prov_challenge_clear(c);
	ret = -EIO;
	if (RAND_bytes(c->secret, sizeof(c->secret)) != 1)
		goto out;
	ctx = EVP_PKEY_CTX_new_from_pkey(NULL, key, NULL);
	if (!ctx || EVP_PKEY_encrypt_init(ctx) <= 0 ||
	    EVP_PKEY_CTX_set_rsa_padding(ctx, RSA_PKCS1_PADDING) <= 0 ||
	    EVP_PKEY_encrypt(ctx, NULL, &n, c->secret, sizeof(c->secret)) <= 0)
		goto out;
	ret = -ENOMEM;
	*ct = malloc(n);
	c->requester = strdup(requester);
	if (!*ct || !c->requester)
		goto out;
	ret = -EIO;
	if (EVP_PKEY_encrypt(ctx, *ct, &n, c->secret, sizeof(c->secret)) <= 0)
		goto out;
	prov_token_of(x, c->token);
	if (!c->token[0])
		goto out;
	c->seqnr = ++tok.seqnr;
	c->expires = now + PROV_TOKEN_TTL;
	*seqnr = c->seqnr;
	*ct_len = n;
	ret = 0;
out:
	if (ret < 0) {
		free(*ct);
		*ct = NULL;
		if (c)
			prov_challenge_clear(c);
	}
	EVP_PKEY_CTX_free(ctx);
	X509_free(x);
	return ret;
}

int prov_token_proof_copy(unsigned set, const char *token, const char *jid)
{
	struct prov_proofs *ps;
	struct prov_proof *slot;

	if (set >= PROV_TOKEN_SETS || strlen(token) != PROV_TOKEN_LEN)
		return -EINVAL;
	ps = &tok.sets[set];
	if (prov_token_held_in(set, token, jid))
		return 0;
	if (!ps->ring) {
		ps->ring = calloc(PROV_TOKEN_PROOFS_MAX, sizeof(*ps->ring));
		if (!ps->ring)
			return -ENOMEM;
	}
	slot = &ps->ring[ps->next];
	free(slot->jid);
	slot->jid = strdup(jid);
	if (!slot->jid)
		return -ENOMEM;
	memcpy(slot->token, token, sizeof(slot->token));
	ps->next = (ps->next + 1) % PROV_TOKEN_PROOFS_MAX;
	return 0;
}

int prov_token_respond(const char *requester, uint32_t seqnr, const unsigned char *resp,
		       size_t len, int64_t now, char token[PROV_TOKEN_LEN + 1])
{
	for (size_t i = 0; i < PROV_TOKEN_PENDING_MAX; i++) {
		struct prov_challenge *c = &tok.pending[i];
		bool right;
		int ret;

		if (!c->requester || c->seqnr != seqnr || strcmp(c->requester, requester) != 0)
			continue;
		if (c->expires < now) {
			prov_challenge_clear(c);
			return -ENOENT;
		}
		right = len == sizeof(c->secret) && CRYPTO_memcmp(resp, c->secret, len) == 0;
		if (right)
			memcpy(token, c->token, PROV_TOKEN_LEN + 1);
		/* One answer per challenge: guessing needs a new challenge each time. */
		prov_challenge_clear(c);
		if (!right)
			return -EACCES;
		ret = prov_token_proof_copy(0, token, requester);
		return ret;
	}
	return -ENOENT;
}

bool prov_token_held_in(unsigned set, const char *token, const char *jid)
{
	const struct prov_proof *ring = set < PROV_TOKEN_SETS ? tok.sets[set].ring : NULL;

	for (size_t i = 0; token && ring && i < PROV_TOKEN_PROOFS_MAX; i++)
		if (ring[i].jid && strcmp(ring[i].token, token) == 0 &&
		    strcmp(ring[i].jid, jid) == 0)
			return true;
	return false;
}

bool prov_token_held(const char *token, const char *jid)
{
	return prov_token_held_in(0, token, jid);
}
