/* SPDX-License-Identifier: MIT */
/*
 * SCRAM credentials (RFC 5802, RFC 7677) as stored per account.
 *
 * The server never keeps a password: only a random salt, the iteration
 * count, and for each hash the StoredKey and ServerKey. A login with SCRAM
 * needs no key derivation on the server at all; PLAIN (and password
 * changes) derive the keys once with PBKDF2 and compare in constant time.
 */
#ifndef STANZAD_SCRAM_H
#define STANZAD_SCRAM_H

#include <stdbool.h>
#include <stddef.h>
#include <stdint.h>

#define SCRAM_SALT_LEN		16
#define SCRAM_ITERATIONS	4096	/* RFC 7677's minimum, what clients expect */
#define SCRAM_ITERATIONS_MAX	1000000	/* refuse absurd stored counts */
#define SCRAM_PASSWORD_MAX	1023	/* bytes, before SASLprep */

struct scram_creds {
	uint32_t iterations;
	uint8_t salt[SCRAM_SALT_LEN];
	uint8_t sha1_stored_key[20];
	uint8_t sha1_server_key[20];
	uint8_t sha256_stored_key[32];
	uint8_t sha256_server_key[32];
};

/*
 * Prepares `password` with SASLprep (RFC 4013) into out (size out_size).
 * Returns 0, or -EINVAL for a password SASLprep rejects (prohibited or
 * unassigned characters, empty result, too long).
 */
int scram_saslprep(const char *password, char *out, size_t out_size);

/* Hash functions of the SCRAM mechanisms. */
enum scram_hash {
	SCRAM_HASH_SHA1 = 0,
	SCRAM_HASH_SHA256,
};

#define SCRAM_SHA1_LEN		20
#define SCRAM_SHA256_LEN	32

/*
 * Derives fresh credentials from a password: random salt, `iterations`
 * PBKDF2 rounds (0 = SCRAM_ITERATIONS), keys for SHA-1 and SHA-256. The
 * password is SASLprep'd first. 0, -EINVAL (password rejected) or -EIO.
 */
int scram_creds_from_password(const char *password, uint32_t iterations,
			      struct scram_creds *out);

/*
 * As scram_creds_from_password(), with a given salt instead of a random
 * one (re-deriving keys for a stored salt, test vectors).
 */
int scram_creds_from_password_salt(const char *password,
				   const uint8_t salt[SCRAM_SALT_LEN],
				   uint32_t iterations, struct scram_creds *out);

/*
 * Derives StoredKey and ServerKey for one hash from a password and a salt
 * of any length (RFC 5802 section 3): SaltedPassword = PBKDF2(SASLprep(
 * password), salt, iterations), StoredKey = H(HMAC(SaltedPassword,
 * "Client Key")), ServerKey = HMAC(SaltedPassword, "Server Key"). The
 * outputs hold SCRAM_SHA1_LEN or SCRAM_SHA256_LEN bytes. 0, -EINVAL
 * (password rejected, iterations outside 1..SCRAM_ITERATIONS_MAX) or -EIO.
 */
int scram_keys_from_password(enum scram_hash hash, const char *password,
			     const uint8_t *salt, size_t salt_len,
			     uint32_t iterations, uint8_t *stored_key,
			     uint8_t *server_key);

/*
 * Checks a plaintext password (as sent in SASL PLAIN) against stored
 * credentials: SASLprep, PBKDF2 with the stored salt and count, constant-
 * time comparison of the SHA-256 StoredKey. Costs one PBKDF2; run it off
 * the event loop. true only on a match.
 */
bool scram_verify_password(const struct scram_creds *c, const char *password);

/*
 * Deterministic but unguessable decoy credentials for a username that does
 * not exist, so a SCRAM exchange for an unknown account looks exactly like
 * one for a known account until the final not-authorized (no account
 * enumeration). `secret` is a per-server random key; keep it across
 * restarts, or the decoy salt of a name changes while a real one does not.
 * Costs a few HMACs, no PBKDF2.
 */
void scram_decoy_creds(const uint8_t secret[32], const char *username,
		       struct scram_creds *out);

/* Wipes a credentials struct. */
void scram_creds_wipe(struct scram_creds *c);

#endif
