/* SPDX-License-Identifier: MIT */
/*
 * XEP-0324 tokens (section "Tokens and X.509 Certificates"): a party
 * proves that it holds the private key of an X.509 certificate
 * (getToken, a challenge encrypted to the certificate's public key,
 * getTokenChallengeResponse) and gets a token naming that certificate.
 *
 * Rules may name tokens (fromService, fromDevice, fromUser ranges), and
 * requests carry them as attributes (serviceToken, deviceToken,
 * userToken) that anybody can write. So a token counts in a decision
 * only for a bare JID that proved it here: the holder, not whoever
 * copied the string from a request it saw. Proofs live in memory (a
 * restart asks for them again: an unproven token simply does not count).
 *
 * The token is the SHA-256 of the certificate (DER) in hex: the same
 * certificate always gives the same token, so owners' rules naming it
 * survive restarts. Challenges belong to the service (worker 0). Proofs
 * are kept in sets: set 0 is the service's own; the workers where things
 * are at home check requests against a copy of the proofs (set = worker
 * id), which provisioning.c sends them as each proof is made. Each set
 * is used by one thread only.
 */
#ifndef STANZAD_PROV_TOKENS_H
#define STANZAD_PROV_TOKENS_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define PROV_TOKEN_LEN		64	/* hex SHA-256 of the certificate */
#define PROV_TOKEN_CERT_MAX	16384	/* bytes of a certificate (DER) in getToken */
#define PROV_TOKEN_SECRET	32	/* random bytes of a challenge */
#define PROV_TOKEN_PENDING_MAX	64	/* challenges waiting for their response */
#define PROV_TOKEN_TTL		120	/* seconds a challenge waits (the XEP: at least 60) */
#define PROV_TOKEN_PROOFS_MAX	4096	/* (token, JID) proofs remembered; the oldest goes */
#define PROV_TOKEN_SETS		64	/* sets of proofs: one per worker (server.h's maximum) */

/*
 * getToken from bare JID `requester` with certificate der[0..len): a
 * random secret encrypted to the certificate's RSA key (PKCS #1 v1.5).
 * Sets *seqnr and *ct (malloc'd, *ct_len bytes). 0; -EINVAL (not a
 * certificate, or its key cannot encrypt); -ENOMEM; -EIO.
 */
int prov_token_challenge(const char *requester, const unsigned char *der, size_t len,
			 int64_t now, uint32_t *seqnr, unsigned char **ct, size_t *ct_len);

/*
 * getTokenChallengeResponse: resp must be the secret of challenge seqnr,
 * asked by the same bare JID within PROV_TOKEN_TTL. 0 with the token in
 * token (the proof remembered); -ENOENT (no such challenge: unknown,
 * expired, or another requester's); -EACCES (wrong secret; the challenge
 * is used up either way).
 */
int prov_token_respond(const char *requester, uint32_t seqnr, const unsigned char *resp,
		       size_t len, int64_t now, char token[PROV_TOKEN_LEN + 1]);

/* Whether bare JID jid proved token (the service's set, 0). */
bool prov_token_held(const char *token, const char *jid);

/* The same in the copy of the proofs of worker `set`. */
bool prov_token_held_in(unsigned set, const char *token, const char *jid);

/*
 * Remembers in set that jid proved token (once; a full ring forgets the
 * oldest). 0, -EINVAL (no such set, not a token) or -ENOMEM.
 */
int prov_token_proof_copy(unsigned set, const char *token, const char *jid);

/* Forgets every challenge and proof. */
void prov_tokens_reset(void);

#endif
